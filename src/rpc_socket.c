#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "ctl.h"
#include "daemon.h"
#include "rpc.h"
#include "sock.h"

struct sock *
rpc_sock(struct rpc_call *call)
{
    struct sock *s = sock_get(call->client, (uint64_t)rpc_int(call, "socket", 0));
    if (s == NULL)
        rpc_fail_handle(call, "socket");
    return s;
}

int
rpc_fail_state(struct rpc_call *call, struct sock *s, const char *what)
{
    return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "%s: socket %llu is %s (%s)", what,
                    (unsigned long long)s->id, sock_state_name(s->state), sock_type_name(s->type));
}

/* An IP address param (with the "port" param) into *a; sets the error on failure. */
static int
rpc_ip_address(struct rpc_call *call, const char *text, int need_port, struct addr *a)
{
    const char *cause;
    long long port;
    if (rpc_int_range(call, "port", 0, 65535, -1, &port) < 0)
        return -1;
    if (addr_parse_ip(text, (int)port, a, &cause) < 0)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address '%.200s': %s", text, cause);
    if (need_port && a->port < 0)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address '%.200s' has no port", text);
    if (a->kind == ADDR_NAME)
        return rpc_fail(call, SOCKD_E_UNSUPPORTED, NULL,
                        "host names are not supported by this build yet; use an IP address");
    return 0;
}

/* socket.open: a new handle of a type; the fd comes with bind or connect. */
static int
socket_open(struct rpc_call *call)
{
    const char *tname = rpc_str(call, "type");
    int t = sock_type_parse(tname);
    if (t < 0)
        return rpc_fail_param(call, "type", "unknown socket type '%.50s'", tname);
    if (t != SOCK_TCP)
        return rpc_fail(call, SOCKD_E_UNSUPPORTED, NULL,
                        "socket type '%s' is not supported by this build yet", tname);
    if (rpc_get(call, "context") != NULL)
        return rpc_fail_param(call, "context", "a context applies to tls and dtls sockets only");
    if (call->client->nsocks >= sockd.conf.max_sockets_per_client)
        return rpc_fail_limit(call, "max-sockets-per-client");
    struct sock *s = sock_new(call->client, (enum sock_type)t, rpc_bool(call, "ipv6", 0));
    if (s == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    json_t *tag = rpc_get(call, "tag");
    if (tag != NULL)
        s->tag = json_incref(tag);
    call->result = json_pack("{s:I}", "socket", (json_int_t)s->id);
    return 0;
}

static int
socket_connect(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    struct addr a;
    long long tmo;

    if (s == NULL)
        return -1;
    if (s->state != SS_OPEN && s->state != SS_BOUND)
        return rpc_fail_state(call, s, "connect");
    if (rpc_int_range(call, "timeout_ms", 1, 86400000, 0, &tmo) < 0 ||
        rpc_ip_address(call, rpc_str(call, "address"), 1, &a) < 0)
        return -1;
    if (s->fd >= 0 && s->has_local && s->local.sa.sa_family != a.sa.ss_family)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address family differs from the bound address");
    s->connect_req = call->id ? json_incref(call->id) : NULL;
    if (sock_connect(s, (struct sockaddr *)&a.sa, a.salen, (double)tmo / 1000.0) < 0) {
        json_decref(s->connect_req);
        s->connect_req = NULL;
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_OPEN_FAILED, errno, "socket");
    }
    return 0;
}

/* Create the fd for a bind/listen on family af; sets the error on failure. */
static int
rpc_sock_fd(struct rpc_call *call, struct sock *s, int af, int reuse)
{
    int one = 1;
    if (s->fd >= 0)
        return 0;
    int fd = socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_OPEN_FAILED, errno, "socket");
    if (reuse)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sock_set_fd(s, fd);
    return 0;
}

/* Bind s to a; on failure the socket goes back to having no fd. */
static int
rpc_do_bind(struct rpc_call *call, struct sock *s, struct addr *a, int reuse)
{
    if (rpc_sock_fd(call, s, a->sa.ss_family, reuse) < 0)
        return -1;
    if (bind(s->fd, (struct sockaddr *)&a->sa, a->salen) < 0) {
        int err = errno;
        close(s->fd);
        s->fd = -1;
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_BIND_FAILED, err, "bind");
    }
    socklen_t len = sizeof s->local;
    getsockname(s->fd, &s->local.sa, &len);
    s->has_local = 1;
    s->state = SS_BOUND;
    return 0;
}

static int
socket_bind(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    struct addr a;

    if (s == NULL)
        return -1;
    if (s->state != SS_OPEN || s->fd >= 0)
        return rpc_fail_state(call, s, "bind");
    if (rpc_get(call, "mode") != NULL)
        return rpc_fail_param(call, "mode", "mode applies to unix sockets only");
    const char *text = rpc_str(call, "address");
    if (text != NULL) {
        if (rpc_ip_address(call, text, 0, &a) < 0)
            return -1;
        if (a.port < 0) {
            struct addr b;
            const char *cause;
            addr_parse_ip(text, 0, &b, &cause);
            a = b;
        }
    } else {
        long long port;
        if (rpc_int_range(call, "port", 0, 65535, 0, &port) < 0)
            return -1;
        addr_any(s->ipv6, (int)port, &a);
    }
    if (rpc_do_bind(call, s, &a, rpc_bool(call, "reuse_address", 1)) < 0)
        return -1;
    call->result = json_pack("{s:o}", "local", addr_to_json(&s->local.sa, sizeof s->local));
    return 0;
}

static int
socket_listen(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    long long backlog;

    if (s == NULL)
        return -1;
    if (s->state != SS_OPEN && s->state != SS_BOUND)
        return rpc_fail_state(call, s, "listen");
    if (rpc_int_range(call, "backlog", 1, 65535, 128, &backlog) < 0)
        return -1;
    if (s->state == SS_OPEN) {
        struct addr a;
        addr_any(s->ipv6, 0, &a);
        if (rpc_do_bind(call, s, &a, 1) < 0)
            return -1;
    }
    if (listen(s->fd, (int)backlog) < 0)
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_LISTEN_FAILED, errno, "listen");
    s->auto_accept = rpc_bool(call, "auto_accept", 0);
    s->listen_req = call->id ? json_incref(call->id) : NULL;
    sock_listen_start(s);
    return 0;
}

/* The listener and its pending connection named by the params; NULL after setting the error. */
static struct sock_pending *
rpc_pending(struct rpc_call *call, struct sock **lp)
{
    struct sock *l = rpc_sock(call);
    if (l == NULL)
        return NULL;
    if (l->state != SS_LISTENING) {
        rpc_fail_state(call, l, "accept/reject");
        return NULL;
    }
    struct sock_pending *p = sock_pending_find(l, (uint64_t)rpc_int(call, "pending", 0));
    if (p == NULL)
        rpc_fail_param(call, "pending", "no pending connection %lld on socket %llu",
                       rpc_int(call, "pending", 0), (unsigned long long)l->id);
    *lp = l;
    return p;
}

static int
socket_accept(struct rpc_call *call)
{
    struct sock *l = NULL;
    struct sock_pending *p = rpc_pending(call, &l);
    if (p == NULL)
        return -1;
    if (call->client->nsocks >= sockd.conf.max_sockets_per_client)
        return rpc_fail_limit(call, "max-sockets-per-client");
    struct sock *s = sock_pending_accept(l, p, call->id, rpc_get(call, "tag"));
    if (s == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, SOCKD_REASON_ACCEPT_FAILED, "out of memory");
    call->result = json_pack("{s:I}", "socket", (json_int_t)s->id);
    return 0;
}

static int
socket_reject(struct rpc_call *call)
{
    struct sock *l = NULL;
    struct sock_pending *p = rpc_pending(call, &l);
    if (p == NULL)
        return -1;
    sock_pending_drop(l, p);
    return 0;
}

static int
socket_shutdown(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    if (s == NULL)
        return -1;
    if ((s->state != SS_CONNECTED && s->state != SS_CONNECTING) || s->shut_wanted)
        return rpc_fail_state(call, s, "shutdown");
    sock_shutdown(s, call->id);
    return 0;
}

static int
socket_close(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    if (s == NULL)
        return -1;
    call->result = json_pack("{s:I}", "discarded", (json_int_t)buf_len(&s->out));
    sock_close(s, NULL, 0, NULL, NULL);
    return 0;
}

static int
socket_info(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    if (s == NULL)
        return -1;
    call->result = sock_info(s);
    return 0;
}

static int
socket_list(struct rpc_call *call)
{
    json_t *a = json_array();
    for (struct sock *s = call->client->socks; s != NULL; s = s->cnext)
        json_array_insert_new(a, 0, sock_info(s));
    call->result = json_pack("{s:o}", "sockets", a);
    return 0;
}

static const struct rpc_param p_open[] = {{"type", RPC_P_STR, 1},
                                          {"ipv6", RPC_P_BOOL, 0},
                                          {"context", RPC_P_HANDLE, 0},
                                          {"tag", RPC_P_ANY, 0},
                                          {NULL, 0, 0}};
static const struct rpc_param p_connect[] = {
    {"socket", RPC_P_HANDLE, 1},   {"address", RPC_P_STR, 1},    {"port", RPC_P_INT, 0},
    {"server_name", RPC_P_STR, 0}, {"timeout_ms", RPC_P_INT, 0}, {NULL, 0, 0}};
static const struct rpc_param p_bind[] = {
    {"socket", RPC_P_HANDLE, 1}, {"address", RPC_P_STR, 0},        {"port", RPC_P_INT, 0},
    {"mode", RPC_P_INT, 0},      {"reuse_address", RPC_P_BOOL, 0}, {NULL, 0, 0}};
static const struct rpc_param p_listen[] = {{"socket", RPC_P_HANDLE, 1},
                                            {"backlog", RPC_P_INT, 0},
                                            {"auto_accept", RPC_P_BOOL, 0},
                                            {NULL, 0, 0}};
static const struct rpc_param p_accept[] = {
    {"socket", RPC_P_HANDLE, 1}, {"pending", RPC_P_HANDLE, 1}, {"tag", RPC_P_ANY, 0}, {NULL, 0, 0}};
static const struct rpc_param p_reject[] = {
    {"socket", RPC_P_HANDLE, 1}, {"pending", RPC_P_HANDLE, 1}, {NULL, 0, 0}};
static const struct rpc_param p_socket[] = {{"socket", RPC_P_HANDLE, 1}, {NULL, 0, 0}};
static const struct rpc_param p_none[] = {{NULL, 0, 0}};

const struct rpc_method rpc_socket_methods[] = {
    {"socket.open", socket_open, p_open},
    {"socket.connect", socket_connect, p_connect},
    {"socket.bind", socket_bind, p_bind},
    {"socket.listen", socket_listen, p_listen},
    {"socket.accept", socket_accept, p_accept},
    {"socket.reject", socket_reject, p_reject},
    {"socket.shutdown", socket_shutdown, p_socket},
    {"socket.close", socket_close, p_socket},
    {"socket.info", socket_info, p_socket},
    {"socket.list", socket_list, p_none},
    {NULL, NULL, NULL},
};
