/* test_events.c - the batcher with time passed by hand (scenarios 8-12 of
 * the events catalogue), emission policies (4-7), the events manager and
 * subscribers (3, 13-17, 21-24 at the C level). */
#include <stdlib.h>

#include "events.h"
#include "kvbm.h"
#include "tap.h"

/* ----------------------------------------------------------- helpers */

/* A setup step that must succeed; a failure shows up as a failing test. */
#define MUST(call)                            \
  do {                                        \
    if ((call) < 0) ok(0, "setup: %s", #call); \
  } while (0)

static kvbm_hash at(uint64_t pos, uint64_t cur) {
  kvbm_hash h;
  (void)kvbm_hash_new(cur, pos > 0, cur ^ 0x55, pos, &h);
  return h;
}

typedef struct {
  int nb;
  kvbm_event_kind kind[32];
  size_t n[32];
  uint64_t pos[32][16];
} sink;

static void record(void *ud, kvbm_event_kind kind, const kvbm_hash *hs, size_t n) {
  sink *s = ud;
  if (s->nb == 32) return;
  s->kind[s->nb] = kind;
  s->n[s->nb] = n;
  for (size_t i = 0; i < n && i < 16; i++) s->pos[s->nb][i] = kvbm_hash_position(hs[i]);
  s->nb++;
}

static void test_batcher(void) {
  kvbm__batcher b;
  sink s = {0};
  /* 8: creates at 10, 5, 15 -> one batch sorted ascending, at the window */
  ok(kvbm__batcher_init(&b, NULL, 1024, 0.050, record, &s) == 0, "batcher init");
  kvbm__batcher_push(&b, 0.0, KVBM_EVENT_CREATE, at(10, 1));
  kvbm__batcher_push(&b, 0.001, KVBM_EVENT_CREATE, at(5, 2));
  kvbm__batcher_push(&b, 0.002, KVBM_EVENT_CREATE, at(15, 3));
  kvbm__batcher_expire(&b, 0.049);
  ok(s.nb == 0 && kvbm__batcher_deadline(&b) == 0.050, "#8 nothing before the window ends");
  kvbm__batcher_expire(&b, 0.050);
  ok(s.nb == 1 && s.kind[0] == KVBM_EVENT_CREATE && s.n[0] == 3 && s.pos[0][0] == 5 &&
         s.pos[0][1] == 10 && s.pos[0][2] == 15,
     "#8 creates flushed at the window, ascending by position");
  ok(kvbm__batcher_deadline(&b) < 0, "no deadline while empty");
  /* 9: removes descending */
  kvbm__batcher_push(&b, 1.0, KVBM_EVENT_REMOVE, at(10, 1));
  kvbm__batcher_push(&b, 1.0, KVBM_EVENT_REMOVE, at(5, 2));
  kvbm__batcher_push(&b, 1.0, KVBM_EVENT_REMOVE, at(15, 3));
  kvbm__batcher_flush(&b);
  ok(s.nb == 2 && s.kind[1] == KVBM_EVENT_REMOVE && s.pos[1][0] == 15 && s.pos[1][1] == 10 &&
         s.pos[1][2] == 5,
     "#9 removes descending by position");
  kvbm__batcher_free(&b);

  /* 10: kind switches flush: C10 C11 R5 C12 -> C[2], R[1], C[1] */
  memset(&s, 0, sizeof s);
  (void)kvbm__batcher_init(&b, NULL, 1024, 60, record, &s);
  kvbm__batcher_push(&b, 0, KVBM_EVENT_CREATE, at(10, 1));
  kvbm__batcher_push(&b, 0, KVBM_EVENT_CREATE, at(11, 2));
  kvbm__batcher_push(&b, 0, KVBM_EVENT_REMOVE, at(5, 3));
  kvbm__batcher_push(&b, 0, KVBM_EVENT_CREATE, at(12, 4));
  kvbm__batcher_flush(&b);
  ok(s.nb == 3 && s.kind[0] == KVBM_EVENT_CREATE && s.n[0] == 2 && s.kind[1] == KVBM_EVENT_REMOVE &&
         s.n[1] == 1 && s.kind[2] == KVBM_EVENT_CREATE && s.n[2] == 1,
     "#10 a create/remove switch flushes: C[2] R[1] C[1]");
  kvbm__batcher_free(&b);

  /* 11: max 3: C1..C5 -> C[3] then C[2] at the end */
  memset(&s, 0, sizeof s);
  (void)kvbm__batcher_init(&b, NULL, 3, 60, record, &s);
  for (uint64_t p = 1; p <= 5; p++) kvbm__batcher_push(&b, 0, KVBM_EVENT_CREATE, at(p, p));
  ok(s.nb == 1 && s.n[0] == 3, "#11 the batch is emitted when it reaches max");
  kvbm__batcher_flush(&b);
  ok(s.nb == 2 && s.n[1] == 2, "#11 the rest at close");
  kvbm__batcher_free(&b);

  /* 12: one event, the window passes with the input still open */
  memset(&s, 0, sizeof s);
  (void)kvbm__batcher_init(&b, NULL, 1024, 0.050, record, &s);
  kvbm__batcher_push(&b, 5.0, KVBM_EVENT_CREATE, at(10, 1));
  kvbm__batcher_expire(&b, 5.1);
  ok(s.nb == 1 && s.n[0] == 1, "#12 a lone event is flushed by the timer");
  /* equal positions keep arrival order (stable) */
  kvbm__batcher_push(&b, 6, KVBM_EVENT_CREATE, at(3, 100));
  kvbm__batcher_push(&b, 6, KVBM_EVENT_CREATE, at(3, 200));
  kvbm__batcher_push(&b, 6, KVBM_EVENT_CREATE, at(1, 300));
  kvbm__batcher_flush(&b);
  ok(s.nb == 2 && s.pos[1][0] == 1 && s.pos[1][1] == 3 && s.pos[1][2] == 3, "sorted by position");
  kvbm__batcher_free(&b);

  /* a large batch sorts stably */
  memset(&s, 0, sizeof s);
  (void)kvbm__batcher_init(&b, NULL, 1024, 1, record, &s);
  for (uint64_t i = 0; i < 1000; i++) kvbm__batcher_push(&b, 0, KVBM_EVENT_REMOVE, at((i * 37) % 101, i));
  kvbm__batcher_flush(&b);
  ok(s.nb == 1 && s.n[0] == 1000 && s.pos[0][0] == 100 && s.pos[0][15] >= 99, "1000 removes sorted descending");
  kvbm__batcher_free(&b);
}

static void test_policies(void) {
  kvbm_events *ev;
  ok(kvbm_events_new(NULL, &ev) == 0, "events new");
  ok(kvbm_events_should_emit(ev, at(17, 1)), "#17 all events by default");
  kvbm_events_policy_power_of_two(ev, 16, 65536);
  int all = 1, none = 1;
  for (uint64_t p = 16; p <= 65536; p *= 2) all &= kvbm_events_should_emit(ev, at(p, 1));
  ok(all, "#4 positions 16..65536 (13 powers of two) emit");
  const uint64_t no[] = {15, 17, 31, 33, 63, 65, 100, 1000, 10000, 1, 2, 4, 8, 0, 131072};
  for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) none &= !kvbm_events_should_emit(ev, at(no[i], 1));
  ok(none, "#5 #6 other positions, small powers and 0 do not");
  kvbm_events_policy_power_of_two(ev, 32, 128);
  ok(kvbm_events_should_emit(ev, at(32, 1)) && kvbm_events_should_emit(ev, at(64, 1)) &&
         kvbm_events_should_emit(ev, at(128, 1)) && !kvbm_events_should_emit(ev, at(16, 1)) &&
         !kvbm_events_should_emit(ev, at(256, 1)),
     "#7 with_range(32, 128) is inclusive");
  kvbm_events_release(ev);
}

/* A manager on a registry with events: register, drop, evict. */
static void test_manager_events(void) {
  kvbm_events *ev;
  kvbm_registry *reg;
  kvbm_manager *m;
  kvbm_subscription *a, *b;
  MUST(kvbm_events_new(NULL, &ev));
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  kvbm_registry_set_events(reg, ev);
  kvbm_manager_config cfg = {.block_count = 4, .block_size = 4, .registry = reg, .backend = KVBM_BACKEND_LRU};
  ok(kvbm_manager_new(&cfg, &m) == 0, "manager on a registry with events");
  ok(kvbm_events_subscribe(ev, 4, &a) == 0 && kvbm_events_subscribe(ev, 64, &b) == 0, "two subscribers");

  kvbm_block mb[4], cb[4], ib[4];
  kvbm_hash hs[4];
  for (int i = 0; i < 4; i++) hs[i] = at((uint64_t)i, (uint64_t)(1000 + i));
  MUST(kvbm_allocate(m, 4, mb, NULL));
  for (int i = 0; i < 4; i++) MUST(kvbm_stage(m, mb[i], hs[i], 4, &cb[i]));
  MUST(kvbm_register_all(m, cb, 4, ib));
  kvbm_event_kind k;
  kvbm_hash h;
  int creates = 0;
  while (kvbm_subscription_poll(b, &k, &h)) creates += k == KVBM_EVENT_CREATE;
  ok(creates == 4, "#21 #24 one create per new registration, each subscriber sees it");
  /* a re-registration of a live hash emits nothing */
  kvbm_block more, staged, dup;
  (void)kvbm_release(m, ib[3]);
  MUST(kvbm_allocate(m, 1, &more, NULL));
  ok(kvbm_subscription_pending(b) == 1, "evicting the inactive block removes its registration");
  (void)kvbm_subscription_poll(b, &k, &h);
  ok(k == KVBM_EVENT_REMOVE && kvbm_hash_cmp(h, hs[3]) == 0, "#15 remove(h) when the last reference goes");
  MUST(kvbm_stage(m, more, hs[0], 4, &staged));
  MUST(kvbm_register(m, staged, &dup));
  ok(kvbm_subscription_pending(b) == 0, "registering a live hash again emits nothing");
  (void)kvbm_release(m, dup);
  ok(kvbm_subscription_pending(b) == 0, "a duplicate going away does not end the registration");
  for (int i = 0; i < 3; i++) (void)kvbm_release(m, ib[i]);
  ok(kvbm_subscription_pending(b) == 0, "released blocks stay registered in the inactive pool");
  ok(kvbm_reset_inactive(m) == 0 && kvbm_subscription_pending(b) == 3, "#21 dropping everything removes all");

  /* the small subscriber lost its oldest events */
  ok(kvbm_subscription_pending(a) == 4 && kvbm_subscription_lost(a) == 4, "a full ring drops the oldest and counts them");
  kvbm_subscription_free(a);

  /* 14: a policy that says no means no create and never a remove */
  kvbm_events_policy_power_of_two(ev, 16, 65536);
  while (kvbm_subscription_poll(b, &k, &h)) {}
  kvbm_hash p17 = at(17, 5), p32 = at(32, 6);
  MUST(kvbm_allocate(m, 2, mb, NULL));
  MUST(kvbm_stage(m, mb[0], p17, 4, &cb[0]));
  MUST(kvbm_stage(m, mb[1], p32, 4, &cb[1]));
  MUST(kvbm_register_all(m, cb, 2, ib));
  ok(kvbm_subscription_poll(b, &k, &h) && k == KVBM_EVENT_CREATE && kvbm_hash_position(h) == 32 &&
         kvbm_subscription_pending(b) == 0,
     "#13 #14 power_of_two: 32 emits, 17 does not");
  kvbm_events_policy_all(ev); /* a policy change does not invent removes */
  (void)kvbm_release(m, ib[0]);
  (void)kvbm_release(m, ib[1]);
  ok(kvbm_reset_inactive(m) == 0 && kvbm_subscription_poll(b, &k, &h) && k == KVBM_EVENT_REMOVE &&
         kvbm_hash_position(h) == 32 && kvbm_subscription_pending(b) == 0,
     "#15 only the emitted registration gets its remove");

  kvbm_subscription_free(b);
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
  kvbm_events_release(ev);
}

int main(void) {
  test_batcher();
  test_policies();
  test_manager_events();
  return tap_done();
}
