#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "nbguard.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

/*
 * The guard signal: a real-time signal nothing else in sockd uses (libev's ev_signal watchers
 * are on SIGINT, SIGTERM and SIGHUP).
 */
#define NBGUARD_SIGNAL (SIGRTMIN + 4)

/* Module-local: one timer for the loop thread and the closer thread's pipe (made once). */
static timer_t nbguard_timer;
static int nbguard_ready;
static int nbguard_pipe[2] = {-1, -1};

/* The guard signal only interrupts the call it lands in. */
static void
nbguard_tick(int sig)
{
    (void)sig;
}

/* The closer thread: closes the fds the loop passes it, in order, however long each takes. */
static void *
nbguard_closer(void *arg)
{
    int fd;
    (void)arg;
    for (;;) {
        ssize_t n = read(nbguard_pipe[0], &fd, sizeof fd);
        if (n == (ssize_t)sizeof fd)
            close(fd);
        else if (n == 0 || (n < 0 && errno != EINTR))
            return NULL;
    }
}

int
nbguard_init(const char **cause)
{
    struct sigaction sa;
    struct sigevent sev;
    sigset_t all, old;
    pthread_t t;

    if (nbguard_ready)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = nbguard_tick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the interrupted call returns EINTR */
    if (sigaction(NBGUARD_SIGNAL, &sa, NULL) < 0) {
        *cause = "sigaction";
        return -1;
    }
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID; /* this thread, not any thread of the process */
    sev.sigev_signo = NBGUARD_SIGNAL;
    sev.sigev_notify_thread_id = gettid();
    if (timer_create(CLOCK_MONOTONIC, &sev, &nbguard_timer) < 0) {
        *cause = "timer_create";
        return -1;
    }
    if (pipe2(nbguard_pipe, O_CLOEXEC) < 0) {
        *cause = "pipe2";
        timer_delete(nbguard_timer);
        return -1;
    }
    fcntl(nbguard_pipe[1], F_SETFL, O_NONBLOCK);
    /* the closer takes no signal: they all stay with the loop thread */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int err = pthread_create(&t, NULL, nbguard_closer, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err != 0) {
        errno = err;
        *cause = "pthread_create";
        close(nbguard_pipe[0]);
        close(nbguard_pipe[1]);
        nbguard_pipe[0] = nbguard_pipe[1] = -1;
        timer_delete(nbguard_timer);
        return -1;
    }
    pthread_detach(t);
    nbguard_ready = 1;
    return 0;
}

/*
 * Arm (on) or disarm the timer. Periodic, so a tick that lands before the call starts (the
 * thread was preempted) is followed by another while it blocks.
 */
static void
nbguard_set(int on)
{
    struct itimerspec its;
    int e = errno;
    memset(&its, 0, sizeof its);
    if (on)
        its.it_value.tv_nsec = its.it_interval.tv_nsec = NBGUARD_TICK_NS;
    if (nbguard_ready)
        timer_settime(nbguard_timer, 0, &its, NULL);
    errno = e;
}

/* Put O_NONBLOCK back if the client cleared it, so the usual case never waits for a tick. */
static void
nbguard_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int
nbguard_accept(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    nbguard_nonblock(fd);
    nbguard_set(1);
    int r = accept4(fd, sa, len, flags);
    nbguard_set(0);
    if (r < 0 && errno == EINTR)
        errno = EAGAIN; /* the queue was empty after all: its other owner took the connection */
    return r;
}

int
nbguard_connect(int fd, const struct sockaddr *sa, socklen_t len)
{
    nbguard_nonblock(fd);
    nbguard_set(1);
    int r = connect(fd, sa, len);
    nbguard_set(0);
    /* TCP goes on connecting after the interruption; a Unix connect waiting for room in a
     * full backlog does not, as a non-blocking one would have failed */
    if (r < 0 && errno == EINTR)
        errno = sa->sa_family == AF_UNIX ? EAGAIN : EINPROGRESS;
    return r;
}

void
nbguard_close(int fd)
{
    int domain = 0;
    socklen_t dl = sizeof domain;

    if (fd < 0)
        return;
    /* SO_DOMAIN does not touch the file: a non-socket answers ENOTSOCK at once */
    if (!nbguard_ready || (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) == 0 &&
                           (domain == AF_INET || domain == AF_INET6 || domain == AF_UNIX))) {
        nbguard_set(1); /* SO_LINGER: the last close waits for unsent data, interruptibly */
        close(fd);
        nbguard_set(0);
        return;
    }
    /* A full pipe means the closer is stuck behind a close that never ends (a FUSE server
     * that never answers): the fd then stays open rather than the loop stopping with it. */
    ssize_t n = write(nbguard_pipe[1], &fd, sizeof fd);
    (void)n;
}
