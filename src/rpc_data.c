#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sockd/protocol.h>

#include "b64.h"
#include "ctl.h"
#include "daemon.h"
#include "rpc.h"
#include "sock.h"

/* socket.send: queue bytes (base64 data or text); socket.sent follows once in the kernel. */
static int
socket_send(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    json_t *data = rpc_get(call, "data"), *text = rpc_get(call, "text");
    unsigned char *bytes = NULL;
    size_t n;

    if (s == NULL)
        return -1;
    if ((data == NULL) == (text == NULL))
        return rpc_fail_param(call, data ? "text" : "data", "give exactly one of data and text");
    if (s->state != SS_CONNECTED && s->state != SS_CONNECTING)
        return rpc_fail_state(call, s, "send");
    if (s->shut_wanted)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "socket is shutting down");
    if (data != NULL) {
        size_t tl = json_string_length(data);
        if (tl / 4 * 3 > sockd.conf.max_send_buffer + 3)
            return rpc_fail_limit(call, "max-send-buffer");
        bytes = malloc(tl / 4 * 3 + 1);
        if (bytes == NULL)
            return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
        long dl = b64_decode(json_string_value(data), tl, bytes);
        if (dl < 0) {
            free(bytes);
            return rpc_fail_param(call, "data", "data is not valid base64");
        }
        n = (size_t)dl;
    } else {
        n = json_string_length(text);
    }
    int r = sock_send(s, bytes ? (const void *)bytes : json_string_value(text), n, call->id,
                      rpc_bool(call, "notify", 1));
    int err = errno;
    free(bytes);
    if (r < 0) {
        if (err == ENOBUFS)
            return rpc_fail_limit(call, "max-send-buffer");
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    call->result = json_pack("{s:I}", "queued", (json_int_t)n);
    return 0;
}

static int
socket_recv(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    long long len, tmo;

    if (s == NULL)
        return -1;
    if (rpc_int_range(call, "length", 1, SOCK_MAX_RECV, 0, &len) < 0 ||
        rpc_int_range(call, "timeout_ms", 1, 86400000, 0, &tmo) < 0)
        return -1;
    if (s->state != SS_CONNECTED && s->state != SS_CONNECTING)
        return rpc_fail_state(call, s, "recv");
    if (s->recv_pending)
        return rpc_fail(call, SOCKD_E_BUSY, NULL, "a recv is already pending on socket %llu",
                        (unsigned long long)s->id);
    sock_recv(s, (size_t)len, rpc_bool(call, "partial", 0), rpc_bool(call, "stream", 0),
              (double)tmo / 1000.0, call->id);
    return 0;
}

static int
socket_recv_cancel(struct rpc_call *call)
{
    struct sock *s = rpc_sock(call);
    if (s == NULL)
        return -1;
    call->result = json_pack("{s:b}", "canceled", sock_recv_cancel(s));
    return 0;
}

static const struct rpc_param p_send[] = {{"socket", RPC_P_HANDLE, 1},
                                          {"data", RPC_P_STR, 0},
                                          {"text", RPC_P_STR, 0},
                                          {"notify", RPC_P_BOOL, 0},
                                          {NULL, 0, 0}};
static const struct rpc_param p_recv[] = {{"socket", RPC_P_HANDLE, 1},  {"length", RPC_P_INT, 1},
                                          {"partial", RPC_P_BOOL, 0},   {"stream", RPC_P_BOOL, 0},
                                          {"timeout_ms", RPC_P_INT, 0}, {NULL, 0, 0}};
static const struct rpc_param p_socket[] = {{"socket", RPC_P_HANDLE, 1}, {NULL, 0, 0}};

const struct rpc_method rpc_data_methods[] = {
    {"socket.send", socket_send, p_send},
    {"socket.recv", socket_recv, p_recv},
    {"socket.recv_cancel", socket_recv_cancel, p_socket},
    {NULL, NULL, NULL},
};
