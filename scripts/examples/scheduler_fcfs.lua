-- scheduler_fcfs.lua - the default scheduling policy of `kvbm sim --mode timed`,
-- written out as hooks (kvbm sim --scheduler scripts/examples/scheduler_fcfs.lua
-- gives the same figures as no --scheduler at all).
--
-- pick_waiting(ctx, waiting) -> index of the request to admit next; waiting is
--   the queue in order (oldest first; preempted requests go back to its front).
-- pick_preempt(ctx, candidates) -> index of the running request to preempt
--   when a step cannot get blocks; candidates are in admission order (the
--   request that needs blocks is the first; the newest admitted is the last).
-- Each request is a read-only table: r.id, r.arrival (ms), r.n (prompt tokens),
-- r.out_len, r.generated, r.computed, r.preemptions. ctx:now() is the
-- simulated time (ms), ctx:cached_blocks(r) the full blocks of r's prefix
-- present in G1 now, ctx:present(h, tier), ctx:frequency(h).
return {
  name = "fcfs",
  pick_waiting = function(_, waiting) return 1 end,           -- first come, first served
  pick_preempt = function(_, candidates) return #candidates end, -- the newest admitted (vLLM)
}
