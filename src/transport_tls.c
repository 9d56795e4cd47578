#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>

#include <ev.h>
#include <openssl/err.h>
#include <openssl/srtp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "b64.h"
#include "conf.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/* TLS on a connected socket: handshake, record I/O through SSL_read/SSL_write, close_notify. */

static char tls_errbuf[256];
/* SSL app data marker: our close_notify is queued but not yet written. */
static char tls_close_queued;

const char *
tls_last_error(void)
{
    return tls_errbuf;
}

/* A literal IPv4 or IPv6 address (no brackets). */
static int
tls_is_ip(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The host to check and send as SNI: brackets and one trailing dot removed. -1 if too long. */
static int
tls_host(const char *server_name, char *host, size_t n)
{
    size_t len;
    host[0] = '\0';
    if (server_name == NULL)
        return 0;
    len = strlen(server_name);
    if (len >= 2 && server_name[0] == '[' && server_name[len - 1] == ']') {
        server_name++;
        len -= 2;
    } else if (len >= 2 && server_name[len - 1] == '.') {
        len--;
    }
    if (len >= n)
        return -1;
    memcpy(host, server_name, len);
    host[len] = '\0';
    return 0;
}

/* Put ssl on a tlsctx_sock_bio over fd (ssl owns it); 1 on success. */
static int
tls_set_bio(SSL *ssl, int fd)
{
    BIO *b = tlsctx_sock_bio(fd);
    if (b == NULL)
        return 0;
    SSL_set_bio(ssl, b, b); /* one reference, for both directions */
    return 1;
}

int
tls_start(struct sock *s, struct tlsctx *t, int server, const char *server_name, char *detail,
          size_t dlen)
{
    SSL_CTX *ctx = server ? t->server_ctx : t->client_ctx;
    char host[256];
    SSL *ssl;

    if (sock_ssl(s) != NULL) {
        snprintf(detail, dlen, "TLS is already running on this socket");
        return -1;
    }
    if (ctx == NULL) {
        snprintf(detail, dlen, "the context is not set up");
        return -1;
    }
    if (t->dtls != sock_has(s, SOCK_CAP_DGRAM)) {
        snprintf(detail, dlen,
                 t->dtls ? "the context is for DTLS, the socket is not"
                         : "the socket is DTLS, the context is not");
        return -1;
    }
    if (server && !tlsctx_serves(t)) {
        snprintf(detail, dlen, "the context has no server certificate");
        return -1;
    }
    if (!server) {
        if (tls_host(server_name, host, sizeof host) < 0) {
            snprintf(detail, dlen, "server name too long");
            return -1;
        }
        if (t->verify && host[0] == '\0') {
            snprintf(detail, dlen, "no host name to verify");
            return -1;
        }
    }
    ERR_clear_error();
    ssl = SSL_new(ctx);
    /* DTLS: a datagram BIO connected to the peer (sock_dtls.c); TLS: a socket BIO whose calls
     * are non-blocking each (tlsctx_sock_bio) */
    if (ssl == NULL ||
        (sock_has(s, SOCK_CAP_DGRAM) ? dtls_attach(s, ssl) : tls_set_bio(ssl, s->fd)) != 1)
        goto fail;
    if (server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (host[0] != '\0' && tls_is_ip(host)) {
            /* A literal address: checked against the certificate's IP SANs, never sent as SNI. */
            if (t->verify && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host) != 1)
                goto fail;
        } else if (host[0] != '\0') {
            if (SSL_set_tlsext_host_name(ssl, host) != 1)
                goto fail;
            if (t->verify) {
                SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (SSL_set1_host(ssl, host) != 1)
                    goto fail;
            }
        }
        /* a session of the same name, verification and address (sockd-protocol.7, TLS,
         * "Session resumption") */
        if (!sock_has(s, SOCK_CAP_DGRAM) && tlssess_begin(ssl, t, host, &s->remote.sa) < 0)
            goto fail;
    }
    if (tls_alloc(s) < 0) {
        snprintf(detail, dlen, "out of memory");
        SSL_free(ssl);
        return -1;
    }
    if (s->tls->ctx != t) {
        tlsctx_ref(t);
        if (s->tls->ctx != NULL)
            tlsctx_unref(s->tls->ctx);
        s->tls->ctx = t;
    }
    s->tls->ssl = ssl;
    s->tls->want = 0;
    s->tls->clean_eof = 0;
    s->tls->handshaking = 1;
    return 0;
fail:
    tlsctx_errors(detail, dlen, "cannot start TLS");
    SSL_free(ssl);
    return -1;
}

/* Whether this side checks the peer's certificate. */
static int
tls_verifies(const SSL *ssl)
{
    return (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER) != 0;
}

/* Describe a failed SSL call: OpenSSL's errors, the system error, the verification result. */
static void
tls_describe(struct sock *s, int sslerr, int err, char *detail, size_t dlen)
{
    char q[200];
    long vr = SSL_get_verify_result(s->tls->ssl);

    if (ERR_peek_error() != 0)
        tlsctx_errors(q, sizeof q, "TLS error");
    else if (sslerr == SSL_ERROR_ZERO_RETURN)
        snprintf(q, sizeof q, "the peer sent close_notify");
    else if (sslerr == SSL_ERROR_SYSCALL && err != 0)
        snprintf(q, sizeof q, "%s", strerror(err));
    else if (sslerr == SSL_ERROR_SYSCALL)
        snprintf(q, sizeof q, "connection closed by the peer without close_notify");
    else
        snprintf(q, sizeof q, "TLS error %d", sslerr);
    if (vr != X509_V_OK && tls_verifies(s->tls->ssl))
        snprintf(detail, dlen, "%s (%s)", q, X509_verify_cert_error_string(vr));
    else
        snprintf(detail, dlen, "%s", q);
    ERR_clear_error();
}

int
tls_handshake(struct sock *s, char *detail, size_t dlen)
{
    int r, e, err;
    if (sock_has(s, SOCK_CAP_DGRAM))
        dtls_pre(s); /* DTLS: a stale ICMP error must not fail the step (sock_dtls.c) */
    ERR_clear_error();
    errno = 0;
    r = SSL_do_handshake(s->tls->ssl);
    err = errno;
    if (sock_has(s, SOCK_CAP_DGRAM))
        dtls_timer_update(s); /* DTLS: retransmission timer (sock_dtls.c) */
    if (r == 1) {
        s->tls->handshaking = 0;
        s->tls->want = 0;
        return 1;
    }
    e = SSL_get_error(s->tls->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        s->tls->want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        return 0;
    }
    if (sock_has(s, SOCK_CAP_DGRAM) && e == SSL_ERROR_SYSCALL &&
        ERR_GET_LIB(ERR_peek_last_error()) != ERR_LIB_SSL && dtls_transient(err)) {
        /* DTLS: an ICMP error (the peer's port not open yet) or an empty datagram; the
         * retransmission timer sends the flight again */
        ERR_clear_error();
        s->tls->want = EV_READ;
        return 0;
    }
    s->tls->want = 0;
    tls_describe(s, e, err, detail, dlen);
    return -1;
}

/* Map a failed SSL_read/SSL_write to the transport's return value and errno. */
static ssize_t
tls_io_fail(struct sock *s, int r, int err, int reading)
{
    int e = SSL_get_error(s->tls->ssl, r);
    unsigned long last = ERR_peek_last_error();

    s->tls->want = 0;
    switch (e) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        s->tls->want = e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE;
        ERR_clear_error();
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        if (reading) {
            s->tls->clean_eof = 1;
            return 0;
        }
        snprintf(tls_errbuf, sizeof tls_errbuf, "the peer sent close_notify");
        errno = EPIPE;
        return -1;
    case SSL_ERROR_SYSCALL:
        if (last == 0 && err == 0) {
            snprintf(tls_errbuf, sizeof tls_errbuf,
                     "connection closed by the peer without close_notify");
            errno = ECONNRESET;
            return -1;
        }
        tls_describe(s, e, err, tls_errbuf, sizeof tls_errbuf);
        errno = err != 0 ? err : EPROTO;
        return -1;
    default:
        if (ERR_GET_LIB(last) == ERR_LIB_SSL &&
            ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            snprintf(tls_errbuf, sizeof tls_errbuf,
                     "connection closed by the peer without close_notify");
            errno = ECONNRESET;
            return -1;
        }
        tls_describe(s, e, err, tls_errbuf, sizeof tls_errbuf);
        errno = EPROTO;
        return -1;
    }
}

static ssize_t
tls_read(struct sock *s, void *p, size_t n)
{
    int r, err;
    if (n == 0) {
        errno = EINVAL;
        return -1;
    }
    ERR_clear_error();
    errno = 0;
    r = SSL_read(s->tls->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    err = errno;
    if (r > 0) {
        s->tls->want = 0;
        return r;
    }
    return tls_io_fail(s, r, err, 1);
}

static ssize_t
tls_write(struct sock *s, const void *p, size_t n)
{
    int r, err;
    if (n == 0)
        return 0;
    ERR_clear_error();
    errno = 0;
    r = SSL_write(s->tls->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
    err = errno;
    if (r > 0) {
        s->tls->want = 0;
        return r;
    }
    return tls_io_fail(s, r, err, 0);
}

static size_t
tls_pending(struct sock *s)
{
    int n = sock_ssl(s) != NULL ? SSL_pending(s->tls->ssl) : 0;
    return n > 0 ? (size_t)n : 0;
}

const struct sock_transport transport_tls = {"tls", tls_read, tls_write, tls_pending};

/* tls: TLS over a TCP stream, from the first byte. */
const struct sock_type_desc sock_type_tls = {
    .name = "tls",
    .caps = SOCK_CAP_TLS | SOCK_CAP_LISTEN,
    .log = CONF_LOG_TLS,
    .accept = sock_accept_ip,
};

int
tls_close_notify(struct sock *s)
{
    SSL *ssl = s->tls->ssl;
    int r, again;

    s->tls->want = 0;
    if (ssl == NULL || SSL_in_init(ssl))
        return 1;
    /* A second SSL_shutdown after ours went out would wait for the peer's: only retry a
     * close_notify still queued. */
    again = SSL_get_app_data(ssl) == &tls_close_queued;
    if ((SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) && !again)
        return 1;
    ERR_clear_error();
    r = SSL_shutdown(ssl);
    if (r < 0 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_WRITE) {
        SSL_set_app_data(ssl, &tls_close_queued);
        s->tls->want = EV_WRITE;
        return 0;
    }
    ERR_clear_error();
    SSL_set_app_data(ssl, NULL);
    return 1;
}

/* DTLS-SRTP: the negotiated profile and the RFC 5764 exporter output (both keys and salts). */
static void
tls_info_srtp(SSL *ssl, json_t *o)
{
    SRTP_PROTECTION_PROFILE *p = SSL_get_selected_srtp_profile(ssl);
    unsigned char km[2 * (32 + 14)];
    char text[sizeof km * 4 / 3 + 4];
    size_t keylen, saltlen;

    if (p == NULL)
        return;
    switch (p->id) {
    case SRTP_AES128_CM_SHA1_80:
    case SRTP_AES128_CM_SHA1_32:
        keylen = 16, saltlen = 14;
        break;
    case SRTP_AEAD_AES_128_GCM:
        keylen = 16, saltlen = 12;
        break;
    case SRTP_AEAD_AES_256_GCM:
        keylen = 32, saltlen = 12;
        break;
    default:
        return;
    }
    size_t n = 2 * (keylen + saltlen);
    if (SSL_export_keying_material(ssl, km, n, "EXTRACTOR-dtls_srtp", 19, NULL, 0, 0) != 1) {
        ERR_clear_error();
        return;
    }
    b64_encode(km, n, text);
    OPENSSL_cleanse(km, sizeof km);
    json_object_set_new(o, "srtp",
                        json_pack("{s:s,s:s}", "profile", p->name, "keying_material", text));
    OPENSSL_cleanse(text, sizeof text);
}

json_t *
tls_info(struct sock *s)
{
    SSL *ssl = s->tls->ssl;
    json_t *o = json_object();
    const SSL_CIPHER *c;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    const char *sn;
    X509 *peer;
    char fp[TLSCTX_FP_MAX];

    if (ssl == NULL)
        return o;
    json_object_set_new(o, "version", json_string(SSL_get_version(ssl)));
    c = SSL_get_current_cipher(ssl);
    if (c != NULL)
        json_object_set_new(o, "cipher", json_string(SSL_CIPHER_get_name(c)));
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    if (alpn != NULL && alpn_len > 0) {
        json_t *a = json_stringn((const char *)alpn, alpn_len);
        if (a != NULL)
            json_object_set_new(o, "alpn", a);
    }
    sn = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sn != NULL) {
        json_t *v = json_string(sn);
        if (v != NULL)
            json_object_set_new(o, "server_name", v);
    }
    peer = SSL_get0_peer_certificate(ssl);
    json_object_set_new(
        o, "verified",
        json_boolean(peer != NULL && tls_verifies(ssl) && SSL_get_verify_result(ssl) == X509_V_OK));
    if (peer != NULL && tlsctx_fingerprint(peer, "sha-256", fp, sizeof fp) == 0)
        json_object_set_new(o, "peer_fingerprint", json_string(fp));
    json_object_set_new(o, "resumed", json_boolean(SSL_session_reused(ssl)));
    tls_info_srtp(ssl, o);
    ERR_clear_error();
    return o;
}

int
tls_alloc(struct sock *s)
{
    if (s->tls == NULL && (s->tls = calloc(1, sizeof *s->tls)) == NULL)
        return -1;
    return 0;
}

void
tls_free(struct sock *s)
{
    if (s->tls == NULL)
        return;
    dtls_free(s); /* DTLS: retransmission timer, listener state (sock_dtls.c) */
    /* A connection closed without close_notify (socket.close, a peer that cut it) keeps its
     * session for resumption, as TLS 1.1 and later allow: OpenSSL would mark it not resumable
     * at SSL_free. A fatal TLS error has marked it already. (sockd-protocol.7, TLS, "Session
     * resumption") */
    if (s->tls->ssl != NULL && SSL_is_init_finished(s->tls->ssl))
        SSL_set_shutdown(s->tls->ssl, SSL_get_shutdown(s->tls->ssl) | SSL_SENT_SHUTDOWN);
    SSL_free(s->tls->ssl);
    if (s->tls->ctx != NULL)
        tlsctx_unref(s->tls->ctx);
    free(s->tls->server_name);
    free(s->tls);
    s->tls = NULL;
}
