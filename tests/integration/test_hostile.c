/*
 * Hostile clients: addresses that are not UTF-8, numbers that are not addresses, log lines,
 * hand-off of piped sockets, the warning of an open daemon (sockd(8) SECURITY MODEL).
 *
 * The daemon runs as root (the test runs as root); every attacker connects as uid/gid 65534
 * (h_client_nobody: a child drops its ids, then connects).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "dnsd.h"
#include "harness.h"
#include "tc.h"

static struct h_daemon D;

static int
teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_kill(&D);
    return 0;
}

/*
 * The harness itself: a client of uid 65534 is seen as that uid by the daemon, so a rule for
 * that uid denies it what root may still do.
 */
static void
test_misc_nobody_is_nobody(void **state)
{
    struct sockd_client *root, *nobody;
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    char conf[256];
    long long s;

    (void)state;
    snprintf(conf, sizeof conf, "deny connect 127.0.0.0/8 uid %d\n", H_NOBODY);
    h_daemon_start(&D, conf);
    root = h_client_auto(&D);
    nobody = h_client_nobody(&D);
    EXPECT_TRUE(h_connect_tcp(root, peer->port) > 0,
                "h_connect_tcp(root, peer->port) > 0"); /* root may */
    s = h_open(nobody, "tcp");
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", peer->port);
    EXPECT_INT(h_err(nobody, NULL, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s,
                     "address", addr),
               -32004, "socket.connect error code");
    sockd_client_close(nobody);
    h_daemon_stop(&D);
}

/* Call method with params (json_pack fmt); assert success; *fd_out gets the fd of the response. */
static json_t *
misc_ok_fd(struct sockd_client *c, int *fd_out, const char *method, const char *fmt, ...)
{
    va_list ap;
    json_t *params, *res = NULL, *err = NULL;
    va_start(ap, fmt);
    params = json_vpack_ex(NULL, 0, fmt, ap);
    va_end(ap);
    int rc = sockd_client_call_fd(c, method, params, -1, &res, &err, fd_out, H_TIMEOUT_MS);
    json_decref(params);
    EXPECT_TRUE(rc == 0, "%s", jd(err));
    return res;
}

/* Write text to fd and read the same number of bytes back (an echo through the relay). */
static void
misc_echo_through(int fd, const char *text)
{
    size_t n = strlen(text), got = 0;
    char back[256];
    EXPECT_TRUE(n < sizeof back, "n < sizeof back");
    EXPECT_INT(write(fd, text, n), (ssize_t)n, "write: %s", strerror(errno));
    long long end = h_now_ms() + H_TIMEOUT_MS;
    while (got < n && h_now_ms() < end) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, back + got, n - got);
        EXPECT_TRUE(r > 0, "r > 0");
        got += (size_t)r;
    }
    EXPECT_INT(got, n, "got");
    EXPECT_TRUE(memcmp(back, text, n) == 0, "back");
}

/*
 * socket.give of a piped socket: the giver keeps the relay end (it may hand that fd on
 * itself); the socket's handle moves to the taker, and the relay keeps running through it all.
 */
static void
test_misc_give_piped(void **state)
{
    struct sockd_client *giver, *taker;
    struct h_peer *peer = h_peer_auto(H_ECHO, 0);
    int fd = -1;

    (void)state;
    h_daemon_start(&D, NULL);
    giver = h_client_nobody(&D);
    taker = h_client_nobody(&D);
    long long s = h_connect_tcp(giver, peer->port);
    json_decref(misc_ok_fd(giver, &fd, "socket.pipe", "{s:I}", "socket", (json_int_t)s));
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    misc_echo_through(fd, "before the gift");
    json_t *r = h_ok(giver, "socket.give", "{s:I}", "socket", (json_int_t)s);
    char token[64];
    snprintf(token, sizeof token, "%s", json_string_value(json_object_get(r, "token")));
    json_decref(r);
    misc_echo_through(fd, "while it waits");
    /* the giver leaving changes nothing: the socket is no longer its own */
    sockd_client_close(giver);
    misc_echo_through(fd, "after the giver left");
    r = h_ok(taker, "socket.take", "{s:s}", "token", token);
    long long t = json_integer_value(json_object_get(r, "socket"));
    EXPECT_TRUE(t > 0 && strcmp(json_string_value(json_object_get(r, "state")), "connected") == 0,
                "%s", jd(r));
    json_decref(r);
    misc_echo_through(fd, "after the take");
    /* still piped in the taker's hands: send answers -32002, as for the giver before */
    EXPECT_INT(h_err(taker, NULL, "socket.send", "{s:I,s:s}", "socket", (json_int_t)t, "text", "x"),
               -32002, "socket.send error code");
    /* the taker's close ends the relay: EOF on the giver's end */
    json_decref(h_ok(taker, "socket.close", "{s:I}", "socket", (json_int_t)t));
    char b;
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    EXPECT_INT(poll(&pfd, 1, H_TIMEOUT_MS), 1, "poll: %s", strerror(errno));
    EXPECT_TRUE(read(fd, &b, 1) <= 0, "read: %s", strerror(errno));
    close(fd);
    json_decref(h_ok(taker, "daemon.ping", NULL));
    sockd_client_close(taker);
    h_daemon_stop(&D);
}

/* A Unix stream socket bound to name (n bytes of sun_path; a leading NUL: abstract). */
static int
misc_unix_bound(const char *name, size_t n)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    EXPECT_TRUE(n < sizeof sun.sun_path, "n < sizeof sun.sun_path");
    memcpy(sun.sun_path, name, n);
    EXPECT_INT(
        bind(fd, (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
        0, "bind: %s", strerror(errno));
    return fd;
}

/* Connect fd to the Unix name (n bytes of sun_path). */
static void
misc_unix_connect(int fd, const char *name, size_t n)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, name, n);
    EXPECT_INT(connect(fd, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)),
               0, "connect: %s", strerror(errno));
}

/* Attach fd (closed here) as a unix socket; the new handle. */
static long long
misc_attach(struct sockd_client *c, int fd)
{
    json_t *params = json_pack("{s:s}", "type", "unix"), *res = NULL, *err = NULL;
    int rc = sockd_client_call_fd(c, "socket.attach", params, fd, &res, &err, NULL, H_TIMEOUT_MS);
    json_decref(params);
    close(fd);
    EXPECT_TRUE(rc == 0, "%s", jd(err));
    long long h = json_integer_value(json_object_get(res, "socket"));
    json_decref(res);
    return h;
}

/* The address object addr reports exactly the name (n bytes) as path_base64, and no path. */
static void
misc_assert_b64_name(const json_t *addr, const char *name, size_t n)
{
    const char *b = json_string_value(json_object_get(addr, "path_base64"));
    EXPECT_TRUE(b != NULL && json_object_get(addr, "path") == NULL, "%s", jd(addr));
    size_t dl = 0;
    unsigned char *d = h_unb64(b, &dl);
    EXPECT_TRUE(d != NULL, "d");
    EXPECT_TRUE(dl == n && memcmp(d, name, n) == 0, "%s", jd(addr));
    free(d);
}

/*
 * Attack: attach Unix sockets whose names are not UTF-8 (jansson refuses such text, and the old
 * daemon dereferenced the NULL): an abstract listener "\0x\xff", and a connected pair of path
 * sockets whose names hold invalid bytes. Every report of those addresses (attach, socket.info,
 * socket.list, socket.incoming) gives path_base64 with the exact bytes; the daemon lives on.
 */
static void
test_misc_unix_names_not_utf8(void **state)
{
    char dir[] = "/tmp/sockd-misc-XXXXXX";
    char lpath[64], cpath[64];
    struct sockd_client *nobody, *other;

    (void)state;
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    other = h_client_auto(&D);
    EXPECT_TRUE(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    int ln = snprintf(lpath, sizeof lpath, "%s/l\xfe\x80", dir);
    int cn = snprintf(cpath, sizeof cpath, "%s/c\xff\nx", dir);

    /* an abstract listener: "@x\xff" is how the name is reported (with the '@') */
    static const char abs_name[] = "\0x\xff";
    int afd = misc_unix_bound(abs_name, 3);
    EXPECT_INT(listen(afd, 4), 0, "listen: %s", strerror(errno));
    long long a = misc_attach(nobody, afd);
    json_t *info = h_ok(nobody, "socket.info", "{s:I}", "socket", (json_int_t)a);
    misc_assert_b64_name(json_object_get(info, "local"), "@x\xff", 3);
    json_decref(info);
    /* a connection to it: socket.incoming names the listener's address */
    int in = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    misc_unix_connect(in, abs_name, 3);
    json_t *ev = h_event(nobody, "socket.incoming", a, H_TIMEOUT_MS);
    misc_assert_b64_name(json_object_get(ev, "local"), "@x\xff", 3);
    json_decref(ev);
    close(in);

    /* path sockets with invalid bytes (and a newline) in their names, connected */
    int lfd = misc_unix_bound(lpath, (size_t)ln + 1);
    EXPECT_INT(listen(lfd, 4), 0, "listen: %s", strerror(errno));
    int cfd = misc_unix_bound(cpath, (size_t)cn + 1);
    misc_unix_connect(cfd, lpath, (size_t)ln + 1);
    int sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    EXPECT_TRUE(sfd >= 0, "sfd >= 0");
    long long c = misc_attach(nobody, cfd), sv = misc_attach(nobody, sfd);
    long long l = misc_attach(nobody, lfd);
    info = h_ok(nobody, "socket.info", "{s:I}", "socket", (json_int_t)c);
    misc_assert_b64_name(json_object_get(info, "local"), cpath, (size_t)cn);
    misc_assert_b64_name(json_object_get(info, "remote"), lpath, (size_t)ln);
    json_decref(info);
    info = h_ok(nobody, "socket.info", "{s:I}", "socket", (json_int_t)sv);
    misc_assert_b64_name(json_object_get(info, "local"), lpath, (size_t)ln);
    misc_assert_b64_name(json_object_get(info, "remote"), cpath, (size_t)cn);
    json_decref(info);
    json_t *list = h_ok(nobody, "socket.list", NULL);
    json_t *socks = json_object_get(list, "sockets"), *it;
    size_t i;
    int seen = 0;
    json_array_foreach(socks, i, it)
    {
        if (json_integer_value(json_object_get(it, "socket")) == l) {
            misc_assert_b64_name(json_object_get(it, "local"), lpath, (size_t)ln);
            seen = 1;
        }
    }
    EXPECT_TRUE(seen, "%s", jd(list));
    json_decref(list);

    /* the daemon serves the others as before */
    json_decref(h_ok(other, "daemon.ping", NULL));
    sockd_client_close(nobody);
    unlink(lpath);
    unlink(cpath);
    rmdir(dir);
    h_daemon_stop(&D);
}

/* The daemon's log so far (malloc'ed, NUL-terminated). */
static char *
misc_log(const struct h_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    EXPECT_TRUE(f != NULL, "f");
    EXPECT_INT(fseek(f, 0, SEEK_END), 0, "fseek(f, 0, SEEK_END)");
    long len = ftell(f);
    EXPECT_TRUE(len >= 0, "len >= 0");
    rewind(f);
    char *text = malloc((size_t)len + 1);
    EXPECT_TRUE(text != NULL, "text");
    text[fread(text, 1, (size_t)len, f)] = '\0';
    fclose(f);
    return text;
}

/* True when a line of text starts with prefix. */
static int
misc_line_starts(const char *text, const char *prefix)
{
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p)
        if (strncmp(p, prefix, strlen(prefix)) == 0)
            return 1;
    return 0;
}

/*
 * Attack: forge log lines. A client of another uid puts "\nFAKE line" (and an escape sequence
 * for the administrator's terminal) in its daemon.hello name, in a method name and in a Unix
 * path that the policy denies; every one of them may end up in a log line. The log holds no line
 * that starts with FAKE, no ESC byte, and the denial is there with its uid.
 */
static void
test_misc_log_escaped(void **state)
{
    char dir[] = "/tmp/sockd-misc-XXXXXX", path[128], conf[256];
    (void)state;

    EXPECT_TRUE(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/a\nFAKE line path \x1b[2J", dir);
    snprintf(conf, sizeof conf, "deny connect unix %s/\n", dir);
    h_daemon_start(&D, conf);
    struct sockd_client *nobody = h_client_nobody(&D);
    json_decref(h_ok(nobody, "daemon.hello", "{s:s}", "client", "evil\nFAKE line hello"));
    h_send_raw(nobody, "{\"jsonrpc\":\"2.0\",\"method\":\"x\\nFAKE line method\"}\n");
    long long s = h_open(nobody, "unix");
    json_t *err = NULL;
    EXPECT_INT(h_err(nobody, &err, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s,
                     "address", path),
               -32004, "socket.connect error code");
    json_decref(err);
    /* a name that is not UTF-8 comes only from the kernel: attach a socket connected to one */
    char lpath[128];
    int ln = snprintf(lpath, sizeof lpath, "%s/b\xff\nFAKE line attach", dir);
    int lfd = misc_unix_bound(lpath, (size_t)ln + 1);
    EXPECT_INT(listen(lfd, 1), 0, "listen: %s", strerror(errno));
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    misc_unix_connect(cfd, lpath, (size_t)ln + 1);
    json_t *params = json_pack("{s:s}", "type", "unix");
    EXPECT_INT(
        sockd_client_call_fd(nobody, "socket.attach", params, cfd, NULL, &err, NULL, H_TIMEOUT_MS),
        1, "sockd_client_call_fd");
    EXPECT_INT(sockd_client_error_code(err), -32004, "sockd_client_error_code(err)");
    json_decref(err);
    json_decref(params);
    close(cfd);
    close(lfd);
    unlink(lpath);
    json_decref(h_ok(nobody, "daemon.ping", NULL)); /* the notification before it is handled */
    char *log = misc_log(&D);
    if (misc_line_starts(log, "FAKE") || strchr(log, '\x1b') != NULL) {
        fprintf(stderr, "log:\n%s\n", log);
        fail_msg("a client's string forged a log line");
    }
    char want[64];
    snprintf(want, sizeof want, "uid %d", H_NOBODY);
    if (strstr(log, "\\nFAKE line path") == NULL ||
        strstr(log, "b\\xff\\nFAKE line attach") == NULL || strstr(log, want) == NULL) {
        fprintf(stderr, "log:\n%s\n", log);
        fail_msg("the denial is not logged, escaped, with the client's uid");
    }
    free(log);
    sockd_client_close(nobody);
    rmdir(dir);
    h_daemon_stop(&D);
}

/* How many lines of text contain needle. */
static int
misc_count_lines(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; p != NULL && *p != '\0'; p = strchr(p, '\n'), p = p ? p + 1 : p) {
        const char *end = strchr(p, '\n'), *hit = strstr(p, needle);
        n += hit != NULL && (end == NULL || hit < end);
    }
    return n;
}

/*
 * Attack: flood the log. A client of another uid provokes 5000 policy denials as fast as it can
 * (batches of connects to a denied address): each was a line, so the log grew without bound and
 * the daemon spent its time writing it. The lines clients cause now share a budget of 200 at
 * once and 50 a second: the log holds no more denials than that, every one left out is counted
 * in daemon.stats, the next line written says how many were left out, and the daemon answers
 * root meanwhile.
 */
static void
test_misc_log_flood(void **state)
{
    enum { N = 5000, BATCH = 1000 };
    char *line = malloc(BATCH * 128 + 4);
    (void)state;

    EXPECT_TRUE(line != NULL, "line");
    h_daemon_start(&D, "deny connect 127.0.0.2/32\n");
    struct sockd_client *root = h_client_auto(&D), *nobody = h_client_nobody(&D);
    long long s = h_open(nobody, "tcp");
    long long t0 = h_now_ms();
    for (int b = 0; b < N / BATCH; b++) {
        size_t len = 0;
        line[len++] = '[';
        for (int i = 0; i < BATCH; i++)
            len += (size_t)snprintf(line + len, 128,
                                    "%s{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"socket."
                                    "connect\",\"params\":{\"socket\":%lld,\"address\":"
                                    "\"127.0.0.2:9\"}}",
                                    i > 0 ? "," : "", b * BATCH + i, s);
        memcpy(line + len, "]\n", 3);
        h_send_raw(nobody, line);
        json_t *answer = h_read(nobody, H_TIMEOUT_MS);
        EXPECT_TRUE(json_is_array(answer) && json_array_size(answer) == BATCH, "batch answer");
        json_t *last = json_array_get(answer, BATCH - 1);
        EXPECT_INT(json_integer_value(json_object_get(json_object_get(last, "error"), "code")),
                   -32004, "a denied connect");
        json_decref(answer);
        json_decref(h_ok(root, "daemon.ping", NULL));
    }
    long long ms = h_now_ms() - t0;
    json_t *st = h_ok(root, "daemon.stats", NULL);
    long long left = json_integer_value(json_object_get(st, "log_left_out"));
    json_decref(st);
    h_sleep_ms(100);                                           /* some budget again */
    json_decref(h_ok(h_client_auto(&D), "daemon.ping", NULL)); /* a line: "client connected" */
    json_decref(h_ok(root, "daemon.ping", NULL));
    char *log = misc_log(&D);
    int written = misc_count_lines(log, "policy: connect to 127.0.0.2:9 denied");
    fprintf(stderr, "# %d denials in %lld ms: %d logged, %lld left out\n", N, ms, written, left);
    EXPECT_TRUE(written <= 200 + 50 * (ms / 1000 + 1), "%d denials logged in %lld ms", written, ms);
    EXPECT_TRUE(written + left >= N, "%d logged + %lld left out < %d", written, left, N);
    EXPECT_TRUE(misc_count_lines(log, "lines about clients left out") >= 1, "the count is logged");
    free(log);
    free(line);
    sockd_client_close(nobody);
    h_daemon_stop(&D);
}

/*
 * With no configuration file (or one without rules), a daemon running as root lets every client
 * reach everything: it says so in its log at start. With a rule it does not.
 */
/* Start the daemon with conf_text, let one client be served, stop it: whether its log had want. */
static int
misc_start_logs(const char *conf_text, const char *want)
{
    h_daemon_start(&D, conf_text);
    json_decref(h_ok(h_client_auto(&D), "daemon.ping", NULL));
    char *log = misc_log(&D);
    int found = strstr(log, want) != NULL;
    free(log);
    h_cleanup();
    h_daemon_stop(&D);
    return found;
}

static void
test_misc_warns_without_config(void **state)
{
    (void)state;
    EXPECT_TRUE(misc_start_logs(
                    NULL, "warning: running as root with no access policy (no configuration file)"),
                "misc_start_logs( NULL, \"warning: running as root with no access policy (no "
                "configuration file)\")");
    /* a configuration file without rules leaves everything allowed too */
    EXPECT_TRUE(misc_start_logs("max-clients 100\n",
                                "no access policy (no rules in the configuration file)"),
                "misc_start_logs(\"max-clients 100\\n\", \"no access policy (no rules in the "
                "configuration file)\")");
    EXPECT_TRUE(!misc_start_logs("deny connect 10.0.0.0/8\n", "no access policy"),
                "misc_start_logs(\"deny connect 10.0.0.0/8\\n\", \"no access policy\")");
}

/*
 * Attack: an address that looks numeric but is not valid (300.1.1.1, 127.1, 0x7f.1, 1.2.3,
 * 01.02.03.04) is not a host name (RFC 1123 2.1): taken for one, it would go to the resolver,
 * which may read it as an address no rule was written for, or ask the network about it. Each
 * answers -32602 address_invalid and the name server hears no question; a real name still
 * reaches it (so the count would have seen one).
 */
static void
test_misc_numeric_not_a_name(void **state)
{
    static const char *const bad[] = {"300.1.1.1:80",  "127.1:80",       "0x7f.1:80",
                                      "1.2.3:80",      "01.02.03.04:80", "2130706433:80",
                                      "0x7f000001:80", "127.0.0.1.:80",  "1.2.3.300:80"};
    struct dnsd dns;
    char conf[128];
    (void)state;

    EXPECT_INT(dnsd_start(&dns), 0, "dnsd_start(&dns)");
    EXPECT_INT(dnsd_set_rcode(&dns, "nx.test", DNSD_NXDOMAIN), 0, "dnsd_set_rcode");
    snprintf(conf, sizeof conf, "resolver 127.0.0.1:%u\n", (unsigned)dns.port);
    h_daemon_start(&D, conf);
    struct sockd_client *nobody = h_client_nobody(&D);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long s = h_open(nobody, "tcp");
        json_t *err = NULL;
        int code = h_err(nobody, &err, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s,
                         "address", bad[i]);
        const char *reason =
            json_string_value(json_object_get(json_object_get(err, "data"), "reason"));
        if (code != -32602 || reason == NULL || strcmp(reason, "address_invalid") != 0) {
            fprintf(stderr, "%s: ", bad[i]);
            EXPECT_TRUE(0, "%s", jd(err));
        }
        json_decref(err);
    }
    json_decref(h_ok(nobody, "daemon.ping", NULL));
    EXPECT_INT(dnsd_queries(&dns), 0, "dnsd_queries(&dns)");
    /* the counter counts: a real name is asked about */
    long long s = h_open(nobody, "tcp");
    json_decref(h_ok(nobody, "socket.connect", "{s:I,s:s}", "socket", (json_int_t)s, "address",
                     "nx.test:80"));
    json_decref(h_event(nobody, "socket.closed", s, H_TIMEOUT_MS));
    EXPECT_TRUE(dnsd_name_queries(&dns, "nx.test") > 0, "dnsd_name_queries(&dns, \"nx.test\") > 0");
    sockd_client_close(nobody);
    h_daemon_stop(&D);
    dnsd_stop(&dns);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_misc_nobody_is_nobody, teardown),
        cmocka_unit_test_teardown(test_misc_give_piped, teardown),
        cmocka_unit_test_teardown(test_misc_unix_names_not_utf8, teardown),
        cmocka_unit_test_teardown(test_misc_log_escaped, teardown),
        cmocka_unit_test_teardown(test_misc_log_flood, teardown),
        cmocka_unit_test_teardown(test_misc_warns_without_config, teardown),
        cmocka_unit_test_teardown(test_misc_numeric_not_a_name, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
