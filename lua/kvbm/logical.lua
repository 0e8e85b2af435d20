-- kvbm.logical - LogicalBlockAssignments: the block guards of one request,
-- kept in three insertion-ordered collections keyed by block id, one per
-- stage of the block lifecycle (kvbm-logical's sequence/assignments/logical.rs):
--
--   unassigned  MutableBlock    allocated, no tokens yet (FIFO queue)
--       | stage(seq, lo, hi)    pairs each with a full token block
--   staged      CompleteBlock   has a hash, not visible to match yet
--       | register(manager)     registers, same key
--   assigned    ImmutableBlock  registered, in position order; also
--                               extend_assigned(match results)
--
--   local la = kvbm.logical()              -- or kvbm.logical.new()
--   la:extend_blocks(assert(m:allocate(3)))
--   la:stage(seq)                          -- token blocks 0..#seq
--   la:register(m)
--   local id, ib = la:get_assigned(0)      -- 0-based index
--   la:clear()                             -- releases every guard
--
-- The collections own the guards handed to them: extend_blocks and
-- extend_assigned keep their own copies of the lists, clear releases,
-- take_* and pop_last_unassigned hand guards back to the caller. Every
-- error that concerns guards hands all of them back in err.blocks, so
-- nothing is lost. Ids are only unique per manager: keep one manager's
-- blocks in one LogicalBlockAssignments.

local kvbm = require "kvbm"

local error, getmetatable, setmetatable, select, type =
  error, getmetatable, setmetatable, select, type
local mtype = math.type
local format = string.format

local _ENV = nil -- no global accesses from here on

local M = {}

-- ------------------------------------------------------------- errors

-- The error objects of the pure-Lua layer are the engine's own kvbm.Error
-- (doc/errors.md): err.code, err.message, the detail fields, tostring.
-- request.lua and scheduled.lua share it.
M._error = kvbm.new_error

-- ------------------------------------------------------------- checks

local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end
M._typename = typename -- shared with request.lua and scheduled.lua

local function argerror(n, fname, msg)
  error(format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

local function check_manager(m, n, fname)
  if typename(m) ~= "kvbm.Manager" then
    argerror(n, fname, "kvbm.Manager expected, got " .. typename(m))
  end
end
M._check_manager = check_manager

local function check_index(i, fname)
  if mtype(i) ~= "integer" then argerror(1, fname, "integer index expected, got " .. typename(i)) end
end

-- ------------------------------------------------------------- queues

-- An ordered collection: ids and guards in parallel arrays between head
-- and tail. Pushing at the tail, shifting at the head and popping at the
-- tail are all O(1), and so is indexing.
local function queue() return { head = 1, tail = 0, id = {}, guard = {} } end

local function qlen(q) return q.tail - q.head + 1 end

local function qpush(q, id, g)
  local t = q.tail + 1
  q.tail, q.id[t], q.guard[t] = t, id, g
end

local function qshift(q)
  local h = q.head
  if h > q.tail then return nil end
  local id, g = q.id[h], q.guard[h]
  q.id[h], q.guard[h] = nil, nil
  if h == q.tail then q.head, q.tail = 1, 0 else q.head = h + 1 end
  return id, g
end

local function qpop(q)
  local t = q.tail
  if t < q.head then return nil end
  local id, g = q.id[t], q.guard[t]
  q.id[t], q.guard[t] = nil, nil
  if t == q.head then q.head, q.tail = 1, 0 else q.tail = t - 1 end
  return id, g
end

local function qget(q, i) -- 0-based
  if i < 0 or i > q.tail - q.head then return nil end
  local k = q.head + i
  return q.id[k], q.guard[k]
end

local function qiter(q)
  local k = q.head - 1
  return function()
    k = k + 1
    if k <= q.tail then return q.id[k], q.guard[k] end
  end
end

-- ------------------------------------------------------------- the type

local LBA = {}
LBA.__index = LBA
LBA.__name = "kvbm.LogicalBlockAssignments"

--- An empty LogicalBlockAssignments.
function M.new()
  -- where[id] names the collection holding id: "a", "s" or "u"
  return setmetatable({ _a = queue(), _s = queue(), _u = queue(), _where = {} }, LBA)
end

function LBA:assigned_count() return qlen(self._a) end
function LBA:staged_count() return qlen(self._s) end
function LBA:unassigned_count() return qlen(self._u) end
function LBA:is_empty() return qlen(self._a) + qlen(self._s) + qlen(self._u) == 0 end

function LBA:contains(id)
  if mtype(id) ~= "integer" then argerror(1, "contains", "integer block id expected, got " .. typename(id)) end
  return self._where[id] ~= nil
end
function LBA:contains_assigned(id) return self:contains(id) and self._where[id] == "a" end
function LBA:contains_staged(id) return self:contains(id) and self._where[id] == "s" end
function LBA:contains_unassigned(id) return self:contains(id) and self._where[id] == "u" end

--- id, guard of the i-th (0-based) entry, or nil when out of range.
function LBA:get_assigned(i)
  check_index(i, "get_assigned")
  return qget(self._a, i)
end
function LBA:get_staged(i)
  check_index(i, "get_staged")
  return qget(self._s, i)
end
function LBA:get_unassigned(i)
  check_index(i, "get_unassigned")
  return qget(self._u, i)
end

--- for id, guard in la:assigned_iter() do ... end (do not mutate meanwhile)
function LBA:assigned_iter() return qiter(self._a) end
function LBA:staged_iter() return qiter(self._s) end
function LBA:unassigned_iter() return qiter(self._u) end

--- Every id, in lifecycle order: assigned, then staged, then unassigned.
function LBA:all_block_ids()
  local out, n = {}, 0
  local qs = { self._a, self._s, self._u }
  for j = 1, 3 do
    local q = qs[j]
    for k = q.head, q.tail do
      n = n + 1
      out[n] = q.id[k]
    end
  end
  return out
end

-- Validates a list of guards of one class without changing anything:
-- raises on a wrong type, returns the ids (and the first duplicate id:
-- one already held, or repeated within the list).
local function collect(self, list, class, fname)
  if type(list) ~= "table" then argerror(1, fname, "table of " .. class .. " expected, got " .. typename(list)) end
  local ids, seen, dup = {}, {}, nil
  for i = 1, #list do
    local g = list[i]
    if typename(g) ~= class then
      argerror(1, fname, format("%s expected at index %d, got %s", class, i, typename(g)))
    end
    local id = g:id() -- raises on a released or consumed guard
    if dup == nil and (self._where[id] ~= nil or seen[id]) then dup = id end
    seen[id], ids[i] = true, id
  end
  return ids, dup
end

local function copy(list)
  local t = {}
  for i = 1, #list do t[i] = list[i] end
  return t
end

local function extend(self, list, class, fname, code, q, tag)
  local ids, dup = collect(self, list, class, fname)
  if dup ~= nil then
    return nil, M._error(code, format("duplicate block_id %d already present", dup),
      { block_id = dup, blocks = copy(list) })
  end
  for i = 1, #ids do
    qpush(q, ids[i], list[i])
    self._where[ids[i]] = tag
  end
  return #ids
end

--- Appends MutableBlocks to the unassigned queue. Atomic: on a duplicate
--- id, nil, err (duplicate_block_id, err.block_id, err.blocks = the input).
function LBA:extend_blocks(blocks)
  return extend(self, blocks, "kvbm.MutableBlock", "extend_blocks", "duplicate_block_id", self._u, "u")
end

--- Appends ImmutableBlocks (match results, cache hits) to assigned.
--- Atomic, as extend_blocks (duplicate_assigned_block_id).
function LBA:extend_assigned(blocks)
  return extend(self, blocks, "kvbm.ImmutableBlock", "extend_assigned", "duplicate_assigned_block_id", self._a, "a")
end

--- Pairs unassigned blocks (FIFO) with the token blocks lo, lo+1, ..., hi-1
--- of seq (half-open; default 0, #seq), as the crate's stage(&blocks[lo..hi]):
--- stages min(hi - lo, unassigned) blocks and returns that count. On a
--- block size mismatch the blocks staged before stay staged and the failed
--- block, already out of the queue, comes back in err.block (and err.blocks).
function LBA:stage(seq, lo, hi)
  if typename(seq) ~= "kvbm.Sequence" then argerror(1, "stage", "kvbm.Sequence expected, got " .. typename(seq)) end
  local full = #seq
  if lo == nil then lo = 0 end
  if hi == nil then hi = full end
  if mtype(lo) ~= "integer" then argerror(2, "stage", "integer expected, got " .. typename(lo)) end
  if mtype(hi) ~= "integer" then argerror(3, "stage", "integer expected, got " .. typename(hi)) end
  if lo < 0 or lo > hi or hi > full then
    argerror(2, "stage", format("range %d, %d out of the sequence's %d full blocks", lo, hi, full))
  end
  local u = self._u
  local n = hi - lo
  if qlen(u) < n then n = qlen(u) end
  for i = 0, n - 1 do
    -- complete the front block before shifting it, so that a raising
    -- complete (a released guard) leaves the queue as it was
    local id, mb = qget(u, 0)
    local cb, err = mb:complete(seq, lo + i)
    qshift(u)
    if not cb then
      self._where[id] = nil
      err.blocks = { err.block }
      return nil, err
    end
    qpush(self._s, id, cb)
    self._where[id] = "s"
  end
  return n
end

--- Registers every staged block (FIFO) with manager and moves it to
--- assigned under the same key. Returns the count; all or nothing: when
--- the engine fails (no_memory) nil, err and the blocks stay staged.
function LBA:register(manager)
  check_manager(manager, 1, "register")
  return self:_register_via(function(list) return manager:register_all(list) end)
end

-- register with another registrar: register_all(list of the staged guards)
-- returns their ImmutableBlocks (or nil, err), and optionally an error to
-- raise once they are assigned (kvbm.request's planner path).
function LBA:_register_via(register_all)
  local s = self._s
  local n = qlen(s)
  if n == 0 then return 0 end
  local list = {}
  for i = 0, n - 1 do list[i + 1] = s.guard[s.head + i] end
  local ibs, err, raise = register_all(list)
  if not ibs then return nil, err end
  for i = 1, n do
    local id = qshift(s)
    qpush(self._a, id, ibs[i])
    self._where[id] = "a"
  end
  if raise ~= nil then error(raise, 0) end
  return n
end

--- Removes the newest unassigned block (LIFO): id, MutableBlock, or nil.
--- The caller owns the guard (release it to give the block back now).
function LBA:pop_last_unassigned()
  local id, g = qpop(self._u)
  if id ~= nil then self._where[id] = nil end
  return id, g
end

local function release_all(q)
  for k = q.head, q.tail do q.guard[k]:release() end
end

--- Releases every guard (assigned, staged, unassigned, each in order) and
--- empties the three collections.
function LBA:clear()
  local a, s, u = self._a, self._s, self._u
  -- detach first: if a release raises, the object is already consistent
  self._a, self._s, self._u, self._where = queue(), queue(), queue(), {}
  release_all(a)
  release_all(s)
  release_all(u)
end
LBA.__close = LBA.clear

local function take(self, field)
  local q = self[field]
  self[field] = queue()
  local out = {}
  for k = q.head, q.tail do
    self._where[q.id[k]] = nil
    out[#out + 1] = { q.id[k], q.guard[k] }
  end
  return out
end

--- Empties one collection and returns its entries in order, as
--- { {id, guard}, ... }; the caller owns the guards.
function LBA:take_assigned() return take(self, "_a") end
function LBA:take_staged() return take(self, "_s") end
function LBA:take_unassigned() return take(self, "_u") end

function LBA:__tostring()
  return format("LogicalBlockAssignments { assigned_count: %d, staged_count: %d, unassigned_count: %d }",
    qlen(self._a), qlen(self._s), qlen(self._u))
end

--- True when v is a LogicalBlockAssignments.
function M.is(v) return getmetatable(v) == LBA end

return setmetatable(M, { __call = function(_, ...)
  if select("#", ...) > 0 then error("kvbm.logical() takes no arguments", 2) end
  return M.new()
end })
