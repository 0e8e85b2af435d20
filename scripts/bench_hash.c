/* bench_hash.c - hashing throughput: sequence hashing (block hash + chain +
 * lineage hash) against raw XXH3_64bits_withSeed over the same bytes. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "kvbm.h"

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static volatile uint64_t sink;

uint64_t bench_raw_lib(const uint32_t *toks, size_t nblocks, size_t bs); /* bench_hash_lib.c */

int main(int argc, char **argv) {
  size_t ntokens = argc > 1 ? strtoull(argv[1], NULL, 10) : (size_t)1 << 22;
  int reps = argc > 2 ? atoi(argv[2]) : 5;
  uint32_t *toks = malloc(ntokens * sizeof *toks);
  uint64_t x = 88172645463325252ull;
  for (size_t i = 0; i < ntokens; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    toks[i] = (uint32_t)(x % 50000);
  }
  printf("%-26s %10s %9s %14s %14s\n", "", "block_size", "ns/block", "raw, inlined", "raw, libxxhash");
  const size_t sizes[] = {4, 16, 64};
  for (size_t k = 0; k < 3; k++) {
    size_t bs = sizes[k], nblocks = ntokens / bs;
    double best_seq = 1e300, best_raw = 1e300, best_lib = 1e300;
    kvbm_sequence *s;
    if (kvbm_sequence_new(NULL, bs, 1337, &s) < 0) return 1;
    for (int r = 0; r < reps; r++) {
      /* warm: the sequence's memory is already there after the first run */
      kvbm_sequence_truncate(s, 0);
      double t0 = now_ns();
      if (kvbm_sequence_extend(s, toks, nblocks * bs, NULL, NULL) < 0) return 1;
      double t1 = now_ns();
      sink += kvbm_sequence_hashes(s)[nblocks - 1].lo;
      if (r > 0 && t1 - t0 < best_seq) best_seq = t1 - t0;

      uint64_t acc = 0;
      t0 = now_ns();
      for (size_t b = 0; b < nblocks; b++) acc ^= XXH3_64bits_withSeed(toks + b * bs, bs * 4, 1337);
      t1 = now_ns();
      sink += acc;
      if (t1 - t0 < best_raw) best_raw = t1 - t0;
      t0 = now_ns();
      sink += bench_raw_lib(toks, nblocks, bs);
      t1 = now_ns();
      if (t1 - t0 < best_lib) best_lib = t1 - t0;
    }
    kvbm_sequence_free(s);
    printf("%-26s %10zu %9.2f %8.2f %4.2fx %8.2f %4.2fx\n", "sequence hashing", bs, best_seq / nblocks,
           best_raw / nblocks, best_seq / best_raw, best_lib / nblocks, best_seq / best_lib);
  }
  free(toks);
  return 0;
}
