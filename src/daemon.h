/* Daemon-wide state: the loop, the config, the handle registry and counters. */
#ifndef SOCKD_DAEMON_H
#define SOCKD_DAEMON_H

#include <stdint.h>
#include <ev.h>

#include "conf.h"
#include "idmap.h"
#include "sock.h"

struct client;
struct sock;

struct daemon {
    struct ev_loop *loop;
    struct conf conf;     /* the config in force */
    struct idmap socks;   /* handle -> struct sock, every live socket */
    struct idmap accts;   /* uid + 1 -> struct ident_acct, every uid with a client or socket */
    uint64_t next_handle; /* last handle given out; never reused */
    uint64_t next_client; /* last client id given out */
    ev_tstamp started;    /* ev_now at start */
    unsigned nclients;
    unsigned nsockets[SOCK_NTYPES]; /* by enum sock_type */
    uint64_t bytes_in;              /* bytes read from network sockets */
    uint64_t bytes_out;             /* bytes written to network sockets */
    uint64_t requests;              /* requests handled */
    int stopping;                   /* SIGTERM/SIGINT received */
};

extern struct daemon sockd;

/* Initialise the state with defaults and a loop (conf set by the caller afterwards). */
void daemon_init(struct ev_loop *loop);
/* A new handle, unique for the daemon's lifetime. */
uint64_t daemon_handle(void);
/* Milliseconds since the daemon started. */
uint64_t daemon_uptime_ms(void);

#endif
