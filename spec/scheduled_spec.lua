-- kvbm.scheduled (SchedulableSequence): the catalogue scenarios of
-- events-sequence.md §3.10 (108-132, integrations/scheduled.rs, with the
-- zinuga numbers: ceil in schedule_prefill, AppendExceedsRemaining), then
-- the Lua side: every error leaves the sequence and the manager as they
-- were, bad input raises, the delegate, <close>, a randomized run of many
-- sequences on one manager checking the invariants, leaks.
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

--- A delegate that keeps every event.
local function collector()
  local events = {}
  return function(ev) events[#events + 1] = ev end, events
end

--- tokens 0..n-1; a prefill of all of them with first token 1000.
local function prefilled(n, max, m, delegate)
  local s = kvbm.scheduled.new(range(n), max, BS, delegate)
  if n > 0 then
    assert(s:schedule_prefill(n, m))
    assert(s:apply_prefill(1000, m))
  end
  return s
end

local function decode(s, m, tok)
  assert(s:schedule_decode(m))
  return assert(s:apply_decode(tok or 100, m))
end

--- Everything observable, to show that a failed call changed nothing.
local function snapshot(s, m)
  return {
    state = s:state(), prefill = s:prefill_position(), kv = s:kv_position(), tail = s:tail_tokens(),
    generated = s:generated_tokens(), total = s:total_tokens(), assigned = s:assigned_blocks(),
    staged = s:staged_blocks(), unassigned = s:unassigned_blocks(), ids = s:inner():page_indices(),
    available = m and m:available(), tostring = tostring(s),
  }
end

--- Asserts that fn returns nil, err with err.code == code and changes
--- nothing; returns err.
local function fails(code, s, m, fn)
  local before = snapshot(s, m)
  local r, err = fn()
  assert.is_nil(r)
  assert.is_table(err)
  assert.are.equal(code, err.code)
  assert.are.equal(code .. ": " .. err.message, tostring(err))
  assert.are.same(before, snapshot(s, m))
  return err
end

describe("kvbm.scheduled (scheduled.rs)", function()
  it("#108 new starts idle and reports created", function()
    local d, events = collector()
    local s = kvbm.scheduled.new(range(8), 10, BS, d)
    assert.are.equal("idle", s:state().kind)
    assert.are.equal(0, s:prefill_position())
    assert.are.equal(0, s:kv_position())
    assert.are.equal(8, s:tail_tokens())
    assert.are.equal(8, s:num_input_tokens())
    assert.are.equal(10, s:max_output_tokens())
    assert.are.equal(BS, s:block_size())
    assert.is_false(s:is_prefill_complete())
    assert.are.equal(1, #events)
    assert.are.same({ kind = "created", num_input_tokens = 8, max_output_tokens = 10, block_size = BS }, events[1])
    assert.are.equal("Created { num_input_tokens: 8, max_output_tokens: 10, block_size: 4 }", tostring(events[1]))
  end)

  it("#109 the state machine: not_idle, wrong_state, prefill_not_complete", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert(s:schedule_prefill(4, m))
    local err = fails("not_idle", s, m, function() return s:schedule_prefill(4, m) end)
    assert.are.equal("prefill_scheduled", err.state.kind)
    assert.are.equal("expected Idle state, got PrefillScheduled { num_tokens: 4, blocks_allocated: 1 }", err.message)

    local d = kvbm.scheduled.new(range(4), 10, BS)
    assert(d:schedule_prefill(4, m))
    assert(d:apply_prefill(1000, m))
    assert(d:schedule_decode(m))
    fails("not_idle", d, m, function() return d:schedule_decode(m) end)

    local idle = kvbm.scheduled.new(range(8), 10, BS)
    err = fails("wrong_state", idle, m, function() return idle:apply_prefill(nil, m) end)
    assert.are.equal("PrefillScheduled", err.expected)
    assert.are.equal("idle", err.actual.kind)
    assert.are.equal("expected PrefillScheduled, got Idle", err.message)
    local idle4 = kvbm.scheduled.new(range(4), 10, BS)
    err = fails("wrong_state", idle4, m, function() return idle4:apply_decode(100, m) end)
    assert.are.equal("DecodeScheduled", err.expected)

    local early = kvbm.scheduled.new(range(8), 10, BS)
    err = fails("prefill_not_complete", early, m, function() return early:schedule_decode(m) end)
    assert.are.equal(0, err.position)
    assert.are.equal(8, err.num_input_tokens)
    assert.are.equal("prefill not yet complete (position 0 < 8)", err.message)
    fails("prefill_not_complete", early, m, function() return early:schedule_speculative(3, m) end)
  end)

  it("#110 a prefill of 8 in one chunk", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert.is_true(s:schedule_prefill(8, m))
    assert.are.same({ kind = "prefill_scheduled", num_tokens = 8, blocks_allocated = 2 }, s:state())
    assert.is_true(s:apply_prefill(1000, m))
    assert.are.equal("idle", s:state().kind)
    assert.are.equal(8, s:prefill_position())
    assert.are.equal(8, s:kv_position())
    assert.is_true(s:is_prefill_complete())
    assert.are.equal(2, s:assigned_blocks())
    assert.are.equal(0, s:unassigned_blocks()) -- no generation block
    assert.are.equal(1, s:tail_tokens()) -- token 1000
  end)

  it("#111 a chunked prefill of 4 + 4", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(nil, m))
    assert.are.equal(4, s:prefill_position())
    assert.are.equal(4, s:kv_position())
    assert.is_false(s:is_prefill_complete())
    assert.are.equal(1, s:assigned_blocks())
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(1000, m))
    assert.are.equal(8, s:prefill_position())
    assert.are.equal(8, s:kv_position())
    assert.is_true(s:is_prefill_complete())
    assert.are.equal(2, s:assigned_blocks())
    assert.are.equal(0, s:unassigned_blocks())
    assert.are.equal(1, s:tail_tokens())
  end)

  it("#112 the final chunk's token is the first generated one, dangling", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(4), 10, BS)
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(100, m))
    assert.is_true(s:is_prefill_complete())
    assert.are.equal(1, s:generated_tokens())
    assert.are.equal(5, s:total_tokens())
    assert.are.equal(4, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
  end)

  it("#113 prefill errors: token on a non-final chunk, overrun, allocation, complete, missing token", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert(s:schedule_prefill(4, m))
    local err = fails("token_on_non_final_chunk", s, m, function() return s:apply_prefill(100, m) end)
    assert.are.equal("token provided but prefill not completing this chunk", err.message)

    local o = kvbm.scheduled.new(range(8), 10, BS)
    err = fails("prefill_overrun", o, m, function() return o:schedule_prefill(9, m) end)
    assert.are.equal(0, err.position)
    assert.are.equal(9, err.num_tokens)
    assert.are.equal(8, err.num_input_tokens)
    assert.are.equal("prefill overrun: position 0 + 9 > 8", err.message)

    local one = mgr(1)
    local a = kvbm.scheduled.new(range(8), 10, BS)
    err = fails("allocation_failed", a, one, function() return a:schedule_prefill(8, one) end)
    assert.are.equal(2, err.needed)
    assert.are.equal("allocation failed: needed 2 blocks", err.message)
    assert.are.equal("idle", a:state().kind)
    assert.are.equal(1, one:available())

    local c = prefilled(4, 10, m)
    err = fails("prefill_complete", c, m, function() return c:schedule_prefill(1, m) end)
    assert.are.equal("prefill already complete", err.message)

    local f = kvbm.scheduled.new(range(4), 10, BS)
    assert(f:schedule_prefill(4, m))
    err = fails("missing_token_on_final_chunk", f, m, function() return f:apply_prefill(nil, m) end)
    assert.are.equal("final prefill chunk requires a generated token", err.message)
    check(m)
  end)

  it("#114 decode outcomes: continue, block_completed, max_length, both", function()
    local m = mgr(20)
    local s = prefilled(5, 10, m)
    assert.are.equal("continue", decode(s, m))
    assert.are.equal(2, s:generated_tokens())
    assert.are.equal("idle", s:state().kind)

    local b = prefilled(4, 10, m)
    assert.are.equal("continue", decode(b, m))
    assert.are.equal("continue", decode(b, m))
    assert.are.equal("block_completed", decode(b, m))
    assert.are.equal(2, b:assigned_blocks())

    local x = prefilled(5, 2, m)
    assert.are.equal("max_length", decode(x, m))
    assert.is_true(x:is_complete())

    local y = prefilled(4, 4, m)
    decode(y, m)
    decode(y, m)
    assert.are.equal("block_completed_and_max_length", decode(y, m))
  end)

  it("#115 schedule_decode allocates the generation block", function()
    local m = mgr(20)
    local s = prefilled(4, 10, m)
    assert.are.equal(1, s:assigned_blocks())
    assert.are.equal(0, s:unassigned_blocks())
    assert(s:schedule_decode(m))
    assert.are.same({ kind = "decode_scheduled", blocks_allocated = 1 }, s:state())
    assert.are.equal(1, s:unassigned_blocks())
    assert(s:apply_decode(100, m)) -- total 6
    decode(s, m, 101) -- total 7
    assert.are.equal("block_completed", decode(s, m, 102)) -- total 8
    assert.are.equal(0, s:unassigned_blocks())
    assert(s:schedule_decode(m))
    assert.are.same({ kind = "decode_scheduled", blocks_allocated = 1 }, s:state())
    assert.are.equal(1, s:unassigned_blocks())
  end)

  it("#116 no decode past max_output_tokens", function()
    local m = mgr(20)
    local s = prefilled(5, 2, m)
    decode(s, m)
    assert.is_true(s:is_complete())
    local err = fails("generation_complete", s, m, function() return s:schedule_decode(m) end)
    assert.are.equal(2, err.generated)
    assert.are.equal(2, err.max_output)
    assert.are.equal("generation complete: 2 >= 2", err.message)
    fails("generation_complete", s, m, function() return s:schedule_speculative(1, m) end)
  end)

  it("#117 speculative decode: accept all, a prefix, one, none, too many", function()
    local m = mgr(20)
    local s = prefilled(8, 10, m)
    assert(s:schedule_speculative(2, m))
    local st = s:state()
    assert.are.equal("speculative_scheduled", st.kind)
    assert.are.equal(2, st.num_tokens)
    assert.are.equal("continue", s:apply_speculative({ 100, 101 }, m))
    assert.are.equal(3, s:generated_tokens())
    assert.are.equal("idle", s:state().kind)

    local d, events = collector()
    local p = prefilled(4, 10, m, d)
    assert(p:schedule_speculative(4, m))
    assert.are.equal("continue", p:apply_speculative({ 100, 101 }, m))
    assert.are.equal(3, p:generated_tokens())
    assert.are.equal(1, p:unassigned_blocks()) -- keeps 1 generation block
    local last = events[#events]
    assert.are.equal("speculative_applied", last.kind)
    assert.are.equal(2, last.accepted)
    assert.are.equal(4, last.scheduled)
    assert.are.equal(1, last.blocks_released) -- [derived]

    local one = prefilled(4, 10, m)
    assert(one:schedule_speculative(5, m))
    assert.are.equal("continue", one:apply_speculative({ 100 }, m))
    assert.are.equal(2, one:generated_tokens())

    local zero = prefilled(4, 10, m)
    assert(zero:schedule_speculative(3, m))
    local after_schedule = m:available()
    assert.are.equal("continue", zero:apply_speculative({}, m))
    assert.are.equal(1, zero:generated_tokens())
    assert.are.equal(1, zero:unassigned_blocks())
    assert.is_true(m:available() >= after_schedule)

    local over = prefilled(4, 10, m)
    assert(over:schedule_speculative(2, m))
    local err = fails("accepted_exceeds_scheduled", over, m,
      function() return over:apply_speculative({ 100, 101, 102 }, m) end)
    assert.are.equal(3, err.accepted)
    assert.are.equal(2, err.scheduled)
    assert.are.equal("accepted 3 tokens exceeds scheduled 2", err.message)
  end)

  it("#118 speculative across block boundaries registers the pending block too", function()
    local m = mgr(20)
    local s = prefilled(7, 20, m) -- block 1 completed by 1000 but not registered
    assert.are.equal(1, s:assigned_blocks())
    assert(s:schedule_speculative(5, m))
    assert.are.equal("block_completed", s:apply_speculative({ 100, 101, 102, 103, 104 }, m))
    assert.are.equal(6, s:generated_tokens())
    assert.are.equal(3, s:assigned_blocks())
  end)

  it("#119 revert_schedule gives the scheduled blocks back", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    local before = m:available()
    assert(s:schedule_prefill(4, m))
    assert.is_true(m:available() < before)
    assert.is_true(s:revert_schedule())
    assert.are.equal("idle", s:state().kind)
    assert.are.equal(before, m:available())

    local d = prefilled(4, 10, m)
    for _ = 1, 3 do decode(d, m) end
    assert.are.equal(0, d:unassigned_blocks())
    before = m:available()
    assert(d:schedule_decode(m))
    assert.are.equal(before - 1, m:available())
    assert(d:revert_schedule())
    assert.are.equal("idle", d:state().kind)
    assert.are.equal(before, m:available())

    local sp = prefilled(4, 10, m)
    before = m:available()
    assert(sp:schedule_speculative(4, m))
    assert.is_true(before - m:available() > 0 or sp:unassigned_blocks() > 0)
    assert(sp:revert_schedule())
    assert.are.equal("idle", sp:state().kind)
    assert.are.equal(before, m:available())

    local full = kvbm.scheduled.new(range(8), 10, BS)
    before = m:available()
    assert(full:schedule_prefill(8, m))
    assert.is_true(m:available() < before)
    assert(full:revert_schedule())
    assert.are.equal(before, m:available())

    local idle = kvbm.scheduled.new(range(8), 10, BS)
    local err = fails("wrong_state", idle, m, function() return idle:revert_schedule() end)
    assert.are.equal("any Scheduled state", err.expected)
  end)

  it("#120 drop_unassigned releases up to n generation blocks, LIFO", function()
    local m = mgr(20)
    local s = prefilled(4, 10, m)
    decode(s, m)
    assert.are.equal(1, s:unassigned_blocks())
    local before = m:available()
    assert.are.equal(1, s:drop_unassigned(1))
    assert.are.equal(0, s:unassigned_blocks())
    assert.are.equal(before + 1, m:available())

    local p = prefilled(8, 10, m)
    decode(p, m)
    assert.are.equal(1, p:unassigned_blocks())
    assert.are.equal(1, p:drop_unassigned(5))
    assert.are.equal(0, p:unassigned_blocks())

    local z = prefilled(4, 10, m)
    decode(z, m)
    assert.are.equal(0, z:drop_unassigned(0))
    assert.are.equal(1, z:unassigned_blocks())
  end)

  it("#121 the delegate sees exactly the 8 events of prefill, 2 decodes and release", function()
    local m = mgr(20)
    local d, events = collector()
    local s = kvbm.scheduled.new(range(4), 3, BS, d)
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(1000, m))
    decode(s, m, 100)
    decode(s, m, 101)
    assert(s:release())
    local kinds = {}
    for i, e in ipairs(events) do kinds[i] = e.kind end
    assert.are.same({ "created", "prefill_scheduled", "prefill_applied", "decode_scheduled", "decode_applied",
      "decode_scheduled", "decode_applied", "released" }, kinds)
    assert.are.same({ kind = "prefill_scheduled", num_tokens = 4, blocks_allocated = 1 }, events[2])
    assert.are.same({ kind = "prefill_applied", num_tokens = 4, blocks_registered = 1, token_emitted = true }, events[3])
    assert.are.same({ kind = "decode_scheduled", blocks_allocated = 1 }, events[4])
    assert.are.same({ kind = "decode_applied", token = 100, block_completed = false }, events[5])
    assert.are.same({ kind = "decode_applied", token = 101, block_completed = false }, events[7])
    assert.are.same({ kind = "released" }, events[8])
    assert.are.equal("Released", tostring(events[8]))
  end)

  it("#122 a full lifecycle: 6 input tokens, 7 generated, release", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(6), 7, BS)
    assert(s:schedule_prefill(6, m))
    assert(s:apply_prefill(1000, m))
    assert.is_true(s:is_prefill_complete())
    assert.are.equal(1, s:assigned_blocks())
    assert.are.equal(1, s:unassigned_blocks()) -- the partial tail block (ceil)
    for i = 0, 5 do
      local outcome = decode(s, m, 100 + i)
      if i < 5 then
        assert.is_truthy(outcome == "continue" or outcome == "block_completed")
      else
        assert.is_truthy(outcome == "max_length" or outcome == "block_completed_and_max_length")
      end
    end
    assert.is_true(s:is_complete())
    assert.are.equal(7, s:generated_tokens())
    assert.are.equal(13, s:total_tokens())
    assert(s:release())
    assert.are.equal(0, s:assigned_blocks())
    assert.are.equal(20, m:available())
  end)

  it("#123 preempt and reacquire, then keep decoding", function()
    local m = mgr(20)
    local d, events = collector()
    local s = kvbm.scheduled.new(range(8), 10, BS, d)
    assert(s:schedule_prefill(8, m))
    assert(s:apply_prefill(1000, m))
    decode(s, m)
    decode(s, m)
    assert.are.equal(3, s:generated_tokens())
    assert(s:release())
    assert.are.equal(0, s:assigned_blocks())
    assert.is_true(s:reacquire(m))
    assert.are.equal(2, s:assigned_blocks())
    assert.are.equal(0, s:unassigned_blocks()) -- no generation block from reacquire
    assert.are.equal(3, s:generated_tokens())
    assert.are.same({ kind = "reacquired", prefix_matched = 2, success = true }, events[#events])
    decode(s, m, 200)
    assert.are.equal(4, s:generated_tokens())
  end)

  it("#124 match_and_add_prefix moves prefill and kv past the cached blocks", function()
    local m = mgr(20)
    local pop = kvbm.sequence(range(4), BS)
    m:register(assert(assert(m:allocate(1))[1]:complete(pop, 0))):release()
    local d, events = collector()
    local s = kvbm.scheduled.new(range(8), 10, BS, d)
    assert.are.equal(1, s:match_and_add_prefix(m))
    assert.are.same({ kind = "prefix_matched", blocks_matched = 1 }, events[#events])
    assert.are.equal(4, s:prefill_position())
    assert.are.equal(4, s:kv_position())
    assert.are.equal(1, s:assigned_blocks())
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(1000, m))
    assert.are.equal(2, s:assigned_blocks())
    assert.are.equal(0, s:unassigned_blocks())
    assert.are.equal(1, s:tail_tokens())

    local none = kvbm.scheduled.new(range(8, 50), 10, BS, d)
    assert.are.equal(0, none:match_and_add_prefix(m))
    assert.are.equal(0, none:prefill_position())
    assert.are.same({ kind = "prefix_matched", blocks_matched = 0 }, events[#events])
    assert(none:schedule_prefill(8, m))
    fails("not_idle", none, m, function() return none:match_and_add_prefix(m) end)
  end)

  it("#125 empty input; and max_output_tokens 0", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new({}, 10, BS)
    assert.is_true(s:is_prefill_complete())
    fails("prefill_complete", s, m, function() return s:schedule_prefill(0, m) end)
    fails("wrong_dangling_count", s, m, function() return s:schedule_decode(m) end)
    assert(s:append_tokens { 100 })
    assert.are.equal(1, s:tail_tokens())
    assert(s:schedule_decode(m))
    assert.are.equal("continue", s:apply_decode(101, m))

    local z = kvbm.scheduled.new(range(4), 0, BS)
    assert(z:schedule_prefill(4, m))
    assert(z:apply_prefill(nil, m))
    assert.are.equal(1, z:assigned_blocks())
    assert.are.equal(0, z:unassigned_blocks())
    fails("generation_complete", z, m, function() return z:schedule_decode(m) end)
  end)

  it("#126 tostring shows the state; release and reacquire need idle", function()
    local s = kvbm.scheduled.new(range(8), 10, BS)
    local text = tostring(s)
    assert.matches("SchedulableSequence", text)
    assert.matches("Idle", text)
    assert.matches("^SchedulableSequence { state: Idle, prefill_position: 0, kv_position: 0, inner: RequestSequence {", text)
    local m = mgr(20)
    assert(s:schedule_prefill(4, m))
    assert.matches("state: PrefillScheduled { num_tokens: 4, blocks_allocated: 1 }", tostring(s), 1, true)
    local err = fails("wrong_state", s, m, function() return s:release() end)
    assert.are.equal("Idle", err.expected)
    assert.are.equal("prefill_scheduled", err.actual.kind)
    fails("wrong_state", s, m, function() return s:reacquire(m) end)
  end)

  it("#127 dangling tokens: 8, then 1 after prefill, decode and speculative", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 20, BS)
    assert.are.equal(0, s:kv_position())
    assert.are.equal(8, s:tail_tokens())
    assert(s:schedule_prefill(8, m))
    assert(s:apply_prefill(1000, m))
    assert.are.equal(8, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
    decode(s, m)
    assert.are.equal(9, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
    assert(s:schedule_speculative(3, m))
    assert(s:apply_speculative({ 200, 201 }, m))
    assert.are.equal(11, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
  end)

  it("#128 decode needs exactly one dangling token", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new({}, 10, BS)
    local err = fails("wrong_dangling_count", s, m, function() return s:schedule_decode(m) end)
    assert.are.equal(1, err.expected)
    assert.are.equal(0, err.actual)
    assert.are.equal("expected 1 dangling token(s), got 0", err.message)
    assert(s:append_tokens { 100, 101 })
    assert.are.equal(2, s:tail_tokens())
    err = fails("wrong_dangling_count", s, m, function() return s:schedule_decode(m) end)
    assert.are.equal(2, err.actual)

    local one = kvbm.scheduled.new({}, 10, BS)
    assert.are.equal(0, one:tail_tokens())
    assert(one:append_tokens { 100 })
    assert.are.equal(1, one:tail_tokens())
    assert.are.equal(1, one:total_tokens())
    assert.are.equal(0, one:kv_position())
    decode(one, m, 101)
    assert.are.equal(1, one:tail_tokens())
    assert.are.equal(1, one:kv_position())
  end)

  it("#129 append_tokens past the remaining budget is an error, nothing changed", function()
    local s = kvbm.scheduled.new({}, 1, BS)
    local err = fails("append_exceeds_remaining", s, nil, function() return s:append_tokens { 100, 101 } end)
    assert.are.equal(2, err.requested)
    assert.are.equal(1, err.remaining)
    assert.are.equal("append requested 2 tokens but only 1 remain", err.message)
    assert.are.equal(0, s:generated_tokens())
    assert.are.equal(1, s:remaining_tokens())
    assert.are.equal(0, s:total_tokens())
    assert.are.equal(0, s:tail_tokens())
    assert.are.equal(0, s:kv_position())
  end)

  it("#130 kv_position through chunked prefill, decode and speculative", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 20, BS)
    assert.are.equal(0, s:kv_position())
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(nil, m))
    assert.are.equal(4, s:kv_position())
    assert(s:schedule_prefill(4, m))
    assert(s:apply_prefill(1000, m))
    assert.are.equal(8, s:kv_position())
    decode(s, m)
    assert.are.equal(9, s:kv_position())
    assert(s:schedule_speculative(3, m))
    assert(s:apply_speculative({ 200, 201, 202 }, m))
    assert.are.equal(12, s:kv_position())
  end)

  it("#131 a block completed by the prefill token is registered by the next decode", function()
    local m = mgr(20)
    local d, events = collector()
    local s = kvbm.scheduled.new(range(7), 10, BS, d)
    assert(s:schedule_prefill(7, m))
    assert(s:apply_prefill(1000, m))
    assert.are.same({ kind = "prefill_applied", num_tokens = 7, blocks_registered = 1, token_emitted = true },
      events[#events])
    assert.are.equal(1, s:assigned_blocks()) -- block 1 (4,5,6,1000) is not registered yet
    assert.are.equal(1, s:unassigned_blocks()) -- the partial tail block (ceil)
    assert.are.equal(7, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
    assert(s:schedule_decode(m))
    assert.are.same({ kind = "decode_scheduled", blocks_allocated = 1 }, s:state())
    assert.are.equal("continue", s:apply_decode(100, m))
    assert.are.equal(2, s:assigned_blocks())
    assert.are.equal(1, s:unassigned_blocks())
    assert.are.equal(8, s:kv_position())
    assert.are.equal(1, s:tail_tokens())
  end)

  it("#132 the builder: required fields, delegate, the default no-op delegate", function()
    local s = kvbm.scheduled { tokens = range(8), max_output_tokens = 10, block_size = BS }
    assert.are.equal("idle", s:state().kind)
    assert.are.equal(8, s:num_input_tokens())
    assert.are.equal(10, s:max_output_tokens())
    assert.are.equal(BS, s:block_size())

    local d, events = collector()
    local w = kvbm.scheduled { tokens = range(4), max_output_tokens = 5, block_size = BS, delegate = d }
    assert.are.equal(4, w:num_input_tokens())
    assert.are.equal(1, #events)
    assert.are.equal("created", events[1].kind)
    assert.are.equal(d, w:delegate())

    assert.has_error(function() kvbm.scheduled { tokens = range(4) } end,
      "kvbm.scheduled: missing required field 'max_output_tokens'")
    assert.has_error(function() kvbm.scheduled { tokens = range(4), max_output_tokens = 5 } end,
      "kvbm.scheduled: missing required field 'block_size'")
    assert.has_error(function() kvbm.scheduled.build { max_output_tokens = 5, block_size = BS } end,
      "kvbm.scheduled: missing required field 'tokens'")

    local m = mgr(20)
    local n = kvbm.scheduled { tokens = range(4), max_output_tokens = 10, block_size = BS }
    assert.is_nil(n:delegate())
    assert(n:schedule_prefill(4, m))
    assert(n:apply_prefill(1000, m))
    decode(n, m)
    assert(n:release())
  end)
end)

describe("kvbm.scheduled (Lua)", function()
  it("raises on wrong argument types before changing anything", function()
    local m = mgr(20)
    local s = prefilled(5, 10, m)
    local before = snapshot(s, m)
    local bad = {
      function() kvbm.scheduled.new(range(4), 10, BS, 42) end,
      function() kvbm.scheduled.new(range(4), 10, BS, {}) end,
      function() kvbm.scheduled.new(nil, 10, BS) end,
      function() kvbm.scheduled.new(range(4), nil, BS) end,
      function() kvbm.scheduled.new(range(4), 10) end,
      function() kvbm.scheduled(range(4)) end,
      function() kvbm.scheduled { tokens = {}, max_output_tokens = 1, block_size = 4, salt = 7 } end,
      function() kvbm.scheduled.build("x") end,
      function() s:schedule_prefill("4", m) end,
      function() s:schedule_prefill(-1, m) end,
      function() s:schedule_prefill(4, nil) end,
      function() s:schedule_decode(nil) end,
      function() s:schedule_decode({}) end,
      function() s:schedule_speculative(1.5, m) end,
      function() s:apply_prefill("x", m) end,
      function() s:apply_prefill(-3, m) end,
      function() s:apply_decode(nil, m) end,
      function() s:apply_decode(2 ^ 40, m) end,
      function() s:apply_speculative("x", m) end,
      function() s:apply_speculative({ 1, "2" }, m) end,
      function() s:append_tokens { 1, -1 } end,
      function() s:append_tokens(7) end,
      function() s:drop_unassigned(-1) end,
      function() s:match_and_add_prefix(nil) end,
      function() s:reacquire(nil) end,
    }
    for i, f in ipairs(bad) do assert.has_error(f, nil, "case " .. i) end
    assert.are.same(before, snapshot(s, m))
    -- a bad token in an accepted draft appends none of them
    assert(s:schedule_speculative(3, m))
    local scheduled = snapshot(s, m)
    assert.has_error(function() s:apply_speculative({ 1, 2, 1.5 }, m) end)
    assert.are.same(scheduled, snapshot(s, m))
    assert(s:revert_schedule())
  end)

  it("drop_unassigned raises unless idle", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert(s:schedule_prefill(4, m))
    assert.has_error(function() s:drop_unassigned(1) end,
      "drop_unassigned called in non-Idle state: PrefillScheduled { num_tokens: 4, blocks_allocated: 1 }")
    assert.are.equal(1, s:unassigned_blocks())
  end)

  it("a prefill token with max_output_tokens 0 raises before anything changes", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(4), 0, BS)
    assert(s:schedule_prefill(4, m))
    local before = snapshot(s, m)
    assert.has_error(function() s:apply_prefill(1000, m) end,
      "Cannot generate more tokens: reached max_output_tokens limit")
    assert.are.same(before, snapshot(s, m))
  end)

  it("errors in every state leave the sequence and the manager unchanged", function()
    local m = mgr(20)
    local s = prefilled(6, 3, m)
    -- idle: the apply and revert calls
    fails("wrong_state", s, m, function() return s:apply_prefill(nil, m) end)
    fails("wrong_state", s, m, function() return s:apply_decode(1, m) end)
    fails("wrong_state", s, m, function() return s:apply_speculative({}, m) end)
    fails("wrong_state", s, m, function() return s:revert_schedule() end)
    fails("prefill_complete", s, m, function() return s:schedule_prefill(1, m) end)
    -- each scheduled state refuses everything else
    for _, schedule in ipairs {
      function() return s:schedule_decode(m) end,
      function() return s:schedule_speculative(2, m) end,
    } do
      assert(schedule())
      fails("not_idle", s, m, function() return s:schedule_decode(m) end)
      fails("not_idle", s, m, function() return s:schedule_speculative(1, m) end)
      fails("not_idle", s, m, function() return s:schedule_prefill(1, m) end)
      fails("not_idle", s, m, function() return s:match_and_add_prefix(m) end)
      fails("wrong_state", s, m, function() return s:apply_prefill(nil, m) end)
      fails("wrong_state", s, m, function() return s:release() end)
      fails("wrong_state", s, m, function() return s:reacquire(m) end)
      fails("wrong_state", s, m, function() return s:append_tokens { 1 } end)
      assert(s:revert_schedule())
    end
    -- allocation failure of decode and speculative
    local tiny = mgr(2)
    local t = prefilled(8, 10, tiny) -- both blocks assigned, none left
    assert.are.equal(0, tiny:available())
    local err = fails("allocation_failed", t, tiny, function() return t:schedule_decode(tiny) end)
    assert.are.equal(1, err.needed)
    fails("allocation_failed", t, tiny, function() return t:schedule_speculative(5, tiny) end)
    check(m)
    check(tiny)
  end)

  it("schedule_speculative clamps the draft to the remaining budget", function()
    local m = mgr(20)
    local s = prefilled(4, 3, m) -- 2 tokens left
    assert(s:schedule_speculative(10, m))
    assert.are.same({ kind = "speculative_scheduled", num_tokens = 2, blocks_allocated = 1 }, s:state())
    fails("accepted_exceeds_scheduled", s, m, function() return s:apply_speculative({ 1, 2, 3 }, m) end)
    assert.are.equal("max_length", s:apply_speculative({ 1, 2 }, m))
    assert.are.equal(0, s:unassigned_blocks()) -- complete: no generation block kept
  end)

  it("schedule_reverted reports the scheduled count even when fewer were left to pop", function()
    local m = mgr(20)
    local d, events = collector()
    local s = kvbm.scheduled.new(range(8), 10, BS, d)
    assert(s:schedule_prefill(8, m))
    local _, g = s:inner():assignments():pop_last_unassigned()
    g:release()
    assert(s:revert_schedule())
    assert.are.same({ kind = "schedule_reverted", blocks_released = 2 }, events[#events])
    assert.are.equal(20, m:available())
  end)

  it("the delegate may be a table with on_event; it is called as a method", function()
    local m = mgr(20)
    local delegate = { seen = {} }
    function delegate:on_event(ev) self.seen[#self.seen + 1] = ev.kind end
    local s = prefilled(4, 10, m, delegate)
    decode(s, m)
    assert.are.equal(2, s:drop_unassigned(5) + 1)
    assert(s:release())
    assert.is_true(s:reacquire(m))
    assert.are.same({ "created", "prefill_scheduled", "prefill_applied", "decode_scheduled", "decode_applied",
      "unassigned_dropped", "released", "reacquired" }, delegate.seen)
    assert.are.equal(delegate, s:delegate())
  end)

  it("a raising delegate propagates its error after the transition happened", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(4), 10, BS, function(ev)
      if ev.kind == "prefill_applied" then error("delegate failed") end
    end)
    assert(s:schedule_prefill(4, m))
    assert.has_error(function() s:apply_prefill(1000, m) end)
    assert.are.equal("idle", s:state().kind)
    assert.are.equal(4, s:kv_position())
    assert.are.equal(1, s:assigned_blocks())
  end)

  it("states and events compare by value and print in the crate's Debug form", function()
    local m = mgr(20)
    local s = kvbm.scheduled.new(range(8), 10, BS)
    assert(s:schedule_prefill(8, m))
    assert.is_true(s:state() == s:state())
    assert.are_not.equal(s:state(), kvbm.scheduled.new(range(8), 10, BS):state())
    assert.are.equal("PrefillScheduled { num_tokens: 8, blocks_allocated: 2 }", tostring(s:state()))
    local st = s:state()
    st.num_tokens = 99 -- a copy: the sequence is unaffected
    assert.are.equal(8, s:state().num_tokens)
    assert.is_true(kvbm.scheduled.is(s))
    assert.is_false(kvbm.scheduled.is(s:inner()))
    assert.are.equal(kvbm.scheduled, require "kvbm.scheduled")
  end)

  it("<close> releases the blocks in any state", function()
    local m = mgr(20)
    do
      local s <close> = kvbm.scheduled.new(range(8), 10, BS)
      assert(s:schedule_prefill(4, m))
      assert(s:apply_prefill(nil, m))
      assert(s:schedule_prefill(4, m))
      assert.are.equal(18, m:available())
    end
    assert.are.equal(20, m:available())
    check(m)
  end)

  it("many sequences on one manager keep every invariant (randomized, seeded)", function()
    helpers.assert_no_leaks(function()
      local rng_state = 12345
      local function rand(n) -- a small LCG: the run is the same everywhere
        rng_state = (rng_state * 1103515245 + 12345) % 2147483648
        return rng_state % n
      end
      local TOTAL = 32 -- fewer than the requests want: allocations fail too
      local m = mgr(TOTAL)
      local seqs = {}
      local all_events, finished = 0, 0
      local function fresh(i)
        local toks = range(rand(20), (i % 3) * 7) -- some requests share prefixes
        return kvbm.scheduled.new(toks, 1 + rand(12), BS, function() all_events = all_events + 1 end)
      end
      for i = 1, 8 do seqs[i] = fresh(i) end
      local function invariants(s)
        local inner = s:inner()
        assert.is_true(s:kv_position() <= s:total_tokens())
        assert.is_true(s:assigned_blocks() <= s:num_blocks())
        local seen = {}
        for _, id in ipairs(inner:page_indices()) do
          assert.is_nil(seen[id])
          seen[id] = true
        end
        for i = 0, s:assigned_blocks() - 1 do -- assigned blocks carry their position's hash
          local _, ib = inner:assignments():get_assigned(i)
          assert.are.equal(inner:sequence():hash(i), ib:hash())
        end
      end
      for _ = 1, 1500 do
        local idx = 1 + rand(#seqs)
        local s = seqs[idx]
        local kind = s:state().kind
        if kind == "prefill_scheduled" then
          if rand(5) == 0 then assert(s:revert_schedule()) else
            local st = s:state()
            local final = s:prefill_position() + st.num_tokens >= s:num_input_tokens()
            assert(s:apply_prefill(final and s:max_output_tokens() > 0 and 1000 or nil, m))
            assert.is_true(s:unassigned_blocks() <= 1)
          end
        elseif kind == "decode_scheduled" then
          if rand(5) == 0 then assert(s:revert_schedule()) else
            assert(s:apply_decode(500 + rand(100), m))
            assert.is_true(s:unassigned_blocks() <= 1)
            assert.are.equal(1, s:tail_tokens())
          end
        elseif kind == "speculative_scheduled" then
          if rand(5) == 0 then assert(s:revert_schedule()) else
            local k = rand(s:state().num_tokens + 1)
            local acc = {}
            for j = 1, k do acc[j] = 700 + j end
            assert(s:apply_speculative(acc, m))
            assert.is_true(s:unassigned_blocks() <= 1)
          end
        else -- idle: pick something to do; failures must be clean
          local r = rand(10)
          local before = snapshot(s, m)
          local ok, err
          if r == 0 then
            ok, err = s:release()
          elseif r == 1 and s:assigned_blocks() + s:staged_blocks() + s:unassigned_blocks() == 0 then
            ok = s:reacquire(m)
            if not ok then assert.are.equal(0, s:assigned_blocks() + s:unassigned_blocks()) end
            ok = true
          elseif not s:is_prefill_complete() then
            local left = s:num_input_tokens() - s:prefill_position()
            ok, err = s:schedule_prefill(1 + rand(left), m)
          elseif r < 6 then
            ok, err = s:schedule_decode(m)
          else
            ok, err = s:schedule_speculative(1 + rand(4), m)
          end
          if not ok then
            assert.is_table(err)
            assert.are.same(before, snapshot(s, m))
            if err.code == "generation_complete" then -- done: the next request takes its place
              assert(s:release())
              seqs[idx] = fresh(idx)
              finished = finished + 1
            elseif err.code == "wrong_dangling_count" and err.actual == 0 then
              assert(s:append_tokens { 900 }) -- empty input: give it a first token (#125)
            end
          end
        end
        invariants(s)
        check(m)
      end
      assert.is_true(finished > 20)
      assert.is_true(all_events > 1000)
      for _, s in ipairs(seqs) do
        if s:state().kind ~= "idle" then assert(s:revert_schedule()) end
        assert(s:release())
      end
      assert.are.equal(TOTAL, m:available())
      local c = check(m)
      assert.are.equal(0, c.mutable + c.staged)
    end)
  end)

  it("leaves no C memory behind over a documented lifecycle", function()
    helpers.assert_no_leaks(function()
      local m = mgr(16)
      local s = kvbm.scheduled { tokens = range(10), max_output_tokens = 6, block_size = BS }
      assert.are.equal(0, s:match_and_add_prefix(m))
      assert(s:schedule_prefill(10 - s:prefill_position(), m))
      assert(s:apply_prefill(1000, m))
      while not s:is_complete() do
        assert(s:schedule_decode(m))
        assert(s:apply_decode(2000 + s:generated_tokens(), m))
      end
      assert.are.equal(4, s:assigned_blocks())
      assert(s:release())
      assert.is_true(s:reacquire(m))
      assert.are.equal(4, s:prefix_matched_blocks())
      assert(s:release())
      assert.are.equal(16, m:available())
      check(m)
    end)
  end)
end)
