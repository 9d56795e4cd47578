#include "config.h"

#include <stdint.h>
#include <string.h>

#include "b64.h"

/*
 * Table-driven: the encoder turns 12 bits into two characters with one lookup, the decoder
 * turns each character into its bits already shifted into place, so four lookups OR'ed
 * together are three bytes, and a character outside the alphabet sets a bit no valid one
 * does, checked once for the whole text. The tables are constant, built by the preprocessor.
 */

/* The value of an alphabet character, -1 for any other byte. */
#define B64_VAL(c)                                                                                 \
    ((c) >= 'A' && (c) <= 'Z'   ? (c) - 'A'                                                        \
     : (c) >= 'a' && (c) <= 'z' ? (c) - 'a' + 26                                                   \
     : (c) >= '0' && (c) <= '9' ? (c) - '0' + 52                                                   \
     : (c) == '+'               ? 62                                                               \
     : (c) == '/'               ? 63                                                               \
                                : -1)
/* The character of a 6-bit value. */
#define B64_CHR(v)                                                                                 \
    ((v) < 26    ? 'A' + (v)                                                                       \
     : (v) < 52  ? 'a' + (v)-26                                                                    \
     : (v) < 62  ? '0' + (v)-52                                                                    \
     : (v) == 62 ? '+'                                                                             \
                 : '/')

#define B64_BAD 0x01000000u /* above the 24 bits of a block */

/* Character k of a block, its bits where they land in the 24-bit word (byte 0 = out[0]). */
#define B64_D(c, k)                                                                                \
    (B64_VAL(c) < 0 ? B64_BAD                                                                      \
     : (k) == 0     ? (uint32_t)B64_VAL(c) << 2                                                    \
     : (k) == 1     ? (uint32_t)B64_VAL(c) >> 4 | ((uint32_t)B64_VAL(c) & 0xf) << 12               \
     : (k) == 2     ? ((uint32_t)B64_VAL(c) >> 2) << 8 | ((uint32_t)B64_VAL(c) & 0x3) << 22        \
                    : (uint32_t)B64_VAL(c) << 16)
#define B64_D0(c) B64_D(c, 0)
#define B64_D1(c) B64_D(c, 1)
#define B64_D2(c) B64_D(c, 2)
#define B64_D3(c) B64_D(c, 3)
#define B64_E(v)                                                                                   \
    {                                                                                              \
        B64_CHR((v) >> 6), B64_CHR((v)&63)                                                         \
    }

#define B64_R4(F, n) F((n)), F((n) + 1), F((n) + 2), F((n) + 3)
#define B64_R16(F, n) B64_R4(F, (n)), B64_R4(F, (n) + 4), B64_R4(F, (n) + 8), B64_R4(F, (n) + 12)
#define B64_R64(F, n)                                                                              \
    B64_R16(F, (n)), B64_R16(F, (n) + 16), B64_R16(F, (n) + 32), B64_R16(F, (n) + 48)
#define B64_R256(F, n)                                                                             \
    B64_R64(F, (n)), B64_R64(F, (n) + 64), B64_R64(F, (n) + 128), B64_R64(F, (n) + 192)
#define B64_R1024(F, n)                                                                            \
    B64_R256(F, (n)), B64_R256(F, (n) + 256), B64_R256(F, (n) + 512), B64_R256(F, (n) + 768)

static const uint32_t b64_d0[256] = {B64_R256(B64_D0, 0)};
static const uint32_t b64_d1[256] = {B64_R256(B64_D1, 0)};
static const uint32_t b64_d2[256] = {B64_R256(B64_D2, 0)};
static const uint32_t b64_d3[256] = {B64_R256(B64_D3, 0)};
/* Two characters for each 12-bit value. */
static const char b64_e12[4096][2] = {B64_R1024(B64_E, 0), B64_R1024(B64_E, 1024),
                                      B64_R1024(B64_E, 2048), B64_R1024(B64_E, 3072)};
static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
b64_encoded_len(size_t n)
{
    return (n + 2) / 3 * 4;
}

size_t
b64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *p = in;
    char *o = out;
    size_t i = 0;

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Six bytes in from one 8-byte load (two to spare), eight characters out in one store. */
    for (; n - i >= 8; i += 6, o += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        w = __builtin_bswap64(w);
        uint16_t c[4];
        memcpy(&c[0], b64_e12[(w >> 52) & 0xfff], 2);
        memcpy(&c[1], b64_e12[(w >> 40) & 0xfff], 2);
        memcpy(&c[2], b64_e12[(w >> 28) & 0xfff], 2);
        memcpy(&c[3], b64_e12[(w >> 16) & 0xfff], 2);
        memcpy(o, c, 8);
    }
#endif
    for (; n - i >= 3; i += 3, o += 4) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        memcpy(o, b64_e12[v >> 12], 2);
        memcpy(o + 2, b64_e12[v & 0xfff], 2);
    }
    if (n - i > 0) {
        uint32_t v = (uint32_t)p[i] << 16 | (n - i == 2 ? (uint32_t)p[i + 1] << 8 : 0);
        o[0] = b64_chars[v >> 18];
        o[1] = b64_chars[(v >> 12) & 63];
        o[2] = n - i == 2 ? b64_chars[(v >> 6) & 63] : '=';
        o[3] = '=';
        o += 4;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* The three bytes of a decoded block (the low 24 bits of x, byte 0 first). */
static inline void
b64_put3(unsigned char *o, uint32_t x)
{
    o[0] = (unsigned char)x;
    o[1] = (unsigned char)(x >> 8);
    o[2] = (unsigned char)(x >> 16);
}

long
b64_decode(const char *in, size_t n, unsigned char *out)
{
    const unsigned char *p = (const unsigned char *)in;
    unsigned char *o = out;
    uint32_t err = 0, x;

    if (n % 4 != 0)
        return -1;
    if (n == 0)
        return 0;
    /* Every block but the last, which may be padded. */
    const unsigned char *last = p + n - 4;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Four bytes stored, three kept: the fourth lands where the next block goes. */
    for (; last - p >= 8; p += 8, o += 6) {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
        uint32_t y = b64_d0[p[4]] | b64_d1[p[5]] | b64_d2[p[6]] | b64_d3[p[7]];
        err |= x | y;
        uint64_t w = (uint64_t)x | (uint64_t)y << 24;
        memcpy(o, &w, 8);
    }
    for (; p < last; p += 4, o += 3) {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
        err |= x;
        memcpy(o, &x, 4);
    }
#else
    for (; p < last; p += 4, o += 3) {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
        err |= x;
        b64_put3(o, x);
    }
#endif
    /* Canonical form: the bits the padding leaves over (the bytes it drops) must be zero. */
    size_t keep = 3;
    if (p[3] != '=') {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
    } else if (p[2] != '=') {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]];
        err |= x & 0xff0000 ? B64_BAD : 0;
        keep = 2;
    } else {
        x = b64_d0[p[0]] | b64_d1[p[1]];
        err |= x & 0xffff00 ? B64_BAD : 0;
        keep = 1;
    }
    err |= x;
    if (err & B64_BAD) /* a character outside the alphabet, or not canonical */
        return -1;
    unsigned char tail[3];
    b64_put3(tail, x);
    memcpy(o, tail, keep);
    return (long)((size_t)(o - out) + keep);
}
