/*
 * Integration tests: host names in socket.connect (tcp and udp), resolved by the daemon through
 * c-ares against the test's own DNS server (dnsd, 127.0.0.1 on a free port), and the calls that
 * take no names (bind, sendto: an IP literal or "localhost").
 *
 * No name used here can reach the machine's real name servers: the daemon's only resolver is
 * dnsd (config "resolver 127.0.0.1:<port>"), every name is under the reserved ".test" domain and
 * answered by dnsd, except "localhost", which comes from /etc/hosts (the tests assert that dnsd
 * saw no question for it).
 *
 * As in test_tcp.c, requests are written on the control connection with ids chosen here, so the
 * "request" member of notifications can be checked; messages read meanwhile wait, in arrival
 * order, in a per-client inbox. Every wait is bounded, every loop has a fixed bound, and what a
 * test makes is tracked and released by the per-test teardown.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "dnsd.h"
#include "harness.h"

/* The daemon's resolve-timeout (config below) and the names dnsd answers. */
#define RESOLVE_TIMEOUT_MS 2000
#define N_A4 "a4.names.test"         /* A 127.0.0.1 */
#define N_A6 "a6.names.test"         /* AAAA ::1 */
#define N_DUAL "dual.names.test"     /* AAAA ::1, A 127.0.0.1 */
#define N_TWO_A "two-a.names.test"   /* A 127.0.0.2, A 127.0.0.1 (in this order) */
#define N_NX "nx.names.test"         /* NXDOMAIN */
#define N_SLOW3 "slow3.names.test"   /* A 127.0.0.1, answered after 3000 ms */
#define N_SLOW4 "slow4.names.test"   /* A 127.0.0.1, answered after 4000 ms */
#define N_HOLD "hold.names.test"     /* A 127.0.0.1, answered after 2000 ms */
#define N_EARLY "early.names.test"   /* A 127.0.0.1, answered after 400 ms */
#define N_CLOSE "close.names.test"   /* A 127.0.0.1, answered after 1500 ms */
#define N_GONE "gone.names.test"     /* A 127.0.0.1, answered after 1500 ms */
#define N_NOBIND "nobind.names.test" /* A 127.0.0.1: never to be asked for */
#define N_UDP "udp.names.test"       /* A 127.0.0.1 */

static struct dnsd g_dns;   /* large: static, never on the stack */
static struct h_daemon g_d; /* the group's daemon, resolving through g_dns */
static int t_line;          /* the test line that called the failing helper */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        print_error("(test_names.c:%d) ", t_line);                                                 \
        fail_msg(__VA_ARGS__);                                                                     \
    } while (0)

/* ------------------------------------------------------------------------ */
/* small utilities                                                           */

static long long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* A compact dump of a JSON value for failure messages (rotating buffers, truncated). */
static const char *
jd(const json_t *v)
{
    static char bufs[4][700];
    static int next;
    char *b = bufs[next++ % 4];
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

    if (!s) {
        snprintf(b, sizeof bufs[0], "%s", v ? "(undumpable)" : "(null)");
        return b;
    }
    if (strlen(s) > sizeof bufs[0] - 1)
        snprintf(b, sizeof bufs[0], "%.600s...(%zu chars)", s, strlen(s));
    else
        snprintf(b, sizeof bufs[0], "%s", s);
    free(s);
    return b;
}

/* printf into a static buffer: the context of a failed expectation. */
static const char *ctx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *
ctx(const char *fmt, ...)
{
    static char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

#define EXPECT_INT(actual, expected, ...)                                                          \
    do {                                                                                           \
        long long a_ = (long long)(actual), e_ = (long long)(expected);                            \
        if (a_ != e_)                                                                              \
            FAIL("%s: got %lld, expected %lld", ctx(__VA_ARGS__), a_, e_);                         \
    } while (0)

#define EXPECT_STR(actual, expected, ...)                                                          \
    do {                                                                                           \
        const char *a_ = (actual), *e_ = (expected);                                               \
        if (!a_ || strcmp(a_, e_) != 0)                                                            \
            FAIL("%s: got \"%s\", expected \"%s\"", ctx(__VA_ARGS__), a_ ? a_ : "(null)", e_);     \
    } while (0)

#define EXPECT_TRUE(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL("%s (expected %s)", ctx(__VA_ARGS__), #cond);                                     \
    } while (0)

static json_t *
jget_(const json_t *o, const char *k)
{
    json_t *v = json_is_object(o) ? json_object_get(o, k) : NULL;
    if (!v)
        FAIL("missing member \"%s\" in %s", k, jd(o));
    return v;
}

static long long
jint_(const json_t *o, const char *k)
{
    json_t *v = jget_(o, k);
    if (!json_is_integer(v))
        FAIL("member \"%s\" is not an integer in %s", k, jd(o));
    return json_integer_value(v);
}

static const char *
jstr_(const json_t *o, const char *k)
{
    json_t *v = jget_(o, k);
    if (!json_is_string(v))
        FAIL("member \"%s\" is not a string in %s", k, jd(o));
    return json_string_value(v);
}

/* An address object {address, port}: address must equal addr; port must equal port (or any valid
 * one when port < 0). Returns the port. */
static int
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

/* Case-insensitive substring test. */
static bool
contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; hay && *hay; hay++)
        if (strncasecmp(hay, needle, n) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------------------ */
/* resources of the running test, released by t_cleanup                      */

struct tc {
    struct sockd_client *c;
    json_t *inbox;     /* messages read but not consumed yet, in arrival order */
    long long next_id; /* our request ids */
};

#define TRK_MAX 64
static struct tc *trk_tc[TRK_MAX];
static int n_tc;
static int trk_fd[TRK_MAX];
static int n_fd;
static struct h_peer *trk_peer[TRK_MAX];
static int n_peer;

static int
track_fd(int fd)
{
    assert_true(fd >= 0);
    assert_true(n_fd < TRK_MAX);
    trk_fd[n_fd++] = fd;
    return fd;
}

static void
close_fd(int fd)
{
    for (int i = 0; i < n_fd; i++)
        if (trk_fd[i] == fd)
            trk_fd[i] = -1;
    close(fd);
}

static struct tc *
tc_new_(struct h_daemon *d)
{
    struct tc *t = calloc(1, sizeof *t);
    assert_non_null(t);
    assert_true(n_tc < TRK_MAX);
    t->c = h_client(d);
    t->inbox = json_array();
    t->next_id = 9000;
    trk_tc[n_tc++] = t;
    return t;
}

/* Close a tracked client's control connection now (the daemon sees it go). */
static void
tc_close(struct tc *t)
{
    if (t->c) {
        sockd_client_close(t->c);
        t->c = NULL;
    }
}

static struct h_peer *
peer_new_(enum h_peer_mode mode, int v6)
{
    struct h_peer *p = calloc(1, sizeof *p);
    assert_non_null(p);
    assert_true(n_peer < TRK_MAX);
    h_peer_start(p, mode, v6);
    trk_peer[n_peer++] = p;
    return p;
}

static int
t_cleanup(void **state)
{
    (void)state;
    for (int i = 0; i < n_tc; i++) {
        tc_close(trk_tc[i]);
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
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the control connection, with our own ids                                  */

static bool
is_response(const json_t *m)
{
    return json_is_object(m) && !json_object_get(m, "method") &&
           (json_object_get(m, "result") || json_object_get(m, "error"));
}

/* Read one message (waiting up to ms) into the inbox. 1 if one came, 0 on timeout; fails on EOF. */
static int
tc_pump(struct tc *t, int ms)
{
    json_t *m = sockd_client_read_message(t->c, ms);

    if (!m) {
        if (errno != ETIMEDOUT)
            FAIL("control connection failed (read_message: %s)", strerror(errno));
        return 0;
    }
    json_array_append_new(t->inbox, m);
    return 1;
}

/* Write a whole line, reading what the daemon sends meanwhile. */
static void
tc_write(struct tc *t, const char *buf, size_t len)
{
    int fd = sockd_client_fd(t->c);
    long long deadline = now_ms() + H_TIMEOUT_MS;
    size_t off = 0;

    for (int guard = 0; off < len && guard < 1000000; guard++) {
        long long left = deadline - now_ms();
        struct pollfd p = {fd, POLLIN | POLLOUT, 0};
        int r;

        if (left <= 0)
            FAIL("writing a %zu-byte request: no progress for %d ms", len, H_TIMEOUT_MS);
        r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        assert_true(r >= 0);
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
        }
    }
    assert_int_equal(off, len);
}

/* Send METHOD with PARAMS (stolen; NULL = {}); returns the id used. */
static long long
tc_send(struct tc *t, const char *method, json_t *params)
{
    long long id = t->next_id++;
    json_t *req = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id,
                            "method", method, "params", params ? params : json_object());
    char *line;

    assert_non_null(req);
    line = json_dumps(req, JSON_COMPACT);
    assert_non_null(line);
    tc_write(t, line, strlen(line));
    tc_write(t, "\n", 1);
    free(line);
    json_decref(req);
    return id;
}

/* The response to id (whole message), waiting up to ms. */
static json_t *
tc_response(struct tc *t, long long id, const char *method, int ms)
{
    long long deadline = now_ms() + ms;

    for (int guard = 0; guard < 1000000; guard++) {
        size_t i;
        json_t *m;

        json_array_foreach(t->inbox, i, m)
        {
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

static json_t *
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

/* Call; assert a result; return it (caller decrefs). *id_out gets the request id. */
static json_t *
tc_ok_(struct tc *t, long long *id_out, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *resp, *res;
    char pdump[700];
    long long id;

    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
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

/* Call expecting error CODE; returns the error object (caller decrefs). */
static json_t *
tc_expect_err_(struct tc *t, int code, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *resp, *err;
    char pdump[700];

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

static bool
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
static json_t *
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

/* The next notification of SOCK, whatever it is: must be METHOD. Returns params (caller decrefs).
 */
static json_t *
tc_next_is_(struct tc *t, long long sock, const char *method, int ms)
{
    json_t *m = tc_wait_msg(t, NULL, sock, ms), *p;

    if (!m)
        FAIL("no notification for socket %lld within %d ms (expected %s)", sock, ms, method);
    EXPECT_STR(jstr_(m, "method"), method, "next notification of socket %lld: %s", sock, jd(m));
    p = json_object_get(m, "params");
    if (!json_is_object(p))
        FAIL("notification without params object: %s", jd(m));
    json_incref(p);
    json_decref(m);
    return p;
}

/* Assert that no notification for SOCK (0: any) arrives within ms (nor is waiting unread). */
static void
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
/* socket-level shorthands                                                   */

static long long
tc_open_(struct tc *t, const char *type, int v6)
{
    json_t *r = tc_ok_(t, NULL, "socket.open", "{s:s, s:b}", "type", type, "ipv6", v6);
    long long s = jint_(r, "socket");
    EXPECT_TRUE(s > 0, "socket.open handle %lld", s);
    json_decref(r);
    return s;
}

static json_t *
tc_info_(struct tc *t, long long s)
{
    json_t *i = tc_ok_(t, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(jint_(i, "socket"), s, "socket.info socket member: %s", jd(i));
    return i;
}

static void
expect_state_(struct tc *t, long long s, const char *state)
{
    json_t *i = tc_info_(t, s);
    EXPECT_STR(jstr_(i, "state"), state, "socket.info state of %lld: %s", s, jd(i));
    json_decref(i);
}

/* The handle must be dead: socket.info answers -32001. */
static void
expect_gone_(struct tc *t, long long s)
{
    json_decref(
        tc_expect_err_(t, SOCKD_E_UNKNOWN_HANDLE, "socket.info", "{s:I}", "socket", (json_int_t)s));
}

/* socket.connect {socket, address[, port][, timeout_ms]}; asserts the {} result; returns the id. */
static long long
start_connect_(struct tc *t, long long s, const char *address, int port, int timeout_ms)
{
    json_t *p = json_pack("{s:I, s:s}", "socket", (json_int_t)s, "address", address), *r, *resp;
    long long id;

    if (port >= 0)
        json_object_set_new(p, "port", json_integer(port));
    if (timeout_ms > 0)
        json_object_set_new(p, "timeout_ms", json_integer(timeout_ms));
    id = tc_send(t, "socket.connect", p);
    resp = tc_response(t, id, "socket.connect", H_TIMEOUT_MS);
    r = json_object_get(resp, "result");
    if (!json_is_object(r) || json_object_size(r) != 0)
        FAIL("socket.connect %s (port %d): expected result {}, got %s", address, port, jd(resp));
    json_decref(resp);
    return id;
}

/* Wait for socket.connected of s from request id; check remote; returns the params. */
static json_t *
expect_connected_(struct tc *t, long long s, long long id, const char *ip, int port)
{
    json_t *ev = tc_next_is_(t, s, "socket.connected", H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    check_addr_(ev, "remote", ip, port);
    check_addr_(ev, "local", ip, -1);
    return ev;
}

/* Wait for socket.closed of s with reason, request = id; returns the params. */
static json_t *
expect_closed_(struct tc *t, long long s, long long id, const char *reason, int ms)
{
    json_t *ev = tc_next_is_(t, s, "socket.closed", ms);
    EXPECT_STR(jstr_(ev, "reason"), reason, "socket.closed reason: %s", jd(ev));
    EXPECT_INT(jint_(ev, "request"), id, "socket.closed request: %s", jd(ev));
    return ev;
}

/* daemon.stats sockets.total and clients. */
static void
stats_(struct tc *t, long long *sockets, long long *clients)
{
    json_t *r = tc_ok_(t, NULL, "daemon.stats", NULL);
    json_t *so = jget_(r, "sockets");
    if (sockets)
        *sockets = jint_(so, "total");
    if (clients)
        *clients = jint_(r, "clients");
    json_decref(r);
}

/* Poll daemon.stats (bounded) until sockets.total == sockets and clients == clients. */
static void
wait_stats_(struct tc *t, long long sockets, long long clients)
{
    long long deadline = now_ms() + H_TIMEOUT_MS, s = -1, c = -1;
    for (int guard = 0; guard < 1000; guard++) {
        stats_(t, &s, &c);
        if (s == sockets && c == clients)
            return;
        if (now_ms() >= deadline)
            break;
        sleep_ms(20);
    }
    FAIL("daemon.stats: sockets.total %lld clients %lld, expected %lld and %lld within %d ms", s, c,
         sockets, clients, H_TIMEOUT_MS);
}

/* Wait (bounded) until the daemon has at most n fds open; returns the last count. */
static int
wait_fds_at_most(int n, int ms)
{
    long long deadline = now_ms() + ms;
    int c = h_count_fds(g_d.pid);
    for (int guard = 0; c > n && guard < 10000 && now_ms() < deadline; guard++) {
        sleep_ms(20);
        c = h_count_fds(g_d.pid);
    }
    return c;
}

/* Wait (bounded) until dnsd has seen at least n questions for name; returns the count. */
static unsigned
wait_dns_queries(const char *name, unsigned n, int ms)
{
    long long deadline = now_ms() + ms;
    unsigned q = dnsd_name_queries(&g_dns, name);
    for (int guard = 0; q < n && guard < 10000 && now_ms() < deadline; guard++) {
        sleep_ms(5);
        q = dnsd_name_queries(&g_dns, name);
    }
    return q;
}

/* ------------------------------------------------------------------------ */
/* raw loopback sockets of the test process                                 */

static void
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

static int
sa_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/*
 * A tracked socket of type (SOCK_STREAM/SOCK_DGRAM) bound to the loopback address at port (0:
 * any); a stream socket listens when listen_too. Returns the fd (-1 if the bind failed and
 * may_fail), *port_out the port.
 */
static int
raw_bound_(int type, int v6, int port, bool listen_too, bool may_fail, int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = track_fd(socket(v6 ? AF_INET6 : AF_INET, type | SOCK_CLOEXEC, 0));

    if (v6) {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    fill_sa(&ss, &sl, v6, port);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        if (may_fail) {
            close_fd(fd);
            return -1;
        }
        FAIL("bind to %s port %d: %s", v6 ? "::1" : "127.0.0.1", port, strerror(errno));
    }
    if (listen_too)
        assert_int_equal(listen(fd, 16), 0);
    sl = sizeof ss;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    if (port_out)
        *port_out = sa_port(&ss);
    return fd;
}

/* A tracked TCP listener on the IPv4 address ip, port (0: any); -1 if the bind fails. */
static int
raw_listen_ip4(const char *ip, int port, int *port_out)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    int fd = track_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 16) != 0) {
        close_fd(fd);
        return -1;
    }
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    if (port_out)
        *port_out = ntohs(sin.sin_port);
    return fd;
}

/* Accept one connection within ms; -1 on timeout. */
static int
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

/* Read up to len bytes within H_TIMEOUT_MS (stops early at EOF); returns the count. */
static size_t
raw_read(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    long long deadline = now_ms() + H_TIMEOUT_MS;

    for (int guard = 0; got < len && guard < 100000; guard++) {
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
    }
    return got;
}

/* One datagram within ms into buf (NUL-terminated); returns its length, -1 on timeout. *from_port
 * gets the sender's port. */
static int
raw_udp_recv(int fd, char *buf, size_t cap, int ms, int *from_port)
{
    struct pollfd pf = {fd, POLLIN, 0};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    ssize_t n;
    int r;

    do
        r = poll(&pf, 1, ms);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return -1;
    n = recvfrom(fd, buf, cap - 1, MSG_DONTWAIT, (struct sockaddr *)&ss, &sl);
    if (n < 0)
        FAIL("recvfrom: %s", strerror(errno));
    buf[n] = 0;
    if (from_port)
        *from_port = sa_port(&ss);
    return (int)n;
}

/* Does /etc/hosts map "localhost" to ::1? */
static bool
hosts_has_v6_localhost(void)
{
    FILE *f = fopen("/etc/hosts", "r");
    char line[512];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        char *save = NULL, *w, *hash = strchr(line, '#');
        struct in6_addr a6;
        if (hash)
            *hash = 0;
        w = strtok_r(line, " \t\r\n", &save);
        if (!w || inet_pton(AF_INET6, w, &a6) != 1 || !IN6_IS_ADDR_LOOPBACK(&a6))
            continue;
        while ((w = strtok_r(NULL, " \t\r\n", &save)) != NULL)
            if (strcasecmp(w, "localhost") == 0)
                found = true;
    }
    fclose(f);
    return found;
}

/* Helpers called from a test record its line, shown when they fail. */
static int
set_line(int line)
{
    t_line = line;
    return 0;
}
#define tc_new(...) (set_line(__LINE__), tc_new_(__VA_ARGS__))
#define peer_new(...) (set_line(__LINE__), peer_new_(__VA_ARGS__))
#define tc_ok(...) (set_line(__LINE__), tc_ok_(__VA_ARGS__))
#define tc_expect_err(...) (set_line(__LINE__), tc_expect_err_(__VA_ARGS__))
#define tc_next_is(...) (set_line(__LINE__), tc_next_is_(__VA_ARGS__))
#define tc_no_event(...) (set_line(__LINE__), tc_no_event_(__VA_ARGS__))
#define tc_open(...) (set_line(__LINE__), tc_open_(__VA_ARGS__))
#define tc_info(...) (set_line(__LINE__), tc_info_(__VA_ARGS__))
#define expect_state(...) (set_line(__LINE__), expect_state_(__VA_ARGS__))
#define expect_gone(...) (set_line(__LINE__), expect_gone_(__VA_ARGS__))
#define start_connect(...) (set_line(__LINE__), start_connect_(__VA_ARGS__))
#define expect_connected(...) (set_line(__LINE__), expect_connected_(__VA_ARGS__))
#define expect_closed(...) (set_line(__LINE__), expect_closed_(__VA_ARGS__))
#define stats(...) (set_line(__LINE__), stats_(__VA_ARGS__))
#define wait_stats(...) (set_line(__LINE__), wait_stats_(__VA_ARGS__))
#define raw_bound(...) (set_line(__LINE__), raw_bound_(__VA_ARGS__))
#define check_addr(...) (set_line(__LINE__), check_addr_(__VA_ARGS__))
#define jint(...) (set_line(__LINE__), jint_(__VA_ARGS__))
#define jstr(...) (set_line(__LINE__), jstr_(__VA_ARGS__))
#define jget(...) (set_line(__LINE__), jget_(__VA_ARGS__))
#define LINE() set_line(__LINE__)

/* ------------------------------------------------------------------------ */
/* the tests                                                                 */

/* A name with only an A record reaches an IPv4 peer; port in the address and as "port". */
static void
test_a_record_ipv4(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned q0 = dnsd_name_queries(&g_dns, N_A4);
    char addr[128];
    long long s, id;
    json_t *ev, *info;

    /* port inside the address string */
    s = tc_open(t, "tcp", 0);
    snprintf(addr, sizeof addr, "%s:%d", N_A4, p->port);
    id = start_connect(t, s, addr, -1, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", p->port);
    json_decref(ev);
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "connected", "socket.info after a named connect: %s", jd(info));
    check_addr(info, "remote", "127.0.0.1", p->port);
    json_decref(info);
    LINE();
    EXPECT_TRUE(dnsd_name_queries(&g_dns, N_A4) > q0, "dnsd saw a question for %s", N_A4);
    for (int i = 0; i < 50 && p->accepted < 1; i++)
        sleep_ms(20);
    LINE();
    EXPECT_INT(p->accepted, 1, "connections accepted by the IPv4 peer");

    /* port as the "port" param */
    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, N_A4, p->port, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", p->port);
    json_decref(ev);
    for (int i = 0; i < 50 && p->accepted < 2; i++)
        sleep_ms(20);
    LINE();
    EXPECT_INT(p->accepted, 2, "connections accepted by the IPv4 peer");
}

/* A name with only an AAAA record reaches an IPv6 peer on ::1. */
static void
test_aaaa_record_ipv6(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 1);
    char addr[128];
    long long s, id;
    json_t *ev;

    s = tc_open(t, "tcp", 0);
    snprintf(addr, sizeof addr, "%s:%d", N_A6, p->port);
    id = start_connect(t, s, addr, -1, 0);
    ev = expect_connected(t, s, id, "::1", p->port);
    json_decref(ev);
    for (int i = 0; i < 50 && p->accepted < 1; i++)
        sleep_ms(20);
    LINE();
    EXPECT_INT(p->accepted, 1, "connections accepted by the IPv6 peer");

    /* the "port" param form, on a socket opened with ipv6:true */
    s = tc_open(t, "tcp", 1);
    id = start_connect(t, s, N_A6, p->port, 0);
    ev = expect_connected(t, s, id, "::1", p->port);
    json_decref(ev);
}

/* "localhost" comes from /etc/hosts (never from DNS) and reaches an IPv4 listener. */
static void
test_localhost_ipv4(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned all0 = dnsd_queries(&g_dns);
    long long s, id;
    char addr[64];
    json_t *ev;

    s = tc_open(t, "tcp", 0);
    snprintf(addr, sizeof addr, "localhost:%d", p->port);
    id = start_connect(t, s, addr, -1, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", p->port);
    json_decref(ev);

    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, "LocalHost", p->port, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", p->port);
    json_decref(ev);

    LINE();
    EXPECT_INT(dnsd_name_queries(&g_dns, "localhost"), 0, "dnsd questions for localhost");
    EXPECT_INT(dnsd_queries(&g_dns), all0, "dnsd questions of any name while resolving localhost");
}

/* "localhost" reaches a listener only on ::1 when /etc/hosts maps localhost to ::1 too. */
static void
test_localhost_ipv6(void **state)
{
    (void)state;
    if (!hosts_has_v6_localhost()) {
        print_message("/etc/hosts does not map localhost to ::1: IPv6 localhost half skipped\n");
        skip();
    }
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 1);
    unsigned all0 = dnsd_queries(&g_dns);
    long long s, id;
    char addr[64];
    json_t *ev;

    s = tc_open(t, "tcp", 0);
    snprintf(addr, sizeof addr, "localhost:%d", p->port);
    id = start_connect(t, s, addr, -1, 0);
    ev = expect_connected(t, s, id, "::1", p->port);
    json_decref(ev);
    LINE();
    EXPECT_INT(dnsd_name_queries(&g_dns, "localhost"), 0, "dnsd questions for localhost");
    EXPECT_INT(dnsd_queries(&g_dns), all0, "dnsd questions of any name while resolving localhost");
}

/*
 * A name with both records. IPv6 is tried first: with both families listening it connects to
 * ::1; with nothing on [::1]:port it falls back to 127.0.0.1.
 */
static void
test_dual_ipv6_first_then_fallback(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    json_t *ev;
    int port = 0, fd4 = -1, fd6 = -1, hold6 = -1;
    int lfd4, lfd6, afd;

    /* both families listening on the same port number: IPv6 first */
    for (int i = 0; i < 20 && fd6 < 0; i++) {
        if (fd4 >= 0)
            close_fd(fd4);
        fd4 = raw_bound(SOCK_STREAM, 0, 0, true, false, &port);
        fd6 = raw_bound(SOCK_STREAM, 1, port, true, true, NULL);
    }
    LINE();
    EXPECT_TRUE(fd6 >= 0, "a port free on both 127.0.0.1 and ::1");
    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, N_DUAL, port, 0);
    ev = expect_connected(t, s, id, "::1", port);
    json_decref(ev);
    close_fd(fd4);
    close_fd(fd6);

    /* only IPv4 listens; [::1]:port is bound (so nothing else can listen there) but not
     * listening: refused, then 127.0.0.1 */
    lfd4 = -1;
    for (int i = 0; i < 20 && hold6 < 0; i++) {
        if (lfd4 >= 0)
            close_fd(lfd4);
        lfd4 = raw_bound(SOCK_STREAM, 0, 0, true, false, &port);
        hold6 = raw_bound(SOCK_STREAM, 1, port, false, true, NULL);
    }
    LINE();
    EXPECT_TRUE(hold6 >= 0, "a port free on both 127.0.0.1 and ::1");
    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, N_DUAL, port, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", port);
    json_decref(ev);
    afd = raw_accept(lfd4, H_TIMEOUT_MS);
    LINE();
    EXPECT_TRUE(afd >= 0, "the IPv4 listener got the connection");

    /* and the same through an IPv6-only listener, IPv4 port dead: IPv6 wins at once */
    lfd6 = -1;
    hold6 = -1;
    for (int i = 0; i < 20 && hold6 < 0; i++) {
        if (lfd6 >= 0)
            close_fd(lfd6);
        lfd6 = raw_bound(SOCK_STREAM, 1, 0, true, false, &port);
        hold6 = raw_bound(SOCK_STREAM, 0, port, false, true, NULL);
    }
    LINE();
    EXPECT_TRUE(hold6 >= 0, "a port free on both ::1 and 127.0.0.1");
    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, N_DUAL, port, 0);
    ev = expect_connected(t, s, id, "::1", port);
    json_decref(ev);
}

/* Two A records: the first refuses, the second has the peer. */
static void
test_two_a_records_second_wins(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p;
    long long s, id;
    json_t *ev;
    int port = 0, fd1 = -1, fd2 = -1;

    /* both addresses listening: the first record (127.0.0.2) wins, so the order is kept */
    for (int i = 0; i < 20 && fd1 < 0; i++) {
        if (fd2 >= 0)
            close_fd(fd2);
        fd2 = raw_listen_ip4("127.0.0.2", 0, &port);
        if (fd2 < 0)
            break;
        fd1 = raw_listen_ip4("127.0.0.1", port, NULL);
    }
    if (fd2 < 0) {
        print_message("cannot listen on 127.0.0.2 here: the order half is skipped\n");
    } else {
        LINE();
        EXPECT_TRUE(fd1 >= 0, "a port free on both 127.0.0.1 and 127.0.0.2");
        s = tc_open(t, "tcp", 0);
        id = start_connect(t, s, N_TWO_A, port, 3000);
        ev = tc_next_is(t, s, "socket.connected", H_TIMEOUT_MS);
        EXPECT_INT(jint(ev, "request"), id, "socket.connected request: %s", jd(ev));
        check_addr(ev, "remote", "127.0.0.2", port);
        json_decref(ev);
        LINE();
        EXPECT_TRUE(raw_accept(fd2, H_TIMEOUT_MS) >= 0, "the 127.0.0.2 listener got it");
        close_fd(fd1);
        close_fd(fd2);
    }

    /* nothing on 127.0.0.2:port (refused): the second record, 127.0.0.1, is tried next */
    p = peer_new(H_ECHO, 0);
    s = tc_open(t, "tcp", 0);
    id = start_connect(t, s, N_TWO_A, p->port, 3000);
    ev = expect_connected(t, s, id, "127.0.0.1", p->port);
    json_decref(ev);
    for (int i = 0; i < 50 && p->accepted < 1; i++)
        sleep_ms(20);
    LINE();
    EXPECT_INT(p->accepted, 1, "connections accepted by the peer on the second address");
}

/* NXDOMAIN: socket.closed connect_failed, "did not resolve", request = the connect id. */
static void
test_nxdomain(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    unsigned q0 = dnsd_name_queries(&g_dns, N_NX);
    long long s = tc_open(t, "tcp", 0), id;
    json_t *ev;
    const char *detail;

    id = start_connect(t, s, N_NX ":80", -1, 0);
    ev = expect_closed(t, s, id, SOCKD_REASON_CONNECT_FAILED, H_TIMEOUT_MS);
    detail = jstr(ev, "detail");
    EXPECT_TRUE(strstr(detail, "did not resolve") != NULL, "detail: %s", jd(ev));
    EXPECT_TRUE(strstr(detail, N_NX) != NULL, "detail names the host: %s", jd(ev));
    json_decref(ev);
    LINE();
    EXPECT_TRUE(dnsd_name_queries(&g_dns, N_NX) > q0, "dnsd saw the question for %s", N_NX);
    expect_gone(t, s);
    tc_no_event(t, 0, 200);
}

/* The connect's timeout_ms covers the lookup: a slow answer ends with reason timeout. */
static void
test_connect_timeout_covers_lookup(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    long long s = tc_open(t, "tcp", 0), id, t0, el;
    json_t *ev;

    t0 = now_ms();
    id = start_connect(t, s, N_SLOW3, p->port, 500);
    expect_state(t, s, "connecting");
    ev = tc_next_is(t, s, "socket.closed", 2500);
    el = now_ms() - t0;
    EXPECT_STR(jstr(ev, "reason"), SOCKD_REASON_TIMEOUT,
               "socket.closed of a 500 ms connect whose lookup takes 3000 ms: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "socket.closed request: %s", jd(ev));
    json_decref(ev);
    EXPECT_TRUE(el >= 400 && el < 1500, "timeout after %lld ms (timeout_ms 500)", el);
    LINE();
    EXPECT_INT(p->accepted, 0, "the peer got no connection");
    expect_gone(t, s);
}

/* A lookup slower than resolve-timeout fails with connect_failed and says it timed out. */
static void
test_resolve_timeout(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    long long s = tc_open(t, "tcp", 0), id, t0, el;
    json_t *ev;
    const char *detail;

    t0 = now_ms();
    id = start_connect(t, s, N_SLOW4, p->port, 0);
    ev = tc_next_is(t, s, "socket.closed", RESOLVE_TIMEOUT_MS + 2500);
    el = now_ms() - t0;
    EXPECT_STR(jstr(ev, "reason"), SOCKD_REASON_CONNECT_FAILED,
               "socket.closed of a lookup past resolve-timeout: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "socket.closed request: %s", jd(ev));
    detail = jstr(ev, "detail");
    EXPECT_TRUE(strstr(detail, "did not resolve") != NULL, "detail: %s", jd(ev));
    EXPECT_TRUE(contains_ci(detail, "timed out") || contains_ci(detail, "timeout"),
                "detail mentions the timeout: %s", jd(ev));
    json_decref(ev);
    EXPECT_TRUE(el >= RESOLVE_TIMEOUT_MS - 300 && el < RESOLVE_TIMEOUT_MS + 1500,
                "lookup failed after %lld ms (resolve-timeout %d ms, answer after 4000 ms)", el,
                RESOLVE_TIMEOUT_MS);
    LINE();
    EXPECT_INT(p->accepted, 0, "the peer got no connection");
}

/* A pending lookup does not delay another client. */
static void
test_lookup_does_not_block(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d), *u = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned q0 = dnsd_name_queries(&g_dns, N_HOLD);
    long long s = tc_open(t, "tcp", 0), id, t0, worst = 0, total;
    json_t *m, *ev;

    t0 = now_ms();
    id = start_connect(t, s, N_HOLD, p->port, 0);
    LINE();
    EXPECT_TRUE(wait_dns_queries(N_HOLD, q0 + 1, 1000) > q0, "the lookup reached dnsd");
    for (int i = 0; i < 20; i++) {
        long long a = now_ms(), d;
        json_t *r = tc_ok(u, NULL, "daemon.ping", NULL);
        d = now_ms() - a;
        EXPECT_TRUE(json_is_object(r) && json_object_size(r) == 0, "daemon.ping result %s", jd(r));
        json_decref(r);
        EXPECT_TRUE(d < 500, "daemon.ping %d answered after %lld ms while a lookup is held", i, d);
        if (d > worst)
            worst = d;
    }
    total = now_ms() - t0;
    /* the lookup was still pending all along */
    EXPECT_TRUE(total < 1900, "20 pings took %lld ms (slowest %lld ms)", total, worst);
    LINE();
    m = tc_wait_msg(t, NULL, s, 0);
    EXPECT_TRUE(m == NULL, "socket %lld already had news during the pings: %s", s, jd(m));
    json_decref(m);
    /* and the held lookup still ends (connected, or failed at resolve-timeout) */
    m = tc_wait_msg(t, NULL, s, RESOLVE_TIMEOUT_MS + 3000);
    LINE();
    EXPECT_TRUE(m != NULL, "no outcome for the held connect");
    ev = json_object_get(m, "params");
    EXPECT_INT(jint(ev, "request"), id, "outcome of the held connect: %s", jd(m));
    EXPECT_TRUE(strcmp(jstr(m, "method"), "socket.connected") == 0 ||
                    strcmp(jstr(ev, "reason"), SOCKD_REASON_CONNECT_FAILED) == 0,
                "outcome of the held connect: %s", jd(m));
    json_decref(m);
}

/* Sends issued during the lookup are queued and reach the peer after the connect. */
static void
test_send_during_lookup(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port, lfd = raw_bound(SOCK_STREAM, 0, 0, true, false, &port), afd;
    long long s = tc_open(t, "tcp", 0), id, sid;
    json_t *r, *ev, *info;
    char got[32] = {0};

    id = start_connect(t, s, N_EARLY, port, 0);
    expect_state(t, s, "connecting");
    r = tc_ok(t, &sid, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "early bird");
    EXPECT_INT(jint(r, "queued"), 10, "socket.send during the lookup: %s", jd(r));
    json_decref(r);
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "connecting", "state during the lookup: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 10, "send_buffered during the lookup: %s", jd(info));
    json_decref(info);

    ev = expect_connected(t, s, id, "127.0.0.1", port);
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), 10, "socket.sent: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), sid, "socket.sent request: %s", jd(ev));
    json_decref(ev);
    afd = raw_accept(lfd, H_TIMEOUT_MS);
    LINE();
    EXPECT_TRUE(afd >= 0, "the listener got the connection");
    EXPECT_INT(raw_read(afd, got, 10), 10, "bytes at the peer");
    EXPECT_STR(got, "early bird", "the peer's bytes");
}

/* socket.close during a lookup: silent, and nothing is left behind. */
static void
test_close_during_lookup(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned q0 = dnsd_name_queries(&g_dns, N_CLOSE);
    long long s, sock0, clients0, sock1;
    int fds0, fds;
    json_t *r;

    sleep_ms(100);
    stats(t, &sock0, &clients0);
    fds0 = h_count_fds(g_d.pid);
    s = tc_open(t, "tcp", 0);
    start_connect(t, s, N_CLOSE, p->port, 0);
    LINE();
    EXPECT_TRUE(wait_dns_queries(N_CLOSE, q0 + 1, 1000) > q0, "the lookup reached dnsd");
    stats(t, &sock1, NULL);
    EXPECT_INT(sock1, sock0 + 1, "sockets.total during the lookup");
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(jint(r, "discarded"), 0, "socket.close discarded: %s", jd(r));
    json_decref(r);
    expect_gone(t, s);
    wait_stats(t, sock0, clients0);
    /* past the moment the answer comes (1500 ms): still nothing, and no connection made */
    tc_no_event(t, 0, 2000);
    LINE();
    EXPECT_INT(p->accepted, 0, "connections made for a closed socket");
    fds = wait_fds_at_most(fds0, H_TIMEOUT_MS);
    EXPECT_TRUE(fds <= fds0, "daemon fds %d, %d before the lookup", fds, fds0);
    wait_stats(t, sock0, clients0);
    r = tc_ok(t, NULL, "daemon.ping", NULL);
    json_decref(r);
}

/* The client goes away during a lookup: the daemon survives, nothing is left behind. */
static void
test_client_gone_during_lookup(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d), *u = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned q0 = dnsd_name_queries(&g_dns, N_GONE);
    long long s, sock0, clients0;
    int fds0, fds;
    json_t *r;

    sleep_ms(100);
    stats(t, &sock0, &clients0);
    fds0 = h_count_fds(g_d.pid);
    s = tc_open(u, "tcp", 0);
    start_connect(u, s, N_GONE, p->port, 0);
    /* a second one, with a send queued, for good measure */
    s = tc_open(u, "tcp", 0);
    start_connect(u, s, N_GONE, p->port, 0);
    r = tc_ok(u, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "lost");
    json_decref(r);
    LINE();
    EXPECT_TRUE(wait_dns_queries(N_GONE, q0 + 1, 1000) > q0, "the lookup reached dnsd");
    tc_close(u);
    wait_stats(t, sock0, clients0 - 1);
    sleep_ms(2000); /* past the answer (1500 ms) */
    r = tc_ok(t, NULL, "daemon.ping", NULL);
    json_decref(r);
    wait_stats(t, sock0, clients0 - 1);
    LINE();
    EXPECT_INT(p->accepted, 0, "connections made for a departed client");
    fds = wait_fds_at_most(fds0 - 1, H_TIMEOUT_MS); /* minus the departed control connection */
    EXPECT_TRUE(fds <= fds0 - 1, "daemon fds %d, %d before (with the departed client)", fds, fds0);
    /* the daemon still resolves */
    {
        struct h_peer *q = peer_new(H_ECHO, 0);
        long long s2 = tc_open(t, "tcp", 0), id;
        json_t *ev;
        id = start_connect(t, s2, N_A4, q->port, 0);
        ev = expect_connected(t, s2, id, "127.0.0.1", q->port);
        json_decref(ev);
    }
}

/* bind and sendto take no host names (but localhost); dnsd is never asked. */
static void
test_bind_sendto_no_names(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, u;
    json_t *e, *d, *r;
    char addr[128];
    int rport, rfd;

    s = tc_open(t, "tcp", 0);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s}", "socket",
                      (json_int_t)s, "address", N_NOBIND);
    d = jget(e, "data");
    EXPECT_STR(jstr(d, "reason"), SOCKD_REASON_ADDRESS_INVALID, "bind to a name: %s", jd(e));
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:i}", "socket",
                      (json_int_t)s, "address", N_NOBIND, "port", 0);
    d = jget(e, "data");
    EXPECT_STR(jstr(d, "reason"), SOCKD_REASON_ADDRESS_INVALID, "bind to a name+port: %s", jd(e));
    json_decref(e);
    expect_state(t, s, "open");

    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
              "localhost");
    check_addr(r, "local", "127.0.0.1", -1);
    json_decref(r);
    expect_state(t, s, "bound");

    s = tc_open(t, "tcp", 1);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
              "localhost");
    check_addr(r, "local", "::1", -1);
    json_decref(r);

    u = tc_open(t, "udp", 0);
    rfd = raw_bound(SOCK_DGRAM, 0, 0, false, false, &rport);
    (void)rfd;
    snprintf(addr, sizeof addr, "%s:%d", N_NOBIND, rport);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s}", "socket",
                      (json_int_t)u, "text", "x", "address", addr);
    d = jget(e, "data");
    EXPECT_STR(jstr(d, "reason"), SOCKD_REASON_ADDRESS_INVALID, "sendto a name: %s", jd(e));
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s, s:i}", "socket",
                      (json_int_t)u, "text", "x", "address", N_NOBIND, "port", rport);
    d = jget(e, "data");
    EXPECT_STR(jstr(d, "reason"), SOCKD_REASON_ADDRESS_INVALID, "sendto a name+port: %s", jd(e));
    json_decref(e);
    expect_state(t, u, "open");
    tc_no_event(t, 0, 200);
    LINE();
    EXPECT_INT(dnsd_name_queries(&g_dns, N_NOBIND), 0, "dnsd questions for a bind/sendto name");
}

/* UDP connect with a name, then send reaches our UDP socket. */
static void
test_udp_connect_name(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int rport, rfd = raw_bound(SOCK_DGRAM, 0, 0, false, false, &rport), from = 0, n;
    long long s = tc_open(t, "udp", 0), id, sid;
    json_t *ev, *r;
    int lport;
    char buf[64];

    id = start_connect(t, s, N_UDP, rport, 0);
    ev = expect_connected(t, s, id, "127.0.0.1", rport);
    lport = check_addr(ev, "local", "127.0.0.1", -1);
    json_decref(ev);
    r = tc_ok(t, &sid, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "via-name");
    EXPECT_INT(jint(r, "queued"), 8, "socket.send: %s", jd(r));
    json_decref(r);
    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), sid, "socket.sent request: %s", jd(ev));
    json_decref(ev);
    n = raw_udp_recv(rfd, buf, sizeof buf, H_TIMEOUT_MS, &from);
    LINE();
    EXPECT_INT(n, 8, "datagram length at our UDP socket");
    EXPECT_STR(buf, "via-name", "datagram at our UDP socket");
    EXPECT_INT(from, lport, "datagram's source port");
}

/* ------------------------------------------------------------------------ */

static int
group_setup(void **state)
{
    char conf[160];
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (dnsd_start(&g_dns) != 0) {
        fprintf(stderr, "dnsd_start: %s\n", strerror(errno));
        return -1;
    }
    assert_int_equal(dnsd_add_a(&g_dns, N_A4, "127.0.0.1"), 0);
    assert_int_equal(dnsd_add_aaaa(&g_dns, N_A6, "::1"), 0);
    assert_int_equal(dnsd_add_aaaa(&g_dns, N_DUAL, "::1"), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_DUAL, "127.0.0.1"), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_TWO_A, "127.0.0.2"), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_TWO_A, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_rcode(&g_dns, N_NX, DNSD_NXDOMAIN), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_SLOW3, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_SLOW3, 3000), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_SLOW4, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_SLOW4, 4000), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_HOLD, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_HOLD, 2000), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_EARLY, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_EARLY, 400), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_CLOSE, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_CLOSE, 1500), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_GONE, "127.0.0.1"), 0);
    assert_int_equal(dnsd_set_delay(&g_dns, N_GONE, 1500), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_NOBIND, "127.0.0.1"), 0);
    assert_int_equal(dnsd_add_a(&g_dns, N_UDP, "127.0.0.1"), 0);
    snprintf(conf, sizeof conf, "resolver 127.0.0.1:%u\nresolve-timeout %ds\n",
             (unsigned)g_dns.port, RESOLVE_TIMEOUT_MS / 1000);
    h_daemon_start(&g_d, conf);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_daemon_stop(&g_d);
    dnsd_stop(&g_dns);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, t_cleanup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_a_record_ipv4),
        T(test_aaaa_record_ipv6),
        T(test_localhost_ipv4),
        T(test_localhost_ipv6),
        T(test_dual_ipv6_first_then_fallback),
        T(test_two_a_records_second_wins),
        T(test_nxdomain),
        T(test_connect_timeout_covers_lookup),
        T(test_resolve_timeout),
        T(test_lookup_does_not_block),
        T(test_send_during_lookup),
        T(test_close_during_lookup),
        T(test_client_gone_during_lookup),
        T(test_bind_sendto_no_names),
        T(test_udp_connect_name),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
