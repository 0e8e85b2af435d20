/* publisher.c - events -> batches -> wire messages -> a sink. The batching
 * is kvbm__batcher's; the loop is the host's, driven through loop_ev.c. */
#include <stdio.h>

#include "events.h"

struct kvbm_publisher {
  kvbm_allocator alloc;
  kvbm_subscription *sub;
  kvbm_sink sink;
  kvbm_instance_id id;
  char subject[128];
  kvbm__batcher batcher;
  kvbm__watch *watch;
  struct ev_loop *loop;
  unsigned char *buf;
  size_t buf_size;
  kvbm_publisher_stats stats;
  int closed, error;
};

static int send_batch(kvbm_publisher *p, kvbm_event_kind kind, const kvbm_hash *hs, size_t n) {
  kvbm_batch b = {kind, hs, n, p->id};
  int len = kvbm_wire_encode(&b, p->buf, p->buf_size);
  int rc = len < 0 ? len
           : p->sink.publish_batch
               ? p->sink.publish_batch(p->sink.ud, p->subject, &b, p->buf, (size_t)len)
               : p->sink.publish(p->sink.ud, p->subject, p->buf, (size_t)len);
  if (rc < 0) {
    p->stats.errors++;
    if (!p->error) p->error = rc;
    return rc;
  }
  p->stats.batches++;
  p->stats.events += n;
  return 0;
}

static void emit(void *ud, kvbm_event_kind kind, const kvbm_hash *hs, size_t n) {
  (void)send_batch(ud, kind, hs, n); /* a failing sink is counted; publishing goes on */
}

/* Moves what the subscription holds into the batcher; returns the deadline. */
static double pump(void *ud, double now) {
  kvbm_publisher *p = ud;
  kvbm__batcher_drain(&p->batcher, now, p->sub);
  kvbm__batcher_expire(&p->batcher, now);
  return kvbm__batcher_deadline(&p->batcher);
}

int kvbm_publisher_new(const kvbm_publisher_config *cfg, kvbm_publisher **out) {
  if (!cfg->events || !cfg->loop || !(cfg->sink.publish || cfg->sink.publish_batch) ||
      cfg->window < 0 || (cfg->subject && strlen(cfg->subject) >= 128))
    return KVBM_EINVAL;
  kvbm_allocator a = cfg->alloc ? *cfg->alloc : (kvbm_allocator){NULL, NULL};
  kvbm_publisher *p = kvbm__realloc(&a, NULL, 0, sizeof *p);
  if (!p) return KVBM_ENOMEM;
  memset(p, 0, sizeof *p);
  p->alloc = a;
  p->sink = cfg->sink;
  p->id = cfg->instance_id;
  p->loop = cfg->loop;
  snprintf(p->subject, sizeof p->subject, "%s", cfg->subject ? cfg->subject : "kvbm.events");
  size_t max = cfg->max_batch ? cfg->max_batch : 1024;
  p->buf_size = kvbm_wire_encoded_size(max);
  p->buf = kvbm__realloc(&p->alloc, NULL, 0, p->buf_size);
  int rc = p->buf ? 0 : KVBM_ENOMEM;
  if (rc == 0)
    rc = kvbm__batcher_init(&p->batcher, &p->alloc, max, cfg->window > 0 ? cfg->window : 0.010, emit, p);
  if (rc == 0) rc = kvbm_events_subscribe(cfg->events, cfg->capacity ? cfg->capacity : 65536, &p->sub);
  if (rc == 0 && !(p->watch = kvbm__watch_start(&p->alloc, p->loop, pump, p))) rc = KVBM_ENOMEM;
  if (rc) {
    p->closed = 1;
    kvbm_publisher_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

int kvbm_publisher_flush(kvbm_publisher *p) {
  if (p->closed) return KVBM_ECLOSED;
  int before = p->error;
  p->error = 0;
  pump(p, kvbm__loop_now(p->loop));
  kvbm__batcher_flush(&p->batcher);
  int rc = p->error;
  p->error = before ? before : rc;
  return rc;
}

int kvbm_publisher_close(kvbm_publisher *p) {
  if (p->closed) return 0;
  p->error = 0;
  pump(p, kvbm__loop_now(p->loop));
  kvbm__batcher_flush(&p->batcher);
  p->closed = 1; /* from here on nothing new is batched */
  (void)send_batch(p, KVBM_EVENT_SHUTDOWN, NULL, 0);
  if (p->sink.flush && p->sink.flush(p->sink.ud) < 0) {
    p->stats.errors++;
    if (!p->error) p->error = KVBM_ESINK;
  }
  kvbm__watch_stop(p->watch);
  p->watch = NULL;
  return p->error;
}

void kvbm_publisher_free(kvbm_publisher *p) {
  if (!p) return;
  if (!p->closed) (void)kvbm_publisher_close(p);
  kvbm__watch_stop(p->watch);
  kvbm_subscription_free(p->sub);
  kvbm__batcher_free(&p->batcher);
  kvbm_allocator a = p->alloc;
  kvbm__free(&a, p->buf, p->buf_size);
  kvbm__free(&a, p, sizeof *p);
}

void kvbm_publisher_get_stats(const kvbm_publisher *p, kvbm_publisher_stats *out) {
  *out = p->stats;
  out->lost = p->sub ? kvbm_subscription_lost(p->sub) : 0;
  out->pending = p->batcher.n + (p->sub ? kvbm_subscription_pending(p->sub) : 0);
}
