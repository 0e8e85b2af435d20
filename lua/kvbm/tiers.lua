-- kvbm.tiers: plans block copies between memory tiers (G1 GPU, G2 host,
-- G3 disk) on one registry. kvbm moves no data: the planner hands the host
-- copy plans, the host copies, then reports each plan done (or failed), and
-- the planner registers the copies in their destination tier.
--
--   local t = kvbm.tiers{ block_size = 16, G1 = { blocks = 1024 }, G2 = { blocks = 4096 },
--                         G3 = { blocks = 16384 }, policy = require "my_policy" }
--   local r = assert(t:admit(tokens, salt))   -- match G1, onboard from G2/G3, allocate the rest
--   for _, plan in ipairs(r.onboard) do copy(plan) ; t:complete(plan) end
--   r:commit()                               -- the prefill is computed: register the new blocks
--   ...                                      -- t:plans() lists offload plans the policy asked for
--   r:release()                              -- the request ends; its blocks go inactive
--
-- A plan is { src_tier, dst_tier, copies } with copies = { {pos, src_id, dst_id}, ... }
-- (also as plan.src_tier, plan.dst_tier, plan.copies). Until it completes it
-- holds its source blocks (so they cannot be evicted mid-copy) and its
-- destination blocks (mutable, not yet visible to lookups).
--
-- A tier policy is a table of optional hooks (see scripts/examples/*.lua):
--   on_register(ctx, h, pos)        a block was newly registered in G1  --> tier name to offload to, or nil
--   on_inactive(ctx, h, pos, tier)  a block's last user let go in tier  --> tier name to offload to, or nil
--   onboard(ctx, h, pos, tier)      a G1 miss found in tier: copy it up? --> boolean (default true)
-- ctx: ctx.tiers (this planner), ctx:frequency(h), ctx:present(h, tier), ctx:manager(tier).
-- Duplicate policies: G1 allows duplicates, G2 and G3 reject them (one copy per hash).
local kvbm = require "kvbm"

local setmetatable, ipairs, pairs, type, assert, error, tostring = setmetatable, ipairs, pairs, type, assert, error, tostring
local format, remove, concat = string.format, table.remove, table.concat
local _ENV = nil

local ORDER = { "G1", "G2", "G3" }
local DEFAULT_BACKEND = { G1 = "lineage", G2 = "lru", G3 = "lru" }

local Tiers = {}
Tiers.__index = Tiers

local Request = {}
Request.__index = Request

local M = {}

-- ------------------------------------------------------------ context

local Ctx = {}
Ctx.__index = Ctx

function Ctx:frequency(h) return self.tiers.registry:frequency(h) end
function Ctx:present(h, tier)
  local m = self.tiers.managers[tier]
  return m ~= nil and self.tiers.registry:present(h, m)
end
function Ctx:manager(tier) return self.tiers.managers[tier] end

-- ------------------------------------------------------------ planner

local function check_tier(t, name, what)
  if name ~= nil and not t.managers[name] then
    error(format("tier policy %s returned %s, which is not a tier of this planner", what, tostring(name)), 3)
  end
  return name
end

--- kvbm.tiers{ block_size=, G1={blocks=, backend=}, G2=..., G3=..., registry=, frequency=, events=, policy= }
function M.new(opts)
  assert(type(opts) == "table", "kvbm.tiers: options table expected")
  local known = { block_size = true, G1 = true, G2 = true, G3 = true, registry = true, frequency = true,
    events = true, policy = true }
  for k in pairs(opts) do
    if not known[k] then error("kvbm.tiers: unknown option '" .. tostring(k) .. "'", 2) end
  end
  if not opts.G1 then error("kvbm.tiers: G1 is required", 2) end
  local reg, rerr = opts.registry, nil
  if not reg then
    reg, rerr = kvbm.registry{ frequency = opts.frequency == nil and "medium" or opts.frequency, events = opts.events }
    if not reg then return nil, rerr end -- out of memory: say so, not "registry is required"
  end
  local t = setmetatable({
    registry = reg, managers = {}, names = {}, block_size = opts.block_size or 16,
    policy = opts.policy or {}, pending = {}, next_plan = 1,
    stats = { requests = 0, rejected = 0, blocks = 0, onboards = 0, offloads = 0, offloads_skipped = 0,
      hits = { G1 = 0, G2 = 0, G3 = 0 } },
  }, Tiers)
  t.ctx = setmetatable({ tiers = t }, Ctx)
  for _, name in ipairs(ORDER) do
    local cfg = opts[name]
    if cfg then
      local m, err = kvbm.manager{ blocks = cfg.blocks, block_size = t.block_size, registry = reg, name = name,
        backend = cfg.backend or DEFAULT_BACKEND[name], duplicates = name == "G1" and "allow" or "reject",
        thresholds = cfg.thresholds }
      if not m then return nil, err end
      t.managers[name] = m
      t.names[#t.names + 1] = name
    end
  end
  return t
end

function Tiers:manager(name) return self.managers[name] end

--- Presence of h per tier: { G1 = bool, G2 = bool, G3 = bool }.
function Tiers:presence(h)
  local out = {}
  for _, name in ipairs(self.names) do out[name] = self.registry:present(h, self.managers[name]) end
  return out
end

--- The plans that are waiting for the host, oldest first.
function Tiers:plans()
  local out = {}
  for _, p in ipairs(self.pending) do out[#out + 1] = p end
  return out
end

local function new_plan(t, src, dst)
  local plan = { src, dst, {}, src_tier = src, dst_tier = dst, id = t.next_plan, sources = {}, targets = {},
    hashes = {} }
  plan.copies = plan[3]
  t.next_plan = t.next_plan + 1
  return plan
end

local function enqueue(t, plan)
  if #plan.copies == 0 then return nil end
  t.pending[#t.pending + 1] = plan
  return plan
end

-- Releases immutable blocks the planner held (items: {block=, pos=}) and
-- offers those that went inactive (their last user let go) to the policy,
-- one offload plan per destination tier.
local function let_go(t, tier, items)
  local gone = {}
  for _, it in ipairs(items) do
    local last = it.block:use_count() == 1
    local h = it.block:hash()
    it.block:release()
    if last then gone[#gone + 1] = { h = h, pos = it.pos } end
  end
  if #gone > 0 then t:_inactive(tier, gone) end
end

-- Offload plan for the blocks (immutable guards, cloned here) of tier src
-- to tier dst; blocks already present in dst are skipped; allocation is all
-- or nothing (a full destination skips the offload and counts it).
function Tiers:_offload(src, dst, items)
  local dm = self.managers[dst]
  local todo = {}
  for _, it in ipairs(items) do
    if not self.registry:present(it.h, dm) and not self:_planned(dst, it.h) then todo[#todo + 1] = it end
  end
  if #todo == 0 then return nil end
  local targets = dm:allocate(#todo)
  if not targets then
    self.stats.offloads_skipped = self.stats.offloads_skipped + #todo
    return nil
  end
  local plan = new_plan(self, src, dst)
  for i, it in ipairs(todo) do
    plan.copies[i] = { it.pos, it.block:id(), targets[i]:id() }
    plan.sources[i], plan.targets[i], plan.hashes[i] = it.block:clone(), targets[i], it.h
  end
  plan.kind = "offload"
  return enqueue(self, plan)
end

-- A copy to dst of hash h is already planned (not yet complete).
function Tiers:_planned(dst, h)
  for _, p in ipairs(self.pending) do
    if p.dst_tier == dst then
      for _, x in ipairs(p.hashes) do if x == h then return true end end
    end
  end
  return false
end

function Tiers:_inactive(tier, gone)
  local hook = self.policy.on_inactive
  if not hook then return end
  local by_dst, order = {}, {}
  for _, g in ipairs(gone) do
    local dst = check_tier(self, hook(self.ctx, g.h, g.pos, tier), "on_inactive")
    if dst and dst ~= tier then
      if not by_dst[dst] then by_dst[dst] = {}; order[#order + 1] = dst end
      local list = by_dst[dst]
      list[#list + 1] = g
    end
  end
  local m = self.managers[tier]
  for _, dst in ipairs(order) do
    -- hold the sources while they are copied: a lookup resurrects them from the inactive pool
    local hs = {}
    for i, g in ipairs(by_dst[dst]) do hs[i] = g.h end
    local found = m:match_scattered(hs)
    local items = {}
    for i, g in ipairs(by_dst[dst]) do
      if found[i] then items[#items + 1] = { h = g.h, pos = g.pos, block = found[i] } end
    end
    self:_offload(tier, dst, items)
    for i = 1, #hs do if found[i] then found[i]:release() end end -- the plan holds its own clones
  end
end

--- The host finished the copies of plan: register them in the destination
--- tier and let go of the sources. ok == false: the copy failed; nothing is
--- registered and every block goes back.
function Tiers:complete(plan, ok)
  local idx
  for i, p in ipairs(self.pending) do if p == plan then idx = i end end
  if not idx then error("kvbm.tiers: unknown or already completed plan", 2) end
  remove(self.pending, idx)
  local dm = self.managers[plan.dst_tier]
  local registered = {}
  for i, target in ipairs(plan.targets) do
    if ok == false then
      target:release()
    else
      registered[i] = dm:register(assert(target:stage(plan.hashes[i])))
    end
  end
  local sources = {}
  for i, src in ipairs(plan.sources) do sources[i] = { block = src, pos = plan.copies[i][1] } end
  let_go(self, plan.src_tier, sources)
  if ok == false then return true end
  if plan.kind == "offload" then
    self.stats.offloads = self.stats.offloads + #registered
    local copies = {}
    for i, ib in ipairs(registered) do copies[i] = { block = ib, pos = plan.copies[i][1] } end
    let_go(self, plan.dst_tier, copies)
  else
    self.stats.onboards = self.stats.onboards + #registered
    local r = plan.request
    for i, ib in ipairs(registered) do r.blocks[plan.copies[i][1] + 1] = ib end
    r.waiting = r.waiting - 1
  end
  return true
end

--- Completes every pending plan (a host whose copies are instantaneous,
--- such as the simulator). Returns how many were completed.
function Tiers:complete_all()
  local n = 0
  while #self.pending > 0 do
    self:complete(self.pending[1])
    n = n + 1
  end
  return n
end

-- ------------------------------------------------------------ requests

--- Admits a request: matches its prefix in G1, plans onboarding of the
--- following blocks found in lower tiers, allocates G1 blocks for the rest.
--- Returns the request (r.onboard lists its onboard plans) or nil, err when
--- G1 cannot hold it (nothing is kept then).
function Tiers:admit(tokens, salt)
  local seq = type(tokens) == "userdata" and tokens or kvbm.sequence(tokens, self.block_size, salt)
  local hashes = seq:hashes()
  local n = #hashes
  local g1 = self.managers.G1
  local blocks = g1:match(hashes)
  local h1 = #blocks
  self.stats.requests = self.stats.requests + 1
  self.stats.blocks = self.stats.blocks + n
  self.stats.hits.G1 = self.stats.hits.G1 + h1

  -- the run of blocks after the G1 prefix that lower tiers hold (looked up
  -- without taking anything: only the blocks chosen are acquired below)
  local rest = {}
  for i = h1 + 1, n do rest[#rest + 1] = hashes[i] end
  local reg, hook, onboard_from, run = self.registry, self.policy.onboard, {}, 0
  for i = 1, #rest do
    local from
    for _, name in ipairs(self.names) do
      if name ~= "G1" and not from and reg:present(rest[i], self.managers[name])
        and (hook == nil or hook(self.ctx, rest[i], h1 + i - 1, name)) then
        from = name
      end
    end
    if not from then break end
    onboard_from[i] = from
    run = i
  end

  local targets, err = g1:allocate(n - h1)
  if not targets then
    for _, b in ipairs(blocks) do b:release() end
    self.stats.rejected = self.stats.rejected + 1
    return nil, err
  end
  local found = {}
  for _, name in ipairs(self.names) do
    local idx, hs = {}, {}
    for i = 1, run do
      if onboard_from[i] == name then idx[#idx + 1], hs[#hs + 1] = i, rest[i] end
    end
    if #idx > 0 then
      local got = self.managers[name]:match_scattered(hs)
      found[name] = {}
      for k, i in ipairs(idx) do found[name][i] = got[k] end
    end
  end

  local r = setmetatable({ tiers = self, seq = seq, hashes = hashes, blocks = blocks, matched = h1,
    onboard = {}, waiting = 0, fresh = {} }, Request)
  local plans = {}
  for i = 1, #rest do
    local pos, name = h1 + i - 1, onboard_from[i]
    local b = name and found[name][i]
    if b then
      local plan = plans[name]
      if not plan then
        plan = new_plan(self, name, "G1")
        plan.kind, plan.request = "onboard", r
        plans[name] = plan
      end
      local k = #plan.copies + 1
      plan.copies[k] = { pos, b:id(), targets[i]:id() }
      plan.sources[k], plan.targets[k], plan.hashes[k] = b, targets[i], rest[i]
      self.stats.hits[name] = self.stats.hits[name] + 1
    else
      r.fresh[#r.fresh + 1] = { pos = pos, block = targets[i] }
    end
  end
  for _, name in ipairs(self.names) do
    if plans[name] and enqueue(self, plans[name]) then
      r.onboard[#r.onboard + 1] = plans[name]
      r.waiting = r.waiting + 1
    end
  end
  return r
end

--- The prefill is computed: register the request's new blocks in G1 (once
--- its onboard plans are complete). The policy's on_register may queue
--- offload plans. Returns the number of blocks registered.
function Request:commit()
  if self.waiting > 0 then error("kvbm.tiers: commit before the request's onboard plans completed", 2) end
  local t, g1 = self.tiers, self.tiers.managers.G1
  local hook, offloads = t.policy.on_register, {}
  for _, f in ipairs(self.fresh) do
    local ib = g1:register(assert(f.block:stage(self.hashes[f.pos + 1])))
    self.blocks[f.pos + 1] = ib
    local dst = hook and check_tier(t, hook(t.ctx, ib:hash(), f.pos), "on_register")
    if dst and dst ~= "G1" then
      offloads[dst] = offloads[dst] or {}
      offloads[dst][#offloads[dst] + 1] = { h = ib:hash(), pos = f.pos, block = ib }
    end
  end
  local n = #self.fresh
  self.fresh = {}
  for _, name in ipairs(t.names) do
    if offloads[name] then t:_offload("G1", name, offloads[name]) end
  end
  return n
end

--- The request ends: its G1 blocks are released in position order; blocks
--- that go inactive are offered to the policy's on_inactive.
function Request:release()
  local t = self.tiers
  for _, plan in ipairs(self.onboard) do
    for i, p in ipairs(t.pending) do if p == plan then remove(t.pending, i); t:_abandon(plan) break end end
  end
  for _, f in ipairs(self.fresh) do f.block:release() end
  self.fresh = {}
  local held = {}
  for pos = 1, #self.hashes do
    local b = self.blocks[pos]
    if b then held[#held + 1] = { block = b, pos = pos - 1 } end
    self.blocks[pos] = nil
  end
  let_go(t, "G1", held)
end

function Tiers:_abandon(plan)
  for _, b in ipairs(plan.targets) do b:release() end
  for _, b in ipairs(plan.sources) do b:release() end
end

--- Closes the managers (pending plans are abandoned first).
function Tiers:close()
  for _, plan in ipairs(self.pending) do self:_abandon(plan) end
  self.pending = {}
  for _, name in ipairs(self.names) do self.managers[name]:close() end
end

--- Per-tier figures: hits (blocks found there), hit rates, evictions,
--- onboards, offloads.
function Tiers:report()
  local s = self.stats
  local out = { requests = s.requests, rejected = s.rejected, blocks = s.blocks, onboards = s.onboards,
    offloads = s.offloads, offloads_skipped = s.offloads_skipped, tiers = {} }
  for _, name in ipairs(self.names) do
    local mm = self.managers[name]:metrics()
    out.tiers[name] = { hits = s.hits[name], hit_rate = s.blocks > 0 and s.hits[name] / s.blocks or 0,
      evictions = mm.kvbm_evictions_total, registrations = mm.kvbm_registrations_total,
      available = self.managers[name]:available(), total = self.managers[name]:total() }
  end
  return out
end

-- How a planner prints (in the REPL too): its tiers, one a line.
Tiers.__name = "kvbm.Tiers"
function Tiers:__tostring()
  local lines = { format("kvbm.Tiers (block size %d, %d pending plans)", self.block_size, #self:plans()) }
  for _, name in ipairs(ORDER) do
    if self:manager(name) then lines[#lines + 1] = format("  %-3s %s", name, tostring(self:manager(name))) end
  end
  return concat(lines, "\n")
end

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
return M
