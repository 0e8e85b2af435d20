/* nats_sink.c - a kvbm_sink that publishes to NATS through libnats.
 *
 * What the crate's Publisher trait asks (publish enqueues and returns at
 * once; flush waits until what was published has reached the server) maps
 * onto libnats directly:
 *
 *   publish  natsConnection_Publish: appends to the client's outbound buffer
 *            and returns; libnats' flusher thread writes it out.
 *   flush    natsConnection_FlushTimeout (PING/PONG round trip), bounded.
 *   close    a short flush, then close and free.
 *
 * Reconnection is left to libnats: reconnect allowed, unlimited attempts,
 * a short wait between them. While the connection is down, publish keeps
 * succeeding: libnats appends the messages to its reconnect buffer
 * (KVBM_NATS_RECONNECT_BUF bytes) and sends them after it reconnects (after
 * re-sending the subscriptions). When that buffer is full, publish fails
 * with KVBM_ESINK ("insufficient buffer") and the message is dropped; flush
 * fails after at most KVBM_NATS_FLUSH_MS. Messages still in the reconnect
 * buffer when the sink is closed are lost. The initial connection is not
 * retried: a server that is not there is reported by kvbm_nats_sink_new.
 *
 * Loss: core NATS delivers at most once. The sink cannot see what a server
 * or a subscriber missed; it counts what it can (kvbm_nats_sink_stats):
 * messages refused (dropped, lost for sure), messages published while the
 * connection was down (sent after the reconnect, but a subscriber that was
 * down too never sees them), those of them not sent yet (lost if the sink
 * closes before the reconnect), and the bytes libnats has not written yet.
 * (natsConnection_GetStats tells no more: its outbound count includes
 * what sits in the reconnect buffer.)
 *
 * Threads: the sink itself is used from one thread, like the rest of kvbm.
 * libnats runs its connection callbacks (disconnected, reconnected, error,
 * closed) on its own thread; they only bump C11 atomic counters and write
 * last_error under a mutex. close() waits (bounded) for the closed callback,
 * the last one libnats delivers for a connection, before freeing the state
 * the callbacks use. If it does not come in time the callback frees it
 * with free() when the sink was made with the C library's allocator; a
 * host allocator (not safe to call from libnats' thread) then keeps the
 * state, a few hundred bytes, rather than freeing it from the wrong thread.
 *
 * Process exit: libnats keeps global state (its threads, a few caches) that
 * outlives every connection. Releasing it with nats_Close() (or
 * nats_CloseAndWait()) is the host's decision, made once at exit after every
 * NATS sink is closed; kvbm never calls it, since other code in the process
 * may use libnats too. Without it valgrind lists those allocations as "still
 * reachable"; a closed sink itself leaves nothing behind.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "kvbm_nats.h"

/* The sink's state on the caller's allocator (lua_Alloc shape; NULL fn:
 * the C library's). libkvbm-nats has its own: the core's is private. */
static void *sink_realloc(const kvbm_allocator *a, void *ptr, size_t osize, size_t nsize) {
  if (a->fn) return a->fn(a->ud, ptr, osize, nsize);
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

#define KVBM_NATS_RECONNECT_WAIT_MS 50
#define KVBM_NATS_RECONNECT_BUF (8 * 1024 * 1024)
#define KVBM_NATS_CONNECT_TIMEOUT_MS 2000
#define KVBM_NATS_FLUSH_MS 2000
#define KVBM_NATS_CLOSE_FLUSH_MS 500
#define KVBM_NATS_CLOSED_WAIT_MS 2000

typedef struct nats_sink {
  natsConnection *nc;
  kvbm_allocator alloc;
  atomic_uint_fast64_t disconnects, reconnects, errors;
  atomic_int down;                     /* disconnected, not reconnected yet */
  atomic_uint_fast64_t down_published; /* published since the last disconnect */
  uint64_t published, dropped, while_down; /* the owner's thread */
  pthread_mutex_t mu; /* guards last_error, cb_closed, owner_gone */
  pthread_cond_t cv;
  int cb_closed;  /* the closed callback has run */
  int owner_gone; /* close() stopped waiting: the closed callback frees */
  char last_error[sizeof(((kvbm_nats_stats *)0)->last_error)];
} nats_sink;

static void sink_free(nats_sink *s) {
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  kvbm_allocator a = s->alloc;
  (void)sink_realloc(&a, s, sizeof *s, 0);
}

static void set_error(nats_sink *s, const char *what, natsStatus st) {
  pthread_mutex_lock(&s->mu);
  snprintf(s->last_error, sizeof s->last_error, "%s: %s", what, natsStatus_GetText(st));
  pthread_mutex_unlock(&s->mu);
}

static int fail(nats_sink *s, const char *what, natsStatus st) {
  atomic_fetch_add(&s->errors, 1);
  set_error(s, what, st);
  return KVBM_ESINK;
}

/* ------------------------------------------------ libnats' callback thread */

static void on_disconnected(natsConnection *nc, void *closure) {
  (void)nc;
  nats_sink *s = closure;
  atomic_store(&s->down, 1);
  atomic_fetch_add(&s->disconnects, 1);
}

static void on_reconnected(natsConnection *nc, void *closure) {
  (void)nc;
  nats_sink *s = closure;
  atomic_store(&s->down, 0);
  atomic_store(&s->down_published, 0); /* libnats sent what it buffered */
  atomic_fetch_add(&s->reconnects, 1);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure) {
  (void)nc, (void)sub;
  nats_sink *s = closure;
  atomic_fetch_add(&s->errors, 1);
  set_error(s, "async", err);
}

static void on_closed(natsConnection *nc, void *closure) {
  (void)nc;
  nats_sink *s = closure;
  pthread_mutex_lock(&s->mu);
  if (s->owner_gone) { /* close() gave up waiting for us */
    pthread_mutex_unlock(&s->mu);
    if (!s->alloc.fn) sink_free(s); /* else kept: see the header */
    return;
  }
  s->cb_closed = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------ the sink vtable */

static int nats_publish(void *ud, const char *subject, const unsigned char *data, size_t len) {
  nats_sink *s = ud;
  if (!subject || !*subject || (len && !data) || len > INT_MAX)
    return fail(s, "publish", NATS_INVALID_ARG);
  /* down before the call: the message goes to libnats' reconnect buffer */
  int down = atomic_load(&s->down) || natsConnection_Status(s->nc) != NATS_CONN_STATUS_CONNECTED;
  natsStatus st = natsConnection_Publish(s->nc, subject, data, (int)len);
  if (st != NATS_OK) {
    s->dropped++;
    return fail(s, "publish", st);
  }
  s->published++;
  if (down) s->while_down++, atomic_fetch_add(&s->down_published, 1);
  return 0;
}

static int nats_flush(void *ud) {
  nats_sink *s = ud;
  natsStatus st = natsConnection_FlushTimeout(s->nc, KVBM_NATS_FLUSH_MS);
  return st == NATS_OK ? 0 : fail(s, "flush", st);
}

static void nats_close(void *ud) {
  nats_sink *s = ud;
  if (!s) return;
  if (natsConnection_Status(s->nc) == NATS_CONN_STATUS_CONNECTED)
    (void)natsConnection_FlushTimeout(s->nc, KVBM_NATS_CLOSE_FLUSH_MS);
  natsConnection_Close(s->nc); /* posts the closed callback */
  natsConnection_Destroy(s->nc);

  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += KVBM_NATS_CLOSED_WAIT_MS / 1000;
  until.tv_nsec += (long)(KVBM_NATS_CLOSED_WAIT_MS % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  pthread_mutex_lock(&s->mu);
  while (!s->cb_closed)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &until) != 0 && !s->cb_closed) break;
  int done = s->cb_closed;
  if (!done) s->owner_gone = 1;
  pthread_mutex_unlock(&s->mu);
  if (done) sink_free(s);
}

/* ------------------------------------------------------------- public */

int kvbm_nats_sink_new(const kvbm_allocator *alloc, const char *url, kvbm_sink *out, char *err,
                       size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (!out) return KVBM_EINVAL;
  memset(out, 0, sizeof *out);
  if (!url || !*url) {
    if (err && errlen) snprintf(err, errlen, "nats: no server URL given");
    return KVBM_EINVAL;
  }
  kvbm_allocator a = alloc ? *alloc : (kvbm_allocator){NULL, NULL};
  nats_sink *s = sink_realloc(&a, NULL, 0, sizeof *s);
  if (!s) {
    if (err && errlen) snprintf(err, errlen, "nats: out of memory");
    return KVBM_ENOMEM;
  }
  memset(s, 0, sizeof *s);
  s->alloc = a;
  atomic_init(&s->down, 0);
  atomic_init(&s->down_published, 0);
  atomic_init(&s->disconnects, 0);
  atomic_init(&s->reconnects, 0);
  atomic_init(&s->errors, 0);
  pthread_condattr_t ca;
  int ok = pthread_mutex_init(&s->mu, NULL) == 0;
  if (ok && pthread_condattr_init(&ca) == 0) {
    int cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&s->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!cv_ok) pthread_mutex_destroy(&s->mu), ok = 0;
  } else if (ok) {
    pthread_mutex_destroy(&s->mu), ok = 0;
  }
  if (!ok) {
    (void)sink_realloc(&a, s, sizeof *s, 0);
    return KVBM_ENOMEM;
  }

  natsOptions *opts = NULL;
  const char *step = "options";
  natsStatus st = natsOptions_Create(&opts);
  if (st == NATS_OK) step = "url", st = natsOptions_SetURL(opts, url);
  if (st == NATS_OK) step = "options", st = natsOptions_SetName(opts, "kvbm-sink");
  if (st == NATS_OK) st = natsOptions_SetTimeout(opts, KVBM_NATS_CONNECT_TIMEOUT_MS);
  if (st == NATS_OK) st = natsOptions_SetAllowReconnect(opts, true);
  if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts, -1);
  if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts, KVBM_NATS_RECONNECT_WAIT_MS);
  if (st == NATS_OK) st = natsOptions_SetReconnectJitter(opts, 0, 0);
  if (st == NATS_OK) st = natsOptions_SetReconnectBufSize(opts, KVBM_NATS_RECONNECT_BUF);
  if (st == NATS_OK) st = natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL);
  if (st == NATS_OK) st = natsOptions_SetDisconnectedCB(opts, on_disconnected, s);
  if (st == NATS_OK) st = natsOptions_SetReconnectedCB(opts, on_reconnected, s);
  if (st == NATS_OK) st = natsOptions_SetErrorHandler(opts, on_error, s);
  if (st == NATS_OK) st = natsOptions_SetClosedCB(opts, on_closed, s);
  if (st == NATS_OK) step = "connect", st = natsConnection_Connect(&s->nc, opts);
  natsOptions_Destroy(opts); /* the connection keeps its own copy */

  if (st != NATS_OK) {
    /* A failed connect returns no connection and runs no callback. */
    if (err && errlen) {
      natsStatus last = NATS_OK;
      const char *detail = nats_GetLastError(&last);
      const char *text = natsStatus_GetText(st);
      if (last == st && detail && *detail && !strstr(detail, text))
        snprintf(err, errlen, "nats %s %s failed: %s (%s)", step, url, text, detail);
      else
        snprintf(err, errlen, "nats %s %s failed: %s", step, url, text);
    }
    if (s->nc) natsConnection_Destroy(s->nc);
    sink_free(s);
    return st == NATS_NO_MEMORY ? KVBM_ENOMEM : KVBM_ESINK;
  }
  out->publish = nats_publish;
  out->flush = nats_flush;
  out->close = nats_close;
  out->ud = s;
  return 0;
}

void kvbm_nats_sink_stats(const kvbm_sink *sink, kvbm_nats_stats *out) {
  memset(out, 0, sizeof *out);
  if (!sink || sink->publish != nats_publish || !sink->ud) return;
  nats_sink *s = sink->ud;
  out->disconnects = atomic_load(&s->disconnects);
  out->reconnects = atomic_load(&s->reconnects);
  out->errors = atomic_load(&s->errors);
  out->connected = natsConnection_Status(s->nc) == NATS_CONN_STATUS_CONNECTED;
  out->published = s->published;
  out->dropped = s->dropped;
  out->published_while_down = s->while_down;
  out->unsent = out->connected ? 0 : atomic_load(&s->down_published);
  int buffered = natsConnection_Buffered(s->nc); /* -1 while down */
  out->buffered_bytes = buffered > 0 ? (uint64_t)buffered : 0;
  pthread_mutex_lock(&s->mu);
  memcpy(out->last_error, s->last_error, sizeof out->last_error);
  pthread_mutex_unlock(&s->mu);
}
