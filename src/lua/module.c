/* module.c - kvbm.so, the module `require "kvbm"` loads into a stock
 * lua5.4: the binding itself is libkvbm-lua, which this links. */
#include "kvbm_lua.h"

KVBM_API int luaopen_kvbm(lua_State *L) { return kvbm_lua_open(L); }
