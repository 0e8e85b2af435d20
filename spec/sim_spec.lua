-- spec/sim_spec.lua - `kvbm sim`: option, trace and hook errors (exit status
-- 2, one clear message), the timed engine's semantics on small traces worked
-- out by hand, the JSON schema, --compare, the HTML page in headless
-- Chromium, and the JSONL-vs-text replay check against an independent model.
local helpers = require "helpers"
local cjson = require "cjson"

local kvbm_bin = helpers.builddir() .. "/kvbm"
local q = helpers.shell_quote

local function sim(args) return helpers.run(q(kvbm_bin) .. " sim " .. args .. " 2>&1") end
-- (--compare takes every argument after it: give it in `tail`)
local function sim_json(args, tail)
  local out, status = helpers.run(q(kvbm_bin) .. " sim " .. args .. " --quiet --json " .. (tail or "") .. " 2>/dev/null")
  assert.are.equal(0, status, out)
  return cjson.decode(out)
end

local function write(content)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(content)
  f:close()
  return path
end

local function script(content)
  local path = os.tmpname() .. ".lua"
  local f = assert(io.open(path, "w"))
  f:write(content)
  f:close()
  return path
end

-- A text-format line for request id with the given tokens.
local function line(id, tokens) return id .. " 0 " .. #tokens .. " " .. table.concat(tokens, " ") .. "\n" end

-- Asserts a user error: status 2, one "kvbm sim: " prefix, the pattern, and
-- no internal path or Lua argument jargon.
local function user_error(args, pattern)
  local out, status = sim(args)
  assert.are.equal(2, status, args .. " -> " .. out)
  assert.matches("^kvbm sim: ", out, 1, args)
  assert.is_nil(out:find("kvbm: kvbm sim", 1, true), out)
  assert.is_nil(out:find("bad argument", 1, true), out)
  assert.is_nil(out:find("sim%.lua:%d") or out:find("tiers%.lua:%d") or out:find("options%.lua:%d"), out)
  assert.is_nil(out:find("traceback", 1, true), out)
  assert.matches(pattern, out, 1, true)
  return out
end

-- The DOM of the --html page of `kvbm sim ARGS --html PAGE TAIL` as headless
-- Chromium renders it (the page is checked to be self-contained first); nil
-- (the spec marked pending) when no chromium is installed.
local function rendered(args, tail)
  local chromium
  for _, c in ipairs { "chromium", "chromium-browser" } do
    if select(2, helpers.run("command -v " .. c .. " >/dev/null 2>&1")) == 0 then chromium = c break end
  end
  if not chromium then
    pending("chromium is not installed (scripts/bootstrap installs it): the HTML page was not rendered")
    return nil
  end
  local page = os.tmpname() .. ".html"
  local out, status = sim(args .. " --html " .. q(page) .. " " .. (tail or ""))
  assert.are.equal(0, status, out)
  local html = assert(io.open(page)):read("a")
  assert.is_nil(html:find("https?://[^\"]*%.js") or html:find("<script", 1, true) or html:find("<link", 1, true))
  local profile = os.tmpname()
  os.remove(profile)
  local dom, st = helpers.run("timeout 120 " .. chromium .. " --headless --no-sandbox --disable-gpu --disable-background-networking"
    .. " --disable-component-update --disable-sync --no-first-run --user-data-dir=" .. q(profile)
    .. " --dump-dom " .. q("file://" .. page) .. " 2>/dev/null")
  helpers.run("rm -rf " .. q(profile))
  os.remove(page)
  assert.are.equal(0, st, "chromium failed")
  return dom
end

describe("kvbm sim option errors", function()
  local trace
  setup(function() trace = write(line(0, helpers.range(40, 1))) end)
  teardown(function() os.remove(trace) end)

  it("refuses counts beyond 2^32-1, non-integers and missing values, exit status 2", function()
    user_error("--g2 4294967296", "--g2 4294967296 is more than 4294967295")
    user_error("--g1 1e30", "--g1 needs a non-negative integer, not '1e30'")
    user_error("--g1 -1", "--g1 needs a non-negative integer, not '-1'")
    user_error("--block-size 1.5", "--block-size needs a non-negative integer")
    user_error("--g1", "--g1 needs a value")
    user_error("--g1 0", "--g1 must be positive")
    user_error("--max-seqs 0", "--max-seqs must be positive")
    user_error("--arrival-speedup 0", "--arrival-speedup needs a positive number")
    user_error("--arrival-speedup nan", "--arrival-speedup needs a positive number")
  end)

  it("names the valid values of an unknown choice or backend", function()
    local out = user_error("--backend foo", "--backend: unknown backend 'foo'")
    for _, b in ipairs { "lineage", "lineage_fifo", "lru", "multi_lru", "hashmap" } do assert.matches(b, out, 1, true) end
    user_error("--g2-backend foo", "--g2-backend: unknown backend 'foo' (valid: lineage")
    user_error("--mode fast", "--mode: unknown value 'fast' (valid: replay, timed)")
    user_error("--cache-visibility soon", "(valid: computed, finished, scheduled)")
    user_error("--format xml", "(valid: jsonl, text)")
  end)

  it("refuses unknown options, two traces and bad --compare configurations", function()
    user_error("--frobnicate 3", "unknown option --frobnicate")
    user_error(q(trace) .. " " .. q(trace), "more than one trace given")
    user_error(q(trace) .. " --compare", "--compare needs at least one configuration")
    user_error(q(trace) .. " --compare lru nonsense", "--compare: 'nonsense' is not a backend")
    user_error(q(trace) .. " --compare '--g1 x'", "--g1 needs a non-negative integer, not 'x'")
    user_error(q(trace) .. " --compare all lru", "--compare all compares every backend and takes no other configuration (given: all lru)")
    user_error(q(trace) .. " --compare lru all", "--compare all compares every backend and takes no other configuration (given: lru all)")
    user_error(q(trace) .. " --compare alll", "--compare: 'alll' is not a backend")
  end)

  it("checks --timing files", function()
    user_error(q(trace) .. " --mode timed --timing /nonexistent/timing.lua", "--timing: cannot open /nonexistent/timing.lua")
    local bad = script("return { base_ms = 1, bsae_ms = 2 }")
    user_error(q(trace) .. " --mode timed --timing " .. q(bad), "unknown coefficient 'bsae_ms'")
    os.remove(bad)
    bad = script("return { token_ms = -1 }")
    user_error(q(trace) .. " --mode timed --timing " .. q(bad), "token_ms must be a finite non-negative number")
    os.remove(bad)
  end)

  it("--help lists every option", function()
    local out, status = sim("--help")
    assert.are.equal(0, status)
    for _, o in ipairs { "--mode", "--cache-visibility", "--g1-backend", "--scheduler", "--compare", "--html",
      "--arrival-speedup", "--max-batched-tokens", "--timing", "--bw-g2", "--kv-bytes-per-token", "--json" } do
      assert.matches(o, out, 1, true)
    end
  end)
end)

describe("kvbm sim trace errors", function()
  local cases = {
    { "1 0 3 1 2\n", ":1: " },                        -- too few tokens
    { "# c\n\n1 0 2 1 2 3\n", ":3: " },               -- too many, after a comment and a blank line
    { "1 0 2 1 x\n", ":1: " },                        -- not an integer
    { "1 0 2 1 -5\n", ":1: " },                       -- negative
    { "1 0 1 4294967296\n", ":1: " },                 -- beyond u32
    { "1 18446744073709551616 1 7\n", ":1: " },       -- salt beyond u64
    { "1 0 1 1.5\n", ":1: " },
    { '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1,\n', ":2: " },
    { '{"timestamp": 0, "output_length": 1, "hash_ids": [1]}\n', ":1: " },
  }
  it("names the file and the physical line, exit status 2", function()
    for _, c in ipairs(cases) do
      local path = write(c[1])
      local out = user_error(q(path) .. " --quiet", path .. c[2])
      assert.is_nil(out:find("\n.", 1), "one line: " .. out)
      os.remove(path)
    end
    user_error("/nonexistent/trace.txt", "/nonexistent/trace.txt")
  end)

  it("reads standard input with -", function()
    local path = write(line(0, helpers.range(32, 1)) .. line(1, helpers.range(32, 1)))
    local out, status = helpers.run("cat " .. q(path) .. " | " .. q(kvbm_bin) .. " sim - --mode replay --quiet --json --g2 0")
    assert.are.equal(0, status, out)
    assert.are.equal(2, cjson.decode(out).requests)
    os.remove(path)
  end)
end)

describe("kvbm sim hook tables", function()
  local trace
  setup(function() trace = write(line(0, helpers.range(64, 1)) .. line(1, helpers.range(64, 1)) .. line(2, helpers.range(64, 100))) end)
  teardown(function() os.remove(trace) end)

  it("an unknown hook name is an error naming it, for every kind", function()
    local p = script("return { on_inactve = function() end }")
    user_error(q(trace) .. " --policy " .. q(p), "unknown tier policy hook 'on_inactve'")
    os.remove(p)
    p = script("return { pick_wating = function() return 1 end }")
    user_error(q(trace) .. " --mode timed --scheduler " .. q(p), "unknown scheduler hook 'pick_wating'")
    os.remove(p)
    p = script("return { victims = function() return {} end, on_insrt = function() end }")
    user_error(q(trace) .. " --g1-backend " .. q(p), "unknown eviction policy hook 'on_insrt'")
    os.remove(p)
    p = script("return { on_insert = function() end }")
    user_error(q(trace) .. " --g1-backend " .. q(p), "needs a victims hook")
    os.remove(p)
    p = script("return 42")
    user_error(q(trace) .. " --policy " .. q(p), "must return a table of hooks")
    os.remove(p)
    p = script("return {")
    user_error(q(trace) .. " --policy " .. q(p), "--policy: cannot load tier policy")
    os.remove(p)
  end)

  -- 24 requests of 4 blocks (block size 4), request i's prompt first_token(i)..+15
  local function cycling_trace(first_token)
    local out = {}
    for i = 0, 23 do out[#out + 1] = line(i, helpers.range(16, first_token(i))) end
    return write(table.concat(out))
  end
  -- three prompts in turn: G1 of 8 blocks (two prompts) misses every time, G2 hits
  local function three(i) return 1 + 100 * (i % 3) end
  -- one prompt every other request, fresh ones in between: LRU keeps the hot one
  local function hot(i) return i % 2 == 0 and 1 or 1000 + 100 * i end

  it("takes the batch tier hooks in both modes: the same counts as their per-block twins", function()
    local examples = helpers.srcdir() .. "/scripts/examples/"
    local t = cycling_trace(three)
    for _, mode in ipairs { "replay", "timed" } do
      local args = q(t) .. " --mode " .. mode .. " --g1 8 --g2 16 --block-size 4 --window 1 --policy "
      local one = sim_json(args .. q(examples .. "offload_on_release.lua"))
      local batch = sim_json(args .. q(examples .. "offload_on_release_batch.lua"))
      assert.is_true(one.offloads > 0 and one.onboards > 0, mode)
      for _, k in ipairs { "hits", "blocks", "onboards", "offloads", "offloads_skipped" } do
        assert.are.equal(one[k], batch[k], mode .. " " .. k)
      end
      -- write-through at registration: per block and in one call
      local p1 = script("return { on_register = function() return 'G2' end }")
      local pb = script("return { on_register_batch = function(ctx, hs) local o = {} "
        .. "for i = 1, #hs do o[i] = 'G2' end return o end }")
      local r1, rb = sim_json(args .. q(p1)), sim_json(args .. q(pb))
      assert.is_true(r1.offloads > 0, mode)
      for _, k in ipairs { "hits", "onboards", "offloads", "offloads_skipped" } do
        assert.are.equal(r1[k], rb[k], mode .. " " .. k)
      end
      os.remove(p1)
      os.remove(pb)
    end
    -- bad answers: exit status 2, naming the hook and what it returned
    for _, case in ipairs {
      { "return { on_inactive_batch = function() return 'G2' end }", "tier hook on_inactive_batch returned a string, not a list of tiers" },
      { "return { on_inactive_batch = function() return { 'G3' } end }", "tier hook on_inactive_batch returned G3, which is not a tier of this run" },
      { "return { on_register_batch = function() return { 'G7' } end }", "tier hook on_register_batch returned G7, which is not a tier of this run" },
      { "return { on_inactive = function() return 'G3' end }", "tier hook on_inactive returned G3, which is not a tier of this run" },
    } do
      local p = script(case[1])
      for _, mode in ipairs { "replay", "timed" } do
        user_error(q(t) .. " --quiet --g1 8 --g2 16 --block-size 4 --window 1 --mode " .. mode .. " --policy " .. q(p), case[2])
      end
      os.remove(p)
    end
    os.remove(t)
  end)

  it("--frequency: no tracker unless something may read it; none with multi_lru is refused", function()
    local t = cycling_trace(three)
    local args = q(t) .. " --g1 8 --g2 16 --block-size 4 --window 1"
    local examples = helpers.srcdir() .. "/scripts/examples/"
    for _, mode in ipairs { "replay", "timed" } do
      local m = " --mode " .. mode
      assert.are.equal("none", sim_json(args .. m).frequency)
      local hook = args .. m .. " --policy " .. q(examples .. "offload_on_release.lua")
      local with = sim_json(hook)
      assert.are.equal("medium", with.frequency) -- a hook may call ctx:frequency(h)
      assert.are.equal("medium", sim_json(args .. m .. " --g2-backend multi_lru").frequency)
      -- the example reads no estimate: the same run without a tracker
      local without = sim_json(hook .. " --frequency none")
      assert.are.equal("none", without.frequency)
      for _, k in ipairs { "hits", "onboards", "offloads" } do assert.are.equal(with[k], without[k], mode .. " " .. k) end
      assert.are.equal("large", sim_json(args .. m .. " --frequency large").frequency)
      user_error(args .. m .. " --frequency none --g1-backend multi_lru",
        "--g1-backend multi_lru orders by frequency: it needs a tracker (not --frequency none)")
    end
    user_error(args .. " --frequency tiny", "--frequency")
    os.remove(t)
  end)

  it("takes an eviction backend script with on_events", function()
    local p = script("local order = {}\nreturn {\n"
      .. "  on_events = function(evs) for _, e in ipairs(evs) do\n"
      .. "    if e.kind == 'insert' then order[#order + 1] = e.id\n"
      .. "    elseif e.kind == 'remove' then for i = #order, 1, -1 do if order[i] == e.id then table.remove(order, i) end end end\n"
      .. "  end end,\n"
      .. "  victims = function(n) local v = {} for i = 1, n do v[i] = table.remove(order, 1) end return v end,\n}\n")
    local t = cycling_trace(hot)
    local args = q(t) .. " --mode replay --g1 8 --g2 0 --block-size 4 --window 1"
    local lua_run, lru_run = sim_json(args .. " --g1-backend " .. q(p)), sim_json(args .. " --g1-backend lru")
    assert.is_true(lru_run.tiers.G1.evictions > 0 and lru_run.hits > 0)
    assert.are.equal(lru_run.hits, lua_run.hits)
    assert.are.equal(lru_run.tiers.G1.evictions, lua_run.tiers.G1.evictions)
    os.remove(p)
    os.remove(t)
  end)

  it("a raising hook aborts with exit status 2 naming the hook and the script's line", function()
    local p = script("return {\n  on_inactive = function()\n    error('boom')\n  end,\n}\n")
    for _, mode in ipairs { "replay", "timed" } do
      user_error(q(trace) .. " --quiet --mode " .. mode .. " --policy " .. q(p), p .. ":3: boom")
    end
    os.remove(p)
    p = script("return {\n  pick_waiting = function()\n    error('no pick')\n  end,\n}\n")
    user_error(q(trace) .. " --quiet --mode timed --scheduler " .. q(p), "scheduler hook pick_waiting raised: " .. p .. ":3: no pick")
    os.remove(p)
    p = script("return { pick_waiting = function() return 99 end }")
    user_error(q(trace) .. " --quiet --mode timed --scheduler " .. q(p), "pick_waiting returned 99")
    os.remove(p)
    p = script("return {\n  victims = function()\n    error('no victims')\n  end,\n}\n")
    user_error(q(trace) .. " --quiet --window 1 --g1 5 --g2 0 --g1-backend " .. q(p), "eviction hook victims raised: " .. p .. ":3: no victims")
    os.remove(p)
  end)

  it("runs the shipped scheduler examples; FCFS written out is the default", function()
    local ex = helpers.srcdir() .. "/scripts/examples/"
    local base = sim_json(q(trace) .. " --mode timed")
    local fcfs = sim_json(q(trace) .. " --mode timed --scheduler " .. q(ex .. "scheduler_fcfs.lua"))
    assert.are.equal(base.first_admission_reuse, fcfs.first_admission_reuse)
    assert.are.same(base.ttft_ms, fcfs.ttft_ms)
    local ca = sim_json(q(trace) .. " --mode timed --scheduler " .. q(ex .. "scheduler_cache_aware.lua"))
    assert.are.equal(3, ca.requests)
  end)

  it("the scheduler's pick decides the admission order (the cache-aware example)", function()
    -- G1 of 5 blocks of 16, one sequence at a time: A (prefix P), B
    -- (unrelated), C (prefix P). FCFS runs B before C and B evicts 3 of P's 4
    -- blocks; longest-cached-prefix-first runs C right after A.
    local t = write(line(0, helpers.range(64, 1)) .. line(1, helpers.range(64, 500)) .. line(2, helpers.range(64, 1)))
    local ca = helpers.srcdir() .. "/scripts/examples/scheduler_cache_aware.lua"
    local args = q(t) .. " --mode timed --g1 5 --g2 0 --max-seqs 1"
    -- FCFS: C finds the one block of P that B left
    assert.near(16 / (3 * 64), sim_json(args).first_admission_reuse, 1e-12)
    -- cache-aware: C finds 3 blocks (the cap (64 - 1) // 16)
    assert.near(48 / (3 * 64), sim_json(args .. " --scheduler " .. q(ca)).first_admission_reuse, 1e-12)
    os.remove(t)
  end)
end)

describe("kvbm sim --mode timed", function()
  -- two requests with the same 128-token prompt, block size 16
  local same = line(0, helpers.range(128, 1)) .. line(1, helpers.range(128, 1))

  it("computed: blocks are reusable from the end of the step that computed them", function()
    -- budget 80: step 1 computes A[0:80) (5 blocks); step 2 gives A its 48
    -- remaining tokens and admits B, which finds those 5 blocks.
    local t = write(same)
    local r = sim_json(q(t) .. " --mode timed --g2 0 --max-batched-tokens 80")
    assert.are.equal(80 / 256, r.first_admission_reuse)
    assert.are.equal(5, r.tiers.G1.hits)
    -- finished: A is still running in step 2, so B finds nothing
    r = sim_json(q(t) .. " --mode timed --g2 0 --max-batched-tokens 80 --cache-visibility finished")
    assert.are.equal(0, r.first_admission_reuse)
    -- a budget for both in one step: B is admitted before A's blocks are computed
    r = sim_json(q(t) .. " --mode timed --g2 0")
    assert.are.equal(0, r.first_admission_reuse)
    os.remove(t)
  end)

  it("reports the queue wait: arrival to first scheduled step", function()
    -- budget 64: A runs alone in step 1 (its first token ends the step), B
    -- is first scheduled at the start of step 2, when A's TTFT has passed
    local t = write(line(0, helpers.range(64, 1)) .. line(1, helpers.range(64, 100)))
    local r = sim_json(q(t) .. " --mode timed --g2 0 --max-batched-tokens 64")
    assert.are.equal(0, r.queue_ms.p50) -- A
    assert.are.equal(r.ttft_ms.p50, r.queue_ms.p99) -- B waited exactly A's TTFT
    assert.near(r.ttft_ms.p50 / 2, r.queue_ms.mean, 1e-9)
    assert.is_false(r.saturated)
    os.remove(t)
  end)

  it("says when the engine fell behind the arrivals, and not when it kept up", function()
    local function jsonl(gap_ms)
      local out = {}
      for i = 0, 199 do
        out[#out + 1] = ('{"timestamp": %d, "input_length": 2048, "output_length": 8, "hash_ids": [%d, %d, %d, %d]}\n')
          :format(i * gap_ms, 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4)
      end
      return write(table.concat(out))
    end
    -- 200 prompts of 2048 tokens every 5 ms: a sustained stream one engine cannot serve
    local burst, spread = jsonl(5), jsonl(100000)
    local args = " --mode timed --g2 0 --block-size 16 --trace-block-size 512"
    local r = sim_json(q(burst) .. args)
    assert.is_true(r.saturated)
    assert.is_true(r.sim_s > r.arrivals_s * 10)
    local text = sim(q(burst) .. args)
    assert.matches("overloaded: the arrivals span 1.0 s but serving them took", text, 1, true)
    assert.matches("it kept up with about --arrival-speedup", text, 1, true)
    r = sim_json(q(spread) .. args)
    assert.is_false(r.saturated)
    assert.near(199 * 100, r.arrivals_s, 1e-9)
    assert.is_nil(sim(q(spread) .. args):find("overloaded", 1, true))
    -- --arrival-speedup divides the span
    assert.near(199 * 10, sim_json(q(spread) .. args .. " --arrival-speedup 10").arrivals_s, 1e-9)
    os.remove(burst)
    os.remove(spread)
  end)

  it("caps the cached prefix at (prompt_tokens - 1) // block_size blocks", function()
    local t = write(line(0, helpers.range(64, 1)) .. line(1, helpers.range(64, 1)))
    -- budget 64: A alone in step 1 (and done); B in step 2 finds 3 of its 4 blocks
    local r = sim_json(q(t) .. " --mode timed --g2 0 --max-batched-tokens 64")
    assert.are.equal(48 / 128, r.first_admission_reuse)
    assert.are.equal(3, r.tiers.G1.hits)
    assert.are.equal(6, r.blocks) -- 3 blocks looked up per request
    os.remove(t)
  end)

  it("frees the G1 blocks of a waiting request when waiting requests hold G1 between them", function()
    -- the first 100 requests of the bundled sample in a small G1: requests
    -- that onboarded part of their prefix used to wait on each other for
    -- good ("the engine is stuck"); now the newest lets go and all finish
    local src = assert(io.open(helpers.srcdir() .. "/lua/kvbm/sim/data/mooncake_trace_1000.jsonl"))
    local lines = {}
    for l in src:lines() do
      lines[#lines + 1] = l
      if #lines == 100 then break end
    end
    src:close()
    local t = write(table.concat(lines, "\n") .. "\n")
    local r = sim_json(q(t) .. " --mode timed --g1 512 --g2 2048")
    assert.are.equal(100, r.requests)
    assert.is_true(r.onboards > 0 and r.preemptions > 0)
    os.remove(t)
  end)

  it("preempts the newest running request when a step cannot get blocks", function()
    -- G1 of 6 blocks of 16: two 20-token prompts decoding 60 tokens each
    -- (5 blocks each at the end) are admitted together; at 48 tokens the
    -- older needs a block and none is left: the newer is preempted.
    local t = write('{"timestamp": 0, "input_length": 20, "output_length": 60, "hash_ids": [1]}\n'
      .. '{"timestamp": 0, "input_length": 20, "output_length": 60, "hash_ids": [2]}\n')
    local r = sim_json(q(t) .. " --g2 0 --g1 6")
    assert.are.equal("timed", r.mode)
    assert.is_true(r.preemptions >= 1, "a preemption")
    assert.are.equal(0, r.rejected)
    assert.are.equal(120, r.output_tokens)
    -- with room for both, none
    assert.are.equal(0, sim_json(q(t) .. " --g2 0 --g1 10").preemptions)
    os.remove(t)
  end)

  it("rejects a request G1 can never hold and finishes the others", function()
    local t = write(line(0, helpers.range(200, 1)) .. line(1, helpers.range(20, 1)))
    local r = sim_json(q(t) .. " --mode timed --g2 0 --g1 4")
    assert.are.equal(1, r.rejected)
    os.remove(t)
  end)

  it("onboards from G2 take time: TTFT grows with a slower link", function()
    -- A, then B (unrelated) evicts A from a small G1; C (A's prompt) onboards from G2
    local t = write(line(0, helpers.range(160, 1)) .. line(1, helpers.range(160, 900)) .. line(2, helpers.range(160, 1)))
    local fast = sim_json(q(t) .. " --mode timed --g1 11 --g2 64 --max-seqs 1 --bw-g2 1000")
    local slow = sim_json(q(t) .. " --mode timed --g1 11 --g2 64 --max-seqs 1 --bw-g2 0.01")
    assert.is_true(fast.onboards > 0, "onboards")
    assert.are.equal(fast.onboards, slow.onboards)
    assert.is_true(slow.ttft_ms.p99 > fast.ttft_ms.p99 + 100, "a 0.01 GB/s copy of 2 MiB blocks is slow")
    os.remove(t)
  end)
end)

describe("kvbm sim on the bundled Mooncake sample", function()
  it("runs by default in timed mode with G1 and G2 at work", function()
    local r = sim_json("")
    assert.are.equal("timed", r.mode)
    assert.are.equal(1000, r.requests)
    assert.is_true(r.tiers.G1.hits > 0 and r.tiers.G2.hits > 0, "hits in G1 and in G2")
    assert.is_true(r.onboards > 0 and r.offloads > 0)
    assert.are.equal(199084, r.output_tokens, "every output token of the trace")
  end)

  it("reuses more when blocks are visible once computed than when their request finishes", function()
    local args = "--block-size 64 --g1 54453 --g2 0 --arrival-speedup 10 --cache-visibility "
    local computed, finished = sim_json(args .. "computed"), sim_json(args .. "finished")
    assert.is_true(computed.first_admission_reuse > finished.first_admission_reuse)
    assert.are.equal(9792030, computed.prompt_tokens)
    assert.are.equal(computed.prompt_tokens, finished.prompt_tokens)
  end)
end)

describe("kvbm sim reports", function()
  local trace
  setup(function()
    local out = {}
    for i = 0, 29 do out[#out + 1] = line(i, helpers.range(40 + 8 * (i % 5), 1 + 1000 * (i % 3))) end
    trace = write(table.concat(out))
  end)
  teardown(function() os.remove(trace) end)

  local function check_schema(o, mode)
    for _, k in ipairs { "requests", "rejected", "block_size", "blocks", "hits", "onboards", "offloads" } do
      assert.is_true(math.type(o[k]) == "integer" or (type(o[k]) == "number" and o[k] % 1 == 0), k)
    end
    assert.are.equal(mode, o.mode)
    assert.is_true(o.hit_rate >= 0 and o.hit_rate <= 1)
    assert.is_number(o.wall_s)
    assert.is_number(o.ns_per_block)
    assert.is_table(o.tiers.G1)
    for name, t in pairs(o.tiers) do
      assert.matches("^G[123]$", name)
      for _, k in ipairs { "blocks", "hits", "hit_rate", "evictions", "registrations" } do assert.is_number(t[k], name .. "." .. k) end
      assert.is_true(t.hit_rate >= 0 and t.hit_rate <= 1)
    end
    local hits = 0
    for _, t in pairs(o.tiers) do hits = hits + t.hits end
    assert.are.equal(o.hits, hits)
    if mode == "timed" then
      assert.is_true(o.first_admission_reuse >= 0 and o.first_admission_reuse <= 1)
      for _, k in ipairs { "ttft_ms", "itl_ms", "e2e_ms" } do
        for _, s in ipairs { "mean", "p50", "p90", "p99" } do assert.is_number(o[k][s], k .. "." .. s) end
        assert.is_true(o[k].p50 <= o[k].p90 and o[k].p90 <= o[k].p99)
      end
      assert.is_number(o.output_tok_s)
      assert.is_number(o.preemptions)
    end
  end

  it("--json gives the schema in both modes", function()
    check_schema(sim_json(q(trace) .. " --g1 64 --g2 64"), "replay")
    check_schema(sim_json(q(trace) .. " --mode timed --g1 64 --g2 64"), "timed")
  end)

  it("the text report says what each rate divides by, and the total hit rate", function()
    local out, status = sim(q(trace) .. " --mode timed --g1 64 --g2 64 --quiet")
    assert.are.equal(0, status, out)
    assert.matches("hit rate [%d.]+ %% of full blocks looked up", out)
    assert.matches("blocks recomputed %d+", out)
    assert.matches("hit%% = hits in the tier / full blocks looked up", out)
    assert.matches("first%-admission reuse [%d.]+ %% of prompt tokens", out)
    assert.matches("TTFT", out)
    assert.matches("trace loading [%d.]+ s included", out)
  end)

  it("--compare runs each configuration on the same trace, side by side, or as a JSON array", function()
    local p = helpers.srcdir() .. "/scripts/examples/write_through.lua"
    local out, status = sim(q(trace) .. " --g1 32 --g2 64 --quiet --compare lru lineage " .. q(p) .. " '--g2 0 --window 2'")
    assert.are.equal(0, status, out)
    assert.matches("4 configurations", out)
    assert.matches("lru +lineage +.*write_through%.lua +%-%-g2 0 %-%-window 2", out)
    assert.matches("\nhit rate %(of blocks looked up%)", out)
    local arr = sim_json(q(trace) .. " --g1 32 --g2 64", "--compare lru lineage '--g2 0'")
    assert.are.equal(3, #arr)
    assert.are.same({ "lru", "lineage", "--g2 0" }, { arr[1].label, arr[2].label, arr[3].label })
    for _, o in ipairs(arr) do check_schema(o, "replay") end
    assert.is_nil(arr[3].tiers.G2)
    -- the lru column is the plain run with --g1-backend lru
    local one = sim_json(q(trace) .. " --g1 32 --g2 64 --g1-backend lru")
    assert.are.equal(one.hits, arr[1].hits)
  end)

  it("--html writes a self-contained page whose charts have data points (headless Chromium)", function()
    local dom = rendered(q(trace) .. " --mode timed --g1 64 --g2 64 --quiet", "--compare lru lineage")
    if not dom then return end
    local charts = select(2, dom:gsub("<svg[^>]*class=\"chart\"", ""))
    assert.are.equal(3, charts, "three charts rendered")
    -- and the bar chart of the compared configurations: lru marked, no optimum to draw
    assert.are.equal(1, select(2, dom:gsub('<svg[^>]*class="chart bars"', "")), "one bar chart")
    assert.are.equal(2, select(2, dom:gsub('<rect class="bar"', "")), "one bar per configuration")
    assert.is_truthy(dom:find('data%-name="lru" data%-value="[%d.]+" data%-kind="baseline"'), "LRU marked")
    assert.is_nil(dom:find('<line class="optimum"', 1, true))
    local series = 0
    for name, n in dom:gmatch('<polyline class="series" data%-name="([^"]*)" data%-points="(%d+)"') do
      series = series + 1
      assert.is_true(tonumber(n) >= 2, name .. " has data points")
    end
    -- hit rate and occupancy: G1 and G2 for each of 2 configurations; TTFT: one per configuration
    assert.are.equal(2 * 2 * 2 + 2, series)
    assert.matches("TTFT distribution", dom)
  end)
end)

describe("kvbm sim interrupted", function()
  it("Ctrl-C prints the report so far, marked partial, exit status 130", function()
    -- the bundled trace at a small G1 runs for seconds; SIGINT after 1 s
    local cmd = "(" .. q(kvbm_bin) .. " sim --g1 2048 --g2 8192 --quiet > " .. "%s 2>&1 & pid=$!; sleep 1; kill -INT $pid; wait $pid)"
    local out_path = os.tmpname()
    local _, status = helpers.run(cmd:format(q(out_path)))
    local out = assert(io.open(out_path)):read("a")
    os.remove(out_path)
    assert.are.equal(130, status, out)
    local done = tonumber(out:match("%[PARTIAL: interrupted, (%d+) requests done%]"))
    assert.is_true(done ~= nil and done < 1000, out)
    assert.matches("first%-admission reuse", out)
  end)
end)

describe("kvbm sim --mode replay", function()
  -- An independent model of the replay at window 1 with an LRU G1 and no
  -- G2: each engine block is one hash id (its prefix chain is its identity);
  -- before a request the previous one's blocks are released (position
  -- order, so they enter the LRU list in that order); the prefix found is
  -- taken off the list; the rest is allocated from never-used blocks first,
  -- then by evicting the least recently used.
  local function model(requests, capacity)
    local cached, lru, fresh, tick = {}, {}, capacity, 0
    local hits, blocks, evictions, prev = 0, 0, 0, nil
    local function key(ids, i) return table.concat(ids, ",", 1, i) end
    for _, ids in ipairs(requests) do
      if prev then
        for i = 1, #prev do tick = tick + 1; lru[prev[i]] = tick end
      end
      prev = nil
      local n = #ids
      blocks = blocks + n
      local h = 0
      while h < n and lru[key(ids, h + 1)] do h = h + 1 end
      local need = n - h
      local inactive = 0
      for _ in pairs(lru) do inactive = inactive + 1 end
      if need <= fresh + inactive - h then
        hits = hits + h
        local held = {}
        for i = 1, h do held[i] = key(ids, i); lru[held[i]] = nil end
        for i = h + 1, n do
          if fresh > 0 then fresh = fresh - 1 else
            local victim, t = nil, math.huge
            for k, v in pairs(lru) do if v < t then victim, t = k, v end end
            lru[victim] = nil
            cached[victim] = nil
            evictions = evictions + 1
          end
          held[i] = key(ids, i)
          cached[held[i]] = true
        end
        prev = held
      end
    end
    return { hits = hits, blocks = blocks, evictions = evictions }
  end

  it("counts JSONL exactly as the text format of the same requests, and as the independent model", function()
    math.randomseed(11)
    local requests, jsonl, text, next_id = {}, {}, {}, 1000
    local roots = {}
    for r = 1, 60 do
      local ids = {}
      local root = roots[math.random(1, 6)]
      if root and math.random() < 0.8 then
        for i = 1, math.random(1, #root) do ids[i] = root[i] end
      end
      for _ = 1, math.random(1, 4) do ids[#ids + 1] = next_id; next_id = next_id + 1 end
      if #roots < 6 then roots[#roots + 1] = ids end
      requests[r] = ids
      -- a partial last block that the engine does not cache
      local input = 4 * #ids + math.random(0, 3)
      jsonl[r] = cjson.encode({ timestamp = r, input_length = input, output_length = 3, hash_ids = ids })
      local toks = {}
      for _, h in ipairs(ids) do for _ = 1, 4 do toks[#toks + 1] = h end end
      for i = 1, input - 4 * #ids do toks[#toks + 1] = ids[#ids] end
      text[r] = line(r - 1, toks):sub(1, -2)
    end
    local jp, tp = write(table.concat(jsonl, "\n") .. "\n"), write(table.concat(text, "\n") .. "\n")
    local args = " --mode replay --block-size 4 --trace-block-size 4 --window 1 --g2 0 --backend lru --g1 24"
    local a = sim_json(q(jp) .. args)
    local b = sim_json(q(tp) .. args)
    local m = model(requests, 24)
    assert.are.equal(m.blocks, a.blocks)
    assert.are.equal(m.hits, a.hits)
    assert.are.equal(m.evictions, a.tiers.G1.evictions)
    for _, k in ipairs { "blocks", "hits", "rejected", "recomputed" } do assert.are.equal(a[k], b[k], k) end
    assert.are.equal(a.tiers.G1.evictions, b.tiers.G1.evictions)
    assert.are.equal(a.tiers.G1.registrations, b.tiers.G1.registrations)
    os.remove(jp)
    os.remove(tp)
  end)

  it("is the default for text traces and timed the default for JSONL", function()
    local tp = write(line(0, helpers.range(32, 1)))
    assert.are.equal("replay", sim_json(q(tp)).mode)
    local jp = write('{"timestamp": 0, "input_length": 40, "output_length": 2, "hash_ids": [1]}\n')
    assert.are.equal("timed", sim_json(q(jp)).mode)
    assert.are.equal("replay", sim_json(q(jp) .. " --mode replay").mode)
    os.remove(tp)
    os.remove(jp)
  end)
end)

describe("kvbm sim backends (the offline optimum)", function()
  it("--list-backends prints every engine backend, one a line, optimal included", function()
    local out, status = sim("--list-backends")
    assert.are.equal(0, status, out)
    local names = {}
    for name in out:gmatch("[^\n]+") do names[#names + 1] = name end
    assert.are.same(require("kvbm").backends, names)
    assert.is_truthy(out:find("\noptimal\n", 1, true))
  end)

  it("refuses optimal outside replay mode and below G1", function()
    user_error("--requests 5 --mode timed --backend optimal", "--backend optimal: the offline optimum needs --mode replay")
    user_error("--requests 5 --mode replay --g2-backend optimal", "the offline optimum is for G1")
  end)

  it("optimal is never beaten by an online backend, and beats LRU, on a generated trace", function()
    local all = require("kvbm").backends
    local reps = sim_json("--requests 300 --mode replay --block-size 64 --window 1 --g2 0 --g1 96",
      "--compare " .. table.concat(all, " "))
    local rate = {}
    for i, r in ipairs(reps) do rate[all[i]] = r.tiers.G1.hit_rate end
    for _, name in ipairs(all) do
      assert.is_true(rate.optimal >= rate[name], name .. " " .. rate[name] .. " > optimal " .. rate.optimal)
    end
    assert.is_true(rate.optimal > rate.lru, "optimal " .. rate.optimal .. ", lru " .. rate.lru)
  end)
end)

describe("kvbm sim --compare all", function()
  local all = require("kvbm").backends
  local REPLAY = "--requests 300 --mode replay --block-size 64 --window 1 --g2 0 --g1 96"

  it("runs every backend of --list-backends, in its order, optimal included in replay mode", function()
    local reps = sim_json(REPLAY, "--compare all")
    local labels = {}
    for i, r in ipairs(reps) do
      labels[i] = r.label
      assert.are.equal("replay", r.mode)
      assert.are.equal(r.label, r.tiers.G1.backend, "the column runs its backend in G1")
    end
    assert.are.same(all, labels)
    -- each column is the plain run with that backend
    local one = sim_json(REPLAY .. " --backend depth")
    for _, r in ipairs(reps) do if r.label == "depth" then assert.are.equal(one.hits, r.hits) end end
  end)

  it("prints the share of the LRU -> optimal gap each backend closes", function()
    local reps = sim_json(REPLAY, "--compare all")
    local rate = {}
    for _, r in ipairs(reps) do rate[r.label] = r.hit_rate end
    assert.is_true(rate.optimal > rate.lru, "a gap to close on this trace")
    local out, status = sim(REPLAY .. " --quiet --compare all")
    assert.are.equal(0, status, out)
    local row = out:match("\nLRU %-> optimal gap closed( [^\n]*)")
    assert.is_truthy(row, out)
    local cells = {}
    for v in row:gmatch("(%-?[%d.]+) %%") do cells[#cells + 1] = v end
    assert.are.equal(#all, #cells, row)
    for i, name in ipairs(all) do
      local want = string.format("%.2f", 100 * (rate[name] - rate.lru) / (rate.optimal - rate.lru))
      assert.are.equal(want, cells[i], name)
    end
    -- no row without both bounds
    out = sim(REPLAY .. " --quiet --compare lru depth")
    assert.is_nil(out:find("gap closed", 1, true), out)
  end)

  it("gives bench_evict's hit rates (the same replay on the C API) on the bundled sample", function()
    local bench = helpers.builddir() .. "/scripts/bench_evict"
    if select(2, helpers.run("test -x " .. q(bench))) ~= 0 then
      pending("scripts/bench_evict is not built: the sim was not checked against it")
      return
    end
    local sample = helpers.srcdir() .. "/lua/kvbm/sim/data/mooncake_trace_1000.jsonl"
    local reps = sim_json(q(sample) .. " --mode replay --block-size 512 --trace-block-size 512 --window 1 --g2 0 --g1 1953",
      "--compare all")
    local out, status = helpers.run(q(bench) .. " " .. q(sample) .. " 512 1953 " .. table.concat(all, " "))
    assert.are.equal(0, status, out)
    local c = {}
    for name, rate in out:gmatch("(%S+) +blocks +%d+ +hit rate +([%d.]+) %%") do c[name] = rate end
    for _, r in ipairs(reps) do
      assert.are.equal(c[r.label], string.format("%.2f", 100 * r.hit_rate), r.label)
    end
  end)

  it("skips optimal in timed mode with a note on standard error, and runs the others", function()
    local err_path = os.tmpname()
    local out, status = helpers.run(q(kvbm_bin) .. " sim --requests 60 --mode timed --g1 512 --g2 0 --quiet --json"
      .. " --compare all 2>" .. q(err_path))
    local err = assert(io.open(err_path)):read("a")
    os.remove(err_path)
    assert.are.equal(0, status, out .. err)
    assert.are.equal("kvbm sim: --compare all: optimal skipped (the offline optimum needs --mode replay)\n", err)
    local labels = {}
    for i, r in ipairs(cjson.decode(out)) do labels[i] = r.label end
    local want = {}
    for _, name in ipairs(all) do if name ~= "optimal" then want[#want + 1] = name end end
    assert.are.same(want, labels)
  end)

  it("--html draws one bar per backend, the optimum as the upper bound and LRU marked (headless Chromium)", function()
    local dom = rendered(REPLAY .. " --quiet", "--compare all")
    if not dom then return end
    local reps = sim_json(REPLAY, "--compare all")
    assert.are.equal(1, select(2, dom:gsub('<svg[^>]*class="chart bars"', "")), "one bar chart")
    local bars, kinds = {}, {}
    for name, value, kind in dom:gmatch('<rect class="bar" data%-name="([^"]*)" data%-value="([%d.]+)" data%-kind="([^"]*)"') do
      bars[#bars + 1] = { name = name, value = tonumber(value) }
      if kind ~= "" then kinds[kind] = (kinds[kind] or "") .. name end
    end
    assert.are.equal(#all, #bars, "one bar per backend")
    for i, r in ipairs(reps) do
      assert.are.equal(r.label, bars[i].name)
      assert.is_true(math.abs(r.hit_rate - bars[i].value) < 1e-6, r.label .. ": the bar shows its hit rate")
    end
    assert.are.same({ optimum = "optimal", baseline = "lru" }, kinds)
    assert.is_truthy(dom:find('<line class="optimum"', 1, true), "the upper bound is drawn across")
    assert.is_truthy(dom:find('<line class="baseline"', 1, true), "LRU's level is drawn across")
    assert.matches("upper bound:", dom, 1, true)
    -- the line charts are still there: hit rate and occupancy, one G1 line per backend
    local series = select(2, dom:gsub('<polyline class="series"', ""))
    assert.are.equal(2 * #all, series)
  end)
end)
