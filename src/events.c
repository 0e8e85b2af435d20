/* events.c - the events manager: emission policy and subscriber rings. */
#include "events.h"

enum { POLICY_ALL, POLICY_POWER_OF_TWO, POLICY_CUSTOM };

typedef kvbm__event event;

struct kvbm_events {
  kvbm_allocator alloc;
  unsigned users;
  int policy;
  uint64_t min, max;
  kvbm_emit_policy_fn custom;
  void *custom_ud;
  kvbm_subscription **subs;
  size_t nsubs, subs_cap;
};

int kvbm_events_new(const kvbm_allocator *alloc, kvbm_events **out) {
  kvbm_allocator a = alloc ? *alloc : (kvbm_allocator){NULL, NULL};
  kvbm_events *ev = kvbm__realloc(&a, NULL, 0, sizeof *ev);
  if (!ev) return KVBM_ENOMEM;
  memset(ev, 0, sizeof *ev);
  ev->alloc = a;
  ev->users = 1;
  *out = ev;
  return 0;
}

void kvbm_events_retain(kvbm_events *ev) { ev->users++; }

void kvbm_events_release(kvbm_events *ev) {
  if (!ev || --ev->users > 0) return;
  kvbm_allocator a = ev->alloc;
  /* NOLINTNEXTLINE(bugprone-sizeof-expression): subs is an array of pointers */
  kvbm__free(&a, ev->subs, ev->subs_cap * sizeof *ev->subs);
  kvbm__free(&a, ev, sizeof *ev);
}

void kvbm_events_policy_all(kvbm_events *ev) { ev->policy = POLICY_ALL; }

void kvbm_events_policy_power_of_two(kvbm_events *ev, uint64_t min, uint64_t max) {
  ev->policy = POLICY_POWER_OF_TWO;
  ev->min = min;
  ev->max = max;
}

void kvbm_events_policy_custom(kvbm_events *ev, kvbm_emit_policy_fn fn, void *ud) {
  ev->policy = POLICY_CUSTOM;
  ev->custom = fn;
  ev->custom_ud = ud;
}

int kvbm_events_should_emit(const kvbm_events *ev, kvbm_hash h) {
  uint64_t pos = kvbm_hash_position(h);
  switch (ev->policy) {
    case POLICY_POWER_OF_TWO: /* position 0 is not a power of two */
      return pos >= ev->min && pos <= ev->max && pos != 0 && (pos & (pos - 1)) == 0;
    case POLICY_CUSTOM: return ev->custom(ev->custom_ud, h) > 0;
    default: return 1;
  }
}

/* i + 1 around the ring, without a division on the hot path */
static size_t ring_next(const kvbm_subscription *s, size_t i) { return i + 1 == s->cap ? 0 : i + 1; }

static void broadcast(kvbm_events *ev, kvbm_event_kind kind, kvbm_hash h) {
  for (size_t i = 0; i < ev->nsubs; i++) {
    kvbm_subscription *s = ev->subs[i];
    if (s->len == s->cap) { /* full: the oldest goes */
      s->head = ring_next(s, s->head);
      s->len--;
      s->lost++;
    }
    size_t at = s->head + s->len++;
    if (at >= s->cap) at -= s->cap;
    s->ring[at].h = h;
    s->ring[at].kind = (uint8_t)kind;
  }
}

int kvbm__events_created(kvbm_events *ev, kvbm_hash h) {
  if (!kvbm_events_should_emit(ev, h)) return 0;
  broadcast(ev, KVBM_EVENT_CREATE, h);
  return 1;
}

void kvbm__events_removed(kvbm_events *ev, kvbm_hash h) { broadcast(ev, KVBM_EVENT_REMOVE, h); }

int kvbm_events_subscribe(kvbm_events *ev, size_t capacity, kvbm_subscription **out) {
  if (capacity == 0) capacity = 1024;
  /* NOLINTNEXTLINE(bugprone-sizeof-expression): subs is an array of pointers */
  int rc = kvbm__grow(&ev->alloc, (void **)&ev->subs, &ev->subs_cap, ev->nsubs + 1, sizeof *ev->subs);
  if (rc) return rc;
  kvbm_subscription *s = kvbm__realloc(&ev->alloc, NULL, 0, sizeof *s);
  event *ring = capacity <= SIZE_MAX / sizeof *ring
                    ? kvbm__realloc(&ev->alloc, NULL, 0, capacity * sizeof *ring) : NULL;
  if (!s || !ring) {
    kvbm__free(&ev->alloc, s, sizeof *s);
    kvbm__free(&ev->alloc, ring, capacity * sizeof *ring);
    return KVBM_ENOMEM;
  }
  memset(s, 0, sizeof *s);
  s->ev = ev;
  s->ring = ring;
  s->cap = capacity;
  ev->subs[ev->nsubs++] = s;
  kvbm_events_retain(ev);
  *out = s;
  return 0;
}

int kvbm_subscription_poll(kvbm_subscription *s, kvbm_event_kind *kind, kvbm_hash *h) {
  if (s->len == 0) return 0;
  event *e = &s->ring[s->head];
  *kind = (kvbm_event_kind)e->kind;
  *h = e->h;
  s->head = ring_next(s, s->head);
  s->len--;
  return 1;
}

size_t kvbm_subscription_pending(const kvbm_subscription *s) { return s->len; }
uint64_t kvbm_subscription_lost(const kvbm_subscription *s) { return s->lost; }

void kvbm_subscription_free(kvbm_subscription *s) {
  if (!s) return;
  kvbm_events *ev = s->ev;
  for (size_t i = 0; i < ev->nsubs; i++) {
    if (ev->subs[i] != s) continue;
    ev->subs[i] = ev->subs[--ev->nsubs];
    break;
  }
  kvbm__free(&ev->alloc, s->ring, s->cap * sizeof *s->ring);
  kvbm__free(&ev->alloc, s, sizeof *s);
  kvbm_events_release(ev);
}
