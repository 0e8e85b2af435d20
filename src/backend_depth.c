/* backend_depth.c - "depth": a structure-aware policy. A prefix match stops
 * at the first missing block, so a block is worth no more than its parent:
 * evicting a parent before its children wastes the children. The victim is
 * the cached block with the fewest hits since it was registered, the
 * deepest of those (largest position), then the oldest release. */
#include "backend.h"
#include "slot_heap.h"

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  kvbm__slot_heap heap;
  kvbm_hash *hash;
  uint32_t *hits;
  uint64_t clock;
  uint32_t nslots;
} depth;

static void dp_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  depth *d = (depth *)b;
  if (slot >= d->nslots || kvbm__heap_has(&d->heap, slot)) return;
  d->hash[slot] = h;
  d->hits[slot] = 0;
}

static void dp_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  depth *d = (depth *)b;
  if (slot >= d->nslots || kvbm__heap_has(&d->heap, slot)) return;
  if (d->hash[slot].lo != h.lo || d->hash[slot].hi != h.hi) dp_admit(b, slot, h);
  uint64_t key[3] = {d->hits[slot], UINT64_MAX - kvbm_hash_position(h), ++d->clock};
  kvbm__heap_set(&d->heap, slot, key);
  b->len++;
}

static void dp_remove(kvbm__backend *b, uint32_t slot) {
  depth *d = (depth *)b;
  if (!kvbm__heap_has(&d->heap, slot)) return;
  kvbm__heap_remove(&d->heap, slot);
  if (d->hits[slot] < UINT32_MAX) d->hits[slot]++;
  b->len--;
}

static size_t dp_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  depth *d = (depth *)b;
  size_t k = 0;
  while (k < n && (out[k] = kvbm__heap_pop(&d->heap)) != KVBM__HEAP_NONE) {
    d->hash[out[k]] = (kvbm_hash){0, 0};
    k++;
  }
  b->len -= k;
  return k;
}

static size_t dp_bytes(const kvbm__backend *b) {
  const depth *d = (const depth *)b;
  return sizeof *d + kvbm__heap_bytes(&d->heap) + (size_t)d->nslots * (sizeof(kvbm_hash) + 4);
}

static void dp_destroy(kvbm__backend *b) {
  depth *d = (depth *)b;
  const kvbm_allocator *a = d->alloc;
  size_t n = d->nslots;
  if (d->heap.at) kvbm__heap_free(&d->heap);
  kvbm__free(a, d->hash, n * sizeof *d->hash);
  kvbm__free(a, d->hits, n * sizeof *d->hits);
  kvbm__free(a, d, sizeof *d);
}

static const kvbm__backend_ops depth_ops = {
    .insert = dp_insert, .remove = dp_remove, .evict = dp_evict, .destroy = dp_destroy,
    .bytes = dp_bytes, .admit = dp_admit};

kvbm__backend *kvbm__depth_new(const kvbm_allocator *a, uint32_t nslots) {
  depth *d = kvbm__realloc(a, NULL, 0, sizeof *d);
  if (!d) return NULL;
  memset(d, 0, sizeof *d);
  d->base.ops = &depth_ops;
  d->alloc = a;
  d->nslots = nslots;
  size_t n = nslots;
  d->hash = kvbm__realloc(a, NULL, 0, n * sizeof *d->hash);
  d->hits = kvbm__realloc(a, NULL, 0, n * sizeof *d->hits);
  if (!d->hash || !d->hits || kvbm__heap_init(&d->heap, a, nslots) != 0) {
    dp_destroy(&d->base);
    return NULL;
  }
  memset(d->hash, 0, n * sizeof *d->hash);
  memset(d->hits, 0, n * sizeof *d->hits);
  return &d->base;
}
