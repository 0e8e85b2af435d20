/* ltiers.c - the C side of kvbm.tiers (lua/kvbm/tiers.lua): the planner of
 * kvbm.h "tiers" behind the Tiers object, its requests, plans as Lua
 * tables, the policy context, and the tier policy's Lua hooks adapted to
 * the planner's batch hooks. Public kvbm.h API only.
 *
 * The functions take the Lua Tiers table itself (its field _core is the
 * planner box), so that tiers.lua can install them as methods and errors
 * name the user's call. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "lkvbm.h"

#define PLANNER_MT "kvbm.TierPlanner"
#define REQUEST_MT "kvbm.TierRequestBox"
#define CTX_MT "kvbm.TierContext"

static const char *const tier_names[KVBM_MAX_TIERS] = {"G1", "G2", "G3", "G4"};

/* Hook slots of a policy table: per block, or per batch. */
typedef enum { H_ON_REGISTER, H_ON_INACTIVE, H_ONBOARD, H_REGISTER_BATCH, H_INACTIVE_BATCH, H_COUNT } hook_id;
static const char *const hook_names[H_COUNT] = {"on_register", "on_inactive", "onboard", "on_register_batch",
                                                "on_inactive_batch"};

/* The planner box. User values: 1 the managers by level (a table, 1-based),
 * 2 the Lua Tiers table, 3 the hooks (a table by hook_id + 1), 4 the context,
 * 5 plan tables by handle (weak values). */
typedef struct {
  kvbm_tiers *t;        /* NULL once closed */
  ManagerBox *mb[KVBM_MAX_TIERS];
  lua_State *L;         /* the thread running the current planner call */
  int in_call, hidx, cidx; /* during a call: L's stack slots of the hooks and the context */
  int has[H_COUNT];
  int err_ref;          /* LUA_NOREF, or the error a hook raised */
} PlannerBox;

/* A request admitted here is a kvbm.request RequestSequence (a Lua table,
 * see lua/kvbm/request.lua) to which admit adds { seq, onboard, matched,
 * waiting, tiers, _r }; _r is this box (freed at release or by the
 * collector), user value 1 its planner box. waiting is brought up to date
 * after every completion (the planner box keeps the requests that wait). */
typedef struct {
  kvbm_tiers_request *r; /* NULL once freed */
} RequestBox;

enum { UV_MANAGERS = 1, UV_TIERS, UV_HOOKS, UV_CTX, UV_PLANS, UV_WAITING, UV_COUNT = UV_WAITING };

/* ------------------------------------------------------------ helpers */

/* The Lua layer over the planner: kvbm.tiers and kvbm.request call these
 * functions for their methods, so a position in one of their files is
 * never the user's. */
static int layer_frame(const lua_Debug *ar) {
  static const char *const layer[] = {"/kvbm/tiers.lua", "/kvbm/request.lua", "/kvbm/logical.lua"};
  size_t n = strlen(ar->source);
  for (size_t i = 0; i < sizeof layer / sizeof *layer; i++) {
    size_t k = strlen(layer[i]);
    if (n >= k && strcmp(ar->source + n - k, layer[i]) == 0) return 1;
  }
  return 0;
}

/* luaL_where for the user's code: pushes "file:line: " of the first Lua
 * frame outside the layer that led here (C frames, such as the layer's
 * pcall, are passed over), or "" when there is none. */
static void user_where(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && !layer_frame(&ar)) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
  }
  lua_pushliteral(L, "");
}

/* luaL_error, positioned at the user's call (see user_where). It never
 * returns (lua_error longjmps; lua.h does not say so, hence the marker). */
static _Noreturn int tiers_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  user_where(L);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 2);
  lua_error(L);
  abort(); /* not reached */
}

static int tier_of(const PlannerBox *pb, const char *name) {
  for (int i = 0; i < KVBM_MAX_TIERS; i++)
    if (pb->mb[i] && strcmp(name, tier_names[i]) == 0) return i;
  return KVBM_NO_TIER;
}

/* A tier name argument ("G1", ...): a string, no number coerced. */
static const char *checktiername(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "tier name");
  return lua_tostring(L, idx);
}

/* The planner box of the Tiers table (or box) at idx; raises when closed. */
static PlannerBox *checkplanner(lua_State *L, int idx) {
  PlannerBox *pb;
  if (lua_type(L, idx) == LUA_TTABLE) {
    lua_getfield(L, idx, "_core");
    pb = luaL_testudata(L, -1, PLANNER_MT);
    lua_pop(L, 1);
  } else {
    pb = luaL_testudata(L, idx, PLANNER_MT);
  }
  if (!pb) tiers_error(L, "kvbm.tiers: a tier planner expected");
  if (!pb->t) tiers_error(L, "kvbm.tiers: the planner is closed");
  for (int i = 0; i < KVBM_MAX_TIERS; i++)
    if (pb->mb[i] && !pb->mb[i]->m) tiers_error(L, "kvbm.tiers: manager %s was closed", tier_names[i]);
  return pb;
}

static void pushplannerbox(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TTABLE) lua_getfield(L, idx, "_core");
  else lua_pushvalue(L, idx);
}

/* A planner call: no collector (no finalizer may reach the engine or the
 * planner halfway) while the tier policy's Lua hooks may run, the registry
 * bracket of a Lua events policy, and the hook error raised afterwards.
 * A Lua eviction policy of one of the managers is asked for its victims
 * right before each allocation the planner makes (kvbm_policy_prepare, in
 * tiers.c), between manager calls, with the collector running: a request
 * collected meanwhile waits (request_gc); its notifications are delivered
 * when the call ends. It cannot call the planner (in_call), nor make its own
 * manager evict. */
typedef struct {
  CoreCall cc;
  int paused;
} PlanCall;

/* lkvbm_enter and lkvbm_enter_evict of the planner's managers (run
 * protected by enter, below). */
static int enter_checks(lua_State *L) {
  PlannerBox *pb = lua_touserdata(L, 1);
  lkvbm_enter(L, pb->mb[0]->reg);
  for (int i = 0; i < KVBM_MAX_TIERS; i++)
    if (pb->mb[i]) lkvbm_enter_evict(L, pb->mb[i]);
  return 0;
}

/* The binding's re-entry checks for a planner call; a refusal is raised at
 * the user's call (when one of the checks is known to refuse, they run
 * protected, their message without a position; then they run as usual). */
static void enter(lua_State *L, PlannerBox *pb) {
  int refuse = pb->mb[0]->reg->busy;
  for (int i = 0; i < KVBM_MAX_TIERS; i++) refuse |= pb->mb[i] && pb->mb[i]->in_policy;
  if (refuse) {
    lua_pushcfunction(L, enter_checks);
    lua_pushlightuserdata(L, pb);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      user_where(L);
      lua_insert(L, -2);
      lua_concat(L, 2);
      lua_error(L);
    }
  }
  lkvbm_enter(L, pb->mb[0]->reg);
  for (int i = 0; i < KVBM_MAX_TIERS; i++)
    if (pb->mb[i]) lkvbm_enter_evict(L, pb->mb[i]);
}

static void call_begin(lua_State *L, PlannerBox *pb, int pidx, PlanCall *pc) {
  RegistryBox *rb = pb->mb[0]->reg;
  if (pb->in_call) tiers_error(L, "kvbm.tiers: re-entrant call to the planner from its own tier or eviction policy");
  enter(L, pb);
  pidx = lua_absindex(L, pidx);
  lua_getiuservalue(L, pidx, UV_HOOKS);
  pb->hidx = lua_gettop(L);
  lua_getiuservalue(L, pidx, UV_CTX);
  pb->cidx = lua_gettop(L);
  pb->in_call = 1;
  int engine_lua = rb->lua_hooks;
  pb->L = L;
  pc->paused = 0;
  int hooks = 0;
  for (int h = 0; h < H_COUNT; h++) hooks |= pb->has[h];
  if (hooks && !engine_lua && lua_gc(L, LUA_GCISRUNNING)) {
    lua_gc(L, LUA_GCSTOP);
    pc->paused = 1;
  }
  lkvbm_registry_begin(L, rb, engine_lua, &pc->cc);
}

static void call_end(lua_State *L, PlannerBox *pb, PlanCall *pc) {
  pb->in_call = 0;
  lkvbm_registry_end(L, pb->mb[0]->reg, &pc->cc);
  if (pc->paused) lua_gc(L, LUA_GCRESTART);
  for (int i = 0; i < KVBM_MAX_TIERS; i++)
    if (pb->mb[i]) lkvbm_policy_flush(pb->mb[i]);
  if (pb->err_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, pb->err_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, pb->err_ref);
    pb->err_ref = LUA_NOREF;
    lua_error(L);
  }
}

/* Keeps the error at the top of the stack for call_end to raise. */
static int hook_failed(PlannerBox *pb) {
  lua_State *L = pb->L;
  if (pb->err_ref == LUA_NOREF) pb->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  else lua_pop(L, 1);
  return KVBM_EINVAL;
}

/* Pushes hook h and the context, ready for the arguments. */
static void pushhook(PlannerBox *pb, int h) {
  lua_rawgeti(pb->L, pb->hidx, h + 1);
  lua_pushvalue(pb->L, pb->cidx);
}

/* The hook's answer at the top (a tier name, or nil/false) as a level;
 * KVBM_EINVAL with the error kept for one that is not a tier. */
static int answer(PlannerBox *pb, int h, int idx, int *dst) {
  lua_State *L = pb->L;
  int ty = lua_type(L, idx);
  if (ty == LUA_TNIL || (ty == LUA_TBOOLEAN && !lua_toboolean(L, idx))) {
    *dst = KVBM_NO_TIER;
    return 0;
  }
  const char *name = ty == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  *dst = name ? tier_of(pb, name) : KVBM_NO_TIER;
  if (*dst != KVBM_NO_TIER) return 0;
  idx = lua_absindex(L, idx);
  user_where(L);
  const char *what = luaL_tolstring(L, idx, NULL);
  lua_pushfstring(L, "tier policy %s returned %s, which is not a tier of this planner", hook_names[h], what);
  lua_remove(L, -2);
  lua_concat(L, 2);
  return hook_failed(pb);
}

static int call_blocks(PlannerBox *pb, int hook, int batch, int tier, const kvbm_hash *h,
                       const uint32_t *pos, size_t n, int *dst) {
  lua_State *L = pb->L;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 8)) return KVBM_ENOMEM;
  int rc = 0;
  if (pb->has[batch]) {
    pushhook(pb, batch);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      lkvbm_pushhash(L, h[i]);
      lua_rawseti(L, -3, (lua_Integer)i + 1);
      lua_pushinteger(L, pos[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (tier >= 0) lua_pushstring(L, tier_names[tier]);
    if (lua_pcall(L, tier >= 0 ? 4 : 3, 1, 0) != LUA_OK) return hook_failed(pb);
    if (lua_istable(L, -1)) {
      for (size_t i = 0; i < n && rc == 0; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        rc = answer(pb, batch, -1, &dst[i]);
        if (rc == 0) lua_pop(L, 1);
      }
    } else if (!lua_isnil(L, -1)) {
      lua_pushfstring(L, "tier policy %s must return a table of tiers (or nil), got %s", hook_names[batch],
                      luaL_typename(L, -1));
      rc = hook_failed(pb);
    }
  } else {
    for (size_t i = 0; i < n && rc == 0; i++) {
      pushhook(pb, hook);
      lkvbm_pushhash(L, h[i]);
      lua_pushinteger(L, pos[i]);
      if (tier >= 0) lua_pushstring(L, tier_names[tier]);
      if (lua_pcall(L, tier >= 0 ? 4 : 3, 1, 0) != LUA_OK) return hook_failed(pb);
      rc = answer(pb, hook, -1, &dst[i]);
      if (rc == 0) lua_pop(L, 1);
    }
  }
  lua_settop(L, top);
  return rc;
}

static int hook_on_register(void *ud, const kvbm_hash *h, const uint32_t *pos, size_t n, int *dst) {
  return call_blocks(ud, H_ON_REGISTER, H_REGISTER_BATCH, -1, h, pos, n, dst);
}

static int hook_on_inactive(void *ud, unsigned tier, const kvbm_hash *h, const uint32_t *pos, size_t n,
                            int *dst) {
  return call_blocks(ud, H_ON_INACTIVE, H_INACTIVE_BATCH, (int)tier, h, pos, n, dst);
}

static int hook_onboard(void *ud, kvbm_hash h, uint32_t pos, unsigned tier) {
  PlannerBox *pb = ud;
  lua_State *L = pb->L;
  if (!lua_checkstack(L, 8)) return KVBM_ENOMEM;
  pushhook(pb, H_ONBOARD);
  lkvbm_pushhash(L, h);
  lua_pushinteger(L, pos);
  lua_pushstring(L, tier_names[tier]);
  if (lua_pcall(L, 4, 1, 0) != LUA_OK) return hook_failed(pb);
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

/* --------------------------------------------------------- plan tables */

static const char *const kind_names[] = {"onboard", "offload"};

/* Pushes the table of plan p: { src, dst, copies, src_tier=, dst_tier=,
 * copies=, id=, kind=, _plan= }, the same table while it is alive. */
static void pushplan(lua_State *L, int pidx, PlannerBox *pb, kvbm_plan p) {
  lua_getiuservalue(L, pidx, UV_PLANS);
  if (lua_rawgeti(L, -1, (lua_Integer)p) == LUA_TTABLE) {
    lua_remove(L, -2);
    return;
  }
  lua_pop(L, 1);
  kvbm_plan_info info;
  if (kvbm_tiers_plan_info(pb->t, p, &info) < 0) { /* cannot happen: p comes from the planner */
    lua_pop(L, 1);
    lua_pushnil(L);
    return;
  }
  lua_createtable(L, 3, 6);
  lua_pushstring(L, tier_names[info.src_tier]);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 1);
  lua_setfield(L, -2, "src_tier");
  lua_pushstring(L, tier_names[info.dst_tier]);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 2);
  lua_setfield(L, -2, "dst_tier");
  kvbm_copy *c = lua_newuserdatauv(L, (info.ncopies ? info.ncopies : 1) * sizeof *c, 0);
  (void)kvbm_tiers_plan_copies(pb->t, p, c, info.ncopies);
  lua_createtable(L, (int)info.ncopies, 0);
  for (size_t i = 0; i < info.ncopies; i++) {
    lua_createtable(L, 3, 0);
    lua_pushinteger(L, c[i].pos);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, kvbm_block_id(c[i].src));
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, kvbm_block_id(c[i].dst));
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_remove(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, 3);
  lua_setfield(L, -2, "copies");
  lua_pushinteger(L, (lua_Integer)info.seq);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, kind_names[info.kind]);
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, (lua_Integer)p);
  lua_setfield(L, -2, "_plan");
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, (lua_Integer)p);
  lua_remove(L, -2);
}

/* ------------------------------------------------------------- context */

/* The context is a table { tiers = <the Tiers table> } whose methods are
 * closures over the planner box: a hook's ctx:present(h, "G2") is one C
 * call, no lookup. */
static PlannerBox *ctx_planner(lua_State *L) {
  PlannerBox *pb = lua_touserdata(L, lua_upvalueindex(1));
  if (!pb->t) tiers_error(L, "kvbm.tiers: the planner is closed");
  return pb;
}

static int ctx_present(lua_State *L) {
  PlannerBox *pb = ctx_planner(L);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  int tier = tier_of(pb, checktiername(L, 3));
  lua_pushboolean(L, tier != KVBM_NO_TIER && kvbm_tiers_present(pb->t, (unsigned)tier, h));
  return 1;
}

static int ctx_frequency(lua_State *L) {
  PlannerBox *pb = ctx_planner(L);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  lua_pushinteger(L, kvbm_registry_frequency(kvbm_manager_registry(pb->mb[0]->m), h));
  return 1;
}

static int ctx_manager(lua_State *L) {
  PlannerBox *pb = ctx_planner(L);
  int tier = tier_of(pb, checktiername(L, 2));
  if (tier == KVBM_NO_TIER) return 0;
  lua_getiuservalue(L, lua_upvalueindex(1), UV_MANAGERS);
  lua_rawgeti(L, -1, tier + 1);
  return 1;
}

/* Pushes a new context for the planner box at pidx and the Tiers table at tidx. */
static void pushctx(lua_State *L, int pidx, int tidx) {
  static const luaL_Reg methods[] = {
      {"present", ctx_present}, {"frequency", ctx_frequency}, {"manager", ctx_manager}, {NULL, NULL}};
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, tidx);
  lua_setfield(L, -2, "tiers");
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, pidx);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushliteral(L, CTX_MT);
  lua_setfield(L, -2, "__name");
  lua_setmetatable(L, -2);
}

/* ------------------------------------------------------------ planner */

/* kvbm._tiers.new(tiers_table, managers_by_name, policy): the policy is a
 * table of hooks or the name of a built-in rule. */
static int planner_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  int pt = lua_type(L, 3);
  if (pt != LUA_TNONE && pt != LUA_TNIL && pt != LUA_TTABLE && pt != LUA_TSTRING)
    return tiers_error(L, "kvbm.tiers: policy must be a table of hooks or the name of a built-in rule, got %s",
                      luaL_typename(L, 3));
  PlannerBox *pb = lua_newuserdatauv(L, sizeof *pb, UV_COUNT);
  memset(pb, 0, sizeof *pb);
  pb->err_ref = LUA_NOREF;
  luaL_setmetatable(L, PLANNER_MT);
  int pidx = lua_gettop(L);
  kvbm_tiers_config cfg = {.alloc = lkvbm_allocator(L)};
  lua_createtable(L, KVBM_MAX_TIERS, 0);
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    if (lua_getfield(L, 2, tier_names[i]) == LUA_TNIL) {
      lua_pop(L, 1);
      continue;
    }
    pb->mb[i] = lkvbm_checkmanager(L, -1);
    cfg.tier[i] = pb->mb[i]->m;
    lua_rawseti(L, -2, i + 1);
  }
  lua_setiuservalue(L, pidx, UV_MANAGERS);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, pidx, UV_TIERS);
  lua_createtable(L, H_COUNT, 0);
  if (lua_type(L, 3) == LUA_TSTRING) {
    static const char *const rules[] = {
#define RULE_NAME(name, lua) lua,
        KVBM_TIER_RULE_MAP(RULE_NAME)
#undef RULE_NAME
            NULL};
    cfg.rule = (kvbm_tier_rule)luaL_checkoption(L, 3, NULL, rules);
  } else if (lua_type(L, 3) == LUA_TTABLE) {
    for (int h = 0; h < H_COUNT; h++) {
      lua_getfield(L, 3, hook_names[h]);
      pb->has[h] = lua_isfunction(L, -1);
      lua_rawseti(L, -2, h + 1);
    }
  }
  lua_setiuservalue(L, pidx, UV_HOOKS);
  if (pb->has[H_ON_REGISTER] || pb->has[H_REGISTER_BATCH]) cfg.hooks.on_register = hook_on_register;
  if (pb->has[H_ON_INACTIVE] || pb->has[H_INACTIVE_BATCH]) cfg.hooks.on_inactive = hook_on_inactive;
  if (pb->has[H_ONBOARD]) cfg.hooks.onboard = hook_onboard;
  cfg.hooks.ud = pb;
  pushctx(L, pidx, 1);
  lua_setiuservalue(L, pidx, UV_CTX);
  lkvbm_newweaktable(L, "v");
  lua_setiuservalue(L, pidx, UV_PLANS);
  lkvbm_newweaktable(L, "k");
  lua_setiuservalue(L, pidx, UV_WAITING);
  int rc = kvbm_tiers_new(&cfg, &pb->t);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_settop(L, pidx);
  return 1;
}

static int planner_close(lua_State *L) {
  PlannerBox *pb = luaL_checkudata(L, 1, PLANNER_MT);
  if (!pb->t) return 0;
  int open = 1;
  for (int i = 0; i < KVBM_MAX_TIERS; i++) open &= !pb->mb[i] || pb->mb[i]->m != NULL;
  /* a manager closed first took its blocks with it: the planner cannot give
   * them back, and is left (a leak, not a crash) */
  if (open) kvbm_tiers_free(pb->t);
  pb->t = NULL;
  return 0;
}

/* Brings waiting up to date in the requests that wait for onboards. */
static void sync_waiting(lua_State *L, int pidx) {
  lua_getiuservalue(L, pidx, UV_WAITING);
  int w = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, w)) {
    lua_pop(L, 1);
    lua_getfield(L, -1, "_r");
    RequestBox *rq = lua_touserdata(L, -1);
    lua_pop(L, 1);
    size_t n = rq && rq->r ? kvbm_tiers_request_waiting(rq->r) : 0;
    lua_pushinteger(L, (lua_Integer)n);
    lua_setfield(L, -2, "waiting");
    if (n == 0) { /* removing the current key is allowed during lua_next */
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, w);
    }
  }
  lua_pop(L, 1);
}

/* core.admit(t, seq, rs): admits the full blocks of seq for the
 * RequestSequence rs (a table; tiers.lua checked it) and fills rs in:
 * returns rs, or nil, err when G1 cannot hold it (rs unchanged). */
static int planner_admit(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  kvbm_sequence *s = lkvbm_tosequence(L, 2);
  if (!s) return tiers_error(L, "kvbm.tiers: admit needs a kvbm.sequence");
  luaL_checktype(L, 3, LUA_TTABLE);
  pushplannerbox(L, 1);
  int pidx = lua_gettop(L);
  RequestBox *rq = lua_newuserdatauv(L, sizeof *rq, 1);
  rq->r = NULL;
  luaL_setmetatable(L, REQUEST_MT);
  lua_pushvalue(L, pidx);
  lua_setiuservalue(L, -2, 1);
  int bidx = lua_gettop(L);
  PlanCall pc;
  call_begin(L, pb, pidx, &pc);
  int rc = kvbm_tiers_admit(pb->t, kvbm_sequence_hashes(s), kvbm_sequence_blocks(s), &rq->r);
  call_end(L, pb, &pc);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_pushvalue(L, 3);
  int ridx = lua_gettop(L);
  lua_pushvalue(L, bidx);
  lua_setfield(L, ridx, "_r");
  lua_pushvalue(L, 2);
  lua_setfield(L, ridx, "seq");
  lua_getiuservalue(L, pidx, UV_TIERS);
  lua_setfield(L, ridx, "tiers");
  lua_pushinteger(L, (lua_Integer)kvbm_tiers_request_matched(rq->r));
  lua_setfield(L, ridx, "matched");
  size_t waiting = kvbm_tiers_request_waiting(rq->r);
  lua_pushinteger(L, (lua_Integer)waiting);
  lua_setfield(L, ridx, "waiting");
  /* its onboard plans now, while they are pending (the host reads them next) */
  kvbm_plan ps[KVBM_MAX_TIERS];
  size_t n = kvbm_tiers_request_onboard(rq->r, ps, KVBM_MAX_TIERS);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    pushplan(L, pidx, pb, ps[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, ridx, "onboard");
  /* the blocks found cached: G1 hits, and those copied up from below */
  size_t found = kvbm_tiers_request_matched(rq->r);
  for (size_t i = 0; i < n; i++) {
    kvbm_plan_info info;
    if (kvbm_tiers_plan_info(pb->t, ps[i], &info) == 0) found += info.ncopies;
  }
  lua_pushinteger(L, (lua_Integer)found);
  lua_setfield(L, ridx, "_prefix");
  if (waiting > 0) {
    lua_getiuservalue(L, pidx, UV_WAITING);
    lua_pushvalue(L, ridx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  lua_settop(L, ridx);
  return 1;
}

static int planner_complete(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  kvbm_plan p = KVBM_NO_BLOCK;
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_getfield(L, 2, "_plan");
    if (lua_isinteger(L, -1)) p = (kvbm_plan)lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  int ok = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
  kvbm_plan_info info;
  if (p == KVBM_NO_BLOCK || kvbm_tiers_plan_info(pb->t, p, &info) < 0)
    return tiers_error(L, "kvbm.tiers: unknown or already completed plan");
  pushplannerbox(L, 1);
  int pidx = lua_gettop(L);
  PlanCall pc;
  call_begin(L, pb, pidx, &pc);
  int rc = kvbm_tiers_complete(pb->t, p, ok);
  call_end(L, pb, &pc);
  sync_waiting(L, pidx);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int planner_complete_all(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  pushplannerbox(L, 1);
  int pidx = lua_gettop(L);
  PlanCall pc;
  call_begin(L, pb, pidx, &pc);
  int rc = kvbm_tiers_complete_all(pb->t);
  call_end(L, pb, &pc);
  sync_waiting(L, pidx);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_pushinteger(L, rc);
  return 1;
}

static int planner_plans(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  pushplannerbox(L, 1);
  int pidx = lua_gettop(L);
  size_t n = kvbm_tiers_plans(pb->t, NULL, 0);
  kvbm_plan *ps = lua_newuserdatauv(L, (n ? n : 1) * sizeof *ps, 0);
  (void)kvbm_tiers_plans(pb->t, ps, n);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    pushplan(L, pidx, pb, ps[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* t:presence(h): { G1 = bool, ... } for the planner's tiers. */
static int planner_presence(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  lua_createtable(L, 0, KVBM_MAX_TIERS);
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    if (!pb->mb[i]) continue;
    lua_pushboolean(L, kvbm_tiers_present(pb->t, (unsigned)i, h));
    lua_setfield(L, -2, tier_names[i]);
  }
  return 1;
}

/* t:_planned(tier, h): a pending plan copies h into tier. */
static int planner_planned(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  int tier = tier_of(pb, checktiername(L, 2));
  kvbm_hash h = lkvbm_checkhash(L, 3);
  lua_pushboolean(L, tier != KVBM_NO_TIER && kvbm_tiers_planned(pb->t, (unsigned)tier, h));
  return 1;
}

static void setcount(lua_State *L, const char *k, uint64_t v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, k);
}

/* t:_stats(): the planner's counters, tiers by name. */
static int planner_stats(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  kvbm_tiers_stats s;
  kvbm_tiers_get_stats(pb->t, &s);
  lua_createtable(L, 0, 12);
  setcount(L, "requests", s.requests);
  setcount(L, "rejected", s.rejected);
  setcount(L, "blocks", s.blocks);
  setcount(L, "onboards", s.onboards);
  setcount(L, "offloads", s.offloads);
  setcount(L, "offloads_skipped", s.offloads_skipped);
  setcount(L, "plans_made", s.plans_made);
  setcount(L, "plans_failed", s.plans_failed);
  setcount(L, "pending", s.pending);
  lua_createtable(L, 0, KVBM_MAX_TIERS);
  lua_createtable(L, 0, KVBM_MAX_TIERS);
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    if (!pb->mb[i]) continue;
    lua_pushinteger(L, (lua_Integer)s.tier[i].hits);
    lua_setfield(L, -3, tier_names[i]);
    lua_createtable(L, 0, 4);
    setcount(L, "hits", s.tier[i].hits);
    setcount(L, "copies_in", s.tier[i].copies_in);
    setcount(L, "copies_out", s.tier[i].copies_out);
    setcount(L, "skipped", s.tier[i].skipped);
    lua_setfield(L, -2, tier_names[i]);
  }
  lua_setfield(L, -3, "per_tier");
  lua_setfield(L, -2, "hits");
  return 1;
}

static int planner_ctx(lua_State *L) {
  checkplanner(L, 1);
  pushplannerbox(L, 1);
  lua_getiuservalue(L, -1, UV_CTX);
  return 1;
}

/* ------------------------------------------------------------ requests */

/* The request (table) at idx; pushes its planner box. */
static RequestBox *checkrequest(lua_State *L, int idx, PlannerBox **pbp) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_getfield(L, idx, "_r");
  RequestBox *rq = luaL_testudata(L, -1, REQUEST_MT);
  if (!rq) tiers_error(L, "kvbm.tiers: a request of kvbm.tiers expected");
  lua_getiuservalue(L, -1, 1);
  lua_remove(L, -2);
  *pbp = checkplanner(L, -1);
  if (!rq->r) tiers_error(L, "kvbm.tiers: not an admitted request");
  return rq;
}

/* rs:commit() (RequestSequence.commit is this function). */
static int request_commit(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_getfield(L, 1, "_r") != LUA_TUSERDATA) { /* false: not admitted now */
    int was = lua_getfield(L, 1, "tiers") == LUA_TTABLE;
    return tiers_error(L, was ? "commit after release: the request's admission ended (admit it again)"
                              : "commit: the request was not admitted through kvbm.tiers");
  }
  lua_pop(L, 1);
  PlannerBox *pb;
  RequestBox *rq = checkrequest(L, 1, &pb);
  if (kvbm_tiers_request_waiting(rq->r) > 0)
    return tiers_error(L, "kvbm.tiers: commit before the request's onboard plans completed");
  PlanCall pc;
  call_begin(L, pb, -1, &pc);
  int rc = kvbm_tiers_commit(pb->t, rq->r);
  call_end(L, pb, &pc);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_pushinteger(L, rc);
  return 1;
}

/* The request ends in the planner: its pending onboards are abandoned, the
 * G1 blocks it still holds are released (to the policy) and it is freed. */
static int request_release(lua_State *L) {
  PlannerBox *pb;
  RequestBox *rq = checkrequest(L, 1, &pb);
  PlanCall pc;
  call_begin(L, pb, -1, &pc);
  int rc = kvbm_tiers_release(pb->t, rq->r);
  kvbm_tiers_request_free(pb->t, rq->r);
  rq->r = NULL;
  call_end(L, pb, &pc);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 0;
}

/* Element i of the list at index list: a guard of type mt, of G1 when live. */
static BlockBox *g1_guard(lua_State *L, PlannerBox *pb, int list, lua_Integer i, const char *mt) {
  lua_rawgeti(L, list, i);
  BlockBox *bb = lkvbm_testguard(L, -1, mt); /* live, or released (retired) */
  if (!bb) tiers_error(L, "kvbm.tiers: %s expected at index %d, got %s", mt, (int)i, lkvbm_kind(L, -1));
  lua_pop(L, 1);
  if (bb->live && bb->mb != pb->mb[0]) tiers_error(L, "kvbm.tiers: block %d is not a block of G1", (int)i);
  return bb;
}

/* core.take(rs, method): the request's G1 blocks as a list of
 * ImmutableBlock guards, by position; the planner's request holds none
 * afterwards. method names the user's call in the error before the commit. */
static int request_take(lua_State *L) {
  PlannerBox *pb;
  RequestBox *rq = checkrequest(L, 1, &pb);
  const char *method = luaL_optstring(L, 2, "take");
  size_t n = kvbm_tiers_request_blocks(rq->r);
  ManagerBox *g1 = pb->mb[0];
  kvbm_block *b = lua_newuserdatauv(L, (n ? n : 1) * sizeof *b, 0);
  BlockBox **to = lua_newuserdatauv(L, (n ? n : 1) * sizeof(BlockBox *), 0);
  lua_createtable(L, (int)n, 0); /* the guards exist before the planner hands anything over */
  for (size_t i = 0; i < n; i++) {
    to[i] = lkvbm_pushblock(L, g1, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lkvbm_manager_pin(L, g1);
  int rc = kvbm_tiers_request_take(pb->t, rq->r, b, n);
  if (rc >= 0)
    for (size_t i = 0; i < n; i++) {
      to[i]->b = b[i];
      lkvbm_guard_on(L, to[i]);
    }
  lkvbm_manager_unpin(L, g1);
  if (rc == KVBM_ESTATE)
    return tiers_error(L, "%s: the request's blocks are not all in G1 yet (commit it once its onboard plans "
                          "are complete)", method);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 1;
}

/* core.register(t, completes, seq, first, out): registers CompleteBlocks
 * of G1 (a list: the sequence's positions first, first + 1, ...) through
 * the planner, so that on_register sees them; fills the table out with
 * their ImmutableBlock guards, in order, and returns it, or nil, err (the
 * blocks stay complete). out is filled before a policy error is raised. */
static int planner_register(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  kvbm_sequence *s = lkvbm_tosequence(L, 3);
  if (!s) return tiers_error(L, "kvbm.tiers: register needs a kvbm.sequence");
  lua_Integer first = luaL_checkinteger(L, 4);
  size_t n = lua_rawlen(L, 2);
  if (first < 0 || (size_t)first + n > kvbm_sequence_blocks(s) || (size_t)first + n > UINT32_MAX)
    return tiers_error(L, "kvbm.tiers: blocks %d..%d are not full blocks of the sequence", (int)first,
                      (int)(first + (lua_Integer)n) - 1);
  ManagerBox *g1 = pb->mb[0];
  size_t m = n ? n : 1;
  kvbm_block *in = lua_newuserdatauv(L, m * 2 * sizeof *in, 0), *out = in + m;
  uint32_t *pos = lua_newuserdatauv(L, m * sizeof *pos, 0);
  BlockBox **from = lua_newuserdatauv(L, m * 2 * sizeof(BlockBox *), 0), **to = from + m;
  luaL_checktype(L, 5, LUA_TTABLE);
  int t = 5;
  for (size_t i = 0; i < n; i++) {
    from[i] = g1_guard(L, pb, 2, (lua_Integer)i + 1, LKVBM_COMPLETE_MT);
    if (!from[i]->live) return tiers_error(L, "kvbm.tiers: block %d is released or consumed", (int)i + 1);
    in[i] = from[i]->b;
    pos[i] = (uint32_t)first + (uint32_t)i;
    to[i] = lkvbm_pushblock(L, g1, LKVBM_IMMUTABLE_MT, KVBM_NO_BLOCK);
    lua_rawseti(L, t, (lua_Integer)i + 1);
  }
  pushplannerbox(L, 1);
  PlanCall pc;
  call_begin(L, pb, -1, &pc);
  int rc = kvbm_tiers_register(pb->t, in, kvbm_sequence_hashes(s) + first, pos, n, out);
  int done = n > 0 && out[0] != KVBM_NO_BLOCK; /* registered, even if the policy failed after */
  if (done)
    for (size_t i = 0; i < n; i++) { /* out holds the new guards, the list the old ones */
      to[i]->b = out[i];
      lkvbm_guard_on(L, to[i]);
      lkvbm_guard_off(L, from[i]);
    }
  else
    for (size_t i = 0; i < n; i++) {
      lua_pushnil(L);
      lua_rawseti(L, t, (lua_Integer)i + 1);
    }
  call_end(L, pb, &pc);
  if (rc == KVBM_EINVAL && !done) return tiers_error(L, "kvbm.tiers: the same CompleteBlock is listed twice");
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_settop(L, t);
  return 1;
}

/* core.let_go(t, immutables, first): releases ImmutableBlock guards of G1
 * (positions first, first + 1, ...; released ones are skipped) through the
 * planner: those that go inactive reach on_inactive. */
static int planner_let_go(lua_State *L) {
  PlannerBox *pb = checkplanner(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer first = luaL_checkinteger(L, 3);
  size_t n = lua_rawlen(L, 2), k = 0;
  luaL_argcheck(L, first >= 0 && (size_t)first + n <= UINT32_MAX, 3, "position out of range");
  ManagerBox *g1 = pb->mb[0];
  size_t m = n ? n : 1;
  kvbm_hash *h = lua_newuserdatauv(L, m * sizeof *h, 0);
  kvbm_block *b = lua_newuserdatauv(L, m * sizeof *b, 0);
  uint32_t *pos = lua_newuserdatauv(L, m * sizeof *pos, 0);
  BlockBox **bb = lua_newuserdatauv(L, m * sizeof(BlockBox *), 0);
  for (size_t i = 0; i < n; i++) { /* every check before anything is released */
    BlockBox *x = g1_guard(L, pb, 2, (lua_Integer)i + 1, LKVBM_IMMUTABLE_MT);
    if (!x->live) continue;
    bb[k] = x;
    b[k] = x->b;
    (void)kvbm_block_hash_of(g1->m, x->b, &h[k]);
    pos[k++] = (uint32_t)first + (uint32_t)i;
  }
  for (size_t i = 0; i < k; i++) lkvbm_guard_off(L, bb[i]); /* the planner lets go of them: consumed */
  pushplannerbox(L, 1);
  PlanCall pc;
  call_begin(L, pb, -1, &pc);
  int rc = kvbm_tiers_let_go(pb->t, 0, b, h, pos, k);
  call_end(L, pb, &pc);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 0;
}

static int request_gc(lua_State *L) {
  RequestBox *rq = lua_touserdata(L, 1);
  lua_getiuservalue(L, 1, 1);
  PlannerBox *pb = lua_touserdata(L, -1);
  if (pb && pb->in_call && lua_getmetatable(L, 1)) { /* an eviction policy runs mid-call: later */
    lua_setmetatable(L, 1);
    return 0;
  }
  if (rq->r && pb && pb->t) {
    int open = 1;
    for (int i = 0; i < KVBM_MAX_TIERS; i++) open &= !pb->mb[i] || pb->mb[i]->m != NULL;
    if (open) kvbm_tiers_request_free(pb->t, rq->r);
  }
  rq->r = NULL;
  return 0;
}

/* --------------------------------------------------------------- open */

void lkvbm_open_tiers(lua_State *L) {
  static const luaL_Reg planner_meta[] = {{"__gc", planner_close}, {"__close", planner_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"new", planner_new},
      {"close", planner_close},
      {"admit", planner_admit},
      {"complete", planner_complete},
      {"complete_all", planner_complete_all},
      {"plans", planner_plans},
      {"presence", planner_presence},
      {"planned", planner_planned},
      {"stats", planner_stats},
      {"ctx", planner_ctx},
      {"commit", request_commit},
      {"release", request_release},
      {"take", request_take},
      {"register", planner_register},
      {"let_go", planner_let_go},
      {NULL, NULL},
  };
  lkvbm_newclass(L, PLANNER_MT, planner_meta, NULL);
  luaL_newmetatable(L, REQUEST_MT); /* the box: only a finalizer */
  lua_pushcfunction(L, request_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "_tiers");
}
