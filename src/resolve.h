/* Non-blocking host name resolution with c-ares, driven by the daemon's libev loop. */
#ifndef SOCKD_RESOLVE_H
#define SOCKD_RESOLVE_H

#include <sys/socket.h>
#include <ev.h>

struct conf;
struct resolve_req;

/* The answer: addresses in the order a connect should try them. */
struct resolve_result {
    int count;
    struct sockaddr_storage addrs[16]; /* port already set */
    socklen_t lens[16];
};

/*
 * Called once per resolve_start, unless cancelled: status 0 with res, or -1 with a
 * human-readable reason in why, always "name 'x' did not resolve (...)": e.g. "(NXDOMAIN)",
 * "(lookup timed out after 5000 ms)". res and why live only for the duration of the call; the
 * handle is dead once the callback has started (resolve_cancel on it inside the callback is a
 * harmless no-op, afterwards it is a use after free).
 */
typedef void (*resolve_cb)(void *arg, int status, const struct resolve_result *res,
                           const char *why);

/*
 * Set up the channel from conf (resolver servers "ADDR[:PORT]", default /etc/resolv.conf;
 * /etc/hosts always honoured; resolve-timeout). Called at start and on reload: lookups in flight
 * then finish on the old settings, new ones use the new; on failure the old settings stay.
 * Returns 0, or -1 with *cause (static text, valid until the next resolve_init).
 */
int resolve_init(struct ev_loop *loop, const struct conf *conf, const char **cause);
/* Tear the channel down; pending lookups are cancelled without callbacks. */
void resolve_shutdown(void);
/*
 * Look up host (a name, not a literal) for port. family: AF_UNSPEC (both; IPv6 and IPv4 answers
 * interleaved, IPv6 first), AF_INET or AF_INET6. timeout in seconds: the lookup fails after the
 * smaller of it and resolve-timeout (<= 0: resolve-timeout). Returns a request handle (NULL and
 * no callback on ENOMEM, or before resolve_init). The callback never runs from inside
 * resolve_start. An IP literal is answered as itself (still through the callback).
 */
struct resolve_req *resolve_start(const char *host, int port, int family, double timeout,
                                  resolve_cb cb, void *arg);
/* Cancel: the callback will not be called. Safe from inside other callbacks. */
void resolve_cancel(struct resolve_req *r);
/* Lookups in flight (for stats and tests). */
int resolve_pending(void);
/*
 * Check one resolver directive word, "ADDR[:PORT]" ("192.0.2.53", "192.0.2.53:5353", "::1",
 * "[::1]:53"), for the config checker. Returns 0, or -1 with *cause (static text).
 */
int resolve_check_server(const char *text, const char **cause);

#endif
