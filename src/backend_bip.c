/* backend_bip.c - "bip": the Bimodal Insertion Policy on prefix chains (see
 * bip_order.h). One list, victims from its head. A block released after a
 * hit goes to the tail; so does one registered again while its hash is in
 * the history of evicted hashes (8 x nslots, as depth's: it was reused,
 * only too late for the pool). Any
 * other block goes to the head, save one fresh chain in 32. */
#include "backend.h"
#include "bip_order.h"
#include "ghost.h"

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  lists q;
  kvbm_hash *hash; /* per slot, from admit */
  uint8_t *reused; /* per slot: hit since admitted, or returned from the history */
  uint32_t nslots;
  bip_chain chain;
  kvbm__ghost history; /* evicted hashes */
} bip;

static void bip_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  bip *p = (bip *)b;
  if (slot >= p->nslots || in_list(&p->q, slot)) return;
  p->hash[slot] = h;
  p->reused[slot] = (uint8_t)kvbm__ghost_take(&p->history, h);
}

static void bip_insert_op(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  bip *p = (bip *)b;
  if (slot >= p->nslots || in_list(&p->q, slot)) return;
  if (p->hash[slot].lo != h.lo || p->hash[slot].hi != h.hi) bip_admit(b, slot, h); /* never admitted */
  bip_link(&p->chain, &p->q, slot, bip_decide(&p->chain, h, p->reused[slot]));
  b->len++;
}

static void bip_remove(kvbm__backend *b, uint32_t slot) {
  bip *p = (bip *)b;
  if (slot >= p->nslots || !in_list(&p->q, slot)) return;
  unlink_node(&p->q, slot);
  p->reused[slot] = 1;
  b->len--;
}

static size_t bip_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  bip *p = (bip *)b;
  size_t k = 0;
  while (k < n && (out[k] = pop_head(&p->q, 0)) != NO_SLOT) {
    uint32_t s = out[k++];
    kvbm__ghost_push(&p->history, p->hash[s]);
    p->hash[s] = (kvbm_hash){0, 0};
  }
  b->len -= k;
  return k;
}

static size_t bip_bytes(const kvbm__backend *b) {
  const bip *p = (const bip *)b;
  return sizeof *p + 2 * ((size_t)p->nslots + 1) * sizeof(uint32_t) +
         (size_t)p->nslots * (sizeof(kvbm_hash) + 1) + kvbm__ghost_bytes(&p->history);
}

static void bip_destroy(kvbm__backend *b) {
  bip *p = (bip *)b;
  const kvbm_allocator *a = p->alloc;
  size_t n = p->nslots;
  if (p->q.prev) lists_free(&p->q, a, 1);
  kvbm__ghost_free(&p->history);
  kvbm__free(a, p->hash, n * sizeof *p->hash);
  kvbm__free(a, p->reused, n);
  kvbm__free(a, p, sizeof *p);
}

static const kvbm__backend_ops bip_ops = {
    .insert = bip_insert_op, .remove = bip_remove, .evict = bip_evict, .destroy = bip_destroy,
    .bytes = bip_bytes, .admit = bip_admit};

kvbm__backend *kvbm__bip_new(const kvbm_allocator *a, uint32_t nslots) {
  bip *p = kvbm__realloc(a, NULL, 0, sizeof *p);
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  p->base.ops = &bip_ops;
  p->alloc = a;
  p->nslots = nslots;
  bip_chain_init(&p->chain);
  size_t n = nslots;
  p->hash = kvbm__realloc(a, NULL, 0, n * sizeof *p->hash);
  p->reused = kvbm__realloc(a, NULL, 0, n);
  int rc = kvbm__ghost_init(&p->history, a, kvbm__ghost_history_size(nslots));
  if (!p->hash || !p->reused || rc != 0 || lists_init(&p->q, a, nslots, 1) != 0) {
    p->q.prev = NULL;
    bip_destroy(&p->base);
    return NULL;
  }
  memset(p->hash, 0, n * sizeof *p->hash);
  memset(p->reused, 0, n);
  return &p->base;
}
