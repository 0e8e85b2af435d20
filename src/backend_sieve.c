/* backend_sieve.c - SIEVE (Zhang et al., "SIEVE is simpler than LRU",
 * NSDI '24): one FIFO of blocks from oldest to newest, a visited bit per
 * block and a hand. A hit sets the bit and never moves the block. To find
 * a victim the hand walks from where it stopped towards the newest block
 * (wrapping to the oldest): a visited block loses its bit and stays, the
 * first unvisited one is evicted and the hand stops after it.
 *
 * A block joins the queue (as the newest) when it is admitted and keeps its
 * place while in use; the hand passes over blocks in use, which cannot be
 * evicted, without clearing their bit. */
#include "backend.h"
#include "backend_lists.h"

enum { FREE, HELD, CACHED }; /* not queued; queued and in use; queued and evictable */

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  lists q; /* list 0: oldest first */
  kvbm_hash *hash;
  uint8_t *visited, *state;
  uint32_t nslots, hand; /* hand: NO_SLOT before the first eviction */
} sieve;

/* The hand's next stop: the next newer block, or the oldest after the newest. */
static uint32_t newer(const sieve *s, uint32_t slot) {
  uint32_t n = s->q.next[slot];
  return n >= s->nslots ? list_first(&s->q, 0) : n;
}

static void dequeue(sieve *s, uint32_t slot) {
  if (s->hand == slot) s->hand = newer(s, slot);
  if (s->hand == slot) s->hand = NO_SLOT; /* it was the only one */
  unlink_node(&s->q, slot);
  s->state[slot] = FREE;
}

static void sv_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  sieve *s = (sieve *)b;
  if (slot >= s->nslots || s->state[slot] == CACHED) return;
  if (s->state[slot] != FREE) dequeue(s, slot); /* a slot that lost its hash unseen */
  s->hash[slot] = h;
  s->visited[slot] = 0;
  s->state[slot] = HELD;
  push_tail(&s->q, 0, slot);
}

static void sv_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  sieve *s = (sieve *)b;
  if (slot >= s->nslots || s->state[slot] == CACHED) return;
  if (s->state[slot] == FREE || s->hash[slot].lo != h.lo || s->hash[slot].hi != h.hi)
    sv_admit(b, slot, h);
  s->state[slot] = CACHED;
  b->len++;
}

static void sv_remove(kvbm__backend *b, uint32_t slot) {
  sieve *s = (sieve *)b;
  if (slot >= s->nslots || s->state[slot] != CACHED) return;
  s->state[slot] = HELD;
  s->visited[slot] = 1;
  b->len--;
}

static size_t sv_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  sieve *s = (sieve *)b;
  size_t k = 0;
  while (k < n && b->len > 0) {
    uint32_t h = s->hand == NO_SLOT ? list_first(&s->q, 0) : s->hand;
    while (s->state[h] != CACHED || s->visited[h]) {
      if (s->state[h] == CACHED) s->visited[h] = 0;
      h = newer(s, h);
    }
    s->hand = h;
    dequeue(s, h); /* moves the hand past the victim */
    out[k++] = h;
    b->len--;
  }
  return k;
}

static size_t sv_bytes(const kvbm__backend *b) {
  const sieve *s = (const sieve *)b;
  size_t n = s->nslots;
  return sizeof *s + 2 * (n + 1) * sizeof(uint32_t) + n * (sizeof(kvbm_hash) + 2);
}

static void sv_destroy(kvbm__backend *b) {
  sieve *s = (sieve *)b;
  const kvbm_allocator *a = s->alloc;
  size_t n = s->nslots;
  if (s->q.prev) lists_free(&s->q, a, 1);
  kvbm__free(a, s->hash, n * sizeof *s->hash);
  kvbm__free(a, s->visited, n);
  kvbm__free(a, s->state, n);
  kvbm__free(a, s, sizeof *s);
}

static const kvbm__backend_ops sieve_ops = {
    .insert = sv_insert, .remove = sv_remove, .evict = sv_evict, .destroy = sv_destroy,
    .bytes = sv_bytes, .admit = sv_admit};

kvbm__backend *kvbm__sieve_new(const kvbm_allocator *a, uint32_t nslots) {
  sieve *s = kvbm__realloc(a, NULL, 0, sizeof *s);
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->base.ops = &sieve_ops;
  s->alloc = a;
  s->nslots = nslots;
  s->hand = NO_SLOT;
  size_t n = nslots;
  s->hash = kvbm__realloc(a, NULL, 0, n * sizeof *s->hash);
  s->visited = kvbm__realloc(a, NULL, 0, n);
  s->state = kvbm__realloc(a, NULL, 0, n);
  if (!s->hash || !s->visited || !s->state || lists_init(&s->q, a, nslots, 1) != 0) {
    s->q.prev = NULL;
    sv_destroy(&s->base);
    return NULL;
  }
  memset(s->visited, 0, n);
  memset(s->state, FREE, n);
  return &s->base;
}
