/* hashmap.c - see hashmap.h. */
#include "hashmap.h"

static size_t capacity_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  return cap;
}

static int rehash(kvbm__map *m, size_t cap) {
  kvbm__bucket *nb = kvbm__realloc(m->alloc, NULL, 0, cap * sizeof *nb);
  if (!nb) return KVBM_ENOMEM;
  for (size_t i = 0; i < cap; i++) nb[i].id = KVBM__MAP_NONE, nb[i].tag = 0;
  kvbm__bucket *old = m->buckets;
  size_t oldcap = old ? m->mask + 1 : 0;
  for (size_t i = 0; i < oldcap; i++) {
    if (old[i].id == KVBM__MAP_NONE) continue;
    size_t j = old[i].tag & (cap - 1);
    while (nb[j].id != KVBM__MAP_NONE) j = (j + 1) & (cap - 1);
    nb[j] = old[i];
  }
  kvbm__free(m->alloc, old, oldcap * sizeof *old);
  m->buckets = nb;
  m->mask = cap - 1;
  return 0;
}

int kvbm__map_init(kvbm__map *m, const kvbm_allocator *a, size_t expected) {
  m->buckets = NULL;
  m->mask = 0;
  m->len = 0;
  m->alloc = a;
  return rehash(m, capacity_for(expected));
}

void kvbm__map_free(kvbm__map *m) {
  if (m->buckets) kvbm__free(m->alloc, m->buckets, (m->mask + 1) * sizeof *m->buckets);
  m->buckets = NULL;
}

int kvbm__map_add(kvbm__map *m, kvbm_hash k, uint32_t id) {
  if (2 * (m->len + 1) > m->mask + 1) {
    int rc = rehash(m, (m->mask + 1) * 2);
    if (rc) return rc;
  }
  uint32_t tag = kvbm__map_tag(k);
  size_t i = tag & m->mask;
  while (m->buckets[i].id != KVBM__MAP_NONE) i = (i + 1) & m->mask;
  m->buckets[i].tag = tag;
  m->buckets[i].id = id;
  m->len++;
  return 0;
}

int kvbm__map_del(kvbm__map *m, kvbm_hash k, uint32_t id) {
  size_t i = kvbm__map_tag(k) & m->mask;
  for (;; i = (i + 1) & m->mask) {
    if (m->buckets[i].id == KVBM__MAP_NONE) return 0;
    if (m->buckets[i].id == id) break;
  }
  /* backward shift: pull later members of the probe run into the hole */
  size_t hole = i;
  for (size_t j = (i + 1) & m->mask; m->buckets[j].id != KVBM__MAP_NONE; j = (j + 1) & m->mask) {
    size_t home = m->buckets[j].tag & m->mask;
    /* j may fill the hole unless its home lies cyclically in (hole, j] */
    if (((j - home) & m->mask) >= ((j - hole) & m->mask)) {
      m->buckets[hole] = m->buckets[j];
      hole = j;
    }
  }
  m->buckets[hole].id = KVBM__MAP_NONE;
  m->len--;
  return 1;
}

int kvbm__map_reserve(kvbm__map *m, size_t extra) {
  size_t cap = capacity_for(m->len + extra);
  return cap > m->mask + 1 ? rehash(m, cap) : 0;
}

size_t kvbm__map_bytes(const kvbm__map *m) { return (m->mask + 1) * sizeof *m->buckets; }
