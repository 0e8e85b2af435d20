-- scheduler_cache_aware.lua - longest cached prefix first, with a starvation
-- bound: `kvbm sim --scheduler scripts/examples/scheduler_cache_aware.lua`.
--
-- Among the first LOOKAHEAD waiting requests, admit the one whose prompt has
-- the most full blocks cached in G1 now (ties: the oldest). A request that has
-- waited longer than MAX_WAIT_MS goes first whatever its prefix, so that a
-- request without cached blocks is not starved by a stream of better ones.
-- Preemption stays vLLM's: the newest admitted. (Hooks: see scheduler_fcfs.lua.)
local LOOKAHEAD = 32
local MAX_WAIT_MS = 30000

return {
  name = "cache-aware",
  pick_waiting = function(ctx, waiting)
    local now = ctx:now()
    if now - waiting[1].arrival > MAX_WAIT_MS then return 1 end
    local best, best_cached = 1, -1
    for i = 1, math.min(#waiting, LOOKAHEAD) do
      local c = ctx:cached_blocks(waiting[i])
      if c > best_cached then best, best_cached = i, c end
    end
    return best
  end,
  pick_preempt = function(_, candidates) return #candidates end,
}
