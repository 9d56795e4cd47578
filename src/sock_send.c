#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sockd/protocol.h>

#include "daemon.h"
#include "log.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * Sending: the send queue with its records for socket.sent, the coalescing of small sends into
 * one write, and datagrams queued by socket.sendto, each sent whole.
 */

/* socket.sent in its compact form: one per send, so no JSON tree is made for it. */
static void
sock_emit_sent(struct sock *s, size_t bytes, json_t *req)
{
    struct sock_event ev = {.kind = SOCK_EV_SENT, .sock = s, .req = req, .bytes = bytes};
    sock_tell(s, &ev);
}

/* Emit socket.sent for every send whose last byte reached the kernel. */
static void
sock_complete_sends(struct sock *s)
{
    while (s->sq_head != NULL && s->sq_head->end <= s->bytes_sent) {
        struct sock_sendrec *r = s->sq_head;
        s->sq_head = r->next;
        if (s->sq_head == NULL)
            s->sq_tail = NULL;
        if (r->notify)
            sock_emit_sent(s, r->bytes, r->req);
        json_decref(r->req);
        free(r);
    }
}

/* Send queued datagrams, one sendto each; a datagram is never split. */
static void
sock_dgram_write_ready(struct sock *s)
{
    while (buf_len(&s->out) >= sizeof(struct sock_dgram)) {
        struct sock_dgram h;
        memcpy(&h, buf_head(&s->out), sizeof h);
        const char *payload = buf_head(&s->out) + sizeof h;
        ssize_t n = sock_desc(s)->send_dgram(s, &h, payload);
        if (n == SOCK_DGRAM_FAIL) {
            sock_io_failed(s, errno);
            return;
        }
        if (n < 0 && errno == EAGAIN)
            break;
        if (n < 0)
            log_debug("socket %llu: datagram of %u bytes dropped: %s", (unsigned long long)s->id,
                      h.len, strerror(errno));
        else {
            s->bytes_sent += h.len;
            sockd.bytes_out += h.len;
        }
        buf_consume(&s->out, sizeof h + h.len);
        /* One record per datagram: complete the oldest. */
        struct sock_sendrec *r = s->sq_head;
        if (r != NULL) {
            s->sq_head = r->next;
            if (s->sq_head == NULL)
                s->sq_tail = NULL;
            if (r->notify) {
                json_t *p = json_pack("{s:I}", "bytes", (json_int_t)(n < 0 ? 0 : r->bytes));
                if (n < 0) {
                    json_object_set_new(p, "errno", json_integer(errno));
                    json_object_set_new(p, "detail", json_string(strerror(errno)));
                }
                sock_emit(s, SOCK_EV_SENT, p, r->req);
            }
            json_decref(r->req);
            free(r);
        }
        if (s->dead)
            return;
    }
}

void
sock_write_ready(struct sock *s)
{
    if (sock_desc(s)->send_dgram != NULL) {
        sock_dgram_write_ready(s);
        /* dtls: once flushed, shutdown (close_notify) and EOF are handled below as for TLS */
        if (!sock_has(s, SOCK_CAP_TLS) || s->dead || buf_len(&s->out) > 0)
            return;
    }
    while (buf_len(&s->out) > 0) {
        size_t len = buf_len(&s->out);
        if (s->tls_upgrade) { /* plaintext only up to the starttls boundary */
            if (s->bytes_sent >= s->tls->upgrade_at)
                break;
            if (len > s->tls->upgrade_at - s->bytes_sent)
                len = (size_t)(s->tls->upgrade_at - s->bytes_sent);
        }
        ssize_t n = s->tp->write(s, buf_head(&s->out), len);
        if (n < 0) {
            if (errno == EAGAIN)
                break;
            sock_io_failed(s, errno);
            return;
        }
        buf_consume(&s->out, (size_t)n);
        s->bytes_sent += (uint64_t)n;
        sockd.bytes_out += (uint64_t)n;
    }
    sock_complete_sends(s);
    if (s->tls_upgrade && s->bytes_sent >= s->tls->upgrade_at) {
        s->tls_upgrade = 0;
        sock_tls_begin(s, s->tls_server);
        return;
    }
    if (buf_len(&s->out) == 0) {
        if (s->state == SS_CLOSING) {
            if (sock_ssl(s) != NULL && tls_close_notify(s) == 0)
                return; /* close_notify waits for the socket to take it */
            sock_close_graceful(s, SOCKD_REASON_NORMAL, s->shutdown_req);
            return;
        }
        sock_eof_check(s);
    }
}

/* Account n more queued bytes and queue the record that reports them with socket.sent. */
static void
sock_sendrec_add(struct sock *s, struct sock_sendrec *r, size_t n, json_t *req, int notify)
{
    s->out_queued += n;
    r->end = s->out_queued;
    r->bytes = n;
    r->req = req ? json_incref(req) : NULL;
    r->notify = notify;
    if (s->sq_tail)
        s->sq_tail->next = r;
    else
        s->sq_head = r;
    s->sq_tail = r;
}

/*
 * Coalescing: a small socket.send that could be written at once (connected, nothing queued) is
 * queued instead, and the socket noted here; its queue goes to the kernel in one write when the
 * client's lines of this turn are handled (ctl_process), before any other request runs
 * (rpc_handle_one), and before the loop blocks (the prepare watcher). Consecutive sends then cost
 * one syscall, with no wait for the loop; to any other request the socket looks as if each send
 * had been written at once.
 */
#define SOCK_FLUSHQ 64 /* sockets noted at once; the 65th flushes them all */
/* Larger sends are written at once from the caller's bytes. */
#define SOCK_COALESCE_MAX (16u << 10)
static struct sock *sock_flushq[SOCK_FLUSHQ];
static int sock_nflushq;

/* Connected, with no starttls boundary or handshake in the way: bytes may go out now. */
static int
sock_can_write(const struct sock *s)
{
    return s->state == SS_CONNECTED && !s->tls_upgrade && (s->tls == NULL || !s->tls->handshaking);
}

/* Write what consecutive sends queued, as the socket's write path does when it can write. */
void
sock_flush(struct sock *s)
{
    if (!s->flush_queued)
        return;
    s->flush_queued = 0;
    for (int i = 0; i < sock_nflushq; i++)
        if (sock_flushq[i] == s)
            sock_flushq[i] = NULL;
    if (s->dead)
        return;
    if (buf_len(&s->out) > 0 && sock_can_write(s))
        sock_write_ready(s); /* a failed write: socket.closed reports the queue as unsent */
    if (!s->dead)
        sock_update_io(s);
}

void
sock_flush_all(void)
{
    for (int i = 0; i < sock_nflushq; i++)
        if (sock_flushq[i] != NULL)
            sock_flush(sock_flushq[i]);
    sock_nflushq = 0;
}

static void
sock_flush_later(struct sock *s)
{
    if (s->flush_queued)
        return;
    if (sock_nflushq == SOCK_FLUSHQ)
        sock_flush_all();
    s->flush_queued = 1;
    sock_flushq[sock_nflushq++] = s;
}

int
sock_send(struct sock *s, const void *p, size_t n, json_t *req, int notify)
{
    size_t cap = sockd.conf.max_send_buffer;
    if (s->flush_queued && (n > cap || buf_len(&s->out) > cap - n)) {
        sock_flush(s); /* the cap is on what the kernel has not taken, as without coalescing */
        if (s->dead)
            return 0; /* socket.closed reported the queue as unsent */
    }
    if (n > cap || buf_len(&s->out) > cap - n) {
        errno = ENOBUFS;
        return -1;
    }
    if (n > sock_budget_room(s)) {
        errno = EDQUOT; /* max-buffer-per-uid */
        return -1;
    }
    struct sock_sendrec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    int direct = buf_len(&s->out) == 0 && n > 0 && sock_can_write(s);
    if (s->flush_queued || (direct && n < SOCK_COALESCE_MAX)) {
        if (buf_append(&s->out, p, n) < 0) {
            free(r);
            return -1;
        }
        sock_sendrec_add(s, r, n, req, notify);
        sock_flush_later(s);
        return 0;
    }
    /* Fast path: nothing queued and connected, so write straight from the caller's bytes. */
    size_t done = 0;
    if (direct) {
        ssize_t w = s->tp->write(s, p, n);
        if (w > 0) {
            done = (size_t)w;
            s->bytes_sent += done;
            sockd.bytes_out += done;
        } else if (w < 0 && errno != EAGAIN) {
            int err = errno;
            free(r);
            buf_append(&s->out, p, n); /* reported as unsent by socket.closed */
            sock_io_failed(s, err);
            return 0;
        }
    }
    if (done < n && buf_append(&s->out, (const char *)p + done, n - done) < 0) {
        free(r);
        return -1;
    }
    sock_sendrec_add(s, r, n, req, notify);
    sock_complete_sends(s);
    sock_update_io(s);
    return 0;
}

int
sock_sendto(struct sock *s, const void *p, size_t n, const struct sockaddr *to, socklen_t tolen,
            json_t *req, int notify)
{
    struct sock_dgram h;
    size_t cap = sockd.conf.max_send_buffer;
    if (sizeof h + n > cap || buf_len(&s->out) > cap - sizeof h - n) {
        errno = ENOBUFS;
        return -1;
    }
    if (sizeof h + n > sock_budget_room(s)) {
        errno = EDQUOT; /* max-buffer-per-uid */
        return -1;
    }
    struct sock_sendrec *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -1;
    memset(&h, 0, sizeof h);
    h.len = h.size = (uint32_t)n;
    if (to != NULL) {
        h.has_addr = 1;
        memcpy(&h.addr, to, tolen < sizeof h.addr ? tolen : sizeof h.addr);
    }
    if (buf_append(&s->out, &h, sizeof h) < 0 || buf_append(&s->out, p, n) < 0) {
        free(r);
        return -1;
    }
    sock_sendrec_add(s, r, n, req, notify);
    sock_dgram_write_ready(s);
    if (!s->dead)
        sock_update_io(s);
    return 0;
}
