-- kvbm.tiers: the counts and plans of fixed runs, pinned. The planner's
-- bookkeeping moved from Lua to C (issue 9); these runs were recorded on the
-- pure-Lua planner and must not change: same plans (tiers, positions,
-- block ids, in the same order), same report. Per tier the row is
-- { hits, evictions, registrations, available at the end }.
local kvbm = require "kvbm"
local helpers = require "helpers"

local BS = 4

-- A prefix-sharing workload made in process (no file, no generator that
-- another module may change): 12 shared prefixes of 24 blocks, Zipf-popular;
-- each request a random cut of one plus a fresh suffix of 1..12 blocks.
local function workload(n, seed)
  math.randomseed(seed)
  local prefixes = {}
  for p = 1, 12 do
    local t = {}
    for i = 1, 24 * BS do t[i] = math.random(1, 49999) end
    prefixes[p] = t
  end
  local out = {}
  for r = 1, n do
    local p = math.max(1, math.min(12, math.floor(1 / (math.random() + 0.08))))
    local toks = {}
    for i = 1, BS * math.random(4, 24) do toks[i] = prefixes[p][i] end
    for _ = 1, BS * math.random(1, 12) do toks[#toks + 1] = math.random(1, 49999) end
    out[r] = toks
  end
  return out
end

-- FNV-1a over the decimal text of a list of integers: a digest of every plan.
local function digest(state, ...)
  for k = 1, select("#", ...) do
    local s = tostring((select(k, ...)))
    for i = 1, #s do state = ((state ~ s:byte(i)) * 16777619) & 0xffffffff end
    state = ((state ~ 32) * 16777619) & 0xffffffff
  end
  return state
end

-- The sim's loop: a window of W requests holding blocks; each admitted
-- request's onboards complete at once, then it commits; every plan left
-- completes before the next request. fail_every: every k-th plan fails.
local function run(opts)
  local t = assert(kvbm.tiers{ block_size = BS, policy = opts.policy,
    G1 = { blocks = opts.g1, backend = opts.backend }, G2 = { blocks = opts.g2 },
    G3 = opts.g3 and { blocks = opts.g3 } or nil })
  local d, nplans, failed = 2166136261, 0, 0
  local function finish(plan)
    nplans = nplans + 1
    d = digest(d, plan.src_tier, plan.dst_tier, #plan.copies)
    for _, c in ipairs(plan.copies) do d = digest(d, c[1], c[2], c[3]) end
    local ok = not (opts.fail_every and nplans % opts.fail_every == 0)
    if not ok then failed = failed + 1 end
    assert.is_true(t:complete(plan, ok))
  end
  local window = {}
  for _, toks in ipairs(workload(opts.requests, opts.seed)) do
    if #window == opts.window then table.remove(window, 1):release() end
    local r = t:admit(toks)
    if r then
      for _, plan in ipairs(r.onboard) do finish(plan) end
      if r.waiting == 0 then r:commit() end
      window[#window + 1] = r
    end
    local plans = t:plans()
    while #plans > 0 do
      for _, plan in ipairs(plans) do finish(plan) end
      plans = t:plans()
    end
  end
  for _, r in ipairs(window) do r:release() end
  for _, plan in ipairs(t:plans()) do finish(plan) end
  while #t:plans() > 0 do finish(t:plans()[1]) end
  local rep = t:report()
  local got = { plans = nplans, failed = failed, digest = d, requests = rep.requests, rejected = rep.rejected,
    blocks = rep.blocks, onboards = rep.onboards, offloads = rep.offloads, skipped = rep.offloads_skipped }
  for _, name in ipairs(t.names) do
    local x = rep.tiers[name]
    got[name] = { x.hits, x.evictions, x.registrations, x.available }
  end
  t:close()
  return got
end

local examples = helpers.srcdir() .. "/scripts/examples/"

-- offload_on_release.lua's rule as one batch hook per release
local release_batch = dofile(examples .. "offload_on_release_batch.lua")

local run1 = { G1 = { 3758, 3800, 3896, 96 }, G2 = { 568, 3170, 3426, 256 },
  blocks = 8097, digest = 413316416, failed = 0, offloads = 3426, onboards = 568, plans = 457, rejected = 20,
  requests = 400, skipped = 0 }
local run4 = { G1 = { 3334, 1665, 1735, 72 }, G2 = { 132, 1585, 1705, 120 }, G3 = { 99, 1310, 1610, 300 },
  blocks = 8173, digest = 3843316493, failed = 121, offloads = 3315, onboards = 161, plans = 607, rejected = 166,
  requests = 400, skipped = 0 }

describe("kvbm.tiers pinned runs", function()
  it("offload on release, G1 + G2", function()
    assert.are.same(run1, run{ policy = dofile(examples .. "offload_on_release.lua"), g1 = 96, g2 = 256,
      window = 4, requests = 400, seed = 11 })
  end)

  it("the built-in rule and the batch hook plan what offload_on_release.lua plans", function()
    for _, policy in ipairs { "offload_on_release", release_batch } do
      assert.are.same(run1, run{ policy = policy, g1 = 96, g2 = 256, window = 4, requests = 400, seed = 11 })
      assert.are.same(run4, run{ policy = policy, g1 = 72, g2 = 120, g3 = 300,
        window = 5, requests = 400, seed = 14, backend = "lineage_fifo", fail_every = 5 })
    end
  end)

  it("write-through, G1 + G2 + G3, every 7th plan failing", function()
    assert.are.same(
      { G1 = { 2883, 3529, 3601, 64 }, G2 = { 131, 1914, 2010, 96 }, G3 = { 1217, 1579, 1979, 400 },
        blocks = 7998, digest = 1827152318, failed = 118, offloads = 3989, onboards = 1197, plans = 828, rejected = 56, requests = 400, skipped = 0 },
      run{ policy = dofile(examples .. "write_through.lua"), g1 = 64, g2 = 96, g3 = 400,
      window = 3, requests = 400, seed = 12, backend = "lru", fail_every = 7 })
  end)

  it("hot blocks, G1 + G2 + G3, small destinations", function()
    assert.are.same(
      { G1 = { 3921, 3370, 3450, 80 }, G2 = { 301, 949, 989, 40 }, G3 = { 474, 37, 157, 120 },
        blocks = 8231, digest = 1130096603, failed = 0, offloads = 1146, onboards = 775, plans = 322, rejected = 46, requests = 400, skipped = 0 },
      run{ policy = dofile(examples .. "hot_blocks.lua"), g1 = 80, g2 = 40, g3 = 120,
      window = 4, requests = 400, seed = 13, backend = "lineage" })
  end)

  it("offload on release, G1 + G2 + G3, lineage_fifo, every 5th plan failing", function()
    assert.are.same(run4, run{ policy = dofile(examples .. "offload_on_release.lua"), g1 = 72, g2 = 120, g3 = 300,
      window = 5, requests = 400, seed = 14, backend = "lineage_fifo", fail_every = 5 })
  end)

  it("write-through into a G2 too small for some requests (skipped offloads)", function()
    assert.are.same(
      { G1 = { 2088, 3865, 3929, 64 }, G2 = { 0, 2276, 2296, 20 },
        blocks = 6017, digest = 3090058479, failed = 0, offloads = 2296, onboards = 0, plans = 238, rejected = 0, requests = 300, skipped = 1611 },
      run{ policy = dofile(examples .. "write_through.lua"), g1 = 64, g2 = 20,
      window = 2, requests = 300, seed = 15, backend = "hashmap" })
  end)
end)
