-- kvbm.policy.lfu - frequency-aware eviction, as a Lua eviction policy:
-- the least frequently used blocks go first, ties in release order.
--
--   local lfu = require "kvbm.policy.lfu"
--   local reg = kvbm.registry{ frequency = "medium" }
--   kvbm.manager{ blocks = 64, registry = reg, backend = lfu.new(reg) }
--   kvbm.manager{ ..., backend = lfu.new(reg, {3, 8, 15}) } -- = "multi_lru"
--
-- A block's frequency is read once, when it enters the cache (on_insert),
-- from the registry's TinyLFU counts (0..15): registration touches once,
-- every match hit once, scan(hashes, true) once. The frequency picks a
-- level; victims come from the coldest level first, in release order
-- within a level. Thresholds t1 < t2 < ... (1..15) bound the levels:
-- frequency < t1 is level 0, < t2 level 1, ..., >= the last one the top
-- level. {3, 8, 15} gives exactly the built-in "multi_lru" order; without
-- thresholds every frequency is its own level (1, 2, ..., 15).
--
-- Writing a policy: see kvbm/policy/lru.lua. This one keeps one doubly
-- linked list per level, over block ids, so every callback is O(1) (plus
-- a walk over at most 16 levels in victims()).

local error, getmetatable, tostring, type = error, getmetatable, tostring, type

local _ENV = nil -- no global accesses from here on

local M = {}

local MAX_FREQUENCY = 15 -- TinyLFU's 4-bit counters

local function is_registry(reg)
  local mt = type(reg) == "userdata" and getmetatable(reg)
  return type(mt) == "table" and mt.__name == "kvbm.Registry"
end

--- level[f] for every frequency f in 0..15, from ascending thresholds.
local function levels_of(thresholds)
  if thresholds == nil then
    thresholds = {}
    for f = 1, MAX_FREQUENCY do thresholds[f] = f end
  elseif type(thresholds) ~= "table" or #thresholds == 0 then
    error("lfu thresholds: expected a non-empty list of frequencies", 3)
  end
  local last = 0
  for i = 1, #thresholds do
    local t = thresholds[i]
    if type(t) ~= "number" or t ~= t // 1 then
      error("lfu thresholds: " .. tostring(t) .. " is not an integer", 3)
    elseif i == 1 and t < 1 then
      error("lfu thresholds: the first threshold must be >= 1 to distinguish from zero-access blocks", 3)
    elseif t <= last and i > 1 then
      error("lfu thresholds: must be in ascending order", 3)
    elseif t > MAX_FREQUENCY then
      error("lfu thresholds: " .. t .. " is above the maximum frequency 15", 3)
    end
    last = t
  end
  local level, l = {}, 0
  for f = 0, MAX_FREQUENCY do
    while l < #thresholds and f >= thresholds[l + 1] do l = l + 1 end
    level[f] = l
  end
  return level, #thresholds + 1
end

--- A new LFU policy reading frequencies from reg (a kvbm.registry with
--- frequency tracking), with optional level thresholds.
function M.new(reg, thresholds)
  if not is_registry(reg) then error("lfu.new: expected a kvbm.Registry", 2) end
  if not reg:has_frequency() then
    error("lfu.new: the registry has no frequency tracking (kvbm.registry{frequency = ...})", 2)
  end
  local level, nlevels = levels_of(thresholds)
  local frequency = reg.frequency

  -- one list per level; level l's sentinel is the id -1 - l (ids are >= 0)
  local prev, next = {}, {}
  for l = 0, nlevels - 1 do prev[-1 - l], next[-1 - l] = -1 - l, -1 - l end
  local size = 0

  local function unlink(id)
    local p, n = prev[id], next[id]
    if p == nil then return end
    next[p], prev[n] = n, p
    prev[id], next[id] = nil, nil
    size = size - 1
  end

  local function push_tail(head, id)
    unlink(id) -- already held (after an engine fallback): move it
    local last = prev[head]
    prev[id], next[id] = last, head
    next[last], prev[head] = id, id
    size = size + 1
  end

  local policy = { name = "lfu" }

  function policy.on_insert(id, h)
    local f = frequency(reg, h)
    push_tail(-1 - (level[f] or nlevels - 1), id)
  end

  function policy.on_remove(id) unlink(id) end

  function policy.victims(n)
    local out, k = {}, 0
    for l = 0, nlevels - 1 do
      local head = -1 - l
      local id = next[head]
      while k < n and id ~= head do
        local after = next[id]
        unlink(id)
        k = k + 1
        out[k] = id
        id = after
      end
      if k == n then break end
    end
    return out
  end

  --- How many blocks the policy holds (the manager's m:inactive()).
  function policy.size() return size end

  return policy
end

return M
