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

/*
 * One socket pair for the whole run: [0] is dup'ed for each input's client (closing the client
 * closes only the dup), [1] is where its output goes, read away only when enough of it could fill
 * the kernel's buffer. A pair, a drain per chunk and the syscalls they cost used to be most of an
 * input's time.
 */
static int fuzz_sv[2] = {-1, -1};
static char fuzz_sink[65536];
/* Output written since the last drain, and in how many writes; drained well before either fills
 * the pair's buffer (each write costs its bytes plus a few hundred of kernel overhead). */
static size_t fuzz_unread_bytes, fuzz_unread_writes;
#define FUZZ_UNREAD_BYTES 32768
#define FUZZ_UNREAD_WRITES 32
/* Output is written once it passes this (far below the 1 MiB high-water mark) and at the end,
 * not after every chunk: the responses of a whole input usually go out in one write. */
#define FUZZ_FLUSH_AT 32768

/*
 * ASan keeps freed memory poisoned in a quarantine before reusing it, 256 MiB by default: with
 * ~20 KiB freed per input, the first ~13000 inputs (most of a short run) each fault in fresh
 * pages, which cost more than the input itself. 64 MiB still holds the frees of thousands of
 * inputs, far more than any one input's use-after-free could span (each input's state is freed
 * at its end). ASAN_OPTIONS may still set it otherwise.
 */
__attribute__((used, visibility("default"))) const char *
__asan_default_options(void)
{
    return "quarantine_size_mb=64";
}

static void
fuzz_init(void)
{
    char *cause = NULL;
    static const char rules[] = "policy-default deny\nmax-message 64K\nmax-send-buffer 64K\n";
    daemon_init(ev_default_loop(0));
    log_set_level(LOG_LVL_ERROR); /* a log line per input would dominate the run time */
    if (conf_parse(rules, sizeof rules - 1, &sockd.conf, &cause) < 0)
        abort();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fuzz_sv) < 0)
        abort();
}

/* Read away everything the clients wrote: one read, unless it filled the sink. */
static void
fuzz_drain(void)
{
    while (read(fuzz_sv[1], fuzz_sink, sizeof fuzz_sink) == (ssize_t)sizeof fuzz_sink)
        ;
    fuzz_unread_bytes = fuzz_unread_writes = 0;
}

/* Send c's output as the daemon's loop would, with the reader keeping up. */
static void
fuzz_flush(struct client *c)
{
    uint64_t before = c->out_pos;
    ctl_flush_all();
    if (c->out_pos != before) {
        fuzz_unread_bytes += (size_t)(c->out_pos - before);
        fuzz_unread_writes++;
    }
    /* output left queued means the pair was full: read it away and write the rest */
    while (!c->dead && buf_len(&c->out) > 0) {
        fuzz_drain();
        before = c->out_pos;
        ctl_flush_all();
        if (c->out_pos == before)
            break;
    }
    if (fuzz_unread_bytes > FUZZ_UNREAD_BYTES || fuzz_unread_writes > FUZZ_UNREAD_WRITES)
        fuzz_drain();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_sv[0] < 0)
        fuzz_init();
    /* The fast path's scan must never take a line that jansson reads differently. */
    for (size_t off = 1, end; off < size; off = end + 1) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        end = nl != NULL ? (size_t)(nl - data) : size;
        if (rpc_fastpath_check((const char *)data + off, end - off) < 0)
            abort();
    }
    int fd = dup(fuzz_sv[0]);
    if (fd < 0)
        return 0;
    struct client *c = ctl_client_new(fd);
    if (c == NULL) {
        close(fd);
        return 0;
    }
    /* The first byte picks a chunk size, so framing is exercised across split reads. */
    size_t chunk = size > 0 ? (size_t)data[0] % 64 + 1 : 1;
    for (size_t off = 1; off < size && !c->dead; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        ctl_feed(c, data + off, n);
        if (buf_len(&c->out) >= FUZZ_FLUSH_AT)
            fuzz_flush(c);
    }
    fuzz_flush(c);
    /* Lines left waiting for the next turn (fairness) are handled too. */
    for (int i = 0; i < 8 && !c->dead && ev_is_active(&c->more); i++) {
        ev_run(sockd.loop, EVRUN_NOWAIT);
        fuzz_flush(c);
    }
    ctl_client_close(c, "fuzz input done");
    fuzz_drain(); /* nothing of this input is left for the next one */
    sock_reap();
    ctl_reap();
    return 0;
}
