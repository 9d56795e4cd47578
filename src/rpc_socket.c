#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "policy.h"
#include "ctl.h"
#include "daemon.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h"

int
rpc_fail_state(struct rpc_call *call, struct sock *s, const char *what)
{
    return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "%s: socket %llu is %s (%s)", what,
                    (unsigned long long)s->id, sock_state_name(s->state), sock_type_name(s->type));
}

static int rpc_ip_address(struct rpc_call *call, const char *text, int need_port, struct addr *a);

/* "localhost" as the loopback of the socket's family; other names stay names. */
static void
rpc_localhost(struct sock *s, struct addr *a)
{
    if (a->kind != ADDR_NAME || strcasecmp(a->host, "localhost") != 0)
        return;
    int port = a->port;
    addr_any(s->ipv6, port < 0 ? 0 : port, a);
    a->port = port;
    if (s->ipv6) {
        ((struct sockaddr_in6 *)&a->sa)->sin6_addr = in6addr_loopback;
        strcpy(a->host, "::1");
    } else {
        ((struct sockaddr_in *)&a->sa)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        strcpy(a->host, "127.0.0.1");
    }
}

/*
 * The "address" (+ "port") param of socket s into *a, by the socket's type: a Unix path or
 * @name, or an IP literal; host names only where allow_name (connect). Sets the error.
 */
static int
rpc_address(struct rpc_call *call, struct sock *s, const char *text, int need_port, int allow_name,
            struct addr *a)
{
    const char *cause;
    if (sock_has(s, SOCK_CAP_UNIX)) {
        if (rpc_get(call, "port") != NULL)
            return rpc_fail_param(call, "port", "a unix socket has no port");
        if (addr_parse_unix(text, a, &cause) < 0)
            return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                            "address '%.200s': %s", text, cause);
        return 0;
    }
    if (rpc_ip_address(call, text, need_port, a) < 0)
        return -1;
    if (!allow_name)
        rpc_localhost(s, a);
    if (a->kind == ADDR_NAME && !allow_name)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address '%.200s': this call takes an IP address or localhost", text);
    return 0;
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
    struct tlsctx *ctx = NULL;
    if (sock_type_has(t, SOCK_CAP_TLS)) {
        if (rpc_get(call, "context") == NULL)
            return rpc_fail_param(call, "context", "a %s socket needs a context", tname);
        if ((ctx = tlsctx_get(&call->client->owner, (uint64_t)rpc_int(call, "context", 0))) == NULL)
            return rpc_fail_handle(call, "context");
        if (ctx->dtls && !sock_type_has(t, SOCK_CAP_DGRAM))
            return rpc_fail_param(call, "context", "the context is for DTLS");
        if (!ctx->dtls &&
            sock_type_has(t, SOCK_CAP_DGRAM)) /* dtls: the context needs dtls (or enable_dtls) */
            return rpc_fail_param(call, "context",
                                  "the context is not for DTLS (context.enable_dtls)");
    } else if (rpc_get(call, "context") != NULL) {
        return rpc_fail_param(call, "context", "a context applies to tls and dtls sockets only");
    }
    int readahead = rpc_bool(call, "readahead", 1);
    if (!readahead && sock_type_has(t, SOCK_CAP_TLS))
        return rpc_fail_param(call, "readahead", "a %s socket reads for its TLS layer", tname);
    const char *full = sock_budget_full(&call->client->owner, call->client->owner.ident);
    if (full != NULL)
        return rpc_fail_limit(call, full);
    struct sock *s = sock_new(&call->client->owner, call->client->owner.ident, (enum sock_type)t,
                              rpc_bool(call, "ipv6", 0));
    if (s == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    s->no_readahead = !readahead; /* for a socket that will be detached: nothing read first */
    json_t *tag = rpc_get(call, "tag");
    if (tag != NULL)
        s->tag = json_incref(tag);
    if (ctx != NULL) {
        s->tls->ctx = ctx; /* held by the socket: context.destroy does not stop it */
        tlsctx_ref(ctx);
    }
    call->result = json_pack("{s:I}", "socket", (json_int_t)s->id);
    return 0;
}

static int
socket_connect(struct rpc_call *call)
{
    struct sock *s = call->sock;
    struct addr a;
    long long tmo;

    if (s->state != SS_OPEN && s->state != SS_BOUND)
        return rpc_fail_state(call, s, "connect");
    if (rpc_int_range(call, "timeout_ms", 1, 86400000, 0, &tmo) < 0 ||
        rpc_address(call, s, rpc_str(call, "address"), 1, 1, &a) < 0)
        return -1;
    if (s->fd >= 0 && s->has_local && s->local.sa.sa_family != a.sa.ss_family)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address family differs from the bound address");
    if (a.kind != ADDR_NAME) {
        /* rewrite first, then the policy decides on the real destination */
        struct sockaddr_storage rw;
        socklen_t rwlen = a.salen;
        const struct sockaddr *dst = (const struct sockaddr *)&a.sa;
        if (a.kind == ADDR_IP && sock_rewrite(s, dst, a.salen, &rw, &rwlen))
            dst = (const struct sockaddr *)&rw;
        int ok = a.kind == ADDR_UNIX && a.host[0] == '/' /* on its real path */
                     ? sock_unix_allowed(s, POLICY_CONNECT, dst, a.salen)
                     : sock_policy_ok(s, POLICY_CONNECT, dst, a.kind == ADDR_IP ? rwlen : a.salen);
        if (!ok)
            return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                            "connect to %.200s denied by policy", rpc_str(call, "address"));
    }
    const char *sn = rpc_str(call, "server_name");
    if (sn != NULL && sn[0] == '\0')
        return rpc_fail_param(call, "server_name",
                              "server_name is empty: give a name or leave it out");
    if (sock_has(s, SOCK_CAP_TLS)) {
        free(s->tls->server_name);
        s->tls->server_name = strdup(sn ? sn : a.host); /* verified and sent as SNI */
    }
    s->connect_req = call->id ? json_incref(call->id) : NULL;
    if (sock_connect(s, &a, (double)tmo / 1000.0) < 0) {
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
    if (sock_open_fd(s, af) < 0)
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_OPEN_FAILED, errno, "socket");
    /* udp: SO_REUSEADDR would let another socket bind the port and read its datagrams */
    if (reuse && af != AF_UNIX && (!sock_has(s, SOCK_CAP_DGRAM) || sockd.conf.share_udp_ports))
        setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* dtls: each peer a listener accepts gets a socket of its own on the same port */
    if (sock_has(s, SOCK_CAP_COOKIE))
        setsockopt(s->fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    return 0;
}

/*
 * Bind s to a (a pathname Unix one through sock_unix_bind, with the file mode); on failure the
 * socket goes back to having no fd. Unless share-udp-ports, a datagram socket may not bind
 * where another client's socket holds the port with SO_REUSEPORT (dtls): asked for, that is
 * EADDRINUSE; picked by the kernel (port 0, which may pick such a port), another is tried.
 */
static int
rpc_do_bind(struct rpc_call *call, struct sock *s, struct addr *a, int reuse, int mode)
{
    int guard = sock_has(s, SOCK_CAP_DGRAM) && !sockd.conf.share_udp_ports;
    int upath = a->kind == ADDR_UNIX && a->host[0] == '/';
    if (guard && dtls_port_taken(s, (struct sockaddr *)&a->sa))
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_BIND_FAILED, EADDRINUSE, "bind");
    for (int tries = 0;; tries++) {
        if (rpc_sock_fd(call, s, a->sa.ss_family, reuse) < 0)
            return -1;
        int r = upath ? sock_unix_bind(s, a->host, mode)
                      : bind(s->fd, (struct sockaddr *)&a->sa, a->salen);
        if (r < 0) {
            int err = errno;
            sock_drop_fd(s);
            if (r == -2)
                return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                                "bind denied by policy");
            return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_BIND_FAILED, err, "bind");
        }
        union sock_sa got;
        socklen_t glen = sizeof got;
        if (!guard || getsockname(s->fd, &got.sa, &glen) < 0 || !dtls_port_taken(s, &got.sa))
            break;
        sock_drop_fd(s);
        if (tries == 8)
            return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_BIND_FAILED, EADDRINUSE,
                                  "bind");
    }
    if (a->kind == ADDR_UNIX) {
        s->un->local = strdup(a->host);
    } else {
        socklen_t len = sizeof s->local;
        getsockname(s->fd, &s->local.sa, &len);
    }
    if (sock_has(s, SOCK_CAP_COOKIE) && dtls_port_hold(s) < 0) {
        sock_drop_fd(s);
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    sock_bound(s);
    return 0;
}

/* The file mode param of a unix bind: an integer or an octal string such as "0660". */
static int
rpc_mode(struct rpc_call *call, int *mode)
{
    json_t *m = rpc_get(call, "mode");
    long v = 0666;
    if (json_is_integer(m)) {
        v = (long)json_integer_value(m);
    } else if (json_is_string(m)) {
        char *end;
        v = strtol(json_string_value(m), &end, 8);
        if (*end != '\0' || end == json_string_value(m))
            v = -1;
    } else if (m != NULL) {
        v = -1;
    }
    if (v < 0 || v > 0777)
        return rpc_fail_param(call, "mode",
                              "mode is a file mode 0..0777 (integer or octal string)");
    *mode = (int)v;
    return 0;
}

/* socket.bind on a unix socket: a pathname as the client (sock_unix_bind), @name as is. */
static int
rpc_bind_unix(struct rpc_call *call, struct sock *s, const char *text)
{
    struct addr a;
    int mode = 0666;

    if (text == NULL)
        return rpc_fail_param(call, "address", "a unix bind needs an address");
    if (rpc_get(call, "port") != NULL)
        return rpc_fail_param(call, "port", "a unix socket has no port");
    if (rpc_mode(call, &mode) < 0 || rpc_address(call, s, text, 0, 0, &a) < 0)
        return -1;
    /* a pathname is judged on its real path as it is bound */
    if (text[0] != '/' && !sock_policy_ok(s, POLICY_BIND, (struct sockaddr *)&a.sa, a.salen))
        return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED, "bind denied by policy");
    if (rpc_do_bind(call, s, &a, 0, mode) < 0)
        return -1;
    call->result = json_pack("{s:o}", "local", sock_addr_json(s, 0));
    return 0;
}

static int
socket_bind(struct rpc_call *call)
{
    struct sock *s = call->sock;
    struct addr a;

    if (s->state != SS_OPEN || s->fd >= 0)
        return rpc_fail_state(call, s, "bind");
    const char *text = rpc_str(call, "address");
    if (sock_has(s, SOCK_CAP_UNIX))
        return rpc_bind_unix(call, s, text);
    if (rpc_get(call, "mode") != NULL)
        return rpc_fail_param(call, "mode", "mode applies to unix sockets only");
    if (text != NULL) {
        if (rpc_address(call, s, text, 0, 0, &a) < 0)
            return -1;
        if (a.port < 0) {
            a.port = 0;
            ((struct sockaddr_in *)&a.sa)->sin_port = 0;
        }
    } else {
        long long port;
        if (rpc_int_range(call, "port", 0, 65535, 0, &port) < 0)
            return -1;
        addr_any(s->ipv6, (int)port, &a);
    }
    if (!sock_policy_ok(s, POLICY_BIND, (struct sockaddr *)&a.sa, a.salen))
        return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED, "bind denied by policy");
    if (rpc_do_bind(call, s, &a, rpc_bool(call, "reuse_address", 1), 0) < 0)
        return -1;
    call->result = json_pack("{s:o}", "local", sock_addr_json(s, 0));
    return 0;
}

static int
socket_listen(struct rpc_call *call)
{
    struct sock *s = call->sock;
    long long backlog;

    if (s->state != SS_OPEN && s->state != SS_BOUND)
        return rpc_fail_state(call, s, "listen");
    if (!sock_has(s, SOCK_CAP_LISTEN) && !sock_has(s, SOCK_CAP_COOKIE))
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "listen: %s sockets do not listen",
                        sock_type_name(s->type));
    if (sock_has(s, SOCK_CAP_UNIX) && s->state == SS_OPEN)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "listen: bind the unix socket first");
    if (sock_has(s, SOCK_CAP_TLS) && !tlsctx_serves(s->tls->ctx))
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "listen: the context has no server certificate");
    if (rpc_int_range(call, "backlog", 1, 65535, 128, &backlog) < 0)
        return -1;
    if (sock_listen_alloc(s) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    int was_open = s->state == SS_OPEN;
    if (was_open) {
        struct addr a;
        addr_any(s->ipv6, 0, &a);
        if (!sock_policy_ok(s, POLICY_BIND, (struct sockaddr *)&a.sa, a.salen))
            return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                            "listen: binding to any address is denied by policy");
        if (rpc_do_bind(call, s, &a, 1, 0) < 0)
            return -1;
    }
    /* dtls: no kernel listen; peers come through DTLSv1_listen on the bound socket */
    if (sock_has(s, SOCK_CAP_LISTEN) && listen(s->fd, (int)backlog) < 0) {
        int err = errno;
        if (was_open) /* a failed call leaves the socket as it was */
            sock_unbind(s);
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_LISTEN_FAILED, err, "listen");
    }
    s->auto_accept = rpc_bool(call, "auto_accept", 0);
    sock_listen_start(s, call->id);
    return 0;
}

/* The listener and its pending connection named by the params; NULL after setting the error. */
static struct sock_pending *
rpc_pending(struct rpc_call *call, struct sock **lp)
{
    struct sock *l = call->sock;
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
    /* the pending connection already counts for the user: only the client's count grows */
    const char *full = sock_budget_full(&call->client->owner, NULL);
    if (full != NULL)
        return rpc_fail_limit(call, full);
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
    struct sock *s = call->sock;
    if ((s->state != SS_CONNECTED && s->state != SS_CONNECTING &&
         !(sock_has(s, SOCK_CAP_DGRAM) && s->state == SS_BOUND)) ||
        s->shut_wanted)
        return rpc_fail_state(call, s, "shutdown");
    sock_shutdown(s, call->id);
    return 0;
}

static int
socket_close(struct rpc_call *call)
{
    struct sock *s = call->sock;
    call->result = json_pack("{s:I}", "discarded", (json_int_t)buf_len(&s->out));
    sock_close(s, NULL, 0, NULL, NULL);
    return 0;
}

/* socket.starttls: upgrade a connected TCP socket in place (the handle stays). */
static int
socket_starttls(struct rpc_call *call)
{
    struct sock *s = call->sock;
    struct tlsctx *t = tlsctx_get(&call->client->owner, (uint64_t)rpc_int(call, "context", 0));
    if (t == NULL)
        return rpc_fail_handle(call, "context");
    const char *sn = rpc_str(call, "server_name");
    int server = rpc_bool(call, "server_side", 0);
    if (!sock_has(s, SOCK_CAP_STARTTLS) || s->state != SS_CONNECTED || sock_ssl(s) != NULL ||
        s->tls_upgrade || s->relay != NULL || s->shut_wanted)
        return rpc_fail_state(call, s, "starttls");
    if (t->dtls)
        return rpc_fail_param(call, "context", "the context is for DTLS");
    if (server && !tlsctx_serves(t))
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "starttls: the context has no server certificate");
    if (sn != NULL && sn[0] == '\0')
        return rpc_fail_param(call, "server_name",
                              "server_name is empty: give a name or leave it out");
    if (buf_len(&s->in) > 0)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "starttls: %zu received bytes not yet read; recv them first",
                        buf_len(&s->in));
    if (tls_alloc(s) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    if (s->recv_pending)
        sock_recv_cancel(s);
    char host[INET6_ADDRSTRLEN];
    if (sn == NULL && !server) {
        json_t *r = sock_addr_json(s, 1);
        snprintf(host, sizeof host, "%s", json_string_value(json_object_get(r, "address")));
        json_decref(r);
        sn = host;
    }
    sock_starttls(s, t, server, sn, call->id);
    return 0;
}

/* socket.setopt: each option checked against the socket type, stored and applied. */
static int
socket_setopt(struct rpc_call *call)
{
    struct sock *s = call->sock;
    static const struct {
        const char *name;
        unsigned bit;
        int stream_only, dgram_only, ip_only;
        long long lo, hi;
    } rows[] = {
        {"nodelay", SOPT_NODELAY, 1, 0, 1, 0, 1},
        {"keepalive", SOPT_KEEPALIVE, 1, 0, 0, 0, 1},
        {"broadcast", SOPT_BROADCAST, 0, 1, 1, 0, 1},
        {"ttl", SOPT_TTL, 0, 0, 1, 1, 255},
        {"rcvbuf", SOPT_RCVBUF, 0, 0, 0, 1024, 64 << 20},
        {"sndbuf", SOPT_SNDBUF, 0, 0, 0, 1024, 64 << 20},
    };
    struct sock_opts o;
    const char *which;

    o = s->opts ? *s->opts : (struct sock_opts){0};
    int *vals[] = {&o.nodelay, &o.keepalive, &o.broadcast, &o.ttl, &o.rcvbuf, &o.sndbuf};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        json_t *v = rpc_get(call, rows[i].name);
        if (v == NULL)
            continue;
        if ((rows[i].stream_only && sock_has(s, SOCK_CAP_DGRAM)) ||
            (rows[i].dgram_only && !sock_has(s, SOCK_CAP_DGRAM)) ||
            (rows[i].ip_only && sock_has(s, SOCK_CAP_UNIX)))
            return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                            "option %s does not apply to %s sockets", rows[i].name,
                            sock_type_name(s->type));
        long long n = json_is_boolean(v) ? json_is_true(v) : json_integer_value(v);
        if (n < rows[i].lo || n > rows[i].hi)
            return rpc_fail_param(call, rows[i].name, "%s must be %lld..%lld", rows[i].name,
                                  rows[i].lo, rows[i].hi);
        *vals[i] = (int)n;
        o.set |= rows[i].bit;
    }
    if (s->opts == NULL && (s->opts = calloc(1, sizeof *s->opts)) == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    struct sock_opts old = *s->opts;
    *s->opts = o;
    if (sock_apply_opts(s, &which) < 0) {
        int err = errno;
        *s->opts = old;
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, NULL, err, which);
    }
    return 0;
}

static int
socket_info(struct rpc_call *call)
{
    struct sock *s = call->sock;
    call->result = sock_info(s);
    return 0;
}

static int
socket_list(struct rpc_call *call)
{
    json_t *a = json_array();
    for (struct sock *s = call->client->owner.socks; s != NULL; s = s->cnext)
        json_array_insert_new(a, 0, sock_info(s));
    call->result = json_pack("{s:o}", "sockets", a);
    return 0;
}

static const struct rpc_param p_open[] = {{"type", RPC_P_STR, 1},       {"ipv6", RPC_P_BOOL, 0},
                                          {"context", RPC_P_HANDLE, 0}, {"tag", RPC_P_TAG, 0},
                                          {"readahead", RPC_P_BOOL, 0}, {NULL, 0, 0}};
static const struct rpc_param p_connect[] = {
    {"socket", RPC_P_HANDLE, 1},   {"address", RPC_P_STR, 1},    {"port", RPC_P_INT, 0},
    {"server_name", RPC_P_STR, 0}, {"timeout_ms", RPC_P_INT, 0}, {NULL, 0, 0}};
static const struct rpc_param p_bind[] = {
    {"socket", RPC_P_HANDLE, 1}, {"address", RPC_P_STR, 0},        {"port", RPC_P_INT, 0},
    {"mode", RPC_P_ANY, 0},      {"reuse_address", RPC_P_BOOL, 0}, {NULL, 0, 0}};
static const struct rpc_param p_listen[] = {{"socket", RPC_P_HANDLE, 1},
                                            {"backlog", RPC_P_INT, 0},
                                            {"auto_accept", RPC_P_BOOL, 0},
                                            {NULL, 0, 0}};
static const struct rpc_param p_accept[] = {
    {"socket", RPC_P_HANDLE, 1}, {"pending", RPC_P_HANDLE, 1}, {"tag", RPC_P_TAG, 0}, {NULL, 0, 0}};
static const struct rpc_param p_reject[] = {
    {"socket", RPC_P_HANDLE, 1}, {"pending", RPC_P_HANDLE, 1}, {NULL, 0, 0}};
static const struct rpc_param p_socket[] = {{"socket", RPC_P_HANDLE, 1}, {NULL, 0, 0}};
static const struct rpc_param p_none[] = {{NULL, 0, 0}};
static const struct rpc_param p_starttls[] = {{"socket", RPC_P_HANDLE, 1},
                                              {"context", RPC_P_HANDLE, 1},
                                              {"server_side", RPC_P_BOOL, 0},
                                              {"server_name", RPC_P_STR, 0},
                                              {NULL, 0, 0}};
static const struct rpc_param p_setopt[] = {
    {"socket", RPC_P_HANDLE, 1},  {"nodelay", RPC_P_BOOL, 0},
    {"keepalive", RPC_P_BOOL, 0}, {"broadcast", RPC_P_BOOL, 0},
    {"ttl", RPC_P_INT, 0},        {"rcvbuf", RPC_P_INT, 0},
    {"sndbuf", RPC_P_INT, 0},     {NULL, 0, 0}};

const struct rpc_method rpc_socket_methods[] = {
    {"socket.open", socket_open, p_open, RPC_TARGET_NONE, 0},
    {"socket.connect", socket_connect, p_connect, RPC_TARGET_SOCK, 0},
    {"socket.bind", socket_bind, p_bind, RPC_TARGET_SOCK, 0},
    {"socket.listen", socket_listen, p_listen, RPC_TARGET_SOCK, 0},
    {"socket.accept", socket_accept, p_accept, RPC_TARGET_SOCK, 0},
    {"socket.reject", socket_reject, p_reject, RPC_TARGET_SOCK, 0},
    {"socket.shutdown", socket_shutdown, p_socket, RPC_TARGET_SOCK, 0},
    {"socket.close", socket_close, p_socket, RPC_TARGET_SOCK, 0},
    {"socket.info", socket_info, p_socket, RPC_TARGET_SOCK, 0},
    {"socket.setopt", socket_setopt, p_setopt, RPC_TARGET_SOCK, 0},
    {"socket.starttls", socket_starttls, p_starttls, RPC_TARGET_SOCK, 0},
    {"socket.list", socket_list, p_none, RPC_TARGET_NONE, 0},
    {NULL, NULL, NULL, RPC_TARGET_NONE, 0},
};
