/*
 * Hostile clients on the control channel: input and output caps, the per-uid budgets of control
 * queues and of TLS contexts, batches split across loop turns, fd attribution, names that are
 * not UTF-8-safe to cut, blocking clients, handles named by another uid (sockd(8) SECURITY
 * MODEL).
 *
 * The daemon runs as root (the test runs as root); every attacker connects as uid/gid 65534
 * (h_client_nobody: a child drops its ids, then connects).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sockd/protocol.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;

static int
teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

/* ---- a raw control connection of uid 65534, read and written by hand ---- */

struct raw {
    int fd;
    char *buf; /* bytes read and not yet returned as lines */
    size_t len, cap;
};

static struct raw R; /* one attacker per test; closed by teardown */

/* A raw control connection of uid 65534 (blocking fd). */
static struct raw *
raw_nobody(void)
{
    h_daemon_open_to_all(&D);
    R.fd = h_connect_as(D.sock, H_NOBODY, H_NOBODY);
    EXPECT_TRUE(R.fd >= 0, "R.fd >= 0");
    R.len = 0;
    return &R;
}

static void
raw_close(struct raw *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
    r->len = r->cap = 0;
}

/* Write all n bytes, waiting (bounded) while the daemon does not read; fails on a stall. */
static void
raw_conn_write(struct raw *r, const void *p, size_t n)
{
    const char *q = p;
    while (n > 0) {
        struct pollfd pf = {r->fd, POLLOUT, 0};
        if (poll(&pf, 1, H_TIMEOUT_MS) != 1) {
            fprintf(stderr, "the daemon stopped reading our requests (%zu bytes left)\n", n);
            fail();
        }
        ssize_t k = send(r->fd, q, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        EXPECT_TRUE(k > 0, "k > 0");
        q += k;
        n -= (size_t)k;
    }
}

/* Bytes ready to read right now (0: none). */
static int
raw_conn_readable(struct raw *r)
{
    struct pollfd pf = {r->fd, POLLIN, 0};
    return r->len > 0 || poll(&pf, 1, 0) == 1;
}

/* Read what is there (waiting up to ms for something); -1 on EOF. */
static int
raw_fill(struct raw *r, int ms)
{
    struct pollfd pf = {r->fd, POLLIN, 0};
    if (poll(&pf, 1, ms) != 1)
        return 0;
    if (r->cap - r->len < 65536) {
        r->cap = r->cap * 2 + 65536;
        r->buf = realloc(r->buf, r->cap);
        EXPECT_TRUE(r->buf != NULL, "r->buf");
    }
    ssize_t k = recv(r->fd, r->buf + r->len, r->cap - r->len, MSG_DONTWAIT);
    if (k == 0)
        return -1;
    if (k > 0)
        r->len += (size_t)k;
    return 0;
}

/* The next line as JSON (asserts it comes within ms and parses). */
static json_t *
raw_line(struct raw *r, int ms)
{
    long long end = h_now_ms() + ms;
    for (;;) {
        char *nl = r->len > 0 ? memchr(r->buf, '\n', r->len) : NULL;
        if (nl != NULL) {
            json_error_t e;
            size_t n = (size_t)(nl - r->buf);
            json_t *m = json_loadb(r->buf, n, 0, &e);
            if (m == NULL)
                fprintf(stderr, "bad line from the daemon: %s: %.200s\n", e.text, r->buf);
            EXPECT_TRUE(m != NULL, "m");
            memmove(r->buf, nl + 1, r->len - n - 1);
            r->len -= n + 1;
            return m;
        }
        long long left = end - h_now_ms();
        if (left <= 0) {
            fprintf(stderr, "no line within %d ms\n", ms);
            fail();
        }
        EXPECT_INT(raw_fill(r, (int)left), 0, "raw_fill(r, (int)left)");
    }
}

/* The next line that is a response (notifications before it are dropped). */
static json_t *
raw_response(struct raw *r, int ms)
{
    for (;;) {
        json_t *m = raw_line(r, ms);
        if (!json_is_object(m) || json_object_get(m, "method") == NULL)
            return m;
        json_decref(m);
    }
}

/* Send one request line built from fmt and read its response's error code (0: a result). */
static int
raw_call_code(struct raw *r, const char *line, json_t **resp_out)
{
    raw_conn_write(r, line, strlen(line));
    json_t *m = raw_response(r, H_TIMEOUT_MS);
    json_t *err = json_object_get(m, "error");
    int code = err != NULL ? (int)json_integer_value(json_object_get(err, "code")) : 0;
    if (resp_out != NULL)
        *resp_out = m;
    else
        json_decref(m);
    return code;
}

/* Send one request line that must succeed; the integer member key of its result. */
static long long
raw_result_int(struct raw *r, const char *line, const char *key)
{
    json_t *m;
    EXPECT_INT(raw_call_code(r, line, &m), 0, "raw_call_code(r, line, &m)");
    long long v = json_integer_value(json_object_get(json_object_get(m, "result"), key));
    json_decref(m);
    return v;
}

static const char open_tcp[] =
    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"socket.open\",\"params\":{\"type\":\"tcp\"}}\n";

/* daemon.stats "requests" so far, asked on c. */
static long long
stats_requests(struct sockd_client *c)
{
    json_t *st = h_ok(c, "daemon.stats", NULL);
    long long n = json_integer_value(json_object_get(st, "requests"));
    json_decref(st);
    return n;
}

/* Test buffers, freed by the teardown even when a test fails half-way. */
static void *scratch[4];
static int nscratch;

static void *
scratch_alloc(size_t n)
{
    EXPECT_TRUE(nscratch < 4, "nscratch < 4");
    void *p = malloc(n);
    EXPECT_TRUE(p != NULL, "p");
    return scratch[nscratch++] = p;
}

/* More attackers' connections, closed by the teardown. */
static int more_fds[8];
static int nmore;

/* A connection of uid 65534, closed by the teardown. */
static int
more_nobody(void)
{
    EXPECT_TRUE(nmore < 8, "nmore < 8");
    h_daemon_open_to_all(&D);
    int fd = h_connect_as(D.sock, H_NOBODY, H_NOBODY);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    return more_fds[nmore++] = fd;
}

static int
teardown_raw(void **state)
{
    raw_close(&R);
    while (nmore > 0)
        close(more_fds[--nmore]);
    while (nscratch > 0)
        free(scratch[--nscratch]);
    return teardown(state);
}

/*
 * Start the daemon for a test that bounds its peak memory. A daemon built with AddressSanitizer
 * keeps freed memory in a quarantine of 256 MiB (its peak would be the quarantine): it gets
 * none, so that freed memory is reused as it is in a plain build.
 */
static void
start_for_memory(const char *conf)
{
    const char *old = getenv("ASAN_OPTIONS");
    char *saved = old != NULL ? strdup(old) : NULL, opts[1024];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", old != NULL ? old : "",
             old != NULL && old[0] != '\0' ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    h_daemon_start(&D, conf);
    if (saved != NULL)
        setenv("ASAN_OPTIONS", saved, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(saved);
}

/*
 * 5c. A batch of 3000 context.generate_certificate (each makes and signs a key and builds an
 * OpenSSL context) once ran in one go: another client waited for all of it. Now the batch is
 * split across loop turns and a certificate is a whole turn's work: root's stats and ping are
 * answered while the batch's answer has not come, the daemon having run only part of it; the
 * answer then comes whole and in order, and the notification that a member caused (the
 * connect at its head) comes after it.
 */
static void
test_ctl_batch_split(void **state)
{
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    enum { N = 3000 };
    struct sockd_client *root;
    struct raw *r;
    json_t *m;
    char line[256];

    (void)state;
    h_daemon_start(&D, NULL);
    root = h_client_auto(&D);
    r = raw_nobody();
    long long ctxh = raw_result_int(
        r, "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"context.create\"}\n", "context");
    long long s = raw_result_int(r, open_tcp, "socket");

    size_t cap = (size_t)N * 160 + 4096, n = 0;
    char *batch = scratch_alloc(cap);
    n += (size_t)snprintf(batch + n, cap - n,
                          "[{\"jsonrpc\":\"2.0\",\"id\":\"c\",\"method\":\"socket.connect\","
                          "\"params\":{\"socket\":%lld,\"address\":\"127.0.0.1:%d\"}}",
                          s, peer->port);
    for (int i = 1; i <= N; i++)
        n += (size_t)snprintf(batch + n, cap - n,
                              ",{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":"
                              "\"context.generate_certificate\",\"params\":{\"context\":%lld,"
                              "\"role\":\"server\"}}",
                              i, ctxh);
    /* a long base64 value, lifted out of the line before parsing, must survive the cut */
    unsigned char bytes[1536];
    memset(bytes, 's', sizeof bytes);
    char *b64 = h_b64(bytes, sizeof bytes);
    n += (size_t)snprintf(batch + n, cap - n,
                          ",{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"socket.send\","
                          "\"params\":{\"socket\":%lld,\"data\":\"%s\"}}]\n",
                          s, b64);
    free(b64);
    long long base = stats_requests(root);
    raw_conn_write(r, batch, n);

    /* Wait until the batch runs, then ask: the answer must not wait for the whole batch. */
    long long seen = base, end = h_now_ms() + H_TIMEOUT_MS;
    while ((seen = stats_requests(root)) <= base + 2 && h_now_ms() < end)
        h_sleep_ms(1);
    EXPECT_TRUE(seen > base + 2, "seen > base + 2");
    json_decref(h_ok(root, "daemon.ping", NULL));
    long long now = stats_requests(root);
    EXPECT_TRUE(!raw_conn_readable(r),
                "raw_conn_readable(r)");           /* the batch's answer has not come yet */
    EXPECT_TRUE(now - base < N, "now - base < N"); /* and most of the batch has not run */

    /* Then the answer, whole and in order, and only after it the connect's notification. */
    m = raw_line(r, 60000);
    EXPECT_TRUE(json_is_array(m), "json_is_array(m)");
    EXPECT_INT(json_array_size(m), N + 2, "json_array_size(m)");
    EXPECT_TRUE(json_is_string(json_object_get(json_array_get(m, 0), "id")), "%s", jd(m));
    for (int i = 1; i <= N; i++) {
        json_t *e = json_array_get(m, (size_t)i);
        EXPECT_INT(json_integer_value(json_object_get(e, "id")), i, "%s", jd(e));
        EXPECT_TRUE(json_object_get(e, "result") != NULL, "%s", jd(e));
    }
    json_t *sent = json_object_get(json_array_get(m, N + 1), "result");
    EXPECT_INT(json_integer_value(json_object_get(sent, "queued")), (json_int_t)sizeof bytes, "%s",
               jd(m));
    json_decref(m);
    m = raw_line(r, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_string(json_object_get(m, "method")) &&
                    strcmp(json_string_value(json_object_get(m, "method")), "socket.connected") ==
                        0,
                "%s", jd(m));
    json_decref(m);
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"daemon.ping\"}\n");
    EXPECT_INT(raw_call_code(r, line, NULL), 0, "raw_call_code(r, line, NULL)");
    h_daemon_stop(&D);
}

/* A self-signed certificate for key k (consumed) as PEM text (malloc'ed), the key's PEM after it
 * when with_key is set. */
static char *
self_signed_pem(EVP_PKEY *k, long serial, const char *cn, int with_key)
{
    X509 *x = X509_new();
    BIO *b = BIO_new(BIO_s_mem());
    char *p, *out;
    long n;

    EXPECT_TRUE(k != NULL && x != NULL && b != NULL, "key, certificate and BIO");
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    EXPECT_TRUE(X509_sign(x, k, EVP_sha256()) > 0, "X509_sign(x, k, EVP_sha256()) > 0");
    EXPECT_INT(PEM_write_bio_X509(b, x), 1, "PEM_write_bio_X509(b, x)");
    if (with_key)
        EXPECT_INT(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1,
                   "PEM_write_bio_PrivateKey");
    n = BIO_get_mem_data(b, &p);
    out = malloc((size_t)n + 1);
    EXPECT_TRUE(out != NULL, "out");
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(k);
    return out;
}

/* A self-signed certificate and its key as one PEM text (malloc'ed); RSA of that many bits. */
static char *
rsa_cert_pem(int bits)
{
    return self_signed_pem(EVP_RSA_gen((unsigned)bits), 1, "big", 1);
}

/*
 * 5c. A key of more than 4096 bits makes every handshake of the context take the loop for a
 * long time (an RSA signature grows with the cube of its size): it is refused with -32602
 * naming the param; 4096 bits and less are taken.
 */
static void
test_ctl_rsa_cap(void **state)
{
    struct sockd_client *nobody;
    json_t *err = NULL, *res;
    char *big = rsa_cert_pem(4608), *ok = rsa_cert_pem(2048);

    (void)state;
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    res = h_ok(nobody, "context.create", NULL);
    json_int_t ctxh = json_integer_value(json_object_get(res, "context"));
    json_decref(res);
    EXPECT_INT(h_err(nobody, &err, "context.set_server_certificate", "{s:I,s:s}", "context", ctxh,
                     "cert", big),
               SOCKD_E_INVALID_PARAMS, "context.set_server_certificate error code");
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(json_object_get(err, "data"), "param")),
                       "cert") == 0,
                "%s", jd(err));
    json_decref(err);
    json_decref(
        h_ok(nobody, "context.set_server_certificate", "{s:I,s:s}", "context", ctxh, "cert", ok));
    free(big);
    free(ok);
    sockd_client_close(nobody);
    h_daemon_stop(&D);
}

/* CPU time (user + system, in clock ticks) a process has used, from /proc. */
static long long
cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    EXPECT_TRUE(f != NULL, "%s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the fields after the command name */
    unsigned long long ut = 0, st = 0;
    EXPECT_TRUE(p != NULL && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                                    &ut, &st) == 2,
                "%s", buf);
    return (long long)(ut + st);
}

/* The answer to one batch line of n calls of method on c, the params of member i made from
 * fmt with handles[i] (a %lld in it). */
static json_t *
batch_call(struct sockd_client *c, const char *method, const char *fmt, int n,
           const json_int_t *handles)
{
    size_t cap = (size_t)n * 256 + 4, len = 0;
    char *line = malloc(cap), params[192];
    EXPECT_TRUE(line != NULL, "line");
    line[len++] = '[';
    for (int i = 0; i < n; i++) {
        snprintf(params, sizeof params, fmt, (long long)handles[i]);
        len += (size_t)snprintf(line + len, cap - len,
                                "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":%s}",
                                i > 0 ? "," : "", i, method, params);
    }
    snprintf(line + len, cap - len, "]\n");
    h_send_raw(c, line);
    free(line);
    json_t *answer = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_array(answer) && json_array_size(answer) == (size_t)n, "%s batch answer",
                method);
    return answer;
}

/*
 * 5c. A TLS server's handshake step signs with its key, some 4 ms for RSA-4096, and a client that
 * connected to its own listener many times at once had the loop do all of those steps in one
 * turn while everyone else waited. Now one turn does about 2 ms of handshake work before the
 * rest waits for the next: while uid 65534 runs 48 handshakes against a 4096-bit key (some
 * 200 ms of signing), each of root's pings waits for less than 50 ms of the daemon's CPU
 * (counted from /proc, not by a clock), and every handshake completes.
 */
static void
test_ctl_handshake_turns(void **state)
{
    enum { N = 48, MAX_TICKS = 5 };
    char *pem = rsa_cert_pem(4096);
    long long worst = 0, pings = 0;
    int connected = 0, accepted = 0;

    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *nb = h_client_nobody(&D), *root = h_client_auto(&D);
    json_t *r = h_ok(nb, "context.create", "{s:b}", "verify", 0);
    json_int_t sctx = json_integer_value(json_object_get(r, "context"));
    json_decref(r);
    json_decref(
        h_ok(nb, "context.set_server_certificate", "{s:I,s:s}", "context", sctx, "cert", pem));
    free(pem);
    r = h_ok(nb, "context.create", "{s:b,s:b}", "verify", 0, "session_cache", 0);
    json_int_t cctx = json_integer_value(json_object_get(r, "context"));
    json_decref(r);
    r = h_ok(nb, "socket.open", "{s:s,s:I}", "type", "tls", "context", sctx);
    json_int_t l = json_integer_value(json_object_get(r, "socket"));
    json_decref(r);
    r = h_ok(nb, "socket.bind", "{s:I,s:s}", "socket", l, "address", "127.0.0.1:0");
    int port = (int)json_integer_value(json_object_get(json_object_get(r, "local"), "port"));
    json_decref(r);
    json_decref(h_ok(nb, "socket.listen", "{s:I,s:b}", "socket", l, "auto_accept", 1));
    /* every socket made, then every connect in one line: the handshakes all start at once */
    char fmt[96];
    json_int_t socks[N];
    for (int i = 0; i < N; i++) {
        r = h_ok(nb, "socket.open", "{s:s,s:I}", "type", "tls", "context", cctx);
        socks[i] = json_integer_value(json_object_get(r, "socket"));
        json_decref(r);
    }
    snprintf(fmt, sizeof fmt, "{\"socket\":%%lld,\"address\":\"127.0.0.1:%d\"}", port);
    json_decref(batch_call(nb, "socket.connect", fmt, N, socks));
    long long end = h_now_ms() + 60000; /* a guard against a hang only */
    while ((connected < N || accepted < N) && h_now_ms() < end) {
        long long t0 = cpu_ticks(D.pid);
        json_decref(h_ok(root, "daemon.ping", NULL));
        long long t = cpu_ticks(D.pid) - t0;
        worst = t > worst ? t : worst;
        pings++;
        json_t *ev;
        while ((ev = sockd_client_next_event(nb, 0)) != NULL) {
            const char *m = json_string_value(json_object_get(ev, "method"));
            connected += m != NULL && strcmp(m, "socket.connected") == 0;
            accepted += m != NULL && strcmp(m, "socket.accepted") == 0;
            json_decref(ev);
        }
    }
    fprintf(stderr,
            "# %d RSA-4096 handshakes: %d connected, %d accepted; %lld pings of root, the worst "
            "waited for %lld ticks of the daemon's CPU\n",
            N, connected, accepted, pings, worst);
    EXPECT_INT(connected, N, "handshakes completed (client side)");
    EXPECT_INT(accepted, N, "handshakes completed (server side)");
    EXPECT_TRUE(worst <= MAX_TICKS, "a ping waited for %lld ticks of handshakes", worst);
    sockd_client_close(nb);
    h_daemon_stop(&D);
}

/*
 * 6a. A client that pipelines pings as fast as it can (reading its answers) once grew the
 * daemon by a gigabyte in seconds: its input was read without bound. Now reading stops at one
 * max-message line past the one being handled, so the daemon's peak memory hardly moves while
 * 48 MiB of pings go through, and another client is answered.
 */
static void
test_ctl_input_cap(void **state)
{
    static const char ping[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\n";
    enum { CHUNK = 64 * 1024, TOTAL = 48 << 20 };
    struct sockd_client *root;
    struct raw *r;
    char *chunk = scratch_alloc(CHUNK);
    size_t per = (CHUNK / (sizeof ping - 1)) * (sizeof ping - 1), sent = 0, off = 0;
    char sink[65536];

    (void)state;
    EXPECT_TRUE(chunk != NULL, "chunk");
    for (size_t i = 0; i + sizeof ping - 1 <= CHUNK; i += sizeof ping - 1)
        memcpy(chunk + i, ping, sizeof ping - 1);
    start_for_memory("max-message 4096\n");
    root = h_client_auto(&D);
    r = raw_nobody();
    json_decref(h_ok(root, "daemon.ping", NULL));
    long hwm0 = h_hwm_kib(D.pid);
    long long end = h_now_ms() + 60000; /* a guard against a hang only */
    while (sent < TOTAL && h_now_ms() < end) {
        struct pollfd pf = {r->fd, POLLIN | POLLOUT, 0};
        EXPECT_INT(poll(&pf, 1, H_TIMEOUT_MS), 1, "poll: %s", strerror(errno));
        if (pf.revents & POLLIN)
            EXPECT_TRUE(recv(r->fd, sink, sizeof sink, MSG_DONTWAIT) > 0, "recv: %s",
                        strerror(errno));
        if (pf.revents & POLLOUT) {
            ssize_t k = send(r->fd, chunk + off, per - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0) {
                sent += (size_t)k;
                off = (off + (size_t)k) % per;
            }
        }
    }
    EXPECT_TRUE(sent >= TOTAL, "sent >= TOTAL");
    json_decref(h_ok(root, "daemon.ping", NULL));
    long grown = h_hwm_kib(D.pid) - hwm0;
    fprintf(stderr, "# 48 MiB of pipelined pings: daemon VmHWM grew %ld KiB\n", grown);
    EXPECT_TRUE(grown < 16 * 1024, "grown < 16 * 1024");
    raw_close(r);
    h_daemon_stop(&D);
}

/* socket.open with a string tag of n bytes of JSON (n >= 2: its quotes count); the error code. */
static int
open_tagged(struct raw *r, char *line, size_t cap, size_t n)
{
    int k = snprintf(line, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.open\",\"params\":{"
                     "\"type\":\"tcp\",\"tag\":\"");
    EXPECT_TRUE(k > 0 && (size_t)k + n + 8 < cap, "k > 0 && (size_t)k + n + 8 < cap");
    memset(line + k, 'x', n - 2);
    memcpy(line + k + n - 2, "\"}}\n", 5);
    return raw_call_code(r, line, NULL);
}

/*
 * 6b. A tag is echoed in every socket.info: one of 1 MiB and a batch of socket.info once built
 * hundreds of MiB. Tags are at most 4096 bytes of JSON: above, -32602 naming "tag".
 */
static void
test_ctl_tag_cap(void **state)
{
    enum { CAP = (1 << 20) + 256 };
    char *line = scratch_alloc(CAP);
    struct raw *r;
    json_t *m;

    (void)state;
    h_daemon_start(&D, NULL);
    r = raw_nobody();
    EXPECT_INT(open_tagged(r, line, CAP, 4096), 0, "open_tagged(r, line, CAP, 4096)");
    EXPECT_INT(open_tagged(r, line, CAP, 4097), SOCKD_E_INVALID_PARAMS,
               "open_tagged(r, line, CAP, 4097)");
    EXPECT_INT(open_tagged(r, line, CAP, 1 << 20), SOCKD_E_INVALID_PARAMS,
               "open_tagged(r, line, CAP, 1 << 20)");
    int k = snprintf(line, CAP,
                     "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.open\",\"params\":{"
                     "\"type\":\"tcp\",\"tag\":{\"a\":[");
    for (int i = 0; i < 3000; i++) /* 6 KB, not a string */
        k += snprintf(line + k, CAP - (size_t)k, "%s1", i ? "," : "");
    snprintf(line + k, CAP - (size_t)k, "]}}}\n");
    EXPECT_INT(raw_call_code(r, line, &m), SOCKD_E_INVALID_PARAMS, "raw_call_code(r, line, &m)");
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(
                           json_object_get(json_object_get(m, "error"), "data"), "param")),
                       "tag") == 0,
                "%s", jd(m));
    json_decref(m);
    raw_close(r);
    h_daemon_stop(&D);
}

/*
 * 6b. An answer is serialised only up to the output cap: a batch of socket.list over 64
 * sockets with 4 KiB tags, whose answer would be 200 MiB, gets one -32003 error with limit
 * "max-output", and the daemon's peak memory stays well below the answer's size: it holds at
 * most the cap (64 MiB; about twice that in an AddressSanitizer build, whose realloc copies).
 */
static void
test_ctl_output_cap(void **state)
{
    enum { SOCKS = 64, LISTS = 800, CAP = 65536 };
    char *line = scratch_alloc(CAP);
    struct raw *r;
    json_t *m;

    (void)state;
    start_for_memory("max-message 65536\n");
    r = raw_nobody();
    for (int i = 0; i < SOCKS; i++)
        EXPECT_INT(open_tagged(r, line, CAP, 4096), 0, "open_tagged(r, line, CAP, 4096)");
    long hwm0 = h_hwm_kib(D.pid);
    size_t n = 0;
    n += (size_t)snprintf(line + n, 64, "[");
    for (int i = 0; i < LISTS; i++)
        n += (size_t)snprintf(line + n, 128,
                              "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":"
                              "\"socket.list\"}",
                              i ? "," : "", i);
    n += (size_t)snprintf(line + n, 8, "]\n");
    EXPECT_TRUE(n < 65536, "n < 65536");
    raw_conn_write(r, line, n);
    m = raw_line(r, 60000);
    if (!json_is_object(m)) { /* not dumped: it is 200 MiB */
        fprintf(stderr, "the answer was built whole (%zu members)\n", json_array_size(m));
        json_decref(m);
        fail();
    }
    EXPECT_TRUE(json_is_null(json_object_get(m, "id")), "%s", jd(m));
    json_t *err = json_object_get(m, "error");
    EXPECT_INT(json_integer_value(json_object_get(err, "code")), SOCKD_E_LIMIT, "%s", jd(m));
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(json_object_get(err, "data"), "limit")),
                       "max-output") == 0,
                "%s", jd(m));
    json_decref(m);
    long grown = h_hwm_kib(D.pid) - hwm0;
    fprintf(stderr, "# a 200 MiB answer refused: daemon VmHWM grew %ld KiB\n", grown);
    EXPECT_TRUE(grown < 160 * 1024, "grown < 160 * 1024");
    EXPECT_INT(
        raw_call_code(r, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"daemon.ping\"}\n", NULL), 0,
        "raw_call_code");
    raw_close(r);
    h_daemon_stop(&D);
}

/* Open sockets with 4 KiB tags on a raw connection of fd (their socket.list is about 66 KB). */
static void
open_tagged_on(int fd, char *line, size_t cap, int n)
{
    struct raw r = {fd, NULL, 0, 0};
    for (int i = 0; i < n; i++)
        EXPECT_INT(open_tagged(&r, line, cap, 4096), 0, "open_tagged");
    free(r.buf);
}

/* Whether the daemon has closed the connection fd (it stays unread: the hang-up shows). */
static int
hung_up(int fd)
{
    struct pollfd pf = {fd, POLLRDHUP, 0};
    return poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLRDHUP)) != 0;
}

/*
 * 6c. Every control connection may queue 64 MiB of output it does not read, and a user has 128
 * of them: one uid could make the daemon hold some 10 GiB. Now a connection that does not read
 * (its queue past 1 MiB) is disconnected once its user's control queues pass
 * max-control-buffer-per-uid: six connections of uid 65534 that ask for 16 MiB of socket.list
 * answers each and never read are all disconnected, the daemon's peak memory grows by far less
 * than the 96 MiB they asked for, and root is answered throughout.
 */
static void
test_ctl_output_budget(void **state)
{
    enum { CLIENTS = 6, SOCKS = 16, ROUNDS = 16, LISTS = 16, CAP = 8192 };
    static const char list[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.list\"}\n";
    char *line = scratch_alloc(CAP);
    int fds[CLIENTS], gone_at[CLIENTS];
    struct sockd_client *root;

    (void)state;
    start_for_memory("max-control-buffer-per-uid 8M\n");
    root = h_client_auto(&D);
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = more_nobody();
        gone_at[i] = -1;
        open_tagged_on(fds[i], line, CAP, SOCKS);
    }
    long rss0 = h_rss_kib(D.pid), hwm0 = h_hwm_kib(D.pid);
    size_t n = LISTS * (sizeof list - 1);
    for (int k = 0; k < LISTS; k++)
        memcpy(line + k * (sizeof list - 1), list, sizeof list - 1);
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CLIENTS; i++) {
            if (gone_at[i] >= 0)
                continue;
            /* 800 bytes of requests (1 MiB of answers): the socket buffer always takes them */
            ssize_t k = send(fds[i], line, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (k < 0 && errno == EPIPE) /* disconnected during the round before */
                gone_at[i] = round;
            else
                EXPECT_INT(k, (long long)n, "send: %s", strerror(errno));
        }
        json_decref(h_ok(root, "daemon.ping", NULL)); /* another user is served meanwhile */
    }
    long long end = h_now_ms() + H_TIMEOUT_MS;
    int left = CLIENTS;
    while (left > 0 && h_now_ms() < end) {
        left = 0;
        for (int i = 0; i < CLIENTS; i++) {
            if (gone_at[i] < 0 && hung_up(fds[i]))
                gone_at[i] = ROUNDS;
            left += gone_at[i] < 0;
        }
        json_decref(h_ok(root, "daemon.ping", NULL));
        if (left > 0)
            h_sleep_ms(20);
    }
    long hwm = h_hwm_kib(D.pid) - hwm0, rss = h_rss_kib(D.pid);
    fprintf(stderr,
            "# %d non-reading clients asking %d MiB each: %d still connected; daemon VmRSS %ld -> "
            "%ld KiB, VmHWM grew %ld KiB\n",
            CLIENTS, ROUNDS * LISTS * SOCKS * 4 / 1024, left, rss0, rss, hwm);
    for (int i = 0; i < CLIENTS; i++)
        fprintf(stderr, "# client %d: %s round %d\n", i, gone_at[i] < 0 ? "alive after" : "gone by",
                gone_at[i] < 0 ? ROUNDS : gone_at[i]);
    EXPECT_INT(left, 0, "clients that never read are still connected");
    json_t *st = h_ok(root, "daemon.stats", NULL);
    EXPECT_INT(json_integer_value(json_object_get(st, "clients")), 1, "%s", jd(st));
    json_decref(st);
    EXPECT_TRUE(hwm < 40 * 1024, "hwm < 40 * 1024");
    h_daemon_stop(&D);
}

/* context.create on c with params (NULL: {}; taken over): the handle, or 0 after an error whose
 * code and data.limit go to *code and limit (of at least 64 bytes). */
static json_int_t
try_context(struct sockd_client *c, json_t *params, int *code, char *limit)
{
    json_t *res = NULL, *err = NULL, *p = params != NULL ? params : json_object();
    int rc = sockd_client_call(c, "context.create", p, &res, &err, H_TIMEOUT_MS);
    json_decref(p);
    json_int_t h = json_integer_value(json_object_get(res, "context"));
    EXPECT_TRUE(rc == 0 || rc == 1, "context.create: rc %d", rc);
    *code = sockd_client_error_code(err);
    const char *l = json_string_value(json_object_get(json_object_get(err, "data"), "limit"));
    snprintf(limit, 64, "%s", l != NULL ? l : "");
    json_decref(res);
    json_decref(err);
    return h;
}

/*
 * 6d. A TLS context holds some 24 KiB, more with the certificates and CA text loaded into it, and
 * a user's 128 connections could each hold 4096 of them: gigabytes. Now a user's contexts count
 * in max-tls-memory-per-uid, 32 KiB each plus what their certificate, key, CA and CRL text
 * counts (twice its bytes and 4 KiB a PEM block).
 * With 1 MiB, uid 65534 makes exactly 32 plain contexts over two connections, then -32003
 * naming the budget on either; root still makes them; a destroyed context frees its share, but
 * only once no socket uses it, and a client that goes frees all of its; a certificate that would
 * pass the budget is refused (before it is parsed) and installs nothing.
 */
static void
test_ctl_tls_budget(void **state)
{
    enum { PLAIN = 32 }; /* 1 MiB / 32 KiB */
    struct sockd_client *a, *b, *root;
    json_int_t tctx[PLAIN + 1], h;
    int n = 0, code = 0;
    char limit[64];
    json_t *err = NULL;

    (void)state;
    h_daemon_start(&D, "max-tls-memory-per-uid 1M\n");
    a = h_client_nobody(&D);
    b = h_client_nobody(&D);
    root = h_client_auto(&D);
    while (n <= PLAIN && (h = try_context(n % 2 ? b : a, NULL, &code, limit)) > 0)
        tctx[n++] = h;
    EXPECT_INT(n, PLAIN, "plain contexts of one uid within 1 MiB");
    EXPECT_INT(code, SOCKD_E_LIMIT, "the one past the budget");
    EXPECT_STR(limit, "max-tls-memory-per-uid", "data.limit");
    EXPECT_INT(try_context(n % 2 ? a : b, NULL, &code, limit), 0, "the other connection");
    EXPECT_INT(code, SOCKD_E_LIMIT, "the other connection, same uid");
    json_decref(h_ok(root, "context.create", NULL)); /* another user's budget is its own */

    /* a socket keeps its context, and the context's share, after context.destroy */
    json_t *opened = h_ok(a, "socket.open", "{s:s,s:I}", "type", "tls", "context", tctx[0]);
    long long s = json_integer_value(json_object_get(opened, "socket"));
    json_decref(opened);
    json_decref(h_ok(a, "context.destroy", "{s:I}", "context", tctx[0]));
    EXPECT_INT(try_context(b, NULL, &code, limit), 0, "while a socket uses the destroyed one");
    json_decref(h_ok(a, "socket.close", "{s:I}", "socket", (json_int_t)s));
    tctx[0] = try_context(b, NULL, &code, limit);
    EXPECT_TRUE(tctx[0] > 0, "once no socket uses it: code %d %s", code, limit);

    /* a certificate bigger than what is left: refused whole, the context as it was */
    char *pem = rsa_cert_pem(2048);
    json_decref(h_ok(a, "context.destroy", "{s:I}", "context", tctx[2]));
    size_t len = strlen(pem), reps = (512 << 10) / len + 1;
    char *big = scratch_alloc(len * reps + 1);
    for (size_t i = 0; i < reps; i++) /* 512 KiB of text counts 1 MiB: more than one share */
        memcpy(big + i * len, pem, len);
    big[len * reps] = '\0';
    EXPECT_INT(h_err(b, &err, "context.set_server_certificate", "{s:I,s:s,s:s}", "context", tctx[1],
                     "cert", pem, "chain", big),
               SOCKD_E_LIMIT, "a chain past the budget");
    EXPECT_STR(json_string_value(json_object_get(json_object_get(err, "data"), "limit")),
               "max-tls-memory-per-uid", "%s", jd(err));
    json_decref(err);
    EXPECT_INT(
        h_err(b, NULL, "context.fingerprint", "{s:I,s:s}", "context", tctx[1], "role", "server"),
        SOCKD_E_WRONG_STATE, "no server certificate was installed");
    /* one that fits is taken, and replacing it does not count it twice: 200 replacements, as
     * the default certificate and as one chosen by name (each 14 KiB, and room for the new one
     * beside the old while it replaces it), would count some 5 MiB if the replaced ones stayed
     * counted, far more than the uid has left */
    json_decref(h_ok(a, "context.destroy", "{s:I}", "context", tctx[4]));
    for (int i = 0; i < 200; i++) {
        json_decref(h_ok(b, "context.set_server_certificate", "{s:I,s:s}", "context", tctx[1],
                         "cert", pem));
        json_decref(h_ok(b, "context.set_server_certificate", "{s:I,s:s,s:[s]}", "context", tctx[1],
                         "cert", pem, "server_names", "a.example"));
    }
    free(pem);

    /* the connection that goes frees its contexts' shares: b makes as many as a held */
    int held_by_a = 0;
    for (int i = 0; i < n; i++)
        held_by_a += i % 2 == 0 && i != 0 && i != 2 && i != 4;
    sockd_client_close(a);
    long long end = h_now_ms() + H_TIMEOUT_MS;
    int made = 0;
    while (made < held_by_a && h_now_ms() < end) {
        if (try_context(b, NULL, &code, limit) > 0)
            made++;
        else
            h_sleep_ms(10); /* the daemon has not seen a go yet */
    }
    EXPECT_INT(made, held_by_a, "contexts made after the other connection went");
    sockd_client_close(b);
    h_daemon_stop(&D);
}

/*
 * 6d, memory. Each of three uid-65534 connections asks for 24 contexts, each with 128 KiB of
 * distinct CA certificates, some 230 small ones (OpenSSL keeps about 4 KiB of each: about 1 MiB a
 * context): 72 MiB of contexts without a budget. With max-tls-memory-per-uid 8M the daemon's
 * peak grows by far less, and root is answered meanwhile.
 */
static void
test_ctl_tls_budget_memory(void **state)
{
    enum { CLIENTS = 3, EACH = 24, CA = 128 << 10 };
    struct sockd_client *c[CLIENTS], *root;
    int code, made = 0, refused = 0;
    char limit[64];

    (void)state;
    char *ca = scratch_alloc(CA + 4096);
    size_t len = 0;
    int blocks = 0;
    for (int i = 0; len < CA; i++, blocks++) { /* distinct certificates: the store keeps each */
        char *one = self_signed_pem(EVP_EC_gen("P-256"), i + 1, "ca", 0);
        size_t m = strlen(one);
        EXPECT_TRUE(len + m < CA + 4096, "PEM of %zu bytes", m);
        memcpy(ca + len, one, m);
        len += m;
        free(one);
    }
    ca[len] = '\0';
    start_for_memory("max-tls-memory-per-uid 8M\n");
    root = h_client_auto(&D);
    for (int i = 0; i < CLIENTS; i++)
        c[i] = h_client_nobody(&D);
    json_decref(h_ok(root, "daemon.ping", NULL));
    long hwm0 = h_hwm_kib(D.pid);
    for (int k = 0; k < EACH; k++) {
        for (int i = 0; i < CLIENTS; i++) {
            if (try_context(c[i], json_pack("{s:s}", "ca", ca), &code, limit) > 0) {
                made++;
                continue;
            }
            EXPECT_INT(code, SOCKD_E_LIMIT, "context.create");
            EXPECT_STR(limit, "max-tls-memory-per-uid", "data.limit");
            refused++;
        }
        json_decref(h_ok(root, "daemon.ping", NULL));
    }
    long hwm = h_hwm_kib(D.pid) - hwm0;
    fprintf(stderr,
            "# %d contexts of %zu KiB CA text asked by uid 65534: %d made, %d refused; VmHWM grew "
            "%ld KiB\n",
            CLIENTS * EACH, len >> 10, made, refused, hwm);
    EXPECT_INT(made, (8 << 20) / (32 * 1024 + 2 * (int)len + 4096 * blocks),
               "contexts within 8 MiB");
    EXPECT_TRUE(hwm < 32 * 1024, "VmHWM grew %ld KiB", hwm);
    for (int i = 0; i < CLIENTS; i++)
        sockd_client_close(c[i]);
    h_daemon_stop(&D);
}

/*
 * 9. A line without fds and, at once, a line whose sendmsg carries an fd: the kernel hands both
 * over in one read, and the fd was given to the first line (where it was closed), so the attach
 * failed. The daemon is stopped while both are written so that they arrive together.
 */
static void
test_ctl_fd_attribution(void **state)
{
    static const char ping[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\n";
    static const char attach[] = "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.attach\","
                                 "\"params\":{\"type\":\"tcp\"}}\n";
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    struct raw *r;
    json_t *m;

    (void)state;
    h_daemon_start(&D, NULL);
    r = raw_nobody();
    int tcp = h_tcp_connect(peer->port);
    EXPECT_TRUE(tcp >= 0, "tcp >= 0");
    EXPECT_INT(kill(D.pid, SIGSTOP), 0, "kill: %s", strerror(errno));
    EXPECT_INT(send(r->fd, ping, sizeof ping - 1, MSG_NOSIGNAL), (ssize_t)(sizeof ping - 1),
               "send: %s", strerror(errno));
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {(void *)attach, sizeof attach - 1};
    struct msghdr mh = {0};
    memset(&cm, 0, sizeof cm);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.b;
    mh.msg_controllen = sizeof cm.b;
    struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
    ch->cmsg_level = SOL_SOCKET;
    ch->cmsg_type = SCM_RIGHTS;
    ch->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(ch), &tcp, sizeof tcp);
    EXPECT_INT(sendmsg(r->fd, &mh, MSG_NOSIGNAL), (ssize_t)(sizeof attach - 1), "sendmsg: %s",
               strerror(errno));
    close(tcp);
    EXPECT_INT(kill(D.pid, SIGCONT), 0, "kill: %s", strerror(errno));
    m = raw_response(r, H_TIMEOUT_MS);
    EXPECT_TRUE(json_integer_value(json_object_get(m, "id")) == 1 &&
                    json_object_get(m, "result") != NULL,
                "%s", jd(m));
    json_decref(m);
    m = raw_response(r, H_TIMEOUT_MS);
    EXPECT_TRUE(json_integer_value(json_object_get(m, "id")) == 2 &&
                    json_object_get(json_object_get(m, "result"), "socket") != NULL,
                "%s", jd(m));
    json_decref(m);
    raw_close(r);
    h_daemon_stop(&D);
}

/* Send a line and assert its answer is an error of that code (the connection stays usable). */
static void
expect_code(struct raw *r, const char *line, int code)
{
    json_t *m;
    int got = raw_call_code(r, line, &m);
    if (got != code)
        fprintf(stderr, "line %.120s: wanted %d\n", line, code);
    EXPECT_TRUE(got == code, "%s", jd(m));
    json_decref(m);
}

/*
 * 10. A long method or param name of non-ASCII characters was cut inside a character for the
 * error message: the error could not be built (no answer at all), or the client was dropped
 * "out of memory". Every bad request now gets its error, valid UTF-8, and the param's name in
 * data.param is cut between characters; invalid UTF-8 and lone surrogates are parse errors.
 */
static void
test_ctl_utf8_names(void **state)
{
    struct raw *r;
    json_t *m;
    char name[1024], line[2048];

    (void)state;
    h_daemon_start(&D, NULL);
    r = raw_nobody();
    name[0] = '\0';
    for (int i = 0; i < 200; i++)
        strcat(name, "\xc3\xa9"); /* é */
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n", name);
    expect_code(r, line, SOCKD_E_NO_METHOD);
    /* a 3-byte character at every offset the cuts could land on */
    for (int shift = 0; shift < 3; shift++) {
        snprintf(name, sizeof name, "%.*s", shift, "ab");
        for (int i = 0; i < 150; i++)
            strcat(name, "\xe2\x82\xac"); /* € */
        snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n", name);
        expect_code(r, line, SOCKD_E_NO_METHOD);
        snprintf(
            line, sizeof line,
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"daemon.ping\",\"params\":{\"%s\":1}}\n",
            name);
        EXPECT_INT(raw_call_code(r, line, &m), SOCKD_E_INVALID_PARAMS,
                   "raw_call_code(r, line, &m)");
        const char *p = json_string_value(
            json_object_get(json_object_get(json_object_get(m, "error"), "data"), "param"));
        EXPECT_TRUE(p != NULL && strncmp(p, name, strlen(p)) == 0 && strlen(p) > 100, "%s", jd(m));
        json_decref(m);
        snprintf(line, sizeof line,
                 "[{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"x%s\"},{\"jsonrpc\":\"2.0\","
                 "\"id\":4,\"method\":\"daemon.ping\",\"params\":{\"%s\":1}}]\n",
                 name, name);
        raw_conn_write(r, line, strlen(line));
        m = raw_response(r, H_TIMEOUT_MS);
        EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 2, "%s", jd(m));
        json_decref(m);
    }
    /* 4-byte characters */
    name[0] = '\0';
    for (int i = 0; i < 100; i++)
        strcat(name, "\xf0\x9f\x98\x80");
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n", name);
    expect_code(r, line, SOCKD_E_NO_METHOD);
    /* what is not UTF-8 never reaches a method */
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.\xff\"}\n", SOCKD_E_PARSE);
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xc3\"}\n", SOCKD_E_PARSE);
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\\ud800\"}\n", SOCKD_E_PARSE);
    expect_code(r,
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":"
                "{\"\\udc00x\":1}}\n",
                SOCKD_E_PARSE);
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xed\xa0\x80\"}\n", SOCKD_E_PARSE);
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\\u0000b\"}\n", SOCKD_E_PARSE);
    expect_code(r, "\xc3\xa9\xc3\n", SOCKD_E_PARSE);
    /* a valid escaped surrogate pair is a name like another */
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\\ud83d\\ude00\"}\n",
                SOCKD_E_NO_METHOD);
    expect_code(r, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\n", 0);
    raw_close(r);
    h_daemon_stop(&D);
}

/*
 * 11. A blocking client writes a socket.send line of several MiB while the echoes of its
 * earlier sends come back: its output passed the high-water mark and the daemon stopped
 * reading its requests, so its write never finished and nothing moved again. Now only its
 * sockets pause: the write completes (each partial write within a bounded wait), then the
 * client reads every answer and the echoes, and is answered again.
 */
static void
test_ctl_blocking_client(void **state)
{
    enum { SMALL = 256 * 1024, NSMALL = 12, BIG = 3 << 20 };
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    struct raw *r;
    json_t *m;
    char line[512];

    (void)state;
    h_daemon_start(&D, NULL);
    r = raw_nobody();
    long long s = raw_result_int(r, open_tcp, "socket");
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"socket.connect\",\"params\":{\"socket\":"
             "%lld,\"address\":\"127.0.0.1:%d\"}}\n",
             s, peer->port);
    EXPECT_INT(raw_call_code(r, line, NULL), 0, "raw_call_code(r, line, NULL)");
    for (;;) { /* socket.connected */
        m = raw_line(r, H_TIMEOUT_MS);
        const char *meth = json_string_value(json_object_get(m, "method"));
        int done = meth != NULL && strcmp(meth, "socket.connected") == 0;
        json_decref(m);
        if (done)
            break;
    }
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"socket.recv\",\"params\":{\"socket\":"
             "%lld,\"length\":65536,\"stream\":true}}\n",
             s);
    EXPECT_INT(raw_call_code(r, line, NULL), 0, "raw_call_code(r, line, NULL)");

    /* From here on the client only writes until everything is written. */
    unsigned char *data = scratch_alloc(BIG);
    memset(data, 'e', BIG);
    char *b64 = h_b64(data, SMALL);
    size_t cap = 4 * (size_t)BIG / 3 + 512;
    char *req = scratch_alloc(cap);
    for (int i = 1; i <= NSMALL; i++) {
        int n = snprintf(req, cap,
                         "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"socket.send\",\"params\":"
                         "{\"socket\":%lld,\"data\":\"%s\"}}\n",
                         i, s, b64);
        raw_conn_write(r, req, (size_t)n);
    }
    free(b64);
    b64 = h_b64(data, BIG);
    int n = snprintf(req, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"socket.send\",\"params\":"
                     "{\"socket\":%lld,\"data\":\"%s\"}}\n",
                     NSMALL + 1, s, b64);
    raw_conn_write(r, req, (size_t)n);
    n = snprintf(req, cap, "{\"jsonrpc\":\"2.0\",\"id\":\"end\",\"method\":\"daemon.ping\"}\n");
    raw_conn_write(r, req, (size_t)n);
    free(b64);

    /* Now read: every send is answered (a result, or -32003 when the send queue is full), in
     * order, then the ping; echoes come in between. */
    int next = 1;
    for (;;) {
        m = raw_response(r, H_TIMEOUT_MS);
        json_t *id = json_object_get(m, "id");
        if (json_is_string(id)) {
            EXPECT_TRUE(next == NSMALL + 2 && json_object_get(m, "result") != NULL, "%s", jd(m));
            json_decref(m);
            break;
        }
        EXPECT_INT(json_integer_value(id), next, "%s", jd(m));
        json_t *err = json_object_get(m, "error");
        EXPECT_TRUE(err == NULL ||
                        json_integer_value(json_object_get(err, "code")) == SOCKD_E_LIMIT,
                    "%s", jd(m));
        next++;
        json_decref(m);
    }
    EXPECT_INT(
        raw_call_code(r, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"daemon.ping\"}\n", NULL), 0,
        "raw_call_code");
    raw_close(r);
    h_daemon_stop(&D);
}

/*
 * Handles are resolved once, by the dispatcher, for every method whose row names a target
 * (RPC_TARGET_SOCK, RPC_TARGET_CTX): a client of another uid that names root's socket or context
 * in any of them gets -32001, exactly as for a handle that never existed, and root's socket and
 * context are untouched. Every socket.* and context.* method hello lists is either in the table
 * below or named as one that takes no handle of an existing object, so a new method joins it.
 */
static void
test_ctl_targets_of_another_uid(void **state)
{
    /* %1$lld: root's socket, %2$lld: root's context, %3$lld: the attacker's own context */
    static const struct {
        const char *method, *params;
    } calls[] = {
        {"socket.info", "{\"socket\":%1$lld}"},
        {"socket.close", "{\"socket\":%1$lld}"},
        {"socket.shutdown", "{\"socket\":%1$lld}"},
        {"socket.send", "{\"socket\":%1$lld,\"text\":\"x\"}"},
        {"socket.sendto",
         "{\"socket\":%1$lld,\"text\":\"x\",\"address\":\"127.0.0.1\",\"port\":9}"},
        {"socket.recv", "{\"socket\":%1$lld,\"length\":1}"},
        {"socket.recv_cancel", "{\"socket\":%1$lld}"},
        {"socket.connect", "{\"socket\":%1$lld,\"address\":\"127.0.0.1\",\"port\":9}"},
        {"socket.bind", "{\"socket\":%1$lld,\"address\":\"127.0.0.1\",\"port\":0}"},
        {"socket.listen", "{\"socket\":%1$lld}"},
        {"socket.accept", "{\"socket\":%1$lld,\"pending\":1}"},
        {"socket.reject", "{\"socket\":%1$lld,\"pending\":1}"},
        {"socket.setopt", "{\"socket\":%1$lld,\"nodelay\":true}"},
        {"socket.starttls", "{\"socket\":%1$lld,\"context\":%3$lld}"},
        {"socket.detach", "{\"socket\":%1$lld}"},
        {"socket.pipe", "{\"socket\":%1$lld}"},
        {"socket.give", "{\"socket\":%1$lld}"},
        {"context.fingerprint", "{\"context\":%2$lld}"},
        {"context.set_alpn", "{\"context\":%2$lld,\"protocols\":[\"h2\"]}"},
        {"context.enable_dtls", "{\"context\":%2$lld}"},
        {"context.generate_certificate", "{\"context\":%2$lld,\"role\":\"server\"}"},
        {"context.set_server_certificate", "{\"context\":%2$lld,\"cert\":\"x\"}"},
        {"context.set_client_certificate", "{\"context\":%2$lld,\"cert\":\"x\"}"},
        {"context.disable_client_certificate", "{\"context\":%2$lld}"},
        {"context.destroy", "{\"context\":%2$lld}"},
    };
    /* Methods that make an object or find one by something other than its handle. */
    static const char *const no_target[] = {"socket.open", "socket.list", "socket.take",
                                            "socket.attach", "context.create"};
    struct sockd_client *root, *nobody;
    json_t *res, *methods, *v;
    size_t i, k;

    (void)state;
    h_daemon_start(&D, NULL);
    root = h_client(&D);
    nobody = h_client_nobody(&D);
    long long sock = h_open(root, "tcp");
    res = h_ok(root, "context.create", NULL);
    long long rctx = json_integer_value(json_object_get(res, "context"));
    json_decref(res);
    res = h_ok(nobody, "context.create", NULL);
    long long own = json_integer_value(json_object_get(res, "context"));
    json_decref(res);

    for (i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        char text[256];
        snprintf(text, sizeof text, calls[i].params, sock, rctx, own);
        json_t *params = json_loads(text, 0, NULL);
        EXPECT_TRUE(params != NULL, "params of %s: %s", calls[i].method, text);
        EXPECT_INT(h_err(nobody, NULL, calls[i].method, "O", params), -32001,
                   "%s naming root's handle", calls[i].method);
        json_decref(params);
    }

    /* Every socket.* and context.* method is covered. */
    res = h_ok(nobody, "daemon.hello", NULL);
    methods = json_object_get(res, "methods");
    json_array_foreach(methods, k, v)
    {
        const char *m = json_string_value(v);
        int known = strncmp(m, "socket.", 7) != 0 && strncmp(m, "context.", 8) != 0;
        for (i = 0; !known && i < sizeof calls / sizeof calls[0]; i++)
            known = strcmp(m, calls[i].method) == 0;
        for (i = 0; !known && i < sizeof no_target / sizeof no_target[0]; i++)
            known = strcmp(m, no_target[i]) == 0;
        EXPECT_TRUE(known, "%s takes a handle: add it to this test", m);
    }
    json_decref(res);

    /* Root's socket and context are as they were. */
    res = h_ok(root, "socket.info", "{s:I}", "socket", (json_int_t)sock);
    EXPECT_STR(json_string_value(json_object_get(res, "state")), "open", "%s", jd(res));
    json_decref(res);
    json_decref(h_ok(root, "context.destroy", "{s:I}", "context", (json_int_t)rctx));
    sockd_client_close(nobody);
    sockd_client_close(root);
    h_daemon_stop(&D);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ctl_batch_split, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_rsa_cap, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_handshake_turns, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_input_cap, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_tag_cap, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_output_cap, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_output_budget, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_tls_budget, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_tls_budget_memory, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_fd_attribution, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_utf8_names, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_blocking_client, teardown_raw),
        cmocka_unit_test_teardown(test_ctl_targets_of_another_uid, teardown_raw),
    };
    R.fd = -1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
