/*
 * Unit tests of base64 (src/b64.c): RFC 4648 vectors, round trips and strictness. The whole
 * list runs twice, with the vector path where the CPU has one and with the scalar code
 * forced (b64_force_scalar); the test_paths_* cases also hold the two paths equal to each
 * other and to the reference on every call.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "b64.h"
#include "b64_ref.h"

/* RFC 4648 section 10, plus a few binary ones. */
static const struct {
    const char *plain;
    size_t plen;
    const char *text;
} vectors[] = {
    {"", 0, ""},
    {"f", 1, "Zg=="},
    {"fo", 2, "Zm8="},
    {"foo", 3, "Zm9v"},
    {"foob", 4, "Zm9vYg=="},
    {"fooba", 5, "Zm9vYmE="},
    {"foobar", 6, "Zm9vYmFy"},
    {"\0", 1, "AA=="},
    {"\0\0", 2, "AAA="},
    {"\0\0\0", 3, "AAAA"},
    {"\xff\xff\xff", 3, "////"},
    {"\xfb\xff", 2, "+/8="},
    {"\x14\xfb\x9c\x03\xd9\x7e", 6, "FPucA9l+"},
    {"\x14\xfb\x9c\x03\xd9", 5, "FPucA9k="},
    {"\x14\xfb\x9c\x03", 4, "FPucAw=="},
};

static uint64_t rng_state = 0x243f6a8885a308d3ULL;

/* The path the group runs with: 1 if the scalar code is forced. */
static int group_scalar;

static uint64_t
rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

/* Each path on its own, then back to the group's. */
static size_t
encode_path(int scalar, const void *in, size_t n, char *out)
{
    b64_force_scalar(scalar);
    size_t r = b64_encode(in, n, out);
    b64_force_scalar(group_scalar);
    return r;
}

static long
decode_path(int scalar, const char *in, size_t n, unsigned char *out)
{
    b64_force_scalar(scalar);
    long r = b64_decode(in, n, out);
    b64_force_scalar(group_scalar);
    return r;
}

/*
 * Decode text with the vector path, the scalar code and (if ref) the reference, into
 * buffers of exactly n / 4 * 3 bytes: returns 1 if any verdict or byte differs.
 */
static int
paths_differ(const char *text, size_t n, int ref)
{
    size_t room = n / 4 * 3;
    unsigned char *v = malloc(room + 1), *s = malloc(room + 1), *r = malloc(room + 3);
    assert_non_null(v);
    assert_non_null(s);
    assert_non_null(r);
    long rv = decode_path(0, text, n, v), rs = decode_path(1, text, n, s);
    long rr = ref ? b64_ref_decode(text, n, r) : rs;
    int differs = rv != rs || rs != rr || (rs > 0 && memcmp(v, s, (size_t)rs) != 0) ||
                  (ref && rs > 0 && memcmp(s, r, (size_t)rs) != 0);
    if (differs)
        print_error("decode of %zu chars \"%.40s%s\": vector %ld, scalar %ld, reference %ld\n", n,
                    text, n > 40 ? "..." : "", rv, rs, ref ? rr : rs);
    free(v);
    free(s);
    free(r);
    return differs;
}

/* The group runs with the path the CPU allows (and says which), or with the scalar code. */
static int
setup_vector(void **state)
{
    (void)state;
    group_scalar = 0;
    b64_force_scalar(0);
    print_message("base64 path: %s\n", b64_path());
#if defined(__x86_64__) && defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 5)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && strcmp(b64_path(), "avx2") != 0) {
        print_error("the CPU has AVX2 but the codec takes %s\n", b64_path());
        return -1;
    }
#endif
    return 0;
}

static int
setup_scalar(void **state)
{
    (void)state;
    group_scalar = 1;
    b64_force_scalar(1);
    print_message("base64 path: %s (forced)\n", b64_path());
    return strcmp(b64_path(), "scalar") == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
    (void)state;
    group_scalar = 0;
    b64_force_scalar(0);
    return 0;
}

/* Encode into an allocation of exactly the documented size (so ASan sees any overrun). */
static char *
encode(const void *in, size_t n, size_t *outlen)
{
    char *out = malloc(b64_encoded_len(n) + 1);
    assert_non_null(out);
    *outlen = b64_encode(in, n, out);
    return out;
}

/* Decode into an allocation of exactly n / 4 * 3 bytes. */
static long
decode(const char *in, size_t n, unsigned char **out)
{
    *out = malloc(n / 4 * 3 + 1);
    assert_non_null(*out);
    return b64_decode(in, n, *out);
}

static void
test_encoded_len(void **state)
{
    (void)state;
    static const size_t cases[][2] = {{0, 0}, {1, 4}, {2, 4},  {3, 4},       {4, 8},
                                      {5, 8}, {6, 8}, {7, 12}, {3000, 4000}, {3001, 4004}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(b64_encoded_len(cases[i][0]), cases[i][1]);
}

static void
test_encode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        size_t n;
        char *out = encode(vectors[i].plain, vectors[i].plen, &n);
        assert_int_equal(n, strlen(vectors[i].text));
        assert_int_equal(n, b64_encoded_len(vectors[i].plen));
        assert_string_equal(out, vectors[i].text);
        assert_int_equal(out[n], '\0');
        free(out);
    }
}

static void
test_decode_vectors(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        unsigned char *out;
        long n = decode(vectors[i].text, strlen(vectors[i].text), &out);
        /* The exact length: padding of 0, 1 or 2 characters is taken off. */
        assert_int_equal(n, (long)vectors[i].plen);
        if (n > 0)
            assert_memory_equal(out, vectors[i].plain, (size_t)n);
        free(out);
    }
}

/* Every size from 0 to 5000 bytes of pseudo-random data encodes and decodes back. */
static void
test_round_trip(void **state)
{
    (void)state;
    enum { MAX = 5000 };
    unsigned char *plain = malloc(MAX);
    assert_non_null(plain);
    for (size_t size = 0; size <= MAX; size++) {
        for (size_t i = 0; i < size; i++)
            plain[i] = (unsigned char)rng_next();
        size_t tl;
        char *text = encode(plain, size, &tl);
        assert_int_equal(tl, b64_encoded_len(size));
        assert_int_equal(strlen(text), tl);
        /* The padding matches the remainder. */
        size_t pad = (3 - size % 3) % 3;
        for (size_t i = 0; i < pad; i++)
            assert_int_equal(text[tl - 1 - i], '=');
        if (tl > pad)
            assert_int_not_equal(text[tl - 1 - pad], '=');
        unsigned char *back;
        long n = decode(text, tl, &back);
        assert_int_equal(n, (long)size);
        if (size > 0)
            assert_memory_equal(back, plain, size);
        free(back);
        free(text);
    }
    free(plain);
}

/* All 256 byte values survive. */
static void
test_all_bytes(void **state)
{
    (void)state;
    unsigned char plain[256];
    for (int i = 0; i < 256; i++)
        plain[i] = (unsigned char)i;
    size_t tl;
    char *text = encode(plain, sizeof plain, &tl);
    assert_int_equal(tl, 344);
    assert_string_equal(text + tl - 12, "+fr7/P3+/w==");
    unsigned char *back;
    assert_int_equal(decode(text, tl, &back), 256);
    assert_memory_equal(back, plain, 256);
    free(back);
    free(text);
}

static void
test_rejects(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        const char *why;
    } bad[] = {
        {"Z", 0, "length 1"},
        {"Zg", 0, "length 2"},
        {"Zg=", 0, "length 3"},
        {"Zm9vY", 0, "length 5"},
        {"Zm9vYg=", 0, "length 7"},
        {"Zm9vYg===", 0, "length 9"},
        {"Zm9!", 0, "bad character !"},
        {"Zm9-", 0, "url-safe alphabet -"},
        {"Zm9_", 0, "url-safe alphabet _"},
        {"Zm*v", 0, "bad character *"},
        {"Zm9\xff", 0, "high byte"},
        {"Zm9\x80", 0, "high byte"},
        {"Zm9v\0AAA", 8, "NUL byte"},
        {"Zm 9", 0, "space"},
        {" Zm9", 0, "leading space"},
        {"Zm9v\nAAA", 0, "newline"},
        {"Zm9v\r\nAA", 0, "CRLF"},
        {"Zm\t9", 0, "tab"},
        {"Zm9vYg==Zm9v", 0, "'=' in the middle (padded group first)"},
        {"Zg==Zg==", 0, "'=' in the middle (two padded groups)"},
        {"Zm=v", 0, "'=' at position 2 of 4"},
        {"=m9v", 0, "'=' first"},
        {"Zg=A", 0, "'=' before a character"},
        {"Z===", 0, "three '='"},
        {"====", 0, "only '='"},
        {"A===", 0, "one character and padding"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].text);
        unsigned char *out;
        long n = decode(bad[i].text, len, &out);
        free(out);
        if (n != -1)
            fail_msg("case %zu (%s): decoded to %ld instead of -1", i, bad[i].why, n);
    }
}

/* Canonical encoding (RFC 4648 section 3.5): the bits under the padding must be zero. */
static void
test_rejects_noncanonical(void **state)
{
    (void)state;
    static const char *const bad[] = {"Zh==", "Zm9=", "Zm9vYh==", "AB==", "AAB="};
    int wrong = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *out;
        long n = decode(bad[i], strlen(bad[i]), &out);
        free(out);
        if (n != -1) {
            print_error("\"%s\" has non-zero pad bits but decoded to %ld bytes\n", bad[i], n);
            wrong++;
        }
    }
    if (wrong > 0)
        fail_msg("%d non-canonical texts accepted", wrong);
}

/*
 * The table-driven codec against the reference (EVP with the strict checks, b64_ref.h).
 * One case: decode text with both, into buffers of exactly n / 4 * 3 bytes, and compare
 * the verdicts and the bytes. Returns 1 if they differ (and says how).
 */
static int
decode_differs(const char *text, size_t n)
{
    size_t room = n / 4 * 3;
    unsigned char *a = malloc(room + 1), *b = malloc(room + 3); /* EVP writes pad bytes too */
    assert_non_null(a);
    assert_non_null(b);
    long ra = b64_decode(text, n, a), rb = b64_ref_decode(text, n, b);
    int differs = ra != rb || (ra > 0 && memcmp(a, b, (size_t)ra) != 0);
    if (differs)
        print_error("decode of %zu chars \"%.40s%s\": %ld, reference %ld\n", n, text,
                    n > 40 ? "..." : "", ra, rb);
    free(a);
    free(b);
    return differs;
}

/* Every length 0..1500 of random, all-zero and all-0xff bytes encodes exactly as EVP does. */
static void
test_encode_matches_evp(void **state)
{
    (void)state;
    enum { MAX = 1500 };
    unsigned char *plain = malloc(MAX);
    char *ref = malloc(b64_encoded_len(MAX) + 1);
    assert_non_null(plain);
    assert_non_null(ref);
    for (int kind = 0; kind < 3; kind++) {
        for (size_t size = 0; size <= MAX; size++) {
            for (size_t i = 0; i < size; i++)
                plain[i] = kind == 0 ? (unsigned char)rng_next() : kind == 1 ? 0 : 0xff;
            size_t tl, rl = b64_ref_encode(plain, size, ref);
            char *text = encode(plain, size, &tl);
            if (tl != rl || memcmp(text, ref, rl) != 0)
                fail_msg("encoding %zu bytes (kind %d) differs from EVP_EncodeBlock", size, kind);
            if (decode_differs(text, tl))
                fail_msg("decoding the encoding of %zu bytes differs", size);
            free(text);
        }
    }
    free(ref);
    free(plain);
}

/*
 * Every byte value at every position of valid texts of 4..96 characters, and a set of bytes
 * (whitespace, JSON escapes, url-safe characters, '=', high bytes) at every position of a
 * 1000-character one: the verdict and the bytes are the reference's.
 */
static void
test_decode_every_position(void **state)
{
    (void)state;
    static const unsigned char some[] = {0,   '\t', '\n', '\r', ' ',  '"',  '\\', '-',
                                         '_', '=',  '.',  0x7f, 0x80, 0xff, 'A',  '/'};
    unsigned char plain[750];
    char text[1001];
    int wrong = 0;
    for (size_t len = 4; len <= 1000; len += len < 96 ? 4 : 1000 - 96) {
        for (size_t i = 0; i < len / 4 * 3; i++)
            plain[i] = (unsigned char)rng_next();
        /* valid texts with each padding: drop 0, 1 or 2 bytes of the last group */
        for (size_t drop = 0; drop < 3; drop++) {
            size_t pl = len / 4 * 3 - drop;
            size_t tl = b64_encode(plain, pl, text);
            assert_int_equal(tl, len);
            wrong += decode_differs(text, tl);
            for (size_t pos = 0; pos < tl; pos++) {
                char keep = text[pos];
                size_t nvals = len <= 96 ? 256 : sizeof some;
                for (size_t v = 0; v < nvals; v++) {
                    text[pos] = (char)(len <= 96 ? v : some[v]);
                    wrong += decode_differs(text, tl);
                }
                text[pos] = keep;
            }
        }
    }
    if (wrong > 0)
        fail_msg("%d texts decoded differently from the reference", wrong);
}

/* The last group exhaustively: every character or '=' (and a few others) in its last three
 * places, after no prefix and after a valid 8-character one, with a few first characters. */
static void
test_decode_last_group(void **state)
{
    (void)state;
    static const char extra[] = "=\n !-";
    char set[65 + sizeof extra];
    memcpy(set, b64_ref_alphabet, 64);
    memcpy(set + 64, extra, sizeof extra); /* with its NUL: the set is 70 characters */
    size_t nset = 64 + sizeof extra - 1;
    static const char firsts[] = "AQg/=";
    int wrong = 0;
    for (size_t pre = 0; pre <= 8; pre += 8) {
        char text[13] = "Zm9vYmFy";
        char *g = text + pre;
        for (const char *a = firsts; *a; a++)
            for (size_t b = 0; b < nset; b++)
                for (size_t c = 0; c < nset; c++)
                    for (size_t d = 0; d < nset; d++) {
                        g[0] = *a;
                        g[1] = set[b];
                        g[2] = set[c];
                        g[3] = set[d];
                        wrong += decode_differs(text, pre + 4);
                    }
    }
    if (wrong > 0)
        fail_msg("%d last groups decoded differently from the reference", wrong);
}

/*
 * Every length 0..400 (and some long ones) of random, all-zero and all-0xff bytes: both paths
 * write the reference's text, and both decode it back.
 */
static void
test_paths_encode(void **state)
{
    (void)state;
    static const size_t longs[] = {4095, 4096, 4097, 65535, 65536, 65537, 1 << 20};
    enum { MAX = 400 };
    size_t biggest = (size_t)1 << 20;
    unsigned char *plain = malloc(biggest);
    char *v = malloc(b64_encoded_len(biggest) + 1), *s = malloc(b64_encoded_len(biggest) + 1);
    char *r = malloc(b64_encoded_len(biggest) + 1);
    assert_non_null(plain);
    assert_non_null(v);
    assert_non_null(s);
    assert_non_null(r);
    int wrong = 0;
    for (size_t k = 0; k < 3 * (MAX + 1) + sizeof longs / sizeof longs[0]; k++) {
        size_t size = k < 3 * (MAX + 1) ? k % (MAX + 1) : longs[k - 3 * (MAX + 1)];
        int kind = k < 3 * (MAX + 1) ? (int)(k / (MAX + 1)) : 0;
        for (size_t i = 0; i < size; i++)
            plain[i] = kind == 0 ? (unsigned char)rng_next() : kind == 1 ? 0 : 0xff;
        /* from an allocation of exactly size bytes, so ASan sees any read past the end */
        unsigned char *exact = malloc(size ? size : 1);
        assert_non_null(exact);
        memcpy(exact, plain, size);
        size_t vl = encode_path(0, exact, size, v), sl = encode_path(1, exact, size, s);
        free(exact);
        size_t rl = b64_ref_encode(plain, size, r);
        if (vl != rl || sl != rl || memcmp(v, r, rl + 1) != 0 || memcmp(s, r, rl + 1) != 0) {
            print_error("encoding %zu bytes (kind %d): vector %zu, scalar %zu, reference %zu\n",
                        size, kind, vl, sl, rl);
            wrong++;
            continue;
        }
        wrong += paths_differ(v, vl, size <= 65537);
    }
    free(r);
    free(s);
    free(v);
    free(plain);
    if (wrong > 0)
        fail_msg("%d inputs encoded or decoded differently by the two paths", wrong);
}

/*
 * Texts of every length 0..400, valid ones (each padding) with a byte from a set (outside
 * the alphabet, '=', the neighbours of each range, a few valid ones) at every position, and
 * '==' at every position: each vector block sees it in each of its places and across the
 * boundaries between blocks and with the scalar tail.
 */
static void
test_paths_decode_positions(void **state)
{
    (void)state;
    static const unsigned char some[] = {0,   '\t', '\n', ' ', '"', '\\', '-',  '_',  '=',  '.',
                                         ',', ':',  '@',  '[', '`', '{',  0x7f, 0x80, 0xaf, 0xff,
                                         '*', 'A',  'Z',  'a', 'z', '0',  '9',  '+',  '/'};
    enum { MAX = 400 };
    unsigned char plain[MAX];
    char text[MAX + 1];
    int wrong = 0;
    for (size_t len = 0; len <= MAX; len++) {
        if (len % 4 != 0) { /* the wrong length: no path decodes it */
            memset(text, 'A', len);
            wrong += paths_differ(text, len, 1);
            continue;
        }
        for (size_t drop = 0; drop < (len ? 3u : 1u); drop++) {
            size_t pl = len / 4 * 3 - drop;
            for (size_t i = 0; i < pl; i++)
                plain[i] = (unsigned char)rng_next();
            assert_int_equal(encode_path(1, plain, pl, text), len);
            wrong += paths_differ(text, len, 1);
            for (size_t pos = 0; pos < len; pos++) {
                char keep = text[pos];
                for (size_t b = 0; b < sizeof some; b++) {
                    text[pos] = (char)some[b];
                    wrong += paths_differ(text, len, 1);
                }
                text[pos] = keep;
                if (pos + 1 < len) {
                    char keep2 = text[pos + 1];
                    text[pos] = text[pos + 1] = '=';
                    wrong += paths_differ(text, len, 1);
                    text[pos] = keep;
                    text[pos + 1] = keep2;
                }
            }
        }
    }
    if (wrong > 0)
        fail_msg("%d texts decoded differently by the two paths or the reference", wrong);
}

/*
 * A 1 MiB text: valid, then with a bad byte at random places and at the places around the
 * vector blocks' edges at the start, the middle and the end; the two paths agree (and with
 * the reference on a sample).
 */
static void
test_paths_decode_big(void **state)
{
    (void)state;
    static const unsigned char bad[] = {'=', 0, '\n', '-', 0x80, 0xff, '.', '@'};
    size_t pl = ((size_t)1 << 20) - 1;
    unsigned char *plain = malloc(pl);
    char *text = malloc(b64_encoded_len(pl) + 1);
    assert_non_null(plain);
    assert_non_null(text);
    for (size_t i = 0; i < pl; i++)
        plain[i] = (unsigned char)rng_next();
    size_t tl = encode_path(1, plain, pl, text);
    int wrong = paths_differ(text, tl, 1);
    size_t places[600];
    size_t np = 0;
    for (size_t i = 0; i < 70; i++) {
        places[np++] = i;
        places[np++] = tl / 2 - 35 + i;
        places[np++] = tl - 70 + i;
    }
    while (np < sizeof places / sizeof places[0])
        places[np++] = (size_t)(rng_next() % tl);
    for (size_t k = 0; k < np; k++) {
        char keep = text[places[k]];
        text[places[k]] = (char)bad[k % sizeof bad];
        wrong += paths_differ(text, tl, k % 50 == 0);
        text[places[k]] = keep;
    }
    free(text);
    free(plain);
    if (wrong > 0)
        fail_msg("%d big texts decoded differently", wrong);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encoded_len),
        cmocka_unit_test(test_encode_vectors),
        cmocka_unit_test(test_decode_vectors),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_all_bytes),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_rejects_noncanonical),
        cmocka_unit_test(test_encode_matches_evp),
        cmocka_unit_test(test_decode_every_position),
        cmocka_unit_test(test_decode_last_group),
        cmocka_unit_test(test_paths_encode),
        cmocka_unit_test(test_paths_decode_positions),
        cmocka_unit_test(test_paths_decode_big),
    };
    int failed = cmocka_run_group_tests_name("vector", tests, setup_vector, teardown);
    failed += cmocka_run_group_tests_name("scalar", tests, setup_scalar, teardown);
    return failed;
}
