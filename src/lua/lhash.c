/* lhash.c - kvbm.hash: positional lineage hashes as 16-byte strings. */
#include <string.h>

#include "lkvbm.h"

kvbm_hash lkvbm_checkhash(lua_State *L, int idx) {
  size_t len;
  /* no number coercion: 1 << 53 reads as the 16 digits "9007199254740992" */
  if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "16-byte sequence hash");
  const char *s = lua_tolstring(L, idx, &len);
  if (len != 16) luaL_argerror(L, idx, "expected a 16-byte sequence hash");
  kvbm_hash h = kvbm_hash_from_bytes((const unsigned char *)s);
  if (!kvbm_hash_valid(h)) luaL_argerror(L, idx, "malformed sequence hash (mode bits 11)");
  return h;
}

void lkvbm_pushhash(lua_State *L, kvbm_hash h) {
  unsigned char b[16];
  kvbm_hash_to_bytes(h, b);
  lua_pushlstring(L, (const char *)b, sizeof b);
}

/* A position argument of a query (no hash is made): out of range is misuse. */
static uint64_t checkposition(lua_State *L, int idx) {
  lua_Integer pos = luaL_checkinteger(L, idx);
  if (pos < 0 || pos > (lua_Integer)KVBM_MAX_POSITION)
    luaL_argerror(L, idx, kvbm_strerror(KVBM_EPOSITION_LIMIT));
  return (uint64_t)pos;
}

/* A position beyond 2^24 - 1 is a limit the data reaches (doc/errors.md):
 * nil, err with err.code "position_limit" and err.position. */
static int position_limit(lua_State *L, lua_Integer pos) {
  lkvbm_pusherror(L, KVBM_EPOSITION_LIMIT);
  lua_pushinteger(L, pos);
  lua_setfield(L, -2, "position");
  return 2;
}

static int hash_new(lua_State *L) {
  uint64_t current = lkvbm_checku64(L, 1);
  int has_parent = !lua_isnoneornil(L, 2);
  uint64_t parent = has_parent ? lkvbm_checku64(L, 2) : 0;
  lua_Integer pos = luaL_checkinteger(L, 3);
  luaL_argcheck(L, pos >= 0, 3, "position must be non-negative");
  kvbm_hash h;
  if (kvbm_hash_new(current, has_parent, parent, (uint64_t)pos, &h) < 0) return position_limit(L, pos);
  lkvbm_pushhash(L, h);
  return 1;
}

static int hash_extend(lua_State *L) {
  kvbm_hash parent = lkvbm_checkhash(L, 1), child;
  uint64_t bh = lkvbm_checku64(L, 2);
  if (kvbm_hash_extend(parent, bh, &child) < 0)
    return position_limit(L, (lua_Integer)kvbm_hash_position(parent) + 1);
  lkvbm_pushhash(L, child);
  return 1;
}

static int hash_position(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_hash_position(lkvbm_checkhash(L, 1)));
  return 1;
}

static int hash_current(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_hash_current(lkvbm_checkhash(L, 1)));
  return 1;
}

static int hash_parent(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_hash_parent_fragment(lkvbm_checkhash(L, 1)));
  return 1;
}

static int hash_parent_for_child(lua_State *L) {
  kvbm_hash h = lkvbm_checkhash(L, 1);
  lua_pushinteger(L, (lua_Integer)kvbm_hash_parent_fragment_for_child(h, checkposition(L, 2)));
  return 1;
}

static int hash_mode(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_hash_mode(lkvbm_checkhash(L, 1)));
  return 1;
}

static int hash_tostring(lua_State *L) {
  char buf[KVBM_HASH_STRLEN];
  int n = kvbm_hash_format(lkvbm_checkhash(L, 1), buf, sizeof buf);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int hash_hex(lua_State *L) {
  static const char digits[] = "0123456789abcdef";
  size_t len;
  if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "16-byte sequence hash"); /* no number coercion */
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, 1, &len);
  luaL_argcheck(L, len == 16, 1, "expected a 16-byte sequence hash");
  char out[32];
  for (size_t i = 0; i < 16; i++) out[2 * i] = digits[s[i] >> 4], out[2 * i + 1] = digits[s[i] & 15];
  lua_pushlstring(L, out, sizeof out);
  return 1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int hash_from_hex(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  unsigned char b[16];
  /* parsing text: bad input is an expected failure, nil + invalid_hash */
  int ok = 1;
  if (len == 34 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2, len -= 2;
  ok = len == 32;
  for (size_t i = 0; ok && i < 16; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    ok = hi >= 0 && lo >= 0;
    if (ok) b[i] = (unsigned char)(hi << 4 | lo);
  }
  if (!ok || !kvbm_hash_valid(kvbm_hash_from_bytes(b))) {
    lkvbm_pusherror(L, KVBM_EBAD_HASH);
    lua_pushstring(L, ok ? "malformed sequence hash (mode bits 11)" : "expected 32 hex digits (optionally after 0x)");
    lua_setfield(L, -2, "message");
    return 2;
  }
  lua_pushlstring(L, (const char *)b, sizeof b);
  return 1;
}

static int hash_block(lua_State *L) {
  size_t n;
  uint64_t salt = lua_isnoneornil(L, 2) ? 0 : lkvbm_checku64(L, 2);
  uint32_t *toks = lkvbm_checktokens(L, 1, &n); /* pushes a scratch buffer */
  lua_pushinteger(L, (lua_Integer)kvbm_block_hash(toks, n, salt));
  return 1;
}

static int hash_chain(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_chain_hash(lkvbm_checku64(L, 1), lkvbm_checku64(L, 2)));
  return 1;
}

static int hash_compare(lua_State *L) {
  lua_pushinteger(L, kvbm_hash_cmp(lkvbm_checkhash(L, 1), lkvbm_checkhash(L, 2)));
  return 1;
}

static int hash_lt(lua_State *L) {
  lua_pushboolean(L, kvbm_hash_cmp(lkvbm_checkhash(L, 1), lkvbm_checkhash(L, 2)) < 0);
  return 1;
}

int lkvbm_open_hash(lua_State *L) {
  static const luaL_Reg funcs[] = {
      {"new", hash_new},
      {"extend", hash_extend},
      {"position", hash_position},
      {"current", hash_current},
      {"parent", hash_parent},
      {"parent_for_child", hash_parent_for_child},
      {"mode", hash_mode},
      {"tostring", hash_tostring},
      {"hex", hash_hex},
      {"from_hex", hash_from_hex},
      {"block", hash_block},
      {"chain", hash_chain},
      {"compare", hash_compare},
      {"lt", hash_lt},
      {NULL, NULL},
  };
  luaL_newlib(L, funcs);
  lua_pushinteger(L, KVBM_MAX_POSITION);
  lua_setfield(L, -2, "MAX_POSITION");
  lua_pushinteger(L, KVBM_CHAIN_SEED);
  lua_setfield(L, -2, "CHAIN_SEED");
  return 1;
}
