/*
 * Unit tests of the JSON-RPC envelope (src/rpc.c) and the daemon/socket methods behind it,
 * driven in-process: a fake client whose control connection is one end of a socketpair.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>
#include <jansson.h>

#include <sockd/protocol.h>

#include "ctl.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "rpc.h"
#include "sock.h"

#include "rpc_fixture.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- driving the envelope ---------------------------------------------------------------- */

/* Every message written since the last call, as a JSON array (one element per line). */
static json_t *
output(struct fx *f)
{
    size_t len;
    char *text = fx_drain(f, &len);
    json_t *msgs = json_array();
    if (len > 0)
        assert_int_equal(text[len - 1], '\n');
    /* No NUL bytes: the text is exactly what strlen sees. */
    assert_int_equal(strlen(text), len);
    char *line = text;
    while (*line != '\0') {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        assert_true(nl > line); /* never an empty line */
        json_error_t err;
        json_t *m = json_loadb(line, (size_t)(nl - line), JSON_REJECT_DUPLICATES, &err);
        if (m == NULL)
            fail_msg("daemon wrote invalid JSON (%s): %.*s", err.text, (int)(nl - line), line);
        json_array_append_new(msgs, m);
        line = nl + 1;
    }
    free(text);
    return msgs;
}

/* Feed one line (len bytes, without its newline) and collect what it caused. */
static json_t *
feed(struct fx *f, const char *line, size_t len)
{
    rpc_handle_line(f->c, line, len);
    return output(f);
}

static json_t *
feeds(struct fx *f, const char *line)
{
    return feed(f, line, strlen(line));
}

/* Feed a line that must be answered by exactly one message; returns it. */
static json_t *
one(struct fx *f, const char *line, size_t len)
{
    json_t *msgs = feed(f, line, len);
    if (json_array_size(msgs) != 1)
        fail_msg("%zu messages for one line: %.200s", json_array_size(msgs), line);
    json_t *m = json_incref(json_array_get(msgs, 0));
    json_decref(msgs);
    return m;
}

/* A request {jsonrpc, id, method, params} with params given as JSON text (NULL: none). */
static json_t *
call(struct fx *f, const char *method, const char *params, const char *id)
{
    char line[4096];
    int n;
    if (params != NULL)
        n = snprintf(line, sizeof line,
                     "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"%s\",\"params\":%s}", id, method,
                     params);
    else
        n = snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"%s\"}", id,
                     method);
    assert_true(n > 0 && (size_t)n < sizeof line);
    return one(f, line, (size_t)n);
}

static json_t *
parse_json(const char *text)
{
    json_error_t err;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &err);
    if (v == NULL)
        fail_msg("test bug: bad JSON %s (%s)", text, err.text);
    return v;
}

static void
check_id(json_t *resp, const char *id_text)
{
    json_t *want = parse_json(id_text);
    json_t *got = json_object_get(resp, "id");
    assert_non_null(got);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_ENCODE_ANY);
        char msg[256];
        snprintf(msg, sizeof msg, "id %s, want %s", g ? g : "?", id_text);
        free(g);
        json_decref(want);
        fail_msg("%s", msg);
    }
    json_decref(want);
}

/* A well-formed response: jsonrpc "2.0", an id, and exactly one of result and error. */
static void
check_envelope(json_t *resp)
{
    assert_true(json_is_object(resp));
    json_t *jv = json_object_get(resp, "jsonrpc");
    assert_true(json_is_string(jv));
    assert_string_equal(json_string_value(jv), "2.0");
    assert_non_null(json_object_get(resp, "id"));
    int has_result = json_object_get(resp, "result") != NULL;
    int has_error = json_object_get(resp, "error") != NULL;
    assert_int_equal(has_result + has_error, 1);
    assert_int_equal(json_object_size(resp), 3);
    assert_null(json_object_get(resp, "method"));
}

static void
describe(json_t *v, char *out, size_t n)
{
    char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(out, n, "%s", d ? d : "?");
    free(d);
}

/* An error response with this code and id; param/limit/reason checked when not NULL. */
static void
check_error(json_t *resp, int code, const char *id_text, const char *param)
{
    check_envelope(resp);
    check_id(resp, id_text);
    json_t *err = json_object_get(resp, "error");
    if (!json_is_object(err)) {
        char d[512];
        describe(resp, d, sizeof d);
        fail_msg("expected error %d, got %s", code, d);
    }
    json_t *cv = json_object_get(err, "code");
    assert_true(json_is_integer(cv));
    if (json_integer_value(cv) != code) {
        char d[512];
        describe(resp, d, sizeof d);
        fail_msg("expected error %d, got %s", code, d);
    }
    json_t *mv = json_object_get(err, "message");
    assert_true(json_is_string(mv));
    assert_true(json_string_length(mv) > 0);
    json_t *data = json_object_get(err, "data");
    if (data != NULL)
        assert_true(json_is_object(data));
    if (param != NULL) {
        assert_non_null(data);
        json_t *pv = json_object_get(data, "param");
        if (!json_is_string(pv) || strcmp(json_string_value(pv), param) != 0) {
            char d[512];
            describe(resp, d, sizeof d);
            fail_msg("expected data.param \"%s\": %s", param, d);
        }
    }
}

static const char *
data_str(json_t *resp, const char *key)
{
    return json_string_value(
        json_object_get(json_object_get(json_object_get(resp, "error"), "data"), key));
}

/* A result response with this id; returns the result (borrowed). */
static json_t *
check_result(json_t *resp, const char *id_text)
{
    check_envelope(resp);
    json_t *r = json_object_get(resp, "result");
    if (r == NULL) {
        char d[512];
        describe(resp, d, sizeof d);
        fail_msg("expected a result: %s", d);
    }
    check_id(resp, id_text);
    assert_true(json_is_object(r));
    return r;
}

/* ---- envelope table ------------------------------------------------------------------------ */

#define T(s) s, sizeof(s) - 1
#define PING_HEAD "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\""

struct env_case {
    const char *line;
    size_t len;
    int code;          /* 0: a result is expected */
    const char *id;    /* expected id, as JSON text */
    const char *param; /* expected data.param, or NULL */
};

static const struct env_case env_cases[] = {
    /* -32700: not JSON */
    {T("{"), SOCKD_E_PARSE, "null", NULL},
    {T("}"), SOCKD_E_PARSE, "null", NULL},
    {T("not json"), SOCKD_E_PARSE, "null", NULL},
    {T("{'jsonrpc':'2.0'}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":1"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":1}}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":1} {}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":1,}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":01}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":NaN}"), SOCKD_E_PARSE, "null", NULL},
    /* -32700: duplicate keys, at any depth */
    {T(PING_HEAD ",\"id\":1,\"id\":2}"), SOCKD_E_PARSE, "null", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1}"),
     SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_PARSE, "null", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":1,"
       "\"params\":{\"client\":\"a\",\"client\":\"b\"}}"),
     SOCKD_E_PARSE, "null", NULL},
    {T("[" PING_HEAD ",\"id\":1}," PING_HEAD ",\"id\":2,\"id\":3}]"), SOCKD_E_PARSE, "null", NULL},
    /* -32700: NUL bytes, raw or escaped */
    {T(PING_HEAD ",\"id\":1}\0"), SOCKD_E_PARSE, "null", NULL},
    {T("\0" PING_HEAD ",\"id\":1}"), SOCKD_E_PARSE, "null", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\0\",\"id\":1}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"a\\u0000b\"}"), SOCKD_E_PARSE, "null", NULL},
    /* -32700: invalid UTF-8 */
    {T(PING_HEAD ",\"id\":\"\xff\"}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"\xc0\xaf\"}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"\xed\xa0\x80\"}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"\xe2\x82\"}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"\xf4\x90\x80\x80\"}"), SOCKD_E_PARSE, "null", NULL},
    {T(PING_HEAD ",\"id\":\"\x80\"}"), SOCKD_E_PARSE, "null", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"\xfe\":1,\"id\":1}"), SOCKD_E_PARSE,
     "null", NULL},
    {T(PING_HEAD ",\"id\":\"\\ud800\"}"), SOCKD_E_PARSE, "null", NULL},
    /* -32600: not a request object */
    {T("\"hello\""), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("42"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("null"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("true"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("{}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    /* -32600: jsonrpc missing or wrong; a valid id is echoed */
    {T("{\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1", NULL},
    {T("{\"jsonrpc\":\"1.0\",\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1",
     NULL},
    {T("{\"jsonrpc\":2.0,\"method\":\"daemon.ping\",\"id\":\"x\"}"), SOCKD_E_INVALID_REQUEST,
     "\"x\"", NULL},
    {T("{\"jsonrpc\":2,\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1", NULL},
    {T("{\"jsonrpc\":\"2.0 \",\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1",
     NULL},
    {T("{\"jsonrpc\":\"2\",\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1",
     NULL},
    {T("{\"jsonrpc\":null,\"method\":\"daemon.ping\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1",
     NULL},
    /* -32600: method missing or not a string */
    {T("{\"jsonrpc\":\"2.0\",\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":5,\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":[\"daemon.ping\"],\"id\":1}"), SOCKD_E_INVALID_REQUEST, "1",
     NULL},
    /* -32600: id of a type JSON-RPC does not allow; answered with id null */
    {T(PING_HEAD ",\"id\":[1]}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T(PING_HEAD ",\"id\":{}}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T(PING_HEAD ",\"id\":{\"a\":1}}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T(PING_HEAD ",\"id\":true}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T(PING_HEAD ",\"id\":false}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    /* -32600: an invalid envelope is answered even without an id */
    {T("{\"jsonrpc\":\"1.0\",\"method\":\"daemon.ping\"}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("{\"method\":\"daemon.ping\"}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("{\"jsonrpc\":\"2.0\"}"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    /* -32600: the empty batch, answered with one object (not an array) */
    {T("[]"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("[ ]"), SOCKD_E_INVALID_REQUEST, "null", NULL},
    {T("  [\t]  "), SOCKD_E_INVALID_REQUEST, "null", NULL},
    /* -32601 */
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":1}"), SOCKD_E_NO_METHOD, "1", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"\",\"id\":2}"), SOCKD_E_NO_METHOD, "2", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.pin\",\"id\":3}"), SOCKD_E_NO_METHOD, "3", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.pingg\",\"id\":3}"), SOCKD_E_NO_METHOD, "3", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"DAEMON.PING\",\"id\":4}"), SOCKD_E_NO_METHOD, "4", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping \",\"id\":5}"), SOCKD_E_NO_METHOD, "5", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon\",\"id\":6}"), SOCKD_E_NO_METHOD, "6", NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":7,\"params\":[]}"), SOCKD_E_NO_METHOD, "7",
     NULL},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.\\u0000\",\"id\":8}"), SOCKD_E_PARSE, "null",
     NULL},
    /* -32602: params not an object */
    {T(PING_HEAD ",\"id\":1,\"params\":[]}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":[1,2]}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":\"x\"}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":5}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":null}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":true}"), SOCKD_E_INVALID_PARAMS, "1", NULL},
    /* -32602: unknown param names, named in data.param */
    {T(PING_HEAD ",\"id\":1,\"params\":{\"x\":1}}"), SOCKD_E_INVALID_PARAMS, "1", "x"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,"
       "\"params\":{\"type\":\"tcp\",\"tpye\":\"tcp\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "tpye"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.list\",\"id\":1,\"params\":{\"socket\":1}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":1,\"params\":{\"Client\":\"a\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "Client"},
    /* -32602: wrong types and missing required params */
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":1,\"params\":{\"client\":5}}"),
     SOCKD_E_INVALID_PARAMS, "1", "client"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1}"), SOCKD_E_INVALID_PARAMS, "1",
     "type"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,\"params\":{}}"),
     SOCKD_E_INVALID_PARAMS, "1", "type"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,\"params\":{\"type\":5}}"),
     SOCKD_E_INVALID_PARAMS, "1", "type"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,\"params\":{\"type\":\"sctp\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "type"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,"
       "\"params\":{\"type\":\"tcp\",\"ipv6\":\"yes\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "ipv6"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,"
       "\"params\":{\"type\":\"tcp\",\"ipv6\":1}}"),
     SOCKD_E_INVALID_PARAMS, "1", "ipv6"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,"
       "\"params\":{\"type\":\"tcp\",\"context\":0}}"),
     SOCKD_E_INVALID_PARAMS, "1", "context"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"id\":1,"
       "\"params\":{\"type\":\"tcp\",\"context\":1}}"),
     SOCKD_E_INVALID_PARAMS, "1", "context"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{\"socket\":0}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{\"socket\":-3}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{\"socket\":\"1\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{\"socket\":1.0}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"id\":1,\"params\":{\"socket\":null}}"),
     SOCKD_E_INVALID_PARAMS, "1", "socket"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.recv\",\"id\":1,\"params\":{\"socket\":1}}"),
     SOCKD_E_INVALID_PARAMS, "1", "length"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.connect\",\"id\":1,"
       "\"params\":{\"socket\":1,\"address\":5}}"),
     SOCKD_E_INVALID_PARAMS, "1", "address"},
    {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"id\":1,"
       "\"params\":{\"socket\":1,\"notify\":\"no\"}}"),
     SOCKD_E_INVALID_PARAMS, "1", "notify"},
    /* accepted forms: trailing CR, surrounding blanks, explicit empty params, extra members */
    {T(PING_HEAD ",\"id\":1}\r"), 0, "1", NULL},
    {T(PING_HEAD ",\"id\":1} \t\r"), 0, "1", NULL},
    {T("  \t" PING_HEAD ",\"id\":1}"), 0, "1", NULL},
    {T(PING_HEAD ",\"id\":1,\"params\":{}}"), 0, "1", NULL},
    {T("{ \"id\" : 1 , \"method\" : \"daemon.ping\" , \"jsonrpc\" : \"2.0\" }"), 0, "1", NULL},
    {T(PING_HEAD ",\"id\":\"\\u00e9\\n\"}"), 0, "\"\\u00e9\\n\"", NULL},
};

/* One case: NULL if the response is as expected, else a description (malloc'ed). */
static char *
env_case_problem(struct fx *f, const struct env_case *tc)
{
    char got[512], *out = NULL;
    json_t *msgs = feed(f, tc->line, tc->len);
    json_t *resp = json_array_get(msgs, 0);
    describe(msgs, got, sizeof got);
    int ok;
    json_t *want_id = parse_json(tc->id);
    if (json_array_size(msgs) != 1 || !json_is_object(resp) ||
        !json_equal(json_object_get(resp, "id"), want_id)) {
        ok = 0;
    } else if (tc->code == 0) {
        ok = json_is_object(json_object_get(resp, "result"));
    } else {
        json_t *err = json_object_get(resp, "error");
        json_t *data = json_object_get(err, "data");
        ok = json_integer_value(json_object_get(err, "code")) == tc->code &&
             json_is_string(json_object_get(err, "message"));
        if (tc->param != NULL)
            ok = ok && json_is_string(json_object_get(data, "param")) &&
                 strcmp(json_string_value(json_object_get(data, "param")), tc->param) == 0;
    }
    json_decref(want_id);
    json_decref(msgs);
    if (!ok && asprintf(&out, "%.80s -> %s (want code %d id %s%s%s)", tc->line, got, tc->code,
                        tc->id, tc->param ? " param " : "", tc->param ? tc->param : "") < 0)
        out = strdup("?");
    return out;
}

static void
test_envelope_table(void **state)
{
    struct fx *f = *state;
    int bad = 0;
    for (size_t i = 0; i < NELEM(env_cases); i++) {
        const struct env_case *tc = &env_cases[i];
        char *problem = env_case_problem(f, tc);
        if (problem != NULL) {
            print_error("case %zu: %s\n", i, problem);
            free(problem);
            bad++;
            continue;
        }
        /* The full shape checks on the cases that are right so far. */
        json_t *resp = one(f, tc->line, tc->len);
        if (tc->code == 0)
            check_result(resp, tc->id);
        else
            check_error(resp, tc->code, tc->id, tc->param);
        json_decref(resp);
    }
    if (bad > 0)
        fail_msg("%d of %zu envelope cases failed", bad, NELEM(env_cases));
}

/* Lines that must produce no output at all. */
static void
test_silent_lines(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *line;
        size_t len;
    } cases[] = {
        /* whitespace only */
        {T("")},
        {T(" ")},
        {T("\t \t")},
        {T("\r")},
        {T(" \r")},
        {T("   \t   \r")},
        /* valid notifications, succeeding or failing */
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":{}}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.stats\"}\r")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":[]}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":{\"x\":1}}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"params\":{\"socket\":99999}}")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"params\":{\"type\":\"udp\"}}")},
        /* a batch of notifications only */
        {T("[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}]")},
        {T("[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},{\"jsonrpc\":\"2.0\","
           "\"method\":\"nope\"},{\"jsonrpc\":\"2.0\",\"method\":\"socket.close\","
           "\"params\":{\"socket\":424242}}]")},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        json_t *msgs = feed(f, cases[i].line, cases[i].len);
        size_t n = json_array_size(msgs);
        json_decref(msgs);
        if (n != 0)
            fail_msg("case %zu (%s): %zu messages, want none", i, cases[i].line, n);
    }
    /* Silence is not a sign of a dead connection: a request still gets its answer. */
    json_t *r = call(f, "daemon.ping", NULL, "99");
    check_result(r, "99");
    json_decref(r);
}

/* A notification is executed even though it is not answered. */
static void
test_notification_executes(void **state)
{
    struct fx *f = *state;
    json_t *msgs = feeds(f, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\","
                            "\"params\":{\"type\":\"tcp\",\"tag\":\"quiet\"}}");
    assert_int_equal(json_array_size(msgs), 0);
    json_decref(msgs);
    assert_int_equal(f->c->owner.nsocks, 1);
    json_t *r = call(f, "socket.list", NULL, "1");
    json_t *list = json_object_get(check_result(r, "1"), "sockets");
    assert_int_equal(json_array_size(list), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "tag")),
                        "quiet");
    json_decref(r);
}

/* Ids of every allowed type come back unchanged, in results and in errors. */
static void
test_ids_echoed(void **state)
{
    struct fx *f = *state;
    static const char *const ids[] = {
        "0",
        "1",
        "-1",
        "42",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "-0.25",
        "1e3",
        "1.25e-3",
        "\"\"",
        "\"abc\"",
        "\"1\"",
        "\"\\u00e9t\\u00e9\"",
        "\"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80\"",
        "\"a\\\"b\\\\c\\/d\\n\\t\"",
        "\"null\"",
        "null",
    };
    for (size_t i = 0; i < NELEM(ids); i++) {
        json_t *r = call(f, "daemon.ping", NULL, ids[i]);
        check_result(r, ids[i]);
        json_decref(r);
        r = call(f, "no.such.method", NULL, ids[i]);
        check_error(r, SOCKD_E_NO_METHOD, ids[i], NULL);
        json_decref(r);
        r = call(f, "daemon.ping", "[]", ids[i]);
        check_error(r, SOCKD_E_INVALID_PARAMS, ids[i], NULL);
        json_decref(r);
    }
    /* A long string id. */
    char id[2100];
    id[0] = '"';
    for (int k = 1; k <= 2000; k++)
        id[k] = (char)('a' + k % 26);
    strcpy(id + 2001, "\"");
    json_t *r = call(f, "daemon.ping", NULL, id);
    check_result(r, id);
    json_decref(r);
}

/* Responses come in the order the lines were read, even when flushed together. */
static void
test_response_order(void **state)
{
    struct fx *f = *state;
    char line[128];
    for (int i = 0; i < 50; i++) {
        int n = snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"}", i,
                         i % 3 == 0 ? "nope" : "daemon.ping");
        rpc_handle_line(f->c, line, (size_t)n);
    }
    json_t *msgs = output(f);
    assert_int_equal(json_array_size(msgs), 50);
    for (int i = 0; i < 50; i++) {
        json_t *m = json_array_get(msgs, (size_t)i);
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        if (i % 3 == 0)
            check_error(m, SOCKD_E_NO_METHOD, id, NULL);
        else
            check_result(m, id);
    }
    json_decref(msgs);
}

static void
test_batch(void **state)
{
    struct fx *f = *state;
    json_t *resp = one(f, T("["
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":2},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":\"x\"},"
                            "5,"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":null},"
                            "{\"method\":\"daemon.ping\",\"id\":3},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":true},"
                            "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":4,"
                            "\"params\":{\"bad\":0}}"
                            "]"));
    assert_true(json_is_array(resp));
    assert_int_equal(json_array_size(resp), 8);
    check_result(json_array_get(resp, 0), "1");
    check_error(json_array_get(resp, 1), SOCKD_E_NO_METHOD, "2", NULL);
    json_t *hello = check_result(json_array_get(resp, 2), "\"x\"");
    assert_string_equal(json_string_value(json_object_get(hello, "server")), "sockd");
    check_error(json_array_get(resp, 3), SOCKD_E_INVALID_REQUEST, "null", NULL);
    check_result(json_array_get(resp, 4), "null");
    check_error(json_array_get(resp, 5), SOCKD_E_INVALID_REQUEST, "3", NULL);
    check_error(json_array_get(resp, 6), SOCKD_E_INVALID_REQUEST, "null", NULL);
    check_error(json_array_get(resp, 7), SOCKD_E_INVALID_PARAMS, "4", "bad");
    json_decref(resp);

    /* A batch of one is still answered with an array. */
    resp = one(f, T("[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":7}]"));
    assert_true(json_is_array(resp));
    assert_int_equal(json_array_size(resp), 1);
    check_result(json_array_get(resp, 0), "7");
    json_decref(resp);

    /* Non-object members: each gets its own -32600; nested arrays are not batches. */
    resp =
        one(f, T("[1,\"a\",null,[],[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1}]]"));
    assert_true(json_is_array(resp));
    assert_int_equal(json_array_size(resp), 5);
    for (size_t i = 0; i < 5; i++)
        check_error(json_array_get(resp, i), SOCKD_E_INVALID_REQUEST, "null", NULL);
    json_decref(resp);

    /* A long batch keeps member order. */
    size_t cap = 200 * 64, len = 0;
    char *line = malloc(cap);
    assert_non_null(line);
    line[len++] = '[';
    for (int i = 0; i < 200; i++)
        len += (size_t)snprintf(line + len, cap - len,
                                "%s{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":%d}",
                                i ? "," : "", i);
    line[len++] = ']';
    resp = one(f, line, len);
    free(line);
    assert_int_equal(json_array_size(resp), 200);
    for (size_t i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "%zu", i);
        check_result(json_array_get(resp, i), id);
    }
    json_decref(resp);
}

/*
 * A batch cut into turns (one request unit each, the least a turn may give) answers byte for
 * byte as when it runs at once, and writes nothing before its last member has run.
 */
static void
test_batch_in_turns(void **state)
{
    struct fx *f = *state;
    const char *line = "[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1},"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"nope\",\"id\":2},"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},"
                       "5,"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"x\"},"
                       "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":4,"
                       "\"params\":{\"bad\":0}}]";
    size_t len = strlen(line), n1, n2;
    int turns = 0;

    rpc_handle_line(f->c, line, len);
    char *whole = fx_drain(f, &n1);
    do {
        assert_int_equal(rpc_run_line(f->c, line, len, 1), 1);
        turns++;
        if (f->c->batch != NULL) {
            char *none = fx_drain(f, &n2);
            assert_int_equal(n2, 0);
            free(none);
        }
    } while (f->c->batch != NULL);
    assert_int_equal(turns, 6);
    char *cut = fx_drain(f, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(whole, cut, n1);
    free(whole);
    free(cut);
}

/* Nesting: 2048 levels parse (and are not a request), deeper is a parse error. */
static void
test_nesting(void **state)
{
    struct fx *f = *state;
    static const struct {
        size_t depth;
        int closed;
        int code;
    } cases[] = {
        {2048, 1, SOCKD_E_INVALID_REQUEST}, {2049, 1, SOCKD_E_PARSE},   {5000, 1, SOCKD_E_PARSE},
        {100000, 0, SOCKD_E_PARSE},         {100000, 1, SOCKD_E_PARSE},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        size_t d = cases[i].depth;
        char *line = malloc(2 * d);
        assert_non_null(line);
        memset(line, '[', d);
        size_t len = d;
        if (cases[i].closed) {
            memset(line + d, ']', d);
            len = 2 * d;
        }
        json_t *resp = one(f, line, len);
        free(line);
        if (cases[i].code == SOCKD_E_PARSE) {
            check_error(resp, SOCKD_E_PARSE, "null", NULL);
        } else {
            /* A batch whose one member is an array: one -32600 in an array. */
            assert_true(json_is_array(resp));
            assert_int_equal(json_array_size(resp), 1);
            check_error(json_array_get(resp, 0), SOCKD_E_INVALID_REQUEST, "null", NULL);
        }
        json_decref(resp);
    }
}

static void
test_line_too_long(void **state)
{
    struct fx *f = *state;
    rpc_line_too_long(f->c);
    json_t *msgs = output(f);
    assert_int_equal(json_array_size(msgs), 1);
    json_t *resp = json_array_get(msgs, 0);
    check_error(resp, SOCKD_E_INVALID_REQUEST, "null", NULL);
    assert_string_equal(data_str(resp, "limit"), "max-message");
    assert_string_equal(data_str(resp, "reason"), "message_too_long");
    json_decref(msgs);
    /* The connection stays usable. */
    json_t *r = call(f, "daemon.ping", NULL, "1");
    check_result(r, "1");
    json_decref(r);
}

/* ---- daemon.* ------------------------------------------------------------------------------ */

static void
test_hello(void **state)
{
    struct fx *f = *state;
    json_t *r = call(f, "daemon.hello", "{\"client\":\"unit-test\"}", "\"h\"");
    json_t *res = check_result(r, "\"h\"");
    assert_string_equal(f->c->name, "unit-test");

    assert_int_equal(json_object_size(res), 7);
    /* no daemon.restrict yet: an empty list of restrictions */
    assert_true(json_is_array(json_object_get(res, "restrict")));
    assert_int_equal(json_array_size(json_object_get(res, "restrict")), 0);
    assert_string_equal(json_string_value(json_object_get(res, "server")), "sockd");
    /* the additions to protocol version 1 (sockd-protocol(7), daemon.hello) */
    json_t *features = json_object_get(res, "features");
    assert_true(json_is_array(features));
    assert_string_equal(json_string_value(json_array_get(features, 0)), "recv_until");
    assert_string_equal(json_string_value(json_object_get(res, "version")), PACKAGE_VERSION);
    assert_true(json_is_integer(json_object_get(res, "protocol")));
    assert_int_equal(json_integer_value(json_object_get(res, "protocol")), 1);

    /* methods: sorted, unique, and including everything the core implements. */
    json_t *methods = json_object_get(res, "methods");
    assert_true(json_is_array(methods));
    size_t i;
    json_t *m;
    const char *prev = NULL;
    json_array_foreach(methods, i, m)
    {
        assert_true(json_is_string(m));
        if (prev != NULL && strcmp(prev, json_string_value(m)) >= 0)
            fail_msg("methods not sorted: \"%s\" before \"%s\"", prev, json_string_value(m));
        prev = json_string_value(m);
    }
    static const char *const must[] = {
        "daemon.hello",       "daemon.ping",   "daemon.stats",   "socket.accept",
        "socket.bind",        "socket.close",  "socket.connect", "socket.info",
        "socket.list",        "socket.listen", "socket.open",    "socket.recv",
        "socket.recv_cancel", "socket.reject", "socket.send",    "socket.shutdown",
    };
    for (size_t k = 0; k < NELEM(must); k++) {
        int found = 0;
        json_array_foreach(methods, i, m)
        {
            if (strcmp(json_string_value(m), must[k]) == 0)
                found = 1;
        }
        if (!found)
            fail_msg("daemon.hello does not list %s", must[k]);
    }

    /* limits: the configured values, under the names sockd-protocol.7 gives (daemon.hello). */
    json_t *limits = json_object_get(res, "limits");
    assert_true(json_is_object(limits));
    static const struct {
        const char *name;
        long long want;
    } lim[] = {
        {"max_clients", 1024},
        {"max_sockets_per_client", 4096},
        {"max_send_buffer", 4 << 20},
        {"max_message", 16 << 20},
        {"max_pending_accepts", 128},
        {"accept_timeout_ms", 10000},
        {"max_recv_length", 16 << 20},
        {"client_line_timeout_ms", 30000},
        {"max_clients_per_uid", 128},
        {"max_sockets_per_uid", 16384},
        {"max_buffer_per_uid", 256 << 20},
        {"max_control_buffer_per_uid", 256 << 20},
        {"max_tls_memory_per_uid", 256 << 20},
        {"max_output_queue", (64 << 20) + (16 << 20)},
        {"max_fds_per_message", 8},
        {"max_tag", 4096},
        {"max_until", 16},
        {"max_udp_payload", 65507},
        {"max_dtls_payload", 16384},
        {"max_restrictions", 16},
        {"max_restrict_rules", 64},
    };
    assert_int_equal(json_object_size(limits), NELEM(lim));
    for (size_t k = 0; k < NELEM(lim); k++) {
        json_t *v = json_object_get(limits, lim[k].name);
        if (!json_is_integer(v) || json_integer_value(v) != lim[k].want)
            fail_msg("limits.%s: want %lld", lim[k].name, lim[k].want);
    }
    json_decref(r);

    /* They follow the config in force. */
    unsigned old = sockd.conf.max_clients;
    sockd.conf.max_clients = 7;
    r = call(f, "daemon.hello", "{}", "2");
    res = check_result(r, "2");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(res, "limits"), "max_clients")), 7);
    sockd.conf.max_clients = old;
    json_decref(r);

    /* Without a client name, hello works and leaves the name alone. */
    r = call(f, "daemon.hello", NULL, "3");
    check_result(r, "3");
    assert_string_equal(f->c->name, "unit-test");
    json_decref(r);
}

/* Every method hello lists exists: called with an unknown param it says -32602, not -32601. */
static void
test_listed_methods_exist(void **state)
{
    struct fx *f = *state;
    json_t *methods = rpc_method_names();
    size_t i;
    json_t *m;
    assert_true(json_array_size(methods) >= 16);
    json_array_foreach(methods, i, m)
    {
        json_t *r = call(f, json_string_value(m), "{\"zz_no_such_param\":1}", "1");
        check_error(r, SOCKD_E_INVALID_PARAMS, "1", "zz_no_such_param");
        json_decref(r);
    }
    json_decref(methods);
}

static void
test_ping(void **state)
{
    struct fx *f = *state;
    json_t *r = call(f, "daemon.ping", NULL, "1");
    assert_int_equal(json_object_size(check_result(r, "1")), 0);
    json_decref(r);
    r = call(f, "daemon.ping", "{}", "2");
    assert_int_equal(json_object_size(check_result(r, "2")), 0);
    json_decref(r);
}

static long long
stat_int(json_t *res, const char *key)
{
    json_t *v = json_object_get(res, key);
    if (!json_is_integer(v))
        fail_msg("daemon.stats: %s is not an integer", key);
    assert_true(json_integer_value(v) >= 0);
    return json_integer_value(v);
}

static void
test_stats(void **state)
{
    struct fx *f = *state;
    json_t *r = call(f, "daemon.stats", NULL, "1");
    json_t *res = check_result(r, "1");
    static const char *const keys[] = {"clients",  "contexts",  "bytes_in",    "bytes_out",
                                       "requests", "uptime_ms", "log_left_out"};
    for (size_t i = 0; i < NELEM(keys); i++)
        stat_int(res, keys[i]);
    assert_int_equal(json_object_size(res), NELEM(keys) + 1);
    assert_int_equal(stat_int(res, "clients"), 2); /* the two fake clients of the fixture */
    assert_int_equal(stat_int(res, "contexts"), 0);
    long long req0 = stat_int(res, "requests");
    json_t *socks = json_object_get(res, "sockets");
    assert_true(json_is_object(socks));
    static const char *const types[] = {"tcp", "tls", "udp", "dtls", "unix", "total"};
    assert_int_equal(json_object_size(socks), NELEM(types));
    for (size_t i = 0; i < NELEM(types); i++)
        assert_int_equal(stat_int(socks, types[i]), 0);
    json_decref(r);

    /* Two tcp sockets (one from the other client), three pings and a notification. */
    json_t *o = call(&f[0], "socket.open", "{\"type\":\"tcp\"}", "2");
    check_result(o, "2");
    json_decref(o);
    o = call(&f[1], "socket.open", "{\"type\":\"tcp\"}", "3");
    check_result(o, "3");
    json_decref(o);
    for (int i = 0; i < 3; i++) {
        o = call(f, "daemon.ping", NULL, "4");
        json_decref(o);
    }
    json_t *none = feeds(f, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}");
    json_decref(none);

    r = call(f, "daemon.stats", NULL, "5");
    res = check_result(r, "5");
    socks = json_object_get(res, "sockets");
    assert_int_equal(stat_int(socks, "tcp"), 2);
    assert_int_equal(stat_int(socks, "udp"), 0);
    assert_int_equal(stat_int(socks, "total"), 2);
    /* 2 opens + 3 pings + 1 notification + this stats call */
    assert_int_equal(stat_int(res, "requests"), req0 + 7);
    json_decref(r);
}

/* ---- socket.* without a network ------------------------------------------------------------ */

/* socket.open; returns the new handle. */
static long long
open_tcp(struct fx *f, const char *extra)
{
    char params[512];
    snprintf(params, sizeof params, "{\"type\":\"tcp\"%s%s}", extra ? "," : "", extra ? extra : "");
    json_t *r = call(f, "socket.open", params, "\"open\"");
    json_t *res = check_result(r, "\"open\"");
    assert_int_equal(json_object_size(res), 1);
    json_t *h = json_object_get(res, "socket");
    assert_true(json_is_integer(h));
    long long id = json_integer_value(h);
    assert_true(id >= 1);
    json_decref(r);
    return id;
}

/* socket.info; returns the result (new reference). */
static json_t *
info(struct fx *f, long long handle)
{
    char params[64];
    snprintf(params, sizeof params, "{\"socket\":%lld}", handle);
    json_t *r = call(f, "socket.info", params, "\"info\"");
    json_t *res = json_incref(check_result(r, "\"info\""));
    json_decref(r);
    return res;
}

static void
expect_handle_error(struct fx *f, const char *method, const char *params)
{
    json_t *r = call(f, method, params, "\"h\"");
    check_error(r, SOCKD_E_UNKNOWN_HANDLE, "\"h\"", NULL);
    json_decref(r);
}

static void
test_socket_open_info_list(void **state)
{
    struct fx *f = *state;
    long long a = open_tcp(f, NULL);
    long long b = open_tcp(f, "\"tag\":{\"k\":[1,2,{\"n\":null}]}");
    long long c = open_tcp(f, "\"ipv6\":true,\"tag\":null");
    assert_true(b > a);
    assert_true(c > b);
    assert_int_equal(f->c->owner.nsocks, 3);

    json_t *i = info(f, a);
    assert_int_equal(json_integer_value(json_object_get(i, "socket")), a);
    assert_string_equal(json_string_value(json_object_get(i, "type")), "tcp");
    assert_string_equal(json_string_value(json_object_get(i, "state")), "open");
    static const char *const zeros[] = {"bytes_sent", "bytes_received", "send_buffered",
                                        "recv_buffered"};
    for (size_t k = 0; k < NELEM(zeros); k++) {
        json_t *v = json_object_get(i, zeros[k]);
        if (!json_is_integer(v) || json_integer_value(v) != 0)
            fail_msg("socket.info %s: want 0", zeros[k]);
    }
    /* Not bound, not connected, no tag: none of those members. */
    assert_null(json_object_get(i, "local"));
    assert_null(json_object_get(i, "remote"));
    assert_null(json_object_get(i, "tag"));
    assert_null(json_object_get(i, "pending"));
    json_decref(i);

    /* The tag is any JSON value, echoed as given; null included. */
    i = info(f, b);
    json_t *want = parse_json("{\"k\":[1,2,{\"n\":null}]}");
    assert_true(json_equal(json_object_get(i, "tag"), want));
    json_decref(want);
    json_decref(i);
    i = info(f, c);
    assert_non_null(json_object_get(i, "tag"));
    assert_true(json_is_null(json_object_get(i, "tag")));
    json_decref(i);

    /* socket.list: every socket of this client, each as socket.info gives it. */
    json_t *r = call(f, "socket.list", NULL, "7");
    json_t *res = check_result(r, "7");
    assert_int_equal(json_object_size(res), 1);
    json_t *list = json_object_get(res, "sockets");
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 3);
    long long handles[3] = {a, b, c};
    for (size_t k = 0; k < 3; k++) {
        json_t *one_info = info(f, handles[k]);
        size_t j;
        json_t *e;
        int found = 0;
        json_array_foreach(list, j, e)
        {
            found += json_equal(e, one_info);
        }
        json_decref(one_info);
        if (found != 1)
            fail_msg("socket %lld appears %d times in socket.list", handles[k], found);
    }
    json_decref(r);

    /* socket.close: {discarded: 0}, and the handle is gone for good. */
    char params[64];
    snprintf(params, sizeof params, "{\"socket\":%lld}", b);
    r = call(f, "socket.close", params, "8");
    res = check_result(r, "8");
    assert_int_equal(json_object_size(res), 1);
    assert_true(json_is_integer(json_object_get(res, "discarded")));
    assert_int_equal(json_integer_value(json_object_get(res, "discarded")), 0);
    json_decref(r);
    expect_handle_error(f, "socket.info", params);
    expect_handle_error(f, "socket.close", params);
    assert_int_equal(f->c->owner.nsocks, 2);

    r = call(f, "socket.list", "{}", "9");
    list = json_object_get(check_result(r, "9"), "sockets");
    assert_int_equal(json_array_size(list), 2);
    size_t j;
    json_t *e;
    json_array_foreach(list, j, e)
    {
        assert_int_not_equal(json_integer_value(json_object_get(e, "socket")), b);
    }
    json_decref(r);

    /* Handles are never reused. */
    long long d = open_tcp(f, NULL);
    assert_true(d > c);
}

static void
test_socket_list_empty(void **state)
{
    struct fx *f = *state;
    json_t *r = call(f, "socket.list", NULL, "1");
    json_t *list = json_object_get(check_result(r, "1"), "sockets");
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 0);
    json_decref(r);
}

static void
test_unknown_handles(void **state)
{
    struct fx *f = *state;
    static const struct {
        const char *method;
        const char *params;
    } cases[] = {
        {"socket.info", "{\"socket\":999999}"},
        {"socket.close", "{\"socket\":999999}"},
        {"socket.connect", "{\"socket\":999999,\"address\":\"127.0.0.1:1\"}"},
        {"socket.bind", "{\"socket\":999999}"},
        {"socket.listen", "{\"socket\":999999}"},
        {"socket.accept", "{\"socket\":999999,\"pending\":1}"},
        {"socket.reject", "{\"socket\":999999,\"pending\":1}"},
        {"socket.shutdown", "{\"socket\":999999}"},
        {"socket.send", "{\"socket\":999999,\"text\":\"x\"}"},
        {"socket.recv", "{\"socket\":999999,\"length\":1}"},
        {"socket.recv_cancel", "{\"socket\":999999}"},
        {"socket.info", "{\"socket\":9223372036854775807}"},
    };
    for (size_t i = 0; i < NELEM(cases); i++)
        expect_handle_error(f, cases[i].method, cases[i].params);

    /* Another client's handle is answered exactly as an unknown one. */
    long long theirs = open_tcp(&f[1], "\"tag\":\"theirs\"");
    char p[160];
    for (size_t i = 0; i < NELEM(cases) - 1; i++) {
        const char *rest = strchr(cases[i].params, ',');
        snprintf(p, sizeof p, "{\"socket\":%lld%s", theirs, rest ? rest : "}");
        json_t *r = call(f, cases[i].method, p, "\"h\"");
        check_error(r, SOCKD_E_UNKNOWN_HANDLE, "\"h\"", NULL);
        json_decref(r);
    }
    /* ... and the owner still has it, untouched. */
    json_t *i = info(&f[1], theirs);
    assert_string_equal(json_string_value(json_object_get(i, "state")), "open");
    assert_string_equal(json_string_value(json_object_get(i, "tag")), "theirs");
    json_decref(i);
    json_t *r = call(f, "socket.list", NULL, "1");
    assert_int_equal(json_array_size(json_object_get(check_result(r, "1"), "sockets")), 0);
    json_decref(r);
}

static void
test_socket_open_unsupported(void **state)
{
    struct fx *f = *state;
    /* every type is built now; tls and dtls without a context are invalid params */
    static const char *const types[] = {"tls", "dtls"};
    for (size_t i = 0; i < NELEM(types); i++) {
        char params[64];
        snprintf(params, sizeof params, "{\"type\":\"%s\"}", types[i]);
        json_t *r = call(f, "socket.open", params, "1");
        check_error(r, SOCKD_E_INVALID_PARAMS, "1", NULL);
        json_decref(r);
    }
    assert_int_equal(f->c->owner.nsocks, 0);
}

static void
test_socket_limit(void **state)
{
    struct fx *f = *state;
    unsigned old = sockd.conf.max_sockets_per_client;
    sockd.conf.max_sockets_per_client = 2;
    open_tcp(f, NULL);
    open_tcp(f, NULL);
    json_t *r = call(f, "socket.open", "{\"type\":\"tcp\"}", "3");
    sockd.conf.max_sockets_per_client = old;
    check_error(r, SOCKD_E_LIMIT, "3", NULL);
    assert_string_equal(data_str(r, "limit"), "max-sockets-per-client");
    json_decref(r);
    assert_int_equal(f->c->owner.nsocks, 2);
    /* The limit is per client. */
    open_tcp(&f[1], NULL);
}

/* Calls in the wrong state, and address errors caught before any system call. */
static void
test_socket_states(void **state)
{
    struct fx *f = *state;
    long long s = open_tcp(f, NULL);
    char p[256];
    json_t *r;

    static const struct {
        const char *method;
        const char *rest; /* params after "socket" */
        int code;
        const char *param;
        const char *reason;
    } on_open[] = {
        {"socket.send", ",\"text\":\"x\"", SOCKD_E_WRONG_STATE, NULL, NULL},
        {"socket.recv", ",\"length\":1", SOCKD_E_WRONG_STATE, NULL, NULL},
        {"socket.shutdown", "", SOCKD_E_WRONG_STATE, NULL, NULL},
        {"socket.accept", ",\"pending\":1", SOCKD_E_WRONG_STATE, NULL, NULL},
        {"socket.send", ",\"text\":\"x\",\"data\":\"eA==\"", SOCKD_E_INVALID_PARAMS, NULL, NULL},
        {"socket.send", "", SOCKD_E_INVALID_PARAMS, NULL, NULL},
        {"socket.recv", ",\"length\":0", SOCKD_E_INVALID_PARAMS, "length", NULL},
        {"socket.recv", ",\"length\":16777217", SOCKD_E_INVALID_PARAMS, "length", NULL},
        {"socket.connect", ",\"address\":\"127.0.0.1\"", SOCKD_E_INVALID_PARAMS, NULL,
         "address_invalid"},
        {"socket.connect", ",\"address\":\"[1.2.3.4]:80\"", SOCKD_E_INVALID_PARAMS, NULL,
         "address_invalid"},
        {"socket.connect", ",\"address\":\"1.2.3.4:80\",\"port\":81", SOCKD_E_INVALID_PARAMS, NULL,
         "address_invalid"},
        {"socket.connect", ",\"address\":\"\"", SOCKD_E_INVALID_PARAMS, NULL, "address_invalid"},
        {"socket.connect", ",\"address\":\"1.2.3.4\",\"port\":70000", SOCKD_E_INVALID_PARAMS,
         "port", NULL},
        {"socket.connect", ",\"address\":\"1.2.3.4:80\",\"timeout_ms\":0", SOCKD_E_INVALID_PARAMS,
         "timeout_ms", NULL},
        {"socket.bind", ",\"address\":\"host.example:80\"", SOCKD_E_INVALID_PARAMS, NULL,
         "address_invalid"},
        {"socket.bind", ",\"mode\":438", SOCKD_E_INVALID_PARAMS, "mode", NULL},
        {"socket.bind", ",\"address\":\"not an address\"", SOCKD_E_INVALID_PARAMS, NULL,
         "address_invalid"},
        {"socket.bind", ",\"port\":65536", SOCKD_E_INVALID_PARAMS, "port", NULL},
    };
    for (size_t i = 0; i < NELEM(on_open); i++) {
        snprintf(p, sizeof p, "{\"socket\":%lld%s}", s, on_open[i].rest);
        r = call(f, on_open[i].method, p, "1");
        check_error(r, on_open[i].code, "1", on_open[i].param);
        if (on_open[i].reason != NULL) {
            const char *got = data_str(r, "reason");
            if (got == NULL || strcmp(got, on_open[i].reason) != 0)
                fail_msg("%s %s: reason %s, want %s", on_open[i].method, p, got ? got : "none",
                         on_open[i].reason);
        }
        json_decref(r);
        /* A failed call leaves the socket as it was. */
        json_t *in = info(f, s);
        assert_string_equal(json_string_value(json_object_get(in, "state")), "open");
        assert_null(json_object_get(in, "local"));
        json_decref(in);
    }

    /* bind to the loopback, port 0: the kernel picks a port, reported in local. */
    snprintf(p, sizeof p, "{\"socket\":%lld,\"address\":\"127.0.0.1:0\"}", s);
    r = call(f, "socket.bind", p, "2");
    json_t *local = json_object_get(check_result(r, "2"), "local");
    assert_true(json_is_object(local));
    assert_string_equal(json_string_value(json_object_get(local, "address")), "127.0.0.1");
    long long port = json_integer_value(json_object_get(local, "port"));
    assert_true(port > 0 && port <= 65535);
    json_t *in = info(f, s);
    assert_string_equal(json_string_value(json_object_get(in, "state")), "bound");
    assert_true(json_equal(json_object_get(in, "local"), local));
    json_decref(in);
    json_decref(r);

    /* bind twice: wrong state. */
    snprintf(p, sizeof p, "{\"socket\":%lld}", s);
    r = call(f, "socket.bind", p, "3");
    check_error(r, SOCKD_E_WRONG_STATE, "3", NULL);
    json_decref(r);

    /* listen from bound. */
    r = call(f, "socket.listen", p, "4");
    assert_int_equal(json_object_size(check_result(r, "4")), 0);
    json_decref(r);
    in = info(f, s);
    assert_string_equal(json_string_value(json_object_get(in, "state")), "listening");
    assert_int_equal(json_integer_value(json_object_get(in, "pending")), 0);
    json_decref(in);

    /* A listener neither sends, receives, connects nor listens again. */
    static const struct {
        const char *method;
        const char *rest;
    } on_listener[] = {
        {"socket.send", ",\"text\":\"x\""},
        {"socket.recv", ",\"length\":1"},
        {"socket.connect", ",\"address\":\"127.0.0.1:1\""},
        {"socket.listen", ""},
        {"socket.bind", ""},
        {"socket.shutdown", ""},
    };
    for (size_t i = 0; i < NELEM(on_listener); i++) {
        snprintf(p, sizeof p, "{\"socket\":%lld%s}", s, on_listener[i].rest);
        r = call(f, on_listener[i].method, p, "5");
        check_error(r, SOCKD_E_WRONG_STATE, "5", NULL);
        json_decref(r);
    }
    /* No such pending connection: -32602 naming "pending". */
    snprintf(p, sizeof p, "{\"socket\":%lld,\"pending\":1}", s);
    r = call(f, "socket.accept", p, "6");
    check_error(r, SOCKD_E_INVALID_PARAMS, "6", "pending");
    json_decref(r);
    r = call(f, "socket.reject", p, "7");
    check_error(r, SOCKD_E_INVALID_PARAMS, "7", "pending");
    json_decref(r);

    /* listen straight from open binds to the wildcard address. */
    long long s2 = open_tcp(f, NULL);
    snprintf(p, sizeof p, "{\"socket\":%lld,\"backlog\":4}", s2);
    r = call(f, "socket.listen", p, "8");
    check_result(r, "8");
    json_decref(r);
    in = info(f, s2);
    assert_string_equal(json_string_value(json_object_get(in, "state")), "listening");
    local = json_object_get(in, "local");
    assert_string_equal(json_string_value(json_object_get(local, "address")), "0.0.0.0");
    assert_true(json_integer_value(json_object_get(local, "port")) > 0);
    json_decref(in);

    /* Closing a listener. */
    snprintf(p, sizeof p, "{\"socket\":%lld}", s2);
    r = call(f, "socket.close", p, "9");
    assert_int_equal(json_integer_value(json_object_get(check_result(r, "9"), "discarded")), 0);
    json_decref(r);
    assert_int_equal(f->c->owner.nsocks, 1);
}

/* ---- the fast path: same bytes as the general path --------------------------------------- */

/* What one line makes the daemon write, with the fast path on or off (malloc'ed). */
static char *
bytes_for(struct fx *f, const char *line, size_t len, int fast, size_t *outlen)
{
    rpc_fastpath_enable(fast);
    rpc_handle_line(f->c, line, len);
    rpc_fastpath_enable(1);
    return fx_drain(f, outlen);
}

/*
 * Compare the two paths on one line; returns 1 if the fast path took it. A line whose output
 * differs between two runs of the general path (new handles, counters) is only run, not compared.
 */
static int
same_bytes(struct fx *f, const char *text, size_t len)
{
    size_t n1, n2, n3;
    /* an exact-size copy, so that a read past the line's end is caught by AddressSanitizer */
    char *line = malloc(len > 0 ? len : 1);
    assert_non_null(line);
    memcpy(line, text, len);
    if (rpc_fastpath_check(line, len) < 0)
        fail_msg("the fast scan reads %.*s unlike jansson", (int)len, line);
    char *a = bytes_for(f, line, len, 0, &n1);
    char *b = bytes_for(f, line, len, 0, &n2);
    unsigned long hits = rpc_fastpath_hits();
    char *c = bytes_for(f, line, len, 1, &n3);
    int took = rpc_fastpath_hits() != hits;
    if (n1 == n2 && memcmp(a, b, n1) == 0 && (n3 != n1 || memcmp(a, c, n1) != 0))
        fail_msg("fast path differs on %.*s:\n general: %s fast:    %s", (int)len, line, a, c);
    free(a);
    free(b);
    free(c);
    free(line);
    return took;
}

static void
test_fastpath_same_bytes(void **state)
{
    struct fx *f = *state;
    /* Lines the fast path must take: every answer the same as the general path's. */
    static const struct {
        const char *line;
        size_t len;
    } fast[] = {
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}")},
        {T("{\"method\":\"daemon.ping\",\"id\":-42,\"jsonrpc\":\"2.0\"}")},
        {T(" {  \"id\" : 0 ,\t\"jsonrpc\" :\"2.0\", \"method\": \"daemon.ping\" , \"params\" : { } "
           "} ")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":999999999999999999,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":-999999999999999999,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":\"\",\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":\"a b/c{}[],:\",\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"no.such.method\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.ping\",\"params\":{\"x\":1}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"daemon.ping\",\"params\":{\"x\":[1,{\"}\":"
           "\"]\"}]}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"daemon.hello\",\"params\":{\"client\":"
           "\"t\\u00e9\\\"}\"}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"daemon.hello\",\"params\":{\"client\":5}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"socket.info\",\"params\":{\"socket\":424242}"
           "}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"socket.info\",\"params\":{\"socket\":0}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"socket.send\",\"params\":{\"socket\":1,"
           "\"data\":\"AAAA\",\"text\":\"x\"}}")},
        /* params read by the flat reader, and by jansson when they are not flat */
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"socket.recv\",\"params\":{\"socket\":77,"
           "\"length\":65536,\"stream\":true}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"daemon.ping\",\"params\":{\"a\":null,"
           "\"b\":false,\"c\":-5,\"d\":\"\",\"\":0}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"daemon.hello\",\"params\" : { \"client\" "
           ": \"a b\" } }")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"daemon.hello\",\"params\":{\"client\":"
           "\"x\\u0041\"}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"socket.recv\",\"params\":{\"socket\":1.5}"
           "}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"socket.recv\",\"params\":{\"socket\":-0}"
           "}")},
    };
    for (size_t i = 0; i < NELEM(fast); i++)
        if (!same_bytes(f, fast[i].line, fast[i].len))
            fail_msg("fast path declined %s", fast[i].line);
    /* Lines it must decline (the general path owns them), and every envelope case. */
    static const struct {
        const char *line;
        size_t len;
    } slow[] = {
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}")},            /* notification */
        {T("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}]")}, /* batch */
        {T("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1e3,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":-0,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":9223372036854775807,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":\"\\u0041\",\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":\"\xc3\xa9\",\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":[]}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":null}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"extra\":1}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{\"a\":1,\"a\":2}"
           "}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{\"a\":tru}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"socket.recv\",\"params\":{\"socket\":"
           "99999999999999999999}}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"socket.recv\",\"params\":{\"socket\":"
           "true,\"length\":nul}}")},

        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{\"a\":1]}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{}} x")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{},}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":")},
        {T("{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1,\"params\":")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":")},
        {T("{\"jsonrpc\":")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\"}\0")},
        {T("{\"jsonrpc\":\"2.1\",\"id\":1,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":2.0,\"id\":1,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"id\":2,\"method\":\"daemon.ping\"}")},
        {T("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"method\":\"x\"}")},
    };
    for (size_t i = 0; i < NELEM(slow); i++)
        if (same_bytes(f, slow[i].line, slow[i].len))
            fail_msg("fast path took %s", slow[i].line);
    for (size_t i = 0; i < NELEM(env_cases); i++)
        same_bytes(f, env_cases[i].line, env_cases[i].len);
}

/*
 * Nesting deeper than the fast path follows goes to the general path, which keeps its limit: around
 * the fast path's own bound and around jansson's depth limit, the answers are the general path's.
 */
static void
test_fastpath_deep_params(void **state)
{
    struct fx *f = *state;
    static const int depths[] = {60, 61, 62, 63, 64, 65, 66, 2044, 2045, 2046, 2047, 2048, 2049};
    char *line = malloc(8192);
    assert_non_null(line);
    for (size_t d = 0; d < NELEM(depths); d++) {
        int n =
            snprintf(line, 8192,
                     "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.ping\",\"params\":{\"a\":");
        for (int k = 0; k < depths[d]; k++)
            line[n++] = '[';
        for (int k = 0; k < depths[d]; k++)
            line[n++] = ']';
        memcpy(line + n, "}}", 2);
        n += 2;
        int took = same_bytes(f, line, (size_t)n);
        assert_int_equal(took, depths[d] + 1 <= 64);
    }
    free(line);
}

int
main(void)
{
#define TF(fn) cmocka_unit_test_setup_teardown(fn, fx_setup_two, fx_teardown_two)
    const struct CMUnitTest tests[] = {
        TF(test_envelope_table),
        TF(test_silent_lines),
        TF(test_notification_executes),
        TF(test_ids_echoed),
        TF(test_response_order),
        TF(test_batch),
        TF(test_batch_in_turns),
        TF(test_nesting),
        TF(test_line_too_long),
        TF(test_hello),
        TF(test_listed_methods_exist),
        TF(test_ping),
        TF(test_stats),
        TF(test_socket_open_info_list),
        TF(test_socket_list_empty),
        TF(test_unknown_handles),
        TF(test_socket_open_unsupported),
        TF(test_socket_limit),
        TF(test_socket_states),
        TF(test_fastpath_same_bytes),
        TF(test_fastpath_deep_params),
    };
#undef TF
    return cmocka_run_group_tests(tests, fx_group_setup, fx_group_teardown);
}
