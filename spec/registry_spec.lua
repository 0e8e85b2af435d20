-- The registry: registration handles, attachments, presence per manager,
-- touch callbacks and frequency counts (reference scenarios 112-136).
local kvbm = require "kvbm"
local helpers = require "helpers"

local SALT = 42 -- the crate's TEST_SALT

--- Hash of one token block (a root, position 0), like create_test_token_block.
local function hash_of(tokens) return kvbm.sequence(tokens, #tokens, SALT):hash(0) end

--- iota(s) = the block [s, s+1, s+2, s+3].
local function iota(s) return hash_of(helpers.range(4, s)) end

local function new_manager(reg, opts)
  opts = opts or {}
  local m = assert(kvbm.manager{
    blocks = opts.blocks or 4, block_size = 4, registry = reg, name = opts.name,
    backend = opts.backend or "lru", duplicates = opts.duplicates,
  })
  return m
end

--- allocate 1 -> stage(h) -> register: the ImmutableBlock.
local function reg1(m, h)
  local mbs = assert(m:allocate(1))
  return m:register(mbs[1]:stage(h))
end

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, msg)
  return counts
end

describe("kvbm.registry", function()
  describe("registration handles", function()
    -- 112
    it("hands out one registration per hash, shared by every handle of it", function()
      local reg = kvbm.registry()
      local h1, h2 = iota(1), iota(2)
      local hs = { reg:handle(h1), reg:handle(h2), reg:handle(h1) }
      assert.are.same({ h1, h2, h1 }, { hs[1]:hash(), hs[2]:hash(), hs[3]:hash() })
      assert.are.equal(2, reg:count())
      assert.is_true(hs[1]:attach_unique("u64", 17))
      assert.are.equal(17, hs[3]:get("u64"), "an attachment on one handle is visible through the other")
      assert.is_nil(hs[2]:get("u64"))
      for _, hd in ipairs(hs) do hd:release() end
      assert.are.equal(0, reg:count())
    end)

    -- 121
    it("keeps the hash registered while a handle is in scope", function()
      local reg = kvbm.registry()
      local h = iota(10)
      do
        local hd <close> = reg:handle(h)
        assert.is_true(reg:is_registered(h))
        assert.is_true(hd:is_registered())
        assert.are.equal(1, reg:count())
      end
      assert.is_false(reg:is_registered(h))
      assert.are.equal(0, reg:count())
    end)

    -- 122
    it("counts every handle: the registration ends with the last one", function()
      local reg = kvbm.registry()
      local h = iota(20)
      local a, b = reg:handle(h), reg:handle(h)
      a:release()
      assert.is_true(reg:is_registered(h))
      assert.are.equal(1, reg:count())
      a:release() -- idempotent: does not drop b's reference
      assert.is_true(reg:is_registered(h))
      b:release()
      assert.is_false(reg:is_registered(h))
      assert.are.equal(0, reg:count())
    end)

    it("a released handle refuses further use", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(30))
      hd:release()
      assert.has_error(function() hd:hash() end)
      assert.has_error(function() hd:attach("x", 1) end)
      assert.matches("released", tostring(hd))
    end)

    it("collects a forgotten handle (__gc releases it)", function()
      local reg = kvbm.registry()
      local h = iota(40)
      do local _ = reg:handle(h) end
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_false(reg:is_registered(h))
    end)

    -- 134 (is_from_registry): a handle belongs to its registry only
    it("keeps registries apart", function()
      local r1, r2 = kvbm.registry(), kvbm.registry()
      local h = iota(50)
      local hd = r1:handle(h)
      assert.is_true(r1:is_registered(h))
      assert.is_false(r2:is_registered(h))
      local m2 = new_manager(r2)
      assert.has_error(function() r1:present(h, m2) end, nil, "a manager of another registry is refused")
      hd:release()
    end)

    -- 115 transfer_registration (register without a touch or an event) has
    -- no Lua API: a tier copies a block by registering its hash, which is an
    -- ordinary registration. Not ported.

    -- 135: the stale-drop race of the crate (a dropped handle removing a
    -- newer entry for the same hash) cannot occur here: there is one
    -- refcounted entry per hash. Its observable parts are ported.
    it("keeps the entry while a handle lives; a fresh registration starts without old attachments", function()
      local reg = kvbm.registry()
      local m = new_manager(reg)
      local h = iota(60)
      local a = reg:handle(h)
      a:attach_unique("tag", "old")
      local ib = reg1(m, h)
      a:release()
      assert.is_true(reg:is_registered(h), "the block still holds the registration")
      assert.are.same({ ib:id() }, { m:match({ h })[1]:id() })
      ib:release()
      collectgarbage("collect")
      local b = reg:handle(h)
      assert.are.equal("old", b:get("tag"), "an inactive block keeps the registration and its attachments")
      b:release()
      -- end the registration completely: evict the inactive block
      local _, evicted = m:allocate_with_evictions(4)
      assert.are.same({ h }, evicted)
      assert.is_false(reg:is_registered(h))
      local c = reg:handle(h)
      assert.is_nil(c:get("tag"), "a new registration has no attachments of the old one")
      c:release()
      assert.is_false(reg:is_registered(h))
    end)

    it("drops attachments when a handle ends the registration, even before a block re-registers it", function()
      local reg = kvbm.registry()
      local m = new_manager(reg)
      local h = iota(70)
      local cb = m:allocate(1)[1]:stage(h) -- staged: not a registration yet
      local hd = reg:handle(h)
      hd:attach_unique("tag", "old")
      hd:attach("list", 1)
      hd:release()
      assert.is_false(reg:is_registered(h))
      local ib = m:register(cb) -- the first call after the release registers h again
      local fresh = reg:handle(h)
      assert.is_nil(fresh:get("tag"))
      assert.is_nil(fresh:get("list"))
      assert.is_true(fresh:attach("tag", "new"), "the name is free again, in either mode")
      fresh:release()
      ib:release()
      check(m)
    end)
  end)

  it("grows its table for a batch of new registrations", function()
    -- 9 live entries (a table of 16), then 8 new hashes in one batch: the
    -- reservation must count the unused tail only once
    local reg = kvbm.registry()
    local m = new_manager(reg, { blocks = 8 })
    local hds = {}
    for i = 1, 9 do hds[i] = reg:handle(iota(1000 + 10 * i)) end
    local cbs = {}
    for i, mb in ipairs(m:allocate(8)) do cbs[i] = mb:stage(iota(2000 + 10 * i)) end
    local ibs = m:register_all(cbs)
    assert.are.equal(17, reg:count())
    for i = 1, 8 do
      assert.are.equal(iota(2000 + 10 * i), ibs[i]:hash())
      assert.is_true(reg:present(iota(2000 + 10 * i), m))
    end
    for i = 1, 9 do assert.is_true(reg:is_registered(iota(1000 + 10 * i))) end
    check(m)
    for _, x in ipairs(ibs) do x:release() end
    for _, x in ipairs(hds) do x:release() end
    assert.are.equal(8, reg:count())
  end)

  describe("attachments", function()
    -- 113, 133
    it("a name is unique or multiple, never both", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(100))
      assert.is_true(hd:attach_unique("String", "a"))
      local ok, err = hd:attach("String", "b")
      assert.is_nil(ok)
      assert.are.equal("attachment_is_unique", err.code)
      assert.matches("already registered as unique", tostring(err))
      assert.is_true(hd:attach("i32", 1))
      assert.is_true(hd:attach("i32", 2))
      ok, err = hd:attach_unique("i32", 3)
      assert.is_nil(ok)
      assert.are.equal("attachment_is_multiple", err.code)
      assert.matches("already registered as multiple", err.message)
      assert.are.equal("a", hd:get("String"), "a refused attach changes nothing")
      assert.are.same({ 1, 2 }, hd:get("i32"))
      hd:release()
    end)

    it("names must be strings: NaN, numbers, tables and booleans raise a clear error", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(105))
      local CALLS = {
        attach = function(name) return hd:attach(name, 1) end,
        attach_unique = function(name) return hd:attach_unique(name, 1) end,
        get = function(name) return hd:get(name) end,
      }
      for _, name in ipairs({ 0 / 0, 1, {}, true }) do
        for _, method in ipairs({ "attach", "attach_unique", "get" }) do
          local ok, err = pcall(CALLS[method], name)
          assert.is_false(ok, method)
          assert.matches("bad argument #1 to '" .. method .. "' %(string expected, got " .. type(name) .. "%)", err)
          assert.not_matches("table index", err)
        end
      end
      assert.is_nil(hd:get("x"), "nothing was attached")
      hd:release()
    end)

    -- 114
    it("keeps a unique value and a list side by side under different names", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(110))
      local publisher, l1, l2 = { kind = "publisher" }, { kind = "listener", n = 1 }, { kind = "listener", n = 2 }
      hd:attach_unique("EventPublisher", publisher)
      hd:attach("EventListener", l1)
      hd:attach("EventListener", l2)
      assert.are.equal(publisher, hd:get("EventPublisher"))
      local ls = hd:get("EventListener")
      assert.are.equal(2, #ls)
      assert.are.equal(l1, ls[1])
      assert.are.equal(l2, ls[2])
      hd:release()
    end)

    it("attach_unique replaces the value", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(120))
      hd:attach_unique("v", 1)
      hd:attach_unique("v", 2)
      assert.are.equal(2, hd:get("v"))
      hd:release()
    end)

    -- 123
    it("values are shared: mutating an attached table is seen through every handle", function()
      local reg = kvbm.registry()
      local h = iota(130)
      local a, b = reg:handle(h), reg:handle(h)
      a:attach_unique("UniqueCounter", { v = 0 })
      b:get("UniqueCounter").v = b:get("UniqueCounter").v + 2
      assert.are.equal(2, a:get("UniqueCounter").v)
      a:attach("MultipleCounter", { v = 10 })
      a:attach("MultipleCounter", { v = 20 })
      for _, c in ipairs(b:get("MultipleCounter")) do c.v = c.v + 1 end
      local sum = 0
      for _, c in ipairs(a:get("MultipleCounter")) do sum = sum + c.v end
      assert.are.equal(32, sum)
      a:release()
      b:release()
    end)

    -- 124, 125
    it("get returns the unique value, or a copy of the list", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(140))
      hd:attach_unique("unique", 10)
      hd:attach_unique("unique", hd:get("unique") + 1) -- read-modify-write
      assert.are.equal(11, hd:get("unique"))
      hd:attach("multiple", 1)
      hd:attach("multiple", 2)
      local list = hd:get("multiple")
      local sum = 0
      for i, v in ipairs(list) do
        list[i] = v + 1
        sum = sum + list[i]
      end
      assert.are.equal(5, sum)
      list[3] = 99
      assert.are.same({ 1, 2 }, hd:get("multiple"), "the stored list is not the returned copy")
      hd:release()
    end)

    -- 132
    it("an unused name reads as nil", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(150))
      assert.is_nil(hd:get("nothing"))
      hd:attach_unique("something", 42)
      assert.is_nil(hd:get("nothing"))
      hd:release()
    end)

    it("lives as long as the registration, through the inactive cache, and is dropped with it", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 2 })
      local h = iota(170)
      local ib = reg1(m, h)
      local hd = reg:handle(h)
      hd:attach_unique("meta", "kept")
      hd:release()
      ib:release() -- inactive: still registered
      local again = reg:handle(h)
      assert.are.equal("kept", again:get("meta"))
      again:release()
      local blocks, evicted = m:allocate_with_evictions(2)
      assert.are.same({ h }, evicted)
      assert.is_false(reg:is_registered(h))
      for _, b in ipairs(blocks) do b:release() end
      local ib2 = reg1(m, h)
      local fresh = reg:handle(h)
      assert.is_nil(fresh:get("meta"))
      fresh:release()
      ib2:release()
      check(m)
    end)

    it("gives back every allocation", function()
      helpers.assert_no_leaks(function()
        local reg = kvbm.registry()
        local m = new_manager(reg)
        local hd = reg:handle(iota(180))
        hd:attach("x", { 1, 2, 3 })
        hd:on_touch(function() end)
        local ib = reg1(m, iota(180))
        hd:release()
        ib:release()
        m:reset_inactive()
      end)
    end)
  end)

  describe("presence per manager", function()
    -- 116
    it("a block is present while registered or inactive, absent once evicted", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 2 })
      local h = hash_of({ 1, 2, 3, 4 })
      local hd = reg:handle(h) -- pre-registered, but no block holds it
      assert.is_false(reg:present(h, m))
      local ib = reg1(m, h)
      assert.is_true(reg:present(h, m))
      ib:release()
      assert.is_true(reg:present(h, m), "inactive still counts as present")
      local blocks, evicted = m:allocate_with_evictions(2)
      assert.are.same({ h }, evicted)
      assert.is_false(reg:present(h, m))
      assert.is_true(reg:is_registered(h), "the handle still holds the registration")
      for _, b in ipairs(blocks) do b:release() end
      hd:release()
      assert.is_false(reg:is_registered(h))
    end)

    -- 117
    it("is tracked per manager (tier)", function()
      local reg = kvbm.registry()
      local g1 = new_manager(reg, { blocks = 1, name = "G1" })
      local g2 = new_manager(reg, { blocks = 1, name = "G2", duplicates = "reject" })
      assert.are.equal("G1", g1:name())
      assert.are.equal("G2", g2:name())
      local h = hash_of({ 5, 6, 7, 8 })
      local a = reg1(g1, h)
      assert.is_true(reg:present(h, g1))
      assert.is_false(reg:present(h, g2))
      local b = reg1(g2, h)
      assert.is_true(reg:present(h, g1))
      assert.is_true(reg:present(h, g2))
      assert.are.equal(1, reg:count(), "one registration shared by both tiers")
      a:release()
      b:release()
      check(g1)
      check(g2)
    end)

    -- 118
    it("check_presence answers per hash, in input order", function()
      local reg = kvbm.registry()
      local m = new_manager(reg)
      local h0, h10, h20 = iota(0), iota(10), iota(20)
      local a, b = reg1(m, h0), reg1(m, h20)
      assert.are.same({ true, false, true }, reg:check_presence({ h0, h10, h20 }, m))
      assert.are.same({}, reg:check_presence({}, m))
      a:release()
      b:release()
      assert.are.same({ true, false, true }, reg:check_presence({ h0, h10, h20 }, m))
    end)

    -- 119
    it("check_presence with several managers is true when any of them holds the hash", function()
      local reg = kvbm.registry()
      local A = new_manager(reg, { blocks = 1, name = "G1" })
      local B = new_manager(reg, { blocks = 1, name = "G2" })
      local C = new_manager(reg, { blocks = 1, name = "G3" })
      local h = hash_of({ 1, 2, 3, 4 })
      assert.are.same({ false }, reg:check_presence({ h }, A, B))
      local ib = reg1(B, h)
      assert.are.same({ true }, reg:check_presence({ h }, A, B))
      assert.are.same({ false }, reg:check_presence({ h }, A, C))
      assert.are.same({ true }, reg:check_presence({ h }, B))
      ib:release()
    end)

    -- 120
    it("check_presence across managers, per hash", function()
      local reg = kvbm.registry()
      local A = new_manager(reg, { name = "G1" })
      local B = new_manager(reg, { name = "G2" })
      local ha, hm, hb = iota(10), iota(15), iota(20)
      local a, b = reg1(A, ha), reg1(B, hb)
      assert.are.same({ true, false, true }, reg:check_presence({ ha, hm, hb }, A, B))
      assert.are.same({ true, false, false }, reg:check_presence({ ha, hm, hb }, A))
      assert.are.same({ false, false, true }, reg:check_presence({ ha, hm, hb }, B))
      a:release()
      b:release()
    end)

    it("refuses a fifth manager on one registry", function()
      local reg = kvbm.registry()
      local ms = {}
      for i = 1, 4 do ms[i] = new_manager(reg, { blocks = 1, name = "G" .. i }) end
      local m5, err = kvbm.manager{ blocks = 1, block_size = 4, registry = reg }
      assert.is_nil(m5)
      assert.are.equal("too_many_managers", err.code)
      ms[4]:close()
      assert.is_not_nil(kvbm.manager{ blocks = 1, block_size = 4, registry = reg }, "a closed manager frees its tier")
    end)

    -- 78 (duplicates keep presence refcounted)
    it("counts duplicates: dropping one copy keeps the hash present", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 4 })
      local h = iota(30000)
      local primary = reg1(m, h)
      local dup = reg1(m, h)
      assert.are_not.equal(primary:id(), dup:id())
      assert.are.equal(1, check(m).duplicate)
      dup:release()
      assert.is_true(reg:present(h, m))
      primary:release()
      assert.is_true(reg:present(h, m), "inactive still counts")
      check(m)
    end)

    -- 77
    it("an evicted hash is absent and its successor present (one block)", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 1 })
      for i = 0, 19 do
        local a, b = iota(20000 + 8 * i), iota(20000 + 8 * i + 4)
        reg1(m, a):release()
        local mbs, evicted = m:allocate_with_evictions(1)
        assert.are.same({ a }, evicted)
        local ib = m:register(mbs[1]:stage(b))
        assert.are.same({ false, true }, reg:check_presence({ a, b }, m))
        ib:release()
        m:reset_inactive()
      end
    end)
  end)

  describe("weak blocks and re-registration", function()
    -- 126
    it("a weak block of a released block upgrades from the inactive cache", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 2 })
      local h = hash_of({ 1, 2, 3, 4 })
      local ib = reg1(m, h)
      local wb = ib:downgrade()
      ib:release()
      local up = wb:upgrade()
      assert.is_not_nil(up)
      assert.are.equal(h, up:hash())
      up:release()
      wb:release()
    end)

    -- 127
    it("Reject: re-registering the same hash returns the existing block", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 2, duplicates = "reject" })
      local h = hash_of({ 5, 6, 7, 8 })
      local ib = reg1(m, h)
      local x = ib:id()
      local wb = ib:downgrade()
      ib:release()
      local again = reg1(m, h)
      assert.are.equal(x, again:id())
      local up = wb:upgrade()
      assert.are.equal(x, up:id())
      assert.are.equal(1, m:available(), "one block in use: the candidate went back to the reset pool")
      again:release()
      up:release()
      wb:release()
      check(m)
    end)

    it("a weak block keeps the registration (and its attachments) alive", function()
      local reg = kvbm.registry()
      local m = new_manager(reg, { blocks = 1 })
      local h = iota(190)
      local ib = reg1(m, h)
      local wb = ib:downgrade()
      reg:handle(h):attach_unique("k", "v")
      ib:release()
      local _, evicted = m:allocate_with_evictions(1)
      assert.are.same({ h }, evicted)
      assert.is_true(reg:is_registered(h), "the weak block holds it")
      assert.is_nil(wb:upgrade(), "no block carries the hash any more")
      local hd = reg:handle(h)
      assert.are.equal("v", hd:get("k"))
      hd:release()
      wb:release()
      collectgarbage("collect")
      assert.is_false(reg:is_registered(h))
    end)
  end)

  describe("touch callbacks", function()
    -- 128
    it("on_touch runs on every touch", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(200))
      local n = 0
      hd:on_touch(function() n = n + 1 end)
      hd:touch()
      assert.are.equal(1, n)
      hd:touch()
      hd:touch()
      assert.are.equal(3, n)
      hd:release()
    end)

    -- 129
    it("runs every callback", function()
      local reg = kvbm.registry()
      local hd = reg:handle(iota(210))
      local a, b = 0, 0
      hd:on_touch(function() a = a + 1 end)
      hd:on_touch(function() b = b + 10 end)
      hd:touch()
      assert.are.same({ 1, 10 }, { a, b })
      hd:release()
    end)

    -- 130
    it("a touch without callbacks does nothing", function()
      local reg = kvbm.registry{ frequency = "medium" }
      local h = iota(220)
      local hd = reg:handle(h)
      local before = reg:frequency(h)
      hd:touch()
      assert.are.equal(before, reg:frequency(h), "handle touches are independent of the tracker")
      hd:release()
    end)

    -- 131
    it("passes the handle's hash to the callback", function()
      local reg = kvbm.registry()
      local h = iota(230)
      local hd = reg:handle(h)
      local seen
      hd:on_touch(function(x) seen = x end)
      hd:touch()
      assert.are.equal(h, seen)
      hd:release()
    end)

    it("callbacks are shared by every handle of the hash", function()
      local reg = kvbm.registry()
      local h = iota(240)
      local a, b = reg:handle(h), reg:handle(h)
      local n = 0
      a:on_touch(function() n = n + 1 end)
      b:touch()
      assert.are.equal(1, n)
      a:release()
      b:release()
    end)
  end)

  describe("frequency", function()
    it("reports whether a tracker is configured", function()
      assert.is_false(kvbm.registry():has_frequency())
      assert.is_false(kvbm.registry{ frequency = false }:has_frequency())
      assert.is_true(kvbm.registry{ frequency = true }:has_frequency())
      for _, size in ipairs({ "small", "medium", "large" }) do
        assert.is_true(kvbm.registry{ frequency = size }:has_frequency(), size)
      end
      assert.has_error(function() kvbm.registry{ frequency = "huge" } end)
      assert.has_error(function() kvbm.registry{ frequencies = "small" } end, nil, "unknown option")
    end)

    it("counts 0 without a tracker", function()
      local reg = kvbm.registry()
      local h = iota(300)
      reg:touch(h)
      assert.are.equal(0, reg:frequency(h))
    end)

    -- 136
    it("registration touches once, match touches, scan(touch=false) does not", function()
      local reg = kvbm.registry{ frequency = "medium" }
      local m = new_manager(reg)
      local h1, h2 = iota(310), iota(320)
      assert.are.equal(0, reg:frequency(h1))
      reg:touch(h1)
      assert.are.equal(1, reg:frequency(h1))
      reg:touch(h1)
      reg:touch(h1)
      assert.are.equal(3, reg:frequency(h1))
      local ib = reg1(m, h2)
      assert.are.equal(1, reg:frequency(h2), "a new registration touches once")
      local r = m:match({ h2 })
      assert.are.equal(2, reg:frequency(h2))
      r[1]:release()
      local s = m:scan({ h2 }, false)
      assert.are.equal(2, reg:frequency(h2))
      s[h2]:release()
      s = m:scan({ h2 }, true)
      assert.are.equal(3, reg:frequency(h2))
      s[h2]:release()
      local sc = m:match_scattered({ h2, h1, h2 })
      assert.are.equal(5, reg:frequency(h2), "one touch per hit occurrence")
      sc[1]:release()
      sc[3]:release()
      -- re-registering a live hash is not a new registration: no touch
      local dup = reg1(m, h2)
      assert.are.equal(5, reg:frequency(h2))
      -- a weak upgrade never touches
      local wb = ib:downgrade()
      local up = wb:upgrade()
      assert.are.equal(5, reg:frequency(h2))
      for _, x in ipairs({ dup, up, wb, ib }) do x:release() end
      -- a match of the inactive block resurrects it and touches once
      local again = m:match({ h2 })
      assert.are.equal(1, #again)
      assert.are.equal(6, reg:frequency(h2))
      again[1]:release()
    end)

    it("a handle for a new hash is a registration (one touch); for a live hash it is not", function()
      local reg = kvbm.registry{ frequency = "medium" }
      local h = iota(330)
      local a = reg:handle(h)
      assert.are.equal(1, reg:frequency(h))
      local b = reg:handle(h)
      assert.are.equal(1, reg:frequency(h))
      a:release()
      b:release()
    end)

    it("saturates at 15", function()
      local reg = kvbm.registry{ frequency = "small" }
      local h = iota(340)
      for _ = 1, 20 do reg:touch(h) end
      assert.are.equal(15, reg:frequency(h))
    end)
  end)
end)
