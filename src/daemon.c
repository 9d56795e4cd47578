#include "config.h"

#include <string.h>

#include "ctl.h"
#include "daemon.h"
#include "sock.h"

struct daemon sockd;

/* Before the loop blocks: write what clients have queued, then free what closed this turn. */
static void
daemon_prepare_cb(EV_P_ ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    sock_flush_all(); /* sends of this turn first: their socket.sent go out with the rest */
    ctl_flush_all();
    sock_reap();
    ctl_reap();
}

void
daemon_init(struct ev_loop *loop)
{
    memset(&sockd, 0, sizeof sockd);
    sockd.loop = loop;
    conf_defaults(&sockd.conf);
    sockd.started = ev_now(loop);
    ev_prepare_init(&sockd.prepare, daemon_prepare_cb);
    ev_prepare_start(loop, &sockd.prepare);
    ev_unref(loop); /* the prepare watcher alone must not keep the loop alive */
}

uint64_t
daemon_handle(void)
{
    return ++sockd.next_handle;
}

uint64_t
daemon_uptime_ms(void)
{
    ev_now_update(sockd.loop);
    return (uint64_t)((ev_now(sockd.loop) - sockd.started) * 1000.0);
}
