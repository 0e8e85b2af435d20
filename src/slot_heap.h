/* slot_heap.h - a binary min-heap of slots keyed by three u64 (compared in
 * order), each slot knowing its place so that it leaves or moves in
 * O(log n). The victim orders of the heap-ordered backends. */
#ifndef KVBM_SLOT_HEAP_H
#define KVBM_SLOT_HEAP_H

#include "internal.h"

#define KVBM__HEAP_NONE UINT32_MAX

typedef struct {
  uint64_t key[3];
  uint32_t slot;
} kvbm__heap_entry;

typedef struct {
  kvbm__heap_entry *e;
  uint32_t *at; /* per slot: its index, KVBM__HEAP_NONE when absent */
  size_t len;
  uint32_t nslots;
  const kvbm_allocator *alloc;
} kvbm__slot_heap;

int kvbm__heap_init(kvbm__slot_heap *h, const kvbm_allocator *a, uint32_t nslots);
void kvbm__heap_free(kvbm__slot_heap *h);
/* Adds slot (absent) or moves it (present) to the given key. */
void kvbm__heap_set(kvbm__slot_heap *h, uint32_t slot, const uint64_t key[3]);
void kvbm__heap_remove(kvbm__slot_heap *h, uint32_t slot);
/* Takes out the slot with the smallest key; KVBM__HEAP_NONE when empty. */
uint32_t kvbm__heap_pop(kvbm__slot_heap *h);
static inline int kvbm__heap_has(const kvbm__slot_heap *h, uint32_t slot) {
  return slot < h->nslots && h->at[slot] != KVBM__HEAP_NONE;
}
static inline size_t kvbm__heap_bytes(const kvbm__slot_heap *h) {
  return (size_t)h->nslots * (sizeof *h->e + sizeof *h->at);
}

#endif
