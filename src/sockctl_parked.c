/*
 * sockctl open, send, recv, close and ls: one-shot verbs that keep a connection between
 * invocations by parking it in the daemon (socket.give / socket.take), its current token in
 * a state file per socket.
 */
#include "config.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"

/* Bytes per socket.send. */
#define SOCKCTL_CHUNK (256 * 1024)
/* recv --line: the longest line unless N says otherwise. */
#define SOCKCTL_LINE_MAX 65536
/* Largest socket.recv length. */
#define SOCKCTL_MAX_RECV 16777216

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
int
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
int
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
int
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
int
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
int
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
