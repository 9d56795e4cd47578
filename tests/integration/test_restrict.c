/*
 * daemon.restrict: a control connection narrows its own rights (sockd-protocol.7,
 * METHODS, daemon.restrict). Each test drives the real daemon against loopback peers and checks
 * that a denied destination never sees a connection or a datagram.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

static long long
jint_or0(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

static const char *
err_reason(const json_t *err)
{
    const char *v = json_string_value(json_object_get(json_object_get(err, "data"), "reason"));
    return v ? v : "";
}

/* daemon.restrict with the given rules (NULL-terminated); the error code, 0 on success. */
static int
restrict_rules(struct sockd_client *c, const char *const *rules)
{
    json_t *arr = json_array(), *params, *res = NULL, *err = NULL;
    for (; *rules != NULL; rules++)
        json_array_append_new(arr, json_string(*rules));
    params = json_pack("{s:o}", "rules", arr);
    int rc = sockd_client_call(c, "daemon.restrict", params, &res, &err, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc >= 0, "rc >= 0");
    int code = rc == 0 ? 0 : sockd_client_error_code(err);
    json_decref(res);
    json_decref(err);
    return code;
}

/* socket.connect of a new tcp socket to 127.0.0.1:port: 0 when connected, else the error code
 * (asserting it is policy_denied). */
static int
try_connect(struct sockd_client *c, int port)
{
    long long s = h_open(c, "tcp");
    json_t *err = NULL;
    json_t *params = json_pack("{s:I,s:s,s:i}", "socket", s, "address", "127.0.0.1", "port", port),
           *res;
    int rc = sockd_client_call(c, "socket.connect", params, &res, &err, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc >= 0, "rc >= 0");
    if (rc == 1) {
        int code = sockd_client_error_code(err);
        EXPECT_TRUE(code == SOCKD_E_DENIED && strcmp(err_reason(err), "policy_denied") == 0, "%s",
                    jd(err));
        json_decref(err);
        json_decref(h_ok(c, "socket.close", "{s:I}", "socket", s));
        return code;
    }
    json_decref(res);
    json_decref(h_event(c, "socket.connected", s, H_TIMEOUT_MS));
    json_decref(h_ok(c, "socket.close", "{s:I}", "socket", s));
    return 0;
}

/* A UDP socket bound to 127.0.0.1:0; its port in *port. */
static int
udp_sink(int *port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_INT(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    EXPECT_INT(getsockname(fd, (struct sockaddr *)&sin, &sl), 0, "getsockname: %s",
               strerror(errno));
    *port = ntohs(sin.sin_port);
    return fd;
}

/* Whether a datagram reaches fd within ms. */
static int
udp_got(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char b[64];
    if (poll(&p, 1, ms) != 1)
        return 0;
    return recv(fd, b, sizeof b, MSG_DONTWAIT) >= 0;
}

/* The restriction narrows: allowed port works, another is denied and never reached. */
static void
test_restrict_connect(void **state)
{
    struct h_peer *ok = h_peer_auto(H_ECHO, 0), *no = h_peer_auto(H_ECHO, 0);
    char rule[128];
    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *c = h_client_auto(&D), *other = h_client_auto(&D);
    snprintf(rule, sizeof rule, "allow connect 127.0.0.1 port %d", ok->port);
    const char *rules[] = {rule, NULL};
    EXPECT_INT(restrict_rules(c, rules), 0, "restrict_rules(c, rules)");
    EXPECT_INT(try_connect(c, ok->port), 0, "try_connect(c, ok->port)");
    EXPECT_INT(try_connect(c, no->port), SOCKD_E_DENIED, "try_connect(c, no->port)");
    EXPECT_INT(no->accepted, 0, "no->accepted");
    /* the restriction is the connection's own: another connection of the same uid is free */
    EXPECT_INT(try_connect(other, no->port), 0, "try_connect(other, no->port)");
    h_daemon_stop(&D);
}

/* A second restrict only narrows: widening rules change nothing, narrowing ones apply. */
static void
test_restrict_narrowing_only(void **state)
{
    struct h_peer *a = h_peer_auto(H_ECHO, 0), *b = h_peer_auto(H_ECHO, 0);
    char rule[128], deny[128];
    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *c = h_client_auto(&D);
    snprintf(rule, sizeof rule, "allow connect 127.0.0.1 port %d", a->port);
    const char *first[] = {rule, NULL};
    const char *wide[] = {"allow any *", NULL};
    EXPECT_INT(restrict_rules(c, first), 0, "restrict_rules(c, first)");
    EXPECT_INT(restrict_rules(c, wide), 0, "restrict_rules(c, wide)");
    EXPECT_INT(try_connect(c, b->port), SOCKD_E_DENIED, "try_connect(c, b->port)");
    EXPECT_INT(try_connect(c, a->port), 0, "try_connect(c, a->port)");
    snprintf(deny, sizeof deny, "deny connect * port %d", a->port);
    const char *narrow[] = {deny, "allow any *", NULL};
    EXPECT_INT(restrict_rules(c, narrow), 0, "restrict_rules(c, narrow)");
    EXPECT_INT(try_connect(c, a->port), SOCKD_E_DENIED, "try_connect(c, a->port)");
    EXPECT_INT(b->accepted, 0, "b->accepted");
    /* daemon.hello reports every list, oldest first */
    json_t *h = h_ok(c, "daemon.hello", NULL), *rx = json_object_get(h, "restrict");
    EXPECT_INT(json_array_size(rx), 3, "%s", jd(h));
    EXPECT_TRUE(strcmp(json_string_value(json_array_get(json_array_get(rx, 0), 0)), rule) == 0,
                "%s", jd(h));
    EXPECT_TRUE(strcmp(json_string_value(json_array_get(json_array_get(rx, 2), 0)), deny) == 0,
                "%s", jd(h));
    json_decref(h);
    h_daemon_stop(&D);
}

/* Bad rules refuse the whole call and leave the connection as it was; limits hold. */
static void
test_restrict_bad_rules(void **state)
{
    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *c = h_client_auto(&D);
    json_t *h = h_ok(c, "daemon.hello", NULL);
    EXPECT_TRUE(json_is_array(json_object_get(h, "restrict")) &&
                    json_array_size(json_object_get(h, "restrict")) == 0,
                "%s", jd(h));
    json_decref(h);
    const char *with_uid[] = {"allow any *", "allow connect 127.0.0.1 uid 0", NULL};
    const char *rewrite[] = {"rewrite connect 127.0.0.1:1 to 127.0.0.1:2", NULL};
    const char *dflt[] = {"policy-default allow", NULL};
    const char *junk[] = {"allow teleport *", NULL};
    const char *empty[] = {"", NULL};
    EXPECT_INT(restrict_rules(c, with_uid), SOCKD_E_INVALID_PARAMS, "restrict_rules(c, with_uid)");
    EXPECT_INT(restrict_rules(c, rewrite), SOCKD_E_INVALID_PARAMS, "restrict_rules(c, rewrite)");
    EXPECT_INT(restrict_rules(c, dflt), SOCKD_E_INVALID_PARAMS, "restrict_rules(c, dflt)");
    EXPECT_INT(restrict_rules(c, junk), SOCKD_E_INVALID_PARAMS, "restrict_rules(c, junk)");
    EXPECT_INT(restrict_rules(c, empty), SOCKD_E_INVALID_PARAMS, "restrict_rules(c, empty)");
    EXPECT_INT(h_err(c, NULL, "daemon.restrict", "{s:[i]}", "rules", 1), SOCKD_E_INVALID_PARAMS,
               "daemon.restrict error code");
    EXPECT_INT(h_err(c, NULL, "daemon.restrict", "{}"), SOCKD_E_INVALID_PARAMS,
               "daemon.restrict error code");
    /* a rule longer than any real one */
    char *huge = malloc(4096);
    memset(huge, 'x', 4095);
    huge[4095] = '\0';
    memcpy(huge, "allow connect ", 14);
    const char *long_rule[] = {huge, NULL};
    EXPECT_INT(restrict_rules(c, long_rule), SOCKD_E_INVALID_PARAMS,
               "restrict_rules(c, long_rule)");
    free(huge);
    /* too many rules in one call */
    json_t *many = json_array();
    for (int i = 0; i < 65; i++)
        json_array_append_new(many, json_string("allow any *"));
    json_t *err = NULL, *p = json_pack("{s:o}", "rules", many);
    EXPECT_INT(sockd_client_call(c, "daemon.restrict", p, NULL, &err, H_TIMEOUT_MS), 1,
               "sockd_client_call");
    EXPECT_INT(sockd_client_error_code(err), SOCKD_E_INVALID_PARAMS, "%s", jd(err));
    json_decref(err);
    json_decref(p);
    /* nothing was applied by any of those */
    h = h_ok(c, "daemon.hello", NULL);
    EXPECT_INT(json_array_size(json_object_get(h, "restrict")), 0, "%s", jd(h));
    json_decref(h);
    /* at most 16 stacked restrictions */
    const char *all[] = {"allow any *", NULL};
    for (int i = 0; i < 16; i++)
        EXPECT_INT(restrict_rules(c, all), 0, "restrict_rules(c, all)");
    EXPECT_INT(restrict_rules(c, all), SOCKD_E_LIMIT, "restrict_rules(c, all)");
    h_daemon_stop(&D);
}

/* No rules: only the implicit final deny, for every action and for Unix too. */
static void
test_restrict_empty_denies_all(void **state)
{
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    int port, sink = udp_sink(&port);
    char path[400];
    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *c = h_client_auto(&D);
    const char *none[] = {NULL};
    EXPECT_INT(restrict_rules(c, none), 0, "restrict_rules(c, none)");
    EXPECT_INT(try_connect(c, peer->port), SOCKD_E_DENIED, "try_connect(c, peer->port)");
    long long u = h_open(c, "udp");
    EXPECT_INT(h_err(c, NULL, "socket.sendto", "{s:I,s:s,s:s,s:i}", "socket", u, "text", "x",
                     "address", "127.0.0.1", "port", port),
               SOCKD_E_DENIED, "socket.sendto error code");
    EXPECT_INT(h_err(c, NULL, "socket.bind", "{s:I,s:s}", "socket", u, "address", "127.0.0.1:0"),
               SOCKD_E_DENIED, "socket.bind error code");
    long long x = h_open(c, "unix");
    snprintf(path, sizeof path, "%s/nothing.sock", D.dir);
    EXPECT_INT(h_err(c, NULL, "socket.bind", "{s:I,s:s}", "socket", x, "address", path),
               SOCKD_E_DENIED, "socket.bind error code");
    EXPECT_TRUE(!udp_got(sink, 200), "udp_got(sink, 200)");
    EXPECT_INT(peer->accepted, 0, "peer->accepted");
    close(sink);
    h_daemon_stop(&D);
}

/* sendto and connected UDP: a denied destination receives nothing, an allowed one does. */
static void
test_restrict_udp(void **state)
{
    int pa, pb, a = udp_sink(&pa), b = udp_sink(&pb);
    char rule[128];
    (void)state;
    h_daemon_start(&D, NULL);
    struct sockd_client *c = h_client_auto(&D);
    /* a socket made before the restriction is judged by it too */
    long long u = h_open(c, "udp");
    snprintf(rule, sizeof rule, "allow sendto 127.0.0.1 port %d", pa);
    const char *rules[] = {rule, NULL};
    EXPECT_INT(restrict_rules(c, rules), 0, "restrict_rules(c, rules)");
    json_decref(h_ok(c, "socket.sendto", "{s:I,s:s,s:s,s:i}", "socket", u, "text", "hi", "address",
                     "127.0.0.1", "port", pa));
    EXPECT_TRUE(udp_got(a, H_TIMEOUT_MS), "udp_got(a, H_TIMEOUT_MS)");
    EXPECT_INT(h_err(c, NULL, "socket.sendto", "{s:I,s:s,s:s,s:i}", "socket", u, "text", "hi",
                     "address", "127.0.0.1", "port", pb),
               SOCKD_E_DENIED, "socket.sendto error code");
    /* connect of a datagram socket needs connect and sendto: only sendto is allowed here */
    long long v = h_open(c, "udp");
    EXPECT_INT(h_err(c, NULL, "socket.connect", "{s:I,s:s,s:i}", "socket", v, "address",
                     "127.0.0.1", "port", pa),
               SOCKD_E_DENIED, "socket.connect error code");
    EXPECT_TRUE(!udp_got(b, 200), "udp_got(b, 200)");
    close(a);
    close(b);
    h_daemon_stop(&D);
}

/*
 * A tcp socket opened by a giver and taken by a taker, one of them (the giver when
 * restrict_giver) restricted to the peer ok: the taker's connect to the peer no is denied and
 * never reaches it, its connect to ok goes through.
 */
static void
give_take_case(int restrict_giver)
{
    struct h_peer *ok = h_peer_auto(H_ECHO, 0), *no = h_peer_auto(H_ECHO, 0);
    char rule[128];
    h_daemon_start(&D, NULL);
    struct sockd_client *giver = h_client_auto(&D), *taker = h_client_auto(&D);
    snprintf(rule, sizeof rule, "allow connect 127.0.0.1 port %d", ok->port);
    const char *rules[] = {rule, NULL};
    EXPECT_INT(restrict_rules(restrict_giver ? giver : taker, rules), 0, "restrict_rules");
    long long s = h_open(giver, "tcp");
    json_t *r = h_ok(giver, "socket.give", "{s:I}", "socket", s);
    char *tok = strdup(json_string_value(json_object_get(r, "token")));
    json_decref(r);
    r = h_ok(taker, "socket.take", "{s:s}", "token", tok);
    free(tok);
    long long t = jint_or0(r, "socket");
    json_decref(r);
    json_t *err = NULL;
    EXPECT_INT(h_err(taker, &err, "socket.connect", "{s:I,s:s,s:i}", "socket", t, "address",
                     "127.0.0.1", "port", no->port),
               SOCKD_E_DENIED, "socket.connect error code");
    EXPECT_TRUE(strcmp(err_reason(err), "policy_denied") == 0, "%s", jd(err));
    json_decref(err);
    EXPECT_INT(no->accepted, 0, "no->accepted");
    if (restrict_giver) /* the taker's own sockets are not restricted */
        EXPECT_INT(try_connect(taker, no->port), 0, "try_connect(taker, no->port)");
    json_decref(h_ok(taker, "socket.connect", "{s:I,s:s,s:i}", "socket", t, "address", "127.0.0.1",
                     "port", ok->port));
    json_decref(h_event(taker, "socket.connected", t, H_TIMEOUT_MS));
    h_daemon_stop(&D);
}

/* A socket given away keeps its giver's restriction, whoever takes it. */
static void
test_restrict_give_keeps(void **state)
{
    (void)state;
    give_take_case(1);
}

/* A restricted client that takes an unrestricted client's socket is still held by its rules. */
static void
test_restrict_taker_keeps_own(void **state)
{
    (void)state;
    give_take_case(0);
}

/*
 * A client of another uid: the admin policy and the restriction both apply. The admin denies
 * nobody one port; nobody's restriction allowing it does not help, and nobody's own rules
 * deny another port the admin allows.
 */
static void
test_restrict_nobody_and_admin(void **state)
{
    struct h_peer *a = h_peer_auto(H_ECHO, 0), *b = h_peer_auto(H_ECHO, 0),
                  *c3 = h_peer_auto(H_ECHO, 0);
    char conf[256], ra[128], rc[128];
    (void)state;
    snprintf(conf, sizeof conf, "deny connect 127.0.0.1 port %d uid %d\n", a->port, H_NOBODY);
    h_daemon_start(&D, conf);
    struct sockd_client *nb = h_client_nobody(&D);
    snprintf(ra, sizeof ra, "allow connect 127.0.0.1 port %d", a->port);
    snprintf(rc, sizeof rc, "allow connect 127.0.0.1 port %d", c3->port);
    const char *rules[] = {ra, rc, NULL};
    EXPECT_INT(restrict_rules(nb, rules), 0, "restrict_rules(nb, rules)");
    EXPECT_INT(try_connect(nb, a->port), SOCKD_E_DENIED,
               "try_connect(nb, a->port)"); /* the admin says no */
    EXPECT_INT(try_connect(nb, b->port), SOCKD_E_DENIED,
               "try_connect(nb, b->port)"); /* the restriction says no */
    EXPECT_INT(try_connect(nb, c3->port), 0, "try_connect(nb, c3->port)"); /* both say yes */
    EXPECT_INT(a->accepted, 0, "a->accepted");
    EXPECT_INT(b->accepted, 0, "b->accepted");
    sockd_client_close(nb);
    h_daemon_stop(&D);
}

/* daemon.check answers as the calls would be judged, and does nothing. */
static void
test_check(void **state)
{
    char conf[256];
    (void)state;
    snprintf(conf, sizeof conf, "deny sendto 127.0.0.2 uid %d\n", H_NOBODY);
    h_daemon_start(&D, conf);
    struct sockd_client *c = h_client_auto(&D), *nb = h_client_nobody(&D);
    json_t *r = h_ok(c, "daemon.check", "{s:s,s:s}", "action", "sendto", "address", "127.0.0.2:53");
    EXPECT_TRUE(json_is_true(json_object_get(r, "allowed")), "%s", jd(r));
    json_decref(r);
    /* the admin's rule for nobody */
    r = h_ok(nb, "daemon.check", "{s:s,s:s}", "action", "sendto", "address", "127.0.0.2:53");
    EXPECT_TRUE(json_is_false(json_object_get(r, "allowed")), "%s", jd(r));
    json_decref(r);
    /* the restriction */
    const char *rules[] = {"allow sendto 127.0.0.1 port 53", NULL};
    EXPECT_INT(restrict_rules(nb, rules), 0, "restrict_rules(nb, rules)");
    r = h_ok(nb, "daemon.check", "{s:s,s:s,s:i}", "action", "sendto", "address", "127.0.0.1",
             "port", 53);
    EXPECT_TRUE(json_is_true(json_object_get(r, "allowed")), "%s", jd(r));
    json_decref(r);
    r = h_ok(nb, "daemon.check", "{s:s,s:s}", "action", "connect", "address", "127.0.0.1:53");
    EXPECT_TRUE(json_is_false(json_object_get(r, "allowed")), "%s", jd(r));
    json_decref(r);
    r = h_ok(nb, "daemon.check", "{s:s,s:s}", "action", "sendto", "address", "[::1]:53");
    EXPECT_TRUE(json_is_false(json_object_get(r, "allowed")), "%s", jd(r));
    json_decref(r);
    /* malformed */
    EXPECT_INT(
        h_err(c, NULL, "daemon.check", "{s:s,s:s}", "action", "fly", "address", "127.0.0.1:1"),
        SOCKD_E_INVALID_PARAMS, "daemon.check error code");
    EXPECT_INT(
        h_err(c, NULL, "daemon.check", "{s:s,s:s}", "action", "sendto", "address", "localhost:53"),
        SOCKD_E_INVALID_PARAMS, "daemon.check error code");
    EXPECT_INT(
        h_err(c, NULL, "daemon.check", "{s:s,s:s}", "action", "sendto", "address", "127.0.0.1"),
        SOCKD_E_INVALID_PARAMS, "daemon.check error code");
    EXPECT_INT(
        h_err(c, NULL, "daemon.check", "{s:s,s:s}", "action", "connect", "address", "/run/x.sock"),
        SOCKD_E_INVALID_PARAMS, "daemon.check error code");
    sockd_client_close(nb);
    h_daemon_stop(&D);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_restrict_connect, teardown),
        cmocka_unit_test_teardown(test_restrict_narrowing_only, teardown),
        cmocka_unit_test_teardown(test_restrict_bad_rules, teardown),
        cmocka_unit_test_teardown(test_restrict_empty_denies_all, teardown),
        cmocka_unit_test_teardown(test_restrict_udp, teardown),
        cmocka_unit_test_teardown(test_restrict_give_keeps, teardown),
        cmocka_unit_test_teardown(test_restrict_taker_keeps_own, teardown),
        cmocka_unit_test_teardown(test_restrict_nobody_and_admin, teardown),
        cmocka_unit_test_teardown(test_check, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
