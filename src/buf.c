#include "config.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

char *
buf_reserve(struct buf *b, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len) {
        errno = ENOMEM;
        return NULL;
    }
    if (b->off + b->len + n <= b->alloc)
        return b->data + b->off + b->len;
    /* Slide to the front when that makes room and at most half is live. */
    if (b->off > 0 && b->len + n <= b->alloc && b->len <= b->alloc / 2) {
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        return b->data + b->len;
    }
    size_t need = b->len + n, alloc = b->alloc ? b->alloc : 256;
    while (alloc < need) {
        if (alloc > SIZE_MAX / 2) {
            errno = ENOMEM;
            return NULL;
        }
        alloc *= 2;
    }
    /* realloc, not a copy: a large block is moved by remapping its pages, so growing a queue of
     * n bytes never holds 2n (the output cap bounds a response by what it may hold) */
    if (b->off > 0 && b->len > 0)
        memmove(b->data, b->data + b->off, b->len);
    char *p = realloc(b->data, alloc);
    if (p == NULL) {
        b->off = 0; /* the old block stands, its bytes now at its head */
        return NULL;
    }
    b->data = p;
    b->alloc = alloc;
    b->off = 0;
    return b->data + b->len;
}

void
buf_commit(struct buf *b, size_t n)
{
    b->len += n;
    if (b->meter != NULL)
        *b->meter += n;
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    char *dst = buf_reserve(b, n);
    if (dst == NULL)
        return -1;
    memcpy(dst, p, n);
    buf_commit(b, n);
    return 0;
}

void
buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        buf_free(b);
        return;
    }
    b->off += n;
    b->len -= n;
    if (b->meter != NULL)
        *b->meter -= n;
}

void
buf_truncate_tail(struct buf *b, size_t n)
{
    size_t drop = n >= b->len ? b->len : n;
    b->len -= drop;
    if (b->meter != NULL)
        *b->meter -= drop;
}

void
buf_free(struct buf *b)
{
    if (b->meter != NULL)
        *b->meter -= b->len;
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->alloc = 0;
}

void
buf_set_meter(struct buf *b, size_t *meter)
{
    if (b->meter != NULL)
        *b->meter -= b->len;
    b->meter = meter;
    if (meter != NULL)
        *meter += b->len;
}
