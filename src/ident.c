#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "daemon.h"
#include "ident.h"
#include "policy.h"

/* The uid's account in sockd.accts (made on first use, referenced); NULL on ENOMEM. */
static struct ident_acct *
ident_acct_get(uid_t uid)
{
    uint64_t key = (uint64_t)uid + 1; /* idmap keys are > 0 */
    struct ident_acct *a = idmap_get(&sockd.accts, key);
    if (a == NULL) {
        if ((a = calloc(1, sizeof *a)) == NULL)
            return NULL;
        a->uid = uid;
        if (idmap_put(&sockd.accts, key, a) < 0) {
            free(a);
            return NULL;
        }
    }
    a->refs++;
    return a;
}

/* Drop a reference to an account; the last one forgets the uid. */
static void
ident_acct_put(struct ident_acct *a)
{
    if (--a->refs > 0)
        return;
    idmap_del(&sockd.accts, (uint64_t)a->uid + 1);
    free(a);
}

struct ident *
ident_new(uid_t uid, gid_t gid, pid_t pid, gid_t *groups, int ngroups)
{
    struct ident *id = calloc(1, sizeof *id);
    if (id == NULL || (id->acct = ident_acct_get(uid)) == NULL) {
        free(id);
        free(groups);
        return NULL;
    }
    id->refs = 1;
    id->uid = uid;
    id->gid = gid;
    id->pid = pid;
    id->groups = groups;
    id->ngroups = groups != NULL ? ngroups : 0;
    return id;
}

struct ident *
ident_of_peer(int fd)
{
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    socklen_t cl = sizeof cred;
    gid_t *groups;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
        cred.pid = 0;
        cred.uid = (uid_t)-1;
        cred.gid = (gid_t)-1;
    }
    int ng = policy_peer_groups(fd, cred.pid, &groups); /* any number of groups */
    return ident_new(cred.uid, cred.gid, cred.pid, groups, ng > 0 ? ng : 0);
}

struct ident *
ident_ref(struct ident *id)
{
    id->refs++;
    return id;
}

void
ident_unref(struct ident *id)
{
    if (id == NULL || --id->refs > 0)
        return;
    ident_acct_put(id->acct);
    free(id->groups);
    free(id);
}

size_t
ident_room(const struct ident *id)
{
    size_t cap = sockd.conf.max_buffer_per_uid, used = id->acct->queued;
    return used < cap ? cap - used : 0;
}
