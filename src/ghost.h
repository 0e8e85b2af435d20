/* ghost.h - a bounded FIFO set of hashes: the history of recently evicted
 * blocks that S3-FIFO and ARC keep (a "ghost" holds no block, only the
 * hash). Pushing into a full set drops its oldest hash. O(1) membership,
 * removal and push; sized up front, nothing allocates afterwards. */
#ifndef KVBM_GHOST_H
#define KVBM_GHOST_H

#include "backend_lists.h"
#include "hashmap.h"

typedef struct {
  kvbm_hash *keys;  /* node -> its hash */
  uint64_t *vals;   /* node -> the value pushed with it */
  uint32_t *free;   /* a stack of unused nodes */
  uint32_t nfree, limit;
  lists order;      /* list 0 over nodes: oldest first */
  kvbm__map index;  /* hash -> node */
  const kvbm_allocator *alloc;
} kvbm__ghost;

/* Evicted hashes a history-keeping backend remembers, per slot of its pool:
 * reuse on real traces comes back from far beyond the pool's reach. */
#define KVBM__HISTORY_PER_SLOT 8

static inline uint32_t kvbm__ghost_history_size(uint32_t nslots) {
  return nslots > UINT32_MAX / KVBM__HISTORY_PER_SLOT ? UINT32_MAX - 1 : nslots * KVBM__HISTORY_PER_SLOT;
}

int kvbm__ghost_init(kvbm__ghost *g, const kvbm_allocator *a, uint32_t limit); /* limit >= 1 */
void kvbm__ghost_free(kvbm__ghost *g);
/* Takes h out of the set; 1 when it was there. */
int kvbm__ghost_take(kvbm__ghost *g, kvbm_hash h);
/* Adds h as the newest hash (moves it there when already present). */
void kvbm__ghost_push(kvbm__ghost *g, kvbm_hash h);
/* The same with a value kept for h; take_value reads it back (1 when found). */
void kvbm__ghost_push_value(kvbm__ghost *g, kvbm_hash h, uint64_t v);
int kvbm__ghost_take_value(kvbm__ghost *g, kvbm_hash h, uint64_t *v);
/* Drops the oldest hash; 0 when empty. */
int kvbm__ghost_drop_oldest(kvbm__ghost *g);
static inline uint32_t kvbm__ghost_len(const kvbm__ghost *g) { return g->limit - g->nfree; }
size_t kvbm__ghost_bytes(const kvbm__ghost *g);

#endif
