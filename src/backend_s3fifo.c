/* backend_s3fifo.c - S3-FIFO (Yang et al., "FIFO queues are all you need
 * for cache eviction", SOSP '23): a small FIFO for new blocks (a tenth of
 * the pool), a main FIFO, a ghost FIFO of hashes evicted from the small
 * one, and a 2-bit hit counter per block.
 *
 * A block is admitted to main when its hash is in the ghost, else to
 * small. Victims: while small holds at least its share (or main is empty),
 * the oldest of small goes to main if it was hit since it arrived (counter
 * cleared) or is evicted and remembered in the ghost; otherwise the oldest
 * of main is evicted, or goes round again with one hit less.
 *
 * In this pool a hit takes the block out of the index while it is in use;
 * its release puts it back at the new end of the queue it belongs to, with
 * its counter. */
#include "backend.h"
#include "backend_lists.h"
#include "ghost.h"

enum { SMALL, MAIN };

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  lists q; /* SMALL and MAIN */
  size_t qlen[2];
  kvbm_hash *hash;       /* per slot, from admit */
  uint8_t *freq, *queue; /* per slot */
  uint32_t nslots, small_share;
  kvbm__ghost ghost;
} s3fifo;

static void s3_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  s3fifo *s = (s3fifo *)b;
  if (slot >= s->nslots) return;
  s->hash[slot] = h;
  s->freq[slot] = 0;
  s->queue[slot] = kvbm__ghost_take(&s->ghost, h) ? MAIN : SMALL;
}

static void enqueue(s3fifo *s, uint32_t slot, unsigned queue) {
  s->queue[slot] = (uint8_t)queue;
  push_tail(&s->q, queue, slot);
  s->qlen[queue]++;
}

static uint32_t dequeue(s3fifo *s, unsigned queue) {
  uint32_t slot = pop_head(&s->q, queue);
  if (slot != NO_SLOT) s->qlen[queue]--;
  return slot;
}

static void s3_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  s3fifo *s = (s3fifo *)b;
  if (slot >= s->nslots || in_list(&s->q, slot)) return;
  if (s->hash[slot].lo != h.lo || s->hash[slot].hi != h.hi) s3_admit(b, slot, h); /* never admitted */
  enqueue(s, slot, s->queue[slot]);
  b->len++;
}

static void s3_remove(kvbm__backend *b, uint32_t slot) {
  s3fifo *s = (s3fifo *)b;
  if (slot >= s->nslots || !in_list(&s->q, slot)) return;
  unlink_node(&s->q, slot);
  s->qlen[s->queue[slot]]--;
  if (s->freq[slot] < 3) s->freq[slot]++;
  b->len--;
}

static uint32_t victim(s3fifo *s) {
  for (;;) {
    if (s->qlen[SMALL] > 0 && (s->qlen[SMALL] >= s->small_share || s->qlen[MAIN] == 0)) {
      uint32_t t = dequeue(s, SMALL);
      if (s->freq[t] > 0) { /* hit while small: promoted */
        s->freq[t] = 0;
        enqueue(s, t, MAIN);
        continue;
      }
      kvbm__ghost_push(&s->ghost, s->hash[t]);
      return t;
    }
    uint32_t t = dequeue(s, MAIN);
    if (t == NO_SLOT) return NO_SLOT;
    if (s->freq[t] == 0) return t;
    s->freq[t]--;
    enqueue(s, t, MAIN);
  }
}

static size_t s3_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  s3fifo *s = (s3fifo *)b;
  size_t k = 0;
  while (k < n && (out[k] = victim(s)) != NO_SLOT) {
    s->hash[out[k]] = (kvbm_hash){0, 0}; /* forgotten: the slot loses its hash */
    k++;
  }
  b->len -= k;
  return k;
}

static size_t s3_bytes(const kvbm__backend *b) {
  const s3fifo *s = (const s3fifo *)b;
  size_t n = s->nslots;
  return sizeof *s + 2 * (n + 2) * sizeof(uint32_t) + n * (sizeof(kvbm_hash) + 2) +
         kvbm__ghost_bytes(&s->ghost);
}

static void s3_destroy(kvbm__backend *b) {
  s3fifo *s = (s3fifo *)b;
  const kvbm_allocator *a = s->alloc;
  size_t n = s->nslots;
  if (s->q.prev) lists_free(&s->q, a, 2);
  kvbm__ghost_free(&s->ghost);
  kvbm__free(a, s->hash, n * sizeof *s->hash);
  kvbm__free(a, s->freq, n);
  kvbm__free(a, s->queue, n);
  kvbm__free(a, s, sizeof *s);
}

static const kvbm__backend_ops s3fifo_ops = {
    .insert = s3_insert, .remove = s3_remove, .evict = s3_evict, .destroy = s3_destroy,
    .bytes = s3_bytes, .admit = s3_admit};

kvbm__backend *kvbm__s3fifo_new(const kvbm_allocator *a, uint32_t nslots) {
  s3fifo *s = kvbm__realloc(a, NULL, 0, sizeof *s);
  if (!s) return NULL;
  memset(s, 0, sizeof *s);
  s->base.ops = &s3fifo_ops;
  s->alloc = a;
  s->nslots = nslots;
  s->small_share = nslots / 10 ? nslots / 10 : 1;
  size_t n = nslots;
  s->hash = kvbm__realloc(a, NULL, 0, n * sizeof *s->hash);
  s->freq = kvbm__realloc(a, NULL, 0, n);
  s->queue = kvbm__realloc(a, NULL, 0, n);
  int ghost_rc = kvbm__ghost_init(&s->ghost, a, nslots - s->small_share ? nslots - s->small_share : 1);
  if (!s->hash || !s->freq || !s->queue || ghost_rc != 0 || lists_init(&s->q, a, nslots, 2) != 0) {
    s->q.prev = NULL;
    s3_destroy(&s->base);
    return NULL;
  }
  memset(s->hash, 0, n * sizeof *s->hash);
  memset(s->freq, 0, n);
  memset(s->queue, SMALL, n);
  return &s->base;
}
