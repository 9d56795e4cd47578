/*
 * Identities: who a socket acts for. A client's credentials (SO_PEERCRED, SO_PEERGROUPS) as a
 * refcounted object that every socket of the client holds, that accepted sockets take from
 * their listener and that a socket keeps through socket.give and socket.take: the policy
 * always judges the identity that started the socket (sockd-protocol(7), socket.give).
 * Each identity points at the account of its uid, where the per-uid budgets are counted.
 */
#ifndef SOCKD_IDENT_H
#define SOCKD_IDENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <jansson.h>

struct sock;
struct policy;
struct policy_who;

/* How many daemon.restrict calls one identity may stack, and rules per call (hard limits). */
#define IDENT_MAX_RESTRICT 16
#define IDENT_MAX_RULES 64

/*
 * One daemon.restrict call's rules (sockd-protocol.7, METHODS, daemon.restrict): immutable once
 * made, refcounted, chained to the restriction applied before it. Every link must allow a call.
 */
struct ident_restrict {
    unsigned refs;
    unsigned depth;               /* links in the chain, this one included */
    struct policy *policy;        /* the rules and the implicit final deny */
    json_t *rules;                /* the rules as the client wrote them (for daemon.hello) */
    struct ident_restrict *outer; /* the restriction applied before (referenced), or NULL */
};

/* What one uid holds in the daemon, summed over its clients and sockets (per-uid budgets). */
struct ident_acct {
    uid_t uid;
    unsigned refs;        /* identities pointing here; freed with the last */
    unsigned clients;     /* control connections of this uid */
    unsigned sockets;     /* sockets judged as this uid, parked (given) ones included */
    size_t queued;        /* bytes held in those sockets' buffers (struct buf meter) */
    size_t ctl_queued;    /* bytes held in its control connections' queues (struct buf meter) */
    size_t tls;           /* what its TLS contexts are counted as holding (tlsctx_charge) */
    struct sock *waiting; /* sockets that stopped reading at the byte budget (sock_io.c) */
};

/*
 * A client's credentials, shared by the client and every socket made for it. What else judges
 * a socket for its whole life (a restriction the client placed on itself) belongs here too.
 */
struct ident {
    unsigned refs;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    gid_t *groups; /* supplementary groups, malloc'ed (NULL when none) */
    int ngroups;
    struct ident_acct *acct;            /* the uid's account (referenced) */
    struct ident_restrict *restriction; /* what the client narrowed itself to (NULL: nothing) */
};

/*
 * A new identity (one reference) for these credentials; groups (malloc'ed, may be NULL) is
 * owned by it from then on, even on failure. NULL on ENOMEM.
 */
struct ident *ident_new(uid_t uid, gid_t gid, pid_t pid, gid_t *groups, int ngroups);
/* The identity of the peer of a connected Unix socket fd (uid -1 when unknown); NULL on ENOMEM. */
struct ident *ident_of_peer(int fd);
/* Take one more reference; returns id. */
struct ident *ident_ref(struct ident *id);
/* Drop a reference (NULL is fine); the last frees it and releases its account. */
void ident_unref(struct ident *id);

/*
 * Narrow id by one more restriction: policy (owned from here on, even on failure) and rules
 * (borrowed, referenced). -1 with errno: E2BIG past IDENT_MAX_RESTRICT, ENOMEM.
 */
int ident_restrict(struct ident *id, struct policy *policy, json_t *rules);
/* Whether every restriction of id allows action (enum policy_action) to sa; 1 with none. */
int ident_allows(const struct ident *id, int action, const struct sockaddr *sa, socklen_t len);
/* The restrictions as daemon.hello reports them: an array of rule arrays, oldest first (new
 * reference, NULL on ENOMEM). */
json_t *ident_restrict_json(const struct ident *id);

/* Fill *who (struct policy_who) from id: uid, gid, pid and groups, pointing into id. */
void ident_who(const struct ident *id, struct policy_who *who);
/* Bytes the uid may still queue under max-buffer-per-uid (0 when full). */
size_t ident_room(const struct ident *id);

#endif
