#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "buf.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "nbguard.h"
#include "rpc.h"
#include "rpc_priv.h"
#include "sock.h"
#include "tls.h"

static const struct rpc_method *rpc_table[64];
static size_t rpc_count;

static int
rpc_cmp(const void *a, const void *b)
{
    return strcmp((*(const struct rpc_method *const *)a)->name,
                  (*(const struct rpc_method *const *)b)->name);
}

/* Build the sorted table from every module's rows, once. */
static void
rpc_table_init(void)
{
    static const struct rpc_method *const groups[] = {rpc_daemon_methods, rpc_socket_methods,
                                                      rpc_data_methods, rpc_context_methods,
                                                      rpc_handoff_methods};
    if (rpc_count > 0)
        return;
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (const struct rpc_method *m = groups[g]; m->name != NULL; m++)
            if (rpc_count < sizeof rpc_table / sizeof rpc_table[0])
                rpc_table[rpc_count++] = m;
    qsort(rpc_table, rpc_count, sizeof rpc_table[0], rpc_cmp);
}

const struct rpc_method *
rpc_method_find(const char *name)
{
    struct rpc_method key = {.name = name};
    const struct rpc_method *kp = &key, *const * hit;
    if (name == NULL)
        return NULL;
    rpc_table_init();
    hit = bsearch(&kp, rpc_table, rpc_count, sizeof rpc_table[0], rpc_cmp);
    return hit ? *hit : NULL;
}

json_t *
rpc_method_names(void)
{
    json_t *a = json_array();
    rpc_table_init();
    for (size_t i = 0; i < rpc_count; i++)
        json_array_append_new(a, json_string(rpc_table[i]->name));
    return a;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 when none starts there. */
static size_t
rpc_utf8_seq(const unsigned char *p, size_t n)
{
    unsigned char c = p[0], lo = 0x80, hi = 0xbf;
    size_t len;
    if (c < 0x80)
        return 1;
    if (c < 0xc2 || c > 0xf4)
        return 0;
    len = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (c == 0xe0)
        lo = 0xa0; /* overlong */
    else if (c == 0xed)
        hi = 0x9f; /* surrogates */
    else if (c == 0xf0)
        lo = 0x90; /* overlong */
    else if (c == 0xf4)
        hi = 0x8f; /* past U+10FFFF */
    if (len > n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    return len;
}

/* Drop, in place, the bytes of s that are not valid UTF-8 (names cut by a length limit). */
static void
rpc_utf8_fix(char *s)
{
    size_t n = strlen(s), r = 0, w = 0;
    while (r < n) {
        size_t k = rpc_utf8_seq((const unsigned char *)s + r, n - r);
        if (k == 0) {
            r++;
            continue;
        }
        memmove(s + w, s + r, k);
        w += k;
        r += k;
    }
    s[w] = '\0';
}

/* Longest name that error data echoes, in bytes (cut back to a character boundary). */
#define RPC_NAME_ECHO 128

static void
rpc_set_error(struct rpc_call *call, int code, const char *fmt, va_list ap)
{
    call->err_code = code;
    vsnprintf(call->err_msg, sizeof call->err_msg, fmt, ap);
    rpc_utf8_fix(call->err_msg); /* a %s cut by the size, or a %.Ns, may end inside a character */
    if (call->err_data == NULL)
        call->err_data = json_object();
}

int
rpc_fail(struct rpc_call *call, int code, const char *reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rpc_set_error(call, code, fmt, ap);
    va_end(ap);
    if (reason != NULL)
        json_object_set_new(call->err_data, "reason", json_string(reason));
    return -1;
}

int
rpc_fail_param(struct rpc_call *call, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    rpc_set_error(call, SOCKD_E_INVALID_PARAMS, fmt, ap);
    va_end(ap);
    size_t n = strlen(param);
    if (n > RPC_NAME_ECHO) /* a client's unknown name, valid UTF-8: cut between characters */
        for (n = RPC_NAME_ECHO; (param[n] & 0xc0) == 0x80; n--)
            ;
    json_object_set_new(call->err_data, "param", json_stringn(param, n));
    return -1;
}

int
rpc_fail_errno(struct rpc_call *call, int code, const char *reason, int err, const char *what)
{
    rpc_fail(call, code, reason, "%s: %s", what, strerror(err));
    json_object_set_new(call->err_data, "errno", json_integer(err));
    json_object_set_new(call->err_data, "detail", json_string(strerror(err)));
    return -1;
}

int
rpc_fail_limit(struct rpc_call *call, const char *limit)
{
    rpc_fail(call, SOCKD_E_LIMIT, NULL, "limit reached: %s", limit);
    json_object_set_new(call->err_data, "limit", json_string(limit));
    return -1;
}

int
rpc_fail_handle(struct rpc_call *call, const char *what)
{
    return rpc_fail(call, SOCKD_E_UNKNOWN_HANDLE, NULL, "unknown %s", what);
}

json_t *
rpc_get(const struct rpc_call *call, const char *name)
{
    return json_object_get(call->params, name);
}

long long
rpc_int(const struct rpc_call *call, const char *name, long long dflt)
{
    json_t *v = rpc_get(call, name);
    return v ? json_integer_value(v) : dflt;
}

int
rpc_bool(const struct rpc_call *call, const char *name, int dflt)
{
    json_t *v = rpc_get(call, name);
    return v ? json_is_true(v) : dflt;
}

const char *
rpc_str(const struct rpc_call *call, const char *name)
{
    return json_string_value(rpc_get(call, name));
}

int
rpc_int_range(struct rpc_call *call, const char *name, long long lo, long long hi, long long dflt,
              long long *out)
{
    json_t *v = rpc_get(call, name);
    *out = v ? json_integer_value(v) : dflt;
    if (v != NULL && (*out < lo || *out > hi))
        return rpc_fail_param(call, name, "%s must be %lld..%lld", name, lo, hi);
    return 0;
}

static int
rpc_count_cb(const char *p, size_t n, void *arg)
{
    size_t *left = arg;
    (void)p;
    if (n > *left)
        return -1;
    *left -= n;
    return 0;
}

/* Is v at most RPC_TAG_MAX bytes of compact JSON? Serialising stops as soon as it is not. */
static int
rpc_tag_ok(json_t *v)
{
    size_t left = RPC_TAG_MAX;
    return json_dump_callback(v, rpc_count_cb, &left, JSON_COMPACT | JSON_ENCODE_ANY) == 0;
}

static int
rpc_type_ok(json_t *v, enum rpc_ptype t)
{
    switch (t) {
    case RPC_P_ANY:
        return 1;
    case RPC_P_BOOL:
        return json_is_boolean(v);
    case RPC_P_INT:
        return json_is_integer(v);
    case RPC_P_HANDLE:
        return json_is_integer(v) && json_integer_value(v) >= 1;
    case RPC_P_STR:
        return json_is_string(v);
    case RPC_P_ARRAY:
        return json_is_array(v);
    case RPC_P_OBJECT:
        return json_is_object(v);
    case RPC_P_TAG:
        return rpc_tag_ok(v);
    }
    return 0;
}

static const char *const rpc_type_words[] = {
    "any value", "a boolean", "an integer", "a positive integer",
    "a string",  "an array",  "an object",  "a JSON value of at most 4096 bytes (compact)"};

/* Check params against the method's declaration: unknown names, types, required ones. */
static int
rpc_check_params(struct rpc_call *call, const struct rpc_method *m)
{
    const char *key;
    json_t *v;

    json_object_foreach(call->params, key, v)
    {
        const struct rpc_param *p;
        for (p = m->params; p->name != NULL && strcmp(p->name, key) != 0; p++)
            ;
        if (p->name == NULL)
            return rpc_fail_param(call, key, "unknown param '%s'", key);
        if (!rpc_type_ok(v, p->type))
            return rpc_fail_param(call, key, "param '%s' must be %s", key, rpc_type_words[p->type]);
    }
    for (const struct rpc_param *p = m->params; p->name != NULL; p++)
        if (p->required && json_object_get(call->params, p->name) == NULL)
            return rpc_fail_param(call, p->name, "missing param '%s'", p->name);
    return 0;
}

void
rpc_flush_sends(const struct rpc_method *m)
{
    if (m == NULL || !(m->flags & RPC_F_COALESCE))
        sock_flush_all();
}

json_t *
rpc_error_msg(json_t *id, int code, const char *msg, json_t *data)
{
    json_t *err = json_pack("{s:i,s:s}", "code", code, "message", msg);
    if (err == NULL) /* never a request without its answer */
        err = json_pack("{s:i,s:s}", "code", code, "message", "error");
    if (data != NULL)
        json_object_set(err, "data", data);
    return json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", err);
}

static json_t *
rpc_invalid(json_t *id, const char *msg)
{
    return rpc_error_msg(id, SOCKD_E_INVALID_REQUEST, msg, NULL);
}

static int
rpc_id_ok(json_t *id)
{
    return json_is_string(id) || json_is_number(id) || json_is_null(id);
}

/* The handle the method targets, into call->sock or call->ctx; -1 after -32001. */
static int
rpc_target(struct rpc_call *call, const struct rpc_method *m)
{
    switch (m->target) {
    case RPC_TARGET_NONE:
        break;
    case RPC_TARGET_SOCK:
        call->sock = sock_get(&call->client->owner, (uint64_t)rpc_int(call, "socket", 0));
        return call->sock != NULL ? 0 : rpc_fail_handle(call, "socket");
    case RPC_TARGET_CTX:
        call->ctx = tlsctx_get(&call->client->owner, (uint64_t)rpc_int(call, "context", 0));
        return call->ctx != NULL ? 0 : rpc_fail_handle(call, "context");
    }
    return 0;
}

int
rpc_exec(struct rpc_call *call, struct client *c, json_t *id, const char *method,
         const struct rpc_method *m, json_t *params, int *fds, int *nfds)
{
    rpc_flush_sends(m); /* batch members run under the batch's hold */
    sockd.requests++;
    memset(call, 0, sizeof *call);
    call->client = c;
    call->id = id;
    call->fd_out = -1;
    if (m == NULL) {
        rpc_fail(call, SOCKD_E_NO_METHOD, NULL, "method not found: %.100s", method);
    } else if (params != NULL && !json_is_object(params)) {
        rpc_fail(call, SOCKD_E_INVALID_PARAMS, NULL, "params must be an object");
    } else {
        call->params = params ? json_incref(params) : json_object();
        if (rpc_check_params(call, m) == 0 && rpc_target(call, m) == 0 && m->exec(call) == 0)
            call->err_code = 0;
        json_decref(call->params);
    }
    if (call->fd_out >= 0) {
        if (id != NULL && call->err_code == 0 && *nfds < CTL_LINE_FDS)
            fds[(*nfds)++] = call->fd_out;
        else
            close(call->fd_out);
    }
    if (id == NULL && call->err_code != 0)
        log_debug("client %llu: notification %s failed: %s", (unsigned long long)c->owner.id,
                  method, call->err_msg);
    return m != NULL && (m->flags & RPC_F_HEAVY) ? CTL_REQS_PER_TURN : 1;
}

/*
 * Run one request object; returns its response, or NULL for a notification. fds gathers fds to
 * send; *cost gets the request units it took.
 */
static json_t *
rpc_handle_one(struct client *c, json_t *req, int *fds, int *nfds, int *cost)
{
    struct rpc_call call;
    const struct rpc_method *m;
    json_t *id, *resp, *params, *jv, *mv;

    *cost = 1;
    if (!json_is_object(req))
        return rpc_invalid(NULL, "request must be an object");
    id = json_object_get(req, "id");
    if (id != NULL && !rpc_id_ok(id))
        return rpc_invalid(NULL, "id must be a string, a number or null");
    jv = json_object_get(req, "jsonrpc");
    if (!json_is_string(jv) || strcmp(json_string_value(jv), "2.0") != 0)
        return rpc_invalid(id, "jsonrpc must be \"2.0\"");
    mv = json_object_get(req, "method");
    if (!json_is_string(mv))
        return rpc_invalid(id, "method must be a string");

    params = json_object_get(req, "params");
    m = rpc_method_find(json_string_value(mv));
    rpc_blob_put_back(req, m, params);
    *cost = rpc_exec(&call, c, id, json_string_value(mv), m, params, fds, nfds);
    if (id == NULL) {
        json_decref(call.result);
        json_decref(call.err_data);
        return NULL;
    }
    if (call.err_code != 0) {
        resp = rpc_error_msg(id, call.err_code, call.err_msg, call.err_data);
        json_decref(call.result);
    } else {
        resp = json_pack("{s:s,s:O,s:o}", "jsonrpc", "2.0", "id", id, "result",
                         call.result ? call.result : json_object());
    }
    json_decref(call.err_data);
    return resp;
}

void
rpc_too_large(struct client *c, json_t *id)
{
    json_t *data = json_pack("{s:s}", "limit", "max-output");
    json_t *resp =
        rpc_error_msg(id, SOCKD_E_LIMIT, "response too large for the output queue", data);
    if (ctl_write_json(c, resp) < 0 && !c->dead)
        ctl_over_cap(c);
    json_decref(resp);
    json_decref(data);
}

void
rpc_respond(struct client *c, json_t *id, json_t *resp, const int *fds, int nfds)
{
    if (ctl_write_json_fds(c, resp, fds, nfds) < 0 && errno == EMSGSIZE && !c->dead)
        rpc_too_large(c, id);
}

/* Close fds that no response carries (handed-out sockets: the client may hold them too). */
static void
rpc_close_fds(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        nbguard_close(fds[i]);
}

/*
 * A batch while it runs: its members, and its answer so far as text (responses are serialised
 * as they come, so what a batch holds is bounded by the output cap, not by its length).
 */
struct rpc_batch {
    json_t *msg;    /* the parsed array (owned) */
    size_t next;    /* index of the next member to run */
    struct buf out; /* "[" and the responses so far, comma separated */
    int over;       /* the answer passed the output cap: rpc_too_large answers instead */
    int fds[CTL_LINE_FDS], nfds;
};

/* Run members of b from b->next until budget units are used (one at least); returns the units. */
static int
rpc_batch_step(struct client *c, struct rpc_batch *b, int budget)
{
    int used = 0, cost;
    size_t n = json_array_size(b->msg);
    while (b->next < n && used < budget && !c->dead) {
        json_t *r = rpc_handle_one(c, json_array_get(b->msg, b->next++), b->fds, &b->nfds, &cost);
        used += cost;
        if (r == NULL || b->over) {
            json_decref(r);
            continue;
        }
        size_t before = buf_len(&b->out);
        if (buf_append(&b->out, before > 0 ? "," : "[", 1) < 0 ||
            ctl_dump(&b->out, r, ctl_out_hard()) < 0) {
            if (errno != EMSGSIZE)
                ctl_client_close(c, "out of memory");
            b->over = 1;
            buf_free(&b->out);
        }
        json_decref(r);
    }
    return used;
}

/* Write the answer of a batch that has run every member, and release what it held. */
static void
rpc_batch_end(struct client *c, struct rpc_batch *b)
{
    if (b->over || c->dead || buf_len(&b->out) == 0) { /* empty: notifications only */
        rpc_close_fds(b->fds, b->nfds);
    } else if (buf_append(&b->out, "]\n", 2) < 0) {
        rpc_close_fds(b->fds, b->nfds);
        ctl_client_close(c, "out of memory");
    } else if (ctl_write_text_fds(c, buf_head(&b->out), buf_len(&b->out), b->fds, b->nfds) < 0) {
        b->over = errno == EMSGSIZE;
    }
    if (b->over && !c->dead)
        rpc_too_large(c, NULL);
    buf_free(&b->out);
    json_decref(b->msg);
    ctl_release(c);
}

void
rpc_batch_free(struct client *c)
{
    if (c->batch == NULL)
        return;
    rpc_close_fds(c->batch->fds, c->batch->nfds);
    buf_free(&c->batch->out);
    json_decref(c->batch->msg);
    free(c->batch);
    c->batch = NULL;
}

/* Go on with the client's waiting batch within budget; the answer goes out when it ends. */
static int
rpc_batch_resume(struct client *c, int budget)
{
    struct rpc_batch *b = c->batch;
    int used = rpc_batch_step(c, b, budget);
    if (b->next == json_array_size(b->msg) || c->dead) {
        c->batch = NULL;
        rpc_batch_end(c, b);
        free(b);
    }
    return used;
}

int
rpc_handle_line(struct client *c, const char *line, size_t len)
{
    return rpc_run_line(c, line, len, INT_MAX);
}

int
rpc_run_line(struct client *c, const char *line, size_t len, int budget)
{
    json_error_t jerr;
    json_t *msg, *resp = NULL;
    int fds[CTL_LINE_FDS], nfds = 0, cost;

    if (c->batch != NULL)
        return rpc_batch_resume(c, budget);
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
        len--;
    size_t lead = 0;
    while (lead < len && (line[lead] == ' ' || line[lead] == '\t'))
        lead++;
    if (lead == len)
        return 0;
    size_t plen = len;
    char *plain = NULL;
    if (len >= RPC_BLOB_MIN) {
        rpc_blob_init();
        plain = rpc_blob_scan(line, len, &plen);
    }
    if ((cost = rpc_fast(c, plain ? plain : line, plen)) >= 0) {
        free(plain);
        rpc_blob_reset();
        return cost;
    }
    msg = json_loadb(plain ? plain : line, plen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    free(plain);
    if (msg == NULL) {
        rpc_utf8_fix(jerr.text); /* it may quote a cut piece of the line */
        json_t *data = json_pack("{s:s,s:i}", "detail", jerr.text, "position", jerr.position);
        resp = rpc_error_msg(NULL, SOCKD_E_PARSE, "parse error", data);
        json_decref(data);
        ctl_write_json(c, resp);
        json_decref(resp);
        rpc_blob_reset();
        return 1;
    }
    /* a batch (no method) flushes */
    rpc_flush_sends(rpc_method_find(json_string_value(json_object_get(msg, "method"))));
    ctl_hold(c);
    if (json_is_array(msg) && json_array_size(msg) > 0) {
        struct rpc_batch b = {.msg = msg};
        cost = rpc_batch_step(c, &b, budget);
        if (b.next < json_array_size(msg) && !c->dead && (c->batch = malloc(sizeof b)) != NULL) {
            /* Out of turn: the rest runs at the next call, still under this hold. The lifted
             * values go back into the line's text, as rpc_blobs holds one line only. */
            *c->batch = b;
            rpc_blob_restore(msg, NULL);
            rpc_blob_reset();
            return cost;
        }
        cost += rpc_batch_step(c, &b, INT_MAX); /* no memory to wait with: finish now */
        rpc_batch_end(c, &b);
        rpc_blob_reset(); /* spans point into this line only */
        return cost;
    }
    cost = 1;
    if (json_is_array(msg))
        resp = rpc_invalid(NULL, "empty batch");
    else
        resp = rpc_handle_one(c, msg, fds, &nfds, &cost);
    if (resp != NULL)
        rpc_respond(c, json_object_get(resp, "id"), resp, fds, nfds);
    else
        rpc_close_fds(fds, nfds);
    ctl_release(c);
    json_decref(resp);
    json_decref(msg);
    rpc_blob_reset(); /* spans point into this line only */
    return cost;
}

void
rpc_line_too_long(struct client *c)
{
    json_t *data = json_pack("{s:s,s:s}", "reason", "message_too_long", "limit", "max-message");
    json_t *resp = rpc_error_msg(NULL, SOCKD_E_INVALID_REQUEST, "message too long", data);
    json_decref(data);
    ctl_write_json(c, resp);
    json_decref(resp);
}
