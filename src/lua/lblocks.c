/* lblocks.c - block guards: kvbm.MutableBlock, kvbm.CompleteBlock,
 * kvbm.ImmutableBlock, kvbm.WeakBlock. Each guard is one reference; release
 * is idempotent, and __close and __gc release too, with the crate's drop
 * semantics. A live guard keeps its manager alive (lkvbm_guard_on). */
#include <stddef.h>
#include <string.h>

#include "lkvbm.h"

BlockBox *lkvbm_pushblock(lua_State *L, ManagerBox *mb, const char *mt, kvbm_block b) {
  /* "kvbm.WeakBlock": the only guard with a weak reference (the others are
   * the most numerous objects of a per-block host: keep them small) */
  BlockBox *bb = lua_newuserdatauv(L, mt[5] == 'W' ? sizeof *bb : offsetof(BlockBox, w), 0);
  bb->mb = mb;
  bb->b = b;
  bb->live = 0;
  lkvbm_setmetatable(L, mt);
  return bb;
}

/* The first live guard anchors the manager (found through its box address:
 * it is alive, since the caller holds it or one of its sets); the last one
 * to go lets it be collected again. */
void lkvbm_manager_pin(lua_State *L, ManagerBox *mb) {
  if (mb->guards == 0) {
    if (lkvbm_getbox(L, mb) != LUA_TUSERDATA) luaL_error(L, "kvbm: internal error: a guard of an unknown manager");
    mb->anchor = luaL_ref(L, LUA_REGISTRYINDEX); /* may raise: counted only once it is made */
  }
  mb->guards++;
}

void lkvbm_guard_on(lua_State *L, BlockBox *bb) {
  lkvbm_manager_pin(L, bb->mb); /* pinned or with a live guard: allocates nothing */
  bb->live = 1;
}

/* One live guard fewer (its live flag already cleared); last in a function
 * that still uses mb: the manager may be collected from here on. */
static void drop_guard(lua_State *L, ManagerBox *mb) {
  if (--mb->guards == 0) luaL_unref(L, LUA_REGISTRYINDEX, mb->anchor);
}

void lkvbm_guard_off(lua_State *L, BlockBox *bb) {
  bb->live = 0;
  drop_guard(L, bb->mb);
}

void lkvbm_manager_unpin(lua_State *L, ManagerBox *mb) { drop_guard(L, mb); }

/* The manager box of the live guard bb (NULL when the manager is closed). */
static ManagerBox *owner(BlockBox *bb) { return bb->mb->m ? bb->mb : NULL; }

/* A live guard of type mt whose manager is open and not busy. */
static BlockBox *checkguard(lua_State *L, int idx, const char *mt, ManagerBox **mbp) {
  BlockBox *bb = lkvbm_checkudata(L, idx, mt);
  if (!bb->live) luaL_error(L, "attempt to use a released or consumed %s", mt);
  ManagerBox *mb = owner(bb);
  if (!mb) luaL_error(L, "attempt to use a block of a closed " LKVBM_MANAGER_MT);
  lkvbm_enter(L, mb->reg);
  *mbp = mb;
  return bb;
}

/* one address for the weak guards' name: release() tells them apart without strcmp */
static const char weak_mt[] = LKVBM_WEAK_MT;

/* A weak block holds its registration in the registry, not in the manager:
 * once the manager is closed, releasing it must still let go of the hash. */
static int release_closed_weak(lua_State *L, BlockBox *bb, int from_gc) {
  RegistryBox *rb = bb->mb->reg;
  if (rb->r && lkvbm_defer_if_busy(L, rb, 1, from_gc)) return 0;
  bb->live = 0;
  if (rb->r) { /* NULL: the registry was finalized in this same cycle */
    (void)kvbm_registry_unacquire(rb->r, bb->w.hash); /* held: bb was live */
    lkvbm_flush_removed(L, rb);
  }
  drop_guard(L, bb->mb);
  return 0;
}

/* release for every guard type: idempotent; quiet once the manager is gone.
 * Collected while policy code runs, a guard asks to be finalized again. */
static int release(lua_State *L, const char *mt, int from_gc) {
  BlockBox *bb = from_gc ? lua_touserdata(L, 1) : lkvbm_checkudata(L, 1, mt);
  if (!bb->live) return 0; /* released or consumed already: most finalizers end here */
  ManagerBox *mb = owner(bb);
  int weak = mt == weak_mt;
  if (!mb && weak) return release_closed_weak(L, bb, from_gc);
  if (!mb) {
    lkvbm_guard_off(L, bb);
    return 0;
  }
  if (lkvbm_defer_if_busy(L, mb->reg, 1, from_gc)) return 0;
  bb->live = 0;
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  if (weak)
    (void)kvbm_weak_release(mb->m, &bb->w); /* held: bb was live */
  else
    (void)kvbm_release(mb->m, bb->b);
  lkvbm_core_end(L, mb, &cc);
  drop_guard(L, mb);
  return 0;
}

#define RELEASERS(kind, mt)                                               \
  static int kind##_release(lua_State *L) { return release(L, mt, 0); } \
  static int kind##_gc(lua_State *L) { return release(L, mt, 1); }
RELEASERS(mutable, LKVBM_MUTABLE_MT)
RELEASERS(complete, LKVBM_COMPLETE_MT)
RELEASERS(immutable, LKVBM_IMMUTABLE_MT)
RELEASERS(weak, weak_mt)

static int block_id(lua_State *L, const char *mt) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, mt, &mb);
  lua_pushinteger(L, kvbm_block_id(bb->b));
  return 1;
}

static int mutable_id(lua_State *L) { return block_id(L, LKVBM_MUTABLE_MT); }
static int complete_id(lua_State *L) { return block_id(L, LKVBM_COMPLETE_MT); }
static int immutable_id(lua_State *L) { return block_id(L, LKVBM_IMMUTABLE_MT); }

static int mutable_block_size(lua_State *L) {
  ManagerBox *mb;
  checkguard(L, 1, LKVBM_MUTABLE_MT, &mb);
  lua_pushinteger(L, (lua_Integer)kvbm_manager_block_size(mb->m));
  return 1;
}

/* Mutable -> Complete. On a size mismatch: nil, err with err.block = the
 * (still live) mutable block, as the crate returns it inside the error. */
static int stage_with(lua_State *L, ManagerBox *mb, BlockBox *bb, kvbm_hash h, size_t block_size) {
  BlockBox *cb = lkvbm_pushblock(L, mb, LKVBM_COMPLETE_MT, KVBM_NO_BLOCK);
  kvbm_block out;
  int rc = kvbm_stage(mb->m, bb->b, h, block_size, &out);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    if (rc == KVBM_EBLOCK_SIZE_MISMATCH) {
      lua_pushfstring(L, "Block size mismatch: expected %d tokens, got %d",
                      (int)kvbm_manager_block_size(mb->m), (int)block_size);
      lua_setfield(L, -2, "message");
      lua_pushinteger(L, (lua_Integer)kvbm_manager_block_size(mb->m));
      lua_setfield(L, -2, "expected");
      lua_pushinteger(L, (lua_Integer)block_size);
      lua_setfield(L, -2, "actual");
    }
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "block");
    return 2;
  }
  cb->b = out;
  lkvbm_guard_on(L, cb);
  lkvbm_guard_off(L, bb);
  return 1;
}

static int mutable_stage(lua_State *L) {
  kvbm_hash h = lkvbm_checkhash(L, 2);
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_MUTABLE_MT, &mb);
  /* omitted: the manager's size; a negative size is a caller's bug, not a
   * mismatch to report (and must not mean "omitted") */
  lua_Integer bs = lua_isnoneornil(L, 3) ? (lua_Integer)kvbm_manager_block_size(mb->m)
                                         : luaL_checkinteger(L, 3);
  luaL_argcheck(L, bs >= 0, 3, "block size must be non-negative");
  lua_settop(L, 1);
  return stage_with(L, mb, bb, h, (size_t)bs);
}

/* mb:complete(seq, pos): stage with the sequence's hash at pos, checking
 * the sequence's block size against the manager's. */
static int mutable_complete(lua_State *L) {
  lua_settop(L, 3);
  luaL_checkudata(L, 2, LKVBM_SEQUENCE_MT);
  lua_getfield(L, 2, "hash");
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_call(L, 2, 1);
  if (lua_isnil(L, -1)) luaL_argerror(L, 3, "no full block at this position");
  kvbm_hash h = lkvbm_checkhash(L, -1);
  lua_getfield(L, 2, "block_size");
  lua_pushvalue(L, 2);
  lua_call(L, 1, 1);
  size_t bs = (size_t)lua_tointeger(L, -1);
  lua_settop(L, 1);
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_MUTABLE_MT, &mb);
  return stage_with(L, mb, bb, h, bs);
}

static int complete_hash(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_COMPLETE_MT, &mb);
  kvbm_hash h;
  (void)kvbm_complete_hash(mb->m, bb->b, &h);
  lkvbm_pushhash(L, h);
  return 1;
}

static int complete_reset(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_COMPLETE_MT, &mb);
  BlockBox *out = lkvbm_pushblock(L, mb, LKVBM_MUTABLE_MT, KVBM_NO_BLOCK);
  int rc = kvbm_complete_reset(mb->m, bb->b, &out->b);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lkvbm_guard_on(L, out);
  lkvbm_guard_off(L, bb);
  return 1;
}

static int immutable_hash(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  kvbm_hash h;
  (void)kvbm_block_hash_of(mb->m, bb->b, &h);
  lkvbm_pushhash(L, h);
  return 1;
}

static int immutable_use_count(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  lua_pushinteger(L, kvbm_block_use_count(mb->m, bb->b));
  return 1;
}

static int immutable_clone(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  BlockBox *copy = lkvbm_pushblock(L, mb, LKVBM_IMMUTABLE_MT, bb->b);
  if (kvbm_block_retain(mb->m, bb->b) == 0) lkvbm_guard_on(L, copy);
  return 1;
}

static int immutable_set_evict(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  luaL_checktype(L, 2, LUA_TBOOLEAN);
  (void)kvbm_block_set_reset_on_release(mb->m, bb->b, lua_toboolean(L, 2));
  lua_settop(L, 1);
  return 1;
}

static int immutable_manager(lua_State *L) {
  ManagerBox *mb;
  checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  lua_rawgeti(L, LUA_REGISTRYINDEX, mb->anchor); /* live guards: anchored */
  return 1;
}

static int immutable_downgrade(lua_State *L) {
  ManagerBox *mb;
  BlockBox *bb = checkguard(L, 1, LKVBM_IMMUTABLE_MT, &mb);
  BlockBox *wb = lkvbm_pushblock(L, mb, LKVBM_WEAK_MT, bb->b);
  int rc = kvbm_downgrade(mb->m, bb->b, &wb->w);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lkvbm_guard_on(L, wb);
  return 1;
}

static int weak_hash(lua_State *L) {
  BlockBox *wb = luaL_checkudata(L, 1, LKVBM_WEAK_MT);
  if (!wb->live) luaL_error(L, "attempt to use a released " LKVBM_WEAK_MT);
  lkvbm_pushhash(L, wb->w.hash);
  return 1;
}

static int weak_upgrade(lua_State *L) {
  ManagerBox *mb;
  BlockBox *wb = checkguard(L, 1, LKVBM_WEAK_MT, &mb);
  BlockBox *ib = lkvbm_pushblock(L, mb, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_weak_upgrade(mb->m, &wb->w, &ib->b);
  lkvbm_core_end(L, mb, &cc);
  if (rc <= 0) return luaL_pushfail(L), 1;
  lkvbm_guard_on(L, ib);
  return 1;
}

static int guard_tostring(lua_State *L) {
  BlockBox *bb = lua_touserdata(L, 1);
  luaL_getmetafield(L, 1, "__name");
  const char *name = lua_tostring(L, -1);
  ManagerBox *mb = bb->live ? owner(bb) : NULL;
  if (!mb) {
    lua_pushfstring(L, "%s (released)", name);
    return 1;
  }
  kvbm_hash h;
  char text[KVBM_HASH_STRLEN] = "";
  int has_hash = name[5] == 'W' ? (h = bb->w.hash, 1) : kvbm_block_hash_of(mb->m, bb->b, &h) == 0;
  if (has_hash) (void)kvbm_hash_format(h, text, sizeof text);
  lua_pushfstring(L, "%s(id %d%s%s)", name, (int)kvbm_block_id(bb->b), has_hash ? ", " : "", text);
  return 1;
}

static void guard_class(lua_State *L, const char *mt, lua_CFunction rel, lua_CFunction gc,
                        const luaL_Reg *methods) {
  const luaL_Reg meta[] = {{"__gc", gc}, {"__close", rel}, {"__tostring", guard_tostring}, {NULL, NULL}};
  lkvbm_newclass(L, mt, meta, methods);
  luaL_getmetatable(L, mt);
  lua_getfield(L, -1, "__index");
  lua_pushcfunction(L, rel);
  lua_setfield(L, -2, "release");
  lua_pop(L, 2);
}

void lkvbm_open_blocks(lua_State *L) {
  static const luaL_Reg mutable_methods[] = {{"id", mutable_id},
                                             {"block_size", mutable_block_size},
                                             {"stage", mutable_stage},
                                             {"complete", mutable_complete},
                                             {NULL, NULL}};
  static const luaL_Reg complete_methods[] = {
      {"id", complete_id}, {"hash", complete_hash}, {"reset", complete_reset}, {NULL, NULL}};
  static const luaL_Reg immutable_methods[] = {{"id", immutable_id},
                                               {"hash", immutable_hash},
                                               {"use_count", immutable_use_count},
                                               {"clone", immutable_clone},
                                               {"downgrade", immutable_downgrade},
                                               {"set_evict_on_release", immutable_set_evict},
                                               {"manager", immutable_manager},
                                               {NULL, NULL}};
  static const luaL_Reg weak_methods[] = {{"hash", weak_hash}, {"upgrade", weak_upgrade}, {NULL, NULL}};
  guard_class(L, LKVBM_MUTABLE_MT, mutable_release, mutable_gc, mutable_methods);
  guard_class(L, LKVBM_COMPLETE_MT, complete_release, complete_gc, complete_methods);
  guard_class(L, LKVBM_IMMUTABLE_MT, immutable_release, immutable_gc, immutable_methods);
  guard_class(L, LKVBM_WEAK_MT, weak_release, weak_gc, weak_methods);
}
