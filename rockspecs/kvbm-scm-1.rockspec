-- LuaRocks: `luarocks make rockspecs/kvbm-scm-1.rockspec` from the source tree
-- builds kvbm.so (core and binding in one module, no configure needed) with
-- rockspecs/Makefile and installs it with the pure-Lua modules (kvbm.tiers,
-- kvbm.sim, ...). NATS (kvbm.sink.nats) is built in when pkg-config finds
-- libnats.
rockspec_format = "3.0"
package = "kvbm"
version = "scm-1"
source = {
  url = "git+https://github.com/kvbm/kvbm.git",
}
description = {
  summary = "Logical lifecycle engine for KV-cache blocks, with a Lua 5.4 binding",
  detailed = [[
Hashing of token blocks (Dynamo-compatible), block pools with registration,
reuse and eviction policies, a shared registry across tiers, and KV events.]],
  homepage = "https://github.com/kvbm/kvbm",
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBEV = { header = "ev.h", library = "ev" },
  XXHASH = { header = "xxhash.h" },
  JANSSON = { header = "jansson.h", library = "jansson" },
}
build = {
  type = "make",
  makefile = "rockspecs/Makefile",
  build_variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    LIBEV_INCDIR = "$(LIBEV_INCDIR)",
    LIBEV_LIBDIR = "$(LIBEV_LIBDIR)",
    XXHASH_INCDIR = "$(XXHASH_INCDIR)",
  },
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_LUADIR = "$(LUADIR)",
  },
}
