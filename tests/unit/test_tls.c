/*
 * Unit tests of TLS contexts (src/tlsctx.c, src/rpc_context.c: the context.* methods through the
 * real method table) and of the TLS transport (src/transport_tls.c) on hand-made sockets:
 * in-process client/server pairs over socketpairs, and `openssl s_server` on 127.0.0.1.
 * Certificates are made at test time with the `openssl` command in a mkdtemp directory.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <ev.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <sockd/protocol.h>

#include "buf.h"
#include "ctl.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h"

#include "rpc_fixture.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define DETAIL 512

/* ---- certificates made at test time ------------------------------------------------------- */

static char tdir[64];

/* PEM texts of the files gen.sh writes. */
static struct {
    char *ca, *other, *server, *server_key, *client, *client_key, *expired, *expired_key;
    char *self, *self_key, *inter, *leaf2, *leaf2_key, *enc_key;
} pem;

static const char gen_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "EC='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
    "CA_EXT='-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign'\n"
    "openssl req -x509 $EC -keyout ca.key -out ca.pem -subj /CN=sockd-test-ca -days 2 $CA_EXT\n"
    "openssl req -x509 $EC -keyout other.key -out other.pem -subj /CN=sockd-other-ca -days 2 "
    "$CA_EXT\n"
    "printf 'subjectAltName=DNS:test.local,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' "
    "> server.ext\n"
    "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
    "printf 'basicConstraints=critical,CA:TRUE\\nkeyUsage=critical,keyCertSign\\n' > inter.ext\n"
    "sign() {\n"
    "  openssl req $EC -keyout $1.key -out $1.csr -subj \"$2\"\n"
    "  openssl x509 -req -in $1.csr -CA $4.pem -CAkey $4.key -CAcreateserial -days $5 "
    "-extfile $3 -out $1.pem\n"
    "}\n"
    "sign server /CN=test.local server.ext ca 2\n"
    "sign client /CN=sockd-test-client client.ext ca 2\n"
    "sign expired /CN=test.local server.ext ca -1\n"
    "sign inter /CN=sockd-test-inter inter.ext ca 2\n"
    "sign leaf2 /CN=test.local server.ext inter 2\n"
    "openssl req -x509 $EC -keyout self.key -out self.pem -subj /CN=test.local -days 2 "
    "-addext subjectAltName=DNS:test.local\n"
    "openssl pkey -in server.key -aes256 -passout pass:secret -out enc.key\n";

static char *
slurp(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", tdir, name);
    FILE *fp = fopen(path, "r");
    if (fp == NULL)
        return NULL;
    size_t cap = 8192, len = 0;
    char *p = malloc(cap);
    size_t n;
    while (p != NULL && (n = fread(p + len, 1, cap - len - 1, fp)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *q = realloc(p, cap * 2);
            if (q == NULL) {
                free(p);
                p = NULL;
                break;
            }
            p = q;
            cap *= 2;
        }
    }
    fclose(fp);
    if (p != NULL)
        p[len] = '\0';
    return p;
}

static char *
cat2(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *p = malloc(la + lb + 1);
    assert_non_null(p);
    memcpy(p, a, la);
    memcpy(p + la, b, lb + 1);
    return p;
}

/* `openssl x509 -fingerprint` of a file, in RFC 8122 form ("sha-256 AB:CD:..."). */
static void
openssl_fp(const char *file, const char *alg, char *out, size_t n)
{
    char cmd[256], line[512];
    snprintf(cmd, sizeof cmd, "openssl x509 -noout -fingerprint -%s -in %s/%s", alg, tdir, file);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *got = fgets(line, sizeof line, p);
    assert_int_equal(pclose(p), 0);
    assert_non_null(got);
    char *eq = strchr(line, '=');
    assert_non_null(eq);
    eq[strcspn(eq, "\r\n")] = '\0';
    /* "sha256" -> "sha-256", "sha1" -> "sha-1" */
    snprintf(out, n, "sha-%s %s", alg + 3, eq + 1);
}

static char fp_server[TLSCTX_FP_MAX], fp_client[TLSCTX_FP_MAX], fp_self[TLSCTX_FP_MAX];
static char fp_leaf2[TLSCTX_FP_MAX];

static int
group_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    fx_group_setup(state);

    snprintf(tdir, sizeof tdir, "/tmp/sockd-test-tls-XXXXXX");
    if (mkdtemp(tdir) == NULL)
        return -1;
    char path[128], cmd[512];
    snprintf(path, sizeof path, "%s/gen.sh", tdir);
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    fputs(gen_script, fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "sh %s %s >%s/gen.log 2>&1", path, tdir, tdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "certificate generation failed; see %s/gen.log\n", tdir);
        return -1;
    }
    pem.ca = slurp("ca.pem");
    pem.other = slurp("other.pem");
    pem.server = slurp("server.pem");
    pem.server_key = slurp("server.key");
    pem.client = slurp("client.pem");
    pem.client_key = slurp("client.key");
    pem.expired = slurp("expired.pem");
    pem.expired_key = slurp("expired.key");
    pem.self = slurp("self.pem");
    pem.self_key = slurp("self.key");
    pem.inter = slurp("inter.pem");
    pem.leaf2 = slurp("leaf2.pem");
    pem.leaf2_key = slurp("leaf2.key");
    pem.enc_key = slurp("enc.key");
    char **all = (char **)&pem;
    for (size_t i = 0; i < sizeof pem / sizeof(char *); i++)
        if (all[i] == NULL)
            return -1;
    openssl_fp("server.pem", "sha256", fp_server, sizeof fp_server);
    openssl_fp("client.pem", "sha256", fp_client, sizeof fp_client);
    openssl_fp("self.pem", "sha256", fp_self, sizeof fp_self);
    openssl_fp("leaf2.pem", "sha256", fp_leaf2, sizeof fp_leaf2);
    return 0;
}

static int
group_teardown(void **state)
{
    char **all = (char **)&pem;
    for (size_t i = 0; i < sizeof pem / sizeof(char *); i++)
        free(all[i]);
    if (tdir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tdir);
    }
    return fx_group_teardown(state);
}

/* ---- fake clients (rpc_fixture.c) ---------------------------------------------------------- */

static int
setup(void **state)
{
    if (tlsctx_count() != 0)
        return -1;
    return fx_setup_two(state);
}

static int
teardown(void **state)
{
    fx_teardown_two(state);
    /* Every context is gone once its client and the sockets using it are. */
    assert_int_equal(tlsctx_count(), 0);
    return 0;
}

/* ---- JSON-RPC through rpc_handle_line ------------------------------------------------------ */

/* The one message the daemon wrote since the last call. */
static json_t *
one_message(struct fx *f)
{
    size_t len;
    char *p = fx_drain(f, &len);
    char *nl = strchr(p, '\n');
    if (nl == NULL || nl[1] != '\0')
        fail_msg("want exactly one message, got: %.300s", p);
    json_error_t err;
    json_t *m = json_loadb(p, (size_t)(nl - p), JSON_REJECT_DUPLICATES, &err);
    if (m == NULL)
        fail_msg("daemon wrote invalid JSON (%s): %.300s", err.text, p);
    free(p);
    return m;
}

/* Call a method (params stolen; NULL: none); returns the whole response. */
static json_t *
rpc(struct fx *f, const char *method, json_t *params)
{
    static int next_id;
    int id = ++next_id;
    json_t *req = json_pack("{s:s,s:i,s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (params != NULL)
        json_object_set_new(req, "params", params);
    char *line = json_dumps(req, JSON_COMPACT);
    assert_non_null(line);
    json_decref(req);
    rpc_handle_line(f->c, line, strlen(line));
    free(line);
    json_t *resp = one_message(f);
    assert_int_equal(json_integer_value(json_object_get(resp, "id")), id);
    return resp;
}

static char *
show(json_t *v)
{
    static char buf[1024];
    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, sizeof buf, "%s", d ? d : "?");
    free(d);
    return buf;
}

/* A method that must succeed; returns its result (new reference). */
static json_t *
rpc_ok(struct fx *f, const char *method, json_t *params)
{
    json_t *resp = rpc(f, method, params);
    json_t *res = json_object_get(resp, "result");
    if (!json_is_object(res))
        fail_msg("%s: expected a result, got %s", method, show(resp));
    json_incref(res);
    json_decref(resp);
    return res;
}

/* A method whose result must be {}. */
static void
rpc_empty(struct fx *f, const char *method, json_t *params)
{
    json_t *r = rpc_ok(f, method, params);
    if (json_object_size(r) != 0)
        fail_msg("%s: expected {}, got %s", method, show(r));
    json_decref(r);
}

/* A method that must fail with code (and data.param when param is set); returns error.data. */
static json_t *
rpc_err(struct fx *f, const char *method, json_t *params, int code, const char *param)
{
    json_t *resp = rpc(f, method, params);
    json_t *err = json_object_get(resp, "error");
    if (!json_is_object(err) || json_integer_value(json_object_get(err, "code")) != code)
        fail_msg("%s: expected error %d, got %s", method, code, show(resp));
    assert_true(json_string_length(json_object_get(err, "message")) > 0);
    json_t *data = json_object_get(err, "data");
    if (param != NULL) {
        const char *p = json_string_value(json_object_get(data, "param"));
        if (p == NULL || strcmp(p, param) != 0)
            fail_msg("%s: expected data.param %s, got %s", method, param, show(resp));
    }
    data = data != NULL ? json_incref(data) : json_object();
    json_decref(resp);
    return data;
}

/* An error that carries OpenSSL's (or our) explanation in data.detail. */
static void
rpc_err_detail(struct fx *f, const char *method, json_t *params, const char *param,
               const char *want)
{
    json_t *data = rpc_err(f, method, params, SOCKD_E_INVALID_PARAMS, param);
    const char *d = json_string_value(json_object_get(data, "detail"));
    if (d == NULL || d[0] == '\0')
        fail_msg("%s: no data.detail in %s", method, show(data));
    if (want != NULL && strstr(d, want) == NULL)
        fail_msg("%s: detail \"%s\" lacks \"%s\"", method, d, want);
    json_decref(data);
}

static long long
ctx_create(struct fx *f, json_t *params)
{
    json_t *r = rpc_ok(f, "context.create", params ? params : json_object());
    json_t *v = json_object_get(r, "context");
    assert_true(json_is_integer(v));
    long long id = json_integer_value(v);
    assert_true(id > 0);
    json_decref(r);
    return id;
}

/* The fingerprint a certificate setter or context.fingerprint returned. */
static void
expect_fp(json_t *res, const char *want)
{
    const char *got = json_string_value(json_object_get(res, "fingerprint"));
    if (got == NULL || strcmp(got, want) != 0)
        fail_msg("fingerprint %s, want %s", got ? got : "(none)", want);
    assert_int_equal(json_object_size(res), 1);
    json_decref(res);
}

static void
set_cert(struct fx *f, long long ctx, const char *method, const char *cert, const char *key,
         const char *want_fp)
{
    json_t *p = json_pack("{s:I,s:s}", "context", (json_int_t)ctx, "cert", cert);
    if (key != NULL)
        json_object_set_new(p, "key", json_string(key));
    expect_fp(rpc_ok(f, method, p), want_fp);
}

/* A context made through the methods, as the transport tests use it. */
static struct tlsctx *
mkctx(struct fx *f, json_t *create, const char *scert, const char *skey, const char *ccert,
      const char *ckey)
{
    long long id = ctx_create(f, create);
    char fp[TLSCTX_FP_MAX];
    struct tlsctx *t = tlsctx_get(&f->c->owner, (uint64_t)id);
    assert_non_null(t);
    if (scert != NULL) {
        json_t *p = json_pack("{s:I,s:s}", "context", (json_int_t)id, "cert", scert);
        if (skey != NULL)
            json_object_set_new(p, "key", json_string(skey));
        json_t *r = rpc_ok(f, "context.set_server_certificate", p);
        assert_int_equal(tlsctx_fingerprint(t->certs[TLSCTX_SERVER].cert, "sha-256", fp, sizeof fp),
                         0);
        expect_fp(r, fp);
    }
    if (ccert != NULL) {
        json_t *p = json_pack("{s:I,s:s}", "context", (json_int_t)id, "cert", ccert);
        if (ckey != NULL)
            json_object_set_new(p, "key", json_string(ckey));
        json_decref(rpc_ok(f, "context.set_client_certificate", p));
    }
    return t;
}

static void tpair(struct sock **cl, struct sock **sv);
static void tsock_free(struct sock *s);

/* ---- context methods ---------------------------------------------------------------------- */

static void
test_create_and_fingerprints(void **state)
{
    struct fx *f = *state;
    unsigned before = tlsctx_count();
    long long a = ctx_create(f, NULL);
    long long b = ctx_create(f, json_pack("{s:b,s:s,s:s,s:[s,s],s:s}", "verify", 1, "ca", pem.ca,
                                          "min_version", "tls1.3", "alpn", "h2", "http/1.1",
                                          "verify_client", "optional"));
    assert_true(b > a);
    assert_int_equal(tlsctx_count(), before + 2);
    struct tlsctx *tb = tlsctx_get(&f->c->owner, (uint64_t)b);
    assert_non_null(tb);
    assert_int_equal(tb->min_version, TLS1_3_VERSION);
    assert_int_equal(tb->verify_client, 1);
    assert_int_equal(tb->alpn_len, 3 + 9);
    assert_non_null(tb->client_ctx);
    assert_non_null(tb->server_ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(tb->client_ctx), TLS1_3_VERSION);

    /* Handles share the socket sequence: a socket opened now gets the next number. */
    json_t *r = rpc_ok(f, "socket.open", json_pack("{s:s}", "type", "tcp"));
    assert_int_equal(json_integer_value(json_object_get(r, "socket")), b + 1);
    json_decref(r);

    /* Server certificate with a separate key; the result is the certificate's fingerprint. */
    set_cert(f, a, "context.set_server_certificate", pem.server, pem.server_key, fp_server);
    /* context.fingerprint, default role server and algorithm sha-256. */
    expect_fp(rpc_ok(f, "context.fingerprint", json_pack("{s:I}", "context", (json_int_t)a)),
              fp_server);
    static const char *const algs[][2] = {
        {"sha-1", "sha1"}, {"sha-256", "sha256"}, {"sha-384", "sha384"}, {"sha-512", "sha512"}};
    for (size_t i = 0; i < NELEM(algs); i++) {
        char want[TLSCTX_FP_MAX];
        openssl_fp("server.pem", algs[i][1], want, sizeof want);
        expect_fp(rpc_ok(f, "context.fingerprint",
                         json_pack("{s:I,s:s,s:s}", "context", (json_int_t)a, "role", "server",
                                   "algorithm", algs[i][0])),
                  want);
    }
    /* Names are matched without regard to case; the answer uses the RFC 8122 spelling. */
    expect_fp(rpc_ok(f, "context.fingerprint",
                     json_pack("{s:I,s:s}", "context", (json_int_t)a, "algorithm", "SHA-256")),
              fp_server);
    json_decref(rpc_err(f, "context.fingerprint",
                        json_pack("{s:I,s:s}", "context", (json_int_t)a, "algorithm", "md5"),
                        SOCKD_E_INVALID_PARAMS, "algorithm"));
    json_decref(rpc_err(f, "context.fingerprint",
                        json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "peer"),
                        SOCKD_E_INVALID_PARAMS, "role"));
    /* No client certificate yet: wrong state. */
    json_decref(rpc_err(f, "context.fingerprint",
                        json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "client"),
                        SOCKD_E_WRONG_STATE, NULL));

    /* Client certificate with the key in the same PEM, in either order. */
    char *both = cat2(pem.client, pem.client_key);
    set_cert(f, a, "context.set_client_certificate", both, NULL, fp_client);
    free(both);
    both = cat2(pem.client_key, pem.client);
    set_cert(f, a, "context.set_client_certificate", both, NULL, fp_client);
    free(both);
    expect_fp(rpc_ok(f, "context.fingerprint",
                     json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "client")),
              fp_client);
    /* disable_client_certificate: gone again. */
    rpc_empty(f, "context.disable_client_certificate",
              json_pack("{s:I}", "context", (json_int_t)a));
    json_decref(rpc_err(f, "context.fingerprint",
                        json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "client"),
                        SOCKD_E_WRONG_STATE, NULL));
    assert_null(tlsctx_get(&f->c->owner, (uint64_t)a)->certs[TLSCTX_CLIENT].cert);
    /* ... while the server certificate stays. */
    expect_fp(rpc_ok(f, "context.fingerprint", json_pack("{s:I}", "context", (json_int_t)a)),
              fp_server);

    /* A certificate with its chain: the leaf's fingerprint; the chain is kept. */
    json_t *p = json_pack("{s:I,s:s,s:s,s:s}", "context", (json_int_t)b, "cert", pem.leaf2, "key",
                          pem.leaf2_key, "chain", pem.inter);
    expect_fp(rpc_ok(f, "context.set_server_certificate", p), fp_leaf2);
    assert_int_equal(sk_X509_num(tb->certs[TLSCTX_SERVER].chain), 1);
    /* The chain may also follow the leaf in cert. */
    char *full = cat2(pem.leaf2, pem.inter);
    set_cert(f, b, "context.set_server_certificate", full, pem.leaf2_key, fp_leaf2);
    free(full);
    assert_int_equal(sk_X509_num(tb->certs[TLSCTX_SERVER].chain), 1);

    /* Handles of destroyed contexts are gone; the count follows. */
    rpc_empty(f, "context.destroy", json_pack("{s:I}", "context", (json_int_t)a));
    assert_null(tlsctx_get(&f->c->owner, (uint64_t)a));
    assert_int_equal(tlsctx_count(), before + 1);
    json_decref(rpc_err(f, "context.destroy", json_pack("{s:I}", "context", (json_int_t)a),
                        SOCKD_E_UNKNOWN_HANDLE, NULL));
    json_decref(rpc_err(f, "context.fingerprint", json_pack("{s:I}", "context", (json_int_t)a),
                        SOCKD_E_UNKNOWN_HANDLE, NULL));
}

static void
test_bad_material(void **state)
{
    struct fx *f = *state;
    long long a = ctx_create(f, NULL);
    struct tlsctx *t = tlsctx_get(&f->c->owner, (uint64_t)a);
    const char *scs = "context.set_server_certificate", *ccs = "context.set_client_certificate";
#define CP(...) json_pack("{s:I," __VA_ARGS__)
    /* Not PEM at all. */
    rpc_err_detail(
        f, scs, CP("s:s,s:s}", "context", (json_int_t)a, "cert", "garbage", "key", pem.server_key),
        "cert", "no start line");
    /* A PEM block whose body is not a certificate. */
    static const char bad_body[] = "-----BEGIN CERTIFICATE-----\nTUlJQm9n\n"
                                   "-----END CERTIFICATE-----\n";
    rpc_err_detail(
        f, scs, CP("s:s,s:s}", "context", (json_int_t)a, "cert", bad_body, "key", pem.server_key),
        "cert", NULL);
    /* A good certificate followed by a damaged one. */
    char *tail = cat2(pem.server, bad_body);
    rpc_err_detail(f, scs,
                   CP("s:s,s:s}", "context", (json_int_t)a, "cert", tail, "key", pem.server_key),
                   "cert", NULL);
    free(tail);
    /* A key that is not PEM, and a key that belongs to another certificate. */
    rpc_err_detail(f, scs,
                   CP("s:s,s:s}", "context", (json_int_t)a, "cert", pem.server, "key", "garbage"),
                   "key", NULL);
    rpc_err_detail(
        f, scs, CP("s:s,s:s}", "context", (json_int_t)a, "cert", pem.server, "key", pem.client_key),
        "key", "mismatch");
    rpc_err_detail(
        f, ccs, CP("s:s,s:s}", "context", (json_int_t)a, "cert", pem.client, "key", pem.server_key),
        "key", "mismatch");
    /* No key anywhere. */
    rpc_err_detail(f, scs, CP("s:s}", "context", (json_int_t)a, "cert", pem.server), "key", NULL);
    /* A key alone where the certificate goes. */
    rpc_err_detail(f, scs, CP("s:s}", "context", (json_int_t)a, "cert", pem.server_key), "cert",
                   NULL);
    /* A bad chain. */
    rpc_err_detail(f, scs,
                   CP("s:s,s:s,s:s}", "context", (json_int_t)a, "cert", pem.server, "key",
                      pem.server_key, "chain", "nope"),
                   "chain", NULL);
    /* An encrypted key is refused, never prompted for. */
    rpc_err_detail(f, scs,
                   CP("s:s,s:s}", "context", (json_int_t)a, "cert", pem.server, "key", pem.enc_key),
                   "key", "encrypted");
    /* Nothing was installed by the failures. */
    assert_null(t->certs[TLSCTX_SERVER].cert);
    assert_null(t->certs[TLSCTX_CLIENT].cert);
    json_decref(rpc_err(f, "context.fingerprint", CP("}", "context", (json_int_t)a),
                        SOCKD_E_WRONG_STATE, NULL));
    /* After the failures a good pair still works. */
    set_cert(f, a, scs, pem.server, pem.server_key, fp_server);
    /* A failed setter leaves the certificate in force as it was. */
    rpc_err_detail(
        f, scs, CP("s:s,s:s}", "context", (json_int_t)a, "cert", pem.self, "key", pem.server_key),
        "key", "mismatch");
    expect_fp(rpc_ok(f, "context.fingerprint", CP("}", "context", (json_int_t)a)), fp_server);
#undef CP

    /* context.create: bad CA PEM, unreadable CA file, words out of range, ALPN shapes. */
    rpc_err_detail(f, "context.create", json_pack("{s:s}", "ca", "not a pem"), "ca",
                   "no start line");
    char missing[128];
    snprintf(missing, sizeof missing, "%s/no-such-file.pem", tdir);
    rpc_err_detail(f, "context.create", json_pack("{s:s}", "ca_file", missing), "ca_file", NULL);
    char keyfile[128];
    snprintf(keyfile, sizeof keyfile, "%s/ca.key", tdir);
    rpc_err_detail(f, "context.create", json_pack("{s:s}", "ca_file", keyfile), "ca_file", NULL);
    char cafile[128];
    snprintf(cafile, sizeof cafile, "%s/ca.pem", tdir);
    long long withfile = ctx_create(f, json_pack("{s:s}", "ca_file", cafile));
    assert_true(withfile > a);
    json_decref(rpc_err(f, "context.create", json_pack("{s:s}", "min_version", "tls1.1"),
                        SOCKD_E_INVALID_PARAMS, "min_version"));
    json_decref(rpc_err(f, "context.create", json_pack("{s:s}", "verify_client", "maybe"),
                        SOCKD_E_INVALID_PARAMS, "verify_client"));
    json_decref(rpc_err(f, "context.create", json_pack("{s:s}", "verify", "yes"),
                        SOCKD_E_INVALID_PARAMS, "verify"));
    json_decref(rpc_err(f, "context.create", json_pack("{s:b}", "srtp", 1), SOCKD_E_INVALID_PARAMS,
                        "srtp"));
    json_decref(rpc_err(f, "context.create",
                        json_pack("{s:b,s:s}", "dtls", 1, "min_version", "tls1.3"),
                        SOCKD_E_INVALID_PARAMS, "min_version"));
    json_decref(rpc_err(f, "context.create", json_pack("{s:s}", "alpn", "h2"),
                        SOCKD_E_INVALID_PARAMS, "alpn"));
    json_decref(rpc_err(f, "context.create", json_pack("{s:b}", "bogus", 1), SOCKD_E_INVALID_PARAMS,
                        "bogus"));
    char long_proto[300];
    memset(long_proto, 'x', sizeof long_proto - 1);
    long_proto[sizeof long_proto - 1] = '\0';
    json_t *bad_lists[] = {json_pack("[s]", ""), json_pack("[i]", 1), json_pack("[s]", long_proto),
                           json_pack("[s,[]]", "h2"), json_pack("[s,n]", "h2")};
    for (size_t i = 0; i < NELEM(bad_lists); i++) {
        rpc_err_detail(f, "context.create", json_pack("{s:O}", "alpn", bad_lists[i]), "alpn", NULL);
        rpc_err_detail(f, "context.set_alpn",
                       json_pack("{s:I,s:O}", "context", (json_int_t)a, "protocols", bad_lists[i]),
                       "protocols", NULL);
        json_decref(bad_lists[i]);
    }
    /* Good lists, and [] to clear. */
    json_decref(rpc_ok(
        f, "context.set_alpn",
        json_pack("{s:I,s:[s,s]}", "context", (json_int_t)a, "protocols", "h2", "http/1.1")));
    assert_int_equal(t->alpn_len, 12);
    assert_memory_equal(t->alpn, "\x02h2\x08http/1.1", 12);
    json_decref(rpc_ok(f, "context.set_alpn",
                       json_pack("{s:I,s:[]}", "context", (json_int_t)a, "protocols")));
    assert_null(t->alpn);
    json_decref(rpc_err(f, "context.set_alpn", json_pack("{s:I}", "context", (json_int_t)a),
                        SOCKD_E_INVALID_PARAMS, "protocols"));
}

static void
test_generate_certificate(void **state)
{
    struct fx *f = *state;
    long long a = ctx_create(f, NULL);
    struct tlsctx *t = tlsctx_get(&f->c->owner, (uint64_t)a);
    json_t *r = rpc_ok(f, "context.generate_certificate",
                       json_pack("{s:I,s:s,s:s,s:i}", "context", (json_int_t)a, "role", "server",
                                 "common_name", "gen.local", "days", 10));
    char fp[TLSCTX_FP_MAX];
    snprintf(fp, sizeof fp, "%s", json_string_value(json_object_get(r, "fingerprint")));
    json_decref(r);
    assert_int_equal(strncmp(fp, "sha-256 ", 8), 0);
    assert_int_equal(strlen(fp), 8 + 32 * 3 - 1);
    expect_fp(rpc_ok(f, "context.fingerprint", json_pack("{s:I}", "context", (json_int_t)a)), fp);

    /* EC P-256, self-signed, the CN given, valid for about the days asked. */
    X509 *x = t->certs[TLSCTX_SERVER].cert;
    EVP_PKEY *k = t->certs[TLSCTX_SERVER].key;
    assert_non_null(x);
    assert_int_equal(EVP_PKEY_get_base_id(k), EVP_PKEY_EC);
    char group[64];
    size_t glen = 0;
    assert_int_equal(EVP_PKEY_get_group_name(k, group, sizeof group, &glen), 1);
    assert_string_equal(group, "prime256v1");
    assert_int_equal(X509_check_issued(x, x), X509_V_OK);
    assert_int_equal(X509_check_private_key(x, k), 1);
    char cn[80];
    assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn) >
                0);
    assert_string_equal(cn, "gen.local");
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, X509_get0_notAfter(x)), 1);
    assert_true(days == 9 || days == 10);
    assert_true(X509_cmp_current_time(X509_get0_notBefore(x)) < 0);

    /* A second one replaces it; the client role is separate; defaults apply. */
    r = rpc_ok(f, "context.generate_certificate",
               json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "server"));
    assert_string_not_equal(json_string_value(json_object_get(r, "fingerprint")), fp);
    json_decref(r);
    assert_int_equal(X509_NAME_get_text_by_NID(X509_get_subject_name(t->certs[TLSCTX_SERVER].cert),
                                               NID_commonName, cn, sizeof cn) > 0,
                     1);
    assert_string_equal(cn, "sockd");
    json_decref(rpc_ok(f, "context.generate_certificate",
                       json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "client")));
    assert_non_null(t->certs[TLSCTX_CLIENT].cert);

    json_decref(rpc_err(f, "context.generate_certificate",
                        json_pack("{s:I}", "context", (json_int_t)a), SOCKD_E_INVALID_PARAMS,
                        "role"));
    json_decref(rpc_err(f, "context.generate_certificate",
                        json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "both"),
                        SOCKD_E_INVALID_PARAMS, "role"));
    json_decref(
        rpc_err(f, "context.generate_certificate",
                json_pack("{s:I,s:s,s:i}", "context", (json_int_t)a, "role", "server", "days", 0),
                SOCKD_E_INVALID_PARAMS, "days"));
    json_decref(rpc_err(
        f, "context.generate_certificate",
        json_pack("{s:I,s:s,s:s}", "context", (json_int_t)a, "role", "server", "common_name", ""),
        SOCKD_E_INVALID_PARAMS, "common_name"));
}

static void
test_dtls_flags(void **state)
{
    struct fx *f = *state;
    long long a = ctx_create(f, NULL);
    struct tlsctx *t = tlsctx_get(&f->c->owner, (uint64_t)a);
    assert_int_equal(t->dtls, 0);
    json_decref(rpc_ok(f, "context.generate_certificate",
                       json_pack("{s:I,s:s}", "context", (json_int_t)a, "role", "server")));
    rpc_empty(f, "context.enable_dtls",
              json_pack("{s:I,s:b}", "context", (json_int_t)a, "srtp", 1));
    assert_int_equal(t->dtls, 1);
    assert_int_equal(t->srtp, 1);
    assert_ptr_equal(SSL_CTX_get_ssl_method(t->client_ctx), DTLS_client_method());
    assert_ptr_equal(SSL_CTX_get_ssl_method(t->server_ctx), DTLS_server_method());
    /* The certificate survived the rebuild. */
    assert_non_null(SSL_CTX_get0_certificate(t->server_ctx));

    long long b = ctx_create(f, json_pack("{s:b,s:b}", "dtls", 1, "srtp", 0));
    struct tlsctx *tb = tlsctx_get(&f->c->owner, (uint64_t)b);
    assert_int_equal(tb->dtls, 1);
    assert_int_equal(tb->srtp, 0);
    assert_ptr_equal(SSL_CTX_get_ssl_method(tb->client_ctx), DTLS_client_method());

    /* The TLS transport does not take a DTLS context (nor a DTLS socket a TLS one). */
    struct sock *cs, *ss;
    char d[DETAIL];
    tpair(&cs, &ss);
    assert_int_equal(tls_start(cs, t, 0, "test.local", d, sizeof d), -1);
    assert_string_equal(d, "the context is for DTLS, the socket is not");
    assert_null(sock_ssl(cs));
    ss->type = SOCK_DTLS;
    struct tlsctx *plain = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    assert_int_equal(tls_start(ss, plain, 1, NULL, d, sizeof d), -1);
    assert_null(sock_ssl(ss));
    tsock_free(cs);
    tsock_free(ss);

    long long c = ctx_create(f, json_pack("{s:s}", "min_version", "tls1.3"));
    json_decref(rpc_err(f, "context.enable_dtls", json_pack("{s:I}", "context", (json_int_t)c),
                        SOCKD_E_WRONG_STATE, NULL));
}

static void
test_unknown_and_foreign_handles(void **state)
{
    struct fx *f = *state;
    long long theirs = ctx_create(&f[1], NULL);
    static const char *const methods[] = {
        "context.set_server_certificate",
        "context.set_client_certificate",
        "context.generate_certificate",
        "context.fingerprint",
        "context.disable_client_certificate",
        "context.set_alpn",
        "context.enable_dtls",
        "context.destroy",
    };
    long long ids[] = {999999, theirs};
    for (size_t j = 0; j < NELEM(ids); j++) {
        for (size_t i = 0; i < NELEM(methods); i++) {
            json_t *p = json_pack("{s:I}", "context", (json_int_t)ids[j]);
            if (strstr(methods[i], "_certificate") != NULL &&
                strstr(methods[i], "generate") == NULL && strstr(methods[i], "disable") == NULL)
                json_object_set_new(p, "cert", json_string(pem.server));
            if (strstr(methods[i], "generate") != NULL)
                json_object_set_new(p, "role", json_string("server"));
            if (strstr(methods[i], "alpn") != NULL)
                json_object_set_new(p, "protocols", json_pack("[s]", "h2"));
            json_decref(rpc_err(f, methods[i], p, SOCKD_E_UNKNOWN_HANDLE, NULL));
        }
    }
    /* The owner still has it, untouched. */
    assert_non_null(tlsctx_get(&f[1].c->owner, (uint64_t)theirs));
    assert_null(tlsctx_get(&f[0].c->owner, (uint64_t)theirs));
    assert_null(tlsctx_get(&f[1].c->owner, (uint64_t)theirs)->certs[TLSCTX_SERVER].cert);
    json_decref(rpc_err(f, "context.destroy", json_pack("{s:i}", "context", 0),
                        SOCKD_E_INVALID_PARAMS, "context"));

    /* A client that goes away drops its handles. */
    ctx_create(&f[1], NULL);
    unsigned n = tlsctx_count();
    assert_int_equal(tlsctx_owned(&f[1].c->owner), 2);
    tlsctx_owner_gone(&f[1].c->owner);
    assert_null(f[1].c->owner.ctxs);
    assert_int_equal(tlsctx_count(), n - 2);
}

/* ---- the transport ------------------------------------------------------------------------ */

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct sock *
tsock(int fd)
{
    struct sock *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->fd = fd;
    s->tp = &transport_tls;
    return s;
}

static void
tsock_free(struct sock *s)
{
    if (s == NULL)
        return;
    tls_free(s);
    assert_null(s->tls);
    if (s->fd >= 0)
        close(s->fd);
    free(s);
}

/* A client and a server sock on the two ends of a socketpair. */
static void
tpair(struct sock **cl, struct sock **sv)
{
    int p[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, p), 0);
    *cl = tsock(p[0]);
    *sv = tsock(p[1]);
}

static short
want_events(const struct sock *s)
{
    assert_true(s->tls->want == EV_READ || s->tls->want == EV_WRITE);
    return s->tls->want == EV_READ ? POLLIN : POLLOUT;
}

struct side {
    struct sock *s;
    int r; /* 0 in progress, 1 done, -1 failed */
    char detail[DETAIL];
};

/* Drive the handshakes of both sides (b->s may be NULL) until each is done or failed, polling
 * on s->tls->want in between; a failed side's fd is shut down as closing it would. Bounded. */
static void
pump(struct side *a, struct side *b)
{
    struct side *sides[2] = {a, b};
    double end = now_s() + 10;
    a->r = 0;
    b->r = b->s ? 0 : 1;
    for (;;) {
        struct pollfd pf[2];
        int n = 0;
        for (int i = 0; i < 2; i++) {
            struct side *x = sides[i];
            if (x->r != 0)
                continue;
            x->detail[0] = '\0';
            x->r = tls_handshake(x->s, x->detail, sizeof x->detail);
            if (x->r == 1)
                assert_int_equal(x->s->tls->handshaking, 0);
            if (x->r == -1) {
                assert_true(x->detail[0] != '\0');
                shutdown(x->s->fd, SHUT_RDWR);
            }
        }
        if (a->r != 0 && b->r != 0)
            return;
        for (int i = 0; i < 2; i++) {
            if (sides[i]->r == 0) {
                pf[n].fd = sides[i]->s->fd;
                pf[n].events = want_events(sides[i]->s);
                pf[n].revents = 0;
                n++;
            }
        }
        double left = end - now_s();
        if (left <= 0)
            fail_msg("handshake did not finish in time");
        assert_true(poll(pf, (nfds_t)n, (int)(left * 1000) + 1) >= 0);
    }
}

/* Start both ends (client verifying server_name) and run the handshake. */
static void
handshake(struct side *c, struct tlsctx *ct, const char *server_name, struct side *s,
          struct tlsctx *st)
{
    char d[DETAIL];
    if (tls_start(c->s, ct, 0, server_name, d, sizeof d) != 0)
        fail_msg("tls_start (client): %s", d);
    if (s->s != NULL && tls_start(s->s, st, 1, NULL, d, sizeof d) != 0)
        fail_msg("tls_start (server): %s", d);
    assert_int_equal(c->s->tls->handshaking, 1);
    pump(c, s);
}

/* Move n bytes from w to r through the transport, both directions non-blocking. Bounded. */
static void
xfer(struct sock *w, struct sock *r, const unsigned char *p, size_t n)
{
    unsigned char *got = malloc(n);
    size_t sent = 0, have = 0;
    double end = now_s() + 20;
    assert_non_null(got);
    while (have < n) {
        int progress = 0;
        struct pollfd pf[2];
        int k = 0;
        if (sent < n) {
            ssize_t m = transport_tls.write(w, p + sent, n - sent);
            if (m > 0) {
                sent += (size_t)m;
                progress = 1;
            } else {
                assert_int_equal(m, -1);
                assert_int_equal(errno, EAGAIN);
                pf[k].fd = w->fd;
                pf[k].events = want_events(w);
                k++;
            }
        }
        ssize_t m = transport_tls.read(r, got + have, n - have);
        if (m > 0) {
            have += (size_t)m;
            progress = 1;
            /* Whatever is decrypted already comes without waiting for the fd. */
            size_t pend = transport_tls.pending(r);
            if (pend > 0) {
                m = transport_tls.read(r, got + have, pend < n - have ? pend : n - have);
                assert_true(m > 0);
                have += (size_t)m;
            }
        } else {
            if (m != -1 || errno != EAGAIN)
                fail_msg("read: %zd errno %d (%s)", m, errno, tls_last_error());
            pf[k].fd = r->fd;
            pf[k].events = want_events(r);
            k++;
        }
        if (progress)
            continue;
        double left = end - now_s();
        if (left <= 0)
            fail_msg("transfer stalled at %zu/%zu sent, %zu received", sent, n, have);
        assert_true(poll(pf, (nfds_t)k, (int)(left * 1000) + 1) >= 0);
    }
    assert_memory_equal(got, p, n);
    free(got);
}

/* Read until something other than EAGAIN (waiting on tls_want); returns read's result. */
static ssize_t
read_until(struct sock *s, void *buf, size_t n, int *err)
{
    double end = now_s() + 10;
    for (;;) {
        ssize_t m = transport_tls.read(s, buf, n);
        if (m >= 0 || errno != EAGAIN) {
            *err = m < 0 ? errno : 0;
            return m;
        }
        struct pollfd pf = {s->fd, want_events(s), 0};
        double left = end - now_s();
        if (left <= 0)
            fail_msg("read did not finish in time");
        assert_true(poll(&pf, 1, (int)(left * 1000) + 1) >= 0);
    }
}

static void
check_info(struct sock *s, const char *alpn, const char *server_name, int verified,
           const char *peer_fp)
{
    json_t *o = tls_info(s);
    const char *v = json_string_value(json_object_get(o, "version"));
    if (v == NULL || strncmp(v, "TLSv1.", 6) != 0)
        fail_msg("version: %s", show(o));
    assert_true(json_string_length(json_object_get(o, "cipher")) > 0);
    json_t *a = json_object_get(o, "alpn");
    if (alpn == NULL ? a != NULL : !json_is_string(a) || strcmp(json_string_value(a), alpn) != 0)
        fail_msg("alpn: want %s, got %s", alpn ? alpn : "none", show(o));
    json_t *sn = json_object_get(o, "server_name");
    if (server_name == NULL ? sn != NULL
                            : !json_is_string(sn) || strcmp(json_string_value(sn), server_name))
        fail_msg("server_name: want %s, got %s", server_name ? server_name : "none", show(o));
    json_t *vf = json_object_get(o, "verified");
    if (!json_is_boolean(vf) || json_is_true(vf) != verified)
        fail_msg("verified: want %d, got %s", verified, show(o));
    json_t *pf = json_object_get(o, "peer_fingerprint");
    if (peer_fp == NULL ? pf != NULL
                        : !json_is_string(pf) || strcmp(json_string_value(pf), peer_fp) != 0)
        fail_msg("peer_fingerprint: want %s, got %s", peer_fp ? peer_fp : "none", show(o));
    assert_null(json_object_get(o, "srtp"));
    json_decref(o);
}

static void
expect_detail(const struct side *x, const char *want)
{
    if (x->r != -1)
        fail_msg("handshake result %d, want a failure with \"%s\"", x->r, want);
    if (strstr(x->detail, want) == NULL)
        fail_msg("detail \"%s\" lacks \"%s\"", x->detail, want);
}

/* `openssl s_server` on 127.0.0.1, any port; its pid and port. */
struct sserver {
    pid_t pid;
    int out; /* its stdout and stderr */
    int port;
};

static void
sserver_start(struct sserver *sv, const char *extra)
{
    int p[2];
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "exec openssl s_server -accept 127.0.0.1:0 -naccept 1 -rev -cert %s/server.pem "
             "-key %s/server.key %s",
             tdir, tdir, extra);
    assert_int_equal(pipe(p), 0);
    sv->pid = fork();
    assert_true(sv->pid >= 0);
    if (sv->pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    sv->out = p[0];
    char buf[4096];
    size_t len = 0;
    double end = now_s() + 10;
    sv->port = 0;
    while (sv->port == 0) {
        struct pollfd pf = {sv->out, POLLIN, 0};
        double left = end - now_s();
        if (left <= 0)
            fail_msg("openssl s_server did not start");
        assert_true(poll(&pf, 1, (int)(left * 1000) + 1) >= 0);
        ssize_t n = read(sv->out, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            fail_msg("openssl s_server exited: %.*s", (int)len, buf);
        len += (size_t)n;
        buf[len] = '\0';
        char *a = strstr(buf, "ACCEPT 127.0.0.1:");
        if (a != NULL && strchr(a, '\n') != NULL)
            sv->port = atoi(a + strlen("ACCEPT 127.0.0.1:"));
    }
    assert_true(sv->port > 0 && sv->port < 65536);
}

static void
sserver_stop(struct sserver *sv)
{
    int st;
    kill(sv->pid, SIGTERM);
    waitpid(sv->pid, &st, 0);
    close(sv->out);
}

/* A non-blocking TCP connection to 127.0.0.1:port, connected (bounded wait). */
static int
tcp_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        assert_int_equal(errno, EINPROGRESS);
        struct pollfd pf = {fd, POLLOUT, 0};
        assert_int_equal(poll(&pf, 1, 5000), 1);
        int err = 0;
        socklen_t el = sizeof err;
        assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el), 0);
        assert_int_equal(err, 0);
    }
    return fd;
}

/* Against openssl s_server: verified TLS 1.3 with SNI, then a line echoed reversed. */
static void
test_s_server_verified(void **state)
{
    struct fx *f = *state;
    struct sserver sv;
    sserver_start(&sv, "");
    struct tlsctx *t = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct side c = {tsock(tcp_connect(sv.port)), 0, ""}, none = {NULL, 0, ""};
    handshake(&c, t, "test.local", &none, NULL);
    if (c.r != 1)
        fail_msg("handshake failed: %s", c.detail);
    check_info(c.s, NULL, "test.local", 1, fp_server);
    json_t *o = tls_info(c.s);
    assert_string_equal(json_string_value(json_object_get(o, "version")), "TLSv1.3");
    json_decref(o);

    static const char line[] = "hello sockd\n";
    const char *p = line;
    size_t left = strlen(line);
    double end = now_s() + 10;
    while (left > 0) {
        ssize_t m = transport_tls.write(c.s, p, left);
        if (m > 0) {
            p += m;
            left -= (size_t)m;
            continue;
        }
        assert_int_equal(errno, EAGAIN);
        struct pollfd pf = {c.s->fd, want_events(c.s), 0};
        assert_true(end > now_s());
        poll(&pf, 1, 1000);
    }
    char buf[64];
    size_t have = 0;
    while (have == 0 || buf[have - 1] != '\n') {
        int err;
        ssize_t m = read_until(c.s, buf + have, sizeof buf - have, &err);
        if (m <= 0)
            fail_msg("read: %zd errno %d (%s)", m, err, tls_last_error());
        have += (size_t)m;
    }
    assert_int_equal(have, strlen(line));
    assert_memory_equal(buf, "dkcos olleh\n", have);

    /* Our close_notify goes out; the connection is then closed. */
    assert_int_equal(tls_close_notify(c.s), 1);
    tsock_free(c.s);
    sserver_stop(&sv);
}

/* openssl s_server limited to TLS 1.2: fine for a tls1.2 context, refused by a tls1.3 one. */
static void
test_s_server_versions(void **state)
{
    struct fx *f = *state;
    struct sserver sv;
    struct side none = {NULL, 0, ""};

    sserver_start(&sv, "-tls1_2");
    struct tlsctx *t12 = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct side c = {tsock(tcp_connect(sv.port)), 0, ""};
    handshake(&c, t12, "127.0.0.1", &none, NULL);
    if (c.r != 1)
        fail_msg("handshake failed: %s", c.detail);
    json_t *o = tls_info(c.s);
    assert_string_equal(json_string_value(json_object_get(o, "version")), "TLSv1.2");
    assert_true(json_is_true(json_object_get(o, "verified")));
    json_decref(o);
    tsock_free(c.s);
    sserver_stop(&sv);

    sserver_start(&sv, "-tls1_2");
    struct tlsctx *t13 = mkctx(f, json_pack("{s:s,s:s}", "ca", pem.ca, "min_version", "tls1.3"),
                               NULL, NULL, NULL, NULL);
    c.s = tsock(tcp_connect(sv.port));
    handshake(&c, t13, "test.local", &none, NULL);
    expect_detail(&c, "protocol version");
    tsock_free(c.s);
    sserver_stop(&sv);
}

static void
test_verify_failures(void **state)
{
    struct fx *f = *state;
    struct tlsctx *trusting = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct tlsctx *other = mkctx(f, json_pack("{s:s}", "ca", pem.other), NULL, NULL, NULL, NULL);
    struct tlsctx *system = mkctx(f, NULL, NULL, NULL, NULL, NULL);
    struct tlsctx *good = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    struct tlsctx *expired = mkctx(f, NULL, pem.expired, pem.expired_key, NULL, NULL);
    struct tlsctx *self = mkctx(f, NULL, pem.self, pem.self_key, NULL, NULL);
    static const struct {
        int client, server;
        const char *name, *want;
    } cases[] = {
        {0, 3, "wrong.local", "hostname mismatch"},
        {0, 3, "::1", "IP address mismatch"},
        {1, 3, "test.local", "unable to get local issuer certificate"},
        {2, 3, "test.local", "unable to get local issuer certificate"},
        {0, 4, "test.local", "certificate has expired"},
        {0, 5, "test.local", "self-signed certificate"},
        {2, 5, "test.local", "self-signed certificate"},
    };
    struct tlsctx *ctxs[] = {trusting, other, system, good, expired, self};
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
        tpair(&c.s, &s.s);
        handshake(&c, ctxs[cases[i].client], cases[i].name, &s, ctxs[cases[i].server]);
        expect_detail(&c, "certificate verify failed");
        expect_detail(&c, cases[i].want);
        /* The server learns of it through the alert (or the closed connection). */
        assert_int_equal(s.r, -1);
        tsock_free(c.s);
        tsock_free(s.s);
    }

    /* The same pairs with the right name and anchor succeed. */
    static const char *const names[] = {"test.local", "127.0.0.1", "TEST.LOCAL", "test.local."};
    for (size_t i = 0; i < NELEM(names); i++) {
        struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
        tpair(&c.s, &s.s);
        handshake(&c, trusting, names[i], &s, good);
        if (c.r != 1 || s.r != 1)
            fail_msg("%s: client %d (%s), server %d (%s)", names[i], c.r, c.detail, s.r, s.detail);
        /* A literal address is checked against the IP SAN and never sent as SNI. */
        const char *sni = strcmp(names[i], "127.0.0.1") == 0     ? NULL
                          : strcmp(names[i], "test.local.") == 0 ? "test.local"
                                                                 : names[i];
        check_info(c.s, NULL, sni, 1, fp_server);
        check_info(s.s, NULL, sni, 0, NULL);
        tsock_free(c.s);
        tsock_free(s.s);
    }
}

static void
test_no_host_name(void **state)
{
    struct fx *f = *state;
    struct tlsctx *verifying = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct tlsctx *lax = mkctx(f, json_pack("{s:b}", "verify", 0), NULL, NULL, NULL, NULL);
    struct tlsctx *server = mkctx(f, NULL, pem.self, pem.self_key, NULL, NULL);
    struct tlsctx *nocert = mkctx(f, NULL, NULL, NULL, NULL, NULL);
    char d[DETAIL];
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    tpair(&c.s, &s.s);
    int refs = verifying->refs;
    /* An empty name is refused, never taken as "no check"; the socket is left as it was. */
    static const char *const empty[] = {NULL, "", "[]"};
    for (size_t i = 0; i < NELEM(empty); i++) {
        d[0] = '\0';
        assert_int_equal(tls_start(c.s, verifying, 0, empty[i], d, sizeof d), -1);
        assert_string_equal(d, "no host name to verify");
        assert_null(sock_ssl(c.s));
        assert_true(c.s->tls == NULL || c.s->tls->ctx == NULL);
        assert_int_equal(verifying->refs, refs);
    }
    char huge[400];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    assert_int_equal(tls_start(c.s, verifying, 0, huge, d, sizeof d), -1);
    assert_null(sock_ssl(c.s));
    /* A server needs a certificate. */
    assert_int_equal(tls_start(s.s, nocert, 1, NULL, d, sizeof d), -1);
    assert_string_equal(d, "the context has no server certificate");
    assert_null(sock_ssl(s.s));

    /* verify:false: no name needed, no SNI sent, verified:false, the peer still fingerprinted. */
    handshake(&c, lax, NULL, &s, server);
    if (c.r != 1 || s.r != 1)
        fail_msg("client %d (%s), server %d (%s)", c.r, c.detail, s.r, s.detail);
    assert_int_equal(lax->refs, 2); /* the handle + this socket */
    check_info(c.s, NULL, NULL, 0, fp_self);
    check_info(s.s, NULL, NULL, 0, NULL);
    assert_int_equal(tls_start(c.s, lax, 0, NULL, d, sizeof d), -1); /* already running */
    tsock_free(c.s);
    tsock_free(s.s);

    /* verify:false with a name: SNI is sent, still reported unverified. */
    tpair(&c.s, &s.s);
    handshake(&c, lax, "test.local", &s, server);
    assert_int_equal(c.r, 1);
    check_info(c.s, NULL, "test.local", 0, fp_self);
    check_info(s.s, NULL, "test.local", 0, NULL);
    tsock_free(c.s);
    tsock_free(s.s);
}

static void
test_alpn(void **state)
{
    struct fx *f = *state;
    struct tlsctx *c_both =
        mkctx(f, json_pack("{s:b,s:[s,s]}", "verify", 0, "alpn", "h2", "http/1.1"), NULL, NULL,
              NULL, NULL);
    struct tlsctx *c_h2 =
        mkctx(f, json_pack("{s:b,s:[s]}", "verify", 0, "alpn", "h2"), NULL, NULL, NULL, NULL);
    struct tlsctx *c_none = mkctx(f, json_pack("{s:b}", "verify", 0), NULL, NULL, NULL, NULL);
    struct tlsctx *s_pref = mkctx(f, json_pack("{s:[s,s]}", "alpn", "http/1.1", "h2"), pem.server,
                                  pem.server_key, NULL, NULL);
    struct tlsctx *s_http =
        mkctx(f, json_pack("{s:[s]}", "alpn", "http/1.1"), pem.server, pem.server_key, NULL, NULL);
    struct tlsctx *s_none = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    static const struct {
        int client, server;
        const char *alpn; /* NULL: none; "!" failure */
    } cases[] = {
        {0, 3, "http/1.1"}, /* the server's preference among those offered */
        {1, 3, "h2"},       {0, 4, "http/1.1"}, {1, 4, "!"}, /* no overlap: the handshake fails */
        {2, 3, NULL},                                        /* client offers none */
        {0, 5, NULL},                                        /* server has no list */
    };
    struct tlsctx *ctxs[] = {c_both, c_h2, c_none, s_pref, s_http, s_none};
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
        tpair(&c.s, &s.s);
        handshake(&c, ctxs[cases[i].client], NULL, &s, ctxs[cases[i].server]);
        if (cases[i].alpn != NULL && strcmp(cases[i].alpn, "!") == 0) {
            expect_detail(&s, "no application protocol");
            expect_detail(&c, "no application protocol");
        } else {
            if (c.r != 1 || s.r != 1)
                fail_msg("case %zu: client %d (%s), server %d (%s)", i, c.r, c.detail, s.r,
                         s.detail);
            check_info(c.s, cases[i].alpn, NULL, 0, fp_server);
            check_info(s.s, cases[i].alpn, NULL, 0, NULL);
        }
        tsock_free(c.s);
        tsock_free(s.s);
    }

    /* set_alpn changes the list for new handshakes: now h2 only on the server. */
    json_decref(
        rpc_ok(f, "context.set_alpn",
               json_pack("{s:I,s:[s]}", "context", (json_int_t)s_http->id, "protocols", "h2")));
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    tpair(&c.s, &s.s);
    handshake(&c, c_h2, NULL, &s, s_http);
    assert_int_equal(c.r, 1);
    check_info(s.s, "h2", NULL, 0, NULL);
    tsock_free(c.s);
    tsock_free(s.s);
}

static void
test_client_certificates(void **state)
{
    struct fx *f = *state;
    char *client_both = cat2(pem.client, pem.client_key);
    struct tlsctx *with = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, client_both, NULL);
    free(client_both);
    struct tlsctx *without = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct tlsctx *untrusted =
        mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, pem.self, pem.self_key);
    struct tlsctx *require =
        mkctx(f, json_pack("{s:s,s:s}", "ca", pem.ca, "verify_client", "require"), pem.server,
              pem.server_key, NULL, NULL);
    struct tlsctx *optional =
        mkctx(f, json_pack("{s:s,s:s}", "ca", pem.ca, "verify_client", "optional"), pem.server,
              pem.server_key, NULL, NULL);
    struct tlsctx *none =
        mkctx(f, json_pack("{s:s}", "ca", pem.ca), pem.server, pem.server_key, NULL, NULL);
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    char buf[16];
    int err;

    /* require + a certificate from the CA: verified both ways. */
    tpair(&c.s, &s.s);
    handshake(&c, with, "test.local", &s, require);
    if (c.r != 1 || s.r != 1)
        fail_msg("client %d (%s), server %d (%s)", c.r, c.detail, s.r, s.detail);
    check_info(c.s, NULL, "test.local", 1, fp_server);
    check_info(s.s, NULL, "test.local", 1, fp_client);
    xfer(c.s, s.s, (const unsigned char *)"ping", 4);
    xfer(s.s, c.s, (const unsigned char *)"pong", 4);
    tsock_free(c.s);
    tsock_free(s.s);

    /* require, no certificate: the server fails; the client learns it at once or on read. */
    tpair(&c.s, &s.s);
    handshake(&c, without, "test.local", &s, require);
    expect_detail(&s, "peer did not return a certificate");
    if (c.r == 1) {
        assert_int_equal(read_until(c.s, buf, sizeof buf, &err), -1);
        assert_int_equal(err, EPROTO);
        if (strstr(tls_last_error(), "certificate required") == NULL)
            fail_msg("read error: %s", tls_last_error());
    } else {
        expect_detail(&c, "certificate required");
    }
    tsock_free(c.s);
    tsock_free(s.s);

    /* require, a certificate from elsewhere: refused with the verification reason. */
    tpair(&c.s, &s.s);
    handshake(&c, untrusted, "test.local", &s, require);
    expect_detail(&s, "certificate verify failed");
    expect_detail(&s, "self-signed certificate");
    tsock_free(c.s);
    tsock_free(s.s);

    /* optional, none given: fine, not verified. */
    tpair(&c.s, &s.s);
    handshake(&c, without, "test.local", &s, optional);
    assert_int_equal(c.r, 1);
    assert_int_equal(s.r, 1);
    check_info(s.s, NULL, "test.local", 0, NULL);
    xfer(c.s, s.s, (const unsigned char *)"x", 1);
    tsock_free(c.s);
    tsock_free(s.s);

    /* optional, given: verified. */
    tpair(&c.s, &s.s);
    handshake(&c, with, "test.local", &s, optional);
    assert_int_equal(s.r, 1);
    check_info(s.s, NULL, "test.local", 1, fp_client);
    tsock_free(c.s);
    tsock_free(s.s);

    /* none: the server does not ask; nothing is presented. */
    tpair(&c.s, &s.s);
    handshake(&c, with, "test.local", &s, none);
    assert_int_equal(s.r, 1);
    check_info(s.s, NULL, "test.local", 0, NULL);
    tsock_free(c.s);
    tsock_free(s.s);

    /* disable_client_certificate: new handshakes present none and fail against require. */
    json_decref(rpc_ok(f, "context.disable_client_certificate",
                       json_pack("{s:I}", "context", (json_int_t)with->id)));
    tpair(&c.s, &s.s);
    handshake(&c, with, "test.local", &s, require);
    expect_detail(&s, "peer did not return a certificate");
    tsock_free(c.s);
    tsock_free(s.s);
}

static void
test_close_notify_and_truncation(void **state)
{
    struct fx *f = *state;
    struct tlsctx *cl = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct tlsctx *sv = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    char buf[64];
    int err;

    /* The client closes cleanly: the server reads 0 with tls_clean_eof, answers in kind. */
    tpair(&c.s, &s.s);
    handshake(&c, cl, "test.local", &s, sv);
    assert_int_equal(c.r, 1);
    xfer(s.s, c.s, (const unsigned char *)"before", 6);
    assert_int_equal(tls_close_notify(c.s), 1);
    assert_int_equal(tls_close_notify(c.s), 1); /* a second call does nothing */
    assert_int_equal(read_until(s.s, buf, sizeof buf, &err), 0);
    assert_int_equal(s.s->tls->clean_eof, 1);
    assert_int_equal(tls_close_notify(s.s), 1);
    assert_int_equal(read_until(c.s, buf, sizeof buf, &err), 0);
    assert_int_equal(c.s->tls->clean_eof, 1);
    tsock_free(c.s);
    tsock_free(s.s);

    /* The server closes cleanly with data still unread by the client: data first, then 0. */
    tpair(&c.s, &s.s);
    handshake(&c, cl, "test.local", &s, sv);
    ssize_t m = transport_tls.write(s.s, "tail", 4);
    assert_int_equal(m, 4);
    assert_int_equal(tls_close_notify(s.s), 1);
    assert_int_equal(read_until(c.s, buf, sizeof buf, &err), 4);
    assert_memory_equal(buf, "tail", 4);
    assert_int_equal(read_until(c.s, buf, sizeof buf, &err), 0);
    assert_int_equal(c.s->tls->clean_eof, 1);
    tsock_free(c.s);
    tsock_free(s.s);

    /* The peer's fd closes without close_notify: ECONNRESET, no clean EOF. Both directions. */
    for (int who = 0; who < 2; who++) {
        tpair(&c.s, &s.s);
        handshake(&c, cl, "test.local", &s, sv);
        assert_int_equal(s.r, 1);
        struct sock *gone = who ? c.s : s.s, *left = who ? s.s : c.s;
        /* Both ways, so nothing is left unread in the closing end (else the kernel resets). */
        xfer(left, gone, (const unsigned char *)"bye", 3);
        xfer(gone, left, (const unsigned char *)"last words", 10);
        close(gone->fd);
        gone->fd = -1;
        assert_int_equal(read_until(left, buf, sizeof buf, &err), -1);
        assert_int_equal(err, ECONNRESET);
        assert_int_equal(left->tls->clean_eof, 0);
        if (strstr(tls_last_error(), "close_notify") == NULL)
            fail_msg("read error: %s", tls_last_error());
        tsock_free(c.s);
        tsock_free(s.s);
    }

    /* close_notify during a handshake: nothing to send, done at once. */
    tpair(&c.s, &s.s);
    char d[DETAIL];
    assert_int_equal(tls_start(c.s, cl, 0, "test.local", d, sizeof d), 0);
    assert_int_equal(tls_handshake(c.s, d, sizeof d), 0);
    assert_int_equal(c.s->tls->want, EV_READ);
    assert_int_equal(tls_close_notify(c.s), 1);
    tsock_free(c.s);
    tsock_free(s.s);
}

/* Much more than the socket buffers hold, both ways: partial writes, EAGAIN, pending data. */
static void
test_bulk_transfer(void **state)
{
    struct fx *f = *state;
    struct tlsctx *cl = mkctx(f, json_pack("{s:b}", "verify", 0), NULL, NULL, NULL, NULL);
    struct tlsctx *sv = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    size_t n = 3u << 20;
    unsigned char *data = malloc(n);
    assert_non_null(data);
    for (size_t i = 0; i < n; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    tpair(&c.s, &s.s);
    handshake(&c, cl, NULL, &s, sv);
    assert_int_equal(c.r, 1);
    xfer(c.s, s.s, data, n);
    xfer(s.s, c.s, data + 1, n - 1);
    /* A write of nothing is nothing. */
    assert_int_equal(transport_tls.write(c.s, data, 0), 0);
    /* Small reads leave the rest of a record pending inside the transport. */
    xfer(s.s, c.s, data, 1); /* flush tickets etc. */
    ssize_t m = transport_tls.write(s.s, data, 1000);
    assert_int_equal(m, 1000);
    unsigned char small[10];
    int err;
    assert_int_equal(read_until(c.s, small, sizeof small, &err), 10);
    assert_int_equal(transport_tls.pending(c.s), 990);
    assert_memory_equal(small, data, 10);
    tsock_free(c.s);
    tsock_free(s.s);
    free(data);
}

/* context.destroy while sockets use it; a new certificate for new handshakes only. */
static void
test_refcount_and_new_certificate(void **state)
{
    struct fx *f = *state;
    struct tlsctx *cl = mkctx(f, json_pack("{s:s}", "ca", pem.ca), NULL, NULL, NULL, NULL);
    struct tlsctx *sv = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    char d[DETAIL];
    unsigned live = tlsctx_count();

    /* Start a server socket, then change the certificate before its handshake runs. */
    tpair(&c.s, &s.s);
    assert_int_equal(tls_start(s.s, sv, 1, NULL, d, sizeof d), 0);
    assert_int_equal(sv->refs, 2);
    json_t *p = json_pack("{s:I,s:s,s:s,s:s}", "context", (json_int_t)sv->id, "cert", pem.leaf2,
                          "key", pem.leaf2_key, "chain", pem.inter);
    expect_fp(rpc_ok(f, "context.set_server_certificate", p), fp_leaf2);
    /* Destroy both handles: no new use, but the sockets keep working. */
    assert_int_equal(tls_start(c.s, cl, 0, "test.local", d, sizeof d), 0);
    json_decref(rpc_ok(f, "context.destroy", json_pack("{s:I}", "context", (json_int_t)sv->id)));
    json_decref(rpc_ok(f, "context.destroy", json_pack("{s:I}", "context", (json_int_t)cl->id)));
    assert_null(f->c->owner.ctxs);
    assert_int_equal(tlsctx_count(), live);
    assert_null(sv->owner);
    assert_int_equal(sv->refs, 1);
    pump(&c, &s);
    if (c.r != 1 || s.r != 1)
        fail_msg("client %d (%s), server %d (%s)", c.r, c.detail, s.r, s.detail);
    /* The socket started before the change still has the old certificate. */
    check_info(c.s, NULL, "test.local", 1, fp_server);
    xfer(c.s, s.s, (const unsigned char *)"still here", 10);

    /* A new connection on the (destroyed but referenced) contexts gets the new one, chain
     * included: the client only trusts the root. */
    struct side c2 = {NULL, 0, ""}, s2 = {NULL, 0, ""};
    tpair(&c2.s, &s2.s);
    handshake(&c2, cl, "test.local", &s2, sv);
    if (c2.r != 1 || s2.r != 1)
        fail_msg("client %d (%s), server %d (%s)", c2.r, c2.detail, s2.r, s2.detail);
    check_info(c2.s, NULL, "test.local", 1, fp_leaf2);
    assert_int_equal(sv->refs, 2);

    tsock_free(c.s);
    tsock_free(s.s);
    assert_int_equal(tlsctx_count(), live);
    tsock_free(c2.s);
    tsock_free(s2.s);
    /* The last sockets gone: both contexts freed. */
    assert_int_equal(tlsctx_count(), live - 2);
}

/* A generated certificate serves a handshake; the client pins it by fingerprint. */
static void
test_generated_in_handshake(void **state)
{
    struct fx *f = *state;
    struct tlsctx *sv = mkctx(f, NULL, NULL, NULL, NULL, NULL);
    struct tlsctx *cl = mkctx(f, json_pack("{s:b}", "verify", 0), NULL, NULL, NULL, NULL);
    json_t *r = rpc_ok(f, "context.generate_certificate",
                       json_pack("{s:I,s:s,s:s}", "context", (json_int_t)sv->id, "role", "server",
                                 "common_name", "pinned"));
    char fp[TLSCTX_FP_MAX];
    snprintf(fp, sizeof fp, "%s", json_string_value(json_object_get(r, "fingerprint")));
    json_decref(r);
    json_decref(rpc_ok(f, "context.generate_certificate",
                       json_pack("{s:I,s:s}", "context", (json_int_t)cl->id, "role", "client")));
    json_decref(rpc_ok(f, "context.create", json_object())); /* unrelated, stays alive */
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    tpair(&c.s, &s.s);
    handshake(&c, cl, NULL, &s, sv);
    if (c.r != 1 || s.r != 1)
        fail_msg("client %d (%s), server %d (%s)", c.r, c.detail, s.r, s.detail);
    check_info(c.s, NULL, NULL, 0, fp);
    xfer(c.s, s.s, (const unsigned char *)"pinned", 6);
    tsock_free(c.s);
    tsock_free(s.s);
}

/* Whether tls_info says the handshake resumed. */
static int
info_resumed(struct sock *s)
{
    json_t *o = tls_info(s);
    json_t *r = json_object_get(o, "resumed");
    if (!json_is_boolean(r))
        fail_msg("tls.resumed: %s", show(o));
    int v = json_is_true(r);
    json_decref(o);
    return v;
}

/* One TLS 1.2 handshake of client context cl to server context sv as name; returns resumed. */
static int
resume_once(struct tlsctx *cl, struct tlsctx *sv, const char *name)
{
    struct side c = {NULL, 0, ""}, s = {NULL, 0, ""};
    tpair(&c.s, &s.s);
    handshake(&c, cl, name, &s, sv);
    if (c.r != 1 || s.r != 1)
        fail_msg("%s: client %d (%s), server %d (%s)", name, c.r, c.detail, s.r, s.detail);
    int r = info_resumed(c.s);
    assert_int_equal(info_resumed(s.s), r);
    tsock_free(c.s); /* no close_notify: the session stays usable */
    tsock_free(s.s);
    return r;
}

/*
 * The client session cache is bounded: after TLSSESS_MAX + 1 names the least recently used
 * name's session is gone and the newest one's resumes; a new client certificate forgets them
 * all; session_cache:false keeps none.
 */
static void
test_session_cache_bounds(void **state)
{
    struct fx *f = *state;
    struct tlsctx *sv = mkctx(f, NULL, pem.server, pem.server_key, NULL, NULL);
    struct tlsctx *cl = mkctx(f, json_pack("{s:b}", "verify", 0), NULL, NULL, NULL, NULL);
    char name[32];

    /* TLS 1.2: the session comes in the handshake, no read needed */
    assert_int_equal(SSL_CTX_set_max_proto_version(sv->server_ctx, TLS1_2_VERSION), 1);
    SSL_CTX_sess_set_cache_size(sv->server_ctx, 2 * TLSSESS_MAX);
    for (int i = 0; i <= TLSSESS_MAX; i++) {
        snprintf(name, sizeof name, "n%d.test", i);
        assert_int_equal(resume_once(cl, sv, name), 0);
    }
    assert_int_equal(resume_once(cl, sv, "n0.test"), 0); /* the oldest went */
    snprintf(name, sizeof name, "n%d.test", TLSSESS_MAX);
    assert_int_equal(resume_once(cl, sv, name), 1);
    assert_int_equal(resume_once(cl, sv, "n2.test"), 1);

    json_decref(rpc_ok(f, "context.set_client_certificate",
                       json_pack("{s:I,s:s,s:s}", "context", (json_int_t)cl->id, "cert", pem.client,
                                 "key", pem.client_key)));
    assert_int_equal(resume_once(cl, sv, "n2.test"), 0);
    assert_int_equal(resume_once(cl, sv, "n2.test"), 1);

    struct tlsctx *off =
        mkctx(f, json_pack("{s:b,s:b}", "verify", 0, "session_cache", 0), NULL, NULL, NULL, NULL);
    assert_int_equal(resume_once(off, sv, "n2.test"), 0);
    assert_int_equal(resume_once(off, sv, "n2.test"), 0);
}

int
main(void)
{
#define TF(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        TF(test_create_and_fingerprints),
        TF(test_bad_material),
        TF(test_generate_certificate),
        TF(test_dtls_flags),
        TF(test_unknown_and_foreign_handles),
        TF(test_s_server_verified),
        TF(test_session_cache_bounds),
        TF(test_s_server_versions),
        TF(test_verify_failures),
        TF(test_no_host_name),
        TF(test_alpn),
        TF(test_client_certificates),
        TF(test_close_notify_and_truncation),
        TF(test_bulk_transfer),
        TF(test_refcount_and_new_certificate),
        TF(test_generated_in_handshake),
    };
#undef TF
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
