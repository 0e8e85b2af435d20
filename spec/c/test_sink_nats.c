/* test_sink_nats.c - the NATS sink's own allocations go through the kvbm
 * allocator hook: failing each one gives a clean KVBM_ENOMEM with a
 * message and leaves nothing behind. No server is needed: once every
 * allocation succeeds, connecting to a port nobody listens on fails with
 * KVBM_ESINK (the NATS specs cover a live server). */
#include <stdlib.h>

#include "kvbm_nats.h"
#include "tap.h"

#include "budget_alloc.h"

/* Port 1 (tcpmux): nothing listens there on a test machine. */
#define NOBODY "nats://127.0.0.1:1"

int main(void) {
  kvbm_allocator al = {budget_alloc, NULL};
  kvbm_sink sink;
  char err[256];
  int k, clean = 1, rc = 0;
  for (k = 0; k < 20; k++) {
    budget = k;
    rc = kvbm_nats_sink_new(&al, NOBODY, &sink, err, sizeof err);
    budget = -1;
    if (rc != KVBM_ENOMEM) break;
    if (live_allocs != 0 || !strstr(err, "out of memory") || sink.ud) {
      clean = 0;
      ok(0, "allocation %d failing: %ld blocks left, err \"%s\"", k + 1, live_allocs, err);
    }
  }
  ok(clean && k >= 1, "each of the sink's %d allocation(s) failing: KVBM_ENOMEM, a message, nothing left", k);
  ok(rc == KVBM_ESINK && strstr(err, "nats connect") && live_allocs == 0,
     "with every allocation granted: the connect fails cleanly (%s), nothing left", err);
  ok(budget_calls > 0, "the sink allocated through the hook (%ld calls)", budget_calls);
  ok(kvbm_nats_sink_new(NULL, NOBODY, &sink, err, sizeof err) == KVBM_ESINK, "NULL: the C library's allocator");
  ok(kvbm_nats_sink_new(&al, "", &sink, err, sizeof err) == KVBM_EINVAL && live_allocs == 0, "no URL: refused first");
  return tap_done();
}
