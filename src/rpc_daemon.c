#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "ctl.h"
#include "daemon.h"
#include "fsid.h"
#include "ident.h"
#include "log.h"
#include "policy.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h"

/* A limit daemon.hello reports: its name there and its value now. */
struct hello_limit {
    const char *name;
    long long value;
};

/*
 * The limits in force, configured and built in, under the names sockd-protocol.7 gives them
 * (METHODS, daemon.hello); test_rpc pins every name and default.
 */
static json_t *
hello_limits(void)
{
    const struct conf *cf = &sockd.conf;
    const struct hello_limit rows[] = {
        {"max_clients", cf->max_clients},
        {"max_sockets_per_client", cf->max_sockets_per_client},
        {"max_send_buffer", (long long)cf->max_send_buffer},
        {"max_message", (long long)cf->max_message},
        {"max_pending_accepts", cf->max_pending_accepts},
        {"accept_timeout_ms", cf->accept_timeout_ms},
        {"client_line_timeout_ms", cf->line_timeout_ms},
        {"max_recv_length", SOCK_MAX_RECV},
        {"max_clients_per_uid", cf->max_clients_per_uid},
        {"max_sockets_per_uid", cf->max_sockets_per_uid},
        {"max_buffer_per_uid", (long long)cf->max_buffer_per_uid},
        {"max_control_buffer_per_uid", (long long)cf->max_control_buffer_per_uid},
        {"max_tls_memory_per_uid", (long long)cf->max_tls_memory_per_uid},
        {"max_output_queue", (long long)ctl_out_hard()},
        {"max_fds_per_message", CTL_LINE_FDS},
        {"max_tag", RPC_TAG_MAX},
        {"max_until", SOCK_UNTIL_MAX},
        {"max_udp_payload", SOCK_UDP_PAYLOAD_MAX},
        {"max_dtls_payload", DTLS_MAX_PAYLOAD},
        {"max_restrictions", IDENT_MAX_RESTRICT},
        {"max_restrict_rules", IDENT_MAX_RULES},
    };
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < sizeof rows / sizeof rows[0]; i++)
        if (json_object_set_new(o, rows[i].name, json_integer(rows[i].value)) < 0) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

/* daemon.hello: who we are, what we speak, and the limits in force. */
static int
daemon_hello(struct rpc_call *call)
{
    const char *name = rpc_str(call, "client");
    if (name != NULL)
        snprintf(call->client->name, sizeof call->client->name, "%s", name);
    json_t *limits = hello_limits();
    call->result = limits == NULL
                       ? NULL
                       : json_pack("{s:s,s:s,s:i,s:o,s:[s,s],s:o}", "server", "sockd", "version",
                                   PACKAGE_VERSION, "protocol", SOCKD_PROTOCOL_VERSION, "methods",
                                   rpc_method_names(), "features", "recv_until", "readahead",
                                   "limits", limits);
    json_t *rx = ident_restrict_json(call->client->owner.ident);
    if (call->result == NULL || rx == NULL || json_object_set_new(call->result, "restrict", rx) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    return 0;
}

/*
 * daemon.restrict: the connection narrows its own rights (sockd-protocol.7, METHODS,
 * daemon.restrict). The rules are parsed whole before anything changes: a bad one refuses the call
 * and leaves the connection as it was. Unix prefixes are resolved with the client's credentials, as
 * its destinations are.
 */
static int
daemon_restrict(struct rpc_call *call)
{
    json_t *rules = rpc_get(call, "rules"), *v;
    struct policy *p = NULL;
    struct policy_who who;
    char cause[200];
    size_t i;

    if (json_array_size(rules) > IDENT_MAX_RULES)
        return rpc_fail_param(call, "rules", "more than %d rules", IDENT_MAX_RULES);
    json_array_foreach(rules, i, v)
    {
        if (!json_is_string(v))
            goto bad_type;
    }
    ident_who(call->client->owner.ident, &who);
    if (fsid_enter(&who) < 0)
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, NULL, errno, "switching credentials");
    json_array_foreach(rules, i, v)
    {
        if (policy_parse_restriction(&p, json_string_value(v), cause, sizeof cause) < 0)
            break;
    }
    fsid_leave();
    if (i < json_array_size(rules)) {
        policy_free(p);
        return rpc_fail_param(call, "rules", "rule %zu: %s", i + 1, cause);
    }
    if (ident_restrict(call->client->owner.ident, p, rules) < 0) {
        if (errno == E2BIG)
            return rpc_fail_limit(call, "max_restrictions");
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    return 0;
bad_type:
    return rpc_fail_param(call, "rules", "rule %zu is not a string", i + 1);
}

static int
daemon_ping(struct rpc_call *call)
{
    (void)call;
    return 0;
}

/* daemon.stats: counters since start. */
static int
daemon_stats(struct rpc_call *call)
{
    json_t *socks = json_object();
    json_int_t total = 0;
    for (int t = 0; t < SOCK_NTYPES; t++) {
        json_object_set_new(socks, sock_type_name(t), json_integer(sockd.nsockets[t]));
        total += sockd.nsockets[t];
    }
    json_object_set_new(socks, "total", json_integer(total));
    call->result =
        json_pack("{s:I,s:o,s:I,s:I,s:I,s:I,s:I,s:I}", "clients", (json_int_t)sockd.nclients,
                  "sockets", socks, "contexts", (json_int_t)tlsctx_count(), "bytes_in",
                  (json_int_t)sockd.bytes_in, "bytes_out", (json_int_t)sockd.bytes_out, "requests",
                  (json_int_t)sockd.requests, "uptime_ms", (json_int_t)daemon_uptime_ms(),
                  "log_left_out", (json_int_t)log_client_left_out());
    return 0;
}

static const struct rpc_param p_hello[] = {{"client", RPC_P_STR, 0}, {NULL, 0, 0}};
/*
 * daemon.check: whether this connection's call would be allowed to an IP address (the admin's
 * policy for its identity and its restrictions), without doing it (sockd-protocol.7,
 * METHODS, daemon.check). For a supervisor that performs a datagram itself on a socket sockd gave
 * it.
 */
static int
daemon_check(struct rpc_call *call)
{
    static const struct {
        const char *name;
        int action;
    } actions[] = {{"connect", POLICY_CONNECT}, {"bind", POLICY_BIND}, {"sendto", POLICY_SENDTO}};
    const char *what = rpc_str(call, "action"), *cause = NULL;
    struct addr a;
    struct policy_who who;
    long long port;
    int action = 0;
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++)
        if (strcmp(what, actions[i].name) == 0)
            action = actions[i].action;
    if (action == 0)
        return rpc_fail_param(call, "action", "connect, bind or sendto");
    if (rpc_int_range(call, "port", 0, 65535, -1, &port) < 0)
        return -1;
    if (addr_parse_ip(rpc_str(call, "address"), (int)port, &a, &cause) < 0)
        return rpc_fail_param(call, "address", "%s", cause);
    if (a.kind != ADDR_IP || a.port < 0)
        return rpc_fail_param(call, "address", "an IP address literal with a port");
    ident_who(call->client->owner.ident, &who);
    const struct sockaddr *sa = (const struct sockaddr *)&a.sa;
    int ok = policy_allows(sockd.conf.policy, (enum policy_action)action, sa, a.salen, &who) &&
             ident_allows(call->client->owner.ident, action, sa, a.salen);
    call->result = json_pack("{s:b}", "allowed", ok);
    return 0;
}

static const struct rpc_param p_check[] = {
    {"action", RPC_P_STR, 1}, {"address", RPC_P_STR, 1}, {"port", RPC_P_INT, 0}, {NULL, 0, 0}};
static const struct rpc_param p_restrict[] = {{"rules", RPC_P_ARRAY, 1}, {NULL, 0, 0}};
static const struct rpc_param p_none[] = {{NULL, 0, 0}};

const struct rpc_method rpc_daemon_methods[] = {
    {"daemon.check", daemon_check, p_check, RPC_TARGET_NONE, 0},
    {"daemon.hello", daemon_hello, p_hello, RPC_TARGET_NONE, 0},
    {"daemon.ping", daemon_ping, p_none, RPC_TARGET_NONE, 0},
    {"daemon.restrict", daemon_restrict, p_restrict, RPC_TARGET_NONE, 0},
    {"daemon.stats", daemon_stats, p_none, RPC_TARGET_NONE, 0},
    {NULL, NULL, NULL, RPC_TARGET_NONE, 0},
};
