-- The trace replay (kvbm.replay, the benchmark workload) against an
-- independent Python model of the same semantics (spec/tools/replay_model.py),
-- on small generated traces; with the LRU backend the counts must agree
-- exactly, through the per-block API and through BlockSets.
local kvbm = require "kvbm"
local replay = require "kvbm.replay"
local helpers = require "helpers"

local python = helpers.tool("KVBM_PYTHON", "/usr/bin/python3")
if not python then return pending("python3 not found: the trace generator and the model need it") end
local src = helpers.srcdir()

local function sh(cmd)
  local out, status = helpers.run(cmd)
  assert(status == 0, cmd .. " failed:\n" .. out)
  return out
end

local trace = os.tmpname()
setup(function()
  sh(helpers.shell_quote(python) .. " " .. helpers.shell_quote(src .. "/scripts/gen_trace.py")
    .. " --requests 300 --prefixes 12 --prefix-tokens 256 --suffix 16 200 --seed 11 > " .. helpers.shell_quote(trace))
end)
teardown(function() os.remove(trace) end)

local function model(count, window)
  local out = sh(helpers.shell_quote(python) .. " " .. helpers.shell_quote(src .. "/spec/tools/replay_model.py")
    .. " " .. helpers.shell_quote(trace) .. " " .. count .. " " .. window)
  local h, a, r, e = out:match("(%d+) (%d+) (%d+) (%d+)")
  return { hits = tonumber(h), allocations = tonumber(a), rejected = tonumber(r), evictions = tonumber(e) }
end

describe("trace replay (LRU) against an independent model", function()
  local requests, loaded
  setup(function() requests, loaded = assert(replay.load(trace)) end)

  for _, case in ipairs { { 256, 8 }, { 512, 4 }, { 2048, 16 }, { 26, 2 } } do
    local count, window = case[1], case[2]
    for _, mode in ipairs { "sets", "blocks" } do
      for _, from in ipairs { "requests", "trace" } do -- the list, or the kvbm.Trace (t:sequence)
        it(("%d blocks, window %d, %s, from the %s"):format(count, window, mode, from), function()
          local want = model(count, window)
          local m = kvbm.manager{ blocks = count, block_size = 16, backend = "lru", registry = kvbm.registry{} }
          local got = replay.run{ requests = from == "requests" and requests or nil,
            trace = from == "trace" and loaded or nil, manager = m, window = window, mode = mode }
          assert.are.equal(#requests, got.requests)
          assert.are.same(want, { hits = got.hits, allocations = got.allocations, rejected = got.rejected,
            evictions = got.evictions })
          assert.is_true(got.hits > 0)
          if count <= 256 then assert.is_true(got.evictions > 0) end
          if count == 26 then assert.is_true(got.rejected > 0, "this case exercises rejections") end
          assert.are.equal(count, m:available(), "everything returns after the replay")
          assert.truthy(kvbm._debug.check(m))
        end)
      end
    end
  end

  it("hashmap gives the LRU counts (both evict oldest release first)", function()
    local a = kvbm.manager{ blocks = 256, block_size = 16, backend = "lru", registry = kvbm.registry{} }
    local b = kvbm.manager{ blocks = 256, block_size = 16, backend = "hashmap", registry = kvbm.registry{} }
    local ra = replay.run{ requests = requests, manager = a, window = 8 }
    local rb = replay.run{ requests = requests, manager = b, window = 8 }
    assert.are.same({ ra.hits, ra.evictions }, { rb.hits, rb.evictions })
  end)

  it("rejects a malformed trace line with a clear error", function()
    local bad = os.tmpname()
    local f = assert(io.open(bad, "w"))
    f:write("0 0 5 1 2 3\n")
    f:close()
    local requests, err = replay.load(bad)
    os.remove(bad)
    assert.is_nil(requests)
    assert.are.equal("malformed_trace", err.code)
    assert.are.equal(bad .. ":1: 5 tokens announced, 3 found", err.message)
    assert.are.equal(1, err.line)
    -- the old %d+ scan read "1.5" as two tokens and "-1" as 1
    for _, case in ipairs { { "1 0 4 1.5 2 3\n", "token 1: '1.5' is not an integer" },
                            { "\n1 0 1 -1\n", "token 1: '-1' is negative (expected 0..4294967295)", 2 } } do
      bad = os.tmpname()
      f = assert(io.open(bad, "w"))
      f:write(case[1])
      f:close()
      requests, err = replay.load(bad)
      os.remove(bad)
      assert.is_nil(requests)
      assert.are.equal(("%s:%d: %s"):format(bad, case[3] or 1, case[2]), err.message)
    end
    requests, err = replay.load("/nonexistent/trace")
    assert.is_nil(requests)
    assert.are.equal("io_error", err.code)
  end)
end)
