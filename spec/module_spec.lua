-- require "kvbm" from a stock lua5.4, the way users load the module.
local helpers = require "helpers"

describe("the kvbm.so module", function()
  it("loads into lua5.4 from the build tree", function()
    local lua = os.getenv("KVBM_LUA") or "lua5.4"
    local env = "LUA_CPATH=" .. helpers.shell_quote(helpers.builddir() .. "/.libs/?.so") .. " "
    if (os.getenv("KVBM_SANITIZERS") or "") ~= "" then
      -- an instrumented module needs the ASan runtime first in an uninstrumented lua5.4
      local rt = helpers.run("gcc -print-file-name=libasan.so"):gsub("%s+$", "")
      env = env .. "ASAN_OPTIONS=detect_leaks=0 LD_PRELOAD=" .. helpers.shell_quote(rt) .. " "
    end
    local code = 'local k = require "kvbm"; print(k._VERSION, k.hash.tostring(k.sequence({0,1,2,3,4,5,6,7}, 4, 1337):hash(1)))'
    local out, status = helpers.run(env .. helpers.shell_quote(lua) .. " -e " .. helpers.shell_quote(code) .. " 2>&1")
    assert.are.equal(0, status, out)
    assert.matches("^kvbm %d+%.%d+%.%d+\t1:P5PmJLYPXS4:12KUtXWCDJu\n$", out)
  end)

  it("exports only luaopen_kvbm", function()
    local out, status = helpers.run("nm -D --defined-only " .. helpers.shell_quote(helpers.builddir() .. "/.libs/kvbm.so")
      .. " | awk '$2 == \"T\" { print $3 }'")
    assert.are.equal(0, status)
    assert.are.equal("luaopen_kvbm\n", out)
  end)

  it("exports only kvbm_* symbols from libkvbm", function()
    local out = helpers.run("nm -D --defined-only " .. helpers.shell_quote(helpers.builddir() .. "/.libs/libkvbm.so")
      .. " | awk '$2 == \"T\" { print $3 }'")
    assert.is_true(#out > 0)
    for name in out:gmatch("%S+") do assert.matches("^kvbm_", name) end
  end)
end)

describe("one error type (doc/errors.md)", function()
  it("the engine's and the pure-Lua modules' errors share the kvbm.Error metatable", function()
    local m = assert(kvbm.manager { blocks = 1, block_size = 4, registry = kvbm.registry {} })
    local _, engine_err = m:allocate(5)
    assert.are.equal("no_space", engine_err.code)
    local la = kvbm.logical()
    local blocks = assert(m:allocate(1))
    assert(la:extend_blocks(blocks))
    local _, lua_err = la:extend_blocks { blocks[1], blocks[1] }
    assert.is_not_nil(lua_err, "the pure-Lua layer reports an expected failure")
    assert.are.equal(getmetatable(engine_err), getmetatable(lua_err))
    assert.are.equal("kvbm.Error", getmetatable(lua_err).__name)
    assert.are.equal(lua_err.code .. ": " .. lua_err.message, tostring(lua_err))
  end)

  it("kvbm.new_error builds one, keeping detail fields", function()
    local e = kvbm.new_error("not_idle", "expected Idle state", { state = "x" })
    assert.are.equal("not_idle", e.code)
    assert.are.equal("x", e.state)
    assert.are.equal("not_idle: expected Idle state", tostring(e))
    local _, engine_err = kvbm.wire.decode("")
    assert.are.equal(getmetatable(engine_err), getmetatable(e))
    assert.has_error(function() kvbm.new_error(1) end)
  end)
end)
