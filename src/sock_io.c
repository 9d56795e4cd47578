#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "b64.h"
#include "ctl.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "nbguard.h"
#include "policy.h"
#include "resolve.h"
#include "sock.h"
#include "tls.h"

void sock_io_event(struct sock *s, int revents);
static void sock_eof_check(struct sock *s);

int
sock_is_dgram(const struct sock *s)
{
    return s->type == SOCK_UDP || s->type == SOCK_DTLS;
}

int
sock_apply_opts(struct sock *s, const char **which)
{
    const struct sock_opts *o = s->opts;
    int v6 = s->local.sa.sa_family == AF_INET6 || s->remote.sa.sa_family == AF_INET6;
    if (o == NULL || s->fd < 0)
        return 0;
    struct {
        unsigned bit;
        int level, name;
        const int *val;
        const char *word;
    } rows[] = {
        {SOPT_NODELAY, IPPROTO_TCP, TCP_NODELAY, &o->nodelay, "nodelay"},
        {SOPT_KEEPALIVE, SOL_SOCKET, SO_KEEPALIVE, &o->keepalive, "keepalive"},
        {SOPT_BROADCAST, SOL_SOCKET, SO_BROADCAST, &o->broadcast, "broadcast"},
        {SOPT_TTL, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_UNICAST_HOPS : IP_TTL, &o->ttl, "ttl"},
        {SOPT_RCVBUF, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, "rcvbuf"},
        {SOPT_SNDBUF, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, "sndbuf"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        if (!(o->set & rows[i].bit))
            continue;
        if (setsockopt(s->fd, rows[i].level, rows[i].name, rows[i].val, sizeof(int)) < 0) {
            *which = rows[i].word;
            return -1;
        }
        /* A dual-stack IPv6 socket may carry IPv4 traffic: set the IPv4 TTL too. */
        if (rows[i].bit == SOPT_TTL && v6)
            setsockopt(s->fd, IPPROTO_IP, IP_TTL, rows[i].val, sizeof(int));
    }
    return 0;
}

int
sock_open_fd(struct sock *s, int af)
{
    const char *which;
    int fd =
        socket(af, (sock_is_dgram(s) ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sock_set_fd(s, fd);
    s->local.sa.sa_family = (sa_family_t)af;
    if (sock_apply_opts(s, &which) < 0)
        log_debug("socket %llu: option %s not applied: %s", (unsigned long long)s->id, which,
                  strerror(errno));
    return 0;
}

int
sock_who(const struct sock *s, struct policy_who *who)
{
    const struct ident *id = s->ident;
    who->uid = id->uid;
    who->gid = id->gid;
    who->pid = id->pid;
    who->groups = id->groups;
    who->ngroups = id->ngroups;
    return 1;
}

/*
 * The admin's policy and every restriction of s's identity, and of the client that holds it now
 * when that is another (a restricted client that took a socket: sockd-protocol.7,
 * METHODS, daemon.restrict).
 */
static int
sock_judge(const struct sock *s, int action, const struct sockaddr *sa, socklen_t len,
           const struct policy_who *who)
{
    const struct ident *holder = s->owner != NULL ? s->owner->ident : s->ident;
    return policy_allows(sockd.conf.policy, (enum policy_action)action, sa, len, who) &&
           ident_allows(s->ident, action, sa, len) &&
           (holder == s->ident || ident_allows(holder, action, sa, len));
}

int
sock_policy_ok(struct sock *s, int action, const struct sockaddr *sa, socklen_t len)
{
    struct policy_who who;
    char text[128];
    static const char *const words[] = {"?", "connect", "bind", "?", "sendto"};

    if (sockd.conf.policy == NULL && s->ident->restriction == NULL &&
        (s->owner == NULL || s->owner->ident->restriction == NULL))
        return 1;
    sock_who(s, &who);
    if (sock_judge(s, action, sa, len, &who)) {
        /* a connected datagram socket sends to its peer: it needs the sendto rules' leave too */
        if (action != POLICY_CONNECT || !sock_is_dgram(s))
            return 1;
        action = POLICY_SENDTO;
        if (sock_judge(s, POLICY_SENDTO, sa, len, &who))
            return 1;
    }
    char owner[48] = "a given-away socket"; /* parked after socket.give */
    if (s->owner != NULL)
        snprintf(owner, sizeof owner, "client %llu", (unsigned long long)s->owner->id);
    log_warn("policy: %s to %s denied for %s (uid %d pid %d%s), socket %llu", words[action & 7],
             addr_str(sa, len, text, sizeof text), owner, (int)who.uid, (int)who.pid,
             s->ident->restriction != NULL ? ", restricted" : "", (unsigned long long)s->id);
    return 0;
}

int
sock_rewrite(struct sock *s, const struct sockaddr *sa, socklen_t len, struct sockaddr_storage *out,
             socklen_t *outlen)
{
    struct policy_who who;
    if (sockd.conf.policy == NULL || !sock_who(s, &who))
        return 0;
    return policy_rewrite(sockd.conf.policy, sa, len, &who, out, outlen);
}

/* Bytes s may still take into its buffers under its uid's max-buffer-per-uid. */
static size_t
sock_budget_room(const struct sock *s)
{
    return ident_room(s->ident);
}

/* s stops reading for its uid's byte budget: it waits on the account's list to be woken. */
static void
sock_budget_wait(struct sock *s)
{
    struct ident_acct *a = s->ident->acct;
    if (s->budget_wait)
        return;
    s->budget_wait = 1;
    s->bprev = NULL;
    s->bnext = a->waiting;
    if (a->waiting != NULL)
        a->waiting->bprev = s;
    a->waiting = s;
}

void
sock_budget_leave(struct sock *s)
{
    struct ident_acct *a = s->ident->acct;
    if (!s->budget_wait)
        return;
    if (s->bprev != NULL)
        s->bprev->bnext = s->bnext;
    else
        a->waiting = s->bnext;
    if (s->bnext != NULL)
        s->bnext->bprev = s->bprev;
    s->bnext = s->bprev = NULL;
    s->budget_wait = 0;
}

static void sock_relay_update(struct sock *s);

void
sock_budget_wake(struct ident_acct *a)
{
    static int waking; /* sock_update_io of a woken socket must not start another round */
    size_t cap = sockd.conf.max_buffer_per_uid;
    /* below three quarters of the budget: reading resumes in steps, not byte by byte */
    if (waking || a->waiting == NULL || a->queued > cap - cap / 4)
        return;
    waking = 1;
    while (a->waiting != NULL) {
        struct sock *s = a->waiting;
        sock_budget_leave(s);
        sock_update_io(s);
        if (s->relay != NULL)
            sock_relay_update(s);
    }
    waking = 0;
}

/* Largest datagram payload kept per socket.recv event or queued by sendto. */
#define SOCK_DGRAM_MAX 65535

/* Budget room s needs to read at all: a datagram is read whole, a stream a byte at a time. */
static size_t
sock_read_min(const struct sock *s)
{
    return sock_is_dgram(s) ? sizeof(struct sock_dgram) + SOCK_DGRAM_MAX : 1;
}

/* True when the peer's bytes go to the client's end of a socket.pipe by splice. */
static int
sock_splicing(const struct sock *s)
{
    return s->relay != NULL && s->relay->pipe[0] >= 0;
}

void
sock_update_io(struct sock *s)
{
    int ev = 0;

    if (s->dead || s->fd < 0)
        return;
    sock_budget_wake(s->ident->acct);
    int paused = s->owner != NULL && ctl_paused(s->owner);
    if (sock_ssl(s) != NULL && s->tls->handshaking) {
        ev = s->tls->want ? s->tls->want : EV_READ;
        goto set;
    }
    switch (s->state) {
    case SS_LISTENING:
        if (!s->accept_paused && !paused && s->owner != NULL)
            ev = EV_READ;
        break;
    case SS_CONNECTING:
        ev = EV_WRITE;
        break;
    case SS_BOUND:
        if (!sock_is_dgram(s) || s->type == SOCK_DTLS) /* dtls: only listen/connect read */
            break;
        /* a bound udp socket receives and sends */
        __attribute__((fallthrough));
    case SS_CONNECTED: {
        size_t cap = SOCK_READAHEAD;
        if (s->recv_pending && s->recv_len > cap)
            cap = s->recv_len;
        if (sock_splicing(s) && (buf_len(&s->in) > 0 || s->relay->piped >= s->relay->pipe_cap))
            cap = 0; /* the splice path reads once earlier bytes are out and the pipe has room */
        if (!s->rd_eof && !paused && buf_len(&s->in) < cap && !s->tls_upgrade &&
            (!s->no_readahead || s->recv_pending)) {
            if (sock_budget_room(s) >= sock_read_min(s))
                ev |= EV_READ;
            else
                sock_budget_wait(s); /* max-buffer-per-uid: woken when the uid's bytes drain */
        }
    }
        /* fall through */
    case SS_CLOSING:
        if (buf_len(&s->out) > 0)
            ev |= EV_WRITE;
        break;
    default:
        break;
    }
    if (sock_ssl(s) != NULL && s->tls->want != 0 && s->state != SS_LISTENING)
        ev |= s->tls->want; /* the TLS engine needs the other direction to make progress */
    if (s->budget_wait)
        ev &= ~EV_READ; /* a TLS want-read must not spin on bytes the budget will not take */
set:
    if (ev == (s->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&s->io)))
        return;
    ev_io_stop(sockd.loop, &s->io);
    ev_io_set(&s->io, s->fd, ev);
    if (ev != 0)
        ev_io_start(sockd.loop, &s->io);
}

/* The reason for a failed connect. */
static const char *
sock_connect_reason(int err)
{
    return err == ECONNREFUSED ? SOCKD_REASON_CONNECT_REJECTED : SOCKD_REASON_CONNECT_FAILED;
}

static void
sock_fill_local(struct sock *s)
{
    socklen_t len = sizeof s->local;
    if (getsockname(s->fd, &s->local.sa, &len) == 0)
        s->has_local = 1;
}

/* Flush-then-close: send FIN, drop unread input (so close sends no RST), close with reason. */
static void
sock_close_graceful(struct sock *s, const char *reason, json_t *req)
{
    char sink[4096];
    if (sock_ssl(s) != NULL && !s->tls->handshaking)
        tls_close_notify(s);
    if (s->fd >= 0) {
        shutdown(s->fd, SHUT_WR);
        for (int i = 0; i < 64 && recv(s->fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++)
            ;
    }
    sock_close(s, reason, 0, NULL, req);
}

/* An I/O error on a connected socket. */
static void
sock_io_failed(struct sock *s, int err)
{
    sock_close(s, SOCKD_REASON_LOST, err, NULL, NULL);
}

static void sock_tls_begin(struct sock *s, int server);
static void sock_ready(struct sock *s);
static void sock_write_ready(struct sock *s);

/* The TCP connection is up: a tls socket starts its handshake, others are ready. */
static void
sock_became_connected(struct sock *s)
{
    if ((s->type == SOCK_TLS || s->type == SOCK_DTLS) && sock_ssl(s) == NULL) {
        s->state = SS_CONNECTING;
        s->tls_announce = 0;
        sock_fill_local(s);
        sock_tls_begin(s, 0);
        return;
    }
    sock_ready(s);
}

/* Ready for data: announce it (socket.connected, with the tls object for TLS). */
static void
sock_ready(struct sock *s)
{
    json_t *req = s->connect_req;
    s->connect_req = NULL;
    s->state = SS_CONNECTED;
    sock_timer_stop(s, SOCK_TIMER_CONNECT);
    sock_resolve_free(s); /* the addresses not tried are of no more use */
    sock_fill_local(s);
    json_t *p =
        json_pack("{s:o,s:o}", "local", sock_addr_json(s, 0), "remote", sock_addr_json(s, 1));
    if (s->asked != NULL)
        json_object_set_new(p, "rewritten_to", addr_to_json(&s->remote.sa, sizeof s->remote));
    if (sock_ssl(s) != NULL)
        json_object_set_new(p, "tls", tls_info(s));
    if (sock_log_wanted(s)) {
        char *r = json_dumps(json_object_get(p, "remote"), JSON_COMPACT);
        log_info("%s socket %llu (client %llu) connected to %s", sock_type_name(s->type),
                 (unsigned long long)s->id, s->owner ? (unsigned long long)s->owner->id : 0ULL,
                 r ? r : "?");
        free(r);
    }
    sock_emit(s, "socket.connected", p, req);
    json_decref(req);
    if (s->shut_wanted)
        s->state = SS_CLOSING;
}

/* The request a handshake result is reported with (connect, accept or starttls). */
static json_t *
sock_tls_req(struct sock *s)
{
    return s->tls_announce == 2 ? s->shutdown_req : s->connect_req;
}

/* Drive the TLS handshake one step; announce the result when it ends. */
static void
sock_tls_step(struct sock *s)
{
    char detail[512];
    int r = tls_handshake(s, detail, sizeof detail);
    if (r == 0) {
        sock_update_io(s);
        return;
    }
    if (r < 0) {
        log_debug("socket %llu: TLS handshake failed: %s", (unsigned long long)s->id, detail);
        json_t *req = sock_tls_req(s);
        if (s->tls_announce == 1 && s->accept_auto) {
            sock_close(s, NULL, 0, NULL, NULL); /* never announced: nobody to tell */
            return;
        }
        sock_close(s, SOCKD_REASON_TLS_HANDSHAKE_FAILED, 0, detail, req);
        return;
    }
    s->tp = &transport_tls;
    switch (s->tls_announce) {
    case 1: { /* accepted */
        json_t *req = s->connect_req;
        s->connect_req = NULL;
        s->state = SS_CONNECTED;
        sock_timer_stop(s, SOCK_TIMER_CONNECT);
        json_t *p =
            json_pack("{s:I,s:o,s:o,s:o}", "listener", (json_int_t)s->listener, "local",
                      sock_addr_json(s, 0), "remote", sock_addr_json(s, 1), "tls", tls_info(s));
        sock_emit(s, "socket.accepted", p, req);
        json_decref(req);
        break;
    }
    case 2: { /* upgraded */
        json_t *req = s->shutdown_req;
        s->shutdown_req = NULL;
        s->state = SS_CONNECTED;
        sock_emit(s, "socket.tls_upgraded", json_pack("{s:o}", "tls", tls_info(s)), req);
        json_decref(req);
        break;
    }
    default:
        sock_ready(s);
        break;
    }
    if (!s->dead) {
        /* SS_CLOSING: socket.shutdown came during the handshake (flush, close_notify, close) */
        if ((buf_len(&s->out) > 0 && s->state == SS_CONNECTED) || s->state == SS_CLOSING)
            sock_write_ready(s);
        if (!s->dead)
            sock_update_io(s);
    }
}

/* Start TLS on a connected fd (client or server side) and take the first handshake step. */
static void
sock_tls_begin(struct sock *s, int server)
{
    char detail[512];
    s->tls_server = server ? 1 : 0;
    if (tls_start(s, s->tls->ctx, server, s->tls->server_name, detail, sizeof detail) < 0) {
        sock_close(s, SOCKD_REASON_TLS_HANDSHAKE_FAILED, 0, detail, sock_tls_req(s));
        return;
    }
    sock_tls_step(s);
}

void
sock_starttls(struct sock *s, struct tlsctx *t, int server, const char *server_name, json_t *req)
{
    tlsctx_ref(t);
    if (s->tls->ctx != NULL)
        tlsctx_unref(s->tls->ctx);
    s->tls->ctx = t;
    free(s->tls->server_name);
    s->tls->server_name = server_name ? strdup(server_name) : NULL;
    s->shutdown_req = req ? json_incref(req) : NULL; /* carried to socket.tls_upgraded */
    s->tls_announce = 2;
    s->tls_server = server ? 1 : 0;
    s->tls_upgrade = 1;
    s->tls->upgrade_at = s->out_queued; /* sends after this one wait for TLS */
    if (s->bytes_sent >= s->tls->upgrade_at) {
        s->tls_upgrade = 0;
        sock_tls_begin(s, server);
        return;
    }
    sock_update_io(s); /* reading stops until the plaintext is out and TLS starts */
}

static void
sock_connect_timeout_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock *s = w->data;
    (void)revents;
    if (s->tls_announce == 1) { /* an accepted connection that never finished its handshake */
        if (s->accept_auto)
            sock_close(s, NULL, 0, NULL, NULL);
        else
            sock_close(s, SOCKD_REASON_TLS_HANDSHAKE_FAILED, 0, "handshake timed out",
                       s->connect_req);
        return;
    }
    sock_close(s, SOCKD_REASON_TIMEOUT, 0, "connect timed out", s->connect_req);
}

/*
 * One connect attempt to sa on a fresh fd (a failed TCP socket cannot be reused). Returns 1 when
 * connected or under way, 0 when it failed at once (errno set).
 */
static int
sock_connect_attempt(struct sock *s, const struct sockaddr *sa, socklen_t len)
{
    struct sockaddr_storage rw;
    socklen_t rwlen;
    if (sa->sa_family != AF_UNIX && sock_rewrite(s, sa, len, &rw, &rwlen)) {
        if (s->asked == NULL && (s->asked = malloc(sizeof *s->asked)) == NULL)
            return 0;
        memset(s->asked, 0, sizeof *s->asked);
        memcpy(s->asked, sa, len < sizeof *s->asked ? len : sizeof *s->asked);
        sa = (const struct sockaddr *)&rw;
        len = rwlen;
    }
    s->policy_denied = 0;
    /* a pathname is judged by sock_unix_connect on the real path, as it connects */
    int upath = sock_unix_is_path(sa, len);
    if (!upath && !sock_policy_ok(s, POLICY_CONNECT, sa, len)) {
        errno = EACCES;
        s->policy_denied = 1;
        return 0;
    }
    if (s->fd >= 0 && s->attempted) { /* a failed TCP socket cannot connect again */
        ev_io_stop(sockd.loop, &s->io);
        if (s->foreign)
            nbguard_close(s->fd);
        else
            close(s->fd);
        s->fd = -1;
        s->foreign = 0; /* the next fd is the daemon's own */
    }
    if (s->fd < 0 && sock_open_fd(s, sa->sa_family) < 0)
        return 0;
    s->attempted = 1;
    if (sa->sa_family == AF_UNIX) {
        free(s->un->remote);
        s->un->remote = addr_unix_text(sa, len);
    } else {
        memcpy(&s->remote, sa, len < sizeof s->remote ? len : sizeof s->remote);
    }
    s->has_remote = 1;
    int r;
    if (upath)
        r = sock_unix_connect(s, sa, len);
    else if (s->foreign) /* the client may have cleared O_NONBLOCK */
        r = nbguard_connect(s->fd, sa, len);
    else
        do
            r = connect(s->fd, sa, len);
        while (r < 0 && errno == EINTR);
    if (r == -2) {
        errno = EACCES;
        s->policy_denied = 1;
        return 0;
    }
    if (r == 0) {
        sock_became_connected(s);
        return 1;
    }
    if (errno == EINPROGRESS) {
        s->state = SS_CONNECTING;
        return 1;
    }
    return 0;
}

/* A host name's lookup and then its addresses, tried in order until one connects. */
struct sock_resolve {
    struct resolve_req *req; /* lookup in flight, or NULL */
    int next;                /* next address to try */
    struct resolve_result addrs;
};

void
sock_resolve_free(struct sock *s)
{
    if (s->rs == NULL)
        return;
    if (s->rs->req != NULL)
        resolve_cancel(s->rs->req);
    free(s->rs);
    s->rs = NULL;
}

/* Try the next resolved address; closes the socket when none is left. */
static void
sock_connect_next(struct sock *s, int last_err)
{
    struct sock_resolve *rs = s->rs;
    while (rs != NULL && rs->next < rs->addrs.count) {
        int i = rs->next++;
        const struct sockaddr *sa = (const struct sockaddr *)&rs->addrs.addrs[i];
        if (sock_connect_attempt(s, sa, rs->addrs.lens[i])) {
            sock_update_io(s);
            return;
        }
        last_err = s->policy_denied ? -1 : errno;
    }
    if (last_err == -1)
        sock_close(s, SOCKD_REASON_POLICY_DENIED, 0, "destination denied by policy",
                   s->connect_req);
    else
        sock_close(s, sock_connect_reason(last_err), last_err, NULL, s->connect_req);
}

/* A host name's addresses arrived (or did not): try them in order. */
static void
sock_resolved_cb(void *arg, int status, const struct resolve_result *res, const char *why)
{
    struct sock *s = arg;
    s->rs->req = NULL;
    if (status < 0) {
        sock_close(s, SOCKD_REASON_CONNECT_FAILED, 0, why, s->connect_req);
        return;
    }
    s->rs->addrs = *res;
    s->rs->next = 0;
    sock_connect_next(s, ECONNREFUSED);
}

int
sock_connect(struct sock *s, const struct addr *a, double timeout)
{
    if (timeout > 0) {
        sock_timer_start(s, SOCK_TIMER_CONNECT, sock_connect_timeout_cb, timeout);
    }
    if (a->kind == ADDR_NAME) {
        /* the connect timeout covers the lookup too: the lookup gets what is left of it */
        int family = s->fd >= 0 ? s->local.sa.sa_family : AF_UNSPEC;
        /* a little longer than the connect timer, so timeout_ms always ends as "timeout" */
        if (s->rs == NULL)
            s->rs = calloc(1, sizeof *s->rs);
        if (s->rs != NULL)
            s->rs->req = resolve_start(a->host, a->port, family, timeout > 0 ? timeout + 0.1 : 0,
                                       sock_resolved_cb, s);
        if (s->rs == NULL || s->rs->req == NULL) {
            sock_resolve_free(s);
            sock_timer_stop(s, SOCK_TIMER_CONNECT);
            errno = ENOMEM;
            return -1;
        }
        s->state = SS_CONNECTING;
        return 0;
    }
    if (sock_connect_attempt(s, (const struct sockaddr *)&a->sa, a->salen)) {
        sock_update_io(s);
        return 0;
    }
    if (s->fd < 0 && errno != 0 && s->state == SS_OPEN && !s->has_local) {
        /* socket() itself failed: an error response, the socket stays as it was */
        sock_timer_stop(s, SOCK_TIMER_CONNECT);
        s->has_remote = 0;
        return -1;
    }
    sock_connect_next(s, s->policy_denied ? -1 : errno);
    return 0;
}

static void
sock_connect_ready(struct sock *s)
{
    int err = 0;
    socklen_t el = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
        err = errno;
    if (err == EINPROGRESS || err == EALREADY)
        return;
    if (err != 0) {
        sock_connect_next(s, err);
        return;
    }
    sock_became_connected(s);
}

/* End a notification line written up to p + w: `,"request":ID` when there is an id, then the
 * closing braces and the newline. Returns the line's length. */
static size_t
sock_line_end(char *p, size_t w, const char *id, size_t idlen)
{
    if (id != NULL) {
        memcpy(p + w, ",\"request\":", 11);
        memcpy(p + w + 11, id, idlen);
        w += 11 + idlen;
    }
    memcpy(p + w, "}}\n", 3);
    return w + 3;
}

/*
 * The text of a request id for a notification line written in place: an integer (the common
 * case) into num, anything else from jansson into *heap (the caller frees it). 0, or -1 when
 * the text could not be made (out of memory); *text NULL when there is no id.
 */
static int
sock_req_text(json_t *req, char num[32], char **heap, const char **text, size_t *len)
{
    *heap = NULL;
    *text = NULL;
    *len = 0;
    if (req == NULL)
        return 0;
    if (json_is_integer(req)) {
        *len = (size_t)snprintf(num, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(req));
        *text = num;
        return 0;
    }
    if ((*heap = json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
        return -1;
    *text = *heap;
    *len = strlen(*heap);
    return 0;
}

/*
 * socket.sent, written straight into the client's queue: one per send, so the JSON tree and
 * encoder of sock_emit are skipped. The line is the one sock_emit writes:
 * {"jsonrpc":"2.0","method":"socket.sent","params":{"bytes":N,"socket":S,"request":ID}}.
 */
static void
sock_emit_sent(struct sock *s, size_t bytes, json_t *req)
{
    char head[128], idnum[32];
    char *idtext;
    const char *id;
    size_t idlen;

    if (s->owner == NULL)
        return;
    if (sock_req_text(req, idnum, &idtext, &id, &idlen) < 0) {
        sock_emit(s, "socket.sent", json_pack("{s:I}", "bytes", (json_int_t)bytes), req);
        return;
    }
    int hl = snprintf(head, sizeof head,
                      "{\"jsonrpc\":\"2.0\",\"method\":\"socket.sent\",\"params\":{\"bytes\":%zu,"
                      "\"socket\":%llu",
                      bytes, (unsigned long long)s->id);
    size_t total = (size_t)hl + (id ? 11 + idlen : 0) + 3;
    char *p = ctl_reserve_line(s->owner, total);
    if (p != NULL) {
        memcpy(p, head, (size_t)hl);
        ctl_commit_line(s->owner, sock_line_end(p, (size_t)hl, id, idlen));
    }
    free(idtext);
}

/* Emit socket.sent for every send whose last byte reached the kernel. */
static void
sock_complete_sends(struct sock *s)
{
    while (s->sq_head != NULL && s->sq_head->end <= s->bytes_sent) {
        struct sock_sendrec *r = s->sq_head;
        s->sq_head = r->next;
        if (s->sq_head == NULL)
            s->sq_tail = NULL;
        if (r->notify)
            sock_emit_sent(s, r->bytes, r->req);
        json_decref(r->req);
        free(r);
    }
}

/* Send queued datagrams, one sendto each; a datagram is never split. */
static void
sock_dgram_write_ready(struct sock *s)
{
    while (buf_len(&s->out) >= sizeof(struct sock_dgram)) {
        struct sock_dgram h;
        memcpy(&h, buf_head(&s->out), sizeof h);
        const char *payload = buf_head(&s->out) + sizeof h;
        ssize_t n;
        int tries = 0;
        if (s->type == SOCK_DTLS) { /* one record per datagram (sock_dtls.c) */
            n = dtls_send(s, payload, h.len);
            if (n < 0 && errno != EAGAIN && !dtls_transient(errno)) {
                sock_io_failed(s, errno);
                return;
            }
        } else
            do
                n = sendto(s->fd, payload, h.len, MSG_NOSIGNAL | MSG_DONTWAIT,
                           h.has_addr ? &h.addr.sa : NULL,
                           h.has_addr ? (socklen_t)sizeof h.addr : 0);
            /* A pending ICMP error is reported instead of sending once: try again. */
            while (n < 0 && (errno == EINTR || (errno == ECONNREFUSED && ++tries < 2)));
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0)
            log_debug("socket %llu: datagram of %u bytes dropped: %s", (unsigned long long)s->id,
                      h.len, strerror(errno));
        else {
            s->bytes_sent += h.len;
            sockd.bytes_out += h.len;
        }
        buf_consume(&s->out, sizeof h + h.len);
        /* One record per datagram: complete the oldest. */
        struct sock_sendrec *r = s->sq_head;
        if (r != NULL) {
            s->sq_head = r->next;
            if (s->sq_head == NULL)
                s->sq_tail = NULL;
            if (r->notify) {
                json_t *p = json_pack("{s:I}", "bytes", (json_int_t)(n < 0 ? 0 : r->bytes));
                if (n < 0) {
                    json_object_set_new(p, "errno", json_integer(errno));
                    json_object_set_new(p, "detail", json_string(strerror(errno)));
                }
                sock_emit(s, "socket.sent", p, r->req);
            }
            json_decref(r->req);
            free(r);
        }
        if (s->dead)
            return;
    }
}

static void
sock_write_ready(struct sock *s)
{
    if (sock_is_dgram(s)) {
        sock_dgram_write_ready(s);
        /* dtls: once flushed, shutdown (close_notify) and EOF are handled below as for TLS */
        if (s->type != SOCK_DTLS || s->dead || buf_len(&s->out) > 0)
            return;
    }
    while (buf_len(&s->out) > 0) {
        size_t len = buf_len(&s->out);
        if (s->tls_upgrade) { /* plaintext only up to the starttls boundary */
            if (s->bytes_sent >= s->tls->upgrade_at)
                break;
            if (len > s->tls->upgrade_at - s->bytes_sent)
                len = (size_t)(s->tls->upgrade_at - s->bytes_sent);
        }
        ssize_t n = s->tp->write(s, buf_head(&s->out), len);
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            sock_io_failed(s, errno);
            return;
        }
        buf_consume(&s->out, (size_t)n);
        s->bytes_sent += (uint64_t)n;
        sockd.bytes_out += (uint64_t)n;
    }
    sock_complete_sends(s);
    if (s->tls_upgrade && s->bytes_sent >= s->tls->upgrade_at) {
        s->tls_upgrade = 0;
        sock_tls_begin(s, s->tls_server);
        return;
    }
    if (buf_len(&s->out) == 0) {
        if (s->state == SS_CLOSING) {
            if (sock_ssl(s) != NULL && tls_close_notify(s) == 0)
                return; /* close_notify waits for the socket to take it */
            sock_close_graceful(s, SOCKD_REASON_NORMAL, s->shutdown_req);
            return;
        }
        sock_eof_check(s);
    }
}

/* Account n more queued bytes and queue the record that reports them with socket.sent. */
static void
sock_sendrec_add(struct sock *s, struct sock_sendrec *r, size_t n, json_t *req, int notify)
{
    s->out_queued += n;
    r->end = s->out_queued;
    r->bytes = n;
    r->req = req ? json_incref(req) : NULL;
    r->notify = notify;
    if (s->sq_tail)
        s->sq_tail->next = r;
    else
        s->sq_head = r;
    s->sq_tail = r;
}

/*
 * Coalescing: a small socket.send that could be written at once (connected, nothing queued) is
 * queued instead, and the socket noted here; its queue goes to the kernel in one write when the
 * client's lines of this turn are handled (ctl_process), before any other request runs
 * (rpc_handle_one), and before the loop blocks (the prepare watcher). Consecutive sends then cost
 * one syscall, with no wait for the loop; to any other request the socket looks as if each send
 * had been written at once.
 */
#define SOCK_FLUSHQ 64 /* sockets noted at once; the 65th flushes them all */
/* Larger sends are written at once from the caller's bytes. */
#define SOCK_COALESCE_MAX (16u << 10)
static struct sock *sock_flushq[SOCK_FLUSHQ];
static int sock_nflushq;

/* Connected, with no starttls boundary or handshake in the way: bytes may go out now. */
static int
sock_can_write(const struct sock *s)
{
    return s->state == SS_CONNECTED && !s->tls_upgrade && (s->tls == NULL || !s->tls->handshaking);
}

/* Write what consecutive sends queued, as the socket's write path does when it can write. */
void
sock_flush(struct sock *s)
{
    if (!s->flush_queued)
        return;
    s->flush_queued = 0;
    for (int i = 0; i < sock_nflushq; i++)
        if (sock_flushq[i] == s)
            sock_flushq[i] = NULL;
    if (s->dead)
        return;
    if (buf_len(&s->out) > 0 && sock_can_write(s))
        sock_write_ready(s); /* a failed write: socket.closed reports the queue as unsent */
    if (!s->dead)
        sock_update_io(s);
}

void
sock_flush_all(void)
{
    for (int i = 0; i < sock_nflushq; i++)
        if (sock_flushq[i] != NULL)
            sock_flush(sock_flushq[i]);
    sock_nflushq = 0;
}

static void
sock_flush_later(struct sock *s)
{
    if (s->flush_queued)
        return;
    if (sock_nflushq == SOCK_FLUSHQ)
        sock_flush_all();
    s->flush_queued = 1;
    sock_flushq[sock_nflushq++] = s;
}

int
sock_send(struct sock *s, const void *p, size_t n, json_t *req, int notify)
{
    size_t cap = sockd.conf.max_send_buffer;
    if (s->flush_queued && (n > cap || buf_len(&s->out) > cap - n)) {
        sock_flush(s); /* the cap is on what the kernel has not taken, as without coalescing */
        if (s->dead)
            return 0; /* socket.closed reported the queue as unsent */
    }
    if (n > cap || buf_len(&s->out) > cap - n) {
        errno = ENOBUFS;
        return -1;
    }
    if (n > sock_budget_room(s)) {
        errno = EDQUOT; /* max-buffer-per-uid */
        return -1;
    }
    struct sock_sendrec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    int direct = buf_len(&s->out) == 0 && n > 0 && sock_can_write(s);
    if (s->flush_queued || (direct && n < SOCK_COALESCE_MAX)) {
        if (buf_append(&s->out, p, n) < 0) {
            free(r);
            return -1;
        }
        sock_sendrec_add(s, r, n, req, notify);
        sock_flush_later(s);
        return 0;
    }
    /* Fast path: nothing queued and connected, so write straight from the caller's bytes. */
    size_t done = 0;
    if (direct) {
        ssize_t w = s->tp->write(s, p, n);
        if (w > 0) {
            done = (size_t)w;
            s->bytes_sent += done;
            sockd.bytes_out += done;
        } else if (w < 0 && errno != EAGAIN) {
            int err = errno;
            free(r);
            buf_append(&s->out, p, n); /* reported as unsent by socket.closed */
            sock_io_failed(s, err);
            return 0;
        }
    }
    if (done < n && buf_append(&s->out, (const char *)p + done, n - done) < 0) {
        free(r);
        return -1;
    }
    sock_sendrec_add(s, r, n, req, notify);
    sock_complete_sends(s);
    sock_update_io(s);
    return 0;
}

int
sock_sendto(struct sock *s, const void *p, size_t n, const struct sockaddr *to, socklen_t tolen,
            json_t *req, int notify)
{
    struct sock_dgram h;
    size_t cap = sockd.conf.max_send_buffer;
    if (sizeof h + n > cap || buf_len(&s->out) > cap - sizeof h - n) {
        errno = ENOBUFS;
        return -1;
    }
    if (sizeof h + n > sock_budget_room(s)) {
        errno = EDQUOT; /* max-buffer-per-uid */
        return -1;
    }
    struct sock_sendrec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    memset(&h, 0, sizeof h);
    h.len = h.size = (uint32_t)n;
    if (to != NULL) {
        h.has_addr = 1;
        memcpy(&h.addr, to, tolen < sizeof h.addr ? tolen : sizeof h.addr);
    }
    if (buf_append(&s->out, &h, sizeof h) < 0 || buf_append(&s->out, p, n) < 0) {
        free(r);
        return -1;
    }
    sock_sendrec_add(s, r, n, req, notify);
    sock_dgram_write_ready(s);
    if (!s->dead)
        sock_update_io(s);
    return 0;
}

/* Finish the pending recv (without delivering anything). */
static void
sock_recv_done(struct sock *s)
{
    s->recv_pending = 0;
    if (s->until != NULL)
        s->until->len = 0;
    sock_timer_stop(s, SOCK_TIMER_RECV);
    json_decref(s->recv_req);
    s->recv_req = NULL;
}

/*
 * Emit socket.received with n bytes from the head of the input buffer; with until_missing when
 * an until receive delivers bytes that do not end with its delimiter.
 */
static void
sock_emit_received(struct sock *s, size_t n, int eof, int timeout, int missing)
{
    /*
     * The hot path: the line is written straight into the client's output queue, base64
     * encoded in place, so a large payload is neither copied nor escaped by the JSON encoder.
     */
    char idnum[32], *idtext;
    const char *req;
    size_t reqlen;
    sock_req_text(s->recv_req, idnum, &idtext, &req, &reqlen); /* out of memory: no "request" */
    char head[] = "{\"jsonrpc\":\"2.0\",\"method\":\"socket.received\",\"params\":{\"data\":\"";
    char tail[160];
    int tl = snprintf(tail, sizeof tail, "\"%s%s%s,\"socket\":%llu", eof ? ",\"eof\":true" : "",
                      timeout ? ",\"timeout\":true" : "", missing ? ",\"until_missing\":true" : "",
                      (unsigned long long)s->id);
    size_t total = sizeof head - 1 + b64_encoded_len(n) + (size_t)tl + (req ? 11 + reqlen : 0) + 3;
    char *p = s->owner ? ctl_reserve_line(s->owner, total) : NULL;
    if (p != NULL) {
        size_t w = 0;
        memcpy(p, head, sizeof head - 1);
        w += sizeof head - 1;
        w += b64_encode(buf_head(&s->in), n, p + w);
        memcpy(p + w, tail, (size_t)tl);
        w += (size_t)tl;
        ctl_commit_line(s->owner, sock_line_end(p, w, req, reqlen));
    }
    free(idtext);
    buf_consume(&s->in, n);
    if (s->until != NULL)
        s->until->scanned = 0; /* the head moved: an until search starts from it again */
}

json_t *
sock_dgram_pop(struct sock *s, size_t maxlen)
{
    struct sock_dgram h;
    memcpy(&h, buf_head(&s->in), sizeof h);
    size_t n = h.len < maxlen ? h.len : maxlen;
    char *text = malloc(b64_encoded_len(n) + 1);
    size_t tl = text ? b64_encode(buf_head(&s->in) + sizeof h, n, text) : 0;
    json_t *p = json_object();
    json_object_set_new(p, "data", json_stringn_nocheck(text ? text : "", tl));
    free(text);
    if (h.has_addr)
        json_object_set_new(p, "from", addr_to_json(&h.addr.sa, sizeof h.addr));
    if (h.size > n) {
        json_object_set_new(p, "truncated", json_true());
        json_object_set_new(p, "size", json_integer(h.size));
    }
    buf_consume(&s->in, sizeof h + h.len);
    return p;
}

/* Deliver queued datagrams: one per socket.received, with from and truncation. */
static void
sock_deliver_dgram(struct sock *s)
{
    while (s->recv_pending && !s->dead && buf_len(&s->in) >= sizeof(struct sock_dgram)) {
        json_t *p = sock_dgram_pop(s, s->recv_len);
        sock_emit(s, "socket.received", p, s->recv_req);
        if (!s->recv_stream)
            sock_recv_done(s);
    }
    /* dtls: the peer's close_notify ends a pending recv once every datagram is delivered */
    if (s->type == SOCK_DTLS && s->rd_eof && s->recv_pending && !s->dead && buf_len(&s->in) == 0) {
        sock_emit(s, "socket.received", json_pack("{s:s,s:b}", "data", "", "eof", 1), s->recv_req);
        sock_recv_done(s);
    }
}

/*
 * The bytes an until receive takes from the head of the input buffer: up to and including the
 * first delimiter within its length; the whole length without one (*missing set); at EOF what
 * is left (*missing set). 0 while it must wait; the search resumes where the last one stopped
 * (sockd-protocol(7), RECEIVING, Lines).
 */
static size_t
sock_until_take(struct sock *s, int *missing)
{
    struct sock_until *u = s->until;
    size_t have = buf_len(&s->in), lim = have < s->recv_len ? have : s->recv_len;
    size_t from = u->scanned >= u->len ? u->scanned - (u->len - 1) : 0;
    const unsigned char *p = (const unsigned char *)buf_head(&s->in);
    const unsigned char *hit = lim > from ? memmem(p + from, lim - from, u->delim, u->len) : NULL;

    *missing = hit == NULL;
    if (hit != NULL)
        return (size_t)(hit - p) + u->len;
    u->scanned = lim;
    return have >= s->recv_len ? s->recv_len : s->rd_eof ? have : 0;
}

/* Complete the pending recv as far as the buffered bytes allow. */
static void
sock_deliver(struct sock *s)
{
    if (sock_is_dgram(s)) {
        sock_deliver_dgram(s);
        return;
    }
    while (s->recv_pending && !s->dead) {
        size_t have = buf_len(&s->in), n;
        int missing = 0;
        if (s->until != NULL && s->until->len > 0)
            n = sock_until_take(s, &missing);
        else if (s->recv_partial || s->recv_stream)
            n = have < s->recv_len ? have : s->recv_len;
        else if (have >= s->recv_len)
            n = s->recv_len;
        else
            n = s->rd_eof ? have : 0;
        int eof = s->rd_eof && have == n;
        if (n == 0 && !eof)
            break;
        sock_emit_received(s, n, eof, 0, missing);
        if (!s->recv_stream || eof)
            sock_recv_done(s);
    }
}

/* After EOF: once every received byte is delivered and every queued byte sent, close by_peer. */
static void
sock_eof_check(struct sock *s)
{
    if (s->dead || !s->rd_eof || s->state != SS_CONNECTED ||
        (sock_is_dgram(s) && s->type != SOCK_DTLS) || s->owner == NULL || s->relay != NULL)
        return;
    if (buf_len(&s->in) > 0 || buf_len(&s->out) > 0)
        return;
    sock_close_graceful(s, SOCKD_REASON_BY_PEER, NULL);
}

/* Read one datagram with its source; queue it framed, within the read-ahead cap. */
static void
sock_dgram_read_ready(struct sock *s)
{
    static char scratch[SOCK_DGRAM_MAX];
    struct sock_dgram h;
    struct iovec iov = {scratch, sizeof scratch};
    struct msghdr mh;

    for (int i = 0; i < 64 && !s->dead; i++) {
        if (buf_len(&s->in) >= SOCK_READAHEAD)
            break;
        if (sock_budget_room(s) < sock_read_min(s)) {
            sock_budget_wait(s);
            break;
        }
        memset(&h, 0, sizeof h);
        memset(&mh, 0, sizeof mh);
        mh.msg_name = &h.addr;
        mh.msg_namelen = sizeof h.addr;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        ssize_t n;
        if (s->type == SOCK_DTLS) { /* one record per datagram, no `from` (sock_dtls.c) */
            n = dtls_recv(s, scratch, sizeof scratch);
            mh.msg_namelen = 0;
            if (n == 0) { /* close_notify: EOF as for TLS */
                s->rd_eof = 1;
                sock_deliver_dgram(s);
                sock_eof_check(s);
                return;
            }
            if (n < 0 && errno != EAGAIN) {
                sock_io_failed(s, errno);
                return;
            }
        } else
            n = recvmsg(s->fd, &mh, MSG_TRUNC | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                log_debug("socket %llu: recv: %s", (unsigned long long)s->id, strerror(errno));
            break; /* ICMP errors (ECONNREFUSED) do not end a udp socket */
        }
        h.size = (uint32_t)n;
        h.len = (uint32_t)((size_t)n > sizeof scratch ? sizeof scratch : (size_t)n);
        h.has_addr = mh.msg_namelen > 0;
        if (buf_append(&s->in, &h, sizeof h) < 0 || buf_append(&s->in, scratch, h.len) < 0) {
            sock_io_failed(s, ENOMEM);
            return;
        }
        s->bytes_received += h.len;
        sockd.bytes_in += h.len;
        sock_deliver_dgram(s);
    }
}

/* The splice path of a relay: the peer's bytes into the kernel pipe, once s->in is empty. */
static void
sock_relay_splice_in(struct sock *s)
{
    struct sock_relay *r = s->relay;
    if (buf_len(&s->in) > 0 || r->piped >= r->pipe_cap)
        return;
    ssize_t n = splice(s->fd, NULL, r->pipe[1], NULL, r->pipe_cap - r->piped,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            sock_io_failed(s, errno);
        return;
    }
    if (n == 0) {
        s->rd_eof = 1;
        log_debug("socket %llu: EOF from peer", (unsigned long long)s->id);
        return;
    }
    r->piped += (size_t)n;
    s->bytes_received += (uint64_t)n;
    sockd.bytes_in += (uint64_t)n;
}

static void
sock_read_ready(struct sock *s)
{
    if (sock_is_dgram(s)) {
        sock_dgram_read_ready(s);
        return;
    }
    if (sock_splicing(s)) {
        sock_relay_splice_in(s);
        return;
    }
    size_t cap = SOCK_READAHEAD;
    if (s->recv_pending && s->recv_len > cap)
        cap = s->recv_len;
    size_t want = cap > buf_len(&s->in) ? cap - buf_len(&s->in) : 0;
    if (want == 0)
        return;
    if (want > 65536)
        want = 65536;
    size_t room = sock_budget_room(s);
    if (room == 0) {
        sock_budget_wait(s); /* max-buffer-per-uid: woken when the uid's bytes drain */
        return;
    }
    if (want > room)
        want = room;
    char *p = buf_reserve(&s->in, want);
    if (p == NULL) {
        sock_io_failed(s, ENOMEM);
        return;
    }
    ssize_t n = s->tp->read(s, p, want);
    if (n < 0) {
        if (errno != EAGAIN)
            sock_io_failed(s, errno);
        return;
    }
    /* Records already decrypted inside the TLS engine do not wake the fd: take them now. */
    while (n > 0 && s->tp->pending != NULL && s->tp->pending(s) > 0 && (size_t)n < want) {
        ssize_t m = s->tp->read(s, p + n, want - (size_t)n);
        if (m <= 0)
            break;
        n += m;
    }
    if (n == 0) {
        s->rd_eof = 1;
        log_debug("socket %llu: EOF from peer", (unsigned long long)s->id);
    } else {
        buf_commit(&s->in, (size_t)n);
        s->bytes_received += (uint64_t)n;
        sockd.bytes_in += (uint64_t)n;
    }
    sock_deliver(s);
    if (buf_len(&s->in) == 0 && s->in.data != NULL)
        buf_free(&s->in);
    sock_eof_check(s);
}

static void
sock_recv_timeout_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock *s = w->data;
    (void)revents;
    if (!s->recv_pending)
        return;
    if (sock_is_dgram(s)) {
        sock_emit(s, "socket.received", json_pack("{s:s,s:b}", "data", "", "timeout", 1),
                  s->recv_req);
        sock_recv_done(s);
        sock_update_io(s);
        return;
    }
    size_t n = buf_len(&s->in) < s->recv_len ? buf_len(&s->in) : s->recv_len;
    sock_emit_received(s, n, s->rd_eof && n == buf_len(&s->in), 1,
                       s->until != NULL && s->until->len > 0);
    sock_recv_done(s);
    sock_update_io(s);
    sock_eof_check(s);
}

int
sock_recv(struct sock *s, size_t len, int partial, int stream, const void *until, size_t ulen,
          double timeout, json_t *req)
{
    if (ulen > 0) {
        if (s->until == NULL && (s->until = calloc(1, sizeof *s->until)) == NULL)
            return -1;
        memcpy(s->until->delim, until, ulen);
        s->until->len = (unsigned char)ulen;
        s->until->scanned = 0;
    }
    s->recv_pending = 1;
    s->recv_len = len;
    s->recv_partial = partial ? 1 : 0;
    s->recv_stream = stream ? 1 : 0;
    s->recv_req = req ? json_incref(req) : NULL;
    if (timeout > 0) {
        sock_timer_start(s, SOCK_TIMER_RECV, sock_recv_timeout_cb, timeout);
    }
    sock_deliver(s);
    sock_eof_check(s);
    sock_update_io(s);
    return 0;
}

int
sock_recv_cancel(struct sock *s)
{
    if (!s->recv_pending)
        return 0;
    sock_recv_done(s);
    sock_update_io(s);
    return 1;
}

void
sock_shutdown(struct sock *s, json_t *req)
{
    if (s->recv_pending)
        sock_recv_done(s);
    s->shut_wanted = 1;
    s->shutdown_req = req ? json_incref(req) : NULL;
    if (s->state == SS_CONNECTING)
        return; /* becomes SS_CLOSING when connected */
    s->state = SS_CLOSING;
    if (buf_len(&s->out) == 0) {
        sock_close_graceful(s, SOCKD_REASON_NORMAL, req);
        return;
    }
    sock_update_io(s);
}

/* Listener side. */

static void
sock_pending_timeout_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock_pending *p = w->data;
    (void)revents;
    log_debug("socket %llu: pending %llu not accepted in time, closed",
              (unsigned long long)p->listener->id, (unsigned long long)p->num);
    sock_pending_drop(p->listener, p);
}

/* Unlink p from l's list. */
static void
sock_pending_unlink(struct sock *l, struct sock_pending *p)
{
    struct sock_listen *ls = l->lst;
    struct sock_pending **pp = &ls->pend_head, *prev = NULL;
    while (*pp != NULL && *pp != p) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp == NULL)
        return;
    *pp = p->next;
    if (ls->pend_tail == p)
        ls->pend_tail = prev;
    ls->npending--;
    ev_timer_stop(sockd.loop, &p->timer);
    if (l->accept_paused && ls->npending < sockd.conf.max_pending_accepts) {
        l->accept_paused = 0;
        sock_update_io(l);
    }
}

void
sock_pending_drop(struct sock *l, struct sock_pending *p)
{
    sock_pending_unlink(l, p);
    close(p->fd);
    SSL_free(p->ssl); /* dtls */
    free(p);
}

struct sock_pending *
sock_pending_find(struct sock *l, uint64_t num)
{
    for (struct sock_pending *p = l->lst->pend_head; p != NULL; p = p->next)
        if (p->num == num)
            return p;
    return NULL;
}

/* A socket for an accepted fd, owned by the listener's client; emits socket.accepted. */
static struct sock *
sock_adopt_accepted(struct sock *l, int fd, const union sock_sa *remote, const union sock_sa *local,
                    json_t *req, json_t *tag, SSL *ssl)
{
    struct sock *s = sock_new(l->owner, l->ident, l->type, l->ipv6);
    if (s == NULL) {
        close(fd);
        SSL_free(ssl); /* dtls */
        return NULL;
    }
    sock_set_fd(s, fd);
    s->state = SS_CONNECTED;
    s->remote = *remote;
    s->local = *local;
    s->has_remote = s->has_local = 1;
    if (l->type == SOCK_UNIX) {
        s->un->local = strdup(l->un->local ? l->un->local : "");
        s->un->remote = strdup("");
    }
    s->listener = l->id;
    s->tag = tag ? json_incref(tag) : NULL;
    if (l->type == SOCK_TLS || l->type == SOCK_DTLS) {
        /* socket.accepted waits for the handshake; a failure never touches the listener */
        s->tls->ctx = l->tls->ctx;
        tlsctx_ref(s->tls->ctx);
        s->state = SS_CONNECTING;
        s->tls_announce = 1;
        s->accept_auto = req == l->lst->req && l->auto_accept;
        s->connect_req = req ? json_incref(req) : NULL;
        /* a peer that stalls its handshake holds the slot no longer than accept-timeout */
        sock_timer_start(s, SOCK_TIMER_CONNECT, sock_connect_timeout_cb,
                         sockd.conf.accept_timeout_ms / 1000.0);
        /* dtls: the peer's socket shares the listener's port (which is held while it lives) */
        if (ssl != NULL && dtls_port_hold(s) < 0)
            log_warn("socket %llu: port registry out of memory", (unsigned long long)s->id);
        if (ssl != NULL) { /* dtls: the SSL that passed the cookie exchange goes on */
            s->tls_server = 1;
            dtls_adopt(s, ssl);
            sock_tls_step(s);
        } else {
            sock_tls_begin(s, 1);
        }
        /* even when the first handshake step already failed: socket.accept answers with the
         * handle and the held socket.closed follows; the memory lives until the turn ends */
        return s;
    }
    if (sock_log_wanted(s))
        log_info("%s socket %llu (client %llu) accepted on listener %llu", sock_type_name(s->type),
                 (unsigned long long)s->id, (unsigned long long)l->owner->id,
                 (unsigned long long)l->id);
    sock_emit(s, "socket.accepted",
              json_pack("{s:I,s:o,s:o}", "listener", (json_int_t)l->id, "local",
                        sock_addr_json(s, 0), "remote", sock_addr_json(s, 1)),
              req);
    sock_update_io(s);
    return s;
}

struct sock *
sock_pending_accept(struct sock *l, struct sock_pending *p, json_t *req, json_t *tag)
{
    sock_pending_unlink(l, p);
    struct sock *s = sock_adopt_accepted(l, p->fd, &p->remote, &p->local, req, tag, p->ssl);
    free(p);
    return s;
}

static void
sock_accept_resume_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock *l = w->data;
    (void)revents;
    l->accept_paused = l->lst->npending >= sockd.conf.max_pending_accepts;
    sock_update_io(l);
}

static void
sock_accept_ready(struct sock *l)
{
    struct sock_listen *ls = l->lst;
    for (int i = 0; i < 16 && !l->dead; i++) {
        if (ls->npending >= sockd.conf.max_pending_accepts) {
            l->accept_paused = 1;
            break;
        }
        union sock_sa remote, local;
        struct sockaddr_storage rss;
        socklen_t rl = sizeof rss, ll = sizeof local;
        SSL *ssl = NULL; /* dtls: a peer past the cookie exchange, on a fd of its own */
        int fd, fl = SOCK_NONBLOCK | SOCK_CLOEXEC;
        if (l->type == SOCK_DTLS)
            fd = dtls_accept(l, &rss, &rl, &ssl);
        else if (l->foreign) /* accept has no per-call flag: the guard bounds it */
            fd = nbguard_accept(l->fd, (struct sockaddr *)&rss, &rl, fl);
        else
            fd = accept4(l->fd, (struct sockaddr *)&rss, &rl, fl);
        memcpy(&remote, &rss, sizeof remote);
        if (rl > sizeof remote)
            rl = sizeof remote;
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("socket %llu: accepting paused for 1 s: %s", (unsigned long long)l->id,
                         strerror(errno));
                l->accept_paused = 1;
                sock_timer_start(l, SOCK_TIMER_CONNECT, sock_accept_resume_cb, 1.0);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_warn("socket %llu: accept: %s", (unsigned long long)l->id, strerror(errno));
            }
            break;
        }
        if (l->type == SOCK_UNIX || getsockname(fd, &local.sa, &ll) < 0)
            memset(&local, 0, sizeof local);
        if (l->auto_accept) {
            const char *full = sock_budget_full(l->owner, l->ident);
            if (full != NULL) {
                log_warn("client %llu (uid %d): %s reached, connection on socket %llu closed",
                         (unsigned long long)l->owner->id, (int)l->ident->uid, full,
                         (unsigned long long)l->id);
                close(fd);
                SSL_free(ssl); /* dtls */
                continue;
            }
            sock_adopt_accepted(l, fd, &remote, &local, ls->req, NULL, ssl);
            continue;
        }
        struct sock_pending *p = calloc(1, sizeof *p);
        if (p == NULL) {
            close(fd);
            SSL_free(ssl); /* dtls */
            break;
        }
        p->listener = l;
        p->num = ++ls->next_pending;
        p->fd = fd;
        p->ssl = ssl;
        p->remote = remote;
        p->local = local;
        ev_timer_init(&p->timer, sock_pending_timeout_cb, sockd.conf.accept_timeout_ms / 1000.0,
                      0.0);
        p->timer.data = p;
        ev_timer_start(sockd.loop, &p->timer);
        if (ls->pend_tail)
            ls->pend_tail->next = p;
        else
            ls->pend_head = p;
        ls->pend_tail = p;
        ls->npending++;
        json_t *jr, *jl;
        if (l->type == SOCK_UNIX) {
            jr = json_pack("{s:s}", "path", "");
            jl = sock_addr_json(l, 0);
        } else {
            jr = addr_to_json(&remote.sa, rl);
            jl = addr_to_json(&local.sa, ll);
        }
        sock_emit(
            l, "socket.incoming",
            json_pack("{s:I,s:o,s:o}", "pending", (json_int_t)p->num, "remote", jr, "local", jl),
            ls->req);
    }
}

int
sock_listen_alloc(struct sock *s)
{
    if (s->lst == NULL && (s->lst = calloc(1, sizeof *s->lst)) == NULL)
        return -1;
    return 0;
}

void
sock_listen_start(struct sock *l, json_t *req)
{
    json_decref(l->lst->req);
    l->lst->req = req ? json_incref(req) : NULL;
    l->state = SS_LISTENING;
    sock_update_io(l);
}

/* Relay: the client's end of the pipe. */

static void sock_relay_pump(struct sock *s);

/* Interest of the relay fd: read while the send queue has room, write while input waits. */
static void
sock_relay_update(struct sock *s)
{
    struct sock_relay *r = s->relay;
    int ev = 0;
    if (r == NULL || s->dead)
        return;
    if (!r->eof && buf_len(&s->out) < SOCK_READAHEAD) {
        if (sock_budget_room(s) > 0)
            ev |= EV_READ;
        else
            sock_budget_wait(s);
    }
    if (buf_len(&s->in) > 0 || r->piped > 0)
        ev |= EV_WRITE;
    if (ev == (r->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&r->io)))
        return;
    ev_io_stop(sockd.loop, &r->io);
    ev_io_set(&r->io, r->fd, ev);
    if (ev != 0)
        ev_io_start(sockd.loop, &r->io);
}

static void
sock_relay_cb(EV_P_ ev_io *w, int revents)
{
    struct sock *s = w->data;
    struct sock_relay *r = s->relay;
    (void)loop;
    size_t want = sock_budget_room(s) < 65536 ? sock_budget_room(s) : 65536;
    if ((revents & EV_READ) && want == 0) {
        sock_budget_wait(s); /* max-buffer-per-uid: woken when the uid's bytes drain */
    } else if (revents & EV_READ) {
        char *p = buf_reserve(&s->out, want);
        ssize_t n = p ? read(r->fd, p, want) : -1;
        if (n > 0) {
            buf_commit(&s->out, (size_t)n);
            s->out_queued += (uint64_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            r->eof = 1; /* the client closed (or shut down) its end */
        }
        if (s->state == SS_CONNECTED && buf_len(&s->out) > 0)
            sock_write_ready(s);
    }
    if (!s->dead)
        sock_relay_pump(s);
}

/* Move received bytes to the client's end; handle half-closes; close once both sides ended. */
static void
sock_relay_pump(struct sock *s)
{
    struct sock_relay *r = s->relay;
    while (buf_len(&s->in) > 0) {
        ssize_t n = send(r->fd, buf_head(&s->in), buf_len(&s->in), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            /* the client closed its end: nothing more to deliver */
            sock_close_graceful(s, SOCKD_REASON_NORMAL, NULL);
            return;
        }
        buf_consume(&s->in, (size_t)n);
    }
    while (buf_len(&s->in) == 0 && r->piped > 0) {
        ssize_t n =
            splice(r->pipe[0], NULL, r->fd, NULL, r->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            sock_close_graceful(s, SOCKD_REASON_NORMAL, NULL); /* as a failed send above */
            return;
        }
        r->piped -= (size_t)n;
    }
    if (s->rd_eof && buf_len(&s->in) == 0 && r->piped == 0 && !r->wr_shut) {
        shutdown(r->fd, SHUT_WR);
        r->wr_shut = 1;
        if (!r->eof)
            r->net_first = 1;
    }
    if (r->eof && buf_len(&s->out) == 0 && !r->net_shut) {
        /* pass the client's EOF on to the peer: over TLS that is close_notify first */
        if (sock_ssl(s) != NULL && tls_close_notify(s) == 0) {
            sock_update_io(s); /* close_notify waits for room; the pump runs again */
            sock_relay_update(s);
            return;
        }
        shutdown(s->fd, SHUT_WR);
        r->net_shut = 1;
    }
    if (r->eof && r->wr_shut) {
        sock_close(s, r->net_first ? SOCKD_REASON_BY_PEER : SOCKD_REASON_NORMAL, 0, NULL, NULL);
        return;
    }
    sock_update_io(s);
    sock_relay_update(s);
}

void
sock_resume(struct sock *s)
{
    sock_eof_check(s);
    sock_update_io(s);
}

void
sock_relay_start(struct sock *s, int fd)
{
    struct sock_relay *r = calloc(1, sizeof *r);
    if (r == NULL) {
        close(fd);
        sock_io_failed(s, ENOMEM);
        return;
    }
    r->fd = fd;
    r->pipe[0] = r->pipe[1] = -1;
    /* not from an attached socket: splice honours the file's O_NONBLOCK, which is the client's */
    if (s->type == SOCK_TCP && sock_ssl(s) == NULL && !s->foreign &&
        pipe2(r->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
        /* as much in the pipe as the read-ahead would hold; the default size if refused */
        (void)fcntl(r->pipe[1], F_SETPIPE_SZ, (int)SOCK_READAHEAD);
        int cap = fcntl(r->pipe[1], F_GETPIPE_SZ);
        r->pipe_cap = cap > 0 ? (size_t)cap : 65536;
    } else {
        r->pipe[0] = r->pipe[1] = -1; /* no pipe to spare: read and write, as over TLS */
    }
    ev_io_init(&r->io, sock_relay_cb, fd, 0);
    r->io.data = s;
    s->relay = r;
    sock_relay_pump(s);
}

void
sock_io_event(struct sock *s, int revents)
{
    if (sock_ssl(s) != NULL && s->tls->handshaking) {
        sock_tls_step(s);
        return;
    }
    if (sock_ssl(s) != NULL && s->state == SS_CLOSING && buf_len(&s->out) == 0) {
        sock_write_ready(s); /* retry a queued close_notify */
        return;
    }
    if (sock_ssl(s) != NULL && s->state != SS_LISTENING)
        revents |= EV_READ | EV_WRITE; /* TLS may need either direction to progress */
    switch (s->state) {
    case SS_LISTENING:
        sock_accept_ready(s);
        break;
    case SS_CONNECTING:
        sock_connect_ready(s);
        if (!s->dead && buf_len(&s->out) > 0 &&
            (s->state == SS_CONNECTED || s->state == SS_CLOSING))
            sock_write_ready(s);
        else if (!s->dead && s->state == SS_CLOSING)
            sock_close_graceful(s, SOCKD_REASON_NORMAL, s->shutdown_req);
        break;
    default:
        if (revents & EV_WRITE)
            sock_write_ready(s);
        if (!s->dead && (revents & EV_READ))
            sock_read_ready(s);
        if (!s->dead && s->relay != NULL) {
            sock_relay_pump(s);
            return;
        }
        break;
    }
    if (!s->dead)
        sock_update_io(s);
}
