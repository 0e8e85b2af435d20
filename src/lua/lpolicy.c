/* lpolicy.c - eviction policies written in Lua. The core keeps the index and
 * its correctness; the policy table only orders victims:
 *   on_insert(id, h), on_remove(id, h), victims(n) --> {id...}
 * or, instead of the first two, on_events(list): the notifications in order
 * (also misses and new registrations, with each block's position, parent
 * and frequency).
 * No Lua runs inside a core call: the policy is a deferred kvbm_policy, so
 * the core only queues notifications, and they are delivered (to on_events,
 * or one on_insert/on_remove call each) and victims() is asked by
 * kvbm_policy_prepare before a call that may evict and by kvbm_policy_flush
 * when a call ends (lcorecall.c), between core calls. While one of its
 * functions runs the manager is marked (in_policy): the policy may read
 * anything, call other managers and let the collector release blocks, but
 * not make its own manager evict (lkvbm_enter_evict).
 * Every call is protected: an error or a bad answer is counted by the core
 * (kvbm_metrics.policy_errors), kept with its traceback (m:policy_errors())
 * and the built-in order is used instead. */
#include <stdio.h>

#include "lkvbm.h"

/* Pushes policy[name] ready to call; 0 when the policy has no such function. */
static int getfunc(ManagerBox *mb, const char *name) {
  lua_State *L = mb->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, mb->policy_ref);
  lua_getfield(L, -1, name);
  lua_remove(L, -2);
  if (lua_isfunction(L, -1)) return 1;
  lua_pop(L, 1);
  return 0;
}

/* A protected call of the policy function pushed below its nargs
 * arguments: a failure is kept (m:policy_errors()) with its traceback. */
static int call(ManagerBox *mb, const char *name, int nargs, int nresults) {
  return lkvbm_pcall_keep(mb->L, nargs, nresults, name, mb->policy_error, sizeof mb->policy_error);
}

/* A policy without on_events: one protected call of on_insert or on_remove
 * per notification of that kind; < 0 when one failed. */
static int notify_each(ManagerBox *mb, const kvbm_policy_event *ev, size_t n) {
  lua_State *L = mb->L;
  int rc = 0;
  if (!lua_checkstack(L, 5)) return -1;
  for (size_t i = 0; i < n; i++) {
    const char *name = ev[i].kind == KVBM_POLICY_INSERT ? "on_insert"
                     : ev[i].kind == KVBM_POLICY_REMOVE ? "on_remove" : NULL;
    if (!name || !getfunc(mb, name)) continue;
    lua_pushinteger(L, ev[i].block_id);
    lkvbm_pushhash(L, ev[i].hash);
    if (call(mb, name, 2, 0) != LUA_OK) rc = -1;
  }
  return rc;
}

static const char *const event_kinds[] = {
#define EVENT_NAME(name, lua_name) lua_name,
    KVBM_POLICY_EVENT_MAP(EVENT_NAME)
#undef EVENT_NAME
};

/* One call of on_events({ {kind, id, hash, position, parent, frequency}, ... }):
 * parent is the parent fragment (kvbm.hash.parent(h); a block b is the parent
 * when kvbm.hash.parent_for_child(b, position) equals it), id is
 * absent for a miss, frequency is the registry's estimate (0 without a tracker). */
static int push_events(ManagerBox *mb, const kvbm_policy_event *ev, size_t n) {
  lua_State *L = mb->L;
  if (!lua_checkstack(L, 8) || !getfunc(mb, "on_events")) return -1;
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, event_kinds[ev[i].kind]);
    lua_setfield(L, -2, "kind");
    if (ev[i].kind != KVBM_POLICY_MISS) {
      lua_pushinteger(L, ev[i].block_id);
      lua_setfield(L, -2, "id");
    }
    lkvbm_pushhash(L, ev[i].hash);
    lua_setfield(L, -2, "hash");
    lua_pushinteger(L, (lua_Integer)kvbm_hash_position(ev[i].hash));
    lua_setfield(L, -2, "position");
    lua_pushinteger(L, (lua_Integer)kvbm_hash_parent_fragment(ev[i].hash));
    lua_setfield(L, -2, "parent");
    lua_pushinteger(L, (lua_Integer)kvbm_registry_frequency(mb->reg->r, ev[i].hash));
    lua_setfield(L, -2, "frequency");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return call(mb, "on_events", 1, 0) == LUA_OK ? 0 : -1;
}

static int on_events(void *ud, const kvbm_policy_event *ev, size_t n) {
  ManagerBox *mb = ud;
  mb->in_policy++;
  int rc = mb->batched ? push_events(mb, ev, n) : notify_each(mb, ev, n);
  mb->in_policy--;
  return rc;
}

/* victims(n) into out: how many ids, or -1 (the core falls back for all). */
static int ask_victims(ManagerBox *mb, size_t n, uint32_t *out) {
  lua_State *L = mb->L;
  if (!lua_checkstack(L, 5) || !getfunc(mb, "victims")) return -1;
  lua_pushinteger(L, (lua_Integer)n);
  if (call(mb, "victims", 1, 1) != LUA_OK) return -1;
  if (!lua_istable(L, -1)) {
    snprintf(mb->policy_error, sizeof mb->policy_error,
             "victims: returned a %s, expected a list of block ids", luaL_typename(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  size_t k = 0;
  for (;; k++) {
    int isint;
    lua_rawgeti(L, -1, (lua_Integer)k + 1);
    lua_Integer id = lua_tointegerx(L, -1, &isint);
    int done = lua_isnil(L, -1);
    if (!done && k < n && (!isint || id < 0 || id > (lua_Integer)UINT32_MAX))
      snprintf(mb->policy_error, sizeof mb->policy_error,
               "victims: entry %d is not a block id (a %s)", (int)k + 1, luaL_typename(L, -1));
    lua_pop(L, 1);
    if (done || k == n) break;
    if (!isint || id < 0 || id > (lua_Integer)UINT32_MAX) {
      lua_pop(L, 1);
      return -1; /* garbage: the core falls back for all of it */
    }
    out[k] = (uint32_t)id;
  }
  lua_pop(L, 1);
  return (int)k;
}

static int victims(void *ud, size_t n, uint32_t *out) {
  ManagerBox *mb = ud;
  mb->in_policy++;
  int rc = ask_victims(mb, n, out);
  mb->in_policy--;
  return rc;
}

void lkvbm_policy_prepare(ManagerBox *mb, size_t n) {
  if (mb->policy_ref != LUA_NOREF && mb->m) (void)kvbm_policy_prepare(mb->m, n);
}

void lkvbm_policy_flush(ManagerBox *mb) {
  if (mb->policy_ref != LUA_NOREF && mb->m) (void)kvbm_policy_flush(mb->m);
}

void lkvbm_policy_init(lua_State *L, ManagerBox *mb, int idx, kvbm_policy *p) {
  lua_pushvalue(L, idx);
  mb->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD); /* never a coroutine's state */
  mb->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  *p = (kvbm_policy){.victims = victims, .on_events = on_events, .ud = mb, .deferred = 1};
  lua_getfield(L, idx, "on_events");
  mb->batched = lua_isfunction(L, -1);
  lua_pop(L, 1);
}

void lkvbm_policy_free(lua_State *L, ManagerBox *mb) {
  if (mb->policy_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, mb->policy_ref);
  mb->policy_ref = LUA_NOREF;
}
