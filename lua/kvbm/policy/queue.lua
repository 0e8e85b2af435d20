-- kvbm.policy.queue - a FIFO of block ids with O(1) push, removal from the
-- middle and walking, for the Lua eviction policies (s3fifo, sieve).
local _ENV = nil

local M = {}

--- A new empty queue: q:push(id) at the new end, q:remove(id),
--- q:pop() the oldest, q:first(), q:newer(id), q:has(id), q.len.
function M.new()
  local HEAD = -1
  local prev, next = { [HEAD] = HEAD }, { [HEAD] = HEAD }
  local q = { len = 0 }
  function q.has(id) return prev[id] ~= nil end
  function q.push(id)
    local last = prev[HEAD]
    prev[id], next[id] = last, HEAD
    next[last], prev[HEAD] = id, id
    q.len = q.len + 1
  end
  function q.remove(id)
    local p, n = prev[id], next[id]
    if p == nil then return false end
    next[p], prev[n] = n, p
    prev[id], next[id] = nil, nil
    q.len = q.len - 1
    return true
  end
  function q.first()
    local f = next[HEAD]
    if f ~= HEAD then return f end
  end
  function q.pop()
    local f = q.first()
    if f then q.remove(f) end
    return f
  end
  --- The next newer id, or nil after the newest.
  function q.newer(id)
    local n = next[id]
    if n ~= HEAD then return n end
  end
  return q
end

return M
