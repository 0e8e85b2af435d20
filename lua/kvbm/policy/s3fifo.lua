-- kvbm.policy.s3fifo - S3-FIFO (Yang et al., SOSP '23) as a Lua eviction
-- policy: the twin of the built-in "s3fifo" backend (the same victims in
-- the same order), and an example of the batched interface.
--
--   local s3fifo = require "kvbm.policy.s3fifo"
--   local m = kvbm.manager{ blocks = 64, registry = reg, backend = s3fifo.new(64) }
--
-- on_events(list) receives, in order and in one call before victims(n) (or
-- when a manager call ends), what happened since the last call:
--   { kind = "admit",  id, hash, position, parent, frequency }  a fresh registration
--   { kind = "insert", id, hash, ... }  the block entered the inactive cache
--   { kind = "remove", id, hash, ... }  it left through a hit
--   { kind = "miss",   hash, ... }      a lookup found nothing
-- A new block goes to the main FIFO when its hash is in the ghost (evicted
-- from small recently), else to the small FIFO (a tenth of the pool); a hit
-- counts (at most 3). Victims: the small FIFO's oldest while it holds its
-- share: promoted to main if hit, else evicted into the ghost; otherwise
-- main's oldest, evicted or, with hits left, sent round again.
local queue = require "kvbm.policy.queue"
local math = math
local _ENV = nil

local M = {}

--- A bounded FIFO set of hashes (the ghost).
local function ghost(limit)
  local g, q, key_of, n = {}, queue.new(), {}, 0
  local id_of = {}
  function g.take(h)
    local k = key_of[h]
    if not k then return false end
    q.remove(k)
    key_of[h], id_of[k] = nil, nil
    return true
  end
  function g.push(h)
    g.take(h)
    if q.len == limit then
      local old = q.pop()
      key_of[id_of[old]], id_of[old] = nil, nil
    end
    n = n + 1
    key_of[h], id_of[n] = n, h
    q.push(n)
  end
  return g
end

--- A policy for a pool of `blocks` blocks (the share of the small FIFO and
--- the ghost's length depend on it).
function M.new(blocks)
  local share = math.max(1, blocks // 10)
  local queues = { small = queue.new(), main = queue.new() }
  local g = ghost(math.max(1, blocks - share))
  local hash, freq, which = {}, {}, {}

  local function admit(id, h)
    hash[id], freq[id] = h, 0
    which[id] = g.take(h) and "main" or "small"
  end

  local handlers = {
    admit = function(e) admit(e.id, e.hash) end,
    insert = function(e)
      if queues.small.has(e.id) or queues.main.has(e.id) then return end
      if hash[e.id] ~= e.hash then admit(e.id, e.hash) end
      queues[which[e.id]].push(e.id)
    end,
    remove = function(e)
      local w = which[e.id]
      if w and queues[w].remove(e.id) then freq[e.id] = math.min(3, freq[e.id] + 1) end
    end,
    miss = function() end,
  }

  local policy = { name = "s3fifo" }

  function policy.on_events(list)
    for i = 1, #list do handlers[list[i].kind](list[i]) end
  end

  local function victim()
    local small, main = queues.small, queues.main
    while true do
      if small.len > 0 and (small.len >= share or main.len == 0) then
        local t = small.pop()
        if freq[t] > 0 then
          freq[t], which[t] = 0, "main"
          main.push(t)
        else
          g.push(hash[t])
          hash[t] = nil
          return t
        end
      else
        local t = main.pop()
        if t == nil then return nil end
        if freq[t] == 0 then hash[t] = nil; return t end
        freq[t] = freq[t] - 1
        main.push(t)
      end
    end
  end

  function policy.victims(n)
    local out = {}
    for k = 1, n do
      out[k] = victim()
      if out[k] == nil then break end
    end
    return out
  end

  function policy.size() return queues.small.len + queues.main.len end

  return policy
end

return M
