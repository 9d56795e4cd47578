/*
 * run_probe: a statically linked program that makes its own socket syscalls, for test_run
 * (sockctl run). Each mode prints one line: "ok ..." or "errno N" for what the kernel (that is,
 * the supervisor) answered.
 *
 *   connect PORT            blocking TCP connect to 127.0.0.1:PORT, write "ping\n", read reply
 *   nbconnect PORT          the same with a non-blocking socket (EINPROGRESS + poll allowed)
 *   udpconnect PORT         UDP connect + send "ping", wait up to 2 s for a reply
 *   sendto PORT             unconnected UDP sendto "ping"; reply awaited up to 2 s
 *   sendmsg PORT            the same with sendmsg
 *   sendmmsg PORT           two datagrams with one sendmmsg
 *   bind PORT               TCP bind 127.0.0.1:PORT, listen, print "listening", accept one,
 *                           echo one line back
 *   bypass PORT             io_uring_setup, then a raw UDP datagram to 127.0.0.1:PORT
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sockaddr_in
probe_addr(int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

static int
probe_errno(const char *what)
{
    printf("errno %d (%s: %s)\n", errno, what, strerror(errno));
    return 1;
}

/* Wait up to ms for fd to be readable and read into buf; bytes or -1. */
static ssize_t
probe_read(int fd, char *buf, size_t n, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, ms) != 1)
        return -1;
    return recv(fd, buf, n, 0);
}

static int
probe_tcp(int port, int nonblocking)
{
    struct sockaddr_in sin = probe_addr(port);
    char buf[64];
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0) {
        if (!nonblocking || errno != EINPROGRESS)
            return probe_errno("connect");
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int err = 0;
        socklen_t el = sizeof err;
        if (poll(&p, 1, 5000) != 1)
            return probe_errno("poll");
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err != 0) {
            errno = err;
            return probe_errno("connect (async)");
        }
    }
    int fl = fcntl(fd, F_GETFL), nodelay = 0;
    socklen_t nl = sizeof nodelay;
    getsockopt(fd, IPPROTO_TCP, 1, &nodelay, &nl);
    if (send(fd, "ping\n", 5, MSG_NOSIGNAL) != 5)
        return probe_errno("send");
    ssize_t n = probe_read(fd, buf, sizeof buf - 1, 5000);
    if (n < 0)
        return probe_errno("recv");
    buf[n] = '\0';
    printf("ok nonblock=%d nodelay=%d reply=%s", (fl & O_NONBLOCK) != 0, nodelay != 0, buf);
    return 0;
}

static int
probe_udp(const char *mode, int port)
{
    struct sockaddr_in sin = probe_addr(port);
    char buf[64];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    ssize_t n;
    if (strcmp(mode, "udpconnect") == 0) {
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
            return probe_errno("connect");
        n = send(fd, "ping", 4, 0);
    } else if (strcmp(mode, "sendto") == 0) {
        n = sendto(fd, "ping", 4, 0, (struct sockaddr *)&sin, sizeof sin);
    } else if (strcmp(mode, "sendmsg") == 0) {
        struct iovec iov[2] = {{"pi", 2}, {"ng", 2}};
        struct msghdr m = {
            .msg_name = &sin, .msg_namelen = sizeof sin, .msg_iov = iov, .msg_iovlen = 2};
        n = sendmsg(fd, &m, 0);
    } else {
        struct iovec iov[2] = {{"ping", 4}, {"pong", 4}};
        struct mmsghdr mm[2];
        memset(mm, 0, sizeof mm);
        for (int i = 0; i < 2; i++) {
            mm[i].msg_hdr.msg_name = &sin;
            mm[i].msg_hdr.msg_namelen = sizeof sin;
            mm[i].msg_hdr.msg_iov = &iov[i];
            mm[i].msg_hdr.msg_iovlen = 1;
        }
        int r = sendmmsg(fd, mm, 2, 0);
        if (r < 0)
            return probe_errno("sendmmsg");
        printf("ok sent=%d len=%u,%u\n", r, mm[0].msg_len, mm[1].msg_len);
        return 0;
    }
    if (n < 0)
        return probe_errno(mode);
    n = probe_read(fd, buf, sizeof buf - 1, 2000);
    buf[n > 0 ? n : 0] = '\0';
    printf("ok sent=4 reply=%s\n", n > 0 ? buf : "-");
    return 0;
}

static int
probe_bind(int port)
{
    struct sockaddr_in sin = probe_addr(port);
    char buf[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0)
        return probe_errno("bind");
    if (listen(fd, 4) < 0)
        return probe_errno("listen");
    printf("listening\n");
    fflush(stdout);
    int c = accept(fd, NULL, NULL);
    if (c < 0)
        return probe_errno("accept");
    ssize_t n = probe_read(c, buf, sizeof buf, 5000);
    if (n > 0)
        send(c, buf, (size_t)n, MSG_NOSIGNAL);
    printf("ok served\n");
    return 0;
}

/* A program that goes around the filter on purpose: io_uring, then a raw socket. */
static int
probe_bypass(int port)
{
    unsigned char params[120];
    memset(params, 0, sizeof params);
    long r = syscall(425 /* io_uring_setup */, 4, params);
    printf("io_uring %s\n", r < 0 ? strerror(errno) : "available");
    int fd = socket(AF_INET, SOCK_RAW, IPPROTO_UDP);
    if (fd < 0)
        return probe_errno("raw socket");
    struct {
        struct udphdr h;
        char data[4];
    } pkt = {.h = {.source = htons(9), .dest = htons((unsigned short)port), .len = htons(12)}};
    memcpy(pkt.data, "raw!", 4);
    struct sockaddr_in sin = probe_addr(port);
    if (sendto(fd, &pkt, sizeof pkt, 0, (struct sockaddr *)&sin, sizeof sin) < 0)
        return probe_errno("raw sendto");
    printf("raw sent\n");
    return 0;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: run_probe MODE PORT\n");
        return 2;
    }
    int port = atoi(argv[2]);
    const char *m = argv[1];
    if (strcmp(m, "connect") == 0 || strcmp(m, "nbconnect") == 0)
        return probe_tcp(port, m[0] == 'n');
    if (strcmp(m, "udpconnect") == 0 || strncmp(m, "send", 4) == 0)
        return probe_udp(m, port);
    if (strcmp(m, "bind") == 0)
        return probe_bind(port);
    if (strcmp(m, "bypass") == 0)
        return probe_bypass(port);
    fprintf(stderr, "run_probe: unknown mode %s\n", m);
    return 2;
}
