/*
 * Integration tests: configuration (sockd -t, SIGHUP reload), the access policy end to end,
 * connect rewrites, the configurable limits, fd passing (detach / attach / pipe) and hand-off
 * (give / take), through a real sockd against loopback peers (127.0.0.0/8 only).
 *
 * Built on tc.h; the calls go through libsockd-client (fds ride with them). Every wait is
 * bounded, every loop has a fixed bound. Daemons, clients, peers, raw fds, child processes and
 * the test DNS server made by a test are tracked and released by the per-test teardown, so a
 * failing test does not leak into the next one.
 *
 * Needs SOCKD_BIN; SOCKD_SRCDIR (the source tree) for the check of etc/sockd.conf.
 */
#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "dnsd.h"
#include "tc.h"

/* ------------------------------------------------------------------------ */
/* tracked resources, released by t_cleanup (with tc_cleanup)                */

#define TRK 64
static pid_t trk_child[8];
static struct dnsd *trk_dns[4];
static char trk_dir[4][256];

/* Events read while waiting for another one, per client, in arrival order. */
static struct {
    struct sockd_client *c;
    json_t *msgs;
} stash[TRK];

/* Stop the test's daemon, asserting a clean exit (SIGTERM, status 0, socket file removed). */
static void
daemon_end_(struct h_daemon *d)
{
    /* Clients of the test first, so the daemon has nothing to flush to them. */
    h_cleanup();
    daemon_stop_(d);
}
#define daemon_end(...) (TC_AT(), daemon_end_(__VA_ARGS__))

static struct dnsd *
dns_new(void)
{
    struct dnsd *n = calloc(1, sizeof *n);
    EXPECT_TRUE(n != NULL, "n");
    for (int i = 0; i < 4; i++)
        if (!trk_dns[i]) {
            EXPECT_INT(dnsd_start(n), 0, "dnsd_start");
            trk_dns[i] = n;
            return n;
        }
    FAIL("too many dns servers");
    return NULL;
}

static void
track_child(pid_t pid)
{
    for (int i = 0; i < 8; i++)
        if (trk_child[i] <= 0) {
            trk_child[i] = pid;
            return;
        }
}

/* Wait (bounded) for a child; its wait status, or -1 if it had to be killed. */
static int
child_wait(pid_t pid, int ms)
{
    long long deadline = now_ms() + ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = -1;
            break;
        }
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            status = -1;
            break;
        }
        h_sleep_ms(10);
    }
    for (int i = 0; i < 8; i++)
        if (trk_child[i] == pid)
            trk_child[i] = 0;
    return status;
}

static void
rm_tree_flat(const char *dir)
{
    char cmd[1100];
    if (!dir[0])
        return;
    /* Only our own mkdtemp directories under /tmp, flat. */
    if (strncmp(dir, "/tmp/sockd-del-", 15) != 0)
        return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* A fresh temp directory (removed by the teardown). */
static const char *
tmpdir_new(void)
{
    for (int i = 0; i < 4; i++)
        if (!trk_dir[i][0]) {
            snprintf(trk_dir[i], sizeof trk_dir[i], "/tmp/sockd-del-XXXXXX");
            EXPECT_TRUE(mkdtemp(trk_dir[i]) != NULL, "mkdtemp: %s", strerror(errno));
            return trk_dir[i];
        }
    FAIL("too many temp dirs");
    return NULL;
}

static int
t_cleanup(void **state)
{
    (void)state;
    for (int i = 0; i < TRK; i++)
        if (stash[i].c) {
            json_decref(stash[i].msgs);
            stash[i].c = NULL;
            stash[i].msgs = NULL;
        }
    h_cleanup();
    for (int i = 0; i < 8; i++)
        if (trk_child[i] > 0) {
            kill(trk_child[i], SIGKILL);
            waitpid(trk_child[i], NULL, 0);
            trk_child[i] = 0;
        }
    tc_cleanup();
    for (int i = 0; i < 4; i++)
        if (trk_dns[i]) {
            dnsd_stop(trk_dns[i]);
            free(trk_dns[i]);
            trk_dns[i] = NULL;
        }
    for (int i = 0; i < 4; i++) {
        rm_tree_flat(trk_dir[i]);
        trk_dir[i][0] = 0;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* calls                                                                     */

/* Call; assert a result; return it (caller decrefs). */
static json_t *
call_ok_(struct sockd_client *c, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *res = NULL, *err = NULL;
    int rc;
    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    rc = sockd_client_call(c, method, params, &res, &err, H_TIMEOUT_MS);
    if (rc != 0) {
        char p[800];
        snprintf(p, sizeof p, "%s", jd(params));
        json_decref(params);
        FAIL("%s %s: expected a result, got rc %d (%s) error %s", method, p, rc,
             rc < 0 ? strerror(errno) : "-", jd(err));
    }
    json_decref(params);
    return res;
}
#define OK(...) (TC_AT(), call_ok_(__VA_ARGS__))
#define OKV(...) json_decref(OK(__VA_ARGS__))

/* Call; assert an error response with code; if dkey, assert data[dkey] == dval. Returns the error
 * object (caller decrefs) when keep, else NULL. */
static json_t *
call_err_(int keep, struct sockd_client *c, int code, const char *dkey, const char *dval,
          const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *res = NULL, *err = NULL;
    char p[800];
    int rc, got;

    va_start(ap, fmt);
    params = vparams(fmt, ap);
    va_end(ap);
    snprintf(p, sizeof p, "%s", jd(params));
    rc = sockd_client_call(c, method, params, &res, &err, H_TIMEOUT_MS);
    json_decref(params);
    if (rc != 1)
        FAIL("%s %s: expected error %d, got rc %d (%s) result %s", method, p, code, rc,
             rc < 0 ? strerror(errno) : "-", jd(res));
    got = sockd_client_error_code(err);
    if (got != code)
        FAIL("%s %s: expected error %d, got %s", method, p, code, jd(err));
    if (dkey) {
        json_t *data = json_object_get(err, "data");
        const char *v = json_string_value(json_object_get(data, dkey));
        if (!v || strcmp(v, dval) != 0)
            FAIL("%s %s: expected error data.%s \"%s\", got %s", method, p, dkey, dval, jd(err));
    }
    if (keep)
        return err;
    json_decref(err);
    return NULL;
}
#define ERR(...) (TC_AT(), call_err_(0, __VA_ARGS__))
#define ERRK(...) (TC_AT(), call_err_(1, __VA_ARGS__))

/* A call with fds: send_fd (>= 0) rides with the request; *recv_fd gets the one that rode with
 * the response (-1 if none). params is stolen. Returns 0 (result) or 1 (error); fails on I/O. */
static int
call_fd_(struct sockd_client *c, const char *method, json_t *params, int send_fd, json_t **res,
         json_t **err, int *recv_fd)
{
    int rc, rfd = -1;
    *res = *err = NULL;
    rc = sockd_client_call_fd(c, method, params, send_fd, res, err, &rfd, H_TIMEOUT_MS);
    json_decref(params);
    if (rfd >= 0)
        track_fd(rfd);
    if (recv_fd)
        *recv_fd = rfd;
    else if (rfd >= 0)
        close_fd_(rfd);
    if (rc < 0)
        FAIL("%s: no response (%s)", method, strerror(errno));
    return rc;
}
#define CALL_FD(...) (TC_AT(), call_fd_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* notifications                                                             */

static json_t *
stash_of(struct sockd_client *c)
{
    for (int i = 0; i < TRK; i++)
        if (stash[i].c == c)
            return stash[i].msgs;
    for (int i = 0; i < TRK; i++)
        if (!stash[i].c) {
            stash[i].c = c;
            stash[i].msgs = json_array();
            return stash[i].msgs;
        }
    FAIL("too many clients with stashed events");
    return NULL;
}

/* A notification m1 (or m2; m1 NULL: any) for sock (0: any socket)? */
static bool
ev_is(const json_t *m, const char *m1, const char *m2, long long sock)
{
    const char *mm = json_string_value(json_object_get(m, "method"));
    if (!mm)
        return false;
    if (m1 && strcmp(mm, m1) != 0 && (!m2 || strcmp(mm, m2) != 0))
        return false;
    if (sock == 0)
        return true;
    return json_integer_value(json_object_get(json_object_get(m, "params"), "socket")) == sock;
}

/* The next notification m1 (or m2) for sock within ms: the whole message; NULL if none came.
 * Others read meanwhile are kept for later waits, in order. */
static json_t *
ev_next(struct sockd_client *c, const char *m1, const char *m2, long long sock, int ms)
{
    json_t *st = stash_of(c), *m;
    long long deadline = now_ms() + ms;
    size_t i;

    json_array_foreach(st, i, m)
    {
        if (ev_is(m, m1, m2, sock)) {
            json_incref(m);
            json_array_remove(st, i);
            return m;
        }
    }
    for (int guard = 0; guard < 100000; guard++) {
        long long left = deadline - now_ms();
        m = sockd_client_next_event(c, left > 0 ? (int)left : 0);
        if (!m)
            return NULL;
        if (ev_is(m, m1, m2, sock))
            return m;
        json_array_append_new(st, m);
    }
    return NULL;
}

/* Wait for notification m1 (or m2) of sock; assert it came; return the whole message. */
static json_t *
ev_wait_(struct sockd_client *c, const char *m1, const char *m2, long long sock, int ms)
{
    json_t *m = ev_next(c, m1, m2, sock, ms);
    if (!m)
        FAIL("no %s%s%s for socket %lld within %d ms; other events seen: %s", m1, m2 ? " or " : "",
             m2 ? m2 : "", sock, ms, jd(stash_of(c)));
    return m;
}
#define ev_wait(...) (TC_AT(), ev_wait_(__VA_ARGS__))

/* Wait for notification method of sock; assert it came; return its params (caller decrefs). */
static json_t *
ev_params_(struct sockd_client *c, const char *method, long long sock, int ms)
{
    json_t *m = ev_wait_(c, method, NULL, sock, ms);
    json_t *p = json_object_get(m, "params");
    if (!json_is_object(p))
        FAIL("%s without a params object: %s", method, jd(m));
    json_incref(p);
    json_decref(m);
    return p;
}
#define EV(c, method, sock) (TC_AT(), ev_params_((c), (method), (sock), H_TIMEOUT_MS))
#define EVT(...) (TC_AT(), ev_params_(__VA_ARGS__))

/* No notification for sock (0: any) within ms. */
static void
ev_none_(struct sockd_client *c, long long sock, int ms)
{
    json_t *m = ev_next(c, NULL, NULL, sock, ms);
    if (m)
        FAIL("unexpected notification %s", jd(m));
}
#define EV_NONE(...) (TC_AT(), ev_none_(__VA_ARGS__))

/* ------------------------------------------------------------------------ */
/* raw sockets of the test                                                   */

static int
sa4(const char *ip, int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, ip, &sa->sin_addr) == 1 ? 0 : -1;
}

static int
remote_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &l) != 0)
        return -1;
    return sa_port(&ss);
}

/* A TCP (or UDP) socket bound to ip:port (0: any); listening when tcp. rcvbuf > 0 sets
 * SO_RCVBUF first (inherited by accepted sockets). Tracked. */
static int
raw_bind_(int type, const char *ip, int port, int rcvbuf)
{
    struct sockaddr_in sa;
    int one = 1, fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        FAIL("socket: %s", strerror(errno));
    track_fd(fd);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    EXPECT_INT(sa4(ip, port, &sa), 0, "address %s", ip);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        FAIL("bind %s:%d: %s", ip, port, strerror(errno));
    if (type == SOCK_STREAM && listen(fd, 16) != 0)
        FAIL("listen: %s", strerror(errno));
    return fd;
}
#define raw_listen(ip, port, rcvbuf) (TC_AT(), raw_bind_(SOCK_STREAM, (ip), (port), (rcvbuf)))
#define raw_udp(ip) (TC_AT(), raw_bind_(SOCK_DGRAM, (ip), 0, 0))

/* Accept one connection on the test's listener (tracked); fails after H_TIMEOUT_MS. */
static int
accept_one_(int lfd)
{
    int fd = raw_accept(lfd, H_TIMEOUT_MS);
    if (fd < 0)
        FAIL("no connection on the test's listener within %d ms", H_TIMEOUT_MS);
    return fd;
}
#define accept_one(...) (TC_AT(), accept_one_(__VA_ARGS__))

static int
raw_connect_(const char *ip, int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        FAIL("socket: %s", strerror(errno));
    track_fd(fd);
    EXPECT_INT(sa4(ip, port, &sa), 0, "address %s", ip);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        FAIL("connect %s:%d: %s", ip, port, strerror(errno));
    return fd;
}
#define raw_connect(...) (TC_AT(), raw_connect_(__VA_ARGS__))

/* Wait for the end of a stream (data is discarded): 0 on EOF, an errno on error, -1 timeout. */
static int
wait_eof(int fd, int ms)
{
    char buf[4096];
    long long deadline = now_ms() + ms;
    for (;;) {
        long long left = deadline - now_ms();
        ssize_t r;
        if (left <= 0 || !raw_readable_(fd, (int)left))
            return -1;
        r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (r == 0)
            return 0;
        if (r < 0 && errno != EAGAIN && errno != EINTR)
            return errno;
    }
}

/* A TCP port with nothing listening on ip (bound and released). */
static int
free_port(const char *ip)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port;
    EXPECT_TRUE(fd >= 0, "socket: %s", strerror(errno));
    EXPECT_INT(sa4(ip, 0, &sa), 0, "address %s", ip);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind %s: %s", ip, strerror(errno));
    port = local_port_(fd);
    close(fd);
    return port;
}

/* A raw connection to the control socket (no client library). */
static int
unix_connect(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0, "socket: %s", strerror(errno));
    track_fd(fd);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    EXPECT_TRUE(strlen(path) < sizeof sa.sun_path, "path %s", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);
    EXPECT_INT(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "connect %s: %s", path,
               strerror(errno));
    return fd;
}

/* ------------------------------------------------------------------------ */
/* files, identities, sockd -t                                               */

static void
write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    EXPECT_TRUE(f != NULL, "fopen %s: %s", path, strerror(errno));
    EXPECT_TRUE(fputs(text, f) >= 0, "write %s", path);
    EXPECT_INT(fclose(f), 0, "close %s: %s", path, strerror(errno));
}

/* The whole file, NUL-terminated ("" when missing); malloc'ed. */
static char *
slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[8192];
    size_t n;
    EXPECT_TRUE(m != NULL, "m");
    while (f && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        fwrite(chunk, 1, n, m);
    if (f)
        fclose(f);
    fclose(m);
    return buf;
}

static int
count_str(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    return n;
}

/* Wait (bounded) until the daemon log holds needle at least n times; returns the count. */
static int
wait_log(struct h_daemon *d, const char *needle, int n, int ms)
{
    long long deadline = now_ms() + ms;
    int got;
    for (;;) {
        char *log = slurp(d->log);
        got = count_str(log, needle);
        free(log);
        if (got >= n || now_ms() > deadline)
            return got;
        h_sleep_ms(20);
    }
}

/* "line N" in text, not followed by another digit. */
static bool
has_line_no(const char *text, int n)
{
    char pat[32];
    snprintf(pat, sizeof pat, "line %d", n);
    for (const char *p = text; (p = strstr(p, pat)) != NULL; p += strlen(pat)) {
        char next = p[strlen(pat)];
        if (next < '0' || next > '9')
            return true;
    }
    return false;
}

static const char *
my_group(void)
{
    static char name[256];
    struct group *g = getgrgid(getgid());
    EXPECT_TRUE(g != NULL, "g");
    snprintf(name, sizeof name, "%s", g->gr_name);
    return name;
}

static const char *
my_user(void)
{
    static char name[256];
    struct passwd *pw = getpwuid(getuid());
    EXPECT_TRUE(pw != NULL, "pw");
    snprintf(name, sizeof name, "%s", pw->pw_name);
    return name;
}

/* Run $SOCKD_BIN -t -c path; its stdout and stderr (malloc'ed) and exit status (-1: killed or
 * signalled). */
static int
run_check(const char *path, char **out, char **err)
{
    const char *bin = getenv("SOCKD_BIN");
    const char *dir = tmpdir_new();
    char fo[512], fe[512];
    int status = 0;
    pid_t pid;

    EXPECT_TRUE(bin != NULL, "SOCKD_BIN is not set");
    snprintf(fo, sizeof fo, "%s/stdout", dir);
    snprintf(fe, sizeof fe, "%s/stderr", dir);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    EXPECT_TRUE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int o = open(fo, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(fe, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int nul = open("/dev/null", O_RDONLY);
        if (o < 0 || e < 0 || nul < 0)
            _exit(126);
        dup2(nul, 0);
        dup2(o, 1);
        dup2(e, 2);
        for (int i = 3; i < 1024; i++)
            close(i);
        execl(bin, bin, "-t", "-c", path, (char *)NULL);
        _exit(127);
    }
    track_child(pid);
    status = child_wait(pid, H_TIMEOUT_MS);
    *out = slurp(fo);
    *err = slurp(fe);
    /* this directory is reused by the next run of the same test: free its slot */
    for (int i = 0; i < 4; i++)
        if (trk_dir[i] == dir) {
            rm_tree_flat(trk_dir[i]);
            trk_dir[i][0] = 0;
        }
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

/* ------------------------------------------------------------------------ */
/* sockd sockets                                                             */

static long long
open_sock_(struct sockd_client *c, const char *type, int ipv6)
{
    json_t *r = call_ok_(c, "socket.open", "{s:s, s:b}", "type", type, "ipv6", ipv6);
    long long s = jint_(r, "socket");
    json_decref(r);
    EXPECT_TRUE(s > 0, "socket.open: handle %lld", s);
    return s;
}
#define open_sock(c, type) (TC_AT(), open_sock_((c), (type), 0))
#define open_sock6(c, type) (TC_AT(), open_sock_((c), (type), 1))

static json_t *
info_(struct sockd_client *c, long long s)
{
    return call_ok_(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
}
#define info(...) (TC_AT(), info_(__VA_ARGS__))

/* socket.info of s on c says state. */
static void
expect_sock_state_(struct sockd_client *c, long long s, const char *state)
{
    json_t *r = info_(c, s);
    EXPECT_STR(jstr_(r, "state"), state, "socket %lld: %s", s, jd(r));
    json_decref(r);
}
#define expect_sock_state(...) (TC_AT(), expect_sock_state_(__VA_ARGS__))

/* socket.connect {address, port?} of s (port < 0: in the address) -> the whole response's
 * result or error: returns 0 result, 1 error (*err kept). */
static int
connect_call(struct sockd_client *c, long long s, const char *address, int port, json_t **err)
{
    json_t *params = json_pack("{s:I, s:s}", "socket", (json_int_t)s, "address", address);
    json_t *res = NULL;
    int rc;
    if (port >= 0)
        json_object_set_new(params, "port", json_integer(port));
    *err = NULL;
    rc = sockd_client_call(c, "socket.connect", params, &res, err, H_TIMEOUT_MS);
    json_decref(params);
    if (rc == 0 && (!json_is_object(res) || json_object_size(res) != 0)) {
        fprintf(stderr, "socket.connect result is not {}: %s\n", jd(res));
        rc = 2;
    }
    json_decref(res);
    return rc;
}

/* A connect to a literal the policy denies: -32004 policy_denied, the socket stays "open". */
static void
connect_denied_(struct sockd_client *c, int ipv6, const char *address, int port)
{
    long long s = open_sock_(c, "tcp", ipv6);
    json_t *err = NULL;
    int rc = connect_call(c, s, address, port, &err);
    const char *reason = json_string_value(json_object_get(json_object_get(err, "data"), "reason"));
    if (rc != 1 || sockd_client_error_code(err) != -32004 || !reason ||
        strcmp(reason, "policy_denied") != 0)
        FAIL("connect to %s port %d: expected -32004 policy_denied, got rc %d %s", address, port,
             rc, jd(err));
    json_decref(err);
    expect_sock_state_(c, s, "open");
    /* the denial is not followed by any notification */
    ev_none_(c, s, 50);
    json_decref(call_ok_(c, "socket.close", "{s:I}", "socket", (json_int_t)s));
}
#define connect_denied(c, address, port) (TC_AT(), connect_denied_((c), 0, (address), (port)))
#define connect_denied6(c, address) (TC_AT(), connect_denied_((c), 1, (address), -1))

/* Connect s and wait for socket.connected (a socket.closed fails); returns its params. */
static json_t *
connect_sock_(struct sockd_client *c, long long s, const char *address, int port)
{
    json_t *err = NULL, *m, *p;
    int rc = connect_call(c, s, address, port, &err);
    if (rc != 0)
        FAIL("connect to %s port %d: expected {}, got rc %d %s", address, port, rc, jd(err));
    m = ev_wait_(c, "socket.connected", "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr_(m, "method"), "socket.connected", "connect to %s port %d: %s", address, port,
               jd(m));
    p = json_incref(json_object_get(m, "params"));
    json_decref(m);
    return p;
}
#define connect_sock(...) (TC_AT(), connect_sock_(__VA_ARGS__))

static long long
connect_ok_(struct sockd_client *c, const char *address, int port)
{
    long long s = open_sock_(c, "tcp", strchr(address, '[') != NULL);
    json_decref(connect_sock_(c, s, address, port));
    return s;
}
#define connect_ok(...) (TC_AT(), connect_ok_(__VA_ARGS__))

/* Send text on s through the daemon and receive its echo (the peer echoes). */
static void
echo_(struct sockd_client *c, long long s, const char *text)
{
    json_t *r = call_ok_(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", text);
    json_t *ev;
    size_t n;
    unsigned char *d;
    EXPECT_INT(jint_(r, "queued"), strlen(text), "socket.send queued: %s", jd(r));
    json_decref(r);
    ev = ev_params_(c, "socket.sent", s, H_TIMEOUT_MS);
    EXPECT_INT(jint_(ev, "bytes"), strlen(text), "socket.sent: %s", jd(ev));
    json_decref(ev);
    json_decref(call_ok_(c, "socket.recv", "{s:I, s:i, s:i}", "socket", (json_int_t)s, "length",
                         (int)strlen(text), "timeout_ms", H_TIMEOUT_MS));
    ev = ev_params_(c, "socket.received", s, H_TIMEOUT_MS);
    d = unb64_(jstr_(ev, "data"), &n);
    if (n != strlen(text) || memcmp(d, text, n) != 0)
        FAIL("echo of \"%s\" came back as %s", text, jd(ev));
    free(d);
    json_decref(ev);
}
#define echo(...) (TC_AT(), echo_(__VA_ARGS__))

static long long
hello_limit_(struct sockd_client *c, const char *k)
{
    json_t *r = call_ok_(c, "daemon.hello", NULL);
    long long v = jint_(jget_(r, "limits"), k);
    json_decref(r);
    return v;
}
#define hello_limit(...) (TC_AT(), hello_limit_(__VA_ARGS__))

static long long
stats_sockets_total_(struct sockd_client *c)
{
    json_t *r = call_ok_(c, "daemon.stats", NULL);
    long long v = jint_(jget_(r, "sockets"), "total");
    json_decref(r);
    return v;
}
#define stats_sockets_total(...) (TC_AT(), stats_sockets_total_(__VA_ARGS__))

/* ======================================================================== */
/* 1. sockd -t                                                               */

static void
test_check_config_good(void **state)
{
    (void)state;
    const char *src = getenv("SOCKD_SRCDIR");
    char *out, *err, path[600], conf[4096];
    const char *dir;
    int st;

    if (src && *src) {
        snprintf(path, sizeof path, "%s/etc/sockd.conf", src);
        EXPECT_INT(access(path, R_OK), 0, "%s is not readable", path);
        st = run_check(path, &out, &err);
        EXPECT_INT(st, 0, "sockd -t -c %s exited %d; stderr: %s", path, st, err);
        free(out);
        free(err);
    } else {
        fprintf(stderr, "  (SOCKD_SRCDIR not set: etc/sockd.conf not checked)\n");
    }

    /* every directive of sockd.conf(5), loopback values */
    dir = tmpdir_new();
    snprintf(conf, sizeof conf,
             "# every directive\n"
             "listen %s/unused.sock\n"
             "socket-mode 0660\n"
             "socket-group %s\n"
             "max-clients 17\n"
             "max-sockets-per-client 33\n"
             "max-send-buffer 2M\n"
             "max-message 1M\n"
             "max-pending-accepts 9\n"
             "accept-timeout 1500ms\n"
             "resolver 127.0.0.1:53 [::1]:53  # name servers\n"
             "resolve-timeout 3s\n"
             "log-level debug                # error warning info debug\n"
             "log-flags tcp tls udp local\n"
             "\n"
             "policy-default allow\n"
             "deny    connect 169.254.0.0/16\n"
             "allow   connect 127.0.0.0/8 port 443 user %s\n"
             "deny    bind    0.0.0.0/0 port 1-1023\n"
             "deny    sendto  ::/0 port 53 group %s\n"
             "allow   connect unix /run/app/\n"
             "rewrite connect 127.0.0.10:80 to 127.0.0.1:8080\n",
             dir, my_group(), my_user(), my_group());
    snprintf(path, sizeof path, "%s/full.conf", dir);
    write_file(path, conf);
    st = run_check(path, &out, &err);
    EXPECT_INT(st, 0, "sockd -t -c (every directive) exited %d; stderr: %s", st, err);
    EXPECT_TRUE(strstr(err, "line") == NULL, "stderr of a good file names a line: %s", err);
    free(out);
    free(err);

    /* the same file runs, and the daemon applies it */
    struct h_daemon *d = daemon_new(conf);
    struct stat sb;
    EXPECT_INT(stat(d->sock, &sb), 0, "stat %s: %s", d->sock, strerror(errno));
    EXPECT_INT((sb.st_mode & 0777), 0660, "control socket mode %o, expected 0660",
               (unsigned)(sb.st_mode & 0777));
    EXPECT_INT(sb.st_gid, getgid(), "control socket group %u, expected %u (socket-group %s)",
               (unsigned)sb.st_gid, (unsigned)getgid(), my_group());
    struct sockd_client *c = h_client_auto(d);
    json_t *r = OK(c, "daemon.hello", NULL), *lim = jget(r, "limits");
    EXPECT_INT(jint(lim, "max_clients"), 17, "limits %s", jd(lim));
    EXPECT_INT(jint(lim, "max_sockets_per_client"), 33, "limits %s", jd(lim));
    EXPECT_INT(jint(lim, "max_send_buffer"), 2 * MIB, "limits %s", jd(lim));
    EXPECT_INT(jint(lim, "max_message"), MIB, "limits %s", jd(lim));
    EXPECT_INT(jint(lim, "max_pending_accepts"), 9, "limits %s", jd(lim));
    EXPECT_INT(jint(lim, "accept_timeout_ms"), 1500, "limits %s", jd(lim));
    json_decref(r);
    daemon_end(d);
}

static void
test_check_config_bad(void **state)
{
    (void)state;
    static const struct {
        const char *what, *text;
        int line, not_line;
    } bad[] = {
        {"unknown directive", "max-clients 10\n# a comment\n\nfrobnicate yes\nmax-clients 0\n", 4,
         5},
        {"unknown directive (near miss)", "max-client 10\n", 1, 0},
        {"bad size (unit)", "log-level info\nmax-send-buffer 64Q\nmax-message 1X\n", 2, 3},
        {"bad size (no number)", "max-message M\n", 1, 0},
        {"bad size (too small)", "max-clients 3\nmax-message 1\n", 2, 0},
        {"bad time", "accept-timeout 10h\n", 1, 0},
        {"bad CIDR (octet)",
         "policy-default deny\nallow connect 127.0.0.0/8\n\ndeny connect 10.0.0.256/8\n", 4, 0},
        {"bad CIDR (prefix length)", "deny connect 127.0.0.0/33\n", 1, 0},
        {"bad CIDR (host bits)", "allow connect 127.0.0.1/32\ndeny connect 10.1.0.0/8\n", 2, 0},
        {"bad CIDR (IPv6 prefix)", "deny connect 2001:db8::/129\n", 1, 0},
        {"bad CIDR (not an address)", "deny connect localhost/8\n", 1, 0},
        {"unknown user", "max-clients 5\ndeny connect * port 80 user sockd-no-such-user-4711\n", 2,
         0},
        {"unknown group", "deny connect * group sockd-no-such-group-4711\n", 1, 0},
    };
    const char *dir = tmpdir_new();
    char path[600];
    int failures = 0;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *out, *err;
        int st;
        snprintf(path, sizeof path, "%s/bad%zu.conf", dir, i);
        write_file(path, bad[i].text);
        st = run_check(path, &out, &err);
        if (st <= 0 || !has_line_no(err, bad[i].line) ||
            (bad[i].not_line && has_line_no(err, bad[i].not_line))) {
            print_error("%s: sockd -t exited %d (expected non-zero) with stderr \"%s\" "
                        "(expected \"line %d\" only)\n",
                        bad[i].what, st, err, bad[i].line);
            failures++;
        }
        free(out);
        free(err);
    }
    /* a missing file */
    {
        char *out, *err;
        int st;
        snprintf(path, sizeof path, "%s/no-such.conf", dir);
        st = run_check(path, &out, &err);
        if (st <= 0) {
            print_error("missing config: sockd -t exited %d\n", st);
            failures++;
        }
        free(out);
        free(err);
    }
    EXPECT_INT(failures, 0, "%d bad files not reported as expected", failures);
}

/* ======================================================================== */
/* 2. policy end to end                                                      */

static void
test_policy_cidr(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0);
    int l2 = raw_listen("127.0.0.2", 0, 0), port2 = local_port(l2);
    struct h_daemon *d = daemon_new("deny connect 127.0.0.2/32\n");
    struct sockd_client *c = h_client_auto(d);
    json_t *err;
    long long s;

    connect_denied(c, "127.0.0.2", port2);
    connect_denied(c, "127.0.0.2", p->port);
    EXPECT_TRUE(!raw_readable(l2, 200), "a denied connect reached 127.0.0.2:%d", port2);

    /* a denied call leaves the socket as it was: the same handle can connect elsewhere */
    s = open_sock(c, "tcp");
    EXPECT_TRUE(connect_call(c, s, "127.0.0.2", port2, &err) == 1 &&
                    sockd_client_error_code(err) == -32004,
                "denied connect: %s", jd(err));
    json_decref(err);
    json_t *ev = connect_sock(c, s, "127.0.0.1", p->port);
    check_addr(ev, "remote", "127.0.0.1", p->port);
    json_decref(ev);
    echo(c, s, "allowed by the policy");
    EXPECT_TRUE(p->accepted == 1, "the peer accepted %d connections", p->accepted);

    /* an adopted socket is checked too: a connection the test made to a denied address */
    {
        int fd = raw_connect("127.0.0.2", port2), acc = accept_one(l2), rc;
        json_t *res;
        (void)acc;
        rc = CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", "tcp"), fd, &res, &err, NULL);
        EXPECT_TRUE(rc == 1 && sockd_client_error_code(err) == -32004,
                    "attach of a socket connected to a denied address: result %s error %s", jd(res),
                    jd(err));
        json_decref(res);
        json_decref(err);
    }

    /* each denial is logged once, with the client's uid and pid */
    char want[128], *log;
    int n;
    snprintf(want, sizeof want, "(uid %d pid %d)", (int)getuid(), (int)getpid());
    wait_log(d, "policy: ", 4, 2000);
    log = slurp(d->log);
    n = count_str(log, "policy: ");
    EXPECT_TRUE(n == 4 && count_str(log, want) >= 4,
                "expected 4 denials logged with \"%s\", log has %d:\n%s", want, n, log);
    free(log);
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_policy_port(void **state)
{
    (void)state;
    struct h_peer *p1 = peer_new(H_ECHO, 0), *p2 = peer_new(H_ECHO, 0);
    char conf[256];
    snprintf(conf, sizeof conf, "deny connect * port %d\n", p1->port);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    connect_denied(c, "127.0.0.1", p1->port);
    long long s = connect_ok(c, "127.0.0.1", p2->port);
    echo(c, s, "other port");
    EXPECT_TRUE(p1->accepted == 0, "the denied port accepted %d connections", p1->accepted);
    daemon_end(d);
}

static void
test_policy_uid(void **state)
{
    (void)state;
    struct h_peer *p1 = peer_new(H_ECHO, 0), *p2 = peer_new(H_ECHO, 0), *p3 = peer_new(H_ECHO, 0);
    unsigned me = (unsigned)getuid(), other = me == 4242 ? 4243 : 4242;
    char conf[512];
    snprintf(conf, sizeof conf,
             "deny connect * port %d uid %u\n"
             "deny connect * port %d uid %u\n"
             "deny connect * port %d user %s\n",
             p1->port, me, p2->port, other, p3->port, my_user());
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    connect_denied(c, "127.0.0.1", p1->port);           /* uid <mine> */
    long long s = connect_ok(c, "127.0.0.1", p2->port); /* uid <someone else's> */
    echo(c, s, "not my uid");
    connect_denied(c, "127.0.0.1", p3->port); /* user <my name> */
    EXPECT_TRUE(p1->accepted == 0 && p3->accepted == 0, "denied peers accepted %d and %d",
                p1->accepted, p3->accepted);
    daemon_end(d);
}

static void
test_policy_group(void **state)
{
    (void)state;
    struct h_peer *p1 = peer_new(H_ECHO, 0), *p2 = peer_new(H_ECHO, 0), *p3 = peer_new(H_ECHO, 0);
    unsigned gid = (unsigned)getgid(), other = gid == 4242 ? 4243 : 4242;
    char conf[512];
    snprintf(conf, sizeof conf,
             "deny connect * port %d group %s\n"
             "deny connect * port %d gid %u\n"
             "deny connect * port %d gid %u\n",
             p1->port, my_group(), p2->port, other, p3->port, gid);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    connect_denied(c, "127.0.0.1", p1->port);           /* group <my primary group> */
    long long s = connect_ok(c, "127.0.0.1", p2->port); /* a group I am not in */
    echo(c, s, "not my group");
    connect_denied(c, "127.0.0.1", p3->port); /* gid <mine> */
    EXPECT_TRUE(p1->accepted == 0 && p3->accepted == 0, "denied peers accepted %d and %d",
                p1->accepted, p3->accepted);
    daemon_end(d);
}

static void
test_policy_default_deny(void **state)
{
    (void)state;
    struct h_peer *p1 = peer_new(H_ECHO, 0), *p2 = peer_new(H_ECHO, 0);
    char conf[256];
    snprintf(conf, sizeof conf, "policy-default deny\nallow connect 127.0.0.1/32 port %d\n",
             p1->port);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    long long s = connect_ok(c, "127.0.0.1", p1->port);
    echo(c, s, "the one allowed destination");
    connect_denied(c, "127.0.0.1", p2->port);
    connect_denied(c, "127.0.0.2", p1->port);
    /* the default covers bind too */
    long long b = open_sock(c, "tcp");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s, s:i}", "socket",
        (json_int_t)b, "address", "127.0.0.1", "port", 0);
    expect_sock_state(c, b, "open");
    EXPECT_TRUE(p2->accepted == 0, "the denied peer accepted %d connections", p2->accepted);
    daemon_end(d);
}

/* listen on a never-bound socket binds to any address: the bind policy decides that too */
static void
test_policy_listen_implicit_bind(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("policy-default deny\nallow bind 127.0.0.1/32\n");
    struct sockd_client *c = h_client_auto(d);
    long long s = open_sock(c, "tcp");

    ERR(c, -32004, "reason", "policy_denied", "socket.listen", "{s:I}", "socket", (json_int_t)s);
    expect_sock_state(c, s, "open"); /* nothing bound behind the policy's back */
    OKV(c, "socket.bind", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address", "127.0.0.1",
        "port", 0);
    OKV(c, "socket.listen", "{s:I}", "socket", (json_int_t)s);
    expect_sock_state(c, s, "listening");
    daemon_end(d);
}

/* An unnamed Unix peer (a socketpair end) has no destination: any policy lets it be attached */
static void
test_attach_socketpair_under_policy(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("deny connect 10.0.0.0/8\n");
    struct sockd_client *c = h_client_auto(d);
    json_t *res = NULL, *err = NULL;
    int sv[2], rc;

    EXPECT_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0, "socketpair");
    track_fd(sv[0]);
    track_fd(sv[1]);
    rc = CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", "unix"), sv[0], &res, &err, NULL);
    EXPECT_INT(rc, 0, "socket.attach of a socketpair end: %s", jd(err));
    long long s = jint(res, "socket");
    EXPECT_STR(jstr(res, "state"), "connected", "attach result %s", jd(res));
    json_decref(res);
    raw_write(sv[1], "pair", 4);
    OKV(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 4);
    json_t *ev = EV(c, "socket.received", s);
    EXPECT_STR(jstr(ev, "data"), "cGFpcg==", "received %s", jd(ev));
    json_decref(ev);
    daemon_end(d);
}

/* log-flags: lifecycle lines for the named transports only */
static void
test_log_flags(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0);
    struct h_daemon *d = daemon_new("log-flags tcp\n");
    struct sockd_client *c = h_client_auto(d);

    long long s = connect_ok(c, "127.0.0.1", p->port);
    EXPECT_TRUE(wait_log(d, "tcp socket", 1, H_TIMEOUT_MS) >= 1,
                "no 'tcp socket ... connected' log line");
    OKV(c, "socket.close", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(wait_log(d, "tcp socket", 2, H_TIMEOUT_MS) >= 2,
                "no 'tcp socket ... closed' log line");
    long long u = open_sock(c, "udp");
    OKV(c, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)u, "address", "127.0.0.1:0");
    OKV(c, "socket.close", "{s:I}", "socket", (json_int_t)u);
    OKV(c, "daemon.ping", NULL);
    char *log = slurp(d->log);
    EXPECT_INT(count_str(log, "udp socket"), 0, "udp is not in log-flags but was logged:\n%s", log);
    free(log);
    daemon_end(d);
}

static void
test_policy_bind_low_ports(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("deny bind 0.0.0.0/0 port 1-1023\n");
    struct sockd_client *c = h_client_auto(d);
    long long s = open_sock(c, "tcp"), u, v6, l;
    json_t *r;

    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s, s:i}", "socket",
        (json_int_t)s, "address", "127.0.0.1", "port", 80);
    expect_sock_state(c, s, "open");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s}", "socket", (json_int_t)s,
        "address", "127.0.0.1:1023");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:i}", "socket", (json_int_t)s,
        "port", 443); /* no address: 0.0.0.0 */
    u = open_sock(c, "udp");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s, s:i}", "socket",
        (json_int_t)u, "address", "127.0.0.1", "port", 53);
    /* binding :: also binds the IPv4 wildcard: the IPv4 rule applies */
    v6 = open_sock6(c, "tcp");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s}", "socket", (json_int_t)v6,
        "address", "[::]:80");
    ERR(c, -32004, "reason", "policy_denied", "socket.bind", "{s:I, s:s}", "socket", (json_int_t)v6,
        "address", "[::ffff:127.0.0.1]:80");

    /* port 0 is allowed */
    r = OK(c, "socket.bind", "{s:I, s:s, s:i}", "socket", (json_int_t)s, "address", "127.0.0.1",
           "port", 0);
    int port = check_addr(r, "local", "127.0.0.1", -1);
    json_decref(r);
    EXPECT_TRUE(port > 1023, "bound port %d", port);
    expect_sock_state(c, s, "bound");
    /* listen's implicit bind (port 0) is allowed */
    l = open_sock(c, "tcp");
    OKV(c, "socket.listen", "{s:I}", "socket", (json_int_t)l);
    expect_sock_state(c, l, "listening");
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_policy_sendto(void **state)
{
    (void)state;
    int r1 = raw_udp("127.0.0.1"), r2 = raw_udp("127.0.0.1");
    int p1 = local_port(r1), p2 = local_port(r2);
    char conf[256], buf[64];
    snprintf(conf, sizeof conf, "deny sendto 127.0.0.1/32 port %d\n", p1);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);
    long long u = open_sock(c, "udp");
    json_t *r;

    OKV(c, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)u, "address", "127.0.0.1");
    ERR(c, -32004, "reason", "policy_denied", "socket.sendto", "{s:I, s:s, s:s, s:i}", "socket",
        (json_int_t)u, "text", "denied", "address", "127.0.0.1", "port", p1);
    /* 0.0.0.0 as a destination is this host: the 127.0.0.1 rule applies */
    ERR(c, -32004, "reason", "policy_denied", "socket.sendto", "{s:I, s:s, s:s, s:i}", "socket",
        (json_int_t)u, "text", "denied", "address", "0.0.0.0", "port", p1);
    ERR(c, -32004, "reason", "policy_denied", "socket.sendto", "{s:I, s:s, s:s, s:i}", "socket",
        (json_int_t)u, "text", "denied", "address", "localhost", "port", p1);
    r = OK(c, "socket.sendto", "{s:I, s:s, s:s, s:i}", "socket", (json_int_t)u, "text", "allowed",
           "address", "127.0.0.1", "port", p2);
    EXPECT_INT(jint(r, "queued"), 7, "sendto result %s", jd(r));
    json_decref(r);
    EXPECT_TRUE(raw_readable(r2, H_TIMEOUT_MS), "the allowed datagram did not arrive");
    ssize_t n = recv(r2, buf, sizeof buf, 0);
    EXPECT_TRUE(n == 7 && memcmp(buf, "allowed", 7) == 0, "received %zd bytes", n);
    EXPECT_TRUE(!raw_readable(r1, 200), "a denied datagram arrived");
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

/* Other spellings of a denied address are denied too. */
static void
test_policy_bypass_spellings(void **state)
{
    (void)state;
    struct h_peer *p1 = peer_new(H_ECHO, 0), *p2 = peer_new(H_ECHO, 0);
    int l2 = raw_listen("127.0.0.2", 0, 0), port2 = local_port(l2);
    char conf[256], a[96];
    snprintf(conf, sizeof conf, "deny connect 127.0.0.2/32\ndeny connect 127.0.0.1/32 port %d\n",
             p1->port);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    /* IPv4-mapped and IPv4-compatible IPv6 on an ipv6 socket */
    snprintf(a, sizeof a, "[::ffff:127.0.0.2]:%d", port2);
    connect_denied6(c, a);
    snprintf(a, sizeof a, "[::ffff:7f00:2]:%d", port2);
    connect_denied6(c, a);
    snprintf(a, sizeof a, "[::127.0.0.2]:%d", port2);
    connect_denied6(c, a);
    snprintf(a, sizeof a, "[::ffff:127.0.0.1]:%d", p1->port);
    connect_denied6(c, a);
    /* 0.0.0.0 as a destination reaches 127.0.0.1 */
    connect_denied(c, "0.0.0.0", p1->port);
    EXPECT_TRUE(!raw_readable(l2, 200), "a denied spelling reached 127.0.0.2:%d", port2);
    EXPECT_TRUE(p1->accepted == 0, "a denied spelling reached 127.0.0.1:%d", p1->port);

    /* the mapped spelling of an allowed destination still works */
    snprintf(a, sizeof a, "[::ffff:127.0.0.1]:%d", p2->port);
    long long s = open_sock6(c, "tcp");
    json_t *ev = connect_sock(c, s, a, -1);
    json_decref(ev);
    echo(c, s, "mapped but allowed");
    daemon_end(d);
}

/* Host names: the policy is checked on every resolved address. */
static void
test_policy_host_names(void **state)
{
    (void)state;
    struct dnsd *dns = dns_new();
    struct h_peer *p = peer_new(H_ECHO, 0);
    int l2 = raw_listen("127.0.0.2", p->port, 0);
    char conf[256];
    json_t *err, *m, *ev;
    long long s;

    EXPECT_INT(dnsd_add_a(dns, "denied.test", "127.0.0.2"), 0, "dnsd_add_a denied.test 127.0.0.2");
    EXPECT_INT(dnsd_add_a(dns, "mixed.test", "127.0.0.2"), 0, "dnsd_add_a mixed.test 127.0.0.2");
    EXPECT_INT(dnsd_add_a(dns, "mixed.test", "127.0.0.1"), 0, "dnsd_add_a mixed.test 127.0.0.1");
    snprintf(conf, sizeof conf,
             "resolver 127.0.0.1:%u\nresolve-timeout 3s\ndeny connect 127.0.0.2/32\n",
             (unsigned)dns->port);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    /* the only address is denied: {} first, then socket.closed policy_denied */
    s = open_sock(c, "tcp");
    EXPECT_INT(connect_call(c, s, "denied.test", p->port, &err), 0,
               "connect to denied.test: expected {} (denial after resolution), got %s", jd(err));
    m = ev_wait(c, "socket.connected", "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_STR(jstr(m, "method"), "socket.closed", "denied.test: %s", jd(m));
    EXPECT_STR(jstr(jget(m, "params"), "reason"), "policy_denied", "denied.test closed with %s",
               jd(m));
    json_decref(m);
    EXPECT_TRUE(dnsd_name_queries(dns, "denied.test") > 0, "the resolver was not asked");
    ERR(c, -32001, NULL, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);

    /* first address denied, second allowed: the connect reaches the allowed one */
    s = open_sock(c, "tcp");
    ev = connect_sock(c, s, "mixed.test", p->port);
    check_addr(ev, "remote", "127.0.0.1", p->port);
    json_decref(ev);
    echo(c, s, "via a name");
    EXPECT_TRUE(!raw_readable(l2, 200), "a connection reached the denied 127.0.0.2:%d", p->port);
    EXPECT_TRUE(p->accepted == 1, "the allowed peer accepted %d connections", p->accepted);
    /* two denials (denied.test, the first address of mixed.test), each logged once */
    {
        char want[96], *log;
        int n;
        snprintf(want, sizeof want, "policy: connect to 127.0.0.2:%d denied", p->port);
        wait_log(d, want, 2, 1000);
        log = slurp(d->log);
        n = count_str(log, want);
        free(log);
        EXPECT_INT(n, 2, "\"%s\" logged %d times, expected 2", want, n);
    }
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

/* ======================================================================== */
/* 3. rewrite                                                                */

static void
test_rewrite(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0), *q = peer_new(H_ECHO, 0);
    int from = free_port("127.0.0.3"), other = free_port("127.0.0.3");
    char conf[512];
    json_t *ev, *r, *m, *err;
    long long s;

    if (other == from)
        other = free_port("127.0.0.3");
    snprintf(conf, sizeof conf,
             "rewrite connect 127.0.0.3:%d to 127.0.0.1:%d\n"
             "rewrite connect 127.0.0.4:%d to 127.0.0.1:%d\n"
             "deny connect 127.0.0.1/32 port %d\n",
             from, p->port, from, q->port, q->port);
    struct h_daemon *d = daemon_new(conf);
    struct sockd_client *c = h_client_auto(d);

    s = open_sock(c, "tcp");
    ev = connect_sock(c, s, "127.0.0.3", from);
    check_addr(ev, "remote", "127.0.0.3", from);
    check_addr(ev, "rewritten_to", "127.0.0.1", p->port);
    json_decref(ev);
    echo(c, s, "through the rewrite");
    EXPECT_TRUE(p->accepted == 1, "the rewrite target accepted %d connections", p->accepted);
    r = info(c, s);
    check_addr(r, "remote", "127.0.0.3", from);
    check_addr(r, "rewritten_to", "127.0.0.1", p->port);
    EXPECT_STR(jstr(r, "state"), "connected", "info %s", jd(r));
    json_decref(r);

    /* another port of the same address is not rewritten (nothing listens there) */
    s = open_sock(c, "tcp");
    EXPECT_INT(connect_call(c, s, "127.0.0.3", other, &err), 0, "connect: %s", jd(err));
    m = ev_wait(c, "socket.connected", "socket.closed", s, H_TIMEOUT_MS);
    EXPECT_TRUE(strcmp(jstr(m, "method"), "socket.closed") == 0 &&
                    strcmp(jstr(jget(m, "params"), "reason"), "connect_rejected") == 0,
                "127.0.0.3:%d (no rewrite, nothing listening): %s", other, jd(m));
    json_decref(m);
    EXPECT_TRUE(p->accepted == 1, "a connect that matches no rewrite reached the target");

    /* the policy decides on the rewritten destination */
    connect_denied(c, "127.0.0.4", from);
    EXPECT_TRUE(q->accepted == 0, "a rewrite to a denied destination connected");
    daemon_end(d);
}

/* ======================================================================== */
/* 4. limits                                                                 */

static void
test_max_clients(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("max-clients 3\n");
    struct sockd_client *c1 = h_client_auto(d), *c2, *c3, *c4;
    char buf[4096];
    size_t got = 0;
    int fd, eof = 0;
    long long deadline;

    EXPECT_INT(hello_limit(c1, "max_clients"), 3, "daemon.hello max_clients");
    json_decref(h_wait_clients(c1, 1)); /* the harness's start-up probe is gone */
    c2 = h_client_auto(d);
    OKV(c2, "daemon.ping", NULL);
    c3 = h_client_auto(d);
    OKV(c3, "daemon.ping", NULL);
    json_decref(h_wait_clients(c1, 3));

    /* the 4th: one error line, then EOF */
    fd = unix_connect(d->sock);
    deadline = now_ms() + H_TIMEOUT_MS;
    while (!eof && got < sizeof buf - 1) {
        long long left = deadline - now_ms();
        ssize_t n;
        EXPECT_TRUE(left > 0 && raw_readable(fd, (int)left),
                    "the 4th client got %zu bytes and no EOF within %d ms", got, H_TIMEOUT_MS);
        n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n == 0)
            eof = 1;
        else if (n < 0)
            EXPECT_TRUE(errno == EINTR || errno == ECONNRESET, "recv: %s", strerror(errno));
        else
            got += (size_t)n;
        if (n < 0 && errno == ECONNRESET)
            eof = 1;
    }
    buf[got] = 0;
    EXPECT_TRUE(got > 0 && buf[got - 1] == '\n' && strchr(buf, '\n') == buf + got - 1,
                "the 4th client expected exactly one line, got \"%s\"", buf);
    json_error_t je;
    json_t *m = json_loads(buf, 0, &je);
    EXPECT_TRUE(m != NULL, "refusal line is not JSON: %s", buf);
    EXPECT_TRUE(json_is_null(json_object_get(m, "id")), "refusal %s", jd(m));
    EXPECT_INT(jint(jget(m, "error"), "code"), -32003, "refusal %s", jd(m));
    EXPECT_STR(jstr(jget(jget(m, "error"), "data"), "limit"), "max-clients", "refusal %s", jd(m));
    json_decref(m);
    close_fd(fd);

    /* the others still work; after one leaves a new one is served */
    OKV(c1, "daemon.ping", NULL);
    OKV(c3, "daemon.ping", NULL);
    h_client_close(c2);
    json_decref(h_wait_clients(c1, 2));
    c4 = h_client_auto(d);
    OKV(c4, "daemon.ping", NULL);
    long long s = open_sock(c4, "tcp");
    EXPECT_TRUE(s > 0, "socket.open");
    daemon_end(d);
}

static void
test_max_sockets_per_client(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("max-sockets-per-client 2\n");
    struct sockd_client *c = h_client_auto(d), *c2 = h_client_auto(d);
    long long a, b;
    int tfd;

    EXPECT_INT(hello_limit(c, "max_sockets_per_client"), 2, "daemon.hello max_sockets_per_client");
    a = open_sock(c, "tcp");
    b = open_sock(c, "udp");
    ERR(c, -32003, "limit", "max-sockets-per-client", "socket.open", "{s:s}", "type", "tcp");
    /* attach counts too */
    tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    track_fd(tfd);
    {
        json_t *res, *err;
        int rc =
            CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", "tcp"), tfd, &res, &err, NULL);
        EXPECT_TRUE(rc == 1 && sockd_client_error_code(err) == -32003, "attach at the limit: %s %s",
                    jd(res), jd(err));
        json_decref(res);
        json_decref(err);
    }
    /* per client: another client still gets its own */
    open_sock(c2, "tcp");
    open_sock(c2, "tcp");
    /* after a close there is room again */
    OKV(c, "socket.close", "{s:I}", "socket", (json_int_t)a);
    open_sock(c, "tcp");
    ERR(c, -32003, "limit", "max-sockets-per-client", "socket.open", "{s:s}", "type", "tcp");
    expect_sock_state(c, b, "open");

    /* socket.take counts too: c gives b to c2, which is at its limit */
    {
        json_t *r = OK(c, "socket.give", "{s:I}", "socket", (json_int_t)b);
        char *tok = strdup(jstr(r, "token"));
        json_decref(r);
        ERR(c2, -32003, "limit", "max-sockets-per-client", "socket.take", "{s:s}", "token", tok);
        r = OK(c, "socket.take", "{s:s}", "token", tok); /* c has room again */
        EXPECT_STR(jstr(r, "type"), "udp", "take %s", jd(r));
        json_decref(r);
        free(tok);
    }
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_max_send_buffer(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_DRAIN, 0);
    struct h_daemon *d = daemon_new("max-send-buffer 64K\n");
    struct sockd_client *c = h_client_auto(d);
    unsigned char *data = calloc(1, 64 * KIB + 1);
    char *b64;
    json_t *r, *ev;
    long long s;

    EXPECT_INT(hello_limit(c, "max_send_buffer"), 64 * KIB, "daemon.hello max_send_buffer");
    s = connect_ok(c, "127.0.0.1", p->port);
    EXPECT_TRUE(data != NULL, "data");
    b64 = h_b64(data, 64 * KIB + 1);
    ERR(c, -32003, "limit", "max-send-buffer", "socket.send", "{s:I, s:s}", "socket", (json_int_t)s,
        "data", b64);
    free(b64);
    r = info(c, s);
    EXPECT_TRUE(jint(r, "send_buffered") == 0 && jint(r, "bytes_sent") == 0,
                "a refused send queued something: %s", jd(r));
    json_decref(r);
    /* exactly the cap is fine */
    b64 = h_b64(data, 64 * KIB);
    r = OK(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "data", b64);
    free(b64);
    EXPECT_INT(jint(r, "queued"), 64 * KIB, "send result %s", jd(r));
    json_decref(r);
    ev = EV(c, "socket.sent", s);
    EXPECT_INT(jint(ev, "bytes"), 64 * KIB, "socket.sent %s", jd(ev));
    json_decref(ev);
    EXPECT_INT(h_peer_wait_bytes(p, 64 * KIB, H_TIMEOUT_MS), 64 * KIB, "the peer got %zu bytes",
               p->bytes);
    free(data);
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_max_message(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("max-message 64K\n");
    struct sockd_client *c = h_client_auto(d);
    size_t big = 70 * KIB;
    char *line = malloc(big + 128);
    json_t *m;

    EXPECT_TRUE(line != NULL, "line");
    EXPECT_INT(hello_limit(c, "max_message"), 64 * KIB, "daemon.hello max_message");
    /* 70 KiB: one -32600 with id null, nothing else */
    int k =
        snprintf(line, 128, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"daemon.ping\",\"x\":\"");
    memset(line + k, 'a', big - (size_t)k - 3);
    memcpy(line + big - 3, "\"}\n", 4);
    EXPECT_INT(strlen(line), big, "line length %zu", strlen(line));
    h_send_raw(c, line);
    m = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_null(json_object_get(m, "id")) && jint(jget(m, "error"), "code") == -32600,
                "70K line: %s", jd(m));
    EXPECT_TRUE(strcmp(jstr(jget(jget(m, "error"), "data"), "limit"), "max-message") == 0 &&
                    strcmp(jstr(jget(jget(m, "error"), "data"), "reason"), "message_too_long") == 0,
                "70K line: %s", jd(m));
    json_decref(m);
    /* the connection stays usable */
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"daemon.ping\"}\n");
    m = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(jint(m, "id") == 6 && json_is_object(json_object_get(m, "result")),
                "ping after the long line: %s", jd(m));
    json_decref(m);
    /* just under the cap is a normal request (tags are capped: blanks between tokens) */
    k = snprintf(line, 128,
                 "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"socket.open\","
                 "\"params\":{\"type\":\"tcp\",\"tag\":\"b\"");
    memset(line + k, ' ', 60 * KIB);
    memcpy(line + k + 60 * KIB, "}}\n", 4);
    h_send_raw(c, line);
    m = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(jint(m, "id") == 7 && jint(jget(m, "result"), "socket") > 0, "60K request: %s",
                jd(m));
    json_decref(m);
    free(line);
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_max_pending_and_accept_timeout(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new("max-pending-accepts 2\naccept-timeout 700ms\n");
    struct sockd_client *c = h_client_auto(d);
    json_t *r, *ev;
    long long l, p1, p2, p3, t0, el;
    int port, fd[3], rc;

    EXPECT_INT(hello_limit(c, "max_pending_accepts"), 2, "daemon.hello max_pending_accepts");
    EXPECT_INT(hello_limit(c, "accept_timeout_ms"), 700, "daemon.hello accept_timeout_ms");
    l = open_sock(c, "tcp");
    r = OK(c, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)l, "address", "127.0.0.1");
    port = check_addr(r, "local", "127.0.0.1", -1);
    json_decref(r);
    OKV(c, "socket.listen", "{s:I}", "socket", (json_int_t)l);
    for (int i = 0; i < 3; i++)
        fd[i] = raw_connect("127.0.0.1", port); /* the kernel backlog completes all three */
    ev = EV(c, "socket.incoming", l);
    t0 = now_ms();
    p1 = jint(ev, "pending");
    check_addr(ev, "remote", "127.0.0.1", local_port(fd[0]));
    json_decref(ev);
    ev = EV(c, "socket.incoming", l);
    p2 = jint(ev, "pending");
    check_addr(ev, "remote", "127.0.0.1", local_port(fd[1]));
    json_decref(ev);
    EXPECT_TRUE(p1 != p2, "pending numbers %lld %lld", p1, p2);
    EV_NONE(c, l, 300); /* the third waits in the kernel */
    r = info(c, l);
    EXPECT_INT(jint(r, "pending"), 2, "pending at the cap: %s", jd(r));
    json_decref(r);

    /* accept-timeout closes the two held ones; then the third is taken in */
    rc = wait_eof(fd[0], H_TIMEOUT_MS);
    el = now_ms() - t0;
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET, "expired pending: expected EOF or reset, got %d", rc);
    EXPECT_TRUE(el >= 400 && el < 4000, "pending ended %lld ms after socket.incoming (700 ms)", el);
    rc = wait_eof(fd[1], H_TIMEOUT_MS);
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET, "second expired pending: got %d", rc);
    ERR(c, -32602, NULL, NULL, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending",
        (json_int_t)p1);
    ev = EV(c, "socket.incoming", l);
    p3 = jint(ev, "pending");
    check_addr(ev, "remote", "127.0.0.1", local_port(fd[2]));
    json_decref(ev);
    r = OK(c, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)l, "pending", (json_int_t)p3);
    long long a = jint(r, "socket");
    json_decref(r);
    json_decref(EV(c, "socket.accepted", a));
    OKV(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)a, "text", "served");
    raw_expect(fd[2], "served");
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

/* ======================================================================== */
/* 5. reload                                                                 */

static void
test_reload(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0);
    struct h_daemon *d = daemon_new("log-level info\n");
    struct sockd_client *c = h_client_auto(d);
    long long a;
    char *log;

    EXPECT_INT(hello_limit(c, "max_sockets_per_client"), 4096, "default max_sockets_per_client");
    a = connect_ok(c, "127.0.0.1", p->port);
    echo(c, a, "before the reload");

    write_file(d->conf, "max-sockets-per-client 7\ndeny connect 127.0.0.1/32\n");
    EXPECT_INT(kill(d->pid, SIGHUP), 0, "kill SIGHUP: %s", strerror(errno));
    EXPECT_TRUE(wait_log(d, "reloaded", 1, H_TIMEOUT_MS) >= 1, "no reload in the log");
    connect_denied(c, "127.0.0.1", p->port);
    EXPECT_INT(hello_limit(c, "max_sockets_per_client"), 7, "reloaded max_sockets_per_client");
    echo(c, a, "an open socket is untouched");
    struct sockd_client *c2 = h_client_auto(d);
    connect_denied(c2, "127.0.0.1", p->port);

    /* a bad file is refused whole; the old one stays */
    write_file(d->conf, "max-sockets-per-client 9\npolicy-default allow\nbogus-directive 1\n");
    EXPECT_INT(kill(d->pid, SIGHUP), 0, "kill SIGHUP: %s", strerror(errno));
    EXPECT_TRUE(wait_log(d, "refused", 1, H_TIMEOUT_MS) >= 1, "the refused reload was not logged");
    log = slurp(d->log);
    EXPECT_TRUE(has_line_no(strstr(log, "refused"), 3), "the refusal does not name line 3: %s",
                strstr(log, "refused"));
    free(log);
    EXPECT_INT(kill(d->pid, 0), 0, "the daemon died on a bad reload");
    OKV(c, "daemon.ping", NULL);
    connect_denied(c, "127.0.0.1", p->port);
    EXPECT_INT(hello_limit(c, "max_sockets_per_client"), 7,
               "part of a refused file was applied (max_sockets_per_client)");
    echo(c, a, "still untouched");
    EXPECT_TRUE(p->accepted == 1, "the peer accepted %d connections", p->accepted);
    daemon_end(d);
}

/* ======================================================================== */
/* 6. fd passing                                                             */

static void
test_detach_connected(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0);
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *res, *err;
    int fd, base, rc;
    long long s;

    s = connect_ok(c, "127.0.0.1", p->port);
    echo(c, s, "before detach");
    base = h_count_fds(d->pid);
    rc = CALL_FD(c, "socket.detach", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err,
                 &fd);
    EXPECT_INT(rc, 0, "socket.detach: %s", jd(err));
    EXPECT_TRUE(fd >= 0, "no fd rode with the socket.detach response %s", jd(res));
    EXPECT_TRUE(json_is_object(res) && !json_object_get(res, "data") &&
                    !json_object_get(res, "eof"),
                "detach result without read-ahead: %s", jd(res));
    json_decref(res);
    EXPECT_INT((fcntl(fd, F_GETFL) & O_NONBLOCK), 0, "the detached fd is non-blocking");
    EXPECT_TRUE(remote_port(fd) == p->port, "the detached fd is connected to port %d, expected %d",
                remote_port(fd), p->port);
    raw_write_str(fd, "through the detached fd");
    raw_expect(fd, "through the detached fd");
    ERR(c, -32001, NULL, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    ERR(c, -32001, NULL, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "x");
    EXPECT_INT(h_wait_fds(d->pid, base - 1, 2000), base - 1,
               "the daemon kept the detached fd (%d fds, expected %d)", h_count_fds(d->pid),
               base - 1);
    EV_NONE(c, 0, 100);
    close_fd(fd);
    EXPECT_INT(h_peer_wait_eofs(p, 1, H_TIMEOUT_MS), 1, "closing the detached fd did not end it");
    daemon_end(d);
}

static void
test_detach_readahead(void **state)
{
    (void)state;
    static const char greeting[] = "read ahead before the detach";
    struct h_peer *p = peer_new(H_GREET, 0);
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *res, *err, *r;
    long long s, deadline, buffered = 0;
    size_t n;
    unsigned char *data;
    int fd, rc;

    p->greeting = greeting; /* written on each connection, before the echo */
    s = connect_ok(c, "127.0.0.1", p->port);
    deadline = now_ms() + H_TIMEOUT_MS;
    while (buffered < (long long)strlen(greeting) && now_ms() < deadline) {
        r = info(c, s);
        buffered = jint(r, "recv_buffered");
        json_decref(r);
        if (buffered < (long long)strlen(greeting))
            h_sleep_ms(20);
    }
    EXPECT_INT(buffered, (long long)strlen(greeting), "read-ahead %lld bytes", buffered);
    rc = CALL_FD(c, "socket.detach", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err,
                 &fd);
    EXPECT_TRUE(rc == 0 && fd >= 0, "socket.detach: rc %d fd %d %s", rc, fd, jd(err));
    data = unb64(jstr(res, "data"), &n);
    EXPECT_TRUE(n == strlen(greeting) && memcmp(data, greeting, n) == 0,
                "detach data is not the read-ahead bytes: %s", jd(res));
    free(data);
    json_decref(res);
    /* the fd goes on from there: no byte twice */
    raw_write_str(fd, "x");
    raw_expect(fd, "x");
    EXPECT_TRUE(!raw_readable(fd, 200), "more bytes on the detached fd than the peer sent");
    daemon_end(d);
}

/* Read-ahead bytes and the peer's EOF both ride with the detach result. */
static void
test_detach_eof(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pfd, fd, rc;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *r, *res, *err;
    long long s, deadline, buffered = 0;
    unsigned char *data;
    size_t n;

    s = connect_ok(c, "127.0.0.1", port);
    pfd = accept_one(lfd);
    raw_write_str(pfd, "last words");
    EXPECT_INT(shutdown(pfd, SHUT_WR), 0, "shutdown: %s", strerror(errno));
    deadline = now_ms() + H_TIMEOUT_MS;
    while (buffered < 10 && now_ms() < deadline) {
        r = info(c, s);
        buffered = jint(r, "recv_buffered");
        json_decref(r);
        if (buffered < 10)
            h_sleep_ms(20);
    }
    EXPECT_INT(buffered, 10, "read-ahead %lld bytes", buffered);
    h_sleep_ms(100);  /* the EOF behind them */
    EV_NONE(c, s, 0); /* buffered bytes keep the socket open */
    rc = CALL_FD(c, "socket.detach", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err,
                 &fd);
    EXPECT_TRUE(rc == 0 && fd >= 0, "socket.detach: rc %d fd %d %s", rc, fd, jd(err));
    data = unb64(jstr(res, "data"), &n);
    EXPECT_TRUE(n == 10 && memcmp(data, "last words", 10) == 0, "detach data: %s", jd(res));
    free(data);
    EXPECT_TRUE(json_is_true(json_object_get(res, "eof")), "detach after the peer's EOF: %s",
                jd(res));
    json_decref(res);
    EXPECT_INT(wait_eof(fd, 1000), 0, "the detached fd does not read EOF");
    daemon_end(d);
}

static void
test_detach_unsent(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 4096), port = local_port(lfd), pfd;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    unsigned char *zeros = calloc(1, MIB);
    char *b64;
    json_t *r, *res, *err;
    long long s, queued = 0;
    int fd = -1, rc;

    EXPECT_TRUE(zeros != NULL, "zeros");
    s = connect_ok(c, "127.0.0.1", port);
    pfd = accept_one(lfd); /* never reads */
    (void)pfd;
    OKV(c, "socket.setopt", "{s:I, s:i}", "socket", (json_int_t)s, "sndbuf", 4096);
    b64 = h_b64(zeros, MIB);
    for (int i = 0; i < 3 && queued == 0; i++) {
        json_decref(OK(c, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)s, "data", b64,
                       "notify", 0));
        h_sleep_ms(50);
        r = info(c, s);
        queued = jint(r, "send_buffered");
        json_decref(r);
    }
    free(b64);
    free(zeros);
    EXPECT_TRUE(queued > 0, "could not get bytes queued in the daemon");
    rc = CALL_FD(c, "socket.detach", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err,
                 &fd);
    EXPECT_TRUE(rc == 1 && sockd_client_error_code(err) == -32002 && fd < 0,
                "detach with %lld unsent bytes: rc %d fd %d result %s error %s", queued, rc, fd,
                jd(res), jd(err));
    json_decref(res);
    json_decref(err);
    expect_sock_state(c, s, "connected");
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_attach_connected(void **state)
{
    (void)state;
    struct h_peer *p = peer_new(H_ECHO, 0);
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *res, *err, *r, *ev;
    long long s;
    int fd = raw_connect("127.0.0.1", p->port), rc;

    rc = CALL_FD(c, "socket.attach", json_pack("{s:s, s:s}", "type", "tcp", "tag", "adopted"), fd,
                 &res, &err, NULL);
    EXPECT_INT(rc, 0, "socket.attach: %s", jd(err));
    s = jint(res, "socket");
    EXPECT_STR(jstr(res, "state"), "connected", "attach result %s", jd(res));
    json_decref(res);
    close_fd(fd); /* the daemon has its own copy */
    r = info(c, s);
    check_addr(r, "remote", "127.0.0.1", p->port);
    EXPECT_TRUE(strcmp(jstr(r, "type"), "tcp") == 0 && strcmp(jstr(r, "tag"), "adopted") == 0,
                "info %s", jd(r));
    json_decref(r);
    r = OK(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "adopted bytes");
    EXPECT_INT(jint(r, "queued"), 13, "send %s", jd(r));
    json_decref(r);
    ev = EV(c, "socket.sent", s);
    EXPECT_INT(jint(ev, "bytes"), 13, "sent %s", jd(ev));
    json_decref(ev);
    OKV(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 13);
    ev = EV(c, "socket.received", s);
    EXPECT_STR(jstr(ev, "data"), "YWRvcHRlZCBieXRlcw==", "received %s", jd(ev));
    json_decref(ev);
    daemon_end(d);
}

static void
test_attach_listening(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), cfd, rc;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *res, *err, *ev, *r;
    long long s, pend, a;

    rc = CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", "tcp"), lfd, &res, &err, NULL);
    EXPECT_INT(rc, 0, "socket.attach of a listener: %s", jd(err));
    s = jint(res, "socket");
    EXPECT_STR(jstr(res, "state"), "listening", "attach result %s", jd(res));
    json_decref(res);
    close_fd(lfd);
    cfd = raw_connect("127.0.0.1", port);
    ev = EV(c, "socket.incoming", s);
    check_addr(ev, "remote", "127.0.0.1", local_port(cfd));
    pend = jint(ev, "pending");
    json_decref(ev);
    r = OK(c, "socket.accept", "{s:I, s:I}", "socket", (json_int_t)s, "pending", (json_int_t)pend);
    a = jint(r, "socket");
    json_decref(r);
    ev = EV(c, "socket.accepted", a);
    EXPECT_INT(jint(ev, "listener"), s, "accepted %s", jd(ev));
    json_decref(ev);
    OKV(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)a, "text",
        "hi from an adopted listener");
    raw_expect(cfd, "hi from an adopted listener");
    daemon_end(d);
}

/* A bound UDP socket is adopted as "bound" and receives through the daemon. */
static void
test_attach_udp_bound(void **state)
{
    (void)state;
    int ufd = raw_udp("127.0.0.1"), port = local_port(ufd), sfd = raw_udp("127.0.0.1"), rc;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *res, *err, *ev;
    struct sockaddr_in to;
    long long s;

    rc = CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", "udp"), ufd, &res, &err, NULL);
    EXPECT_INT(rc, 0, "attach of a bound udp socket: %s", jd(err));
    s = jint(res, "socket");
    EXPECT_STR(jstr(res, "state"), "bound", "attach result %s", jd(res));
    json_decref(res);
    close_fd(ufd);
    OKV(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 100);
    EXPECT_INT(sa4("127.0.0.1", port, &to), 0, "address 127.0.0.1");
    EXPECT_INT(sendto(sfd, "dgram", 5, 0, (struct sockaddr *)&to, sizeof to), 5, "sendto: %s",
               strerror(errno));
    ev = EV(c, "socket.received", s);
    EXPECT_STR(jstr(ev, "data"), "ZGdyYW0=", "received %s", jd(ev));
    check_addr(ev, "from", "127.0.0.1", local_port(sfd));
    json_decref(ev);
    daemon_end(d);
}

static void
test_attach_wrong(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    int ufd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int tfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), sp[2], base;
    json_t *res, *err;
    const char *param;
    int rc;

    track_fd(ufd);
    track_fd(tfd);
    EXPECT_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0,
               "socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp)");
    track_fd(sp[0]);
    track_fd(sp[1]);
    OKV(c, "daemon.ping", NULL);
    base = h_count_fds(d->pid);

    static const struct {
        const char *type;
        int which; /* 0 udp, 1 tcp, 2 unix stream, -1 none */
        const char *param;
    } cases[] = {
        {"tcp", 0, "type"},  {"udp", 1, "type"}, {"tcp", 2, "type"},
        {"unix", 1, "type"}, {"tls", 1, "type"}, {"tcp", -1, "fd"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = cases[i].which == 0   ? ufd
                 : cases[i].which == 1 ? tfd
                 : cases[i].which == 2 ? sp[0]
                                       : -1;
        rc = CALL_FD(c, "socket.attach", json_pack("{s:s}", "type", cases[i].type), fd, &res, &err,
                     NULL);
        param = json_string_value(json_object_get(json_object_get(err, "data"), "param"));
        EXPECT_TRUE(rc == 1 && sockd_client_error_code(err) == -32602 && param &&
                        strcmp(param, cases[i].param) == 0,
                    "attach case %zu (type %s, fd kind %d): expected -32602 data.param \"%s\", got "
                    "result %s error %s",
                    i, cases[i].type, cases[i].which, cases[i].param, jd(res), jd(err));
        json_decref(res);
        json_decref(err);
    }
    EXPECT_INT(h_wait_fds(d->pid, base, 2000), base, "refused attaches leaked fds: %d, expected %d",
               h_count_fds(d->pid), base);
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

static void
test_pipe(void **state)
{
    (void)state;
    const size_t total = 3 * MIB;
    struct h_peer *p = peer_new(H_ECHO, 0);
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    unsigned char *out = random_bytes(total), *in = malloc(total + 65536), h1[32], h2[32];
    json_t *res, *err, *ev;
    size_t woff = 0, roff = 0;
    int fd, rc, wdone = 0, eof = 0;
    long long s, deadline;

    EXPECT_TRUE(in != NULL, "in");
    s = connect_ok(c, "127.0.0.1", p->port);
    rc =
        CALL_FD(c, "socket.pipe", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err, &fd);
    EXPECT_TRUE(rc == 0 && fd >= 0, "socket.pipe: rc %d fd %d %s", rc, fd, jd(err));
    json_decref(res);
    ERR(c, -32002, NULL, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "text", "x");
    ERR(c, -32002, NULL, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 1);
    ERR(c, -32002, NULL, NULL, "socket.pipe", "{s:I}", "socket", (json_int_t)s);

    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    deadline = now_ms() + 30000;
    while (!eof && now_ms() < deadline) {
        struct pollfd pf = {fd, (short)(POLLIN | (wdone ? 0 : POLLOUT)), 0};
        if (poll(&pf, 1, 200) <= 0)
            continue;
        if (!wdone && (pf.revents & POLLOUT)) {
            size_t n = total - woff < 65536 ? total - woff : 65536;
            ssize_t w = send(fd, out + woff, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                woff += (size_t)w;
            else
                EXPECT_TRUE(errno == EAGAIN || errno == EINTR, "write to the pipe end: %s",
                            strerror(errno));
            if (woff == total) {
                EXPECT_INT(shutdown(fd, SHUT_WR), 0, "shutdown: %s", strerror(errno));
                wdone = 1;
            }
        }
        if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t r = recv(fd, in + roff, total + 65536 - roff, MSG_DONTWAIT);
            if (r == 0)
                eof = 1;
            else if (r > 0)
                roff += (size_t)r;
            else
                EXPECT_TRUE(errno == EAGAIN || errno == EINTR, "read from the pipe end: %s",
                            strerror(errno));
            EXPECT_TRUE(roff <= total, "more bytes came back (%zu) than were sent", roff);
        }
    }
    EXPECT_TRUE(eof, "no EOF on the pipe end within 30 s (wrote %zu, read %zu of %zu)", woff, roff,
                total);
    EXPECT_INT(roff, total, "read back %zu of %zu bytes", roff, total);
    sha256(out, total, h1);
    sha256(in, roff, h2);
    EXPECT_INT(memcmp(h1, h2, 32), 0, "SHA-256 of the echoed bytes differs");
    free(out);
    free(in);
    EXPECT_INT(h_peer_wait_eofs(p, 1, H_TIMEOUT_MS), 1, "the peer did not see the half-close");
    ev = EV(c, "socket.closed", s);
    EXPECT_STR(jstr(ev, "reason"), "normal",
               "the client's end ended first: reason should be normal: %s", jd(ev));
    json_decref(ev);
    ERR(c, -32001, NULL, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    daemon_end(d);
}

/* Read-ahead goes into the pipe first; a peer that ends first: reason by_peer. */
static void
test_pipe_readahead_peer_first(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pfd, fd, rc;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *r, *res, *err, *ev;
    long long s, deadline, buffered = 0, o, u;

    /* wrong states first */
    o = open_sock(c, "tcp");
    ERR(c, -32002, NULL, NULL, "socket.pipe", "{s:I}", "socket", (json_int_t)o);
    u = open_sock(c, "udp");
    OKV(c, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)u, "address", "127.0.0.1");
    ERR(c, -32002, NULL, NULL, "socket.pipe", "{s:I}", "socket", (json_int_t)u);

    s = connect_ok(c, "127.0.0.1", port);
    pfd = accept_one(lfd);
    raw_write_str(pfd, "early bytes|");
    deadline = now_ms() + H_TIMEOUT_MS;
    while (buffered < 12 && now_ms() < deadline) {
        r = info(c, s);
        buffered = jint(r, "recv_buffered");
        json_decref(r);
        if (buffered < 12)
            h_sleep_ms(20);
    }
    EXPECT_INT(buffered, 12, "read-ahead %lld bytes", buffered);
    /* a pending recv is cancelled by the pipe (no socket.received follows) */
    OKV(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 100);
    rc =
        CALL_FD(c, "socket.pipe", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err, &fd);
    EXPECT_TRUE(rc == 0 && fd >= 0, "socket.pipe: rc %d fd %d %s", rc, fd, jd(err));
    json_decref(res);
    raw_write_str(pfd, "late bytes");
    raw_expect(fd, "early bytes|late bytes");
    raw_write_str(fd, "to the peer");
    raw_expect(pfd, "to the peer");
    /* the peer ends first: the client's end reads EOF, then the client closes its end */
    EXPECT_INT(shutdown(pfd, SHUT_WR), 0, "shutdown: %s", strerror(errno));
    EXPECT_INT(wait_eof(fd, H_TIMEOUT_MS), 0, "the peer's EOF did not reach the pipe end");
    close_fd(fd);
    ev = EV(c, "socket.closed", s);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "the peer ended first: %s", jd(ev));
    json_decref(ev);
    EV_NONE(c, s, 100); /* no socket.received of the cancelled recv */
    EXPECT_INT(wait_eof(pfd, H_TIMEOUT_MS), 0, "the peer did not see the socket close");
    daemon_end(d);
}

/* Pattern byte i of a stream (so a lost, doubled or reordered chunk shows). */
static unsigned char
pat(size_t i)
{
    return (unsigned char)((i * 131 + (i >> 13)) & 0xff);
}

/*
 * From a plain TCP peer the relay splices through a kernel pipe: the daemon holds two more fds
 * for it, reads no more than the pipe holds while the client is not reading, passes every byte in
 * order, ends with the peer's EOF, and leaves no fd behind.
 */
static void
test_pipe_splice_backpressure(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), pfd, fd, rc, base;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    static unsigned char chunk[65536], got[65536];
    size_t wrote = 0, read_total = 0;
    json_t *res, *err, *r, *ev;
    long long s, deadline, quiet_since;

    s = connect_ok(c, "127.0.0.1", local_port(lfd));
    pfd = accept_one(lfd);
    base = h_count_fds(d->pid);
    rc =
        CALL_FD(c, "socket.pipe", json_pack("{s:I}", "socket", (json_int_t)s), -1, &res, &err, &fd);
    EXPECT_TRUE(rc == 0 && fd >= 0, "socket.pipe: rc %d fd %d %s", rc, fd, jd(err));
    json_decref(res);
    EXPECT_INT(h_wait_fds(d->pid, base + 3, 2000), base + 3,
               "a plain TCP pipe holds its socketpair end and a kernel pipe (%d fds, expected %d)",
               h_count_fds(d->pid), base + 3);

    /* the peer writes until nothing more is taken for 300 ms; the client reads nothing yet */
    fcntl(pfd, F_SETFL, fcntl(pfd, F_GETFL) | O_NONBLOCK);
    deadline = now_ms() + 10000;
    quiet_since = now_ms();
    while (now_ms() - quiet_since < 300 && now_ms() < deadline) {
        for (size_t i = 0; i < sizeof chunk; i++)
            chunk[i] = pat(wrote + i);
        ssize_t w = send(pfd, chunk, sizeof chunk, MSG_NOSIGNAL);
        if (w > 0) {
            wrote += (size_t)w;
            quiet_since = now_ms();
        } else {
            EXPECT_INT(errno, EAGAIN, "peer write: %s", strerror(errno));
            h_sleep_ms(10);
        }
    }
    EXPECT_TRUE(now_ms() < deadline, "the peer could write without end: %zu bytes, no backpressure",
                wrote);
    r = info(c, s);
    EXPECT_TRUE(
        jint(r, "recv_buffered") > 0 && jint(r, "recv_buffered") <= 1024 * 1024,
        "recv_buffered %lld with a client that does not read (the pipe holds at most 1 MiB)",
        jint(r, "recv_buffered"));
    json_decref(r);

    /* now the client reads it all, in order, then the peer's EOF */
    EXPECT_INT(shutdown(pfd, SHUT_WR), 0, "shutdown: %s", strerror(errno));
    deadline = now_ms() + 20000;
    while (read_total < wrote && now_ms() < deadline) {
        ssize_t n = recv(fd, got, sizeof got, 0);
        EXPECT_TRUE(n > 0, "read from the pipe end: %zd (%s) after %zu of %zu bytes", n,
                    n < 0 ? strerror(errno) : "EOF", read_total, wrote);
        for (ssize_t i = 0; i < n; i++)
            if (got[i] != pat(read_total + (size_t)i))
                FAIL("byte %zu differs", read_total + (size_t)i);
        read_total += (size_t)n;
    }
    EXPECT_INT(read_total, wrote, "read %zu of %zu bytes", read_total, wrote);
    EXPECT_INT(wait_eof(fd, H_TIMEOUT_MS), 0, "the peer's EOF did not reach the pipe end");
    r = info(c, s);
    EXPECT_INT(jint(r, "bytes_received"), (long long)wrote, "bytes_received %lld, peer wrote %zu",
               jint(r, "bytes_received"), wrote);
    json_decref(r);
    close(fd);
    ev = EV(c, "socket.closed", s);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "the peer ended first: %s", jd(ev));
    json_decref(ev);
    EXPECT_INT(h_wait_fds(d->pid, base - 1, 2000), base - 1,
               "fds after the piped socket closed: %d, expected %d", h_count_fds(d->pid), base - 1);
    close(pfd);
    close(lfd);
    daemon_end(d);
}

static void
test_stray_fds(void **state)
{
    (void)state;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC), base, rc;
    json_t *res, *err;

    track_fd(nul);
    OKV(c, "daemon.ping", NULL);
    base = h_count_fds(d->pid);
    for (int i = 0; i < 50; i++) {
        rc = CALL_FD(c, "daemon.ping", NULL, nul, &res, &err, NULL);
        EXPECT_TRUE(rc == 0 && json_is_object(res) && json_object_size(res) == 0,
                    "ping %d with a stray fd: %s %s", i, jd(res), jd(err));
        json_decref(res);
    }
    EXPECT_INT(h_wait_fds(d->pid, base, 2000), base,
               "the daemon kept stray fds: %d open, %d before the pings", h_count_fds(d->pid),
               base);
    /* another method with a stray fd runs normally and keeps nothing either */
    rc = CALL_FD(c, "socket.open", json_pack("{s:s}", "type", "tcp"), nul, &res, &err, NULL);
    EXPECT_TRUE(rc == 0 && jint(res, "socket") > 0, "socket.open with a stray fd: %s", jd(err));
    json_decref(res);
    EXPECT_INT(h_wait_fds(d->pid, base, 2000), base, "socket.open kept the stray fd: %d vs %d",
               h_count_fds(d->pid), base);
    daemon_end(d);
}

/* ======================================================================== */
/* 7. hand-off                                                               */

static bool
is_token(const char *t)
{
    if (!t || strlen(t) != 32)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

static char *
give_(struct sockd_client *c, long long s, int timeout_ms)
{
    json_t *r = timeout_ms > 0 ? call_ok_(c, "socket.give", "{s:I, s:i}", "socket", (json_int_t)s,
                                          "timeout_ms", timeout_ms)
                               : call_ok_(c, "socket.give", "{s:I}", "socket", (json_int_t)s);
    const char *t = jstr_(r, "token");
    char *tok;
    EXPECT_TRUE(is_token(t), "socket.give token is not 32 lowercase hex digits: %s", jd(r));
    tok = strdup(t);
    json_decref(r);
    return tok;
}
#define give(...) (TC_AT(), give_(__VA_ARGS__))

static void
test_give_take(void **state)
{
    (void)state;
    static const char msg[] = "arrived while nobody owned the socket";
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pfd;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *a = h_client_auto(d), *b;
    json_t *r, *ev;
    long long s, t;
    char *tok;
    size_t n;
    unsigned char *data;

    s = connect_ok(a, "127.0.0.1", port);
    pfd = accept_one(lfd);
    tok = give(a, s, 0);
    ERR(a, -32001, NULL, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    h_client_close(a); /* the giver leaves */
    b = h_client_auto(d);
    json_decref(h_wait_clients(b, 1));
    raw_write_str(pfd, msg);
    h_sleep_ms(300);
    EXPECT_TRUE(!raw_readable(pfd, 0), "the unowned socket was closed");

    r = OK(b, "socket.take", "{s:s}", "token", tok);
    t = jint(r, "socket");
    EXPECT_TRUE(t != s, "socket.take gave the old handle %lld back", s);
    /* the old handle stays dead, for the taker too */
    ERR(b, -32001, NULL, NULL, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(strcmp(jstr(r, "state"), "connected") == 0 && strcmp(jstr(r, "type"), "tcp") == 0,
                "take result %s", jd(r));
    check_addr(r, "remote", "127.0.0.1", port);
    EXPECT_INT(jint(r, "recv_buffered"), (long long)strlen(msg),
               "take result: the bytes that arrived meanwhile are not buffered: %s", jd(r));
    json_decref(r);
    OKV(b, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)t, "length", (int)strlen(msg));
    ev = EV(b, "socket.received", t);
    data = unb64(jstr(ev, "data"), &n);
    EXPECT_TRUE(n == strlen(msg) && memcmp(data, msg, n) == 0, "received %s", jd(ev));
    free(data);
    json_decref(ev);
    OKV(b, "socket.send", "{s:I, s:s}", "socket", (json_int_t)t, "text", "reply from the taker");
    raw_expect(pfd, "reply from the taker");

    ERR(b, -32001, NULL, NULL, "socket.take", "{s:s}", "token", tok); /* used */
    ERR(b, -32001, NULL, NULL, "socket.take", "{s:s}", "token",
        "0123456789abcdef0123456789abcdef"); /* unknown */
    free(tok);
    daemon_end(d);
}

/* The child's side of test_take_other_uid: as uid 65534, try to take tok; give a socket of its
 * own. Writes "R <code> <reason> <token2>\n" (or "E <what> <errno>\n") to wfd. */
static void
other_uid_child(const char *sock, const char *tok, int wfd)
{
    char out[256];
    struct sockd_client *c;
    json_t *res = NULL, *err = NULL, *p;
    int rc, code;
    const char *reason;
    long long s;

    if (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0 || getuid() != 65534) {
        snprintf(out, sizeof out, "E setuid %d\n", errno);
        goto done;
    }
    c = sockd_client_connect(sock);
    if (!c) {
        snprintf(out, sizeof out, "E connect %d\n", errno);
        goto done;
    }
    p = json_pack("{s:s}", "token", tok);
    rc = sockd_client_call(c, "socket.take", p, &res, &err, H_TIMEOUT_MS);
    json_decref(p);
    code = rc == 1 ? sockd_client_error_code(err) : rc == 0 ? 0 : -1;
    reason = json_string_value(json_object_get(json_object_get(err, "data"), "reason"));
    snprintf(out, sizeof out, "R %d %s ", code, reason ? reason : "-");
    json_decref(res);
    json_decref(err);
    res = err = NULL;
    p = json_pack("{s:s}", "type", "tcp");
    rc = sockd_client_call(c, "socket.open", p, &res, NULL, H_TIMEOUT_MS);
    json_decref(p);
    s = rc == 0 ? json_integer_value(json_object_get(res, "socket")) : 0;
    json_decref(res);
    res = NULL;
    p = json_pack("{s:I}", "socket", (json_int_t)s);
    rc = sockd_client_call(c, "socket.give", p, &res, NULL, H_TIMEOUT_MS);
    json_decref(p);
    snprintf(out + strlen(out), sizeof out - strlen(out), "%s\n",
             rc == 0 && json_string_value(json_object_get(res, "token"))
                 ? json_string_value(json_object_get(res, "token"))
                 : "-");
    json_decref(res);
    sockd_client_close(c);
done:
    if (write(wfd, out, strlen(out)) < 0)
        _exit(3);
    _exit(0);
}

static void
test_take_other_uid(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        fprintf(stderr, "  (not root: cannot run a client as another uid)\n");
        skip();
    }
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pp[2], st;
    struct h_daemon *d = daemon_new("socket-mode 0666\n");
    struct sockd_client *a = h_client_auto(d), *b;
    char buf[512] = "", reason[64] = "", tok2[64] = "";
    size_t got = 0;
    long long s, deadline;
    int code = 0;
    json_t *r;
    struct stat sb;
    pid_t pid;

    /* the control socket and its directory must be reachable by the other user */
    EXPECT_INT(chmod(d->dir, 0711), 0, "chmod %s: %s", d->dir, strerror(errno));
    EXPECT_INT(stat(d->sock, &sb), 0, "stat %s: %s", d->sock, strerror(errno));
    EXPECT_INT((sb.st_mode & 0777), 0666, "socket-mode 0666: control socket mode %o",
               (unsigned)(sb.st_mode & 0777));

    s = connect_ok(a, "127.0.0.1", port);
    accept_one(lfd);
    char *tok = give(a, s, 60000);

    EXPECT_INT(pipe2(pp, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
    track_fd(pp[0]);
    track_fd(pp[1]);
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    EXPECT_TRUE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0)
        other_uid_child(d->sock, tok, pp[1]);
    track_child(pid);
    close_fd(pp[1]);
    deadline = now_ms() + H_TIMEOUT_MS;
    while (got < sizeof buf - 1 && now_ms() < deadline) {
        ssize_t n;
        if (!raw_readable(pp[0], 100))
            continue;
        n = read(pp[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = 0;
    st = child_wait(pid, H_TIMEOUT_MS);
    EXPECT_TRUE(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d, said \"%s\"",
                st, buf);
    EXPECT_INT(sscanf(buf, "R %d %63s %63s", &code, reason, tok2), 3, "child said \"%s\"", buf);
    EXPECT_TRUE(
        code == -32004 && strcmp(reason, "policy_denied") == 0,
        "take by uid 65534 of a root client's socket: expected -32004 policy_denied, got %d %s",
        code, reason);

    /* the refused take left the token valid */
    b = h_client_auto(d);
    r = OK(b, "socket.take", "{s:s}", "token", tok);
    EXPECT_STR(jstr(r, "state"), "connected", "take %s", jd(r));
    check_addr(r, "remote", "127.0.0.1", port);
    json_decref(r);
    free(tok);
    /* root may take another user's socket */
    EXPECT_TRUE(is_token(tok2), "the child's give failed: \"%s\"", buf);
    r = OK(b, "socket.take", "{s:s}", "token", tok2);
    EXPECT_TRUE(jint(r, "socket") > 0 && strcmp(jstr(r, "state"), "open") == 0, "take %s", jd(r));
    json_decref(r);
    daemon_end(d);
}

static void
test_give_timeout(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pfd, base, rc;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    long long s, base_socks, t0, el;
    char *tok;

    json_decref(h_wait_clients(c, 1));
    base = h_count_fds(d->pid);
    base_socks = stats_sockets_total(c);
    s = connect_ok(c, "127.0.0.1", port);
    pfd = accept_one(lfd);
    tok = give(c, s, 300);
    t0 = now_ms();
    EXPECT_INT(stats_sockets_total(c), base_socks + 1, "the given socket is not counted");
    EXPECT_TRUE(!raw_readable(pfd, 100), "the given socket closed at once");
    rc = wait_eof(pfd, H_TIMEOUT_MS);
    el = now_ms() - t0;
    EXPECT_TRUE(rc == 0 || rc == ECONNRESET, "untaken socket: expected EOF at the peer, got %d",
                rc);
    EXPECT_TRUE(el >= 150 && el < 3000, "untaken socket closed %lld ms after give (timeout 300)",
                el);
    ERR(c, -32001, NULL, NULL, "socket.take", "{s:s}", "token", tok);
    free(tok);
    EXPECT_INT(h_wait_fds(d->pid, base, 2000), base, "fds after the timeout: %d, baseline %d",
               h_count_fds(d->pid), base);
    EXPECT_INT(stats_sockets_total(c), base_socks, "daemon.stats sockets.total not back to %lld",
               base_socks);
    EV_NONE(c, 0, 100); /* closed silently */
    OKV(c, "daemon.ping", NULL);
    daemon_end(d);
}

/* EOF while unowned: the take answers, then socket.closed by_peer. */
static void
test_give_eof(void **state)
{
    (void)state;
    int lfd = raw_listen("127.0.0.1", 0, 0), port = local_port(lfd), pfd;
    struct h_daemon *d = daemon_new(NULL);
    struct sockd_client *c = h_client_auto(d);
    json_t *r, *ev;
    long long s, t;
    char *tok;

    s = connect_ok(c, "127.0.0.1", port);
    pfd = accept_one(lfd);
    tok = give(c, s, 0);
    close_fd(pfd);
    h_sleep_ms(200);
    r = OK(c, "socket.take", "{s:s}", "token", tok);
    t = jint(r, "socket");
    json_decref(r);
    free(tok);
    ev = EV(c, "socket.closed", t);
    EXPECT_STR(jstr(ev, "reason"), "by_peer", "closed %s", jd(ev));
    json_decref(ev);
    daemon_end(d);
}

/* ======================================================================== */

static int
group_setup(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    if (!getenv("SOCKD_BIN")) {
        fprintf(stderr, "SOCKD_BIN is not set (path of the sockd binary)\n");
        return -1;
    }
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, t_cleanup)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_check_config_good),
        T(test_check_config_bad),
        T(test_policy_cidr),
        T(test_policy_port),
        T(test_policy_uid),
        T(test_policy_group),
        T(test_policy_default_deny),
        T(test_policy_bind_low_ports),
        T(test_policy_listen_implicit_bind),
        T(test_log_flags),
        T(test_attach_socketpair_under_policy),
        T(test_policy_sendto),
        T(test_policy_bypass_spellings),
        T(test_policy_host_names),
        T(test_rewrite),
        T(test_max_clients),
        T(test_max_sockets_per_client),
        T(test_max_send_buffer),
        T(test_max_message),
        T(test_max_pending_and_accept_timeout),
        T(test_reload),
        T(test_detach_connected),
        T(test_detach_readahead),
        T(test_detach_eof),
        T(test_detach_unsent),
        T(test_attach_connected),
        T(test_attach_listening),
        T(test_attach_udp_bound),
        T(test_attach_wrong),
        T(test_pipe),
        T(test_pipe_readahead_peer_first),
        T(test_pipe_splice_backpressure),
        T(test_stray_fds),
        T(test_give_take),
        T(test_take_other_uid),
        T(test_give_timeout),
        T(test_give_eof),
    };

    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
