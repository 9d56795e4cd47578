/*
 * splice_bench: what splice(2) would change in sockd's pipe relay, measured outside the daemon.
 *
 * The relay of socket.pipe moves bytes between the daemon's end of a socketpair and a TCP socket
 * with read/write through a 64 KiB user buffer. This program moves BYTES the same way in one
 * thread, and with splice through a kernel pipe (sized with F_SETPIPE_SZ) instead, in both
 * directions: up (client socketpair -> TCP) and down (TCP -> client socketpair). A writer thread
 * feeds the source and a reader thread drains and counts the destination, on loopback.
 *
 *   splice_bench -m rw|splice [-P PIPE_BYTES] [-d up|down] [-b MIB]
 *
 * Prints mibps= relay_cpu_us_per_mib= bytes=; exits 3 when the byte count that arrived differs.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static size_t total;

static void
die(const char *what)
{
    perror(what);
    exit(3);
}

/* Drain an fd, counting bytes. */
static void *
reader(void *arg)
{
    int fd = *(int *)arg;
    static char b[1 << 17];
    size_t got = 0;
    ssize_t n;
    while ((n = read(fd, b, sizeof b)) > 0)
        got += (size_t)n;
    return (void *)got;
}

/* Write total bytes into an fd, then half-close it. */
static void *
writer(void *arg)
{
    int fd = *(int *)arg;
    static char b[1 << 16];
    size_t sent = 0;
    memset(b, 'x', sizeof b);
    while (sent < total) {
        size_t want = total - sent < sizeof b ? total - sent : sizeof b;
        ssize_t n = write(fd, b, want);
        if (n <= 0)
            die("writer");
        sent += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    return NULL;
}

static double
thread_cpu(void)
{
    struct rusage r;
    getrusage(RUSAGE_THREAD, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

/* Relay src -> dst until EOF with read/write through a user buffer. */
static size_t
relay_rw(int src, int dst)
{
    static char b[65536];
    size_t moved = 0;
    ssize_t n;
    while ((n = read(src, b, sizeof b)) > 0) {
        for (ssize_t o = 0; o < n;) {
            ssize_t w = write(dst, b + o, (size_t)(n - o));
            if (w <= 0)
                die("write");
            o += w;
        }
        moved += (size_t)n;
    }
    if (n < 0)
        die("read");
    return moved;
}

/* Relay src -> dst until EOF with splice through a kernel pipe. */
static size_t
relay_splice(int src, int dst, int pipe_bytes)
{
    int p[2];
    size_t moved = 0;
    if (pipe(p) < 0)
        die("pipe");
    if (pipe_bytes > 0 && fcntl(p[1], F_SETPIPE_SZ, pipe_bytes) < 0)
        die("F_SETPIPE_SZ");
    for (;;) {
        ssize_t n = splice(src, NULL, p[1], NULL, 1 << 20, SPLICE_F_MOVE);
        if (n < 0)
            die("splice in");
        if (n == 0)
            break;
        for (ssize_t o = 0; o < n;) {
            ssize_t w = splice(p[0], NULL, dst, NULL, (size_t)(n - o), SPLICE_F_MOVE);
            if (w <= 0)
                die("splice out");
            o += w;
        }
        moved += (size_t)n;
    }
    close(p[0]);
    close(p[1]);
    return moved;
}

int
main(int argc, char **argv)
{
    int use_splice = 0, down = 0, pipe_bytes = 0, opt;
    long mib = 1024;
    while ((opt = getopt(argc, argv, "m:P:d:b:")) != -1) {
        if (opt == 'm')
            use_splice = strcmp(optarg, "splice") == 0;
        else if (opt == 'P')
            pipe_bytes = atoi(optarg);
        else if (opt == 'd')
            down = strcmp(optarg, "down") == 0;
        else if (opt == 'b')
            mib = atol(optarg);
        else
            return 2;
    }
    total = (size_t)mib << 20;

    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM, 0), tcp_far, tcp_near, sv[2];
    if (lfd < 0 || bind(lfd, (void *)&sa, sizeof sa) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (void *)&sa, &sl) < 0)
        die("listen");
    tcp_near = socket(AF_INET, SOCK_STREAM, 0);
    if (tcp_near < 0 || connect(tcp_near, (void *)&sa, sizeof sa) < 0)
        die("connect");
    if ((tcp_far = accept(lfd, NULL, NULL)) < 0)
        die("accept");
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        die("socketpair");
    /* up: client end sv[1] -> relay sv[0] -> tcp_near -> tcp_far; down: the other way */
    int src = down ? tcp_near : sv[0], dst = down ? sv[0] : tcp_near;
    int feed = down ? tcp_far : sv[1], drain = down ? sv[1] : tcp_far;
    pthread_t rt, wt;
    pthread_create(&rt, NULL, reader, &drain);
    pthread_create(&wt, NULL, writer, &feed);

    double t0 = now(), c0 = thread_cpu();
    size_t moved = use_splice ? relay_splice(src, dst, pipe_bytes) : relay_rw(src, dst);
    double c1 = thread_cpu(), t1 = now();
    shutdown(dst, SHUT_WR);
    void *got;
    pthread_join(wt, NULL);
    pthread_join(rt, &got);
    printf("mode=%s dir=%s pipe=%d mibps=%.0f relay_cpu_us_per_mib=%.1f bytes=%zu\n",
           use_splice ? "splice" : "rw", down ? "down" : "up", pipe_bytes,
           (double)moved / 1048576.0 / (t1 - t0), (c1 - c0) * 1e6 / ((double)moved / 1048576.0),
           (size_t)got);
    return (size_t)got == total && moved == total ? 0 : 3;
}
