/* lmanager.c - kvbm.manager: allocation, registration and lookups from Lua,
 * metrics as a table and as Prometheus text. */
#include <limits.h>
#include <string.h>

#include <math.h>

#include "lkvbm.h"

ManagerBox *lkvbm_checkmanager(lua_State *L, int idx) {
  ManagerBox *mb = lkvbm_checkudata(L, idx, LKVBM_MANAGER_MT);
  if (!mb->m) luaL_error(L, "attempt to use a closed " LKVBM_MANAGER_MT);
  return mb;
}

/* Checks the manager at idx and that no policy code is running. */
static ManagerBox *enter(lua_State *L, int idx) {
  ManagerBox *mb = lkvbm_checkmanager(L, idx);
  lkvbm_enter(L, mb->reg);
  return mb;
}

/* ------------------------------------------------------- construction */

#define BACKEND_NAME(name, lua_name) lua_name,
static const char *const backend_names[] = {KVBM_BACKEND_MAP(BACKEND_NAME) NULL};
#undef BACKEND_NAME
static const char *const duplicate_names[] = {"allow", "reject", NULL};

/* A count option into *v (dflt when absent, *given says which): 1, or 0
 * with the refusal's message pushed (a configuration is data: invalid_config);
 * a value that is not a number raises. */
static int optcount(lua_State *L, int t, const char *field, uint32_t dflt, uint32_t *v, int *given) {
  lua_getfield(L, t, field);
  *v = dflt;
  *given = !lua_isnil(L, -1);
  if (*given) {
    lua_Integer i;
    const char *what = lua_pushfstring(L, "option '%s'", field);
    if (!lkvbm_torange(L, -2, what, 0, (lua_Integer)UINT32_MAX, &i)) return 0;
    *v = (uint32_t)i;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return 1;
}

static int config_error(lua_State *L, const char *msg) {
  lkvbm_pusherror(L, KVBM_ECONFIG);
  lua_pushfstring(L, "Builder validation failed: %s", msg);
  lua_setfield(L, -2, "message");
  return 2;
}

static int manager_new(lua_State *L) {
  static const char *const known[] = {"blocks", "block_size", "registry", "name", "backend",
                                      "thresholds", "duplicates", "reset_on_release", NULL};
  lkvbm_checkoptions(L, 1, known);
  kvbm_manager_config cfg;
  memset(&cfg, 0, sizeof cfg);
  int given;
  /* the crate's build() order: registry first, then block_count */
  lua_getfield(L, 1, "registry");
  if (!lua_isnil(L, -1) && !luaL_testudata(L, -1, LKVBM_REGISTRY_MT))
    return luaL_error(L, "kvbm.manager: option 'registry' must be a kvbm.registry(), got a %s", lkvbm_kind(L, -1));
  RegistryBox *rb = lua_isnil(L, -1) ? NULL : lkvbm_checkregistry(L, -1);
  int ridx = lua_gettop(L);
  if (!rb) return config_error(L, "registry is required");
  lkvbm_enter(L, rb);
  cfg.registry = rb->r;

  if (!optcount(L, 1, "blocks", 0, &cfg.block_count, &given)) return config_error(L, lua_tostring(L, -1));
  if (!given) return config_error(L, "block_count is required");
  if (!optcount(L, 1, "block_size", 16, &cfg.block_size, &given)) return config_error(L, lua_tostring(L, -1));
  if (given && cfg.block_size == 0) return config_error(L, "Invalid block_size 0: must be a power of 2 between 1 and 1024");

  lua_getfield(L, 1, "name");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "kvbm.manager: option 'name' must be a string, got a %s", lkvbm_kind(L, -1));
  cfg.name = lua_tostring(L, -1);
  lua_getfield(L, 1, "backend");
  int pidx = 0;
  if (lua_istable(L, -1)) {
    cfg.backend = KVBM_BACKEND_POLICY;
    pidx = lua_gettop(L);
    lua_getfield(L, pidx, "victims");
    if (!lua_isfunction(L, -1)) luaL_error(L, "kvbm.manager: a Lua policy backend needs a victims(n) function");
    lua_pop(L, 1);
  } else if (!lua_isnil(L, -1)) {
    cfg.backend = (kvbm_backend)lkvbm_checkchoice(L, -1, "kvbm.manager: option 'backend' (or a policy table)", backend_names);
  }
  lua_getfield(L, 1, "thresholds");
  if (!lua_isnil(L, -1)) { /* the values are checked by kvbm_manager_config_check */
    if (!lua_istable(L, -1))
      return luaL_error(L, "kvbm.manager: option 'thresholds' must be a table of three integers, got a %s",
                        lkvbm_kind(L, -1));
    for (int i = 0; i < 3; i++) {
      lua_rawgeti(L, -1, i + 1);
      lua_Integer t;
      const char *what = lua_pushfstring(L, "thresholds[%d]", i + 1);
      if (!lkvbm_torange(L, -2, what, 0, UINT8_MAX, &t))
        return config_error(L, lua_tostring(L, -1));
      cfg.thresholds[i] = (uint8_t)t;
      lua_pop(L, 2);
    }
  }
  lua_getfield(L, 1, "duplicates");
  cfg.reject_duplicates = lua_isnil(L, -1) ? 0 : lkvbm_checkchoice(L, -1, "kvbm.manager: option 'duplicates'", duplicate_names);
  lua_getfield(L, 1, "reset_on_release");
  if (!lua_isnil(L, -1) && !lua_isboolean(L, -1))
    return luaL_error(L, "kvbm.manager: option 'reset_on_release' must be a boolean, got a %s", lkvbm_kind(L, -1));
  cfg.reset_on_release = lua_toboolean(L, -1);
  cfg.alloc = lkvbm_allocator(L);

  ManagerBox *mb = lua_newuserdatauv(L, sizeof *mb, 2);
  memset(mb, 0, sizeof *mb);
  mb->reg = rb;
  mb->policy_ref = LUA_NOREF;
  mb->anchor = LUA_NOREF;
  luaL_setmetatable(L, LKVBM_MANAGER_MT);
  int midx = lua_gettop(L);
  lkvbm_setbox(L, mb, midx); /* its first live guard finds it (lkvbm_guard_on) */
  lua_pushvalue(L, ridx);
  lua_setiuservalue(L, midx, 1); /* the manager keeps its registry alive */
  kvbm_policy policy;
  if (pidx) {
    lkvbm_policy_init(L, mb, pidx, &policy);
    cfg.policy = &policy;
  }
  /* checked once the policy is set: the check wants its victims() */
  char msg[200];
  if (kvbm_manager_config_check(&cfg, msg, sizeof msg) < 0) {
    lkvbm_policy_free(L, mb);
    return config_error(L, msg);
  }
  int rc = kvbm_manager_new(&cfg, &mb->m);
  if (rc < 0) {
    lkvbm_policy_free(L, mb);
    return lkvbm_pusherror(L, rc);
  }
  lkvbm_setbox(L, mb->m, midx); /* kvbm_lua_push_manager finds it */
  lua_settop(L, midx);
  return 1;
}

static int close_manager(lua_State *L, int from_gc) {
  ManagerBox *mb = luaL_checkudata(L, 1, LKVBM_MANAGER_MT);
  if (mb->m) {
    if (lkvbm_defer_if_busy(L, mb->reg, 1, from_gc)) return 0;
    if (mb->in_policy) { /* its policy is running: it cannot go now */
      if (from_gc && lua_getmetatable(L, 1)) return lua_setmetatable(L, 1), 0;
      lkvbm_enter_evict(L, mb); /* raises */
    }
    CoreCall cc;
    lkvbm_core_begin(L, mb, &cc);
    kvbm_manager_free(mb->m);
    mb->m = NULL;
    lkvbm_core_end(L, mb, &cc);
    lkvbm_policy_free(L, mb);
  }
  return 0;
}

static int manager_close(lua_State *L) { return close_manager(L, 0); }
static int manager_gc(lua_State *L) { return close_manager(L, 1); }

/* --------------------------------------------------------- allocation */

/* A call's scratch arrays of n items, in one userdata on the Lua stack (an
 * error frees it): handles in and out of the core call, the guard boxes it
 * fills (not looked up again in their tables afterwards), and hashes. */
typedef struct {
  kvbm_block *in, *out;
  BlockBox **from, **to;
  kvbm_hash *hs;
} Scratch;

static Scratch scratch(lua_State *L, size_t n, int with_hashes) {
  size_t m = n ? n : 1;
  size_t each = 2 * sizeof(kvbm_block) + 2 * sizeof(BlockBox *) + (with_hashes ? sizeof(kvbm_hash) : 0);
  Scratch s;
  s.hs = lua_newuserdatauv(L, m * each, 0); /* the hashes first: the widest alignment */
  s.in = (kvbm_block *)(void *)(s.hs + (with_hashes ? m : 0));
  s.out = s.in + m;
  s.from = (BlockBox **)(void *)(s.out + m);
  s.to = s.from + m;
  if (!with_hashes) s.hs = NULL;
  return s;
}

static int allocate(lua_State *L, int with_evictions) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  lkvbm_enter_evict(L, mb);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 0, 2, "block count must be non-negative");
  if ((lua_Unsigned)n > kvbm_manager_total(mb->m)) {
    lkvbm_pusherror(L, KVBM_ENOSPC);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "requested");
    lua_pushinteger(L, (lua_Integer)kvbm_manager_available(mb->m));
    lua_setfield(L, -2, "available");
    return 2;
  }
  Scratch sc = scratch(L, (size_t)n, 0);
  kvbm_block *buf = sc.out;
  kvbm_hash *evicted = with_evictions ? lua_newuserdatauv(L, (n ? (size_t)n : 1) * sizeof *evicted, 0) : NULL;
  lua_createtable(L, (int)n, 0); /* the guards exist before the core changes anything */
  int t = lua_gettop(L);
  for (lua_Integer i = 1; i <= n; i++) {
    sc.to[i - 1] = lkvbm_newguard(L, mb, LKVBM_MUTABLE_MT, KVBM_NO_BLOCK);
    lua_rawseti(L, t, i);
  }
  lkvbm_manager_pin(L, mb);
  lkvbm_policy_prepare(mb, (size_t)n);
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_allocate(mb->m, (size_t)n, buf, evicted);
  lkvbm_core_end(L, mb, &cc);
  if (rc >= 0)
    for (lua_Integer i = 0; i < n; i++) { /* t holds them */
      sc.to[i]->b = buf[i];
      lkvbm_guard_on(L, sc.to[i]);
    }
  lkvbm_manager_unpin(L, mb);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    lua_pushinteger(L, n);
    lua_setfield(L, -2, "requested");
    lua_pushinteger(L, (lua_Integer)kvbm_manager_available(mb->m));
    lua_setfield(L, -2, "available");
    return 2;
  }
  if (!with_evictions) return 1;
  lua_createtable(L, rc, 0);
  for (int i = 0; i < rc; i++) {
    lkvbm_pushhash(L, evicted[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 2;
}

static int manager_allocate(lua_State *L) { return allocate(L, 0); }
static int manager_allocate_with_evictions(lua_State *L) { return allocate(L, 1); }

/* -------------------------------------------------------- registration */

static BlockBox *checkcomplete(lua_State *L, int idx, ManagerBox *mb) {
  BlockBox *bb = lkvbm_testguard(L, idx, LKVBM_COMPLETE_MT);
  if (!bb) luaL_typeerror(L, idx, LKVBM_COMPLETE_MT);
  if (!bb->live) luaL_error(L, "attempt to use a released or consumed " LKVBM_COMPLETE_MT);
  if (bb->mb != mb) luaL_argerror(L, idx, "block of another manager");
  return bb;
}

/* Registers the CompleteBlocks listed at idx (a table) or the one at idx. */
static int do_register(lua_State *L, int all) {
  ManagerBox *mb = enter(L, 1);
  size_t n = 1;
  if (all) {
    luaL_checktype(L, 2, LUA_TTABLE);
    n = lua_rawlen(L, 2);
  }
  Scratch sc = scratch(L, n, 0);
  lua_createtable(L, (int)n, 0);
  int t = lua_gettop(L);
  /* the listed guards stay on the stack above t (retired there once
   * consumed), unless there is no room for so many */
  int keep = all && n < INT_MAX / 2 && lua_checkstack(L, (int)n + LUA_MINSTACK);
  for (size_t i = 0; i < n; i++) {
    if (all) lua_rawgeti(L, 2, (lua_Integer)i + 1);
    sc.from[i] = checkcomplete(L, all ? -1 : 2, mb);
    sc.in[i] = sc.from[i]->b;
    if (all && !keep) lua_pop(L, 1);
    sc.to[i] = lkvbm_newguard(L, mb, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
    lua_rawseti(L, t, (lua_Integer)i + 1);
  }
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_register_all(mb->m, sc.in, n, sc.out);
  lkvbm_core_end(L, mb, &cc);
  if (rc == KVBM_EINVAL) luaL_error(L, "the same CompleteBlock is listed twice");
  if (rc < 0) return lkvbm_pusherror(L, rc);
  /* the boxes are alive: the stack (or the table at 2, or the argument) and t hold them */
  for (size_t i = 0; i < n; i++) {
    sc.to[i]->b = sc.out[i];
    lkvbm_guard_on(L, sc.to[i]);
    lkvbm_guard_off(L, sc.from[i]); /* consumed */
    if (keep) lkvbm_guard_retire(L, t + 1 + (int)i, LKVBM_COMPLETE_MT);
  }
  for (size_t i = 0; !keep && i < n; i++) { /* the list as it is now (a Lua policy may have changed it) */
    if (all) lua_rawgeti(L, 2, (lua_Integer)i + 1);
    if (lua_touserdata(L, all ? -1 : 2) == sc.from[i]) lkvbm_guard_retire(L, all ? -1 : 2, LKVBM_COMPLETE_MT);
    if (all) lua_pop(L, 1);
  }
  lua_settop(L, t);
  if (!all) lua_rawgeti(L, t, 1);
  return 1;
}

static int manager_register(lua_State *L) { return do_register(L, 0); }
static int manager_register_all(lua_State *L) { return do_register(L, 1); }

/* ------------------------------------------------------------- lookups */

typedef size_t (*lookup_fn)(kvbm_manager *, const kvbm_hash *, size_t, int, kvbm_block *);

static size_t do_match(kvbm_manager *m, const kvbm_hash *h, size_t n, int touch, kvbm_block *out) {
  (void)touch;
  return kvbm_match(m, h, n, out);
}
static size_t do_scattered(kvbm_manager *m, const kvbm_hash *h, size_t n, int touch, kvbm_block *out) {
  (void)touch;
  return kvbm_match_scattered(m, h, n, out);
}

enum { AS_PREFIX, AS_ALIGNED, AS_MAP };

static int lookup(lua_State *L, lookup_fn fn, int shape, int touch) {
  ManagerBox *mb = enter(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = lua_rawlen(L, 2);
  Scratch sc = scratch(L, n, 1);
  kvbm_hash *hs = sc.hs;
  kvbm_block *out = sc.out;
  BlockBox **box = sc.to;
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 2, (lua_Integer)i + 1);
    hs[i] = lkvbm_checkhash(L, -1);
    lua_pop(L, 1);
  }
  /* guards first (they may raise), then the core call that cannot; a prefix
   * match needs only as many as the prefix it will find. A list result
   * holds them from the start (the misses are taken out after the call); a
   * map keys them by hash after the call, so they wait in a table of their own. */
  size_t nguards = shape == AS_PREFIX ? kvbm_match_count(mb->m, hs, n) : n;
  int guards = lua_gettop(L) + 1;
  lua_createtable(L, (int)nguards, shape == AS_ALIGNED);
  for (size_t i = 0; i < nguards; i++) {
    box[i] = lkvbm_newguard(L, mb, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
    lua_rawseti(L, guards, (lua_Integer)i + 1);
  }
  int res = guards;
  if (shape == AS_MAP) {
    lua_createtable(L, 0, (int)n);
    res = lua_gettop(L);
  }
  lkvbm_manager_pin(L, mb);
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  size_t k = fn(mb->m, hs, n, touch, out);
  lkvbm_core_end(L, mb, &cc);
  for (; shape == AS_PREFIX && k > nguards; k--) (void)kvbm_release(mb->m, out[k - 1]); /* cannot happen: finalizers only release */
  size_t limit = shape == AS_PREFIX ? k : n;
  for (size_t i = 0; i < nguards; i++) {
    if (i >= limit || out[i] == KVBM_NO_BLOCK) {
      if (shape != AS_MAP) { /* a miss, or past the prefix: a hole */
        lua_pushnil(L);
        lua_rawseti(L, res, (lua_Integer)i + 1);
      }
      continue;
    }
    box[i]->b = out[i];
    lkvbm_guard_on(L, box[i]);
  }
  lkvbm_manager_unpin(L, mb);
  /* from here an out-of-memory error is safe: the collector releases the guards */
  for (size_t i = 0; shape == AS_MAP && i < limit; i++) {
    if (out[i] == KVBM_NO_BLOCK) continue;
    lkvbm_pushhash(L, hs[i]);
    lua_rawgeti(L, guards, (lua_Integer)i + 1);
    lua_rawset(L, res);
  }
  if (shape == AS_ALIGNED) {
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, res, "n");
  }
  lua_settop(L, res);
  return 1;
}

static int manager_match(lua_State *L) { return lookup(L, do_match, AS_PREFIX, 0); }
static int manager_match_scattered(lua_State *L) { return lookup(L, do_scattered, AS_ALIGNED, 0); }
static int manager_scan(lua_State *L) {
  int touch = lua_isnoneornil(L, 3) ? 1 : lua_toboolean(L, 3);
  return lookup(L, kvbm_scan, AS_MAP, touch);
}

/* m:next_use(hashes, whens) --> how many blocks took a hint. The input of
 * the "optimal" backend (a replay that knows the future): the block held
 * for hashes[i] is next needed at whens[i] (an increasing clock; false or
 * math.huge: never). Other backends ignore it and return 0. */
static int manager_next_use(lua_State *L) {
  ManagerBox *mb = enter(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t n = lua_rawlen(L, 2);
  if (lua_rawlen(L, 3) != n)
    return luaL_error(L, "m:next_use: %d hashes but %d times", (int)n, (int)lua_rawlen(L, 3));
  kvbm_hash *hs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *hs, 0);
  uint64_t *when = lua_newuserdatauv(L, (n ? n : 1) * sizeof *when, 0);
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 2, (lua_Integer)i + 1);
    hs[i] = lkvbm_checkhash(L, -1);
    lua_rawgeti(L, 3, (lua_Integer)i + 1);
    if (lua_toboolean(L, -1) == 0 || (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1) &&
                                      lua_tonumber(L, -1) == HUGE_VAL))
      when[i] = UINT64_MAX;
    else
      when[i] = (uint64_t)lkvbm_checkrange(L, -1, "m:next_use: a time", 0, LUA_MAXINTEGER);
    lua_pop(L, 2);
  }
  lua_pushinteger(L, (lua_Integer)kvbm_next_use(mb->m, hs, when, n));
  return 1;
}

static int manager_reset_inactive(lua_State *L) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  lkvbm_enter_evict(L, mb);
  lkvbm_policy_prepare(mb, SIZE_MAX);
  CoreCall cc;
  lkvbm_core_begin(L, mb, &cc);
  int rc = kvbm_reset_inactive(mb->m);
  lkvbm_core_end(L, mb, &cc);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    lua_pushinteger(L, (lua_Integer)kvbm_manager_total(mb->m));
    lua_setfield(L, -2, "expected");
    lua_pushinteger(L, (lua_Integer)kvbm_manager_reset(mb->m));
    lua_setfield(L, -2, "actual");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* ---------------------------------------------------------- accessors */

#define SIZE_GETTER(fname, cfn)                                   \
  static int fname(lua_State *L) {                                \
    lua_pushinteger(L, (lua_Integer)cfn(lkvbm_checkmanager(L, 1)->m)); \
    return 1;                                                     \
  }
SIZE_GETTER(manager_available, kvbm_manager_available)
SIZE_GETTER(manager_total, kvbm_manager_total)
SIZE_GETTER(manager_block_size, kvbm_manager_block_size)
SIZE_GETTER(manager_inactive, kvbm_manager_inactive)
SIZE_GETTER(manager_reset, kvbm_manager_reset)
SIZE_GETTER(manager_bytes, kvbm_manager_bytes)
SIZE_GETTER(manager_tier, kvbm_manager_tier)

static int manager_name(lua_State *L) {
  lua_pushstring(L, kvbm_manager_name(lkvbm_checkmanager(L, 1)->m));
  return 1;
}

static int manager_registry(lua_State *L) {
  lkvbm_checkmanager(L, 1);
  lua_getiuservalue(L, 1, 1);
  return 1;
}

static int manager_tostring(lua_State *L) {
  ManagerBox *mb = luaL_checkudata(L, 1, LKVBM_MANAGER_MT);
  if (!mb->m) return lua_pushliteral(L, "kvbm.Manager (closed)"), 1;
  lua_pushfstring(L, "kvbm.Manager %s (%d blocks of %d tokens, %d available, %d inactive)",
                  kvbm_manager_name(mb->m), (int)kvbm_manager_total(mb->m),
                  (int)kvbm_manager_block_size(mb->m), (int)kvbm_manager_available(mb->m),
                  (int)kvbm_manager_inactive(mb->m));
  return 1;
}

/* ------------------------------------------------------------ metrics */

void lkvbm_pushmetrics(lua_State *L, const kvbm_manager *m) {
  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  lua_createtable(L, 0, 20);
#define SET(kind, field, help)              \
  lua_pushinteger(L, (lua_Integer)x.field); \
  lua_setfield(L, -2, KVBM_METRIC_NAME(kind, field));
  KVBM_METRICS_MAP(SET)
#undef SET
  lua_pushnumber(L, x.match_hashes_requested
                        ? (lua_Number)x.match_blocks_returned / (lua_Number)x.match_hashes_requested
                        : 0.0);
  lua_setfield(L, -2, "hit_rate");
  luaL_setmetatable(L, LKVBM_METRICS_MT);
}

/* tostring(m:metrics()): one metric a line, in the order of KVBM_METRICS_MAP. */
static int metrics_tostring(lua_State *L) {
  static const char *const names[] = {
#define NAME(kind, field, help) KVBM_METRIC_NAME(kind, field),
      KVBM_METRICS_MAP(NAME)
#undef NAME
      "hit_rate"};
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "kvbm.Metrics");
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char line[96];
    lua_getfield(L, 1, names[i]);
    snprintf(line, sizeof line, "\n  %-35s %s", names[i], luaL_tolstring(L, -1, NULL));
    lua_pop(L, 2);
    luaL_addstring(&b, line);
  }
  luaL_pushresult(&b);
  return 1;
}

/* m:policy_errors() --> count, last error (with its traceback) or nil */
static int manager_policy_errors(lua_State *L) {
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  kvbm_metrics x;
  kvbm_manager_metrics(mb->m, &x);
  lua_pushinteger(L, (lua_Integer)x.policy_errors);
  if (!mb->policy_error[0]) return 1;
  lua_pushstring(L, mb->policy_error);
  return 2;
}

static int manager_metrics(lua_State *L) {
  lkvbm_pushmetrics(L, lkvbm_checkmanager(L, 1)->m);
  return 1;
}

/* kvbm.prometheus{m1, m2, ...} -> text exposition, one family per metric,
 * one sample per manager labelled pool="<name>". */
static int prometheus(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
  kvbm_metrics *ms = lua_newuserdatauv(L, (n ? (size_t)n : 1) * sizeof *ms, 0);
  const char **names = lua_newuserdatauv(L, (n ? (size_t)n : 1) * sizeof *names, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    ManagerBox *mb = lkvbm_checkmanager(L, -1);
    kvbm_manager_metrics(mb->m, &ms[i - 1]);
    names[i - 1] = kvbm_manager_name(mb->m);
    lua_pop(L, 1); /* the list keeps the manager (and its name) alive */
    /* Prometheus rejects an exposition with two samples of one series */
    for (lua_Integer j = 1; j < i; j++)
      if (strcmp(names[j - 1], names[i - 1]) == 0)
        return luaL_error(L, "kvbm.prometheus: managers #%I and #%I are both named \"%s\" "
                          "(give each pool a distinct name)", j, i, names[i - 1]);
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  char line[256];
#define PROM_TYPE_COUNTER "counter"
#define PROM_TYPE_GAUGE "gauge"
#define PROM_TYPE_AUDIT NULL /* not a kvbm-logical metric: not exported */
#define FAMILY(kind, field, help)                                                            \
  {                                                                                          \
    const char *type = PROM_TYPE_##kind;                                                     \
    if (n > 0 && type) {                                                                     \
      snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n",                           \
               KVBM_METRIC_NAME(kind, field), help, KVBM_METRIC_NAME(kind, field), type);    \
      luaL_addstring(&b, line);                                                              \
      for (lua_Integer i = 0; i < n; i++) {                                                  \
        lua_pushfstring(L, "%s{pool=\"%s\"} %I\n", KVBM_METRIC_NAME(kind, field), names[i], \
                        (lua_Integer)ms[i].field);                                           \
        luaL_addvalue(&b);                                                                   \
      }                                                                                      \
    }                                                                                        \
  }
  KVBM_METRICS_MAP(FAMILY)
#undef FAMILY
  luaL_pushresult(&b);
  return 1;
}

/* kvbm._debug.check(m) -> counts per state, or nil, message */
static int debug_check(lua_State *L) {
  static const char *const names[] = {"reset", "mutable", "staged", "primary", "duplicate", "inactive"};
  ManagerBox *mb = lkvbm_checkmanager(L, 1);
  size_t counts[6];
  char msg[200];
  if (kvbm_manager_check(mb->m, counts, msg, sizeof msg) < 0) {
    luaL_pushfail(L);
    lua_pushstring(L, msg);
    return 2;
  }
  lua_createtable(L, 0, 6);
  for (int i = 0; i < 6; i++) {
    lua_pushinteger(L, (lua_Integer)counts[i]);
    lua_setfield(L, -2, names[i]);
  }
  return 1;
}

void lkvbm_open_manager(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", manager_gc},
                                  {"__close", manager_close},
                                  {"__tostring", manager_tostring},
                                  {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"allocate", manager_allocate},
      {"allocate_with_evictions", manager_allocate_with_evictions},
      {"register", manager_register},
      {"register_all", manager_register_all},
      {"match", manager_match},
      {"match_scattered", manager_match_scattered},
      {"scan", manager_scan},
      {"reset_inactive", manager_reset_inactive},
      {"next_use", manager_next_use},
      {"available", manager_available},
      {"total", manager_total},
      {"block_size", manager_block_size},
      {"inactive", manager_inactive},
      {"reset_pool", manager_reset},
      {"bytes", manager_bytes},
      {"tier", manager_tier},
      {"name", manager_name},
      {"registry", manager_registry},
      {"metrics", manager_metrics},
      {"policy_errors", manager_policy_errors},
      {"close", manager_close},
      {NULL, NULL},
  };
  static const luaL_Reg metrics_meta[] = {{"__tostring", metrics_tostring}, {NULL, NULL}};
  lkvbm_push_guard_upvalues(L); /* its per-block calls make and check guards */
  lkvbm_newclass_up(L, LKVBM_MANAGER_MT, meta, methods, LKVBM_GUARD_NUP);
  lkvbm_newclass(L, LKVBM_METRICS_MT, metrics_meta, NULL);
  lua_pushcfunction(L, manager_new);
  lua_setfield(L, -2, "manager");
  lua_pushcfunction(L, prometheus);
  lua_setfield(L, -2, "prometheus");
  /* kvbm.backends: every built-in backend name, in KVBM_BACKEND_MAP order */
  lua_createtable(L, (int)(sizeof backend_names / sizeof *backend_names) - 1, 0);
  for (int i = 0; backend_names[i]; i++) {
    lua_pushstring(L, backend_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "backends");
  lua_getfield(L, -1, "_debug");
  lua_pushcfunction(L, debug_check);
  lua_setfield(L, -2, "check");
  lua_pop(L, 1);
}
