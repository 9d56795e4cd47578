/*
 * sockctl call, watch and shell: JSON-RPC as it is, requests from the command line or stdin
 * and what the daemon says as JSON lines; and stats, the daemon's counters.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"

/* ------------------------------------------------------------------------ */
/* call and watch                                                           */

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
int
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
int
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
int
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
/* stats                                                                    */

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
int
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
