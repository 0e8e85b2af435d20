/* ghost.c - the bounded FIFO set of evicted hashes (see ghost.h). */
#include "ghost.h"

static kvbm__keys keys_of(const kvbm__ghost *g) { return (kvbm__keys){g->keys, sizeof *g->keys}; }

int kvbm__ghost_init(kvbm__ghost *g, const kvbm_allocator *a, uint32_t limit) {
  memset(g, 0, sizeof *g);
  g->alloc = a;
  g->limit = limit ? limit : 1;
  g->keys = kvbm__realloc(a, NULL, 0, (size_t)g->limit * sizeof *g->keys);
  g->free = kvbm__realloc(a, NULL, 0, (size_t)g->limit * sizeof *g->free);
  g->vals = kvbm__realloc(a, NULL, 0, (size_t)g->limit * sizeof *g->vals);
  int rc = kvbm__map_init(&g->index, a, g->limit);
  if (!g->keys || !g->free || !g->vals || rc != 0 || lists_init(&g->order, a, g->limit, 1) != 0) {
    kvbm__free(a, g->keys, (size_t)g->limit * sizeof *g->keys);
    kvbm__free(a, g->free, (size_t)g->limit * sizeof *g->free);
    kvbm__free(a, g->vals, (size_t)g->limit * sizeof *g->vals);
    kvbm__map_free(&g->index);
    g->keys = NULL;
    g->free = NULL;
    return KVBM_ENOMEM;
  }
  for (uint32_t i = 0; i < g->limit; i++) g->free[i] = g->limit - 1 - i;
  g->nfree = g->limit;
  return 0;
}

void kvbm__ghost_free(kvbm__ghost *g) {
  if (!g->keys) return;
  kvbm__free(g->alloc, g->keys, (size_t)g->limit * sizeof *g->keys);
  kvbm__free(g->alloc, g->free, (size_t)g->limit * sizeof *g->free);
  kvbm__free(g->alloc, g->vals, (size_t)g->limit * sizeof *g->vals);
  lists_free(&g->order, g->alloc, 1);
  kvbm__map_free(&g->index);
  g->keys = NULL;
}

static void release_node(kvbm__ghost *g, uint32_t n) {
  kvbm__map_del(&g->index, g->keys[n], n);
  unlink_node(&g->order, n);
  g->free[g->nfree++] = n;
}

int kvbm__ghost_take_value(kvbm__ghost *g, kvbm_hash h, uint64_t *v) {
  uint32_t n = kvbm__map_get(&g->index, keys_of(g), h);
  if (n == KVBM__MAP_NONE) return 0;
  if (v) *v = g->vals[n];
  release_node(g, n);
  return 1;
}

int kvbm__ghost_take(kvbm__ghost *g, kvbm_hash h) { return kvbm__ghost_take_value(g, h, NULL); }

int kvbm__ghost_drop_oldest(kvbm__ghost *g) {
  uint32_t n = list_first(&g->order, 0);
  if (n == NO_SLOT) return 0;
  release_node(g, n);
  return 1;
}

void kvbm__ghost_push(kvbm__ghost *g, kvbm_hash h) { kvbm__ghost_push_value(g, h, 0); }

void kvbm__ghost_push_value(kvbm__ghost *g, kvbm_hash h, uint64_t v) {
  kvbm__ghost_take(g, h);
  if (g->nfree == 0) kvbm__ghost_drop_oldest(g);
  uint32_t n = g->free[--g->nfree];
  g->keys[n] = h;
  g->vals[n] = v;
  if (kvbm__map_add(&g->index, h, n) != 0) { /* cannot happen: sized for limit */
    g->free[g->nfree++] = n;
    return;
  }
  push_tail(&g->order, 0, n);
}

size_t kvbm__ghost_bytes(const kvbm__ghost *g) {
  return (size_t)g->limit * (sizeof *g->keys + sizeof *g->vals + sizeof *g->free + 2 * sizeof(uint32_t)) +
         kvbm__map_bytes(&g->index);
}
