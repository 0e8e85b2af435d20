-- kvbm.replay: the trace replay workload (window W, file order, prompts only), from Lua.
--
-- replay.load(path, opts) reads a trace with kvbm.trace.load (text, or
-- Mooncake/Dynamo JSONL; see kvbm_trace.h) into a list of requests with
-- their tokens packed as u32 strings, ready for kvbm.sequence;
-- replay.run{...} replays it (or the kvbm.Trace itself) against a manager:
--   (e) before each request, when `window` requests hold blocks, release the
--       oldest one's blocks (position order); (a) hash the full blocks with
--       the line's salt; (b) match them; (c) allocate the rest, or count the
--       request rejected and release what it holds; (d) stage and register.
local kvbm = require "kvbm"

local clock = os.clock
local assert = assert
local _ENV = nil

local M = {}

-- The list replay.load returns: one table per request of trace t.
local function requests_of(t)
  local out = {}
  for i = 1, #t do
    out[i] = { id = t:id(i), salt = t:salt(i), n = t:n_tokens(i), tokens = t:tokens(i) }
  end
  return out
end

--- Reads a trace (path, "-" for standard input; opts as kvbm.trace.load's).
--- Returns a list of { id, salt, n, tokens = <packed u32 string> } and the
--- kvbm.Trace, or nil, err for a file that cannot be read or is malformed
--- (err.message "file:line: what", err.file, err.line).
function M.load(path, opts)
  local t, err = kvbm.trace.load(path, opts)
  if not t then return nil, err end
  return requests_of(t), t
end

-- sequence_of(i, seq) -> request i's sequence (seq: the previous request's,
-- done with, to refill).
local function run_sets(n, sequence_of, m, window, stats)
  local held, head, count, seq = {}, 1, 0, nil
  for i = 1, n do
    if count == window then
      held[head]:release()
      held[head] = nil
      head, count = head % window + 1, count - 1
    end
    seq = sequence_of(i, seq)
    local nfull = #seq
    local got = m:match_set(seq)
    local h = #got
    stats.hits = stats.hits + h
    local new = m:allocate_set(nfull - h)
    if not new then
      stats.rejected = stats.rejected + 1
      got:release()
    else
      stats.allocations = stats.allocations + (nfull - h)
      got:append(m:register_set(new, seq, h))
      held[(head + count - 1) % window + 1] = got
      count = count + 1
    end
    stats.full_blocks = stats.full_blocks + nfull
  end
  for i = 1, window do if held[i] then held[i]:release() end end
end

local function release_all(list)
  for i = 1, #list do list[i]:release() end
end

local function run_blocks(n, sequence_of, m, window, stats)
  local held, head, count, seq = {}, 1, 0, nil
  for r = 1, n do
    if count == window then
      release_all(held[head])
      held[head] = nil
      head, count = head % window + 1, count - 1
    end
    seq = sequence_of(r, seq)
    local nfull = #seq
    local hashes = seq:hashes()
    local got = m:match(hashes)
    local h = #got
    stats.hits = stats.hits + h
    local new = m:allocate(nfull - h)
    if not new then
      stats.rejected = stats.rejected + 1
      release_all(got)
    else
      stats.allocations = stats.allocations + (nfull - h)
      local staged = {}
      for i = 1, #new do staged[i] = new[i]:stage(hashes[h + i]) end
      local regd = m:register_all(staged)
      for i = 1, #regd do got[h + i] = regd[i] end
      held[(head + count - 1) % window + 1] = got
      count = count + 1
    end
    stats.full_blocks = stats.full_blocks + nfull
  end
  for i = 1, window do if held[i] then release_all(held[i]) end end
end

--- Replays opts.trace (a kvbm.Trace) or opts.requests (replay.load's list)
--- against opts.manager with opts.window; opts.mode is "sets" (default) or
--- "blocks". Returns the counts and the loop's seconds.
function M.run(opts)
  local m, window = assert(opts.manager, "manager required"), assert(opts.window, "window required")
  local trace, requests = opts.trace, opts.requests
  assert(trace or requests, "trace or requests required")
  local bs = m:block_size()
  local sets = (opts.mode or "sets") == "sets"
  local sequence_of
  if trace then -- hashed straight from the loaded trace, one sequence refilled
    sequence_of = function(i, seq) return trace:sequence(i, bs, seq) end
  else
    requests = requests or requests_of(trace)
    sequence_of = function(i)
      local req = requests[i]
      return kvbm.sequence(req.tokens:sub(1, req.n // bs * bs * 4), bs, req.salt)
    end
  end
  local n = trace and #trace or #requests
  local stats = { requests = n, full_blocks = 0, hits = 0, allocations = 0, rejected = 0 }
  local before = m:metrics().kvbm_evictions_total
  local t0 = clock()
  if sets then
    run_sets(n, sequence_of, m, window, stats)
  else
    run_blocks(n, sequence_of, m, window, stats)
  end
  stats.seconds = clock() - t0
  stats.evictions = m:metrics().kvbm_evictions_total - before
  return stats
end

return M
