/* lblocks.c - block guards: kvbm.MutableBlock, kvbm.CompleteBlock,
 * kvbm.ImmutableBlock, kvbm.WeakBlock. Each guard is one reference; release
 * is idempotent, and __close and __gc release too, with the crate's drop
 * semantics. A live guard keeps its manager alive (lkvbm_guard_on). */
#include <stddef.h>
#include <string.h>

#include "lkvbm.h"

/* The guard classes. The per-block entry points have their metatables as
 * upvalues (lkvbm_push_guard_upvalues): the live classes first, then the
 * classes of released or consumed guards (no __gc: the collector calls no
 * finalizer for them), then a marker telling such a function from others
 * (which find the metatables in the registry). */
enum { GUARD_MUTABLE, GUARD_COMPLETE, GUARD_IMMUTABLE, GUARD_WEAK, GUARD_KINDS };
static const char *const guard_names[GUARD_KINDS] = {LKVBM_MUTABLE_MT, LKVBM_COMPLETE_MT, LKVBM_IMMUTABLE_MT,
                                                     LKVBM_WEAK_MT};
static const char retired_keys[GUARD_KINDS]; /* registry keys (addresses) of the retired classes */
static const char upvalues_marker;
#define UV_LIVE(kind) lua_upvalueindex(1 + (kind))
#define UV_RETIRED(kind) lua_upvalueindex(1 + GUARD_KINDS + (kind))
#define UV_MARKER lua_upvalueindex(1 + 2 * GUARD_KINDS)

/* The kind of a guard class name (its first letter after "kvbm."). */
static int kind_of(const char *mt) {
  switch (mt[5]) {
  case 'M': return GUARD_MUTABLE;
  case 'C': return GUARD_COMPLETE;
  case 'I': return GUARD_IMMUTABLE;
  default: return GUARD_WEAK;
  }
}

void lkvbm_push_guard_upvalues(lua_State *L) {
  for (int k = 0; k < GUARD_KINDS; k++) luaL_newmetatable(L, guard_names[k]); /* filled by guard_class */
  for (int k = 0; k < GUARD_KINDS; k++)
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &retired_keys[k]) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, -1);
      lua_rawsetp(L, LUA_REGISTRYINDEX, &retired_keys[k]);
    }
  lua_pushlightuserdata(L, (void *)&upvalues_marker);
}

static int has_upvalues(lua_State *L) { return lua_touserdata(L, UV_MARKER) == &upvalues_marker; }

/* Pushes the metatable of a live (or a retired) guard of this kind. */
static void push_class(lua_State *L, int kind, int retired) {
  if (has_upvalues(L))
    lua_pushvalue(L, retired ? UV_RETIRED(kind) : UV_LIVE(kind));
  else if (retired)
    lua_rawgetp(L, LUA_REGISTRYINDEX, &retired_keys[kind]);
  else
    luaL_getmetatable(L, guard_names[kind]);
}

/* The guard of this kind at idx, live or not (its live flag says), or NULL.
 * A live guard of a function with the upvalues needs one comparison. */
static BlockBox *testguard(lua_State *L, int idx, int kind) {
  BlockBox *bb = lua_touserdata(L, idx);
  if (!bb || !lua_getmetatable(L, idx)) return NULL;
  int same = lua_rawequal(L, -1, UV_LIVE(kind));
  if (!same && has_upvalues(L)) {
    same = lua_rawequal(L, -1, UV_RETIRED(kind));
  } else if (!same) {
    push_class(L, kind, 0);
    push_class(L, kind, 1);
    same = lua_rawequal(L, -1, -3) || lua_rawequal(L, -2, -3);
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
  return same ? bb : NULL;
}

BlockBox *lkvbm_testguard(lua_State *L, int idx, const char *mt) { return testguard(L, idx, kind_of(mt)); }

static BlockBox *checkkind(lua_State *L, int idx, int kind) {
  BlockBox *bb = testguard(L, idx, kind);
  if (!bb) luaL_typeerror(L, idx, guard_names[kind]);
  return bb;
}

static void retire(lua_State *L, int idx, int kind) { /* idx: absolute */
  lua_pushvalue(L, UV_RETIRED(kind)); /* the caller has the upvalues */
  lua_setmetatable(L, idx);
}

void lkvbm_guard_retire(lua_State *L, int idx, const char *mt) { retire(L, lua_absindex(L, idx), kind_of(mt)); }

static BlockBox *newguard(lua_State *L, ManagerBox *mb, int kind, kvbm_block b, int upvalues) {
  /* the weak guard is the only one with a weak reference (the others are
   * the most numerous objects of a per-block host: keep them small) */
  BlockBox *bb = lua_newuserdatauv(L, kind == GUARD_WEAK ? sizeof *bb : offsetof(BlockBox, w), 0);
  bb->mb = mb;
  bb->b = b;
  bb->live = 0;
  if (upvalues)
    lua_pushvalue(L, UV_LIVE(kind));
  else
    push_class(L, kind, 0);
  lua_setmetatable(L, -2);
  return bb;
}

BlockBox *lkvbm_pushblock(lua_State *L, ManagerBox *mb, const char *mt, kvbm_block b) {
  return newguard(L, mb, kind_of(mt), b, 0);
}

BlockBox *lkvbm_newguard(lua_State *L, ManagerBox *mb, const char *mt, kvbm_block b) {
  return newguard(L, mb, kind_of(mt), b, 1);
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
  BlockBox *bb = checkkind(L, idx, kind_of(mt));
  if (!bb->live) luaL_error(L, "attempt to use a released or consumed %s", mt);
  ManagerBox *mb = owner(bb);
  if (!mb) luaL_error(L, "attempt to use a block of a closed " LKVBM_MANAGER_MT);
  lkvbm_enter(L, mb->reg);
  *mbp = mb;
  return bb;
}

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
 * Collected while policy code runs, a guard asks to be finalized again. A
 * guard released from Lua is retired (no finalizer call left). */
static int release(lua_State *L, int kind, int from_gc) {
  BlockBox *bb = from_gc ? lua_touserdata(L, 1) : checkkind(L, 1, kind);
  if (!bb->live) return 0; /* released or consumed already */
  ManagerBox *mb = owner(bb);
  int weak = kind == GUARD_WEAK;
  if (!mb && weak) release_closed_weak(L, bb, from_gc);
  else if (!mb) lkvbm_guard_off(L, bb);
  else {
    if (mb->reg->busy && lkvbm_defer_if_busy(L, mb->reg, 1, from_gc)) return 0;
    bb->live = 0;
    CoreCall cc;
    lkvbm_core_begin(L, mb, &cc);
    if (weak)
      (void)kvbm_weak_release(mb->m, &bb->w); /* held: bb was live */
    else
      (void)kvbm_release(mb->m, bb->b);
    lkvbm_core_end(L, mb, &cc);
    drop_guard(L, mb);
  }
  if (!from_gc && !bb->live) retire(L, 1, kind);
  return 0;
}

#define RELEASERS(kind, mt)                                               \
  static int kind##_release(lua_State *L) { return release(L, mt, 0); } \
  static int kind##_gc(lua_State *L) { return release(L, mt, 1); }
RELEASERS(mutable, GUARD_MUTABLE)
RELEASERS(complete, GUARD_COMPLETE)
RELEASERS(immutable, GUARD_IMMUTABLE)
RELEASERS(weak, GUARD_WEAK)

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
  BlockBox *cb = lkvbm_newguard(L, mb, LKVBM_COMPLETE_MT, KVBM_NO_BLOCK);
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
  retire(L, 1, GUARD_MUTABLE);
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
  BlockBox *out = lkvbm_newguard(L, mb, LKVBM_MUTABLE_MT, KVBM_NO_BLOCK);
  int rc = kvbm_complete_reset(mb->m, bb->b, &out->b);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lkvbm_guard_on(L, out);
  lkvbm_guard_off(L, bb);
  retire(L, 1, GUARD_COMPLETE);
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
  BlockBox *copy = lkvbm_newguard(L, mb, LKVBM_IMMUTABLE_MT, bb->b);
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
  BlockBox *wb = lkvbm_newguard(L, mb, LKVBM_WEAK_MT, bb->b);
  int rc = kvbm_downgrade(mb->m, bb->b, &wb->w);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lkvbm_guard_on(L, wb);
  return 1;
}

static int weak_hash(lua_State *L) {
  BlockBox *wb = checkkind(L, 1, GUARD_WEAK);
  if (!wb->live) luaL_error(L, "attempt to use a released " LKVBM_WEAK_MT);
  lkvbm_pushhash(L, wb->w.hash);
  return 1;
}

static int weak_upgrade(lua_State *L) {
  ManagerBox *mb;
  BlockBox *wb = checkguard(L, 1, LKVBM_WEAK_MT, &mb);
  BlockBox *ib = lkvbm_newguard(L, mb, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
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

/* A live class (upvalues on the stack) and its retired twin: the same
 * name, methods and __close, no __gc. */
static void guard_class(lua_State *L, int kind, lua_CFunction rel, lua_CFunction gc, const luaL_Reg *methods) {
  const luaL_Reg meta[] = {{"__gc", gc}, {"__close", rel}, {"__tostring", guard_tostring}, {NULL, NULL}};
  lkvbm_push_guard_upvalues(L);
  lkvbm_newclass_up(L, guard_names[kind], meta, methods, LKVBM_GUARD_NUP);
  luaL_getmetatable(L, guard_names[kind]);
  int live = lua_gettop(L);
  lua_getfield(L, live, "__index");
  lua_getfield(L, live, "__close");
  lua_setfield(L, -2, "release");
  lua_rawgetp(L, LUA_REGISTRYINDEX, &retired_keys[kind]);
  for (const char *const *f = (const char *const[]){"__name", "__index", "__close", "__tostring", NULL}; *f; f++) {
    lua_getfield(L, live, *f);
    lua_setfield(L, -2, *f);
  }
  lua_settop(L, live - 1);
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
  guard_class(L, GUARD_MUTABLE, mutable_release, mutable_gc, mutable_methods);
  guard_class(L, GUARD_COMPLETE, complete_release, complete_gc, complete_methods);
  guard_class(L, GUARD_IMMUTABLE, immutable_release, immutable_gc, immutable_methods);
  guard_class(L, GUARD_WEAK, weak_release, weak_gc, weak_methods);
}
