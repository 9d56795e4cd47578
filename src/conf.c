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

/* Set *dst from a positive integer within [lo, hi]. */
static int
conf_uint(const char *w, long long v, long long lo, long long hi, unsigned *dst)
{
    (void)w;
    if (v < lo || v > hi)
        return -1;
    *dst = (unsigned)v;
    return 0;
}

static int
conf_directive(struct conf *c, char **w, int n, int lineno, char **cause)
{
    const char *d = w[0];
    long long v;

#define NEED(k)                                                                                    \
    do {                                                                                           \
        if (n != (k) + 1)                                                                          \
            return conf_fail(cause, lineno, "%s takes %d argument%s", d, k, (k) == 1 ? "" : "s");  \
    } while (0)

    if (strcmp(d, "listen") == 0) {
        NEED(1);
        if (w[1][0] != '/')
            return conf_fail(cause, lineno, "listen needs an absolute path");
        free(c->listen);
        c->listen = strdup(w[1]);
    } else if (strcmp(d, "socket-mode") == 0) {
        char *end;
        NEED(1);
        long m = strtol(w[1], &end, 8);
        if (*end != '\0' || m < 0 || m > 0777)
            return conf_fail(cause, lineno, "socket-mode is an octal mode like 0660");
        c->socket_mode = (int)m;
    } else if (strcmp(d, "socket-group") == 0) {
        NEED(1);
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
    } else if (strcmp(d, "max-clients") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_size(w[1]), 1, 1000000, &c->max_clients) < 0)
            return conf_fail(cause, lineno, "max-clients is 1..1000000");
    } else if (strcmp(d, "max-sockets-per-client") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_size(w[1]), 1, 10000000, &c->max_sockets_per_client) < 0)
            return conf_fail(cause, lineno, "max-sockets-per-client is 1..10000000");
    } else if (strcmp(d, "max-clients-per-uid") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_size(w[1]), 1, 1000000, &c->max_clients_per_uid) < 0)
            return conf_fail(cause, lineno, "max-clients-per-uid is 1..1000000");
    } else if (strcmp(d, "max-sockets-per-uid") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_size(w[1]), 1, 10000000, &c->max_sockets_per_uid) < 0)
            return conf_fail(cause, lineno, "max-sockets-per-uid is 1..10000000");
    } else if (strcmp(d, "max-buffer-per-uid") == 0) {
        NEED(1);
        v = conf_parse_size(w[1]);
        if (v < (1LL << 20) || v > (1LL << 40))
            return conf_fail(cause, lineno, "max-buffer-per-uid is a size from 1M to 1024G");
        c->max_buffer_per_uid = (size_t)v;
    } else if (strcmp(d, "share-udp-ports") == 0) {
        NEED(1);
        if (strcmp(w[1], "yes") != 0 && strcmp(w[1], "no") != 0)
            return conf_fail(cause, lineno, "share-udp-ports is yes or no");
        c->share_udp_ports = strcmp(w[1], "yes") == 0;
    } else if (strcmp(d, "max-send-buffer") == 0) {
        NEED(1);
        v = conf_parse_size(w[1]);
        if (v < 1024 || v > (1LL << 30))
            return conf_fail(cause, lineno, "max-send-buffer is a size from 1K to 1G");
        c->max_send_buffer = (size_t)v;
    } else if (strcmp(d, "max-message") == 0) {
        NEED(1);
        v = conf_parse_size(w[1]);
        if (v < 4096 || v > (1LL << 30))
            return conf_fail(cause, lineno, "max-message is a size from 4K to 1G");
        c->max_message = (size_t)v;
    } else if (strcmp(d, "max-pending-accepts") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_size(w[1]), 1, 65535, &c->max_pending_accepts) < 0)
            return conf_fail(cause, lineno, "max-pending-accepts is 1..65535");
    } else if (strcmp(d, "accept-timeout") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_time(w[1]), 1, 86400000, &c->accept_timeout_ms) < 0)
            return conf_fail(cause, lineno, "accept-timeout is a time like 10s or 500ms");
    } else if (strcmp(d, "client-line-timeout") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_time(w[1]), 1, 86400000, &c->line_timeout_ms) < 0)
            return conf_fail(cause, lineno, "client-line-timeout is a time like 30s");
    } else if (strcmp(d, "shutdown-timeout") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_time(w[1]), 0, 600000, &c->shutdown_timeout_ms) < 0)
            return conf_fail(cause, lineno, "shutdown-timeout is a time from 0 to 10m");
    } else if (strcmp(d, "resolve-timeout") == 0) {
        NEED(1);
        if (conf_uint(w[1], conf_parse_time(w[1]), 1, 600000, &c->resolve_timeout_ms) < 0)
            return conf_fail(cause, lineno, "resolve-timeout is a time like 5s");
    } else if (strcmp(d, "resolver") == 0) {
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
    } else if (strcmp(d, "log-level") == 0) {
        NEED(1);
        if ((c->log_level = log_level_parse(w[1])) < 0)
            return conf_fail(cause, lineno, "log-level is error, warning, info or debug");
    } else if (strcmp(d, "log-flags") == 0) {
        static const char *const names[] = {"tcp", "tls", "udp", "local"};
        c->log_flags = 0;
        for (int i = 1; i < n; i++) {
            int k;
            for (k = 0; k < 4 && strcmp(w[i], names[k]) != 0; k++)
                ;
            if (k == 4)
                return conf_fail(cause, lineno, "unknown log flag '%s'", w[i]);
            c->log_flags |= 1u << k;
        }
    } else if (strcmp(d, "policy-default") == 0 || strcmp(d, "allow") == 0 ||
               strcmp(d, "deny") == 0 || strcmp(d, "rewrite") == 0) {
        char why[256];
        if (policy_parse_line(&c->policy, w, n, why, sizeof why) < 0)
            return conf_fail(cause, lineno, "%s", why);
    } else {
        return conf_fail(cause, lineno, "unknown directive '%s'", d);
    }
#undef NEED
    return 0;
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
