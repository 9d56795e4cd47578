#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "policy.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * The shared core of a socket's data path: options, the fd and state changes methods ask for
 * (bind, sendto's first fd, attach, detach), the policy's judgement, the per-uid byte budget,
 * the one place that decides watcher interest (sock_update_io) and the dispatch of a ready fd
 * to connect, accept, send, receive or relay (sock_io_event).
 */

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
    int kind = sock_has(s, SOCK_CAP_DGRAM) ? SOCK_DGRAM : SOCK_STREAM;
    int fd = socket(af, kind | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    sock_set_fd(s, fd);
    s->local.sa.sa_family = (sa_family_t)af;
    if (sock_apply_opts(s, &which) < 0)
        log_debug("socket %llu: option %s not applied: %s", (unsigned long long)s->id, which,
                  strerror(errno));
    return 0;
}

void
sock_drop_fd(struct sock *s)
{
    ev_io_stop(sockd.loop, &s->io);
    close(s->fd);
    s->fd = -1;
}

void
sock_bound(struct sock *s)
{
    s->has_local = 1;
    s->state = SS_BOUND;
}

void
sock_unbind(struct sock *s)
{
    sock_drop_fd(s);
    s->state = SS_OPEN;
    s->has_local = 0;
}

int
sock_open_autobind(struct sock *s, int af)
{
    if (sock_open_fd(s, af) < 0)
        return -1;
    s->state = SS_BOUND; /* the kernel binds it on the first send */
    return 0;
}

void
sock_attached(struct sock *s, int connected)
{
    s->state = connected ? SS_CONNECTED : SS_BOUND;
    sock_update_io(s);
}

int
sock_detach(struct sock *s)
{
    int fd = s->fd;
    ev_io_stop(sockd.loop, &s->io);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    s->fd = -1;
    if (s->un != NULL)
        s->un->unlink_local = 0; /* a detached unix listener keeps its file */
    sock_close(s, NULL, 0, NULL, NULL);
    return fd;
}

int
sock_who(const struct sock *s, struct policy_who *who)
{
    ident_who(s->ident, who);
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
        if (action != POLICY_CONNECT || !sock_has(s, SOCK_CAP_DGRAM))
            return 1;
        action = POLICY_SENDTO;
        if (sock_judge(s, POLICY_SENDTO, sa, len, &who))
            return 1;
    }
    char owner[48] = "a given-away socket"; /* parked after socket.give */
    if (s->owner != NULL)
        snprintf(owner, sizeof owner, "client %llu", (unsigned long long)s->owner->id);
    log_client_warn("policy: %s to %s denied for %s (uid %d pid %d%s), socket %llu",
                    words[action & 7], addr_str(sa, len, text, sizeof text), owner, (int)who.uid,
                    (int)who.pid, s->ident->restriction != NULL ? ", restricted" : "",
                    (unsigned long long)s->id);
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

size_t
sock_budget_room(const struct sock *s)
{
    return ident_room(s->ident);
}

void
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

size_t
sock_read_min(const struct sock *s)
{
    return sock_has(s, SOCK_CAP_DGRAM) ? sizeof(struct sock_dgram) + SOCK_DGRAM_MAX : 1;
}

int
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
    int paused = s->owner != NULL && s->owner->paused;
    if (sock_ssl(s) != NULL && s->tls->handshaking) {
        /* a step put off to the next turn resumes from its timer, not from I/O */
        ev = s->tls->hs_waiting ? 0 : s->tls->want ? s->tls->want : EV_READ;
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
        if (!sock_has(s, SOCK_CAP_SENDTO)) /* dtls: only listen/connect read */
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

void
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

void
sock_io_failed(struct sock *s, int err)
{
    sock_close(s, SOCKD_REASON_LOST, err, NULL, NULL);
}

void
sock_resume(struct sock *s)
{
    sock_eof_check(s);
    sock_update_io(s);
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
