/* backend_arc.c - ARC (Megiddo and Modha, "ARC: a self-tuning, low overhead
 * replacement cache", FAST '03): T1 holds blocks seen once, T2 blocks hit
 * again; B1 and B2 are ghosts of the hashes evicted from each; p is the
 * adaptive target length of T1.
 *
 * A hash registered again while in B1 means T1 was too short: p grows by
 * max(1, |B2| / |B1|); in B2, p shrinks by max(1, |B1| / |B2|); either way
 * the block goes to T2, otherwise to T1. A hit moves a block to T2. The
 * victim is T1's oldest while T1 is longer than p (or T2 is empty), else
 * T2's oldest. Each ghost keeps the last nslots hashes.
 *
 * In this pool T1 and T2 order the blocks by release: a hit takes a block
 * out while it is in use and its release puts it back as the newest. */
#include "backend.h"
#include "backend_lists.h"
#include "ghost.h"

enum { T1, T2 };

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  lists t; /* T1 and T2, oldest first */
  size_t tlen[2];
  kvbm_hash *hash;
  uint8_t *list; /* per slot: T1 or T2 */
  uint32_t nslots, p;
  kvbm__ghost b1, b2;
} arc;

static uint32_t ratio(uint32_t num, uint32_t den) { return den && num / den > 1 ? num / den : 1; }

static void arc_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  arc *c = (arc *)b;
  if (slot >= c->nslots) return;
  uint32_t l1 = kvbm__ghost_len(&c->b1), l2 = kvbm__ghost_len(&c->b2);
  c->hash[slot] = h;
  c->list[slot] = T2;
  if (kvbm__ghost_take(&c->b1, h)) {
    uint32_t d = ratio(l2, l1);
    c->p = d > c->nslots - c->p ? c->nslots : c->p + d;
  } else if (kvbm__ghost_take(&c->b2, h)) {
    uint32_t d = ratio(l1, l2);
    c->p = d > c->p ? 0 : c->p - d;
  } else {
    c->list[slot] = T1;
  }
}

static void arc_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  arc *c = (arc *)b;
  if (slot >= c->nslots || in_list(&c->t, slot)) return;
  if (c->hash[slot].lo != h.lo || c->hash[slot].hi != h.hi) arc_admit(b, slot, h);
  push_tail(&c->t, c->list[slot], slot);
  c->tlen[c->list[slot]]++;
  b->len++;
}

static void arc_remove(kvbm__backend *b, uint32_t slot) {
  arc *c = (arc *)b;
  if (slot >= c->nslots || !in_list(&c->t, slot)) return;
  unlink_node(&c->t, slot);
  c->tlen[c->list[slot]]--;
  c->list[slot] = T2;
  b->len--;
}

static size_t arc_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  arc *c = (arc *)b;
  size_t k = 0;
  while (k < n && b->len > 0) {
    unsigned from = c->tlen[T1] > 0 && (c->tlen[T1] > c->p || c->tlen[T2] == 0) ? T1 : T2;
    uint32_t v = pop_head(&c->t, from);
    c->tlen[from]--;
    kvbm__ghost_push(from == T1 ? &c->b1 : &c->b2, c->hash[v]);
    c->hash[v] = (kvbm_hash){0, 0};
    out[k++] = v;
    b->len--;
  }
  return k;
}

static size_t arc_bytes(const kvbm__backend *b) {
  const arc *c = (const arc *)b;
  size_t n = c->nslots;
  return sizeof *c + 2 * (n + 2) * sizeof(uint32_t) + n * (sizeof(kvbm_hash) + 1) +
         kvbm__ghost_bytes(&c->b1) + kvbm__ghost_bytes(&c->b2);
}

static void arc_destroy(kvbm__backend *b) {
  arc *c = (arc *)b;
  const kvbm_allocator *a = c->alloc;
  size_t n = c->nslots;
  if (c->t.prev) lists_free(&c->t, a, 2);
  kvbm__ghost_free(&c->b1);
  kvbm__ghost_free(&c->b2);
  kvbm__free(a, c->hash, n * sizeof *c->hash);
  kvbm__free(a, c->list, n);
  kvbm__free(a, c, sizeof *c);
}

static const kvbm__backend_ops arc_ops = {
    .insert = arc_insert, .remove = arc_remove, .evict = arc_evict, .destroy = arc_destroy,
    .bytes = arc_bytes, .admit = arc_admit};

kvbm__backend *kvbm__arc_new(const kvbm_allocator *a, uint32_t nslots) {
  arc *c = kvbm__realloc(a, NULL, 0, sizeof *c);
  if (!c) return NULL;
  memset(c, 0, sizeof *c);
  c->base.ops = &arc_ops;
  c->alloc = a;
  c->nslots = nslots;
  size_t n = nslots;
  c->hash = kvbm__realloc(a, NULL, 0, n * sizeof *c->hash);
  c->list = kvbm__realloc(a, NULL, 0, n);
  int g1 = kvbm__ghost_init(&c->b1, a, nslots), g2 = kvbm__ghost_init(&c->b2, a, nslots);
  if (!c->hash || !c->list || g1 || g2 || lists_init(&c->t, a, nslots, 2) != 0) {
    c->t.prev = NULL;
    arc_destroy(&c->base);
    return NULL;
  }
  memset(c->hash, 0, n * sizeof *c->hash);
  memset(c->list, T1, n);
  return &c->base;
}
