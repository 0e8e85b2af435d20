/* publisher.c - events -> batches -> wire messages -> a sink. The batching
 * is kvbm__batcher's; the loop is the host's, driven through loop_ev.c. */
#include <stdio.h>
#include <string.h>

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
  int closing, closed, error;
  int depth;        /* the publisher's own calls under way (a sink may re-enter) */
  int free_pending; /* freed when depth returns to 0 */
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

/* Re-entry: a sink may call flush, close or free on its own publisher (a
 * Lua sink may even drop its last reference and collect it). depth counts
 * the publisher's own calls under way; free inside one only closes and
 * marks the publisher, and the outermost call frees it on its way out.
 * Nested calls see a consistent batcher (it empties before it emits) and a
 * nested close stops the watch, which loop_ev.c frees after its callback. */
static void destroy(kvbm_publisher *p) {
  kvbm__watch_stop(p->watch);
  kvbm_subscription_free(p->sub);
  kvbm__batcher_free(&p->batcher);
  kvbm_allocator a = p->alloc;
  kvbm__free(&a, p->buf, p->buf_size);
  kvbm__free(&a, p, sizeof *p);
}

static void enter(kvbm_publisher *p) { p->depth++; }

/* Returns 1 when p is gone. */
static int leave(kvbm_publisher *p) {
  if (--p->depth > 0 || !p->free_pending) return 0;
  destroy(p);
  return 1;
}

static void emit(void *ud, kvbm_event_kind kind, const kvbm_hash *hs, size_t n) {
  kvbm_publisher *p = ud;
  if (p->closed) return;                /* drained after a close from the sink */
  (void)send_batch(p, kind, hs, n);     /* a failing sink is counted; publishing goes on */
}

/* Moves what the subscription holds into the batcher. */
static void collect(kvbm_publisher *p, double now) {
  kvbm__batcher_drain(&p->batcher, now, p->sub);
  kvbm__batcher_expire(&p->batcher, now);
}

/* The watch's callback; returns the deadline (< 0: none). */
static double pump(void *ud, double now) {
  kvbm_publisher *p = ud;
  if (p->closed) return -1;
  enter(p);
  collect(p, now);
  double deadline = p->closed ? -1 : kvbm__batcher_deadline(&p->batcher);
  return leave(p) ? -1 : deadline;
}

/* The limits, one message each; NULL when cfg is valid. */
static int valid_subject(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n >= KVBM_PUBLISHER_SUBJECT_MAX || s[0] == '.' || s[n - 1] == '.') return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == 0x7f || c == '*' || c == '>' || (c == '.' && s[i + 1] == '.')) return 0;
  }
  return 1;
}

const char *kvbm_publisher_config_error(const kvbm_publisher_config *cfg) {
  if (!cfg) return "no configuration given";
  if (!cfg->events) return "events is required";
  if (!cfg->loop) return "loop is required";
  if (!cfg->sink.publish && !cfg->sink.publish_batch) return "sink is required (publish or publish_batch)";
  /* written so that NaN fails too */
  if (cfg->window != 0 && !(cfg->window > 0 && cfg->window <= KVBM_PUBLISHER_MAX_WINDOW))
    return "window must be a number of seconds in (0, 3600]";
  if (cfg->max_batch > KVBM_PUBLISHER_MAX_BATCH) return "max_batch must be an integer in 1..1048576";
  if (cfg->capacity > KVBM_PUBLISHER_MAX_CAPACITY) return "capacity must be an integer in 1..16777216";
  if (cfg->subject && !valid_subject(cfg->subject))
    return "subject must be 1..127 characters, no spaces, no wildcards (* >), no empty tokens";
  return NULL;
}

int kvbm_publisher_new(const kvbm_publisher_config *cfg, kvbm_publisher **out) {
  if (!out) return KVBM_EINVAL;
  *out = NULL;
  if (kvbm_publisher_config_error(cfg)) return KVBM_EINVAL;
  kvbm_allocator a = cfg->alloc ? *cfg->alloc : (kvbm_allocator){NULL, NULL};
  kvbm_publisher *p = kvbm__realloc(&a, NULL, 0, sizeof *p);
  if (!p) return KVBM_ENOMEM;
  memset(p, 0, sizeof *p);
  p->alloc = a;
  p->sink = cfg->sink;
  p->id = cfg->instance_id;
  p->loop = cfg->loop;
  snprintf(p->subject, sizeof p->subject, "%s", cfg->subject ? cfg->subject : "kvbm.events");
  size_t max = cfg->max_batch ? cfg->max_batch : KVBM_PUBLISHER_DEFAULT_BATCH;
  p->buf_size = kvbm_wire_encoded_size(max);
  p->buf = kvbm__realloc(&p->alloc, NULL, 0, p->buf_size);
  int rc = p->buf ? 0 : KVBM_ENOMEM;
  if (rc == 0)
    rc = kvbm__batcher_init(&p->batcher, &p->alloc, max,
                            cfg->window > 0 ? cfg->window : KVBM_PUBLISHER_DEFAULT_WINDOW, emit, p);
  if (rc == 0)
    rc = kvbm_events_subscribe(cfg->events, cfg->capacity ? cfg->capacity : KVBM_PUBLISHER_DEFAULT_CAPACITY,
                               &p->sub);
  if (rc == 0 && !(p->watch = kvbm__watch_start(&p->alloc, p->loop, pump, p))) rc = KVBM_ENOMEM;
  if (rc) {
    destroy(p);
    return rc;
  }
  *out = p;
  return 0;
}

int kvbm_publisher_flush(kvbm_publisher *p) {
  if (p->closed) return KVBM_ECLOSED;
  enter(p);
  int before = p->error;
  p->error = 0;
  collect(p, kvbm__loop_now(p->loop));
  kvbm__batcher_flush(&p->batcher);
  int rc = p->error;
  p->error = before ? before : rc;
  (void)leave(p);
  return rc;
}

int kvbm_publisher_close(kvbm_publisher *p) {
  if (p->closed || p->closing) return 0; /* from the sink during close: the outer close finishes */
  p->closing = 1;
  enter(p);
  p->error = 0;
  collect(p, kvbm__loop_now(p->loop));
  kvbm__batcher_flush(&p->batcher);
  p->closed = 1; /* from here on nothing new is batched */
  (void)send_batch(p, KVBM_EVENT_SHUTDOWN, NULL, 0);
  if (p->sink.flush && p->sink.flush(p->sink.ud) < 0) {
    p->stats.errors++;
    if (!p->error) p->error = KVBM_ESINK;
  }
  kvbm__watch_stop(p->watch);
  p->watch = NULL;
  int rc = p->error;
  (void)leave(p);
  return rc;
}

void kvbm_publisher_free(kvbm_publisher *p) {
  if (!p || p->free_pending) return;
  p->free_pending = 1;
  enter(p);
  (void)kvbm_publisher_close(p);
  (void)leave(p); /* frees now, or when the call that ran the sink returns */
}

void kvbm_publisher_get_stats(const kvbm_publisher *p, kvbm_publisher_stats *out) {
  *out = p->stats;
  out->lost = p->sub ? kvbm_subscription_lost(p->sub) : 0;
  out->pending = p->batcher.n + (p->sub ? kvbm_subscription_pending(p->sub) : 0);
}
