-- kvbm.BlockSet through the manager's set methods: allocate_set, match_set
-- and register_set, whose hashes come from a kvbm.Sequence or from a table
-- of hashes, with an optional first position.
local kvbm = require "kvbm"
local helpers = require "helpers"

local function mgr()
  return assert(kvbm.manager { blocks = 8, block_size = 4, backend = "lru", registry = kvbm.registry() })
end

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, "invariant broken: " .. tostring(msg))
end

describe("kvbm.BlockSet", function()
  local seq = kvbm.sequence(helpers.range(12), 4, 42)
  local hs = { seq:hash(0), seq:hash(1), seq:hash(2) }

  it("register_set takes a table of hashes without a first position", function()
    local m = mgr()
    local set = assert(m:register_set(assert(m:allocate_set(2)), { hs[1], hs[2] }))
    assert.are.equal(2, #set)
    assert.are.equal(hs[1], set:hash(1))
    assert.are.equal(hs[2], set:hash(2))
    set:release()
    check(m)
  end)

  it("register_set takes a table of hashes from a first position", function()
    local m = mgr()
    local set = assert(m:register_set(assert(m:allocate_set(2)), hs, 1))
    assert.are.same({ hs[2], hs[3] }, { set:hash(1), set:hash(2) })
    set:release()
    check(m)
  end)

  it("register_set takes a sequence, and match_set finds what it registered", function()
    local m = mgr()
    local set = assert(m:register_set(assert(m:allocate_set(3)), seq))
    local found = m:match_set(seq)
    assert.are.equal(3, #found)
    assert.are.same(set:ids(), found:ids())
    found:release()
    set:release()
    check(m)
  end)

  it("register_set refuses too few hashes and changes nothing", function()
    local m = mgr()
    local mutable = assert(m:allocate_set(2))
    assert.error_matches(function() m:register_set(mutable, { hs[1] }) end, "not enough hashes")
    assert.error_matches(function() m:register_set(mutable, hs, 2) end, "not enough hashes")
    assert.are.equal(2, #mutable)
    mutable:release()
    assert.are.equal(8, m:available())
    check(m)
  end)

  it("append moves blocks past a set's first room, in order, and frees what it grew when collected", function()
    local function cycle(m) -- drops a grown set without releasing it
      local set = assert(m:register_set(assert(m:allocate_set(1)), hs)) -- room for one
      local more = assert(m:register_set(assert(m:allocate_set(2)), hs, 1))
      local ids = { set:id(1), more:id(1), more:id(2) }
      assert.are.equal(set, set:append(more))
      assert.are.same({ 3, 0 }, { #set, #more })
      assert.are.same(ids, set:ids())
      assert.are.same(hs, { set:hash(1), set:hash(2), set:hash(3) })
      local extra = assert(m:allocate_set(5))
      local mutable = assert(m:allocate_set(0))
      mutable:append(extra) -- mutable sets too
      assert.are.same({ 5, 0, 0 }, { #mutable, #extra, m:available() })
      mutable:release()
      assert.are.equal(5, m:available())
      check(m)
    end
    local m = mgr()
    cycle(m)
    collectgarbage()
    collectgarbage()
    assert.are.equal(8, m:available(), "the dropped set gave its blocks back")
    check(m)
    local live = kvbm._debug.live().allocations
    for _ = 1, 3 do cycle(mgr()) end
    collectgarbage()
    collectgarbage()
    assert.are.equal(live, kvbm._debug.live().allocations, "and its grown array (managers and all)")
  end)

  it("append refuses itself, another kind or another manager, and changes neither set", function()
    local m, other = mgr(), mgr()
    local set = assert(m:register_set(assert(m:allocate_set(2)), hs))
    local mutable = assert(m:allocate_set(1))
    local foreign = assert(other:allocate_set(1))
    for _, bad in ipairs { set, mutable } do
      assert.error_matches(function() set:append(bad) end, "a different set of the same kind and manager")
    end
    assert.error_matches(function() mutable:append(foreign) end, "a different set of the same kind and manager")
    assert.error_matches(function() set:append({}) end, "kvbm.BlockSet expected")
    assert.are.same({ 2, 1, 1 }, { #set, #mutable, #foreign })
    assert.are.same({ hs[1], hs[2] }, { set:hash(1), set:hash(2) })
    set:release(); mutable:release(); foreign:release()
    assert.are.same({ 8, 8 }, { m:available(), other:available() })
    check(m)
  end)
end)
