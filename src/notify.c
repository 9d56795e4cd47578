#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"
#include "ctl.h"
#include "notify.h"
#include "sock.h"

/* The method of each event kind. */
static const char *const notify_methods[SOCK_EV_NKINDS] = {
    [SOCK_EV_CONNECTED] = "socket.connected", [SOCK_EV_INCOMING] = "socket.incoming",
    [SOCK_EV_ACCEPTED] = "socket.accepted",   [SOCK_EV_SENT] = "socket.sent",
    [SOCK_EV_RECEIVED] = "socket.received",   [SOCK_EV_TLS_UPGRADED] = "socket.tls_upgraded",
    [SOCK_EV_CLOSED] = "socket.closed",
};

/* The client an owner is embedded in. */
static struct client *
notify_client(struct sock_owner *o)
{
    return (struct client *)(void *)((char *)o - offsetof(struct client, owner));
}

/* End a notification line written up to p + w: `,"request":ID` when there is an id, then the
 * closing braces and the newline. Returns the line's length. */
static size_t
notify_line_end(char *p, size_t w, const char *id, size_t idlen)
{
    if (id != NULL) {
        memcpy(p + w, ",\"request\":", 11);
        memcpy(p + w + 11, id, idlen);
        w += 11 + idlen;
    }
    memcpy(p + w, "}}\n", 3);
    return w + 3;
}

/*
 * The text of a request id for a notification line written in place: an integer (the common
 * case) into num, anything else from jansson into *heap (the caller frees it). 0, or -1 when
 * the text could not be made (out of memory); *text NULL when there is no id.
 */
static int
notify_req_text(json_t *req, char num[32], char **heap, const char **text, size_t *len)
{
    *heap = NULL;
    *text = NULL;
    *len = 0;
    if (req == NULL)
        return 0;
    if (json_is_integer(req)) {
        *len = (size_t)snprintf(num, 32, "%" JSON_INTEGER_FORMAT, json_integer_value(req));
        *text = num;
        return 0;
    }
    if ((*heap = json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL)
        return -1;
    *text = *heap;
    *len = strlen(*heap);
    return 0;
}

/* The general form: {jsonrpc, method, params} with "socket" and "request" added to params. */
static void
notify_json(struct client *c, enum sock_event_kind kind, const struct sock *s, json_t *params,
            json_t *req)
{
    json_object_set_new(params, "socket", json_integer((json_int_t)s->id));
    if (req != NULL)
        json_object_set(params, "request", req);
    ctl_notify(c, notify_methods[kind], params);
}

/*
 * socket.sent, written straight into the client's queue: one per send, so the JSON tree and
 * encoder of notify_json are skipped. The line is the one notify_json writes:
 * {"jsonrpc":"2.0","method":"socket.sent","params":{"bytes":N,"socket":S,"request":ID}}.
 */
static void
notify_sent(struct client *c, const struct sock *s, size_t bytes, json_t *req)
{
    char head[128], idnum[32];
    char *idtext;
    const char *id;
    size_t idlen;

    if (notify_req_text(req, idnum, &idtext, &id, &idlen) < 0) {
        notify_json(c, SOCK_EV_SENT, s, json_pack("{s:I}", "bytes", (json_int_t)bytes), req);
        return;
    }
    int hl = snprintf(head, sizeof head,
                      "{\"jsonrpc\":\"2.0\",\"method\":\"socket.sent\",\"params\":{\"bytes\":%zu,"
                      "\"socket\":%llu",
                      bytes, (unsigned long long)s->id);
    size_t total = (size_t)hl + (id ? 11 + idlen : 0) + 3;
    char *p = ctl_reserve_line(c, total);
    if (p != NULL) {
        memcpy(p, head, (size_t)hl);
        ctl_commit_line(c, notify_line_end(p, (size_t)hl, id, idlen));
    }
    free(idtext);
}

/*
 * socket.received with the event's bytes; with until_missing when an until receive delivers
 * bytes that do not end with its delimiter.
 */
static void
notify_received(struct client *c, const struct sock_event *ev)
{
    /*
     * The hot path: the line is written straight into the client's output queue, base64
     * encoded in place, so a large payload is neither copied nor escaped by the JSON encoder.
     */
    char idnum[32], *idtext;
    const char *req;
    size_t reqlen, n = ev->len;
    notify_req_text(ev->req, idnum, &idtext, &req, &reqlen); /* out of memory: no "request" */
    char head[] = "{\"jsonrpc\":\"2.0\",\"method\":\"socket.received\",\"params\":{\"data\":\"";
    char tail[160];
    int tl = snprintf(tail, sizeof tail, "\"%s%s%s,\"socket\":%llu", ev->eof ? ",\"eof\":true" : "",
                      ev->timeout ? ",\"timeout\":true" : "",
                      ev->until_missing ? ",\"until_missing\":true" : "",
                      (unsigned long long)ev->sock->id);
    size_t total = sizeof head - 1 + b64_encoded_len(n) + (size_t)tl + (req ? 11 + reqlen : 0) + 3;
    char *p = ctl_reserve_line(c, total);
    if (p != NULL) {
        size_t w = 0;
        memcpy(p, head, sizeof head - 1);
        w += sizeof head - 1;
        w += b64_encode(ev->data, n, p + w);
        memcpy(p + w, tail, (size_t)tl);
        w += (size_t)tl;
        ctl_commit_line(c, notify_line_end(p, w, req, reqlen));
    }
    free(idtext);
}

void
notify_deliver(struct sock_owner *o, const struct sock_event *ev)
{
    struct client *c = notify_client(o);
    if (ev->params != NULL)
        notify_json(c, ev->kind, ev->sock, ev->params, ev->req);
    else if (ev->kind == SOCK_EV_SENT)
        notify_sent(c, ev->sock, ev->bytes, ev->req);
    else if (ev->kind == SOCK_EV_RECEIVED)
        notify_received(c, ev);
}
