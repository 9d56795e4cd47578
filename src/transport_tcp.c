#include "config.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"

/* Plain stream sockets (tcp, unix): the kernel does the work. */

static ssize_t
plain_read(struct sock *s, void *p, size_t n)
{
    ssize_t r;
    do
        r = read(s->fd, p, n);
    while (r < 0 && errno == EINTR);
    return r;
}

static ssize_t
plain_write(struct sock *s, const void *p, size_t n)
{
    ssize_t r;
    do
        r = send(s->fd, p, n, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    return r;
}

const struct sock_transport transport_plain = {"plain", plain_read, plain_write, NULL};
