#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "addr.h"
#include "tls.h"

/*
 * Client-side session resumption (sockd-protocol.7, TLS, "Session resumption"): each context
 * keeps the sessions servers gave under one key, the verification setting, the host name
 * checked (and sent as SNI) and the server's address, so a session verified for one name is
 * never offered for another. A TLS 1.2 session is kept alone under its key and offered again
 * and again; TLS 1.3 tickets are offered once each (RFC 8446, appendix C.4; OpenSSL spoils a
 * used one anyway), so up to TLSSESS_TICKETS of them are kept per key, the newest offered
 * first. Entries are kept most recently used first and bounded in number and in bytes, per
 * context and in the whole daemon.
 */

/* Bytes counted for an entry beyond its session's encoded size: the decoded objects. */
#define TLSSESS_OVERHEAD 1024
/* TLS 1.3 tickets kept per key (an OpenSSL server gives 2 after a full handshake). */
#define TLSSESS_TICKETS 4

struct tlssess_entry {
    struct tlssess_entry *prev, *next; /* most recently used first */
    SSL_SESSION *sess;                 /* one reference, ours */
    size_t bytes;                      /* counted in the context's and the daemon's totals */
    char key[];                        /* NUL-terminated */
};

struct tlssess {
    struct tlssess_entry *head, *tail;
    unsigned n;
    size_t bytes;
};

/* What a connecting SSL of a context remembers for the sessions it is given (SSL ex data). */
struct tlssess_ref {
    struct tlsctx *t; /* the socket holds a reference for as long as the SSL lives */
    char key[];
};

static size_t tlssess_bytes_total;
static int tlssess_idx = -1;

/* Free the ex data of an SSL when it goes. */
static void
tlssess_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void
tlssess_unlink(struct tlssess *c, struct tlssess_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void
tlssess_push_front(struct tlssess *c, struct tlssess_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head != NULL)
        c->head->prev = e;
    c->head = e;
    if (c->tail == NULL)
        c->tail = e;
}

static void
tlssess_drop(struct tlssess *c, struct tlssess_entry *e)
{
    tlssess_unlink(c, e);
    c->n--;
    c->bytes -= e->bytes;
    tlssess_bytes_total -= e->bytes;
    SSL_SESSION_free(e->sess);
    free(e);
}

/* The most recently used entry of key after e (NULL: from the head), NULL if none. */
static struct tlssess_entry *
tlssess_find(struct tlssess *c, struct tlssess_entry *e, const char *key)
{
    for (e = e != NULL ? e->next : c != NULL ? c->head : NULL; e != NULL; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

static int
tlssess_is13(const SSL_SESSION *sess)
{
    return SSL_SESSION_get_protocol_version(sess) >= TLS1_3_VERSION;
}

void
tlssess_flush(struct tlsctx *t)
{
    if (t->sess == NULL)
        return;
    while (t->sess->head != NULL)
        tlssess_drop(t->sess, t->sess->head);
    free(t->sess);
    t->sess = NULL;
}

/* Keep sess (one reference, taken on success) under key; 0 when it is not kept. */
static int
tlssess_put(struct tlsctx *t, const char *key, SSL_SESSION *sess)
{
    int der = i2d_SSL_SESSION(sess, NULL);
    size_t klen = strlen(key) + 1;
    size_t bytes =
        sizeof(struct tlssess_entry) + klen + TLSSESS_OVERHEAD + (size_t)(der > 0 ? der : 0);
    struct tlssess_entry *e;

    if (der <= 0 || bytes > TLSSESS_BYTES / 4)
        return 0; /* a server that sends a huge chain is not worth remembering */
    if (t->sess == NULL && (t->sess = calloc(1, sizeof *t->sess)) == NULL)
        return 0;
    /* a TLS 1.2 session replaces those of its key; a TLS 1.3 ticket joins them, up to
     * TLSSESS_TICKETS (the least recently used go) */
    unsigned same = 0;
    for (struct tlssess_entry *f = tlssess_find(t->sess, NULL, key), *next; f != NULL; f = next) {
        next = tlssess_find(t->sess, f, key);
        if (!tlssess_is13(sess) || !tlssess_is13(f->sess) || ++same >= TLSSESS_TICKETS)
            tlssess_drop(t->sess, f);
    }
    while (t->sess->tail != NULL &&
           (t->sess->n >= TLSSESS_MAX || t->sess->bytes + bytes > TLSSESS_BYTES ||
            tlssess_bytes_total + bytes > TLSSESS_TOTAL))
        tlssess_drop(t->sess, t->sess->tail);
    if (tlssess_bytes_total + bytes > TLSSESS_TOTAL || (e = malloc(sizeof *e + klen)) == NULL)
        return 0;
    e->sess = sess;
    e->bytes = bytes;
    memcpy(e->key, key, klen);
    tlssess_push_front(t->sess, e);
    t->sess->n++;
    t->sess->bytes += bytes;
    tlssess_bytes_total += bytes;
    return 1;
}

/* SSL_CTX_sess_set_new_cb: a server gave a session (a TLS 1.3 ticket may come any time after
 * the handshake). 1 when kept (the reference is ours), 0 otherwise. */
static int
tlssess_new(SSL *ssl, SSL_SESSION *sess)
{
    struct tlssess_ref *r = tlssess_idx >= 0 ? SSL_get_ex_data(ssl, tlssess_idx) : NULL;

    /* the SSL_CTX of another client identity (rebuilt since this socket began): not kept */
    if (r == NULL || !r->t->session_cache || SSL_get_SSL_CTX(ssl) != r->t->client_ctx ||
        !SSL_SESSION_is_resumable(sess))
        return 0;
    if (r->t->verify && SSL_get_verify_result(ssl) != X509_V_OK)
        return 0;
    return tlssess_put(r->t, r->key, sess);
}

void
tlssess_setup(SSL_CTX *ctx, struct tlsctx *t)
{
    if (!t->session_cache || t->dtls) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        return;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tlssess_new);
}

int
tlssess_begin(SSL *ssl, struct tlsctx *t, const char *host, const struct sockaddr *peer)
{
    char where[INET6_ADDRSTRLEN + 16];
    struct tlssess_ref *r;
    struct tlssess_entry *e;
    size_t klen;

    if (!t->session_cache || t->dtls)
        return 0;
    if (tlssess_idx < 0 &&
        (tlssess_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, tlssess_ref_free)) < 0)
        return -1;
    addr_str(peer,
             peer->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in),
             where, sizeof where);
    klen = strlen(host) + strlen(where) + 8;
    if ((r = malloc(sizeof *r + klen)) == NULL)
        return -1;
    r->t = t;
    snprintf(r->key, klen, "%d %s %s", t->verify, host, where);
    if (SSL_set_ex_data(ssl, tlssess_idx, r) != 1) {
        free(r);
        return -1;
    }
    /* the newest usable one; expired or spoiled ones (a fatal error on a connection that used
     * it) go on the way */
    for (e = tlssess_find(t->sess, NULL, r->key); e != NULL;) {
        struct tlssess_entry *next = tlssess_find(t->sess, e, r->key);
        if (SSL_SESSION_get_time(e->sess) + SSL_SESSION_get_timeout(e->sess) >= (long)time(NULL) &&
            SSL_SESSION_is_resumable(e->sess))
            break;
        tlssess_drop(t->sess, e);
        e = next;
    }
    if (e == NULL)
        return 0;
    if (SSL_set_session(ssl, e->sess) != 1 || tlssess_is13(e->sess)) {
        tlssess_drop(t->sess, e); /* a ticket is offered once; the SSL holds its own reference */
        return 0;
    }
    tlssess_unlink(t->sess, e);
    tlssess_push_front(t->sess, e);
    return 0;
}
