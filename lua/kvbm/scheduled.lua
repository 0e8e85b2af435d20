-- kvbm.scheduled - SchedulableSequence: the two-phase schedule/apply state
-- machine of an inference request over a kvbm.request
-- (kvbm-logical's integrations/scheduled.rs, zinuga snapshot):
--
--          schedule_prefill        apply_prefill
--   idle ─────────────────► prefill_scheduled ──────► idle
--     │    schedule_decode          apply_decode
--     ├─────────────────► decode_scheduled ─────────► idle
--     │  schedule_speculative    apply_speculative
--     └─────────────────► speculative_scheduled ────► idle
--                      │   revert_schedule
--                      └────────────────────────────► idle
--
--   local s = kvbm.scheduled{ tokens = toks, max_output_tokens = 64, block_size = 16,
--                             delegate = function(ev) print(ev.kind) end }
--   s:match_and_add_prefix(m)
--   assert(s:schedule_prefill(s:num_input_tokens() - s:prefill_position(), m))
--   assert(s:apply_prefill(first_token, m))      -- kv_position = input, 1 dangling
--   while not s:is_complete() do
--     assert(s:schedule_decode(m))               -- allocates the generation block
--     local outcome = assert(s:apply_decode(next_token(), m))
--   end
--   assert(s:release())
--
-- schedule_* checks the preconditions and allocates the blocks the step
-- needs; apply_* appends the tokens, registers every completed block and
-- returns to idle; revert_schedule gives the allocated blocks back (LIFO).
-- kv_position counts the tokens whose KV is computed; tail_tokens() the
-- rest ("dangling"): decode and speculative steps need exactly one.
-- Failed preconditions return nil, err and change nothing; a wrong
-- argument type raises. Every transition is reported, after it happened,
-- to the optional delegate (a function, or a table with on_event) as an
-- event table { kind = "prefill_applied", num_tokens = .., ... }.

local kvbm = require "kvbm"
local logical = kvbm.logical
local request = kvbm.request

local error, getmetatable, pairs, setmetatable, select, tostring, type =
  error, getmetatable, pairs, setmetatable, select, tostring, type
local mtype = math.type
local format = string.format
local concat = table.concat
local new_error, check_manager, typename = logical._error, logical._check_manager, logical._typename

local _ENV = nil -- no global accesses from here on

local M = {}


local function argerror(n, fname, msg)
  error(format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

local function check_count(n, argn, fname)
  if mtype(n) ~= "integer" or n < 0 then
    argerror(argn, fname, "non-negative integer expected, got " .. (mtype(n) and tostring(n) or typename(n)))
  end
end

local function is_token(t) return mtype(t) == "integer" and t >= 0 and t <= 0xffffffff end

local function check_token(t, argn, fname)
  if not is_token(t) then
    argerror(argn, fname, "token must be an integer in 0..2^32-1, got " .. (mtype(t) and tostring(t) or typename(t)))
  end
end

local function check_tokens(list, argn, fname)
  if type(list) ~= "table" then argerror(argn, fname, "table of tokens expected, got " .. typename(list)) end
  for i = 1, #list do
    if not is_token(list[i]) then
      argerror(argn, fname, format("bad token at index %d: expected an integer in 0..2^32-1, got %s",
        i, mtype(list[i]) and tostring(list[i]) or typename(list[i])))
    end
  end
end

-- ------------------------------------------------------- states, events

-- Rust's Debug form of a state or an event: Name { field: value, ... }
local function debug_form(name, t, fields)
  if #fields == 0 then return name end
  local parts = {}
  for i = 1, #fields do parts[i] = fields[i] .. ": " .. tostring(t[fields[i]]) end
  return name .. " { " .. concat(parts, ", ") .. " }"
end

local STATES = {
  idle = { "Idle" },
  prefill_scheduled = { "PrefillScheduled", "num_tokens", "blocks_allocated" },
  decode_scheduled = { "DecodeScheduled", "blocks_allocated" },
  speculative_scheduled = { "SpeculativeScheduled", "num_tokens", "blocks_allocated" },
}

local EVENTS = {
  created = { "Created", "num_input_tokens", "max_output_tokens", "block_size" },
  prefix_matched = { "PrefixMatched", "blocks_matched" },
  prefill_scheduled = { "PrefillScheduled", "num_tokens", "blocks_allocated" },
  prefill_applied = { "PrefillApplied", "num_tokens", "blocks_registered", "token_emitted" },
  decode_scheduled = { "DecodeScheduled", "blocks_allocated" },
  decode_applied = { "DecodeApplied", "token", "block_completed" },
  speculative_scheduled = { "SpeculativeScheduled", "num_tokens", "blocks_allocated" },
  speculative_applied = { "SpeculativeApplied", "accepted", "scheduled", "blocks_released" },
  schedule_reverted = { "ScheduleReverted", "blocks_released" },
  unassigned_dropped = { "UnassignedDropped", "count" },
  released = { "Released" },
  reacquired = { "Reacquired", "prefix_matched", "success" },
}

local function describe(table_of)
  return function(t)
    local spec = table_of[t.kind]
    local fields = {}
    for i = 2, #spec do fields[i - 1] = spec[i] end
    return debug_form(spec[1], t, fields)
  end
end

local function same_fields(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k, v in pairs(b) do if a[k] ~= v then return false end end
  return true
end

-- States and events are plain tables with a readable tostring, compared
-- by value with ==.
local State = { __name = "kvbm.SequenceState", __tostring = describe(STATES), __eq = same_fields }
local Event = { __name = "kvbm.SequenceEvent", __tostring = describe(EVENTS), __eq = same_fields }

local IDLE = setmetatable({ kind = "idle" }, State)

local function state(kind, num_tokens, blocks_allocated)
  return setmetatable({ kind = kind, num_tokens = num_tokens, blocks_allocated = blocks_allocated }, State)
end

local function copy_state(s)
  return setmetatable({ kind = s.kind, num_tokens = s.num_tokens, blocks_allocated = s.blocks_allocated }, State)
end

-- ------------------------------------------------------------- errors

local function not_idle(s)
  return nil, new_error("not_idle", "expected Idle state, got " .. tostring(s), { state = copy_state(s) })
end

local function wrong_state(expected, s)
  return nil, new_error("wrong_state", format("expected %s, got %s", expected, tostring(s)),
    { expected = expected, actual = copy_state(s) })
end

-- ------------------------------------------------------------- the type

local SS = {}
SS.__index = SS
SS.__name = "kvbm.SchedulableSequence"

local function check_delegate(d, argn, fname)
  local t = type(d)
  if d == nil or t == "function" then return end
  if (t == "table" or t == "userdata") and type(d.on_event) == "function" then return end
  argerror(argn, fname, "delegate must be a function or a table with on_event, got " .. typename(d))
end

local function emit(self, kind, fields)
  local d = self._delegate
  if d == nil then return end
  local ev = fields or {}
  ev.kind = kind
  setmetatable(ev, Event)
  if type(d) == "function" then d(ev) else d:on_event(ev) end
end

--- A new idle sequence over tokens; reports "created" to the delegate.
function M.new(tokens, max_output_tokens, block_size, delegate)
  check_delegate(delegate, 4, "new")
  local inner = request.new(tokens, max_output_tokens, block_size)
  local self = setmetatable({
    _inner = inner,
    _state = IDLE,
    _prefill = 0,
    _kv = 0,
    _delegate = delegate,
  }, SS)
  emit(self, "created", {
    num_input_tokens = inner:num_input_tokens(),
    max_output_tokens = max_output_tokens,
    block_size = block_size,
  })
  return self
end

local OPTIONS = { tokens = true, max_output_tokens = true, block_size = true, delegate = true }
local REQUIRED = { "tokens", "max_output_tokens", "block_size" }

local function build(opts, level)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'build' (table expected, got " .. typename(opts) .. ")", level)
  end
  for k in pairs(opts) do
    if not OPTIONS[k] then error("kvbm.scheduled: unknown option '" .. tostring(k) .. "'", level) end
  end
  for i = 1, #REQUIRED do
    if opts[REQUIRED[i]] == nil then
      error("kvbm.scheduled: missing required field '" .. REQUIRED[i] .. "'", level)
    end
  end
  return M.new(opts.tokens, opts.max_output_tokens, opts.block_size, opts.delegate)
end

--- kvbm.scheduled{ tokens = .., max_output_tokens = .., block_size = .., delegate = .. }
--- (or scheduled.build{...}): the crate's builder; a missing required field
--- or an unknown one raises.
function M.build(opts) return build(opts, 3) end

-- ------------------------------------------------------------- checks

local function is_idle(self) return self._state.kind == "idle" end

function SS:is_prefill_complete() return self._prefill >= self._inner:num_input_tokens() end

function SS:tail_tokens()
  local t = self._inner:total_tokens() - self._kv
  return t > 0 and t or 0
end

-- The decode and speculative preconditions, in the crate's order.
local function decode_checks(self)
  if not is_idle(self) then return not_idle(self._state) end
  local inner = self._inner
  if not self:is_prefill_complete() then
    return nil, new_error("prefill_not_complete",
      format("prefill not yet complete (position %d < %d)", self._prefill, inner:num_input_tokens()),
      { position = self._prefill, num_input_tokens = inner:num_input_tokens() })
  end
  if inner:is_complete() then
    return nil, new_error("generation_complete",
      format("generation complete: %d >= %d", inner:generated_tokens(), inner:max_output_tokens()),
      { generated = inner:generated_tokens(), max_output = inner:max_output_tokens() })
  end
  local dangling = self:tail_tokens()
  if dangling ~= 1 then
    return nil, new_error("wrong_dangling_count", format("expected 1 dangling token(s), got %d", dangling),
      { expected = 1, actual = dangling })
  end
  return true
end

local function allocate(self, n, manager)
  if n > 0 and not self._inner:allocate_blocks(n, manager) then
    return nil, new_error("allocation_failed", format("allocation failed: needed %d blocks", n), { needed = n })
  end
  return true
end

-- The crate cannot fail here; the engine can only when out of memory.
local function register_pending(self, manager)
  local n, err = self._inner:complete_and_register_pending(manager)
  if not n then error("kvbm.scheduled: registering blocks failed: " .. tostring(err), 3) end
end

-- LIFO-releases up to n unassigned blocks; returns how many.
local function lifo_drop(self, n)
  local la, dropped = self._inner:assignments(), 0
  while dropped < n do
    local id, g = la:pop_last_unassigned()
    if id == nil then break end
    g:release()
    dropped = dropped + 1
  end
  return dropped
end

local function outcome(block_completed, complete)
  if block_completed then return complete and "block_completed_and_max_length" or "block_completed" end
  return complete and "max_length" or "continue"
end

-- ------------------------------------------------------------- prefix

--- Adds the cached prefix as assigned blocks; moves prefill_position and
--- kv_position past it. Returns the number of blocks matched (reports
--- prefix_matched, also for 0), or nil, err (not_idle).
function SS:match_and_add_prefix(manager)
  check_manager(manager, 1, "match_and_add_prefix")
  if not is_idle(self) then return not_idle(self._state) end
  local inner = self._inner
  local count, err = inner:match_and_add_prefix(manager)
  if not count then
    if err.blocks then for i = 1, #err.blocks do err.blocks[i]:release() end end
    error("prefix match should not produce duplicates: " .. tostring(err), 2)
  end
  if count > 0 then
    self._prefill = self._prefill + count * inner:block_size()
    self._kv = self._prefill
  end
  emit(self, "prefix_matched", { blocks_matched = count })
  return count
end

-- ------------------------------------------------------------- prefill

--- Schedules a prefill chunk of n input tokens: allocates the blocks that
--- cover prefill_position + n tokens (rounded up: the partial tail block
--- too) minus those already held. true, or nil, err (not_idle,
--- prefill_complete, prefill_overrun, allocation_failed).
function SS:schedule_prefill(n, manager)
  check_count(n, 1, "schedule_prefill")
  check_manager(manager, 2, "schedule_prefill")
  if not is_idle(self) then return not_idle(self._state) end
  if self:is_prefill_complete() then return nil, new_error("prefill_complete", "prefill already complete") end
  local inner = self._inner
  local num_input = inner:num_input_tokens()
  local new_position = self._prefill + n
  if new_position > num_input then
    return nil, new_error("prefill_overrun",
      format("prefill overrun: position %d + %d > %d", self._prefill, n, num_input),
      { position = self._prefill, num_tokens = n, num_input_tokens = num_input })
  end
  local bs = inner:block_size()
  local need = (new_position + bs - 1) // bs
  local have = inner:assigned_blocks() + inner:staged_blocks() + inner:unassigned_blocks()
  local to_alloc = need > have and need - have or 0
  local ok, err = allocate(self, to_alloc, manager)
  if not ok then return nil, err end
  self._state = state("prefill_scheduled", n, to_alloc)
  emit(self, "prefill_scheduled", { num_tokens = n, blocks_allocated = to_alloc })
  return true
end

--- Applies the scheduled chunk: registers every full block that has a
--- guard, moves prefill_position and kv_position, and appends `token` (the
--- first generated one, required on the final chunk unless max_output_tokens
--- is 0, refused on the others). The token stays dangling: a block it
--- completes is registered by the next decode or speculative apply.
--- true, or nil, err (wrong_state, token_on_non_final_chunk,
--- missing_token_on_final_chunk).
function SS:apply_prefill(token, manager)
  if token ~= nil then check_token(token, 1, "apply_prefill") end
  check_manager(manager, 2, "apply_prefill")
  local st = self._state
  if st.kind ~= "prefill_scheduled" then return wrong_state("PrefillScheduled", st) end
  local inner = self._inner
  local new_position = self._prefill + st.num_tokens
  local final = new_position >= inner:num_input_tokens()
  if token ~= nil and not final then
    return nil, new_error("token_on_non_final_chunk", "token provided but prefill not completing this chunk")
  end
  if final and token == nil and inner:max_output_tokens() > 0 then
    return nil, new_error("missing_token_on_final_chunk", "final prefill chunk requires a generated token")
  end
  if token ~= nil and inner:is_complete() then
    -- the crate panics in append_token after registering; raise before any change
    error("Cannot generate more tokens: reached max_output_tokens limit", 2)
  end
  local before = inner:assigned_blocks()
  register_pending(self, manager)
  self._prefill = new_position
  self._kv = new_position
  if token ~= nil then inner:append_token(token) end
  local registered = inner:assigned_blocks() - before + inner:staged_blocks()
  self._state = IDLE
  emit(self, "prefill_applied", { num_tokens = st.num_tokens, blocks_registered = registered,
    token_emitted = token ~= nil })
  return true
end

-- ------------------------------------------------------------- decode

--- Schedules one decode step: allocates the generation block plus one for
--- every full block not yet staged, minus the unassigned ones held.
--- true, or nil, err (not_idle, prefill_not_complete, generation_complete,
--- wrong_dangling_count, allocation_failed).
function SS:schedule_decode(manager)
  check_manager(manager, 1, "schedule_decode")
  local ok, err = decode_checks(self)
  if not ok then return nil, err end
  local inner = self._inner
  local held = inner:assigned_blocks() + inner:staged_blocks()
  local full = inner:complete_sequence_blocks()
  local pending = full > held and full - held or 0
  local need = pending + 1
  local have = inner:unassigned_blocks()
  local to_alloc = need > have and need - have or 0
  ok, err = allocate(self, to_alloc, manager)
  if not ok then return nil, err end
  self._state = state("decode_scheduled", nil, to_alloc)
  emit(self, "decode_scheduled", { blocks_allocated = to_alloc })
  return true
end

--- Appends `token`, registers every completed block, kv_position + 1.
--- Returns the outcome ("continue", "block_completed", "max_length",
--- "block_completed_and_max_length") or nil, err (wrong_state).
function SS:apply_decode(token, manager)
  check_token(token, 1, "apply_decode")
  check_manager(manager, 2, "apply_decode")
  if self._state.kind ~= "decode_scheduled" then return wrong_state("DecodeScheduled", self._state) end
  local inner = self._inner
  local crossed = inner:append_token(token) ~= nil
  register_pending(self, manager)
  self._kv = self._kv + 1
  self._state = IDLE
  emit(self, "decode_applied", { token = token, block_completed = crossed })
  return outcome(crossed, inner:is_complete())
end

-- ------------------------------------------------------------- speculative

--- Schedules k draft tokens (at most remaining_tokens()): allocates the
--- blocks that cover total_tokens + k, minus those held. Same errors as
--- schedule_decode.
function SS:schedule_speculative(k, manager)
  check_count(k, 1, "schedule_speculative")
  check_manager(manager, 2, "schedule_speculative")
  local ok, err = decode_checks(self)
  if not ok then return nil, err end
  local inner = self._inner
  local remaining = inner:remaining_tokens()
  if k > remaining then k = remaining end
  local bs = inner:block_size()
  local need = (inner:total_tokens() + k + bs - 1) // bs
  local have = inner:assigned_blocks() + inner:staged_blocks() + inner:unassigned_blocks()
  local to_alloc = need > have and need - have or 0
  ok, err = allocate(self, to_alloc, manager)
  if not ok then return nil, err end
  self._state = state("speculative_scheduled", k, to_alloc)
  emit(self, "speculative_scheduled", { num_tokens = k, blocks_allocated = to_alloc })
  return true
end

--- Appends the accepted prefix of the draft, registers every completed
--- block, kv_position + #accepted, and releases (LIFO) the unassigned
--- blocks beyond the one generation block still needed. Returns the
--- outcome, or nil, err (wrong_state, accepted_exceeds_scheduled).
function SS:apply_speculative(accepted, manager)
  check_tokens(accepted, 1, "apply_speculative")
  check_manager(manager, 2, "apply_speculative")
  local st = self._state
  if st.kind ~= "speculative_scheduled" then return wrong_state("SpeculativeScheduled", st) end
  local n = #accepted
  if n > st.num_tokens then
    return nil, new_error("accepted_exceeds_scheduled",
      format("accepted %d tokens exceeds scheduled %d", n, st.num_tokens),
      { accepted = n, scheduled = st.num_tokens })
  end
  local inner = self._inner
  local crossed = false
  for i = 1, n do
    if inner:append_token(accepted[i]) ~= nil then crossed = true end
  end
  register_pending(self, manager)
  self._kv = self._kv + n
  local complete = inner:is_complete()
  local keep = complete and 0 or 1
  local u = inner:unassigned_blocks()
  local released = lifo_drop(self, u > keep and u - keep or 0)
  self._state = IDLE
  emit(self, "speculative_applied", { accepted = n, scheduled = st.num_tokens, blocks_released = released })
  return outcome(crossed, complete)
end

-- ------------------------------------------------------------- revert, drop

--- Gives back (LIFO) the blocks the pending schedule allocated and returns
--- to idle; reports schedule_reverted with the scheduled count. true, or
--- nil, err (wrong_state when idle).
function SS:revert_schedule()
  local st = self._state
  if st.kind == "idle" then return wrong_state("any Scheduled state", st) end
  lifo_drop(self, st.blocks_allocated)
  self._state = IDLE
  emit(self, "schedule_reverted", { blocks_released = st.blocks_allocated })
  return true
end

--- Releases up to n unassigned blocks (LIFO); returns how many. Raises
--- unless idle (a programming error in the crate too).
function SS:drop_unassigned(n)
  check_count(n, 1, "drop_unassigned")
  if not is_idle(self) then
    error("drop_unassigned called in non-Idle state: " .. tostring(self._state), 2)
  end
  local dropped = lifo_drop(self, n)
  if dropped > 0 then emit(self, "unassigned_dropped", { count = dropped }) end
  return dropped
end

-- ------------------------------------------------------------- lifecycle

--- Releases every block (preemption or the end); positions are kept.
--- true, or nil, err (wrong_state unless idle).
function SS:release()
  if not is_idle(self) then return wrong_state("Idle", self._state) end
  self._inner:release()
  emit(self, "released")
  return true
end

-- <close> drops the guards in any state, as dropping the Rust value does.
function SS:__close() self._inner:release() end

--- After release: matches and re-registers the full blocks (no generation
--- block; the next schedule_decode allocates it). Returns true, false when
--- blocks ran out (nothing held then), or nil, err (wrong_state).
function SS:reacquire(manager)
  check_manager(manager, 1, "reacquire")
  if not is_idle(self) then return wrong_state("Idle", self._state) end
  local inner = self._inner
  local success = inner:reacquire(manager)
  emit(self, "reacquired", { prefix_matched = inner:prefix_matched_blocks(), success = success })
  return success
end

--- Appends tokens without computing their KV: each one is dangling. true,
--- or nil, err (wrong_state, append_exceeds_remaining), nothing changed.
function SS:append_tokens(tokens)
  check_tokens(tokens, 1, "append_tokens")
  if not is_idle(self) then return wrong_state("Idle", self._state) end
  local inner = self._inner
  local remaining = inner:remaining_tokens()
  if #tokens > remaining then
    return nil, new_error("append_exceeds_remaining",
      format("append requested %d tokens but only %d remain", #tokens, remaining),
      { requested = #tokens, remaining = remaining })
  end
  for i = 1, #tokens do inner:append_token(tokens[i]) end
  return true
end

-- ------------------------------------------------------------- accessors

--- The state, as a new table { kind = "idle" | "prefill_scheduled" |
--- "decode_scheduled" | "speculative_scheduled", num_tokens, blocks_allocated }.
function SS:state() return copy_state(self._state) end
function SS:prefill_position() return self._prefill end
function SS:kv_position() return self._kv end
function SS:delegate() return self._delegate end
function SS:inner() return self._inner end

for _, name in pairs { "generated_tokens", "max_output_tokens", "num_input_tokens", "total_tokens",
  "remaining_tokens", "num_blocks", "assigned_blocks", "staged_blocks", "unassigned_blocks",
  "prefix_matched_blocks", "block_size", "is_complete" } do
  SS[name] = function(self) return self._inner[name](self._inner) end
end

function SS:__tostring()
  return format("SchedulableSequence { state: %s, prefill_position: %d, kv_position: %d, inner: %s }",
    tostring(self._state), self._prefill, self._kv, tostring(self._inner))
end

--- True when v is a SchedulableSequence.
function M.is(v) return getmetatable(v) == SS end

-- kvbm.scheduled{ ... } (the builder) or kvbm.scheduled(tokens, max, bs, delegate)
-- (a lone table is the options form unless it looks like a token list)
return setmetatable(M, { __call = function(_, a, ...)
  if select("#", ...) == 0 and type(a) == "table" and (a.tokens ~= nil or a[1] == nil) then
    return build(a, 3)
  end
  return M.new(a, ...)
end })
