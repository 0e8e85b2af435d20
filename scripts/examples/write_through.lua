-- write_through.lua - a tier policy: every block newly registered in G1 is
-- copied to G2 at once (write-through), and every block that ends up
-- inactive in G2 is copied on to G3 when there is one. Misses in G1 are
-- onboarded from G2 or G3 whenever they hold the block.
--
-- Use:   kvbm sim trace.txt --policy scripts/examples/write_through.lua
-- or:    kvbm.tiers{ ..., policy = dofile "scripts/examples/write_through.lua" }
--
-- A tier policy is a table of optional hooks; kvbm.tiers calls them with a
-- context (ctx:frequency(h), ctx:present(h, tier), ctx:manager(tier)), the
-- block's hash h (a 16-byte string) and its position pos (0-based):
--   on_register(ctx, h, pos)        --> tier to copy a new G1 block to, or nil
--   on_inactive(ctx, h, pos, tier)  --> tier to copy a block that went inactive to, or nil
--   onboard(ctx, h, pos, tier)      --> whether to copy a G1 miss up from tier
-- Copies the planner cannot place (the destination is full) are skipped and
-- counted, never forced.
return {
  name = "write-through",
  on_register = function(ctx, h, pos)
    return "G2"
  end,
  on_inactive = function(ctx, h, pos, tier)
    if tier == "G2" and ctx:manager("G3") and not ctx:present(h, "G3") then return "G3" end
  end,
}
