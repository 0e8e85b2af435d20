/* embed_lua.c - a C host that embeds Lua 5.4 with the kvbm module: it makes
 * a registry and a manager in C, hands the manager to Lua, runs a chunk
 * that uses it, and checks from C what the chunk did. `make check` builds it
 * in the tree and again against the installed tree
 * (spec/build/installed_host.sh); outside the tree:
 *   cc embed_lua.c $(pkg-config --cflags --libs kvbm-lua lua5.4) */
#include <stdio.h>

#include <lauxlib.h>
#include <lualib.h>

#include <kvbm_lua.h>

/* Runs in Lua with the manager as the global `pool`: fills two blocks of a
 * prompt, registers them, releases them into the inactive cache, and
 * returns how many a second request finds. */
static const char chunk[] =
    "local kvbm = require 'kvbm'\n"
    "local seq = kvbm.sequence({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 4, 1337)\n"
    "local blocks = assert(pool:allocate(2))\n"
    "local held = {}\n"
    "for i, b in ipairs(blocks) do\n"
    "  held[i] = pool:register(b:stage(seq:hash(i - 1)))\n"
    "end\n"
    "for _, b in ipairs(held) do b:release() end\n"
    "local found = pool:match({seq:hash(0), seq:hash(1)})\n"
    "local n = #found\n"
    "for _, b in ipairs(found) do b:release() end\n"
    "return n, kvbm.hash.tostring(seq:hash(1))\n";

static int step(int n, int ok, const char *what) {
  printf("%s %d - %s\n", ok ? "ok" : "not ok", n, what);
  return ok;
}

int main(void) {
  kvbm_registry *reg;
  kvbm_manager *m;
  int good = 1;

  kvbm_manager_config cfg = {.block_count = 4, .block_size = 4, .backend = KVBM_BACKEND_LRU,
                             .name = "c-pool"};
  if (kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg) < 0) return 1;
  cfg.registry = reg;
  if (kvbm_manager_new(&cfg, &m) < 0) return 1;

  lua_State *L = luaL_newstate();
  if (!L) return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "kvbm", luaopen_kvbm, 0);
  lua_pop(L, 1);
  kvbm_lua_push_manager(L, m); /* Lua owns m from here on */
  lua_setglobal(L, "pool");

  int rc = luaL_loadbuffer(L, chunk, sizeof chunk - 1, "=chunk") || lua_pcall(L, 0, 2, 0);
  good &= step(1, rc == LUA_OK, "the chunk runs over the manager made in C");
  if (rc != LUA_OK) printf("# %s\n", lua_tostring(L, -1));
  good &= step(2, rc == LUA_OK && lua_tointeger(L, -2) == 2,
               "Lua registered two blocks that a second request matches");
  good &= step(3, rc == LUA_OK && lua_isstring(L, -1), "kvbm.hash.tostring works in the host");
  if (rc == LUA_OK) printf("# block 1: %s\n", lua_tostring(L, -1));
  lua_settop(L, 0);
  /* the same manager, seen from C: the two blocks wait in its inactive cache */
  good &= step(4, kvbm_manager_inactive(m) == 2 && kvbm_manager_available(m) == 4,
               "C sees what Lua did (2 inactive, 4 available)");
  lua_getglobal(L, "pool");
  kvbm_lua_push_manager(L, m);
  good &= step(5, lua_rawequal(L, -1, -2), "pushing the manager again gives the same object");
  lua_settop(L, 0);
  kvbm_lua_push_registry(L, reg);
  luaL_getmetatable(L, "kvbm.Registry");
  lua_getmetatable(L, -2);
  good &= step(6, lua_rawequal(L, -1, -2), "the registry made in C is a kvbm.Registry");
  lua_settop(L, 0);
  printf("1..6\n");

  lua_close(L);              /* closes the manager (Lua owned it) */
  kvbm_registry_release(reg); /* the host's own reference */
  return good ? 0 : 1;
}
