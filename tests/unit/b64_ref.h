/*
 * The reference the table-driven codec in src/b64.c is held equal to: OpenSSL's
 * EVP_EncodeBlock / EVP_DecodeBlock, with the strictness sockd requires checked first
 * (EVP_DecodeBlock skips whitespace, accepts '=' mid-text and ignores non-zero pad bits).
 * Shared by tests/unit/test_b64.c and tests/fuzz/fuzz_b64.c.
 */
#ifndef SOCKD_B64_REF_H
#define SOCKD_B64_REF_H

#include <stddef.h>
#include <string.h>

#include <openssl/evp.h>

static const char b64_ref_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* EVP_EncodeBlock: out needs (n + 2) / 3 * 4 + 1; returns the length (NUL not counted). */
static inline size_t
b64_ref_encode(const unsigned char *in, size_t n, char *out)
{
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Strict decode through EVP_DecodeBlock: -1 unless canonical padded base64. */
static inline long
b64_ref_decode(const char *in, size_t n, unsigned char *out)
{
    size_t pad = 0;
    if (n % 4 != 0)
        return -1;
    if (n == 0)
        return 0;
    if (in[n - 1] == '=')
        pad = in[n - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++)
        if (in[i] == '\0' || strchr(b64_ref_alphabet, in[i]) == NULL)
            return -1;
    if (pad > 0) {
        const char *last = strchr(b64_ref_alphabet, in[n - pad - 1]);
        if (last == NULL || ((last - b64_ref_alphabet) & (pad == 1 ? 0x3 : 0xf)) != 0)
            return -1;
    }
    int r = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (r < 0)
        return -1;
    return (long)((size_t)r - pad);
}

#endif
