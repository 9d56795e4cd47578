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
#include <arpa/inet.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "daemon.h"
#include "ident.h"
#include "keygen.h"
#include "sock.h"
#include "tls.h"

/* TLS contexts: the registry, the settings, and the SSL_CTX of each role built from them. */

static unsigned tlsctx_live;

struct tlsctx *
tlsctx_get(struct sock_owner *o, uint64_t id)
{
    for (struct tlsctx *t = o->ctxs; t != NULL; t = t->next)
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
tlsctx_owned(const struct sock_owner *o)
{
    unsigned n = 0;
    for (const struct tlsctx *t = o->ctxs; t != NULL; t = t->next)
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
tlsctx_cert_drop(struct tlsctx *t, struct tlsctx_cert *tc)
{
    tlsctx_refund(t, tc->cost);
    tlsctx_cert_free(tc);
}

int
tlsctx_charge(struct tlsctx *t, size_t n)
{
    struct ident_acct *a = t->ident->acct;
    size_t cap = sockd.conf.max_tls_memory_per_uid;
    if (n > 0 && (n > cap || a->tls > cap - n)) {
        errno = EDQUOT;
        return -1;
    }
    a->tls += n;
    t->cost += n;
    return 0;
}

size_t
tlsctx_text_cost(const char *text, size_t len)
{
    static const char begin[] = "-----BEGIN";
    size_t cost = len * 2;
    const char *p = text, *end = text + len, *q;
    while (p != NULL && (size_t)(end - p) >= sizeof begin - 1 &&
           (q = memmem(p, (size_t)(end - p), begin, sizeof begin - 1)) != NULL) {
        cost += TLSCTX_COST_BLOCK;
        p = q + sizeof begin - 1;
    }
    return cost;
}

void
tlsctx_refund(struct tlsctx *t, size_t n)
{
    t->ident->acct->tls -= n;
    t->cost -= n;
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
    free(t->ciphers);
    free(t->ciphersuites);
    sk_X509_CRL_pop_free(t->crls, X509_CRL_free);
    tlssess_flush(t);
    tlssni_free(t);
    tlsctx_refund(t, t->cost); /* what is left: the context itself, its CAs, CRLs, role certs */
    ident_unref(t->ident);
    free(t);
    tlsctx_live--;
}

struct tlsctx *
tlsctx_new(struct ident *who)
{
    struct tlsctx *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->ident = ident_ref(who);
    if (tlsctx_charge(t, TLSCTX_COST_BASE) < 0) {
        ident_unref(t->ident);
        free(t);
        errno = EDQUOT;
        return NULL;
    }
    t->id = daemon_handle();
    t->refs = 1;
    t->verify = 1;
    t->min_version = TLS1_2_VERSION;
    t->session_cache = 1;
    tlsctx_live++;
    return t;
}

void
tlsctx_attach(struct tlsctx *t, struct sock_owner *o)
{
    t->owner = o;
    t->next = o->ctxs;
    o->ctxs = t;
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
tlsctx_owner_gone(struct sock_owner *o)
{
    while (o->ctxs != NULL)
        tlsctx_destroy(o->ctxs);
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
tlsctx_store_add_pem(X509_STORE *st, const char *text, size_t len, int *crls, char *detail,
                     size_t dlen)
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
        *crls += in->crl != NULL;
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
    int crls = 0;
    if (file != NULL && tlsctx_store_add_pem(st, file, flen, &crls, detail, dlen) < 0) {
        X509_STORE_free(st);
        return -2;
    }
    /* CRLs in the CA file are checked as those of crl are */
    t->crl_check |= crls > 0;
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

/* ---- ciphers and revocation ----------------------------------------------------------------- */

/* Whether ctx offers a suite without authentication (aNULL) or without encryption (eNULL). */
static int
tlsctx_has_null(SSL_CTX *ctx)
{
    STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(cs); i++) {
        const SSL_CIPHER *c = sk_SSL_CIPHER_value(cs, i);
        if (SSL_CIPHER_get_auth_nid(c) == NID_auth_null ||
            SSL_CIPHER_get_cipher_nid(c) == NID_undef)
            return 1;
    }
    return 0;
}

/* Whether ctx offers the TLS 1.3 suite named name. */
static int
tlsctx_has_suite(SSL_CTX *ctx, const char *name)
{
    STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(cs); i++)
        if (strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(cs, i)), name) == 0)
            return 1;
    return 0;
}

/*
 * Check a cipher list item by item, as OpenSSL ignores names it does not know: each item that
 * adds suites (bare or after +) must select at least one on its own; one that removes them (!
 * or -) may match none here. "@STRENGTH" is allowed, "@SECLEVEL" is not (a client does not
 * lower the daemon's security level). The whole list must select a suite and none without
 * authentication or encryption. -1 with detail.
 */
static int
tlsctx_check_ciphers(SSL_CTX *scratch, const char *list, char *detail, size_t dlen)
{
    char copy[TLSCTX_CIPHERS_MAX + 1], *save = NULL;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *w = strtok_r(copy, ":, ;", &save); w != NULL; w = strtok_r(NULL, ":, ;", &save)) {
        const char *item = w + (*w == '+');
        if (strcmp(w, "@STRENGTH") == 0 || *w == '!' || *w == '-')
            continue;
        if (*w == '@') {
            snprintf(detail, dlen, "\"%s\": only @STRENGTH is allowed in ciphers", w);
            return -1;
        }
        if (SSL_CTX_set_cipher_list(scratch, item) != 1) {
            snprintf(detail, dlen,
                     "\"%s\" names no TLS 1.2 cipher suite this build offers (TLS 1.3 suites "
                     "go in ciphersuites)",
                     item);
            return -1;
        }
    }
    if (SSL_CTX_set_cipher_list(scratch, list) != 1) {
        snprintf(detail, dlen, "the list selects no cipher suite");
        return -1;
    }
    if (tlsctx_has_null(scratch)) {
        snprintf(detail, dlen,
                 "the list selects suites without authentication or encryption "
                 "(aNULL, eNULL)");
        return -1;
    }
    return 0;
}

/* Check a TLS 1.3 suite list: each name must be a suite OpenSSL knows. -1 with detail. */
static int
tlsctx_check_suites(SSL_CTX *scratch, const char *list, char *detail, size_t dlen)
{
    char copy[TLSCTX_CIPHERS_MAX + 1], *save = NULL;
    int n = 0;
    snprintf(copy, sizeof copy, "%s", list);
    for (char *w = strtok_r(copy, ":", &save); w != NULL; w = strtok_r(NULL, ":", &save), n++) {
        if (SSL_CTX_set_ciphersuites(scratch, w) != 1 || !tlsctx_has_suite(scratch, w)) {
            snprintf(detail, dlen,
                     "\"%s\" is not a TLS 1.3 cipher suite (such as TLS_AES_128_GCM_SHA256)", w);
            return -1;
        }
    }
    if (n == 0) {
        snprintf(detail, dlen, "the list names no cipher suite");
        return -1;
    }
    return 0;
}

int
tlsctx_set_ciphers(struct tlsctx *t, const char *ciphers, const char *suites, char *detail,
                   size_t dlen)
{
    SSL_CTX *scratch;
    char *c = NULL, *u = NULL;
    int rc = 0;

    for (int i = 0; i < 2; i++) {
        const char *v = i == 0 ? ciphers : suites;
        if (v != NULL && (v[0] == '\0' || strlen(v) > TLSCTX_CIPHERS_MAX)) {
            snprintf(detail, dlen, "the list must be 1 to %d bytes", TLSCTX_CIPHERS_MAX);
            return -1 - i;
        }
    }
    ERR_clear_error();
    if ((scratch = SSL_CTX_new(TLS_method())) == NULL) {
        tlsctx_errors(detail, dlen, "out of memory");
        return -1;
    }
    if (ciphers != NULL && tlsctx_check_ciphers(scratch, ciphers, detail, dlen) < 0)
        rc = -1;
    else if (suites != NULL && tlsctx_check_suites(scratch, suites, detail, dlen) < 0)
        rc = -2;
    else if ((ciphers != NULL && (c = strdup(ciphers)) == NULL) ||
             (suites != NULL && (u = strdup(suites)) == NULL))
        rc = -1, snprintf(detail, dlen, "out of memory");
    SSL_CTX_free(scratch);
    ERR_clear_error();
    if (rc < 0) {
        free(c);
        return rc;
    }
    free(t->ciphers);
    free(t->ciphersuites);
    t->ciphers = c;
    t->ciphersuites = u;
    return 0;
}

int
tlsctx_add_crls(struct tlsctx *t, const char *text, size_t len, char *detail, size_t dlen)
{
    BIO *b = len <= INT_MAX ? BIO_new_mem_buf(text, (int)len) : NULL;
    X509_CRL *crl;
    int n = 0;

    ERR_clear_error();
    if (b == NULL || (t->crls == NULL && (t->crls = sk_X509_CRL_new_null()) == NULL))
        goto fail;
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, tlsctx_no_pass, NULL)) != NULL) {
        if (!sk_X509_CRL_push(t->crls, crl)) {
            X509_CRL_free(crl);
            goto fail;
        }
        n++;
    }
    if (n == 0 || !tlsctx_pem_at_end())
        goto fail;
    ERR_clear_error();
    BIO_free(b);
    t->crl_check = 1;
    return 0;
fail:
    tlsctx_errors(detail, dlen, "no CRL in the PEM text");
    BIO_free(b);
    return -1;
}

/* Chain verification with the context's CRLs beside those of its store (sockd-protocol.7, TLS,
 * "Revocation"). */
static int
tlsctx_verify_chain(X509_STORE_CTX *xs, void *arg)
{
    const struct tlsctx *t = arg;
    if (t->crls != NULL)
        X509_STORE_CTX_set0_crls(xs, t->crls);
    return X509_verify_cert(xs);
}

int
tlsctx_serves(const struct tlsctx *t)
{
    return t != NULL && (t->certs[TLSCTX_SERVER].cert != NULL || t->nnamed > 0);
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
    /* RELEASE_BUFFERS: an idle connection gives back its 16 KiB read and write buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set1_cert_store(ctx, t->store);
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers != NULL ? t->ciphers : TLSCTX_CIPHERS) != 1 ||
        (t->ciphersuites != NULL && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1))
        goto fail;
    if (t->crl_check) {
        /* every certificate of the chain, each against its issuer's CRL (the CRLs stay off the
         * store, which may be the shared system one) */
        X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx),
                                    X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
        SSL_CTX_set_cert_verify_callback(ctx, tlsctx_verify_chain, t);
    }
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
        tlssess_setup(ctx, t);
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
        /* sessions a client resumes by id (TLS 1.2 without tickets): a bounded store */
        SSL_CTX_sess_set_cache_size(ctx, TLSSESS_MAX);
        tlssni_setup(ctx, t);
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
        /* sessions made with another client certificate or ALPN list are not offered again */
        tlssess_flush(t);
    }
    return 0;
}

int
tlsctx_set_cert(struct tlsctx *t, enum tlsctx_role role, X509 *cert, EVP_PKEY *key,
                STACK_OF(X509) * chain, size_t cost, char *detail, size_t dlen)
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
    t->certs[role].cost = cost;
    if (tlsctx_build(t, 1u << role, detail, dlen) < 0) {
        t->certs[role] = old;
        return -2;
    }
    tlsctx_cert_drop(t, &old);
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
    tlsctx_cert_drop(t, &old);
    return 0;
}

static const char *const tlsctx_keytypes[] = {
    [TLSCTX_KEY_EC_P256] = "ec-p256",
    [TLSCTX_KEY_ED25519] = "ed25519",
    [TLSCTX_KEY_RSA2048] = "rsa-2048",
    [TLSCTX_KEY_RSA3072] = "rsa-3072",
};

int
tlsctx_keytype(const char *text)
{
    for (size_t i = 0; i < sizeof tlsctx_keytypes / sizeof tlsctx_keytypes[0]; i++)
        if (strcmp(text, tlsctx_keytypes[i]) == 0)
            return (int)i;
    return -1;
}

int
tlsctx_dns_name_ok(const char *text, int wildcard)
{
    size_t label = 0, len = strlen(text);
    if (wildcard && strncmp(text, "*.", 2) == 0)
        text += 2, len -= 2;
    if (len == 0 || len > 253 || text[0] == '.' || text[len - 1] == '.')
        return 0;
    for (const char *p = text; *p != '\0'; p++) {
        if (*p == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

/* A new key of a type; NULL on failure (OpenSSL's error queue says why), or with *later set
 * when an RSA key is not ready yet (keygen.c). */
static EVP_PKEY *
tlsctx_keygen(enum tlsctx_keytype kt, int *later)
{
    *later = 0;
    switch (kt) {
    case TLSCTX_KEY_ED25519:
        return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    case TLSCTX_KEY_RSA2048:
        return keygen_rsa(2048, later);
    case TLSCTX_KEY_RSA3072:
        return keygen_rsa(3072, later);
    case TLSCTX_KEY_EC_P256:
    default:
        return EVP_EC_gen("P-256");
    }
}

/* Add the extension nid with value (OpenSSL's config syntax) to x; 1 on success. */
static int
tlsctx_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    int ok = e != NULL && X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

/* The subjectAltName value of g ("DNS:a,IP:127.0.0.1"); the names were checked by the caller
 * (no commas). -1 if it does not fit. */
static int
tlsctx_san_text(const struct tlsctx_gen *g, char *out, size_t n)
{
    size_t at = 0;
    out[0] = '\0';
    for (unsigned i = 0; i < g->nsans; i++) {
        unsigned char ip[16];
        int v6 = inet_pton(AF_INET6, g->sans[i], ip) == 1;
        int ip4 = inet_pton(AF_INET, g->sans[i], ip) == 1;
        int w = snprintf(out + at, n - at, "%s%s:%s", i > 0 ? "," : "", v6 || ip4 ? "IP" : "DNS",
                         g->sans[i]);
        if (w < 0 || (size_t)w >= n - at)
            return -1;
        at += (size_t)w;
    }
    return 0;
}

/*
 * A self-signed certificate for key k as g says: random serial, CN, valid from an hour ago for
 * g->days, subjectAltName, CA:FALSE, the extended key usage of role and key identifiers (what
 * strict verifiers such as Python's ask of a leaf they trust directly).
 */
static X509 *
tlsctx_selfsign(EVP_PKEY *k, enum tlsctx_role role, const struct tlsctx_gen *g)
{
    X509 *x = X509_new();
    BIGNUM *bn = BN_new();
    unsigned char rnd[16];
    X509_NAME *name;
    X509V3_CTX v3;
    char san[TLSCTX_SAN_MAX * 260];

    if (x == NULL || bn == NULL || RAND_bytes(rnd, sizeof rnd) != 1 ||
        tlsctx_san_text(g, san, sizeof san) < 0)
        goto fail;
    rnd[0] = (unsigned char)((rnd[0] & 0x7f) | 0x40); /* positive, full length */
    if (BN_bin2bn(rnd, sizeof rnd, bn) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL ||
        X509_set_version(x, X509_VERSION_3) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_time_adj_ex(X509_getm_notAfter(x), g->days, 0, NULL) == NULL ||
        X509_set_pubkey(x, k) != 1)
        goto fail;
    name = X509_get_subject_name(x);
    if (X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)g->common_name,
                                   -1, -1, 0) != 1 ||
        X509_set_issuer_name(x, name) != 1)
        goto fail;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    if (!tlsctx_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") ||
        !tlsctx_ext(x, &v3, NID_ext_key_usage,
                    role == TLSCTX_SERVER ? "serverAuth" : "clientAuth") ||
        !tlsctx_ext(x, &v3, NID_subject_key_identifier, "hash") ||
        !tlsctx_ext(x, &v3, NID_authority_key_identifier, "keyid:always") ||
        (san[0] != '\0' && !tlsctx_ext(x, &v3, NID_subject_alt_name, san)))
        goto fail;
    /* Ed25519 signs the whole message: no separate digest */
    if (X509_sign(x, k, g->key == TLSCTX_KEY_ED25519 ? NULL : EVP_sha256()) <= 0)
        goto fail;
    BN_free(bn);
    return x;
fail:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

int
tlsctx_generate(struct tlsctx *t, enum tlsctx_role role, const struct tlsctx_gen *g, size_t cost,
                char *detail, size_t dlen)
{
    EVP_PKEY *k;
    X509 *x = NULL;
    int later;
    ERR_clear_error();
    k = tlsctx_keygen(g->key, &later);
    if (k == NULL && later) {
        snprintf(detail, dlen,
                 "no %s key is ready yet: RSA keys are made one at a time, off "
                 "the loop; try again in a few seconds",
                 tlsctx_keytypes[g->key]);
        return -2;
    }
    if (k != NULL)
        x = tlsctx_selfsign(k, role, g);
    if (x == NULL) {
        tlsctx_errors(detail, dlen, "cannot make the certificate");
        EVP_PKEY_free(k);
        return -1;
    }
    if (tlsctx_set_cert(t, role, x, k, NULL, cost, detail, dlen) < 0) {
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
