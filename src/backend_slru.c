/* backend_slru.c - segmented LRU (Karedla, Love and Wherry, 1994): new
 * blocks enter a probationary segment, a hit promotes a block to the
 * protected segment (at most four fifths of the pool); when protected
 * overflows, its oldest block is demoted to the new end of probationary.
 * Victims come from probationary first, oldest first.
 *
 * In this pool a hit takes the block out while it is in use; its release
 * puts it back as the newest of its segment. */
#include "backend.h"
#include "backend_lists.h"

enum { PROBATION, PROTECTED };

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  lists seg;
  size_t seglen[2];
  kvbm_hash *hash;
  uint8_t *which;
  uint32_t nslots, protected_cap;
} slru;

static void slru_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  slru *s = (slru *)b;
  if (slot >= s->nslots) return;
  s->hash[slot] = h;
  s->which[slot] = PROBATION;
}

static void enter(slru *s, uint32_t slot, unsigned seg) {
  s->which[slot] = (uint8_t)seg;
  push_tail(&s->seg, seg, slot);
  s->seglen[seg]++;
}

static void slru_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  slru *s = (slru *)b;
  if (slot >= s->nslots || in_list(&s->seg, slot)) return;
  if (s->hash[slot].lo != h.lo || s->hash[slot].hi != h.hi) slru_admit(b, slot, h);
  enter(s, slot, s->which[slot]);
  if (s->seglen[PROTECTED] > s->protected_cap) {
    s->seglen[PROTECTED]--;
    enter(s, pop_head(&s->seg, PROTECTED), PROBATION);
  }
  b->len++;
}

static void slru_remove(kvbm__backend *b, uint32_t slot) {
  slru *s = (slru *)b;
  if (slot >= s->nslots || !in_list(&s->seg, slot)) return;
  unlink_node(&s->seg, slot);
  s->seglen[s->which[slot]]--;
  s->which[slot] = PROTECTED;
  b->len--;
}

static size_t slru_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  slru *s = (slru *)b;
  size_t k = 0;
  while (k < n && b->len > 0) {
    unsigned from = s->seglen[PROBATION] ? PROBATION : PROTECTED;
    uint32_t v = pop_head(&s->seg, from);
    s->seglen[from]--;
    s->hash[v] = (kvbm_hash){0, 0};
    out[k++] = v;
    b->len--;
  }
  return k;
}

static size_t slru_bytes(const kvbm__backend *b) {
  const slru *s = (const slru *)b;
  size_t n = s->nslots;
  return sizeof *s + 2 * (n + 2) * sizeof(uint32_t) + n * (sizeof(kvbm_hash) + 1);
}

static void slru_destroy(kvbm__backend *b) {
  slru *s = (slru *)b;
  const kvbm_allocator *a = s->alloc;
  size_t n = s->nslots;
  if (s->seg.prev) lists_free(&s->seg, a, 2);
  kvbm__free(a, s->hash, n * sizeof *s->hash);
  kvbm__free(a, s->which, n);
  kvbm__free(a, s, sizeof *s);
}

static const kvbm__backend_ops slru_ops = {
    .insert = slru_insert, .remove = slru_remove, .evict = slru_evict, .destroy = slru_destroy,
    .bytes = slru_bytes, .admit = slru_admit};

kvbm__backend *kvbm__slru_new(const kvbm_allocator *a, uint32_t nslots) {
  slru *s = kvbm__realloc(a, NULL, 0, sizeof *s);
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->base.ops = &slru_ops;
  s->alloc = a;
  s->nslots = nslots;
  s->protected_cap = (uint32_t)((uint64_t)nslots * 4 / 5);
  if (s->protected_cap == 0) s->protected_cap = 1;
  size_t n = nslots;
  s->hash = kvbm__realloc(a, NULL, 0, n * sizeof *s->hash);
  s->which = kvbm__realloc(a, NULL, 0, n);
  if (!s->hash || !s->which || lists_init(&s->seg, a, nslots, 2) != 0) {
    s->seg.prev = NULL;
    slru_destroy(&s->base);
    return NULL;
  }
  memset(s->hash, 0, n * sizeof *s->hash);
  memset(s->which, PROBATION, n);
  return &s->base;
}
