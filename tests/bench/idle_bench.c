/* idle_bench: many idle TCP connections, held through sockd or directly, for the idle-memory
 * and dispatch-scaling rows of tests/bench/run.
 *
 *   idle_bench listen [-l LISTENERS] [-f STATUSFILE] [-T LIFETIME]
 *       The far end: LISTENERS (default 4) child processes, each listening on its own
 *       127.0.0.1 ephemeral port (backlog 65535, the kernel caps it at somaxconn), accepting
 *       and holding every connection (epoll; it never reads data, and closes its side when
 *       the peer closes).  One process per listener, so each holds at most its own
 *       RLIMIT_NOFILE.  Prints "ports=P1,P2,..." on one line, then every 100 ms writes
 *       "open=X accepted=Y" (all listeners together) to STATUSFILE (replaced atomically).
 *   idle_bench sockd -s SOCK -n N -p P1,P2,... [-w WINDOW] [-T LIFETIME]
 *       One control connection to sockd: N tcp sockets, each socket.open then socket.connect
 *       to 127.0.0.1:Pi (round robin over the ports; an item ADDR:P names another loopback
 *       address, e.g. 127.0.0.2:6379), pipelined: up to WINDOW (default 1000)
 *       sockets between socket.open and socket.connected at once.  Every response and
 *       notification is checked.  The first error response (a limit, EMFILE...) or
 *       socket.closed stops the opening: what was reached is held and reported.
 *   idle_bench tcp -n N -p P1,P2,... [-w WINDOW] [-T LIFETIME]
 *       The same N connections made directly (non-blocking connect, WINDOW in progress at
 *       once, round robin over the ports) by as many child processes as RLIMIT_NOFILE needs.
 *       The first connect error stops the opening, as for sockd.
 *
 *   sockd and tcp print, once every connection is made (or the opening stopped):
 *       held=K wanted=N seconds=S stop=REASON      (stop=none when K = N)
 *   then hold everything, idle, until SIGTERM/SIGINT, stdin's EOF when -i is given, or
 *   LIFETIME seconds (default 600): all the connections close when the process exits (for
 *   sockd: the control connection closes, and sockd closes every socket it owns).
 *
 * Every wait is bounded; a protocol violation exits 3 with a message.
 * Built by tests/bench/run with: cc -O2 idle_bench.c -ljansson
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#define MAXPORTS 64

static const char *what = "idle_bench";
static double lifetime = 600;
static volatile sig_atomic_t stop_flag;
static int watch_stdin;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void
die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "idle_bench %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(3);
}

static void
on_stop(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void
on_alarm(int sig)
{
    (void)sig;
    static const char m[] = "idle_bench: hard time limit reached\n";
    (void)!write(2, m, sizeof m - 1);
    _exit(3);
}

/* "P1,P2,..." or "ADDR:P1,...": ports on 127.0.0.1, or on another loopback IPv4 address */
static int
parse_ports(const char *s, int *ports, uint32_t *addrs)
{
    int n = 0;
    while (*s != '\0') {
        char *end;
        const char *colon = strchr(s, ':'), *comma = strchr(s, ',');
        uint32_t a = INADDR_LOOPBACK;
        if (n == MAXPORTS)
            die("more than %d destinations (-p)", MAXPORTS);
        if (colon != NULL && (comma == NULL || colon < comma)) {
            char host[64];
            struct in_addr ia;
            if ((size_t)(colon - s) >= sizeof host)
                die("bad address in -p");
            memcpy(host, s, (size_t)(colon - s));
            host[colon - s] = '\0';
            if (inet_pton(AF_INET, host, &ia) != 1 || (ntohl(ia.s_addr) >> 24) != 127)
                die("-p: %s is not a 127.x.y.z address", host);
            a = ntohl(ia.s_addr);
            s = colon + 1;
        }
        long p = strtol(s, &end, 10);
        if (end == s || p <= 0 || p > 65535)
            die("bad port list (-p [ADDR:]P1,..., at most %d)", MAXPORTS);
        addrs[n] = a;
        ports[n++] = (int)p;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0')
            die("bad port list");
    }
    if (n == 0)
        die("no ports (-p)");
    return n;
}

static long
fd_limit(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    return (long)rl.rlim_cur;
}

/* Hold until told to stop (bounded by the lifetime); run poll_fd's input through cb. */
static void
hold(int poll_fd, void (*cb)(void))
{
    double end = now() + lifetime;
    while (!stop_flag && now() < end) {
        struct pollfd p[2] = {{poll_fd, POLLIN, 0}, {watch_stdin ? 0 : -1, POLLIN, 0}};
        int r = poll(p, 2, 200);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (r <= 0)
            continue;
        if (p[0].revents && cb != NULL)
            cb();
        if (p[1].revents) {
            char b[256];
            if (read(0, b, sizeof b) <= 0)
                break;
        }
    }
}

/* ======================= listen: the far end ======================= */

struct counters {
    long open[MAXPORTS], accepted[MAXPORTS];
};

static void
listener_child(int lfd, volatile long *open, volatile long *accepted)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        _exit(1);
    double end = now() + lifetime;
    struct epoll_event evs[256];
    while (now() < end) {
        int n = epoll_wait(ep, evs, 256, 500);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                for (int k = 0; k < 256; k++) {
                    int c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0)
                        break; /* EAGAIN; EMFILE leaves it in the backlog */
                    struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce) < 0) {
                        close(c);
                        continue;
                    }
                    (*open)++;
                    (*accepted)++;
                }
            } else {
                char b[4096];
                ssize_t r = read(fd, b, sizeof b);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
                    close(fd); /* the peer closed (or reset): free our side */
                    (*open)--;
                }
            }
        }
    }
    _exit(0);
}

static int
run_listen(int nl, const char *status)
{
    if (nl < 1 || nl > MAXPORTS)
        die("-l 1..%d", MAXPORTS);
    struct counters *cnt = mmap(NULL, sizeof *cnt, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (cnt == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    memset(cnt, 0, sizeof *cnt);
    pid_t kids[MAXPORTS];
    int ports[MAXPORTS];
    for (int i = 0; i < nl; i++) {
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
        struct sockaddr_in sin = loopback(0);
        socklen_t sl = sizeof sin;
        if (lfd < 0)
            die("socket: %s", strerror(errno));
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(lfd, 65535) < 0 ||
            getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0)
            die("bind/listen on 127.0.0.1: %s", strerror(errno));
        ports[i] = ntohs(sin.sin_port);
        fflush(NULL);
        kids[i] = fork();
        if (kids[i] < 0)
            die("fork: %s", strerror(errno));
        if (kids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            signal(SIGTERM, SIG_DFL);
            listener_child(lfd, &cnt->open[i], &cnt->accepted[i]);
        }
        close(lfd);
    }
    printf("ports=");
    for (int i = 0; i < nl; i++)
        printf("%s%d", i ? "," : "", ports[i]);
    printf("\n");
    fflush(stdout);
    double end = now() + lifetime;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", status ? status : "");
    while (!stop_flag && now() < end) {
        if (status != NULL) {
            long o = 0, a = 0;
            for (int i = 0; i < nl; i++) {
                o += cnt->open[i];
                a += cnt->accepted[i];
            }
            FILE *f = fopen(tmp, "w");
            if (f != NULL) {
                fprintf(f, "open=%ld accepted=%ld\n", o, a);
                fclose(f);
                rename(tmp, status);
            }
        }
        usleep(100000);
    }
    for (int i = 0; i < nl; i++)
        kill(kids[i], SIGKILL);
    for (int i = 0; i < nl; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}

/* ======================= sockd: N sockets through the daemon ======================= */

static int ctl_fd = -1;
static char *in;
static size_t in_len, in_cap = 1 << 20;
static char *out;
static size_t out_len, out_off, out_cap = 1 << 20;
static long long want, opened, connect_sent, connected, open_sent, open_answered;
static const char *stop_reason = "none";
static int stopped;
static int nports, ports[MAXPORTS];
static uint32_t paddrs[MAXPORTS];

static void
ctl_flush(void)
{
    if (send_pending(ctl_fd, out, &out_off, out_len) < 0)
        die("send to sockd: %s", strerror(errno));
    if (out_off == out_len)
        out_off = out_len = 0;
}

static void ctl_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void
ctl_sendf(const char *fmt, ...)
{
    va_list ap;
    if (out_cap - out_len < 512) {
        if (out_off > 0) {
            memmove(out, out + out_off, out_len - out_off);
            out_len -= out_off;
            out_off = 0;
        }
        if (out_cap - out_len < 512) {
            out_cap *= 2;
            if (out_cap > (256u << 20))
                die("more than 256 MiB of requests unsent: sockd does not read");
            out = realloc(out, out_cap);
            if (out == NULL)
                die("out of memory");
        }
    }
    va_start(ap, fmt);
    out_len += (size_t)vsnprintf(out + out_len, 512, fmt, ap);
    va_end(ap);
}

#define CONNECT_ID0 4000000000LL

static void
stop_opening(const char *reason)
{
    if (!stopped) {
        stopped = 1;
        stop_reason = reason;
    }
}

static void
handle_line(const char *line, size_t len)
{
    json_error_t jerr;
    int trunc = (int)(len > 300 ? 300 : len);
    json_t *j = json_loadb(line, len, 0, &jerr);
    if (j == NULL)
        die("invalid JSON from sockd (%s): %.*s", jerr.text, trunc, line);
    const char *ver = json_string_value(json_object_get(j, "jsonrpc"));
    if (ver == NULL || strcmp(ver, "2.0") != 0)
        die("line without jsonrpc 2.0: %.*s", trunc, line);
    const char *m = json_string_value(json_object_get(j, "method"));
    if (m == NULL) {
        json_t *id = json_object_get(j, "id"), *err = json_object_get(j, "error");
        if (!json_is_integer(id))
            die("response without an integer id: %.*s", trunc, line);
        long long i = json_integer_value(id);
        if (err != NULL) {
            /* a limit or a system error: stop here, hold what was reached */
            static char reason[160];
            json_t *d = json_object_get(err, "data");
            const char *r = json_string_value(json_object_get(d, "reason"));
            const char *lim = json_string_value(json_object_get(d, "limit"));
            const char *det = json_string_value(json_object_get(d, "detail"));
            snprintf(reason, sizeof reason, "%s:%lld:%s", i >= CONNECT_ID0 ? "connect" : "open",
                     (long long)json_integer_value(json_object_get(err, "code")),
                     lim ? lim : det ? det : r ? r : "error");
            for (char *p = reason; *p; p++)
                if (*p == ' ')
                    *p = '_';
            stop_opening(reason);
            if (i < CONNECT_ID0)
                open_answered++;
            else
                connect_sent--; /* that socket stays open, unconnected */
            json_decref(j);
            return;
        }
        json_t *res = json_object_get(j, "result");
        if (!json_is_object(res))
            die("response without a result object: %.*s", trunc, line);
        if (i >= CONNECT_ID0) {
            json_decref(j);
            return; /* socket.connect answered {}; socket.connected follows */
        }
        json_t *s = json_object_get(res, "socket");
        if (!json_is_integer(s) || json_integer_value(s) <= 0)
            die("socket.open result without a socket: %.*s", trunc, line);
        open_answered++;
        opened++;
        if (!stopped) {
            int k = (int)((i - 1) % nports);
            uint32_t a = paddrs[k];
            ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.connect\",\"params\":"
                      "{\"socket\":%lld,\"address\":\"%u.%u.%u.%u:%d\"}}\n",
                      CONNECT_ID0 + i, (long long)json_integer_value(s), a >> 24, (a >> 16) & 255,
                      (a >> 8) & 255, a & 255, ports[k]);
            connect_sent++;
        }
        json_decref(j);
        return;
    }
    json_t *p = json_object_get(j, "params");
    if (strcmp(m, "socket.connected") == 0) {
        connected++;
    } else if (strcmp(m, "socket.closed") == 0) {
        static char reason[160];
        const char *r = json_string_value(json_object_get(p, "reason"));
        const char *det = json_string_value(json_object_get(p, "detail"));
        snprintf(reason, sizeof reason, "closed:%s:%s", r ? r : "?", det ? det : "");
        for (char *q = reason; *q; q++)
            if (*q == ' ')
                *q = '_';
        stop_opening(reason);
        connect_sent--;
    } else {
        die("unexpected notification: %.*s", trunc, line);
    }
    json_decref(j);
}

static void
ctl_read(void)
{
    for (;;) {
        if (in_cap - in_len < 65536) {
            in_cap *= 2;
            if (in_cap > (64u << 20))
                die("a line from sockd is longer than 64 MiB");
            in = realloc(in, in_cap);
            if (in == NULL)
                die("out of memory");
        }
        ssize_t n = read(ctl_fd, in + in_len, in_cap - in_len);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("read from sockd: %s", strerror(errno));
        }
        if (n == 0)
            die("sockd closed the control connection");
        size_t scan = in_len;
        in_len += (size_t)n;
        char *q = in, *end = in + in_len, *nl;
        while ((nl = memchr(q + scan, '\n', (size_t)(end - q - scan))) != NULL) {
            handle_line(q, (size_t)(nl - q));
            q = nl + 1;
            scan = 0;
        }
        in_len = (size_t)(end - q);
        memmove(in, q, in_len);
    }
}

static void
ctl_idle_read(void)
{
    ctl_read();
}

static int
run_sockd(const char *path, long long n, int window)
{
    if (path == NULL)
        die("no sockd socket path (-s)");
    ctl_fd = unix_connect(path);
    if (ctl_fd < 0)
        die("connect %s: %s", path, strerror(errno));
    in = malloc(in_cap);
    out = malloc(out_cap);
    if (in == NULL || out == NULL)
        die("out of memory");
    want = n;
    double t0 = now(), last = t0, deadline = t0 + lifetime;
    long long last_count = 0;
    for (;;) {
        /* socket.open while fewer than window sockets are on their way */
        while (!stopped && open_sent < want && (open_sent - connected) < window) {
            open_sent++;
            ctl_sendf("{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":\"socket.open\",\"params\":"
                      "{\"type\":\"tcp\"}}\n",
                      open_sent);
        }
        ctl_flush();
        if (open_answered == open_sent && connected == connect_sent && (stopped || open_sent == want))
            break;
        double t = now();
        if (t > deadline || stop_flag)
            die("gave up: %lld sockets opened, %lld connected of %lld (stop=%s)", opened, connected,
                want, stop_reason);
        if (connected + open_answered != last_count) {
            last_count = connected + open_answered;
            last = t;
        } else if (t - last > 30) {
            die("no progress for 30 s: %lld opened, %lld connect sent, %lld connected", opened,
                connect_sent, connected);
        }
        struct pollfd p = {ctl_fd, (short)(POLLIN | (out_len > out_off ? POLLOUT : 0)), 0};
        int r = poll(&p, 1, 200);
        if (r < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)))
            ctl_read();
    }
    printf("held=%lld wanted=%lld seconds=%.3f stop=%s\n", connected, want, now() - t0,
           stop_reason);
    fflush(stdout);
    hold(ctl_fd, ctl_idle_read);
    close(ctl_fd);
    return 0;
}

/* ======================= tcp: N direct connections ======================= */

/* Make n connections in this process; write the count reached (and why it stopped) to wfd. */
static void
tcp_child(long long first, long long n, int window, int wfd)
{
    int *fds = malloc((size_t)n * sizeof *fds);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (fds == NULL || ep < 0)
        _exit(1);
    long long started = 0, done = 0, inprog = 0;
    char reason[160] = "none";
    int failed = 0;
    double deadline = now() + lifetime, last = now();
    while (done < n && !(failed && inprog == 0)) {
        while (!failed && started < n && inprog < window) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                snprintf(reason, sizeof reason, "socket:%s", strerror(errno));
                failed = 1;
                break;
            }
            int d = (int)((first + started) % nports);
            struct sockaddr_in sin = loopback_at(paddrs[d], ports[d]);
            if (connect(fd, (struct sockaddr *)&sin, sizeof sin) < 0 && errno != EINPROGRESS) {
                snprintf(reason, sizeof reason, "connect:%s", strerror(errno));
                close(fd);
                failed = 1;
                break;
            }
            struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)started};
            fds[started] = fd;
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
                _exit(1);
            started++;
            inprog++;
        }
        if (now() > deadline) {
            snprintf(reason, sizeof reason, "timeout");
            break;
        }
        if (now() - last > 30) {
            snprintf(reason, sizeof reason, "no_progress_30s");
            break;
        }
        struct epoll_event evs[512];
        int k = epoll_wait(ep, evs, 512, 200);
        for (int i = 0; i < k; i++) {
            long long idx = (long long)evs[i].data.u64;
            int fd = fds[idx], err = 0;
            socklen_t el = sizeof err;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
            epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
            inprog--;
            last = now();
            if (err != 0) {
                if (!failed)
                    snprintf(reason, sizeof reason, "connect:%s", strerror(err));
                failed = 1;
                close(fd);
                fds[idx] = -1;
            } else {
                done++;
            }
        }
    }
    for (char *q = reason; *q; q++)
        if (*q == ' ')
            *q = '_';
    dprintf(wfd, "%lld %s\n", done, reason);
    close(wfd);
    /* hold, idle, until the parent dies or kills us */
    double end = now() + lifetime;
    while (now() < end)
        sleep(1);
    _exit(0);
}

static int
run_tcp(long long n, int window)
{
    long per = fd_limit() - 64;
    if (per < 100)
        die("RLIMIT_NOFILE too small");
    int nkids = (int)((n + per - 1) / per);
    if (nkids > 256)
        die("too many processes needed (%d)", nkids);
    pid_t kids[256];
    int rfd[256];
    double t0 = now();
    for (int i = 0; i < nkids; i++) {
        long long first = (long long)i * per, cnt = n - first < per ? n - first : per;
        int pfd[2];
        if (pipe2(pfd, O_CLOEXEC) < 0)
            die("pipe: %s", strerror(errno));
        fflush(NULL);
        kids[i] = fork();
        if (kids[i] < 0)
            die("fork: %s", strerror(errno));
        if (kids[i] == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            signal(SIGTERM, SIG_DFL);
            signal(SIGINT, SIG_DFL);
            close(pfd[0]);
            tcp_child(first, cnt, window, pfd[1]);
        }
        close(pfd[1]);
        rfd[i] = pfd[0];
    }
    long long held = 0;
    char reason[200] = "none";
    for (int i = 0; i < nkids; i++) {
        char b[256];
        FILE *f = fdopen(rfd[i], "r");
        long long d = 0;
        char r[200];
        if (f == NULL || fgets(b, sizeof b, f) == NULL || sscanf(b, "%lld %199s", &d, r) != 2)
            die("connecting child %d failed", i);
        fclose(f);
        held += d;
        if (strcmp(r, "none") != 0 && strcmp(reason, "none") == 0)
            snprintf(reason, sizeof reason, "%s", r);
    }
    printf("held=%lld wanted=%lld seconds=%.3f stop=%s\n", held, n, now() - t0, reason);
    fflush(stdout);
    hold(-1, NULL);
    for (int i = 0; i < nkids; i++)
        kill(kids[i], SIGKILL);
    for (int i = 0; i < nkids; i++)
        waitpid(kids[i], NULL, 0);
    return 0;
}

static void
usage(void)
{
    fprintf(stderr, "usage: idle_bench listen [-l LISTENERS] [-f STATUSFILE] [-T LIFETIME]\n"
                    "       idle_bench sockd -s SOCK -n N -p P1,P2,... [-w WINDOW] [-i] [-T LIFETIME]\n"
                    "       idle_bench tcp -n N -p P1,P2,... [-w WINDOW] [-i] [-T LIFETIME]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    what = argv[1];
    const char *path = NULL, *status = NULL, *plist = NULL;
    long long n = 0;
    int window = 1000, nl = 4, ch;
    optind = 2;
    while ((ch = getopt(argc, argv, "s:n:p:w:l:f:T:i")) != -1) {
        switch (ch) {
        case 's': path = optarg; break;
        case 'n': n = atoll(optarg); break;
        case 'p': plist = optarg; break;
        case 'w': window = atoi(optarg); break;
        case 'l': nl = atoi(optarg); break;
        case 'f': status = optarg; break;
        case 'T': lifetime = atof(optarg); break;
        case 'i': watch_stdin = 1; break;
        default: usage();
        }
    }
    if (lifetime <= 0 || lifetime > 7200 || window < 1 || window > 100000)
        usage();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)lifetime + 60);
    if (strcmp(what, "listen") == 0)
        return run_listen(nl, status);
    if (n < 1 || n > 10000000 || plist == NULL)
        usage();
    nports = parse_ports(plist, ports, paddrs);
    if (strcmp(what, "sockd") == 0)
        return run_sockd(path, n, window);
    if (strcmp(what, "tcp") == 0)
        return run_tcp(n, window);
    usage();
}
