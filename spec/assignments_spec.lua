-- kvbm.assignments: ExternalBlockAssignments from Lua (catalogue §3.7,
-- scenarios 27-79), the onboarding example of §2.4, every error variant,
-- and bad input raising with the state intact.
local kvbm = require "kvbm"
local helpers = require "helpers"

-- seq(n, r): tokens 0..4n+r, block size 4, salt nil
local function seq(n, r) return kvbm.sequence(helpers.range(4 * n + (r or 0)), 4) end

-- appends tokens first..last (inclusive); returns the block count
local function append(s, first, last)
  s:extend(helpers.range(last - first + 1, first))
  return #s
end

local function ids(first, last, step)
  local t = {}
  for id = first, last, step or 100 do t[#t + 1] = id end
  return t
end

local function new(offset, list)
  local a = kvbm.assignments(offset)
  if list then assert(a:extend_block_ids(list)) end
  return a
end

local function pack(...) return { ... } end

-- assigned index i (from `from`) holds (list[k], s:hash(pos0 + k - 1))
local function assert_assigned(a, s, from, list, pos0)
  for k, id in ipairs(list) do
    local got_id, got_h = a:get_assigned(from + k - 1)
    assert.are.equal(id, got_id, "id at assigned index " .. (from + k - 1))
    assert.are.equal(s:hash(pos0 + k - 1), got_h, "hash at assigned index " .. (from + k - 1))
  end
end

local function state(a)
  return { a:assigned(), a:staged(), a:unassigned(), a:offset(), a:next_position() }
end

describe("kvbm.assignments", function()
  describe("assign_pending (27-51)", function()
    it("27: nothing to assign gives 0..0", function()
      for _, s in ipairs { seq(0, 0), seq(1, 0) } do
        local a = new(0)
        assert.are.same({ 0, 0 }, pack(a:assign_pending(s)))
        assert.are.equal(0, a:assigned_count())
        assert.are.equal(0, a:unassigned_count())
      end
    end)

    it("28: one id on one block", function()
      local s, a = seq(1, 0), new(0, { 100 })
      assert.are.same({ 0, 1 }, pack(a:assign_pending(s)))
      assert.are.same(pack(100, s:hash(0)), pack(a:get_assigned(0)))
    end)

    it("29: more ids than blocks leave the rest waiting", function()
      local s, a = seq(1, 0), new(0, { 100, 200 })
      assert.are.same({ 0, 1 }, pack(a:assign_pending(s)))
      assert.are.same({ 200 }, a:unassigned())
    end)

    it("30: three ids on three blocks", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      assert.are.same({ 0, 3 }, pack(a:assign_pending(s)))
      for i = 0, 2 do assert.are.same(pack((i + 1) * 100, s:hash(i)), pack(a:get_assigned(i))) end
      assert.are.equal(0, a:unassigned_count())
    end)

    it("31: fewer ids than blocks", function()
      local s, a = seq(3, 0), new(0, { 100 })
      assert.are.same({ 0, 1 }, pack(a:assign_pending(s)))
      assert.are.equal(0, a:unassigned_count())
    end)

    it("32: five ids on three blocks", function()
      local s, a = seq(3, 0), new(0, ids(100, 500))
      assert.are.same({ 0, 3 }, pack(a:assign_pending(s)))
      assert.are.same({ 400, 500 }, a:unassigned())
    end)

    it("33: partial blocks are never assigned", function()
      assert.are.same({ 0, 0 }, pack(new(0):assign_pending(seq(0, 2))))
      local s, a = seq(2, 1), new(0, { 100, 200 })
      assert.are.same({ 0, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ { 100, s:hash(0) }, { 200, s:hash(1) } }, a:assigned())
    end)

    it("34: partial tails with more or fewer ids", function()
      local s, a = seq(2, 3), new(0, ids(100, 400))
      assert.are.same({ 0, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ 300, 400 }, a:unassigned())
      assert.are.same({ 0, 1 }, pack(new(0, { 100 }):assign_pending(seq(3, 2))))
    end)

    it("35: incremental ids re-send the full list", function()
      local s, a = seq(4, 0), new(0, { 100, 200 })
      assert.are.same({ 0, 2 }, pack(a:assign_pending(s)))
      assert.is_true(a:extend_block_ids(ids(100, 400)))
      assert.are.same({ 2, 4 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 0, ids(100, 400), 0)
    end)

    it("36: a second round assigns only what fits", function()
      local s, a = seq(3, 0), new(0, { 100, 200 })
      a:assign_pending(s)
      a:extend_block_ids(ids(100, 500))
      assert.are.same({ 2, 3 }, pack(a:assign_pending(s)))
      assert.are.same(pack(300, s:hash(2)), pack(a:get_assigned(2)))
      assert.are.same({ 400, 500 }, a:unassigned())
    end)

    it("37: seq(2,1) in two rounds", function()
      local s, a = seq(2, 1), new(0, { 100 })
      assert.are.same({ 0, 1 }, pack(a:assign_pending(s)))
      a:extend_block_ids(ids(100, 400))
      assert.are.same({ 1, 2 }, pack(a:assign_pending(s)))
      assert.are.same(pack(200, s:hash(1)), pack(a:get_assigned(1)))
      assert.are.same({ 300, 400 }, a:unassigned())
    end)

    it("38: no blocks left for new ids", function()
      local s, a = seq(2, 0), new(0, { 100, 200 })
      a:assign_pending(s)
      a:extend_block_ids(ids(100, 400))
      assert.are.same({ 2, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ 300, 400 }, a:unassigned())
    end)

    it("39: no full blocks at all", function()
      local a = new(0, ids(100, 300))
      assert.are.same({ 0, 0 }, pack(a:assign_pending(seq(0, 0))))
      assert.are.same({ 100, 200, 300 }, a:unassigned())
      a = new(0, { 100, 200 })
      assert.are.same({ 0, 0 }, pack(a:assign_pending(seq(0, 3))))
      assert.are.same({ 100, 200 }, a:unassigned())
    end)

    it("40: ten ids on ten blocks", function()
      local s, a = seq(10, 0), new(0, ids(100, 1000))
      assert.are.same({ 0, 10 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 0, ids(100, 1000), 0)
    end)

    it("41: ids keep their given order", function()
      local s, a = seq(5, 0), new(0, { 999, 888, 777, 666, 555 })
      assert.are.same({ 0, 5 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 0, { 999, 888, 777, 666, 555 }, 0)
    end)

    it("42: cartesian blocks x partial x id counts", function()
      for _, b in ipairs { 0, 1, 3, 5 } do
        for _, r in ipairs { 0, 1, 3 } do
          local s = seq(b, r)
          assert.are.same({ 0, 0 }, pack(new(0):assign_pending(s)))
          if b > 1 then
            local half = b // 2
            local a = new(0, ids(0, half - 1, 1))
            assert.are.same({ 0, half }, pack(a:assign_pending(s)))
            assert_assigned(a, s, 0, ids(0, half - 1, 1), 0)
          end
          if b > 0 then
            local a = new(0, ids(0, b - 1, 1))
            assert.are.same({ 0, b }, pack(a:assign_pending(s)))
            assert.are.equal(0, a:unassigned_count())
          end
          local a = new(0, ids(0, b + 2, 1))
          assert.are.same({ 0, b }, pack(a:assign_pending(s)))
          assert.are.same(ids(b, b + 2, 1), a:unassigned())
        end
      end
    end)

    it("43: FIFO: waiting ids go first", function()
      local s, a = seq(5, 0), new(0, ids(100, 700))
      assert.are.same({ 0, 5 }, pack(a:assign_pending(s)))
      assert.are.same({ 600, 700 }, a:unassigned())
      assert.are.equal(7, append(s, 20, 27))
      a:extend_block_ids(ids(100, 900))
      assert.are.same({ 5, 7 }, pack(a:assign_pending(s)))
      assert.are.equal(600, (a:get_assigned(5)))
      assert.are.equal(700, (a:get_assigned(6)))
      assert.are.same({ 800, 900 }, a:unassigned())
    end)

    it("44: new blocks drain the waiting id, then the new ones", function()
      local s, a = seq(3, 0), new(0, ids(100, 400))
      a:assign_pending(s)
      assert.are.same({ 400 }, a:unassigned())
      assert.are.equal(6, append(s, 12, 23))
      a:extend_block_ids(ids(100, 600))
      assert.are.same({ 3, 6 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 3, { 400, 500, 600 }, 3)
      assert.are.equal(0, a:unassigned_count())
    end)

    it("45: more ids without new blocks", function()
      local s, a = seq(2, 0), new(0, ids(100, 400))
      a:assign_pending(s)
      a:extend_block_ids(ids(100, 600))
      assert.are.same({ 2, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ 300, 400, 500, 600 }, a:unassigned())
    end)

    it("46: one new block takes the oldest waiting id", function()
      local s, a = seq(3, 0), new(0, ids(100, 500))
      a:assign_pending(s)
      assert.are.equal(4, append(s, 12, 15))
      a:extend_block_ids(ids(100, 800))
      assert.are.same({ 3, 4 }, pack(a:assign_pending(s)))
      assert.are.equal(400, (a:get_assigned(3)))
      assert.are.same({ 500, 600, 700, 800 }, a:unassigned())
    end)

    it("47: rounds of ids, then blocks", function()
      local s, a = seq(2, 0), new(0, ids(100, 400))
      a:assign_pending(s)
      assert.are.same({ 300, 400 }, a:unassigned())
      a:extend_block_ids(ids(100, 600))
      assert.are.same(ids(300, 600), a:unassigned())
      a:extend_block_ids(ids(100, 700))
      assert.are.same(ids(300, 700), a:unassigned())
      assert.are.equal(5, append(s, 8, 19))
      assert.are.same({ 2, 5 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 2, { 300, 400, 500 }, 2)
      assert.are.same({ 600, 700 }, a:unassigned())
    end)

    it("48: a long queue drains block by block", function()
      local s, a = seq(1, 0), new(0, ids(10, 60, 10))
      a:assign_pending(s)
      assert.are.same({ { 10, s:hash(0) } }, a:assigned())
      assert.are.same(ids(20, 60, 10), a:unassigned())
      append(s, 4, 11)
      assert.are.same({ 1, 3 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 1, { 20, 30 }, 1)
      assert.are.same({ 40, 50, 60 }, a:unassigned())
      append(s, 12, 15)
      a:extend_block_ids(ids(10, 70, 10))
      assert.are.same({ 3, 4 }, pack(a:assign_pending(s)))
      assert.are.equal(40, (a:get_assigned(3)))
      assert.are.same({ 50, 60, 70 }, a:unassigned())
    end)

    it("49: completing the partial block", function()
      local s, a = seq(2, 2), new(0, ids(100, 400))
      a:assign_pending(s)
      assert.are.equal(3, append(s, 10, 11))
      a:extend_block_ids(ids(100, 500))
      assert.are.same({ 2, 3 }, pack(a:assign_pending(s)))
      assert.are.equal(300, (a:get_assigned(2)))
      assert.are.same({ 400, 500 }, a:unassigned())
    end)

    it("50: three new blocks drain three waiting ids", function()
      local s, a = seq(2, 0), new(0, ids(100, 500))
      a:assign_pending(s)
      assert.are.same({ 300, 400, 500 }, a:unassigned())
      append(s, 8, 19)
      assert.are.same({ 2, 5 }, pack(a:assign_pending(s)))
      assert.are.equal(0, a:unassigned_count())
    end)

    it("51: a new block and a new id", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      append(s, 12, 15)
      a:extend_block_ids(ids(100, 400))
      assert.are.same({ 3, 4 }, pack(a:assign_pending(s)))
      assert.are.equal(400, (a:get_assigned(3)))
    end)
  end)

  describe("ordering, offsets and queries (52-65)", function()
    it("52: a known id after a new one is an ordering violation", function()
      local s, a = seq(3, 0), new(0, { 100 })
      a:assign_pending(s)
      local ok, err = a:extend_block_ids { 200, 100 }
      assert.is_nil(ok)
      assert.are.equal("ordering_violation", err.code)
      assert.are.equal(100, err.known_id)
      assert.are.equal(200, err.new_id)
      assert.are.equal(1, err.known_index)
      assert.are.equal(0, err.first_new_index)
      assert.are.equal(
        "ordering violation: known block_id 100 at index 1 appeared after new block_id 200 at index 0",
        err.message)
      assert.are.equal("ordering_violation: " .. err.message, tostring(err))
      assert.are.equal(1, a:assigned_count())
      assert.are.equal(0, a:unassigned_count())
      assert.is_false(a:contains(200))
    end)

    it("53: the state stays as it was", function()
      local s, a = seq(5, 0), new(0, { 100, 200 })
      a:assign_pending(s)
      assert.is_nil((a:extend_block_ids { 300, 100 }))
      assert.are.same({ { 100, s:hash(0) }, { 200, s:hash(1) } }, a:assigned())
      assert.are.equal(0, a:unassigned_count())
    end)

    it("54: re-sending the same ids is a no-op", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.is_true(a:extend_block_ids(ids(100, 300)))
      assert.are.same({ 3, 3 }, pack(a:assign_pending(s)))
    end)

    it("55: assigning again changes nothing", function()
      local s, a = seq(2, 0), new(0, ids(100, 400))
      assert.are.same({ 0, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ 2, 2 }, pack(a:assign_pending(s)))
      assert.are.same({ 300, 400 }, a:unassigned())
    end)

    it("56: a shorter slice never shrinks what is assigned", function()
      local s, a = seq(5, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.are.same({ 3, 3 }, pack(a:assign_pending(s, 2)))
      local short = { s:hash(0), s:hash(1) }
      assert.are.same({ 3, 3 }, pack(a:assign_pending(short)))
      assert.are.equal(3, a:assigned_count())
      assert_assigned(a, s, 0, ids(100, 300), 0)
    end)

    it("57: offset 5", function()
      local s, a = seq(10, 0), new(5)
      assert.are.equal(5, a:offset())
      assert.are.equal(5, a:next_position())
      a:extend_block_ids(ids(100, 300))
      assert.are.same({ 0, 3 }, pack(a:assign_pending(s)))
      assert.are.equal(8, a:next_position())
      assert_assigned(a, s, 0, ids(100, 300), 5)
    end)

    it("58: offset 5 on 8 blocks", function()
      local s, a = seq(8, 0), new(5, ids(100, 500))
      assert.are.same({ 0, 3 }, pack(a:assign_pending(s)))
      assert.are.equal(s:hash(5), select(2, a:get_assigned(0)))
      assert.are.same({ 400, 500 }, a:unassigned())
    end)

    it("59: two instances share one sequence", function()
      local s = seq(10, 0)
      local a, b = new(0, { 10, 20, 30 }), new(5, { 110, 120, 130 })
      assert.are.same({ 0, 3 }, pack(a:assign_pending(s)))
      assert.are.same({ 0, 3 }, pack(b:assign_pending(s)))
      assert_assigned(a, s, 0, { 10, 20, 30 }, 0)
      assert_assigned(b, s, 0, { 110, 120, 130 }, 5)
    end)

    it("60: a waiting id gets the completed partial block", function()
      local s, a = seq(2, 2), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.are.equal(2, a:assigned_count())
      assert.are.same({ 300 }, a:unassigned())
      append(s, 10, 11)
      assert.are.same({ 2, 3 }, pack(a:assign_pending(s)))
      assert.are.equal(300, (a:get_assigned(2)))
    end)

    it("61: extend_tokens then assign", function()
      local s, a = seq(1, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.are.equal(1, a:assigned_count())
      assert.is_not_nil(s:extend(helpers.range(8, 4)))
      assert.are.equal(3, #s)
      assert.are.same({ 1, 3 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 1, { 200, 300 }, 1)
    end)

    it("62: clear keeps the offset", function()
      local s, a = seq(5, 0), new(3, ids(100, 300))
      a:assign_pending(s)
      assert.are.equal(2, a:assigned_count())
      assert.are.equal(1, a:unassigned_count())
      a:clear()
      assert.are.equal(3, a:offset())
      assert.are.same({ 0, 0, 0 }, { a:assigned_count(), a:staged_count(), a:unassigned_count() })
      assert.are.equal(3, a:next_position())
      assert.is_true(a:is_empty())
      assert.is_false(a:contains(100))
    end)

    it("63: offset 1", function()
      local s, a = seq(3, 0), new(1, { 100, 200 })
      assert.are.same({ 0, 2 }, pack(a:assign_pending(s)))
      assert_assigned(a, s, 0, { 100, 200 }, 1)
    end)

    it("64: contains", function()
      local s, a = seq(2, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.is_true(a:contains(100))
      assert.is_true(a:contains(200))
      assert.is_true(a:contains(300))
      assert.is_false(a:contains(400))
      assert.is_false(a:contains(-1))
    end)

    it("65: assigned in order", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      a:assign_pending(s)
      assert.are.same({ { 100, s:hash(0) }, { 200, s:hash(1) }, { 300, s:hash(2) } }, a:assigned())
    end)
  end)

  it("66: BlockSequence basics", function()
    local s = kvbm.sequence(helpers.range(8), 4)
    assert.are.same({ 2, 4, 8 }, { #s, s:block_size(), s:total_tokens() })
    assert.are.same({ s:hash(0), s:hash(1) }, s:hashes())
    s = kvbm.sequence(helpers.range(4), 4)
    assert.are.same({ 1, 2 }, pack(s:extend(helpers.range(6, 4))))
    assert.are.same({ 2, 10 }, { #s, s:total_tokens() })
    assert.are.equal(0, kvbm.sequence({ 0, 1, 2 }, 4):append(3))
    assert.are_not.equal(kvbm.sequence(helpers.range(4), 4):hash(0), kvbm.sequence(helpers.range(4), 4, 42):hash(0))
  end)

  describe("positions and zips (67-72)", function()
    it("67: position ranges", function()
      local a = new(0)
      assert.are.same({ 0, 0 }, pack(a:assigned_positions()))
      assert.are.same({ 0, 0 }, pack(a:pending_positions()))
      a = new(3, { 100, 200 })
      a:assign_pending(seq(10, 0))
      assert.are.same({ 3, 5 }, pack(a:assigned_positions()))
      a = new(0, ids(100, 400))
      a:assign_pending(seq(2, 0))
      assert.are.same({ 2, 4 }, pack(a:pending_positions()))
      a = new(5, ids(100, 400))
      a:assign_pending(seq(10, 0))
      assert.are.same({ 5, 9 }, pack(a:assigned_positions()))
      assert.are.same({ 9, 9 }, pack(a:pending_positions()))
    end)

    it("68: get_at_position", function()
      local s = seq(5, 0)
      local a = new(2, ids(100, 300))
      a:assign_pending(s)
      assert.are.same(pack(100, s:hash(2)), pack(a:get_at_position(2)))
      assert.are.same(pack(300, s:hash(4)), pack(a:get_at_position(4)))
      a = new(2, { 100, 200 })
      a:assign_pending(s)
      for _, p in ipairs { 0, 1, 4, 100, -1 } do assert.is_nil(a:get_at_position(p)) end
    end)

    it("69: get_pending_at_position", function()
      local s = seq(2, 0)
      local a = new(0, ids(100, 500))
      a:assign_pending(s)
      assert.are.equal(300, a:get_pending_at_position(2))
      assert.are.equal(400, a:get_pending_at_position(3))
      assert.are.equal(500, a:get_pending_at_position(4))
      a = new(0, ids(100, 400))
      a:assign_pending(s)
      for _, p in ipairs { 0, 1, 4, 100, -1 } do assert.is_nil(a:get_pending_at_position(p)) end
    end)

    it("70: zip_assigned", function()
      local s = seq(5, 0)
      local a, b = new(0, { 10, 20, 30 }), new(0, { 110, 120, 130 })
      a:assign_pending(s)
      b:assign_pending(s)
      assert.are.same({ { 0, 10, 110 }, { 1, 20, 120 }, { 2, 30, 130 } }, kvbm.zip_assigned(a, b))
      s = seq(10, 0)
      a, b = new(0, ids(10, 40, 10)), new(2, ids(110, 130, 10))
      a:assign_pending(s)
      b:assign_pending(s)
      assert.are.same({ { 2, 30, 110 }, { 3, 40, 120 } }, kvbm.zip_assigned(a, b))
      a, b = new(0, { 10, 20 }), new(5, { 110, 120 })
      a:assign_pending(s)
      b:assign_pending(s)
      assert.are.same({}, kvbm.zip_assigned(a, b))
      local e1, e2 = new(0), new(0)
      assert.are.same({}, kvbm.zip_assigned(a, e1))
      assert.are.same({}, kvbm.zip_assigned(e1, a))
      assert.are.same({}, kvbm.zip_assigned(e1, e2))
    end)

    it("71: zip_assigned_pending", function()
      local s = seq(5, 0)
      local src, dst = new(2, { 10, 20, 30 }), new(0, ids(110, 150, 10))
      src:assign_pending(s)
      dst:assign_pending(s, 2)
      assert.are.same({ { 2, 10, 130 }, { 3, 20, 140 }, { 4, 30, 150 } }, kvbm.zip_assigned_pending(src, dst))
      s = seq(10, 0)
      src, dst = new(2, ids(10, 40, 10)), new(0, ids(110, 150, 10))
      src:assign_pending(s)
      dst:assign_pending(s, 3)
      assert.are.same({ { 3, 20, 140 }, { 4, 30, 150 } }, kvbm.zip_assigned_pending(src, dst))
      src, dst = new(0, { 10, 20 }), new(0, ids(110, 170, 10))
      src:assign_pending(s)
      dst:assign_pending(s, 5)
      assert.are.same({ 5, 7 }, pack(dst:pending_positions()))
      assert.are.same({}, kvbm.zip_assigned_pending(src, dst))
      assert.are.same({}, kvbm.zip_assigned_pending(new(0), dst))
      local full = new(0, { 1, 2, 3 })
      full:assign_pending(s)
      assert.are.same({}, kvbm.zip_assigned_pending(dst, full))
    end)

    it("72: onboarding G2 -> G1", function()
      local s = seq(5, 0)
      local g1, g2 = new(0, { 1000, 1001 }), new(2, { 2002, 2003, 2004 })
      g1:assign_pending(s)
      g2:assign_pending(s)
      assert.are.same({ 0, 2 }, pack(g1:assigned_positions()))
      assert.are.same({ 2, 5 }, pack(g2:assigned_positions()))
      g1:extend_block_ids(ids(1000, 1004, 1))
      assert.are.same({ 2, 3 }, { g1:assigned_count(), g1:unassigned_count() })
      assert.are.same({ 2, 5 }, pack(g1:pending_positions()))
      local plan = { { 2, 2002, 1002 }, { 3, 2003, 1003 }, { 4, 2004, 1004 } }
      assert.are.same(plan, kvbm.zip_assigned_pending(g2, g1))
      g1:assign_pending(s)
      assert.are.equal(5, g1:assigned_count())
      assert.are.same({ 0, 5 }, pack(g1:assigned_positions()))
      assert.are.same(plan, kvbm.zip_assigned(g2, g1))
    end)
  end)

  describe("staging (73-79)", function()
    it("73: stage_pending and commit_staged", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      assert.are.same({ 0, 3 }, pack(a:stage_pending(s)))
      assert.are.same({ 3, 0 }, { a:staged_count(), a:assigned_count() })
      for i = 0, 2 do assert.are.same(pack((i + 1) * 100, s:hash(i)), pack(a:get_staged(i))) end
      assert.is_nil(a:get_staged(3))
      assert.are.same({ 0, 3 }, pack(a:commit_staged()))

      a = new(0, ids(100, 500))
      assert.are.same({ 0, 2 }, pack(a:stage_pending(seq(2, 0))))
      assert.are.equal(3, a:unassigned_count())

      s, a = seq(5, 0), new(0, ids(100, 500))
      assert.are.same({ 0, 3 }, pack(a:stage_pending(s, 3)))
      assert.are.equal(2, a:unassigned_count())
      assert.are.same({ 0, 3 }, pack(a:commit_staged()))
      assert.are.same({ 0, 2 }, pack(a:stage_pending(s)))
      assert.are.same({ 3, 5 }, pack(a:commit_staged()))

      a = new(0)
      assert.are.same({ 0, 0 }, pack(a:stage_pending(s)))
      assert.are.same({ 0, 0 }, pack(a:commit_staged()))
    end)

    it("74: staged_positions", function()
      assert.are.same({ 0, 0 }, pack(new(0):staged_positions()))
      local s, a = seq(5, 0), new(0, { 100, 200 })
      a:assign_pending(s)
      a:extend_block_ids(ids(100, 500))
      a:stage_pending(s)
      assert.are.equal(3, a:staged_count())
      assert.are.same({ 2, 5 }, pack(a:staged_positions()))
      assert.are.same({ 0, 2 }, pack(a:assigned_positions()))
      s, a = seq(10, 0), new(3, { 100, 200 })
      a:assign_pending(s)
      a:extend_block_ids(ids(100, 400))
      a:stage_pending(s)
      assert.are.equal(2, a:staged_count())
      assert.are.same({ 5, 7 }, pack(a:staged_positions()))
    end)

    it("75: staged and take_staged", function()
      local s, a = seq(3, 0), new(0, ids(100, 300))
      a:stage_pending(s)
      local want = { { 100, s:hash(0) }, { 200, s:hash(1) }, { 300, s:hash(2) } }
      assert.are.same(want, a:staged())
      assert.are.same(want, a:take_staged())
      assert.are.equal(0, a:staged_count())
      assert.are.same({}, a:staged())
      assert.is_false(a:contains(200))
    end)

    it("76: next_position through the phases", function()
      local s, a = seq(5, 0), new(0, ids(100, 300))
      assert.are.equal(0, a:next_position())
      a:stage_pending(s)
      assert.are.same({ 3, 0 }, { a:next_position(), a:assigned_count() })
      a:commit_staged()
      assert.are.same({ 3, 3 }, { a:next_position(), a:assigned_count() })
      a = new(0, ids(100, 500))
      a:stage_pending(s, 3)
      assert.are.same({ 3, 5 }, pack(a:pending_positions()))
    end)

    it("77: extend_assigned", function()
      local s = seq(5, 0)
      local a = new(0)
      assert.are.equal(3, a:extend_assigned { { 100, s:hash(0) }, { 200, s:hash(1) }, { 300, s:hash(2) } })
      assert.are.equal(3, a:assigned_count())

      a = new(0)
      assert.are.equal(2, a:extend_assigned { { 100, s:hash(0) }, { 200, s:hash(1) } })
      a:extend_block_ids(ids(100, 500))
      a:stage_pending(s)
      a:commit_staged()
      assert.are.equal(5, a:assigned_count())
      assert_assigned(a, s, 0, ids(100, 500), 0)

      a = new(0)
      a:extend_assigned { { 100, s:hash(0) } }
      local ok, err = a:extend_assigned { { 100, s:hash(1) } }
      assert.is_nil(ok)
      assert.are.equal("duplicate_block_id", err.code)
      assert.are.equal(100, err.block_id)
      assert.are.equal("duplicate block_id 100 already present", err.message)
      assert.are.equal("duplicate_block_id: duplicate block_id 100 already present", tostring(err))
      assert.are.equal(1, a:assigned_count())

      assert.are.equal(0, a:extend_assigned {})
    end)

    it("78: contains across the three collections", function()
      local s, a = seq(3, 0), new(0, ids(100, 500))
      a:assign_pending(s, 2)
      a:stage_pending(s)
      assert.are.same({ 2, 1, 2 }, { a:assigned_count(), a:staged_count(), a:unassigned_count() })
      for id = 100, 500, 100 do assert.is_true(a:contains(id)) end
      assert.is_false(a:contains(600))
    end)

    it("79: __tostring is the Rust Debug form", function()
      local text = tostring(kvbm.assignments(5))
      assert.matches("ExternalBlockAssignments", text, 1, true)
      assert.matches("offset", text, 1, true)
      assert.are.equal(
        "ExternalBlockAssignments { assigned_count: 0, staged_count: 0, unassigned_count: 0, offset: 5 }", text)
      local a = new(1, ids(100, 400))
      a:assign_pending(seq(3, 0))
      a:extend_block_ids(ids(100, 400))
      assert.are.equal(
        "ExternalBlockAssignments { assigned_count: 2, staged_count: 0, unassigned_count: 2, offset: 1 }",
        tostring(a))
    end)
  end)

  it("onboarding example of §2.4: copy plan, then the same pairs once assigned", function()
    local s = seq(5, 0)
    local g1 = kvbm.assignments(0)
    local g2 = kvbm.assignments(2)
    assert(g1:extend_block_ids { 1000, 1001 })
    assert.are.same({ 0, 2 }, pack(g1:assign_pending(s)))
    assert(g2:extend_block_ids { 2002, 2003, 2004 })
    assert.are.same({ 0, 3 }, pack(g2:assign_pending(s)))
    -- queue new G1 ids without assigning them: the copy plan
    assert(g1:extend_block_ids { 1000, 1001, 1002, 1003, 1004 })
    local plan = kvbm.zip_assigned_pending(g2, g1)
    assert.are.same({ { 2, 2002, 1002 }, { 3, 2003, 1003 }, { 4, 2004, 1004 } }, plan)
    -- "copy" each planned block, then assign
    for _, step in ipairs(plan) do
      local pos, src_id, dst_id = step[1], step[2], step[3]
      assert.are.equal(src_id, (g2:get_at_position(pos)))
      assert.are.equal(dst_id, g1:get_pending_at_position(pos))
    end
    assert.are.same({ 2, 5 }, pack(g1:assign_pending(s)))
    assert.are.same(plan, kvbm.zip_assigned(g2, g1))
    assert.are.same({}, kvbm.zip_assigned_pending(g2, g1))
  end)

  describe("errors", function()
    it("extend_block_ids: a new id repeated in the input (zinuga)", function()
      local a = new(0, { 100, 200 })
      local before = state(a)
      local ok, err = a:extend_block_ids { 100, 200, 300, 400, 300 }
      assert.is_nil(ok)
      assert.are.equal("duplicate_block_id", err.code)
      assert.are.equal(300, err.block_id)
      assert.are.equal("duplicate block_id 300 already present", err.message)
      assert.are.same(before, state(a))
      assert.is_false(a:contains(300))
      assert.is_false(a:contains(400))
    end)

    it("extend_block_ids: the first error in input order wins", function()
      local a = new(0, { 100 })
      local _, err = a:extend_block_ids { 300, 300, 100 }
      assert.are.equal("duplicate_block_id", err.code)
      _, err = a:extend_block_ids { 300, 100, 300 }
      assert.are.equal("ordering_violation", err.code)
      assert.are.same({ 100, 300, 1, 0 }, { err.known_id, err.new_id, err.known_index, err.first_new_index })
      _, err = a:extend_block_ids { 100, 300, 400, 100 }
      assert.are.same({ 100, 300, 3, 1 }, { err.known_id, err.new_id, err.known_index, err.first_new_index })
      assert.are.equal(
        "ordering violation: known block_id 100 at index 3 appeared after new block_id 300 at index 1",
        err.message)
      assert.are.same({ 100 }, a:unassigned())
    end)

    it("extend_assigned: duplicates against every collection and within the input", function()
      local s = seq(4, 0)
      local a = new(0, { 10, 20, 30 })
      a:stage_pending(s, 1)
      a:extend_assigned { { 5, s:hash(3) } }
      local before = state(a)
      for _, dup in ipairs { 5, 10, 20 } do
        local ok, err = a:extend_assigned { { 7, s:hash(0) }, { dup, s:hash(1) } }
        assert.is_nil(ok)
        assert.are.equal("duplicate_block_id", err.code)
        assert.are.equal(dup, err.block_id)
        assert.are.same(before, state(a))
        assert.is_false(a:contains(7))
      end
      local _, err = a:extend_assigned { { 8, s:hash(0) }, { 9, s:hash(1) }, { 8, s:hash(2) } }
      assert.are.equal(8, err.block_id)
      assert.are.same(before, state(a))
    end)

    it("stage_pending / assign_pending: position mismatch", function()
      local s = seq(6, 0)
      local a = new(0, ids(100, 400))
      a:assign_pending(s, 1)
      local before = state(a)
      local shifted = s:hashes()
      table.remove(shifted, 1) -- blocks[1..]: position 2 sits where 1 is expected
      local ok, err = a:stage_pending(shifted)
      assert.is_nil(ok)
      assert.are.equal("position_mismatch", err.code)
      assert.are.same({ 1, 2, 200 }, { err.expected, err.actual, err.block_id })
      assert.are.equal("position mismatch for block_id 200: expected 1, actual 2", err.message)
      assert.are.equal("position_mismatch: position mismatch for block_id 200: expected 1, actual 2", tostring(err))
      assert.are.same(before, state(a))
      -- a mismatch further in names the pending id it would pair with; atomic
      local mixed = s:hashes()
      mixed[4] = s:hash(5) -- position 3
      _, err = a:assign_pending(mixed)
      assert.are.same({ 3, 5, 400 }, { err.expected, err.actual, err.block_id })
      assert.are.same(before, state(a))
      assert.are.same({ 1, 4 }, pack(a:assign_pending(s)))
    end)
  end)

  describe("bad input raises and leaves the state intact", function()
    local s, a, before
    before_each(function()
      s = seq(4, 0)
      a = new(0, ids(100, 400))
      a:assign_pending(s, 1)
      a:stage_pending(s, 2)
      before = state(a)
    end)
    after_each(function() assert.are.same(before, state(a)) end)

    it("constructor", function()
      assert.has_error(function() kvbm.assignments(-1) end)
      assert.has_error(function() kvbm.assignments(1.5) end)
      assert.has_error(function() kvbm.assignments("3") end)
      assert.has_error(function() kvbm.assignments {} end)
      assert.are.equal(0, kvbm.assignments():offset())
    end)

    it("extend_block_ids", function()
      for _, bad in ipairs {
        { 500, "600" }, { 500, 1.5 }, { 500, -1 }, { 500, true }, { 500, {} },
      } do
        assert.has_error(function() a:extend_block_ids(bad) end)
      end
      assert.has_error(function() a:extend_block_ids() end)
      assert.has_error(function() a:extend_block_ids(500) end)
      assert.has_error(function() a:extend_block_ids("500") end)
      assert.has_error(function() a.extend_block_ids({}, { 1 }) end)
    end)

    it("extend_assigned", function()
      local h = s:hash(0)
      for _, bad in ipairs {
        { { 500, h }, 5 },
        { { 500, h }, { 600 } },
        { { 500, h }, { 600, "short" } },
        { { 500, h }, { 600, 12 } },
        { { 500, h }, { -1, h } },
        { { 500, h }, { "600", h } },
        { { 500, h }, { 600, ("\255"):rep(16) } }, -- mode bits 11
      } do
        assert.has_error(function() a:extend_assigned(bad) end)
      end
      assert.has_error(function() a:extend_assigned() end)
      assert.is_false(a:contains(500))
    end)

    it("stage_pending / assign_pending", function()
      for _, m in ipairs { "stage_pending", "assign_pending" } do
        assert.has_error(function() a[m](a) end)
        assert.has_error(function() a[m](a, "x") end)
        assert.has_error(function() a[m](a, 5) end)
        assert.has_error(function() a[m](a, { s:hash(0), s:hash(1), 7 }) end)
        assert.has_error(function() a[m](a, { s:hash(0), "short" }) end)
        assert.has_error(function() a[m](a, s, -1) end)
        assert.has_error(function() a[m](a, s, 1.5) end)
        assert.has_error(function() a[m](a, s, "2") end)
        assert.has_error(function() a[m](a, kvbm.assignments(0)) end)
      end
    end)

    it("lookups", function()
      for _, m in ipairs { "get_assigned", "get_staged", "get_unassigned", "get_at_position",
        "get_pending_at_position", "contains" } do
        assert.has_error(function() a[m](a, "x") end)
        assert.has_error(function() a[m](a, 1.5) end)
        assert.has_error(function() a[m](a, "1") end)
        assert.has_error(function() a[m](a) end)
      end
      assert.is_nil(a:get_assigned(-1))
      assert.is_nil(a:get_unassigned(99))
    end)

    it("methods on the wrong object, and zips", function()
      assert.has_error(function() a.offset({}) end)
      assert.has_error(function() a.clear(s) end)
      assert.has_error(function() a.take_staged(nil) end)
      assert.has_error(function() kvbm.zip_assigned(a, {}) end)
      assert.has_error(function() kvbm.zip_assigned_pending(nil, a) end)
    end)
  end)

  it("queries on a mixed state", function()
    local s, a = seq(4, 0), new(2, ids(100, 500))
    a:assign_pending(s, 3)
    a:stage_pending(s)
    assert.are.same({ 1, 1, 3 }, { a:assigned_count(), a:staged_count(), a:unassigned_count() })
    assert.are.same({ 2, 3 }, pack(a:assigned_positions()))
    assert.are.same({ 3, 4 }, pack(a:staged_positions()))
    assert.are.same({ 4, 7 }, pack(a:pending_positions()))
    assert.are.same(pack(200, s:hash(3)), pack(a:get_staged(0)))
    assert.are.equal(300, a:get_unassigned(0))
    assert.are.same({ 300, 400, 500 }, a:unassigned())
    assert.are.equal(500, a:pop_unassigned())
    assert.is_false(a:contains(500))
    assert.are.equal(400, a:pop_unassigned())
    assert.are.equal(300, a:pop_unassigned())
    assert.is_nil(a:pop_unassigned())
    assert.is_true(a:extend_block_ids { 100, 200, 500 })
    assert.are.same({ 500 }, a:unassigned())
    assert.is_false(a:is_empty())
    a:clear()
    assert.is_true(a:is_empty())
  end)

  it("gives back every allocation", function()
    helpers.assert_no_leaks(function()
      local s = seq(64, 0)
      local g1, g2 = kvbm.assignments(0), kvbm.assignments(8)
      for round = 1, 8 do
        g1:extend_block_ids(ids(0, round * 8 - 1, 1))
        g1:assign_pending(s, round * 6)
        g2:extend_block_ids(ids(1000, 1000 + round * 7, 1))
        g2:assign_pending(s)
        kvbm.zip_assigned(g1, g2)
        kvbm.zip_assigned_pending(g2, g1)
        g1:extend_block_ids { 5, 3 }
        g2:extend_assigned { { 0, s:hash(0) } }
      end
      g1:stage_pending(s)
      g1:take_staged()
      g2:clear()
      local a = kvbm.assignments(1)
      a:extend_block_ids { 1, 2, 3 }
      pcall(a.extend_block_ids, a, { 4, "x" })
    end)
  end)
end)
