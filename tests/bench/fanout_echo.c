/* fanout_echo: the loopback TCP echo server of the fan-out rows of tests/bench/run.
 *
 *   fanout_echo [-T LIFETIME]
 *       Listens on 127.0.0.1 (ephemeral port, backlog 4096), prints "port=P" on one line,
 *       then echoes every byte of every connection back (one epoll loop, non-blocking
 *       sockets, 64 KiB reads; what the kernel does not take at once waits in a buffer of
 *       the connection, which stops reading until it is written) until killed or LIFETIME
 *       seconds (default 3600) pass.
 *
 * One process, one thread: every client mode of tests/bench/fanout.py talks to the same
 * server, so the server's cost is the same for all of them.
 * Built by tests/bench/run with: cc -O2 fanout_echo.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 65536

/* A connection's bytes read but not yet written back. */
struct conn {
    char *pend; /* heap buffer, or NULL */
    size_t off; /* first unwritten byte */
    size_t len; /* end of the unwritten bytes */
};

static struct conn *conns;
static int nconns;
static int ep;

static void
die(const char *what)
{
    fprintf(stderr, "fanout_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void
conn_close(int fd)
{
    free(conns[fd].pend);
    memset(&conns[fd], 0, sizeof conns[fd]);
    close(fd);
}

static void
watch(int fd, unsigned events, int op)
{
    struct epoll_event e = {.events = events, .data.fd = fd};
    if (epoll_ctl(ep, op, fd, &e) < 0)
        die("epoll_ctl");
}

/* Write what waits for fd; 1 when all is written, 0 when the kernel is full, -1 on error. */
static int
conn_flush(int fd)
{
    struct conn *c = &conns[fd];
    while (c->off < c->len) {
        ssize_t n = write(fd, c->pend + c->off, c->len - c->off);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        c->off += (size_t)n;
    }
    free(c->pend);
    c->pend = NULL;
    c->off = c->len = 0;
    return 1;
}

/* Read once and echo; what the kernel does not take waits and switches fd to EPOLLOUT. */
static void
conn_read(int fd)
{
    static char buf[CHUNK];
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(fd);
        return;
    }
    if (n < 0)
        return;
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0 && errno != EAGAIN) {
        conn_close(fd);
        return;
    }
    if (w < 0)
        w = 0;
    if (w < n) {
        struct conn *c = &conns[fd];
        c->pend = malloc((size_t)(n - w));
        if (c->pend == NULL)
            die("malloc");
        memcpy(c->pend, buf + w, (size_t)(n - w));
        c->off = 0;
        c->len = (size_t)(n - w);
        watch(fd, EPOLLOUT, EPOLL_CTL_MOD);
    }
}

int
main(int argc, char **argv)
{
    int lifetime = 3600, opt;
    while ((opt = getopt(argc, argv, "T:")) != -1) {
        if (opt == 'T')
            lifetime = atoi(optarg);
        else {
            fprintf(stderr, "usage: fanout_echo [-T LIFETIME]\n");
            return 2;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    nconns = rl.rlim_cur > 1048576 ? 1048576 : (int)rl.rlim_cur;
    conns = calloc((size_t)nconns, sizeof *conns);
    if (conns == NULL)
        die("calloc");
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)lifetime);

    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l < 0)
        die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &al) < 0)
        die("bind/listen on 127.0.0.1");
    printf("port=%d\n", ntohs(a.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    watch(l, EPOLLIN, EPOLL_CTL_ADD);
    struct epoll_event ev[256];
    for (;;) {
        int n = epoll_wait(ep, ev, 256, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("epoll_wait");
        for (int i = 0; i < n; i++) {
            int fd = ev[i].data.fd;
            if (fd == l) {
                for (;;) {
                    int c = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break;
                    if (c >= nconns) {
                        close(c);
                        continue;
                    }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    watch(c, EPOLLIN, EPOLL_CTL_ADD);
                }
            } else if (conns[fd].pend != NULL) {
                int r = conn_flush(fd);
                if (r < 0)
                    conn_close(fd);
                else if (r > 0)
                    watch(fd, EPOLLIN, EPOLL_CTL_MOD);
            } else if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                conn_read(fd);
            }
        }
    }
}
