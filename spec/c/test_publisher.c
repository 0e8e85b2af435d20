/* test_publisher.c - the publisher on a real libev loop: a sink that
 * re-enters its own publisher (flush, close, free) from the loop's
 * callbacks and from flush, the configuration limits, and allocation
 * failure at every allocation kvbm_publisher_new makes. Run under ASan in
 * the sanitizer build: the re-entry cases were use-after-free. */
#include <ev.h>
#include <math.h>
#include <stdlib.h>

#include "events.h"
#include "kvbm.h"
#include "tap.h"

static kvbm_hash at(uint64_t pos) {
  kvbm_hash h;
  (void)kvbm_hash_new(pos + 100, pos > 0, pos + 99, pos, &h);
  return h;
}

/* --------------------------------------------------- a re-entering sink */

typedef enum { NOTHING, CLOSE, FREE, FLUSH } reentry;

typedef struct {
  kvbm_publisher *p;
  reentry what;
  int calls, reentered, inner_rc;
  kvbm_event_kind kinds[16];
  uint64_t first_pos[16];
} sink_state;

static int on_batch(void *ud, const char *subject, const kvbm_batch *b, const unsigned char *data,
                    size_t len) {
  (void)subject, (void)data, (void)len;
  sink_state *s = ud;
  if (s->calls < 16) {
    s->kinds[s->calls] = b->kind;
    s->first_pos[s->calls] = b->n ? kvbm_hash_position(b->hashes[0]) : 0;
  }
  s->calls++;
  if (s->calls == 1 && s->what != NOTHING) {
    s->reentered = 1;
    if (s->what == CLOSE) s->inner_rc = kvbm_publisher_close(s->p);
    if (s->what == FLUSH) s->inner_rc = kvbm_publisher_flush(s->p);
    if (s->what == FREE) kvbm_publisher_free(s->p), s->p = NULL;
  }
  return 0;
}

static kvbm_publisher *publisher(kvbm_events *ev, struct ev_loop *loop, sink_state *s) {
  kvbm_publisher_config cfg = {0};
  cfg.events = ev;
  cfg.loop = loop;
  cfg.sink.publish_batch = on_batch;
  cfg.sink.ud = s;
  cfg.window = 0.001;
  cfg.instance_id.lo = 7;
  kvbm_publisher *p = NULL;
  if (kvbm_publisher_new(&cfg, &p) < 0) ok(0, "setup: kvbm_publisher_new");
  s->p = p;
  return p;
}

/* The loop's timer publishes the batch; the sink closes or frees the
 * publisher under the callback (loop_ev.c read the freed watch). */
static void test_reentry_from_loop(reentry what, const char *name) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kvbm_events *ev = NULL;
  if (kvbm_events_new(NULL, &ev) < 0) ok(0, "setup: events");
  sink_state s = {0};
  s.what = what;
  publisher(ev, loop, &s);
  (void)kvbm__events_created(ev, at(1));
  (void)kvbm__events_created(ev, at(2));
  ev_run(loop, 0); /* returns once nothing is pending */
  ok(s.reentered && s.calls == 2 && s.kinds[0] == KVBM_EVENT_CREATE &&
         s.kinds[1] == KVBM_EVENT_SHUTDOWN && s.inner_rc == 0,
     "%s from the sink inside loop:run: the batch, then Shutdown (%d calls)", name, s.calls);
  (void)kvbm__events_created(ev, at(3));
  ev_run(loop, EVRUN_NOWAIT);
  ok(s.calls == 2, "%s: nothing is published after Shutdown", name);
  if (s.p) {
    kvbm_publisher_stats st;
    kvbm_publisher_get_stats(s.p, &st);
    ok(st.batches == 2 && kvbm_publisher_flush(s.p) == KVBM_ECLOSED, "%s: closed, 2 batches counted", name);
    kvbm_publisher_free(s.p);
  }
  kvbm_events_release(ev);
  ev_loop_destroy(loop);
}

/* The sink frees its publisher during kvbm_publisher_flush. */
static void test_free_from_flush(void) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kvbm_events *ev = NULL;
  if (kvbm_events_new(NULL, &ev) < 0) ok(0, "setup: events");
  sink_state s = {0};
  s.what = FREE;
  kvbm_publisher *p = publisher(ev, loop, &s);
  (void)kvbm__events_created(ev, at(1));
  ok(kvbm_publisher_flush(p) == 0 && s.p == NULL && s.calls == 2,
     "free from the sink during flush: flush returns, Shutdown went out, freed after");
  ev_run(loop, 0);
  kvbm_events_release(ev);
  ev_loop_destroy(loop);
}

/* A flush from the sink during a create/remove switch takes the remove
 * that caused the switch first: order is kept. */
static void test_flush_keeps_order(void) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kvbm_events *ev = NULL;
  if (kvbm_events_new(NULL, &ev) < 0) ok(0, "setup: events");
  sink_state s = {0};
  s.what = FLUSH;
  kvbm_publisher *p = publisher(ev, loop, &s);
  (void)kvbm__events_created(ev, at(1));
  kvbm__events_removed(ev, at(1));
  (void)kvbm__events_created(ev, at(2));
  ev_run(loop, 0);
  ok(s.calls == 3 && s.kinds[0] == KVBM_EVENT_CREATE && s.first_pos[0] == 1 &&
         s.kinds[1] == KVBM_EVENT_REMOVE && s.first_pos[1] == 1 && s.kinds[2] == KVBM_EVENT_CREATE &&
         s.first_pos[2] == 2,
     "flush from the sink at a kind switch: create 1, remove 1, create 2, in order");
  kvbm_publisher_free(p);
  ok(s.calls == 4 && s.kinds[3] == KVBM_EVENT_SHUTDOWN, "then Shutdown at free");
  kvbm_events_release(ev);
  ev_loop_destroy(loop);
}

/* --------------------------------------------------- configuration */

static int discard(void *ud, const char *subject, const unsigned char *data, size_t len) {
  (void)ud, (void)subject, (void)data, (void)len;
  return 0;
}

static void test_config(void) {
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kvbm_events *ev = NULL;
  if (kvbm_events_new(NULL, &ev) < 0) ok(0, "setup: events");
  kvbm_publisher_config good = {0};
  good.events = ev;
  good.loop = loop;
  good.sink.publish = discard;
  ok(kvbm_publisher_config_error(&good) == NULL, "zeros mean the defaults");

  static const double bad_windows[] = {INFINITY, 1e300, -1, -INFINITY, 3600.5};
  for (size_t i = 0; i < sizeof bad_windows / sizeof *bad_windows; i++) {
    kvbm_publisher_config c = good;
    c.window = bad_windows[i];
    kvbm_publisher *p = (kvbm_publisher *)&c; /* must be reset to NULL */
    const char *why = kvbm_publisher_config_error(&c);
    ok(why && strncmp(why, "window ", 7) == 0 && kvbm_publisher_new(&c, &p) == KVBM_EINVAL && !p,
       "window %g refused: %s", bad_windows[i], why ? why : "(accepted)");
  }
  {
    kvbm_publisher_config c = good;
    c.window = NAN;
    const char *why = kvbm_publisher_config_error(&c);
    ok(why && strncmp(why, "window ", 7) == 0, "window NaN refused");
    c.window = KVBM_PUBLISHER_MAX_WINDOW;
    ok(kvbm_publisher_config_error(&c) == NULL, "window 3600 accepted");
  }
  struct {
    size_t max_batch, capacity;
    const char *subject, *option;
  } bad[] = {
      {KVBM_PUBLISHER_MAX_BATCH + 1, 0, NULL, "max_batch "},
      {SIZE_MAX, 0, NULL, "max_batch "},
      {0, KVBM_PUBLISHER_MAX_CAPACITY + 1, NULL, "capacity "},
      {0, 0, "", "subject "},
      {0, 0, "kvbm events", "subject "},
      {0, 0, "kvbm.*", "subject "},
      {0, 0, "kvbm.>", "subject "},
      {0, 0, "kvbm..events", "subject "},
      {0, 0, ".kvbm", "subject "},
      {0, 0, "kvbm.", "subject "},
      {0, 0, "kvbm\tevents", "subject "},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kvbm_publisher_config c = good;
    c.max_batch = bad[i].max_batch, c.capacity = bad[i].capacity, c.subject = bad[i].subject;
    const char *why = kvbm_publisher_config_error(&c);
    ok(why && strncmp(why, bad[i].option, strlen(bad[i].option)) == 0,
       "bad %s(case %zu) refused: %s", bad[i].option, i, why ? why : "(accepted)");
  }
  char longest[KVBM_PUBLISHER_SUBJECT_MAX];
  memset(longest, 'a', sizeof longest - 1);
  longest[sizeof longest - 1] = '\0';
  kvbm_publisher_config c = good;
  c.subject = longest;
  ok(kvbm_publisher_config_error(&c) == NULL, "a 127-byte subject is accepted");
  c.subject = "kvbm.events.a-b_c";
  c.max_batch = KVBM_PUBLISHER_MAX_BATCH, c.capacity = KVBM_PUBLISHER_MAX_CAPACITY;
  ok(kvbm_publisher_config_error(&c) == NULL, "the largest max_batch and capacity are accepted");
  c = good;
  c.events = NULL;
  ok(kvbm_publisher_config_error(&c) && !strncmp(kvbm_publisher_config_error(&c), "events ", 7), "events required");
  c = good;
  c.loop = NULL;
  ok(kvbm_publisher_config_error(&c) && !strncmp(kvbm_publisher_config_error(&c), "loop ", 5), "loop required");
  c = good;
  c.sink.publish = NULL;
  ok(kvbm_publisher_config_error(&c) && !strncmp(kvbm_publisher_config_error(&c), "sink ", 5), "sink required");
  ok(kvbm_publisher_config_error(NULL) != NULL, "no configuration");
  kvbm_events_release(ev);
  ev_loop_destroy(loop);
}

/* ------------------------------------------------ allocation failure */

#include "budget_alloc.h"

/* Fails the k-th allocation of kvbm_publisher_new (and the subscription's)
 * for every k until it succeeds: each a clean KVBM_ENOMEM, nothing left. */
static void test_alloc_failure(void) {
  kvbm_allocator al = {budget_alloc, NULL};
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  kvbm_events *ev = NULL;
  if (kvbm_events_new(&al, &ev) < 0) ok(0, "setup: events");
  kvbm_subscription *warm = NULL; /* grows ev's list of subscribers, which it keeps */
  if (kvbm_events_subscribe(ev, 1, &warm) < 0) ok(0, "setup: subscribe");
  kvbm_subscription_free(warm);
  long base = live_allocs;
  int clean = 1, k;
  sink_state s = {0};
  kvbm_publisher_config cfg = {0};
  cfg.events = ev, cfg.loop = loop, cfg.alloc = &al;
  cfg.sink.publish_batch = on_batch, cfg.sink.ud = &s;
  kvbm_publisher *p = NULL;
  for (k = 0; k < 100; k++) {
    budget = k;
    int rc = kvbm_publisher_new(&cfg, &p);
    budget = -1;
    if (rc == 0) break;
    if (rc != KVBM_ENOMEM || p != NULL || live_allocs != base) {
      clean = 0;
      ok(0, "allocation %d failing: rc %d, %ld blocks left", k + 1, rc, live_allocs - base);
    }
  }
  ok(clean && k > 3 && k < 100, "every one of the %d allocations failing: KVBM_ENOMEM, nothing leaked", k);
  ok(budget_failures >= k, "each attempt hit a failure (%ld in all)", budget_failures);
  (void)kvbm__events_created(ev, at(1));
  ev_run(loop, 0);
  kvbm_publisher_free(p);
  ok(s.calls == 2 && live_allocs == base, "the publisher that was built works and frees everything");
  kvbm_events_release(ev);
  ok(live_allocs == 0, "nothing left at all");
  ev_loop_destroy(loop);
}

int main(void) {
  test_reentry_from_loop(CLOSE, "close");
  test_reentry_from_loop(FREE, "free");
  test_free_from_flush();
  test_flush_keeps_order();
  test_config();
  test_alloc_failure();
  return tap_done();
}
