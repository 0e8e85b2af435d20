/* bench_hash_lib.c - raw XXH3_64bits_withSeed called through libxxhash (no
 * inlining), the "hash function itself" as a host would call it: one hash
 * per block, independent of each other. */
#include <stddef.h>
#include <stdint.h>
#include <xxhash.h>

uint64_t bench_raw_lib(const uint32_t *toks, size_t nblocks, size_t bs) {
  uint64_t acc = 0;
  for (size_t b = 0; b < nblocks; b++) acc ^= XXH3_64bits_withSeed(toks + b * bs, bs * 4, 1337);
  return acc;
}
