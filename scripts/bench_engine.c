/* bench_engine.c - the crate's criterion workloads (benches/block_manager.rs)
 * in C: one lineage chain of n blocks (block size 4, salt 1337) in a pool of
 * exactly n blocks, a registry with the Medium TinyLFU tracker, Allow.
 *   match_active   : match all n while they are held (then drop the result)
 *   match_inactive : match all n from the inactive pool, then release them
 *   bulk_release   : release n held blocks into the inactive pool
 * Prints ns per block (best of several runs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kvbm.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef struct {
  kvbm_registry *reg;
  kvbm_manager *m;
  kvbm_sequence *seq;
  kvbm_block *held, *out;
} chain;

static int build(chain *c, size_t n, kvbm_backend backend) {
  uint32_t *toks = malloc(n * 4 * sizeof *toks);
  for (size_t i = 0; i < n * 4; i++) toks[i] = (uint32_t)i;
  kvbm_block *cbs = malloc(n * sizeof *cbs);
  c->held = malloc(n * sizeof *c->held);
  c->out = malloc(n * sizeof *c->out);
  int rc = kvbm_registry_new(NULL, KVBM_FREQUENCY_MEDIUM, &c->reg);
  kvbm_manager_config cfg = {.block_count = (uint32_t)n, .block_size = 4, .registry = c->reg,
                             .backend = backend};
  if (rc == 0) rc = kvbm_manager_new(&cfg, &c->m);
  if (rc == 0) rc = kvbm_sequence_new(NULL, 4, 1337, &c->seq);
  if (rc == 0) rc = kvbm_sequence_extend(c->seq, toks, n * 4, NULL, NULL) < 0 ? -1 : 0;
  for (size_t i = 0; rc == 0 && i < n; i++) {
    kvbm_block mb;
    rc = kvbm_allocate(c->m, 1, &mb, NULL) < 0 ? -1 : 0;
    if (rc == 0) rc = kvbm_stage(c->m, mb, kvbm_sequence_hashes(c->seq)[i], 4, &cbs[i]);
  }
  if (rc == 0) rc = kvbm_register_all(c->m, cbs, n, c->held);
  free(toks);
  free(cbs);
  return rc;
}

static void destroy(chain *c, size_t n, int holding) {
  if (holding)
    for (size_t i = 0; i < n; i++) (void)kvbm_release(c->m, c->held[i]);
  kvbm_manager_free(c->m);
  kvbm_registry_release(c->reg);
  kvbm_sequence_free(c->seq);
  free(c->held);
  free(c->out);
}

static void release_all(kvbm_manager *m, const kvbm_block *b, size_t n) {
  for (size_t i = 0; i < n; i++) (void)kvbm_release(m, b[i]);
}

int main(int argc, char **argv) {
  static const struct { const char *name; kvbm_backend b; } backends[] = {
      {"lru", KVBM_BACKEND_LRU}, {"multi_lru", KVBM_BACKEND_MULTI_LRU}, {"lineage", KVBM_BACKEND_LINEAGE}};
  static const size_t sizes[] = {8, 32, 128};
  long iters = argc > 1 ? atol(argv[1]) : 20000;
  printf("%-16s %-10s %6s %12s\n", "workload", "backend", "blocks", "ns/block");
  for (size_t k = 0; k < 3; k++) { /* match of held blocks: LRU only, as in the crate */
    size_t n = sizes[k];
    chain c;
    if (build(&c, n, KVBM_BACKEND_LRU)) return 1;
    const kvbm_hash *hs = kvbm_sequence_hashes(c.seq);
    double best = 1e300;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now_ns();
      for (long it = 0; it < iters; it++) {
        size_t got = kvbm_match(c.m, hs, n, c.out);
        release_all(c.m, c.out, got);
      }
      double dt = (now_ns() - t0) / ((double)iters * n);
      if (dt < best) best = dt;
    }
    printf("%-16s %-10s %6zu %12.1f\n", "match_active", "lru", n, best);
    destroy(&c, n, 1);
  }
  for (size_t bi = 0; bi < 3; bi++) {
    for (size_t k = 0; k < 3; k++) {
      size_t n = sizes[k];
      chain c;
      if (build(&c, n, backends[bi].b)) return 1;
      release_all(c.m, c.held, n);
      const kvbm_hash *hs = kvbm_sequence_hashes(c.seq);
      double best = 1e300;
      for (int rep = 0; rep < 5; rep++) {
        double t0 = now_ns();
        for (long it = 0; it < iters; it++) {
          size_t got = kvbm_match(c.m, hs, n, c.out);
          release_all(c.m, c.out, got);
        }
        double dt = (now_ns() - t0) / ((double)iters * n);
        if (dt < best) best = dt;
      }
      printf("%-16s %-10s %6zu %12.1f\n", "match_inactive", backends[bi].name, n, best);
      destroy(&c, n, 0);
    }
  }
  for (size_t bi = 0; bi < 3; bi++) {
    for (size_t k = 0; k < 3; k++) {
      size_t n = sizes[k];
      chain c;
      if (build(&c, n, backends[bi].b)) return 1;
      release_all(c.m, c.held, n);
      const kvbm_hash *hs = kvbm_sequence_hashes(c.seq);
      double total = 0;
      long rounds = iters / 4;
      for (long it = 0; it < rounds; it++) { /* setup (untimed): hold all n again */
        size_t got = kvbm_match(c.m, hs, n, c.out);
        double t0 = now_ns();
        release_all(c.m, c.out, got);
        total += now_ns() - t0;
      }
      printf("%-16s %-10s %6zu %12.1f\n", "bulk_release", backends[bi].name, n, total / ((double)rounds * n));
      destroy(&c, n, 0);
    }
  }
  return 0;
}
