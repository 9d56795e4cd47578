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
 * As in test_tcp.c (the test client is tc.h), requests are written on the control connection with
 * ids chosen here, so the "request" member of notifications can be checked; messages read meanwhile
 * wait, in arrival order, in a per-client inbox. Every wait is bounded, every loop has a fixed
 * bound, and what a test makes is tracked and released by the per-test teardown.
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
#include <sys/stat.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "dnsd.h"
#include "tc.h"

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
/* socket-level shorthands                                                   */

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

/* Open a tcp socket (ipv6: with ipv6 true), socket.connect it to address (port >= 0: as the
 * "port" param; timeout_ms > 0: as timeout_ms) and wait for its socket.connected to ip:rport;
 * returns the socket. */
static long long
connect_ok_(struct tc *t, int ipv6, const char *address, int port, int timeout_ms, const char *ip,
            int rport)
{
    long long s = open_type_(t, "tcp", ipv6);
    long long id = start_connect_(t, s, address, port, timeout_ms);
    json_decref(expect_connected_(t, s, id, ip, rport));
    return s;
}

/* Wait (up to 1 s) until the peer p accepted n connections, then check that it did. */
static void
wait_accepted_(struct h_peer *p, int n, const char *who)
{
    for (int i = 0; i < 50 && p->accepted < n; i++)
        sleep_ms(20);
    EXPECT_INT(p->accepted, n, "connections accepted by %s", who);
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

/*
 * A tracked socket of type (SOCK_STREAM/SOCK_DGRAM) bound to the loopback address at port (0:
 * any); a stream socket listens when listen_too. Returns the fd (-1 if the bind failed and
 * may_fail), *port_out the port.
 */
static int
raw_sock_(int type, int v6, int port, bool listen_too, bool may_fail, int *port_out)
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
            close_fd_(fd);
            return -1;
        }
        FAIL("bind to %s port %d: %s", v6 ? "::1" : "127.0.0.1", port, strerror(errno));
    }
    if (listen_too)
        EXPECT_INT(listen(fd, 16), 0, "listen: %s", strerror(errno));
    sl = sizeof ss;
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&ss, &sl), 0, "getsockname: %s", strerror(errno));
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
    EXPECT_INT(inet_pton(AF_INET, ip, &sin.sin_addr), 1, "inet_pton: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) != 0 || listen(fd, 16) != 0) {
        close_fd_(fd);
        return -1;
    }
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&sin, &sl), 0, "getsockname: %s",
               strerror(errno));
    if (port_out)
        *port_out = ntohs(sin.sin_port);
    return fd;
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

/*
 * The daemon's hosts file: this one, not the machine's, so the localhost tests do not depend on
 * how the machine's /etc/hosts was written (many map localhost to 127.0.0.1 only). The daemon
 * runs in a private mount namespace with this file bound over /etc/hosts (c-ares 1.18 reads
 * only that path for getaddrinfo); the wrapper execs, so the daemon keeps the pid started.
 */
static char g_hosts[64], g_wrap[64];

static void
hosts_write(const char *bin)
{
    static const char text[] = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n";
    FILE *f;
    int fd;

    snprintf(g_hosts, sizeof g_hosts, "/tmp/sockd-hosts-XXXXXX");
    fd = mkstemp(g_hosts);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_INT(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1), "write: %s",
               strerror(errno));
    close(fd);
    snprintf(g_wrap, sizeof g_wrap, "/tmp/sockd-wrap-XXXXXX");
    fd = mkstemp(g_wrap);
    EXPECT_TRUE(fd >= 0 && (f = fdopen(fd, "w")) != NULL,
                "fd >= 0 && (f = fdopen(fd, \"w\")) != NULL");
    fprintf(f,
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c "
            "'mount --bind \"$1\" /etc/hosts && shift && exec \"$@\"' sh '%s' '%s' \"$@\"\n",
            g_hosts, bin);
    EXPECT_INT(fchmod(fd, 0700), 0, "fchmod: %s", strerror(errno));
    EXPECT_INT(fclose(f), 0, "fclose: %s", strerror(errno));
}

/* Helpers called from a test record its line, shown when they fail. */
#define start_connect(...) (TC_AT(), start_connect_(__VA_ARGS__))
#define expect_connected(...) (TC_AT(), expect_connected_(__VA_ARGS__))
#define connect_ok(...) (TC_AT(), connect_ok_(__VA_ARGS__))
#define wait_accepted(...) (TC_AT(), wait_accepted_(__VA_ARGS__))
#define expect_closed(...) (TC_AT(), expect_closed_(__VA_ARGS__))
#define stats(...) (TC_AT(), stats_(__VA_ARGS__))
#define wait_stats(...) (TC_AT(), wait_stats_(__VA_ARGS__))
#define raw_sock(...) (TC_AT(), raw_sock_(__VA_ARGS__))

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
    long long s;
    json_t *info;

    /* port inside the address string */
    snprintf(addr, sizeof addr, "%s:%d", N_A4, p->port);
    s = connect_ok(t, 0, addr, -1, 0, "127.0.0.1", p->port);
    info = tc_info(t, s);
    EXPECT_STR(jstr(info, "state"), "connected", "socket.info after a named connect: %s", jd(info));
    check_addr(info, "remote", "127.0.0.1", p->port);
    json_decref(info);
    TC_AT();
    EXPECT_TRUE(dnsd_name_queries(&g_dns, N_A4) > q0, "dnsd saw a question for %s", N_A4);
    wait_accepted(p, 1, "the IPv4 peer");

    /* port as the "port" param */
    s = connect_ok(t, 0, N_A4, p->port, 0, "127.0.0.1", p->port);
    wait_accepted(p, 2, "the IPv4 peer");
}

/* A name with only an AAAA record reaches an IPv6 peer on ::1. */
static void
test_aaaa_record_ipv6(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 1);
    char addr[128];

    snprintf(addr, sizeof addr, "%s:%d", N_A6, p->port);
    connect_ok(t, 0, addr, -1, 0, "::1", p->port);
    wait_accepted(p, 1, "the IPv6 peer");

    /* the "port" param form, on a socket opened with ipv6:true */
    connect_ok(t, 1, N_A6, p->port, 0, "::1", p->port);
}

/* "localhost" comes from /etc/hosts (never from DNS) and reaches an IPv4 listener. */
static void
test_localhost_ipv4(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 0);
    unsigned all0 = dnsd_queries(&g_dns);
    char addr[64];

    snprintf(addr, sizeof addr, "localhost:%d", p->port);
    connect_ok(t, 0, addr, -1, 0, "127.0.0.1", p->port);

    connect_ok(t, 0, "LocalHost", p->port, 0, "127.0.0.1", p->port);

    TC_AT();
    EXPECT_INT(dnsd_name_queries(&g_dns, "localhost"), 0, "dnsd questions for localhost");
    EXPECT_INT(dnsd_queries(&g_dns), all0, "dnsd questions of any name while resolving localhost");
}

/* "localhost" reaches a listener only on ::1 when the hosts file maps localhost to ::1 too. */
static void
test_localhost_ipv6(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    struct h_peer *p = peer_new(H_ECHO, 1);
    unsigned all0 = dnsd_queries(&g_dns);
    char addr[64];

    snprintf(addr, sizeof addr, "localhost:%d", p->port);
    connect_ok(t, 0, addr, -1, 0, "::1", p->port);
    TC_AT();
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
    int port = 0, fd4 = -1, fd6 = -1, hold6 = -1;
    int lfd4, lfd6, afd;

    /* both families listening on the same port number: IPv6 first */
    for (int i = 0; i < 20 && fd6 < 0; i++) {
        if (fd4 >= 0)
            close_fd(fd4);
        fd4 = raw_sock(SOCK_STREAM, 0, 0, true, false, &port);
        fd6 = raw_sock(SOCK_STREAM, 1, port, true, true, NULL);
    }
    TC_AT();
    EXPECT_TRUE(fd6 >= 0, "a port free on both 127.0.0.1 and ::1");
    connect_ok(t, 0, N_DUAL, port, 0, "::1", port);
    close_fd(fd4);
    close_fd(fd6);

    /* only IPv4 listens; [::1]:port is bound (so nothing else can listen there) but not
     * listening: refused, then 127.0.0.1 */
    lfd4 = -1;
    for (int i = 0; i < 20 && hold6 < 0; i++) {
        if (lfd4 >= 0)
            close_fd(lfd4);
        lfd4 = raw_sock(SOCK_STREAM, 0, 0, true, false, &port);
        hold6 = raw_sock(SOCK_STREAM, 1, port, false, true, NULL);
    }
    TC_AT();
    EXPECT_TRUE(hold6 >= 0, "a port free on both 127.0.0.1 and ::1");
    connect_ok(t, 0, N_DUAL, port, 0, "127.0.0.1", port);
    afd = raw_accept(lfd4, H_TIMEOUT_MS);
    TC_AT();
    EXPECT_TRUE(afd >= 0, "the IPv4 listener got the connection");

    /* and the same through an IPv6-only listener, IPv4 port dead: IPv6 wins at once */
    lfd6 = -1;
    hold6 = -1;
    for (int i = 0; i < 20 && hold6 < 0; i++) {
        if (lfd6 >= 0)
            close_fd(lfd6);
        lfd6 = raw_sock(SOCK_STREAM, 1, 0, true, false, &port);
        hold6 = raw_sock(SOCK_STREAM, 0, port, false, true, NULL);
    }
    TC_AT();
    EXPECT_TRUE(hold6 >= 0, "a port free on both ::1 and 127.0.0.1");
    connect_ok(t, 0, N_DUAL, port, 0, "::1", port);
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
        TC_AT();
        EXPECT_TRUE(fd1 >= 0, "a port free on both 127.0.0.1 and 127.0.0.2");
        s = open_type(t, "tcp", 0);
        id = start_connect(t, s, N_TWO_A, port, 3000);
        ev = tc_next_is(t, s, "socket.connected", H_TIMEOUT_MS);
        EXPECT_INT(jint(ev, "request"), id, "socket.connected request: %s", jd(ev));
        check_addr(ev, "remote", "127.0.0.2", port);
        json_decref(ev);
        TC_AT();
        EXPECT_TRUE(raw_accept(fd2, H_TIMEOUT_MS) >= 0, "the 127.0.0.2 listener got it");
        close_fd(fd1);
        close_fd(fd2);
    }

    /* nothing on 127.0.0.2:port (refused): the second record, 127.0.0.1, is tried next */
    p = peer_new(H_ECHO, 0);
    s = connect_ok(t, 0, N_TWO_A, p->port, 3000, "127.0.0.1", p->port);
    wait_accepted(p, 1, "the peer on the second address");
}

/* NXDOMAIN: socket.closed connect_failed, "did not resolve", request = the connect id. */
static void
test_nxdomain(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    unsigned q0 = dnsd_name_queries(&g_dns, N_NX);
    long long s = open_type(t, "tcp", 0), id;
    json_t *ev;
    const char *detail;

    id = start_connect(t, s, N_NX ":80", -1, 0);
    ev = expect_closed(t, s, id, SOCKD_REASON_CONNECT_FAILED, H_TIMEOUT_MS);
    detail = jstr(ev, "detail");
    EXPECT_TRUE(strstr(detail, "did not resolve") != NULL, "detail: %s", jd(ev));
    EXPECT_TRUE(strstr(detail, N_NX) != NULL, "detail names the host: %s", jd(ev));
    json_decref(ev);
    TC_AT();
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
    long long s = open_type(t, "tcp", 0), id, t0, el;
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
    TC_AT();
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
    long long s = open_type(t, "tcp", 0), id, t0, el;
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
    TC_AT();
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
    long long s = open_type(t, "tcp", 0), id, t0, worst = 0, total;
    json_t *m, *ev;

    t0 = now_ms();
    id = start_connect(t, s, N_HOLD, p->port, 0);
    TC_AT();
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
    TC_AT();
    m = tc_wait_msg(t, NULL, s, 0);
    EXPECT_TRUE(m == NULL, "socket %lld already had news during the pings: %s", s, jd(m));
    json_decref(m);
    /* and the held lookup still ends (connected, or failed at resolve-timeout) */
    m = tc_wait_msg(t, NULL, s, RESOLVE_TIMEOUT_MS + 3000);
    TC_AT();
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
    int port, lfd = raw_sock(SOCK_STREAM, 0, 0, true, false, &port), afd;
    long long s = open_type(t, "tcp", 0), id, sid;
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
    TC_AT();
    EXPECT_TRUE(afd >= 0, "the listener got the connection");
    EXPECT_INT(raw_read_within(afd, got, 10), 10, "bytes at the peer");
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
    s = open_type(t, "tcp", 0);
    start_connect(t, s, N_CLOSE, p->port, 0);
    TC_AT();
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
    TC_AT();
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
    s = open_type(u, "tcp", 0);
    start_connect(u, s, N_GONE, p->port, 0);
    /* a second one, with a send queued, for good measure */
    s = open_type(u, "tcp", 0);
    start_connect(u, s, N_GONE, p->port, 0);
    r = tc_ok(u, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "lost");
    json_decref(r);
    TC_AT();
    EXPECT_TRUE(wait_dns_queries(N_GONE, q0 + 1, 1000) > q0, "the lookup reached dnsd");
    tc_close(u);
    wait_stats(t, sock0, clients0 - 1);
    sleep_ms(2000); /* past the answer (1500 ms) */
    r = tc_ok(t, NULL, "daemon.ping", NULL);
    json_decref(r);
    wait_stats(t, sock0, clients0 - 1);
    TC_AT();
    EXPECT_INT(p->accepted, 0, "connections made for a departed client");
    fds = wait_fds_at_most(fds0 - 1, H_TIMEOUT_MS); /* minus the departed control connection */
    EXPECT_TRUE(fds <= fds0 - 1, "daemon fds %d, %d before (with the departed client)", fds, fds0);
    /* the daemon still resolves */
    {
        struct h_peer *q = peer_new(H_ECHO, 0);
        long long s2 = open_type(t, "tcp", 0), id;
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

    s = open_type(t, "tcp", 0);
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

    s = open_type(t, "tcp", 1);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address",
              "localhost");
    check_addr(r, "local", "::1", -1);
    json_decref(r);

    u = open_type(t, "udp", 0);
    rfd = raw_sock(SOCK_DGRAM, 0, 0, false, false, &rport);
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
    TC_AT();
    EXPECT_INT(dnsd_name_queries(&g_dns, N_NOBIND), 0, "dnsd questions for a bind/sendto name");
}

/* UDP connect with a name, then send reaches our UDP socket. */
static void
test_udp_connect_name(void **state)
{
    (void)state;
    struct tc *t = tc_new(&g_d);
    int rport, rfd = raw_sock(SOCK_DGRAM, 0, 0, false, false, &rport), from = 0, n;
    long long s = open_type(t, "udp", 0), id, sid;
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
    TC_AT();
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
    EXPECT_INT(dnsd_add_a(&g_dns, N_A4, "127.0.0.1"), 0, "dnsd_add_a(&g_dns, N_A4, \"127.0.0.1\")");
    EXPECT_INT(dnsd_add_aaaa(&g_dns, N_A6, "::1"), 0, "dnsd_add_aaaa(&g_dns, N_A6, \"::1\")");
    EXPECT_INT(dnsd_add_aaaa(&g_dns, N_DUAL, "::1"), 0, "dnsd_add_aaaa(&g_dns, N_DUAL, \"::1\")");
    EXPECT_INT(dnsd_add_a(&g_dns, N_DUAL, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_DUAL, \"127.0.0.1\")");
    EXPECT_INT(dnsd_add_a(&g_dns, N_TWO_A, "127.0.0.2"), 0,
               "dnsd_add_a(&g_dns, N_TWO_A, \"127.0.0.2\")");
    EXPECT_INT(dnsd_add_a(&g_dns, N_TWO_A, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_TWO_A, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_rcode(&g_dns, N_NX, DNSD_NXDOMAIN), 0, "dnsd_set_rcode");
    EXPECT_INT(dnsd_add_a(&g_dns, N_SLOW3, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_SLOW3, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_SLOW3, 3000), 0, "dnsd_set_delay(&g_dns, N_SLOW3, 3000)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_SLOW4, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_SLOW4, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_SLOW4, 4000), 0, "dnsd_set_delay(&g_dns, N_SLOW4, 4000)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_HOLD, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_HOLD, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_HOLD, 2000), 0, "dnsd_set_delay(&g_dns, N_HOLD, 2000)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_EARLY, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_EARLY, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_EARLY, 400), 0, "dnsd_set_delay(&g_dns, N_EARLY, 400)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_CLOSE, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_CLOSE, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_CLOSE, 1500), 0, "dnsd_set_delay(&g_dns, N_CLOSE, 1500)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_GONE, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_GONE, \"127.0.0.1\")");
    EXPECT_INT(dnsd_set_delay(&g_dns, N_GONE, 1500), 0, "dnsd_set_delay(&g_dns, N_GONE, 1500)");
    EXPECT_INT(dnsd_add_a(&g_dns, N_NOBIND, "127.0.0.1"), 0, "dnsd_add_a");
    EXPECT_INT(dnsd_add_a(&g_dns, N_UDP, "127.0.0.1"), 0,
               "dnsd_add_a(&g_dns, N_UDP, \"127.0.0.1\")");
    snprintf(conf, sizeof conf, "resolver 127.0.0.1:%u\nresolve-timeout %ds\n",
             (unsigned)g_dns.port, RESOLVE_TIMEOUT_MS / 1000);
    char *bin = strdup(getenv("SOCKD_BIN") ? getenv("SOCKD_BIN") : "");
    EXPECT_TRUE(bin != NULL && *bin, "bin != NULL && *bin");
    hosts_write(bin);
    EXPECT_INT(setenv("SOCKD_BIN", g_wrap, 1), 0, "setenv: %s", strerror(errno));
    h_daemon_start(&g_d, conf);
    EXPECT_INT(setenv("SOCKD_BIN", bin, 1), 0, "setenv: %s", strerror(errno));
    free(bin);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_daemon_stop(&g_d);
    dnsd_stop(&g_dns);
    unlink(g_hosts);
    unlink(g_wrap);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, tc_teardown)

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

    tc_first_id = 9000;
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
