/* Test client framework of the integration tests: see tc.h. */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "tc.h"

/* ------------------------------------------------------------------------ */
/* where a failure happened                                                 */

static const char *tc_file; /* the test file and line that called the last helper */
static int tc_line;

static const char *
base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

void
tc_at(const char *file, int line)
{
    tc_file = base_name(file);
    tc_line = line;
}

void
tc_fail_where(const char *file, int line)
{
    if (tc_file)
        print_error("(%s:%d, helper called from %s:%d) ", base_name(file), line, tc_file, tc_line);
    else
        print_error("(%s:%d) ", base_name(file), line);
}

/* ------------------------------------------------------------------------ */
/* small utilities                                                          */

/* A compact dump of a JSON value for failure messages (rotating buffers, truncated). */
const char *
jd(const json_t *v)
{
    static char bufs[4][900];
    static int next;
    char *b = bufs[next++ % 4];
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    if (!s) {
        snprintf(b, sizeof bufs[0], "%s", v ? "(undumpable)" : "(null)");
        return b;
    }
    if (strlen(s) > sizeof bufs[0] - 1)
        snprintf(b, sizeof bufs[0], "%.800s...(%zu chars)", s, strlen(s));
    else
        snprintf(b, sizeof bufs[0], "%s", s);
    free(s);
    return b;
}

const char *
ctx(const char *fmt, ...)
{
    static char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

json_t *
jget_(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    if (!v)
        FAIL("missing member \"%s\" in %s", k, jd(o));
    return v;
}

long long
jint_(const json_t *o, const char *k)
{
    json_t *v = jget_(o, k);
    if (!json_is_integer(v))
        FAIL("member \"%s\" is not an integer in %s", k, jd(o));
    return json_integer_value(v);
}

const char *
jstr_(const json_t *o, const char *k)
{
    json_t *v = jget_(o, k);
    if (!json_is_string(v))
        FAIL("member \"%s\" is not a string in %s", k, jd(o));
    return json_string_value(v);
}

/* An optional boolean: absent (or null) is false; anything else but a boolean fails. */
bool
jflag_(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v))
        return false;
    if (!json_is_boolean(v))
        FAIL("member \"%s\" is not a boolean in %s", k, jd(o));
    return json_is_true(v);
}

/* An address object {address, port}: address must equal addr; port must equal port (or any valid
 * one when port < 0). */
int
check_addr_(const json_t *o, const char *k, const char *addr, int port)
{
    json_t *a = jget_(o, k);
    long long p;

    if (!json_is_object(a))
        FAIL("\"%s\" is not an address object in %s", k, jd(o));
    EXPECT_STR(jstr_(a, "address"), addr, "%s.address in %s", k, jd(o));
    p = jint_(a, "port");
    if (port >= 0)
        EXPECT_INT(p, port, "%s.port in %s", k, jd(o));
    else
        EXPECT_TRUE(p > 0 && p < 65536, "%s.port in %s", k, jd(o));
    return (int)p;
}

char *
b64_(const void *data, size_t len)
{
    return h_b64(data, len);
}

/* Decode base64 text; fails the test on malformed input. */
unsigned char *
unb64_(const char *text, size_t *len)
{
    unsigned char *out = h_unb64(text, len);

    if (!out && strlen(text) % 4)
        FAIL("daemon sent base64 of length %zu (not a multiple of 4)", strlen(text));
    if (!out)
        FAIL("daemon sent invalid base64: %.80s", text);
    return out;
}

/* The bytes of a socket.received event's data member. */
unsigned char *
ev_data_(const json_t *ev, size_t *len)
{
    return unb64_(jstr_(ev, "data"), len);
}

/* Assert that the data of a socket.received event equals the text. */
void
expect_data_(const json_t *ev, const char *text)
{
    size_t n;
    unsigned char *d = ev_data_(ev, &n);
    if (n != strlen(text) || memcmp(d, text, n) != 0)
        FAIL("socket.received data is \"%.*s\" (%zu bytes), expected \"%s\"; event %s", (int)n,
             (const char *)d, n, text, jd(ev));
    free(d);
}

void
sha256_(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    EXPECT_INT(EVP_Digest(data, len, out, &n, EVP_sha256(), NULL), 1, "EVP_Digest");
    EXPECT_INT(n, 32, "n");
}

unsigned char *
random_bytes_(size_t len)
{
    unsigned char *b = malloc(len ? len : 1);
    EXPECT_TRUE(b != NULL, "b");
    EXPECT_INT(RAND_bytes(b, (int)len), 1, "RAND_bytes(b, (int)len)");
    return b;
}

/* ------------------------------------------------------------------------ */
/* resources of the running test, released by tc_cleanup                    */

long long tc_first_id = 7000;

#define TRK_MAX 64
static struct tc *trk_tc[TRK_MAX];
static int n_tc;
static int trk_fd[TRK_MAX * 2];
static int n_fd;
static struct h_peer *trk_peer[TRK_MAX];
static int n_peer;
static struct h_daemon *trk_daemon[4];
static int n_daemon;

int
track_fd(int fd)
{
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_TRUE(n_fd < TRK_MAX * 2, "n_fd < TRK_MAX * 2");
    trk_fd[n_fd++] = fd;
    return fd;
}

void
close_fd_(int fd)
{
    for (int i = 0; i < n_fd; i++)
        if (trk_fd[i] == fd)
            trk_fd[i] = -1;
    close(fd);
}

struct tc *
tc_new_(struct h_daemon *d)
{
    struct tc *t = calloc(1, sizeof *t);
    EXPECT_TRUE(t != NULL, "t");
    EXPECT_TRUE(n_tc < TRK_MAX, "n_tc < TRK_MAX");
    t->c = h_client(d);
    t->inbox = json_array();
    t->next_id = tc_first_id;
    trk_tc[n_tc++] = t;
    return t;
}

void
tc_close(struct tc *t)
{
    if (t->c) {
        sockd_client_close(t->c);
        t->c = NULL;
    }
}

struct h_peer *
peer_new_(enum h_peer_mode mode, int v6)
{
    struct h_peer *p = calloc(1, sizeof *p);
    EXPECT_TRUE(p != NULL, "p");
    EXPECT_TRUE(n_peer < TRK_MAX, "n_peer < TRK_MAX");
    h_peer_start(p, mode, v6);
    trk_peer[n_peer++] = p;
    return p;
}

struct h_daemon *
daemon_new_(const char *conf)
{
    struct h_daemon *d = calloc(1, sizeof *d);
    EXPECT_TRUE(d != NULL, "d");
    EXPECT_TRUE(n_daemon < 4, "n_daemon < 4");
    h_daemon_start(d, conf);
    trk_daemon[n_daemon++] = d;
    return d;
}

void
daemon_stop_(struct h_daemon *d)
{
    int i = 0;

    while (i < n_daemon && trk_daemon[i] != d)
        i++;
    EXPECT_TRUE(i < n_daemon, "daemon %p is not tracked", (void *)d);
    trk_daemon[i] = trk_daemon[--n_daemon];
    trk_daemon[n_daemon] = NULL;
    h_daemon_stop(d);
    free(d);
}

void
tc_cleanup(void)
{
    for (int i = 0; i < n_tc; i++) {
        sockd_client_close(trk_tc[i]->c);
        json_decref(trk_tc[i]->inbox);
        free(trk_tc[i]);
    }
    n_tc = 0;
    for (int i = 0; i < n_fd; i++)
        if (trk_fd[i] >= 0)
            close(trk_fd[i]);
    n_fd = 0;
    for (int i = 0; i < n_peer; i++) {
        h_peer_stop(trk_peer[i]);
        free(trk_peer[i]);
    }
    n_peer = 0;
    for (int i = 0; i < n_daemon; i++) {
        struct h_daemon *d = trk_daemon[i];
        trk_daemon[i] = NULL;
        h_daemon_stop(d);
        free(d);
    }
    n_daemon = 0;
}

int
tc_teardown(void **state)
{
    (void)state;
    tc_cleanup();
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the control connection, with our own ids                                 */

bool
is_response(const json_t *m)
{
    return json_is_object(m) && !json_object_get(m, "method") &&
           (json_object_get(m, "result") || json_object_get(m, "error"));
}

/* Read one message (waiting up to ms) into the inbox. 1 if one came, 0 on timeout; fails on EOF. */
int
tc_pump(struct tc *t, int ms)
{
    long long t0 = now_ms();
    json_t *m = sockd_client_read_message(t->c, ms);

    if (!m) {
        if (errno != ETIMEDOUT)
            FAIL("control connection failed (read_message: NULL after %lld of %d ms: %s)",
                 now_ms() - t0, ms, strerror(errno));
        return 0;
    }
    json_array_append_new(t->inbox, m);
    return 1;
}

/* Write a whole request line, reading what the daemon sends meanwhile (it may stop reading us while
 * its output to us is full). */
void
tc_write(struct tc *t, const char *buf, size_t len)
{
    int fd = sockd_client_fd(t->c);
    long long deadline = now_ms() + H_TIMEOUT_MS;
    size_t off = 0;

    for (int guard = 0; off < len && guard < 10000000; guard++) {
        long long left = deadline - now_ms();
        struct pollfd p = {fd, POLLIN | POLLOUT, 0};
        int r;

        if (left <= 0)
            FAIL("writing a %zu-byte request: no progress for %d ms (at byte %zu)", len,
                 H_TIMEOUT_MS, off);
        r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        EXPECT_TRUE(r >= 0, "r >= 0");
        if (r == 0)
            continue;
        if (p.revents & POLLIN)
            while (tc_pump(t, 0))
                ;
        if (p.revents & (POLLOUT | POLLERR | POLLHUP)) {
            ssize_t n = send(fd, buf + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                    continue;
                FAIL("writing to the daemon: %s", strerror(errno));
            }
            off += (size_t)n;
            deadline = now_ms() + H_TIMEOUT_MS;
        }
    }
    EXPECT_INT(off, len, "off");
}

json_t *
mkreq(struct tc *t, const char *method, json_t *params, long long *id)
{
    *id = t->next_id++;
    json_t *req = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)*id,
                            "method", method, "params", params ? params : json_object());
    EXPECT_TRUE(req != NULL, "req");
    return req;
}

void
tc_write_json(struct tc *t, json_t *v)
{
    char *line = json_dumps(v, JSON_COMPACT);
    EXPECT_TRUE(line != NULL, "line");
    tc_write(t, line, strlen(line));
    tc_write(t, "\n", 1);
    free(line);
}

/* Send METHOD with PARAMS (stolen; NULL = {}); returns the id used. */
long long
tc_send(struct tc *t, const char *method, json_t *params)
{
    long long id;
    json_t *req = mkreq(t, method, params, &id);
    tc_write_json(t, req);
    json_decref(req);
    return id;
}

/* The response to id (whole message), waiting up to ms. */
json_t *
tc_response(struct tc *t, long long id, const char *method, int ms)
{
    long long deadline = now_ms() + ms;

    for (int guard = 0; guard < 1000000; guard++) {
        size_t i;
        json_t *m;

        json_array_foreach(t->inbox, i, m)
        {
            if (json_is_array(m))
                FAIL("%s (id %lld): unexpected batch response %s", method, id, jd(m));
            if (!is_response(m))
                continue;
            json_t *mid = json_object_get(m, "id");
            if (!json_is_integer(mid) || json_integer_value(mid) != id)
                FAIL("%s (id %lld): unexpected response %s", method, id, jd(m));
            json_incref(m);
            json_array_remove(t->inbox, i);
            return m;
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        tc_pump(t, (int)left);
    }
    FAIL("%s (id %lld): no response within %d ms", method, id, ms);
    return NULL;
}

json_t *
vparams(const char *fmt, va_list ap)
{
    json_error_t e;
    json_t *p;

    if (!fmt)
        return json_object();
    p = json_vpack_ex(&e, 0, fmt, ap);
    if (!p)
        FAIL("json_pack(\"%s\"): %s", fmt, e.text);
    return p;
}

/* Call with params (stolen); assert a result; return it (caller decrefs). */
json_t *
tc_okp(struct tc *t, long long *id_out, const char *method, json_t *params)
{
    json_t *resp, *res;
    char pdump[900];
    long long id;

    snprintf(pdump, sizeof pdump, "%s", jd(params));
    id = tc_send(t, method, params);
    if (id_out)
        *id_out = id;
    resp = tc_response(t, id, method, H_TIMEOUT_MS);
    res = json_object_get(resp, "result");
    if (!res)
        FAIL("%s %s: expected a result, got %s", method, pdump, jd(resp));
    json_incref(res);
    json_decref(resp);
    return res;
}

json_t *
tc_ok_(struct tc *t, long long *id_out, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params;
    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    return tc_okp(t, id_out, method, params);
}

/* Call; assert an error response; return its code. *err_out (if not NULL) gets the error object. */
int
tc_err_(struct tc *t, json_t **err_out, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *resp, *err;
    char pdump[900];
    int code;

    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    snprintf(pdump, sizeof pdump, "%s", jd(params));
    resp = tc_response(t, tc_send(t, method, params), method, H_TIMEOUT_MS);
    err = json_object_get(resp, "error");
    if (!json_is_object(err))
        FAIL("%s %s: expected an error response, got %s", method, pdump, jd(resp));
    code = (int)jint_(err, "code");
    if (err_out) {
        json_incref(err);
        *err_out = err;
    }
    json_decref(resp);
    return code;
}

/* Call expecting error CODE; returns the error object (caller decrefs). */
json_t *
tc_expect_err_(struct tc *t, int code, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *resp, *err;
    char pdump[900];

    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    snprintf(pdump, sizeof pdump, "%s", jd(params));
    resp = tc_response(t, tc_send(t, method, params), method, H_TIMEOUT_MS);
    err = json_object_get(resp, "error");
    if (!json_is_object(err))
        FAIL("%s %s: expected error %d, got %s", method, pdump, code, jd(resp));
    EXPECT_INT(jint_(err, "code"), code, "%s %s: error code in %s", method, pdump, jd(err));
    json_incref(err);
    json_decref(resp);
    return err;
}

/* The data member of an error object (must be an object). */
json_t *
err_data_(const json_t *err)
{
    json_t *d = jget_(err, "data");
    if (!json_is_object(d))
        FAIL("error data is not an object: %s", jd(err));
    return d;
}

/* A batch of n requests on one line; returns the array of responses (caller decrefs). */
json_t *
tc_batch_(struct tc *t, int n, const char *const *methods, json_t **params, long long *ids)
{
    json_t *arr = json_array();
    long long deadline = now_ms() + H_TIMEOUT_MS;

    for (int i = 0; i < n; i++)
        json_array_append_new(arr, mkreq(t, methods[i], params[i], &ids[i]));
    tc_write_json(t, arr);
    json_decref(arr);
    for (int guard = 0; guard < 1000000; guard++) {
        size_t i;
        json_t *m;
        json_array_foreach(t->inbox, i, m)
        {
            if (is_response(m))
                FAIL("batch: unexpected single response %s", jd(m));
            if (!json_is_array(m))
                continue;
            json_incref(m);
            json_array_remove(t->inbox, i);
            EXPECT_INT(json_array_size(m), n, "batch response size: %s", jd(m));
            for (int k = 0; k < n; k++) {
                json_t *r = json_array_get(m, (size_t)k);
                EXPECT_INT(jint_(r, "id"), ids[k], "batch member %d id: %s", k, jd(m));
            }
            return m;
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        tc_pump(t, (int)left);
    }
    FAIL("batch: no response within %d ms", H_TIMEOUT_MS);
    return NULL;
}

bool
note_matches(const json_t *m, const char *method, long long sock)
{
    const json_t *p;
    if (!json_is_object(m) || !json_is_string(json_object_get(m, "method")))
        return false;
    if (method && strcmp(json_string_value(json_object_get(m, "method")), method) != 0)
        return false;
    p = json_object_get(m, "params");
    if (!sock)
        return true;
    return json_is_integer(json_object_get(p, "socket")) &&
           json_integer_value(json_object_get(p, "socket")) == sock;
}

/* The first notification (whole message) METHOD (NULL any) of SOCK (0 any), waiting up to ms; NULL
 * on timeout. */
json_t *
tc_wait_msg(struct tc *t, const char *method, long long sock, int ms)
{
    long long deadline = now_ms() + ms;

    for (int guard = 0; guard < 1000000; guard++) {
        size_t i;
        json_t *m;

        json_array_foreach(t->inbox, i, m)
        {
            if (note_matches(m, method, sock)) {
                json_incref(m);
                json_array_remove(t->inbox, i);
                return m;
            }
        }
        long long left = deadline - now_ms();
        if (left <= 0)
            return NULL;
        tc_pump(t, (int)left);
    }
    return NULL;
}

/* Wait for notification METHOD of SOCK; assert it came; return its params (caller decrefs). */
json_t *
tc_event_(struct tc *t, const char *method, long long sock, int ms)
{
    json_t *m = tc_wait_msg(t, method, sock, ms), *p;

    if (!m)
        FAIL("no %s for socket %lld within %d ms; unread messages: %s", method, sock, ms,
             jd(t->inbox));
    p = json_object_get(m, "params");
    if (!json_is_object(p))
        FAIL("notification without params object: %s", jd(m));
    json_incref(p);
    json_decref(m);
    return p;
}

/* The next notification of SOCK, whatever it is: must be METHOD. Returns params. */
json_t *
tc_next_is_(struct tc *t, long long sock, const char *method, int ms)
{
    json_t *m = tc_wait_msg(t, NULL, sock, ms), *p;

    if (!m)
        FAIL("no notification for socket %lld within %d ms (expected %s)", sock, ms, method);
    EXPECT_STR(jstr_(m, "method"), method, "next notification of socket %lld: %s", sock, jd(m));
    p = json_object_get(m, "params");
    json_incref(p);
    json_decref(m);
    return p;
}

/* Assert that no notification for SOCK (0: any) arrives within ms (nor is waiting unread). */
void
tc_no_event_(struct tc *t, long long sock, int ms)
{
    long long deadline = now_ms() + ms;
    size_t i;
    json_t *m;

    for (int guard = 0; guard < 1000000; guard++) {
        long long left = deadline - now_ms();
        if (left <= 0)
            break;
        tc_pump(t, (int)left);
    }
    json_array_foreach(t->inbox, i, m)
    {
        if (note_matches(m, NULL, sock))
            FAIL("unexpected notification (socket %lld, within %d ms): %s", sock, ms, jd(m));
    }
}

/* ------------------------------------------------------------------------ */
/* socket-level shorthands                                                  */

long long
open_type_(struct tc *t, const char *type, int v6)
{
    json_t *r = tc_ok_(t, NULL, "socket.open", "{s:s, s:b}", "type", type, "ipv6", v6);
    long long s = jint_(r, "socket");
    EXPECT_TRUE(s > 0, "socket.open %s handle %lld", type, s);
    json_decref(r);
    return s;
}

json_t *
tc_info_(struct tc *t, long long s)
{
    json_t *i = tc_ok_(t, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(jint_(i, "socket"), s, "socket.info socket member: %s", jd(i));
    return i;
}

void
expect_state_(struct tc *t, long long s, const char *state)
{
    json_t *i = tc_info_(t, s);
    EXPECT_STR(jstr_(i, "state"), state, "socket.info state of %lld: %s", s, jd(i));
    json_decref(i);
}

long long
info_int_(struct tc *t, long long s, const char *k)
{
    json_t *i = tc_info_(t, s);
    long long v = jint_(i, k);
    json_decref(i);
    return v;
}

/* The handle must be dead: socket.info answers -32001. */
void
expect_gone_(struct tc *t, long long s)
{
    json_decref(
        tc_expect_err_(t, SOCKD_E_UNKNOWN_HANDLE, "socket.info", "{s:I}", "socket", (json_int_t)s));
}

void
expect_result_empty_(const json_t *r, const char *what)
{
    EXPECT_TRUE(json_is_object(r) && json_object_size(r) == 0, "%s result %s", what, jd(r));
}

/* socket.send of text; returns the send's request id (queued checked). */
long long
send_text_(struct tc *t, long long s, const char *text, int notify)
{
    long long id;
    json_t *r = tc_ok_(t, &id, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)s, "text",
                       text, "notify", notify);
    EXPECT_INT(jint_(r, "queued"), strlen(text), "socket.send text queued: %s", jd(r));
    json_decref(r);
    return id;
}

long long
send_bytes_(struct tc *t, long long s, const void *data, size_t len, int notify)
{
    long long id;
    char *enc = b64_(data, len);
    json_t *r = tc_ok_(t, &id, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)s, "data",
                       enc, "notify", notify);
    EXPECT_INT(jint_(r, "queued"), len, "socket.send data queued: %s", jd(r));
    free(enc);
    json_decref(r);
    return id;
}

/* Wait for socket.sent of the send with request id and byte count. */
void
expect_sent_(struct tc *t, long long s, long long req, size_t bytes)
{
    json_t *ev = tc_event_(t, "socket.sent", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "bytes"), bytes, "socket.sent bytes: %s", jd(ev));
    EXPECT_INT(jint_(ev, "request"), req, "socket.sent request: %s", jd(ev));
    json_decref(ev);
}

/* Start a recv with params built from fmt (socket is added); returns the request id. */
long long
start_recv_(struct tc *t, long long s, json_int_t length, int partial, int stream, int timeout_ms)
{
    long long id;
    json_t *r;

    if (timeout_ms > 0)
        r = tc_ok_(t, &id, "socket.recv", "{s:I, s:I, s:b, s:b, s:i}", "socket", (json_int_t)s,
                   "length", length, "partial", partial, "stream", stream, "timeout_ms",
                   timeout_ms);
    else
        r = tc_ok_(t, &id, "socket.recv", "{s:I, s:I, s:b, s:b}", "socket", (json_int_t)s, "length",
                   length, "partial", partial, "stream", stream);
    expect_result_empty_(r, "socket.recv");
    json_decref(r);
    return id;
}

/* Exact recv of len bytes; asserts one socket.received with exactly that text, no eof/timeout. */
void
recv_expect_(struct tc *t, long long s, const char *text)
{
    long long id = start_recv_(t, s, (json_int_t)strlen(text), 0, 0, 0);
    json_t *ev = tc_event_(t, "socket.received", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.received request: %s", jd(ev));
    expect_data_(ev, text);
    EXPECT_TRUE(!jflag_(ev, "eof") && !jflag_(ev, "timeout"), "socket.received flags: %s", jd(ev));
    json_decref(ev);
}

bool
recv_canceled_(struct tc *t, long long s)
{
    json_t *r = tc_ok_(t, NULL, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)s);
    json_t *c = jget_(r, "canceled");
    bool v;
    if (!json_is_boolean(c))
        FAIL("socket.recv_cancel canceled is not a boolean: %s", jd(r));
    v = json_is_true(c);
    json_decref(r);
    return v;
}

/* ------------------------------------------------------------------------ */
/* raw loopback sockets of the test process                                 */

void
fill_sa(struct sockaddr_storage *ss, socklen_t *sl, int v6, int port)
{
    memset(ss, 0, sizeof *ss);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        s6->sin6_port = htons((uint16_t)port);
        *sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s4->sin_port = htons((uint16_t)port);
        *sl = sizeof *s4;
    }
}

int
sa_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

int
local_port_(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&ss, &sl), 0, "getsockname: %s", strerror(errno));
    return sa_port(&ss);
}

/* A tracked socket bound to the loopback address (port 0: any). listen if backlog >= 0. */
int
raw_bound_(int v6, int port, int backlog, int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd = track_fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    fill_sa(&ss, &sl, v6, port);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0)
        FAIL("bind to loopback port %d: %s", port, strerror(errno));
    if (backlog >= 0)
        EXPECT_INT(listen(fd, backlog), 0, "listen: %s", strerror(errno));
    if (port_out)
        *port_out = local_port_(fd);
    return fd;
}

/* Accept one connection within ms; -1 on timeout. */
int
raw_accept(int lfd, int ms)
{
    struct pollfd p = {lfd, POLLIN, 0};
    int r;

    do
        r = poll(&p, 1, ms);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    return track_fd(accept4(lfd, NULL, NULL, SOCK_CLOEXEC));
}

void
raw_write_(int fd, const void *data, size_t len)
{
    const char *p = data;
    long long deadline = now_ms() + H_TIMEOUT_MS;

    for (int guard = 0; len > 0 && guard < 1000000; guard++) {
        struct pollfd pf = {fd, POLLOUT, 0};
        long long left = deadline - now_ms();
        ssize_t n;

        if (left <= 0)
            FAIL("peer write: no progress for %d ms (%zu bytes left)", H_TIMEOUT_MS, len);
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            FAIL("peer write: %s", strerror(errno));
        }
        p += n;
        len -= (size_t)n;
        deadline = now_ms() + H_TIMEOUT_MS;
    }
    EXPECT_INT(len, 0, "len");
}

void
raw_write_str_(int fd, const char *s)
{
    raw_write_(fd, s, strlen(s));
}

/* Read up to len bytes; stops early at EOF or when the time runs out: H_TIMEOUT_MS without progress
 * (per_progress) or H_TIMEOUT_MS in all. Returns the count. */
static size_t
raw_read_bounded(int fd, void *buf, size_t len, bool per_progress)
{
    char *p = buf;
    size_t got = 0;
    long long deadline = now_ms() + H_TIMEOUT_MS;

    for (int guard = 0; got < len && guard < 10000000; guard++) {
        struct pollfd pf = {fd, POLLIN, 0};
        long long left = deadline - now_ms();
        ssize_t n;

        if (left <= 0)
            break;
        if (poll(&pf, 1, (int)left) <= 0)
            continue;
        n = recv(fd, p + got, len - got, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            FAIL("peer read: %s (after %zu of %zu bytes)", strerror(errno), got, len);
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (per_progress)
            deadline = now_ms() + H_TIMEOUT_MS;
    }
    return got;
}

size_t
raw_read_(int fd, void *buf, size_t len)
{
    return raw_read_bounded(fd, buf, len, true);
}

size_t
raw_read_within(int fd, void *buf, size_t len)
{
    return raw_read_bounded(fd, buf, len, false);
}

/* The peer reads exactly the text. */
void
raw_expect_(int fd, const char *text)
{
    size_t n = strlen(text);
    char *buf = calloc(1, n + 1);
    size_t got;

    EXPECT_TRUE(buf != NULL, "buf");
    got = raw_read_(fd, buf, n);
    if (got != n || memcmp(buf, text, n) != 0)
        FAIL("peer read \"%.*s\" (%zu bytes), expected \"%s\"", (int)got, buf, got, text);
    free(buf);
}

/* Is there something to read (data or EOF) within ms? */
bool
raw_readable_(int fd, int ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    int r;
    do
        r = poll(&pf, 1, ms);
    while (r < 0 && errno == EINTR);
    return r > 0;
}

/*
 * Wait up to ms for the connection to end. Returns 0 on EOF, the errno of a
 * reset (ECONNRESET), -1 on timeout, -2 if data arrived instead.
 */
int
raw_wait_closed_(int fd, int ms)
{
    char c;
    ssize_t n;

    if (!raw_readable_(fd, ms))
        return -1;
    n = recv(fd, &c, 1, MSG_DONTWAIT);
    if (n == 0)
        return 0;
    if (n < 0)
        return errno;
    return -2;
}
