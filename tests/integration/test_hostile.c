/*
 * Hostile clients: addresses that are not UTF-8, numbers that are not addresses, log lines,
 * hand-off of piped sockets, the warning of an open daemon (sockd(8) SECURITY MODEL).
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "harness.h"

static struct h_daemon D;

static int
teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

/*
 * The harness itself: a client of uid 65534 is seen as that uid by the daemon, so a rule for
 * that uid denies it what root may still do.
 */
static void
test_misc_nobody_is_nobody(void **state)
{
    struct sockd_client *root, *nobody;
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    char conf[256];
    long long s;

    (void)state;
    snprintf(conf, sizeof conf, "deny connect 127.0.0.0/8 uid %d\n", H_NOBODY);
    h_daemon_start(&D, conf);
    root = h_client_auto(&D);
    nobody = h_client_nobody(&D);
    assert_true(h_connect_tcp(root, peer->port) > 0); /* root may */
    s = h_open(nobody, "tcp");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", peer->port);
    assert_int_equal(h_err(nobody, NULL, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s,
                           "address", addr),
                     -32004);
    sockd_client_close(nobody);
    h_daemon_stop(&D);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_misc_nobody_is_nobody, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
