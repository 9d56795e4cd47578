/*
 * Syscalls on descriptors a client handed over (socket.attach, fds riding on control lines): the
 * client shares the open file description, so O_NONBLOCK is its to clear. Calls that have no
 * per-call non-blocking flag (accept, connect, close) run under a kernel timer that interrupts
 * them, and closes that may wait on a file server (FUSE) run off the loop.
 */
#ifndef SOCKD_NBGUARD_H
#define SOCKD_NBGUARD_H

#include <sys/socket.h>

/* Period of the guard's timer: a guarded call blocks the loop at most about this long. */
#define NBGUARD_TICK_NS 2000000L

/*
 * Set up the guard for the calling thread (the loop's): a no-op handler for the guard signal
 * (installed without SA_RESTART), a timer that sends it to this thread, and the closer thread.
 * -1 with *cause (static text) on failure. Without it the calls below still work, unguarded.
 */
int nbguard_init(const char **cause);
/* accept4 on a listener a client shares: -1 EAGAIN when the call would have blocked. */
int nbguard_accept(int fd, struct sockaddr *sa, socklen_t *len, int flags);
/* connect on a socket a client shares: as a non-blocking connect (-1 EINPROGRESS: under way). */
int nbguard_connect(int fd, const struct sockaddr *sa, socklen_t len);
/*
 * Close an fd a client handed over, never blocking the loop: an IP or Unix socket is closed
 * under the timer (a lingering close stops waiting), anything else (a FUSE file's close waits
 * for its server) is passed to the closer thread.
 */
void nbguard_close(int fd);

#endif
