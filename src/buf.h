/* A byte queue: append at the tail, consume from the head. Callers enforce their own caps;
 * a meter, when set, sums the length of every queue that shares it. */
#ifndef SOCKD_BUF_H
#define SOCKD_BUF_H

#include <stddef.h>

struct buf {
    char *data;    /* allocation, NULL while empty */
    size_t off;    /* first unread byte */
    size_t len;    /* bytes queued from off */
    size_t alloc;  /* size of data */
    size_t *meter; /* NULL, or a counter that follows len (a budget shared by many queues) */
};

/* Append n bytes; -1 with errno ENOMEM on allocation failure. */
int buf_append(struct buf *b, const void *p, size_t n);
/* Make room for n more bytes at the tail and return where to write them (NULL on ENOMEM). */
char *buf_reserve(struct buf *b, size_t n);
/* Account n bytes written into the space buf_reserve returned. */
void buf_commit(struct buf *b, size_t n);
/* Drop n bytes from the head; the allocation is released when the queue empties. */
void buf_consume(struct buf *b, size_t n);
/* Drop n bytes from the tail (undo a partial append). */
void buf_truncate_tail(struct buf *b, size_t n);
/* Release everything. */
void buf_free(struct buf *b);
/* Count b under meter from now on (NULL: none), its bytes moving from its old meter. */
void buf_set_meter(struct buf *b, size_t *meter);

static inline size_t
buf_len(const struct buf *b)
{
    return b->len;
}

static inline char *
buf_head(const struct buf *b)
{
    return b->data + b->off;
}

#endif
