/*
 * sockctl cat: netcat through the daemon, stdin to the socket and what it receives to stdout
 * (socket.pipe for streams, socket.send and socket.received for udp).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"

/* cat udp://: how long to wait for answers after stdin ended (--wait). */
#define SOCKCTL_UDP_WAIT_MS 1000

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
int
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
