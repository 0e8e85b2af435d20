/* loop_ev.c - the only file that includes <ev.h>: drives a pump function
 * (the publisher's) from a libev loop the host owns.
 *
 * A prepare watcher pumps before the loop blocks, so events raised outside
 * the loop (during register, allocate, release) are picked up at the next
 * iteration; it is unref'd, so it never keeps ev_run alive by itself. A
 * timer is armed for the open batch's deadline only: pending work keeps the
 * loop running until it is published, and an idle publisher lets ev_run
 * return.
 *
 * The pump may stop its own watch (a sink that closes or frees the
 * publisher while it publishes): kvbm__watch_stop then only stops the
 * watchers, and the callback frees the watch once the pump has returned. */
#include <ev.h>

#include "events.h"

struct kvbm__watch {
  ev_prepare prepare;
  ev_timer timer;
  struct ev_loop *loop;
  kvbm__pump_fn pump;
  void *ud;
  kvbm_allocator alloc; /* a copy: the pump may free its owner */
  int pumping; /* calls of w->pump under way: stopping must not free w */
  int stopped; /* stopped while pumping: freed when the last pump returns */
};

static void watch_free(kvbm__watch *w) {
  kvbm_allocator a = w->alloc;
  kvbm__free(&a, w, sizeof *w);
}

static void pump(kvbm__watch *w) {
  double now = ev_now(w->loop);
  w->pumping++;
  double deadline = w->pump(w->ud, now);
  w->pumping--;
  if (w->stopped) {
    if (!w->pumping) watch_free(w);
    return;
  }
  if (deadline < 0) {
    ev_timer_stop(w->loop, &w->timer);
    return;
  }
  double in = deadline - now;
  if (ev_is_active(&w->timer) && ev_timer_remaining(w->loop, &w->timer) <= in + 1e-9) return;
  ev_timer_stop(w->loop, &w->timer);
  ev_timer_set(&w->timer, in > 0 ? in : 0, 0.);
  ev_timer_start(w->loop, &w->timer);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *p, int revents) {
  (void)loop, (void)revents;
  pump((kvbm__watch *)((char *)p - offsetof(kvbm__watch, prepare)));
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)loop, (void)revents;
  pump((kvbm__watch *)((char *)t - offsetof(kvbm__watch, timer)));
}

kvbm__watch *kvbm__watch_start(const kvbm_allocator *a, struct ev_loop *loop, kvbm__pump_fn fn, void *ud) {
  kvbm__watch *w = kvbm__realloc(a, NULL, 0, sizeof *w);
  if (!w) return NULL;
  w->loop = loop;
  w->pump = fn;
  w->ud = ud;
  w->alloc = a ? *a : (kvbm_allocator){NULL, NULL};
  w->pumping = w->stopped = 0;
  ev_prepare_init(&w->prepare, on_prepare);
  ev_prepare_start(loop, &w->prepare);
  ev_unref(loop); /* the prepare watcher alone must not keep the loop alive */
  ev_timer_init(&w->timer, on_timer, 0., 0.);
  return w;
}

void kvbm__watch_stop(kvbm__watch *w) {
  if (!w || w->stopped) return;
  ev_ref(w->loop); /* undo the unref before stopping, as ev.pod asks */
  ev_prepare_stop(w->loop, &w->prepare);
  ev_timer_stop(w->loop, &w->timer);
  if (w->pumping)
    w->stopped = 1; /* pump() frees it on the way out */
  else
    watch_free(w);
}

double kvbm__loop_now(struct ev_loop *loop) { return ev_now(loop); }
