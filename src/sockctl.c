/*
 * sockctl: the sockd command-line client.
 *
 *   call, watch     one request / a session of notifications, as JSON lines
 *   shell           line-in/line-out JSON-RPC over stdin/stdout (for coproc)
 *   cat URL         netcat-style: stdin to a socket, received bytes to stdout
 *   open/send/recv/close
 *                   one-shot verbs that keep a connection between invocations
 *                   by parking it in the daemon (socket.give / socket.take)
 *   ls, stats       the sockets kept this way / the daemon's counters
 *   run             a program's network through sockd
 *
 * Every JSON line it prints is compact and flushed at once, so that scripts
 * can read it through a pipe. This file holds main, the verb table with each
 * verb's help, and the helpers the verbs share (sockctl.h says where the
 * verbs live).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"
#include "sockctl_run.h"

/* ------------------------------------------------------------------------ */
/* The verbs and the help                                                   */

/* Where a verb's summary starts in the help. */
#define SOCKCTL_HELP_COLUMN 33

/* A verb: its function and its lines in the help. */
struct sockctl_verb {
    const char *name;
    int (*run)(const struct sockctl_opts *, int, char **);
    int takes_argv0; /* parses its options with getopt: gets argv from the verb on */
    struct {
        const char *usage;   /* the command line ("\n" before each further line of it) */
        const char *summary; /* what it does: lines from SOCKCTL_HELP_COLUMN, the first next
                                to the usage's last line when that fits, else under it */
    } forms[2];              /* its ways to be called (the second may be unused) */
};

/* The verbs in the order of the help. */
static const struct sockctl_verb sockctl_verbs[] = {
    {.name = "call",
     .run = sockctl_cmd_call,
     .forms = {{"call METHOD [PARAMS-JSON]", "call one method, print its result"}}},
    {.name = "watch",
     .run = sockctl_cmd_watch,
     .forms = {{"watch [--count N] [--timeout MS] [METHOD PARAMS-JSON]...",
                "make calls, then print notifications"}}},
    {.name = "shell",
     .run = sockctl_cmd_shell,
     .forms = {{"shell [--linger MS]", "JSON-RPC lines from stdin to the daemon, every\n"
                                       "line of the daemon to stdout (for coproc)"}}},
    {.name = "cat",
     .run = sockctl_cmd_cat,
     .takes_argv0 = 1,
     .forms = {{"cat [CONNECT-OPTIONS] [--wait MS] [--no-shutdown] URL",
                "netcat-style: stdin to the socket, what it\n"
                "receives to stdout"}}},
    {.name = "open",
     .run = sockctl_cmd_open,
     .takes_argv0 = 1,
     .forms = {{"open [CONNECT-OPTIONS] [--keep MS] URL",
                "connect, park the socket in the daemon, print\n"
                "its ID for send/recv/close"}}},
    {.name = "send",
     .run = sockctl_cmd_send,
     .takes_argv0 = 1,
     .forms = {{"send [--timeout MS] ID (TEXT | -)    (-- before a TEXT that starts with -)",
                "send TEXT (\"-\": stdin) on a parked socket"}}},
    {.name = "recv",
     .run = sockctl_cmd_recv,
     .takes_argv0 = 1,
     .forms = {{"recv [--partial] [--timeout MS] ID N",
                "receive N bytes (--partial: 1..N) to stdout"},
               {"recv --line [--until DELIM] [--timeout MS] ID [N]",
                "receive one line, up to and including \\n (or\n"
                "DELIM: 1..16 bytes, escapes \\r \\n \\t \\\\ \\xHH),\n"
                "at most N bytes (default 65536)"}}},
    {.name = "close",
     .run = sockctl_cmd_close,
     .takes_argv0 = 1,
     .forms = {{"close [--timeout MS] ID", "shut a parked socket down and forget it"}}},
    {.name = "ls",
     .run = sockctl_cmd_ls,
     .forms = {{"ls", "the parked sockets (and this connection's)"}}},
    {.name = "stats", .run = sockctl_cmd_stats, .forms = {{"stats", "the daemon's counters"}}},
    {.name = "run",
     .run = sockctl_cmd_run,
     .takes_argv0 = 1,
     .forms = {{"run [--allow RULE]... [--deny RULE]... [--net none|inherit] [--unix] [-v]\n"
                "    -- PROGRAM [ARGS]",
                "run PROGRAM with its connects, binds and\n"
                "addressed sends brokered by sockd under\n"
                "these rules (sockctl run -h, sockctl(1) RUN)"}}},
};

/* Print TEXT's lines, the first as it is and each next one on a new line from column COLUMN. */
static void
sockctl_help_lines(FILE *f, const char *text, int column)
{
    const char *nl;

    for (; (nl = strchr(text, '\n')) != NULL; text = nl + 1)
        fprintf(f, "%.*s\n%*s", (int)(nl - text), text, column, "");
    fputs(text, f);
}

/* Print one form of a verb in the help: its usage, then its summary from SOCKCTL_HELP_COLUMN. */
static void
sockctl_help_form(FILE *f, const char *usage, const char *summary)
{
    const char *last = strrchr(usage, '\n');
    int width = 2 + (int)strlen(last != NULL ? last + 1 : usage); /* of its last line */

    fputs("  ", f);
    sockctl_help_lines(f, usage, 2);
    if (width + 2 <= SOCKCTL_HELP_COLUMN)
        fprintf(f, "%*s", SOCKCTL_HELP_COLUMN - width, "");
    else
        fprintf(f, "\n%*s", SOCKCTL_HELP_COLUMN, "");
    sockctl_help_lines(f, summary, SOCKCTL_HELP_COLUMN);
    fputc('\n', f);
}

/* The help (sockctl -h) on F. */
static void
sockctl_usage(FILE *f)
{
    fputs("Usage: sockctl [-s PATH] [-t MS] [--json] COMMAND [ARGS]\n"
          "\n"
          "Talk to the sockd daemon over its control socket (JSON-RPC 2.0, one message\n"
          "a line).\n"
          "\n"
          "Commands:\n",
          f);
    for (size_t i = 0; i < sizeof(sockctl_verbs) / sizeof(sockctl_verbs[0]); i++) {
        for (size_t k = 0; k < 2 && sockctl_verbs[i].forms[k].usage != NULL; k++)
            sockctl_help_form(f, sockctl_verbs[i].forms[k].usage,
                              sockctl_verbs[i].forms[k].summary);
    }
    fputs("\n"
          "Global options:\n"
          "  -s, --socket PATH  the control socket; default $SOCKD_SOCKET, else\n"
          "                     /run/sockd/sockd.sock for root, else\n"
          "                     $XDG_RUNTIME_DIR/sockd.sock, else /tmp/sockd-$UID.sock\n"
          "  -t TIMEOUT_MS      wait at most this long for each response (default 30000;\n"
          "                     -1 waits forever)\n"
          "      --json         machine-readable output: call and watch print responses\n"
          "                     whole ({\"result\":...} or {\"error\":...}); open, send,\n"
          "                     recv, close, ls and stats print one JSON object\n"
          "  -h, --help         print this help and exit\n"
          "  -V, --version      print the version and exit\n"
          "\n"
          "Connect options (cat, open):\n"
          "      --timeout MS        connect timeout (default 30000)\n"
          "      --ca FILE           trust the CA certificates in FILE (PEM) for tls://\n"
          "      --insecure          tls:// without verifying the peer\n"
          "      --alpn LIST         offer these ALPN protocols (comma-separated)\n"
          "      --server-name NAME  name to send and verify (default: the URL's host)\n"
          "  open --keep MS          how long a parked socket waits for the next command\n"
          "                          before the daemon closes it (default 600000)\n"
          "  cat --wait MS           after stdin ends, stop once nothing arrived for MS\n"
          "                          (default: udp 1000, others wait for the peer to close)\n"
          "  cat --no-shutdown       do not pass the end of stdin on to the peer\n"
          "\n"
          "URLs: tcp://HOST:PORT  tls://HOST:PORT  udp://HOST:PORT  unix:/PATH  unix:@NAME\n"
          "      (HOST may be a name, an IPv4 address or [IPv6])\n"
          "\n"
          "Parked sockets: open prints an ID; sockctl keeps the socket's current token\n"
          "in $XDG_RUNTIME_DIR/sockctl/ID (else /tmp/sockctl-$UID/ID, mode 0700) and\n"
          "updates it each time send or recv hands the socket back to the daemon.\n"
          "\n"
          "Exit status:\n"
          "  0  success; cat: the connection closed normally (either side first);\n"
          "     watch: MS passed without a notification, or the daemon closed the\n"
          "     connection, and --count was not given\n"
          "  1  the daemon answered with an error or reported a failure (connect\n"
          "     failed, connection lost, unknown ID); recv: end of stream, nothing read\n"
          "  2  usage error (options, arguments, PARAMS-JSON, URL)\n"
          "  3  cannot reach the daemon, or an I/O error\n"
          "  4  timeout: no response within -t, connect --timeout passed, recv\n"
          "     --timeout passed, watch --count not reached within --timeout\n"
          "\n"
          "Examples:\n"
          "  sockctl call daemon.ping\n"
          "  sockctl watch --count 2 --timeout 5000 socket.open '{\"type\":\"tcp\"}'\n"
          "  printf 'GET / HTTP/1.0\\r\\n\\r\\n' | sockctl cat tls://example.com:443\n"
          "  id=$(sockctl open tcp://127.0.0.1:7); sockctl send $id hello\n"
          "  sockctl recv $id 5; sockctl close $id\n"
          "  coproc SOCKD { sockctl shell; }\n",
          f);
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

/* Report a usage error and return the usage exit status. */
int
sockctl_bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "sockctl: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    fputs("Try 'sockctl -h' for more information.\n", stderr);
    return SOCKCTL_USAGE;
}

/* Parse a decimal integer in [min, max] into *out. Returns 0, or -1 when malformed. */
int
sockctl_parse_int(const char *text, long min, long max, int *out)
{
    char *end;

    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
}

/* Milliseconds on the monotonic clock. */
static int64_t
sockctl_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The deadline of a wait of ms (negative: none, -1). */
int64_t
sockctl_deadline(int ms)
{
    return ms < 0 ? -1 : sockctl_now() + ms;
}

/* Milliseconds left until deadline (-1: forever; 0 when passed). */
int
sockctl_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - sockctl_now();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* Append n bytes to b. Returns 0, or -1 when out of memory. */
int
sockctl_buf_add(struct sockctl_buf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n + 1)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (q == NULL)
            return -1;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

/* Drop the first n bytes of b. */
void
sockctl_buf_consume(struct sockctl_buf *b, size_t n)
{
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

/* Write all of p to fd (blocking fds; EINTR retried). Returns 0, or -1 with errno. */
static int
sockctl_write_all(int fd, const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            poll(&pfd, 1, -1);
            continue;
        }
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Write received bytes to stdout; report failures except a closed pipe. Returns 0 or SOCKCTL_IO. */
int
sockctl_stdout(const void *p, size_t n)
{
    if (sockctl_write_all(STDOUT_FILENO, p, n) == 0)
        return 0;
    if (errno != EPIPE)
        fprintf(stderr, "sockctl: cannot write output: %s\n", strerror(errno));
    return SOCKCTL_IO;
}

/* Print V as one line of compact JSON on F and flush. Returns 0, or -1 with errno. */
int
sockctl_print(FILE *f, const json_t *v)
{
    if (json_dumpf(v, f, JSON_COMPACT | JSON_ENCODE_ANY) < 0 || fputc('\n', f) == EOF ||
        fflush(f) == EOF) {
        if (errno == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}

/* Print V on stdout, or report the failure. Returns SOCKCTL_OK or SOCKCTL_IO. */
int
sockctl_output(const json_t *v)
{
    errno = 0;
    if (sockctl_print(stdout, v) == 0)
        return SOCKCTL_OK;
    fprintf(stderr, "sockctl: cannot write output: %s\n", strerror(errno));
    return SOCKCTL_IO;
}

/* As sockctl_output, and takes the reference. */
int
sockctl_output_new(json_t *v)
{
    int rc = v != NULL ? sockctl_output(v) : SOCKCTL_IO;
    json_decref(v);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Talking to the daemon                                                    */

/* Connect as the options say, or report why not. */
struct sockd_client *
sockctl_connect(const struct sockctl_opts *o)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct sockd_client *c = sockd_client_connect(o->path);

    if (c == NULL) {
        int err = errno;
        const char *p = sockd_socket_path(o->path, path, sizeof(path));
        if (p == NULL)
            p = o->path != NULL ? o->path : "the default socket (path too long)";
        fprintf(stderr, "sockctl: cannot connect to %s: %s\n", p, strerror(err));
    }
    return c;
}

/* Say why a call got no response; returns SOCKCTL_TIMEOUT or SOCKCTL_IO. */
int
sockctl_no_response(const struct sockctl_opts *o, const char *method)
{
    if (errno == ETIMEDOUT) {
        fprintf(stderr, "sockctl: %s: no response within %d ms\n", method, o->timeout_ms);
        return SOCKCTL_TIMEOUT;
    }
    if (errno == EPIPE)
        fprintf(stderr, "sockctl: %s: the daemon closed the connection\n", method);
    else
        fprintf(stderr, "sockctl: %s: %s\n", method, strerror(errno));
    return SOCKCTL_IO;
}

/* Say what an error object means, on one line of stderr. */
void
sockctl_say_error(const char *what, const json_t *error)
{
    const json_t *data = json_object_get(error, "data");
    const char *msg = json_string_value(json_object_get(error, "message"));
    const char *reason = json_string_value(json_object_get(data, "reason"));
    const char *detail = json_string_value(json_object_get(data, "detail"));
    const char *limit = json_string_value(json_object_get(data, "limit"));

    fprintf(stderr, "sockctl: %s: %s (%d%s%s%s%s%s%s)\n", what, msg ? msg : "error",
            sockd_client_error_code(error), reason ? ", " : "", reason ? reason : "",
            detail ? ": " : "", detail ? detail : "", limit ? ", limit " : "", limit ? limit : "");
}

/*
 * Call METHOD with PARAMS (taken) for a verb. On a result returns 0 and
 * sets *result (if not NULL). On an error response says why on stderr
 * (unless its code is QUIET_CODE), sets *code and returns SOCKCTL_ERROR.
 * Otherwise returns SOCKCTL_IO or SOCKCTL_TIMEOUT after saying why.
 */
int
sockctl_rpc(struct sockd_client *c, const struct sockctl_opts *o, const char *method,
            json_t *params, json_t **result, int *code, int quiet_code)
{
    json_t *res = NULL, *err = NULL;
    int rc = sockd_client_call(c, method, params, &res, &err, o->timeout_ms);

    json_decref(params);
    if (result != NULL)
        *result = NULL;
    if (code != NULL)
        *code = 0;
    if (rc < 0)
        return sockctl_no_response(o, method);
    if (rc == 1) {
        int ec = sockd_client_error_code(err);
        if (code != NULL)
            *code = ec;
        if (ec != quiet_code || quiet_code == 0)
            sockctl_say_error(method, err);
        json_decref(err);
        return SOCKCTL_ERROR;
    }
    if (result != NULL)
        *result = res;
    else
        json_decref(res);
    return SOCKCTL_OK;
}

/* The handle number in a result or notification params object. */
long long
sockctl_handle(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/*
 * The next notification about socket S (others are dropped), waiting until
 * the deadline. NULL with *rc SOCKCTL_TIMEOUT, or SOCKCTL_IO after saying why.
 */
json_t *
sockctl_event(struct sockd_client *c, long long s, int64_t deadline, int *rc)
{
    for (;;) {
        json_t *ev = sockd_client_next_event(c, sockctl_left(deadline));
        if (ev == NULL) {
            if (errno == ETIMEDOUT) {
                *rc = SOCKCTL_TIMEOUT;
            } else {
                fprintf(stderr, "sockctl: the daemon closed the connection%s%s\n",
                        errno == EPIPE ? "" : ": ", errno == EPIPE ? "" : strerror(errno));
                *rc = SOCKCTL_IO;
            }
            return NULL;
        }
        if (sockctl_handle(json_object_get(ev, "params"), "socket") == s)
            return ev;
        json_decref(ev);
    }
}

/* True when notification EV is METHOD. */
int
sockctl_is(const json_t *ev, const char *method)
{
    const char *m = json_string_value(json_object_get(ev, "method"));
    return m != NULL && strcmp(m, method) == 0;
}

/* The reason of a socket.closed params object ("" if none). */
const char *
sockctl_reason(const json_t *params)
{
    const char *r = json_string_value(json_object_get(params, "reason"));
    return r ? r : "";
}

/* The exit status for a socket that ended as socket.closed PARAMS says. */
int
sockctl_closed_status(const json_t *params)
{
    const char *r = sockctl_reason(params);

    if (strcmp(r, SOCKD_REASON_NORMAL) == 0 || strcmp(r, SOCKD_REASON_BY_PEER) == 0)
        return SOCKCTL_OK;
    if (strcmp(r, SOCKD_REASON_TIMEOUT) == 0)
        return SOCKCTL_TIMEOUT;
    if (strcmp(r, SOCKD_REASON_DAEMON_SHUTDOWN) == 0)
        return SOCKCTL_IO;
    return SOCKCTL_ERROR;
}

/* Say on stderr how a socket ended, as socket.closed PARAMS tells. */
void
sockctl_say_closed(const char *what, const json_t *params)
{
    const char *detail = json_string_value(json_object_get(params, "detail"));
    const json_t *unsent = json_object_get(params, "unsent");

    fprintf(stderr, "sockctl: %s: closed: %s%s%s", what, sockctl_reason(params), detail ? ": " : "",
            detail ? detail : "");
    if (json_is_integer(unsent))
        fprintf(stderr, " (%lld bytes unsent)", (long long)json_integer_value(unsent));
    fputc('\n', stderr);
}

/* Wait (bounded) for socket.closed about S after it was shut down or failed. New ref or NULL. */
json_t *
sockctl_wait_closed(struct sockd_client *c, long long s, int ms)
{
    int64_t deadline = sockctl_deadline(ms);
    int rc;

    for (;;) {
        json_t *ev = sockctl_event(c, s, deadline, &rc);
        if (ev == NULL)
            return NULL;
        if (sockctl_is(ev, "socket.closed")) {
            json_t *p = json_incref(json_object_get(ev, "params"));
            json_decref(ev);
            return p;
        }
        json_decref(ev);
    }
}

/* ------------------------------------------------------------------------ */
/* main: global options, then the verb                                      */

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    struct sockctl_opts o = {.path = NULL, .json = 0, .timeout_ms = SOCKCTL_DEFAULT_TIMEOUT_MS};
    int opt;

    signal(SIGPIPE, SIG_IGN);
    while ((opt = getopt_long(argc, argv, "+s:t:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o.path = optarg;
            break;
        case 't':
            if (sockctl_parse_int(optarg, -1, INT_MAX, &o.timeout_ms) < 0)
                return sockctl_bad_usage("-t needs milliseconds (-1: forever)", optarg);
            break;
        case 'j':
            o.json = 1;
            break;
        case 'h':
            sockctl_usage(stdout);
            return fflush(stdout) == EOF ? SOCKCTL_IO : SOCKCTL_OK;
        case 'V':
            printf("sockctl %s\n", PACKAGE_VERSION);
            return fflush(stdout) == EOF ? SOCKCTL_IO : SOCKCTL_OK;
        default: /* getopt has said what is wrong */
            fputs("Try 'sockctl -h' for more information.\n", stderr);
            return SOCKCTL_USAGE;
        }
    }
    if (optind >= argc)
        return sockctl_bad_usage("no command given", NULL);
    const char *cmd = argv[optind];
    for (size_t i = 0; i < sizeof(sockctl_verbs) / sizeof(sockctl_verbs[0]); i++) {
        const struct sockctl_verb *v = &sockctl_verbs[i];
        if (strcmp(cmd, v->name) != 0)
            continue;
        if (v->takes_argv0)
            return v->run(&o, argc - optind, argv + optind);
        return v->run(&o, argc - optind - 1, argv + optind + 1);
    }
    return sockctl_bad_usage("unknown command", cmd);
}
