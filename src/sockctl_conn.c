/*
 * sockctl: making a connection for cat and open (URL, TLS context, socket.open and
 * socket.connect), and the options of the socket verbs cat, open, send, recv and close.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sockd/client.h>

#include "sockctl.h"

/* socket.connect timeout when --timeout is not given (open, cat). */
#define SOCKCTL_CONNECT_TIMEOUT_MS 30000

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

/* Split URL into socket.open type and socket.connect address. Returns 0, or -1 when malformed. */
int
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
int
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
int
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
