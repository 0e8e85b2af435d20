-- kvbm.manager: the BlockManager acceptance scenarios of kvbm-logical
-- (reference blocks-pools-registry.md §13.1, scenarios 1-104), ported to Lua.
-- Every `it` name starts with its catalogue number. Scenarios that used
-- threads run their sequential equivalent and check the same end state.
local kvbm = require "kvbm"
local helpers = require "helpers"

local SALT = 42

-- ------------------------------------------------------------- fixtures

--- The catalogue's test manager: block_size 4, LRU, a registry with a Medium
--- TinyLFU tracker, Allow, reset-on-release false; `extra` overrides options.
local function mgr(n, extra)
  local cfg = { blocks = n, block_size = 4, backend = "lru", registry = kvbm.registry { frequency = "medium" } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return assert(kvbm.manager(cfg))
end

local function mgr_rr(n, b) return mgr(n, { reset_on_release = b }) end
local function backend_mgr(n, backend) return mgr(n, { backend = backend }) end

-- a token block of the given tokens (block size = #tokens, salt 42, position 0)
local function tb_seq(tokens) return kvbm.sequence(tokens, #tokens, SALT) end
local function tb(tokens) return tb_seq(tokens):hash(0) end
local function iota_seq(s, size) return tb_seq(helpers.range(size or 4, s)) end
local function iota(s) return iota_seq(s):hash(0) end

--- allocate 1 -> complete (a sequence, checks its block size) or stage (a
--- hash) -> register.
local function reg(m, t)
  local mb = assert(m:allocate(1))[1]
  local cb
  if type(t) == "string" then cb = assert(mb:stage(t)) else cb = assert(mb:complete(t, 0)) end
  return m:register(cb)
end

--- allocate 1 -> stage with h, without registering.
local function staged(m, h) return assert(assert(m:allocate(1))[1]:stage(h)) end

local function release_all(list)
  for _, b in pairs(list) do
    if type(b) == "userdata" then b:release() end
  end
end

local function ids(list)
  local t = {}
  for i, b in ipairs(list) do t[i] = b:id() end
  return t
end

--- The store's invariants hold (reference §3.10); returns the slot counts.
local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, "invariant broken: " .. tostring(msg))
  return counts
end

--- Sum of frequency estimates: with a Medium tracker and a handful of keys it
--- moves by exactly one per touch, so a difference counts touches.
local function touches(r, hashes)
  local n = 0
  for _, h in ipairs(hashes) do n = n + r:frequency(h) end
  return n
end

local function delta(before, after, key) return after[key] - before[key] end

local function assert_config_error(fragment, cfg)
  local m, err = kvbm.manager(cfg)
  assert.is_nil(m)
  assert.are.equal("invalid_config", err.code)
  assert.matches("^Builder validation failed: ", err.message)
  assert.is_truthy(err.message:find(fragment, 1, true), "expected '" .. fragment .. "' in: " .. err.message)
  return err
end

local ALL_BACKENDS = { "lru", "multi_lru", "lineage", "lineage_fifo", "hashmap" }

-- ---------------------------------------------------------------- builder

describe("manager builder", function()
  it("#1 builds with a plain registry and the default backend", function()
    local m = assert(kvbm.manager { blocks = 100, registry = kvbm.registry() })
    local s = m:metrics()
    assert.are.equal(100, s.kvbm_reset_pool_size)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    assert.are.equal(16, m:block_size(), "the builder's default block size")
    assert.are.equal(5, #assert(m:allocate(5)))
    check(m)
  end)

  it("#2 builds with the LRU backend", function()
    local m = assert(kvbm.manager { blocks = 100, registry = kvbm.registry(), backend = "lru" })
    assert.are.equal(10, #assert(m:allocate(10)))
  end)

  it("#3 builds with multi-LRU on a registry with a Small tracker", function()
    local m = assert(kvbm.manager { blocks = 100, registry = kvbm.registry { frequency = "small" }, backend = "multi_lru" })
    assert.are.equal(8, #assert(m:allocate(8)))
  end)

  it("#4 builds with custom multi-LRU thresholds (2, 6, 12)", function()
    local m = assert(kvbm.manager { blocks = 100, registry = kvbm.registry { frequency = "medium" },
      backend = "multi_lru", thresholds = { 2, 6, 12 } })
    assert.are.equal(4, #assert(m:allocate(4)))
  end)

  it("#5 builds with the Reject policy and LRU", function()
    local m = assert(kvbm.manager { blocks = 50, registry = kvbm.registry(), backend = "lru", duplicates = "reject" })
    assert.are.equal(2, #assert(m:allocate(2)))
  end)

  it("#6 block count 0 is a validation error", function()
    assert_config_error("block_count must be greater than 0", { blocks = 0, registry = kvbm.registry() })
  end)

  it("#7 a missing block count is a validation error", function()
    assert_config_error("block_count is required", { registry = kvbm.registry() })
  end)

  it("#8 a missing registry is a validation error, checked first (§7 order)", function()
    assert_config_error("registry is required", { blocks = 10 })
    assert_config_error("registry is required", { block_size = 4 })
  end)

  it("#9 thresholds (2, 6, 20) fail: must be <= 15", function()
    assert_config_error("must be <= 15", { blocks = 10, registry = kvbm.registry { frequency = "medium" },
      backend = "multi_lru", thresholds = { 2, 6, 20 } })
  end)

  it("#10 thresholds (6, 2, 10) fail: must be in ascending order", function()
    assert_config_error("must be in ascending order", { blocks = 10, registry = kvbm.registry { frequency = "medium" },
      backend = "multi_lru", thresholds = { 6, 2, 10 } })
  end)

  it("#11 multi-LRU needs a registry with frequency tracking", function()
    assert_config_error("frequency tracking", { blocks = 10, registry = kvbm.registry(), backend = "multi_lru" })
    assert_config_error("frequency tracking", { blocks = 10, registry = kvbm.registry { frequency = false },
      backend = "multi_lru" })
  end)
end)

describe("manager builder counts", function()
  -- each used to be clamped into 0..2^32-1 silently (-1 became 0, 2^53 became 4294967295)
  local BAD = {
    { -1, "-1" }, { 2 ^ 32, "4294967296" }, { 1 << 53, "9007199254740992" }, { 2 ^ 53, "9007199254740992" },
    { 0 / 0, "nan" }, { math.huge, "inf" }, { -math.huge, "-inf" }, { 1.5, "1.5" }, { "16", "a string" },
    { {}, "a table" }, { true, "a boolean" },
  }
  for _, option in ipairs({ "blocks", "block_size" }) do
    for _, case in ipairs(BAD) do
      it(option .. " = " .. case[2] .. " is refused, naming the option and the value", function()
        local reg = kvbm.registry()
        local opts = { blocks = 8, block_size = 4, registry = reg }
        opts[option] = case[1]
        local expected = "option '" .. option .. "' must be an integer in 0..4294967295, got " .. case[2]
        if type(case[1]) == "number" then -- a refused value is data (doc/errors.md)
          local none, err = kvbm.manager(opts)
          assert.is_nil(none)
          assert.are.equal("invalid_config", err.code)
          assert.are.equal("Builder validation failed: " .. expected, err.message)
        else -- a wrong type is misuse
          local ok, err = pcall(kvbm.manager, opts)
          assert.is_false(ok)
          assert.are.equal(expected, err)
        end
        local m = assert(kvbm.manager { blocks = 8, block_size = 4, registry = reg }, "the registry is intact")
        assert.are.equal(8, m:total())
      end)
    end
  end

  it("the largest count passes to the core's own validation", function()
    local ok, err = kvbm.manager { blocks = 8, block_size = 4294967295, registry = kvbm.registry() }
    assert.is_nil(ok)
    assert.matches("Invalid block_size 4294967295", err.message)
  end)
end)

-- ------------------------------------------------------------- allocation

describe("manager allocation", function()
  it("#12 allocate and release one block", function()
    local m = mgr(10)
    local s = m:metrics()
    assert.are.equal(10, m:available())
    assert.are.equal(10, s.kvbm_reset_pool_size)
    local blocks = assert(m:allocate(1))
    s = m:metrics()
    assert.are.equal(9, m:available())
    assert.are.equal(1, s.kvbm_allocations_total)
    assert.are.equal(1, s.kvbm_allocations_from_reset_total)
    assert.are.equal(1, s.kvbm_inflight_mutable)
    assert.are.equal(9, s.kvbm_reset_pool_size)
    blocks[1]:release()
    s = m:metrics()
    assert.are.equal(10, m:available())
    assert.are.equal(0, s.kvbm_inflight_mutable)
    assert.are.equal(10, s.kvbm_reset_pool_size)
    check(m)
  end)

  it("#13 allocate 5 distinct blocks", function()
    local m = mgr(20)
    local blocks = assert(m:allocate(5))
    assert.are.equal(15, m:available())
    assert.are.equal(5, m:metrics().kvbm_allocations_total)
    assert.are.equal(5, m:metrics().kvbm_inflight_mutable)
    local seen = {}
    for _, b in ipairs(blocks) do
      assert.is_nil(seen[b:id()])
      seen[b:id()] = true
    end
    release_all(blocks)
    assert.are.equal(20, m:available())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
  end)

  it("#14 allocate the whole pool", function()
    local m = mgr(10)
    local blocks = assert(m:allocate(10))
    assert.are.equal(10, #blocks)
    assert.are.same(helpers.range(10, 0), ids(blocks), "the reset pool starts as ids 0..N-1 in FIFO order")
    assert.are.equal(0, m:available())
  end)

  it("#15 allocating more than the pool fails with no_space", function()
    local m = mgr(5)
    local blocks, err = m:allocate(10)
    assert.is_nil(blocks)
    assert.are.equal("no_space", err.code)
    assert.are.equal(10, err.requested)
    assert.are.equal(5, err.available)
    assert.are.equal(5, m:available())
    assert.are.equal(0, m:metrics().kvbm_allocations_total)
    check(m)
  end)

  it("#16 allocating 0 blocks gives an empty list", function()
    local m = mgr(10)
    assert.are.same({}, m:allocate(0))
    assert.are.equal(0, m:metrics().kvbm_allocations_total)
    assert.are.equal(10, m:available())
  end)

  it("#17 allocations drain and refill the pool, all or nothing", function()
    local m = mgr(10)
    local a = assert(m:allocate(3))
    assert.are.equal(7, m:available())
    assert.are.equal(7, m:metrics().kvbm_reset_pool_size)
    local b = assert(m:allocate(4))
    assert.are.equal(3, m:available())
    assert.are.equal(3, m:metrics().kvbm_reset_pool_size)
    local c = assert(m:allocate(3))
    assert.are.equal(0, m:available())
    assert.are.equal(0, m:metrics().kvbm_reset_pool_size)
    local s = m:metrics()
    assert.are.equal(10, s.kvbm_allocations_total)
    assert.are.equal(10, s.kvbm_inflight_mutable)
    local none, err = m:allocate(1)
    assert.is_nil(none)
    assert.are.equal("no_space", err.code)
    release_all(a)
    assert.are.equal(3, m:available())
    assert.are.equal(3, m:metrics().kvbm_reset_pool_size)
    release_all(b)
    assert.are.equal(7, m:available())
    release_all(c)
    assert.are.equal(10, m:available())
    s = m:metrics()
    assert.are.equal(0, s.kvbm_inflight_mutable)
    assert.are.equal(10, s.kvbm_reset_pool_size)
    check(m)
  end)
end)

-- -------------------------------------------------------------- lifecycle

describe("manager lifecycle", function()
  it("#18 mutable blocks held in a scope come back at its end", function()
    local m = mgr(10)
    do
      local list = assert(m:allocate(3))
      local b1 <close> = list[1]
      local b2 <close> = list[2]
      local b3 <close> = list[3]
      assert.are.equal(7, m:available())
      assert.are.equal(3, m:metrics().kvbm_inflight_mutable)
      assert.are.equal(7, m:metrics().kvbm_reset_pool_size)
    end
    assert.are.equal(10, m:available())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    assert.are.equal(10, m:metrics().kvbm_reset_pool_size)
  end)

  it("#19 completing with a 3-token block fails and keeps the block", function()
    local m = mgr(10)
    do
      local list = assert(m:allocate(2))
      local b1 <close> = list[1]
      local b2 <close> = list[2]
      assert.are.equal(8, m:metrics().kvbm_reset_pool_size)
      local three = kvbm.sequence({ 1, 2, 3 }, 3, SALT)
      for _, b in ipairs(list) do
        local cb, err = b:complete(three, 0)
        assert.is_nil(cb)
        assert.are.equal("block_size_mismatch", err.code)
        assert.are.equal(4, err.expected)
        assert.are.equal(3, err.actual)
        assert.are.equal(b, err.block, "the block comes back inside the error")
        assert.are.equal(b:id(), err.block:id())
      end
      local s = m:metrics()
      assert.are.equal(8, m:available())
      assert.are.equal(2, s.kvbm_inflight_mutable)
      assert.are.equal(0, s.kvbm_stagings_total)
      assert.are.equal(8, s.kvbm_reset_pool_size)
    end
    assert.are.equal(10, m:available())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    assert.are.equal(10, m:metrics().kvbm_reset_pool_size)
    check(m)
  end)

  it("#20 lifecycle metrics through allocate, complete, register, match, release", function()
    local m = mgr(10)
    local h = iota(500)
    local mb = assert(m:allocate(1))[1]
    local s = m:metrics()
    assert.are.equal(1, s.kvbm_allocations_total)
    assert.are.equal(1, s.kvbm_inflight_mutable)
    assert.are.equal(9, s.kvbm_reset_pool_size)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    local cb = assert(mb:complete(iota_seq(500), 0))
    s = m:metrics()
    assert.are.equal(1, s.kvbm_stagings_total)
    assert.are.equal(0, s.kvbm_inflight_mutable)
    assert.are.equal(9, m:available())
    local ib = m:register(cb)
    s = m:metrics()
    assert.are.equal(1, s.kvbm_registrations_total)
    assert.are.equal(1, s.kvbm_inflight_immutable)
    assert.are.equal(9, s.kvbm_reset_pool_size)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    local matched = m:match { h }
    assert.are.equal(1, #matched)
    s = m:metrics()
    assert.are.equal(1, s.kvbm_match_hashes_requested_total)
    assert.are.equal(1, s.kvbm_match_blocks_returned_total)
    assert.are.equal(2, s.kvbm_inflight_immutable)
    release_all(matched)
    assert.are.equal(1, m:metrics().kvbm_inflight_immutable)
    ib:release()
    s = m:metrics()
    assert.are.equal(10, m:available())
    assert.are.equal(0, s.kvbm_inflight_immutable)
    assert.are.equal(9, s.kvbm_reset_pool_size)
    assert.are.equal(1, s.kvbm_inactive_pool_size)
    matched = m:match { h }
    assert.are.equal(1, #matched)
    assert.are.equal(0, m:metrics().kvbm_inactive_pool_size)
    release_all(matched)
    assert.are.equal(1, m:metrics().kvbm_inactive_pool_size)
    check(m)
  end)

  it("#21 five workers x three rounds (sequential equivalent of the threads)", function()
    local m = mgr(20)
    for round = 0, 2 do
      for worker = 0, 4 do
        local list = assert(m:allocate(2))
        local ib = m:register(assert(list[1]:complete(iota_seq(600 + 10 * worker + round), 0)))
        list[2]:release()
        ib:release()
        check(m)
      end
    end
    assert.are.equal(20, m:total())
    assert.are.equal(20, m:available())
    local s = m:metrics()
    assert.are.equal(30, s.kvbm_allocations_total)
    assert.are.equal(15, s.kvbm_registrations_total)
    assert.are.equal(0, s.kvbm_inflight_mutable)
    assert.are.equal(0, s.kvbm_inflight_immutable)
  end)

  it("#22 mixed mutable, complete and registered blocks", function()
    local m = mgr(10)
    local list = assert(m:allocate(5))
    assert.are.equal(5, m:available())
    local completed = {}
    for i = 0, 2 do
      completed[i + 1] = assert(list[i + 1]:complete(tb_seq(helpers.range(4, 700 + i)), 0))
    end
    list[4]:release()
    list[5]:release()
    assert.are.equal(7, m:available())
    local registered = m:register_all(completed)
    assert.are.equal(3, #registered)
    assert.are.equal(7, m:available())
    local matched = m:match { iota(700) }
    assert.are.equal(1, #matched)
    release_all(registered)
    local avail = m:available()
    assert.is_true(avail >= 7 and avail <= 10)
    release_all(matched)
    assert.are.equal(10, m:available())
    check(m)
  end)
end)

-- ------------------------------------------------------------- block size

describe("manager block size", function()
  it("#23 the test manager has block size 4", function()
    assert.are.equal(4, mgr(10):block_size())
  end)

  it("#24 block size 32 with a plain registry", function()
    local m = assert(kvbm.manager { blocks = 10, block_size = 32, registry = kvbm.registry() })
    assert.are.equal(32, m:block_size())
    assert.are.equal(32, m:allocate(1)[1]:block_size())
  end)

  it("#25 completing with a matching 4-token block succeeds", function()
    local m = mgr(10)
    local cb = assert(m:allocate(1)[1]:complete(iota_seq(100), 0))
    assert.are.equal(iota(100), cb:hash())
  end)

  it("#26 completing a 4-token block on a block size 8 manager fails", function()
    local m = assert(kvbm.manager { blocks = 10, block_size = 8, backend = "lru", registry = kvbm.registry() })
    local mb = m:allocate(1)[1]
    local cb, err = mb:complete(iota_seq(1), 0)
    assert.is_nil(cb)
    assert.are.equal("block_size_mismatch", err.code)
    assert.are.equal(8, err.expected)
    assert.are.equal(4, err.actual)
    assert.are.equal("Block size mismatch: expected 8 tokens, got 4", err.message)
    assert.are.equal(mb, err.block)
    assert.are.equal(0, m:metrics().kvbm_stagings_total)
  end)

  it("#27 every power of two from 1 to 1024 is a valid block size", function()
    for p = 0, 10 do
      local size = 1 << p
      local m = assert(kvbm.manager { blocks = 10, block_size = size, registry = kvbm.registry() })
      assert.are.equal(size, m:block_size())
    end
  end)

  it("#28 block size 15 is rejected: must be a power of 2", function()
    assert_config_error("must be a power of 2", { blocks = 10, block_size = 15, registry = kvbm.registry() })
  end)

  it("#29 block size 2048 is rejected: between 1 and 1024", function()
    assert_config_error("between 1 and 1024", { blocks = 10, block_size = 2048, registry = kvbm.registry() })
  end)

  it("#30 block size 0 is rejected: between 1 and 1024", function()
    assert_config_error("between 1 and 1024", { blocks = 10, block_size = 0, registry = kvbm.registry() })
  end)

  it("#31 block size 7 is rejected: must be a power of 2", function()
    assert_config_error("must be a power of 2", { blocks = 10, block_size = 7, registry = kvbm.registry() })
  end)

  it("#32 managers of sizes 4 and 8 complete blocks of their own size", function()
    local r = kvbm.registry { frequency = "medium" }
    local m4 = assert(kvbm.manager { blocks = 10, block_size = 4, registry = r })
    local m8 = assert(kvbm.manager { blocks = 10, block_size = 8, registry = r })
    assert.is_truthy(m4:allocate(1)[1]:complete(iota_seq(10, 4), 0))
    assert.is_truthy(m8:allocate(1)[1]:complete(iota_seq(10, 8), 0))
  end)
end)

-- ---------------------------------------------------- registration / dedup

describe("manager registration", function()
  it("#33 a registered block carries the token block's hash", function()
    local m = mgr(10)
    local ib = reg(m, iota_seq(150))
    assert.are.equal(iota(150), ib:hash())
    assert.are.equal(1, m:metrics().kvbm_registrations_total)
    assert.are.equal(1, m:metrics().kvbm_stagings_total)
  end)

  it("#34 a batch registers in input order", function()
    local m = mgr(10)
    local cbs, want = {}, {}
    for i = 0, 2 do
      local s = tb_seq(helpers.range(4, 100 + i))
      cbs[i + 1] = assert(m:allocate(1)[1]:complete(s, 0))
      want[i + 1] = s:hash(0)
    end
    local out = m:register_all(cbs)
    assert.are.equal(3, #out)
    for i = 1, 3 do assert.are.equal(want[i], out[i]:hash()) end
    assert.are.equal(3, m:metrics().kvbm_registrations_total)
    assert.are.equal(3, m:metrics().kvbm_stagings_total)
    check(m)
  end)

  it("#35 Reject: a batch with repeats returns the existing primaries", function()
    local m = mgr(5, { duplicates = "reject" })
    local r = m:registry()
    local hA, hB, hC = iota(100), iota(200), iota(300)
    local a = reg(m, hA)
    local list = assert(m:allocate(4))
    local candB, dupA, dupB, candC = list[1]:id(), list[2]:id(), list[3]:id(), list[4]:id()
    local out = m:register_all {
      assert(list[1]:stage(hB)), assert(list[2]:stage(hA)), assert(list[3]:stage(hB)), assert(list[4]:stage(hC)) }
    assert.are.same({ hB, hA, hB, hC }, { out[1]:hash(), out[2]:hash(), out[3]:hash(), out[4]:hash() })
    assert.are.same({ candB, a:id(), candB, candC }, ids(out))
    assert.are.same({ true, true, true }, r:check_presence({ hA, hB, hC }, m))
    assert.are.equal(2, m:metrics().kvbm_registration_dedup_total)
    assert.are.equal(5, m:metrics().kvbm_registrations_total)
    assert.are.equal(2, m:available())
    local again = assert(m:allocate(2))
    local got = ids(again)
    table.sort(got)
    local want = { dupA, dupB }
    table.sort(want)
    assert.are.same(want, got)
    check(m)
  end)

  it("#36 Allow: the same hash twice in a batch makes a duplicate", function()
    local m = mgr(2)
    local r = m:registry()
    local h = iota(400)
    local out = m:register_all { staged(m, h), staged(m, h) }
    assert.are.equal(2, #out)
    assert.are_not.equal(out[1]:id(), out[2]:id())
    assert.are.equal(1, m:metrics().kvbm_duplicate_blocks_total)
    assert.are.same({ primary = 1, duplicate = 1 }, { primary = check(m).primary, duplicate = check(m).duplicate })
    out[2]:release()
    assert.is_true(r:present(h, m))
    assert.are.equal(1, m:reset_pool())
    check(m)
  end)

  it("#37 the same hash in two calls: Allow duplicates, Reject dedups", function()
    local m = mgr(10)
    local a1, a2 = reg(m, iota(200)), reg(m, iota(200))
    assert.are_not.equal(a1:id(), a2:id())
    assert.are.equal(1, m:metrics().kvbm_duplicate_blocks_total)
    assert.are.equal(0, m:metrics().kvbm_registration_dedup_total)

    local r = mgr(10, { duplicates = "reject" })
    local b1, b2 = reg(r, iota(300)), reg(r, iota(300))
    assert.are.equal(b1:id(), b2:id())
    assert.are.equal(1, r:metrics().kvbm_registration_dedup_total)
    assert.are.equal(0, r:metrics().kvbm_duplicate_blocks_total)
    assert.are.equal(2, b1:use_count())
    check(m)
    check(r)
  end)

  it("#38 Reject: staging a second slot with the primary's hash hands back the primary", function()
    local m = mgr(2, { duplicates = "reject" })
    local list = assert(m:allocate(2))
    local p, d = list[1]:id(), list[2]:id()
    local primary = m:register(assert(list[1]:complete(iota_seq(42), 0)))
    local cb = assert(list[2]:stage(primary:hash(), 4))
    local ib = m:register(cb)
    assert.are.equal(p, ib:id())
    assert.are.equal(1, m:available())
    local again = assert(m:allocate(1))
    assert.are.equal(d, again[1]:id())
    local s = m:metrics()
    assert.are.equal(2, s.kvbm_registrations_total)
    assert.are.equal(1, s.kvbm_registration_dedup_total)
    assert.are.equal(0, s.kvbm_reset_pool_size)
    again[1]:release()
    assert.are.equal(1, m:metrics().kvbm_reset_pool_size)
    check(m)
  end)
end)

-- --------------------------------------------------------------- matching

describe("manager match", function()
  it("#39 an unregistered hash does not match", function()
    local m = mgr(10)
    assert.are.same({}, m:match { iota(400) })
  end)

  it("#40 an inactive block matches again (resurrection)", function()
    local m = mgr(10)
    local h = iota(500)
    local ib = reg(m, h)
    local matched = m:match { h }
    assert.are.equal(1, #matched)
    assert.are.equal(ib:id(), matched[1]:id())
    assert.are.equal(1, m:metrics().kvbm_match_hashes_requested_total)
    assert.are.equal(1, m:metrics().kvbm_match_blocks_returned_total)
    ib:release()
    matched[1]:release()
    assert.are.equal(1, m:inactive())
    matched = m:match { h }
    assert.are.equal(1, #matched)
    local s = m:metrics()
    assert.are.equal(2, s.kvbm_match_hashes_requested_total)
    assert.are.equal(2, s.kvbm_match_blocks_returned_total)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    check(m)
  end)

  it("#41 four released blocks match in order", function()
    local m = mgr(10)
    local hs = {}
    for i = 0, 3 do
      hs[i + 1] = tb(helpers.range(4, 600 + i))
      reg(m, hs[i + 1]):release()
    end
    local matched = m:match(hs)
    assert.are.equal(4, #matched)
    for i = 1, 4 do assert.are.equal(hs[i], matched[i]:hash()) end
    assert.are.equal(4, m:metrics().kvbm_match_hashes_requested_total)
    assert.are.equal(4, m:metrics().kvbm_match_blocks_returned_total)
  end)

  it("#42 the prefix stops at the first unregistered hash", function()
    local m = mgr(10)
    local hs = { tb(helpers.range(4, 700)), tb(helpers.range(4, 701)), tb(helpers.range(4, 702)) }
    local keep = { reg(m, hs[1]), reg(m, hs[2]) }
    assert.are.equal(2, #m:match(hs))
    assert.are.equal(3, m:metrics().kvbm_match_hashes_requested_total)
    assert.are.equal(2, m:metrics().kvbm_match_blocks_returned_total)
    release_all(keep)
  end)

  it("#43 match returns ImmutableBlocks that downgrade with their hash", function()
    local m = mgr(10)
    local h = iota(800)
    local ib = reg(m, h)
    local matched = m:match { h }
    assert.matches("^kvbm.ImmutableBlock", tostring(matched[1]))
    local wb = matched[1]:downgrade()
    assert.are.equal(h, wb:hash())
    ib:release()
  end)

  it("#44 a prefix of active and inactive blocks keeps its order", function()
    local m = mgr(6)
    local hs, held = {}, {}
    for i = 0, 5 do
      hs[i + 1] = tb(helpers.range(4, 1000 + 10 * i))
      held[i + 1] = reg(m, hs[i + 1])
    end
    held[3]:release()
    held[4]:release()
    local matched = m:match(hs)
    assert.are.equal(6, #matched)
    for i = 1, 6 do assert.are.equal(hs[i], matched[i]:hash()) end
    check(m)
  end)

  it("#45 [inactive, active] matches both", function()
    local m = mgr(2)
    local a, b = iota(1100), iota(1200)
    reg(m, a):release()
    local keep = reg(m, b)
    assert.are.equal(2, #m:match { a, b })
    keep:release()
  end)

  it("#46 [active, inactive, active] matches all three", function()
    local m = mgr(3)
    local a, b, c = iota(1300), iota(1400), iota(1500)
    local ka = reg(m, a)
    reg(m, b):release()
    local kc = reg(m, c)
    assert.are.equal(3, #m:match { a, b, c })
    ka:release()
    kc:release()
  end)

  it("#47 [A, A, miss, A] stops at the miss", function()
    local m = mgr(4)
    local a = iota(1600)
    local keep = reg(m, a)
    local matched = m:match { a, a, iota(1700), a }
    assert.are.equal(2, #matched)
    assert.are.equal(3, keep:use_count())
  end)

  it("#48 matching nothing returns nothing", function()
    local m = mgr(4)
    assert.are.same({}, m:match {})
    assert.are.equal(0, m:metrics().kvbm_match_blocks_returned_total)
    assert.are.equal(0, m:metrics().kvbm_match_hashes_requested_total)
  end)

  it("#49 match touches the tracker once per returned block", function()
    local m = mgr(5)
    local r = m:registry()
    local hs, held = {}, {}
    for i = 0, 4 do
      hs[i + 1] = iota(1800 + 4 * i)
      held[i + 1] = reg(m, hs[i + 1])
    end
    held[2]:release()
    held[4]:release()
    local before = touches(r, hs)
    local matched = m:match(hs)
    assert.are.equal(5, #matched)
    assert.are.equal(5, touches(r, hs) - before)
    for _, h in ipairs(hs) do assert.are.equal(2, r:frequency(h), "one registration touch and one match touch") end
  end)

  it("#50 a miss touches nothing", function()
    local m = mgr(4)
    local r = m:registry()
    local h = iota(1900)
    assert.are.same({}, m:match { h })
    assert.are.equal(0, r:frequency(h))
  end)
end)

-- ------------------------------------------------------- scattered match

describe("manager match_scattered", function()
  for _, backend in ipairs({ "lru", "multi_lru", "lineage" }) do
    it("#51 aligned results, misses kept, repeats resolved (" .. backend .. ")", function()
      local m = backend_mgr(4, backend)
      local active = reg(m, iota(20000))
      reg(m, iota(20010)):release()
      local later = reg(m, iota(20020))
      local before = m:metrics()
      local t = m:match_scattered { iota(20000), iota(29999), iota(20010), iota(20010), iota(20020) }
      local after = m:metrics()
      assert.are.equal(5, t.n)
      assert.are.equal(active:id(), t[1]:id())
      assert.is_nil(t[2])
      assert.are.equal(iota(20010), t[3]:hash())
      assert.are.equal(t[3]:hash(), t[4]:hash())
      assert.are.equal(t[3]:id(), t[4]:id())
      assert.are.equal(iota(20020), t[5]:hash())
      assert.are.equal(later:id(), t[5]:id())
      -- the reference @0b94699 counts scattered lookups as scans
      assert.are.equal(5, delta(before, after, "kvbm_scan_hashes_requested_total"))
      assert.are.equal(4, delta(before, after, "kvbm_scan_blocks_returned_total"))
      assert.are.equal(0, delta(before, after, "kvbm_match_hashes_requested_total"))
      assert.are.equal(0, delta(before, after, "kvbm_match_blocks_returned_total"))
      assert.are.equal(4, delta(before, after, "kvbm_inflight_immutable"))
      assert.are.equal(0, after.kvbm_inactive_pool_size)
      check(m)
    end)
  end

  it("#52 an empty input changes no counter", function()
    local m = mgr(1)
    local before = m:metrics()
    local t = m:match_scattered {}
    assert.are.equal(0, t.n)
    assert.is_nil(t[1])
    assert.are.same(before, m:metrics())
  end)

  it("#53 one touch per hit occurrence", function()
    local m = mgr(3)
    local r = m:registry()
    local ha, hi, miss = iota(21000), iota(21010), iota(21020)
    local keep = reg(m, ha)
    reg(m, hi):release()
    local before = touches(r, { ha, hi, miss })
    local t = m:match_scattered { ha, miss, hi, hi }
    local hits = 0
    for i = 1, t.n do if t[i] then hits = hits + 1 end end
    assert.are.equal(3, hits)
    assert.are.equal(3, touches(r, { ha, hi, miss }) - before)
    assert.are.equal(0, r:frequency(miss))
    keep:release()
  end)
end)

-- ------------------------------------------------------- immutable / weak

describe("manager weak blocks", function()
  it("#54 downgrade then upgrade gives the same block", function()
    local m = mgr(10)
    local ib = reg(m, iota(100))
    local up = assert(ib:downgrade():upgrade())
    assert.are.equal(ib:hash(), up:hash())
    assert.are.equal(ib:id(), up:id())
  end)

  it("#55 a weak block upgrades after the block went inactive", function()
    local m = mgr(10)
    local ib = reg(m, iota(200))
    local wb = ib:downgrade()
    ib:release()
    local up = assert(wb:upgrade())
    assert.are.equal(iota(200), up:hash())
  end)

  it("#56 a weak block does not upgrade once its block was evicted", function()
    local m = mgr(10)
    local ib = reg(m, tb { 999, 998, 997, 996 })
    local wb = ib:downgrade()
    ib:release()
    for i = 0, 9 do
      reg(m, tb(helpers.range(4, 1000 + i))):release()
    end
    assert.are.equal(1, m:metrics().kvbm_evictions_total, "the 10th allocation evicted the oldest inactive block")
    assert.is_nil(wb:upgrade())
    check(m)
  end)

  it("#57 three weak blocks of one block all upgrade", function()
    local m = mgr(10)
    local ib = reg(m, iota(150))
    local w = { ib:downgrade(), ib:downgrade(), ib:downgrade() }
    ib:release()
    for _, wb in ipairs(w) do assert.are.equal(iota(150), assert(wb:upgrade()):hash()) end
  end)

  it("#58 a weak block of a held block upgrades to it", function()
    local m = mgr(10)
    local ib = reg(m, iota(250))
    local up = assert(ib:downgrade():upgrade())
    assert.are.equal(ib:id(), up:id())
    assert.are.equal(2, ib:use_count())
  end)

  it("#59 a weak block survives unrelated registrations", function()
    local m = mgr(20)
    local ib = reg(m, iota(350))
    local wb = ib:downgrade()
    ib:release()
    for i = 0, 9 do reg(m, iota(3500 + 4 * i)):release() end
    local up = wb:upgrade()
    assert.is_truthy(up, "no eviction was needed")
    assert.are.equal(iota(350), up:hash())
  end)
end)

-- --------------------------------------------------------- error handling

describe("manager error handling", function()
  it("#60 an exhausted pool refuses, then recovers", function()
    local m = mgr(3)
    local a, b = assert(m:allocate(2)), assert(m:allocate(1))
    assert.is_nil(m:allocate(1))
    release_all(a)
    release_all(b)
    assert.is_truthy(m:allocate(1))
  end)

  it("#61 match of an empty list is empty", function()
    assert.are.equal(0, #mgr(3):match {})
  end)

  it("#62 registering an empty batch gives an empty list", function()
    local m = mgr(3)
    assert.are.same({}, m:register_all {})
    assert.are.equal(0, m:metrics().kvbm_registrations_total)
  end)
end)

-- ------------------------------------------------------------ integration

describe("manager integration", function()
  it("#63 the block id survives mutable -> complete -> registered", function()
    local m = mgr(10)
    local mb = m:allocate(1)[1]
    local id = mb:id()
    local cb = assert(mb:complete(iota_seq(1), 0))
    assert.are.equal(id, cb:id())
    local ib = m:register(cb)
    assert.are.equal(id, ib:id())
    assert.are.equal(1, #m:match { iota(1) })
    assert.are.equal(id, assert(ib:downgrade():upgrade()):id())
  end)

  for _, backend in ipairs({ "lru", "multi_lru" }) do
    it("#64 a chain of 5 blocks registers in one batch and matches (" .. backend .. ")", function()
      local m = backend_mgr(20, backend)
      local s = kvbm.sequence(helpers.range(20, 1000), 4, SALT)
      assert.are.equal(5, #s)
      local cbs = {}
      for pos = 0, 4 do cbs[pos + 1] = assert(m:allocate(1)[1]:complete(s, pos)) end
      local held = m:register_all(cbs)
      local matched = m:match(s:hashes())
      assert.are.equal(5, #matched)
      for i = 1, 5 do assert.are.equal(held[i]:id(), matched[i]:id()) end
    end)
  end

  it("#65 registering in two batches, then matching all 15", function()
    local m = mgr(50)
    local cbs, hs = {}, {}
    for i = 0, 9 do
      hs[i + 1] = tb(helpers.range(4, 2000 + i))
      cbs[i + 1] = staged(m, hs[i + 1])
    end
    local first = m:register_all { table.unpack(cbs, 1, 5) }
    for i = 10, 14 do
      hs[i + 1] = tb(helpers.range(4, 2000 + i))
      cbs[i + 1] = staged(m, hs[i + 1])
    end
    local rest = m:register_all { table.unpack(cbs, 6, 15) }
    assert.are.equal(5, #first)
    assert.are.equal(10, #rest)
    assert.are.equal(15, #m:match(hs))
    check(m)
  end)

  it("#66 two tiers share one registry", function()
    local r = kvbm.registry { frequency = "medium" }
    local g1 = assert(kvbm.manager { blocks = 100, block_size = 4, registry = r, backend = "multi_lru", name = "G1" })
    local g2 = assert(kvbm.manager { blocks = 100, block_size = 4, registry = r, backend = "multi_lru",
      duplicates = "reject", name = "G2" })
    local h = iota(3000)
    local ib = reg(g1, h)
    assert.is_true(r:is_registered(h))
    assert.is_true(r:present(h, g1))
    assert.is_false(r:present(h, g2))
    assert.are.equal(100, g1:total())
    assert.are.equal(100, g2:total())
    ib:release()
  end)
end)

-- ------------------------------------------------------ capacity lifecycle

describe("manager capacity lifecycle", function()
  for _, backend in ipairs({ "lru", "multi_lru", "lineage" }) do
    it("#67 register the whole pool, release it all to the inactive pool (" .. backend .. ")", function()
      local m = backend_mgr(32, backend)
      local held = {}
      for i = 0, 31 do held[i + 1] = reg(m, iota_seq(5000 + 4 * i)) end
      assert.are.equal(0, m:inactive())
      assert.are.equal(0, m:reset_pool())
      assert.are.equal(0, m:metrics().kvbm_inactive_pool_size)
      assert.are.equal(0, m:metrics().kvbm_reset_pool_size)
      release_all(held)
      assert.are.equal(32, m:inactive())
      assert.are.equal(0, m:reset_pool())
      local s = m:metrics()
      assert.are.equal(32, s.kvbm_allocations_total)
      assert.are.equal(32, s.kvbm_registrations_total)
      assert.are.equal(0, s.kvbm_inflight_mutable)
      assert.are.equal(0, s.kvbm_inflight_immutable)
      assert.are.equal(32, s.kvbm_inactive_pool_size)
      assert.are.equal(0, s.kvbm_reset_pool_size)
      assert.are.equal(32, m:available())
      assert.are.equal(32, m:total())
      assert.are.equal(32, check(m).inactive)
    end)
  end

  for _, backend in ipairs(ALL_BACKENDS) do
    it("#68 evict the whole inactive pool (" .. backend .. ")", function()
      local m = backend_mgr(16, backend)
      for i = 0, 15 do reg(m, iota_seq(6000 + 4 * i)):release() end
      assert.are.equal(16, m:inactive())
      local blocks, evicted = m:allocate_with_evictions(16)
      assert.are.equal(16, #blocks)
      assert.are.equal(16, #evicted)
      assert.are.equal(0, m:inactive())
      assert.are.equal(0, m:reset_pool())
      assert.are.equal(0, m:metrics().kvbm_inactive_pool_size)
      assert.are.equal(0, m:metrics().kvbm_reset_pool_size)
      release_all(blocks)
      assert.are.equal(16, m:reset_pool())
      local s = m:metrics()
      assert.are.equal(16, s.kvbm_evictions_total)
      assert.are.equal(32, s.kvbm_allocations_total)
      assert.are.equal(16, s.kvbm_allocations_from_reset_total)
      assert.are.equal(0, m:registry():count(), "evicted hashes are no longer registered")
      check(m)
    end)
  end

  it("#69 released mutable blocks go to the reset pool", function()
    local m = backend_mgr(16, "lru")
    release_all(assert(m:allocate(16)))
    assert.are.equal(16, m:reset_pool())
    assert.are.equal(0, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
    assert.are.equal(0, m:metrics().kvbm_registrations_total)
  end)

  it("#70 released complete blocks go to the reset pool", function()
    local m = backend_mgr(16, "lru")
    local list, cbs = assert(m:allocate(16)), {}
    for i = 0, 15 do cbs[i + 1] = assert(list[i + 1]:complete(iota_seq(7000 + 4 * i), 0)) end
    release_all(cbs)
    assert.are.equal(16, m:reset_pool())
    assert.are.equal(0, m:inactive())
    assert.are.equal(16, m:metrics().kvbm_stagings_total)
    assert.are.equal(0, m:metrics().kvbm_registrations_total)
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
  end)

  for _, backend in ipairs(ALL_BACKENDS) do
    it("#71 mutable, complete and registered groups each go where their drop sends them (" .. backend .. ")", function()
      local m = backend_mgr(24, backend)
      local all = assert(m:allocate(24))
      release_all { table.unpack(all, 1, 8) } -- group A: mutable
      assert.are.equal(8, m:reset_pool())
      local cbs = {} -- group B: complete
      for i = 0, 7 do cbs[i + 1] = assert(all[9 + i]:complete(iota_seq(8000 + 4 * i), 0)) end
      release_all(cbs)
      assert.are.equal(16, m:reset_pool())
      local held = {} -- group C: registered
      for i = 0, 7 do held[i + 1] = m:register(assert(all[17 + i]:complete(iota_seq(8100 + 4 * i), 0))) end
      assert.are.equal(0, m:inactive())
      release_all(held)
      assert.are.equal(8, m:inactive())
      assert.are.equal(16, m:reset_pool())
      assert.are.equal(24, m:available())
      local s = m:metrics()
      assert.are.equal(24, s.kvbm_allocations_total)
      assert.are.equal(16, s.kvbm_stagings_total)
      assert.are.equal(8, s.kvbm_registrations_total)
      assert.are.equal(0, s.kvbm_inflight_mutable)
      assert.are.equal(0, s.kvbm_inflight_immutable)
      assert.are.equal(8, s.kvbm_inactive_pool_size)
      assert.are.equal(16, s.kvbm_reset_pool_size)
      check(m)
    end)
  end

  it("#72 multi-LRU holds a whole pool of cold blocks", function()
    local m = backend_mgr(64, "multi_lru")
    for i = 0, 63 do reg(m, iota_seq(9000 + 4 * i)):release() end
    assert.are.equal(64, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_evictions_total)
    assert.are.equal(64, m:metrics().kvbm_allocations_total)
    check(m)
  end)

  it("#73 multi-LRU evicts cold before warm before hot before very hot", function()
    local r = kvbm.registry { frequency = "medium" }
    local m = assert(kvbm.manager { blocks = 32, block_size = 4, registry = r, backend = "multi_lru", thresholds = { 3, 8, 15 } })
    local held, level = {}, {}
    for i = 0, 31 do
      local h = iota(10000 + 4 * i)
      held[i + 1] = reg(m, h)
      local id = held[i + 1]:id()
      local extra = id < 8 and 0 or id < 16 and 3 or id < 24 and 8 or 15
      for _ = 1, extra do r:touch(h) end
      level[id] = id < 8 and 0 or id < 16 and 1 or id < 24 and 2 or 3
    end
    release_all(held)
    assert.are.equal(32, m:inactive())
    local blocks = assert(m:allocate(32))
    assert.are.equal(0, m:inactive())
    local s = m:metrics()
    assert.are.equal(32, s.kvbm_evictions_total)
    assert.are.equal(64, s.kvbm_allocations_total)
    for i = 2, 32 do
      assert.is_true(level[blocks[i - 1]:id()] <= level[blocks[i]:id()], "victims come from the coldest level first")
    end
    check(m)
  end)

  for _, backend in ipairs(ALL_BACKENDS) do
    it("#74 two register/release cycles over the whole pool (" .. backend .. ")", function()
      local m = backend_mgr(16, backend)
      for i = 0, 15 do reg(m, iota_seq(11000 + 4 * i)):release() end
      assert.are.equal(16, m:metrics().kvbm_inactive_pool_size)
      assert.are.equal(0, m:metrics().kvbm_reset_pool_size)
      local blocks = assert(m:allocate(16))
      assert.are.equal(0, m:metrics().kvbm_inactive_pool_size)
      assert.are.equal(0, m:metrics().kvbm_reset_pool_size)
      release_all(blocks)
      assert.are.equal(16, m:reset_pool())
      for i = 0, 15 do reg(m, iota_seq(12000 + 4 * i)):release() end
      assert.are.equal(16, m:inactive())
      local s = m:metrics()
      assert.are.equal(48, s.kvbm_allocations_total)
      assert.are.equal(32, s.kvbm_registrations_total)
      assert.are.equal(16, s.kvbm_evictions_total)
      assert.are.equal(16, s.kvbm_inactive_pool_size)
      assert.are.equal(0, s.kvbm_reset_pool_size)
      assert.are.equal(16, m:available())
      check(m)
    end)
  end
end)

-- ------------------------------------------------------------------- scan

describe("manager scan", function()
  it("#75 scan does not stop at a miss and resurrects what it finds", function()
    local m = mgr(10)
    local hs = {}
    for i = 0, 2 do
      hs[i + 1] = iota(13000 + 4 * i)
      reg(m, hs[i + 1]):release()
    end
    assert.are.equal(3, m:inactive())
    assert.are.equal(7, m:reset_pool())
    local found = m:scan({ hs[1], iota(99000), hs[3] }, true)
    local n = 0
    for h, b in pairs(found) do
      n = n + 1
      assert.are.equal(h, b:hash())
    end
    assert.are.equal(2, n)
    assert.is_truthy(found[hs[1]])
    assert.is_truthy(found[hs[3]])
    assert.are.equal(1, m:metrics().kvbm_inactive_pool_size)
    assert.are.equal(3, m:metrics().kvbm_scan_hashes_requested_total)
    assert.are.equal(2, m:metrics().kvbm_scan_blocks_returned_total)
    release_all(found)
    assert.are.equal(3, m:metrics().kvbm_inactive_pool_size)
    check(m)
  end)
end)

-- -------------------------------------------------------- race regressions

describe("manager race regressions (sequential equivalents)", function()
  it("#76 release then match, 200 times (sequential equivalent of the threads)", function()
    local m = mgr(8)
    for i = 0, 199 do
      local h = iota(10000 + 4 * i)
      local ib = reg(m, h)
      ib:release()
      local matched = m:match { h }
      assert.is_true(#matched <= 1)
      release_all(matched)
    end
    assert.are.equal(8, m:total())
    assert.are.equal(8, m:available())
    check(m)
  end)

  it("#77 an evicted hash loses its presence, the new one has it", function()
    local m = mgr(1)
    local r = m:registry()
    for i = 0, 99 do
      local a, b = iota(20000 + 8 * i), iota(20000 + 8 * i + 4)
      reg(m, a):release()
      local mb = assert(m:allocate(1))[1]
      local ib = m:register(assert(mb:complete(iota_seq(20000 + 8 * i + 4), 0)))
      assert.are.same({ false, true }, r:check_presence({ a, b }, m))
      ib:release()
    end
    check(m)
  end)

  it("#78 presence survives the duplicate's and the primary's release", function()
    local m = mgr(4)
    local r = m:registry()
    local h = iota(30000)
    local primary, dup = reg(m, h), reg(m, h)
    assert.are_not.equal(primary:id(), dup:id())
    assert.is_true(r:present(h, m))
    dup:release()
    assert.is_true(r:present(h, m))
    primary:release()
    assert.is_true(r:present(h, m), "an inactive block still counts as present")
    check(m)
  end)

  it("#79 eight all-or-nothing allocations of the whole pool (sequential equivalent)", function()
    local m = mgr(16)
    local granted, holds = 0, {}
    for i = 1, 8 do
      local blocks = m:allocate(16)
      if blocks then
        granted = granted + #blocks
        holds[i] = blocks
      end
    end
    assert.is_true(granted == 0 or granted == 16)
    assert.are.equal(16, granted)
    for _, b in pairs(holds) do release_all(b) end
    assert.are.equal(16, m:available())
    check(m)
  end)
end)

-- --------------------------------------------------------- audit counters

describe("manager tracker touches (audit)", function()
  local function audit_mgr() return mgr(4, { backend = "multi_lru" }) end

  it("#81 match of an inactive block touches once", function()
    local m = audit_mgr()
    local r, h = m:registry(), iota(40000)
    reg(m, h):release()
    local before = r:frequency(h)
    assert.are.equal(1, #m:match { h })
    assert.are.equal(1, r:frequency(h) - before)
  end)

  it("#82 scan with touch touches once", function()
    local m = audit_mgr()
    local r, h = m:registry(), iota(40100)
    reg(m, h):release()
    local before = r:frequency(h)
    assert.is_truthy(m:scan({ h }, true)[h])
    assert.are.equal(1, r:frequency(h) - before)
  end)

  it("#83 scan without touch touches nothing", function()
    local m = audit_mgr()
    local r, h = m:registry(), iota(40200)
    reg(m, h):release()
    local before = r:frequency(h)
    assert.is_truthy(m:scan({ h }, false)[h])
    assert.are.equal(0, r:frequency(h) - before)
  end)

  it("#84 match of an active block touches once", function()
    local m = audit_mgr()
    local r, h = m:registry(), iota(40300)
    local keep = reg(m, h)
    local before = r:frequency(h)
    assert.are.equal(1, #m:match { h })
    assert.are.equal(1, r:frequency(h) - before)
    keep:release()
  end)

  it("#85 release then match resurrects the same block; its next release caches it again (sequential end state)", function()
    local m = mgr(4)
    local h = iota(70000)
    local ib = reg(m, h)
    local id = ib:id()
    ib:release()
    local matched = m:match { h }
    assert.are.equal(1, #matched)
    assert.are.equal(id, matched[1]:id())
    assert.are.equal(0, m:inactive())
    matched[1]:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
    check(m)
  end)

  it("#86 a Lua policy that answers nothing: the engine falls back and counts the error", function()
    local calls = 0
    local policy = { victims = function(n) calls = calls + 1; return {} end }
    local m = mgr(4, { backend = policy })
    for i = 0, 3 do reg(m, iota(71000 + 4 * i)):release() end
    assert.are.equal(4, m:inactive())
    local blocks, evicted = m:allocate_with_evictions(2)
    assert.are.equal(1, calls)
    assert.are.equal(2, #blocks)
    assert.are.same({ iota(71000), iota(71004) }, evicted, "fallback: insertion order")
    assert.are.equal(1, m:metrics().policy_errors)
    assert.are.equal(2, m:inactive())
    assert.is_nil(m:allocate(5), "more than reset + inactive still fails")
    assert.are.equal(2, m:inactive())
    assert.are.equal(2, check(m).mutable)
    release_all(blocks)
    assert.are.equal(2, m:reset_pool())
    check(m)
  end)

  it("#87 sequential all-or-nothing allocations of 4 never roll back", function()
    local m = mgr(16)
    local held = {}
    for i = 1, 8 do held[i] = m:allocate(4) or false end
    local granted = 0
    for i = 1, 8 do if held[i] then granted = granted + #held[i] end end
    assert.are.equal(16, granted)
    assert.are.equal(0, m:available())
    assert.are.equal(16, m:metrics().kvbm_allocations_total)
    check(m)
    for i = 1, 8 do if held[i] then release_all(held[i]) end end
    assert.are.equal(16, m:available())
  end)

  it("#88 reset_inactive drains the cache and clears presence", function()
    local m = mgr(4)
    local r = m:registry()
    local hs = {}
    for i = 0, 3 do
      hs[i + 1] = iota(80000 + 4 * i)
      reg(m, hs[i + 1]):release()
    end
    assert.are.equal(4, m:inactive())
    assert.are.equal(0, m:reset_pool())
    assert.are.same({ true, true, true, true }, r:check_presence(hs, m))
    local before = m:metrics()
    assert.is_true(m:reset_inactive())
    local after = m:metrics()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.are.equal(4, m:available())
    assert.are.same({ false, false, false, false }, r:check_presence(hs, m))
    assert.are.equal(0, delta(before, after, "kvbm_evictions_total"), "a drain is not an eviction")
    assert.are.equal(0, delta(before, after, "kvbm_allocations_total"))
    assert.are.equal(0, after.kvbm_inflight_mutable)
    check(m)
  end)

  it("#88 reset_inactive reports blocks still held elsewhere", function()
    local m = mgr(4)
    reg(m, iota(80100)):release()
    local held = reg(m, iota(80200))
    local ok, err = m:reset_inactive()
    assert.is_nil(ok)
    assert.are.equal("block_count_mismatch", err.code)
    assert.are.equal(4, err.expected)
    assert.are.equal(3, err.actual)
    assert.are.equal(0, m:inactive(), "the drain happens regardless")
    held:release()
    check(m)
  end)

  it("#89 Lua policies with bad answers never corrupt the pool", function()
    local bad = {
      short = function() return { 0 } end,
      unknown = function(n) local t = {} for i = 1, n do t[i] = 1000 + i end return t end,
      repeated = function(n) local t = {} for i = 1, n do t[i] = 0 end return t end,
      raising = function() error("policy bug") end,
      not_a_table = function() return 42 end,
      garbage = function(n) local t = {} for i = 1, n do t[i] = "x" end return t end,
      held = function(n) local t = {} for i = 1, n do t[i] = 3 end return t end, -- id 3 is not inactive
    }
    for name, victims in pairs(bad) do
      local m = mgr(4, { backend = { victims = victims } })
      local keep
      for i = 0, 3 do
        local ib = reg(m, iota(72000 + 4 * i))
        if i == 3 then keep = ib else ib:release() end
      end
      assert.are.equal(3, m:inactive(), name)
      local blocks, evicted = m:allocate_with_evictions(2)
      assert.is_truthy(blocks, name)
      assert.are.equal(2, #evicted, name)
      assert.is_true(m:metrics().policy_errors >= 1, name)
      assert.are.equal(1, m:inactive(), name)
      local counts = check(m)
      assert.are.equal(2, counts.mutable, name)
      assert.are.equal(1, counts.primary, name)
      assert.are.equal(1, counts.inactive, name)
      for _, b in ipairs(blocks) do assert.are_not.equal(keep:id(), b:id(), name) end
      assert.is_nil(m:allocate(3), name)
      release_all(blocks)
      keep:release()
      check(m)
    end
  end)

  it("#89 a Lua policy that calls back into its manager is refused and falls back", function()
    local m
    local errors = {}
    local policy = { victims = function(n)
      local ok, err = pcall(m.allocate, m, 1)
      errors[#errors + 1] = not ok and tostring(err) or "allowed"
      return m:allocate(n) -- raises: the engine falls back
    end }
    m = mgr(4, { backend = policy })
    for i = 0, 3 do reg(m, iota(74000 + 4 * i)):release() end
    local blocks, evicted = m:allocate_with_evictions(3)
    assert.are.equal(3, #blocks)
    assert.are.same({ iota(74000), iota(74004), iota(74008) }, evicted)
    assert.matches("re%-entrant", errors[1])
    assert.are.equal(1, m:metrics().policy_errors)
    assert.are.equal(3, check(m).mutable)
    release_all(blocks)
    assert.is_truthy(m:allocate(4), "the manager is usable again")
  end)

  it("#89 guards collected while the policy runs are released at once, soundly", function()
    -- weak values are cleared when a full collection finds them dead, and
    -- a full collection runs their finalizers before it returns
    local probe = setmetatable({}, { __mode = "v" })
    local function gc_probe() return probe end
    local m, finalized_during
    local policy = { victims = function(n)
      collectgarbage("collect") -- finalizers run now, between core calls
      finalized_during = next(gc_probe()) == nil
      assert(kvbm._debug.check(m))
      assert(m:reset_pool() == 1, "the dropped mutable block is back already")
      return {}
    end }
    m = mgr(4, { backend = policy })
    for i = 0, 1 do reg(m, iota(75000 + 4 * i)):release() end
    ;(function()
      local list = assert(m:allocate(2)) -- the reset pool; dropped unreleased
      probe[1] = list[2]
      probe[2] = m:register(assert(list[1]:stage(iota(75100))))
    end)()
    assert.are.equal(0, m:reset_pool())
    local blocks = assert(m:allocate(2)) -- evicts; the policy collects the garbage
    assert.are.equal(2, #blocks)
    assert.is_true(finalized_during, "the guards were collected inside victims()")
    assert.are.equal(1, m:metrics().policy_errors, "the empty answer")
    local counts = check(m)
    assert.are.equal(2, counts.mutable)
    assert.are.equal(0, counts.reset, "the dropped mutable block came back, and was allocated")
    assert.are.equal(2, counts.inactive, "the dropped immutable block was cached; one evicted")
    release_all(blocks)
    assert.are.equal(0, m:metrics().kvbm_inflight_immutable)
    assert.are.equal(0, m:metrics().kvbm_inflight_mutable)
  end)

  it("#89 a Lua policy with good answers picks the victims", function()
    local order = {}
    local policy = {
      on_insert = function(id) order[#order + 1] = id end,
      on_remove = function(id)
        for i, v in ipairs(order) do if v == id then table.remove(order, i) break end end
      end,
      victims = function(n) -- newest first
        local t = {}
        for i = 1, n do t[i] = order[#order - i + 1] end
        return t
      end,
    }
    local m = mgr(4, { backend = policy })
    for i = 0, 3 do reg(m, iota(73000 + 4 * i)):release() end
    local _, evicted = m:allocate_with_evictions(2)
    assert.are.same({ iota(73012), iota(73008) }, evicted)
    assert.are.equal(0, m:metrics().policy_errors)
    check(m)
  end)
end)

-- -------------------------------------------------------- reset on release

describe("manager reset-on-release", function()
  it("#90 a block flagged evict-on-release skips the cache", function()
    local m = mgr(4)
    local r, h = m:registry(), iota(50000)
    local ib = reg(m, h)
    ib:set_evict_on_release(true)
    assert.are.equal(0, m:inactive())
    assert.are.equal(3, m:reset_pool())
    ib:release()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.is_false(r:present(h, m))
    assert.is_false(r:is_registered(h))
    assert.are.same({}, m:match { h })
    local s = m:metrics()
    assert.are.equal(0, s.kvbm_inflight_immutable)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    assert.are.equal(4, s.kvbm_reset_pool_size)
    check(m)
  end)

  it("#91 the flag is shared by clones; only the last release honours it", function()
    local m = mgr(4)
    local r, h = m:registry(), iota(50001)
    local a = reg(m, h)
    local b = a:clone()
    a:set_evict_on_release(true)
    a:release()
    assert.are.equal(3, m:reset_pool())
    assert.are.equal(0, m:inactive())
    local matched = m:match { h }
    assert.are.equal(1, #matched, "still matchable while clones exist")
    release_all(matched)
    b:release()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.is_false(r:is_registered(h))
    check(m)
  end)

  it("#92 the last writer wins", function()
    local m = mgr(4)
    local r, h = m:registry(), iota(50002)
    local a = reg(m, h)
    local b = a:clone()
    a:set_evict_on_release(true)
    b:set_evict_on_release(false)
    a:release()
    b:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    assert.is_true(r:present(h, m))
    assert.are.equal(1, check(m).inactive)
  end)

  it("#93 the flag does not outlive the slot's tenant", function()
    local m = mgr(1)
    local r = m:registry()
    local a = reg(m, iota(50003))
    a:set_evict_on_release(true)
    a:release()
    assert.are.equal(1, m:reset_pool())
    assert.is_false(r:is_registered(iota(50003)))
    local b = reg(m, iota(50004))
    assert.are.equal(0, b:id(), "the only slot")
    b:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(0, m:reset_pool())
  end)

  it("#94 a reset-on-release manager caches nothing by default", function()
    local m = mgr_rr(4, true)
    local r, h = m:registry(), iota(50005)
    reg(m, h):release()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.is_false(r:is_registered(h))
  end)

  it("#95 a per-block override caches, and survives resurrection", function()
    local m = mgr_rr(4, true)
    local r, h = m:registry(), iota(50009)
    local ib = reg(m, h)
    ib:set_evict_on_release(false)
    ib:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    local matched = m:match { h }
    assert.are.equal(0, m:inactive())
    release_all(matched)
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    assert.is_true(r:present(h, m))
    assert.is_true(r:is_registered(h))
  end)

  it("#96 set(false) on a reset-on-release manager caches the block", function()
    local m = mgr_rr(4, true)
    local ib = reg(m, iota(50006))
    ib:set_evict_on_release(false)
    ib:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
  end)

  it("#97 the flag survives match + release cycles (sequential end state of the eager race)", function()
    local m = mgr(4)
    local r, h = m:registry(), iota(50007)
    local ib = reg(m, h)
    ib:set_evict_on_release(true)
    for _ = 1, 3 do -- the block changes hands, never reaching a last release
      local matched = m:match { h }
      assert.are.equal(1, #matched)
      assert.are.equal(ib:id(), matched[1]:id())
      ib:release()
      ib = matched[1]
      assert.are.equal(0, m:inactive())
    end
    ib:release()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.is_false(r:is_registered(h))
    check(m)
  end)

  it("#98 a duplicate always resets; the primary is cached", function()
    local m = mgr(4)
    local h = iota(50008)
    local primary, dup = reg(m, h), reg(m, h)
    assert.are.equal(0, primary:id())
    assert.are.equal(1, dup:id())
    local reset, inactive = m:reset_pool(), m:inactive()
    dup:release()
    assert.are.equal(reset + 1, m:reset_pool())
    assert.are.equal(inactive, m:inactive())
    primary:release()
    assert.are.equal(inactive + 1, m:inactive())
    check(m)
  end)

  it("#99 an override survives several resurrection cycles", function()
    local m = mgr_rr(4, true)
    local r, h = m:registry(), iota(50010)
    local ib = reg(m, h)
    ib:set_evict_on_release(false)
    ib:release()
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    for _ = 1, 2 do
      release_all(m:match { h })
      assert.are.equal(1, m:inactive())
      assert.are.equal(3, m:reset_pool())
    end
    assert.is_true(r:is_registered(h))
  end)

  it("#100 setting the flag on a resurrected block takes effect", function()
    local m = mgr_rr(4, true)
    local r, h = m:registry(), iota(50011)
    local ib = reg(m, h)
    ib:set_evict_on_release(false)
    ib:release()
    local matched = m:match { h }
    matched[1]:set_evict_on_release(true)
    matched[1]:release()
    assert.are.equal(0, m:inactive())
    assert.are.equal(4, m:reset_pool())
    assert.is_false(r:is_registered(h))
  end)

  it("#101 flags set per block of one batch", function()
    local m = mgr(4)
    local r = m:registry()
    local h = { iota(50020), iota(50021), iota(50022) }
    local out = m:register_all { staged(m, h[1]), staged(m, h[2]), staged(m, h[3]) }
    out[1]:set_evict_on_release(true)
    out[3]:set_evict_on_release(true)
    assert.are.equal(0, m:inactive())
    assert.are.equal(1, m:reset_pool())
    release_all(out)
    assert.are.equal(1, m:inactive())
    assert.are.equal(3, m:reset_pool())
    assert.is_true(r:present(h[2], m))
    assert.is_true(r:is_registered(h[2]))
    assert.is_false(r:is_registered(h[1]))
    assert.is_false(r:is_registered(h[3]))
    assert.is_false(r:present(h[1], m))
    check(m)
  end)

  it("#102 an eviction discards the override: the next tenant uses the manager default", function()
    local m = mgr_rr(1, true)
    local r = m:registry()
    local h1, h2 = iota(50030), iota(50031)
    local ib = reg(m, h1)
    ib:set_evict_on_release(false)
    ib:release()
    assert.are.equal(1, m:inactive())
    local mb = assert(m:allocate(1))[1]
    assert.are.equal(0, m:inactive())
    assert.is_false(r:is_registered(h1))
    local ib2 = m:register(assert(mb:complete(iota_seq(50031), 0)))
    ib2:release()
    assert.are.equal(1, m:reset_pool())
    assert.are.equal(0, m:inactive())
    assert.is_false(r:is_registered(h2))
  end)

  it("#103 the flag on a duplicate affects neither it nor the primary", function()
    local m = mgr(4)
    local h = iota(50040)
    local primary, dup = reg(m, h), reg(m, h)
    local reset, inactive = m:reset_pool(), m:inactive()
    dup:set_evict_on_release(true)
    dup:release()
    assert.are.equal(reset + 1, m:reset_pool())
    assert.are.equal(inactive, m:inactive())
    local matched = m:match { h }
    assert.are.equal(primary:id(), matched[1]:id())
    release_all(matched)
    primary:release()
    assert.are.equal(inactive + 1, m:inactive())
    check(m)
  end)

  it("#104 gauges through a flagged block's life", function()
    local m = mgr(4)
    local s = m:metrics()
    assert.are.equal(0, s.kvbm_inflight_immutable)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    assert.are.equal(4, s.kvbm_reset_pool_size)
    local mb = assert(m:allocate(1))[1]
    assert.are.equal(3, m:metrics().kvbm_reset_pool_size)
    local ib = m:register(assert(mb:complete(iota_seq(50050), 0)))
    assert.are.equal(1, m:metrics().kvbm_inflight_immutable)
    local before = m:metrics()
    ib:set_evict_on_release(true)
    assert.are.same(before, m:metrics())
    ib:release()
    s = m:metrics()
    assert.are.equal(0, s.kvbm_inflight_immutable)
    assert.are.equal(0, s.kvbm_inactive_pool_size)
    assert.are.equal(4, s.kvbm_reset_pool_size)
  end)
end)

-- ---------------------------------------------------------------- metrics

describe("manager metrics (§9)", function()
  it("lists the 15 kvbm_* series, and Prometheus text labels them by pool", function()
    local m1 = mgr(4, { name = "G1" })
    local m2 = mgr(8, { name = "G2" })
    local s = m1:metrics()
    local n = 0
    for k in pairs(s) do if k:match("^kvbm_") then n = n + 1 end end
    assert.are.equal(15, n)
    reg(m1, iota(90000)):release()
    local text = kvbm.prometheus { m1, m2 }
    assert.matches('kvbm_allocations_total{pool="G1"} 1\n', text, 1, true)
    assert.matches('kvbm_allocations_total{pool="G2"} 0\n', text, 1, true)
    assert.matches('kvbm_reset_pool_size{pool="G2"} 8\n', text, 1, true)
    assert.matches('kvbm_inactive_pool_size{pool="G1"} 1\n', text, 1, true)
    local families = 0
    for _ in text:gmatch("# TYPE ") do families = families + 1 end
    assert.are.equal(15, families)
  end)
end)

describe("manager names", function()
  it("gives unnamed managers distinct names pool0, pool1, ... (also on one registry)", function()
    local shared = kvbm.registry {}
    local a = assert(kvbm.manager { blocks = 1, registry = shared })
    local b = assert(kvbm.manager { blocks = 1, registry = shared })
    local c = assert(kvbm.manager { blocks = 1, registry = kvbm.registry {} })
    local names = { a:name(), b:name(), c:name() }
    for _, n in ipairs(names) do assert.matches("^pool%d+$", n) end
    assert.are_not.equal(names[1], names[2])
    assert.are_not.equal(names[1], names[3])
    assert.are_not.equal(names[2], names[3])
    -- numbered in creation order
    local num = function(n) return tonumber(n:match("%d+")) end
    assert.is_true(num(names[1]) < num(names[2]) and num(names[2]) < num(names[3]))
    -- so their metrics never collide
    local text = kvbm.prometheus { a, b, c }
    for _, n in ipairs(names) do
      assert.matches('kvbm_allocations_total{pool="' .. n .. '"} 0\n', text, 1, true)
    end
  end)

  it("keeps a given name", function()
    assert.are.equal("gpu", mgr(1, { name = "gpu" }):name())
  end)

  it("kvbm.prometheus refuses two pools with one name, naming them", function()
    local m1 = mgr(1, { name = "G1" })
    local m2 = mgr(1, { name = "G2" })
    local m3 = mgr(1, { name = "G1" })
    local ok, err = pcall(kvbm.prometheus, { m1, m2, m3 })
    assert.is_false(ok)
    assert.are.equal('kvbm.prometheus: managers #1 and #3 are both named "G1" (give each pool a distinct name)',
      tostring(err):gsub("^.-: kvbm%.prometheus", "kvbm.prometheus"))
    -- the same manager twice is the same pool twice: refused as well
    assert.has_error(function() kvbm.prometheus { m1, m1 } end)
    assert.is_string(kvbm.prometheus { m1, m2 })
  end)
end)

describe("manager metrics printing and option checks", function()
  it("prints m:metrics() one metric a line, every field, hit_rate last", function()
    local m = mgr(4, { name = "G1" })
    reg(m, iota(7)):release()
    local s = m:metrics()
    local text = tostring(s)
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal("kvbm.Metrics", lines[1])
    local n = 0
    for k, v in pairs(s) do
      n = n + 1
      assert.matches("\n  " .. k:gsub("_", "%%_") .. " +" .. tostring(v):gsub("%.", "%%.") .. "\n?", text)
    end
    assert.are.equal(n + 1, #lines)
    assert.matches("^  hit_rate ", lines[#lines])
    for i = 2, #lines do assert.is_true(#lines[i] < 60, lines[i]) end
  end)

  it("checks thresholds in the engine, with one message, whatever the backend", function()
    for _, backend in ipairs { "lru", "multi_lru" } do
      local m, err = kvbm.manager { blocks = 4, registry = kvbm.registry { frequency = "small" }, backend = backend,
        thresholds = { 6, 2, 10 } }
      assert.is_nil(m)
      assert.are.equal("invalid_config", err.code)
      assert.are.equal("Builder validation failed: Thresholds must be in ascending order: 6 < 2 < 10 failed",
        err.message)
    end
    local _, err = kvbm.manager { blocks = 4, registry = kvbm.registry { frequency = "small" }, backend = "multi_lru",
      thresholds = { 2, 6, 300 } }
    -- the value given, not a clamped 255
    assert.are.equal("Builder validation failed: thresholds[3] must be an integer in 0..255, got 300", err.message)
    _, err = kvbm.manager { blocks = 4, registry = kvbm.registry { frequency = "small" }, backend = "multi_lru",
      thresholds = { 2, 6, 200 } }
    assert.are.equal("Builder validation failed: hot_to_very_hot threshold (200) must be <= 15 (4-bit counter maximum)",
      err.message)
  end)
end)
