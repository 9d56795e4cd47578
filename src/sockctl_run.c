/*
 * sockctl run: the supervisor (sockctl.1, RUN; the daemon side is sockd-protocol.7,
 * METHODS, daemon.restrict and daemon.check).
 *
 * The child installs a seccomp filter whose listener fd this process takes (pidfd_getfd), then
 * executes the program. connect, bind, sendto with an address, sendmsg and sendmmsg come here:
 * - the socket's family and type are read from the socket itself (never from the address the
 *   program passes, which another thread may change): Unix and netlink sockets go on as they
 *   are (SECCOMP_USER_NOTIF_FLAG_CONTINUE), as do stream sends (TCP ignores the address);
 * - an IP connect or bind is done by sockd on a socket of its own, under its policy, and the
 *   socket sockd detaches is installed in the program in place of its own (same fd number);
 * - a datagram with an address is judged by sockd (daemon.check) and sent from here, from a
 *   copy of the program's bytes, on the socket installed in the program: never by letting the
 *   program's call continue after a check.
 * Nothing is ever continued for an IP socket but a stream send and, under --net none, a raw
 * socket's (it is in the empty namespace).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <seccomp.h>
#include <sockd/client.h>

#include "sockctl_prog.h"
#include "sockctl_run.h"

/* How long sockd may take to connect a socket for the program (its socket.connect timeout). */
#define RUN_CONNECT_TIMEOUT_MS 30000
/* The wait for any one response of sockd. */
#define RUN_CALL_TIMEOUT_MS 35000
/* The largest datagram sent for the program, and iovecs read from one message. */
#define RUN_DGRAM_MAX 65536
#define RUN_IOV_MAX 64
/* Messages of one sendmmsg handled per call (the program sends the rest with its next call). */
#define RUN_MMSG_MAX 64
/* Connects in progress at once (more answer EAGAIN, as a full local port range does). */
#define RUN_PENDING_MAX 256
/* Rules given with --allow / --deny, at most (daemon.restrict takes 64). */
#define RUN_RULES_MAX 63
/* Sockets installed in the program that are known here (for datagram sends), at most. */
#define RUN_OURS_MAX 4096

/* What --net asked for. */
enum run_net {
    RUN_NET_DEFAULT, /* an empty namespace where user namespaces allow it, else the host's */
    RUN_NET_NONE,    /* an empty namespace, or fail */
    RUN_NET_INHERIT, /* the supervisor's namespace */
};

/* A connect sockd is making: the program's call waits for its socket.connected or closed. */
struct run_pending {
    long long sock;           /* sockd's handle; 0: a free slot */
    struct seccomp_notif req; /* the call (id, pid, fd) */
    int lfd;                  /* the program's socket (a copy), for its flags and options */
    char what[128];           /* the destination, for -v */
};

struct run {
    struct sockd_client *c;
    int nfd;                  /* the seccomp listener */
    pid_t child;              /* the program */
    int net_none;             /* the program is in an empty network namespace */
    int unix_too;             /* --unix */
    int verbose;              /* -v: one line per decision on stderr */
    ino_t ours[RUN_OURS_MAX]; /* sockets installed in the program (inode numbers) */
    size_t nours;
    struct run_pending pend[RUN_PENDING_MAX];
};

static volatile sig_atomic_t run_child_pid;
static int run_sigchld_pipe[2] = {-1, -1}; /* SIGCHLD wakes the supervisor's poll */

static void
run_on_sigchld(int sig)
{
    int err = errno;
    (void)sig;
    if (write(run_sigchld_pipe[1], "c", 1) < 0) {
        /* full: a wake-up is pending anyway */
    }
    errno = err;
}

static void
run_forward(int sig)
{
    if (run_child_pid > 0)
        kill((pid_t)run_child_pid, sig);
}

static int
run_usage(FILE *f)
{
    fputs("usage: sockctl run [-s SOCK] [-v] [--allow RULE]... [--deny RULE]...\n"
          "                   [--net none|inherit] [--unix] -- PROGRAM [ARGS]\n"
          "  RULE is sockd.conf's ACTION TARGET [port N[-M]], e.g. 'connect 0.0.0.0/0 port 443'\n",
          f);
    return 2;
}

/* ---- talking to sockd ---- */

/* An errno for sockd's reason of a failed connect or bind (sockctl.1, RUN). */
static int
run_errno_of(const char *reason, int code, long long err)
{
    if (code == SOCKD_E_DENIED || (reason && strcmp(reason, "policy_denied") == 0))
        return EACCES;
    if (err > 0 && err < 4096)
        return (int)err;
    if (reason == NULL)
        return code == SOCKD_E_LIMIT ? ENOBUFS : EIO;
    if (strcmp(reason, "connect_rejected") == 0)
        return ECONNREFUSED;
    if (strcmp(reason, "timeout") == 0)
        return ETIMEDOUT;
    if (strcmp(reason, "bind_failed") == 0)
        return EADDRINUSE;
    return ENETUNREACH; /* lookup, route and the rest */
}

/* Call sockd; 0 and *res (may be NULL), or an errno for the program. */
static int
run_call(struct run *r, const char *method, json_t *params, json_t **res, int *fd_out)
{
    json_t *err = NULL, *result = NULL;
    int rc =
        sockd_client_call_fd(r->c, method, params, -1, &result, &err, fd_out, RUN_CALL_TIMEOUT_MS);
    json_decref(params);
    if (rc < 0)
        return ENETDOWN; /* sockd is gone */
    if (rc == 1) {
        json_t *data = json_object_get(err, "data");
        int e = run_errno_of(json_string_value(json_object_get(data, "reason")),
                             sockd_client_error_code(err), 0);
        if (r->verbose)
            fprintf(stderr, "sockctl run: %s: %s\n", method,
                    json_string_value(json_object_get(err, "message")));
        json_decref(err);
        return e;
    }
    if (res != NULL)
        *res = result;
    else
        json_decref(result);
    return 0;
}

/* Close a handle sockd still holds (best effort). */
static void
run_drop(struct run *r, long long s)
{
    run_call(r, "socket.close", json_pack("{s:I}", "socket", (json_int_t)s), NULL, NULL);
}

/* sockd's handle s detached: the fd (blocking), or -1 with *e set. */
static int
run_detach(struct run *r, long long s, int *e)
{
    json_t *res = NULL;
    int fd = -1;
    *e = run_call(r, "socket.detach", json_pack("{s:I}", "socket", (json_int_t)s), &res, &fd);
    if (*e != 0) {
        run_drop(r, s);
        return -1;
    }
    /* readahead is off: sockd holds nothing of the peer's; a daemon without it may have */
    if (json_object_get(res, "data") != NULL || json_object_get(res, "datagrams") != NULL)
        fprintf(stderr, "sockctl run: sockd read bytes before handing the socket over: lost\n");
    json_decref(res);
    if (fd < 0)
        *e = EIO;
    return fd;
}

/* ---- the program's side ---- */

static int
run_is_ours(const struct run *r, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    for (size_t i = 0; i < r->nours; i++)
        if (r->ours[i] == st.st_ino)
            return 1;
    return 0;
}

static void
run_remember(struct run *r, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return;
    if (r->nours == RUN_OURS_MAX) { /* forget the oldest: it is only a fast path's loss */
        memmove(r->ours, r->ours + 1, (RUN_OURS_MAX - 1) * sizeof r->ours[0]);
        r->nours--;
    }
    r->ours[r->nours++] = st.st_ino;
}

/*
 * Put nfd in place of the program's fd `target` (of the notification req), with the old one's
 * O_NONBLOCK, close-on-exec and options. 0, or an errno (nfd is closed either way).
 */
static int
run_install(struct run *r, const struct seccomp_notif *req, int lfd, int nfd)
{
    int target = (int)req->data.args[0];
    int fl = fcntl(lfd, F_GETFL);
    if (fl >= 0 && (fl & O_NONBLOCK))
        fcntl(nfd, F_SETFL, fcntl(nfd, F_GETFL) | O_NONBLOCK);
    prog_copy_opts(lfd, nfd);
    struct seccomp_notif_addfd add = {
        .id = req->id,
        .flags = SECCOMP_ADDFD_FLAG_SETFD,
        .srcfd = (uint32_t)nfd,
        .newfd = (uint32_t)target,
        .newfd_flags = prog_fd_cloexec(req->pid, target) ? O_CLOEXEC : 0,
    };
    int e = 0;
    if (ioctl(r->nfd, SECCOMP_IOCTL_NOTIF_ADDFD, &add) < 0)
        e = errno == ENOENT ? EINTR : errno; /* ENOENT: the call is gone (interrupted) */
    else
        run_remember(r, nfd);
    close(nfd);
    return e;
}

/* Outcomes of a handler: reply with val/error, or let the call go on. */
enum run_verdict {
    RUN_REPLY,    /* resp holds the result */
    RUN_CONTINUE, /* the kernel runs the call as the program made it */
    RUN_PENDING,  /* answered later, when sockd's connect ends (struct run_pending) */
};

/* run_via_sockd's answer for a connect left to finish later. */
#define RUN_E_PENDING (-1)

/* The wildcard address with port 0: what the kernel binds a datagram socket to on its own. */
static int
run_ephemeral_any(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        return sin->sin_port == 0 && sin->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    return sin6->sin6_port == 0 && IN6_IS_ADDR_UNSPECIFIED(&sin6->sin6_addr);
}

/*
 * A datagram socket bound to an ephemeral port on the wildcard, where sockd's bind rules say
 * no: that is the kernel's own autobind at the first send, which opens nothing the sendto
 * rules do not (sockctl.1, RUN), so the socket is made and bound here. 0 or an errno.
 */
static int
run_autobind(struct run *r, const struct seccomp_notif *req, int lfd,
             const struct sockaddr_storage *ss, socklen_t sl)
{
    int nfd = socket(ss->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (nfd < 0)
        return errno;
    if (bind(nfd, (const struct sockaddr *)ss, sl) < 0) {
        int e = errno;
        close(nfd);
        return e;
    }
    if (r->verbose)
        fprintf(stderr, "sockctl run: bind to an ephemeral port: done here\n");
    return run_install(r, req, lfd, nfd);
}

/* Keep a connect sockd is making (handle s) until its outcome comes; 0, or EAGAIN when full. */
static int
run_park(struct run *r, const struct seccomp_notif *req, int lfd, long long s, const char *what)
{
    for (size_t i = 0; i < RUN_PENDING_MAX; i++) {
        struct run_pending *p = &r->pend[i];
        if (p->sock != 0)
            continue;
        if ((p->lfd = dup(lfd)) < 0)
            return errno;
        p->sock = s;
        memcpy(&p->req, req, sizeof p->req);
        size_t n = strnlen(what, sizeof p->what - 1); /* cut to fit: it is for -v only */
        memcpy(p->what, what, n);
        p->what[n] = '\0';
        return 0;
    }
    return EAGAIN;
}

/* The outcome of a parked connect (e: 0 connected, else the errno): install, answer, forget. */
static void
run_finish(struct run *r, struct run_pending *p, int e)
{
    struct seccomp_notif_resp resp = {.id = p->req.id};
    if (e == 0) {
        int nfd = run_detach(r, p->sock, &e);
        if (nfd >= 0)
            e = run_install(r, &p->req, p->lfd, nfd);
    } else {
        run_drop(r, p->sock);
    }
    if (r->verbose)
        fprintf(stderr, "sockctl run: connect %s: %s\n", p->what, e ? strerror(e) : "ok");
    resp.error = -e;
    seccomp_notify_respond(r->nfd, &resp); /* fails only when the call is gone */
    close(p->lfd);
    p->sock = 0;
}

/* Handle the notifications sockd has sent (queued or on the wire): connects that ended. */
static void
run_events(struct run *r)
{
    json_t *ev;
    while ((ev = sockd_client_next_event(r->c, 0)) != NULL) {
        const char *m = json_string_value(json_object_get(ev, "method"));
        json_t *params = json_object_get(ev, "params");
        long long s = json_integer_value(json_object_get(params, "socket"));
        int e = -1;
        if (m != NULL && strcmp(m, "socket.connected") == 0)
            e = 0;
        else if (m != NULL && strcmp(m, "socket.closed") == 0)
            e = run_errno_of(json_string_value(json_object_get(params, "reason")), 0,
                             json_integer_value(json_object_get(params, "errno")));
        for (size_t i = 0; e >= 0 && s > 0 && i < RUN_PENDING_MAX; i++)
            if (r->pend[i].sock == s) {
                run_finish(r, &r->pend[i], e);
                break;
            }
        json_decref(ev);
    }
    if (errno == EPIPE) /* sockd is gone: every connect in progress fails */
        for (size_t i = 0; i < RUN_PENDING_MAX; i++)
            if (r->pend[i].sock != 0)
                run_finish(r, &r->pend[i], ENETDOWN);
}

/* connect or bind of an IP socket through sockd. Returns 0, an errno, or RUN_E_PENDING. */
static int
run_via_sockd(struct run *r, const struct seccomp_notif *req, int lfd, int type, int bind_it)
{
    struct sockaddr_storage ss, peer;
    socklen_t sl, pl = sizeof peer;
    char text[PATH_MAX + 8];
    int domain = 0, e;
    socklen_t dl = sizeof domain;
    getsockopt(lfd, SOL_SOCKET, SO_DOMAIN, &domain, &dl);
    if ((e = prog_peek_addr(req->pid, req->data.args[1], req->data.args[2], &ss, &sl)) != 0)
        return e;
    if (seccomp_notify_id_valid(r->nfd, req->id) != 0)
        return EINTR;
    if (!bind_it && type == SOCK_DGRAM && ss.ss_family == AF_UNSPEC) {
        /* dissolving a datagram association reaches nowhere: done on the socket itself */
        return connect(lfd, (struct sockaddr *)&ss, sl) == 0 ? 0 : errno;
    }
    if (ss.ss_family != domain)
        return EAFNOSUPPORT;
    if (domain == AF_UNIX ? prog_unix_text(req->pid, &ss, sl, text, sizeof text) < 0
                          : prog_addr_text(&ss, sl, text, sizeof text) < 0)
        return EINVAL;
    if (!bind_it && type == SOCK_STREAM && getpeername(lfd, (struct sockaddr *)&peer, &pl) == 0)
        return EISCONN;
    json_t *res = NULL;
    if ((e = run_call(r, "socket.open",
                      json_pack("{s:b,s:s,s:b}", "readahead", 0, "type",
                                domain == AF_UNIX     ? "unix"
                                : type == SOCK_STREAM ? "tcp"
                                                      : "udp",
                                "ipv6", domain == AF_INET6),
                      &res, NULL)) != 0)
        return e;
    long long s = json_integer_value(json_object_get(res, "socket"));
    json_decref(res);
    if (bind_it) {
        int reuse = 0;
        socklen_t rl = sizeof reuse;
        getsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &reuse, &rl);
        json_t *p = json_pack("{s:I,s:s}", "socket", (json_int_t)s, "address", text);
        if (domain != AF_UNIX) /* a Unix file is replaced only when stale, whatever this says */
            json_object_set_new(p, "reuse_address", json_boolean(reuse != 0));
        e = run_call(r, "socket.bind", p, NULL, NULL);
    } else {
        e = run_call(r, "socket.connect",
                     json_pack("{s:I,s:s,s:i}", "socket", (json_int_t)s, "address", text,
                               "timeout_ms", RUN_CONNECT_TIMEOUT_MS),
                     NULL, NULL);
        if (e == 0 && (e = run_park(r, req, lfd, s, text)) == 0)
            return RUN_E_PENDING; /* the other calls go on meanwhile */
    }
    if (r->verbose)
        fprintf(stderr, "sockctl run: %s %s: %s\n", bind_it ? "bind" : "connect", text,
                e ? strerror(e) : "ok");
    if (e != 0) {
        run_drop(r, s);
        if (e == EACCES && bind_it && type == SOCK_DGRAM && run_ephemeral_any(&ss))
            return run_autobind(r, req, lfd, &ss, sl);
        return e;
    }
    int nfd = run_detach(r, s, &e);
    if (nfd < 0)
        return e;
    return run_install(r, req, lfd, nfd);
}

/*
 * A datagram socket of the program that sends to an address must be one installed here (its
 * own is in the program's namespace, or would be bound by the kernel where sockd never saw
 * it): sockd's socket bound to the wildcard with an ephemeral port; where sockd refuses that
 * bind, one made here. The new fd in *out (a copy, the program has the other), or an errno.
 */
static int
run_own_dgram(struct run *r, const struct seccomp_notif *req, int lfd, int domain, int *out)
{
    json_t *res = NULL;
    int e, nfd = -1;
    if (run_is_ours(r, lfd)) {
        *out = dup(lfd);
        return *out < 0 ? errno : 0;
    }
    e = run_call(
        r, "socket.open",
        json_pack("{s:b,s:s,s:b}", "readahead", 0, "type", "udp", "ipv6", domain == AF_INET6), &res,
        NULL);
    if (e == 0) {
        long long s = json_integer_value(json_object_get(res, "socket"));
        json_decref(res);
        e = run_call(r, "socket.bind",
                     json_pack("{s:I,s:s}", "socket", (json_int_t)s, "address",
                               domain == AF_INET6 ? "[::]:0" : "0.0.0.0:0"),
                     NULL, NULL);
        if (e == 0)
            nfd = run_detach(r, s, &e);
        else
            run_drop(r, s);
    }
    if (nfd < 0 && (nfd = socket(domain, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
        return errno;
    int keep = dup(nfd);
    if (keep < 0) {
        close(nfd);
        return errno;
    }
    if ((e = run_install(r, req, lfd, nfd)) != 0) {
        close(keep);
        return e;
    }
    *out = keep;
    return 0;
}

/* One message to send: destination and bytes, copied out of the program. */
struct run_msg {
    struct sockaddr_storage dst;
    socklen_t dlen; /* 0: no address (the socket's peer) */
    unsigned char *buf;
    size_t len;
};

/* Read a msghdr's name and iovecs at addr into m (buf malloc'ed); 0 or an errno. */
static int
run_peek_msghdr(pid_t pid, uint64_t addr, struct run_msg *m)
{
    struct msghdr h;
    struct iovec iov[RUN_IOV_MAX];
    int e;
    if (prog_peek(pid, addr, &h, sizeof h) < 0)
        return EFAULT;
    m->dlen = 0;
    if (h.msg_name != NULL && h.msg_namelen > 0 &&
        (e = prog_peek_addr(pid, (uintptr_t)h.msg_name, h.msg_namelen, &m->dst, &m->dlen)) != 0)
        return e;
    if (h.msg_iovlen > RUN_IOV_MAX)
        return EMSGSIZE;
    if (h.msg_iovlen > 0 &&
        prog_peek(pid, (uintptr_t)h.msg_iov, iov, h.msg_iovlen * sizeof iov[0]) < 0)
        return EFAULT;
    size_t total = 0;
    for (size_t i = 0; i < h.msg_iovlen; i++) {
        if (iov[i].iov_len > RUN_DGRAM_MAX || total + iov[i].iov_len > RUN_DGRAM_MAX)
            return EMSGSIZE;
        total += iov[i].iov_len;
    }
    if ((m->buf = malloc(total ? total : 1)) == NULL)
        return ENOMEM;
    m->len = 0;
    for (size_t i = 0; i < h.msg_iovlen; i++) {
        if (prog_peek(pid, (uintptr_t)iov[i].iov_base, m->buf + m->len, iov[i].iov_len) < 0)
            return EFAULT;
        m->len += iov[i].iov_len;
    }
    return 0;
}

/* Send m on fd (a socket installed here) if sockd allows its destination: bytes, or -errno. */
static long long
run_send_one(struct run *r, int fd, const struct run_msg *m, int flags)
{
    char text[INET6_ADDRSTRLEN + 16];
    if (m->dlen > 0) {
        json_t *res = NULL;
        if (prog_addr_text(&m->dst, m->dlen, text, sizeof text) < 0)
            return -EAFNOSUPPORT;
        int e = run_call(r, "daemon.check",
                         json_pack("{s:s,s:s}", "action", "sendto", "address", text), &res, NULL);
        if (e != 0)
            return -e;
        int ok = json_is_true(json_object_get(res, "allowed"));
        json_decref(res);
        if (r->verbose)
            fprintf(stderr, "sockctl run: sendto %s: %s\n", text, ok ? "ok" : "denied");
        if (!ok)
            return -EACCES;
    }
    ssize_t n = sendto(fd, m->buf, m->len, (flags & ~MSG_FASTOPEN) | MSG_DONTWAIT | MSG_NOSIGNAL,
                       m->dlen ? (const struct sockaddr *)&m->dst : NULL, m->dlen);
    return n < 0 ? -errno : n;
}

/* sendto, sendmsg, sendmmsg of an IP datagram socket. */
static void
run_dgram_send(struct run *r, const struct seccomp_notif *req, struct seccomp_notif_resp *resp,
               int lfd, int domain)
{
    int nr = req->data.nr, fd = -1, e;
    pid_t pid = req->pid;
    struct run_msg m = {.buf = NULL};
    long long rv;

    if (nr == SYS_sendmmsg) {
        unsigned vlen = (unsigned)req->data.args[2];
        int flags = (int)req->data.args[3];
        long long done = 0;
        if (vlen > RUN_MMSG_MAX)
            vlen = RUN_MMSG_MAX;
        rv = 0;
        for (unsigned i = 0; i < vlen; i++) {
            uint64_t at = req->data.args[1] + (uint64_t)i * sizeof(struct mmsghdr);
            memset(&m, 0, sizeof m);
            if ((e = run_peek_msghdr(pid, at, &m)) != 0) {
                rv = -e;
            } else if (seccomp_notify_id_valid(r->nfd, req->id) != 0) {
                rv = -EINTR;
            } else if (fd < 0 && (e = run_own_dgram(r, req, lfd, domain, &fd)) != 0) {
                rv = -e;
            } else {
                rv = run_send_one(r, fd, &m, flags);
            }
            free(m.buf);
            if (rv < 0)
                break;
            unsigned int sent = (unsigned int)rv;
            prog_poke(pid, at + offsetof(struct mmsghdr, msg_len), &sent, sizeof sent);
            done++;
        }
        resp->val = done > 0 ? done : 0;
        resp->error = done > 0 ? 0 : (int)rv;
        if (fd >= 0)
            close(fd);
        return;
    }
    int flags = (int)req->data.args[nr == SYS_sendto ? 3 : 2];
    if (nr == SYS_sendto) {
        size_t len = (size_t)req->data.args[2];
        if (len > RUN_DGRAM_MAX) {
            resp->error = -EMSGSIZE;
            return;
        }
        m.len = len;
        m.buf = malloc(len ? len : 1);
        if (m.buf == NULL) {
            resp->error = -ENOMEM;
            return;
        }
        e = prog_peek(pid, req->data.args[1], m.buf, len) < 0 ? EFAULT : 0;
        if (e == 0)
            e = prog_peek_addr(pid, req->data.args[4], req->data.args[5], &m.dst, &m.dlen);
    } else {
        e = run_peek_msghdr(pid, req->data.args[1], &m);
    }
    if (e == 0 && seccomp_notify_id_valid(r->nfd, req->id) != 0)
        e = EINTR;
    if (e == 0 && m.dlen == 0) {
        fd = dup(lfd); /* no address: its connected peer, which sockd judged at connect */
        if (fd < 0)
            e = errno;
    } else if (e == 0) {
        e = run_own_dgram(r, req, lfd, domain, &fd);
    }
    rv = e ? -e : run_send_one(r, fd, &m, flags);
    free(m.buf);
    if (fd >= 0)
        close(fd);
    resp->val = rv >= 0 ? rv : 0;
    resp->error = rv >= 0 ? 0 : (int)rv;
}

/* Decide one notification. */
static enum run_verdict
run_handle(struct run *r, const struct seccomp_notif *req, struct seccomp_notif_resp *resp)
{
    int nr = req->data.nr, domain, type, proto;
    int lfd = prog_take_fd(req->pid, (int)req->data.args[0]);
    resp->val = 0;
    resp->error = 0;
    if (lfd < 0) {
        resp->error = errno == EBADF ? -EBADF : -ENOTSOCK;
        return RUN_REPLY;
    }
    if (prog_sock_kind(lfd, &domain, &type, &proto) < 0) {
        close(lfd);
        resp->error = -ENOTSOCK;
        return RUN_REPLY;
    }
    enum run_verdict v = RUN_REPLY;
    int e = 0;
    if (domain == AF_NETLINK || (domain == AF_UNIX && !r->unix_too)) {
        v = RUN_CONTINUE; /* no network: netlink talks to the kernel, Unix sockets are local */
    } else if (domain == AF_UNIX) { /* --unix: stream connect and bind through sockd */
        if (type == SOCK_STREAM && (nr == SYS_connect || nr == SYS_bind))
            e = run_via_sockd(r, req, lfd, type, nr == SYS_bind);
        else if (type == SOCK_STREAM)
            v = RUN_CONTINUE; /* a stream send: its address is refused by the kernel */
        else
            e = EACCES; /* datagram and seqpacket Unix sockets: not brokered */
    } else if (domain != AF_INET && domain != AF_INET6) {
        e = EACCES; /* packet, vsock and other families: not brokered, refused */
    } else if (type == SOCK_RAW) {
        if (r->net_none)
            v = RUN_CONTINUE; /* in the empty namespace it reaches nothing */
        else
            e = EACCES;
    } else if ((type != SOCK_STREAM || proto != IPPROTO_TCP) &&
               (type != SOCK_DGRAM || proto != IPPROTO_UDP)) {
        e = EACCES; /* SCTP, UDP-Lite, ICMP sockets...: not brokered */
    } else if (nr == SYS_connect || nr == SYS_bind) {
        e = run_via_sockd(r, req, lfd, type, nr == SYS_bind);
    } else if (type == SOCK_STREAM) {
        /* a stream send: TCP ignores the address; only a fast-open send would connect */
        int flags = (int)req->data.args[nr == SYS_sendto || nr == SYS_sendmmsg ? 3 : 2];
        if (flags & MSG_FASTOPEN)
            e = EOPNOTSUPP;
        else
            v = RUN_CONTINUE;
    } else {
        run_dgram_send(r, req, resp, lfd, domain);
    }
    close(lfd);
    if (e == RUN_E_PENDING)
        return RUN_PENDING;
    if (e != 0)
        resp->error = -e;
    return v;
}

/* Serve notifications until the program ends; returns its exit status. */
static int
run_supervise(struct run *r)
{
    struct seccomp_notif *req;
    struct seccomp_notif_resp *resp;
    int status = 0;
    if (seccomp_notify_alloc(&req, &resp) != 0) {
        fprintf(stderr, "sockctl run: out of memory\n");
        kill(r->child, SIGKILL);
    }
    for (;;) {
        if (waitpid(r->child, &status, WNOHANG) == r->child)
            break;
        run_events(r);
        struct pollfd p[3] = {{.fd = r->nfd, .events = POLLIN},
                              {.fd = run_sigchld_pipe[0], .events = POLLIN},
                              {.fd = sockd_client_fd(r->c), .events = POLLIN}};
        if (poll(p, 3, -1) < 0)
            continue;
        if (p[1].revents & POLLIN) {
            char drain[64];
            while (read(run_sigchld_pipe[0], drain, sizeof drain) > 0)
                ;
        }
        if (!(p[0].revents & POLLIN)) {
            if (p[0].revents & (POLLHUP | POLLERR | POLLNVAL)) { /* no task uses the filter */
                waitpid(r->child, &status, 0);
                break;
            }
            continue;
        }
        memset(req, 0, sizeof *req);
        if (seccomp_notify_receive(r->nfd, req) != 0)
            continue; /* the caller is gone already */
        memset(resp, 0, sizeof *resp);
        resp->id = req->id;
        enum run_verdict v = run_handle(r, req, resp);
        if (v == RUN_PENDING)
            continue;
        if (v == RUN_CONTINUE) {
            resp->val = 0;
            resp->error = 0;
            resp->flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        seccomp_notify_respond(r->nfd, resp); /* fails only when the call is gone */
    }
    seccomp_notify_free(req, resp);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

/* ---- the child: namespace, filter, exec ---- */

/* daemon.restrict with the --allow/--deny rules; 0, or -1 after saying why. */
static int
run_restrict(struct run *r, json_t *rules)
{
    json_t *err = NULL;
    json_t *params = json_pack("{s:O}", "rules", rules);
    int rc = sockd_client_call(r->c, "daemon.restrict", params, NULL, &err, RUN_CALL_TIMEOUT_MS);
    json_decref(params);
    if (rc == 0)
        return 0;
    if (rc == 1)
        fprintf(stderr, "sockctl run: %s\n", json_string_value(json_object_get(err, "message")));
    else
        fprintf(stderr, "sockctl run: cannot reach sockd: %s\n", strerror(errno));
    json_decref(err);
    return -1;
}

int
sockctl_cmd_run(const struct sockctl_opts *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'}, {"allow", required_argument, NULL, 'a'},
        {"deny", required_argument, NULL, 'd'},   {"net", required_argument, NULL, 'n'},
        {"unix", no_argument, NULL, 'u'},         {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *path = o->path; /* the global -s; run's own -s overrides it */
    struct run r = {.nfd = -1};
    enum run_net net = RUN_NET_DEFAULT;
    json_t *rules = json_array();
    int opt, allows = 0;
    char rule[600];

    optind = 1;
    while ((opt = getopt_long(argc, argv, "+s:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            path = optarg;
            break;
        case 'a':
        case 'd':
            if (json_array_size(rules) >= RUN_RULES_MAX) {
                fprintf(stderr, "sockctl run: at most %d rules\n", RUN_RULES_MAX);
                return 2;
            }
            snprintf(rule, sizeof rule, "%s %s", opt == 'a' ? "allow" : "deny", optarg);
            json_array_append_new(rules, json_string(rule));
            allows += opt == 'a';
            break;
        case 'n':
            if (strcmp(optarg, "none") == 0)
                net = RUN_NET_NONE;
            else if (strcmp(optarg, "inherit") == 0)
                net = RUN_NET_INHERIT;
            else
                return run_usage(stderr);
            break;
        case 'u':
            r.unix_too = 1;
            break;
        case 'v':
            r.verbose = 1;
            break;
        case 'h':
            json_decref(rules);
            run_usage(stdout);
            return 0;
        default:
            json_decref(rules);
            return run_usage(stderr);
        }
    }
    if (optind >= argc) {
        json_decref(rules);
        return run_usage(stderr);
    }
    /* only --deny rules: what they do not name stays as the admin's policy has it */
    if (json_array_size(rules) > 0 && allows == 0)
        json_array_append_new(rules, json_string("allow any *"));
    r.net_none = net == RUN_NET_NONE || (net == RUN_NET_DEFAULT && prog_can_unshare());

    char buf[256];
    const char *sp = sockd_socket_path(path, buf, sizeof buf);
    if (sp == NULL || (r.c = sockd_client_connect(sp)) == NULL) {
        fprintf(stderr, "sockctl run: cannot reach sockd at %s: %s\n", sp ? sp : "?",
                strerror(errno));
        json_decref(rules);
        return 3;
    }
    if (json_array_size(rules) > 0 && run_restrict(&r, rules) < 0) {
        json_decref(rules);
        sockd_client_close(r.c);
        return 3;
    }
    json_decref(rules);

    int ready[2], go[2];
    if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 ||
        pipe2(run_sigchld_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("sockctl run: pipe");
        return 3;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        perror("sockctl run: fork");
        return 3;
    }
    if (child == 0) {
        close(sockd_client_fd(r.c)); /* the program never holds the restricted connection */
        close(ready[0]);
        close(go[1]);
        prog_exec(argv + optind, r.net_none, ready[1], go[0]);
    }
    r.child = child;
    run_child_pid = child;
    close(ready[1]);
    close(go[0]);
    struct sigaction sa = {.sa_handler = run_forward}, sc = {.sa_handler = run_on_sigchld};
    sc.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sc, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    int remote = -1, status;
    if (read(ready[0], &remote, sizeof remote) != (ssize_t)sizeof remote ||
        (r.nfd = prog_take_fd(child, remote)) < 0) {
        kill(child, SIGKILL);
        waitpid(child, &status, 0);
        if (remote >= 0)
            fprintf(stderr, "sockctl run: cannot take the seccomp listener: %s\n", strerror(errno));
        sockd_client_close(r.c);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 126;
    }
    close(ready[0]);
    if (write(go[1], "g", 1) != 1) {
        kill(child, SIGKILL);
    }
    close(go[1]);
    int rc = run_supervise(&r);
    close(r.nfd);
    sockd_client_close(r.c);
    return rc;
}
