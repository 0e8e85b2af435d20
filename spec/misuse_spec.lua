-- The Lua misuse sweep: every function and method of the binding, called
-- with wrong types, wrong arity, 2^53, -1, NaN, +-inf, a fraction, on the
-- wrong object, after release and after close. Each call must raise a clear
-- error (or, for an expected run-time failure, return nil, err), never crash,
-- never show an internal path; the engine's self-check stays clean.
--
-- One list of calls (CALLS): a call's arguments are those of a valid call;
-- the sweep replaces each in turn with every hostile value, and replaces
-- self too. The list is checked against the metatables, so a new method
-- cannot be left out.
local kvbm = require "kvbm"
local helpers = require "helpers"

local HOSTILE = {
  { "2^53 (integer)", 1 << 53 }, { "2^53 (float)", 2 ^ 53 }, { "-1", -1 }, { "NaN", 0 / 0 },
  { "inf", math.huge }, { "-inf", -math.huge }, { "1.5", 1.5 }, { "a string", "not a thing" },
  { "a table", {} }, { "true", true }, { "a function", function() end }, { "a coroutine", coroutine.create(function() end) },
}
-- values a valid integer argument may legitimately take (a no-op, a lookup
-- that misses, a u64 bit pattern): these must not crash, but may succeed
local IN_RANGE_FOR_INTEGERS = { ["2^53 (integer)"] = true, ["2^53 (float)"] = true, ["-1"] = true }

-- Messages meant for users never show where in kvbm the check sits. The
-- problems are collected, so that one run lists them all.
local problems = {}
local function assert_clean(what, err)
  local text = type(err) == "string" and err or tostring(err)
  local function bad(why) problems[#problems + 1] = what .. ": " .. why .. ": " .. text end
  if type(err) ~= "string" and not getmetatable(err) then bad("raised a " .. type(err)) end
  if text:find("%.c:%d+") then bad("a C source path") end
  if text:find("kvbm/[%w_]+%.lua:%d+") then bad("an internal Lua path") end
  if text:find("#%-%d") then bad("a negative argument number") end
  if text:find("table index is") then bad("a raw Lua table error") end
  if not text:find("%a") then bad("an empty message") end
end

local function world()
  local w = {}
  w.reg = kvbm.registry { frequency = "small" }
  w.m = assert(kvbm.manager { blocks = 32, block_size = 4, registry = w.reg, backend = "lru" })
  w.seq = kvbm.sequence(helpers.range(12), 4, 0)
  w.h = w.seq:hash(0)
  w.h2 = w.seq:hash(1)
  w.hd = w.reg:handle(w.h)
  w.mb = assert(w.m:allocate(1))[1]
  w.cb = assert(assert(w.m:allocate(1))[1]:stage(w.h2))
  w.ib = w.m:register(assert(assert(w.m:allocate(1))[1]:stage(w.h)))
  w.wb = w.ib:downgrade()
  w.set = assert(w.m:allocate_set(2))
  w.asg = kvbm.assignments(0)
  w.asg2 = kvbm.assignments(0)
  w.ev = kvbm.events()
  w.sub = w.ev:subscribe(8)
  w.loop = kvbm.loop()
  w.pub = assert(kvbm.publisher { events = w.ev, loop = w.loop, instance_id = 1, sink = function() end })
  w.path = os.tmpname()
  w.fsink = assert(kvbm.sink.file(w.path))
  w.msg = kvbm.wire.encode { kind = "create", hashes = { w.h }, instance_id = 1 }
  w.tiers = assert(kvbm.tiers { block_size = 4, G1 = { blocks = 16 }, G2 = { blocks = 16 }, policy = "offload_on_release" })
  w.spare_tiers = assert(kvbm.tiers { block_size = 4, G1 = { blocks = 4 } })._core
  return w
end

local function free(w)
  for _, k in ipairs({ "hd", "mb", "cb", "ib", "wb", "set" }) do pcall(w[k].release, w[k]) end
  w.pub:close()
  w.fsink:close()
  w.sub:close()
  w.tiers:close()
  os.remove(w.path)
end

-- { object key (nil: a module function), method or function path, arguments
--   (functions of the world, evaluated per call) }
local function A(...) local a = table.pack(...) return function(w) return a end end
local function W(...) local keys = { ... } return function(w)
  local a = {}
  for i, k in ipairs(keys) do a[i] = type(k) == "string" and k:sub(1, 1) == "@" and w[k:sub(2)] or k end
  return a
end end
local CALLS = {
  -- module functions
  { nil, "hash.new", A(1, 0, 0) }, { nil, "hash.extend", W("@h", 5) }, { nil, "hash.block", A({ 1, 2, 3, 4 }, 0) },
  { nil, "hash.chain", A(1, 2) }, { nil, "hash.compare", W("@h", "@h2") }, { nil, "hash.lt", W("@h", "@h2") },
  { nil, "hash.current", W("@h") }, { nil, "hash.mode", W("@h") }, { nil, "hash.parent", W("@h") },
  { nil, "hash.parent_for_child", W("@h", 1) }, { nil, "hash.position", W("@h") }, { nil, "hash.tostring", W("@h") },
  { nil, "hash.hex", W("@h") }, { nil, "hash.from_hex", A(string.rep("0", 32)) },
  { nil, "sequence", A({ 1, 2, 3, 4 }, 4, 0) }, { nil, "registry", A({ frequency = "small" }) },
  { nil, "manager", W({ blocks = 4, block_size = 4 }) }, { nil, "events", A({ policy = "all" }) }, { nil, "loop", A() },
  { nil, "publisher", A({}) }, { nil, "sink.file", A("/nonexistent/dir/file"), skip = { ["a string"] = "creates the file" } }, { nil, "sink.read_file", A("/nonexistent") },
  { nil, "wire.encode", W({ kind = "create", hashes = {}, instance_id = 1 }) }, { nil, "wire.decode", W("@msg") },
  { nil, "assignments", A(0) }, { nil, "zip_assigned", W("@asg", "@asg2") }, { nil, "zip_assigned_pending", W("@asg", "@asg2") },
  { nil, "prometheus", W({}) }, { nil, "_debug.check", W("@m") }, { nil, "_debug.live", A() },
  { nil, "new_error", A("no_space", "a message", {}) }, { nil, "trace.load", A("/nonexistent/trace") },
  { nil, "trace.parse", A("") },
  { nil, "_tiers.new", W("@tiers", {}, "none") }, { nil, "_tiers.admit", W("@tiers", "@seq", {}) },
  { nil, "_tiers.commit", A({}) }, { nil, "_tiers.release", A({}) }, { nil, "_tiers.take", A({}) },
  { nil, "_tiers.register", W("@tiers", {}, "@seq", 0, {}) }, { nil, "_tiers.let_go", W("@tiers", {}, 0) },
  { nil, "_tiers.complete", W("@tiers", {}) }, { nil, "_tiers.complete_all", W("@tiers") },
  { nil, "_tiers.plans", W("@tiers") }, { nil, "_tiers.presence", W("@tiers", "@h") },
  { nil, "_tiers.planned", W("@tiers", "G2", "@h") }, { nil, "_tiers.stats", W("@tiers") },
  { nil, "_tiers.ctx", W("@tiers") }, { nil, "_tiers.close", W("@spare_tiers") },
  -- sequences
  { "seq", "append", A(5) }, { "seq", "extend", A({ 5, 6 }) }, { "seq", "block_hash", A(0) }, { "seq", "block_size", A() },
  { "seq", "blocks", A() }, { "seq", "hash", A(0) }, { "seq", "hashes", A() }, { "seq", "partial", A() }, { "seq", "pop", A() },
  { "seq", "salt", A() }, { "seq", "sequence_hash", A(0) }, { "seq", "tokens", A() }, { "seq", "total_tokens", A() },
  { "seq", "truncate", A(12) }, { "seq", "unwind", A(0) },
  -- registry and handles
  { "reg", "check_presence", W({}, "@m") }, { "reg", "count", A() }, { "reg", "frequency", W("@h") },
  { "reg", "handle", W("@h2") }, { "reg", "has_frequency", A() }, { "reg", "is_registered", W("@h") },
  { "reg", "present", W("@h", "@m") }, { "reg", "touch", W("@h") },
  { "hd", "attach", A("name", 1), accepts = { [2] = "any value" } },
  { "hd", "attach_unique", A("uname", 1), accepts = { [2] = "any value" } }, { "hd", "get", A("name") },
  { "hd", "hash", A() }, { "hd", "is_registered", A() }, { "hd", "on_touch", A(function() end) }, { "hd", "touch", A() },
  { "hd", "release", A() },
  -- the manager
  { "m", "allocate", A(1) }, { "m", "allocate_set", A(1) }, { "m", "allocate_with_evictions", A(1) },
  { "m", "available", A() }, { "m", "block_size", A() }, { "m", "bytes", A() }, { "m", "inactive", A() },
  { "m", "match", W({ "@h" }) }, { "m", "match_scattered", W({ "@h" }) }, { "m", "match_set", W({ "@h" }) },
  { "m", "metrics", A() }, { "m", "name", A() }, { "m", "policy_errors", A() }, { "m", "register", W("@cb") },
  { "m", "register_all", W({ "@cb" }) }, { "m", "register_set", W("@set") }, { "m", "registry", A() },
  { "m", "reset_inactive", A() }, { "m", "reset_pool", A() }, { "m", "scan", W({ "@h" }) }, { "m", "tier", A() },
  { "m", "next_use", W({ "@h" }, { 1 }) },
  { "m", "total", A() }, { "m", "close", A() },
  -- guards
  { "mb", "block_size", A() }, { "mb", "complete", W("@seq", 0) }, { "mb", "id", A() }, { "mb", "stage", W("@h2", 4) },
  { "mb", "release", A() },
  { "cb", "hash", A() }, { "cb", "id", A() }, { "cb", "reset", A() }, { "cb", "release", A() },
  { "ib", "clone", A() }, { "ib", "downgrade", A() }, { "ib", "hash", A() }, { "ib", "id", A() }, { "ib", "manager", A() },
  { "ib", "set_evict_on_release", A(false) }, { "ib", "use_count", A() }, { "ib", "release", A() },
  { "wb", "hash", A() }, { "wb", "upgrade", A() }, { "wb", "release", A() },
  { "set", "append", W("@set") }, { "set", "block", A(1) }, { "set", "hash", A(1) }, { "set", "id", A(1) },
  { "set", "ids", A() }, { "set", "release", A() },
  -- assignments
  { "asg", "assign_pending", W("@seq"), accepts = { [1] = "a table of hashes" } }, { "asg", "assigned", A() }, { "asg", "assigned_count", A() },
  { "asg", "assigned_positions", A() }, { "asg", "clear", A() }, { "asg", "commit_staged", A() },
  { "asg", "contains", A(1) }, { "asg", "extend_assigned", W({ { 1, "@h" } }) }, { "asg", "extend_block_ids", A({ 1, 2 }) },
  { "asg", "get_assigned", A(0) }, { "asg", "get_at_position", A(0) }, { "asg", "get_pending_at_position", A(0) },
  { "asg", "get_staged", A(0) }, { "asg", "get_unassigned", A(0) }, { "asg", "is_empty", A() },
  { "asg", "next_position", A() }, { "asg", "offset", A() }, { "asg", "pending_positions", A() },
  { "asg", "pop_unassigned", A() }, { "asg", "stage_pending", W("@seq"), accepts = { [1] = "a table of hashes" } }, { "asg", "staged", A() },
  { "asg", "staged_count", A() }, { "asg", "staged_positions", A() }, { "asg", "take_staged", A() },
  { "asg", "unassigned", A() }, { "asg", "unassigned_count", A() },
  -- events, loop, publisher, sinks
  { "ev", "policy_errors", A() }, { "ev", "should_emit", W("@h") }, { "ev", "subscribe", A(4) },
  { "sub", "lost", A() }, { "sub", "pending", A() }, { "sub", "poll", A() }, { "sub", "close", A() },
  { "loop", "now", A() }, { "loop", "run", A() }, { "loop", "run_nowait", A() }, { "loop", "run_once", A() },
  { "loop", "sleep", A(0), accepts = { [1] = "seconds" }, skip = { ["2^53 (integer)"] = "sleeps for 2^53 s", ["2^53 (float)"] = "sleeps for 2^53 s" } },
  { "pub", "flush", A() }, { "pub", "stats", A() }, { "pub", "close", A() },
  { "fsink", "close", A() },
}

-- Calls that may block or end something the sweep goes on using.
local LAST = { close = true, release = true, run = true, run_once = true }
-- What an ended object still answers, and why.
local READABLE_AFTER_END = {
  ["pub:stats"] = "the final counters of a closed publisher",
  ["pub:flush"] = "nil, closed: a sink may close its own publisher (events_spec)",
}
-- Functions of the module that the sweep leaves to their own specs, and why.
local SKIPPED = { ["sink.nats"] = "needs a NATS server (nats_spec)", ["sub.nats"] = "needs a NATS server (nats_spec)" }
local CLASSES = {
  seq = "kvbm.Sequence", reg = "kvbm.Registry", hd = "kvbm.Handle", m = "kvbm.Manager", mb = "kvbm.MutableBlock",
  cb = "kvbm.CompleteBlock", ib = "kvbm.ImmutableBlock", wb = "kvbm.WeakBlock", set = "kvbm.BlockSet",
  asg = "kvbm.Assignments", ev = "kvbm.Events", sub = "kvbm.Subscription", loop = "kvbm.Loop", pub = "kvbm.Publisher",
  fsink = "kvbm.FileSink",
}

local function resolve(w, call)
  local obj, name = call[1], call[2]
  if obj then return w[obj][name], w[obj] end
  local f = kvbm
  for part in name:gmatch("[^.]+") do f = f[part] end
  return f
end

local function label(call) return (call[1] and (call[1] .. ":") or "kvbm.") .. call[2] end

-- Runs f(...) protected; a raise must be clean, a return is nil, err or a value.
local function probe(what, f, ...)
  local r = table.pack(pcall(f, ...))
  if not r[1] then
    assert_clean(what, r[2])
    return "raised"
  end
  if r[2] == nil and r.n >= 3 and getmetatable(r[3]) then
    assert_clean(what, r[3])
    return "failed"
  end
  return "returned"
end

-- The options of every constructor that takes a table: a valid table, and
-- for each option the values it may legitimately take besides its own type.
local OPTIONS = {
  { "manager", function(w) return { blocks = 8, block_size = 4, registry = kvbm.registry { frequency = "small" },
      name = "G9", backend = "multi_lru", thresholds = { 3, 8, 15 }, duplicates = "allow", reset_on_release = false } end,
    accepts = { backend = { ["a table"] = "a policy table" } } },
  { "registry", function(w) return { frequency = "small", events = kvbm.events() } end,
    accepts = { frequency = { ["true"] = "on (medium)" } } },
  { "events", function(w) return { policy = "all" } end,
    accepts = { policy = { ["a function"] = "a Lua policy", ["a table"] = "{min, max}" } } },
  { "publisher", function(w) return { events = w.ev, loop = w.loop, instance_id = 1, window = 0.01, max_batch = 16,
      subject = "s", sink = function() end, capacity = 64 } end,
    accepts = { instance_id = { ["a string"] = "a 16-byte id (length checked)" }, window = { ["1.5"] = "seconds", ["2^53 (integer)"] = "seconds (the window's range is issue 10 item 4)" },
      sink = { ["a function"] = "a Lua sink" } } },
}

describe("the misuse sweep", function()
  it("lists every function and method of the binding", function()
    local listed = {}
    for _, call in ipairs(CALLS) do listed[label(call)] = true end
    local reg = debug.getregistry()
    for key, mt in pairs(CLASSES) do
      local methods = assert(reg[mt], mt).__index
      for name in pairs(methods) do
        assert(listed[key .. ":" .. name], "not in the sweep: " .. mt .. ":" .. name)
      end
    end
    local function walk(t, prefix)
      for name, v in pairs(t) do
        local path = prefix .. name
        if type(v) == "function" and not SKIPPED[path] then
          assert(listed["kvbm." .. path], "not in the sweep: kvbm." .. path)
        elseif type(v) == "table" and prefix == "" then
          walk(v, path .. ".")
        end
      end
    end
    walk(kvbm, "")
  end)

  before_each(function() problems = {} end)

  it("refuses hostile arguments with clear errors and leaves the engine consistent", function()
    local w = world()
    local accepted = {}
    for _, call in ipairs(CALLS) do
      if not LAST[call[2]] then
        local f, self = resolve(w, call)
        local good = call[3](w)
        local n = math.max(good.n or #good, 1)
        for pos = 1, n do
          for _, hv in ipairs(HOSTILE) do
            if call.skip and call.skip[hv[1]] then goto next end
            local args = { table.unpack(good, 1, n) }
            local was = args[pos]
            args[pos] = hv[2]
            local what = string.format("%s with argument %d = %s", label(call), pos, hv[1])
            local outcome
            if self then
              outcome = probe(what, f, self, table.unpack(args, 1, n))
            else
              outcome = probe(what, f, table.unpack(args, 1, n))
            end
            -- an argument of another type (or a non-integral number where an
            -- integer goes) must never be taken silently
            local same_kind = math.type(was) == "integer" and IN_RANGE_FOR_INTEGERS[hv[1]]
              or type(was) == type(hv[2]) and math.type(was) == math.type(hv[2])
            local accepts = call.accepts and call.accepts[pos]
            if was ~= nil and not same_kind and not accepts and outcome == "returned" then accepted[#accepted + 1] = what end
            ::next::
          end
        end
        -- the wrong object as self
        if self then
          for _, hv in ipairs(HOSTILE) do probe(label(call) .. " on " .. hv[1], f, hv[2], table.unpack(good, 1, good.n or #good)) end
          probe(label(call) .. " on a registry", f, w.reg)
        end
        assert(kvbm._debug.check(w.m))
      end
    end
    assert.are.same({}, problems, "unclear errors")
    assert.are.same({}, accepted, "hostile arguments taken silently")
    local counts, msg = kvbm._debug.check(w.m)
    assert(counts, msg)
    free(w)
    collectgarbage("collect")
  end)

  it("refuses hostile option values of every constructor, naming the option", function()
    local w = world()
    local accepted = {}
    for _, ctor in ipairs(OPTIONS) do
      local f = kvbm[ctor[1]]
      local made = {}
      for name in pairs(ctor[2](w)) do
        for _, hv in ipairs(HOSTILE) do
          local opts = ctor[2](w)
          local was = opts[name]
          opts[name] = hv[2]
          local what = string.format("kvbm.%s{ %s = %s }", ctor[1], name, hv[1])
          local r = table.pack(pcall(f, opts))
          if not r[1] then
            assert_clean(what, r[2])
            if not (r[2]:find(name, 1, true) or r[2]:find("expected", 1, true)) then
              problems[#problems + 1] = what .. ": the message does not name the option: " .. r[2]
            end
          elseif r[2] ~= nil then
            made[#made + 1] = r[2]
            local same_kind = math.type(was) == "integer" and IN_RANGE_FOR_INTEGERS[hv[1]]
              or type(was) == type(hv[2]) and math.type(was) == math.type(hv[2])
            local ok_value = ctor.accepts and ctor.accepts[name] and ctor.accepts[name][hv[1]]
            if not same_kind and not ok_value then accepted[#accepted + 1] = what end
          end
        end
      end
      for _, obj in ipairs(made) do if obj.close then pcall(obj.close, obj) end end
    end
    assert.are.same({}, problems, "unclear errors")
    assert.are.same({}, accepted, "hostile option values taken silently")
    assert(kvbm._debug.check(w.m))
    free(w)
    collectgarbage("collect")
  end)

  it("refuses every method of a released or closed object, and release and close stay idempotent", function()
    local w = world()
    -- end everything that can end
    free(w)
    w.m:close()
    local silent = {}
    for _, call in ipairs(CALLS) do
      if call[1] and call[1] ~= "seq" and call[1] ~= "asg" and call[1] ~= "reg" and call[1] ~= "ev" and call[1] ~= "loop" then
        local f, self = resolve(w, call)
        local outcome = probe(label(call) .. " after release/close", f, self, table.unpack(call[3](w)))
        if outcome ~= "raised" and not LAST[call[2]] and not READABLE_AFTER_END[label(call)] then
          silent[#silent + 1] = label(call)
        end
        if LAST[call[2]] and call[2] ~= "run" and call[2] ~= "run_once" then
          local ok, err = pcall(f, self)
          assert(ok, label(call) .. " twice raised: " .. tostring(err))
        end
      end
    end
    assert.are.same({}, problems, "unclear errors")
    assert.are.same({}, silent, "methods that answered after release or close")
  end)
end)
