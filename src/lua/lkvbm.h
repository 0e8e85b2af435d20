/* lkvbm.h - private to the Lua binding: metatable names, check/push helpers. */
#ifndef LKVBM_H
#define LKVBM_H

#include <lauxlib.h>
#include <lua.h>

#include "kvbm.h"

#define LKVBM_ERROR_MT "kvbm.Error"
#define LKVBM_SEQUENCE_MT "kvbm.Sequence"

/* The allocator every kvbm object made from this state uses: Lua's own,
 * wrapped to count live allocations for kvbm._debug.live(). */
const kvbm_allocator *lkvbm_allocator(lua_State *L);

/* Pushes nil and an error table {code=, message=} (plus detail fields the
 * caller sets on the table at -1 afterwards). Returns 2. */
int lkvbm_pusherror(lua_State *L, int rc);

/* 16-byte big-endian hash strings. */
kvbm_hash lkvbm_checkhash(lua_State *L, int idx);
void lkvbm_pushhash(lua_State *L, kvbm_hash h);

/* Integers read as unsigned 64-bit bit patterns. */
uint64_t lkvbm_checku64(lua_State *L, int idx);
/* Reads table idx as an array of u32 tokens into a fresh scratch userdata
 * pushed on the stack; raises on a non-integer or out-of-range token. */
uint32_t *lkvbm_checktokens(lua_State *L, int idx, size_t *n);

void lkvbm_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

int lkvbm_open_hash(lua_State *L);     /* pushes the kvbm.hash table */
void lkvbm_open_sequence(lua_State *L); /* sets kvbm.sequence on the table at -1 */

#endif
