-- kvbm.sim: the `kvbm sim` program. Replays a request trace through G1/G2
-- (/G3) managers with a tier policy (kvbm.tiers) and prints a report: per
-- tier hit rate and evictions, onboards, offloads, events published,
-- blocks per second. Copies are taken as done the moment they are planned.
--
--   kvbm sim [TRACE] [options]      (no TRACE: a generated trace)
local kvbm = require "kvbm"
local replay = require "kvbm.replay"

local tonumber, tostring, ipairs, pairs, error, pcall, dofile, type, assert =
  tonumber, tostring, ipairs, pairs, error, pcall, dofile, type, assert
local format, concat, pack = string.format, table.concat, string.pack
local clock, stderr, stdout = os.clock, io.stderr, io.stdout
local random, randomseed, floor = math.random, math.randomseed, math.floor
local _ENV = nil

local M = {}

local USAGE = [[
usage: kvbm sim [TRACE] [options]
Replays TRACE (lines "<id> <salt> <n_tokens> <tok>...", see scripts/gen_trace.py)
through G1/G2/G3 managers with a tier policy and prints a report.
  --g1 N            G1 blocks (default 4096)
  --g2 N            G2 blocks (default 16384; 0: no G2)
  --g3 N            G3 blocks (default 0: no G3)
  --block-size N    tokens per block (default 16)
  --window W        requests holding blocks at once (default 8)
  --backend B       G1 eviction backend (lineage, lineage_fifo, lru, multi_lru, hashmap)
  --policy FILE     a tier-policy script (default: scripts/examples/offload_on_release.lua's rule)
  --requests N      without TRACE: generate N requests (default 2000)
  --seed N          seed of the generated trace (default 7)
  --nats URL        publish the KV events to NATS (subject kvbm.events)
  --instance-id N   the events' instance id (default 1)
  --quiet           no progress line]]

local function parse(args)
  local o = { g1 = 4096, g2 = 16384, g3 = 0, block_size = 16, window = 8, requests = 2000, seed = 7,
    instance_id = 1 }
  local numeric = { ["--g1"] = "g1", ["--g2"] = "g2", ["--g3"] = "g3", ["--block-size"] = "block_size",
    ["--window"] = "window", ["--requests"] = "requests", ["--seed"] = "seed", ["--instance-id"] = "instance_id" }
  local text = { ["--backend"] = "backend", ["--policy"] = "policy", ["--nats"] = "nats" }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "-h" or a == "--help" then
      o.help = true
    elseif a == "--quiet" then
      o.quiet = true
    elseif numeric[a] or text[a] then
      local v = args[i + 1]
      if v == nil then error("kvbm sim: " .. a .. " needs a value", 0) end
      if numeric[a] then
        local n = tonumber(v)
        if not n or n < 0 or n % 1 ~= 0 then error("kvbm sim: " .. a .. " needs a non-negative integer", 0) end
        o[numeric[a]] = floor(n)
      else
        o[text[a]] = v
      end
      i = i + 1
    elseif a:sub(1, 2) == "--" then
      error("kvbm sim: unknown option " .. a .. "\n" .. USAGE, 0)
    elseif not o.trace then
      o.trace = a
    else
      error("kvbm sim: more than one trace given", 0)
    end
    i = i + 1
  end
  if o.g1 == 0 or o.block_size == 0 or o.window == 0 then
    error("kvbm sim: --g1, --block-size and --window must be positive", 0)
  end
  return o
end

-- A prefix-sharing trace made in process: 64 shared prefixes of 1024
-- tokens (Zipf-popular), each request a random cut of one plus a fresh
-- suffix of 64..1024 tokens.
local function generate(n, seed)
  randomseed(seed)
  local prefixes, weights, total = {}, {}, 0
  for p = 1, 64 do
    local t = {}
    for i = 1, 1024 do t[i] = random(1, 49999) end
    prefixes[p] = t
    weights[p] = 1 / p ^ 1.1
    total = total + weights[p]
  end
  local out = {}
  for r = 1, n do
    local x, p = random() * total, 1
    while p < 64 and x > weights[p] do x, p = x - weights[p], p + 1 end
    local toks, cut = {}, random(512, 1024)
    for i = 1, cut do toks[i] = pack("<I4", prefixes[p][i]) end
    for _ = 1, random(64, 1024) do toks[#toks + 1] = pack("<I4", random(1, 49999)) end
    out[r] = { id = r - 1, salt = 0, n = #toks, tokens = concat(toks) }
  end
  return out
end

-- The planner's built-in rule (scripts/examples/offload_on_release.lua's,
-- run in C: no Lua call per block).
local function default_policy() return "offload_on_release" end

local function events_setup(o, t_opts)
  local ev = kvbm.events()
  local loop = kvbm.loop()
  local sink
  if o.nats then
    local s, err = kvbm.sink.nats{ url = o.nats }
    if not s then error("kvbm sim: cannot connect to " .. o.nats .. ": " .. tostring(err), 0) end
    sink = s
  else
    -- counted by the publisher's stats; a C sink that drops the bytes, so
    -- that no Lua table of hashes is built per batch
    sink = assert(kvbm.sink.file("/dev/null"))
  end
  local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = o.instance_id, sink = sink }
  t_opts.events = ev
  return { ev = ev, loop = loop, pub = pub, sink = sink }
end

local function run(o)
  local requests
  if o.trace then
    local err
    requests, err = replay.load(o.trace)
    if not requests then error("kvbm sim: cannot read " .. o.trace .. ": " .. tostring(err), 0) end
  else
    requests = generate(o.requests, o.seed)
  end
  local policy = default_policy()
  if o.policy then
    local ok, p = pcall(dofile, o.policy)
    if not ok or type(p) ~= "table" then
      error("kvbm sim: policy script " .. o.policy .. " must return a table of hooks: " .. tostring(p), 0)
    end
    policy = p
  end
  -- the frequency tracker serves policy scripts (ctx:frequency) and the
  -- multi_lru backend; the built-in rule needs neither, so it does not pay it
  local frequency = (type(policy) == "string" and o.backend ~= "multi_lru") and false or nil
  local t_opts = { block_size = o.block_size, policy = policy, frequency = frequency,
    G1 = { blocks = o.g1, backend = o.backend }, G2 = o.g2 > 0 and { blocks = o.g2 } or nil,
    G3 = o.g3 > 0 and { blocks = o.g3 } or nil }
  local events = events_setup(o, t_opts)
  local t = assert(kvbm.tiers(t_opts))

  local window, head, count = {}, 1, 0
  local t0, last = clock(), clock()
  local bs = o.block_size
  for i, req in ipairs(requests) do
    if count == o.window then
      window[head]:release()
      window[head] = nil
      head, count = head % o.window + 1, count - 1
    end
    local seq = kvbm.sequence(req.tokens, bs, req.salt) -- the partial tail is never hashed
    local r = t:admit(seq)
    if r then
      for _, plan in ipairs(r.onboard) do t:complete(plan) end
      r:commit()
      window[(head + count - 1) % o.window + 1] = r
      count = count + 1
    end
    t:complete_all()
    events.loop:run_nowait()
    if not o.quiet and clock() - last >= 1 then
      last = clock()
      stderr:write(format("\r[kvbm sim] %d/%d requests, %.0f blocks/s ", i, #requests,
        t.stats.blocks / (last - t0)))
    end
  end
  for k = 1, o.window do if window[k] then window[k]:release() end end
  t:complete_all()
  local seconds = clock() - t0
  if not o.quiet and seconds >= 1 then stderr:write("\n") end
  events.loop:run_nowait()
  local closed, cerr = events.pub:close()
  local ps = events.pub:stats()
  local rep = t:report()
  rep.seconds = seconds
  rep.policy = type(policy) == "string" and policy:gsub("_", "-") or policy.name or o.policy or "custom"
  rep.events = { published = ps.events, batches = ps.batches, errors = ps.errors, lost = ps.lost,
    sink = o.nats or "counted in process", close_error = not closed and tostring(cerr) or nil,
    nats = o.nats and events.sink:stats() or nil }
  t:close()
  return rep
end

local function print_report(o, rep)
  local w = stdout
  w:write(format("kvbm sim: %d requests, %d full blocks (block size %d), window %d, policy %s\n",
    rep.requests, rep.blocks, o.block_size, o.window, rep.policy))
  w:write(format("%-4s %9s %9s %8s %10s %13s\n", "tier", "blocks", "hits", "hit%", "evictions", "registrations"))
  for _, name in ipairs { "G1", "G2", "G3" } do
    local x = rep.tiers[name]
    if x then
      w:write(format("%-4s %9d %9d %7.2f%% %10d %13d\n", name, x.total, x.hits, 100 * x.hit_rate, x.evictions,
        x.registrations))
    end
  end
  w:write(format("onboards %d   offloads %d (skipped, destination full: %d)   rejected requests %d\n",
    rep.onboards, rep.offloads, rep.offloads_skipped, rep.rejected))
  w:write(format("events: %d published in %d batches to %s (%d sink errors, %d lost)\n", rep.events.published,
    rep.events.batches, rep.events.sink, rep.events.errors, rep.events.lost))
  local n = rep.events.nats
  if n then -- core NATS delivers at most once: say what may not have arrived
    w:write(format("nats: %d disconnects, %d reconnects; %d messages, %d sent while disconnected (missed by "
      .. "subscribers that were down too), %d unsent at exit, %d dropped (at most once delivery)\n",
      n.disconnects, n.reconnects, n.published, n.published_while_down, n.unsent, n.dropped))
  end
  if rep.events.close_error then w:write("events: closing the publisher failed: " .. rep.events.close_error .. "\n") end
  w:write(format("time: %.2f s, %.0f blocks/s\n", rep.seconds, rep.seconds > 0 and rep.blocks / rep.seconds or 0))
end

--- Runs the simulator with the given options table (as parsed from args);
--- returns the report table.
M.run = run

--- Entry point of `kvbm sim ARGS`.
function M.main(args)
  local o = parse(args)
  if o.help then
    stdout:write(USAGE, "\n")
    return true
  end
  local rep = run(o)
  print_report(o, rep)
  return rep.events.close_error == nil
end

M.parse = parse
return M
