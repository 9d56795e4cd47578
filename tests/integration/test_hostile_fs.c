/*
 * Hostile clients and the file system: Unix socket files created, replaced, chmod'ed and removed
 * with the client's credentials, policy on the path the kernel uses, files read for a client
 * (sockd(8) SECURITY MODEL).
 *
 * The daemon runs as root (the test runs as root); every attacker connects as uid/gid 65534
 * (h_client_nobody: a child drops its ids, then connects).
 */
#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sockd/protocol.h>

#include "harness.h"
#include "tc.h"

static struct h_daemon D;
static char T[64];             /* this test's directory, removed by teardown ("" when none) */
static int raw_fds[16], n_raw; /* sockets the test made, closed by teardown */

static int
teardown(void **state)
{
    (void)state;
    h_cleanup();
    h_daemon_kill(&D);
    while (n_raw > 0)
        close(raw_fds[--n_raw]);
    if (T[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", T);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", T);
        T[0] = '\0';
    }
    return 0;
}

/* Make T, a fresh directory every uid may search (0755, root's). */
static void
tdir(void)
{
    snprintf(T, sizeof T, "/tmp/hfs-XXXXXX");
    EXPECT_TRUE(mkdtemp(T) != NULL, "mkdtemp: %s", strerror(errno));
    EXPECT_INT(chmod(T, 0755), 0, "chmod: %s", strerror(errno));
}

/* T/rel into buf (static ring of 8, enough for one test). */
static const char *
tp(const char *rel)
{
    static char ring[8][160];
    static int at;
    char *b = ring[at++ % 8];
    snprintf(b, sizeof ring[0], "%s/%s", T, rel);
    return b;
}

/* mkdir T/rel with mode (chmod'ed, past the umask). */
static void
tmkdir(const char *rel, mode_t mode)
{
    EXPECT_INT(mkdir(tp(rel), mode), 0, "mkdir: %s", strerror(errno));
    EXPECT_INT(chmod(tp(rel), mode), 0, "chmod: %s", strerror(errno));
}

/* A socket of the test (root) bound at path: stream listening, or datagram; file mode set. */
static int
unix_bound(const char *path, int type, mode_t mode)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(fd >= 0 && n_raw < 16, "fd >= 0 && n_raw < 16");
    raw_fds[n_raw++] = fd;
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    EXPECT_INT(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0, "bind: %s", strerror(errno));
    if (type == SOCK_STREAM)
        EXPECT_INT(listen(fd, 8), 0, "listen: %s", strerror(errno));
    EXPECT_INT(chmod(path, mode), 0, "chmod: %s", strerror(errno));
    return fd;
}

/* lstat's inode of path, 0 when it does not exist. */
static ino_t
ino_of(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 ? st.st_ino : 0;
}

/*
 * socket.connect of a new unix socket of c to path, and how it ended: "connected", the reason
 * of an error response, or the socket.closed reason (malloc'ed); *err gets the errno (0 none).
 */
static char *
unix_connect(struct sockd_client *c, const char *path, int *err)
{
    long long s = h_open(c, "unix");
    json_t *params = json_pack("{s:I,s:s}", "socket", (json_int_t)s, "address", path);
    json_t *r = NULL, *e = NULL;
    int rc = sockd_client_call(c, "socket.connect", params, &r, &e, H_TIMEOUT_MS);
    json_decref(params);
    json_decref(r);
    EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
    *err = 0;
    if (rc == 1) { /* refused at once (the policy): the error's reason */
        json_t *d = json_object_get(e, "data");
        const char *why = json_string_value(json_object_get(d, "reason"));
        char *out = strdup(why ? why : "error");
        *err = (int)json_integer_value(json_object_get(d, "errno"));
        json_decref(e);
        return out;
    }
    for (;;) {
        json_t *ev = sockd_client_next_event(c, H_TIMEOUT_MS), *p;
        EXPECT_TRUE(ev != NULL, "ev");
        p = json_object_get(ev, "params");
        const char *m = json_string_value(json_object_get(ev, "method"));
        if (json_integer_value(json_object_get(p, "socket")) != s || m == NULL) {
            json_decref(ev);
            continue;
        }
        char *out = NULL;
        if (strcmp(m, "socket.connected") == 0) {
            out = strdup("connected");
            json_decref(h_ok(c, "socket.close", "{s:I}", "socket", (json_int_t)s));
        } else if (strcmp(m, "socket.closed") == 0) {
            out = strdup(json_string_value(json_object_get(p, "reason")));
            *err = (int)json_integer_value(json_object_get(p, "errno"));
        }
        json_decref(ev);
        if (out != NULL)
            return out;
    }
}

/* Assert how a connect of c to path ends (reason as unix_connect says; err -1: any). */
#define EXPECT_CONNECT(c, path, want, want_err)                                                    \
    do {                                                                                           \
        int e_;                                                                                    \
        char *r_ = unix_connect((c), (path), &e_);                                                 \
        if (strcmp(r_, (want)) != 0 || ((want_err) >= 0 && e_ != (want_err)))                      \
            fail_msg("connect %s: %s errno %d, want %s errno %d", (path), r_, e_, (want),          \
                     (want_err));                                                                  \
        free(r_);                                                                                  \
    } while (0)

/* socket.bind of a new unix socket of c at path (mode < 0: the default): 0 when bound, else
 * the error code with *reason (static copy) and *err (0 none) from its data. */
static int
unix_bind(struct sockd_client *c, const char *path, int mode, const char **reason, int *err)
{
    static char rbuf[64];
    json_t *r = NULL, *e = NULL;
    long long s = h_open(c, "unix");
    json_t *params = json_pack("{s:I,s:s}", "socket", (json_int_t)s, "address", path);
    if (mode >= 0)
        json_object_set_new(params, "mode", json_integer(mode));
    int rc = sockd_client_call(c, "socket.bind", params, &r, &e, H_TIMEOUT_MS);
    json_decref(params);
    json_decref(r);
    EXPECT_TRUE(rc == 0 || rc == 1, "rc == 0 || rc == 1");
    *err = 0;
    *reason = "";
    if (rc == 0)
        return 0;
    json_t *d = json_object_get(e, "data");
    const char *why = json_string_value(json_object_get(d, "reason"));
    snprintf(rbuf, sizeof rbuf, "%s", why ? why : "");
    *reason = rbuf;
    *err = (int)json_integer_value(json_object_get(d, "errno"));
    int code = sockd_client_error_code(e);
    json_decref(e);
    return code;
}

/* Assert how a bind of c at path ends: 0 bound, or the error code with reason and errno. */
#define EXPECT_BIND(c, path, mode, want_code, want_reason, want_err)                               \
    do {                                                                                           \
        const char *r_;                                                                            \
        int e_, k_ = unix_bind((c), (path), (mode), &r_, &e_);                                     \
        if (k_ != (want_code) || (k_ != 0 && (strcmp(r_, (want_reason)) != 0 ||                    \
                                              ((want_err) >= 0 && e_ != (want_err)))))             \
            fail_msg("bind %s: code %d %s errno %d, want %d %s errno %d", (path), k_, r_, e_,      \
                     (want_code), (want_reason), (want_err));                                      \
    } while (0)

/*
 * Attack (item 3): a nobody client asks the root daemon to bind sockets in directories only
 * root may write (0755) or enter (0700). The bind must be made as the client: EACCES, and no
 * file appears. A file the client may make is its own, with exactly the mode it asked for.
 */
static void
test_fs_bind_needs_client_rights(void **state)
{
    struct sockd_client *nobody, *root;
    struct stat st;

    (void)state;
    tdir();
    tmkdir("rw", 0755);
    tmkdir("priv", 0700);
    tmkdir("pub", 0777);
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    root = h_client_auto(&D);
    EXPECT_BIND(nobody, tp("rw/s"), -1, SOCKD_E_INTERNAL, "bind_failed", EACCES);
    EXPECT_BIND(nobody, tp("priv/s"), -1, SOCKD_E_INTERNAL, "bind_failed", EACCES);
    EXPECT_INT(ino_of(tp("rw/s")), 0, "ino_of(tp(\"rw/s\"))");
    EXPECT_INT(ino_of(tp("priv/s")), 0, "ino_of(tp(\"priv/s\"))");
    /* the same call from root still works: the check is the client's, not a blanket refusal */
    EXPECT_BIND(root, tp("priv/s"), -1, 0, "", 0);
    /* where nobody may create, the file is nobody's and made with the mode asked for */
    EXPECT_BIND(nobody, tp("pub/s"), 0640, 0, "", 0);
    EXPECT_INT(lstat(tp("pub/s"), &st), 0, "lstat: %s", strerror(errno));
    EXPECT_TRUE(S_ISSOCK(st.st_mode), "S_ISSOCK(st.st_mode)");
    EXPECT_INT(st.st_mode & 07777, 0640, "st.st_mode & 07777");
    EXPECT_INT(st.st_uid, H_NOBODY, "st.st_uid");
    EXPECT_INT(st.st_gid, H_NOBODY, "st.st_gid");
    json_decref(h_ok(root, "daemon.ping", NULL));
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/*
 * Attack (item 3): a nobody client connects, through the root daemon, to a root listener in a
 * 0700 directory and to one whose socket file is 0700: both must fail as they would for the
 * client itself (EACCES), while root still connects.
 */
static void
test_fs_connect_needs_client_rights(void **state)
{
    struct sockd_client *nobody, *root;

    (void)state;
    tdir();
    tmkdir("priv", 0700);
    tmkdir("pub", 0755);
    unix_bound(tp("priv/s"), SOCK_STREAM, 0777);
    unix_bound(tp("pub/s"), SOCK_STREAM, 0700);
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    root = h_client_auto(&D);
    EXPECT_CONNECT(nobody, tp("priv/s"), "connect_failed", EACCES);
    EXPECT_CONNECT(nobody, tp("pub/s"), "connect_failed", EACCES);
    EXPECT_CONNECT(root, tp("priv/s"), "connected", 0);
    EXPECT_CONNECT(root, tp("pub/s"), "connected", 0);
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/*
 * Attack (item 3): bind on the path of a live datagram socket (a syslog-like socket): a stream
 * connect to it fails with EPROTOTYPE, which is not "nobody listens", so it must stay; and a
 * dead root socket in a sticky directory (as in /tmp) is not nobody's to remove. Only a
 * refused connect makes a file stale, and the removal is the client's own (the kernel refuses
 * it where the client could not unlink).
 */
static void
test_fs_bind_keeps_live_and_foreign_files(void **state)
{
    struct sockd_client *nobody;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char got[8];

    (void)state;
    tdir();
    tmkdir("pub", 0777);
    tmkdir("sticky", 01777);
    int dg = unix_bound(tp("pub/log"), SOCK_DGRAM, 0666);
    ino_t dg_ino = ino_of(tp("pub/log"));
    close(unix_bound(tp("sticky/dead"), SOCK_STREAM, 0666)); /* stale, root's */
    n_raw--;
    ino_t dead_ino = ino_of(tp("sticky/dead"));
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    EXPECT_BIND(nobody, tp("pub/log"), -1, SOCKD_E_INTERNAL, "bind_failed", EADDRINUSE);
    EXPECT_INT(ino_of(tp("pub/log")), dg_ino, "ino_of(tp(\"pub/log\"))");
    /* and the datagram socket still gets what is sent to its path */
    int tx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", tp("pub/log"));
    EXPECT_INT(sendto(tx, "hi", 2, 0, (struct sockaddr *)&sun, sizeof sun), 2, "sendto: %s",
               strerror(errno));
    EXPECT_INT(recv(dg, got, sizeof got, MSG_DONTWAIT), 2, "recv: %s", strerror(errno));
    close(tx);
    EXPECT_BIND(nobody, tp("sticky/dead"), -1, SOCKD_E_INTERNAL, "bind_failed", EADDRINUSE);
    EXPECT_INT(ino_of(tp("sticky/dead")), dead_ino, "ino_of(tp(\"sticky/dead\"))");
    /* a stale socket the client may remove is still replaced */
    close(unix_bound(tp("pub/dead"), SOCK_STREAM, 0666));
    n_raw--;
    EXPECT_BIND(nobody, tp("pub/dead"), -1, 0, "", 0);
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/* The swapper of test_fs_mode_not_through_symlink: a symlink to the target is renamed over
 * each new T/pub/s as soon as inotify says it was made. */
struct swapper {
    int ino_fd;
    volatile int stop, swaps;
    char target[160], dir[160];
};

static void *
swapper_run(void *arg)
{
    struct swapper *w = arg;
    char buf[4096], tmp[200], dst[200];
    snprintf(tmp, sizeof tmp, "%s/tmp-link", w->dir);
    snprintf(dst, sizeof dst, "%s/s", w->dir);
    while (!w->stop) {
        ssize_t n = read(w->ino_fd, buf, sizeof buf);
        if (n <= 0) {
            h_sleep_ms(1);
            continue;
        }
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            if (ev->len > 0 && strcmp(ev->name, "s") == 0) {
                unlink(tmp);
                if (symlink(w->target, tmp) == 0 && rename(tmp, dst) == 0)
                    w->swaps++;
            }
            p += sizeof *ev + ev->len;
        }
    }
    return NULL;
}

/*
 * Attack (item 3): the mode of a bound file was applied by chmod on the path after the bind, so
 * a symlink renamed over the new socket file in between made root chmod the symlink's target
 * (here a root 0600 file; in life /etc/shadow). The mode must be set with the file, never by
 * path. A bounded number of binds races a swapper thread; the target's mode never changes.
 */
static void
test_fs_mode_not_through_symlink(void **state)
{
    struct sockd_client *nobody;
    struct swapper w = {0};
    pthread_t th;
    struct stat st;

    (void)state;
    tdir();
    tmkdir("pub", 0777);
    snprintf(w.target, sizeof w.target, "%s", tp("target"));
    snprintf(w.dir, sizeof w.dir, "%s", tp("pub"));
    int fd = open(w.target, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    close(fd);
    w.ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    EXPECT_TRUE(w.ino_fd >= 0, "w.ino_fd >= 0");
    EXPECT_TRUE(inotify_add_watch(w.ino_fd, w.dir, IN_CREATE) >= 0,
                "inotify_add_watch(w.ino_fd, w.dir, IN_CREATE) >= 0");
    EXPECT_INT(pthread_create(&th, NULL, swapper_run, &w), 0, "pthread_create");
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    for (int i = 0; i < 1500; i++) {
        const char *reason;
        int err;
        long long before = w.swaps;
        unix_bind(nobody, tp("pub/s"), 0666, &reason, &err);
        for (int k = 0; k < 200 && w.swaps == before; k++)
            h_sleep_ms(1);
        EXPECT_INT(stat(w.target, &st), 0, "stat: %s", strerror(errno));
        if ((st.st_mode & 07777) != 0600)
            fail_msg("bind %d: the target's mode became %o", i, st.st_mode & 07777);
        unlink(tp("pub/s"));
    }
    w.stop = 1;
    pthread_join(th, NULL);
    close(w.ino_fd);
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/*
 * Attack (item 3): the bound file was removed by path on close. Removal must be of the file
 * the socket made, in the directory it was made in: a file renamed over it stays, and when the
 * directory itself was moved away and another put in its place, the new one's file stays and
 * the socket's own file (now elsewhere) is the one removed.
 */
static void
test_fs_unlink_only_own_file(void **state)
{
    struct sockd_client *nobody;

    (void)state;
    tdir();
    tmkdir("pub", 0777);
    tmkdir("d", 0777);
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    long long a = h_open(nobody, "unix"), b = h_open(nobody, "unix"), c = h_open(nobody, "unix");
    json_decref(
        h_ok(nobody, "socket.bind", "{s:I,s:s}", "socket", (json_int_t)a, "address", tp("pub/a")));
    json_decref(
        h_ok(nobody, "socket.bind", "{s:I,s:s}", "socket", (json_int_t)b, "address", tp("pub/b")));
    json_decref(
        h_ok(nobody, "socket.bind", "{s:I,s:s}", "socket", (json_int_t)c, "address", tp("d/c")));
    /* b: a root file renamed over it; d: the directory moved, a new one with a root file c */
    int fd = open(tp("pub/other"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    close(fd);
    EXPECT_INT(rename(tp("pub/other"), tp("pub/b")), 0, "rename: %s", strerror(errno));
    ino_t b_ino = ino_of(tp("pub/b"));
    EXPECT_INT(rename(tp("d"), tp("d.moved")), 0, "rename: %s", strerror(errno));
    tmkdir("d", 0777);
    fd = open(tp("d/c"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    close(fd);
    ino_t c_ino = ino_of(tp("d/c"));
    for (long long *h = (long long[]){a, b, c, 0}; *h != 0; h++)
        json_decref(h_ok(nobody, "socket.close", "{s:I}", "socket", (json_int_t)*h));
    json_decref(h_ok(nobody, "daemon.ping", NULL));                  /* the closes are done */
    EXPECT_INT(ino_of(tp("pub/a")), 0, "ino_of(tp(\"pub/a\"))");     /* its own file: removed */
    EXPECT_INT(ino_of(tp("pub/b")), b_ino, "ino_of(tp(\"pub/b\"))"); /* a replacement: untouched */
    EXPECT_INT(ino_of(tp("d/c")), c_ino,
               "ino_of(tp(\"d/c\"))"); /* another directory's file: untouched */
    EXPECT_INT(ino_of(tp("d.moved/c")), 0,
               "ino_of(tp(\"d.moved/c\"))"); /* its own file, where it went: removed */
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/* A symlink T/rel -> target. */
static void
tlink(const char *target, const char *rel)
{
    EXPECT_INT(symlink(target, tp(rel)), 0, "symlink: %s", strerror(errno));
}

/*
 * Attack (item 4): "deny connect unix T/x/" compared the text, so any other spelling of the
 * same socket got through: a symlinked directory, /proc/self/root, "//", "/./", a symlink as
 * the final name, "dir-link/..", /var/run for /run. The rule must hold for the path the kernel
 * uses, and a rule written through a symlink (T/rl/ -> T/z) must hold for the real path. The
 * same holds for binds, and for a connection handed over by socket.attach.
 */
static void
test_fs_policy_on_real_path(void **state)
{
    struct sockd_client *nobody;
    char conf[1024], run[64] = "", p[200];

    (void)state;
    tdir();
    tmkdir("x", 0777);
    tmkdir("x/sub", 0777);
    tmkdir("ok", 0777);
    tmkdir("y", 0755);
    tmkdir("z", 0777);
    unix_bound(tp("x/s"), SOCK_STREAM, 0777);
    unix_bound(tp("ok/s"), SOCK_STREAM, 0777);
    unix_bound(tp("z/s"), SOCK_STREAM, 0777);
    tlink(tp("x"), "link");
    tlink(tp("x/s"), "y/ln");
    tlink(tp("x/sub"), "link2");
    tlink(tp("z"), "rl");
    /* /var/run is a symlink to /run on this system: a rule on /run holds for /var/run too */
    struct stat st;
    int var_run = lstat("/var/run", &st) == 0 && S_ISLNK(st.st_mode);
    if (var_run) {
        snprintf(run, sizeof run, "/run/hfs-XXXXXX");
        EXPECT_TRUE(mkdtemp(run) != NULL, "mkdtemp: %s", strerror(errno));
        EXPECT_INT(chmod(run, 0777), 0, "chmod: %s", strerror(errno));
        snprintf(p, sizeof p, "%s/s", run);
        unix_bound(p, SOCK_STREAM, 0777);
    }
    snprintf(conf, sizeof conf,
             "deny connect unix %s/\ndeny bind unix %s/\ndeny connect unix %s/\n"
             "deny connect unix %s/\n",
             tp("x"), tp("x"), tp("rl"), var_run ? run : tp("nothing"));
    h_daemon_start(&D, conf);
    nobody = h_client_nobody(&D);
    const char *denied[] = {"%s/x/s",        "%s/link/s", "/proc/self/root%s/x/s",
                            "%s//x/s",       "%s/./x/s",  "%s/y/ln",
                            "%s/link2/../s", "%s/z/s",    "%s/rl/s"};
    for (size_t i = 0; i < sizeof denied / sizeof *denied; i++) {
        snprintf(p, sizeof p, denied[i], T);
        EXPECT_CONNECT(nobody, p, "policy_denied", -1);
    }
    if (var_run) {
        snprintf(p, sizeof p, "/var%s/s", run);
        EXPECT_CONNECT(nobody, p, "policy_denied", -1);
    }
    EXPECT_CONNECT(nobody, tp("ok/s"), "connected", 0);
    snprintf(p, sizeof p, "%s/link/new", T);
    EXPECT_BIND(nobody, p, -1, SOCKD_E_DENIED, "policy_denied", -1);
    snprintf(p, sizeof p, "/proc/self/root%s/x/new", T);
    EXPECT_BIND(nobody, p, -1, SOCKD_E_DENIED, "policy_denied", -1);
    EXPECT_INT(ino_of(tp("x/new")), 0, "ino_of(tp(\"x/new\"))");
    EXPECT_BIND(nobody, tp("ok/new"), -1, 0, "", 0);
    /* socket.attach of a connection whose peer bound the denied socket under a symlinked
     * spelling: the peer name reads T/link/s2, the socket is T/x/s2 */
    snprintf(p, sizeof p, "%s/link/s2", T);
    unix_bound(p, SOCK_STREAM, 0777);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    EXPECT_TRUE(strlen(p) < sizeof sun.sun_path, "strlen(p) < sizeof sun.sun_path");
    memcpy(sun.sun_path, p, strlen(p));
    EXPECT_INT(connect(cfd, (struct sockaddr *)&sun, sizeof sun), 0, "connect: %s",
               strerror(errno));
    json_t *r = NULL, *e = NULL;
    json_t *params = json_pack("{s:s}", "type", "unix");
    int rc = sockd_client_call_fd(nobody, "socket.attach", params, cfd, &r, &e, NULL, H_TIMEOUT_MS);
    json_decref(params);
    close(cfd);
    EXPECT_TRUE(rc == 1 && sockd_client_error_code(e) == SOCKD_E_DENIED, "%s", jd(r ? r : e));
    json_decref(e);
    sockd_client_close(nobody);
    h_daemon_stop(&D);
    if (var_run) {
        snprintf(p, sizeof p, "rm -rf '%s'", run);
        EXPECT_INT(system(p), 0, "system(p)");
    }
}

/* path opened for writing, mode 0600 (root's). */
static FILE *
fopen_0600(const char *path)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    EXPECT_TRUE(fd >= 0, "fd >= 0");
    FILE *f = fdopen(fd, "w");
    EXPECT_TRUE(f != NULL, "f");
    return f;
}

/* A self-signed certificate (PEM) into path, mode 0600 (root's). */
static void
write_cert(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    EXPECT_TRUE(k != NULL, "k");
    EXPECT_TRUE(x != NULL, "x");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"hfs", -1, -1, 0);
    X509_set_issuer_name(x, n);
    EXPECT_TRUE(X509_sign(x, k, EVP_sha256()) > 0, "X509_sign(x, k, EVP_sha256()) > 0");
    FILE *f = fopen_0600(path);
    EXPECT_TRUE(PEM_write_X509(f, x) == 1, "PEM_write_X509(f, x) == 1");
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* An empty CRL (PEM) of a new self-signed issuer into path, mode 0600 (root's). */
static void
write_crl(const char *path)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_CRL *crl = X509_CRL_new();
    X509_NAME *n = X509_NAME_new();
    ASN1_TIME *t = ASN1_TIME_new();
    EXPECT_TRUE(k != NULL && crl != NULL && n != NULL && t != NULL,
                "k != NULL && crl != NULL && n != NULL && t != NULL");
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"hfs", -1, -1, 0);
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, n);
    X509_gmtime_adj(t, 0);
    X509_CRL_set1_lastUpdate(crl, t);
    X509_gmtime_adj(t, 86400);
    X509_CRL_set1_nextUpdate(crl, t);
    EXPECT_TRUE(X509_CRL_sign(crl, k, EVP_sha256()) > 0, "X509_CRL_sign(crl, k, EVP_sha256()) > 0");
    FILE *f = fopen_0600(path);
    EXPECT_TRUE(PEM_write_X509_CRL(f, crl) == 1, "PEM_write_X509_CRL(f, crl) == 1");
    fclose(f);
    ASN1_TIME_free(t);
    X509_NAME_free(n);
    X509_CRL_free(crl);
    EVP_PKEY_free(k);
}

/*
 * A file param (ca_file, crl_file) names a root-only file (0600) that write makes: the root
 * daemon must open it as the client, so nobody gets EACCES naming the param and nothing is
 * loaded; root may still use the file.
 */
static void
fs_file_param_as_client(const char *param, void (*write)(const char *), const char *name)
{
    struct sockd_client *nobody, *root;
    json_t *e = NULL;

    tdir();
    write(tp(name));
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    root = h_client_auto(&D);
    EXPECT_INT(h_err(nobody, &e, "context.create", "{s:s}", param, tp(name)),
               SOCKD_E_INVALID_PARAMS, "context.create error code");
    json_t *data = json_object_get(e, "data");
    const char *d = json_string_value(json_object_get(data, "detail"));
    EXPECT_TRUE(d != NULL && strstr(d, strerror(EACCES)) != NULL, "%s", jd(e));
    EXPECT_TRUE(strcmp(json_string_value(json_object_get(data, "param")), param) == 0, "%s", jd(e));
    json_decref(e);
    json_decref(h_ok(root, "context.create", "{s:s}", param, tp(name)));
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

/*
 * Attack (item 12): ca_file names a root-only file (0600): the root daemon read it for a
 * nobody client, so its content was used (and a missing file and a secret one answered
 * differently). It must be opened as the client: EACCES, nothing loaded. Root may still use it.
 */
static void
test_fs_ca_file_as_client(void **state)
{
    (void)state;
    fs_file_param_as_client("ca_file", write_cert, "secret.pem");
}

/* Attack: crl_file names a root-only file: read as the client, by the same path as ca_file. */
static void
test_fs_crl_file_as_client(void **state)
{
    (void)state;
    fs_file_param_as_client("crl_file", write_crl, "secret.crl");
}

/*
 * Attack (item 5b): ca_file names a FIFO nobody ever writes: the daemon blocked in open/read
 * and froze for everyone. The attacker's call must be answered with an error at once, and
 * another client's ping is answered while the attacker's call is outstanding or after it.
 */
static void
test_fs_ca_file_fifo(void **state)
{
    struct sockd_client *nobody, *root;
    char line[300];

    (void)state;
    tdir();
    EXPECT_INT(mkfifo(tp("fifo"), 0666), 0, "mkfifo: %s", strerror(errno));
    EXPECT_INT(chmod(tp("fifo"), 0666), 0, "chmod: %s", strerror(errno));
    h_daemon_start(&D, NULL);
    nobody = h_client_nobody(&D);
    root = h_client_auto(&D);
    json_decref(h_ok(root, "daemon.ping", NULL));
    snprintf(line, sizeof line,
             "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"context.create\","
             "\"params\":{\"ca_file\":\"%s\"}}\n",
             tp("fifo"));
    h_send_raw(nobody, line);
    json_decref(h_ok(root, "daemon.ping", NULL)); /* the loop is not stuck in the FIFO */
    json_t *resp = h_read(nobody, H_TIMEOUT_MS);
    json_t *err = json_object_get(resp, "error");
    EXPECT_INT(json_integer_value(json_object_get(err, "code")), SOCKD_E_INVALID_PARAMS, "%s",
               jd(resp));
    const char *d = json_string_value(json_object_get(json_object_get(err, "data"), "detail"));
    EXPECT_TRUE(d != NULL && strstr(d, "not a regular file") != NULL, "%s", jd(resp));
    json_decref(resp);
    sockd_client_close(nobody);
    h_daemon_stop(&D); /* a clean exit: nothing leaked or broken on the way */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_fs_bind_needs_client_rights, teardown),
        cmocka_unit_test_teardown(test_fs_connect_needs_client_rights, teardown),
        cmocka_unit_test_teardown(test_fs_bind_keeps_live_and_foreign_files, teardown),
        cmocka_unit_test_teardown(test_fs_mode_not_through_symlink, teardown),
        cmocka_unit_test_teardown(test_fs_unlink_only_own_file, teardown),
        cmocka_unit_test_teardown(test_fs_policy_on_real_path, teardown),
        cmocka_unit_test_teardown(test_fs_ca_file_as_client, teardown),
        cmocka_unit_test_teardown(test_fs_ca_file_fifo, teardown),
        cmocka_unit_test_teardown(test_fs_crl_file_as_client, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
