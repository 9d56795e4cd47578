/* JSON-RPC 2.0: envelope, batches, errors and the sorted method table. */
#ifndef SOCKD_RPC_H
#define SOCKD_RPC_H

#include <stddef.h>
#include <jansson.h>

struct client;

/* Param types a method declares; the envelope layer checks them before exec runs. */
enum rpc_ptype {
    RPC_P_ANY,    /* any JSON value */
    RPC_P_BOOL,   /* true/false */
    RPC_P_INT,    /* integer */
    RPC_P_HANDLE, /* integer >= 1 */
    RPC_P_STR,    /* string */
    RPC_P_ARRAY,  /* array */
    RPC_P_OBJECT, /* object */
    RPC_P_TAG,    /* any JSON value of at most RPC_TAG_MAX bytes, compactly serialised */
};

/* The largest tag a socket may carry, in bytes of compact JSON (it is echoed in every info). */
#define RPC_TAG_MAX 4096

struct rpc_param {
    const char *name;
    enum rpc_ptype type;
    int required;
};

struct sock;
struct tlsctx;

/* One request while it runs; exec fills result or the error. */
struct rpc_call {
    struct client *client;
    json_t *id;         /* borrowed; NULL for a notification */
    json_t *params;     /* borrowed; always an object, checked against the method's params */
    struct sock *sock;  /* RPC_TARGET_SOCK: the caller's socket named by "socket" */
    struct tlsctx *ctx; /* RPC_TARGET_CTX: the caller's context named by "context" */
    json_t *result;     /* set by exec (new reference); NULL means {} */
    int err_code;
    char err_msg[256];
    json_t *err_data;
    int fd_out; /* set by exec: an fd to send with the response (-1 none) */
};

typedef int (*rpc_exec_fn)(struct rpc_call *call);

/*
 * What the dispatcher resolves before exec runs, after the params are checked: a handle the
 * caller does not own fails the request with -32001, as an unknown one does.
 */
enum rpc_target {
    RPC_TARGET_NONE, /* nothing: exec reads every param itself */
    RPC_TARGET_SOCK, /* call->sock from the "socket" param */
    RPC_TARGET_CTX,  /* call->ctx from the "context" param */
};

/* What a method row says about its method beyond its params. */
enum rpc_flag {
    /* Costs a whole turn (CTL_REQS_PER_TURN request units) instead of one: it builds an OpenSSL
     * context (and may parse or make and sign a key), 1 to 3 ms, hundreds of pings' worth. */
    RPC_F_HEAVY = 1u << 0,
    /* Its "data" param may stay lifted out of the line (rpc_blob): exec takes it as bytes. */
    RPC_F_PAYLOAD = 1u << 1,
    /* Sends coalesced so far are not flushed before it: it queues more of them. */
    RPC_F_COALESCE = 1u << 2,
};

/* One row of a method table. */
struct rpc_method {
    const char *name;
    rpc_exec_fn exec;
    const struct rpc_param *params; /* terminated by a NULL name */
    enum rpc_target target;
    unsigned flags; /* enum rpc_flag bits */
};

/*
 * Handle one complete line from a client (without its newline) within budget request units (a
 * heavy method costs more than one); returns the units used. A batch that outruns its budget
 * is kept in c->batch, holding the client's notifications, and goes on at the next call, which
 * must pass the same line, left in place until c->batch is NULL again.
 */
int rpc_run_line(struct client *c, const char *line, size_t len, int budget);
/* rpc_run_line without a budget: the whole line is handled at once. */
int rpc_handle_line(struct client *c, const char *line, size_t len);
/* Release what an unfinished batch of a closed client holds. */
void rpc_batch_free(struct client *c);
/* Turn the fast path for plain single requests on or off (tests compare the two); on by default. */
void rpc_fastpath_enable(int on);
/*
 * For fuzzing and tests: 1 when the fast path would take the line and jansson reads it the same
 * way (members, method, params, the id's text), 0 when the fast path declines it, -1 when it
 * would take a line that jansson reads differently or rejects.
 */
int rpc_fastpath_check(const char *line, size_t len);
/* Lines the fast path has handled so far. */
unsigned long rpc_fastpath_hits(void);
/* The error response for an over-long line. */
void rpc_line_too_long(struct client *c);
/* Method names, sorted (new reference). */
json_t *rpc_method_names(void);

/* Errors: each returns -1 so exec can `return rpc_fail(...)`. */
int rpc_fail(struct rpc_call *call, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int rpc_fail_param(struct rpc_call *call, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int rpc_fail_errno(struct rpc_call *call, int code, const char *reason, int err, const char *what);
int rpc_fail_limit(struct rpc_call *call, const char *limit);
int rpc_fail_handle(struct rpc_call *call, const char *what);

/*
 * A large base64 "data" value of the current line, kept out of the JSON parser and already
 * decoded: when the param is such a placeholder, returns 1 with the original text span and
 * (when bytes is not NULL) the decoded bytes, valid until the line is handled; else 0.
 */
int rpc_blob(const json_t *value, const char **text, size_t *len, const unsigned char **bytes,
             size_t *nbytes);

/* Typed param getters (the types were already checked). */
long long rpc_int(const struct rpc_call *call, const char *name, long long dflt);
int rpc_bool(const struct rpc_call *call, const char *name, int dflt);
const char *rpc_str(const struct rpc_call *call, const char *name);
json_t *rpc_get(const struct rpc_call *call, const char *name);
/* An integer param within [lo, hi], or an error; *out set. */
int rpc_int_range(struct rpc_call *call, const char *name, long long lo, long long hi,
                  long long dflt, long long *out);

/* -32002 naming the socket's state and type. */
int rpc_fail_state(struct rpc_call *call, struct sock *s, const char *what);

/* Method tables of each rpc_*.c file, terminated by a NULL name. */
extern const struct rpc_method rpc_daemon_methods[];
extern const struct rpc_method rpc_socket_methods[];
extern const struct rpc_method rpc_data_methods[];
extern const struct rpc_method rpc_context_methods[];
extern const struct rpc_method rpc_handoff_methods[];

#endif
