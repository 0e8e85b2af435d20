/* lkvbm.c - luaopen_kvbm: the module table, errors, the counting allocator. */
#include <string.h>

#include "kvbm_lua.h"
#include "lkvbm.h"

/* Per-state binding data, kept in the registry under the address of this key. */
static const char state_key = 'k';

typedef struct {
  kvbm_allocator alloc; /* what kvbm objects get: counting_alloc over Lua's */
  lua_Alloc lua_alloc;
  void *lua_ud;
  lua_Integer live_allocs;
  lua_Integer live_bytes;
} BindingState;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  BindingState *bs = ud;
  void *p = bs->lua_alloc(bs->lua_ud, ptr, ptr ? osize : 0, nsize);
  if (nsize == 0) {
    if (ptr) bs->live_allocs--, bs->live_bytes -= (lua_Integer)osize;
  } else if (p) {
    if (!ptr) bs->live_allocs++;
    bs->live_bytes += (lua_Integer)nsize - (lua_Integer)(ptr ? osize : 0);
  }
  return p;
}

static BindingState *binding_state(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key);
  BindingState *bs = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (bs) return bs;
  bs = lua_newuserdatauv(L, sizeof *bs, 0);
  bs->lua_alloc = lua_getallocf(L, &bs->lua_ud);
  bs->alloc.fn = counting_alloc;
  bs->alloc.ud = bs;
  bs->live_allocs = bs->live_bytes = 0;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  return bs;
}

const kvbm_allocator *lkvbm_allocator(lua_State *L) { return &binding_state(L)->alloc; }

static int debug_live(lua_State *L) {
  BindingState *bs = binding_state(L);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, bs->live_allocs);
  lua_setfield(L, -2, "allocations");
  lua_pushinteger(L, bs->live_bytes);
  lua_setfield(L, -2, "bytes");
  return 1;
}

/* ------------------------------------------------------------ errors */

static int error_tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "code");
  lua_pushfstring(L, "%s: %s", lua_tostring(L, -1), lua_tostring(L, -2));
  return 1;
}

int lkvbm_pusherror(lua_State *L, int rc) {
  luaL_pushfail(L);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kvbm_err_name(rc));
  lua_setfield(L, -2, "code");
  lua_pushstring(L, kvbm_strerror(rc));
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, LKVBM_ERROR_MT);
  return 2;
}

/* kvbm.new_error(code, message [, fields]) -> the one kvbm.Error type, for
 * the pure-Lua modules' expected failures; fields (a table) becomes the
 * error, so its detail fields stay. */
static int new_error(lua_State *L) {
  luaL_checkstring(L, 1);
  luaL_checkstring(L, 2);
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_createtable(L, 0, 2);
  } else {
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_argcheck(L, lua_getmetatable(L, 3) == 0, 3, "a plain table of detail fields");
  }
  lua_pushvalue(L, 1);
  lua_setfield(L, 3, "code");
  lua_pushvalue(L, 2);
  lua_setfield(L, 3, "message");
  luaL_setmetatable(L, LKVBM_ERROR_MT);
  return 1;
}

/* ------------------------------------------------------------ helpers */

uint64_t lkvbm_checku64(lua_State *L, int idx) { return (uint64_t)luaL_checkinteger(L, idx); }

uint32_t *lkvbm_checktokens(lua_State *L, int idx, size_t *n) {
  if (lua_type(L, idx) == LUA_TSTRING) { /* packed: string.pack("<I4...") */
    size_t len;
    const char *p = lua_tolstring(L, idx, &len);
    if (len % 4) luaL_argerror(L, idx, "packed tokens must be a multiple of 4 bytes (u32 little-endian)");
    uint32_t *buf = lua_newuserdatauv(L, len ? len : 4, 0);
    for (size_t i = 0; i < len / 4; i++) {
      const unsigned char *q = (const unsigned char *)p + 4 * i;
      buf[i] = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 | (uint32_t)q[3] << 24;
    }
    *n = len / 4;
    return buf;
  }
  luaL_argexpected(L, lua_type(L, idx) == LUA_TTABLE, idx, "table or packed string");
  lua_Unsigned len = lua_rawlen(L, idx);
  uint32_t *buf = lua_newuserdatauv(L, (len ? len : 1) * sizeof *buf, 0);
  for (lua_Unsigned i = 0; i < len; i++) {
    int isint;
    lua_rawgeti(L, idx, (lua_Integer)i + 1);
    lua_Integer t = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER) isint = 0; /* no string coercion */
    if (!isint || t < 0 || t > (lua_Integer)UINT32_MAX)
      luaL_error(L, "bad token #%d: expected an integer in 0..2^32-1, got %s",
                 (int)(i + 1), isint ? lua_tostring(L, -1) : luaL_typename(L, -1));
    buf[i] = (uint32_t)t;
    lua_pop(L, 1);
  }
  *n = (size_t)len;
  return buf;
}

void lkvbm_checkoptions(lua_State *L, int idx, const char *const *known) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (const char *const *k = known; *k && !ok; k++) ok = strcmp(*k, lua_tostring(L, -2)) == 0;
    if (!ok) {
      lua_pop(L, 1);
      luaL_error(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
  }
}

/* Box address -> userdata, weak-valued: C callbacks that only hold a box
 * pointer find their Lua object without keeping it alive. */
static const char boxes_key = 'b';

void lkvbm_setbox(lua_State *L, const void *box, int idx) {
  idx = lua_absindex(L, idx);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &boxes_key);
  lua_pushvalue(L, idx);
  lua_rawsetp(L, -2, box);
  lua_pop(L, 1);
}

int lkvbm_getbox(lua_State *L, const void *box) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &boxes_key);
  int t = lua_rawgetp(L, -1, box);
  lua_remove(L, -2);
  return t;
}

void lkvbm_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  luaL_setfuncs(L, meta, 0);
  if (methods) {
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
}

/* ------------------------------------------------------------ module */

/* kvbm.<name> for the pure-Lua parts loads lua/kvbm/<name>.lua on first
 * use, so `kvbm.tiers{...}` works without a separate require. */
static int lazy_index(lua_State *L) {
  static const char *const lazy[] = {"logical", "request", "scheduled", "tiers", "replay", "repl", "sim", NULL};
  const char *name = lua_tostring(L, 2);
  for (const char *const *k = lazy; name && *k; k++) {
    if (strcmp(*k, name) != 0) continue;
    lua_getglobal(L, "require");
    lua_pushfstring(L, "kvbm.%s", name);
    lua_call(L, 1, 1);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1); /* cache it in the module table */
    return 1;
  }
  return 0;
}

KVBM_API int luaopen_kvbm(lua_State *L) {
  static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
  static const luaL_Reg debug_funcs[] = {{"live", debug_live}, {NULL, NULL}};
  luaL_checkversion(L);
  if ((kvbm_version() >> 16) != KVBM_VERSION_MAJOR || kvbm_version() < KVBM_VERSION_HEX)
    return luaL_error(L, "kvbm: library %s does not match headers " KVBM_VERSION_STRING,
                      kvbm_version_string());
  binding_state(L);
  lkvbm_newclass(L, LKVBM_ERROR_MT, error_meta, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &boxes_key) != LUA_TTABLE) {
    lua_newtable(L);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_pushvalue(L, -1);
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &boxes_key);
  }
  lua_pop(L, 1);

  lua_newtable(L);
  lua_pushliteral(L, "kvbm " KVBM_VERSION_STRING);
  lua_setfield(L, -2, "_VERSION");
  lua_pushcfunction(L, new_error);
  lua_setfield(L, -2, "new_error");
  lkvbm_open_hash(L);
  lua_setfield(L, -2, "hash");
  lkvbm_open_sequence(L);
  lkvbm_open_wire(L);
  luaL_newlib(L, debug_funcs);
  lua_setfield(L, -2, "_debug");
  lkvbm_open_registry(L);
  lkvbm_open_manager(L);
  lkvbm_open_blocks(L);
  lkvbm_open_blockset(L);
  lkvbm_open_assignments(L);
  lkvbm_open_events(L);
  lkvbm_open_nats(L);
  lkvbm_open_trace(L);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
  return 1;
}
