-- A randomized model test: for every backend (the five built-in ones and the
-- two Lua policies) and a fixed list of seeds, ~1500 random operations on
-- two managers sharing one registry (G1 allows duplicates, G2 rejects
-- them). After every step the engine's self-check (kvbm._debug.check: block
-- conservation, one primary per hash, presence counts) must pass, and the
-- engine must agree with a Lua model of the store kept here:
--   * every slot's state, its hash, its reference count and its
--     reset-on-release flag; the reset pool's FIFO order (so the ids handed
--     out by an allocation are predicted exactly);
--   * the inactive set, and for the list-ordered backends (lru, hashmap,
--     multi_lru, the Lua lru and lfu) the exact eviction order: by level
--     (frequency at release time), then release order; for lineage, that a
--     parent never goes while one of its children is still cached;
--   * registration (which hashes are registered), presence per manager,
--     TinyLFU counts (registration, match hits and touching scans count),
--     handles and their attachments.
-- Seeds are fixed, so a failure reproduces; the message names the backend,
-- the seed and the step.
local kvbm = require "kvbm"
local helpers = require "helpers"
local lru = require "kvbm.policy.lru"
local lfu = require "kvbm.policy.lfu"

local SEEDS = { 101, 202, 303, 404 }
local STEPS = 1500
local MAX_FREQUENCY = 15

--- Backends: how to build one, and how the model orders its victims
--- (level(f) for a block released with frequency f, or lineage = true).
local DEFAULT_THRESHOLDS = { 3, 8, 15 }
local function band(f, thresholds)
  local l = 0
  for _, t in ipairs(thresholds) do
    if f >= t then l = l + 1 end
  end
  return l
end
local BACKENDS = {
  { name = "lru", make = function() return "lru" end, level = function() return 0 end },
  { name = "hashmap", make = function() return "hashmap" end, level = function() return 0 end },
  { name = "multi_lru", make = function() return "multi_lru" end,
    level = function(f) return band(f, DEFAULT_THRESHOLDS) end },
  { name = "lineage", make = function() return "lineage" end, lineage = true },
  { name = "lineage_fifo", make = function() return "lineage_fifo" end, lineage = true },
  { name = "Lua lru policy", make = function() return lru.new() end, level = function() return 0 end },
  { name = "Lua lfu policy", make = function(reg) return lfu.new(reg) end, level = function(f) return f end },
}

------------------------------------------------------------------ the pool

--- Hashes of a few token sequences (block size 1) sharing prefixes, so that
--- the lineage backends see trees. Returns the docs (lists of hashes), the
--- distinct hashes and each hash's parent (false for a root).
local function make_pool()
  local docs, all, parent = {}, {}, {}
  local trunk = { 11, 12, 13 }
  for d = 1, 10 do
    local toks = {}
    for i = 1, math.random(0, #trunk) do toks[i] = trunk[i] end
    for _ = 1, math.random(2, 6) do toks[#toks + 1] = 100 * d + #toks end
    local hs = kvbm.sequence(toks, 1, 7):hashes()
    docs[d] = hs
    for i, h in ipairs(hs) do
      if parent[h] == nil then
        parent[h] = hs[i - 1] or false
        all[#all + 1] = h
      end
    end
  end
  return docs, all, parent
end

------------------------------------------------------------------ the model

local function new_model(kind, reg, name, blocks, reject)
  local backend = kind.make(reg)
  local m = assert(kvbm.manager{ blocks = blocks, block_size = 4, registry = reg, name = name,
                                 backend = backend, duplicates = reject and "reject" or "allow" })
  local M = {
    m = m, name = name, kind = kind, total = blocks, reject = reject,
    policy = type(backend) == "table" and backend or nil,
    slot = {}, hash = {}, refs = {}, dup_of = {}, flag = {}, gen = {},
    owner = {},  -- hash -> its primary or inactive slot
    cached = {}, -- hash -> {stamp =, level =}
    ncached = 0,
    ring = {},   -- the reset pool: ids, or {set = {[id] = true}, n = k} (order unknown)
    ringlen = 0,
    mut = {}, comp = {}, imm = {}, weak = {},
  }
  for id = 0, blocks - 1 do
    M.slot[id], M.gen[id], M.flag[id] = "reset", 0, false
    M.ring[#M.ring + 1] = id
  end
  M.ringlen = blocks
  return M
end

local function set_state(M, id, state)
  M.slot[id] = state
  M.gen[id] = M.gen[id] + 1
end

local function push_ring(M, id)
  set_state(M, id, "reset")
  M.ring[#M.ring + 1] = id
  M.ringlen = M.ringlen + 1
end

--- Takes the id the engine handed out from the reset pool, checking that it
--- is the one (or one of the set) at the head.
local function take_ring(M, id, where)
  local head = M.ring[1]
  if type(head) == "number" then
    assert(head == id, where .. ": the reset pool is FIFO: expected id " .. head .. ", got " .. id)
    table.remove(M.ring, 1)
  else
    assert(head.set[id], where .. ": id " .. id .. " is not at the head of the reset pool")
    head.set[id] = nil
    head.n = head.n - 1
    if head.n == 0 then table.remove(M.ring, 1) end
  end
  M.ringlen = M.ringlen - 1
  assert(M.slot[id] == "reset", where .. ": allocated a busy slot")
  set_state(M, id, "mutable")
  M.flag[id] = false
end

local World = {} -- per-run state shared by both managers (set in run())

local function registered(h)
  if World.weaks[h] > 0 or World.handles[h] > 0 then return true end
  for _, M in ipairs(World.models) do
    if M.owner[h] then return true end
  end
  return false
end

local function touch(h, n) World.freq[h] = World.freq[h] + (n or 1) end

local function frequency(h) return math.min(World.freq[h], MAX_FREQUENCY) end

--- A slot leaves the cache by a hit or an eviction.
local function uncache(M, h)
  assert(M.cached[h])
  M.cached[h] = nil
  M.ncached = M.ncached - 1
end

--- acquire(): a hit on the primary or inactive slot of h; returns its id.
local function acquire(M, h)
  local e = M.owner[h]
  if M.slot[e] == "inactive" then
    uncache(M, h)
    set_state(M, e, "primary")
    M.refs[e] = 1
  else
    M.refs[e] = M.refs[e] + 1
  end
  return e
end

local function forget(M, id)
  local h = M.hash[id]
  if M.owner[h] == id then M.owner[h] = nil end
  M.hash[id] = nil
end

--- One guard on slot id is released (drop_ref in the engine).
local function drop(M, id)
  while id do
    M.refs[id] = M.refs[id] - 1
    if M.refs[id] > 0 then return end
    local next_id
    if M.slot[id] == "duplicate" then
      next_id = M.dup_of[id]
      forget(M, id)
      push_ring(M, id)
    elseif M.flag[id] then
      forget(M, id)
      push_ring(M, id)
    else
      local h = M.hash[id]
      set_state(M, id, "inactive")
      World.stamp = World.stamp + 1
      M.cached[h] = { stamp = World.stamp, level = M.kind.level and M.kind.level(frequency(h)) }
      M.ncached = M.ncached + 1
    end
    id = next_id
  end
end

--- Registers a staged slot (id, h); returns the id of the result.
local function register_slot(M, id, h)
  if not registered(h) then touch(h) end -- a new registration touches once
  if not M.owner[h] then
    set_state(M, id, "primary")
    M.owner[h], M.hash[id], M.refs[id] = id, h, 1
    return id
  end
  local e = acquire(M, h)
  if M.reject then
    M.hash[id] = nil
    push_ring(M, id)
    return e
  end
  set_state(M, id, "duplicate")
  M.hash[id], M.refs[id], M.dup_of[id] = h, 1, e
  return id
end

--- The victims a list-ordered backend picks: by level, then release order.
local function predicted_victims(M, k)
  local list = {}
  for h, c in pairs(M.cached) do list[#list + 1] = { h = h, level = c.level, stamp = c.stamp } end
  table.sort(list, function(a, b)
    if a.level ~= b.level then return a.level < b.level end
    return a.stamp < b.stamp
  end)
  local out = {}
  for i = 1, k do out[i] = list[i].h end
  return out
end

--- Checks a list of victims against the model and applies the evictions.
local function evict(M, victims, where)
  local expected = not M.kind.lineage and predicted_victims(M, #victims)
  for i, h in ipairs(victims) do
    assert(M.cached[h], where .. ": evicted a block that was not cached")
    if expected then
      assert(expected[i] == h, where .. ": victim " .. i .. " out of policy order")
    else
      for c in pairs(M.cached) do
        -- only leaves are evictable: no cached child of h may remain
        assert(World.parent[c] ~= h, where .. ": a parent was evicted while its child is cached")
      end
    end
    local id = M.owner[h]
    uncache(M, h)
    forget(M, id)
    set_state(M, id, "mutable")
    M.flag[id] = false
  end
end

------------------------------------------------------------- the checks

local function counts_of(M)
  local c = { reset = 0, mutable = 0, staged = 0, primary = 0, duplicate = 0, inactive = 0 }
  for id = 0, M.total - 1 do c[M.slot[id]] = c[M.slot[id]] + 1 end
  return c
end

local function check_model(M, where)
  local m = M.m
  local counts, msg = kvbm._debug.check(m)
  assert(counts, where .. ": " .. tostring(msg))
  local want = counts_of(M)
  for k, v in pairs(want) do
    assert(counts[k] == v, where .. ": " .. k .. " blocks: engine " .. counts[k] .. ", model " .. v)
  end
  assert(want.reset + want.mutable + want.staged + want.primary + want.duplicate + want.inactive == M.total)
  assert(m:inactive() == M.ncached, where .. ": inactive count")
  assert(m:reset_pool() == M.ringlen, where .. ": reset pool size")
  assert(m:available() == M.ringlen + M.ncached, where .. ": available")
  assert(#M.mut == want.mutable and #M.comp == want.staged, where .. ": guards and slot states")
  if M.policy then
    assert(M.policy.size() == M.ncached, where .. ": the Lua policy lost track of the cache")
  end
  assert(m:metrics().policy_errors == 0, where .. ": policy errors")
  -- every guard names its slot; the immutable guards hold exactly the refs
  local guards = {}
  for _, g in ipairs(M.imm) do
    assert(g.g:id() == g.id and g.g:hash() == M.hash[g.id], where .. ": guard and slot disagree")
    guards[g.id] = (guards[g.id] or 0) + 1
  end
  for id = 0, M.total - 1 do
    local st = M.slot[id]
    if st == "primary" or st == "duplicate" then
      local dups = 0
      for d = 0, M.total - 1 do
        if M.slot[d] == "duplicate" and M.dup_of[d] == id then dups = dups + 1 end
      end
      assert(M.refs[id] == (guards[id] or 0) + dups, where .. ": references of slot " .. id)
    end
  end
end

local function check_world(where)
  local reg = World.reg
  local n = 0
  for _, h in ipairs(World.pool) do
    local r = registered(h)
    if r then n = n + 1 end
    assert(reg:is_registered(h) == r, where .. ": registration of a pool hash")
    for _, M in ipairs(World.models) do
      assert(reg:present(h, M.m) == (M.owner[h] ~= nil), where .. ": presence in " .. M.name)
    end
    assert(reg:frequency(h) == frequency(h), where .. ": TinyLFU count")
    if not r then World.attached[h] = nil end -- attachments end with the registration
  end
  assert(reg:count() == n, where .. ": registered count")
  for _, hd in ipairs(World.hds) do
    assert(hd.g:get("tag") == World.attached[hd.hash], where .. ": attachment of a live handle")
  end
end

-------------------------------------------------------------- operations

local function pick(list) return list[math.random(#list)] end

local function pop_random(list)
  if #list == 0 then return nil end
  return table.remove(list, math.random(#list))
end

local function random_hashes(n)
  local t = {}
  for i = 1, n do t[i] = pick(World.pool) end
  return t
end

local function ids_of(list)
  local t = {}
  for i, b in ipairs(list) do t[i] = b:id() end
  return t
end

--- allocate(n) (optionally with evictions): predicts the ids exactly.
local function op_allocate(M, n, with_ev, where)
  local avail = M.ringlen + M.ncached
  local mbs, evicted
  if with_ev then mbs, evicted = M.m:allocate_with_evictions(n) else mbs, evicted = M.m:allocate(n) end
  if n > avail then
    assert(mbs == nil and evicted.code == "no_space", where .. ": allocation beyond reset + inactive")
    return nil
  end
  assert(mbs and #mbs == n, where .. ": allocation failed")
  local from_reset = math.min(n, M.ringlen)
  for i = 1, from_reset do take_ring(M, mbs[i]:id(), where) end
  local victims = {}
  for i = from_reset + 1, n do
    local id = mbs[i]:id()
    assert(M.slot[id] == "inactive", where .. ": an evicted block was not inactive")
    victims[#victims + 1] = M.hash[id]
  end
  if with_ev then
    assert(#evicted == #victims, where .. ": evicted list length")
    for i, h in ipairs(victims) do assert(evicted[i] == h, where .. ": evicted hash vs block id") end
  end
  evict(M, victims, where)
  for _, h in ipairs(victims) do
    assert(not World.reg:present(h, M.m), where .. ": an evicted hash is still present")
  end
  return mbs
end

local function op_stage(M)
  local rec = pop_random(M.mut)
  if not rec then return end
  local h = pick(World.pool)
  local cb = rec.g:stage(h)
  set_state(M, rec.id, "staged")
  M.hash[rec.id] = h
  M.comp[#M.comp + 1] = { g = cb, id = rec.id, hash = h }
end

local function op_unstage(M, where)
  local rec = pop_random(M.comp)
  if not rec then return end
  local mb = rec.g:reset()
  assert(mb:id() == rec.id, where)
  set_state(M, rec.id, "mutable")
  M.flag[rec.id], M.hash[rec.id] = false, nil
  M.mut[#M.mut + 1] = { g = mb, id = rec.id }
end

local function add_imm(M, g, id, where)
  assert(g:id() == id, where .. ": registered/matched block id")
  M.imm[#M.imm + 1] = { g = g, id = id }
end

local function op_register(M, n, where)
  if #M.comp == 0 then return end
  local recs = {}
  for _ = 1, math.min(n, #M.comp) do recs[#recs + 1] = pop_random(M.comp) end
  local ibs
  if n == 1 then
    ibs = { M.m:register(recs[1].g) }
  else
    local cbs = {}
    for i, r in ipairs(recs) do cbs[i] = r.g end
    ibs = M.m:register_all(cbs)
  end
  assert(#ibs == #recs)
  for i, r in ipairs(recs) do
    local id = register_slot(M, r.id, r.hash)
    add_imm(M, ibs[i], id, where)
  end
end

--- match (a prefix walk), match_scattered, scan: hits are acquisitions.
local function op_lookup(M, kind, where)
  local hs
  if kind == "prefix" then
    local doc = pick(World.docs)
    hs = { table.unpack(doc, 1, math.random(1, #doc)) }
  else
    hs = random_hashes(math.random(1, 4))
  end
  local keep = math.random(3) > 1
  local got = {}
  if kind == "prefix" or kind == "match" then
    local res = M.m:match(hs)
    local k = 0
    while k < #hs and M.owner[hs[k + 1]] do
      k = k + 1
      got[k] = { g = res[k], id = acquire(M, hs[k]) }
    end
    assert(#res == k, where .. ": match stops at the first hash in neither pool")
    for i = 1, k do touch(hs[i]) end
  elseif kind == "scattered" then
    local res = M.m:match_scattered(hs)
    assert(res.n == #hs)
    for i, h in ipairs(hs) do
      if M.owner[h] then
        got[#got + 1] = { g = res[i], id = acquire(M, h) }
        touch(h)
      else
        assert(res[i] == nil, where .. ": scattered miss")
      end
    end
  else
    local t = math.random(2) == 1
    local res = M.m:scan(hs, t)
    local seen = {}
    for _, h in ipairs(hs) do
      if not seen[h] then
        seen[h] = true
        if t and registered(h) then touch(h) end
        if M.owner[h] then
          got[#got + 1] = { g = res[h], id = acquire(M, h) }
        else
          assert(res[h] == nil, where .. ": scan miss")
        end
      end
    end
  end
  for _, r in ipairs(got) do
    assert(r.g, where .. ": a hit is missing from the result")
    if keep then
      add_imm(M, r.g, r.id, where)
    else
      assert(r.g:id() == r.id, where .. ": looked-up block id")
      r.g:release()
      drop(M, r.id)
    end
  end
end

local function op_release(M)
  local r = math.random(12)
  if r <= 7 and #M.imm > 0 then
    local rec = pop_random(M.imm)
    rec.g:release()
    drop(M, rec.id)
  elseif r <= 8 and #M.mut > 0 then
    local rec = pop_random(M.mut)
    rec.g:release()
    push_ring(M, rec.id)
  elseif r <= 9 and #M.comp > 0 then
    local rec = pop_random(M.comp)
    rec.g:release()
    M.hash[rec.id] = nil
    push_ring(M, rec.id)
  elseif r <= 11 and #M.weak > 0 then
    local w = pop_random(M.weak)
    w.g:release()
    World.weaks[w.hash] = World.weaks[w.hash] - 1
  elseif #World.hds > 0 then
    local hd = pop_random(World.hds)
    hd.g:release()
    World.handles[hd.hash] = World.handles[hd.hash] - 1
  end
end

local function op_clone(M, where)
  if #M.imm == 0 then return end
  local rec = pick(M.imm)
  local c = rec.g:clone()
  M.refs[rec.id] = M.refs[rec.id] + 1
  add_imm(M, c, rec.id, where)
end

local function op_downgrade(M)
  if #M.imm == 0 then return end
  local rec = pick(M.imm)
  local h = M.hash[rec.id]
  M.weak[#M.weak + 1] = { g = rec.g:downgrade(), hash = h, id = rec.id, gen = M.gen[rec.id] }
  World.weaks[h] = World.weaks[h] + 1
end

local function op_upgrade(M, where)
  if #M.weak == 0 then return end
  local w = pick(M.weak)
  local up = w.g:upgrade()
  local st = M.slot[w.id]
  local id
  if (st == "primary" or st == "duplicate") and M.gen[w.id] == w.gen then
    id = w.id -- the same block is still alive
    M.refs[id] = M.refs[id] + 1
  elseif M.owner[w.hash] then
    id = acquire(M, w.hash) -- by hash, from either pool
  end
  if id then
    assert(up, where .. ": a weak block of a present hash upgrades")
    add_imm(M, up, id, where)
  else
    assert(up == nil, where .. ": a weak block of an absent hash does not upgrade")
  end
end

local function op_flag(M)
  if #M.imm == 0 then return end
  local rec = pick(M.imm)
  local v = math.random(2) == 1
  rec.g:set_evict_on_release(v)
  M.flag[rec.id] = v
end

local function op_reset_inactive(M, where)
  local ok, err = M.m:reset_inactive()
  local victims = {}
  for h in pairs(M.cached) do victims[#victims + 1] = h end
  local ordered = not M.kind.lineage
  if ordered then victims = predicted_victims(M, #victims) end
  local ids = {}
  for i, h in ipairs(victims) do ids[i] = M.owner[h] end
  -- the drain is an eviction; the engine drains in policy order
  if ordered then
    evict(M, victims, where)
  else
    for _, h in ipairs(victims) do
      local id = M.owner[h]
      uncache(M, h)
      forget(M, id)
      set_state(M, id, "mutable")
      M.flag[id] = false
    end
  end
  if ordered then
    for _, id in ipairs(ids) do push_ring(M, id) end
  elseif #ids > 0 then
    local set = {}
    for _, id in ipairs(ids) do
      set[id] = true
      set_state(M, id, "reset")
    end
    M.ring[#M.ring + 1] = { set = set, n = #ids }
    M.ringlen = M.ringlen + #ids
  end
  local expect_ok = M.ringlen == M.total
  assert((ok == true) == expect_ok, where .. ": reset_inactive result")
  if not ok then
    assert(err.code == "block_count_mismatch" and err.expected == M.total and err.actual == M.ringlen,
           where .. ": reset_inactive error")
  end
end

--- A burst: allocate up to the whole pool, register everything, release it.
local function op_churn(M, where)
  local n = math.random(1, M.total)
  local mbs = op_allocate(M, n, true, where)
  if not mbs then return end
  local cbs, hs, slots = {}, random_hashes(n), ids_of(mbs)
  for i, b in ipairs(mbs) do
    cbs[i] = b:stage(hs[i])
    set_state(M, slots[i], "staged")
    M.hash[slots[i]] = hs[i]
  end
  local ibs = M.m:register_all(cbs)
  local ids = {}
  for i = 1, n do ids[i] = register_slot(M, slots[i], hs[i]) end
  for i, ib in ipairs(ibs) do
    assert(ib:id() == ids[i], where .. ": batch registration result")
    ib:release()
    drop(M, ids[i])
  end
end

local function op_handle(where)
  local h = pick(World.pool)
  if not registered(h) then touch(h) end
  local hd = World.reg:handle(h)
  World.handles[h] = World.handles[h] + 1
  World.hds[#World.hds + 1] = { g = hd, hash = h }
  assert(hd:get("tag") == World.attached[h], where .. ": attachments of a new handle")
  if math.random(2) == 1 then
    local v = math.random(1000)
    hd:attach_unique("tag", v)
    World.attached[h] = v
  end
end

local function step(M, where)
  local held = #M.mut + #M.comp + #M.imm
  -- keep about half of the blocks free to cache, so that allocations evict
  local r = (held > M.total // 2 and math.random(3) > 1) and 60 or math.random(100)
  if r <= 12 then
    local mbs = op_allocate(M, math.random(0, 3), math.random(2) == 1, where)
    for _, b in ipairs(mbs or {}) do M.mut[#M.mut + 1] = { g = b, id = b:id() } end
  elseif r <= 28 then op_stage(M)
  elseif r <= 30 then op_unstage(M, where)
  elseif r <= 38 then op_register(M, 1, where)
  elseif r <= 42 then op_register(M, math.random(2, 4), where)
  elseif r <= 48 then op_lookup(M, "prefix", where)
  elseif r <= 50 then op_lookup(M, "match", where)
  elseif r <= 53 then op_lookup(M, "scattered", where)
  elseif r <= 56 then op_lookup(M, "scan", where)
  elseif r <= 70 then op_release(M)
  elseif r <= 73 then op_clone(M, where)
  elseif r <= 76 then op_downgrade(M)
  elseif r <= 79 then op_upgrade(M, where)
  elseif r <= 82 then op_flag(M)
  elseif r <= 83 then op_reset_inactive(M, where)
  elseif r <= 93 then op_churn(M, where)
  elseif r <= 96 then
    local h = pick(World.pool)
    World.reg:touch(h)
    touch(h)
  else op_handle(where)
  end
end

local function run(kind, seed)
  math.randomseed(seed)
  local reg = kvbm.registry{ frequency = "medium" }
  local docs, pool, parent = make_pool()
  World = { reg = reg, docs = docs, pool = pool, parent = parent, freq = {}, weaks = {}, handles = {},
            attached = {}, hds = {}, stamp = 0 }
  for _, h in ipairs(pool) do World.freq[h], World.weaks[h], World.handles[h] = 0, 0, 0 end
  World.models = {
    new_model(kind, reg, "G1", 10, false),
    new_model(kind, reg, "G2", 8, true),
  }
  local stats = { evictions = 0 }
  for i = 1, STEPS do
    local M = World.models[math.random(2)]
    local where = ("%s seed %d step %d (%s)"):format(kind.name, seed, i, M.name)
    step(M, where)
    for _, x in ipairs(World.models) do check_model(x, where) end
    check_world(where)
  end
  -- let go of everything: all blocks end up reset or cached
  for _, M in ipairs(World.models) do
    for _, list in ipairs({ M.imm, M.mut, M.comp, M.weak }) do
      for _, rec in ipairs(list) do rec.g:release() end
    end
    stats.evictions = stats.evictions + M.m:metrics().kvbm_evictions_total
  end
  for _, hd in ipairs(World.hds) do hd.g:release() end
  for _, M in ipairs(World.models) do
    local c = assert(kvbm._debug.check(M.m))
    assert(c.mutable + c.staged + c.primary + c.duplicate == 0)
    assert(c.reset + c.inactive == M.total)
    assert(M.m:reset_inactive())
    M.m:close()
  end
  World = {}
  return stats
end

describe("randomized model", function()
  for _, kind in ipairs(BACKENDS) do
    it(kind.name .. " agrees with the model (" .. #SEEDS .. " seeds x " .. STEPS .. " steps)", function()
      for i, seed in ipairs(SEEDS) do
        local stats
        if i == 1 then -- and every allocation is given back
          helpers.assert_no_leaks(function() stats = run(kind, seed) end)
        else
          stats = run(kind, seed)
        end
        assert.is_true(stats.evictions > 100, "the run evicts (" .. stats.evictions .. ")")
      end
    end)
  end
end)
