/* ping_bench: daemon.ping RPC rate against sockd over N concurrent Unix connections, or
 * (-r) PING against redis-server's Unix socket: the same loop, connections, batching and
 * checks for both servers, only the request and response bytes differ, so a ratio of the two
 * measures the servers and not two load generators.
 *
 * By default each connection keeps exactly one request in flight (no pipelining): it
 * sends {"jsonrpc":"2.0","id":K,"method":"daemon.ping"} and sends the next one only
 * after the response to K arrived.  With -p DEPTH it pipelines the way
 * redis-benchmark -P DEPTH does: DEPTH requests (consecutive ids) in one write, then
 * the next DEPTH only once all DEPTH responses arrived.  One thread, poll() over all
 * connections.  Latency is counted per response, from the write of its batch.
 *
 * Every response is checked: the fast path compares it with the exact line sockd
 * writes today; anything else is parsed with jansson and must be a JSON-RPC 2.0
 * result object for the right id, or the run fails (exit 3) naming the line.  With -r
 * the request is PING as a multi-bulk array (redis-benchmark's PING_MBULK) and every
 * response must be "+PONG\r\n".
 *
 * Responses that complete within [warmup, warmup + duration] are counted.  After
 * the duration no new requests are sent; the in-flight ones are drained (bounded).
 *
 * Output, one line on stdout:
 *   rate=R measured=M total=T seconds=S p50_us=.. p99_us=.. conn_min=.. conn_max=.. client_cpu_s=.. depth=..
 * (conn_min/conn_max: fewest/most responses one connection got in the measured window)
 * Built by tests/bench/run with: cc -O2 ping_bench.c -ljansson
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define INBUF 65536
#define HIST_US 100000 /* 1 us buckets up to 100 ms; the last bucket holds the rest */

struct conn {
    int fd;
    unsigned long long id;  /* id of the next response expected (0: none in flight) */
    unsigned left;          /* responses of the current batch still to come */
    double sent_at;         /* when the current batch was written */
    char *out;              /* the batch (depth lines) */
    size_t out_len, out_off;
    char in[INBUF];
    size_t in_len;
    unsigned long long measured; /* responses counted for this connection */
};

static unsigned long long hist[HIST_US + 1];
static unsigned depth = 1; /* requests per batch (-p) */
static int redis;          /* -r: talk RESP to redis-server instead of JSON-RPC to sockd */
#define LINE_MAX_LEN 96    /* one request line, at most */

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ping_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(3);
}

static void
usage(void)
{
    fprintf(stderr, "usage: ping_bench -s SOCKET [-r] [-c CONNS] [-p DEPTH] [-d SECONDS] "
                    "[-w WARMUP_SECONDS] [-T TIMEOUT_SECONDS]\n");
    exit(2);
}

/* Write what is left of c->out; 0 when all of it went, 1 when some is left, dies on error. */
static int
conn_flush(struct conn *c)
{
    int r = send_pending(c->fd, c->out, &c->out_off, c->out_len);
    if (r < 0)
        die("send: %s", strerror(errno));
    return r;
}

/* Write one batch: depth requests with ids from *next_id on. */
static void
conn_request(struct conn *c, unsigned long long *next_id)
{
    c->id = *next_id;
    c->left = depth;
    c->out_len = 0;
    for (unsigned k = 0; k < depth; k++, (*next_id)++) {
        if (redis) {
            memcpy(c->out + c->out_len, "*1\r\n$4\r\nPING\r\n", 14);
            c->out_len += 14;
        } else {
            c->out_len += (size_t)snprintf(c->out + c->out_len, LINE_MAX_LEN,
                                           "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"daemon.ping\"}\n",
                                           *next_id);
        }
    }
    c->out_off = 0;
    c->sent_at = now();
    conn_flush(c);
}

/* Check one response line for c's request; dies when it is anything else. */
static void
check_response(struct conn *c, const char *line, size_t len)
{
    char want[96];
    if (redis) {
        if (len == 6 && memcmp(line, "+PONG\r", 6) == 0)
            return;
        die("unexpected line for PING: %.*s", (int)(len > 300 ? 300 : len), line);
    }
    int wl = snprintf(want, sizeof want, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"result\":{}}", c->id);
    if ((size_t)wl == len && memcmp(want, line, len) == 0)
        return;
    json_error_t jerr;
    json_t *j = json_loadb(line, len, 0, &jerr);
    if (j == NULL)
        die("invalid JSON from sockd (%s): %.*s", jerr.text, (int)(len > 300 ? 300 : len), line);
    json_t *ver = json_object_get(j, "jsonrpc"), *id = json_object_get(j, "id"),
           *res = json_object_get(j, "result");
    if (!json_is_string(ver) || strcmp(json_string_value(ver), "2.0") != 0 ||
        !json_is_integer(id) || (unsigned long long)json_integer_value(id) != c->id ||
        !json_is_object(res) || json_object_get(j, "error") != NULL ||
        json_object_get(j, "method") != NULL)
        die("unexpected line for daemon.ping id %llu: %.*s", c->id, (int)(len > 300 ? 300 : len),
            line);
    json_decref(j);
}

int
main(int argc, char **argv)
{
    const char *path = NULL;
    int nconn = 1, ch;
    double duration = 2.0, warmup = 0.2, timeout = 30.0;

    while ((ch = getopt(argc, argv, "s:rc:p:d:w:T:")) != -1) {
        switch (ch) {
        case 's': path = optarg; break;
        case 'r': redis = 1; break;
        case 'c': nconn = atoi(optarg); break;
        case 'p': depth = (unsigned)atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'T': timeout = atof(optarg); break;
        default: usage();
        }
    }
    if (path == NULL || nconn < 1 || nconn > 1000 || depth < 1 || depth > 512 || duration <= 0 ||
        warmup < 0 || timeout <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    struct conn *cs = calloc((size_t)nconn, sizeof *cs);
    struct pollfd *pfd = calloc((size_t)nconn, sizeof *pfd);
    if (cs == NULL || pfd == NULL)
        die("out of memory");
    for (int i = 0; i < nconn; i++) {
        cs[i].fd = unix_connect(path);
        if (cs[i].fd < 0)
            die("connect %s: %s", path, strerror(errno));
        cs[i].out = malloc((size_t)depth * LINE_MAX_LEN);
        if (cs[i].out == NULL)
            die("out of memory");
    }

    unsigned long long next_id = 1, total = 0, measured = 0;
    double t_start = now();
    double t_meas = t_start + warmup, t_end = t_meas + duration;
    double t_kill = t_start + timeout;
    for (int i = 0; i < nconn; i++)
        conn_request(&cs[i], &next_id);

    int inflight = nconn, rot = 0;
    while (inflight > 0) {
        double t = now();
        if (t >= t_kill) {
            int stuck = 0;
            double oldest = 0;
            for (int i = 0; i < nconn; i++)
                if (cs[i].id != 0) {
                    stuck++;
                    if (t - cs[i].sent_at > oldest)
                        oldest = t - cs[i].sent_at;
                }
            die("timeout after %.1f s: %d of %d connections still wait for daemon.ping "
                "responses (oldest batch waited %.3f s); %llu responses so far",
                timeout, stuck, nconn, oldest, total);
        }
        for (int i = 0; i < nconn; i++) {
            pfd[i].fd = cs[i].id != 0 ? cs[i].fd : -1;
            pfd[i].events = POLLIN | (cs[i].out_off < cs[i].out_len ? POLLOUT : 0);
            pfd[i].revents = 0;
        }
        int wait_ms = (int)((t_kill - t) * 1000) + 1;
        if (wait_ms > 1000)
            wait_ms = 1000;
        int r = poll(pfd, (nfds_t)nconn, wait_ms);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("poll: %s", strerror(errno));
        }
        if (r == 0)
            continue;
        /* Start each pass at a different connection, so none is always served first. */
        rot = (rot + 1) % nconn;
        for (int k = 0; k < nconn; k++) {
            int i = (rot + k) % nconn;
            struct conn *c = &cs[i];
            if (pfd[i].revents == 0)
                continue;
            if (pfd[i].revents & POLLOUT)
                conn_flush(c);
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t n = read(c->fd, c->in + c->in_len, INBUF - c->in_len);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    continue;
                die("read: %s", strerror(errno));
            }
            if (n == 0)
                die("the server closed connection %d (request %llu in flight)", i, c->id);
            c->in_len += (size_t)n;
            char *p = c->in, *end = c->in + c->in_len, *nl;
            while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
                if (c->id == 0)
                    die("unsolicited line on connection %d: %.*s", i, (int)(nl - p), p);
                check_response(c, p, (size_t)(nl - p));
                double tr = now();
                double lat = (tr - c->sent_at) * 1e6;
                total++;
                if (tr >= t_meas && tr <= t_end) {
                    measured++;
                    c->measured++;
                    hist[lat >= HIST_US ? HIST_US : (size_t)lat]++;
                }
                p = nl + 1;
                c->id++;
                if (--c->left > 0)
                    continue;
                if (tr < t_end) {
                    conn_request(c, &next_id);
                } else {
                    c->id = 0;
                    inflight--;
                }
            }
            if (p == c->in && c->in_len == INBUF)
                die("response line longer than %d bytes", INBUF);
            c->in_len = (size_t)(end - p);
            memmove(c->in, p, c->in_len);
        }
    }
    for (int i = 0; i < nconn; i++) {
        close(cs[i].fd);
        free(cs[i].out);
    }

    unsigned long long cmin = ~0ull, cmax = 0;
    for (int i = 0; i < nconn; i++) {
        if (cs[i].measured < cmin)
            cmin = cs[i].measured;
        if (cs[i].measured > cmax)
            cmax = cs[i].measured;
    }
    double cpu = cpu_self();
    printf("rate=%.0f measured=%llu total=%llu seconds=%.3f p50_us=%.0f p99_us=%.0f "
           "conn_min=%llu conn_max=%llu client_cpu_s=%.3f depth=%u\n",
           (double)measured / duration, measured, total, duration,
           hist_pct(hist, HIST_US, measured, 50), hist_pct(hist, HIST_US, measured, 99), cmin, cmax,
           cpu, depth);
    free(cs);
    free(pfd);
    return 0;
}
