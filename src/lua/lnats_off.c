/* lnats_off.c - kvbm.sink.nats and kvbm.sub.nats in a build without NATS
 * (configure --without-nats, or no libnats): calling them raises, saying
 * so; kvbm.features.nats is false. lnats.c is the real thing. */
#include "lkvbm.h"

const kvbm_sink *lkvbm_tosink(lua_State *L, int idx) {
  (void)L, (void)idx;
  return NULL;
}

static int not_built(lua_State *L) {
  return luaL_error(L, "kvbm was built without NATS (libnats missing or configure --without-nats)");
}

void lkvbm_open_nats(lua_State *L) {
  static const char *const tables[] = {"sink", "sub"};
  int mod = lua_gettop(L);
  for (int i = 0; i < 2; i++) {
    lkvbm_subtable(L, mod, tables[i]);
    lua_pushcfunction(L, not_built);
    lua_setfield(L, -2, "nats");
    lua_pop(L, 1);
  }
  lkvbm_subtable(L, mod, "features");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "nats");
  lua_pop(L, 1);
}
