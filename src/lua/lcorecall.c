/* lcorecall.c - the protocol around core calls that may run Lua.
 *
 * A core operation (allocate, register, release, ...) can call back into
 * Lua: a Lua eviction policy, or a Lua events policy on new registrations.
 * While it does, the core is in the middle of the operation, so:
 *   - the registry box is marked busy, and every binding entry point that
 *     would reach the same registry refuses (lkvbm_enter raises);
 *   - the garbage collector is paused, so that no finalizer releases a
 *     block half-way (a finalizer that still runs while busy asks to be
 *     finalized again later: lkvbm_defer_if_busy);
 *   - registrations that end are only recorded (the on_remove hook runs
 *     inside the core, where no Lua may run); their Lua attachments are
 *     dropped after the call (lkvbm_flush_removed).
 * This file owns the busy flag, the GC pause and the deferred removals;
 * the rest of the binding brackets its core calls with lkvbm_core_begin /
 * lkvbm_core_end (or lkvbm_registry_begin / _end) and nothing else.
 */
#include "lkvbm.h"

void lkvbm_enter(lua_State *L, RegistryBox *rb) {
  if (rb->busy)
    luaL_error(L, "kvbm: re-entrant call: %s", rb->running ? rb->running : LKVBM_RUNNING_EVICTION);
}

/* on_remove hook: no Lua here (this runs inside a core operation). */
void lkvbm_registry_removed(void *ud, kvbm_hash h) {
  RegistryBox *rb = ud;
  if (rb->attached == 0) return;
  if (lkvbm_grow(rb->alloc, (void **)&rb->removed, &rb->removed_cap, rb->nremoved + 1,
                 sizeof *rb->removed) == 0)
    rb->removed[rb->nremoved++] = h;
}

void lkvbm_flush_removed(lua_State *L, RegistryBox *rb) {
  if (rb->nremoved == 0 || rb->busy) return; /* busy: the bracket's end flushes */
  if (lkvbm_getbox(L, rb) != LUA_TUSERDATA) {
    lua_pop(L, 1); /* being collected: its attachments go with it */
    rb->nremoved = 0;
    return;
  }
  int ridx = lua_gettop(L);
  while (rb->nremoved > 0) {
    kvbm_hash h = rb->removed[--rb->nremoved];
    if (kvbm_registry_is_registered(rb->r, h)) continue; /* registered again since */
    lua_getiuservalue(L, ridx, 1);
    lkvbm_pushhash(L, h);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lkvbm_pushhash(L, h);
      lua_pushnil(L);
      lua_rawset(L, -4);
      rb->attached--;
    }
    lua_pop(L, 2);
  }
  lua_pop(L, 1);
}

void lkvbm_registry_begin(lua_State *L, RegistryBox *rb, int calls_lua, CoreCall *cc) {
  cc->paused_gc = 0;
  cc->calls_lua = calls_lua;
  /* A handle release may have ended a registration since the last core
   * call; drop its attachments now, before this call can register the hash
   * again (a fresh registration must not see the old ones). */
  lkvbm_flush_removed(L, rb);
  if (!calls_lua) return;
  if (lua_gc(L, LUA_GCISRUNNING)) {
    lua_gc(L, LUA_GCSTOP);
    cc->paused_gc = 1;
  }
  rb->busy = 1;
  /* the eviction policy's calls say so themselves (lpolicy.c) */
  rb->running = rb->lua_hooks ? LKVBM_RUNNING_EVENTS : LKVBM_RUNNING_EVICTION;
}

void lkvbm_registry_end(lua_State *L, RegistryBox *rb, CoreCall *cc) {
  if (cc->calls_lua) rb->busy = 0;
  if (cc->paused_gc) lua_gc(L, LUA_GCRESTART);
  lkvbm_flush_removed(L, rb);
}

/* No Lua runs inside the core unless there is a Lua eviction policy or a
 * Lua events policy (on new registrations). */
void lkvbm_core_begin(lua_State *L, ManagerBox *mb, CoreCall *cc) {
  lkvbm_registry_begin(L, mb->reg, mb->policy_ref != LUA_NOREF || mb->reg->lua_hooks, cc);
}

void lkvbm_core_end(lua_State *L, ManagerBox *mb, CoreCall *cc) {
  lkvbm_policy_flush(mb); /* still bracketed: re-entry from the policy is refused */
  lkvbm_registry_end(L, mb->reg, cc);
}

int lkvbm_defer_if_busy(lua_State *L, RegistryBox *rb, int idx, int from_gc) {
  if (!rb->busy) return 0;
  if (from_gc && lua_getmetatable(L, idx)) { /* finalize again in a later cycle */
    lua_setmetatable(L, idx);
    return 1;
  }
  lkvbm_enter(L, rb); /* raises */
  return 0;
}
