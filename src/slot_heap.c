/* slot_heap.c - the indexed min-heap of slots (see slot_heap.h). */
#include "slot_heap.h"

int kvbm__heap_init(kvbm__slot_heap *h, const kvbm_allocator *a, uint32_t nslots) {
  size_t n = nslots ? nslots : 1;
  h->alloc = a;
  h->nslots = nslots;
  h->len = 0;
  h->e = kvbm__realloc(a, NULL, 0, n * sizeof *h->e);
  h->at = kvbm__realloc(a, NULL, 0, n * sizeof *h->at);
  if (!h->e || !h->at) {
    kvbm__heap_free(h);
    return KVBM_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) h->at[i] = KVBM__HEAP_NONE;
  return 0;
}

void kvbm__heap_free(kvbm__slot_heap *h) {
  size_t n = h->nslots ? h->nslots : 1;
  kvbm__free(h->alloc, h->e, n * sizeof *h->e);
  kvbm__free(h->alloc, h->at, n * sizeof *h->at);
  h->e = NULL;
  h->at = NULL;
}

static int less(const kvbm__heap_entry *x, const kvbm__heap_entry *y) {
  for (int i = 0; i < 3; i++)
    if (x->key[i] != y->key[i]) return x->key[i] < y->key[i];
  return 0;
}

static void place(kvbm__slot_heap *h, size_t i, kvbm__heap_entry e) {
  h->e[i] = e;
  h->at[e.slot] = (uint32_t)i;
}

static void sift_up(kvbm__slot_heap *h, size_t i) {
  kvbm__heap_entry e = h->e[i];
  while (i > 0 && less(&e, &h->e[(i - 1) / 2])) {
    place(h, i, h->e[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  place(h, i, e);
}

static void sift_down(kvbm__slot_heap *h, size_t i) {
  kvbm__heap_entry e = h->e[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->len) break;
    if (c + 1 < h->len && less(&h->e[c + 1], &h->e[c])) c++;
    if (!less(&h->e[c], &e)) break;
    place(h, i, h->e[c]);
    i = c;
  }
  place(h, i, e);
}

static void fix(kvbm__slot_heap *h, size_t i) {
  if (i > 0 && less(&h->e[i], &h->e[(i - 1) / 2]))
    sift_up(h, i);
  else
    sift_down(h, i);
}

void kvbm__heap_set(kvbm__slot_heap *h, uint32_t slot, const uint64_t key[3]) {
  if (slot >= h->nslots) return;
  kvbm__heap_entry e = {{key[0], key[1], key[2]}, slot};
  if (h->at[slot] != KVBM__HEAP_NONE) {
    size_t i = h->at[slot];
    h->e[i] = e;
    fix(h, i);
    return;
  }
  place(h, h->len, e);
  sift_up(h, h->len++);
}

void kvbm__heap_remove(kvbm__slot_heap *h, uint32_t slot) {
  if (!kvbm__heap_has(h, slot)) return;
  size_t i = h->at[slot];
  h->at[slot] = KVBM__HEAP_NONE;
  kvbm__heap_entry last = h->e[--h->len];
  if (i == h->len) return;
  place(h, i, last);
  fix(h, i);
}

uint32_t kvbm__heap_pop(kvbm__slot_heap *h) {
  if (h->len == 0) return KVBM__HEAP_NONE;
  uint32_t slot = h->e[0].slot;
  kvbm__heap_remove(h, slot);
  return slot;
}
