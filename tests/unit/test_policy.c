/* Unit tests of the access policy (src/policy.c), through the config parser (src/conf.c). */
#include "config.h"

#include <arpa/inet.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "conf.h"
#include "policy.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---- */

/* "1.2.3.4:80", "[::1]:80", "/path" or "@abstract" -> sockaddr; the length. */
static socklen_t
mksa(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    if (text[0] == '/' || text[0] == '@') {
        struct sockaddr_un *sun = (struct sockaddr_un *)ss;
        size_t n = strlen(text), off = offsetof(struct sockaddr_un, sun_path);
        assert_true(n < sizeof sun->sun_path);
        sun->sun_family = AF_UNIX;
        memcpy(sun->sun_path, text, n);
        if (text[0] == '@') {
            sun->sun_path[0] = '\0';
            return (socklen_t)(off + n);
        }
        return (socklen_t)(off + n + 1);
    }
    char host[128];
    const char *colon;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        assert_non_null(end);
        snprintf(host, sizeof host, "%.*s", (int)(end - text - 1), text + 1);
        colon = end + 1;
    } else {
        colon = strchr(text, ':');
        assert_non_null(colon);
        snprintf(host, sizeof host, "%.*s", (int)(colon - text), text);
    }
    assert_true(*colon == ':');
    int port = atoi(colon + 1);
    if (text[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((unsigned short)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            fail_msg("test address '%s'", text);
        return sizeof *sin6;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    sin->sin_family = AF_INET;
    sin->sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        fail_msg("test address '%s'", text);
    return sizeof *sin;
}

/* The inverse of mksa, for comparing results as text. */
static const char *
fmtsa(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        assert_int_equal(len, sizeof *sin);
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        snprintf(buf, buflen, "%s:%d", host, ntohs(sin->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        assert_int_equal(len, sizeof *sin6);
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        snprintf(buf, buflen, "[%s]:%d", host, ntohs(sin6->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
        size_t n = len - offsetof(struct sockaddr_un, sun_path);
        if (sun->sun_path[0] == '\0')
            snprintf(buf, buflen, "@%.*s", (int)n - 1, sun->sun_path + 1);
        else
            snprintf(buf, buflen, "%s", sun->sun_path);
    } else {
        snprintf(buf, buflen, "family %d", ss->ss_family);
    }
    return buf;
}

/* The config text with ROOTUSER and ROOTGROUP replaced by the names of uid 0 and gid 0, which
 * every system has (the group is "root" on most, "wheel" on some). */
static char *
subst(const char *tmpl)
{
    struct passwd *pw = getpwuid(0);
    struct group *gr = getgrgid(0);
    assert_non_null(pw);
    assert_non_null(gr);
    char user[64], group[64];
    snprintf(user, sizeof user, "%s", pw->pw_name);
    snprintf(group, sizeof group, "%s", gr->gr_name);
    size_t cap = strlen(tmpl) * 4 + 64, o = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    for (const char *s = tmpl; *s;) {
        const char *rep = NULL;
        size_t skip = 0;
        if (strncmp(s, "ROOTUSER", 8) == 0) {
            rep = user;
            skip = 8;
        } else if (strncmp(s, "ROOTGROUP", 9) == 0) {
            rep = group;
            skip = 9;
        }
        if (rep != NULL) {
            size_t n = strlen(rep);
            assert_true(o + n < cap);
            memcpy(out + o, rep, n);
            o += n;
            s += skip;
        } else {
            assert_true(o + 1 < cap);
            out[o++] = *s++;
        }
    }
    out[o] = '\0';
    return out;
}

/* Parse a config that must be good. */
static void
load(const char *tmpl, struct conf *c)
{
    char *text = subst(tmpl), *cause = NULL;
    conf_defaults(c);
    if (conf_parse(text, strlen(text), c, &cause) != 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "config refused: %s\n%s", cause ? cause : "?", text);
        free(cause);
        free(text);
        fail_msg("%s", msg);
    }
    free(text);
}

/* ---- who is asking ---- */

enum who_id {
    W_NOBODY, /* uid 1000 gid 1000, no supplementary groups (the rows' default) */
    W_ROOT,   /* uid 0 gid 0 */
    W_G2000,  /* uid 1001, primary gid 2000 */
    W_S2000,  /* uid 1001 gid 1001, supplementary 3000 2000 */
    W_S0,     /* uid 5 gid 5, supplementary 0 */
    W_S4242,  /* uid 7 gid 7, supplementary 4241 4242 4243 */
    W_S4241,  /* uid 7 gid 7, supplementary 4241 4243 */
    W_G4242,  /* uid 7 gid 4242 */
    W_UID66,  /* uid 66 gid 66 */
    W_NULL,   /* no who at all */
};

static const gid_t groups_2000[] = {3000, 2000};
static const gid_t groups_0[] = {0};
static const gid_t groups_4242[] = {4241, 4242, 4243};
static const gid_t groups_4241[] = {4241, 4243};

static const struct policy_who whos[] = {
    [W_NOBODY] = {1000, 1000, 4000, NULL, 0}, [W_ROOT] = {0, 0, 4001, NULL, 0},
    [W_G2000] = {1001, 2000, 4002, NULL, 0},  [W_S2000] = {1001, 1001, 4003, groups_2000, 2},
    [W_S0] = {5, 5, 4004, groups_0, 1},       [W_S4242] = {7, 7, 4005, groups_4242, 3},
    [W_S4241] = {7, 7, 4006, groups_4241, 2}, [W_G4242] = {7, 4242, 4007, NULL, 0},
    [W_UID66] = {66, 66, 4008, NULL, 0},
};

static const struct policy_who *
who_of(enum who_id w)
{
    return w == W_NULL ? NULL : &whos[w];
}

/* ---- the decision table ---- */

enum cfg {
    C_NONE,    /* no policy lines at all */
    C_BASIC,   /* every rule form, policy-default allow */
    C_BYPASS,  /* loopback and 10/8 denied: the spellings that must not get round it */
    C_FAMILY,  /* IPv4 vs IPv6 CIDRs, default deny */
    C_STAR,    /* "*" and first-match-wins across rule kinds */
    C_ORDER1,  /* broad allow before a narrow deny */
    C_ORDER2,  /* the same reversed, with policy-default deny written last */
    C_DENY,    /* policy-default deny alone */
    C_REDEF,   /* policy-default given twice: the last one counts */
    C_BIND,    /* bind wildcards */
    C_IDENT,   /* uid/user/gid/group */
    C_UNIXWHO, /* unix rules with identity clauses */
};

static const char *const cfgs[] = {
    [C_NONE] = "# no policy here\nmax-clients 5\n",
    [C_BASIC] = "policy-default allow\n"
                "deny    connect 169.254.0.0/16\n"
                "allow   connect 10.0.0.0/8 port 443 user ROOTUSER\n"
                "deny    connect 10.0.0.0/8\n"
                "deny    bind    0.0.0.0/0 port 1-1023\n"
                "deny    bind    ::/0 port 1-1023\n"
                "deny    sendto  ::/0 port 53 group ROOTGROUP\n"
                "deny    sendto  192.0.2.0/24 port 53 gid 4242\n"
                "deny    any     198.51.100.7\n"
                "deny    connect 2001:db8::/32 port 22\n"
                "allow   connect unix /run/app/\n"
                "allow   connect unix /run/ok\n"
                "deny    connect unix /\n"
                "deny    any     unix @forbidden\n"
                "deny    sendto  unix @\n",
    [C_BYPASS] = "deny connect 127.0.0.0/8\n"
                 "deny sendto 127.0.0.0/8\n"
                 "deny connect ::1\n"
                 "deny sendto ::1/128\n"
                 "deny connect 10.0.0.0/8\n",
    [C_FAMILY] = "policy-default deny\n"
                 "allow connect 0.0.0.0/0 port 80\n"
                 "allow connect ::/0 port 443\n"
                 "allow connect ::ffff:192.0.2.0/120 port 8080\n"
                 "allow connect fe80::/10\n",
    [C_STAR] = "policy-default deny\n"
               "allow any * port 1-1024\n"
               "deny connect 10.0.0.1\n"
               "allow connect *\n",
    [C_ORDER1] = "allow connect 10.0.0.0/8\n"
                 "deny connect 10.1.0.0/16\n"
                 "policy-default deny\n",
    [C_ORDER2] = "deny connect 10.1.0.0/16\n"
                 "allow connect 10.0.0.0/8\n"
                 "policy-default deny\n",
    [C_DENY] = "policy-default deny\n",
    [C_REDEF] = "policy-default deny\npolicy-default allow\n",
    [C_BIND] = "policy-default deny\n"
               "allow bind 127.0.0.0/8\n"
               "allow bind ::1\n"
               "allow bind :: port 9000\n"
               "allow bind :: port 9001\n"
               "allow bind 0.0.0.0 port 9001\n"
               "allow connect 127.0.0.1\n",
    [C_IDENT] = "policy-default deny\n"
                "allow connect 10.0.0.1 uid 1000\n"
                "allow connect 10.0.0.2 gid 2000\n"
                "allow connect 10.0.0.3 user ROOTUSER\n"
                "allow connect 10.0.0.4 group ROOTGROUP\n"
                "allow connect 10.0.0.5 port 80 uid 1000\n"
                "allow connect 10.0.0.6 uid 1000 port 80-81\n"
                "allow connect 10.0.0.7 gid 0\n"
                "deny  connect 10.0.0.8 uid 1000\n"
                "allow connect 10.0.0.8\n",
    [C_UNIXWHO] = "policy-default deny\n"
                  "allow connect unix /run/app/ group ROOTGROUP\n"
                  "allow connect unix /run/app/ gid 2000\n"
                  "allow bind unix @app uid 1000\n",
};

#define C POLICY_CONNECT
#define B POLICY_BIND
#define S POLICY_SENDTO

static const struct row {
    enum cfg cfg;
    enum policy_action action;
    const char *addr;
    int allow;
    enum who_id who;
} rows[] = {
    /* no policy: everything */
    {C_NONE, C, "1.2.3.4:80", 1, W_NOBODY},
    {C_NONE, B, "0.0.0.0:1", 1, W_NOBODY},
    {C_NONE, S, "[::1]:53", 1, W_NOBODY},
    {C_NONE, C, "/etc/secret.sock", 1, W_NOBODY},
    {C_NONE, C, "@x", 1, W_NULL},

    /* C_BASIC: a CIDR */
    {C_BASIC, C, "169.254.1.2:80", 0, W_NOBODY},
    {C_BASIC, C, "169.254.0.0:1", 0, W_NOBODY},
    {C_BASIC, C, "169.254.255.255:65535", 0, W_NOBODY},
    {C_BASIC, C, "169.253.255.255:80", 1, W_NOBODY},
    {C_BASIC, C, "169.255.0.0:80", 1, W_NOBODY},
    {C_BASIC, B, "169.254.1.2:8080", 1, W_NOBODY}, /* connect only */
    {C_BASIC, S, "169.254.1.2:8080", 1, W_NOBODY},
    /* port and user, then the catch-all for 10/8 */
    {C_BASIC, C, "10.1.2.3:443", 1, W_ROOT},
    {C_BASIC, C, "10.1.2.3:443", 0, W_NOBODY},
    {C_BASIC, C, "10.1.2.3:80", 0, W_ROOT},
    {C_BASIC, C, "10.255.255.255:443", 1, W_ROOT},
    {C_BASIC, C, "[::ffff:10.1.2.3]:443", 1, W_ROOT},
    {C_BASIC, C, "[::ffff:10.1.2.3]:443", 0, W_NOBODY},
    {C_BASIC, C, "11.0.0.1:443", 1, W_NOBODY},
    /* bind port ranges, both families */
    {C_BASIC, B, "0.0.0.0:80", 0, W_NOBODY},
    {C_BASIC, B, "0.0.0.0:1", 0, W_NOBODY},
    {C_BASIC, B, "0.0.0.0:1023", 0, W_NOBODY},
    {C_BASIC, B, "0.0.0.0:1024", 1, W_NOBODY},
    {C_BASIC, B, "0.0.0.0:0", 1, W_NOBODY}, /* ephemeral: port 0 is outside 1-1023 */
    {C_BASIC, B, "192.0.2.1:22", 0, W_NOBODY},
    {C_BASIC, B, "[::]:80", 0, W_NOBODY},
    {C_BASIC, B, "[::1]:1023", 0, W_NOBODY},
    {C_BASIC, B, "[::]:8080", 1, W_NOBODY},
    {C_BASIC, B, "[::ffff:127.0.0.1]:80", 0, W_NOBODY},
    {C_BASIC, C, "127.0.0.1:80", 1, W_NOBODY}, /* bind only */
    /* sendto with group: primary or supplementary */
    {C_BASIC, S, "[2001:db8::1]:53", 1, W_NOBODY},
    {C_BASIC, S, "[2001:db8::1]:53", 0, W_ROOT},
    {C_BASIC, S, "[2001:db8::1]:53", 0, W_S0},
    {C_BASIC, S, "[2001:db8::1]:54", 1, W_S0},
    {C_BASIC, S, "[2001:db8::1]:53", 1, W_NULL}, /* no who: identity rules do not match */
    {C_BASIC, S, "192.0.2.1:53", 0, W_G4242},
    {C_BASIC, S, "192.0.2.1:53", 0, W_S4242},
    {C_BASIC, S, "192.0.2.1:53", 1, W_S4241},
    {C_BASIC, S, "192.0.2.1:54", 1, W_G4242},
    {C_BASIC, S, "192.0.3.1:53", 1, W_G4242},
    {C_BASIC, C, "192.0.2.1:53", 1, W_G4242}, /* sendto only */
    /* any: all three actions; a bare address is /32 */
    {C_BASIC, C, "198.51.100.7:1", 0, W_NOBODY},
    {C_BASIC, B, "198.51.100.7:5000", 0, W_NOBODY},
    {C_BASIC, S, "198.51.100.7:53", 0, W_NOBODY},
    {C_BASIC, S, "198.51.100.8:53", 1, W_NOBODY},
    {C_BASIC, C, "198.51.100.6:1", 1, W_NOBODY},
    /* IPv6 CIDR with a port */
    {C_BASIC, C, "[2001:db8:1::1]:22", 0, W_NOBODY},
    {C_BASIC, C, "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:22", 0, W_NOBODY},
    {C_BASIC, C, "[2001:db8:1::1]:23", 1, W_NOBODY},
    {C_BASIC, C, "[2001:db9::1]:22", 1, W_NOBODY},
    {C_BASIC, C, "[2001:db7:ffff::1]:22", 1, W_NOBODY},
    /* unix prefixes: "/run/app/" is what is under it, "/run/ok" also itself */
    {C_BASIC, C, "/run/app/x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/run/app/sub/dir/x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/run/app", 0, W_NOBODY},
    {C_BASIC, C, "/run/app/", 0, W_NOBODY}, /* canonically /run/app */
    {C_BASIC, C, "/run/apple", 0, W_NOBODY},
    {C_BASIC, C, "/run/ok", 1, W_NOBODY},
    {C_BASIC, C, "/run/ok/x", 1, W_NOBODY},
    {C_BASIC, C, "/run/okay", 0, W_NOBODY},
    {C_BASIC, C, "/run/o", 0, W_NOBODY},
    {C_BASIC, C, "/etc/x.sock", 0, W_NOBODY},
    /* unix: ".." and "//" cannot escape or dodge */
    {C_BASIC, C, "/run/app/../../etc/passwd.sock", 0, W_NOBODY},
    {C_BASIC, C, "/run/app/..", 0, W_NOBODY},
    {C_BASIC, C, "/run/app/x/../../app2/s", 0, W_NOBODY},
    {C_BASIC, C, "/run/app/x/../../ok/s", 1, W_NOBODY},
    {C_BASIC, C, "/run/app//x.sock", 1, W_NOBODY},
    {C_BASIC, C, "//run//app//x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/run/./app/./x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/run/app/sub/../x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/../../run/app/x.sock", 1, W_NOBODY},
    {C_BASIC, C, "/run/elsewhere/../app/x", 1, W_NOBODY},
    {C_BASIC, C, "/run/app/./../apple", 0, W_NOBODY},
    {C_BASIC, C, "/run/app/...", 1, W_NOBODY}, /* "..." is a name, not a step up */
    {C_BASIC, C, "/run/ok/..", 0, W_NOBODY},
    {C_BASIC, B, "/etc/x.sock", 1, W_NOBODY}, /* connect-only rules */
    /* abstract names: their own namespace, compared as written */
    {C_BASIC, C, "@forbidden", 0, W_NOBODY},
    {C_BASIC, C, "@forbidden/x", 0, W_NOBODY},
    {C_BASIC, B, "@forbidden", 0, W_NOBODY},
    {C_BASIC, C, "@forbiddenx", 1, W_NOBODY},
    {C_BASIC, C, "@forbidden/../ok", 0, W_NOBODY},
    {C_BASIC, C, "@run/app/x", 1, W_NOBODY},  /* not a path: "deny connect unix /" does not apply */
    {C_BASIC, S, "@anything", 0, W_NOBODY},   /* "@" prefix: every abstract name */
    {C_BASIC, S, "/run/x.sock", 1, W_NOBODY}, /* ...and no path */
    {C_BASIC, C, "@", 1, W_NOBODY},           /* empty abstract name: still an address */

    /* C_BYPASS: other spellings of 127.0.0.1 and 10/8 */
    {C_BYPASS, C, "127.0.0.1:80", 0, W_NOBODY},
    {C_BYPASS, C, "127.255.255.255:80", 0, W_NOBODY},
    {C_BYPASS, C, "128.0.0.1:80", 1, W_NOBODY},
    {C_BYPASS, C, "126.255.255.255:80", 1, W_NOBODY},
    {C_BYPASS, C, "[::ffff:127.0.0.1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::ffff:7f00:1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[0:0:0:0:0:ffff:7f00:0001]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::127.0.0.1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::7f00:1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "0.0.0.0:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::ffff:0.0.0.0]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::ffff:127.1.2.3]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::0.0.0.1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[0::1]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::ffff:10.9.8.7]:80", 0, W_NOBODY},
    {C_BYPASS, C, "[::10.9.8.7]:80", 0, W_NOBODY},
    {C_BYPASS, S, "0.0.0.0:53", 0, W_NOBODY},
    {C_BYPASS, S, "[::]:53", 0, W_NOBODY},
    {C_BYPASS, S, "[::ffff:127.0.0.53]:53", 0, W_NOBODY},
    {C_BYPASS, S, "[::127.0.0.53]:53", 0, W_NOBODY},
    {C_BYPASS, B, "0.0.0.0:80", 1, W_NOBODY}, /* connect/sendto rules only */
    /* neighbours that are not loopback */
    {C_BYPASS, C, "[::2]:80", 1, W_NOBODY},              /* ::0.0.0.2, i.e. 0.0.0.2 */
    {C_BYPASS, C, "[::ffff:128.0.0.1]:80", 1, W_NOBODY}, /* mapped, but not loopback */
    {C_BYPASS, C, "[::1:0:0:1]:80", 1, W_NOBODY},        /* not mapped: a 1 in the high bits */
    {C_BYPASS, C, "[::fffe:7f00:1]:80", 1, W_NOBODY},    /* neither mapped nor compatible */
    {C_BYPASS, C, "[64:ff9b::7f00:1]:80", 1, W_NOBODY},  /* NAT64 is not this host's concern */
    {C_BYPASS, C, "[::ffff:0:7f00:1]:80", 1, W_NOBODY}, /* IPv4-translated (RFC 2765): not mapped */
    {C_BYPASS, C, "[fe80::ffff:7f00:1]:80", 1, W_NOBODY}, /* the low bits alone do not make it v4 */

    /* C_FAMILY: an IPv4 CIDR never matches IPv6 and the reverse */
    {C_FAMILY, C, "1.2.3.4:80", 1, W_NOBODY},
    {C_FAMILY, C, "[2001:db8::1]:80", 0, W_NOBODY},
    {C_FAMILY, C, "[2001:db8::1]:443", 1, W_NOBODY},
    {C_FAMILY, C, "1.2.3.4:443", 0, W_NOBODY},
    {C_FAMILY, C, "[::ffff:1.2.3.4]:443", 0, W_NOBODY}, /* canonically IPv4: ::/0 does not match */
    {C_FAMILY, C, "[::ffff:1.2.3.4]:80", 1, W_NOBODY},
    {C_FAMILY, C, "[::1.2.3.4]:80", 1, W_NOBODY},
    {C_FAMILY, C, "[::]:443", 1, W_NOBODY}, /* ::1 */
    {C_FAMILY, C, "0.0.0.0:80", 1, W_NOBODY},
    {C_FAMILY, C, "192.0.2.9:8080", 1,
     W_NOBODY}, /* ::ffff:192.0.2.0/120 is stored as 192.0.2.0/24 */
    {C_FAMILY, C, "[::ffff:192.0.2.255]:8080", 1, W_NOBODY},
    {C_FAMILY, C, "192.0.3.1:8080", 0, W_NOBODY},
    {C_FAMILY, C, "[fe80::1]:9", 1, W_NOBODY},
    {C_FAMILY, C, "[febf:ffff::1]:9", 1, W_NOBODY},
    {C_FAMILY, C, "[fec0::1]:9", 0, W_NOBODY},
    {C_FAMILY, C, "/tmp/x", 0, W_NOBODY},
    {C_FAMILY, B, "1.2.3.4:80", 0, W_NOBODY},

    /* C_STAR: "*" is every IP address, never Unix; first match wins */
    {C_STAR, C, "10.0.0.1:80", 1, W_NOBODY},
    {C_STAR, C, "10.0.0.1:2000", 0, W_NOBODY},
    {C_STAR, C, "10.0.0.2:2000", 1, W_NOBODY},
    {C_STAR, C, "[2001:db8::5]:2000", 1, W_NOBODY},
    {C_STAR, C, "/tmp/x.sock", 0, W_NOBODY},
    {C_STAR, C, "@x", 0, W_NOBODY},
    {C_STAR, B, "1.2.3.4:2000", 0, W_NOBODY},
    {C_STAR, B, "1.2.3.4:1024", 1, W_NOBODY},
    {C_STAR, S, "[::1]:1024", 1, W_NOBODY},
    {C_STAR, S, "[::1]:1025", 0, W_NOBODY},
    {C_STAR, S, "1.2.3.4:0", 0, W_NOBODY},
    {C_STAR, S, "/tmp/x.sock", 0, W_NOBODY},

    /* first match wins; where policy-default is written does not matter */
    {C_ORDER1, C, "10.1.2.3:80", 1, W_NOBODY},
    {C_ORDER1, C, "11.0.0.1:80", 0, W_NOBODY},
    {C_ORDER2, C, "10.1.2.3:80", 0, W_NOBODY},
    {C_ORDER2, C, "10.2.0.1:80", 1, W_NOBODY},
    {C_ORDER2, C, "11.0.0.1:80", 0, W_NOBODY},

    /* policy-default */
    {C_DENY, C, "1.2.3.4:80", 0, W_NOBODY},
    {C_DENY, B, "0.0.0.0:0", 0, W_NOBODY},
    {C_DENY, S, "[::1]:53", 0, W_NOBODY},
    {C_DENY, C, "/run/x", 0, W_NOBODY},
    {C_DENY, C, "@x", 0, W_NOBODY},
    {C_REDEF, C, "1.2.3.4:80", 1, W_NOBODY},

    /* C_BIND: a bind wildcard is not loopback; :: also takes 0.0.0.0 */
    {C_BIND, B, "127.0.0.1:80", 1, W_NOBODY},
    {C_BIND, B, "127.0.0.2:80", 1, W_NOBODY},
    {C_BIND, B, "0.0.0.0:80", 0, W_NOBODY},
    {C_BIND, B, "[::1]:80", 1, W_NOBODY},
    {C_BIND, B, "[::]:80", 0, W_NOBODY},
    {C_BIND, B, "[::]:9000", 0, W_NOBODY}, /* :: allowed, 0.0.0.0 not */
    {C_BIND, B, "[::]:9001", 1, W_NOBODY},
    {C_BIND, B, "0.0.0.0:9001", 1, W_NOBODY},
    {C_BIND, B, "0.0.0.0:9000", 0, W_NOBODY},
    {C_BIND, B, "[::ffff:127.0.0.1]:80", 1, W_NOBODY},
    {C_BIND, B, "[::ffff:0.0.0.0]:80", 0, W_NOBODY},
    {C_BIND, B, "[::ffff:0.0.0.0]:9001", 1, W_NOBODY},
    {C_BIND, C, "0.0.0.0:80", 1, W_NOBODY}, /* as a destination 0.0.0.0 is 127.0.0.1 */
    {C_BIND, C, "[::]:80", 0, W_NOBODY},    /* ::1, which connect rules do not allow */

    /* C_IDENT */
    {C_IDENT, C, "10.0.0.1:1", 1, W_NOBODY},
    {C_IDENT, C, "10.0.0.1:1", 0, W_ROOT},
    {C_IDENT, C, "10.0.0.1:1", 0, W_NULL},
    {C_IDENT, C, "10.0.0.2:1", 1, W_G2000},
    {C_IDENT, C, "10.0.0.2:1", 1, W_S2000},
    {C_IDENT, C, "10.0.0.2:1", 0, W_NOBODY},
    {C_IDENT, C, "10.0.0.3:1", 1, W_ROOT},
    {C_IDENT, C, "10.0.0.3:1", 0, W_S0}, /* group 0 does not make uid 0 */
    {C_IDENT, C, "10.0.0.4:1", 1, W_ROOT},
    {C_IDENT, C, "10.0.0.4:1", 1, W_S0},
    {C_IDENT, C, "10.0.0.4:1", 0, W_NOBODY},
    {C_IDENT, C, "10.0.0.5:80", 1, W_NOBODY},
    {C_IDENT, C, "10.0.0.5:81", 0, W_NOBODY},
    {C_IDENT, C, "10.0.0.5:80", 0, W_UID66},
    {C_IDENT, C, "10.0.0.6:81", 1, W_NOBODY},
    {C_IDENT, C, "10.0.0.6:82", 0, W_NOBODY},
    {C_IDENT, C, "10.0.0.7:1", 1, W_S0},
    {C_IDENT, C, "10.0.0.7:1", 0, W_S2000},
    {C_IDENT, C, "10.0.0.8:1", 0, W_NOBODY},
    {C_IDENT, C, "10.0.0.8:1", 1, W_UID66},
    {C_IDENT, C, "10.0.0.8:1", 1, W_NULL},

    /* C_UNIXWHO */
    {C_UNIXWHO, C, "/run/app/a", 1, W_ROOT},
    {C_UNIXWHO, C, "/run/app/a", 1, W_S0},
    {C_UNIXWHO, C, "/run/app/a", 1, W_S2000},
    {C_UNIXWHO, C, "/run/app/a", 0, W_NOBODY},
    {C_UNIXWHO, C, "/run/app/../app/a", 0, W_UID66},
    {C_UNIXWHO, B, "@app", 1, W_NOBODY},
    {C_UNIXWHO, B, "@app/x", 1, W_NOBODY},
    {C_UNIXWHO, B, "@apple", 0, W_NOBODY},
    {C_UNIXWHO, B, "@app", 0, W_ROOT},
    {C_UNIXWHO, C, "@app", 0, W_NOBODY},
};

static void
test_table(void **state)
{
    (void)state;
    struct conf confs[NELEM(cfgs)];
    for (size_t i = 0; i < NELEM(cfgs); i++)
        load(cfgs[i], &confs[i]);
    assert_null(confs[C_NONE].policy);
    int failed = 0;
    for (size_t i = 0; i < NELEM(rows); i++) {
        const struct row *r = &rows[i];
        struct sockaddr_storage ss;
        socklen_t len = mksa(r->addr, &ss);
        int got = policy_allows(confs[r->cfg].policy, r->action, (struct sockaddr *)&ss, len,
                                who_of(r->who));
        if (got != r->allow) {
            print_error("row %zu: config %d, action %d, %s, who %d: got %s, want %s\n", i,
                        (int)r->cfg, (int)r->action, r->addr, (int)r->who, got ? "allow" : "deny",
                        r->allow ? "allow" : "deny");
            failed++;
        }
    }
    for (size_t i = 0; i < NELEM(cfgs); i++)
        conf_free(&confs[i]);
    assert_int_equal(failed, 0);
}

/* "127.1" is not an address to inet_pton, so it cannot be written in a rule or reach sockd as a
 * literal (addresses the resolver returns are sockaddrs); a looser parser (inet_aton) would make
 * it 127.0.0.1, which the rule for 127.0.0.1 still catches since policy sees sockaddrs only. */
static void
test_short_ipv4(void **state)
{
    (void)state;
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, "127.1", &a), 0);
    assert_int_equal(inet_pton(AF_INET, "0x7f.1", &a), 0);
    assert_int_equal(inet_pton(AF_INET, "2130706433", &a), 0);
    assert_int_not_equal(inet_aton("127.1", &a), 0);
    struct conf c;
    load("deny connect 127.0.0.1\n", &c);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr = a;
    sin.sin_port = htons(80);
    assert_int_equal(
        policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&sin, sizeof sin, NULL), 0);
    conf_free(&c);
}

/* Addresses the policy cannot read are denied; a NULL policy allows even those. */
static void
test_malformed(void **state)
{
    (void)state;
    struct conf c;
    load("policy-default allow\n", &c);
    assert_non_null(c.policy);
    struct sockaddr_storage ss;
    socklen_t len = mksa("1.2.3.4:80", &ss);
    const struct sockaddr *sa = (struct sockaddr *)&ss;
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len, NULL), 1);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len - 1, NULL), 0);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, 0, NULL), 0);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, NULL, 16, NULL), 0);
    len = mksa("[::1]:80", &ss);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len, NULL), 1);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, sizeof(struct sockaddr_in), NULL),
                     0);
    /* unnamed Unix socket, relative path, oversized length, other family */
    len = mksa("/run/x", &ss);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len, NULL), 1);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa,
                                   (socklen_t)offsetof(struct sockaddr_un, sun_path), NULL),
                     0);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, sizeof ss, NULL), 0);
    ((struct sockaddr_un *)&ss)->sun_path[0] = 'r';
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len, NULL), 0);
    ss.ss_family = AF_PACKET;
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, sa, len, NULL), 0);
    assert_int_equal(policy_allows(NULL, POLICY_CONNECT, sa, len, NULL), 1);
    conf_free(&c);

    /* A pathname ends at its first NUL, as for the kernel. */
    load("deny connect unix /run/app\n", &c);
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    memcpy(sun.sun_path, "/run/app/x\0/../../etc", 21);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 22);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&sun, len, NULL),
                     0);
    /* An abstract name's bytes all count, NULs included. */
    memcpy(sun.sun_path, "\0run/app", 8);
    len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 8);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&sun, len, NULL),
                     1);
    conf_free(&c);
}

/* Deny connect to path under policy p? (1 denied.) */
static int
unix_denied(const struct policy *p, const char *path)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    assert_true(strlen(path) < sizeof sun.sun_path);
    memcpy(sun.sun_path, path, strlen(path));
    return !policy_allows(p, POLICY_CONNECT, (struct sockaddr *)&sun, sizeof sun, NULL);
}

/*
 * A rule's own path is resolved at load: written through a symlinked directory (as /var/run is
 * for /run) it names the real directory, which is what sockets are judged on; the part that
 * does not exist yet is kept as written.
 */
static void
test_rule_real_path(void **state)
{
    char dir[] = "/tmp/tp-XXXXXX", real[64], link[64], conf[256], p[128];
    struct conf c;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(real, sizeof real, "%s/real", dir);
    snprintf(link, sizeof link, "%s/link", dir);
    assert_int_equal(mkdir(real, 0755), 0);
    assert_int_equal(symlink(real, link), 0);
    snprintf(conf, sizeof conf, "deny connect unix %s/\ndeny connect unix %s/./x/../new/\n", link,
             link);
    load(conf, &c);
    snprintf(p, sizeof p, "%s/s", real);
    assert_int_equal(unix_denied(c.policy, p), 1);
    snprintf(p, sizeof p, "%s/new/s", real); /* new/ did not exist: kept, under the real dir */
    assert_int_equal(unix_denied(c.policy, p), 1);
    snprintf(p, sizeof p, "%s/s", dir);
    assert_int_equal(unix_denied(c.policy, p), 0);
    conf_free(&c);
    char *r = policy_real_path(link);
    assert_string_equal(r, real);
    free(r);
    r = policy_real_path("/");
    assert_string_equal(r, "/");
    free(r);
    unlink(link);
    rmdir(real);
    rmdir(dir);
}

static void
test_canonical(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } cases[] = {
        {"1.2.3.4:80", "1.2.3.4:80"},
        {"0.0.0.0:80", "127.0.0.1:80"},
        {"0.0.0.1:80", "0.0.0.1:80"},
        {"[::]:80", "[::1]:80"},
        {"[::1]:80", "[::1]:80"},
        {"[::ffff:127.0.0.1]:80", "127.0.0.1:80"},
        {"[::ffff:7f00:1]:81", "127.0.0.1:81"},
        {"[::127.0.0.1]:82", "127.0.0.1:82"},
        {"[::ffff:0.0.0.0]:83", "127.0.0.1:83"},
        {"[::ffff:1.2.3.4]:0", "1.2.3.4:0"},
        {"[::2]:80", "0.0.0.2:80"},
        {"[::ffff:0:1.2.3.4]:80", "[::ffff:0:102:304]:80"},
        {"[2001:db8::1]:443", "[2001:db8::1]:443"},
        {"/run/app/../x//y/./z/", "/run/x/y/z"},
        {"/..", "/"},
        {"//", "/"},
        {"/a/b/../../../c", "/c"},
        {"@a/../b", "@a/../b"},
    };
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct sockaddr_storage in, out;
        socklen_t len = mksa(cases[i].in, &in), outlen = 0;
        char buf[256];
        policy_canonical((struct sockaddr *)&in, len, &out, &outlen);
        assert_string_equal(fmtsa(&out, outlen, buf, sizeof buf), cases[i].want);
    }
    /* A flowinfo or scope does not survive into the IPv4 form; v6 keeps none either. */
    struct sockaddr_in6 sin6;
    struct sockaddr_storage out;
    socklen_t outlen;
    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(7);
    sin6.sin6_scope_id = 3;
    inet_pton(AF_INET6, "::ffff:10.0.0.1", &sin6.sin6_addr);
    policy_canonical((struct sockaddr *)&sin6, sizeof sin6, &out, &outlen);
    assert_int_equal(out.ss_family, AF_INET);
    assert_int_equal(outlen, sizeof(struct sockaddr_in));
}

/* rewrite connect FROM to TO [match]: the first matching one applies, once. */
static void
test_rewrite(void **state)
{
    (void)state;
    static const char text[] = "rewrite connect 203.0.113.10:80 to 127.0.0.1:8080\n"
                               "rewrite connect 127.0.0.1:8080 to 127.0.0.3:1\n"
                               "rewrite connect 203.0.113.11 to 127.0.0.2\n"
                               "rewrite connect [2001:db8::1]:443 to [::1]:8443\n"
                               "rewrite connect 2001:db8::2 to 192.0.2.2\n"
                               "rewrite connect 203.0.113.12:80 to [::1] uid 1000\n"
                               "rewrite connect 203.0.113.12:80 to 127.0.0.9:81\n"
                               "rewrite connect 203.0.113.13 to 127.0.0.1:9 port 1000-2000\n"
                               "rewrite connect 203.0.113.14 to [::ffff:127.0.0.1]:7 group "
                               "ROOTGROUP\n"
                               "rewrite connect 0.0.0.0:25 to 127.0.0.1:2525\n"
                               "rewrite connect [::ffff:198.51.100.1]:80 to 127.0.0.1:80\n"
                               "rewrite connect [2001:db8::3] to [2001:db8::4]:1\n"
                               "deny connect 127.0.0.1 port 8080 uid 66\n"
                               "deny connect 127.0.0.2\n";
    static const struct {
        const char *in;
        enum who_id who;
        const char *want; /* NULL: no rewrite */
    } cases[] = {
        {"203.0.113.10:80", W_NOBODY, "127.0.0.1:8080"},
        {"203.0.113.10:81", W_NOBODY, NULL},
        {"[::ffff:203.0.113.10]:80", W_NOBODY, "127.0.0.1:8080"},
        {"[::203.0.113.10]:80", W_NOBODY, "127.0.0.1:8080"},
        {"127.0.0.1:8080", W_NOBODY, "127.0.0.3:1"}, /* but no chain from the first */
        {"203.0.113.11:5555", W_NOBODY, "127.0.0.2:5555"},
        {"203.0.113.11:1", W_NULL, "127.0.0.2:1"},
        {"[2001:db8::1]:443", W_NOBODY, "[::1]:8443"},
        {"[2001:db8::1]:444", W_NOBODY, NULL},
        {"[2001:db8::2]:53", W_NOBODY, "192.0.2.2:53"},
        {"203.0.113.12:80", W_NOBODY, "[::1]:80"},
        {"203.0.113.12:80", W_ROOT, "127.0.0.9:81"},
        {"203.0.113.12:80", W_NULL, "127.0.0.9:81"},
        {"203.0.113.13:1500", W_NOBODY, "127.0.0.1:9"},
        {"203.0.113.13:1000", W_NOBODY, "127.0.0.1:9"},
        {"203.0.113.13:2000", W_NOBODY, "127.0.0.1:9"},
        {"203.0.113.13:999", W_NOBODY, NULL},
        {"203.0.113.13:2001", W_NOBODY, NULL},
        {"203.0.113.14:5", W_S0, "[::ffff:127.0.0.1]:7"}, /* TO is used as written */
        {"203.0.113.14:5", W_NOBODY, NULL},
        {"127.0.0.1:25", W_NOBODY, "127.0.0.1:2525"}, /* FROM 0.0.0.0 is this host */
        {"0.0.0.0:25", W_NOBODY, "127.0.0.1:2525"},
        {"[::ffff:0.0.0.0]:25", W_NOBODY, "127.0.0.1:2525"},
        {"[::]:25", W_NOBODY, NULL}, /* ::1 is not 127.0.0.1 */
        {"198.51.100.1:80", W_NOBODY, "127.0.0.1:80"},
        {"[2001:db8::3]:9", W_NOBODY, "[2001:db8::4]:1"},
        {"[2001:db8::3:0]:9", W_NOBODY, NULL},
        {"203.0.113.15:80", W_NOBODY, NULL},
        {"/run/x.sock", W_NOBODY, NULL},
        {"@x", W_NOBODY, NULL},
    };
    struct conf c;
    load(text, &c);
    for (size_t i = 0; i < NELEM(cases); i++) {
        struct sockaddr_storage in, out;
        socklen_t len = mksa(cases[i].in, &in), outlen = 0;
        char buf[256];
        memset(&out, 0xaa, sizeof out);
        int r = policy_rewrite(c.policy, (struct sockaddr *)&in, len, who_of(cases[i].who), &out,
                               &outlen);
        if (cases[i].want == NULL) {
            if (r != 0)
                fail_msg("%s rewritten to %s", cases[i].in, fmtsa(&out, outlen, buf, sizeof buf));
            continue;
        }
        if (r != 1)
            fail_msg("%s not rewritten, want %s", cases[i].in, cases[i].want);
        assert_string_equal(fmtsa(&out, outlen, buf, sizeof buf), cases[i].want);
    }

    /* The caller then checks TO: the policy of the new destination decides. */
    struct sockaddr_storage in, out;
    socklen_t len = mksa("203.0.113.10:80", &in), outlen;
    assert_int_equal(
        policy_rewrite(c.policy, (struct sockaddr *)&in, len, &whos[W_UID66], &out, &outlen), 1);
    assert_int_equal(
        policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&out, outlen, &whos[W_UID66]),
        0);
    assert_int_equal(
        policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&out, outlen, &whos[W_NOBODY]),
        1);
    len = mksa("203.0.113.11:80", &in);
    assert_int_equal(policy_rewrite(c.policy, (struct sockaddr *)&in, len, NULL, &out, &outlen), 1);
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&out, outlen, NULL),
                     0);
    conf_free(&c);

    /* No policy, or one without rewrites: nothing to do. */
    len = mksa("203.0.113.10:80", &in);
    assert_int_equal(policy_rewrite(NULL, (struct sockaddr *)&in, len, NULL, &out, &outlen), 0);
    load("deny connect 203.0.113.10\n", &c);
    assert_int_equal(policy_rewrite(c.policy, (struct sockaddr *)&in, len, NULL, &out, &outlen), 0);
    conf_free(&c);
}

/* The example of sockd.conf(5), whole (with names this system has). */
static void
test_protocol_example(void **state)
{
    (void)state;
    static const char text[] = "listen /run/sockd/sockd.sock\n"
                               "max-clients 1024\n"
                               "# policy: first matching rule wins; otherwise policy-default\n"
                               "policy-default allow\n"
                               "deny    connect 169.254.0.0/16\n"
                               "allow   connect 10.0.0.0/8 port 443 user ROOTUSER\n"
                               "deny    bind    0.0.0.0/0 port 1-1023\n"
                               "deny    sendto  ::/0 port 53 group ROOTGROUP\n"
                               "allow   connect unix /run/app/\n"
                               "rewrite connect 203.0.113.10:80 to 127.0.0.1:8080\n";
    struct conf c;
    load(text, &c);
    assert_non_null(c.policy);
    assert_int_equal(c.max_clients, 1024);
    struct sockaddr_storage ss, out;
    socklen_t len = mksa("169.254.169.254:80", &ss), outlen;
    assert_int_equal(policy_allows(c.policy, POLICY_CONNECT, (struct sockaddr *)&ss, len, NULL), 0);
    len = mksa("203.0.113.10:80", &ss);
    assert_int_equal(policy_rewrite(c.policy, (struct sockaddr *)&ss, len, NULL, &out, &outlen), 1);
    char buf[64];
    assert_string_equal(fmtsa(&out, outlen, buf, sizeof buf), "127.0.0.1:8080");
    conf_free(&c);
    assert_null(c.policy);
    conf_free(&c); /* twice is harmless */
}

/* Bad policy lines: the cause names the line and the reason. */
static const struct {
    const char *text, *want;
} bad[] = {
    {"policy-default", "line 1: policy-default takes allow or deny"},
    {"policy-default maybe", "line 1: policy-default takes allow or deny"},
    {"policy-default Allow", "line 1: policy-default takes allow or deny"},
    {"policy-default allow deny", "line 1: policy-default takes allow or deny"},
    {"allow", "line 1: allow takes ACTION TARGET [port N[-M]] [uid|user|gid|group X]"},
    {"deny connect", "line 1: deny takes ACTION TARGET [port N[-M]] [uid|user|gid|group X]"},
    {"allow frob 1.2.3.4", "line 1: unknown action 'frob' (connect, bind, sendto or any)"},
    {"allow CONNECT 1.2.3.4", "line 1: unknown action 'CONNECT' (connect, bind, sendto or any)"},
    {"allow * 1.2.3.4", "line 1: unknown action '*' (connect, bind, sendto or any)"},
    {"allow connect 127.1", "line 1: bad address '127.1' (an IPv4 or IPv6 CIDR, * or unix)"},
    {"allow connect 127.1/8", "line 1: bad address '127.1/8' (an IPv4 or IPv6 CIDR, * or unix)"},
    {"allow connect host.example",
     "line 1: bad address 'host.example' (an IPv4 or IPv6 CIDR, * or unix)"},
    {"allow connect [::1]", "line 1: bad address '[::1]' (an IPv4 or IPv6 CIDR, * or unix)"},
    {"allow connect 1.2.3.4:80", "line 1: bad address '1.2.3.4:80' (an IPv4 or IPv6 CIDR, * or "
                                 "unix)"},
    {"allow connect /8", "line 1: bad address '/8' (an IPv4 or IPv6 CIDR, * or unix)"},
    {"allow connect fe80::1%eth0", "line 1: bad address 'fe80::1%eth0' (an IPv4 or IPv6 CIDR, * "
                                   "or unix)"},
    {"allow connect 1.2.3.4/33", "line 1: bad prefix length in '1.2.3.4/33' (0 to 32)"},
    {"allow connect ::/129", "line 1: bad prefix length in '::/129' (0 to 128)"},
    {"allow connect 10.0.0.0/", "line 1: bad prefix length in '10.0.0.0/' (0 to 32)"},
    {"allow connect 10.0.0.0/-1", "line 1: bad prefix length in '10.0.0.0/-1' (0 to 32)"},
    {"allow connect 10.0.0.0/8/8", "line 1: bad prefix length in '10.0.0.0/8/8' (0 to 32)"},
    {"allow connect 10.0.0.1/8", "line 1: host bits set in '10.0.0.1/8'"},
    {"allow connect 10.0.0.64/25", "line 1: host bits set in '10.0.0.64/25'"},
    {"allow connect 2001:db8::1/32", "line 1: host bits set in '2001:db8::1/32'"},
    {"allow connect 1.2.3.4 port", "line 1: 'port' needs a value"},
    {"allow connect 1.2.3.4 port 70000", "line 1: bad port '70000' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port 10-5", "line 1: bad port '10-5' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port -5", "line 1: bad port '-5' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port 5-", "line 1: bad port '5-' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port 1-2-3", "line 1: bad port '1-2-3' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port http", "line 1: bad port 'http' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port +80", "line 1: bad port '+80' (N or N-M, 0 to 65535)"},
    {"allow connect 1.2.3.4 port 1 port 2", "line 1: port given twice"},
    {"allow connect 1.2.3.4 uid 1 gid 2", "line 1: only one of uid, user, gid, group"},
    {"allow connect 1.2.3.4 user ROOTUSER uid 0", "line 1: only one of uid, user, gid, group"},
    {"allow connect 1.2.3.4 uid", "line 1: 'uid' needs a value"},
    {"allow connect 1.2.3.4 uid -1", "line 1: bad uid '-1' (a number)"},
    {"allow connect 1.2.3.4 uid 4294967295", "line 1: bad uid '4294967295' (a number)"},
    {"allow connect 1.2.3.4 uid 99999999999", "line 1: bad uid '99999999999' (a number)"},
    {"allow connect 1.2.3.4 uid alice", "line 1: bad uid 'alice' (a number)"},
    {"allow connect 1.2.3.4 gid 0x10", "line 1: bad gid '0x10' (a number)"},
    {"allow connect 1.2.3.4 user no-such-user-sockd-test",
     "line 1: unknown user 'no-such-user-sockd-test'"},
    {"allow connect 1.2.3.4 group no-such-group-sockd-test",
     "line 1: unknown group 'no-such-group-sockd-test'"},
    {"allow connect 1.2.3.4 frob 1", "line 1: unexpected 'frob' (port, uid, user, gid or group)"},
    {"allow connect 1.2.3.4 443", "line 1: unexpected '443' (port, uid, user, gid or group)"},
    {"allow connect unix", "line 1: unix needs a path prefix"},
    {"allow connect unix run/app", "line 1: unix prefix 'run/app' must start with / or @"},
    {"allow connect unix /run/app port 80", "line 1: port does not apply to a unix target"},
    {"allow connect unix "
     "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
     "aaaaaaaaaaaaaaaaaaaa",
     "line 1: unix prefix too long"},
    {"rewrite", "line 1: rewrite takes connect FROM to TO [port|uid|user|gid|group X]"},
    {"rewrite connect 1.2.3.4 5.6.7.8",
     "line 1: rewrite takes connect FROM to TO [port|uid|user|gid|group X]"},
    {"rewrite connect 1.2.3.4 to",
     "line 1: rewrite takes connect FROM to TO [port|uid|user|gid|group X]"},
    {"rewrite connect 1.2.3.4 into 5.6.7.8",
     "line 1: rewrite takes connect FROM to TO [port|uid|user|gid|group X]"},
    {"rewrite bind 1.2.3.4 to 5.6.7.8", "line 1: rewrite applies to connect only, not 'bind'"},
    {"rewrite connect host:80 to 1.2.3.4",
     "line 1: bad rewrite source 'host:80' (ADDR or ADDR:PORT)"},
    {"rewrite connect 10.0.0.0/8 to 1.2.3.4",
     "line 1: bad rewrite source '10.0.0.0/8' (ADDR or ADDR:PORT)"},
    {"rewrite connect 1.2.3.4:0 to 5.6.7.8",
     "line 1: bad rewrite source '1.2.3.4:0' (ADDR or ADDR:PORT)"},
    {"rewrite connect 1.2.3.4: to 5.6.7.8",
     "line 1: bad rewrite source '1.2.3.4:' (ADDR or ADDR:PORT)"},
    {"rewrite connect [1.2.3.4]:80 to 5.6.7.8",
     "line 1: bad rewrite source '[1.2.3.4]:80' (ADDR or ADDR:PORT)"},
    {"rewrite connect [::1 to 5.6.7.8", "line 1: bad rewrite source '[::1' (ADDR or ADDR:PORT)"},
    {"rewrite connect [::1]x to 5.6.7.8",
     "line 1: bad rewrite source '[::1]x' (ADDR or ADDR:PORT)"},
    {"rewrite connect 127.1:80 to 5.6.7.8",
     "line 1: bad rewrite source '127.1:80' (ADDR or ADDR:PORT)"},
    {"rewrite connect 1.2.3.4:80 to 5.6.7.8:99999",
     "line 1: bad rewrite target '5.6.7.8:99999' (ADDR or ADDR:PORT)"},
    {"rewrite connect 1.2.3.4:80 to localhost:80",
     "line 1: bad rewrite target 'localhost:80' (ADDR or ADDR:PORT)"},
    {"rewrite connect 1.2.3.4 to 5.6.7.8 user no-such-user-sockd-test",
     "line 1: unknown user 'no-such-user-sockd-test'"},
    {"rewrite connect 1.2.3.4 to 5.6.7.8 port", "line 1: 'port' needs a value"},
    {"rewrite connect 1.2.3.4 to 5.6.7.8 via x",
     "line 1: unexpected 'via' (port, uid, user, gid or group)"},
    /* the line number counts every line */
    {"policy-default allow\nallow connect 10.0.0.0/8\n\n# x\ndeny bogus x\n",
     "line 5: unknown action 'bogus' (connect, bind, sendto or any)"},
    {"max-clients 5\nallow connect 10.0.0.0/8 user ROOTUSER\ndeny connect unix\n",
     "line 3: unix needs a path prefix"},
};

static void
test_errors(void **state)
{
    (void)state;
    for (size_t i = 0; i < NELEM(bad); i++) {
        char *text = subst(bad[i].text), *want = subst(bad[i].want), *cause = NULL;
        struct conf c;
        conf_defaults(&c);
        int r = conf_parse(text, strlen(text), &c, &cause);
        conf_free(&c); /* a half-built policy is freed with the rest */
        if (r != -1)
            fail_msg("accepted: \"%s\"", text);
        if (cause == NULL || strcmp(cause, want) != 0)
            fail_msg("for \"%s\": cause \"%s\", want \"%s\"", text, cause ? cause : "(null)", want);
        free(cause);
        free(text);
        free(want);
    }
}

/* Good lines of every form are accepted (and their edge values). */
static void
test_good_lines(void **state)
{
    (void)state;
    static const char *const good[] = {
        "policy-default allow",
        "policy-default deny",
        "allow connect 10.0.0.0/8",
        "deny bind 0.0.0.0/0",
        "deny sendto ::/0",
        "allow any *",
        "allow connect 1.2.3.4",
        "allow connect 1.2.3.4/32",
        "allow connect ::1",
        "allow connect ::1/128",
        "allow connect 0.0.0.0/0",
        "allow connect ::/0",
        "allow connect 10.0.0.0/08",
        "allow connect ::ffff:0.0.0.0/96",
        "allow connect * port 0",
        "allow connect * port 65535",
        "allow connect * port 0-65535",
        "allow connect * port 80-80",
        "allow connect * uid 0",
        "allow connect * uid 4294967294",
        "allow connect * gid 0",
        "allow connect * user ROOTUSER",
        "allow connect * group ROOTGROUP",
        "allow connect * port 1 uid 2",
        "allow connect * uid 2 port 1",
        "allow connect unix /",
        "allow connect unix @",
        "allow connect unix /run/app/",
        "allow connect unix /run/app",
        "allow connect unix /run/../run/app/.",
        "allow bind unix @abstract uid 5",
        "deny any unix /tmp/ group ROOTGROUP",
        "rewrite connect 1.2.3.4 to 5.6.7.8",
        "rewrite connect 1.2.3.4:1 to 5.6.7.8:65535",
        "rewrite connect ::1 to 5.6.7.8",
        "rewrite connect [::1] to [::2]",
        "rewrite connect [::1]:80 to [::2]:81 port 80 uid 3",
        "rewrite connect 1.2.3.4 to ::5 group ROOTGROUP port 1-2",
        "allow connect 10.0.0.0/8   # a comment",
        "\tdeny\tconnect\t10.0.0.0/8\t",
    };
    for (size_t i = 0; i < NELEM(good); i++) {
        char *text = subst(good[i]), *cause = NULL;
        struct conf c;
        conf_defaults(&c);
        if (conf_parse(text, strlen(text), &c, &cause) != 0)
            fail_msg("refused \"%s\": %s", text, cause ? cause : "?");
        assert_non_null(c.policy);
        conf_free(&c);
        free(text);
    }
    /* Straight to policy_parse_line: the cause goes into the caller's buffer, cut to fit. */
    struct policy *p = NULL;
    char buf[16];
    char w0[] = "allow", w1[] = "frob", w2[] = "*";
    char *w[] = {w0, w1, w2};
    assert_int_equal(policy_parse_line(&p, w, 3, buf, sizeof buf), -1);
    assert_string_equal(buf, "unknown action ");
    assert_non_null(p);
    w[1] = (char[]){"connect"};
    assert_int_equal(policy_parse_line(&p, w, 3, buf, sizeof buf), 0);
    policy_free(p);
    policy_free(NULL);
}

/* The peer's supplementary groups: SO_PEERGROUPS on a socketpair and /proc agree with
 * getgroups(). */
static void
test_peer_groups(void **state)
{
    (void)state;
    gid_t mine[256];
    int n = getgroups(256, mine);
    assert_true(n >= 0);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    for (int k = 0; k < 2; k++) {
        gid_t *g = NULL;
        int m =
            k == 0 ? policy_peer_groups(sv[0], getpid(), &g) : policy_peer_groups(-1, getpid(), &g);
        assert_int_equal(m, n);
        if (m == 0)
            assert_null(g);
        for (int i = 0; i < m; i++) {
            int found = 0;
            for (int j = 0; j < n; j++)
                found |= g[i] == mine[j];
            assert_true(found);
        }
        free(g);
    }
    close(sv[0]);
    close(sv[1]);

    /* With privilege, a child with several groups of its own; skipped without. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        static const gid_t set[] = {4241, 4242, 4243, 65000};
        if (setgroups(4, set) != 0)
            _exit(77);
        int cv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, cv) != 0)
            _exit(1);
        for (int k = 0; k < 2; k++) {
            gid_t *g = NULL;
            int m = k == 0 ? policy_peer_groups(cv[1], getpid(), &g)
                           : policy_peer_groups(-1, getpid(), &g);
            if (m != 4)
                _exit(2);
            for (int i = 0; i < 4; i++) {
                int found = 0;
                for (int j = 0; j < 4; j++)
                    found |= g[j] == set[i];
                if (!found)
                    _exit(3);
            }
            free(g);
        }
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        print_message("setgroups not permitted: several-group case skipped\n");
    else
        assert_int_equal(WEXITSTATUS(st), 0);

    gid_t *g = (gid_t *)1;
    assert_int_equal(policy_peer_groups(-1, 0, &g), -1);
    assert_null(g);
}

/* A restriction (daemon.restrict): rule syntax only, an implicit final deny, no identity. */
static void
test_restriction(void **state)
{
    struct policy *p = NULL;
    char cb[200];
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(443)};
    struct sockaddr_in b = {.sin_family = AF_INET, .sin_port = htons(80)};
    struct sockaddr_un u = {.sun_family = AF_UNIX, .sun_path = "/run/x.sock"};
    (void)state;
    inet_pton(AF_INET, "192.0.2.1", &a.sin_addr);
    inet_pton(AF_INET, "192.0.2.1", &b.sin_addr);
    assert_int_equal(
        policy_parse_restriction(&p, "allow connect 0.0.0.0/0 port 443", cb, sizeof cb), 0);
    assert_int_equal(policy_allows(p, POLICY_CONNECT, (struct sockaddr *)&a, sizeof a, NULL), 1);
    assert_int_equal(policy_allows(p, POLICY_CONNECT, (struct sockaddr *)&b, sizeof b, NULL), 0);
    assert_int_equal(policy_allows(p, POLICY_SENDTO, (struct sockaddr *)&a, sizeof a, NULL), 0);
    assert_int_equal(policy_allows(p, POLICY_CONNECT, (struct sockaddr *)&u, sizeof u, NULL), 0);
    /* first match wins */
    assert_int_equal(policy_parse_restriction(&p, "  deny\tconnect * ", cb, sizeof cb), 0);
    assert_int_equal(policy_allows(p, POLICY_CONNECT, (struct sockaddr *)&a, sizeof a, NULL), 1);
    static const char *const refused[] = {
        "",
        "   ",
        "policy-default allow",
        "rewrite connect 1.2.3.4:1 to 127.0.0.1:2",
        "allow connect * uid 0",
        "allow connect * port 443 user root",
        "deny any * group root",
        "allow connect * gid 0",
        "allow connect",
        "allow fly *",
        "allow connect 300.1.1.1",
        "allow connect * port 99999",
        "allow connect * port 1 port 2",
        "allow a b c d e f g h i j k l m n o p q r",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        cb[0] = '\0';
        if (policy_parse_restriction(&p, refused[i], cb, sizeof cb) != -1)
            fail_msg("accepted: '%s'", refused[i]);
        assert_true(cb[0] != '\0');
    }
    char huge[POLICY_RULE_MAX + 2];
    memset(huge, ' ', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    memcpy(huge, "allow any *", 11);
    assert_int_equal(policy_parse_restriction(&p, huge, cb, sizeof cb), -1);
    policy_free(p);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),       cmocka_unit_test(test_short_ipv4),
        cmocka_unit_test(test_malformed),   cmocka_unit_test(test_canonical),
        cmocka_unit_test(test_rewrite),     cmocka_unit_test(test_protocol_example),
        cmocka_unit_test(test_errors),      cmocka_unit_test(test_good_lines),
        cmocka_unit_test(test_peer_groups), cmocka_unit_test(test_rule_real_path),
        cmocka_unit_test(test_restriction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
