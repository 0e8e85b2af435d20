/* lcorecall.c - the protocol around core calls.
 *
 * No Lua runs inside a core call for an eviction policy: the core queues
 * its notifications, and the binding asks for victims before a call that
 * may evict (lkvbm_policy_prepare: on_events, then victims()) and delivers
 * the rest after the call (lkvbm_core_end), between core calls, where a
 * finalizer releasing a block or a policy reading a manager is harmless. A
 * policy only may not make its own manager evict (lkvbm_enter_evict).
 *
 * What remains is for the Lua events policy (reg->lua_hooks), which the
 * core calls inside a registration, and so in the middle of it. While it
 * may run:
 *   - the registry box is marked busy, and every binding entry point that
 *     would reach the same registry refuses (lkvbm_enter raises);
 *   - the garbage collector is paused, so that no finalizer releases a
 *     block half-way (a finalizer that still runs while busy asks to be
 *     finalized again later: lkvbm_defer_if_busy).
 * And always: registrations that end are only recorded (the on_remove hook
 * runs inside the core, where no Lua may run); their Lua attachments are
 * dropped after the call (lkvbm_flush_removed).
 * This file owns the busy flag, the GC pause, the deferred removals and the
 * end-of-call delivery; the rest of the binding brackets its core calls
 * with lkvbm_core_begin / lkvbm_core_end (or lkvbm_registry_begin / _end).
 */
#include "lkvbm.h"

void lkvbm_enter(lua_State *L, RegistryBox *rb) {
  if (rb->busy)
    luaL_error(L, "kvbm: re-entrant call: the events policy of this registry is running (inside a registration)");
}

void lkvbm_enter_evict(lua_State *L, ManagerBox *mb) {
  lkvbm_enter(L, mb->reg);
  if (mb->in_policy)
    luaL_error(L, "kvbm: re-entrant call: the eviction policy of manager %s is running, and cannot "
               "make its own manager evict (allocate, reset_inactive, close)", kvbm_manager_name(mb->m));
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
}

void lkvbm_registry_end(lua_State *L, RegistryBox *rb, CoreCall *cc) {
  if (cc->calls_lua) rb->busy = 0;
  if (cc->paused_gc) lua_gc(L, LUA_GCRESTART);
  lkvbm_flush_removed(L, rb);
}

/* No Lua runs inside the core unless there is a Lua events policy (on new
 * registrations). */
void lkvbm_core_begin(lua_State *L, ManagerBox *mb, CoreCall *cc) {
  lkvbm_registry_begin(L, mb->reg, mb->reg->lua_hooks, cc);
}

void lkvbm_core_end(lua_State *L, ManagerBox *mb, CoreCall *cc) {
  lkvbm_registry_end(L, mb->reg, cc);
  lkvbm_policy_flush(mb); /* outside: the policy may call anything but an eviction of mb */
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
