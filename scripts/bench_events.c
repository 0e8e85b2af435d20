/* bench_events.c - what events cost: registrations per second with the
 * events manager off and on (a publisher batching them on a libev loop,
 * encoding every batch, into a sink that only counts bytes), and batches
 * encoded per second. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kvbm.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int count_bytes(void *ud, const char *subject, const unsigned char *data, size_t len) {
  (void)subject, (void)data;
  *(size_t *)ud += len;
  return 0;
}

#define BLOCKS 65536
#define BATCH 1024

/* Registers `rounds` x BATCH fresh hashes (each round evicts the previous
 * round's blocks from the inactive pool); returns seconds. */
static double registrations(int with_events, int rounds, size_t *published) {
  kvbm_registry *reg;
  kvbm_manager *m;
  kvbm_events *ev = NULL;
  kvbm_publisher *pub = NULL;
  struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
  size_t bytes = 0;
  if (kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg) < 0) exit(1);
  if (with_events) {
    if (kvbm_events_new(NULL, &ev) < 0) exit(1);
    kvbm_registry_set_events(reg, ev);
    kvbm_publisher_config pc = {.events = ev, .loop = loop, .instance_id = {0, 12345}, .window = 0.010};
    pc.sink.publish = count_bytes;
    pc.sink.ud = &bytes;
    if (kvbm_publisher_new(&pc, &pub) < 0) exit(1);
  }
  kvbm_manager_config cfg = {.block_count = BLOCKS, .block_size = 16, .registry = reg, .backend = KVBM_BACKEND_LRU};
  if (kvbm_manager_new(&cfg, &m) < 0) exit(1);
  kvbm_block *mb = malloc(BATCH * sizeof *mb), *cb = malloc(BATCH * sizeof *cb), *ib = malloc(BATCH * sizeof *ib);
  uint64_t next = 1;
  double t0 = now_s();
  for (int r = 0; r < rounds; r++) {
    if (kvbm_allocate(m, BATCH, mb, NULL) < 0) exit(1);
    for (int i = 0; i < BATCH; i++) {
      kvbm_hash h;
      (void)kvbm_hash_new(next * UINT64_C(0x9E3779B97F4A7C15), 1, next, (uint64_t)i, &h);
      next++;
      if (kvbm_stage(m, mb[i], h, 16, &cb[i]) < 0) exit(1);
    }
    if (kvbm_register_all(m, cb, BATCH, ib) < 0) exit(1);
    for (int i = 0; i < BATCH; i++) (void)kvbm_release(m, ib[i]);
    if (loop) ev_run(loop, EVRUN_NOWAIT);
  }
  if (pub) (void)kvbm_publisher_close(pub);
  double dt = now_s() - t0;
  if (published) {
    kvbm_publisher_stats st = {0};
    if (pub) kvbm_publisher_get_stats(pub, &st);
    *published = st.events;
  }
  kvbm_publisher_free(pub);
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
  kvbm_events_release(ev);
  ev_loop_destroy(loop);
  free(mb), free(cb), free(ib);
  return dt;
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 400;
  double best_off = 1e9, best_on = 1e9;
  size_t published = 0;
  for (int k = 0; k < 5; k++) {
    double off = registrations(0, rounds, NULL), on = registrations(1, rounds, &published);
    if (off < best_off) best_off = off;
    if (on < best_on) best_on = on;
  }
  double n = (double)rounds * BATCH;
  printf("registrations/s, events off  %12.0f  (%.1f ns per registration, incl. eviction)\n", n / best_off, best_off * 1e9 / n);
  printf("registrations/s, events on   %12.0f  (%.1f ns; %zu create+remove events published)\n", n / best_on, best_on * 1e9 / n, published);
  printf("events overhead              %11.1f%%\n", 100.0 * (best_on - best_off) / best_off);

  /* encoding alone */
  static kvbm_hash hs[BATCH];
  static unsigned char buf[BATCH * 18 + 64];
  for (int i = 0; i < BATCH; i++) (void)kvbm_hash_new((uint64_t)i * 7919, 1, (uint64_t)i, (uint64_t)i, &hs[i]);
  const size_t sizes[] = {1, 16, 1024};
  for (int s = 0; s < 3; s++) {
    kvbm_batch b = {KVBM_EVENT_CREATE, hs, sizes[s], {0, 12345}};
    long iters = 2000000 / (long)sizes[s] + 1000;
    size_t sum = 0;
    double t0 = now_s();
    for (long i = 0; i < iters; i++) sum += (size_t)kvbm_wire_encode(&b, buf, sizeof buf);
    double dt = now_s() - t0;
    printf("batches/s encoded, %4zu hashes %12.0f  (%.1f ns per hash, %zu bytes)\n", sizes[s], iters / dt,
           dt * 1e9 / ((double)iters * sizes[s]), sum / (size_t)iters);
  }
  return 0;
}
