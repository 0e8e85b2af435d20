-- Block guards from Lua: kvbm.MutableBlock, kvbm.CompleteBlock,
-- kvbm.ImmutableBlock, kvbm.WeakBlock. The pools/tests.rs scenarios of the
-- reference (blocks-pools-registry.md §13.2, 105-111), then the guard
-- semantics of the Lua binding: release, <close>, __gc, consumption,
-- lifetimes, closed managers, bad input, leaks.
local kvbm = require "kvbm"
local helpers = require "helpers"

local SALT = 42

local function mgr(n, extra)
  local cfg = { blocks = n, block_size = 4, backend = "lru", registry = kvbm.registry { frequency = "medium" } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return assert(kvbm.manager(cfg))
end

local function tb_seq(tokens) return kvbm.sequence(tokens, #tokens, SALT) end
local function tb(tokens) return tb_seq(tokens):hash(0) end
local function iota_seq(s, size) return tb_seq(helpers.range(size or 4, s)) end
local function iota(s) return iota_seq(s):hash(0) end

local function mutable(m) return assert(m:allocate(1))[1] end
local function staged(m, h) return assert(mutable(m):stage(h)) end
local function reg(m, h) return m:register(staged(m, h)) end

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, "invariant broken: " .. tostring(msg))
  return counts
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

--- A snapshot of everything observable about a manager, to show that a
--- failed call changed nothing.
local function state(m)
  return { metrics = m:metrics(), counts = check(m), available = m:available(), inactive = m:inactive(),
    reset = m:reset_pool(), registered = m:registry():count() }
end

local RELEASED = "attempt to use a released or consumed kvbm.%s"
local function released_msg(class) return RELEASED:format(class):gsub("%.", "%%.") end

-- ------------------------------------------------------------ §13.2

describe("block guards (pools/tests.rs)", function()
  it("#105 completing with an 8-token block fails and returns the original block", function()
    local m = mgr(5)
    local mb = mutable(m)
    local id = mb:id()
    local cb, err = mb:complete(tb_seq(helpers.range(8, 0)), 0)
    assert.is_nil(cb)
    assert.are.equal("block_size_mismatch", err.code)
    assert.are.equal(4, err.expected)
    assert.are.equal(8, err.actual)
    assert.are.equal(id, err.block:id())
    assert.are.equal(4, err.block:block_size())
    assert.matches("block_size_mismatch", tostring(err))
    -- the recovered block still works
    assert.are.equal(iota(0), assert(err.block:complete(iota_seq(0), 0)):hash())
  end)

  it("#106 a MutableBlock describes itself and stages with an explicit block size", function()
    local m = mgr(5)
    local mb = mutable(m)
    assert.matches("MutableBlock", tostring(mb))
    local h = tb { 10, 11, 12, 13 }
    local cb = assert(mb:stage(h, 4))
    assert.are.equal(h, cb:hash())
    assert.matches("CompleteBlock", tostring(cb))
  end)

  it("#107 reset turns a CompleteBlock back into a MutableBlock with the same id", function()
    local m = mgr(5)
    local mb = mutable(m)
    local id = mb:id()
    local cb = assert(mb:complete(iota_seq(100), 0))
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    local again = cb:reset()
    assert.matches("^kvbm.MutableBlock", tostring(again))
    assert.are.equal(id, again:id())
    assert.are.equal(1, m:metrics().kvbm_inflight_mutable)
    assert.are.equal(iota(100), assert(again:complete(iota_seq(100), 0)):hash(), "the same tokens give the same hash")
    assert.are.equal(2, m:metrics().kvbm_stagings_total)
  end)

  it("#108 an ImmutableBlock has its hash, a use count, and round-trips through a weak block", function()
    local m = mgr(10)
    local ib = reg(m, iota(100))
    assert.are.equal(iota(100), ib:hash())
    assert.is_true(ib:use_count() >= 1)
    assert.are.equal(ib:id(), assert(ib:downgrade():upgrade()):id())
  end)

  it("#109 a weak block resurrects its released block", function()
    local m = mgr(10)
    local ib = reg(m, iota(200))
    local wb = ib:downgrade()
    ib:release()
    local up = assert(wb:upgrade())
    assert.are.equal(iota(200), up:hash())
  end)

  it("#110 ImmutableBlock and WeakBlock describe themselves", function()
    local m = mgr(10)
    local ib = reg(m, iota(300))
    assert.matches("ImmutableBlock", tostring(ib))
    assert.matches("WeakBlock", tostring(ib:downgrade()))
  end)

  it("#111 a weak block does not upgrade once its block was evicted", function()
    local m = mgr(10)
    local ib = reg(m, tb { 999, 998, 997, 996 })
    local wb = ib:downgrade()
    ib:release()
    for i = 0, 9 do reg(m, tb(helpers.range(4, 1000 + i))):release() end
    assert.is_nil(wb:upgrade())
    assert.is_true(m:registry():is_registered(wb:hash()), "the weak block still holds the registration")
    wb:release()
    assert.is_false(m:registry():is_registered(tb { 999, 998, 997, 996 }))
    check(m)
  end)
end)

-- ------------------------------------------------------------- release

describe("guard release", function()
  it("is idempotent for a MutableBlock", function()
    local m = mgr(4)
    local mb = mutable(m)
    mb:release()
    local after = state(m)
    mb:release()
    mb:release()
    assert.are.same(after, state(m))
    assert.are.equal(4, m:reset_pool())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
  end)

  it("is idempotent for a CompleteBlock", function()
    local m = mgr(4)
    local cb = staged(m, iota(1))
    cb:release()
    local after = state(m)
    cb:release()
    assert.are.same(after, state(m))
    assert.are.equal(4, m:reset_pool())
  end)

  it("is idempotent for an ImmutableBlock, one reference per guard", function()
    local m = mgr(4)
    local ib = reg(m, iota(1))
    local other = ib:clone()
    assert.are.equal(2, ib:use_count())
    ib:release()
    ib:release()
    assert.are.equal(1, other:use_count(), "a second release must not drop the clone's reference")
    assert.are.equal(1, m:metrics().kvbm_inflight_immutable)
    assert.are.equal(0, m:inactive())
    other:release()
    other:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
    check(m)
  end)

  it("is idempotent for a WeakBlock, one registration reference per guard", function()
    local m = mgr(1)
    local r = m:registry()
    local h = iota(1)
    local ib = reg(m, h)
    local w1, w2 = ib:downgrade(), ib:downgrade()
    ib:release()
    assert(m:allocate(1))[1]:release() -- evicts the block: only the weak blocks keep h registered
    assert.is_true(r:is_registered(h))
    w1:release()
    w1:release()
    assert.is_true(r:is_registered(h), "w2 still holds the registration")
    w2:release()
    assert.is_false(r:is_registered(h))
    check(m)
  end)

  it("releases at the end of a <close> scope, for every guard type", function()
    local m = mgr(4)
    local r = m:registry()
    local h = iota(2)
    do
      local mb <close> = mutable(m)
      assert.are.equal(3, m:reset_pool())
    end
    assert.are.equal(4, m:reset_pool())
    do
      local cb <close> = staged(m, iota(3))
      assert.are.equal(3, m:reset_pool())
    end
    assert.are.equal(4, m:reset_pool())
    do
      local ib <close> = reg(m, h)
      local wb <close> = ib:downgrade()
      assert.are.equal(0, m:inactive())
    end
    assert.are.equal(1, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
    local evicting = assert(m:allocate(4))
    assert.is_false(r:is_registered(h), "the weak block released its registration too")
    for _, b in ipairs(evicting) do b:release() end
    check(m)
  end)

  it("releases when a scope is left by an error", function()
    local m = mgr(4)
    local ok = pcall(function()
      local ib <close> = reg(m, iota(4))
      error("boom")
    end)
    assert.is_false(ok)
    assert.are.equal(1, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
  end)
end)

-- ------------------------------------------------------------------ gc

describe("guard __gc", function()
  it("returns a dropped MutableBlock to the reset pool", function()
    local m = mgr(4)
    ;(function() mutable(m) end)()
    full_gc()
    assert.are.equal(4, m:reset_pool())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    check(m)
  end)

  it("returns a dropped CompleteBlock to the reset pool", function()
    local m = mgr(4)
    ;(function() staged(m, iota(5)) end)()
    full_gc()
    assert.are.equal(4, m:reset_pool())
    assert.are.equal(1, m:metrics().kvbm_stagings_total)
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    check(m)
  end)

  it("sends the last dropped ImmutableBlock to the inactive pool", function()
    local m = mgr(4)
    local keep
    ;(function()
      local ib = reg(m, iota(6))
      keep = ib:clone()
      local _ = ib:clone()
    end)()
    full_gc()
    assert.are.equal(1, keep:use_count())
    assert.are.equal(0, m:inactive())
    keep = nil
    full_gc()
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
    check(m)
  end)

  it("lets go of a dropped WeakBlock's registration", function()
    local m = mgr(1)
    local r, h = m:registry(), iota(7)
    ;(function()
      local ib = reg(m, h)
      local wb = ib:downgrade()
      ib:release()
      assert(m:allocate(1))[1]:release()
      assert.is_true(r:is_registered(h))
      wb = nil
    end)()
    full_gc()
    assert.is_false(r:is_registered(h))
    assert.are.equal(0, r:count())
  end)

  it("keeps the manager alive while a guard lives", function()
    local ib, wb
    ;(function()
      local m = mgr(4, { name = "kept" })
      ib = reg(m, iota(8))
      wb = ib:downgrade()
    end)()
    full_gc()
    assert.are.equal(iota(8), ib:hash())
    local m = ib:manager()
    assert.are.equal("kept", m:name())
    assert.are.equal(3, m:available())
    ib:release()
    assert.are.equal(4, m:available())
    assert.are.equal(iota(8), assert(wb:upgrade()):hash())
  end)

  it("lets the manager go once its last live guard ends, consumed guards still held and still raising", function()
    local probe = setmetatable({}, { __mode = "v" })
    local mb, cb, ib, wb
    ;(function()
      local m = mgr(4)
      probe[1] = m
      mb = mutable(m)
      cb = mb:stage(iota(9)) -- mb consumed
      ib = m:register(cb) -- cb consumed
      wb = ib:downgrade()
    end)()
    full_gc()
    assert.is_not_nil(probe[1], "kept by its live guards")
    ib:release()
    full_gc()
    assert.is_not_nil(probe[1], "kept by its live WeakBlock")
    wb:release()
    full_gc()
    full_gc()
    assert.is_nil(probe[1], "only released and consumed guards hold it")
    assert.error_matches(function() mb:stage(iota(10)) end, "released or consumed kvbm.MutableBlock")
    assert.error_matches(function() cb:hash() end, "released or consumed kvbm.CompleteBlock")
    assert.error_matches(function() ib:hash() end, "released or consumed kvbm.ImmutableBlock")
    assert.error_matches(function() wb:hash() end, "released kvbm.WeakBlock")
    for _, g in ipairs { mb, cb, ib, wb } do
      g:release() -- idempotent
      assert.matches("(released)", tostring(g), 1, true)
    end
  end)
end)

-- ----------------------------------------------------------- consumed

describe("consumed guards", function()
  it("stage consumes the MutableBlock", function()
    local m = mgr(4)
    local mb = mutable(m)
    local cb = assert(mb:stage(iota(9)))
    assert.error_matches(function() mb:id() end, released_msg("MutableBlock"))
    assert.error_matches(function() mb:stage(iota(10)) end, released_msg("MutableBlock"))
    assert.error_matches(function() mb:complete(iota_seq(10), 0) end, released_msg("MutableBlock"))
    mb:release() -- quiet no-op
    assert.are.equal(3, m:reset_pool())
    assert.are.equal(iota(9), cb:hash())
  end)

  it("a failed stage consumes nothing", function()
    local m = mgr(4)
    local mb = mutable(m)
    assert.is_nil(mb:stage(iota(9), 8))
    assert.are.equal(0, m:metrics().kvbm_stagings_total)
    assert.is_truthy(mb:stage(iota(9), 4))
  end)

  it("register consumes the CompleteBlock", function()
    local m = mgr(4)
    local cb = staged(m, iota(11))
    local ib = m:register(cb)
    assert.error_matches(function() cb:hash() end, released_msg("CompleteBlock"))
    assert.error_matches(function() cb:reset() end, released_msg("CompleteBlock"))
    assert.error_matches(function() m:register(cb) end, released_msg("CompleteBlock"))
    cb:release()
    assert.are.equal(1, ib:use_count())
    assert.are.equal(1, m:metrics().kvbm_registrations_total)
  end)

  it("register_all consumes every CompleteBlock", function()
    local m = mgr(4)
    local a, b = staged(m, iota(12)), staged(m, iota(13))
    local out = m:register_all { a, b }
    assert.are.equal(2, #out)
    assert.error_matches(function() a:id() end, released_msg("CompleteBlock"))
    assert.error_matches(function() b:id() end, released_msg("CompleteBlock"))
  end)

  it("reset consumes the CompleteBlock", function()
    local m = mgr(4)
    local cb = staged(m, iota(14))
    local mb = cb:reset()
    assert.error_matches(function() cb:id() end, released_msg("CompleteBlock"))
    assert.error_matches(function() m:register(cb) end, released_msg("CompleteBlock"))
    cb:release()
    assert.are.equal(1, m:metrics().kvbm_inflight_mutable)
    mb:release()
    assert.are.equal(4, m:reset_pool())
  end)

  it("a released guard raises on use, whatever its type", function()
    local m = mgr(4)
    local mb, cb, ib = mutable(m), staged(m, iota(15)), reg(m, iota(16))
    local wb = ib:downgrade()
    for _, g in ipairs { mb, cb, ib } do g:release() end
    wb:release()
    assert.error_matches(function() mb:block_size() end, released_msg("MutableBlock"))
    assert.error_matches(function() cb:hash() end, released_msg("CompleteBlock"))
    assert.error_matches(function() ib:hash() end, released_msg("ImmutableBlock"))
    assert.error_matches(function() ib:clone() end, released_msg("ImmutableBlock"))
    assert.error_matches(function() ib:downgrade() end, released_msg("ImmutableBlock"))
    assert.error_matches(function() ib:set_evict_on_release(true) end, released_msg("ImmutableBlock"))
    assert.error_matches(function() wb:upgrade() end, released_msg("WeakBlock"))
    assert.error_matches(function() wb:hash() end, "released kvbm%.WeakBlock")
    assert.matches("released", tostring(ib))
    check(m)
  end)

  -- A released or consumed guard keeps its class for every use (name,
  -- methods, tostring, <close>, the type checks of the calls that take it),
  -- but leaves the collector no finalizer to call.
  it("a released or consumed guard keeps its class and loses its finalizer", function()
    local m = mgr(8)
    local mb = mutable(m)
    local cb = mutable(m)
    local consumed_mb, staged_cb = cb, cb:stage(iota(20))
    local ib = m:register(staged(m, iota(21)))
    local registered_cb = staged(m, iota(22))
    local ib2 = m:register_all { registered_cb }[1]
    local wb = ib:downgrade()
    local live = {}
    for _, g in ipairs { mb, staged_cb, ib, wb } do live[g] = getmetatable(g) end
    for _, g in ipairs { mb, staged_cb, ib, wb } do
      assert.is_function(getmetatable(g).__gc)
      g:release()
    end
    for _, g in ipairs { mb, staged_cb, ib, wb, consumed_mb, registered_cb } do
      local mt = getmetatable(g)
      assert.is_nil(mt.__gc, tostring(g))
      assert.matches("^kvbm%.%a+Block$", mt.__name)
      assert.matches("released", tostring(g))
      assert.is_function(g.release)
      g:release() -- still idempotent
      do local _ <close> = g end
    end
    for g, mt in pairs(live) do assert.are.equal(mt.__index, getmetatable(g).__index) end
    assert.are.equal(getmetatable(ib2).__index, getmetatable(ib).__index)
    assert.error_matches(function() consumed_mb:stage(iota(23)) end, released_msg("MutableBlock"))
    assert.error_matches(function() m:register(registered_cb) end, "consumed kvbm%.CompleteBlock")
    assert.error_matches(function() m:register_all { staged_cb } end, "consumed kvbm%.CompleteBlock")
    assert.error_matches(function() wb:hash() end, "released kvbm%.WeakBlock")
    -- a retired guard is no guard of another class
    assert.error_matches(function() m:register(mb) end, "kvbm%.CompleteBlock expected, got kvbm%.MutableBlock")
    assert.error_matches(function() getmetatable(ib2).__index.hash(mb) end, "kvbm%.ImmutableBlock expected")
    ib2:release()
    assert.are.same({ reset = 6, mutable = 0, staged = 0, primary = 0, duplicate = 0, inactive = 2 }, check(m))
  end)
end)

-- ------------------------------------------------------- closed manager

describe("guards of a closed manager", function()
  it("release quietly, raise on any other use", function()
    local m = mgr(4)
    local mb, cb, ib = mutable(m), staged(m, iota(17)), reg(m, iota(18))
    local wb = ib:downgrade()
    m:close()
    m:close() -- idempotent
    assert.error_matches(function() mb:id() end, "closed")
    assert.error_matches(function() mb:stage(iota(19)) end, "closed")
    assert.error_matches(function() cb:hash() end, "closed")
    assert.error_matches(function() cb:reset() end, "closed")
    assert.error_matches(function() ib:hash() end, "closed")
    assert.error_matches(function() ib:clone() end, "closed")
    assert.error_matches(function() wb:upgrade() end, "closed")
    assert.error_matches(function() m:allocate(1) end, "closed")
    assert.error_matches(function() m:match { iota(18) } end, "closed")
    assert.error_matches(function() m:register(cb) end, "closed")
    assert.error_matches(function() m:metrics() end, "closed")
    for _, g in ipairs { mb, cb, ib, wb } do
      g:release()
      g:release()
    end
    assert.matches("closed", tostring(m))
  end)

  it("gives up the registrations its blocks held", function()
    local r = kvbm.registry { frequency = "medium" }
    local m = mgr(4, { registry = r })
    local h1, h2 = iota(20), iota(21)
    local ib = reg(m, h1)
    reg(m, h2):release()
    assert.are.equal(2, r:count())
    m:close()
    assert.is_false(r:is_registered(h2))
    assert.is_false(r:is_registered(h1))
    assert.are.equal(0, r:count())
    ib:release()
    assert.are.equal(0, r:count())
    -- the registry serves a new manager
    local m2 = mgr(4, { registry = r })
    reg(m2, h1):release()
    assert.is_true(r:present(h1, m2))
  end)

  it("a weak block released after the close still lets go of its registration", function()
    local r = kvbm.registry { frequency = "medium" }
    local m = mgr(4, { registry = r })
    local h = iota(22)
    local ib = reg(m, h)
    local wb = ib:downgrade()
    ib:release()
    m:close()
    assert.is_true(r:is_registered(h), "the weak block holds the registration")
    wb:release()
    assert.is_false(r:is_registered(h))
    assert.are.equal(0, r:count())
  end)

  it("a weak block collected after the close lets go of its registration", function()
    local r = kvbm.registry { frequency = "medium" }
    local h = iota(23)
    ;(function()
      local m = mgr(4, { registry = r })
      local ib = reg(m, h)
      local wb = ib:downgrade()
      ib:release()
      m:close()
      wb = nil
    end)()
    full_gc()
    assert.is_false(r:is_registered(h))
    assert.are.equal(0, r:count())
  end)
end)

-- ----------------------------------------------------- foreign guards

describe("guards of another manager", function()
  it("register raises for a CompleteBlock of another manager and changes nothing", function()
    local a, b = mgr(4), mgr(4)
    local cb = staged(a, iota(24))
    local sa, sb = state(a), state(b)
    assert.error_matches(function() b:register(cb) end, "block of another manager")
    assert.error_matches(function() b:register_all { staged(b, iota(25)), cb } end, "block of another manager")
    collectgarbage()
    full_gc()
    assert.are.same(sa, state(a))
    assert.are.equal(iota(24), cb:hash(), "not consumed")
    assert.are.equal(0, b:metrics().kvbm_registrations_total)
    assert.is_truthy(a:register(cb))
    check(b)
  end)

  it("register raises for a guard of the wrong type", function()
    local m = mgr(4)
    local mb = mutable(m)
    local ib = reg(m, iota(26))
    local wb = ib:downgrade()
    local cb = staged(m, iota(27))
    local before = state(m)
    assert.error_matches(function() m:register(mb) end, "kvbm.CompleteBlock expected")
    assert.error_matches(function() m:register(ib) end, "kvbm.CompleteBlock expected")
    assert.error_matches(function() m:register(wb) end, "kvbm.CompleteBlock expected")
    assert.error_matches(function() m:register("x") end, "kvbm.CompleteBlock expected")
    assert.error_matches(function() m:register() end, "kvbm.CompleteBlock expected")
    assert.error_matches(function() m:register_all(cb) end, "table expected")
    assert.error_matches(function() m:register_all { cb, mb } end, "kvbm.CompleteBlock expected")
    full_gc()
    assert.are.same(before, state(m))
  end)

  it("register_all with the same CompleteBlock twice raises and consumes nothing", function()
    local m = mgr(4)
    local cb = staged(m, iota(28))
    local before = state(m)
    assert.error_matches(function() m:register_all { cb, cb } end, "listed twice")
    assert.are.same(before, state(m))
    assert.are.equal(iota(28), cb:hash())
    assert.are.equal(1, #m:register_all { cb })
  end)
end)

-- ------------------------------------------------------------ bad input

describe("bad input", function()
  local m, before

  before_each(function()
    m = mgr(4)
    reg(m, iota(30)):release()
    before = state(m)
  end)

  after_each(function()
    full_gc()
    assert.are.same(before, state(m), "a refused call changes nothing")
  end)

  it("allocate: wrong types and negative counts raise", function()
    assert.error_matches(function() m:allocate() end, "number expected")
    assert.error_matches(function() m:allocate("two") end, "number expected")
    assert.error_matches(function() m:allocate(1.5) end, "number has no integer representation")
    assert.error_matches(function() m:allocate(-1) end, "non%-negative")
    assert.error_matches(function() m:allocate_with_evictions(-1) end, "non%-negative")
  end)

  it("allocate: more than the manager holds is no_space", function()
    for _, n in ipairs { 5, 100, math.maxinteger } do
      local blocks, err = m:allocate(n)
      assert.is_nil(blocks)
      assert.are.equal("no_space", err.code)
      assert.are.equal(n, err.requested)
      assert.are.equal(4, err.available)
      assert.matches("no_space", tostring(err))
    end
    local blocks, err = m:allocate_with_evictions(5)
    assert.is_nil(blocks)
    assert.are.equal("no_space", err.code)
  end)

  it("hashes that are not 16-byte strings raise", function()
    local short, long = iota(30):sub(1, 15), iota(30) .. "x"
    assert.error_matches(function() m:match { short } end, "16%-byte")
    assert.error_matches(function() m:match { iota(30), long } end, "16%-byte")
    assert.error_matches(function() m:match { 42 } end, "16%-byte")
    assert.error_matches(function() m:match_scattered { iota(30), short } end, "16%-byte")
    assert.error_matches(function() m:scan({ short }, true) end, "16%-byte")
    assert.error_matches(function() m:match(iota(30)) end, "table expected")
    assert.error_matches(function() m:registry():is_registered(short) end, "16%-byte")
    assert.error_matches(function() m:registry():check_presence({ long }, m) end, "16%-byte")
  end)

  it("stage: bad hashes and bad block sizes are refused, the block stays usable", function()
    local mb = mutable(m)
    local allocated = state(m)
    assert.error_matches(function() mb:stage("short") end, "16%-byte")
    assert.error_matches(function() mb:stage(nil) end, "16%-byte sequence hash expected, got nil")
    assert.error_matches(function() mb:stage(iota(31), "four") end, "number expected")
    assert.error_matches(function() mb:stage(iota(31), -4) end, "non%-negative")
    local cb, err = mb:stage(iota(31), 0)
    assert.is_nil(cb)
    assert.are.equal("block_size_mismatch", err.code)
    assert.are.equal(0, err.actual)
    assert.error_matches(function() mb:complete(iota(31), 0) end, "kvbm.Sequence expected")
    assert.error_matches(function() mb:complete(iota_seq(31), 1) end, "no full block")
    full_gc()
    assert.are.same(allocated, state(m))
    mb:release()
    before = state(m) -- the allocation itself was a change
  end)

  it("manager options: wrong types and unknown options raise", function()
    local r = kvbm.registry()
    assert.error_matches(function() kvbm.manager { blocks = "ten", registry = r } end,
      "option 'blocks' must be an integer in 0..4294967295, got a string", nil, true)
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = r, backend = "fifo" } end,
      "option 'backend' (or a policy table) must be one of lineage, lineage_fifo, lru, multi_lru, hashmap, s3fifo, sieve, arc, slru, depth, bip, optimal, got 'fifo'", nil, true)
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = r, duplicates = "maybe" } end,
      "option 'duplicates' must be one of allow, reject, got 'maybe'", nil, true)
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = r, block = 4 } end, "unknown option 'block'")
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = m } end,
      "option 'registry' must be a kvbm.registry(), got a kvbm.Manager", nil, true)
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = r, backend = {} } end, "victims")
    assert.error_matches(function() kvbm.manager { blocks = 4, registry = r, backend = "multi_lru",
      thresholds = { 1, 2 } } end, "thresholds[3] must be an integer in 0..255, got a nil", nil, true)
    assert.error_matches(function() kvbm.manager() end, "table expected")
    -- a refused count is shown as given (it used to be clamped to 0)
    local none, err = kvbm.manager { blocks = -4, registry = r }
    assert.is_nil(none)
    assert.matches("option 'blocks' must be an integer in 0..4294967295, got -4", err.message, 1, true)
    none, err = kvbm.manager { blocks = 0, registry = r }
    assert.is_nil(none)
    assert.matches("block_count must be greater than 0", err.message)
  end)

  it("ImmutableBlock: set_evict_on_release wants a boolean", function()
    local ib = m:match { iota(30) }[1]
    local during = state(m)
    assert.error_matches(function() ib:set_evict_on_release(1) end, "boolean expected")
    assert.error_matches(function() ib:set_evict_on_release() end, "boolean expected")
    assert.are.same(during, state(m))
    ib:release()
    assert.are.equal(1, m:inactive(), "the flag was not set")
    before = state(m)
  end)
end)

-- ---------------------------------------------------------------- leaks

describe("guard memory", function()
  it("a full lifecycle over several managers and registries leaks nothing", function()
    helpers.assert_no_leaks(function()
      local shared = kvbm.registry { frequency = "small" }
      local g1 = assert(kvbm.manager { blocks = 8, block_size = 4, registry = shared, name = "G1" })
      local g2 = assert(kvbm.manager { blocks = 8, block_size = 4, registry = shared, backend = "multi_lru",
        duplicates = "reject", name = "G2" })
      local order = {}
      local g3 = assert(kvbm.manager { blocks = 4, block_size = 4, registry = kvbm.registry(), name = "G3",
        backend = { victims = function(n) return { table.unpack(order, 1, n) } end,
          on_insert = function(id) order[#order + 1] = id end,
          on_remove = function(id) for i, v in ipairs(order) do if v == id then table.remove(order, i) break end end end } })
      local s = kvbm.sequence(helpers.range(40, 0), 4, SALT)
      for _, m in ipairs { g1, g2, g3 } do
        local held = {}
        for pos = 0, #s - 1 do
          local blocks = m:allocate_with_evictions(1)
          if not blocks then break end
          local cb = assert(blocks[1]:complete(s, pos))
          if pos % 3 == 0 then cb = assert(cb:reset():complete(s, pos)) end
          held[#held + 1] = m:register(cb)
          if pos % 2 == 0 then held[#held]:release() end
        end
        local weak = held[2]:downgrade()
        for i = 3, #held do held[i]:release() end
        for _, b in ipairs(m:match(s:hashes())) do b:clone() end
        m:match_scattered(s:hashes())
        m:scan(s:hashes(), true)
        collectgarbage("collect") -- the lookups' guards were dropped unreleased
        reg(m, iota(500)):set_evict_on_release(true)
        staged(m, iota(501))
        mutable(m)
        if m ~= g3 then weak:upgrade() end
      end
      g2:close()
      local keep = mgr(2)
      do local _ <close> = reg(keep, iota(600)) end
      local h <close> = shared:handle(iota(700))
    end)
  end)

  it("collected managers give back their memory with guards still unreleased", function()
    helpers.assert_no_leaks(function()
      for i = 1, 20 do
        local m = mgr(4)
        local ib = reg(m, iota(i))
        ib:downgrade()
        staged(m, iota(1000 + i))
        if i % 2 == 0 then m:close() end
      end
    end)
  end)
end)

describe("block sets: release order and scattered matches", function()
  local function setup_set(backend)
    local m = kvbm.manager{ blocks = 8, block_size = 4, registry = kvbm.registry{}, backend = backend or "lru" }
    local seq = kvbm.sequence(helpers.range(16, 1), 4, 0)
    return m, seq, m:register_set(m:allocate_set(4), seq, 0)
  end

  it("release('reverse') frees the tail first, so the LRU list evicts it first", function()
    local m, seq, set = setup_set()
    set:release("reverse")
    -- 4 never-used blocks, then the least recently freed: the tail (position 3)
    local taken = m:allocate_set(5)
    assert.are.equal(5, #taken)
    local hits = m:match_set(seq)
    assert.are.equal(3, #hits, "positions 0..2 survive, the tail was evicted")
    hits:release()
    taken:release()
    m:close()
  end)

  it("release('forward') frees in position order: the head is evicted first", function()
    local m, seq, set = setup_set()
    set:release("forward")
    local taken = m:allocate_set(5)
    assert.are.equal(0, #m:match_set(seq), "the head went first, the prefix is broken")
    taken:release()
    m:close()
  end)

  it("collect returns the hashes that went inactive and their indices", function()
    local m, seq, set = setup_set()
    local other = m:match_set(kvbm.sequence(helpers.range(8, 1), 4, 0)) -- holds positions 0 and 1 too
    local hs, idx = set:release("reverse", true)
    assert.are.same({ 4, 3 }, idx)
    assert.are.same({ seq:hash(3), seq:hash(2) }, hs)
    hs, idx = other:release("forward", true)
    assert.are.same({ 1, 2 }, idx)
    assert.are.same({ seq:hash(0), seq:hash(1) }, hs)
    assert.is_nil(select(2, set:release("forward", true))[1], "an empty set collects nothing")
    m:close()
  end)

  it("an unknown order raises", function()
    local m, _, set = setup_set()
    assert.has_error(function() set:release("sideways") end)
    set:release()
    m:close()
  end)

  it("match_set(hashes, true) holds every hash found, misses left out", function()
    local m, seq, set = setup_set()
    set:release()
    local hs = seq:hashes()
    local missing = kvbm.sequence(helpers.range(4, 900), 4, 0):hash(0)
    local got = m:match_set({ hs[1], missing, hs[3], hs[4] }, true)
    assert.are.equal(3, #got)
    assert.are.same({ hs[1], hs[3], hs[4] }, { got:hash(1), got:hash(2), got:hash(3) })
    got:release()
    m:close()
  end)
end)
