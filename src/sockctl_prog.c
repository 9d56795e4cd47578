/*
 * The supervised program's side of sockctl run (sockctl.1, RUN): reading and writing its
 * memory, taking copies of its fds, the socket options carried over, and the sandbox it runs
 * in (an empty network namespace, the seccomp filter whose listener the supervisor takes).
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/tcp.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <seccomp.h>

#include "sockctl_prog.h"

/* Read n bytes at addr of pid into buf; 0, or -1. */
int
prog_peek(pid_t pid, uint64_t addr, void *buf, size_t n)
{
    struct iovec l = {buf, n}, rem = {(void *)(uintptr_t)addr, n};
    if (n == 0)
        return 0;
    return process_vm_readv(pid, &l, 1, &rem, 1, 0) == (ssize_t)n ? 0 : -1;
}

int
prog_poke(pid_t pid, uint64_t addr, const void *buf, size_t n)
{
    struct iovec l = {(void *)buf, n}, rem = {(void *)(uintptr_t)addr, n};
    return process_vm_writev(pid, &l, 1, &rem, 1, 0) == (ssize_t)n ? 0 : -1;
}

/* A copy of fd of the task pid (the notifying thread), or -1 with errno. */
int
prog_take_fd(pid_t pid, int fd)
{
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif
    int pfd = (int)syscall(SYS_pidfd_open, pid, PIDFD_THREAD);
    if (pfd < 0 && errno == EINVAL)
        pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return -1;
    int lfd = (int)syscall(SYS_pidfd_getfd, pfd, fd, 0);
    int err = errno;
    close(pfd);
    errno = err;
    return lfd;
}

/* Whether the program's fd is close-on-exec (flags of /proc/PID/fdinfo/FD). */
int
prog_fd_cloexec(pid_t pid, int fd)
{
    char path[64], line[128];
    unsigned long flags = 0;
    snprintf(path, sizeof path, "/proc/%ld/fdinfo/%d", (long)pid, fd);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "flags: %lo", &flags) == 1)
            break;
    fclose(f);
    return (flags & O_CLOEXEC) != 0;
}

/* The socket's domain, type and protocol. */
int
prog_sock_kind(int fd, int *domain, int *type, int *proto)
{
    socklen_t l = sizeof *domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, domain, &l) < 0)
        return -1;
    l = sizeof *type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, &l) < 0)
        return -1;
    l = sizeof *proto;
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, proto, &l) < 0)
        *proto = 0;
    return 0;
}

/* Options a program sets before connect or bind, copied to the socket that replaces its own. */
void
prog_copy_opts(int from, int to)
{
    static const struct {
        int level, name;
    } opts[] = {
        {IPPROTO_TCP, TCP_NODELAY},  {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL},
        {IPPROTO_TCP, TCP_KEEPCNT},  {SOL_SOCKET, SO_KEEPALIVE},  {SOL_SOCKET, SO_BROADCAST},
        {SOL_SOCKET, SO_PRIORITY},   {SOL_SOCKET, SO_REUSEPORT},  {IPPROTO_IP, IP_TOS},
        {IPPROTO_IPV6, IPV6_V6ONLY},
    };
    int type = 0;
    socklen_t tl = sizeof type;
    getsockopt(from, SOL_SOCKET, SO_TYPE, &type, &tl);
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        int v;
        socklen_t l = sizeof v;
        if (opts[i].level == IPPROTO_TCP && type != SOCK_STREAM)
            continue;
        if (getsockopt(from, opts[i].level, opts[i].name, &v, &l) == 0)
            setsockopt(to, opts[i].level, opts[i].name, &v, l);
    }
    struct linger lg;
    struct timeval tv;
    socklen_t l = sizeof lg;
    if (getsockopt(from, SOL_SOCKET, SO_LINGER, &lg, &l) == 0 && lg.l_onoff)
        setsockopt(to, SOL_SOCKET, SO_LINGER, &lg, l);
    l = sizeof tv;
    if (getsockopt(from, SOL_SOCKET, SO_RCVTIMEO, &tv, &l) == 0)
        setsockopt(to, SOL_SOCKET, SO_RCVTIMEO, &tv, l);
    l = sizeof tv;
    if (getsockopt(from, SOL_SOCKET, SO_SNDTIMEO, &tv, &l) == 0)
        setsockopt(to, SOL_SOCKET, SO_SNDTIMEO, &tv, l);
}

/* Read the program's socket address (ptr, len) into ss; 0, or an errno. */
int
prog_peek_addr(pid_t pid, uint64_t ptr, uint64_t len, struct sockaddr_storage *ss, socklen_t *sl)
{
    memset(ss, 0, sizeof *ss);
    if (len > sizeof *ss)
        len = sizeof *ss;
    if (len < sizeof(sa_family_t))
        return EINVAL;
    if (prog_peek(pid, ptr, ss, (size_t)len) < 0)
        return EFAULT;
    *sl = (socklen_t)len;
    return 0;
}

/* "1.2.3.4:80" or "[::1]:80" of an IP address; -1 for anything else. */
int
prog_addr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t n)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        snprintf(buf, n, "%s:%u", host, ntohs(sin->sin_port));
        return 0;
    }
    if (ss->ss_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        snprintf(buf, n, "[%s]:%u", host, ntohs(sin6->sin6_port));
        return 0;
    }
    return -1;
}

/*
 * A Unix address as sockd reads one: "/path" (a relative one joined to the program's working
 * directory) or "@name"; -1 for a name that is not printable ASCII or does not fit.
 */
int
prog_unix_text(pid_t pid, const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t n)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
    size_t off = offsetof(struct sockaddr_un, sun_path), pl;
    char name[sizeof sun->sun_path + 2], cwd[PATH_MAX], link[64];
    if (len <= (socklen_t)off)
        return -1; /* unnamed */
    pl = (size_t)len - off;
    int abstract = sun->sun_path[0] == '\0';
    if (abstract) {
        memcpy(name, sun->sun_path + 1, pl - 1);
        name[pl - 1] = '\0';
        pl--;
    } else {
        memcpy(name, sun->sun_path, pl);
        name[pl] = '\0';
        pl = strlen(name);
    }
    for (size_t i = 0; i < pl; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] >= 0x7f)
            return -1;
    int w;
    if (abstract) {
        w = snprintf(buf, n, "@%s", name);
    } else if (name[0] == '/') {
        w = snprintf(buf, n, "%s", name);
    } else {
        snprintf(link, sizeof link, "/proc/%ld/cwd", (long)pid);
        ssize_t cl = readlink(link, cwd, sizeof cwd - 1);
        if (cl <= 0)
            return -1;
        cwd[cl] = '\0';
        w = snprintf(buf, n, "%s/%s", cwd, name);
    }
    return w > 0 && (size_t)w < n ? 0 : -1;
}

static int
prog_write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* An empty network namespace: directly when allowed, else inside a new user namespace that
 * maps only our own ids. 0, or -1. */
static int
prog_unshare_net(void)
{
    char map[64];
    uid_t uid = getuid();
    gid_t gid = getgid();
    if (unshare(CLONE_NEWNET) == 0)
        return 0;
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
        return -1;
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)uid, (unsigned)uid);
    if (prog_write_file("/proc/self/uid_map", map) < 0)
        return -1;
    prog_write_file("/proc/self/setgroups", "deny\n");
    snprintf(map, sizeof map, "%u %u 1\n", (unsigned)gid, (unsigned)gid);
    return prog_write_file("/proc/self/gid_map", map);
}

/* Build and load the filter; the listener fd, or -1. */
static int
prog_load_filter(void)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int rc = 0, mfd = -1, lfd = -1;
    if (ctx == NULL)
        return -1;
    rc |= seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(connect), 0);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(bind), 0);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(sendto), 1, SCMP_A4(SCMP_CMP_NE, 0));
    rc |= seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(sendmsg), 0);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_NOTIFY, SCMP_SYS(sendmmsg), 0);
    rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(io_uring_setup), 0);
    if (rc == 0 && (mfd = memfd_create("sockctl-bpf", MFD_CLOEXEC)) >= 0 &&
        seccomp_export_bpf(ctx, mfd) == 0) {
        off_t size = lseek(mfd, 0, SEEK_END);
        struct sock_filter *insns = malloc((size_t)size);
        if (insns != NULL && pread(mfd, insns, (size_t)size, 0) == size) {
            struct sock_fprog prog = {(unsigned short)(size / sizeof *insns), insns};
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            /* WAIT_KILLABLE_RECV: once the supervisor has the call, only a fatal signal ends
             * the wait (no restart of a connect sockd is making) */
            lfd = (int)syscall(
                SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                SECCOMP_FILTER_FLAG_NEW_LISTENER | SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV, &prog);
            if (lfd < 0 && errno == EINVAL)
                lfd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                   SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog);
        }
        free(insns);
    }
    if (mfd >= 0)
        close(mfd);
    seccomp_release(ctx);
    return lfd;
}

/* Whether this machine lets an unprivileged process have an empty network namespace: tried in
 * a throwaway child. */
int
prog_can_unshare(void)
{
    pid_t p = fork();
    int st;
    if (p == 0)
        _exit(prog_unshare_net() == 0 ? 0 : 1);
    if (p < 0 || waitpid(p, &st, 0) != p)
        return 0;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* In the child: set up and exec; never returns. ready: the write end to tell the listener's
 * number, go: the read end the supervisor answers on. */
void
prog_exec(char **argv, int net_none, int ready, int go)
{
    char c;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (net_none && prog_unshare_net() < 0) {
        fprintf(stderr, "sockctl run: no empty network namespace: %s\n", strerror(errno));
        _exit(126);
    }
    int lfd = prog_load_filter();
    if (lfd < 0) {
        fprintf(stderr, "sockctl run: cannot install the seccomp filter: %s\n", strerror(errno));
        _exit(126);
    }
    if (write(ready, &lfd, sizeof lfd) != (ssize_t)sizeof lfd || read(go, &c, 1) != 1)
        _exit(126); /* the supervisor is gone */
    close(lfd);
    close(ready);
    close(go);
    execvp(argv[0], argv);
    fprintf(stderr, "sockctl run: %s: %s\n", argv[0], strerror(errno));
    _exit(errno == ENOENT ? 127 : 126);
}
