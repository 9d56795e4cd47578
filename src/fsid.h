/*
 * File-system work done for a client runs with the client's credentials: the calling thread's
 * fsuid, fsgid and supplementary groups are switched for the duration, so the kernel checks
 * every path lookup, bind, connect, open and unlink as if the client had made it.
 */
#ifndef SOCKD_FSID_H
#define SOCKD_FSID_H

#include <stddef.h>

struct policy_who;

/* Largest file read whole into memory (ca_file, the config): 16 MiB. */
#define FSID_FILE_MAX (16u << 20)

/*
 * Switch this thread's file-system credentials to who's (uid, gid, groups) until fsid_leave.
 * 0 when switched, or when the daemon cannot switch at all because it is not root (the work
 * then runs as the daemon's own user); -1 with errno when a root daemon failed to switch
 * (nothing is switched: fail closed). Calls do not nest.
 */
int fsid_enter(const struct policy_who *who);
/* Back to the daemon's own file-system credentials (aborts if the kernel refuses). */
void fsid_leave(void);
/*
 * Read a whole regular file of at most cap bytes into memory without ever blocking on a FIFO
 * or device: opened O_NONBLOCK|O_NOCTTY (as who when who is not NULL), then anything but a
 * regular file is refused (EINVAL), a larger one too (EFBIG). Returns a malloc'ed copy with
 * a NUL after the *len bytes (caller frees), or NULL with errno.
 */
char *fsid_read_file(const struct policy_who *who, const char *path, size_t cap, size_t *len);
/* What a failed fsid_read_file's errno means, as text (static). */
const char *fsid_read_error(int err);

#endif
