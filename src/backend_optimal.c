/* backend_optimal.c - Belady's offline optimum (MIN): the host, which knows
 * the future (a trace replay), hints when each block is next needed; the
 * victim is the cached block needed last. A block never hinted since it was
 * registered counts as never needed again. Ties (blocks needed by the same
 * request, or never) go to the deepest block first, since a prefix match
 * stops at the first missing block, then to the oldest release. */
#include "backend.h"
#include "slot_heap.h"

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  kvbm__slot_heap heap;
  uint64_t *next_use, *position, *tick; /* per slot */
  uint64_t clock;
  uint32_t nslots;
} optimal;

static void key_of(const optimal *o, uint32_t slot, uint64_t key[3]) {
  key[0] = UINT64_MAX - o->next_use[slot]; /* latest first */
  key[1] = UINT64_MAX - o->position[slot]; /* then deepest */
  key[2] = o->tick[slot];                  /* then oldest */
}

static void opt_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  optimal *o = (optimal *)b;
  (void)h;
  if (slot < o->nslots && !kvbm__heap_has(&o->heap, slot)) o->next_use[slot] = UINT64_MAX;
}

static void opt_hint(kvbm__backend *b, uint32_t slot, uint64_t next_use) {
  optimal *o = (optimal *)b;
  if (slot >= o->nslots) return;
  o->next_use[slot] = next_use;
  if (kvbm__heap_has(&o->heap, slot)) {
    uint64_t key[3];
    key_of(o, slot, key);
    kvbm__heap_set(&o->heap, slot, key);
  }
}

static void opt_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  optimal *o = (optimal *)b;
  if (slot >= o->nslots || kvbm__heap_has(&o->heap, slot)) return;
  uint64_t key[3];
  o->position[slot] = kvbm_hash_position(h);
  o->tick[slot] = ++o->clock;
  key_of(o, slot, key);
  kvbm__heap_set(&o->heap, slot, key);
  b->len++;
}

static void opt_remove(kvbm__backend *b, uint32_t slot) {
  optimal *o = (optimal *)b;
  if (!kvbm__heap_has(&o->heap, slot)) return;
  kvbm__heap_remove(&o->heap, slot);
  b->len--;
}

static size_t opt_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  optimal *o = (optimal *)b;
  size_t k = 0;
  while (k < n && (out[k] = kvbm__heap_pop(&o->heap)) != KVBM__HEAP_NONE) {
    o->next_use[out[k]] = UINT64_MAX;
    k++;
  }
  b->len -= k;
  return k;
}

static size_t opt_bytes(const kvbm__backend *b) {
  const optimal *o = (const optimal *)b;
  return sizeof *o + kvbm__heap_bytes(&o->heap) + 3 * (size_t)o->nslots * sizeof(uint64_t);
}

static void opt_destroy(kvbm__backend *b) {
  optimal *o = (optimal *)b;
  const kvbm_allocator *a = o->alloc;
  size_t n = o->nslots;
  if (o->heap.at) kvbm__heap_free(&o->heap);
  kvbm__free(a, o->next_use, n * sizeof(uint64_t));
  kvbm__free(a, o->position, n * sizeof(uint64_t));
  kvbm__free(a, o->tick, n * sizeof(uint64_t));
  kvbm__free(a, o, sizeof *o);
}

static const kvbm__backend_ops optimal_ops = {
    .insert = opt_insert, .remove = opt_remove, .evict = opt_evict, .destroy = opt_destroy,
    .bytes = opt_bytes, .admit = opt_admit, .hint = opt_hint};

kvbm__backend *kvbm__optimal_new(const kvbm_allocator *a, uint32_t nslots) {
  optimal *o = kvbm__realloc(a, NULL, 0, sizeof *o);
  if (!o) return NULL;
  memset(o, 0, sizeof *o);
  o->base.ops = &optimal_ops;
  o->alloc = a;
  o->nslots = nslots;
  size_t n = nslots;
  o->next_use = kvbm__realloc(a, NULL, 0, n * sizeof(uint64_t));
  o->position = kvbm__realloc(a, NULL, 0, n * sizeof(uint64_t));
  o->tick = kvbm__realloc(a, NULL, 0, n * sizeof(uint64_t));
  if (!o->next_use || !o->position || !o->tick || kvbm__heap_init(&o->heap, a, nslots) != 0) {
    opt_destroy(&o->base);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) o->next_use[i] = UINT64_MAX;
  return &o->base;
}
