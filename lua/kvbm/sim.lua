-- kvbm.sim: the `kvbm sim` program, the main job. Runs a request trace
-- through G1/G2(/G3) block managers with a tier policy and reports hit
-- rates, evictions, copies and (timed mode) latencies:
--   --mode replay  today's replay (window W, file order, prompts only, copies
--                  instantaneous), counts comparable with kvbm-logical;
--   --mode timed   a discrete-event model of one engine (kvbm.sim.timed).
-- Options: kvbm.sim.options; reports: kvbm.sim.report and kvbm.sim.html;
-- doc/sim.md describes the model and the figures.
--
--   kvbm sim [TRACE|-] [options]      (no TRACE: the bundled Mooncake sample)
local kvbm = require "kvbm"
local options = require "kvbm.sim.options"
local report = require "kvbm.sim.report"
local hooks = require "kvbm.sim.hooks"
local timed = require "kvbm.sim.timed"
local timing = require "kvbm.sim.timing"
local optimal = require "kvbm.sim.optimal"

local tostring, ipairs, pairs, error, pcall, type, assert, require, next, setmetatable, select =
  tostring, ipairs, pairs, error, pcall, type, assert, require, next, setmetatable, select
local format, concat, pack, rep = string.format, table.concat, string.pack, string.rep
local clock, stderr, stdout, open, execute = os.clock, io.stderr, io.stdout, io.open, os.execute
local random, randomseed, floor, max, min = math.random, math.randomseed, math.floor, math.max, math.min
local searchpath, package_path = package.searchpath, package.path
local _ENV = nil

local M = {}

local function fail(msg) error({ sim_error = true, msg = msg }, 0) end

-- ------------------------------------------------------------ the trace

--- The bundled trace (1000 Mooncake requests, see its README.md).
local function bundled_trace()
  local here = searchpath("kvbm.sim.timed", package_path)
  return here and here:gsub("timed%.lua$", "data/mooncake_trace_1000.jsonl") or "mooncake_trace_1000.jsonl"
end

-- A prefix-sharing trace made in process (--requests N without TRACE): 64
-- shared prefixes of 1024 tokens (Zipf-popular), each request a random cut
-- of one plus a fresh suffix of 64..1024 tokens.
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
    out[r] = { id = r - 1, salt = 0, n = #toks, tokens = concat(toks), timestamp_ms = 0, output_length = 1 }
  end
  return out, "text"
end

-- Loads the trace through kvbm.trace (strict text and JSONL loaders in C);
-- returns the requests ({ id, salt, n, tokens, timestamp_ms, output_length })
-- and the format.
local function load_trace(o, progress)
  local t, err = kvbm.trace.load(o.trace, { format = o.format, trace_block_size = o.trace_block_size,
    progress = progress })
  if not t then
    local msg = type(err) == "table" and err.message or tostring(err)
    fail((type(err) == "table" and err.code == "io_error" and "cannot read " or "") .. msg)
  end
  local reqs = {}
  for i = 1, #t do
    reqs[i] = { id = t:id(i), salt = t:salt(i), n = t:n_tokens(i), tokens = t:tokens(i),
      timestamp_ms = t:timestamp(i), output_length = t:output_length(i) }
  end
  reqs.trace = t -- the replay hashes each request straight from it (t:sequence)
  return reqs, t:format()
end

-- ----------------------------------------------------------- set-up

local function default_policy()
  return {
    name = "offload-on-release",
    offload_below = true, -- kvbm.sim.timed applies this rule natively (the same result, faster)
    on_inactive = function(ctx, h, _, tier) -- to the next tier below that exists
      local below = tier == "G1" and "G2" or tier == "G2" and "G3" or nil
      if below == "G2" and not ctx:manager("G2") then below = "G3" end
      if below and ctx:manager(below) and not ctx:present(h, below) then return below end
    end,
  }
end

-- Mode-dependent defaults: timed mode models an engine (an LRU free list
-- in G1, a G1 that shows its limits on the bundled trace).
local MODE_DEFAULTS = {
  replay = { g1 = 4096, g2 = 16384, g1_backend = "lineage" },
  timed = { g1 = 32768, g2 = 131072, g1_backend = "lru" },
}

-- The mode of a run: --mode, or by the trace's format.
local function mode_of(o, fmt) return o.mode or (fmt == "jsonl" and "timed" or "replay") end

--- Completes o for a run: mode, defaults, hook tables (checked at load).
local function prepare(o, fmt)
  o.mode = mode_of(o, fmt)
  for k, v in pairs(MODE_DEFAULTS[o.mode]) do if o[k] == nil then o[k] = v end end
  o.policy_table = o.policy and hooks.load("tier", o.policy, "--policy") or default_policy()
  o.scheduler_table = o.scheduler and hooks.load("scheduler", o.scheduler, "--scheduler") or {}
  o.timing_table = o.timing and timing.load(o.timing) or timing.coefficients()
  o.eviction_errors = {}
  if o.g2_backend == "optimal" or o.g3_backend == "optimal" then
    fail("--g2-backend/--g3-backend optimal: the offline optimum is for G1 (--backend optimal)")
  end
  if o.mode ~= "replay" and o.g1_backend == "optimal" then
    fail("--backend optimal: the offline optimum needs --mode replay (it knows the trace's order)")
  end
  o.backends = {}
  local reads_frequency = o.policy ~= nil or o.scheduler ~= nil -- a hook may call ctx:frequency(h)
  for _, name in ipairs(report.TIERS) do
    local flag, b = "--" .. name:lower() .. "-backend", o[name:lower() .. "_backend"]
    if b and b:sub(-4) == ".lua" then
      b = hooks.guard_eviction(hooks.load("eviction", b, flag), o.eviction_errors)
    end
    if b == "multi_lru" and o.frequency == "none" then
      fail(flag .. " multi_lru orders by frequency: it needs a tracker (not --frequency none)")
    end
    reads_frequency = reads_frequency or b == "multi_lru" or type(b) == "table"
    o.backends[name] = b
  end
  -- no tracker unless something may read it (the C replay keeps none either)
  o.tracker = o.frequency or (reads_frequency and "medium" or "none")
  return o
end

local function events_setup(o)
  local ev = kvbm.events()
  local loop = kvbm.loop()
  local sink
  if o.nats then
    if not kvbm.sink.nats then fail("--nats: this kvbm was built without NATS support") end
    local s, err = kvbm.sink.nats{ url = o.nats }
    if not s then fail("cannot connect to " .. o.nats .. ": " .. tostring(err)) end
    sink = s
  else
    -- counted by the publisher's stats; a C sink that drops the bytes, so
    -- that no Lua table of hashes is built per batch
    sink = assert(kvbm.sink.file("/dev/null"))
  end
  -- closing a pool removes each of its blocks at once: room for them all
  local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = o.instance_id, sink = sink,
    capacity = min(16777216, 65536 + o.g1 + o.g2 + o.g3) }
  return { ev = ev, loop = loop, pub = pub, sink = sink }
end

local function events_report(o, events)
  events.loop:run_nowait()
  local closed, cerr = events.pub:close()
  local ps = events.pub:stats()
  return { published = ps.events, batches = ps.batches, errors = ps.errors, lost = ps.lost,
    sink = o.nats or "a counting sink in process", close_error = not closed and tostring(cerr) or nil,
    nats = o.nats and events.sink:stats() or nil }
end

-- ---------------------------------------------------------- progress

local Progress = {}
Progress.__index = Progress

local function is_terminal() return execute("test -t 2") == true end

local function progress(o, wall, what)
  local p = setmetatable({ on = not o.quiet and not o.json_only and is_terminal(), wall = wall, last = clock(),
    t0 = wall(), what = what or "requests", shown = false }, Progress)
  return p
end

function Progress:update(done, total, force)
  if not self.on then return end
  local c = clock()
  if not force and c - self.last < 0.25 then return end
  self.last = c
  local dt = self.wall() - self.t0
  local rate = dt > 0 and done / dt or 0
  local eta = rate > 0 and (total - done) / rate or 0
  stderr:write(format("\r[kvbm sim] %d/%d %s, %.0f/s, ETA %.1f s   ", done, total, self.what, rate, eta))
  self.shown = true
end

function Progress:finish(done, total)
  if self.shown then
    self:update(done, total, true)
    stderr:write("\n")
  end
end

-- Runs f(); Ctrl-C (the "interrupted!" error of the kvbm program) ends it
-- early: returns true when interrupted.
local function interruptible(f)
  local ok, err = pcall(f)
  if ok then return false end
  if type(err) == "string" and err:find("interrupted!", 1, true) then return true end
  error(err, 0)
end

-- ------------------------------------------------------------ replay

-- The tier policy with each hook guarded: a raising hook aborts the run
-- naming the hook (its message carries the script's file and line).
-- The tier a hook returned must be one of this run's (tiers: name -> true).
local function check_tier(k, dst, tiers)
  if dst ~= nil and not tiers[dst] then
    fail("tier hook " .. k .. " returned " .. tostring(dst) .. ", which is not a tier of this run")
  end
end

-- The tier policy with each hook guarded: a raising hook aborts the run
-- naming the hook (its message carries the script's file and line), and so
-- does an answer that is not a tier of this run (or, from a batch hook, not
-- a list of them).
local function guarded(policy, tiers)
  local out = {}
  for k, f in pairs(policy) do
    out[k] = type(f) ~= "function" and f or function(...)
      local ok, a = pcall(f, ...)
      if not ok then fail("tier hook " .. k .. " raised: " .. tostring(a)) end
      if k == "on_register" or k == "on_inactive" then
        check_tier(k, a, tiers)
      elseif k:sub(-6) == "_batch" and a ~= nil then
        if type(a) ~= "table" then fail("tier hook " .. k .. " returned a " .. type(a) .. ", not a list of tiers") end
        local hashes = select(2, ...)
        for i = 1, #hashes do check_tier(k, a[i], tiers) end
      end
      return a
    end
  end
  return out
end

local function run_replay(o, requests, wall, events)
  -- the offline optimum is told each block's next use (kvbm.sim.optimal)
  local hint = o.backends.G1 == "optimal" and optimal.new(requests, o.block_size) or nil
  -- the default rule runs as the planner's built-in rule (in C, no Lua call
  -- per block); o.tracker is the frequency tracker prepare() chose
  local builtin = not o.policy
  local t = assert(kvbm.tiers{ block_size = o.block_size, events = events.ev,
    policy = builtin and "offload_on_release" or guarded(o.policy_table,
      { G1 = true, G2 = o.g2 > 0 or nil, G3 = o.g3 > 0 or nil }),
    frequency = o.tracker,
    G1 = { blocks = o.g1, backend = o.backends.G1 }, G2 = o.g2 > 0 and { blocks = o.g2, backend = o.backends.G2 } or nil,
    G3 = o.g3 > 0 and { blocks = o.g3, backend = o.backends.G3 } or nil })
  local series = { x = {}, lookups = {}, hits = { G1 = {}, G2 = {}, G3 = {} }, used = { G1 = {}, G2 = {}, G3 = {} } }
  local every = max(1, #requests // 1000)
  local window, head, count = {}, 1, 0
  local bs, prog, trace = o.block_size, progress(o, wall), requests.trace
  local t0, c0 = wall(), clock()
  local done = 0
  local partial = interruptible(function()
    for i, req in ipairs(requests) do
      if count == o.window then
        window[head]:release()
        window[head] = nil
        head, count = head % o.window + 1, count - 1
      end
      -- (the partial tail is never hashed)
      local seq = trace and trace:sequence(i, bs) or kvbm.sequence(req.tokens, bs, req.salt)
      -- r: a kvbm.request RequestSequence whose blocks stay with the planner
      -- (admitted, committed, released: no guard is ever made)
      local r = t:admit(seq)
      if r then
        for _, plan in ipairs(r.onboard) do t:complete(plan) end
        r:commit()
        if hint then hint(i, t.managers.G1) end
        window[(head + count - 1) % o.window + 1] = r
        count = count + 1
      end
      t:complete_all()
      events.loop:run_nowait()
      if o.eviction_errors.error then fail(o.eviction_errors.error) end
      done = i
      if i % every == 0 or i == #requests then
        local k = #series.x + 1
        series.x[k], series.lookups[k] = i, t.stats.blocks
        for _, name in ipairs(t.names) do
          local m = t.managers[name]
          series.hits[name][k] = t.stats.hits[name]
          series.used[name][k] = (m:total() - m:reset_pool()) / m:total()
        end
      end
      prog:update(i, #requests)
    end
  end)
  prog:finish(done, #requests)
  for k = 1, o.window do if window[k] then window[k]:release() end end
  t:complete_all()
  local loop_s, loop_cpu_s = wall() - t0, clock() - c0
  local rep_ = t:report()
  local out = { mode = "replay", window = o.window, requests = #requests, rejected = rep_.rejected,
    block_size = o.block_size, blocks = rep_.blocks, onboards = rep_.onboards, offloads = rep_.offloads,
    offloads_skipped = rep_.offloads_skipped, tiers = {}, loop_s = loop_s, loop_cpu_s = loop_cpu_s, series = series, partial = partial or nil,
    replayed = done }
  local hits = 0
  for _, name in ipairs(t.names) do
    local x = rep_.tiers[name]
    hits = hits + x.hits
    out.tiers[name] = { blocks = x.total, hits = x.hits, hit_rate = x.hit_rate, evictions = x.evictions,
      registrations = x.registrations, bytes = t.managers[name]:bytes(), backend = type(o.backends[name]) == "table" and o[name:lower() .. "_backend"]
        or o.backends[name] or (name == "G1" and "lineage" or "lru") }
  end
  out.hits = hits
  t:close()
  return out
end

-- ------------------------------------------------------------- timed

local function run_timed(o, requests, wall, events)
  local e = timed.new({ block_size = o.block_size, g1 = o.g1, g2 = o.g2, g3 = o.g3, backends = o.backends,
    policy = o.policy_table, scheduler = o.scheduler_table, max_batched_tokens = o.max_batched_tokens,
    max_seqs = o.max_seqs, cache_visibility = o.cache_visibility, arrival_speedup = o.arrival_speedup,
    timing = o.timing_table, kv_bytes_per_token = o.kv_bytes_per_token, bw_g2 = o.bw_g2, bw_g3 = o.bw_g3,
    frequency = o.tracker, events = events.ev }, requests)
  local prog = progress(o, wall)
  local t0, c0 = wall(), clock()
  local partial = interruptible(function()
    local n = #requests
    while e:step() do
      if o.eviction_errors.error then fail(o.eviction_errors.error) end
      -- a step takes microseconds of wall time, far less than the publisher's
      -- batching window: publish each step's events now, before they pile up
      events.pub:flush()
      events.loop:run_nowait()
      prog:update(e.done, n)
    end
  end)
  prog:finish(e.done, #requests)
  local loop_s, loop_cpu_s = wall() - t0, clock() - c0
  local st = e.stats
  local out = { mode = "timed", cache_visibility = o.cache_visibility, requests = #requests, rejected = st.rejected,
    block_size = o.block_size, blocks = st.blocks, onboards = st.onboards, offloads = st.offloads,
    offloads_skipped = st.offloads_skipped, tiers = {}, loop_s = loop_s, loop_cpu_s = loop_cpu_s, partial = partial or nil,
    first_admission_reuse = st.prompt_tokens > 0 and st.first_cached_tokens / st.prompt_tokens or 0,
    first_cached_tokens = st.first_cached_tokens, prompt_tokens = st.prompt_tokens,
    ttft_ms = report.summary(st.ttft), queue_ms = report.summary(st.queue), itl_ms = report.summary(st.itl), e2e_ms = report.summary(st.e2e),
    ttft_list = st.ttft, output_tokens = st.output_tokens, sim_s = e.now / 1000,
    output_tok_s = e.now > 0 and st.output_tokens / (e.now / 1000) or 0, preemptions = st.preemptions,
    steps = st.steps, finished = e.done, arrivals_s = e:arrival_span_ms() / 1000,
    arrival_speedup = o.arrival_speedup }
  local s = e.samples
  local xs = {}
  for i, t in ipairs(s.t) do xs[i] = t / 1000 end
  out.series = { x = xs, lookups = s.lookups, hits = s.hits, used = s.used }
  local hits = 0
  for _, name in ipairs(e.names) do
    local mm = e.managers[name]:metrics()
    hits = hits + st.hits[name]
    out.tiers[name] = { blocks = e.managers[name]:total(), hits = st.hits[name],
      hit_rate = st.blocks > 0 and st.hits[name] / st.blocks or 0, evictions = mm.kvbm_evictions_total,
      registrations = mm.kvbm_registrations_total, bytes = e.managers[name]:bytes(),
      backend = type(o.backends[name]) == "table" and o[name:lower() .. "_backend"] or o.backends[name] or "lru" }
  end
  out.hits = hits
  e:close(function() events.pub:flush() end)
  return out
end

-- ------------------------------------------------------------- runs

--- Runs one configuration o over requests; returns the report table.
function M.run(o, requests, fmt, wall, load_s)
  prepare(o, fmt)
  local events = events_setup(o)
  local rep_ = (o.mode == "timed" and run_timed or run_replay)(o, requests, wall, events)
  rep_.events = events_report(o, events)
  rep_.policy = o.policy_table.name or o.policy or "custom"
  rep_.hit_rate = rep_.blocks > 0 and rep_.hits / rep_.blocks or 0
  rep_.recomputed = rep_.blocks - rep_.hits
  rep_.ns_per_block = rep_.blocks > 0 and rep_.loop_s * 1e9 / rep_.blocks or 0
  rep_.load_s = load_s
  rep_.wall_s = load_s + rep_.loop_s
  rep_.trace = o.trace_label
  rep_.frequency = o.tracker
  return rep_
end

local function wall_clock()
  local loop = kvbm.loop()
  return function()
    loop:run_nowait() -- refreshes the loop's time
    return loop:now()
  end
end

local function main(args)
  local o = options.parse(args)
  if o.help then
    stdout:write(options.usage(), "\n")
    return true
  end
  if o.list_backends then
    for _, name in ipairs(options.BACKENDS) do stdout:write(name, "\n") end
    return true
  end
  local wall = wall_clock()
  local w0 = wall()
  local requests, fmt
  if not o.trace and o.requests then
    requests, fmt = generate(o.requests, o.seed)
    o.trace_label = "generated"
  else
    o.trace = o.trace or bundled_trace()
    o.trace_label = o.given.trace and o.trace or "bundled Mooncake sample (1000 requests)"
    local prog = progress(o, wall, "bytes loaded")
    requests, fmt = load_trace(o, function(done, total) prog:update(done, total > 0 and total or done) return false end)
    prog:finish(0, 0)
  end
  local load_s = wall() - w0
  local configs = {}
  if o.compare then
    local list, note = options.compare_list(o.compare, mode_of(o, fmt))
    if note then stderr:write("kvbm sim: ", note, "\n") end
    for i, spec in ipairs(list) do
      local c, label = options.configuration(o, spec)
      c.compare, c.label = nil, label
      configs[i] = c
    end
  else
    configs[1] = o
  end
  local reps = {}
  for i, c in ipairs(configs) do
    local r = M.run(c, requests, fmt, wall, i == 1 and load_s or 0)
    r.label = c.label or "run"
    r.text = report.text(r)
    reps[i] = r
    if r.partial then break end
  end
  local compare_text = o.compare and report.compare(reps)
  if o.json then
    local objs = {}
    for i, r in ipairs(reps) do objs[i] = report.json_object(r) end
    stdout:write(report.json(o.compare and objs or objs[1]), "\n")
  elseif o.compare then
    stdout:write(compare_text)
  else
    stdout:write(reps[1].text)
  end
  if o.html then
    local f, err = open(o.html, "w")
    if not f then fail("--html: cannot write " .. o.html .. ": " .. tostring(err)) end
    f:write(require("kvbm.sim.html").page(reps, compare_text or nil))
    f:close()
  end
  local partial, close_error = false, false
  for _, r in ipairs(reps) do
    partial = partial or r.partial
    close_error = close_error or r.events.close_error ~= nil
  end
  if partial then return false, 130 end
  return not close_error
end

--- Entry point of `kvbm sim ARGS`: returns ok [, exit status]; bad options
--- and inputs print "kvbm sim: <what>" and give status 2.
function M.main(args)
  local ok, a, b = pcall(main, args)
  if ok then return a, b end
  if type(a) == "table" and a.sim_error then
    stderr:write("kvbm sim: ", a.msg, "\n")
    return false, 2
  end
  error(a, 0)
end

M.parse = options.parse
return M
