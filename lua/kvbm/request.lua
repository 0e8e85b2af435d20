-- kvbm.request - RequestSequence: one request's tokens (a kvbm.sequence,
-- no salt) and the block guards that back them (a kvbm.logical), with the
-- individual lifecycle steps exposed and no scheduling policy
-- (kvbm-logical's integrations/request.rs). kvbm.scheduled builds the
-- schedule/apply state machine on top of it.
--
--   local r = kvbm.request(tokens, max_output_tokens, block_size)
--   local hits = r:match_and_add_prefix(m)       -- cached prefix, as assigned
--   r:allocate_blocks(r:num_blocks() - hits + 1, m) -- +1: the generation block
--   r:complete_and_register_pending(m)           -- stage + register full blocks
--   while not r:is_complete() do                 -- generation loop
--     if r:append_token(next_token()) then       -- a block just filled
--       r:complete_and_register_pending(m)
--       r:allocate_blocks(1, m)
--     end
--   end
--   r:release()                                  -- preemption / the end
--   r:reacquire(m)                               -- matches again, no gen block
--
-- Nothing here touches a manager until a method is given one. Guards are
-- released by release(), by <close>, or by the collector.
--
-- A request admitted through kvbm.tiers (t:admit(r), or t:admit(tokens,
-- salt), which builds one) is the same object with the planner's fields
-- (r.onboard, r.matched, r.waiting, r.seq, r.tiers) and r:commit(). Its G1
-- blocks are the planner's until r:commit(); the first call that needs
-- them afterwards moves them into its assignments (so a replay that only
-- admits, commits and releases never makes a guard). From then on it
-- decodes as any request, on t:manager("G1"): registrations reach the
-- policy's on_register, and release() lets go through the planner, so
-- the blocks that go inactive reach on_inactive.

local kvbm = require "kvbm"
local logical = kvbm.logical
local planner = kvbm._tiers -- the C side of kvbm.tiers (admit, commit, release, take, ...)

local error, getmetatable, pairs, pcall, setmetatable, select, tostring, type =
  error, getmetatable, pairs, pcall, setmetatable, select, tostring, type
local mtype = math.type
local format = string.format
local hash_tostring = kvbm.hash.tostring
local new_sequence = kvbm.sequence
local new_error, check_manager, typename = logical._error, logical._check_manager, logical._typename

local _ENV = nil -- no global accesses from here on

local M = {}


local function check_count(n, argn, fname, what)
  if mtype(n) ~= "integer" or n < 0 then
    error(format("bad argument #%d to '%s' (%s must be a non-negative integer, got %s)",
      argn, fname, what, mtype(n) and n or typename(n)), 3)
  end
end

local function release_list(blocks)
  for i = 1, #blocks do blocks[i]:release() end
end

local RS = {}
RS.__index = RS
RS.__name = "kvbm.RequestSequence"

local function wrap(seq, max_output_tokens)
  return setmetatable({
    _seq = seq,
    _la = false, -- the kvbm.logical, made when first needed (a replay through kvbm.tiers never needs it)
    _generated = 0,
    _max = max_output_tokens,
    _input = seq:total_tokens(),
    _prefix = 0,
    _taken = false,
    -- kvbm.tiers' fields: false until the request is admitted there (and
    -- present from the start, so that admitting it does not grow the table)
    seq = false, tiers = false, matched = false, waiting = false, onboard = false, _r = false,
  }, RS)
end

--- A request over tokens (a table of integers, or packed u32 LE string);
--- allocates nothing.
function M.new(tokens, max_output_tokens, block_size)
  local tt = type(tokens)
  if tt ~= "table" and tt ~= "string" then
    error("bad argument #1 to 'new' (token table expected, got " .. typename(tokens) .. ")", 2)
  end
  check_count(max_output_tokens, 2, "new", "max_output_tokens")
  if mtype(block_size) ~= "integer" or block_size <= 0 then
    error("bad argument #3 to 'new' (block_size must be a positive integer, got "
      .. (mtype(block_size) and block_size or typename(block_size)) .. ")", 2)
  end
  local seq, err = new_sequence(tokens, block_size)
  if not seq then error("kvbm.request: " .. tostring(err), 2) end
  return wrap(seq, max_output_tokens)
end

M._wrap = wrap -- for kvbm.tiers, which checked the sequence

--- A request over an existing kvbm.sequence (salted or not; the request
--- appends to it); max_output_tokens defaults to 0.
function M.from_sequence(seq, max_output_tokens)
  if typename(seq) ~= "kvbm.Sequence" then
    error("bad argument #1 to 'from_sequence' (kvbm.Sequence expected, got " .. typename(seq) .. ")", 2)
  end
  if max_output_tokens == nil then max_output_tokens = 0 end
  check_count(max_output_tokens, 2, "from_sequence", "max_output_tokens")
  return wrap(seq, max_output_tokens)
end

-- ------------------------------------------------- admitted through tiers

-- r._r is set while the request is admitted in a planner (r.tiers);
-- r._taken once its G1 blocks moved from the planner into r._la.

-- The assignments, for a method (fname) that needs the guards: an admitted
-- request's blocks move in from the planner first (raises, with nothing
-- changed, before the commit). Errors the planner raises in C name the
-- user's call, not this file (ltiers.c skips the Lua layer's frames).
local function la_of(self, fname)
  local la = self._la
  if not la then
    la = logical.new()
    self._la = la
  end
  if self._r and not self._taken then
    local guards = planner.take(self, fname) -- raises before the commit
    local n, err = la:extend_assigned(guards)
    if not n then -- cannot happen: admit saw the assignments empty
      for i = 1, #guards do guards[i]:release() end
      error(fname .. ": " .. tostring(err), 3)
    end
    self._taken = true
  end
  return la
end

-- An admitted request takes its blocks from its G1 manager only.
local function check_g1(self, manager, argn, fname)
  if self._r and manager ~= self.tiers.managers.G1 then
    error(format("bad argument #%d to '%s' (the request is admitted through kvbm.tiers: its blocks come from "
      .. "t:manager(\"G1\"), got another manager)", argn, fname), 3)
  end
end

local function not_admitted(self, fname)
  if self._r then
    error(fname .. ": the request is admitted through kvbm.tiers, which matched its prefix (release it first)", 3)
  end
end

-- Registers la's staged blocks through the planner (on_register sees them).
local function register_through(self, la)
  local tiers, seq, first = self.tiers, self._seq, la:assigned_count()
  return la:_register_via(function(list)
    local out = {}
    local ok, ibs, err = pcall(planner.register, tiers, list, seq, first, out)
    if ok then return ibs, err end
    if out[1] then return out, nil, ibs end -- registered, then the policy failed: keep them, then raise
    error(ibs, 0)
  end)
end

--- An admitted request: the prefill is computed (its onboard plans are
--- complete): registers its new G1 blocks, offers them to on_register;
--- returns how many. Raises before the onboards complete, after the
--- release, and for a request that was never admitted. (In C: one call
--- per request in a replay.)
RS.commit = planner.commit

--- Prefix-matches the full blocks against manager and adds the hits as
--- assigned; returns the count (0 when nothing matched). Raises unless
--- the request holds no blocks yet.
function RS:match_and_add_prefix(manager)
  check_manager(manager, 1, "match_and_add_prefix")
  not_admitted(self, "match_and_add_prefix")
  if not la_of(self):is_empty() then
    error("match_and_add_prefix called on sequence with existing assignments", 2)
  end
  local matched = manager:match(self._seq:hashes())
  if #matched == 0 then return 0 end
  return self:add_matched_blocks(matched)
end

--- Adds ImmutableBlocks matched elsewhere as the next assigned positions,
--- checking each hash against the token block at its position; the count
--- or nil, err (sequence_hash_mismatch with position, expected, actual,
--- blocks; or extend_assigned's duplicate error). Raises when they would
--- run past the full blocks. (Private in the crate; used by its tests.)
function RS:add_matched_blocks(blocks)
  if type(blocks) ~= "table" then
    error("bad argument #1 to 'add_matched_blocks' (table of kvbm.ImmutableBlock expected, got "
      .. typename(blocks) .. ")", 2)
  end
  not_admitted(self, "add_matched_blocks")
  local count = #blocks
  local la = la_of(self)
  local start = la:assigned_count()
  if start + count > #self._seq then error("matched blocks exceed completed sequence blocks", 2) end
  for i = 1, count do
    local b = blocks[i]
    if typename(b) ~= "kvbm.ImmutableBlock" then
      error(format("bad argument #1 to 'add_matched_blocks' (kvbm.ImmutableBlock expected at index %d, got %s)",
        i, typename(b)), 2)
    end
    local position = start + i - 1
    local expected, actual = self._seq:hash(position), b:hash()
    if expected ~= actual then
      local copy = {}
      for j = 1, count do copy[j] = blocks[j] end
      return nil, new_error("sequence_hash_mismatch",
        format("sequence hash mismatch at position %d: expected %s, got %s",
          position, hash_tostring(expected), hash_tostring(actual)),
        { position = position, expected = expected, actual = actual, blocks = copy })
    end
  end
  local n, err = la:extend_assigned(blocks)
  if not n then return nil, err end
  self._prefix = self._prefix + count
  return count
end

--- Allocates n MutableBlocks as unassigned; false when the manager has too
--- few (nothing is held then). n == 0 is true at once.
function RS:allocate_blocks(n, manager)
  check_count(n, 1, "allocate_blocks", "block count")
  check_manager(manager, 2, "allocate_blocks")
  check_g1(self, manager, 2, "allocate_blocks")
  local la = la_of(self, "allocate_blocks")
  if n == 0 then return true end
  local got = manager:allocate(n)
  if not got then return false end
  local ok, err = la:extend_blocks(got)
  if not ok then
    release_list(err.blocks)
    return false
  end
  return true
end

--- Stages the unassigned blocks against the full token blocks that have
--- none yet. Raises if staging fails (a block size that differs from the
--- manager's: a programming error).
function RS:stage_pending()
  local la = la_of(self, "stage_pending")
  local start = la:assigned_count() + la:staged_count()
  local full = #self._seq
  if start < full then
    local n, err = la:stage(self._seq, start, full)
    if not n then
      release_list(err.blocks)
      error("staging should not fail (block sizes and counts match): " .. err.message, 2)
    end
  end
end

--- Registers every staged block: the count (or nil, err from the engine).
function RS:register_staged(manager)
  check_manager(manager, 1, "register_staged")
  check_g1(self, manager, 1, "register_staged")
  local la = la_of(self, "register_staged")
  if self._r then return register_through(self, la) end
  return la:register(manager)
end

--- stage_pending, then register_staged: every full block with a guard is
--- registered; a partly filled generation block stays unassigned.
function RS:complete_and_register_pending(manager)
  check_manager(manager, 1, "complete_and_register_pending")
  check_g1(self, manager, 1, "complete_and_register_pending")
  local la = la_of(self, "complete_and_register_pending")
  self:stage_pending()
  if self._r then return register_through(self, la) end
  return la:register(manager)
end

--- Appends one generated token: the 0-based index of the block it
--- completed, or nil. Raises past max_output_tokens. Does not stage,
--- register or allocate.
function RS:append_token(token)
  if self._generated >= self._max then
    error("Cannot generate more tokens: reached max_output_tokens limit", 2)
  end
  if mtype(token) ~= "integer" or token < 0 or token > 0xffffffff then
    error("bad argument #1 to 'append_token' (token must be an integer in 0..2^32-1, got "
      .. (mtype(token) and token or typename(token)) .. ")", 2)
  end
  local pos, err = self._seq:append(token)
  if err then error("Token append failed: " .. err.message, 2) end
  self._generated = self._generated + 1
  return pos
end

function RS:is_complete() return self._generated >= self._max end

--- Releases every guard (registered blocks go to the inactive pool, where
--- they still count as available and can be matched). Idempotent. An
--- admitted request ends its admission: pending onboards are abandoned,
--- its G1 blocks released in position order through the planner (those
--- that go inactive reach on_inactive), after its unregistered ones.
function RS:release()
  if self._r then
    planner.release(self) -- raises (planner closed, called from a hook) with nothing changed
    self._r = false
    if self._taken then
      self._taken = false
      local la = la_of(self)
      local assigned = la:take_assigned()
      la:clear()
      local list = {}
      for i = 1, #assigned do list[i] = assigned[i][2] end
      planner.let_go(self.tiers, list, 0)
      return
    end
  end
  if self._la then self._la:clear() end
end
RS.__close = RS.release

--- After release: matches the full blocks again, allocates, stages and
--- registers the rest (no generation block). true, or false with nothing
--- held. Raises unless the request holds no blocks.
function RS:reacquire(manager)
  check_manager(manager, 1, "reacquire")
  not_admitted(self, "reacquire")
  local la, seq = la_of(self), self._seq
  if not la:is_empty() then error("reacquire called with existing assignments", 2) end
  local full = #seq
  local matched = manager:match(seq:hashes())
  local hits = #matched
  local function fail(blocks)
    if blocks then release_list(blocks) end
    la:clear()
    return false
  end
  if hits > 0 then
    local ok, err = la:extend_assigned(matched)
    if not ok then return fail(err.blocks) end
  end
  local rest = full - hits
  if rest > 0 then
    local blocks = manager:allocate(rest)
    if not blocks then return fail() end
    local ok, err = la:extend_blocks(blocks)
    if not ok then return fail(err.blocks) end
    ok, err = la:stage(seq, hits, full)
    if not ok then return fail(err.blocks) end
    if not la:register(manager) then return fail() end
  end
  self._prefix = hits
  return true
end

-- ------------------------------------------------------------- accessors

function RS:generated_tokens() return self._generated end
function RS:max_output_tokens() return self._max end
function RS:num_input_tokens() return self._input end
function RS:total_tokens() return self._seq:total_tokens() end
function RS:remaining_tokens()
  local r = self._max - self._generated
  return r > 0 and r or 0
end
function RS:num_blocks() return #self._seq end
RS.complete_sequence_blocks = RS.num_blocks
function RS:assigned_blocks() return la_of(self, "assigned_blocks"):assigned_count() end
function RS:staged_blocks() return la_of(self, "staged_blocks"):staged_count() end
function RS:unassigned_blocks() return la_of(self, "unassigned_blocks"):unassigned_count() end
function RS:prefix_matched_blocks() return self._prefix end
function RS:block_size() return self._seq:block_size() end

--- Tokens not covered by prefix hits (the prefill cost).
function RS:new_tokens_for_prefill()
  local r = self._seq:total_tokens() - self._prefix * self._seq:block_size()
  return r > 0 and r or 0
end

--- The underlying kvbm.sequence and kvbm.logical: for reading; changing
--- them behind the request's back breaks its bookkeeping.
function RS:sequence() return self._seq end
function RS:assignments() return la_of(self, "assignments") end

--- Every block id (= page index): assigned, then staged, then unassigned.
function RS:page_indices() return la_of(self, "page_indices"):all_block_ids() end

--- Releases the newest unassigned blocks (LIFO) until `keep` are left;
--- returns how many were released.
function RS:drop_excess_unassigned(keep)
  check_count(keep, 1, "drop_excess_unassigned", "keep")
  local la, dropped = la_of(self, "drop_excess_unassigned"), 0
  while la:unassigned_count() > keep do
    local _, g = la:pop_last_unassigned()
    g:release()
    dropped = dropped + 1
  end
  return dropped
end

function RS:__tostring()
  if self._r and not self._taken then
    return format("RequestSequence { total_tokens: %d, num_blocks: %d, generated_tokens: %d, "
      .. "max_output_tokens: %d, num_input_tokens: %d, prefix_matched_blocks: %d, "
      .. "admitted through kvbm.tiers: its blocks are with the planner, waiting: %d }",
      self._seq:total_tokens(), #self._seq, self._generated, self._max, self._input, self._prefix, self.waiting)
  end
  return format("RequestSequence { total_tokens: %d, num_blocks: %d, generated_tokens: %d, "
    .. "max_output_tokens: %d, num_input_tokens: %d, prefix_matched_blocks: %d, "
    .. "assigned: %d, staged: %d, unassigned: %d }",
    self._seq:total_tokens(), #self._seq, self._generated, self._max, self._input, self._prefix,
    self:assigned_blocks(), self:staged_blocks(), self:unassigned_blocks())
end

--- True when v is a RequestSequence.
function M.is(v) return getmetatable(v) == RS end

-- kvbm.request(tokens, max, bs) or kvbm.request{ tokens = .., max_output_tokens = .., block_size = .. }
local FIELDS = { tokens = true, max_output_tokens = true, block_size = true }

-- (a lone table is the options form unless it looks like a token list)
return setmetatable(M, { __call = function(_, a, ...)
  if select("#", ...) == 0 and type(a) == "table" and (a.tokens ~= nil or a[1] == nil) then
    for k in pairs(a) do
      if not FIELDS[k] then error("kvbm.request: unknown option '" .. tostring(k) .. "'", 2) end
    end
    for k in pairs(FIELDS) do
      if a[k] == nil then error("kvbm.request: missing required field '" .. k .. "'", 2) end
    end
    return M.new(a.tokens, a.max_output_tokens, a.block_size)
  end
  return M.new(a, ...)
end })
