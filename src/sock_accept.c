#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "nbguard.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * Listening: accepting connections (at once with auto_accept, else as pending connections that
 * socket.accept takes and accept-timeout closes), each adopted as a socket of the listener's
 * client.
 */

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
    l->ident->acct->sockets--; /* max-sockets-per-uid: an accept moves it to the new socket */
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
    if (sock_has(l, SOCK_CAP_UNIX)) {
        s->un->local = strdup(l->un->local ? l->un->local : "");
        s->un->remote = strdup("");
    }
    s->listener = l->id;
    s->tag = tag ? json_incref(tag) : NULL;
    if (sock_has(l, SOCK_CAP_TLS)) {
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
        log_client_info("%s socket %llu (client %llu) accepted on listener %llu",
                        sock_type_name(s->type), (unsigned long long)s->id,
                        (unsigned long long)l->owner->id, (unsigned long long)l->id);
    sock_emit(s, SOCK_EV_ACCEPTED,
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

int
sock_accept_fd(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl)
{
    int fl = SOCK_NONBLOCK | SOCK_CLOEXEC;
    if (l->foreign) /* accept has no per-call flag: the guard bounds it */
        return nbguard_accept(l->fd, (struct sockaddr *)remote, rl, fl);
    return accept4(l->fd, (struct sockaddr *)remote, rl, fl);
}

void
sock_accept_local(int fd, union sock_sa *local, socklen_t *ll)
{
    if (getsockname(fd, &local->sa, ll) < 0)
        memset(local, 0, sizeof *local);
}

int
sock_accept_ip(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl, union sock_sa *local,
               socklen_t *ll, SSL **ssl)
{
    (void)ssl;
    int fd = sock_accept_fd(l, remote, rl);
    if (fd >= 0)
        sock_accept_local(fd, local, ll);
    return fd;
}

/* Stop taking connections from the kernel for a second (they wait in its backlog). */
static void
sock_accept_pause(struct sock *l)
{
    l->accept_paused = 1;
    sock_timer_start(l, SOCK_TIMER_CONNECT, sock_accept_resume_cb, 1.0);
}

void
sock_accept_ready(struct sock *l)
{
    struct sock_listen *ls = l->lst;
    for (int i = 0; i < 16 && !l->dead; i++) {
        if (ls->npending >= sockd.conf.max_pending_accepts) {
            l->accept_paused = 1;
            break;
        }
        if (!l->auto_accept && l->ident->acct->sockets >= sockd.conf.max_sockets_per_uid) {
            /* a pending connection holds a descriptor: it counts as the user's socket */
            log_debug("socket %llu: uid %d at max-sockets-per-uid, accepting paused for 1 s",
                      (unsigned long long)l->id, (int)l->ident->uid);
            sock_accept_pause(l);
            break;
        }
        union sock_sa remote, local;
        struct sockaddr_storage rss;
        socklen_t rl = sizeof rss, ll = sizeof local;
        SSL *ssl = NULL; /* dtls: a peer past the cookie exchange, on a fd of its own */
        int fd = sock_desc(l)->accept(l, &rss, &rl, &local, &ll, &ssl);
        memcpy(&remote, &rss, sizeof remote);
        if (rl > sizeof remote)
            rl = sizeof remote;
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("socket %llu: accepting paused for 1 s: %s", (unsigned long long)l->id,
                         strerror(errno));
                sock_accept_pause(l);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_warn("socket %llu: accept: %s", (unsigned long long)l->id, strerror(errno));
            }
            break;
        }
        if (l->auto_accept) {
            const char *full = sock_budget_full(l->owner, l->ident);
            if (full != NULL) {
                log_client_warn(
                    "client %llu (uid %d): %s reached, connection on socket %llu closed",
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
        l->ident->acct->sockets++;
        json_t *jr, *jl;
        if (sock_has(l, SOCK_CAP_UNIX)) {
            jr = json_pack("{s:s}", "path", "");
            jl = sock_addr_json(l, 0);
        } else {
            jr = addr_to_json(&remote.sa, rl);
            jl = addr_to_json(&local.sa, ll);
        }
        sock_emit(
            l, SOCK_EV_INCOMING,
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
