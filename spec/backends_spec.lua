-- Inactive backends through the manager API: the exact eviction orders of
-- reference §5.1 (LRU, hashmap+FIFO, multi-LRU, lineage Tick and FIFO) and
-- the backend scenarios 137-175 where they are observable from a manager.
--
-- The pattern: register blocks, release them in a chosen order (a release
-- is the backend's insert), keep the reset pool empty, then ask
-- allocate_with_evictions for the victims and compare the evicted hashes.
local kvbm = require "kvbm"
local helpers = require "helpers"

local SALT = 42
local ALL = { "lru", "hashmap", "multi_lru", "lineage", "lineage_fifo" }

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, msg)
  return counts
end

--- tokens_for_id(i) = [i, i+1, i+2, i+3] -> a root hash (position 0).
local function root(i) return kvbm.sequence(helpers.range(4, i), 4, SALT):hash(0) end

--- n distinct root hashes.
local function roots(n, base)
  local hs = {}
  for i = 1, n do hs[i] = root((base or 0) + 10 * i) end
  return hs
end

--- The hashes of a chain of n blocks of size 1 (positions 0..n-1).
local function chain(n, first_token)
  return kvbm.sequence(helpers.range(n, first_token), 1, SALT):hashes()
end

local function new_manager(backend, blocks, opts)
  opts = opts or {}
  local reg = opts.registry or kvbm.registry{ frequency = "medium" }
  local m = assert(kvbm.manager{
    blocks = blocks, block_size = opts.block_size or 4, registry = reg, backend = backend,
    thresholds = opts.thresholds, duplicates = opts.duplicates,
  })
  return m, reg
end

--- Registers each hash in its own block; returns the ImmutableBlocks.
local function register(m, hashes)
  local ibs = {}
  for i, h in ipairs(hashes) do
    local mbs = assert(m:allocate(1))
    ibs[i] = m:register(mbs[1]:stage(h))
  end
  return ibs
end

--- Releases ibs[order[1]], ibs[order[2]], ... (indices into ibs).
local function release(ibs, order)
  for _, i in ipairs(order) do ibs[i]:release() end
end

--- Evicts n blocks one allocation at a time, holding the new mutable
--- blocks (so that nothing returns to the reset pool); returns the evicted
--- hashes in order and the held blocks.
local function evict_one_by_one(m, n, held)
  held = held or {}
  local out = {}
  for _ = 1, n do
    local mbs, evicted = assert(m:allocate_with_evictions(1))
    assert.are.equal(1, #evicted, "the reset pool should be empty")
    out[#out + 1] = evicted[1]
    held[#held + 1] = mbs[1]
  end
  return out, held
end

local function pick(hashes, idx)
  local t = {}
  for i, k in ipairs(idx) do t[i] = hashes[k] end
  return t
end

local function release_all(list)
  for _, b in ipairs(list) do b:release() end
end

describe("inactive backends", function()
  describe("index behaviour at manager level (137-145)", function()
    for _, backend in ipairs(ALL) do
      describe(backend, function()
        -- 137, 138
        it("a released block enters the index and is present", function()
          local m, reg = new_manager(backend, 4)
          local h = root(1)
          assert.are.equal(0, m:inactive())
          local ib = register(m, { h })[1]
          assert.are.equal(0, m:inactive())
          ib:release()
          assert.are.equal(1, m:inactive())
          assert.is_true(reg:present(h, m))
          check(m)
        end)

        -- 139
        it("a match takes every hit out of the index", function()
          local m = new_manager(backend, 4)
          local hs = roots(2)
          release_all(register(m, hs))
          local got = m:match(hs)
          assert.are.equal(2, #got)
          assert.are.equal(0, m:inactive())
          release_all(got)
          assert.are.equal(2, m:inactive())
        end)

        -- 140
        it("a match stops at the first miss", function()
          local m = new_manager(backend, 4)
          local hs = roots(2)
          release_all(register(m, hs))
          local got = m:match({ hs[1], root(999), hs[2] })
          assert.are.equal(1, #got)
          assert.are.equal(hs[1], got[1]:hash())
          assert.are.equal(1, m:inactive())
          release_all(got)
        end)

        -- 141
        it("allocating one block evicts one", function()
          local m = new_manager(backend, 2)
          release_all(register(m, roots(2)))
          local mbs, evicted = m:allocate_with_evictions(1)
          assert.are.equal(1, #mbs)
          assert.are.equal(1, #evicted)
          assert.are.equal(1, m:inactive())
          release_all(mbs)
          check(m)
        end)

        -- 142 (the index gives what it has; the manager is all-or-nothing)
        it("takes the reset pool first, then evicts only what is missing", function()
          local m = new_manager(backend, 5)
          local hs = roots(2)
          local ibs = register(m, hs)
          local reset_ids = {}
          -- the reset pool now holds ids 2, 3, 4 (FIFO)
          release_all(ibs)
          local mbs, evicted = m:allocate_with_evictions(5)
          assert.are.equal(5, #mbs)
          assert.are.equal(2, #evicted)
          for i = 1, 3 do reset_ids[i] = mbs[i]:id() end
          assert.are.same({ 2, 3, 4 }, reset_ids, "reset-pool blocks first, in FIFO order")
          assert.are.equal(0, m:inactive())
          local _, err = m:allocate(1)
          assert.are.equal("no_space", err.code)
          release_all(mbs)
          assert.are.equal(5, m:available())
        end)

        -- 143, 144
        it("reset_inactive drains everything; on an empty index it is a no-op", function()
          local m, reg = new_manager(backend, 5)
          local hs = roots(5)
          release_all(register(m, hs))
          assert.are.equal(5, m:inactive())
          assert.is_true(m:reset_inactive())
          assert.are.equal(0, m:inactive())
          assert.are.equal(5, m:reset_pool())
          for _, h in ipairs(hs) do assert.is_false(reg:present(h, m)) end
          assert.is_true(m:reset_inactive())
          assert.are.equal(5, m:available())
          check(m)
        end)

        -- 145
        it("a scan does not stop at a miss", function()
          local m = new_manager(backend, 4)
          local hs = roots(3)
          release_all(register(m, hs))
          local got = m:scan({ hs[1], root(999), hs[3] }, false)
          assert.is_not_nil(got[hs[1]])
          assert.is_not_nil(got[hs[3]])
          assert.is_nil(got[hs[2]])
          assert.are.equal(1, m:inactive())
          got[hs[1]]:release()
          got[hs[3]]:release()
          assert.are.equal(3, m:inactive())
        end)

        -- 142 (all-or-nothing at the manager)
        it("refuses an allocation larger than reset + inactive and changes nothing", function()
          local m = new_manager(backend, 4)
          local hs = roots(2)
          local ibs = register(m, hs)
          ibs[1]:release()
          local before = m:metrics()
          local mbs, err = m:allocate_with_evictions(4)
          assert.is_nil(mbs)
          assert.are.equal("no_space", err.code)
          assert.are.equal(4, err.requested)
          assert.are.equal(3, err.available)
          local after = m:metrics()
          assert.are.equal(before.kvbm_evictions_total, after.kvbm_evictions_total)
          assert.are.equal(1, m:inactive())
          assert.are.equal(2, m:reset_pool())
          ibs[2]:release()
          check(m)
        end)

        -- 67, 68, 74
        it("cycles through register, release, evict with the gauges in step", function()
          local m = new_manager(backend, 16)
          for cycle = 1, 2 do
            release_all(register(m, roots(16, cycle * 1000)))
            local g = m:metrics()
            assert.are.equal(16, g.kvbm_inactive_pool_size)
            assert.are.equal(0, g.kvbm_reset_pool_size)
            local mbs, evicted = m:allocate_with_evictions(16)
            assert.are.equal(16, #evicted)
            g = m:metrics()
            assert.are.equal(0, g.kvbm_inactive_pool_size)
            assert.are.equal(0, g.kvbm_reset_pool_size)
            release_all(mbs)
          end
          local g = m:metrics()
          assert.are.equal(32, g.kvbm_evictions_total)
          assert.are.equal(64, g.kvbm_allocations_total)
          assert.are.equal(32, g.kvbm_registrations_total)
          assert.are.equal(0, g.kvbm_inflight_mutable)
          assert.are.equal(0, g.kvbm_inflight_immutable)
          assert.are.equal(16, m:available())
        end)

        it("evicts roots (all leaves) in release order", function()
          local m = new_manager(backend, 5)
          local hs = roots(5)
          release(register(m, hs), { 3, 1, 4, 5, 2 })
          local _, evicted = m:allocate_with_evictions(5)
          assert.are.same(pick(hs, { 3, 1, 4, 5, 2 }), evicted)
        end)
      end)
    end
  end)

  describe("LRU and hashmap: least recently released first", function()
    for _, backend in ipairs({ "lru", "hashmap" }) do
      describe(backend, function()
        -- 146
        it("evicts the oldest release; the others stay present", function()
          local m, reg = new_manager(backend, 3)
          local hs = roots(3)
          release_all(register(m, hs))
          local ev = evict_one_by_one(m, 1)
          assert.are.same({ hs[1] }, ev)
          assert.are.same({ false, true, true }, reg:check_presence(hs, m))
        end)

        -- 147
        it("presence queries do not reorder", function()
          local m, reg = new_manager(backend, 2)
          local hs = roots(2)
          release_all(register(m, hs))
          assert.are.same({ true, true }, reg:check_presence({ hs[2], hs[1] }, m))
          assert.is_true(reg:present(hs[1], m))
          local _, evicted = m:allocate_with_evictions(2)
          assert.are.same(hs, evicted)
        end)

        -- 148
        it("with a partly filled index only the cached blocks are evicted", function()
          local m = new_manager(backend, 10)
          release_all(register(m, roots(2)))
          local mbs, evicted = m:allocate_with_evictions(10)
          assert.are.equal(10, #mbs)
          assert.are.equal(2, #evicted)
        end)

        it("a match hit leaves the index; its re-release enters at the tail", function()
          local m = new_manager(backend, 5)
          local hs = roots(5)
          release_all(register(m, hs))
          local hit = m:match({ hs[2] })
          assert.are.equal(4, m:inactive())
          hit[1]:release()
          local _, evicted = m:allocate_with_evictions(5)
          assert.are.same(pick(hs, { 1, 3, 4, 5, 2 }), evicted)
        end)

        it("scan, scattered match, weak upgrade and Reject re-registration are hits too", function()
          local m = new_manager(backend, 7, { duplicates = "reject" }) -- one spare block
          local hs = roots(6)
          local ibs = register(m, hs)
          local wb = ibs[4]:downgrade()
          release_all(ibs)
          local s = m:scan({ hs[1] }, false)
          s[hs[1]]:release()
          local sc = m:match_scattered({ root(999), hs[2] })
          sc[2]:release()
          local up = wb:upgrade()
          up:release()
          local again = register(m, { hs[3] })[1] -- Reject: resurrects the cached block
          assert.are.equal(2, again:id())
          assert.are.equal(5, m:inactive(), "no eviction: h3 is held again")
          assert.are.equal(1, m:reset_pool(), "the spare block was used and returned")
          again:release()
          local _, evicted = m:allocate_with_evictions(7)
          assert.are.same(pick(hs, { 5, 6, 1, 2, 4, 3 }), evicted)
          wb:release()
        end)

        it("a miss never reorders", function()
          local m = new_manager(backend, 3)
          local hs = roots(3)
          release_all(register(m, hs))
          assert.are.same({}, m:match({ root(999), hs[1] }))
          local _, evicted = m:allocate_with_evictions(3)
          assert.are.same(hs, evicted)
        end)

        it("interleaves releases and evictions", function()
          local m = new_manager(backend, 4)
          local hs = roots(6)
          local ibs = register(m, pick(hs, { 1, 2, 3, 4 }))
          release(ibs, { 2, 4 })
          local held = {}
          assert.are.same({ hs[2] }, (evict_one_by_one(m, 1, held)))
          release(ibs, { 1 })
          -- reuse the evicted block for hs[5] and release it too
          local ib5 = m:register(table.remove(held):stage(hs[5]))
          ib5:release()
          release(ibs, { 3 })
          local _, evicted = m:allocate_with_evictions(4)
          assert.are.same(pick(hs, { 4, 1, 5, 3 }), evicted)
        end)
      end)
    end
  end)

  describe("multi-LRU: levels by frequency at insert time, coldest first", function()
    --- Touches h n times (before it is registered, like the crate's tests).
    local function touch(reg, h, n)
      for _ = 1, n do reg:touch(h) end
    end

    -- 149
    it("places blocks in four levels (thresholds 2, 6, 15)", function()
      local m, reg = new_manager("multi_lru", 4, { thresholds = { 2, 6, 15 } })
      local hs = roots(4)
      touch(reg, hs[2], 2)
      touch(reg, hs[3], 6)
      touch(reg, hs[4], 16)
      local ibs = register(m, hs) -- +1 each: 1, 3, 7, 15
      assert.are.same({ 1, 3, 7, 15 }, { reg:frequency(hs[1]), reg:frequency(hs[2]),
                                        reg:frequency(hs[3]), reg:frequency(hs[4]) })
      release(ibs, { 4, 3, 2, 1 })
      assert.are.equal(4, m:inactive())
      assert.are.same({ true, true, true, true }, reg:check_presence(hs, m))
      local ev = evict_one_by_one(m, 4)
      assert.are.same(hs, ev, "cold, warm, hot, very hot - whatever the release order")
    end)

    -- 150
    it("evicts the cold blocks and keeps the hot one", function()
      local m, reg = new_manager("multi_lru", 3, { thresholds = { 2, 6, 15 } })
      local hs = roots(3)
      touch(reg, hs[3], 6)
      release(register(m, hs), { 3, 1, 2 })
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same({ hs[1], hs[2] }, evicted)
      assert.is_true(reg:present(hs[3], m))
    end)

    -- 151
    it("finds blocks in every level (thresholds 2, 4, 8)", function()
      local m, reg = new_manager("multi_lru", 8, { thresholds = { 2, 4, 8 } })
      local hs = roots(3)
      touch(reg, hs[2], 3)
      touch(reg, hs[3], 10)
      release_all(register(m, hs))
      local got = m:match(hs)
      assert.are.equal(3, #got)
      assert.are.equal(0, m:inactive())
      release_all(got)
    end)

    -- 152
    it("drains all four levels in order", function()
      local m, reg = new_manager("multi_lru", 4, { thresholds = { 2, 6, 15 } })
      local hs = roots(4)
      touch(reg, hs[2], 3)
      touch(reg, hs[3], 7)
      touch(reg, hs[4], 15)
      release(register(m, hs), { 2, 4, 1, 3 })
      local _, evicted = m:allocate_with_evictions(4)
      assert.are.same(hs, evicted)
      assert.are.equal(0, m:inactive())
    end)

    it("default thresholds 3, 8, 15: release order within a level", function()
      local m, reg = new_manager("multi_lru", 8)
      local hs = roots(8)
      -- extra touches; registration adds 1: counts 1, 3, 8, 15 per pair
      local extra = { 0, 2, 7, 14, 0, 2, 7, 14 }
      for i, h in ipairs(hs) do touch(reg, h, extra[i]) end
      release(register(m, hs), { 8, 4, 7, 3, 6, 2, 5, 1 })
      local _, evicted = m:allocate_with_evictions(8)
      assert.are.same(pick(hs, { 5, 1, 6, 2, 7, 3, 8, 4 }), evicted)
    end)

    it("a block registered once and released sits in the cold level", function()
      local m = new_manager("multi_lru", 3)
      local hs = roots(3)
      release(register(m, hs), { 2, 3, 1 })
      local _, evicted = m:allocate_with_evictions(3)
      assert.are.same(pick(hs, { 2, 3, 1 }), evicted, "all cold: plain LRU")
    end)

    it("chooses the level once, at insert: later touches do not move a cached block", function()
      local m, reg = new_manager("multi_lru", 2)
      local hs = roots(2)
      local ibs = register(m, hs)
      ibs[1]:release() -- count 1: cold
      touch(reg, hs[1], 14)
      touch(reg, hs[2], 2)
      ibs[2]:release() -- count 3: warm
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same(hs, evicted)
    end)

    it("a hit and re-release recomputes the level", function()
      local m, reg = new_manager("multi_lru", 3)
      local hs = roots(3)
      release_all(register(m, hs)) -- all cold
      local hit = m:match({ hs[1] }) -- count 2
      touch(reg, hs[1], 10)
      hit[1]:release() -- very hot now
      local _, evicted = m:allocate_with_evictions(3)
      assert.are.same(pick(hs, { 2, 3, 1 }), evicted)
    end)

    it("counts match touches: two matches make a block warm", function()
      local m = new_manager("multi_lru", 3)
      local hs = roots(3)
      release_all(register(m, hs))
      for _ = 1, 2 do release_all(m:match({ hs[1] })) end -- count 3: warm
      local _, evicted = m:allocate_with_evictions(3)
      assert.are.same(pick(hs, { 2, 3, 1 }), evicted)
    end)

    -- 72
    it("holds an all-cold pool of 64 (each level can hold every block)", function()
      local m = new_manager("multi_lru", 64)
      release_all(register(m, roots(64)))
      assert.are.equal(64, m:inactive())
      local g = m:metrics()
      assert.are.equal(0, g.kvbm_evictions_total)
      assert.are.equal(64, g.kvbm_allocations_total)
      check(m)
    end)

    -- 73
    it("evicts 32 blocks level by level (touches by block id)", function()
      local m, reg = new_manager("multi_lru", 32, { thresholds = { 3, 8, 15 } })
      local hs = roots(32, 10000)
      local ibs = register(m, hs)
      for i, ib in ipairs(ibs) do
        local id = ib:id()
        assert.are.equal(i - 1, id)
        touch(reg, hs[i], id < 8 and 0 or id < 16 and 3 or id < 24 and 8 or 15)
      end
      release(ibs, { 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
                     16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1 })
      assert.are.equal(32, m:inactive())
      local _, evicted = m:allocate_with_evictions(32)
      local expected = {}
      for band = 0, 3 do -- coldest level first; release order (descending ids) within
        for k = 8, 1, -1 do expected[#expected + 1] = hs[band * 8 + k] end
      end
      assert.are.same(expected, evicted)
      local g = m:metrics()
      assert.are.equal(32, g.kvbm_evictions_total)
      assert.are.equal(64, g.kvbm_allocations_total)
    end)

    it("validates thresholds and needs a frequency tracker", function()
      local reg = kvbm.registry{ frequency = "small" }
      local cases = {
        { { 6, 2, 10 }, { "ascending order" } }, -- 10
        -- 9: the setter's panic or the build() validation message
        { { 2, 6, 20 }, { "must be <= 15", "maximum frequency is 15" } },
        { { 0, 6, 10 }, { "cold_to_warm threshold must be >= 1" } },
        { { 3, 3, 8 }, { "ascending order" } },
      }
      for _, c in ipairs(cases) do
        local m, err = kvbm.manager{ blocks = 4, registry = reg, backend = "multi_lru", thresholds = c[1] }
        assert.is_nil(m)
        assert.are.equal("invalid_config", err.code)
        local found = false
        for _, text in ipairs(c[2]) do found = found or err.message:find(text, 1, true) ~= nil end
        assert.is_true(found, err.message)
      end
      local m, err = kvbm.manager{ blocks = 4, registry = kvbm.registry(), backend = "multi_lru" }
      assert.is_nil(m)
      assert.matches("frequency tracking", err.message)
      -- 3, 4
      assert.is_not_nil(kvbm.manager{ blocks = 100, registry = reg, backend = "multi_lru" }:allocate(8))
      assert.is_not_nil(kvbm.manager{ blocks = 100, registry = reg, backend = "multi_lru",
                                      thresholds = { 2, 6, 12 } }:allocate(4))
    end)
  end)

  describe("lineage: only leaves are evictable", function()
    local function lineage_manager(backend, blocks)
      return new_manager(backend, blocks, { block_size = 1 })
    end

    for _, backend in ipairs({ "lineage", "lineage_fifo" }) do
      describe(backend, function()
        -- 153
        it("evicts a lone root", function()
          local m = lineage_manager(backend, 1)
          local h = chain(1, 100)[1]
          release_all(register(m, { h }))
          assert.are.same({ h }, (evict_one_by_one(m, 1)))
          assert.are.equal(0, m:inactive())
          check(m)
        end)

        -- 154
        it("evicts a chain leaf first, then the exposed parent", function()
          local m = lineage_manager(backend, 2)
          local hs = chain(2, 0)
          release(register(m, hs), { 1, 2 })
          assert.are.same({ hs[2], hs[1] }, (evict_one_by_one(m, 2)))
        end)

        -- 155
        it("links a child released before its parent (a ghost parent)", function()
          local m = lineage_manager(backend, 2)
          local hs = chain(2, 0)
          release(register(m, hs), { 2, 1 })
          assert.are.equal(2, m:inactive())
          assert.are.same({ hs[2], hs[1] }, (evict_one_by_one(m, 2)))
        end)

        -- 156, 160
        it("keeps two chains ordered leaf to root", function()
          local m = lineage_manager(backend, 10)
          local a, b = chain(5, 0), chain(5, 3000)
          local ibs = register(m, a)
          for i, ib in ipairs(register(m, b)) do ibs[5 + i] = ib end
          release_all(ibs)
          assert.are.equal(10, m:inactive())
          local ev = evict_one_by_one(m, 1)
          assert.are.equal(9, m:inactive())
          local ev2 = evict_one_by_one(m, 1)
          local _, ev3 = m:allocate_with_evictions(2)
          assert.are.equal(6, m:inactive())
          local order = { ev[1], ev2[1], ev3[1], ev3[2] }
          -- every victim was a leaf: its child (if any) went before it
          local pos = {}
          for i, h in ipairs(a) do pos[h] = { a, i } end
          for i, h in ipairs(b) do pos[h] = { b, i } end
          local gone = {}
          for _, h in ipairs(order) do
            local c, i = pos[h][1], pos[h][2]
            if i < 5 then assert.is_true(gone[c[i + 1]] == true, "a parent went before its child") end
            gone[h] = true
          end
        end)

        -- 159
        it("evicts along a chain of 1000 blocks", function()
          local m = lineage_manager(backend, 1000)
          local hs = chain(1000, 0)
          local ibs = register(m, hs)
          release_all(ibs)
          local _, evicted = m:allocate_with_evictions(1)
          assert.are.same({ hs[1000] }, evicted)
          assert.are.equal(999, m:inactive())
          local _, rest = m:allocate_with_evictions(999)
          for i = 1, 999 do assert.are.equal(hs[1000 - i], rest[i]) end
          check(m)
        end)

        -- 159 (second part): a leaf alone, its 100 ancestors held
        it("evicts a leaf whose ancestors are all held", function()
          local m = lineage_manager(backend, 101)
          local hs = chain(101, 7000)
          local ibs = register(m, hs)
          ibs[101]:release()
          assert.are.equal(1, m:inactive())
          local _, evicted = m:allocate_with_evictions(1)
          assert.are.same({ hs[101] }, evicted)
          assert.are.equal(0, m:inactive())
          for i = 100, 1, -1 do ibs[i]:release() end
          assert.are.equal(100, m:inactive())
          local _, rest = m:allocate_with_evictions(100)
          for i = 1, 100 do assert.are.equal(hs[101 - i], rest[i]) end
        end)

        -- 161
        it("matches the full hash: an impostor with the same position and fragment is a miss", function()
          local m, reg = lineage_manager(backend, 2)
          local stored = kvbm.hash.new(0xAA, 0x11, 5)
          local impostor = kvbm.hash.new(0xAA, 0x22, 5)
          assert.are_not.equal(stored, impostor)
          local ibs = register(m, { stored })
          ibs[1]:release()
          assert.is_false(reg:is_registered(impostor))
          assert.are.same({}, m:match({ impostor }))
          assert.is_nil(next(m:scan({ impostor }, true)))
          assert.are.equal(1, m:inactive())
          -- both cached at once (a fragment collision in the index): both stay evictable
          local other = register(m, { impostor })
          other[1]:release()
          assert.are.equal(2, m:inactive())
          local _, evicted = m:allocate_with_evictions(2)
          table.sort(evicted)
          local want = { stored, impostor }
          table.sort(want)
          assert.are.same(want, evicted)
          check(m)
        end)

        -- 162
        it("reuses its storage across chains", function()
          local m = lineage_manager(backend, 8)
          for round = 0, 20 do
            local hs = chain(8, 9000 + 100 * round)
            release_all(register(m, hs))
            local mbs, evicted = m:allocate_with_evictions(8)
            for i = 1, 8 do assert.are.equal(hs[9 - i], evicted[i]) end
            release_all(mbs)
            check(m)
          end
        end)

        it("never evicts a parent while a child is inactive (random trees and release orders)", function()
          math.randomseed(4242)
          for _ = 1, 40 do
            -- a small tree: a trunk of 4 and branches off it, from shared prefixes
            local parent, all = {}, {}
            local trunk = helpers.range(4, 500)
            for b = 1, 4 do
              local toks = { table.unpack(trunk, 1, math.random(1, 4)) }
              for _ = 1, math.random(1, 4) do toks[#toks + 1] = 1000 * b + #toks end
              local hs = kvbm.sequence(toks, 1, SALT):hashes()
              for i, h in ipairs(hs) do
                if parent[h] == nil then
                  parent[h] = hs[i - 1] or false
                  all[#all + 1] = h
                end
              end
            end
            local m = lineage_manager(backend, #all) -- no reset pool left: allocations evict
            local ibs = register(m, all)
            local order = {}
            for i = 1, #all do order[i] = i end
            for i = #order, 2, -1 do
              local j = math.random(1, i)
              order[i], order[j] = order[j], order[i]
            end
            release(ibs, order)
            local inactive = {}
            for _, h in ipairs(all) do inactive[h] = true end
            local _, evicted = m:allocate_with_evictions(#all)
            assert.are.equal(#all, #evicted)
            for _, h in ipairs(evicted) do
              for c, p in pairs(parent) do
                if p == h then assert.is_nil(inactive[c], "a parent was evicted before its child") end
              end
              inactive[h] = nil
            end
            check(m)
          end
        end)

        it("a parent whose child is held (not cached) is a leaf", function()
          local m = lineage_manager(backend, 2)
          local hs = chain(2, 40)
          local ibs = register(m, hs)
          ibs[1]:release() -- the child is still held
          local mbs, evicted = m:allocate_with_evictions(1)
          assert.are.same({ hs[1] }, evicted)
          ibs[2]:release() -- its parent is gone: a root now
          release_all(mbs)
          local _, ev2 = m:allocate_with_evictions(2)
          assert.are.same({ hs[2] }, ev2)
        end)
      end)
    end

    -- 157
    it("Tick: chains A0->A1, X0->X1 inserted A0, A1, X0, X1 evict A1, A0, X1, X0", function()
      local m = lineage_manager("lineage", 4)
      local a, x = chain(2, 0), chain(2, 5000)
      local ibs = register(m, { a[1], a[2], x[1], x[2] })
      release(ibs, { 1, 2, 3, 4 })
      assert.are.equal(4, m:inactive())
      assert.are.same({ a[2], a[1], x[2], x[1] }, (evict_one_by_one(m, 4)))
    end)

    -- 164
    it("FIFO: the same inserts evict A1, X1, A0, X0", function()
      local m = lineage_manager("lineage_fifo", 4)
      local a, x = chain(2, 0), chain(2, 5000)
      release(register(m, { a[1], a[2], x[1], x[2] }), { 1, 2, 3, 4 })
      local _, evicted = m:allocate_with_evictions(4)
      assert.are.same({ a[2], x[2], a[1], x[1] }, evicted)
    end)

    it("Tick within one allocation gives the same order as one at a time", function()
      local m = lineage_manager("lineage", 4)
      local a, x = chain(2, 0), chain(2, 5000)
      release(register(m, { a[1], a[2], x[1], x[2] }), { 1, 2, 3, 4 })
      local _, evicted = m:allocate_with_evictions(4)
      assert.are.same({ a[2], a[1], x[2], x[1] }, evicted)
    end)

    -- 163
    it("FIFO: a parent re-leafed by a hit on its child goes to the tail", function()
      local m = lineage_manager("lineage_fifo", 4)
      local a, b = chain(2, 0), chain(2, 3000)
      release(register(m, { a[1], a[2], b[1], b[2] }), { 1, 2, 3, 4 })
      local hit = m:match({ a[2] }) -- removes A1: A0 becomes a leaf again, at the tail
      assert.are.equal(1, #hit)
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same({ b[2], a[1] }, evicted)
      hit[1]:release()
    end)

    -- 163, Tick variant: the re-leafed parent keeps its original tick
    it("Tick: a parent re-leafed by a hit on its child keeps its place", function()
      local m = lineage_manager("lineage", 4)
      local a, b = chain(2, 0), chain(2, 3000)
      release(register(m, { a[1], a[2], b[1], b[2] }), { 1, 2, 3, 4 })
      local hit = m:match({ a[2] })
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same({ a[1], b[2] }, evicted)
      hit[1]:release()
    end)

    it("Tick: a re-inserted node gets a new tick", function()
      local m = lineage_manager("lineage", 3)
      local hs = roots(3)
      release_all(register(m, hs))
      local hit = m:match({ hs[1] })
      hit[1]:release()
      local _, evicted = m:allocate_with_evictions(3)
      assert.are.same(pick(hs, { 2, 3, 1 }), evicted)
    end)

    it("an older root goes before a younger chain in both orders", function()
      -- C0, R, C1, C2 released in that order: R is the oldest leaf for both
      -- (Tick: C0's older tick is not a leaf's; FIFO: leaves [R, C2])
      local r, c = chain(1, 77)[1], chain(3, 800)
      for _, backend in ipairs({ "lineage", "lineage_fifo" }) do
        local m = lineage_manager(backend, 4)
        release(register(m, { r, c[1], c[2], c[3] }), { 2, 1, 3, 4 })
        local _, evicted = m:allocate_with_evictions(4)
        assert.are.same({ r, c[3], c[2], c[1] }, evicted, backend)
      end
    end)

    -- Ghosts pile up when hit interior blocks are reset instead of cached
    -- again; past the room the lineage slab started with, it grows (the
    -- crate's slab is unbounded), so no chain is cut. Chain c[1] -> ... ->
    -- c[7] in a 4-block manager: evict-on-release hits on c[1..5] make 5
    -- ghosts, more than the 4 spare nodes; then c[5] is cached again and
    -- must still wait for its cached child c[6].
    local function ghost_limit_scenario(backend)
      local m = lineage_manager(backend, 4)
      local c = chain(7, 1)
      local function hit_and_reset(h)
        local b = m:match({ h })[1]
        b:set_evict_on_release(true)
        b:release()
      end
      release_all(register(m, { c[1], c[2], c[3], c[4] }))
      for i = 1, 3 do hit_and_reset(c[i]) end
      release_all(register(m, { c[5], c[6], c[7] }))
      hit_and_reset(c[4])
      hit_and_reset(c[5]) -- the fifth ghost: c[6] is orphaned
      release_all(register(m, { c[5] }))
      local _, evicted = m:allocate_with_evictions(3) -- one from the reset pool, two evictions
      check(m)
      return evicted, c
    end

    for _, backend in ipairs({ "lineage", "lineage_fifo" }) do
      it(backend .. ": with more ghosts than slots a child still goes before its re-inserted parent", function()
        local evicted, c = ghost_limit_scenario(backend)
        assert.are.same({ c[7], c[6] }, evicted)
      end)
    end

    it("Tick and FIFO differ once a re-leafed parent is older than another leaf", function()
      -- A0 -> A1 and a root R inserted A0, A1, R: A1 goes first; then Tick
      -- gives A0 back its first place (before R), FIFO queues it after R
      local a, r = chain(2, 0), chain(1, 6000)[1]
      local want = { lineage = { a[2], a[1], r }, lineage_fifo = { a[2], r, a[1] } }
      for _, backend in ipairs({ "lineage", "lineage_fifo" }) do
        local m = lineage_manager(backend, 3)
        release(register(m, { a[1], a[2], r }), { 1, 2, 3 })
        local _, evicted = m:allocate_with_evictions(3)
        assert.are.same(want[backend], evicted, backend)
      end
    end)
  end)
end)
