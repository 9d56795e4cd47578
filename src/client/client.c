/*
 * libsockd-client: a blocking client for the sockd control socket.
 *
 * Input is framed incrementally: bytes are read into one growable buffer
 * and cut at each "\n". File descriptors that arrive as SCM_RIGHTS are
 * remembered together with the stream range of the recvmsg that brought
 * them, so each can be handed to the response line it rode with (the
 * daemon sends it with the first byte of that line). The fd is never in
 * blocking mode; every wait is a poll() against one deadline per call.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sockd/client.h>

/* Bytes of free room the input buffer offers each recvmsg. */
#define CLIENT_READ_MIN (64 * 1024)
/* An idle input buffer larger than this is shrunk back after a big message. */
#define CLIENT_KEEP_MAX (1024 * 1024)
/* Largest line accepted from the daemon; past it the connection is unusable. */
#define CLIENT_MAX_LINE ((size_t)256 * 1024 * 1024)
/* Received fds waiting to be claimed; past it the oldest is closed. */
#define CLIENT_MAX_FDS 64
/* Most fds taken from one recvmsg (the rest are closed by the kernel). */
#define CLIENT_CMSG_FDS 16

/* A queued notification. */
struct client_event {
    json_t *msg;
    struct client_event *next;
};

/* A received fd and the stream offset where the recvmsg that carried it began. */
struct client_fd {
    int fd;
    uint64_t start;
};

/* What a message read from the wire is. */
enum client_kind {
    CLIENT_NOTE,     /* a notification: "method" and no "id" */
    CLIENT_RESPONSE, /* a response object: "id" and no "method" */
    CLIENT_OTHER,    /* anything else (batch arrays, requests, junk) */
};

struct sockd_client {
    int fd;
    long long next_id;
    char *in;                             /* input buffer */
    size_t in_cap;                        /* its size */
    size_t in_head;                       /* first byte not yet consumed */
    size_t in_tail;                       /* end of the bytes read */
    size_t in_scan;                       /* bytes before this (from in_head) hold no newline */
    uint64_t in_base;                     /* stream offset of in[0] */
    struct client_fd fds[CLIENT_MAX_FDS]; /* FIFO of unclaimed received fds */
    size_t nfds;
    struct client_event *ev_head; /* queued notifications, oldest first */
    struct client_event *ev_tail;
    int rerr;     /* sticky read-side errno (EPIPE after EOF), 0 while usable */
    int werr;     /* sticky write-side errno (a request was cut short), 0 while usable */
    int raw_sent; /* sockd_client_send_raw was used: id:null errors may be for raw lines */
};

/* Milliseconds on the monotonic clock. */
static int64_t
client_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline for a wait of timeout_ms (negative: none, returned as -1). */
static int64_t
client_deadline(int timeout_ms)
{
    if (timeout_ms < 0)
        return -1;
    return client_now_ms() + timeout_ms;
}

/*
 * Wait until the fd reports one of EVENTS or the deadline passes. Returns
 * the revents, or 0 with errno ETIMEDOUT, or -1 with errno on failure.
 */
static int
client_poll(struct sockd_client *c, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = c->fd, .events = events};
        int ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - client_now_ms();
            ms = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
        }
        int n = poll(&pfd, 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0) {
            errno = ETIMEDOUT;
            return 0;
        }
        return pfd.revents;
    }
}

/* Take the oldest received fd off the FIFO (which must not be empty); the caller owns it. */
static int
client_fd_pop(struct sockd_client *c)
{
    int fd = c->fds[0].fd;

    c->nfds--;
    memmove(c->fds, c->fds + 1, c->nfds * sizeof(c->fds[0]));
    return fd;
}

/* Close the oldest received fd still waiting to be claimed. */
static void
client_fd_drop(struct sockd_client *c)
{
    close(client_fd_pop(c));
}

/* Remember fds from one recvmsg whose bytes began at stream offset START. */
static void
client_fd_push(struct sockd_client *c, const int *fds, size_t n, uint64_t start)
{
    for (size_t i = 0; i < n; i++) {
        if (c->nfds == CLIENT_MAX_FDS)
            client_fd_drop(c);
        c->fds[c->nfds++] = (struct client_fd){.fd = fds[i], .start = start};
    }
}

/*
 * The fd for the response line starting at stream offset START, or -1
 * (the caller owns it). The daemon sends an fd on the sendmsg that carries
 * the first byte of its line, so it arrives no later than that byte: the
 * oldest waiting fd belongs to the first response starting at or after the
 * recvmsg that brought it, and an earlier response cannot own it.
 */
static int
client_fd_claim(struct sockd_client *c, uint64_t start)
{
    if (c->nfds == 0 || c->fds[0].start > start)
        return -1;
    uint64_t from = c->fds[0].start;
    int fd = client_fd_pop(c);
    /* Further fds of the same recvmsg rode with the same line: one is claimed, the rest closed. */
    while (c->nfds > 0 && c->fds[0].start == from)
        client_fd_drop(c);
    return fd;
}

/* Make room for at least CLIENT_READ_MIN more input bytes. Returns 0, or -1 with errno. */
static int
client_in_reserve(struct sockd_client *c)
{
    if (c->in_cap - c->in_tail >= CLIENT_READ_MIN)
        return 0;
    if (c->in_head > 0) {
        size_t used = c->in_tail - c->in_head;
        memmove(c->in, c->in + c->in_head, used);
        c->in_base += c->in_head;
        c->in_scan -= c->in_head;
        c->in_head = 0;
        c->in_tail = used;
        if (c->in_cap - c->in_tail >= CLIENT_READ_MIN)
            return 0;
    }
    size_t cap = c->in_cap ? c->in_cap : CLIENT_READ_MIN;
    while (cap - c->in_tail < CLIENT_READ_MIN)
        cap *= 2;
    char *in = realloc(c->in, cap);
    if (in == NULL)
        return -1;
    c->in = in;
    c->in_cap = cap;
    return 0;
}

/*
 * One recvmsg into the input buffer, keeping any fds that came with it.
 * Returns the byte count, 0 when nothing was ready, or -1 with errno (the
 * read side is then finished: EPIPE at EOF).
 */
static ssize_t
client_fill(struct sockd_client *c)
{
    if (c->rerr) {
        errno = c->rerr;
        return -1;
    }
    if (c->in_tail - c->in_head >= CLIENT_MAX_LINE) {
        errno = c->rerr = EMSGSIZE;
        return -1;
    }
    if (client_in_reserve(c) < 0)
        return -1;

    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * CLIENT_CMSG_FDS)];
    } ctl;
    struct iovec iov = {.iov_base = c->in + c->in_tail, .iov_len = c->in_cap - c->in_tail};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = ctl.buf,
                        .msg_controllen = sizeof(ctl.buf)};
    ssize_t n;
    do {
        n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;

    uint64_t start = c->in_base + c->in_tail;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); n >= 0 && cm != NULL; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
            continue;
        int fds[CLIENT_CMSG_FDS];
        size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (nfd > CLIENT_CMSG_FDS)
            nfd = CLIENT_CMSG_FDS;
        memcpy(fds, CMSG_DATA(cm), nfd * sizeof(int));
        if (n == 0) {
            for (size_t i = 0; i < nfd; i++)
                close(fds[i]);
        } else {
            client_fd_push(c, fds, nfd, start);
        }
    }
    if (n > 0) {
        c->in_tail += (size_t)n;
        return n;
    }
    /* EOF or a hard error: the daemon is gone (a reset counts as the end, too). */
    c->rerr = (n == 0 || errno == ECONNRESET) ? EPIPE : errno;
    errno = c->rerr;
    return -1;
}

/* True when the bytes [p, p+len) hold nothing but JSON white space. */
static int
client_blank(const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
            return 0;
    }
    return 1;
}

/*
 * The next whole message already in the input buffer (new reference), or
 * NULL when no complete line is buffered. *start gets the stream offset of
 * the line's first byte. Blank lines and lines that are not JSON are skipped.
 */
static json_t *
client_next_line(struct sockd_client *c, uint64_t *start)
{
    while (c->in_tail > c->in_head) {
        const char *from = c->in + c->in_head;
        const char *nl = memchr(c->in + c->in_scan, '\n', c->in_tail - c->in_scan);
        if (nl == NULL) {
            c->in_scan = c->in_tail;
            return NULL;
        }
        size_t len = (size_t)(nl - from);
        *start = c->in_base + c->in_head;
        c->in_head += len + 1;
        c->in_scan = c->in_head;
        if (len > 0 && from[len - 1] == '\r')
            len--;
        if (client_blank(from, len))
            continue;
        json_t *msg = json_loadb(from, len, JSON_REJECT_DUPLICATES, NULL);
        if (msg != NULL)
            return msg;
    }
    /* Everything consumed: start over at the front, and give back a big buffer. */
    c->in_base += c->in_tail;
    c->in_head = c->in_tail = c->in_scan = 0;
    if (c->in_cap > CLIENT_KEEP_MAX) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    return NULL;
}

/* Classify a message from the daemon. */
static enum client_kind
client_kind(const json_t *msg)
{
    if (!json_is_object(msg))
        return CLIENT_OTHER;
    int has_id = json_object_get(msg, "id") != NULL;
    if (json_is_string(json_object_get(msg, "method")))
        return has_id ? CLIENT_OTHER : CLIENT_NOTE;
    return has_id ? CLIENT_RESPONSE : CLIENT_OTHER;
}

/*
 * Read the next message from the buffer or the wire, waiting until the
 * deadline. If fd is not NULL it gets the fd that rode with a
 * non-notification message (or -1); the caller owns it. NULL with errno
 * ETIMEDOUT, EPIPE (connection ended) or another errno.
 */
static json_t *
client_read(struct sockd_client *c, int64_t deadline, int *fd)
{
    if (fd != NULL)
        *fd = -1;
    for (;;) {
        uint64_t start;
        json_t *msg = client_next_line(c, &start);
        if (msg != NULL) {
            if (client_kind(msg) != CLIENT_NOTE) {
                int got = client_fd_claim(c, start);
                if (fd != NULL)
                    *fd = got;
                else if (got >= 0)
                    close(got);
            }
            return msg;
        }
        if (c->rerr) {
            errno = c->rerr;
            return NULL;
        }
        int ev = client_poll(c, POLLIN, deadline);
        if (ev <= 0)
            return NULL;
        ssize_t n = client_fill(c);
        if (n < 0 && c->rerr == 0)
            return NULL;
    }
}

/* Append a notification to the event queue (takes the reference). Returns 0, or -1 with errno. */
static int
client_enqueue(struct sockd_client *c, json_t *msg)
{
    struct client_event *ev = malloc(sizeof(*ev));
    if (ev == NULL) {
        json_decref(msg);
        return -1;
    }
    ev->msg = msg;
    ev->next = NULL;
    if (c->ev_tail != NULL)
        c->ev_tail->next = ev;
    else
        c->ev_head = ev;
    c->ev_tail = ev;
    return 0;
}

/*
 * Write LEN bytes; send_fd (if >= 0) rides as SCM_RIGHTS with the first
 * byte. While the daemon is not taking bytes, input is read into the
 * buffer so that neither side can block the other. Returns 0, or -1 with
 * errno; *sent gets the bytes written either way.
 */
static int
client_write(struct sockd_client *c, const char *data, size_t len, int send_fd, int64_t deadline,
             size_t *sent)
{
    size_t off = 0;

    *sent = 0;
    if (c->werr) {
        errno = c->werr;
        return -1;
    }
    while (off < len) {
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int))];
        } ctl;
        struct iovec iov = {.iov_base = (char *)data + off, .iov_len = len - off};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (off == 0 && send_fd >= 0) {
            memset(&ctl, 0, sizeof(ctl));
            mh.msg_control = ctl.buf;
            mh.msg_controllen = sizeof(ctl.buf);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(cm), &send_fd, sizeof(int));
        }
        ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            *sent = off;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        /* Full: wait for room, and drain the daemon's output meanwhile (unless our buffer is full).
         */
        short events = POLLOUT;
        if (c->rerr == 0 && c->in_tail - c->in_head < CLIENT_MAX_LINE)
            events |= POLLIN;
        int ev = client_poll(c, events, deadline);
        if (ev <= 0)
            return -1;
        if ((ev & POLLIN) && (events & POLLIN) && client_fill(c) < 0 && c->rerr == 0)
            return -1;
    }
    return 0;
}

const char *
sockd_socket_path(const char *explicit_path, char *buf, size_t len)
{
    const char *env;
    int n;

    if (buf == NULL || len == 0) {
        errno = EINVAL;
        return NULL;
    }
    if (explicit_path != NULL && *explicit_path != '\0')
        n = snprintf(buf, len, "%s", explicit_path);
    else if ((env = getenv("SOCKD_SOCKET")) != NULL && *env != '\0')
        n = snprintf(buf, len, "%s", env);
    else if (geteuid() == 0)
        n = snprintf(buf, len, "/run/sockd/sockd.sock");
    else if ((env = getenv("XDG_RUNTIME_DIR")) != NULL && *env != '\0')
        n = snprintf(buf, len, "%s/sockd.sock", env);
    else
        n = snprintf(buf, len, "/tmp/sockd-%u.sock", (unsigned)getuid());
    if (n < 0 || (size_t)n >= len) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    return buf;
}

/* Connect fd to the Unix socket at path. Returns 0, or -1 with errno. */
static int
client_connect_fd(int fd, const struct sockaddr_un *sa)
{
    int rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
    /* Interrupted: the connection goes on in the background; wait for its outcome. */
    while (rc < 0 && (errno == EINTR || errno == EALREADY)) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
            return -1;
        rc = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
        if (rc < 0 && errno == EISCONN)
            rc = 0;
    }
    return rc;
}

struct sockd_client *
sockd_client_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    if (sockd_socket_path(path, sa.sun_path, sizeof(sa.sun_path)) == NULL)
        return NULL;
    struct sockd_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->next_id = 1;
    c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int fl = -1;
    if (c->fd >= 0 && client_connect_fd(c->fd, &sa) == 0)
        fl = fcntl(c->fd, F_GETFL);
    if (fl >= 0 && fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) == 0)
        return c;
    int saved = errno;
    if (c->fd >= 0)
        close(c->fd);
    free(c);
    errno = saved;
    return NULL;
}

struct sockd_client *
sockd_client_adopt(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return NULL;
    struct sockd_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->next_id = 1;
    c->fd = fd;
    return c;
}

void
sockd_client_close(struct sockd_client *c)
{
    if (c == NULL)
        return;
    int saved = errno;
    while (c->nfds > 0)
        client_fd_drop(c);
    while (c->ev_head != NULL) {
        struct client_event *ev = c->ev_head;
        c->ev_head = ev->next;
        json_decref(ev->msg);
        free(ev);
    }
    close(c->fd);
    free(c->in);
    free(c);
    errno = saved;
}

int
sockd_client_fd(const struct sockd_client *c)
{
    return c != NULL ? c->fd : -1;
}

int
sockd_client_call(struct sockd_client *c, const char *method, json_t *params, json_t **result,
                  json_t **error, int timeout_ms)
{
    return sockd_client_call_fd(c, method, params, -1, result, error, NULL, timeout_ms);
}

/* The request line for METHOD (malloc'ed, ending in "\n"); *len gets its length. */
static char *
client_request(const char *method, json_t *params, long long id, size_t *len)
{
    json_t *name = method != NULL ? json_string(method) : NULL;
    if (name == NULL) {
        errno = EINVAL; /* no name, or not UTF-8 */
        return NULL;
    }
    json_t *req = json_object();
    char *text = NULL;

    if (req == NULL) {
        json_decref(name);
        goto out;
    }
    json_object_set_new(req, "jsonrpc", json_string("2.0"));
    json_object_set_new(req, "method", name);
    if (params != NULL)
        json_object_set(req, "params", params);
    json_object_set_new(req, "id", json_integer(id));
    text = json_dumps(req, JSON_COMPACT);
    if (text != NULL) {
        size_t n = strlen(text);
        char *line = realloc(text, n + 2);
        if (line == NULL) {
            free(text);
            text = NULL;
            goto out;
        }
        line[n] = '\n';
        line[n + 1] = '\0';
        text = line;
        *len = n + 1;
    }
out:
    json_decref(req);
    if (text == NULL)
        errno = ENOMEM;
    return text;
}

/* True when response MSG answers request ID. */
static int
client_answers(const struct sockd_client *c, const json_t *msg, long long id)
{
    const json_t *rid = json_object_get(msg, "id");

    if (json_is_integer(rid))
        return json_integer_value(rid) == id;
    /* A line the daemon could not take (too long) is answered with id null. */
    return json_is_null(rid) && json_is_object(json_object_get(msg, "error")) && !c->raw_sent;
}

int
sockd_client_call_fd(struct sockd_client *c, const char *method, json_t *params, int send_fd,
                     json_t **result, json_t **error, int *recv_fd, int timeout_ms)
{
    if (result != NULL)
        *result = NULL;
    if (error != NULL)
        *error = NULL;
    if (recv_fd != NULL)
        *recv_fd = -1;
    if (c == NULL || method == NULL) {
        errno = EINVAL;
        return -1;
    }
    int64_t deadline = client_deadline(timeout_ms);
    long long id = c->next_id++;
    size_t len, sent;
    char *line = client_request(method, params, id, &len);
    if (line == NULL)
        return -1;
    int rc = client_write(c, line, len, send_fd, deadline, &sent);
    free(line);
    if (rc < 0) {
        /* Half a line on the wire would spoil every later request. */
        if (sent > 0)
            c->werr = EPIPE;
        return -1;
    }

    for (;;) {
        int fd;
        json_t *msg = client_read(c, deadline, &fd);
        if (msg == NULL)
            return -1;
        enum client_kind kind = client_kind(msg);
        if (kind == CLIENT_NOTE) {
            if (client_enqueue(c, msg) < 0)
                return -1;
            continue;
        }
        if (kind != CLIENT_RESPONSE || !client_answers(c, msg, id)) {
            /* A late answer to a call that timed out, or to raw bytes: nobody waits for it. */
            if (fd >= 0)
                close(fd);
            json_decref(msg);
            continue;
        }
        json_t *res = json_object_get(msg, "result");
        json_t *err = json_object_get(msg, "error");
        if (res == NULL && err == NULL) {
            if (fd >= 0)
                close(fd);
            json_decref(msg);
            errno = EPROTO;
            return -1;
        }
        if (recv_fd != NULL)
            *recv_fd = fd;
        else if (fd >= 0)
            close(fd);
        rc = res != NULL ? 0 : 1;
        if (res != NULL && result != NULL)
            *result = json_incref(res);
        if (res == NULL && error != NULL)
            *error = json_incref(err);
        json_decref(msg);
        return rc;
    }
}

/* Which notifications a wait takes: METHOD (NULL: any) of SOCKET (0: any); with until set, also
 * a socket.closed of SOCKET, and socket.received only when its request is REQUEST. */
struct client_match {
    const char *method;
    long long socket;
    long long request;
    int until;
};

/* True when notification MSG is one that m asks for. */
static int
client_event_matches(const json_t *msg, const struct client_match *m)
{
    const char *name = json_string_value(json_object_get(msg, "method"));
    const json_t *params = json_object_get(msg, "params");

    if (m->until) {
        const json_t *req = json_object_get(params, "request");
        if (name != NULL && strcmp(name, "socket.closed") == 0)
            ;
        else if (name == NULL || strcmp(name, "socket.received") != 0 || !json_is_integer(req) ||
                 json_integer_value(req) != m->request)
            return 0;
    } else if (m->method != NULL && (name == NULL || strcmp(name, m->method) != 0))
        return 0;
    if (m->socket == 0)
        return 1;
    const json_t *s = json_object_get(params, "socket");
    return json_is_integer(s) && json_integer_value(s) == m->socket;
}

/* The first notification m asks for, from the queue or the wire, by the deadline; NULL (errno)
 * on timeout or EOF. Others are queued in order. */
static json_t *
client_wait_match(struct sockd_client *c, const struct client_match *m, int64_t deadline)
{
    struct client_event **link = &c->ev_head;
    struct client_event *prev = NULL;
    for (struct client_event *ev = c->ev_head; ev != NULL; prev = ev, ev = ev->next) {
        if (!client_event_matches(ev->msg, m)) {
            link = &ev->next;
            continue;
        }
        *link = ev->next;
        if (c->ev_tail == ev)
            c->ev_tail = prev;
        json_t *msg = ev->msg;
        free(ev);
        return msg;
    }
    for (;;) {
        json_t *msg = client_read(c, deadline, NULL);
        if (msg == NULL)
            return NULL;
        if (client_kind(msg) != CLIENT_NOTE) {
            json_decref(msg);
            continue;
        }
        if (client_event_matches(msg, m))
            return msg;
        if (client_enqueue(c, msg) < 0)
            return NULL;
    }
}

json_t *
sockd_client_wait_event(struct sockd_client *c, const char *method, long long socket,
                        int timeout_ms)
{
    struct client_match m = {method, socket, 0, 0};

    if (c == NULL) {
        errno = EINVAL;
        return NULL;
    }
    return client_wait_match(c, &m, client_deadline(timeout_ms));
}

int
sockd_client_recv_until(struct sockd_client *c, long long socket, const void *until, size_t ulen,
                        size_t length, int timeout_ms, unsigned char **data, size_t *len,
                        int *flags, json_t **error)
{
    *data = NULL;
    *len = 0;
    *flags = 0;
    if (error != NULL)
        *error = NULL;
    if (c == NULL || until == NULL || ulen == 0 || ulen > 16) {
        errno = EINVAL;
        return -1;
    }
    char *delim = sockd_client_b64_encode(until, ulen);
    json_t *params = delim == NULL ? NULL
                                   : json_pack("{s:I,s:I,s:s}", "socket", (json_int_t)socket,
                                               "length", (json_int_t)length, "until_b64", delim);
    free(delim);
    if (params == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if (timeout_ms > 0)
        json_object_set_new(params, "timeout_ms", json_integer(timeout_ms));
    /* the daemon ends the receive at timeout_ms; the wait here only guards against a stall */
    int wait_ms = timeout_ms > 0 ? timeout_ms + 5000 : -1;
    int64_t deadline = client_deadline(wait_ms);
    struct client_match m = {NULL, socket, c->next_id, 1};
    int rc = sockd_client_call(c, "socket.recv", params, NULL, error, wait_ms);
    json_decref(params);
    if (rc != 0)
        return rc;
    json_t *msg = client_wait_match(c, &m, deadline);
    if (msg == NULL)
        return -1;
    json_t *p = json_object_get(msg, "params");
    if (strcmp(json_string_value(json_object_get(msg, "method")), "socket.closed") == 0) {
        rc = client_enqueue(c, msg); /* whoever waits for the close still sees it */
        errno = rc < 0 ? errno : ENOTCONN;
        return -1;
    }
    const json_t *d = json_object_get(p, "data");
    *data = json_is_string(d)
                ? sockd_client_b64_decode(json_string_value(d), json_string_length(d), len)
                : NULL;
    *flags = (json_is_true(json_object_get(p, "eof")) ? SOCKD_RECV_EOF : 0) |
             (json_is_true(json_object_get(p, "timeout")) ? SOCKD_RECV_TIMEOUT : 0) |
             (json_is_true(json_object_get(p, "until_missing")) ? SOCKD_RECV_UNTIL_MISSING : 0);
    json_decref(msg);
    if (*data == NULL) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

json_t *
sockd_client_next_event(struct sockd_client *c, int timeout_ms)
{
    return sockd_client_wait_event(c, NULL, 0, timeout_ms);
}

int
sockd_client_send_raw(struct sockd_client *c, const void *data, size_t len)
{
    size_t sent;

    if (c == NULL || (data == NULL && len > 0)) {
        errno = EINVAL;
        return -1;
    }
    c->raw_sent = 1;
    return client_write(c, data, len, -1, -1, &sent);
}

json_t *
sockd_client_read_message(struct sockd_client *c, int timeout_ms)
{
    if (c == NULL) {
        errno = EINVAL;
        return NULL;
    }
    return client_read(c, client_deadline(timeout_ms), NULL);
}

int
sockd_client_error_code(const json_t *error)
{
    const json_t *code = json_object_get(error, "code");

    return json_is_integer(code) ? (int)json_integer_value(code) : 0;
}
