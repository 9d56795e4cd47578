/*
 * The data path of a socket, private to the sock_*.c files that share it: sock_io.c (watcher
 * interest, event dispatch, options, policy and byte budget), sock_connect.c (connect, name
 * lookup, TLS handshake), sock_send.c, sock_recv.c, sock_accept.c and sock_relay.c (socket.pipe),
 * and the socket type tables of the transport files.
 */
#ifndef SOCKD_SOCK_IO_H
#define SOCKD_SOCK_IO_H

#include <stddef.h>

#include <jansson.h>

#include "sock.h"

/* Largest datagram payload kept per socket.recv event or queued by sendto. */
#define SOCK_DGRAM_MAX 65535

/* sock_io.c */
/* Drive a socket as if its fd had become ready (its watcher, or a DTLS record already read). */
void sock_io_event(struct sock *s, int revents);
/* Bytes s may still take into its buffers under its uid's max-buffer-per-uid. */
size_t sock_budget_room(const struct sock *s);
/* s stops reading for its uid's byte budget: it waits on the account's list to be woken. */
void sock_budget_wait(struct sock *s);
/* Budget room s needs to read at all: a datagram is read whole, a stream a byte at a time. */
size_t sock_read_min(const struct sock *s);
/* True when the peer's bytes go to the client's end of a socket.pipe by splice. */
int sock_splicing(const struct sock *s);
/* Flush-then-close: send FIN, drop unread input (so close sends no RST), close with reason. */
void sock_close_graceful(struct sock *s, const char *reason, json_t *req);
/* An I/O error on a connected socket. */
void sock_io_failed(struct sock *s, int err);

/* sock_connect.c */
/* Drive the TLS handshake one step; announce the result when it ends. */
void sock_tls_step(struct sock *s);
/* Start TLS on a connected fd (client or server side) and take the first handshake step. */
void sock_tls_begin(struct sock *s, int server);
/* The connect timer (SOCK_TIMER_CONNECT), which also bounds an accepted TLS handshake. */
void sock_connect_timeout_cb(EV_P_ ev_timer *w, int revents);
/* A connecting fd became writable: connected, or on to the next address. */
void sock_connect_ready(struct sock *s);

/* sock_send.c */
/* Write the send queue as far as the socket takes it; completes sends, shutdown and EOF. */
void sock_write_ready(struct sock *s);

/* sock_recv.c */
/* After EOF: once every received byte is delivered and every queued byte sent, close by_peer. */
void sock_eof_check(struct sock *s);
/* Read what the fd has into the input buffer (within read-ahead and budget) and deliver it. */
void sock_read_ready(struct sock *s);

/* sock_accept.c */
/* Accept what the listener's queue holds: adopted at once, or announced with socket.incoming. */
void sock_accept_ready(struct sock *l);
/* The kernel's next connection on listener l (accept4, or bounded on an attached fd); -1 errno. */
int sock_accept_fd(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl);
/* The local address of an accepted fd into *local (*ll), zero if the kernel has none. */
void sock_accept_local(int fd, union sock_sa *local, socklen_t *ll);
/* The accept operation of IP stream types (tcp, tls): sock_accept_fd and its local address. */
int sock_accept_ip(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl,
                   union sock_sa *local, socklen_t *ll, struct ssl_st **ssl);

/* sock_relay.c */
/* Interest of the relay fd: read while the send queue has room, write while input waits. */
void sock_relay_update(struct sock *s);
/* Move received bytes to the client's end; handle half-closes; close once both sides ended. */
void sock_relay_pump(struct sock *s);
/* The splice path of a relay: the peer's bytes into the kernel pipe, once s->in is empty. */
void sock_relay_splice_in(struct sock *s);

#endif
