#include "config.h"

#include <stdint.h>
#include <string.h>

#include "b64.h"

/*
 * The bulk of long texts goes through AVX2 when the CPU has it (checked once, at the first
 * call): 24 bytes to 32 characters, 32 characters to 24 bytes per step. The vector loops
 * take only whole blocks that stop short of the end; the scalar code below does the rest,
 * the last group and every canonical-form check, so both paths give the same answer.
 */
#if defined(__x86_64__) && defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 5)
#define B64_AVX2 1
#include <immintrin.h>
#endif

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

#ifdef B64_AVX2
/*
 * Encode: 12 bytes per 128-bit lane. A shuffle puts the bytes a, b, c of each group as
 * (b, a, c, b), so the four 6-bit fields sit in the two 16-bit halves where one
 * multiply-high and one multiply-low move them each to the bottom of its own byte. The
 * fields become characters by adding an offset that depends on the range only: one
 * saturating subtract and one compare pick the range, a shuffle looks up the offset.
 * Returns the bytes consumed (a multiple of 24, leaving at least 4 unread: the loads are
 * 16 bytes wide at 0 and 12).
 */
__attribute__((target("avx2"))) static size_t
b64_encode_avx2(const unsigned char *in, size_t n, char *out)
{
    const __m256i spread =
        _mm256_setr_epi8(1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10, /* lane 0 */
                         1, 0, 2, 1, 4, 3, 5, 4, 7, 6, 8, 7, 10, 9, 11, 10);
    /* the offset to the character, by range: 13 for 0..25, 0 for 26..51, 1..12 above */
    const __m256i offset = _mm256_setr_epi8(
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0, /* lane 0 */
        'a' - 26, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52, '0' - 52,
        '0' - 52, '0' - 52, '+' - 62, '/' - 63, 'A', 0, 0);
    size_t i = 0;

    for (; n - i >= 28; i += 24, out += 32) {
        __m256i v = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)(in + i))),
            _mm_loadu_si128((const __m128i *)(const void *)(in + i + 12)), 1);
        v = _mm256_shuffle_epi8(v, spread);
        /* fields 0 and 2 down from bits 10 and 6 (x >> 10, x >> 6 as high halves) */
        __m256i f02 = _mm256_mulhi_epu16(_mm256_and_si256(v, _mm256_set1_epi32(0x0fc0fc00)),
                                         _mm256_set1_epi32(0x04000040));
        /* fields 1 and 3 up from bits 4 and 0 to bit 8 */
        __m256i f13 = _mm256_mullo_epi16(_mm256_and_si256(v, _mm256_set1_epi32(0x003f03f0)),
                                         _mm256_set1_epi32(0x01000010));
        __m256i f = _mm256_or_si256(f02, f13);
        __m256i r = _mm256_subs_epu8(f, _mm256_set1_epi8(51));
        __m256i lt26 = _mm256_cmpgt_epi8(_mm256_set1_epi8(26), f);
        r = _mm256_or_si256(r, _mm256_and_si256(lt26, _mm256_set1_epi8(13)));
        r = _mm256_add_epi8(f, _mm256_shuffle_epi8(offset, r));
        _mm256_storeu_si256((__m256i *)(void *)out, r);
    }
    return i;
}

/*
 * Decode: 32 characters per step. Validity by nibbles: each high nibble has a class bit,
 * each low nibble the bits of the classes it is not valid in, and a character is valid
 * when the two have no bit in common. The value is the character plus an offset looked up
 * by high nibble ('/' moved to its own slot). Two multiply-adds pack four 6-bit values
 * into 24 bits, a shuffle and a permute put the 24 bytes together. Returns the characters
 * consumed of the n given (the caller leaves the last group out): whole steps, stopping at
 * the first one with a character outside the alphabet ('=' included), where the scalar
 * code goes on and rejects the text.
 */
__attribute__((target("avx2"))) static size_t
b64_decode_avx2(const unsigned char *in, size_t n, unsigned char *out)
{
#define B64_X2(...) __VA_ARGS__, __VA_ARGS__
    /* class bits: 0x10 never valid, 0x01 "+/", 0x02 digits, 0x04 "A-O a-o", 0x08 "P-Z p-z" */
    const __m256i hi_class =
        _mm256_setr_epi8(B64_X2(0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10,
                                0x10, 0x10, 0x10, 0x10, 0x10));
    const __m256i lo_bad = _mm256_setr_epi8(B64_X2(0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                                                   0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a));
    /* by high nibble, '/' (0x2f) at 1: the value minus the character */
    const __m256i delta = _mm256_setr_epi8(B64_X2(0, 63 - '/', 62 - '+', 52 - '0', -'A', -'A',
                                                  26 - 'a', 26 - 'a', 0, 0, 0, 0, 0, 0, 0, 0));
    const __m256i gather =
        _mm256_setr_epi8(B64_X2(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1));
#undef B64_X2
    size_t i = 0;

    for (; n - i >= 32; i += 32, out += 24) {
        __m256i c = _mm256_loadu_si256((const __m256i *)(const void *)(in + i));
        __m256i hi = _mm256_and_si256(_mm256_srli_epi32(c, 4), _mm256_set1_epi8(0x0f));
        __m256i lo = _mm256_and_si256(c, _mm256_set1_epi8(0x0f));
        __m256i bad =
            _mm256_and_si256(_mm256_shuffle_epi8(lo_bad, lo), _mm256_shuffle_epi8(hi_class, hi));
        if (!_mm256_testz_si256(bad, bad))
            break;
        __m256i slot = _mm256_add_epi8(hi, _mm256_cmpeq_epi8(c, _mm256_set1_epi8('/')));
        __m256i v = _mm256_add_epi8(c, _mm256_shuffle_epi8(delta, slot));
        /* (v0 << 6 | v1, v2 << 6 | v3) in 16 bits, then v0 v1 v2 v3 in 24 */
        v = _mm256_maddubs_epi16(v, _mm256_set1_epi32(0x01400140));
        v = _mm256_madd_epi16(v, _mm256_set1_epi32(0x00011000));
        v = _mm256_shuffle_epi8(v, gather);
        v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 3, 7));
        _mm_storeu_si128((__m128i *)(void *)out, _mm256_castsi256_si128(v));
        _mm_storel_epi64((__m128i *)(void *)(out + 16), _mm256_extracti128_si256(v, 1));
    }
    return i;
}

/* -1 not yet decided, 0 scalar, 1 AVX2 (a race to decide would write the same value). */
static int b64_avx2 = -1;

static int
b64_use_avx2(void)
{
    if (b64_avx2 < 0) {
        __builtin_cpu_init();
        b64_avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return b64_avx2;
}
#endif

void
b64_force_scalar(int on)
{
#ifdef B64_AVX2
    b64_avx2 = on ? 0 : -1;
#else
    (void)on;
#endif
}

const char *
b64_path(void)
{
#ifdef B64_AVX2
    if (b64_use_avx2())
        return "avx2";
#endif
    return "scalar";
}

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

#ifdef B64_AVX2
    if (n >= 28 && b64_use_avx2()) {
        i = b64_encode_avx2(p, n, o);
        o += i / 3 * 4;
    }
#endif
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
#ifdef B64_AVX2
    if (n >= 36 && b64_use_avx2()) {
        size_t done = b64_decode_avx2(p, n - 4, o);
        p += done;
        o += done / 4 * 3;
    }
#endif
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* Four bytes stored, three kept: the fourth lands where the next block goes. */
    for (; last - p >= 8; p += 8, o += 6) {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
        uint32_t y = b64_d0[p[4]] | b64_d1[p[5]] | b64_d2[p[6]] | b64_d3[p[7]];
        err |= x | y;
        uint64_t w = (uint64_t)x | (uint64_t)y << 24;
        memcpy(o, &w, 8);
    }
#endif
    for (; p < last; p += 4, o += 3) {
        x = b64_d0[p[0]] | b64_d1[p[1]] | b64_d2[p[2]] | b64_d3[p[3]];
        err |= x;
        b64_put3(o, x);
    }
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
