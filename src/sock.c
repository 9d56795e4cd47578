#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "addr.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "nbguard.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

#include <openssl/rand.h>

const struct sock_type_desc *const sock_types[SOCK_NTYPES] = {
    [SOCK_TCP] = &sock_type_tcp,   [SOCK_TLS] = &sock_type_tls,   [SOCK_UDP] = &sock_type_udp,
    [SOCK_DTLS] = &sock_type_dtls, [SOCK_UNIX] = &sock_type_unix,
};
static const char *const sock_state_names[] = {"open",       "bound",     "listening",
                                               "connecting", "connected", "closing"};
static struct sock *sock_grave;
static struct sock_gift *sock_gifts;

const char *
sock_type_name(enum sock_type t)
{
    return sock_types[t]->name;
}

int
sock_type_parse(const char *name)
{
    for (int i = 0; i < SOCK_NTYPES; i++)
        if (strcmp(name, sock_types[i]->name) == 0)
            return i;
    return -1;
}

int
sock_log_wanted(const struct sock *s)
{
    return (sockd.conf.log_flags & sock_desc(s)->log) != 0;
}

const char *
sock_state_name(enum sock_state s)
{
    return sock_state_names[s];
}

static void sock_io_cb(EV_P_ ev_io *w, int revents);

/* Unlink s from its owner's list. */
static void
sock_unlink_owner(struct sock *s)
{
    struct sock_owner *o = s->owner;
    if (o == NULL)
        return;
    if (s->cprev)
        s->cprev->cnext = s->cnext;
    else
        o->socks = s->cnext;
    if (s->cnext)
        s->cnext->cprev = s->cprev;
    o->nsocks--;
    s->cnext = s->cprev = NULL;
    s->owner = NULL;
}

/* Put s at the head of o's list. */
static void
sock_link_owner(struct sock *s, struct sock_owner *o)
{
    s->owner = o;
    s->cnext = o->socks;
    s->cprev = NULL;
    if (o->socks)
        o->socks->cprev = s;
    o->socks = s;
    o->nsocks++;
}

const char *
sock_budget_full(const struct sock_owner *o, const struct ident *id)
{
    if (o->nsocks >= sockd.conf.max_sockets_per_client)
        return "max-sockets-per-client";
    if (id != NULL && id->acct->sockets >= sockd.conf.max_sockets_per_uid)
        return "max-sockets-per-uid";
    return NULL;
}

struct sock *
sock_new(struct sock_owner *o, struct ident *id, enum sock_type type, int ipv6)
{
    struct sock *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    if ((sock_type_has(type, SOCK_CAP_UNIX) && (s->un = calloc(1, sizeof *s->un)) == NULL) ||
        (sock_type_has(type, SOCK_CAP_TLS) && tls_alloc(s) < 0)) {
        free(s->un);
        free(s);
        return NULL;
    }
    s->id = daemon_handle();
    if (idmap_put(&sockd.socks, s->id, s) < 0) {
        free(s->un);
        free(s->tls);
        free(s);
        return NULL;
    }
    s->type = type;
    s->state = SS_OPEN;
    s->ipv6 = ipv6 ? 1 : 0;
    s->fd = -1;
    if (s->un != NULL)
        s->un->dirfd = -1;
    s->tp = &transport_plain;
    s->ident = ident_ref(id);
    id->acct->sockets++;
    s->in.meter = s->out.meter = &id->acct->queued; /* max-buffer-per-uid */
    sock_link_owner(s, o);
    sockd.nsockets[type]++;
    return s;
}

int
sock_timer_start(struct sock *s, enum sock_timer which, void (*cb)(EV_P_ ev_timer *, int),
                 double after)
{
    if (s->timers == NULL && (s->timers = calloc(1, sizeof *s->timers)) == NULL) {
        log_error("socket %llu: no memory for a timer", (unsigned long long)s->id);
        return -1;
    }
    ev_timer *t = &s->timers->t[which];
    ev_timer_stop(sockd.loop, t);
    ev_timer_init(t, cb, after, 0.0);
    t->data = s;
    ev_timer_start(sockd.loop, t);
    return 0;
}

void
sock_timer_stop(struct sock *s, enum sock_timer which)
{
    if (s->timers != NULL)
        ev_timer_stop(sockd.loop, &s->timers->t[which]);
}

struct sock *
sock_get(struct sock_owner *o, uint64_t id)
{
    struct sock *s = idmap_get(&sockd.socks, id);
    return s != NULL && s->owner == o && !s->dead ? s : NULL;
}

static void
sock_io_cb(EV_P_ ev_io *w, int revents)
{
    (void)loop;
    sock_io_event(w->data, revents);
}

void
sock_set_fd(struct sock *s, int fd)
{
    s->fd = fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    ev_io_init(&s->io, sock_io_cb, fd, 0);
    s->io.data = s;
}

void
sock_tell(struct sock *s, const struct sock_event *ev)
{
    if (s->owner == NULL) { /* waiting for socket.take: nobody to tell */
        json_decref(ev->params);
        return;
    }
    s->owner->deliver(s->owner, ev);
}

void
sock_emit(struct sock *s, enum sock_event_kind kind, json_t *params, json_t *req)
{
    struct sock_event ev = {.kind = kind, .sock = s, .req = req, .params = params};
    sock_tell(s, &ev);
}

/* Release what a closed socket still holds (not the struct itself). */
static void
sock_release(struct sock *s)
{
    while (s->sq_head != NULL) {
        struct sock_sendrec *r = s->sq_head;
        s->sq_head = r->next;
        json_decref(r->req);
        free(r);
    }
    s->sq_tail = NULL;
    if (s->lst != NULL) {
        while (s->lst->pend_head != NULL)
            sock_pending_drop(s, s->lst->pend_head);
        json_decref(s->lst->req);
        free(s->lst);
        s->lst = NULL;
    }
    buf_free(&s->out);
    buf_free(&s->in);
    free(s->until);
    s->until = NULL;
    json_decref(s->recv_req);
    json_decref(s->connect_req);
    json_decref(s->shutdown_req);
    json_decref(s->tag);
    s->recv_req = s->connect_req = s->shutdown_req = s->tag = NULL;
    struct sock_unix *u = s->un;
    if (u != NULL) {
        sock_unix_release(s);
        free(u->local);
        free(u->remote);
        free(u);
        s->un = NULL;
    }
    free(s->opts);
    free(s->asked);
    s->asked = NULL;
    free(s->timers); /* stopped by sock_close before this */
    s->timers = NULL;
    tls_free(s);
    s->opts = NULL;
}

json_t *
sock_addr_json(const struct sock *s, int remote)
{
    if (sock_has(s, SOCK_CAP_UNIX)) {
        const char *p = remote ? s->un->remote : s->un->local;
        return addr_path_json(p ? p : "", p ? strlen(p) : 0);
    }
    const union sock_sa *a = remote ? (s->asked ? s->asked : &s->remote) : &s->local;
    return addr_to_json(&a->sa, sizeof *a);
}

/* Forget a gift (its socket is being taken or closed). */
static void
sock_gift_drop(struct sock_gift *g)
{
    struct sock_gift **pp = &sock_gifts;
    while (*pp != NULL && *pp != g)
        pp = &(*pp)->next;
    if (*pp != NULL)
        *pp = g->next;
    ev_timer_stop(sockd.loop, &g->timer);
    g->sock->gift = NULL;
    free(g);
}

void
sock_close(struct sock *s, const char *reason, int err, const char *detail, json_t *req)
{
    struct sock_owner *o = s->owner;

    if (s->dead)
        return;
    s->dead = 1;
    sock_flush(s); /* dead: it only leaves the coalescing queue; its bytes are unsent */
    size_t unsent = buf_len(&s->out);
    if (s->fd >= 0) {
        ev_io_stop(sockd.loop, &s->io);
        if (s->foreign) /* the client may have set SO_LINGER and closed its copy */
            nbguard_close(s->fd);
        else
            close(s->fd);
        s->fd = -1;
    }
    for (int t = 0; t < SOCK_NTIMERS; t++)
        sock_timer_stop(s, (enum sock_timer)t);
    if (s->relay != NULL) {
        ev_io_stop(sockd.loop, &s->relay->io);
        close(s->relay->fd);
        if (s->relay->pipe[0] >= 0) {
            close(s->relay->pipe[0]);
            close(s->relay->pipe[1]);
        }
        free(s->relay);
        s->relay = NULL;
    }
    if (s->gift != NULL)
        sock_gift_drop(s->gift);
    sock_resolve_free(s);
    dtls_port_release(s);
    if (reason != NULL && o != NULL) {
        json_t *p = json_pack("{s:s}", "reason", reason);
        if (err != 0) {
            json_object_set_new(p, "errno", json_integer(err));
            json_object_set_new(p, "detail", json_string(detail ? detail : strerror(err)));
        } else if (detail != NULL) {
            json_object_set_new(p, "detail", json_string(detail));
        }
        if (unsent > 0)
            json_object_set_new(p, "unsent", json_integer((json_int_t)unsent));
        sock_emit(s, SOCK_EV_CLOSED, p, req);
    }
    if (sock_log_wanted(s))
        log_client_info("%s socket %llu (client %llu) closed: %s%s%s", sock_type_name(s->type),
                        (unsigned long long)s->id, o ? (unsigned long long)o->id : 0ULL,
                        reason ? reason : "by its client", detail || err ? ", " : "",
                        detail ? detail
                        : err  ? strerror(err)
                               : "");
    else
        log_debug("socket %llu closed: %s", (unsigned long long)s->id,
                  reason ? reason : "silently");
    sock_release(s);
    s->ident->acct->sockets--;
    sock_budget_leave(s);
    sock_budget_wake(s->ident->acct); /* its bytes are gone: others may read again */
    idmap_del(&sockd.socks, s->id);
    sockd.nsockets[s->type]--;
    sock_unlink_owner(s);
    s->grave_next = sock_grave;
    sock_grave = s;
}

static void
sock_gift_timeout_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock_gift *g = w->data;
    (void)revents;
    log_client_info("socket %llu (given by uid %d): not taken in time, closed",
                    (unsigned long long)g->sock->id, (int)g->uid);
    sock_close(g->sock, NULL, 0, NULL, NULL);
}

/* Requests of the old owner must not name anything in the new owner's notifications. */
static void
sock_forget_requests(struct sock *s)
{
    json_decref(s->connect_req);
    json_decref(s->shutdown_req);
    s->connect_req = s->shutdown_req = NULL;
    if (s->lst != NULL) {
        json_decref(s->lst->req);
        s->lst->req = NULL;
    }
    for (struct sock_sendrec *r = s->sq_head; r != NULL; r = r->next) {
        json_decref(r->req);
        r->req = NULL;
        r->notify = 0;
    }
}

struct sock_gift *
sock_give(struct sock *s, double timeout)
{
    unsigned char rnd[16];
    struct sock_gift *g = calloc(1, sizeof *g);
    if (g == NULL || RAND_bytes(rnd, sizeof rnd) != 1) {
        free(g);
        return NULL;
    }
    for (int i = 0; i < 16; i++)
        snprintf(g->token + 2 * i, 3, "%02x", rnd[i]);
    g->sock = s;
    g->uid = s->owner->ident->uid;
    ev_timer_init(&g->timer, sock_gift_timeout_cb, timeout, 0.0);
    g->timer.data = g;
    ev_timer_start(sockd.loop, &g->timer);
    g->next = sock_gifts;
    sock_gifts = g;
    sock_recv_cancel(s); /* silently: the giver's recv names nothing the taker asked for */
    sock_forget_requests(s);
    idmap_del(&sockd.socks, s->id); /* the handle dies here */
    sock_unlink_owner(s);
    s->gift = g;
    sock_update_io(s);
    return g;
}

struct sock_gift *
sock_gift_find(const char *token)
{
    for (struct sock_gift *g = sock_gifts; g != NULL; g = g->next)
        if (strcmp(g->token, token) == 0)
            return g;
    return NULL;
}

struct sock *
sock_take(struct sock_gift *g, struct sock_owner *o)
{
    struct sock *s = g->sock;
    uint64_t id = daemon_handle();
    if (idmap_put(&sockd.socks, id, s) < 0)
        return NULL;
    sock_gift_drop(g);
    s->id = id;
    sock_link_owner(s, o);
    sock_update_io(s);
    return s;
}

void
sock_gifts_close_all(void)
{
    while (sock_gifts != NULL)
        sock_close(sock_gifts->sock, NULL, 0, NULL, NULL);
}

void
sock_reap(void)
{
    while (sock_grave != NULL) {
        struct sock *s = sock_grave;
        sock_grave = s->grave_next;
        ident_unref(s->ident);
        free(s);
    }
}

json_t *
sock_info(struct sock *s)
{
    json_t *o =
        json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I}", "socket", (json_int_t)s->id, "type",
                  sock_type_name(s->type), "state", sock_state_name(s->state), "bytes_sent",
                  (json_int_t)s->bytes_sent, "bytes_received", (json_int_t)s->bytes_received,
                  "send_buffered", (json_int_t)buf_len(&s->out), "recv_buffered",
                  (json_int_t)(buf_len(&s->in) + (s->relay ? s->relay->piped : 0)));
    if (s->has_local)
        json_object_set_new(o, "local", sock_addr_json(s, 0));
    if (s->has_remote)
        json_object_set_new(o, "remote", sock_addr_json(s, 1));
    if (s->asked != NULL)
        json_object_set_new(o, "rewritten_to", addr_to_json(&s->remote.sa, sizeof s->remote));
    if (s->listener)
        json_object_set_new(o, "listener", json_integer((json_int_t)s->listener));
    if (s->state == SS_LISTENING)
        json_object_set_new(o, "pending", json_integer(s->lst->npending));
    if (s->tag != NULL)
        json_object_set(o, "tag", s->tag);
    if (sock_ssl(s) != NULL && !s->tls->handshaking)
        json_object_set_new(o, "tls", tls_info(s));
    return o;
}
