/* events.h - internals of the events manager and the batcher. */
#ifndef KVBM_EVENTS_H
#define KVBM_EVENTS_H

#include "internal.h"

/* Called by the registry: a new registration (returns 1 when a create event
 * went out, so the remove must follow) and the end of one that did. */
int kvbm__events_created(kvbm_events *ev, kvbm_hash h);
void kvbm__events_removed(kvbm_events *ev, kvbm_hash h);

/* A subscriber's ring (the batcher drains it without a call per event). */
typedef struct {
  kvbm_hash h;
  uint8_t kind;
} kvbm__event;

struct kvbm_subscription {
  kvbm_events *ev;
  kvbm__event *ring;
  size_t cap, head, len;
  uint64_t lost;
};

/* The batcher: pure logic, time passed in (seconds), no loop. A batch opens
 * with its first event and is emitted when the kind switches, when it
 * reaches max, when `window` has passed since it opened (expire), or on
 * flush. Emitted batches are sorted by position, creates ascending and
 * removes descending, stable. */
typedef void (*kvbm__emit_fn)(void *ud, kvbm_event_kind kind, const kvbm_hash *hs, size_t n);

typedef struct kvbm__batcher {
  kvbm_hash *buf, *scratch;
  uint32_t *keys, *scratch_keys; /* sort keys, one per buffered hash */
  size_t n, max;
  int kind; /* -1: empty */
  double window, deadline;
  kvbm__emit_fn emit;
  void *ud;
  const kvbm_allocator *alloc;
} kvbm__batcher;

int kvbm__batcher_init(kvbm__batcher *b, const kvbm_allocator *a, size_t max, double window,
                       kvbm__emit_fn emit, void *ud);
void kvbm__batcher_free(kvbm__batcher *b);
void kvbm__batcher_push(kvbm__batcher *b, double now, kvbm_event_kind kind, kvbm_hash h);
/* Pushes every event the subscription holds (oldest first). */
void kvbm__batcher_drain(kvbm__batcher *b, double now, kvbm_subscription *s);
/* Emits the batch if its window has passed. */
void kvbm__batcher_expire(kvbm__batcher *b, double now);
void kvbm__batcher_flush(kvbm__batcher *b);
/* When expire() will emit: the open batch's deadline, or < 0 when empty. */
double kvbm__batcher_deadline(const kvbm__batcher *b);

/* The loop glue (loop_ev.c, the only file that includes <ev.h>). */
typedef struct kvbm__watch kvbm__watch;
typedef double (*kvbm__pump_fn)(void *ud, double now); /* returns the next deadline or < 0 */
kvbm__watch *kvbm__watch_start(const kvbm_allocator *a, struct ev_loop *loop, kvbm__pump_fn pump, void *ud);
void kvbm__watch_stop(kvbm__watch *w);
double kvbm__loop_now(struct ev_loop *loop);

#endif
