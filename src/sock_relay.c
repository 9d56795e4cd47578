#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "daemon.h"
#include "log.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * socket.pipe: relaying between a socket and the daemon's end of the client's pipe, read and
 * written through the socket's buffers, or spliced through a kernel pipe for plain TCP.
 */

void
sock_relay_splice_in(struct sock *s)
{
    struct sock_relay *r = s->relay;
    if (buf_len(&s->in) > 0 || r->piped >= r->pipe_cap)
        return;
    ssize_t n = splice(s->fd, NULL, r->pipe[1], NULL, r->pipe_cap - r->piped,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            sock_io_failed(s, errno);
        return;
    }
    if (n == 0) {
        s->rd_eof = 1;
        log_debug("socket %llu: EOF from peer", (unsigned long long)s->id);
        return;
    }
    r->piped += (size_t)n;
    s->bytes_received += (uint64_t)n;
    sockd.bytes_in += (uint64_t)n;
}

void
sock_relay_update(struct sock *s)
{
    struct sock_relay *r = s->relay;
    int ev = 0;
    if (r == NULL || s->dead)
        return;
    if (!r->eof && buf_len(&s->out) < SOCK_READAHEAD) {
        if (sock_budget_room(s) > 0)
            ev |= EV_READ;
        else
            sock_budget_wait(s);
    }
    if (buf_len(&s->in) > 0 || r->piped > 0)
        ev |= EV_WRITE;
    if (ev == (r->io.events & (EV_READ | EV_WRITE)) && (ev == 0 || ev_is_active(&r->io)))
        return;
    ev_io_stop(sockd.loop, &r->io);
    ev_io_set(&r->io, r->fd, ev);
    if (ev != 0)
        ev_io_start(sockd.loop, &r->io);
}

static void
sock_relay_cb(EV_P_ ev_io *w, int revents)
{
    struct sock *s = w->data;
    struct sock_relay *r = s->relay;
    (void)loop;
    size_t want = sock_budget_room(s) < 65536 ? sock_budget_room(s) : 65536;
    if ((revents & EV_READ) && want == 0) {
        sock_budget_wait(s); /* max-buffer-per-uid: woken when the uid's bytes drain */
    } else if (revents & EV_READ) {
        char *p = buf_reserve(&s->out, want);
        ssize_t n = p ? read(r->fd, p, want) : -1;
        if (n > 0) {
            buf_commit(&s->out, (size_t)n);
            s->out_queued += (uint64_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            r->eof = 1; /* the client closed (or shut down) its end */
        }
        if (s->state == SS_CONNECTED && buf_len(&s->out) > 0)
            sock_write_ready(s);
    }
    if (!s->dead)
        sock_relay_pump(s);
}

void
sock_relay_pump(struct sock *s)
{
    struct sock_relay *r = s->relay;
    while (buf_len(&s->in) > 0) {
        ssize_t n = send(r->fd, buf_head(&s->in), buf_len(&s->in), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            /* the client closed its end: nothing more to deliver */
            sock_close_graceful(s, SOCKD_REASON_NORMAL, NULL);
            return;
        }
        buf_consume(&s->in, (size_t)n);
    }
    while (buf_len(&s->in) == 0 && r->piped > 0) {
        ssize_t n =
            splice(r->pipe[0], NULL, r->fd, NULL, r->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            sock_close_graceful(s, SOCKD_REASON_NORMAL, NULL); /* as a failed send above */
            return;
        }
        r->piped -= (size_t)n;
    }
    if (s->rd_eof && buf_len(&s->in) == 0 && r->piped == 0 && !r->wr_shut) {
        shutdown(r->fd, SHUT_WR);
        r->wr_shut = 1;
        if (!r->eof)
            r->net_first = 1;
    }
    if (r->eof && buf_len(&s->out) == 0 && !r->net_shut) {
        /* pass the client's EOF on to the peer: over TLS that is close_notify first */
        if (sock_ssl(s) != NULL && tls_close_notify(s) == 0) {
            sock_update_io(s); /* close_notify waits for room; the pump runs again */
            sock_relay_update(s);
            return;
        }
        shutdown(s->fd, SHUT_WR);
        r->net_shut = 1;
    }
    if (r->eof && r->wr_shut) {
        sock_close(s, r->net_first ? SOCKD_REASON_BY_PEER : SOCKD_REASON_NORMAL, 0, NULL, NULL);
        return;
    }
    sock_update_io(s);
    sock_relay_update(s);
}

void
sock_relay_start(struct sock *s, int fd)
{
    struct sock_relay *r = calloc(1, sizeof *r);
    if (r == NULL) {
        close(fd);
        sock_io_failed(s, ENOMEM);
        return;
    }
    r->fd = fd;
    r->pipe[0] = r->pipe[1] = -1;
    /* not from an attached socket: splice honours the file's O_NONBLOCK, which is the client's */
    if (sock_has(s, SOCK_CAP_SPLICE) && sock_ssl(s) == NULL && !s->foreign &&
        pipe2(r->pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
        /* as much in the pipe as the read-ahead would hold; the default size if refused */
        (void)fcntl(r->pipe[1], F_SETPIPE_SZ, (int)SOCK_READAHEAD);
        int cap = fcntl(r->pipe[1], F_GETPIPE_SZ);
        r->pipe_cap = cap > 0 ? (size_t)cap : 65536;
    } else {
        r->pipe[0] = r->pipe[1] = -1; /* no pipe to spare: read and write, as over TLS */
    }
    ev_io_init(&r->io, sock_relay_cb, fd, 0);
    r->io.data = s;
    s->relay = r;
    sock_relay_pump(s);
}
