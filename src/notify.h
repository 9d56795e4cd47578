/*
 * The control client's side of the socket seam: a socket's events (struct sock_event, sock.h)
 * written as JSON-RPC notification lines to the client that owns the socket
 * (sockd-protocol.7, Notifications from the daemon).
 */
#ifndef SOCKD_NOTIFY_H
#define SOCKD_NOTIFY_H

#include "sock.h"

/* The deliver of a client's struct sock_owner: one line per event, queued like ctl_notify. */
void notify_deliver(struct sock_owner *o, const struct sock_event *ev);

#endif
