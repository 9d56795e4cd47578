#include "config.h"

#include <stdlib.h>

#include "idmap.h"

/* Tombstones keep the key and a NULL value; values are never NULL. */

static size_t
idmap_hash(uint64_t key)
{
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdULL;
    key ^= key >> 33;
    return (size_t)key;
}

static int
idmap_grow(struct idmap *m)
{
    size_t ncap = m->cap ? m->cap : 64;
    if ((m->used + 1) * 2 > ncap)
        ncap *= 2;
    struct idmap_slot *ns = calloc(ncap, sizeof *ns);
    if (ns == NULL)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == 0 || m->slots[i].val == NULL)
            continue;
        size_t j = idmap_hash(m->slots[i].key) & (ncap - 1);
        while (ns[j].key != 0)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->dead = 0;
    return 0;
}

int
idmap_put(struct idmap *m, uint64_t key, void *val)
{
    if ((m->used + m->dead + 1) * 4 > m->cap * 3 && idmap_grow(m) < 0)
        return -1;
    size_t j = idmap_hash(key) & (m->cap - 1);
    while (m->slots[j].key != 0 && m->slots[j].key != key)
        j = (j + 1) & (m->cap - 1);
    if (m->slots[j].key == key && m->slots[j].val == NULL) {
        m->dead--;
        m->used++;
    } else if (m->slots[j].key == 0) {
        m->used++;
    }
    m->slots[j].key = key;
    m->slots[j].val = val;
    return 0;
}

static struct idmap_slot *
idmap_find(const struct idmap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    size_t j = idmap_hash(key) & (m->cap - 1);
    while (m->slots[j].key != 0) {
        if (m->slots[j].key == key)
            return m->slots[j].val ? &m->slots[j] : NULL;
        j = (j + 1) & (m->cap - 1);
    }
    return NULL;
}

void *
idmap_get(const struct idmap *m, uint64_t key)
{
    struct idmap_slot *s = idmap_find(m, key);
    return s ? s->val : NULL;
}

void *
idmap_del(struct idmap *m, uint64_t key)
{
    struct idmap_slot *s = idmap_find(m, key);
    if (s == NULL)
        return NULL;
    void *v = s->val;
    s->val = NULL;
    m->used--;
    m->dead++;
    return v;
}

void
idmap_free(struct idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->used = m->dead = 0;
}
