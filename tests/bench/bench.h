/* bench.h: the small helpers every load generator of tests/bench uses alike (the clock, CPU
 * time, latency percentiles, the Unix control connection, loopback addresses, sending a
 * pending buffer).  Header only, all static inline, so each program is still built from its
 * own .c file (see tests/bench/run) and its measured loops compile as before.
 */
#ifndef SOCKD_BENCH_H
#define SOCKD_BENCH_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <sys/un.h>
#include <time.h>

/* Seconds on the monotonic clock. */
static inline double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* User plus system CPU seconds of a struct rusage. */
static inline double
ru_seconds(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_utime.tv_usec / 1e6 +
           (double)ru->ru_stime.tv_sec + (double)ru->ru_stime.tv_usec / 1e6;
}

/* This process's CPU seconds so far (all threads). */
static inline double
cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru_seconds(&ru);
}

/* The pct percentile, in us, of count latencies in hist (1 us buckets, the last one,
 * hist[top], holding the rest). */
static inline double
hist_pct(const unsigned long long *hist, size_t top, unsigned long long count, double pct)
{
    unsigned long long want = (unsigned long long)((double)count * pct / 100.0), seen = 0;
    if (count == 0)
        return 0;
    for (size_t i = 0; i <= top; i++) {
        seen += hist[i];
        if (seen > want)
            return (double)i;
    }
    return (double)top;
}

/* A non-blocking stream connection to the Unix socket at path; -1 with errno set
 * (ENAMETOOLONG: path does not fit, EINVAL: no path). */
static inline int
unix_connect(const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (path == NULL || strlen(path) >= sizeof sun.sun_path) {
        errno = path == NULL ? EINVAL : ENAMETOOLONG;
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* An IPv4 address (host order) and port. */
static inline struct sockaddr_in
loopback_at(uint32_t addr, int port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(addr);
    sin.sin_port = htons((unsigned short)port);
    return sin;
}

/* 127.0.0.1:port. */
static inline struct sockaddr_in
loopback(int port)
{
    return loopback_at(INADDR_LOOPBACK, port);
}

/* Send buf[*off, len) until it is all sent (0) or the socket is full (1); -1 with errno on
 * an error.  *off advances by what was sent. */
static inline int
send_pending(int fd, const char *buf, size_t *off, size_t len)
{
    while (*off < len) {
        ssize_t n = send(fd, buf + *off, len - *off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 1;
            return -1;
        }
        *off += (size_t)n;
    }
    return 0;
}

#endif
