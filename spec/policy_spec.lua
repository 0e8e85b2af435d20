-- Eviction policies written in Lua: the shipped kvbm.policy.lru and
-- kvbm.policy.lfu give exactly the orders of the C "lru" and "multi_lru"
-- backends, and a policy that misbehaves never corrupts the pool.
local kvbm = require "kvbm"
local helpers = require "helpers"
local lru = require "kvbm.policy.lru"
local lfu = require "kvbm.policy.lfu"

local SALT = 42

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, msg)
  return counts
end

local function root(i) return kvbm.sequence(helpers.range(4, i), 4, SALT):hash(0) end

local function roots(n, base)
  local hs = {}
  for i = 1, n do hs[i] = root((base or 0) + 10 * i) end
  return hs
end

local function pick(hashes, idx)
  local t = {}
  for i, k in ipairs(idx) do t[i] = hashes[k] end
  return t
end

local function register(m, hashes)
  local ibs = {}
  for i, h in ipairs(hashes) do ibs[i] = m:register(assert(m:allocate(1))[1]:stage(h)) end
  return ibs
end

local function release(ibs, order)
  for _, i in ipairs(order) do ibs[i]:release() end
end

local function release_all(list)
  for _, b in ipairs(list) do b:release() end
end

local function touch(reg, h, n)
  for _ = 1, n do reg:touch(h) end
end

--- Backend makers: each takes a fresh registry and returns the manager's
--- backend option and thresholds (C backends) or a policy table.
local PAIRS = {
  {
    name = "lru",
    c = function() return "lru" end,
    lua = function() return lru.new() end,
  },
  {
    name = "multi_lru (default thresholds)",
    c = function() return "multi_lru" end,
    lua = function(reg) return lfu.new(reg, { 3, 8, 15 }) end,
  },
  {
    name = "multi_lru (thresholds 2, 6, 15)",
    c = function() return "multi_lru", { 2, 6, 15 } end,
    lua = function(reg) return lfu.new(reg, { 2, 6, 15 }) end,
  },
  {
    name = "multi_lru (thresholds 1, 2, 4)",
    c = function() return "multi_lru", { 1, 2, 4 } end,
    lua = function(reg) return lfu.new(reg, { 1, 2, 4 }) end,
  },
}

--- A manager built by maker (a PAIRS entry's c or lua) on a fresh registry.
local function build(maker, blocks, opts)
  opts = opts or {}
  local reg = kvbm.registry{ frequency = "medium" }
  local backend, thresholds = maker(reg)
  local m = assert(kvbm.manager{ blocks = blocks, block_size = 4, registry = reg, backend = backend,
                                 thresholds = thresholds, duplicates = opts.duplicates })
  return m, reg, backend
end

describe("Lua eviction policies", function()
  describe("modules", function()
    it("return a constructor of policy tables", function()
      local reg = kvbm.registry{ frequency = "small" }
      for _, p in ipairs({ lru.new(), lfu.new(reg), lfu.new(reg, { 3, 8, 15 }) }) do
        assert.are.equal("function", type(p.on_insert))
        assert.are.equal("function", type(p.on_remove))
        assert.are.equal("function", type(p.victims))
        assert.are.equal(0, p.size())
      end
    end)

    it("set no globals", function()
      local before = {}
      for k in pairs(_G) do before[k] = true end
      package.loaded["kvbm.policy.lru"], package.loaded["kvbm.policy.lfu"] = nil, nil
      local l1, l2 = require "kvbm.policy.lru", require "kvbm.policy.lfu"
      local reg = kvbm.registry{ frequency = "small" }
      local p, q = l1.new(), l2.new(reg)
      p.on_insert(1, root(1))
      q.on_insert(1, root(1))
      p.victims(1)
      q.victims(1)
      for k in pairs(_G) do assert.is_true(before[k], "new global " .. tostring(k)) end
    end)

    it("lfu.new checks its registry and thresholds", function()
      local reg = kvbm.registry{ frequency = "small" }
      assert.has_error(function() lfu.new() end, "lfu.new: expected a kvbm.Registry")
      assert.has_error(function() lfu.new({}) end, "lfu.new: expected a kvbm.Registry")
      assert.has_error(function() lfu.new(kvbm.registry()) end)
      for _, bad in ipairs({ {}, { 0, 1, 2 }, { 3, 2, 8 }, { 3, 3, 8 }, { 2, 6, 16 }, { 1.5 }, "x" }) do
        assert.has_error(function() lfu.new(reg, bad) end)
      end
      assert.is_table(lfu.new(reg, { 15 }))
      assert.is_table(lfu.new(reg, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 }))
    end)
  end)

  describe("fixed orders: the Lua policy and the C backend agree", function()
    --- Runs scenario(maker) for the C backend and the Lua policy of pair;
    --- both must give the expected result.
    local function both(pair, expected, scenario)
      local c_out = scenario(pair.c)
      local l_out = scenario(pair.lua)
      assert.are.same(expected, c_out, "C " .. pair.name)
      assert.are.same(expected, l_out, "Lua " .. pair.name)
    end

    for _, pair in ipairs(PAIRS) do
      describe(pair.name, function()
        local hs = roots(6)

        it("all cold: evicts in release order", function()
          both(pair, pick(hs, { 3, 1, 4, 5, 2 }), function(maker)
            local m = build(maker, 5)
            release(register(m, pick(hs, { 1, 2, 3, 4, 5 })), { 3, 1, 4, 5, 2 })
            local _, evicted = m:allocate_with_evictions(5)
            check(m)
            return evicted
          end)
        end)

        it("takes the reset pool first", function()
          both(pair, { { 2, 3, 4, 1, 0 }, pick(hs, { 2, 1 }) }, function(maker)
            local m = build(maker, 5)
            release(register(m, pick(hs, { 1, 2 })), { 2, 1 })
            local mbs, evicted = m:allocate_with_evictions(5)
            local ids = {}
            for i, b in ipairs(mbs) do ids[i] = b:id() end
            return { ids, evicted }
          end)
        end)

        it("a hit leaves the cache and its re-release enters at the tail", function()
          both(pair, pick(hs, { 1, 3, 4, 5, 2 }), function(maker)
            local m = build(maker, 5)
            release_all(register(m, pick(hs, { 1, 2, 3, 4, 5 })))
            release_all(m:match({ hs[2] }))
            local _, evicted = m:allocate_with_evictions(5)
            return evicted
          end)
        end)

        it("scan, scattered match, weak upgrade and Reject re-registration are hits", function()
          -- the scattered match touches hs[2] (count 2): still cold under
          -- thresholds 3, 8, 15, but a level up when the first threshold is <= 2
          local cold = pair.name == "lru" or pair.name:match("default")
          local expected = cold and { 5, 6, 1, 2, 4, 3 } or { 5, 6, 1, 4, 3, 2 }
          both(pair, pick(hs, expected), function(maker)
            local m = build(maker, 7, { duplicates = "reject" })
            local ibs = register(m, hs)
            local wb = ibs[4]:downgrade()
            release_all(ibs)
            local s = m:scan({ hs[1] }, false)
            s[hs[1]]:release()
            m:match_scattered({ root(999), hs[2] })[2]:release()
            wb:upgrade():release()
            register(m, { hs[3] })[1]:release()
            local _, evicted = m:allocate_with_evictions(7)
            wb:release()
            return evicted
          end)
        end)

        it("interleaves releases and evictions", function()
          both(pair, { { hs[2] }, pick(hs, { 4, 1, 5, 3 }) }, function(maker)
            local m = build(maker, 4)
            local ibs = register(m, pick(hs, { 1, 2, 3, 4 }))
            release(ibs, { 2, 4 })
            local mbs, first = m:allocate_with_evictions(1)
            release(ibs, { 1 })
            m:register(mbs[1]:stage(hs[5])):release()
            release(ibs, { 3 })
            local _, rest = m:allocate_with_evictions(4)
            return { first, rest }
          end)
        end)

        it("reset_inactive drains the policy too", function()
          both(pair, { 0, 3, pick(hs, { 2, 1, 3 }) }, function(maker)
            local m = build(maker, 3)
            release(register(m, pick(hs, { 1, 2, 3 })), { 1, 2, 3 })
            assert.is_true(m:reset_inactive())
            local inactive = m:inactive()
            release(register(m, pick(hs, { 1, 2, 3 })), { 2, 1, 3 })
            local n = m:inactive()
            local _, evicted = m:allocate_with_evictions(3)
            return { inactive, n, evicted }
          end)
        end)

        it("a block released with evict_on_release skips the cache", function()
          both(pair, pick(hs, { 2, 1 }), function(maker)
            local m = build(maker, 3)
            local ibs = register(m, pick(hs, { 1, 2, 3 }))
            ibs[3]:set_evict_on_release(true)
            release(ibs, { 2, 3, 1 }) -- hs[3] goes to the reset pool, not the cache
            local _, evicted = m:allocate_with_evictions(3)
            return evicted
          end)
        end)

        if pair.name:match("multi_lru") then
          it("orders by the level chosen at insert time", function()
            -- counts after registration: 1, 4, 9, 15, 1, 2
            local extra = { 0, 3, 8, 14, 0, 1 }
            local c_out, l_out
            for side, maker in ipairs({ pair.c, pair.lua }) do
              local m, reg = build(maker, 6)
              for i, h in ipairs(hs) do touch(reg, h, extra[i]) end
              release(register(m, hs), { 4, 3, 6, 2, 5, 1 })
              touch(reg, hs[5], 15) -- after insert: no effect
              local _, evicted = m:allocate_with_evictions(6)
              if side == 1 then c_out = evicted else l_out = evicted end
            end
            assert.are.same(c_out, l_out)
            assert.are_not.same(pick(hs, { 4, 3, 6, 2, 5, 1 }), c_out, "the levels matter here")
          end)
        end
      end)
    end

    it("lfu without thresholds: lowest frequency first, ties in release order", function()
      local m, reg = build(function(r) return lfu.new(r) end, 8)
      local hs = roots(8)
      local extra = { 4, 0, 2, 0, 14, 2, 7, 1 } -- counts 5, 1, 3, 1, 15, 3, 8, 2
      for i, h in ipairs(hs) do touch(reg, h, extra[i]) end
      local order = { 7, 5, 3, 1, 8, 6, 4, 2 }
      release(register(m, hs), order)
      local expected = {}
      for i, k in ipairs(order) do expected[i] = { k = k, f = reg:frequency(hs[k]), at = i } end
      table.sort(expected, function(a, b) return a.f < b.f or (a.f == b.f and a.at < b.at) end)
      for i, e in ipairs(expected) do expected[i] = hs[e.k] end
      local _, evicted = m:allocate_with_evictions(8)
      assert.are.same(expected, evicted)
      assert.are.same(pick(hs, { 4, 2, 8, 3, 6, 1, 7, 5 }), evicted)
    end)

    it("lfu reads the frequency when the block enters the cache", function()
      local m, reg = build(function(r) return lfu.new(r) end, 2)
      local hs = roots(2)
      local ibs = register(m, hs)
      ibs[1]:release() -- frequency 1
      touch(reg, hs[1], 10)
      touch(reg, hs[2], 1)
      ibs[2]:release() -- frequency 2
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same(hs, evicted)
    end)
  end)

  describe("random workloads: Lua and C give the same evictions", function()
    local POOL = roots(40, 5000)

    --- Drives a C-backend manager and a Lua-policy manager (each on its own
    --- registry, so their frequency counts stay equal) with one random
    --- sequence of operations; compares every observable answer.
    local function twins(pair, seed, nops)
      math.randomseed(seed)
      local duplicates = seed % 2 == 0 and "reject" or "allow"
      local sides = {}
      for i, maker in ipairs({ pair.c, pair.lua }) do
        local m, reg, backend = build(maker, 12, { duplicates = duplicates })
        sides[i] = { m = m, reg = reg, policy = type(backend) == "table" and backend or nil, held = {} }
      end
      local evicted_total = 0
      local function both(f)
        local a, b = f(sides[1]), f(sides[2])
        assert.are.same(a, b)
        return a
      end
      local function ids(list)
        local t = {}
        for i, b in ipairs(list) do t[i] = b:id() end
        return t
      end
      for step = 1, nops do
        -- keep most blocks cached, so that allocations have to evict
        local r = #sides[1].held > 8 and 45 or math.random(100)
        if r <= 30 then -- allocate, stage, register (one by one or as a batch)
          local n = math.random(0, 4)
          local hs = {}
          for i = 1, n do hs[i] = POOL[math.random(#POOL)] end
          local batch = math.random(2) == 1
          both(function(s)
            local mbs, evicted = s.m:allocate_with_evictions(n)
            if not mbs then return { "no_space", evicted.code, s.m:available() } end
            local out = { ids(mbs), evicted }
            if s == sides[1] then evicted_total = evicted_total + #evicted end
            local cbs = {}
            for i, b in ipairs(mbs) do cbs[i] = b:stage(hs[i]) end
            local ibs = batch and s.m:register_all(cbs) or {}
            if not batch then for i, cb in ipairs(cbs) do ibs[i] = s.m:register(cb) end end
            out[3] = ids(ibs)
            for _, ib in ipairs(ibs) do s.held[#s.held + 1] = ib end
            return out
          end)
        elseif r <= 60 then -- release a held block
          local k = #sides[1].held
          if k > 0 then
            local i = math.random(k)
            both(function(s)
              table.remove(s.held, i):release()
              return s.m:inactive()
            end)
          end
        elseif r <= 70 then -- match a few hashes; keep the blocks or drop them
          local hs = {}
          for i = 1, math.random(1, 3) do hs[i] = POOL[math.random(#POOL)] end
          local keep = math.random(2) == 1
          both(function(s)
            local got = s.m:match(hs)
            local out = ids(got)
            for _, b in ipairs(got) do
              if keep then s.held[#s.held + 1] = b else b:release() end
            end
            return out
          end)
        elseif r <= 75 then -- scan, with or without touches
          local hs = {}
          for i = 1, math.random(1, 4) do hs[i] = POOL[math.random(#POOL)] end
          local t = math.random(2) == 1
          both(function(s)
            local got = s.m:scan(hs, t)
            local out = {}
            for i, h in ipairs(hs) do
              if got[h] then
                out[i] = got[h]:id()
                got[h]:release()
                got[h] = nil
              end
            end
            return out
          end)
        elseif r <= 85 then -- frequency touches outside the manager
          local h = POOL[math.random(#POOL)]
          local n = math.random(1, 6)
          both(function(s)
            touch(s.reg, h, n)
            return s.reg:frequency(h)
          end)
        elseif r <= 90 then -- clone or flag a held block
          local k = #sides[1].held
          if k > 0 then
            local i, flag = math.random(k), math.random(3) == 1
            both(function(s)
              local b = s.held[i]
              if flag then b:set_evict_on_release(true) else s.held[#s.held + 1] = b:clone() end
              return b:id()
            end)
          end
        elseif r <= 92 then
          both(function(s)
            local ok, err = s.m:reset_inactive()
            return { ok or err.code, s.m:reset_pool() }
          end)
        else -- a large allocation that may fail, registered and released at once
          local n = math.random(1, 12)
          local hs = {}
          for i = 1, n do hs[i] = POOL[math.random(#POOL)] end
          both(function(s)
            local mbs, evicted = s.m:allocate_with_evictions(n)
            if not mbs then return { "no_space" } end
            local out = { ids(mbs), evicted }
            if s == sides[1] then evicted_total = evicted_total + #evicted end
            for i, b in ipairs(mbs) do mbs[i] = b:stage(hs[i]) end
            local ibs = s.m:register_all(mbs)
            out[3] = ids(ibs)
            release_all(ibs)
            return out
          end)
        end
        both(function(s)
          local c = check(s.m)
          return { s.m:available(), s.m:inactive(), c.primary, c.duplicate }
        end)
        local p = sides[2].policy
        assert.are.equal(sides[2].m:inactive(), p.size(), "the policy tracks the cache, step " .. step)
        assert.are.equal(0, sides[2].m:metrics().policy_errors)
      end
      for _, s in ipairs(sides) do release_all(s.held) end
      both(function(s) return s.m:inactive() end)
      return evicted_total
    end

    for _, pair in ipairs(PAIRS) do
      it(pair.name, function()
        for _, seed in ipairs({ 1, 2, 3, 4, 5, 6 }) do
          local evicted = twins(pair, seed, 400)
          assert.is_true(evicted >= 100, "the workload evicts (" .. evicted .. " blocks, seed " .. seed .. ")")
        end
      end)
    end
  end)

  describe("a misbehaving policy never corrupts the pool", function()
    --- A manager of 4 blocks whose policy is lru.new() with victims
    --- replaced by bad(n, ctx); ctx.held is a held block's id.
    local function bad_manager(bad, hooks)
      local reg = kvbm.registry{ frequency = "small" }
      local inner = lru.new()
      local ctx = {}
      local policy = {
        on_insert = hooks and hooks.on_insert or inner.on_insert,
        on_remove = hooks and hooks.on_remove or inner.on_remove,
        victims = function(n) return bad(n, ctx, inner) end,
      }
      local m = assert(kvbm.manager{ blocks = 5, block_size = 4, registry = reg, backend = policy })
      ctx.m, ctx.reg, ctx.policy = m, reg, policy
      return m, reg, ctx
    end

    --- Fills the cache with hs[1..4] (released in order) and holds hs[5].
    local function fill(m, ctx)
      local hs = roots(5, 800)
      local ibs = register(m, hs)
      release(ibs, { 1, 2, 3, 4 })
      ctx.held = ibs[5]:id()
      ctx.ids = {}
      for i = 1, 4 do ctx.ids[i] = i - 1 end
      return hs, ibs[5]
    end

    local BAD = {
      ["raises"] = function() error("boom") end,
      ["returns nil"] = function() return nil end,
      ["returns a number"] = function() return 42 end,
      ["returns a string"] = function() return "0,1" end,
      ["returns too few ids"] = function() return {} end,
      ["returns unknown ids"] = function(n) local t = {} for i = 1, n do t[i] = 1000 + i end return t end,
      ["returns negative ids"] = function(n) local t = {} for i = 1, n do t[i] = -i end return t end,
      ["returns huge ids"] = function(n) local t = {} for i = 1, n do t[i] = (1 << 40) + i end return t end,
      ["returns a held id"] = function(n, ctx) local t = {} for i = 1, n do t[i] = ctx.held end return t end,
      ["repeats an id"] = function(n, ctx) local t = {} for i = 1, n do t[i] = ctx.ids[4] end return t end,
      ["returns strings"] = function(n) local t = {} for i = 1, n do t[i] = "id" .. i end return t end,
      ["returns floats"] = function(n) local t = {} for i = 1, n do t[i] = i + 0.5 end return t end,
      ["returns tables"] = function(n) local t = {} for i = 1, n do t[i] = {} end return t end,
      ["returns a hole"] = function(n, ctx) return { ctx.ids[4], nil, ctx.ids[3] } end,
      ["yields"] = function() coroutine.yield() end,
      ["removes its own victims function"] = function(_, ctx) ctx.policy.victims = nil end,
    }
    -- the evicted blocks (hs indices): the fallback after the valid ids
    local EXPECTED = { ["repeats an id"] = { 4, 1, 2 }, ["returns a hole"] = { 4, 1, 2 } }

    local names = {}
    for name in pairs(BAD) do names[#names + 1] = name end
    table.sort(names)

    for _, name in ipairs(names) do
      it("that " .. name .. ": falls back to insertion order and counts an error", function()
        local m, reg, ctx = bad_manager(BAD[name])
        local hs, keep = fill(m, ctx)
        local before = m:metrics().policy_errors
        local mbs, evicted
        if name == "yields" then
          local co = coroutine.wrap(function() return m:allocate_with_evictions(3) end)
          mbs, evicted = co()
        else
          mbs, evicted = m:allocate_with_evictions(3)
        end
        assert.is_table(mbs, "the allocation succeeds")
        assert.are.equal(3, #mbs)
        assert.is_true(m:metrics().policy_errors > before)
        assert.are.equal(3, #evicted)
        local seen = {}
        for _, h in ipairs(evicted) do
          assert.is_nil(seen[h], "evicted twice")
          seen[h] = true
          assert.is_false(reg:present(h, m))
        end
        assert.are.same(pick(hs, EXPECTED[name] or { 1, 2, 3 }), evicted, "insertion order")
        assert.is_true(reg:present(hs[5], m), "the held block is untouched")
        check(m)
        -- the pool goes on working
        release_all(mbs)
        keep:release()
        assert.are.equal(5, m:available())
        local again = register(m, roots(5, 900))
        release_all(again)
        local more = assert(m:allocate(5))
        check(m)
        release_all(more)
        assert.is_true(m:reset_inactive())
        assert.are.equal(5, m:reset_pool())
        check(m)
      end)
    end

    it("uses the valid part of a partly valid answer", function()
      local m, _, ctx = bad_manager(function(n, c, inner)
        local t = inner.victims(n) -- the right ids, oldest first
        t[1] = c.held             -- but the first is a held block
        return t
      end)
      local hs = fill(m, ctx)
      local _, evicted = m:allocate_with_evictions(2)
      -- the valid second id (hs[2]) is evicted first, the fallback adds the oldest left
      assert.are.same(pick(hs, { 2, 1 }), evicted)
      assert.are.equal(1, m:metrics().policy_errors)
      check(m)
    end)

    it("ignores ids beyond the n asked for", function()
      local m, _, ctx = bad_manager(function(n, c, inner)
        local t = inner.victims(n)
        t[#t + 1] = c.held
        t[#t + 1] = 12345
        return t
      end)
      local hs = fill(m, ctx)
      local _, evicted = m:allocate_with_evictions(2)
      assert.are.same(pick(hs, { 1, 2 }), evicted)
      assert.are.equal(0, m:metrics().policy_errors)
      check(m)
    end)

    it("counts failing notifications and keeps the index right", function()
      local inner = lru.new()
      local fail = true
      local m, reg, ctx = bad_manager(function(n) return inner.victims(n) end, {
        on_insert = function(id, h)
          inner.on_insert(id, h)
          if fail then error("insert hook") end
        end,
        on_remove = function(id, h)
          inner.on_remove(id, h)
          if fail then error("remove hook") end
        end,
      })
      local hs, keep = fill(m, ctx) -- keep: a collected guard would release hs[5] (one more error)
      assert.are.equal(4, m:metrics().policy_errors, "one per failed on_insert")
      release_all(m:match({ hs[1] }))
      assert.are.equal(6, m:metrics().policy_errors, "on_remove and on_insert failed")
      fail = false
      local _, evicted = m:allocate_with_evictions(4)
      assert.are.same(pick(hs, { 2, 3, 4, 1 }), evicted)
      assert.are.equal(6, m:metrics().policy_errors)
      assert.is_true(reg:present(hs[5], m))
      check(m)
      keep:release()
    end)

    it("lets a full garbage collection inside victims() release blocks at once", function()
      local m, reg = bad_manager(function(n, _, inner)
        collectgarbage("collect")
        collectgarbage("collect")
        return inner.victims(n)
      end)
      local hs = roots(5, 1200)
      local function leave_garbage() -- in its own frame, so that nothing refers to ibs[5]
        local ibs = register(m, hs)
        release(ibs, { 1, 2, 3, 4 })
      end
      collectgarbage("stop") -- no automatic cycle before the one inside victims()
      leave_garbage()
      assert.are.equal(4, m:inactive(), "hs[5] is still held by its (unreachable) guard")
      -- ibs[5] is garbage now: its finalizer runs inside victims(), between core calls
      local ok, mbs, evicted = pcall(m.allocate_with_evictions, m, 1)
      collectgarbage("restart")
      assert.is_true(ok, mbs)
      assert.are.same({ hs[1] }, evicted)
      assert.are.equal(0, m:metrics().policy_errors)
      assert.are.equal(4, m:inactive(), "the collected guard released its block during victims()")
      assert.is_true(reg:present(hs[5], m))
      check(m)
      -- the policy heard of that release: it is the next victim after hs[2..4]
      release_all(mbs)
      local _, more = m:allocate_with_evictions(5)
      assert.are.same(pick(hs, { 2, 3, 4, 5 }), more)
      assert.are.equal(0, m:metrics().policy_errors)
      check(m)
    end)

    it("lets victims() collect dropped guards of the very blocks it is choosing among", function()
      local m, reg, ctx = bad_manager(function(n, c, inner)
        c.dropped = nil
        collectgarbage("collect")
        collectgarbage("collect")
        c.during = { m = c.m:inactive(), check = kvbm._debug.check(c.m) }
        return inner.victims(n)
      end)
      local hs = roots(5, 1300)
      local ibs = register(m, hs)
      release(ibs, { 1, 2 })
      ctx.dropped = { ibs[3], ibs[4], ibs[5] } -- only the policy's frame may drop them
      ibs = nil
      collectgarbage("stop")
      local mbs, evicted = m:allocate_with_evictions(2)
      collectgarbage("restart")
      assert.are.same({ hs[1], hs[2] }, evicted, "the policy's choice, from what it knew")
      assert.are.equal(5, ctx.during.m, "three guards released inside victims()")
      assert.is_table(ctx.during.check, "the pool was sound inside victims()")
      assert.are.equal(0, m:metrics().policy_errors)
      assert.are.equal(3, m:inactive())
      for i = 3, 5 do assert.is_true(reg:present(hs[i], m)) end
      check(m)
      release_all(mbs)
    end)

    describe("calling back into its own manager from victims()", function()
      -- what would make the manager evict, which its own policy decides
      local REFUSED = {
        allocate = function(ctx) return ctx.m:allocate(1) end,
        allocate_with_evictions = function(ctx) return ctx.m:allocate_with_evictions(1) end,
        allocate_set = function(ctx) return ctx.m:allocate_set(1) end,
        reset_inactive = function(ctx) return ctx.m:reset_inactive() end,
        close = function(ctx) return ctx.m:close() end,
      }
      -- everything else: no core call is in progress while the policy runs
      local ALLOWED = {
        match = function(ctx) return ctx.m:match({ root(1) }) end,
        scan = function(ctx) return ctx.m:scan({ root(1) }) end,
        metrics = function(ctx) return ctx.m:metrics().inactive_pool_size end,
        ["policy_errors"] = function(ctx) return ctx.m:policy_errors() end,
        ["release a block"] = function(ctx) return ctx.block:release() end,
        ["clone a block"] = function(ctx) return ctx.block:clone():release() end,
        ["read a block's hash"] = function(ctx) return ctx.block:hash() end,
        ["register a handle"] = function(ctx) return ctx.reg:handle(root(1)):release() end,
        ["release a handle"] = function(ctx) return ctx.handle:release() end,
        ["release a weak block"] = function(ctx) return ctx.weak:release() end,
        ["touch the registry's tracker"] = function(ctx) return ctx.reg:touch(root(1)) end,
        ["use another manager of the registry"] = function(ctx) return ctx.other:allocate(1) end,
        ["check the pool"] = function(ctx) return assert(kvbm._debug.check(ctx.m)) end,
      }
      local function sorted(t)
        local names = {}
        for name in pairs(t) do names[#names + 1] = name end
        table.sort(names)
        return names
      end

      --- A manager whose victims() first runs call(ctx); returns what
      --- allocate_with_evictions(2) gave and the call's error (or nil).
      local function run(call)
        local message
        local m, reg, ctx = bad_manager(function(n, c, inner)
          if c.called then return inner.victims(n) end
          c.called = true -- the first eviction only
          local ok, err = pcall(call, c)
          message = not ok and tostring(err) or nil
          if not ok then error(err, 0) end
          return inner.victims(n)
        end)
        ctx.other = assert(kvbm.manager{ blocks = 1, block_size = 4, registry = reg, name = "G2" })
        local hs, keep = fill(m, ctx)
        ctx.block = keep
        ctx.handle = reg:handle(root(999))
        ctx.weak = keep:downgrade()
        local mbs, evicted = m:allocate_with_evictions(2)
        return m, reg, hs, keep, mbs, evicted, message, ctx
      end

      --- Lets go of everything run() left held; the whole pool is usable again.
      local function release_and_reuse(m, ctx, mbs, keep)
        ctx.handle:release()
        ctx.weak:release()
        release_all(mbs)
        keep:release()
        assert.are.equal(5, m:available())
        assert.is_not_nil(m:allocate(5))
        check(m)
      end

      for _, name in ipairs(sorted(REFUSED)) do
        it(name .. " raises a re-entrancy error naming the manager, counted as a policy error", function()
          local m, reg, hs, keep, mbs, evicted, message, ctx = run(REFUSED[name])
          assert.matches("re%-entrant call: the eviction policy of manager pool%d+ is running", message)
          assert.matches("^victims: .*re%-entrant call", select(2, m:policy_errors()))
          assert.are.equal(1, m:metrics().policy_errors)
          assert.are.same(pick(hs, { 1, 2 }), evicted, "the fallback order")
          assert.are.equal(2, #mbs)
          check(m)
          -- the manager, the block and the registry are intact and usable
          assert.are.equal(hs[5], keep:hash())
          assert.are.equal(1, keep:use_count())
          assert.is_true(reg:present(hs[5], m))
          assert.are.equal(2, m:inactive())
          release_and_reuse(m, ctx, mbs, keep)
        end)
      end

      for _, name in ipairs(sorted(ALLOWED)) do
        it(name .. " works, and the policy's answer is used", function()
          local m, _, hs, keep, mbs, evicted, message, ctx = run(ALLOWED[name])
          assert.is_nil(message)
          assert.are.equal(0, m:metrics().policy_errors, tostring((select(2, m:policy_errors()))))
          assert.are.same(pick(hs, { 1, 2 }), evicted)
          assert.are.equal(2, #mbs)
          check(m)
          release_and_reuse(m, ctx, mbs, keep)
          assert.are.equal(0, m:metrics().policy_errors, tostring((select(2, m:policy_errors()))))
        end)
      end

      it("a handle collected inside victims() lets go of its registration at once", function()
        local h, during = root(999), nil
        local m, reg, ctx = bad_manager(function(n, c, inner)
          c.handle = nil
          collectgarbage("collect")
          during = c.reg:is_registered(h)
          return inner.victims(n)
        end)
        local _, keep = fill(m, ctx)
        ctx.handle = reg:handle(h)
        local mbs = m:allocate_with_evictions(1)
        assert.are.equal(0, m:metrics().policy_errors)
        assert.is_false(during, "released while victims() ran")
        release_all(mbs)
        keep:release()
        check(m)
      end)

      it("on_events may read the manager and allocate on another one", function()
        local reg = kvbm.registry{}
        local other = assert(kvbm.manager{ blocks = 2, block_size = 4, registry = reg })
        local inner = lru.new()
        local seen, refused = {}, nil
        local m
        m = assert(kvbm.manager{ blocks = 3, block_size = 4, registry = reg, backend = {
          on_events = function(list)
            for _, e in ipairs(list) do
              if e.kind == "insert" then inner.on_insert(e.id, e.hash) elseif e.kind == "remove" then inner.on_remove(e.id) end
            end
            seen[#seen + 1] = m:inactive()
            local b = assert(other:allocate(1))
            b[1]:release()
            local ok, err = pcall(m.allocate, m, 1)
            if not ok then refused = err end
          end,
          victims = function(n) return inner.victims(n) end,
        } })
        local hs = roots(3, 1400)
        local ibs = register(m, hs)
        release_all(ibs)
        assert.is_true(#seen > 0)
        assert.are.equal(3, seen[#seen], "the last delivery saw the pool after the call")
        assert.matches("re%-entrant call: the eviction policy of manager", refused)
        local _, evicted = m:allocate_with_evictions(2)
        assert.are.same({ hs[1], hs[2] }, evicted)
        assert.are.equal(0, m:metrics().policy_errors)
        assert.are.equal(2, other:available())
        check(m)
      end)

      it("keeps the last error with its traceback", function()
        local function failing_victims() error("no victims today") end
        local m, reg, ctx = bad_manager(function(n, c, inner)
          if c.fail then failing_victims() end
          if c.garbage then return { "x" } end
          return inner.victims(n)
        end)
        assert.are.equal(0, m:policy_errors())
        assert.is_nil(select(2, m:policy_errors()), "no error yet")
        fill(m, ctx)
        ctx.fail = true
        local mbs = m:allocate_with_evictions(1)
        local count, last = m:policy_errors()
        assert.are.equal(1, count)
        assert.matches("^victims: .*no victims today", last)
        assert.matches("stack traceback:", last)
        assert.matches("in %a* ?%a* ?'?failing_victims'?", last)
        ctx.fail, ctx.garbage = false, true
        release_all(mbs) -- back to the reset pool: the next eviction needs two
        mbs = m:allocate_with_evictions(2)
        count, last = m:policy_errors()
        assert.are.equal(2, count)
        assert.are.equal("victims: entry 1 is not a block id (a string)", last)
        release_all(mbs)
        check(m)
      end)

      it("may read frequencies and counts (no re-entrancy for reads)", function()
        local seen
        local m, reg, ctx = bad_manager(function(n, c, inner)
          seen = { c.reg:frequency(root(800 + 10)), c.m:available(), c.m:inactive(), c.reg:is_registered(root(810)) }
          return inner.victims(n)
        end)
        fill(m, ctx)
        m:allocate_with_evictions(1)
        assert.are.same({ 1, 4, 4, true }, seen)
        assert.are.equal(0, m:metrics().policy_errors)
        check(m)
      end)
    end)
  end)

  it("runs every policy function between core calls: the pool is sound from inside each", function()
    for _, batched in ipairs({ false, true }) do
      local reg = kvbm.registry{}
      local inner = lru.new()
      local m, checks = nil, 0
      local function sound()
        assert(kvbm._debug.check(m))
        checks = checks + 1
      end
      local policy = { victims = function(n) sound() return inner.victims(n) end }
      if batched then
        policy.on_events = function(list)
          sound()
          for _, e in ipairs(list) do
            if e.kind == "insert" then inner.on_insert(e.id) elseif e.kind == "remove" then inner.on_remove(e.id) end
          end
        end
      else
        policy.on_insert = function(id) sound() inner.on_insert(id) end
        policy.on_remove = function(id) sound() inner.on_remove(id) end
      end
      m = assert(kvbm.manager{ blocks = 4, block_size = 4, registry = reg, backend = policy })
      for round = 1, 3 do
        local ibs = register(m, roots(3, 100 * round))
        release_all(ibs)
        release_all(m:match({ root(100 * round + 10) }))
        local set = assert(m:allocate_set(2))
        set:release()
      end
      assert.is_true(m:reset_inactive())
      assert.is_true(checks > 10)
      assert.are.equal(0, m:metrics().policy_errors, tostring((select(2, m:policy_errors()))))
      check(m)
    end
  end)

  describe("under kvbm.tiers", function()
    local function seq(n, base) return kvbm.sequence(helpers.range(4 * n, base), 4, SALT) end

    --- A planner over G1 (4 blocks) and G2 (6), both with backend(name),
    --- offloading on release; runs a workload of overlapping requests and
    --- returns what each tier ended up holding, and the planner.
    local function workload(backend, spy, g1)
      local t = kvbm.tiers{ block_size = 4, G1 = { blocks = g1 or 4, backend = backend("G1") },
        G2 = { blocks = 6, backend = backend("G2") }, policy = "offload_on_release" }
      local seqs = {}
      for i = 1, 6 do seqs[i] = seq(1 + i % 3, 100 * (i % 4)) end
      for round = 1, 3 do
        for i = 1, #seqs do
          local r = assert(t:admit(seqs[(i + round) % #seqs + 1]))
          t:complete_all() -- onboards
          r:commit()
          if spy then spy(t) end
          r:release()
          t:complete_all() -- offloads
        end
      end
      local held = {}
      for _, name in ipairs({ "G1", "G2" }) do
        local m = t:manager(name)
        local ids = {}
        for i, s in ipairs(seqs) do
          for pos = 0, s:blocks() - 1 do ids[#ids + 1] = t.registry:present(s:hash(pos), m) and (i .. ":" .. pos) or nil end
        end
        held[name] = { ids = ids, evictions = m:metrics().kvbm_evictions_total }
      end
      return held, t
    end

    it("is asked for exactly the victims of each planner allocation: the same as the C backend", function()
      local asked, policies = { G1 = 0, G2 = 0 }, {}
      local function lua_lru(name)
        local p = lru.new()
        local victims = p.victims
        p.victims = function(n)
          asked[name] = asked[name] + n
          return victims(n)
        end
        policies[name] = p
        return p
      end
      local want = workload(function() return "lru" end)
      local got, t = workload(lua_lru)
      assert.are.same(want, got)
      for _, name in ipairs({ "G1", "G2" }) do
        local m = t:manager(name)
        assert.are.equal(0, m:metrics().policy_errors, name .. ": " .. tostring((select(2, m:policy_errors()))))
        assert.are.equal(m:metrics().kvbm_evictions_total, asked[name], name .. ": every victim asked for was evicted")
        assert.are.equal(m:inactive(), policies[name].size(), name .. ": the policy tracks the cache")
        check(m)
      end
      assert.is_true(got.G1.evictions > 0 and got.G2.evictions > 0, "the workload evicts in both tiers")
      t:close()
    end)

    it("lets victims() collect dropped requests and guards in the middle of a planner call", function()
      local t
      local dropped, collected = 0, 0
      local function collecting(name)
        local p = lru.new()
        local victims = p.victims
        p.victims = function(n)
          collectgarbage("collect")
          collected = collected + 1
          if t then assert(kvbm._debug.check(t:manager(name))) end
          return victims(n)
        end
        return p
      end
      local got
      local pending = setmetatable({}, { __mode = "k" })
      got, t = workload(collecting, function(tt)
        -- a request and a guard left to the collector, unreleased (one at a
        -- time: a request collected mid-call is freed after the call)
        t = tt
        if next(pending) then return end
        local r = tt:admit(seq(1, 7000 + dropped))
        if r then dropped, pending[r] = dropped + 1, true end
        local extra = tt:manager("G2"):allocate(1)
        extra = nil
      end, 6)
      assert.is_true(collected > 0 and dropped > 0)
      collectgarbage("collect")
      collectgarbage("collect")
      for _, name in ipairs({ "G1", "G2" }) do
        local m = t:manager(name)
        assert.are.equal(0, m:metrics().policy_errors, name .. ": " .. tostring((select(2, m:policy_errors()))))
        check(m)
      end
      assert.is_table(got)
      t:close()
    end)

    it("refuses a planner call from inside victims(), as a policy error with its message", function()
      local t
      local policy = lru.new()
      local victims = policy.victims
      policy.victims = function(n)
        t:admit(seq(1, 9100))
        return victims(n)
      end
      t = kvbm.tiers{ block_size = 4, G1 = { blocks = 2, backend = policy } }
      local r = assert(t:admit(seq(2, 9000)))
      r:commit()
      r:release()
      local r2 = assert(t:admit(seq(1, 9200))) -- evicts: victims() runs inside the planner call
      local count, last = t:manager("G1"):policy_errors()
      assert.are.equal(1, count)
      assert.matches("^victims: .*re%-entrant call to the planner", last)
      assert.matches("stack traceback:", last)
      r2:release()
      check(t:manager("G1"))
      t:close()
    end)
  end)

  it("gives back every allocation", function()
    helpers.assert_no_leaks(function()
      local reg = kvbm.registry{ frequency = "small" }
      for _, p in ipairs({ lru.new(), lfu.new(reg), lfu.new(reg, { 3, 8, 15 }) }) do
        local m = assert(kvbm.manager{ blocks = 4, block_size = 4, registry = reg, backend = p })
        release_all(register(m, roots(4)))
        local mbs = m:allocate(4)
        release_all(mbs)
        m:close()
      end
    end)
  end)
end)
