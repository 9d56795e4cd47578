/* Unit tests of the byte queue (src/buf.c). */
#include "config.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"

/* A small deterministic generator (xorshift64*), so every run sees the same sequence. */
static uint64_t rng_state;

static void
rng_seed(uint64_t seed)
{
    rng_state = seed ? seed : 1;
}

static uint64_t
rng_next(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static size_t
rng_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rng_next() % n);
}

/* Check the structural invariants every buffer must keep. */
static void
check_invariants(const struct buf *b)
{
    assert_true(b->off + b->len <= b->alloc);
    if (b->alloc == 0) {
        assert_null(b->data);
        assert_int_equal(b->off, 0);
        assert_int_equal(b->len, 0);
    } else {
        assert_non_null(b->data);
    }
}

/* The queue holds exactly these bytes. */
static void
check_contents(const struct buf *b, const void *want, size_t n)
{
    check_invariants(b);
    assert_int_equal(buf_len(b), n);
    if (n > 0)
        assert_memory_equal(buf_head(b), want, n);
}

static void
test_empty(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_len(&b), 0);
    assert_null(b.data);
    /* Appending nothing neither fails nor allocates. */
    assert_int_equal(buf_append(&b, "x", 0), 0);
    assert_null(b.data);
    assert_int_equal(b.alloc, 0);
    /* Consuming or truncating an empty queue is harmless. */
    buf_consume(&b, 10);
    buf_truncate_tail(&b, 10);
    check_contents(&b, "", 0);
    buf_free(&b);
    check_contents(&b, "", 0);
}

static void
test_append_consume(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_append(&b, "hello", 5), 0);
    check_contents(&b, "hello", 5);
    assert_int_equal(buf_append(&b, " world", 6), 0);
    check_contents(&b, "hello world", 11);
    buf_consume(&b, 6);
    check_contents(&b, "world", 5);
    assert_int_equal(buf_append(&b, "!", 1), 0);
    check_contents(&b, "world!", 6);
    buf_consume(&b, 1);
    check_contents(&b, "orld!", 5);
    buf_consume(&b, 0);
    check_contents(&b, "orld!", 5);
    buf_free(&b);
    check_contents(&b, "", 0);
}

static void
test_reserve_commit(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_append(&b, "ab", 2), 0);
    char *p = buf_reserve(&b, 1000);
    assert_non_null(p);
    /* The reserved space follows the queued bytes and is writable in full. */
    assert_ptr_equal(p, buf_head(&b) + buf_len(&b));
    assert_true(b.alloc - b.off - b.len >= 1000);
    memset(p, 'z', 1000);
    /* Reserving does not change the length; committing part of it does. */
    check_contents(&b, "ab", 2);
    buf_commit(&b, 3);
    check_contents(&b, "abzzz", 5);
    /* A later reserve that fits returns the new tail without moving anything. */
    char *head = buf_head(&b);
    p = buf_reserve(&b, 10);
    assert_ptr_equal(p, head + 5);
    memcpy(p, "0123456789", 10);
    buf_commit(&b, 10);
    check_contents(&b, "abzzz0123456789", 15);
    /* Commit of zero is a no-op. */
    buf_commit(&b, 0);
    check_contents(&b, "abzzz0123456789", 15);
    buf_free(&b);
}

static void
test_truncate_tail(void **state)
{
    (void)state;
    static const struct {
        const char *start;
        size_t drop;
        const char *want;
    } cases[] = {
        {"abcdef", 0, "abcdef"}, {"abcdef", 1, "abcde"}, {"abcdef", 5, "a"},
        {"abcdef", 6, ""},       {"abcdef", 7, ""},      {"abcdef", SIZE_MAX, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b = {0};
        assert_int_equal(buf_append(&b, cases[i].start, strlen(cases[i].start)), 0);
        buf_truncate_tail(&b, cases[i].drop);
        check_contents(&b, cases[i].want, strlen(cases[i].want));
        /* Appending after a truncate continues from the new tail. */
        assert_int_equal(buf_append(&b, "XY", 2), 0);
        char want[16];
        size_t wl = strlen(cases[i].want);
        memcpy(want, cases[i].want, wl);
        memcpy(want + wl, "XY", 2);
        check_contents(&b, want, wl + 2);
        buf_free(&b);
    }
    /* Truncation after a consume keeps the head where it is. */
    struct buf b = {0};
    assert_int_equal(buf_append(&b, "0123456789", 10), 0);
    buf_consume(&b, 3);
    buf_truncate_tail(&b, 2);
    check_contents(&b, "34567", 5);
    buf_free(&b);
}

static void
test_growth_many_appends(void **state)
{
    (void)state;
    enum { TOTAL = 1 << 20 };
    struct buf b = {0};
    unsigned char *want = malloc(TOTAL);
    assert_non_null(want);
    size_t n = 0;
    unsigned k = 0;
    while (n < TOTAL) {
        /* Pieces of 1..37 bytes, each with a recognisable pattern. */
        unsigned char piece[37];
        size_t pl = 1 + k % 37;
        if (pl > TOTAL - n)
            pl = TOTAL - n;
        for (size_t i = 0; i < pl; i++)
            piece[i] = (unsigned char)(k * 31 + i);
        assert_int_equal(buf_append(&b, piece, pl), 0);
        memcpy(want + n, piece, pl);
        n += pl;
        k++;
        assert_int_equal(buf_len(&b), n);
    }
    check_contents(&b, want, TOTAL);
    assert_true(b.alloc >= TOTAL);
    /* Growth is geometric: the allocation is not wildly larger than needed. */
    assert_true(b.alloc <= 2 * (size_t)TOTAL);
    /* Drain it in odd-sized steps and check what remains each time. */
    size_t off = 0;
    while (off < TOTAL) {
        size_t step = 4093;
        if (step > TOTAL - off)
            step = TOTAL - off;
        buf_consume(&b, step);
        off += step;
        if (off < TOTAL)
            check_contents(&b, want + off, TOTAL - off);
    }
    check_contents(&b, "", 0);
    assert_null(b.data);
    free(want);
}

/* A size whose total would pass half the address space is refused without touching the queue. */
static void
test_huge_append(void **state)
{
    (void)state;
    struct buf b = {0};
    assert_int_equal(buf_append(&b, "abcdefgh", 8), 0);
    errno = 0;
    assert_null(buf_reserve(&b, SIZE_MAX / 2));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_int_equal(buf_append(&b, "x", SIZE_MAX - 4), -1);
    assert_int_equal(errno, ENOMEM);
    check_contents(&b, "abcdefgh", 8);
    buf_free(&b);
}

static void
test_release_when_empty(void **state)
{
    (void)state;
    static const size_t drains[][3] = {
        /* consume steps that add up to at least what was queued */
        {64, 0, 0}, {10, 54, 0}, {1, 1, 62}, {63, 1000, 0}, {SIZE_MAX, 0, 0},
    };
    for (size_t i = 0; i < sizeof drains / sizeof drains[0]; i++) {
        struct buf b = {0};
        char fill[64];
        memset(fill, 'q', sizeof fill);
        assert_int_equal(buf_append(&b, fill, sizeof fill), 0);
        assert_non_null(b.data);
        for (int k = 0; k < 3; k++)
            if (drains[i][k] != 0)
                buf_consume(&b, drains[i][k]);
        assert_int_equal(buf_len(&b), 0);
        assert_null(b.data);
        assert_int_equal(b.alloc, 0);
        assert_int_equal(b.off, 0);
        /* The queue is usable again afterwards. */
        assert_int_equal(buf_append(&b, "again", 5), 0);
        check_contents(&b, "again", 5);
        buf_free(&b);
    }
}

static void
test_slide_to_front(void **state)
{
    (void)state;
    struct buf b = {0};
    char fill[256];
    for (size_t i = 0; i < sizeof fill; i++)
        fill[i] = (char)i;

    /* Fill most of the first allocation, then consume the front. */
    assert_int_equal(buf_append(&b, fill, 200), 0);
    size_t alloc = b.alloc;
    assert_true(alloc >= 200);
    buf_consume(&b, 200 - 40);
    check_contents(&b, fill + 160, 40);
    assert_true(b.off > 0);

    /* More than fits after the live bytes, but fits in the allocation: slide, don't grow. */
    size_t more = alloc - b.off - b.len + 1;
    assert_true(b.len + more <= alloc);
    char *p = buf_reserve(&b, more);
    assert_non_null(p);
    assert_int_equal(b.alloc, alloc);
    assert_int_equal(b.off, 0);
    assert_ptr_equal(p, b.data + 40);
    check_contents(&b, fill + 160, 40);
    memset(p, 0x5a, more);
    buf_commit(&b, more);
    assert_int_equal(buf_len(&b), 40 + more);
    assert_memory_equal(buf_head(&b), fill + 160, 40);
    for (size_t i = 0; i < more; i++)
        assert_int_equal((unsigned char)buf_head(&b)[40 + i], 0x5a);
    buf_free(&b);

    /* When more than half is live the queue grows instead, and keeps its bytes. */
    assert_int_equal(buf_append(&b, fill, 200), 0);
    alloc = b.alloc;
    buf_consume(&b, 10);
    assert_int_equal(buf_append(&b, fill, 100), 0);
    assert_true(b.alloc > alloc);
    assert_memory_equal(buf_head(&b), fill + 10, 190);
    assert_memory_equal(buf_head(&b) + 190, fill, 100);
    assert_int_equal(buf_len(&b), 290);
    buf_free(&b);
}

/* Random operation sequences against a flat reference copy of the contents. */
static void
test_random_model(void **state)
{
    (void)state;
    enum { MODEL_MAX = 1 << 16, ROUNDS = 8, OPS = 20000 };
    unsigned char *model = malloc(MODEL_MAX);
    unsigned char scratch[1500];
    assert_non_null(model);
    rng_seed(0x5eed5eedULL);

    for (int round = 0; round < ROUNDS; round++) {
        struct buf b = {0};
        size_t mlen = 0;

        for (int op = 0; op < OPS; op++) {
            size_t n;
            switch (rng_below(6)) {
            case 0:
            case 1: /* append */
                n = rng_below(sizeof scratch);
                for (size_t i = 0; i < n; i++)
                    scratch[i] = (unsigned char)rng_next();
                if (mlen + n > MODEL_MAX)
                    break;
                assert_int_equal(buf_append(&b, scratch, n), 0);
                memcpy(model + mlen, scratch, n);
                mlen += n;
                break;
            case 2: /* reserve, then commit part of it */
                n = 1 + rng_below(sizeof scratch - 1);
                if (mlen + n > MODEL_MAX)
                    break;
                {
                    char *p = buf_reserve(&b, n);
                    assert_non_null(p);
                    assert_ptr_equal(p, buf_head(&b) + buf_len(&b));
                    for (size_t i = 0; i < n; i++)
                        scratch[i] = (unsigned char)rng_next();
                    memcpy(p, scratch, n);
                    size_t used = rng_below(n + 1);
                    buf_commit(&b, used);
                    memcpy(model + mlen, scratch, used);
                    mlen += used;
                }
                break;
            case 3:
            case 4: /* consume */
                n = rng_below(mlen + 200);
                buf_consume(&b, n);
                if (n >= mlen) {
                    mlen = 0;
                    assert_null(b.data);
                    assert_int_equal(b.alloc, 0);
                } else {
                    memmove(model, model + n, mlen - n);
                    mlen -= n;
                }
                break;
            case 5: /* truncate the tail */
                n = rng_below(mlen / 4 + 2);
                buf_truncate_tail(&b, n);
                mlen = n >= mlen ? 0 : mlen - n;
                break;
            }
            check_contents(&b, model, mlen);
        }
        buf_free(&b);
    }
    free(model);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_append_consume),
        cmocka_unit_test(test_reserve_commit),
        cmocka_unit_test(test_truncate_tail),
        cmocka_unit_test(test_growth_many_appends),
        cmocka_unit_test(test_huge_append),
        cmocka_unit_test(test_release_when_empty),
        cmocka_unit_test(test_slide_to_front),
        cmocka_unit_test(test_random_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
