/*
 * The socket object: one per handle, with its fd, watchers, buffers and state machine, and the
 * seam to whoever owns it: a socket knows its owner only as a struct sock_owner and tells it what
 * happened as a struct sock_event (the control client's side, notify.c, writes the lines).
 */
#ifndef SOCKD_SOCK_H
#define SOCKD_SOCK_H

#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <ev.h>
#include <jansson.h>

#include "buf.h"

struct addr;
struct ident;
struct ident_acct;
struct policy_who;
struct sock;
struct tlsctx;

/* What a socket tells its owner: one kind per notification (sockd-protocol.7, Notifications from
 * the daemon). */
enum sock_event_kind {
    SOCK_EV_CONNECTED,    /* params {local, remote, rewritten_to?, tls?} */
    SOCK_EV_INCOMING,     /* params {pending, remote, local} */
    SOCK_EV_ACCEPTED,     /* params {listener, local, remote, tls?} */
    SOCK_EV_SENT,         /* bytes; a datagram's: params {bytes, errno?, detail?} */
    SOCK_EV_RECEIVED,     /* data, len and the flags; a datagram's: params {data, from?, ...} */
    SOCK_EV_TLS_UPGRADED, /* params {tls} */
    SOCK_EV_CLOSED,       /* params {reason, errno?, detail?, unsent?} */
};
#define SOCK_EV_NKINDS 7

/* One event of a socket, handed to its owner and valid only during the call. */
struct sock_event {
    enum sock_event_kind kind;
    struct sock *sock;
    json_t *req;      /* the request it answers (borrowed), or NULL */
    json_t *params;   /* the kind's fields, taken by the owner; NULL: the compact form below */
    size_t bytes;     /* sent */
    const char *data; /* received: the bytes delivered, len of them */
    size_t len;
    unsigned eof : 1;           /* received: the peer ended after these bytes */
    unsigned timeout : 1;       /* received: the recv timed out */
    unsigned until_missing : 1; /* received: an until recv ends without its delimiter */
};

/*
 * Whoever owns sockets (a control client embeds one, ctl.h): what its sockets need from it. A
 * socket given away (socket.give) has no owner until it is taken, and keeps its identity.
 */
struct sock_owner {
    struct ident *ident; /* whom it acts for: new sockets act for it, its restrictions bind */
    uint64_t id;         /* its number, for log lines ("client N") */
    struct sock *socks;  /* owned sockets (sock.c keeps the list) */
    unsigned nsocks;
    struct tlsctx *ctxs; /* owned TLS contexts (tlsctx.c keeps the list) */
    int paused;          /* set by the owner: its output is over the high-water mark, its sockets
                            must not read */
    /* Tell the owner what happened to one of its sockets; it takes ev->params. */
    void (*deliver)(struct sock_owner *o, const struct sock_event *ev);
};

/* Socket types of socket.open. */
enum sock_type {
    SOCK_TCP,  /* plain TCP */
    SOCK_TLS,  /* TLS over TCP */
    SOCK_UDP,  /* UDP datagrams */
    SOCK_DTLS, /* DTLS over UDP */
    SOCK_UNIX, /* AF_UNIX stream */
    SOCK_NTYPES
};

/* Lifecycle states, as socket.info reports them. */
enum sock_state {
    SS_OPEN,       /* created, nothing done yet */
    SS_BOUND,      /* bound to a local address */
    SS_LISTENING,  /* accepting connections */
    SS_CONNECTING, /* connect under way */
    SS_CONNECTED,  /* ready for data */
    SS_CLOSING,    /* shutdown: flushing queued data, then closed */
};

/* An IP socket address, small enough to keep two per socket. */
union sock_sa {
    struct sockaddr sa;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
};

/* One socket.send still (partly) in the send queue. */
struct sock_sendrec {
    struct sock_sendrec *next;
    uint64_t end; /* stream offset one past its last byte */
    size_t bytes; /* its length */
    json_t *req;  /* request id for socket.sent, or NULL */
    int notify;   /* emit socket.sent */
};

/* A connection accepted from the kernel, waiting for socket.accept/reject. */
struct sock_pending {
    struct sock_pending *next;
    struct sock *listener;
    uint64_t num; /* unique per listener */
    int fd;
    union sock_sa remote, local;
    ev_timer timer;     /* accept-timeout */
    struct ssl_st *ssl; /* dtls: the peer's SSL, past the cookie exchange (sock_dtls.c) */
};

/* A listener's state: made by socket.listen (or attach of a listening fd), kept until close. */
struct sock_listen {
    struct sock_pending *pend_head, *pend_tail;
    uint64_t next_pending; /* number of the last pending connection */
    unsigned npending;
    json_t *req; /* the listen request, named by socket.incoming and auto-accepted sockets */
};

/* A unix socket's addresses, made with the socket (other types have none). */
struct sock_unix {
    char *local, *remote;      /* reported paths ("/p", "@abstract", "" unnamed), malloc'ed */
    dev_t dev;                 /* dev and ino of the bound file, so close never removes a */
    ino_t ino;                 /* file another socket took over */
    int dirfd;                 /* O_PATH fd of the bound file's directory, -1 none (sock_unix.c) */
    unsigned unlink_local : 1; /* remove the bound file when the socket closes */
};

/* TLS or DTLS on a socket: made with a tls/dtls socket, or by socket.starttls (transport_tls.c). */
struct sock_tls {
    struct ssl_st *ssl;
    struct tlsctx *ctx;
    char *server_name;      /* client: name to verify and send as SNI */
    struct sock_dtls *dtls; /* dtls: retransmission timer, listener state (sock_dtls.c) */
    uint64_t upgrade_at;    /* starttls: stream offset where plaintext ends and TLS begins */
    int want;               /* EV_READ/EV_WRITE the TLS engine waits for, 0 none */
    unsigned clean_eof : 1; /* the peer sent close_notify */
    unsigned handshaking : 1;
    unsigned hs_waiting : 1; /* its next handshake step waits for the next loop turn */
};

/* Options of socket.setopt, kept so they also apply to an fd made later. */
enum sock_opt_bit {
    SOPT_NODELAY = 1 << 0,   /* TCP_NODELAY */
    SOPT_KEEPALIVE = 1 << 1, /* SO_KEEPALIVE */
    SOPT_BROADCAST = 1 << 2, /* SO_BROADCAST */
    SOPT_TTL = 1 << 3,       /* IP_TTL / IPV6_UNICAST_HOPS */
    SOPT_RCVBUF = 1 << 4,    /* SO_RCVBUF */
    SOPT_SNDBUF = 1 << 5,    /* SO_SNDBUF */
};
struct sock_opts {
    unsigned set; /* enum sock_opt_bit */
    int nodelay, keepalive, broadcast, ttl, rcvbuf, sndbuf;
};

/* Framing of one datagram inside a udp socket's in/out buffers. */
struct sock_dgram {
    uint32_t len;  /* payload bytes that follow */
    uint32_t size; /* size on the wire (> len when the kernel truncated it) */
    int has_addr;  /* addr is the source (in) or destination (out) */
    union sock_sa addr;
};

/*
 * socket.pipe: bytes relayed between the socket and the daemon's end of a socketpair. From a
 * plain TCP peer the bytes are spliced through a kernel pipe instead of read into the socket's
 * input buffer and written out again (measured in tests/bench/README.md).
 */
struct sock_relay {
    int fd;
    int pipe[2];     /* the kernel pipe of the splice path; -1 when not splicing */
    size_t piped;    /* bytes in it */
    size_t pipe_cap; /* its capacity */
    ev_io io;
    unsigned eof : 1;       /* the client's end stopped sending */
    unsigned wr_shut : 1;   /* we shut down writing to the client's end */
    unsigned net_first : 1; /* the network peer ended before the client did */
    unsigned net_shut : 1;  /* we passed the client's EOF on to the network peer */
};

/* socket.give: a socket waiting, unowned, for socket.take. */
struct sock_gift {
    struct sock_gift *next;
    struct sock *sock;
    char token[33]; /* 128-bit random, hex */
    uid_t uid;      /* the giver's uid: only it (or root) may take */
    ev_timer timer;
};

/* Longest delimiter of socket.recv until. */
#define SOCK_UNTIL_MAX 16

/* socket.recv until: where a pending receive ends (sockd-protocol(7), RECEIVING, Lines). */
struct sock_until {
    size_t scanned;                      /* head bytes of in already searched, no match in them */
    unsigned char len;                   /* delimiter bytes; 0 while no until receive is pending */
    unsigned char delim[SOCK_UNTIL_MAX]; /* the delimiter */
};

/* The timers a socket may run; most sockets never need any. */
enum sock_timer {
    SOCK_TIMER_CONNECT,   /* connect timeout, TLS accept handshake, listener resume */
    SOCK_TIMER_RECV,      /* socket.recv timeout_ms */
    SOCK_TIMER_HANDSHAKE, /* a handshake step put off to the next loop turn (sock_connect.c) */
    SOCK_NTIMERS
};
struct sock_timers {
    ev_timer t[SOCK_NTIMERS];
};

/* What differs between transports; plain sockets use read(2)/write(2). */
struct sock_transport {
    const char *name;
    /* Read up to n bytes: >0 bytes, 0 EOF, -1 with errno (EAGAIN: nothing now). */
    ssize_t (*read)(struct sock *s, void *p, size_t n);
    /* Write up to n bytes: >=0 written, -1 with errno. */
    ssize_t (*write)(struct sock *s, const void *p, size_t n);
    /* Bytes already decrypted and waiting inside the transport (NULL: never any). */
    size_t (*pending)(struct sock *s);
};

/* What a socket type can do: the questions the per-type code paths ask of it. */
enum sock_cap {
    SOCK_CAP_DGRAM = 1 << 0,    /* datagrams, not a byte stream (udp, dtls) */
    SOCK_CAP_SENDTO = 1 << 1,   /* datagrams to and from any address: sendto, reads while bound,
                                   no end of session (udp) */
    SOCK_CAP_TLS = 1 << 2,      /* a TLS engine from the start, with a context (tls, dtls) */
    SOCK_CAP_UNIX = 1 << 3,     /* AF_UNIX: a path, no port, no IP options (unix) */
    SOCK_CAP_LISTEN = 1 << 4,   /* listens with listen(2) (tcp, tls, unix) */
    SOCK_CAP_COOKIE = 1 << 5,   /* listens by the DTLS cookie exchange; each peer gets a socket on
                                   the same port, shared with SO_REUSEPORT (dtls) */
    SOCK_CAP_STARTTLS = 1 << 6, /* socket.starttls may upgrade it (tcp) */
    SOCK_CAP_SPLICE = 1 << 7, /* socket.pipe splices the peer's bytes through a kernel pipe (tcp) */
};

/* What a datagram operation returns besides a size or -1 with errno. */
#define SOCK_DGRAM_FAIL (-2) /* the socket failed (errno): close it */
#define SOCK_DGRAM_EOF (-3)  /* the peer ended the session (close_notify) */

/*
 * A socket type (sock_desc(s)): its name, capabilities and the operations that differ
 * between types. Stream bytes go through s->tp, which socket.starttls switches to TLS.
 */
struct sock_type_desc {
    const char *name; /* as socket.open names it */
    unsigned caps;    /* enum sock_cap */
    unsigned log;     /* the log-flags bit of its lifecycle lines (CONF_LOG_*) */
    /*
     * Datagrams: send one queued datagram (to h->addr when h->has_addr): its size, -1 with errno
     * (EAGAIN: not now; else it is dropped), SOCK_DGRAM_FAIL.
     */
    ssize_t (*send_dgram)(struct sock *s, const struct sock_dgram *h, const void *p);
    /*
     * Datagrams: receive one into p (n bytes), its source in h->addr/has_addr: its size on the
     * wire, -1 with errno (EAGAIN: nothing now; else it is skipped), SOCK_DGRAM_FAIL or
     * SOCK_DGRAM_EOF.
     */
    ssize_t (*recv_dgram)(struct sock *s, void *p, size_t n, struct sock_dgram *h);
    /*
     * Listeners: the next connection's fd, its peer (*remote, *rl) and local address (zero
     * where the type reports none), with the DTLS SSL past the cookie exchange in *ssl; -1 with
     * errno (EAGAIN: none).
     */
    int (*accept)(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl,
                  union sock_sa *local, socklen_t *ll, struct ssl_st **ssl);
};

extern const struct sock_type_desc sock_type_tcp, sock_type_tls, sock_type_udp, sock_type_dtls,
    sock_type_unix;
/* The descriptors by enum sock_type (sock.c). */
extern const struct sock_type_desc *const sock_types[SOCK_NTYPES];

/* Whether socket type t has every capability in caps (enum sock_cap). */
static inline int
sock_type_has(enum sock_type t, unsigned caps)
{
    return (sock_types[t]->caps & caps) == caps;
}

struct sock {
    uint64_t id;
    enum sock_type type;
    enum sock_state state;
    struct sock_owner *owner;   /* NULL while given away */
    struct ident *ident;        /* whom the socket acts for: policy, budgets (ident.h) */
    struct sock *cnext, *cprev; /* owner's list */
    struct sock *bnext, *bprev; /* ident->acct->waiting, while budget_wait */
    struct sock *grave_next;    /* reap list once dead */
    const struct sock_transport *tp;
    ev_io io;
    struct sock_timers *timers; /* allocated the first time a timer runs (idle sockets have none) */
    int fd;                     /* next to the flags: the two fill one 8-byte word */

    unsigned ipv6 : 1;   /* family when no address says */
    unsigned dead : 1;   /* closed; memory freed at the next loop turn */
    unsigned rd_eof : 1; /* peer sent EOF */
    unsigned recv_pending : 1;
    unsigned recv_partial : 1;
    unsigned recv_stream : 1;
    unsigned auto_accept : 1;
    unsigned accept_paused : 1; /* listener stopped: pending cap or fd exhaustion */
    unsigned has_local : 1;
    unsigned has_remote : 1;
    unsigned shut_wanted : 1;   /* socket.shutdown seen: flush, then close */
    unsigned policy_denied : 1; /* the last connect attempt was refused by the policy */
    unsigned attempted : 1;     /* a connect was tried on the current fd */
    unsigned tls_server : 1;    /* this side of the TLS handshake is the server */
    unsigned tls_upgrade : 1;   /* socket.starttls: TLS starts once queued plaintext is out */
    unsigned tls_announce : 2;  /* after the handshake: 0 connected, 1 accepted, 2 tls_upgraded */
    unsigned accept_auto : 1;   /* accepted by auto_accept (never announced before the handshake) */
    unsigned flush_queued : 1;  /* sends held for one write before the loop blocks (sock_send.c) */
    unsigned foreign : 1;       /* socket.attach: the client shares the fd's file and its flags */
    unsigned budget_wait : 1;   /* stopped reading at max-buffer-per-uid, on the waiting list */
    unsigned port_held : 1;     /* in the registry of ports held with SO_REUSEPORT (sock_dtls.c) */
    unsigned no_readahead : 1;  /* socket.open readahead:false: read only for a pending recv */

    struct buf out;      /* queued bytes to send */
    uint64_t out_queued; /* stream offset of the end of out */
    struct sock_sendrec *sq_head, *sq_tail;
    struct buf in; /* bytes read, not yet delivered */
    size_t recv_len;
    json_t *recv_req, *connect_req, *shutdown_req;
    json_t *tag;
    uint64_t bytes_sent, bytes_received;
    union sock_sa local, remote;

    struct sock_listen *lst; /* listeners only: allocated by sock_listen_alloc */
    /* accepted */
    uint64_t listener;

    struct sock_unix *un;     /* unix sockets only, from sock_new on */
    struct sock_opts *opts;   /* NULL until socket.setopt */
    struct sock_resolve *rs;  /* host name connects: until connected (sock_connect.c) */
    union sock_sa *asked;     /* connect destination as asked, when a rewrite changed it */
    struct sock_relay *relay; /* socket.pipe: the daemon's end of the socketpair */
    struct sock_gift *gift;   /* socket.give: waiting unowned for socket.take */
    struct sock_tls *tls;     /* NULL on sockets that never ran TLS */
    struct sock_until *until; /* NULL until the first socket.recv with until */
};

/* The descriptor of s's type. */
static inline const struct sock_type_desc *
sock_desc(const struct sock *s)
{
    return sock_types[s->type];
}

/* Whether s's type has every capability in caps (enum sock_cap). */
static inline int
sock_has(const struct sock *s, unsigned caps)
{
    return sock_type_has(s->type, caps);
}

/* The SSL of s, NULL when TLS is not running. */
static inline struct ssl_st *
sock_ssl(const struct sock *s)
{
    return s->tls != NULL ? s->tls->ssl : NULL;
}

/* Receive read-ahead per socket while no recv is pending. */
#define SOCK_READAHEAD (256u << 10)
/* Largest UDP datagram payload (65535 less the IPv4 and UDP headers). */
#define SOCK_UDP_PAYLOAD_MAX 65507
/* Largest socket.recv length. */
#define SOCK_MAX_RECV (16u << 20)

const char *sock_type_name(enum sock_type t);
/* Whether log-flags asks for lifecycle lines about this socket's transport. */
int sock_log_wanted(const struct sock *s);
int sock_type_parse(const char *name);
const char *sock_state_name(enum sock_state s);

/* sock.c */
/* Create a socket object owned by o, acting for id (referenced), no fd yet. NULL on ENOMEM. */
struct sock *sock_new(struct sock_owner *o, struct ident *id, enum sock_type type, int ipv6);
/*
 * The budget a new socket for owner o acting for id would pass (max-sockets-per-client,
 * max-sockets-per-uid): NULL when there is room, else the name of the limit reached.
 */
const char *sock_budget_full(const struct sock_owner *o, const struct ident *id);
/* The socket with this handle if o owns it, else NULL. */
struct sock *sock_get(struct sock_owner *o, uint64_t id);
/* Attach an fd (non-blocking, close-on-exec) to s and set up its watcher. */
void sock_set_fd(struct sock *s, int fd);
/*
 * The one free path: stop watchers, close the fd and pendings, unlink from the owner, emit
 * socket.closed {reason, errno?, detail?, unsent?} with request req unless reason is NULL.
 * Memory is freed later; callers may still read s->dead.
 */
void sock_close(struct sock *s, const char *reason, int err, const char *detail, json_t *req);
/* Free the sockets closed since the last call. */
void sock_reap(void);
/* Hand an event of s to its owner; a given-away socket has none (ev->params is freed). */
void sock_tell(struct sock *s, const struct sock_event *ev);
/* Tell s's owner an event of this kind with its fields in params (taken), for request req. */
void sock_emit(struct sock *s, enum sock_event_kind kind, json_t *params, json_t *req);
/* socket.info object (new reference). */
json_t *sock_info(struct sock *s);
/* The reported local/remote address object of a socket (new reference). */
json_t *sock_addr_json(const struct sock *s, int remote);
/* Start timer which of s (allocating the timers on first use); -1 on ENOMEM. */
int sock_timer_start(struct sock *s, enum sock_timer which, void (*cb)(EV_P_ ev_timer *, int),
                     double after);
/* Stop timer which of s, if it has timers at all. */
void sock_timer_stop(struct sock *s, enum sock_timer which);
/* socket.give: detach s from its owner; returns the gift (token) or NULL on ENOMEM. */
struct sock_gift *sock_give(struct sock *s, double timeout);
/* Find a gift by token. */
struct sock_gift *sock_gift_find(const char *token);
/* socket.take: s becomes o's under a new handle. */
struct sock *sock_take(struct sock_gift *g, struct sock_owner *o);
/* Close every socket still waiting to be taken (shutdown). */
void sock_gifts_close_all(void);

/* sock_io.c */
/* Recompute which events the watcher waits for: the one place that decides interest. */
void sock_update_io(struct sock *s);
/* Create the fd for family af (stream or datagram by type), applying stored options; -1 errno. */
int sock_open_fd(struct sock *s, int af);
/* Give up the fd of a failed bind: the socket goes back to having none. */
void sock_drop_fd(struct sock *s);
/* After a bind of the fd of s, its local address recorded by the caller: BOUND. */
void sock_bound(struct sock *s);
/* Undo the bind of a listen that failed: no fd, no local address, OPEN again. */
void sock_unbind(struct sock *s);
/* A datagram socket's first fd, for a sendto: the kernel binds it on that send, so it is
 * BOUND from here. 0, or -1 errno. */
int sock_open_autobind(struct sock *s, int af);
/* An attached fd's socket that does not listen: CONNECTED with a peer, else BOUND; watched. */
void sock_attached(struct sock *s, int connected);
/* socket.detach: the fd leaves the daemon in blocking mode (a unix listener's file stays) and
 * the socket closes silently; returns the fd, the caller's now. */
int sock_detach(struct sock *s);
/* Apply the stored options to the fd (if any); -1 with errno and *which on failure. */
int sock_apply_opts(struct sock *s, const char **which);
/* Re-evaluate a socket that changed hands: EOF handling and watcher interest. */
void sock_resume(struct sock *s);
/*
 * Whom s acts for, as the policy judges it: the identity that made the socket (its client's,
 * its listener's for an accepted one), kept through socket.give and socket.take. Fills *who
 * (pointing into the identity, valid while s lives) and returns 1.
 */
int sock_who(const struct sock *s, struct policy_who *who);
/* Wake the sockets of an account that stopped reading at its byte budget, once it has room. */
void sock_budget_wake(struct ident_acct *a);
/* Take s off its account's list of sockets waiting for budget (it is closing). */
void sock_budget_leave(struct sock *s);
/* Policy: may the socket's owner connect/bind/send (enum policy_action) to sa? 1 yes; logs a
 * denial. */
int sock_policy_ok(struct sock *s, int action, const struct sockaddr *sa, socklen_t len);
/* A configured rewrite of a connect destination: 1 and *out set, else 0. */
int sock_rewrite(struct sock *s, const struct sockaddr *sa, socklen_t len,
                 struct sockaddr_storage *out, socklen_t *outlen);

/* sock_connect.c */
/* Start connecting to an address (literal, Unix, or host name to resolve); 0, or -1 errno. */
int sock_connect(struct sock *s, const struct addr *a, double timeout);
/* Cancel a host-name lookup still in flight and free the resolver state, if any. */
void sock_resolve_free(struct sock *s);
/* socket.starttls: upgrade a connected TCP socket (after queued plaintext is flushed); s->tls
 * must exist (tls_alloc). */
void sock_starttls(struct sock *s, struct tlsctx *t, int server, const char *server_name,
                   json_t *req);

/* sock_send.c */
/* Queue one datagram (to NULL: the connected peer); -1 ENOBUFS over the cap. */
int sock_sendto(struct sock *s, const void *p, size_t n, const struct sockaddr *to, socklen_t tolen,
                json_t *req, int notify);
/* Queue bytes for sending with a record for socket.sent. -1 ENOBUFS if over the cap. */
int sock_send(struct sock *s, const void *p, size_t n, json_t *req, int notify);
/* Write what consecutive sends of this turn queued: one socket, or every socket. */
void sock_flush(struct sock *s);
void sock_flush_all(void);

/* sock_recv.c */
/*
 * Take the oldest buffered datagram as {data (at most maxlen bytes, base64), from?, truncated?,
 * size?} (new reference); the in-buffer must hold one.
 */
json_t *sock_dgram_pop(struct sock *s, size_t maxlen);
/*
 * Arm a recv, ending at the delimiter until (ulen bytes, 0: none) when given; delivers at once
 * if enough is buffered. -1 on ENOMEM (nothing armed).
 */
int sock_recv(struct sock *s, size_t len, int partial, int stream, const void *until, size_t ulen,
              double timeout, json_t *req);
/* Cancel the pending recv; 1 if there was one. */
int sock_recv_cancel(struct sock *s);
/* Begin socket.shutdown: flush, then close with reason normal. */
void sock_shutdown(struct sock *s, json_t *req);

/* sock_accept.c */
/* Make the listener state of s if it has none yet (before listening); -1 on ENOMEM. */
int sock_listen_alloc(struct sock *s);
/* Start accepting on a socket with listener state; socket.incoming names req (referenced). */
void sock_listen_start(struct sock *s, json_t *req);
/* Find a pending connection by number (NULL if unknown). */
struct sock_pending *sock_pending_find(struct sock *l, uint64_t num);
/* Turn a pending connection into a socket owned by the listener's client; NULL on error. */
struct sock *sock_pending_accept(struct sock *l, struct sock_pending *p, json_t *req, json_t *tag);
/* Close and forget a pending connection. */
void sock_pending_drop(struct sock *l, struct sock_pending *p);

/* sock_relay.c */
/* socket.pipe: start relaying between s and fd (the daemon's end). */
void sock_relay_start(struct sock *s, int fd);

/* sock_unix.c: pathname Unix sockets, with the client's credentials and the real path judged */
/* Whether sa is a pathname Unix address (not abstract, not unnamed). */
int sock_unix_is_path(const struct sockaddr *sa, socklen_t len);
/* May s connect/bind (enum policy_action) to the pathname sa, judged on its real path as s's
 * client reaches it? 1 yes, 0 no (logged). sock_unix_connect judges again as it connects. */
int sock_unix_allowed(struct sock *s, int action, const struct sockaddr *sa, socklen_t len);
/* Connect s->fd to the pathname sa as s's client: 0, -1 with errno, -2 denied by policy. */
int sock_unix_connect(struct sock *s, const struct sockaddr *sa, socklen_t len);
/* Bind s->fd at an absolute path as s's client, the file made with mode: 0, -1 with errno, -2
 * denied by policy. Keeps the directory's fd for sock_unix_release. */
int sock_unix_bind(struct sock *s, const char *path, int mode);
/* Remove the file s bound if it is still that file (as s's client); close the directory fd. */
void sock_unix_release(struct sock *s);

extern const struct sock_transport transport_plain;
extern const struct sock_transport transport_tls;

#endif
