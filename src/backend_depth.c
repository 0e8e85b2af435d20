/* backend_depth.c - "depth": a structure-aware LRU-2 for prefix trees.
 *
 * Time is counted in walks: a walk is one pass down a prefix (a request's
 * lookups and registrations go root first), so a new one starts whenever a
 * hit or a registration is not deeper than the one before it. Every block
 * of one request then shares its walk, and what tells them apart is their
 * place in the tree.
 *
 * Blocks used once go first: on real traces a block seen once is reused
 * less than half the time and late, one seen twice mostly and sooner (the
 * idea of LRU-2, O'Neil et al., SIGMOD '93). Uses are remembered across
 * evictions in a history of the last 8 x nslots evicted hashes (ghost.h), so a
 * returning block keeps its past. Victims: blocks used once, the deepest
 * first (a prefix match stops at the first missing block, so a parent is
 * worth at least its children), then the oldest release; after them the
 * blocks used more than once, least recently used walk first, deepest
 * first within a walk. */
#include "backend.h"
#include "ghost.h"
#include "slot_heap.h"

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  kvbm__slot_heap heap;
  kvbm_hash *hash;
  uint64_t *last, *second; /* per slot: walks of the last two uses (0: none) */
  uint64_t walk, clock, depth;
  uint32_t nslots;
  kvbm__ghost history; /* evicted hash -> walk of its last use */
} depth;

/* A use of h now: the walk clock moves when the walk starts again. */
static uint64_t use(depth *d, kvbm_hash h) {
  uint64_t pos = kvbm_hash_position(h);
  if (d->walk == 0 || pos <= d->depth) d->walk++;
  d->depth = pos;
  return d->walk;
}

static void dp_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  depth *d = (depth *)b;
  if (slot >= d->nslots || kvbm__heap_has(&d->heap, slot)) return;
  uint64_t before = 0;
  kvbm__ghost_take_value(&d->history, h, &before);
  d->hash[slot] = h;
  d->second[slot] = before;
  d->last[slot] = use(d, h);
}

static void dp_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  depth *d = (depth *)b;
  if (slot >= d->nslots || kvbm__heap_has(&d->heap, slot)) return;
  if (d->hash[slot].lo != h.lo || d->hash[slot].hi != h.hi) dp_admit(b, slot, h);
  uint64_t key[3] = {d->second[slot] ? d->last[slot] : 0, UINT64_MAX - kvbm_hash_position(h),
                     ++d->clock};
  kvbm__heap_set(&d->heap, slot, key);
  b->len++;
}

static void dp_remove(kvbm__backend *b, uint32_t slot) {
  depth *d = (depth *)b;
  if (!kvbm__heap_has(&d->heap, slot)) return;
  kvbm__heap_remove(&d->heap, slot);
  d->second[slot] = d->last[slot];
  d->last[slot] = use(d, d->hash[slot]);
  b->len--;
}

static size_t dp_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  depth *d = (depth *)b;
  size_t k = 0;
  while (k < n && (out[k] = kvbm__heap_pop(&d->heap)) != KVBM__HEAP_NONE) {
    uint32_t s = out[k++];
    kvbm__ghost_push_value(&d->history, d->hash[s], d->last[s]);
    d->hash[s] = (kvbm_hash){0, 0};
  }
  b->len -= k;
  return k;
}

static size_t dp_bytes(const kvbm__backend *b) {
  const depth *d = (const depth *)b;
  return sizeof *d + kvbm__heap_bytes(&d->heap) + (size_t)d->nslots * (sizeof(kvbm_hash) + 16) +
         kvbm__ghost_bytes(&d->history);
}

static void dp_destroy(kvbm__backend *b) {
  depth *d = (depth *)b;
  const kvbm_allocator *a = d->alloc;
  size_t n = d->nslots;
  if (d->heap.at) kvbm__heap_free(&d->heap);
  kvbm__ghost_free(&d->history);
  kvbm__free(a, d->hash, n * sizeof *d->hash);
  kvbm__free(a, d->last, n * sizeof *d->last);
  kvbm__free(a, d->second, n * sizeof *d->second);
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
  d->last = kvbm__realloc(a, NULL, 0, n * sizeof *d->last);
  d->second = kvbm__realloc(a, NULL, 0, n * sizeof *d->second);
  uint32_t hist = kvbm__ghost_history_size(nslots);
  int rc = kvbm__ghost_init(&d->history, a, hist);
  if (!d->hash || !d->last || !d->second || rc || kvbm__heap_init(&d->heap, a, nslots) != 0) {
    dp_destroy(&d->base);
    return NULL;
  }
  memset(d->hash, 0, n * sizeof *d->hash);
  memset(d->last, 0, n * sizeof *d->last);
  memset(d->second, 0, n * sizeof *d->second);
  return &d->base;
}
