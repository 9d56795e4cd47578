/* Policy: allow/deny rules and connect rewrites from the config, matched against a client. */
#ifndef SOCKD_POLICY_H
#define SOCKD_POLICY_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* What a rule is about. */
enum policy_action {
    POLICY_CONNECT = 1 << 0, /* socket.connect (every resolved address) */
    POLICY_BIND = 1 << 1,    /* socket.bind / listen */
    POLICY_SENDTO = 1 << 2,  /* socket.sendto and connected udp */
    POLICY_ANY = 7,          /* all of them */
};

/* Who is asking: taken from SO_PEERCRED when the client connected. */
struct policy_who {
    uid_t uid;
    gid_t gid;
    pid_t pid;
    const gid_t *groups; /* supplementary groups (may be NULL) */
    int ngroups;
};

struct policy; /* opaque: parsed rules, owned by struct conf */

/* Parse one config line's words (w[0] is allow|deny|rewrite|policy-default) into *p (created on
 * the first line); 0, or -1 with the reason written into causebuf. On -1 *p stays valid for
 * policy_free. */
int policy_parse_line(struct policy **p, char **w, int n, char *causebuf, size_t causelen);
void policy_free(struct policy *p);

/*
 * Decide for an IP or Unix destination. sa is canonicalised first (IPv4-mapped and
 * IPv4-compatible IPv6, 0.0.0.0 and :: count as the addresses they reach). Returns 1 allow,
 * 0 deny. p NULL allows everything. For POLICY_BIND wildcards stay wildcards, and :: must be
 * allowed both as :: and as 0.0.0.0 (dual stack). Malformed or other-family addresses: deny.
 */
int policy_allows(const struct policy *p, enum policy_action a, const struct sockaddr *sa,
                  socklen_t len, const struct policy_who *who);
/*
 * A rewrite for a connect destination: if a rule matches sa (and who), writes the new
 * destination to out/outlen and returns 1; else 0.
 */
int policy_rewrite(const struct policy *p, const struct sockaddr *sa, socklen_t len,
                   const struct policy_who *who, struct sockaddr_storage *out, socklen_t *outlen);
/*
 * One rule of a client's restriction (sockd-protocol.7, METHODS, daemon.restrict): a line in the
 * config's allow/deny syntax without identity clauses, appended to *p (created on the first
 * rule, with the implicit final deny). 0, or -1 with the reason in causebuf; on -1 *p stays
 * valid for policy_free. Unix prefixes resolve as policy_real_path does: as the caller is.
 */
#define POLICY_RULE_MAX 512
int policy_parse_restriction(struct policy **p, const char *line, char *causebuf, size_t causelen);

/* Canonical form of a destination (see policy_allows) into out. */
void policy_canonical(const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out,
                      socklen_t *outlen);

/*
 * An absolute path as the rules see one (lexically cleaned, then its longest existing leading
 * part resolved by realpath(3) with the caller's credentials, the rest kept): how a rule's own
 * path is read at load, and how a path that cannot be opened is judged. Malloc'ed, NULL on
 * ENOMEM.
 */
char *policy_real_path(const char *path);

/*
 * The supplementary groups of the peer of a connected Unix socket fd, for policy_who.groups:
 * SO_PEERGROUPS (the groups as they were at connect(), race-free); where the kernel lacks it
 * (before Linux 4.13) or when fd < 0, "Groups:" of /proc/PID/status (racy: PID reuse). Returns
 * the count with a malloc'ed array in *groups (NULL when the count is 0; caller frees), or -1.
 */
int policy_peer_groups(int fd, pid_t pid, gid_t **groups);

#endif
