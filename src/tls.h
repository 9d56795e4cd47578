/* TLS/DTLS: contexts (context.* methods) and the TLS transport of a socket. */
#ifndef SOCKD_TLS_H
#define SOCKD_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <openssl/ssl.h>

struct client;
struct sock;

/* A context: settings shared by many sockets; refcounted, owned by one client. */
struct tlsctx {
    uint64_t id;          /* handle (same sequence as sockets) */
    struct client *owner; /* NULL once destroyed or its client is gone */
    int refs;             /* 1 for the owner's handle + 1 per socket using it */
    struct tlsctx *next;  /* owner's list */
    SSL_CTX *client_ctx;  /* for connecting sockets */
    SSL_CTX *server_ctx;  /* for accepting sockets */
    int verify;           /* verify the peer (client side): chain + host name */
    int verify_client;    /* 0 none, 1 optional, 2 require */
    int dtls, srtp;
    /* the helper may add fields here */
};

/* Context registry (tlsctx.c). */
struct tlsctx *tlsctx_get(struct client *c, uint64_t id); /* NULL if not this client's */
void tlsctx_ref(struct tlsctx *t);
void tlsctx_unref(struct tlsctx *t);
/* The client is gone: drop its handles (sockets keep their references). */
void tlsctx_client_gone(struct client *c);
/* Live contexts, for daemon.stats. */
unsigned tlsctx_count(void);

/* TLS on a socket (transport_tls.c). The socket's fd is connected (TCP) when called. */
/* Begin TLS as client (server=0, server_name for SNI and verification) or server; -1 with detail.
 */
int tls_start(struct sock *s, struct tlsctx *t, int server, const char *server_name, char *detail,
              size_t dlen);
/* Drive the handshake: 1 done, 0 in progress (s->tls_want set), -1 failed (detail set). */
int tls_handshake(struct sock *s, char *detail, size_t dlen);
/* Queue close_notify: 1 sent (or nothing to do), 0 must wait (s->tls_want set). */
int tls_close_notify(struct sock *s);
/* The `tls` object of PROTOCOL.md section 7 (new reference). */
json_t *tls_info(struct sock *s);
/* Free the SSL and drop the context reference. */
void tls_free(struct sock *s);

#endif
