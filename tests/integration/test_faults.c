/*
 * Fault tests against the real daemon (sockd-protocol.7: TRANSPORT AND FRAMING, FLOW CONTROL AND
 * LIMITS; sockd.8: LIMITS, SIGTERM; ctl.c stall/accept handling; sock_accept.c accept-timeout).
 * test_robust.c covers one client killed mid-transfer, one client that never reads, one
 * half-written line and a quiet SIGTERM; these tests push the same guarantees to scale and to
 * hostile timing:
 *
 *   test_killed_clients        1 000 clients mid-line, 300 mid-TLS-handshake and 100 with output
 *                              pending, in forked processes that are SIGKILLed: fds back to the
 *                              baseline every time, RSS within 5 % + 2 MiB after warm-up cycles;
 *                              then all 1 400 at once.
 *   test_slow_reader_bulk      1 GiB (FAULT_BYTES) through one socket to a client that reads its
 *                              notifications 2.5x slower than the daemon could deliver: RSS
 *                              bounded, other clients' pings and echoes prompt, every byte in
 *                              order.
 *   test_paused_client_keeps_its_line   a client paused by the daemon's own backpressure in the
 *                              middle of a long request is not dropped as "stalled".
 *   test_expensive_requests    one client pipelining context.create does not starve another.
 *   test_stalled_connections   2 000 control connections stalled mid-line, 300 TLS handshakes
 *                              that never finish, 100 pending connections never accepted: all
 *                              closed by client-line-timeout / accept-timeout while a normal
 *                              client is served promptly; a slow but progressing client is kept.
 *   test_peer_faults           peers that reset, half-close, or trickle one byte per ms.
 *   test_max_clients_burst     200 connections past max-clients 5: each gets the one refusal line
 *                              and EOF; the 5 are served throughout; a freed slot is reused.
 *   test_fd_exhaustion         the daemon at RLIMIT_NOFILE 64: connect fails cleanly with EMFILE,
 *                              accepting pauses (no busy loop), all recovers once fds are freed.
 *   test_sigterm_under_load    50 clients x 3 streaming sockets, 5 clients not reading: SIGTERM
 *                              tells every reading client about every socket, exit 0 within 3 s,
 *                              socket file gone, every peer connection closed.
 *
 * About 50 s on a 2-core machine. FAULT_ONLY=<glob> runs a subset. Timing bounds are for native
 * speed; under valgrind (valgrind-suite.sh) they are expected to fail and are reported as test
 * failures, not as leaks.
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "harness.h"
#include "tc.h"

/* Every test runs its own daemon (configs differ); teardown kills whatever a failure left. */
static struct h_daemon D;

/* ------------------------------------------------------------------------------------------ */
/* small helpers usable in forked children (no cmocka in them)                                 */

static int
unix_connect(const char *path)
{
    struct sockaddr_un sa;
    int fd;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int
tcp_connect_raw(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* A listening TCP socket on 127.0.0.1 with a random port. */
static int
tcp_listen_any(int *port, int backlog, int rcvbuf)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0) /* inherited by accepted sockets, applied before the window is agreed */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, backlog) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static int
write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pfd = {fd, POLLOUT, 0};
                poll(&pfd, 1, 100);
                continue;
            }
            return -1;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

static int
readable(int fd, int ms)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    int r;
    do
        r = poll(&pfd, 1, ms);
    while (r < 0 && errno == EINTR);
    return r == 1;
}

/* Non-blocking drain: 1 when fd has ended (EOF or reset), 0 while it is open. */
static int
drained_ended(int fd)
{
    char sink[16384];
    for (;;) {
        ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
        if (n == 0)
            return 1;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : 1;
    }
}

/* CPU time (user + system) a process has used, in ms. */
static long long
proc_cpu_ms(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;
    size_t n;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    p = strrchr(buf, ')'); /* comm may hold spaces */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st) * 1000 / sysconf(_SC_CLK_TCK);
}

/*
 * Another client's request, timed two ways: the wall time (printed) and the work the daemon did
 * before it answered, its CPU time from /proc over the wait (asserted). On a loaded machine the
 * wall time says more about the machine than about the daemon; the work it put first does not.
 */
struct waited {
    long long t0, c0;
    long long wall_max, work_max; /* ms */
};

static void
waited_begin(struct waited *w)
{
    w->t0 = h_now_ms();
    w->c0 = proc_cpu_ms(D.pid);
}

static void
waited_end(struct waited *w)
{
    long long wall = h_now_ms() - w->t0, work = proc_cpu_ms(D.pid) - w->c0;
    w->wall_max = wall > w->wall_max ? wall : w->wall_max;
    w->work_max = work > w->work_max ? work : w->work_max;
}

/* daemon.ping on cl, timed into w. */
static void
waited_ping(struct waited *w, struct sockd_client *cl)
{
    waited_begin(w);
    json_decref(h_ok(cl, "daemon.ping", NULL));
    waited_end(w);
}

/* Raise the soft fd limit to the hard one (the daemon, forked from us, inherits it). */
static void
raise_nofile(long need)
{
    struct rlimit rl;
    EXPECT_INT(getrlimit(RLIMIT_NOFILE, &rl), 0, "getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        EXPECT_INT(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s", strerror(errno));
    }
    if ((long)rl.rlim_cur < need) {
        fprintf(stderr, "  RLIMIT_NOFILE hard limit %ld < %ld: skipped\n", (long)rl.rlim_cur, need);
        skip();
    }
}

/* Raw fds of the test process, closed by teardown if a test fails half-way. */
static int *tracked_fds;
static int n_tracked, cap_tracked;

static int
track_raw_fd(int fd)
{
    if (n_tracked == cap_tracked) {
        int nc = cap_tracked ? 2 * cap_tracked : 1024;
        int *nf = realloc(tracked_fds, (size_t)nc * sizeof *nf);
        EXPECT_TRUE(nf != NULL, "nf");
        tracked_fds = nf;
        cap_tracked = nc;
    }
    tracked_fds[n_tracked++] = fd;
    return fd;
}

/* Close a tracked fd now (so teardown does not close its number again). */
static void
untrack_close(int fd)
{
    for (int i = 0; i < n_tracked; i++)
        if (tracked_fds[i] == fd)
            tracked_fds[i] = -1;
    close(fd);
}

static void
close_tracked(void)
{
    for (int i = 0; i < n_tracked; i++)
        if (tracked_fds[i] >= 0)
            close(tracked_fds[i]);
    n_tracked = 0;
}

/* The stream content: byte k of a stream is k % 251; pat + (k % 251) holds the next bytes. */
#define PAT_SPAN (1024 * 1024)
static unsigned char *pat;

static void
pat_init(void)
{
    if (pat)
        return;
    pat = malloc(PAT_SPAN + 251);
    EXPECT_TRUE(pat != NULL, "pat");
    for (size_t i = 0; i < PAT_SPAN + 251; i++)
        pat[i] = (unsigned char)(i % 251);
}

static const unsigned char *
pat_at(size_t k)
{
    return pat + k % 251;
}

/* A self-signed CA certificate (PEM, malloc'ed): TLS contexts that name it as their "ca" do not
   load the system store (about 0.9 MiB and 25 ms each; test_expensive_requests covers that). */
static char *
make_ca_pem(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *name;
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    long len;

    if (key && x && bio) {
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), 0);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400);
        X509_set_pubkey(x, key);
        name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"sockd-faults",
                                   -1, -1, 0);
        X509_set_issuer_name(x, name);
        if (X509_sign(x, key, EVP_sha256()) > 0 && PEM_write_bio_X509(bio, x) == 1 &&
            (len = BIO_get_mem_data(bio, &data)) > 0 && (out = malloc((size_t)len + 1)) != NULL) {
            memcpy(out, data, (size_t)len);
            out[len] = 0;
        }
    }
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(key);
    EXPECT_TRUE(out != NULL, "out");
    return out;
}

static const char *
jstr_or_empty(const json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* ------------------------------------------------------------------------------------------ */
/* a raw line reader for control connections read without the client library                  */

struct rawc {
    int fd;
    char *buf;
    size_t start, len, cap, scan;
    long long next_id;
    json_t *held; /* notifications read while waiting for a response, for rawc_wait */
};

static void
rawc_init(struct rawc *r, int fd)
{
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->next_id = 1;
}

static void
rawc_free(struct rawc *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->buf);
    r->buf = NULL;
    json_decref(r->held);
    r->held = NULL;
}

/* One read of at most max bytes, waiting up to ms: >0 bytes, 0 at EOF, -1 timeout or error. */
static ssize_t
rawc_fill(struct rawc *r, size_t max, int ms)
{
    ssize_t n;
    if (r->start > 0 && (r->start > r->cap / 2 || r->cap - r->start - r->len < max)) {
        memmove(r->buf, r->buf + r->start, r->len);
        r->start = 0;
    }
    if (r->cap - r->start - r->len < max) {
        size_t nc = r->cap ? r->cap : 65536;
        char *nb;
        while (nc - r->start - r->len < max)
            nc *= 2;
        nb = realloc(r->buf, nc);
        if (!nb)
            return -1;
        r->buf = nb;
        r->cap = nc;
    }
    if (ms != 0 && !readable(r->fd, ms)) {
        errno = ETIMEDOUT;
        return -1;
    }
    n = recv(r->fd, r->buf + r->start + r->len, max, MSG_DONTWAIT);
    if (n > 0)
        r->len += (size_t)n;
    if (n < 0 && errno == ECONNRESET)
        n = 0;
    return n;
}

/* The next complete line buffered (NUL-terminated in place, valid until the next fill). */
static char *
rawc_take(struct rawc *r, size_t *n)
{
    char *p, *nl;
    if (r->len == 0)
        return NULL;
    p = r->buf + r->start;
    nl = memchr(p + r->scan, '\n', r->len - r->scan);
    if (!nl) {
        r->scan = r->len;
        return NULL;
    }
    *nl = 0;
    *n = (size_t)(nl - p);
    r->start += *n + 1;
    r->len -= *n + 1;
    r->scan = 0;
    return p;
}

/* The next message as JSON, reading as needed: NULL on timeout or EOF. */
static json_t *
rawc_msg(struct rawc *r, int ms)
{
    long long deadline = h_now_ms() + ms;
    for (;;) {
        size_t n;
        char *line = rawc_take(r, &n);
        if (line) {
            json_t *m = json_loadb(line, n, 0, NULL);
            if (!m)
                fprintf(stderr, "unparsable line from the daemon: %.200s\n", line);
            return m;
        }
        long long left = deadline - h_now_ms();
        if (left <= 0 || rawc_fill(r, 1 << 20, (int)left) <= 0)
            return NULL;
    }
}

/* Send a request; return the response with its id (notifications before it are held). */
static json_t *
rawc_call(struct rawc *r, const char *method, json_t *params, int ms)
{
    long long id = r->next_id++;
    json_t *req = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id,
                            "method", method, "params", params ? params : json_object());
    char *text = json_dumps(req, JSON_COMPACT);
    long long deadline = h_now_ms() + ms;
    int ok;

    json_decref(req);
    if (!text)
        return NULL;
    ok = write_all(r->fd, text, strlen(text)) == 0 && write_all(r->fd, "\n", 1) == 0;
    free(text);
    if (!ok)
        return NULL;
    for (;;) {
        long long left = deadline - h_now_ms();
        json_t *m = left > 0 ? rawc_msg(r, (int)left) : NULL;
        if (!m)
            return NULL;
        if (json_integer_value(json_object_get(m, "id")) == id && !json_object_get(m, "method"))
            return m;
        if (json_object_get(m, "method")) {
            if (!r->held)
                r->held = json_array();
            json_array_append(r->held, m);
        }
        json_decref(m);
    }
}

/* Result of a raw call that must succeed (cmocka: test process only). */
static json_t *
rawc_ok(struct rawc *r, const char *method, json_t *params)
{
    json_t *m = rawc_call(r, method, params, H_TIMEOUT_MS), *res;
    if (!m)
        fprintf(stderr, "%s: no response\n", method);
    EXPECT_TRUE(m != NULL, "m");
    res = json_object_get(m, "result");
    EXPECT_TRUE(res != NULL, "%s", jd(m));
    json_incref(res);
    json_decref(m);
    return res;
}

/* The next notification named method (held ones first; others dropped): its params, or NULL. */
static json_t *
rawc_wait(struct rawc *r, const char *method, int ms)
{
    long long deadline = h_now_ms() + ms;
    while (r->held && json_array_size(r->held) > 0) {
        json_t *m = json_incref(json_array_get(r->held, 0)), *p = NULL;
        json_array_remove(r->held, 0);
        if (!strcmp(jstr_or_empty(m, "method"), method))
            p = json_incref(json_object_get(m, "params"));
        json_decref(m);
        if (p)
            return p;
    }
    for (;;) {
        long long left = deadline - h_now_ms();
        json_t *m = left > 0 ? rawc_msg(r, (int)left) : NULL, *p;
        if (!m)
            return NULL;
        if (json_is_string(json_object_get(m, "method")) &&
            !strcmp(json_string_value(json_object_get(m, "method")), method)) {
            p = json_incref(json_object_get(m, "params"));
            json_decref(m);
            return p;
        }
        json_decref(m);
    }
}

/* Write one request line without waiting for its response. */
static int
rawc_send(struct rawc *r, const char *method, json_t *params)
{
    long long id = r->next_id++;
    json_t *req = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id,
                            "method", method, "params", params ? params : json_object());
    char *text = json_dumps(req, JSON_COMPACT);
    int rc = -1;

    json_decref(req);
    if (text && write_all(r->fd, text, strlen(text)) == 0 && write_all(r->fd, "\n", 1) == 0)
        rc = 0;
    free(text);
    return rc;
}

/* "socket":N of a notification line, looked up near its end (params put it after "data"). */
static long long
line_socket(const char *line, size_t n)
{
    size_t from = n > 96 ? n - 96 : 0;
    const char *best = NULL;
    for (const char *p = line + from; (p = strstr(p, "\"socket\":")) != NULL; p++)
        best = p;
    if (!best) {
        json_t *m = json_loadb(line, n, 0, NULL);
        long long s = json_integer_value(json_object_get(json_object_get(m, "params"), "socket"));
        json_decref(m);
        return s;
    }
    return strtoll(best + 9, NULL, 10);
}

/* The base64 "data" of a socket.received line decoded into out (room for the line's length):
   bytes decoded, or -1. */
static long
decode_received(const char *line, size_t n, unsigned char *out)
{
    const char *d = strstr(line, "\"data\":\""), *e;
    size_t len, pad = 0;
    int r;

    if (!d)
        return -1;
    d += 8;
    e = memchr(d, '"', n - (size_t)(d - line));
    if (!e)
        return -1;
    len = (size_t)(e - d);
    if (len == 0)
        return 0;
    if (len % 4)
        return -1;
    r = EVP_DecodeBlock(out, (const unsigned char *)d, (int)len);
    if (r < 0)
        return -1;
    if (d[len - 1] == '=')
        pad++;
    if (d[len - 2] == '=')
        pad++;
    return (long)r - (long)pad;
}

/* ------------------------------------------------------------------------------------------ */
/* a TCP server that accepts and never answers (a TLS server stuck before its ServerHello)     */

struct mute {
    int lfd, port;
    pthread_t th;
    pthread_mutex_t mu;
    int stop; /* atomic */
    int *fds; /* under mu */
    char *ended;
    int n, cap;
};
static struct mute *g_mutes[4];

static void *
mute_main(void *arg)
{
    struct mute *m = arg;
    while (!__atomic_load_n(&m->stop, __ATOMIC_SEQ_CST)) {
        int fd;
        if (!readable(m->lfd, 50))
            continue;
        fd = accept4(m->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&m->mu);
        if (m->n == m->cap) {
            int nc = m->cap ? 2 * m->cap : 256;
            int *nf = realloc(m->fds, (size_t)nc * sizeof *nf);
            char *ne = realloc(m->ended, (size_t)nc);
            if (nf)
                m->fds = nf;
            if (ne)
                m->ended = ne;
            if (!nf || !ne) {
                pthread_mutex_unlock(&m->mu);
                close(fd);
                continue;
            }
            m->cap = nc;
        }
        m->ended[m->n] = 0;
        m->fds[m->n++] = fd;
        pthread_mutex_unlock(&m->mu);
    }
    return NULL;
}

static struct mute *
mute_start(void)
{
    struct mute *m = calloc(1, sizeof *m);
    EXPECT_TRUE(m != NULL, "m");
    m->lfd = tcp_listen_any(&m->port, 4096, 0);
    EXPECT_TRUE(m->lfd >= 0, "m->lfd >= 0");
    pthread_mutex_init(&m->mu, NULL);
    EXPECT_INT(pthread_create(&m->th, NULL, mute_main, m), 0, "pthread_create");
    for (int i = 0; i < 4; i++)
        if (!g_mutes[i]) {
            g_mutes[i] = m;
            break;
        }
    return m;
}

static int
mute_accepted(struct mute *m)
{
    int n;
    pthread_mutex_lock(&m->mu);
    n = m->n;
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* Connections with bytes waiting that nobody answered (e.g. a TLS ClientHello). */
static int
mute_with_data(struct mute *m)
{
    int k = 0;
    char b;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n; i++)
        if (recv(m->fds[i], &b, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
            k++;
    pthread_mutex_unlock(&m->mu);
    return k;
}

/* Connections that have ended (EOF or reset), draining whatever came before. */
static int
mute_ended(struct mute *m)
{
    int k = 0;
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n; i++) {
        if (!m->ended[i] && drained_ended(m->fds[i]))
            m->ended[i] = 1;
        k += m->ended[i];
    }
    pthread_mutex_unlock(&m->mu);
    return k;
}

static int
mute_wait(struct mute *m, int (*count)(struct mute *), int n, int ms)
{
    long long deadline = h_now_ms() + ms;
    int got;
    for (;;) {
        got = count(m);
        if (got >= n || h_now_ms() > deadline)
            return got;
        h_sleep_ms(20);
    }
}

static void
mute_close_all(struct mute *m)
{
    pthread_mutex_lock(&m->mu);
    for (int i = 0; i < m->n; i++)
        close(m->fds[i]);
    m->n = 0;
    pthread_mutex_unlock(&m->mu);
}

static void
mute_stop(struct mute *m)
{
    if (!m)
        return;
    __atomic_store_n(&m->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(m->th, NULL);
    mute_close_all(m);
    close(m->lfd);
    pthread_mutex_destroy(&m->mu);
    free(m->fds);
    free(m->ended);
    for (int i = 0; i < 4; i++)
        if (g_mutes[i] == m)
            g_mutes[i] = NULL;
    free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. clients killed mid-line, mid-handshake and with output pending                          */

static pid_t kids[16];
static int nkids;

static void
kill_kids(void)
{
    int status;
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0) {
            kill(kids[i], SIGKILL);
            waitpid(kids[i], &status, 0);
            kids[i] = 0;
        }
    nkids = 0;
}

static const char partial_line[] = "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.pi";

/* A call from a child: 0 when it succeeded, the result in *res (if res). */
static int
kid_call(struct sockd_client *c, const char *method, json_t *params, json_t **res)
{
    int rc = sockd_client_call(c, method, params, res, NULL, 10000);
    json_decref(params);
    return rc;
}

/*
 * A child: midline raw control connections each holding half a line (every 10th a 60 KB
 * half line); tls clients each with a TLS socket whose handshake waits on a server that never
 * answers; outpend clients with a tcp socket that pipeline 64 KiB of daemon.hello requests and
 * never read (their answers, over 1 MiB, hold their output queue over the high-water mark; the
 * daemon goes on reading requests, so a client that writes without end would reach the output
 * cap and be cut off).
 * Writes 'R' on wfd when all is in place, then waits to be killed. No cmocka in here.
 */
static void
kid_main(const char *sock, const char *ca, int tls_port, int sink_port, int midline, int tls,
         int outpend, int wfd)
{
    static char big[61 * 1024];
    static const char hello[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.hello\"}\n";
    char *chunk = malloc(64 * 1024);
    int *ofd = calloc((size_t)outpend + 1, sizeof *ofd);
    size_t *off = calloc((size_t)outpend + 1, sizeof *off),
           *sent = calloc((size_t)outpend + 1, sizeof *sent);
    long long *last = calloc((size_t)outpend + 1, sizeof *last);
    size_t chunk_len = 0;

    if (!chunk || !ofd || !off || !sent || !last)
        _exit(20);
    snprintf(big, sizeof big,
             "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\","
             "\"params\":{\"x\":\"");
    memset(big + strlen(big), 'x', sizeof big - strlen(big) - 1);
    while (chunk_len + sizeof hello - 1 <= 64 * 1024) {
        memcpy(chunk + chunk_len, hello, sizeof hello - 1);
        chunk_len += sizeof hello - 1;
    }

    for (int i = 0; i < midline; i++) {
        int fd = unix_connect(sock);
        if (fd < 0)
            _exit(21);
        if (i % 10 == 9 ? write_all(fd, big, strlen(big))
                        : write_all(fd, partial_line, strlen(partial_line)))
            _exit(22);
    }
    for (int i = 0; i < tls; i++) {
        struct sockd_client *c = sockd_client_connect(sock);
        json_t *r = NULL;
        json_int_t context_id, s;
        if (!c)
            _exit(23);
        if (kid_call(c, "context.create", json_pack("{s:b, s:s}", "verify", 0, "ca", ca), &r) != 0)
            _exit(24);
        context_id = json_integer_value(json_object_get(r, "context"));
        json_decref(r);
        if (kid_call(c, "socket.open",
                     json_pack("{s:s, s:I}", "type", "tls", "context", context_id), &r) != 0)
            _exit(25);
        s = json_integer_value(json_object_get(r, "socket"));
        json_decref(r);
        if (kid_call(
                c, "socket.connect",
                json_pack("{s:I, s:s, s:i}", "socket", s, "address", "127.0.0.1", "port", tls_port),
                NULL) != 0)
            _exit(26);
        /* c stays open (and leaks here on purpose: the process is killed) */
    }
    for (int i = 0; i < outpend; i++) {
        struct sockd_client *c = sockd_client_connect(sock);
        json_t *r = NULL, *ev;
        json_int_t s;
        if (!c)
            _exit(27);
        if (kid_call(c, "socket.open", json_pack("{s:s}", "type", "tcp"), &r) != 0)
            _exit(28);
        s = json_integer_value(json_object_get(r, "socket"));
        json_decref(r);
        if (kid_call(c, "socket.connect",
                     json_pack("{s:I, s:s, s:i}", "socket", s, "address", "127.0.0.1", "port",
                               sink_port),
                     NULL) != 0)
            _exit(29);
        ev = sockd_client_wait_event(c, "socket.connected", s, 10000);
        if (!ev)
            _exit(30);
        json_decref(ev);
        /* nothing more is in flight: the library holds no bytes of this fd any more */
        ofd[i] = sockd_client_fd(c);
        fcntl(ofd[i], F_SETFL, fcntl(ofd[i], F_GETFL) | O_NONBLOCK);
        last[i] = h_now_ms();
    }
    /* Pipeline one chunk of requests into each (or until it takes no byte for 300 ms). */
    long long t0 = h_now_ms();
    for (;;) {
        int open = 0;
        for (int i = 0; i < outpend; i++) {
            ssize_t w;
            if (h_now_ms() - last[i] > 300 || sent[i] >= chunk_len)
                continue;
            open++;
            w = send(ofd[i], chunk + off[i], chunk_len - off[i], MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent[i] += (size_t)w;
                off[i] = (off[i] + (size_t)w) % chunk_len;
                last[i] = h_now_ms();
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                _exit(31);
            }
        }
        if (open == 0)
            break;
        if (h_now_ms() - t0 > 20000)
            _exit(32);
        h_sleep_ms(2);
    }
    if (write(wfd, "R", 1) != 1)
        _exit(33);
    for (;;)
        pause();
}

struct round_stats {
    long rss_peak;
    long long kill_to_clean_ms;
};

/* One round: the children set everything up, the daemon is checked, the children are killed,
   and everything must be released again. */
static void
kill_round(struct sockd_client *w, const char *ca, struct mute *tlsm, struct mute *sink,
           int midline, int tls, int outpend, int baseline_fds, struct round_stats *rs)
{
    const int nk = 4;
    int rfd[4], total = midline + tls + outpend;
    json_t *st;
    long long t_kill;

    mute_close_all(tlsm);
    mute_close_all(sink);
    fflush(stdout);
    fflush(stderr);
    for (int k = 0; k < nk; k++) {
        int p[2];
        EXPECT_INT(pipe2(p, O_CLOEXEC), 0, "pipe2: %s", strerror(errno));
        kids[k] = fork();
        EXPECT_TRUE(kids[k] >= 0, "kids[k] >= 0");
        if (kids[k] == 0) {
            close(p[0]);
            kid_main(D.sock, ca, tlsm->port, sink->port, midline / nk, tls / nk, outpend / nk,
                     p[1]);
            _exit(1);
        }
        nkids = k + 1;
        close(p[1]);
        rfd[k] = p[0];
    }
    for (int k = 0; k < nk; k++) {
        char go = 0;
        int status;
        if (!readable(rfd[k], 60000) || read(rfd[k], &go, 1) != 1 || go != 'R') {
            pid_t r = waitpid(kids[k], &status, WNOHANG);
            fprintf(stderr, "child %d not ready (%s, exit %d)\n", k,
                    r == kids[k] ? "ended" : "hung",
                    r == kids[k] && WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            for (int j = 0; j < nk; j++)
                close(rfd[j]);
            fail();
        }
    }
    for (int k = 0; k < nk; k++)
        close(rfd[k]);

    /* Everything is in place: every client connected, every TLS handshake stuck after the
       ClientHello, every sink connection up. */
    st = h_wait_clients(w, 1 + total);
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(st, "sockets"), "total")),
               tls + outpend, "%s", jd(st));
    json_decref(st);
    EXPECT_INT(mute_wait(tlsm, mute_with_data, tls, H_TIMEOUT_MS), tls, "mute_wait");
    /* connected in the kernel before the sink's thread has accepted them all: wait for it */
    EXPECT_INT(mute_wait(sink, mute_accepted, outpend, H_TIMEOUT_MS), outpend, "mute_wait");
    rs->rss_peak = h_rss_kib(D.pid);

    t_kill = h_now_ms();
    kill_kids();

    /* All released: clients, sockets, fds; the servers see their connections end. */
    st = h_wait_clients(w, 1);
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(st, "sockets"), "total")), 0,
               "%s", jd(st));
    json_decref(st);
    int fds = h_wait_fds(D.pid, baseline_fds, 10000);
    if (fds != baseline_fds)
        fprintf(stderr, "daemon fds: baseline %d, now %d\n", baseline_fds, fds);
    EXPECT_INT(fds, baseline_fds, "fds");
    rs->kill_to_clean_ms = h_now_ms() - t_kill;
    EXPECT_INT(mute_wait(tlsm, mute_ended, tls, H_TIMEOUT_MS), tls, "mute_wait");
    EXPECT_INT(mute_wait(sink, mute_ended, outpend, H_TIMEOUT_MS), outpend, "mute_wait");
}

/* One cycle: the three kinds of death one after another, each a round of its own. */
static void
kill_cycle(struct sockd_client *w, const char *ca, struct mute *tlsm, struct mute *sink,
           const int n[3], int fds0, struct round_stats *rs)
{
    struct round_stats one;
    rs->rss_peak = 0;
    rs->kill_to_clean_ms = 0;
    for (int kind = 0; kind < 3; kind++) {
        kill_round(w, ca, tlsm, sink, kind == 0 ? n[0] : 0, kind == 1 ? n[1] : 0,
                   kind == 2 ? n[2] : 0, fds0, &one);
        if (one.rss_peak > rs->rss_peak)
            rs->rss_peak = one.rss_peak;
        if (one.kill_to_clean_ms > rs->kill_to_clean_ms)
            rs->kill_to_clean_ms = one.kill_to_clean_ms;
    }
}

static void
test_killed_clients(void **state)
{
    /* FAULT_KILL="midline tls outpend" overrides the mix (diagnostics). */
    int n[3] = {1000, 300, 100}, fds0, fds_warm, warm_cycles = 0;
    struct sockd_client *w;
    struct mute *tlsm, *sink;
    struct round_stats warm = {0, 0}, meas, all;
    char *ca = make_ca_pem();
    long rss_start, rss_base = 0, rss_after, rss_all, prev = 0;

    if (getenv("FAULT_KILL"))
        sscanf(getenv("FAULT_KILL"), "%d %d %d", &n[0], &n[1], &n[2]);
    raise_nofile(4096);
    /* RSS is only a leak signal if freed memory leaves it: with glibc's defaults the daemon's
       heap keeps its high-water mark and RSS drifts by tens of percent with no leak at all
       (measured with gdb + malloc_stats: 0.8 MB in use, 350 MB of heap kept after 300 TLS
       contexts on the system store were freed, 394 MB a few rounds later). Here buffers of
       32 KiB and up get their own mappings (returned on free) and the heap top is trimmed
       early; the daemon's code is the same. Not used when GLIBC_TUNABLES is already set. */
    int tunables = getenv("GLIBC_TUNABLES") == NULL;
    if (tunables)
        setenv("GLIBC_TUNABLES",
               "glibc.malloc.mmap_threshold=32768:glibc.malloc.trim_threshold=65536", 1);
    h_daemon_start(&D, "max-clients 4096\nmax-clients-per-uid 4096\n");
    if (tunables)
        unsetenv("GLIBC_TUNABLES");
    w = h_client_auto(&D);
    json_decref(h_wait_clients(w, 1));
    tlsm = mute_start();
    sink = mute_start();
    fds0 = h_count_fds(D.pid);
    rss_start = h_rss_kib(D.pid);

    /* Warm-up cycles until the RSS left after a cycle settles (within 1 % + 1 MiB of the cycle
       before; 2 to 5 cycles; measured 36.2 38.7 39.1 39.2 39.3 MB): the measured cycle then
       compares allocator states that have seen the same load. A leak adds the same amount
       every cycle and fails the check below. */
    for (int k = 0; k < 5; k++) {
        struct round_stats rs;
        kill_cycle(w, ca, tlsm, sink, n, fds0, &rs);
        warm_cycles++;
        if (rs.rss_peak > warm.rss_peak)
            warm.rss_peak = rs.rss_peak;
        warm.kill_to_clean_ms = rs.kill_to_clean_ms;
        h_sleep_ms(100);
        rss_base = h_rss_kib(D.pid);
        if (k >= 1 && rss_base <= prev + prev / 100 + 1024)
            break;
        prev = rss_base;
    }
    fds_warm = h_count_fds(D.pid);
    kill_cycle(w, ca, tlsm, sink, n, fds0, &meas);
    h_sleep_ms(100);
    rss_after = h_rss_kib(D.pid);

    /* Then all 1 400 at once: everything released again. RSS is reported, not judged: the
       mix fragments glibc's heap differently every time (measured: 83..104 MB left after such
       rounds with malloc's in-use bytes constant). */
    kill_round(w, ca, tlsm, sink, n[0], n[1], n[2], fds0, &all);
    h_sleep_ms(100);
    rss_all = h_rss_kib(D.pid);

    fprintf(stderr,
            "  clients killed per cycle: %d mid-line, %d mid-TLS-handshake, %d with output "
            "pending (%d warm-up cycles + 1 measured), then all %d at once\n"
            "  daemon fds: start %d, after warm-up %d, after the measured cycle %d, after all at"
            " once %d\n"
            "  daemon RSS KiB: start %ld, peak %ld; after warm-up %ld, measured cycle peak %ld,"
            " after %ld (%+.1f%%); all at once: peak %ld, after %ld\n"
            "  kill -> fds back to baseline: %lld ms (all at once: %lld ms)\n",
            n[0], n[1], n[2], warm_cycles, n[0] + n[1] + n[2], fds0, fds_warm, fds0,
            h_count_fds(D.pid), rss_start, warm.rss_peak, rss_base, meas.rss_peak, rss_after,
            100.0 * (double)(rss_after - rss_base) / (double)rss_base, all.rss_peak, rss_all,
            meas.kill_to_clean_ms, all.kill_to_clean_ms);
    EXPECT_INT(fds_warm, fds0, "fds_warm");
    /* 5 % plus 2 MiB of slack: RSS moves in pages and glibc keeps freed memory mapped, so a
       few hundred KiB of allocator noise must not fail the test. Detection limit: a leak of
       about 1.5 KiB per killed client and cycle (1 400 clients, ~2 MiB + 5 % of ~40 MB);
       smaller leaks are valgrind-suite.sh's job. */
    /* Under AddressSanitizer RSS is the allocator's quarantine (hundreds of MiB of freed
       memory held back on purpose), not what the daemon keeps: there the fd checks above and
       LeakSanitizer at the daemon's exit stand in for this bound. */
    if (h_asan_daemon(D.pid))
        fprintf(stderr, "  (AddressSanitizer daemon: the RSS bound is not checked)\n");
    else
        EXPECT_TRUE(rss_after <= rss_base + rss_base / 20 + 2048,
                    "rss_after <= rss_base + rss_base / 20 + 2048");
    json_decref(h_ok(w, "daemon.ping", NULL));
    mute_stop(tlsm);
    mute_stop(sink);
    free(ca);
    h_client_close(w);
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. a slow reader while FAULT_BYTES flow through its socket                                 */

struct pusher {
    int lfd, port, fd;
    pthread_t th;
    size_t target;
    size_t pushed; /* atomic */
    int stop;      /* atomic */
    int done;      /* atomic */
};
static struct pusher *g_pusher;

static void *
pusher_main(void *arg)
{
    struct pusher *p = arg;
    const size_t chunk = 256 * 1024;

    p->fd = -1;
    if (!readable(p->lfd, H_TIMEOUT_MS))
        goto out;
    p->fd = accept4(p->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    while (p->fd >= 0 && !__atomic_load_n(&p->stop, __ATOMIC_SEQ_CST)) {
        size_t done = __atomic_load_n(&p->pushed, __ATOMIC_SEQ_CST);
        size_t n = p->target - done < chunk ? p->target - done : chunk;
        struct pollfd pfd = {p->fd, POLLOUT, 0};
        ssize_t w;
        if (n == 0)
            break;
        if (poll(&pfd, 1, 100) != 1)
            continue;
        w = send(p->fd, pat_at(done), n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            break;
        if (w > 0)
            __atomic_add_fetch(&p->pushed, (size_t)w, __ATOMIC_SEQ_CST);
    }
out:
    __atomic_store_n(&p->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void
pusher_stop(struct pusher *p)
{
    __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(p->th, NULL);
    if (p->fd >= 0)
        close(p->fd);
    close(p->lfd);
    free(p);
}

struct slow {
    struct rawc rc;
    long long sock;
    size_t target;
    size_t chunk; /* bytes read per step */
    int gap_us;   /* sleep between steps */
    size_t got;   /* atomic */
    int done;     /* atomic: 1 ok, -1 failed */
    long long events;
    char why[200];
    pthread_t th;
};

static void *
slow_main(void *arg)
{
    struct slow *s = arg;
    unsigned char *dec = malloc(2 * MIB);
    long long last = h_now_ms();
    size_t got = 0;
    int rc = -1;

    if (!dec) {
        snprintf(s->why, sizeof s->why, "out of memory");
        goto out;
    }
    while (got < s->target) {
        size_t n;
        char *line;
        ssize_t r = rawc_fill(&s->rc, s->chunk, 200);
        if (r == 0) {
            snprintf(s->why, sizeof s->why, "control connection ended at %zu bytes", got);
            goto out;
        }
        if (r > 0)
            last = h_now_ms();
        else if (h_now_ms() - last > 20000) {
            snprintf(s->why, sizeof s->why, "nothing for 20 s at %zu bytes", got);
            goto out;
        }
        while ((line = rawc_take(&s->rc, &n)) != NULL) {
            long k;
            if (strncmp(line, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.received\"", 43) != 0) {
                if (strstr(line, "\"error\"") || strstr(line, "socket.closed")) {
                    snprintf(s->why, sizeof s->why, "unexpected: %.150s", line);
                    goto out;
                }
                continue; /* the recv response */
            }
            if (n > 2 * MIB) {
                snprintf(s->why, sizeof s->why, "line of %zu bytes", n);
                goto out;
            }
            k = decode_received(line, n, dec);
            if (k < 0 || strstr(line + (n > 200 ? n - 200 : 0), "\"eof\":true")) {
                snprintf(s->why, sizeof s->why, "bad socket.received at %zu: %.150s", got, line);
                goto out;
            }
            if (got + (size_t)k > s->target || memcmp(dec, pat_at(got), (size_t)k) != 0) {
                snprintf(s->why, sizeof s->why, "wrong bytes in [%zu, %zu)", got, got + (size_t)k);
                goto out;
            }
            got += (size_t)k;
            s->events++;
            __atomic_store_n(&s->got, got, __ATOMIC_SEQ_CST);
        }
        if (s->gap_us > 0)
            usleep((useconds_t)s->gap_us);
    }
    rc = 1;
out:
    free(dec);
    __atomic_store_n(&s->done, rc, __ATOMIC_SEQ_CST);
    return NULL;
}

static struct slow *g_slow;

static size_t
env_size(const char *name, size_t dflt)
{
    const char *v = getenv(name);
    char *end;
    double x;
    if (!v || !*v)
        return dflt;
    x = strtod(v, &end);
    switch (*end) {
    case 'G':
    case 'g':
        x *= 1024.0 * 1024 * 1024;
        break;
    case 'M':
    case 'm':
        x *= 1024.0 * 1024;
        break;
    case 'K':
    case 'k':
        x *= 1024.0;
        break;
    default:
        break;
    }
    return x >= 0 ? (size_t)x : dflt;
}

/* Count occurrences of needle in the daemon's log (debug level: the harness passes -v). */
static int
log_count(const char *needle)
{
    FILE *f = fopen(D.log, "r");
    char line[4096];
    int n = 0;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle))
            n++;
    fclose(f);
    return n;
}

static void
test_slow_reader_bulk(void **state)
{
    /* The full GiB by default: about 28 s on a 2-core machine, where the daemon alone could
       deliver it in ~11 s (a reader at full speed: 256 MiB in 2.7 s, 2 output pauses). The
       reader takes 64 KiB per millisecond (FAULT_SLOW_CHUNK, FAULT_SLOW_GAP_US), about 2.5x
       slower than the flow, so the daemon has to hold the peer back ~1000 times. FAULT_BYTES
       scales it (e.g. 256M: ~7 s). */
    const size_t target = env_size("FAULT_BYTES", 1024 * MIB);
    struct sockd_client *b, *c;
    struct h_peer *echo;
    struct pusher *p;
    struct slow *sl;
    json_t *r, *ev;
    long rss0, rss, rss_max;
    long long t0, deadline, es;
    struct waited pw = {0}, ew = {0};
    size_t inflight_max = 0;
    int pings = 0, echoes = 0, pauses;

    pat_init();
    h_daemon_start(&D, NULL);
    b = h_client_auto(&D);
    c = h_client_auto(&D);
    echo = h_peer_auto(H_ECHO, 0);
    es = h_connect_tcp(c, echo->port);
    json_decref(h_wait_clients(b, 2));

    p = calloc(1, sizeof *p);
    EXPECT_TRUE(p != NULL, "p");
    p->target = target;
    p->lfd = tcp_listen_any(&p->port, 4, 0);
    EXPECT_TRUE(p->lfd >= 0, "p->lfd >= 0");
    EXPECT_INT(pthread_create(&p->th, NULL, pusher_main, p), 0, "pthread_create");
    g_pusher = p;

    sl = calloc(1, sizeof *sl);
    EXPECT_TRUE(sl != NULL, "sl");
    sl->target = target;
    sl->chunk = env_size("FAULT_SLOW_CHUNK", 64 * KIB);
    sl->gap_us = (int)env_size("FAULT_SLOW_GAP_US", 1000);
    rawc_init(&sl->rc, unix_connect(D.sock));
    EXPECT_TRUE(sl->rc.fd >= 0, "sl->rc.fd >= 0");
    r = rawc_ok(&sl->rc, "socket.open", json_pack("{s:s}", "type", "tcp"));
    sl->sock = json_integer_value(json_object_get(r, "socket"));
    json_decref(r);
    json_decref(rawc_ok(&sl->rc, "socket.connect",
                        json_pack("{s:I, s:s, s:i}", "socket", (json_int_t)sl->sock, "address",
                                  "127.0.0.1", "port", p->port)));
    ev = rawc_wait(&sl->rc, "socket.connected", H_TIMEOUT_MS);
    EXPECT_TRUE(ev != NULL, "ev");
    json_decref(ev);
    rss0 = h_rss_kib(D.pid);
    EXPECT_INT(rawc_send(&sl->rc, "socket.recv",
                         json_pack("{s:I, s:i, s:b}", "socket", (json_int_t)sl->sock, "length",
                                   65536, "stream", 1)),
               0, "rawc_send");
    EXPECT_INT(pthread_create(&sl->th, NULL, slow_main, sl), 0, "pthread_create");
    g_slow = sl;

    /* Meanwhile: B pings, C echoes through its own socket; each must stay prompt. */
    rss_max = rss0;
    t0 = h_now_ms();
    deadline = t0 + 300000;
    while (!__atomic_load_n(&sl->done, __ATOMIC_SEQ_CST) && h_now_ms() < deadline) {
        char msg[32];
        unsigned char *back;
        size_t pushed, got;

        waited_ping(&pw, b);
        pings++;
        if (pings % 4 == 0) {
            snprintf(msg, sizeof msg, "echo-%d", echoes);
            waited_begin(&ew);
            json_decref(h_ok(c, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)es, "text",
                             msg, "notify", 0));
            back = h_recv_exact(c, es, strlen(msg), H_TIMEOUT_MS);
            waited_end(&ew);
            EXPECT_TRUE(memcmp(back, msg, strlen(msg)) == 0, "back");
            free(back);
            echoes++;
        }
        rss = h_rss_kib(D.pid);
        if (rss > rss_max)
            rss_max = rss;
        pushed = __atomic_load_n(&p->pushed, __ATOMIC_SEQ_CST);
        got = __atomic_load_n(&sl->got, __ATOMIC_SEQ_CST);
        if (pushed > got && pushed - got > inflight_max)
            inflight_max = pushed - got;
        h_sleep_ms(50);
    }
    pthread_join(sl->th, NULL);
    g_slow = NULL;
    pauses = log_count("pausing its sockets");
    fprintf(
        stderr,
        "  %zu MiB to a slow reader (%zu B per %d us) in %.1f s: %lld events; daemon RSS KiB %ld"
        " -> max %ld (+%ld); most bytes in flight %.1f MiB; output pauses %d\n"
        "  others: %d pings, max %lld ms (daemon CPU meanwhile max %lld ms); %d echoes, max %lld "
        "ms (%lld ms)\n",
        target / MIB, sl->chunk, sl->gap_us, (double)(h_now_ms() - t0) / 1000.0, sl->events, rss0,
        rss_max, rss_max - rss0, (double)inflight_max / (double)MIB, pauses, pings, pw.wall_max,
        pw.work_max, echoes, ew.wall_max, ew.work_max);
    if (sl->done != 1)
        fprintf(stderr, "  slow reader: %s\n", sl->why);
    EXPECT_INT(sl->done, 1, "sl->done");
    EXPECT_INT(__atomic_load_n(&sl->got, __ATOMIC_SEQ_CST), target, "__atomic_load_n");
    EXPECT_INT(__atomic_load_n(&p->pushed, __ATOMIC_SEQ_CST), target, "__atomic_load_n");
    if (h_asan_daemon(D.pid))
        fprintf(stderr, "  (AddressSanitizer daemon: the RSS bound is not checked)\n");
    else
        EXPECT_TRUE(rss_max < rss0 + 150 * 1024, "rss_max < rss0 + 150 * 1024");
    /* Backpressure, whatever the allocator: what the peer pushed and the reader has not yet got
       sits in kernel buffers (TCP autotuning: up to 32 MiB here) and the daemon's queues. */
    EXPECT_TRUE(inflight_max < 64 * MIB, "inflight_max < 64 * MIB");
    EXPECT_TRUE(pw.work_max < 500, "pw.work_max < 500");
    EXPECT_TRUE(ew.work_max < 500, "ew.work_max < 500");
    /* The reader was slower than the flow: the daemon had to hold it back (high-water 1 MiB). */
    EXPECT_TRUE(pauses > 0, "pauses > 0");
    pusher_stop(p);
    g_pusher = NULL;
    rawc_free(&sl->rc);
    free(sl);
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 2b. a paused client is not "stalled": its half-read line is the daemon's own doing          */

/*
 * ctl.c drops a client whose input holds part of a line without progress for
 * client-line-timeout. A client whose output is over the high-water mark is paused: the daemon
 * stops reading its input. If that happens in the middle of a long request line, the client
 * makes no progress because the daemon does not read, not because the client stalled; it keeps
 * writing into a full socket buffer. It must not be dropped as "stalled in the middle of a
 * line" (the output hard cap is the documented limit for a client that does not read).
 */
static void
test_paused_client_keeps_its_line(void **state)
{
    const size_t line_len = 12 * MIB;
    char *line = malloc(line_len + 128), *l;
    struct pusher *p;
    struct rawc rc;
    json_t *r, *ev;
    long long t0, s, blocked_ms = 0;
    size_t written = 0, n, written2;
    int got_response = 0, eof = 0, stalls;

    EXPECT_TRUE(line != NULL, "line");
    pat_init();
    h_daemon_start(&D, "client-line-timeout 1s\n");
    p = calloc(1, sizeof *p);
    EXPECT_TRUE(p != NULL, "p");
    p->target = (size_t)-1 / 2; /* floods until stopped */
    p->lfd = tcp_listen_any(&p->port, 4, 0);
    EXPECT_TRUE(p->lfd >= 0, "p->lfd >= 0");
    EXPECT_INT(pthread_create(&p->th, NULL, pusher_main, p), 0, "pthread_create");
    g_pusher = p;
    rawc_init(&rc, unix_connect(D.sock));
    EXPECT_TRUE(rc.fd >= 0, "rc.fd >= 0");
    r = rawc_ok(&rc, "socket.open", json_pack("{s:s}", "type", "tcp"));
    s = json_integer_value(json_object_get(r, "socket"));
    json_decref(r);
    json_decref(rawc_ok(&rc, "socket.connect",
                        json_pack("{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
                                  "127.0.0.1", "port", p->port)));
    ev = rawc_wait(&rc, "socket.connected", H_TIMEOUT_MS);
    EXPECT_TRUE(ev != NULL, "ev");
    json_decref(ev);
    EXPECT_INT(rawc_send(&rc, "socket.recv",
                         json_pack("{s:I, s:i, s:b}", "socket", (json_int_t)s, "length", 65536,
                                   "stream", 1)),
               0, "rawc_send");
    /* one 12 MB request: daemon.hello with a long client name */
    n = (size_t)snprintf(line, 128,
                         "{\"jsonrpc\":\"2.0\",\"id\":99,\"method\":\"daemon.hello\","
                         "\"params\":{\"client\":\"");
    memset(line + n, 'y', line_len - n - 4);
    memcpy(line + line_len - 4, "\"}}\n", 4);
    fcntl(rc.fd, F_SETFL, fcntl(rc.fd, F_GETFL) | O_NONBLOCK);

    /* 1: read and write together until 2 MB of the line are in (the daemon has read part). */
    t0 = h_now_ms();
    while (written < 2 * MIB && h_now_ms() - t0 < 10000) {
        ssize_t w = send(rc.fd, line + written, line_len - written, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0)
            written += (size_t)w;
        if (rawc_fill(&rc, 1 << 20, 1) == 0)
            fail_msg("the daemon closed the connection while it was read");
        while (rawc_take(&rc, &n))
            ;
    }
    EXPECT_TRUE(written >= 2 * MIB, "written >= 2 * MIB");
    /* 2: stop reading for 2.5 s (output goes over the high-water mark: the daemon pauses us and
       stops reading), but keep offering the rest of the line. */
    written2 = written;
    t0 = h_now_ms();
    while (h_now_ms() - t0 < 2500) {
        struct pollfd pfd = {rc.fd, POLLOUT, 0};
        ssize_t w;
        long long a = h_now_ms();
        if (poll(&pfd, 1, 10) == 1 &&
            (w = send(rc.fd, line + written, line_len - written, MSG_NOSIGNAL | MSG_DONTWAIT)) > 0)
            written += (size_t)w;
        else
            blocked_ms += h_now_ms() - a;
    }
    written2 = written - written2;
    /* 3: read again, finish the line: the response to it must come, not EOF. */
    t0 = h_now_ms();
    while (!got_response && !eof && h_now_ms() - t0 < 30000) {
        ssize_t k;
        if (written < line_len) {
            ssize_t w =
                send(rc.fd, line + written, line_len - written, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                written += (size_t)w;
        }
        k = rawc_fill(&rc, 1 << 20, 1);
        if (k == 0)
            eof = 1;
        while ((l = rawc_take(&rc, &n)) != NULL)
            if (strncmp(l, "{\"jsonrpc\":\"2.0\",\"method\"", 26) != 0 && strstr(l, "\"id\":99"))
                got_response = 1;
    }
    stalls = log_count("stalled in the middle of a line");
    fprintf(stderr,
            "  a paused client 2 MB into a 12 MB line, not reading for 2.5 s while offering the "
            "rest: %zu bytes taken meanwhile, blocked %lld ms; then %s; daemon log 'stalled in "
            "the middle of a line': %d\n",
            written2, blocked_ms,
            got_response ? "answered"
            : eof        ? "EOF (dropped)"
                         : "no answer within 30 s",
            stalls);
    EXPECT_TRUE(!eof, "eof");
    EXPECT_TRUE(got_response, "got_response");
    EXPECT_INT(stalls, 0, "stalls");
    rawc_free(&rc);
    pusher_stop(p);
    g_pusher = NULL;
    free(line);
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 2c. an expensive request pipelined by one client does not starve the others                */

static void
test_expensive_requests(void **state)
{
    /* context.create without ca loads the system certificate store: measured ~25 ms of the
       daemon's single thread and ~0.9 MiB each, even with verify:false. */
    enum { N = 100 };
    struct sockd_client *a, *b;
    struct rawc rc;
    char *reqs, *l;
    size_t len = 0, n;
    long long t0, cpu0, cpu1, took;
    struct waited pw = {0};
    long rss0, rss1;
    int got = 0, pings = 0;
    json_t *st, *r;

    h_daemon_start(&D, NULL);
    b = h_client_auto(&D);
    a = h_client_auto(&D); /* only for stats */
    json_decref(h_wait_clients(b, 2));
    /* The first context of the daemon's life loads the system CA store (once: ~100 ms of work
       under AddressSanitizer); the bound below is about what a client can repeat. */
    cpu0 = proc_cpu_ms(D.pid);
    r = h_ok(a, "context.create", "{s:b}", "verify", 0);
    fprintf(stderr, "  the first context.create (system CA store loaded): daemon CPU %lld ms\n",
            proc_cpu_ms(D.pid) - cpu0);
    json_decref(h_ok(a, "context.destroy", "{s:O}", "context", json_object_get(r, "context")));
    json_decref(r);
    rawc_init(&rc, unix_connect(D.sock));
    EXPECT_TRUE(rc.fd >= 0, "rc.fd >= 0");
    reqs = malloc(N * 128);
    EXPECT_TRUE(reqs != NULL, "reqs");
    for (int i = 0; i < N; i++)
        len += (size_t)sprintf(reqs + len,
                               "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":"
                               "\"context.create\",\"params\":{\"verify\":false}}\n",
                               i + 1);
    rss0 = h_rss_kib(D.pid);
    cpu0 = proc_cpu_ms(D.pid);
    t0 = h_now_ms();
    EXPECT_INT(write_all(rc.fd, reqs, len), 0, "write_all(rc.fd, reqs, len)");
    while (got < N && h_now_ms() - t0 < 60000) {
        waited_ping(&pw, b);
        pings++;
        while (rawc_fill(&rc, 65536, 0) > 0)
            ;
        while ((l = rawc_take(&rc, &n)) != NULL)
            got += strstr(l, "\"result\"") != NULL;
        h_sleep_ms(10);
    }
    took = h_now_ms() - t0;
    cpu1 = proc_cpu_ms(D.pid);
    rss1 = h_rss_kib(D.pid);
    st = h_ok(a, "daemon.stats", NULL);
    fprintf(stderr,
            "  %d pipelined context.create: %lld ms, daemon CPU %lld ms (%.1f ms each), RSS +%ld "
            "KiB (%ld KiB each); another client's %d pings: max %lld ms, daemon CPU meanwhile max "
            "%lld ms\n",
            N, took, cpu1 - cpu0, (double)(cpu1 - cpu0) / N, rss1 - rss0, (rss1 - rss0) / N, pings,
            pw.wall_max, pw.work_max);
    EXPECT_INT(json_integer_value(json_object_get(st, "contexts")), N, "%s", jd(st));
    json_decref(st);
    EXPECT_INT(got, N, "got");
    /* Fairness (sockd-protocol.7, "TRANSPORT AND FRAMING"): a context method costs a client its
       whole loop turn, so another client's ping waits for at most about one of them (~5-25 ms of
       work), never for a turn of 64 (over a second). */
    EXPECT_TRUE(pw.work_max < 100, "pw.work_max < 100");
    rawc_free(&rc);
    free(reqs);
    st = h_wait_clients(b, 2);
    EXPECT_INT(json_integer_value(json_object_get(st, "contexts")), 0, "%s", jd(st));
    json_decref(st);
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. thousands of stalled connections                                                        */

struct trickler {
    const char *sock;
    int gap_ms;
    int ok; /* 1: answered, -1: dropped or wrong */
    long long took_ms;
    pthread_t th;
};

/* A slow but progressing client: one request, one byte every gap_ms for longer than
   client-line-timeout in all. It makes progress, so it must be answered, not dropped. */
static void *
trickler_main(void *arg)
{
    struct trickler *t = arg;
    char line[512];
    struct rawc rc;
    json_t *m;
    long long t0 = h_now_ms();
    int n, fd = unix_connect(t->sock);

    t->ok = -1;
    if (fd < 0)
        return NULL;
    n = snprintf(line, sizeof line,
                 "{\"jsonrpc\":\"2.0\",\"id\":4711,%250s\"method\":\"daemon.ping\"}\n", "");
    for (int i = 0; i < n; i++) {
        if (write_all(fd, line + i, 1) < 0) {
            close(fd);
            return NULL;
        }
        h_sleep_ms(t->gap_ms);
    }
    rawc_init(&rc, fd);
    m = rawc_msg(&rc, 2000);
    if (m && json_integer_value(json_object_get(m, "id")) == 4711 && json_object_get(m, "result"))
        t->ok = 1;
    t->took_ms = h_now_ms() - t0;
    json_decref(m);
    rawc_free(&rc);
    return NULL;
}

static struct trickler *g_trickler;

static void
test_stalled_connections(void **state)
{
    const int nctl = 2000, ntls = 300, npend = 100;
    const int total = nctl + ntls + npend;
    struct sockd_client *b, *n;
    static struct trickler tr;
    json_t *r, *ev;
    long long context_id, tl, pl, *t_open, *t_end, t_last_open;
    struct waited pw = {0}, fw = {0};
    int tls_port, pend_port, fds0, fds_peak, ended = 0, pings = 0, incoming = 0, other = 0;
    int *fd;
    long long min_ctl = 1 << 30, max_ctl = 0, min_tls = 1 << 30, max_tls = 0, max_pend = 0;

    raise_nofile(total + 1000);
    h_daemon_start(&D, "max-clients 4096\nmax-clients-per-uid 4096\nclient-line-timeout 1s\n"
                       "accept-timeout 1s\n"
                       "max-pending-accepts 1024\n");
    b = h_client_auto(&D);

    /* A TLS listener with auto_accept (the daemon runs the handshakes) and a plain listener
       whose connections wait as pending, never accepted. */
    r = h_ok(b, "context.create", NULL);
    context_id = json_integer_value(json_object_get(r, "context"));
    json_decref(r);
    json_decref(h_ok(b, "context.generate_certificate", "{s:I, s:s}", "context",
                     (json_int_t)context_id, "role", "server"));
    r = h_ok(b, "socket.open", "{s:s, s:I}", "type", "tls", "context", (json_int_t)context_id);
    tl = json_integer_value(json_object_get(r, "socket"));
    json_decref(r);
    r = h_ok(b, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)tl, "address", "127.0.0.1");
    tls_port = (int)json_integer_value(json_object_get(json_object_get(r, "local"), "port"));
    json_decref(r);
    json_decref(h_ok(b, "socket.listen", "{s:I, s:i, s:b}", "socket", (json_int_t)tl, "backlog",
                     1024, "auto_accept", 1));
    pl = h_open(b, "tcp");
    r = h_ok(b, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)pl, "address", "127.0.0.1");
    pend_port = (int)json_integer_value(json_object_get(json_object_get(r, "local"), "port"));
    json_decref(r);
    json_decref(h_ok(b, "socket.listen", "{s:I, s:i}", "socket", (json_int_t)pl, "backlog", 1024));
    json_decref(h_wait_clients(b, 1));
    fds0 = h_count_fds(D.pid);

    fd = calloc((size_t)total, sizeof *fd);
    t_open = calloc((size_t)total, sizeof *t_open);
    t_end = calloc((size_t)total, sizeof *t_end);
    EXPECT_TRUE(fd && t_open && t_end, "fd && t_open && t_end");

    memset(&tr, 0, sizeof tr);
    tr.sock = D.sock;
    tr.gap_ms = 5; /* ~300 bytes: about 1.6 s in all, longer than the 1 s line timeout */
    EXPECT_INT(pthread_create(&tr.th, NULL, trickler_main, &tr), 0, "pthread_create");
    g_trickler = &tr;

    /* The storm: half lines on control connections, silent or half-sent TLS handshakes,
       connections nobody accepts. B pings in between. */
    for (int i = 0; i < total; i++) {
        if (i < nctl) {
            fd[i] = unix_connect(D.sock);
            if (fd[i] < 0)
                fprintf(stderr, "control connection %d: %s\n", i, strerror(errno));
            EXPECT_TRUE(fd[i] >= 0, "fd[i] >= 0");
            track_raw_fd(fd[i]);
            EXPECT_INT(write_all(fd[i], partial_line, strlen(partial_line)), 0, "write_all");
        } else {
            fd[i] = tcp_connect_raw(i < nctl + ntls ? tls_port : pend_port);
            EXPECT_TRUE(fd[i] >= 0, "fd[i] >= 0");
            track_raw_fd(fd[i]);
            /* half of the TLS ones start a record and stop: 5-byte header of a ClientHello,
               then 2 bytes of the promised 512 */
            if (i < nctl + ntls && (i & 1))
                EXPECT_INT(write_all(fd[i], "\x16\x03\x01\x02\x00\x01\x00", 7), 0, "write_all");
        }
        t_open[i] = h_now_ms();
        if (i % 200 == 199) {
            waited_ping(&pw, b);
            pings++;
        }
    }
    t_last_open = h_now_ms();
    fds_peak = h_count_fds(D.pid);

    /* A new client arriving in the middle of it is served at once. */
    waited_begin(&fw);
    n = h_client(&D);
    json_decref(h_ok(n, "daemon.hello", NULL));
    waited_end(&fw);
    h_client_close(n);

    /* Until all are closed by the daemon (or 5 s after the last was opened): B keeps pinging. */
    while (ended < total && h_now_ms() < t_last_open + 5000) {
        for (int i = 0; i < total; i++) {
            if (t_end[i] || !readable(fd[i], 0))
                continue;
            if (drained_ended(fd[i])) {
                t_end[i] = h_now_ms();
                ended++;
            }
        }
        waited_ping(&pw, b);
        pings++;
        h_sleep_ms(20);
    }
    pthread_join(tr.th, NULL);
    g_trickler = NULL;
    for (int i = 0; i < total; i++) {
        long long dt = t_end[i] - t_open[i];
        if (!t_end[i])
            continue;
        if (i < nctl) {
            min_ctl = dt < min_ctl ? dt : min_ctl;
            max_ctl = dt > max_ctl ? dt : max_ctl;
        } else if (i < nctl + ntls) {
            min_tls = dt < min_tls ? dt : min_tls;
            max_tls = dt > max_tls ? dt : max_tls;
        } else {
            max_pend = dt > max_pend ? dt : max_pend;
        }
    }
    /* B heard of the pending ones (socket.incoming) and of nothing else: handshakes that never
       finished are never announced on an auto_accept listener. */
    while ((ev = sockd_client_next_event(b, 0)) != NULL) {
        const char *m = json_string_value(json_object_get(ev, "method"));
        if (m && !strcmp(m, "socket.incoming"))
            incoming++;
        else {
            if (other++ < 3)
                h_dump("unexpected event", ev);
        }
        json_decref(ev);
    }
    fprintf(stderr,
            "  %d stalled control connections, %d stalled TLS handshakes, %d never-accepted "
            "pendings: %d closed by the daemon within %lld ms of the last\n"
            "  closed after (ms): control %lld..%lld, TLS %lld..%lld, pending <= %lld "
            "(timeouts 1 s)\n"
            "  daemon fds %d -> %d -> %d; B: %d pings, max %lld ms (daemon CPU %lld ms); a new "
            "client's hello %lld ms (%lld ms); "
            "trickling client (%d ms/byte) %s after %lld ms; incoming %d\n",
            nctl, ntls, npend, ended, h_now_ms() - t_last_open, min_ctl, max_ctl, min_tls, max_tls,
            max_pend, fds0, fds_peak, h_wait_fds(D.pid, fds0, H_TIMEOUT_MS), pings, pw.wall_max,
            pw.work_max, fw.wall_max, fw.work_max, tr.gap_ms,
            tr.ok == 1 ? "answered" : "NOT answered", tr.took_ms, incoming);
    EXPECT_INT(ended, total, "ended");
    EXPECT_TRUE(min_ctl >= 700,
                "min_ctl >= 700"); /* not before the line timeout (libev's cached clock: -300) */
    EXPECT_TRUE(min_tls >= 700, "min_tls >= 700");
    EXPECT_TRUE(pw.work_max < 500, "pw.work_max < 500");
    EXPECT_TRUE(fw.work_max < 500, "fw.work_max < 500");
    EXPECT_INT(tr.ok, 1, "tr.ok");
    EXPECT_INT(incoming, npend, "incoming");
    EXPECT_INT(other, 0, "other");
    EXPECT_INT(h_wait_fds(D.pid, fds0, H_TIMEOUT_MS), fds0,
               "h_wait_fds(D.pid, fds0, H_TIMEOUT_MS)");
    r = h_wait_clients(b, 1);
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(r, "sockets"), "total")), 2, "%s",
               jd(r));
    json_decref(r);
    r = h_ok(b, "socket.info", "{s:I}", "socket", (json_int_t)pl);
    EXPECT_INT(json_integer_value(json_object_get(r, "pending")), 0, "%s", jd(r));
    json_decref(r);

    close_tracked();
    free(fd);
    free(t_open);
    free(t_end);
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 4. peers that reset, half-close or trickle                                                 */

/* Connect socket s of c to our listener lfd; return the accepted fd. */
static int
accept_one(int lfd)
{
    int fd;
    EXPECT_TRUE(readable(lfd, H_TIMEOUT_MS), "readable(lfd, H_TIMEOUT_MS)");
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    return track_raw_fd(fd);
}

static void
test_peer_faults(void **state)
{
    enum { NRESET = 20, NTRICKLE = 10, TRICKLE_LEN = 200 };
    struct sockd_client *a;
    long long rs[NRESET + 1], hs, ts[NTRICKLE];
    int pfd[NRESET + 1], hfd, tfd[NTRICKLE], port, lfd, one = 1, seen[NRESET + 1] = {0};
    unsigned char *big, *got;
    char *b64;
    json_t *ev, *err = NULL;
    size_t queued = 0, have = 0;
    int capped = 0;

    pat_init();
    h_daemon_start(&D, NULL);
    a = h_client_auto(&D);
    lfd = track_raw_fd(tcp_listen_any(&port, 128, 0));
    EXPECT_TRUE(lfd >= 0, "lfd >= 0");

    /* --- reset: 10 sockets with a recv pending, 10 idle, 1 with sends queued --- */
    for (int i = 0; i <= NRESET; i++) {
        rs[i] = h_connect_tcp(a, port);
        pfd[i] = accept_one(lfd);
        if (i < NRESET / 2)
            json_decref(
                h_ok(a, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)rs[i], "length", 100));
    }
    big = malloc(256 * KIB);
    EXPECT_TRUE(big != NULL, "big");
    memcpy(big, pat, 256 * KIB);
    b64 = h_b64(big, 256 * KIB);
    for (int i = 0; i < 64 && !capped; i++) { /* the peer does not read: fill until -32003 */
        json_t *params = json_pack("{s:I, s:s, s:b}", "socket", (json_int_t)rs[NRESET], "data", b64,
                                   "notify", 0);
        int rc = sockd_client_call(a, "socket.send", params, NULL, &err, H_TIMEOUT_MS);
        json_decref(params);
        EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
        if (rc == 1) {
            EXPECT_INT(sockd_client_error_code(err), -32003, "%s", jd(err));
            json_decref(err);
            capped = 1;
        } else {
            queued += 256 * KIB;
        }
    }
    EXPECT_TRUE(capped, "capped");
    for (int i = 0; i <= NRESET; i++) {
        struct linger lg = {1, 0};
        EXPECT_INT(setsockopt(pfd[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0, "setsockopt: %s",
                   strerror(errno));
        untrack_close(pfd[i]);
        pfd[i] = -1;
    }
    for (int k = 0; k <= NRESET; k++) {
        long long s;
        int i;
        ev = h_event(a, "socket.closed", 0, H_TIMEOUT_MS);
        s = json_integer_value(json_object_get(ev, "socket"));
        for (i = 0; i <= NRESET && rs[i] != s; i++)
            ;
        EXPECT_TRUE(i <= NRESET && !seen[i], "%s", jd(ev));
        seen[i] = 1;
        /* a reset is "lost" with the errno of the failed call, never an orderly by_peer */
        EXPECT_STR(jstr_or_empty(ev, "reason"), "lost", "%s", jd(ev));
        EXPECT_TRUE(json_integer_value(json_object_get(ev, "errno")) == ECONNRESET ||
                        json_integer_value(json_object_get(ev, "errno")) == EPIPE,
                    "%s", jd(ev));
        EXPECT_TRUE(json_object_get(ev, "request") == NULL, "%s", jd(ev));
        if (i == NRESET) { /* what was queued and never sent is reported */
            json_int_t u = json_integer_value(json_object_get(ev, "unsent"));
            EXPECT_TRUE(u > 0 && (size_t)u <= queued, "%s", jd(ev));
            fprintf(stderr, "  reset with %zu KiB queued: socket.closed lost, unsent %lld\n",
                    queued / KIB, (long long)u);
        }
        json_decref(ev);
    }
    for (int i = 0; i <= NRESET; i++)
        EXPECT_INT(h_err(a, NULL, "socket.info", "{s:I}", "socket", (json_int_t)rs[i]), -32001,
                   "socket.info error code");
    free(b64);

    /* --- half-close: the client's queued data still goes out in full after the peer's EOF --- */
    {
        int small = 4096, lfd2, port2;
        static const char marker[] = "before-eof:";
        size_t total = strlen(marker) + MIB, rd = 0;
        unsigned char *in = malloc(total + 1);
        long long t0;

        lfd2 = track_raw_fd(tcp_listen_any(&port2, 4, small));
        EXPECT_TRUE(lfd2 >= 0 && in, "lfd2 >= 0 && in");
        hs = h_connect_tcp(a, port2);
        hfd = accept_one(lfd2);
        /* small kernel buffers both ways: most of the MiB has to wait in the daemon's queue */
        json_decref(
            h_ok(a, "socket.setopt", "{s:I, s:i}", "socket", (json_int_t)hs, "sndbuf", 4096));
        json_decref(h_ok(a, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)hs, "length", 100));
        json_decref(h_ok(a, "socket.send", "{s:I, s:s}", "socket", (json_int_t)hs, "text", marker));
        b64 = h_b64(pat, 256 * KIB);
        for (int i = 0; i < 4; i++)
            json_decref(
                h_ok(a, "socket.send", "{s:I, s:s}", "socket", (json_int_t)hs, "data", b64));
        free(b64);
        h_sleep_ms(100); /* the peer has not read: much of the MiB waits in the daemon */
        json_t *info = h_ok(a, "socket.info", "{s:I}", "socket", (json_int_t)hs);
        json_int_t buffered = json_integer_value(json_object_get(info, "send_buffered"));
        json_decref(info);
        EXPECT_TRUE(buffered > 512 * KIB, "buffered > 512 * KIB");
        EXPECT_INT(write_all(hfd, "bye", 3), 0, "write_all(hfd, \"bye\", 3)");
        EXPECT_INT(shutdown(hfd, SHUT_WR), 0, "shutdown: %s", strerror(errno));
        /* the pending exact recv of 100 is cut short by the EOF: "bye" with eof:true */
        ev = h_event(a, "socket.received", hs, H_TIMEOUT_MS);
        EXPECT_TRUE(!strcmp(jstr_or_empty(ev, "data"), "Ynll") &&
                        json_is_true(json_object_get(ev, "eof")),
                    "%s", jd(ev));
        json_decref(ev);
        /* the peer keeps reading: every byte the client sent, then EOF */
        t0 = h_now_ms();
        for (;;) {
            ssize_t k;
            EXPECT_TRUE(h_now_ms() - t0 < 2 * H_TIMEOUT_MS, "h_now_ms() - t0 < 2 * H_TIMEOUT_MS");
            if (!readable(hfd, 1000))
                continue;
            k = recv(hfd, in + rd, total + 1 - rd, 0);
            EXPECT_TRUE(k >= 0, "k >= 0");
            if (k == 0)
                break;
            rd += (size_t)k;
        }
        EXPECT_INT(rd, total, "rd");
        EXPECT_TRUE(memcmp(in, marker, strlen(marker)) == 0, "in");
        for (int i = 0; i < 4; i++) /* four sends of the same 256 KiB */
            EXPECT_TRUE(memcmp(in + strlen(marker) + (size_t)i * 256 * KIB, pat, 256 * KIB) == 0,
                        "in + strlen(marker) + (size_t)i * 256 * KIB");
        /* the client hears every send completed, then socket.closed by_peer */
        for (int i = 0; i < 5; i++)
            json_decref(h_event(a, "socket.sent", hs, H_TIMEOUT_MS));
        ev = h_event(a, "socket.closed", hs, H_TIMEOUT_MS);
        EXPECT_TRUE(!strcmp(jstr_or_empty(ev, "reason"), "by_peer") &&
                        !json_object_get(ev, "unsent"),
                    "%s", jd(ev));
        json_decref(ev);
        fprintf(stderr,
                "  half-close: %lld KiB still queued in the daemon at the peer's EOF; all %zu bytes"
                " delivered, then FIN; socket.closed by_peer\n",
                (long long)buffered / KIB, total);
        /* the handle is dead: a plain socket does not stay half-open after the peer's EOF */
        EXPECT_INT(
            h_err(a, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)hs, "text", "late"),
            -32001, "socket.send error code");
        free(in);
    }

    /* --- trickle: 10 peers write 200 bytes each, one byte per ms per peer --- */
    for (int i = 0; i < NTRICKLE; i++) {
        ts[i] = h_connect_tcp(a, port);
        tfd[i] = accept_one(lfd);
        setsockopt(tfd[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        json_decref(h_ok(a, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)ts[i], "length",
                         TRICKLE_LEN));
    }
    long long t0 = h_now_ms();
    for (int k = 0; k < TRICKLE_LEN; k++) {
        for (int i = 0; i < NTRICKLE; i++) {
            unsigned char ch = (unsigned char)((k * 7 + i) & 0xff);
            EXPECT_INT(write_all(tfd[i], &ch, 1), 0, "write_all(tfd[i], &ch, 1)");
        }
        h_sleep_ms(1);
    }
    long long tt = h_now_ms() - t0;
    for (int i = 0; i < NTRICKLE; i++) {
        /* exactly one event with all 200 bytes: an exact recv is not delivered in pieces */
        ev = h_event(a, "socket.received", ts[i], H_TIMEOUT_MS);
        got = h_unb64(jstr_or_empty(ev, "data"), &have);
        EXPECT_TRUE(got != NULL && have == TRICKLE_LEN && !json_object_get(ev, "eof"), "%s",
                    jd(ev));
        for (int k = 0; k < TRICKLE_LEN; k++)
            if (got[k] != (unsigned char)((k * 7 + i) & 0xff)) {
                fprintf(stderr, "trickled byte %d of socket %d wrong\n", k, i);
                fail();
            }
        free(got);
        json_decref(ev);
    }
    h_no_event(a, 100); /* no stray pieces */
    fprintf(stderr,
            "  trickle: %d sockets x %d bytes at 1 byte/ms (%lld ms): one exact event each\n",
            NTRICKLE, TRICKLE_LEN, tt);
    for (int i = 0; i < NTRICKLE; i++)
        json_decref(h_ok(a, "socket.close", "{s:I}", "socket", (json_int_t)ts[i]));
    free(big);
    close_tracked();
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. a burst past max-clients                                                                */

/* Read until EOF (bounded): the bytes read, NUL-terminated (malloc'ed), or NULL on timeout. */
static char *
read_to_eof(int fd, int ms, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    long long deadline = h_now_ms() + ms;
    while (buf) {
        long long left = deadline - h_now_ms();
        ssize_t k;
        if (left <= 0 || !readable(fd, (int)left)) {
            free(buf);
            return NULL;
        }
        k = recv(fd, buf + n, cap - 1 - n, 0);
        if (k == 0 || (k < 0 && errno == ECONNRESET))
            break;
        if (k > 0)
            n += (size_t)k;
        if (n == cap - 1)
            break;
    }
    if (buf)
        buf[n] = 0;
    *len = n;
    return buf;
}

static void
test_max_clients_burst(void **state)
{
    enum { NMAX = 5, BURST = 200 };
    struct sockd_client *c[NMAX], *extra;
    json_t *r;
    struct waited pw = {0};
    int fds0, fds1, fd, refused = 0;
    static const char ping_line[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\n";

    h_daemon_start(&D, "max-clients 5\n");
    for (int i = 0; i < NMAX; i++) {
        c[i] = h_client_auto(&D);
        if (i == 0)
            json_decref(h_wait_clients(c[0], 1)); /* the harness's start-up probe is gone */
    }
    json_decref(h_wait_clients(c[0], NMAX));
    fds0 = h_count_fds(D.pid);

    for (int i = 0; i < BURST; i++) {
        size_t len;
        char *got;
        json_t *m;
        fd = unix_connect(D.sock);
        EXPECT_TRUE(fd >= 0, "fd >= 0");
        track_raw_fd(fd);
        if (i & 1) /* half of them talk first: still exactly the refusal, the request unread */
            EXPECT_TRUE(write_all(fd, ping_line, strlen(ping_line)) == 0 || errno == EPIPE,
                        "write_all(fd, ping_line, strlen(ping_line)) == 0 || errno == EPIPE");
        got = read_to_eof(fd, H_TIMEOUT_MS, &len);
        if (!got)
            fprintf(stderr, "connection %d past max-clients: no EOF within %d ms\n", i,
                    H_TIMEOUT_MS);
        EXPECT_TRUE(got != NULL, "got");
        if (!(len > 0 && got[len - 1] == '\n' && strchr(got, '\n') == got + len - 1))
            fprintf(stderr, "connection %d past max-clients got \"%s\"\n", i, got);
        EXPECT_TRUE(len > 0 && got[len - 1] == '\n' && strchr(got, '\n') == got + len - 1,
                    "len > 0 && got[len - 1] == '\\n' && strchr(got, '\\n') == got + len - 1");
        m = json_loads(got, 0, NULL);
        EXPECT_TRUE(m && json_is_null(json_object_get(m, "id")) &&
                        json_integer_value(json_object_get(json_object_get(m, "error"), "code")) ==
                            -32003 &&
                        !strcmp(jstr_or_empty(json_object_get(json_object_get(m, "error"), "data"),
                                              "limit"),
                                "max-clients"),
                    "%s", jd(m));
        json_decref(m);
        free(got);
        refused++;
        if (i % 10 == 0) { /* the five are served throughout */
            waited_ping(&pw, c[(i / 10) % NMAX]);
        }
    }
    close_tracked();
    r = h_wait_clients(c[0], NMAX);
    json_decref(r);
    fds1 = h_wait_fds(D.pid, fds0, H_TIMEOUT_MS);
    for (int i = 0; i < NMAX; i++)
        json_decref(h_ok(c[i], "daemon.ping", NULL));
    fprintf(stderr,
            "  %d refused past max-clients %d; pings meanwhile max %lld ms (daemon CPU %lld ms); "
            "daemon fds %d -> %d\n",
            refused, NMAX, pw.wall_max, pw.work_max, fds0, fds1);
    EXPECT_INT(fds1, fds0, "fds1");
    EXPECT_TRUE(pw.work_max < 500, "pw.work_max < 500");

    /* a freed slot is taken by the next client; the one after is refused again */
    h_client_close(c[2]);
    json_decref(h_wait_clients(c[0], NMAX - 1));
    extra = h_client_auto(&D);
    json_decref(h_ok(extra, "daemon.ping", NULL));
    EXPECT_TRUE(h_open(extra, "tcp") > 0, "h_open(extra, \"tcp\") > 0");
    fd = unix_connect(D.sock);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    {
        size_t len;
        char *got = read_to_eof(fd, H_TIMEOUT_MS, &len);
        EXPECT_TRUE(got != NULL, "got");
        EXPECT_TRUE(strstr(got, "max-clients") != NULL, "strstr(got, \"max-clients\")");
        free(got);
    }
    close(fd);
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 6. file descriptor exhaustion                                                              */

static void
test_fd_exhaustion(void **state)
{
    const int limit = 64;
    struct rlimit rl = {(rlim_t)limit, (rlim_t)limit};
    struct sockd_client *a;
    struct mute *sink;
    json_t *r, *err = NULL, *ev;
    long long *hs, lsock, failed_s = 0, cpu0, cpu1, t0, t_ans, t_acc = 0;
    int nh = 0, fds0, fds_full, lport, cfd, tfd, errno_seen = 0, closed_instead = 0;
    struct rawc late;
    char note[200] = "";

    h_daemon_start(&D, NULL);
    a = h_client_auto(&D);
    json_decref(h_wait_clients(a, 1));
    /* The daemon runs at RLIMIT_NOFILE 64 from here (prlimit on its pid: the same limit as a
       setrlimit before exec, without a wrapper; sockd never reads its limit). */
    if (prlimit(D.pid, RLIMIT_NOFILE, &rl, NULL) != 0) {
        fprintf(stderr, "prlimit: %s\n", strerror(errno));
        fail();
    }
    fds0 = h_count_fds(D.pid);
    sink = mute_start();
    hs = calloc(256, sizeof *hs);
    EXPECT_TRUE(hs != NULL, "hs");

    /* a listener of A's, auto_accept: its accept will meet EMFILE */
    lsock = h_open(a, "tcp");
    r = h_ok(a, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)lsock, "address", "127.0.0.1");
    lport = (int)json_integer_value(json_object_get(json_object_get(r, "local"), "port"));
    json_decref(r);
    json_decref(
        h_ok(a, "socket.listen", "{s:I, s:b}", "socket", (json_int_t)lsock, "auto_accept", 1));

    /* Open sockets until the daemon runs out of fds: a clean error, nothing half-made. */
    for (int i = 0; i < 200; i++) {
        long long s = h_open(a, "tcp");
        json_t *params = json_pack("{s:I, s:s, s:i}", "socket", (json_int_t)s, "address",
                                   "127.0.0.1", "port", sink->port);
        int rc = sockd_client_call(a, "socket.connect", params, NULL, &err, H_TIMEOUT_MS);
        json_decref(params);
        EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
        if (rc == 1) {
            json_t *d = json_object_get(err, "data");
            EXPECT_TRUE(sockd_client_error_code(err) == -32603 &&
                            !strcmp(jstr_or_empty(d, "reason"), "open_failed") &&
                            json_integer_value(json_object_get(d, "errno")) == EMFILE,
                        "%s", jd(err));
            errno_seen = EMFILE;
            snprintf(note, sizeof note, "%s", jstr_or_empty(d, "detail"));
            json_decref(err);
            failed_s = s;
            break;
        }
        ev = sockd_client_wait_event(a, NULL, s, H_TIMEOUT_MS);
        EXPECT_TRUE(ev != NULL, "%s", jd(NULL));
        if (!strcmp(jstr_or_empty(ev, "method"), "socket.closed")) { /* the other clean form */
            h_dump("connect ended with", ev);
            closed_instead++;
            json_decref(ev);
            break;
        }
        EXPECT_STR(jstr_or_empty(ev, "method"), "socket.connected", "%s", jd(ev));
        json_decref(ev);
        hs[nh++] = s;
    }
    fds_full = h_count_fds(D.pid);
    EXPECT_TRUE(errno_seen == EMFILE || closed_instead, "errno_seen == EMFILE || closed_instead");
    if (failed_s) { /* "a call that fails leaves the socket as it was": still open, no fd */
        r = h_ok(a, "socket.info", "{s:I}", "socket", (json_int_t)failed_s);
        EXPECT_STR(jstr_or_empty(r, "state"), "open", "%s", jd(r));
        json_decref(r);
    }
    EXPECT_TRUE(nh >= limit - fds0 - 4, "nh >= limit - fds0 - 4");
    /* The daemon still serves what needs no fd. */
    json_decref(h_ok(a, "daemon.ping", NULL));
    json_decref(h_ok(a, "daemon.stats", NULL));

    /* At the limit: a new control client and a connection to A's listener both wait in the
       kernel's backlog; the daemon pauses accepting (1 s timers) instead of spinning. */
    cfd = unix_connect(D.sock);
    EXPECT_TRUE(cfd >= 0, "cfd >= 0");
    rawc_init(&late, cfd);
    tfd = track_raw_fd(tcp_connect_raw(lport));
    EXPECT_TRUE(tfd >= 0, "tfd >= 0");
    EXPECT_INT(rawc_send(&late, "daemon.ping", NULL), 0, "rawc_send(&late, \"daemon.ping\", NULL)");
    cpu0 = proc_cpu_ms(D.pid);
    t0 = h_now_ms();
    EXPECT_TRUE(!readable(cfd, 1500), "readable(cfd, 1500)");
    cpu1 = proc_cpu_ms(D.pid);
    h_no_event(a, 10);
    fprintf(stderr,
            "  fd limit %d: daemon fds %d at start, %d at the limit; %d sockets connected, then "
            "socket.connect -> -32603 open_failed (%s)\n"
            "  at the limit for 1.5 s with a client and a connection waiting: daemon CPU %lld ms\n",
            limit, fds0, fds_full, nh, note, cpu1 - cpu0);
    EXPECT_TRUE(cpu1 - cpu0 < 300, "cpu1 - cpu0 < 300"); /* a busy loop would use ~1500 */

    /* Free ten fds: within about a second both are taken in and everything works again. */
    for (int i = 0; i < 10; i++)
        json_decref(h_ok(a, "socket.close", "{s:I}", "socket", (json_int_t)hs[--nh]));
    t0 = h_now_ms();
    r = rawc_msg(&late, 3000);
    t_ans = h_now_ms() - t0;
    EXPECT_TRUE(r != NULL && json_object_get(r, "result") != NULL, "%s", jd(r));
    json_decref(r);
    ev = h_event(a, "socket.accepted", 0, 3000);
    t_acc = h_now_ms() - t0;
    EXPECT_INT(json_integer_value(json_object_get(ev, "listener")), lsock, "%s", jd(ev));
    json_decref(ev);
    {
        long long s = h_connect_tcp(a, sink->port);
        hs[nh++] = s;
    }
    fprintf(stderr,
            "  after freeing 10 fds: waiting client answered in %lld ms, waiting "
            "connection accepted in %lld ms\n",
            t_ans, t_acc);

    /* Close everything: the daemon is back to where it started. */
    rawc_free(&late);
    for (int i = 0; i < nh; i++)
        json_decref(h_ok(a, "socket.close", "{s:I}", "socket", (json_int_t)hs[i]));
    r = h_ok(a, "socket.list", NULL);
    {
        json_t *socks = json_object_get(r, "sockets");
        size_t k;
        json_t *v;
        json_array_foreach(socks, k, v)
            json_decref(h_ok(a, "socket.close", "{s:I}", "socket",
                             json_integer_value(json_object_get(v, "socket"))));
    }
    json_decref(r);
    json_decref(h_wait_clients(a, 1));
    EXPECT_INT(h_wait_fds(D.pid, fds0, H_TIMEOUT_MS), fds0,
               "h_wait_fds(D.pid, fds0, H_TIMEOUT_MS)");
    free(hs);
    mute_stop(sink);
    close_tracked();
    h_cleanup();
    h_daemon_stop(&D);
}

/* ------------------------------------------------------------------------------------------ */
/* 7. SIGTERM under load                                                                      */

/* A server that writes the pattern flat out on every connection and discards what it reads. */
struct flood {
    int lfd, port;
    pthread_t th;
    int stop;         /* atomic */
    int nconn, ended; /* atomic */
    size_t sent;      /* atomic */
};
static struct flood *g_flood;

static void *
flood_main(void *arg)
{
    struct flood *f = arg;
    struct pollfd pf[520];
    int n = 1;
    char sink[65536];

    pf[0].fd = f->lfd;
    pf[0].events = POLLIN;
    while (!__atomic_load_n(&f->stop, __ATOMIC_SEQ_CST)) {
        if (poll(pf, (nfds_t)n, 50) <= 0)
            continue;
        if ((pf[0].revents & POLLIN) && n < 520) {
            int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (fd >= 0) {
                pf[n].fd = fd;
                pf[n].events = POLLIN | POLLOUT;
                pf[n].revents = 0;
                n++;
                __atomic_add_fetch(&f->nconn, 1, __ATOMIC_SEQ_CST);
            }
        }
        for (int i = 1; i < n; i++) {
            if (pf[i].fd < 0 || !pf[i].revents)
                continue;
            if (pf[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                ssize_t k = recv(pf[i].fd, sink, sizeof sink, MSG_DONTWAIT);
                if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR)) {
                    close(pf[i].fd);
                    pf[i].fd = -pf[i].fd - 1; /* ignored by poll */
                    __atomic_add_fetch(&f->ended, 1, __ATOMIC_SEQ_CST);
                    continue;
                }
            }
            if (pf[i].revents & POLLOUT) {
                ssize_t k = send(pf[i].fd, pat, 64 * 1024, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k > 0)
                    __atomic_add_fetch(&f->sent, (size_t)k, __ATOMIC_SEQ_CST);
            }
        }
    }
    for (int i = 1; i < n; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
    return NULL;
}

static void
flood_stop(struct flood *f)
{
    __atomic_store_n(&f->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(f->th, NULL);
    close(f->lfd);
    free(f);
}

enum { SIG_CLIENTS = 50, SIG_SOCKS = 3, SIG_FROZEN = 5 };

struct sig_client {
    struct rawc rc;
    long long socks[SIG_SOCKS];
    int closed[SIG_SOCKS]; /* socket.closed daemon_shutdown seen */
    int bad;               /* anything wrong, described in why */
    char why[200];
    int eof;
    int frozen;    /* stops reading before SIGTERM (until thawed) */
    int half_line; /* the connection ended inside a line */
    size_t bytes;
};

struct sig_reader {
    struct sig_client *cl;
    int n;
    int stop;     /* atomic */
    int freeze;   /* atomic: frozen clients are not read while set */
    int eofs;     /* atomic */
    size_t bytes; /* atomic */
    pthread_t th;
};

static void
sig_line(struct sig_client *c, char *line, size_t n)
{
    int k;
    if (strncmp(line, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.received\"", 43) == 0) {
        long long s = line_socket(line, n);
        for (k = 0; k < SIG_SOCKS && c->socks[k] != s; k++)
            ;
        if (k == SIG_SOCKS || c->closed[k]) {
            c->bad++;
            snprintf(c->why, sizeof c->why, "socket.received for socket %lld %s", s,
                     k == SIG_SOCKS ? "not ours" : "after its socket.closed");
        }
        return;
    }
    json_t *m = json_loadb(line, n, 0, NULL);
    const char *meth = json_string_value(json_object_get(m, "method"));
    if (!m) {
        c->bad++;
        snprintf(c->why, sizeof c->why, "unparsable: %.150s", line);
        return;
    }
    if (meth && !strcmp(meth, "socket.closed")) {
        json_t *p = json_object_get(m, "params");
        long long s = json_integer_value(json_object_get(p, "socket"));
        for (k = 0; k < SIG_SOCKS && c->socks[k] != s; k++)
            ;
        if (k == SIG_SOCKS || c->closed[k] ||
            strcmp(jstr_or_empty(p, "reason"), "daemon_shutdown") ||
            json_object_get(p, "request")) {
            c->bad++;
            snprintf(c->why, sizeof c->why, "unexpected %.150s", line);
        } else {
            c->closed[k] = 1;
        }
    } else if (meth && strcmp(meth, "socket.sent")) {
        c->bad++;
        snprintf(c->why, sizeof c->why, "unexpected %.150s", line);
    } else if (!meth && json_object_get(m, "error")) {
        c->bad++;
        snprintf(c->why, sizeof c->why, "error %.150s", line);
    }
    json_decref(m);
}

static void *
sig_reader_main(void *arg)
{
    struct sig_reader *r = arg;
    struct pollfd *pf = calloc((size_t)r->n, sizeof *pf);
    if (!pf)
        return NULL;
    while (!__atomic_load_n(&r->stop, __ATOMIC_SEQ_CST)) {
        int k = 0, freeze = __atomic_load_n(&r->freeze, __ATOMIC_SEQ_CST);
        for (int i = 0; i < r->n; i++) {
            int skip = r->cl[i].eof || (freeze && r->cl[i].frozen);
            pf[i].fd = skip ? -1 : r->cl[i].rc.fd;
            pf[i].events = POLLIN;
            pf[i].revents = 0;
            k += !r->cl[i].eof;
        }
        if (k == 0)
            break;
        if (poll(pf, (nfds_t)r->n, 20) <= 0)
            continue;
        for (int i = 0; i < r->n; i++) {
            struct sig_client *c = &r->cl[i];
            ssize_t got;
            size_t n;
            char *line;
            if (!pf[i].revents)
                continue;
            got = rawc_fill(&c->rc, 1 << 20, 0);
            if (got > 0) {
                c->bytes += (size_t)got;
                __atomic_add_fetch(&r->bytes, (size_t)got, __ATOMIC_SEQ_CST);
            }
            while ((line = rawc_take(&c->rc, &n)) != NULL)
                sig_line(c, line, n);
            if (got == 0) {
                c->half_line = c->rc.len > 0;
                c->eof = 1;
                __atomic_add_fetch(&r->eofs, 1, __ATOMIC_SEQ_CST);
            }
        }
    }
    free(pf);
    return NULL;
}

static struct sig_reader *g_sig_reader;

static void
test_sigterm_under_load(void **state)
{
    struct sig_client *cl;
    struct sig_reader *rd;
    struct flood *f;
    char *b64;
    json_t *r, *ev;
    long long t_term, t_exit = -1, t_all = -1;
    size_t before;
    int status = 0, exited = 0, told = 0, eofs, bad = 0, frozen_told = 0, frozen_eof = 0;
    int peers_ended = 0;
    struct stat st;
    pid_t pid;

    pat_init();
    raise_nofile(2048);
    /* The flush on SIGTERM lasts shutdown-timeout: long enough here for the reading clients to
       take everything on a slow machine; the frozen ones are cut off when it ends. */
    h_daemon_start(&D, "shutdown-timeout 8s\n");
    f = calloc(1, sizeof *f);
    EXPECT_TRUE(f != NULL, "f");
    f->lfd = tcp_listen_any(&f->port, 1024, 0);
    EXPECT_TRUE(f->lfd >= 0, "f->lfd >= 0");
    EXPECT_INT(pthread_create(&f->th, NULL, flood_main, f), 0, "pthread_create");
    g_flood = f;
    cl = calloc(SIG_CLIENTS, sizeof *cl);
    rd = calloc(1, sizeof *rd);
    EXPECT_TRUE(cl && rd, "cl && rd");
    rd->cl = cl;
    b64 = h_b64(pat, 64 * KIB);

    /* 50 clients, 3 sockets each: the flood server streams at them, they send to it. */
    for (int i = 0; i < SIG_CLIENTS; i++) {
        struct sig_client *c = &cl[i];
        rawc_init(&c->rc, unix_connect(D.sock));
        EXPECT_TRUE(c->rc.fd >= 0, "c->rc.fd >= 0");
        c->frozen = i < SIG_FROZEN;
        rd->n = i + 1;
        for (int k = 0; k < SIG_SOCKS; k++) {
            r = rawc_ok(&c->rc, "socket.open", json_pack("{s:s}", "type", "tcp"));
            c->socks[k] = json_integer_value(json_object_get(r, "socket"));
            json_decref(r);
            json_decref(rawc_ok(&c->rc, "socket.connect",
                                json_pack("{s:I, s:s, s:i}", "socket", (json_int_t)c->socks[k],
                                          "address", "127.0.0.1", "port", f->port)));
        }
        for (int k = 0; k < SIG_SOCKS; k++) {
            ev = rawc_wait(&c->rc, "socket.connected", H_TIMEOUT_MS);
            EXPECT_TRUE(ev != NULL, "ev");
            json_decref(ev);
        }
    }
    /* From here on the reader thread reads every client (they must read while they write: the
       daemon stops reading a client whose output is over the high-water mark). */
    EXPECT_INT(pthread_create(&rd->th, NULL, sig_reader_main, rd), 0, "pthread_create");
    g_sig_reader = rd;
    /* every client's sends before any stream: with 150 streams running, each daemon loop turn
       encodes ~10 MB and an 87 KB request line needs two turns (measured: these 600 sends took
       33 s when issued behind the streams) */
    for (int i = 0; i < SIG_CLIENTS; i++)
        for (int k = 0; k < SIG_SOCKS; k++)
            for (int j = 0; j < 4; j++)
                EXPECT_INT(rawc_send(&cl[i].rc, "socket.send",
                                     json_pack("{s:I, s:s}", "socket", (json_int_t)cl[i].socks[k],
                                               "data", b64)),
                           0, "rawc_send");
    free(b64);
    for (int i = 0; i < SIG_CLIENTS; i++)
        for (int k = 0; k < SIG_SOCKS; k++)
            EXPECT_INT(rawc_send(&cl[i].rc, "socket.recv",
                                 json_pack("{s:I, s:i, s:b}", "socket", (json_int_t)cl[i].socks[k],
                                           "length", 65536, "stream", 1)),
                       0, "rawc_send");
    /* Under load means data is flowing: wait for 10 MiB to have reached the clients (how long
       that takes depends on the machine, so it is a condition, not a sleep). */
    t_term = h_now_ms();
    while ((before = __atomic_load_n(&rd->bytes, __ATOMIC_SEQ_CST)) <= 10 * MIB &&
           h_now_ms() - t_term < 6 * H_TIMEOUT_MS)
        h_sleep_ms(10);
    print_message("  %zu bytes delivered before the freeze (%lld ms)\n", before,
                  h_now_ms() - t_term);
    EXPECT_TRUE(before > 10 * MIB, "before > 10 * MIB");
    /* Five clients stop reading: their output sits over the high-water mark at SIGTERM. */
    __atomic_store_n(&rd->freeze, 1, __ATOMIC_SEQ_CST);
    h_sleep_ms(500);
    EXPECT_INT(__atomic_load_n(&f->nconn, __ATOMIC_SEQ_CST), SIG_CLIENTS * SIG_SOCKS,
               "__atomic_load_n");

    /* SIGTERM: exit 0 once the flush ends (shutdown-timeout, for the frozen ones), every
       reading client told about every socket, then EOF. */
    pid = D.pid;
    t_term = h_now_ms();
    EXPECT_INT(kill(pid, SIGTERM), 0, "kill: %s", strerror(errno));
    while (h_now_ms() - t_term < 20000) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            exited = 1;
            t_exit = h_now_ms() - t_term;
            break;
        }
        h_sleep_ms(5);
    }
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    D.pid = 0;
    while ((eofs = __atomic_load_n(&rd->eofs, __ATOMIC_SEQ_CST)) < SIG_CLIENTS - SIG_FROZEN &&
           h_now_ms() - t_term < 20000)
        h_sleep_ms(5);
    if (eofs >= SIG_CLIENTS - SIG_FROZEN)
        t_all = h_now_ms() - t_term;
    /* The frozen ones read now: whatever reached their socket buffers, then EOF. */
    __atomic_store_n(&rd->freeze, 0, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&rd->eofs, __ATOMIC_SEQ_CST) < SIG_CLIENTS &&
           h_now_ms() - t_term < 20000)
        h_sleep_ms(5);
    __atomic_store_n(&rd->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(rd->th, NULL);
    g_sig_reader = NULL;
    for (int i = 0; i < SIG_CLIENTS; i++) {
        struct sig_client *c = &cl[i];
        int all = 1;
        for (int k = 0; k < SIG_SOCKS; k++)
            all &= c->closed[k];
        if (c->frozen) {
            frozen_told += all;
            frozen_eof += c->eof;
            continue;
        }
        told += all && c->eof && !c->half_line;
        if (c->bad && bad++ < 3)
            fprintf(stderr, "client %d: %s\n", i, c->why);
        else if ((!all || !c->eof || c->half_line) && bad++ < 3)
            fprintf(stderr, "client %d: closed %d%d%d, eof %d, half line %d\n", i, c->closed[0],
                    c->closed[1], c->closed[2], c->eof, c->half_line);
    }
    for (long long t = h_now_ms(); h_now_ms() - t < 3000;) {
        peers_ended = __atomic_load_n(&f->ended, __ATOMIC_SEQ_CST);
        if (peers_ended >= SIG_CLIENTS * SIG_SOCKS)
            break;
        h_sleep_ms(10);
    }
    fprintf(stderr,
            "  SIGTERM with %d clients x %d streaming sockets (%.0f MiB read by the clients in the "
            "second before), %d of them not reading: exit %s%d after %lld ms\n"
            "  %d/%d reading clients told about every socket, then EOF (last at %lld ms); "
            "not reading: %d told, %d EOF; %d/%d peer connections ended\n",
            SIG_CLIENTS, SIG_SOCKS, (double)before / (double)MIB, SIG_FROZEN,
            exited && WIFEXITED(status) ? "status " : "signal/none ",
            exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1, t_exit, told,
            SIG_CLIENTS - SIG_FROZEN, t_all, frozen_told, frozen_eof, peers_ended,
            SIG_CLIENTS * SIG_SOCKS);
    /* the frozen clients never read: only the shutdown-timeout deadline ends the flush */
    EXPECT_TRUE(exited, "exited");
    EXPECT_TRUE(WIFEXITED(status), "WIFEXITED(status)");
    EXPECT_INT(WEXITSTATUS(status), 0, "WEXITSTATUS(status)");
    EXPECT_INT(told, SIG_CLIENTS - SIG_FROZEN, "told");
    EXPECT_INT(bad, 0, "bad");
    EXPECT_INT(frozen_eof, SIG_FROZEN, "frozen_eof");
    EXPECT_INT(peers_ended, SIG_CLIENTS * SIG_SOCKS, "peers_ended");
    /* nothing left: the socket file is gone and so is the process (and with it every fd) */
    EXPECT_TRUE(stat(D.sock, &st) != (0), "stat: %s", strerror(errno));
    EXPECT_INT(errno, ENOENT, "errno");
    EXPECT_TRUE(kill(pid, 0) != (0), "kill: %s", strerror(errno));
    EXPECT_INT(errno, ESRCH, "errno");
    for (int i = 0; i < SIG_CLIENTS; i++)
        rawc_free(&cl[i].rc);
    free(cl);
    free(rd);
    flood_stop(f);
    g_flood = NULL;
    h_daemon_kill(&D); /* only removes the directory: the process is gone */
}

/* ------------------------------------------------------------------------------------------ */

static int
teardown(void **state)
{
    /* The daemon first: threads still talking to it then see EOF and end. SIGTERM before
       SIGKILL, so a daemon under valgrind still writes its leak summary after a failed test. */
    kill_kids();
    if (D.pid > 0 && kill(D.pid, SIGTERM) == 0) {
        int status;
        for (long long t0 = h_now_ms(); h_now_ms() - t0 < 15000; h_sleep_ms(20))
            if (waitpid(D.pid, &status, WNOHANG) == D.pid) {
                D.pid = 0;
                break;
            }
    }
    h_daemon_kill(&D);
    if (g_trickler) {
        pthread_join(g_trickler->th, NULL);
        g_trickler = NULL;
    }
    if (g_slow) {
        pthread_join(g_slow->th, NULL);
        g_slow = NULL; /* its memory is left: the test failed anyway */
    }
    if (g_sig_reader) {
        __atomic_store_n(&g_sig_reader->stop, 1, __ATOMIC_SEQ_CST);
        pthread_join(g_sig_reader->th, NULL);
        g_sig_reader = NULL;
    }
    if (g_flood) {
        flood_stop(g_flood);
        g_flood = NULL;
    }
    if (g_pusher) {
        pusher_stop(g_pusher);
        g_pusher = NULL;
    }
    for (int i = 0; i < 4; i++)
        if (g_mutes[i])
            mute_stop(g_mutes[i]);
    close_tracked();
    h_cleanup();
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_killed_clients, teardown),
        cmocka_unit_test_teardown(test_slow_reader_bulk, teardown),
        cmocka_unit_test_teardown(test_paused_client_keeps_its_line, teardown),
        cmocka_unit_test_teardown(test_expensive_requests, teardown),
        cmocka_unit_test_teardown(test_stalled_connections, teardown),
        cmocka_unit_test_teardown(test_peer_faults, teardown),
        cmocka_unit_test_teardown(test_max_clients_burst, teardown),
        cmocka_unit_test_teardown(test_fd_exhaustion, teardown),
        cmocka_unit_test_teardown(test_sigterm_under_load, teardown),
    };
    /* FAULT_ONLY=test_name (a glob) runs a subset. */
    if (getenv("FAULT_ONLY") && *getenv("FAULT_ONLY"))
        cmocka_set_test_filter(getenv("FAULT_ONLY"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
