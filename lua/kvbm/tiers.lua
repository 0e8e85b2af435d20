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
-- The request is a kvbm.request RequestSequence (t:admit(rs) admits one the
-- host made; t:admit(tokens, salt) and t:admit(seq) build one), so after
-- the commit it decodes on t:manager("G1") with rs:append_token and
-- rs:complete_and_register_pending (lua/kvbm/request.lua).
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
--   on_register_batch(ctx, hs, ps)        a request's new G1 blocks at once --> { tier or nil, ... }
--   on_inactive_batch(ctx, hs, ps, tier)  the blocks that went inactive together --> { tier or nil, ... }
-- (a batch hook replaces its per-block twin; hs and ps are lists of hashes and positions).
-- ctx: ctx.tiers (this planner), ctx:frequency(h), ctx:present(h, tier), ctx:manager(tier).
-- policy = "offload_on_release" is the built-in rule of that name (the one
-- scripts/examples/offload_on_release.lua writes in Lua), run without Lua calls.
-- Duplicate policies: G1 allows duplicates, G2 and G3 reject them (one copy per hash).
--
-- The bookkeeping (plans, the blocks they hold, presence, the index of
-- planned copies, statistics) is the C planner of kvbm.h "tiers"; this
-- module builds the managers and gives it a Lua face.
local kvbm = require "kvbm"

local setmetatable, ipairs, pairs, type, assert, error, tostring = setmetatable, ipairs, pairs, type, assert, error, tostring
local format, concat = string.format, table.concat
local core = kvbm._tiers
local new_sequence = kvbm.sequence
local request = kvbm.request
local is_request, from_sequence, new_request = request.is, request.from_sequence, request._wrap
local typename = kvbm.logical._typename
local getmetatable = getmetatable
local SEQUENCE_MT = getmetatable(new_sequence({}, 1))
local _ENV = nil

local ORDER = { "G1", "G2", "G3" }
local DEFAULT_BACKEND = { G1 = "lineage", G2 = "lru", G3 = "lru" }

local Tiers = {}
local TiersMT = { __index = Tiers, __name = "kvbm.Tiers" }
local M = {}

-- t.stats: the planner's counters, read from it when asked for.
local function stats_proxy(t)
  return setmetatable({}, { __index = function(_, k) return core.stats(t)[k] end })
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
  local policy = opts.policy or {}
  if type(policy) ~= "table" and type(policy) ~= "string" then
    error("kvbm.tiers: policy must be a table of hooks or the name of a built-in rule", 2)
  end
  local reg, rerr = opts.registry, nil
  if not reg then
    reg, rerr = kvbm.registry{ frequency = opts.frequency == nil and "medium" or opts.frequency, events = opts.events }
    if not reg then return nil, rerr end -- out of memory: say so, not "registry is required"
  end
  local t = setmetatable({ registry = reg, managers = {}, names = {}, block_size = opts.block_size or 16,
    policy = policy }, TiersMT)
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
  local c, err = core.new(t, t.managers, policy)
  if not c then return nil, err end
  t._core = c
  t.ctx, t.stats = core.ctx(t), stats_proxy(t)
  return t
end

function Tiers:manager(name) return self.managers[name] end

--- Presence of h per tier: { G1 = bool, G2 = bool, G3 = bool }.
Tiers.presence = core.presence

--- The plans that are waiting for the host, oldest first.
Tiers.plans = core.plans

--- The host finished the copies of plan: register them in the destination
--- tier and let go of the sources. ok == false: the copy failed; nothing is
--- registered and every block goes back. Returns true.
Tiers.complete = core.complete

--- Completes every pending plan (a host whose copies are instantaneous,
--- such as the simulator). Returns how many were completed.
Tiers.complete_all = core.complete_all

--- A copy to dst of hash h is already planned (not yet complete).
function Tiers:_planned(dst, h) return core.planned(self, dst, h) end

-- The RequestSequence t:admit admits: req itself, or one built over a
-- sequence (given, or made of tokens and salt). Raises on bad input.
local function request_of(t, req, salt)
  if is_request(req) then
    if salt ~= nil then error("kvbm.tiers: admit: a salt goes with a token list, not with a kvbm.request", 3) end
    if req._r then error("kvbm.tiers: admit: the request is already admitted (release it first)", 3) end
    if not req:assignments():is_empty() then
      error("kvbm.tiers: admit: the request already holds blocks (release them first)", 3)
    end
    if req:block_size() ~= t.block_size then
      error(format("kvbm.tiers: admit: the request's block size %d differs from the planner's %d",
        req:block_size(), t.block_size), 3)
    end
    return req
  end
  local seq = req
  if typename(req) == "kvbm.Sequence" then
    if salt ~= nil then error("kvbm.tiers: admit: a salt goes with a token list, not with a kvbm.sequence", 3) end
    if req:block_size() ~= t.block_size then
      error(format("kvbm.tiers: admit: the sequence's block size %d differs from the planner's %d",
        req:block_size(), t.block_size), 3)
    end
  elseif type(req) == "table" or type(req) == "string" then
    local err
    seq, err = new_sequence(req, t.block_size, salt)
    if not seq then error("kvbm.tiers: admit: " .. tostring(err), 3) end
  else
    error("kvbm.tiers: admit expects a kvbm.request, a kvbm.sequence or a token list, got " .. typename(req), 3)
  end
  return from_sequence(seq)
end

--- Admits a request (a kvbm.request RequestSequence that holds no blocks,
--- or tokens and salt, or a kvbm.sequence): matches its full blocks' prefix
--- in G1, plans onboarding of the following blocks found in lower tiers,
--- allocates G1 blocks for the rest. Returns the RequestSequence with
--- r.onboard (its onboard plans), r.matched (the G1 hits), r.waiting (the
--- onboards not yet complete), r.seq (its sequence), r.tiers; or nil, err
--- when G1 cannot hold it (nothing is kept, the request is unchanged).
--- r:commit(): the prefill is computed: register the request's new blocks in
--- G1 (once its onboard plans are complete); returns how many.
--- r:release(): the request ends: its G1 blocks are released in position
--- order; blocks that go inactive are offered to the policy's on_inactive.
function Tiers:admit(req, salt)
  local rs
  if getmetatable(req) == SEQUENCE_MT and salt == nil and req:block_size() == self.block_size then
    rs = new_request(req, 0) -- the replay's path: nothing more to check
  else
    rs = request_of(self, req, salt)
  end
  -- core.admit sets the planner's fields, and rs._prefix to the blocks found
  -- (G1 hits and onboards); on nil, err rs is unchanged
  local r, err = core.admit(self, rs._seq, rs)
  if not r then return nil, err end
  return rs
end

--- Closes the managers (pending plans are abandoned first).
function Tiers:close()
  core.close(self._core)
  for _, name in ipairs(self.names) do self.managers[name]:close() end
end

--- Per-tier figures: hits (blocks found there), hit rates, evictions,
--- registrations, copies in and out, engine bytes; onboards, offloads.
function Tiers:report()
  local s = core.stats(self)
  local out = { requests = s.requests, rejected = s.rejected, blocks = s.blocks, onboards = s.onboards,
    offloads = s.offloads, offloads_skipped = s.offloads_skipped, tiers = {} }
  for _, name in ipairs(self.names) do
    local mm = self.managers[name]:metrics()
    out.tiers[name] = { hits = s.hits[name], hit_rate = s.blocks > 0 and s.hits[name] / s.blocks or 0,
      evictions = mm.kvbm_evictions_total, registrations = mm.kvbm_registrations_total,
      available = self.managers[name]:available(), total = self.managers[name]:total(),
      copies_in = s.per_tier[name].copies_in, copies_out = s.per_tier[name].copies_out,
      bytes = self.managers[name]:bytes() }
  end
  return out
end

-- How a planner prints (in the REPL too): its tiers, one a line.
function TiersMT:__tostring()
  local lines = { format("kvbm.Tiers (block size %d, %d pending plans)", self.block_size, #self:plans()) }
  for _, name in ipairs(ORDER) do
    if self:manager(name) then lines[#lines + 1] = format("  %-3s %s", name, tostring(self:manager(name))) end
  end
  return concat(lines, "\n")
end

setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
return M
