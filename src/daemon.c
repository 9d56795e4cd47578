#include "config.h"

#include <string.h>

#include "daemon.h"

struct daemon sockd;

void
daemon_init(struct ev_loop *loop)
{
    memset(&sockd, 0, sizeof sockd);
    sockd.loop = loop;
    conf_defaults(&sockd.conf);
    sockd.started = ev_now(loop);
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
