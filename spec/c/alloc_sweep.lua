-- alloc_sweep.lua - representative use of the Lua binding, run by
-- test_lua_alloc.c once per allocation with that allocation failing. run()
-- keeps every manager it makes in `live` so that check() can verify their
-- invariants afterwards; an expected failure (nil, err) becomes an error
-- carrying err, so every run ends in success or an out-of-memory error.
local M = {}

local function must(v, err)
  if v == nil then error(err, 0) end
  return v
end

local function release_all(blocks)
  for _, b in pairs(blocks) do
    if type(b) == "userdata" then b:release() end
  end
end

function M.run(live)
  local kvbm = require "kvbm"
  local reg = must(kvbm.registry { frequency = "small" })
  local g1 = must(kvbm.manager { blocks = 8, block_size = 4, registry = reg, backend = "lineage" })
  live[#live + 1] = g1
  local g2 = must(kvbm.manager { blocks = 8, block_size = 4, registry = reg, backend = "multi_lru",
    duplicates = "reject" })
  live[#live + 1] = g2

  -- blocks: allocate, stage, register, weak, match
  local seq = must(kvbm.sequence({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 }, 4, 42))
  local hs = { seq:hash(0), seq:hash(1), seq:hash(2) }
  local mbs = must(g1:allocate(3))
  local staged = {}
  for i, mb in ipairs(mbs) do staged[i] = must(mb:stage(hs[i])) end
  local imm = must(g1:register_all(staged))
  local weak = must(imm[1]:downgrade())
  for _, b in ipairs(imm) do b:release() end
  local back = weak:upgrade()
  if back then back:release() end
  local found = must(g1:match(hs))
  for _, b in ipairs(found) do b:release() end
  release_all(must(g1:match_scattered { hs[3], hs[1] }))
  release_all(must(g1:scan(hs, true)))
  release_all(must(g1:allocate_with_evictions(8)))

  -- BlockSets
  local set = must(g2:allocate_set(2))
  set:release()
  local regd = must(g2:register_set(must(g2:allocate_set(2)), { hs[1], hs[2] }))
  regd:release()
  local ms = must(g2:match_set(hs))
  ms:release()
  must(g2:reset_inactive())

  -- events and a subscription
  local ev = must(kvbm.events { policy = "all" })
  local sub = must(ev:subscribe(16))
  local ereg = must(kvbm.registry { events = ev })
  local em = must(kvbm.manager { blocks = 4, block_size = 4, registry = ereg, backend = "lru" })
  live[#live + 1] = em
  local b = must(em:allocate(1))[1]
  must(em:register(must(b:stage(hs[1])))):release()
  while sub:poll() do end

  -- assignments
  local a = must(kvbm.assignments(0))
  must(a:extend_block_ids { 10, 11, 12 })
  must(a:assign_pending(seq))
  local other = must(kvbm.assignments(0))
  must(other:extend_block_ids { 20, 21 })
  kvbm.zip_assigned_pending(a, other)

  -- tiers
  local t = must(kvbm.tiers { block_size = 4, G1 = { blocks = 4 }, G2 = { blocks = 8 } })
  live[#live + 1] = t:manager("G1")
  live[#live + 1] = t:manager("G2")
  local r = must(t:admit(seq))
  r:commit()
  r:release()
  for _, plan in ipairs(t:plans()) do t:complete(plan) end
  -- a RequestSequence admitted, decoded on G1 through the planner, released
  local tg1 = t:manager("G1")
  local rs = must(kvbm.request({ 1, 2, 3, 4, 5, 6 }, 2, 4))
  must(t:admit(rs))
  rs:commit()
  must(rs:allocate_blocks(1, tg1) or nil, "no space")
  rs:append_token(7)
  rs:append_token(8)
  must(rs:complete_and_register_pending(tg1))
  rs:release()
  for _, plan in ipairs(t:plans()) do t:complete(plan) end
  t:close()
end

function M.check(live)
  local kvbm = require "kvbm"
  for i, m in ipairs(live) do
    local ok, counts, msg = pcall(kvbm._debug.check, m)
    if not ok then msg = counts end -- raised: fine only for a closed manager
    if not (ok and counts) and not (not ok and tostring(msg):match("closed")) then
      error("manager " .. i .. ": " .. tostring(msg), 0)
    end
  end
end

return M
