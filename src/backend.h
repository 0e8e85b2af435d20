/* backend.h - the inactive index: orders a manager's inactive slots for
 * eviction. The manager owns every hash -> slot lookup (through the
 * registry), so a backend only ever sees slot ids, plus each slot's hash when
 * it enters (the lineage backend needs it for parent links). */
#ifndef KVBM_BACKEND_H
#define KVBM_BACKEND_H

#include "internal.h"

typedef struct kvbm__backend kvbm__backend;

typedef struct kvbm__backend_ops {
  /* slot (not present) becomes inactive, with hash h */
  void (*insert)(kvbm__backend *b, uint32_t slot, kvbm_hash h);
  /* slot (present) leaves the index: a cache hit, not an eviction */
  void (*remove)(kvbm__backend *b, uint32_t slot);
  /* removes up to n victims in policy order into out[]; returns how many */
  size_t (*evict)(kvbm__backend *b, size_t n, uint32_t *out);
  void (*destroy)(kvbm__backend *b);
  /* bytes of memory the backend holds (for the per-block memory figure) */
  size_t (*bytes)(const kvbm__backend *b);
  /* Optional notifications (NULL: not needed), for policies that keep
   * history beyond the inactive pool. A block's position and parent come
   * from its hash (kvbm_hash_position, kvbm_hash_parent_fragment). */
  /* h was newly registered in slot: a fresh primary, not found in this tier */
  void (*admit)(kvbm__backend *b, uint32_t slot, kvbm_hash h);
  /* a lookup found no block for h in this tier */
  void (*miss)(kvbm__backend *b, kvbm_hash h);
  /* the host's hint: the block in slot is next needed at time next_use
   * (an offline policy; larger is later, UINT64_MAX never) */
  void (*hint)(kvbm__backend *b, uint32_t slot, uint64_t next_use);
  /* delivers what a host's policy has queued; < 0 on failure */
  int (*flush)(kvbm__backend *b);
  /* a host's policy chooses the next eviction's n victims now, outside the
   * core call (kvbm_policy_prepare); returns n or KVBM_EBUSY */
  int (*prepare)(kvbm__backend *b, size_t n);
} kvbm__backend_ops;

struct kvbm__backend {
  const kvbm__backend_ops *ops;
  size_t len; /* inactive slots in the index (real entries, no ghosts) */
};

/* Insertion-order list: LRU ("least recently released first") and the
 * hashmap+FIFO backend of the crate have the same order, because a hit
 * removes the entry and a lookup without a hit never reorders. */
kvbm__backend *kvbm__fifo_new(const kvbm_allocator *a, uint32_t nslots);

/* Multi-LRU: four insertion-order lists, the level chosen once at insert
 * from the frequency estimate; victims come from the coldest level first. */
typedef uint32_t (*kvbm__frequency_fn)(void *ud, kvbm_hash h);
kvbm__backend *kvbm__multi_lru_new(const kvbm_allocator *a, uint32_t nslots,
                                   const uint8_t thresholds[3], kvbm__frequency_fn freq, void *ud);

/* Lineage: a parent/child forest of inactive blocks keyed by (position,
 * parent fragment); only leaves are evictable. fifo_leaves selects the FIFO
 * leaf order, else the Tick order. */
kvbm__backend *kvbm__lineage_new(const kvbm_allocator *a, uint32_t nslots, int fifo_leaves);
size_t kvbm__lineage_leaves(const kvbm__backend *b); /* evictable leaves */
size_t kvbm__lineage_nodes(const kvbm__backend *b);  /* real + ghost nodes in use */

/* The policies of the literature, adapted to a pool whose hits leave the
 * index while in use (a hit is remove, the later release is insert again).
 * Each keeps per-slot state from admit to eviction. */
kvbm__backend *kvbm__s3fifo_new(const kvbm_allocator *a, uint32_t nslots);
kvbm__backend *kvbm__sieve_new(const kvbm_allocator *a, uint32_t nslots);
kvbm__backend *kvbm__arc_new(const kvbm_allocator *a, uint32_t nslots);
kvbm__backend *kvbm__slru_new(const kvbm_allocator *a, uint32_t nslots);
/* Structure-aware: see backend_depth.c. */
kvbm__backend *kvbm__depth_new(const kvbm_allocator *a, uint32_t nslots);
/* Bimodal insertion (Qureshi et al., ISCA '07) on prefix chains: see bip_order.h. */
kvbm__backend *kvbm__bip_new(const kvbm_allocator *a, uint32_t nslots);
/* Belady's offline optimum: evicts the block hinted to be needed last. */
kvbm__backend *kvbm__optimal_new(const kvbm_allocator *a, uint32_t nslots);

/* A host's policy orders victims; bad answers fall back to insertion order
 * and add one to *errors per eviction call that needed the fallback. */
kvbm__backend *kvbm__policy_new(const kvbm_allocator *a, uint32_t nslots, const kvbm_policy *policy,
                                uint64_t *errors);

#endif
