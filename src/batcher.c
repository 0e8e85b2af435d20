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
  if (b->buf && b->scratch) return 0;
  kvbm__batcher_free(b);
  return KVBM_ENOMEM;
}

void kvbm__batcher_free(kvbm__batcher *b) {
  kvbm__free(b->alloc, b->buf, b->max * sizeof *b->buf);
  kvbm__free(b->alloc, b->scratch, b->max * sizeof *b->scratch);
  b->buf = b->scratch = NULL;
}

/* Stable merge sort by position: ascending for creates, descending for
 * removes (equal positions keep their arrival order either way). */
static int before(kvbm_hash a, kvbm_hash b, int descending) {
  uint64_t pa = kvbm_hash_position(a), pb = kvbm_hash_position(b);
  return descending ? pa > pb : pa < pb;
}

static void sort_batch(kvbm_hash *v, kvbm_hash *tmp, size_t n, int descending) {
  for (size_t width = 1; width < n; width *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * width) {
      size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) tmp[k++] = before(v[j], v[i], descending) ? v[j++] : v[i++];
      while (i < mid) tmp[k++] = v[i++];
      while (j < hi) tmp[k++] = v[j++];
    }
    memcpy(v, tmp, n * sizeof *v);
  }
}

void kvbm__batcher_flush(kvbm__batcher *b) {
  if (b->n == 0) return;
  size_t n = b->n;
  kvbm_event_kind kind = (kvbm_event_kind)b->kind;
  sort_batch(b->buf, b->scratch, n, kind == KVBM_EVENT_REMOVE);
  b->n = 0; /* emptied before emit, which may push again */
  b->kind = -1;
  b->deadline = -1;
  b->emit(b->ud, kind, b->buf, n);
}

void kvbm__batcher_push(kvbm__batcher *b, double now, kvbm_event_kind kind, kvbm_hash h) {
  if (b->n > 0 && b->kind != (int)kind) kvbm__batcher_flush(b); /* kind switch */
  if (b->n == 0) b->deadline = now + b->window;                  /* the window opens */
  b->kind = (int)kind;
  b->buf[b->n++] = h;
  if (b->n >= b->max) kvbm__batcher_flush(b); /* full */
}

void kvbm__batcher_expire(kvbm__batcher *b, double now) {
  if (b->n > 0 && now >= b->deadline) kvbm__batcher_flush(b);
}

double kvbm__batcher_deadline(const kvbm__batcher *b) { return b->n > 0 ? b->deadline : -1; }
