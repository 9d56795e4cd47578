/*
 * Robustness against the real daemon: clients that die, never read, or write garbage; peers that
 * never read; shutdown by SIGTERM (sockd-protocol.7: TRANSPORT AND FRAMING, FLOW CONTROL AND
 * LIMITS; sockd.8: SIGNALS).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;
static struct h_daemon D2; /* test_sigterm's own daemon */
static pid_t child_pid;    /* test_client_killed_mid_transfer's child */
struct streamer;
static struct streamer *g_streamer; /* test_client_never_reads' streamer */

static json_int_t
client_info_int(struct sockd_client *c, long long s, const char *key)
{
    json_t *m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    json_t *v = json_object_get(m, key);
    json_int_t n;

    EXPECT_TRUE(json_is_integer(v), "%s", jd(m));
    n = json_integer_value(v);
    json_decref(m);
    return n;
}

static long long
stats_sockets_total(const json_t *st)
{
    return json_integer_value(json_object_get(json_object_get(st, "sockets"), "total"));
}

/* Deterministic stream content: byte at offset k. */
static unsigned char
pattern(size_t k)
{
    return (unsigned char)(k % 251);
}

static int
group_setup(void **state)
{
    h_daemon_start(&D, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    if (D.pid > 0) /* else the group setup already failed and said why */
        h_daemon_stop(&D);
    return 0;
}

/* ---- a client killed mid-transfer ---- */

/* The child: connect, open a tcp socket to the peer, keep sending; tell the parent via wfd once
   the first send was accepted. Never returns; no cmocka in here. */
static void
killed_child(const char *sock, int port, int wfd)
{
    struct sockd_client *c = sockd_client_connect(sock);
    unsigned char *data = malloc(65536);
    json_t *p, *r = NULL, *ev;
    char *b64;
    long long s;
    int told = 0;

    if (!c || !data)
        _exit(2);
    for (size_t i = 0; i < 65536; i++)
        data[i] = pattern(i);
    b64 = h_b64(data, 65536);
    p = json_pack("{s:s}", "type", "tcp");
    if (sockd_client_call(c, "socket.open", p, &r, NULL, H_TIMEOUT_MS) != 0)
        _exit(3);
    s = json_integer_value(json_object_get(r, "socket"));
    p = json_pack("{s:I, s:s, s:i}", "socket", (json_int_t)s, "address", "127.0.0.1", "port", port);
    if (sockd_client_call(c, "socket.connect", p, NULL, NULL, H_TIMEOUT_MS) != 0)
        _exit(4);
    ev = sockd_client_wait_event(c, "socket.connected", s, H_TIMEOUT_MS);
    if (!ev)
        _exit(5);
    for (int i = 0; i < 200000; i++) {
        int rc;
        p = json_pack("{s:I, s:s, s:b}", "socket", (json_int_t)s, "data", b64, "notify", 0);
        rc = sockd_client_call(c, "socket.send", p, NULL, NULL, H_TIMEOUT_MS);
        json_decref(p);
        if (rc == 0 && !told) {
            told = write(wfd, "G", 1) == 1;
        } else if (rc == 1) {
            usleep(1000); /* send buffer full: let it drain */
        } else if (rc < 0) {
            _exit(6);
        }
    }
    /* The parent kills us long before this. */
    sleep(30);
    _exit(0);
}

static void
test_client_killed_mid_transfer(void **state)
{
    struct sockd_client *w = h_client_auto(&D);
    struct h_peer *peer;
    struct pollfd pfd;
    json_t *st0, *st1;
    int pipefd[2], baseline, fds, status;
    char go = 0;
    pid_t child;

    peer = h_peer_auto(H_DRAIN, 0);
    st0 = h_wait_clients(w, 1);
    baseline = h_count_fds(D.pid);

    EXPECT_INT(pipe2(pipefd, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    child = fork();
    EXPECT_TRUE(child >= 0, "child >= 0");
    child_pid = child;
    if (child == 0) {
        close(pipefd[0]);
        killed_child(D.sock, peer->port, pipefd[1]);
        _exit(1);
    }
    close(pipefd[1]);
    pfd.fd = pipefd[0];
    pfd.events = POLLIN;
    pfd.revents = 0;
    if (poll(&pfd, 1, H_TIMEOUT_MS) != 1 || read(pipefd[0], &go, 1) != 1 || go != 'G') {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        child_pid = 0;
        fprintf(stderr, "the child never got a send accepted (status 0x%x)\n", status);
        fail();
    }
    close(pipefd[0]);
    /* Mid-transfer: the peer is receiving. */
    EXPECT_TRUE(h_peer_wait_bytes(peer, 1 * MIB, H_TIMEOUT_MS) >= (size_t)(1 * MIB),
                "h_peer_wait_bytes(peer, 1 * MIB, H_TIMEOUT_MS) >= (size_t)(1 * MIB)");
    EXPECT_INT(kill(child, SIGKILL), 0, "kill: %s", strerror(errno));
    EXPECT_INT(waitpid(child, &status, 0), child, "waitpid: %s", strerror(errno));
    child_pid = 0;
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
                "WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL");

    /* Everything the dead client had is released: fds back to the baseline... */
    fds = h_wait_fds(D.pid, baseline, 2 * H_TIMEOUT_MS);
    if (fds != baseline)
        fprintf(stderr, "daemon fds: baseline %d, now %d\n", baseline, fds);
    EXPECT_INT(fds, baseline, "fds");
    /* ... the peer sees an orderly EOF ... */
    EXPECT_INT(h_peer_wait_eofs(peer, 1, 2 * H_TIMEOUT_MS), 1, "h_peer_wait_eofs");
    EXPECT_INT(peer->accepted, 1, "peer->accepted");
    /* ... and the counters agree. */
    st1 = h_wait_clients(w, 1);
    EXPECT_TRUE(stats_sockets_total(st1) == stats_sockets_total(st0), "%s", jd(st1));
    json_decref(st0);
    json_decref(st1);
    json_decref(h_ok(w, "daemon.ping", NULL));
    h_client_close(w);
}

/* ---- a client that never reads while a peer streams at it ---- */

struct streamer {
    int lfd, port;
    pthread_t th;
    int stop;      /* atomic: set by the test */
    int done;      /* atomic: set by the thread */
    size_t pushed; /* atomic: bytes written to the daemon */
    size_t target;
    int stall_ms; /* give up after this long without progress (backpressure) */
    int fd;
};

static void *
streamer_main(void *arg)
{
    struct streamer *st = arg;
    const size_t chunk = 256 * 1024;
    unsigned char *buf = malloc(chunk);
    struct pollfd pfd = {st->lfd, POLLIN, 0};
    long long last_progress;

    st->fd = -1;
    if (!buf || poll(&pfd, 1, H_TIMEOUT_MS) != 1)
        goto out;
    st->fd = accept4(st->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (st->fd < 0)
        goto out;
    last_progress = h_now_ms();
    while (!__atomic_load_n(&st->stop, __ATOMIC_SEQ_CST)) {
        size_t pushed = __atomic_load_n(&st->pushed, __ATOMIC_SEQ_CST);
        size_t n = st->target - pushed < chunk ? st->target - pushed : chunk;
        ssize_t w;

        if (n == 0 || h_now_ms() - last_progress > st->stall_ms)
            break;
        pfd.fd = st->fd;
        pfd.events = POLLOUT;
        if (poll(&pfd, 1, 100) != 1)
            continue;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(pushed + i);
        w = send(st->fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            break;
        }
        if (w > 0) {
            __atomic_add_fetch(&st->pushed, (size_t)w, __ATOMIC_SEQ_CST);
            last_progress = h_now_ms();
        }
    }
out:
    free(buf);
    __atomic_store_n(&st->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void
streamer_start(struct streamer *st, size_t target, int stall_ms)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;

    memset(st, 0, sizeof *st);
    st->target = target;
    st->stall_ms = stall_ms;
    st->fd = -1;
    st->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(st->lfd >= 0, "st->lfd >= 0");
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_INT(bind(st->lfd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(st->lfd, 4), 0, "listen: %s", strerror(errno));
    EXPECT_INT(getsockname(st->lfd, (struct sockaddr *)&sa, &sl), 0, "getsockname: %s",
               strerror(errno));
    st->port = ntohs(sa.sin_port);
    EXPECT_INT(pthread_create(&st->th, NULL, streamer_main, st), 0, "pthread_create");
}

static void
streamer_stop(struct streamer *st)
{
    __atomic_store_n(&st->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(st->th, NULL);
    if (st->fd >= 0)
        close(st->fd);
    close(st->lfd);
}

static void
test_client_never_reads(void **state)
{
    const size_t target = 512 * MIB;
    struct sockd_client *a = h_client_auto(&D), *b = h_client_auto(&D);
    struct streamer *st = calloc(1, sizeof *st);
    long rss0, rss, rss_max;
    long long s, t0, deadline;
    size_t pushed, got = 0;
    int pings = 0, events = 0;

    EXPECT_TRUE(st != NULL, "st");
    rss0 = h_rss_kib(D.pid);
    streamer_start(st, target, 3000);
    g_streamer = st;
    s = h_connect_tcp(a, st->port);
    json_decref(h_ok(a, "socket.recv", "{s:I, s:i, s:b}", "socket", (json_int_t)s, "length", 65536,
                     "stream", 1));
    /* From here on A reads nothing while the streamer pushes. */
    rss_max = rss0;
    t0 = h_now_ms();
    deadline = t0 + 120000;
    while (!__atomic_load_n(&st->done, __ATOMIC_SEQ_CST) && h_now_ms() < deadline) {
        long long p0 = h_now_ms();
        json_decref(h_ok(b, "daemon.ping", NULL)); /* bounded by H_TIMEOUT_MS */
        if (h_now_ms() - p0 > H_TIMEOUT_MS / 2)
            fprintf(stderr, "slow ping: %lld ms\n", h_now_ms() - p0);
        pings++;
        rss = h_rss_kib(D.pid);
        if (rss > rss_max)
            rss_max = rss;
        h_sleep_ms(100);
    }
    EXPECT_TRUE(__atomic_load_n(&st->done, __ATOMIC_SEQ_CST),
                "__atomic_load_n(&st->done, __ATOMIC_SEQ_CST)");
    rss = h_rss_kib(D.pid);
    if (rss > rss_max)
        rss_max = rss;
    pushed = __atomic_load_n(&st->pushed, __ATOMIC_SEQ_CST);
    fprintf(stderr,
            "  pushed %zu bytes at a client that never read; daemon RSS %ld -> max %ld KiB\n",
            pushed, rss0, rss_max);
    EXPECT_TRUE(pushed > 0, "pushed > 0");
    EXPECT_TRUE(rss_max < rss0 + 150 * 1024, "rss_max < rss0 + 150 * 1024");
    /* The other client is served promptly still. */
    json_decref(h_ok(b, "daemon.ping", NULL));

    /* Backpressure, not loss: once A reads, everything pushed arrives, in order. */
    t0 = h_now_ms();
    while (got < pushed && events < 100000 && h_now_ms() - t0 < 120000) {
        json_t *ev = h_event(a, "socket.received", s, H_TIMEOUT_MS);
        const char *b64 = json_string_value(json_object_get(ev, "data"));
        unsigned char *bytes;
        size_t n = 0;

        EXPECT_TRUE(b64 != NULL, "%s", jd(ev));
        EXPECT_TRUE(!json_is_true(json_object_get(ev, "eof")), "%s", jd(ev));
        bytes = h_unb64(b64, &n);
        EXPECT_TRUE(bytes != NULL && n > 0 && n <= 65536, "%s", jd(ev));
        for (size_t i = 0; i < n; i++)
            if (bytes[i] != pattern(got + i)) {
                fprintf(stderr, "stream byte %zu is %u, expected %u\n", got + i, bytes[i],
                        pattern(got + i));
                fail();
            }
        got += n;
        free(bytes);
        json_decref(ev);
        events++;
    }
    EXPECT_INT(got, pushed, "got");
    streamer_stop(st);
    g_streamer = NULL;
    free(st);
    h_client_close(a);
    h_client_close(b);
}

/* ---- a peer that never reads ---- */

static void
test_peer_never_reads(void **state)
{
    const size_t chunk = 256 * 1024;
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    unsigned char *data = malloc(chunk);
    char *b64;
    json_t *err = NULL, *ev;
    size_t total = 0, sent_bytes = 0;
    json_int_t bytes_sent, buffered;
    long long s;
    int capped = 0, i;

    EXPECT_TRUE(data != NULL, "data");
    for (size_t k = 0; k < chunk; k++)
        data[k] = pattern(k);
    b64 = h_b64(data, chunk);
    peer = h_peer_auto(H_SINK, 0);
    s = h_connect_tcp(c, peer->port);

    /* Send until the send buffer is full: -32003 max-send-buffer (bounded: 400 x 256 KiB). */
    for (i = 0; i < 400 && !capped; i++) {
        json_t *params = json_pack("{s:I, s:s}", "socket", (json_int_t)s, "data", b64);
        json_t *result = NULL;
        int rc = sockd_client_call(c, "socket.send", params, &result, &err, H_TIMEOUT_MS);

        json_decref(params);
        EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
        if (rc == 0) {
            EXPECT_INT(json_integer_value(json_object_get(result, "queued")), (json_int_t)chunk,
                       "%s", jd(result));
            total += chunk;
            json_decref(result);
        } else {
            EXPECT_INT(sockd_client_error_code(err), -32003, "%s", jd(err));
            EXPECT_STR(json_string_value(json_object_get(json_object_get(err, "data"), "limit")),
                       "max-send-buffer", "%s", jd(err));
            json_decref(err);
            capped = 1;
        }
    }
    EXPECT_TRUE(capped, "capped");
    fprintf(stderr, "  -32003 after %zu bytes queued to a peer that does not read\n", total);

    /* The accounting adds up: nothing dropped, the refused send queued nothing. */
    bytes_sent = client_info_int(c, s, "bytes_sent");
    buffered = client_info_int(c, s, "send_buffered");
    if ((size_t)(bytes_sent + buffered) != total)
        fprintf(stderr, "bytes_sent %lld + send_buffered %lld != queued %zu\n",
                (long long)bytes_sent, (long long)buffered, total);
    EXPECT_INT((size_t)(bytes_sent + buffered), total, "(size_t)(bytes_sent + buffered)");
    EXPECT_TRUE(buffered > 0, "buffered > 0");
    EXPECT_TRUE((size_t)buffered <= 4194304, "(size_t)buffered <= 4194304");
    /* The peer starts reading: every byte arrives, every send reports socket.sent. */
    h_peer_set_mode(peer, H_DRAIN);
    EXPECT_INT(h_peer_wait_bytes(peer, total, 4 * H_TIMEOUT_MS), total, "h_peer_wait_bytes");
    for (i = 0; i < 1000 && sent_bytes < total; i++) {
        ev = h_event(c, "socket.sent", s, H_TIMEOUT_MS);
        EXPECT_INT(json_integer_value(json_object_get(ev, "bytes")), (json_int_t)chunk, "%s",
                   jd(ev));
        sent_bytes += chunk;
        json_decref(ev);
    }
    EXPECT_INT(sent_bytes, total, "sent_bytes");
    EXPECT_INT(client_info_int(c, s, "bytes_sent"), (json_int_t)total,
               "client_info_int(c, s, \"bytes_sent\")");
    EXPECT_INT(client_info_int(c, s, "send_buffered"), 0,
               "client_info_int(c, s, \"send_buffered\")");
    /* Nothing more than was sent. */
    h_sleep_ms(100);
    EXPECT_INT(__atomic_load_n(&peer->bytes, __ATOMIC_SEQ_CST), total, "__atomic_load_n");
    free(b64);
    free(data);
    h_client_close(c);
}

/* ---- garbage on one client ---- */

static uint32_t
rng_next(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

static void
test_garbage_isolated(void **state)
{
    static const char first[] = "{[\"a1-tnf}]:,";
    struct sockd_client *a = h_client_auto(&D), *b = h_client_auto(&D);
    struct h_peer *peer;
    uint32_t seed = 0x5eed1234u;
    char *buf = malloc(1 << 20);
    long long s;
    int round;

    EXPECT_TRUE(buf != NULL, "buf");
    peer = h_peer_auto(H_ECHO, 0);
    s = h_connect_tcp(b, peer->port);

    for (round = 0; round < 20; round++) {
        size_t off = 0;
        int lines = 50;
        unsigned char *echo;
        char msg[32];

        /* 50 lines of random bytes (no newline inside, never blank). */
        for (int l = 0; l < lines; l++) {
            size_t len = 1 + rng_next(&seed) % 2000;
            buf[off++] = first[rng_next(&seed) % (sizeof first - 1)];
            for (size_t k = 1; k < len; k++) {
                char ch = (char)(rng_next(&seed) & 0xff);
                buf[off++] = ch == '\n' ? '#' : ch;
            }
            buf[off++] = '\n';
        }
        EXPECT_INT(sockd_client_send_raw(a, buf, off), 0, "sockd_client_send_raw: %s",
                   strerror(errno));

        /* B meanwhile: a ping and an echo round trip. */
        json_decref(h_ok(b, "daemon.ping", NULL));
        snprintf(msg, sizeof msg, "round-%02d", round);
        json_decref(h_ok(b, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", msg));
        echo = h_recv_exact(b, s, strlen(msg), H_TIMEOUT_MS);
        EXPECT_TRUE(memcmp(echo, msg, strlen(msg)) == 0, "echo");
        free(echo);

        /* A gets one error per garbage line, id null. */
        for (int l = 0; l < lines; l++) {
            json_t *m = h_read(a, H_TIMEOUT_MS);
            int code =
                (int)json_integer_value(json_object_get(json_object_get(m, "error"), "code"));
            EXPECT_TRUE(code == -32700 || code == -32600, "%s", jd(m));
            EXPECT_TRUE(json_is_null(json_object_get(m, "id")), "%s", jd(m));
            json_decref(m);
        }
    }
    /* Both still fully usable. */
    json_decref(h_ok(a, "daemon.ping", NULL));
    json_decref(h_ok(b, "daemon.ping", NULL));
    EXPECT_TRUE(client_info_int(b, s, "bytes_sent") > 0, "%s", jd(NULL));
    free(buf);
    h_client_close(a);
    h_client_close(b);
}

/* ---- a client that disconnects with a half-written line ---- */

static void
test_half_written_line(void **state)
{
    struct sockd_client *w = h_client_auto(&D), *a;
    struct h_peer *peer;
    json_t *st0, *st1;
    char line[256];
    int baseline, fds;
    long long s;
    char *big;

    peer = h_peer_auto(H_DRAIN, 0);
    st0 = h_wait_clients(w, 1);
    baseline = h_count_fds(D.pid);

    /* With a connected socket and half of a send request written. */
    a = h_client_auto(&D);
    s = h_connect_tcp(a, peer->port);
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":{\"socket\":%lld,\"te", s);
    h_send_raw(a, line);
    h_sleep_ms(50);
    h_client_close(a);

    /* With nothing but a partial line. */
    a = h_client_auto(&D);
    h_send_raw(a, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.pi");
    h_client_close(a);

    /* With a large partial line (1 MiB, no newline). */
    a = h_client_auto(&D);
    big = malloc(MIB + 1);
    EXPECT_TRUE(big != NULL, "big");
    memset(big, 'q', MIB);
    big[0] = '"';
    big[MIB] = 0;
    h_send_raw(a, big);
    free(big);
    h_client_close(a);

    st1 = h_wait_clients(w, 1);
    EXPECT_TRUE(stats_sockets_total(st1) == stats_sockets_total(st0), "%s", jd(st1));
    fds = h_wait_fds(D.pid, baseline, 2 * H_TIMEOUT_MS);
    if (fds != baseline)
        fprintf(stderr, "daemon fds: baseline %d, now %d\n", baseline, fds);
    EXPECT_INT(fds, baseline, "fds");
    EXPECT_INT(h_peer_wait_eofs(peer, 1, 2 * H_TIMEOUT_MS), 1, "h_peer_wait_eofs");
    /* The half line was never executed. */
    EXPECT_INT(__atomic_load_n(&peer->bytes, __ATOMIC_SEQ_CST), 0, "__atomic_load_n");
    json_decref(h_ok(w, "daemon.ping", NULL));
    json_decref(st0);
    json_decref(st1);
    h_client_close(w);
}

/* ---- SIGTERM ---- */

static void
test_sigterm(void **state)
{
    struct h_peer *peer;
    struct sockd_client *c, *c2;
    long long hs[4], h2;
    int closed[4] = {0}, closed2 = 0, i;
    json_t *ev, *r;

    peer = h_peer_auto(H_ECHO, 0);
    h_daemon_start(&D2, NULL);
    c = h_client_auto(&D2);
    c2 = h_client_auto(&D2);
    hs[0] = h_connect_tcp(c, peer->port); /* connected */
    hs[1] = h_open(c, "tcp");             /* open */
    hs[2] = h_open(c, "tcp");             /* listening */
    json_decref(
        h_ok(c, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)hs[2], "address", "127.0.0.1"));
    json_decref(h_ok(c, "socket.listen", "{s:I}", "socket", (json_int_t)hs[2]));
    hs[3] = h_connect_tcp(c, peer->port); /* connected, recv pending */
    json_decref(h_ok(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)hs[3], "length", 100));
    h2 = h_connect_tcp(c2, peer->port);
    r = h_ok(c, "daemon.ping", NULL);
    json_decref(r);

    /* SIGTERM: exit 0, socket file removed (asserted by h_daemon_stop). */
    h_daemon_stop(&D2);

    /* Each socket got socket.closed daemon_shutdown (no request), then the connection ended. */
    for (i = 0; i < 16; i++) {
        int k;
        ev = sockd_client_next_event(c, H_TIMEOUT_MS);
        if (!ev)
            break;
        EXPECT_STR(json_string_value(json_object_get(ev, "method")), "socket.closed", "%s", jd(ev));
        r = json_object_get(ev, "params");
        EXPECT_STR(json_string_value(json_object_get(r, "reason")), "daemon_shutdown", "%s",
                   jd(ev));
        EXPECT_TRUE(json_object_get(r, "request") == NULL, "%s", jd(ev));
        for (k = 0; k < 4; k++)
            if (json_integer_value(json_object_get(r, "socket")) == hs[k])
                break;
        EXPECT_TRUE(k < 4 && !closed[k], "%s", jd(ev));
        closed[k] = 1;
        json_decref(ev);
    }
    EXPECT_INT(errno, EPIPE, "errno");
    for (i = 0; i < 4; i++) {
        if (!closed[i])
            fprintf(stderr, "no socket.closed daemon_shutdown for socket %lld\n", hs[i]);
        EXPECT_TRUE(closed[i], "closed[i]");
    }
    ev = sockd_client_next_event(c2, H_TIMEOUT_MS);
    EXPECT_TRUE(ev != NULL, "%s", jd(NULL));
    r = json_object_get(ev, "params");
    EXPECT_INT(json_integer_value(json_object_get(r, "socket")), h2, "%s", jd(ev));
    EXPECT_STR(json_string_value(json_object_get(r, "reason")), "daemon_shutdown", "%s", jd(ev));
    closed2 = 1;
    json_decref(ev);
    EXPECT_TRUE(sockd_client_next_event(c2, H_TIMEOUT_MS) == NULL,
                "sockd_client_next_event(c2, H_TIMEOUT_MS)");
    EXPECT_INT(errno, EPIPE, "errno");
    EXPECT_TRUE(closed2, "closed2");

    /* The peer connections were closed. */
    EXPECT_INT(h_peer_wait_eofs(peer, 3, H_TIMEOUT_MS), 3,
               "h_peer_wait_eofs(peer, 3, H_TIMEOUT_MS)");
    h_client_close(c);
    h_client_close(c2);
}

/* Per test: whatever a failed test left behind. */
static int
teardown(void **state)
{
    int status;

    if (child_pid > 0) {
        kill(child_pid, SIGKILL);
        waitpid(child_pid, &status, 0);
        child_pid = 0;
    }
    if (g_streamer) {
        streamer_stop(g_streamer);
        free(g_streamer);
        g_streamer = NULL;
    }
    h_cleanup();
    h_daemon_kill(&D2);
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_client_killed_mid_transfer, teardown),
        cmocka_unit_test_teardown(test_client_never_reads, teardown),
        cmocka_unit_test_teardown(test_peer_never_reads, teardown),
        cmocka_unit_test_teardown(test_garbage_isolated, teardown),
        cmocka_unit_test_teardown(test_half_written_line, teardown),
        cmocka_unit_test_teardown(test_sigterm, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
