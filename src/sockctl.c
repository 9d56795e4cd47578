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
 *
 * Every JSON line it prints is compact and flushed at once, so that scripts
 * can read it through a pipe.
 */
#include "config.h"

#include <ctype.h>
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
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>
#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"
#include "sockctl_run.h"

/* Exit statuses. */
enum sockctl_exit {
    SOCKCTL_OK = 0,      /* success */
    SOCKCTL_ERROR = 1,   /* the daemon answered with an error or reported a failure */
    SOCKCTL_USAGE = 2,   /* bad command line or PARAMS-JSON */
    SOCKCTL_IO = 3,      /* cannot reach the daemon, I/O error */
    SOCKCTL_TIMEOUT = 4, /* a wait ran out */
};

/* Response wait when -t is not given. */
#define SOCKCTL_DEFAULT_TIMEOUT_MS 30000
/* socket.connect timeout when --timeout is not given (open, cat). */
#define SOCKCTL_CONNECT_TIMEOUT_MS 30000
/* How long a parked socket waits for the next sockctl (--keep). */
#define SOCKCTL_DEFAULT_KEEP_MS 600000
/* cat udp://: how long to wait for answers after stdin ended (--wait). */
#define SOCKCTL_UDP_WAIT_MS 1000
/* Bytes handed to socket.send and not yet confirmed by socket.sent, at most. */
#define SOCKCTL_WINDOW (1024 * 1024)
/* Bytes per socket.send. */
#define SOCKCTL_CHUNK (256 * 1024)
/* recv --line: the longest line unless N says otherwise. */
#define SOCKCTL_LINE_MAX 65536
/* Largest socket.recv length. */
#define SOCKCTL_MAX_RECV 16777216
/* How long to wait for a socket.closed that must come soon. */
#define SOCKCTL_CLOSE_WAIT_MS 5000

/* Options shared by the verbs that make a connection (cat, open). */
struct sockctl_connopts {
    int timeout_ms;          /* --timeout: socket.connect timeout_ms */
    const char *ca;          /* --ca FILE: CA certificates (PEM) for tls:// */
    int insecure;            /* --insecure: verify:false */
    const char *alpn;        /* --alpn a,b */
    const char *server_name; /* --server-name: instead of the URL's host */
};

/* A parsed URL. */
struct sockctl_url {
    const char *type; /* "tcp", "tls", "udp", "unix" */
    char *address;    /* as socket.connect takes it (malloc'ed) */
};

/* A growable byte buffer. */
struct sockctl_buf {
    char *p;
    size_t len, cap;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static void
sockctl_usage(FILE *f)
{
    fputs("Usage: sockctl [-s PATH] [-t MS] [--json] COMMAND [ARGS]\n"
          "\n"
          "Talk to the sockd daemon over its control socket (JSON-RPC 2.0, one message\n"
          "a line).\n"
          "\n"
          "Commands:\n"
          "  call METHOD [PARAMS-JSON]      call one method, print its result\n"
          "  watch [--count N] [--timeout MS] [METHOD PARAMS-JSON]...\n"
          "                                 make calls, then print notifications\n"
          "  shell [--linger MS]            JSON-RPC lines from stdin to the daemon, every\n"
          "                                 line of the daemon to stdout (for coproc)\n"
          "  cat [CONNECT-OPTIONS] [--wait MS] [--no-shutdown] URL\n"
          "                                 netcat-style: stdin to the socket, what it\n"
          "                                 receives to stdout\n"
          "  open [CONNECT-OPTIONS] [--keep MS] URL\n"
          "                                 connect, park the socket in the daemon, print\n"
          "                                 its ID for send/recv/close\n"
          "  send [--timeout MS] ID (TEXT | -)    (-- before a TEXT that starts with -)\n"
          "                                 send TEXT (\"-\": stdin) on a parked socket\n"
          "  recv [--partial] [--timeout MS] ID N\n"
          "                                 receive N bytes (--partial: 1..N) to stdout\n"
          "  recv --line [--until DELIM] [--timeout MS] ID [N]\n"
          "                                 receive one line, up to and including \\n (or\n"
          "                                 DELIM: 1..16 bytes, escapes \\r \\n \\t \\\\ \\xHH),\n"
          "                                 at most N bytes (default 65536)\n"
          "  close [--timeout MS] ID        shut a parked socket down and forget it\n"
          "  ls                             the parked sockets (and this connection's)\n"
          "  stats                          the daemon's counters\n"
          "  run [--allow RULE]... [--deny RULE]... [--net none|inherit] [--unix] [-v]\n"
          "      -- PROGRAM [ARGS]          run PROGRAM with its connects, binds and\n"
          "                                 addressed sends brokered by sockd under\n"
          "                                 these rules (sockctl run -h, sockctl(1) RUN)\n"
          "\n"
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

/* Report a usage error and return the usage exit status. */
static int
sockctl_bad_usage(const char *what, const char *arg)
{
    fprintf(stderr, "sockctl: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
    fputs("Try 'sockctl -h' for more information.\n", stderr);
    return SOCKCTL_USAGE;
}

/* Parse a decimal integer in [min, max] into *out. Returns 0, or -1 when malformed. */
static int
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
static int64_t
sockctl_deadline(int ms)
{
    return ms < 0 ? -1 : sockctl_now() + ms;
}

/* Milliseconds left until deadline (-1: forever; 0 when passed). */
static int
sockctl_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - sockctl_now();
    return left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

/* Append n bytes to b. Returns 0, or -1 when out of memory. */
static int
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
static void
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
static int
sockctl_stdout(const void *p, size_t n)
{
    if (sockctl_write_all(STDOUT_FILENO, p, n) == 0)
        return 0;
    if (errno != EPIPE)
        fprintf(stderr, "sockctl: cannot write output: %s\n", strerror(errno));
    return SOCKCTL_IO;
}

/* Read all of FILE (malloc'ed, NUL-terminated), or NULL after saying why. */
static char *
sockctl_read_file(const char *file)
{
    struct sockctl_buf b = {0};
    char chunk[8192];
    int fd = open(file, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        fprintf(stderr, "sockctl: %s: %s\n", file, strerror(errno));
        return NULL;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "sockctl: %s: %s\n", file, strerror(errno));
            free(b.p);
            b.p = NULL;
            break;
        }
        if (n == 0) {
            if (b.p == NULL)
                b.p = strdup("");
            break;
        }
        if (sockctl_buf_add(&b, chunk, (size_t)n) < 0) {
            free(b.p);
            b.p = NULL;
            break;
        }
    }
    close(fd);
    return b.p;
}

/* Print V as one line of compact JSON on F and flush. Returns 0, or -1 with errno. */
static int
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
static int
sockctl_output(const json_t *v)
{
    errno = 0;
    if (sockctl_print(stdout, v) == 0)
        return SOCKCTL_OK;
    fprintf(stderr, "sockctl: cannot write output: %s\n", strerror(errno));
    return SOCKCTL_IO;
}

/* As sockctl_output, and takes the reference. */
static int
sockctl_output_new(json_t *v)
{
    int rc = v != NULL ? sockctl_output(v) : SOCKCTL_IO;
    json_decref(v);
    return rc;
}

/* Parse PARAMS-JSON ("-": read stdin) into a new reference. Returns NULL after printing why. */
static json_t *
sockctl_parse_params(const char *text)
{
    json_error_t err;
    size_t flags = JSON_DECODE_ANY | JSON_REJECT_DUPLICATES;
    json_t *v =
        strcmp(text, "-") == 0 ? json_loadf(stdin, flags, &err) : json_loads(text, flags, &err);

    if (v == NULL)
        fprintf(stderr, "sockctl: PARAMS-JSON is not valid JSON: %s (line %d, column %d)\n",
                err.text, err.line, err.column);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Talking to the daemon                                                    */

/* Connect as the options say, or report why not. */
static struct sockd_client *
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
static int
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
static void
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
static int
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
static long long
sockctl_handle(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : 0;
}

/*
 * The next notification about socket S (others are dropped), waiting until
 * the deadline. NULL with *rc SOCKCTL_TIMEOUT, or SOCKCTL_IO after saying why.
 */
static json_t *
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
static int
sockctl_is(const json_t *ev, const char *method)
{
    const char *m = json_string_value(json_object_get(ev, "method"));
    return m != NULL && strcmp(m, method) == 0;
}

/* The reason of a socket.closed params object ("" if none). */
static const char *
sockctl_reason(const json_t *params)
{
    const char *r = json_string_value(json_object_get(params, "reason"));
    return r ? r : "";
}

/* The exit status for a socket that ended as socket.closed PARAMS says. */
static int
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
static void
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
static json_t *
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

/* Split URL into socket.open type and socket.connect address. Returns 0, or -1 when malformed. */
static int
sockctl_url_parse(const char *url, struct sockctl_url *u)
{
    static const char *const schemes[] = {"tcp", "tls", "udp"};
    const char *rest = NULL;

    u->type = NULL;
    u->address = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i]);
        if (strncmp(url, schemes[i], n) == 0 && strncmp(url + n, "://", 3) == 0) {
            u->type = schemes[i];
            rest = url + n + 3;
            break;
        }
    }
    if (u->type != NULL) {
        /* host:port, [v6]:port; the daemon checks the rest */
        const char *colon = strrchr(rest, ':');
        if (*rest == '\0' || colon == NULL || colon[1] == '\0' || strchr(rest, '/') != NULL)
            return -1;
    } else if (strncmp(url, "unix:", 5) == 0) {
        u->type = "unix";
        rest = url + 5;
        if (strncmp(rest, "//", 2) == 0) /* unix:///path */
            rest += 2;
        if ((rest[0] != '/' && rest[0] != '@') || rest[1] == '\0')
            return -1;
    } else {
        return -1;
    }
    u->address = strdup(rest);
    return u->address != NULL ? 0 : -1;
}

/* Parse an ALPN list "a,b" into a JSON array (new reference), or NULL when malformed. */
static json_t *
sockctl_alpn(const char *list)
{
    json_t *a = json_array();
    const char *p = list;

    while (a != NULL) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n > 255) {
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, json_stringn(p, n));
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return a;
}

/*
 * Open a socket for U and connect it as CO says, waiting for the outcome.
 * Returns SOCKCTL_OK with *sock and *connected (the socket.connected params,
 * new reference), or an exit status after saying why.
 */
static int
sockctl_open_connect(struct sockd_client *c, const struct sockctl_opts *o,
                     const struct sockctl_url *u, const char *url,
                     const struct sockctl_connopts *co, long long *sock, json_t **connected)
{
    json_t *res;
    long long ctx = 0;
    int rc;

    *sock = 0;
    *connected = NULL;
    if (strcmp(u->type, "tls") == 0) {
        json_t *p = json_pack("{s:b}", "verify", !co->insecure);
        if (co->ca != NULL) {
            char *pem = sockctl_read_file(co->ca);
            if (pem == NULL) {
                json_decref(p);
                return SOCKCTL_USAGE;
            }
            json_object_set_new(p, "ca", json_string(pem));
            free(pem);
            if (json_object_get(p, "ca") == NULL) {
                fprintf(stderr, "sockctl: %s: not a text (PEM) file\n", co->ca);
                json_decref(p);
                return SOCKCTL_USAGE;
            }
        }
        if (co->alpn != NULL)
            json_object_set_new(p, "alpn", sockctl_alpn(co->alpn));
        if ((rc = sockctl_rpc(c, o, "context.create", p, &res, NULL, 0)) != SOCKCTL_OK)
            return rc;
        ctx = sockctl_handle(res, "context");
        json_decref(res);
    }

    json_t *p = json_pack("{s:s}", "type", u->type);
    if (ctx != 0)
        json_object_set_new(p, "context", json_integer(ctx));
    if ((rc = sockctl_rpc(c, o, "socket.open", p, &res, NULL, 0)) != SOCKCTL_OK)
        return rc;
    *sock = sockctl_handle(res, "socket");
    json_decref(res);

    p = json_pack("{s:I,s:s,s:i}", "socket", (json_int_t)*sock, "address", u->address, "timeout_ms",
                  co->timeout_ms);
    if (co->server_name != NULL && strcmp(u->type, "tls") == 0)
        json_object_set_new(p, "server_name", json_string(co->server_name));
    if ((rc = sockctl_rpc(c, o, "socket.connect", p, NULL, NULL, 0)) != SOCKCTL_OK)
        return rc;

    /* The daemon ends the connect at its timeout_ms; allow it some slack to say so. */
    int64_t deadline = sockctl_deadline(co->timeout_ms + 5000);
    for (;;) {
        json_t *ev = sockctl_event(c, *sock, deadline, &rc);
        if (ev == NULL) {
            if (rc == SOCKCTL_TIMEOUT)
                fprintf(stderr, "sockctl: %s: no outcome of the connect\n", url);
            return rc;
        }
        json_t *params = json_object_get(ev, "params");
        if (sockctl_is(ev, "socket.connected")) {
            *connected = json_incref(params);
            json_decref(ev);
            return SOCKCTL_OK;
        }
        if (sockctl_is(ev, "socket.closed")) {
            sockctl_say_closed(url, params);
            rc = sockctl_closed_status(params);
            json_decref(ev);
            return rc == SOCKCTL_OK ? SOCKCTL_ERROR : rc;
        }
        json_decref(ev);
    }
}

/* Long options of the verbs (getopt_long values). */
enum {
    OPT_TIMEOUT = 256,
    OPT_CA,
    OPT_INSECURE,
    OPT_ALPN,
    OPT_SERVER_NAME,
    OPT_KEEP,
    OPT_WAIT,
    OPT_NO_SHUTDOWN,
    OPT_PARTIAL,
    OPT_LINE,
    OPT_UNTIL,
    OPT_LINGER,
};

/* ------------------------------------------------------------------------ */
/* call and watch                                                           */

/* Print a response's result or error as the options ask. Takes both references. */
static int
sockctl_report(const struct sockctl_opts *o, json_t *result, json_t *error)
{
    int rc = SOCKCTL_OK;

    if (o->json) {
        json_t *env =
            result ? json_pack("{s:O}", "result", result) : json_pack("{s:O}", "error", error);
        rc = sockctl_output_new(env);
    } else if (result != NULL) {
        rc = sockctl_output(result);
    }
    if (error != NULL) {
        sockctl_print(stderr, error);
        if (rc == SOCKCTL_OK)
            rc = SOCKCTL_ERROR;
    }
    json_decref(result);
    json_decref(error);
    return rc;
}

/* Call METHOD with PARAMS (borrowed) and print the outcome. Returns an exit status. */
static int
sockctl_call(struct sockd_client *c, const struct sockctl_opts *o, const char *method,
             json_t *params)
{
    json_t *result, *error;
    int rc = sockd_client_call(c, method, params, &result, &error, o->timeout_ms);

    if (rc < 0)
        return sockctl_no_response(o, method);
    return sockctl_report(o, result, error);
}

/* sockctl call METHOD [PARAMS-JSON] */
static int
sockctl_cmd_call(const struct sockctl_opts *o, int argc, char **argv)
{
    if (argc < 1)
        return sockctl_bad_usage("call needs a METHOD", NULL);
    if (argc > 2)
        return sockctl_bad_usage("too many arguments", argv[2]);
    json_t *params = NULL;
    if (argc == 2 && (params = sockctl_parse_params(argv[1])) == NULL)
        return SOCKCTL_USAGE;
    struct sockd_client *c = sockctl_connect(o);
    int rc = c ? sockctl_call(c, o, argv[0], params) : SOCKCTL_IO;
    sockd_client_close(c);
    json_decref(params);
    return rc;
}

/* sockctl watch [--count N] [--timeout MS] [METHOD PARAMS-JSON]... */
static int
sockctl_cmd_watch(const struct sockctl_opts *o, int argc, char **argv)
{
    int count = -1, idle_ms = -1, ncalls = 0, rc = SOCKCTL_OK;
    json_t *calls = json_array(); /* [[method, params], ...] */

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        int is_count = strcmp(a, "--count") == 0;
        if (is_count || strcmp(a, "--timeout") == 0) {
            if (i + 1 >= argc ||
                sockctl_parse_int(argv[i + 1], 0, INT_MAX, is_count ? &count : &idle_ms) < 0) {
                rc = sockctl_bad_usage(is_count ? "--count needs a number >= 0"
                                                : "--timeout needs milliseconds >= 0",
                                       i + 1 < argc ? argv[i + 1] : NULL);
                goto out;
            }
            i++;
        } else if (a[0] == '-') {
            rc = sockctl_bad_usage("unknown watch option", a);
            goto out;
        } else if (i + 1 >= argc) {
            rc = sockctl_bad_usage("watch needs METHOD PARAMS-JSON pairs; no PARAMS-JSON for", a);
            goto out;
        } else {
            json_t *params = sockctl_parse_params(argv[i + 1]);
            if (params == NULL) {
                rc = SOCKCTL_USAGE;
                goto out;
            }
            json_array_append_new(calls, json_pack("[s,o]", a, params));
            ncalls++;
            i++;
        }
    }

    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL) {
        rc = SOCKCTL_IO;
        goto out;
    }
    for (int i = 0; i < ncalls && rc == SOCKCTL_OK; i++) {
        json_t *call = json_array_get(calls, (size_t)i);
        rc =
            sockctl_call(c, o, json_string_value(json_array_get(call, 0)), json_array_get(call, 1));
    }
    for (int seen = 0; rc == SOCKCTL_OK && seen != count; seen++) {
        json_t *ev = sockd_client_next_event(c, idle_ms);
        if (ev == NULL) {
            if (errno == ETIMEDOUT && count < 0)
                break;
            if (errno == ETIMEDOUT) {
                fprintf(stderr, "sockctl: %d of %d notifications within %d ms\n", seen, count,
                        idle_ms);
                rc = SOCKCTL_TIMEOUT;
                break;
            }
            if (errno == EPIPE && count < 0)
                break;
            if (errno == EPIPE)
                fprintf(stderr, "sockctl: the daemon closed the connection after %d of %d\n", seen,
                        count);
            else
                fprintf(stderr, "sockctl: reading notifications: %s\n", strerror(errno));
            rc = SOCKCTL_IO;
            break;
        }
        rc = sockctl_output(ev);
        json_decref(ev);
    }
    sockd_client_close(c);
out:
    json_decref(calls);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* shell                                                                    */

/* True when V is a request the daemon will not answer (a valid notification). */
static int
sockctl_is_notification(const json_t *v)
{
    const char *version = json_string_value(json_object_get(v, "jsonrpc"));

    return json_is_object(v) && json_object_get(v, "id") == NULL &&
           json_is_string(json_object_get(v, "method")) && version != NULL &&
           strcmp(version, "2.0") == 0;
}

/* How many response lines the daemon will write for the request line [p, p+n): 0 or 1. */
static int
sockctl_shell_expects(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
        i++;
    if (i == n)
        return 0; /* blank lines are ignored */
    json_t *v = json_loadb(p, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    int expects = 1;
    if (json_is_object(v)) {
        expects = !sockctl_is_notification(v);
    } else if (json_is_array(v) && json_array_size(v) > 0) {
        size_t k;
        json_t *m;
        expects = 0;
        json_array_foreach(v, k, m)
        {
            if (!sockctl_is_notification(m))
                expects = 1;
        }
    }
    json_decref(v);
    return expects;
}

/* True when the daemon's line [p, p+n) is a response (object with id and no method, or array). */
static int
sockctl_shell_is_response(const char *p, size_t n)
{
    json_t *v = json_loadb(p, n, JSON_DECODE_ANY, NULL);
    int r = json_is_array(v) || (json_is_object(v) && json_object_get(v, "id") != NULL &&
                                 json_object_get(v, "method") == NULL);
    json_decref(v);
    return r;
}

/* sockctl shell [--linger MS] */
static int
sockctl_cmd_shell(const struct sockctl_opts *o, int argc, char **argv)
{
    int linger = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--linger") == 0 && i + 1 < argc &&
            sockctl_parse_int(argv[i + 1], 0, INT_MAX, &linger) == 0) {
            i++;
            continue;
        }
        return sockctl_bad_usage("shell takes only --linger MS", argv[i]);
    }
    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL)
        return SOCKCTL_IO;
    int fd = sockd_client_fd(c);
    struct sockctl_buf in = {0}, out = {0}, dm = {0};
    long outstanding = 0;
    int in_eof = 0, rc = SOCKCTL_OK;
    int64_t grace = -1, linger_until = -1;

    for (;;) {
        if (in_eof && out.len == 0 && outstanding <= 0) {
            if (linger_until < 0)
                linger_until = sockctl_deadline(linger);
            if (sockctl_left(linger_until) == 0)
                break;
        }
        if (in_eof && grace >= 0 && sockctl_left(grace) == 0) {
            fprintf(stderr, "sockctl: shell: %ld response(s) missing after %d ms\n", outstanding,
                    o->timeout_ms);
            rc = SOCKCTL_TIMEOUT;
            break;
        }
        struct pollfd pfd[2] = {
            {.fd = in_eof || out.len >= SOCKCTL_WINDOW ? -1 : STDIN_FILENO, .events = POLLIN},
            {.fd = fd, .events = POLLIN | (out.len > 0 ? POLLOUT : 0)},
        };
        int wait = -1;
        if (linger_until >= 0)
            wait = sockctl_left(linger_until);
        else if (in_eof && grace >= 0)
            wait = sockctl_left(grace);
        int n = poll(pfd, 2, wait);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "sockctl: poll: %s\n", strerror(errno));
            rc = SOCKCTL_IO;
            break;
        }
        if (pfd[0].revents) {
            char chunk[65536];
            ssize_t r = read(STDIN_FILENO, chunk, sizeof(chunk));
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r > 0 && sockctl_buf_add(&in, chunk, (size_t)r) < 0) {
                rc = SOCKCTL_IO;
                break;
            }
            if (r <= 0) {
                in_eof = 1;
                grace = sockctl_deadline(o->timeout_ms);
                if (in.len > 0 && sockctl_buf_add(&in, "\n", 1) < 0) {
                    rc = SOCKCTL_IO;
                    break;
                }
            }
            char *nl;
            size_t used = 0;
            while ((nl = memchr(in.p + used, '\n', in.len - used)) != NULL) {
                size_t len = (size_t)(nl - (in.p + used));
                outstanding += sockctl_shell_expects(in.p + used, len);
                if (sockctl_buf_add(&out, in.p + used, len + 1) < 0)
                    break;
                used += len + 1;
            }
            sockctl_buf_consume(&in, used);
            linger_until = -1;
        }
        if (pfd[1].revents & POLLOUT) {
            ssize_t w = send(fd, out.p, out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sockctl_buf_consume(&out, (size_t)w);
            else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                fprintf(stderr, "sockctl: shell: writing to the daemon: %s\n", strerror(errno));
                rc = SOCKCTL_IO;
                break;
            }
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            char chunk[65536];
            union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * 16)];
            } ctl;
            struct iovec iov = {.iov_base = chunk, .iov_len = sizeof(chunk)};
            struct msghdr mh = {.msg_iov = &iov,
                                .msg_iovlen = 1,
                                .msg_control = ctl.buf,
                                .msg_controllen = sizeof(ctl.buf)};
            ssize_t r = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            /* fds cannot travel over stdout: close any that rode along */
            for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); r > 0 && cm != NULL;
                 cm = CMSG_NXTHDR(&mh, cm)) {
                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                    continue;
                size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t k = 0; k < nfd; k++) {
                    int x;
                    memcpy(&x, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
                    close(x);
                }
            }
            if (r <= 0) {
                if (!in_eof || outstanding > 0 || out.len > 0) {
                    fprintf(stderr, "sockctl: shell: the daemon closed the connection\n");
                    rc = SOCKCTL_IO;
                }
                break;
            }
            if (sockctl_buf_add(&dm, chunk, (size_t)r) < 0) {
                rc = SOCKCTL_IO;
                break;
            }
            char *nl;
            size_t used = 0;
            while ((nl = memchr(dm.p + used, '\n', dm.len - used)) != NULL) {
                size_t len = (size_t)(nl - (dm.p + used));
                if (sockctl_shell_is_response(dm.p + used, len))
                    outstanding--;
                if (sockctl_stdout(dm.p + used, len + 1) != 0) {
                    rc = SOCKCTL_IO;
                    goto done;
                }
                used += len + 1;
            }
            sockctl_buf_consume(&dm, used);
            if (linger_until >= 0)
                linger_until = sockctl_deadline(linger);
        }
    }
done:
    free(in.p);
    free(out.p);
    free(dm.p);
    sockd_client_close(c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Connect options                                                          */

/* The options of cat, open, send, recv and close. */
struct sockctl_verbopts {
    struct sockctl_connopts co;
    int keep_ms;     /* open --keep */
    int wait_ms;     /* cat --wait (-1: default) */
    int no_shutdown; /* cat --no-shutdown */
    int partial;     /* recv --partial */
    int timeout_ms;  /* send/recv/close --timeout (-1: none given) */
    char until[16];  /* recv --line / --until: the delimiter ... */
    size_t ulen;     /* ... of this many bytes (0: not a line) */
};

/*
 * The bytes of TEXT with the escapes \r \n \t \\ and \xHH (a recv --until delimiter) into
 * out (cap bytes); *n their count. -1 when empty, too long or a bad escape.
 */
static int
sockctl_unescape(const char *text, char *out, size_t cap, size_t *n)
{
    static const char from[] = "rnt\\", to[] = "\r\n\t\\";
    size_t o = 0;

    for (const char *p = text; *p != '\0'; p++) {
        char c = *p;
        if (c == '\\') {
            const char *e = p[1] != '\0' ? strchr(from, p[1]) : NULL;
            if (e != NULL) {
                c = to[e - from];
                p++;
            } else if (p[1] == 'x' && isxdigit((unsigned char)p[2]) &&
                       isxdigit((unsigned char)p[3])) {
                char hex[3] = {p[2], p[3], '\0'};
                c = (char)strtol(hex, NULL, 16);
                p += 3;
            } else
                return -1;
        }
        if (o == cap)
            return -1;
        out[o++] = c;
    }
    *n = o;
    return o > 0 ? 0 : -1;
}

/*
 * Parse a verb's options (getopt_long; options may follow the operands;
 * "--" ends them). ALLOWED lists the options that apply as letters a..i,
 * one per longopts entry. The operands are moved to argv[1..*first).
 * Returns 0 or SOCKCTL_USAGE.
 */
static int
sockctl_verb_options(const char *verb, int argc, char **argv, const char *allowed,
                     struct sockctl_verbopts *v, int *first)
{
    static const struct option longopts[] = {
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"ca", required_argument, NULL, OPT_CA},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"alpn", required_argument, NULL, OPT_ALPN},
        {"server-name", required_argument, NULL, OPT_SERVER_NAME},
        {"keep", required_argument, NULL, OPT_KEEP},
        {"wait", required_argument, NULL, OPT_WAIT},
        {"no-shutdown", no_argument, NULL, OPT_NO_SHUTDOWN},
        {"partial", no_argument, NULL, OPT_PARTIAL},
        {"line", no_argument, NULL, OPT_LINE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {NULL, 0, NULL, 0},
    };
    static char name[64]; /* argv[0] for getopt's messages */
    int opt;

    snprintf(name, sizeof(name), "sockctl %s", verb);
    argv[0] = name;
    v->co.timeout_ms = SOCKCTL_CONNECT_TIMEOUT_MS;
    v->keep_ms = SOCKCTL_DEFAULT_KEEP_MS;
    v->wait_ms = -1;
    v->timeout_ms = -1;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "-", longopts, NULL)) != -1) {
        if (opt == 1) { /* an operand: "-" keeps them in order */
            argv[(*first)++] = optarg;
            continue;
        }
        if (opt >= OPT_TIMEOUT && opt <= OPT_UNTIL &&
            strchr(allowed, 'a' + (opt - OPT_TIMEOUT)) == NULL) {
            fprintf(stderr, "sockctl %s: option --%s does not apply\n", verb,
                    longopts[opt - OPT_TIMEOUT].name);
            opt = '?';
        }
        int bad = 0;
        switch (opt) {
        case OPT_TIMEOUT:
            bad = sockctl_parse_int(optarg, 1, 86400000, &v->co.timeout_ms) < 0;
            v->timeout_ms = v->co.timeout_ms;
            break;
        case OPT_CA:
            v->co.ca = optarg;
            break;
        case OPT_INSECURE:
            v->co.insecure = 1;
            break;
        case OPT_ALPN: {
            json_t *a = sockctl_alpn(optarg);
            v->co.alpn = optarg;
            bad = a == NULL;
            json_decref(a);
            break;
        }
        case OPT_SERVER_NAME:
            v->co.server_name = optarg;
            bad = *optarg == '\0';
            break;
        case OPT_KEEP:
            bad = sockctl_parse_int(optarg, 1, 86400000, &v->keep_ms) < 0;
            break;
        case OPT_WAIT:
            bad = sockctl_parse_int(optarg, 0, INT_MAX, &v->wait_ms) < 0;
            break;
        case OPT_NO_SHUTDOWN:
            v->no_shutdown = 1;
            break;
        case OPT_PARTIAL:
            v->partial = 1;
            break;
        case OPT_LINE:
            if (v->ulen == 0)
                v->until[v->ulen++] = '\n';
            break;
        case OPT_UNTIL:
            bad = sockctl_unescape(optarg, v->until, sizeof v->until, &v->ulen) < 0;
            break;
        default:
            fputs("Try 'sockctl -h' for more information.\n", stderr);
            return SOCKCTL_USAGE;
        }
        if (bad)
            return sockctl_bad_usage("bad option value", optarg);
    }
    /* "--" ends the options; what follows is operands */
    while (optind < argc)
        argv[(*first)++] = argv[optind++];
    return SOCKCTL_OK;
}

/* ------------------------------------------------------------------------ */
/* cat                                                                      */

/* Drain notifications already here for socket S; *closed gets a socket.closed's params. */
static int
sockctl_cat_events(struct sockd_client *c, long long s, json_t **closed, int64_t *inflight,
                   int *got_data, int udp)
{
    for (;;) {
        json_t *ev = sockd_client_next_event(c, 0);
        if (ev == NULL) {
            if (errno == ETIMEDOUT)
                return SOCKCTL_OK;
            fprintf(stderr, "sockctl: the daemon closed the connection\n");
            return SOCKCTL_IO;
        }
        json_t *p = json_object_get(ev, "params");
        int rc = SOCKCTL_OK;
        if (sockctl_handle(p, "socket") == s) {
            if (sockctl_is(ev, "socket.closed") && *closed == NULL) {
                *closed = json_incref(p);
            } else if (sockctl_is(ev, "socket.sent")) {
                *inflight -= json_integer_value(json_object_get(p, "bytes"));
            } else if (sockctl_is(ev, "socket.received") && udp) {
                size_t n;
                json_t *data = json_object_get(p, "data");
                unsigned char *d =
                    sockd_client_b64_decode(json_string_value(data), json_string_length(data), &n);
                if (d != NULL) {
                    rc = sockctl_stdout(d, n);
                    *got_data = 1;
                }
                free(d);
            }
        }
        json_decref(ev);
        if (rc != SOCKCTL_OK)
            return rc;
    }
}

/* Send n bytes with socket.send (no wait for socket.sent). */
static int
sockctl_send_chunk(struct sockd_client *c, const struct sockctl_opts *o, long long s, const void *p,
                   size_t n, int64_t *inflight)
{
    char *b64 = sockd_client_b64_encode(p, n);
    if (b64 == NULL)
        return SOCKCTL_IO;
    json_t *params = json_pack("{s:I,s:s}", "socket", (json_int_t)s, "data", b64);
    free(b64);
    int code;
    int rc = sockctl_rpc(c, o, "socket.send", params, NULL, &code, SOCKD_E_UNKNOWN_HANDLE);
    if (rc == SOCKCTL_OK)
        *inflight += (int64_t)n;
    return rc;
}

/* The final status of cat once the socket ended as CLOSED says. */
static int
sockctl_cat_end(const char *url, json_t *closed)
{
    int rc = sockctl_closed_status(closed);

    if (rc != SOCKCTL_OK)
        sockctl_say_closed(url, closed);
    json_decref(closed);
    return rc;
}

/* cat for udp://: each stdin line is one datagram; each datagram received goes to stdout. */
static int
sockctl_cat_dgram(struct sockd_client *c, const struct sockctl_opts *o, long long s,
                  const char *url, const struct sockctl_verbopts *v)
{
    int wait_ms = v->wait_ms >= 0 ? v->wait_ms : SOCKCTL_UDP_WAIT_MS;
    json_t *p = json_pack("{s:I,s:i,s:b,s:b}", "socket", (json_int_t)s, "length", 65536, "partial",
                          1, "stream", 1);
    int rc = sockctl_rpc(c, o, "socket.recv", p, NULL, NULL, 0);
    struct sockctl_buf line = {0};
    int64_t inflight = 0, idle = -1;
    int in_eof = 0, got = 0;
    json_t *closed = NULL;

    while (rc == SOCKCTL_OK) {
        got = 0;
        if ((rc = sockctl_cat_events(c, s, &closed, &inflight, &got, 1)) != SOCKCTL_OK)
            break;
        if (closed != NULL) {
            rc = sockctl_cat_end(url, closed);
            closed = NULL;
            break;
        }
        if (in_eof && inflight <= 0) {
            if (idle < 0 || got)
                idle = sockctl_deadline(wait_ms);
            if (sockctl_left(idle) == 0) {
                sockctl_rpc(c, o, "socket.close", json_pack("{s:I}", "socket", (json_int_t)s), NULL,
                            NULL, 0);
                break;
            }
        }
        struct pollfd pfd[2] = {
            {.fd = in_eof || inflight >= SOCKCTL_WINDOW ? -1 : STDIN_FILENO, .events = POLLIN},
            {.fd = sockd_client_fd(c), .events = POLLIN},
        };
        int n = poll(pfd, 2, idle >= 0 ? sockctl_left(idle) : -1);
        if (n < 0 && errno != EINTR) {
            rc = SOCKCTL_IO;
            break;
        }
        if (n > 0 && pfd[0].revents) {
            char chunk[65536];
            ssize_t r = read(STDIN_FILENO, chunk, sizeof(chunk));
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r > 0 && sockctl_buf_add(&line, chunk, (size_t)r) < 0) {
                rc = SOCKCTL_IO;
                break;
            }
            if (r <= 0)
                in_eof = 1;
            size_t used = 0;
            char *nl;
            while (rc == SOCKCTL_OK &&
                   (nl = memchr(line.p + used, '\n', line.len - used)) != NULL) {
                size_t len = (size_t)(nl - (line.p + used)) + 1;
                rc = sockctl_send_chunk(c, o, s, line.p + used, len, &inflight);
                used += len;
            }
            if (rc == SOCKCTL_OK && in_eof && line.len > used) {
                rc = sockctl_send_chunk(c, o, s, line.p + used, line.len - used, &inflight);
                used = line.len;
            }
            if (line.len > 0)
                sockctl_buf_consume(&line, used);
        }
    }
    free(line.p);
    json_decref(closed);
    return rc;
}

/* cat for stream sockets: the daemon relays between the socket and our end of socket.pipe. */
static int
sockctl_cat_stream(struct sockd_client *c, const struct sockctl_opts *o, long long s,
                   const char *url, const struct sockctl_verbopts *v)
{
    json_t *res = NULL, *err = NULL;
    json_t *params = json_pack("{s:I}", "socket", (json_int_t)s);
    int fd = -1;
    int r = sockd_client_call_fd(c, "socket.pipe", params, -1, &res, &err, &fd, o->timeout_ms);
    json_decref(params);
    json_decref(res);
    if (r < 0)
        return sockctl_no_response(o, "socket.pipe");
    if (r == 1 || fd < 0) {
        if (err != NULL)
            sockctl_say_error("socket.pipe", err);
        else
            fprintf(stderr, "sockctl: socket.pipe: no descriptor came with the response\n");
        json_decref(err);
        if (fd >= 0)
            close(fd);
        return SOCKCTL_ERROR;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);

    char ob[65536], ib[65536];
    size_t olen = 0, ooff = 0;
    int in_eof = 0, shut = 0, rc = SOCKCTL_OK;
    int64_t idle = -1, inflight = 0;
    json_t *closed = NULL;

    for (;;) {
        int got = 0;
        if ((rc = sockctl_cat_events(c, s, &closed, &inflight, &got, 0)) != SOCKCTL_OK)
            break;
        if (closed != NULL) {
            /* The daemon closed its end after relaying everything: take what is left. */
            for (int i = 0; fd >= 0 && i < 1000; i++) {
                struct pollfd pf = {.fd = fd, .events = POLLIN};
                if (poll(&pf, 1, 100) <= 0)
                    break;
                ssize_t n = read(fd, ib, sizeof(ib));
                if (n <= 0)
                    break;
                if ((rc = sockctl_stdout(ib, (size_t)n)) != SOCKCTL_OK)
                    break;
            }
            if (rc == SOCKCTL_OK)
                rc = sockctl_cat_end(url, closed);
            else
                json_decref(closed);
            closed = NULL;
            break;
        }
        if (fd < 0) {
            /* Both directions are done; socket.closed must follow. */
            json_t *cl = sockctl_wait_closed(c, s, SOCKCTL_CLOSE_WAIT_MS);
            if (cl == NULL) {
                fprintf(stderr, "sockctl: %s: the daemon did not report the close\n", url);
                rc = SOCKCTL_IO;
            } else {
                rc = sockctl_cat_end(url, cl);
            }
            break;
        }
        if (in_eof && ooff == olen && !shut) {
            if (!v->no_shutdown)
                shutdown(fd, SHUT_WR); /* the daemon passes the end on to the peer */
            shut = 1;
            if (v->wait_ms >= 0)
                idle = sockctl_deadline(v->wait_ms);
        }
        if (idle >= 0 && sockctl_left(idle) == 0) {
            close(fd);
            sockctl_rpc(c, o, "socket.close", json_pack("{s:I}", "socket", (json_int_t)s), NULL,
                        NULL, 0);
            return SOCKCTL_OK;
        }
        struct pollfd pfd[3] = {
            {.fd = in_eof || ooff < olen ? -1 : STDIN_FILENO, .events = POLLIN},
            {.fd = fd, .events = POLLIN | (ooff < olen ? POLLOUT : 0)},
            {.fd = sockd_client_fd(c), .events = POLLIN},
        };
        int n = poll(pfd, 3, idle >= 0 ? sockctl_left(idle) : -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = SOCKCTL_IO;
            break;
        }
        if (pfd[0].revents) {
            ssize_t k = read(STDIN_FILENO, ob, sizeof(ob));
            if (k < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (k <= 0)
                in_eof = 1;
            else {
                olen = (size_t)k;
                ooff = 0;
            }
        }
        if (pfd[1].revents & POLLOUT) {
            ssize_t k = send(fd, ob + ooff, olen - ooff, MSG_NOSIGNAL);
            if (k > 0)
                ooff += (size_t)k;
            else if (k < 0 && errno != EAGAIN && errno != EINTR) {
                ooff = olen; /* the daemon closed its end: the socket ended */
                in_eof = 1;
            }
        }
        if (pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t k = read(fd, ib, sizeof(ib));
            if (k > 0) {
                if ((rc = sockctl_stdout(ib, (size_t)k)) != SOCKCTL_OK)
                    break;
                if (idle >= 0)
                    idle = sockctl_deadline(v->wait_ms);
            } else if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
                /* The peer finished (or the socket ended): our end closes too. */
                close(fd);
                fd = -1;
            }
        }
    }
    if (fd >= 0)
        close(fd);
    json_decref(closed);
    return rc;
}

/* sockctl cat [OPTIONS] URL */
static int
sockctl_cmd_cat(const struct sockctl_opts *o, int argc, char **argv)
{
    struct sockctl_verbopts v = {0};
    int nargs = 1;
    int rc = sockctl_verb_options("cat", argc, argv, "abcdegh" /* not keep, partial */, &v, &nargs);
    if (rc != SOCKCTL_OK)
        return rc;
    if (nargs != 2)
        return sockctl_bad_usage("cat needs one URL", nargs > 2 ? argv[2] : NULL);
    struct sockctl_url u;
    if (sockctl_url_parse(argv[1], &u) < 0)
        return sockctl_bad_usage("not a URL (tcp://HOST:PORT, tls://, udp://, unix:PATH)", argv[1]);
    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL) {
        free(u.address);
        return SOCKCTL_IO;
    }
    long long s;
    json_t *connected;
    rc = sockctl_open_connect(c, o, &u, argv[1], &v.co, &s, &connected);
    json_decref(connected);
    if (rc == SOCKCTL_OK) {
        if (strcmp(u.type, "udp") == 0)
            rc = sockctl_cat_dgram(c, o, s, argv[1], &v);
        else
            rc = sockctl_cat_stream(c, o, s, argv[1], &v);
    }
    sockd_client_close(c);
    free(u.address);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Parked sockets: open, send, recv, close, ls                              */

/* A parked socket's state file, locked while a command uses it. */
struct sockctl_kept {
    int fd;
    char path[PATH_MAX];
    char id[33];
    char token[65];
    int keep_ms;
    char closed[64]; /* the reason once the socket ended, else "" */
    int gone;        /* removed by another command */
};

/* The state directory (created 0700 when missing). Returns 0, or -1 after saying why. */
static int
sockctl_state_dir(char *buf, size_t len)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    struct stat st;
    int n;

    if (xdg != NULL && *xdg == '/')
        n = snprintf(buf, len, "%s/sockctl", xdg);
    else
        n = snprintf(buf, len, "/tmp/sockctl-%u", (unsigned)getuid());
    if (n < 0 || (size_t)n >= len) {
        fprintf(stderr, "sockctl: state directory path too long\n");
        return -1;
    }
    if (mkdir(buf, 0700) < 0 && errno != EEXIST) {
        fprintf(stderr, "sockctl: %s: %s\n", buf, strerror(errno));
        return -1;
    }
    if (lstat(buf, &st) < 0) {
        fprintf(stderr, "sockctl: %s: %s\n", buf, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077) != 0) {
        fprintf(stderr, "sockctl: %s: not a private directory of this user (mode 0700)\n", buf);
        return -1;
    }
    return 0;
}

/* True when ID looks like a token (32 lowercase hex digits). */
static int
sockctl_valid_id(const char *id)
{
    size_t n = strlen(id);

    if (n != 32)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
            return 0;
    }
    return 1;
}

/* Rewrite the state file with one line. Returns 0, or -1 after saying why. */
static int
sockctl_kept_write(struct sockctl_kept *k, const char *line)
{
    size_t n = strlen(line);

    if (ftruncate(k->fd, 0) < 0 || pwrite(k->fd, line, n, 0) != (ssize_t)n) {
        fprintf(stderr, "sockctl: %s: %s\n", k->path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Record the socket's current token. */
static int
sockctl_kept_save(struct sockctl_kept *k, const char *token)
{
    char line[160];

    snprintf(k->token, sizeof(k->token), "%s", token);
    snprintf(line, sizeof(line), "token %s %d\n", token, k->keep_ms);
    return sockctl_kept_write(k, line);
}

/* Record that the socket ended. */
static void
sockctl_kept_closed(struct sockctl_kept *k, const char *reason)
{
    char line[160];

    snprintf(k->closed, sizeof(k->closed), "%s", *reason ? reason : "lost");
    snprintf(line, sizeof(line), "closed %s\n", k->closed);
    sockctl_kept_write(k, line);
}

/* Forget the socket: mark the file for waiters and remove it. */
static void
sockctl_kept_remove(struct sockctl_kept *k)
{
    sockctl_kept_write(k, "gone\n");
    unlink(k->path);
}

/* Unlock and close the state file. */
static void
sockctl_kept_release(struct sockctl_kept *k)
{
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
}

/*
 * Open and lock the state file of ID, waiting up to lock_ms for another
 * command using it. A missing file is created for ID taken as a token (so
 * a token from another program works as an ID). Returns 0, or an exit status.
 */
static int
sockctl_kept_open(const char *id, struct sockctl_kept *k, int lock_ms)
{
    char dir[PATH_MAX - 40];
    char text[256];

    memset(k, 0, sizeof(*k));
    k->fd = -1;
    if (!sockctl_valid_id(id))
        return sockctl_bad_usage("not a socket ID (32 hex digits from sockctl open)", id);
    if (sockctl_state_dir(dir, sizeof(dir)) < 0)
        return SOCKCTL_IO;
    snprintf(k->id, sizeof(k->id), "%s", id);
    snprintf(k->path, sizeof(k->path), "%s/%s", dir, id);
    k->fd = open(k->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (k->fd < 0) {
        fprintf(stderr, "sockctl: %s: %s\n", k->path, strerror(errno));
        return SOCKCTL_IO;
    }
    int64_t deadline = sockctl_deadline(lock_ms);
    while (flock(k->fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            fprintf(stderr, "sockctl: %s: %s\n", k->path, strerror(errno));
            sockctl_kept_release(k);
            return SOCKCTL_IO;
        }
        if (sockctl_left(deadline) == 0) {
            fprintf(stderr, "sockctl: %s: busy (another sockctl is using it)\n", id);
            sockctl_kept_release(k);
            return SOCKCTL_TIMEOUT;
        }
        usleep(10000);
    }
    ssize_t n = pread(k->fd, text, sizeof(text) - 1, 0);
    text[n > 0 ? n : 0] = '\0';
    char word[16], arg[64];
    int keep = SOCKCTL_DEFAULT_KEEP_MS;
    int f = sscanf(text, "%15s %63s %d", word, arg, &keep);
    k->keep_ms = keep > 0 ? keep : SOCKCTL_DEFAULT_KEEP_MS;
    if (f >= 2 && strcmp(word, "token") == 0) {
        snprintf(k->token, sizeof(k->token), "%s", arg);
    } else if (f >= 2 && strcmp(word, "closed") == 0) {
        snprintf(k->closed, sizeof(k->closed), "%s", arg);
    } else if (f >= 1 && strcmp(word, "gone") == 0) {
        k->gone = 1;
    } else {
        snprintf(k->token, sizeof(k->token), "%s", id); /* new: ID is the token */
    }
    return SOCKCTL_OK;
}

/* Open the state file of ID, reporting an ID that was closed or removed. */
static int
sockctl_kept_use(const char *id, struct sockctl_kept *k, int lock_ms)
{
    int rc = sockctl_kept_open(id, k, lock_ms);

    if (rc == SOCKCTL_OK && k->gone) {
        fprintf(stderr, "sockctl: %s: no such socket (it was closed)\n", id);
        sockctl_kept_release(k);
        return SOCKCTL_ERROR;
    }
    return rc;
}

/*
 * Take the socket of K. Returns SOCKCTL_OK with *h (and *info, if not
 * NULL); an unknown token removes the state file.
 */
static int
sockctl_kept_take(struct sockd_client *c, const struct sockctl_opts *o, struct sockctl_kept *k,
                  long long *h, json_t **info, int quiet)
{
    json_t *res;
    int code;
    int rc = sockctl_rpc(c, o, "socket.take", json_pack("{s:s}", "token", k->token), &res, &code,
                         SOCKD_E_UNKNOWN_HANDLE);

    if (rc == SOCKCTL_ERROR && code == SOCKD_E_UNKNOWN_HANDLE && !quiet)
        fprintf(stderr,
                "sockctl: %s: no such socket (its keep time passed, it failed while parked, "
                "or it was never opened)\n",
                k->id);
    if (rc == SOCKCTL_ERROR && code == SOCKD_E_UNKNOWN_HANDLE)
        sockctl_kept_remove(k);
    if (rc != SOCKCTL_OK)
        return rc;
    *h = sockctl_handle(res, "socket");
    if (info != NULL)
        *info = res;
    else
        json_decref(res);
    return SOCKCTL_OK;
}

/*
 * The socket ended while we held it (a call answered -32001, or
 * socket.closed came): record how, from CLOSED or the notification that
 * must follow. Returns SOCKCTL_ERROR.
 */
static int
sockctl_kept_ended(struct sockd_client *c, struct sockctl_kept *k, long long h, json_t *closed)
{
    json_t *p = closed ? json_incref(closed) : sockctl_wait_closed(c, h, SOCKCTL_CLOSE_WAIT_MS);

    sockctl_kept_closed(k, p ? sockctl_reason(p) : "lost");
    json_decref(p);
    return SOCKCTL_ERROR;
}

/* Give the socket back and record the new token. */
static int
sockctl_kept_give(struct sockd_client *c, const struct sockctl_opts *o, struct sockctl_kept *k,
                  long long h)
{
    json_t *res;
    int code;
    int rc = sockctl_rpc(c, o, "socket.give",
                         json_pack("{s:I,s:i}", "socket", (json_int_t)h, "timeout_ms", k->keep_ms),
                         &res, &code, SOCKD_E_UNKNOWN_HANDLE);

    if (rc == SOCKCTL_ERROR && code == SOCKD_E_UNKNOWN_HANDLE) {
        sockctl_kept_ended(c, k, h, NULL);
        fprintf(stderr, "sockctl: %s: closed: %s\n", k->id, k->closed);
        return SOCKCTL_ERROR;
    }
    if (rc != SOCKCTL_OK)
        return rc;
    const char *token = json_string_value(json_object_get(res, "token"));
    rc = token != NULL && sockctl_kept_save(k, token) == 0 ? SOCKCTL_OK : SOCKCTL_IO;
    json_decref(res);
    return rc;
}

/* sockctl open [OPTIONS] URL */
static int
sockctl_cmd_open(const struct sockctl_opts *o, int argc, char **argv)
{
    struct sockctl_verbopts v = {0};
    int nargs = 1;
    int rc = sockctl_verb_options("open", argc, argv, "abcdef", &v, &nargs);
    if (rc != SOCKCTL_OK)
        return rc;
    if (nargs != 2)
        return sockctl_bad_usage("open needs one URL", nargs > 2 ? argv[2] : NULL);
    struct sockctl_url u;
    if (sockctl_url_parse(argv[1], &u) < 0)
        return sockctl_bad_usage("not a URL (tcp://HOST:PORT, tls://, udp://, unix:PATH)", argv[1]);
    char dir[PATH_MAX - 40];
    if (sockctl_state_dir(dir, sizeof(dir)) < 0) {
        free(u.address);
        return SOCKCTL_IO;
    }
    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL) {
        free(u.address);
        return SOCKCTL_IO;
    }
    long long s;
    json_t *connected = NULL, *res = NULL;
    rc = sockctl_open_connect(c, o, &u, argv[1], &v.co, &s, &connected);
    if (rc == SOCKCTL_OK)
        rc = sockctl_rpc(c, o, "socket.give",
                         json_pack("{s:I,s:i}", "socket", (json_int_t)s, "timeout_ms", v.keep_ms),
                         &res, NULL, 0);
    const char *token = json_string_value(json_object_get(res, "token"));
    if (rc == SOCKCTL_OK && (token == NULL || !sockctl_valid_id(token))) {
        fprintf(stderr, "sockctl: socket.give: unexpected token\n");
        rc = SOCKCTL_IO;
    }
    if (rc == SOCKCTL_OK) {
        struct sockctl_kept k = {.fd = -1, .keep_ms = v.keep_ms};
        snprintf(k.id, sizeof(k.id), "%s", token);
        snprintf(k.path, sizeof(k.path), "%s/%s", dir, token);
        k.fd = open(k.path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (k.fd < 0 || sockctl_kept_save(&k, token) < 0) {
            if (k.fd < 0)
                fprintf(stderr, "sockctl: %s: %s\n", k.path, strerror(errno));
            rc = SOCKCTL_IO;
        }
        sockctl_kept_release(&k);
    }
    if (rc == SOCKCTL_OK) {
        if (o->json) {
            json_t *out = json_pack("{s:s,s:s}", "id", token, "type", u.type);
            json_object_update_missing(out, connected);
            json_object_del(out, "socket");
            json_object_del(out, "request");
            rc = sockctl_output_new(out);
        } else {
            printf("%s\n", token);
            rc = fflush(stdout) == EOF ? SOCKCTL_IO : SOCKCTL_OK;
        }
    }
    json_decref(res);
    json_decref(connected);
    sockd_client_close(c);
    free(u.address);
    return rc;
}

/* Send all of stdin (fd >= 0) or text on socket h, waiting for socket.sent of every byte. */
static int
sockctl_send_all(struct sockd_client *c, const struct sockctl_opts *o, long long h, int fd,
                 const char *text, uint64_t *total, json_t **closed)
{
    static char chunk[SOCKCTL_CHUNK];
    int64_t inflight = 0;
    size_t tlen = text ? strlen(text) : 0, toff = 0;
    int eof = 0, rc = SOCKCTL_OK;

    *total = 0;
    while (rc == SOCKCTL_OK && (!eof || inflight > 0)) {
        /* room in the window: queue more */
        while (!eof && inflight < SOCKCTL_WINDOW) {
            size_t n;
            const char *p;
            if (fd >= 0) {
                ssize_t r = read(fd, chunk, sizeof(chunk));
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0) {
                    fprintf(stderr, "sockctl: reading stdin: %s\n", strerror(errno));
                    return SOCKCTL_IO;
                }
                if (r == 0) {
                    eof = 1;
                    break;
                }
                p = chunk;
                n = (size_t)r;
            } else {
                p = text + toff;
                n = tlen - toff > SOCKCTL_CHUNK ? SOCKCTL_CHUNK : tlen - toff;
                toff += n;
                eof = toff == tlen;
                if (n == 0)
                    break;
            }
            int code;
            char *b64 = sockd_client_b64_encode(p, n);
            rc = sockctl_rpc(c, o, "socket.send",
                             json_pack("{s:I,s:s}", "socket", (json_int_t)h, "data", b64), NULL,
                             &code, SOCKD_E_UNKNOWN_HANDLE);
            free(b64);
            if (rc == SOCKCTL_ERROR && code == SOCKD_E_UNKNOWN_HANDLE) {
                *closed = sockctl_wait_closed(c, h, SOCKCTL_CLOSE_WAIT_MS);
                if (*closed == NULL)
                    *closed = json_pack("{s:s}", "reason", SOCKD_REASON_LOST);
                return SOCKCTL_ERROR;
            }
            if (rc != SOCKCTL_OK)
                return rc;
            inflight += (int64_t)n;
            *total += n;
        }
        if (inflight <= 0)
            continue;
        json_t *ev = sockctl_event(c, h, sockctl_deadline(o->timeout_ms), &rc);
        if (ev == NULL) {
            if (rc == SOCKCTL_TIMEOUT)
                fprintf(stderr, "sockctl: send: %lld bytes not sent within %d ms\n",
                        (long long)inflight, o->timeout_ms);
            return rc;
        }
        json_t *p = json_object_get(ev, "params");
        if (sockctl_is(ev, "socket.sent")) {
            inflight -= json_integer_value(json_object_get(p, "bytes"));
        } else if (sockctl_is(ev, "socket.closed")) {
            *closed = json_incref(p);
            rc = SOCKCTL_ERROR;
        }
        json_decref(ev);
    }
    return rc;
}

/* sockctl send [--timeout MS] ID (TEXT | -) */
static int
sockctl_cmd_send(const struct sockctl_opts *o, int argc, char **argv)
{
    struct sockctl_verbopts v = {0};
    int nargs = 1;
    int rc = sockctl_verb_options("send", argc, argv, "a", &v, &nargs);
    if (rc != SOCKCTL_OK)
        return rc;
    if (nargs != 3)
        return sockctl_bad_usage("send needs ID and TEXT (or - for stdin)",
                                 nargs > 3 ? argv[3] : NULL);
    struct sockctl_opts oo = *o;
    if (v.timeout_ms > 0)
        oo.timeout_ms = v.timeout_ms;
    struct sockctl_kept k;
    if ((rc = sockctl_kept_use(argv[1], &k, oo.timeout_ms)) != SOCKCTL_OK)
        return rc;
    if (k.closed[0]) {
        fprintf(stderr, "sockctl: %s: closed: %s\n", k.id, k.closed);
        sockctl_kept_release(&k);
        return SOCKCTL_ERROR;
    }
    struct sockd_client *c = sockctl_connect(o);
    long long h = 0;
    uint64_t total = 0;
    json_t *closed = NULL;
    rc = c == NULL ? SOCKCTL_IO : sockctl_kept_take(c, &oo, &k, &h, NULL, 0);
    if (rc == SOCKCTL_OK) {
        int fd = strcmp(argv[2], "-") == 0 ? STDIN_FILENO : -1;
        rc = sockctl_send_all(c, &oo, h, fd, fd < 0 ? argv[2] : NULL, &total, &closed);
        if (closed != NULL) {
            /* the socket ended under us */
            sockctl_say_closed(k.id, closed);
            rc = sockctl_kept_ended(c, &k, h, closed);
        } else if (rc != SOCKCTL_IO) {
            /* sent, timed out or refused: hand it back (queued bytes still go out) */
            int r2 = sockctl_kept_give(c, &oo, &k, h);
            if (rc == SOCKCTL_OK)
                rc = r2;
        }
    }
    if (rc == SOCKCTL_OK && o->json)
        rc = sockctl_output_new(json_pack("{s:I}", "sent", (json_int_t)total));
    json_decref(closed);
    sockd_client_close(c);
    sockctl_kept_release(&k);
    return rc;
}

/* sockctl recv [--partial] [--timeout MS] ID N; recv --line [--until DELIM] ID [N] */
static int
sockctl_cmd_recv(const struct sockctl_opts *o, int argc, char **argv)
{
    struct sockctl_verbopts v = {0};
    int nargs = 1, len = SOCKCTL_LINE_MAX;
    int rc = sockctl_verb_options("recv", argc, argv, "aijk", &v, &nargs);
    if (rc != SOCKCTL_OK)
        return rc;
    if (v.ulen > 0 && v.partial)
        return sockctl_bad_usage("--line and --until do not go with --partial", NULL);
    if (nargs != 3 && (v.ulen == 0 || nargs != 2))
        return sockctl_bad_usage(v.ulen ? "recv --line needs ID (and N)" : "recv needs ID and N",
                                 nargs > 3 ? argv[3] : NULL);
    if (nargs == 3 && sockctl_parse_int(argv[2], 1, SOCKCTL_MAX_RECV, &len) < 0)
        return sockctl_bad_usage("N must be 1..16777216", argv[2]);
    if ((size_t)len < v.ulen)
        return sockctl_bad_usage("N must hold the delimiter", argv[2]);
    struct sockctl_kept k;
    if ((rc = sockctl_kept_use(argv[1], &k, o->timeout_ms)) != SOCKCTL_OK)
        return rc;
    if (k.closed[0]) { /* ended earlier: end of stream */
        if (strcmp(k.closed, SOCKD_REASON_BY_PEER) != 0)
            fprintf(stderr, "sockctl: %s: closed: %s\n", k.id, k.closed);
        if (o->json)
            sockctl_output_new(json_pack("{s:s,s:b,s:b}", "data", "", "eof", 1, "timeout", 0));
        sockctl_kept_release(&k);
        return SOCKCTL_ERROR;
    }
    struct sockd_client *c = sockctl_connect(o);
    long long h = 0;
    json_t *received = NULL, *closed = NULL;
    rc = c == NULL ? SOCKCTL_IO : sockctl_kept_take(c, o, &k, &h, NULL, 0);
    if (rc == SOCKCTL_OK) {
        json_t *p = json_pack("{s:I,s:i,s:b}", "socket", (json_int_t)h, "length", len, "partial",
                              v.partial);
        if (v.timeout_ms > 0)
            json_object_set_new(p, "timeout_ms", json_integer(v.timeout_ms));
        if (v.ulen > 0) { /* sockd-protocol(7), RECEIVING, Lines */
            char *delim = sockd_client_b64_encode(v.until, v.ulen);
            json_object_set_new(p, "until_b64", delim ? json_string(delim) : NULL);
            free(delim);
        }
        int code;
        rc = sockctl_rpc(c, o, "socket.recv", p, NULL, &code, SOCKD_E_UNKNOWN_HANDLE);
        if (rc == SOCKCTL_ERROR && code == SOCKD_E_UNKNOWN_HANDLE) {
            closed = sockctl_wait_closed(c, h, SOCKCTL_CLOSE_WAIT_MS);
            if (closed == NULL)
                closed = json_pack("{s:s}", "reason", SOCKD_REASON_LOST);
        }
    }
    /* Wait for the data (the daemon ends it at timeout_ms; allow slack), or the end. */
    int64_t deadline = v.timeout_ms > 0 ? sockctl_deadline(v.timeout_ms + 5000) : -1;
    while (rc == SOCKCTL_OK && received == NULL && closed == NULL) {
        json_t *ev = sockctl_event(c, h, deadline, &rc);
        if (ev == NULL) {
            if (rc == SOCKCTL_TIMEOUT)
                fprintf(stderr, "sockctl: recv: nothing within %d ms\n", v.timeout_ms);
            break;
        }
        json_t *p = json_object_get(ev, "params");
        if (sockctl_is(ev, "socket.received"))
            received = json_incref(p);
        else if (sockctl_is(ev, "socket.closed"))
            closed = json_incref(p);
        json_decref(ev);
    }
    size_t n = 0;
    int eof = closed != NULL, timed_out = 0;
    if (received != NULL) {
        const char *b64 = json_string_value(json_object_get(received, "data"));
        unsigned char *data = sockd_client_b64_decode(b64 ? b64 : "", b64 ? strlen(b64) : 0, &n);
        eof = json_is_true(json_object_get(received, "eof"));
        timed_out = json_is_true(json_object_get(received, "timeout"));
        json_t *out =
            json_pack("{s:s,s:b,s:b}", "data", b64 ? b64 : "", "eof", eof, "timeout", timed_out);
        if (v.ulen > 0)
            json_object_set_new(
                out, "until_missing",
                json_boolean(json_is_true(json_object_get(received, "until_missing"))));
        if (data == NULL)
            rc = SOCKCTL_IO;
        else if (o->json)
            rc = sockctl_output_new(json_incref(out));
        else
            rc = sockctl_stdout(data, n);
        json_decref(out);
        free(data);
    } else if (closed != NULL && o->json) {
        sockctl_output_new(json_pack("{s:s,s:b,s:b}", "data", "", "eof", 1, "timeout", 0));
    }
    if (h != 0 && eof) {
        /* the stream ended; the daemon closes the socket (by_peer) */
        json_t *cl =
            closed ? json_incref(closed) : sockctl_wait_closed(c, h, SOCKCTL_CLOSE_WAIT_MS);
        const char *reason = cl ? sockctl_reason(cl) : SOCKD_REASON_BY_PEER;
        if (strcmp(reason, SOCKD_REASON_BY_PEER) != 0 && cl != NULL)
            sockctl_say_closed(k.id, cl);
        sockctl_kept_closed(&k, reason);
        json_decref(cl);
        if (rc == SOCKCTL_OK && n == 0)
            rc = SOCKCTL_ERROR; /* end of stream, nothing read */
    } else if (h != 0 && rc != SOCKCTL_IO) {
        /* still open: hand it back (a recv still pending is cancelled) */
        int r2 = sockctl_kept_give(c, o, &k, h);
        if (rc == SOCKCTL_OK)
            rc = r2;
        if (rc == SOCKCTL_OK && timed_out)
            rc = SOCKCTL_TIMEOUT;
    }
    json_decref(received);
    json_decref(closed);
    sockd_client_close(c);
    sockctl_kept_release(&k);
    return rc;
}

/* sockctl close [--timeout MS] ID */
static int
sockctl_cmd_close(const struct sockctl_opts *o, int argc, char **argv)
{
    struct sockctl_verbopts v = {0};
    int nargs = 1;
    int rc = sockctl_verb_options("close", argc, argv, "a", &v, &nargs);
    if (rc != SOCKCTL_OK)
        return rc;
    if (nargs != 2)
        return sockctl_bad_usage("close needs one ID", nargs > 2 ? argv[2] : NULL);
    int wait = v.timeout_ms > 0 ? v.timeout_ms : SOCKCTL_DEFAULT_TIMEOUT_MS;
    struct sockctl_kept k;
    if ((rc = sockctl_kept_use(argv[1], &k, wait)) != SOCKCTL_OK)
        return rc;
    char how[64];
    snprintf(how, sizeof(how), "%s", k.closed[0] ? k.closed : SOCKD_REASON_NORMAL);
    struct sockd_client *c = NULL;
    if (!k.closed[0]) {
        long long h = 0;
        c = sockctl_connect(o);
        rc = c == NULL ? SOCKCTL_IO : sockctl_kept_take(c, o, &k, &h, NULL, 0);
        if (rc == SOCKCTL_OK) {
            int code;
            json_t *cl = NULL;
            rc = sockctl_rpc(c, o, "socket.shutdown", json_pack("{s:I}", "socket", (json_int_t)h),
                             NULL, &code, SOCKD_E_UNKNOWN_HANDLE);
            if (rc == SOCKCTL_OK || code == SOCKD_E_UNKNOWN_HANDLE) {
                /* shutting down (or it had just ended): its socket.closed says how */
                cl = sockctl_wait_closed(c, h, wait);
                if (cl != NULL) {
                    snprintf(how, sizeof(how), "%s", sockctl_reason(cl));
                    rc = SOCKCTL_OK;
                } else if (rc == SOCKCTL_OK) {
                    fprintf(stderr, "sockctl: %s: not closed within %d ms; closed at once\n", k.id,
                            wait);
                    rc = SOCKCTL_TIMEOUT;
                }
            }
            if (cl == NULL && rc != SOCKCTL_IO) {
                /* no graceful end (a socket that cannot be shut down, or a timeout) */
                int r2 = sockctl_rpc(c, o, "socket.close",
                                     json_pack("{s:I}", "socket", (json_int_t)h), NULL, NULL, 0);
                if (rc == SOCKCTL_ERROR)
                    rc = r2;
            }
            json_decref(cl);
            if (rc != SOCKCTL_IO)
                sockctl_kept_remove(&k);
        }
    } else {
        sockctl_kept_remove(&k);
    }
    if (rc == SOCKCTL_OK && o->json)
        rc = sockctl_output_new(json_pack("{s:s,s:s}", "id", k.id, "closed", how));
    sockd_client_close(c);
    sockctl_kept_release(&k);
    return rc;
}

/* "addr:port", "[v6]:port", the path or "base64:..." of an address object, into buf. */
static const char *
sockctl_addr_text(const json_t *a, char *buf, size_t len)
{
    const char *addr = json_string_value(json_object_get(a, "address"));
    const char *path = json_string_value(json_object_get(a, "path"));
    const char *b64 = json_string_value(json_object_get(a, "path_base64"));
    const json_t *port = json_object_get(a, "port");

    if (path != NULL)
        snprintf(buf, len, "%s", path);
    else if (b64 != NULL)
        snprintf(buf, len, "base64:%s", b64); /* a Unix name that is not UTF-8 text */
    else if (addr != NULL && strchr(addr, ':') != NULL)
        snprintf(buf, len, "[%s]:%lld", addr, (long long)json_integer_value(port));
    else if (addr != NULL)
        snprintf(buf, len, "%s:%lld", addr, (long long)json_integer_value(port));
    else
        snprintf(buf, len, "-");
    return buf;
}

/* One line of the ls table. */
static void
sockctl_ls_row(const char *id, const json_t *info)
{
    char local[128], remote[128], state[80];
    const char *st = json_string_value(json_object_get(info, "state"));
    const char *closed = json_string_value(json_object_get(info, "closed"));

    if (closed != NULL)
        snprintf(state, sizeof(state), "closed:%s", closed);
    else
        snprintf(state, sizeof(state), "%s", st ? st : "-");
    const char *type = json_string_value(json_object_get(info, "type"));
    printf("%-32s  %-4s  %-16s  %-22s  %-22s  %10lld  %10lld\n", id, type ? type : "-", state,
           sockctl_addr_text(json_object_get(info, "local"), local, sizeof(local)),
           sockctl_addr_text(json_object_get(info, "remote"), remote, sizeof(remote)),
           (long long)json_integer_value(json_object_get(info, "bytes_sent")),
           (long long)json_integer_value(json_object_get(info, "bytes_received")));
}

/* Compare two strings for qsort. */
static int
sockctl_strcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* sockctl ls */
static int
sockctl_cmd_ls(const struct sockctl_opts *o, int argc, char **argv)
{
    if (argc > 0)
        return sockctl_bad_usage("ls takes no arguments", argv[0]);
    char dir[PATH_MAX - 40];
    if (sockctl_state_dir(dir, sizeof(dir)) < 0)
        return SOCKCTL_IO;
    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL)
        return SOCKCTL_IO;
    json_t *list = NULL;
    int rc = sockctl_rpc(c, o, "socket.list", NULL, &list, NULL, 0);
    json_t *rows = json_array();
    if (rc == SOCKCTL_OK) {
        size_t i;
        json_t *info;
        json_array_foreach(json_object_get(list, "sockets"), i, info)
        {
            json_t *row = json_deep_copy(info);
            json_object_set_new(row, "id", json_sprintf("%lld", sockctl_handle(info, "socket")));
            json_array_append_new(rows, row);
        }
    }
    /* The parked sockets, in ID order: each is taken for its info and given back. */
    char **ids = NULL;
    size_t nids = 0;
    DIR *d = rc == SOCKCTL_OK ? opendir(dir) : NULL;
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        if (!sockctl_valid_id(de->d_name))
            continue;
        char **more = realloc(ids, (nids + 1) * sizeof(*ids));
        if (more == NULL)
            break;
        ids = more;
        ids[nids++] = strdup(de->d_name);
    }
    if (d != NULL)
        closedir(d);
    if (nids > 0)
        qsort(ids, nids, sizeof(*ids), sockctl_strcmp);
    for (size_t i = 0; i < nids && rc == SOCKCTL_OK; i++) {
        struct sockctl_kept k;
        json_t *info = NULL;
        long long h;
        if (ids[i] == NULL || sockctl_kept_open(ids[i], &k, 1000) != SOCKCTL_OK)
            continue;
        if (k.gone) {
            sockctl_kept_release(&k);
            continue;
        }
        if (k.closed[0]) {
            info = json_pack("{s:s}", "closed", k.closed);
        } else {
            rc = sockctl_kept_take(c, o, &k, &h, &info, 1);
            if (rc == SOCKCTL_OK) {
                rc = sockctl_kept_give(c, o, &k, h);
                json_object_del(info, "socket");
            } else if (rc == SOCKCTL_ERROR) {
                rc = SOCKCTL_OK; /* gone: the file was removed; not listed */
            }
        }
        if (info != NULL) {
            json_object_set_new(info, "id", json_string(k.id));
            json_object_set_new(info, "parked", json_true());
            json_array_append_new(rows, info);
        }
        sockctl_kept_release(&k);
    }
    for (size_t i = 0; i < nids; i++)
        free(ids[i]);
    free(ids);
    if (rc == SOCKCTL_OK) {
        if (o->json) {
            rc = sockctl_output_new(json_pack("{s:O}", "sockets", rows));
        } else {
            size_t i;
            json_t *row;
            printf("%-32s  %-4s  %-16s  %-22s  %-22s  %10s  %10s\n", "ID", "TYPE", "STATE", "LOCAL",
                   "REMOTE", "SENT", "RECEIVED");
            json_array_foreach(rows, i, row)
            {
                sockctl_ls_row(json_string_value(json_object_get(row, "id")), row);
            }
            rc = fflush(stdout) == EOF ? SOCKCTL_IO : SOCKCTL_OK;
        }
    }
    json_decref(rows);
    json_decref(list);
    sockd_client_close(c);
    return rc;
}

/* Print the members of OBJ as "prefix.key value" lines (nested objects flattened). */
static void
sockctl_stats_print(const char *prefix, const json_t *obj)
{
    const char *key;
    json_t *val;

    json_object_foreach((json_t *)obj, key, val)
    {
        char name[128];
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
        if (json_is_object(val)) {
            sockctl_stats_print(name, val);
        } else {
            char *text = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
            printf("%-20s %s\n", name, text ? text : "?");
            free(text);
        }
    }
}

/* sockctl stats */
static int
sockctl_cmd_stats(const struct sockctl_opts *o, int argc, char **argv)
{
    if (argc > 0)
        return sockctl_bad_usage("stats takes no arguments", argv[0]);
    struct sockd_client *c = sockctl_connect(o);
    if (c == NULL)
        return SOCKCTL_IO;
    json_t *res;
    int rc = sockctl_rpc(c, o, "daemon.stats", NULL, &res, NULL, 0);
    if (rc == SOCKCTL_OK && o->json) {
        rc = sockctl_output(res);
    } else if (rc == SOCKCTL_OK) {
        sockctl_stats_print("", res);
        rc = fflush(stdout) == EOF ? SOCKCTL_IO : SOCKCTL_OK;
    }
    if (rc == SOCKCTL_OK)
        json_decref(res);
    sockd_client_close(c);
    return rc;
}

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
    static const struct {
        const char *name;
        int (*run)(const struct sockctl_opts *, int, char **);
        int takes_argv0; /* parses its options with getopt: gets argv from the verb on */
    } verbs[] = {
        {"call", sockctl_cmd_call, 0},   {"watch", sockctl_cmd_watch, 0},
        {"shell", sockctl_cmd_shell, 0}, {"cat", sockctl_cmd_cat, 1},
        {"open", sockctl_cmd_open, 1},   {"send", sockctl_cmd_send, 1},
        {"recv", sockctl_cmd_recv, 1},   {"close", sockctl_cmd_close, 1},
        {"ls", sockctl_cmd_ls, 0},       {"stats", sockctl_cmd_stats, 0},
        {"run", sockctl_cmd_run, 1},
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
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
        if (strcmp(cmd, verbs[i].name) != 0)
            continue;
        if (verbs[i].takes_argv0)
            return verbs[i].run(&o, argc - optind, argv + optind);
        return verbs[i].run(&o, argc - optind - 1, argv + optind + 1);
    }
    return sockctl_bad_usage("unknown command", cmd);
}
