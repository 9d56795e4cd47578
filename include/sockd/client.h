/*
 * libsockd-client: a small blocking client for the sockd control socket.
 *
 * One struct sockd_client is one control connection. Calls block until
 * their response arrives; notifications that arrive meanwhile are queued
 * and handed out by sockd_client_next_event(). Nothing here is thread-safe;
 * use one client per thread.
 */
#ifndef SOCKD_CLIENT_H
#define SOCKD_CLIENT_H

#include <stddef.h>
#include <jansson.h>
#include <sockd/protocol.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sockd_client;

/*
 * The control socket path, resolved as the daemon does: explicit (if not
 * NULL), else $SOCKD_SOCKET, else /run/sockd/sockd.sock for root,
 * $XDG_RUNTIME_DIR/sockd.sock, else /tmp/sockd-$UID.sock. Writes into buf;
 * returns buf, or NULL if it does not fit.
 */
const char *sockd_socket_path(const char *explicit_path, char *buf, size_t len);

/* Connect to the daemon. path NULL resolves as above. Returns NULL and sets errno on failure. */
struct sockd_client *sockd_client_connect(const char *path);

/*
 * Wrap an already connected control socket (inherited, or connected by another process and
 * passed over SCM_RIGHTS); the client owns fd from here on, and it is made non-blocking.
 * Returns NULL and sets errno on failure (fd is then left open).
 */
struct sockd_client *sockd_client_adopt(int fd);

/* Close the connection and free everything, queued events included. */
void sockd_client_close(struct sockd_client *c);

/* The control connection's fd, for poll() by callers that multiplex. */
int sockd_client_fd(const struct sockd_client *c);

/*
 * Call METHOD with PARAMS (borrowed; NULL means {}) and wait up to
 * timeout_ms (-1 forever) for its response. On a result: returns 0 and
 * sets *result (new reference, caller frees). On an error response:
 * returns 1 and sets *error to the error object (new reference). On I/O
 * failure or timeout: returns -1 with errno set (ETIMEDOUT, EPIPE, ...).
 * Either out pointer may be NULL.
 */
int sockd_client_call(struct sockd_client *c, const char *method, json_t *params, json_t **result,
                      json_t **error, int timeout_ms);

/*
 * As sockd_client_call, and also: send_fd >= 0 rides with the request
 * (SCM_RIGHTS); if recv_fd is not NULL it receives an fd that rode with
 * the response, or -1 when none did.
 */
int sockd_client_call_fd(struct sockd_client *c, const char *method, json_t *params, int send_fd,
                         json_t **result, json_t **error, int *recv_fd, int timeout_ms);

/*
 * The next notification (the whole message object, new reference), from
 * the queue or the wire, waiting up to timeout_ms (-1 forever, 0 poll).
 * NULL on timeout (errno ETIMEDOUT) or when the connection ended (errno EPIPE).
 */
json_t *sockd_client_next_event(struct sockd_client *c, int timeout_ms);

/*
 * Wait for the next notification named METHOD whose params.socket equals
 * SOCKET (0: any socket); others stay queued in order. NULL as above.
 */
json_t *sockd_client_wait_event(struct sockd_client *c, const char *method, long long socket,
                                int timeout_ms);

/* What a socket.received said, in the flags of sockd_client_recv_until. */
#define SOCKD_RECV_EOF 0x1           /* the peer ended its side: nothing follows these bytes */
#define SOCKD_RECV_TIMEOUT 0x2       /* the receive's timeout_ms passed first */
#define SOCKD_RECV_UNTIL_MISSING 0x4 /* the bytes do not end with the delimiter */

/*
 * Receive one line on stream socket SOCKET: socket.recv {length, until} (sockd-protocol(7),
 * RECEIVING, Lines), then its socket.received. UNTIL is ulen bytes (1 to 16, any bytes). A
 * line ends with the delimiter; without it come LENGTH bytes of a longer line (the rest stays
 * for the next call), what was left at end of file, or, when timeout_ms (> 0; -1 waits
 * forever) passes, what had arrived: *flags tells which (SOCKD_RECV_*).
 *
 * Returns 0 with *data (malloc'ed, NUL-terminated; caller frees) holding *len bytes. An error
 * response returns 1 with *error set (if not NULL): -32602 for a bad delimiter or length,
 * -32006 while another receive is pending. -1 with errno: ENOTCONN when the socket closed
 * with nothing delivered (its socket.closed stays queued), ETIMEDOUT, EPIPE, EPROTO.
 * Notifications of other sockets, or of other requests, stay queued in order.
 */
int sockd_client_recv_until(struct sockd_client *c, long long socket, const void *until,
                            size_t ulen, size_t length, int timeout_ms, unsigned char **data,
                            size_t *len, int *flags, json_t **error);

/* Base64 of n bytes (the protocol's data fields), malloc'ed and NUL-terminated; NULL: ENOMEM. */
char *sockd_client_b64_encode(const void *data, size_t n);
/*
 * The bytes of len characters of base64 text, malloc'ed and NUL-terminated, *n their count;
 * NULL with errno EINVAL when the text is not base64, ENOMEM.
 */
unsigned char *sockd_client_b64_decode(const char *text, size_t len, size_t *n);

/* Low level, for tests and tools: write raw bytes (one or more lines, or part of one). */
int sockd_client_send_raw(struct sockd_client *c, const void *data, size_t len);

/*
 * Low level: read the next whole message from the wire (response or
 * notification), bypassing the event queue. NULL on timeout or EOF.
 */
json_t *sockd_client_read_message(struct sockd_client *c, int timeout_ms);

/* The error code of an error object from sockd_client_call, or 0. */
int sockd_client_error_code(const json_t *error);

#ifdef __cplusplus
}
#endif
#endif
