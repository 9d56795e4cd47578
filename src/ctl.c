#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "nbguard.h"
#include "notify.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h"

static int ctl_fd = -1;
static char ctl_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static int ctl_owns_path;
static ev_io ctl_accept_io;
static ev_timer ctl_resume_timer; /* re-arms accepting after fd exhaustion */
static struct client *ctl_clients;
static struct client *ctl_dirty;
static struct client *ctl_grave;

static void ctl_read_cb(EV_P_ ev_io *w, int revents);
static void ctl_write_cb(EV_P_ ev_io *w, int revents);
static void ctl_more_cb(EV_P_ ev_idle *w, int revents);
static void ctl_process(struct client *c);
static void ctl_line_fds_done(struct client *c);

size_t
ctl_out_hard(void)
{
    return (64u << 20) + sockd.conf.max_message;
}

/* Input held per client: the line being handled and at most one more whole line. */
static size_t
ctl_in_cap(void)
{
    return 2 * (sockd.conf.max_message + 1);
}

/* Count the client's queues (input, output, held notifications) under meter (NULL: none). */
static void
ctl_meter(struct client *c, size_t *meter)
{
    buf_set_meter(&c->in, meter);
    buf_set_meter(&c->out, meter);
    buf_set_meter(&c->held, meter);
}

/* Mark a client as having output to flush before the loop blocks. */
static void
ctl_mark_dirty(struct client *c)
{
    if (c->dirty || c->dead)
        return;
    c->dirty = 1;
    c->dirty_next = ctl_dirty;
    ctl_dirty = c;
}

/* An unfinished line waits (or is being discarded): the stall clock runs while it does. */
static int
ctl_partial_line(const struct client *c)
{
    return (buf_len(&c->in) > 0 && c->scanned == buf_len(&c->in)) || c->discarding;
}

/* Read the client's requests while its input is below the cap; at the cap, wait for lines to be
 * handled (a line longer than max-message is thrown away as it comes, so a line always ends
 * inside the cap and handling it makes room). */
static void
ctl_check_input(struct client *c)
{
    if (c->dead)
        return;
    if (buf_len(&c->in) >= ctl_in_cap()) {
        ev_io_stop(sockd.loop, &c->rio);
    } else if (!ev_is_active(&c->rio)) {
        ev_io_start(sockd.loop, &c->rio);
        if (ctl_partial_line(c)) /* what is left may be a line the client never ends */
            ev_timer_again(sockd.loop, &c->stall);
    }
}

/*
 * Enter or leave the paused state from the size of the output queue (notifications held back
 * by a running request count too). Pausing stops the client's network sockets only: its
 * requests are still read and answered (a blocking client may be in the middle of writing a
 * long line), up to the input cap.
 */
static void
ctl_check_pause(struct client *c)
{
    int want;
    size_t queued = buf_len(&c->out) + buf_len(&c->held);
    if (c->dead)
        return;
    if (c->owner.paused)
        want = queued >= CTL_OUT_LOW;
    else
        want = queued > CTL_OUT_HIGH;
    if (want == c->owner.paused)
        return;
    c->owner.paused = want;
    log_debug("client %llu: output %zu bytes, %s", (unsigned long long)c->owner.id, queued,
              want ? "pausing its sockets" : "resuming");
    for (struct sock *s = c->owner.socks; s != NULL; s = s->cnext)
        sock_update_io(s);
}

struct ctl_dump_arg {
    struct buf *b;
    size_t limit;
};

static int
ctl_dump_cb(const char *p, size_t n, void *arg)
{
    struct ctl_dump_arg *a = arg;
    if (n > a->limit - buf_len(a->b) || buf_len(a->b) > a->limit) {
        errno = EMSGSIZE;
        return -1;
    }
    return buf_append(a->b, p, n);
}

int
ctl_dump(struct buf *b, json_t *v, size_t limit)
{
    struct ctl_dump_arg a = {b, limit};
    size_t before = buf_len(b);
    errno = ENOMEM;
    if (json_dump_callback(v, ctl_dump_cb, &a, JSON_COMPACT) < 0) {
        buf_truncate_tail(b, buf_len(b) - before);
        return -1;
    }
    return 0;
}

/* Serialise msg as one line onto b, within limit bytes of b. */
static int
ctl_append(struct buf *b, json_t *msg, size_t limit)
{
    size_t before = buf_len(b);
    if (ctl_dump(b, msg, limit) < 0)
        return -1;
    if (buf_append(b, "\n", 1) < 0) {
        buf_truncate_tail(b, buf_len(b) - before);
        return -1;
    }
    return 0;
}

void
ctl_over_cap(struct client *c)
{
    log_client_warn("client %llu (uid %d pid %d): output queue over %zu bytes, disconnecting",
                    (unsigned long long)c->owner.id, (int)c->uid, (int)c->pid, ctl_out_hard());
    ctl_client_close(c, "output over hard cap");
}

/*
 * Output was queued: disconnect the client at its hard cap, or when it does not read (output
 * past CTL_OUT_HIGH) while its uid's control queues are past max-control-buffer-per-uid; a
 * client that reads is never disconnected for its uid's total.
 */
static void
ctl_queued(struct client *c)
{
    if (buf_len(&c->out) > ctl_out_hard()) {
        ctl_over_cap(c);
        return;
    }
    size_t uid_total = c->owner.ident->acct->ctl_queued;
    if (buf_len(&c->out) > CTL_OUT_HIGH && uid_total > sockd.conf.max_control_buffer_per_uid) {
        log_client_warn(
            "client %llu (uid %d pid %d): not reading while its uid's control queues hold "
            "%zu bytes, over max-control-buffer-per-uid %zu, disconnecting",
            (unsigned long long)c->owner.id, (int)c->uid, (int)c->pid, uid_total,
            sockd.conf.max_control_buffer_per_uid);
        ctl_client_close(c, "over max-control-buffer-per-uid");
        return;
    }
    ctl_mark_dirty(c);
    ctl_check_pause(c);
}

int
ctl_write_json(struct client *c, json_t *msg)
{
    return ctl_write_json_fds(c, msg, NULL, 0);
}

/* Serialise `prefix` + result ({} when NULL) + "}" as one line onto b, within limit bytes. */
static int
ctl_append_result(struct buf *b, const char *prefix, size_t plen, json_t *result, size_t limit)
{
    size_t before = buf_len(b);
    int rc = buf_append(b, prefix, plen);
    if (rc == 0 && result == NULL)
        rc = buf_append(b, "{}}\n", 4);
    else if (rc == 0 && (ctl_dump(b, result, limit) < 0 || buf_append(b, "}\n", 2) < 0))
        rc = -1;
    if (rc < 0)
        buf_truncate_tail(b, buf_len(b) - before);
    return rc;
}

/* Text as a line onto b, within limit bytes. */
static int
ctl_append_text(struct buf *b, const char *p, size_t n, size_t limit)
{
    if (n > limit || buf_len(b) > limit - n) {
        errno = EMSGSIZE;
        return -1;
    }
    return buf_append(b, p, n);
}

/*
 * The writers' core: queue prefix + result + "}" (prefix NULL: result as a line; text: prefix is
 * the whole text), with fds on its first byte; see ctl.h for what it returns.
 */
static int
ctl_write_line(struct client *c, const char *prefix, size_t plen, json_t *result, int text,
               const int *fds, int nfds)
{
    uint64_t pos = c->out_pos + buf_len(&c->out);
    int rc = -1;
    errno = 0;
    if (!c->dead) {
        size_t cap = ctl_out_hard();
        if (text)
            rc = ctl_append_text(&c->out, prefix, plen, cap);
        else if (prefix != NULL)
            rc = ctl_append_result(&c->out, prefix, plen, result, cap);
        else
            rc = ctl_append(&c->out, result, cap);
    }
    if (rc < 0) {
        int err = errno;
        for (int i = 0; i < nfds; i++)
            nbguard_close(fds[i]);
        if (!c->dead && err != EMSGSIZE)
            ctl_client_close(c, "out of memory");
        errno = err;
        return -1;
    }
    for (int i = 0; i < nfds; i++) {
        if (c->n_out_fds == CTL_MAX_FDS) {
            nbguard_close(fds[i]);
            continue;
        }
        c->out_fds[c->n_out_fds].pos = pos;
        c->out_fds[c->n_out_fds++].fd = fds[i];
    }
    ctl_queued(c);
    return c->dead ? -1 : 0;
}

int
ctl_write_json_fds(struct client *c, json_t *msg, const int *fds, int nfds)
{
    return ctl_write_line(c, NULL, 0, msg, 0, fds, nfds);
}

int
ctl_write_result_fds(struct client *c, const char *prefix, size_t plen, json_t *result,
                     const int *fds, int nfds)
{
    return ctl_write_line(c, prefix, plen, result, 0, fds, nfds);
}

int
ctl_write_text_fds(struct client *c, const char *p, size_t n, const int *fds, int nfds)
{
    return ctl_write_line(c, p, n, NULL, 1, fds, nfds);
}

int
ctl_take_fd(struct client *c)
{
    for (int i = 0; i < c->n_line_fds; i++) {
        if (c->line_fds[i] >= 0) {
            int fd = c->line_fds[i];
            c->line_fds[i] = -1;
            return fd;
        }
    }
    return -1;
}

/* Close fds in a list and forget them. */
static void
ctl_close_fds(struct ctl_fd *list, int *n)
{
    for (int i = 0; i < *n; i++)
        nbguard_close(list[i].fd); /* the client's fds, or sockets it shares */
    *n = 0;
}

/* Drop the first k entries of an fd list. */
static void
ctl_shift_fds(struct ctl_fd *list, int *n, int k)
{
    memmove(list, list + k, (size_t)(*n - k) * sizeof *list);
    *n -= k;
}

/* Send up to len bytes from the head of out; fds whose position is the head go with them. */
static ssize_t
ctl_send_out(struct client *c)
{
    size_t len = buf_len(&c->out);
    int k = 0;
    while (k < c->n_out_fds && c->out_fds[k].pos == c->out_pos)
        k++;
    /* Never let one write run past the position where the next fds must ride. */
    if (k < c->n_out_fds && c->out_fds[k].pos - c->out_pos < len)
        len = (size_t)(c->out_fds[k].pos - c->out_pos);
    if (k == 0)
        return send(c->fd, buf_head(&c->out), len, MSG_NOSIGNAL);
    struct iovec iov = {buf_head(&c->out), len};
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
    } cm;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    memset(&cm, 0, sizeof cm);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.b;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k);
    struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
    ch->cmsg_level = SOL_SOCKET;
    ch->cmsg_type = SCM_RIGHTS;
    ch->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k);
    for (int i = 0; i < k; i++)
        memcpy(CMSG_DATA(ch) + i * sizeof(int), &c->out_fds[i].fd, sizeof(int));
    ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
    if (n > 0) {
        for (int i = 0; i < k; i++) /* the client may hold the last reference, SO_LINGER set */
            nbguard_close(c->out_fds[i].fd);
        ctl_shift_fds(c->out_fds, &c->n_out_fds, k);
    }
    return n;
}

void
ctl_notify(struct client *c, const char *method, json_t *params)
{
    json_t *msg;
    if (c->dead) {
        json_decref(params);
        return;
    }
    msg = json_pack("{s:s,s:s,s:o}", "jsonrpc", "2.0", "method", method, "params", params);
    if (c->hold > 0) {
        if (ctl_append(&c->held, msg, SIZE_MAX) < 0)
            ctl_client_close(c, "out of memory");
        ctl_check_pause(c);
    } else if (ctl_write_json(c, msg) < 0 && !c->dead) {
        ctl_over_cap(c);
    }
    json_decref(msg);
}

char *
ctl_reserve_line(struct client *c, size_t n)
{
    if (c->dead)
        return NULL;
    char *p = buf_reserve(c->hold > 0 ? &c->held : &c->out, n);
    if (p == NULL)
        ctl_client_close(c, "out of memory");
    return p;
}

void
ctl_commit_line(struct client *c, size_t n)
{
    buf_commit(c->hold > 0 ? &c->held : &c->out, n);
    if (c->hold == 0)
        ctl_queued(c);
    else
        ctl_check_pause(c);
}

void
ctl_hold(struct client *c)
{
    c->hold++;
}

void
ctl_release(struct client *c)
{
    if (--c->hold > 0 || buf_len(&c->held) == 0 || c->dead)
        return;
    if (buf_append(&c->out, buf_head(&c->held), buf_len(&c->held)) < 0) {
        ctl_client_close(c, "out of memory");
        return;
    }
    buf_free(&c->held);
    ctl_queued(c);
}

/* Write as much queued output as the socket takes. */
static void
ctl_flush(struct client *c)
{
    while (buf_len(&c->out) > 0) {
        ssize_t n = ctl_send_out(c);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            ctl_client_close(c, strerror(errno));
            return;
        }
        buf_consume(&c->out, (size_t)n);
        c->out_pos += (uint64_t)n;
    }
    if (buf_len(&c->out) > 0)
        ev_io_start(sockd.loop, &c->wio);
    else
        ev_io_stop(sockd.loop, &c->wio);
    ctl_check_pause(c);
}

void
ctl_flush_all(void)
{
    while (ctl_dirty != NULL) {
        struct client *c = ctl_dirty;
        ctl_dirty = c->dirty_next;
        c->dirty = 0;
        if (!c->dead)
            ctl_flush(c);
    }
}

static void
ctl_write_cb(EV_P_ ev_io *w, int revents)
{
    (void)revents;
    ctl_flush(w->data);
}

void
ctl_client_close(struct client *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = 1;
    log_client_info("client %llu (pid %d uid %d) gone: %s", (unsigned long long)c->owner.id,
                    (int)c->pid, (int)c->uid, why);
    sock_flush_all(); /* its sends of this turn reach the kernel, as if written at once */
    while (c->owner.socks != NULL)
        sock_close(c->owner.socks, NULL, 0, NULL, NULL);
    tlsctx_owner_gone(&c->owner);
    ev_io_stop(sockd.loop, &c->rio);
    ev_io_stop(sockd.loop, &c->wio);
    ev_idle_stop(sockd.loop, &c->more);
    ev_timer_stop(sockd.loop, &c->stall);
    close(c->fd);
    c->fd = -1;
    ctl_close_fds(c->in_fds, &c->n_in_fds);
    ctl_close_fds(c->out_fds, &c->n_out_fds);
    if (c->prev)
        c->prev->next = c->next;
    else
        ctl_clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    sockd.nclients--;
    c->owner.ident->acct->clients--;
    ctl_meter(c, NULL); /* what it queued, freed at the end of the turn, no longer counts */
    c->grave_next = ctl_grave;
    ctl_grave = c;
    if (!ev_is_active(&ctl_accept_io) && ctl_fd >= 0 && !ev_is_active(&ctl_resume_timer) &&
        !sockd.stopping)
        ev_io_start(sockd.loop, &ctl_accept_io);
}

void
ctl_reap(void)
{
    while (ctl_grave != NULL) {
        struct client *c = ctl_grave;
        ctl_grave = c->grave_next;
        buf_free(&c->in);
        buf_free(&c->out);
        buf_free(&c->held);
        rpc_batch_free(c);
        ctl_line_fds_done(c);
        ident_unref(c->owner.ident);
        free(c);
    }
}

static void
ctl_read_cb(EV_P_ ev_io *w, int revents)
{
    struct client *c = w->data;
    (void)revents;

    char *p = buf_reserve(&c->in, 65536);
    if (p == NULL) {
        ctl_client_close(c, "out of memory");
        return;
    }
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int) * CTL_LINE_FDS)];
    } cm;
    struct iovec iov = {p, 65536};
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cm.b;
    mh.msg_controllen = sizeof cm.b;
    ssize_t n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC);
    if (n > 0) {
        /*
         * The kernel ends a read with the sendmsg that carried fds (it glues earlier writes
         * before it, never later ones), and that call carries the first byte of their line:
         * so they belong to the line in which the read's last byte lies.
         */
        uint64_t pos = c->in_pos + buf_len(&c->in) + (uint64_t)n - 1;
        for (struct cmsghdr *ch = CMSG_FIRSTHDR(&mh); ch != NULL; ch = CMSG_NXTHDR(&mh, ch)) {
            if (ch->cmsg_level != SOL_SOCKET || ch->cmsg_type != SCM_RIGHTS)
                continue;
            int nf = (int)((ch->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < nf; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(ch) + (size_t)i * sizeof(int), sizeof fd);
                if (c->n_in_fds == CTL_MAX_FDS) {
                    nbguard_close(fd);
                    continue;
                }
                c->in_fds[c->n_in_fds].pos = pos;
                c->in_fds[c->n_in_fds++].fd = fd;
            }
        }
    }
    if (n == 0) {
        ctl_client_close(c, "closed by client");
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR)
            ctl_client_close(c, strerror(errno));
        return;
    }
    buf_commit(&c->in, (size_t)n);
    ctl_process(c); /* stops reading at the input cap */
    if (!c->dead) {
        /* only an unfinished line counts: complete lines may wait for their turn */
        if (ctl_partial_line(c))
            ev_timer_again(sockd.loop, &c->stall); /* progress: the clock starts again */
        else
            ev_timer_stop(sockd.loop, &c->stall);
    }
}

/* A partial line made no progress for client-line-timeout: a stalled or hostile client. */
static void
ctl_stall_cb(EV_P_ ev_timer *w, int revents)
{
    (void)revents;
    (void)loop;
    ctl_client_close(w->data, "stalled in the middle of a line");
}

static void
ctl_more_cb(EV_P_ ev_idle *w, int revents)
{
    (void)revents;
    ev_idle_stop(EV_A_ w);
    ctl_process(w->data);
}

/*
 * Drop n bytes from the head of the input; fds that rode on them and were not taken by a
 * request are closed (an fd sent with the wrong method, a blank or discarded line).
 */
static void
ctl_consume_in(struct client *c, size_t n)
{
    int k = 0;
    buf_consume(&c->in, n);
    c->in_pos += n;
    while (k < c->n_in_fds && c->in_fds[k].pos < c->in_pos)
        nbguard_close(c->in_fds[k++].fd);
    if (k > 0)
        ctl_shift_fds(c->in_fds, &c->n_in_fds, k);
}

/* Move the fds riding on the line [in_pos, in_pos+len] to line_fds for the requests to take. */
static void
ctl_line_fds(struct client *c, size_t len)
{
    int k = 0;
    c->n_line_fds = 0;
    while (k < c->n_in_fds && c->in_fds[k].pos <= c->in_pos + len) {
        if (c->n_line_fds < CTL_LINE_FDS)
            c->line_fds[c->n_line_fds++] = c->in_fds[k].fd;
        else
            nbguard_close(c->in_fds[k].fd);
        k++;
    }
    if (k > 0)
        ctl_shift_fds(c->in_fds, &c->n_in_fds, k);
}

/* Close the fds of the line just handled that no request took. */
static void
ctl_line_fds_done(struct client *c)
{
    for (int i = 0; i < c->n_line_fds; i++)
        if (c->line_fds[i] >= 0)
            nbguard_close(c->line_fds[i]);
    c->n_line_fds = 0;
}

static void ctl_process_lines(struct client *c);

/* Handle the client's complete lines, then write what their sends queued (one write a socket). */
static void
ctl_process(struct client *c)
{
    ctl_process_lines(c);
    sock_flush_all();
}

/*
 * Handle complete lines, at most CTL_REQS_PER_TURN request units; continue later if more
 * remain. A batch that outruns the turn keeps its line at the head of the input until it ends.
 */
static void
ctl_process_lines(struct client *c)
{
    int handled = 0;
    size_t max = sockd.conf.max_message;

    while (!c->dead) {
        size_t len = buf_len(&c->in);
        if (len == 0)
            break;
        char *head = buf_head(&c->in);
        char *nl = memchr(head + c->scanned, '\n', len - c->scanned);
        if (nl == NULL) {
            if (c->discarding) {
                ctl_consume_in(c, len);
                c->scanned = 0;
            } else if (len > max) {
                rpc_line_too_long(c);
                c->discarding = 1;
                ctl_consume_in(c, len);
                c->scanned = 0;
            } else {
                c->scanned = len;
            }
            break;
        }
        size_t linelen = (size_t)(nl - head);
        c->scanned = 0;
        if (c->discarding) {
            c->discarding = 0;
        } else if (linelen > max) {
            rpc_line_too_long(c);
        } else {
            if (handled >= CTL_REQS_PER_TURN) {
                ev_idle_start(sockd.loop, &c->more);
                break;
            }
            if (c->batch == NULL)
                ctl_line_fds(c, linelen);
            handled += rpc_run_line(c, head, linelen, CTL_REQS_PER_TURN - handled);
            if (c->batch != NULL) {
                c->scanned = linelen; /* its newline is known: no new search next turn */
                if (!c->dead)
                    ev_idle_start(sockd.loop, &c->more);
                break;
            }
            ctl_line_fds_done(c);
        }
        if (!c->dead)
            ctl_consume_in(c, linelen + 1);
    }
    ctl_check_input(c);
}

/* Refuse a client past max-clients (or max-clients-per-uid: limit) with one error line. */
static void
ctl_refuse(int fd, const char *limit)
{
    char msg[192];
    int n = snprintf(msg, sizeof msg,
                     "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32003,"
                     "\"message\":\"too many clients\",\"data\":{\"limit\":\"%s\"}}}\n",
                     limit);
    if (send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("refusing client: %s", strerror(errno));
}

static void
ctl_resume_cb(EV_P_ ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    if (ctl_fd >= 0 && !sockd.stopping)
        ev_io_start(EV_A_ & ctl_accept_io);
}

struct client *
ctl_client_new(int fd)
{
    struct client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->owner.ident = ident_of_peer(fd)) == NULL) {
        free(c);
        return NULL;
    }
    c->pid = c->owner.ident->pid;
    c->uid = c->owner.ident->uid;
    c->gid = c->owner.ident->gid;
    c->owner.ident->acct->clients++;
    c->owner.id = ++sockd.next_client;
    ctl_own(c);
    c->fd = fd;
    ev_io_init(&c->rio, ctl_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, ctl_write_cb, fd, EV_WRITE);
    ev_idle_init(&c->more, ctl_more_cb);
    ev_timer_init(&c->stall, ctl_stall_cb, 0.0, sockd.conf.line_timeout_ms / 1000.0);
    c->rio.data = c->wio.data = c->more.data = c->stall.data = c;
    ev_io_start(sockd.loop, &c->rio);
    c->next = ctl_clients;
    if (ctl_clients)
        ctl_clients->prev = c;
    ctl_clients = c;
    sockd.nclients++;
    return c;
}

void
ctl_own(struct client *c)
{
    c->owner.deliver = notify_deliver;
    ctl_meter(c, &c->owner.ident->acct->ctl_queued); /* max-control-buffer-per-uid */
}

void
ctl_feed(struct client *c, const void *p, size_t n)
{
    if (c->dead || buf_append(&c->in, p, n) < 0)
        return;
    ctl_process(c);
    while (!c->dead && ev_is_active(&c->more)) { /* the turns the loop would give it */
        ev_idle_stop(sockd.loop, &c->more);
        ctl_process(c);
    }
}

static void
ctl_accept_cb(EV_P_ ev_io *w, int revents)
{
    (void)revents;
    for (int i = 0; i < 32; i++) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("accepting clients paused for 1 s: %s", strerror(errno));
                ev_io_stop(EV_A_ w);
                ev_timer_set(&ctl_resume_timer, 1.0, 0.0);
                ev_timer_start(EV_A_ & ctl_resume_timer);
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_error("accept on control socket: %s", strerror(errno));
            }
            return;
        }
        if (sockd.nclients >= sockd.conf.max_clients) {
            log_client_warn("client refused: max-clients %u reached", sockd.conf.max_clients);
            ctl_refuse(fd, "max-clients");
            close(fd);
            continue;
        }
        struct client *c = ctl_client_new(fd);
        if (c == NULL) {
            close(fd);
            return;
        }
        if (c->owner.ident->acct->clients > sockd.conf.max_clients_per_uid) {
            log_client_warn("client refused: uid %d has max-clients-per-uid %u (pid %d)",
                            (int)c->uid, sockd.conf.max_clients_per_uid, (int)c->pid);
            ctl_refuse(fd, "max-clients-per-uid");
            ctl_client_close(c, "refused: max-clients-per-uid");
            continue;
        }
        log_client_info("client %llu connected (pid %d uid %d gid %d)",
                        (unsigned long long)c->owner.id, (int)c->pid, (int)c->uid, (int)c->gid);
    }
}

void
ctl_adopt(int fd)
{
    ctl_fd = fd;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    ev_io_init(&ctl_accept_io, ctl_accept_cb, fd, EV_READ);
    ev_timer_init(&ctl_resume_timer, ctl_resume_cb, 1.0, 0.0);
    ev_io_start(sockd.loop, &ctl_accept_io);
}

/* Is something accepting on this path? Used before replacing a stale socket file. */
static int
ctl_path_live(const struct sockaddr_un *sun)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    int r = connect(fd, (const struct sockaddr *)sun, sizeof *sun);
    int err = errno;
    close(fd);
    return r == 0 || (err != ECONNREFUSED && err != ENOENT);
}

int
ctl_listen(const char *path, int mode, gid_t gid, const char **cause)
{
    struct sockaddr_un sun;
    struct stat st;

    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun.sun_path) {
        *cause = "control socket path too long";
        return -1;
    }
    strcpy(sun.sun_path, path);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            *cause = "path exists and is not a socket";
            return -1;
        }
        if (ctl_path_live(&sun)) {
            *cause = "another daemon is listening on that socket";
            return -1;
        }
        log_info("replacing stale socket %s", path);
        unlink(path);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *cause = strerror(errno);
        return -1;
    }
    mode_t old = umask(0177); /* created 0600; widened below only if configured */
    int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    int err = errno;
    umask(old);
    if (r < 0) {
        close(fd);
        *cause = strerror(err);
        return -1;
    }
    if ((mode >= 0 && chmod(path, (mode_t)mode) < 0) ||
        (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || listen(fd, 512) < 0) {
        err = errno;
        unlink(path);
        close(fd);
        *cause = strerror(err);
        return -1;
    }
    snprintf(ctl_path, sizeof ctl_path, "%s", path);
    ctl_owns_path = 1;
    ctl_adopt(fd);
    return 0;
}

void
ctl_unlisten(void)
{
    if (ctl_fd < 0)
        return;
    ev_io_stop(sockd.loop, &ctl_accept_io);
    ev_timer_stop(sockd.loop, &ctl_resume_timer);
    close(ctl_fd);
    ctl_fd = -1;
    if (ctl_owns_path)
        unlink(ctl_path);
    ctl_owns_path = 0;
}

void
ctl_shutdown(double max_wait)
{
    struct client *c;

    for (c = ctl_clients; c != NULL; c = c->next) {
        c->hold = 0;
        while (c->owner.socks != NULL && !c->dead)
            sock_close(c->owner.socks, "daemon_shutdown", 0, NULL, NULL);
    }
    /* Bounded blocking flush: poll every client that still has output. */
    ev_now_update(sockd.loop);
    ev_tstamp deadline = ev_now(sockd.loop) + max_wait;
    for (;;) {
        struct pollfd pfd[256];
        struct client *who[256];
        int n = 0;
        for (c = ctl_clients; c != NULL && n < 256; c = c->next) {
            if (c->dead || buf_len(&c->out) == 0)
                continue;
            pfd[n].fd = c->fd;
            pfd[n].events = POLLOUT;
            who[n++] = c;
        }
        ev_now_update(sockd.loop);
        double left = deadline - ev_now(sockd.loop);
        if (n == 0 || left <= 0)
            break;
        if (poll(pfd, (nfds_t)n, (int)(left * 1000) + 1) <= 0)
            break;
        for (int i = 0; i < n; i++)
            if (pfd[i].revents)
                ctl_flush(who[i]);
    }
    while (ctl_clients != NULL)
        ctl_client_close(ctl_clients, "daemon shutdown");
    sock_gifts_close_all();
    sock_reap();
    ctl_reap();
}

static ev_prepare ctl_turn;

/* Before the loop blocks: write what clients have queued, then free what closed this turn. */
static void
ctl_turn_cb(EV_P_ ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    sock_flush_all(); /* sends of this turn first: their socket.sent go out with the rest */
    ctl_flush_all();
    sock_reap();
    ctl_reap();
}

void
ctl_turn_start(struct ev_loop *loop)
{
    ev_prepare_init(&ctl_turn, ctl_turn_cb);
    ev_prepare_start(loop, &ctl_turn);
    ev_unref(loop); /* the prepare watcher alone must not keep the loop alive */
}
