#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include <jansson.h>
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

/* Drop a reference to a restriction link (NULL is fine); the last frees it and its outer ones. */
static void
ident_restrict_unref(struct ident_restrict *r)
{
    while (r != NULL && --r->refs == 0) {
        struct ident_restrict *outer = r->outer;
        policy_free(r->policy);
        json_decref(r->rules);
        free(r);
        r = outer;
    }
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
    ident_restrict_unref(id->restriction);
    free(id->groups);
    free(id);
}

void
ident_who(const struct ident *id, struct policy_who *who)
{
    who->uid = id->uid;
    who->gid = id->gid;
    who->pid = id->pid;
    who->groups = id->groups;
    who->ngroups = id->ngroups;
}

size_t
ident_room(const struct ident *id)
{
    size_t cap = sockd.conf.max_buffer_per_uid, used = id->acct->queued;
    return used < cap ? cap - used : 0;
}

int
ident_restrict(struct ident *id, struct policy *policy, json_t *rules)
{
    struct ident_restrict *outer = id->restriction, *r;
    if (outer != NULL && outer->depth >= IDENT_MAX_RESTRICT) {
        policy_free(policy);
        errno = E2BIG;
        return -1;
    }
    if ((r = calloc(1, sizeof *r)) == NULL) {
        policy_free(policy);
        errno = ENOMEM;
        return -1;
    }
    r->refs = 1;
    r->depth = outer != NULL ? outer->depth + 1 : 1;
    r->policy = policy;
    r->rules = json_incref(rules);
    r->outer = outer; /* the identity's reference moves to the new link */
    id->restriction = r;
    return 0;
}

int
ident_allows(const struct ident *id, int action, const struct sockaddr *sa, socklen_t len)
{
    for (const struct ident_restrict *r = id->restriction; r != NULL; r = r->outer)
        if (r->policy == NULL || /* no rules: only the implicit final deny */
            !policy_allows(r->policy, (enum policy_action)action, sa, len, NULL))
            return 0;
    return 1;
}

json_t *
ident_restrict_json(const struct ident *id)
{
    json_t *all = json_array();
    for (const struct ident_restrict *r = id->restriction; all != NULL && r != NULL; r = r->outer)
        if (json_array_insert(all, 0, r->rules) < 0) {
            json_decref(all);
            return NULL;
        }
    return all;
}
