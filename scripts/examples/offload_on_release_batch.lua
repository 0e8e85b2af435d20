-- offload_on_release_batch.lua - offload_on_release.lua's rule as one hook
-- call per release instead of one per block: the blocks that went inactive
-- together in a tier go to the tier below it, when that tier exists and
-- does not hold them yet (the same plans, one Lua call per release).
--
-- Use:   kvbm sim trace.txt --policy scripts/examples/offload_on_release_batch.lua
local below = { G1 = "G2", G2 = "G3" }

return {
  name = "offload-on-release (batch)",
  on_inactive_batch = function(ctx, hashes, _, tier)
    local dst, out = below[tier], {}
    if dst and ctx:manager(dst) then
      for i = 1, #hashes do
        if not ctx:present(hashes[i], dst) then out[i] = dst end
      end
    end
    return out
  end,
}
