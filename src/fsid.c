#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "fsid.h"
#include "ident.h"
#include "policy.h"

/*
 * Why fsuid and the raw setgroups syscall: all file-system work for clients runs on the loop's
 * thread (the guard's closer and the key maker never touch a path), and these change only the
 * calling thread's credentials (glibc's setgroups() would signal every thread to follow), so the
 * switch is two or three syscalls each way with no other thread affected. Moving
 * the fsuid away from 0 drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER and the other
 * file capabilities from the effective set; CAP_SETUID and CAP_SETGID stay, which is what lets
 * fsid_leave switch back. bind() and connect() on a pathname Unix socket check the directory
 * search, create and socket-write permissions with these credentials (unix(7)).
 */
#ifdef SYS_setgroups32
#define FSID_SYS_SETGROUPS SYS_setgroups32 /* 32-bit gid_t where the old call takes 16 bits */
#else
#define FSID_SYS_SETGROUPS SYS_setgroups
#endif

/*
 * The daemon's own identity, read once (sockd never changes its ids or groups after it
 * starts, so this module-local cache saves two syscalls per switch), and whether a switch is
 * in force.
 */
static struct {
    int loaded;    /* the fields below are filled */
    int active;    /* fsid_enter switched and fsid_leave has not run yet */
    uid_t uid;     /* effective uid, which is the fsuid outside a switch */
    gid_t gid;     /* effective gid, likewise */
    gid_t *groups; /* supplementary groups, malloc'ed (kept for the daemon's life) */
    int ngroups;
} fsid_self;

/* Fill fsid_self; -1 with errno. */
static int
fsid_load_self(void)
{
    if (fsid_self.loaded)
        return 0;
    int n = getgroups(0, NULL);
    gid_t *g = n < 0 ? NULL : malloc(((size_t)n + 1) * sizeof *g);
    if (g == NULL || (n = getgroups(n, g)) < 0) {
        free(g);
        return -1;
    }
    fsid_self.uid = geteuid();
    fsid_self.gid = getegid();
    fsid_self.groups = g;
    fsid_self.ngroups = n;
    fsid_self.loaded = 1;
    return 0;
}

/* The raw, this-thread-only setgroups. */
static int
fsid_setgroups(int n, const gid_t *g)
{
    return (int)syscall(FSID_SYS_SETGROUPS, (size_t)n, g);
}

/* Does who have exactly the daemon's identity (nothing to switch)? */
static int
fsid_is_self(const struct policy_who *who)
{
    if (who->uid != fsid_self.uid || who->gid != fsid_self.gid || who->ngroups != fsid_self.ngroups)
        return 0;
    for (int i = 0; i < who->ngroups; i++)
        if (who->groups[i] != fsid_self.groups[i])
            return 0;
    return 1;
}

int
fsid_enter(const struct policy_who *who)
{
    if (fsid_self.active) {
        errno = EBUSY;
        return -1;
    }
    if (fsid_load_self() < 0)
        return -1;
    if (fsid_is_self(who))
        return 0;
    if (fsid_setgroups(who->ngroups, who->groups) < 0) {
        if (errno == EPERM && fsid_self.uid != 0)
            return 0; /* not root: the daemon works as itself (sockd(8), SECURITY MODEL) */
        return -1;
    }
    /* setfsgid/setfsuid answer the previous value; asking again with -1 reads the new one */
    setfsgid(who->gid);
    int gid_ok = (gid_t)setfsgid((gid_t)-1) == who->gid;
    setfsuid(who->uid);
    int uid_ok = (uid_t)setfsuid((uid_t)-1) == who->uid;
    fsid_self.active = 1;
    if (!gid_ok || !uid_ok) {
        fsid_leave();
        errno = EPERM;
        return -1;
    }
    return 0;
}

void
fsid_leave(void)
{
    if (!fsid_self.active)
        return;
    fsid_self.active = 0;
    setfsuid(fsid_self.uid);
    setfsgid(fsid_self.gid);
    if ((uid_t)setfsuid((uid_t)-1) != fsid_self.uid ||
        fsid_setgroups(fsid_self.ngroups, fsid_self.groups) < 0)
        abort(); /* a daemon left with a client's credentials must not go on */
}

char *
fsid_read_file(const struct policy_who *who, const char *path, size_t cap, size_t *len)
{
    struct stat st;
    if (who != NULL && fsid_enter(who) < 0)
        return NULL;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    int err = errno;
    if (who != NULL)
        fsid_leave();
    if (fd < 0) {
        errno = err;
        return NULL;
    }
    char *buf = NULL;
    size_t have = 0;
    if (fstat(fd, &st) < 0) {
        err = errno;
        goto fail;
    }
    err = !S_ISREG(st.st_mode) ? EINVAL : (uint64_t)st.st_size > cap ? EFBIG : 0;
    if (err != 0 || (buf = malloc((size_t)st.st_size + 1)) == NULL) {
        err = err ? err : ENOMEM;
        goto fail;
    }
    /* read up to the size fstat saw; a file that grew meanwhile is cut there */
    while (have < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + have, (size_t)st.st_size - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = errno;
            goto fail;
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    close(fd);
    buf[have] = '\0';
    *len = have;
    return buf;
fail:
    free(buf);
    close(fd);
    errno = err;
    return NULL;
}

const char *
fsid_read_error(int err)
{
    return err == EINVAL ? "not a regular file" : err == EFBIG ? "too large" : strerror(err);
}
