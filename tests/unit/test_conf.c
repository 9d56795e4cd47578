/* Unit tests of the configuration parser (src/conf.c). */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "log.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Fields a table row can check. */
enum field {
    F_SOCKET_MODE,
    F_SOCKET_GID,
    F_MAX_CLIENTS,
    F_MAX_SOCKETS,
    F_MAX_SEND_BUFFER,
    F_MAX_MESSAGE,
    F_MAX_PENDING,
    F_ACCEPT_TIMEOUT,
    F_SHUTDOWN_TIMEOUT,
    F_RESOLVE_TIMEOUT,
    F_LOG_LEVEL,
    F_LOG_FLAGS,
    F_NRESOLVERS,
    F_CLIENTS_UID,
    F_SOCKETS_UID,
    F_BUFFER_UID,
    F_CTL_BUFFER_UID,
    F_TLS_UID,
    F_SHARE_UDP,
};

static long long
field_value(const struct conf *c, enum field f)
{
    switch (f) {
    case F_SOCKET_MODE:
        return c->socket_mode;
    case F_SOCKET_GID:
        return (long long)c->socket_gid;
    case F_MAX_CLIENTS:
        return c->max_clients;
    case F_MAX_SOCKETS:
        return c->max_sockets_per_client;
    case F_MAX_SEND_BUFFER:
        return (long long)c->max_send_buffer;
    case F_MAX_MESSAGE:
        return (long long)c->max_message;
    case F_MAX_PENDING:
        return c->max_pending_accepts;
    case F_ACCEPT_TIMEOUT:
        return c->accept_timeout_ms;
    case F_SHUTDOWN_TIMEOUT:
        return c->shutdown_timeout_ms;
    case F_RESOLVE_TIMEOUT:
        return c->resolve_timeout_ms;
    case F_LOG_LEVEL:
        return c->log_level;
    case F_LOG_FLAGS:
        return c->log_flags;
    case F_NRESOLVERS:
        return c->nresolvers;
    case F_CLIENTS_UID:
        return c->max_clients_per_uid;
    case F_SOCKETS_UID:
        return c->max_sockets_per_uid;
    case F_BUFFER_UID:
        return (long long)c->max_buffer_per_uid;
    case F_CTL_BUFFER_UID:
        return (long long)c->max_control_buffer_per_uid;
    case F_TLS_UID:
        return (long long)c->max_tls_memory_per_uid;
    case F_SHARE_UDP:
        return c->share_udp_ports;
    }
    return -12345;
}

/* Parse text (NUL-terminated) into a fresh default conf; returns conf_parse's result. */
static int
parse(const char *text, struct conf *c, char **cause)
{
    conf_defaults(c);
    return conf_parse(text, strlen(text), c, cause);
}

static void
test_defaults(void **state)
{
    (void)state;
    struct conf c;
    memset(&c, 0xa5, sizeof c); /* conf_defaults must set every field */
    conf_defaults(&c);
    assert_null(c.listen);
    assert_int_equal(c.socket_mode, -1);
    assert_null(c.socket_group);
    assert_true(c.socket_gid == (gid_t)-1);
    assert_int_equal(c.max_clients, 1024);
    assert_int_equal(c.max_sockets_per_client, 4096);
    assert_int_equal(c.max_clients_per_uid, 128);
    assert_int_equal(c.max_sockets_per_uid, 16384);
    assert_int_equal(c.max_buffer_per_uid, 256 * 1024 * 1024);
    assert_int_equal(c.max_control_buffer_per_uid, 256 * 1024 * 1024);
    assert_int_equal(c.max_tls_memory_per_uid, 256 * 1024 * 1024);
    assert_int_equal(c.share_udp_ports, 0);
    assert_int_equal(c.max_send_buffer, 4 * 1024 * 1024);
    assert_int_equal(c.max_message, 16 * 1024 * 1024);
    assert_int_equal(c.max_pending_accepts, 128);
    assert_int_equal(c.accept_timeout_ms, 10000);
    assert_int_equal(c.nresolvers, 0);
    for (int i = 0; i < CONF_MAX_RESOLVERS; i++)
        assert_null(c.resolvers[i]);
    assert_int_equal(c.resolve_timeout_ms, 5000);
    assert_int_equal(c.log_level, LOG_LVL_INFO);
    assert_int_equal(c.log_flags, 0);
    conf_free(&c);

    /* An empty text, or one of comments only, leaves the defaults. */
    static const char *const empty[] = {
        "", "\n", "\n\n\n", "# only a comment\n", "   \t \n# x\n\t\n", "#no newline at end"};
    for (size_t i = 0; i < NELEM(empty); i++) {
        struct conf d;
        char *cause = (char *)"untouched";
        assert_int_equal(parse(empty[i], &d, &cause), 0);
        assert_null(cause);
        conf_defaults(&c);
        assert_int_equal(d.max_clients, c.max_clients);
        assert_int_equal(d.max_message, c.max_message);
        assert_int_equal(d.accept_timeout_ms, c.accept_timeout_ms);
        assert_int_equal(d.log_level, c.log_level);
        assert_null(d.listen);
        conf_free(&d);
    }
}

struct good_case {
    const char *line;
    enum field field;
    long long want;
};

static const struct good_case good[] = {
    {"max-clients 1", F_MAX_CLIENTS, 1},
    {"max-clients 1000000", F_MAX_CLIENTS, 1000000},
    {"max-clients 2K", F_MAX_CLIENTS, 2048},
    {"max-sockets-per-client 1", F_MAX_SOCKETS, 1},
    {"max-sockets-per-client 10000000", F_MAX_SOCKETS, 10000000},
    {"max-sockets-per-client 8M", F_MAX_SOCKETS, 8 << 20},
    {"max-clients-per-uid 1", F_CLIENTS_UID, 1},
    {"max-clients-per-uid 1000000", F_CLIENTS_UID, 1000000},
    {"max-sockets-per-uid 1", F_SOCKETS_UID, 1},
    {"max-sockets-per-uid 10000000", F_SOCKETS_UID, 10000000},
    {"max-buffer-per-uid 1M", F_BUFFER_UID, 1 << 20},
    {"max-buffer-per-uid 2G", F_BUFFER_UID, 2LL << 30},
    {"max-control-buffer-per-uid 1M", F_CTL_BUFFER_UID, 1 << 20},
    {"max-control-buffer-per-uid 8M", F_CTL_BUFFER_UID, 8 << 20},
    {"max-control-buffer-per-uid 1024G", F_CTL_BUFFER_UID, 1LL << 40},
    {"max-tls-memory-per-uid 1M", F_TLS_UID, 1 << 20},
    {"max-tls-memory-per-uid 64M", F_TLS_UID, 64 << 20},
    {"share-udp-ports yes", F_SHARE_UDP, 1},
    {"share-udp-ports no", F_SHARE_UDP, 0},
    {"max-send-buffer 1K", F_MAX_SEND_BUFFER, 1024},
    {"max-send-buffer 1024", F_MAX_SEND_BUFFER, 1024},
    {"max-send-buffer 4M", F_MAX_SEND_BUFFER, 4 << 20},
    {"max-send-buffer 2m", F_MAX_SEND_BUFFER, 2 << 20},
    {"max-send-buffer 1G", F_MAX_SEND_BUFFER, 1 << 30},
    {"max-send-buffer 1048576K", F_MAX_SEND_BUFFER, 1 << 30},
    {"max-message 4K", F_MAX_MESSAGE, 4096},
    {"max-message 4096", F_MAX_MESSAGE, 4096},
    {"max-message 16M", F_MAX_MESSAGE, 16 << 20},
    {"max-message 1g", F_MAX_MESSAGE, 1 << 30},
    {"max-pending-accepts 1", F_MAX_PENDING, 1},
    {"max-pending-accepts 65535", F_MAX_PENDING, 65535},
    {"accept-timeout 10s", F_ACCEPT_TIMEOUT, 10000},
    {"accept-timeout 1ms", F_ACCEPT_TIMEOUT, 1},
    {"accept-timeout 500ms", F_ACCEPT_TIMEOUT, 500},
    {"accept-timeout 2m", F_ACCEPT_TIMEOUT, 120000},
    {"accept-timeout 1440m", F_ACCEPT_TIMEOUT, 86400000},
    {"accept-timeout 86400s", F_ACCEPT_TIMEOUT, 86400000},
    {"shutdown-timeout 0ms", F_SHUTDOWN_TIMEOUT, 0},
    {"shutdown-timeout 2s", F_SHUTDOWN_TIMEOUT, 2000},
    {"shutdown-timeout 10m", F_SHUTDOWN_TIMEOUT, 600000},
    {"resolve-timeout 5s", F_RESOLVE_TIMEOUT, 5000},
    {"resolve-timeout 1ms", F_RESOLVE_TIMEOUT, 1},
    {"resolve-timeout 10m", F_RESOLVE_TIMEOUT, 600000},
    {"resolve-timeout 600000ms", F_RESOLVE_TIMEOUT, 600000},
    {"socket-mode 0660", F_SOCKET_MODE, 0660},
    {"socket-mode 0600", F_SOCKET_MODE, 0600},
    {"socket-mode 777", F_SOCKET_MODE, 0777},
    {"socket-mode 0", F_SOCKET_MODE, 0},
    {"socket-group 0", F_SOCKET_GID, 0},
    {"socket-group 54321", F_SOCKET_GID, 54321},
    {"log-level error", F_LOG_LEVEL, LOG_LVL_ERROR},
    {"log-level warning", F_LOG_LEVEL, LOG_LVL_WARNING},
    {"log-level info", F_LOG_LEVEL, LOG_LVL_INFO},
    {"log-level debug", F_LOG_LEVEL, LOG_LVL_DEBUG},
    {"log-flags tcp", F_LOG_FLAGS, CONF_LOG_TCP},
    {"log-flags tls", F_LOG_FLAGS, CONF_LOG_TLS},
    {"log-flags udp", F_LOG_FLAGS, CONF_LOG_UDP},
    {"log-flags local", F_LOG_FLAGS, CONF_LOG_LOCAL},
    {"log-flags local udp", F_LOG_FLAGS, CONF_LOG_LOCAL | CONF_LOG_UDP},
    {"log-flags tcp tls udp local", F_LOG_FLAGS, 15},
    {"log-flags tcp tcp", F_LOG_FLAGS, CONF_LOG_TCP},
    {"log-flags", F_LOG_FLAGS, 0},
    {"resolver 127.0.0.1:53", F_NRESOLVERS, 1},
    {"resolver 127.0.0.1:53 [::1]:53", F_NRESOLVERS, 2},
    {"resolver 127.0.0.1 127.0.0.2 127.0.0.3 127.0.0.4 ::1 [::1]:53 127.0.0.5:5353 127.0.0.6",
     F_NRESOLVERS, 8},
    /* layout: tabs, trailing comments, CR of a CRLF file */
    {"max-clients\t7", F_MAX_CLIENTS, 7},
    {"   max-clients    8   ", F_MAX_CLIENTS, 8},
    {"max-clients 9 # nine", F_MAX_CLIENTS, 9},
    {"max-clients 10#ten", F_MAX_CLIENTS, 10},
    {"max-clients 11\r", F_MAX_CLIENTS, 11},
};

static void
test_directives(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(good); i++) {
        /* Each line alone, with and without a newline, and after other lines. */
        for (int form = 0; form < 3; form++) {
            char text[512];
            struct conf c;
            char *cause = NULL;
            if (form == 0)
                snprintf(text, sizeof text, "%s", good[i].line);
            else if (form == 1)
                snprintf(text, sizeof text, "%s\n", good[i].line);
            else
                snprintf(text, sizeof text, "# header\n\nlog-level debug\n%s\n\n", good[i].line);
            int r = parse(text, &c, &cause);
            if (r != 0) {
                char msg[512];
                snprintf(msg, sizeof msg, "\"%s\": refused: %s", good[i].line,
                         cause ? cause : "(no cause)");
                free(cause);
                conf_free(&c);
                fail_msg("%s", msg);
            }
            assert_null(cause);
            long long got = field_value(&c, good[i].field);
            if (got != good[i].want) {
                conf_free(&c);
                fail_msg("\"%s\": got %lld, want %lld", good[i].line, got, good[i].want);
            }
            conf_free(&c);
        }
    }
}

/* Directives with string values, and repeated directives (the last one wins). */
static void
test_string_values(void **state)
{
    (void)state;
    struct conf c;
    char *cause;

    assert_int_equal(parse("listen /run/sockd/sockd.sock\n", &c, &cause), 0);
    assert_string_equal(c.listen, "/run/sockd/sockd.sock");
    conf_free(&c);
    assert_null(c.listen);

    assert_int_equal(parse("listen /a.sock\nlisten /b.sock\n", &c, &cause), 0);
    assert_string_equal(c.listen, "/b.sock");
    conf_free(&c);

    assert_int_equal(parse("resolver 127.0.0.1:53 [::1]:53  # name servers\n", &c, &cause), 0);
    assert_int_equal(c.nresolvers, 2);
    assert_string_equal(c.resolvers[0], "127.0.0.1:53");
    assert_string_equal(c.resolvers[1], "[::1]:53");
    conf_free(&c);
    assert_int_equal(c.nresolvers, 0);

    /* A second resolver line replaces the first list. */
    assert_int_equal(parse("resolver 1.1.1.1 2.2.2.2 3.3.3.3\nresolver 9.9.9.9\n", &c, &cause), 0);
    assert_int_equal(c.nresolvers, 1);
    assert_string_equal(c.resolvers[0], "9.9.9.9");
    conf_free(&c);

    assert_int_equal(parse("socket-group 0\n", &c, &cause), 0);
    assert_string_equal(c.socket_group, "0");
    assert_int_equal(c.socket_gid, 0);
    conf_free(&c);

    assert_int_equal(parse("socket-group root\n", &c, &cause), 0);
    assert_string_equal(c.socket_group, "root");
    assert_int_equal(c.socket_gid, 0);
    conf_free(&c);

    assert_int_equal(
        parse("max-clients 5\nmax-clients 6\nlog-flags tcp\nlog-flags udp\n", &c, &cause), 0);
    assert_int_equal(c.max_clients, 6);
    assert_int_equal(c.log_flags, CONF_LOG_UDP);
    conf_free(&c);
}

/* The example of sockd.conf(5), without the policy rules. */
static void
test_protocol_example(void **state)
{
    (void)state;
    static const char text[] = "listen /run/sockd/sockd.sock\n"
                               "socket-mode 0660\n"
                               "socket-group 0\n"
                               "max-clients 1024\n"
                               "max-sockets-per-client 4096\n"
                               "max-send-buffer 4M\n"
                               "max-message 16M\n"
                               "max-pending-accepts 128\n"
                               "accept-timeout 10s\n"
                               "resolver 127.0.0.1:53 [::1]:53  # name servers (default: "
                               "/etc/resolv.conf)\n"
                               "resolve-timeout 5s\n"
                               "log-level info                # error warning info debug\n"
                               "log-flags tcp tls udp local   # per-transport detail\n";
    struct conf c;
    char *cause;
    assert_int_equal(parse(text, &c, &cause), 0);
    assert_string_equal(c.listen, "/run/sockd/sockd.sock");
    assert_int_equal(c.socket_mode, 0660);
    assert_int_equal(c.socket_gid, 0);
    assert_int_equal(c.max_clients, 1024);
    assert_int_equal(c.max_sockets_per_client, 4096);
    assert_int_equal(c.max_send_buffer, 4 << 20);
    assert_int_equal(c.max_message, 16 << 20);
    assert_int_equal(c.max_pending_accepts, 128);
    assert_int_equal(c.accept_timeout_ms, 10000);
    assert_int_equal(c.nresolvers, 2);
    assert_int_equal(c.resolve_timeout_ms, 5000);
    assert_int_equal(c.log_level, LOG_LVL_INFO);
    assert_int_equal(c.log_flags, CONF_LOG_TCP | CONF_LOG_TLS | CONF_LOG_UDP | CONF_LOG_LOCAL);
    conf_free(&c);
}

struct bad_case {
    const char *text;
    const char *want; /* the whole cause */
};

static const struct bad_case bad[] = {
    /* out of range, or not a number of the right kind */
    {"max-clients 0", "line 1: max-clients is 1..1000000"},
    {"max-clients 1000001", "line 1: max-clients is 1..1000000"},
    {"max-clients 1M", "line 1: max-clients is 1..1000000"},
    {"max-clients -1", "line 1: max-clients is 1..1000000"},
    {"max-clients abc", "line 1: max-clients is 1..1000000"},
    {"max-clients 10x", "line 1: max-clients is 1..1000000"},
    {"max-clients 1.5", "line 1: max-clients is 1..1000000"},
    {"max-sockets-per-client 0", "line 1: max-sockets-per-client is 1..10000000"},
    {"max-sockets-per-client 10000001", "line 1: max-sockets-per-client is 1..10000000"},
    {"max-clients-per-uid 0", "line 1: max-clients-per-uid is 1..1000000"},
    {"max-sockets-per-uid 0", "line 1: max-sockets-per-uid is 1..10000000"},
    {"max-buffer-per-uid 1023K", "line 1: max-buffer-per-uid is a size from 1M to 1024G"},
    {"max-control-buffer-per-uid 1023K",
     "line 1: max-control-buffer-per-uid is a size from 1M to 1024G"},
    {"max-tls-memory-per-uid 1023K", "line 1: max-tls-memory-per-uid is a size from 1M to 1024G"},
    {"share-udp-ports maybe", "line 1: share-udp-ports is yes or no"},
    {"max-send-buffer 1023", "line 1: max-send-buffer is a size from 1K to 1G"},
    {"max-send-buffer 0", "line 1: max-send-buffer is a size from 1K to 1G"},
    {"max-send-buffer 2G", "line 1: max-send-buffer is a size from 1K to 1G"},
    {"max-send-buffer 1T", "line 1: max-send-buffer is a size from 1K to 1G"},
    {"max-send-buffer 4MB", "line 1: max-send-buffer is a size from 1K to 1G"},
    {"max-message 4095", "line 1: max-message is a size from 4K to 1G"},
    {"max-message 3K", "line 1: max-message is a size from 4K to 1G"},
    {"max-message 1025M", "line 1: max-message is a size from 4K to 1G"},
    {"max-pending-accepts 0", "line 1: max-pending-accepts is 1..65535"},
    {"max-pending-accepts 65536", "line 1: max-pending-accepts is 1..65535"},
    {"accept-timeout 0ms", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout 10", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout 86401s", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout 1441m", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout 1h", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout -1s", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"accept-timeout 10K", "line 1: accept-timeout is a time like 10s or 500ms"},
    {"shutdown-timeout 11m", "line 1: shutdown-timeout is a time from 0 to 10m"},
    {"shutdown-timeout 5", "line 1: shutdown-timeout is a time from 0 to 10m"},
    {"resolve-timeout 600001ms", "line 1: resolve-timeout is a time like 5s"},
    {"resolve-timeout 11m", "line 1: resolve-timeout is a time like 5s"},
    {"resolve-timeout 0s", "line 1: resolve-timeout is a time like 5s"},
    {"socket-mode 0800", "line 1: socket-mode is an octal mode like 0660"},
    {"socket-mode 01000", "line 1: socket-mode is an octal mode like 0660"},
    {"socket-mode rw", "line 1: socket-mode is an octal mode like 0660"},
    {"socket-mode -1", "line 1: socket-mode is an octal mode like 0660"},
    {"socket-mode 0660x", "line 1: socket-mode is an octal mode like 0660"},
    {"socket-group no-such-group-sockd-test", "line 1: unknown group 'no-such-group-sockd-test'"},
    {"socket-group -5", "line 1: unknown group '-5'"},
    {"log-level verbose", "line 1: log-level is error, warning, info or debug"},
    {"log-level INFO", "line 1: log-level is error, warning, info or debug"},
    {"log-flags tcp bogus", "line 1: unknown log flag 'bogus'"},
    {"log-flags TCP", "line 1: unknown log flag 'TCP'"},
    {"listen relative.sock", "line 1: listen needs an absolute path"},
    /* argument counts */
    {"max-clients", "line 1: max-clients takes 1 argument"},
    {"max-clients 1 2", "line 1: max-clients takes 1 argument"},
    {"listen", "line 1: listen takes 1 argument"},
    {"listen /a /b", "line 1: listen takes 1 argument"},
    {"socket-mode", "line 1: socket-mode takes 1 argument"},
    {"socket-group a b", "line 1: socket-group takes 1 argument"},
    {"max-send-buffer", "line 1: max-send-buffer takes 1 argument"},
    {"max-message 1M 2M", "line 1: max-message takes 1 argument"},
    {"max-pending-accepts", "line 1: max-pending-accepts takes 1 argument"},
    {"accept-timeout 1s 2s", "line 1: accept-timeout takes 1 argument"},
    {"resolve-timeout", "line 1: resolve-timeout takes 1 argument"},
    {"log-level", "line 1: log-level takes 1 argument"},
    {"log-level info debug", "line 1: log-level takes 1 argument"},
    {"max-sockets-per-client # 5", "line 1: max-sockets-per-client takes 1 argument"},
    {"resolver", "line 1: resolver takes 1 to 8 addresses"},
    {"resolver a b c d e f g h i", "line 1: resolver takes 1 to 8 addresses"},
    {"resolver 127.0.0.1:99999", "line 1: resolver '127.0.0.1:99999': resolver takes IPv4 or "
                                 "[IPv6] addresses with an optional :PORT"},
    {"resolver ns.example", "line 1: resolver 'ns.example': resolver takes IPv4 or [IPv6] "
                            "addresses with an optional :PORT"},
    /* unknown directives */
    {"bogus", "line 1: unknown directive 'bogus'"},
    {"bogus 1 2 3", "line 1: unknown directive 'bogus'"},
    {"Max-Clients 5", "line 1: unknown directive 'Max-Clients'"},
    {"max_clients 5", "line 1: unknown directive 'max_clients'"},
    {"max-clients=5", "line 1: unknown directive 'max-clients=5'"},
    /* policy directives are parsed by src/policy.c; a bad one names the line and why */
    {"policy-default maybe", "line 1: policy-default takes allow or deny"},
    {"allow connect 10.0.0.0/8 port 443 user no-such-user-sockd-test",
     "line 1: unknown user 'no-such-user-sockd-test'"},
    {"deny connect 169.254.0.0/33", "line 1: bad prefix length in '169.254.0.0/33' (0 to 32)"},
    {"rewrite connect 203.0.113.10:80 into 127.0.0.1:8080",
     "line 1: rewrite takes connect FROM to TO [port|uid|user|gid|group X]"},
    /* line numbers count every line: comments, blank ones, CRLF ones */
    {"max-clients 5\nbogus\n", "line 2: unknown directive 'bogus'"},
    {"# comment\n\n   \n\t\nmax-clients 0\n", "line 5: max-clients is 1..1000000"},
    {"max-clients 5\r\nlog-level info\r\n\r\nlisten x\r\n",
     "line 4: listen needs an absolute path"},
    {"max-clients 5\nmax-clients 6\nmax-clients 7\nmax-clients 8\nmax-clients 9\nlog-level x",
     "line 6: log-level is error, warning, info or debug"},
    {"\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\nallow * *\n",
     "line 24: unknown action '*' (connect, bind, sendto or any)"},
    /* the first bad line is reported */
    {"max-clients 5\nbogus1\nbogus2\n", "line 2: unknown directive 'bogus1'"},
};

static void
check_bad(const char *text, size_t len, const char *want)
{
    struct conf c;
    char *cause = NULL;
    conf_defaults(&c);
    int r = conf_parse(text, len, &c, &cause);
    conf_free(&c);
    if (r != -1) {
        free(cause);
        fail_msg("accepted: \"%s\"", text);
    }
    if (cause == NULL)
        fail_msg("no cause for \"%s\"", text);
    if (strcmp(cause, want) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "for \"%s\": cause \"%s\", want \"%s\"", text, cause, want);
        free(cause);
        fail_msg("%s", msg);
    }
    free(cause);
}

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(bad); i++)
        check_bad(bad[i].text, strlen(bad[i].text), bad[i].want);
}

/* The same error found after n good lines names line n + 1. */
static void
test_error_line_numbers(void **state)
{
    (void)state;
    static const size_t before[] = {0, 1, 2, 9, 10, 99, 1000};
    for (size_t i = 0; i < NELEM(before); i++) {
        size_t n = before[i];
        size_t cap = n * 20 + 64;
        char *text = malloc(cap);
        assert_non_null(text);
        size_t len = 0;
        for (size_t k = 0; k < n; k++) {
            /* Alternate directives, comments and blank lines. */
            static const char *const filler[] = {"max-clients 5\n", "# comment\n", "\n",
                                                 "  log-level debug  # x\n"};
            const char *f = filler[k % 4];
            memcpy(text + len, f, strlen(f));
            len += strlen(f);
        }
        len += (size_t)snprintf(text + len, cap - len, "frobnicate on\nmax-clients 0\n");
        char want[64];
        snprintf(want, sizeof want, "line %zu: unknown directive 'frobnicate'", n + 1);
        check_bad(text, len, want);
        free(text);
    }
}

/* A NUL byte anywhere in a line refuses the file, naming the line. */
static void
test_nul_byte(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        const char *want;
    } cases[] = {
#define T(s) s, sizeof(s) - 1
        {T("max-clients 5\nmax-\0clients 6\n"), "line 2: NUL byte in line"},
        {T("\0"), "line 1: NUL byte in line"},
        {T("max-clients 5\0"), "line 1: NUL byte in line"},
        {T("max-clients 5 \0 6\n"), "line 1: NUL byte in line"},
        {T("# comment\n# with a NUL \0 here\n"), "line 2: NUL byte in line"},
        {T("\n\n\nlog-level info\0debug\n"), "line 4: NUL byte in line"},
        {T("max-clients 5\n\0\n"), "line 2: NUL byte in line"},
#undef T
    };
    for (size_t i = 0; i < NELEM(cases); i++)
        check_bad(cases[i].text, cases[i].len, cases[i].want);
    /* The NUL past len is not part of the text. */
    struct conf c;
    char *cause;
    conf_defaults(&c);
    assert_int_equal(conf_parse("max-clients 5\n", 14, &c, &cause), 0);
    assert_int_equal(c.max_clients, 5);
    /* A len shorter than the text stops where it says. */
    assert_int_equal(conf_parse("max-clients 7\nbogus\n", 14, &c, &cause), 0);
    assert_int_equal(c.max_clients, 7);
    conf_free(&c);
}

/* An overlong line is refused by number rather than cut. */
static void
test_long_line(void **state)
{
    (void)state;
    size_t n = 10000;
    char *text = malloc(n + 32);
    assert_non_null(text);
    int k = snprintf(text, n + 32, "max-clients 5\n# ");
    memset(text + k, 'x', n);
    strcpy(text + k + n, "\n");
    check_bad(text, strlen(text), "line 2: line too long");
    free(text);
}

static void
test_parse_size(void **state)
{
    (void)state;
    static const struct {
        const char *word;
        long long want;
    } cases[] = {
        {"0", 0},
        {"1", 1},
        {"00012", 12},
        {"1023", 1023},
        {"1K", 1024},
        {"1k", 1024},
        {"4K", 4096},
        {"1M", 1 << 20},
        {"1m", 1 << 20},
        {"16M", 16 << 20},
        {"1G", 1 << 30},
        {"1g", 1 << 30},
        {"0K", 0},
        {"1024G", 1LL << 40},
        {"1048576M", 1LL << 40},
        {"1099511627776", 1LL << 40},
        {"1099511627777", -1},
        {"18446744073709551615", -1},
        {"18446744073709551616", -1},
        {"99999999999999999999999", -1},
        {"", -1},
        {"K", -1},
        {"M", -1},
        {"-1", -1},
        {"-0", -1},
        {"+1", -1},
        {" 1", -1},
        {"1 ", -1},
        {"1KB", -1},
        {"1KiB", -1},
        {"1Kk", -1},
        {"1.5M", -1},
        {"1T", -1},
        {"1t", -1},
        {"1b", -1},
        {"0x10", -1},
        {"1e3", -1},
        {"1s", -1},
        {"1ms", -1},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        long long got = conf_parse_size(cases[i].word);
        if (got != cases[i].want)
            fail_msg("conf_parse_size(\"%s\") = %lld, want %lld", cases[i].word, got,
                     cases[i].want);
    }
}

static void
test_parse_time(void **state)
{
    (void)state;
    static const struct {
        const char *word;
        long long want;
    } cases[] = {
        {"0ms", 0},
        {"1ms", 1},
        {"999ms", 999},
        {"1s", 1000},
        {"10s", 10000},
        {"0s", 0},
        {"1m", 60000},
        {"60m", 3600000},
        {"0010s", 10000},
        {"1099511627776ms", 1LL << 40},
        {"1099511627776m", (1LL << 40) * 60000},
        {"1099511627777ms", -1},
        {"10", -1},
        {"0", -1},
        {"", -1},
        {"ms", -1},
        {"s", -1},
        {"1h", -1},
        {"1d", -1},
        {"1S", -1},
        {"1M", -1},
        {"1MS", -1},
        {"1 s", -1},
        {" 1s", -1},
        {"1s ", -1},
        {"1.5s", -1},
        {"-1s", -1},
        {"+1s", -1},
        {"1msx", -1},
        {"1sm", -1},
        {"1K", -1},
        {"1us", -1},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        long long got = conf_parse_time(cases[i].word);
        if (got != cases[i].want)
            fail_msg("conf_parse_time(\"%s\") = %lld, want %lld", cases[i].word, got,
                     cases[i].want);
    }
}

/* Write text to a new temporary file; returns its malloc'ed name. */
static char *
temp_file(const char *text)
{
    char *name = strdup("/tmp/sockd-test-conf-XXXXXX");
    assert_non_null(name);
    int fd = mkstemp(name);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return name;
}

static void
test_load(void **state)
{
    (void)state;
    struct conf c;
    char *cause;
    char want[256];

    char *good_file = temp_file("# test\nmax-clients 7\nlisten /run/x.sock\n");
    conf_defaults(&c);
    assert_int_equal(conf_load(good_file, &c, &cause), 0);
    assert_null(cause);
    assert_int_equal(c.max_clients, 7);
    assert_string_equal(c.listen, "/run/x.sock");
    conf_free(&c);
    unlink(good_file);
    free(good_file);

    char *bad_file = temp_file("max-clients 7\n\nbogus word\n");
    conf_defaults(&c);
    assert_int_equal(conf_load(bad_file, &c, &cause), -1);
    assert_non_null(cause);
    snprintf(want, sizeof want, "%s: line 3: unknown directive 'bogus'", bad_file);
    assert_string_equal(cause, want);
    free(cause);
    conf_free(&c);
    unlink(bad_file);
    free(bad_file);

    conf_defaults(&c);
    assert_int_equal(conf_load("/nonexistent-sockd-dir/sockd.conf", &c, &cause), -1);
    assert_non_null(cause);
    assert_string_equal(cause, "/nonexistent-sockd-dir/sockd.conf: No such file or directory");
    free(cause);
    conf_free(&c);
}

/* The shipped etc/sockd.conf parses, and its values are the built-in defaults. */
static void
test_shipped_file(void **state)
{
    (void)state;
    /* This file is tests/unit/test_conf.c under the source tree. */
    static const char self[] = "tests/unit/test_conf.c";
    const char *file = __FILE__;
    size_t fl = strlen(file), sl = strlen(self);
    char path[4096];
    if (fl < sl || strcmp(file + fl - sl, self) != 0)
        skip();
    snprintf(path, sizeof path, "%.*setc/sockd.conf", (int)(fl - sl), file);
    if (access(path, R_OK) != 0)
        skip();

    struct conf c, d;
    char *cause;
    conf_defaults(&c);
    conf_defaults(&d);
    if (conf_load(path, &c, &cause) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", cause ? cause : "?");
        free(cause);
        conf_free(&c);
        fail_msg("shipped config refused: %s", msg);
    }
    assert_int_equal(c.max_clients, d.max_clients);
    assert_int_equal(c.max_sockets_per_client, d.max_sockets_per_client);
    assert_int_equal(c.max_send_buffer, d.max_send_buffer);
    assert_int_equal(c.max_message, d.max_message);
    assert_int_equal(c.max_pending_accepts, d.max_pending_accepts);
    assert_int_equal(c.accept_timeout_ms, d.accept_timeout_ms);
    assert_int_equal(c.resolve_timeout_ms, d.resolve_timeout_ms);
    assert_int_equal(c.log_level, d.log_level);
    assert_int_equal(c.socket_mode, d.socket_mode);
    conf_free(&c);
    conf_free(&d);
}

/* Add the directive a heading line of sockd.conf(5) names (".BI max\-clients " count"") to names.
 */
static void
man_heading(const char *line, char **names, size_t *n, size_t cap)
{
    const char *p = line + strcspn(line, " ");
    char word[128];
    size_t k = 0;
    while (*p == ' ' || *p == '"')
        p++;
    for (; *p != '\0' && *p != ' ' && *p != '"' && *p != '\n' && k + 1 < sizeof word; p++) {
        if (p[0] == '\\' && p[1] == '-')
            p++;
        word[k++] = *p;
    }
    word[k] = '\0';
    assert_true(*n < cap);
    names[(*n)++] = strdup(word);
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * The directives the parser knows are the directives sockd.conf(5) documents: the headings
 * (".TP"/".TQ" then ".B" or ".BI") of its DIRECTIVES section.
 */
static void
test_directives_documented(void **state)
{
    (void)state;
    char *doc[64], *code[64];
    size_t ndoc = 0, ncode = 0;
    FILE *f = fopen(CONF_MAN_PAGE, "r");
    if (f == NULL)
        fail_msg("%s: cannot open", CONF_MAN_PAGE);
    char line[1024];
    int in_section = 0, after_tp = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, ".SH ", 4) == 0)
            in_section = strcmp(line, ".SH DIRECTIVES\n") == 0;
        else if (in_section && after_tp &&
                 (strncmp(line, ".B ", 3) == 0 || strncmp(line, ".BI ", 4) == 0))
            man_heading(line, doc, &ndoc, NELEM(doc));
        after_tp = strcmp(line, ".TP\n") == 0 || strcmp(line, ".TQ\n") == 0;
    }
    fclose(f);
    for (const char *name; (name = conf_directive_name(ncode)) != NULL;) {
        assert_true(ncode < NELEM(code));
        code[ncode++] = strdup(name);
    }
    qsort(doc, ndoc, sizeof doc[0], cmp_names);
    qsort(code, ncode, sizeof code[0], cmp_names);
    assert_true(ndoc > 0);
    /* Name the first difference: a directive only in the table or only in the page. */
    size_t i = 0, j = 0;
    while (i < ndoc || j < ncode) {
        int d = i == ndoc ? 1 : j == ncode ? -1 : strcmp(doc[i], code[j]);
        if (d != 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "directive '%s' is %s", d < 0 ? doc[i] : code[j],
                     d < 0 ? "in sockd.conf(5) but not in the parser's table"
                           : "in the parser's table but not in sockd.conf(5)");
            fail_msg("%s", msg);
        }
        i++, j++;
    }
    for (i = 0; i < ndoc; i++)
        free(doc[i]);
    for (j = 0; j < ncode; j++)
        free(code[j]);
}

/*
 * Sizes whose value overflows a long long must be refused, not wrap. Kept last: if the parser
 * overflows, a UBSan build stops the program here.
 */
static void
test_size_overflow(void **state)
{
    (void)state;
    static const char *const words[] = {"1099511627776G", "8589934592G", "17179869184G"};
    for (size_t i = 0; i < NELEM(words); i++) {
        long long got = conf_parse_size(words[i]);
        if (got != -1)
            fail_msg("conf_parse_size(\"%s\") = %lld, want -1 (out of range)", words[i], got);
    }
    check_bad("max-send-buffer 1099511627776G", strlen("max-send-buffer 1099511627776G"),
              "line 1: max-send-buffer is a size from 1K to 1G");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_directives),
        cmocka_unit_test(test_string_values),
        cmocka_unit_test(test_protocol_example),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_line_numbers),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_time),
        cmocka_unit_test(test_load),
        cmocka_unit_test(test_shipped_file),
        cmocka_unit_test(test_directives_documented),
        cmocka_unit_test(test_size_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
