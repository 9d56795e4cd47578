/* Address text <-> sockaddr, and the JSON form of reported addresses. */
#ifndef SOCKD_ADDR_H
#define SOCKD_ADDR_H

#include <sys/socket.h>
#include <sys/un.h>
#include <jansson.h>

/* What an address text named. */
enum addr_kind {
    ADDR_IP,   /* an IPv4 or IPv6 literal; sa holds it with the port */
    ADDR_NAME, /* a host name; host and port hold it, resolution is the caller's */
    ADDR_UNIX, /* a Unix path or @abstract name; sa holds it */
};

struct addr {
    enum addr_kind kind;
    struct sockaddr_storage sa;
    socklen_t salen;
    char host[256]; /* host part as given (literal or name) */
    int port;       /* -1 when neither the text nor the port param gave one */
};

/*
 * Parse an IP address text ("1.2.3.4:80", "[::1]:443", "::1", "name:80"). port_param >= 0
 * supplies the port when the text has none (both given and different: error). Returns 0, or
 * -1 with *cause set to a static message.
 */
int addr_parse_ip(const char *text, int port_param, struct addr *out, const char **cause);
/* Parse a Unix address: "/path" or "@abstract". */
int addr_parse_unix(const char *text, struct addr *out, const char **cause);
/* The wildcard address of a family with a port. */
void addr_any(int ipv6, int port, struct addr *out);
/*
 * {"address","port"} or {"path"} for a socket address (new reference); a Unix name that is not
 * valid UTF-8 or holds a NUL is {"path_base64"} instead (sockd-protocol(7), Addresses).
 */
json_t *addr_to_json(const struct sockaddr *sa, socklen_t len);
/* The {"path"} or {"path_base64"} object of a Unix name of n bytes (new reference). */
json_t *addr_path_json(const char *name, size_t n);
/* A Unix address's name as text ("/p", "@name", "" unnamed), malloc'ed; NULL out of memory. */
char *addr_unix_text(const struct sockaddr *sa, socklen_t len);
/* "1.2.3.4:80", "[::1]:80" or the Unix name (raw bytes), for logs. */
const char *addr_str(const struct sockaddr *sa, socklen_t len, char *buf, size_t buflen);

#endif
