#include "config.h"

#include <errno.h>
#include <sys/socket.h>

#include "conf.h"
#include "sock.h"
#include "sock_io.h"

/*
 * Plain stream sockets (tcp, unix): the kernel does the work. Each call is non-blocking by its
 * own flag: an attached socket's O_NONBLOCK is the client's to clear.
 */

static ssize_t
plain_read(struct sock *s, void *p, size_t n)
{
    ssize_t r;
    do
        r = recv(s->fd, p, n, MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t
plain_write(struct sock *s, const void *p, size_t n)
{
    ssize_t r;
    do
        r = send(s->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (r < 0 && errno == EINTR);
    return r;
}

const struct sock_transport transport_plain = {"plain", plain_read, plain_write, NULL};

/* tcp: a byte stream over IP; socket.starttls upgrades it, socket.pipe splices it. */
const struct sock_type_desc sock_type_tcp = {
    .name = "tcp",
    .caps = SOCK_CAP_LISTEN | SOCK_CAP_STARTTLS | SOCK_CAP_SPLICE,
    .log = CONF_LOG_TCP,
    .accept = sock_accept_ip,
};
