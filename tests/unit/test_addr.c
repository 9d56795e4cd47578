/* Unit tests of address parsing and formatting (src/addr.c). */
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
#include <sys/un.h>

#include <cmocka.h>

#include "addr.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Expected outcomes of addr_parse_ip. */
enum want {
    W_ERR,  /* -1 with a cause */
    W_V4,   /* ADDR_IP, AF_INET */
    W_V6,   /* ADDR_IP, AF_INET6 */
    W_NAME, /* ADDR_NAME */
};

struct ip_case {
    const char *text;
    int port_param;
    enum want want;
    const char *host; /* expected host part */
    int port;         /* expected port (-1: none) */
};

static const struct ip_case ip_cases[] = {
    /* IPv4 */
    {"1.2.3.4:80", -1, W_V4, "1.2.3.4", 80},
    {"1.2.3.4:80", 80, W_V4, "1.2.3.4", 80}, /* same port twice is fine */
    {"1.2.3.4:80", 81, W_ERR, NULL, 0},      /* conflicting ports */
    {"1.2.3.4:80", 0, W_ERR, NULL, 0},
    {"1.2.3.4", -1, W_V4, "1.2.3.4", -1},
    {"1.2.3.4", 8080, W_V4, "1.2.3.4", 8080},
    {"1.2.3.4", 0, W_V4, "1.2.3.4", 0},
    {"0.0.0.0:0", -1, W_V4, "0.0.0.0", 0},
    {"255.255.255.255:65535", -1, W_V4, "255.255.255.255", 65535},
    {"127.0.0.1:1", -1, W_V4, "127.0.0.1", 1},
    /* ports */
    {"1.2.3.4:0", -1, W_V4, "1.2.3.4", 0},
    {"1.2.3.4:65535", -1, W_V4, "1.2.3.4", 65535},
    {"1.2.3.4:65536", -1, W_ERR, NULL, 0},
    {"1.2.3.4:99999", -1, W_ERR, NULL, 0},
    {"1.2.3.4:123456", -1, W_ERR, NULL, 0},
    {"1.2.3.4:-1", -1, W_ERR, NULL, 0},
    {"1.2.3.4:", -1, W_ERR, NULL, 0},
    {"1.2.3.4:", 80, W_ERR, NULL, 0},
    {"1.2.3.4:8a", -1, W_ERR, NULL, 0},
    {"1.2.3.4: 80", -1, W_ERR, NULL, 0},
    {"1.2.3.4:+80", -1, W_ERR, NULL, 0},
    {":80", -1, W_ERR, NULL, 0},
    /* IPv6 */
    {"[::1]:443", -1, W_V6, "::1", 443},
    {"[::1]:443", 443, W_V6, "::1", 443},
    {"[::1]:443", 80, W_ERR, NULL, 0},
    {"[::1]", -1, W_V6, "::1", -1},
    {"[::1]", 53, W_V6, "::1", 53},
    {"::1", -1, W_V6, "::1", -1},
    {"::1", 53, W_V6, "::1", 53},
    {"::", -1, W_V6, "::", -1},
    {"[2001:db8::1]:65535", -1, W_V6, "2001:db8::1", 65535},
    {"[2001:db8::1]:65536", -1, W_ERR, NULL, 0},
    {"[2001:db8::1]:", -1, W_ERR, NULL, 0},
    {"[2001:db8::1]:-1", -1, W_ERR, NULL, 0},
    {"2001:db8::1", -1, W_V6, "2001:db8::1", -1},
    {"[::ffff:1.2.3.4]:80", -1, W_V6, "::ffff:1.2.3.4", 80},
    {"[::1", -1, W_ERR, NULL, 0},
    {"[::1]x", -1, W_ERR, NULL, 0},
    {"[::1]:80x", -1, W_ERR, NULL, 0},
    {"[]:80", -1, W_ERR, NULL, 0},
    {"[]", -1, W_ERR, NULL, 0},
    {"[1.2.3.4]:80", -1, W_ERR, NULL, 0}, /* brackets are for IPv6 only */
    {"[1.2.3.4]", -1, W_ERR, NULL, 0},
    {"[example.com]:80", -1, W_ERR, NULL, 0},
    {"[::g]:80", -1, W_ERR, NULL, 0},
    {"1:2:3:4:5:6:7:8:9", -1, W_ERR, NULL, 0},
    /* numeric but not a valid address: never a host name (RFC 1123 2.1) */
    {"300.1.1.1:80", -1, W_ERR, NULL, 0},
    {"256.0.0.1", -1, W_ERR, NULL, 0},
    {"127.1", -1, W_ERR, NULL, 0},
    {"127.1:80", -1, W_ERR, NULL, 0},
    {"0x7f.1:80", -1, W_ERR, NULL, 0},
    {"0x7f000001:80", -1, W_ERR, NULL, 0},
    {"0X7F", -1, W_ERR, NULL, 0},
    {"0x", -1, W_ERR, NULL, 0},
    {"1.2.3", -1, W_ERR, NULL, 0},
    {"01.02.03.04", -1, W_ERR, NULL, 0},
    {"1.2.3.4.", -1, W_ERR, NULL, 0},
    {"2130706433:80", -1, W_ERR, NULL, 0},
    {"a.b.1", -1, W_ERR, NULL, 0},
    /* names may hold digits and start with them; only the last label may not be a number */
    {"1a.example:80", -1, W_NAME, "1a.example", 80},
    {"host1", -1, W_NAME, "host1", -1},
    {"127.0.0.1.example", -1, W_NAME, "127.0.0.1.example", -1},
    {"0x7f.example", -1, W_NAME, "0x7f.example", -1},
    {"x.0xg", -1, W_NAME, "x.0xg", -1},
    {"example.com.", -1, W_NAME, "example.com.", -1},
    /* names */
    {"host.example:80", -1, W_NAME, "host.example", 80},
    {"host.example", -1, W_NAME, "host.example", -1},
    {"host.example", 443, W_NAME, "host.example", 443},
    {"host.example:443", 80, W_ERR, NULL, 0},
    {"localhost:0", -1, W_NAME, "localhost", 0},
    {"a-b.c-d.example:1", -1, W_NAME, "a-b.c-d.example", 1},
    {"A.Example.COM:80", -1, W_NAME, "A.Example.COM", 80},
    {"a..b", -1, W_ERR, NULL, 0},
    {"a..b:80", -1, W_ERR, NULL, 0},
    {".example", -1, W_ERR, NULL, 0},
    {"-", -1, W_ERR, NULL, 0},
    {"-:80", -1, W_ERR, NULL, 0},
    {"-host.example", -1, W_ERR, NULL, 0},
    {"host-.example", -1, W_ERR, NULL, 0},
    {"a b", -1, W_ERR, NULL, 0},
    {"a b:80", -1, W_ERR, NULL, 0},
    {"a/b:80", -1, W_ERR, NULL, 0},
    {"a@b:80", -1, W_ERR, NULL, 0},
    {"h\xc3\xa9llo:80", -1, W_ERR, NULL, 0},
    {"a:b:c", -1, W_ERR, NULL, 0},
    /* empty */
    {"", -1, W_ERR, NULL, 0},
    {"", 80, W_ERR, NULL, 0},
};

static void
check_ip_case(const struct ip_case *tc)
{
    struct addr a;
    const char *cause = NULL;
    int r = addr_parse_ip(tc->text, tc->port_param, &a, &cause);

    if (tc->want == W_ERR) {
        if (r != -1)
            fail_msg("\"%s\" (port %d): accepted, expected an error", tc->text, tc->port_param);
        assert_non_null(cause);
        assert_true(strlen(cause) > 0);
        return;
    }
    if (r != 0)
        fail_msg("\"%s\" (port %d): refused (%s)", tc->text, tc->port_param,
                 cause ? cause : "no cause");
    assert_string_equal(a.host, tc->host);
    assert_int_equal(a.port, tc->port);
    uint16_t netport = htons((uint16_t)(tc->port < 0 ? 0 : tc->port));
    switch (tc->want) {
    case W_V4: {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.sa;
        struct in_addr want;
        assert_int_equal(a.kind, ADDR_IP);
        assert_int_equal(sin->sin_family, AF_INET);
        assert_int_equal(a.salen, sizeof(struct sockaddr_in));
        assert_int_equal(inet_pton(AF_INET, tc->host, &want), 1);
        assert_memory_equal(&sin->sin_addr, &want, sizeof want);
        assert_int_equal(sin->sin_port, netport);
        break;
    }
    case W_V6: {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.sa;
        struct in6_addr want;
        assert_int_equal(a.kind, ADDR_IP);
        assert_int_equal(sin6->sin6_family, AF_INET6);
        assert_int_equal(a.salen, sizeof(struct sockaddr_in6));
        assert_int_equal(inet_pton(AF_INET6, tc->host, &want), 1);
        assert_memory_equal(&sin6->sin6_addr, &want, sizeof want);
        assert_int_equal(sin6->sin6_port, netport);
        break;
    }
    case W_NAME:
        assert_int_equal(a.kind, ADDR_NAME);
        break;
    case W_ERR:
        break;
    }
}

/* Accepted or refused as the table says (all rows first, to report every mismatch). */
static void
test_parse_ip_table(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < NELEM(ip_cases); i++) {
        const struct ip_case *tc = &ip_cases[i];
        struct addr a;
        const char *cause = NULL;
        int r = addr_parse_ip(tc->text, tc->port_param, &a, &cause);
        if ((r == 0) != (tc->want != W_ERR)) {
            print_error("\"%s\" (port %d): %s, expected %s\n", tc->text, tc->port_param,
                        r == 0 ? "accepted" : "refused",
                        tc->want == W_ERR ? "an error" : "success");
            bad++;
            continue;
        }
        check_ip_case(tc);
    }
    if (bad > 0)
        fail_msg("%d of %zu addr_parse_ip cases failed", bad, NELEM(ip_cases));
}

/* Host names by length: up to 253 characters with labels of at most 63. */
static void
test_parse_name_lengths(void **state)
{
    (void)state;
    char name[400];
    struct addr a;
    const char *cause;

    /* Four labels of 63 plus dots = 255; trimmed to exactly 253 and 254. */
    static const struct {
        size_t len;
        int ok;
    } cases[] = {{1, 1}, {63, 1}, {64, 0}, {253, 1}, {254, 0}, {255, 0}, {256, 0}, {300, 0}};
    for (size_t i = 0; i < NELEM(cases); i++) {
        size_t n = cases[i].len;
        if (n == 64) {
            memset(name, 'a', 64); /* a single label too long */
        } else {
            for (size_t k = 0; k < n; k++)
                name[k] = (k % 50 == 49) ? '.' : 'a'; /* labels of 49 */
            if (name[n - 1] == '.')
                name[n - 1] = 'b';
        }
        name[n] = '\0';
        int r = addr_parse_ip(name, 80, &a, &cause);
        if (cases[i].ok) {
            if (r != 0)
                fail_msg("name of %zu characters refused: %s", n, cause);
            assert_int_equal(a.kind, ADDR_NAME);
            assert_string_equal(a.host, name);
            assert_int_equal(a.port, 80);
        } else if (r != -1) {
            fail_msg("name of %zu characters accepted", n);
        }
        /* With a port in the text, the same answer. */
        snprintf(name + n, sizeof name - n, ":443");
        r = addr_parse_ip(name, -1, &a, &cause);
        if (cases[i].ok) {
            assert_int_equal(r, 0);
            assert_int_equal(a.port, 443);
            assert_int_equal(strlen(a.host), n);
        } else {
            assert_int_equal(r, -1);
        }
    }
}

struct unix_case {
    const char *text;
    int ok;
    int abstract;
};

static void
test_parse_unix_table(void **state)
{
    (void)state;
    static const struct unix_case cases[] = {
        {"/run/app.sock", 1, 0},
        {"/", 1, 0},
        {"/tmp/a b", 1, 0},
        {"@abstract", 1, 1},
        {"@a", 1, 1},
        {"@", 0, 0},
        {"", 0, 0},
        {"relative/path", 0, 0},
        {"./app.sock", 0, 0},
        {"app.sock", 0, 0},
        {" /run/app.sock", 0, 0},
    };
    size_t off = offsetof(struct sockaddr_un, sun_path);

    for (size_t i = 0; i < NELEM(cases); i++) {
        struct addr a;
        const char *cause = NULL;
        const char *t = cases[i].text;
        int r = addr_parse_unix(t, &a, &cause);
        if (!cases[i].ok) {
            if (r != -1)
                fail_msg("\"%s\": accepted", t);
            assert_non_null(cause);
            continue;
        }
        if (r != 0)
            fail_msg("\"%s\": refused (%s)", t, cause);
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&a.sa;
        size_t n = strlen(t);
        assert_int_equal(a.kind, ADDR_UNIX);
        assert_int_equal(sun->sun_family, AF_UNIX);
        assert_int_equal(a.port, -1);
        assert_string_equal(a.host, t);
        if (cases[i].abstract) {
            /* A leading NUL, the name, and a length that counts no trailing NUL. */
            assert_int_equal(sun->sun_path[0], '\0');
            assert_memory_equal(sun->sun_path + 1, t + 1, n - 1);
            assert_int_equal(a.salen, off + n);
        } else {
            assert_string_equal(sun->sun_path, t);
            assert_int_equal(a.salen, off + n + 1);
        }
    }
}

static void
test_parse_unix_lengths(void **state)
{
    (void)state;
    char text[200];
    struct addr a;
    const char *cause;
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path); /* 108 on Linux */

    static const struct {
        size_t len;
        int ok;
    } cases[] = {{2, 1}, {100, 1}, {107, 1}, {108, 0}, {109, 0}, {150, 0}};
    assert_int_equal(max, 108);
    for (size_t i = 0; i < NELEM(cases); i++) {
        for (int abstract = 0; abstract < 2; abstract++) {
            size_t n = cases[i].len;
            memset(text, 'p', n);
            text[0] = abstract ? '@' : '/';
            text[n] = '\0';
            int r = addr_parse_unix(text, &a, &cause);
            if (cases[i].ok && r != 0)
                fail_msg("%s of %zu characters refused: %s", abstract ? "name" : "path", n, cause);
            if (!cases[i].ok && r != -1)
                fail_msg("%s of %zu characters accepted", abstract ? "name" : "path", n);
            if (r == 0)
                assert_true(a.salen <= sizeof(struct sockaddr_un));
        }
    }
}

/* addr_to_json of a sockaddr equals this JSON text. */
static void
check_json(const struct sockaddr *sa, socklen_t len, const char *want_text)
{
    json_error_t err;
    json_t *want = json_loads(want_text, 0, &err);
    assert_non_null(want);
    json_t *got = addr_to_json(sa, len);
    assert_non_null(got);
    if (!json_equal(got, want)) {
        char msg[512];
        char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
        snprintf(msg, sizeof msg, "got %s, want %s", g ? g : "?", want_text);
        free(g);
        json_decref(got);
        json_decref(want);
        fail_msg("%s", msg);
    }
    json_decref(got);
    json_decref(want);
}

static void
test_to_json(void **state)
{
    (void)state;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    struct sockaddr_un sun;
    size_t off = offsetof(struct sockaddr_un, sun_path);

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(40000);
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    check_json((struct sockaddr *)&sin, sizeof sin, "{\"address\":\"127.0.0.1\",\"port\":40000}");
    sin.sin_port = htons(0);
    inet_pton(AF_INET, "0.0.0.0", &sin.sin_addr);
    check_json((struct sockaddr *)&sin, sizeof sin, "{\"address\":\"0.0.0.0\",\"port\":0}");
    sin.sin_port = htons(65535);
    inet_pton(AF_INET, "192.0.2.255", &sin.sin_addr);
    check_json((struct sockaddr *)&sin, sizeof sin, "{\"address\":\"192.0.2.255\",\"port\":65535}");

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(443);
    inet_pton(AF_INET6, "2001:db8::1", &sin6.sin6_addr);
    check_json((struct sockaddr *)&sin6, sizeof sin6, "{\"address\":\"2001:db8::1\",\"port\":443}");
    sin6.sin6_port = htons(1);
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    check_json((struct sockaddr *)&sin6, sizeof sin6, "{\"address\":\"::1\",\"port\":1}");

    /* Unix path, with the length a kernel reports (path and its NUL) and the full size. */
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    strcpy(sun.sun_path, "/run/app.sock");
    check_json((struct sockaddr *)&sun, (socklen_t)(off + strlen("/run/app.sock") + 1),
               "{\"path\":\"/run/app.sock\"}");
    check_json((struct sockaddr *)&sun, sizeof sun, "{\"path\":\"/run/app.sock\"}");
    /* A path that fills sun_path with no NUL at all. */
    memset(sun.sun_path, 'x', sizeof sun.sun_path);
    sun.sun_path[0] = '/';
    {
        char want[200];
        snprintf(want, sizeof want, "{\"path\":\"/%.*s\"}", (int)sizeof sun.sun_path - 1,
                 sun.sun_path + 1);
        check_json((struct sockaddr *)&sun, sizeof sun, want);
    }
    /* Abstract: leading NUL becomes '@'. */
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, "\0abstract", 9);
    check_json((struct sockaddr *)&sun, (socklen_t)(off + 9), "{\"path\":\"@abstract\"}");
    /* Unnamed (socketpair) unix socket. */
    check_json((struct sockaddr *)&sun, (socklen_t)off, "{\"path\":\"\"}");
    /* Names that are not UTF-8 text, or hold a NUL: path_base64 of the exact bytes. */
    memcpy(sun.sun_path, "\0x\xff", 3);
    check_json((struct sockaddr *)&sun, (socklen_t)(off + 3), "{\"path_base64\":\"QHj/\"}");
    memcpy(sun.sun_path, "\0a\0b", 4);
    check_json((struct sockaddr *)&sun, (socklen_t)(off + 4), "{\"path_base64\":\"QGEAYg==\"}");
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, "/a\xfe", 4);
    check_json((struct sockaddr *)&sun, (socklen_t)(off + 4), "{\"path_base64\":\"L2H+\"}");
    check_json((struct sockaddr *)&sun, sizeof sun, "{\"path_base64\":\"L2H+\"}");
    /* UTF-8 text stays a path; an overlong form or a lone surrogate is not text. */
    memcpy(sun.sun_path, "/\xc3\xa9", 4);
    check_json((struct sockaddr *)&sun, sizeof sun, "{\"path\":\"/\xc3\xa9\"}");
    memcpy(sun.sun_path, "/\xc0\xaf", 4);
    check_json((struct sockaddr *)&sun, sizeof sun, "{\"path_base64\":\"L8Cv\"}");

    /* An unknown family gives an empty object. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNSPEC;
    check_json((struct sockaddr *)&ss, sizeof ss, "{}");
}

/* Whatever addr_parse_* accepts, addr_to_json and addr_str give back in the same form. */
static void
test_parse_to_json_round_trip(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int is_unix;
        const char *json;
        const char *str;
    } cases[] = {
        {"1.2.3.4:80", 0, "{\"address\":\"1.2.3.4\",\"port\":80}", "1.2.3.4:80"},
        {"[::1]:443", 0, "{\"address\":\"::1\",\"port\":443}", "[::1]:443"},
        {"[2001:DB8:0:0::1]:8080", 0, "{\"address\":\"2001:db8::1\",\"port\":8080}",
         "[2001:db8::1]:8080"},
        {"::1", 0, "{\"address\":\"::1\",\"port\":0}", "[::1]:0"},
        {"/run/app.sock", 1, "{\"path\":\"/run/app.sock\"}", "/run/app.sock"},
        {"@abstract", 1, "{\"path\":\"@abstract\"}", "@abstract"},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct addr a;
        const char *cause;
        char buf[256];
        int r = cases[i].is_unix ? addr_parse_unix(cases[i].text, &a, &cause)
                                 : addr_parse_ip(cases[i].text, -1, &a, &cause);
        assert_int_equal(r, 0);
        check_json((struct sockaddr *)&a.sa, a.salen, cases[i].json);
        memset(buf, '#', sizeof buf);
        const char *s = addr_str((struct sockaddr *)&a.sa, a.salen, buf, sizeof buf);
        assert_ptr_equal(s, buf);
        assert_string_equal(buf, cases[i].str);
    }
}

static void
test_addr_str(void **state)
{
    (void)state;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    char buf[64];

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons(80);
    inet_pton(AF_INET, "192.0.2.1", &sin.sin_addr);
    assert_string_equal(addr_str((struct sockaddr *)&sin, sizeof sin, buf, sizeof buf),
                        "192.0.2.1:80");

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(65535);
    inet_pton(AF_INET6, "fe80::1:2", &sin6.sin6_addr);
    assert_string_equal(addr_str((struct sockaddr *)&sin6, sizeof sin6, buf, sizeof buf),
                        "[fe80::1:2]:65535");

    /* A small buffer truncates and stays NUL-terminated. */
    char small[8];
    memset(small, '#', sizeof small);
    assert_ptr_equal(addr_str((struct sockaddr *)&sin, sizeof sin, small, sizeof small), small);
    assert_string_equal(small, "192.0.2");

    /* Unknown family. */
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    assert_string_equal(addr_str((struct sockaddr *)&ss, sizeof ss, buf, sizeof buf), "?");
}

static void
test_addr_any(void **state)
{
    (void)state;
    struct addr a;
    char buf[64];

    addr_any(0, 8080, &a);
    assert_int_equal(a.kind, ADDR_IP);
    assert_int_equal(a.port, 8080);
    assert_string_equal(a.host, "0.0.0.0");
    assert_int_equal(a.sa.ss_family, AF_INET);
    assert_int_equal(a.salen, sizeof(struct sockaddr_in));
    assert_string_equal(addr_str((struct sockaddr *)&a.sa, a.salen, buf, sizeof buf),
                        "0.0.0.0:8080");

    addr_any(1, 0, &a);
    assert_int_equal(a.kind, ADDR_IP);
    assert_int_equal(a.port, 0);
    assert_string_equal(a.host, "::");
    assert_int_equal(a.sa.ss_family, AF_INET6);
    assert_int_equal(a.salen, sizeof(struct sockaddr_in6));
    assert_string_equal(addr_str((struct sockaddr *)&a.sa, a.salen, buf, sizeof buf), "[::]:0");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ip_table),   cmocka_unit_test(test_parse_name_lengths),
        cmocka_unit_test(test_parse_unix_table), cmocka_unit_test(test_parse_unix_lengths),
        cmocka_unit_test(test_to_json),          cmocka_unit_test(test_parse_to_json_round_trip),
        cmocka_unit_test(test_addr_str),         cmocka_unit_test(test_addr_any),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
