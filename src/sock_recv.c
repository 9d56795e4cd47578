#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "b64.h"
#include "daemon.h"
#include "log.h"
#include "sock.h"
#include "sock_io.h"
#include "tls.h"

/*
 * Receiving: reading into the input buffer under the read-ahead and the byte budget, the pending
 * socket.recv (length, partial, stream, until, timeout) and its socket.received, the peer's EOF,
 * and socket.shutdown.
 */

/* Finish the pending recv (without delivering anything). */
static void
sock_recv_done(struct sock *s)
{
    s->recv_pending = 0;
    if (s->until != NULL)
        s->until->len = 0;
    sock_timer_stop(s, SOCK_TIMER_RECV);
    json_decref(s->recv_req);
    s->recv_req = NULL;
}

/*
 * socket.received in its compact form, with n bytes from the head of the input buffer (which
 * the owner writes out without a copy); with until_missing when an until receive delivers
 * bytes that do not end with its delimiter.
 */
static void
sock_emit_received(struct sock *s, size_t n, int eof, int timeout, int missing)
{
    struct sock_event ev = {.kind = SOCK_EV_RECEIVED,
                            .sock = s,
                            .req = s->recv_req,
                            .data = buf_head(&s->in),
                            .len = n,
                            .eof = eof ? 1 : 0,
                            .timeout = timeout ? 1 : 0,
                            .until_missing = missing ? 1 : 0};
    sock_tell(s, &ev);
    buf_consume(&s->in, n);
    if (s->until != NULL)
        s->until->scanned = 0; /* the head moved: an until search starts from it again */
}

json_t *
sock_dgram_pop(struct sock *s, size_t maxlen)
{
    struct sock_dgram h;
    memcpy(&h, buf_head(&s->in), sizeof h);
    size_t n = h.len < maxlen ? h.len : maxlen;
    char *text = malloc(b64_encoded_len(n) + 1);
    size_t tl = text ? b64_encode(buf_head(&s->in) + sizeof h, n, text) : 0;
    json_t *p = json_object();
    json_object_set_new(p, "data", json_stringn_nocheck(text ? text : "", tl));
    free(text);
    if (h.has_addr)
        json_object_set_new(p, "from", addr_to_json(&h.addr.sa, sizeof h.addr));
    if (h.size > n) {
        json_object_set_new(p, "truncated", json_true());
        json_object_set_new(p, "size", json_integer(h.size));
    }
    buf_consume(&s->in, sizeof h + h.len);
    return p;
}

/* Deliver queued datagrams: one per socket.received, with from and truncation. */
static void
sock_deliver_dgram(struct sock *s)
{
    while (s->recv_pending && !s->dead && buf_len(&s->in) >= sizeof(struct sock_dgram)) {
        json_t *p = sock_dgram_pop(s, s->recv_len);
        sock_emit(s, SOCK_EV_RECEIVED, p, s->recv_req);
        if (!s->recv_stream)
            sock_recv_done(s);
    }
    /* dtls: the peer's close_notify ends a pending recv once every datagram is delivered */
    if (!sock_has(s, SOCK_CAP_SENDTO) && s->rd_eof && s->recv_pending && !s->dead &&
        buf_len(&s->in) == 0) {
        sock_emit(s, SOCK_EV_RECEIVED, json_pack("{s:s,s:b}", "data", "", "eof", 1), s->recv_req);
        sock_recv_done(s);
    }
}

/*
 * The bytes an until receive takes from the head of the input buffer: up to and including the
 * first delimiter within its length; the whole length without one (*missing set); at EOF what
 * is left (*missing set). 0 while it must wait; the search resumes where the last one stopped
 * (sockd-protocol(7), RECEIVING, Lines).
 */
static size_t
sock_until_take(struct sock *s, int *missing)
{
    struct sock_until *u = s->until;
    size_t have = buf_len(&s->in), lim = have < s->recv_len ? have : s->recv_len;
    size_t from = u->scanned >= u->len ? u->scanned - (u->len - 1) : 0;
    const unsigned char *p = (const unsigned char *)buf_head(&s->in);
    const unsigned char *hit = lim > from ? memmem(p + from, lim - from, u->delim, u->len) : NULL;

    *missing = hit == NULL;
    if (hit != NULL)
        return (size_t)(hit - p) + u->len;
    u->scanned = lim;
    return have >= s->recv_len ? s->recv_len : s->rd_eof ? have : 0;
}

/* Complete the pending recv as far as the buffered bytes allow. */
static void
sock_deliver(struct sock *s)
{
    if (sock_has(s, SOCK_CAP_DGRAM)) {
        sock_deliver_dgram(s);
        return;
    }
    while (s->recv_pending && !s->dead) {
        size_t have = buf_len(&s->in), n;
        int missing = 0;
        if (s->until != NULL && s->until->len > 0)
            n = sock_until_take(s, &missing);
        else if (s->recv_partial || s->recv_stream)
            n = have < s->recv_len ? have : s->recv_len;
        else if (have >= s->recv_len)
            n = s->recv_len;
        else
            n = s->rd_eof ? have : 0;
        int eof = s->rd_eof && have == n;
        if (n == 0 && !eof)
            break;
        sock_emit_received(s, n, eof, 0, missing);
        if (!s->recv_stream || eof)
            sock_recv_done(s);
    }
}

void
sock_eof_check(struct sock *s)
{
    if (s->dead || !s->rd_eof || s->state != SS_CONNECTED || sock_has(s, SOCK_CAP_SENDTO) ||
        s->owner == NULL || s->relay != NULL)
        return;
    if (buf_len(&s->in) > 0 || buf_len(&s->out) > 0)
        return;
    sock_close_graceful(s, SOCKD_REASON_BY_PEER, NULL);
}

/* Read one datagram with its source; queue it framed, within the read-ahead cap. */
static void
sock_dgram_read_ready(struct sock *s)
{
    static char scratch[SOCK_DGRAM_MAX];
    struct sock_dgram h;

    for (int i = 0; i < 64 && !s->dead; i++) {
        if (buf_len(&s->in) >= SOCK_READAHEAD)
            break;
        if (sock_budget_room(s) < sock_read_min(s)) {
            sock_budget_wait(s);
            break;
        }
        memset(&h, 0, sizeof h);
        ssize_t n = sock_desc(s)->recv_dgram(s, scratch, sizeof scratch, &h);
        if (n == SOCK_DGRAM_EOF) { /* dtls close_notify: EOF as for TLS */
            s->rd_eof = 1;
            sock_deliver_dgram(s);
            sock_eof_check(s);
            return;
        }
        if (n == SOCK_DGRAM_FAIL) {
            sock_io_failed(s, errno);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                log_debug("socket %llu: recv: %s", (unsigned long long)s->id, strerror(errno));
            break; /* ICMP errors (ECONNREFUSED) do not end a udp socket */
        }
        h.size = (uint32_t)n;
        h.len = (uint32_t)((size_t)n > sizeof scratch ? sizeof scratch : (size_t)n);
        if (buf_append(&s->in, &h, sizeof h) < 0 || buf_append(&s->in, scratch, h.len) < 0) {
            sock_io_failed(s, ENOMEM);
            return;
        }
        s->bytes_received += h.len;
        sockd.bytes_in += h.len;
        sock_deliver_dgram(s);
    }
}

void
sock_read_ready(struct sock *s)
{
    if (sock_desc(s)->recv_dgram != NULL) {
        sock_dgram_read_ready(s);
        return;
    }
    if (sock_splicing(s)) {
        sock_relay_splice_in(s);
        return;
    }
    size_t cap = SOCK_READAHEAD;
    if (s->recv_pending && s->recv_len > cap)
        cap = s->recv_len;
    size_t want = cap > buf_len(&s->in) ? cap - buf_len(&s->in) : 0;
    if (want == 0)
        return;
    if (want > 65536)
        want = 65536;
    size_t room = sock_budget_room(s);
    if (room == 0) {
        sock_budget_wait(s); /* max-buffer-per-uid: woken when the uid's bytes drain */
        return;
    }
    if (want > room)
        want = room;
    char *p = buf_reserve(&s->in, want);
    if (p == NULL) {
        sock_io_failed(s, ENOMEM);
        return;
    }
    ssize_t n = s->tp->read(s, p, want);
    if (n < 0) {
        if (errno != EAGAIN)
            sock_io_failed(s, errno);
        return;
    }
    /* Records already decrypted inside the TLS engine do not wake the fd: take them now. */
    while (n > 0 && s->tp->pending != NULL && s->tp->pending(s) > 0 && (size_t)n < want) {
        ssize_t m = s->tp->read(s, p + n, want - (size_t)n);
        if (m <= 0)
            break;
        n += m;
    }
    if (n == 0) {
        s->rd_eof = 1;
        log_debug("socket %llu: EOF from peer", (unsigned long long)s->id);
    } else {
        buf_commit(&s->in, (size_t)n);
        s->bytes_received += (uint64_t)n;
        sockd.bytes_in += (uint64_t)n;
    }
    sock_deliver(s);
    if (buf_len(&s->in) == 0 && s->in.data != NULL)
        buf_free(&s->in);
    sock_eof_check(s);
}

static void
sock_recv_timeout_cb(EV_P_ ev_timer *w, int revents)
{
    struct sock *s = w->data;
    (void)revents;
    if (!s->recv_pending)
        return;
    if (sock_has(s, SOCK_CAP_DGRAM)) {
        sock_emit(s, SOCK_EV_RECEIVED, json_pack("{s:s,s:b}", "data", "", "timeout", 1),
                  s->recv_req);
        sock_recv_done(s);
        sock_update_io(s);
        return;
    }
    size_t n = buf_len(&s->in) < s->recv_len ? buf_len(&s->in) : s->recv_len;
    sock_emit_received(s, n, s->rd_eof && n == buf_len(&s->in), 1,
                       s->until != NULL && s->until->len > 0);
    sock_recv_done(s);
    sock_update_io(s);
    sock_eof_check(s);
}

int
sock_recv(struct sock *s, size_t len, int partial, int stream, const void *until, size_t ulen,
          double timeout, json_t *req)
{
    if (ulen > 0) {
        if (s->until == NULL && (s->until = calloc(1, sizeof *s->until)) == NULL)
            return -1;
        memcpy(s->until->delim, until, ulen);
        s->until->len = (unsigned char)ulen;
        s->until->scanned = 0;
    }
    s->recv_pending = 1;
    s->recv_len = len;
    s->recv_partial = partial ? 1 : 0;
    s->recv_stream = stream ? 1 : 0;
    s->recv_req = req ? json_incref(req) : NULL;
    if (timeout > 0) {
        sock_timer_start(s, SOCK_TIMER_RECV, sock_recv_timeout_cb, timeout);
    }
    sock_deliver(s);
    sock_eof_check(s);
    sock_update_io(s);
    return 0;
}

int
sock_recv_cancel(struct sock *s)
{
    if (!s->recv_pending)
        return 0;
    sock_recv_done(s);
    sock_update_io(s);
    return 1;
}

void
sock_shutdown(struct sock *s, json_t *req)
{
    if (s->recv_pending)
        sock_recv_done(s);
    s->shut_wanted = 1;
    s->shutdown_req = req ? json_incref(req) : NULL;
    if (s->state == SS_CONNECTING)
        return; /* becomes SS_CLOSING when connected */
    s->state = SS_CLOSING;
    if (buf_len(&s->out) == 0) {
        sock_close_graceful(s, SOCKD_REASON_NORMAL, req);
        return;
    }
    sock_update_io(s);
}
