/* lembed.c - kvbm_lua.h's functions for hosts: C-created registries and
 * managers handed to a Lua state. */
#include <string.h>

#include "kvbm_lua.h"
#include "lkvbm.h"

/* The classes exist once luaopen_kvbm has run in this state. */
static void ensure_module(lua_State *L) {
  int loaded = luaL_getmetatable(L, LKVBM_MANAGER_MT) == LUA_TTABLE;
  lua_pop(L, 1);
  if (!loaded) {
    luaL_requiref(L, "kvbm", luaopen_kvbm, 0);
    lua_pop(L, 1);
  }
}

KVBM_API void kvbm_lua_push_registry(lua_State *L, kvbm_registry *r) {
  ensure_module(L);
  /* a box found under r's address is r's while that box is open */
  if (lkvbm_getbox(L, r) == LUA_TUSERDATA && ((RegistryBox *)lua_touserdata(L, -1))->r == r) return;
  lua_pop(L, 1);
  RegistryBox *rb = lkvbm_newregistrybox(L); /* may raise: nothing retained yet */
  kvbm_registry_retain(r);
  lkvbm_adoptregistry(L, rb, r);
}

KVBM_API void kvbm_lua_push_manager(lua_State *L, kvbm_manager *m) {
  ensure_module(L);
  if (lkvbm_getbox(L, m) == LUA_TUSERDATA && ((ManagerBox *)lua_touserdata(L, -1))->m == m) return;
  lua_pop(L, 1);
  kvbm_lua_push_registry(L, kvbm_manager_registry(m));
  RegistryBox *rb = lua_touserdata(L, -1);
  ManagerBox *mb = lua_newuserdatauv(L, sizeof *mb, 2);
  memset(mb, 0, sizeof *mb);
  mb->reg = rb;
  mb->policy_ref = LUA_NOREF; /* a C backend or C policy */
  mb->anchor = LUA_NOREF;
  lua_pushthread(L);
  mb->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  luaL_setmetatable(L, LKVBM_MANAGER_MT);
  lua_insert(L, -2);
  lua_setiuservalue(L, -2, 1); /* the manager keeps its registry alive */
  mb->m = m;
  lkvbm_setbox(L, m, -1);
  lkvbm_setbox(L, mb, -1); /* its first live guard finds it (lkvbm_guard_on) */
}
