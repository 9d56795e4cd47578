/*
 * systemd integration against the real daemon, with the service manager's side played by the
 * test: a listening socket passed at fd 3 with LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES set in the
 * child between fork and exec (as systemd does), a NOTIFY_SOCKET datagram socket the test reads,
 * WATCHDOG_USEC, and JOURNAL_STREAM naming the daemon's stderr.
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tc.h"

/* One daemon run with the test as its service manager. */
struct sdrun {
    pid_t pid;
    char dir[256];
    char fallback[320]; /* -s path: used only when socket activation does not apply */
    char act[320];      /* path of the socket the test passes at fd 3 */
    char conf[320];
    char log[320];    /* the daemon's stdout and stderr */
    char notify[320]; /* NOTIFY_SOCKET value: a path, or "@name" */
    int nfd;          /* the test's end of NOTIFY_SOCKET */
};

struct spawn_opts {
    int passfd;                /* placed at fd 3 with LISTEN_* set; -1 for none */
    int listen_pid_other;      /* LISTEN_PID names the test process, not the daemon */
    const char *watchdog_usec; /* WATCHDOG_USEC, NULL unset */
    int watchdog_pid_other;    /* WATCHDOG_PID names the test process */
    const char *journal;       /* "match": JOURNAL_STREAM = the log file; other text as is */
    int with_conf;             /* -c dir/sockd.conf */
};

static struct sdrun R;
static unsigned abstract_seq;

static long long
mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void
remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[600];

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

static void
print_log(const struct sdrun *r)
{
    FILE *f = fopen(r->log, "r");
    char line[2048];
    int n = 0;

    fprintf(stderr, "---- daemon log %s ----\n", r->log);
    if (!f)
        return;
    while (n++ < 500 && fgets(line, sizeof line, f))
        fputs(line, stderr);
    fclose(f);
    fprintf(stderr, "---- end of daemon log ----\n");
}

/* Whole log file as a string (malloc'ed). */
static char *
read_log(const struct sdrun *r)
{
    FILE *f = fopen(r->log, "r");
    char *text;
    long n;

    EXPECT_TRUE(f != NULL, "f");
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = calloc(1, (size_t)n + 1);
    EXPECT_TRUE(text != NULL, "text");
    EXPECT_INT(fread(text, 1, (size_t)n, f), (size_t)n, "fread(text, 1, (size_t)n, f)");
    fclose(f);
    return text;
}

static void
expect_log_has(const struct sdrun *r, const char *needle)
{
    char *text = read_log(r);
    int found = strstr(text, needle) != NULL;
    free(text);
    if (!found)
        print_log(r);
    EXPECT_TRUE(found, "daemon log lacks \"%s\"", needle);
}

/* A temp dir, and the NOTIFY_SOCKET receiver bound in it (or in the abstract namespace). */
static void
run_setup(struct sdrun *r, int abstract)
{
    struct sockaddr_un sa;
    socklen_t sl;

    signal(SIGPIPE, SIG_IGN);
    memset(r, 0, sizeof *r);
    r->nfd = -1;
    snprintf(r->dir, sizeof r->dir, "/tmp/sockd-sd-XXXXXX");
    EXPECT_TRUE(mkdtemp(r->dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(r->fallback, sizeof r->fallback, "%s/fallback.sock", r->dir);
    snprintf(r->act, sizeof r->act, "%s/activated.sock", r->dir);
    snprintf(r->conf, sizeof r->conf, "%s/sockd.conf", r->dir);
    snprintf(r->log, sizeof r->log, "%s/sockd.log", r->dir);
    if (abstract)
        snprintf(r->notify, sizeof r->notify, "@sockd-test-notify-%d-%u", (int)getpid(),
                 ++abstract_seq);
    else
        snprintf(r->notify, sizeof r->notify, "%s/notify.sock", r->dir);

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, r->notify, strlen(r->notify));
    if (abstract) {
        sa.sun_path[0] = '\0';
        sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(r->notify));
    } else {
        sl = (socklen_t)sizeof sa;
    }
    r->nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(r->nfd >= 0, "r->nfd >= 0");
    EXPECT_INT(bind(r->nfd, (struct sockaddr *)&sa, sl), 0, "bind: %s", strerror(errno));
}

static void
write_conf(const struct sdrun *r, const char *text)
{
    FILE *f = fopen(r->conf, "w");
    EXPECT_TRUE(f != NULL, "f");
    EXPECT_TRUE(fputs(text, f) >= 0, "fputs: %s", strerror(errno));
    EXPECT_INT(fclose(f), 0, "fclose: %s", strerror(errno));
}

/* A listening AF_UNIX stream socket at path, as a .socket unit would make it. */
static int
unix_listener(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    EXPECT_TRUE(fd >= 0, "fd >= 0");
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(fd, 16), 0, "listen: %s", strerror(errno));
    return fd;
}

static void
run_spawn(struct sdrun *r, const struct spawn_opts *o)
{
    const char *bin = getenv("SOCKD_BIN");

    if (!bin || !*bin) {
        fprintf(stderr, "SOCKD_BIN is not set (path of the sockd binary)\n");
        fail();
    }
    EXPECT_INT(access(bin, X_OK), 0, "access: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    r->pid = fork();
    EXPECT_TRUE(r->pid >= 0, "r->pid >= 0");
    if (r->pid == 0) {
        sigset_t none;
        char num[64];
        int lfd = open(r->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int nul = open("/dev/null", O_RDWR);
        if (lfd < 0 || nul < 0)
            _exit(126);
        dup2(nul, 0);
        dup2(lfd, 1);
        dup2(lfd, 2);
        /* The passed socket goes to fd 3, like systemd's SD_LISTEN_FDS_START, inheritable. */
        if (o->passfd >= 0) {
            if (o->passfd != 3 && dup2(o->passfd, 3) < 0)
                _exit(125);
            if (fcntl(3, F_SETFD, 0) < 0)
                _exit(125);
        }
        for (int i = o->passfd >= 0 ? 4 : 3; i < 65536; i++)
            close(i);
        signal(SIGPIPE, SIG_DFL);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        unsetenv("LISTEN_PID");
        unsetenv("LISTEN_FDS");
        unsetenv("LISTEN_FDNAMES");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        unsetenv("JOURNAL_STREAM");
        if (o->passfd >= 0) {
            /* After fork, before exec: the pid that will run sockd (or the parent's). */
            snprintf(num, sizeof num, "%d", (int)(o->listen_pid_other ? getppid() : getpid()));
            setenv("LISTEN_PID", num, 1);
            setenv("LISTEN_FDS", "1", 1);
            setenv("LISTEN_FDNAMES", "sockd", 1);
        }
        setenv("NOTIFY_SOCKET", r->notify, 1);
        if (o->watchdog_usec) {
            setenv("WATCHDOG_USEC", o->watchdog_usec, 1);
            if (o->watchdog_pid_other) {
                snprintf(num, sizeof num, "%d", (int)getppid());
                setenv("WATCHDOG_PID", num, 1);
            }
        }
        if (o->journal && !strcmp(o->journal, "match")) {
            struct stat st;
            if (fstat(2, &st) < 0)
                _exit(124);
            snprintf(num, sizeof num, "%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino);
            setenv("JOURNAL_STREAM", num, 1);
        } else if (o->journal) {
            setenv("JOURNAL_STREAM", o->journal, 1);
        }
        if (o->with_conf)
            execl(bin, bin, "-s", r->fallback, "-c", r->conf, "-v", (char *)NULL);
        else
            execl(bin, bin, "-s", r->fallback, "-v", (char *)NULL);
        _exit(127);
    }
    if (o->passfd >= 0)
        close(o->passfd); /* only the daemon holds the passed socket now */
}

/* Wait for the daemon to exit; 1 with *status, 0 on timeout. */
static int
run_wait(struct sdrun *r, int timeout_ms, int *status)
{
    long long deadline = h_now_ms() + timeout_ms;
    while (h_now_ms() < deadline) {
        pid_t p = waitpid(r->pid, status, WNOHANG);
        if (p == r->pid) {
            r->pid = 0;
            return 1;
        }
        h_sleep_ms(10);
    }
    return 0;
}

/* Next datagram on the notify socket into buf (NUL-terminated); 0 on timeout. */
static int
notify_recv(struct sdrun *r, char *buf, size_t len, int timeout_ms)
{
    struct pollfd p = {r->nfd, POLLIN, 0};
    int n = poll(&p, 1, timeout_ms);
    ssize_t got;

    if (n <= 0)
        return 0;
    got = recv(r->nfd, buf, len - 1, 0);
    EXPECT_TRUE(got >= 0, "got >= 0");
    buf[got] = '\0';
    return 1;
}

/* Does the message have this exact line? */
static int
has_line(const char *msg, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = msg; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, line, n) && (p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

/* The value of the line "KEY=value" (copied to out), or 0 when missing. */
static int
line_value(const char *msg, const char *key, char *out, size_t len)
{
    size_t n = strlen(key);
    for (const char *p = msg; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (!strncmp(p, key, n) && p[n] == '=') {
            size_t k = strcspn(p + n + 1, "\n");
            if (k >= len)
                k = len - 1;
            memcpy(out, p + n + 1, k);
            out[k] = '\0';
            return 1;
        }
    }
    return 0;
}

/* A state change: READY=1, RELOADING=1 or STOPPING=1 (not a WATCHDOG=1 ping, not STATUS= alone). */
static int
is_state(const char *msg)
{
    return has_line(msg, "READY=1") || has_line(msg, "RELOADING=1") || has_line(msg, "STOPPING=1");
}

/*
 * The next state-change message within timeout_ms; pings and status updates in between are
 * counted in *pings / copied into last_status (either may be NULL). Fails the test on timeout.
 */
static void
next_state(struct sdrun *r, char *buf, size_t len, int timeout_ms, int *pings, char *last_status)
{
    long long deadline = h_now_ms() + timeout_ms;
    for (;;) {
        long long left = deadline - h_now_ms();
        if (left <= 0 || !notify_recv(r, buf, len, (int)left)) {
            fprintf(stderr, "no READY/RELOADING/STOPPING notification within %d ms\n", timeout_ms);
            print_log(r);
            fail();
        }
        if (is_state(buf))
            return;
        if (has_line(buf, "WATCHDOG=1") && pings)
            (*pings)++;
        if (last_status)
            line_value(buf, "STATUS", last_status, 96);
    }
}

/* Expect the message in buf to be the state line; print it otherwise. */
static void
expect_notify_line(const char *buf, const char *line)
{
    EXPECT_TRUE(has_line(buf, line), "expected %s, got notification \"%s\"", line, buf);
}

static void
expect_exit(struct sdrun *r, int code)
{
    int status = 0;
    if (!run_wait(r, 10000, &status)) {
        fprintf(stderr, "sockd did not exit within 10 s\n");
        print_log(r);
        fail();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != code) {
        fprintf(stderr, "sockd exit status 0x%x, expected exit code %d\n", status, code);
        print_log(r);
    }
    EXPECT_TRUE(WIFEXITED(status), "WIFEXITED(status)");
    EXPECT_INT(WEXITSTATUS(status), code, "WEXITSTATUS(status)");
}

static void
expect_exit_failure(struct sdrun *r)
{
    int status = 0;
    if (!run_wait(r, 10000, &status)) {
        fprintf(stderr, "sockd did not exit within 10 s\n");
        print_log(r);
        fail();
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0) {
        fprintf(stderr, "sockd exit status 0x%x, expected a failure exit\n", status);
        print_log(r);
    }
    EXPECT_TRUE(WIFEXITED(status), "WIFEXITED(status)");
    EXPECT_TRUE(WEXITSTATUS(status) != 0, "WEXITSTATUS(status) != 0");
}

static int
run_teardown(void **state)
{
    (void)state;
    h_cleanup();
    if (R.pid > 0) {
        int status;
        kill(R.pid, SIGKILL);
        waitpid(R.pid, &status, 0);
        R.pid = 0;
    }
    if (R.nfd >= 0)
        close(R.nfd);
    R.nfd = -1;
    if (R.dir[0])
        remove_tree(R.dir);
    R.dir[0] = '\0';
    return 0;
}

/* One connect to path: 1 if something accepted. */
static int
probe(const char *path)
{
    struct sockaddr_un sa;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* daemon.ping over a fresh connection to path. */
static void
ping_at(const char *path)
{
    struct sockd_client *c = sockd_client_connect(path);
    json_t *res;

    if (!c)
        fprintf(stderr, "connect %s: %s\n", path, strerror(errno));
    EXPECT_TRUE(c != NULL, "c");
    res = h_ok(c, "daemon.ping", NULL);
    json_decref(res);
    sockd_client_close(c);
}

/*
 * Socket activation and the notify sequence: READY=1 with STATUS after listening on the passed
 * socket (and not on -s), RELOADING=1 + MONOTONIC_USEC then READY=1 around a good and a refused
 * reload, STOPPING=1 at SIGTERM, nothing after it; the passed socket's file stays at exit.
 */
static void
test_activation_and_notify_order(void **state)
{
    struct spawn_opts o = {.watchdog_usec = "400000", .with_conf = 1};
    char msg[1024], val[96], status[96] = "";
    struct stat st;
    long long t0, t1, mono;
    (void)state;

    run_setup(&R, 0);
    write_conf(&R, "log-level info\nmax-clients 64\n");
    o.passfd = unix_listener(R.act);
    run_spawn(&R, &o);

    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    EXPECT_TRUE(line_value(msg, "STATUS", val, sizeof val),
                "line_value(msg, \"STATUS\", val, sizeof val)");
    EXPECT_STR(val, "0 clients, 0 sockets", "val");

    /* The passed socket is served; the -s path was never created. */
    ping_at(R.act);
    EXPECT_INT(stat(R.fallback, &st), -1, "stat: %s", strerror(errno));
    EXPECT_INT(errno, ENOENT, "errno");
    expect_log_has(&R, "socket activation");
    expect_log_has(&R, "(sockd)");

    /* STATUS= follows the counters (refreshed once a second, sent on change). */
    struct sockd_client *c = sockd_client_connect(R.act);
    EXPECT_TRUE(c != NULL, "c");
    long long h = h_open(c, "tcp");
    EXPECT_TRUE(h > 0, "h > 0");
    {
        long long deadline = h_now_ms() + 4000;
        while (strcmp(status, "1 client, 1 socket") != 0 && h_now_ms() < deadline) {
            if (notify_recv(&R, msg, sizeof msg, 200)) {
                EXPECT_TRUE(!is_state(msg), "is_state(msg)");
                line_value(msg, "STATUS", status, sizeof status);
            }
        }
        if (strcmp(status, "1 client, 1 socket") != 0)
            fprintf(stderr, "last STATUS: \"%s\"\n", status);
        EXPECT_STR(status, "1 client, 1 socket", "status");
    }

    /* A reload that takes. */
    t0 = mono_usec();
    EXPECT_INT(kill(R.pid, SIGHUP), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    t1 = mono_usec();
    expect_notify_line(msg, "RELOADING=1");
    EXPECT_TRUE(line_value(msg, "MONOTONIC_USEC", val, sizeof val),
                "line_value(msg, \"MONOTONIC_USEC\", val, sizeof val)");
    mono = strtoll(val, NULL, 10);
    if (mono < t0 || mono > t1)
        fprintf(stderr, "MONOTONIC_USEC=%lld not within [%lld, %lld]\n", mono, t0, t1);
    EXPECT_TRUE(mono >= t0 && mono <= t1, "mono >= t0 && mono <= t1");
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    EXPECT_TRUE(line_value(msg, "STATUS", val, sizeof val),
                "line_value(msg, \"STATUS\", val, sizeof val)");
    EXPECT_STR(val, "1 client, 1 socket", "val");
    expect_log_has(&R, "configuration reloaded");

    /* A refused reload: the same pair, the old configuration kept. */
    write_conf(&R, "no-such-directive 1\n");
    EXPECT_INT(kill(R.pid, SIGHUP), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "RELOADING=1");
    EXPECT_TRUE(line_value(msg, "MONOTONIC_USEC", val, sizeof val),
                "line_value(msg, \"MONOTONIC_USEC\", val, sizeof val)");
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    expect_log_has(&R, "reload refused");
    ping_at(R.act);

    /* Stop: STOPPING=1 is the last word; the socket unit's file is left alone. */
    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "STOPPING=1");
    json_t *ev = h_event(c, "socket.closed", h, 5000);
    json_decref(ev);
    sockd_client_close(c);
    expect_exit(&R, 0);
    while (notify_recv(&R, msg, sizeof msg, 100)) {
        fprintf(stderr, "notification after STOPPING=1: \"%s\"\n", msg);
        fail();
    }
    EXPECT_INT(stat(R.act, &st), 0, "stat: %s", strerror(errno));
    EXPECT_TRUE(S_ISSOCK(st.st_mode), "S_ISSOCK(st.st_mode)");
    EXPECT_INT(stat(R.fallback, &st), -1, "stat: %s", strerror(errno));
}

/* WATCHDOG_USEC=400000: a ping every 200 ms, so 3..12 of them in 1.5 s (generous). */
static void
test_watchdog_cadence(void **state)
{
    struct spawn_opts o = {.watchdog_usec = "400000"};
    char msg[1024];
    int pings = 0;
    (void)state;

    run_setup(&R, 0);
    o.passfd = unix_listener(R.act);
    run_spawn(&R, &o);
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");

    long long start = h_now_ms(), first = 0, last = 0;
    while (h_now_ms() - start < 1500) {
        int left = (int)(1500 - (h_now_ms() - start));
        if (left <= 0 || !notify_recv(&R, msg, sizeof msg, left))
            break;
        EXPECT_TRUE(!is_state(msg), "is_state(msg)");
        if (has_line(msg, "WATCHDOG=1")) {
            last = h_now_ms();
            if (pings++ == 0)
                first = last;
        }
    }
    fprintf(stderr, "watchdog: %d pings in 1.5 s (first after %lld ms, mean gap %lld ms)\n", pings,
            first - start, pings > 1 ? (last - first) / (pings - 1) : 0);
    EXPECT_TRUE(pings >= 3, "pings >= 3");
    EXPECT_TRUE(pings <= 12, "pings <= 12");

    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "STOPPING=1");
    expect_exit(&R, 0);
}

/* WATCHDOG_PID naming another process: the watchdog is not ours, no pings. */
static void
test_watchdog_other_pid(void **state)
{
    struct spawn_opts o = {.passfd = -1, .watchdog_usec = "200000", .watchdog_pid_other = 1};
    char msg[1024];
    (void)state;

    run_setup(&R, 0);
    run_spawn(&R, &o);
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    while (notify_recv(&R, msg, sizeof msg, 700)) {
        if (has_line(msg, "WATCHDOG=1")) {
            fprintf(stderr, "WATCHDOG=1 although WATCHDOG_PID is another process\n");
            fail();
        }
    }
    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    expect_exit(&R, 0);
}

/* Something at fd 3 that is not a listening Unix stream socket: refused, non-zero exit. */
static void
refuse_case(int fd, const char *why)
{
    struct spawn_opts o = {.passfd = fd};
    char msg[1024];

    run_spawn(&R, &o);
    expect_exit_failure(&R);
    expect_log_has(&R, "socket activation");
    expect_log_has(&R, why);
    expect_log_has(&R, "sockd needs a listening Unix stream socket");
    while (notify_recv(&R, msg, sizeof msg, 0))
        EXPECT_TRUE(!has_line(msg, "READY=1"), "has_line(msg, \"READY=1\")");
    EXPECT_TRUE(!probe(R.fallback), "probe(R.fallback)"); /* no fallback to -s either */
}

static void
test_refuse_tcp(void **state)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    (void)state;

    run_setup(&R, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0, "bind: %s", strerror(errno));
    EXPECT_INT(listen(fd, 4), 0, "listen: %s", strerror(errno));
    refuse_case(fd, "not a Unix-domain socket (AF_INET)");
}

static void
test_refuse_socketpair(void **state)
{
    int sv[2];
    (void)state;

    run_setup(&R, 0);
    EXPECT_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0, "socketpair: %s",
               strerror(errno));
    refuse_case(sv[0], "not listening");
    close(sv[1]);
}

static void
test_refuse_datagram_and_file(void **state)
{
    int dg, file;
    (void)state;
    run_setup(&R, 0);
    dg = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(dg >= 0, "dg >= 0");
    refuse_case(dg, "not a stream socket");
    file = open("/dev/null", O_RDONLY | O_CLOEXEC);
    EXPECT_TRUE(file >= 0, "file >= 0");
    refuse_case(file, "is not a socket");
}

/* LISTEN_PID naming another process: the variables are ignored and -s is used. */
static void
test_foreign_listen_pid(void **state)
{
    struct spawn_opts o = {0};
    char msg[1024];
    struct stat st;
    (void)state;

    run_setup(&R, 0);
    o.passfd = unix_listener(R.act);
    o.listen_pid_other = 1;
    run_spawn(&R, &o);
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    ping_at(R.fallback);
    expect_log_has(&R, "is not this process");
    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    expect_exit(&R, 0);
    /* The -s socket is the daemon's own: removed at exit. */
    EXPECT_INT(stat(R.fallback, &st), -1, "stat: %s", strerror(errno));
}

/* NOTIFY_SOCKET in the abstract namespace ("@name"). */
static void
test_abstract_notify_socket(void **state)
{
    struct spawn_opts o = {.passfd = -1};
    char msg[1024];
    (void)state;

    run_setup(&R, 1);
    run_spawn(&R, &o);
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    ping_at(R.fallback);
    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "STOPPING=1");
    expect_exit(&R, 0);
}

/* Every log line carries a "<N>" priority when stderr is the JOURNAL_STREAM, none otherwise. */
static void
check_journal(const char *journal, int want_prefix)
{
    struct spawn_opts o = {.passfd = -1, .journal = journal};
    char msg[1024];
    int lines = 0, info = 0;

    run_spawn(&R, &o);
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "READY=1");
    ping_at(R.fallback);
    EXPECT_INT(kill(R.pid, SIGTERM), 0, "kill: %s", strerror(errno));
    next_state(&R, msg, sizeof msg, 5000, NULL, NULL);
    expect_notify_line(msg, "STOPPING=1");
    expect_exit(&R, 0);

    char *text = read_log(&R), *save = NULL;
    for (char *l = strtok_r(text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        int prefixed = l[0] == '<' && l[1] >= '0' && l[1] <= '7' && l[2] == '>';
        lines++;
        if (!strncmp(l, "<6>", 3))
            info++;
        if (prefixed != want_prefix) {
            fprintf(stderr, "JOURNAL_STREAM=%s: unexpected line \"%s\"\n", journal, l);
            print_log(&R);
            free(text);
            fail();
        }
        if (!want_prefix)
            EXPECT_INT(strncmp(l, "sockd: ", 7), 0, "strncmp(l, \"sockd: \", 7)");
    }
    free(text);
    EXPECT_TRUE(lines >= 3, "lines >= 3");
    if (want_prefix)
        EXPECT_TRUE(info >= 3, "info >= 3");
}

static void
test_journal_stream(void **state)
{
    (void)state;
    run_setup(&R, 0);
    check_journal("match", 1);
    check_journal("1:1", 0); /* a journal stream that is not our stderr (redirected) */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_activation_and_notify_order, run_teardown),
        cmocka_unit_test_teardown(test_watchdog_cadence, run_teardown),
        cmocka_unit_test_teardown(test_watchdog_other_pid, run_teardown),
        cmocka_unit_test_teardown(test_refuse_tcp, run_teardown),
        cmocka_unit_test_teardown(test_refuse_socketpair, run_teardown),
        cmocka_unit_test_teardown(test_refuse_datagram_and_file, run_teardown),
        cmocka_unit_test_teardown(test_foreign_listen_pid, run_teardown),
        cmocka_unit_test_teardown(test_abstract_notify_socket, run_teardown),
        cmocka_unit_test_teardown(test_journal_stream, run_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
