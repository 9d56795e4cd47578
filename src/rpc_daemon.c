#include "config.h"

#include <stdio.h>
#include <string.h>

#include <sockd/protocol.h>

#include "ctl.h"
#include "daemon.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h"

/* daemon.hello: who we are, what we speak, and the limits in force. */
static int
daemon_hello(struct rpc_call *call)
{
    const struct conf *cf = &sockd.conf;
    const char *name = rpc_str(call, "client");
    if (name != NULL)
        snprintf(call->client->name, sizeof call->client->name, "%s", name);
    call->result = json_pack(
        "{s:s,s:s,s:i,s:o,s:[s],s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}}", "server",
        "sockd", "version", PACKAGE_VERSION, "protocol", SOCKD_PROTOCOL_VERSION, "methods",
        rpc_method_names(), "features", "recv_until", "limits", "max_clients",
        (json_int_t)cf->max_clients, "max_sockets_per_client",
        (json_int_t)cf->max_sockets_per_client, "max_send_buffer", (json_int_t)cf->max_send_buffer,
        "max_message", (json_int_t)cf->max_message, "max_pending_accepts",
        (json_int_t)cf->max_pending_accepts, "accept_timeout_ms", (json_int_t)cf->accept_timeout_ms,
        "client_line_timeout_ms", (json_int_t)cf->line_timeout_ms, "max_recv_length",
        (json_int_t)SOCK_MAX_RECV, "max_clients_per_uid", (json_int_t)cf->max_clients_per_uid,
        "max_sockets_per_uid", (json_int_t)cf->max_sockets_per_uid, "max_buffer_per_uid",
        (json_int_t)cf->max_buffer_per_uid);
    return 0;
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
        json_pack("{s:I,s:o,s:I,s:I,s:I,s:I,s:I}", "clients", (json_int_t)sockd.nclients, "sockets",
                  socks, "contexts", (json_int_t)tlsctx_count(), "bytes_in",
                  (json_int_t)sockd.bytes_in, "bytes_out", (json_int_t)sockd.bytes_out, "requests",
                  (json_int_t)sockd.requests, "uptime_ms", (json_int_t)daemon_uptime_ms());
    return 0;
}

static const struct rpc_param p_hello[] = {{"client", RPC_P_STR, 0}, {NULL, 0, 0}};
static const struct rpc_param p_none[] = {{NULL, 0, 0}};

const struct rpc_method rpc_daemon_methods[] = {
    {"daemon.hello", daemon_hello, p_hello},
    {"daemon.ping", daemon_ping, p_none},
    {"daemon.stats", daemon_stats, p_none},
    {NULL, NULL, NULL},
};
