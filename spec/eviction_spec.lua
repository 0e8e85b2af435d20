-- The eviction policies of issue 12 (s3fifo, sieve, arc, slru, depth, bip,
-- optimal) against independent models written here from the papers'
-- descriptions and the comments of src/backend_*.c: random sequences of
-- registrations (fresh hashes and hashes evicted earlier), releases, hits,
-- misses and, for optimal, next-use hints; every eviction's victim must be
-- exactly the model's.
local kvbm = require "kvbm"

local SALT = 7
local PARENT = {} -- hash -> the hash before it in its chain (filled by all_hashes)

-- ------------------------------------------------------------ list helpers

local function index_of(list, x)
  for i, v in ipairs(list) do if v == x then return i end end
end

local function remove_value(list, x)
  local i = index_of(list, x)
  if i then table.remove(list, i) end
  return i ~= nil
end

--- A bounded FIFO of hashes (oldest first) with a value per hash.
local function ghost(limit)
  local g = { keys = {}, vals = {} }
  function g.take(h)
    local i = index_of(g.keys, h)
    if not i then return nil end
    local v = g.vals[i]
    table.remove(g.keys, i)
    table.remove(g.vals, i)
    return v
  end
  function g.push(h, v)
    g.take(h)
    if #g.keys == limit then
      table.remove(g.keys, 1)
      table.remove(g.vals, 1)
    end
    g.keys[#g.keys + 1], g.vals[#g.vals + 1] = h, v or true
  end
  function g.len() return #g.keys end
  return g
end

local function min_by(ids, key)
  local best, bk
  for _, id in ipairs(ids) do
    local k = key(id)
    local better = not best
    if best then
      for i = 1, #k do
        if k[i] ~= bk[i] then better = k[i] < bk[i]; break end
      end
    end
    if better then best, bk = id, k end
  end
  return best
end

-- ------------------------------------------------------------------ models
-- Each model: admit(id, h, pos), insert(id, h, pos), remove(id),
-- hint(id, t), evict() --> id.

local MODELS = {}

function MODELS.s3fifo(n)
  local share = math.max(1, n // 10)
  local q = { small = {}, main = {} }
  local g = ghost(math.max(1, n - share))
  local meta = {}
  local M = {}
  function M.admit(id, h) meta[id] = { h = h, freq = 0, q = g.take(h) and "main" or "small" } end
  function M.insert(id, h)
    if not meta[id] or meta[id].h ~= h then M.admit(id, h) end
    table.insert(q[meta[id].q], id)
  end
  function M.remove(id)
    remove_value(q[meta[id].q], id)
    meta[id].freq = math.min(3, meta[id].freq + 1)
  end
  function M.evict()
    while true do
      if #q.small > 0 and (#q.small >= share or #q.main == 0) then
        local t = table.remove(q.small, 1)
        if meta[t].freq > 0 then
          meta[t].freq, meta[t].q = 0, "main"
          table.insert(q.main, t)
        else
          g.push(meta[t].h)
          meta[t] = nil
          return t
        end
      else
        local t = table.remove(q.main, 1)
        if meta[t].freq == 0 then meta[t] = nil; return t end
        meta[t].freq = meta[t].freq - 1
        table.insert(q.main, t)
      end
    end
  end
  return M
end

function MODELS.sieve()
  local queue, state, visited, hash = {}, {}, {}, {}
  local hand
  local function newer(id)
    local i = index_of(queue, id)
    return queue[i + 1] or queue[1]
  end
  local function dequeue(id)
    if hand == id then hand = newer(id) end
    if hand == id then hand = nil end
    remove_value(queue, id)
    state[id] = nil
  end
  local M = {}
  function M.admit(id, h)
    if state[id] == "cached" then return end
    if state[id] then dequeue(id) end
    hash[id], visited[id], state[id] = h, false, "held"
    queue[#queue + 1] = id
  end
  function M.insert(id, h)
    if not state[id] or hash[id] ~= h then M.admit(id, h) end
    state[id] = "cached"
  end
  function M.remove(id) state[id], visited[id] = "held", true end
  function M.evict()
    local h = hand or queue[1]
    while state[h] ~= "cached" or visited[h] do
      if state[h] == "cached" then visited[h] = false end
      h = newer(h)
    end
    hand = h
    dequeue(h)
    return h
  end
  return M
end

function MODELS.arc(n)
  local t = { t1 = {}, t2 = {} }
  local b1, b2 = ghost(n), ghost(n)
  local p, meta = 0, {}
  local M = {}
  function M.admit(id, h)
    local l1, l2 = b1.len(), b2.len()
    local function ratio(a, b) return math.max(1, b > 0 and a // b or 1) end
    meta[id] = { h = h, list = "t2" }
    if b1.take(h) then
      p = math.min(n, p + ratio(l2, l1))
    elseif b2.take(h) then
      p = math.max(0, p - ratio(l1, l2))
    else
      meta[id].list = "t1"
    end
  end
  function M.insert(id, h)
    if not meta[id] or meta[id].h ~= h then M.admit(id, h) end
    table.insert(t[meta[id].list], id)
  end
  function M.remove(id)
    remove_value(t[meta[id].list], id)
    meta[id].list = "t2"
  end
  function M.evict()
    local from = (#t.t1 > 0 and (#t.t1 > p or #t.t2 == 0)) and "t1" or "t2"
    local v = table.remove(t[from], 1);
    (from == "t1" and b1 or b2).push(meta[v].h)
    meta[v] = nil
    return v
  end
  return M
end

function MODELS.slru(n)
  local cap = math.max(1, n * 4 // 5)
  local seg = { prob = {}, prot = {} }
  local meta = {}
  local M = {}
  function M.admit(id, h) meta[id] = { h = h, seg = "prob" } end
  function M.insert(id, h)
    if not meta[id] or meta[id].h ~= h then M.admit(id, h) end
    table.insert(seg[meta[id].seg], id)
    if #seg.prot > cap then
      local d = table.remove(seg.prot, 1)
      meta[d].seg = "prob"
      table.insert(seg.prob, d)
    end
  end
  function M.remove(id)
    remove_value(seg[meta[id].seg], id)
    meta[id].seg = "prot"
  end
  function M.evict()
    local from = #seg.prob > 0 and "prob" or "prot"
    local v = table.remove(seg[from], 1)
    meta[v] = nil
    return v
  end
  return M
end

function MODELS.depth(n)
  local history = ghost(8 * n)
  local walk, last_pos, clock = 0, nil, 0
  local meta, cached = {}, {}
  local function use(pos)
    if walk == 0 or pos <= last_pos then walk = walk + 1 end
    last_pos = pos
    return walk
  end
  local M = {}
  function M.admit(id, h, pos)
    local before = history.take(h) or 0
    meta[id] = { h = h, pos = pos, second = before, last = use(pos) }
  end
  function M.insert(id, h, pos)
    if not meta[id] or meta[id].h ~= h then M.admit(id, h, pos) end
    clock = clock + 1
    meta[id].tick = clock
    cached[#cached + 1] = id
  end
  function M.remove(id)
    remove_value(cached, id)
    local m = meta[id]
    m.second, m.last = m.last, use(m.pos)
  end
  function M.evict()
    local v = min_by(cached, function(id)
      local m = meta[id]
      return { m.second > 0 and m.last or 0, -m.pos, m.tick }
    end)
    remove_value(cached, v)
    history.push(meta[v].h, meta[v].last)
    meta[v] = nil
    return v
  end
  return M
end

-- bip: one victim order; a block reused (hit, or registered again while in
-- the history of the last 8n evicted hashes) is protected, a fresh one is
-- not, save every 32nd fresh chain; the child of the block inserted just
-- before shares that block's chain decision (when both are fresh) and goes
-- just before it when placed at the same end.
function MODELS.bip(n)
  local order, meta = {}, {} -- order: victims first
  local history = ghost(8 * n)
  local last, fresh_chains = nil, 0
  local M = { chains = true } -- also driven by whole-chain requests
  function M.admit(id, h)
    if index_of(order, id) then return end
    meta[id] = { h = h, reused = history.take(h) ~= nil }
  end
  function M.insert(id, h)
    if not meta[id] or meta[id].h ~= h then M.admit(id, h) end
    local m = meta[id]
    local child = last ~= nil and PARENT[h] == last.h
    local protect
    if m.reused then
      protect = true
    elseif child and last.fresh then
      protect = last.protect
    else
      protect = fresh_chains % 32 == 0
      fresh_chains = fresh_chains + 1
    end
    local at = child and last.protect == protect and index_of(order, last.id)
    if at then
      table.insert(order, at, id)
    elseif protect then
      order[#order + 1] = id
    else
      table.insert(order, 1, id)
    end
    last = { h = h, id = id, fresh = not m.reused, protect = protect }
  end
  function M.remove(id)
    remove_value(order, id)
    meta[id].reused = true
  end
  function M.evict()
    local v = table.remove(order, 1)
    history.push(meta[v].h)
    meta[v] = nil
    return v
  end
  return M
end

function MODELS.optimal()
  local meta, cached, clock = {}, {}, 0
  local M = {}
  local NEVER = math.huge
  function M.admit(id, h, pos)
    if index_of(cached, id) then return end
    meta[id] = { h = h, pos = pos, when = NEVER }
  end
  function M.insert(id, h, pos)
    if not meta[id] then M.admit(id, h, pos) end
    clock = clock + 1
    meta[id].pos, meta[id].tick = pos, clock
    cached[#cached + 1] = id
  end
  function M.remove(id) remove_value(cached, id) end
  function M.hint(id, t) meta[id].when = t end
  function M.evict()
    local v = min_by(cached, function(id) return { -meta[id].when, -meta[id].pos, meta[id].tick } end)
    remove_value(cached, v)
    meta[v].when = NEVER
    return v
  end
  return M
end

-- ----------------------------------------------------------------- driver

--- Hash chains: CHAINS chains of DEPTH blocks of size 1 (positions 0..DEPTH-1).
local CHAINS, DEPTH = 12, 5
local function all_hashes()
  local hs = {}
  for c = 1, CHAINS do
    local toks = {}
    for i = 1, DEPTH do toks[i] = 100 * c + i end
    local parent
    for p, h in ipairs(kvbm.sequence(toks, 1, SALT):hashes()) do
      hs[#hs + 1] = { h = h, pos = p - 1 }
      PARENT[h], parent = parent, h
    end
  end
  return hs
end

--- One random run: returns how many evictions were checked.
--- backend: the manager's backend option (default: the C backend `name`).
local function run(name, seed, blocks, steps, backend)
  math.randomseed(seed)
  local reg = kvbm.registry{ frequency = "medium" }
  local m = assert(kvbm.manager{ blocks = blocks, block_size = 1, registry = reg, backend = backend or name })
  local model = MODELS[name](blocks)
  local pool = all_hashes()
  local held, cached = {}, {} -- hash -> block (held) / block id (cached)
  local pos_of = {}
  for _, x in ipairs(pool) do pos_of[x.h] = x.pos end
  local nheld, checked = 0, 0

  local function keys(t)
    local out = {}
    for k in pairs(t) do out[#out + 1] = k end
    table.sort(out, function(a, b) return tostring(a) < tostring(b) end)
    return out
  end

  local function register(x)
    local mbs, evicted = assert(m:allocate_with_evictions(1))
    if #evicted > 0 then
      local v = model.evict()
      checked = checked + 1
      local vh
      for h, id in pairs(cached) do if id == v then vh = h end end
      assert.are.equal(vh, evicted[1], name .. " seed " .. seed .. ": eviction " .. checked)
      cached[vh] = nil
    end
    local ib = m:register(mbs[1]:stage(x.h))
    model.admit(ib:id(), x.h, x.pos)
    held[x.h] = ib
    nheld = nheld + 1
  end

  local function release(h)
    local ib = held[h]
    held[h] = nil
    nheld = nheld - 1
    cached[h] = ib:id()
    ib:release()
    model.insert(cached[h], h, pos_of[h])
  end

  -- a request on a chain none of whose blocks is held: its cached prefix
  -- is hit, the rest registered up to the next cached block, and all of it
  -- released root first
  local function request(c)
    local chain = {}
    for p = 1, DEPTH do
      chain[p] = pool[(c - 1) * DEPTH + p]
      if held[chain[p].h] then return end
    end
    local got, taken = m:match((function()
      local hs = {}
      for p, x in ipairs(chain) do hs[p] = x.h end
      return hs
    end)()), {}
    for p, b in ipairs(got) do
      local h = chain[p].h
      model.remove(cached[h])
      cached[h], held[h], taken[p] = nil, b, h
      nheld = nheld + 1
    end
    for p = #got + 1, DEPTH do
      if cached[chain[p].h] then break end
      register(chain[p])
      taken[#taken + 1] = chain[p].h
    end
    for _, h in ipairs(taken) do release(h) end
  end

  for _ = 1, steps do
    local r = math.random()
    local absent = {}
    for _, x in ipairs(pool) do if not held[x.h] and not cached[x.h] then absent[#absent + 1] = x end end
    if r < 0.35 and #absent > 0 and nheld < blocks // 2 then -- register
      register(absent[math.random(#absent)])
    elseif r < 0.65 and nheld > 0 then -- release
      local hs = keys(held)
      release(hs[math.random(#hs)])
    elseif r < 0.85 then -- hit
      local hs = keys(cached)
      if #hs > 0 then
        local h = hs[math.random(#hs)]
        local got = m:match({ h })
        assert.are.equal(1, #got)
        model.remove(cached[h])
        cached[h] = nil
        held[h] = got[1]
        nheld = nheld + 1
      end
    elseif r < 0.9 then -- miss
      assert.are.equal(0, #m:match({ kvbm.sequence({ 999999 }, 1, SALT):hash(0) }))
    elseif model.hint then -- next-use hint on a block this tier holds
      local hs = keys(cached)
      for h in pairs(held) do hs[#hs + 1] = h end
      if #hs > 0 then
        local h = hs[math.random(#hs)]
        local t = math.random(0, 50)
        assert.are.equal(1, m:next_use({ h }, { t }))
        model.hint(held[h] and held[h]:id() or cached[h], t)
      end
    elseif model.chains and nheld + DEPTH <= blocks then
      request(math.random(CHAINS))
    end
  end
  local counts, msg = kvbm._debug.check(m)
  assert(counts, msg)
  assert.are.equal(0, m:metrics().policy_errors, "policy errors: " .. tostring(m:policy_errors()))
  return checked
end

describe("eviction policies against independent models", function()
  for _, name in ipairs({ "s3fifo", "sieve", "arc", "slru", "depth", "bip", "optimal" }) do
    it(name .. ": random registrations, releases, hits and misses evict exactly as the model", function()
      local checked = 0
      for seed = 1, 40 do checked = checked + run(name, seed, 6 + seed % 19, 400) end
      assert.is_true(checked > 500, "only " .. checked .. " evictions checked")
    end)
  end

  -- the Lua twins (on the batched interface) pass the same specs
  for _, name in ipairs({ "s3fifo", "sieve" }) do
    it("kvbm.policy." .. name .. " (Lua) evicts exactly as the model and the C backend", function()
      local twin = require("kvbm.policy." .. name)
      local checked = 0
      for seed = 1, 40 do
        local blocks = 6 + seed % 19
        checked = checked + run(name, seed, blocks, 400, twin.new(blocks))
      end
      assert.is_true(checked > 500, "only " .. checked .. " evictions checked")
    end)
  end

  it("a batched Lua policy sees admits, inserts, removes and misses in order, in one call per manager call", function()
    local calls, seen = 0, {}
    local lru = {}
    local policy = {
      on_events = function(list)
        calls = calls + 1
        for _, e in ipairs(list) do
          seen[#seen + 1] = e.kind .. ":" .. (e.id or "-") .. "@" .. e.position
          if e.kind == "insert" then lru[#lru + 1] = e.id end
          if e.kind == "remove" then remove_value(lru, e.id) end
        end
      end,
      victims = function(n)
        local out = {}
        for i = 1, n do out[i] = table.remove(lru, 1) end
        return out
      end,
    }
    local reg = kvbm.registry{}
    local m = assert(kvbm.manager{ blocks = 2, block_size = 1, registry = reg, backend = policy })
    local hs = kvbm.sequence({ 1, 2 }, 1, SALT):hashes()
    local a = m:register(m:allocate(1)[1]:stage(hs[1]))
    assert.are.equal(1, calls, "delivered when the manager call ends")
    a:release()
    local got = m:match({ hs[1], hs[2] })
    assert.are.equal(1, #got)
    got[1]:release()
    local mbs = m:allocate(2) -- needs a victim: delivered before victims()
    assert.are.same({ "admit:0@0", "insert:0@0", "remove:0@0", "miss:-@1", "insert:0@0" }, seen)
    assert.are.equal(0, m:metrics().policy_errors)
    for _, b in ipairs(mbs) do b:release() end
  end)

  it("a failing on_events is counted and kept with its message and traceback; the pool stays sound", function()
    local policy = {
      on_events = function() error("boom in on_events") end,
      victims = function() return {} end,
    }
    local reg = kvbm.registry{}
    local m = assert(kvbm.manager{ blocks = 1, block_size = 1, registry = reg, backend = policy })
    local h = kvbm.sequence({ 1 }, 1, SALT):hash(0)
    m:register(m:allocate(1)[1]:stage(h)):release()
    assert.is_true(m:metrics().policy_errors >= 1)
    local count, errs = m:policy_errors()
    assert.is_true(count >= 1)
    assert.matches("boom in on_events", errs, 1, true)
    assert.matches("traceback", errs, 1, true)
    local mbs = assert(m:allocate(1))
    assert(kvbm._debug.check(m))
    mbs[1]:release()
  end)

  it("every backend name is a manager backend", function()
    for _, name in ipairs({ "s3fifo", "sieve", "arc", "slru", "depth", "bip", "optimal" }) do
      assert.is_not_nil(kvbm.manager{ blocks = 2, registry = kvbm.registry{}, backend = name })
    end
  end)

  it("next_use: other backends ignore hints; bad input raises", function()
    local reg = kvbm.registry{}
    local m = kvbm.manager{ blocks = 2, block_size = 1, registry = reg, backend = "lru" }
    local h = kvbm.sequence({ 1 }, 1, SALT):hash(0)
    m:register(m:allocate(1)[1]:stage(h)):release()
    assert.are.equal(0, m:next_use({ h }, { 3 }))
    local o = kvbm.manager{ blocks = 2, block_size = 1, registry = reg, backend = "optimal" }
    assert.has_error(function() o:next_use({ h }, {}) end, "m:next_use: 1 hashes but 0 times")
    assert.has_error(function() o:next_use({ h }, { -1 }) end)
    assert.are.equal(0, o:next_use({ h }, { 1 }), "a hash the tier does not hold")
  end)
end)
