/*
 * sockctl run (sockctl.1, RUN): real programs under the supervisor against loopback servers
 * started here. For each program: an allowed destination works; a denied one fails with
 * EACCES and never reaches its server; a denied UDP destination receives nothing; under
 * --net none a program that goes around the filter reaches nothing; killing the program or
 * the supervisor leaves no fd in the daemon.
 *
 * Needs $SOCKCTL_BIN and $BUILD_DIR (run_probe, and the Go probe built there); curl, busybox,
 * python3, openssl and go are Debian packages ./dev installs; a test whose program is missing
 * is skipped saying so.
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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dnsd.h"
#include "harness.h"
#include "tc.h"

/* Bound of one program run, in seconds (the program is killed then). */
#define RUN_LIMIT_S 30

static struct h_daemon D;
static char g_tmp[256];     /* files made by the group setup */
static char g_sockctl[512]; /* $SOCKCTL_BIN */
static char g_probe[512];   /* run_probe (static C) */
static char g_goprobe[512]; /* the Go probe, "" when go is missing */
static int g_http_port;     /* python3 http.server serving g_tmp/www */
static int g_https_port;    /* openssl s_server -www */
static pid_t g_http_pid, g_https_pid;
static struct dnsd g_dns;

/* ---- helpers ---- */

static int
have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Start sh -c cmd with stdout (and stderr) into a pipe; *out the read end. */
static pid_t
spawn(int *out, const char *cmd)
{
    int p[2];
    EXPECT_INT(pipe2(p, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    pid_t pid = fork();
    EXPECT_TRUE(pid >= 0, "pid >= 0");
    if (pid == 0) {
        setpgid(0, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    *out = p[0];
    return pid;
}

/* Read from fd into buf (NUL-terminated, appended at *len) until EOF, needle or deadline. */
static void
read_until(int fd, char *buf, size_t cap, size_t *len, const char *needle, long long deadline)
{
    while (*len + 1 < cap && h_now_ms() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)(deadline - h_now_ms())) <= 0)
            break;
        ssize_t n = read(fd, buf + *len, cap - 1 - *len);
        if (n <= 0)
            break;
        *len += (size_t)n;
        buf[*len] = '\0';
        if (needle != NULL && strstr(buf, needle) != NULL)
            break;
    }
    buf[*len] = '\0';
}

/* Wait (bounded) for pid; its exit status (128 + signal), -1 after killing it at the bound. */
static int
reap(pid_t pid, int limit_ms)
{
    int st;
    long long end = h_now_ms() + limit_ms;
    while (h_now_ms() < end) {
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        h_sleep_ms(10);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, &st, 0);
    return -1;
}

/* Run `sockctl run -s SOCK ARGS` (args: the rest of a shell command line); output into out;
 * the exit status. */
static int
run(char *out, size_t cap, const char *fmt, ...)
{
    char args[2048], cmd[3072];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec %s run -s %s %s", g_sockctl, D.sock, args);
    int fd;
    size_t len = 0;
    pid_t pid = spawn(&fd, cmd);
    read_until(fd, out, cap, &len, NULL, h_now_ms() + RUN_LIMIT_S * 1000);
    close(fd);
    int rc = reap(pid, 5000);
    if (getenv("TEST_RUN_VERBOSE") != NULL)
        fprintf(stderr, "$ %s\n-> %d: %s\n", cmd, rc, out);
    return rc;
}

#define OUT_HAS(out, s) EXPECT_TRUE(strstr((out), (s)) != NULL, "output: %s", (out))

/* A port nothing listens on now (bound and closed). */
static int
free_port(int type)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    getsockname(fd, (struct sockaddr *)&sin, &sl);
    close(fd);
    return ntohs(sin.sin_port);
}

/* A TCP connection to 127.0.0.1:port, retried (bounded) while refused; -1 when it never came. */
static int
connect_retry(int port, int limit_ms)
{
    long long end = h_now_ms() + limit_ms;
    while (h_now_ms() < end) {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((unsigned short)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0)
            return fd;
        close(fd);
        h_sleep_ms(20);
    }
    return -1;
}

/* Wait (bounded) until 127.0.0.1:port accepts a TCP connection. */
static int
wait_listen(int port, int limit_ms)
{
    int fd = connect_retry(port, limit_ms);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* A UDP echo on 127.0.0.1 in a thread; counts datagrams. */
struct udp_echo {
    int fd, port;
    volatile int got;
    volatile int stop;
    pthread_t th;
};

static void *
udp_echo_main(void *arg)
{
    struct udp_echo *u = arg;
    char buf[2048];
    while (!u->stop) {
        struct pollfd p = {.fd = u->fd, .events = POLLIN};
        if (poll(&p, 1, 50) != 1)
            continue;
        struct sockaddr_storage from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(u->fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
        if (n < 0)
            continue;
        u->got++;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] >= 'a' && buf[i] <= 'z')
                buf[i] = (char)(buf[i] - 32);
        sendto(u->fd, buf, (size_t)n, 0, (struct sockaddr *)&from, fl);
    }
    return NULL;
}

static void
udp_echo_start(struct udp_echo *u)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    memset(u, 0, sizeof *u);
    u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_INT(bind(u->fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    getsockname(u->fd, (struct sockaddr *)&sin, &sl);
    u->port = ntohs(sin.sin_port);
    EXPECT_INT(pthread_create(&u->th, NULL, udp_echo_main, u), 0, "pthread_create");
}

static void
udp_echo_stop(struct udp_echo *u)
{
    u->stop = 1;
    pthread_join(u->th, NULL);
    close(u->fd);
}

static int
teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

static int
setup(void **state)
{
    (void)state;
    h_daemon_start(&D, NULL);
    return 0;
}

/*
 * The program line prog (a format whose one %d is the port) run twice under --allow 'connect
 * 127.0.0.1 port ALLOWED': to allowed (exit 0, the output has ok_text), then to a peer the rule
 * leaves out (exit deny_rc, or any but 0 when deny_rc is -1; the output has deny_text), which
 * never sees a connection.
 */
static void
allow_deny(const char *prog, int allowed, const char *ok_text, int deny_rc, const char *deny_text)
{
    char line[2048], out[16384];
    struct h_peer *denied = h_peer_auto(H_ECHO, 0);
    for (int pass = 0; pass < 2; pass++) {
        snprintf(line, sizeof line, prog, pass == 0 ? allowed : denied->port);
        int rc = run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s", allowed, line);
        if (pass == 0) {
            EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
            OUT_HAS(out, ok_text);
        } else {
            EXPECT_TRUE(deny_rc == -1 ? rc != 0 : rc == deny_rc, "%s", jd(json_string(out)));
            OUT_HAS(out, deny_text);
        }
    }
    EXPECT_INT(denied->accepted, 0, "denied->accepted");
}

/* ---- curl ---- */

static void
test_run_curl_http(void **state)
{
    (void)state;
    if (!have("curl"))
        skip();
    /* 7: CURLE_COULDNT_CONNECT */
    allow_deny("curl -sS -v http://127.0.0.1:%d/hello.txt", g_http_port, "hello from the test", 7,
               "Permission denied");
}

static void
test_run_curl_https(void **state)
{
    (void)state;
    if (!have("curl") || g_https_port == 0)
        skip();
    allow_deny("curl -sS -v -k https://127.0.0.1:%d/", g_https_port, "s_server", 7,
               "Permission denied");
}

/* ---- python ---- */

static void
test_run_python_urllib(void **state)
{
    (void)state;
    allow_deny("python3 -c 'import sys, urllib.request\n"
               "try:\n"
               "    r = urllib.request.urlopen(sys.argv[1], timeout=10); print(\"status\", "
               "r.status, r.read().decode())\n"
               "except Exception as e:\n"
               "    print(\"errno\", getattr(getattr(e, \"reason\", e), \"errno\", None)); "
               "sys.exit(1)' http://127.0.0.1:%d/hello.txt",
               g_http_port, "status 200 hello from the test", 1, "errno 13");
}

/* IPv6: the replacement socket is of the program's family. */
static void
test_run_python_ipv6(void **state)
{
    char out[4096];
    static const char py[] =
        "python3 -c 'import socket, sys\n"
        "try:\n"
        "    s = socket.create_connection((\"::1\", int(sys.argv[1]))); s.sendall(b\"v6\"); "
        "print(\"ok\", s.family == socket.AF_INET6, s.recv(10))\n"
        "except OSError as e:\n"
        "    print(\"errno\", e.errno)'";
    (void)state;
    struct h_peer *ok = h_peer_auto(H_ECHO, 1), *denied = h_peer_auto(H_ECHO, 1);
    int rc = run(out, sizeof out, "--allow 'connect ::1 port %d' -- %s %d", ok->port, py, ok->port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok True b'v6'");
    run(out, sizeof out, "--allow 'connect ::1 port %d' -- %s %d", ok->port, py, denied->port);
    OUT_HAS(out, "errno 13");
    EXPECT_INT(denied->accepted, 0, "denied->accepted");
}

/*
 * Connects are made concurrently: a connect that hangs (a listener whose queue is full drops
 * the SYN) does not hold back another thread's connect.
 */
static void
test_run_concurrent_connects(void **state)
{
    char out[4096];
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    int fill[4], nfill = 0;
    (void)state;
    struct h_peer *echo = h_peer_auto(H_ECHO, 0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_INT(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(lfd, 0), 0, "listen: %s", strerror(errno));
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    int stuck = ntohs(sin.sin_port);
    for (int i = 0; i < 4; i++) { /* fill the accept queue: later SYNs are dropped */
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        connect(fill[nfill], (struct sockaddr *)&sin, sizeof sin);
        nfill++;
    }
    h_sleep_ms(50);
    int rc = run(out, sizeof out,
                 "-- python3 -c 'import os, socket, sys, threading, time\n"
                 "done = []\n"
                 "def hang():\n"
                 "    try: socket.create_connection((\"127.0.0.1\", int(sys.argv[1])))\n"
                 "    except OSError: pass\n"
                 "    done.append(1)\n"
                 "threading.Thread(target=hang, daemon=True).start(); time.sleep(0.3)\n"
                 "s = socket.create_connection((\"127.0.0.1\", int(sys.argv[2])))\n"
                 "print(\"other connected, hanging one done:\", bool(done), flush=True)\n"
                 "os._exit(0)' %d %d",
                 stuck, echo->port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "other connected, hanging one done: False");
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
}

/* Unix sockets: left alone, or with --unix connected by sockd under the unix rules. */
static void
test_run_unix(void **state)
{
    char cmd[2048], out[4096], srv[8192], path[400];
    size_t slen = 0;
    int sfd;
    (void)state;
    snprintf(path, sizeof path, "%s/u.sock", g_tmp);
    unlink(path);
    snprintf(cmd, sizeof cmd,
             "exec python3 -c 'import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(8); "
             "print(\"ready\", flush=True)\n"
             "while True:\n"
             "    c, _ = s.accept(); c.sendall(c.recv(64).upper()); c.close(); "
             "print(\"accepted\", flush=True)' %s",
             path);
    pid_t spid = spawn(&sfd, cmd);
    read_until(sfd, srv, sizeof srv, &slen, "ready", h_now_ms() + 10000);
    OUT_HAS(srv, "ready");
    static const char py[] = "python3 -c 'import socket, sys\n"
                             "s = socket.socket(socket.AF_UNIX)\n"
                             "try:\n"
                             "    s.connect(sys.argv[1]); s.sendall(b\"unix\"); print(s.recv(10))\n"
                             "except OSError as e:\n"
                             "    print(\"errno\", e.errno)'";
    int rc = run(out, sizeof out, "--unix --allow 'connect unix %s/' -- %s %s", g_tmp, py, path);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "b'UNIX'");
    run(out, sizeof out, "--unix --allow 'connect 127.0.0.1' -- %s %s", py, path);
    OUT_HAS(out, "errno 13");
    run(out, sizeof out, "--allow 'connect 127.0.0.1' -- %s %s", py, path); /* left alone */
    OUT_HAS(out, "b'UNIX'");
    read_until(sfd, srv, sizeof srv, &slen, "accepted\naccepted", h_now_ms() + 5000);
    int n = 0;
    for (const char *p = srv; (p = strstr(p, "accepted")) != NULL; p++)
        n++;
    EXPECT_INT(n, 2, "n"); /* the denied one never reached the server */
    kill(-spid, SIGTERM);
    reap(spid, 5000);
    close(sfd);
}

/* ---- busybox (statically linked) ---- */

static void
test_run_busybox_wget(void **state)
{
    (void)state;
    if (!have("busybox"))
        skip();
    allow_deny("busybox wget -q -O - http://127.0.0.1:%d/hello.txt", g_http_port,
               "hello from the test", -1, "Permission denied");
}

static void
test_run_busybox_nc(void **state)
{
    (void)state;
    if (!have("busybox"))
        skip();
    struct h_peer *echo = h_peer_auto(H_ECHO, 0);
    allow_deny("sh -c 'echo tcp-line | busybox nc -w 2 127.0.0.1 %d'", echo->port, "tcp-line", -1,
               "Permission denied");
}

/* A server inside the sandbox: busybox nc -l gets a socket sockd bound under the bind rules. */
static void
test_run_busybox_nc_listen(void **state)
{
    char cmd[2048], out[4096];
    size_t len = 0;
    int fd;
    (void)state;
    if (!have("busybox"))
        skip();
    int port = free_port(SOCK_STREAM), other = free_port(SOCK_STREAM);
    snprintf(cmd, sizeof cmd,
             "exec %s run -s %s --allow 'bind :: port %d' --allow 'bind 0.0.0.0 port %d' -- "
             "busybox nc -l -p %d",
             g_sockctl, D.sock, port, port, port);
    pid_t pid = spawn(&fd, cmd);
    int c = connect_retry(port, 10000); /* nc serves one connection: this one */
    EXPECT_TRUE(c >= 0, "c >= 0");
    EXPECT_INT(write(c, "from-outside\n", 13), 13, "write: %s", strerror(errno));
    read_until(fd, out, sizeof out, &len, "from-outside", h_now_ms() + 5000);
    close(c);
    OUT_HAS(out, "from-outside");
    reap(pid, 5000);
    close(fd);
    /* a port the rules do not name: the bind fails, nothing listens */
    int rc = run(out, sizeof out,
                 "--allow 'bind :: port %d' --allow 'bind 0.0.0.0 port %d' -- busybox nc -l -p %d",
                 port, port, other);
    EXPECT_TRUE(rc != 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "Permission denied");
    EXPECT_TRUE(!wait_listen(other, 100), "wait_listen(other, 100)");
}

/* A static binary's DNS (UDP to its resolver) goes through the policy: no leak. */
static void
test_run_busybox_dns(void **state)
{
    char out[4096];
    (void)state;
    if (!have("busybox"))
        skip();
    unsigned before = dnsd_queries(&g_dns);
    int rc = run(out, sizeof out,
                 "--allow 'connect 127.0.0.1 port %u' --allow 'sendto 127.0.0.1 port %u' -- "
                 "busybox nslookup run.test 127.0.0.1:%u",
                 g_dns.port, g_dns.port, g_dns.port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "127.0.0.7");
    EXPECT_TRUE(dnsd_queries(&g_dns) > before, "dnsd_queries(&g_dns) > before");
    before = dnsd_queries(&g_dns);
    rc = run(out, sizeof out,
             "--allow 'connect 127.0.0.1 port 443' -- busybox nslookup run.test 127.0.0.1:%u",
             g_dns.port);
    EXPECT_TRUE(rc != 0, "%s", jd(json_string(out)));
    h_sleep_ms(100);
    EXPECT_INT(dnsd_queries(&g_dns), before, "dnsd_queries(&g_dns)");
}

/* ---- the static probe: raw syscalls ---- */

static void
test_run_probe_tcp(void **state)
{
    char out[4096];
    (void)state;
    struct h_peer *echo = h_peer_auto(H_ECHO, 0), *denied = h_peer_auto(H_ECHO, 0);
    int rc = run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s connect %d",
                 echo->port, g_probe, echo->port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok nonblock=0 nodelay=1 reply=ping");
    rc = run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s nbconnect %d", echo->port,
             g_probe, echo->port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok nonblock=1 nodelay=1 reply=ping");
    rc = run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s connect %d", echo->port,
             g_probe, denied->port);
    OUT_HAS(out, "errno 13");
    rc = run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s nbconnect %d", echo->port,
             g_probe, denied->port);
    OUT_HAS(out, "errno 13");
    EXPECT_INT(denied->accepted, 0, "denied->accepted");
    /* nothing listens: the kernel's answer comes through */
    rc = run(out, sizeof out, "-- %s connect %d", g_probe, free_port(SOCK_STREAM));
    OUT_HAS(out, "errno 111");
}

/*
 * A server that greets at once, and one that closes at once: sockd opens the socket with
 * readahead off, so neither the greeting nor the EOF is taken before the socket is handed over.
 */
static void
test_run_probe_greeting(void **state)
{
    char out[4096];
    struct h_peer *greet = calloc(1, sizeof *greet), *closer = h_peer_auto(H_CLOSE, 0);
    (void)state;
    greet->greeting = "greeting-first\n";
    h_peer_start(greet, H_GREET, 0);
    for (int i = 0; i < 5; i++) {
        int rc = run(out, sizeof out, "-- %s connect %d", g_probe, greet->port);
        EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
        OUT_HAS(out, "reply=greeting-first");
        rc = run(out, sizeof out, "-- %s connect %d", g_probe, closer->port);
        EXPECT_TRUE(strstr(out, "(connect") == NULL, "%s",
                    jd(json_string(out))); /* the connect succeeded */
    }
    h_peer_stop(greet);
    free(greet);
}

static void
test_run_probe_udp(void **state)
{
    static const char *const modes[] = {"sendto", "sendmsg", "udpconnect"};
    char out[4096];
    struct udp_echo ue, sink;
    (void)state;
    udp_echo_start(&ue);
    udp_echo_start(&sink);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int rc = run(out, sizeof out, "--allow 'any 127.0.0.1 port %d' -- %s %s %d", ue.port,
                     g_probe, modes[i], ue.port);
        EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
        OUT_HAS(out, "ok sent=4 reply=PING");
        run(out, sizeof out, "--allow 'any 127.0.0.1 port %d' -- %s %s %d", ue.port, g_probe,
            modes[i], sink.port);
        OUT_HAS(out, "errno 13");
    }
    int rc = run(out, sizeof out, "--allow 'sendto 127.0.0.1 port %d' -- %s sendmmsg %d", ue.port,
                 g_probe, ue.port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok sent=2 len=4,4");
    run(out, sizeof out, "--allow 'sendto 127.0.0.1 port %d' -- %s sendmmsg %d", ue.port, g_probe,
        sink.port);
    OUT_HAS(out, "errno 13");
    h_sleep_ms(100);
    EXPECT_INT(sink.got, 0, "sink.got");
    udp_echo_stop(&ue);
    udp_echo_stop(&sink);
}

static void
test_run_probe_bind(void **state)
{
    char cmd[2048], out[4096], buf[64];
    size_t len = 0;
    int fd;
    (void)state;
    int port = free_port(SOCK_STREAM);
    snprintf(cmd, sizeof cmd, "exec %s run -s %s --allow 'bind 127.0.0.1 port %d' -- %s bind %d",
             g_sockctl, D.sock, port, g_probe, port);
    pid_t pid = spawn(&fd, cmd);
    read_until(fd, out, sizeof out, &len, "listening", h_now_ms() + 10000);
    OUT_HAS(out, "listening");
    int c = h_tcp_connect(port);
    EXPECT_INT(write(c, "hello\n", 6), 6, "write: %s", strerror(errno));
    struct pollfd p = {.fd = c, .events = POLLIN};
    EXPECT_INT(poll(&p, 1, 5000), 1, "poll: %s", strerror(errno));
    EXPECT_INT(read(c, buf, sizeof buf), 6, "read: %s", strerror(errno));
    close(c);
    read_until(fd, out, sizeof out, &len, "served", h_now_ms() + 5000);
    EXPECT_INT(reap(pid, 5000), 0, "reap(pid, 5000)");
    close(fd);
    int rc = run(out, sizeof out, "--allow 'bind 127.0.0.1 port %d' -- %s bind %d", port, g_probe,
                 free_port(SOCK_STREAM));
    EXPECT_TRUE(rc != 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "errno 13");
}

/* ---- Go (CGO_ENABLED=0: static, its own syscalls) ---- */

static void
test_run_go(void **state)
{
    char out[8192];
    struct udp_echo ue, sink;
    (void)state;
    if (g_goprobe[0] == '\0') {
        print_message("go is not installed (Debian golang-go): Go test skipped\n");
        skip();
    }
    struct h_peer *denied = h_peer_auto(H_ECHO, 0);
    int rc = run(out, sizeof out,
                 "--allow 'connect 127.0.0.1 port %d' -- %s get http://127.0.0.1:%d/hello.txt",
                 g_http_port, g_goprobe, g_http_port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok status=200 len=20");
    run(out, sizeof out, "--allow 'connect 127.0.0.1 port %d' -- %s get http://127.0.0.1:%d/",
        g_http_port, g_goprobe, denied->port);
    OUT_HAS(out, "errno 13");
    EXPECT_INT(denied->accepted, 0, "denied->accepted");
    udp_echo_start(&ue);
    udp_echo_start(&sink);
    rc = run(out, sizeof out, "--allow 'any 127.0.0.1 port %d' -- %s udp 127.0.0.1:%d", ue.port,
             g_goprobe, ue.port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok reply=PING");
    /* an unconnected socket bound to an ephemeral port, then WriteTo */
    rc = run(out, sizeof out,
             "--allow 'sendto 127.0.0.1 port %d' --allow 'bind 0.0.0.0 port 0' -- %s sendto "
             "127.0.0.1:%d",
             ue.port, g_goprobe, ue.port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok reply=PING");
    /* without a bind rule: the ephemeral bind is the kernel's autobind, made by the supervisor */
    rc = run(out, sizeof out, "--allow 'sendto 127.0.0.1 port %d' -- %s sendto 127.0.0.1:%d",
             ue.port, g_goprobe, ue.port);
    EXPECT_TRUE(rc == 0, "%s", jd(json_string(out)));
    OUT_HAS(out, "ok reply=PING");
    run(out, sizeof out,
        "--allow 'sendto 127.0.0.1 port %d' --allow 'bind 0.0.0.0 port 0' -- %s sendto "
        "127.0.0.1:%d",
        ue.port, g_goprobe, sink.port);
    OUT_HAS(out, "errno 13");
    h_sleep_ms(100);
    EXPECT_INT(sink.got, 0, "sink.got");
    udp_echo_stop(&ue);
    udp_echo_stop(&sink);
}

/* ---- going around the filter ---- */

/*
 * A program that bypasses the filter on purpose: io_uring is refused (ENOSYS); a raw socket's
 * datagram, under --net none, leaves from the empty namespace and reaches nothing; under
 * --net inherit a raw send is refused.
 */
static void
test_run_bypass_net_none(void **state)
{
    char out[4096];
    struct udp_echo sink;
    (void)state;
    udp_echo_start(&sink);
    run(out, sizeof out, "--net none -- %s bypass %d", g_probe, sink.port);
    OUT_HAS(out, "io_uring Function not implemented");
    EXPECT_TRUE(strstr(out, "raw sent") == NULL, "%s", jd(json_string(out))); /* lo is down there */
    run(out, sizeof out, "--net inherit -- %s bypass %d", g_probe, sink.port);
    OUT_HAS(out, "io_uring Function not implemented");
    OUT_HAS(out, "errno 13");
    h_sleep_ms(100);
    EXPECT_INT(sink.got, 0, "sink.got");
    /* an empty namespace: no interface is up */
    run(out, sizeof out, "--net none -- cat /proc/net/dev");
    EXPECT_TRUE(strstr(out, "eth") == NULL, "%s", jd(json_string(out)));
    udp_echo_stop(&sink);
}

/* ---- nothing left in the daemon ---- */

/* The pid of pid's only child (from /proc/PID/task/PID/children), 0 when none yet. */
static pid_t
child_of(pid_t pid)
{
    char path[64];
    long c = 0;
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fscanf(f, "%ld", &c) != 1)
            c = 0;
        fclose(f);
    }
    return (pid_t)c;
}

static void
kill_case(int kill_supervisor)
{
    char cmd[2048], out[4096];
    size_t len = 0;
    int fd;
    struct h_peer *echo = h_peer_auto(H_ECHO, 0);
    struct sockd_client *c = h_client_auto(&D);
    json_decref(h_wait_clients(c, 1));
    int base = h_count_fds(D.pid);
    snprintf(cmd, sizeof cmd,
             "exec %s run -s %s --allow 'connect 127.0.0.1 port %d' -- python3 -c 'import socket, "
             "time; s = socket.create_connection((\"127.0.0.1\", %d)); print(\"connected\", "
             "flush=True); time.sleep(60)'",
             g_sockctl, D.sock, echo->port, echo->port);
    pid_t sup = spawn(&fd, cmd);
    read_until(fd, out, sizeof out, &len, "connected", h_now_ms() + 10000);
    OUT_HAS(out, "connected");
    pid_t prog = child_of(sup);
    EXPECT_TRUE(prog > 0, "prog > 0");
    json_decref(h_wait_clients(c, 2)); /* the supervisor's connection */
    if (kill_supervisor) {
        kill(sup, SIGKILL);
        EXPECT_TRUE(reap(sup, 5000) == 128 + SIGKILL, "reap(sup, 5000) == 128 + SIGKILL");
        /* the program dies with it (its connection sees EOF) */
        EXPECT_INT(h_peer_wait_eofs(echo, 1, 5000), 1, "h_peer_wait_eofs(echo, 1, 5000)");
    } else {
        kill(prog, SIGKILL);
        EXPECT_INT(reap(sup, 5000), 128 + SIGKILL, "reap(sup, 5000)");
    }
    close(fd);
    json_decref(h_wait_clients(c, 1));
    EXPECT_INT(h_wait_fds(D.pid, base, H_TIMEOUT_MS), base,
               "h_wait_fds(D.pid, base, H_TIMEOUT_MS)");
    json_t *st = h_ok(c, "daemon.stats", NULL);
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(st, "sockets"), "total")), 0,
               "%s", jd(st));
    json_decref(st);
}

static void
test_run_kill_program(void **state)
{
    (void)state;
    kill_case(0);
}

static void
test_run_kill_supervisor(void **state)
{
    (void)state;
    kill_case(1);
}

/* ---- setup of the servers ---- */

static int
group_setup(void **state)
{
    char cmd[2048], path[512];
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    const char *sc = getenv("SOCKCTL_BIN"), *bd = getenv("BUILD_DIR");
    if (sc == NULL || bd == NULL) {
        fprintf(stderr, "SOCKCTL_BIN and BUILD_DIR must be set\n");
        return -1;
    }
    snprintf(g_sockctl, sizeof g_sockctl, "%s", sc);
    snprintf(g_probe, sizeof g_probe, "%s/tests/integration/run_probe", bd);
    snprintf(g_tmp, sizeof g_tmp, "/tmp/sockd-test-run.XXXXXX");
    if (mkdtemp(g_tmp) == NULL)
        return -1;
    chmod(g_tmp, 0755);
    snprintf(path, sizeof path, "%s/www", g_tmp);
    mkdir(path, 0755);
    snprintf(cmd, sizeof cmd, "printf 'hello from the test\\n' > %s/www/hello.txt", g_tmp);
    if (system(cmd) != 0)
        return -1;

    /* python3 http.server */
    int fd;
    g_http_port = free_port(SOCK_STREAM);
    snprintf(cmd, sizeof cmd,
             "exec python3 -m http.server --bind 127.0.0.1 --directory %s/www %d >/dev/null 2>&1",
             g_tmp, g_http_port);
    g_http_pid = spawn(&fd, cmd);
    close(fd);
    if (!wait_listen(g_http_port, 10000))
        return -1;

    /* openssl s_server -www with a certificate made now */
    if (have("openssl")) {
        snprintf(cmd, sizeof cmd,
                 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
                 "%s/k.pem -out %s/c.pem -days 1 -subj /CN=localhost >/dev/null 2>&1",
                 g_tmp, g_tmp);
        if (system(cmd) == 0) {
            g_https_port = free_port(SOCK_STREAM);
            snprintf(cmd, sizeof cmd,
                     "exec openssl s_server -quiet -www -accept 127.0.0.1:%d -cert %s/c.pem -key "
                     "%s/k.pem </dev/null >/dev/null 2>&1",
                     g_https_port, g_tmp, g_tmp);
            g_https_pid = spawn(&fd, cmd);
            close(fd);
            if (!wait_listen(g_https_port, 10000))
                g_https_port = 0;
        }
    }

    /* a DNS server for busybox nslookup */
    if (dnsd_start(&g_dns) != 0 || dnsd_add_a(&g_dns, "run.test", "127.0.0.7") != 0)
        return -1;

    /* the Go probe, built into the build directory */
    g_goprobe[0] = '\0';
    if (have("go")) {
        snprintf(path, sizeof path, "%s/tests/integration/run_probe_go", bd);
        snprintf(cmd, sizeof cmd,
                 "cd %s && CGO_ENABLED=0 GO111MODULE=off GOCACHE=%s/.gocache GOPATH=%s/.gopath "
                 "HOME=%s go build -o %s %s/run_probe.go >&2",
                 g_tmp, bd, bd, g_tmp, path, SRCDIR_INTEGRATION);
        if (system(cmd) == 0)
            snprintf(g_goprobe, sizeof g_goprobe, "%s", path);
        else
            fprintf(stderr, "the Go probe did not build: Go test will fail\n");
    }
    return 0;
}

static int
group_teardown(void **state)
{
    char cmd[512];
    (void)state;
    if (g_http_pid > 0)
        kill(-g_http_pid, SIGTERM), reap(g_http_pid, 5000);
    if (g_https_pid > 0)
        kill(-g_https_pid, SIGTERM), reap(g_https_pid, 5000);
    dnsd_stop(&g_dns);
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_run_curl_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_curl_https, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_python_urllib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_python_ipv6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_unix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_concurrent_connects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_busybox_wget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_busybox_nc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_busybox_nc_listen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_busybox_dns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_probe_tcp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_probe_greeting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_probe_udp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_probe_bind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_go, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_bypass_net_none, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_kill_program, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_kill_supervisor, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
