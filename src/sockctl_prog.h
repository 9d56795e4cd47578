/*
 * The supervised program's side of sockctl run (sockctl.1, RUN): its memory, copies of its
 * fds, and the sandbox it is started in. pid is always the task of a seccomp notification.
 */
#ifndef SOCKD_SOCKCTL_PROG_H
#define SOCKD_SOCKCTL_PROG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* Read (peek) or write (poke) n bytes at addr of pid; 0, or -1. */
int prog_peek(pid_t pid, uint64_t addr, void *buf, size_t n);
int prog_poke(pid_t pid, uint64_t addr, const void *buf, size_t n);
/* A copy of fd of the task pid (pidfd_getfd), or -1 with errno. */
int prog_take_fd(pid_t pid, int fd);
/* Whether the task's fd is close-on-exec (flags of /proc/PID/fdinfo/FD). */
int prog_fd_cloexec(pid_t pid, int fd);
/* The socket's domain, type and protocol; 0, or -1 when fd is not a socket. */
int prog_sock_kind(int fd, int *domain, int *type, int *proto);
/* Options a program sets before connect or bind, copied to the socket that replaces its own. */
void prog_copy_opts(int from, int to);
/* Read the program's socket address (ptr, len) into ss; 0, or an errno. */
int prog_peek_addr(pid_t pid, uint64_t ptr, uint64_t len, struct sockaddr_storage *ss,
                   socklen_t *sl);
/* "1.2.3.4:80" or "[::1]:80" of an IP address; -1 for anything else. */
int prog_addr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t n);
/*
 * A Unix address as sockd reads one: "/path" (a relative one joined to the program's working
 * directory) or "@name"; -1 for a name that is not printable ASCII or does not fit.
 */
int prog_unix_text(pid_t pid, const struct sockaddr_storage *ss, socklen_t len, char *buf,
                   size_t n);
/* Whether this process may give a child an empty network namespace (tried in a throwaway one). */
int prog_can_unshare(void);
/*
 * In the forked child: the empty namespace (net_none), the filter, then exec argv; never
 * returns. The listener's fd number is written to ready, and the exec waits for a byte on go
 * (the supervisor has taken the listener by then).
 */
void prog_exec(char **argv, int net_none, int ready, int go) __attribute__((noreturn));

#endif
