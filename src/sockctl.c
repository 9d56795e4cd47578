/*
 * sockctl: call sockd methods and watch its notifications from the shell.
 *
 * Every line it prints is one compact JSON value, flushed at once, so that
 * scripts can read it through a pipe.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <jansson.h>
#include <sockd/client.h>

/* Exit statuses. */
enum sockctl_exit {
    SOCKCTL_OK = 0,    /* success */
    SOCKCTL_ERROR = 1, /* the daemon answered with an error */
    SOCKCTL_USAGE = 2, /* bad command line or PARAMS-JSON */
    SOCKCTL_IO = 3,    /* cannot reach the daemon, I/O error, timeout */
};

/* Response wait when -t is not given. */
#define SOCKCTL_DEFAULT_TIMEOUT_MS 30000

/* The global options. */
struct sockctl_opts {
    const char *path; /* -s, or NULL to resolve as the daemon does */
    int json;         /* --json: print {"result":...} / {"error":...} envelopes */
    int timeout_ms;   /* -t: wait for each response, -1 forever */
};

static void
sockctl_usage(FILE *f)
{
    fputs("Usage: sockctl [-s PATH] [--json] [-t TIMEOUT_MS] call METHOD [PARAMS-JSON]\n"
          "       sockctl [-s PATH] [--json] [-t TIMEOUT_MS] watch [--count N] [--timeout MS]\n"
          "               [METHOD PARAMS-JSON]...\n"
          "       sockctl -h | -V\n"
          "\n"
          "Talk to the sockd daemon over its control socket (JSON-RPC 2.0, one message a line).\n"
          "\n"
          "Options:\n"
          "  -s, --socket PATH  the control socket; default $SOCKD_SOCKET, else\n"
          "                     /run/sockd/sockd.sock for root, else\n"
          "                     $XDG_RUNTIME_DIR/sockd.sock, else /tmp/sockd-$UID.sock\n"
          "  -t TIMEOUT_MS      wait at most this long for each response (default 30000;\n"
          "                     -1 waits forever)\n"
          "      --json         print every response whole, as {\"result\":...} or\n"
          "                     {\"error\":...} on stdout (error responses still go to\n"
          "                     stderr as well)\n"
          "  -h, --help         print this help and exit\n"
          "  -V, --version      print the version and exit\n"
          "\n"
          "call METHOD [PARAMS-JSON]\n"
          "  Call METHOD with PARAMS-JSON (a JSON object; \"-\" reads it from stdin;\n"
          "  omitted means {}) and print the result as one line of compact JSON.\n"
          "  An error response prints the error object on stderr.\n"
          "\n"
          "watch [--count N] [--timeout MS] [METHOD PARAMS-JSON]...\n"
          "  Make the given calls in order on one connection, printing each result\n"
          "  (an error response stops it with status 1), then print every notification\n"
          "  as one line of JSON (the whole message) until N were printed, or MS\n"
          "  milliseconds pass without one, or the daemon closes the connection.\n"
          "  Notifications that arrive during the calls are printed after them.\n"
          "\n"
          "Exit status:\n"
          "  0  success; for watch also: MS passed without a notification, or the\n"
          "     daemon closed the connection and --count was not given\n"
          "  1  the daemon answered with an error\n"
          "  2  usage error (options, arguments, PARAMS-JSON)\n"
          "  3  cannot reach the daemon, I/O error or timeout; for watch also: the\n"
          "     daemon closed the connection before --count notifications came\n"
          "\n"
          "Examples:\n"
          "  sockctl call daemon.ping\n"
          "  sockctl call socket.open '{\"type\":\"tcp\"}'\n"
          "  sockctl watch --count 2 --timeout 5000 socket.open '{\"type\":\"tcp\"}'\n",
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

/* Parse a decimal integer in [min, INT_MAX] into *out. Returns 0, or -1 when malformed. */
static int
sockctl_parse_int(const char *text, int min, int *out)
{
    char *end;

    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > INT_MAX)
        return -1;
    *out = (int)v;
    return 0;
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

/* Print a response's result or error as the options ask. Takes both references. */
static int
sockctl_report(const struct sockctl_opts *o, json_t *result, json_t *error)
{
    int rc = SOCKCTL_OK;

    if (o->json) {
        json_t *env = result ? json_pack("{s:o}", "result", json_incref(result))
                             : json_pack("{s:o}", "error", json_incref(error));
        rc = env ? sockctl_output(env) : SOCKCTL_IO;
        json_decref(env);
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

    if (rc < 0) {
        if (errno == ETIMEDOUT)
            fprintf(stderr, "sockctl: %s: no response within %d ms\n", method, o->timeout_ms);
        else if (errno == EPIPE)
            fprintf(stderr, "sockctl: %s: the daemon closed the connection\n", method);
        else
            fprintf(stderr, "sockctl: %s: %s\n", method, strerror(errno));
        return SOCKCTL_IO;
    }
    return sockctl_report(o, result, error);
}

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
                sockctl_parse_int(argv[i + 1], 0, is_count ? &count : &idle_ms) < 0) {
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
            if (errno == ETIMEDOUT)
                break;
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

    while ((opt = getopt_long(argc, argv, "+s:t:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            o.path = optarg;
            break;
        case 't':
            if (sockctl_parse_int(optarg, -1, &o.timeout_ms) < 0)
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
        return sockctl_bad_usage("no command given (call or watch)", NULL);
    const char *cmd = argv[optind++];
    if (strcmp(cmd, "call") == 0)
        return sockctl_cmd_call(&o, argc - optind, argv + optind);
    if (strcmp(cmd, "watch") == 0)
        return sockctl_cmd_watch(&o, argc - optind, argv + optind);
    return sockctl_bad_usage("unknown command", cmd);
}
