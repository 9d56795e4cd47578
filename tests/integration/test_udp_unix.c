/*
 * Integration tests: UDP and Unix sockets, socket.setopt, socket.sendto and "localhost"
 * binds through a real sockd, against the test's own loopback UDP sockets and AF_UNIX
 * sockets in a temporary directory (127.0.0.1, ::1 and /tmp only).
 *
 * As in test_tcp.c (the test client is tc.h), requests are written on the control
 * connection with ids chosen here, so that the "request" member of notifications can be
 * checked; every message read meanwhile is kept, in arrival order, in a per-client inbox.
 * Every wait is bounded, every loop has a fixed bound, and resources made by a test are
 * tracked and released by the per-test teardown.
 *
 * Where the kernel lets us (pidfd_getfd on our own child, the daemon), options set with
 * socket.setopt are checked on the daemon's very fd with getsockopt; the UDP TTL and the
 * broadcast flag are also checked from the receiving side (IP_RECVTTL, EACCES).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4 */
#endif

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "tc.h"

static struct h_daemon g_d; /* the group's daemon */

/* Checks that report and let the test go on (so one wrong field does not hide the rest of the
 * behaviour); soft_done() fails the test at its end if any failed. */
static int n_soft;

static void
soft_fail_(int line, const char *msg)
{
    print_error("(test_udp_unix.c:%d) ERROR: %s\n", line, msg);
    n_soft++;
}

#define SOFT_CHECK(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond))                                                                               \
            soft_fail_(__LINE__, ctx(__VA_ARGS__));                                                \
    } while (0)

static void
soft_done(void)
{
    int n = n_soft;
    n_soft = 0;
    if (n)
        fail_msg("%d check(s) reported above failed", n);
}

/* Is member k of o an object {"path": path}? */
static bool
is_path_obj(const json_t *o, const char *k, const char *path)
{
    json_t *a = json_object_get(o, k), *p = json_object_get(a, "path");
    return json_is_object(a) && json_is_string(p) && strcmp(json_string_value(p), path) == 0;
}

/* ------------------------------------------------------------------------ */
/* resources of the running test, released by t_cleanup                      */

static char trk_dir[8][64]; /* temp directories (flat), removed by t_cleanup */
static int n_dir;

/* Remove the entries of a flat directory and the directory itself. */
static void
rm_dir_(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[PATH_MAX];

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* A new private temp directory (short path: Unix socket paths must fit in sun_path). */
static const char *
tmpdir_(void)
{
    EXPECT_TRUE(n_dir < 8, "n_dir < 8");
    snprintf(trk_dir[n_dir], sizeof trk_dir[0], "/tmp/uu-XXXXXX");
    if (!mkdtemp(trk_dir[n_dir]))
        FAIL("mkdtemp: %s", strerror(errno));
    return trk_dir[n_dir++];
}

static int
t_cleanup(void **state)
{
    (void)state;
    n_soft = 0;
    tc_cleanup();
    for (int i = 0; i < n_dir; i++)
        rm_dir_(trk_dir[i]);
    n_dir = 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* UDP sockets of the test process                                          */

/* A tracked UDP socket bound to 127.0.0.1 (or ::1), port 0; it reports the TTL/hop limit of what
 * it receives. */
static int
raw_udp_(int v6, int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1;
    int fd = track_fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));

    fill_sa(&ss, &sl, v6, 0);
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0)
        FAIL("bind a UDP socket to loopback: %s", strerror(errno));
    if (v6)
        EXPECT_INT(setsockopt(fd, IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &one, sizeof one), 0,
                   "setsockopt: %s", strerror(errno));
    else
        EXPECT_INT(setsockopt(fd, IPPROTO_IP, IP_RECVTTL, &one, sizeof one), 0, "setsockopt: %s",
                   strerror(errno));
    if (port_out)
        *port_out = local_port_(fd);
    return fd;
}

/* A UDP port on loopback that was free a moment ago. */
static int
free_udp_port_(int v6)
{
    int port, fd = raw_udp_(v6, &port);
    close_fd_(fd);
    return port;
}

/* One datagram from fd to loopback:port. */
static void
raw_udp_send_(int fd, int v6, int port, const void *data, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    ssize_t n;

    fill_sa(&ss, &sl, v6, port);
    n = sendto(fd, data, len, 0, (struct sockaddr *)&ss, sl);
    if (n < 0 || (size_t)n != len)
        FAIL("sendto loopback port %d (%zu bytes): %zd (%s)", port, len, n, strerror(errno));
}

/*
 * One datagram within ms: returns its size on the wire (-1 on timeout); *from_port gets its source
 * port, *ttl its TTL / hop limit (-1 unknown). buf gets at most cap bytes.
 */
static long
raw_udp_recv_(int fd, void *buf, size_t cap, int *from_port, int *ttl, int ms)
{
    struct sockaddr_storage from;
    union {
        char b[256];
        struct cmsghdr align;
    } cbuf;
    struct iovec iov = {buf, cap};
    struct msghdr mh;
    struct cmsghdr *cm;
    ssize_t n;

    if (!raw_readable_(fd, ms))
        return -1;
    memset(&mh, 0, sizeof mh);
    mh.msg_name = &from;
    mh.msg_namelen = sizeof from;
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.b;
    mh.msg_controllen = sizeof cbuf.b;
    n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0)
        FAIL("recvmsg on our UDP socket: %s", strerror(errno));
    if (from_port)
        *from_port = sa_port(&from);
    if (ttl) {
        *ttl = -1;
        for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
            if ((cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_TTL) ||
                (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_HOPLIMIT))
                memcpy(ttl, CMSG_DATA(cm), sizeof(int));
    }
    return (long)n;
}

/* Our UDP socket receives exactly this datagram; from_port (>= 0) and ttl (>= 0) are checked.
 * Returns the source port. */
static int
raw_udp_expect_(int fd, const void *data, size_t len, int from_port, int ttl)
{
    unsigned char *buf = malloc(len + 16);
    int fp = -1, got_ttl = -1;
    long n;

    EXPECT_TRUE(buf != NULL, "buf");
    n = raw_udp_recv_(fd, buf, len + 16, &fp, &got_ttl, H_TIMEOUT_MS);
    if (n < 0)
        FAIL("our UDP socket got no datagram within %d ms (expected %zu bytes)", H_TIMEOUT_MS, len);
    if ((size_t)n != len || memcmp(buf, data, len) != 0)
        FAIL("our UDP socket got a datagram of %ld bytes (\"%.*s\"), expected %zu bytes (\"%.*s\")",
             n, (int)(n < 60 ? n : 60), (const char *)buf, len, (int)(len < 60 ? len : 60),
             (const char *)data);
    if (from_port >= 0)
        EXPECT_INT(fp, from_port, "source port of the datagram from the daemon");
    if (ttl >= 0)
        EXPECT_INT(got_ttl, ttl, "TTL / hop limit of the datagram from the daemon");
    free(buf);
    return fp;
}

/* No datagram arrives within ms. */
static void
raw_udp_none_(int fd, int ms)
{
    char buf[64];
    int fp = -1;
    long n = raw_udp_recv_(fd, buf, sizeof buf, &fp, NULL, ms);
    if (n >= 0)
        FAIL("unexpected datagram of %ld bytes from port %d", n, fp);
}

/* ------------------------------------------------------------------------ */
/* Unix sockets of the test process                                         */

/* A sockaddr_un for a path or "@abstract" name. */
static socklen_t
unix_sa_(const char *path, struct sockaddr_un *sun)
{
    size_t n = strlen(path);

    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    EXPECT_TRUE(n < sizeof sun->sun_path, "n < sizeof sun->sun_path");
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@') {
        sun->sun_path[0] = '\0';
        return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    }
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

/* A tracked AF_UNIX stream socket bound to path; listening when backlog >= 0. */
static int
raw_unix_bound_(const char *path, int backlog)
{
    struct sockaddr_un sun;
    socklen_t sl = unix_sa_(path, &sun);
    int fd = track_fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));

    if (bind(fd, (struct sockaddr *)&sun, sl) != 0)
        FAIL("bind AF_UNIX %s: %s", path, strerror(errno));
    if (backlog >= 0 && listen(fd, backlog) != 0)
        FAIL("listen AF_UNIX %s: %s", path, strerror(errno));
    return fd;
}

/* Connect to a Unix path or @name: the tracked fd, or -1 with *err = errno. */
static int
raw_unix_try_connect_(const char *path, int *err)
{
    struct sockaddr_un sun;
    socklen_t sl = unix_sa_(path, &sun);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    EXPECT_TRUE(fd >= 0, "fd >= 0");
    if (connect(fd, (struct sockaddr *)&sun, sl) != 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    *err = 0;
    return track_fd(fd);
}

static int
raw_unix_connect_(const char *path)
{
    int err, fd = raw_unix_try_connect_(path, &err);
    if (fd < 0)
        FAIL("connect AF_UNIX %s: %s", path, strerror(err));
    return fd;
}

/* Accept one connection within H_TIMEOUT_MS (tracked). */
static int
raw_accept_one_(int lfd)
{
    int fd = raw_accept(lfd, H_TIMEOUT_MS);
    if (fd < 0)
        FAIL("no connection reached our listener within %d ms", H_TIMEOUT_MS);
    return fd;
}

/* lstat: the file type and permission bits of path, or 0 when it does not exist (ENOENT). */
static mode_t
file_mode_(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT)
            FAIL("lstat %s: %s", path, strerror(errno));
        return 0;
    }
    return st.st_mode;
}

/* Wait (bounded) until path does not exist; true if it went away. */
static bool
wait_gone_(const char *path, int ms)
{
    long long deadline = now_ms() + ms;
    for (int i = 0; i < 100000; i++) {
        if (file_mode_(path) == 0)
            return true;
        if (now_ms() > deadline)
            break;
        sleep_ms(10);
    }
    return false;
}

/* An abstract name unique to this process and call. */
static const char *
abstract_name_(char *buf, size_t len, const char *what)
{
    static int seq;
    snprintf(buf, len, "@sockd-uu-%d-%s-%d", (int)getpid(), what, ++seq);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* the daemon's own fds (pidfd_getfd on our child), to read options back     */

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

static int pidfd_broken; /* pidfd_getfd refused once: option checks on the fd are skipped */

/*
 * A duplicate (tracked) of the daemon's socket fd of this family and type whose local port is lport
 * and, when rport > 0, whose peer port is rport. -1 when the kernel does not let us look (the
 * option checks are then skipped with a note); fails when the socket is not found.
 */
static int
daemon_fd_(int family, int type, int lport, int rport)
{
    char path[64];
    DIR *dir;
    struct dirent *e;
    int pidfd, found = -1;

    if (pidfd_broken)
        return -1;
    pidfd = (int)syscall(SYS_pidfd_open, (int)g_d.pid, 0);
    if (pidfd < 0) {
        fprintf(stderr, "note: pidfd_open: %s; option checks on the daemon's fd skipped\n",
                strerror(errno));
        pidfd_broken = 1;
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%d/fd", (int)g_d.pid);
    dir = opendir(path);
    EXPECT_TRUE(dir != NULL, "dir");
    while (found < 0 && (e = readdir(dir)) != NULL) {
        char link[128], lp[400];
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd, v = 0;
        socklen_t vl = sizeof v;
        ssize_t ln;

        if (e->d_name[0] == '.')
            continue;
        snprintf(lp, sizeof lp, "%s/%s", path, e->d_name);
        ln = readlink(lp, link, sizeof link - 1);
        if (ln <= 0)
            continue;
        link[ln] = 0;
        if (strncmp(link, "socket:", 7) != 0)
            continue;
        fd = (int)syscall(SYS_pidfd_getfd, pidfd, atoi(e->d_name), 0);
        if (fd < 0) {
            if (errno == EBADF)
                continue; /* closed meanwhile */
            fprintf(stderr, "note: pidfd_getfd: %s; option checks on the daemon's fd skipped\n",
                    strerror(errno));
            pidfd_broken = 1;
            break;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl) == 0 && v == family &&
            getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 && v == type &&
            getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && sa_port(&ss) == lport) {
            sl = sizeof ss;
            if (rport <= 0 ||
                (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0 && sa_port(&ss) == rport)) {
                found = fd;
                break;
            }
        }
        close(fd);
    }
    closedir(dir);
    close(pidfd);
    if (pidfd_broken)
        return -1;
    if (found < 0)
        FAIL("no socket of the daemon with local port %d (peer port %d)", lport, rport);
    return track_fd(found);
}

static int
sockopt_int_(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    if (getsockopt(fd, level, name, &v, &l) != 0)
        FAIL("getsockopt(%d, %d): %s", level, name, strerror(errno));
    return v;
}

/* ------------------------------------------------------------------------ */
/* sockd-side shorthands                                                     */

/* socket.bind to an IP address text; checks the local address; returns its port. */
static int
bind_ip_(struct tc *t, long long s, const char *address, const char *expect_ip)
{
    json_t *r =
        tc_ok_(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address", address);
    int port = check_addr_(r, "local", expect_ip, -1);
    json_decref(r);
    return port;
}

/* socket.bind of a unix socket to path (mode: JSON value or NULL); checks local {path}. */
static void
bind_unix_(struct tc *t, long long s, const char *path, json_t *mode)
{
    json_t *r, *local;
    if (mode)
        r = tc_ok_(t, NULL, "socket.bind", "{s:I, s:s, s:o}", "socket", (json_int_t)s, "address",
                   path, "mode", mode);
    else
        r = tc_ok_(t, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s, "address", path);
    local = jget_(r, "local");
    EXPECT_STR(jstr_(local, "path"), path, "socket.bind local of a unix socket: %s", jd(r));
    json_decref(r);
}

/* A unix listener of the daemon on path; returns the handle, *listen_id the listen request. */
static long long
unix_listener_(struct tc *t, const char *path, int auto_accept, long long *listen_id)
{
    long long s = open_type_(t, "unix", 0);
    json_t *r;

    bind_unix_(t, s, path, NULL);
    r = tc_ok_(t, listen_id, "socket.listen", "{s:I, s:b}", "socket", (json_int_t)s, "auto_accept",
               auto_accept);
    expect_result_empty_(r, "socket.listen");
    json_decref(r);
    return s;
}

/* socket.incoming on listener l: checks request, remote {path:""}, local {path}; returns pending.
 */
static long long
expect_unix_incoming_(struct tc *t, long long l, long long listen_id, const char *path)
{
    json_t *ev = tc_event_(t, "socket.incoming", l, H_TIMEOUT_MS);
    long long pending = jint_(ev, "pending");

    EXPECT_INT(jint_(ev, "request"), listen_id, "socket.incoming request: %s", jd(ev));
    EXPECT_TRUE(pending > 0, "socket.incoming pending: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "remote"), "path"), "", "socket.incoming remote: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "local"), "path"), path, "socket.incoming local: %s", jd(ev));
    json_decref(ev);
    return pending;
}

/* socket.accept of a pending unix connection; checks socket.accepted; returns the new handle. */
static long long
accept_unix_(struct tc *t, long long l, long long pending, const char *path)
{
    long long id, a;
    json_t *r = tc_ok_(t, &id, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
                       (json_int_t)pending);
    json_t *ev;

    a = jint_(r, "socket");
    json_decref(r);
    ev = tc_event_(t, "socket.accepted", a, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.accepted request: %s", jd(ev));
    EXPECT_INT(jint_(ev, "listener"), l, "socket.accepted listener: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "local"), "path"), path, "socket.accepted local: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "remote"), "path"), "", "socket.accepted remote: %s", jd(ev));
    json_decref(ev);
    return a;
}

/* socket.sendto of text (port_param < 0: none); returns the request id, queued checked. */
static long long
sendto_text_(struct tc *t, long long s, const char *address, int port_param, const char *text)
{
    long long id;
    json_t *r;

    if (port_param >= 0)
        r = tc_ok_(t, &id, "socket.sendto", "{s:I, s:s, s:i, s:s}", "socket", (json_int_t)s,
                   "address", address, "port", port_param, "text", text);
    else
        r = tc_ok_(t, &id, "socket.sendto", "{s:I, s:s, s:s}", "socket", (json_int_t)s, "address",
                   address, "text", text);
    EXPECT_INT(jint_(r, "queued"), strlen(text), "socket.sendto queued: %s", jd(r));
    json_decref(r);
    return id;
}

/* socket.received of one datagram: request, exact bytes, from {ip, port}, no flags. */
static void
expect_dgram_(struct tc *t, long long s, long long req, const void *data, size_t len,
              const char *from_ip, int from_port)
{
    json_t *ev = tc_event_(t, "socket.received", s, H_TIMEOUT_MS);
    size_t n;
    unsigned char *d = ev_data_(ev, &n);

    EXPECT_INT(jint_(ev, "request"), req, "socket.received request: %s", jd(ev));
    if (n != len || memcmp(d, data, len) != 0)
        FAIL("datagram of %zu bytes delivered, expected %zu bytes (\"%.*s\"): %s", n, len,
             (int)(len < 60 ? len : 60), (const char *)data, jd(ev));
    check_addr_(ev, "from", from_ip, from_port);
    EXPECT_TRUE(!jflag_(ev, "truncated") && !json_object_get(ev, "size") &&
                    !jflag_(ev, "timeout") && !jflag_(ev, "eof"),
                "socket.received flags: %s", jd(ev));
    free(d);
    json_decref(ev);
}

/* An error response's data.reason and data.errno. */
static void
expect_reason_errno_(const json_t *err, const char *reason, int errnum)
{
    json_t *d = err_data_(err);
    EXPECT_STR(jstr_(d, "reason"), reason, "error data.reason: %s", jd(err));
    if (errnum)
        EXPECT_INT(jint_(d, "errno"), errnum, "error data.errno: %s", jd(err));
}

/* An error response's data.param. */
static void
expect_param_(const json_t *err, const char *param)
{
    EXPECT_STR(jstr_(err_data_(err), "param"), param, "error data.param: %s", jd(err));
}

/* Helpers called from a test record its line, shown when they fail. */
#define tmpdir(...) (TC_AT(), tmpdir_(__VA_ARGS__))
#define raw_udp(...) (TC_AT(), raw_udp_(__VA_ARGS__))
#define free_udp_port(...) (TC_AT(), free_udp_port_(__VA_ARGS__))
#define raw_udp_send(...) (TC_AT(), raw_udp_send_(__VA_ARGS__))
#define raw_udp_expect(...) (TC_AT(), raw_udp_expect_(__VA_ARGS__))
#define raw_udp_none(...) (TC_AT(), raw_udp_none_(__VA_ARGS__))
#define raw_unix_bound(...) (TC_AT(), raw_unix_bound_(__VA_ARGS__))
#define raw_unix_connect(...) (TC_AT(), raw_unix_connect_(__VA_ARGS__))
#define raw_accept_one(...) (TC_AT(), raw_accept_one_(__VA_ARGS__))
#define file_mode(...) (TC_AT(), file_mode_(__VA_ARGS__))
#define wait_gone(...) (TC_AT(), wait_gone_(__VA_ARGS__))
#define daemon_fd(...) (TC_AT(), daemon_fd_(__VA_ARGS__))
#define sockopt_int(...) (TC_AT(), sockopt_int_(__VA_ARGS__))
#define bind_ip(...) (TC_AT(), bind_ip_(__VA_ARGS__))
#define bind_unix(...) (TC_AT(), bind_unix_(__VA_ARGS__))
#define unix_listener(...) (TC_AT(), unix_listener_(__VA_ARGS__))
#define expect_unix_incoming(...) (TC_AT(), expect_unix_incoming_(__VA_ARGS__))
#define accept_unix(...) (TC_AT(), accept_unix_(__VA_ARGS__))
#define sendto_text(...) (TC_AT(), sendto_text_(__VA_ARGS__))
#define expect_dgram(...) (TC_AT(), expect_dgram_(__VA_ARGS__))
#define expect_reason_errno(...) (TC_AT(), expect_reason_errno_(__VA_ARGS__))
#define expect_param(...) (TC_AT(), expect_param_(__VA_ARGS__))

#define SOCK(s) "socket", (json_int_t)(s)

/* ======================================================================== */
/* UDP                                                                       */

/* bind gives the real port; a datagram to it arrives with from = our port; the reply leaves from
 * it. */
static void
test_udp_bind_recv_from(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port, p2, want;
    json_t *i, *r;

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    EXPECT_TRUE(port > 0 && port < 65536, "bound port %d", port);
    i = tc_info(t, s);
    EXPECT_STR(jstr_(i, "type"), "udp", "socket.info type: %s", jd(i));
    EXPECT_STR(jstr_(i, "state"), "bound", "socket.info state: %s", jd(i));
    check_addr(i, "local", "127.0.0.1", port);
    json_decref(i);

    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, port, "hello udp", 9);
    expect_dgram(t, s, id, "hello udp", 9, "127.0.0.1", rport);

    /* the reply leaves from the very port bind reported */
    id = sendto_text(t, s, "127.0.0.1", rport, "reply");
    expect_sent(t, s, id, 5);
    raw_udp_expect(rfd, "reply", 5, port, -1);
    EXPECT_INT(info_int(t, s, "bytes_received"), 9, "bytes_received after one datagram");
    EXPECT_INT(info_int(t, s, "bytes_sent"), 5, "bytes_sent after one datagram");

    /* a port given as "port" and in the address */
    want = free_udp_port(0);
    s = open_type(t, "udp", 0);
    r = tc_ok(t, NULL, "socket.bind", "{s:I, s:s, s:i}", SOCK(s), "address", "127.0.0.1", "port",
              want);
    check_addr(r, "local", "127.0.0.1", want);
    json_decref(r);
    p2 = free_udp_port(0);
    s = open_type(t, "udp", 0);
    {
        char a[64];
        snprintf(a, sizeof a, "127.0.0.1:%d", p2);
        EXPECT_INT(bind_ip(t, s, a, "127.0.0.1"), p2, "bind to %s", a);
    }
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, p2, "to-fixed-port", 13);
    expect_dgram(t, s, id, "to-fixed-port", 13, "127.0.0.1", rport);
}

/* Datagrams queued before the recv: each recv delivers exactly one, never two glued together. */
static void
test_udp_one_datagram_per_event(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port;
    const char *dg[] = {"first", "second-datagram", "3"};

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    for (int i = 0; i < 3; i++)
        raw_udp_send(rfd, 0, port, dg[i], strlen(dg[i]));
    /* exact recv (partial:false) of 1000: a datagram is a whole message, delivered as it is */
    for (int i = 0; i < 3; i++) {
        id = start_recv(t, s, 1000, 0, 0, 0);
        expect_dgram(t, s, id, dg[i], strlen(dg[i]), "127.0.0.1", rport);
        tc_no_event(t, s, i == 0 ? 300 : 50);
    }
    EXPECT_INT(info_int(t, s, "bytes_received"), 5 + 15 + 1, "bytes_received");
}

/* sendto forms: address:port, address + port, localhost; data and text; socket.sent each time. */
static void
test_udp_sendto_forms(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), src, total = 0;
    char a[64];
    unsigned char bin[300];
    json_t *r;

    (void)state;
    snprintf(a, sizeof a, "127.0.0.1:%d", rport);
    /* no bind: the fd is made by the first sendto, the kernel picks the port */
    id = sendto_text(t, s, a, -1, "a-one");
    expect_sent(t, s, id, 5);
    src = raw_udp_expect(rfd, "a-one", 5, -1, -1);
    EXPECT_TRUE(src > 0, "source port %d", src);
    total += 5;
    expect_state(t, s, "bound");

    id = sendto_text(t, s, "127.0.0.1", rport, "b-two!");
    expect_sent(t, s, id, 6);
    raw_udp_expect(rfd, "b-two!", 6, src, -1);
    total += 6;

    snprintf(a, sizeof a, "localhost:%d", rport);
    id = sendto_text(t, s, a, -1, "c-localhost");
    expect_sent(t, s, id, 11);
    raw_udp_expect(rfd, "c-localhost", 11, src, -1);
    total += 11;

    id = sendto_text(t, s, "localhost", rport, "d-localhost-port");
    expect_sent(t, s, id, 16);
    raw_udp_expect(rfd, "d-localhost-port", 16, src, -1);
    total += 16;

    /* base64 data with NUL and 0xff bytes */
    for (size_t i = 0; i < sizeof bin; i++)
        bin[i] = (unsigned char)(i * 7 + 3);
    bin[0] = 0;
    bin[1] = 0xff;
    {
        char *enc = b64_(bin, sizeof bin);
        r = tc_ok(t, &id, "socket.sendto", "{s:I, s:s, s:i, s:s}", SOCK(s), "address", "127.0.0.1",
                  "port", rport, "data", enc);
        free(enc);
    }
    EXPECT_INT(jint_(r, "queued"), sizeof bin, "socket.sendto data queued: %s", jd(r));
    json_decref(r);
    expect_sent(t, s, id, sizeof bin);
    raw_udp_expect(rfd, bin, sizeof bin, src, -1);
    total += (int)sizeof bin;

    /* notify:false: sent, but no socket.sent */
    r = tc_ok(t, &id, "socket.sendto", "{s:I, s:s, s:i, s:s, s:b}", SOCK(s), "address", "127.0.0.1",
              "port", rport, "text", "quiet", "notify", 0);
    json_decref(r);
    raw_udp_expect(rfd, "quiet", 5, src, -1);
    total += 5;
    tc_no_event(t, s, 200);

    /* several sendto in a row: one socket.sent each, in order, with its own request */
    {
        long long ids[5];
        char txt[5][16];
        for (int k = 0; k < 5; k++) {
            snprintf(txt[k], sizeof txt[k], "burst-%d%.*s", k, k, "xxxxx");
            ids[k] = sendto_text(t, s, "127.0.0.1", rport, txt[k]);
            total += (int)strlen(txt[k]);
        }
        for (int k = 0; k < 5; k++) {
            json_t *ev = tc_next_is(t, s, "socket.sent", H_TIMEOUT_MS);
            EXPECT_INT(jint_(ev, "request"), ids[k], "socket.sent %d request: %s", k, jd(ev));
            EXPECT_INT(jint_(ev, "bytes"), strlen(txt[k]), "socket.sent %d bytes: %s", k, jd(ev));
            EXPECT_TRUE(!json_object_get(ev, "errno"), "socket.sent %d: %s", k, jd(ev));
            json_decref(ev);
            raw_udp_expect(rfd, txt[k], strlen(txt[k]), src, -1);
        }
    }
    EXPECT_INT(info_int(t, s, "bytes_sent"), total, "bytes_sent after all sendto");

    /* the socket made by sendto receives the answers on that port */
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, src, "answer", 6);
    expect_dgram(t, s, id, "answer", 6, "127.0.0.1", rport);
}

/* Empty datagrams both ways. */
static void
test_udp_empty_datagram(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port;

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, port, "", 0);
    expect_dgram(t, s, id, "", 0, "127.0.0.1", rport);
    id = sendto_text(t, s, "127.0.0.1", rport, "");
    expect_sent(t, s, id, 0);
    raw_udp_expect(rfd, "", 0, port, -1);
}

/* connect fixes the default peer: socket.connected, then send; replies come with from. */
static void
test_udp_connect_send(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), lport;
    char a[64];
    json_t *r, *ev, *i;

    (void)state;
    snprintf(a, sizeof a, "127.0.0.1:%d", rport);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(s), "address", a);
    expect_result_empty(r, "socket.connect");
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    check_addr(ev, "remote", "127.0.0.1", rport);
    lport = check_addr(ev, "local", "127.0.0.1", -1);
    json_decref(ev);
    i = tc_info(t, s);
    EXPECT_STR(jstr_(i, "state"), "connected", "socket.info: %s", jd(i));
    check_addr(i, "remote", "127.0.0.1", rport);
    json_decref(i);

    id = send_text(t, s, "via-send", 1);
    expect_sent(t, s, id, 8);
    raw_udp_expect(rfd, "via-send", 8, lport, -1);
    id = send_text(t, s, "second", 1);
    expect_sent(t, s, id, 6);
    raw_udp_expect(rfd, "second", 6, lport, -1);

    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, lport, "pong", 4);
    expect_dgram(t, s, id, "pong", 4, "127.0.0.1", rport);
}

/* stream:true: every datagram its own event until recv_cancel; what comes later waits. */
static void
test_udp_stream_until_cancel(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id, id2;
    int rport, rfd = raw_udp(0, &rport), port;
    const char *dg[] = {"s0", "stream-1", "s2-longer-one", "3", "four-four"};

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    id = start_recv(t, s, 1000, 0, 1, 0);
    for (int i = 0; i < 5; i++) {
        raw_udp_send(rfd, 0, port, dg[i], strlen(dg[i]));
        if (i == 2)
            sleep_ms(50); /* some alone, some back to back */
    }
    for (int i = 0; i < 5; i++)
        expect_dgram(t, s, id, dg[i], strlen(dg[i]), "127.0.0.1", rport);
    /* still streaming */
    raw_udp_send(rfd, 0, port, "more", 4);
    expect_dgram(t, s, id, "more", 4, "127.0.0.1", rport);
    EXPECT_TRUE(recv_canceled(t, s), "recv_cancel of a streaming recv");
    raw_udp_send(rfd, 0, port, "after-cancel", 12);
    tc_no_event(t, s, 300);
    EXPECT_TRUE(!recv_canceled(t, s), "second recv_cancel must answer canceled:false");
    id2 = start_recv(t, s, 1000, 0, 0, 0);
    expect_dgram(t, s, id2, "after-cancel", 12, "127.0.0.1", rport);
}

/* A datagram longer than length: cut to length, truncated:true, size = its real size; the rest is
 * dropped (the next recv gets the next datagram). */
static void
test_udp_truncated(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port;
    static unsigned char big[60000];
    const size_t sizes[] = {100, 101, 60000};
    const size_t lens[] = {10, 100, 1000};

    (void)state;
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (unsigned char)('a' + i % 26);
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    for (int k = 0; k < 3; k++) {
        json_t *ev;
        size_t n;
        unsigned char *d;

        id = start_recv(t, s, (json_int_t)lens[k], 0, 0, 0);
        raw_udp_send(rfd, 0, port, big, sizes[k]);
        ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
        d = ev_data(ev, &n);
        EXPECT_INT(jint_(ev, "request"), id, "socket.received request: %s", jd(ev));
        EXPECT_INT(n, lens[k], "bytes delivered of a %zu-byte datagram, length %zu: %s", sizes[k],
                   lens[k], jd(ev));
        EXPECT_TRUE(memcmp(d, big, lens[k]) == 0, "the head of the datagram: %s", jd(ev));
        EXPECT_TRUE(jflag_(ev, "truncated"), "truncated flag: %s", jd(ev));
        EXPECT_INT(jint_(ev, "size"), sizes[k], "size of the truncated datagram: %s", jd(ev));
        check_addr(ev, "from", "127.0.0.1", rport);
        free(d);
        json_decref(ev);
        /* the cut-off tail is not delivered as another datagram */
        id = start_recv(t, s, 100000, 0, 0, 0);
        raw_udp_send(rfd, 0, port, "next", 4);
        expect_dgram(t, s, id, "next", 4, "127.0.0.1", rport);
    }
    /* exactly length: not truncated */
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, port, big, 100);
    expect_dgram(t, s, id, big, 100, "127.0.0.1", rport);
}

/* timeout_ms: data "" with timeout:true, the socket stays; stream recvs end on timeout too. */
static void
test_udp_recv_timeout(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port;
    long long t0, el;
    json_t *ev;

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    t0 = now_ms();
    id = start_recv(t, s, 100, 0, 0, 300);
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    el = now_ms() - t0;
    EXPECT_INT(jint_(ev, "request"), id, "timed-out socket.received request: %s", jd(ev));
    EXPECT_STR(jstr_(ev, "data"), "", "timed-out socket.received data: %s", jd(ev));
    EXPECT_TRUE(jflag_(ev, "timeout"), "timeout flag: %s", jd(ev));
    EXPECT_TRUE(el >= 250 && el < 3000, "the recv timed out after %lld ms (timeout_ms 300)", el);
    json_decref(ev);
    expect_state(t, s, "bound");
    tc_no_event(t, s, 200);

    /* still usable */
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 0, port, "alive", 5);
    expect_dgram(t, s, id, "alive", 5, "127.0.0.1", rport);

    /* a datagram that arrives in time is delivered without timeout */
    id = start_recv(t, s, 100, 0, 0, 2000);
    raw_udp_send(rfd, 0, port, "in-time", 7);
    expect_dgram(t, s, id, "in-time", 7, "127.0.0.1", rport);
    tc_no_event(t, s, 300);

    /* stream with timeout: datagrams, then one timeout event, then nothing */
    id = start_recv(t, s, 100, 0, 1, 500);
    raw_udp_send(rfd, 0, port, "st-1", 4);
    expect_dgram(t, s, id, "st-1", 4, "127.0.0.1", rport);
    ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "stream timeout request: %s", jd(ev));
    EXPECT_STR(jstr_(ev, "data"), "", "stream timeout data: %s", jd(ev));
    EXPECT_TRUE(jflag_(ev, "timeout"), "stream timeout flag: %s", jd(ev));
    json_decref(ev);
    raw_udp_send(rfd, 0, port, "late", 4);
    tc_no_event(t, s, 300);
    EXPECT_TRUE(!recv_canceled(t, s), "the stream recv ended with its timeout");
    expect_state(t, s, "bound");
}

/* IPv6: bind ::1, from [::1], sendto [::1]:port, connect; an address's own family wins. */
static void
test_udp_ipv6(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 1), id, c;
    int rport, rfd = raw_udp(1, &rport), port, lport;
    char a[64];
    json_t *r, *ev;

    (void)state;
    port = bind_ip(t, s, "::1", "::1");
    id = start_recv(t, s, 100, 0, 0, 0);
    raw_udp_send(rfd, 1, port, "six", 3);
    expect_dgram(t, s, id, "six", 3, "::1", rport);
    snprintf(a, sizeof a, "[::1]:%d", rport);
    id = sendto_text(t, s, a, -1, "back-six");
    expect_sent(t, s, id, 8);
    raw_udp_expect(rfd, "back-six", 8, port, -1);
    id = sendto_text(t, s, "::1", rport, "port-param");
    expect_sent(t, s, id, 10);
    raw_udp_expect(rfd, "port-param", 10, port, -1);

    /* connect over IPv6 */
    c = open_type(t, "udp", 1);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(c), "address", a);
    json_decref(r);
    ev = tc_event(t, "socket.connected", c, H_TIMEOUT_MS);
    check_addr(ev, "remote", "::1", rport);
    lport = check_addr(ev, "local", "::1", -1);
    json_decref(ev);
    id = send_text(t, c, "v6-connected", 1);
    expect_sent(t, c, id, 12);
    raw_udp_expect(rfd, "v6-connected", 12, lport, -1);

    /* ipv6:true without address: the IPv6 any address */
    s = open_type(t, "udp", 1);
    r = tc_ok(t, NULL, "socket.bind", "{s:I}", SOCK(s));
    check_addr(r, "local", "::", -1);
    /* that dual-stack socket reaches an IPv4 address (unless the host makes sockets v6-only) */
    {
        FILE *f = fopen("/proc/sys/net/ipv6/bindv6only", "r");
        int v6only = 0, r4, fd4 = raw_udp(0, &r4), p6 = check_addr(r, "local", "::", -1);
        if (f) {
            if (fscanf(f, "%d", &v6only) != 1)
                v6only = 0;
            fclose(f);
        }
        if (!v6only) {
            char a4[64];
            snprintf(a4, sizeof a4, "127.0.0.1:%d", r4);
            id = sendto_text(t, s, a4, -1, "dual-stack");
            expect_sent(t, s, id, 10);
            raw_udp_expect(fd4, "dual-stack", 10, p6, -1);
        }
    }
    json_decref(r);
    /* the address's family wins over ipv6 */
    s = open_type(t, "udp", 1);
    bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    s = open_type(t, "udp", 0);
    bind_ip(t, s, "::1", "::1");
}

/* Calls that do not fit the type or state. */
static void
test_udp_wrong_calls(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long u = open_type(t, "udp", 0), tcp, x;
    int lport;
    char a[64];
    json_t *r, *ev;

    (void)state;
    raw_bound(0, 0, 8, &lport);
    json_decref(
        tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.send", "{s:I, s:s}", SOCK(u), "text", "x"));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.listen", "{s:I}", SOCK(u)));
    expect_state(t, u, "open");
    bind_ip(t, u, "127.0.0.1", "127.0.0.1");
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.listen", "{s:I}", SOCK(u)));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.listen", "{s:I, s:b}", SOCK(u),
                              "auto_accept", 1));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.accept", "{s:I, s:i}", SOCK(u),
                              "pending", 1));
    json_decref(
        tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.send", "{s:I, s:s}", SOCK(u), "text", "x"));
    expect_state(t, u, "bound");

    /* sendto on tcp: open and connected */
    tcp = open_type(t, "tcp", 0);
    snprintf(a, sizeof a, "127.0.0.1:%d", lport);
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.sendto", "{s:I, s:s, s:s}", SOCK(tcp),
                              "address", a, "text", "x"));
    r = tc_ok(t, NULL, "socket.connect", "{s:I, s:s}", SOCK(tcp), "address", a);
    json_decref(r);
    ev = tc_event(t, "socket.connected", tcp, H_TIMEOUT_MS);
    json_decref(ev);
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.sendto", "{s:I, s:s, s:s}", SOCK(tcp),
                              "address", a, "text", "x"));
    expect_state(t, tcp, "connected");
    /* and on unix */
    x = open_type(t, "unix", 0);
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.sendto", "{s:I, s:s, s:s}", SOCK(x),
                              "address", a, "text", "x"));
}

/* sendto address errors answer -32602 address_invalid, and nothing is sent. */
static void
test_udp_sendto_bad_address(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long u = open_type(t, "udp", 0);
    int rport, rfd = raw_udp(0, &rport);
    char a[64];
    json_t *e;

    (void)state;
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s}", SOCK(u),
                      "address", "127.0.0.1", "text", "no-port");
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s}", SOCK(u),
                      "address", "127.0.0.1:99999", "text", "bad-port");
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s}", SOCK(u),
                      "address", "not an address!", "text", "junk");
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    snprintf(a, sizeof a, "127.0.0.1:%d", rport);
    json_decref(tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s}", SOCK(u),
                              "address", a));
    json_decref(tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:s, s:s}",
                              SOCK(u), "address", a, "text", "x", "data", "eA=="));
    raw_udp_none(rfd, 200);
    expect_state(t, u, "open");
    tc_no_event(t, u, 100);
}

/* The largest IPv4 UDP payload (65507 bytes) goes out and comes in whole; one byte more is refused.
 */
static void
test_udp_max_datagram(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port, big = 65507;
    unsigned char *buf = malloc(65508);
    char *enc;
    json_t *r, *e;

    (void)state;
    EXPECT_TRUE(buf != NULL, "buf");
    for (int i = 0; i < 65508; i++)
        buf[i] = (unsigned char)(i * 31 + 7);
    {
        int sz = 1 << 20;
        setsockopt(rfd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    enc = b64_(buf, (size_t)big);
    r = tc_ok(t, &id, "socket.sendto", "{s:I, s:s, s:i, s:s}", SOCK(s), "address", "127.0.0.1",
              "port", rport, "data", enc);
    free(enc);
    EXPECT_INT(jint_(r, "queued"), big, "socket.sendto queued: %s", jd(r));
    json_decref(r);
    expect_sent(t, s, id, (size_t)big);
    raw_udp_expect(rfd, buf, (size_t)big, port, -1);

    enc = b64_(buf, (size_t)big + 1);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.sendto", "{s:I, s:s, s:i, s:s}", SOCK(s),
                      "address", "127.0.0.1", "port", rport, "data", enc);
    free(enc);
    json_decref(e);
    raw_udp_none(rfd, 200);
    tc_no_event(t, s, 100);

    id = start_recv(t, s, 100000, 0, 0, 0);
    raw_udp_send(rfd, 0, port, buf, (size_t)big);
    expect_dgram(t, s, id, buf, (size_t)big, "127.0.0.1", rport);
    free(buf);
}

/* The content of datagram i of the 1000 (4..1200 bytes, the index first). */
static size_t
dgram_fill(int i, unsigned char *buf)
{
    size_t len = 4 + (size_t)((i * 131) % 1197);
    buf[0] = (unsigned char)(i >> 24);
    buf[1] = (unsigned char)(i >> 16);
    buf[2] = (unsigned char)(i >> 8);
    buf[3] = (unsigned char)i;
    for (size_t j = 4; j < len; j++)
        buf[j] = (unsigned char)(i * 7 + j * 13);
    return len;
}

/* 1000 distinct datagrams of varying sizes through one stream recv: order, content, from. */
static void
test_udp_1000_datagrams(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port;
    unsigned char want[1300];
    long long total = 0;

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    id = start_recv(t, s, 2000, 0, 1, 0);
    for (int b = 0; b < 1000; b += 50) {
        for (int i = b; i < b + 50; i++) {
            size_t len = dgram_fill(i, want);
            raw_udp_send(rfd, 0, port, want, len);
        }
        for (int i = b; i < b + 50; i++) {
            size_t len = dgram_fill(i, want), n;
            json_t *ev = tc_event(t, "socket.received", s, H_TIMEOUT_MS);
            unsigned char *d = ev_data(ev, &n);
            if (n != len || memcmp(d, want, len) != 0) {
                int got = n >= 4 ? (d[0] << 24 | d[1] << 16 | d[2] << 8 | d[3]) : -1;
                FAIL("datagram %d: got %zu bytes (index %d), expected %zu bytes", i, n, got, len);
            }
            EXPECT_INT(jint_(ev, "request"), id, "datagram %d request", i);
            check_addr(ev, "from", "127.0.0.1", rport);
            EXPECT_TRUE(!jflag_(ev, "truncated"), "datagram %d: %s", i, jd(ev));
            total += (long long)len;
            free(d);
            json_decref(ev);
        }
    }
    tc_no_event(t, s, 200);
    EXPECT_INT(info_int(t, s, "bytes_received"), total, "bytes_received after 1000 datagrams");
    EXPECT_TRUE(recv_canceled(t, s), "the stream recv was still pending");
}

/* ======================================================================== */
/* Unix                                                                      */

/* bind with mode 0600 (integer), "0660" (octal string), default 0666; the file is a socket. */
static void
test_unix_bind_mode(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char a[128], b[128], c[128], d[128];
    long long s1, s2, s3, s4;
    mode_t m;
    json_t *i, *e;

    (void)state;
    snprintf(a, sizeof a, "%s/a.sock", dir);
    snprintf(b, sizeof b, "%s/b.sock", dir);
    snprintf(c, sizeof c, "%s/c.sock", dir);
    snprintf(d, sizeof d, "%s/d.sock", dir);
    s1 = open_type(t, "unix", 0);
    bind_unix(t, s1, a, json_integer(0600));
    m = file_mode(a);
    EXPECT_TRUE(S_ISSOCK(m), "%s is a socket (mode 0%o)", a, (unsigned)m);
    EXPECT_INT(m & 07777, 0600, "permission bits of %s bound with mode 384", a);
    i = tc_info(t, s1);
    EXPECT_STR(jstr_(i, "type"), "unix", "socket.info: %s", jd(i));
    EXPECT_STR(jstr_(i, "state"), "bound", "socket.info: %s", jd(i));
    EXPECT_STR(jstr_(jget_(i, "local"), "path"), a, "socket.info local: %s", jd(i));
    json_decref(i);

    s2 = open_type(t, "unix", 0);
    bind_unix(t, s2, b, json_string("0660"));
    m = file_mode(b);
    EXPECT_TRUE(S_ISSOCK(m), "%s is a socket", b);
    EXPECT_INT(m & 07777, 0660, "permission bits of %s bound with mode \"0660\"", b);

    s3 = open_type(t, "unix", 0);
    bind_unix(t, s3, c, NULL);
    m = file_mode(c);
    EXPECT_TRUE(S_ISSOCK(m), "%s is a socket", c);
    EXPECT_INT(m & 07777, 0666, "permission bits of %s bound without mode (default 0666)", c);

    /* bad modes: -32602, nothing bound, no file */
    s4 = open_type(t, "unix", 0);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:s}", SOCK(s4),
                      "address", d, "mode", "rw-rw-rw-");
    expect_param(e, "mode");
    json_decref(e);
    json_decref(tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:i}", SOCK(s4),
                              "address", d, "mode", 01000));
    json_decref(tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:b}", SOCK(s4),
                              "address", d, "mode", 1));
    EXPECT_INT(file_mode(d), 0, "no file at %s after refused binds", d);
    expect_state(t, s4, "open");
    /* the socket is still usable */
    bind_unix(t, s4, d, json_string("600"));
    EXPECT_INT(file_mode(d) & 07777, 0600, "permission bits of %s bound with mode \"600\"", d);
    /* mode is for unix sockets only */
    {
        long long tcp = open_type(t, "tcp", 0);
        e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:i}", SOCK(tcp),
                          "address", "127.0.0.1", "mode", 0600);
        expect_param(e, "mode");
        json_decref(e);
    }
}

/* listen; an outside client is reported (remote {path:""}, local {path}); accept; data both ways;
 * reject; auto_accept. */
static void
test_unix_listen_accept(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128], q[128];
    long long l, lid, pend, a, id;
    int fd, fd2;
    json_t *i, *r, *ev;

    (void)state;
    snprintf(p, sizeof p, "%s/listen.sock", dir);
    l = unix_listener(t, p, 0, &lid);
    expect_state(t, l, "listening");
    fd = raw_unix_connect(p);
    pend = expect_unix_incoming(t, l, lid, p);
    a = accept_unix(t, l, pend, p);
    i = tc_info(t, a);
    EXPECT_STR(jstr_(i, "type"), "unix", "socket.info: %s", jd(i));
    EXPECT_STR(jstr_(i, "state"), "connected", "socket.info: %s", jd(i));
    EXPECT_STR(jstr_(jget_(i, "local"), "path"), p, "socket.info local: %s", jd(i));
    EXPECT_STR(jstr_(jget_(i, "remote"), "path"), "", "socket.info remote: %s", jd(i));
    EXPECT_INT(jint_(i, "listener"), l, "socket.info listener: %s", jd(i));
    json_decref(i);

    id = send_text(t, a, "to-the-client", 1);
    expect_sent(t, a, id, 13);
    raw_expect(fd, "to-the-client");
    raw_write_str(fd, "to-the-daemon");
    recv_expect(t, a, "to-the-daemon");

    /* the outside client leaves: closed by_peer */
    close_fd_(fd);
    ev = tc_event(t, "socket.closed", a, H_TIMEOUT_MS);
    EXPECT_STR(jstr_(ev, "reason"), "by_peer", "socket.closed: %s", jd(ev));
    json_decref(ev);

    /* a second connection, rejected */
    fd2 = raw_unix_connect(p);
    pend = expect_unix_incoming(t, l, lid, p);
    r = tc_ok(t, NULL, "socket.reject", "{s:I, s:I}", SOCK(l), "pending", (json_int_t)pend);
    json_decref(r);
    {
        int w = raw_wait_closed(fd2, H_TIMEOUT_MS);
        EXPECT_TRUE(w == 0 || w == ECONNRESET, "the rejected client sees the end (got %d)", w);
    }

    /* auto_accept */
    snprintf(q, sizeof q, "%s/auto.sock", dir);
    l = unix_listener(t, q, 1, &lid);
    fd = raw_unix_connect(q);
    ev = tc_event(t, "socket.accepted", 0, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "listener"), l, "socket.accepted listener: %s", jd(ev));
    EXPECT_INT(jint_(ev, "request"), lid, "socket.accepted request (auto_accept): %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "local"), "path"), q, "socket.accepted local: %s", jd(ev));
    EXPECT_STR(jstr_(jget_(ev, "remote"), "path"), "", "socket.accepted remote: %s", jd(ev));
    a = jint_(ev, "socket");
    json_decref(ev);
    raw_write_str(fd, "auto");
    recv_expect(t, a, "auto");
}

/* sockd as the client of a Unix listener the test runs. */
static void
test_unix_client(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128];
    long long s, id;
    int lfd, fd;
    json_t *r, *ev, *i;

    (void)state;
    snprintf(p, sizeof p, "%s/server.sock", dir);
    lfd = raw_unix_bound(p, 8);
    s = open_type(t, "unix", 0);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(s), "address", p);
    expect_result_empty(r, "socket.connect");
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    SOFT_CHECK(is_path_obj(ev, "remote", p),
               "socket.connected of a unix client: remote must be {\"path\":\"%s\"}, got %s", p,
               jd(ev));
    SOFT_CHECK(is_path_obj(ev, "local", ""),
               "socket.connected of an unbound unix client: local must be {\"path\":\"\"}, got %s",
               jd(ev));
    json_decref(ev);
    i = tc_info(t, s);
    EXPECT_STR(jstr_(i, "state"), "connected", "socket.info: %s", jd(i));
    EXPECT_STR(jstr_(jget_(i, "remote"), "path"), p, "socket.info remote: %s", jd(i));
    json_decref(i);

    fd = raw_accept_one(lfd);
    id = send_text(t, s, "hello server", 1);
    expect_sent(t, s, id, 12);
    raw_expect(fd, "hello server");
    raw_write_str(fd, "hello daemon");
    recv_expect(t, s, "hello daemon");
    close_fd_(fd);
    ev = tc_event(t, "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr_(ev, "reason"), "by_peer", "socket.closed: %s", jd(ev));
    json_decref(ev);
    /* the daemon's client socket owns no file: the server's file is untouched */
    EXPECT_TRUE(S_ISSOCK(file_mode(p)), "the server's socket file %s is still there", p);
    soft_done();
}

/* Abstract names: as listener (outside client, and daemon client) and as client. */
static void
test_unix_abstract(void **state)
{
    struct tc *t = tc_new(&g_d);
    char n1[96], n2[96];
    long long l, lid, pend, a, c, id;
    int fd, lfd;
    json_t *r, *ev;

    (void)state;
    abstract_name_(n1, sizeof n1, "listener");
    abstract_name_(n2, sizeof n2, "server");

    /* daemon listener, outside client */
    l = unix_listener(t, n1, 0, &lid);
    {
        json_t *i = tc_info(t, l);
        EXPECT_STR(jstr_(jget_(i, "local"), "path"), n1, "socket.info local: %s", jd(i));
        json_decref(i);
    }
    fd = raw_unix_connect(n1);
    pend = expect_unix_incoming(t, l, lid, n1);
    a = accept_unix(t, l, pend, n1);
    raw_write_str(fd, "abstract-in");
    recv_expect(t, a, "abstract-in");
    id = send_text(t, a, "abstract-out", 1);
    expect_sent(t, a, id, 12);
    raw_expect(fd, "abstract-out");

    /* daemon client to an outside abstract listener */
    lfd = raw_unix_bound(n2, 8);
    c = open_type(t, "unix", 0);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(c), "address", n2);
    json_decref(r);
    ev = tc_event(t, "socket.connected", c, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    SOFT_CHECK(is_path_obj(ev, "remote", n2),
               "socket.connected of a unix client: remote must be {\"path\":\"%s\"}, got %s", n2,
               jd(ev));
    SOFT_CHECK(is_path_obj(ev, "local", ""),
               "socket.connected of an unbound unix client: local must be {\"path\":\"\"}, got %s",
               jd(ev));
    json_decref(ev);
    {
        json_t *i = tc_info(t, c);
        EXPECT_STR(jstr_(jget_(i, "remote"), "path"), n2, "socket.info remote: %s", jd(i));
        json_decref(i);
    }
    fd = raw_accept_one(lfd);
    id = send_text(t, c, "to-abstract", 1);
    expect_sent(t, c, id, 11);
    raw_expect(fd, "to-abstract");
    raw_write_str(fd, "from-abstract");
    recv_expect(t, c, "from-abstract");

    /* daemon client to the daemon's own abstract listener */
    c = open_type(t, "unix", 0);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(c), "address", n1);
    json_decref(r);
    ev = tc_event(t, "socket.connected", c, H_TIMEOUT_MS);
    SOFT_CHECK(is_path_obj(ev, "remote", n1),
               "socket.connected to the daemon's own listener: remote must be {\"path\":\"%s\"}, "
               "got %s",
               n1, jd(ev));
    json_decref(ev);
    pend = expect_unix_incoming(t, l, lid, n1);
    a = accept_unix(t, l, pend, n1);
    id = send_text(t, c, "loop", 1);
    expect_sent(t, c, id, 4);
    recv_expect(t, a, "loop");
    id = send_text(t, a, "back", 1);
    expect_sent(t, a, id, 4);
    recv_expect(t, c, "back");
    soft_done();
}

/* A leftover socket file nobody listens on is replaced by bind. */
static void
test_unix_stale_file(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128];
    long long l, lid;
    int fd, err;
    json_t *r;

    (void)state;
    snprintf(p, sizeof p, "%s/stale.sock", dir);
    fd = raw_unix_bound(p, -1);
    close_fd_(fd);
    EXPECT_TRUE(S_ISSOCK(file_mode(p)), "the stale socket file %s exists", p);
    EXPECT_INT(raw_unix_try_connect_(p, &err), -1, "connect to the stale file");
    EXPECT_INT(err, ECONNREFUSED, "connect to the stale file");

    l = open_type(t, "unix", 0);
    bind_unix(t, l, p, json_integer(0640));
    EXPECT_INT(file_mode(p) & 07777, 0640, "the replaced file has the new mode");
    r = tc_ok(t, &lid, "socket.listen", "{s:I}", SOCK(l));
    json_decref(r);
    fd = raw_unix_connect(p);
    expect_unix_incoming(t, l, lid, p);
    (void)fd;
}

/* A path where something listens, or a regular file: -32603 bind_failed EADDRINUSE; untouched. */
static void
test_unix_path_in_use(void **state)
{
    struct tc *t = tc_new(&g_d), *t2 = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128], q[128], f[128], buf[32];
    long long s, l, lid;
    int lfd, fd, ffd;
    ssize_t n;
    json_t *e;

    (void)state;
    /* an outside listener */
    snprintf(p, sizeof p, "%s/busy.sock", dir);
    lfd = raw_unix_bound(p, 8);
    s = open_type(t, "unix", 0);
    e = tc_expect_err(t, SOCKD_E_INTERNAL, "socket.bind", "{s:I, s:s}", SOCK(s), "address", p);
    expect_reason_errno(e, "bind_failed", EADDRINUSE);
    json_decref(e);
    expect_state(t, s, "open");
    EXPECT_TRUE(S_ISSOCK(file_mode(p)), "the outside listener's file %s is still there", p);
    fd = raw_unix_connect(p);
    raw_accept_one(lfd);
    (void)fd;

    /* the daemon's own listener, from the same and from another client */
    snprintf(q, sizeof q, "%s/mine.sock", dir);
    l = unix_listener(t, q, 0, &lid);
    e = tc_expect_err(t, SOCKD_E_INTERNAL, "socket.bind", "{s:I, s:s}", SOCK(s), "address", q);
    expect_reason_errno(e, "bind_failed", EADDRINUSE);
    json_decref(e);
    {
        long long s2 = open_type(t2, "unix", 0);
        e = tc_expect_err(t2, SOCKD_E_INTERNAL, "socket.bind", "{s:I, s:s}", SOCK(s2), "address",
                          q);
        expect_reason_errno(e, "bind_failed", EADDRINUSE);
        json_decref(e);
    }
    fd = raw_unix_connect(q);
    expect_unix_incoming(t, l, lid, q);

    /* a regular file is never removed */
    snprintf(f, sizeof f, "%s/regular", dir);
    ffd = open(f, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    EXPECT_TRUE(ffd >= 0, "ffd >= 0");
    EXPECT_INT(write(ffd, "keep me\n", 8), 8, "write: %s", strerror(errno));
    close(ffd);
    e = tc_expect_err(t, SOCKD_E_INTERNAL, "socket.bind", "{s:I, s:s}", SOCK(s), "address", f);
    expect_reason_errno(e, "bind_failed", EADDRINUSE);
    json_decref(e);
    EXPECT_TRUE(S_ISREG(file_mode(f)), "the regular file %s is still a regular file", f);
    ffd = open(f, O_RDONLY | O_CLOEXEC);
    EXPECT_TRUE(ffd >= 0, "ffd >= 0");
    n = read(ffd, buf, sizeof buf);
    close(ffd);
    EXPECT_TRUE(n == 8 && memcmp(buf, "keep me\n", 8) == 0, "the regular file kept its content");
    expect_state(t, s, "open");

    /* after all that the socket binds elsewhere */
    snprintf(q, sizeof q, "%s/free.sock", dir);
    bind_unix(t, s, q, NULL);
}

/* The file goes away when the socket is closed (listener and bound-only); accepted sockets closing
 * leave the listener's file alone. */
static void
test_unix_unlink_on_close(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128], b[128];
    long long l, lid, pend, a, s;
    json_t *r;
    int fd;

    (void)state;
    snprintf(p, sizeof p, "%s/l.sock", dir);
    snprintf(b, sizeof b, "%s/b.sock", dir);
    l = unix_listener(t, p, 0, &lid);
    fd = raw_unix_connect(p);
    pend = expect_unix_incoming(t, l, lid, p);
    a = accept_unix(t, l, pend, p);
    r = tc_ok(t, NULL, "socket.close", "{s:I}", SOCK(a));
    json_decref(r);
    EXPECT_TRUE(S_ISSOCK(file_mode(p)), "closing an accepted socket keeps the listener's file");
    close_fd_(fd);

    r = tc_ok(t, NULL, "socket.close", "{s:I}", SOCK(l));
    json_decref(r);
    EXPECT_INT(file_mode(p), 0, "the listener's file %s after socket.close", p);

    s = open_type(t, "unix", 0);
    bind_unix(t, s, b, NULL);
    EXPECT_TRUE(S_ISSOCK(file_mode(b)), "bound file %s", b);
    r = tc_ok(t, NULL, "socket.close", "{s:I}", SOCK(s));
    json_decref(r);
    EXPECT_INT(file_mode(b), 0, "the bound (not listening) socket's file %s after socket.close", b);

    /* the path is free again */
    l = unix_listener(t, p, 0, &lid);
    fd = raw_unix_connect(p);
    expect_unix_incoming(t, l, lid, p);
}

/*
 * A bound (not listening) socket's file counts as stale, so another socket may take the path over.
 * When the first socket then closes, it must not remove the file that now belongs to the second
 * (a live listener). Refusing the second bind with EADDRINUSE would be fine too.
 */
static void
test_unix_close_keeps_taken_over_file(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128];
    long long a, b, lid, id;
    json_t *r, *resp;

    (void)state;
    snprintf(p, sizeof p, "%s/shared.sock", dir);
    a = open_type(t, "unix", 0);
    bind_unix(t, a, p, NULL);
    b = open_type(t, "unix", 0);
    TC_AT();
    id = tc_send(t, "socket.bind", json_pack("{s:I, s:s}", SOCK(b), "address", p));
    resp = tc_response(t, id, "socket.bind", H_TIMEOUT_MS);
    if (json_object_get(resp, "error")) {
        /* the daemon knows the path is held: also correct */
        json_t *e = json_object_get(resp, "error");
        EXPECT_INT(jint_(e, "code"), SOCKD_E_INTERNAL, "second bind refused: %s", jd(resp));
        expect_reason_errno(e, "bind_failed", EADDRINUSE);
        json_decref(resp);
        return;
    }
    json_decref(resp);
    r = tc_ok(t, &lid, "socket.listen", "{s:I}", SOCK(b));
    json_decref(r);
    r = tc_ok(t, NULL, "socket.close", "{s:I}", SOCK(a));
    json_decref(r);
    SOFT_CHECK(
        S_ISSOCK(file_mode(p)),
        "closing socket %lld (whose file at %s had been taken over by listener %lld) removed "
        "the listener's file",
        a, p, b);
    if (S_ISSOCK(file_mode(p))) {
        raw_unix_connect(p);
        expect_unix_incoming(t, b, lid, p);
    }
    soft_done();
}

/* The files of a client's sockets go away when that client disconnects. */
static void
test_unix_unlink_on_disconnect(void **state)
{
    struct tc *t = tc_new(&g_d), *t2 = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128], b[128];
    long long lid, s;

    (void)state;
    snprintf(p, sizeof p, "%s/l.sock", dir);
    snprintf(b, sizeof b, "%s/b.sock", dir);
    unix_listener(t2, p, 0, &lid);
    s = open_type(t2, "unix", 0);
    bind_unix(t2, s, b, NULL);
    EXPECT_TRUE(S_ISSOCK(file_mode(p)) && S_ISSOCK(file_mode(b)), "both files exist");
    /* our other client's listener must stay */
    {
        char o[128];
        long long ol, olid;
        snprintf(o, sizeof o, "%s/other.sock", dir);
        ol = unix_listener(t, o, 0, &olid);
        sockd_client_close(t2->c);
        t2->c = h_client(&g_d); /* a fresh connection, so t_cleanup has something to close */
        EXPECT_TRUE(wait_gone(p, H_TIMEOUT_MS), "listener file %s removed after its client left",
                    p);
        EXPECT_TRUE(wait_gone(b, H_TIMEOUT_MS), "bound file %s removed after its client left", b);
        EXPECT_TRUE(S_ISSOCK(file_mode(o)), "another client's file %s stays", o);
        raw_unix_connect(o);
        expect_unix_incoming(t, ol, olid, o);
    }
}

/* Address errors: too long for sun_path, relative, empty, port on unix. The longest path fits. */
static void
test_unix_address_errors(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char lp[200], okp[200];
    size_t dl = strlen(dir);
    long long s, l, lid;
    json_t *e, *r;
    struct sockaddr_un sun;

    (void)state;
    /* 108 characters: one more than sun_path can hold with its NUL */
    EXPECT_TRUE(dl + 2 < sizeof sun.sun_path, "dl + 2 < sizeof sun.sun_path");
    snprintf(lp, sizeof lp, "%s/", dir);
    memset(lp + dl + 1, 'x', sizeof sun.sun_path - dl - 1);
    lp[sizeof sun.sun_path] = 0;
    EXPECT_INT(strlen(lp), sizeof sun.sun_path, "strlen(lp)");
    s = open_type(t, "unix", 0);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s}", SOCK(s), "address",
                      lp);
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.connect", "{s:I, s:s}", SOCK(s), "address",
                      lp);
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    expect_state(t, s, "open");
    /* ... and 107 characters fit */
    snprintf(okp, sizeof okp, "%s", lp);
    okp[sizeof sun.sun_path - 1] = 0;
    bind_unix(t, s, okp, NULL);
    r = tc_ok(t, &lid, "socket.listen", "{s:I}", SOCK(s));
    json_decref(r);
    l = s;
    raw_unix_connect(okp);
    expect_unix_incoming(t, l, lid, okp);

    s = open_type(t, "unix", 0);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s}", SOCK(s), "address",
                      "relative.sock");
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.connect", "{s:I, s:s}", SOCK(s), "address",
                      "");
    expect_reason_errno(e, "address_invalid", 0);
    json_decref(e);
    snprintf(okp, sizeof okp, "%s/port.sock", dir);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.bind", "{s:I, s:s, s:i}", SOCK(s),
                      "address", okp, "port", 80);
    expect_param(e, "port");
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.connect", "{s:I, s:s, s:i}", SOCK(s),
                      "address", okp, "port", 80);
    expect_param(e, "port");
    json_decref(e);
    EXPECT_INT(file_mode(okp), 0, "no file made by refused calls");
    expect_state(t, s, "open");
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.listen", "{s:I}", SOCK(s)));
}

/* connect to a missing path: connect_failed ENOENT; to a dead socket file: connect_rejected. */
static void
test_unix_connect_failures(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char miss[128], dead[128], an[96];
    const char *paths[3];
    const char *reasons[3] = {"connect_failed", "connect_rejected", "connect_rejected"};
    const int errs[3] = {ENOENT, ECONNREFUSED, ECONNREFUSED};
    int fd;

    (void)state;
    snprintf(miss, sizeof miss, "%s/missing.sock", dir);
    snprintf(dead, sizeof dead, "%s/dead.sock", dir);
    fd = raw_unix_bound(dead, -1);
    close_fd_(fd);
    abstract_name_(an, sizeof an, "nobody");
    paths[0] = miss;
    paths[1] = dead;
    paths[2] = an;
    for (int k = 0; k < 3; k++) {
        long long s = open_type(t, "unix", 0), id;
        json_t *r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(s), "address", paths[k]);
        json_t *ev;
        expect_result_empty(r, "socket.connect");
        json_decref(r);
        ev = tc_next_is(t, s, "socket.closed", H_TIMEOUT_MS);
        EXPECT_INT(jint_(ev, "request"), id, "socket.closed request (%s): %s", paths[k], jd(ev));
        EXPECT_STR(jstr_(ev, "reason"), reasons[k], "socket.closed reason for %s: %s", paths[k],
                   jd(ev));
        EXPECT_INT(jint_(ev, "errno"), errs[k], "socket.closed errno for %s: %s", paths[k], jd(ev));
        json_decref(ev);
        expect_gone(t, s);
    }
    EXPECT_TRUE(S_ISSOCK(file_mode(dead)), "a failed connect leaves the dead file alone");
}

/* ======================================================================== */
/* socket.setopt                                                             */

/* A daemon tcp socket connected to a listener of ours (v6: ::1): handle; *lport its local port,
 * *rport ours; *afd our accepted end. */
static long long
tcp_pair_(struct tc *t, int v6, int *lport, int *rport, int *afd)
{
    int lfd = raw_bound_(v6, 0, 8, rport);
    long long s = open_type_(t, "tcp", v6);
    char a[64];
    json_t *r, *ev;

    snprintf(a, sizeof a, v6 ? "[::1]:%d" : "127.0.0.1:%d", *rport);
    r = tc_ok_(t, NULL, "socket.connect", "{s:I, s:s}", SOCK(s), "address", a);
    json_decref(r);
    ev = tc_event_(t, "socket.connected", s, H_TIMEOUT_MS);
    *lport = check_addr_(ev, "local", v6 ? "::1" : "127.0.0.1", -1);
    json_decref(ev);
    *afd = raw_accept_one_(lfd);
    return s;
}
#define tcp_pair(...) (TC_AT(), tcp_pair_(__VA_ARGS__))

/* setopt {…} answers {} (params from fmt, socket first). */
#define SETOPT_OK(t, fmt, ...)                                                                     \
    do {                                                                                           \
        json_t *r_ = tc_ok(t, NULL, "socket.setopt", fmt, __VA_ARGS__);                            \
        expect_result_empty_(r_, "socket.setopt");                                                 \
        json_decref(r_);                                                                           \
    } while (0)

/* Every tcp option succeeds and reaches the fd (read back with getsockopt where possible). */
static void
test_setopt_tcp(void **state)
{
    struct tc *t = tc_new(&g_d);
    int lport, rport, afd, dfd;
    long long s = tcp_pair(t, 0, &lport, &rport, &afd), id;

    (void)state;
    SETOPT_OK(t, "{s:I, s:b}", SOCK(s), "nodelay", 1);
    SETOPT_OK(t, "{s:I, s:b}", SOCK(s), "keepalive", 1);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 1);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 255);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 64);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "rcvbuf", 131072);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "sndbuf", 131072);
    dfd = daemon_fd(AF_INET, SOCK_STREAM, lport, rport);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY) != 0, 1,
                   "TCP_NODELAY after nodelay:true");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_KEEPALIVE) != 0, 1,
                   "SO_KEEPALIVE after keepalive:true");
        EXPECT_INT(sockopt_int(dfd, IPPROTO_IP, IP_TTL), 64, "IP_TTL after ttl:64");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_RCVBUF) >= 131072,
                    "SO_RCVBUF after rcvbuf:131072");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_SNDBUF) >= 131072,
                    "SO_SNDBUF after sndbuf:131072");
    }
    /* all at once, turning things back */
    SETOPT_OK(t, "{s:I, s:b, s:b, s:i, s:i, s:i}", SOCK(s), "nodelay", 0, "keepalive", 0, "ttl", 33,
              "rcvbuf", 8192, "sndbuf", 8192);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY), 0,
                   "TCP_NODELAY after nodelay:false");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_KEEPALIVE), 0,
                   "SO_KEEPALIVE after keepalive:false");
        EXPECT_INT(sockopt_int(dfd, IPPROTO_IP, IP_TTL), 33, "IP_TTL after ttl:33");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_RCVBUF) < 131072,
                    "SO_RCVBUF after rcvbuf:8192");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_SNDBUF) < 131072,
                    "SO_SNDBUF after sndbuf:8192");
    }
    SETOPT_OK(t, "{s:I, s:i, s:i}", SOCK(s), "rcvbuf", 1024, "sndbuf", 1024); /* the minimum */
    id = send_text(t, s, "still-works", 1);
    expect_sent(t, s, id, 11);
    raw_expect(afd, "still-works");
    expect_state(t, s, "connected");

    /* IPv6: ttl is the hop limit */
    s = tcp_pair(t, 1, &lport, &rport, &afd);
    SETOPT_OK(t, "{s:I, s:i, s:b}", SOCK(s), "ttl", 42, "nodelay", 1);
    dfd = daemon_fd(AF_INET6, SOCK_STREAM, lport, rport);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_IPV6, IPV6_UNICAST_HOPS), 42,
                   "IPV6_UNICAST_HOPS after ttl:42");
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY) != 0, 1, "TCP_NODELAY (v6)");
    }
}

/* udp: ttl seen by the receiver; broadcast lets a datagram to 127.255.255.255 go; buffers. */
static void
test_setopt_udp(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s = open_type(t, "udp", 0), id;
    int rport, rfd = raw_udp(0, &rport), port, dfd, ttl = -1, fp;
    char buf[16];
    json_t *ev;

    (void)state;
    port = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    /* the TTL as it arrives by default: the measurement must tell 7 from it */
    id = sendto_text(t, s, "127.0.0.1", rport, "default");
    expect_sent(t, s, id, 7);
    EXPECT_INT(raw_udp_recv_(rfd, buf, sizeof buf, &fp, &ttl, H_TIMEOUT_MS), 7, "default datagram");
    EXPECT_TRUE(ttl > 0 && ttl != 7 && ttl != 200, "default TTL %d", ttl);

    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 7);
    id = sendto_text(t, s, "127.0.0.1", rport, "ttl-7");
    expect_sent(t, s, id, 5);
    raw_udp_expect(rfd, "ttl-7", 5, port, 7);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 200);
    id = sendto_text(t, s, "127.0.0.1", rport, "ttl-200");
    expect_sent(t, s, id, 7);
    raw_udp_expect(rfd, "ttl-200", 7, port, 200);

    /* without SO_BROADCAST the kernel refuses a broadcast destination (EACCES) */
    id = sendto_text(t, s, "127.255.255.255", rport, "b");
    ev = tc_event(t, "socket.sent", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.sent request: %s", jd(ev));
    EXPECT_TRUE(jint_(ev, "bytes") == 0 && json_object_get(ev, "errno") &&
                    jint_(ev, "errno") == EACCES,
                "a broadcast sendto without broadcast:true must fail with EACCES: %s", jd(ev));
    json_decref(ev);
    SETOPT_OK(t, "{s:I, s:b}", SOCK(s), "broadcast", 1);
    id = sendto_text(t, s, "127.255.255.255", rport, "b");
    ev = tc_event(t, "socket.sent", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.sent request: %s", jd(ev));
    EXPECT_TRUE(jint_(ev, "bytes") == 1 && !json_object_get(ev, "errno"),
                "a broadcast sendto after broadcast:true goes out: %s", jd(ev));
    json_decref(ev);
    SETOPT_OK(t, "{s:I, s:b}", SOCK(s), "broadcast", 0);
    id = sendto_text(t, s, "127.255.255.255", rport, "b");
    ev = tc_event(t, "socket.sent", s, H_TIMEOUT_MS);
    EXPECT_TRUE(jint_(ev, "bytes") == 0 && json_object_get(ev, "errno"),
                "broadcast:false again refuses it: %s", jd(ev));
    json_decref(ev);

    SETOPT_OK(t, "{s:I, s:i, s:i}", SOCK(s), "rcvbuf", 262144, "sndbuf", 65536);
    dfd = daemon_fd(AF_INET, SOCK_DGRAM, port, 0);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_IP, IP_TTL), 200, "IP_TTL of the udp fd");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_BROADCAST), 0, "SO_BROADCAST after false");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_RCVBUF) >= 262144, "SO_RCVBUF");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_SNDBUF) >= 65536, "SO_SNDBUF");
    }
    /* ... and it still sends */
    id = sendto_text(t, s, "127.0.0.1", rport, "after");
    expect_sent(t, s, id, 5);
    raw_udp_expect(rfd, "after", 5, port, 200);

    /* IPv6: the hop limit */
    {
        int r6, fd6 = raw_udp(1, &r6), p6;
        long long s6 = open_type(t, "udp", 1);
        p6 = bind_ip(t, s6, "::1", "::1");
        SETOPT_OK(t, "{s:I, s:i}", SOCK(s6), "ttl", 9);
        id = sendto_text(t, s6, "::1", r6, "hops-9");
        expect_sent(t, s6, id, 6);
        raw_udp_expect(fd6, "hops-9", 6, p6, 9);
    }
}

/* unix: buffers are fine; ttl, nodelay, broadcast are not for unix sockets. */
static void
test_setopt_unix(void **state)
{
    struct tc *t = tc_new(&g_d);
    const char *dir = tmpdir();
    char p[128];
    long long l, lid, pend, a;
    int fd;

    (void)state;
    snprintf(p, sizeof p, "%s/opt.sock", dir);
    l = unix_listener(t, p, 0, &lid);
    SETOPT_OK(t, "{s:I, s:i, s:i}", SOCK(l), "rcvbuf", 65536, "sndbuf", 65536);
    fd = raw_unix_connect(p);
    pend = expect_unix_incoming(t, l, lid, p);
    a = accept_unix(t, l, pend, p);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(a), "sndbuf", 32768);
    json_decref(
        tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:i}", SOCK(a), "ttl", 5));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(a),
                              "nodelay", 1));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(a),
                              "broadcast", 1));
    json_decref(
        tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:i}", SOCK(l), "ttl", 5));
    raw_write_str(fd, "opt-ok");
    recv_expect(t, a, "opt-ok");
}

/* Wrong types, out of range, wrong socket type, unknown names; a failed call changes nothing. */
static void
test_setopt_errors(void **state)
{
    struct tc *t = tc_new(&g_d);
    int lport, rport, afd, dfd;
    long long s = tcp_pair(t, 0, &lport, &rport, &afd), u, x;
    json_t *e;
    static const struct {
        const char *fmt, *name;
        int code;
    } bad[] = {
        {"{s:I, s:i}", "nodelay", SOCKD_E_INVALID_PARAMS},   /* nodelay:1 */
        {"{s:I, s:i}", "keepalive", SOCKD_E_INVALID_PARAMS}, /* keepalive:1 */
        {"{s:I, s:s}", "ttl", SOCKD_E_INVALID_PARAMS},       /* ttl:"5" */
        {"{s:I, s:s}", "rcvbuf", SOCKD_E_INVALID_PARAMS},    /* rcvbuf:"5" */
        {"{s:I, s:b}", "sndbuf", SOCKD_E_INVALID_PARAMS},    /* sndbuf:true */
    };

    (void)state;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        if (strcmp(bad[k].fmt, "{s:I, s:i}") == 0)
            e = tc_expect_err(t, bad[k].code, "socket.setopt", bad[k].fmt, SOCK(s), bad[k].name, 1);
        else if (strcmp(bad[k].fmt, "{s:I, s:s}") == 0)
            e = tc_expect_err(t, bad[k].code, "socket.setopt", bad[k].fmt, SOCK(s), bad[k].name,
                              "5");
        else
            e = tc_expect_err(t, bad[k].code, "socket.setopt", bad[k].fmt, SOCK(s), bad[k].name, 1);
        expect_param(e, bad[k].name);
        json_decref(e);
    }
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.setopt", "{s:I, s:f}", SOCK(s), "ttl",
                      5.5);
    expect_param(e, "ttl");
    json_decref(e);
    /* out of range */
    {
        static const struct {
            const char *name;
            long long v;
        } oor[] = {{"ttl", 0},     {"ttl", 256},  {"ttl", -1},      {"rcvbuf", 10},
                   {"sndbuf", 10}, {"rcvbuf", 0}, {"sndbuf", -4096}};
        for (size_t k = 0; k < sizeof oor / sizeof oor[0]; k++) {
            e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.setopt", "{s:I, s:I}", SOCK(s),
                              oor[k].name, (json_int_t)oor[k].v);
            expect_param(e, oor[k].name);
            json_decref(e);
        }
    }
    /* unknown option */
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.setopt", "{s:I, s:b}", SOCK(s), "linger",
                      1);
    expect_param(e, "linger");
    json_decref(e);
    e = tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.setopt", "{s:I, s:b}", SOCK(s), "no_delay",
                      1);
    expect_param(e, "no_delay");
    json_decref(e);
    /* not for this type */
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(s),
                              "broadcast", 1));
    u = open_type(t, "udp", 0);
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(u),
                              "nodelay", 1));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(u),
                              "keepalive", 1));
    x = open_type(t, "unix", 0);
    json_decref(
        tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:i}", SOCK(x), "ttl", 64));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b}", SOCK(x),
                              "nodelay", 1));
    /* unknown handle */
    json_decref(tc_expect_err(t, SOCKD_E_UNKNOWN_HANDLE, "socket.setopt", "{s:I, s:b}", "socket",
                              (json_int_t)987654321, "nodelay", 1));

    /* a refused call leaves the socket as it was: the valid half is not applied */
    json_decref(tc_expect_err(t, SOCKD_E_INVALID_PARAMS, "socket.setopt", "{s:I, s:b, s:i}",
                              SOCK(s), "nodelay", 1, "ttl", 0));
    json_decref(tc_expect_err(t, SOCKD_E_WRONG_STATE, "socket.setopt", "{s:I, s:b, s:b}", SOCK(s),
                              "keepalive", 1, "broadcast", 1));
    dfd = daemon_fd(AF_INET, SOCK_STREAM, lport, rport);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY), 0,
                   "TCP_NODELAY after a refused setopt {nodelay:true, ttl:0}");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_KEEPALIVE), 0,
                   "SO_KEEPALIVE after a refused setopt {keepalive:true, broadcast:true}");
        EXPECT_TRUE(sockopt_int(dfd, IPPROTO_IP, IP_TTL) != 0, "IP_TTL untouched");
    }
    /* and a later valid setopt does not pick the refused values up either */
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "sndbuf", 65536);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY), 0,
                   "TCP_NODELAY after a later setopt");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_KEEPALIVE), 0,
                   "SO_KEEPALIVE after a later setopt");
    }
    expect_state(t, s, "connected");
}

/* Options set before the fd exists are kept and applied when it appears (connect, bind, sendto). */
static void
test_setopt_before_fd(void **state)
{
    struct tc *t = tc_new(&g_d);
    int rport, lfd = raw_bound(0, 0, 8, &rport), afd, dfd, lport;
    int uport, ufd = raw_udp(0, &uport), up;
    long long s = open_type(t, "tcp", 0), id;
    char a[64];
    json_t *r, *ev, *i;

    (void)state;
    SETOPT_OK(t, "{s:I, s:b, s:b, s:i, s:i}", SOCK(s), "nodelay", 1, "keepalive", 1, "ttl", 17,
              "sndbuf", 65536);
    i = tc_info(t, s);
    EXPECT_STR(jstr_(i, "state"), "open", "socket.info after setopt on an open socket: %s", jd(i));
    json_decref(i);
    snprintf(a, sizeof a, "127.0.0.1:%d", rport);
    r = tc_ok(t, &id, "socket.connect", "{s:I, s:s}", SOCK(s), "address", a);
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "request"), id, "socket.connected request: %s", jd(ev));
    lport = check_addr(ev, "local", "127.0.0.1", -1);
    check_addr(ev, "remote", "127.0.0.1", rport);
    json_decref(ev);
    afd = raw_accept_one(lfd);
    i = tc_info(t, s);
    EXPECT_STR(jstr_(i, "state"), "connected", "socket.info: %s", jd(i));
    check_addr(i, "remote", "127.0.0.1", rport);
    json_decref(i);
    dfd = daemon_fd(AF_INET, SOCK_STREAM, lport, rport);
    if (dfd >= 0) {
        EXPECT_INT(sockopt_int(dfd, IPPROTO_TCP, TCP_NODELAY) != 0, 1,
                   "TCP_NODELAY set before connect");
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_KEEPALIVE) != 0, 1,
                   "SO_KEEPALIVE set before connect");
        EXPECT_INT(sockopt_int(dfd, IPPROTO_IP, IP_TTL), 17, "IP_TTL set before connect");
        EXPECT_TRUE(sockopt_int(dfd, SOL_SOCKET, SO_SNDBUF) >= 65536,
                    "SO_SNDBUF set before connect");
    }
    id = send_text(t, s, "opts-then-connect", 1);
    expect_sent(t, s, id, 17);
    raw_expect(afd, "opts-then-connect");

    /* udp: before connect, before bind, before the first sendto: the receiver sees the TTL */
    s = open_type(t, "udp", 0);
    SETOPT_OK(t, "{s:I, s:i, s:b}", SOCK(s), "ttl", 9, "broadcast", 1);
    snprintf(a, sizeof a, "127.0.0.1:%d", uport);
    r = tc_ok(t, NULL, "socket.connect", "{s:I, s:s}", SOCK(s), "address", a);
    json_decref(r);
    ev = tc_event(t, "socket.connected", s, H_TIMEOUT_MS);
    up = check_addr(ev, "local", "127.0.0.1", -1);
    json_decref(ev);
    id = send_text(t, s, "ttl9", 1);
    expect_sent(t, s, id, 4);
    raw_udp_expect(ufd, "ttl9", 4, up, 9);
    dfd = daemon_fd(AF_INET, SOCK_DGRAM, up, uport);
    if (dfd >= 0)
        EXPECT_INT(sockopt_int(dfd, SOL_SOCKET, SO_BROADCAST) != 0, 1,
                   "SO_BROADCAST set before connect");

    s = open_type(t, "udp", 0);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 11);
    up = bind_ip(t, s, "127.0.0.1", "127.0.0.1");
    id = sendto_text(t, s, "127.0.0.1", uport, "ttl11");
    expect_sent(t, s, id, 5);
    raw_udp_expect(ufd, "ttl11", 5, up, 11);

    s = open_type(t, "udp", 0);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 12);
    id = sendto_text(t, s, "127.0.0.1", uport, "ttl12");
    expect_sent(t, s, id, 5);
    raw_udp_expect(ufd, "ttl12", 5, -1, 12);

    s = open_type(t, "udp", 1);
    SETOPT_OK(t, "{s:I, s:i}", SOCK(s), "ttl", 13);
    {
        int r6, fd6 = raw_udp(1, &r6);
        id = sendto_text(t, s, "::1", r6, "hops13");
        expect_sent(t, s, id, 6);
        raw_udp_expect(fd6, "hops13", 6, -1, 13);
    }
}

/* ======================================================================== */
/* localhost                                                                 */

static void
test_localhost_bind(void **state)
{
    struct tc *t = tc_new(&g_d);
    long long s, lid, id;
    int port, fd, p;
    char a[64];
    json_t *r, *ev;

    (void)state;
    s = open_type(t, "tcp", 0);
    port = bind_ip(t, s, "localhost", "127.0.0.1");
    r = tc_ok(t, &lid, "socket.listen", "{s:I}", SOCK(s));
    json_decref(r);
    fd = track_fd(h_tcp_connect(port));
    ev = tc_event(t, "socket.incoming", s, H_TIMEOUT_MS);
    check_addr(ev, "local", "127.0.0.1", port);
    json_decref(ev);
    (void)fd;

    s = open_type(t, "tcp", 1);
    port = bind_ip(t, s, "localhost", "::1");
    r = tc_ok(t, &lid, "socket.listen", "{s:I}", SOCK(s));
    json_decref(r);
    {
        struct sockaddr_storage ss;
        socklen_t sl;
        fd = track_fd(socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
        fill_sa(&ss, &sl, 1, port);
        if (connect(fd, (struct sockaddr *)&ss, sl) != 0)
            FAIL("connect [::1]:%d (bound to localhost with ipv6:true): %s", port, strerror(errno));
    }
    ev = tc_event(t, "socket.incoming", s, H_TIMEOUT_MS);
    check_addr(ev, "local", "::1", port);
    check_addr(ev, "remote", "::1", -1);
    json_decref(ev);

    /* a port with localhost, and udp */
    p = free_udp_port(0);
    s = open_type(t, "udp", 0);
    snprintf(a, sizeof a, "localhost:%d", p);
    EXPECT_INT(bind_ip(t, s, a, "127.0.0.1"), p, "udp bind %s", a);
    {
        int rp, rfd = raw_udp(0, &rp);
        id = start_recv(t, s, 100, 0, 0, 0);
        raw_udp_send(rfd, 0, p, "lh", 2);
        expect_dgram(t, s, id, "lh", 2, "127.0.0.1", rp);
    }
    s = open_type(t, "udp", 1);
    port = bind_ip(t, s, "localhost", "::1");
    {
        int rp, rfd = raw_udp(1, &rp);
        id = sendto_text(t, s, "localhost", rp, "lh6");
        expect_sent(t, s, id, 3);
        raw_udp_expect(rfd, "lh6", 3, port, -1);
    }
}

/* ------------------------------------------------------------------------ */

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    h_daemon_start(&g_d, NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    h_daemon_stop(&g_d);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, t_cleanup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_udp_bind_recv_from),
        T(test_udp_one_datagram_per_event),
        T(test_udp_sendto_forms),
        T(test_udp_empty_datagram),
        T(test_udp_connect_send),
        T(test_udp_stream_until_cancel),
        T(test_udp_truncated),
        T(test_udp_recv_timeout),
        T(test_udp_ipv6),
        T(test_udp_wrong_calls),
        T(test_udp_sendto_bad_address),
        T(test_udp_max_datagram),
        T(test_udp_1000_datagrams),
        T(test_unix_bind_mode),
        T(test_unix_listen_accept),
        T(test_unix_client),
        T(test_unix_abstract),
        T(test_unix_stale_file),
        T(test_unix_path_in_use),
        T(test_unix_unlink_on_close),
        T(test_unix_close_keeps_taken_over_file),
        T(test_unix_unlink_on_disconnect),
        T(test_unix_address_errors),
        T(test_unix_connect_failures),
        T(test_setopt_tcp),
        T(test_setopt_udp),
        T(test_setopt_unix),
        T(test_setopt_errors),
        T(test_setopt_before_fd),
        T(test_localhost_bind),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
