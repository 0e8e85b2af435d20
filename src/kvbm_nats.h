/*
 * kvbm_nats.h - libkvbm-nats: KV events over NATS, on libnats.
 *
 *   cc app.c $(pkg-config --cflags --libs kvbm-nats)
 *
 * The sink is a kvbm_sink for kvbm_publisher_new; the subscription reads
 * what a sink published (e.g. to decode it with kvbm_wire_decode). Both
 * reconnect through libnats (every 50 ms, forever); a server that does not
 * answer at creation is an error (KVBM_ESINK, the reason in err).
 * Every symbol of this library starts with kvbm_nats_.
 */
#ifndef KVBM_NATS_H
#define KVBM_NATS_H

#include <stdint.h>

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ sink */

/* A NATS sink on libnats: reconnects are left to the client library, which
 * buffers while disconnected. Connection failure: KVBM_ESINK with a
 * message in err. alloc (NULL: the C library's) holds the sink's state;
 * libnats allocates its own with malloc. */
KVBM_API KVBM_NODISCARD int kvbm_nats_sink_new(const kvbm_allocator *alloc, const char *url,
                                               kvbm_sink *out, char *err, size_t errlen);
/* Counters of a NATS sink (from kvbm_nats_sink_new). Core NATS delivers at
 * most once: the sink cannot see what a server or a subscriber missed, only
 * what follows. */
typedef struct kvbm_nats_stats {
  uint64_t disconnects, reconnects; /* seen by libnats' callbacks */
  uint64_t errors;                  /* publish/flush failures, async errors */
  uint64_t published;               /* messages libnats accepted */
  uint64_t dropped;                 /* messages libnats refused (buffer full): lost */
  uint64_t published_while_down;    /* accepted while disconnected: sent after the
                                       reconnect; a subscriber down too misses them */
  uint64_t unsent;                  /* accepted while down, not sent yet: lost
                                       if the sink closes before the reconnect */
  uint64_t buffered_bytes;          /* connected: not written to the socket yet */
  int connected;                    /* 1 while connected */
  char last_error[128];
} kvbm_nats_stats;
/* Zeroes *out for a sink that is not a NATS sink. */
KVBM_API void kvbm_nats_sink_stats(const kvbm_sink *s, kvbm_nats_stats *out);

/* ---------------------------------------------------------- subscription */

typedef struct kvbm_nats_sub kvbm_nats_sub;

/* A synchronous subscription to subject; when this returns the server has
 * it, so nothing published afterwards is missed. */
KVBM_API KVBM_NODISCARD int kvbm_nats_sub_new(const char *url, const char *subject,
                                              kvbm_nats_sub **out, char *err, size_t errlen);
KVBM_API void kvbm_nats_sub_free(kvbm_nats_sub *s); /* NULL is fine */

/* One received message; valid until kvbm_nats_msg_free. */
typedef struct kvbm_nats_msg {
  const unsigned char *data;
  size_t len;
  const char *subject;
  void *impl_; /* the libnats message */
} kvbm_nats_msg;

/* Waits at most timeout_ms for the next message: 1 with *msg filled (free
 * it with kvbm_nats_msg_free), 0 on timeout, or KVBM_ESINK with the reason
 * in err (e.g. a slow consumer: messages were dropped). */
KVBM_API KVBM_NODISCARD int kvbm_nats_sub_next(kvbm_nats_sub *s, int64_t timeout_ms,
                                               kvbm_nats_msg *msg, char *err, size_t errlen);
KVBM_API void kvbm_nats_msg_free(kvbm_nats_msg *msg);

#ifdef __cplusplus
}
#endif
#endif
