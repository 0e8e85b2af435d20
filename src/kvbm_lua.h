/*
 * kvbm_lua.h - for hosts that embed Lua 5.4 and want the kvbm module.
 *
 *   luaL_requiref(L, "kvbm", luaopen_kvbm, 0);
 *
 * The binding allocates through the state's own allocator (lua_getallocf).
 */
#ifndef KVBM_LUA_H
#define KVBM_LUA_H

#include <lua.h>

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

KVBM_API int luaopen_kvbm(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
