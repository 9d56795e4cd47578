#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "fsid.h"
#include "log.h"
#include "resolve.h"
#include "policy.h"

void
conf_defaults(struct conf *c)
{
    memset(c, 0, sizeof *c);
    c->socket_mode = -1;
    c->socket_gid = (gid_t)-1;
    c->max_clients = 1024;
    c->max_sockets_per_client = 4096;
    c->max_clients_per_uid = 128;
    c->max_sockets_per_uid = 16384;
    c->max_buffer_per_uid = 256u << 20;
    c->max_control_buffer_per_uid = 256u << 20;
    c->max_tls_memory_per_uid = 256u << 20;
    c->max_send_buffer = 4u << 20;
    c->max_message = 16u << 20;
    c->max_pending_accepts = 128;
    c->accept_timeout_ms = 10000;
    c->line_timeout_ms = 30000;
    c->shutdown_timeout_ms = 2000;
    c->resolve_timeout_ms = 5000;
    c->log_level = LOG_LVL_INFO;
}

void
conf_free(struct conf *c)
{
    free(c->listen);
    free(c->socket_group);
    for (int i = 0; i < c->nresolvers; i++)
        free(c->resolvers[i]);
    c->listen = c->socket_group = NULL;
    c->nresolvers = 0;
    policy_free(c->policy);
    c->policy = NULL;
}

/* A number with an optional unit suffix; mult[] maps suffix characters to multipliers. */
static long long
conf_number(const char *w, const char *const *units, const long long *mult)
{
    char *end;
    if (!isdigit((unsigned char)*w))
        return -1;
    errno = 0;
    unsigned long long v = strtoull(w, &end, 10);
    if (errno != 0 || v > (1ULL << 40))
        return -1;
    for (int i = 0; units[i] != NULL; i++)
        if (strcmp(end, units[i]) == 0)
            return (long long)v > LLONG_MAX / mult[i] ? -1 : (long long)v * mult[i];
    return -1;
}

long long
conf_parse_size(const char *w)
{
    static const char *const u[] = {"", "K", "M", "G", "k", "m", "g", NULL};
    static const long long m[] = {1, 1 << 10, 1 << 20, 1 << 30, 1 << 10, 1 << 20, 1 << 30};
    return conf_number(w, u, m);
}

long long
conf_parse_time(const char *w)
{
    static const char *const u[] = {"ms", "s", "m", NULL};
    static const long long m[] = {1, 1000, 60000};
    return conf_number(w, u, m);
}

/* Split a line into words (comments stripped); returns the count. */
static int
conf_words(char *line, char **w, int max)
{
    int n = 0;
    char *h = strchr(line, '#');
    if (h)
        *h = '\0';
    for (char *p = strtok(line, " \t\r"); p && n < max; p = strtok(NULL, " \t\r"))
        w[n++] = p;
    return n;
}

static int
conf_fail(char **cause, int lineno, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (asprintf(cause, "line %d: %s", lineno, msg) < 0)
        *cause = NULL;
    return -1;
}

/* socket-mode: an octal file mode. */
static int
conf_socket_mode(struct conf *c, char **w, int n, int lineno, char **cause)
{
    char *end;
    (void)n;
    long m = strtol(w[1], &end, 8);
    if (*end != '\0' || m < 0 || m > 0777)
        return conf_fail(cause, lineno, "socket-mode is an octal mode like 0660");
    c->socket_mode = (int)m;
    return 0;
}

/* socket-group: a group name or number, resolved now. */
static int
conf_socket_group(struct conf *c, char **w, int n, int lineno, char **cause)
{
    (void)n;
    struct group *g = getgrnam(w[1]);
    char *end;
    long gid = strtol(w[1], &end, 10);
    if (g != NULL)
        c->socket_gid = g->gr_gid;
    else if (*end == '\0' && gid >= 0)
        c->socket_gid = (gid_t)gid;
    else
        return conf_fail(cause, lineno, "unknown group '%s'", w[1]);
    free(c->socket_group);
    c->socket_group = strdup(w[1]);
    return 0;
}

/* resolver: 1 to CONF_MAX_RESOLVERS name servers, replacing an earlier list. */
static int
conf_resolver(struct conf *c, char **w, int n, int lineno, char **cause)
{
    if (n < 2 || n - 1 > CONF_MAX_RESOLVERS)
        return conf_fail(cause, lineno, "resolver takes 1 to %d addresses", CONF_MAX_RESOLVERS);
    for (int i = 0; i < c->nresolvers; i++)
        free(c->resolvers[i]);
    c->nresolvers = 0;
    for (int i = 1; i < n; i++) {
        const char *why;
        if (resolve_check_server(w[i], &why) < 0)
            return conf_fail(cause, lineno, "resolver '%s': %s", w[i], why);
        c->resolvers[c->nresolvers++] = strdup(w[i]);
    }
    return 0;
}

/* log-level: one of the names log.c knows. */
static int
conf_log_level(struct conf *c, char **w, int n, int lineno, char **cause)
{
    (void)n;
    if ((c->log_level = log_level_parse(w[1])) < 0)
        return conf_fail(cause, lineno, "log-level is error, warning, info or debug");
    return 0;
}

/* policy-default, allow, deny, rewrite: a line of the policy, parsed by policy.c. */
static int
conf_policy(struct conf *c, char **w, int n, int lineno, char **cause)
{
    char why[256];
    if (policy_parse_line(&c->policy, w, n, why, sizeof why) < 0)
        return conf_fail(cause, lineno, "%s", why);
    return 0;
}

/* The log-flags words; word k is bit 1 << k (enum conf_log_flag). */
static const char *const conf_log_flag_names[] = {"tcp", "tls", "udp", "local", NULL};

/* How a directive's arguments are read. */
enum conf_kind {
    CONF_COUNT,   /* a number with an optional K/M/G, into an unsigned within [lo, hi] */
    CONF_SIZE,    /* a size (conf_parse_size) into a size_t within [lo, hi] */
    CONF_TIME,    /* a time (conf_parse_time) into unsigned milliseconds within [lo, hi] */
    CONF_PATH,    /* an absolute path, into a malloc'ed char * */
    CONF_YESNO,   /* yes or no, into an int 1 or 0 */
    CONF_FLAGS,   /* any number of words of a list, into unsigned bits */
    CONF_HANDLER, /* a function of its own */
};

/* Any number of arguments: the kind or the handler checks them. */
#define CONF_ARGS_ANY (-1)

/* One directive of sockd.conf(5): its name, how it is read and where its value goes. */
struct conf_row {
    const char *name;
    enum conf_kind kind;
    size_t at;    /* offsetof the field in struct conf */
    long long lo; /* CONF_COUNT/SIZE/TIME: the range, inclusive */
    long long hi;
    int args;                 /* the number of arguments, or CONF_ARGS_ANY */
    const char *hint;         /* "is ..." when out of range; NULL = said from lo and hi */
    const char *const *words; /* CONF_FLAGS: the words, NULL-terminated */
    const char *word;         /* CONF_FLAGS: what one word is called in an error */
    int (*handle)(struct conf *c, char **w, int n, int lineno, char **cause); /* CONF_HANDLER */
};

/* offsetof a field of struct conf, which must be of the given type. */
#define ROW_AT(field, type)                                                                        \
    (offsetof(struct conf, field) + 0 * sizeof(char[_Generic(((struct conf *)0)->field, type : 1)]))
#define ROW_COUNT(n, f, min, max)                                                                  \
    {                                                                                              \
        .name = n, .kind = CONF_COUNT, .at = ROW_AT(f, unsigned), .lo = min, .hi = max, .args = 1  \
    }
#define ROW_SIZE(n, f, min, max)                                                                   \
    {                                                                                              \
        .name = n, .kind = CONF_SIZE, .at = ROW_AT(f, size_t), .lo = min, .hi = max, .args = 1     \
    }
#define ROW_TIME(n, f, min, max, h)                                                                \
    {                                                                                              \
        .name = n, .kind = CONF_TIME, .at = ROW_AT(f, unsigned), .lo = min, .hi = max, .args = 1,  \
        .hint = h                                                                                  \
    }
#define ROW_PATH(n, f)                                                                             \
    {                                                                                              \
        .name = n, .kind = CONF_PATH, .at = ROW_AT(f, char *), .args = 1                           \
    }
#define ROW_YESNO(n, f)                                                                            \
    {                                                                                              \
        .name = n, .kind = CONF_YESNO, .at = ROW_AT(f, int), .args = 1                             \
    }
#define ROW_FLAGS(n, f, list, what)                                                                \
    {                                                                                              \
        .name = n, .kind = CONF_FLAGS, .at = ROW_AT(f, unsigned), .args = CONF_ARGS_ANY,           \
        .words = list, .word = what                                                                \
    }
#define ROW_HANDLER(n, nargs, fn)                                                                  \
    {                                                                                              \
        .name = n, .kind = CONF_HANDLER, .args = nargs, .handle = fn                               \
    }

/* Every directive, in the order of sockd.conf(5). */
static const struct conf_row conf_rows[] = {
    ROW_PATH("listen", listen),
    ROW_HANDLER("socket-mode", 1, conf_socket_mode),
    ROW_HANDLER("socket-group", 1, conf_socket_group),
    ROW_COUNT("max-clients", max_clients, 1, 1000000),
    ROW_COUNT("max-sockets-per-client", max_sockets_per_client, 1, 10000000),
    ROW_COUNT("max-clients-per-uid", max_clients_per_uid, 1, 1000000),
    ROW_COUNT("max-sockets-per-uid", max_sockets_per_uid, 1, 10000000),
    ROW_SIZE("max-buffer-per-uid", max_buffer_per_uid, 1LL << 20, 1LL << 40),
    ROW_SIZE("max-control-buffer-per-uid", max_control_buffer_per_uid, 1LL << 20, 1LL << 40),
    ROW_SIZE("max-tls-memory-per-uid", max_tls_memory_per_uid, 1LL << 20, 1LL << 40),
    ROW_SIZE("max-send-buffer", max_send_buffer, 1LL << 10, 1LL << 30),
    ROW_SIZE("max-message", max_message, 4LL << 10, 1LL << 30),
    ROW_COUNT("max-pending-accepts", max_pending_accepts, 1, 65535),
    ROW_TIME("accept-timeout", accept_timeout_ms, 1, 86400000, "a time like 10s or 500ms"),
    ROW_TIME("client-line-timeout", line_timeout_ms, 1, 86400000, "a time like 30s"),
    ROW_TIME("shutdown-timeout", shutdown_timeout_ms, 0, 600000, NULL),
    ROW_HANDLER("resolver", CONF_ARGS_ANY, conf_resolver),
    ROW_TIME("resolve-timeout", resolve_timeout_ms, 1, 600000, "a time like 5s"),
    ROW_HANDLER("log-level", 1, conf_log_level),
    ROW_FLAGS("log-flags", log_flags, conf_log_flag_names, "log flag"),
    ROW_YESNO("share-udp-ports", share_udp_ports),
    ROW_HANDLER("policy-default", CONF_ARGS_ANY, conf_policy),
    ROW_HANDLER("allow", CONF_ARGS_ANY, conf_policy),
    ROW_HANDLER("deny", CONF_ARGS_ANY, conf_policy),
    ROW_HANDLER("rewrite", CONF_ARGS_ANY, conf_policy),
};

const char *
conf_directive_name(size_t i)
{
    return i < sizeof conf_rows / sizeof conf_rows[0] ? conf_rows[i].name : NULL;
}

/* v as the shortest of the units in units[] (largest first) that states it exactly. */
static void
conf_unit_text(char *buf, size_t len, long long v, const char *const *units, const long long *mult)
{
    int i = 0;
    while (v != 0 && units[i + 1] != NULL && v % mult[i] != 0)
        i++;
    snprintf(buf, len, "%lld%s", v / mult[i], v == 0 ? "" : units[i]);
}

/* The words "is ..." of a row's range error: "1..65535", "a size from 1K to 1G". */
static void
conf_range_text(const struct conf_row *r, char *buf, size_t len)
{
    static const char *const size_u[] = {"G", "M", "K", "", NULL};
    static const long long size_m[] = {1LL << 30, 1LL << 20, 1LL << 10, 1};
    static const char *const time_u[] = {"m", "s", "ms", NULL};
    static const long long time_m[] = {60000, 1000, 1};
    char lo[32], hi[32];
    if (r->hint != NULL) {
        snprintf(buf, len, "%s", r->hint);
    } else if (r->kind == CONF_COUNT) {
        snprintf(buf, len, "%lld..%lld", r->lo, r->hi);
    } else {
        const char *const *u = r->kind == CONF_SIZE ? size_u : time_u;
        const long long *m = r->kind == CONF_SIZE ? size_m : time_m;
        conf_unit_text(lo, sizeof lo, r->lo, u, m);
        conf_unit_text(hi, sizeof hi, r->hi, u, m);
        snprintf(buf, len, "a %s from %s to %s", r->kind == CONF_SIZE ? "size" : "time", lo, hi);
    }
}

/* Read the arguments of line w[0..n) into c as row r says. */
static int
conf_apply(const struct conf_row *r, struct conf *c, char **w, int n, int lineno, char **cause)
{
    char *field = (char *)c + r->at;
    long long v;
    char range[96];

    if (r->args != CONF_ARGS_ANY && n != r->args + 1)
        return conf_fail(cause, lineno, "%s takes %d argument%s", r->name, r->args,
                         r->args == 1 ? "" : "s");
    switch (r->kind) {
    case CONF_COUNT:
    case CONF_SIZE:
    case CONF_TIME:
        v = r->kind == CONF_TIME ? conf_parse_time(w[1]) : conf_parse_size(w[1]);
        if (v < r->lo || v > r->hi) {
            conf_range_text(r, range, sizeof range);
            return conf_fail(cause, lineno, "%s is %s", r->name, range);
        }
        if (r->kind == CONF_SIZE)
            *(size_t *)field = (size_t)v;
        else
            *(unsigned *)field = (unsigned)v;
        return 0;
    case CONF_PATH:
        if (w[1][0] != '/')
            return conf_fail(cause, lineno, "%s needs an absolute path", r->name);
        free(*(char **)field);
        *(char **)field = strdup(w[1]);
        return 0;
    case CONF_YESNO:
        if (strcmp(w[1], "yes") != 0 && strcmp(w[1], "no") != 0)
            return conf_fail(cause, lineno, "%s is yes or no", r->name);
        *(int *)field = strcmp(w[1], "yes") == 0;
        return 0;
    case CONF_FLAGS: {
        unsigned bits = 0;
        for (int i = 1; i < n; i++) {
            int k;
            for (k = 0; r->words[k] != NULL && strcmp(w[i], r->words[k]) != 0; k++)
                ;
            if (r->words[k] == NULL)
                return conf_fail(cause, lineno, "unknown %s '%s'", r->word, w[i]);
            bits |= 1u << k;
        }
        *(unsigned *)field = bits;
        return 0;
    }
    case CONF_HANDLER:
        return r->handle(c, w, n, lineno, cause);
    }
    return conf_fail(cause, lineno, "%s: no reader", r->name);
}

/* Read one line through the row its first word names. */
static int
conf_directive(struct conf *c, char **w, int n, int lineno, char **cause)
{
    for (size_t i = 0; i < sizeof conf_rows / sizeof conf_rows[0]; i++)
        if (strcmp(w[0], conf_rows[i].name) == 0)
            return conf_apply(&conf_rows[i], c, w, n, lineno, cause);
    return conf_fail(cause, lineno, "unknown directive '%s'", w[0]);
}

int
conf_parse(const char *text, size_t len, struct conf *c, char **cause)
{
    int lineno = 0;
    size_t i = 0;

    *cause = NULL;
    while (i < len) {
        size_t j = i;
        char line[4096], *w[64];
        while (j < len && text[j] != '\n')
            j++;
        lineno++;
        size_t n0 = j - i;
        if (n0 >= sizeof line)
            return conf_fail(cause, lineno, "line too long");
        memcpy(line, text + i, n0);
        line[n0] = '\0';
        i = j + 1;
        if (strlen(line) != n0)
            return conf_fail(cause, lineno, "NUL byte in line");
        int n = conf_words(line, w, 64);
        if (n == 0)
            continue;
        if (conf_directive(c, w, n, lineno, cause) < 0)
            return -1;
    }
    return 0;
}

int
conf_load(const char *path, struct conf *c, char **cause)
{
    char *text, *inner = NULL;
    size_t len = 0;

    *cause = NULL;
    /* a regular file only: a FIFO named as the config must not hang a reload on the loop */
    if ((text = fsid_read_file(NULL, path, FSID_FILE_MAX, &len)) == NULL) {
        if (asprintf(cause, "%s: %s", path, fsid_read_error(errno)) < 0)
            *cause = NULL;
        return -1;
    }
    int r = conf_parse(text, len, c, &inner);
    free(text);
    if (r < 0) {
        if (asprintf(cause, "%s: %s", path, inner ? inner : "error") < 0)
            *cause = NULL;
        free(inner);
    }
    return r;
}
