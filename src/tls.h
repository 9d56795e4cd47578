/* TLS/DTLS: contexts (context.* methods) and the TLS transport of a socket. */
#ifndef SOCKD_TLS_H
#define SOCKD_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <jansson.h>
#include <openssl/ssl.h>

struct sock;
struct sock_owner;

/* Roles of a context: which SSL_CTX, which certificate. */
enum tlsctx_role {
    TLSCTX_SERVER = 0, /* accepting sockets */
    TLSCTX_CLIENT = 1, /* connecting sockets */
};

/* A certificate of one role with its key and the chain sent after it. */
struct tlsctx_cert {
    X509 *cert;             /* NULL: none */
    EVP_PKEY *key;          /* matches cert */
    STACK_OF(X509) * chain; /* intermediates, may be NULL */
    size_t cost;            /* what it counts as in its context's cost (TLSCTX_COST_*) */
};

/* A server certificate chosen by the name a client asks for (SNI); see tlssni.c. */
struct tlsctx_named {
    struct tlsctx_cert cert;
    char **names;    /* lower case, "*.rest" for a wildcard; malloc'ed with each name */
    unsigned nnames; /* at least 1 */
};

struct tlssess;
struct ident;

/* A context: settings shared by many sockets; refcounted, owned by one client. */
struct tlsctx {
    uint64_t id;              /* handle (same sequence as sockets) */
    struct sock_owner *owner; /* NULL once destroyed or its client is gone */
    int refs;                 /* 1 for the owner's handle + 1 per socket using it */
    struct tlsctx *next;      /* owner's list */
    SSL_CTX *client_ctx;      /* for connecting sockets */
    SSL_CTX *server_ctx;      /* for accepting sockets */
    int verify;               /* verify the peer (client side): chain + host name */
    int verify_client;        /* 0 none, 1 optional, 2 require */
    int dtls, srtp;
    int min_version;             /* TLS1_2_VERSION or TLS1_3_VERSION */
    X509_STORE *store;           /* trust anchors for peer chains (both roles share it) */
    unsigned char *alpn;         /* ALPN list in wire form (length-prefixed), NULL: none */
    unsigned alpn_len;           /* bytes in alpn */
    struct tlsctx_cert certs[2]; /* by enum tlsctx_role */
    char *ciphers;               /* TLS <= 1.2 cipher list; NULL: TLSCTX_CIPHERS */
    char *ciphersuites;          /* TLS 1.3 suites; NULL: OpenSSL's default */
    STACK_OF(X509_CRL) * crls;   /* from crl / crl_file, NULL: none */
    int crl_check;               /* check the peer's chain for revocation */
    int session_cache;           /* client side: resume sessions (tlssess.c) */
    struct tlssess *sess;        /* the client session cache, NULL until the first session */
    struct tlsctx_named *named;  /* server certificates by name, nnamed of them */
    unsigned nnamed;
    struct ident *ident; /* the maker, whose max-tls-memory-per-uid it counts in (referenced) */
    size_t cost;         /* what it counts as there: TLSCTX_COST_BASE plus its material */
};

/*
 * What a context counts as in its uid's max-tls-memory-per-uid (sockd.conf(5)), from what is
 * known before anything is parsed: BASE for the context itself (its two SSL_CTXs hold about
 * 24 KiB), tlsctx_text_cost for certificate, key, CA or CRL text loaded into it, GENERATED for a
 * key and certificate it made itself.
 */
#define TLSCTX_COST_BASE (32u << 10)
#define TLSCTX_COST_BLOCK (4u << 10)
#define TLSCTX_COST_GENERATED (8u << 10)
/* What len bytes of PEM text count as: twice the bytes, plus TLSCTX_COST_BLOCK for each
 * "-----BEGIN" block in it. OpenSSL keeps about 4 KiB for each certificate it parsed whatever
 * its size (measured: 470 P-256 certificates, 193 KB of PEM, take 1.95 MB in a store; 100
 * RSA-2048 ones, 95 KB, take 376 KB), so blocks count as well as bytes. */
size_t tlsctx_text_cost(const char *text, size_t len);

/* TLS 1.2 default: the AEAD suites of Mozilla's "intermediate" profile, without DHE
 * (sockd-protocol.7, TLS, "Cipher suites"). */
#define TLSCTX_CIPHERS                                                                             \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
/* Longest ciphers / ciphersuites text. */
#define TLSCTX_CIPHERS_MAX 1024
/* Most CRL text (crl and crl_file together) one context takes. */
#define TLSCTX_CRL_MAX (4u << 20)
/* Most server certificates chosen by name per context, names per certificate. */
#define TLSCTX_NAMED_MAX 64
#define TLSCTX_NAMES_MAX 64
/* Most subject_alt_names of a generated certificate. */
#define TLSCTX_SAN_MAX 32
/* Longest validity of a generated certificate, in days. */
#define TLSCTX_DAYS_MAX 825

/* Key types of context.generate_certificate. */
enum tlsctx_keytype {
    TLSCTX_KEY_EC_P256 = 0, /* ECDSA P-256 (the default) */
    TLSCTX_KEY_ED25519,     /* Ed25519 */
    TLSCTX_KEY_RSA2048,     /* RSA 2048 bits */
    TLSCTX_KEY_RSA3072,     /* RSA 3072 bits */
};

/* What context.generate_certificate makes. */
struct tlsctx_gen {
    const char *common_name;
    int days;
    enum tlsctx_keytype key;
    const char *const *sans; /* DNS names and IP addresses; nsans of them (0: none) */
    unsigned nsans;
};

/* SRTP profiles offered and accepted when a DTLS context has srtp set. */
#define TLSCTX_SRTP_PROFILES "SRTP_AEAD_AES_128_GCM:SRTP_AES128_CM_SHA1_80"
/* Longest "sha-512 AB:CD:..." fingerprint text, with its NUL. */
#define TLSCTX_FP_MAX (8 + 64 * 3)

/* Context registry (tlsctx.c). */
struct tlsctx *tlsctx_get(struct sock_owner *o, uint64_t id); /* NULL if not o's */
void tlsctx_ref(struct tlsctx *t);
void tlsctx_unref(struct tlsctx *t);
/* The owner is gone: drop its handles (sockets keep their references). */
void tlsctx_owner_gone(struct sock_owner *o);
/* Live contexts, for daemon.stats. */
unsigned tlsctx_count(void);
/* Contexts o holds handles to. */
unsigned tlsctx_owned(const struct sock_owner *o);

/* A new context with the defaults (verify on, TLS 1.2 minimum, no store, no SSL_CTX yet), made
 * for who and counted in its uid's budget at TLSCTX_COST_BASE. NULL with errno EDQUOT when the
 * budget has no room, ENOMEM. */
struct tlsctx *tlsctx_new(struct ident *who);
/* Count n more bytes for t in its uid's budget; -1 with errno EDQUOT (nothing counted) when that
 * would pass max-tls-memory-per-uid. */
int tlsctx_charge(struct tlsctx *t, size_t n);
/* Count n bytes less for t (what a failed step had charged, or material it let go). */
void tlsctx_refund(struct tlsctx *t, size_t n);
/* Trust anchors: PEM text and/or the content of a CA file (flen bytes of PEM certificates and
 * CRLs, read by the caller); neither means the system store. -1 with detail when the PEM is
 * bad, -2 when the file is. */
int tlsctx_set_ca(struct tlsctx *t, const char *pem, const char *file, size_t flen, char *detail,
                  size_t dlen);
/* Replace the ALPN list (wire form, copied; len 0 clears it). -1 on ENOMEM. */
int tlsctx_set_alpn(struct tlsctx *t, const unsigned char *wire, unsigned len);
/* (Re)build the SSL_CTX of each role in the mask (1 << role) from the settings; on failure the
 * old ones stay. -1 with detail. */
int tlsctx_build(struct tlsctx *t, unsigned roles, char *detail, size_t dlen);
/* Give t a handle and put it on o's list (the list holds the reference t was created with). */
void tlsctx_attach(struct tlsctx *t, struct sock_owner *o);
/* context.destroy: off the owner's list, owner's reference dropped. */
void tlsctx_destroy(struct tlsctx *t);
/* Install a certificate for a role (the context takes the objects only on success: on
 * failure the caller still owns them); cost, charged by the caller, is refunded with it when it
 * goes, as the replaced one's is here. -1 with detail when the key does not match the
 * certificate, -2 with detail when OpenSSL refuses it otherwise. */
int tlsctx_set_cert(struct tlsctx *t, enum tlsctx_role role, X509 *cert, EVP_PKEY *key,
                    STACK_OF(X509) * chain, size_t cost, char *detail, size_t dlen);
/* Free a certificate of t and refund its cost. */
void tlsctx_cert_drop(struct tlsctx *t, struct tlsctx_cert *tc);
/* Remove a role's certificate. */
int tlsctx_clear_cert(struct tlsctx *t, enum tlsctx_role role, char *detail, size_t dlen);
/* Make and install a self-signed certificate and key as g says (cost as for tlsctx_set_cert).
 * -1 with detail; -2 with detail when an RSA key is not ready yet (keygen.h: the caller may try
 * again later). */
int tlsctx_generate(struct tlsctx *t, enum tlsctx_role role, const struct tlsctx_gen *g,
                    size_t cost, char *detail, size_t dlen);
/* The key type named by text ("ec-p256", ...); -1 if none. */
int tlsctx_keytype(const char *text);
/* Whether text is a DNS name (letters, digits, '-', '.'; labels of 1..63, 253 in all), after a
 * leading "*." when wildcard is set. */
int tlsctx_dns_name_ok(const char *text, int wildcard);
/* Check and keep the cipher list (TLS <= 1.2) and the TLS 1.3 suites (NULL: the default).
 * -1 with detail when ciphers is bad, -2 when suites are. Applied by the next tlsctx_build. */
int tlsctx_set_ciphers(struct tlsctx *t, const char *ciphers, const char *suites, char *detail,
                       size_t dlen);
/* Add the CRLs of PEM text (len bytes) to those checked; -1 with detail when there is none or a
 * block is bad. Applied by the next tlsctx_build. */
int tlsctx_add_crls(struct tlsctx *t, const char *text, size_t len, char *detail, size_t dlen);
/* Whether the context can serve TLS: a default or a named server certificate. */
int tlsctx_serves(const struct tlsctx *t);

/* Server certificates by name (tlssni.c). */
/* Install a certificate for names (n of them, checked by the caller): the names move to it from
 * any other certificate, and one left without names is dropped. The context takes the objects
 * only on success; cost as for tlsctx_set_cert. -1 with detail when the key does not match, -3
 * when the context has TLSCTX_NAMED_MAX certificates already. */
int tlssni_add(struct tlsctx *t, const char *const *names, unsigned n, X509 *cert, EVP_PKEY *key,
               STACK_OF(X509) * chain, size_t cost, char *detail, size_t dlen);
/* Set the name callbacks on a server SSL_CTX of t. */
void tlssni_setup(SSL_CTX *ctx, struct tlsctx *t);
/* Free every named certificate. */
void tlssni_free(struct tlsctx *t);

/* Client session cache (tlssess.c): at most TLSSESS_MAX sessions and TLSSESS_BYTES per context,
 * TLSSESS_TOTAL in the daemon, the least recently used going first. */
#define TLSSESS_MAX 256
#define TLSSESS_BYTES (1u << 20)
#define TLSSESS_TOTAL (64u << 20)
/* Turn on caching of new sessions on a client SSL_CTX of t. */
void tlssess_setup(SSL_CTX *ctx, struct tlsctx *t);
/* A connecting ssl of t to host (may be "") at peer: offer the cached session of the same key
 * and keep the key for the sessions the server gives. -1 on ENOMEM. */
int tlssess_begin(SSL *ssl, struct tlsctx *t, const char *host, const struct sockaddr *peer);
/* Forget every session of t (its client identity changed, or it is freed). */
void tlssess_flush(struct tlsctx *t);
/* Switch to DTLS (and SRTP when srtp): rebuilds both SSL_CTXs. -1 with detail. */
int tlsctx_set_dtls(struct tlsctx *t, int srtp, char *detail, size_t dlen);

/* PEM and fingerprints (tlsctx.c). */
/* Every certificate in the PEM text, in order (a new stack, at least one). With key non-NULL,
 * also the first private key there (*key NULL if none). NULL with detail when there is no
 * certificate or a block is bad. */
STACK_OF(X509) * tlsctx_pem_certs(const char *pem, EVP_PKEY **key, char *detail, size_t dlen);
/* The first private key in the PEM text (encrypted keys are refused). NULL with detail. */
EVP_PKEY *tlsctx_pem_key(const char *pem, char *detail, size_t dlen);
/* The digest of an RFC 8122 hash name ("sha-256", ...); NULL if unknown. */
const EVP_MD *tlsctx_md(const char *name);
/* "sha-256 AB:CD:..." of a certificate (name as given to tlsctx_md); -1 on failure. */
int tlsctx_fingerprint(X509 *x, const char *md_name, char *out, size_t n);
/* Drain OpenSSL's error queue into detail ("; "-joined reasons), or fallback if empty. */
void tlsctx_errors(char *detail, size_t dlen, const char *fallback);
/* A BIO over a stream socket whose every recv and send is MSG_DONTWAIT, whatever the file's
 * O_NONBLOCK (an attached socket's is the client's); never closes fd. Caller owns it; NULL on
 * ENOMEM. */
BIO *tlsctx_sock_bio(int fd);

/* TLS on a socket (transport_tls.c). The socket's fd is connected (TCP) when called. */
/* Make the TLS state of s (s->tls) if it has none; -1 on ENOMEM. */
int tls_alloc(struct sock *s);
/* Begin TLS as client (server=0, server_name for SNI and verification) or server; -1 with detail.
 * On success s->tls->ssl is set and s holds one reference to t in s->tls->ctx (taken here unless
 * it already is t); on failure s is unchanged but for s->tls, which may have been made. */
int tls_start(struct sock *s, struct tlsctx *t, int server, const char *server_name, char *detail,
              size_t dlen);
/* Drive the handshake: 1 done, 0 in progress (s->tls->want set), -1 failed (detail set). */
int tls_handshake(struct sock *s, char *detail, size_t dlen);
/* Queue close_notify: 1 sent (or nothing to do), 0 must wait (s->tls->want set). */
int tls_close_notify(struct sock *s);
/* The `tls` object of sockd-protocol.7, THE TLS OBJECT (new reference). */
json_t *tls_info(struct sock *s);
/* Free the SSL, drop the context reference and free the TLS state (s->tls becomes NULL). */
void tls_free(struct sock *s);
/* Text of the last failure of a transport_tls read or write (EPROTO and the like); valid until
 * the next TLS call. */
const char *tls_last_error(void);

/* DTLS on a udp socket (sock_dtls.c). */
/* Largest payload of one socket.send on a dtls socket: what one record carries. */
#define DTLS_MAX_PAYLOAD 16384
/* Client side: put ssl on a datagram BIO over s->fd, connected to s->remote; 1 on success. */
int dtls_attach(struct sock *s, SSL *ssl);
/* Before an SSL call: clear a pending ICMP error of the fd so it cannot fail the call. */
void dtls_pre(struct sock *s);
/* After an SSL call: (re)arm or stop the retransmission timer from DTLSv1_get_timeout. */
void dtls_timer_update(struct sock *s);
/* An errno of a DTLS read/write/handshake that does not end the association (ICMP reports). */
int dtls_transient(int err);
/* One record: >0 bytes, 0 the peer sent close_notify, -1 errno (EAGAIN: nothing now). */
ssize_t dtls_recv(struct sock *s, void *p, size_t n);
/* One datagram as one record: n, or -1 errno (EAGAIN: try later, also while handshaking). */
ssize_t dtls_send(struct sock *s, const void *p, size_t n);
/* Listener: the next peer past the cookie exchange, on a new UDP fd bound to the listener's
 * address and connected to it (*peer, *plen), with its SSL in *sslp; -1 errno (EAGAIN: none). */
int dtls_accept(struct sock *l, struct sockaddr_storage *peer, socklen_t *plen, SSL **sslp);
/* An accepted socket takes the SSL dtls_accept made (the handshake continues on s->fd). */
void dtls_adopt(struct sock *s, SSL *ssl);
/* Stop the timer and free the DTLS state (listener SSL included); tls_free calls it. */
void dtls_free(struct sock *s);
/* Record that bound s holds its local port with SO_REUSEPORT; -1 on ENOMEM. */
int dtls_port_hold(struct sock *s);
/* Forget s in the port registry (closing); nothing if it held none. */
void dtls_port_release(struct sock *s);
/* Whether a socket of another client holds local (IP) with SO_REUSEPORT: then s must not bind. */
int dtls_port_taken(const struct sock *s, const struct sockaddr *local);

#endif
