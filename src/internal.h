/* internal.h - helpers shared by the core's files; never installed. */
#ifndef KVBM_INTERNAL_H
#define KVBM_INTERNAL_H

#include <stddef.h>
#include <string.h>

#include "kvbm.h"

#if defined(__GNUC__)
#define kvbm__likely(x) __builtin_expect(!!(x), 1)
#define kvbm__unlikely(x) __builtin_expect(!!(x), 0)
#else
#define kvbm__likely(x) (x)
#define kvbm__unlikely(x) (x)
/* Hashes the full blocks [first, last) (block hash, chain, lineage hash)
 * into block_hashes[] and hashes[]; their tokens are at src, one block
 * after the other, and are copied to dst as each block is hashed (dst may
 * equal src). parent is block first-1's sequence hash (ignored at 0).
 * Positions must already be checked against the limit. In hash.c so that
 * XXH3 inlines into the loop. */
void kvbm__hash_blocks(const uint32_t *src, uint32_t *dst, size_t block_size, uint64_t salt,
                       size_t first, size_t last, uint64_t parent, uint64_t *block_hashes,
                       kvbm_hash *hashes);

#endif

/* Allocation through the instance's allocator (lua_Alloc shape). */
void *kvbm__realloc(const kvbm_allocator *a, void *ptr, size_t osize, size_t nsize);
void kvbm__free(const kvbm_allocator *a, void *ptr, size_t size);

/* Grows *arr (of elem-size items, capacity *cap) to hold at least need items,
 * doubling. Returns 0 or KVBM_ENOMEM (the array is untouched then). */
int kvbm__grow(const kvbm_allocator *a, void **arr, size_t *cap, size_t need, size_t elem);

/* Hashes the full blocks [first, last) (block hash, chain, lineage hash)
 * into block_hashes[] and hashes[]; their tokens are at src, one block
 * after the other, and are copied to dst as each block is hashed (dst may
 * equal src). parent is block first-1's sequence hash (ignored at 0).
 * Positions must already be checked against the limit. In hash.c so that
 * XXH3 inlines into the loop. */
void kvbm__hash_blocks(const uint32_t *src, uint32_t *dst, size_t block_size, uint64_t salt,
                       size_t first, size_t last, uint64_t parent, uint64_t *block_hashes,
                       kvbm_hash *hashes);

/* The position of a lineage hash (layout B), inline for hot loops; a
 * malformed hash (mode bits 11) reads as position 0. */
static inline uint64_t kvbm__hash_position(kvbm_hash h) {
  unsigned mode = (unsigned)(h.hi >> 62);
  unsigned r = mode == 0 ? 54 : mode == 1 ? 46 : 38;
  return mode == 3 ? 0 : (h.hi >> r) & ((UINT64_C(1) << (62 - r)) - 1);
}

#endif
