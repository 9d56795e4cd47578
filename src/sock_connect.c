#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "daemon.h"
#include "log.h"
#include "nbguard.h"
#include "policy.h"
#include "resolve.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * Connecting: one address or a host name's addresses in turn (resolve.c), under the connect
 * timeout, with the policy's rewrite and judgement; then the TLS handshake of a tls or dtls socket
 * (connect, accept or socket.starttls) and the announcement that the socket is ready.
 */

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

static void sock_ready(struct sock *s);

/* The TCP connection is up: a tls socket starts its handshake, others are ready. */
static void
sock_became_connected(struct sock *s)
{
    if (sock_has(s, SOCK_CAP_TLS) && sock_ssl(s) == NULL) {
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
        log_client_info("%s socket %llu (client %llu) connected to %s", sock_type_name(s->type),
                        (unsigned long long)s->id,
                        s->owner ? (unsigned long long)s->owner->id : 0ULL, r ? r : "?");
        free(r);
    }
    sock_emit(s, SOCK_EV_CONNECTED, p, req);
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

/*
 * Handshake work one loop turn does before further steps wait for the next turn. A TLS server's
 * step signs with its private key, some 4 ms for RSA-4096, and a client that connects to its own
 * listener a hundred times at once had the loop do every one of them before it answered anyone
 * else; now another client waits for about this much handshake work, plus one step, per turn
 * (sockd(8) SECURITY MODEL). Steps put off run first in the next turn, in the order they came.
 */
#define SOCK_HS_TURN_SECONDS 0.002
static unsigned sock_hs_turn; /* the ev_iteration sock_hs_spent counts */
static double sock_hs_spent;  /* seconds of handshake work in that turn */

static double
sock_hs_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
sock_tls_resume_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock *s = w->data;
    (void)revents;
    s->tls->hs_waiting = 0;
    sock_tls_step(s);
}

void
sock_tls_step(struct sock *s)
{
    char detail[512];
    if (s->tls->hs_waiting)
        return; /* its timer resumes it */
    /* the loop's poll count, not ev_now: a call that updates the time (daemon.stats) within a
     * turn must not start a new budget */
    if (ev_iteration(sockd.loop) != sock_hs_turn) {
        sock_hs_turn = ev_iteration(sockd.loop);
        sock_hs_spent = 0;
    }
    if (sock_hs_spent >= SOCK_HS_TURN_SECONDS &&
        sock_timer_start(s, SOCK_TIMER_HANDSHAKE, sock_tls_resume_cb, 0.0) == 0) {
        s->tls->hs_waiting = 1;
        sock_update_io(s);
        return;
    }
    double t0 = sock_hs_clock();
    int r = tls_handshake(s, detail, sizeof detail);
    sock_hs_spent += sock_hs_clock() - t0;
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
        sock_emit(s, SOCK_EV_ACCEPTED, p, req);
        json_decref(req);
        break;
    }
    case 2: { /* upgraded */
        json_t *req = s->shutdown_req;
        s->shutdown_req = NULL;
        s->state = SS_CONNECTED;
        sock_emit(s, SOCK_EV_TLS_UPGRADED, json_pack("{s:o}", "tls", tls_info(s)), req);
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

void
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

void
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

void
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
