-- kvbm.policy.lru - least recently released first, as a Lua eviction policy.
-- Gives exactly the order of the built-in "lru" backend.
--
--   local lru = require "kvbm.policy.lru"
--   local m = kvbm.manager{ blocks = 64, registry = reg, backend = lru.new() }
--
-- Writing a policy. A policy is a table of three functions; the manager
-- keeps the truth (which blocks are cached, the hash index) and the policy
-- only orders the victims:
--   on_insert(id, h)  block id (0-based) with hash h entered the inactive
--                     cache (its last reference was released);
--   on_remove(id, h)  it left the cache through a hit (match, scan, weak
--                     upgrade, re-registration), not an eviction;
--   victims(n)        --> {id, ...}: n distinct cached ids, first victim
--                     first. The engine evicts them without calling
--                     on_remove, so the policy forgets them itself.
-- An error or a bad answer (not a table, unknown, uncached or repeated ids,
-- fewer than n) never corrupts the pool: the engine evicts in insertion
-- order instead and counts m:metrics().policy_errors. The ids it then
-- picks are not reported back, so a robust policy treats on_insert of an id
-- it still holds as "move to the tail". The callbacks run between manager
-- operations (notifications are delivered when a call ends, victims() is
-- asked just before the call that evicts them): they may read anything and
-- use other managers, but not make their own manager evict (m:allocate
-- there raises a re-entrancy error).
-- Keep the callbacks O(1): here, one doubly linked list over ids.

local _ENV = nil -- no global accesses from here on

local M = {}

local HEAD = -1 -- the list's sentinel; block ids are >= 0

--- A new LRU policy: victims() answers in release order, oldest first.
function M.new()
  local prev, next = { [HEAD] = HEAD }, { [HEAD] = HEAD }
  local size = 0

  local function unlink(id)
    local p, n = prev[id], next[id]
    if p == nil then return end
    next[p], prev[n] = n, p
    prev[id], next[id] = nil, nil
    size = size - 1
  end

  local function push_tail(id)
    unlink(id) -- already held (after an engine fallback): move it
    local last = prev[HEAD]
    prev[id], next[id] = last, HEAD
    next[last], prev[HEAD] = id, id
    size = size + 1
  end

  local policy = { name = "lru" }

  function policy.on_insert(id) push_tail(id) end

  function policy.on_remove(id) unlink(id) end

  function policy.victims(n)
    local out, k = {}, 0
    local id = next[HEAD]
    while k < n and id ~= HEAD do
      local after = next[id]
      unlink(id)
      k = k + 1
      out[k] = id
      id = after
    end
    return out
  end

  --- How many blocks the policy holds (the manager's m:inactive()).
  function policy.size() return size end

  return policy
end

return M
