/* lwire.c - kvbm.wire: KvbmCacheEvents <-> MessagePack (rmp-serde bytes).
 *
 *   kvbm.wire.encode{ kind = "create"|"remove"|"shutdown", hashes = {h...},
 *                     instance_id = <integer or 16-byte big-endian string> } --> bytes
 *   kvbm.wire.decode(bytes) --> batch  |  nil, err (err.code == "decode_error",
 *                                          err.message, err.offset)
 *
 * encode raises on programming errors; decode never raises on bad bytes. */
#include <string.h>

#include "lkvbm.h"

static const char *const kind_names[] = {"create", "remove", "shutdown", NULL};

/* Reads the u128 at idx: an integer (unsigned 64-bit bit pattern, high word
 * 0) or a 16-byte big-endian string. Raises otherwise. */
static kvbm_instance_id check_instance_id(lua_State *L, int idx) {
  kvbm_instance_id id = {0, 0};
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: {
    int isint;
    lua_Integer v = lua_tointegerx(L, idx, &isint); /* floats only when exact */
    if (!isint) luaL_error(L, "batch.instance_id: number has no integer representation");
    id.lo = (uint64_t)v;
    return id;
  }
  case LUA_TSTRING: {
    size_t len;
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, idx, &len);
    if (len != 16)
      luaL_error(L, "batch.instance_id: expected an integer or a 16-byte big-endian string, got a %d-byte string",
                 (int)len);
    for (int i = 0; i < 8; i++) {
      id.hi = id.hi << 8 | s[i];
      id.lo = id.lo << 8 | s[8 + i];
    }
    return id;
  }
  case LUA_TNIL:
    luaL_error(L, "batch.instance_id is required");
    return id;
  default:
    luaL_error(L, "batch.instance_id: expected an integer or a 16-byte big-endian string, got %s",
               luaL_typename(L, idx));
    return id;
  }
}

static void push_instance_id(lua_State *L, kvbm_instance_id id) {
  if (id.hi == 0 && id.lo <= (uint64_t)INT64_MAX) {
    lua_pushinteger(L, (lua_Integer)id.lo);
  } else {
    unsigned char b[16];
    for (int i = 0; i < 8; i++) {
      b[i] = (unsigned char)(id.hi >> (56 - 8 * i));
      b[8 + i] = (unsigned char)(id.lo >> (56 - 8 * i));
    }
    lua_pushlstring(L, (const char *)b, sizeof b);
  }
}

static int wire_encode(lua_State *L) {
  kvbm_batch b;
  luaL_checktype(L, 1, LUA_TTABLE);

  lua_getfield(L, 1, "kind");
  if (lua_type(L, -1) != LUA_TSTRING)
    return luaL_error(L, "batch.kind: expected \"create\", \"remove\" or \"shutdown\", got %s",
                      luaL_typename(L, -1));
  int k = -1;
  for (int i = 0; kind_names[i]; i++)
    if (strcmp(kind_names[i], lua_tostring(L, -1)) == 0) k = i;
  if (k < 0)
    return luaL_error(L, "batch.kind: expected \"create\", \"remove\" or \"shutdown\", got \"%s\"",
                      lua_tostring(L, -1));
  b.kind = (kvbm_event_kind)k;
  lua_pop(L, 1);

  lua_getfield(L, 1, "instance_id");
  b.instance_id = check_instance_id(L, -1);
  lua_pop(L, 1);

  int t = lua_getfield(L, 1, "hashes");
  size_t n = 0;
  if (t == LUA_TNIL) {
    if (b.kind != KVBM_EVENT_SHUTDOWN) return luaL_error(L, "batch.hashes is required for %s", kind_names[k]);
  } else {
    if (t != LUA_TTABLE) return luaL_error(L, "batch.hashes: expected a table, got %s", luaL_typename(L, -1));
    n = (size_t)lua_rawlen(L, -1);
    if (n && b.kind == KVBM_EVENT_SHUTDOWN) return luaL_error(L, "batch.hashes: a shutdown carries no hashes");
    if (n > UINT32_MAX) return luaL_error(L, "batch.hashes: too many hashes");
  }
  int hidx = lua_gettop(L);
  /* scratch buffers as userdata, so that an error does not leak them */
  kvbm_hash *hs = lua_newuserdatauv(L, (n ? n : 1) * sizeof *hs, 0);
  for (size_t i = 0; i < n; i++) {
    size_t len;
    lua_rawgeti(L, hidx, (lua_Integer)i + 1);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!s || len != 16)
      return luaL_error(L, "batch.hashes[%d]: expected a 16-byte sequence hash, got %s", (int)(i + 1),
                        s ? "a string of another length" : luaL_typename(L, -1));
    hs[i] = kvbm_hash_from_bytes((const unsigned char *)s);
    if (!kvbm_hash_valid(hs[i]))
      return luaL_error(L, "batch.hashes[%d]: %s", (int)(i + 1), kvbm_strerror(KVBM_EBAD_HASH));
    lua_pop(L, 1);
  }
  b.hashes = hs;
  b.n = n;

  size_t size = kvbm_wire_encoded_size(n);
  if (size == SIZE_MAX) return luaL_error(L, "batch.hashes: too many hashes");
  luaL_Buffer buf;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &buf, size);
  int len = kvbm_wire_encode(&b, p, size);
  if (len < 0) return luaL_error(L, "kvbm.wire.encode: %s", kvbm_strerror(len)); /* not reached */
  luaL_pushresultsize(&buf, (size_t)len);
  return 1;
}

static int wire_decode(lua_State *L) {
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string"); /* no number coercion */
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, 1, &len);
  /* Every hash takes at least 18 bytes of input: room for all it can hold. */
  size_t cap = len / 18;
  kvbm_hash *hs = lua_newuserdatauv(L, (cap ? cap : 1) * sizeof *hs, 0);
  kvbm_batch b;
  const char *why = NULL;
  size_t where = 0;
  int rc = kvbm_wire_decode(s, len, &b, hs, cap, &why, &where);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    if (why) {
      lua_pushstring(L, why);
      lua_setfield(L, -2, "message");
    }
    lua_pushinteger(L, (lua_Integer)where);
    lua_setfield(L, -2, "offset");
    return 2;
  }
  lua_createtable(L, 0, 3);
  lua_pushstring(L, kind_names[b.kind]);
  lua_setfield(L, -2, "kind");
  lua_createtable(L, (int)(b.n < (size_t)INT32_MAX ? b.n : 0), 0);
  for (size_t i = 0; i < b.n; i++) {
    lkvbm_pushhash(L, b.hashes[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "hashes");
  push_instance_id(L, b.instance_id);
  lua_setfield(L, -2, "instance_id");
  return 1;
}

void lkvbm_open_wire(lua_State *L) {
  static const luaL_Reg funcs[] = {{"encode", wire_encode}, {"decode", wire_decode}, {NULL, NULL}};
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "wire");
}
