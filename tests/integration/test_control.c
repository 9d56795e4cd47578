/*
 * Control protocol against the real daemon: framing, JSON-RPC envelope, batches, every error code
 * the core can answer, ordering guarantees, handles, daemon.* (sockd-protocol.7: MESSAGES, ORDERING
 * GUARANTEES, HANDLES AND OWNERSHIP, ERRORS, FLOW CONTROL AND LIMITS).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;

/* The socket.* and daemon.* methods of the core (tcp) build. */
static const char *const core_methods[] = {
    "daemon.hello",       "daemon.ping",   "daemon.stats",   "socket.accept",
    "socket.bind",        "socket.close",  "socket.connect", "socket.info",
    "socket.list",        "socket.listen", "socket.open",    "socket.recv",
    "socket.recv_cancel", "socket.reject", "socket.send",    "socket.shutdown",
};

static const char *const limit_keys[] = {
    "max_clients",         "max_sockets_per_client", "max_send_buffer", "max_message",
    "max_pending_accepts", "accept_timeout_ms",      "max_recv_length",
};

/* error.code of a response message, 0 when it is not an error response. */
static int
msg_err_code(const json_t *msg)
{
    return (int)json_integer_value(json_object_get(json_object_get(msg, "error"), "code"));
}

/* data.<key> of an error object (as returned by h_err) as a string, or NULL. */
static const char *
err_data_str(const json_t *err, const char *key)
{
    return json_string_value(json_object_get(json_object_get(err, "data"), key));
}

/* A well-formed response: jsonrpc "2.0", an id member, exactly one of result/error. */
static void
check_response_shape(const json_t *msg)
{
    const json_t *err = json_object_get(msg, "error");

    EXPECT_TRUE(json_is_object(msg), "%s", jd(msg));
    EXPECT_STR(json_string_value(json_object_get(msg, "jsonrpc")), "2.0", "%s", jd(msg));
    EXPECT_TRUE(json_object_get(msg, "id") != NULL, "%s", jd(msg));
    EXPECT_TRUE(json_object_get(msg, "method") == NULL, "%s", jd(msg));
    EXPECT_TRUE((json_object_get(msg, "result") != NULL) != (err != NULL), "%s", jd(msg));
    if (err) {
        EXPECT_TRUE(json_is_integer(json_object_get(err, "code")), "%s", jd(msg));
        EXPECT_TRUE(json_is_string(json_object_get(err, "message")), "%s", jd(msg));
    }
}

/* Assert msg is an error response with CODE; id_json (JSON text) is the expected id, or NULL for
   "do not check". */
static void
check_error(const json_t *msg, int code, const char *id_json)
{
    check_response_shape(msg);
    EXPECT_INT(msg_err_code(msg), code, "%s", jd(msg));
    if (id_json) {
        json_t *want = json_loads(id_json, JSON_DECODE_ANY, NULL);
        EXPECT_TRUE(want != NULL, "want");
        EXPECT_TRUE(json_equal(json_object_get(msg, "id"), want), "%s", jd(msg));
        json_decref(want);
    }
}

/* Send LINE (with its newline) and return the next message read. */
static json_t *
raw(struct sockd_client *c, const char *line)
{
    h_send_raw(c, line);
    return h_read(c, H_TIMEOUT_MS);
}

/* Like check_error, without asserting: 1 when msg is an error response with CODE and id_json. */
static int
error_matches(const json_t *msg, int code, const char *id_json)
{
    int ok = json_is_object(msg) && msg_err_code(msg) == code && json_object_get(msg, "id");

    if (ok && id_json) {
        json_t *want = json_loads(id_json, JSON_DECODE_ANY, NULL);
        ok = json_equal(json_object_get(msg, "id"), want);
        json_decref(want);
    }
    return ok;
}

/* Send each line, expect one error CODE (id null) for each; report every mismatch, then fail. */
static void
expect_errors_for_lines(struct sockd_client *c, const char *const *lines, size_t n, int code)
{
    int bad = 0;

    for (size_t i = 0; i < n; i++) {
        json_t *m = raw(c, lines[i]);
        if (!error_matches(m, code, "null")) {
            fprintf(stderr, "line %zu: expected error %d with id null for: %s", i, code, lines[i]);
            h_dump("got", m);
            bad++;
        } else {
            check_response_shape(m);
        }
        json_decref(m);
    }
    EXPECT_INT(bad, 0, "bad");
}

/* Assert msg is a success response with id (JSON text). */
static void
check_result(const json_t *msg, const char *id_json)
{
    json_t *want = json_loads(id_json, JSON_DECODE_ANY, NULL);

    EXPECT_TRUE(want != NULL, "want");
    check_response_shape(msg);
    EXPECT_TRUE(json_object_get(msg, "result") != NULL, "%s", jd(msg));
    EXPECT_TRUE(json_equal(json_object_get(msg, "id"), want), "%s", jd(msg));
    json_decref(want);
}

/* Send a ping with id "probe-N" and assert that the very next message is its answer. */
static void
ping_next(struct sockd_client *c)
{
    static int n;
    char line[128], id[64];
    json_t *m;

    snprintf(id, sizeof id, "\"probe-%d\"", ++n);
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":%s}\n", id);
    m = raw(c, line);
    check_result(m, id);
    json_decref(m);
}

static json_t *
stats(struct sockd_client *c)
{
    return h_ok(c, "daemon.stats", NULL);
}

static long long
stat_int(const json_t *st, const char *key)
{
    const json_t *v = json_object_get(st, key);
    EXPECT_TRUE(json_is_integer(v), "%s", jd(st));
    return json_integer_value(v);
}

static long long
stat_sockets(const json_t *st, const char *type)
{
    const json_t *v = json_object_get(json_object_get(st, "sockets"), type);
    EXPECT_TRUE(json_is_integer(v), "%s", jd(st));
    return json_integer_value(v);
}

static int
group_setup(void **state)
{
    /* test_300_clients: more control connections of one uid than max-clients-per-uid */
    h_daemon_start(&D, "max-clients-per-uid 1024\n");
    return 0;
}

static int
group_teardown(void **state)
{
    if (D.pid > 0) /* else the group setup already failed and said why */
        h_daemon_stop(&D);
    return 0;
}

/* ---- daemon.* ---- */

static void
test_hello(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    json_t *r = h_ok(c, "daemon.hello", "{s:s}", "client", "test_control");
    json_t *methods = json_object_get(r, "methods");
    json_t *limits = json_object_get(r, "limits");
    json_t *err = NULL;
    size_t i, j;

    EXPECT_STR(json_string_value(json_object_get(r, "server")), "sockd", "%s", jd(r));
    EXPECT_TRUE(json_is_string(json_object_get(r, "version")) &&
                    json_string_length(json_object_get(r, "version")) > 0,
                "%s", jd(r));
    EXPECT_TRUE(json_is_integer(json_object_get(r, "protocol")) &&
                    json_integer_value(json_object_get(r, "protocol")) == 1,
                "%s", jd(r));

    /* methods: strings, sorted, no duplicates, every core method present. */
    EXPECT_TRUE(json_is_array(methods), "%s", jd(r));
    for (i = 0; i < json_array_size(methods); i++) {
        EXPECT_TRUE(json_is_string(json_array_get(methods, i)), "%s", jd(r));
        if (i > 0)
            EXPECT_TRUE(strcmp(json_string_value(json_array_get(methods, i - 1)),
                               json_string_value(json_array_get(methods, i))) < 0,
                        "%s", jd(r));
    }
    for (j = 0; j < sizeof core_methods / sizeof core_methods[0]; j++) {
        int found = 0;
        for (i = 0; i < json_array_size(methods); i++)
            if (!strcmp(json_string_value(json_array_get(methods, i)), core_methods[j]))
                found = 1;
        if (!found)
            fprintf(stderr, "daemon.hello methods lack %s\n", core_methods[j]);
        EXPECT_TRUE(found, "%s", jd(r));
    }

    /* limits: every key, positive integers, the documented defaults (no config file here). */
    EXPECT_TRUE(json_is_object(limits), "%s", jd(r));
    for (j = 0; j < sizeof limit_keys / sizeof limit_keys[0]; j++) {
        json_t *v = json_object_get(limits, limit_keys[j]);
        if (!json_is_integer(v) || json_integer_value(v) <= 0)
            fprintf(stderr, "daemon.hello limits.%s missing or not a positive integer\n",
                    limit_keys[j]);
        EXPECT_TRUE(json_is_integer(v) && json_integer_value(v) > 0, "%s", jd(r));
    }
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_clients")), 1024, "%s", jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_sockets_per_client")), 4096, "%s",
               jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_send_buffer")), 4194304, "%s",
               jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_message")), 16777216, "%s", jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_pending_accepts")), 128, "%s",
               jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "accept_timeout_ms")), 10000, "%s",
               jd(r));
    EXPECT_INT(json_integer_value(json_object_get(limits, "max_recv_length")), 16777216, "%s",
               jd(r));
    json_decref(r);

    /* client is optional; when given it must be a string. */
    r = h_ok(c, "daemon.hello", NULL);
    EXPECT_INT(json_integer_value(json_object_get(r, "protocol")), 1, "%s", jd(r));
    json_decref(r);
    EXPECT_INT(h_err(c, &err, "daemon.hello", "{s:i}", "client", 5), -32602,
               "daemon.hello error code");
    EXPECT_STR(err_data_str(err, "param"), "client", "%s", jd(err));
    json_decref(err);
    h_client_close(c);
}

static void
test_ping(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    json_t *r = h_ok(c, "daemon.ping", NULL), *m, *err = NULL;

    EXPECT_TRUE(json_is_object(r) && json_object_size(r) == 0, "%s", jd(r));
    json_decref(r);
    r = h_ok(c, "daemon.ping", "{}");
    EXPECT_TRUE(json_is_object(r) && json_object_size(r) == 0, "%s", jd(r));
    json_decref(r);
    EXPECT_INT(h_err(c, &err, "daemon.ping", "{s:i}", "x", 1), -32602, "daemon.ping error code");
    EXPECT_STR(err_data_str(err, "param"), "x", "%s", jd(err));
    json_decref(err);

    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":{},\"id\":11}\n");
    check_result(m, "11");
    EXPECT_INT(json_object_size(json_object_get(m, "result")), 0, "%s", jd(m));
    json_decref(m);
    h_client_close(c);
}

static void
test_stats(void **state)
{
    struct sockd_client *x = h_client_auto(&D), *y;
    json_t *s1, *s2, *s3, *s4;
    static const char *const types[] = {"tcp", "tls", "udp", "dtls", "unix", "total"};
    long long sock;

    /* Earlier tests' clients are gone (bounded wait for the daemon to notice). */
    s1 = h_wait_clients(x, 1);
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        EXPECT_TRUE(stat_sockets(s1, types[i]) >= 0, "%s", jd(s1));
    EXPECT_TRUE(stat_int(s1, "contexts") >= 0, "%s", jd(s1));
    EXPECT_TRUE(stat_int(s1, "bytes_in") >= 0, "%s", jd(s1));
    EXPECT_TRUE(stat_int(s1, "bytes_out") >= 0, "%s", jd(s1));
    EXPECT_TRUE(stat_int(s1, "requests") >= 1, "%s", jd(s1));
    EXPECT_TRUE(stat_int(s1, "uptime_ms") >= 0, "%s", jd(s1));

    /* A second client appears in the count. */
    y = h_client_auto(&D);
    json_decref(h_ok(y, "daemon.ping", NULL));
    s2 = stats(x);
    EXPECT_INT(stat_int(s2, "clients"), stat_int(s1, "clients") + 1, "%s", jd(s2));
    EXPECT_TRUE(stat_int(s2, "requests") > stat_int(s1, "requests"), "%s", jd(s2));
    EXPECT_TRUE(stat_int(s2, "uptime_ms") >= stat_int(s1, "uptime_ms"), "%s", jd(s2));

    /* An open tcp socket appears under tcp and total, and goes away on close. */
    sock = h_open(y, "tcp");
    s3 = stats(x);
    EXPECT_INT(stat_sockets(s3, "tcp"), stat_sockets(s2, "tcp") + 1, "%s", jd(s3));
    EXPECT_INT(stat_sockets(s3, "total"), stat_sockets(s2, "total") + 1, "%s", jd(s3));
    EXPECT_INT(stat_sockets(s3, "udp"), stat_sockets(s2, "udp"), "%s", jd(s3));
    json_decref(h_ok(y, "socket.close", "{s:I}", "socket", (json_int_t)sock));
    s4 = stats(x);
    EXPECT_INT(stat_sockets(s4, "tcp"), stat_sockets(s2, "tcp"), "%s", jd(s4));
    EXPECT_INT(stat_sockets(s4, "total"), stat_sockets(s2, "total"), "%s", jd(s4));
    json_decref(s4);

    /* A socket left open when its client disconnects is closed with it. */
    sock = h_open(y, "tcp");
    h_client_close(y);
    s4 = h_wait_clients(x, stat_int(s1, "clients"));
    EXPECT_INT(stat_sockets(s4, "total"), stat_sockets(s2, "total"), "%s", jd(s4));
    json_decref(s1);
    json_decref(s2);
    json_decref(s3);
    json_decref(s4);
    h_client_close(x);
}

/* ---- envelope ---- */

static void
test_ids_echoed(void **state)
{
    static const char *const ids[] = {
        "\"abc\"",
        "\"\"",
        "\"\\u00e9\\ud83d\\ude00 x\"",
        "7",
        "0",
        "-42",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "-0.25",
        "1e+300",
        "null",
    };
    struct sockd_client *c = h_client_auto(&D);
    char line[256];

    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        json_t *m;

        snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":%s}\n",
                 ids[i]);
        m = raw(c, line);
        check_result(m, ids[i]);
        json_decref(m);
        /* Error responses echo the id the same way. */
        snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\",\"id\":%s}\n",
                 ids[i]);
        m = raw(c, line);
        check_error(m, -32601, ids[i]);
        json_decref(m);
    }
    h_client_close(c);
}

static void
test_notifications_unanswered(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    json_t *s1, *s2, *m;

    /* Earlier tests' clients (and their sockets) are gone before counting. */
    s1 = h_wait_clients(c, 1);
    /* Executed, never answered: not even when they fail. */
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}\n");
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":{}}\n");
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"no.such.method\"}\n");
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":[1]}\n");
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":{\"bogus\":1}}\n");
    h_send_raw(
        c, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"params\":{\"socket\":987654321}}\n");
    h_send_raw(c,
               "{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"params\":{\"type\":\"tcp\"}}\n");
    ping_next(c);

    /* The socket.open notification was executed. */
    s2 = stats(c);
    EXPECT_INT(stat_sockets(s2, "tcp"), stat_sockets(s1, "tcp") + 1, "%s", jd(s2));
    json_decref(s1);
    json_decref(s2);

    /* An invalid envelope is answered even without an id (id null). */
    m = raw(c, "{\"jsonrpc\":\"1.0\",\"method\":\"daemon.ping\"}\n");
    check_error(m, -32600, "null");
    json_decref(m);
    m = raw(c, "{\"method\":\"daemon.ping\"}\n");
    check_error(m, -32600, "null");
    json_decref(m);
    ping_next(c);
    h_client_close(c);
}

static void
test_batches(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    json_t *m;

    /* Answers in member order; the notification member gets no entry. */
    m = raw(c, "[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":\"b\"},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\",\"id\":3},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.stats\",\"id\":null}]\n");
    EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 4, "%s", jd(m));
    check_result(json_array_get(m, 0), "1");
    check_result(json_array_get(m, 1), "\"b\"");
    EXPECT_INT(json_integer_value(
                   json_object_get(json_object_get(json_array_get(m, 1), "result"), "protocol")),
               1, "%s", jd(m));
    check_error(json_array_get(m, 2), -32601, "3");
    check_result(json_array_get(m, 3), "null");
    json_decref(m);

    /* A batch of only notifications (failing ones included) writes nothing. */
    h_send_raw(c, "[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"},"
                  "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\"},"
                  "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":[]}]\n");
    ping_next(c);

    /* [] is one -32600, not an array. */
    m = raw(c, "[]\n");
    EXPECT_TRUE(json_is_object(m), "%s", jd(m));
    check_error(m, -32600, "null");
    json_decref(m);
    m = raw(c, " [ ] \n");
    EXPECT_TRUE(json_is_object(m), "%s", jd(m));
    check_error(m, -32600, "null");
    json_decref(m);

    /* Non-object members get -32600 each, in place. */
    m = raw(c,
            "[1,\"x\",null,{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":5},[],true]\n");
    EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 6, "%s", jd(m));
    check_error(json_array_get(m, 0), -32600, "null");
    check_error(json_array_get(m, 1), -32600, "null");
    check_error(json_array_get(m, 2), -32600, "null");
    check_result(json_array_get(m, 3), "5");
    check_error(json_array_get(m, 4), -32600, "null");
    check_error(json_array_get(m, 5), -32600, "null");
    json_decref(m);

    /* One member: still an array. A notification failing inside a batch gets no entry. */
    m = raw(c, "[{\"jsonrpc\":\"2.0\",\"method\":\"no.such\"},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":9}]\n");
    EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 1, "%s", jd(m));
    check_result(json_array_get(m, 0), "9");
    json_decref(m);

    /* Invalid members (envelope errors) inside a batch are answered in place, id null. */
    m = raw(c, "[{\"jsonrpc\":\"1.0\",\"method\":\"daemon.ping\"},"
               "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":{}}]\n");
    EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 2, "%s", jd(m));
    check_error(json_array_get(m, 0), -32600, "null");
    check_error(json_array_get(m, 1), -32600, "null");
    json_decref(m);

    /* A batch that is not valid JSON is one -32700. */
    m = raw(c, "[{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1},\n");
    EXPECT_TRUE(json_is_object(m), "%s", jd(m));
    check_error(m, -32700, "null");
    json_decref(m);
    ping_next(c);
    h_client_close(c);
}

/* ---- error codes ---- */

static void
test_parse_errors(void **state)
{
    static const char *const lines[] = {
        "{\n",
        "not json\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1,}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1}}\n",
        "{'jsonrpc':'2.0','method':'daemon.ping','id':1}\n",
        /* duplicate keys, top level and nested */
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1,\"id\":2}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"method\":\"daemon.ping\",\"id\":1}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"params\":{\"client\":\"a\",\"client\":"
        "\"b\"},\"id\":1}\n",
        /* invalid UTF-8: a stray byte, an overlong encoding, a truncated sequence */
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"\xff\"}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"\xc0\xaf\"}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"\xe2\x82\"}\n",
        /* a lone surrogate escape */
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"\\ud800\"}\n",
    };
    static const char nul_line[] = "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\0\",\"id\":1}\n";
    static const char nul_line2[] = "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1}\0\n";
    struct sockd_client *c = h_client_auto(&D);
    const size_t depth = 100000;
    char *deep;
    json_t *m;

    expect_errors_for_lines(c, lines, sizeof lines / sizeof lines[0], -32700);
    ping_next(c);

    /* NUL bytes inside a string and after the object. */
    EXPECT_INT(sockd_client_send_raw(c, nul_line, sizeof nul_line - 1), 0,
               "sockd_client_send_raw: %s", strerror(errno));
    m = h_read(c, H_TIMEOUT_MS);
    check_error(m, -32700, "null");
    json_decref(m);
    EXPECT_INT(sockd_client_send_raw(c, nul_line2, sizeof nul_line2 - 1), 0,
               "sockd_client_send_raw: %s", strerror(errno));
    m = h_read(c, H_TIMEOUT_MS);
    check_error(m, -32700, "null");
    json_decref(m);
    ping_next(c);

    /* 100000 nested '[' (and their ']'). */
    deep = malloc(2 * depth + 2);
    EXPECT_TRUE(deep != NULL, "deep");
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\n';
    deep[2 * depth + 1] = 0;
    m = raw(c, deep);
    check_error(m, -32700, "null");
    json_decref(m);
    /* ... and unbalanced. */
    deep[depth] = '\n';
    deep[depth + 1] = 0;
    m = raw(c, deep);
    check_error(m, -32700, "null");
    json_decref(m);
    free(deep);
    ping_next(c);
    h_client_close(c);
}

static void
test_invalid_request(void **state)
{
    /* Envelopes whose id is absent or unusable: -32600 with id null. */
    static const char *const null_id[] = {
        "42\n",
        "\"daemon.ping\"\n",
        "null\n",
        "true\n",
        "{}\n",
        "{\"method\":\"daemon.ping\"}\n",
        "{\"jsonrpc\":\"2.0\"}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":{}}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":[1]}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":true}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":false}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":{\"a\":1}}\n",
    };
    /* Envelopes with a usable id but invalid otherwise: -32600 (id echoed or null). */
    static const char *const with_id[] = {
        "{\"method\":\"daemon.ping\",\"id\":1}\n",
        "{\"jsonrpc\":\"1.0\",\"method\":\"daemon.ping\",\"id\":2}\n",
        "{\"jsonrpc\":2.0,\"method\":\"daemon.ping\",\"id\":3}\n",
        "{\"jsonrpc\":null,\"method\":\"daemon.ping\",\"id\":4}\n",
        "{\"jsonrpc\":\"2.0\",\"id\":5}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":5,\"id\":6}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":null,\"id\":7}\n",
        "{\"jsonrpc\":\"2.0\",\"method\":[\"daemon.ping\"],\"id\":8}\n",
    };
    struct sockd_client *c = h_client_auto(&D);
    json_t *m;

    int bad = 0;

    for (size_t i = 0; i < sizeof with_id / sizeof with_id[0]; i++) {
        json_t *id;
        m = raw(c, with_id[i]);
        id = json_object_get(m, "id");
        if (!error_matches(m, -32600, NULL) ||
            !(json_is_null(id) || json_integer_value(id) == (json_int_t)i + 1)) {
            fprintf(stderr, "expected error -32600 (id %zu or null) for: %s", i + 1, with_id[i]);
            h_dump("got", m);
            bad++;
        }
        json_decref(m);
    }
    ping_next(c);
    expect_errors_for_lines(c, null_id, sizeof null_id / sizeof null_id[0], -32600);
    EXPECT_INT(bad, 0, "bad");
    ping_next(c);
    h_client_close(c);
}

static void
test_long_line(void **state)
{
    static const char head[] =
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1,\"params\":{\"pad\":\"";
    static const char tail[] = "\"}}\n";
    const size_t pad = 17u << 20; /* 17 MiB > max-message (16 MiB) */
    size_t len = sizeof head - 1 + pad + sizeof tail - 1;
    struct sockd_client *c = h_client_auto(&D);
    char *line = malloc(len + 1), *big_id;
    json_t *m, *data;

    EXPECT_TRUE(line != NULL, "line");
    memcpy(line, head, sizeof head - 1);
    memset(line + sizeof head - 1, 'a', pad);
    memcpy(line + sizeof head - 1 + pad, tail, sizeof tail - 1);
    line[len] = 0;
    EXPECT_INT(sockd_client_send_raw(c, line, len), 0, "sockd_client_send_raw: %s",
               strerror(errno));

    m = h_read(c, 3 * H_TIMEOUT_MS);
    check_error(m, -32600, "null");
    data = json_object_get(json_object_get(m, "error"), "data");
    EXPECT_STR(json_string_value(json_object_get(data, "reason")), "message_too_long", "%s", jd(m));
    EXPECT_STR(json_string_value(json_object_get(data, "limit")), "max-message", "%s", jd(m));
    json_decref(m);
    /* Exactly one error: the next message is the answer to the next request. */
    ping_next(c);

    /* A second over-long line, this time with no JSON shape at all. */
    memset(line, 'x', len - 1);
    EXPECT_INT(sockd_client_send_raw(c, line, len), 0, "sockd_client_send_raw: %s",
               strerror(errno));
    m = h_read(c, 3 * H_TIMEOUT_MS);
    check_error(m, -32600, "null");
    json_decref(m);
    ping_next(c);
    free(line);

    /* A large line under the cap (1 MiB id) is fine and echoed whole. */
    big_id = malloc((1u << 20) + 128);
    EXPECT_TRUE(big_id != NULL, "big_id");
    strcpy(big_id, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"");
    len = strlen(big_id);
    memset(big_id + len, 'z', 1u << 20);
    strcpy(big_id + len + (1u << 20), "\"}\n");
    m = raw(c, big_id);
    check_response_shape(m);
    EXPECT_INT(json_string_length(json_object_get(m, "id")), (1u << 20), "%s",
               jd(json_object_get(m, "error")));
    json_decref(m);
    free(big_id);
    ping_next(c);
    h_client_close(c);
}

static void
test_method_not_found(void **state)
{
    static const char *const names[] = {
        "daemon.nope", "socket.nope", "", "DAEMON.PING", "daemon.ping ", "daemon", "context.nope"};
    struct sockd_client *c = h_client_auto(&D);

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        EXPECT_INT(h_err(c, NULL, names[i], NULL), -32601, "%s error code", names[i]);
    ping_next(c);
    h_client_close(c);
}

/* Assert an error -32602 whose data.param is PARAM (NULL: data.param not checked). */
static void
expect_param_error(json_t *err, const char *param)
{
    EXPECT_INT(sockd_client_error_code(err), -32602, "%s", jd(err));
    if (param)
        EXPECT_STR(err_data_str(err, "param"), param, "%s", jd(err));
    json_decref(err);
}

static void
test_invalid_params(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    json_t *err, *m;
    long long s, open_s;

    peer = h_peer_auto(H_SINK, 0);
    s = h_connect_tcp(c, peer->port);
    open_s = h_open(c, "tcp");

    /* params must be an object. */
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":[],\"id\":1}\n");
    check_error(m, -32602, "1");
    json_decref(m);
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":[1,2],\"id\":2}\n");
    check_error(m, -32602, "2");
    json_decref(m);
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"params\":[\"tcp\"],\"id\":3}\n");
    check_error(m, -32602, "3");
    json_decref(m);
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":\"x\",\"id\":4}\n");
    check_error(m, -32602, "4");
    json_decref(m);
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"params\":5,\"id\":5}\n");
    check_error(m, -32602, "5");
    json_decref(m);

    /* Unknown param names are named. */
    err = NULL;
    h_err(c, &err, "daemon.ping", "{s:b}", "bogus", 1);
    expect_param_error(err, "bogus");
    h_err(c, &err, "daemon.stats", "{s:i}", "verbose", 1);
    expect_param_error(err, "verbose");
    h_err(c, &err, "socket.open", "{s:s, s:s}", "type", "tcp", "tyep", "tcp");
    expect_param_error(err, "tyep");
    h_err(c, &err, "socket.info", "{s:I, s:i}", "socket", (json_int_t)s, "sockett", 1);
    expect_param_error(err, "sockett");
    h_err(c, &err, "socket.recv", "{s:I, s:i, s:b}", "socket", (json_int_t)s, "length", 1, "partal",
          1);
    expect_param_error(err, "partal");
    h_err(c, &err, "socket.send", "{s:I, s:s, s:b}", "socket", (json_int_t)s, "text", "x", "notfy",
          0);
    expect_param_error(err, "notfy");

    /* Wrong types are named. */
    h_err(c, &err, "socket.open", "{s:i}", "type", 5);
    expect_param_error(err, "type");
    h_err(c, &err, "socket.open", "{s:s, s:s}", "type", "tcp", "ipv6", "yes");
    expect_param_error(err, "ipv6");
    h_err(c, &err, "socket.info", "{s:s}", "socket", "1");
    expect_param_error(err, "socket");
    h_err(c, &err, "socket.info", "{s:f}", "socket", 1.5);
    expect_param_error(err, "socket");
    h_err(c, &err, "socket.recv", "{s:I, s:s}", "socket", (json_int_t)s, "length", "10");
    expect_param_error(err, "length");
    h_err(c, &err, "socket.send", "{s:I, s:i}", "socket", (json_int_t)s, "text", 5);
    expect_param_error(err, "text");
    h_err(c, &err, "socket.send", "{s:I, s:b}", "socket", (json_int_t)s, "data", 1);
    expect_param_error(err, "data");
    h_err(c, &err, "socket.connect", "{s:I, s:i}", "socket", (json_int_t)open_s, "address", 5);
    expect_param_error(err, "address");
    h_err(c, &err, "socket.connect", "{s:I, s:s, s:s}", "socket", (json_int_t)open_s, "address",
          "127.0.0.1", "port", "80");
    expect_param_error(err, "port");

    /* Missing, out of range, malformed. */
    h_err(c, &err, "socket.open", NULL);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.info", NULL);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.open", "{s:s}", "type", "sctp");
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.recv", "{s:I}", "socket", (json_int_t)s);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 0);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.recv", "{s:I, s:I}", "socket", (json_int_t)s, "length",
          (json_int_t)16777217);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", -1);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.send", "{s:I}", "socket", (json_int_t)s);
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.send", "{s:I, s:s, s:s}", "socket", (json_int_t)s, "text", "a", "data",
          "YQ==");
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "data", "!!not base64!!");
    expect_param_error(err, NULL);

    /* Malformed addresses: reason address_invalid; the socket stays "open". */
    h_err(c, &err, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)open_s, "address",
          "127.0.0.1");
    EXPECT_STR(err_data_str(err, "reason"), "address_invalid", "%s", jd(err));
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)open_s, "address",
          "127.0.0.1:99999");
    EXPECT_STR(err_data_str(err, "reason"), "address_invalid", "%s", jd(err));
    expect_param_error(err, NULL);
    h_err(c, &err, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)open_s, "address",
          "[::1:80");
    EXPECT_STR(err_data_str(err, "reason"), "address_invalid", "%s", jd(err));
    expect_param_error(err, NULL);
    m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)open_s);
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "open", "%s", jd(m));
    json_decref(m);
    /* The connected socket was not disturbed by any of it. */
    m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "connected", "%s", jd(m));
    EXPECT_INT(json_integer_value(json_object_get(m, "bytes_sent")), 0, "%s", jd(m));
    EXPECT_INT(json_integer_value(json_object_get(m, "send_buffered")), 0, "%s", jd(m));
    json_decref(m);

    h_client_close(c);
}

static void
test_unknown_handle(void **state)
{
    struct sockd_client *a = h_client_auto(&D), *b = h_client_auto(&D);
    json_t *err_none = NULL, *err_other = NULL, *m;
    long long theirs;

    /* Never existed. */
    EXPECT_INT(h_err(a, &err_none, "socket.info", "{s:I}", "socket", (json_int_t)987654321), -32001,
               "socket.info error code");
    EXPECT_INT(h_err(a, NULL, "socket.close", "{s:I}", "socket", (json_int_t)987654321), -32001,
               "socket.close error code");
    EXPECT_INT(
        h_err(a, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)987654321, "text", "x"),
        -32001, "socket.send error code");
    EXPECT_INT(
        h_err(a, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)987654321, "length", 1),
        -32001, "socket.recv error code");
    EXPECT_INT(h_err(a, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)987654321,
                     "address", "127.0.0.1:1"),
               -32001, "socket.connect error code");
    EXPECT_INT(h_err(a, NULL, "socket.shutdown", "{s:I}", "socket", (json_int_t)987654321), -32001,
               "socket.shutdown error code");

    /* Owned by another client: exactly as if it did not exist. */
    theirs = h_open(b, "tcp");
    EXPECT_INT(h_err(a, &err_other, "socket.info", "{s:I}", "socket", (json_int_t)theirs), -32001,
               "socket.info error code");
    {
        const char *r1 = err_data_str(err_none, "reason"), *r2 = err_data_str(err_other, "reason");
        EXPECT_TRUE((!r1 && !r2) || (r1 && r2 && !strcmp(r1, r2)), "%s", jd(err_other));
    }
    EXPECT_INT(h_err(a, NULL, "socket.close", "{s:I}", "socket", (json_int_t)theirs), -32001,
               "socket.close error code");
    EXPECT_INT(h_err(a, NULL, "socket.bind", "{s:I}", "socket", (json_int_t)theirs), -32001,
               "socket.bind error code");
    EXPECT_INT(h_err(a, NULL, "socket.connect", "{s:I, s:s}", "socket", (json_int_t)theirs,
                     "address", "127.0.0.1:1"),
               -32001, "socket.connect error code");
    /* The owner's socket was untouched. */
    m = h_ok(b, "socket.info", "{s:I}", "socket", (json_int_t)theirs);
    EXPECT_INT(json_integer_value(json_object_get(m, "socket")), theirs, "%s", jd(m));
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "open", "%s", jd(m));
    json_decref(m);

    /* A closed handle is unknown afterwards, to its owner too. */
    json_decref(h_ok(b, "socket.close", "{s:I}", "socket", (json_int_t)theirs));
    EXPECT_INT(h_err(b, NULL, "socket.info", "{s:I}", "socket", (json_int_t)theirs), -32001,
               "socket.info error code");
    EXPECT_INT(h_err(b, NULL, "socket.close", "{s:I}", "socket", (json_int_t)theirs), -32001,
               "socket.close error code");
    json_decref(err_none);
    json_decref(err_other);
    h_client_close(a);
    h_client_close(b);
}

static void
test_wrong_state(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    long long o, s;
    json_t *m;

    peer = h_peer_auto(H_SINK, 0);
    o = h_open(c, "tcp");
    EXPECT_INT(h_err(c, NULL, "socket.send", "{s:I, s:s}", "socket", (json_int_t)o, "text", "x"),
               -32002, "socket.send error code");
    EXPECT_INT(h_err(c, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)o, "length", 1),
               -32002, "socket.recv error code");
    EXPECT_INT(h_err(c, NULL, "socket.shutdown", "{s:I}", "socket", (json_int_t)o), -32002,
               "socket.shutdown error code");
    m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)o);
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "open", "%s", jd(m));
    json_decref(m);

    s = h_connect_tcp(c, peer->port);
    EXPECT_INT(h_err(c, NULL, "socket.bind", "{s:I}", "socket", (json_int_t)s), -32002,
               "socket.bind error code");
    EXPECT_INT(h_err(c, NULL, "socket.listen", "{s:I}", "socket", (json_int_t)s), -32002,
               "socket.listen error code");
    EXPECT_INT(h_err(c, NULL, "socket.connect", "{s:I, s:s, s:i}", "socket", (json_int_t)s,
                     "address", "127.0.0.1", "port", peer->port),
               -32002, "socket.connect error code");
    EXPECT_INT(h_err(c, NULL, "socket.accept", "{s:I, s:i}", "socket", (json_int_t)s, "pending", 1),
               -32002, "socket.accept error code");
    m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "connected", "%s", jd(m));
    json_decref(m);
    h_client_close(c);
}

static void
test_send_cap(void **state)
{
    const size_t cap = 4194304;
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    unsigned char *data = malloc(cap + 1);
    char *b64;
    json_t *err = NULL, *m;
    long long s;

    EXPECT_TRUE(data != NULL, "data");
    memset(data, 0x5a, cap + 1);
    peer = h_peer_auto(H_SINK, 0);
    s = h_connect_tcp(c, peer->port);

    /* One byte past the cap: -32003 max-send-buffer, nothing queued. */
    b64 = h_b64(data, cap + 1);
    EXPECT_INT(h_err(c, &err, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "data", b64),
               -32003, "socket.send error code");
    EXPECT_STR(err_data_str(err, "limit"), "max-send-buffer", "%s", jd(err));
    json_decref(err);
    free(b64);
    m = h_ok(c, "socket.info", "{s:I}", "socket", (json_int_t)s);
    EXPECT_INT(json_integer_value(json_object_get(m, "send_buffered")), 0, "%s", jd(m));
    EXPECT_INT(json_integer_value(json_object_get(m, "bytes_sent")), 0, "%s", jd(m));
    EXPECT_STR(json_string_value(json_object_get(m, "state")), "connected", "%s", jd(m));
    json_decref(m);

    /* Exactly the cap fits. */
    b64 = h_b64(data, cap);
    m = h_ok(c, "socket.send", "{s:I, s:s}", "socket", (json_int_t)s, "data", b64);
    EXPECT_INT(json_integer_value(json_object_get(m, "queued")), (json_int_t)cap, "%s", jd(m));
    json_decref(m);
    free(b64);
    free(data);
    h_client_close(c);
}

static void
test_unsupported(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    json_t *st1 = h_wait_clients(c, 1), *st2;
    long long o;

    EXPECT_INT(h_err(c, NULL, "socket.open", "{s:s}", "type", "tls"), -32602,
               "socket.open error code"); /* needs a context */
    EXPECT_INT(h_err(c, NULL, "socket.open", "{s:s}", "type", "dtls"), -32602,
               "socket.open error code"); /* needs a (dtls) context too */
    /* Host names are only for connect: bind takes an IP address or localhost. */
    o = h_open(c, "tcp");
    EXPECT_INT(h_err(c, NULL, "socket.bind", "{s:I, s:s}", "socket", (json_int_t)o, "address",
                     "host.test:0"),
               -32602, "socket.bind error code");
    /* Nothing was created by the failed opens. */
    st2 = stats(c);
    EXPECT_INT(stat_sockets(st2, "total"), stat_sockets(st1, "total") + 1, "%s", jd(st2));
    EXPECT_INT(stat_sockets(st2, "tls"), stat_sockets(st1, "tls"), "%s", jd(st2));
    EXPECT_INT(stat_sockets(st2, "dtls"), stat_sockets(st1, "dtls"), "%s", jd(st2));
    json_decref(st1);
    json_decref(st2);
    h_client_close(c);
}

static void
test_busy(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    json_t *m;
    long long s;

    peer = h_peer_auto(H_SINK, 0);
    s = h_connect_tcp(c, peer->port);
    json_decref(h_ok(c, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 10));
    EXPECT_INT(h_err(c, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 10),
               -32006, "socket.recv error code");
    EXPECT_INT(h_err(c, NULL, "socket.recv", "{s:I, s:i, s:b}", "socket", (json_int_t)s, "length",
                     10, "stream", 1),
               -32006, "socket.recv error code");
    m = h_ok(c, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(json_is_true(json_object_get(m, "canceled")), "%s", jd(m));
    json_decref(m);
    m = h_ok(c, "socket.recv_cancel", "{s:I}", "socket", (json_int_t)s);
    EXPECT_TRUE(json_is_false(json_object_get(m, "canceled")), "%s", jd(m));
    json_decref(m);
    /* After the cancel a new recv is accepted. */
    json_decref(h_ok(c, "socket.recv", "{s:I, s:i, s:b}", "socket", (json_int_t)s, "length", 10,
                     "stream", 1));
    EXPECT_INT(h_err(c, NULL, "socket.recv", "{s:I, s:i}", "socket", (json_int_t)s, "length", 1),
               -32006, "socket.recv error code");
    h_no_event(c, 100);
    h_client_close(c);
}

/* ---- framing ---- */

static void
test_split_writes(void **state)
{
    static const char req[] =
        "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":\"bytewise\"}\n";
    struct sockd_client *c = h_client_auto(&D);
    json_t *m;

    /* One byte per write. */
    for (size_t i = 0; i < sizeof req - 1; i++)
        EXPECT_INT(sockd_client_send_raw(c, req + i, 1), 0, "sockd_client_send_raw: %s",
                   strerror(errno));
    m = h_read(c, H_TIMEOUT_MS);
    check_result(m, "\"bytewise\"");
    json_decref(m);

    /* Two requests in one write. */
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":1}\n"
                  "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":2}\n");
    m = h_read(c, H_TIMEOUT_MS);
    check_result(m, "1");
    json_decref(m);
    m = h_read(c, H_TIMEOUT_MS);
    check_result(m, "2");
    json_decref(m);

    /* A line split mid-way, its tail written together with the whole next line. */
    h_send_raw(c, "{\"jsonrpc\":\"2.0\",\"meth");
    h_sleep_ms(50);
    h_send_raw(c, "od\":\"daemon.ping\",\"id\":3}\n{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\","
                  "\"id\":4}\n{\"jsonrpc\":");
    h_sleep_ms(50);
    h_send_raw(c, "\"2.0\",\"method\":\"daemon.ping\",\"id\":5}\n");
    for (int id = 3; id <= 5; id++) {
        char want[16];
        snprintf(want, sizeof want, "%d", id);
        m = h_read(c, H_TIMEOUT_MS);
        check_result(m, want);
        json_decref(m);
    }

    /* CRLF endings, empty and blank lines (ignored, not answered). */
    h_send_raw(c, "\n\n   \n\t\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":6}\r\n");
    m = h_read(c, H_TIMEOUT_MS);
    check_result(m, "6");
    json_decref(m);
    ping_next(c);
    h_client_close(c);
}

/* ---- ordering ---- */

static const char *
note_method(const json_t *m)
{
    return json_string_value(json_object_get(m, "method"));
}

/* Send line; the response (id id_json) must come before the notification method of socket s
 * that follows it. Returns the notification's params (a new reference); *resp gets the response. */
static json_t *
resp_then_note(struct sockd_client *c, const char *line, const char *id_json, const char *method,
               long long s, json_t **resp)
{
    json_t *m, *params = NULL;

    *resp = NULL;
    h_send_raw(c, line);
    for (int i = 0; i < 10 && params == NULL; i++) {
        m = h_read(c, H_TIMEOUT_MS);
        if (!note_method(m)) {
            check_result(m, id_json);
            json_decref(*resp);
            *resp = json_incref(m);
        } else {
            EXPECT_TRUE(*resp != NULL, "%s", jd(m)); /* notification before the response */
            EXPECT_STR(note_method(m), method, "%s", jd(m));
            params = json_incref(json_object_get(m, "params"));
            EXPECT_INT(json_integer_value(json_object_get(params, "socket")), s, "%s", jd(m));
        }
        json_decref(m);
    }
    EXPECT_TRUE(params != NULL, "got_note");
    return params;
}

static void
test_ordering_notifications(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    char line[512];
    json_t *m, *p;
    long long s;
    int i;

    peer = h_peer_auto(H_ECHO, 0);

    /* open, then connect: the response before socket.connected, which names the request. */
    m = raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"socket.open\",\"params\":{\"type\":\"tcp\"},"
               "\"id\":\"o\"}\n");
    check_result(m, "\"o\"");
    s = json_integer_value(json_object_get(json_object_get(m, "result"), "socket"));
    json_decref(m);
    EXPECT_TRUE(s > 0, "s > 0");
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.connect\",\"params\":{\"socket\":%lld,"
             "\"address\":\"127.0.0.1:%d\"},\"id\":\"conn-1\"}\n",
             s, peer->port);
    p = resp_then_note(c, line, "\"conn-1\"", "socket.connected", s, &m);
    EXPECT_STR(json_string_value(json_object_get(p, "request")), "conn-1", "%s", jd(p));
    json_decref(p);
    json_decref(m);

    /* send: the {queued} result before socket.sent {bytes, request}. */
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":{\"socket\":%lld,"
             "\"text\":\"hello\"},\"id\":\"snd-1\"}\n",
             s);
    p = resp_then_note(c, line, "\"snd-1\"", "socket.sent", s, &m);
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(m, "result"), "queued")), 5, "%s",
               jd(m));
    EXPECT_INT(json_integer_value(json_object_get(p, "bytes")), 5, "%s", jd(p));
    EXPECT_STR(json_string_value(json_object_get(p, "request")), "snd-1", "%s", jd(p));
    json_decref(p);
    json_decref(m);

    /* recv (the echo is already waiting): result before socket.received {request: 4242}. */
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.recv\",\"params\":{\"socket\":%lld,"
             "\"length\":5},\"id\":4242}\n",
             s);
    p = resp_then_note(c, line, "4242", "socket.received", s, &m);
    EXPECT_INT(json_integer_value(json_object_get(p, "request")), 4242, "%s", jd(p));
    EXPECT_STR(json_string_value(json_object_get(p, "data")), "aGVsbG8=", "%s", jd(p));
    json_decref(p);
    json_decref(m);

    /* A send issued as a notification: socket.sent comes without "request". */
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":{\"socket\":%lld,"
             "\"text\":\"abc\"}}\n",
             s);
    h_send_raw(c, line);
    m = h_read(c, H_TIMEOUT_MS);
    EXPECT_STR(note_method(m), "socket.sent", "%s", jd(m));
    EXPECT_TRUE(json_object_get(json_object_get(m, "params"), "request") == NULL, "%s", jd(m));
    EXPECT_INT(json_integer_value(json_object_get(json_object_get(m, "params"), "bytes")), 3, "%s",
               jd(m));
    json_decref(m);

    /* Inside a batch, the notifications follow the whole batch's answer. */
    snprintf(line, sizeof line,
             "[{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":{\"socket\":%lld,"
             "\"text\":\"a\"},\"id\":\"b1\"},"
             "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":{\"socket\":%lld,"
             "\"text\":\"bc\"},\"id\":\"b2\"}]\n",
             s, s);
    h_send_raw(c, line);
    m = h_read(c, H_TIMEOUT_MS);
    EXPECT_TRUE(json_is_array(m) && json_array_size(m) == 2, "%s", jd(m));
    check_result(json_array_get(m, 0), "\"b1\"");
    check_result(json_array_get(m, 1), "\"b2\"");
    json_decref(m);
    for (i = 0; i < 2; i++) {
        m = h_read(c, H_TIMEOUT_MS);
        EXPECT_STR(note_method(m), "socket.sent", "%s", jd(m));
        p = json_object_get(m, "params");
        /* Notifications of one socket in the order they happened. */
        EXPECT_TRUE(!strcmp(json_string_value(json_object_get(p, "request")), i == 0 ? "b1" : "b2"),
                    "%s", jd(m));
        EXPECT_INT(json_integer_value(json_object_get(p, "bytes")), i + 1, "%s", jd(m));
        json_decref(m);
    }
    h_client_close(c);
}

static void
test_pipelined(void **state)
{
    struct sockd_client *c = h_client_auto(&D);
    struct h_peer *peer;
    char *buf = malloc(65536);
    size_t off = 0;
    long long s;
    int next = 1, sent_notes = 0, sends = 0, seen_resp[17] = {0};

    EXPECT_TRUE(buf != NULL, "buf");
    peer = h_peer_auto(H_DRAIN, 0);
    s = h_connect_tcp(c, peer->port);

    /* 16 requests (and two notifications) in a single write, of mixed kinds. */
    for (int id = 1; id <= 16; id++) {
        switch (id % 6) {
        case 0:
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":%d}\n",
                                    id);
            break;
        case 1:
            sends++;
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":"
                                    "{\"socket\":%lld,\"text\":\"0123456789\"},\"id\":%d}\n",
                                    s, id);
            break;
        case 2:
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"socket.info\",\"params\":"
                                    "{\"socket\":%lld},\"id\":%d}\n",
                                    s, id);
            break;
        case 3:
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\",\"id\":%d}\n", id);
            break;
        case 4:
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.stats\",\"id\":%d}\n"
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\"}\n",
                                    id);
            break;
        default:
            off += (size_t)snprintf(buf + off, 65536 - off,
                                    "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.hello\",\"id\":%d}\n",
                                    id);
            break;
        }
    }
    EXPECT_INT(sockd_client_send_raw(c, buf, off), 0, "sockd_client_send_raw: %s", strerror(errno));

    /* Responses 1..16 in order; each socket.sent after its own response. */
    for (int i = 0; i < 64 && (next <= 16 || sent_notes < sends); i++) {
        json_t *m = h_read(c, H_TIMEOUT_MS);
        if (note_method(m)) {
            json_t *p = json_object_get(m, "params");
            json_int_t req = json_integer_value(json_object_get(p, "request"));
            EXPECT_STR(note_method(m), "socket.sent", "%s", jd(m));
            EXPECT_TRUE(req >= 1 && req <= 16 && req % 6 == 1, "%s", jd(m));
            EXPECT_TRUE(seen_resp[req], "%s", jd(m));
            sent_notes++;
        } else {
            char want[16];
            snprintf(want, sizeof want, "%d", next);
            if (next % 6 == 3)
                check_error(m, -32601, want);
            else
                check_result(m, want);
            seen_resp[next] = 1;
            next++;
        }
        json_decref(m);
    }
    EXPECT_INT(next, 17, "next");
    EXPECT_INT(sent_notes, sends, "sent_notes");
    EXPECT_TRUE(h_peer_wait_bytes(peer, (size_t)sends * 10, H_TIMEOUT_MS) == (size_t)sends * 10,
                "h_peer_wait_bytes(peer, (size_t)sends * 10, H_TIMEOUT_MS) == (size_t)sends * 10");

    /* 16 sends on one socket, pipelined: results and socket.sent in order. */
    off = 0;
    for (int id = 101; id <= 116; id++)
        off += (size_t)snprintf(buf + off, 65536 - off,
                                "{\"jsonrpc\":\"2.0\",\"method\":\"socket.send\",\"params\":"
                                "{\"socket\":%lld,\"text\":\"x\"},\"id\":%d}\n",
                                s, id);
    EXPECT_INT(sockd_client_send_raw(c, buf, off), 0, "sockd_client_send_raw: %s", strerror(errno));
    {
        int next_resp = 101, next_sent = 101;
        for (int i = 0; i < 64 && (next_resp <= 116 || next_sent <= 116); i++) {
            json_t *m = h_read(c, H_TIMEOUT_MS);
            if (note_method(m)) {
                json_int_t req =
                    json_integer_value(json_object_get(json_object_get(m, "params"), "request"));
                EXPECT_TRUE(req == next_sent, "%s", jd(m));
                EXPECT_TRUE(req < next_resp, "%s", jd(m));
                next_sent++;
            } else {
                char want[16];
                snprintf(want, sizeof want, "%d", next_resp);
                check_result(m, want);
                next_resp++;
            }
            json_decref(m);
        }
        EXPECT_INT(next_resp, 117, "next_resp");
        EXPECT_INT(next_sent, 117, "next_sent");
    }
    free(buf);
    h_client_close(c);
}

/* ---- many clients, handles ---- */

static void
test_300_clients(void **state)
{
    enum { N = 300 };
    struct sockd_client **cs = calloc(N, sizeof *cs);
    struct sockd_client *watcher = h_client_auto(&D);
    struct rlimit rl;
    json_t *st;
    char line[128];

    EXPECT_TRUE(cs != NULL, "cs");
    /* Room for 300 connections in this process. */
    EXPECT_INT(getrlimit(RLIMIT_NOFILE, &rl), 0, "getrlimit: %s", strerror(errno));
    if (rl.rlim_cur < 1024 && rl.rlim_max >= 1024) {
        rl.rlim_cur = 1024;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (int i = 0; i < N; i++)
        cs[i] = h_client_auto(&D);
    /* All connected at once; every one asks, then every one reads its answer. */
    for (int i = 0; i < N; i++) {
        snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"method\":\"daemon.ping\",\"id\":%d}\n",
                 1000 + i);
        h_send_raw(cs[i], line);
    }
    for (int i = 0; i < N; i++) {
        char want[16];
        json_t *m = h_read(cs[i], H_TIMEOUT_MS);
        snprintf(want, sizeof want, "%d", 1000 + i);
        check_result(m, want);
        json_decref(m);
    }
    st = stats(watcher);
    EXPECT_TRUE(stat_int(st, "clients") >= N + 1, "%s", jd(st));
    json_decref(st);
    for (int i = 0; i < N; i++)
        h_client_close(cs[i]);
    free(cs);
    json_decref(h_wait_clients(watcher, 1));
    h_client_close(watcher);
}

static void
test_handles_unique(void **state)
{
    enum { PER = 6 };
    struct sockd_client *a = h_client_auto(&D), *b = h_client_auto(&D), *c;
    long long seen[3 * PER];
    int n = 0;

    for (int i = 0; i < PER; i++)
        seen[n++] = h_open(a, "tcp");
    /* Close some of A's: their numbers must not come back. */
    for (int i = 0; i < PER; i += 2)
        json_decref(h_ok(a, "socket.close", "{s:I}", "socket", (json_int_t)seen[i]));
    for (int i = 0; i < PER; i++)
        seen[n++] = h_open(b, "tcp");
    h_client_close(a);
    c = h_client_auto(&D);
    for (int i = 0; i < PER; i++)
        seen[n++] = h_open(c, "tcp");
    for (int i = 0; i < n; i++) {
        EXPECT_TRUE(seen[i] > 0, "seen[i] > 0");
        for (int j = 0; j < i; j++)
            if (seen[i] == seen[j]) {
                fprintf(stderr, "handle %lld handed out twice (#%d and #%d)\n", seen[i], j, i);
                fail();
            }
    }
    /* A's old handles mean nothing to C (nor to B). */
    for (int i = 0; i < PER; i++) {
        EXPECT_INT(h_err(c, NULL, "socket.info", "{s:I}", "socket", (json_int_t)seen[i]), -32001,
                   "socket.info error code");
        EXPECT_INT(h_err(b, NULL, "socket.info", "{s:I}", "socket", (json_int_t)seen[i]), -32001,
                   "socket.info error code");
    }
    h_client_close(b);
    h_client_close(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hello, h_teardown),
        cmocka_unit_test_teardown(test_ping, h_teardown),
        cmocka_unit_test_teardown(test_stats, h_teardown),
        cmocka_unit_test_teardown(test_ids_echoed, h_teardown),
        cmocka_unit_test_teardown(test_notifications_unanswered, h_teardown),
        cmocka_unit_test_teardown(test_batches, h_teardown),
        cmocka_unit_test_teardown(test_parse_errors, h_teardown),
        cmocka_unit_test_teardown(test_invalid_request, h_teardown),
        cmocka_unit_test_teardown(test_long_line, h_teardown),
        cmocka_unit_test_teardown(test_method_not_found, h_teardown),
        cmocka_unit_test_teardown(test_invalid_params, h_teardown),
        cmocka_unit_test_teardown(test_unknown_handle, h_teardown),
        cmocka_unit_test_teardown(test_wrong_state, h_teardown),
        cmocka_unit_test_teardown(test_send_cap, h_teardown),
        cmocka_unit_test_teardown(test_unsupported, h_teardown),
        cmocka_unit_test_teardown(test_busy, h_teardown),
        cmocka_unit_test_teardown(test_split_writes, h_teardown),
        cmocka_unit_test_teardown(test_ordering_notifications, h_teardown),
        cmocka_unit_test_teardown(test_pipelined, h_teardown),
        cmocka_unit_test_teardown(test_300_clients, h_teardown),
        cmocka_unit_test_teardown(test_handles_unique, h_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
