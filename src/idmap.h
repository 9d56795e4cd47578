/* A hash map from 64-bit handle to pointer (open addressing, linear probing). */
#ifndef SOCKD_IDMAP_H
#define SOCKD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap_slot {
    uint64_t key; /* 0 = empty slot; a NULL val with a key is a tombstone */
    void *val;
};

struct idmap {
    struct idmap_slot *slots;
    size_t cap;  /* power of two */
    size_t used; /* live entries */
    size_t dead; /* tombstones */
};

int idmap_put(struct idmap *m, uint64_t key, void *val); /* -1 on ENOMEM; key > 0 */
void *idmap_get(const struct idmap *m, uint64_t key);
void *idmap_del(struct idmap *m, uint64_t key);
void idmap_free(struct idmap *m);

#endif
