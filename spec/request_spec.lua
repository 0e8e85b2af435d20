-- kvbm.request (RequestSequence): the catalogue scenarios of
-- events-sequence.md §3.9 (96-107, integrations/request.rs), then the Lua
-- side: bad input raises, errors change nothing and hand guards back,
-- release gives every block back, leaks.
local kvbm = require "kvbm"
local helpers = require "helpers"

local BS = 4
local range = helpers.range

local function mgr(n)
  return assert(kvbm.manager { blocks = n, block_size = BS, backend = "lru", registry = kvbm.registry {} })
end

local function check(m)
  local counts, msg = kvbm._debug.check(m)
  assert(counts, "engine invariant broken: " .. tostring(msg))
  return counts
end

--- The crate's test helper: new, prefix match, allocate the rest plus a
--- generation block (when max > 0), stage and register; nil when the
--- allocation fails (the request's blocks are released then).
local function build_prefilled(tokens, max, m)
  local r = kvbm.request(tokens, max, BS)
  local matched = assert(r:match_and_add_prefix(m))
  if not r:allocate_blocks(r:num_blocks() - matched + (max > 0 and 1 or 0), m) then
    r:release()
    return nil
  end
  r:complete_and_register_pending(m)
  return r
end

--- Registers the full blocks of tokens in m, then drops them (they stay
--- matchable in the inactive pool).
local function populate(m, tokens)
  local s = kvbm.sequence(tokens, BS)
  for i, mb in ipairs(assert(m:allocate(#s))) do m:register(assert(mb:complete(s, i - 1))):release() end
end

local function counts(r) return { r:assigned_blocks(), r:staged_blocks(), r:unassigned_blocks() } end

describe("kvbm.request (request.rs)", function()
  it("#96 new only records tokens: nothing allocated", function()
    local r = kvbm.request(range(8), 10, BS)
    assert.are.equal(8, r:num_input_tokens())
    assert.are.equal(8, r:total_tokens())
    assert.are.equal(2, r:num_blocks())
    assert.are.equal(2, r:complete_sequence_blocks())
    assert.are.equal(0, r:generated_tokens())
    assert.are.equal(10, r:max_output_tokens())
    assert.are.equal(BS, r:block_size())
    assert.are.same({ 0, 0, 0 }, counts(r))
    assert.are.equal(0, r:prefix_matched_blocks())
    assert.are.equal(10, r:remaining_tokens())
    assert.is_false(r:is_complete())
  end)

  it("#97 build_prefilled: full blocks assigned plus one generation block", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(8), 10, m))
    assert.are.equal(8, r:num_input_tokens())
    assert.are.equal(8, r:total_tokens())
    assert.are.equal(2, r:num_blocks())
    assert.are.equal(0, r:generated_tokens())
    assert.are.same({ 2, 0, 1 }, counts(r))
    local partial = assert(build_prefilled(range(6), 10, m))
    assert.are.equal(1, partial:num_blocks())
    assert.are.same({ 1, 0, 1 }, counts(partial))
    local empty = assert(build_prefilled({}, 10, m))
    assert.are.equal(0, empty:num_blocks())
    assert.are.same({ 0, 0, 1 }, counts(empty))
    local zero = assert(build_prefilled(range(8), 0, m))
    assert.are.same({ 2, 0, 0 }, counts(zero))
    check(m)
  end)

  it("#98 build_prefilled fails when the manager is too small, holding nothing", function()
    local m = mgr(2)
    assert.is_nil(build_prefilled(range(12), 10, m))
    assert.are.equal(2, m:available())
  end)

  it("#99 prefix hits: a whole cached prefix, and a partial one", function()
    local m = mgr(20)
    populate(m, range(8))
    local r = assert(build_prefilled(range(8), 10, m))
    assert.are.equal(2, r:prefix_matched_blocks())

    local m2 = mgr(20)
    populate(m2, range(4))
    local p = assert(build_prefilled(range(12), 10, m2))
    assert.are.equal(1, p:prefix_matched_blocks())
    assert.are.same({ 3, 0, 1 }, counts(p))
    assert.are.equal(12 - 4, p:new_tokens_for_prefill())
  end)

  it("#100 add_matched_blocks: past the full blocks raises; a wrong hash is an error", function()
    local m = mgr(20)
    local r = kvbm.request(range(4), 10, BS)
    local source = kvbm.sequence(range(8), BS)
    local matched = {}
    for i, mb in ipairs(assert(m:allocate(2))) do matched[i] = m:register(assert(mb:complete(source, i - 1))) end
    assert.has_error(function() r:add_matched_blocks(matched) end, "matched blocks exceed completed sequence blocks")
    assert.are.same({ 0, 0, 0 }, counts(r))

    local other = kvbm.sequence({ 100, 101, 102, 103 }, BS)
    local mismatched = m:register(assert(assert(m:allocate(1))[1]:complete(other, 0)))
    local n, err = r:add_matched_blocks { mismatched }
    assert.is_nil(n)
    assert.are.equal("sequence_hash_mismatch", err.code)
    assert.are.equal(0, err.position)
    assert.are.equal(1, #err.blocks)
    assert.are.equal(mismatched, err.blocks[1])
    assert.are.equal(r:sequence():hash(0), err.expected)
    assert.are.equal(other:hash(0), err.actual)
    assert.matches("sequence hash mismatch at position 0: expected " .. kvbm.hash.tostring(err.expected), tostring(err), 1, true)
    assert.are.same({ 0, 0, 0 }, counts(r))
    assert.are.equal(0, r:prefix_matched_blocks())
  end)

  it("#101 append_token: the completed block index, the max_output limit, is_complete", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(5), 10, m))
    assert.is_nil(r:append_token(100))
    assert.are.equal(1, r:generated_tokens())
    assert.are.equal(6, r:total_tokens())

    local c = assert(build_prefilled(range(7), 10, m))
    assert.are.equal(1, c:append_token(100))
    assert.are.equal(2, c:num_blocks())
    assert.are.equal(7, c:num_input_tokens())

    local one = assert(build_prefilled(range(4), 1, m))
    one:append_token(100)
    assert.has_error(function() one:append_token(101) end,
      "Cannot generate more tokens: reached max_output_tokens limit")
    assert.are.equal(1, one:generated_tokens())
    assert.are.equal(5, one:total_tokens())

    local three = assert(build_prefilled(range(4), 3, m))
    assert.is_false(three:is_complete())
    three:append_token(100)
    assert.is_false(three:is_complete())
    three:append_token(101)
    assert.is_false(three:is_complete())
    three:append_token(102)
    assert.is_true(three:is_complete())
    assert.are.equal(0, three:remaining_tokens())

    assert.is_true(kvbm.request(range(4), 0, BS):is_complete())
  end)

  it("#102 a modular decode loop: append, complete_and_register, allocate", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(4), 8, m))
    for i = 0, 2 do assert.is_nil(r:append_token(100 + i)) end
    assert.are.equal(1, r:append_token(103))
    assert.is_false(r:is_complete())
    assert.are.equal(1, r:complete_and_register_pending(m))
    assert.are.same({ 2, 0, 0 }, counts(r))
    assert.is_true(r:allocate_blocks(1, m))
    assert.are.equal(1, r:unassigned_blocks())
    for i = 0, 2 do assert.is_nil(r:append_token(200 + i)) end
    assert.are.equal(2, r:append_token(203))
    assert.is_true(r:is_complete())
    r:complete_and_register_pending(m)
    assert.are.equal(3, r:assigned_blocks())
    r:release()
    assert.are.equal(0, r:assigned_blocks())
    assert.are.equal(20, m:available())
  end)

  it("#103 a modular prefill with a cached first block", function()
    local m = mgr(20)
    populate(m, range(4))
    local r = kvbm.request(range(8), 10, BS)
    assert.are.equal(1, r:match_and_add_prefix(m))
    assert.are.equal(1, r:prefix_matched_blocks())
    assert.is_true(r:allocate_blocks(r:num_blocks() - 1 + 1, m))
    r:complete_and_register_pending(m)
    assert.are.same({ 2, 0, 1 }, counts(r))
    check(m)
  end)

  it("#104 allocate_blocks: all or nothing; zero is fine", function()
    local m = mgr(2)
    local r = kvbm.request(range(4), 10, BS)
    assert.is_false(r:allocate_blocks(3, m))
    assert.are.equal(0, r:unassigned_blocks())
    assert.is_true(r:allocate_blocks(2, m))
    assert.are.equal(2, r:unassigned_blocks())
    local z = kvbm.request(range(4), 10, BS)
    assert.is_true(z:allocate_blocks(0, m))
    assert.are.equal(0, z:unassigned_blocks())
  end)

  it("#105 release gives the blocks back, twice is fine, and so does dropping the request", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(8), 10, m))
    assert.are.same({ 2, 0, 1 }, counts(r))
    assert.are.equal(17, m:available())
    r:release()
    assert.are.same({ 0, 0, 0 }, counts(r))
    assert.are.equal(20, m:available())
    r:release()
    assert.are.equal(0, r:assigned_blocks())

    do -- dropped in a scope: the collector releases the guards
      local dropped = assert(build_prefilled(range(8), 10, m))
      assert.are.equal(17, m:available())
      dropped = nil -- luacheck: ignore
    end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(20, m:available())

    do -- or at once, with <close>
      local closed <close> = assert(build_prefilled(range(8), 10, m))
      assert.are.equal(17, m:available())
    end
    assert.are.equal(20, m:available())
    check(m)
  end)

  it("#106 reacquire: matches again, allocates no generation block; cleans up on failure", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(8), 10, m))
    r:append_token(100)
    r:append_token(101)
    r:release()
    assert.is_true(r:reacquire(m))
    assert.are.same({ 2, 0, 0 }, counts(r))
    assert.are.equal(2, r:generated_tokens())
    assert.are.equal(2, r:prefix_matched_blocks())

    local small = mgr(4)
    local f = assert(build_prefilled(range(4), 10, small))
    f:release()
    local all = assert(small:allocate(4)) -- evicts the cached block too
    assert.is_false(f:reacquire(small))
    assert.are.same({ 0, 0, 0 }, counts(f))
    for _, b in ipairs(all) do b:release() end
    assert.are.equal(4, small:available())
  end)

  it("#107 tostring names RequestSequence and total_tokens", function()
    local m = mgr(20)
    local r = assert(build_prefilled(range(8), 10, m))
    local s = tostring(r)
    assert.matches("RequestSequence", s)
    assert.matches("total_tokens: 8", s)
    assert.are.equal("RequestSequence { total_tokens: 8, num_blocks: 2, generated_tokens: 0, "
      .. "max_output_tokens: 10, num_input_tokens: 8, prefix_matched_blocks: 0, "
      .. "assigned: 2, staged: 0, unassigned: 1 }", s)
  end)
end)

describe("kvbm.request (Lua)", function()
  it("raises on wrong argument types", function()
    local m = mgr(4)
    local r = kvbm.request(range(4), 2, BS)
    local bad = {
      function() kvbm.request(nil, 10, BS) end,
      function() kvbm.request(42, 10, BS) end,
      function() kvbm.request({}, -1, BS) end,
      function() kvbm.request({}, 1.5, BS) end,
      function() kvbm.request({}, 10, 0) end,
      function() kvbm.request({}, 10, "4") end,
      function() kvbm.request({ "a" }, 10, BS) end,
      function() kvbm.request({ -1 }, 10, BS) end,
      function() kvbm.request("abc", 10, BS) end, -- packed tokens: 4 bytes each
      function() kvbm.request { tokens = {}, max_output_tokens = 1 } end,
      function() kvbm.request { tokens = {}, max_output_tokens = 1, block_size = 4, salt = 1 } end,
      function() r:append_token("1") end,
      function() r:append_token(-1) end,
      function() r:append_token(2 ^ 32) end,
      function() r:append_token(0x100000000) end,
      function() r:allocate_blocks(-1, m) end,
      function() r:allocate_blocks(1, nil) end,
      function() r:allocate_blocks(1, r) end,
      function() r:match_and_add_prefix(nil) end,
      function() r:complete_and_register_pending({}) end,
      function() r:register_staged(nil) end,
      function() r:reacquire("m") end,
      function() r:drop_excess_unassigned(-1) end,
      function() r:add_matched_blocks("x") end,
      function() r:add_matched_blocks { assert(m:allocate(1))[1] } end,
    }
    for i, f in ipairs(bad) do assert.has_error(f, nil, "case " .. i) end
    assert.are.equal(0, r:generated_tokens())
    assert.are.equal(4, r:total_tokens())
    assert.are.same({ 0, 0, 0 }, counts(r))
  end)

  it("accepts the options form and packed tokens", function()
    local r = kvbm.request { tokens = range(9), max_output_tokens = 3, block_size = BS }
    assert.are.equal(9, r:num_input_tokens())
    assert.are.equal(2, r:num_blocks())
    local packed = kvbm.request(string.pack("<I4I4I4I4", 0, 1, 2, 3), 3, BS)
    assert.are.equal(1, packed:num_blocks())
    assert.are.equal(kvbm.request(range(4), 3, BS):sequence():hash(0), packed:sequence():hash(0))
    assert.is_true(kvbm.request.is(packed))
    assert.is_false(kvbm.request.is({}))
    assert.are.equal(kvbm.request.new, require("kvbm.request").new)
  end)

  it("match_and_add_prefix and reacquire refuse a request that holds blocks", function()
    local m = mgr(8)
    local r = assert(build_prefilled(range(8), 10, m))
    assert.has_error(function() r:match_and_add_prefix(m) end,
      "match_and_add_prefix called on sequence with existing assignments")
    assert.has_error(function() r:reacquire(m) end, "reacquire called with existing assignments")
    assert.are.same({ 2, 0, 1 }, counts(r))
  end)

  it("a sequence hash mismatch in the middle of a prefix leaves the request unchanged", function()
    local m = mgr(8)
    local r = kvbm.request(range(12), 10, BS)
    populate(m, range(4))
    assert.are.equal(1, r:match_and_add_prefix(m))
    local wrong = kvbm.sequence(range(12, 500), BS)
    local blocks = {}
    for i, mb in ipairs(assert(m:allocate(2))) do blocks[i] = m:register(assert(mb:complete(wrong, i))) end
    local n, err = r:add_matched_blocks(blocks)
    assert.is_nil(n)
    assert.are.equal(1, err.position) -- the first block past the one assigned
    assert.are.same(blocks, err.blocks)
    assert.are.same({ 1, 0, 0 }, counts(r))
    assert.are.equal(1, r:prefix_matched_blocks())
    for _, b in ipairs(err.blocks) do b:release() end
    r:release()
    assert.are.equal(8, m:available())
  end)

  it("a request whose block size differs from the manager's raises on staging", function()
    local m = mgr(8)
    local r = kvbm.request(range(8), 10, 8)
    assert.is_true(r:allocate_blocks(2, m))
    assert.has_error(function() r:stage_pending() end)
    -- the failed block was given back; the other one is still held
    assert.are.same({ 0, 0, 1 }, counts(r))
    assert.are.equal(7, m:available())
    r:release()
    assert.are.equal(8, m:available())
  end)

  it("stage_pending and register_staged are the two halves of complete_and_register_pending", function()
    local m = mgr(8)
    local r = kvbm.request(range(10), 10, BS)
    assert.is_true(r:allocate_blocks(3, m))
    r:stage_pending()
    assert.are.same({ 0, 2, 1 }, counts(r))
    assert.is_nil(m:match(r:sequence():hashes())[1]) -- staged is not visible
    assert.are.equal(2, r:register_staged(m))
    assert.are.same({ 2, 0, 1 }, counts(r))
    assert.are.equal(0, r:register_staged(m))
    assert.are.equal(2, #m:match(r:sequence():hashes()))
  end)

  it("page_indices lists assigned, staged, then unassigned ids; drop_excess_unassigned is LIFO", function()
    local m = mgr(10)
    local r = kvbm.request(range(9), 10, BS)
    assert.is_true(r:allocate_blocks(5, m))
    local la = r:assignments()
    local ids = {}
    for id in la:unassigned_iter() do ids[#ids + 1] = id end
    r:complete_and_register_pending(m)
    assert.are.same(ids, r:page_indices())
    assert.are.equal(2, r:assigned_blocks())
    assert.are.equal(2, r:drop_excess_unassigned(1))
    assert.are.same({ ids[1], ids[2], ids[3] }, r:page_indices())
    assert.are.equal(0, r:drop_excess_unassigned(1))
    assert.are.equal(7, m:available())
  end)

  it("a reacquire that fails after matching releases the matched blocks too", function()
    local m = mgr(4)
    local r = assert(build_prefilled(range(12), 0, m)) -- 3 blocks, no generation block
    r:release()
    -- keep block 0 cached, take the others: the match hits 1, allocating 2 fails
    local held = assert(m:match({ r:sequence():hash(0) }))
    local others = assert(m:allocate(3))
    held[1]:release()
    assert.are.equal(1, m:available())
    assert.is_false(r:reacquire(m))
    assert.are.same({ 0, 0, 0 }, counts(r))
    assert.are.equal(1, m:available())
    for _, b in ipairs(others) do b:release() end
    assert.are.equal(4, m:available())
    check(m)
  end)

  it("leaves no C memory behind over a full lifecycle", function()
    helpers.assert_no_leaks(function()
      local m = mgr(16)
      populate(m, range(4))
      local r = assert(build_prefilled(range(10), 6, m))
      while not r:is_complete() do
        if r:append_token(1000 + r:generated_tokens()) then
          r:complete_and_register_pending(m)
          r:allocate_blocks(1, m)
        end
      end
      r:complete_and_register_pending(m)
      assert.are.equal(4, r:assigned_blocks())
      r:release()
      assert.is_true(r:reacquire(m))
      assert.are.equal(4, r:prefix_matched_blocks())
      r:release()
      assert.are.equal(16, m:available())
      check(m)
    end)
  end)
end)
