#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "rpc.h"
#include "rpc_priv.h"

/*
 * The fast path for the common shape of a line: one request object whose members are only
 * "jsonrpc": "2.0", an "id" that is an integer or a plain string, a plain "method" string and an
 * optional "params" object, each at most once, in any order. The envelope is read by a scan, only
 * params goes to jansson, and the response envelope is written around the result with the id's
 * text as the client wrote it. A plain string has no escapes and only printable ASCII, and an
 * integer id is in its one canonical spelling, so that text is what jansson would print. Any
 * other line (batches, notifications, other id types, extra members, anything malformed) is
 * declined and takes the general path, which owns every error; so this path changes speed only,
 * which test_rpc checks byte for byte.
 */
#define RPC_FAST_METHOD_MAX 100
#define RPC_FAST_ID_MAX 128
#define RPC_FAST_DEPTH_MAX 64
static int rpc_fast_on = 1;
static unsigned long rpc_fast_hits;

void
rpc_fastpath_enable(int on)
{
    rpc_fast_on = on;
}

unsigned long
rpc_fastpath_hits(void)
{
    return rpc_fast_hits;
}

static size_t
rpc_ws(const char *p, size_t i, size_t n)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

/* A plain string at p[i] of at most max chars: the index past its closing quote, or 0. */
static size_t
rpc_plain_str(const char *p, size_t i, size_t n, size_t max)
{
    size_t j = i + 1;
    if (i >= n || p[i] != '"')
        return 0;
    while (j < n && p[j] != '"') {
        if (p[j] < 0x20 || p[j] > 0x7e || p[j] == '\\' || j - i > max)
            return 0;
        j++;
    }
    return j < n ? j + 1 : 0;
}

/* A canonical integer at p[i] that fits json_int_t: the index past it, or 0. */
static size_t
rpc_plain_int(const char *p, size_t i, size_t n)
{
    size_t j = i + (i < n && p[i] == '-');
    size_t d = j;
    while (j < n && p[j] >= '0' && p[j] <= '9')
        j++;
    if (j == d || j - d > 18 || (p[d] == '0' && (j - d > 1 || d > i)))
        return 0; /* none, too long, a leading zero or -0 */
    if (j < n && (p[j] == '.' || p[j] == 'e' || p[j] == 'E'))
        return 0;
    return j;
}

/* The value of the integer rpc_plain_int found at p[i..e). */
static json_int_t
rpc_int_value(const char *p, size_t i, size_t e)
{
    int neg = p[i] == '-';
    json_int_t v = 0;
    for (i += (size_t)neg; i < e; i++)
        v = v * 10 + (p[i] - '0');
    return neg ? -v : v;
}

/* The end of the object at p[i] (brackets matched outside strings), or 0; not validated. */
static size_t
rpc_skip_object(const char *p, size_t i, size_t n)
{
    int depth = 0;
    for (size_t j = i; j < n; j++) {
        switch (p[j]) {
        case '"':
            for (j++; j < n && p[j] != '"'; j++)
                if (p[j] == '\\')
                    j++;
            if (j >= n)
                return 0;
            break;
        case '{':
        case '[':
            if (++depth > RPC_FAST_DEPTH_MAX)
                return 0;
            break;
        case '}':
        case ']':
            if (--depth == 0)
                return j + 1;
            break;
        }
    }
    return 0;
}

struct rpc_envelope {
    const char *id, *method, *params;
    size_t id_len, method_len, params_len;
    int id_str;
};

/* Read the envelope of a fast-path line; 0 when it is one, -1 to decline. */
static int
rpc_fast_scan(const char *p, size_t n, struct rpc_envelope *env)
{
    int seen_rpc = 0;
    size_t i = rpc_ws(p, 0, n), e;

    memset(env, 0, sizeof *env);
    if (i >= n || p[i] != '{')
        return -1;
    i = rpc_ws(p, i + 1, n);
    for (;;) {
        size_t k = i;
        if ((i = rpc_plain_str(p, k, n, 8)) == 0)
            return -1;
        const char *key = p + k + 1;
        size_t klen = i - k - 2;
        i = rpc_ws(p, i, n);
        if (i >= n || p[i] != ':')
            return -1;
        i = rpc_ws(p, i + 1, n);
        if (klen == 7 && memcmp(key, "jsonrpc", 7) == 0 && !seen_rpc) {
            if (n - i < 5 || memcmp(p + i, "\"2.0\"", 5) != 0)
                return -1;
            seen_rpc = 1;
            e = i + 5;
        } else if (klen == 2 && memcmp(key, "id", 2) == 0 && env->id == NULL) {
            env->id_str = i < n && p[i] == '"';
            e = env->id_str ? rpc_plain_str(p, i, n, RPC_FAST_ID_MAX) : rpc_plain_int(p, i, n);
            env->id = p + i;
            env->id_len = e - i;
        } else if (klen == 6 && memcmp(key, "method", 6) == 0 && env->method == NULL) {
            e = rpc_plain_str(p, i, n, RPC_FAST_METHOD_MAX);
            env->method = p + i + 1;
            env->method_len = e - i - 2;
        } else if (klen == 6 && memcmp(key, "params", 6) == 0 && env->params == NULL) {
            e = i < n && p[i] == '{' ? rpc_skip_object(p, i, n) : 0;
            env->params = p + i;
            env->params_len = e - i;
        } else {
            return -1;
        }
        if (e == 0)
            return -1;
        i = rpc_ws(p, e, n);
        if (i < n && p[i] == ',') {
            i = rpc_ws(p, i + 1, n);
            continue;
        }
        if (i >= n || p[i] != '}')
            return -1;
        break;
    }
    if (rpc_ws(p, i + 1, n) != n || !seen_rpc || env->id == NULL || env->method == NULL)
        return -1;
    return 0;
}

int
rpc_fastpath_check(const char *line, size_t len)
{
    struct rpc_envelope env;
    json_t *msg, *params = NULL, *v;
    char *idtext;
    int ok;

    if (rpc_fast_scan(line, len, &env) < 0)
        return 0;
    if (env.params != NULL &&
        (params = json_loadb(env.params, env.params_len, JSON_REJECT_DUPLICATES, NULL)) == NULL)
        return 0; /* declined there too */
    msg = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    ok = json_is_object(msg) && json_object_size(msg) == 3u + (params != NULL);
    v = json_object_get(msg, "jsonrpc");
    ok = ok && json_is_string(v) && strcmp(json_string_value(v), "2.0") == 0;
    v = json_object_get(msg, "method");
    ok = ok && json_is_string(v) && json_string_length(v) == env.method_len &&
         memcmp(json_string_value(v), env.method, env.method_len) == 0;
    ok = ok && (params == NULL || json_equal(params, json_object_get(msg, "params")));
    v = json_object_get(msg, "id");
    idtext = v != NULL ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    ok = ok && idtext != NULL && strlen(idtext) == env.id_len &&
         memcmp(idtext, env.id, env.id_len) == 0 && (json_is_integer(v) || json_is_string(v));
    free(idtext);
    json_decref(msg);
    json_decref(params);
    return ok ? 1 : -1;
}

int
rpc_fast(struct client *c, const char *line, size_t len)
{
    struct rpc_envelope env;
    struct rpc_call call;
    const struct rpc_method *m;
    char method[RPC_FAST_METHOD_MAX + 1];
    char head[sizeof "{\"jsonrpc\":\"2.0\",\"id\":,\"result\":" + RPC_FAST_ID_MAX + 2];
    json_t *params = NULL, *id;
    int fds[CTL_LINE_FDS], nfds = 0, cost;

    if (!rpc_fast_on || rpc_fast_scan(line, len, &env) < 0)
        return -1;
    if (env.params != NULL) {
        params = json_loadb(env.params, env.params_len, JSON_REJECT_DUPLICATES, NULL);
        if (params == NULL)
            return -1; /* the general path reports what is wrong, and where in the line */
    }
    id = env.id_str ? json_stringn(env.id + 1, env.id_len - 2)
                    : json_integer(rpc_int_value(env.id, 0, env.id_len));
    if (id == NULL) {
        json_decref(params);
        return -1;
    }
    memcpy(method, env.method, env.method_len);
    method[env.method_len] = '\0';
    m = rpc_method_find(method);
    if (params != NULL)
        rpc_blob_put_back(params, m, params);
    rpc_fast_hits++;
    rpc_flush_sends(m);
    ctl_hold(c);
    cost = rpc_exec(&call, c, id, method, m, params, fds, &nfds);
    if (call.err_code == 0) {
        static const char h1[] = "{\"jsonrpc\":\"2.0\",\"id\":", h2[] = ",\"result\":";
        memcpy(head, h1, sizeof h1 - 1);
        memcpy(head + sizeof h1 - 1, env.id, env.id_len);
        memcpy(head + sizeof h1 - 1 + env.id_len, h2, sizeof h2 - 1);
        if (ctl_write_result_fds(c, head, sizeof h1 - 1 + env.id_len + sizeof h2 - 1, call.result,
                                 fds, nfds) < 0 &&
            errno == EMSGSIZE && !c->dead)
            rpc_too_large(c, id);
    } else {
        json_t *resp = rpc_error_msg(id, call.err_code, call.err_msg, call.err_data);
        rpc_respond(c, id, resp, fds, nfds);
        json_decref(resp);
    }
    ctl_release(c);
    json_decref(call.result);
    json_decref(call.err_data);
    json_decref(params);
    json_decref(id);
    return cost;
}
