/* batcher.c - the event batcher's logic, with time passed in; loop_ev.c
 * drives it from libev timers, tests drive it by hand. */
#include "events.h"

int kvbm__batcher_init(kvbm__batcher *b, const kvbm_allocator *a, size_t max, double window,
                       kvbm__emit_fn emit, void *ud) {
  memset(b, 0, sizeof *b);
  b->alloc = a;
  b->max = max;
  b->window = window;
  b->kind = -1;
  b->deadline = -1;
  b->emit = emit;
  b->ud = ud;
  b->buf = kvbm__realloc(a, NULL, 0, max * sizeof *b->buf);
  b->scratch = kvbm__realloc(a, NULL, 0, max * sizeof *b->scratch);
  b->keys = kvbm__realloc(a, NULL, 0, max * sizeof *b->keys);
  b->scratch_keys = kvbm__realloc(a, NULL, 0, max * sizeof *b->scratch_keys);
  if (b->buf && b->scratch && b->keys && b->scratch_keys) return 0;
  kvbm__batcher_free(b);
  return KVBM_ENOMEM;
}

void kvbm__batcher_free(kvbm__batcher *b) {
  kvbm__free(b->alloc, b->buf, b->max * sizeof *b->buf);
  kvbm__free(b->alloc, b->scratch, b->max * sizeof *b->scratch);
  kvbm__free(b->alloc, b->keys, b->max * sizeof *b->keys);
  kvbm__free(b->alloc, b->scratch_keys, b->max * sizeof *b->scratch_keys);
  b->buf = b->scratch = NULL;
  b->keys = b->scratch_keys = NULL;
}

/* Stable sort of the batch by its keys (positions, or their complement for
 * descending removes; positions are below 2^24). Batches usually arrive in
 * order already (or exactly reversed: removes of a chain evicted root
 * first); otherwise an LSD radix sort, 3 passes of 8 bits, which is stable
 * and linear. */
static void sort_batch(kvbm__batcher *b, size_t n) {
  size_t i = 1;
  while (i < n && b->keys[i - 1] <= b->keys[i]) i++;
  if (i >= n) return;
  for (i = 1; i < n && b->keys[i - 1] > b->keys[i]; i++) {}
  if (i >= n) { /* strictly decreasing: reversing keeps it stable */
    for (size_t lo = 0, hi = n - 1; lo < hi; lo++, hi--) {
      kvbm_hash th = b->buf[lo];
      uint32_t tk = b->keys[lo];
      b->buf[lo] = b->buf[hi], b->keys[lo] = b->keys[hi];
      b->buf[hi] = th, b->keys[hi] = tk;
    }
    return;
  }
  kvbm_hash *v = b->buf, *tv = b->scratch;
  uint32_t *k = b->keys, *tk = b->scratch_keys;
  for (unsigned shift = 0; shift < 24; shift += 8) {
    size_t count[257] = {0};
    for (i = 0; i < n; i++) count[((k[i] >> shift) & 0xff) + 1]++;
    for (i = 1; i <= 256; i++) count[i] += count[i - 1];
    for (i = 0; i < n; i++) {
      size_t at = count[(k[i] >> shift) & 0xff]++;
      tv[at] = v[i];
      tk[at] = k[i];
    }
    kvbm_hash *sv = v;
    uint32_t *sk = k;
    v = tv, k = tk, tv = sv, tk = sk;
  }
  /* three passes leave the result in the scratch arrays: swap them in */
  b->scratch = b->buf, b->scratch_keys = b->keys;
  b->buf = v, b->keys = k;
}

void kvbm__batcher_flush(kvbm__batcher *b) {
  if (b->n == 0) return;
  size_t n = b->n;
  kvbm_event_kind kind = (kvbm_event_kind)b->kind;
  sort_batch(b, n);
  b->n = 0; /* emptied before emit, which may push again */
  b->kind = -1;
  b->deadline = -1;
  b->emit(b->ud, kind, b->buf, n);
}

static inline void push(kvbm__batcher *b, double now, kvbm_event_kind kind, kvbm_hash h) {
  if (b->n > 0 && b->kind != (int)kind) kvbm__batcher_flush(b); /* kind switch */
  if (b->n == 0) b->deadline = now + b->window;                  /* the window opens */
  b->kind = (int)kind;
  uint32_t pos = (uint32_t)kvbm__hash_position(h); /* < 2^24 */
  b->keys[b->n] = kind == KVBM_EVENT_REMOVE ? 0xffffffu - pos : pos;
  b->buf[b->n++] = h;
  if (b->n >= b->max) kvbm__batcher_flush(b); /* full */
}

void kvbm__batcher_push(kvbm__batcher *b, double now, kvbm_event_kind kind, kvbm_hash h) {
  push(b, now, kind, h);
}

void kvbm__batcher_drain(kvbm__batcher *b, double now, kvbm_subscription *s) {
  while (s->len > 0) {
    kvbm__event e = s->ring[s->head];
    if (b->n > 0 && b->kind != (int)e.kind) {
      /* flush before taking e: an emit that drains again (a sink calling
       * flush or close) then takes e itself, in order */
      kvbm__batcher_flush(b);
      continue;
    }
    s->head = s->head + 1 == s->cap ? 0 : s->head + 1;
    s->len--; /* taken before push, whose emit may let new events in */
    push(b, now, (kvbm_event_kind)e.kind, e.h);
  }
}

void kvbm__batcher_expire(kvbm__batcher *b, double now) {
  if (b->n > 0 && now >= b->deadline) kvbm__batcher_flush(b);
}

double kvbm__batcher_deadline(const kvbm__batcher *b) { return b->n > 0 ? b->deadline : -1; }
