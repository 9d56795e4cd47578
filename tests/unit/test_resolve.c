/*
 * Unit tests of the resolver (src/resolve.c) against the test's own DNS server (dnsd) on
 * 127.0.0.1: no query ever goes to the machine's name servers.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <ev.h>

#include "../integration/dnsd.h"
#include "conf.h"
#include "resolve.h"

#define PORT 8443

/* What one lookup's callback saw. */
struct outcome {
    int called;
    int status;
    struct resolve_result res;
    char why[512];
    double at;                  /* ev_time() of the callback */
    struct resolve_req *cancel; /* cancel this one from inside the callback */
};

static struct dnsd dns; /* big: keep it off the stack */
static struct dnsd dns2;
static struct ev_loop *loop;
static struct conf cf;
static int in_start;    /* set around resolve_start: callbacks must not run then */
static int outstanding; /* callbacks still expected before the loop stops */
static int guard_fired;

static void
on_guard(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)w, (void)revents;
    guard_fired = 1;
    ev_break(l, EVBREAK_ALL);
}

static void
on_done(void *arg, int status, const struct resolve_result *res, const char *why)
{
    struct outcome *o = arg;
    assert_false(in_start);
    o->called++;
    o->status = status;
    o->at = ev_time();
    if (status == 0) {
        assert_non_null(res);
        o->res = *res;
    } else {
        assert_non_null(why);
        snprintf(o->why, sizeof(o->why), "%s", why);
    }
    if (o->cancel) {
        resolve_cancel(o->cancel);
        o->cancel = NULL;
    }
    if (--outstanding == 0)
        ev_break(loop, EVBREAK_ALL);
}

/* Run the loop until n more callbacks came or max seconds passed; returns 1 if all came. */
static int
run_for(int n, double max)
{
    ev_timer guard;
    outstanding = n;
    guard_fired = 0;
    ev_timer_init(&guard, on_guard, max, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    return outstanding <= 0 && !guard_fired;
}

static struct resolve_req *
start(const char *host, int family, double timeout, struct outcome *o)
{
    struct resolve_req *r;
    in_start = 1;
    r = resolve_start(host, PORT, family, timeout, on_done, o);
    in_start = 0;
    assert_non_null(r);
    assert_int_equal(o->called, 0);
    return r;
}

/* The text form of result address i, and checks the port is set. */
static const char *
addr_at(const struct resolve_result *res, int i)
{
    static char buf[INET6_ADDRSTRLEN];
    const struct sockaddr_storage *ss = &res->addrs[i];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        assert_int_equal(res->lens[i], sizeof(*sin));
        assert_int_equal(ntohs(sin->sin_port), PORT);
        inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        assert_int_equal(ss->ss_family, AF_INET6);
        assert_int_equal(res->lens[i], sizeof(*sin6));
        assert_int_equal(ntohs(sin6->sin6_port), PORT);
        inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
    }
    return buf;
}

/* Point a conf at server d with the given resolve-timeout. */
static void
conf_for(struct conf *c, const struct dnsd *d, unsigned timeout_ms)
{
    char word[64];
    conf_free(c);
    conf_defaults(c);
    snprintf(word, sizeof(word), "127.0.0.1:%u", d->port);
    c->resolvers[0] = strdup(word);
    c->nresolvers = 1;
    c->resolve_timeout_ms = timeout_ms;
}

static int
setup(void **state)
{
    const char *cause = NULL;
    (void)state;
    loop = ev_default_loop(0);
    if (dnsd_start(&dns) < 0)
        return -1;
    dnsd_add_a(&dns, "v4.test", "192.0.2.1");
    dnsd_add_a(&dns, "v4.test", "192.0.2.2");
    dnsd_add_aaaa(&dns, "v6.test", "2001:db8::1");
    dnsd_add_a(&dns, "dual.test", "192.0.2.10");
    dnsd_add_a(&dns, "dual.test", "192.0.2.11");
    dnsd_add_a(&dns, "dual.test", "192.0.2.10"); /* a duplicate */
    dnsd_add_a(&dns, "dual.test", "192.0.2.12");
    dnsd_add_aaaa(&dns, "dual.test", "2001:db8::10");
    dnsd_add_aaaa(&dns, "dual.test", "2001:db8::11");
    dnsd_set_rcode(&dns, "nx.test", DNSD_NXDOMAIN);
    dnsd_set_rcode(&dns, "fail.test", DNSD_SERVFAIL);
    dnsd_add_a(&dns, "slow.test", "192.0.2.20");
    dnsd_set_delay(&dns, "slow.test", 3000);
    dnsd_add_a(&dns, "lazy.test", "192.0.2.21");
    dnsd_set_delay(&dns, "lazy.test", 250);
    for (int i = 0; i < 20; i++) {
        char a[32];
        snprintf(a, sizeof(a), "198.51.100.%d", i + 1);
        dnsd_add_a(&dns, "many.test", a);
        snprintf(a, sizeof(a), "2001:db8::%x", i + 1);
        dnsd_add_aaaa(&dns, "many.test", a);
    }
    memset(&cf, 0, sizeof(cf));
    conf_defaults(&cf);
    conf_for(&cf, &dns, 2000);
    if (resolve_init(loop, &cf, &cause) < 0) {
        fprintf(stderr, "resolve_init: %s\n", cause);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    resolve_shutdown();
    assert_int_equal(resolve_pending(), 0);
    dnsd_stop(&dns);
    conf_free(&cf);
    return 0;
}

static void
test_a_only(void **state)
{
    struct outcome o = {0};
    (void)state;
    start("v4.test", AF_UNSPEC, 0, &o);
    assert_int_equal(resolve_pending(), 1);
    assert_true(run_for(1, 5));
    assert_int_equal(o.called, 1);
    assert_int_equal(o.status, 0);
    assert_int_equal(o.res.count, 2);
    assert_string_equal(addr_at(&o.res, 0), "192.0.2.1");
    assert_string_equal(addr_at(&o.res, 1), "192.0.2.2");
    assert_int_equal(resolve_pending(), 0);
}

static void
test_aaaa_only(void **state)
{
    struct outcome o = {0};
    (void)state;
    start("v6.test", AF_UNSPEC, 0, &o);
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, 0);
    assert_int_equal(o.res.count, 1);
    assert_string_equal(addr_at(&o.res, 0), "2001:db8::1");
}

/* Both families: IPv6 first, interleaved, the duplicate A dropped. */
static void
test_both_interleaved(void **state)
{
    struct outcome o = {0};
    const char *want[] = {"2001:db8::10", "192.0.2.10", "2001:db8::11", "192.0.2.11", "192.0.2.12"};
    (void)state;
    start("DUAL.test.", AF_UNSPEC, 0, &o); /* case and a trailing dot don't matter */
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, 0);
    assert_int_equal(o.res.count, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(addr_at(&o.res, i), want[i]);
}

/* Asking for one family returns only that family; a family with no records is an error. */
static void
test_family(void **state)
{
    struct outcome o4 = {0}, o6 = {0}, none = {0};
    (void)state;
    start("dual.test", AF_INET, 0, &o4);
    start("dual.test", AF_INET6, 0, &o6);
    start("v4.test", AF_INET6, 0, &none);
    assert_true(run_for(3, 5));
    assert_int_equal(o4.status, 0);
    assert_int_equal(o4.res.count, 3);
    for (int i = 0; i < o4.res.count; i++)
        assert_int_equal(o4.res.addrs[i].ss_family, AF_INET);
    assert_int_equal(o6.status, 0);
    assert_int_equal(o6.res.count, 2);
    for (int i = 0; i < o6.res.count; i++)
        assert_int_equal(o6.res.addrs[i].ss_family, AF_INET6);
    assert_int_equal(none.status, -1);
    assert_non_null(strstr(none.why, "did not resolve"));
}

/* At most 16 answers, still interleaved. */
static void
test_many(void **state)
{
    struct outcome o = {0};
    (void)state;
    start("many.test", AF_UNSPEC, 0, &o);
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, 0);
    assert_int_equal(o.res.count, 16);
    for (int i = 0; i < 16; i++) {
        addr_at(&o.res, i);
        assert_int_equal(o.res.addrs[i].ss_family, i % 2 ? AF_INET : AF_INET6);
    }
}

static void
test_nxdomain(void **state)
{
    struct outcome o = {0}, unknown = {0}, fail = {0};
    (void)state;
    start("nx.test", AF_UNSPEC, 0, &o);
    start("not-in-the-table.test", AF_INET, 0, &unknown);
    start("fail.test", AF_UNSPEC, 0, &fail);
    assert_true(run_for(3, 5));
    assert_int_equal(o.status, -1);
    assert_string_equal(o.why, "name 'nx.test' did not resolve (NXDOMAIN)");
    assert_int_equal(unknown.status, -1);
    assert_non_null(strstr(unknown.why, "NXDOMAIN"));
    assert_int_equal(fail.status, -1);
    assert_non_null(strstr(fail.why, "did not resolve"));
    assert_true(dnsd_name_queries(&dns, "nx.test") >= 2); /* A and AAAA */
}

/* A slow answer past the lookup's timeout fails with "timed out", on time. */
static void
test_slow_timeout(void **state)
{
    struct outcome o = {0};
    double t0 = ev_time();
    (void)state;
    start("slow.test", AF_UNSPEC, 0.3, &o);
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, -1);
    assert_non_null(strstr(o.why, "did not resolve"));
    assert_non_null(strstr(o.why, "timed out"));
    assert_true(o.at - t0 >= 0.25);
    assert_true(o.at - t0 < 1.0);
    assert_int_equal(resolve_pending(), 0);
}

/* With no timeout given, the resolve-timeout directive applies; a longer one is capped by it. */
static void
test_resolve_timeout_directive(void **state)
{
    struct outcome o = {0}, capped = {0};
    const char *cause;
    double t0;
    (void)state;
    conf_for(&cf, &dns, 400);
    assert_int_equal(resolve_init(loop, &cf, &cause), 0);
    t0 = ev_time();
    start("slow.test", AF_UNSPEC, 0, &o);
    start("slow.test", AF_INET, 30, &capped);
    assert_true(run_for(2, 5));
    assert_int_equal(o.status, -1);
    assert_non_null(strstr(o.why, "timed out"));
    assert_int_equal(capped.status, -1);
    assert_true(o.at - t0 < 1.5);
    assert_true(capped.at - t0 < 1.5);
}

/* A slow answer inside the timeout is fine, and other lookups go on meanwhile. */
static void
test_concurrent(void **state)
{
    struct outcome lazy = {0}, quick = {0}, quick2 = {0};
    (void)state;
    start("lazy.test", AF_INET, 0, &lazy);
    start("v4.test", AF_UNSPEC, 0, &quick);
    start("v6.test", AF_UNSPEC, 0, &quick2);
    assert_int_equal(resolve_pending(), 3);
    assert_true(run_for(3, 5));
    assert_int_equal(lazy.status, 0);
    assert_string_equal(addr_at(&lazy.res, 0), "192.0.2.21");
    assert_int_equal(quick.status, 0);
    assert_int_equal(quick2.status, 0);
    assert_true(quick.at < lazy.at);
    assert_true(quick2.at < lazy.at);
}

static void
no_callback(void *arg, int status, const struct resolve_result *res, const char *why)
{
    (void)arg, (void)status, (void)res, (void)why;
    fail_msg("a cancelled lookup's callback ran");
}

/* Cancelled before the answer: no callback, ever; also for answers already queued. */
static void
test_cancel(void **state)
{
    struct resolve_req *lazy, *hosts, *literal;
    struct outcome after = {0};
    (void)state;
    lazy = resolve_start("lazy.test", PORT, AF_UNSPEC, 0, no_callback, NULL);
    hosts = resolve_start("localhost", PORT, AF_UNSPEC, 0, no_callback, NULL);
    literal = resolve_start("192.0.2.99", PORT, AF_UNSPEC, 0, no_callback, NULL);
    assert_non_null(lazy);
    assert_non_null(hosts);
    assert_non_null(literal);
    assert_int_equal(resolve_pending(), 3);
    resolve_cancel(lazy);
    resolve_cancel(hosts);
    resolve_cancel(literal);
    assert_int_equal(resolve_pending(), 0);
    run_for(1, 0.6); /* nothing should come; let lazy.test's answer arrive */
    assert_true(guard_fired);
    /* The channel still works. */
    start("v4.test", AF_UNSPEC, 0, &after);
    assert_true(run_for(1, 5));
    assert_int_equal(after.status, 0);
}

/* One callback cancels another lookup, answered in the same batch or still in flight. */
static void
test_cancel_from_callback(void **state)
{
    struct outcome a = {0}, b = {0}, c = {0}, d = {0};
    struct resolve_req *rb, *rd;
    (void)state;
    start("v4.test", AF_UNSPEC, 0, &a);
    rb = start("lazy.test", AF_UNSPEC, 0, &b);
    a.cancel = rb;
    /* c and d come from /etc/hosts at once, so both are queued together. */
    start("localhost", AF_UNSPEC, 0, &c);
    rd = start("localhost", AF_UNSPEC, 0, &d);
    c.cancel = rd;
    assert_true(run_for(2, 5));
    run_for(1, 0.6);
    assert_int_equal(a.called, 1);
    assert_int_equal(b.called, 0);
    assert_int_equal(c.called, 1);
    assert_int_equal(d.called, 0);
    assert_int_equal(resolve_pending(), 0);
}

/* /etc/hosts: localhost (and any other name listed there) never reaches the name server. */
static void
test_hosts_file(void **state)
{
    struct outcome o = {0}, other = {0};
    char line[512], name[256] = "", addr[64] = "";
    unsigned before = dnsd_queries(&dns);
    FILE *f = fopen("/etc/hosts", "r");
    (void)state;
    /* Find a name in /etc/hosts other than localhost, to check the file itself is read. */
    while (f && !name[0] && fgets(line, sizeof(line), f)) {
        char a[64], n[256];
        unsigned char bytes[16];
        if (line[0] == '#' || sscanf(line, "%63s %255s", a, n) != 2)
            continue;
        if (strchr(n, '#') || strncmp(n, "localhost", 9) == 0 || inet_pton(AF_INET, n, bytes) == 1)
            continue;
        if (inet_pton(AF_INET, a, bytes) == 1 || inet_pton(AF_INET6, a, bytes) == 1) {
            snprintf(name, sizeof(name), "%s", n);
            snprintf(addr, sizeof(addr), "%s", a);
        }
    }
    if (f)
        fclose(f);
    start("localhost", AF_UNSPEC, 0, &o);
    if (name[0])
        start(name, AF_UNSPEC, 0, &other);
    assert_true(run_for(name[0] ? 2 : 1, 5));
    assert_int_equal(o.status, 0);
    assert_true(o.res.count >= 1);
    for (int i = 0; i < o.res.count; i++) {
        const char *s = addr_at(&o.res, i);
        assert_true(strcmp(s, "::1") == 0 || strncmp(s, "127.", 4) == 0);
    }
    if (name[0]) {
        int found = 0;
        assert_int_equal(other.status, 0);
        for (int i = 0; i < other.res.count; i++)
            found |= strcmp(addr_at(&other.res, i), addr) == 0;
        assert_true(found);
    }
    assert_int_equal(dnsd_queries(&dns), before);
}

/* IP literals are not for resolve_start, but are answered as themselves, later. */
static void
test_literal(void **state)
{
    struct outcome v4 = {0}, v6 = {0}, wrong = {0};
    unsigned before = dnsd_queries(&dns);
    (void)state;
    start("192.0.2.7", AF_UNSPEC, 0, &v4);
    start("2001:db8::7", AF_INET6, 0, &v6);
    start("192.0.2.7", AF_INET6, 0, &wrong);
    assert_true(run_for(3, 5));
    assert_int_equal(v4.status, 0);
    assert_int_equal(v4.res.count, 1);
    assert_string_equal(addr_at(&v4.res, 0), "192.0.2.7");
    assert_int_equal(v6.status, 0);
    assert_string_equal(addr_at(&v6.res, 0), "2001:db8::7");
    assert_int_equal(wrong.status, -1);
    assert_int_equal(dnsd_queries(&dns), before);
}

/* Bad input fails through the callback, not at once. */
static void
test_bad_name(void **state)
{
    struct outcome empty = {0}, longname = {0};
    char big[300];
    (void)state;
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    start("", AF_UNSPEC, 0, &empty);
    start(big, AF_UNSPEC, 0, &longname);
    assert_true(run_for(2, 5));
    assert_int_equal(empty.status, -1);
    assert_int_equal(longname.status, -1);
    assert_non_null(strstr(longname.why, "did not resolve"));
    assert_true(strlen(longname.why) < 200); /* the name is shortened in the message */
}

/* Shutting down with lookups in flight and queued: no callbacks, nothing leaked. */
static void
test_shutdown_pending(void **state)
{
    const char *cause;
    (void)state;
    assert_non_null(resolve_start("slow.test", PORT, AF_UNSPEC, 0, no_callback, NULL));
    assert_non_null(resolve_start("localhost", PORT, AF_UNSPEC, 0, no_callback, NULL));
    assert_non_null(resolve_start("192.0.2.1", PORT, AF_UNSPEC, 0, no_callback, NULL));
    resolve_shutdown();
    assert_int_equal(resolve_pending(), 0);
    assert_null(resolve_start("v4.test", PORT, AF_UNSPEC, 0, no_callback, NULL));
    run_for(1, 0.2);
    assert_int_equal(resolve_init(loop, &cf, &cause), 0);
}

/* Shut down and set up again: works as new. */
static void
test_reinit(void **state)
{
    struct outcome o = {0};
    const char *cause = NULL;
    (void)state;
    resolve_shutdown();
    resolve_shutdown(); /* twice is harmless */
    assert_int_equal(resolve_init(loop, &cf, &cause), 0);
    start("dual.test", AF_UNSPEC, 0, &o);
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, 0);
    assert_int_equal(o.res.count, 5);
}

/* A reload while a lookup is in flight: it ends on the old server, new ones use the new. */
static void
test_reload(void **state)
{
    struct outcome old = {0}, fresh = {0};
    struct conf c2;
    const char *cause = NULL;
    (void)state;
    assert_int_equal(dnsd_start(&dns2), 0);
    dnsd_add_a(&dns2, "v4.test", "203.0.113.1");
    start("lazy.test", AF_INET, 0, &old);
    memset(&c2, 0, sizeof(c2));
    conf_defaults(&c2);
    conf_for(&c2, &dns2, 2000);
    assert_int_equal(resolve_init(loop, &c2, &cause), 0);
    start("v4.test", AF_INET, 0, &fresh);
    assert_true(run_for(2, 5));
    assert_int_equal(old.status, 0);
    assert_string_equal(addr_at(&old.res, 0), "192.0.2.21");
    assert_int_equal(fresh.status, 0);
    assert_string_equal(addr_at(&fresh.res, 0), "203.0.113.1");
    assert_int_equal(dnsd_name_queries(&dns, "v4.test"), 0);
    /* A bad reload keeps the settings in force. */
    free(c2.resolvers[0]);
    c2.resolvers[0] = strdup("example.com:53");
    assert_int_equal(resolve_init(loop, &c2, &cause), -1);
    assert_non_null(strstr(cause, "example.com"));
    memset(&fresh, 0, sizeof(fresh));
    start("v4.test", AF_INET, 0, &fresh);
    assert_true(run_for(1, 5));
    assert_string_equal(addr_at(&fresh.res, 0), "203.0.113.1");
    resolve_shutdown();
    dnsd_stop(&dns2);
    conf_free(&c2);
}

/* No resolver directive: /etc/resolv.conf is read, but localhost still never goes out. */
static void
test_default_servers(void **state)
{
    struct outcome o = {0};
    struct conf c2;
    const char *cause = NULL;
    (void)state;
    resolve_shutdown();
    memset(&c2, 0, sizeof(c2));
    conf_defaults(&c2);
    c2.nresolvers = 0;
    assert_int_equal(resolve_init(loop, &c2, &cause), 0);
    start("localhost", AF_UNSPEC, 0, &o);
    assert_true(run_for(1, 5));
    assert_int_equal(o.status, 0);
    assert_true(o.res.count >= 1);
    resolve_shutdown();
    conf_free(&c2);
}

/* The resolver directive's address forms. */
static void
test_server_syntax(void **state)
{
    const char *cause = NULL;
    const char *good[] = {"127.0.0.1", "127.0.0.1:5353", "[::1]:53", "[::1]", "::1"};
    const char *bad[] = {
        "",     "127.0.0.1:",      "127.0.0.1:0", "127.0.0.1:65536", "[::1]:x",
        "[::1", "host.example:53", "1.2.3:53",    "[127.0.0.1]:53",  "127.0.0.1:53x"};
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(resolve_check_server(good[i], &cause), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cause = NULL;
        assert_int_equal(resolve_check_server(bad[i], &cause), -1);
        assert_non_null(cause);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aaaa_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_both_interleaved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_family, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nxdomain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resolve_timeout_directive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_from_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hosts_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_literal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reinit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_default_servers, setup, teardown),
        cmocka_unit_test(test_server_syntax),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
