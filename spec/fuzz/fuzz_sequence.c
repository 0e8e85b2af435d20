/* fuzz_sequence.c - token block sequences and lineage hashes with hostile
 * sizes: block sizes from 0 to 2^64-1, extends that cross the 2^24 position
 * limit, truncate/unwind/pop at and past the ends, resets to a prefix with
 * another salt, and the hash functions on arbitrary words. The sequence is compared with a plain token array after
 * every call; small ones also with a sequence built in one extend and with
 * the block/chain hash definitions. */
#include <string.h>

#include "fuzz.h"
#include "kvbm.h"

#define BIG_TOKENS ((size_t)KVBM_MAX_POSITION + 64) /* a model larger than this is not built */
#define FULL_CHECK 4096                             /* tokens up to which every hash is recomputed */

static uint32_t token_at(uint32_t seed, size_t i) { return (uint32_t)(i * 2654435761u) ^ seed; }

static void check_hashes(fuzz_in *in) {
  uint64_t cur = fuzz_u64(in), par = fuzz_u64(in), pos = fuzz_size(in);
  int has_parent = fuzz_u8(in) & 1;
  kvbm_hash h, c, raw = {fuzz_u64(in), fuzz_u64(in)};
  char buf[KVBM_HASH_STRLEN];
  unsigned char bytes[16];

  int rc = kvbm_hash_new(cur, has_parent, par, pos, &h);
  if (pos > KVBM_MAX_POSITION) {
    FUZZ_CHECK(rc == KVBM_EPOSITION_LIMIT, "position %llu accepted", (unsigned long long)pos);
    h = raw;
  } else {
    FUZZ_CHECK(rc == 0 && kvbm_hash_valid(h) && kvbm_hash_position(h) == pos, "new at %llu", (unsigned long long)pos);
    if (!has_parent) FUZZ_CHECK(kvbm_hash_parent_fragment(h) == 0, "a root with a parent");
  }
  for (int k = 0; k < 2; k++, h = raw) {
    if (!kvbm_hash_valid(h)) {
      FUZZ_CHECK(kvbm_hash_position(h) == 0 && kvbm_hash_current(h) == 0 && kvbm_hash_parent_fragment(h) == 0,
                 "accessors of a malformed hash");
      FUZZ_CHECK(kvbm_hash_format(h, buf, sizeof buf) == KVBM_EBAD_HASH, "format of a malformed hash");
      FUZZ_CHECK(kvbm_hash_extend(h, cur, &c) == KVBM_EBAD_HASH, "extend of a malformed hash");
      continue;
    }
    int len = kvbm_hash_format(h, buf, sizeof buf);
    FUZZ_CHECK(len > 0 && (size_t)len == strlen(buf), "format: %d", len);
    FUZZ_CHECK(kvbm_hash_format(h, buf, (size_t)len) == KVBM_EINVAL, "format into %d bytes", len);
    kvbm_hash_to_bytes(h, bytes);
    kvbm_hash back = kvbm_hash_from_bytes(bytes);
    FUZZ_CHECK(back.hi == h.hi && back.lo == h.lo && kvbm_hash_cmp(h, back) == 0, "bytes round trip");
    FUZZ_CHECK(kvbm_hash_cmp(h, raw) == -kvbm_hash_cmp(raw, h), "cmp is antisymmetric");
    uint64_t p = kvbm_hash_position(h);
    rc = kvbm_hash_extend(h, cur, &c);
    if (p == KVBM_MAX_POSITION) {
      FUZZ_CHECK(rc == KVBM_EPOSITION_LIMIT, "extend past the limit: %d", rc);
    } else {
      FUZZ_CHECK(rc == 0 && kvbm_hash_position(c) == p + 1, "extend at %llu", (unsigned long long)p);
      FUZZ_CHECK(kvbm_hash_parent_fragment(c) == kvbm_hash_parent_fragment_for_child(h, p + 1),
                 "the child carries its parent's fragment");
      /* raw order is position order only for canonical hashes (the mode
       * kvbm_hash_new picks for the position); the raw words need not be */
      if (k == 0 && pos <= KVBM_MAX_POSITION) FUZZ_CHECK(kvbm_hash_cmp(h, c) < 0, "a child sorts after its parent");
    }
  }
}

static void compare(const kvbm_sequence *s, const uint32_t *model, size_t n, size_t bs, uint64_t salt) {
  FUZZ_CHECK(kvbm_sequence_total_tokens(s) == n, "total %zu, model %zu", kvbm_sequence_total_tokens(s), n);
  size_t nb = kvbm_sequence_blocks(s);
  FUZZ_CHECK(nb == n / bs, "%zu blocks for %zu tokens of %zu", nb, n, bs);
  FUZZ_CHECK(n == 0 || memcmp(kvbm_sequence_tokens(s), model, n * sizeof *model) == 0, "tokens differ");
  const kvbm_hash *hs = kvbm_sequence_hashes(s);
  if (nb) FUZZ_CHECK(kvbm_hash_position(hs[nb - 1]) == nb - 1, "last block's position");
  if (n > FULL_CHECK) return;
  kvbm_sequence *fresh;
  FUZZ_CHECK(kvbm_sequence_new(NULL, bs, salt, &fresh) == 0, "new");
  FUZZ_CHECK(kvbm_sequence_extend(fresh, model, n, NULL, NULL) == (int)nb, "one extend");
  for (size_t i = 0; i < nb; i++) {
    uint64_t bh = kvbm_block_hash(model + i * bs, bs, salt);
    FUZZ_CHECK(kvbm_sequence_block_hash(s, i) == bh, "block hash %zu", i);
    FUZZ_CHECK(kvbm_sequence_seq_hash(s, i) == (i ? kvbm_chain_hash(kvbm_sequence_seq_hash(s, i - 1), bh) : bh),
               "sequence hash %zu", i);
    FUZZ_CHECK(kvbm_hash_valid(hs[i]) && kvbm_hash_position(hs[i]) == i, "position %zu", i);
    const kvbm_hash *f = &kvbm_sequence_hashes(fresh)[i];
    FUZZ_CHECK(f->hi == hs[i].hi && f->lo == hs[i].lo, "block %zu differs from the one-extend sequence", i);
  }
  kvbm_sequence_free(fresh);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size, 0};
  uint64_t bs = fuzz_size(&in), salt = fuzz_u64(&in);
  uint32_t seed = fuzz_u32(&in);
  kvbm_sequence *s = NULL;

  check_hashes(&in);
  int rc = kvbm_sequence_new(NULL, bs, salt, &s);
  if (bs == 0 || bs > UINT32_MAX) {
    FUZZ_CHECK(rc == KVBM_EBLOCK_SIZE, "block size %llu accepted", (unsigned long long)bs);
    return 0;
  }
  FUZZ_CHECK(rc == 0 && kvbm_sequence_block_size(s) == bs && kvbm_sequence_salt(s) == salt, "new");

  uint32_t *model = NULL;
  size_t n = 0, cap = 0;
  for (int steps = 0; fuzz_more(&in) && steps < 64; steps++) {
    uint8_t op = fuzz_u8(&in);
    if (op & 0x80) check_hashes(&in);
    switch (op % 6) {
    case 0: { /* extend by a hostile count: refused exactly when a position would pass 2^24-1 */
      uint64_t k = fuzz_size(&in);
      int over = k > SIZE_MAX - n || (n + k) / bs > (uint64_t)KVBM_MAX_POSITION + 1;
      if (!over && n + k > BIG_TOKENS) break; /* would be accepted: too big to build */
      if (!over && n + k > cap) {
        cap = n + k;
        model = realloc(model, cap * sizeof *model);
        FUZZ_CHECK(model != NULL, "model");
      }
      size_t first = n;
      for (size_t i = 0; !over && i < k; i++) model[n + i] = token_at(seed, n + i);
      size_t lo = 7, hi = 7;
      rc = kvbm_sequence_extend(s, over || !model ? NULL : model + n, (size_t)k, &lo, &hi);
      if (over) {
        FUZZ_CHECK(rc == KVBM_EPOSITION_LIMIT || rc == KVBM_ENOMEM, "extend by %llu: %d", (unsigned long long)k, rc);
        FUZZ_CHECK(lo == 7 && hi == 7, "a refused extend wrote its range");
        break;
      }
      n += (size_t)k;
      FUZZ_CHECK(rc >= 0 && lo == first / bs && hi == n / bs && (size_t)rc == hi - lo, "extend: %d [%zu, %zu)", rc, lo, hi);
      break;
    }
    case 1: {
      uint64_t len = fuzz_size(&in);
      kvbm_sequence_truncate(s, (size_t)len);
      if (len < n) n = (size_t)len;
      break;
    }
    case 2: {
      uint64_t k = fuzz_size(&in);
      rc = kvbm_sequence_unwind(s, (size_t)k);
      FUZZ_CHECK(k > n ? rc == KVBM_EINSUFFICIENT_TOKENS : rc == 0, "unwind %llu of %zu: %d", (unsigned long long)k, n, rc);
      if (rc == 0) n -= (size_t)k;
      break;
    }
    case 3: {
      uint32_t t = 0;
      rc = kvbm_sequence_pop(s, &t);
      FUZZ_CHECK(n == 0 ? rc == KVBM_EEMPTY : rc == 0 && t == model[n - 1], "pop: %d", rc);
      if (rc == 0) n--;
      break;
    }
    case 4: { /* reset: a prefix of the model (or a hostile count) and a new salt */
      uint64_t k = fuzz_size(&in), nsalt = fuzz_u64(&in);
      if (k / bs > (uint64_t)KVBM_MAX_POSITION + 1) {
        FUZZ_CHECK(kvbm_sequence_reset(s, nsalt, NULL, (size_t)k) == KVBM_EPOSITION_LIMIT, "reset to %llu tokens",
                   (unsigned long long)k);
        break; /* unchanged: compared below */
      }
      k %= n + 1;
      rc = kvbm_sequence_reset(s, nsalt, model, (size_t)k);
      FUZZ_CHECK(rc >= 0 && (uint64_t)rc == k / bs && kvbm_sequence_salt(s) == nsalt, "reset to %llu: %d",
                 (unsigned long long)k, rc);
      n = (size_t)k;
      salt = nsalt;
      break;
    }
    default: /* a refill of the cut tail with other tokens: old hashes must not survive */
      if (n && n <= FULL_CHECK) {
        uint32_t t = ~model[n - 1];
        kvbm_sequence_truncate(s, n - 1);
        model[n - 1] = t;
        FUZZ_CHECK(kvbm_sequence_extend(s, &t, 1, NULL, NULL) >= 0, "refill");
      }
      break;
    }
    compare(s, model, n, (size_t)bs, salt);
  }
  free(model);
  kvbm_sequence_free(s);
  return 0;
}
