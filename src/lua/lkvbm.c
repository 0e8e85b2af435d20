/* lkvbm.c - luaopen_kvbm: the module table, errors, the counting allocator. */
#include <stdint.h>
#include <stdio.h>
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

int lkvbm_grow(const kvbm_allocator *a, void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap : 8;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2 / elem) return KVBM_ENOMEM;
    ncap *= 2;
  }
  void *p = a->fn(a->ud, *arr, *arr ? *cap * elem : 0, ncap * elem);
  if (!p) return KVBM_ENOMEM;
  *arr = p;
  *cap = ncap;
  return 0;
}

void lkvbm_free(const kvbm_allocator *a, void *ptr, size_t size) {
  if (ptr) (void)a->fn(a->ud, ptr, size, 0);
}

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
  luaL_checktype(L, 1, LUA_TSTRING); /* no number coercion: a code is a lower_snake name */
  luaL_checktype(L, 2, LUA_TSTRING);
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

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int lkvbm_pcall_keep(lua_State *L, int nargs, int nresults, const char *what, char *err, size_t size) {
  int base = lua_gettop(L) - nargs; /* the function */
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nresults, base);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    snprintf(err, size, "%s: %s", what, msg ? msg : "(error in the error handler)");
    lua_pop(L, 1);
  }
  lua_remove(L, base);
  return rc;
}

/* Pushes "<what> must be an integer in lo..hi, got <value>" for the value at idx. */
static const char *pushrange_error(lua_State *L, int idx, const char *what, lua_Integer lo, lua_Integer hi) {
  char got[64];
  lua_Number x = lua_tonumber(L, idx);
  if (lua_isinteger(L, idx))
    snprintf(got, sizeof got, LUA_INTEGER_FMT, lua_tointeger(L, idx));
  else if (lua_type(L, idx) != LUA_TNUMBER)
    snprintf(got, sizeof got, "a %s", lkvbm_kind(L, idx));
  else if (x != x)
    snprintf(got, sizeof got, "nan");
  else
    snprintf(got, sizeof got, "%.17g", (double)x); /* exact: 2^53 is not 9.007199254741e+15 */
  return lua_pushfstring(L, "%s must be an integer in %I..%I, got %s", what, lo, hi, got);
}

static int inrange(lua_State *L, int idx, lua_Integer lo, lua_Integer hi, lua_Integer *out) {
  int isint = 0;
  lua_Integer v = lua_type(L, idx) == LUA_TNUMBER ? lua_tointegerx(L, idx, &isint) : 0;
  *out = v;
  return isint && v >= lo && v <= hi;
}

lua_Integer lkvbm_checkrange(lua_State *L, int idx, const char *what, lua_Integer lo, lua_Integer hi) {
  lua_Integer v;
  idx = lua_absindex(L, idx);
  if (!inrange(L, idx, lo, hi, &v)) {
    pushrange_error(L, idx, what, lo, hi);
    lua_error(L);
  }
  return v;
}

int lkvbm_torange(lua_State *L, int idx, const char *what, lua_Integer lo, lua_Integer hi, lua_Integer *out) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TNUMBER) (void)lkvbm_checkrange(L, idx, what, lo, hi); /* raises */
  if (inrange(L, idx, lo, hi, out)) return 1;
  pushrange_error(L, idx, what, lo, hi);
  return 0;
}

const char *lkvbm_kind(lua_State *L, int idx) {
  const char *name = NULL;
  int t = luaL_getmetafield(L, idx, "__name"); /* reads idx before it pushes */
  if (t == LUA_TSTRING) name = lua_tostring(L, -1); /* the metatable keeps it */
  if (t != LUA_TNIL) lua_pop(L, 1);
  return name ? name : luaL_typename(L, idx);
}

int lkvbm_checkchoice(lua_State *L, int idx, const char *what, const char *const *names) {
  const char *s = lua_type(L, idx) == LUA_TSTRING ? lua_tostring(L, idx) : NULL;
  for (int i = 0; s && names[i]; i++)
    if (strcmp(names[i], s) == 0) return i;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; names[i]; i++) {
    if (i) luaL_addstring(&b, ", ");
    luaL_addstring(&b, names[i]);
  }
  luaL_pushresult(&b);
  if (s)
    return luaL_error(L, "%s must be one of %s, got '%s'", what, lua_tostring(L, -1), s);
  return luaL_error(L, "%s must be one of %s, got a %s", what, lua_tostring(L, -1), lkvbm_kind(L, idx));
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

void lkvbm_newweaktable(lua_State *L, const char *mode) {
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
}

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

void lkvbm_subtable(lua_State *L, int mod, const char *name) {
  if (lua_getfield(L, mod, name) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, mod, name);
  }
}

void lkvbm_newclass_up(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods, int nup) {
  int up = lua_gettop(L) - nup + 1;
  luaL_newmetatable(L, name);
  for (int i = 0; i < nup; i++) lua_pushvalue(L, up + i);
  luaL_setfuncs(L, meta, nup);
  if (methods) {
    lua_newtable(L);
    for (int i = 0; i < nup; i++) lua_pushvalue(L, up + i);
    luaL_setfuncs(L, methods, nup);
    lua_setfield(L, -2, "__index");
  }
  lua_settop(L, up - 1);
}

void lkvbm_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods) {
  lkvbm_newclass_up(L, name, meta, methods, 0);
}

/* Pushes the metatable registered under name, found by the name's address. */
static int getmetatable_fast(lua_State *L, const char *name) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, name) == LUA_TTABLE) return 1;
  lua_pop(L, 1);
  if (luaL_getmetatable(L, name) != LUA_TTABLE) return 0; /* leaves nil */
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, name);
  return 1;
}

void lkvbm_setmetatable(lua_State *L, const char *name) {
  getmetatable_fast(L, name);
  lua_setmetatable(L, -2);
}

void *lkvbm_testudata(lua_State *L, int idx, const char *name) {
  void *p = lua_touserdata(L, idx);
  if (!p || !lua_getmetatable(L, idx)) return NULL;
  getmetatable_fast(L, name);
  int same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? p : NULL;
}

void *lkvbm_checkudata(lua_State *L, int idx, const char *name) {
  void *p = lkvbm_testudata(L, idx, name);
  return p ? p : luaL_checkudata(L, idx, name); /* raises with Lua's own message */
}

/* ------------------------------------------------------------ module */

/* kvbm.<name> for the pure-Lua parts loads lua/kvbm/<name>.lua on first
 * use, so `kvbm.tiers{...}` works without a separate require. The module's
 * metatable lists them as __lazy too, for the REPL's completion. */
static const char *const lazy_modules[] = {"logical", "request", "scheduled", "tiers", "replay", "repl", "sim", NULL};

static int lazy_index(lua_State *L) {
  const char *name = lua_tostring(L, 2);
  for (const char *const *k = lazy_modules; name && *k; k++) {
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

KVBM_API int kvbm_lua_open(lua_State *L) {
  static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
  static const luaL_Reg debug_funcs[] = {{"live", debug_live}, {NULL, NULL}};
  luaL_checkversion(L);
  if ((kvbm_version() >> 16) != KVBM_VERSION_MAJOR || kvbm_version() < KVBM_VERSION_HEX)
    return luaL_error(L, "kvbm: library %s does not match headers " KVBM_VERSION_STRING,
                      kvbm_version_string());
  binding_state(L);
  lkvbm_newclass(L, LKVBM_ERROR_MT, error_meta, NULL);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &boxes_key) != LUA_TTABLE) {
    lkvbm_newweaktable(L, "v");
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
  lkvbm_open_tiers(L);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, lazy_index);
  lua_setfield(L, -2, "__index");
  lua_newtable(L);
  for (int i = 0; lazy_modules[i]; i++) {
    lua_pushstring(L, lazy_modules[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "__lazy");
  lua_setmetatable(L, -2);
  return 1;
}

KVBM_API int luaopen_kvbm(lua_State *L) { return kvbm_lua_open(L); }
