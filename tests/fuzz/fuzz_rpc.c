/*
 * Fuzz target: control framing + JSON-RPC envelope + method dispatch, without a daemon process.
 * The input is fed to a real client object in pieces; the policy denies every destination so
 * no input can make the fuzzer reach the network.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conf.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "rpc.h"
#include "sock.h"

static int fuzz_ready;

static void
fuzz_init(void)
{
    char *cause = NULL;
    static const char rules[] = "policy-default deny\nmax-message 64K\nmax-send-buffer 64K\n";
    daemon_init(ev_default_loop(0));
    log_set_level(LOG_LVL_ERROR); /* a log line per input would dominate the run time */
    if (conf_parse(rules, sizeof rules - 1, &sockd.conf, &cause) < 0)
        abort();
    fuzz_ready = 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    char sink[65536];

    if (!fuzz_ready)
        fuzz_init();
    /* The fast path's scan must never take a line that jansson reads differently. */
    for (size_t off = 1, end; off < size; off = end + 1) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        end = nl != NULL ? (size_t)(nl - data) : size;
        if (rpc_fastpath_check((const char *)data + off, end - off) < 0)
            abort();
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0)
        return 0;
    struct client *c = ctl_client_new(sv[0]);
    if (c == NULL) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    /* The first byte picks a chunk size, so framing is exercised across split reads. */
    size_t chunk = size > 0 ? (size_t)data[0] % 64 + 1 : 1;
    for (size_t off = 1; off < size && !c->dead; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        ctl_feed(c, data + off, n);
        ctl_flush_all();
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
    }
    /* Lines left waiting for the next turn (fairness) are handled too. */
    for (int i = 0; i < 8 && !c->dead && ev_is_active(&c->more); i++) {
        ev_run(sockd.loop, EVRUN_NOWAIT);
        while (read(sv[1], sink, sizeof sink) > 0)
            ;
    }
    ctl_client_close(c, "fuzz input done");
    close(sv[1]);
    sock_reap();
    ctl_reap();
    return 0;
}
