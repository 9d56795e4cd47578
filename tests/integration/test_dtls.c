/*
 * Integration tests: DTLS sockets (type "dtls") through a real sockd, on 127.0.0.1 only.
 *
 * - two sockd sockets of one daemon: a dtls listener (bind + listen, cookie exchange,
 *   socket.incoming / accept / auto_accept) and dtls clients; data both ways with datagram
 *   boundaries kept; fingerprints checked against context.fingerprint; DTLS-SRTP: same
 *   profile and same keying material (of the RFC 5764 length) on both ends;
 * - sockd as the client of `openssl s_server -dtls` (skipped when openssl is not installed),
 *   with -use_srtp and -keymatexport EXTRACTOR-dtls_srtp to compare the keying material;
 * - retransmission: a client whose first flights find no listener still completes;
 * - close during a handshake (either side) leaves no fd behind; errors of the RPC layer.
 *
 * Every wait is bounded; the per-test teardown closes tracked clients.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;

/* Largest payload of one dtls socket.send (one record). */
#define DTLS_MAX 16384

/* ---- helpers ----------------------------------------------------------------------------- */

static long long
jint_or0(const json_t *o, const char *k)
{
    return (long long)json_integer_value(json_object_get(o, k));
}

static const char *
jstr_or_empty(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* Wait for METHOD on SOCKET; on a timeout, show a socket.closed of that socket if one came. */
static json_t *
ev(struct sockd_client *c, const char *method, long long sock, int ms)
{
    json_t *m = sockd_client_wait_event(c, method, sock, ms);
    if (m == NULL) {
        json_t *cl = sockd_client_wait_event(c, "socket.closed", sock, 0);
        fprintf(stderr, "no %s for socket %lld within %d ms\n", method, sock, ms);
        if (cl != NULL)
            h_dump("socket.closed instead", cl);
        json_decref(cl);
        fail();
    }
    json_t *p = json_incref(json_object_get(m, "params"));
    json_decref(m);
    return p;
}

/* A dtls context (verify off unless asked) -> handle. */
static long long
ctx_new(struct sockd_client *c, int srtp, int verify)
{
    json_t *r =
        h_ok(c, "context.create", "{s:b,s:b,s:b}", "dtls", 1, "srtp", srtp, "verify", verify);
    long long id = jint_or0(r, "context");
    json_decref(r);
    return id;
}

/* context.fingerprint of a role -> malloc'ed text. */
static char *
ctx_fp(struct sockd_client *c, long long context_id, const char *role)
{
    json_t *r = h_ok(c, "context.fingerprint", "{s:I,s:s}", "context", (json_int_t)context_id,
                     "role", role);
    char *fp = strdup(jstr_or_empty(r, "fingerprint"));
    json_decref(r);
    EXPECT_TRUE(strncmp(fp, "sha-256 ", 8) == 0, "strncmp(fp, \"sha-256 \", 8) == 0");
    return fp;
}

static void
ctx_gen(struct sockd_client *c, long long context_id, const char *role)
{
    json_decref(h_ok(c, "context.generate_certificate", "{s:I,s:s}", "context",
                     (json_int_t)context_id, "role", role));
}

/* A dtls listener on 127.0.0.1 (port 0: any) -> handle; *port its port. */
static long long
listener(struct sockd_client *c, long long context_id, int port, int auto_accept, int *port_out)
{
    json_t *r =
        h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)context_id);
    long long l = jint_or0(r, "socket");
    json_decref(r);
    r = h_ok(c, "socket.bind", "{s:I,s:s,s:i}", "socket", (json_int_t)l, "address", "127.0.0.1",
             "port", port);
    if (port_out != NULL)
        *port_out = (int)jint_or0(json_object_get(r, "local"), "port");
    json_decref(r);
    json_decref(
        h_ok(c, "socket.listen", "{s:I,s:b}", "socket", (json_int_t)l, "auto_accept", auto_accept));
    return l;
}

/* A dtls client connecting to 127.0.0.1:port (not waited for) -> handle. */
static long long
client(struct sockd_client *c, long long context_id, int port, int timeout_ms)
{
    json_t *r =
        h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)context_id);
    long long s = jint_or0(r, "socket");
    json_decref(r);
    json_decref(h_ok(c, "socket.connect", "{s:I,s:s,s:i,s:i}", "socket", (json_int_t)s, "address",
                     "127.0.0.1", "port", port, "timeout_ms", timeout_ms));
    return s;
}

/* A UDP port on 127.0.0.1 that was free a moment ago. */
static int
free_udp_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_INT(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&a, &l), 0, "getsockname: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

/* Payload i of a run: sizes vary 1..1400, bytes depend on i and the direction. */
static size_t
payload(int i, int dir, unsigned char *out)
{
    size_t n = (size_t)(1 + (i * 97 + dir * 31) % 1400);
    for (size_t k = 0; k < n; k++)
        out[k] = (unsigned char)(i * 7 + dir * 3 + k);
    return n;
}

static void
dtls_send_bytes(struct sockd_client *c, long long s, const void *p, size_t n)
{
    char *b = h_b64(p, n);
    json_t *r =
        h_ok(c, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)s, "data", b, "notify", 0);
    EXPECT_INT(jint_or0(r, "queued"), (long long)n, "jint_or0(r, \"queued\")");
    json_decref(r);
    free(b);
}

/* `count` datagrams from `from` to `to` (stream recv on `to`): each arrives whole, in order. */
static void
datagrams(struct sockd_client *c, long long from, long long to, int count, int dir)
{
    unsigned char want[1500];
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i,s:b}", "socket", (json_int_t)to, "length", 65536,
                     "stream", 1));
    for (int i = 0; i < count; i++) {
        size_t n = payload(i, dir, want);
        dtls_send_bytes(c, from, want, n);
    }
    for (int i = 0; i < count; i++) {
        size_t n = payload(i, dir, want), got = 0;
        json_t *p = ev(c, "socket.received", to, H_TIMEOUT_MS);
        unsigned char *data = h_unb64(jstr_or_empty(p, "data"), &got);
        if (got != n || memcmp(data, want, n) != 0) {
            fprintf(stderr, "datagram %d: got %zu bytes, expected %zu\n", i, got, n);
            fail();
        }
        EXPECT_TRUE(json_object_get(p, "from") == NULL, "%s", jd(p)); /* connected: no from */
        free(data);
        json_decref(p);
    }
    json_t *r = h_ok(c, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)to);
    EXPECT_TRUE(json_is_true(json_object_get(r, "canceled")),
                "json_is_true(json_object_get(r, \"canceled\"))");
    json_decref(r);
}

/* The SRTP keying material of a tls object: checks profile and length; malloc'ed bytes. */
static unsigned char *
srtp_km(const json_t *tls, const char *profile, size_t want_len)
{
    const json_t *srtp = json_object_get(tls, "srtp");
    size_t n = 0;
    EXPECT_TRUE(json_is_object(srtp), "%s", jd(tls));
    EXPECT_TRUE(strcmp(jstr_or_empty(srtp, "profile"), profile) == 0, "%s", jd(tls));
    unsigned char *km = h_unb64(jstr_or_empty(srtp, "keying_material"), &n);
    EXPECT_TRUE(n == want_len, "%s", jd(tls));
    return km;
}

/* Same local/remote pairing: a's remote is b's local. */
static void
check_pair(const json_t *a_remote, const json_t *b_local)
{
    EXPECT_TRUE(strcmp(jstr_or_empty(a_remote, "address"), jstr_or_empty(b_local, "address")) == 0,
                "%s", jd(a_remote));
    EXPECT_TRUE(jint_or0(a_remote, "port") == jint_or0(b_local, "port"), "%s", jd(a_remote));
}

/* A self-signed EC certificate for cn (SAN DNS:cn) as PEM texts (malloc'ed). */
static void
make_cert(const char *cn, char **cert_pem, char **key_pem)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    unsigned char rnd[16];
    char san[300];
    EXPECT_TRUE(k != NULL, "k");
    EXPECT_TRUE(x != NULL, "x");
    EXPECT_INT(RAND_bytes(rnd, sizeof rnd), 1, "RAND_bytes(rnd, sizeof rnd)");
    rnd[0] &= 0x7f;
    BN_bin2bn(rnd, sizeof rnd, bn);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    X509_set_version(x, X509_VERSION_3);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    snprintf(san, sizeof san, "DNS:%s", cn);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    EXPECT_TRUE(e != NULL, "e");
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    EXPECT_TRUE(X509_sign(x, k, EVP_sha256()) > 0, "X509_sign(x, k, EVP_sha256()) > 0");

    BIO *b = BIO_new(BIO_s_mem());
    char *p;
    long n;
    PEM_write_bio_X509(b, x);
    n = BIO_get_mem_data(b, &p);
    *cert_pem = strndup(p, (size_t)n);
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &p);
    *key_pem = strndup(p, (size_t)n);
    BIO_free(b);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(k);
}

static json_t *
stats_sockets(struct sockd_client *c)
{
    json_t *r = h_ok(c, "daemon.stats", NULL);
    json_t *s = json_incref(json_object_get(r, "sockets"));
    json_decref(r);
    return s;
}

/* ---- two sockd sockets --------------------------------------------------------------------- */

static void
test_dtls_pair_srtp(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    long long sctx = ctx_new(c, 1, 1), cctx = ctx_new(c, 1, 0);
    int port;

    ctx_gen(c, sctx, "server");
    char *sfp = ctx_fp(c, sctx, "server");
    long long l = listener(c, sctx, 0, 0, &port);
    long long s = client(c, cctx, port, H_TIMEOUT_MS);

    /* The peer that passed the cookie exchange waits as a pending connection. */
    json_t *in = ev(c, "socket.incoming", l, H_TIMEOUT_MS);
    long long pending = jint_or0(in, "pending");
    EXPECT_TRUE(pending > 0, "%s", jd(in));
    EXPECT_TRUE(strcmp(jstr_or_empty(json_object_get(in, "remote"), "address"), "127.0.0.1") == 0,
                "%s", jd(in));
    EXPECT_TRUE(jint_or0(json_object_get(in, "local"), "port") == port, "%s", jd(in));
    json_t *info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)l);
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "state"), "listening") == 0 &&
                    jint_or0(info, "pending") == 1,
                "%s", jd(info));
    json_decref(info);

    json_t *r = h_ok(c, "socket.accept", "{s:I,s:I}", "socket", (json_int_t)l, "pending",
                     (json_int_t)pending);
    long long a = jint_or0(r, "socket");
    json_decref(r);

    json_t *acc = ev(c, "socket.accepted", a, H_TIMEOUT_MS);
    json_t *con = ev(c, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_TRUE(jint_or0(acc, "listener") == l, "%s", jd(acc));
    check_pair(json_object_get(acc, "remote"), json_object_get(con, "local"));
    check_pair(json_object_get(con, "remote"), json_object_get(acc, "local"));
    EXPECT_TRUE(jint_or0(json_object_get(con, "remote"), "port") == port, "%s", jd(con));
    check_pair(json_object_get(in, "remote"), json_object_get(con, "local"));

    json_t *ctls = json_object_get(con, "tls"), *stls = json_object_get(acc, "tls");
    EXPECT_TRUE(strcmp(jstr_or_empty(ctls, "version"), "DTLSv1.2") == 0, "%s", jd(con));
    EXPECT_TRUE(strcmp(jstr_or_empty(stls, "version"), "DTLSv1.2") == 0, "%s", jd(acc));
    EXPECT_TRUE(strcmp(jstr_or_empty(ctls, "peer_fingerprint"), sfp) == 0, "%s", jd(con));
    EXPECT_TRUE(json_is_false(json_object_get(ctls, "verified")), "%s", jd(con)); /* verify:false */
    EXPECT_TRUE(strcmp(jstr_or_empty(ctls, "cipher"), jstr_or_empty(stls, "cipher")) == 0, "%s",
                jd(con));
    /* The server's first choice of the offered profiles: AEAD_AES_128_GCM, 2 * (16 + 12). */
    unsigned char *ckm = srtp_km(ctls, "SRTP_AEAD_AES_128_GCM", 56);
    unsigned char *skm = srtp_km(stls, "SRTP_AEAD_AES_128_GCM", 56);
    EXPECT_TRUE(memcmp(ckm, skm, 56) == 0, "ckm");
    free(ckm);
    free(skm);

    /* socket.info shows the tls object too, and both ends count as dtls sockets. */
    info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "type"), "dtls") == 0, "%s", jd(info));
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "state"), "connected") == 0, "%s", jd(info));
    EXPECT_TRUE(json_is_object(json_object_get(json_object_get(info, "tls"), "srtp")), "%s",
                jd(info));
    json_decref(info);
    json_t *st = stats_sockets(c);
    EXPECT_TRUE(jint_or0(st, "dtls") == 3, "%s", jd(st));
    json_decref(st);

    /* Datagram boundaries both ways. */
    datagrams(c, s, a, 100, 0);
    datagrams(c, a, s, 100, 1);

    /* One record carries 16384 bytes; one more is refused and nothing is queued. */
    unsigned char *big = malloc(DTLS_MAX + 1);
    for (int i = 0; i < DTLS_MAX + 1; i++)
        big[i] = (unsigned char)(i * 13);
    char *b64 = h_b64(big, DTLS_MAX + 1);
    json_t *err = NULL;
    EXPECT_INT(h_err(c, &err, "socket.send", "{s:I,s:s}", "socket", (json_int_t)s, "data", b64),
               -32602, "socket.send error code");
    json_decref(err);
    free(b64);
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)a, "length", 65536));
    dtls_send_bytes(c, s, big, DTLS_MAX);
    json_t *p = ev(c, "socket.received", a, H_TIMEOUT_MS);
    size_t n = 0;
    unsigned char *got = h_unb64(jstr_or_empty(p, "data"), &n);
    EXPECT_INT(n, DTLS_MAX, "n");
    EXPECT_TRUE(memcmp(got, big, DTLS_MAX) == 0, "got");
    free(got);
    free(big);
    json_decref(p);

    /* A short recv length truncates as for udp. */
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)a, "length", 3));
    json_decref(h_ok(c, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)s, "text", "abcdef",
                     "notify", 0));
    p = ev(c, "socket.received", a, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "data"), "YWJj") == 0 && jint_or0(p, "size") == 6, "%s",
                jd(p));
    json_decref(p);

    /* dtls sockets are connected: no sendto. */
    EXPECT_INT(h_err(c, NULL, "socket.sendto", "{s:I,s:s,s:s}", "socket", (json_int_t)s, "text",
                     "x", "address", "127.0.0.1:9"),
               -32002, "socket.sendto error code");

    /* shutdown: close_notify; the peer's pending recv ends with eof, then closed by_peer. */
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)a, "length", 100));
    json_decref(h_ok(c, "socket.shutdown", "{s:I}", "socket", (json_int_t)s));
    p = ev(c, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "normal") == 0, "%s", jd(p));
    json_decref(p);
    p = ev(c, "socket.received", a, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_true(json_object_get(p, "eof")) &&
                    strcmp(jstr_or_empty(p, "data"), "") == 0,
                "%s", jd(p));
    json_decref(p);
    p = ev(c, "socket.closed", a, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "by_peer") == 0, "%s", jd(p));
    json_decref(p);

    /* The listener still works: a second client is accepted as well. */
    long long s2 = client(c, cctx, port, H_TIMEOUT_MS);
    json_decref(in);
    in = ev(c, "socket.incoming", l, H_TIMEOUT_MS);
    EXPECT_TRUE(jint_or0(in, "pending") > pending, "%s", jd(in));
    r = h_ok(c, "socket.accept", "{s:I,s:I}", "socket", (json_int_t)l, "pending",
             (json_int_t)jint_or0(in, "pending"));
    long long a2 = jint_or0(r, "socket");
    json_decref(r);
    json_decref(ev(c, "socket.connected", s2, H_TIMEOUT_MS));
    json_decref(ev(c, "socket.accepted", a2, H_TIMEOUT_MS));
    datagrams(c, a2, s2, 10, 2);
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)l));
    datagrams(c, s2, a2, 10, 3); /* accepted sockets outlive their listener */

    json_decref(in);
    json_decref(acc);
    json_decref(con);
    free(sfp);
    h_client_close(c);
}

/* Certificates verified both ways (ca = the peer's self-signed certificate), auto_accept,
 * several peers on one listener at once, each on its own socket. */
static void
test_dtls_mutual_many(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    char *scert, *skey, *ccert, *ckey;
    enum { N = 5 };

    make_cert("localhost", &scert, &skey);
    make_cert("dtls-client", &ccert, &ckey);
    json_t *r = h_ok(c, "context.create", "{s:b,s:s,s:s}", "dtls", 1, "ca", ccert, "verify_client",
                     "require");
    long long sctx = jint_or0(r, "context");
    json_decref(r);
    r = h_ok(c, "context.create", "{s:b,s:s}", "dtls", 1, "ca", scert);
    long long cctx = jint_or0(r, "context");
    json_decref(r);
    json_decref(h_ok(c, "context.set_server_certificate", "{s:I,s:s,s:s}", "context",
                     (json_int_t)sctx, "cert", scert, "key", skey));
    json_decref(h_ok(c, "context.set_client_certificate", "{s:I,s:s,s:s}", "context",
                     (json_int_t)cctx, "cert", ccert, "key", ckey));
    char *sfp = ctx_fp(c, sctx, "server"), *cfp = ctx_fp(c, cctx, "client");

    int port;
    long long l = listener(c, sctx, 0, 1, &port);
    long long cs[N], as[N];
    int cport[N];
    for (int i = 0; i < N; i++) {
        r = h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)cctx);
        cs[i] = jint_or0(r, "socket");
        json_decref(r);
        json_decref(h_ok(c, "socket.connect", "{s:I,s:s,s:i,s:s}", "socket", (json_int_t)cs[i],
                         "address", "127.0.0.1", "port", port, "server_name", "localhost"));
    }
    for (int i = 0; i < N; i++) {
        json_t *con = ev(c, "socket.connected", cs[i], H_TIMEOUT_MS);
        json_t *tls = json_object_get(con, "tls");
        EXPECT_TRUE(json_is_true(json_object_get(tls, "verified")), "%s", jd(con));
        EXPECT_TRUE(strcmp(jstr_or_empty(tls, "peer_fingerprint"), sfp) == 0, "%s", jd(con));
        EXPECT_TRUE(json_object_get(tls, "srtp") == NULL, "%s", jd(con)); /* srtp not asked */
        cport[i] = (int)jint_or0(json_object_get(con, "local"), "port");
        json_decref(con);
    }
    for (int i = 0; i < N; i++) {
        json_t *acc = ev(c, "socket.accepted", 0, H_TIMEOUT_MS);
        json_t *tls = json_object_get(acc, "tls");
        EXPECT_TRUE(jint_or0(acc, "listener") == l, "%s", jd(acc));
        EXPECT_TRUE(json_is_true(json_object_get(tls, "verified")), "%s", jd(acc));
        EXPECT_TRUE(strcmp(jstr_or_empty(tls, "peer_fingerprint"), cfp) == 0, "%s", jd(acc));
        int rp = (int)jint_or0(json_object_get(acc, "remote"), "port"), k;
        for (k = 0; k < N && cport[k] != rp; k++)
            ;
        EXPECT_TRUE(k < N, "%s", jd(acc)); /* one accepted socket per client */
        as[k] = jint_or0(acc, "socket");
        cport[k] = -1;
        json_decref(acc);
    }
    /* Each accepted socket talks to its own client only. */
    for (int i = 0; i < N; i++) {
        datagrams(c, cs[i], as[i], 3, 10 + i);
        datagrams(c, as[i], cs[i], 3, 20 + i);
    }
    json_t *info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)l);
    EXPECT_TRUE(jint_or0(info, "pending") == 0, "%s", jd(info));
    json_decref(info);
    h_client_close(c);
    free(scert), free(skey), free(ccert), free(ckey), free(sfp), free(cfp);
}

/* A failed verification ends both sides: the client with its connect id, the accepted
 * socket with its accept id. */
static void
test_dtls_verify_fails(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    long long sctx = ctx_new(c, 0, 1), cctx = ctx_new(c, 0, 1); /* the client verifies */
    int port;
    ctx_gen(c, sctx, "server");
    long long l = listener(c, sctx, 0, 0, &port);
    json_t *r = h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)cctx);
    long long s = jint_or0(r, "socket");
    json_decref(r);
    json_t *res = NULL, *params = json_pack("{s:I,s:s,s:i,s:s}", "socket", (json_int_t)s, "address",
                                            "127.0.0.1", "port", port, "server_name", "localhost");
    json_t *in;
    EXPECT_INT(sockd_client_call(c, "socket.connect", params, &res, NULL, H_TIMEOUT_MS), 0,
               "sockd_client_call");
    json_decref(params);
    json_decref(res);
    in = ev(c, "socket.incoming", l, H_TIMEOUT_MS);
    r = h_ok(c, "socket.accept", "{s:I,s:I}", "socket", (json_int_t)l, "pending",
             (json_int_t)jint_or0(in, "pending"));
    long long a = jint_or0(r, "socket");
    json_decref(r);
    json_t *p = ev(c, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "tls_handshake_failed") == 0, "%s", jd(p));
    EXPECT_TRUE(json_object_get(p, "request") != NULL, "%s", jd(p));
    json_decref(p);
    p = ev(c, "socket.closed", a, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "tls_handshake_failed") == 0, "%s", jd(p));
    json_decref(p);
    json_decref(in);
    h_client_close(c);
}

/* ---- retransmission ------------------------------------------------------------------------ */

/* The listener appears 1.5 s after the client's first ClientHello (answered by ICMP port
 * unreachable): the retransmission timer sends it again and the handshake completes. */
static void
test_dtls_retransmit(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    long long sctx = ctx_new(c, 1, 0), cctx = ctx_new(c, 1, 0);
    ctx_gen(c, sctx, "server");
    int port = free_udp_port();
    long long t0 = h_now_ms();
    long long s = client(c, cctx, port, 15000);
    h_sleep_ms(1500);
    json_t *info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "state"), "connecting") == 0, "%s", jd(info));
    json_decref(info);
    long long l = listener(c, sctx, port, 1, NULL);
    json_t *con = ev(c, "socket.connected", s, 8000);
    json_t *acc = ev(c, "socket.accepted", 0, 2000);
    long long took = h_now_ms() - t0;
    EXPECT_TRUE(took >= 1500, "%s", jd(con));
    check_pair(json_object_get(acc, "remote"), json_object_get(con, "local"));
    unsigned char *k1 = srtp_km(json_object_get(con, "tls"), "SRTP_AEAD_AES_128_GCM", 56);
    unsigned char *k2 = srtp_km(json_object_get(acc, "tls"), "SRTP_AEAD_AES_128_GCM", 56);
    EXPECT_TRUE(memcmp(k1, k2, 56) == 0, "k1");
    datagrams(c, s, jint_or0(acc, "socket"), 5, 5);
    free(k1);
    free(k2);
    json_decref(con);
    json_decref(acc);
    (void)l;
    h_client_close(c);
}

/* ---- several records in one datagram ------------------------------------------------------ */

/* A UDP relay between a client and a listener that packs whatever the server side sends within
 * 150 ms into one datagram (DTLS allows several records per datagram). */
struct relay {
    pthread_t th;
    int a, b;    /* a: the client side (bound), b: connected to the listener */
    int port;    /* a's port */
    int stop[2]; /* pipe: stop the thread */
    struct sockaddr_in client;
    int merged; /* datagrams that carried more than one server datagram */
};

static void *
relay_main(void *arg)
{
    struct relay *r = arg;
    static unsigned char buf[65536];
    int have_client = 0;
    for (;;) {
        struct pollfd pf[3] = {{r->a, POLLIN, 0}, {r->b, POLLIN, 0}, {r->stop[0], POLLIN, 0}};
        if (poll(pf, 3, 1000) < 0 || (pf[2].revents & POLLIN))
            return NULL;
        if (pf[0].revents & POLLIN) {
            socklen_t l = sizeof r->client;
            ssize_t n = recvfrom(r->a, buf, sizeof buf, 0, (struct sockaddr *)&r->client, &l);
            if (n >= 0) {
                have_client = 1;
                send(r->b, buf, (size_t)n, 0);
            }
        }
        if (pf[1].revents & POLLIN) {
            size_t len = 0;
            int parts = 0;
            long long until = h_now_ms() + 150;
            for (;;) {
                ssize_t n = recv(r->b, buf + len, sizeof buf - len, MSG_DONTWAIT);
                if (n > 0) {
                    len += (size_t)n;
                    parts++;
                    continue;
                }
                long long left = until - h_now_ms();
                if (left <= 0 || len > 30000)
                    break;
                struct pollfd one = {r->b, POLLIN, 0};
                poll(&one, 1, (int)left);
            }
            if (parts > 1)
                r->merged++;
            if (have_client && len > 0)
                sendto(r->a, buf, len, 0, (struct sockaddr *)&r->client, sizeof r->client);
        }
    }
}

static void
relay_start(struct relay *r, int to_port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    memset(r, 0, sizeof *r);
    r->a = socket(AF_INET, SOCK_DGRAM, 0);
    r->b = socket(AF_INET, SOCK_DGRAM, 0);
    EXPECT_TRUE(r->a >= 0 && r->b >= 0, "r->a >= 0 && r->b >= 0");
    EXPECT_INT(bind(r->a, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    EXPECT_INT(getsockname(r->a, (struct sockaddr *)&a, &l), 0, "getsockname: %s", strerror(errno));
    r->port = ntohs(a.sin_port);
    a.sin_port = htons((uint16_t)to_port);
    EXPECT_INT(connect(r->b, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    EXPECT_INT(pipe(r->stop), 0, "pipe: %s", strerror(errno));
    EXPECT_INT(pthread_create(&r->th, NULL, relay_main, r), 0, "pthread_create");
}

static void
relay_stop(struct relay *r)
{
    if (write(r->stop[1], "x", 1) != 1)
        fprintf(stderr, "relay: cannot stop\n");
    pthread_join(r->th, NULL);
    close(r->a);
    close(r->b);
    close(r->stop[0]);
    close(r->stop[1]);
}

static struct relay g_relay;
static int g_relay_on;

/* The server's Finished and its first records arrive in one datagram: the client takes them
 * all, each record one socket.received, though the fd never wakes for them again. */
static void
test_dtls_coalesced(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    long long sctx = ctx_new(c, 0, 0), cctx = ctx_new(c, 0, 0);
    int port;
    ctx_gen(c, sctx, "server");
    long long l = listener(c, sctx, 0, 1, &port);
    relay_start(&g_relay, port);
    g_relay_on = 1;
    long long s = client(c, cctx, g_relay.port, H_TIMEOUT_MS);
    json_t *acc = ev(c, "socket.accepted", 0, H_TIMEOUT_MS);
    long long a = jint_or0(acc, "socket");
    unsigned char want[1500];
    for (int i = 0; i < 3; i++) {
        size_t n = payload(i, 7, want);
        dtls_send_bytes(c, a, want, n);
    }
    json_decref(ev(c, "socket.connected", s, H_TIMEOUT_MS));
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i,s:b}", "socket", (json_int_t)s, "length", 65536,
                     "stream", 1));
    for (int i = 0; i < 3; i++) {
        size_t n = payload(i, 7, want), got = 0;
        json_t *p = ev(c, "socket.received", s, H_TIMEOUT_MS);
        unsigned char *data = h_unb64(jstr_or_empty(p, "data"), &got);
        EXPECT_TRUE(got == n && memcmp(data, want, n) == 0, "%s", jd(p));
        free(data);
        json_decref(p);
    }
    EXPECT_TRUE(g_relay.merged > 0, "%s", jd(acc));

    /* An empty datagram and garbage from the peer's address are dropped; the association
     * goes on. */
    static const char junk[] = "\x17\xfe\xfd this is not a DTLS record";
    EXPECT_INT(
        sendto(g_relay.a, "", 0, 0, (struct sockaddr *)&g_relay.client, sizeof g_relay.client), 0,
        "sendto: %s", strerror(errno));
    EXPECT_INT(sendto(g_relay.a, junk, sizeof junk, 0, (struct sockaddr *)&g_relay.client,
                      sizeof g_relay.client),
               (ssize_t)sizeof junk, "sendto: %s", strerror(errno));
    h_sleep_ms(100);
    for (int i = 3; i < 6; i++) {
        size_t n = payload(i, 7, want), got = 0;
        dtls_send_bytes(c, a, want, n);
        json_t *p = ev(c, "socket.received", s, H_TIMEOUT_MS);
        unsigned char *data = h_unb64(jstr_or_empty(p, "data"), &got);
        EXPECT_TRUE(got == n && memcmp(data, want, n) == 0, "%s", jd(p));
        free(data);
        json_decref(p);
    }
    datagrams(c, s, a, 3, 8);
    json_decref(acc);
    (void)l;
    h_client_close(c);
}

/* ---- closing mid-handshake leaks nothing ----------------------------------------------------- */

static void
test_dtls_close_handshake(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    long long sctx = ctx_new(c, 0, 0), cctx = ctx_new(c, 0, 0);
    ctx_gen(c, sctx, "server");
    json_decref(h_wait_clients(c, 1));
    int base = h_count_fds(D.pid);

    /* A client that finds no server, closed while its handshake retransmits. */
    long long s = client(c, cctx, free_udp_port(), 60000);
    h_sleep_ms(1200); /* one retransmission */
    json_t *r = h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)s);
    json_decref(r);
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");

    /* A listener with a pending peer whose client is gone: accepted, its handshake can never
     * finish; closed mid-handshake. Then a pending one dropped with its listener. */
    int port;
    long long l = listener(c, sctx, 0, 0, &port);
    s = client(c, cctx, port, 60000);
    json_t *in = ev(c, "socket.incoming", l, H_TIMEOUT_MS);
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)s));
    r = h_ok(c, "socket.accept", "{s:I,s:I}", "socket", (json_int_t)l, "pending",
             (json_int_t)jint_or0(in, "pending"));
    long long a = jint_or0(r, "socket");
    json_decref(r);
    json_decref(in);
    h_sleep_ms(200);
    json_t *info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)a);
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "state"), "connecting") == 0, "%s", jd(info));
    json_decref(info);
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)a));

    s = client(c, cctx, port, 60000);
    in = ev(c, "socket.incoming", l, H_TIMEOUT_MS);
    json_decref(in);
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)s));
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)l));
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");

    /* timeout_ms covers the handshake: closed "timeout" with the connect id. */
    s = client(c, cctx, free_udp_port(), 1200);
    json_t *t = ev(c, "socket.closed", s, 4000);
    EXPECT_TRUE(strcmp(jstr_or_empty(t, "reason"), "timeout") == 0 && json_object_get(t, "request"),
                "%s", jd(t));
    json_decref(t);
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");

    /* A client shut down during its handshake: closed normal once connected. */
    l = listener(c, sctx, 0, 1, &port);
    s = client(c, cctx, port, H_TIMEOUT_MS);
    json_decref(h_ok(c, "socket.shutdown", "{s:I}", "socket", (json_int_t)s));
    json_t *p = ev(c, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "normal") == 0, "%s", jd(p));
    json_decref(p);
    p = ev(c, "socket.accepted", 0, H_TIMEOUT_MS);
    long long a2 = jint_or0(p, "socket");
    json_decref(p);
    p = ev(c, "socket.closed", a2, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "by_peer") == 0, "%s", jd(p));
    json_decref(p);
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)l));
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");
    h_client_close(c);
}

static struct h_daemon g_d2; /* test_dtls_daemon_shutdown's own daemon */

/* SIGTERM with dtls sockets in every state: each gets daemon_shutdown, the daemon exits 0
 * (and, in a sanitizer build, without leaks). */
static void
test_dtls_daemon_shutdown(void **state)
{
    (void)state;
    struct h_daemon *d2 = &g_d2;
    h_daemon_start(d2, NULL);
    struct sockd_client *c = h_client(d2);
    long long sctx = ctx_new(c, 1, 0), cctx = ctx_new(c, 1, 0);
    int port;
    ctx_gen(c, sctx, "server");
    long long l = listener(c, sctx, 0, 0, &port);
    long long s1 = client(c, cctx, port, 60000); /* stays pending */
    json_decref(ev(c, "socket.incoming", l, H_TIMEOUT_MS));
    long long l2 = listener(c, sctx, 0, 1, &port);
    long long s2 = client(c, cctx, port, 60000); /* connected */
    json_decref(ev(c, "socket.connected", s2, H_TIMEOUT_MS));
    json_t *acc = ev(c, "socket.accepted", 0, H_TIMEOUT_MS);
    long long s3 = client(c, cctx, free_udp_port(), 60000); /* retransmitting */
    h_sleep_ms(100);
    json_decref(h_ok(c, "socket.send", "{s:I,s:s}", "socket", (json_int_t)s2, "text", "bye"));
    EXPECT_INT(kill(d2->pid, SIGTERM), 0, "kill: %s", strerror(errno));
    long long want[] = {l, s1, l2, s2, jint_or0(acc, "socket"), s3};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        json_t *p = ev(c, "socket.closed", want[i], H_TIMEOUT_MS);
        EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "daemon_shutdown") == 0, "%s", jd(p));
        json_decref(p);
    }
    json_decref(acc);
    sockd_client_close(c);
    h_daemon_stop(d2); /* SIGTERM again is harmless; asserts exit 0 */
}

/* ---- RPC errors ------------------------------------------------------------------------------ */

static void
test_dtls_rpc_errors(void **state)
{
    (void)state;
    struct sockd_client *c = h_client_auto(&D);
    json_t *r = h_ok(c, "context.create", "{s:b}", "verify", 0);
    long long tctx = jint_or0(r, "context");
    json_decref(r);
    long long dctx = ctx_new(c, 0, 0);

    EXPECT_INT(h_err(c, NULL, "socket.open", "{s:s}", "type", "dtls"), -32602,
               "socket.open error code");
    EXPECT_INT(
        h_err(c, NULL, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)tctx),
        -32602, "socket.open error code");
    EXPECT_INT(
        h_err(c, NULL, "socket.open", "{s:s,s:I}", "type", "tls", "context", (json_int_t)dctx),
        -32602, "socket.open error code");
    /* A listener needs a server certificate. */
    r = h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)dctx);
    long long l = jint_or0(r, "socket");
    json_decref(r);
    EXPECT_INT(h_err(c, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)l), -32002,
               "socket.listen error code");
    /* udp still does not listen. */
    long long u = h_open(c, "udp");
    EXPECT_INT(h_err(c, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)u), -32002,
               "socket.listen error code");
    /* listen from "open" binds to any address, as for tcp. */
    ctx_gen(c, dctx, "server");
    json_decref(h_ok(c, "socket.listen", "{s:I}", "socket", (json_int_t)l));
    json_t *info = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)l);
    EXPECT_TRUE(strcmp(jstr_or_empty(info, "state"), "listening") == 0, "%s", jd(info));
    EXPECT_TRUE(jint_or0(json_object_get(info, "local"), "port") > 0, "%s", jd(info));
    json_decref(info);
    /* No send on a listener, no sendto anywhere. */
    EXPECT_INT(h_err(c, NULL, "socket.send", "{s:I,s:s}", "socket", (json_int_t)l, "text", "x"),
               -32002, "socket.send error code");
    h_client_close(c);
}

/* ---- against openssl s_server ---------------------------------------------------------------- */

struct proc {
    pid_t pid;
    int in, out; /* its stdin (we write), its stdout+stderr (we read) */
    char buf[65536];
    size_t len;
};

/* Read what the process printed until `needle` shows up or ms pass; 1 if found. */
static int
proc_wait_for(struct proc *p, const char *needle, int ms)
{
    long long deadline = h_now_ms() + ms;
    for (;;) {
        p->buf[p->len] = '\0';
        if (memmem(p->buf, p->len, needle, strlen(needle)) != NULL)
            return 1;
        long long left = deadline - h_now_ms();
        if (left <= 0 || p->len + 1 >= sizeof p->buf)
            return 0;
        struct pollfd pf = {p->out, POLLIN, 0};
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(p->out, p->buf + p->len, sizeof p->buf - 1 - p->len);
        if (n <= 0)
            return 0;
        p->len += (size_t)n;
    }
}

static int
have_openssl(void)
{
    return system("openssl version >/dev/null 2>&1") == 0;
}

static void
proc_stop(struct proc *p)
{
    int st;
    if (p->pid <= 0)
        return;
    close(p->in);
    kill(p->pid, SIGTERM);
    for (int i = 0; i < 200 && waitpid(p->pid, &st, WNOHANG) == 0; i++)
        h_sleep_ms(10);
    if (waitpid(p->pid, &st, WNOHANG) == 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &st, 0);
    }
    close(p->out);
    p->pid = 0;
}

static struct proc g_srv;
static char g_dir[64];

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    EXPECT_TRUE(f != NULL, "f");
    EXPECT_TRUE(fputs(text, f) >= 0, "fputs: %s", strerror(errno));
    EXPECT_INT(fclose(f), 0, "fclose: %s", strerror(errno));
}

static void
start_s_server(int port, const char *cert, const char *key, int srtp)
{
    int in[2], out[2];
    char acc[64];
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    EXPECT_INT(pipe(in), 0, "pipe: %s", strerror(errno));
    EXPECT_INT(pipe(out), 0, "pipe: %s", strerror(errno));
    memset(&g_srv, 0, sizeof g_srv);
    g_srv.pid = fork();
    EXPECT_TRUE(g_srv.pid >= 0, "g_srv.pid >= 0");
    if (g_srv.pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        dup2(out[1], 2);
        for (int i = 3; i < 1024; i++)
            close(i);
        if (srtp)
            execlp("openssl", "openssl", "s_server", "-dtls", "-cert", cert, "-key", key, "-accept",
                   acc, "-use_srtp", "SRTP_AES128_CM_SHA1_80", "-keymatexport",
                   "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60", (char *)NULL);
        else
            execlp("openssl", "openssl", "s_server", "-dtls", "-cert", cert, "-key", key, "-accept",
                   acc, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    g_srv.in = in[1];
    g_srv.out = out[0];
    if (!proc_wait_for(&g_srv, "ACCEPT", H_TIMEOUT_MS)) {
        fprintf(stderr, "s_server did not start:\n%s\n", g_srv.buf);
        fail();
    }
}

static void
test_dtls_openssl_s_server(void **state)
{
    (void)state;
    if (!have_openssl())
        skip();
    struct sockd_client *c = h_client_auto(&D);
    char *cert, *key, cpath[128], kpath[128];
    make_cert("localhost", &cert, &key);
    snprintf(g_dir, sizeof g_dir, "/tmp/dtls-it-XXXXXX");
    EXPECT_TRUE(mkdtemp(g_dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(cpath, sizeof cpath, "%s/cert.pem", g_dir);
    snprintf(kpath, sizeof kpath, "%s/key.pem", g_dir);
    write_file(cpath, cert);
    write_file(kpath, key);

    int port = free_udp_port();
    start_s_server(port, cpath, kpath, 1);

    /* The certificate is the trust anchor; the host name is checked. */
    json_t *r = h_ok(c, "context.create", "{s:b,s:b,s:s}", "dtls", 1, "srtp", 1, "ca", cert);
    long long cctx = jint_or0(r, "context");
    json_decref(r);
    r = h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)cctx);
    long long s = jint_or0(r, "socket");
    json_decref(r);
    json_decref(h_ok(c, "socket.connect", "{s:I,s:s,s:i,s:s}", "socket", (json_int_t)s, "address",
                     "127.0.0.1", "port", port, "server_name", "localhost"));
    json_t *con = ev(c, "socket.connected", s, H_TIMEOUT_MS);
    json_t *tls = json_object_get(con, "tls");
    EXPECT_TRUE(strcmp(jstr_or_empty(tls, "version"), "DTLSv1.2") == 0, "%s", jd(con));
    EXPECT_TRUE(json_is_true(json_object_get(tls, "verified")), "%s", jd(con));
    /* RFC 5764: 2 * (16-byte key + 14-byte salt) for AES128_CM_SHA1_80 */
    unsigned char *km = srtp_km(tls, "SRTP_AES128_CM_SHA1_80", 60);
    char hex[121];
    for (int i = 0; i < 60; i++)
        snprintf(hex + 2 * i, 3, "%02X", km[i]);
    free(km);
    if (!proc_wait_for(&g_srv, "Keying material: ", H_TIMEOUT_MS) ||
        !proc_wait_for(&g_srv, hex, H_TIMEOUT_MS)) {
        fprintf(stderr, "s_server output:\n%s\nexpected keying material %s\n", g_srv.buf, hex);
        fail();
    }
    EXPECT_TRUE(proc_wait_for(&g_srv, "SRTP_AES128_CM_SHA1_80", 1000), "%s", jd(con));

    /* Data both ways: s_server prints what it receives and sends what it reads from stdin. */
    json_decref(h_ok(c, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)s, "text",
                     "hello from sockd\n", "notify", 0));
    if (!proc_wait_for(&g_srv, "hello from sockd", H_TIMEOUT_MS)) {
        fprintf(stderr, "s_server output:\n%s\n", g_srv.buf);
        fail();
    }
    json_decref(h_ok(c, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)s, "length", 1000));
    static const char line[] = "hello from s_server\n";
    EXPECT_INT(write(g_srv.in, line, sizeof line - 1), (ssize_t)(sizeof line - 1), "write: %s",
               strerror(errno));
    json_t *p = ev(c, "socket.received", s, H_TIMEOUT_MS);
    size_t n = 0;
    unsigned char *got = h_unb64(jstr_or_empty(p, "data"), &n);
    EXPECT_TRUE(n == sizeof line - 1 && memcmp(got, line, n) == 0, "%s", jd(p));
    free(got);
    json_decref(p);

    /* shutdown: s_server sees our close_notify */
    json_decref(h_ok(c, "socket.shutdown", "{s:I}", "socket", (json_int_t)s));
    p = ev(c, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr_or_empty(p, "reason"), "normal") == 0, "%s", jd(p));
    json_decref(p);
    if (!proc_wait_for(&g_srv, "DONE", H_TIMEOUT_MS)) {
        fprintf(stderr, "s_server output:\n%s\n", g_srv.buf);
        fail();
    }
    json_decref(con);
    proc_stop(&g_srv);
    h_client_close(c);
    free(cert);
    free(key);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int
group_setup(void **state)
{
    (void)state;
    h_daemon_start(&D, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_stop(&D);
    return 0;
}

static int
t_cleanup(void **state)
{
    proc_stop(&g_srv);
    if (g_relay_on) {
        relay_stop(&g_relay);
        g_relay_on = 0;
    }
    if (g_d2.pid > 0)
        h_daemon_kill(&g_d2);
    if (g_dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
        if (system(cmd) != 0)
            fprintf(stderr, "cannot remove %s\n", g_dir);
        g_dir[0] = '\0';
    }
    return h_teardown(state);
}

#define T(f) cmocka_unit_test_teardown(f, t_cleanup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_dtls_pair_srtp),       T(test_dtls_mutual_many), T(test_dtls_verify_fails),
        T(test_dtls_retransmit),      T(test_dtls_coalesced),   T(test_dtls_close_handshake),
        T(test_dtls_daemon_shutdown), T(test_dtls_rpc_errors),  T(test_dtls_openssl_s_server),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
