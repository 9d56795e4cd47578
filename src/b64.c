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

/* 1 for the 64 characters of the alphabet (padding excluded). */
static const unsigned char b64_alphabet[256] = {
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1,
    ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['+'] = 1, ['/'] = 1,
};

int
b64_is_text(const char *in, size_t n)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t i = 0;
    while (i < n && b64_alphabet[p[i]])
        i++;
    while (i < n && p[i] == '=')
        i++;
    return i == n;
}

static int
b64_char_ok(unsigned char c)
{
    return b64_alphabet[c];
}

/* Decode; screened: b64_is_text already accepted in, so the alphabet is not checked again. */
static long
b64_decode_checked(const char *in, size_t n, unsigned char *out, int screened)
{
    size_t pad = 0;

    if (n % 4 != 0)
        return -1;
    if (n == 0)
        return 0;
    if (in[n - 1] == '=')
        pad = in[n - 2] == '=' ? 2 : 1;
    /* EVP_DecodeBlock skips whitespace and accepts '=' mid-text; be strict first. */
    for (size_t i = 0; !screened && i < n - pad; i++)
        if (!b64_char_ok((unsigned char)in[i]))
            return -1;
    /* Screened text is alphabet then '=' only: a third '=' is caught just below. */
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

long
b64_decode(const char *in, size_t n, unsigned char *out)
{
    return b64_decode_checked(in, n, out, 0);
}

long
b64_decode_screened(const char *in, size_t n, unsigned char *out)
{
    return b64_decode_checked(in, n, out, 1);
}
