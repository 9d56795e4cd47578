#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "b64.h"
#include "buf.h"
#include "rpc.h"
#include "rpc_priv.h"

/*
 * Large payloads bypass the JSON lexer. A "data" member whose value is a long string of valid
 * base64 is decoded while the line is scanned (the strict decoder is the validation: one walk
 * over the text) and swapped, before parsing, for a short placeholder naming its span; the send
 * methods take the decoded bytes (rpc_blob), and a placeholder found anywhere else is put back
 * to the original text before the method runs, so what a method sees never changes. A value
 * that does not decode is left in the line for the parser and the method's own checks.
 */
#define RPC_BLOB_MAX 64
static struct {
    const char *line;
    size_t off[RPC_BLOB_MAX], len[RPC_BLOB_MAX];
    size_t boff[RPC_BLOB_MAX], blen[RPC_BLOB_MAX]; /* decoded, in bytes */
    unsigned char *bytes; /* every value of the line decoded, one allocation */
    size_t used;
    int n;
} rpc_blobs;
static char rpc_blob_nonce[24]; /* "sockd-blob-" + 8 random hex; a prefix no client can guess */

void
rpc_blob_init(void)
{
    unsigned char r[4];
    if (rpc_blob_nonce[0] != '\0')
        return;
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0x5a, sizeof r);
    snprintf(rpc_blob_nonce, sizeof rpc_blob_nonce, "sockd-blob-%02x%02x%02x%02x:", r[0], r[1],
             r[2], r[3]);
}

void
rpc_blob_reset(void)
{
    free(rpc_blobs.bytes);
    rpc_blobs.bytes = NULL;
    rpc_blobs.used = 0;
    rpc_blobs.n = 0;
}

/* Decode the value [s, s+n) of the line as blob rpc_blobs.n; 0, or -1 if it is not base64. */
static int
rpc_blob_decode(const char *line, size_t len, size_t s, size_t n)
{
    if (rpc_blobs.bytes == NULL) {
        /* room for every value of the line: the sum of their n / 4 * 3 is at most this */
        rpc_blobs.bytes = malloc(len / 4 * 3 + 3);
        if (rpc_blobs.bytes == NULL)
            return -1; /* the parser takes the line as it is */
        rpc_blobs.used = 0;
    }
    long dl = b64_decode(line + s, n, rpc_blobs.bytes + rpc_blobs.used);
    if (dl < 0)
        return -1;
    rpc_blobs.boff[rpc_blobs.n] = rpc_blobs.used;
    rpc_blobs.blen[rpc_blobs.n] = (size_t)dl;
    rpc_blobs.used += (size_t)dl;
    return 0;
}

char *
rpc_blob_scan(const char *line, size_t len, size_t *outlen)
{
    struct buf out = {0};
    size_t i = 0, copied = 0;
    int key_data = 0, after_colon = 0;

    rpc_blob_reset();
    rpc_blobs.line = line;
    while (i < len) {
        char ch = line[i];
        if (ch == '"') {
            size_t s = i + 1, e = s;
            int escaped = 0;
            for (;;) {
                const char *q = memchr(line + e, '"', len - e);
                if (q == NULL) {
                    buf_free(&out);
                    return NULL; /* unterminated: let the parser report it */
                }
                e = (size_t)(q - line);
                size_t bs = 0;
                while (e - bs > s && line[e - bs - 1] == '\\')
                    bs++;
                if (bs > 0)
                    escaped = 1;
                if (bs % 2 == 0)
                    break;
                e++;
            }
            size_t n = e - s;
            if (after_colon && !escaped && n >= RPC_BLOB_MIN && rpc_blobs.n < RPC_BLOB_MAX) {
                if (rpc_blob_decode(line, len, s, n) == 0) {
                    char ph[48];
                    int pl = snprintf(ph, sizeof ph, "%s%d", rpc_blob_nonce, rpc_blobs.n);
                    if (buf_append(&out, line + copied, s - copied) < 0 ||
                        buf_append(&out, ph, (size_t)pl) < 0) {
                        buf_free(&out);
                        rpc_blob_reset();
                        return NULL;
                    }
                    rpc_blobs.off[rpc_blobs.n] = s;
                    rpc_blobs.len[rpc_blobs.n++] = n;
                    copied = e;
                }
            }
            key_data = !after_colon && n == 4 && memcmp(line + s, "data", 4) == 0;
            after_colon = 0;
            i = e + 1;
            continue;
        }
        if (ch == ':') {
            after_colon = key_data;
            key_data = 0;
        } else if (ch != ' ' && ch != '\t' && ch != '\r' && ch != '\n') {
            key_data = after_colon = 0;
        }
        i++;
    }
    if (rpc_blobs.n == 0) {
        buf_free(&out);
        rpc_blob_reset();
        return NULL;
    }
    if (buf_append(&out, line + copied, len - copied) < 0) {
        buf_free(&out);
        rpc_blob_reset();
        return NULL;
    }
    *outlen = buf_len(&out);
    char *copy = malloc(buf_len(&out) + 1);
    if (copy != NULL)
        memcpy(copy, buf_head(&out), buf_len(&out));
    buf_free(&out);
    if (copy == NULL)
        rpc_blob_reset();
    return copy;
}

int
rpc_blob(const json_t *value, const char **text, size_t *len, const unsigned char **bytes,
         size_t *nbytes)
{
    size_t nl = strlen(rpc_blob_nonce);
    const char *v = json_string_value(value);
    if (rpc_blobs.n == 0 || v == NULL || strncmp(v, rpc_blob_nonce, nl) != 0)
        return 0;
    int k = atoi(v + nl);
    if (k < 0 || k >= rpc_blobs.n)
        return 0;
    *text = rpc_blobs.line + rpc_blobs.off[k];
    *len = rpc_blobs.len[k];
    if (bytes != NULL) {
        *bytes = rpc_blobs.bytes + rpc_blobs.boff[k];
        *nbytes = rpc_blobs.blen[k];
    }
    return 1;
}

void
rpc_blob_restore(json_t *v, const json_t *keep)
{
    const char *key, *t;
    size_t i, n;
    json_t *m;

    if (json_is_object(v)) {
        json_object_foreach(v, key, m)
        {
            if (m != keep && rpc_blob(m, &t, &n, NULL, NULL))
                json_object_set_new(v, key, json_stringn(t, n));
            else
                rpc_blob_restore(m, keep);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            if (rpc_blob(m, &t, &n, NULL, NULL))
                json_array_set_new(v, i, json_stringn(t, n));
            else
                rpc_blob_restore(m, keep);
        }
    }
}

void
rpc_blob_put_back(json_t *v, const struct rpc_method *m, json_t *params)
{
    const json_t *keep = NULL;
    if (rpc_blobs.n == 0)
        return;
    if (m != NULL && (m->flags & RPC_F_PAYLOAD))
        keep = json_object_get(params, "data");
    rpc_blob_restore(v, keep);
}
