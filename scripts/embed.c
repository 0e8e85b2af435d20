/* embed.c - the smallest host: links libkvbm from C (no Lua), hashes a
 * prompt into blocks, registers them in a manager, releases them into the
 * inactive cache and finds them again the way a second request would.
 * `make check` runs it and reads its TAP lines. Outside the tree:
 *   cc embed.c $(pkg-config --cflags --libs kvbm) */
#include <stdio.h>
#include <string.h>

#include <kvbm.h>

static int step(int n, int ok, const char *what) {
  printf("%s %d - %s\n", ok ? "ok" : "not ok", n, what);
  return ok;
}

int main(void) {
  const uint32_t prompt[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  kvbm_sequence *seq;
  kvbm_registry *reg;
  kvbm_manager *m;
  int good = 1;

  /* hashing: 10 tokens in blocks of 4 -> two full blocks */
  if (kvbm_sequence_new(NULL, 4, 1337, &seq) < 0) return 1;
  size_t lo, hi, n;
  good &= step(1, kvbm_sequence_extend(seq, prompt, 10, &lo, &hi) == 2 && lo == 0 && hi == 2,
               "10 tokens in blocks of 4 complete positions [0, 2)");
  char text[KVBM_HASH_STRLEN];
  (void)kvbm_hash_format(kvbm_sequence_hashes(seq)[1], text, sizeof text);
  good &= step(2, strcmp(text, "1:P5PmJLYPXS4:12KUtXWCDJu") == 0, "block 1 has Dynamo's hash");

  /* a manager of 4 blocks on its own registry */
  kvbm_manager_config cfg = {.block_count = 4, .block_size = 4, .backend = KVBM_BACKEND_LRU};
  if (kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg) < 0) return 1;
  cfg.registry = reg;
  if (kvbm_manager_new(&cfg, &m) < 0) return 1;

  kvbm_block mb[2], cb[2], ib[2], found[2];
  n = kvbm_sequence_blocks(seq);
  int rc = kvbm_allocate(m, n, mb, NULL);
  for (size_t i = 0; rc >= 0 && i < n; i++) rc = kvbm_stage(m, mb[i], kvbm_sequence_hashes(seq)[i], 4, &cb[i]);
  if (rc >= 0) rc = kvbm_register_all(m, cb, n, ib);
  good &= step(3, rc == 0 && kvbm_manager_available(m) == 2, "allocate, stage, register two blocks");
  for (size_t i = 0; i < n; i++) (void)kvbm_release(m, ib[i]);
  good &= step(4, kvbm_manager_inactive(m) == 2 && kvbm_manager_available(m) == 4,
               "released blocks wait in the inactive cache (still available)");
  size_t hits = kvbm_match(m, kvbm_sequence_hashes(seq), n, found);
  good &= step(5, hits == 2 && kvbm_block_id(found[0]) == kvbm_block_id(ib[0]),
               "a second request matches the cached prefix");
  for (size_t i = 0; i < hits; i++) (void)kvbm_release(m, found[i]);
  kvbm_block five[5];
  good &= step(6, kvbm_allocate(m, 5, five, NULL) == KVBM_ENOSPC, "asking for more than the pool holds fails cleanly");
  printf("# %s: %s\n", kvbm_err_name(KVBM_ENOSPC), kvbm_strerror(KVBM_ENOSPC));
  printf("1..6\n");

  kvbm_manager_free(m);
  kvbm_registry_release(reg);
  kvbm_sequence_free(seq);
  return good ? 0 : 1;
}
