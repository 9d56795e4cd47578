/*
 * Hostile clients and identity: the identity policy judges travels with the socket, per-uid
 * budgets no number of connections multiplies (pending connections included), ports no other
 * client can share
 * (sockd(8) SECURITY MODEL).
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

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "dnsd.h"
#include "harness.h"
#include "tc.h"

static struct h_daemon D;
static struct dnsd g_dns; /* large: static, never on the stack */

/* Names dnsd answers (every one 127.0.0.1); the slow one after SLOW_MS. */
#define N_FAST "fast.id.test"
#define N_SLOW "slow.id.test"
#define SLOW_MS 1500

/* Clients of other uids made by a test, closed by the teardown even when it fails half-way. */
#define NOBODY_MAX 64
static struct sockd_client *g_nobody[NOBODY_MAX];

/* A client of uid/gid 65534, tracked for the teardown. */
static struct sockd_client *
nobody(void)
{
    for (int i = 0; i < NOBODY_MAX; i++)
        if (g_nobody[i] == NULL)
            return g_nobody[i] = h_client_nobody(&D);
    fail_msg("more than %d nobody clients", NOBODY_MAX);
    return NULL;
}

/* Close a tracked nobody client now. */
static void
nobody_close(struct sockd_client *c)
{
    for (int i = 0; i < NOBODY_MAX; i++)
        if (g_nobody[i] == c)
            g_nobody[i] = NULL;
    sockd_client_close(c);
}

static int
teardown(void **state)
{
    (void)state;
    for (int i = 0; i < NOBODY_MAX; i++)
        if (g_nobody[i] != NULL)
            nobody_close(g_nobody[i]);
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

/* Start the daemon with conf_text after a "resolver" line naming dnsd. */
static void
start(const char *conf_text)
{
    char conf[2048];
    snprintf(conf, sizeof conf, "resolver 127.0.0.1:%u\n%s", g_dns.port, conf_text);
    h_daemon_start(&D, conf);
}

/* Whether the daemon's log holds needle (the first 64 KiB of it). */
static int
log_has(const char *needle)
{
    char buf[65536];
    FILE *f = fopen(D.log, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

/* An integer member of an object (0 when missing). */
static long long
jint_or0(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

/* The string data.limit of an error object ("" when missing). */
static const char *
err_limit(const json_t *err)
{
    const char *v = json_string_value(json_object_get(json_object_get(err, "data"), "limit"));
    return v ? v : "";
}

/* Open a socket of type on c; its handle. */
static long long
client_open_type(struct sockd_client *c, const char *type)
{
    json_t *r = h_ok(c, "socket.open", "{s:s}", "type", type);
    long long s = jint_or0(r, "socket");
    json_decref(r);
    return s;
}

/*
 * One batch line: socket.connect of s to name:port, then socket.give of s. Returns the token
 * (malloc'ed); asserts the connect was accepted and the give answered a token.
 */
static char *
connect_give(struct sockd_client *c, long long s, const char *name, int port)
{
    char line[512];
    snprintf(line, sizeof line,
             "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.connect\",\"params\":"
             "{\"socket\":%lld,\"address\":\"%s\",\"port\":%d}},"
             "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.give\",\"params\":"
             "{\"socket\":%lld,\"timeout_ms\":60000}}]\n",
             s, name, port, s);
    h_send_raw(c, line);
    json_t *r = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_array(r) && json_array_size(r) == 2, "%s", jd(r));
    EXPECT_TRUE(json_object_get(json_array_get(r, 0), "result") != NULL, "%s", jd(r));
    const char *tok = json_string_value(
        json_object_get(json_object_get(json_array_get(r, 1), "result"), "token"));
    EXPECT_TRUE(tok != NULL, "%s", jd(r));
    char *t = strdup(tok);
    json_decref(r);
    return t;
}

/*
 * Attack (item 2): connect to a host name and give the socket away in the same batch. The
 * lookup completes while the socket waits unowned; the old daemon then had nobody to judge and
 * skipped the uid rule. The socket keeps its maker's identity: the connection is denied, the
 * peer never sees it, the daemon logs the denial with uid 65534.
 */
static void
test_id_give_parked_denied(void **state)
{
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    char conf[256];
    (void)state;
    snprintf(conf, sizeof conf, "deny connect 127.0.0.0/8 uid %d\n", H_NOBODY);
    start(conf);
    struct sockd_client *nb = nobody();
    long long s = client_open_type(nb, "tcp");
    char *tok = connect_give(nb, s, N_FAST, peer->port);
    long long end = h_now_ms() + H_TIMEOUT_MS;
    while (!log_has("policy: connect") && peer->accepted == 0 && h_now_ms() < end)
        h_sleep_ms(10);
    EXPECT_INT(peer->accepted, 0, "peer->accepted");
    EXPECT_TRUE(log_has("denied for a given-away socket (uid 65534 pid "),
                "log_has(\"denied for a given-away socket (uid 65534 pid \")");
    /* the denial closed the parked socket: its token is gone */
    EXPECT_INT(h_err(nb, NULL, "socket.take", "{s:s}", "token", tok), -32001,
               "socket.take error code");
    free(tok);
    h_daemon_stop(&D);
}

/*
 * Attack (item 2): nobody gives a connecting socket to root (root may take any socket), hoping
 * the lookup finishes under root's name. The socket is still nobody's: it ends policy_denied
 * at root's client and the peer never sees a connection.
 */
static void
test_id_take_by_root_keeps_identity(void **state)
{
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    char conf[256];
    (void)state;
    snprintf(conf, sizeof conf, "deny connect 127.0.0.0/8 uid %d\n", H_NOBODY);
    start(conf);
    struct sockd_client *nb = nobody(), *root = h_client_auto(&D);
    long long s = client_open_type(nb, "tcp");
    char *tok = connect_give(nb, s, N_SLOW, peer->port);
    json_t *r = h_ok(root, "socket.take", "{s:s}", "token", tok);
    free(tok);
    long long t = jint_or0(r, "socket");
    EXPECT_TRUE(t > 0 && strcmp(json_string_value(json_object_get(r, "state")), "connecting") == 0,
                "%s", jd(r));
    json_decref(r);
    json_t *ev = h_event(root, "socket.closed", t, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(ev, "reason")), "policy_denied") == 0,
                "%s", jd(ev));
    json_decref(ev);
    EXPECT_INT(peer->accepted, 0, "peer->accepted");
    /* root's own connection to the same peer is allowed */
    EXPECT_TRUE(h_connect_tcp(root, peer->port) > 0, "h_connect_tcp(root, peer->port) > 0");
    h_daemon_stop(&D);
}

/*
 * Attack (item 2): a rewrite meant for nobody's connections is skipped when the lookup
 * completes while the socket is parked. The rewrite applies: the connection reaches peer B,
 * never the A it asked for.
 */
static void
test_id_give_parked_rewritten(void **state)
{
    struct h_peer *a = h_peer_auto(H_ECHO, 0), *b = h_peer_auto(H_ECHO, 0);
    char conf[256];
    (void)state;
    snprintf(conf, sizeof conf, "rewrite connect 127.0.0.1:%d to 127.0.0.1:%d uid %d\n", a->port,
             b->port, H_NOBODY);
    start(conf);
    struct sockd_client *nb = nobody();
    long long s = client_open_type(nb, "tcp");
    char *tok = connect_give(nb, s, N_FAST, a->port);
    long long end = h_now_ms() + H_TIMEOUT_MS;
    while (a->accepted + b->accepted == 0 && h_now_ms() < end)
        h_sleep_ms(10);
    EXPECT_INT(a->accepted, 0, "a->accepted");
    EXPECT_INT(b->accepted, 1, "b->accepted");
    json_t *r = h_ok(nb, "socket.take", "{s:s}", "token", tok);
    free(tok);
    EXPECT_TRUE(json_object_get(r, "rewritten_to") != NULL, "%s", jd(r));
    json_decref(r);
    h_daemon_stop(&D);
}

/* A UDP socket of the test on 127.0.0.1 (non-blocking); its port in *port. */
static int
udp_peer(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_INT(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&sin, &len), 0, "getsockname: %s",
               strerror(errno));
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Datagrams waiting on fd now (read and dropped). */
static int
udp_drain(int fd)
{
    char buf[2048];
    int n = 0;
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) >= 0)
        n++;
    return n;
}

/*
 * Attack (item 8): `deny sendto` is dodged by connecting the UDP socket and using send. A
 * datagram socket's connect is checked as connect and as sendto: nobody's connect is denied
 * (-32004 for an address, socket.closed policy_denied after a host-name lookup) and no
 * datagram reaches the peer; root, whom the rule does not name, still connects and sends.
 */
static void
test_id_udp_connect_is_sendto(void **state)
{
    char conf[256], addr[64];
    int port, fd = udp_peer(&port);
    (void)state;
    snprintf(conf, sizeof conf, "deny sendto 127.0.0.0/8 port %d uid %d\n", port, H_NOBODY);
    start(conf);
    struct sockd_client *nb = nobody(), *root = h_client_auto(&D);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    long long s = client_open_type(nb, "udp");
    EXPECT_INT(
        h_err(nb, NULL, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s, "address", addr),
        -32004, "socket.connect error code");
    EXPECT_INT(h_err(nb, NULL, "socket.send", "{s:I,s:s}", "socket", (json_int_t)s, "text", "leak"),
               -32002, "socket.send error code");
    long long s2 = client_open_type(nb, "udp");
    json_decref(h_ok(nb, "socket.connect", "{s:I,s:s,s:i}", "socket", (json_int_t)s2, "address",
                     N_FAST, "port", port));
    json_t *ev = h_event(nb, "socket.closed", s2, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(ev, "reason")), "policy_denied") == 0,
                "%s", jd(ev));
    json_decref(ev);
    /* root: connected, one datagram; once it is there, nobody's never came */
    long long r = client_open_type(root, "udp");
    json_decref(
        h_ok(root, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)r, "address", addr));
    json_decref(h_event(root, "socket.connected", r, H_TIMEOUT_MS));
    json_decref(h_ok(root, "socket.send", "{s:I,s:s}", "socket", (json_int_t)r, "text", "ok"));
    json_decref(h_event(root, "socket.sent", r, H_TIMEOUT_MS));
    char buf[64];
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    EXPECT_INT(poll(&pfd, 1, H_TIMEOUT_MS), 1, "poll: %s", strerror(errno));
    EXPECT_INT(recv(fd, buf, sizeof buf, 0), 2, "recv: %s", strerror(errno));
    EXPECT_INT(udp_drain(fd), 0, "udp_drain(fd)");
    close(fd);
    h_daemon_stop(&D);
}

/* socket.bind of s to 127.0.0.1:port (port 0: any); the bound port. */
static int
bind_local(struct sockd_client *c, long long s, int port)
{
    json_t *r = h_ok(c, "socket.bind", "{s:I,s:s,s:i}", "socket", (json_int_t)s, "address",
                     "127.0.0.1", "port", port);
    int got = (int)jint_or0(json_object_get(r, "local"), "port");
    json_decref(r);
    return got;
}

/* A socket.bind that must fail as a port in use: -32603, bind_failed, EADDRINUSE. */
static void
bind_refused(struct sockd_client *c, long long s, const char *address, int port)
{
    json_t *err = NULL;
    int code = h_err(c, &err, "socket.bind", "{s:I,s:s,s:i}", "socket", (json_int_t)s, "address",
                     address, "port", port);
    json_t *data = json_object_get(err, "data");
    EXPECT_TRUE(code == -32603 && jint_or0(data, "errno") == EADDRINUSE &&
                    strcmp(json_string_value(json_object_get(data, "reason")), "bind_failed") == 0,
                "%s", jd(err));
    json_decref(err);
}

/* Send n datagrams "d<i>" from the test to 127.0.0.1:port. */
static void
udp_send_n(int port, int n)
{
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_port = htons((unsigned short)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    for (int i = 0; i < n; i++) {
        char b[16];
        int len = snprintf(b, sizeof b, "d%d", i);
        EXPECT_INT(sendto(fd, b, (size_t)len, 0, (struct sockaddr *)&to, sizeof to), len,
                   "sendto: %s", strerror(errno));
    }
    close(fd);
}

/* Receive n datagrams on s (one recv each): "d0".."d<n-1>", in order. */
static void
recv_n(struct sockd_client *c, long long s, int n)
{
    for (int i = 0; i < n; i++) {
        char want[16];
        size_t len;
        snprintf(want, sizeof want, "d%d", i);
        json_decref(h_ok(c, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)s, "length", 100));
        json_t *ev = h_event(c, "socket.received", s, H_TIMEOUT_MS);
        unsigned char *got = h_unb64(json_string_value(json_object_get(ev, "data")), &len);
        EXPECT_TRUE(len == strlen(want) && memcmp(got, want, len) == 0, "%s", jd(ev));
        free(got);
        json_decref(ev);
    }
}

/*
 * Attack (item 7): another client binds the UDP port a client uses and reads its datagrams
 * (the old daemon set SO_REUSEADDR on every UDP bind). Nobody's bind of root's address, and
 * of the wildcard on that port, is EADDRINUSE; root gets every datagram sent there.
 */
static void
test_id_udp_port_not_shared(void **state)
{
    (void)state;
    start("");
    struct sockd_client *root = h_client_auto(&D), *nb = nobody();
    long long a = client_open_type(root, "udp");
    int port = bind_local(root, a, 0);
    long long b = client_open_type(nb, "udp");
    bind_refused(nb, b, "127.0.0.1", port);
    bind_refused(nb, b, "0.0.0.0", port);
    udp_send_n(port, 10);
    recv_n(root, a, 10);
    h_daemon_stop(&D);
}

/* share-udp-ports yes: the administrator allows sharing, and the second bind succeeds. */
static void
test_id_udp_port_shared_when_allowed(void **state)
{
    (void)state;
    start("share-udp-ports yes\n");
    struct sockd_client *root = h_client_auto(&D), *nb = nobody();
    long long a = client_open_type(root, "udp");
    int port = bind_local(root, a, 0);
    long long b = client_open_type(nb, "udp");
    EXPECT_INT(bind_local(nb, b, port), port, "bind_local(nb, b, port)");
    h_daemon_stop(&D);
}

/* A dtls context of c (verify off), with a server certificate when server. */
static long long
dtls_ctx(struct sockd_client *c, int server)
{
    json_t *r = h_ok(c, "context.create", "{s:b,s:b}", "dtls", 1, "verify", 0);
    long long ctx = jint_or0(r, "context");
    json_decref(r);
    if (server)
        json_decref(h_ok(c, "context.generate_certificate", "{s:I,s:s}", "context", (json_int_t)ctx,
                         "role", "server"));
    return ctx;
}

/* Open a dtls socket of c on ctx. */
static long long
open_dtls(struct sockd_client *c, long long ctx)
{
    json_t *r = h_ok(c, "socket.open", "{s:s,s:I}", "type", "dtls", "context", (json_int_t)ctx);
    long long s = jint_or0(r, "socket");
    json_decref(r);
    return s;
}

/*
 * Attack (item 7): a DTLS listener's socket carries SO_REUSEPORT (its per-peer sockets bind
 * the same port), and the kernel lets every socket of the daemon's uid with that flag join
 * it: nobody's DTLS bind onto root's listener port would take a share of its peers'
 * datagrams. Refused (EADDRINUSE); root's peer completes its handshake and every datagram
 * reaches root.
 */
static void
test_id_dtls_port_not_shared(void **state)
{
    (void)state;
    start("");
    struct sockd_client *root = h_client_auto(&D), *nb = nobody();
    long long sctx = dtls_ctx(root, 1);
    long long l = open_dtls(root, sctx);
    int port = bind_local(root, l, 0);
    json_decref(
        h_ok(root, "socket.listen", "{s:I,s:b}", "socket", (json_int_t)l, "auto_accept", 1));
    long long nctx = dtls_ctx(nb, 1);
    long long b = open_dtls(nb, nctx);
    bind_refused(nb, b, "127.0.0.1", port);
    bind_refused(nb, b, "0.0.0.0", port);
    /* root's own peer: handshake, then ten datagrams, all at root's accepted socket */
    long long cctx = dtls_ctx(root, 0), c = open_dtls(root, cctx);
    json_decref(h_ok(root, "socket.connect", "{s:I,s:s,s:i}", "socket", (json_int_t)c, "address",
                     "127.0.0.1", "port", port));
    json_t *ev = h_event(root, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_TRUE(jint_or0(ev, "listener") == l, "%s", jd(ev));
    long long acc = jint_or0(ev, "socket");
    json_decref(ev);
    json_decref(h_event(root, "socket.connected", c, H_TIMEOUT_MS));
    for (int i = 0; i < 10; i++) {
        char t[16];
        snprintf(t, sizeof t, "d%d", i);
        json_decref(h_ok(root, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)c, "text", t,
                         "notify", 0));
    }
    recv_n(root, acc, 10);
    h_daemon_stop(&D);
}

/* A call whose outcome the test inspects: 0 result (*res), 1 error (*err), else failure. */
static int
call(struct sockd_client *c, const char *method, json_t *params, json_t **res, json_t **err)
{
    *res = *err = NULL;
    int rc = sockd_client_call(c, method, params, res, err, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
    return rc;
}

/* socket.open {type:"tcp"} that must fail with -32003 and data.limit `limit`. */
static void
open_refused(struct sockd_client *c, const char *limit)
{
    json_t *err = NULL;
    EXPECT_INT(h_err(c, &err, "socket.open", "{s:s}", "type", "tcp"), -32003,
               "socket.open error code");
    EXPECT_TRUE(strcmp(err_limit(err), limit) == 0, "%s", jd(err));
    json_decref(err);
}

/*
 * Attack (item 6c): one uid opens control connection after control connection, each with its
 * own per-client budgets. max-clients-per-uid refuses the one past the cap with -32003
 * naming the limit; root (another uid) still connects; a closed connection frees its place.
 */
static void
test_id_clients_per_uid(void **state)
{
    struct sockd_client *nb[4];
    (void)state;
    start("max-clients-per-uid 4\n");
    struct sockd_client *root = h_client_auto(&D);
    for (int i = 0; i < 4; i++) {
        nb[i] = nobody();
        json_decref(h_ok(nb[i], "daemon.ping", NULL));
    }
    struct sockd_client *extra = nobody();
    json_t *m = h_read(extra, H_TIMEOUT_MS);
    json_t *err = json_object_get(m, "error");
    EXPECT_TRUE(jint_or0(err, "code") == -32003 &&
                    strcmp(err_limit(err), "max-clients-per-uid") == 0,
                "%s", jd(m));
    json_decref(m);
    nobody_close(extra);
    struct sockd_client *root2 = h_client_auto(&D);
    json_decref(h_ok(root2, "daemon.ping", NULL));
    nobody_close(nb[0]);
    json_decref(h_wait_clients(root, 5)); /* root, root2, three of nobody's */
    json_decref(h_ok(nobody(), "daemon.ping", NULL));
    h_daemon_stop(&D);
}

/*
 * Attack (item 6c): socket.give parks a socket outside every client's count, so one client
 * with max-sockets-per-client 4 parked any number of sockets, which outlived it. Parked
 * sockets count for the giver's uid: past max-sockets-per-uid no connection of that uid
 * opens another, also after the giver left; root is not affected; a parked socket that
 * times out gives its place back.
 */
static void
test_id_give_parking_per_uid(void **state)
{
    char *tok[10];
    json_t *res, *err;
    int parked = 0;
    (void)state;
    start("max-sockets-per-client 4\nmax-sockets-per-uid 10\n");
    struct sockd_client *root = h_client_auto(&D), *giver = nobody();
    for (int i = 0; i < 50; i++) {
        if (call(giver, "socket.open", json_pack("{s:s}", "type", "tcp"), &res, &err) == 1) {
            EXPECT_TRUE(jint_or0(err, "code") == -32003 &&
                            !strcmp(err_limit(err), "max-sockets-per-uid"),
                        "%s", jd(err));
            json_decref(err);
            break;
        }
        long long s = jint_or0(res, "socket");
        json_decref(res);
        json_t *r =
            h_ok(giver, "socket.give", "{s:I,s:i}", "socket", (json_int_t)s, "timeout_ms", 60000);
        EXPECT_TRUE(parked < 10, "parked < 10");
        tok[parked++] = strdup(json_string_value(json_object_get(r, "token")));
        json_decref(r);
    }
    EXPECT_INT(parked, 10, "parked");
    struct sockd_client *other = nobody();
    open_refused(other, "max-sockets-per-uid");
    json_decref(h_ok(root, "socket.open", "{s:s}", "type", "tcp")); /* another uid's budget */
    nobody_close(giver);
    json_decref(h_wait_clients(root, 2));
    open_refused(other, "max-sockets-per-uid"); /* the parked ones outlive their giver */
    /* one taken back and closed: a place is free; parked again with a short timeout */
    json_t *r = h_ok(other, "socket.take", "{s:s}", "token", tok[0]);
    json_decref(h_ok(other, "socket.close", "{s:I}", "socket", (json_int_t)jint_or0(r, "socket")));
    json_decref(r);
    r = h_ok(other, "socket.open", "{s:s}", "type", "tcp");
    json_decref(h_ok(other, "socket.give", "{s:I,s:i}", "socket", (json_int_t)jint_or0(r, "socket"),
                     "timeout_ms", 200));
    json_decref(r);
    open_refused(other, "max-sockets-per-uid");
    /* once that one timed out, its place is free again (bounded wait) */
    long long end = h_now_ms() + H_TIMEOUT_MS;
    int rc;
    while ((rc = call(other, "socket.open", json_pack("{s:s}", "type", "tcp"), &res, &err)) == 1 &&
           h_now_ms() < end) {
        json_decref(err);
        h_sleep_ms(20);
    }
    EXPECT_INT(rc, 0, "rc");
    json_decref(res);
    for (int i = 0; i < parked; i++)
        free(tok[i]);
    h_daemon_stop(&D);
}

/*
 * Attack (item 6c): a pending connection (socket.incoming, not yet accepted) holds one of the
 * daemon's descriptors, and every listener may hold max-pending-accepts of them, so one uid's
 * listeners could take all the daemon's descriptors. Pending connections count as the user's
 * sockets: with max-sockets-per-uid 8, a uid-65534 listener with 20 connections waiting is told
 * of 7 (the listener is the 8th) and the daemon holds no more descriptors than those; the rest
 * wait in the kernel's backlog, not lost: a rejected one frees a place that the next takes
 * (within the second a paused listener waits), and accepting a pending one needs no new place.
 * Root's sockets are not affected.
 */
static void
test_id_pending_per_uid(void **state)
{
    enum { CONNS = 20, CAP = 8 };
    int fds[CONNS];
    long long pend[CAP];
    (void)state;
    start("max-sockets-per-uid 8\n");
    struct sockd_client *root = h_client_auto(&D), *nb = nobody();
    json_t *r = h_ok(nb, "socket.open", "{s:s}", "type", "tcp");
    json_int_t l = jint_or0(r, "socket");
    json_decref(r);
    r = h_ok(nb, "socket.bind", "{s:I,s:s}", "socket", l, "address", "127.0.0.1:0");
    int port = (int)jint_or0(json_object_get(r, "local"), "port");
    json_decref(r);
    json_decref(h_ok(nb, "socket.listen", "{s:I,s:i}", "socket", l, "backlog", 64));
    int fd0 = h_count_fds(D.pid);
    for (int i = 0; i < CONNS; i++) {
        fds[i] = h_tcp_connect(port);
        EXPECT_TRUE(fds[i] >= 0, "connect %d", i);
    }
    for (int i = 0; i < CAP - 1; i++) {
        json_t *ev = h_event(nb, "socket.incoming", l, H_TIMEOUT_MS);
        pend[i] = jint_or0(ev, "pending");
        json_decref(ev);
    }
    h_no_event(nb, 300);
    int grew = h_count_fds(D.pid) - fd0;
    fprintf(stderr,
            "# %d connections to a listener of a uid with 8 sockets: %d pending, daemon "
            "fds +%d\n",
            CONNS, CAP - 1, grew);
    EXPECT_TRUE(grew <= CAP - 1, "daemon descriptors grew by %d", grew);
    open_refused(nb, "max-sockets-per-uid");
    json_decref(h_ok(root, "socket.open", "{s:s}", "type", "tcp")); /* another uid's budget */
    r = h_ok(nb, "socket.accept", "{s:I,s:I}", "socket", l, "pending", (json_int_t)pend[0]);
    json_decref(r);
    json_decref(h_event(nb, "socket.accepted", 0, H_TIMEOUT_MS));
    json_decref(
        h_ok(nb, "socket.reject", "{s:I,s:I}", "socket", l, "pending", (json_int_t)pend[1]));
    json_decref(h_event(nb, "socket.incoming", l, 3000)); /* the next from the backlog */
    h_no_event(nb, 300);
    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    h_daemon_stop(&D);
}

/* Sum of a socket.info field over the sockets of c. */
static long long
sum_info(struct sockd_client *c, const long long *s, int n, const char *field)
{
    long long sum = 0;
    for (int i = 0; i < n; i++) {
        json_t *r = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s[i]);
        sum += jint_or0(r, field);
        json_decref(r);
    }
    return sum;
}

/*
 * Attack (item 6c): two connections of one uid each fill send queues towards a peer that
 * never reads; per-socket and per-client caps multiply with every socket and connection.
 * max-buffer-per-uid 8M holds all of them together: sends past it answer -32003 naming
 * max-buffer-per-uid, the queues sum to at most 8M, the daemon's peak memory grows by less
 * than the 32M the per-socket caps alone allow; root's client still queues.
 */
static void
test_id_buffer_per_uid_send(void **state)
{
    enum { NS = 4 };
    struct h_peer *sink = h_peer_auto(H_SINK, 0);
    struct sockd_client *x[2];
    long long s[2][NS];
    int full[2][NS] = {{0}}, nfull = 0, budget_hit = 0;
    (void)state;
    start("max-buffer-per-uid 8M\nmax-send-buffer 4M\n");
    struct sockd_client *root = h_client_auto(&D);
    for (int k = 0; k < 2; k++) {
        x[k] = nobody();
        for (int i = 0; i < NS; i++) {
            s[k][i] = h_connect_tcp(x[k], sink->port);
            json_decref(h_ok(x[k], "socket.setopt", "{s:I,s:i}", "socket", (json_int_t)s[k][i],
                             "sndbuf", 4096)); /* the kernel holds little: the daemon queues */
        }
    }
    long hwm0 = h_hwm_kib(D.pid);
    unsigned char *zeros = calloc(1, 256 * 1024);
    char *chunk = h_b64(zeros, 256 * 1024);
    free(zeros);
    for (int round = 0; round < 40 && nfull < 2 * NS; round++)
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < NS; i++) {
                json_t *res, *err;
                if (full[k][i])
                    continue;
                if (call(x[k], "socket.send",
                         json_pack("{s:I,s:s,s:b}", "socket", (json_int_t)s[k][i], "data", chunk,
                                   "notify", 0),
                         &res, &err) == 0) {
                    json_decref(res);
                    continue;
                }
                EXPECT_TRUE(jint_or0(err, "code") == -32003, "%s", jd(err));
                budget_hit += strcmp(err_limit(err), "max-buffer-per-uid") == 0;
                json_decref(err);
                full[k][i] = 1;
                nfull++;
            }
    /* root's budget is its own */
    long long r = h_connect_tcp(root, sink->port);
    json_decref(h_ok(root, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)r, "data", chunk,
                     "notify", 0));
    free(chunk);
    EXPECT_INT(nfull, 2 * NS, "nfull");
    EXPECT_TRUE(budget_hit > 0, "budget_hit > 0");
    long long queued =
        sum_info(x[0], s[0], NS, "send_buffered") + sum_info(x[1], s[1], NS, "send_buffered");
    long grown = h_hwm_kib(D.pid) - hwm0;
    fprintf(stderr,
            "  8 sockets of two uid-65534 clients: %lld bytes queued, daemon VmHWM +%ld KiB\n",
            queued, grown);
    EXPECT_TRUE(queued <= 8 * MIB, "queued <= 8 * MIB");
    if (h_asan_daemon(D.pid))
        fprintf(stderr, "  (AddressSanitizer daemon: the VmHWM bound is not checked)\n");
    else
        EXPECT_TRUE(grown < 20 * 1024,
                    "grown < 20 * 1024"); /* the per-socket caps alone allow 32M */
    h_daemon_stop(&D);
}

/*
 * Attack (item 6c): many sockets of one uid receive from peers while the client never reads;
 * each socket's read-ahead multiplies with the number of sockets. At max-buffer-per-uid the
 * daemon stops reading that uid's sockets instead of growing, and every byte still arrives
 * once the client reads them (the paused sockets are woken as the budget drains).
 */
static void
test_id_buffer_per_uid_read(void **state)
{
    enum { NS = 8, EACH = 192 * 1024 };
    static char greeting[EACH + 1]; /* each peer connection writes it, then echoes */
    struct h_peer *peer = h_peer_auto(H_GREET, 0);
    long long s[NS];
    (void)state;
    for (int i = 0; i < EACH; i++)
        greeting[i] = (char)('a' + i % 26);
    peer->greeting = greeting;
    start("max-buffer-per-uid 1M\n");
    struct sockd_client *nb = nobody();
    for (int i = 0; i < NS; i++)
        s[i] = h_connect_tcp(nb, peer->port);
    /* 1.5M arrive unread: wait (bounded) until the budget's worth is buffered */
    long long end = h_now_ms() + H_TIMEOUT_MS, held;
    while ((held = sum_info(nb, s, NS, "recv_buffered")) < MIB && h_now_ms() < end)
        h_sleep_ms(20);
    json_decref(h_ok(nb, "daemon.ping", NULL));
    held = sum_info(nb, s, NS, "recv_buffered");
    if (held != MIB)
        fprintf(stderr, "%lld bytes buffered for a 1M budget\n", held);
    EXPECT_TRUE(held == MIB, "held == MIB");
    /* the client reads every socket at once (a stream recv each): all bytes arrive, in order,
     * as the drained budget wakes the sockets that stopped reading */
    size_t got[NS] = {0}, total = 0;
    for (int i = 0; i < NS; i++)
        json_decref(h_ok(nb, "socket.recv", "{s:I,s:i,s:b}", "socket", (json_int_t)s[i], "length",
                         65536, "stream", 1));
    while (total < (size_t)NS * EACH) {
        json_t *m = sockd_client_next_event(nb, H_TIMEOUT_MS);
        EXPECT_TRUE(m != NULL, "%s", jd(m));
        json_t *p = json_object_get(m, "params");
        const char *method = json_string_value(json_object_get(m, "method"));
        EXPECT_TRUE(method != NULL && strcmp(method, "socket.received") == 0, "%s", jd(m));
        int i = 0;
        while (i < NS && s[i] != jint_or0(p, "socket"))
            i++;
        EXPECT_TRUE(i < NS, "%s", jd(m));
        size_t n;
        unsigned char *b = h_unb64(json_string_value(json_object_get(p, "data")), &n);
        EXPECT_TRUE(b != NULL && got[i] + n <= EACH && memcmp(b, greeting + got[i], n) == 0, "%s",
                    jd(m));
        free(b);
        got[i] += n;
        total += n;
        json_decref(m);
    }
    h_daemon_stop(&D);
}

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (dnsd_start(&g_dns) != 0) {
        fprintf(stderr, "dnsd_start: %s\n", strerror(errno));
        return -1;
    }
    if (dnsd_add_a(&g_dns, N_FAST, "127.0.0.1") != 0 ||
        dnsd_add_a(&g_dns, N_SLOW, "127.0.0.1") != 0 ||
        dnsd_set_delay(&g_dns, N_SLOW, SLOW_MS) != 0)
        return -1;
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    dnsd_stop(&g_dns);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_id_give_parked_denied, teardown),
        cmocka_unit_test_teardown(test_id_take_by_root_keeps_identity, teardown),
        cmocka_unit_test_teardown(test_id_give_parked_rewritten, teardown),
        cmocka_unit_test_teardown(test_id_udp_connect_is_sendto, teardown),
        cmocka_unit_test_teardown(test_id_udp_port_not_shared, teardown),
        cmocka_unit_test_teardown(test_id_udp_port_shared_when_allowed, teardown),
        cmocka_unit_test_teardown(test_id_dtls_port_not_shared, teardown),
        cmocka_unit_test_teardown(test_id_clients_per_uid, teardown),
        cmocka_unit_test_teardown(test_id_give_parking_per_uid, teardown),
        cmocka_unit_test_teardown(test_id_pending_per_uid, teardown),
        cmocka_unit_test_teardown(test_id_buffer_per_uid_send, teardown),
        cmocka_unit_test_teardown(test_id_buffer_per_uid_read, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
