/* The configuration file (sockd.conf(5)): parsed whole into a struct conf, or refused. */
#ifndef SOCKD_CONF_H
#define SOCKD_CONF_H

#include <stddef.h>
#include <sys/types.h>

#define CONF_MAX_RESOLVERS 8

struct policy;

struct conf {
    char *listen;       /* control socket path, NULL = resolve by the usual order */
    int socket_mode;    /* file mode of the control socket; -1 = 0600 */
    char *socket_group; /* group name or number for the control socket, NULL = none */
    gid_t socket_gid;   /* resolved at load time */
    unsigned max_clients;
    unsigned max_sockets_per_client;
    unsigned max_clients_per_uid;      /* control connections of one uid */
    unsigned max_sockets_per_uid;      /* sockets judged as one uid, given-away ones included */
    size_t max_buffer_per_uid;         /* bytes queued in the buffers of one uid's sockets */
    size_t max_control_buffer_per_uid; /* bytes queued in one uid's control connections */
    size_t max_tls_memory_per_uid;     /* what one uid's TLS contexts count as (tlsctx_charge) */
    int share_udp_ports;               /* share-udp-ports: udp/dtls binds may share a port */
    size_t max_send_buffer;
    size_t max_message;
    unsigned max_pending_accepts;
    unsigned accept_timeout_ms;
    unsigned shutdown_timeout_ms; /* shutdown-timeout: how long a stopping daemon flushes */
    unsigned line_timeout_ms;     /* client-line-timeout: a control line stalled this long drops the
                                     client */
    char *resolvers[CONF_MAX_RESOLVERS]; /* "ADDR[:PORT]" as written */
    int nresolvers;
    unsigned resolve_timeout_ms;
    int log_level;         /* log.h levels */
    unsigned log_flags;    /* CONF_LOG_* bits */
    struct policy *policy; /* allow/deny/rewrite/policy-default lines; NULL = none, allow all */
};

/* log-flags words. */
enum conf_log_flag {
    CONF_LOG_TCP = 1 << 0,   /* tcp socket detail */
    CONF_LOG_TLS = 1 << 1,   /* tls/dtls detail */
    CONF_LOG_UDP = 1 << 2,   /* udp detail */
    CONF_LOG_LOCAL = 1 << 3, /* unix socket detail */
};

/* Fill with the built-in defaults (the values etc/sockd.conf documents). */
void conf_defaults(struct conf *c);
/*
 * Parse the text of a config file into c (which must hold defaults). Returns 0, or -1 with
 * *cause a malloc'ed "line N: why" (caller frees); on failure c is left for conf_free.
 */
int conf_parse(const char *text, size_t len, struct conf *c, char **cause);
/* Read and parse a file; as conf_parse, with the file name in the cause. */
int conf_load(const char *path, struct conf *c, char **cause);
/* Release what conf_parse allocated. */
void conf_free(struct conf *c);
/* The name of directive i of the parser's table, or NULL past its end. */
const char *conf_directive_name(size_t i);

/* "16M" -> bytes; -1 on error. */
long long conf_parse_size(const char *word);
/* "10s" -> milliseconds; -1 on error. */
long long conf_parse_time(const char *word);

#endif
