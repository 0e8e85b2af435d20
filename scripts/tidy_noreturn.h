/* tidy_noreturn.h - force-included by `make analyze-clang-tidy` only.
 * Lua's error functions never return (they longjmp), but lua.h and lauxlib.h
 * do not say so; without this the analyzer follows the impossible path after
 * luaL_argcheck or luaL_typeerror and reports it. A redeclaration may add
 * the attribute. */
#include <lauxlib.h>
#include <lua.h>

__attribute__((noreturn)) int lua_error(lua_State *L);
__attribute__((noreturn)) int luaL_error(lua_State *L, const char *fmt, ...);
__attribute__((noreturn)) int luaL_argerror(lua_State *L, int arg, const char *extramsg);
__attribute__((noreturn)) int luaL_typeerror(lua_State *L, int arg, const char *tname);
