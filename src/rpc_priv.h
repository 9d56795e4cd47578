/*
 * Line handling, private to the files that share it: rpc.c (envelope, method table, batches and
 * errors), rpc_fast.c (the fast path for a plain single request) and rpc_blob.c (large base64
 * payloads lifted out of the line before it is parsed).
 */
#ifndef SOCKD_RPC_PRIV_H
#define SOCKD_RPC_PRIV_H

#include <stddef.h>

#include <jansson.h>

#include "rpc.h"

/* rpc.c */
/* The method row of that name; NULL when there is none (or no name). */
const struct rpc_method *rpc_method_find(const char *name);
/* Sends coalesced so far reach the kernel before a request of method m (NULL: none, unknown,
 * or a batch) sees a socket, unless m is RPC_F_COALESCE (sock_send.c), and their socket.sent
 * before its response when called before ctl_hold. */
void rpc_flush_sends(const struct rpc_method *m);
/* A JSON-RPC error response for id (NULL: null), with data when given (new reference). */
json_t *rpc_error_msg(json_t *id, int code, const char *msg, json_t *data);
/*
 * Run one request whose envelope is valid: the method row m (rpc_method_find; NULL: no method
 * of that name), check params (NULL: none), resolve the method's target and exec. The fd an
 * exec hands out joins fds when there is a response to carry it. Returns the request units it
 * cost.
 */
int rpc_exec(struct rpc_call *call, struct client *c, json_t *id, const char *method,
             const struct rpc_method *m, json_t *params, int *fds, int *nfds);
/*
 * In place of a response that would take the output queue past its cap: a -32003 error for id
 * (null for a batch). A client whose queue cannot take even that does not read: it is cut off.
 */
void rpc_too_large(struct client *c, json_t *id);
/* Queue a response (or, when it does not fit, rpc_too_large) for the request id. */
void rpc_respond(struct client *c, json_t *id, json_t *resp, const int *fds, int nfds);

/* rpc_fast.c */
/* Handle the line on the fast path; its cost when done, -1 when declined (nothing happened). */
int rpc_fast(struct client *c, const char *line, size_t len);

/* rpc_blob.c */
/* A "data" value at least this long is lifted out of the line before parsing. */
#define RPC_BLOB_MIN 1024
/* Make the placeholder prefix of this daemon run, once. */
void rpc_blob_init(void);
/* Forget the values lifted from the line just handled. */
void rpc_blob_reset(void);
/*
 * Scan a line outside strings for `"data" : "<long base64>"`; return a malloc'ed copy with each
 * such value replaced by a placeholder (NULL when there is none). Strings are skipped exactly as
 * JSON defines them, so a "data" inside another string is never taken for a key.
 */
char *rpc_blob_scan(const char *line, size_t len, size_t *outlen);
/* Put original text back for every placeholder in v (keep marks the one value left as is). */
void rpc_blob_restore(json_t *v, const json_t *keep);
/*
 * Before a request of method m (NULL: none) runs: put the lifted values of v back, but for the
 * "data" in params of an RPC_F_PAYLOAD method, which takes it as decoded bytes.
 */
void rpc_blob_put_back(json_t *v, const struct rpc_method *m, json_t *params);

#endif
