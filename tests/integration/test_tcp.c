/*
 * Integration tests: the whole TCP lifecycle through a real sockd, against real
 * loopback peers (127.0.0.1 and ::1 only).
 *
 * The test client is tc.h: requests with ids chosen here, so that the "request"
 * member of notifications can be checked against them; every message read
 * meanwhile is kept, in arrival order, in a per-client inbox. Every wait is
 * bounded (H_TIMEOUT_MS unless a test needs less), every loop has a fixed bound.
 * Resources made by a test are tracked and released by the per-test teardown,
 * so a failing test does not leak into the next one.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tc.h"

#define SEND_CAP                                                                                   \
    (4 * MIB) /* max-send-buffer default (sockd-protocol.7, FLOW CONTROL AND LIMITS)               \
               */

static struct h_daemon g_d; /* the group's daemon */

/* ------------------------------------------------------------------------ */
/* socket-level shorthands                                                   */

static long long
tc_open_(struct tc *t, int v6)
{
    json_t *r = v6 ? tc_ok_(t, NULL, "socket.open", "{s:s, s:b}", "type", "tcp", "ipv6", 1)
                   : tc_ok_(t, NULL, "socket.open", "{s:s}", "type", "tcp");
    long long s = jint_(r, "socket");
    EXPECT_TRUE(s > 0, "socket.open handle %lld", s);
    json_decref(r);
    return s;
}

/* ------------------------------------------------------------------------ */
/* raw loopback sockets of the test process                                 */

static int
raw_listen_(int v6, int *port)
{
    return raw_bound_(v6, 0, 16, port);
}

/* A port on 127.0.0.1 (or ::1) that was free a moment ago. */
static int
free_port_(int v6)
{
    int port, fd = raw_bound_(v6, 0, -1, &port);
    close_fd_(fd);
    return port;
}

/* Accept connections until the one whose peer port is peer_port (others closed). */
static int
raw_accept_from_(int lfd, int peer_port)
{
    long long deadline = now_ms() + H_TIMEOUT_MS;

    for (int i = 0; i < 32; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        long long left = deadline - now_ms();
        int fd = raw_accept(lfd, left > 0 ? (int)left : 0);

        if (fd < 0)
            break;
        EXPECT_INT(getpeername(fd, (struct sockaddr *)&ss, &sl), 0, "getpeername: %s",
                   strerror(errno));
        if (sa_port(&ss) == peer_port)
            return fd;
        close_fd_(fd);
    }
    FAIL("the connection from the daemon's port %d never reached our listener", peer_port);
    return -1;
}

/* A plain client connection to ::1:port (blocking), tracked. */
static int
raw_connect6_(int port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd = track_fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));

    fill_sa(&ss, &sl, 1, port);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0)
        FAIL("connect [::1]:%d: %s", port, strerror(errno));
    return fd;
}

static int
tcp_connect4_(int port)
{
    return track_fd(h_tcp_connect(port));
}

/*
 * A loopback address that swallows SYNs: a listener with backlog 0 whose accept
 * queue we fill; further SYNs are dropped (and retransmitted by their sender)
 * until the backlog is raised again with listen().
 */
struct blackhole {
    int lfd;
    int port;
    char addr[32];
};

static void
blackhole_make_(struct blackhole *b)
{
    b->lfd = raw_bound_(0, 0, 0, &b->port);
    snprintf(b->addr, sizeof b->addr, "127.0.0.1:%d", b->port);
    for (int i = 0; i < 8; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        struct pollfd p;
        int fd = track_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));

        fill_sa(&ss, &sl, 0, b->port);
        if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS)
            FAIL("blackhole filler connect: %s", strerror(errno));
        p.fd = fd;
        p.events = POLLOUT;
        p.revents = 0;
        if (poll(&p, 1, 250) == 0)
            return; /* this SYN went unanswered: the accept queue is full */
    }
    FAIL("could not make a loopback blackhole (accept queue never filled)");
}

/* Let the held SYNs in (the next retransmission, about 1 s after the first SYN, connects). */
static void
blackhole_release(struct blackhole *b)
{
    EXPECT_INT(listen(b->lfd, 64), 0, "listen: %s", strerror(errno));
}

/*
 * A connected pair: a daemon tcp socket (*s) connected to a listener of ours,
 * and our accepted end (returned). Checks socket.connected thoroughly.
 */
static int
make_pair_(struct tc *t, int v6, long long *s)
{
    int port, lfd = raw_listen_(v6, &port), lp, fd;
    const char *ip = v6 ? "::1" : "127.0.0.1";
    char addr[64];
    long long id;
    json_t *r, *ev;

    *s = tc_open_(t, v6);
    snprintf(addr, sizeof addr, v6 ? "[%s]:%d" : "%s:%d", ip, port);
    r = tc_ok_(t, &id, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)*s, "address", addr);
    expect_result_empty_(r, "socket.connect");
    json_decref(r);
    ev = tc_event_(t, "socket.connected", *s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    lp = check_addr_(ev, "local", ip, -1);
    check_addr_(ev, "remote", ip, port);
    json_decref(ev);
    fd = raw_accept_from_(lfd, lp);
    close_fd_(lfd);
    return fd;
}

/* open + connect to addr + socket.connected; returns the connected params via *ev_out (may be
 * NULL). */
static long long
connect_to_(struct tc *t, int v6flag, const char *addr, int port, json_t **ev_out)
{
    long long s = tc_open_(t, v6flag), id;
    json_t *r, *ev;

    if (port >= 0)
        r = tc_ok_(t, &id, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
                   addr, "port", port);
    else
        r = tc_ok_(t, &id, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address",
                   addr);
    expect_result_empty_(r, "socket.connect");
    json_decref(r);
    ev = tc_event_(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    if (ev_out)
        *ev_out = ev;
    else
        json_decref(ev);
    return s;
}

/* A listener in the daemon on addr (port 0), listening; returns the handle, *port the bound port.
 */
static long long
make_listener_(struct tc *t, const char *addr, int auto_accept, long long *listen_id, int *port)
{
    long long l = tc_open_(t, 0);
    json_t *r =
        tc_ok_(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)l, "address", addr);
    *port = check_addr_(r, "local", addr, -1);
    json_decref(r);
    r = tc_ok_(t, listen_id, "socket.listen", "{s:I, s:b}", "socket", (json_int_t)l, "auto_accept",
               auto_accept);
    expect_result_empty_(r, "socket.listen");
    json_decref(r);
    return l;
}

/* Wait for socket.incoming on listener l; check remote port and local; return pending. */
static long long
expect_incoming_(struct tc *t, long long l, long long listen_id, const char *ip, int lport,
                 int cport)
{
    json_t *ev = tc_event_(t, "socket.incoming", l, H_TIMEOUT_MS);
    long long p = jint_(ev, "pending");

    EXPECT_TRUE(p > 0, "socket.incoming pending: %s", jd(ev));
    check_addr_(ev, "remote", ip, cport);
    check_addr_(ev, "local", ip, lport);
    EXPECT_INT(jint_(ev, "request"), listen_id, "socket.incoming request: %s", jd(ev));
    json_decref(ev);
    return p;
}

/* Accept pending p on l; check the result and socket.accepted; returns the new handle. */
static long long
accept_pending_(struct tc *t, long long l, long long p, const char *ip, int lport, int cport)
{
    long long id, n;
    json_t *r = tc_ok_(t, &id, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                       (json_int_t)p);
    json_t *ev;

    n = jint_(r, "socket");
    json_decref(r);
    EXPECT_TRUE(n > 0 && n != l, "socket.accept new handle %lld (listener %lld)", n, l);
    ev = tc_event_(t, "socket.accepted", n, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "listener"), l, "socket.accepted listener: %s", jd(ev));
    EXPECT_INT(jint_(ev, "request"), id, "socket.accepted request: %s", jd(ev));
    check_addr_(ev, "local", ip, lport);
    check_addr_(ev, "remote", ip, cport);
    json_decref(ev);
    return n;
}

/* Helpers called from a test record its line, shown when they fail. */
#define tc_open(...) (TC_AT(), tc_open_(__VA_ARGS__))
#define raw_listen(...) (TC_AT(), raw_listen_(__VA_ARGS__))
#define free_port(...) (TC_AT(), free_port_(__VA_ARGS__))
#define raw_accept_from(...) (TC_AT(), raw_accept_from_(__VA_ARGS__))
#define raw_connect6(...) (TC_AT(), raw_connect6_(__VA_ARGS__))
#define tcp_connect4(...) (TC_AT(), tcp_connect4_(__VA_ARGS__))
#define blackhole_make(...) (TC_AT(), blackhole_make_(__VA_ARGS__))
#define make_pair(...) (TC_AT(), make_pair_(__VA_ARGS__))
#define connect_to(...) (TC_AT(), connect_to_(__VA_ARGS__))
#define make_listener(...) (TC_AT(), make_listener_(__VA_ARGS__))
#define expect_incoming(...) (TC_AT(), expect_incoming_(__VA_ARGS__))
#define accept_pending(...) (TC_AT(), accept_pending_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* socket.open / socket.info basics                                          */

static void
test_open_info_tag(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    json_t *tag = json_pack("{s:[i,s], s:n, s:b}", "k", 1, "x", "z", "f", 0);
    json_t *r, *info, *err;
    long long s1, s2, s3, s4;

    r = tc_ok(t, NULL, "socket.open", "{s:s, s:O}", "type", "tcp", "tag", tag);
    s1 = jint(r, "socket");
    json_decref(r);
    EXPECT_TRUE(s1 > 0, "handle %lld", s1);

    info = tc_info(t, s1);
    EXPECT_STR(jstr(info, "type"), "tcp", "info type: %s", jd(info));
    EXPECT_STR(jstr(info, "state"), "open", "info state: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_sent"), 0, "info bytes_sent: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_received"), 0, "info bytes_received: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 0, "info send_buffered: %s", jd(info));
    EXPECT_TRUE(json_equal(jget(info, "tag"), tag), "tag echoed as %s, sent %s",
                jd(json_object_get(info, "tag")), jd(tag));
    json_decref(info);

    s2 = tc_open(t, 0);
    EXPECT_TRUE(s2 != s1, "second handle %lld equals first", s2);
    info = tc_info(t, s2);
    EXPECT_TRUE(!json_object_get(info, "tag") || json_is_null(json_object_get(info, "tag")),
                "untagged socket reports a tag: %s", jd(info));
    json_decref(info);
    s3 = tc_open(t, 1);
    EXPECT_TRUE(s3 != s1 && s3 != s2, "third handle %lld reused", s3);
    expect_state(t, s3, "open");

    /* bad opens */
    EXPECT_INT(tc_err(t, NULL, "socket.open", "{s:s}", "type", "sctp"), SOCKD_E_INVALID_PARAMS,
               "socket.open type sctp");
    EXPECT_INT(tc_err(t, NULL, "socket.open", NULL), SOCKD_E_INVALID_PARAMS,
               "socket.open without type");
    EXPECT_INT(tc_err(t, NULL, "socket.open", "{s:i}", "type", 6), SOCKD_E_INVALID_PARAMS,
               "socket.open type 6");
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.open", "{s:s, s:s}", "type", "tcp",
                        "ipv6", "yes");
    EXPECT_STR(jstr(err_data(err), "param"), "ipv6", "data.param of ipv6:\"yes\": %s", jd(err));
    json_decref(err);
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.open", "{s:s, s:i}", "type", "tcp",
                        "bogus", 1);
    EXPECT_STR(jstr(err_data(err), "param"), "bogus", "data.param of unknown param: %s", jd(err));
    json_decref(err);

    /* closed handles are dead and never reused */
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s1);
    EXPECT_INT(jint(r, "discarded"), 0, "socket.close of an open socket: %s", jd(r));
    json_decref(r);
    expect_gone(t, s1);
    s4 = tc_open(t, 0);
    EXPECT_TRUE(s4 > 0 && s4 != s1 && s4 != s2 && s4 != s3, "handle %lld reused", s4);
    tc_no_event(t, 0, 100);
    json_decref(tag);
}

/* ------------------------------------------------------------------------ */
/* socket.connect                                                            */

static void
test_connect_ipv4(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port, lfd = raw_listen(0, &port), lp, fd;
    long long s = tc_open(t, 0), id;
    char addr[64];
    json_t *r, *ev, *info;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address", addr);
    expect_result_empty(r, "socket.connect");
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), id, "socket.connected request: %s", jd(ev));
    lp = check_addr(ev, "local", "127.0.0.1", -1);
    check_addr(ev, "remote", "127.0.0.1", port);
    fd = raw_accept_from(lfd, lp); /* the local port reported is the real one */

    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "connected", "state after connect: %s", jd(info));
    EXPECT_TRUE(json_equal(jget(info, "local"), jget(ev, "local")), "info local %s vs connected %s",
                jd(jget(info, "local")), jd(ev));
    EXPECT_TRUE(json_equal(jget(info, "remote"), jget(ev, "remote")),
                "info remote %s vs connected %s", jd(jget(info, "remote")), jd(ev));
    json_decref(info);
    json_decref(ev);

    /* connect on a connected socket: wrong state, socket untouched */
    EXPECT_INT(
        tc_err(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address", addr),
        SOCKD_E_WRONG_STATE, "socket.connect on a connected socket");
    expect_state(t, s, "connected");
    send_text(t, s, "still here", 0);
    raw_expect(fd, "still here");
    tc_no_event(t, s, 100);
}

static void
test_connect_ipv6_and_port_param(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port6, port4, lfd6 = raw_listen(1, &port6), lfd4 = raw_listen(0, &port4), lp, fd;
    char addr[64];
    long long s;
    json_t *ev;

    /* port in the address; no ipv6 flag: the address's family wins */
    snprintf(addr, sizeof addr, "[::1]:%d", port6);
    s = connect_to(t, 0, addr, -1, &ev);
    lp = check_addr(ev, "local", "::1", -1);
    check_addr(ev, "remote", "::1", port6);
    json_decref(ev);
    fd = raw_accept_from(lfd6, lp);
    send_text(t, s, "ping6", 0);
    raw_expect(fd, "ping6");
    raw_write_str(fd, "pong6");
    recv_expect(t, s, "pong6");

    /* bare IPv6 literal with "port"; ipv6 flag set */
    s = connect_to(t, 1, "::1", port6, &ev);
    lp = check_addr(ev, "local", "::1", -1);
    check_addr(ev, "remote", "::1", port6);
    json_decref(ev);
    fd = raw_accept_from(lfd6, lp);
    raw_write_str(fd, "v6-port-param");
    recv_expect(t, s, "v6-port-param");

    /* IPv4 with "port" on a socket opened with ipv6:true: the address's family wins */
    s = connect_to(t, 1, "127.0.0.1", port4, &ev);
    lp = check_addr(ev, "local", "127.0.0.1", -1);
    check_addr(ev, "remote", "127.0.0.1", port4);
    json_decref(ev);
    fd = raw_accept_from(lfd4, lp);
    send_text(t, s, "v4 on ipv6 flag", 0);
    raw_expect(fd, "v4 on ipv6 flag");

    /* through an H_ECHO peer on ::1 */
    struct h_peer *p = peer_new(H_ECHO, 1);
    snprintf(addr, sizeof addr, "[::1]:%d", p->port);
    s = connect_to(t, 1, addr, -1, NULL);
    send_text(t, s, "echo over ::1", 0);
    recv_expect(t, s, "echo over ::1");
}

static void
test_connect_address_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {"127.0.0.1", "127.0.0.1:", "127.0.0.1:70000",
                                      "[::1:80",   "[::1]",      ""};
    struct tc *t = tc_new(&g_d);
    long long s = tc_open(t, 0);
    int port, lfd = raw_listen(0, &port);
    json_t *err, *ev, *r;
    long long id;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.connect", "{s:I, s:s}", "socket",
                            (json_int_t)s, "address", bad[i]);
        EXPECT_STR(jstr(err_data(err), "reason"), "address_invalid",
                   "connect to \"%s\": data.reason in %s", bad[i], jd(err));
        json_decref(err);
    }
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s,
                      "address", "127.0.0.1", "port", 70000),
               SOCKD_E_INVALID_PARAMS, "connect with port 70000");
    EXPECT_INT(
        tc_err(t, NULL, "socket.connect", "{s:I, s:i}", "socket", (json_int_t)s, "address", 12),
        SOCKD_E_INVALID_PARAMS, "connect with a numeric address");
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_INVALID_PARAMS, "connect without address");
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)987654321,
                      "address", "127.0.0.1:1"),
               SOCKD_E_UNKNOWN_HANDLE, "connect on an unknown handle");
    /* failed calls left the socket as it was: still open and connectable */
    expect_state(t, s, "open");
    tc_no_event(t, s, 100);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
              "127.0.0.1", "port", port);
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), id, "socket.connected request: %s", jd(ev));
    check_addr(ev, "remote", "127.0.0.1", port);
    json_decref(ev);
    (void)lfd;
}

static void
test_connect_refused(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int port;
    long long s = tc_open(t, 0), id;
    char addr[64];
    json_t *r, *ev;

    /* bound but not listening: SYNs are answered with RST, and nobody can take the port meanwhile
     */
    raw_bound(0, 0, -1, &port);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address", addr);
    json_decref(r);
    ev = tc_event(t, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "connect_rejected", "refused connect: %s", jd(ev));
    EXPECT_INT(jint(ev, "errno"), ECONNREFUSED, "refused connect errno: %s", jd(ev));
    EXPECT_TRUE(strlen(jstr(ev, "detail")) > 0, "refused connect detail: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "refused connect request: %s", jd(ev));
    json_decref(ev);
    expect_gone(t, s);
    tc_no_event(t, s, 200);
}

static void
test_connect_timeout(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct blackhole bh;
    long long s = tc_open(t, 0), id, t0, el;
    json_t *r, *ev;

    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s,
                      "address", "127.0.0.1:9", "timeout_ms", 0),
               SOCKD_E_INVALID_PARAMS, "connect timeout_ms 0");
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s, s:I}", "socket", (json_int_t)s,
                      "address", "127.0.0.1:9", "timeout_ms", (json_int_t)86400001),
               SOCKD_E_INVALID_PARAMS, "connect timeout_ms 86400001");
    expect_state(t, s, "open");

    blackhole_make(&bh);
    t0 = now_ms();
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
              bh.addr, "timeout_ms", 400);
    expect_result_empty(r, "socket.connect");
    json_decref(r);
    expect_state(t, s, "connecting");
    /* a second connect while connecting is the wrong state */
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address",
                      bh.addr),
               SOCKD_E_WRONG_STATE, "socket.connect while connecting");
    ev = tc_event(t, "socket.closed", s, H_TIMEOUT_MS);
    el = now_ms() - t0;
    EXPECT_STR(jstr(ev, "reason"), "timeout", "blackholed connect: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "timeout socket.closed request: %s", jd(ev));
    EXPECT_TRUE(el >= 350 && el < 3000, "timeout_ms 400 fired after %lld ms", el);
    json_decref(ev);
    expect_gone(t, s);
}

static void
test_wrong_state_calls(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s = tc_open(t, 0), l;
    int port;

    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "x"),
               SOCKD_E_WRONG_STATE, "send on an open socket");
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 4),
               SOCKD_E_WRONG_STATE, "recv on an open socket");
    EXPECT_INT(tc_err(t, NULL, "socket.shutdown", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_WRONG_STATE, "shutdown on an open socket");
    EXPECT_INT(
        tc_err(t, NULL, "socket.accept", "{s:I, s:i}", "socket", (json_int_t)s, "pending", 1),
        SOCKD_E_WRONG_STATE, "accept on an open (not listening) socket");
    expect_state(t, s, "open");

    l = make_listener(t, "127.0.0.1", 0, NULL, &port);
    EXPECT_INT(tc_err(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)l, "address",
                      "127.0.0.1:9"),
               SOCKD_E_WRONG_STATE, "connect on a listening socket");
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)l, "text", "x"),
               SOCKD_E_WRONG_STATE, "send on a listening socket");
    EXPECT_INT(tc_err(t, NULL, "socket.bind", "{s:I}", "socket", (json_int_t)l),
               SOCKD_E_WRONG_STATE, "bind on a listening socket");
    EXPECT_INT(tc_err(t, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)l),
               SOCKD_E_WRONG_STATE, "listen on a listening socket");
    expect_state(t, l, "listening");
    tc_no_event(t, 0, 100);
}

/* ------------------------------------------------------------------------ */
/* socket.send                                                               */

static void
test_send_before_connect(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct blackhole bh;
    long long s = tc_open(t, 0), cid, sid1, sid2;
    const unsigned char two[2] = {0x00, 0xfe};
    json_t *r, *ev, *info;
    int lp, fd;
    unsigned char got[12];

    blackhole_make(&bh);
    r = tc_ok(t, &cid, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address", bh.addr);
    json_decref(r);
    expect_state(t, s, "connecting");
    sid1 = send_text(t, s, "early bird", 1);
    sid2 = send_bytes(t, s, two, 2, 1);
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "connecting", "state after queued sends: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 12, "send_buffered while connecting: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_sent"), 0, "bytes_sent while connecting: %s", jd(info));
    json_decref(info);
    tc_no_event(t, s, 200);

    blackhole_release(&bh);
    /* connected first, then both sends flushed, in order */
    ev = tc_next_is(t, s, "socket.connected", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), cid, "socket.connected request: %s", jd(ev));
    lp = check_addr(ev, "local", "127.0.0.1", -1);
    check_addr(ev, "remote", "127.0.0.1", bh.port);
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), 10, "first socket.sent: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), sid1, "first socket.sent request: %s", jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), 2, "second socket.sent: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), sid2, "second socket.sent request: %s", jd(ev));
    json_decref(ev);

    fd = raw_accept_from(bh.lfd, lp);
    EXPECT_INT(raw_read(fd, got, 12), 12, "bytes of the queued sends at the peer");
    EXPECT_TRUE(memcmp(got, "early bird\x00\xfe", 12) == 0, "peer got \"%.10s\"...", got);
    info = tc_info(t, s);
    EXPECT_INT(jint(info, "send_buffered"), 0, "send_buffered after flush: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_sent"), 12, "bytes_sent after flush: %s", jd(info));
    EXPECT_STR(jstr(info, "state"), "connected", "state after flush: %s", jd(info));
    json_decref(info);
}

static void
test_send_variants(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s);
    const unsigned char bin[6] = {0x00, 0xff, 0x10, '\n', '"', 0x80};
    const char *utf8 = "h\xc3\xa9llo \xe2\x9c\x93"; /* "héllo ✓": 10 bytes */
    unsigned char got[16];
    json_t *r, *info;

    /* base64 data */
    id = send_bytes(t, s, bin, sizeof bin, 1);
    expect_sent(t, s, id, sizeof bin);
    EXPECT_INT(raw_read(fd, got, sizeof bin), sizeof bin, "peer bytes of a data send");
    EXPECT_TRUE(memcmp(got, bin, sizeof bin) == 0, "peer got other bytes than sent");

    /* text: UTF-8 bytes as they are */
    id = send_text(t, s, utf8, 1);
    expect_sent(t, s, id, strlen(utf8));
    raw_expect(fd, utf8);

    /* notify:false: data goes, no socket.sent */
    send_text(t, s, "quiet", 0);
    raw_expect(fd, "quiet");
    tc_no_event(t, s, 300);

    /* empty payload is allowed */
    r = tc_ok(t, NULL, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)s, "text", "",
              "notify", 0);
    EXPECT_INT(jint(r, "queued"), 0, "empty send queued: %s", jd(r));
    json_decref(r);

    /* invalid sends: -32602, nothing goes out */
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s, s:s}", "socket", (json_int_t)s, "data",
                      "aGk=", "text", "hi"),
               SOCKD_E_INVALID_PARAMS, "send with data and text");
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "data",
                      "!!!not*base64!!!"),
               SOCKD_E_INVALID_PARAMS, "send with bad base64");
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_INVALID_PARAMS, "send with neither data nor text");
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:i}", "socket", (json_int_t)s, "data", 5),
               SOCKD_E_INVALID_PARAMS, "send with numeric data");
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s, s:s}", "socket", (json_int_t)s, "text",
                      "x", "notify", "no"),
               SOCKD_E_INVALID_PARAMS, "send with notify:\"no\"");
    EXPECT_TRUE(!raw_readable(fd, 200), "the peer received bytes from a failed send");

    info = tc_info(t, s);
    EXPECT_INT(jint(info, "bytes_sent"), sizeof bin + strlen(utf8) + 5, "bytes_sent: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 0, "send_buffered: %s", jd(info));
    json_decref(info);
    tc_no_event(t, s, 100);
}

/* A socket.send line written as is, with data given as raw JSON string text; its response. */
static json_t *
send_raw_data(struct tc *t, long long s, long long id, const char *data_json)
{
    size_t cap = strlen(data_json) + 200;
    char *line = malloc(cap);
    EXPECT_TRUE(line != NULL, "line");
    int n = snprintf(line, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.send\","
                     "\"params\":{\"socket\":%lld,\"notify\":false,\"data\":\"%s\"}}\n",
                     id, s, data_json);
    EXPECT_TRUE(n > 0 && (size_t)n < cap, "n > 0 && (size_t)n < cap");
    tc_write(t, line, (size_t)n);
    free(line);
    return tc_response(t, id, "socket.send", H_TIMEOUT_MS);
}

/* The first response with id null (the answer to a line that did not parse), or NULL. */
static json_t *
null_id_response(struct tc *t)
{
    long long deadline = now_ms() + H_TIMEOUT_MS;
    for (int guard = 0; guard < 100000 && now_ms() < deadline; guard++) {
        size_t i;
        json_t *m;
        json_array_foreach(t->inbox, i, m)
        {
            if (json_is_null(json_object_get(m, "id")) && json_object_get(m, "method") == NULL) {
                json_incref(m);
                json_array_remove(t->inbox, i);
                return m;
            }
        }
        tc_pump(t, (int)(deadline - now_ms()));
    }
    return NULL;
}

/* The error of a response: code, message and data.param as the slow path gives them. */
static void
expect_send_error(json_t *resp, int code, const char *message, const char *what)
{
    json_t *err = json_object_get(resp, "error");
    EXPECT_TRUE(json_is_object(err), "%s: an error, got %s", what, jd(resp));
    EXPECT_INT(jint(err, "code"), code, "%s: code in %s", what, jd(err));
    EXPECT_STR(jstr(err, "message"), message, "%s: message in %s", what, jd(err));
    if (code == SOCKD_E_INVALID_PARAMS)
        EXPECT_STR(jstr(err_data(err), "param"), "data", "%s: data.param in %s", what, jd(err));
}

/*
 * Long data values (taken out of the line and decoded while it is scanned) in every form: plain
 * base64 goes out; JSON escapes of valid base64 still do (the parser unescapes them); a byte
 * outside the alphabet anywhere, a non-canonical ending or an escaped newline answer -32602
 * "data is not valid base64"; a raw control byte or invalid UTF-8 answer -32700, as for short
 * values. Only the valid sends reach the peer.
 */
static void
test_send_long_data_forms(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id = 990000;
    int fd = make_pair(t, 0, &s);
    enum { N = 3000 }; /* 4000 characters of base64, no padding */
    unsigned char *bin = random_bytes(N + 1), *got = malloc(3 * N + 1);
    char *text = b64(bin, N), *pad2 = b64(bin, N + 1); /* 4004 characters, "==" */
    size_t tl = strlen(text);
    char *buf = malloc(6 * tl + 16);
    json_t *r;
    EXPECT_TRUE(got != NULL, "got");
    EXPECT_TRUE(buf != NULL, "buf");

    /* plain */
    r = send_raw_data(t, s, ++id, text);
    EXPECT_INT(jint(jget(r, "result"), "queued"), N, "plain long data: %s", jd(r));
    json_decref(r);

    /* every '/' escaped as "\/", and the first character as a \u escape */
    size_t w = 0, slashes = 0;
    for (size_t i = 0; i < tl; i++) {
        if (i == 0)
            w += (size_t)sprintf(buf + w, "\\u%04x", (unsigned)text[i]);
        else if (text[i] == '/')
            slashes++, buf[w++] = '\\', buf[w++] = '/';
        else
            buf[w++] = text[i];
    }
    buf[w] = '\0';
    EXPECT_TRUE(slashes > 0, "the random text has a '/' to escape");
    r = send_raw_data(t, s, ++id, buf);
    EXPECT_INT(jint(jget(r, "result"), "queued"), N, "escaped long data: %s", jd(r));
    json_decref(r);

    /* a byte outside the alphabet at the start, the middle, the end ('=' ends a group there) */
    const size_t at[] = {0, tl / 2, tl - 1};
    for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
        for (const char *bad = k < 2 ? "!-_=" : "!-_"; *bad; bad++) {
            char what[64];
            snprintf(what, sizeof what, "'%c' at %zu of long data", *bad, at[k]);
            memcpy(buf, text, tl + 1);
            buf[at[k]] = *bad;
            r = send_raw_data(t, s, ++id, buf);
            expect_send_error(r, SOCKD_E_INVALID_PARAMS, "data is not valid base64", what);
            json_decref(r);
        }
    }
    /* non-canonical: nonzero bits under "==" */
    size_t pl = strlen(pad2);
    memcpy(buf, pad2, pl + 1);
    EXPECT_TRUE(buf[pl - 1] == '=' && buf[pl - 2] == '=', "4004 characters end in ==");
    buf[pl - 3] = buf[pl - 3] == 'B' ? 'C' : 'B'; /* value 1 or 2: low four bits nonzero */
    r = send_raw_data(t, s, ++id, buf);
    expect_send_error(r, SOCKD_E_INVALID_PARAMS, "data is not valid base64",
                      "long data with nonzero pad bits");
    json_decref(r);
    /* an escaped newline in the middle (whitespace is not base64) */
    snprintf(buf, 6 * tl + 16, "%.*s\\n%s", (int)(tl / 2), text, text + tl / 2 + 2);
    r = send_raw_data(t, s, ++id, buf);
    expect_send_error(r, SOCKD_E_INVALID_PARAMS, "data is not valid base64",
                      "long data with an escaped newline");
    json_decref(r);
    /* not JSON at all: a raw tab, a byte that is not UTF-8 */
    for (const char *bad = "\t\xff"; *bad; bad++) {
        memcpy(buf, text, tl + 1);
        buf[tl / 2] = *bad;
        size_t cap = tl + 200;
        char *line = malloc(cap);
        EXPECT_TRUE(line != NULL, "line");
        int n = snprintf(line, cap,
                         "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.send\","
                         "\"params\":{\"socket\":%lld,\"data\":\"%s\"}}\n",
                         ++id, s, buf);
        tc_write(t, line, (size_t)n);
        free(line);
        char what[64];
        snprintf(what, sizeof what, "byte 0x%02x in long data", (unsigned char)*bad);
        json_t *m = null_id_response(t);
        EXPECT_TRUE(m != NULL, "no answer to a line that is not JSON: %s", jd(t->inbox));
        expect_send_error(m, SOCKD_E_PARSE, "parse error", what);
        json_decref(m);
    }

    /* the peer has exactly the two valid sends */
    EXPECT_INT(raw_read(fd, got, 2 * N), 2 * N, "bytes of the valid long sends at the peer");
    EXPECT_TRUE(memcmp(got, bin, N) == 0 && memcmp(got + N, bin, N) == 0,
                "the peer got other bytes than sent");
    EXPECT_TRUE(!raw_readable(fd, 200), "the peer received bytes from a failed send");
    free(buf);
    free(text);
    free(pad2);
    free(got);
    free(bin);
}

/* Append one socket.send line (base64 data) to out; returns its length. */
static size_t
burst_send_line(char *out, size_t cap, long long id, long long s, const void *p, size_t n)
{
    char *text = b64(p, n);
    int w = snprintf(out, cap,
                     "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.send\","
                     "\"params\":{\"socket\":%lld,\"data\":\"%s\"}}\n",
                     id, s, text);
    free(text);
    EXPECT_TRUE(w > 0 && (size_t)w < cap, "w > 0 && (size_t)w < cap");
    return (size_t)w;
}

/* Pump until the inbox holds want messages (or fail). */
static void
pump_until(struct tc *t, size_t want)
{
    long long deadline = now_ms() + H_TIMEOUT_MS;
    while (json_array_size(t->inbox) < want && now_ms() < deadline)
        tc_pump(t, (int)(deadline - now_ms()));
    EXPECT_INT(json_array_size(t->inbox), want, "messages after a burst: %s", jd(t->inbox));
}

/*
 * Lines read in one go: sends queued by consecutive socket.send requests reach the kernel together
 * (sock_send.c coalescing), which no client can tell from one write per send: responses in order,
 * each socket.sent after its response and in order, every byte at the peer in order, and a
 * request that looks at the socket (socket.info, socket.close) sees every earlier send handed to
 * the kernel. With a small max-send-buffer, a burst larger than the cap (each send within it) is
 * taken as it would be without coalescing: the cap is on what the kernel did not take.
 */
static void
test_send_burst(void **state)
{
    (void)state;
    enum { K = 40, SMALL = 1000, CAPPED = 12 };
    struct tc *t = tc_new(&g_d);
    long long s, id0 = 991000;
    int fd = make_pair(t, 0, &s);
    unsigned char *bin = random_bytes(CAPPED * 4096); /* more than K * SMALL */
    unsigned char *got = malloc(CAPPED * 4096 + 1);
    size_t cap = K * (SMALL * 2 + 200) + 400, len = 0;
    char *burst = malloc(cap);
    EXPECT_TRUE(got != NULL, "got");
    EXPECT_TRUE(burst != NULL, "burst");

    /* K sends of SMALL bytes and a socket.info, one write */
    for (int k = 0; k < K; k++)
        len += burst_send_line(burst + len, cap - len, id0 + k, s, bin + k * SMALL, SMALL);
    len += (size_t)snprintf(burst + len, cap - len,
                            "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.info\","
                            "\"params\":{\"socket\":%lld}}\n",
                            id0 + K, s);
    tc_write(t, burst, len);
    pump_until(t, 2 * K + 1);
    long long next_resp = id0, next_sent = id0;
    size_t i;
    json_t *m;
    json_array_foreach(t->inbox, i, m)
    {
        if (is_response(m)) {
            EXPECT_INT(jint(m, "id"), next_resp, "responses in order: %s", jd(m));
            json_t *res = jget(m, "result");
            if (next_resp < id0 + K) {
                EXPECT_INT(jint(res, "queued"), SMALL, "send result: %s", jd(m));
            } else {
                EXPECT_INT(jint(res, "send_buffered"), 0, "socket.info after the burst: %s", jd(m));
                EXPECT_INT(jint(res, "bytes_sent"), K * SMALL, "socket.info after the burst: %s",
                           jd(m));
            }
            next_resp++;
        } else {
            json_t *p = jget(m, "params");
            EXPECT_STR(jstr(m, "method"), "socket.sent", "only socket.sent: %s", jd(m));
            EXPECT_INT(jint(p, "request"), next_sent, "socket.sent in order: %s", jd(m));
            EXPECT_TRUE(next_sent < next_resp, "socket.sent of %lld before its response",
                        next_sent);
            EXPECT_INT(jint(p, "bytes"), SMALL, "socket.sent bytes: %s", jd(m));
            next_sent++;
        }
    }
    EXPECT_INT(next_sent, id0 + K, "socket.sent count");
    json_array_clear(t->inbox);
    EXPECT_INT(raw_read(fd, got, K * SMALL), K * SMALL, "bytes of the burst at the peer");
    EXPECT_TRUE(memcmp(got, bin, K * SMALL) == 0, "the peer got other bytes than sent");

    /* three sends and a socket.close, one write: nothing is left to discard */
    len = 0;
    for (int k = 0; k < 3; k++)
        len += burst_send_line(burst + len, cap - len, id0 + 100 + k, s, bin + k * SMALL, SMALL);
    len += (size_t)snprintf(burst + len, cap - len,
                            "{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.close\","
                            "\"params\":{\"socket\":%lld}}\n",
                            id0 + 103, s);
    tc_write(t, burst, len);
    for (int k = 0; k < 3; k++)
        json_decref(tc_response(t, id0 + 100 + k, "socket.send", H_TIMEOUT_MS));
    json_t *r = tc_response(t, id0 + 103, "socket.close", H_TIMEOUT_MS);
    EXPECT_INT(jint(jget(r, "result"), "discarded"), 0, "socket.close after a burst: %s", jd(r));
    json_decref(r);
    EXPECT_INT(raw_read(fd, got, 3 * SMALL + 1), 3 * SMALL, "bytes before EOF at the peer");
    EXPECT_TRUE(memcmp(got, bin, 3 * SMALL) == 0, "the peer got other bytes than sent");
    json_array_clear(t->inbox);

    /* max-send-buffer 16K: CAPPED sends of 4 KiB in one write all go */
    struct h_daemon *d = daemon_new("max-send-buffer 16K\n");
    struct tc *t2 = tc_new(d);
    int fd2 = make_pair(t2, 0, &s);
    len = 0;
    for (int k = 0; k < CAPPED; k++)
        len += burst_send_line(burst + len, cap - len, id0 + 200 + k, s, bin + k * 4096, 4096);
    tc_write(t2, burst, len);
    for (int k = 0; k < CAPPED; k++) {
        r = tc_response(t2, id0 + 200 + k, "socket.send", H_TIMEOUT_MS);
        EXPECT_INT(jint(jget(r, "result"), "queued"), 4096, "send %d of a burst past the cap: %s",
                   k, jd(r));
        json_decref(r);
    }
    EXPECT_INT(raw_read(fd2, got, CAPPED * 4096), CAPPED * 4096, "bytes of the capped burst");
    EXPECT_TRUE(memcmp(got, bin, CAPPED * 4096) == 0, "the peer got other bytes than sent");
    free(burst);
    free(got);
    free(bin);
}

static void
test_send_cap(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct blackhole bh;
    long long s = tc_open(t, 0), s2, id;
    unsigned char *big = random_bytes(SEND_CAP + 1);
    char *enc;
    json_t *r, *err, *info;
    struct h_peer *drain;

    /* while connecting nothing drains, so the queue is exactly what we put in */
    blackhole_make(&bh);
    json_decref(tc_ok(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)s, "address",
                      bh.addr));
    send_bytes(t, s, big, 3 * MIB, 0);
    enc = b64(big, MIB + 1);
    err = tc_expect_err(t, SOCKD_E_LIMIT, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s,
                        "data", enc);
    free(enc);
    EXPECT_STR(jstr(err_data(err), "limit"), "max-send-buffer", "send past the cap: %s", jd(err));
    json_decref(err);
    EXPECT_INT(info_int(t, s, "send_buffered"), 3 * MIB, "send_buffered after a refused send");
    send_bytes(t, s, big, MIB, 0); /* exactly up to the cap is fine */
    EXPECT_INT(info_int(t, s, "send_buffered"), SEND_CAP, "send_buffered at the cap");
    err = tc_expect_err(t, SOCKD_E_LIMIT, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s,
                        "text", "x");
    EXPECT_STR(jstr(err_data(err), "limit"), "max-send-buffer", "1 byte past the cap: %s", jd(err));
    json_decref(err);
    EXPECT_INT(info_int(t, s, "send_buffered"), SEND_CAP, "send_buffered after a refused byte");
    expect_state(t, s, "connecting");

    /* socket.close reports the discarded bytes, and nothing follows */
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(jint(r, "discarded"), SEND_CAP, "socket.close discarded: %s", jd(r));
    json_decref(r);
    tc_no_event(t, s, 400);
    expect_gone(t, s);

    /* a single send larger than the cap on a connected socket: refused whole */
    drain = peer_new(H_DRAIN, 0);
    s2 = connect_to(t, 0, "127.0.0.1", drain->port, NULL);
    enc = b64(big, SEND_CAP + 1);
    err = tc_expect_err(t, SOCKD_E_LIMIT, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s2,
                        "data", enc);
    free(enc);
    EXPECT_STR(jstr(err_data(err), "limit"), "max-send-buffer", "oversized send: %s", jd(err));
    json_decref(err);
    info = tc_info(t, s2);
    EXPECT_INT(jint(info, "send_buffered"), 0, "send_buffered after oversized send: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_sent"), 0, "bytes_sent after oversized send: %s", jd(info));
    json_decref(info);
    id = send_text(t, s2, "ok", 1);
    expect_sent(t, s2, id, 2);
    for (int i = 0; i < 500 && drain->bytes < 2; i++)
        sleep_ms(10);
    sleep_ms(100);
    EXPECT_INT(drain->bytes, 2, "bytes the peer received (oversized send must queue nothing)");
    free(big);
}

/* ------------------------------------------------------------------------ */
/* socket.recv                                                               */

static void
test_recv_exact(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s);
    json_t *ev;

    id = start_recv(t, s, 10, 0, 0, 0);
    raw_write_str(fd, "abc");
    tc_no_event(t, s, 250); /* 3 of 10 bytes: an exact recv keeps waiting */
    raw_write_str(fd, "defghijXYZ");
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data(ev, "abcdefghij");
    EXPECT_INT(jint(ev, "request"), id, "socket.received request: %s", jd(ev));
    EXPECT_TRUE(!jflag(ev, "eof") && !jflag(ev, "timeout"), "exact recv flags: %s", jd(ev));
    json_decref(ev);
    tc_no_event(t, s, 100);   /* exactly one event for an exact recv */
    recv_expect(t, s, "XYZ"); /* the extra bytes were kept */

    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 0),
               SOCKD_E_INVALID_PARAMS, "recv length 0");
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:I}", "socket", (json_int_t)s, "length",
                      (json_int_t)16777217),
               SOCKD_E_INVALID_PARAMS, "recv length 16777217");
    EXPECT_INT(
        tc_err(t, NULL, "socket.recv", "{s:I, s:s}", "socket", (json_int_t)s, "length", "10"),
        SOCKD_E_INVALID_PARAMS, "recv length \"10\"");
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_INVALID_PARAMS, "recv without length");
    EXPECT_INT(info_int(t, s, "bytes_received"), 13, "bytes_received");
}

static void
test_recv_partial(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s);
    const char *twenty = "0123456789abcdefghij";
    char acc[32];
    size_t total = 0, n;
    unsigned char *d;
    json_t *ev;

    id = start_recv(t, s, 100, 1, 0, 0);
    raw_write_str(fd, "hello");
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data(ev, "hello"); /* partial: delivered without waiting for 100 bytes */
    EXPECT_INT(jint(ev, "request"), id, "partial socket.received request: %s", jd(ev));
    json_decref(ev);

    /* 20 bytes buffered, partial of at most 8, then the rest */
    raw_write_str(fd, twenty);
    for (int i = 0; i < 250 && info_int(t, s, "recv_buffered") < 20; i++)
        sleep_ms(20);
    EXPECT_INT(info_int(t, s, "recv_buffered"), 20, "recv_buffered with 20 bytes unread");
    start_recv(t, s, 8, 1, 0, 0);
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    d = ev_data(ev, &n);
    EXPECT_TRUE(n >= 1 && n <= 8, "partial recv of 8 delivered %zu bytes", n);
    memcpy(acc, d, n);
    total = n;
    free(d);
    json_decref(ev);
    for (int i = 0; i < 20 && total < 20; i++) {
        start_recv(t, s, 100, 1, 0, 0);
        ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        d = ev_data(ev, &n);
        EXPECT_TRUE(n >= 1 && total + n <= 20, "partial recv delivered %zu bytes (have %zu)", n,
                    total);
        memcpy(acc + total, d, n);
        total += n;
        free(d);
        json_decref(ev);
    }
    EXPECT_INT(total, 20, "bytes from partial recvs");
    EXPECT_TRUE(memcmp(acc, twenty, 20) == 0, "partial recvs gave \"%.20s\"", acc);
}

static void
test_recv_stream(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s), chunks = 0;
    const char *want = "0123456789abcdef";
    char acc[32];
    size_t total = 0, n;
    unsigned char *d;
    json_t *ev;

    id = start_recv(t, s, 4, 0, 1, 0);
    raw_write_str(fd, "0123456789");
    sleep_ms(50);
    raw_write_str(fd, "abcdef");
    for (int i = 0; i < 32 && total < 16; i++) {
        ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        d = ev_data(ev, &n);
        EXPECT_TRUE(n >= 1 && n <= 4, "stream chunk of %zu bytes (length 4): %s", n, jd(ev));
        EXPECT_TRUE(total + n <= 16, "stream delivered more than was sent");
        EXPECT_INT(jint(ev, "request"), id, "stream chunk request: %s", jd(ev));
        EXPECT_TRUE(!jflag(ev, "eof") && !jflag(ev, "timeout"), "stream chunk flags: %s", jd(ev));
        memcpy(acc + total, d, n);
        total += n;
        chunks++;
        free(d);
        json_decref(ev);
    }
    EXPECT_INT(total, 16, "bytes delivered by the stream");
    EXPECT_TRUE(memcmp(acc, want, 16) == 0, "stream gave \"%.16s\"", acc);
    EXPECT_TRUE(chunks >= 4, "16 bytes in chunks of at most 4 came in %d chunks", chunks);

    /* still streaming: more bytes come as another chunk */
    raw_write_str(fd, "Q");
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data(ev, "Q");
    EXPECT_INT(jint(ev, "request"), id, "late stream chunk request: %s", jd(ev));
    json_decref(ev);

    EXPECT_TRUE(recv_canceled(t, s), "recv_cancel of a stream: canceled must be true");
    raw_write_str(fd, "zz");
    tc_no_event(t, s, 300);  /* no more chunks after the cancel */
    recv_expect(t, s, "zz"); /* bytes that arrived after the cancel wait for the next recv */
    EXPECT_TRUE(!recv_canceled(t, s), "recv_cancel with nothing pending must give canceled:false");
}

static void
test_recv_timeout(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id, t0, el;
    int fd = make_pair(t, 0, &s);
    char acc[16];
    size_t total = 0, n;
    unsigned char *d;
    json_t *ev;
    bool done = false;

    t0 = now_ms();
    id = start_recv(t, s, 10, 0, 0, 300);
    raw_write_str(fd, "abc");
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    el = now_ms() - t0;
    expect_data(ev, "abc");
    EXPECT_TRUE(jflag(ev, "timeout"), "recv timeout_ms 300 with 3 of 10 bytes: %s", jd(ev));
    EXPECT_TRUE(!jflag(ev, "eof"), "timed-out recv eof: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "timed-out recv request: %s", jd(ev));
    EXPECT_TRUE(el >= 250, "recv timeout_ms 300 ended after %lld ms", el);
    json_decref(ev);
    expect_state(t, s, "connected");

    /* nothing at all arrives: empty data, timeout:true */
    id = start_recv(t, s, 4, 0, 0, 200);
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    expect_data(ev, "");
    EXPECT_TRUE(jflag(ev, "timeout"), "empty timed-out recv: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "empty timed-out recv request: %s", jd(ev));
    json_decref(ev);
    EXPECT_TRUE(!recv_canceled(t, s), "a timed-out recv is no longer pending");

    /* the socket is still usable both ways */
    raw_write_str(fd, "xyz");
    recv_expect(t, s, "xyz");
    send_text(t, s, "ok", 0);
    raw_expect(fd, "ok");

    /* a stream ends at its timeout too */
    id = start_recv(t, s, 100, 0, 1, 400);
    raw_write_str(fd, "a");
    for (int i = 0; i < 10 && !done; i++) {
        ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        EXPECT_INT(jint(ev, "request"), id, "stream-with-timeout chunk request: %s", jd(ev));
        d = ev_data(ev, &n);
        EXPECT_TRUE(total + n <= 1, "stream delivered more than was sent: %s", jd(ev));
        memcpy(acc + total, d, n);
        total += n;
        free(d);
        done = jflag(ev, "timeout");
        json_decref(ev);
    }
    EXPECT_TRUE(done, "a stream recv with timeout_ms 400 never ended with timeout:true");
    EXPECT_INT(total, 1, "bytes of the stream before its timeout");
    EXPECT_TRUE(acc[0] == 'a', "stream gave '%c'", acc[0]);
    EXPECT_TRUE(!recv_canceled(t, s), "a timed-out stream is no longer pending");
    tc_no_event(t, s, 100);
    expect_state(t, s, "connected");
}

static void
test_recv_busy_and_cancel(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = make_pair(t, 0, &s);

    EXPECT_TRUE(!recv_canceled(t, s), "recv_cancel with nothing pending must give canceled:false");
    start_recv(t, s, 10, 0, 0, 0);
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 5),
               SOCKD_E_BUSY, "second recv");
    EXPECT_INT(tc_err(t, NULL, "socket.recv", "{s:I, s:i, s:b}", "socket", (json_int_t)s, "length",
                      5, "stream", 1),
               SOCKD_E_BUSY, "second (stream) recv");
    EXPECT_TRUE(recv_canceled(t, s), "recv_cancel of a pending recv must give canceled:true");
    EXPECT_TRUE(!recv_canceled(t, s), "second recv_cancel must give canceled:false");
    raw_write_str(fd, "0123456789");
    tc_no_event(t, s, 200); /* the canceled recv delivers nothing */
    recv_expect(t, s, "0123456789");
    EXPECT_INT(tc_err(t, NULL, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)987654321),
               SOCKD_E_UNKNOWN_HANDLE, "recv_cancel on an unknown handle");
}

static void
test_recv_cut_by_eof(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s);
    json_t *ev;

    id = start_recv(t, s, 10, 0, 0, 0);
    raw_write_str(fd, "abc");
    close_fd(fd); /* orderly EOF after 3 of 10 bytes */
    ev = tc_next_is(t, s, "socket.received", H_TIMEOUT_MS);
    expect_data(ev, "abc");
    EXPECT_TRUE(jflag(ev, "eof"), "exact recv cut short by EOF must carry eof:true: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "eof socket.received request: %s", jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.closed", H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "socket.closed after EOF: %s", jd(ev));
    EXPECT_TRUE(!json_object_get(ev, "request"), "socket.closed by_peer carries a request: %s",
                jd(ev));
    json_decref(ev);
    expect_gone(t, s);
}

static void
test_eof_waits_for_buffered(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = make_pair(t, 0, &s);
    json_t *ev;

    raw_write_str(fd, "hello");
    close_fd(fd);
    /* buffered bytes and no recv: the socket stays until they are read */
    tc_no_event(t, s, 400);
    EXPECT_INT(info_int(t, s, "recv_buffered"), 5, "recv_buffered after the peer's EOF");
    start_recv(t, s, 3, 0, 0, 0);
    ev = tc_next_is(t, s, "socket.received", H_TIMEOUT_MS);
    expect_data(ev, "hel");
    EXPECT_TRUE(!jflag(ev, "eof"), "a recv that leaves bytes behind carries eof: %s", jd(ev));
    json_decref(ev);
    start_recv(t, s, 2, 0, 0, 0);
    ev = tc_next_is(t, s, "socket.received", H_TIMEOUT_MS);
    expect_data(ev, "lo");
    EXPECT_TRUE(jflag(ev, "eof"), "the recv draining the last bytes must carry eof:true: %s",
                jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.closed", H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "socket.closed after draining: %s", jd(ev));
    json_decref(ev);
    expect_gone(t, s);
}

/* ------------------------------------------------------------------------ */
/* socket.closed reasons, shutdown, close                                    */

static void
test_closed_by_peer(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_CLOSE, 0);
    long long s = connect_to(t, 0, "127.0.0.1", p->port, NULL);
    json_t *ev = tc_event(t, "socket.closed", s, H_TIMEOUT_MS);

    EXPECT_STR(jstr(ev, "reason"), "by_peer", "peer closed at once: %s", jd(ev));
    EXPECT_TRUE(!json_object_get(ev, "request"), "socket.closed by_peer carries a request: %s",
                jd(ev));
    json_decref(ev);
    expect_gone(t, s);
    tc_no_event(t, s, 100);
}

static void
test_closed_lost(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = make_pair(t, 0, &s);
    struct linger lg = {1, 0};
    json_t *ev;

    /* reset by the peer (SO_LINGER 0), deterministically after socket.connected */
    EXPECT_INT(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0, "setsockopt: %s",
               strerror(errno));
    close_fd(fd);
    ev = tc_event(t, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "lost", "peer reset: %s", jd(ev));
    EXPECT_INT(jint(ev, "errno"), ECONNRESET, "peer reset errno: %s", jd(ev));
    EXPECT_TRUE(!json_object_get(ev, "request"), "socket.closed lost carries a request: %s",
                jd(ev));
    json_decref(ev);
    expect_gone(t, s);
}

static void
test_shutdown_flushes(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, sid, hid;
    int fd = make_pair(t, 0, &s);
    unsigned char *data = random_bytes(SEND_CAP), *got = malloc(SEND_CAP + 1);
    json_t *r, *ev, *info;
    size_t n;

    EXPECT_TRUE(got != NULL, "got");
    /* the peer does not read yet: most of the 4 MiB stays queued in the daemon */
    sid = send_bytes(t, s, data, SEND_CAP, 1);
    r = tc_ok(t, &hid, "socket.shutdown", "{s:I}", "socket", (json_int_t)s);
    expect_result_empty(r, "socket.shutdown");
    json_decref(r);
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "closing", "state after shutdown with queued data: %s",
               jd(info));
    json_decref(info);
    EXPECT_INT(tc_err(t, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "x"),
               SOCKD_E_WRONG_STATE, "send after shutdown");

    /* the peer gets every byte, then EOF */
    n = raw_read(fd, got, SEND_CAP + 1);
    EXPECT_INT(n, SEND_CAP, "bytes the peer read before EOF after shutdown");
    EXPECT_TRUE(memcmp(got, data, SEND_CAP) == 0, "the flushed bytes differ from those sent");
    EXPECT_INT(raw_wait_closed(fd, H_TIMEOUT_MS), 0, "peer sees EOF after the flushed data");

    ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "bytes"), SEND_CAP, "socket.sent before shutdown's close: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), sid, "socket.sent request: %s", jd(ev));
    json_decref(ev);
    ev = tc_next_is(t, s, "socket.closed", H_TIMEOUT_MS);
    EXPECT_STR(jstr(ev, "reason"), "normal", "socket.closed after shutdown: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), hid, "socket.closed normal request: %s", jd(ev));
    EXPECT_TRUE(!json_object_get(ev, "unsent") || jint(ev, "unsent") == 0,
                "shutdown left bytes unsent: %s", jd(ev));
    json_decref(ev);
    expect_gone(t, s);
    free(data);
    free(got);
}

static void
test_close_is_silent(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int fd = make_pair(t, 0, &s);
    json_t *r;

    start_recv(t, s, 10, 0, 0, 0); /* a pending recv does not produce an event either */
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(jint(r, "discarded"), 0, "socket.close discarded: %s", jd(r));
    json_decref(r);
    EXPECT_INT(raw_wait_closed(fd, H_TIMEOUT_MS), 0, "peer sees EOF after socket.close");
    tc_no_event(t, 0, 300);
    expect_gone(t, s);
    EXPECT_INT(tc_err(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s),
               SOCKD_E_UNKNOWN_HANDLE, "second socket.close");
}

/* ------------------------------------------------------------------------ */
/* socket.info / socket.list                                                 */

static void
test_info_counters(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s, id;
    int fd = make_pair(t, 0, &s);
    unsigned char out[100], back[50], got[100];
    json_t *ev, *info;
    size_t n;
    unsigned char *d;

    memset(out, 'o', sizeof out);
    memset(back, 'b', sizeof back);
    id = send_bytes(t, s, out, sizeof out, 1);
    expect_sent(t, s, id, sizeof out);
    EXPECT_INT(raw_read(fd, got, sizeof out), sizeof out, "peer bytes");
    raw_write(fd, back, sizeof back);
    start_recv(t, s, sizeof back, 0, 0, 0);
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    d = ev_data(ev, &n);
    EXPECT_INT(n, sizeof back, "received bytes");
    free(d);
    json_decref(ev);

    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "type"), "tcp", "info type: %s", jd(info));
    EXPECT_STR(jstr(info, "state"), "connected", "info state: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_sent"), 100, "info bytes_sent: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_received"), 50, "info bytes_received: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 0, "info send_buffered: %s", jd(info));
    check_addr(info, "local", "127.0.0.1", -1);
    check_addr(info, "remote", "127.0.0.1", -1);
    json_decref(info);
}

static void
test_state_words(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct blackhole bh;
    long long s = tc_open(t, 0), c = tc_open(t, 0);
    json_t *r;

    expect_state(t, s, "open");
    json_decref(tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
                      "127.0.0.1"));
    expect_state(t, s, "bound");
    json_decref(tc_ok(t, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)s));
    expect_state(t, s, "listening");

    blackhole_make(&bh);
    json_decref(tc_ok(t, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)c, "address",
                      bh.addr));
    expect_state(t, c, "connecting");
    blackhole_release(&bh);
    json_decref(tc_event(t, "socket.connected", c, H_TIMEOUT_MS));
    expect_state(t, c, "connected");
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)c);
    json_decref(r);
}

static void
test_list_only_own(void **state)
{
    (void)state;
    struct tc *a = tc_new(&g_d), *b = tc_new(&g_d);
    long long s1, s2, sb;
    json_t *r, *arr, *e;
    size_t i;
    bool seen1 = false, seen2 = false;

    make_pair(a, 0, &s1);
    r = tc_ok(a, NULL, "socket.open", "{s:s, s:s}", "type", "tcp", "tag", "two");
    s2 = jint(r, "socket");
    json_decref(r);
    sb = tc_open(b, 0);

    r = tc_ok(a, NULL, "socket.list", NULL);
    arr = jget(r, "sockets");
    EXPECT_TRUE(json_is_array(arr), "socket.list sockets: %s", jd(r));
    EXPECT_INT(json_array_size(arr), 2, "client A's socket.list: %s", jd(r));
    json_array_foreach(arr, i, e)
    {
        long long h = jint(e, "socket");
        EXPECT_STR(jstr(e, "type"), "tcp", "list entry type: %s", jd(e));
        if (h == s1) {
            seen1 = true;
            EXPECT_STR(jstr(e, "state"), "connected", "list entry state: %s", jd(e));
        } else if (h == s2) {
            seen2 = true;
            EXPECT_STR(jstr(e, "state"), "open", "list entry state: %s", jd(e));
            EXPECT_STR(jstr(e, "tag"), "two", "list entry tag: %s", jd(e));
        } else {
            FAIL("client A's list holds socket %lld (A has %lld, %lld; B has %lld)", h, s1, s2, sb);
        }
    }
    EXPECT_TRUE(seen1 && seen2, "client A's list misses its sockets: %s", jd(r));
    json_decref(r);

    r = tc_ok(b, NULL, "socket.list", NULL);
    arr = jget(r, "sockets");
    EXPECT_INT(json_array_size(arr), 1, "client B's socket.list: %s", jd(r));
    EXPECT_INT(jint(json_array_get(arr, 0), "socket"), sb, "client B's list: %s", jd(r));
    json_decref(r);

    /* another client's handle does not exist for B */
    EXPECT_INT(tc_err(b, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s1),
               SOCKD_E_UNKNOWN_HANDLE, "socket.info of another client's socket");
    EXPECT_INT(tc_err(b, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s1),
               SOCKD_E_UNKNOWN_HANDLE, "socket.close of another client's socket");
    expect_state(a, s1, "connected");

    /* a closed socket leaves the list */
    json_decref(tc_ok(a, NULL, "socket.close", "{s:I}", "socket", (json_int_t)s2));
    r = tc_ok(a, NULL, "socket.list", NULL);
    arr = jget(r, "sockets");
    EXPECT_INT(json_array_size(arr), 1, "client A's list after a close: %s", jd(r));
    EXPECT_INT(jint(json_array_get(arr, 0), "socket"), s1, "client A's list after a close: %s",
               jd(r));
    json_decref(r);
}

/* ------------------------------------------------------------------------ */
/* 4 MiB through an echo peer                                                */

static void
test_bulk_echo_sha256(void **state)
{
    (void)state;
    enum { TOTAL = 4 * MIB, CHUNK = 64 * KIB, NSEND = TOTAL / CHUNK };
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned char *data = random_bytes(TOTAL), *back = malloc(TOTAL);
    unsigned char h_out[32], h_back[32];
    long long s = connect_to(t, 0, "127.0.0.1", p->port, NULL), rid, sids[NSEND];
    size_t total = 0, n;
    unsigned char *d;
    json_t *ev, *info;
    long long sent_total = 0;

    EXPECT_TRUE(back != NULL, "back");
    rid = start_recv(t, s, CHUNK, 0, 1, 0);
    for (int i = 0; i < NSEND; i++)
        sids[i] = send_bytes(t, s, data + (size_t)i * CHUNK, CHUNK, 1);
    for (int i = 0; i < 100000 && total < TOTAL; i++) {
        ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        EXPECT_INT(jint(ev, "request"), rid, "stream chunk request");
        EXPECT_TRUE(!jflag(ev, "eof") && !jflag(ev, "timeout"), "stream chunk flags: %s", jd(ev));
        d = ev_data(ev, &n);
        EXPECT_TRUE(n >= 1 && n <= CHUNK, "stream chunk of %zu bytes (length %d)", n, CHUNK);
        EXPECT_TRUE(total + n <= TOTAL, "echo returned more than %d bytes", TOTAL);
        memcpy(back + total, d, n);
        total += n;
        free(d);
        json_decref(ev);
    }
    EXPECT_INT(total, TOTAL, "bytes echoed back");
    sha256(data, TOTAL, h_out);
    sha256(back, TOTAL, h_back);
    if (memcmp(h_out, h_back, 32) != 0) {
        size_t off = 0;
        while (off < TOTAL && data[off] == back[off])
            off++;
        FAIL("SHA-256 of the echoed 4 MiB differs from what was sent (first difference at "
             "byte %zu)",
             off);
    }
    for (int i = 0; i < NSEND; i++) {
        ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
        EXPECT_INT(jint(ev, "request"), sids[i], "socket.sent #%d in order", i);
        sent_total += jint(ev, "bytes");
        json_decref(ev);
    }
    EXPECT_INT(sent_total, TOTAL, "bytes reported by socket.sent");
    EXPECT_TRUE(recv_canceled(t, s), "recv_cancel of the stream must give canceled:true");
    info = tc_info(t, s);
    EXPECT_INT(jint(info, "bytes_sent"), TOTAL, "bytes_sent: %s", jd(info));
    EXPECT_INT(jint(info, "bytes_received"), TOTAL, "bytes_received: %s", jd(info));
    EXPECT_INT(jint(info, "send_buffered"), 0, "send_buffered: %s", jd(info));
    json_decref(info);
    EXPECT_INT(p->bytes, TOTAL, "bytes the echo peer read");
    free(data);
    free(back);
}

/* ------------------------------------------------------------------------ */
/* socket.bind / listen / accept / reject: sockd as the server               */

static void
test_bind_local(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s;
    int port, busy_port, fp;
    json_t *r, *err, *info;
    char addr[64];

    /* default address, per the ipv6 flag */
    s = tc_open(t, 0);
    r = tc_ok(t, NULL, "socket.bind", "{s:I}", "socket", (json_int_t)s);
    check_addr(r, "local", "0.0.0.0", -1);
    info = tc_info(t, s);
    EXPECT_TRUE(json_equal(jget(info, "local"), jget(r, "local")), "info local %s, bind said %s",
                jd(info), jd(r));
    json_decref(info);
    json_decref(r);
    s = tc_open(t, 1);
    r = tc_ok(t, NULL, "socket.bind", "{s:I}", "socket", (json_int_t)s);
    check_addr(r, "local", "::", -1);
    json_decref(r);

    /* port 0: the real port is reported (we cannot bind it ourselves without SO_REUSEADDR) */
    s = tc_open(t, 0);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
              "127.0.0.1");
    port = check_addr(r, "local", "127.0.0.1", -1);
    json_decref(r);
    {
        struct sockaddr_storage ss;
        socklen_t sl;
        int fd = track_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        fill_sa(&ss, &sl, 0, port);
        EXPECT_TRUE(bind(fd, (struct sockaddr *)&ss, sl) != 0 && errno == EADDRINUSE,
                    "port %d reported by socket.bind is not bound in the daemon", port);
        close_fd(fd);
    }

    /* explicit port, as "port" and inside the address */
    fp = free_port(1);
    s = tc_open(t, 0);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address", "::1",
              "port", fp);
    check_addr(r, "local", "::1", fp);
    json_decref(r);
    fp = free_port(0);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fp);
    s = tc_open(t, 0);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address", addr);
    check_addr(r, "local", "127.0.0.1", fp);
    json_decref(r);
    EXPECT_INT(tc_err(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
                      "127.0.0.1"),
               SOCKD_E_WRONG_STATE, "bind on a bound socket");

    /* the port is taken by our listener: -32603 bind_failed EADDRINUSE, socket stays open */
    raw_listen(0, &busy_port);
    s = tc_open(t, 0);
    err = tc_expect_err(t, SOCKD_E_INTERNAL, "socket.bind", "{s:I, s:s, s:i}", "socket",
                        (json_int_t)s, "address", "127.0.0.1", "port", busy_port);
    EXPECT_STR(jstr(err_data(err), "reason"), "bind_failed", "bind to a busy port: %s", jd(err));
    EXPECT_INT(jint(err_data(err), "errno"), EADDRINUSE, "bind to a busy port: %s", jd(err));
    json_decref(err);
    expect_state(t, s, "open");
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s}", "socket",
                        (json_int_t)s, "address", "127.0.0.1:99999");
    EXPECT_STR(jstr(err_data(err), "reason"), "address_invalid", "bind to port 99999: %s", jd(err));
    json_decref(err);
    expect_state(t, s, "open");
}

static void
test_listen_params(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long s = tc_open(t, 0), c, s0;
    json_t *info;
    int fd, port;

    EXPECT_INT(
        tc_err(t, NULL, "socket.listen", "{s:I, s:i}", "socket", (json_int_t)s, "backlog", 65536),
        SOCKD_E_INVALID_PARAMS, "listen backlog 65536");
    EXPECT_INT(
        tc_err(t, NULL, "socket.listen", "{s:I, s:s}", "socket", (json_int_t)s, "backlog", "8"),
        SOCKD_E_INVALID_PARAMS, "listen backlog \"8\"");
    EXPECT_INT(tc_err(t, NULL, "socket.listen", "{s:I, s:s}", "socket", (json_int_t)s,
                      "auto_accept", "yes"),
               SOCKD_E_INVALID_PARAMS, "listen auto_accept \"yes\"");
    expect_state(t, s, "open");

    /* listen straight from "open": bound to any address, some port */
    json_decref(
        tc_ok(t, NULL, "socket.listen", "{s:I, s:i}", "socket", (json_int_t)s, "backlog", 1));
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "listening", "state after listen: %s", jd(info));
    port = check_addr(info, "local", "0.0.0.0", -1);
    json_decref(info);
    fd = tcp_connect4(port);
    json_decref(tc_event(t, "socket.incoming", s, H_TIMEOUT_MS));
    (void)fd;

    make_pair(t, 0, &c);
    EXPECT_INT(tc_err(t, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)c),
               SOCKD_E_WRONG_STATE, "listen on a connected socket");

    /* sockd-protocol.7, socket.listen: backlog is 1..65535 */
    s0 = tc_open(t, 0);
    EXPECT_INT(
        tc_err(t, NULL, "socket.listen", "{s:I, s:i}", "socket", (json_int_t)s0, "backlog", 0),
        SOCKD_E_INVALID_PARAMS, "listen backlog 0 (backlog 1..65535)");
    expect_state(t, s0, "open");
}

static void
test_server_accept_ipv4(void **state)
{
    (void)state;
    enum { BULK = 128 * KIB };
    struct tc *t = tc_new(&g_d);
    long long lid, l, p, n, id;
    int port, fd, cport;
    json_t *info, *err, *ev;
    unsigned char *down = random_bytes(BULK), *up = random_bytes(BULK), *got = malloc(BULK);
    unsigned char *d;
    size_t len;

    EXPECT_TRUE(got != NULL, "got");
    l = make_listener(t, "127.0.0.1", 0, &lid, &port);
    info = tc_info(t, l);
    EXPECT_STR(jstr(info, "state"), "listening", "listener state: %s", jd(info));
    check_addr(info, "local", "127.0.0.1", port);
    json_decref(info);

    fd = tcp_connect4(port);
    cport = local_port(fd);
    p = expect_incoming(t, l, lid, "127.0.0.1", port, cport);
    EXPECT_INT(p, 1, "first pending number of a listener");
    EXPECT_INT(info_int(t, l, "pending"), 1, "listener pending count");

    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.accept", "{s:I, s:i}", "socket",
                        (json_int_t)l, "pending", 999);
    EXPECT_STR(jstr(err_data(err), "param"), "pending", "accept of unknown pending: %s", jd(err));
    json_decref(err);

    {
        json_t *r = tc_ok(t, &id, "socket.accept", "{s:I, s:I, s:s}", "socket", (json_int_t)l,
                          "pending", (json_int_t)p, "tag", "child");
        n = jint(r, "socket");
        json_decref(r);
    }
    EXPECT_TRUE(n > 0 && n != l, "accepted handle %lld", n);
    ev = tc_event(t, "socket.accepted", n, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "listener"), l, "socket.accepted listener: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), id, "socket.accepted request: %s", jd(ev));
    check_addr(ev, "local", "127.0.0.1", port);
    check_addr(ev, "remote", "127.0.0.1", cport);
    json_decref(ev);
    info = tc_info(t, n);
    EXPECT_STR(jstr(info, "state"), "connected", "accepted socket state: %s", jd(info));
    EXPECT_STR(jstr(info, "tag"), "child", "accepted socket tag: %s", jd(info));
    check_addr(info, "remote", "127.0.0.1", cport);
    json_decref(info);
    EXPECT_INT(tc_err(t, NULL, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                      (json_int_t)p),
               SOCKD_E_INVALID_PARAMS, "accepting the same pending twice");
    EXPECT_INT(info_int(t, l, "pending"), 0, "listener pending count after accept");

    /* data both ways, small and 128 KiB */
    send_text(t, n, "to-client", 0);
    raw_expect(fd, "to-client");
    raw_write_str(fd, "to-daemon");
    recv_expect(t, n, "to-daemon");
    id = send_bytes(t, n, down, BULK, 1);
    EXPECT_INT(raw_read(fd, got, BULK), BULK, "bytes the plain client read");
    EXPECT_TRUE(memcmp(got, down, BULK) == 0, "bytes at the plain client differ");
    expect_sent(t, n, id, BULK);
    raw_write(fd, up, BULK);
    id = start_recv(t, n, BULK, 0, 0, 0);
    ev = tc_event(t, "socket.received", n, H_TIMEOUT_MS);
    EXPECT_INT(jint(ev, "request"), id, "socket.received request");
    d = ev_data(ev, &len);
    EXPECT_INT(len, BULK, "an exact recv of 128 KiB delivered");
    EXPECT_TRUE(memcmp(d, up, BULK) == 0, "bytes from the plain client differ");
    free(d);
    json_decref(ev);

    /* the listener keeps listening */
    fd = tcp_connect4(port);
    p = expect_incoming(t, l, lid, "127.0.0.1", port, local_port(fd));
    EXPECT_INT(p, 2, "second pending number of a listener");
    free(down);
    free(up);
    free(got);
}

static void
test_server_ipv6(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long lid, l, p, n;
    int port, fd, cport;

    l = make_listener(t, "::1", 0, &lid, &port);
    fd = raw_connect6(port);
    cport = local_port(fd);
    p = expect_incoming(t, l, lid, "::1", port, cport);
    n = accept_pending(t, l, p, "::1", port, cport);
    raw_write_str(fd, "over v6");
    recv_expect(t, n, "over v6");
    send_text(t, n, "back v6", 0);
    raw_expect(fd, "back v6");
}

static void
test_server_reject(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long lid, l, p, p2;
    int port, fd, fd2, rc;
    json_t *err, *r;

    l = make_listener(t, "127.0.0.1", 0, &lid, &port);
    fd = tcp_connect4(port);
    p = expect_incoming(t, l, lid, "127.0.0.1", port, local_port(fd));
    r = tc_ok(t, NULL, "socket.reject", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
              (json_int_t)p);
    expect_result_empty(r, "socket.reject");
    json_decref(r);
    rc = raw_wait_closed(fd, H_TIMEOUT_MS);
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET,
                "rejected peer: expected EOF or reset, got %d (-1 timeout, -2 data)", rc);
    EXPECT_INT(tc_err(t, NULL, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                      (json_int_t)p),
               SOCKD_E_INVALID_PARAMS, "accept of a rejected pending");
    EXPECT_INT(tc_err(t, NULL, "socket.reject", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                      (json_int_t)p),
               SOCKD_E_INVALID_PARAMS, "reject of a rejected pending");
    err = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.reject", "{s:I, s:i}", "socket",
                        (json_int_t)l, "pending", 4242);
    EXPECT_STR(jstr(err_data(err), "param"), "pending", "reject of unknown pending: %s", jd(err));
    json_decref(err);
    expect_state(t, l, "listening");
    tc_no_event(t, 0, 100);

    /* closing the listener closes what is still pending on it */
    fd2 = tcp_connect4(port);
    p2 = expect_incoming(t, l, lid, "127.0.0.1", port, local_port(fd2));
    EXPECT_TRUE(p2 != p, "pending number %lld reused on the listener", p2);
    r = tc_ok(t, NULL, "socket.close", "{s:I}", "socket", (json_int_t)l);
    json_decref(r);
    rc = raw_wait_closed(fd2, H_TIMEOUT_MS);
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET,
                "pending peer of a closed listener: expected EOF or reset, got %d", rc);
    tc_no_event(t, 0, 100);
}

static void
test_server_auto_accept(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    long long lid, l, n;
    int port, fd, cport;
    json_t *ev;

    l = make_listener(t, "127.0.0.1", 1, &lid, &port);
    fd = tcp_connect4(port);
    cport = local_port(fd);
    ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    n = jint(ev, "socket");
    EXPECT_TRUE(n > 0 && n != l, "auto-accepted handle: %s", jd(ev));
    EXPECT_INT(jint(ev, "listener"), l, "auto socket.accepted listener: %s", jd(ev));
    EXPECT_INT(jint(ev, "request"), lid, "auto socket.accepted request (listen id): %s", jd(ev));
    check_addr(ev, "local", "127.0.0.1", port);
    check_addr(ev, "remote", "127.0.0.1", cport);
    json_decref(ev);
    tc_no_event(t, l, 200); /* no socket.incoming with auto_accept */
    raw_write_str(fd, "auto");
    recv_expect(t, n, "auto");
    send_text(t, n, "ack", 0);
    raw_expect(fd, "ack");
}

static void
test_pending_expires(void **state)
{
    (void)state;
    struct h_daemon *d2 = daemon_new("accept-timeout 1s\n");
    struct tc *t = tc_new(d2);
    long long lid, l, p, t0, el;
    int port, fd, rc;
    json_t *r;

    r = tc_ok(t, NULL, "daemon.hello", NULL);
    EXPECT_INT(jint(jget(r, "limits"), "accept_timeout_ms"), 1000,
               "daemon.hello limits with accept-timeout 1s: %s", jd(r));
    json_decref(r);

    l = make_listener(t, "127.0.0.1", 0, &lid, &port);
    fd = tcp_connect4(port);
    p = expect_incoming(t, l, lid, "127.0.0.1", port, local_port(fd));
    t0 = now_ms();
    EXPECT_INT(info_int(t, l, "pending"), 1, "pending count before expiry");
    EXPECT_TRUE(!raw_readable(fd, 300), "the pending connection ended before accept-timeout");
    rc = raw_wait_closed(fd, H_TIMEOUT_MS);
    el = now_ms() - t0;
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET,
                "expired pending: expected EOF or reset at the peer, got %d (-1 timeout)", rc);
    EXPECT_TRUE(el >= 600 && el < 3000, "pending ended %lld ms after socket.incoming (1 s)", el);
    tc_no_event(t, 0, 200); /* closed silently */
    EXPECT_INT(tc_err(t, NULL, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                      (json_int_t)p),
               SOCKD_E_INVALID_PARAMS, "accept of an expired pending");
    EXPECT_INT(info_int(t, l, "pending"), 0, "pending count after expiry");

    /* the listener still works */
    fd = tcp_connect4(port);
    p = expect_incoming(t, l, lid, "127.0.0.1", port, local_port(fd));
    accept_pending(t, l, p, "127.0.0.1", port, local_port(fd));
}

static void
test_max_pending_accepts(void **state)
{
    (void)state;
    struct h_daemon *d3 = daemon_new("max-pending-accepts 2\n");
    struct tc *t = tc_new(d3);
    long long lid, l, p1, p2, p3;
    int port, fd[3], cp[3];
    json_t *r, *ev;

    r = tc_ok(t, NULL, "daemon.hello", NULL);
    EXPECT_INT(jint(jget(r, "limits"), "max_pending_accepts"), 2,
               "daemon.hello limits with max-pending-accepts 2: %s", jd(r));
    json_decref(r);

    l = make_listener(t, "127.0.0.1", 0, &lid, &port);
    for (int i = 0; i < 3; i++) {
        fd[i] = tcp_connect4(port); /* the kernel backlog completes all three */
        cp[i] = local_port(fd[i]);
    }
    p1 = expect_incoming(t, l, lid, "127.0.0.1", port, cp[0]);
    p2 = expect_incoming(t, l, lid, "127.0.0.1", port, cp[1]);
    EXPECT_INT(p1, 1, "first pending");
    EXPECT_INT(p2, 2, "second pending");
    tc_no_event(t, l, 600); /* the third waits in the kernel */
    EXPECT_INT(info_int(t, l, "pending"), 2, "pending count at the cap");

    accept_pending(t, l, p1, "127.0.0.1", port, cp[0]);
    ev = tc_event(t, "socket.incoming", l, H_TIMEOUT_MS);
    p3 = jint(ev, "pending");
    check_addr(ev, "remote", "127.0.0.1", cp[2]);
    EXPECT_TRUE(p3 != p1 && p3 != p2, "third pending number %lld reused", p3);
    json_decref(ev);
    EXPECT_INT(info_int(t, l, "pending"), 2, "pending count after one accept and the third");
}

/* ------------------------------------------------------------------------ */

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    h_daemon_start(&g_d, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_daemon_stop(&g_d);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, tc_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_info_tag),
        T(test_connect_ipv4),
        T(test_connect_ipv6_and_port_param),
        T(test_connect_address_invalid),
        T(test_connect_refused),
        T(test_connect_timeout),
        T(test_wrong_state_calls),
        T(test_send_before_connect),
        T(test_send_variants),
        T(test_send_long_data_forms),
        T(test_send_burst),
        T(test_send_cap),
        T(test_recv_exact),
        T(test_recv_partial),
        T(test_recv_stream),
        T(test_recv_timeout),
        T(test_recv_busy_and_cancel),
        T(test_recv_cut_by_eof),
        T(test_eof_waits_for_buffered),
        T(test_closed_by_peer),
        T(test_closed_lost),
        T(test_shutdown_flushes),
        T(test_close_is_silent),
        T(test_info_counters),
        T(test_state_words),
        T(test_list_only_own),
        T(test_bulk_echo_sha256),
        T(test_bind_local),
        T(test_listen_params),
        T(test_server_accept_ipv4),
        T(test_server_ipv6),
        T(test_server_reject),
        T(test_server_auto_accept),
        T(test_pending_expires),
        T(test_max_pending_accepts),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
