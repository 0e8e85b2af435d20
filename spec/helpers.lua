-- spec/helpers.lua - shared by the busted specs.
local kvbm = require "kvbm"
local assert = require "luassert"

local M = {}

--- Runs fn, collects garbage, and asserts that every allocation kvbm made
--- for objects created inside fn was given back.
function M.assert_no_leaks(fn)
  collectgarbage("collect")
  collectgarbage("collect")
  local before = kvbm._debug.live()
  fn()
  collectgarbage("collect")
  collectgarbage("collect")
  local after = kvbm._debug.live()
  assert.are.equal(before.allocations, after.allocations, "kvbm allocations leaked")
  assert.are.equal(before.bytes, after.bytes, "kvbm bytes leaked")
end

--- Tokens start, start+1, ..., start+n-1.
function M.range(n, start)
  local t = {}
  start = start or 0
  for i = 1, n do t[i] = start + i - 1 end
  return t
end

function M.srcdir() return os.getenv("KVBM_SRCDIR") or "." end
function M.builddir() return os.getenv("KVBM_BUILDDIR") or "." end

--- The binary of a program linked to the shared libraries: builddir/name is
--- libtool's wrapper script, which execs .libs/[lt-]name (so a signal sent
--- by name must aim at that). Needs LD_LIBRARY_PATH (make check sets it).
function M.real_program(name)
  for _, p in ipairs { "/.libs/lt-" .. name, "/.libs/" .. name } do
    local f = io.open(M.builddir() .. p, "rb")
    if f then
      f:close()
      return M.builddir() .. p
    end
  end
  return M.builddir() .. "/" .. name
end

--- Runs a shell command; returns its stdout, and its exit status.
function M.run(cmd)
  local p = assert(io.popen(cmd .. "; echo \"@@status=$?\"", "r"))
  local out = p:read("a")
  p:close()
  local status = tonumber(out:match("@@status=(%d+)%s*$"))
  return out:gsub("@@status=%d+%s*$", ""), status
end

--- The path of a real request trace (e.g. "mooncake_trace_1000.jsonl"), or
--- nil when it is not available: looked up in $KVBM_TRACES_DIR, then in
--- the repository's traces/ directory. Specs that need one skip visibly.
function M.real_trace(name)
  -- the bundled sample of kvbm sim is one of them
  for _, dir in ipairs { os.getenv("KVBM_TRACES_DIR") or false, M.srcdir() .. "/traces", M.srcdir() .. "/lua/kvbm/sim/data" } do
    if dir then
      local path = dir .. "/" .. name
      local f = io.open(path, "r")
      if f then
        f:close()
        return path
      end
    end
  end
end

--- The path configure found for a test-only tool (environment variable env,
--- set by `make check`), or nil when it is missing ("no"). Outside make
--- check (no variable), fallback is used.
function M.tool(env, fallback)
  local v = os.getenv(env)
  if v == nil then return fallback end
  if v == "" or v == "no" then return nil end
  return v
end

--- Asserts that every tier of planner t has all its blocks back (none held).
function M.assert_tiers_idle(t)
  for _, name in ipairs(t.names) do
    local m = t:manager(name)
    assert.are.equal(m:total(), m:available(), name .. " got every block back")
  end
end

function M.shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

return M
