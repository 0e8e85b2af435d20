-- kvbm.tiers: copy planning between G1/G2/G3 with tier policies, and the
-- `kvbm sim` program built on it.
local kvbm = require "kvbm"
local helpers = require "helpers"

local BS = 4

-- a sequence of n full blocks whose tokens start at base
local function seq(n, base)
  return kvbm.sequence(helpers.range(n * BS, base or 0), BS)
end

local function presence(t, h)
  local p = t:presence(h)
  return { p.G1 or false, p.G2 or false, p.G3 or false }
end

local function checked(t)
  for _, name in ipairs(t.names) do assert.truthy(kvbm._debug.check(t:manager(name))) end
end

local offload_on_release = dofile(helpers.srcdir() .. "/scripts/examples/offload_on_release.lua")
local write_through = dofile(helpers.srcdir() .. "/scripts/examples/write_through.lua")
local hot_blocks = dofile(helpers.srcdir() .. "/scripts/examples/hot_blocks.lua")

describe("kvbm.tiers", function()
  it("builds G1 (allow) and G2/G3 (reject) managers on one registry", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4 }, G2 = { blocks = 8 }, G3 = { blocks = 16 } }
    assert.are.same({ "G1", "G2", "G3" }, t.names)
    assert.are.equal(t:manager("G1"):registry(), t:manager("G3"):registry())
    assert.are.equal(16, t:manager("G3"):total())
    assert.is_true(t.registry:has_frequency())
    t:close()
  end)

  it("offloads on release; the copy is found in G2 after G1 evicts the block", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4, backend = "lru" }, G2 = { blocks = 8 },
      policy = offload_on_release }
    local s = seq(3)
    local r = assert(t:admit(s))
    assert.are.same({}, r.onboard)
    assert.are.equal(3, r:commit())
    local h0 = s:hash(0)
    assert.are.same({ true, false, false }, presence(t, h0))
    assert.are.same({}, t:plans(), "nothing is copied while the request holds its blocks")
    r:release()
    local plans = t:plans()
    assert.are.equal(1, #plans)
    local plan = plans[1]
    assert.are.same({ "G1", "G2" }, { plan[1], plan[2] })
    assert.are.equal(3, #plan[3])
    assert.are.equal(0, plan.copies[1][1], "copies are {pos, src_id, dst_id}")
    assert.are.same({ true, false, false }, presence(t, h0), "not in G2 before the copy is done")
    checked(t)
    assert.is_true(t:complete(plan))
    assert.are.same({ true, true, false }, presence(t, h0))
    -- fill G1 with other blocks: the originals are evicted from G1, G2 keeps them
    local other = assert(t:admit(seq(4, 1000)))
    other:commit()
    assert.are.same({ false, true, false }, presence(t, h0))
    assert.are.same(s:hashes(), (function()
      local got = t:manager("G2"):match(s:hashes())
      local hs = {}
      for i, b in ipairs(got) do hs[i] = b:hash(); b:release() end
      return hs
    end)())
    other:release()
    t:complete_all()
    checked(t)
    t:close()
  end)

  it("onboards a prefix found in G2 back into G1, then matches it there", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4, backend = "lru" }, G2 = { blocks = 8 },
      policy = write_through }
    local s = seq(3, 500)
    local r = assert(t:admit(s))
    r:commit()
    assert.are.equal(1, #t:plans(), "write-through copies at registration")
    t:complete_all()
    r:release()
    local filler = assert(t:admit(seq(4, 9000))) -- evicts the three from G1
    filler:commit()
    filler:release()
    t:complete_all()
    assert.are.same({ false, true, false }, presence(t, s:hash(2)))
    local again = assert(t:admit(s))
    assert.are.equal(0, again.matched)
    assert.are.equal(1, #again.onboard)
    local plan = again.onboard[1]
    assert.are.same({ "G2", "G1" }, { plan.src_tier, plan.dst_tier })
    assert.are.same({ 0, 1, 2 }, { plan.copies[1][1], plan.copies[2][1], plan.copies[3][1] })
    assert.error_matches(function() again:commit() end, "before the request's onboard plans completed")
    assert.is_true(t:complete(plan))
    assert.are.same({ true, true, false }, presence(t, s:hash(0)))
    assert.are.equal(0, again:commit(), "nothing left to compute")
    again:release()
    local third = assert(t:admit(s))
    assert.are.equal(3, third.matched, "the onboarded prefix is now a G1 hit")
    assert.are.equal(3, t:report().tiers.G2.hits)
    third:release()
    checked(t)
    t:close()
  end)

  it("keeps presence per tier right through a G1 -> G2 -> G3 cascade", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 2, backend = "lru" }, G2 = { blocks = 2 },
      G3 = { blocks = 8 }, policy = offload_on_release }
    local a, b = seq(2, 100), seq(2, 200)
    local ra = assert(t:admit(a)); ra:commit(); ra:release()
    assert.are.same({ true, false, false }, presence(t, a:hash(0)))
    t:complete(t:plans()[1]) -- G1 -> G2; nobody holds the copy in G2, so it is offered on to G3
    assert.are.same({ true, true, false }, presence(t, a:hash(0)))
    assert.are.same({ "G2", "G3" }, { t:plans()[1].src_tier, t:plans()[1].dst_tier })
    t:complete_all()
    assert.are.same({ true, true, true }, presence(t, a:hash(0)))
    local rb = assert(t:admit(b)); rb:commit()
    assert.are.same({ false, true, true }, presence(t, a:hash(0)), "evicted from G1, kept below")
    rb:release()
    t:complete_all() -- b goes to G2 (evicting a there) and on to G3
    assert.are.same({ false, false, true }, presence(t, a:hash(0)))
    assert.are.same({ true, true, true }, presence(t, b:hash(1)))
    local again = assert(t:admit(a))
    assert.are.equal("G3", again.onboard[1].src_tier)
    t:complete(again.onboard[1])
    assert.are.same({ true, false, true }, presence(t, a:hash(0)))
    again:release()
    t:complete_all()
    checked(t)
    t:close()
  end)

  it("a failed copy registers nothing and gives every block back", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4 }, G2 = { blocks = 4 }, policy = write_through }
    local s = seq(2, 40)
    local r = assert(t:admit(s))
    r:commit()
    local plan = t:plans()[1]
    assert.is_true(t:complete(plan, false))
    assert.are.same({ true, false, false }, presence(t, s:hash(0)))
    assert.are.equal(4, t:manager("G2"):available())
    assert.error_matches(function() t:complete(plan) end, "unknown or already completed plan")
    r:release()
    assert.are.equal(4, t:manager("G1"):available())
    t:close()
  end)

  it("rejects a request G1 cannot hold and keeps nothing", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 2 }, G2 = { blocks = 4 } }
    local none, err = t:admit(seq(3))
    assert.is_nil(none)
    assert.are.equal("no_space", err.code)
    assert.are.equal(2, t:manager("G1"):available())
    assert.are.equal(1, t:report().rejected)
    t:close()
  end)

  it("skips offloads the destination cannot hold, and counts them", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 8 }, G2 = { blocks = 2 }, policy = write_through }
    local r = assert(t:admit(seq(3)))
    r:commit()
    assert.are.same({}, t:plans())
    assert.are.equal(3, t:report().offloads_skipped)
    r:release()
    t:close()
  end)

  it("the frequency-aware policy only copies blocks seen often enough", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 8 }, G2 = { blocks = 8 }, policy = hot_blocks }
    local s = seq(2, 70)
    local r = assert(t:admit(s)); r:commit(); r:release()
    assert.are.same({}, t:plans(), "seen once: cold")
    r = assert(t:admit(s)); r:release()
    assert.are.equal(1, #t:plans(), "matched again: hot")
    t:complete_all()
    assert.is_true(t:presence(s:hash(0)).G2)
    t:close()
  end)

  it("reports a policy that names an unknown tier", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4 }, G2 = { blocks = 4 },
      policy = { on_register = function() return "G9" end } }
    local r = assert(t:admit(seq(1)))
    assert.error_matches(function() r:commit() end, "G9, which is not a tier")
    t:close()
  end)

  it("a batch hook gets a whole request's blocks in one call", function()
    local calls = {}
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 8 }, G2 = { blocks = 8 }, policy = {
      on_register_batch = function(ctx, hs, ps)
        calls[#calls + 1] = #hs
        assert.are.same({ 0, 1, 2 }, ps)
        assert.is_false(ctx:present(hs[1], "G2"))
        return { "G2", nil, "G2" }
      end } }
    local s = seq(3, 3000)
    local r = assert(t:admit(s))
    assert.are.equal(3, r:commit())
    assert.are.same({ 3 }, calls)
    local plans = t:plans()
    assert.are.equal(1, #plans)
    assert.are.same({ 0, 2 }, { plans[1].copies[1][1], plans[1].copies[2][1] })
    t:complete_all()
    assert.are.same({ true, false, true }, { t:presence(s:hash(0)).G2, t:presence(s:hash(1)).G2,
      t:presence(s:hash(2)).G2 })
    r:release()
    t:close()
  end)

  it("reports a batch hook that returns something other than a list", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 4 }, G2 = { blocks = 4 },
      policy = { on_register_batch = function() return "G2" end } }
    local r = assert(t:admit(seq(1)))
    assert.error_matches(function() r:commit() end, "on_register_batch must return a table of tiers")
    local r2 = assert(t:admit(seq(1, 77)))
    assert.is_nil(t:plans()[1], "nothing was planned")
    r2:release()
    t:close()
  end)

  it("r.waiting follows the onboard plans", function()
    local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 3, backend = "lru" }, G2 = { blocks = 8 },
      policy = "offload_on_release" }
    local s = seq(3, 600)
    local r = assert(t:admit(s)); r:commit(); r:release(); t:complete_all()
    r = assert(t:admit(seq(3, 700))); r:commit(); r:release(); t:complete_all()
    r = assert(t:admit(s))
    assert.are.equal(1, r.waiting)
    t:complete_all()
    assert.are.equal(0, r.waiting)
    assert.are.equal(0, r:commit())
    r:release()
    t:close()
  end)

  it("rejects bad options", function()
    assert.error_matches(function() kvbm.tiers{ G2 = { blocks = 4 } } end, "G1 is required")
    assert.error_matches(function() kvbm.tiers{ G1 = { blocks = 4 }, G4 = {} } end, "unknown option")
    local none, err = kvbm.tiers{ G1 = { blocks = 0 } }
    assert.is_nil(none)
    assert.are.equal("invalid_config", err.code)
  end)

  it("returns every block after a random workload (no leaks)", function()
    helpers.assert_no_leaks(function()
      local t = kvbm.tiers{ block_size = BS, G1 = { blocks = 16, backend = "lineage" }, G2 = { blocks = 12 },
        G3 = { blocks = 24 }, policy = offload_on_release }
      math.randomseed(3)
      local live = {}
      for i = 1, 300 do
        local r = t:admit(seq(math.random(1, 6), 10 * math.random(0, 20)))
        if r then
          for _, p in ipairs(r.onboard) do t:complete(p, math.random() < 0.9) end
          if r.waiting == 0 then r:commit() end
          live[#live + 1] = r
        end
        if #live > 2 then table.remove(live, 1):release() end
        if i % 3 == 0 then t:complete_all() end
        checked(t)
      end
      for _, r in ipairs(live) do r:release() end
      t:complete_all()
      helpers.assert_tiers_idle(t)
      t:close()
    end)
  end)
end)

describe("kvbm sim", function()
  local kvbm_bin = helpers.builddir() .. "/kvbm"
  local function sim(args)
    return helpers.run(helpers.shell_quote(kvbm_bin) .. " sim " .. args .. " 2>&1")
  end

  it("replays a generated trace and prints the report", function()
    local out, status = sim("--requests 60 --g1 512 --g2 1024 --quiet")
    assert.are.equal(0, status, out)
    assert.matches("kvbm sim: 60 requests", out)
    assert.matches("\nG1 +512 ", out)
    assert.matches("\nG2 +1024 ", out)
    assert.matches("onboards %d+ +offloads %d+", out)
    assert.matches("events: %d+ published", out)
    assert.matches("blocks/s", out)
  end)

  local py = helpers.tool("KVBM_PYTHON", "/usr/bin/python3")
  -- without python3 (no trace generator) this one is reported as skipped
  ;(py and it or pending)("replays a trace file with each example policy", function()
    local trace = os.tmpname()
    local _, st = helpers.run(helpers.shell_quote(py) .. " " .. helpers.shell_quote(helpers.srcdir() .. "/scripts/gen_trace.py")
      .. " --requests 80 --prefix-tokens 128 --suffix 8 64 > " .. helpers.shell_quote(trace))
    assert.are.equal(0, st)
    for _, p in ipairs { "write_through", "offload_on_release", "hot_blocks" } do
      local out, status = sim(helpers.shell_quote(trace) .. " --g1 64 --g2 128 --g3 256 --quiet --policy "
        .. helpers.shell_quote(helpers.srcdir() .. "/scripts/examples/" .. p .. ".lua"))
      assert.are.equal(0, status, out)
      assert.matches("kvbm sim: 80 requests", out)
      assert.matches("\nG3 +256 ", out)
    end
    os.remove(trace)
  end)

  it("fails clearly on bad arguments", function()
    local out, status = sim("--g1")
    assert.are_not.equal(0, status)
    assert.matches("needs a value", out)
    out, status = sim("--frobnicate 3")
    assert.are_not.equal(0, status)
    assert.matches("unknown option", out)
    out, status = sim("/nonexistent/trace.txt")
    assert.are_not.equal(0, status)
    assert.matches("cannot read", out)
    out = sim("--help")
    assert.matches("usage: kvbm sim", out)
  end)
end)
