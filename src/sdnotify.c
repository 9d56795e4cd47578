/*
 * systemd integration without linking libsystemd. The interfaces are the ones systemd documents
 * as stable for reimplementation: sd_notify(3) (one AF_UNIX datagram of VAR=value lines sent to
 * $NOTIFY_SOCKET, a path or an abstract "@name"), sd_listen_fds(3) (LISTEN_PID, LISTEN_FDS and
 * LISTEN_FDNAMES; the fds start at 3) and sd_watchdog_enabled(3) (WATCHDOG_USEC, WATCHDOG_PID).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "sdnotify.h"

static int sdn_fd = -1;             /* datagram socket towards $NOTIFY_SOCKET */
static struct sockaddr_un sdn_addr; /* $NOTIFY_SOCKET */
static socklen_t sdn_addrlen;
static int sdn_send_failing;         /* the last send failed (logged once per failure run) */
static double sdn_watchdog_interval; /* seconds between WATCHDOG=1, 0 = no watchdog */
static struct ev_loop *sdn_loop;
static ev_timer sdn_watchdog_timer;
static ev_timer sdn_status_timer;
static char sdn_status[96]; /* the STATUS= text last sent */

/* Parse a whole decimal number; -1 if the text is not one. */
static int
sdn_parse_ull(const char *s, unsigned long long *out)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    *out = strtoull(s, &end, 10);
    return errno != 0 || *end != '\0' ? -1 : 0;
}

static const char *
sdn_family_name(int af)
{
    switch (af) {
    case AF_INET:
        return "AF_INET";
    case AF_INET6:
        return "AF_INET6";
    case AF_NETLINK:
        return "AF_NETLINK";
    default:
        return "another address family";
    }
}

int
sdn_check_listener(int fd, char *err, size_t errlen)
{
    int type, domain, listening;
    socklen_t len = sizeof type;

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        if (errno == EBADF)
            snprintf(err, errlen, "fd %d is not open", fd);
        else if (errno == ENOTSOCK)
            snprintf(err, errlen, "fd %d is not a socket", fd);
        else
            snprintf(err, errlen, "fd %d: %s", fd, strerror(errno));
        return -1;
    }
    len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0) {
        snprintf(err, errlen, "fd %d: SO_DOMAIN: %s", fd, strerror(errno));
        return -1;
    }
    if (domain != AF_UNIX) {
        snprintf(err, errlen, "fd %d is not a Unix-domain socket (%s)", fd,
                 sdn_family_name(domain));
        return -1;
    }
    if (type != SOCK_STREAM) {
        snprintf(err, errlen, "fd %d is a Unix-domain %s socket, not a stream socket", fd,
                 type == SOCK_DGRAM       ? "datagram"
                 : type == SOCK_SEQPACKET ? "seqpacket"
                                          : "non-stream");
        return -1;
    }
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0) {
        snprintf(err, errlen, "fd %d: SO_ACCEPTCONN: %s", fd, strerror(errno));
        return -1;
    }
    if (listening != 1) {
        snprintf(err, errlen,
                 "fd %d is a Unix stream socket that is not listening (connected or unbound)", fd);
        return -1;
    }
    return 0;
}

const char *
sdn_socket_name(int fd, char *buf, size_t len)
{
    struct sockaddr_un sun;
    socklen_t sl = sizeof sun;
    size_t off = offsetof(struct sockaddr_un, sun_path);

    memset(&sun, 0, sizeof sun);
    if (getsockname(fd, (struct sockaddr *)&sun, &sl) < 0 || sl <= off)
        snprintf(buf, len, "(unnamed)");
    else if (sun.sun_path[0] == '\0')
        snprintf(buf, len, "@%.*s", (int)(sl - off - 1), sun.sun_path + 1);
    else
        snprintf(buf, len, "%.*s", (int)strnlen(sun.sun_path, sl - off), sun.sun_path);
    return buf;
}

int
sdn_listen_fd(int *fdp, const char **name, char *err, size_t errlen)
{
    static char namebuf[256];
    const char *pid_s = getenv("LISTEN_PID");
    const char *fds_s = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    unsigned long long pid, n;
    char why[200];
    int fd = SDN_LISTEN_FDS_START, r = 0;

    namebuf[0] = '\0';
    *name = namebuf;
    *fdp = -1;
    if (pid_s == NULL)
        goto out; /* not socket-activated */
    if (sdn_parse_ull(pid_s, &pid) < 0) {
        snprintf(err, errlen, "socket activation: LISTEN_PID=%s is not a process id", pid_s);
        r = -1;
        goto out;
    }
    if (pid != (unsigned long long)getpid()) {
        /* Meant for another process (inherited through a wrapper): not ours to use. */
        log_info("socket activation: LISTEN_PID=%s is not this process (%d), ignored", pid_s,
                 (int)getpid());
        goto out;
    }
    if (sdn_parse_ull(fds_s, &n) < 0) {
        snprintf(err, errlen, "socket activation: LISTEN_FDS=%s is not a number",
                 fds_s ? fds_s : "(unset)");
        r = -1;
        goto out;
    }
    if (n == 0) {
        log_info("socket activation: LISTEN_FDS=0, no socket passed");
        goto out;
    }
    if (n != 1) {
        snprintf(err, errlen,
                 "socket activation: LISTEN_FDS=%llu, but sockd takes exactly one socket (its "
                 "control socket: one ListenStream= in the .socket unit)",
                 n);
        r = -1;
        goto out;
    }
    if (names != NULL) {
        size_t k = strcspn(names, ":");
        if (k >= sizeof namebuf)
            k = sizeof namebuf - 1;
        memcpy(namebuf, names, k);
        namebuf[k] = '\0';
    }
    if (sdn_check_listener(fd, why, sizeof why) < 0) {
        snprintf(err, errlen,
                 "socket activation%s%s%s: %s; sockd needs a listening Unix stream socket "
                 "(ListenStream=/path in the .socket unit)",
                 namebuf[0] ? " (fd name \"" : "", namebuf, namebuf[0] ? "\")" : "", why);
        r = -1;
        goto out;
    }
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        snprintf(err, errlen, "socket activation: fd %d: %s", fd, strerror(errno));
        r = -1;
        goto out;
    }
    *fdp = fd;
    r = 1;
out:
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    return r;
}

int
sdn_init(void)
{
    const char *e = getenv("NOTIFY_SOCKET");
    unsigned long long usec, pid;
    size_t len;

    if (sdn_fd >= 0)
        return 1;
    if (e == NULL || *e == '\0')
        return 0;
    len = strlen(e);
    memset(&sdn_addr, 0, sizeof sdn_addr);
    sdn_addr.sun_family = AF_UNIX;
    if ((e[0] != '/' && e[0] != '@') || len >= sizeof sdn_addr.sun_path) {
        log_warn("NOTIFY_SOCKET=%s: not a Unix socket path or @abstract name sockd can use; "
                 "no notifications",
                 e);
        return -1;
    }
    memcpy(sdn_addr.sun_path, e, len);
    if (e[0] == '@') {
        sdn_addr.sun_path[0] = '\0'; /* abstract namespace: no terminating NUL counted */
        sdn_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        sdn_addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    sdn_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sdn_fd < 0) {
        log_warn("NOTIFY_SOCKET: socket: %s; no notifications", strerror(errno));
        return -1;
    }

    /* The watchdog is ours when WATCHDOG_PID is unset or names this process. */
    sdn_watchdog_interval = 0;
    if (sdn_parse_ull(getenv("WATCHDOG_USEC"), &usec) == 0 && usec > 0) {
        const char *wp = getenv("WATCHDOG_PID");
        if (wp != NULL && (sdn_parse_ull(wp, &pid) < 0 || pid != (unsigned long long)getpid()))
            log_info("watchdog: WATCHDOG_PID=%s is not this process, no pings", wp);
        else
            sdn_watchdog_interval = (double)usec / 2e6;
    }
    log_debug("notify socket %s%s", e, sdn_watchdog_interval > 0 ? ", watchdog on" : "");
    return 1;
}

int
sdn_notify(const char *state)
{
    if (sdn_fd < 0)
        return 0;
    for (;;) {
        ssize_t n = sendto(sdn_fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT,
                           (const struct sockaddr *)&sdn_addr, sdn_addrlen);
        if (n >= 0)
            break;
        if (errno == EINTR)
            continue;
        int e = errno;
        if (!sdn_send_failing)
            log_warn("notify socket: %s", strerror(e));
        sdn_send_failing = 1;
        errno = e;
        return -1;
    }
    if (sdn_send_failing)
        log_info("notify socket: sending again");
    sdn_send_failing = 0;
    return 0;
}

/* The STATUS= text for the current counters, e.g. "2 clients, 5 sockets". */
static void
sdn_status_text(char *buf, size_t len)
{
    unsigned long socks = 0;
    for (size_t i = 0; i < sizeof sockd.nsockets / sizeof sockd.nsockets[0]; i++)
        socks += sockd.nsockets[i];
    snprintf(buf, len, "%u client%s, %lu socket%s", sockd.nclients, sockd.nclients == 1 ? "" : "s",
             socks, socks == 1 ? "" : "s");
}

/* Once a second: STATUS= only when the text changed, so an idle daemon sends nothing. */
static void
sdn_status_cb(EV_P_ ev_timer *w, int revents)
{
    char now[sizeof sdn_status], msg[sizeof sdn_status + 16];
    (void)w;
    (void)revents;
    sdn_status_text(now, sizeof now);
    if (strcmp(now, sdn_status) == 0)
        return;
    snprintf(msg, sizeof msg, "STATUS=%s", now);
    if (sdn_notify(msg) == 0)
        memcpy(sdn_status, now, sizeof sdn_status);
}

/* Pinged from the loop itself: a stuck loop stops the pings and systemd restarts the daemon. */
static void
sdn_watchdog_cb(EV_P_ ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    sdn_notify("WATCHDOG=1");
}

void
sdn_start(struct ev_loop *loop)
{
    if (sdn_fd < 0)
        return;
    sdn_loop = loop;
    ev_timer_init(&sdn_status_timer, sdn_status_cb, 1.0, 1.0);
    ev_timer_start(loop, &sdn_status_timer);
    ev_unref(loop); /* the timers alone must not keep the loop alive */
    if (sdn_watchdog_interval > 0) {
        ev_timer_init(&sdn_watchdog_timer, sdn_watchdog_cb, sdn_watchdog_interval,
                      sdn_watchdog_interval);
        ev_timer_start(loop, &sdn_watchdog_timer);
        ev_unref(loop);
    }
}

static void
sdn_stop_timers(void)
{
    if (sdn_loop == NULL)
        return;
    if (ev_is_active(&sdn_status_timer)) {
        ev_ref(sdn_loop);
        ev_timer_stop(sdn_loop, &sdn_status_timer);
    }
    if (ev_is_active(&sdn_watchdog_timer)) {
        ev_ref(sdn_loop);
        ev_timer_stop(sdn_loop, &sdn_watchdog_timer);
    }
}

void
sdn_ready(void)
{
    char msg[sizeof sdn_status + 32];
    if (sdn_fd < 0)
        return;
    sdn_status_text(sdn_status, sizeof sdn_status);
    snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", sdn_status);
    sdn_notify(msg);
}

void
sdn_reloading(void)
{
    struct timespec ts;
    char msg[96];
    if (sdn_fd < 0)
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
             (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
    sdn_notify(msg);
}

void
sdn_stopping(void)
{
    if (sdn_fd < 0)
        return;
    sdn_stop_timers();
    sdn_notify("STOPPING=1\nSTATUS=shutting down");
}

void
sdn_shutdown(void)
{
    sdn_stop_timers();
    if (sdn_fd >= 0)
        close(sdn_fd);
    sdn_fd = -1;
    sdn_loop = NULL;
}
