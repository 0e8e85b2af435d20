/* sequence.c - TokenBlockSequence: tokens cut into blocks, full blocks hashed
 * eagerly into positional lineage hashes, the partial tail never hashed. */
#include "internal.h"

struct kvbm_sequence {
  kvbm_allocator alloc;
  uint32_t *tokens;       /* all tokens, full blocks first then the tail */
  size_t ntokens, tokens_cap;
  kvbm_hash *hashes;      /* one per full block */
  uint64_t *block_hashes; /* one per full block */
  size_t nblocks, hashes_cap, block_hashes_cap;
  size_t block_size;
  uint64_t salt;
};

int kvbm_sequence_new(const kvbm_allocator *alloc, uint64_t block_size, uint64_t salt,
                      kvbm_sequence **out) {
  if (block_size == 0 || block_size > UINT32_MAX) return KVBM_EBLOCK_SIZE;
  kvbm_allocator a = alloc ? *alloc : (kvbm_allocator){NULL, NULL};
  kvbm_sequence *s = kvbm__realloc(&a, NULL, 0, sizeof *s);
  if (!s) return KVBM_ENOMEM;
  memset(s, 0, sizeof *s);
  s->alloc = a;
  s->block_size = (size_t)block_size;
  s->salt = salt;
  *out = s;
  return 0;
}

void kvbm_sequence_free(kvbm_sequence *s) {
  if (!s) return;
  kvbm_allocator a = s->alloc;
  kvbm__free(&a, s->tokens, s->tokens_cap * sizeof *s->tokens);
  kvbm__free(&a, s->hashes, s->hashes_cap * sizeof *s->hashes);
  kvbm__free(&a, s->block_hashes, s->block_hashes_cap * sizeof *s->block_hashes);
  kvbm__free(&a, s, sizeof *s);
}

static int reserve_blocks(kvbm_sequence *s, size_t need) {
  int rc = kvbm__grow(&s->alloc, (void **)&s->hashes, &s->hashes_cap, need, sizeof *s->hashes);
  if (rc) return rc;
  return kvbm__grow(&s->alloc, (void **)&s->block_hashes, &s->block_hashes_cap, need,
                    sizeof *s->block_hashes);
}

int kvbm_sequence_extend(kvbm_sequence *s, const uint32_t *tokens, size_t n, size_t *lo,
                         size_t *hi) {
  size_t first = s->nblocks;
  if (n > SIZE_MAX - s->ntokens) return KVBM_ENOMEM;
  size_t total = s->ntokens + n, nblocks = total / s->block_size;
  if (nblocks > (size_t)KVBM_MAX_POSITION + 1) return KVBM_EPOSITION_LIMIT;
  int rc = kvbm__grow(&s->alloc, (void **)&s->tokens, &s->tokens_cap, total, sizeof *tokens);
  if (rc == 0) rc = reserve_blocks(s, nblocks);
  if (rc) return rc;
  /* Complete the partial block in place, then hash the following full
   * blocks straight from the input, copying each one while it is hot: the
   * tokens are read from memory once. */
  size_t bs = s->block_size, tail = s->ntokens - first * bs, pos = first;
  if (tail && nblocks > first) {
    size_t fill = bs - tail;
    memcpy(s->tokens + s->ntokens, tokens, fill * sizeof *tokens);
    tokens += fill, n -= fill, s->ntokens += fill;
    uint64_t parent = pos ? kvbm_hash_current(s->hashes[pos - 1]) : 0;
    uint32_t *blk = s->tokens + pos * bs;
    kvbm__hash_blocks(blk, blk, bs, s->salt, pos, pos + 1, parent, s->block_hashes, s->hashes);
    pos++;
  }
  if (nblocks > pos) {
    uint64_t parent = pos ? kvbm_hash_current(s->hashes[pos - 1]) : 0;
    kvbm__hash_blocks(tokens, s->tokens + pos * bs, bs, s->salt, pos, nblocks, parent,
                      s->block_hashes, s->hashes);
    size_t done = (nblocks - pos) * bs;
    tokens += done, n -= done, s->ntokens += done;
  }
  if (n) memcpy(s->tokens + s->ntokens, tokens, n * sizeof *tokens); /* the new tail */
  s->ntokens = total;
  s->nblocks = nblocks;
  if (lo) *lo = first;
  if (hi) *hi = nblocks;
  return (int)(nblocks - first > INT32_MAX ? INT32_MAX : nblocks - first);
}

int kvbm_sequence_reset(kvbm_sequence *s, uint64_t salt, const uint32_t *tokens, size_t n) {
  size_t nblocks = n / s->block_size;
  if (nblocks > (size_t)KVBM_MAX_POSITION + 1) return KVBM_EPOSITION_LIMIT;
  /* all the memory first, so that the extend below cannot fail */
  int rc = kvbm__grow(&s->alloc, (void **)&s->tokens, &s->tokens_cap, n, sizeof *tokens);
  if (rc == 0) rc = reserve_blocks(s, nblocks);
  if (rc) return rc;
  s->ntokens = s->nblocks = 0;
  s->salt = salt;
  return kvbm_sequence_extend(s, tokens, n, NULL, NULL);
}

void kvbm_sequence_truncate(kvbm_sequence *s, size_t len) {
  if (len >= s->ntokens) return;
  s->ntokens = len;
  s->nblocks = len / s->block_size; /* the cut block's prefix is the new tail */
}

int kvbm_sequence_unwind(kvbm_sequence *s, size_t n) {
  if (n > s->ntokens) return KVBM_EINSUFFICIENT_TOKENS;
  kvbm_sequence_truncate(s, s->ntokens - n);
  return 0;
}

int kvbm_sequence_pop(kvbm_sequence *s, uint32_t *token) {
  if (s->ntokens == 0) return KVBM_EEMPTY;
  *token = s->tokens[s->ntokens - 1];
  kvbm_sequence_truncate(s, s->ntokens - 1);
  return 0;
}

size_t kvbm_sequence_blocks(const kvbm_sequence *s) { return s->nblocks; }
size_t kvbm_sequence_total_tokens(const kvbm_sequence *s) { return s->ntokens; }
size_t kvbm_sequence_block_size(const kvbm_sequence *s) { return s->block_size; }
uint64_t kvbm_sequence_salt(const kvbm_sequence *s) { return s->salt; }
const uint32_t *kvbm_sequence_tokens(const kvbm_sequence *s) { return s->tokens; }
const kvbm_hash *kvbm_sequence_hashes(const kvbm_sequence *s) { return s->hashes; }
uint64_t kvbm_sequence_block_hash(const kvbm_sequence *s, size_t pos) {
  return s->block_hashes[pos];
}
uint64_t kvbm_sequence_seq_hash(const kvbm_sequence *s, size_t pos) {
  return kvbm_hash_current(s->hashes[pos]);
}
