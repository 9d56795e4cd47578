/*
 * echo-client ADDRESS MESSAGE
 *
 * Connect to ADDRESS through sockd with libsockd-client, send MESSAGE,
 * read as many bytes back and print them. ADDRESS is "host:port" for TCP,
 * or "/path" / "@name" for a Unix socket. The daemon is found as sockctl
 * finds it ($SOCKD_SOCKET, ...).
 *
 * Build:
 *   cc echo-client.c $(pkg-config --cflags --libs sockd-client) -o echo-client
 *
 * Exit status: 0 the message came back, 1 a failure the daemon reported,
 * 2 usage, 3 the daemon cannot be reached.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sockd/client.h>

#define WAIT_MS 10000

/* Decode base64 (padding optional) into out (room for strlen(in) bytes); returns the length. */
static size_t
b64_decode(const char *in, unsigned char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;

    for (; *in != '\0' && *in != '='; in++) {
        const char *p = strchr(abc, *in);
        if (p == NULL)
            continue;
        acc = (acc << 6) | (unsigned)(p - abc);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

/* Call METHOD; on an error response print it and exit 1, on I/O failure exit 3. */
static json_t *
call(struct sockd_client *c, const char *method, json_t *params)
{
    json_t *result = NULL, *error = NULL;
    int rc = sockd_client_call(c, method, params, &result, &error, WAIT_MS);

    json_decref(params);
    if (rc < 0) {
        fprintf(stderr, "echo-client: %s: %s\n", method, strerror(errno));
        exit(3);
    }
    if (rc == 1) {
        char *text = json_dumps(error, JSON_COMPACT);
        fprintf(stderr, "echo-client: %s: %s\n", method, text ? text : "error");
        exit(1);
    }
    return result;
}

/* Wait for a notification about socket S: METHOD, or socket.closed (exit 1). */
static json_t *
wait_for(struct sockd_client *c, const char *method, json_int_t s)
{
    for (;;) {
        json_t *ev = sockd_client_next_event(c, WAIT_MS);
        if (ev == NULL) {
            fprintf(stderr, "echo-client: waiting for %s: %s\n", method, strerror(errno));
            exit(errno == ETIMEDOUT ? 1 : 3);
        }
        const char *name = json_string_value(json_object_get(ev, "method"));
        json_t *params = json_object_get(ev, "params");
        if (json_integer_value(json_object_get(params, "socket")) == s) {
            if (strcmp(name, method) == 0)
                return ev;
            if (strcmp(name, "socket.closed") == 0) {
                fprintf(stderr, "echo-client: socket closed: %s\n",
                        json_string_value(json_object_get(params, "reason")));
                exit(1);
            }
        }
        json_decref(ev);
    }
}

int
main(int argc, char **argv)
{
    if (argc != 3 || argv[2][0] == '\0') {
        fprintf(stderr, "usage: echo-client ADDRESS MESSAGE\n");
        return 2;
    }
    const char *address = argv[1], *message = argv[2];
    size_t len = strlen(message);

    struct sockd_client *c = sockd_client_connect(NULL);
    if (c == NULL) {
        fprintf(stderr, "echo-client: cannot reach sockd: %s\n", strerror(errno));
        return 3;
    }

    const char *type = address[0] == '/' || address[0] == '@' ? "unix" : "tcp";
    json_t *r = call(c, "socket.open", json_pack("{s:s}", "type", type));
    json_int_t s = json_integer_value(json_object_get(r, "socket"));
    json_decref(r);

    json_decref(
        call(c, "socket.connect",
             json_pack("{s:I,s:s,s:i}", "socket", s, "address", address, "timeout_ms", WAIT_MS)));
    json_decref(wait_for(c, "socket.connected", s));

    json_decref(call(c, "socket.send", json_pack("{s:I,s:s}", "socket", s, "text", message)));
    json_decref(call(
        c, "socket.recv",
        json_pack("{s:I,s:I,s:i}", "socket", s, "length", (json_int_t)len, "timeout_ms", WAIT_MS)));
    json_t *ev = wait_for(c, "socket.received", s);
    json_t *params = json_object_get(ev, "params");
    const char *data = json_string_value(json_object_get(params, "data"));
    unsigned char *buf = malloc(strlen(data ? data : "") + 1);
    size_t n = buf ? b64_decode(data ? data : "", buf) : 0;
    int timed_out = json_is_true(json_object_get(params, "timeout"));
    int eof = json_is_true(json_object_get(params, "eof")); /* then the daemon closes it */

    fwrite(buf, 1, n, stdout);
    fputc('\n', stdout);
    free(buf);
    json_decref(ev);

    if (!eof)
        json_decref(call(c, "socket.close", json_pack("{s:I}", "socket", s)));
    sockd_client_close(c);
    if (timed_out || n != len) {
        fprintf(stderr, "echo-client: %zu of %zu bytes came back\n", n, len);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 3;
}
