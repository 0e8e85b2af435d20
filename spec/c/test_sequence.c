/* test_sequence.c - TokenBlockSequence: eager commit, edits, limits, atomicity. */
#include <stdlib.h>

#include <kvbm.h>

#include "tap.h"

static kvbm_sequence *from_range(uint32_t n, uint64_t bs, uint64_t salt) {
  uint32_t *t = malloc((n ? n : 1) * sizeof *t);
  kvbm_sequence *s = NULL;
  for (uint32_t i = 0; i < n; i++) t[i] = i;
  if (kvbm_sequence_new(NULL, bs, salt, &s) == 0 && kvbm_sequence_extend(s, t, n, NULL, NULL) < 0) {
    kvbm_sequence_free(s);
    s = NULL;
  }
  free(t);
  return s;
}

static int same_hashes(const kvbm_sequence *a, const kvbm_sequence *b) {
  if (kvbm_sequence_blocks(a) != kvbm_sequence_blocks(b)) return 0;
  for (size_t i = 0; i < kvbm_sequence_blocks(a); i++)
    if (kvbm_hash_cmp(kvbm_sequence_hashes(a)[i], kvbm_sequence_hashes(b)[i])) return 0;
  return 1;
}

/* Fails every allocation once `budget` reaches zero. */
static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  int *budget = ud;
  (void)osize;
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  if (*budget <= 0) return NULL;
  (*budget)--;
  return realloc(ptr, nsize);
}

int main(void) {
  kvbm_sequence *s, *ref;
  size_t lo, hi;

  ok(kvbm_sequence_new(NULL, 0, 0, &s) == KVBM_EBLOCK_SIZE, "block size 0 is an error");
  ok(kvbm_sequence_new(NULL, (uint64_t)UINT32_MAX + 1, 0, &s) == KVBM_EBLOCK_SIZE,
     "block size above 2^32-1 is an error");

  /* eager commit, one token at a time, equals from_slice */
  ok(kvbm_sequence_new(NULL, 4, 1337, &s) == 0, "new(4, 1337)");
  int completed = 0;
  for (uint32_t t = 0; t < 18; t++) {
    int rc = kvbm_sequence_extend(s, &t, 1, &lo, &hi);
    if (rc == 1) {
      completed++;
      if (lo != t / 4 || hi != lo + 1) break;
    }
  }
  ok(completed == 4 && kvbm_sequence_blocks(s) == 4, "append commits each block when it fills");
  ok(kvbm_sequence_total_tokens(s) == 18, "total tokens 18 (2 in the partial block)");
  ref = from_range(18, 4, 1337);
  ok(same_hashes(s, ref), "append path hashes equal from_slice hashes");

  /* extend returning the range of completed positions */
  uint32_t more[6] = {18, 19, 20, 21, 22, 23};
  ok(kvbm_sequence_extend(s, more, 6, &lo, &hi) == 2 && lo == 4 && hi == 6, "extend -> [4, 6)");
  ok(kvbm_sequence_extend(s, more, 0, &lo, &hi) == 0 && lo == hi, "empty extend completes nothing");

  /* truncate into a committed block: the prefix of the cut block is the tail */
  kvbm_sequence_truncate(s, 10);
  ok(kvbm_sequence_blocks(s) == 2 && kvbm_sequence_total_tokens(s) == 10, "truncate(10) -> 2 blocks + 2");
  kvbm_sequence_truncate(s, 100);
  ok(kvbm_sequence_total_tokens(s) == 10, "truncate beyond the end does nothing");
  uint32_t tail[] = {10, 11, 12, 13, 14, 15, 16, 17};
  ok(kvbm_sequence_extend(s, tail, 8, &lo, &hi) == 2 && same_hashes(s, ref),
     "re-extending after truncate gives the same hashes");

  uint32_t tok = 0;
  ok(kvbm_sequence_pop(s, &tok) == 0 && tok == 17 && kvbm_sequence_total_tokens(s) == 17, "pop -> 17");
  ok(kvbm_sequence_pop(s, &tok) == 0 && tok == 16 &&
         kvbm_sequence_blocks(s) == 4,
     "popping the partial tail keeps the full blocks");
  ok(kvbm_sequence_pop(s, &tok) == 0 && tok == 15 && kvbm_sequence_blocks(s) == 3,
     "popping into a full block un-commits it");
  ok(kvbm_sequence_unwind(s, 100) == KVBM_EINSUFFICIENT_TOKENS && kvbm_sequence_total_tokens(s) == 15,
     "unwind more than total is an error and changes nothing");
  ok(kvbm_sequence_unwind(s, 15) == 0 && kvbm_sequence_total_tokens(s) == 0 &&
         kvbm_sequence_blocks(s) == 0,
     "unwind(total) empties the sequence");
  ok(kvbm_sequence_pop(s, &tok) == KVBM_EEMPTY, "pop on empty is an error");
  kvbm_sequence_free(s);
  kvbm_sequence_free(ref);

  /* the position limit is checked before anything changes */
  ok(kvbm_sequence_new(NULL, 1, 0, &s) == 0, "new(1)");
  uint32_t one = 7;
  ok(kvbm_sequence_extend(s, &one, 1, NULL, NULL) == 1, "one block");
  ok(kvbm_sequence_extend(s, &one, (size_t)KVBM_MAX_POSITION + 1, NULL, NULL) == KVBM_EPOSITION_LIMIT &&
         kvbm_sequence_total_tokens(s) == 1 && kvbm_sequence_blocks(s) == 1,
     "extending past 2^24 blocks fails and leaves the sequence intact");
  kvbm_sequence_free(s);

  /* allocation failure: state intact, then success once memory returns */
  int budget = 1;
  kvbm_allocator a = {budget_alloc, &budget};
  ok(kvbm_sequence_new(&a, 4, 0, &s) == 0, "new with a counting allocator");
  uint32_t toks[64];
  for (uint32_t i = 0; i < 64; i++) toks[i] = i;
  ok(kvbm_sequence_extend(s, toks, 64, NULL, NULL) == KVBM_ENOMEM && kvbm_sequence_total_tokens(s) == 0,
     "extend under allocation failure returns ENOMEM with no change");
  budget = 1;
  ok(kvbm_sequence_extend(s, toks, 64, NULL, NULL) == KVBM_ENOMEM && kvbm_sequence_total_tokens(s) == 0,
     "a partial allocation success still changes nothing");
  budget = 100;
  ok(kvbm_sequence_extend(s, toks, 64, &lo, &hi) == 16 && hi == 16, "extend succeeds afterwards");
  kvbm_sequence_free(s);

  /* reset: a fresh sequence's content in the old memory; atomic on failure */
  ok(kvbm_sequence_new(NULL, 4, 1, &s) == 0 && kvbm_sequence_extend(s, toks, 30, NULL, NULL) == 7,
     "a sequence of salt 1, 30 tokens");
  ref = from_range(18, 4, 1337);
  ok(kvbm_sequence_reset(s, 1337, toks, 18) == 4 && same_hashes(s, ref) && kvbm_sequence_salt(s) == 1337 &&
         kvbm_sequence_total_tokens(s) == 18 && kvbm_sequence_tokens(s)[17] == 17,
     "reset to 18 tokens, salt 1337: the hashes, tokens and salt of a new sequence");
  kvbm_sequence_free(ref);
  ref = from_range(64, 4, 9);
  ok(kvbm_sequence_reset(s, 9, toks, 64) == 16 && same_hashes(s, ref), "reset to more tokens than it had");
  ok(kvbm_sequence_reset(s, 9, NULL, 0) == 0 && kvbm_sequence_blocks(s) == 0 && kvbm_sequence_total_tokens(s) == 0,
     "reset to nothing");
  kvbm_sequence_free(ref);
  kvbm_sequence_free(s);
  ok(kvbm_sequence_new(NULL, 1, 5, &s) == 0 && kvbm_sequence_extend(s, toks, 3, NULL, NULL) == 3, "new(1), 3 blocks");
  ok(kvbm_sequence_reset(s, 6, &one, (size_t)KVBM_MAX_POSITION + 2) == KVBM_EPOSITION_LIMIT &&
         kvbm_sequence_blocks(s) == 3 && kvbm_sequence_salt(s) == 5 && kvbm_sequence_tokens(s)[2] == 2,
     "reset past 2^24 blocks fails and leaves the sequence intact");
  kvbm_sequence_free(s);
  ref = from_range(8, 4, 3);
  int intact = 1;
  for (int left = 0; left < 3; left++) { /* tokens, hashes, block hashes: each may fail */
    budget = 100;
    intact = intact && kvbm_sequence_new(&a, 4, 3, &s) == 0 && kvbm_sequence_extend(s, toks, 8, NULL, NULL) == 2;
    budget = left;
    intact = intact && kvbm_sequence_reset(s, 4, toks, 64) == KVBM_ENOMEM && same_hashes(s, ref) &&
             kvbm_sequence_salt(s) == 3 && kvbm_sequence_total_tokens(s) == 8 && kvbm_sequence_tokens(s)[7] == 7;
    if (left < 2) kvbm_sequence_free(s);
  }
  ok(intact, "reset under allocation failure (0, 1, 2 allocations left) changes nothing");
  kvbm_sequence_free(ref);
  budget = 100;
  ref = from_range(64, 4, 4);
  ok(kvbm_sequence_reset(s, 4, toks, 64) == 16 && same_hashes(s, ref), "reset succeeds once memory returns");
  kvbm_sequence_free(ref);
  kvbm_sequence_free(s);

  ok(kvbm_strerror(KVBM_EPOSITION_LIMIT)[0] != '\0' &&
         strcmp(kvbm_err_name(KVBM_EBLOCK_SIZE), "invalid_block_size") == 0 &&
         strcmp(kvbm_err_name(12345), "unknown_error") == 0,
     "error names and messages");
  return tap_done();
}
