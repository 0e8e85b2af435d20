-- offload_on_release.lua - a tier policy: a block is copied down only when
-- its last user in G1 lets go of it (it becomes inactive there and could be
-- evicted next), i.e. write-back: G1 -> G2, and G2 -> G3 likewise. Blocks
-- that stay hot in G1 are never copied. Onboarding takes every hit below.
--
-- Use:   kvbm sim trace.txt --policy scripts/examples/offload_on_release.lua
--
-- Hooks (see write_through.lua for the full contract): on_inactive returns
-- the tier below the one the block went inactive in, unless that tier
-- already holds it.
local below = { G1 = "G2", G2 = "G3" }

return {
  name = "offload-on-release",
  on_inactive = function(ctx, h, pos, tier)
    local dst = below[tier]
    if dst and ctx:manager(dst) and not ctx:present(h, dst) then return dst end
  end,
}
