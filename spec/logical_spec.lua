-- kvbm.logical (LogicalBlockAssignments): the catalogue scenarios of
-- events-sequence.md §3.8 (80-95, sequence/assignments/logical.rs), then
-- the Lua side: bad input raises, errors change nothing and hand every
-- guard back, clear/release give all blocks back, large sets, leaks.
local kvbm = require "kvbm"
local helpers = require "helpers"

local BS = 4

local function mgr(n)
  return assert(kvbm.manager { blocks = n, block_size = BS, backend = "lru", registry = kvbm.registry {} })
end

-- seq(n): tokens 0..4n-1, n full blocks, no salt
local function seq(n) return kvbm.sequence(helpers.range(n * BS), BS) end

local function ids_of(blocks)
  local t = {}
  for i, b in ipairs(blocks) do t[i] = b:id() end
  return t
end

-- allocate, complete against seq's first `count` blocks, register
local function register_directly(m, s, count)
  local out = {}
  for i, mb in ipairs(assert(m:allocate(count))) do out[i] = m:register(assert(mb:complete(s, i - 1))) end
  return out
end

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, "engine invariant broken: " .. tostring(msg))
  return counts
end

local function counts(la) return { la:assigned_count(), la:staged_count(), la:unassigned_count() } end

local function release_all(list) for _, b in ipairs(list) do b:release() end end

describe("kvbm.logical (logical.rs)", function()
  it("#80 new and default are empty; counts 0; contains(0) is false", function()
    for _, la in ipairs { kvbm.logical.new(), kvbm.logical(), require("kvbm.logical").new() } do
      assert.is_true(la:is_empty())
      assert.are.same({ 0, 0, 0 }, counts(la))
      assert.is_false(la:contains(0))
    end
    assert.are.equal(kvbm.logical, require "kvbm.logical")
  end)

  it("#81 extend_blocks keeps the allocated blocks in FIFO order", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(5))
    local ids = ids_of(blocks)
    local la = kvbm.logical()
    assert.are.equal(5, la:extend_blocks(blocks))
    assert.are.equal(5, la:unassigned_count())
    assert.is_false(la:is_empty())
    for i, id in ipairs(ids) do
      local got, guard = la:get_unassigned(i - 1)
      assert.are.equal(id, got)
      assert.are.equal(id, guard:id())
    end
    check(m)
  end)

  it("#82 extend_assigned takes registered blocks: ids, hashes, order, contains", function()
    local m = mgr(10)
    local s = seq(3)
    local imm = register_directly(m, s, 3)
    local ids = ids_of(imm)
    local la = kvbm.logical()
    assert.are.equal(3, la:extend_assigned(imm))
    assert.are.same({ 3, 0, 0 }, counts(la))
    for i, id in ipairs(ids) do
      local got, ib = la:get_assigned(i - 1)
      assert.are.equal(id, got)
      assert.are.equal(id, ib:id())
      assert.are.equal(s:hash(i - 1), ib:hash())
      assert.is_true(la:contains(id))
    end
    assert.is_false(la:contains(999))
    -- ordering preserved for 5
    local m5, s5 = mgr(10), seq(5)
    local imm5 = register_directly(m5, s5, 5)
    local la5 = kvbm.logical()
    la5:extend_assigned(imm5)
    for i, id in ipairs(ids_of(imm5)) do assert.are.equal(id, (la5:get_assigned(i - 1))) end
  end)

  it("#83 a matched prefix of 3, then 2 new blocks staged from blocks 3..5 and registered", function()
    local m = mgr(10)
    local s = seq(5)
    local matched = register_directly(m, s, 3)
    local matched_ids = ids_of(matched)
    local la = kvbm.logical()
    la:extend_assigned(matched)
    assert.are.equal(3, la:assigned_count())
    local new_blocks = assert(m:allocate(2))
    local new_ids = ids_of(new_blocks)
    la:extend_blocks(new_blocks)
    assert.are.equal(2, la:stage(s, 3, 5))
    assert.are.equal(2, la:register(m))
    assert.are.same({ 5, 0, 0 }, counts(la))
    for i, id in ipairs(matched_ids) do assert.are.equal(id, (la:get_assigned(i - 1))) end
    for i, id in ipairs(new_ids) do
      local got, ib = la:get_assigned(3 + i - 1)
      assert.are.equal(id, got)
      assert.are.equal(s:hash(3 + i - 1), ib:hash())
    end
    check(m)
  end)

  it("#84 blocks found by match go in with extend_assigned; an empty list adds 0", function()
    local m = mgr(10)
    local s = seq(3)
    local hashes = s:hashes()
    release_all(register_directly(m, s, 3)) -- populate, then drop
    local matched = m:match(hashes)
    assert.are.equal(3, #matched)
    local la = kvbm.logical()
    assert.are.equal(3, la:extend_assigned(matched))
    for i, h in ipairs(hashes) do assert.are.equal(h, select(2, la:get_assigned(i - 1)):hash()) end
    local empty = kvbm.logical()
    assert.are.equal(0, empty:extend_assigned {})
    assert.is_true(empty:is_empty())
  end)

  it("#85 stage drains unassigned FIFO: min(token blocks, unassigned)", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(3))
    local ids = ids_of(blocks)
    local la = kvbm.logical()
    la:extend_blocks(blocks)
    assert.are.equal(3, la:stage(seq(3)))
    assert.are.same({ 0, 3, 0 }, counts(la))
    for i, id in ipairs(ids) do
      local got, cb = la:get_staged(i - 1)
      assert.are.equal(id, got)
      assert.are.equal(seq(3):hash(i - 1), cb:hash())
    end
    la:clear()
    -- 5 mutables, 3 token blocks
    local five = assert(m:allocate(5))
    local fids = ids_of(five)
    la:extend_blocks(five)
    assert.are.equal(3, la:stage(seq(3)))
    assert.are.same({ 0, 3, 2 }, counts(la))
    assert.are.equal(fids[4], (la:get_unassigned(0)))
    assert.are.equal(fids[5], (la:get_unassigned(1)))
    la:clear()
    -- 2 mutables, 5 token blocks
    la:extend_blocks(assert(m:allocate(2)))
    assert.are.equal(2, la:stage(seq(5)))
    assert.are.same({ 0, 2, 0 }, counts(la))
    la:clear()
    assert.are.equal(10, m:available())
  end)

  it("#86 a block size mismatch hands the failed block back; nothing else staged", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(3))
    local first = blocks[1]:id()
    local bad = kvbm.sequence(helpers.range(24), 8)
    local la = kvbm.logical()
    la:extend_blocks(blocks)
    local n, err = la:stage(bad)
    assert.is_nil(n)
    assert.are.equal("block_size_mismatch", err.code)
    assert.are.equal(4, err.expected)
    assert.are.equal(8, err.actual)
    assert.are.equal(first, err.block:id())
    assert.are.equal(1, #err.blocks)
    assert.are.equal(err.block, err.blocks[1])
    assert.matches("block_size_mismatch", tostring(err))
    assert.are.same({ 0, 0, 2 }, counts(la))
    assert.is_false(la:contains(first))
    err.block:release() -- recovered: dropping it returns it to the pool
    assert.are.equal(8, m:available())
    check(m)
  end)

  it("#87 partial staging, then a mismatch: the staged blocks stay staged", function()
    local m = mgr(10)
    local la = kvbm.logical()
    la:extend_blocks(assert(m:allocate(3)))
    assert.are.equal(2, la:stage(seq(2)))
    assert.are.same({ 0, 2, 1 }, counts(la))
    local n, err = la:stage(kvbm.sequence(helpers.range(8), 8))
    assert.is_nil(n)
    assert.are.equal("block_size_mismatch", err.code)
    assert.are.same({ 0, 2, 0 }, counts(la))
    release_all(err.blocks)
    la:clear()
    assert.are.equal(10, m:available())
  end)

  it("#88 register moves every staged block to assigned in order; nothing staged gives 0", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(3))
    local ids = ids_of(blocks)
    local la = kvbm.logical()
    la:extend_blocks(blocks)
    la:stage(seq(3))
    assert.are.equal(3, la:register(m))
    assert.are.same({ 3, 0, 0 }, counts(la))
    for i, id in ipairs(ids) do
      local got, ib = la:get_assigned(i - 1)
      assert.are.equal(id, got)
      assert.are.equal(id, ib:id())
    end
    assert.are.equal(0, kvbm.logical():register(m))
  end)

  it("#89 full pipeline of 5, and an incremental one (stage indexes its slice from 0)", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(5))
    local ids = ids_of(blocks)
    local s = seq(5)
    local la = kvbm.logical()
    la:extend_blocks(blocks)
    assert.are.equal(5, la:unassigned_count())
    la:stage(s)
    assert.are.same({ 0, 5, 0 }, counts(la))
    la:register(m)
    assert.are.same({ 5, 0, 0 }, counts(la))
    for i, id in ipairs(ids) do
      local got, ib = la:get_assigned(i - 1)
      assert.are.equal(id, got)
      assert.are.equal(s:hash(i - 1), ib:hash())
    end
    la:clear()
    -- incremental: the second round pairs with token blocks 0..3 again
    -- ([observed quirk]: stage pairs with the slice it is given)
    local six = assert(m:allocate(6))
    local ids6 = ids_of(six)
    local s6 = seq(6)
    local inc = kvbm.logical()
    inc:extend_blocks(six)
    inc:stage(s6, 0, 3)
    inc:register(m)
    assert.are.same({ 3, 0, 3 }, counts(inc))
    inc:stage(s6, 0, 3)
    inc:register(m)
    assert.are.same({ 6, 0, 0 }, counts(inc))
    for i, id in ipairs(ids6) do assert.are.equal(id, (inc:get_assigned(i - 1))) end
    assert.are.equal(s6:hash(0), select(2, inc:get_assigned(3)):hash())
    check(m)
  end)

  it("#90 contains looks in all three collections", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(6))
    local ids = ids_of(blocks)
    local s = seq(4)
    local la = kvbm.logical()
    la:extend_blocks(blocks)
    la:stage(s, 0, 2)
    la:register(m)
    la:stage(s, 0, 2)
    assert.are.same({ 2, 2, 2 }, counts(la))
    for _, id in ipairs(ids) do assert.is_true(la:contains(id)) end
    assert.is_false(la:contains(999))
    assert.is_true(la:contains_assigned(ids[1]))
    assert.is_true(la:contains_staged(ids[3]))
    assert.is_true(la:contains_unassigned(ids[6]))
    assert.is_false(la:contains_assigned(ids[6]))
  end)

  it("#91 clear empties everything; take_* drain one collection in order", function()
    local m = mgr(10)
    local function pipeline(stage, register)
      local blocks = assert(m:allocate(3))
      local ids = ids_of(blocks)
      local la = kvbm.logical()
      la:extend_blocks(blocks)
      if stage then la:stage(seq(3)) end
      if register then la:register(m) end
      return la, ids
    end
    local la = pipeline(true, true)
    assert.are.equal(3, la:assigned_count())
    la:clear()
    assert.is_true(la:is_empty())
    assert.are.equal(10, m:available())

    for _, case in ipairs {
      { "take_assigned", true, true, "assigned_count", "kvbm.ImmutableBlock" },
      { "take_staged", true, false, "staged_count", "kvbm.CompleteBlock" },
      { "take_unassigned", false, false, "unassigned_count", "kvbm.MutableBlock" },
    } do
      local l, ids = pipeline(case[2], case[3])
      local drained = l[case[1]](l)
      assert.are.equal(3, #drained)
      assert.are.equal(0, l[case[4]](l))
      for i, pair in ipairs(drained) do
        assert.are.equal(ids[i], pair[1])
        assert.are.equal(case[5], getmetatable(pair[2]).__name)
        assert.is_false(l:contains(pair[1]))
        pair[2]:release()
      end
      assert.is_true(l:is_empty())
    end
    assert.are.equal(10, m:available())
    check(m)
  end)

  it("#92 duplicates: extend_assigned is atomic and hands every block back", function()
    local m = mgr(10)
    local s = seq(3)
    local imm = register_directly(m, s, 3)
    local clones = {}
    for i, b in ipairs(imm) do clones[i] = b:clone() end
    local la = kvbm.logical()
    la:extend_assigned(imm)
    local n, err = la:extend_assigned(clones)
    assert.is_nil(n)
    assert.are.equal("duplicate_assigned_block_id", err.code)
    assert.are.equal(imm[1]:id(), err.block_id)
    assert.are.equal(3, #err.blocks)
    for i = 1, 3 do assert.are.equal(clones[i], err.blocks[i]) end
    assert.matches("duplicate block_id " .. imm[1]:id() .. " already present", tostring(err))
    assert.are.equal(3, la:assigned_count())

    -- the same block twice in one batch
    local one = register_directly(m, seq(1), 1)[1]
    local batch = { one, one:clone() }
    local la2 = kvbm.logical()
    n, err = la2:extend_assigned(batch)
    assert.is_nil(n)
    assert.are.equal("duplicate_assigned_block_id", err.code)
    assert.are.equal(one:id(), err.block_id)
    assert.are.equal(2, #err.blocks)
    assert.is_true(la2:is_empty())

    -- ids disjoint from staged and from unassigned go in
    local la3 = kvbm.logical()
    local m3 = mgr(10)
    la3:extend_blocks(assert(m3:allocate(3)))
    la3:stage(s)
    assert.are.equal(3, la3:extend_assigned(register_directly(m3, s, 3)))
    assert.are.same({ 3, 3, 0 }, counts(la3))
    local la4 = kvbm.logical()
    la4:extend_blocks(assert(m3:allocate(3)))
    assert.are.equal(1, la4:extend_assigned(register_directly(m3, s, 1)))
  end)

  it("#93 stage with nothing to pair: no unassigned, an empty range, both", function()
    local m = mgr(10)
    local empty = kvbm.logical()
    assert.are.equal(0, empty:stage(seq(3)))
    assert.are.equal(0, empty:staged_count())
    local la = kvbm.logical()
    la:extend_blocks(assert(m:allocate(3)))
    assert.are.equal(0, la:stage(seq(3), 0, 0))
    assert.are.same({ 0, 0, 3 }, counts(la))
    assert.are.equal(0, la:stage(seq(0)))
    local both = kvbm.logical()
    assert.are.equal(0, both:stage(seq(0)))
    assert.is_true(both:is_empty())
  end)

  it("#94 get_* out of bounds gives nil", function()
    local la = kvbm.logical()
    for _, f in ipairs { "get_assigned", "get_staged", "get_unassigned" } do
      assert.is_nil(la[f](la, 0))
      assert.is_nil(la[f](la, 100))
      assert.is_nil(la[f](la, -1))
    end
    local m = mgr(10)
    la:extend_blocks(assert(m:allocate(2)))
    la:stage(seq(2))
    la:register(m)
    assert.is_not_nil(la:get_assigned(0))
    assert.is_not_nil(la:get_assigned(1))
    assert.is_nil(la:get_assigned(2))
    assert.is_nil(la:get_staged(0))
    assert.is_nil(la:get_unassigned(0))
  end)

  it("#95 tostring names LogicalBlockAssignments and its counts", function()
    local la = kvbm.logical()
    assert.are.equal("LogicalBlockAssignments { assigned_count: 0, staged_count: 0, unassigned_count: 0 }",
      tostring(la))
    local m = mgr(10)
    la:extend_blocks(assert(m:allocate(3)))
    la:stage(seq(1))
    assert.matches("staged_count: 1, unassigned_count: 2", tostring(la))
  end)
end)

describe("kvbm.logical (Lua)", function()
  it("raises on wrong argument types, changing nothing", function()
    local m = mgr(10)
    local la = kvbm.logical()
    local mb = assert(m:allocate(1))
    la:extend_blocks(mb)
    local ib = register_directly(m, seq(1), 1)[1]
    local bad = {
      function() la:extend_blocks("x") end,
      function() la:extend_blocks { ib } end,
      function() la:extend_blocks { mb[1], 42 } end,
      function() la:extend_assigned(nil) end,
      function() la:extend_assigned { assert(m:allocate(1))[1] } end,
      function() la:stage(nil) end,
      function() la:stage({}) end,
      function() la:stage(seq(2), -1) end,
      function() la:stage(seq(2), 0, 3) end,
      function() la:stage(seq(2), 2, 1) end,
      function() la:stage(seq(2), 0.5) end,
      function() la:register(nil) end,
      function() la:register(la) end,
      function() la:get_assigned("0") end,
      function() la:get_unassigned(1.5) end,
      function() la:contains("1") end,
      function() kvbm.logical(1) end,
    }
    for i, f in ipairs(bad) do assert.has_error(f, nil, "case " .. i) end
    assert.are.same({ 0, 0, 1 }, counts(la))
    assert.has_error(function() la:stage(seq(2), 0, 3) end, "bad argument #2 to 'stage' (range 0, 3 out of the sequence's 2 full blocks)")
    check(m)
  end)

  it("a released guard in the input raises before anything changes", function()
    local m = mgr(10)
    local la = kvbm.logical()
    local blocks = assert(m:allocate(3))
    blocks[2]:release()
    assert.has_error(function() la:extend_blocks(blocks) end, "attempt to use a released or consumed kvbm.MutableBlock")
    assert.is_true(la:is_empty())
    -- a guard released behind the collection's back fails stage, not the queue
    local ok = assert(m:allocate(2))
    la:extend_blocks(ok)
    ok[1]:release()
    assert.has_error(function() la:stage(seq(2)) end)
    assert.are.same({ 0, 0, 2 }, counts(la))
    la:clear()
    release_all(blocks)
    assert.are.equal(10, m:available())
  end)

  it("extend_blocks rejects an id it already holds (blocks of two managers), atomically", function()
    local m1, m2 = mgr(4), mgr(4)
    local la = kvbm.logical()
    la:extend_blocks(assert(m1:allocate(2))) -- ids 0, 1
    local other = assert(m2:allocate(3)) -- ids 0, 1, 2 of another pool
    local n, err = la:extend_blocks { other[3], other[1] }
    assert.is_nil(n)
    assert.are.equal("duplicate_block_id", err.code)
    assert.are.equal(other[1]:id(), err.block_id)
    assert.are.same({ other[3], other[1] }, err.blocks)
    assert.are.same({ 0, 0, 2 }, counts(la))
    -- a repeat inside the input
    n, err = kvbm.logical():extend_blocks { other[2], other[3], other[2] }
    assert.is_nil(n)
    assert.are.equal(other[2]:id(), err.block_id)
    assert.are.equal(3, #err.blocks)
    release_all(other)
    la:clear()
    assert.are.equal(4, m1:available())
    assert.are.equal(4, m2:available())
  end)

  it("register is all or nothing: a block of another manager raises and stays staged", function()
    local m1, m2 = mgr(4), mgr(4)
    local la = kvbm.logical()
    la:extend_blocks(assert(m1:allocate(2)))
    la:stage(seq(2))
    assert.has_error(function() la:register(m2) end)
    assert.are.same({ 0, 2, 0 }, counts(la))
    assert.are.equal(2, la:register(m1))
    assert.are.same({ 2, 0, 0 }, counts(la))
    check(m1)
    check(m2)
  end)

  it("pop_last_unassigned is LIFO and hands the guard to the caller", function()
    local m = mgr(10)
    local la = kvbm.logical()
    local blocks = assert(m:allocate(3))
    local ids = ids_of(blocks)
    la:extend_blocks(blocks)
    local id, g = la:pop_last_unassigned()
    assert.are.equal(ids[3], id)
    assert.are.equal(ids[3], g:id())
    assert.is_false(la:contains(id))
    assert.are.equal(7, m:available())
    g:release()
    assert.are.equal(8, m:available())
    la:pop_last_unassigned()
    la:pop_last_unassigned()
    assert.is_nil(la:pop_last_unassigned())
    assert.is_true(la:is_empty())
    -- the queue keeps working after being emptied
    la:extend_blocks(assert(m:allocate(1)))
    assert.are.equal(1, la:unassigned_count())
  end)

  it("all_block_ids and the iterators follow lifecycle order", function()
    local m = mgr(10)
    local la = kvbm.logical()
    local blocks = assert(m:allocate(6))
    local ids = ids_of(blocks)
    la:extend_blocks(blocks)
    la:stage(seq(4), 0, 2)
    la:register(m)
    la:stage(seq(4), 2, 4)
    assert.are.same(ids, la:all_block_ids())
    local seen = {}
    for _, it in ipairs { la:assigned_iter(), la:staged_iter(), la:unassigned_iter() } do
      for id, g in it do
        seen[#seen + 1] = id
        assert.are.equal(id, g:id())
      end
    end
    assert.are.same(ids, seen)
    assert.are.same({}, kvbm.logical():all_block_ids())
  end)

  it("clear and <close> give every block back to the manager", function()
    local m = mgr(10)
    do
      local la <close> = kvbm.logical()
      la:extend_assigned(register_directly(m, seq(2), 2))
      la:extend_blocks(assert(m:allocate(4)))
      la:stage(seq(3), 2, 3)
      assert.are.same({ 2, 1, 3 }, counts(la))
      assert.are.equal(4, m:available())
    end
    assert.are.equal(10, m:available())
    local c = check(m)
    assert.are.equal(0, c.mutable)
    assert.are.equal(0, c.staged)
    -- registered blocks went to the inactive pool and can be matched
    assert.are.equal(2, #m:match(seq(2):hashes()))
  end)

  it("handles thousands of blocks with O(1) queue operations", function()
    local N = 3000
    local m = assert(kvbm.manager { blocks = N, block_size = BS, backend = "lru", registry = kvbm.registry {} })
    local s = seq(N)
    local la = kvbm.logical()
    local blocks = assert(m:allocate(N))
    local last = blocks[N]:id()
    la:extend_blocks(blocks)
    local t0 = os.clock()
    for i = 0, N - 1 do -- one block at a time: N shifts of the FIFO
      assert.are.equal(1, la:stage(s, i, i + 1))
      if i % 2 == 1 then la:register(m) end
    end
    la:register(m)
    assert.is_true(os.clock() - t0 < 10)
    assert.are.same({ N, 0, 0 }, counts(la))
    assert.are.equal(last, (la:get_assigned(N - 1)))
    assert.are.equal(s:hash(N - 1), select(2, la:get_assigned(N - 1)):hash())
    la:clear()
    assert.are.equal(N, m:available())
    check(m)
  end)

  it("leaves no C memory behind over a full lifecycle", function()
    helpers.assert_no_leaks(function()
      local m = mgr(8)
      local s = seq(6)
      local la = kvbm.logical()
      la:extend_assigned(register_directly(m, s, 2))
      la:extend_blocks(assert(m:allocate(5)))
      la:stage(s, 2, 6)
      la:register(m)
      local _, err = la:stage(kvbm.sequence(helpers.range(8), 8))
      release_all(err.blocks)
      la:clear()
      assert.are.equal(8, m:available())
      check(m)
    end)
  end)
end)
