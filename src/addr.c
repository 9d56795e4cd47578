#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

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
        const struct sockaddr_un *sun = (const struct sockaddr_un *)sa;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = len > off ? len - off : 0;
        char path[sizeof sun->sun_path + 1];
        if (n > 0 && sun->sun_path[0] == '\0') {
            path[0] = '@';
            memcpy(path + 1, sun->sun_path + 1, n - 1);
            path[n] = '\0';
        } else {
            memcpy(path, sun->sun_path, n);
            path[n] = '\0';
        }
        return json_pack("{s:s}", "path", path);
    }
    return json_object();
}

const char *
addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen)
{
    json_t *j = addr_to_json(sa, len);
    const char *a = json_string_value(json_object_get(j, "address"));
    if (a != NULL) {
        int port = (int)json_integer_value(json_object_get(j, "port"));
        snprintf(buf, buflen, strchr(a, ':') ? "[%s]:%d" : "%s:%d", a, port);
    } else {
        const char *p = json_string_value(json_object_get(j, "path"));
        snprintf(buf, buflen, "%s", p ? p : "?");
    }
    json_decref(j);
    return buf;
}
