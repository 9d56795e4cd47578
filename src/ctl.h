/*
 * Control connections: the listener, framing, peer credentials and each client's output queue.
 * A client owns sockets through the struct sock_owner it embeds (sock.h); notify.c writes their
 * events as notifications.
 */
#ifndef SOCKD_CTL_H
#define SOCKD_CTL_H

#include <stdint.h>
#include <sys/types.h>
#include <ev.h>
#include <jansson.h>

#include "buf.h"
#include "sock.h"

struct ident;
struct rpc_batch;

/* Above this much queued output the client's sockets stop being read (its requests still are). */
#define CTL_OUT_HIGH (1u << 20)
/* ... until it drains below this. */
#define CTL_OUT_LOW (256u << 10)
/* Request units handled per client per loop turn (a heavy method counts for more than one). */
#define CTL_REQS_PER_TURN 64
/* File descriptors queued per client and direction; more are closed at once. */
#define CTL_MAX_FDS 64
/* File descriptors one request line may carry. */
#define CTL_LINE_FDS 8

/* An fd riding on the control stream at a byte position. */
struct ctl_fd {
    uint64_t pos; /* stream offset of a byte of the line it belongs to */
    int fd;
};

struct client {
    int fd;
    pid_t pid; /* pid, uid, gid: copies of owner.ident's, for log lines */
    uid_t uid;
    gid_t gid;
    ev_io rio, wio;
    ev_idle more;   /* continues line handling after CTL_REQS_PER_TURN */
    ev_timer stall; /* running while a partial line waits for the rest */
    struct buf in;
    size_t scanned; /* bytes of in already searched for '\n' */
    int discarding; /* dropping an over-long line up to its newline */
    struct buf out;
    int hold; /* >0: notifications go to held (a request is running) */
    struct buf held;
    int dead;
    int dirty;        /* on the flush list */
    uint64_t in_pos;  /* stream offset of the head of in */
    uint64_t out_pos; /* stream offset of the head of out */
    struct ctl_fd in_fds[CTL_MAX_FDS], out_fds[CTL_MAX_FDS];
    int n_in_fds, n_out_fds;
    int line_fds[CTL_LINE_FDS]; /* fds of the line being handled; -1 once taken */
    int n_line_fds;
    struct rpc_batch *batch;    /* a batch waiting for its next turn (rpc.c), or NULL */
    struct sock_owner owner;    /* its number, identity, sockets and TLS contexts (sock.h) */
    char name[64];              /* from daemon.hello */
    struct client *next, *prev; /* all clients */
    struct client *dirty_next;
    struct client *grave_next;
};

/* A client for a connected control fd (credentials read from it); NULL on ENOMEM. */
struct client *ctl_client_new(int fd);
/* Finish c's owner (owner.id and owner.ident set): its sockets' events delivered by notify.c,
 * its queues counted for its uid (max-control-buffer-per-uid). */
void ctl_own(struct client *c);
/* Bytes as if read from the client's connection, handled in as many turns as they take (tests,
 * fuzzers). */
void ctl_feed(struct client *c, const void *p, size_t n);
/* Bind and listen on the control socket path; -1 with *cause (static or strerror text). */
int ctl_listen(const char *path, int mode, gid_t gid, const char **cause);
/* Use an already listening socket (socket activation). */
void ctl_adopt(int fd);
/* Stop listening and remove the socket file. */
void ctl_unlisten(void);
/*
 * The writers below queue one line and return 0; -1 when the client is gone, or with errno
 * EMSGSIZE when the line would take the output queue past ctl_out_hard() (then nothing is
 * queued, serialising stopped at the cap, and the caller may queue a short error instead).
 * fds ride on the line's first byte; they are owned and closed once sent, or at once on failure.
 */
/* Queue one message for the client (a response, or a notification when not held). */
int ctl_write_json(struct client *c, json_t *msg);
/* Queue a response line with fds riding on its first byte. */
int ctl_write_json_fds(struct client *c, json_t *msg, const int *fds, int nfds);
/*
 * Queue a response line written as prefix (the envelope up to and including `"result":`), then
 * result serialised ({} when NULL), then the closing brace.
 */
int ctl_write_result_fds(struct client *c, const char *prefix, size_t plen, json_t *result,
                         const int *fds, int nfds);
/* Queue n bytes already serialised (one or more whole lines). */
int ctl_write_text_fds(struct client *c, const char *p, size_t n, const int *fds, int nfds);
/* Serialise v compactly onto b, failing (b unchanged, errno EMSGSIZE) past limit bytes of b. */
int ctl_dump(struct buf *b, json_t *v, size_t limit);
/* The output queue's hard cap: 64 MiB plus max-message. */
size_t ctl_out_hard(void);
/* Disconnect a client whose output queue is past its hard cap (it does not read). */
void ctl_over_cap(struct client *c);
/* Take the next fd that rode with the current request line (-1 if none). */
int ctl_take_fd(struct client *c);
/*
 * Room for one whole notification line of at most n bytes (newline included), written by the
 * caller and then committed with its real length; NULL if the client is gone. Respects holding,
 * like ctl_notify.
 */
char *ctl_reserve_line(struct client *c, size_t n);
void ctl_commit_line(struct client *c, size_t n);
/* Queue a notification {jsonrpc, method, params} (params stolen; notify.c). */
void ctl_notify(struct client *c, const char *method, json_t *params);
/* Hold notifications while a request (or batch) runs; release appends them after its response. */
void ctl_hold(struct client *c);
void ctl_release(struct client *c);
/* Close a client: its sockets silently, its connection; memory freed later. */
void ctl_client_close(struct client *c, const char *why);
/* Start the end-of-turn work on the loop: before it blocks, sockets' held sends are written,
 * then every client's output, then what closed this turn is freed (the daemon, not tests). */
void ctl_turn_start(struct ev_loop *loop);
/* Flush queued output of every client with some (called before the loop blocks). */
void ctl_flush_all(void);
/* Free clients closed since the last call. */
void ctl_reap(void);
/* Shutdown: every socket gets socket.closed daemon_shutdown; output flushed within a bound. */
void ctl_shutdown(double max_wait);

#endif
