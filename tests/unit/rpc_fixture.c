/*
 * The fake-client fixture shared by the in-process JSON-RPC suites (see rpc_fixture.h).
 */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "buf.h"
#include "ctl.h"
#include "daemon.h"
#include "ident.h"
#include "log.h"
#include "sock.h"
#include "tls.h"

#include "rpc_fixture.h"

static void
never_io_cb(EV_P_ ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    fail_msg("a client watcher ran, but these tests never run the loop");
}

static void
never_idle_cb(EV_P_ ev_idle *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
    fail_msg("a client idle watcher ran, but these tests never run the loop");
}

int
fx_group_setup(void **state)
{
    (void)state;
    log_set_level(LOG_LVL_ERROR);
    daemon_init(ev_default_loop(0));
    return 0;
}

int
fx_group_teardown(void **state)
{
    (void)state;
    sock_reap();
    ctl_reap();
    idmap_free(&sockd.socks);
    conf_free(&sockd.conf);
    ev_loop_destroy(sockd.loop);
    return 0;
}

void
fx_open(struct fx *f)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    struct client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    c->owner.id = ++sockd.next_client;
    c->fd = sv[0];
    c->pid = getpid();
    c->uid = getuid();
    c->gid = getgid();
    c->owner.ident = ident_new(c->uid, c->gid, c->pid, NULL, 0);
    assert_non_null(c->owner.ident);
    ctl_own(c);
    ev_io_init(&c->rio, never_io_cb, sv[0], EV_READ);
    ev_io_init(&c->wio, never_io_cb, sv[0], EV_WRITE);
    ev_idle_init(&c->more, never_idle_cb);
    c->rio.data = c->wio.data = c->more.data = c;
    sockd.nclients++;
    f->c = c;
    f->peer = sv[1];
}

void
fx_close(struct fx *f)
{
    struct client *c = f->c;
    if (c == NULL)
        return;
    ctl_flush_all(); /* takes c off the dirty list */
    while (c->owner.socks != NULL)
        sock_close(c->owner.socks, NULL, 0, NULL, NULL);
    sock_reap();
    tlsctx_owner_gone(&c->owner);
    assert_null(c->owner.ctxs);
    ev_io_stop(sockd.loop, &c->wio);
    buf_free(&c->in);
    buf_free(&c->out);
    buf_free(&c->held);
    close(c->fd);
    close(f->peer);
    sockd.nclients--;
    ident_unref(c->owner.ident);
    free(c);
    f->c = NULL;
}

int
fx_setup_two(void **state)
{
    struct fx *f = calloc(2, sizeof *f);
    if (f == NULL)
        return -1;
    fx_open(&f[0]);
    fx_open(&f[1]);
    *state = f;
    return 0;
}

int
fx_teardown_two(void **state)
{
    struct fx *f = *state;
    fx_close(&f[0]);
    fx_close(&f[1]);
    free(f);
    return 0;
}

char *
fx_drain(struct fx *f, size_t *lenp)
{
    size_t cap = 65536, len = 0;
    char *p = malloc(cap + 1);
    assert_non_null(p);
    ctl_flush_all();
    assert_int_equal(buf_len(&f->c->out), 0);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            p = realloc(p, cap + 1);
            assert_non_null(p);
        }
        ssize_t n = recv(f->peer, p + len, cap - len, MSG_DONTWAIT);
        if (n < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            break;
        }
        assert_true(n > 0);
        len += (size_t)n;
    }
    p[len] = '\0';
    *lenp = len;
    return p;
}
