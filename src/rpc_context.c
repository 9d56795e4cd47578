#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>

#include <sockd/protocol.h>

#include "ctl.h"
#include "daemon.h"
#include "fsid.h"
#include "ident.h"
#include "policy.h"
#include "rpc.h"
#include "tls.h"

/* context.* methods: TLS/DTLS settings shared by sockets (sockd-protocol.7, METHODS and TLS). */

#define CONTEXT_DETAIL 400
/* The largest private key a context takes (RSA, DSA): signing with more is too slow for the loop.
 */
#define CONTEXT_KEY_BITS_MAX 4096

/* -32602 naming param, with OpenSSL's explanation in data.detail. */
static int
context_fail_detail(struct rpc_call *call, const char *param, const char *what, const char *detail)
{
    json_t *d = json_string(detail);
    rpc_fail_param(call, param, "%s: %s", what, detail);
    json_object_set_new(call->err_data, "detail", d != NULL ? d : json_string("(not UTF-8)"));
    return -1;
}

/* An ALPN list param (array of 1..255-byte strings) in wire form (malloc'ed, NULL if empty). */
static int
context_alpn_wire(struct rpc_call *call, const char *param, unsigned char **out, unsigned *lenp)
{
    json_t *list = rpc_get(call, param), *v;
    size_t i, total = 0;
    unsigned char *w;
    char detail[128];

    *out = NULL;
    *lenp = 0;
    json_array_foreach(list, i, v)
    {
        size_t n = json_string_length(v);
        if (!json_is_string(v)) {
            snprintf(detail, sizeof detail, "protocol %zu is not a string", i);
            return context_fail_detail(call, param, "bad ALPN list", detail);
        }
        if (n == 0 || n > 255) {
            snprintf(detail, sizeof detail, "protocol %zu is %zu bytes long; 1..255 allowed", i, n);
            return context_fail_detail(call, param, "bad ALPN list", detail);
        }
        total += 1 + n;
    }
    if (total > 65535)
        return context_fail_detail(call, param, "bad ALPN list",
                                   "the list is longer than 65535 bytes");
    if (total == 0)
        return 0;
    w = malloc(total);
    if (w == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    size_t at = 0;
    json_array_foreach(list, i, v)
    {
        size_t n = json_string_length(v);
        w[at++] = (unsigned char)n;
        memcpy(w + at, json_string_value(v), n);
        at += n;
    }
    *out = w;
    *lenp = (unsigned)total;
    return 0;
}

/* A role param ("server" default, or "client"); -1 after -32602. */
static int
context_role(struct rpc_call *call, int required, enum tlsctx_role *role)
{
    const char *r = rpc_str(call, "role");
    if (r == NULL && !required) {
        *role = TLSCTX_SERVER;
        return 0;
    }
    if (r != NULL && strcmp(r, "server") == 0)
        *role = TLSCTX_SERVER;
    else if (r != NULL && strcmp(r, "client") == 0)
        *role = TLSCTX_CLIENT;
    else
        return rpc_fail_param(call, "role", "role must be \"server\" or \"client\"");
    return 0;
}

/* {fingerprint} of a role's certificate as the result. */
static int
context_fp_result(struct rpc_call *call, struct tlsctx *t, enum tlsctx_role role, const char *alg)
{
    char fp[TLSCTX_FP_MAX];
    if (tlsctx_fingerprint(t->certs[role].cert, alg, fp, sizeof fp) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot compute the fingerprint");
    call->result = json_pack("{s:s}", "fingerprint", fp);
    return 0;
}

/*
 * The content of a file param (ca_file, crl_file) (malloc'ed into *text, NULL when the param is
 * absent), read with the client's credentials and never blocking: the file must be a regular
 * file the client itself may read, of at most cap bytes. -1 after -32602 naming the param.
 */
static int
context_read_file(struct rpc_call *call, const char *param, const char *what, size_t cap,
                  char **text, size_t *len)
{
    const char *path = rpc_str(call, param);
    struct policy_who who;
    if (path == NULL)
        return 0;
    ident_who(call->client->owner.ident, &who);
    if ((*text = fsid_read_file(&who, path, cap, len)) != NULL)
        return 0;
    return context_fail_detail(call, param, what, fsid_read_error(errno));
}

/* Ciphers, CRLs (crl, crl_file) and the session cache of context.create into t. -1 after an
 * error response. */
static int
context_create_trust(struct rpc_call *call, struct tlsctx *t)
{
    const char *crl = rpc_str(call, "crl");
    char detail[CONTEXT_DETAIL], *file = NULL;
    size_t flen = 0, clen = crl != NULL ? strlen(crl) : 0;
    int rc;

    t->session_cache = rpc_bool(call, "session_cache", 1);
    rc = tlsctx_set_ciphers(t, rpc_str(call, "ciphers"), rpc_str(call, "ciphersuites"), detail,
                            sizeof detail);
    if (rc < 0)
        return context_fail_detail(call, rc == -1 ? "ciphers" : "ciphersuites",
                                   rc == -1 ? "bad cipher list" : "bad TLS 1.3 cipher suites",
                                   detail);
    if (clen > TLSCTX_CRL_MAX)
        return rpc_fail_param(call, "crl", "CRLs are limited to %u bytes", TLSCTX_CRL_MAX);
    if (tlsctx_charge(t, tlsctx_text_cost(crl, clen)) < 0)
        return rpc_fail_limit(call, "max-tls-memory-per-uid");
    if (crl != NULL && tlsctx_add_crls(t, crl, clen, detail, sizeof detail) < 0)
        return context_fail_detail(call, "crl", "bad CRL PEM", detail);
    if (context_read_file(call, "crl_file", "cannot load the CRL file", TLSCTX_CRL_MAX - clen,
                          &file, &flen) < 0)
        return -1;
    if (tlsctx_charge(t, tlsctx_text_cost(file, flen)) < 0) {
        free(file);
        return rpc_fail_limit(call, "max-tls-memory-per-uid");
    }
    rc = file != NULL ? tlsctx_add_crls(t, file, flen, detail, sizeof detail) : 0;
    free(file);
    if (rc < 0)
        return context_fail_detail(call, "crl_file", "cannot load the CRL file", detail);
    return 0;
}

/* context.create: settings, trust anchors and both SSL_CTXs; the handle is the result. */
static int
context_create(struct rpc_call *call)
{
    const char *mv = rpc_str(call, "min_version"), *vc = rpc_str(call, "verify_client");
    int minv = TLS1_2_VERSION, vcl = 0, dtls = rpc_bool(call, "dtls", 0);
    int srtp = rpc_bool(call, "srtp", 0), rc;
    unsigned char *wire = NULL;
    char *file = NULL;
    size_t flen = 0;
    unsigned wlen = 0;
    char detail[CONTEXT_DETAIL];
    struct tlsctx *t;

    if (mv != NULL && strcmp(mv, "tls1.3") == 0)
        minv = TLS1_3_VERSION;
    else if (mv != NULL && strcmp(mv, "tls1.2") != 0)
        return rpc_fail_param(call, "min_version", "min_version must be \"tls1.2\" or \"tls1.3\"");
    if (vc == NULL || strcmp(vc, "none") == 0)
        vcl = 0;
    else if (strcmp(vc, "optional") == 0)
        vcl = 1;
    else if (strcmp(vc, "require") == 0)
        vcl = 2;
    else
        return rpc_fail_param(call, "verify_client",
                              "verify_client must be \"none\", \"optional\" or \"require\"");
    if (srtp && !dtls)
        return rpc_fail_param(call, "srtp", "srtp needs dtls");
    if (dtls && minv == TLS1_3_VERSION)
        return rpc_fail_param(call, "min_version", "DTLS 1.3 is not supported");
    if (tlsctx_owned(&call->client->owner) >= sockd.conf.max_sockets_per_client)
        return rpc_fail_limit(call, "max-sockets-per-client");
    if (rpc_get(call, "alpn") != NULL && context_alpn_wire(call, "alpn", &wire, &wlen) < 0)
        return -1;
    t = tlsctx_new(call->client->owner.ident);
    if (t == NULL) {
        free(wire);
        return errno == EDQUOT ? rpc_fail_limit(call, "max-tls-memory-per-uid")
                               : rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    t->verify = rpc_bool(call, "verify", 1);
    t->verify_client = vcl;
    t->min_version = minv;
    t->dtls = dtls;
    t->srtp = srtp;
    t->alpn = wire;
    t->alpn_len = wlen;
    if (context_create_trust(call, t) < 0 ||
        context_read_file(call, "ca_file", "cannot load the CA file", FSID_FILE_MAX, &file, &flen) <
            0) {
        tlsctx_unref(t);
        return -1;
    }
    const char *ca = rpc_str(call, "ca");
    if (tlsctx_charge(t, tlsctx_text_cost(ca, ca != NULL ? strlen(ca) : 0) +
                             tlsctx_text_cost(file, flen)) < 0) {
        free(file);
        tlsctx_unref(t);
        return rpc_fail_limit(call, "max-tls-memory-per-uid");
    }
    rc = tlsctx_set_ca(t, ca, file, flen, detail, sizeof detail);
    free(file);
    if (rc < 0) {
        tlsctx_unref(t);
        return rc == -1 ? context_fail_detail(call, "ca", "bad CA PEM", detail)
                        : context_fail_detail(call, "ca_file", "cannot load the CA file", detail);
    }
    if (tlsctx_build(t, 3, detail, sizeof detail) < 0) {
        tlsctx_unref(t);
        rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot set up the context: %s", detail);
        json_object_set_new(call->err_data, "detail", json_string(detail));
        return -1;
    }
    tlsctx_attach(t, &call->client->owner);
    call->result = json_pack("{s:I}", "context", (json_int_t)t->id);
    return 0;
}

/* The server_names param (NULL when absent) checked into names[] (borrowed strings), *n of them.
 * -1 after -32602. */
static int
context_server_names(struct rpc_call *call, const char **names, unsigned *n)
{
    json_t *list = rpc_get(call, "server_names"), *v;
    size_t i;

    *n = 0;
    if (list == NULL)
        return 0;
    if (json_array_size(list) == 0 || json_array_size(list) > TLSCTX_NAMES_MAX)
        return rpc_fail_param(call, "server_names", "server_names must list 1 to %d names",
                              TLSCTX_NAMES_MAX);
    json_array_foreach(list, i, v)
    {
        if (!json_is_string(v) || !tlsctx_dns_name_ok(json_string_value(v), 1))
            return rpc_fail_param(call, "server_names",
                                  "server name %zu is not a DNS name (or \"*.\" and a DNS name)",
                                  i);
        names[(*n)++] = json_string_value(v);
    }
    return 0;
}

/* context_set_cert once cost is charged: parse, check and install (cost goes with the
 * certificate). -1 after an error response. */
static int
context_install_cert(struct rpc_call *call, enum tlsctx_role role, const char *const *names,
                     unsigned nnames, size_t cost)
{
    struct tlsctx *t = call->ctx;
    const char *kp = rpc_str(call, "key"), *cp = rpc_str(call, "chain");
    STACK_OF(X509) * certs, *extra;
    EVP_PKEY *key = NULL;
    X509 *leaf;
    char detail[CONTEXT_DETAIL];
    int rc;

    certs =
        tlsctx_pem_certs(rpc_str(call, "cert"), kp == NULL ? &key : NULL, detail, sizeof detail);
    if (certs == NULL)
        return context_fail_detail(call, "cert", "bad certificate PEM", detail);
    if (kp != NULL && (key = tlsctx_pem_key(kp, detail, sizeof detail)) == NULL) {
        sk_X509_pop_free(certs, X509_free);
        return context_fail_detail(call, "key", "bad private key PEM", detail);
    }
    if (key == NULL) {
        sk_X509_pop_free(certs, X509_free);
        return context_fail_detail(call, "key", "no private key",
                                   "give key, or put the key in the cert PEM");
    }
    if (EVP_PKEY_get_bits(key) > CONTEXT_KEY_BITS_MAX) {
        /* every handshake signs with it: a 16384-bit RSA key takes the loop for seconds */
        int bits = EVP_PKEY_get_bits(key);
        sk_X509_pop_free(certs, X509_free);
        EVP_PKEY_free(key);
        return rpc_fail_param(call, kp != NULL ? "key" : "cert",
                              "private keys are limited to %d bits (this one has %d)",
                              CONTEXT_KEY_BITS_MAX, bits);
    }
    if (cp != NULL) {
        extra = tlsctx_pem_certs(cp, NULL, detail, sizeof detail);
        if (extra == NULL) {
            sk_X509_pop_free(certs, X509_free);
            EVP_PKEY_free(key);
            return context_fail_detail(call, "chain", "bad chain PEM", detail);
        }
        while (sk_X509_num(extra) > 0) {
            X509 *x = sk_X509_shift(extra);
            if (!sk_X509_push(certs, x)) {
                X509_free(x);
                sk_X509_pop_free(extra, X509_free);
                sk_X509_pop_free(certs, X509_free);
                EVP_PKEY_free(key);
                return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
            }
        }
        sk_X509_free(extra);
    }
    leaf = sk_X509_shift(certs);
    if (sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        certs = NULL;
    }
    if (nnames > 0)
        rc = tlssni_add(t, names, nnames, leaf, key, certs, cost, detail, sizeof detail);
    else
        rc = tlsctx_set_cert(t, role, leaf, key, certs, cost, detail, sizeof detail);
    if (rc < 0) {
        X509_free(leaf);
        EVP_PKEY_free(key);
        sk_X509_pop_free(certs, X509_free);
        if (rc == -3)
            return rpc_fail_limit(call, "server-certificates-per-context");
        return rc == -1 ? context_fail_detail(call, "key", "the key does not match the certificate",
                                              detail)
                        : context_fail_detail(call, "cert", "certificate refused", detail);
    }
    return 0;
}

/* set_server_certificate / set_client_certificate: cert (+ key, + chain) for one role, counted
 * in the uid's max-tls-memory-per-uid from the text's size before any of it is parsed. */
static int
context_set_cert(struct rpc_call *call, enum tlsctx_role role)
{
    struct tlsctx *t = call->ctx;
    const char *names[TLSCTX_NAMES_MAX];
    unsigned nnames = 0;

    if (role == TLSCTX_SERVER && context_server_names(call, names, &nnames) < 0)
        return -1;
    size_t cost = 0;
    for (const char *const *p = (const char *const[]){"cert", "key", "chain", NULL}; *p != NULL;
         p++) {
        const char *text = rpc_str(call, *p);
        cost += text != NULL ? tlsctx_text_cost(text, strlen(text)) : 0;
    }
    if (tlsctx_charge(t, cost) < 0)
        return rpc_fail_limit(call, "max-tls-memory-per-uid");
    if (context_install_cert(call, role, names, nnames, cost) < 0) {
        tlsctx_refund(t, cost); /* nothing was installed */
        return -1;
    }
    if (nnames > 0) {
        char fp[TLSCTX_FP_MAX];
        if (tlsctx_fingerprint(t->named[t->nnamed - 1].cert.cert, "sha-256", fp, sizeof fp) < 0)
            return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot compute the fingerprint");
        call->result = json_pack("{s:s}", "fingerprint", fp);
        return 0;
    }
    return context_fp_result(call, t, role, "sha-256");
}

static int
context_set_server_certificate(struct rpc_call *call)
{
    return context_set_cert(call, TLSCTX_SERVER);
}

static int
context_set_client_certificate(struct rpc_call *call)
{
    return context_set_cert(call, TLSCTX_CLIENT);
}

/* The subject_alt_names param into g (borrowed strings in sans[]); default: the common name
 * when it is a DNS name or an IP address. -1 after -32602. */
static int
context_sans(struct rpc_call *call, struct tlsctx_gen *g, const char **sans)
{
    json_t *list = rpc_get(call, "subject_alt_names"), *v;
    unsigned char ip[16];
    size_t i;

    g->sans = sans;
    g->nsans = 0;
    if (list == NULL) {
        const char *cn = g->common_name;
        if (tlsctx_dns_name_ok(cn, 1) || inet_pton(AF_INET, cn, ip) == 1 ||
            inet_pton(AF_INET6, cn, ip) == 1)
            sans[g->nsans++] = cn;
        return 0;
    }
    if (json_array_size(list) > TLSCTX_SAN_MAX)
        return rpc_fail_param(call, "subject_alt_names", "subject_alt_names lists at most %d names",
                              TLSCTX_SAN_MAX);
    json_array_foreach(list, i, v)
    {
        const char *n = json_string_value(v);
        if (n == NULL || (!tlsctx_dns_name_ok(n, 1) && inet_pton(AF_INET, n, ip) != 1 &&
                          inet_pton(AF_INET6, n, ip) != 1))
            return rpc_fail_param(call, "subject_alt_names",
                                  "name %zu is neither a DNS name nor an IP address", i);
        sans[g->nsans++] = n;
    }
    return 0;
}

/* context.generate_certificate: a self-signed certificate for a role, made in memory. */
static int
context_generate_certificate(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    const char *kt = rpc_str(call, "key_type"), *sans[TLSCTX_SAN_MAX];
    struct tlsctx_gen g = {rpc_str(call, "common_name"), 0, TLSCTX_KEY_EC_P256, NULL, 0};
    enum tlsctx_role role;
    long long days;
    char detail[CONTEXT_DETAIL];

    if (context_role(call, 1, &role) < 0 ||
        rpc_int_range(call, "days", 1, TLSCTX_DAYS_MAX, 365, &days) < 0)
        return -1;
    g.days = (int)days;
    if (g.common_name == NULL)
        g.common_name = "sockd";
    if (g.common_name[0] == '\0' || strlen(g.common_name) > 64)
        return rpc_fail_param(call, "common_name", "common_name must be 1..64 bytes");
    int ktn = kt != NULL ? tlsctx_keytype(kt) : TLSCTX_KEY_EC_P256;
    if (ktn < 0)
        return rpc_fail_param(call, "key_type",
                              "key_type must be \"ec-p256\", \"ed25519\", \"rsa-2048\" or "
                              "\"rsa-3072\"");
    g.key = (enum tlsctx_keytype)ktn;
    if (context_sans(call, &g, sans) < 0)
        return -1;
    if (tlsctx_charge(t, TLSCTX_COST_GENERATED) < 0)
        return rpc_fail_limit(call, "max-tls-memory-per-uid");
    int rc = tlsctx_generate(t, role, &g, TLSCTX_COST_GENERATED, detail, sizeof detail);
    if (rc < 0)
        tlsctx_refund(t, TLSCTX_COST_GENERATED);
    if (rc == -2) {
        rpc_fail_limit(call, "rsa-keys-ready");
        json_object_set_new(call->err_data, "detail", json_string(detail));
        return -1;
    }
    if (rc < 0) {
        rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot make the certificate: %s", detail);
        json_object_set_new(call->err_data, "detail", json_string(detail));
        return -1;
    }
    return context_fp_result(call, t, role, "sha-256");
}

/* context.fingerprint: of the context's own certificate for a role. */
static int
context_fingerprint(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    const char *alg = rpc_str(call, "algorithm");
    enum tlsctx_role role;

    if (context_role(call, 0, &role) < 0)
        return -1;
    if (alg == NULL)
        alg = "sha-256";
    if (tlsctx_md(alg) == NULL)
        return rpc_fail_param(call, "algorithm",
                              "algorithm must be \"sha-1\", \"sha-256\", \"sha-384\" or "
                              "\"sha-512\"");
    if (t->certs[role].cert == NULL)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "context %llu has no %s certificate",
                        (unsigned long long)t->id, role == TLSCTX_SERVER ? "server" : "client");
    return context_fp_result(call, t, role, alg);
}

static int
context_disable_client_certificate(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    char detail[CONTEXT_DETAIL];
    if (tlsctx_clear_cert(t, TLSCTX_CLIENT, detail, sizeof detail) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot rebuild the context: %s", detail);
    return 0;
}

/* context.set_alpn: the list a client offers and a server chooses from ([] clears it). */
static int
context_set_alpn(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    unsigned char *wire, *old_wire;
    unsigned wlen, old_len;
    char detail[CONTEXT_DETAIL];

    if (context_alpn_wire(call, "protocols", &wire, &wlen) < 0)
        return -1;
    old_wire = t->alpn;
    old_len = t->alpn_len;
    t->alpn = wire;
    t->alpn_len = wlen;
    /* The server side reads t->alpn when a ClientHello comes; the client side needs a rebuild. */
    if (tlsctx_build(t, 1u << TLSCTX_CLIENT, detail, sizeof detail) < 0) {
        t->alpn = old_wire;
        t->alpn_len = old_len;
        free(wire);
        return context_fail_detail(call, "protocols", "ALPN list refused", detail);
    }
    free(old_wire);
    return 0;
}

static int
context_enable_dtls(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    char detail[CONTEXT_DETAIL];
    if (t->min_version > TLS1_2_VERSION)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "DTLS 1.3 is not supported: context %llu has min_version tls1.3",
                        (unsigned long long)t->id);
    if (tlsctx_set_dtls(t, rpc_bool(call, "srtp", 0), detail, sizeof detail) < 0) {
        rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot switch to DTLS: %s", detail);
        json_object_set_new(call->err_data, "detail", json_string(detail));
        return -1;
    }
    return 0;
}

/* context.destroy: no new use; sockets already using it keep their reference. */
static int
context_destroy(struct rpc_call *call)
{
    struct tlsctx *t = call->ctx;
    tlsctx_destroy(t);
    return 0;
}

static const struct rpc_param p_create[] = {
    {"verify", RPC_P_BOOL, 0},        {"ca", RPC_P_STR, 0},
    {"ca_file", RPC_P_STR, 0},        {"min_version", RPC_P_STR, 0},
    {"alpn", RPC_P_ARRAY, 0},         {"dtls", RPC_P_BOOL, 0},
    {"srtp", RPC_P_BOOL, 0},          {"verify_client", RPC_P_STR, 0},
    {"ciphers", RPC_P_STR, 0},        {"ciphersuites", RPC_P_STR, 0},
    {"session_cache", RPC_P_BOOL, 0}, {"crl", RPC_P_STR, 0},
    {"crl_file", RPC_P_STR, 0},       {NULL, 0, 0}};
static const struct rpc_param p_server_cert[] = {
    {"context", RPC_P_HANDLE, 1}, {"cert", RPC_P_STR, 1},           {"key", RPC_P_STR, 0},
    {"chain", RPC_P_STR, 0},      {"server_names", RPC_P_ARRAY, 0}, {NULL, 0, 0}};
static const struct rpc_param p_client_cert[] = {
    {"context", RPC_P_HANDLE, 1}, {"cert", RPC_P_STR, 1}, {"key", RPC_P_STR, 0}, {NULL, 0, 0}};
static const struct rpc_param p_generate[] = {{"context", RPC_P_HANDLE, 1},
                                              {"role", RPC_P_STR, 1},
                                              {"common_name", RPC_P_STR, 0},
                                              {"days", RPC_P_INT, 0},
                                              {"subject_alt_names", RPC_P_ARRAY, 0},
                                              {"key_type", RPC_P_STR, 0},
                                              {NULL, 0, 0}};
static const struct rpc_param p_fingerprint[] = {{"context", RPC_P_HANDLE, 1},
                                                 {"role", RPC_P_STR, 0},
                                                 {"algorithm", RPC_P_STR, 0},
                                                 {NULL, 0, 0}};
static const struct rpc_param p_alpn[] = {
    {"context", RPC_P_HANDLE, 1}, {"protocols", RPC_P_ARRAY, 1}, {NULL, 0, 0}};
static const struct rpc_param p_dtls[] = {
    {"context", RPC_P_HANDLE, 1}, {"srtp", RPC_P_BOOL, 0}, {NULL, 0, 0}};
static const struct rpc_param p_context[] = {{"context", RPC_P_HANDLE, 1}, {NULL, 0, 0}};

const struct rpc_method rpc_context_methods[] = {
    {"context.create", context_create, p_create, RPC_TARGET_NONE, RPC_F_HEAVY},
    {"context.set_server_certificate", context_set_server_certificate, p_server_cert,
     RPC_TARGET_CTX, RPC_F_HEAVY},
    {"context.set_client_certificate", context_set_client_certificate, p_client_cert,
     RPC_TARGET_CTX, RPC_F_HEAVY},
    {"context.generate_certificate", context_generate_certificate, p_generate, RPC_TARGET_CTX,
     RPC_F_HEAVY},
    {"context.fingerprint", context_fingerprint, p_fingerprint, RPC_TARGET_CTX, 0},
    {"context.disable_client_certificate", context_disable_client_certificate, p_context,
     RPC_TARGET_CTX, RPC_F_HEAVY},
    {"context.set_alpn", context_set_alpn, p_alpn, RPC_TARGET_CTX, RPC_F_HEAVY},
    {"context.enable_dtls", context_enable_dtls, p_dtls, RPC_TARGET_CTX, RPC_F_HEAVY},
    {"context.destroy", context_destroy, p_context, RPC_TARGET_CTX, 0},
    {NULL, NULL, NULL, RPC_TARGET_NONE, 0},
};
