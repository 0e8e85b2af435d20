-- kvbm.sim.optimal: the future a replay knows, for the "optimal" backend
-- (Belady's offline optimum in the engine, src/backend_optimal.c). For each
-- request, the index of the next request that needs each of its blocks;
-- after a request's blocks are registered the replay hands them to G1 with
-- m:next_use(hashes, whens), and G1 evicts the block needed last.
local kvbm = require "kvbm"
local _ENV = nil

local M = {}

--- requests: the replay's list ({ tokens, salt }); block_size: the engine's.
--- Returns hint(i, m): gives manager m the next uses of request i's blocks.
function M.new(requests, block_size)
  local hashes, whens = {}, {}
  for i = 1, #requests do
    hashes[i] = kvbm.sequence(requests[i].tokens, block_size, requests[i].salt):hashes()
  end
  local next_seen = {} -- hash -> the first request after the current one that holds it
  for i = #requests, 1, -1 do
    local hs, ws = hashes[i], {}
    for k = 1, #hs do
      ws[k] = next_seen[hs[k]] or false -- false: never again
      next_seen[hs[k]] = i
    end
    whens[i] = ws
  end
  return function(i, m) return m:next_use(hashes[i], whens[i]) end
end

return M
