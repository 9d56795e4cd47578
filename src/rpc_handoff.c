/* fd passing and hand-off: socket.detach, attach, pipe, give and take. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "b64.h"
#include "ctl.h"
#include "daemon.h"
#include "log.h"
#include "nbguard.h"
#include "policy.h"
#include "rpc.h"
#include "sock.h"

/* Buffered received bytes (stream) or datagrams (udp) as result fields, so detach loses nothing. */
static void
handoff_buffered(struct sock *s, json_t *result)
{
    if (buf_len(&s->in) == 0)
        return;
    if (!sock_has(s, SOCK_CAP_DGRAM)) {
        char *text = malloc(b64_encoded_len(buf_len(&s->in)) + 1);
        if (text == NULL)
            return;
        size_t tl = b64_encode(buf_head(&s->in), buf_len(&s->in), text);
        json_object_set_new(result, "data", json_stringn_nocheck(text, tl));
        free(text);
        return;
    }
    json_t *list = json_array();
    while (buf_len(&s->in) >= sizeof(struct sock_dgram))
        json_array_append_new(list, sock_dgram_pop(s, SIZE_MAX));
    json_object_set_new(result, "datagrams", list);
}

/* socket.detach: the fd rides with the response (blocking mode); the handle is forgotten. */
static int
socket_detach(struct rpc_call *call)
{
    struct sock *s = call->sock;
    if (sock_has(s, SOCK_CAP_TLS) || sock_ssl(s) != NULL)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "detach: a TLS socket's state lives in the daemon; use socket.pipe");
    if (s->fd < 0 || s->relay != NULL || s->shut_wanted ||
        (s->state != SS_CONNECTED && s->state != SS_BOUND && s->state != SS_LISTENING))
        return rpc_fail_state(call, s, "detach");
    if (buf_len(&s->out) > 0)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL,
                        "detach: %zu bytes not yet sent; wait for socket.sent", buf_len(&s->out));
    call->result = json_object();
    handoff_buffered(s, call->result);
    if (s->rd_eof)
        json_object_set_new(call->result, "eof", json_true());
    call->fd_out = sock_detach(s);
    return 0;
}

/* The policy on an attached socket's address: a Unix pathname on the real path the client
 * reaches (sock_unix.c), as a connect or bind by the daemon would be judged. */
static int
handoff_policy_ok(struct sock *s, int action, const struct sockaddr_storage *ss, socklen_t len)
{
    const struct sockaddr *sa = (const struct sockaddr *)ss;
    return sock_unix_is_path(sa, len) ? sock_unix_allowed(s, action, sa, len)
                                      : sock_policy_ok(s, action, sa, len);
}

/* The sock_sa and JSON of an fd's local or peer address (IP or Unix). */
static int
handoff_name(int fd, int peer, struct sockaddr_storage *ss, socklen_t *len)
{
    *len = sizeof *ss;
    memset(ss, 0, sizeof *ss);
    return peer ? getpeername(fd, (struct sockaddr *)ss, len)
                : getsockname(fd, (struct sockaddr *)ss, len);
}

/* socket.attach: adopt a socket the client made; its kind and state are read from the kernel. */
static int
socket_attach(struct rpc_call *call)
{
    const char *tname = rpc_str(call, "type");
    int t = sock_type_parse(tname), fd = ctl_take_fd(call->client), so_type = 0, domain = 0,
        acc = 0;
    socklen_t ol = sizeof so_type;
    struct sockaddr_storage local, peer;
    socklen_t llen, plen;

    if (fd < 0)
        return rpc_fail_param(call, "fd", "socket.attach needs a socket fd sent with the request");
    if (t < 0 || sock_type_has(t, SOCK_CAP_TLS)) {
        nbguard_close(fd);
        return rpc_fail_param(call, "type", "attach takes tcp, udp or unix");
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &so_type, &ol) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &(socklen_t){sizeof domain}) < 0) {
        nbguard_close(fd);
        return rpc_fail_param(call, "fd", "the fd is not a socket");
    }
    int want_type = sock_type_has(t, SOCK_CAP_DGRAM) ? SOCK_DGRAM : SOCK_STREAM;
    int dom_ok = sock_type_has(t, SOCK_CAP_UNIX) ? domain == AF_UNIX
                                                 : (domain == AF_INET || domain == AF_INET6);
    if (so_type != want_type || !dom_ok) {
        nbguard_close(fd);
        return rpc_fail_param(call, "type", "the fd is not a %s socket", tname);
    }
    const char *full = sock_budget_full(&call->client->owner, call->client->owner.ident);
    if (full != NULL) {
        nbguard_close(fd);
        return rpc_fail_limit(call, full);
    }
    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &(socklen_t){sizeof acc});
    int connected = handoff_name(fd, 1, &peer, &plen) == 0;
    handoff_name(fd, 0, &local, &llen);
    struct sock *s = sock_new(&call->client->owner, call->client->owner.ident, (enum sock_type)t,
                              domain == AF_INET6);
    if (s == NULL || (acc && sock_listen_alloc(s) < 0)) {
        if (s != NULL)
            sock_close(s, NULL, 0, NULL, NULL);
        nbguard_close(fd);
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    /*
     * The policy applies to adopted sockets as to the ones the daemon makes; an unnamed Unix
     * peer (a socketpair end, an accepted connection) has no destination to judge.
     */
    if (domain == AF_UNIX && connected && plen <= sizeof(sa_family_t))
        connected = 2; /* connected, nothing to check */
    if ((connected == 1 && !handoff_policy_ok(s, POLICY_CONNECT, &peer, plen)) ||
        (!connected && llen > sizeof(sa_family_t) &&
         !handoff_policy_ok(s, POLICY_BIND, &local, llen))) {
        nbguard_close(fd);
        sock_close(s, NULL, 0, NULL, NULL);
        return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                        "the attached socket's address is denied by policy");
    }
    sock_set_fd(s, fd);
    s->foreign = 1; /* every later call on it is non-blocking per call, or guarded */
    json_t *tag = rpc_get(call, "tag");
    if (tag != NULL)
        s->tag = json_incref(tag);
    if (domain == AF_UNIX) {
        s->un->local = addr_unix_text((struct sockaddr *)&local, llen);
        if (connected)
            s->un->remote = addr_unix_text((struct sockaddr *)&peer, plen);
    } else {
        memcpy(&s->local, &local, sizeof s->local);
        if (connected)
            memcpy(&s->remote, &peer, sizeof s->remote);
    }
    s->has_local = 1;
    s->has_remote = connected != 0;
    if (acc)
        sock_listen_start(s, call->id);
    else
        sock_attached(s, connected);
    call->result =
        json_pack("{s:I,s:s}", "socket", (json_int_t)s->id, "state", sock_state_name(s->state));
    return 0;
}

/* socket.pipe: one end of a socketpair rides with the response; the daemon relays both ways. */
static int
socket_pipe(struct rpc_call *call)
{
    struct sock *s = call->sock;
    int sv[2];
    if (sock_has(s, SOCK_CAP_DGRAM) || s->state != SS_CONNECTED || s->relay != NULL ||
        s->shut_wanted)
        return rpc_fail_state(call, s, "pipe");
    if (s->recv_pending)
        sock_recv_cancel(s);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_OPEN_FAILED, errno,
                              "socketpair");
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    call->fd_out = sv[1];
    sock_relay_start(s, sv[0]);
    return 0;
}

/* socket.give: the socket waits unowned for socket.take with the returned token. */
static int
socket_give(struct rpc_call *call)
{
    struct sock *s = call->sock;
    long long tmo;
    if (rpc_int_range(call, "timeout_ms", 1, 86400000, 60000, &tmo) < 0)
        return -1;
    struct sock_gift *g = sock_give(s, (double)tmo / 1000.0);
    if (g == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "cannot make a token");
    call->result = json_pack("{s:s}", "token", g->token);
    return 0;
}

/* socket.take: a new handle for this client (same uid as the giver, or root). */
static int
socket_take(struct rpc_call *call)
{
    struct sock_gift *g = sock_gift_find(rpc_str(call, "token"));
    if (g == NULL)
        return rpc_fail(call, SOCKD_E_UNKNOWN_HANDLE, NULL, "unknown or used token");
    if (call->client->uid != g->uid && call->client->uid != 0)
        return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                        "only the giver's user (or root) may take this socket");
    /* the socket keeps the giver's identity: it already counts for the giver's uid */
    const char *full = sock_budget_full(&call->client->owner, NULL);
    if (full != NULL)
        return rpc_fail_limit(call, full);
    struct sock *s = sock_take(g, &call->client->owner);
    if (s == NULL)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    call->result = sock_info(s);
    sock_resume(s); /* an EOF that came while it waited closes it now, after this response */
    return 0;
}

static const struct rpc_param p_socket[] = {{"socket", RPC_P_HANDLE, 1}, {NULL, 0, 0}};
static const struct rpc_param p_attach[] = {
    {"type", RPC_P_STR, 1}, {"tag", RPC_P_TAG, 0}, {NULL, 0, 0}};
static const struct rpc_param p_give[] = {
    {"socket", RPC_P_HANDLE, 1}, {"timeout_ms", RPC_P_INT, 0}, {NULL, 0, 0}};
static const struct rpc_param p_take[] = {{"token", RPC_P_STR, 1}, {NULL, 0, 0}};

const struct rpc_method rpc_handoff_methods[] = {
    {"socket.detach", socket_detach, p_socket, RPC_TARGET_SOCK, 0},
    {"socket.attach", socket_attach, p_attach, RPC_TARGET_NONE, 0},
    {"socket.pipe", socket_pipe, p_socket, RPC_TARGET_SOCK, 0},
    {"socket.give", socket_give, p_give, RPC_TARGET_SOCK, 0},
    {"socket.take", socket_take, p_take, RPC_TARGET_NONE, 0},
    {NULL, NULL, NULL, RPC_TARGET_NONE, 0},
};
