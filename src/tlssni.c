#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tls.h"

/*
 * Server certificates chosen by the name a client asks for (sockd-protocol.7,
 * context.set_server_certificate): an exact name first, then a wildcard "*.rest" for a name of
 * one more label, else the context's default certificate; with no default, a name that
 * matches nothing is refused with an unrecognized_name alert.
 */

/* Free a named certificate of t, refunding its cost. */
static void
tlssni_named_free(struct tlsctx *t, struct tlsctx_named *n)
{
    tlsctx_cert_drop(t, &n->cert);
    for (unsigned i = 0; i < n->nnames; i++)
        free(n->names[i]);
    free(n->names);
    memset(n, 0, sizeof *n);
}

void
tlssni_free(struct tlsctx *t)
{
    for (unsigned i = 0; i < t->nnamed; i++)
        tlssni_named_free(t, &t->named[i]);
    free(t->named);
    t->named = NULL;
    t->nnamed = 0;
}

/* Whether name (lower case) is one of list's n names. */
static int
tlssni_listed(const char *name, const char *const *list, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (strcasecmp(name, list[i]) == 0)
            return 1;
    return 0;
}

/* The certificate for a name a client asked for, NULL if none matches. */
static const struct tlsctx_named *
tlssni_find(const struct tlsctx *t, const char *name)
{
    const char *dot = strchr(name, '.');
    char wild[256];

    for (unsigned i = 0; i < t->nnamed; i++)
        if (tlssni_listed(name, (const char *const *)t->named[i].names, t->named[i].nnames))
            return &t->named[i];
    if (dot == NULL || dot[1] == '\0' ||
        snprintf(wild, sizeof wild, "*%s", dot) >= (int)sizeof wild)
        return NULL;
    for (unsigned i = 0; i < t->nnamed; i++)
        if (tlssni_listed(wild, (const char *const *)t->named[i].names, t->named[i].nnames))
            return &t->named[i];
    return NULL;
}

int
tlssni_add(struct tlsctx *t, const char *const *names, unsigned n, X509 *cert, EVP_PKEY *key,
           STACK_OF(X509) * chain, size_t cost, char *detail, size_t dlen)
{
    struct tlsctx_named fresh = {{cert, key, chain, cost}, NULL, 0}, *grown;
    unsigned keep = 0;

    ERR_clear_error();
    if (X509_check_private_key(cert, key) != 1) {
        tlsctx_errors(detail, dlen, "the key does not match the certificate");
        return -1;
    }
    /* the certificates that keep a name once these move to the new one */
    for (unsigned i = 0; i < t->nnamed; i++) {
        unsigned left = 0;
        for (unsigned j = 0; j < t->named[i].nnames; j++)
            left += !tlssni_listed(t->named[i].names[j], names, n);
        keep += left > 0;
    }
    if (keep >= TLSCTX_NAMED_MAX) {
        snprintf(detail, dlen, "the context has %d certificates chosen by name already",
                 TLSCTX_NAMED_MAX);
        return -3;
    }
    if ((fresh.names = calloc(n, sizeof *fresh.names)) == NULL)
        goto oom;
    for (; fresh.nnames < n; fresh.nnames++) {
        char *c = strdup(names[fresh.nnames]);
        if (c == NULL)
            goto oom;
        for (char *p = c; *p != '\0'; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        fresh.names[fresh.nnames] = c;
    }
    if ((grown = realloc(t->named, (t->nnamed + 1) * sizeof *grown)) == NULL)
        goto oom;
    t->named = grown;
    /* nothing fails from here: move the names, drop certificates left without any */
    unsigned out = 0;
    for (unsigned i = 0; i < t->nnamed; i++) {
        struct tlsctx_named *e = &t->named[i];
        unsigned k = 0;
        for (unsigned j = 0; j < e->nnames; j++) {
            if (tlssni_listed(e->names[j], names, n))
                free(e->names[j]);
            else
                e->names[k++] = e->names[j];
        }
        e->nnames = k;
        if (k == 0)
            tlssni_named_free(t, e);
        else
            t->named[out++] = *e;
    }
    t->named[out++] = fresh;
    t->nnamed = out;
    return 0;
oom:
    for (unsigned i = 0; i < fresh.nnames; i++)
        free(fresh.names[i]);
    free(fresh.names);
    snprintf(detail, dlen, "out of memory");
    return -2;
}

/* Servername callback: with no default certificate, a name nothing matches is refused. */
static int
tlssni_servername(SSL *ssl, int *alert, void *arg)
{
    const struct tlsctx *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    if (t->certs[TLSCTX_SERVER].cert != NULL || (name != NULL && tlssni_find(t, name) != NULL))
        return SSL_TLSEXT_ERR_OK;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Certificate callback: the certificate for the name the client asked for, if one matches (else
 * the SSL_CTX's own, the default). 1 to go on, 0 to fail the handshake. */
static int
tlssni_cert(SSL *ssl, void *arg)
{
    const struct tlsctx *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct tlsctx_named *n = name != NULL ? tlssni_find(t, name) : NULL;

    if (n == NULL)
        return t->certs[TLSCTX_SERVER].cert != NULL;
    /* only this one: a default of another key type must not be picked beside it */
    SSL_certs_clear(ssl);
    return SSL_use_cert_and_key(ssl, n->cert.cert, n->cert.key, n->cert.chain, 1) == 1;
}

void
tlssni_setup(SSL_CTX *ctx, struct tlsctx *t)
{
    SSL_CTX_set_tlsext_servername_callback(ctx, tlssni_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, t);
    SSL_CTX_set_cert_cb(ctx, tlssni_cert, t);
}
