-- kvbm.policy.sieve - SIEVE (Zhang et al., NSDI '24) as a Lua eviction
-- policy: the twin of the built-in "sieve" backend (the same victims in the
-- same order), on the batched interface (see kvbm.policy.s3fifo).
--
-- One FIFO from oldest to newest: a block joins as the newest when it is
-- registered and keeps its place; a hit sets its visited bit. The hand
-- walks from where it stopped towards the newest (then wraps to the
-- oldest), clearing visited bits and passing over blocks in use; the first
-- unvisited cached block is the victim.
local queue = require "kvbm.policy.queue"
local _ENV = nil

local M = {}

function M.new()
  local q = queue.new()
  local state, visited, hash = {}, {}, {} -- state: nil, "held" or "cached"
  local hand
  local cached = 0

  local function newer(id) return q.newer(id) or q.first() end

  local function dequeue(id)
    if hand == id then hand = newer(id) end
    if hand == id then hand = nil end
    q.remove(id)
    state[id] = nil
  end

  local function admit(id, h)
    if state[id] == "cached" then return end
    if state[id] then dequeue(id) end
    hash[id], visited[id], state[id] = h, false, "held"
    q.push(id)
  end

  local handlers = {
    admit = function(e) admit(e.id, e.hash) end,
    insert = function(e)
      if state[e.id] == "cached" then return end
      if not state[e.id] or hash[e.id] ~= e.hash then admit(e.id, e.hash) end
      state[e.id] = "cached"
      cached = cached + 1
    end,
    remove = function(e)
      if state[e.id] ~= "cached" then return end
      state[e.id], visited[e.id] = "held", true
      cached = cached - 1
    end,
    miss = function() end,
  }

  local policy = { name = "sieve" }

  function policy.on_events(list)
    for i = 1, #list do handlers[list[i].kind](list[i]) end
  end

  function policy.victims(n)
    local out = {}
    for k = 1, n do
      if cached == 0 then break end
      local h = hand or q.first()
      while state[h] ~= "cached" or visited[h] do
        if state[h] == "cached" then visited[h] = false end
        h = newer(h)
      end
      hand = h
      dequeue(h)
      cached = cached - 1
      out[k] = h
    end
    return out
  end

  function policy.size() return cached end

  return policy
end

return M
