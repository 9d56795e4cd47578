/* sockd control protocol, version 1: the numbers and words of the wire contract. */
#ifndef SOCKD_PROTOCOL_H
#define SOCKD_PROTOCOL_H

#define SOCKD_PROTOCOL_VERSION 1

/* JSON-RPC error codes (sockd-protocol.7, ERRORS). */
enum sockd_error {
    SOCKD_E_PARSE = -32700,           /* line is not valid JSON */
    SOCKD_E_INVALID_REQUEST = -32600, /* not a request object, or line too long */
    SOCKD_E_NO_METHOD = -32601,       /* method not found */
    SOCKD_E_INVALID_PARAMS = -32602,  /* missing, wrong type, out of range, bad address */
    SOCKD_E_INTERNAL = -32603,        /* the daemon failed on its own */
    SOCKD_E_UNKNOWN_HANDLE = -32001,  /* socket or context not owned by this client */
    SOCKD_E_WRONG_STATE = -32002,     /* wrong state or socket type for the call */
    SOCKD_E_LIMIT = -32003,           /* a configured limit; data.limit names it */
    SOCKD_E_DENIED = -32004,          /* denied by policy */
    SOCKD_E_UNSUPPORTED = -32005,     /* not supported on this system or build */
    SOCKD_E_BUSY = -32006,            /* a recv is already pending */
};

/* Reasons carried by socket.closed and error data (sockd-protocol.7, CLOSE REASONS). */
#define SOCKD_REASON_NORMAL "normal"
#define SOCKD_REASON_BY_PEER "by_peer"
#define SOCKD_REASON_LOST "lost"
#define SOCKD_REASON_ADDRESS_INVALID "address_invalid"
#define SOCKD_REASON_OPEN_FAILED "open_failed"
#define SOCKD_REASON_CONNECT_FAILED "connect_failed"
#define SOCKD_REASON_CONNECT_REJECTED "connect_rejected"
#define SOCKD_REASON_BIND_FAILED "bind_failed"
#define SOCKD_REASON_LISTEN_FAILED "listen_failed"
#define SOCKD_REASON_ACCEPT_FAILED "accept_failed"
#define SOCKD_REASON_TLS_HANDSHAKE_FAILED "tls_handshake_failed"
#define SOCKD_REASON_TIMEOUT "timeout"
#define SOCKD_REASON_POLICY_DENIED "policy_denied"
#define SOCKD_REASON_DAEMON_SHUTDOWN "daemon_shutdown"

#endif
