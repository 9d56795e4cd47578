/*
 * Non-blocking host name resolution: c-ares channels driven by ev_io watchers (socket interest
 * from ARES_OPT_SOCK_STATE_CB) and one ev_timer per channel (ares_timeout). Each request also has
 * its own ev_timer for the overall deadline. Answers are queued and handed to callers from libev
 * callbacks outside c-ares, never from inside resolve_start or ares_process_fd.
 *
 * A reload (resolve_init while initialised) opens a new channel for new lookups; the old one
 * keeps serving the lookups it holds and is destroyed once c-ares has let go of all of them.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>
#include <ev.h>

#include "conf.h"
#include "log.h"
#include "resolve.h"

#define RESOLVE_MAX 16       /* addresses kept per answer (struct resolve_result) */
#define RESOLVE_NAME_MAX 253 /* longest valid host name, without a trailing dot */
#define RESOLVE_TRY_MIN_MS 50
#define RESOLVE_TRY_MAX_MS 3000

struct resolve_chan;

/* One socket c-ares asked us to watch. */
struct resolve_io {
    ev_io w;
    struct resolve_chan *chan;
    struct resolve_io *next;
};

/* A c-ares channel; the current one takes new lookups, retired ones drain after a reload. */
struct resolve_chan {
    ares_channel ares;
    struct resolve_io *ios; /* sockets being watched */
    ev_timer timer;         /* c-ares's retransmit and give-up clock */
    int nqueries;           /* ares_getaddrinfo calls whose callback has not come yet */
    int retired;            /* replaced by a reload: destroyed once nqueries is 0 */
    struct resolve_chan *next;
};

struct resolve_req {
    struct resolve_chan *chan; /* where the c-ares query runs (if in_ares) */
    int user;    /* the caller's callback is still owed (not delivered, not cancelled) */
    int in_ares; /* c-ares holds a pointer to this request */
    int queued;  /* on the ready queue */
    int port;
    int family;
    resolve_cb cb;
    void *arg;
    ev_timer deadline; /* the overall timeout */
    unsigned timeout_ms;
    int status; /* the answer, once queued */
    struct resolve_result res;
    char why[384];
    char host[RESOLVE_NAME_MAX + 2];
    struct resolve_req *prev, *next; /* ready queue */
};

static struct {
    int initialized;
    int shutting; /* inside resolve_shutdown: answers from ares_destroy are dropped */
    struct ev_loop *loop;
    struct resolve_chan *cur;   /* takes new lookups */
    struct resolve_chan *chans; /* every channel, cur included */
    struct resolve_req *ready_head, *ready_tail;
    ev_timer kick; /* delivers answers queued outside a watcher callback */
    unsigned timeout_ms;
    int pending;
} R;

static char resolve_cause[160]; /* the text of the last failure: outlives resolve_shutdown */

static void resolve_drain(void);

/* Printable, bounded copy of a host name for messages. */
static void
resolve_quote(char *out, size_t outlen, const char *host)
{
    size_t i = 0;
    for (; host && *host && i + 4 < outlen && i < 80; host++) {
        unsigned char ch = (unsigned char)*host;
        out[i++] = (ch >= 0x20 && ch < 0x7f && ch != '\'') ? (char)ch : '?';
    }
    if (host && *host && i + 4 < outlen) {
        memcpy(out + i, "...", 3);
        i += 3;
    }
    out[i] = '\0';
}

/* The caller-facing reason for a failed lookup: always says the name did not resolve. */
static void
resolve_why(struct resolve_req *r, const char *detail)
{
    char name[96];
    resolve_quote(name, sizeof(name), r->host);
    snprintf(r->why, sizeof(r->why), "name '%s' did not resolve (%s)", name, detail);
}

/* Reason text for a c-ares status. */
static const char *
resolve_status_text(int status, int family)
{
    switch (status) {
    case ARES_ENOTFOUND:
        return "NXDOMAIN";
    case ARES_ENODATA:
        return family == AF_INET    ? "no IPv4 address records"
               : family == AF_INET6 ? "no IPv6 address records"
                                    : "no address records";
    case ARES_ETIMEOUT:
        return "lookup timed out";
    case ARES_ESERVFAIL:
        return "name server failure";
    case ARES_EREFUSED:
        return "refused by the name server";
    case ARES_ECONNREFUSED:
        return "name server unreachable";
    case ARES_EBADNAME:
        return "not a valid host name";
    case ARES_EFORMERR:
    case ARES_EBADRESP:
        return "bad answer from the name server";
    case ARES_ENOMEM:
        return "out of memory";
    case ARES_EFILE:
        return "cannot read the hosts file";
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return "resolver shut down";
    default:
        return ares_strerror(status);
    }
}

/* Append r to the ready queue and make sure a delivery is scheduled. */
static void
resolve_ready(struct resolve_req *r)
{
    ev_timer_stop(R.loop, &r->deadline);
    r->queued = 1;
    r->next = NULL;
    r->prev = R.ready_tail;
    if (R.ready_tail)
        R.ready_tail->next = r;
    else
        R.ready_head = r;
    R.ready_tail = r;
    if (!ev_is_active(&R.kick)) {
        ev_timer_set(&R.kick, 0., 0.);
        ev_timer_start(R.loop, &R.kick);
    }
}

static void
resolve_unqueue(struct resolve_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        R.ready_head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        R.ready_tail = r->prev;
    r->prev = r->next = NULL;
    r->queued = 0;
}

static void
resolve_req_free(struct resolve_req *r)
{
    if (R.loop)
        ev_timer_stop(R.loop, &r->deadline);
    free(r);
}

/* Same address already in list? */
static int
resolve_seen(const struct sockaddr_storage *list, int n, const struct sockaddr *sa)
{
    for (int i = 0; i < n; i++) {
        if (sa->sa_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&list[i];
            const struct sockaddr_in *b = (const struct sockaddr_in *)sa;
            if (a->sin_addr.s_addr == b->sin_addr.s_addr)
                return 1;
        } else {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&list[i];
            const struct sockaddr_in6 *b = (const struct sockaddr_in6 *)sa;
            if (memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0 &&
                a->sin6_scope_id == b->sin6_scope_id)
                return 1;
        }
    }
    return 0;
}

/* Add one address (any port) to the family list it belongs to, skipping duplicates. */
static void
resolve_collect(const struct sockaddr *sa, int port, struct sockaddr_storage *v6, int *n6,
                struct sockaddr_storage *v4, int *n4)
{
    if (sa->sa_family == AF_INET && *n4 < RESOLVE_MAX && !resolve_seen(v4, *n4, sa)) {
        struct sockaddr_in *out = (struct sockaddr_in *)&v4[(*n4)++];
        memset(out, 0, sizeof(*out));
        out->sin_family = AF_INET;
        out->sin_port = htons((unsigned short)port);
        out->sin_addr = ((const struct sockaddr_in *)sa)->sin_addr;
    } else if (sa->sa_family == AF_INET6 && *n6 < RESOLVE_MAX && !resolve_seen(v6, *n6, sa)) {
        struct sockaddr_in6 *out = (struct sockaddr_in6 *)&v6[(*n6)++];
        memset(out, 0, sizeof(*out));
        out->sin6_family = AF_INET6;
        out->sin6_port = htons((unsigned short)port);
        out->sin6_addr = ((const struct sockaddr_in6 *)sa)->sin6_addr;
        out->sin6_scope_id = ((const struct sockaddr_in6 *)sa)->sin6_scope_id;
    }
}

/* Interleave the two family lists into res, IPv6 first (RFC 8305 section 4). */
static void
resolve_interleave(struct resolve_result *res, const struct sockaddr_storage *v6, int n6,
                   const struct sockaddr_storage *v4, int n4)
{
    int i6 = 0, i4 = 0;
    res->count = 0;
    while (res->count < RESOLVE_MAX && (i6 < n6 || i4 < n4)) {
        if (i6 < n6) {
            res->addrs[res->count] = v6[i6++];
            res->lens[res->count++] = sizeof(struct sockaddr_in6);
        }
        if (i4 < n4 && res->count < RESOLVE_MAX) {
            res->addrs[res->count] = v4[i4++];
            res->lens[res->count++] = sizeof(struct sockaddr_in);
        }
    }
}

/* c-ares is done with a request: record the answer (or drop it if nobody waits). */
static void
resolve_ares_cb(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    struct resolve_req *r = arg;
    (void)timeouts;
    r->in_ares = 0;
    r->chan->nqueries--;
    if (!r->user || (status == ARES_EDESTRUCTION && R.shutting)) {
        if (r->user) {
            r->user = 0;
            R.pending--;
        }
        resolve_req_free(r);
        ares_freeaddrinfo(ai);
        return;
    }
    r->status = -1;
    if (status == ARES_SUCCESS && ai) {
        struct sockaddr_storage v6[RESOLVE_MAX], v4[RESOLVE_MAX];
        int n6 = 0, n4 = 0;
        for (const struct ares_addrinfo_node *n = ai->nodes; n; n = n->ai_next) {
            if (n->ai_addr && (r->family == AF_UNSPEC || n->ai_family == r->family))
                resolve_collect(n->ai_addr, r->port, v6, &n6, v4, &n4);
        }
        resolve_interleave(&r->res, v6, n6, v4, n4);
        if (r->res.count > 0)
            r->status = 0;
        else
            status = ARES_ENODATA;
    }
    if (r->status < 0)
        resolve_why(r, resolve_status_text(status, r->family));
    ares_freeaddrinfo(ai);
    resolve_ready(r);
}

/* Hand every queued answer to its caller; callers may start, cancel or shut down meanwhile. */
static void
resolve_drain(void)
{
    struct resolve_req *r;
    while (R.initialized && (r = R.ready_head) != NULL) {
        resolve_unqueue(r);
        r->user = 0;
        R.pending--;
        r->cb(r->arg, r->status, r->status == 0 ? &r->res : NULL, r->status == 0 ? NULL : r->why);
        resolve_req_free(r); /* in no list and not in c-ares: ours alone */
    }
    if (R.initialized && !R.ready_head)
        ev_timer_stop(R.loop, &R.kick);
}

static void
resolve_kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)w, (void)revents;
    resolve_drain();
}

/* The overall deadline of one lookup passed: fail it now; c-ares finishes on its own. */
static void
resolve_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct resolve_req *r =
        (struct resolve_req *)((char *)w - offsetof(struct resolve_req, deadline));
    char detail[64], why[sizeof(r->why)];
    resolve_cb cb = r->cb;
    void *arg = r->arg;

    (void)loop, (void)revents;
    snprintf(detail, sizeof(detail), "lookup timed out after %u ms", r->timeout_ms);
    resolve_why(r, detail);
    memcpy(why, r->why, sizeof(why)); /* r may be freed by what the callback does */
    r->user = 0;
    R.pending--;
    if (!r->in_ares)
        resolve_req_free(r);
    cb(arg, -1, NULL, why);
}

static void resolve_chan_destroy(struct resolve_chan *c);

/* After c-ares ran: re-arm its clock, or destroy the channel if retired and idle. */
static void
resolve_chan_settle(struct resolve_chan *c)
{
    struct timeval tv, *tp;
    if (c->retired && c->nqueries == 0) {
        resolve_chan_destroy(c);
        return;
    }
    ev_timer_stop(R.loop, &c->timer);
    tp = ares_timeout(c->ares, NULL, &tv);
    if (tp) {
        ev_timer_set(&c->timer, (double)tp->tv_sec + (double)tp->tv_usec / 1e6, 0.);
        ev_timer_start(R.loop, &c->timer);
    }
}

static void
resolve_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct resolve_chan *c = ((struct resolve_io *)w)->chan;
    int fd = w->fd; /* w may be freed inside ares_process_fd */
    (void)loop;
    ares_process_fd(c->ares, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
                    (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
    resolve_chan_settle(c);
    resolve_drain();
}

static void
resolve_chan_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct resolve_chan *c =
        (struct resolve_chan *)((char *)w - offsetof(struct resolve_chan, timer));
    (void)loop, (void)revents;
    ares_process_fd(c->ares, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    resolve_chan_settle(c);
    resolve_drain();
}

/* c-ares tells us which of its sockets to watch for what (both 0: it is closing the socket). */
static void
resolve_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct resolve_chan *c = data;
    struct resolve_io **pp = &c->ios, *io;
    while (*pp && (*pp)->w.fd != fd)
        pp = &(*pp)->next;
    io = *pp;
    if (!readable && !writable) {
        if (io) {
            ev_io_stop(R.loop, &io->w);
            *pp = io->next;
            free(io);
        }
        return;
    }
    if (!io) {
        io = calloc(1, sizeof(*io));
        if (!io) {
            log_error("resolver: out of memory watching a name server socket");
            return; /* the lookup fails by its deadline */
        }
        io->chan = c;
        io->next = c->ios;
        c->ios = io;
        ev_io_init(&io->w, resolve_io_cb, fd, 0);
    } else {
        ev_io_stop(R.loop, &io->w);
    }
    ev_io_set(&io->w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
    ev_io_start(R.loop, &io->w);
}

/* Destroy a channel; c-ares answers what it still holds with ARES_EDESTRUCTION. */
static void
resolve_chan_destroy(struct resolve_chan *c)
{
    struct resolve_chan **pp = &R.chans;
    while (*pp && *pp != c)
        pp = &(*pp)->next;
    if (*pp)
        *pp = c->next;
    if (R.cur == c)
        R.cur = NULL;
    ares_destroy(c->ares);
    while (c->ios) { /* normally closed by ares_destroy already */
        struct resolve_io *io = c->ios;
        c->ios = io->next;
        ev_io_stop(R.loop, &io->w);
        free(io);
    }
    ev_timer_stop(R.loop, &c->timer);
    free(c);
}

/* Parse one "ADDR[:PORT]" name server ("1.2.3.4", "1.2.3.4:53", "[::1]:53", "::1"). */
static int
resolve_parse_server(const char *text, struct ares_addr_port_node *out)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t len;

    memset(out, 0, sizeof(*out));
    if (!text)
        return -1;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return -1;
        len = (size_t)(end - text - 1);
        port = end[1] == ':' ? end + 2 : NULL;
        if (len == 0 || len >= sizeof(host))
            return -1;
        memcpy(host, text + 1, len);
        host[len] = '\0';
        if (inet_pton(AF_INET6, host, &out->addr.addr6) != 1)
            return -1;
        out->family = AF_INET6;
    } else if (inet_pton(AF_INET6, text, &out->addr.addr6) == 1) {
        out->family = AF_INET6;
    } else {
        const char *colon = strchr(text, ':');
        len = colon ? (size_t)(colon - text) : strlen(text);
        port = colon ? colon + 1 : NULL;
        if (len == 0 || len >= sizeof(host))
            return -1;
        memcpy(host, text, len);
        host[len] = '\0';
        if (inet_pton(AF_INET, host, &out->addr.addr4) != 1)
            return -1;
        out->family = AF_INET;
    }
    out->udp_port = out->tcp_port = 53;
    if (port) {
        char *end;
        long p;
        if (*port < '0' || *port > '9')
            return -1;
        errno = 0;
        p = strtol(port, &end, 10);
        if (errno || *end || p < 1 || p > 65535)
            return -1;
        out->udp_port = out->tcp_port = (int)p;
    }
    return 0;
}

int
resolve_check_server(const char *text, const char **cause)
{
    struct ares_addr_port_node n;
    if (resolve_parse_server(text, &n) == 0)
        return 0;
    if (cause)
        *cause = "resolver takes IPv4 or [IPv6] addresses with an optional :PORT";
    return -1;
}

/* ares_init_options with our loop hooks, hosts-then-DNS lookups and per-try timeouts. */
static int
resolve_chan_open(struct resolve_chan *c, unsigned timeout_ms, int nservers)
{
    static char lookups[] = "fb"; /* /etc/hosts first, then DNS */
    struct ares_options o;
    int tries = 2;
    long try_ms;

    /* With tries T and N servers c-ares waits N*t*(2^T - 1) in all; fit that in timeout_ms. */
    if (nservers < 1)
        nservers = 1;
    try_ms = (long)timeout_ms / (3L * nservers);
    while (try_ms > RESOLVE_TRY_MAX_MS && tries < 5) {
        tries++;
        try_ms = (long)timeout_ms / (((1L << tries) - 1) * nservers);
    }
    if (try_ms < RESOLVE_TRY_MIN_MS)
        try_ms = RESOLVE_TRY_MIN_MS;

    memset(&o, 0, sizeof(o));
    o.sock_state_cb = resolve_sock_state_cb;
    o.sock_state_cb_data = c;
    o.timeout = (int)try_ms;
    o.tries = tries;
    o.lookups = lookups;
    return ares_init_options(&c->ares, &o,
                             ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                                 ARES_OPT_LOOKUPS);
}

/* A new channel for conf, or NULL with resolve_cause / a static cause set. */
static struct resolve_chan *
resolve_chan_new(const struct conf *conf, unsigned timeout_ms, const char **cause)
{
    struct ares_addr_port_node nodes[CONF_MAX_RESOLVERS];
    struct resolve_chan *c;
    int n = conf ? conf->nresolvers : 0, rc;

    if (n < 0 || n > CONF_MAX_RESOLVERS) {
        *cause = "too many resolver addresses";
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        char name[64];
        if (resolve_parse_server(conf->resolvers[i], &nodes[i]) < 0) {
            resolve_quote(name, sizeof(name), conf->resolvers[i]);
            snprintf(resolve_cause, sizeof(resolve_cause),
                     "resolver '%s' is not an IPv4 or [IPv6] address with optional :PORT", name);
            *cause = resolve_cause;
            return NULL;
        }
        nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        *cause = "out of memory";
        return NULL;
    }
    rc = resolve_chan_open(c, timeout_ms, n);
    if (rc == ARES_SUCCESS && n > 0) {
        rc = ares_set_servers_ports(c->ares, nodes);
    } else if (rc == ARES_SUCCESS) {
        /* Servers from /etc/resolv.conf: re-open to split the timeout between them. */
        struct ares_addr_port_node *list = NULL;
        int count = 0;
        if (ares_get_servers_ports(c->ares, &list) == ARES_SUCCESS)
            for (struct ares_addr_port_node *p = list; p; p = p->next)
                count++;
        ares_free_data(list);
        if (count > 1) {
            ares_destroy(c->ares);
            c->ares = NULL;
            rc = resolve_chan_open(c, timeout_ms, count);
        }
    }
    if (rc != ARES_SUCCESS) {
        snprintf(resolve_cause, sizeof(resolve_cause), "cannot set up the resolver: %s",
                 ares_strerror(rc));
        *cause = resolve_cause;
        if (c->ares)
            ares_destroy(c->ares);
        free(c);
        return NULL;
    }
    ev_timer_init(&c->timer, resolve_chan_timer_cb, 0., 0.);
    return c;
}

int
resolve_init(struct ev_loop *loop, const struct conf *conf, const char **cause)
{
    const char *dummy;
    struct resolve_chan *c, *old;
    unsigned timeout_ms = conf && conf->resolve_timeout_ms ? conf->resolve_timeout_ms : 5000;
    int rc;

    if (!cause)
        cause = &dummy;
    if (R.initialized && loop != R.loop) {
        *cause = "the resolver cannot move to another event loop";
        return -1;
    }
    if (!R.initialized) {
        rc = ares_library_init(ARES_LIB_INIT_ALL);
        if (rc != ARES_SUCCESS) {
            snprintf(resolve_cause, sizeof(resolve_cause), "cannot set up c-ares: %s",
                     ares_strerror(rc));
            *cause = resolve_cause;
            return -1;
        }
    }
    c = resolve_chan_new(conf, timeout_ms, cause);
    if (!c) {
        if (!R.initialized)
            ares_library_cleanup();
        return -1;
    }
    if (!R.initialized) {
        R.initialized = 1;
        R.loop = loop;
        ev_timer_init(&R.kick, resolve_kick_cb, 0., 0.);
    }
    old = R.cur;
    c->next = R.chans;
    R.chans = c;
    R.cur = c;
    R.timeout_ms = timeout_ms;
    if (old) {
        old->retired = 1;
        if (old->nqueries == 0)
            resolve_chan_destroy(old);
    }
    return 0;
}

void
resolve_shutdown(void)
{
    if (!R.initialized)
        return;
    R.shutting = 1;
    while (R.chans)
        resolve_chan_destroy(R.chans);
    while (R.ready_head) {
        struct resolve_req *r = R.ready_head;
        resolve_unqueue(r);
        resolve_req_free(r);
    }
    ev_timer_stop(R.loop, &R.kick);
    ares_library_cleanup();
    memset(&R, 0, sizeof(R));
}

/* Answer an IP literal (callers should not send these) without c-ares. */
static void
resolve_literal(struct resolve_req *r, int af, const void *bytes)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (r->family != AF_UNSPEC && r->family != af) {
        resolve_why(r, af == AF_INET ? "an IPv4 address where IPv6 was asked for"
                                     : "an IPv6 address where IPv4 was asked for");
        return;
    }
    if (af == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((unsigned short)r->port);
        memcpy(&sin->sin_addr, bytes, 4);
        r->res.lens[0] = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)r->port);
        memcpy(&sin6->sin6_addr, bytes, 16);
        r->res.lens[0] = sizeof(*sin6);
    }
    r->res.addrs[0] = ss;
    r->res.count = 1;
    r->status = 0;
}

struct resolve_req *
resolve_start(const char *host, int port, int family, double timeout, resolve_cb cb, void *arg)
{
    struct resolve_req *r;
    unsigned char bytes[16];
    size_t len = host ? strlen(host) : 0;
    double limit;

    if (!R.initialized || !R.cur || !cb) {
        errno = R.initialized ? EINVAL : ENOTCONN;
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (!r) {
        errno = ENOMEM;
        return NULL;
    }
    r->user = 1;
    r->cb = cb;
    r->arg = arg;
    r->port = port >= 0 && port <= 65535 ? port : 0;
    r->family = family;
    r->status = -1;
    snprintf(r->host, sizeof(r->host), "%s", host ? host : "");
    limit = R.timeout_ms / 1000.;
    if (timeout > 0 && timeout < limit)
        limit = timeout;
    r->timeout_ms = (unsigned)(limit * 1000. + 0.5);
    ev_timer_init(&r->deadline, resolve_deadline_cb, limit, 0.);
    R.pending++;

    /* Answered here (delivered from the loop): bad input and IP literals. */
    if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) {
        resolve_why(r, "unsupported address family");
    } else if (len == 0 || len > RESOLVE_NAME_MAX + 1 ||
               (len == RESOLVE_NAME_MAX + 1 && host[len - 1] != '.')) {
        resolve_why(r, "not a valid host name");
    } else if (inet_pton(AF_INET, host, bytes) == 1) {
        resolve_literal(r, AF_INET, bytes);
    } else if (inet_pton(AF_INET6, host, bytes) == 1) {
        resolve_literal(r, AF_INET6, bytes);
    } else {
        struct ares_addrinfo_hints hints;
        struct resolve_chan *c = R.cur;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = family;
        hints.ai_flags = ARES_AI_NOSORT; /* we order: DNS order within a family, interleaved */
        r->chan = c;
        r->in_ares = 1;
        c->nqueries++;
        ev_timer_start(R.loop, &r->deadline);
        /* May answer at once (hosts file, errors): resolve_ares_cb only queues. */
        ares_getaddrinfo(c->ares, r->host, NULL, &hints, resolve_ares_cb, r);
        resolve_chan_settle(c);
        return r;
    }
    resolve_ready(r);
    return r;
}

void
resolve_cancel(struct resolve_req *r)
{
    if (!r || !r->user)
        return;
    r->user = 0;
    R.pending--;
    ev_timer_stop(R.loop, &r->deadline);
    if (r->queued)
        resolve_unqueue(r);
    if (!r->in_ares)
        resolve_req_free(r);
    /* else c-ares still holds it: freed when its answer (or ares_destroy) comes */
}

int
resolve_pending(void)
{
    return R.pending;
}
