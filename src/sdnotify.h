/*
 * systemd integration without libsystemd, from the documented stable interfaces:
 * sd_notify(3) datagrams to $NOTIFY_SOCKET, socket activation (sd_listen_fds(3):
 * LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES) and the service watchdog (WATCHDOG_USEC,
 * WATCHDOG_PID). Every function is a no-op when systemd did not set the variables.
 */
#ifndef SOCKD_SDNOTIFY_H
#define SOCKD_SDNOTIFY_H

#include <stddef.h>
#include <ev.h>

/* First fd passed by socket activation (SD_LISTEN_FDS_START). */
#define SDN_LISTEN_FDS_START 3

/*
 * Socket activation. Returns 0 when the daemon was not socket-activated (no LISTEN_PID, or a
 * LISTEN_PID that is not ours: the variables were meant for another process), 1 with *fd set
 * (close-on-exec) when exactly one fd was passed and it is a listening Unix stream socket, or -1
 * with a message in err when something was passed that sockd cannot use. *name gets the
 * LISTEN_FDNAMES entry ("" when none was given; static storage). The LISTEN_* variables are
 * removed from the environment in every case, as sd_listen_fds(3) does with unset_environment.
 */
int sdn_listen_fd(int *fd, const char **name, char *err, size_t errlen);

/* Check that fd is a listening AF_UNIX SOCK_STREAM socket; -1 with a message in err if not. */
int sdn_check_listener(int fd, char *err, size_t errlen);

/* The address a Unix socket is bound to, for the log: a path, "@name" or "(unnamed)". */
const char *sdn_socket_name(int fd, char *buf, size_t len);

/*
 * Read $NOTIFY_SOCKET ("/path" or "@abstract") and $WATCHDOG_USEC/$WATCHDOG_PID. Returns 1 when
 * there is a notify socket to talk to, 0 when there is none, -1 when the variable is unusable
 * (logged; notifications are then off).
 */
int sdn_init(void);

/* Send one notify datagram (newline-separated VAR=value lines); 0, or -1 (errno) on failure. */
int sdn_notify(const char *state);

/* Start the watchdog pings (every WATCHDOG_USEC/2) and the STATUS= refresh (every second). */
void sdn_start(struct ev_loop *loop);
/* READY=1 with the current STATUS= line (after start, and after each reload). */
void sdn_ready(void);
/* RELOADING=1 with MONOTONIC_USEC= (CLOCK_MONOTONIC) before a reload. */
void sdn_reloading(void);
/* STOPPING=1; also stops the watchdog and status timers. */
void sdn_stopping(void);
/* Stop the timers and close the notify socket. */
void sdn_shutdown(void);

#endif
