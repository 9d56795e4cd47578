#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "conf.h"
#include "fsid.h"
#include "nbguard.h"
#include "policy.h"
#include "sock.h"
#include "sock_io.h"

/*
 * Pathname Unix sockets, done for a client: every lookup, bind, connect and unlink runs with
 * the client's file-system credentials (fsid.h), and the policy judges the path the kernel
 * will really use, not the text the client wrote. The directory (bind) or the socket file
 * (connect) is opened O_PATH as the client, its real path read back from /proc/self/fd, and
 * the bind or connect then goes through that same fd (bind: the relative name with that
 * directory as the working directory for the moment; connect: "/proc/self/fd/N"), so no
 * symlink, "..", bind mount or rename between the check and the use changes what was judged.
 * Abstract names (@name) have no file and stay lexical.
 */

#define SOCK_UNIX_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

/* A pathname address for text; -1 ENAMETOOLONG when it does not fit. */
static int
sock_unix_sa(const char *text, struct sockaddr_un *sun, socklen_t *len)
{
    size_t n = strlen(text);
    memset(sun, 0, sizeof *sun);
    sun->sun_family = AF_UNIX;
    if (n >= sizeof sun->sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(sun->sun_path, text, n);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* "/proc/self/fd/N" into sun: the path that reaches what the O_PATH fd N is. */
static void
sock_unix_via(int fd, struct sockaddr_un *sun, socklen_t *len)
{
    char p[32];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    sock_unix_sa(p, sun, len);
}

/* The real path of an O_PATH fd (+ "/" + name) as a sockaddr, for the policy; -1 errno. */
static int
sock_unix_real(int fd, const char *name, struct sockaddr_un *sun, socklen_t *len)
{
    char real[SOCK_UNIX_PATH_MAX + 1];
    struct sockaddr_un via;
    socklen_t vlen;
    sock_unix_via(fd, &via, &vlen);
    ssize_t n = readlink(via.sun_path, real, sizeof real);
    if (n <= 0 || real[0] != '/') { /* not a path in our root (another mount namespace?) */
        errno = n < 0 ? errno : EACCES;
        return -1;
    }
    if ((size_t)n >= sizeof real) {
        errno = ENAMETOOLONG;
        return -1;
    }
    real[n] = '\0';
    char full[2 * SOCK_UNIX_PATH_MAX + 2];
    snprintf(full, sizeof full, "%s%s%s", real, name == NULL || strcmp(real, "/") == 0 ? "" : "/",
             name ? name : "");
    return sock_unix_sa(full, sun, len);
}

/* open(path, flags) with who's credentials; -1 errno. */
static int
sock_unix_open_as(const struct policy_who *who, const char *path, int flags)
{
    if (fsid_enter(who) < 0)
        return -1;
    int fd = open(path, flags | O_CLOEXEC);
    int err = errno;
    fsid_leave();
    errno = err;
    return fd;
}

/*
 * The path could not be opened (missing, or not the client's to reach): judge it as a rule's
 * path is read, its longest existing part resolved as the client (policy_real_path), so a
 * denied destination still answers "denied" and no spelling of a denied path slips through a
 * check that has nothing to open (socket.attach); else pass the open's error on. -2 denied,
 * -1 errno.
 */
static int
sock_unix_unopened(struct sock *s, const struct policy_who *who, int action, const char *path)
{
    int err = errno;
    struct sockaddr_un sun;
    socklen_t len = 0; /* nothing that fits: judged as malformed, denied */
    char *real = NULL;
    if (path[0] == '/' && fsid_enter(who) == 0) {
        real = policy_real_path(path);
        fsid_leave();
    }
    /* a real path too long for an address: the text (which fits, being one) */
    if (real == NULL || sock_unix_sa(real, &sun, &len) < 0)
        sock_unix_sa(path, &sun, &len);
    free(real);
    if (!sock_policy_ok(s, action, (struct sockaddr *)&sun, len))
        return -2;
    errno = err;
    return -1;
}

/* The path of a pathname address as text (up to its first NUL) into path. */
static void
sock_unix_text(const struct sockaddr *sa, socklen_t len, char path[SOCK_UNIX_PATH_MAX + 1])
{
    size_t off = offsetof(struct sockaddr_un, sun_path), n = (size_t)len - off;
    n = n < SOCK_UNIX_PATH_MAX ? n : SOCK_UNIX_PATH_MAX;
    memcpy(path, (const char *)sa + off, n);
    path[n] = '\0';
}

int
sock_unix_is_path(const struct sockaddr *sa, socklen_t len)
{
    size_t off = offsetof(struct sockaddr_un, sun_path);
    return sa->sa_family == AF_UNIX && len > (socklen_t)off && ((const char *)sa)[off] != '\0';
}

/*
 * Open the socket file of the pathname sa O_PATH as s's client (a symlink as the final name is
 * followed: the socket it names is what is judged and used) and judge its real path for action
 * (enum policy_action). The fd (caller closes), -1 with errno, -2 denied by policy.
 */
static int
sock_unix_resolve(struct sock *s, const struct policy_who *who, int action,
                  const struct sockaddr *sa, socklen_t len)
{
    struct sockaddr_un real;
    socklen_t rlen;
    char path[SOCK_UNIX_PATH_MAX + 1];

    sock_unix_text(sa, len, path);
    int fd = sock_unix_open_as(who, path, O_PATH);
    if (fd < 0)
        return sock_unix_unopened(s, who, action, path);
    int r = sock_unix_real(fd, NULL, &real, &rlen);
    if (r == 0 && !sock_policy_ok(s, action, (struct sockaddr *)&real, rlen))
        r = -2;
    if (r < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return r;
    }
    return fd;
}

int
sock_unix_allowed(struct sock *s, int action, const struct sockaddr *sa, socklen_t len)
{
    struct policy_who who;
    if (!sock_who(s, &who))
        return 0;
    int fd = sock_unix_resolve(s, &who, action, sa, len);
    if (fd >= 0)
        close(fd);
    return fd != -2;
}

int
sock_unix_connect(struct sock *s, const struct sockaddr *sa, socklen_t len)
{
    struct policy_who who;
    struct sockaddr_un real, via;
    socklen_t rlen, vlen;
    char path[SOCK_UNIX_PATH_MAX + 1];

    if (!sock_who(s, &who)) { /* no identity to act as: fail closed */
        errno = EACCES;
        return -1;
    }
    sock_unix_text(sa, len, path);
    /* one switch for the whole step: open, judge (computation and a log line), connect */
    if (fsid_enter(&who) < 0)
        return -1;
    int fd = open(path, O_PATH | O_CLOEXEC), r = -1, err;
    if (fd < 0) {
        err = errno;
        fsid_leave();
        errno = err;
        return sock_unix_unopened(s, &who, POLICY_CONNECT, path);
    }
    if (sock_unix_real(fd, NULL, &real, &rlen) == 0) {
        if (!sock_policy_ok(s, POLICY_CONNECT, (struct sockaddr *)&real, rlen)) {
            r = -2;
        } else {
            sock_unix_via(fd, &via, &vlen);
            if (s->foreign) /* the client may have cleared O_NONBLOCK */
                r = nbguard_connect(s->fd, (struct sockaddr *)&via, vlen);
            else
                do
                    r = connect(s->fd, (struct sockaddr *)&via, vlen);
                while (r < 0 && errno == EINTR);
        }
    }
    err = errno;
    fsid_leave();
    close(fd);
    errno = err;
    return r;
}

/*
 * Is a socket file dead? Only a stream connect that is refused says so: a listener answers,
 * and a datagram socket (EPROTOTYPE) or one the client may not write (EACCES) is alive or
 * not the client's to remove. Runs in the file's directory with the client's credentials.
 */
static int
sock_unix_stale(const struct sockaddr_un *sun, socklen_t len)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    int r;
    do
        r = connect(fd, (const struct sockaddr *)sun, len);
    while (r < 0 && errno == EINTR);
    int err = errno;
    close(fd);
    return r < 0 && err == ECONNREFUSED;
}

/*
 * Bind s->fd at name inside the directory dirfd, working there (the switch to the client is in
 * force): a stale socket file is replaced, anything else is EADDRINUSE; the file is made with
 * mode. 0 or -1 errno.
 */
static int
sock_unix_bind_in(struct sock *s, int dirfd, const char *name, int mode)
{
    struct sockaddr_un rel;
    socklen_t rlen = 0;
    struct stat st;

    sock_unix_sa(name, &rel, &rlen); /* shorter than the whole path, which fits */
    if (fchdir(dirfd) < 0)
        return -1;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!S_ISSOCK(st.st_mode) || !sock_unix_stale(&rel, rlen)) {
            errno = EADDRINUSE;
            return -1;
        }
        unlinkat(dirfd, name, 0); /* stale: nothing listens on it */
    }
    /* the file is made with the mode (the socket inode is 0777, less the umask): no chmod */
    mode_t old = umask((mode_t)~mode & 0777);
    int r = bind(s->fd, (struct sockaddr *)&rel, rlen), err = errno;
    umask(old);
    if (r == 0 && fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        s->un->dev = st.st_dev;
        s->un->ino = st.st_ino;
        s->un->unlink_local = 1;
    }
    errno = err;
    return r;
}

int
sock_unix_bind(struct sock *s, const char *path, int mode)
{
    struct policy_who who;
    struct sockaddr_un real;
    socklen_t rlen;
    char dir[SOCK_UNIX_PATH_MAX + 1];
    const char *slash = strrchr(path, '/'), *name = slash + 1;
    int r = -1, err, fd = -1;

    if (!sock_who(s, &who)) {
        errno = EACCES;
        return -1;
    }
    if (*name == '\0' || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        errno = EINVAL; /* names a directory, not a new file */
        return -1;
    }
    snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    /* the daemon's working directory, to come back to after binding inside the client's */
    int cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (cwd < 0)
        return -1;
    /* one switch for the whole step: open, judge (computation and a log line), bind */
    if (fsid_enter(&who) < 0)
        goto out;
    if ((fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
        err = errno;
        fsid_leave();
        close(cwd);
        errno = err;
        return sock_unix_unopened(s, &who, POLICY_BIND, path);
    }
    if (sock_unix_real(fd, name, &real, &rlen) == 0) {
        if (!sock_policy_ok(s, POLICY_BIND, (struct sockaddr *)&real, rlen))
            r = -2;
        else
            r = sock_unix_bind_in(s, fd, name, mode);
    }
    err = errno;
    fsid_leave();
    if (fchdir(cwd) < 0)
        abort(); /* the daemon's own working directory, held open: cannot fail */
    errno = err;
out:
    err = errno;
    close(cwd);
    if (r == 0) {
        s->un->dirfd = fd;
    } else if (fd >= 0) {
        close(fd);
    }
    errno = err;
    return r;
}

void
sock_unix_release(struct sock *s)
{
    struct sock_unix *u = s->un;
    struct policy_who who;
    struct stat st;
    if (u->dirfd < 0)
        return;
    const char *name = u->local != NULL ? strrchr(u->local, '/') : NULL;
    /* only our own file, and as the client: another socket may have replaced it */
    if (u->unlink_local && name != NULL && sock_who(s, &who) && fsid_enter(&who) == 0) {
        if (fstatat(u->dirfd, name + 1, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == u->dev &&
            st.st_ino == u->ino)
            unlinkat(u->dirfd, name + 1, 0);
        fsid_leave();
    }
    close(u->dirfd);
    u->dirfd = -1;
}

/* Accept on a unix listener: the peer is reported unnamed and the local path is the listener's. */
static int
unix_accept(struct sock *l, struct sockaddr_storage *remote, socklen_t *rl, union sock_sa *local,
            socklen_t *ll, struct ssl_st **ssl)
{
    (void)ll, (void)ssl;
    memset(local, 0, sizeof *local);
    return sock_accept_fd(l, remote, rl);
}

/* unix: an AF_UNIX byte stream, named by a path or an abstract name. */
const struct sock_type_desc sock_type_unix = {
    .name = "unix",
    .caps = SOCK_CAP_UNIX | SOCK_CAP_LISTEN,
    .log = CONF_LOG_LOCAL,
    .accept = unix_accept,
};
