/* Integration test harness: a real sockd on a temporary socket, real loopback peers (see
 * harness.h). */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <grp.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "harness.h"

long long
h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
h_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

void
h_dump(const char *label, const json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    fprintf(stderr, "  %s: %s\n", label, s ? s : "(null)");
    free(s);
}

/* Copy the daemon's log to stderr (only on failure paths). */
static void
print_log(const struct h_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    char line[4096];
    int n = 0;

    fprintf(stderr, "---- daemon log %s ----\n", d->log);
    if (!f) {
        fprintf(stderr, "(cannot open: %s)\n", strerror(errno));
        return;
    }
    /* The log may be huge with -v; print at most 2000 lines of it. */
    while (n++ < 2000 && fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
    fprintf(stderr, "---- end of daemon log ----\n");
}

/* Remove everything in d->dir (flat) and the directory itself. */
static void
remove_dir(const struct h_daemon *d)
{
    DIR *dir = opendir(d->dir);
    struct dirent *e;
    char path[600];

    if (!dir)
        return;
    while ((e = readdir(dir)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", d->dir, e->d_name);
        unlink(path);
    }
    closedir(dir);
    rmdir(d->dir);
}

/* One connect attempt to the control socket: 1 if it accepted. */
static int
probe_connect(const char *path)
{
    struct sockaddr_un sa;
    int fd, ok;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path)
        return 0;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

void
h_daemon_start(struct h_daemon *d, const char *conf_text)
{
    const char *bin = getenv("SOCKD_BIN");
    long long deadline;
    int status;

    /* The tests write to sockets whose other end may be gone. */
    signal(SIGPIPE, SIG_IGN);

    memset(d, 0, sizeof *d);
    if (!bin || !*bin) {
        fprintf(stderr, "SOCKD_BIN is not set (path of the sockd binary)\n");
        fail();
    }
    assert_int_equal(access(bin, X_OK), 0);

    snprintf(d->dir, sizeof d->dir, "/tmp/sockd-it-XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(d->sock, sizeof d->sock, "%s/sockd.sock", d->dir);
    snprintf(d->log, sizeof d->log, "%s/sockd.log", d->dir);
    if (conf_text) {
        FILE *f;
        snprintf(d->conf, sizeof d->conf, "%s/sockd.conf", d->dir);
        f = fopen(d->conf, "w");
        assert_non_null(f);
        assert_true(fputs(conf_text, f) >= 0);
        assert_int_equal(fclose(f), 0);
    }

    fflush(stdout);
    fflush(stderr);
    d->pid = fork();
    assert_true(d->pid >= 0);
    if (d->pid == 0) {
        sigset_t none;
        int fd = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDWR);
        if (fd < 0 || nul < 0)
            _exit(126);
        dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        /* Nothing of the test process (peer sockets, control connections) may leak in. */
        for (int i = 3; i < 65536; i++)
            close(i);
        signal(SIGPIPE, SIG_DFL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDNAMES");
        /* a suite run under systemd must not make test daemons talk to the real manager */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        if (d->conf[0])
            execl(bin, bin, "-s", d->sock, "-c", d->conf, "-v", (char *)NULL);
        else
            execl(bin, bin, "-s", d->sock, "-v", (char *)NULL);
        _exit(127);
    }

    deadline = h_now_ms() + 5000;
    for (;;) {
        if (probe_connect(d->sock))
            return;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            fprintf(stderr, "sockd exited before accepting (status 0x%x)\n", status);
            print_log(d);
            d->pid = 0;
            remove_dir(d);
            fail();
        }
        if (h_now_ms() > deadline)
            break;
        h_sleep_ms(10);
    }
    fprintf(stderr, "sockd did not accept on %s within 5 s\n", d->sock);
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &status, 0);
    d->pid = 0;
    print_log(d);
    remove_dir(d);
    fail();
}

void
h_daemon_stop(struct h_daemon *d)
{
    long long deadline;
    int status = 0, exited = 0, sock_gone, errno_sock;
    struct stat st;

    assert_true(d->pid > 0);
    assert_int_equal(kill(d->pid, SIGTERM), 0);
    /* sockd.conf(5) shutdown-timeout: output flushed for 2 s at most by default; allow 10 s. */
    deadline = h_now_ms() + 10000;
    while (h_now_ms() < deadline) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            exited = 1;
            break;
        }
        if (r < 0 && errno != EINTR)
            break;
        h_sleep_ms(10);
    }
    if (!exited) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
    }
    d->pid = 0;
    sock_gone = stat(d->sock, &st) != 0;
    errno_sock = errno;

    if (!exited || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || !sock_gone ||
        errno_sock != ENOENT) {
        if (!exited)
            fprintf(stderr, "sockd did not exit within 10 s of SIGTERM (killed)\n");
        else if (WIFSIGNALED(status))
            fprintf(stderr, "sockd died of signal %d\n", WTERMSIG(status));
        else if (WEXITSTATUS(status) != 0)
            fprintf(stderr, "sockd exited with status %d\n", WEXITSTATUS(status));
        if (!sock_gone)
            fprintf(stderr, "control socket %s still exists after exit\n", d->sock);
        print_log(d);
    }
    remove_dir(d);
    d->dir[0] = 0;
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(sock_gone);
    assert_int_equal(errno_sock, ENOENT);
}

int
h_count_fds(pid_t pid)
{
    char path[64];
    DIR *dir;
    struct dirent *e;
    int n = 0;

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    dir = opendir(path);
    assert_non_null(dir);
    while ((e = readdir(dir)) != NULL)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(dir);
    return n;
}

int
h_wait_fds(pid_t pid, int n, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    int got;

    for (;;) {
        got = h_count_fds(pid);
        if (got == n || h_now_ms() > deadline)
            return got;
        h_sleep_ms(20);
    }
}

json_t *
h_wait_clients(struct sockd_client *c, long long n)
{
    long long deadline = h_now_ms() + H_TIMEOUT_MS;
    json_t *st;

    for (;;) {
        st = h_ok(c, "daemon.stats", NULL);
        if (json_integer_value(json_object_get(st, "clients")) == n || h_now_ms() > deadline)
            break;
        json_decref(st);
        h_sleep_ms(20);
    }
    if (!json_is_integer(json_object_get(st, "clients")) ||
        json_integer_value(json_object_get(st, "clients")) != n) {
        fprintf(stderr, "daemon.stats clients did not reach %lld\n", n);
        h_dump("stats", st);
        json_decref(st);
        fail();
    }
    return st;
}

/* The value of a "Key: N kB" line of /proc/PID/status. */
static long
status_kib(pid_t pid, const char *fmt)
{
    char path[64], line[256];
    FILE *f;
    long kib = -1;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f))
        if (sscanf(line, fmt, &kib) == 1)
            break;
    fclose(f);
    assert_true(kib >= 0);
    return kib;
}

long
h_rss_kib(pid_t pid)
{
    return status_kib(pid, "VmRSS: %ld kB");
}

long
h_hwm_kib(pid_t pid)
{
    return status_kib(pid, "VmHWM: %ld kB");
}

/* Receive one fd sent with SCM_RIGHTS on fd s; -1 if none came. */
static int
recv_one_fd(int s)
{
    char byte;
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } cm;
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    struct msghdr m = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf, .msg_controllen = sizeof cm.buf};
    int fd = -1;

    if (recvmsg(s, &m, MSG_CMSG_CLOEXEC) <= 0)
        return -1;
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h != NULL; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(h), sizeof fd);
    return fd;
}

int
h_connect_as(const char *path, uid_t uid, gid_t gid)
{
    int sp[2];
    pid_t pid;
    int fd, status;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char byte = 0;
        union {
            struct cmsghdr h;
            char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
        struct msghdr m = {.msg_iov = &iov,
                           .msg_iovlen = 1,
                           .msg_control = cm.buf,
                           .msg_controllen = sizeof cm.buf};
        int c;

        close(sp[0]);
        if (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
            _exit(120);
        if (getuid() != uid || geteuid() != uid || (uid != 0 && setuid(0) == 0))
            _exit(121); /* the drop must be real and final */
        c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c < 0 || strlen(path) >= sizeof sa.sun_path)
            _exit(122);
        memcpy(sa.sun_path, path, strlen(path));
        if (connect(c, (struct sockaddr *)&sa, sizeof sa) < 0)
            _exit(123);
        m.msg_controllen = CMSG_SPACE(sizeof(int));
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(h), &c, sizeof c);
        _exit(sendmsg(sp[1], &m, 0) == 1 ? 0 : 124);
    }
    close(sp[1]);
    fd = recv_one_fd(sp[0]);
    close(sp[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "h_connect_as(%s, %d): child status %#x\n", path, (int)uid, status);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(fd >= 0);
    return fd;
}

void
h_daemon_open_to_all(struct h_daemon *d)
{
    assert_int_equal(chmod(d->dir, 0755), 0);
    assert_int_equal(chmod(d->sock, 0666), 0);
}

struct sockd_client *
h_client_as(struct h_daemon *d, uid_t uid, gid_t gid)
{
    struct sockd_client *c;

    h_daemon_open_to_all(d);
    c = sockd_client_adopt(h_connect_as(d->sock, uid, gid));
    assert_non_null(c);
    return c;
}

struct sockd_client *
h_client_nobody(struct h_daemon *d)
{
    return h_client_as(d, H_NOBODY, H_NOBODY);
}

struct sockd_client *
h_client(struct h_daemon *d)
{
    struct sockd_client *c = sockd_client_connect(d->sock);
    if (!c)
        fprintf(stderr, "sockd_client_connect(%s): %s\n", d->sock, strerror(errno));
    assert_non_null(c);
    return c;
}

/* Build params from fmt (NULL: no params) or fail the test. */
static json_t *
build_params(const char *fmt, va_list ap)
{
    json_error_t jerr;
    json_t *p;

    if (!fmt)
        return NULL;
    p = json_vpack_ex(&jerr, 0, fmt, ap);
    if (!p)
        fprintf(stderr, "json_pack(\"%s\"): %s\n", fmt, jerr.text);
    assert_non_null(p);
    return p;
}

json_t *
h_ok(struct sockd_client *c, const char *method, const char *fmt, ...)
{
    json_t *params, *result = NULL, *error = NULL;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    params = build_params(fmt, ap);
    va_end(ap);
    rc = sockd_client_call(c, method, params, &result, &error, H_TIMEOUT_MS);
    if (rc != 0) {
        fprintf(stderr, "%s: expected a result, got rc %d (errno %s)\n", method, rc,
                rc < 0 ? strerror(errno) : "-");
        h_dump("params", params);
        h_dump("error", error);
    }
    json_decref(params);
    json_decref(error);
    assert_int_equal(rc, 0);
    assert_non_null(result);
    return result;
}

int
h_err(struct sockd_client *c, json_t **error_out, const char *method, const char *fmt, ...)
{
    json_t *params, *result = NULL, *error = NULL;
    va_list ap;
    int rc, code;

    va_start(ap, fmt);
    params = build_params(fmt, ap);
    va_end(ap);
    rc = sockd_client_call(c, method, params, &result, &error, H_TIMEOUT_MS);
    if (rc != 1) {
        fprintf(stderr, "%s: expected an error response, got rc %d (errno %s)\n", method, rc,
                rc < 0 ? strerror(errno) : "-");
        h_dump("params", params);
        h_dump("result", result);
    }
    json_decref(params);
    json_decref(result);
    assert_int_equal(rc, 1);
    assert_non_null(error);
    code = sockd_client_error_code(error);
    if (error_out)
        *error_out = error;
    else
        json_decref(error);
    return code;
}

json_t *
h_event(struct sockd_client *c, const char *method, long long socket, int timeout_ms)
{
    json_t *msg = sockd_client_wait_event(c, method, socket, timeout_ms);
    json_t *params;

    if (!msg)
        fprintf(stderr, "no %s for socket %lld within %d ms (%s)\n", method, socket, timeout_ms,
                strerror(errno));
    assert_non_null(msg);
    params = json_object_get(msg, "params");
    if (!json_is_object(params))
        h_dump("notification without params object", msg);
    assert_true(json_is_object(params));
    json_incref(params);
    json_decref(msg);
    return params;
}

void
h_no_event(struct sockd_client *c, int ms)
{
    json_t *msg = sockd_client_next_event(c, ms);
    int e = errno;

    if (msg) {
        h_dump("unexpected notification", msg);
        json_decref(msg);
        fail();
    }
    /* EPIPE would mean the daemon hung up on us, which is not "no event". */
    assert_int_equal(e, ETIMEDOUT);
}

long long
h_open(struct sockd_client *c, const char *type)
{
    json_t *r = h_ok(c, "socket.open", "{s:s}", "type", type);
    json_t *s = json_object_get(r, "socket");
    long long h;

    if (!json_is_integer(s))
        h_dump("socket.open result", r);
    assert_true(json_is_integer(s));
    h = json_integer_value(s);
    json_decref(r);
    assert_true(h > 0);
    return h;
}

long long
h_connect_tcp(struct sockd_client *c, int port)
{
    long long s = h_open(c, "tcp");
    json_t *ev;

    json_decref(h_ok(c, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
                     "127.0.0.1", "port", port));
    ev = h_event(c, "socket.connected", s, H_TIMEOUT_MS);
    json_decref(ev);
    return s;
}

char *
h_b64(const void *data, size_t len)
{
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *out = malloc(cap);

    assert_non_null(out);
    if (len == 0) {
        out[0] = 0;
        return out;
    }
    EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

unsigned char *
h_unb64(const char *text, size_t *len)
{
    size_t n = strlen(text), pad = 0;
    unsigned char *out;
    int r;

    out = malloc(n / 4 * 3 + 1);
    assert_non_null(out);
    *len = 0;
    if (n == 0)
        return out;
    if (n % 4) {
        free(out);
        return NULL;
    }
    r = EVP_DecodeBlock(out, (const unsigned char *)text, (int)n);
    if (r < 0) {
        free(out);
        return NULL;
    }
    if (text[n - 1] == '=')
        pad++;
    if (text[n - 2] == '=')
        pad++;
    *len = (size_t)r - pad;
    return out;
}

unsigned char *
h_recv_exact(struct sockd_client *c, long long s, size_t len, int timeout_ms)
{
    const size_t max_chunk = 16777216; /* max_recv_length */
    unsigned char *buf = malloc(len ? len : 1);
    size_t got = 0;

    assert_non_null(buf);
    while (got < len) {
        size_t want = len - got < max_chunk ? len - got : max_chunk;
        size_t chunk_got = 0;
        int events = 0;

        json_decref(h_ok(c, "socket.recv", "{s:I, s:I}", "socket", (json_int_t)s, "length",
                         (json_int_t)want));
        while (chunk_got < want && events++ < 64) {
            json_t *ev = h_event(c, "socket.received", s, timeout_ms);
            const char *b64 = json_string_value(json_object_get(ev, "data"));
            unsigned char *bytes;
            size_t n = 0;

            if (!b64)
                h_dump("socket.received without data", ev);
            assert_non_null(b64);
            bytes = h_unb64(b64, &n);
            assert_non_null(bytes);
            if (chunk_got + n > want) {
                h_dump("socket.received delivered more than asked", ev);
                fail();
            }
            memcpy(buf + got + chunk_got, bytes, n);
            chunk_got += n;
            free(bytes);
            if (json_is_true(json_object_get(ev, "eof")) && chunk_got < want) {
                h_dump("socket.received ended early with eof", ev);
                json_decref(ev);
                fail();
            }
            json_decref(ev);
        }
        assert_int_equal(chunk_got, want);
        got += chunk_got;
    }
    return buf;
}

void
h_send_raw(struct sockd_client *c, const char *text)
{
    int rc = sockd_client_send_raw(c, text, strlen(text));
    if (rc != 0)
        fprintf(stderr, "sockd_client_send_raw: rc %d (%s)\n", rc, strerror(errno));
    assert_int_equal(rc, 0);
}

json_t *
h_read(struct sockd_client *c, int timeout_ms)
{
    json_t *m = sockd_client_read_message(c, timeout_ms);
    if (!m)
        fprintf(stderr, "no message within %d ms (%s)\n", timeout_ms, strerror(errno));
    assert_non_null(m);
    return m;
}

/* ---- loopback peers ---- */

#define PEER_MAX_CONN 1024

struct peer_priv {
    pthread_t acceptor;
    pthread_mutex_t mu;
    int stop;                       /* atomic */
    int nconn;                      /* under mu */
    pthread_t conns[PEER_MAX_CONN]; /* under mu */
    int eofs;                       /* atomic */
};

struct peer_conn {
    struct h_peer *p;
    int fd;
};

static int
peer_stopping(struct h_peer *p)
{
    struct peer_priv *pv = p->priv;
    return __atomic_load_n(&pv->stop, __ATOMIC_SEQ_CST);
}

static enum h_peer_mode
peer_mode(struct h_peer *p)
{
    return __atomic_load_n(&p->mode, __ATOMIC_SEQ_CST);
}

/* Write all of buf, waiting for room in short polls so a stop request is seen. 0 ok, -1 gone. */
static int
peer_write_all(struct h_peer *p, int fd, const char *buf, size_t len)
{
    while (len > 0) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        ssize_t n;

        if (peer_stopping(p))
            return -1;
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *
peer_conn_main(void *arg)
{
    struct peer_conn *pc = arg;
    struct h_peer *p = pc->p;
    struct peer_priv *pv = p->priv;
    int fd = pc->fd;
    static const size_t bufsz = 65536;
    char *buf = malloc(bufsz);
    int greeted = 0;

    free(pc);
    while (buf && !peer_stopping(p)) {
        enum h_peer_mode mode = peer_mode(p);
        struct pollfd pfd = {fd, POLLIN, 0};
        ssize_t n;

        if (mode == H_CLOSE)
            break;
        if (mode == H_RESET) {
            struct linger lg = {1, 0};
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            break;
        }
        if (mode == H_SINK) {
            h_sleep_ms(20);
            continue;
        }
        if (mode == H_GREET && !greeted) {
            greeted = 1;
            if (p->greeting && peer_write_all(p, fd, p->greeting, strlen(p->greeting)) < 0)
                break;
        }
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        n = recv(fd, buf, bufsz, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                continue;
            break; /* reset */
        }
        if (n == 0) {
            __atomic_add_fetch(&pv->eofs, 1, __ATOMIC_SEQ_CST);
            break;
        }
        __atomic_add_fetch(&p->bytes, (size_t)n, __ATOMIC_SEQ_CST);
        if ((mode == H_ECHO || mode == H_GREET) && peer_write_all(p, fd, buf, (size_t)n) < 0)
            break;
    }
    free(buf);
    close(fd);
    return NULL;
}

static void *
peer_accept_main(void *arg)
{
    struct h_peer *p = arg;
    struct peer_priv *pv = p->priv;

    while (!peer_stopping(p)) {
        struct pollfd pfd = {p->lfd, POLLIN, 0};
        struct peer_conn *pc;
        int fd;

        if (poll(&pfd, 1, 100) <= 0)
            continue;
        fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            continue;
        /* Back to blocking; all waits go through poll with short timeouts. */
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        __atomic_add_fetch(&p->accepted, 1, __ATOMIC_SEQ_CST);
        pc = malloc(sizeof *pc);
        if (!pc) {
            close(fd);
            continue;
        }
        pc->p = p;
        pc->fd = fd;
        pthread_mutex_lock(&pv->mu);
        if (pv->nconn >= PEER_MAX_CONN ||
            pthread_create(&pv->conns[pv->nconn], NULL, peer_conn_main, pc) != 0) {
            pthread_mutex_unlock(&pv->mu);
            close(fd);
            free(pc);
            continue;
        }
        pv->nconn++;
        pthread_mutex_unlock(&pv->mu);
    }
    return NULL;
}

void
h_peer_start(struct h_peer *p, enum h_peer_mode mode, int v6)
{
    const char *greeting = p->greeting; /* may be set by the caller before start */
    struct peer_priv *pv;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int one = 1;

    signal(SIGPIPE, SIG_IGN);
    memset(p, 0, sizeof *p);
    p->greeting = greeting;
    p->mode = mode;
    p->v6 = v6;
    memset(&ss, 0, sizeof ss);
    if (v6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_addr = in6addr_loopback;
        sl = sizeof *s6;
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *s4;
    }
    p->lfd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(p->lfd >= 0);
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&ss, sl), 0);
    assert_int_equal(listen(p->lfd, 512), 0);
    sl = sizeof ss;
    assert_int_equal(getsockname(p->lfd, (struct sockaddr *)&ss, &sl), 0);
    p->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    pv = calloc(1, sizeof *pv);
    assert_non_null(pv);
    pthread_mutex_init(&pv->mu, NULL);
    p->priv = pv;
    assert_int_equal(pthread_create(&pv->acceptor, NULL, peer_accept_main, p), 0);
}

void
h_peer_stop(struct h_peer *p)
{
    struct peer_priv *pv = p->priv;

    if (!pv)
        return;
    __atomic_store_n(&pv->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(pv->acceptor, NULL);
    /* The acceptor is gone, so nconn no longer changes. */
    for (int i = 0; i < pv->nconn; i++)
        pthread_join(pv->conns[i], NULL);
    close(p->lfd);
    p->lfd = -1;
    pthread_mutex_destroy(&pv->mu);
    free(pv);
    p->priv = NULL;
}

void
h_peer_set_mode(struct h_peer *p, enum h_peer_mode mode)
{
    __atomic_store_n(&p->mode, mode, __ATOMIC_SEQ_CST);
}

int
h_peer_eofs(struct h_peer *p)
{
    struct peer_priv *pv = p->priv;
    return __atomic_load_n(&pv->eofs, __ATOMIC_SEQ_CST);
}

int
h_peer_wait_eofs(struct h_peer *p, int n, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    int got;

    for (;;) {
        got = h_peer_eofs(p);
        if (got >= n || h_now_ms() > deadline)
            return got;
        h_sleep_ms(10);
    }
}

size_t
h_peer_wait_bytes(struct h_peer *p, size_t n, int timeout_ms)
{
    long long deadline = h_now_ms() + timeout_ms;
    size_t got;

    for (;;) {
        got = __atomic_load_n(&p->bytes, __ATOMIC_SEQ_CST);
        if (got >= n || h_now_ms() > deadline)
            return got;
        h_sleep_ms(10);
    }
}

int
h_tcp_connect(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        fprintf(stderr, "connect 127.0.0.1:%d: %s\n", port, strerror(errno));
        close(fd);
        fail();
    }
    return fd;
}

/* ---- tracked resources ---- */

#define TRACK_MAX 1024
static struct sockd_client *tracked_clients[TRACK_MAX];
static struct h_peer *tracked_peers[TRACK_MAX];

struct sockd_client *
h_client_auto(struct h_daemon *d)
{
    struct sockd_client *c = h_client(d);

    for (int i = 0; i < TRACK_MAX; i++)
        if (!tracked_clients[i]) {
            tracked_clients[i] = c;
            return c;
        }
    sockd_client_close(c);
    fprintf(stderr, "h_client_auto: more than %d tracked clients\n", TRACK_MAX);
    fail();
    return NULL;
}

void
h_client_close(struct sockd_client *c)
{
    for (int i = 0; i < TRACK_MAX; i++)
        if (tracked_clients[i] == c)
            tracked_clients[i] = NULL;
    sockd_client_close(c);
}

struct h_peer *
h_peer_auto(enum h_peer_mode mode, int v6)
{
    struct h_peer *p = calloc(1, sizeof *p);

    assert_non_null(p);
    for (int i = 0; i < TRACK_MAX; i++)
        if (!tracked_peers[i]) {
            tracked_peers[i] = p;
            h_peer_start(p, mode, v6);
            return p;
        }
    free(p);
    fail();
    return NULL;
}

void
h_daemon_kill(struct h_daemon *d)
{
    int status;

    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, &status, 0);
        d->pid = 0;
    }
    if (d->dir[0])
        remove_dir(d);
    d->dir[0] = 0;
}

void
h_cleanup(void)
{
    for (int i = 0; i < TRACK_MAX; i++)
        if (tracked_clients[i]) {
            sockd_client_close(tracked_clients[i]);
            tracked_clients[i] = NULL;
        }
    for (int i = 0; i < TRACK_MAX; i++)
        if (tracked_peers[i]) {
            h_peer_stop(tracked_peers[i]);
            free(tracked_peers[i]);
            tracked_peers[i] = NULL;
        }
}

int
h_teardown(void **state)
{
    (void)state;
    h_cleanup();
    return 0;
}

int
h_asan_daemon(pid_t pid)
{
    char path[64], line[256];
    long long kib = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %lld kB", &kib) == 1)
            break;
    fclose(f);
    return kib > (1LL << 30); /* > 1 TiB */
}
