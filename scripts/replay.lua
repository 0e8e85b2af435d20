-- replay.lua - the trace replay (lua/kvbm/replay.lua) driven from Lua:
--   kvbm scripts/replay.lua TRACE BLOCK_COUNT WINDOW BACKEND [sets|blocks]
-- "sets" moves each request's blocks as kvbm.BlockSets (one Lua object per
-- request), hashing each request straight from the loaded trace as the C
-- replay does (t:sequence refilling one kvbm.Sequence); "blocks" uses one
-- guard per block (m:match, m:allocate, mb:stage, m:register_all), the
-- plain per-block API.
local kvbm = require "kvbm"
local replay = require "kvbm.replay"

local path, count, window, backend, mode = arg[1], tonumber(arg[2]), tonumber(arg[3]), arg[4], arg[5] or "sets"
if not (path and count and window and backend) then
  io.stderr:write("usage: kvbm scripts/replay.lua TRACE BLOCK_COUNT WINDOW BACKEND [sets|blocks]\n")
  os.exit(2)
end
local trace = assert(kvbm.trace.load(path))
local reg = kvbm.registry{ frequency = backend == "multi_lru" and "medium" or false }
local m = assert(kvbm.manager{ blocks = count, block_size = 16, registry = reg, backend = backend, name = "G1" })
local r = replay.run{ trace = trace, manager = m, window = window, mode = mode }
print(("%-12s blocks %6d W %3d  requests %d  full_blocks %d  hits %d  allocations %d  rejected %d"
  .. "  evictions %d  wall_ms %.1f  ns/block %.1f  (lua, %s)")
  :format(backend, count, window, r.requests, r.full_blocks, r.hits, r.allocations, r.rejected,
    r.evictions, r.seconds * 1e3, r.seconds * 1e9 / r.full_blocks, mode))
