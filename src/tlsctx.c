#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ctl.h"
#include "daemon.h"
#include "tls.h"

/* TLS contexts: the registry, the settings, and the SSL_CTX of each role built from them. */

static unsigned tlsctx_live;

struct tlsctx *
tlsctx_get(struct client *c, uint64_t id)
{
    for (struct tlsctx *t = c->ctxs; t != NULL; t = t->next)
        if (t->id == id)
            return t;
    return NULL;
}

unsigned
tlsctx_count(void)
{
    return tlsctx_live;
}

unsigned
tlsctx_owned(const struct client *c)
{
    unsigned n = 0;
    for (const struct tlsctx *t = c->ctxs; t != NULL; t = t->next)
        n++;
    return n;
}

void
tlsctx_ref(struct tlsctx *t)
{
    t->refs++;
}

static void
tlsctx_cert_free(struct tlsctx_cert *tc)
{
    X509_free(tc->cert);
    EVP_PKEY_free(tc->key);
    sk_X509_pop_free(tc->chain, X509_free);
    memset(tc, 0, sizeof *tc);
}

void
tlsctx_unref(struct tlsctx *t)
{
    if (--t->refs > 0)
        return;
    SSL_CTX_free(t->client_ctx);
    SSL_CTX_free(t->server_ctx);
    X509_STORE_free(t->store);
    free(t->alpn);
    tlsctx_cert_free(&t->certs[TLSCTX_SERVER]);
    tlsctx_cert_free(&t->certs[TLSCTX_CLIENT]);
    free(t);
    tlsctx_live--;
}

struct tlsctx *
tlsctx_new(void)
{
    struct tlsctx *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->id = daemon_handle();
    t->refs = 1;
    t->verify = 1;
    t->min_version = TLS1_2_VERSION;
    tlsctx_live++;
    return t;
}

void
tlsctx_attach(struct tlsctx *t, struct client *c)
{
    t->owner = c;
    t->next = c->ctxs;
    c->ctxs = t;
}

void
tlsctx_destroy(struct tlsctx *t)
{
    if (t->owner != NULL) {
        struct tlsctx **pp = &t->owner->ctxs;
        while (*pp != NULL && *pp != t)
            pp = &(*pp)->next;
        if (*pp == t)
            *pp = t->next;
        t->owner = NULL;
        t->next = NULL;
    }
    tlsctx_unref(t);
}

void
tlsctx_client_gone(struct client *c)
{
    while (c->ctxs != NULL)
        tlsctx_destroy(c->ctxs);
}

/* ---- OpenSSL errors and PEM --------------------------------------------------------------- */

void
tlsctx_errors(char *detail, size_t dlen, const char *fallback)
{
    size_t used = 0;
    int n = 0;
    unsigned long e;

    if (dlen == 0) {
        ERR_clear_error();
        return;
    }
    detail[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        char one[160];
        const char *r = ERR_reason_error_string(e);
        if (ERR_SYSTEM_ERROR(e))
            snprintf(one, sizeof one, "%s", strerror(ERR_GET_REASON(e)));
        else if (r != NULL)
            snprintf(one, sizeof one, "%s", r);
        else
            ERR_error_string_n(e, one, sizeof one);
        if (n >= 4 || strstr(detail, one) != NULL)
            continue;
        int w = snprintf(detail + used, dlen - used, "%s%s", n > 0 ? "; " : "", one);
        if (w > 0)
            used = used + (size_t)w < dlen ? used + (size_t)w : dlen - 1;
        n++;
    }
    if (n == 0)
        snprintf(detail, dlen, "%s", fallback);
}

/* Passphrase callback that never gives one: encrypted keys fail instead of prompting. */
static int
tlsctx_no_pass(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

/* True when the last OpenSSL error only says the PEM text had no further block. */
static int
tlsctx_pem_at_end(void)
{
    unsigned long e = ERR_peek_last_error();
    return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

STACK_OF(X509) * tlsctx_pem_certs(const char *pem, EVP_PKEY **key, char *detail, size_t dlen)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x;

    if (key != NULL)
        *key = NULL;
    ERR_clear_error();
    if (certs == NULL || b == NULL)
        goto fail;
    while ((x = PEM_read_bio_X509(b, NULL, tlsctx_no_pass, NULL)) != NULL) {
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            goto fail;
        }
    }
    if (sk_X509_num(certs) == 0 || !tlsctx_pem_at_end())
        goto fail;
    ERR_clear_error();
    if (key != NULL) {
        BIO_free(b);
        b = BIO_new_mem_buf(pem, -1);
        if (b == NULL)
            goto fail;
        *key = PEM_read_bio_PrivateKey(b, NULL, tlsctx_no_pass, NULL);
        ERR_clear_error();
    }
    BIO_free(b);
    return certs;
fail:
    tlsctx_errors(detail, dlen, "no certificate in the PEM text");
    BIO_free(b);
    sk_X509_pop_free(certs, X509_free);
    return NULL;
}

EVP_PKEY *
tlsctx_pem_key(const char *pem, char *detail, size_t dlen)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = NULL;
    ERR_clear_error();
    if (b != NULL)
        k = PEM_read_bio_PrivateKey(b, NULL, tlsctx_no_pass, NULL);
    BIO_free(b);
    if (k == NULL && strstr(pem, "PRIVATE KEY-----") == NULL) {
        ERR_clear_error();
        snprintf(detail, dlen, "no private key in the PEM text");
    } else if (k == NULL) {
        /* OpenSSL's decoders only say "unsupported" for a key block they cannot read. */
        char why[256];
        tlsctx_errors(why, sizeof why, "unreadable private key");
        snprintf(detail, dlen,
                 "cannot read the private key (damaged, encrypted or of an "
                 "unsupported type): %s",
                 why);
    }
    ERR_clear_error();
    return k;
}

static const struct {
    const char *name;
    const EVP_MD *(*md)(void);
} tlsctx_mds[] = {
    {"sha-1", EVP_sha1},
    {"sha-256", EVP_sha256},
    {"sha-384", EVP_sha384},
    {"sha-512", EVP_sha512},
};

const EVP_MD *
tlsctx_md(const char *name)
{
    for (size_t i = 0; i < sizeof tlsctx_mds / sizeof tlsctx_mds[0]; i++)
        if (strcasecmp(name, tlsctx_mds[i].name) == 0)
            return tlsctx_mds[i].md();
    return NULL;
}

int
tlsctx_fingerprint(X509 *x, const char *md_name, char *out, size_t n)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    const EVP_MD *m = tlsctx_md(md_name);
    size_t need;
    if (m == NULL || x == NULL || X509_digest(x, m, md, &len) != 1 || len == 0)
        return -1;
    need = strlen(md_name) + 1 + (size_t)len * 3;
    if (need > n)
        return -1;
    size_t at = 0;
    for (const char *p = md_name; *p != '\0'; p++)
        out[at++] = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    out[at++] = ' ';
    for (unsigned i = 0; i < len; i++) {
        static const char hex[] = "0123456789ABCDEF";
        out[at++] = hex[md[i] >> 4];
        out[at++] = hex[md[i] & 15];
        out[at++] = i + 1 < len ? ':' : '\0';
    }
    return 0;
}

/* ---- settings ------------------------------------------------------------------------------ */

/*
 * The system certificate store, loaded once and shared by every context that uses it: loading
 * it costs tens of milliseconds and most of a megabyte, too much to repeat per context.
 *
 * It is the default CA file and hashed CA directory (SSL_CERT_FILE and SSL_CERT_DIR honoured),
 * as X509_STORE_set_default_paths sets up, without the OSSL_STORE lookup that OpenSSL 3 adds
 * there: that one reads the whole certificate directory on every lookup that misses, i.e. on
 * every handshake with a peer whose issuer is not a system CA (8 in flight against a
 * self-signed server: a third of the client's CPU in readdir). The hashed directory finds the
 * same certificates by name.
 */
static X509_STORE *tlsctx_system_store;

static int
tlsctx_default_paths(X509_STORE *st)
{
    X509_LOOKUP *file = X509_STORE_add_lookup(st, X509_LOOKUP_file());
    X509_LOOKUP *dir = X509_STORE_add_lookup(st, X509_LOOKUP_hash_dir());
    if (file == NULL || dir == NULL)
        return -1;
    /* a missing default file or directory is no error, as for set_default_paths; a FIFO or
     * device named by SSL_CERT_FILE is skipped rather than read on the loop */
    const char *env = getenv(X509_get_default_cert_file_env());
    struct stat sb;
    if (stat(env != NULL ? env : X509_get_default_cert_file(), &sb) < 0 || S_ISREG(sb.st_mode))
        (void)X509_LOOKUP_load_file(file, NULL, X509_FILETYPE_DEFAULT);
    (void)X509_LOOKUP_add_dir(dir, NULL, X509_FILETYPE_DEFAULT);
    ERR_clear_error();
    return 0;
}

static X509_STORE *
tlsctx_system(char *detail, size_t dlen)
{
    if (tlsctx_system_store == NULL) {
        X509_STORE *st = X509_STORE_new();
        if (st == NULL || tlsctx_default_paths(st) < 0) {
            tlsctx_errors(detail, dlen, "cannot use the system certificate store");
            X509_STORE_free(st);
            return NULL;
        }
        tlsctx_system_store = st;
    }
    X509_STORE_up_ref(tlsctx_system_store);
    return tlsctx_system_store;
}

/*
 * The certificates and CRLs of a CA file's text into st, as X509_STORE_load_file reads a file
 * but from memory: the daemon opens no file here (the caller read it as the client). -1 with
 * detail when there is nothing usable.
 */
static int
tlsctx_store_add_pem(X509_STORE *st, const char *text, size_t len, char *detail, size_t dlen)
{
    BIO *b = len <= INT_MAX ? BIO_new_mem_buf(text, (int)len) : NULL;
    STACK_OF(X509_INFO) *infos = b != NULL ? PEM_X509_INFO_read_bio(b, NULL, NULL, NULL) : NULL;
    int count = 0, bad = infos == NULL;
    BIO_free(b);
    for (int i = 0; !bad && i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *in = sk_X509_INFO_value(infos, i);
        if ((in->x509 != NULL && X509_STORE_add_cert(st, in->x509) != 1) ||
            (in->crl != NULL && X509_STORE_add_crl(st, in->crl) != 1))
            bad = 1;
        count += (in->x509 != NULL) + (in->crl != NULL);
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    if (bad || count == 0) {
        tlsctx_errors(detail, dlen, "no certificate or CRL in the CA file");
        return -1;
    }
    return 0;
}

int
tlsctx_set_ca(struct tlsctx *t, const char *pem, const char *file, size_t flen, char *detail,
              size_t dlen)
{
    ERR_clear_error();
    if (pem == NULL && file == NULL) {
        X509_STORE *sys = tlsctx_system(detail, dlen);
        if (sys == NULL)
            return -2;
        ERR_clear_error();
        X509_STORE_free(t->store);
        t->store = sys;
        return 0;
    }
    X509_STORE *st = X509_STORE_new();
    if (st == NULL) {
        tlsctx_errors(detail, dlen, "out of memory");
        return -2;
    }
    if (pem != NULL) {
        STACK_OF(X509) *certs = tlsctx_pem_certs(pem, NULL, detail, dlen);
        if (certs == NULL) {
            X509_STORE_free(st);
            return -1;
        }
        for (int i = 0; i < sk_X509_num(certs); i++) {
            if (X509_STORE_add_cert(st, sk_X509_value(certs, i)) != 1) {
                tlsctx_errors(detail, dlen, "cannot add the CA certificate");
                sk_X509_pop_free(certs, X509_free);
                X509_STORE_free(st);
                return -1;
            }
        }
        sk_X509_pop_free(certs, X509_free);
    }
    if (file != NULL && tlsctx_store_add_pem(st, file, flen, detail, dlen) < 0) {
        X509_STORE_free(st);
        return -2;
    }
    ERR_clear_error();
    X509_STORE_free(t->store);
    t->store = st;
    return 0;
}

int
tlsctx_set_alpn(struct tlsctx *t, const unsigned char *wire, unsigned len)
{
    unsigned char *copy = NULL;
    if (len > 0) {
        copy = malloc(len);
        if (copy == NULL)
            return -1;
        memcpy(copy, wire, len);
    }
    free(t->alpn);
    t->alpn = copy;
    t->alpn_len = len;
    return 0;
}

/* Server side ALPN: the first protocol of the context's list that the client offers. With no
 * overlap the handshake fails (no_application_protocol alert). */
static int
tlsctx_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    const struct tlsctx *t = arg;
    (void)ssl;
    if (t->alpn == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (unsigned i = 0; i < t->alpn_len && i + 1 + t->alpn[i] <= t->alpn_len;
         i += 1 + t->alpn[i]) {
        unsigned sl = t->alpn[i];
        for (unsigned j = 0; j < inlen && j + 1 + in[j] <= inlen; j += 1 + in[j]) {
            if (in[j] == sl && memcmp(in + j + 1, t->alpn + i + 1, sl) == 0) {
                *out = in + j + 1;
                *outlen = in[j];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* A fresh SSL_CTX for one role from the context's settings; NULL with detail. */
static SSL_CTX *
tlsctx_make(struct tlsctx *t, enum tlsctx_role role, char *detail, size_t dlen)
{
    const SSL_METHOD *m;
    const struct tlsctx_cert *tc = &t->certs[role];
    SSL_CTX *ctx;

    if (t->store == NULL && tlsctx_set_ca(t, NULL, NULL, 0, detail, dlen) < 0)
        return NULL;
    if (t->dtls)
        m = role == TLSCTX_SERVER ? DTLS_server_method() : DTLS_client_method();
    else
        m = role == TLSCTX_SERVER ? TLS_server_method() : TLS_client_method();
    ERR_clear_error();
    ctx = SSL_CTX_new(m);
    if (ctx == NULL)
        goto fail;
    if (SSL_CTX_set_min_proto_version(ctx, t->dtls ? DTLS1_2_VERSION : t->min_version) != 1)
        goto fail;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set1_cert_store(ctx, t->store);
    if (tc->cert != NULL) {
        if (SSL_CTX_use_certificate(ctx, tc->cert) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, tc->key) != 1 ||
            (tc->chain != NULL && SSL_CTX_set1_chain(ctx, tc->chain) != 1) ||
            SSL_CTX_check_private_key(ctx) != 1)
            goto fail;
    }
    if (role == TLSCTX_CLIENT) {
        SSL_CTX_set_verify(ctx, t->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
        if (t->alpn != NULL && SSL_CTX_set_alpn_protos(ctx, t->alpn, t->alpn_len) != 0)
            goto fail;
    } else {
        int mode = SSL_VERIFY_NONE;
        if (t->verify_client > 0)
            mode = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE |
                   (t->verify_client > 1 ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        SSL_CTX_set_verify(ctx, mode, NULL);
        /* Sessions resume only within the context that made them. */
        if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)&t->id, sizeof t->id) != 1)
            goto fail;
        SSL_CTX_set_alpn_select_cb(ctx, tlsctx_alpn_select, t);
    }
    if (t->dtls && t->srtp && SSL_CTX_set_tlsext_use_srtp(ctx, TLSCTX_SRTP_PROFILES) != 0)
        goto fail;
    return ctx;
fail:
    tlsctx_errors(detail, dlen, "cannot set up the TLS context");
    SSL_CTX_free(ctx);
    return NULL;
}

int
tlsctx_build(struct tlsctx *t, unsigned roles, char *detail, size_t dlen)
{
    SSL_CTX *fresh[2] = {NULL, NULL};
    for (int r = 0; r < 2; r++) {
        if (!(roles & (1u << r)))
            continue;
        fresh[r] = tlsctx_make(t, (enum tlsctx_role)r, detail, dlen);
        if (fresh[r] == NULL) {
            SSL_CTX_free(fresh[0]);
            return -1;
        }
    }
    /* Sockets already using the old SSL_CTX hold their own reference to it. */
    if (fresh[TLSCTX_SERVER] != NULL) {
        SSL_CTX_free(t->server_ctx);
        t->server_ctx = fresh[TLSCTX_SERVER];
    }
    if (fresh[TLSCTX_CLIENT] != NULL) {
        SSL_CTX_free(t->client_ctx);
        t->client_ctx = fresh[TLSCTX_CLIENT];
    }
    return 0;
}

int
tlsctx_set_cert(struct tlsctx *t, enum tlsctx_role role, X509 *cert, EVP_PKEY *key,
                STACK_OF(X509) * chain, char *detail, size_t dlen)
{
    struct tlsctx_cert old = t->certs[role];
    ERR_clear_error();
    if (X509_check_private_key(cert, key) != 1) {
        tlsctx_errors(detail, dlen, "the key does not match the certificate");
        return -1;
    }
    t->certs[role].cert = cert;
    t->certs[role].key = key;
    t->certs[role].chain = chain;
    if (tlsctx_build(t, 1u << role, detail, dlen) < 0) {
        t->certs[role] = old;
        return -2;
    }
    tlsctx_cert_free(&old);
    return 0;
}

int
tlsctx_clear_cert(struct tlsctx *t, enum tlsctx_role role, char *detail, size_t dlen)
{
    struct tlsctx_cert old = t->certs[role];
    memset(&t->certs[role], 0, sizeof t->certs[role]);
    if (tlsctx_build(t, 1u << role, detail, dlen) < 0) {
        t->certs[role] = old;
        return -1;
    }
    tlsctx_cert_free(&old);
    return 0;
}

/* A self-signed certificate for key k: random serial, CN, valid from an hour ago for days. */
static X509 *
tlsctx_selfsign(EVP_PKEY *k, const char *cn, int days)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    unsigned char rnd[16];
    X509_NAME *name;

    if (x == NULL || bn == NULL || RAND_bytes(rnd, sizeof rnd) != 1)
        goto fail;
    rnd[0] = (unsigned char)((rnd[0] & 0x7f) | 0x40); /* positive, full length */
    if (BN_bin2bn(rnd, sizeof rnd, bn) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_set_version(x, X509_VERSION_3) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL) == NULL ||
        X509_set_pubkey(x, k) != 1)
        goto fail;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_issuer_name(x, name) != 1 || X509_sign(x, k, EVP_sha256()) <= 0)
        goto fail;
    BN_free(bn);
    return x;
fail:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

int
tlsctx_generate(struct tlsctx *t, enum tlsctx_role role, const char *common_name, int days,
                char *detail, size_t dlen)
{
    EVP_PKEY *k;
    X509 *x = NULL;
    ERR_clear_error();
    k = EVP_EC_gen("P-256");
    if (k != NULL)
        x = tlsctx_selfsign(k, common_name, days);
    if (x == NULL) {
        tlsctx_errors(detail, dlen, "cannot make the certificate");
        EVP_PKEY_free(k);
        return -1;
    }
    if (tlsctx_set_cert(t, role, x, k, NULL, detail, dlen) < 0) {
        X509_free(x);
        EVP_PKEY_free(k);
        return -1;
    }
    return 0;
}

int
tlsctx_set_dtls(struct tlsctx *t, int srtp, char *detail, size_t dlen)
{
    int old_dtls = t->dtls, old_srtp = t->srtp;
    if (t->min_version > TLS1_2_VERSION) {
        snprintf(detail, dlen, "DTLS 1.3 is not supported: the context's min_version is tls1.3");
        return -1;
    }
    t->dtls = 1;
    t->srtp = srtp ? 1 : 0;
    if (tlsctx_build(t, 3, detail, dlen) < 0) {
        t->dtls = old_dtls;
        t->srtp = old_srtp;
        return -1;
    }
    return 0;
}

/* The fd of a tlsctx_sock_bio. */
static int
tlsctx_bio_fd(BIO *b)
{
    return (int)(intptr_t)BIO_get_data(b);
}

/* Read as OpenSSL's socket BIO does, with MSG_DONTWAIT: retry flags on EAGAIN, EOF on 0. */
static int
tlsctx_bio_read(BIO *b, char *out, int outl)
{
    if (out == NULL || outl <= 0)
        return 0;
    errno = 0;
    int r = (int)recv(tlsctx_bio_fd(b), out, (size_t)outl, MSG_DONTWAIT);
    BIO_clear_retry_flags(b);
    if (r <= 0) {
        if (BIO_sock_should_retry(r))
            BIO_set_retry_read(b);
        else if (r == 0)
            BIO_set_flags(b, BIO_FLAGS_IN_EOF);
    }
    return r;
}

/* Write as OpenSSL's socket BIO does, with MSG_DONTWAIT (and no SIGPIPE). */
static int
tlsctx_bio_write(BIO *b, const char *in, int inl)
{
    errno = 0;
    int r = (int)send(tlsctx_bio_fd(b), in, (size_t)inl, MSG_DONTWAIT | MSG_NOSIGNAL);
    BIO_clear_retry_flags(b);
    if (r <= 0 && BIO_sock_should_retry(r))
        BIO_set_retry_write(b);
    return r;
}

/* The controls the SSL engine asks of a socket BIO; the rest are unsupported (0). */
static long
tlsctx_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    switch (cmd) {
    case BIO_C_GET_FD:
        if (ptr != NULL)
            *(int *)ptr = tlsctx_bio_fd(b);
        return tlsctx_bio_fd(b);
    case BIO_CTRL_EOF:
        return BIO_test_flags(b, BIO_FLAGS_IN_EOF) != 0;
    case BIO_CTRL_GET_CLOSE:
        return BIO_NOCLOSE;
    case BIO_CTRL_SET_CLOSE:
    case BIO_CTRL_DUP:
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

BIO *
tlsctx_sock_bio(int fd)
{
    /* module-local: one method table for the daemon's lifetime, made on first use */
    static BIO_METHOD *meth;
    if (meth == NULL) {
        BIO_METHOD *m = BIO_meth_new(
            BIO_get_new_index() | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "sockd socket");
        if (m == NULL || BIO_meth_set_read(m, tlsctx_bio_read) != 1 ||
            BIO_meth_set_write(m, tlsctx_bio_write) != 1 ||
            BIO_meth_set_ctrl(m, tlsctx_bio_ctrl) != 1) {
            BIO_meth_free(m);
            return NULL;
        }
        meth = m;
    }
    BIO *b = BIO_new(meth);
    if (b == NULL)
        return NULL;
    BIO_set_data(b, (void *)(intptr_t)fd);
    BIO_set_init(b, 1);
    return b;
}
