-- kvbm.tiers and kvbm.request together: one request concept. t:admit takes
-- a RequestSequence (or tokens, or a sequence, and builds one) and returns
-- it; after the commit it decodes on G1 as any request, and its release
-- goes through the planner.
local kvbm = require "kvbm"
local helpers = require "helpers"

local BS = 4

local function toks(nblocks, base, extra)
  return helpers.range(nblocks * BS + (extra or 0), base or 0)
end

local function checked(t)
  for _, name in ipairs(t.names) do assert.truthy(kvbm._debug.check(t:manager(name))) end
end

-- A policy that records what reaches it (batch hooks: one call per event)
-- and offloads every block that goes inactive in G1 to G2.
local function recorder()
  local seen = { registered = {}, inactive = {} }
  seen.policy = {
    on_register_batch = function(_, _, ps)
      seen.registered[#seen.registered + 1] = ps
      return {}
    end,
    on_inactive_batch = function(_, hs, ps, tier)
      if tier ~= "G1" then return {} end
      seen.inactive[#seen.inactive + 1] = ps
      local out = {}
      for i = 1, #hs do out[i] = "G2" end
      return out
    end,
  }
  return seen
end

local function planner(policy, g1)
  return assert(kvbm.tiers{ block_size = BS, G1 = { blocks = g1 or 16, backend = "lru" }, G2 = { blocks = 32 },
    policy = policy })
end

-- every plan's copies as { src, dst, {pos...} }, completing them
local function drain(t)
  local out = {}
  while #t:plans() > 0 do
    local p = t:plans()[1]
    local pos = {}
    for i, c in ipairs(p.copies) do pos[i] = c[1] end
    out[#out + 1] = { p.src_tier, p.dst_tier, pos }
    t:complete(p)
  end
  return out
end

-- no message names an internal file: the user's call site, or none
local function clean(msg)
  assert.is_nil(tostring(msg):match("request%.lua"), msg)
  assert.is_nil(tostring(msg):match("tiers%.lua"), msg)
  assert.is_nil(tostring(msg):match("logical%.lua"), msg)
end

local function raises(f, pattern)
  local ok, err = pcall(f)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.matches(pattern, tostring(err))
  clean(err)
  return err
end

describe("kvbm.tiers admits a kvbm.request", function()
  it("returns the RequestSequence itself, with the planner's fields", function()
    local t = planner()
    local rs = kvbm.request(toks(3, 0, 2), 8, BS)
    local r = assert(t:admit(rs))
    assert.are.equal(rs, r, "one object")
    assert.are.equal(0, r.matched)
    assert.are.same({}, r.onboard)
    assert.are.equal(0, r.waiting)
    assert.are.equal(rs:sequence(), r.seq)
    assert.are.equal(t, r.tiers)
    assert.are.equal(3, rs:commit())
    assert.are.equal(3, rs:assigned_blocks(), "its G1 blocks are its assigned blocks")
    rs:release()
    t:close()
  end)

  it("tokens and salt, and a sequence, build a RequestSequence too", function()
    local t = planner()
    local a = assert(t:admit(toks(2, 100), 7))
    assert.is_true(kvbm.request.is(a))
    assert.are.equal(7, a:sequence():salt())
    assert.are.equal(0, a:max_output_tokens())
    local s = kvbm.sequence(toks(2, 300), BS)
    local b = assert(t:admit(s))
    assert.is_true(kvbm.request.is(b))
    assert.are.equal(s, b:sequence())
    a:release()
    b:release()
    t:close()
  end)

  it("counts onboarded blocks as found: prefix_matched_blocks and the prefill", function()
    local t = planner("offload_on_release", 4)
    local first = assert(t:admit(toks(3, 500)))
    first:commit(); first:release(); t:complete_all()
    local filler = assert(t:admit(toks(4, 9000)))
    filler:commit(); filler:release(); t:complete_all() -- evicts the three from G1, G2 keeps them
    local rs = kvbm.request(toks(3, 500, 2), 4, BS)
    assert(t:admit(rs))
    assert.are.equal(0, rs.matched)
    assert.are.equal(1, #rs.onboard)
    assert.are.equal(3, rs:prefix_matched_blocks(), "three found in G2")
    assert.are.equal(2, rs:new_tokens_for_prefill(), "only the partial tail is computed")
    assert.matches("admitted through kvbm.tiers", tostring(rs))
    raises(function() rs:assigned_blocks() end, "assigned_blocks: .*onboard plans are complete")
    t:complete(rs.onboard[1])
    assert.are.equal(0, rs:commit())
    assert.are.equal(3, rs:assigned_blocks())
    rs:release()
    t:complete_all()
    checked(t)
    t:close()
  end)

  it("decodes through the request: on_register sees the new block, the release offers every block", function()
    local seen = recorder()
    local t = planner(seen.policy)
    local g1 = t:manager("G1")
    local rs = kvbm.request(toks(2, 40), 4, BS)
    assert(t:admit(rs))
    assert.are.equal(2, rs:commit())
    assert.are.same({ { 0, 1 } }, seen.registered)
    assert.is_true(rs:allocate_blocks(1, g1), "the generation block")
    local done
    for k = 1, 4 do done = rs:append_token(7000 + k) end
    assert.are.equal(2, done, "block 2 is full")
    assert.are.equal(1, rs:complete_and_register_pending(g1))
    assert.are.same({ { 0, 1 }, { 2 } }, seen.registered, "the decode block reached on_register at position 2")
    assert.is_true(t:presence(rs:sequence():hash(2)).G1)
    assert.are.same({ 3, 0, 0 }, { rs:assigned_blocks(), rs:staged_blocks(), rs:unassigned_blocks() })
    assert.are.same({}, t:plans(), "nothing copied while the request holds its blocks")
    rs:release()
    assert.are.same({ { 0, 1, 2 } }, seen.inactive, "all three went inactive together, in position order")
    assert.are.same({ { "G1", "G2", { 0, 1, 2 } } }, drain(t))
    assert.are.same({ 0, 0, 0 }, { rs:assigned_blocks(), rs:staged_blocks(), rs:unassigned_blocks() })
    assert.are.equal(g1:total(), g1:available())
    checked(t)
    t:close()
  end)

  it("register_staged on G1 goes through the planner too", function()
    local seen = recorder()
    local t = planner(seen.policy)
    local g1 = t:manager("G1")
    local rs = kvbm.request(toks(1, 60), 4, BS)
    assert(t:admit(rs)); rs:commit()
    assert.is_true(rs:allocate_blocks(1, g1))
    for k = 1, 4 do rs:append_token(k) end
    rs:stage_pending()
    assert.are.equal(1, rs:staged_blocks())
    assert.are.equal(1, rs:register_staged(g1))
    assert.are.same({ { 0 }, { 1 } }, seen.registered)
    rs:release()
    t:close()
  end)

  it("releasing before or after the blocks moved into the request plans the same copies", function()
    local function run(touch)
      local seen = recorder()
      local t = planner(seen.policy)
      local r = assert(t:admit(toks(3, 800)))
      r:commit()
      if touch then assert.are.equal(3, #r:page_indices()) end
      r:release()
      local plans = drain(t)
      local rep = t:report()
      t:close()
      return { plans, seen.inactive, rep.offloads, rep.tiers.G1.available }
    end
    assert.are.same(run(false), run(true))
  end)

  it("a second release does nothing; commit after release raises; the request can be admitted again", function()
    local seen = recorder()
    local t = planner(seen.policy)
    local rs = kvbm.request(toks(2, 1200), 4, BS)
    assert(t:admit(rs)); rs:commit(); rs:release()
    assert.are.equal(1, #seen.inactive)
    local before = t:report()
    rs:release()
    assert.are.equal(1, #seen.inactive, "nothing offered twice")
    assert.are.same(before, t:report())
    raises(function() rs:commit() end, "commit after release")
    raises(function() kvbm.request(toks(1), 1, BS):commit() end, "not admitted through kvbm.tiers")
    drain(t)
    assert(t:admit(rs))
    assert.are.equal(2, rs.matched, "admitted again: its blocks are G1 hits now")
    assert.are.equal(0, rs:commit())
    rs:release()
    t:close()
  end)

  it("a release before the commit abandons the pending onboards and gives every block back", function()
    local t = planner("offload_on_release", 4)
    local first = assert(t:admit(toks(3, 2000)))
    first:commit(); first:release(); t:complete_all()
    local filler = assert(t:admit(toks(4, 9000)))
    filler:commit(); filler:release(); t:complete_all()
    local rs = kvbm.request(toks(3, 2000), 4, BS)
    assert(t:admit(rs))
    assert.are.equal(1, rs.waiting)
    raises(function() rs:commit() end, "before the request's onboard plans completed")
    rs:release()
    assert.are.same({}, t:plans(), "the onboard plan is gone")
    raises(function() t:complete(rs.onboard[1]) end, "unknown or already completed plan")
    assert.are.equal(t:manager("G1"):total(), t:manager("G1"):available())
    assert.are.equal(t:manager("G2"):total(), t:manager("G2"):available(), "the sources went back to G2")
    assert.is_true(t:presence(rs:sequence():hash(0)).G2, "and are still there")
    checked(t)
    t:close()
  end)

  it("a second commit registers nothing more", function()
    local t = planner()
    local rs = kvbm.request(toks(2, 3000), 4, BS)
    assert(t:admit(rs))
    assert.are.equal(2, rs:commit())
    assert.are.equal(0, rs:commit())
    assert.are.equal(2, rs:assigned_blocks())
    assert.are.equal(0, rs:commit(), "also once its blocks moved in")
    rs:release()
    t:close()
  end)

  it("a request G1 cannot hold is left unchanged", function()
    local t = planner(nil, 2)
    local rs = kvbm.request(toks(3), 4, BS)
    local none, err = t:admit(rs)
    assert.is_nil(none)
    assert.are.equal("no_space", err.code)
    assert.is_false(rs.tiers)
    raises(function() rs:commit() end, "not admitted")
    local m = assert(kvbm.manager{ blocks = 8, block_size = BS, registry = kvbm.registry{} })
    assert.are.equal(0, rs:match_and_add_prefix(m), "still an ordinary request")
    assert.is_true(rs:allocate_blocks(3, m))
    rs:release()
    m:close()
    t:close()
  end)
end)

describe("kvbm.tiers and kvbm.request: bad input", function()
  it("admit refuses what it cannot admit, with clear messages and nothing changed", function()
    local t = planner()
    local g1 = t:manager("G1")
    raises(function() t:admit(42) end, "admit expects a kvbm.request, a kvbm.sequence or a token list, got number")
    raises(function() t:admit(kvbm.request(toks(1), 1, BS), 5) end, "a salt goes with a token list")
    raises(function() t:admit(kvbm.sequence(toks(1), BS), 5) end, "a salt goes with a token list")
    raises(function() t:admit(kvbm.request(toks(1), 1, 8)) end, "block size 8 differs from the planner's 4")
    raises(function() t:admit(kvbm.sequence(toks(1), 8)) end, "block size 8 differs from the planner's 4")
    local holding = kvbm.request(toks(2), 4, BS)
    assert.is_true(holding:allocate_blocks(1, g1))
    raises(function() t:admit(holding) end, "already holds blocks")
    assert.are.equal(1, holding:unassigned_blocks())
    holding:release()
    local rs = kvbm.request(toks(2, 70), 4, BS)
    assert(t:admit(rs))
    local stats = t:report()
    raises(function() t:admit(rs) end, "already admitted %(release it first%)")
    assert.are.same(stats, t:report(), "the planner did not count it")
    local other = planner()
    raises(function() other:admit(rs) end, "already admitted")
    other:close()
    assert.are.equal(16 - 2, g1:available())
    rs:release()
    assert.are.equal(16, g1:available())
    t:close()
  end)

  it("an admitted request refuses other managers and a second prefix match, keeping its blocks", function()
    local t = planner()
    local rs = kvbm.request(toks(2, 90), 4, BS)
    assert(t:admit(rs))
    raises(function() rs:assigned_blocks() end, "assigned_blocks: .*commit it")
    rs:commit()
    raises(function() rs:allocate_blocks(1, t:manager("G2")) end, "its blocks come from t:manager%(\"G1\"%)")
    raises(function() rs:complete_and_register_pending(t:manager("G2")) end, "its blocks come from")
    raises(function() rs:match_and_add_prefix(t:manager("G1")) end, "admitted through kvbm.tiers.*release it first")
    raises(function() rs:reacquire(t:manager("G1")) end, "admitted through kvbm.tiers")
    assert.are.same({ 2, 0, 0 }, { rs:assigned_blocks(), rs:staged_blocks(), rs:unassigned_blocks() })
    assert.are.equal(32, t:manager("G2"):available())
    rs:release()
    assert.are.equal(16, t:manager("G1"):available())
    t:close()
  end)

  it("errors raised in C name the user's call, not the Lua layer's files", function()
    local t = planner{ on_register = function() return "G7" end }
    local rs = kvbm.request(toks(1, 50), 4, BS)
    assert(t:admit(rs))
    local err = raises(function() rs:commit() end, "on_register returned G7, which is not a tier")
    assert.matches("tiers_request_spec%.lua:%d+:", tostring(err))
    local other = assert(t:admit(toks(1, 60)))
    t:close()
    err = raises(function() other:release() end, "the planner is closed")
    assert.matches("^[^:]*tiers_request_spec%.lua:%d+: kvbm%.tiers: the planner is closed", tostring(err))
    raises(function() t:admit(toks(1, 70)) end, "the planner is closed")
  end)

  it("a hook that raises during a decode registration leaves the block registered and held", function()
    local calls = 0
    local t = planner{ on_register = function()
      calls = calls + 1
      if calls > 1 then error("hook broke") end
    end }
    local g1 = t:manager("G1")
    local rs = kvbm.request(toks(1, 400), 4, BS)
    assert(t:admit(rs)); rs:commit()
    assert.is_true(rs:allocate_blocks(1, g1))
    for k = 1, 4 do rs:append_token(k) end
    assert.error_matches(function() rs:complete_and_register_pending(g1) end, "hook broke")
    assert.are.same({ 2, 0, 0 }, { rs:assigned_blocks(), rs:staged_blocks(), rs:unassigned_blocks() })
    assert.is_true(t:presence(rs:sequence():hash(1)).G1)
    rs:release()
    assert.are.equal(16, g1:available())
    checked(t)
    t:close()
  end)

  it("returns every block after a random mix of admissions, decodes and releases (no leaks)", function()
    helpers.assert_no_leaks(function()
      local t = assert(kvbm.tiers{ block_size = BS, G1 = { blocks = 24 }, G2 = { blocks = 16 }, G3 = { blocks = 32 },
        policy = "offload_on_release" })
      local g1 = t:manager("G1")
      math.randomseed(5)
      local live = {}
      for _ = 1, 200 do
        local rs = kvbm.request(toks(math.random(1, 4), 10 * math.random(0, 15), math.random(0, 3)), 6, BS)
        if t:admit(rs) then
          for _, p in ipairs(rs.onboard) do t:complete(p) end
          rs:commit()
          if math.random() < 0.6 and rs:allocate_blocks(1, g1) then
            while not rs:is_complete() do
              if rs:append_token(math.random(0, 99)) then
                rs:complete_and_register_pending(g1)
                if not rs:allocate_blocks(1, g1) then break end
              end
            end
          end
          live[#live + 1] = rs
        end
        if #live > 2 then table.remove(live, 1):release() end
        t:complete_all()
        checked(t)
      end
      for _, rs in ipairs(live) do rs:release() end
      t:complete_all()
      helpers.assert_tiers_idle(t)
      t:close()
    end)
  end)
end)
