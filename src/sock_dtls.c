#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <sockd/protocol.h>

#include "conf.h"
#include "daemon.h"
#include "log.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * DTLS over UDP (socket type "dtls"): the datagram BIO of a socket, the retransmission timer
 * (armed from DTLSv1_get_timeout after every SSL call, DTLSv1_handle_timeout on expiry), the
 * stateless cookie exchange of a listener (DTLSv1_listen) and the hand-off of each peer that
 * passed it to a UDP socket of its own: bound to the listener's address with SO_REUSEPORT and
 * connected to the peer, so the kernel routes that peer's datagrams to it from then on.
 *
 * The rest is the TLS machinery of sock_connect.c / transport_tls.c: the handshake is driven by
 * sock_tls_step, each socket.send is one record (dtls_send), each record read is one
 * socket.received (dtls_recv), close_notify ends it as for TLS.
 */

/* Per-socket DTLS state (s->tls->dtls), made on first use. */
struct sock_dtls {
    struct sock *s;
    ev_timer timer; /* retransmission */
    SSL *lssl;      /* listener: the SSL DTLSv1_listen runs on (a fresh one after each peer) */
    BIO_ADDR *peer; /* listener: the peer DTLSv1_listen reports */
};

/* The link MTU handshake flights are cut to (no path MTU discovery: SSL_OP_NO_QUERY_MTU). */
#define DTLS_LINK_MTU 1400

/* Key of the cookie HMAC: random, one per daemon run. */
static unsigned char dtls_secret[32];
static int dtls_have_secret;

static void dtls_timer_cb(EV_P_ ev_timer *w, int revents);

/* s->tls->dtls, made if missing; NULL on ENOMEM. */
static struct sock_dtls *
dtls_state(struct sock *s)
{
    struct sock_dtls *d = s->tls->dtls;
    if (d != NULL)
        return d;
    d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->s = s;
    ev_timer_init(&d->timer, dtls_timer_cb, 1.0, 0.0);
    d->timer.data = d;
    s->tls->dtls = d;
    return d;
}

void
dtls_free(struct sock *s)
{
    struct sock_dtls *d = s->tls->dtls;
    if (d == NULL)
        return;
    ev_timer_stop(sockd.loop, &d->timer);
    SSL_free(d->lssl);
    BIO_ADDR_free(d->peer);
    free(d);
    s->tls->dtls = NULL;
}

/* Errors of a connected UDP socket that do not end a DTLS association: ICMP reports (the
 * peer's port may not be open yet: the retransmission timer tries again), an empty datagram
 * (read 0, errno 0). */
int
dtls_transient(int err)
{
    return err == 0 || err == ECONNREFUSED || err == ECONNRESET || err == EHOSTUNREACH ||
           err == ENETUNREACH || err == EINTR;
}

void
dtls_pre(struct sock *s)
{
    int err;
    socklen_t len = sizeof err;
    /* Reading SO_ERROR clears an ICMP error the kernel would report on the next recv/send. */
    if (s->fd >= 0)
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len);
}

/* Arm the timer from DTLSv1_get_timeout; with kick, also for records already read but not yet
 * taken (right away: the fd will not wake for them). */
static void
dtls_timer_arm(struct sock *s, int kick)
{
    struct timeval tv;
    struct sock_dtls *d;

    if (s->dead || s->tls->ssl == NULL)
        return;
    if (DTLSv1_get_timeout(s->tls->ssl, &tv) != 1) {
        if (kick && SSL_is_init_finished(s->tls->ssl) && SSL_has_pending(s->tls->ssl)) {
            /* records left in a datagram already read: the fd will not wake for them */
            tv.tv_sec = 0;
            tv.tv_usec = 0;
        } else {
            if (s->tls->dtls != NULL)
                ev_timer_stop(sockd.loop, &s->tls->dtls->timer);
            return;
        }
    }
    if ((d = dtls_state(s)) == NULL) {
        log_warn("socket %llu: out of memory: no DTLS retransmission", (unsigned long long)s->id);
        return;
    }
    double after = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    if (after < 0.001)
        after = 0.001;
    ev_timer_stop(sockd.loop, &d->timer);
    ev_timer_set(&d->timer, after, 0.0);
    ev_timer_start(sockd.loop, &d->timer);
}

void
dtls_timer_update(struct sock *s)
{
    dtls_timer_arm(s, 1); /* after a handshake step: app data may share the last datagram */
}

/* The timer ran out: retransmit the last flight (or fail after OpenSSL's retry limit). */
static void
dtls_timer_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock_dtls *d = w->data;
    struct sock *s = d->s;
    char detail[256];
    struct timeval tv;
    (void)loop;
    (void)revents;

    if (s->dead || s->tls->ssl == NULL)
        return;
    if (!s->tls->handshaking && SSL_is_init_finished(s->tls->ssl) && SSL_has_pending(s->tls->ssl) &&
        DTLSv1_get_timeout(s->tls->ssl, &tv) != 1) {
        sock_io_event(s, EV_READ); /* read the records still buffered (dtls_timer_update) */
        return;
    }
    dtls_pre(s);
    ERR_clear_error();
    int r = DTLSv1_handle_timeout(s->tls->ssl);
    if (r < 0 && ERR_peek_error() != 0) {
        tlsctx_errors(detail, sizeof detail, "DTLS retransmission failed");
        log_debug("socket %llu: DTLS timeout: %s", (unsigned long long)s->id, detail);
        if (!s->tls->handshaking) {
            sock_close(s, SOCKD_REASON_LOST, 0, detail, NULL);
        } else if (s->tls_announce == 1 && s->accept_auto) {
            sock_close(s, NULL, 0, NULL, NULL); /* never announced: nobody to tell */
        } else {
            /* as sock_tls_step: a failed handshake ends the socket with the connect/accept id */
            sock_close(s, SOCKD_REASON_TLS_HANDSHAKE_FAILED, 0, detail, s->connect_req);
        }
        return;
    }
    ERR_clear_error(); /* a send error is retried at the next timeout */
    dtls_timer_arm(s, 0);
}

/* MTU handling: handshake messages are cut to DTLS_LINK_MTU; the kernel is not asked. */
static void
dtls_set_mtu(SSL *ssl)
{
    SSL_set_options(ssl, SSL_OP_NO_QUERY_MTU);
    DTLS_set_link_mtu(ssl, DTLS_LINK_MTU);
}

/* A BIO_ADDR for an IP socket address; NULL on failure. */
static BIO_ADDR *
dtls_bio_addr(const union sock_sa *sa)
{
    BIO_ADDR *a = BIO_ADDR_new();
    int ok = 0;
    if (a == NULL)
        return NULL;
    if (sa->sa.sa_family == AF_INET)
        ok = BIO_ADDR_rawmake(a, AF_INET, &sa->sin.sin_addr, sizeof sa->sin.sin_addr,
                              sa->sin.sin_port);
    else if (sa->sa.sa_family == AF_INET6)
        ok = BIO_ADDR_rawmake(a, AF_INET6, &sa->sin6.sin6_addr, sizeof sa->sin6.sin6_addr,
                              sa->sin6.sin6_port);
    if (!ok) {
        BIO_ADDR_free(a);
        return NULL;
    }
    return a;
}

/* The socket address of a BIO_ADDR (IPv4/IPv6 only); -1 if it is neither. */
static int
dtls_sa(const BIO_ADDR *a, union sock_sa *sa, socklen_t *len)
{
    size_t n = 0;
    memset(sa, 0, sizeof *sa);
    switch (BIO_ADDR_family(a)) {
    case AF_INET:
        if (BIO_ADDR_rawaddress(a, NULL, &n) != 1 || n != sizeof sa->sin.sin_addr)
            return -1;
        sa->sin.sin_family = AF_INET;
        BIO_ADDR_rawaddress(a, &sa->sin.sin_addr, &n);
        sa->sin.sin_port = BIO_ADDR_rawport(a);
        *len = sizeof sa->sin;
        return 0;
    case AF_INET6:
        if (BIO_ADDR_rawaddress(a, NULL, &n) != 1 || n != sizeof sa->sin6.sin6_addr)
            return -1;
        sa->sin6.sin6_family = AF_INET6;
        BIO_ADDR_rawaddress(a, &sa->sin6.sin6_addr, &n);
        sa->sin6.sin6_port = BIO_ADDR_rawport(a);
        *len = sizeof sa->sin6;
        return 0;
    default:
        return -1;
    }
}

/* Same IP address and port. */
static int
dtls_sa_equal(const union sock_sa *a, const union sock_sa *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_INET)
        return a->sin.sin_port == b->sin.sin_port &&
               a->sin.sin_addr.s_addr == b->sin.sin_addr.s_addr;
    if (a->sa.sa_family == AF_INET6)
        return a->sin6.sin6_port == b->sin6.sin6_port &&
               memcmp(&a->sin6.sin6_addr, &b->sin6.sin6_addr, sizeof a->sin6.sin6_addr) == 0;
    return 0;
}

/*
 * Ports held with SO_REUSEPORT: every bound dtls socket, listeners and their per-peer sockets.
 * The kernel lets any socket of the daemon's uid with that flag join such a port and take a
 * share of its datagrams, whichever client asked for it; so the daemon keeps its own list and
 * refuses another client's bind onto a port in it (sockd(8), Ports). A module-local registry:
 * few sockets are in it, and a parked one (no handle) must be found too.
 */
static struct sock **dtls_ports;
static size_t dtls_nports, dtls_ports_cap;

/* The port of an IP socket address (0 for another family). */
static unsigned
dtls_port_of(const union sock_sa *a)
{
    if (a->sa.sa_family == AF_INET)
        return ntohs(a->sin.sin_port);
    return a->sa.sa_family == AF_INET6 ? ntohs(a->sin6.sin6_port) : 0;
}

/* An IP address as IPv6 (IPv4 in its mapped form), for comparing across families. */
static void
dtls_addr16(const union sock_sa *a, unsigned char out[16])
{
    memset(out, 0, 16);
    if (a->sa.sa_family == AF_INET6) {
        memcpy(out, &a->sin6.sin6_addr, 16);
        return;
    }
    out[10] = out[11] = 0xff;
    memcpy(out + 12, &a->sin.sin_addr, 4);
}

/* Could binds to a and b receive the same datagrams: same port, and the same address or a
 * wildcard on either side (a dual-stack :: covers IPv4 too; erring towards a conflict). */
static int
dtls_port_overlap(const union sock_sa *a, const union sock_sa *b)
{
    static const unsigned char any6[16], any4[16] = {[10] = 0xff, [11] = 0xff};
    unsigned char x[16], y[16];
    if (dtls_port_of(a) == 0 || dtls_port_of(a) != dtls_port_of(b))
        return 0;
    dtls_addr16(a, x);
    dtls_addr16(b, y);
    return memcmp(x, y, 16) == 0 || !memcmp(x, any6, 16) || !memcmp(x, any4, 16) ||
           !memcmp(y, any6, 16) || !memcmp(y, any4, 16);
}

int
dtls_port_hold(struct sock *s)
{
    if (s->port_held)
        return 0;
    if (dtls_nports == dtls_ports_cap) {
        size_t cap = dtls_ports_cap ? dtls_ports_cap * 2 : 16;
        struct sock **p = realloc(dtls_ports, cap * sizeof *p);
        if (p == NULL)
            return -1;
        dtls_ports = p;
        dtls_ports_cap = cap;
    }
    dtls_ports[dtls_nports++] = s;
    s->port_held = 1;
    return 0;
}

void
dtls_port_release(struct sock *s)
{
    if (!s->port_held)
        return;
    for (size_t i = 0; i < dtls_nports; i++)
        if (dtls_ports[i] == s) {
            dtls_ports[i] = dtls_ports[--dtls_nports];
            break;
        }
    s->port_held = 0;
    if (dtls_nports == 0) {
        free(dtls_ports);
        dtls_ports = NULL;
        dtls_ports_cap = 0;
    }
}

int
dtls_port_taken(const struct sock *s, const struct sockaddr *local)
{
    union sock_sa a;
    memset(&a, 0, sizeof a);
    memcpy(&a, local, local->sa_family == AF_INET6 ? sizeof a.sin6 : sizeof a.sin);
    for (size_t i = 0; i < dtls_nports; i++) {
        const struct sock *h = dtls_ports[i];
        /* a client may share a port among its own sockets: it only reads its own datagrams */
        if (h != s && (h->owner == NULL || h->owner != s->owner) &&
            dtls_port_overlap(&h->local, &a))
            return 1;
    }
    return 0;
}

/* Put ssl on a datagram BIO over fd, connected to peer; 1 on success. */
static int
dtls_bio(SSL *ssl, int fd, const union sock_sa *peer)
{
    BIO_ADDR *a = dtls_bio_addr(peer);
    BIO *b = a != NULL ? BIO_new_dgram(fd, BIO_NOCLOSE) : NULL;
    if (b == NULL) {
        BIO_ADDR_free(a);
        return 0;
    }
    BIO_ctrl(b, BIO_CTRL_DGRAM_SET_CONNECTED, 0, a);
    BIO_ADDR_free(a);
    SSL_set_bio(ssl, b, b); /* one reference for both directions */
    dtls_set_mtu(ssl);
    return 1;
}

int
dtls_attach(struct sock *s, SSL *ssl)
{
    return dtls_bio(ssl, s->fd, &s->remote);
}

void
dtls_adopt(struct sock *s, SSL *ssl)
{
    s->tls->ssl = ssl;
    s->tls->want = 0;
    s->tls->clean_eof = 0;
    s->tls->handshaking = 1;
}

ssize_t
dtls_recv(struct sock *s, void *p, size_t n)
{
    dtls_pre(s);
    ssize_t r = transport_tls.read(s, p, n);
    int err = errno;
    if (r < 0 && err != EAGAIN && dtls_transient(err)) {
        log_debug("socket %llu: DTLS read: %s (an ICMP report or an empty datagram), ignored",
                  (unsigned long long)s->id, strerror(err));
        err = EAGAIN;
    }
    dtls_timer_arm(s, r > 0); /* kick again only after progress: no spinning */
    errno = err;
    return r;
}

ssize_t
dtls_send(struct sock *s, const void *p, size_t n)
{
    ssize_t r;
    int err;

    if (s->tls->ssl == NULL || s->tls->handshaking ||
        (s->state != SS_CONNECTED && s->state != SS_CLOSING)) {
        errno = EAGAIN; /* queued until the handshake is done */
        return -1;
    }
    if (n == 0)
        return 0; /* DTLS has no empty records: nothing goes out */
    for (int tries = 0;; tries++) {
        dtls_pre(s);
        r = transport_tls.write(s, p, n);
        err = errno;
        /* A failed datagram write drops the record: writing again makes a new one. */
        if (r >= 0 || err == EAGAIN || !dtls_transient(err) || tries > 0)
            break;
    }
    dtls_timer_arm(s, 0);
    errno = err;
    return r;
}

/* ---- listener ---------------------------------------------------------------------------- */

/* HMAC-SHA256 of the peer's address under the daemon's secret; -1 without a peer. */
static int
dtls_cookie(SSL *ssl, unsigned char *out, unsigned *outlen)
{
    BIO_ADDR *peer = BIO_ADDR_new();
    unsigned char msg[2 + 2 + 16];
    size_t alen = 0;
    int rc = -1;

    if (!dtls_have_secret) {
        if (RAND_bytes(dtls_secret, sizeof dtls_secret) != 1)
            goto out;
        dtls_have_secret = 1;
    }
    if (peer == NULL || BIO_dgram_get_peer(SSL_get_rbio(ssl), peer) <= 0)
        goto out;
    int fam = BIO_ADDR_family(peer);
    unsigned short port = BIO_ADDR_rawport(peer);
    if ((fam != AF_INET && fam != AF_INET6) || BIO_ADDR_rawaddress(peer, NULL, &alen) != 1 ||
        alen > 16)
        goto out;
    msg[0] = (unsigned char)(fam >> 8);
    msg[1] = (unsigned char)fam;
    memcpy(msg + 2, &port, 2);
    BIO_ADDR_rawaddress(peer, msg + 4, &alen);
    if (HMAC(EVP_sha256(), dtls_secret, sizeof dtls_secret, msg, 4 + alen, out, outlen) == NULL)
        goto out;
    rc = 0;
out:
    BIO_ADDR_free(peer);
    return rc;
}

static int
dtls_cookie_gen(SSL *ssl, unsigned char *cookie, unsigned int *len)
{
    /* DTLS1_COOKIE_LENGTH (255) leaves room for the 32 bytes */
    return dtls_cookie(ssl, cookie, len) == 0;
}

static int
dtls_cookie_verify(SSL *ssl, const unsigned char *cookie, unsigned int len)
{
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned wl = 0;
    return dtls_cookie(ssl, want, &wl) == 0 && wl == len && CRYPTO_memcmp(want, cookie, wl) == 0;
}

/* A fresh SSL for DTLSv1_listen on the listener's fd; -1 with errno. */
static int
dtls_listen_ssl(struct sock *l, struct sock_dtls *d)
{
    SSL_CTX *ctx = l->tls->ctx != NULL ? l->tls->ctx->server_ctx : NULL;
    BIO *b;
    if (ctx == NULL) {
        errno = EINVAL;
        return -1;
    }
    /* Set each time: context.set_server_certificate rebuilds the SSL_CTX. */
    SSL_CTX_set_cookie_generate_cb(ctx, dtls_cookie_gen);
    SSL_CTX_set_cookie_verify_cb(ctx, dtls_cookie_verify);
    if (d->peer == NULL && (d->peer = BIO_ADDR_new()) == NULL)
        goto fail;
    d->lssl = SSL_new(ctx);
    b = d->lssl != NULL ? BIO_new_dgram(l->fd, BIO_NOCLOSE) : NULL;
    if (b == NULL)
        goto fail;
    SSL_set_bio(d->lssl, b, b);
    SSL_set_accept_state(d->lssl);
    return 0;
fail:
    SSL_free(d->lssl);
    d->lssl = NULL;
    ERR_clear_error();
    errno = ENOMEM;
    return -1;
}

/* Does the peer already have a socket from this listener (pending or accepted)? */
static int
dtls_peer_taken(struct sock *l, const union sock_sa *peer)
{
    for (struct sock_pending *p = l->lst->pend_head; p != NULL; p = p->next)
        if (dtls_sa_equal(&p->remote, peer))
            return 1;
    if (l->owner != NULL)
        for (struct sock *s = l->owner->socks; s != NULL; s = s->cnext)
            if (!s->dead && s->listener == l->id && sock_has(s, SOCK_CAP_COOKIE) &&
                dtls_sa_equal(&s->remote, peer))
                return 1;
    return 0;
}

/* A UDP socket on the listener's address, connected to peer; -1 with errno. */
static int
dtls_peer_socket(struct sock *l, const union sock_sa *peer, socklen_t plen)
{
    int one = 1, err;
    char sink[64];
    socklen_t llen = l->local.sa.sa_family == AF_INET6 ? sizeof l->local.sin6 : sizeof l->local.sin;
    int fd = socket(peer->sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* SO_REUSEPORT only: it needs the listener's uid (the daemon's), where SO_REUSEADDR would
     * let a socket of any uid with that flag bind the port too */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, &l->local.sa, llen) < 0 || connect(fd, &peer->sa, plen) < 0)
        goto fail;
    /* Datagrams that reached this socket before connect() may be another peer's: drop them
     * (this peer's are retransmissions, sent again). */
    for (int i = 0; i < 64 && recv(fd, sink, sizeof sink, MSG_DONTWAIT | MSG_TRUNC) >= 0; i++)
        ;
    return fd;
fail:
    err = errno;
    close(fd);
    errno = err;
    return -1;
}

int
dtls_accept(struct sock *l, struct sockaddr_storage *peer, socklen_t *plen, SSL **sslp)
{
    struct sock_dtls *d = dtls_state(l);
    union sock_sa sa;
    socklen_t salen;

    *sslp = NULL;
    if (d == NULL) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < 64; i++) {
        if (d->lssl == NULL && dtls_listen_ssl(l, d) < 0)
            return -1;
        ERR_clear_error();
        int r = DTLSv1_listen(d->lssl, d->peer);
        if (r == 0) {
            ERR_clear_error();
            if (BIO_should_retry(SSL_get_rbio(d->lssl))) {
                errno = EAGAIN;
                return -1;
            }
            continue; /* a datagram was answered with a HelloVerifyRequest, or dropped */
        }
        if (r < 0) {
            char why[200];
            tlsctx_errors(why, sizeof why, "read failed");
            log_debug("socket %llu: DTLSv1_listen: %s", (unsigned long long)l->id, why);
            SSL_free(d->lssl); /* start over with a fresh SSL */
            d->lssl = NULL;
            continue;
        }
        /* The peer proved it receives at its address: give it a socket of its own. */
        SSL *ssl = d->lssl;
        if (dtls_sa(d->peer, &sa, &salen) < 0 || dtls_peer_taken(l, &sa)) {
            /* a ClientHello sent again before its socket took over the address */
            SSL_free(ssl);
            d->lssl = NULL;
            continue;
        }
        d->lssl = NULL;
        int fd = dtls_peer_socket(l, &sa, salen);
        if (fd < 0) {
            int err = errno;
            log_debug("socket %llu: no socket for a DTLS peer: %s", (unsigned long long)l->id,
                      strerror(err));
            SSL_free(ssl);
            errno = err;
            return -1;
        }
        if (!dtls_bio(ssl, fd, &sa)) {
            SSL_free(ssl);
            close(fd);
            ERR_clear_error();
            errno = ENOMEM;
            return -1;
        }
        memset(peer, 0, sizeof *peer);
        memcpy(peer, &sa, salen);
        *plen = salen;
        *sslp = ssl;
        return fd;
    }
    errno = EAGAIN; /* more may wait: the watcher fires again */
    return -1;
}

/* The datagram operations of a dtls socket: one record per datagram, no address of its own. */
static ssize_t
dtls_send_dgram(struct sock *s, const struct sock_dgram *h, const void *p)
{
    ssize_t n = dtls_send(s, p, h->len);
    if (n < 0 && errno != EAGAIN && !dtls_transient(errno))
        return SOCK_DGRAM_FAIL;
    return n;
}

static ssize_t
dtls_recv_dgram(struct sock *s, void *p, size_t n, struct sock_dgram *h)
{
    (void)h; /* no `from`: the peer is the connected one */
    ssize_t r = dtls_recv(s, p, n);
    if (r == 0)
        return SOCK_DGRAM_EOF; /* close_notify */
    if (r < 0 && errno != EAGAIN)
        return SOCK_DGRAM_FAIL;
    return r;
}

/* A listener's next peer past the cookie exchange, with its local address. */
static int
dtls_accept_peer(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl,
                 union sock_sa *local, socklen_t *ll, SSL **ssl)
{
    int fd = dtls_accept(l, remote, rl, ssl);
    if (fd >= 0)
        sock_accept_local(fd, local, ll);
    return fd;
}

/* dtls: DTLS over UDP, connected to one peer; a listener hands each peer a socket of its own. */
const struct sock_type_desc sock_type_dtls = {
    .name = "dtls",
    .caps = SOCK_CAP_DGRAM | SOCK_CAP_TLS | SOCK_CAP_COOKIE,
    .log = CONF_LOG_TLS,
    .send_dgram = dtls_send_dgram,
    .recv_dgram = dtls_recv_dgram,
    .accept = dtls_accept_peer,
};
