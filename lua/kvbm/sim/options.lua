-- kvbm.sim.options: the options of `kvbm sim`, one list (flag, field,
-- kind, default, help); parse(args) turns argv into an options table or
-- raises a sim error ({ sim_error = true, msg }) naming the option.
local tonumber, tostring, ipairs, pairs, error, type, tointeger, concat, format =
  tonumber, tostring, ipairs, pairs, error, type, math.tointeger, table.concat, string.format
local engine_backends = require("kvbm").backends
local _ENV = nil

local M = {}

-- every built-in backend of the engine (KVBM_BACKEND_MAP), "optimal" included
M.BACKENDS = {}
for i, name in ipairs(engine_backends) do M.BACKENDS[i] = name end
-- `--compare all`: every name of M.BACKENDS, in that order
M.ALL = "all"
M.MODES = { "replay", "timed" }
M.FORMATS = { "jsonl", "text" }
M.VISIBILITY = { "computed", "finished", "scheduled" }
M.FREQUENCIES = { "none", "small", "medium", "large" } -- kvbm.registry{ frequency = }
local U32 = 4294967295

-- kinds: count (integer 0..2^32-1), pos (positive number), text, choice,
-- backend (a built-in name or a .lua file), flag.
M.LIST = {
  { "--mode", "mode", "choice", nil, "replay | timed (default: timed for JSONL and the bundled trace, replay for text)", M.MODES },
  { "--format", "format", "choice", nil, "jsonl | text (default: by content)", M.FORMATS },
  { "--trace-block-size", "trace_block_size", "count", 512, "tokens per JSONL hash id" },
  { "--block-size", "block_size", "count", 16, "tokens per engine block" },
  { "--g1", "g1", "count", nil, "G1 (GPU) blocks (default 4096; timed: 32768)" },
  { "--g2", "g2", "count", nil, "G2 (host) blocks, 0: none (default 16384; timed: 131072)" },
  { "--g3", "g3", "count", 0, "G3 (disk) blocks, 0: none" },
  { "--g1-backend", "g1_backend", "backend", nil, "G1 eviction: a built-in name or a Lua policy file (default lineage; timed: lru)" },
  { "--g2-backend", "g2_backend", "backend", nil, "G2 eviction (default lru)" },
  { "--g3-backend", "g3_backend", "backend", nil, "G3 eviction (default lru)" },
  { "--backend", "g1_backend", "backend", nil, "alias of --g1-backend" },
  { "--policy", "policy", "text", nil, "tier-policy script (default: offload on release, G1 -> G2 -> G3)" },
  { "--scheduler", "scheduler", "text", nil, "timed: scheduler hooks script (default FCFS)" },
  { "--window", "window", "count", 8, "replay: requests holding blocks at once" },
  { "--max-batched-tokens", "max_batched_tokens", "count", 8192, "timed: token budget per step" },
  { "--max-seqs", "max_seqs", "count", 256, "timed: running requests at most" },
  { "--arrival-speedup", "arrival_speedup", "pos", 1, "timed: divide the trace's timestamps by X" },
  { "--cache-visibility", "cache_visibility", "choice", "computed", "timed: computed | finished | scheduled (see doc/sim.md)", M.VISIBILITY },
  { "--frequency", "frequency", "choice", nil, "the registry's frequency tracker: none | small | medium | large (default: medium when a hook, a Lua backend or multi_lru may read estimates, else none)", M.FREQUENCIES },
  { "--timing", "timing", "text", nil, "timed: step-time coefficients (a Lua file returning a table)" },
  { "--kv-bytes-per-token", "kv_bytes_per_token", "pos", 131072, "timed: KV bytes per token (copy sizes, decode reads)" },
  { "--bw-g2", "bw_g2", "pos", 25, "timed: G1<->G2 copy bandwidth, GB/s" },
  { "--bw-g3", "bw_g3", "pos", 5, "timed: copy bandwidth of links to G3, GB/s" },
  { "--requests", "requests", "count", nil, "no TRACE: generate N requests instead of the bundled trace" },
  { "--seed", "seed", "count", 7, "seed of the generated trace" },
  { "--nats", "nats", "text", nil, "publish the KV events to NATS (subject kvbm.events)" },
  { "--instance-id", "instance_id", "count", 1, "the events' instance id" },
  { "--json", "json", "flag", false, "print the report as one JSON object (an array with --compare)" },
  { "--html", "html", "text", nil, "write a self-contained HTML page of charts to FILE" },
  { "--quiet", "quiet", "flag", false, "no progress line" },
  { "--compare", "compare", "rest", nil, "the rest of the arguments: configurations to compare (backend names, policy files, quoted options; all: every backend)" },
  { "--list-backends", "list_backends", "flag", false, "print every backend name --backend accepts, one a line (optimal: Belady's offline optimum, replay mode)" },
  { "--help", "help", "flag", false, "this text" },
}

local BY_FLAG = {}
for _, o in ipairs(M.LIST) do BY_FLAG[o[1]] = o end
BY_FLAG["-h"] = BY_FLAG["--help"]

local function fail(msg) error({ sim_error = true, msg = msg }, 0) end

function M.usage()
  local lines = { "usage: kvbm sim [TRACE|-] [options]",
    "Runs TRACE (Mooncake/Dynamo JSONL, or text lines \"<id> <salt> <n_tokens> <tok>...\"; - reads standard",
    "input; default: the bundled 1000-request Mooncake sample) through G1/G2/G3 with a tier policy." }
  for _, o in ipairs(M.LIST) do
    local arg = (o[3] == "flag") and "" or (o[3] == "rest" and " A B ..." or " X")
    lines[#lines + 1] = format("  %-24s %s", o[1] .. arg, o[5])
  end
  return concat(lines, "\n")
end

local function is_lua_file(v) return v:sub(-4) == ".lua" end

--- Checks value v of option o; returns the converted value.
function M.value(o, v)
  local flag, kind = o[1], o[3]
  if kind == "count" then
    if not v:match("^%d+$") then fail(flag .. " needs a non-negative integer, not '" .. v .. "'") end
    local n = tointeger(tonumber(v))
    if not n or n > U32 then fail(flag .. " " .. v .. " is more than " .. U32) end
    return n
  elseif kind == "pos" then
    local n = tonumber(v)
    if not n or n <= 0 or n ~= n or n == 1 / 0 then fail(flag .. " needs a positive number, not '" .. v .. "'") end
    return n
  elseif kind == "choice" then
    for _, c in ipairs(o[6]) do if c == v then return v end end
    fail(flag .. ": unknown value '" .. v .. "' (valid: " .. concat(o[6], ", ") .. ")")
  elseif kind == "backend" then
    for _, c in ipairs(M.BACKENDS) do if c == v then return v end end
    if is_lua_file(v) then return v end
    fail(flag .. ": unknown backend '" .. v .. "' (valid: " .. concat(M.BACKENDS, ", ") .. ", or a Lua policy file *.lua)")
  end
  return v
end

--- parse(args [, base]): options over base (a previous parse, for --compare).
function M.parse(args, base)
  local o = {}
  if base then for k, v in pairs(base) do o[k] = v end else
    for _, d in ipairs(M.LIST) do if d[4] ~= nil and o[d[2]] == nil then o[d[2]] = d[4] end end
  end
  o.given = {}
  if base then for k in pairs(base.given) do o.given[k] = true end end
  local i = 1
  while i <= #args do
    local a = args[i]
    local d = BY_FLAG[a]
    if d then
      if d[3] == "flag" then
        o[d[2]] = true
      elseif d[3] == "rest" then
        local rest = {}
        for k = i + 1, #args do rest[#rest + 1] = args[k] end
        if #rest == 0 then fail("--compare needs at least one configuration") end
        for _, c in ipairs(rest) do
          if c == M.ALL and #rest > 1 then
            fail("--compare " .. M.ALL .. " compares every backend and takes no other configuration (given: "
              .. concat(rest, " ") .. ")")
          end
        end
        o.compare = rest
        break
      else
        local v = args[i + 1]
        if v == nil then fail(a .. " needs a value") end
        o[d[2]] = M.value(d, v)
        o.given[d[2]] = true
        i = i + 1
      end
    elseif a:sub(1, 2) == "--" then
      fail("unknown option " .. a .. " (kvbm sim --help lists them)")
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      fail("unknown option " .. a .. " (kvbm sim --help lists them)")
    elseif base then
      fail("a --compare configuration cannot name a trace: " .. a)
    elseif not o.trace then
      o.trace = a
      o.given.trace = true
    else
      fail("more than one trace given: " .. o.trace .. " and " .. a)
    end
    i = i + 1
  end
  for _, k in ipairs { "block_size", "window", "max_batched_tokens", "max_seqs", "trace_block_size" } do
    if o[k] == 0 then fail("--" .. k:gsub("_", "-") .. " must be positive") end
  end
  if o.g1 == 0 then fail("--g1 must be positive") end
  return o
end

--- The configurations of --compare list in mode: `all` becomes every
--- backend; returns them and a note on what was left out, or nil. The
--- offline optimum needs the replay's known order: skipped in timed mode.
function M.compare_list(list, mode)
  if list[1] ~= M.ALL then return list end
  local out, note = {}, nil
  for _, name in ipairs(M.BACKENDS) do
    if name == "optimal" and mode ~= "replay" then
      note = "--compare all: optimal skipped (the offline optimum needs --mode replay)"
    else
      out[#out + 1] = name
    end
  end
  return out, note
end

--- The options of one --compare configuration: a backend name, a .lua
--- file (a tier policy), or a quoted set of options.
function M.configuration(base, spec)
  for _, c in ipairs(M.BACKENDS) do if c == spec then return M.parse({ "--g1-backend", spec }, base), spec end end
  if is_lua_file(spec) and not spec:find("%s") then return M.parse({ "--policy", spec }, base), spec end
  local args = {}
  for w in spec:gmatch("%S+") do args[#args + 1] = w end
  if #args == 0 or args[1]:sub(1, 2) ~= "--" then
    fail("--compare: '" .. spec .. "' is not a backend (" .. concat(M.BACKENDS, ", ")
      .. "), a policy file *.lua or a quoted set of options")
  end
  return M.parse(args, base), spec
end

return M
