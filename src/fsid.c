#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ctl.h"
#include "fsid.h"
#include "policy.h"

/*
 * Why fsuid and the raw setgroups syscall: the daemon is one thread, and these change only the
 * calling thread's credentials (glibc's setgroups() would signal every thread to follow), so the
 * switch is two or three syscalls each way with nothing else in the process affected. Moving
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

/* The switch in progress: what fsid_leave restores (module-local, as calls never nest). */
static struct {
    int active;    /* fsid_enter switched and fsid_leave has not run yet */
    uid_t fsuid;   /* the daemon's own */
    gid_t fsgid;   /* the daemon's own */
    gid_t *groups; /* the daemon's own supplementary groups, malloc'ed */
    int ngroups;
} fsid_saved;

/* The daemon's supplementary groups into fsid_saved; -1 with errno. */
static int
fsid_save_groups(void)
{
    int n = getgroups(0, NULL);
    if (n < 0)
        return -1;
    gid_t *g = malloc(((size_t)n + 1) * sizeof *g);
    if (g == NULL)
        return -1;
    if ((n = getgroups(n, g)) < 0) {
        free(g);
        return -1;
    }
    fsid_saved.groups = g;
    fsid_saved.ngroups = n;
    return 0;
}

/* The raw, this-thread-only setgroups. */
static int
fsid_setgroups(int n, const gid_t *g)
{
    return (int)syscall(FSID_SYS_SETGROUPS, (size_t)n, g);
}

int
fsid_enter(const struct policy_who *who)
{
    if (fsid_saved.active) {
        errno = EBUSY;
        return -1;
    }
    if (fsid_save_groups() < 0)
        return -1;
    if (fsid_setgroups(who->ngroups, who->groups) < 0) {
        int err = errno;
        free(fsid_saved.groups);
        fsid_saved.groups = NULL;
        if (err == EPERM && geteuid() != 0)
            return 0; /* not root: the daemon works as itself (sockd(8), SECURITY MODEL) */
        errno = err;
        return -1;
    }
    /* setfsgid/setfsuid answer the previous value; asking again with -1 reads the new one */
    fsid_saved.fsgid = (gid_t)setfsgid(who->gid);
    int gid_ok = (gid_t)setfsgid((gid_t)-1) == who->gid;
    fsid_saved.fsuid = (uid_t)setfsuid(who->uid);
    int uid_ok = (uid_t)setfsuid((uid_t)-1) == who->uid;
    fsid_saved.active = 1;
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
    if (!fsid_saved.active)
        return;
    setfsuid(fsid_saved.fsuid);
    setfsgid(fsid_saved.fsgid);
    int bad = (uid_t)setfsuid((uid_t)-1) != fsid_saved.fsuid ||
              (gid_t)setfsgid((gid_t)-1) != fsid_saved.fsgid ||
              fsid_setgroups(fsid_saved.ngroups, fsid_saved.groups) < 0;
    free(fsid_saved.groups);
    fsid_saved.groups = NULL;
    fsid_saved.active = 0;
    if (bad)
        abort(); /* a daemon left with a client's credentials must not go on */
}

void
fsid_client_who(const struct client *c, struct policy_who *who)
{
    who->uid = c->uid;
    who->gid = c->gid;
    who->pid = c->pid;
    who->groups = c->groups;
    who->ngroups = c->ngroups;
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
