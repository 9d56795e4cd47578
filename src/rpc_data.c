#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sockd/protocol.h>

#include "addr.h"
#include "b64.h"
#include "policy.h"
#include "ctl.h"
#include "daemon.h"
#include "rpc.h"
#include "sock.h"
#include "tls.h" /* DTLS_MAX_PAYLOAD */

/*
 * The payload of a send/sendto: base64 "data" or "text". *bytes is *owned when the data was
 * decoded here (caller frees), else it points into the text param or the line's decoded blob
 * (valid while the request runs); returns 0 or -1 with the error set.
 */
static int
rpc_payload(struct rpc_call *call, unsigned char **owned, const void **bytes, size_t *len)
{
    json_t *data = rpc_get(call, "data"), *text = rpc_get(call, "text");
    size_t n;

    *owned = NULL;
    if ((data == NULL) == (text == NULL))
        return rpc_fail_param(call, data ? "text" : "data", "give exactly one of data and text");
    if (data != NULL) {
        /* a large value the JSON parser never saw was decoded (and so checked) by the line scan */
        const char *src;
        const unsigned char *dec;
        size_t tl;
        int blob = rpc_blob(data, &src, &tl, &dec, &n);
        if (!blob) {
            src = json_string_value(data);
            tl = json_string_length(data);
        }
        if (tl / 4 * 3 > sockd.conf.max_send_buffer + 3)
            return rpc_fail_limit(call, "max-send-buffer");
        if (blob) {
            *bytes = dec;
            *len = n;
            return 0;
        }
        unsigned char *buf = malloc(tl / 4 * 3 + 1);
        if (buf == NULL)
            return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
        long dl = b64_decode(src, tl, buf);
        if (dl < 0) {
            free(buf);
            return rpc_fail_param(call, "data", "data is not valid base64");
        }
        n = (size_t)dl;
        *owned = buf;
    } else {
        n = json_string_length(text);
    }
    *bytes = *owned ? (const void *)*owned : json_string_value(text);
    *len = n;
    return 0;
}

/* socket.send: queue bytes (base64 data or text); socket.sent follows once in the kernel. */
static int
socket_send(struct rpc_call *call)
{
    struct sock *s = call->sock;
    unsigned char *owned;
    const void *bytes;
    size_t n;
    int r;

    if ((rpc_get(call, "data") == NULL) == (rpc_get(call, "text") == NULL))
        return rpc_fail_param(call, rpc_get(call, "data") ? "text" : "data",
                              "give exactly one of data and text");
    /* dtls: like a stream, queued while connecting (the handshake) */
    if (sock_has(s, SOCK_CAP_SENDTO) ? s->state != SS_CONNECTED
                                     : (s->state != SS_CONNECTED && s->state != SS_CONNECTING))
        return rpc_fail_state(call, s, "send");
    if (s->shut_wanted)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "socket is shutting down");
    if (s->relay != NULL)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "socket %llu is piped",
                        (unsigned long long)s->id);
    if (rpc_payload(call, &owned, &bytes, &n) < 0)
        return -1;
    if (sock_has(s, SOCK_CAP_DGRAM) && n > SOCK_UDP_PAYLOAD_MAX) {
        free(owned);
        return rpc_fail_param(call, "data", "a datagram carries at most %d bytes",
                              SOCK_UDP_PAYLOAD_MAX);
    }
    if (sock_has(s, SOCK_CAP_DGRAM | SOCK_CAP_TLS) &&
        n > DTLS_MAX_PAYLOAD) { /* one datagram = one record */
        free(owned);
        return rpc_fail_param(call, rpc_get(call, "data") ? "data" : "text",
                              "a DTLS datagram carries at most %d bytes", DTLS_MAX_PAYLOAD);
    }
    if (sock_has(s, SOCK_CAP_DGRAM))
        r = sock_sendto(s, bytes, n, NULL, 0, call->id, rpc_bool(call, "notify", 1));
    else
        r = sock_send(s, bytes, n, call->id, rpc_bool(call, "notify", 1));
    int err = errno;
    free(owned);
    if (r < 0) {
        if (err == ENOBUFS || err == EDQUOT)
            return rpc_fail_limit(call, err == EDQUOT ? "max-buffer-per-uid" : "max-send-buffer");
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    }
    call->result = json_pack("{s:I}", "queued", (json_int_t)n);
    return 0;
}

/* socket.sendto: one datagram to an address (udp); the fd is made on first use. */
static int
socket_sendto(struct rpc_call *call)
{
    struct sock *s = call->sock;
    unsigned char *owned;
    const void *bytes;
    const char *cause, *text = rpc_str(call, "address");
    size_t n;
    struct addr a;
    long long port;

    if (!sock_has(s, SOCK_CAP_SENDTO)) /* dtls: connected to one peer */
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "sendto: %s sockets use send",
                        sock_type_name(s->type));
    if (s->shut_wanted || (s->state != SS_OPEN && s->state != SS_BOUND && s->state != SS_CONNECTED))
        return rpc_fail_state(call, s, "sendto");
    if (rpc_int_range(call, "port", 0, 65535, -1, &port) < 0)
        return -1;
    if (addr_parse_ip(text, (int)port, &a, &cause) < 0)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address '%.200s': %s", text, cause);
    if (a.kind == ADDR_NAME && strcasecmp(a.host, "localhost") == 0) {
        int p = a.port;
        addr_parse_ip(s->ipv6 ? "::1" : "127.0.0.1", p, &a, &cause);
    }
    if (a.kind == ADDR_NAME)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "sendto takes an IP address or localhost");
    if (a.port <= 0)
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "address '%.200s' has no port", text);
    if (!sock_policy_ok(s, POLICY_SENDTO, (struct sockaddr *)&a.sa, a.salen))
        return rpc_fail(call, SOCKD_E_DENIED, SOCKD_REASON_POLICY_DENIED,
                        "sendto %.200s denied by policy", text);
    if (rpc_payload(call, &owned, &bytes, &n) < 0)
        return -1;
    if (n > SOCK_UDP_PAYLOAD_MAX) {
        free(owned);
        return rpc_fail_param(call, "data", "a datagram carries at most %d bytes",
                              SOCK_UDP_PAYLOAD_MAX);
    }
    if (s->fd < 0) {
        if (sock_open_autobind(s, a.sa.ss_family) < 0) {
            int err = errno;
            free(owned);
            return rpc_fail_errno(call, SOCKD_E_INTERNAL, SOCKD_REASON_OPEN_FAILED, err, "socket");
        }
    } else if (s->local.sa.sa_family == AF_INET && a.sa.ss_family == AF_INET6) {
        free(owned);
        return rpc_fail(call, SOCKD_E_INVALID_PARAMS, SOCKD_REASON_ADDRESS_INVALID,
                        "an IPv4 socket cannot send to an IPv6 address");
    }
    if (s->local.sa.sa_family == AF_INET6 && a.sa.ss_family == AF_INET) {
        /* a dual-stack socket reaches IPv4 through the mapped form */
        struct sockaddr_in v4 = *(struct sockaddr_in *)&a.sa;
        struct sockaddr_in6 *m = (struct sockaddr_in6 *)&a.sa;
        memset(m, 0, sizeof *m);
        m->sin6_family = AF_INET6;
        m->sin6_port = v4.sin_port;
        m->sin6_addr.s6_addr[10] = m->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&m->sin6_addr.s6_addr[12], &v4.sin_addr, 4);
        a.salen = sizeof *m;
    }
    int r = sock_sendto(s, bytes, n, (struct sockaddr *)&a.sa, a.salen, call->id,
                        rpc_bool(call, "notify", 1));
    int err = errno;
    free(owned);
    if (r < 0)
        return err == ENOBUFS  ? rpc_fail_limit(call, "max-send-buffer")
               : err == EDQUOT ? rpc_fail_limit(call, "max-buffer-per-uid")
                               : rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    call->result = json_pack("{s:I}", "queued", (json_int_t)n);
    return 0;
}

/*
 * The delimiter of socket.recv until/until_b64 into d (room for SOCK_UNTIL_MAX bytes): its
 * length, 0 when neither is given, or -1 with the error set (sockd-protocol(7), socket.recv).
 */
static int
rpc_until(struct rpc_call *call, const struct sock *s, unsigned char *d)
{
    json_t *text = rpc_get(call, "until"), *b64 = rpc_get(call, "until_b64");
    const char *name = text != NULL ? "until" : "until_b64";
    long n;

    if (text == NULL && b64 == NULL)
        return 0;
    if (text != NULL && b64 != NULL)
        return rpc_fail_param(call, "until_b64", "give at most one of until and until_b64");
    if (text != NULL) {
        n = (long)json_string_length(text);
        if (n <= SOCK_UNTIL_MAX)
            memcpy(d, json_string_value(text), (size_t)n);
    } else {
        size_t tl = json_string_length(b64);
        unsigned char tmp[SOCK_UNTIL_MAX + 3];
        n = tl <= (SOCK_UNTIL_MAX + 2) / 3 * 4 ? b64_decode(json_string_value(b64), tl, tmp)
                                               : SOCK_UNTIL_MAX + 1;
        if (n < 0)
            return rpc_fail_param(call, name, "until_b64 is not valid base64");
        if (n <= SOCK_UNTIL_MAX)
            memcpy(d, tmp, (size_t)n);
    }
    if (n < 1 || n > SOCK_UNTIL_MAX)
        return rpc_fail_param(call, name, "the delimiter must be 1 to %d bytes", SOCK_UNTIL_MAX);
    if (sock_has(s, SOCK_CAP_DGRAM))
        return rpc_fail_param(call, name, "%s sockets deliver whole datagrams, not lines",
                              sock_type_name(s->type));
    if (rpc_bool(call, "partial", 0))
        return rpc_fail_param(call, "partial", "partial cannot be combined with %s", name);
    if (rpc_int(call, "length", 0) < n)
        return rpc_fail_param(call, "length", "length is shorter than the delimiter");
    return (int)n;
}

/* socket.recv: arm the one pending receive of a socket (sockd-protocol(7), RECEIVING). */
static int
socket_recv(struct rpc_call *call)
{
    struct sock *s = call->sock;
    long long len, tmo;
    unsigned char until[SOCK_UNTIL_MAX];
    int ulen;

    if (rpc_int_range(call, "length", 1, SOCK_MAX_RECV, 0, &len) < 0 ||
        rpc_int_range(call, "timeout_ms", 1, 86400000, 0, &tmo) < 0 ||
        (ulen = rpc_until(call, s, until)) < 0)
        return -1;
    if (s->state != SS_CONNECTED && s->state != SS_CONNECTING &&
        !(sock_has(s, SOCK_CAP_DGRAM) && s->state == SS_BOUND))
        return rpc_fail_state(call, s, "recv");
    if (s->relay != NULL)
        return rpc_fail(call, SOCKD_E_WRONG_STATE, NULL, "socket %llu is piped",
                        (unsigned long long)s->id);
    if (s->recv_pending)
        return rpc_fail(call, SOCKD_E_BUSY, NULL, "a recv is already pending on socket %llu",
                        (unsigned long long)s->id);
    /* an exact length (or a line that long) the uid's byte budget cannot hold would never
     * complete */
    if ((size_t)len > sockd.conf.max_buffer_per_uid && !sock_has(s, SOCK_CAP_DGRAM) &&
        !rpc_bool(call, "partial", 0) && !rpc_bool(call, "stream", 0))
        return rpc_fail_limit(call, "max-buffer-per-uid");
    if (sock_recv(s, (size_t)len, rpc_bool(call, "partial", 0), rpc_bool(call, "stream", 0), until,
                  (size_t)ulen, (double)tmo / 1000.0, call->id) < 0)
        return rpc_fail(call, SOCKD_E_INTERNAL, NULL, "out of memory");
    return 0;
}

static int
socket_recv_cancel(struct rpc_call *call)
{
    struct sock *s = call->sock;
    call->result = json_pack("{s:b}", "canceled", sock_recv_cancel(s));
    return 0;
}

static const struct rpc_param p_send[] = {{"socket", RPC_P_HANDLE, 1},
                                          {"data", RPC_P_STR, 0},
                                          {"text", RPC_P_STR, 0},
                                          {"notify", RPC_P_BOOL, 0},
                                          {NULL, 0, 0}};
static const struct rpc_param p_sendto[] = {{"socket", RPC_P_HANDLE, 1},
                                            {"data", RPC_P_STR, 0},
                                            {"text", RPC_P_STR, 0},
                                            {"notify", RPC_P_BOOL, 0},
                                            {"address", RPC_P_STR, 1},
                                            {"port", RPC_P_INT, 0},
                                            {NULL, 0, 0}};
static const struct rpc_param p_recv[] = {{"socket", RPC_P_HANDLE, 1},  {"length", RPC_P_INT, 1},
                                          {"partial", RPC_P_BOOL, 0},   {"stream", RPC_P_BOOL, 0},
                                          {"timeout_ms", RPC_P_INT, 0}, {"until", RPC_P_STR, 0},
                                          {"until_b64", RPC_P_STR, 0},  {NULL, 0, 0}};
static const struct rpc_param p_socket[] = {{"socket", RPC_P_HANDLE, 1}, {NULL, 0, 0}};

const struct rpc_method rpc_data_methods[] = {
    {"socket.send", socket_send, p_send, RPC_TARGET_SOCK, RPC_F_PAYLOAD | RPC_F_COALESCE},
    {"socket.sendto", socket_sendto, p_sendto, RPC_TARGET_SOCK, RPC_F_PAYLOAD},
    {"socket.recv", socket_recv, p_recv, RPC_TARGET_SOCK, 0},
    {"socket.recv_cancel", socket_recv_cancel, p_socket, RPC_TARGET_SOCK, 0},
    {NULL, NULL, NULL, RPC_TARGET_NONE, 0},
};
