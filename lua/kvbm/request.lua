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

local kvbm = require "kvbm"
local logical = kvbm.logical

local error, getmetatable, pairs, setmetatable, select, tostring, type =
  error, getmetatable, pairs, setmetatable, select, tostring, type
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
  if not seq then error("kvbm.request: " .. err, 2) end
  return setmetatable({
    _seq = seq,
    _la = logical.new(),
    _generated = 0,
    _max = max_output_tokens,
    _input = seq:total_tokens(),
    _prefix = 0,
  }, RS)
end

--- Prefix-matches the full blocks against manager and adds the hits as
--- assigned; returns the count (0 when nothing matched). Raises unless
--- the request holds no blocks yet.
function RS:match_and_add_prefix(manager)
  check_manager(manager, 1, "match_and_add_prefix")
  if not self._la:is_empty() then
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
  local count = #blocks
  local start = self._la:assigned_count()
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
  local n, err = self._la:extend_assigned(blocks)
  if not n then return nil, err end
  self._prefix = self._prefix + count
  return count
end

--- Allocates n MutableBlocks as unassigned; false when the manager has too
--- few (nothing is held then). n == 0 is true at once.
function RS:allocate_blocks(n, manager)
  check_count(n, 1, "allocate_blocks", "block count")
  check_manager(manager, 2, "allocate_blocks")
  if n == 0 then return true end
  local blocks = manager:allocate(n)
  if not blocks then return false end
  local ok, err = self._la:extend_blocks(blocks)
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
  local la = self._la
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
  return self._la:register(manager)
end

--- stage_pending, then register_staged: every full block with a guard is
--- registered; a partly filled generation block stays unassigned.
function RS:complete_and_register_pending(manager)
  check_manager(manager, 1, "complete_and_register_pending")
  self:stage_pending()
  return self._la:register(manager)
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
--- they still count as available and can be matched). Idempotent.
function RS:release() self._la:clear() end
RS.__close = RS.release

--- After release: matches the full blocks again, allocates, stages and
--- registers the rest (no generation block). true, or false with nothing
--- held. Raises unless the request holds no blocks.
function RS:reacquire(manager)
  check_manager(manager, 1, "reacquire")
  local la, seq = self._la, self._seq
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
function RS:assigned_blocks() return self._la:assigned_count() end
function RS:staged_blocks() return self._la:staged_count() end
function RS:unassigned_blocks() return self._la:unassigned_count() end
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
function RS:assignments() return self._la end

--- Every block id (= page index): assigned, then staged, then unassigned.
function RS:page_indices() return self._la:all_block_ids() end

--- Releases the newest unassigned blocks (LIFO) until `keep` are left;
--- returns how many were released.
function RS:drop_excess_unassigned(keep)
  check_count(keep, 1, "drop_excess_unassigned", "keep")
  local la, dropped = self._la, 0
  while la:unassigned_count() > keep do
    local _, g = la:pop_last_unassigned()
    g:release()
    dropped = dropped + 1
  end
  return dropped
end

function RS:__tostring()
  local la = self._la
  return format("RequestSequence { total_tokens: %d, num_blocks: %d, generated_tokens: %d, "
    .. "max_output_tokens: %d, num_input_tokens: %d, prefix_matched_blocks: %d, "
    .. "assigned: %d, staged: %d, unassigned: %d }",
    self._seq:total_tokens(), #self._seq, self._generated, self._max, self._input, self._prefix,
    la:assigned_count(), la:staged_count(), la:unassigned_count())
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
