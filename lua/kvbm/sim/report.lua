-- kvbm.sim.report: the reports of `kvbm sim`: the text report (each rate
-- says what it divides by), the JSON object (schema in doc/sim.md) and the
-- side-by-side table of --compare.
local require, ipairs, pairs, type, tostring, format, concat, sort, floor, max, rep =
  require, ipairs, pairs, type, tostring, string.format, table.concat, table.sort, math.floor, math.max, string.rep
local _ENV = nil

local M = {}

M.TIERS = { "G1", "G2", "G3" }

-- The latency rows of a timed report: label, key (each a summary of ms).
local LATENCIES = {
  { "queue wait", "queue_ms" }, -- arrival to first scheduled step
  { "TTFT", "ttft_ms" },
  { "inter-token", "itl_ms" },
  { "end-to-end", "e2e_ms" },
}

--- True when the modelled engine fell behind the trace's arrivals: the
--- backlog left after the last arrival (the run's end minus the arrival
--- span) is over a tenth of that span and over three mean service times
--- (end-to-end minus queue wait), so waiting, not serving, made the latency.
function M.saturated(r)
  local q, e = r.queue_ms, r.e2e_ms
  if not (q and e and r.arrivals_s and r.sim_s) or e.n == 0 then return false end
  local backlog_s, service_s = r.sim_s - r.arrivals_s, (e.mean - q.mean) / 1000
  return backlog_s > r.arrivals_s / 10 and backlog_s > 3 * service_s
end

--- { mean, p50, p90, p99, n } of a list of numbers (nearest rank).
function M.summary(xs)
  local n = #xs
  if n == 0 then return { mean = 0, p50 = 0, p90 = 0, p99 = 0, n = 0 } end
  local s, sum = {}, 0
  for i = 1, n do s[i] = xs[i]; sum = sum + xs[i] end
  sort(s)
  local function p(q) return s[max(1, floor(q * n + 0.999999))] end
  return { mean = sum / n, p50 = p(0.50), p90 = p(0.90), p99 = p(0.99), n = n }
end

local function pct(x) return format("%.2f %%", 100 * x) end

local function thousands(n)
  local s = format("%d", floor(n + 0.5))
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""):gsub("^%-,", "-"))
end
M.thousands = thousands

--- The text report of one run.
function M.text(rep_)
  local r, out = rep_, {}
  local function w(...) out[#out + 1] = format(...) end
  w("kvbm sim: %d requests (%s mode%s), %s full blocks looked up (block size %d)%s, policy %s%s\n", r.requests, r.mode,
    r.mode == "timed" and (", visibility " .. r.cache_visibility) or (", window " .. r.window),
    thousands(r.blocks), r.block_size, r.trace and (", trace " .. r.trace) or "", r.policy,
    r.partial and format("  [PARTIAL: interrupted, %d requests done]", r.finished or r.replayed or 0) or "")
  w("hit rate %s of full blocks looked up (%s hits in any tier); blocks recomputed %s (looked up, found nowhere)\n",
    pct(r.hit_rate), thousands(r.hits), thousands(r.recomputed))
  w("%-4s %9s %9s %8s %10s %13s   (hit%% = hits in the tier / full blocks looked up)\n", "tier", "blocks", "hits",
    "hit%", "evictions", "registrations")
  for _, name in ipairs(M.TIERS) do
    local x = r.tiers[name]
    if x then
      w("%-4s %9d %9d %7.2f%% %10d %13d\n", name, x.blocks, x.hits, 100 * x.hit_rate, x.evictions, x.registrations)
    end
  end
  w("onboards %d   offloads %d (skipped, destination full: %d)   rejected requests %d\n", r.onboards, r.offloads,
    r.offloads_skipped, r.rejected)
  if r.mode == "timed" then
    w("first-admission reuse %s of prompt tokens (%s of %s cached in any tier when each request was first scheduled)\n",
      pct(r.first_admission_reuse), thousands(r.first_cached_tokens), thousands(r.prompt_tokens))
    w("%-22s %10s %10s %10s %10s\n", "latency (ms)", "mean", "p50", "p90", "p99")
    for _, k in ipairs(LATENCIES) do
      local s = r[k[2]]
      w("%-22s %10.1f %10.1f %10.1f %10.1f\n", k[1], s.mean, s.p50, s.p90, s.p99)
    end
    w("output %s tokens in %.1f s simulated: %.1f tokens/s; %d preemptions; %d steps\n", thousands(r.output_tokens),
      r.sim_s, r.output_tok_s, r.preemptions, r.steps)
    if M.saturated(r) then
      w("overloaded: the arrivals span %.1f s but serving them took %.1f s; requests waited %.1f s on average "
        .. "for their first step: the trace offers more than this one engine serves (it kept up with about "
        .. "--arrival-speedup %.2g)\n", r.arrivals_s, r.sim_s, r.queue_ms.mean / 1000,
        (r.arrival_speedup or 1) * r.arrivals_s / r.sim_s)
    end
  end
  if r.events then
    w("events: %d published in %d batches to %s (%d sink errors, %d lost)\n", r.events.published, r.events.batches,
      r.events.sink, r.events.errors, r.events.lost)
    local n = r.events.nats
    if n then -- core NATS delivers at most once: say what may not have arrived
      w("nats: %d disconnects, %d reconnects; %d messages, %d sent while disconnected (missed by "
        .. "subscribers that were down too), %d unsent at exit, %d dropped (at most once delivery)\n",
        n.disconnects, n.reconnects, n.published, n.published_while_down, n.unsent, n.dropped)
    end
    if r.events.close_error then w("events: closing the publisher failed: %s\n", r.events.close_error) end
  end
  w("time: %.2f s wall (trace loading %.2f s included), request loop %.2f s: %.0f ns per block, %s blocks/s"
    .. " (CPU %.2f s: %s blocks/s)\n", r.wall_s, r.load_s, r.loop_s, r.ns_per_block,
    thousands(r.loop_s > 0 and r.blocks / r.loop_s or 0), r.loop_cpu_s,
    thousands(r.loop_cpu_s > 0 and r.blocks / r.loop_cpu_s or 0))
  return concat(out)
end

-- the rows of the --compare table: label, getter, format
local ROWS = {
  { "hit rate (of blocks looked up)", function(r) return r.hit_rate end, pct },
  { "blocks looked up", function(r) return r.blocks end, thousands },
  { "blocks recomputed", function(r) return r.recomputed end, thousands },
  { "G1 hit rate", function(r) return r.tiers.G1 and r.tiers.G1.hit_rate end, pct },
  { "G2 hit rate", function(r) return r.tiers.G2 and r.tiers.G2.hit_rate end, pct },
  { "G3 hit rate", function(r) return r.tiers.G3 and r.tiers.G3.hit_rate end, pct },
  { "G1 evictions", function(r) return r.tiers.G1 and r.tiers.G1.evictions end, thousands },
  { "onboards", function(r) return r.onboards end, thousands },
  { "offloads", function(r) return r.offloads end, thousands },
  { "rejected requests", function(r) return r.rejected end, thousands },
  { "first-admission reuse", function(r) return r.first_admission_reuse end, pct },
  { "TTFT p50 (ms)", function(r) return r.ttft_ms and r.ttft_ms.p50 end, function(x) return format("%.1f", x) end },
  { "TTFT p99 (ms)", function(r) return r.ttft_ms and r.ttft_ms.p99 end, function(x) return format("%.1f", x) end },
  { "ITL p50 (ms)", function(r) return r.itl_ms and r.itl_ms.p50 end, function(x) return format("%.1f", x) end },
  { "output tokens/s", function(r) return r.output_tok_s end, function(x) return format("%.1f", x) end },
  { "preemptions", function(r) return r.preemptions end, thousands },
  { "ns per block", function(r) return r.ns_per_block end, function(x) return format("%.0f", x) end },
}

--- The configurations labelled lru and optimal among reps (the baseline
--- and the upper bound of `--compare all`), each nil when absent.
function M.bounds(reps)
  local lru, opt
  for _, r in ipairs(reps) do
    if r.label == "lru" then lru = r elseif r.label == "optimal" then opt = r end
  end
  return lru, opt
end

--- gap(r): the share of the LRU-to-optimum hit-rate gap that r closes (0:
--- LRU's, 1: the optimum's); nil when reps lack lru or optimal or the gap is 0.
function M.gap_closed(reps)
  local lru, opt = M.bounds(reps)
  if not lru or not opt or opt.hit_rate <= lru.hit_rate then return function() return nil end end
  return function(r) return (r.hit_rate - lru.hit_rate) / (opt.hit_rate - lru.hit_rate) end
end

--- The --compare table: one column per configuration.
function M.compare(reps)
  local gap = M.gap_closed(reps)
  local rows = { ROWS[1], { "LRU -> optimal gap closed", gap, pct } }
  for i = 2, #ROWS do rows[#rows + 1] = ROWS[i] end
  local width = 14
  for _, r in ipairs(reps) do width = max(width, #r.label + 2) end
  local out = { format("kvbm sim --compare: %d configurations, %d requests, %s mode%s\n", #reps, reps[1].requests,
    reps[1].mode, reps[1].partial and "  [PARTIAL: interrupted]" or "") }
  local head = { format("%-32s", "") }
  for _, r in ipairs(reps) do head[#head + 1] = format("%" .. width .. "s", r.label) end
  out[#out + 1] = concat(head) .. "\n"
  for _, row in ipairs(rows) do
    local cells, any = { format("%-32s", row[1]) }, false
    for _, r in ipairs(reps) do
      local v = row[2](r)
      any = any or v ~= nil
      cells[#cells + 1] = format("%" .. width .. "s", v ~= nil and row[3](v) or "-")
    end
    if any then out[#out + 1] = concat(cells) .. "\n" end
  end
  out[#out + 1] = rep("-", 32) .. "\n"
  return concat(out)
end

-- ----------------------------------------------------------------- JSON

--- The JSON object of a report (schema in doc/sim.md; the charts' series
--- are left out).
function M.json_object(r)
  local o = { mode = r.mode, requests = r.requests, rejected = r.rejected, block_size = r.block_size, blocks = r.blocks,
    hits = r.hits, hit_rate = r.hit_rate, recomputed = r.recomputed, onboards = r.onboards, offloads = r.offloads,
    offloads_skipped = r.offloads_skipped, wall_s = r.wall_s, load_s = r.load_s, loop_s = r.loop_s, loop_cpu_s = r.loop_cpu_s,
    ns_per_block = r.ns_per_block, policy = r.policy, frequency = r.frequency, partial = r.partial or false, label = r.label, tiers = {},
    trace = r.trace, events = r.events }
  for _, name in ipairs(M.TIERS) do
    local x = r.tiers[name]
    if x then
      o.tiers[name] = { blocks = x.blocks, hits = x.hits, hit_rate = x.hit_rate, evictions = x.evictions,
        registrations = x.registrations, backend = x.backend, bytes = x.bytes }
    end
  end
  if r.mode == "timed" then
    for _, k in ipairs { "first_admission_reuse", "output_tok_s", "preemptions", "cache_visibility", "sim_s",
      "steps", "prompt_tokens", "first_cached_tokens", "output_tokens", "arrivals_s", "arrival_speedup" } do
      o[k] = r[k]
    end
    for _, k in ipairs(LATENCIES) do
      o[k[2]] = { mean = r[k[2]].mean, p50 = r[k[2]].p50, p90 = r[k[2]].p90, p99 = r[k[2]].p99 }
    end
    o.saturated = M.saturated(r)
  else
    o.window = r.window
  end
  return o
end

--- JSON text of v (lua-cjson, Debian's lua-cjson package).
function M.json(v)
  local cjson = require "cjson"
  cjson.encode_number_precision(14)
  return cjson.encode(v)
end

return M
