#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <sockd/protocol.h>

#include "b64.h"
#include "buf.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "rpc.h"
#include "sock.h"

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

static const struct rpc_method *
rpc_lookup(const char *name)
{
    struct rpc_method key = {name, NULL, NULL};
    const struct rpc_method *kp = &key, *const * hit;
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

static void
rpc_set_error(struct rpc_call *call, int code, const char *fmt, va_list ap)
{
    call->err_code = code;
    vsnprintf(call->err_msg, sizeof call->err_msg, fmt, ap);
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
    json_object_set_new(call->err_data, "param", json_string(param));
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
    }
    return 0;
}

static const char *const rpc_type_words[] = {"any value",          "a boolean", "an integer",
                                             "a positive integer", "a string",  "an array",
                                             "an object"};

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

/*
 * Large payloads bypass the JSON lexer. A "data" member whose value is a long string of valid
 * base64 is decoded while the line is scanned (the strict decoder is the validation: one walk
 * over the text) and swapped, before parsing, for a short placeholder naming its span; the send
 * methods take the decoded bytes (rpc_blob), and a placeholder found anywhere else is put back
 * to the original text before the method runs, so what a method sees never changes. A value
 * that does not decode is left in the line for the parser and the method's own checks.
 */
#define RPC_BLOB_MIN 1024
#define RPC_BLOB_MAX 64
static struct {
    const char *line;
    size_t off[RPC_BLOB_MAX], len[RPC_BLOB_MAX];
    size_t boff[RPC_BLOB_MAX], blen[RPC_BLOB_MAX]; /* decoded, in bytes */
    unsigned char *bytes; /* every value of the line decoded, one allocation */
    size_t used;
    int n;
} rpc_blobs;
static char rpc_blob_nonce[24]; /* "sockd-blob-" + 8 random hex; a prefix no client can guess */

static void
rpc_blob_init(void)
{
    unsigned char r[4];
    if (rpc_blob_nonce[0] != '\0')
        return;
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0x5a, sizeof r);
    snprintf(rpc_blob_nonce, sizeof rpc_blob_nonce, "sockd-blob-%02x%02x%02x%02x:", r[0], r[1],
             r[2], r[3]);
}

/* Forget the values lifted from the line just handled. */
static void
rpc_blob_reset(void)
{
    free(rpc_blobs.bytes);
    rpc_blobs.bytes = NULL;
    rpc_blobs.used = 0;
    rpc_blobs.n = 0;
}

/* Decode the value [s, s+n) of the line as blob rpc_blobs.n; 0, or -1 if it is not base64. */
static int
rpc_blob_decode(const char *line, size_t len, size_t s, size_t n)
{
    if (rpc_blobs.bytes == NULL) {
        /* room for every value of the line: the sum of their n / 4 * 3 is at most this */
        rpc_blobs.bytes = malloc(len / 4 * 3 + 3);
        if (rpc_blobs.bytes == NULL)
            return -1; /* the parser takes the line as it is */
        rpc_blobs.used = 0;
    }
    long dl = b64_decode(line + s, n, rpc_blobs.bytes + rpc_blobs.used);
    if (dl < 0)
        return -1;
    rpc_blobs.boff[rpc_blobs.n] = rpc_blobs.used;
    rpc_blobs.blen[rpc_blobs.n] = (size_t)dl;
    rpc_blobs.used += (size_t)dl;
    return 0;
}

/*
 * Scan a line outside strings for `"data" : "<long base64>"`; return a malloc'ed copy with each
 * such value replaced by a placeholder (NULL when there is none). Strings are skipped exactly as
 * JSON defines them, so a "data" inside another string is never taken for a key.
 */
static char *
rpc_blob_scan(const char *line, size_t len, size_t *outlen)
{
    struct buf out = {0};
    size_t i = 0, copied = 0;
    int key_data = 0, after_colon = 0;

    rpc_blob_reset();
    rpc_blobs.line = line;
    while (i < len) {
        char ch = line[i];
        if (ch == '"') {
            size_t s = i + 1, e = s;
            int escaped = 0;
            for (;;) {
                const char *q = memchr(line + e, '"', len - e);
                if (q == NULL) {
                    buf_free(&out);
                    return NULL; /* unterminated: let the parser report it */
                }
                e = (size_t)(q - line);
                size_t bs = 0;
                while (e - bs > s && line[e - bs - 1] == '\\')
                    bs++;
                if (bs > 0)
                    escaped = 1;
                if (bs % 2 == 0)
                    break;
                e++;
            }
            size_t n = e - s;
            if (after_colon && !escaped && n >= RPC_BLOB_MIN && rpc_blobs.n < RPC_BLOB_MAX) {
                if (rpc_blob_decode(line, len, s, n) == 0) {
                    char ph[48];
                    int pl = snprintf(ph, sizeof ph, "%s%d", rpc_blob_nonce, rpc_blobs.n);
                    if (buf_append(&out, line + copied, s - copied) < 0 ||
                        buf_append(&out, ph, (size_t)pl) < 0) {
                        buf_free(&out);
                        rpc_blob_reset();
                        return NULL;
                    }
                    rpc_blobs.off[rpc_blobs.n] = s;
                    rpc_blobs.len[rpc_blobs.n++] = n;
                    copied = e;
                }
            }
            key_data = !after_colon && n == 4 && memcmp(line + s, "data", 4) == 0;
            after_colon = 0;
            i = e + 1;
            continue;
        }
        if (ch == ':') {
            after_colon = key_data;
            key_data = 0;
        } else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            key_data = after_colon = 0;
        }
        i++;
    }
    if (rpc_blobs.n == 0) {
        buf_free(&out);
        rpc_blob_reset();
        return NULL;
    }
    if (buf_append(&out, line + copied, len - copied) < 0) {
        buf_free(&out);
        rpc_blob_reset();
        return NULL;
    }
    *outlen = buf_len(&out);
    char *copy = malloc(buf_len(&out) + 1);
    if (copy != NULL)
        memcpy(copy, buf_head(&out), buf_len(&out));
    buf_free(&out);
    if (copy == NULL)
        rpc_blob_reset();
    return copy;
}

int
rpc_blob(const json_t *value, const char **text, size_t *len, const unsigned char **bytes,
         size_t *nbytes)
{
    size_t nl = strlen(rpc_blob_nonce);
    const char *v = json_string_value(value);
    if (rpc_blobs.n == 0 || v == NULL || strncmp(v, rpc_blob_nonce, nl) != 0)
        return 0;
    int k = atoi(v + nl);
    if (k < 0 || k >= rpc_blobs.n)
        return 0;
    *text = rpc_blobs.line + rpc_blobs.off[k];
    *len = rpc_blobs.len[k];
    if (bytes != NULL) {
        *bytes = rpc_blobs.bytes + rpc_blobs.boff[k];
        *nbytes = rpc_blobs.blen[k];
    }
    return 1;
}

/* Put original text back for every placeholder in v (keep marks the one value left as is). */
static void
rpc_blob_restore(json_t *v, const json_t *keep)
{
    const char *key, *t;
    size_t i, n;
    json_t *m;

    if (json_is_object(v)) {
        json_object_foreach(v, key, m)
        {
            if (m != keep && rpc_blob(m, &t, &n, NULL, NULL))
                json_object_set_new(v, key, json_stringn(t, n));
            else
                rpc_blob_restore(m, keep);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            if (rpc_blob(m, &t, &n, NULL, NULL))
                json_array_set_new(v, i, json_stringn(t, n));
            else
                rpc_blob_restore(m, keep);
        }
    }
}

static json_t *
rpc_error_msg(json_t *id, int code, const char *msg, json_t *data)
{
    json_t *err = json_pack("{s:i,s:s}", "code", code, "message", msg);
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

/* Run one request object; returns its response, or NULL for a notification. fds gathers fds to
 * send. */
static json_t *
rpc_handle_one(struct client *c, json_t *req, int *fds, int *nfds)
{
    struct rpc_call call;
    json_t *id, *resp, *params, *jv, *mv;
    const struct rpc_method *m;

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

    if (rpc_blobs.n > 0) {
        const char *mn = json_string_value(mv);
        json_t *pp = json_object_get(req, "params");
        const json_t *keep = NULL;
        if (strcmp(mn, "socket.send") == 0 || strcmp(mn, "socket.sendto") == 0)
            keep = json_object_get(pp, "data");
        rpc_blob_restore(req, keep);
    }
    /* Sends coalesced so far reach the kernel before any other request sees a socket (sock_io.c).
     */
    if (strcmp(json_string_value(mv), "socket.send") != 0)
        sock_flush_all();
    sockd.requests++;
    memset(&call, 0, sizeof call);
    call.client = c;
    call.id = id;
    call.fd_out = -1;
    params = json_object_get(req, "params");
    m = rpc_lookup(json_string_value(mv));
    if (m == NULL) {
        rpc_fail(&call, SOCKD_E_NO_METHOD, NULL, "method not found: %.100s", json_string_value(mv));
    } else if (params != NULL && !json_is_object(params)) {
        rpc_fail(&call, SOCKD_E_INVALID_PARAMS, NULL, "params must be an object");
    } else {
        call.params = params ? json_incref(params) : json_object();
        if (rpc_check_params(&call, m) == 0 && m->exec(&call) == 0)
            call.err_code = 0;
        json_decref(call.params);
    }
    if (call.fd_out >= 0) {
        if (id != NULL && call.err_code == 0 && *nfds < 8)
            fds[(*nfds)++] = call.fd_out;
        else
            close(call.fd_out);
    }
    if (id == NULL) {
        if (call.err_code != 0)
            log_debug("client %llu: notification %s failed: %s", (unsigned long long)c->id,
                      json_string_value(mv), call.err_msg);
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

int
rpc_handle_line(struct client *c, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *msg, *resp = NULL;
    int fds[8], nfds = 0;

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
    msg = json_loadb(plain ? plain : line, plen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    free(plain);
    if (msg == NULL) {
        json_t *data = json_pack("{s:s,s:i}", "detail", jerr.text, "position", jerr.position);
        resp = rpc_error_msg(NULL, SOCKD_E_PARSE, "parse error", data);
        json_decref(data);
        ctl_write_json(c, resp);
        json_decref(resp);
        rpc_blob_reset();
        return 1;
    }
    /* a request other than socket.send: its socket.sent go out before its response, not after */
    if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "method")) ||
        strcmp(json_string_value(json_object_get(msg, "method")), "socket.send") != 0)
        sock_flush_all();
    ctl_hold(c);
    if (json_is_array(msg)) {
        size_t i;
        json_t *member;
        if (json_array_size(msg) == 0) {
            resp = rpc_invalid(NULL, "empty batch");
        } else {
            resp = json_array();
            json_array_foreach(msg, i, member)
            {
                json_t *r = rpc_handle_one(c, member, fds, &nfds);
                if (r != NULL)
                    json_array_append_new(resp, r);
            }
            if (json_array_size(resp) == 0) {
                json_decref(resp);
                resp = NULL;
            }
        }
    } else {
        resp = rpc_handle_one(c, msg, fds, &nfds);
    }
    if (resp != NULL)
        ctl_write_json_fds(c, resp, fds, nfds);
    else
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
    ctl_release(c);
    json_decref(resp);
    int n = json_is_array(msg) && json_array_size(msg) > 0 ? (int)json_array_size(msg) : 1;
    json_decref(msg);
    rpc_blob_reset(); /* spans point into this line only */
    return n;
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
