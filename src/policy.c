#include "config.h"

/*
 * The access policy (sockd.conf(5), ACCESS POLICY): allow/deny rules, policy-default and connect
 * rewrites, matched against canonical addresses and the client's credentials.
 *
 * Design decisions:
 * - First matching rule wins; with no match the answer is policy-default (allow when the file
 *   has none). A repeated policy-default line replaces the earlier one, like other directives.
 * - Addresses are canonicalised before any comparison, so one destination has one spelling:
 *   ::ffff:a.b.c.d (IPv4-mapped) and ::a.b.c.d (IPv4-compatible, except :: and ::1) become the
 *   IPv4 address a.b.c.d, so IPv4 rules catch them. As a destination (connect, sendto, rewrite)
 *   0.0.0.0 and :: mean "this host" and become 127.0.0.1 and ::1. As a bind address they stay
 *   wildcards (binding 0.0.0.0 does not mean loopback); binding :: on a dual-stack socket also
 *   takes the IPv4 wildcard, so a bind to :: is checked as both :: and 0.0.0.0 and needs both.
 * - After canonicalisation an IPv4 CIDR never matches an IPv6 address and the reverse. A rule
 *   CIDR inside ::ffff:0:0/96 is stored as the IPv4 CIDR it names, so it can still match.
 * - `*` matches every IP address, never a Unix one.
 * - `unix PREFIX` compares lexically canonical paths (`.`, `..` and repeated slashes resolved,
 *   `..` stops at /; symlinks are not followed). The daemon judges a socket's real path (its
 *   directory resolved through an fd, sock_unix.c), so a rule's own path is resolved when the
 *   config loads: the longest part of it that exists goes through realpath(3), the rest stays
 *   as written (a rule naming /var/run/x names /run/x). The prefix matches at a component boundary:
 *   "/run/app" matches "/run/app" and "/run/app/x" but not "/run/apple"; "/run/app/" matches
 *   what is under it. Abstract names "@x" are not paths: they are compared byte for byte with
 *   prefixes that start with "@", with the same boundary rule. A relative Unix path (which
 *   sockd's own address parser never produces) is always denied.
 * - A rule with a port matches only addresses whose port is in range, so never a Unix one; a
 *   Unix rule with a port is refused at load time as it could never match.
 * - user NAME and group NAME are resolved when the config loads (unknown: a parse error). A
 *   gid/group clause matches the client's primary gid or any of its supplementary groups.
 *   Without a who, a rule with an identity clause does not match.
 * - A malformed or non-IP, non-Unix address is denied.
 * - Rewrites: the first matching `rewrite connect` applies, once (no chains); FROM is
 *   canonicalised like a destination and matched against the canonical destination, TO is
 *   used as written (keeping the destination's port when TO has none) and then goes through
 *   policy_allows like any other destination.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "policy.h"

enum policy_ident {
    POLICY_ID_ANY, /* no identity clause */
    POLICY_ID_UID, /* uid N / user NAME */
    POLICY_ID_GID, /* gid N / group NAME: primary or supplementary */
};

/* The optional clauses shared by rules and rewrites. */
struct policy_match {
    int port_lo, port_hi; /* -1 = any port */
    enum policy_ident ident;
    unsigned long id; /* uid or gid */
};

enum policy_target {
    POLICY_T_ALL,  /* "*": every IP address */
    POLICY_T_IP,   /* a CIDR */
    POLICY_T_UNIX, /* a Unix path or abstract-name prefix */
};

struct policy_rule {
    int allow;
    unsigned actions; /* enum policy_action bits */
    enum policy_target target;
    int family; /* AF_INET or AF_INET6 for POLICY_T_IP */
    unsigned char net[16];
    int plen;
    char *prefix; /* canonical, for POLICY_T_UNIX */
    size_t prefixlen;
    int subtree_only; /* prefix written with a trailing slash: only what is under it */
    struct policy_match m;
};

struct policy_rw {
    int from_family;
    unsigned char from[16];
    int from_port; /* -1 = any */
    struct sockaddr_storage to;
    socklen_t tolen;
    int to_port; /* -1 = keep the destination's */
    struct policy_match m;
};

struct policy {
    int default_allow;
    struct policy_rule *rules;
    size_t nrules, caprules;
    struct policy_rw *rw;
    size_t nrw, caprw;
};

#define POLICY_SUN_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

/* A canonical address: what matching works on. */
struct policy_addr {
    int family; /* AF_INET, AF_INET6 or AF_UNIX */
    unsigned char ip[16];
    int port;                           /* -1 for Unix */
    char path[POLICY_SUN_PATH_MAX + 2]; /* "/..." or "@...", NUL-terminated */
    size_t pathlen;                     /* abstract names may hold NULs */
};

static int policy_fail(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
policy_fail(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    if (buf != NULL && len > 0) {
        va_start(ap, fmt);
        vsnprintf(buf, len, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void
policy_free(struct policy *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->nrules; i++)
        free(p->rules[i].prefix);
    free(p->rules);
    free(p->rw);
    free(p);
}

/* ---- canonicalisation ---- */

/* Lexically resolve ".", ".." and repeated slashes of an absolute path [s, s+n) into out
 * (room for n + 2 bytes); returns the length. The result has no trailing slash but "/". */
static size_t
policy_clean_path(const char *s, size_t n, char *out)
{
    size_t o = 0, i = 0;
    while (i < n) {
        while (i < n && s[i] == '/')
            i++;
        size_t st = i;
        while (i < n && s[i] != '/')
            i++;
        size_t cl = i - st;
        if (cl == 0 || (cl == 1 && s[st] == '.'))
            continue;
        if (cl == 2 && s[st] == '.' && s[st + 1] == '.') {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--; /* the slash before the dropped component */
            continue;
        }
        out[o++] = '/';
        memcpy(out + o, s + st, cl);
        o += cl;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return o;
}

/* IPv4-mapped (::ffff:a.b.c.d) or IPv4-compatible (::a.b.c.d but :: and ::1): 1 and the IPv4
 * address into v4. */
static int
policy_v6_embeds_v4(const unsigned char *a, unsigned char *v4)
{
    static const unsigned char zero[10];
    if (memcmp(a, zero, 10) != 0)
        return 0;
    int mapped = a[10] == 0xff && a[11] == 0xff;
    int compat = a[10] == 0 && a[11] == 0;
    if (!mapped && !compat)
        return 0;
    if (compat && a[12] == 0 && a[13] == 0 && a[14] == 0 && a[15] <= 1)
        return 0; /* :: and ::1 are IPv6 addresses of their own */
    memcpy(v4, a + 12, 4);
    return 1;
}

/* Canonicalise sa into pa; dest selects the destination meaning of 0.0.0.0 and ::. -1 when
 * the address is malformed or of another family. */
static int
policy_canon_addr(const struct sockaddr *sa, socklen_t len, int dest, struct policy_addr *pa)
{
    memset(pa, 0, sizeof *pa);
    pa->port = -1;
    if (sa == NULL || len < (socklen_t)sizeof(sa_family_t))
        return -1;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        if (len < (socklen_t)sizeof sin)
            return -1;
        memcpy(&sin, sa, sizeof sin);
        pa->family = AF_INET;
        memcpy(pa->ip, &sin.sin_addr, 4);
        pa->port = ntohs(sin.sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        if (len < (socklen_t)sizeof sin6)
            return -1;
        memcpy(&sin6, sa, sizeof sin6);
        pa->port = ntohs(sin6.sin6_port);
        if (policy_v6_embeds_v4(sin6.sin6_addr.s6_addr, pa->ip)) {
            pa->family = AF_INET;
        } else {
            pa->family = AF_INET6;
            memcpy(pa->ip, &sin6.sin6_addr, 16);
        }
    } else if (sa->sa_family == AF_UNIX) {
        size_t off = offsetof(struct sockaddr_un, sun_path);
        if (len <= (socklen_t)off || len > (socklen_t)sizeof(struct sockaddr_un))
            return -1; /* unnamed, or longer than the kernel takes */
        const char *sp = (const char *)sa + off;
        size_t n = (size_t)len - off;
        pa->family = AF_UNIX;
        if (sp[0] == '\0') {
            /* Abstract: every byte of the name counts, NULs included. */
            pa->path[0] = '@'; /* n == 1 is the empty name, "@" */
            memcpy(pa->path + 1, sp + 1, n - 1);
            pa->pathlen = n;
            pa->path[n] = '\0';
        } else {
            /* A pathname ends at the first NUL, as for the kernel. */
            size_t k = strnlen(sp, n);
            if (sp[0] != '/')
                return -1; /* relative: not sockd's, and not safely comparable */
            pa->pathlen = policy_clean_path(sp, k, pa->path);
        }
        return 0;
    } else {
        return -1;
    }
    if (dest) {
        static const unsigned char any6[16];
        if (pa->family == AF_INET && memcmp(pa->ip, "\0\0\0\0", 4) == 0) {
            memcpy(pa->ip, "\x7f\0\0\x01", 4); /* 0.0.0.0 reaches 127.0.0.1 */
        } else if (pa->family == AF_INET6 && memcmp(pa->ip, any6, 16) == 0) {
            pa->ip[15] = 1; /* :: reaches ::1 */
        }
    }
    return 0;
}

/* Write a canonical address back as a sockaddr. */
static void
policy_addr_to_sa(const struct policy_addr *pa, struct sockaddr_storage *out, socklen_t *outlen)
{
    memset(out, 0, sizeof *out);
    if (pa->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, pa->ip, 4);
        sin->sin_port = htons((unsigned short)pa->port);
        *outlen = sizeof *sin;
    } else if (pa->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, pa->ip, 16);
        sin6->sin6_port = htons((unsigned short)pa->port);
        *outlen = sizeof *sin6;
    } else {
        struct sockaddr_un *sun = (struct sockaddr_un *)out;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, pa->path, pa->pathlen);
        if (pa->path[0] == '@') {
            sun->sun_path[0] = '\0';
            *outlen = (socklen_t)(off + pa->pathlen);
        } else {
            *outlen = (socklen_t)(off + pa->pathlen + 1);
        }
    }
}

void
policy_canonical(const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out,
                 socklen_t *outlen)
{
    struct policy_addr pa;
    if (policy_canon_addr(sa, len, 1, &pa) == 0) {
        policy_addr_to_sa(&pa, out, outlen);
        return;
    }
    /* Not canonicalisable: a bounded copy, which policy_allows would deny anyway. */
    memset(out, 0, sizeof *out);
    if (sa == NULL) {
        *outlen = 0;
        return;
    }
    *outlen = len < (socklen_t)sizeof *out ? len : (socklen_t)sizeof *out;
    memcpy(out, sa, *outlen);
}

/* ---- matching ---- */

static int
policy_who_matches(const struct policy_match *m, const struct policy_who *who)
{
    if (m->ident == POLICY_ID_ANY)
        return 1;
    if (who == NULL)
        return 0;
    if (m->ident == POLICY_ID_UID)
        return (unsigned long)who->uid == m->id;
    if ((unsigned long)who->gid == m->id)
        return 1;
    for (int i = 0; who->groups != NULL && i < who->ngroups; i++)
        if ((unsigned long)who->groups[i] == m->id)
            return 1;
    return 0;
}

static int
policy_match_matches(const struct policy_match *m, const struct policy_addr *pa,
                     const struct policy_who *who)
{
    if (m->port_lo >= 0 && (pa->port < m->port_lo || pa->port > m->port_hi))
        return 0; /* Unix addresses have port -1: never in range */
    return policy_who_matches(m, who);
}

/* The first plen bits of a and b are equal. */
static int
policy_prefix_eq(const unsigned char *a, const unsigned char *b, int plen)
{
    int whole = plen / 8, rest = plen % 8;
    if (memcmp(a, b, (size_t)whole) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (a[whole] & mask) == (b[whole] & mask);
}

/* A Unix prefix matches at a component boundary (see the top of the file). */
static int
policy_unix_matches(const struct policy_rule *r, const struct policy_addr *pa)
{
    if ((r->prefix[0] == '@') != (pa->path[0] == '@'))
        return 0;
    if (pa->pathlen < r->prefixlen || memcmp(pa->path, r->prefix, r->prefixlen) != 0)
        return 0;
    if (r->subtree_only)
        return 1;
    return pa->pathlen == r->prefixlen || pa->path[r->prefixlen] == '/';
}

static int
policy_rule_matches(const struct policy_rule *r, enum policy_action a, const struct policy_addr *pa,
                    const struct policy_who *who)
{
    if ((r->actions & (unsigned)a) == 0)
        return 0;
    switch (r->target) {
    case POLICY_T_ALL:
        if (pa->family != AF_INET && pa->family != AF_INET6)
            return 0;
        break;
    case POLICY_T_IP:
        if (pa->family != r->family || !policy_prefix_eq(pa->ip, r->net, r->plen))
            return 0;
        break;
    case POLICY_T_UNIX:
        if (pa->family != AF_UNIX || !policy_unix_matches(r, pa))
            return 0;
        break;
    }
    return policy_match_matches(&r->m, pa, who);
}

/* First match wins, else the default. */
static int
policy_decide(const struct policy *p, enum policy_action a, const struct policy_addr *pa,
              const struct policy_who *who)
{
    for (size_t i = 0; i < p->nrules; i++)
        if (policy_rule_matches(&p->rules[i], a, pa, who))
            return p->rules[i].allow;
    return p->default_allow;
}

int
policy_allows(const struct policy *p, enum policy_action a, const struct sockaddr *sa,
              socklen_t len, const struct policy_who *who)
{
    struct policy_addr pa;
    if (p == NULL)
        return 1;
    int dest = a != POLICY_BIND;
    if (policy_canon_addr(sa, len, dest, &pa) < 0)
        return 0;
    if (!policy_decide(p, a, &pa, who))
        return 0;
    if (!dest && pa.family == AF_INET6) {
        /* Binding :: on a dual-stack socket binds the IPv4 wildcard too. */
        static const unsigned char any6[16];
        if (memcmp(pa.ip, any6, 16) == 0) {
            pa.family = AF_INET;
            memset(pa.ip, 0, sizeof pa.ip);
            return policy_decide(p, a, &pa, who);
        }
    }
    return 1;
}

int
policy_rewrite(const struct policy *p, const struct sockaddr *sa, socklen_t len,
               const struct policy_who *who, struct sockaddr_storage *out, socklen_t *outlen)
{
    struct policy_addr pa;
    if (p == NULL || p->nrw == 0 || policy_canon_addr(sa, len, 1, &pa) < 0)
        return 0;
    if (pa.family != AF_INET && pa.family != AF_INET6)
        return 0;
    for (size_t i = 0; i < p->nrw; i++) {
        const struct policy_rw *r = &p->rw[i];
        size_t alen = r->from_family == AF_INET ? 4 : 16;
        if (r->from_family != pa.family || memcmp(r->from, pa.ip, alen) != 0)
            continue;
        if (r->from_port >= 0 && r->from_port != pa.port)
            continue;
        if (!policy_match_matches(&r->m, &pa, who))
            continue;
        memcpy(out, &r->to, sizeof *out);
        *outlen = r->tolen;
        unsigned short port = htons((unsigned short)(r->to_port >= 0 ? r->to_port : pa.port));
        if (out->ss_family == AF_INET)
            ((struct sockaddr_in *)out)->sin_port = port;
        else
            ((struct sockaddr_in6 *)out)->sin6_port = port;
        return 1;
    }
    return 0;
}

/* ---- parsing ---- */

/* A decimal number within [lo, hi] spelled with digits only; -1 if not. */
static long long
policy_number(const char *w, long long lo, long long hi)
{
    long long v = 0;
    if (*w == '\0' || strlen(w) > 10)
        return -1;
    for (const char *s = w; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v < lo || v > hi ? -1 : v;
}

/* "N" or "N-M" within 0..65535. */
static int
policy_port_range(const char *w, int *lo, int *hi)
{
    char a[16];
    const char *dash = strchr(w, '-');
    size_t n = dash ? (size_t)(dash - w) : strlen(w);
    if (n == 0 || n >= sizeof a)
        return -1;
    memcpy(a, w, n);
    a[n] = '\0';
    long long l = policy_number(a, 0, 65535);
    long long h = dash ? policy_number(dash + 1, 0, 65535) : l;
    if (l < 0 || h < 0 || l > h)
        return -1;
    *lo = (int)l;
    *hi = (int)h;
    return 0;
}

/* The clauses from w[i] on: [port N|N-M] [uid N|user NAME|gid N|group NAME], in any order. */
static int
policy_parse_match(char **w, int n, int i, int unix_target, struct policy_match *m, char *cb,
                   size_t cl)
{
    m->port_lo = m->port_hi = -1;
    m->ident = POLICY_ID_ANY;
    m->id = 0;
    for (; i < n; i += 2) {
        const char *k = w[i];
        int is_port = strcmp(k, "port") == 0;
        int is_ident = strcmp(k, "uid") == 0 || strcmp(k, "user") == 0 || strcmp(k, "gid") == 0 ||
                       strcmp(k, "group") == 0;
        if (!is_port && !is_ident)
            return policy_fail(cb, cl, "unexpected '%s' (port, uid, user, gid or group)", k);
        if (i + 1 >= n)
            return policy_fail(cb, cl, "'%s' needs a value", k);
        const char *v = w[i + 1];
        if (is_port) {
            if (unix_target)
                return policy_fail(cb, cl, "port does not apply to a unix target");
            if (m->port_lo >= 0)
                return policy_fail(cb, cl, "port given twice");
            if (policy_port_range(v, &m->port_lo, &m->port_hi) < 0)
                return policy_fail(cb, cl, "bad port '%s' (N or N-M, 0 to 65535)", v);
            continue;
        }
        if (m->ident != POLICY_ID_ANY)
            return policy_fail(cb, cl, "only one of uid, user, gid, group");
        /* (uid_t)-1 and (gid_t)-1 mean "no id" to the kernel: refused. */
        if (strcmp(k, "uid") == 0 || strcmp(k, "gid") == 0) {
            long long id = policy_number(v, 0, (long long)UINT_MAX - 1);
            if (id < 0)
                return policy_fail(cb, cl, "bad %s '%s' (a number)", k, v);
            m->ident = k[0] == 'u' ? POLICY_ID_UID : POLICY_ID_GID;
            m->id = (unsigned long)id;
        } else if (strcmp(k, "user") == 0) {
            struct passwd *pw = getpwnam(v);
            if (pw == NULL)
                return policy_fail(cb, cl, "unknown user '%s'", v);
            m->ident = POLICY_ID_UID;
            m->id = (unsigned long)pw->pw_uid;
        } else {
            struct group *gr = getgrnam(v);
            if (gr == NULL)
                return policy_fail(cb, cl, "unknown group '%s'", v);
            m->ident = POLICY_ID_GID;
            m->id = (unsigned long)gr->gr_gid;
        }
    }
    return 0;
}

/* An IPv4 or IPv6 literal, strictly as inet_pton takes it ("127.1" is refused). */
static int
policy_parse_ip(const char *s, int *family, unsigned char *ip)
{
    if (strchr(s, ':') != NULL) {
        *family = AF_INET6;
        return inet_pton(AF_INET6, s, ip) == 1 ? 0 : -1;
    }
    *family = AF_INET;
    return inet_pton(AF_INET, s, ip) == 1 ? 0 : -1;
}

/* A rule target "ADDR" or "ADDR/LEN" into r. */
static int
policy_parse_cidr(const char *w, struct policy_rule *r, char *cb, size_t cl)
{
    char a[INET6_ADDRSTRLEN + 8];
    const char *slash = strchr(w, '/');
    size_t n = slash ? (size_t)(slash - w) : strlen(w);
    if (n == 0 || n >= sizeof a)
        return policy_fail(cb, cl, "bad address '%s' (an IPv4 or IPv6 CIDR, * or unix)", w);
    memcpy(a, w, n);
    a[n] = '\0';
    if (policy_parse_ip(a, &r->family, r->net) < 0)
        return policy_fail(cb, cl, "bad address '%s' (an IPv4 or IPv6 CIDR, * or unix)", w);
    int max = r->family == AF_INET ? 32 : 128;
    r->plen = max;
    if (slash) {
        long long l = policy_number(slash + 1, 0, max);
        if (l < 0)
            return policy_fail(cb, cl, "bad prefix length in '%s' (0 to %d)", w, max);
        r->plen = (int)l;
    }
    unsigned char masked[16] = {0};
    int bits = r->plen;
    for (int i = 0; i < max / 8; i++, bits -= 8)
        masked[i] = bits >= 8  ? r->net[i]
                    : bits > 0 ? (unsigned char)(r->net[i] & (0xff << (8 - bits)))
                               : 0;
    if (memcmp(masked, r->net, (size_t)max / 8) != 0)
        return policy_fail(cb, cl, "host bits set in '%s'", w);
    /* ::ffff:a.b.c.d/96+k names IPv4 addresses, which canonicalise to IPv4: store it so. */
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (r->family == AF_INET6 && r->plen >= 96 && memcmp(r->net, mapped, 12) == 0) {
        r->family = AF_INET;
        memmove(r->net, r->net + 12, 4);
        memset(r->net + 4, 0, 12);
        r->plen -= 96;
    }
    return 0;
}

/*
 * A clean rule path as the kernel reaches it: its longest existing leading part resolved by
 * realpath(3) (/var/run -> /run, a symlinked socket -> its target), the rest kept as written.
 * Sockets are judged on their real paths (sock_unix.c), so rules must name real paths too.
 * Returns malloc'ed text with room for one more byte (a trailing slash), NULL on ENOMEM.
 */
static char *
policy_real_clean(const char *clean)
{
    size_t n = strlen(clean), cut = n;
    char *head = malloc(n + 2), *out = NULL;
    if (head == NULL)
        return NULL;
    memcpy(head, clean, n + 1);
    for (;;) {
        char *real = realpath(cut > 0 ? head : "/", NULL);
        if (real != NULL) {
            const char *base = strcmp(real, "/") == 0 && clean[cut] != '\0' ? "" : real;
            size_t bl = strlen(base), tl = n - cut;
            if ((out = malloc(bl + tl + 2)) != NULL) {
                memcpy(out, base, bl);
                memcpy(out + bl, clean + cut, tl + 1);
            }
            free(real);
            break;
        }
        if (errno == ENOMEM)
            break;
        if (cut == 0) { /* not even / resolves (no file system?): keep the text */
            out = head;
            head = NULL;
            break;
        }
        while (cut > 0 && head[cut] != '/')
            cut--;
        head[cut] = '\0';
    }
    free(head);
    return out;
}

char *
policy_real_path(const char *path)
{
    size_t n = strlen(path);
    char *clean = malloc(n + 2);
    if (clean == NULL)
        return NULL;
    policy_clean_path(path, n, clean);
    char *real = policy_real_clean(clean);
    free(clean);
    return real;
}

/* A Unix target prefix into r. */
static int
policy_parse_unix(const char *w, struct policy_rule *r, char *cb, size_t cl)
{
    size_t n = strlen(w);
    if (w[0] != '/' && w[0] != '@')
        return policy_fail(cb, cl, "unix prefix '%s' must start with / or @", w);
    if (n > POLICY_SUN_PATH_MAX)
        return policy_fail(cb, cl, "unix prefix too long");
    r->prefix = malloc(n + 2);
    if (r->prefix == NULL)
        return policy_fail(cb, cl, "out of memory");
    if (w[0] == '@') {
        memcpy(r->prefix, w, n + 1);
        r->prefixlen = n;
        r->subtree_only = n == 1 || w[n - 1] == '/'; /* "@" matches every abstract name */
    } else {
        r->prefixlen = policy_clean_path(w, n, r->prefix);
        char *real = policy_real_clean(r->prefix);
        if (real == NULL)
            return policy_fail(cb, cl, "out of memory");
        free(r->prefix);
        r->prefix = real;
        r->prefixlen = strlen(real);
        /* "/" matches every path; "/run/app/" only what is under /run/app. */
        r->subtree_only = r->prefixlen == 1 || w[n - 1] == '/';
        if (r->subtree_only && r->prefixlen > 1) {
            r->prefix[r->prefixlen++] = '/';
            r->prefix[r->prefixlen] = '\0';
        }
    }
    return 0;
}

/* "ADDR", "ADDR:PORT", "[V6]" or "[V6]:PORT" for rewrites; *port -1 when none. */
static int
policy_parse_hostport(const char *w, int *family, unsigned char *ip, int *port)
{
    char a[INET6_ADDRSTRLEN + 2];
    const char *host = w, *ps = NULL;
    size_t n;
    *port = -1;
    if (w[0] == '[') {
        const char *end = strchr(w, ']');
        if (end == NULL)
            return -1;
        host = w + 1;
        n = (size_t)(end - host);
        if (end[1] == ':')
            ps = end + 2;
        else if (end[1] != '\0')
            return -1;
        if (memchr(host, ':', n) == NULL)
            return -1; /* brackets are for IPv6 */
    } else {
        const char *c = strchr(w, ':');
        if (c != NULL && strchr(c + 1, ':') == NULL) {
            n = (size_t)(c - w); /* one colon: IPv4:port */
            ps = c + 1;
        } else {
            n = strlen(w); /* none, or a bare IPv6 address */
        }
    }
    if (n == 0 || n >= sizeof a)
        return -1;
    memcpy(a, host, n);
    a[n] = '\0';
    if (policy_parse_ip(a, family, ip) < 0)
        return -1;
    if (ps != NULL) {
        long long v = policy_number(ps, 1, 65535);
        if (v < 0)
            return -1;
        *port = (int)v;
    }
    return 0;
}

/* Make *pp exist, with the default of a file without policy-default. */
static struct policy *
policy_get(struct policy **pp)
{
    if (*pp == NULL) {
        *pp = calloc(1, sizeof **pp);
        if (*pp != NULL)
            (*pp)->default_allow = 1;
    }
    return *pp;
}

static int
policy_parse_rule(struct policy *p, char **w, int n, char *cb, size_t cl)
{
    static const struct {
        const char *name;
        unsigned bits;
    } actions[] = {{"connect", POLICY_CONNECT},
                   {"bind", POLICY_BIND},
                   {"sendto", POLICY_SENDTO},
                   {"any", POLICY_ANY}};
    struct policy_rule r;
    memset(&r, 0, sizeof r);
    r.allow = w[0][0] == 'a';
    if (n < 3)
        return policy_fail(cb, cl, "%s takes ACTION TARGET [port N[-M]] [uid|user|gid|group X]",
                           w[0]);
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(w[1], actions[i].name) == 0)
            r.actions = actions[i].bits;
    if (r.actions == 0)
        return policy_fail(cb, cl, "unknown action '%s' (connect, bind, sendto or any)", w[1]);
    int i = 3;
    if (strcmp(w[2], "*") == 0) {
        r.target = POLICY_T_ALL;
    } else if (strcmp(w[2], "unix") == 0) {
        if (n < 4)
            return policy_fail(cb, cl, "unix needs a path prefix");
        r.target = POLICY_T_UNIX;
        if (policy_parse_unix(w[3], &r, cb, cl) < 0)
            return -1;
        i = 4;
    } else {
        r.target = POLICY_T_IP;
        if (policy_parse_cidr(w[2], &r, cb, cl) < 0)
            return -1;
    }
    if (policy_parse_match(w, n, i, r.target == POLICY_T_UNIX, &r.m, cb, cl) < 0) {
        free(r.prefix);
        return -1;
    }
    if (p->nrules == p->caprules) {
        size_t cap = p->caprules ? p->caprules * 2 : 8;
        struct policy_rule *nr =
            cap > SIZE_MAX / sizeof *nr ? NULL : realloc(p->rules, cap * sizeof *nr);
        if (nr == NULL) {
            free(r.prefix);
            return policy_fail(cb, cl, "out of memory");
        }
        p->rules = nr;
        p->caprules = cap;
    }
    p->rules[p->nrules++] = r;
    return 0;
}

static int
policy_parse_rewrite(struct policy *p, char **w, int n, char *cb, size_t cl)
{
    struct policy_rw r;
    unsigned char ip[16];
    int fam;
    memset(&r, 0, sizeof r);
    if (n < 5 || strcmp(w[3], "to") != 0)
        return policy_fail(cb, cl, "rewrite takes connect FROM to TO [port|uid|user|gid|group X]");
    if (strcmp(w[1], "connect") != 0)
        return policy_fail(cb, cl, "rewrite applies to connect only, not '%s'", w[1]);
    if (policy_parse_hostport(w[2], &fam, ip, &r.from_port) < 0)
        return policy_fail(cb, cl, "bad rewrite source '%s' (ADDR or ADDR:PORT)", w[2]);
    /* FROM is compared with canonical destinations, so it is canonicalised the same way. */
    struct sockaddr_storage ss;
    struct policy_addr pa;
    memset(&ss, 0, sizeof ss);
    socklen_t sl;
    if (fam == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, ip, 4);
        sl = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, ip, 16);
        sl = sizeof *sin6;
    }
    if (policy_canon_addr((struct sockaddr *)&ss, sl, 1, &pa) < 0)
        return policy_fail(cb, cl, "bad rewrite source '%s'", w[2]);
    r.from_family = pa.family;
    memcpy(r.from, pa.ip, sizeof r.from);
    if (policy_parse_hostport(w[4], &fam, ip, &r.to_port) < 0)
        return policy_fail(cb, cl, "bad rewrite target '%s' (ADDR or ADDR:PORT)", w[4]);
    if (fam == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&r.to;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, ip, 4);
        r.tolen = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&r.to;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, ip, 16);
        r.tolen = sizeof *sin6;
    }
    if (policy_parse_match(w, n, 5, 0, &r.m, cb, cl) < 0)
        return -1;
    if (p->nrw == p->caprw) {
        size_t cap = p->caprw ? p->caprw * 2 : 4;
        struct policy_rw *nr =
            cap > SIZE_MAX / sizeof *nr ? NULL : realloc(p->rw, cap * sizeof *nr);
        if (nr == NULL)
            return policy_fail(cb, cl, "out of memory");
        p->rw = nr;
        p->caprw = cap;
    }
    p->rw[p->nrw++] = r;
    return 0;
}

int
policy_parse_line(struct policy **pp, char **w, int n, char *cb, size_t cl)
{
    if (n < 1)
        return policy_fail(cb, cl, "empty policy line");
    struct policy *p = policy_get(pp);
    if (p == NULL)
        return policy_fail(cb, cl, "out of memory");
    if (strcmp(w[0], "policy-default") == 0) {
        if (n != 2 || (strcmp(w[1], "allow") != 0 && strcmp(w[1], "deny") != 0))
            return policy_fail(cb, cl, "policy-default takes allow or deny");
        p->default_allow = w[1][0] == 'a';
        return 0;
    }
    if (strcmp(w[0], "allow") == 0 || strcmp(w[0], "deny") == 0)
        return policy_parse_rule(p, w, n, cb, cl);
    if (strcmp(w[0], "rewrite") == 0)
        return policy_parse_rewrite(p, w, n, cb, cl);
    return policy_fail(cb, cl, "'%s' is not a policy directive", w[0]);
}

/* ---- the client's supplementary groups ---- */

/* "Groups:" of /proc/PID/status. */
static int
policy_proc_groups(pid_t pid, gid_t **groups)
{
    char path[64], line[4096];
    int n = -1;
    snprintf(path, sizeof path, "/proc/%ld/status", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "Groups:", 7) != 0)
            continue;
        size_t cap = 0;
        n = 0;
        for (char *s = line + 7, *end;; s = end) {
            errno = 0;
            unsigned long g = strtoul(s, &end, 10);
            if (end == s)
                break;
            if (errno != 0 || g >= UINT_MAX) {
                n = -1;
                break;
            }
            if ((size_t)n == cap) {
                cap = cap ? cap * 2 : 16;
                gid_t *ng = realloc(*groups, cap * sizeof *ng);
                if (ng == NULL) {
                    n = -1;
                    break;
                }
                *groups = ng;
            }
            (*groups)[n++] = (gid_t)g;
        }
        break;
    }
    fclose(f);
    return n;
}

int
policy_peer_groups(int fd, pid_t pid, gid_t **groups)
{
    *groups = NULL;
#ifdef SO_PEERGROUPS
    if (fd >= 0) {
        /* Asked with no room, the kernel answers ERANGE and the size it needs (0: no groups). */
        socklen_t len = 0;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) == 0)
            return 0;
        if (errno == ERANGE && len > 0) {
            gid_t *g = malloc(len);
            if (g == NULL)
                return -1;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) == 0) {
                if (len == 0)
                    free(g);
                else
                    *groups = g;
                return (int)(len / sizeof *g);
            }
            free(g);
        }
        if (errno != ENOPROTOOPT)
            return -1; /* only a kernel without SO_PEERGROUPS falls back to /proc */
    }
#else
    (void)fd;
#endif
    if (pid <= 0)
        return -1;
    int n = policy_proc_groups(pid, groups);
    if (n <= 0) {
        free(*groups);
        *groups = NULL;
    }
    return n;
}

/* ---- a client's restriction (sockd-protocol.7, METHODS, daemon.restrict) ---- */

int
policy_parse_restriction(struct policy **pp, const char *line, char *cb, size_t cl)
{
    char copy[POLICY_RULE_MAX + 1], *w[16], *save = NULL;
    int n = 0;
    size_t len = strlen(line);
    if (len > POLICY_RULE_MAX)
        return policy_fail(cb, cl, "rule longer than %d bytes", POLICY_RULE_MAX);
    memcpy(copy, line, len + 1);
    for (char *t = strtok_r(copy, " \t", &save); t != NULL; t = strtok_r(NULL, " \t", &save)) {
        if (n == (int)(sizeof w / sizeof w[0]))
            return policy_fail(cb, cl, "too many words");
        w[n++] = t;
    }
    if (n < 1 || (strcmp(w[0], "allow") != 0 && strcmp(w[0], "deny") != 0))
        return policy_fail(cb, cl, "a restriction rule starts with allow or deny");
    for (int i = 3; i < n; i++)
        if (strcmp(w[i], "uid") == 0 || strcmp(w[i], "user") == 0 || strcmp(w[i], "gid") == 0 ||
            strcmp(w[i], "group") == 0)
            return policy_fail(cb, cl, "a restriction has no %s clause: it is about its client",
                               w[i]);
    struct policy *p = policy_get(pp);
    if (p == NULL)
        return policy_fail(cb, cl, "out of memory");
    p->default_allow = 0; /* the implicit final deny */
    return policy_parse_rule(p, w, n, cb, cl);
}
