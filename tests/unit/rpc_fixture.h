/*
 * The unit-test fixture of the suites that drive the JSON-RPC methods in-process (test_rpc,
 * test_tls): the daemon state without a running loop, and fake clients whose control
 * connection is one end of a socketpair.
 */
#ifndef SOCKD_TEST_RPC_FIXTURE_H
#define SOCKD_TEST_RPC_FIXTURE_H

#include <stddef.h>

/* One fake client and our end of its control connection. */
struct fx {
    struct client *c;
    int peer; /* our end of the control connection */
};

/* cmocka group setup/teardown: errors-only logging and daemon_init on the default loop;
 * the teardown frees what the tests left and destroys the loop. */
int fx_group_setup(void **state);
int fx_group_teardown(void **state);

/* A client set up as the accept path of ctl.c would, minus the started read watcher. */
void fx_open(struct fx *f);
/* Closes the client as ctl_client_close would: its sockets and contexts, then the client. */
void fx_close(struct fx *f);

/* cmocka setup/teardown: *state is an array of two open fake clients. */
int fx_setup_two(void **state);
int fx_teardown_two(void **state);

/* Everything the daemon has written to the client, after flushing (malloc'ed, NUL-terminated). */
char *fx_drain(struct fx *f, size_t *lenp);

#endif
