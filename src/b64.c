#include "config.h"

#include <string.h>

#include <openssl/evp.h>

#include "b64.h"

size_t
b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t
b64_encode(const void *in, size_t n, char *out)
{
    size_t done = 0, w = 0;
    /* EVP_EncodeBlock takes an int length: feed it in chunks that are multiples of 3. */
    while (n - done > 0) {
        size_t chunk = n - done > (size_t)3 << 24 ? (size_t)3 << 24 : n - done;
        w += (size_t)EVP_EncodeBlock((unsigned char *)out + w, (const unsigned char *)in + done,
                                     (int)chunk);
        done += chunk;
    }
    out[w] = '\0';
    return w;
}

static int
b64_char_ok(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

long
b64_decode(const char *in, size_t n, unsigned char *out)
{
    size_t pad = 0;

    if (n % 4 != 0)
        return -1;
    if (n == 0)
        return 0;
    if (in[n - 1] == '=')
        pad = in[n - 2] == '=' ? 2 : 1;
    /* EVP_DecodeBlock skips whitespace and accepts '=' mid-text; be strict first. */
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char_ok((unsigned char)in[i]))
            return -1;
    /* Canonical form: the bits the padding leaves over must be zero. */
    if (pad > 0) {
        static const char alphabet[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const char *last = strchr(alphabet, in[n - pad - 1]);
        if (last == NULL || ((last - alphabet) & (pad == 1 ? 0x3 : 0xf)) != 0)
            return -1;
    }
    size_t done = 0, w = 0;
    while (done < n) {
        size_t chunk = n - done > (size_t)4 << 24 ? (size_t)4 << 24 : n - done;
        int r = EVP_DecodeBlock(out + w, (const unsigned char *)in + done, (int)chunk);
        if (r < 0)
            return -1;
        w += (size_t)r;
        done += chunk;
    }
    return (long)(w - pad);
}
