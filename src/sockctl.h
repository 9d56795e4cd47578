/*
 * sockctl, the sockd command-line client (sockctl.1): what its files share. sockctl.c holds
 * main, the verb table and the helpers below; sockctl_conn.c connecting and the socket verbs'
 * options; sockctl_call.c call, watch, shell and stats; sockctl_cat.c cat; sockctl_parked.c
 * open, send, recv, close and ls; sockctl_run.c run.
 */
#ifndef SOCKCTL_H
#define SOCKCTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

struct sockd_client; /* a connection to the daemon (sockd/client.h) */

/* sockctl's global options (main in sockctl.c parses them), given to every verb. */
struct sockctl_opts {
    const char *path; /* -s, or NULL to resolve as the daemon does */
    int json;         /* --json: machine-readable output */
    int timeout_ms;   /* -t: wait for each response, -1 forever */
};

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
/* How long a parked socket waits for the next sockctl (--keep). */
#define SOCKCTL_DEFAULT_KEEP_MS 600000
/* Bytes handed to socket.send and not yet confirmed by socket.sent, at most. */
#define SOCKCTL_WINDOW (1024 * 1024)
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

/* Small helpers (sockctl.c). */
int sockctl_bad_usage(const char *what, const char *arg);
int sockctl_parse_int(const char *text, long min, long max, int *out);
int64_t sockctl_deadline(int ms);
int sockctl_left(int64_t deadline);
int sockctl_buf_add(struct sockctl_buf *b, const void *p, size_t n);
void sockctl_buf_consume(struct sockctl_buf *b, size_t n);
int sockctl_stdout(const void *p, size_t n);
int sockctl_print(FILE *f, const json_t *v);
int sockctl_output(const json_t *v);
int sockctl_output_new(json_t *v);

/* Talking to the daemon (sockctl.c). */
struct sockd_client *sockctl_connect(const struct sockctl_opts *o);
int sockctl_no_response(const struct sockctl_opts *o, const char *method);
void sockctl_say_error(const char *what, const json_t *error);
int sockctl_rpc(struct sockd_client *c, const struct sockctl_opts *o, const char *method,
                json_t *params, json_t **result, int *code, int quiet_code);
long long sockctl_handle(const json_t *obj, const char *key);
json_t *sockctl_event(struct sockd_client *c, long long s, int64_t deadline, int *rc);
int sockctl_is(const json_t *ev, const char *method);
const char *sockctl_reason(const json_t *params);
int sockctl_closed_status(const json_t *params);
void sockctl_say_closed(const char *what, const json_t *params);
json_t *sockctl_wait_closed(struct sockd_client *c, long long s, int ms);

/* Connecting, and the options of the socket verbs (sockctl_conn.c). */
int sockctl_url_parse(const char *url, struct sockctl_url *u);
int sockctl_open_connect(struct sockd_client *c, const struct sockctl_opts *o,
                         const struct sockctl_url *u, const char *url,
                         const struct sockctl_connopts *co, long long *sock, json_t **connected);
int sockctl_verb_options(const char *verb, int argc, char **argv, const char *allowed,
                         struct sockctl_verbopts *v, int *first);

/* The verbs: argv from the verb on, or after it, as their row in the verb table says (sockctl.c);
 * each returns an exit status. */
int sockctl_cmd_call(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_watch(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_shell(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_stats(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_cat(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_open(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_send(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_recv(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_close(const struct sockctl_opts *o, int argc, char **argv);
int sockctl_cmd_ls(const struct sockctl_opts *o, int argc, char **argv);

#endif
