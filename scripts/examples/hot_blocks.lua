-- hot_blocks.lua - a frequency-aware tier policy: only blocks that were
-- reused are worth a copy. The registry's TinyLFU tracker counts how often
-- a hash was registered or matched (ctx:frequency(h), 0..15). A block that
-- goes inactive in G1 is copied to G2 once it has been seen HOT times; one
-- that goes inactive in G2 is copied to G3 once seen VERY_HOT times. Cold
-- blocks (one-off suffixes) are never copied, which keeps G2 for the shared
-- prefixes. Onboarding skips positions past MAX_ONBOARD (a long onboard can
-- cost more than recomputing).
--
-- Use:   kvbm sim trace.txt --policy scripts/examples/hot_blocks.lua
-- (the planner's registry must track frequency: kvbm.tiers does by default)
local HOT, VERY_HOT, MAX_ONBOARD = 2, 4, 4096

return {
  name = "hot-blocks",
  on_inactive = function(ctx, h, pos, tier)
    local f = ctx:frequency(h)
    if tier == "G1" and f >= HOT and not ctx:present(h, "G2") then return "G2" end
    if tier == "G2" and f >= VERY_HOT and ctx:manager("G3") and not ctx:present(h, "G3") then return "G3" end
  end,
  onboard = function(ctx, h, pos, tier)
    return pos < MAX_ONBOARD
  end,
}
