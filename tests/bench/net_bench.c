/* net_bench: UDP round trips, bulk streams over a detached fd / socket.pipe / relays, and
 * TLS client handshakes, through sockd or directly.  Used by tests/bench/run.
 *
 *   net_bench serve [-T LIFETIME]
 *       Long-lived peers on 127.0.0.1 (ephemeral ports): a TCP sink and a UDP echo.
 *       Prints "sink=PORT udp=PORT" on one line, then serves until killed (or LIFETIME s).
 *       Sink protocol: the client sends an 8-byte length L (host order), then L bytes of the
 *       pattern; once all L arrived (each byte compared with the pattern) the sink answers
 *       8 bytes: L, or ~0 on a mismatch.  No half-close is needed (SOCKS5 relays drop it).
 *       With the top bit of L set, the sink is a source instead: it sends the L & ~(1 << 63)
 *       bytes of the pattern, then waits for the client to close.
 *   net_bench udp -m sockd|direct|connected|detach -p PORT [-s SOCK] [-w WINDOW] [-d SECONDS]
 *                 [-l LEN]
 *       Round trips of LEN-byte datagrams (default 64) to the UDP echo (or a relay of it) at
 *       127.0.0.1:PORT, WINDOW (default 1) in flight.  direct: a plain UDP socket, sendto /
 *       recvfrom.  sockd: a sockd udp socket bound to 127.0.0.1, one socket.recv {stream},
 *       socket.sendto {notify:false} per datagram, replies as socket.received.  connected:
 *       a UDP socket the client connect()s itself, send / recv.  detach: sockd opens a udp
 *       socket and socket.connects it to the echo, socket.detach hands the fd over
 *       (SCM_RIGHTS), and the round trips go through that fd with send / recv exactly as
 *       in connected mode (the control connection is closed first: sockd is out of the
 *       path).  Every reply is checked (sequence number, pattern, and for sockd "from").
 *       Datagrams unanswered for 500 ms count as lost and the window is refilled.
 *       Prints: rate= replies= all= seconds= lost= late= client_cpu_s= (all: with warm-up/drain)
 *   net_bench stream -m direct|detach|pipe|socks5 -p PORT [-P SINKPORT] [-s SOCK] [-b MIB] [-D]
 *       Streams MIB (default 256) MiB to the sink, timed from the first byte to the sink's
 *       answer; with -D (download) from the sink acting as a source, timed from the request
 *       to the last byte, every byte compared with the pattern.  direct: connect to 127.0.0.1:PORT (the sink itself, or a TCP relay of it).
 *       detach: sockd opens and connects a tcp socket to 127.0.0.1:PORT, socket.detach, the
 *       stream goes through the received fd.  pipe: same, but socket.pipe; the stream goes
 *       through the socketpair end and sockd relays it.  socks5: connect to the SOCKS5
 *       server at PORT, CONNECT to 127.0.0.1:SINKPORT (no auth), then stream.
 *       Prints: mibps= bytes= seconds= client_cpu_s=
 *   net_bench tlshs -s SOCK -p PORT [-n INFLIGHT] [-d SECONDS] [-R]
 *       TLS client handshakes through sockd against a TLS server at 127.0.0.1:PORT:
 *       context.create {verify:false, session_cache:false}; per handshake socket.open
 *       {type:tls} -> socket.connect -> socket.connected -> socket.close; INFLIGHT (default 8)
 *       at once: full handshakes.  With -R the context keeps its session cache (the default):
 *       the warm-up connection waits for the server's session (a TLS 1.3 ticket comes after
 *       the handshake), and the timed ones resume it.
 *       Prints: rate= handshakes= all= resumed= seconds= client_cpu_s= version= cipher=
 *
 * Every wait is bounded (-T TIMEOUT, default 60 s, plus alarm()); any error response,
 * unexpected socket.closed, data mismatch or stall exits 3 with a message.
 * Built by tests/bench/run with: cc -O2 net_bench.c -ljansson -lcrypto -lpthread
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define PERIOD 251
#define IOBUF (256 * 1024)

static double timeout = 60.0;
static unsigned char pat[PERIOD + IOBUF];
static const char *what = "net_bench";
static unsigned long long warnings;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "net_bench %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
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
    fprintf(stderr, "net_bench %s: warning: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void
on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "net_bench: hard time limit reached\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(3);
}

static void
set_timeouts(int fd, double secs)
{
    struct timeval tv = {(time_t)secs, (suseconds_t)((secs - (double)(time_t)secs) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int
read_full(int fd, void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = read(fd, (char *)p + off, n - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        off += (size_t)r;
    }
    return 0;
}

static int
write_full(int fd, const void *p, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(fd, (const char *)p + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        off += (size_t)w;
    }
    return 0;
}

/* ======================= serve: TCP sink and UDP echo ======================= */

static void *
sink_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char *buf = malloc(IOBUF);
    uint64_t want, got = 0, ack;
    int bad = 0;
    set_timeouts(fd, 60);
    if (buf == NULL || read_full(fd, &want, sizeof want) < 0)
        goto out;
    if (want >> 63) { /* a download: send the pattern, then wait for the client to close */
        want &= ~((uint64_t)1 << 63);
        while (got < want) {
            size_t n = want - got < IOBUF ? (size_t)(want - got) : IOBUF;
            ssize_t w = send(fd, pat + got % PERIOD, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                goto out;
            got += (uint64_t)w;
        }
        while (read(fd, buf, IOBUF) > 0)
            ;
        goto out;
    }
    while (got < want) {
        size_t room = want - got < IOBUF ? (size_t)(want - got) : IOBUF;
        ssize_t n = read(fd, buf, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto out; /* the client went away early: no answer */
        if (!bad && memcmp(buf, pat + got % PERIOD, (size_t)n) != 0)
            bad = 1;
        got += (uint64_t)n;
    }
    ack = bad ? ~(uint64_t)0 : got;
    if (write_full(fd, &ack, sizeof ack) == 0) {
        /* wait for the client (or relay) to close, bounded by the receive timeout */
        while (read(fd, buf, IOBUF) > 0)
            ;
    }
out:
    free(buf);
    close(fd);
    return NULL;
}

static void *
sink_accept(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            return NULL;
        }
        pthread_t t;
        if (pthread_create(&t, NULL, sink_conn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        pthread_detach(t);
    }
}

static void *
udp_echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char buf[65536];
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        ssize_t n = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&ss, &sl);
        if (n < 0)
            continue;
        sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&ss, sl);
    }
    return NULL;
}

static int
bound_socket(int type, int *port)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sin = loopback(0);
    socklen_t sl = sizeof sin;
    if (fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        (type == SOCK_STREAM && listen(fd, 64) < 0) ||
        getsockname(fd, (struct sockaddr *)&sin, &sl) < 0)
        die("bind/listen on 127.0.0.1: %s", strerror(errno));
    *port = ntohs(sin.sin_port);
    return fd;
}

static int
run_serve(double lifetime)
{
    int sport, uport;
    int lfd = bound_socket(SOCK_STREAM, &sport);
    int ufd = bound_socket(SOCK_DGRAM, &uport);
    int sz = 4 << 20;
    setsockopt(ufd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    pthread_t t1, t2;
    if (pthread_create(&t1, NULL, sink_accept, (void *)(intptr_t)lfd) != 0 ||
        pthread_create(&t2, NULL, udp_echo, (void *)(intptr_t)ufd) != 0)
        die("pthread_create failed");
    printf("sink=%d udp=%d\n", sport, uport);
    fflush(stdout);
    alarm(0);
    double end = now() + lifetime;
    while (now() < end)
        sleep(1); /* killed by the run script; LIFETIME is only a backstop */
    return 0;
}

/* ======================= the sockd control connection ======================= */

static int ctl_fd = -1;
static char *ctl_in;
static size_t ctl_in_len, ctl_in_cap;
static char *ctl_out;
static size_t ctl_out_len, ctl_out_off, ctl_out_cap;
static int ctl_rx_fd = -1; /* the last fd that rode in with a line */
static long long next_id = 1;
static long long sync_id = -1;
static json_t *sync_result;
static void (*on_msg)(json_t *j, const char *line, size_t len);

static void
ctl_connect(const char *path)
{
    if (path == NULL)
        die("no sockd socket path (-s)");
    ctl_fd = unix_connect(path);
    if (ctl_fd < 0)
        die("connect %s: %s", path, strerror(errno));
}

static void
ctl_flush(void)
{
    int r = send_pending(ctl_fd, ctl_out, &ctl_out_off, ctl_out_len);
    if (r < 0)
        die("send to sockd: %s", strerror(errno));
    if (r == 0)
        ctl_out_off = ctl_out_len = 0;
}

static void ctl_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
ctl_sendf(const char *fmt, ...)
{
    va_list ap;
    if (ctl_out_cap - ctl_out_len < 4096) {
        if (ctl_out_off > 0) {
            memmove(ctl_out, ctl_out + ctl_out_off, ctl_out_len - ctl_out_off);
            ctl_out_len -= ctl_out_off;
            ctl_out_off = 0;
        }
        if (ctl_out_cap - ctl_out_len < 4096) {
            ctl_out_cap = ctl_out_cap ? ctl_out_cap * 2 : 65536;
            if (ctl_out_cap > (64u << 20))
                die("more than 64 MiB of requests unsent: sockd does not read");
            ctl_out = realloc(ctl_out, ctl_out_cap);
            if (ctl_out == NULL)
                die("out of memory");
        }
    }
    va_start(ap, fmt);
    int n = vsnprintf(ctl_out + ctl_out_len, 4096, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= 4096)
        die("request too long");
    ctl_out_len += (size_t)n;
    ctl_flush();
}

static void
ctl_line(char *line, size_t len)
{
    json_error_t jerr;
    int trunc = (int)(len > 300 ? 300 : len);
    json_t *j = json_loadb(line, len, 0, &jerr);
    if (j == NULL)
        die("invalid JSON from sockd (%s): %.*s", jerr.text, trunc, line);
    const char *ver = json_string_value(json_object_get(j, "jsonrpc"));
    if (ver == NULL || strcmp(ver, "2.0") != 0)
        die("line without jsonrpc 2.0: %.*s", trunc, line);
    json_t *id = json_object_get(j, "id");
    if (json_object_get(j, "method") == NULL && json_is_integer(id) &&
        json_integer_value(id) == sync_id) {
        if (json_object_get(j, "error") != NULL)
            die("error response to request %lld: %.*s", sync_id, trunc, line);
        sync_result = json_incref(json_object_get(j, "result"));
        if (!json_is_object(sync_result))
            die("response %lld without a result object: %.*s", sync_id, trunc, line);
    } else if (on_msg != NULL) {
        on_msg(j, line, len);
    } else {
        die("unexpected line from sockd: %.*s", trunc, line);
    }
    json_decref(j);
}

/* Read what is there (recvmsg: an fd may ride along) and handle every complete line. */
static void
ctl_read(void)
{
    if (ctl_in_cap - ctl_in_len < 65536) {
        ctl_in_cap = ctl_in_cap ? ctl_in_cap * 2 : 1 << 20;
        if (ctl_in_cap > (64u << 20))
            die("a line from sockd is longer than 64 MiB");
        ctl_in = realloc(ctl_in, ctl_in_cap);
        if (ctl_in == NULL)
            die("out of memory");
    }
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(4 * sizeof(int))];
    } cb;
    struct iovec iov = {ctl_in + ctl_in_len, ctl_in_cap - ctl_in_len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.b,
                        .msg_controllen = sizeof cb.b};
    ssize_t n = recvmsg(ctl_fd, &mh, MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        die("read from sockd: %s", strerror(errno));
    }
    if (n == 0)
        die("sockd closed the control connection");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c != NULL; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int fds[4];
            memcpy(fds, CMSG_DATA(c), k * sizeof(int));
            for (size_t i = 0; i < k; i++) {
                if (ctl_rx_fd >= 0) {
                    warn("a second fd from sockd; closing the first");
                    close(ctl_rx_fd);
                }
                ctl_rx_fd = fds[i];
            }
        }
    }
    if (mh.msg_flags & MSG_CTRUNC)
        die("fd ancillary data truncated");
    size_t scan = ctl_in_len;
    ctl_in_len += (size_t)n;
    char *p = ctl_in, *end = ctl_in + ctl_in_len, *nl;
    while ((nl = memchr(p + scan, '\n', (size_t)(end - p - scan))) != NULL) {
        ctl_line(p, (size_t)(nl - p));
        p = nl + 1;
        scan = 0;
    }
    ctl_in_len = (size_t)(end - p);
    memmove(ctl_in, p, ctl_in_len);
}

/* One poll turn on the control connection (at most ms milliseconds). */
static void
ctl_poll(int ms)
{
    struct pollfd p = {ctl_fd, (short)(POLLIN | (ctl_out_off < ctl_out_len ? POLLOUT : 0)), 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno != EINTR)
        die("poll: %s", strerror(errno));
    if (r <= 0)
        return;
    if (p.revents & POLLOUT)
        ctl_flush();
    if (p.revents & (POLLIN | POLLHUP | POLLERR))
        ctl_read();
}

/* A request whose result we wait for (bounded); other lines go to on_msg. */
static json_t *ctl_call(const char *method, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static json_t *
ctl_call(const char *method, const char *fmt, ...)
{
    char params[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    sync_id = next_id++;
    sync_result = NULL;
    ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\",\"params\":%s}\n", sync_id,
              method, params);
    double deadline = now() + timeout;
    while (sync_result == NULL) {
        if (now() > deadline)
            die("timeout waiting for the %s response", method);
        ctl_poll(200);
    }
    sync_id = -1;
    return sync_result;
}

static long long
result_int(json_t *r, const char *key)
{
    json_t *v = json_object_get(r, key);
    if (!json_is_integer(v))
        die("result without integer %s", key);
    long long x = json_integer_value(v);
    json_decref(r);
    return x;
}

static const char *
method_of(json_t *j)
{
    return json_string_value(json_object_get(j, "method"));
}

static json_t *
params_of(json_t *j)
{
    return json_object_get(j, "params");
}

/* ---- setup handler: wait for socket.connected of one socket ---- */
static long long setup_sock = -1;
static int setup_connected, setup_closed;
static void
setup_msg(json_t *j, const char *line, size_t len)
{
    const char *m = method_of(j);
    int trunc = (int)(len > 300 ? 300 : len);
    if (m == NULL)
        die("unexpected response: %.*s", trunc, line);
    long long s = json_integer_value(json_object_get(params_of(j), "socket"));
    if (s != setup_sock)
        die("notification for another socket: %.*s", trunc, line);
    if (strcmp(m, "socket.connected") == 0)
        setup_connected = 1;
    else if (strcmp(m, "socket.closed") == 0 && setup_connected < 2)
        die("socket closed: %.*s", trunc, line);
    else if (strcmp(m, "socket.closed") == 0)
        setup_closed = 1;
    else
        die("unexpected notification: %.*s", trunc, line);
}

/* Open a socket of this type ("tcp", "udp") through sockd and connect it to 127.0.0.1:port;
 * returns the handle once socket.connected came. */
static long long
sockd_connect(const char *type, int port)
{
    on_msg = setup_msg;
    setup_sock = result_int(ctl_call("socket.open", "{\"type\":\"%s\"}", type), "socket");
    json_decref(ctl_call("socket.connect", "{\"socket\":%lld,\"address\":\"127.0.0.1:%d\"}",
                         setup_sock, port));
    double deadline = now() + timeout;
    while (!setup_connected) {
        if (now() > deadline)
            die("timeout waiting for socket.connected");
        ctl_poll(200);
    }
    return setup_sock;
}

/* ======================= udp: round trips ======================= */

#define SLOTS 4096
static long long slot_seq[SLOTS];
static size_t dlen = 64;
static unsigned long long outstanding, replies_all, replies_in, lost, late;
static int counting;
static double last_progress;
static int echo_port;

static void
udp_fill(unsigned char *d, unsigned long long seq)
{
    memcpy(d, &seq, 8);
    memcpy(d + 8, pat + seq % PERIOD, dlen - 8);
}

/* A reply: check it, free its slot. */
static void
udp_reply(const unsigned char *d, size_t n)
{
    unsigned long long seq;
    if (n != dlen)
        die("reply of %zu bytes, sent %zu", n, dlen);
    memcpy(&seq, d, 8);
    if (memcmp(d + 8, pat + seq % PERIOD, dlen - 8) != 0)
        die("reply %llu differs from what was sent", seq);
    if (slot_seq[seq % SLOTS] != (long long)seq) {
        late++; /* answered after it was counted lost, or a duplicate */
        return;
    }
    slot_seq[seq % SLOTS] = -1;
    outstanding--;
    replies_all++;
    if (counting)
        replies_in++;
    last_progress = now();
}

/* Declare everything in flight lost (after 500 ms without a reply). */
static void
udp_check_loss(void)
{
    if (outstanding == 0 || now() - last_progress < 0.5)
        return;
    for (int i = 0; i < SLOTS; i++)
        slot_seq[i] = -1;
    lost += outstanding;
    outstanding = 0;
    last_progress = now();
}

static long long udp_sock = -1;
static unsigned long long sendto_issued, sendto_answered, udp_recv_req;

static void
udp_msg(json_t *j, const char *line, size_t len)
{
    const char *m = method_of(j);
    int trunc = (int)(len > 300 ? 300 : len);
    if (m == NULL) {
        json_t *id = json_object_get(j, "id");
        if (json_object_get(j, "error") != NULL)
            die("error response: %.*s", trunc, line);
        if (!json_is_integer(id) || json_integer_value(id) < 1000000)
            die("unexpected response: %.*s", trunc, line);
        json_t *q = json_object_get(json_object_get(j, "result"), "queued");
        if (!json_is_integer(q) || (size_t)json_integer_value(q) != dlen)
            die("socket.sendto result without queued %zu: %.*s", dlen, trunc, line);
        sendto_answered++;
        return;
    }
    json_t *p = params_of(j);
    if (json_integer_value(json_object_get(p, "socket")) != udp_sock)
        die("notification for another socket: %.*s", trunc, line);
    if (strcmp(m, "socket.received") != 0)
        die("unexpected notification: %.*s", trunc, line);
    json_t *rq = json_object_get(p, "request");
    if (!json_is_integer(rq) || (unsigned long long)json_integer_value(rq) != udp_recv_req)
        warn("socket.received without \"request\": %llu", udp_recv_req);
    json_t *from = json_object_get(p, "from");
    if (json_integer_value(json_object_get(from, "port")) != echo_port)
        die("socket.received not from port %d: %.*s", echo_port, trunc, line);
    const char *b64 = json_string_value(json_object_get(p, "data"));
    size_t bl = b64 ? strlen(b64) : 0;
    unsigned char d[65536 + 3];
    if (b64 == NULL || bl % 4 != 0 || bl / 4 * 3 > sizeof d)
        die("socket.received without valid base64 data: %.*s", trunc, line);
    int r = EVP_DecodeBlock(d, (const unsigned char *)b64, (int)bl);
    if (r < 0)
        die("bad base64 in socket.received");
    size_t n = (size_t)r;
    if (bl > 0 && b64[bl - 1] == '=')
        n--;
    if (bl > 1 && b64[bl - 2] == '=')
        n--;
    udp_reply(d, n);
}

static int udp_fd = -1;
static int udp_conn; /* udp_fd is connected to the echo: send(), not sendto() */
static struct sockaddr_in udp_dst;

static void
udp_send(unsigned long long seq, int sockd)
{
    unsigned char d[65536];
    udp_fill(d, seq);
    slot_seq[seq % SLOTS] = (long long)seq;
    outstanding++;
    if (!sockd) {
        ssize_t w = udp_conn ? send(udp_fd, d, dlen, 0)
                             : sendto(udp_fd, d, dlen, 0, (struct sockaddr *)&udp_dst, sizeof udp_dst);
        if (w < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED)
            die("sendto: %s", strerror(errno));
        return;
    }
    char b64[((65536 + 2) / 3) * 4 + 1];
    EVP_EncodeBlock((unsigned char *)b64, d, (int)dlen);
    ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"socket.sendto\",\"params\":{"
              "\"socket\":%lld,\"address\":\"127.0.0.1\",\"port\":%d,\"data\":\"%s\","
              "\"notify\":false}}\n",
              1000000 + sendto_issued, udp_sock, echo_port, b64);
    sendto_issued++;
}

/* One turn: wait up to ms for replies and handle them. */
static void
udp_turn(int sockd, int ms)
{
    if (sockd) {
        ctl_poll(ms);
        return;
    }
    struct pollfd p = {udp_fd, POLLIN, 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno != EINTR)
        die("poll: %s", strerror(errno));
    if (r <= 0)
        return;
    for (int i = 0; i < 64; i++) {
        unsigned char d[65536];
        ssize_t n = recv(udp_fd, d, sizeof d, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            if (errno == ECONNREFUSED)
                continue; /* an ICMP from an earlier send; the loss timer handles it */
            die("recv: %s", strerror(errno));
        }
        udp_reply(d, (size_t)n);
    }
}

static int
run_udp(const char *mode, const char *path, int port, unsigned window, double secs)
{
    int sockd = strcmp(mode, "sockd") == 0;
    udp_conn = strcmp(mode, "connected") == 0 || strcmp(mode, "detach") == 0;
    if (!sockd && !udp_conn && strcmp(mode, "direct") != 0)
        die("udp -m sockd|direct|connected|detach");
    if (window < 1 || window > SLOTS / 4 || dlen < 16 || dlen > 65507)
        die("window 1..%d, length 16..65507", SLOTS / 4);
    for (int i = 0; i < SLOTS; i++)
        slot_seq[i] = -1;
    echo_port = port;
    udp_dst = loopback(port);
    if (sockd) {
        ctl_connect(path);
        on_msg = udp_msg;
        udp_sock = result_int(ctl_call("socket.open", "{\"type\":\"udp\"}"), "socket");
        json_decref(ctl_call("socket.bind", "{\"socket\":%lld,\"address\":\"127.0.0.1\"}",
                             udp_sock));
        udp_recv_req = (unsigned long long)next_id;
        json_decref(ctl_call("socket.recv", "{\"socket\":%lld,\"length\":65536,\"stream\":true}",
                             udp_sock));
    } else if (strcmp(mode, "detach") == 0) {
        ctl_connect(path);
        long long s = sockd_connect("udp", port);
        json_t *r = ctl_call("socket.detach", "{\"socket\":%lld}", s);
        if (json_object_get(r, "datagrams") != NULL)
            die("socket.detach returned datagrams; none were sent yet");
        json_decref(r);
        if (ctl_rx_fd < 0)
            die("no fd came with the socket.detach response");
        udp_fd = ctl_rx_fd;
        ctl_rx_fd = -1;
        int fl = fcntl(udp_fd, F_GETFL), so_type = 0;
        socklen_t ol = sizeof so_type;
        struct sockaddr_in peer;
        socklen_t pl = sizeof peer;
        if (fl & O_NONBLOCK)
            die("the fd from socket.detach is non-blocking");
        if (getsockopt(udp_fd, SOL_SOCKET, SO_TYPE, &so_type, &ol) < 0 || so_type != SOCK_DGRAM)
            die("the fd from socket.detach is not a datagram socket");
        if (getpeername(udp_fd, (struct sockaddr *)&peer, &pl) < 0 ||
            peer.sin_port != htons((unsigned short)port))
            die("the fd from socket.detach is not connected to 127.0.0.1:%d", port);
        fcntl(udp_fd, F_SETFL, fl | O_NONBLOCK); /* the client's choice, as for its own socket */
        close(ctl_fd);                           /* sockd is out of the path from here */
        ctl_fd = -1;
    } else {
        udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_in b = loopback(0);
        if (udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&b, sizeof b) < 0)
            die("udp socket: %s", strerror(errno));
        if (udp_conn && connect(udp_fd, (struct sockaddr *)&udp_dst, sizeof udp_dst) < 0)
            die("udp connect: %s", strerror(errno));
    }
    unsigned long long seq = 0;
    /* warm-up: one round trip must work (a relay may drop the very first datagrams) */
    double deadline = now() + 10;
    while (replies_all == 0) {
        if (now() > deadline)
            die("no reply from 127.0.0.1:%d within 10 s", port);
        if (outstanding == 0)
            udp_send(seq++, sockd);
        double t = now() + 0.2;
        while (replies_all == 0 && now() < t)
            udp_turn(sockd, 50);
        if (replies_all == 0) { /* resend */
            for (int i = 0; i < SLOTS; i++)
                slot_seq[i] = -1;
            outstanding = 0;
        }
    }
    lost = late = 0;
    last_progress = now();
    double cpu0 = cpu_self();
    double t0 = now(), t_end = t0 + secs;
    counting = 1;
    while (now() < t_end) {
        while (outstanding < window)
            udp_send(seq++, sockd);
        udp_turn(sockd, 50);
        udp_check_loss();
    }
    double t1 = now();
    counting = 0;
    double cpu1 = cpu_self();
    /* drain what is in flight (bounded), so the next run starts clean */
    deadline = now() + 1;
    while (outstanding > 0 && now() < deadline)
        udp_turn(sockd, 50);
    if (sockd) {
        while (sendto_answered < sendto_issued && now() < deadline + 2)
            ctl_poll(50);
        if (sendto_answered < sendto_issued)
            die("%llu socket.sendto requests unanswered", sendto_issued - sendto_answered);
    }
    printf("rate=%.1f replies=%llu all=%llu seconds=%.3f lost=%llu late=%llu client_cpu_s=%.3f "
           "warnings=%llu\n",
           (double)replies_in / (t1 - t0), replies_in, replies_all, t1 - t0, lost, late,
           cpu1 - cpu0, warnings);
    return 0;
}

/* ======================= stream: bulk to the sink ======================= */

static void
socks5_connect(int fd, int port)
{
    unsigned char b[16] = {5, 1, 0};
    if (write_full(fd, b, 3) < 0 || read_full(fd, b, 2) < 0)
        die("SOCKS5 greeting: %s", strerror(errno));
    if (b[0] != 5 || b[1] != 0)
        die("SOCKS5 server wants method %d", b[1]);
    unsigned char req[10] = {5, 1, 0, 1, 127, 0, 0, 1, (unsigned char)(port >> 8),
                             (unsigned char)port};
    if (write_full(fd, req, sizeof req) < 0 || read_full(fd, b, 4) < 0)
        die("SOCKS5 CONNECT: %s", strerror(errno));
    if (b[0] != 5 || b[1] != 0)
        die("SOCKS5 CONNECT refused (reply %d)", b[1]);
    size_t rest = b[3] == 1 ? 6 : b[3] == 4 ? 18 : 0;
    if (rest == 0 && b[3] == 3) {
        if (read_full(fd, b, 1) < 0)
            die("SOCKS5 reply");
        rest = (size_t)b[0] + 2;
    }
    unsigned char skip[300];
    if (rest == 0 || read_full(fd, skip, rest) < 0)
        die("SOCKS5 reply address");
}

/* Close the stream; pipe: the relay ends once both sides closed (socket.closed); wait for it
 * (bounded) so its last CPU lands in this run, then let go of the control connection. */
static void
stream_done(int fd, const char *mode)
{
    close(fd);
    if (ctl_fd >= 0) {
        double d = now() + 3;
        while (mode[0] == 'p' && !setup_closed && now() < d)
            ctl_poll(50);
        if (mode[0] == 'p' && !setup_closed)
            warn("no socket.closed within 3 s of closing the pipe end");
        close(ctl_fd);
    }
}

static int
run_stream(const char *mode, const char *path, int port, int sink_port, unsigned long long mib,
           int down)
{
    int fd = -1;
    uint64_t total = (uint64_t)mib << 20;
    if (strcmp(mode, "direct") == 0 || strcmp(mode, "socks5") == 0) {
        struct sockaddr_in sin = loopback(port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            die("connect to 127.0.0.1:%d: %s", port, strerror(errno));
        set_timeouts(fd, timeout);
        if (strcmp(mode, "socks5") == 0)
            socks5_connect(fd, sink_port);
    } else if (strcmp(mode, "detach") == 0 || strcmp(mode, "pipe") == 0) {
        ctl_connect(path);
        long long s = sockd_connect("tcp", port);
        json_t *r = ctl_call(mode[0] == 'd' ? "socket.detach" : "socket.pipe", "{\"socket\":%lld}",
                             s);
        if (json_object_get(r, "data") != NULL || json_object_get(r, "datagrams") != NULL)
            die("socket.detach returned read-ahead bytes; the sink sent none");
        json_decref(r);
        if (ctl_rx_fd < 0)
            die("no fd came with the socket.%s response", mode);
        fd = ctl_rx_fd;
        ctl_rx_fd = -1;
        int fl = fcntl(fd, F_GETFL);
        if (fl & O_NONBLOCK)
            die("the fd from socket.%s is non-blocking", mode);
        set_timeouts(fd, timeout);
        setup_connected = 2; /* from here a socket.closed is expected (pipe: after our close) */
    } else {
        die("stream -m direct|detach|pipe|socks5");
    }
    double cpu0 = cpu_self();
    double t0 = now();
    uint64_t hdr = down ? total | (uint64_t)1 << 63 : total;
    if (write_full(fd, &hdr, sizeof hdr) < 0)
        die("write: %s", strerror(errno));
    if (down) {
        static unsigned char in[IOBUF];
        uint64_t got = 0;
        while (got < total) {
            ssize_t n = recv(fd, in, sizeof in, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                die("read after %llu of %llu bytes: %s", (unsigned long long)got,
                    (unsigned long long)total, n < 0 ? strerror(errno) : "EOF");
            if (memcmp(in, pat + got % PERIOD, (size_t)n) != 0)
                die("the bytes from the source differ from the pattern after %llu bytes",
                    (unsigned long long)got);
            got += (uint64_t)n;
        }
        double t1 = now(), cpu1 = cpu_self();
        stream_done(fd, mode);
        printf("mibps=%.1f bytes=%llu seconds=%.3f client_cpu_s=%.3f warnings=%llu\n",
               (double)total / (t1 - t0) / 1048576.0, (unsigned long long)total, t1 - t0,
               cpu1 - cpu0, warnings);
        return 0;
    }
    uint64_t sent = 0;
    while (sent < total) {
        size_t n = total - sent < IOBUF ? (size_t)(total - sent) : IOBUF;
        ssize_t w = send(fd, pat + sent % PERIOD, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write after %llu bytes: %s", (unsigned long long)sent,
                w < 0 ? strerror(errno) : "0");
        sent += (uint64_t)w;
    }
    uint64_t ack;
    if (read_full(fd, &ack, sizeof ack) < 0)
        die("no answer from the sink after %llu bytes: %s", (unsigned long long)sent,
            strerror(errno));
    double t1 = now();
    double cpu1 = cpu_self();
    if (ack != total)
        die(ack == ~(uint64_t)0 ? "the sink saw bytes that differ from what was sent"
                                : "the sink counted %llu bytes, sent %llu",
            (unsigned long long)ack, (unsigned long long)total);
    stream_done(fd, mode);
    printf("mibps=%.1f bytes=%llu seconds=%.3f client_cpu_s=%.3f warnings=%llu\n",
           (double)total / (t1 - t0) / 1048576.0, (unsigned long long)total, t1 - t0, cpu1 - cpu0,
           warnings);
    return 0;
}

/* ======================= tlshs: TLS client handshakes through sockd ======================= */

#define MAXSLOTS 64
enum { K_OPEN = 1, K_CONNECT = 2, K_CLOSE = 3 };
static long long hs_sock[MAXSLOTS];
static int hs_port, hs_stop, hs_nslots;
static long long hs_ctx;
static unsigned long long hs_done, hs_counted, hs_pending; /* pending: requests unanswered */
static unsigned long long hs_resumed;                       /* counted ones that resumed */
static int hs_counting, hs_resume, hs_linger;               /* linger: warm-up waits for a ticket */
static char hs_version[64], hs_cipher[128];
static double hs_progress;

static void
hs_request(int slot, int kind, const char *method, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void
hs_request(int slot, int kind, const char *method, const char *fmt, ...)
{
    char params[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(params, sizeof params, fmt, ap);
    va_end(ap);
    long long id = (next_id++ << 8) | (kind << 6) | slot; /* slot < 64 */
    ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"%s\",\"params\":%s}\n", id, method,
              params);
    hs_pending++;
}

static void
hs_open(int slot)
{
    hs_sock[slot] = -1;
    if (hs_stop)
        return;
    hs_request(slot, K_OPEN, "socket.open", "{\"type\":\"tls\",\"context\":%lld}", hs_ctx);
}

static void
hs_msg(json_t *j, const char *line, size_t len)
{
    const char *m = method_of(j);
    int trunc = (int)(len > 300 ? 300 : len);
    if (m == NULL) {
        json_t *id = json_object_get(j, "id");
        if (json_object_get(j, "error") != NULL)
            die("error response: %.*s", trunc, line);
        if (!json_is_integer(id))
            die("response without integer id: %.*s", trunc, line);
        long long i = json_integer_value(id);
        int slot = (int)(i & 63), kind = (int)((i >> 6) & 3);
        hs_pending--;
        if (kind == K_OPEN) {
            json_t *s = json_object_get(json_object_get(j, "result"), "socket");
            if (!json_is_integer(s))
                die("socket.open without a socket: %.*s", trunc, line);
            hs_sock[slot] = json_integer_value(s);
            hs_request(slot, K_CONNECT, "socket.connect",
                       "{\"socket\":%lld,\"address\":\"127.0.0.1:%d\",\"server_name\":"
                       "\"localhost\",\"timeout_ms\":%d}",
                       hs_sock[slot], hs_port, (int)(timeout * 1000));
        } else if (kind != K_CONNECT && kind != K_CLOSE) {
            die("response with an id we did not use: %.*s", trunc, line);
        }
        return;
    }
    json_t *p = params_of(j);
    long long s = json_integer_value(json_object_get(p, "socket"));
    int slot = -1;
    for (int k = 0; k < hs_nslots; k++)
        if (hs_sock[k] == s)
            slot = k;
    if (slot < 0)
        die("notification for a socket we do not wait on: %.*s", trunc, line);
    if (strcmp(m, "socket.connected") == 0) {
        json_t *tls = json_object_get(p, "tls");
        if (!json_is_object(tls))
            die("socket.connected without tls: %.*s", trunc, line);
        if (hs_version[0] == 0) {
            snprintf(hs_version, sizeof hs_version, "%s",
                     json_string_value(json_object_get(tls, "version")) ?: "?");
            snprintf(hs_cipher, sizeof hs_cipher, "%s",
                     json_string_value(json_object_get(tls, "cipher")) ?: "?");
        }
        hs_done++;
        if (hs_counting) {
            hs_counted++;
            hs_resumed += json_is_true(json_object_get(tls, "resumed"));
        }
        hs_progress = now();
        if (hs_linger) {
            /* a TLS 1.3 ticket arrives after the handshake: read for a moment before closing */
            hs_request(slot, K_CONNECT, "socket.recv",
                       "{\"socket\":%lld,\"length\":1,\"partial\":true,\"timeout_ms\":300}", s);
            return;
        }
        hs_request(slot, K_CLOSE, "socket.close", "{\"socket\":%lld}", s);
        hs_open(slot);
    } else if (strcmp(m, "socket.received") == 0 && hs_linger) {
        hs_linger = 0;
        hs_request(slot, K_CLOSE, "socket.close", "{\"socket\":%lld}", s);
        hs_open(slot);
    } else if (strcmp(m, "socket.closed") == 0) {
        die("handshake failed: %.*s", trunc, line);
    } else {
        die("unexpected notification: %.*s", trunc, line);
    }
}

static int
run_tlshs(const char *path, int port, int inflight, double secs)
{
    if (inflight < 1 || inflight > MAXSLOTS)
        die("-n 1..%d", MAXSLOTS);
    hs_port = port;
    hs_nslots = inflight;
    for (int k = 0; k < MAXSLOTS; k++)
        hs_sock[k] = -1;
    ctl_connect(path);
    on_msg = hs_msg;
    hs_ctx = result_int(ctl_call("context.create", "{\"verify\":false,\"session_cache\":%s}",
                                 hs_resume ? "true" : "false"),
                        "context");
    /* warm-up: one handshake (with -R, one that leaves a session to resume) */
    hs_nslots = 1;
    hs_linger = hs_resume;
    hs_open(0);
    double deadline = now() + timeout;
    hs_stop = 1; /* the warm-up slot does not reopen */
    while (hs_done < 1 || hs_pending > 0 || hs_linger || hs_sock[0] >= 0) {
        if (now() > deadline)
            die("timeout in the warm-up handshake");
        ctl_poll(200);
    }
    hs_stop = 0;
    hs_nslots = inflight;
    double cpu0 = cpu_self();
    double t0 = now(), t_end = t0 + secs;
    hs_progress = t0;
    hs_counting = 1;
    for (int k = 0; k < inflight; k++)
        hs_open(k);
    while (now() < t_end) {
        ctl_poll(50);
        if (now() - hs_progress > timeout)
            die("no handshake completed for %.0f s", timeout);
    }
    double t1 = now();
    hs_counting = 0;
    double cpu1 = cpu_self();
    hs_stop = 1;
    deadline = now() + timeout;
    for (;;) { /* let the handshakes in flight finish (bounded) */
        int busy = hs_pending > 0;
        for (int k = 0; k < inflight; k++)
            busy |= hs_sock[k] >= 0;
        if (!busy)
            break;
        if (now() > deadline)
            die("timeout draining the last handshakes");
        ctl_poll(50);
    }
    close(ctl_fd);
    printf("rate=%.1f handshakes=%llu all=%llu resumed=%llu seconds=%.3f client_cpu_s=%.3f "
           "version=%s cipher=%s warnings=%llu\n",
           (double)hs_counted / (t1 - t0), hs_counted, hs_done, hs_resumed, t1 - t0, cpu1 - cpu0,
           hs_version, hs_cipher, warnings);
    return 0;
}

/* ======================= main ======================= */

static void
usage(void)
{
    fprintf(stderr,
            "usage: net_bench serve [-T LIFETIME]\n"
            "       net_bench udp -m sockd|direct|connected|detach -p PORT [-s SOCK] [-w WINDOW] "
            "[-d SECONDS] [-l LEN]\n"
            "       net_bench stream -m direct|detach|pipe|socks5 -p PORT [-P SINKPORT] "
            "[-s SOCK] [-b MIB] [-D]\n"
            "       net_bench tlshs -s SOCK -p PORT [-n INFLIGHT] [-d SECONDS]\n"
            "       (all: [-T TIMEOUT])\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    what = argv[1];
    const char *mode = "", *path = NULL;
    int port = 0, sink_port = 0, inflight = 8, down = 0, ch;
    unsigned window = 1;
    double secs = 2;
    unsigned long long mib = 256;
    optind = 2;
    while ((ch = getopt(argc, argv, "m:s:p:P:w:d:l:b:n:T:DR")) != -1) {
        switch (ch) {
        case 'm': mode = optarg; break;
        case 's': path = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'P': sink_port = atoi(optarg); break;
        case 'w': window = (unsigned)atoi(optarg); break;
        case 'd': secs = atof(optarg); break;
        case 'l': dlen = (size_t)atoi(optarg); break;
        case 'b': mib = strtoull(optarg, NULL, 10); break;
        case 'n': inflight = atoi(optarg); break;
        case 'T': timeout = atof(optarg); break;
        case 'D': down = 1; break;
        case 'R': hs_resume = 1; break;
        default: usage();
        }
    }
    if (timeout <= 0 || secs <= 0 || secs > 600)
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(timeout + secs) * 2 + 10); /* backstop for every mode but serve */
    for (size_t i = 0; i < sizeof pat; i++)
        pat[i] = (unsigned char)((i % PERIOD) * 97 + 13);

    if (strcmp(what, "serve") == 0)
        return run_serve(timeout);
    if (port <= 0 || port > 65535)
        usage();
    if (strcmp(what, "udp") == 0)
        return run_udp(mode, path, port, window, secs);
    if (strcmp(what, "stream") == 0) {
        if (strcmp(mode, "socks5") == 0 && (sink_port <= 0 || sink_port > 65535))
            usage();
        if (mib == 0 || mib > (1u << 20))
            usage();
        return run_stream(mode, path, port, sink_port, mib, down);
    }
    if (strcmp(what, "tlshs") == 0)
        return run_tlshs(path, port, inflight, secs);
    usage();
}
