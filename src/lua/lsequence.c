/* lsequence.c - kvbm.sequence: TokenBlockSequence as a userdata. */
#include "lkvbm.h"

typedef struct {
  kvbm_sequence *s;
} SequenceBox;

static kvbm_sequence *checkseq(lua_State *L, int idx) {
  return ((SequenceBox *)lkvbm_checkudata(L, idx, LKVBM_SEQUENCE_MT))->s;
}

/* Extends and returns lo, hi (0-based, half-open) or nil when no block
 * completed; nil, err on failure, with the sequence unchanged. */
static int extend_result(lua_State *L, kvbm_sequence *s, const uint32_t *toks, size_t n,
                         int single) {
  size_t lo, hi;
  int rc = kvbm_sequence_extend(s, toks, n, &lo, &hi);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  if (lo == hi) {
    luaL_pushfail(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)lo);
  if (single) return 1;
  lua_pushinteger(L, (lua_Integer)hi);
  return 2;
}

uint64_t lkvbm_checkblocksize(lua_State *L, int idx) {
  lua_Integer bs = luaL_checkinteger(L, idx);
  luaL_argcheck(L, bs > 0 && bs <= (lua_Integer)UINT32_MAX, idx, "block size must be in 1..2^32-1");
  return (uint64_t)bs;
}

int lkvbm_pushsequence(lua_State *L, uint64_t block_size, uint64_t salt, const uint32_t *tokens, size_t n) {
  SequenceBox *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->s = NULL;
  lkvbm_setmetatable(L, LKVBM_SEQUENCE_MT);
  int rc = kvbm_sequence_new(lkvbm_allocator(L), block_size, salt, &box->s);
  if (rc == 0) rc = kvbm_sequence_extend(box->s, tokens, n, NULL, NULL);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 1;
}

static int seq_new(lua_State *L) {
  size_t n = 0;
  const uint32_t *toks = NULL;
  uint64_t bs = lkvbm_checkblocksize(L, 2);
  uint64_t salt = lua_isnoneornil(L, 3) ? 0 : lkvbm_checku64(L, 3);
  if (!lua_isnoneornil(L, 1)) toks = lkvbm_checktokens(L, 1, &n);
  return lkvbm_pushsequence(L, bs, salt, toks, n);
}

static int seq_gc(lua_State *L) {
  SequenceBox *box = luaL_checkudata(L, 1, LKVBM_SEQUENCE_MT);
  kvbm_sequence_free(box->s);
  box->s = NULL;
  return 0;
}

static int seq_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_blocks(checkseq(L, 1)));
  return 1;
}

static int seq_total_tokens(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_total_tokens(checkseq(L, 1)));
  return 1;
}

static int seq_block_size(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_block_size(checkseq(L, 1)));
  return 1;
}

static int seq_salt(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_salt(checkseq(L, 1)));
  return 1;
}

/* A 0-based block position; nil when there is no such full block. */
static int optblock(lua_State *L, kvbm_sequence *s, int idx, size_t *pos) {
  lua_Integer p = luaL_checkinteger(L, idx);
  if (p < 0 || (lua_Unsigned)p >= kvbm_sequence_blocks(s)) return 0;
  *pos = (size_t)p;
  return 1;
}

static int seq_hash(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t pos;
  if (!optblock(L, s, 2, &pos)) return luaL_pushfail(L), 1;
  lkvbm_pushhash(L, kvbm_sequence_hashes(s)[pos]);
  return 1;
}

static int seq_block_hash(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t pos;
  if (!optblock(L, s, 2, &pos)) return luaL_pushfail(L), 1;
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_block_hash(s, pos));
  return 1;
}

static int seq_sequence_hash(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t pos;
  if (!optblock(L, s, 2, &pos)) return luaL_pushfail(L), 1;
  lua_pushinteger(L, (lua_Integer)kvbm_sequence_seq_hash(s, pos));
  return 1;
}

static int seq_hashes(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t n = kvbm_sequence_blocks(s);
  const kvbm_hash *h = kvbm_sequence_hashes(s);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lkvbm_pushhash(L, h[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static void pushtokens(lua_State *L, const uint32_t *t, size_t n) {
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushinteger(L, t[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

static int seq_tokens(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  pushtokens(L, kvbm_sequence_tokens(s), kvbm_sequence_total_tokens(s));
  return 1;
}

static int seq_partial(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t full = kvbm_sequence_blocks(s) * kvbm_sequence_block_size(s);
  pushtokens(L, kvbm_sequence_tokens(s) + full, kvbm_sequence_total_tokens(s) - full);
  return 1;
}

static int seq_append(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  lua_Integer t = luaL_checkinteger(L, 2);
  luaL_argcheck(L, t >= 0 && t <= (lua_Integer)UINT32_MAX, 2, "token must be in 0..2^32-1");
  uint32_t tok = (uint32_t)t;
  return extend_result(L, s, &tok, 1, 1);
}

static int seq_extend(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t n;
  const uint32_t *toks = lkvbm_checktokens(L, 2, &n);
  return extend_result(L, s, toks, n, 0);
}

static size_t checkcount(lua_State *L, int idx) {
  lua_Integer n = luaL_checkinteger(L, idx);
  luaL_argcheck(L, n >= 0, idx, "must be non-negative");
  return (size_t)n;
}

static int seq_truncate(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  kvbm_sequence_truncate(s, checkcount(L, 2));
  lua_settop(L, 1);
  return 1;
}

static int seq_unwind(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t n = checkcount(L, 2);
  int rc = kvbm_sequence_unwind(s, n);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "requested");
    lua_pushinteger(L, (lua_Integer)kvbm_sequence_total_tokens(s));
    lua_setfield(L, -2, "available");
    return 2;
  }
  lua_settop(L, 1);
  return 1;
}

static int seq_pop(lua_State *L) {
  uint32_t tok;
  if (kvbm_sequence_pop(checkseq(L, 1), &tok) < 0) return luaL_pushfail(L), 1;
  lua_pushinteger(L, tok);
  return 1;
}

static int seq_tostring(lua_State *L) {
  kvbm_sequence *s = checkseq(L, 1);
  size_t bs = kvbm_sequence_block_size(s), nb = kvbm_sequence_blocks(s);
  lua_pushfstring(L, "kvbm.Sequence(%d blocks of %d, %d tokens)", (int)nb, (int)bs,
                  (int)kvbm_sequence_total_tokens(s));
  return 1;
}

void lkvbm_open_sequence(lua_State *L) {
  static const luaL_Reg meta[] = {
      {"__gc", seq_gc}, {"__len", seq_len}, {"__tostring", seq_tostring}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"total_tokens", seq_total_tokens},
      {"block_size", seq_block_size},
      {"salt", seq_salt},
      {"blocks", seq_len},
      {"hash", seq_hash},
      {"hashes", seq_hashes},
      {"block_hash", seq_block_hash},
      {"sequence_hash", seq_sequence_hash},
      {"tokens", seq_tokens},
      {"partial", seq_partial},
      {"append", seq_append},
      {"extend", seq_extend},
      {"truncate", seq_truncate},
      {"unwind", seq_unwind},
      {"pop", seq_pop},
      {NULL, NULL},
  };
  lkvbm_newclass(L, LKVBM_SEQUENCE_MT, meta, methods);
  lua_pushcfunction(L, seq_new);
  lua_setfield(L, -2, "sequence");
}

kvbm_sequence *lkvbm_tosequence(lua_State *L, int idx) {
  SequenceBox *box = lkvbm_testudata(L, idx, LKVBM_SEQUENCE_MT);
  return box ? box->s : NULL;
}
