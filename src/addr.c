#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "b64.h"

/* Bytes of a Unix address name (sun_path): 108 on Linux. */
#define ADDR_SUN_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

/* Parse a decimal port 0..65535 from [s, s+n). */
static int
addr_port(const char *s, size_t n)
{
    int port = 0;
    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        port = port * 10 + (s[i] - '0');
    }
    return port > 65535 ? -1 : port;
}

/* A host name per RFC 1123 labels: letters, digits, '-', '.', at most 253 characters. */
static int
addr_name_ok(const char *h, size_t n)
{
    size_t label = 0;
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (c == '.') {
            if (label == 0 || h[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return 0;
        if (c == '-' && label == 0)
            return 0; /* a label never starts or ends with '-' (RFC 1123) */
        if (++label > 63)
            return 0;
    }
    return h[n - 1] != '-';
}

/*
 * True when the last label of h (a trailing dot ignored) is a number, decimal or 0x-hex: such a
 * text is a malformed address ("300.1.1.1", "127.1", "0x7f.1"), never a host name (RFC 1123
 * 2.1), and must not reach a resolver that might read it as an address or ask the network.
 */
static int
addr_numeric_like(const char *h, size_t n)
{
    if (n > 0 && h[n - 1] == '.')
        n--;
    size_t start = n;
    while (start > 0 && h[start - 1] != '.')
        start--;
    const char *l = h + start;
    size_t ln = n - start;
    if (ln == 0)
        return 0;
    int hex = ln >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X');
    for (size_t i = hex ? 2 : 0; i < ln; i++)
        if (!(l[i] >= '0' && l[i] <= '9') &&
            !(hex && ((l[i] >= 'a' && l[i] <= 'f') || (l[i] >= 'A' && l[i] <= 'F'))))
            return 0;
    return 1;
}

int
addr_parse_ip(const char *text, int port_param, struct addr *out, const char **cause)
{
    const char *host = text, *colon;
    size_t hlen;
    int port = -1;

    memset(out, 0, sizeof *out);
    if (text == NULL || *text == '\0') {
        *cause = "empty address";
        return -1;
    }
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (end == NULL) {
            *cause = "missing ']'";
            return -1;
        }
        host = text + 1;
        hlen = (size_t)(end - host);
        if (end[1] == ':') {
            if ((port = addr_port(end + 2, strlen(end + 2))) < 0) {
                *cause = "bad port";
                return -1;
            }
        } else if (end[1] != '\0') {
            *cause = "junk after ']'";
            return -1;
        }
    } else if ((colon = strrchr(text, ':')) != NULL && strchr(text, ':') == colon) {
        hlen = (size_t)(colon - text);
        if ((port = addr_port(colon + 1, strlen(colon + 1))) < 0) {
            *cause = "bad port";
            return -1;
        }
    } else {
        hlen = strlen(text); /* no port, or a bare IPv6 literal */
    }
    if (hlen == 0 || hlen >= sizeof out->host) {
        *cause = "bad host";
        return -1;
    }
    if (port >= 0 && port_param >= 0 && port != port_param) {
        *cause = "port given twice and different";
        return -1;
    }
    if (port < 0)
        port = port_param;
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = port;

    struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
    if (inet_pton(AF_INET, out->host, &sin->sin_addr) == 1) {
        if (text[0] == '[') {
            *cause = "brackets around an IPv4 address";
            return -1;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)(port < 0 ? 0 : port));
        out->salen = sizeof *sin;
        out->kind = ADDR_IP;
        return 0;
    }
    if (inet_pton(AF_INET6, out->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)(port < 0 ? 0 : port));
        out->salen = sizeof *sin6;
        out->kind = ADDR_IP;
        return 0;
    }
    if (addr_numeric_like(out->host, hlen)) {
        *cause = "not a valid IP address";
        return -1;
    }
    if (text[0] == '[' || !addr_name_ok(out->host, hlen)) {
        *cause = "not an IP address or host name";
        return -1;
    }
    out->kind = ADDR_NAME;
    return 0;
}

int
addr_parse_unix(const char *text, struct addr *out, const char **cause)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)&out->sa;
    size_t n = text ? strlen(text) : 0;

    memset(out, 0, sizeof *out);
    out->port = -1;
    if (n == 0 || (text[0] != '/' && text[0] != '@')) {
        *cause = "a Unix address is an absolute path or @name";
        return -1;
    }
    if (n >= sizeof sun->sun_path || (text[0] == '@' && n == 1)) {
        *cause = "Unix address too long";
        return -1;
    }
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, text, n);
    if (text[0] == '@') {
        sun->sun_path[0] = '\0';
        out->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        out->salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    snprintf(out->host, sizeof out->host, "%s", text);
    out->kind = ADDR_UNIX;
    return 0;
}

void
addr_any(int ipv6, int port, struct addr *out)
{
    memset(out, 0, sizeof *out);
    out->kind = ADDR_IP;
    out->port = port;
    if (ipv6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->sa;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = in6addr_any;
        sin6->sin6_port = htons((uint16_t)port);
        out->salen = sizeof *sin6;
        strcpy(out->host, "::");
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->sa;
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
        sin->sin_port = htons((uint16_t)port);
        out->salen = sizeof *sin;
        strcpy(out->host, "0.0.0.0");
    }
}

json_t *
addr_path_json(const char *name, size_t n)
{
    /* jansson refuses text that is not valid UTF-8; a NUL would cut the name short in C */
    json_t *v = memchr(name, '\0', n) == NULL ? json_stringn(name, n) : NULL;
    if (v != NULL)
        return json_pack("{s:o}", "path", v);
    char text[(ADDR_SUN_MAX + 2) / 3 * 4 + 1];
    if (n > ADDR_SUN_MAX)
        return json_object(); /* never from a kernel address; stored names are no longer */
    size_t tl = b64_encode(name, n, text);
    return json_pack("{s:s%}", "path_base64", text, tl);
}

/* A Unix address's name as reported: "/path", "@abstract" (its NULs kept), "" unnamed. */
static size_t
addr_unix_name(const struct sockaddr *sa, socklen_t len, char *out)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
    size_t off = offsetof(struct sockaddr_un, sun_path);
    size_t n = len > off ? len - off : 0;
    if (n > sizeof sun->sun_path)
        n = sizeof sun->sun_path;
    if (n > 0 && sun->sun_path[0] == '\0') {
        out[0] = '@';
        memcpy(out + 1, sun->sun_path + 1, n - 1);
    } else {
        n = strnlen(sun->sun_path, n); /* a path ends at its first NUL, as for the kernel */
        memcpy(out, sun->sun_path, n);
    }
    out[n] = '\0';
    return n;
}

json_t *
addr_to_json(const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        return json_pack("{s:s,s:i}", "address", host, "port", ntohs(sin->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        return json_pack("{s:s,s:i}", "address", host, "port", ntohs(sin6->sin6_port));
    }
    if (sa->sa_family == AF_UNIX) {
        char path[ADDR_SUN_MAX + 1];
        return addr_path_json(path, addr_unix_name(sa, len, path));
    }
    return json_object();
}

char *
addr_unix_text(const struct sockaddr *sa, socklen_t len)
{
    char path[ADDR_SUN_MAX + 1];
    addr_unix_name(sa, len, path);
    return strdup(path);
}

const char *
addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
        snprintf(buf, buflen, "%s:%d", host, ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
        snprintf(buf, buflen, "[%s]:%d", host, ntohs(sin6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        char path[ADDR_SUN_MAX + 1];
        addr_unix_name(sa, len, path);
        snprintf(buf, buflen, "%s", path); /* raw bytes: the log escapes what is not text */
    } else {
        snprintf(buf, buflen, "?");
    }
    return buf;
}
