/* echo_bench: bulk TCP echo throughput, through sockd or direct.
 *
 * The program forks its own echo server first: a child with blocking sockets that
 * listens on 127.0.0.1 (ephemeral port), accepts one connection and writes back
 * every byte it reads (64 KiB reads) until EOF.
 *
 *   -m direct  the client connects to the echo server itself and moves the payload
 *              with plain non-blocking write()/read() under poll().
 *   -m sockd   the client asks sockd (-s SOCKET) for a tcp socket, connects it to the
 *              echo server, arms socket.recv {length: CHUNK, stream: true} and sends
 *              the payload as socket.send {data: base64} requests of CHUNK bytes.
 *   -m tls     as sockd, but the echo server speaks TLS (certificate -C, key -K, PEM
 *              files) and the client makes a context.create {verify: false} and a tls
 *              socket in it: the same JSON path with sockd doing the TLS.
 *   -m rtt     round-trip latency, one CHUNK-byte message (use -c 64) at a time for -d
 *              SECONDS (after 200 unmeasured warm-up round trips): socket.send {data,
 *              notify: false} through sockd, wait for its {queued} and for the CHUNK bytes
 *              to come back as socket.received (the socket has TCP_NODELAY via
 *              socket.setopt, and one socket.recv {stream: true} armed), then the next.
 *   -m rttdirect  the same round trips over a plain loopback TCP socket (TCP_NODELAY).
 *              The echo server sets TCP_NODELAY in both rtt modes.
 *
 * In both modes at most WINDOW payload bytes are "in flight" (handed over but not
 * yet read back), chunks are CHUNK bytes and TOTAL bytes make the run.  Every byte
 * read back is compared with what was sent (a pattern of period 251), every
 * response and notification from sockd is checked; a mismatch, an error response,
 * a socket.closed or a stall past the timeout fails the run (exit 3) with a message
 * saying where it stood.
 *
 * Output, one line on stdout:
 *   mibps=.. bytes=.. seconds=.. chunks=.. client_cpu_s=.. server_cpu_s=.. warnings=..
 * (server_cpu_s: the echo server child's CPU time.)  The rtt modes print instead:
 *   rate=.. rtts=.. seconds=.. p50_us=.. p99_us=.. client_cpu_s=.. warnings=..
 * The base64 of the payloads is sockd's own codec (src/b64.c), so that the load generator,
 * which shares a CPU with the echo server, costs as little per byte as the daemon does.
 * Built by tests/bench/run with:
 *   cc -O2 -I DIR_WITH_AN_EMPTY_config.h -I src echo_bench.c src/b64.c -ljansson -lssl -lcrypto
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "b64.h"
#include "bench.h"

#define PERIOD 251

static size_t chunk = 65536, window = 4u << 20;
static unsigned long long total = 256ull << 20;
static double timeout = 60.0;
static unsigned char *pat; /* PERIOD + max(chunk, read size) bytes of the pattern */
static pid_t echo_pid = -1;
static unsigned long long warnings;
static double t_begin;                 /* set when the payload starts to move */
static const char *tls_cert, *tls_key; /* -m tls: the echo server's certificate and key */
static int rtt_mode;                   /* -m rtt / rttdirect: one message at a time */
static double rtt_seconds = 2.0;       /* -d */
#define HIST_US 100000                 /* 1 us buckets up to 100 ms; the last holds the rest */
static unsigned long long hist[HIST_US + 1];

/* Progress, for the messages of a failed run. */
static unsigned long long sent_bytes, recv_bytes;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("echo_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " [payload sent %llu, echoed back %llu of %llu]\n", sent_bytes, recv_bytes,
            total);
    va_end(ap);
    if (echo_pid > 0)
        kill(echo_pid, SIGKILL);
    exit(3);
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
warn(const char *fmt, ...)
{
    va_list ap;
    if (warnings++ >= 5)
        return;
    va_start(ap, fmt);
    fputs("echo_bench: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- the echo server (child process, blocking sockets) ---- */

/* -m tls: the echo server's side, blocking OpenSSL on fd; exits the child. */
static void
tls_echo(int fd, char *buf, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, tls_key, SSL_FILETYPE_PEM) != 1) {
        fprintf(stderr, "echo_bench: TLS echo server: cannot load %s / %s\n", tls_cert, tls_key);
        _exit(1);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) {
        fprintf(stderr, "echo_bench: TLS echo server: handshake failed\n");
        _exit(1);
    }
    for (;;) {
        int n = SSL_read(ssl, buf, (int)cap);
        if (n <= 0)
            break;
        if (SSL_write(ssl, buf, n) != n)
            _exit(1);
    }
    SSL_shutdown(ssl);
    close(fd);
    _exit(0);
}

static int
echo_server_start(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    if (lfd < 0)
        die("socket: %s", strerror(errno));
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 4) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
        die("echo server: bind/listen on 127.0.0.1: %s", strerror(errno));
    fflush(NULL);
    echo_pid = fork();
    if (echo_pid < 0)
        die("fork: %s", strerror(errno));
    if (echo_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        alarm((unsigned)timeout + 10); /* never outlive the run */
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            _exit(1);
        close(lfd);
        if (rtt_mode) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        static char buf[65536];
        if (tls_cert != NULL)
            tls_echo(fd, buf, sizeof buf); /* does not return */
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(fd, buf + off, (size_t)(n - off));
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    _exit(1);
                off += w;
            }
        }
        shutdown(fd, SHUT_WR);
        close(fd);
        _exit(0);
    }
    close(lfd);
    return ntohs(sin.sin_port);
}

/* Reap the echo server (bounded), return its CPU seconds. */
static double
echo_server_stop(void)
{
    struct rusage ru;
    int st;
    for (int i = 0; i < 500; i++) { /* 5 s */
        pid_t r = wait4(echo_pid, &st, WNOHANG, &ru);
        if (r == echo_pid) {
            echo_pid = -1;
            return ru_seconds(&ru);
        }
        usleep(10000);
    }
    kill(echo_pid, SIGKILL);
    if (wait4(echo_pid, &st, 0, &ru) == echo_pid) {
        echo_pid = -1;
        warn("echo server did not finish within 5 s of the end; killed");
        return ru_seconds(&ru);
    }
    return 0;
}

/* Compare n bytes read back at stream offset recv_bytes with what was sent. */
static void
verify(const unsigned char *p, size_t n)
{
    while (n > 0) {
        size_t k = n > chunk ? chunk : n;
        if (memcmp(p, pat + recv_bytes % PERIOD, k) != 0) {
            size_t i = 0;
            while (i < k && p[i] == pat[(recv_bytes + i) % PERIOD])
                i++;
            die("echoed data differs at stream offset %llu (got 0x%02x, sent 0x%02x)",
                recv_bytes + i, p[i], pat[(recv_bytes + i) % PERIOD]);
        }
        recv_bytes += k;
        p += k;
        n -= k;
    }
    if (recv_bytes > total)
        die("more bytes echoed back than were sent");
}

/* ---- direct: plain loopback TCP ---- */

static void
run_direct(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((unsigned short)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
        die("connect to echo server: %s", strerror(errno));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    unsigned char *buf = malloc(65536);
    if (buf == NULL)
        die("out of memory");
    double t_kill = now() + timeout;
    t_begin = now();
    while (recv_bytes < total) {
        if (now() > t_kill)
            die("direct: timeout after %.0f s", timeout);
        size_t room = window - (size_t)(sent_bytes - recv_bytes);
        int want_out = sent_bytes < total && room > 0;
        struct pollfd p = {fd, (short)(POLLIN | (want_out ? POLLOUT : 0)), 0};
        int r = poll(&p, 1, 1000);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if ((p.revents & POLLOUT) && want_out) {
            size_t n = chunk - (size_t)(sent_bytes % chunk);
            if (n > room)
                n = room;
            if (n > total - sent_bytes)
                n = (size_t)(total - sent_bytes);
            ssize_t w = write(fd, pat + sent_bytes % PERIOD, n);
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                die("write: %s", strerror(errno));
            if (w > 0)
                sent_bytes += (unsigned long long)w;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = read(fd, buf, 65536);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                die("read: %s", strerror(errno));
            if (n == 0)
                die("echo server closed the connection early");
            if (n > 0)
                verify(buf, (size_t)n);
        }
    }
    shutdown(fd, SHUT_WR);
    close(fd);
    free(buf);
}

/* ---- through sockd ---- */

struct ctl {
    int fd;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
};

static struct ctl ctl;
static long long sock_id = -1;
static unsigned long long sends_issued, sends_answered, sends_notified;
static long long recv_req_id = -1;
static unsigned char *dec; /* decode buffer */
static size_t dec_cap;

static void
ctl_connect(const char *path)
{
    ctl.fd = unix_connect(path);
    if (ctl.fd < 0)
        die("connect %s: %s", path, strerror(errno));
    int sz = 4 << 20; /* best effort; the kernel caps it */
    setsockopt(ctl.fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    setsockopt(ctl.fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
}

static char *
out_reserve(size_t n)
{
    if (ctl.out_off > 0 && ctl.out_off == ctl.out_len)
        ctl.out_off = ctl.out_len = 0;
    if (ctl.out_len + n > ctl.out_cap) {
        if (ctl.out_off > 0) {
            memmove(ctl.out, ctl.out + ctl.out_off, ctl.out_len - ctl.out_off);
            ctl.out_len -= ctl.out_off;
            ctl.out_off = 0;
        }
        if (ctl.out_len + n > ctl.out_cap) {
            size_t cap = ctl.out_cap ? ctl.out_cap : 65536;
            while (cap < ctl.out_len + n)
                cap *= 2;
            ctl.out = realloc(ctl.out, cap);
            if (ctl.out == NULL)
                die("out of memory");
            ctl.out_cap = cap;
        }
    }
    return ctl.out + ctl.out_len;
}

static void
ctl_flush(void)
{
    if (send_pending(ctl.fd, ctl.out, &ctl.out_off, ctl.out_len) < 0)
        die("send to sockd: %s", strerror(errno));
}

static void ctl_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
ctl_sendf(const char *fmt, ...)
{
    va_list ap;
    char *p = out_reserve(1024);
    va_start(ap, fmt);
    int n = vsnprintf(p, 1024, fmt, ap);
    va_end(ap);
    ctl.out_len += (size_t)n;
    ctl_flush();
}

/* Queue one socket.send of the next chunk. */
static void
send_chunk(void)
{
    size_t n = chunk;
    if (n > total - sent_bytes)
        n = (size_t)(total - sent_bytes);
    unsigned long long id = 100 + sends_issued;
    size_t b64 = (n + 2) / 3 * 4;
    char *p = out_reserve(b64 + 160);
    int h = snprintf(p, 160,
                     "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"socket.send\",\"params\":"
                     "{\"socket\":%lld,%s\"data\":\"",
                     id, sock_id, rtt_mode ? "\"notify\":false," : "");
    size_t e = b64_encode(pat + sent_bytes % PERIOD, n, p + h);
    memcpy(p + h + e, "\"}}\n", 4);
    ctl.out_len += (size_t)h + e + 4;
    sent_bytes += n;
    sends_issued++;
    ctl_flush();
}

/* Decode base64 text of length n into dec; returns the byte count. */
static size_t
data_decode(const char *s, size_t n)
{
    if (n % 4 != 0)
        die("socket.received data is not valid base64 (length %zu)", n);
    if (n / 4 * 3 > dec_cap) {
        dec_cap = n / 4 * 3;
        dec = realloc(dec, dec_cap);
        if (dec == NULL)
            die("out of memory");
    }
    if (n == 0)
        return 0;
    long r = b64_decode(s, n, dec); /* strict: canonical padded base64 only */
    if (r < 0)
        die("socket.received data is not valid base64");
    return (size_t)r;
}

static void handle_message(json_t *j, const char *line, size_t len, const unsigned char *data,
                           size_t dlen, int have_data);

/* The checks of the three messages of each chunk, whichever way the line was read. */
static void
on_send_response(long long id, long long queued, const char *line, size_t len)
{
    int trunc = (int)(len > 300 ? 300 : len);
    if (id < 100 || (unsigned long long)(id - 100) != sends_answered)
        die("response id %lld out of order (expected %llu): %.*s", id, 100 + sends_answered, trunc,
            line);
    if (queued <= 0)
        die("socket.send result without queued: %.*s", trunc, line);
    sends_answered++;
}

static void
on_sent(long long request, const char *line, size_t len)
{
    int trunc = (int)(len > 300 ? 300 : len);
    if (rtt_mode)
        die("socket.sent although the socket.send said notify:false: %.*s", trunc, line);
    if (request != (long long)(100 + sends_notified))
        die("socket.sent out of order or without request (expected %llu): %.*s",
            100 + sends_notified, trunc, line);
    if (sends_notified >= sends_answered)
        die("socket.sent before the socket.send response: %.*s", trunc, line);
    sends_notified++;
}

static void
on_received(long long request, const unsigned char *data, size_t dlen, const char *line, size_t len)
{
    int trunc = (int)(len > 300 ? 300 : len);
    if (recv_req_id < 0)
        die("socket.received before socket.recv: %.*s", trunc, line);
    if (request != recv_req_id)
        warn("socket.received without \"request\": %lld: %.*s", recv_req_id, trunc, line);
    if (dlen == 0)
        warn("empty socket.received on a stream recv");
    if (dlen > chunk)
        die("socket.received of %zu bytes, recv length was %zu", dlen, chunk);
    verify(data, dlen);
}

/*
 * The line is exactly tmpl, where each '%' stands for a decimal integer (stored in v): the
 * three messages of every chunk, as sockd writes them, are read this way without building a
 * JSON tree; anything else (another order, another member) goes to jansson and the same checks.
 */
static int
match_line(const char *line, size_t len, const char *tmpl, long long *v)
{
    size_t i = 0;
    for (const char *t = tmpl; *t != '\0'; t++) {
        if (*t != '%') {
            if (i >= len || line[i++] != *t)
                return 0;
            continue;
        }
        int neg = i < len && line[i] == '-';
        size_t d = i += (size_t)neg;
        long long x = 0;
        while (i < len && line[i] >= '0' && line[i] <= '9' && i - d < 18)
            x = x * 10 + (line[i++] - '0');
        if (i == d || (i < len && line[i] >= '0' && line[i] <= '9'))
            return 0;
        *v++ = neg ? -x : x;
    }
    return i == len;
}

#define TMPL_RESPONSE "{\"jsonrpc\":\"2.0\",\"id\":%,\"result\":{\"queued\":%}}"
#define TMPL_SENT                                                                                  \
    "{\"jsonrpc\":\"2.0\",\"method\":\"socket.sent\",\"params\":{\"bytes\":%,\"socket\":%,"        \
    "\"request\":%}}"
#define TMPL_RECEIVED                                                                              \
    "{\"jsonrpc\":\"2.0\",\"method\":\"socket.received\",\"params\":{\"data\":\"\",\"socket\":%,"  \
    "\"request\":%}}"

/* One line from sockd.  Large socket.received lines take a fast path: the base64 text is
 * decoded in place of the line and cut out of it, and only the rest is parsed with jansson. */
static void
handle_line(char *line, size_t len)
{
    static const char key[] = "\"data\":\"";
    json_error_t jerr;
    char *d = memmem(line, len, key, sizeof key - 1);
    size_t dlen = 0;
    int have_data = 0;
    if (d != NULL) {
        char *s = d + sizeof key - 1;
        char *q = memchr(s, '"', len - (size_t)(s - line));
        if (q != NULL && memchr(s, '\\', (size_t)(q - s)) == NULL) {
            dlen = data_decode(s, (size_t)(q - s));
            have_data = 1;
            memmove(s, q, len - (size_t)(q - line));
            len -= (size_t)(q - s);
        }
    }
    long long v[3];
    if (match_line(line, len, TMPL_RESPONSE, v) && v[0] >= 100) {
        on_send_response(v[0], v[1], line, len);
        return;
    }
    if (match_line(line, len, TMPL_SENT, v) && v[1] == sock_id) {
        on_sent(v[2], line, len);
        return;
    }
    if (have_data && match_line(line, len, TMPL_RECEIVED, v) && v[0] == sock_id) {
        on_received(v[1], dec, dlen, line, len);
        return;
    }
    json_t *j = json_loadb(line, len, 0, &jerr);
    if (j == NULL)
        die("invalid JSON from sockd (%s): %.*s", jerr.text, (int)(len > 300 ? 300 : len), line);
    handle_message(j, line, len, dec, dlen, have_data);
    json_decref(j);
}

static const char *
str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Results of the setup requests land here. */
static json_t *setup_result[6]; /* [0] socket.connected, [i] response to id i */

static void
handle_message(json_t *j, const char *line, size_t len, const unsigned char *data, size_t dlen,
               int have_data)
{
    const char *ver = str(j, "jsonrpc");
    int trunc = (int)(len > 300 ? 300 : len);
    if (ver == NULL || strcmp(ver, "2.0") != 0)
        die("line without jsonrpc 2.0: %.*s", trunc, line);
    const char *method = str(j, "method");
    if (method == NULL) { /* a response */
        json_t *id = json_object_get(j, "id"), *err = json_object_get(j, "error");
        if (!json_is_integer(id))
            die("response without an integer id: %.*s", trunc, line);
        long long i = json_integer_value(id);
        if (err != NULL)
            die("error response to request %lld: %.*s", i, trunc, line);
        json_t *res = json_object_get(j, "result");
        if (!json_is_object(res))
            die("response %lld without a result object: %.*s", i, trunc, line);
        if (i >= 1 && i <= 5) {
            if (setup_result[i] != NULL)
                die("second response to request %lld", i);
            setup_result[i] = json_incref(res);
            return;
        }
        json_t *q = json_object_get(res, "queued");
        if (!json_is_integer(q) || json_integer_value(q) <= 0)
            die("socket.send result without queued: %.*s", trunc, line);
        on_send_response(i, json_integer_value(q), line, len);
        return;
    }
    json_t *params = json_object_get(j, "params");
    json_t *sock = json_object_get(params, "socket");
    if (!json_is_object(params) || !json_is_integer(sock))
        die("notification without params.socket: %.*s", trunc, line);
    if (json_integer_value(sock) != sock_id)
        die("notification for socket %lld, ours is %lld: %.*s", (long long)json_integer_value(sock),
            sock_id, trunc, line);
    if (strcmp(method, "socket.received") == 0) {
        if (!have_data)
            die("socket.received without a plain base64 data string: %.*s", trunc, line);
        json_t *rq = json_object_get(params, "request");
        if (json_object_get(params, "eof") != NULL || json_object_get(params, "timeout") != NULL)
            die("socket.received with eof/timeout during the run: %.*s", trunc, line);
        on_received(json_is_integer(rq) ? json_integer_value(rq) : -1, data, dlen, line, len);
    } else if (strcmp(method, "socket.sent") == 0) {
        json_t *b = json_object_get(params, "bytes"), *rq = json_object_get(params, "request");
        if (!json_is_integer(b))
            die("socket.sent without bytes: %.*s", trunc, line);
        on_sent(json_is_integer(rq) ? json_integer_value(rq) : -1, line, len);
    } else if (strcmp(method, "socket.connected") == 0) {
        if (setup_result[0] != NULL)
            die("second socket.connected");
        if (setup_result[2] == NULL)
            die("socket.connected before the socket.connect response: %.*s", trunc, line);
        setup_result[0] = json_incref(params);
    } else if (strcmp(method, "socket.closed") == 0) {
        die("socket closed during the run: %.*s", trunc, line);
    } else {
        die("unexpected notification: %.*s", trunc, line);
    }
}

/* Read what sockd sent and handle every complete line; 0 if nothing was there. */
static int
ctl_read(void)
{
    if (ctl.in_cap - ctl.in_len < 262144) {
        size_t cap = ctl.in_cap ? ctl.in_cap * 2 : 1 << 20;
        if (cap > (64u << 20))
            die("a line from sockd is longer than 64 MiB");
        ctl.in = realloc(ctl.in, cap);
        if (ctl.in == NULL)
            die("out of memory");
        ctl.in_cap = cap;
    }
    ssize_t n = read(ctl.fd, ctl.in + ctl.in_len, ctl.in_cap - ctl.in_len);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        die("read from sockd: %s", strerror(errno));
    }
    if (n == 0)
        die("sockd closed the control connection");
    size_t scan = ctl.in_len;
    ctl.in_len += (size_t)n;
    char *p = ctl.in, *end = ctl.in + ctl.in_len, *nl;
    while ((nl = memchr(p + scan, '\n', (size_t)(end - p - scan))) != NULL) {
        handle_line(p, (size_t)(nl - p));
        p = nl + 1;
        scan = 0;
    }
    ctl.in_len = (size_t)(end - p);
    memmove(ctl.in, p, ctl.in_len);
    return 1;
}

/* Poll the control connection until cond() holds or the deadline passes. */
static void
ctl_wait(int (*cond)(void), double deadline, const char *what)
{
    while (!cond()) {
        double t = now();
        if (t > deadline)
            die("sockd: timeout waiting for %s", what);
        struct pollfd p = {ctl.fd, (short)(POLLIN | (ctl.out_off < ctl.out_len ? POLLOUT : 0)), 0};
        int r = poll(&p, 1, 200);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (p.revents & POLLOUT)
            ctl_flush();
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            ctl_read();
    }
}

static int
got_open(void)
{
    return setup_result[1] != NULL;
}
static int
got_context(void)
{
    return setup_result[5] != NULL;
}
static int
got_connected(void)
{
    return setup_result[0] != NULL && setup_result[2] != NULL;
}
static int
got_recv(void)
{
    return setup_result[3] != NULL;
}
static int
got_acks(void)
{
    return (rtt_mode || sends_notified == sends_issued) && sends_answered == sends_issued;
}
static int
got_echo(void)
{
    return recv_bytes == sent_bytes && sends_answered == sends_issued;
}
static int
got_setopt(void)
{
    return setup_result[5] != NULL;
}

/* -m rtt / rttdirect: round trips of one chunk at a time; prints the result line. */
static void
run_rtt(const char *path, int port)
{
    double t_kill = now() + timeout;
    int fd = -1;
    unsigned char *buf = NULL;
    if (path != NULL) {
        ctl_connect(path);
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.open\",\"params\":{"
                  "\"type\":\"tcp\"}}\n");
        ctl_wait(got_open, t_kill, "the socket.open response");
        json_t *s = json_object_get(setup_result[1], "socket");
        if (!json_is_integer(s) || json_integer_value(s) <= 0)
            die("socket.open result has no positive socket handle");
        sock_id = json_integer_value(s);
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.connect\",\"params\":{"
                  "\"socket\":%lld,\"address\":\"127.0.0.1:%d\"}}\n",
                  sock_id, port);
        ctl_wait(got_connected, t_kill, "socket.connect response and socket.connected");
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"socket.setopt\",\"params\":{"
                  "\"socket\":%lld,\"nodelay\":true}}\n",
                  sock_id);
        ctl_wait(got_setopt, t_kill, "the socket.setopt response");
        recv_req_id = 3;
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"socket.recv\",\"params\":{"
                  "\"socket\":%lld,\"length\":%zu,\"stream\":true}}\n",
                  sock_id, chunk);
        ctl_wait(got_recv, t_kill, "the socket.recv response");
    } else {
        struct sockaddr_in sin;
        int one = 1;
        memset(&sin, 0, sizeof sin);
        sin.sin_family = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons((unsigned short)port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die("connect to echo server: %s", strerror(errno));
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct timeval tv = {(time_t)timeout, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        buf = malloc(chunk);
        if (buf == NULL)
            die("out of memory");
    }
    unsigned long long n = 0, measured = 0;
    double cpu0 = 0, t_meas = 0, t_end = 0;
    for (;;) {
        if (n == 200) { /* warm-up done */
            cpu0 = cpu_self();
            t_meas = now();
            t_end = t_meas + rtt_seconds;
        }
        double t0 = now();
        if (n >= 200 && t0 >= t_end)
            break;
        if (t0 > t_kill)
            die("rtt: timeout after %.0f s (%llu round trips)", timeout, n);
        if (path != NULL) {
            send_chunk();
            ctl_wait(got_echo, t_kill, "the echo of one message");
        } else {
            if (write(fd, pat + sent_bytes % PERIOD, chunk) != (ssize_t)chunk)
                die("write: %s", strerror(errno));
            sent_bytes += chunk;
            size_t got = 0;
            while (got < chunk) {
                ssize_t r = read(fd, buf + got, chunk - got);
                if (r < 0 && errno == EINTR)
                    continue;
                if (r <= 0)
                    die("read from the echo server: %s", r < 0 ? strerror(errno) : "EOF");
                got += (size_t)r;
            }
            verify(buf, chunk);
        }
        double lat = (now() - t0) * 1e6;
        if (n >= 200) {
            hist[lat >= HIST_US ? HIST_US : (size_t)lat]++;
            measured++;
        }
        n++;
    }
    double secs = now() - t_meas;
    double cpu1 = cpu_self();
    if (path != NULL) {
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"socket.close\",\"params\":{"
                  "\"socket\":%lld}}\n",
                  sock_id);
        close(ctl.fd);
    } else {
        shutdown(fd, SHUT_WR);
        close(fd);
        free(buf);
    }
    echo_server_stop();
    printf("rate=%.1f rtts=%llu seconds=%.3f p50_us=%.0f p99_us=%.0f client_cpu_s=%.3f "
           "warnings=%llu\n",
           (double)measured / secs, measured, secs, hist_pct(hist, HIST_US, measured, 50),
           hist_pct(hist, HIST_US, measured, 99), cpu1 - cpu0, warnings);
}

static void
run_sockd(const char *path, int port)
{
    double t_kill = now() + timeout;
    ctl_connect(path);
    if (tls_cert != NULL) {
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"context.create\",\"params\":{"
                  "\"verify\":false}}\n");
        ctl_wait(got_context, t_kill, "the context.create response");
        json_t *c = json_object_get(setup_result[5], "context");
        if (!json_is_integer(c))
            die("context.create result has no context handle");
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.open\",\"params\":{"
                  "\"type\":\"tls\",\"context\":%lld}}\n",
                  (long long)json_integer_value(c));
    } else {
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"socket.open\",\"params\":{"
                  "\"type\":\"tcp\"}}\n");
    }
    ctl_wait(got_open, t_kill, "the socket.open response");
    json_t *s = json_object_get(setup_result[1], "socket");
    if (!json_is_integer(s) || json_integer_value(s) <= 0)
        die("socket.open result has no positive socket handle");
    sock_id = json_integer_value(s);
    ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"socket.connect\",\"params\":{\"socket\""
              ":%lld,\"address\":\"127.0.0.1:%d\"}}\n",
              sock_id, port);
    ctl_wait(got_connected, t_kill, "socket.connect response and socket.connected");
    recv_req_id = 3;
    ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"socket.recv\",\"params\":{\"socket\":"
              "%lld,\"length\":%zu,\"stream\":true}}\n",
              sock_id, chunk);
    ctl_wait(got_recv, t_kill, "the socket.recv response");
    t_begin = now();

    while (recv_bytes < total) {
        if (now() > t_kill)
            die("sockd: timeout after %.0f s (socket.send: %llu issued, %llu answered, "
                "%llu socket.sent)",
                timeout, sends_issued, sends_answered, sends_notified);
        /* Fill the window, but keep at most a couple of lines unsent in our own buffer. */
        while (sent_bytes < total && sent_bytes - recv_bytes + chunk <= window &&
               ctl.out_len - ctl.out_off < 2 * chunk)
            send_chunk();
        struct pollfd p = {ctl.fd, (short)(POLLIN | (ctl.out_off < ctl.out_len ? POLLOUT : 0)), 0};
        int r = poll(&p, 1, 1000);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (p.revents & POLLOUT)
            ctl_flush();
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            ctl_read();
    }
}

static void
usage(void)
{
    fprintf(stderr, "usage: echo_bench -m sockd|tls|direct [-s SOCKET] [-t TOTAL_MIB] [-c CHUNK] "
                    "[-w WINDOW] [-T TIMEOUT_SECONDS] [-C CERT.pem -K KEY.pem]\n"
                    "       echo_bench -m rtt|rttdirect [-s SOCKET] [-c CHUNK] [-d SECONDS] "
                    "[-T TIMEOUT_SECONDS]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *mode = NULL, *path = NULL;
    int ch;
    while ((ch = getopt(argc, argv, "m:s:t:c:w:T:C:K:d:")) != -1) {
        switch (ch) {
        case 'm':
            mode = optarg;
            break;
        case 's':
            path = optarg;
            break;
        case 't':
            total = strtoull(optarg, NULL, 10) << 20;
            break;
        case 'c':
            chunk = strtoul(optarg, NULL, 10);
            break;
        case 'w':
            window = strtoul(optarg, NULL, 10);
            break;
        case 'T':
            timeout = atof(optarg);
            break;
        case 'C':
            tls_cert = optarg;
            break;
        case 'K':
            tls_key = optarg;
            break;
        case 'd':
            rtt_seconds = atof(optarg);
            break;
        default:
            usage();
        }
    }
    if (mode != NULL && (strcmp(mode, "rtt") == 0 || strcmp(mode, "rttdirect") == 0)) {
        rtt_mode = 1;
        if ((mode[3] == '\0' && path == NULL) || chunk < 1 || chunk > 65536 || rtt_seconds <= 0 ||
            timeout <= 0)
            usage();
        total = ~0ull >> 1; /* the duration ends the run */
        window = chunk;
        signal(SIGPIPE, SIG_IGN);
        pat = malloc(PERIOD + 65536);
        if (pat == NULL)
            die("out of memory");
        for (size_t i = 0; i < PERIOD + 65536; i++)
            pat[i] = (unsigned char)((i % PERIOD) * 97 + 13);
        int port = echo_server_start();
        run_rtt(mode[3] == '\0' ? path : NULL, port);
        return 0;
    }
    if (mode != NULL && strcmp(mode, "tls") == 0) {
        if (tls_cert == NULL || tls_key == NULL)
            usage();
        mode = "sockd"; /* the same client, with a tls socket and a TLS echo server */
    } else {
        tls_cert = tls_key = NULL;
    }
    if (mode == NULL || (strcmp(mode, "sockd") != 0 && strcmp(mode, "direct") != 0) ||
        (strcmp(mode, "sockd") == 0 && path == NULL) || chunk < 1 || chunk > (1u << 24) ||
        window < chunk || total == 0 || timeout <= 0)
        usage();
    signal(SIGPIPE, SIG_IGN);

    size_t patlen = PERIOD + (chunk > 65536 ? chunk : 65536);
    pat = malloc(patlen);
    if (pat == NULL)
        die("out of memory");
    for (size_t i = 0; i < patlen; i++)
        pat[i] = (unsigned char)((i % PERIOD) * 97 + 13);

    int port = echo_server_start();
    if (strcmp(mode, "direct") == 0) {
        run_direct(port);
    } else {
        run_sockd(path, port);
    }
    double t1 = now();
    if (strcmp(mode, "sockd") == 0) {
        /* Every socket.send answered and every socket.sent seen (bounded), then let go. */
        ctl_wait(got_acks, now() + 10, "the last socket.send responses / socket.sent");
        ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"socket.close\",\"params\":{"
                  "\"socket\":%lld}}\n",
                  sock_id);
        close(ctl.fd);
    }
    double server_cpu = echo_server_stop();
    double cpu = cpu_self();
    double secs = t1 - t_begin;
    printf("mibps=%.1f bytes=%llu seconds=%.3f chunks=%llu client_cpu_s=%.3f server_cpu_s=%.3f "
           "warnings=%llu\n",
           (double)recv_bytes / secs / 1048576.0, recv_bytes, secs,
           (recv_bytes + chunk - 1) / chunk, cpu, server_cpu, warnings);
    return 0;
}
