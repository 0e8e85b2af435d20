/*
 * kvbm_lua.h - libkvbm-lua, for hosts that embed Lua 5.4 and want the
 * kvbm module:
 *
 *   cc host.c $(pkg-config --cflags --libs kvbm-lua lua5.4)
 *
 *   luaL_requiref(L, "kvbm", luaopen_kvbm, 0);   (leaves the module on the stack)
 *   kvbm_lua_push_manager(L, m);                 (a kvbm.Manager for m)
 *
 * The binding allocates through the state's own allocator (lua_getallocf)
 * for the objects Lua creates; objects made in C keep their own allocator.
 * Every symbol of this library is luaopen_kvbm or starts with kvbm_lua_.
 */
#ifndef KVBM_LUA_H
#define KVBM_LUA_H

#include <lua.h>

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The module table (a lua_CFunction for luaL_requiref / package.preload). */
KVBM_API int luaopen_kvbm(lua_State *L);
/* The same function, under the name a module that forwards to this library
 * calls (kvbm.so defines its own luaopen_kvbm). */
KVBM_API int kvbm_lua_open(lua_State *L);

/* Pushes the kvbm.Registry of r, creating it on first use (the Lua object
 * takes a reference: r stays the caller's too, kvbm_registry_release it as
 * usual). The binding takes over r's hooks (kvbm_registry_set_hooks): do not
 * set your own on a registry you hand to Lua. Loads the module if it is not. */
KVBM_API void kvbm_lua_push_registry(lua_State *L, kvbm_registry *r);

/* Pushes the kvbm.Manager of m (and the kvbm.Registry of its registry),
 * creating it on first use. Lua takes m over: m:close() or the collector
 * frees it, so the caller must not kvbm_manager_free it, and may use m from
 * C only while that Lua object is open (keep a reference to it, e.g. in a
 * global). Loads the module if it is not. */
KVBM_API void kvbm_lua_push_manager(lua_State *L, kvbm_manager *m);

#ifdef __cplusplus
}
#endif
#endif
