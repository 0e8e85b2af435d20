/* lblockset.c - kvbm.BlockSet: many blocks behind one guard, for hosts and
 * scripts that move whole requests at a time. One Lua object per request
 * instead of one per block keeps Lua-driven replays close to the C cost.
 *
 *   local held = m:match_set(seq)            -- immutable blocks (prefix)
 *   local some = m:match_set(hashes, true)   -- every hash found, misses left out
 *   local new = assert(m:allocate_set(n))    -- mutable blocks
 *   held:append(m:register_set(new, seq, #held))  -- stage with seq's hashes, register
 *   held:release()                           -- in position order
 */
#include <string.h>

#include "lkvbm.h"

enum { SET_MUTABLE, SET_IMMUTABLE };

/* The blocks live in the userdata itself (one allocation per set, visible
 * to the collector) until an append outgrows them; then on the binding's
 * allocator. */
typedef struct {
  kvbm_block *b; /* inline, or on alloc once grown */
  size_t n, cap;
  int kind;
  const kvbm_allocator *alloc;
  kvbm_block inline_blocks[];
} SetBox;

static ManagerBox *set_owner(lua_State *L, int idx) {
  lua_getiuservalue(L, idx, 1);
  ManagerBox *mb = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return mb && mb->m ? mb : NULL;
}

/* A set with room for n blocks (raises, as Lua does, when memory runs out). */
static SetBox *newset(lua_State *L, int midx, int kind, size_t n) {
  midx = lua_absindex(L, midx);
  if (n > (SIZE_MAX - sizeof(SetBox)) / sizeof(kvbm_block)) luaL_error(L, "kvbm: block set too large");
  SetBox *sb = lua_newuserdatauv(L, sizeof *sb + n * sizeof(kvbm_block), 1);
  sb->b = sb->inline_blocks;
  sb->n = 0;
  sb->cap = n;
  sb->kind = kind;
  sb->alloc = lkvbm_allocator(L);
  lkvbm_setmetatable(L, LKVBM_SET_MT);
  lua_pushvalue(L, midx);
  lua_setiuservalue(L, -2, 1);
  return sb;
}

/* Room for need blocks; 0 or KVBM_ENOMEM (the set untouched). */
static int reserve(SetBox *sb, size_t need) {
  if (need <= sb->cap) return 0;
  if (sb->b != sb->inline_blocks) return lkvbm_grow(sb->alloc, (void **)&sb->b, &sb->cap, need, sizeof *sb->b);
  kvbm_block *heap = NULL;
  size_t cap = 0;
  if (lkvbm_grow(sb->alloc, (void **)&heap, &cap, need, sizeof *heap)) return KVBM_ENOMEM;
  memcpy(heap, sb->b, sb->n * sizeof *heap);
  sb->b = heap;
  sb->cap = cap;
  return 0;
}

static SetBox *checkset(lua_State *L, int idx, ManagerBox **mbp) {
  SetBox *sb = lkvbm_checkudata(L, idx, LKVBM_SET_MT);
  ManagerBox *mb = set_owner(L, idx);
  if (!mb) luaL_error(L, "attempt to use a block set of a closed " LKVBM_MANAGER_MT);
  lkvbm_enter(L, mb->reg);
  if (mbp) *mbp = mb;
  return sb;
}

/* The hashes of a kvbm.Sequence (no copy) or of a table of 16-byte strings. */
static const kvbm_hash *hashes_from(lua_State *L, int idx, size_t *n) {
  kvbm_sequence *s = lkvbm_tosequence(L, idx);
  if (s) {
    *n = kvbm_sequence_blocks(s);
    return kvbm_sequence_hashes(s);
  }
  luaL_argexpected(L, lua_istable(L, idx), idx, "kvbm.Sequence or table of hashes");
  *n = lua_rawlen(L, idx);
  kvbm_hash *hs = lua_newuserdatauv(L, (*n ? *n : 1) * sizeof *hs, 0);
  for (size_t i = 0; i < *n; i++) {
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    hs[i] = lkvbm_checkhash(L, -1);
    lua_pop(L, 1);
  }
  return hs;
}

static int m_allocate_set(lua_State *L) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  lkvbm_enter_evict(L, mb);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "block count must be non-negative");
  if ((lua_Unsigned)n > kvbm_manager_available(mb->m)) goto nospace;
  SetBox *sb = newset(L, 1, SET_MUTABLE, (size_t)n);
  lkvbm_policy_prepare(mb, (size_t)n);
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_allocate(mb->m, (size_t)n, sb->b, NULL);
  lkvbm_core_end(L, mb, &cc);
  if (rc < 0) goto nospace;
  sb->n = (size_t)n;
  return 1;
nospace:
  lkvbm_pusherror(L, KVBM_ENOSPC);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "requested");
  lua_pushinteger(L, (lua_Integer)kvbm_manager_available(mb->m));
  lua_setfield(L, -2, "available");
  return 2;
}

static int m_match_set(lua_State *L) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  lkvbm_enter(L, mb->reg);
  size_t n;
  const kvbm_hash *hs = hashes_from(L, 2, &n);
  int scattered = lua_toboolean(L, 3);
  SetBox *sb = newset(L, 1, SET_IMMUTABLE, n); /* room to append the rest of the request */
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  if (scattered) { /* every hash found, in order; misses are left out */
    size_t k = 0;
    (void)kvbm_match_scattered(mb->m, hs, n, sb->b);
    for (size_t i = 0; i < n; i++)
      if (sb->b[i] != KVBM_NO_BLOCK) sb->b[k++] = sb->b[i];
    sb->n = k;
  } else {
    sb->n = kvbm_match(mb->m, hs, n, sb->b);
  }
  lkvbm_core_end(L, mb, &cc);
  return 1;
}

/* register_set(mutables, hashes, first): stages block i with hash
 * first + i (0-based) and registers them all; the mutable set is consumed.
 * Everything is checked first, so a failure changes nothing. */
static int m_register_set(lua_State *L) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  lkvbm_enter(L, mb->reg);
  SetBox *in = lkvbm_checkudata(L, 2, LKVBM_SET_MT);
  luaL_argcheck(L, set_owner(L, 2) == mb, 2, "block set of another manager");
  luaL_argcheck(L, in->kind == SET_MUTABLE, 2, "expected a set of mutable blocks");
  lua_Integer first = luaL_optinteger(L, 4, 0); /* before hashes_from pushes its copy */
  size_t nh;
  const kvbm_hash *hs = hashes_from(L, 3, &nh);
  luaL_argcheck(L, first >= 0 && (size_t)first + in->n <= nh, 4, "not enough hashes for the set");
  for (size_t i = 0; i < in->n; i++) {
    if (kvbm_block_state(mb->m, in->b[i]) != KVBM_STATE_MUTABLE)
      luaL_error(L, "block set holds a block that is no longer mutable");
    if (!kvbm_hash_valid(hs[first + i])) luaL_error(L, "malformed sequence hash");
  }
  SetBox *out = newset(L, 1, SET_IMMUTABLE, in->n); /* may raise: nothing staged yet */
  /* staged in place: the mutable set is consumed (or given its blocks back) */
  for (size_t i = 0; i < in->n; i++) /* cannot fail: checked above */
    if (kvbm_stage(mb->m, in->b[i], hs[first + i], kvbm_manager_block_size(mb->m), &in->b[i]) < 0)
      in->b[i] = KVBM_NO_BLOCK;
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_register_all(mb->m, in->b, in->n, out->b);
  lkvbm_core_end(L, mb, &cc);
  if (rc < 0) { /* only out of memory: give the blocks back as mutable */
    for (size_t i = 0; i < in->n; i++)
      if (kvbm_complete_reset(mb->m, in->b[i], &in->b[i]) < 0) in->b[i] = KVBM_NO_BLOCK;
    return lkvbm_pusherror(L, rc);
  }
  out->n = in->n;
  in->n = 0;
  return 1;
}

static int set_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)((SetBox *)lkvbm_checkudata(L, 1, LKVBM_SET_MT))->n);
  return 1;
}

static size_t checkindex(lua_State *L, SetBox *sb, int idx) {
  lua_Integer i = luaL_checkinteger(L, idx);
  luaL_argcheck(L, i >= 1 && (lua_Unsigned)i <= sb->n, idx, "index out of range");
  return (size_t)i - 1;
}

static int set_id(lua_State *L) {
  SetBox *sb = checkset(L, 1, NULL);
  lua_pushinteger(L, kvbm_block_id(sb->b[checkindex(L, sb, 2)]));
  return 1;
}

static int set_ids(lua_State *L) {
  SetBox *sb = checkset(L, 1, NULL);
  lua_createtable(L, (int)sb->n, 0);
  for (size_t i = 0; i < sb->n; i++) {
    lua_pushinteger(L, kvbm_block_id(sb->b[i]));
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int set_hash(lua_State *L) {
  ManagerBox *mb;
  SetBox *sb = checkset(L, 1, &mb);
  kvbm_hash h;
  if (kvbm_block_hash_of(mb->m, sb->b[checkindex(L, sb, 2)], &h) < 0) return luaL_pushfail(L), 1;
  lkvbm_pushhash(L, h);
  return 1;
}

/* set:block(i) -> an ImmutableBlock guard of its own (one more reference) */
static int set_block(lua_State *L) {
  ManagerBox *mb;
  SetBox *sb = checkset(L, 1, &mb);
  luaL_argcheck(L, sb->kind == SET_IMMUTABLE, 1, "expected a set of immutable blocks");
  kvbm_block b = sb->b[checkindex(L, sb, 2)];
  BlockBox *bb = lkvbm_pushblock(L, mb, LKVBM_IMMUTABLE_MT, b);
  lkvbm_manager_pin(L, mb);
  if (kvbm_block_retain(mb->m, b) == 0) lkvbm_guard_on(L, bb);
  lkvbm_manager_unpin(L, mb);
  return 1;
}

/* set:append(other): moves other's blocks to the end of set. */
static int set_append(lua_State *L) {
  ManagerBox *mb;
  SetBox *sb = checkset(L, 1, &mb);
  SetBox *other = lkvbm_checkudata(L, 2, LKVBM_SET_MT);
  luaL_argcheck(L, set_owner(L, 2) == mb && other->kind == sb->kind && other != sb, 2,
                "a different set of the same kind and manager");
  if (reserve(sb, sb->n + other->n)) return lkvbm_pusherror(L, KVBM_ENOMEM); /* both sets as they were */
  memcpy(sb->b + sb->n, other->b, other->n * sizeof *sb->b);
  sb->n += other->n;
  other->n = 0;
  lua_settop(L, 1);
  return 1;
}

/* Releases every block of the set, in position order or (reverse) tail
 * first, as an engine frees a request so that its tail is evicted first.
 * With collect, pushes the hashes of the blocks that went inactive (their
 * last user let go) and their 1-based indices in the set; returns how many
 * values it pushed. */
static int release_set(lua_State *L, int from_gc, int reverse, int collect) {
  SetBox *sb = lkvbm_checkudata(L, 1, LKVBM_SET_MT);
  ManagerBox *mb = set_owner(L, 1);
  int hidx = 0, iidx = 0;
  if (collect) {
    lua_newtable(L);
    hidx = lua_gettop(L);
    lua_newtable(L);
    iidx = lua_gettop(L);
  }
  if (mb && sb->n) {
    if (lkvbm_defer_if_busy(L, mb->reg, 1, from_gc)) return 0;
    lua_Integer k = 0;
    CoreCall cc;
    lkvbm_core_begin(L, mb, &cc);
    for (size_t j = 0; j < sb->n; j++) {
      size_t i = reverse ? sb->n - 1 - j : j;
      kvbm_hash h;
      /* the last reference to a primary goes to the inactive cache */
      int last = collect && kvbm_block_use_count(mb->m, sb->b[i]) == 1 &&
                 kvbm_block_state(mb->m, sb->b[i]) == KVBM_STATE_PRIMARY &&
                 kvbm_block_hash_of(mb->m, sb->b[i], &h) == 0;
      (void)kvbm_release(mb->m, sb->b[i]);
      if (last) {
        k++;
        lkvbm_pushhash(L, h);
        lua_rawseti(L, hidx, k);
        lua_pushinteger(L, (lua_Integer)i + 1);
        lua_rawseti(L, iidx, k);
      }
    }
    lkvbm_core_end(L, mb, &cc);
  }
  sb->n = 0;
  if (from_gc && sb->b != sb->inline_blocks) {
    lkvbm_free(sb->alloc, sb->b, sb->cap * sizeof *sb->b);
    sb->b = sb->inline_blocks;
    sb->cap = 0;
  }
  return collect ? 2 : 0;
}

/* set:release([order [, collect]]): order "forward" (default) or "reverse". */
static int set_release(lua_State *L) {
  static const char *const orders[] = {"forward", "reverse", NULL};
  int reverse = luaL_checkoption(L, 2, "forward", orders);
  return release_set(L, 0, reverse, lua_toboolean(L, 3));
}
static int set_close(lua_State *L) { return release_set(L, 0, 0, 0); }
static int set_gc(lua_State *L) { return release_set(L, 1, 0, 0); }

static int set_tostring(lua_State *L) {
  SetBox *sb = luaL_checkudata(L, 1, LKVBM_SET_MT);
  lua_pushfstring(L, "kvbm.BlockSet(%d %s blocks)", (int)sb->n,
                  sb->kind == SET_MUTABLE ? "mutable" : "immutable");
  return 1;
}

void lkvbm_open_blockset(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", set_gc},
                                  {"__close", set_close},
                                  {"__len", set_len},
                                  {"__tostring", set_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg methods[] = {{"id", set_id},         {"ids", set_ids},
                                     {"hash", set_hash},     {"block", set_block},
                                     {"append", set_append}, {"release", set_release},
                                     {NULL, NULL}};
  static const luaL_Reg manager_methods[] = {{"allocate_set", m_allocate_set},
                                             {"match_set", m_match_set},
                                             {"register_set", m_register_set},
                                             {NULL, NULL}};
  lkvbm_newclass(L, LKVBM_SET_MT, meta, methods);
  luaL_getmetatable(L, LKVBM_MANAGER_MT);
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, manager_methods, 0);
  lua_pop(L, 2);
}
