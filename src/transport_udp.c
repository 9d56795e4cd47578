#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "conf.h"
#include "sock.h"

/* Plain UDP: one sendto or recvmsg per datagram, to and from any address. */

static ssize_t
udp_send_dgram(struct sock *s, const struct sock_dgram *h, const void *p)
{
    ssize_t n;
    int tries = 0;
    do
        n = sendto(s->fd, p, h->len, MSG_NOSIGNAL | MSG_DONTWAIT, h->has_addr ? &h->addr.sa : NULL,
                   h->has_addr ? (socklen_t)sizeof h->addr : 0);
    /* A pending ICMP error is reported instead of sending once: try again. */
    while (n < 0 && (errno == EINTR || (errno == ECONNREFUSED && ++tries < 2)));
    return n;
}

static ssize_t
udp_recv_dgram(struct sock *s, void *p, size_t n, struct sock_dgram *h)
{
    struct iovec iov = {p, n};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = &h->addr;
    mh.msg_namelen = sizeof h->addr;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    ssize_t r = recvmsg(s->fd, &mh, MSG_TRUNC | MSG_DONTWAIT);
    h->has_addr = r >= 0 && mh.msg_namelen > 0;
    return r;
}

/* udp: datagrams to and from any address; it never listens. */
const struct sock_type_desc sock_type_udp = {
    .name = "udp",
    .caps = SOCK_CAP_DGRAM | SOCK_CAP_SENDTO,
    .log = CONF_LOG_UDP,
    .send_dgram = udp_send_dgram,
    .recv_dgram = udp_recv_dgram,
};
