-- require "kvbm" from a stock lua5.4, the way users load the module.
local helpers = require "helpers"

describe("the kvbm.so module", function()
  local lua = helpers.tool("KVBM_LUA", "lua5.4")
  ;(lua and it or pending)("loads into lua5.4 from the build tree" .. (lua and "" or " (lua5.4 not found)"), function()
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

describe("doc/lua-api.md", function()
  local f = assert(io.open(helpers.srcdir() .. "/doc/lua-api.md"))
  local doc = f:read("a")
  f:close()
  local sections, current = {}, nil
  for line in (doc .. "\n"):gmatch("([^\n]*)\n") do
    local h = line:match("^## (.+)$")
    if h then current = h; sections[h] = "" elseif current then sections[current] = sections[current] .. line .. "\n" end
  end
  local function names_in(heading)
    local set = {}
    for n in heading:gmatch("[^, ]+") do set[n] = true end
    return set
  end
  local function section_of(name, after) -- after: what may follow the name in `...`
    for h, body in pairs(sections) do if names_in(h)[name] then return body end end
    local called = "`" .. name:gsub("%p", "%%%0") .. (after or "[%.%({]") -- `kvbm.logical(`, `kvbm.tiers{`
    for _, body in pairs(sections) do if body:find(called) then return body end end
  end

  local function public(k) return type(k) == "string" and not k:match("^_") and not k:match("^__") end

  it("documents every module function", function()
    for _, n in ipairs { "logical", "request", "scheduled", "tiers", "replay", "repl", "sim" } do local _ = kvbm[n] end
    local missing = {}
    local function walk(t, path, depth)
      for k, v in pairs(t) do
        if type(k) == "string" and (public(k) or k == "_debug") then
          local full = path .. "." .. k
          if type(v) == "function" then
            local body = section_of(path) or doc
            if not (body:find(full, 1, true) or body:find("%." .. k .. "%(") or body:find("%." .. k .. "`")) then
              missing[#missing + 1] = full
            end
          elseif type(v) == "table" and depth < 2 and getmetatable(v) ~= "kvbm.Error" then
            walk(v, full, depth + 1)
          end
        end
      end
    end
    walk(kvbm, "kvbm", 0)
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("documents every method of every object", function()
    local objects = {}
    for name, mt in pairs(debug.getregistry()) do
      if type(name) == "string" and name:match("^kvbm%.") and type(mt) == "table" and type(mt.__index) == "table" then
        objects[name] = mt.__index
      end
    end
    local m = assert(kvbm.manager { blocks = 8, block_size = 4, registry = kvbm.registry {} })
    objects["kvbm.LogicalBlockAssignments"] = getmetatable(kvbm.logical()).__index
    objects["kvbm.RequestSequence"] = getmetatable(kvbm.request.new({ 1, 2, 3, 4, 5 }, 8, 4)).__index
    objects["kvbm.SchedulableSequence"] = getmetatable(kvbm.scheduled.new({ 1, 2, 3, 4, 5 }, 8, 4)).__index
    local t = kvbm.tiers { G1 = { blocks = 8 } }
    objects["kvbm.Tiers"] = getmetatable(t).__index
    local r = assert(t:admit { 1, 2, 3, 4 })
    -- the planner's request is a RequestSequence, documented under that class
    assert.are.equal(objects["kvbm.RequestSequence"], getmetatable(r).__index)
    m:close()
    local missing = {}
    local function check(class, methods, where)
      local body = section_of(where or class, "`") -- a class named in the text: `kvbm.FileSink`
      for k, v in pairs(methods) do
        if public(k) and type(v) == "function" and not (body and body:find(":" .. k .. "[%({]")) then
          missing[#missing + 1] = class .. ":" .. k
        end
      end
    end
    for class, methods in pairs(objects) do check(class, methods) end
    table.sort(missing)
    assert.are.same({}, missing)
    assert.is_true(next(objects) ~= nil)
  end)
end)
