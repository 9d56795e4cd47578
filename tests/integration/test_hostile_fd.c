/*
 * Hostile clients and the descriptors they hand over: every call on an attached fd is
 * non-blocking, whatever the client does to its copy (sockd(8) SECURITY MODEL).
 *
 * The daemon runs as root (the test runs as root); every attacker connects as uid/gid 65534
 * (h_client_nobody: a child drops its ids, then connects).
 *
 * socket.attach shares the open file description, so the attacker's copy of the fd can clear
 * O_NONBLOCK and take what the daemon was about to take. To race that deterministically the
 * test traces the daemon (ptrace, as root) until it enters the syscall on that fd, does the
 * attacker's move while the daemon sits at the syscall's entry, then lets it go: a blocking call
 * would then never return, and another client's daemon.ping (bounded wait) proves it did.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;
/* The attacker (uid 65534) and another client whose pings must be answered. */
static struct sockd_client *atk, *other;

/* Raw fds and other-uid clients a test made, released by the teardown even after a failure. */
#define FD_MAX 16
static int fds[FD_MAX];
static int nfds;
static struct sockd_client *nobodies[4];
static int nnobodies;

static int
track_raw_fd(int fd)
{
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_TRUE(nfds < FD_MAX, "nfds < FD_MAX");
    fds[nfds++] = fd;
    return fd;
}

/* Close a tracked fd now. */
static void
untrack_close(int fd)
{
    for (int i = 0; i < nfds; i++)
        if (fds[i] == fd)
            fds[i] = -1;
    close(fd);
}

static struct sockd_client *
nobody(void)
{
    EXPECT_TRUE(nnobodies < 4, "nnobodies < 4");
    return nobodies[nnobodies++] = h_client_nobody(&D);
}

static int
teardown(void **state)
{
    (void)state;
    for (int i = 0; i < nnobodies; i++)
        sockd_client_close(nobodies[i]);
    nnobodies = 0;
    atk = other = NULL;
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    nfds = 0;
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */

/* daemon.ping on c answered within the bounded wait: the loop is not stuck. */
static int
ping_ok(struct sockd_client *c)
{
    json_t *res = NULL, *err = NULL;
    int rc = sockd_client_call(c, "daemon.ping", NULL, &res, &err, H_TIMEOUT_MS);
    json_decref(res);
    json_decref(err);
    return rc == 0;
}

/* socket.attach of fd (type) by c: the handle. */
static long long
attach(struct sockd_client *c, int fd, const char *type)
{
    json_t *params = json_pack("{s:s}", "type", type), *res = NULL, *err = NULL;
    int rc = sockd_client_call_fd(c, "socket.attach", params, fd, &res, &err, NULL, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc == 0, "%s", jd(err));
    long long s = json_integer_value(json_object_get(res, "socket"));
    json_decref(res);
    EXPECT_TRUE(s > 0, "s > 0");
    return s;
}

/* A daemon with the attacker and the other client connected (and accepted). */
static void
start(void)
{
    h_daemon_start(&D, NULL);
    atk = nobody();
    other = h_client_auto(&D);
    EXPECT_TRUE(ping_ok(atk) && ping_ok(other), "ping_ok(atk) && ping_ok(other)");
}

/* method on c (params stolen) answered with a result within the bounded wait. */
static void
call_ok(struct sockd_client *c, const char *method, json_t *params)
{
    json_t *res = NULL, *err = NULL;
    int rc = sockd_client_call(c, method, params, &res, &err, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc == 0, "%s", jd(err));
    json_decref(res);
}

/* The attacker's socket.send of n bytes of text on s. */
static void
send_text_n(long long s, size_t n)
{
    char *text = malloc(n + 1);
    EXPECT_TRUE(text != NULL, "text");
    memset(text, 'x', n);
    text[n] = '\0';
    json_t *params = json_pack("{s:I,s:s,s:b}", "socket", (json_int_t)s, "text", text, "notify", 0);
    free(text);
    call_ok(atk, "socket.send", params);
}

/* What the attacker does to its copy: blocking mode from now on. */
static void
clear_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    EXPECT_TRUE(fl >= 0, "fl >= 0");
    EXPECT_INT(fcntl(fd, F_SETFL, fl & ~O_NONBLOCK), 0, "fcntl: %s", strerror(errno));
}

/* A listening TCP socket on 127.0.0.1 (backlog given); its port in *port. */
static int
tcp_listener(int backlog, int rcvbuf, int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    int l = track_raw_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (rcvbuf > 0) /* inherited by accepted sockets: a small window toward them */
        EXPECT_INT(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf), 0,
                   "setsockopt: %s", strerror(errno));
    EXPECT_INT(bind(l, (struct sockaddr *)&a, sizeof a), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(l, backlog), 0, "listen: %s", strerror(errno));
    EXPECT_INT(getsockname(l, (struct sockaddr *)&a, &al), 0, "getsockname: %s", strerror(errno));
    *port = ntohs(a.sin_port);
    return l;
}

/* A connected TCP pair on loopback; small: small buffers, so little fills them. */
static void
tcp_pair(int *cli, int *srv, int small)
{
    int port, buf = 4096;
    int l = tcp_listener(1, small ? buf : 0, &port);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    *cli = track_raw_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (small)
        EXPECT_INT(setsockopt(*cli, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf), 0, "setsockopt: %s",
                   strerror(errno));
    EXPECT_INT(connect(*cli, (struct sockaddr *)&a, sizeof a), 0, "connect: %s", strerror(errno));
    *srv = track_raw_fd(accept4(l, NULL, NULL, SOCK_CLOEXEC));
}

/* A connected TCP pair whose cli end the attacker attached: the handle. */
static long long
attached_pair(int *cli, int *srv, int small)
{
    tcp_pair(cli, srv, small);
    return attach(atk, *cli, "tcp");
}

/* Read and drop whatever is queued on fd (its flags aside). */
static void
drain(int fd)
{
    char buf[65536];
    for (int i = 0; i < 1024 && recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0; i++)
        ;
}

/* Write a line with fd riding on it on c's control socket, without waiting for an answer. */
static void
send_line_fd(struct sockd_client *c, const char *line, int fd)
{
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {(void *)line, strlen(line)};
    struct msghdr mh = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.b, .msg_controllen = sizeof cm.b};
    struct cmsghdr *ch = CMSG_FIRSTHDR(&mh);
    ch->cmsg_level = SOL_SOCKET;
    ch->cmsg_type = SCM_RIGHTS;
    ch->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(ch), &fd, sizeof fd);
    EXPECT_INT(sendmsg(sockd_client_fd(c), &mh, MSG_NOSIGNAL), (ssize_t)strlen(line), "sendmsg: %s",
               strerror(errno));
}

/* The number of the daemon's fd that shares the file of the test's fd (same inode), or -1. */
static int
daemon_fd_of(pid_t pid, int fd)
{
    struct stat st;
    char want[64], dir[64], path[320], link[64];
    struct dirent *e;
    int found = -1;

    EXPECT_INT(fstat(fd, &st), 0, "fstat: %s", strerror(errno));
    snprintf(want, sizeof want, "socket:[%lu]", (unsigned long)st.st_ino);
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    EXPECT_TRUE(d != NULL, "d");
    while (found < 0 && (e = readdir(d)) != NULL) {
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0) {
            link[n] = '\0';
            if (strcmp(link, want) == 0)
                found = atoi(e->d_name);
        }
    }
    closedir(d);
    return found;
}

/* PTRACE_GET_SYSCALL_INFO's answer at a syscall entry (the kernel's stable layout). */
struct syscall_entry {
    uint8_t op; /* 1: entry */
    uint8_t pad[3];
    uint32_t arch;
    uint64_t ip, sp;
    uint64_t nr;
    uint64_t args[6];
};

/* Wait (bounded) for the traced daemon to stop; 1 stopped (*st set), 0 not. */
static int
trace_wait(pid_t pid, int *st, long long deadline)
{
    for (;;) {
        pid_t w = waitpid(pid, st, __WALL | WNOHANG);
        if (w == pid)
            return WIFSTOPPED(*st);
        if (w < 0 || h_now_ms() > deadline)
            return 0;
        h_sleep_ms(1);
    }
}

/*
 * Trace the daemon: trigger(arg) while it is stopped, then run it until it enters one of the
 * syscalls nrs (-1 ends the list) with dfd as first argument; there run move(arg) (the attacker's
 * move on its copy) and let the syscall go. 1 when the daemon was caught there.
 */
static int
race_syscall(pid_t pid, int dfd, const long *nrs, void (*trigger)(void *), void (*move)(void *),
             void *arg)
{
    long long deadline = h_now_ms() + H_TIMEOUT_MS;
    int st = 0, sig = 0, caught = 0, stopped;

    EXPECT_INT(ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESYSGOOD), 0, "ptrace");
    EXPECT_INT(ptrace(PTRACE_INTERRUPT, pid, 0, 0), 0, "ptrace(PTRACE_INTERRUPT, pid, 0, 0)");
    stopped = trace_wait(pid, &st, deadline);
    if (stopped && trigger != NULL)
        trigger(arg);
    while (stopped && !caught) {
        if (ptrace(PTRACE_SYSCALL, pid, 0, sig) < 0)
            break;
        sig = 0;
        if (!(stopped = trace_wait(pid, &st, deadline)))
            break;
        if (WSTOPSIG(st) == (SIGTRAP | 0x80)) {
            struct syscall_entry si;
            memset(&si, 0, sizeof si);
            if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof si, &si) > 0 && si.op == 1 &&
                (int)si.args[0] == dfd)
                for (const long *n = nrs; *n >= 0; n++)
                    if ((long)si.nr == *n)
                        caught = 1;
        } else if ((st >> 16) == 0) {
            sig = WSTOPSIG(st); /* a signal for the daemon: passed on */
        }
    }
    if (caught)
        move(arg);
    if (!stopped) { /* still running (the deadline): stop it to detach */
        ptrace(PTRACE_INTERRUPT, pid, 0, 0);
        waitpid(pid, &st, __WALL);
    }
    ptrace(PTRACE_DETACH, pid, 0, sig);
    return caught;
}

static const long nr_recv[] = {SYS_read, SYS_recvfrom, SYS_recvmsg, -1};
static const long nr_relay[] = {SYS_read, SYS_recvfrom, SYS_recvmsg, SYS_splice, -1};
static const long nr_accept[] = {SYS_accept, SYS_accept4, -1};
static const long nr_connect[] = {SYS_connect, -1};

/* The two ends of a race: the daemon's peer writes (trigger), the attacker's copy reads. */
struct race {
    int copy;  /* the attacker's copy of the attached fd */
    int other; /* the far end: writes, connects */
    struct sockaddr_in to;
    struct sockd_client *trig; /* or a request line that makes the daemon write the bait */
    char line[256];
};

static void
peer_writes(void *arg)
{
    struct race *r = arg;
    EXPECT_INT(send(r->other, "bait", 4, MSG_NOSIGNAL), 4, "send: %s", strerror(errno));
    h_sleep_ms(20); /* the bytes are on the daemon's socket before it runs again */
}

static void
line_sent(void *arg)
{
    struct race *r = arg;
    h_send_raw(r->trig, r->line); /* handled once the daemon runs again */
}

static void
copy_drains(void *arg)
{
    struct race *r = arg;
    drain(r->copy);
    clear_nonblock(r->copy); /* whatever the daemon restored */
}

/* ------------------------------------------------------------------------ */
/* tests                                                                     */

/*
 * Attack: attach a connected TCP socket, clear O_NONBLOCK on the copy, and take the bytes the
 * daemon was woken for from the copy just before the daemon reads. Must hold: the daemon's read
 * returns at once (MSG_DONTWAIT); another client's ping is answered; the socket still works.
 */
static void
test_fd_recv_cleared(void **state)
{
    struct race r;
    int cli, srv;

    (void)state;
    start();
    long long s = attached_pair(&cli, &srv, 0);
    clear_nonblock(cli);
    r.copy = cli;
    r.other = srv;
    int dfd = daemon_fd_of(D.pid, cli);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_recv, peer_writes, copy_drains, &r),
                "race_syscall(D.pid, dfd, nr_recv, peer_writes, copy_drains, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    EXPECT_TRUE(kill(D.pid, 0) == 0, "kill: %s", strerror(errno));
    /* the attached socket still carries bytes */
    EXPECT_INT(send(srv, "after", 5, MSG_NOSIGNAL), 5, "send: %s", strerror(errno));
    json_decref(h_ok(atk, "socket.recv", "{s:I,s:i,s:b}", "socket", (json_int_t)s, "length", 5,
                     "partial", 1));
    h_daemon_stop(&D);
}

/*
 * Attack: attach a connected TCP socket toward a peer that never reads, clear O_NONBLOCK, and
 * send more than the kernel buffers hold. Must hold: the daemon's send stops at the full
 * buffer (MSG_DONTWAIT), queues the rest and answers; another client's ping is answered.
 */
static void
test_fd_send_cleared(void **state)
{
    enum { N = 512 * 1024 };
    int cli, srv;

    (void)state;
    start();
    long long s = attached_pair(&cli, &srv, 1);
    clear_nonblock(cli);
    send_text_n(s, N); /* on a blocking send the daemon never answers: the bounded wait fails */
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    json_t *info = h_ok(atk, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(info, "state")), "connected") == 0, "%s",
                jd(info));
    json_decref(info);
    h_daemon_stop(&D);
}

/*
 * Attack: attach a connected TCP socket toward a peer that never reads, fill the kernel buffer,
 * set SO_LINGER (30 s) on the copy and close the copy, then socket.close: the daemon's close
 * drops the last reference, which lingers while data is unsent. Must hold: the close returns
 * (the guard interrupts the linger), another client's ping is answered.
 */
static void
test_fd_close_linger(void **state)
{
    enum { N = 512 * 1024 };
    int cli, srv;

    (void)state;
    start();
    long long s = attached_pair(&cli, &srv, 1);
    send_text_n(s, N);
    struct linger lg = {1, 30};
    EXPECT_INT(setsockopt(cli, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0, "setsockopt: %s",
               strerror(errno));
    untrack_close(cli); /* the daemon's copy is now the last reference */
    /* a lingering close holds the loop for 30 s: the bounded wait fails */
    call_ok(atk, "socket.close", json_pack("{s:I}", "socket", (json_int_t)s));
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    h_daemon_stop(&D);
}

static void
peer_connects(void *arg)
{
    struct race *r = arg;
    r->other = track_raw_fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    int c = connect(r->other, (struct sockaddr *)&r->to, sizeof r->to);
    EXPECT_TRUE(c == 0 || errno == EINPROGRESS, "c == 0 || errno == EINPROGRESS");
    h_sleep_ms(20); /* the handshake completes in the kernel: the connection waits in the queue */
}

static void
copy_accepts(void *arg)
{
    struct race *r = arg;
    int fd = accept4(r->copy, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    EXPECT_TRUE(fd >= 0, "fd >= 0"); /* the queue is empty now */
    close(fd);
    clear_nonblock(r->copy); /* after the daemon put it back, as a racing client would */
}

/*
 * Attack: attach a listening TCP socket, clear O_NONBLOCK on the copy, connect to it, and
 * accept the connection from the copy while the daemon is at the entry of its accept. Must
 * hold: the daemon's accept returns (there is no per-call flag: a timer interrupts it), the
 * listener keeps working, another client's ping is answered.
 */
static void
test_fd_accept_stolen(void **state)
{
    struct race r;
    int port;

    (void)state;
    start();
    int l = tcp_listener(8, 0, &port);
    long long s = attach(atk, l, "tcp");
    clear_nonblock(l);
    memset(&r, 0, sizeof r);
    r.copy = l;
    r.to.sin_family = AF_INET;
    r.to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    r.to.sin_port = htons(port);
    int dfd = daemon_fd_of(D.pid, l);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_accept, peer_connects, copy_accepts, &r),
                "race_syscall(D.pid, dfd, nr_accept, peer_connects, copy_accepts, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    /* the listener still announces the next connection */
    int c2 = track_raw_fd(h_tcp_connect(port));
    (void)c2;
    json_decref(h_event(atk, "socket.incoming", s, H_TIMEOUT_MS));
    h_daemon_stop(&D);
}

/*
 * Attack: two ends of a loopback TCP connection attached, TLS started over them (the attacker
 * the client side, another client the server side), O_NONBLOCK cleared on the attacker's copy,
 * and the record the daemon was woken for taken from the copy just before the TLS engine reads.
 * Must hold: the TLS read returns (the BIO's recv is MSG_DONTWAIT), another client's ping is
 * answered.
 */
static void
test_fd_tls_cleared(void **state)
{
    struct race r;
    int cli, srv;
    json_t *res;

    (void)state;
    start();
    struct sockd_client *srvc = h_client_auto(&D);
    tcp_pair(&cli, &srv, 0);
    long long sc = attach(atk, cli, "tcp"), ss = attach(srvc, srv, "tcp");
    res = h_ok(srvc, "context.create", "{s:b}", "verify", 0);
    json_int_t cs = json_integer_value(json_object_get(res, "context"));
    json_decref(res);
    json_decref(
        h_ok(srvc, "context.generate_certificate", "{s:I,s:s}", "context", cs, "role", "server"));
    res = h_ok(atk, "context.create", "{s:b}", "verify", 0);
    json_int_t cc = json_integer_value(json_object_get(res, "context"));
    json_decref(res);
    json_decref(h_ok(srvc, "socket.starttls", "{s:I,s:I,s:b}", "socket", (json_int_t)ss, "context",
                     cs, "server_side", 1));
    json_decref(h_ok(atk, "socket.starttls", "{s:I,s:I,s:s}", "socket", (json_int_t)sc, "context",
                     cc, "server_name", "peer.test"));
    json_decref(h_event(atk, "socket.tls_upgraded", sc, H_TIMEOUT_MS));
    json_decref(h_event(srvc, "socket.tls_upgraded", ss, H_TIMEOUT_MS));
    /* one round trip first: what the handshake left in flight (session tickets) is read */
    json_decref(h_ok(srvc, "socket.send", "{s:I,s:s,s:b}", "socket", (json_int_t)ss, "text", "sync",
                     "notify", 0));
    free(h_recv_exact(atk, sc, 4, H_TIMEOUT_MS));
    clear_nonblock(cli);
    int dfd = daemon_fd_of(D.pid, cli);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    memset(&r, 0, sizeof r);
    r.copy = cli;
    /* the bait is a record the server side sends: its request goes in while the daemon waits */
    r.trig = srvc;
    snprintf(r.line, sizeof r.line,
             "{\"jsonrpc\":\"2.0\",\"id\":77,\"method\":\"socket.send\",\"params\":"
             "{\"socket\":%lld,\"text\":\"a record\",\"notify\":false}}\n",
             ss);
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_recv, line_sent, copy_drains, &r),
                "race_syscall(D.pid, dfd, nr_recv, line_sent, copy_drains, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    EXPECT_TRUE(kill(D.pid, 0) == 0, "kill: %s", strerror(errno));
    h_daemon_stop(&D);
}

static void
datagram_sent(void *arg)
{
    struct race *r = arg;
    EXPECT_INT(sendto(r->other, "bait", 4, 0, (struct sockaddr *)&r->to, sizeof r->to), 4,
               "sendto: %s", strerror(errno));
    h_sleep_ms(20);
}

/*
 * Attack: attach a bound UDP socket, clear O_NONBLOCK on the copy, and take the datagram the
 * daemon was woken for from the copy just before it reads. Must hold: the daemon's recvmsg
 * returns (MSG_DONTWAIT), another client's ping is answered, the socket still receives.
 */
static void
test_fd_udp_cleared(void **state)
{
    struct race r;
    socklen_t al = sizeof r.to;

    (void)state;
    start();
    memset(&r, 0, sizeof r);
    r.to.sin_family = AF_INET;
    r.to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int u = track_raw_fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    EXPECT_INT(bind(u, (struct sockaddr *)&r.to, sizeof r.to), 0, "bind: %s", strerror(errno));
    EXPECT_INT(getsockname(u, (struct sockaddr *)&r.to, &al), 0, "getsockname: %s",
               strerror(errno));
    long long s = attach(atk, u, "udp");
    clear_nonblock(u);
    r.copy = u;
    r.other = track_raw_fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    int dfd = daemon_fd_of(D.pid, u);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_recv, datagram_sent, copy_drains, &r),
                "race_syscall(D.pid, dfd, nr_recv, datagram_sent, copy_drains, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    EXPECT_INT(sendto(r.other, "after", 5, 0, (struct sockaddr *)&r.to, sizeof r.to), 5,
               "sendto: %s", strerror(errno));
    json_decref(h_ok(atk, "socket.recv", "{s:I,s:i}", "socket", (json_int_t)s, "length", 64));
    h_daemon_stop(&D);
}

static void
copy_clears(void *arg)
{
    struct race *r = arg;
    clear_nonblock(r->copy); /* after the daemon put it back, as a racing client would */
}

/*
 * Attack: attach an unconnected TCP socket, clear O_NONBLOCK on the copy (again at the entry of
 * the daemon's connect), and socket.connect to a listener whose accept queue is full: a
 * blocking connect waits for SYN retries (minutes). Must hold: the connect goes on
 * asynchronously (a timer interrupts the call), another client's ping is answered.
 */
static void
test_fd_connect_cleared(void **state)
{
    struct race r;
    int port;

    (void)state;
    start();
    /* backlog 0: one connection fills the queue, and later SYNs are dropped */
    int l = tcp_listener(0, 0, &port);
    (void)l;
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(port)};
    for (int i = 0; i < 2; i++) {
        int f = track_raw_fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
        int c = connect(f, (struct sockaddr *)&a, sizeof a);
        EXPECT_TRUE(c == 0 || errno == EINPROGRESS, "c == 0 || errno == EINPROGRESS");
    }
    h_sleep_ms(50);
    int t = track_raw_fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    long long s = attach(atk, t, "tcp");
    clear_nonblock(t);
    memset(&r, 0, sizeof r);
    r.copy = t;
    r.trig = atk;
    snprintf(r.line, sizeof r.line,
             "{\"jsonrpc\":\"2.0\",\"id\":78,\"method\":\"socket.connect\",\"params\":"
             "{\"socket\":%lld,\"address\":\"127.0.0.1:%d\"}}\n",
             s, port);
    int dfd = daemon_fd_of(D.pid, t);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_connect, line_sent, copy_clears, &r),
                "race_syscall(D.pid, dfd, nr_connect, line_sent, copy_clears, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    json_t *resp = h_read(atk, H_TIMEOUT_MS); /* the connect's answer: under way */
    EXPECT_TRUE(json_object_get(resp, "result") != NULL, "%s", jd(resp));
    json_decref(resp);
    h_daemon_stop(&D);
}

/*
 * Attack: a TCP socket with unsent data toward a peer that never reads and SO_LINGER 30 s rides
 * on a line that takes no fd (daemon.ping); the attacker closes its copy. The daemon closes the
 * unused fd, dropping the last reference. Must hold: that close does not hold the loop, the
 * fd is gone, another client's ping is answered.
 */
static void
test_fd_unused_linger(void **state)
{
    int cli, srv;
    char big[65536];

    (void)state;
    start();
    int base = h_count_fds(D.pid);
    tcp_pair(&cli, &srv, 1);
    memset(big, 'x', sizeof big);
    fcntl(cli, F_SETFL, fcntl(cli, F_GETFL) | O_NONBLOCK);
    for (int i = 0; i < 64 && send(cli, big, sizeof big, MSG_NOSIGNAL) > 0; i++)
        ;
    struct linger lg = {1, 30};
    EXPECT_INT(setsockopt(cli, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0, "setsockopt: %s",
               strerror(errno));
    /* the fd in flight holds the only other reference once the copy is closed: stop the
     * daemon so it cannot receive (and close) the fd before the copy is gone */
    EXPECT_INT(kill(D.pid, SIGSTOP), 0, "kill: %s", strerror(errno));
    send_line_fd(atk, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\n", cli);
    untrack_close(cli);
    EXPECT_INT(kill(D.pid, SIGCONT), 0, "kill: %s", strerror(errno));
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");
    h_daemon_stop(&D);
}

/*
 * Attack: fds that are not sockets (a FIFO, a regular file) ride on lines that take no fd and
 * on a socket.attach, more than a line may carry. Must hold: the daemon closes them all (off
 * the loop: a FUSE file's close waits for its server), answers, and leaks none.
 */
static void
test_fd_unused_files(void **state)
{
    int p[2];

    (void)state;
    start();
    int base = h_count_fds(D.pid);
    EXPECT_INT(pipe2(p, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    track_raw_fd(p[0]);
    track_raw_fd(p[1]);
    int f = track_raw_fd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    for (int i = 0; i < 8; i++) {
        json_t *res = NULL, *err = NULL;
        int fd = i % 3 == 0 ? p[0] : i % 3 == 1 ? p[1] : f;
        json_t *params = i % 2 ? json_pack("{s:s}", "type", "tcp") : NULL;
        int rc = sockd_client_call_fd(atk, i % 2 ? "socket.attach" : "daemon.ping", params, fd,
                                      &res, &err, NULL, H_TIMEOUT_MS);
        EXPECT_TRUE(rc == (i % 2 ? 1 : 0), "%s", jd(err)); /* attach refuses a non-socket */
        json_decref(params);
        json_decref(res);
        json_decref(err);
    }
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");
    h_daemon_stop(&D);
}

/*
 * Attack: attach a connected TCP socket, socket.pipe it (the daemon relays between it and a
 * socketpair), clear O_NONBLOCK on the copy, and take the bytes the daemon was woken for from
 * the copy just before it reads. splice honours the file's O_NONBLOCK even with
 * SPLICE_F_NONBLOCK, so the relay must not splice from an attached socket. Must hold: another
 * client's ping is answered, the relay still carries bytes.
 */
static void
test_fd_pipe_cleared(void **state)
{
    struct race r;
    int cli, srv, end = -1;
    json_t *params, *res = NULL, *err = NULL;

    (void)state;
    start();
    long long s = attached_pair(&cli, &srv, 0);
    params = json_pack("{s:I}", "socket", (json_int_t)s);
    int rc = sockd_client_call_fd(atk, "socket.pipe", params, -1, &res, &err, &end, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc == 0 && end >= 0, "%s", jd(err));
    json_decref(res);
    track_raw_fd(end);
    clear_nonblock(cli);
    memset(&r, 0, sizeof r);
    r.copy = cli;
    r.other = srv;
    int dfd = daemon_fd_of(D.pid, cli);
    EXPECT_TRUE(dfd >= 0, "dfd >= 0");
    EXPECT_TRUE(race_syscall(D.pid, dfd, nr_relay, peer_writes, copy_drains, &r),
                "race_syscall(D.pid, dfd, nr_relay, peer_writes, copy_drains, &r)");
    EXPECT_TRUE(ping_ok(other), "ping_ok(other)");
    /* the relay still carries bytes from the peer to the client's end */
    EXPECT_INT(send(srv, "after", 5, MSG_NOSIGNAL), 5, "send: %s", strerror(errno));
    struct pollfd pfd = {end, POLLIN, 0};
    EXPECT_INT(poll(&pfd, 1, H_TIMEOUT_MS), 1, "poll: %s", strerror(errno));
    char buf[16];
    EXPECT_INT(read(end, buf, sizeof buf), 5, "read: %s", strerror(errno));
    h_daemon_stop(&D);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fd_recv_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_send_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_close_linger, teardown),
        cmocka_unit_test_teardown(test_fd_accept_stolen, teardown),
        cmocka_unit_test_teardown(test_fd_tls_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_udp_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_pipe_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_connect_cleared, teardown),
        cmocka_unit_test_teardown(test_fd_unused_linger, teardown),
        cmocka_unit_test_teardown(test_fd_unused_files, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
