/* hashmap.h - an open-addressing index from 128-bit keys to u32 ids.
 *
 * The keys live in the caller's own array (registry entries, lineage nodes):
 * a bucket holds a 32-bit tag and the id, 8 bytes, and the full key is read
 * from `base + id * stride` only when the tag matches. The tag is the hash's
 * high half, which also gives the home bucket, so moving buckets around
 * (growth, deletion) never reads a key. Linear probing with
 * backward-shift deletion (no tombstones), load factor at most 1/2. Sized up
 * front so the hot path does not allocate. */
#ifndef KVBM_HASHMAP_H
#define KVBM_HASHMAP_H

#include "internal.h"

#define KVBM__MAP_NONE UINT32_MAX

typedef struct {
  uint32_t tag;
  uint32_t id; /* KVBM__MAP_NONE: empty bucket */
} kvbm__bucket;

typedef struct {
  kvbm__bucket *buckets;
  size_t mask; /* capacity - 1 (capacity is a power of two) */
  size_t len;
  const kvbm_allocator *alloc;
} kvbm__map;

/* Where the keys are: key of id i is at (char *)base + i * stride. */
typedef struct {
  const void *base;
  size_t stride;
} kvbm__keys;

int kvbm__map_init(kvbm__map *m, const kvbm_allocator *a, size_t expected);
void kvbm__map_free(kvbm__map *m);

static inline uint64_t kvbm__map_mix(kvbm_hash k) {
  return (k.lo ^ (k.hi * UINT64_C(0x9E3779B97F4A7C15))) * UINT64_C(0xD6E8FEB86659FD93);
}

static inline const kvbm_hash *kvbm__key_at(kvbm__keys keys, uint32_t id) {
  return (const kvbm_hash *)((const char *)keys.base + (size_t)id * keys.stride);
}

static inline uint32_t kvbm__map_tag(kvbm_hash k) { return (uint32_t)(kvbm__map_mix(k) >> 32); }

static inline uint32_t kvbm__map_get(const kvbm__map *m, kvbm__keys keys, kvbm_hash k) {
  uint32_t tag = kvbm__map_tag(k);
  for (size_t i = tag & m->mask;; i = (i + 1) & m->mask) {
    const kvbm__bucket *b = &m->buckets[i];
    if (b->id == KVBM__MAP_NONE) return KVBM__MAP_NONE;
    if (b->tag == tag) {
      const kvbm_hash *key = kvbm__key_at(keys, b->id);
      if (key->lo == k.lo && key->hi == k.hi) return b->id;
    }
  }
}

/* Adds id under key k (k must not be present). 0 or KVBM_ENOMEM. */
int kvbm__map_add(kvbm__map *m, kvbm_hash k, uint32_t id);
/* Removes the bucket holding id under key k; returns 1 if it was there. */
int kvbm__map_del(kvbm__map *m, kvbm_hash k, uint32_t id);
/* Grows now, if needed, so that `extra` more adds will not allocate. */
int kvbm__map_reserve(kvbm__map *m, size_t extra);
size_t kvbm__map_bytes(const kvbm__map *m);

#endif
