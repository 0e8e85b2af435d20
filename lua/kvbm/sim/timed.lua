-- kvbm.sim.timed: `kvbm sim --mode timed`, a discrete-event model of one
-- inference engine in the style of vLLM v1 (doc/sim.md describes it).
--
-- Requests arrive at their timestamps. Each step the scheduler gives a
-- token budget first to the running requests (oldest first: one token for a
-- decoding request, the rest of its prompt, chunked, for a prefilling one),
-- then, if nothing had to be preempted, admits waiting requests while there
-- are a budget, a sequence slot and G1 blocks. A request's cached prefix is
-- looked up when it is admitted (G1, then the blocks after it in G2/G3, which
-- are copied up while the request waits); blocks are allocated as its tokens
-- are scheduled; when a step cannot get blocks, the newest running request
-- is preempted (recompute). A full block becomes reusable by others at the
-- end of the step that computed its last token (visibility "computed") or
-- when its request finishes ("finished"). Requests release their blocks tail
-- first; G1 is an LRU free list that keeps the blocks' content.
local kvbm = require "kvbm"
local timing = require "kvbm.sim.timing"

local pairs, ipairs, type, tostring, error, setmetatable, pcall, math_huge, floor, min, max =
  pairs, ipairs, type, tostring, error, setmetatable, pcall, math.huge, math.floor, math.min, math.max
local pack, rep, sub, remove, insert = string.pack, string.rep, string.sub, table.remove, table.insert
local _ENV = nil

local M = {}

local TIERS = { "G1", "G2", "G3" }

local function sim_error(msg) error({ sim_error = true, msg = msg }, 0) end

-- Calls a user hook; a raising hook aborts the run naming the hook (its
-- message carries the script's file and line).
local function call_hook(kind, name, f, ...)
  local ok, a = pcall(f, ...)
  if not ok then sim_error(kind .. " hook " .. name .. " raised: " .. tostring(a)) end
  return a
end

-- ---------------------------------------------------------------- tiers

local Ctx = {}
Ctx.__index = Ctx
function Ctx:frequency(h) return self.e.registry:frequency(h) end
function Ctx:present(h, tier)
  local m = self.e.managers[tier]
  return m ~= nil and self.e.registry:present(h, m)
end
function Ctx:manager(tier) return self.e.managers[tier] end
--- Full blocks of r's prompt found in G1 now (no side effect).
function Ctx:cached_blocks(r) return self.e:probe(r) end
function Ctx:now() return self.e.now end

-- Copy time of n blocks over the link src -> dst: the links are serial
-- queues (one per direction and pair), each at its tier's bandwidth.
local function copy_done(e, src, dst, n)
  local key = src .. ">" .. dst
  local gbps = (src == "G3" or dst == "G3") and e.o.bw_g3 or e.o.bw_g2
  local start = max(e.now, e.link_free[key] or 0)
  local done = start + n * e.block_bytes / (gbps * 1e9) * 1e3
  e.link_free[key] = done
  return done
end

local function push_copy(e, c)
  local q = e.copies
  local i = #q
  while i >= 1 and q[i].done > c.done do i = i - 1 end
  insert(q, i + 1, c)
end

-- Blocks whose last user let go in tier: offer them to the policy's
-- on_inactive; copy the chosen ones down (holding the sources meanwhile).
local BELOW = { G1 = "G2", G2 = "G3" }

--- True when policy p wants to hear of blocks going inactive.
function M.wants_inactive(p) return p.on_inactive ~= nil or p.on_inactive_batch ~= nil end

-- The destinations a tier hook chose for hashes (its batch twin first: one
-- call for all), grouped by destination: { [dst] = { hs = {...}, pos = {...} } }.
local function choose(e, name, hashes, positions, ...)
  local batch, hook, ctx, by_dst = e.policy[name .. "_batch"], e.policy[name], e.ctx, {}
  local function add(dst, h, p)
    local l = by_dst[dst]
    if not l then l = { hs = {}, pos = {} }; by_dst[dst] = l end
    l.hs[#l.hs + 1], l.pos[#l.pos + 1] = h, p
  end
  local label = batch and name .. "_batch" or name
  local ok, err = pcall(function(...)
    if batch then
      local got = batch(ctx, hashes, positions, ...)
      if got == nil then return end
      if type(got) ~= "table" then return "a " .. type(got) .. ", not a list of tiers" end
      for i = 1, #hashes do
        if got[i] ~= nil then add(got[i], hashes[i], positions[i]) end
      end
    else
      for i, h in ipairs(hashes) do
        local dst = hook(ctx, h, positions[i], ...)
        if dst ~= nil then add(dst, h, positions[i]) end
      end
    end
  end, ...)
  if not ok then sim_error("tier hook " .. label .. " raised: " .. tostring(err)) end
  if err then sim_error("tier hook " .. label .. " returned " .. err) end
  for dst in pairs(by_dst) do
    if not e.managers[dst] then sim_error("tier hook " .. label .. " returned " .. tostring(dst) .. ", which is not a tier of this run") end
  end
  return by_dst
end

function M.inactive(e, tier, hashes, positions)
  if not M.wants_inactive(e.policy) or #hashes == 0 then return end
  if e.policy.offload_below then -- the default rule, without a call per block
    local dst = BELOW[tier]
    while dst and not e.managers[dst] do dst = BELOW[dst] end
    if dst then M.offload(e, tier, dst, hashes, positions) end
    return
  end
  local by_dst = choose(e, "on_inactive", hashes, positions, tier)
  for _, dst in ipairs(TIERS) do
    if by_dst[dst] and dst ~= tier then M.offload(e, tier, dst, by_dst[dst].hs, by_dst[dst].pos) end
  end
end

-- Offload copy of hashes from tier src to dst: sources held, destination
-- blocks allocated all or nothing (a full destination skips and counts).
function M.offload(e, src, dst, hashes, positions)
  local reg, dm, planned = e.registry, e.managers[dst], e.planned[dst]
  local hs, pos, there = {}, {}, reg:check_presence(hashes, dm)
  for i = 1, #hashes do
    local h = hashes[i]
    if not there[i] and not planned[h] then hs[#hs + 1], pos[#pos + 1] = h, positions[i] end
  end
  if #hs == 0 then return end
  local targets = dm:allocate_set(#hs)
  if not targets then
    e.stats.offloads_skipped = e.stats.offloads_skipped + #hs
    return
  end
  local sources = e.managers[src]:match_set(hs, true)
  if #sources < #hs then -- a source went away meanwhile: skip the copy
    sources:release()
    targets:release()
    e.stats.offloads_skipped = e.stats.offloads_skipped + #hs
    return
  end
  for _, h in ipairs(hs) do planned[h] = true end
  push_copy(e, { kind = "offload", src = src, dst = dst, hashes = hs, pos = pos, sources = { sources }, targets = targets,
    done = copy_done(e, src, dst, #hs) })
end

-- Positions of the blocks at the set indices idx.
local function positions_of(pos, idx)
  local out = {}
  for k = 1, #idx do out[k] = pos[idx[k]] end
  return out
end

local function finish_offload(e, c)
  local planned = e.planned[c.dst]
  for _, h in ipairs(c.hashes) do planned[h] = nil end
  local ib = e.managers[c.dst]:register_set(c.targets, c.hashes, 0)
  e.stats.offloads = e.stats.offloads + #c.hashes
  local collect = M.wants_inactive(e.policy)
  local sh, si = c.sources[1]:release("forward", collect)
  local dh, di = ib:release("forward", collect)
  if collect then
    M.inactive(e, c.src, sh, positions_of(c.pos, si))
    M.inactive(e, c.dst, dh, positions_of(c.pos, di))
  end
end

-- ------------------------------------------------------------- requests

-- The prompt and the output tokens of request r as one packed string: the
-- output tokens are one token per request (0xFFFFFFFF - index), so that
-- generated blocks are the request's own and never shared by accident.
local function all_tokens(r)
  if not r.all then r.all = r.tokens .. rep(pack("<I4", 0xFFFFFFFF - r.index), r.out_len) end
  return r.all
end

-- Lookup at admission: the capped prefix in G1, then the run of following
-- blocks in lower tiers. Returns the G1 set, the run (list of {tier, h}) and
-- the capped sequence.
local function lookup(e, r)
  local bs = e.bs
  local cap = (r.n + r.generated - 1) // bs
  local capseq = kvbm.sequence(sub(all_tokens(r), 1, cap * bs * 4), bs, r.salt)
  local got = e.g1:match_set(capseq)
  local h1, run = #got, {}
  if e.lower and h1 < cap then
    local all, hook, reg = capseq:hashes(), e.policy.onboard, e.registry
    local hashes = {}
    for i = h1 + 1, cap do hashes[#hashes + 1] = all[i] end
    local there = {} -- presence per lower tier, one call each
    for k, name in ipairs(e.lower) do there[k] = reg:check_presence(hashes, e.managers[name]) end
    for i = 1, #hashes do
      local h, from = hashes[i], nil
      for k, name in ipairs(e.lower) do
        if not from and there[k][i]
          and (hook == nil or call_hook("tier", "onboard", hook, e.ctx, h, h1 + i - 1, name)) then
          from = name
        end
      end
      if not from then break end
      run[#run + 1] = { from, h }
    end
  end
  return got, run, capseq, cap
end

--- Full blocks of r's capped prefix present in G1 (a probe: nothing is taken).
function M.probe(e, r)
  local bs = e.bs
  local cap = (r.n + r.generated - 1) // bs
  local hashes = kvbm.sequence(sub(all_tokens(r), 1, cap * bs * 4), bs, r.salt):hashes()
  local reg, g1, k = e.registry, e.g1, 0
  while k < #hashes and reg:present(hashes[k + 1], g1) do k = k + 1 end
  return k
end

-- Blocks r needs for n more tokens (all or nothing): the full ones, and a
-- new partial tail.
local function blocks_for(e, r, n)
  local bs = e.bs
  local c1 = r.computed + n
  local start = r.nblocks
  local full_end = c1 // bs
  local nfull = max(0, full_end - start)
  local ntail = (c1 % bs ~= 0 and full_end >= start) and 1 or 0
  return nfull, ntail
end

local function release_held(e, r)
  if r.held then
    local hs, idx = r.held:release("reverse", e.lower ~= nil and M.wants_inactive(e.policy))
    if hs then
      for i = 1, #idx do idx[i] = idx[i] - 1 end -- set index -> block position
      M.inactive(e, "G1", hs, idx)
    end
  end
  if r.unreg then r.unreg:release("reverse") end
  if r.partial then r.partial:release() end
  r.held, r.unreg, r.partial, r.nblocks = nil, nil, nil, 0
end

local function preempt(e, r)
  release_held(e, r)
  if r.loading then
    r.loading.aborted = true
    r.loading = nil
  end
  r.computed = 0
  r.preemptions = r.preemptions + 1
  e.stats.preemptions = e.stats.preemptions + 1
end

-- ---------------------------------------------------------------- engine

local Engine = {}
Engine.__index = Engine
Engine.probe = M.probe

--- M.new(o, requests): o holds the parsed options (block_size, g1, g2, g3,
--- g1_backend.., policy, scheduler, max_batched_tokens, max_seqs,
--- cache_visibility, arrival_speedup, timing, kv_bytes_per_token, bw_g2,
--- bw_g3, events); requests a list of { tokens, n, salt, timestamp_ms, output_length }.
function M.new(o, requests)
  local reg = kvbm.registry{ frequency = o.frequency or "medium", events = o.events }
  local e = setmetatable({ o = o, bs = o.block_size, registry = reg, managers = {}, names = {}, now = 0,
    link_free = {}, copies = {}, planned = { G1 = {}, G2 = {}, G3 = {} }, policy = o.policy or {},
    scheduler = o.scheduler or {}, waiting = {}, running = {}, future = {}, done = 0,
    block_bytes = o.kv_bytes_per_token * o.block_size,
    samples = { t = {}, lookups = {}, hits = { G1 = {}, G2 = {}, G3 = {} }, used = { G1 = {}, G2 = {}, G3 = {} } },
    stats = { requests = #requests, rejected = 0, blocks = 0, hits = { G1 = 0, G2 = 0, G3 = 0 }, onboards = 0,
      offloads = 0, offloads_skipped = 0, preemptions = 0, steps = 0, prompt_tokens = 0, first_cached_tokens = 0,
      output_tokens = 0, ttft = {}, queue = {}, itl = {}, e2e = {} } }, Engine)
  e.ctx = setmetatable({ e = e, tiers = e }, Ctx)
  e.coeff, e.step_ms = timing.model(o.timing or timing.coefficients(), o.kv_bytes_per_token)
  for _, name in ipairs(TIERS) do
    local blocks = o[name:lower()]
    if blocks and blocks > 0 then
      local m, err = kvbm.manager{ blocks = blocks, block_size = o.block_size, registry = reg, name = name,
        backend = o.backends[name] or (name == "G1" and "lru" or "lru"), duplicates = name == "G1" and "allow" or "reject" }
      if not m then sim_error("cannot build " .. name .. ": " .. tostring(err)) end
      e.managers[name] = m
      e.names[#e.names + 1] = name
      if name ~= "G1" then e.lower = e.lower or {}; e.lower[#e.lower + 1] = name end
    end
  end
  e.g1 = e.managers.G1
  local speed = o.arrival_speedup
  for i, q in ipairs(requests) do
    e.future[i] = { index = i - 1, id = q.id or i - 1, tokens = q.tokens, n = q.n, salt = q.salt or 0,
      arrival = (q.timestamp_ms or 0) / speed, out_len = max(1, q.output_length or 1), generated = 0,
      computed = 0, nblocks = 0, preemptions = 0, first = true, state = "future" }
  end
  -- arrivals in time order (stable: file order among equal timestamps)
  local order = e.future
  for i = 2, #order do
    local r, j = order[i], i - 1
    while j >= 1 and order[j].arrival > r.arrival do order[j + 1] = order[j]; j = j - 1 end
    order[j + 1] = r
  end
  e.next_arrival = 1
  return e
end

--- The time from the first arrival to the last (ms, after --arrival-speedup).
function Engine:arrival_span_ms()
  local f = self.future
  return #f > 0 and f[#f].arrival - f[1].arrival or 0
end

function Engine:arrive()
  local f = self.future
  while self.next_arrival <= #f and f[self.next_arrival].arrival <= self.now do
    local r = f[self.next_arrival]
    self.next_arrival = self.next_arrival + 1
    local need = (r.n + r.out_len - 1 + self.bs - 1) // self.bs
    if need > self.g1:total() then -- can never fit in G1: an engine refuses it
      r.state = "rejected"
      self.stats.rejected = self.stats.rejected + 1
      self.done = self.done + 1
    else
      r.state = "waiting"
      self.waiting[#self.waiting + 1] = r
    end
  end
end

function Engine:complete_copies()
  local q = self.copies
  while #q > 0 and q[1].done <= self.now do
    local c = remove(q, 1)
    if c.kind == "offload" then
      finish_offload(self, c)
    else
      self:finish_onboard(c)
    end
  end
end

-- An onboard copy arrived: its G1 blocks are registered (they hold computed
-- KV) and the request can be scheduled again.
function Engine:finish_onboard(c)
  local r = c.request
  local collect = M.wants_inactive(self.policy)
  for k, s in ipairs(c.sources) do
    local hs, idx = s:release("forward", collect)
    if collect then M.inactive(self, c.tiers[k], hs, positions_of(c.pos[k], idx)) end
  end
  if c.aborted then return end
  r.loading = nil
  local ib = self.g1:register_set(c.targets, c.seq, r.held and #r.held or 0)
  self.stats.onboards = self.stats.onboards + #ib
  if r.held then r.held:append(ib) else r.held = ib end
  r.computed = #r.held * self.bs
  r.state = "waiting"
end

-- Admission of waiting request r (index wi in the waiting queue) with
-- budget tokens left: lookup on first scheduling, onboard copies, blocks for
-- its first chunk. Returns the tokens scheduled, 0 when it now waits for
-- copies, or nil when it cannot be scheduled (no blocks).
function Engine:admit(r, budget)
  local st, bs = self.stats, self.bs
  if r.computed == 0 and not r.held then
    local got, run, capseq, cap = lookup(self, r)
    local nrun = #run
    -- blocks for the onboard run, or for the first chunk after the hits
    local need_on = nrun
    local n_after = min(r.n + r.generated - (#got + nrun) * bs, budget)
    r.held, r.nblocks, r.computed = got, #got, #got * bs
    local nfull, ntail = 0, 0
    if nrun == 0 then nfull, ntail = blocks_for(self, r, n_after) end
    if self.g1:available() < need_on + nfull + ntail then
      r.held, r.nblocks, r.computed = nil, 0, 0
      got:release("reverse")
      return nil
    end
    st.blocks = st.blocks + cap
    st.hits.G1 = st.hits.G1 + #got
    local cached, first = #got, r.first
    if first then
      r.first = false
      r.first_sched = self.now
      st.queue[#st.queue + 1] = self.now - r.arrival
      st.prompt_tokens = st.prompt_tokens + r.n
    end
    if nrun > 0 then
      local targets = self.g1:allocate_set(nrun)
      local c = { kind = "onboard", request = r, targets = targets, seq = capseq, sources = {} }
      local per, ppos = {}, {}
      for k, x in ipairs(run) do
        if not per[x[1]] then per[x[1]], ppos[x[1]] = {}, {} end
        local l = per[x[1]]
        l[#l + 1] = x[2]
        ppos[x[1]][#l] = #got + k - 1
      end
      c.tiers, c.pos = {}, {}
      local done = self.now
      for _, name in ipairs(self.lower) do
        if per[name] then
          st.hits[name] = st.hits[name] + #per[name]
          c.sources[#c.sources + 1] = self.managers[name]:match_set(per[name], true)
          c.tiers[#c.sources], c.pos[#c.sources] = name, ppos[name]
          done = max(done, copy_done(self, name, "G1", #per[name]))
        end
      end
      cached = cached + nrun
      c.done = done
      r.nblocks = r.nblocks + nrun
      r.loading = c
      r.state = "loading"
      push_copy(self, c)
      if first then st.first_cached_tokens = st.first_cached_tokens + cached * bs end
      return 0
    end
    if first then st.first_cached_tokens = st.first_cached_tokens + cached * bs end
    self:schedule(r, n_after, nfull, ntail)
    return n_after
  end
  local n = min(r.n + r.generated - r.computed, budget)
  local nfull, ntail = blocks_for(self, r, n)
  if self.g1:available() < nfull + ntail then return nil end
  self:schedule(r, n, nfull, ntail)
  return n
end

-- Takes the blocks for n tokens of r in this step. With visibility
-- "scheduled" (vLLM v1's code: allocate_slots caches the blocks its chunk
-- will fill) the full ones are registered right away.
function Engine:schedule(r, n, nfull, ntail)
  local g1 = self.g1
  r.step_n = n
  r.step_full = nfull > 0 and g1:allocate_set(nfull) or nil
  r.step_tail = ntail > 0 and g1:allocate_set(ntail) or nil
  r.nblocks = r.nblocks + nfull + ntail
  if self.o.cache_visibility == "scheduled" then self:complete(r, r.computed + n) end
end

-- The blocks of r whose last token is at or before c1 become complete:
-- registered, or kept aside until the request ends (visibility "finished").
function Engine:complete(r, c1)
  local bs = self.bs
  local completing = nil
  if r.partial and c1 // bs > r.computed // bs then
    completing = r.partial
    r.partial = nil
  end
  if r.step_full then
    if completing then completing:append(r.step_full) else completing = r.step_full end
  end
  if r.step_tail then r.partial = r.step_tail end
  r.step_full, r.step_tail = nil, nil
  if completing then
    if self.o.cache_visibility == "finished" then
      if r.unreg then r.unreg:append(completing) else r.unreg = completing end
    else
      self:register(r, completing)
    end
  end
end

-- End of the step for r: its computed tokens advance.
function Engine:computed(r)
  local c1 = r.computed + r.step_n
  if self.o.cache_visibility ~= "scheduled" then self:complete(r, c1) end
  r.computed, r.step_n = c1, nil
end

function Engine:register(r, set)
  local first = r.held and #r.held or 0
  if not r.seq then r.seq = kvbm.sequence(sub(all_tokens(r), 1, ((r.n + r.out_len - 1) // self.bs) * self.bs * 4), self.bs, r.salt) end
  local ib = self.g1:register_set(set, r.seq, first)
  if (self.policy.on_register or self.policy.on_register_batch) and #ib > 0 then
    local hs, ps = {}, {}
    for i = 1, #ib do hs[i], ps[i] = ib:hash(i), first + i - 1 end
    local by = choose(self, "on_register", hs, ps)
    for _, dst in ipairs(TIERS) do
      if by[dst] and dst ~= "G1" then M.offload(self, "G1", dst, by[dst].hs, by[dst].pos) end
    end
  end
  if r.held then r.held:append(ib) else r.held = ib end
end

function Engine:finish(r)
  if r.unreg then
    self:register(r, r.unreg)
    r.unreg = nil
  end
  release_held(self, r)
  r.state = "done"
  r.seq, r.all = nil, nil
  self.done = self.done + 1
  local st = self.stats
  st.e2e[#st.e2e + 1] = self.now - r.arrival
  st.output_tokens = st.output_tokens + r.out_len
end

-- The scheduler hooks: pick_waiting(ctx, waiting) -> index (default 1, the
-- oldest) and pick_preempt(ctx, candidates) -> index (default the last, the
-- newest admitted).
function Engine:pick_waiting(list)
  local hook = self.scheduler.pick_waiting
  if not hook then return 1 end
  local i = call_hook("scheduler", "pick_waiting", hook, self.ctx, list)
  if type(i) ~= "number" or i % 1 ~= 0 or i < 1 or i > #list then
    sim_error("scheduler hook pick_waiting returned " .. tostring(i) .. ", not an index of the " .. #list .. " waiting requests")
  end
  return i
end

function Engine:pick_preempt(cands)
  local hook = self.scheduler.pick_preempt
  if not hook then return #cands end
  local i = call_hook("scheduler", "pick_preempt", hook, self.ctx, cands)
  if type(i) ~= "number" or i % 1 ~= 0 or i < 1 or i > #cands then
    sim_error("scheduler hook pick_preempt returned " .. tostring(i) .. ", not an index of the " .. #cands .. " candidates")
  end
  return i
end

--- One engine step at self.now. Returns false when there is nothing left.
function Engine:step()
  self:arrive()
  self:complete_copies()
  local o, st = self.o, self.stats
  local budget, running, sched = o.max_batched_tokens, self.running, {}
  local preempted = false
  local i = 1
  while i <= #running and budget > 0 do
    local r = running[i]
    local n = min(r.n + r.generated - r.computed, budget)
    local nfull, ntail = blocks_for(self, r, n)
    local ok = true
    while self.g1:available() < nfull + ntail do
      local cands = {}
      for k = i, #running do cands[#cands + 1] = running[k] end
      local v = i - 1 + self:pick_preempt(cands)
      local victim = remove(running, v)
      preempt(self, victim)
      victim.state = "waiting"
      insert(self.waiting, 1, victim)
      preempted = true
      if victim == r then ok = false; break end
    end
    if ok then
      self:schedule(r, n, nfull, ntail)
      sched[#sched + 1] = r
      budget = budget - n
      i = i + 1
    end
  end
  if not preempted then
    local waiting = self.waiting
    local skipped = 0
    while #waiting > skipped and budget > 0 and #running < o.max_seqs do
      -- loading requests wait for their copies: not candidates
      local k
      if self.scheduler.pick_waiting then
        local cands, map = {}, {}
        for j = 1, #waiting do
          if waiting[j].state == "waiting" then cands[#cands + 1] = waiting[j]; map[#cands] = j end
        end
        if #cands == 0 then break end
        k = map[self:pick_waiting(cands)]
      else
        k = 1
        while k <= #waiting and waiting[k].state ~= "waiting" do k = k + 1 end
        if k > #waiting then break end
      end
      local r = waiting[k]
      local n = self:admit(r, budget)
      if n == nil then break end
      if n > 0 then
        remove(waiting, k)
        r.state = "running"
        running[#running + 1] = r
        sched[#sched + 1] = r
        budget = budget - n
      else
        skipped = skipped + 1
      end
    end
  end
  if #sched == 0 then
    -- idle: jump to the next arrival or copy
    local t = math_huge
    if self.next_arrival <= #self.future then t = self.future[self.next_arrival].arrival end
    if #self.copies > 0 then t = min(t, self.copies[1].done) end
    if t == math_huge then
      -- Waiting requests that onboarded part of their prefix can hold G1
      -- between them so that none of them can get the rest: the newest one
      -- that holds blocks lets go of them (preempted before it ran; its
      -- registered blocks stay cached) and the step is tried again.
      for j = #self.waiting, 1, -1 do
        local r = self.waiting[j]
        if r.state == "waiting" and r.held then
          preempt(self, r)
          return true
        end
      end
      if #self.waiting > 0 or #running > 0 then sim_error("the engine is stuck: waiting requests need G1 blocks that onboards in flight hold (try a larger --g1)") end
      return false
    end
    self.now = max(self.now, t)
    return true
  end
  -- the step's time
  local tokens, pairs_, dctx = 0, 0, 0
  for _, r in ipairs(sched) do
    local n = r.step_n
    tokens = tokens + n
    if r.computed >= r.n then dctx = dctx + r.computed else pairs_ = pairs_ + n * (r.computed + n / 2) end
  end
  self.now = self.now + self.step_ms(tokens, pairs_, dctx)
  st.steps = st.steps + 1
  -- the step ends: tokens computed, blocks complete, tokens sampled
  for _, r in ipairs(sched) do
    self:computed(r)
    if r.computed == r.n + r.generated then
      r.generated = r.generated + 1
      if not r.ttft_done then
        st.ttft[#st.ttft + 1] = self.now - r.arrival
        r.ttft_done = true
      else
        st.itl[#st.itl + 1] = self.now - r.last_token
      end
      r.last_token = self.now
    end
  end
  for j = #running, 1, -1 do
    local r = running[j]
    if r.generated >= r.out_len and r.computed == r.n + r.generated - 1 then
      remove(running, j)
      self:finish(r)
    end
  end
  self:sample()
  return true
end

-- A point of the over-time charts: per-tier hits and lookups since the last
-- point, and each tier's occupancy (blocks holding KV / capacity).
function Engine:sample()
  local s, st = self.samples, self.stats
  local n = #s.t + 1
  s.t[n] = self.now
  s.lookups[n] = st.blocks
  for _, name in ipairs(self.names) do
    local m = self.managers[name]
    s.hits[name][n] = st.hits[name]
    s.used[name][n] = (m:total() - m:reset_pool()) / m:total()
  end
end

--- Runs the engine to the end; progress(done, total) is called every step.
function Engine:run(progress)
  while self:step() do
    if progress then progress(self.done, #self.future) end
  end
  return self
end

function Engine:close(after_each)
  for _, r in ipairs(self.running) do release_held(self, r) end
  for _, r in ipairs(self.waiting) do release_held(self, r) end
  for _, c in ipairs(self.copies) do
    for _, s in ipairs(c.sources) do s:release() end
    c.targets:release()
  end
  self.copies = {}
  for _, name in ipairs(self.names) do
    self.managers[name]:close()
    if after_each then after_each(name) end -- e.g. publish the close's events
  end
end

M.Engine = Engine
return M
