-- Events: the events manager, subscribers, the libev-driven publisher and
-- its sinks (scenarios 1-26 of the events catalogue, with a real loop).
local kvbm = require "kvbm"
local helpers = require "helpers"
local H = kvbm.hash

-- hash of block p of tokens 0..4(p+1), block size 4, salt 1337
local function seqhash(p)
  return kvbm.sequence(helpers.range((p + 1) * 4), 4, 1337):hash(p)
end

-- a registry with events and an LRU manager of n blocks (block size 4)
local function setup_mgr(ev, n)
  local reg = kvbm.registry{ events = ev }
  return kvbm.manager{ blocks = n or 16, block_size = 4, registry = reg, backend = "lru" }, reg
end

-- registers hashes (one block each) and returns the immutable blocks
local function register(m, hashes)
  local blocks = assert(m:allocate(#hashes))
  local staged = {}
  for i, h in ipairs(hashes) do staged[i] = assert(blocks[i]:stage(h)) end
  return m:register_all(staged)
end

local function drain(sub)
  local out = {}
  while true do
    local kind, h = sub:poll()
    if not kind then return out end
    out[#out + 1] = { kind, h }
  end
end

local function positions(batch)
  local p = {}
  for i, h in ipairs(batch.hashes) do p[i] = H.position(h) end
  return p
end

describe("kvbm.events", function()
  it("#1 #2 #3 create on registration, remove when the last reference goes", function()
    local ev = kvbm.events()
    local sub = ev:subscribe()
    local m = setup_mgr(ev, 4)
    local h = seqhash(0)
    local ib = register(m, { h })[1]
    assert.are.same({ { "create", h } }, drain(sub))
    ib:release()
    assert.are.same({}, drain(sub), "an inactive block is still registered")
    assert(m:reset_inactive())
    assert.are.same({ { "remove", h } }, drain(sub))
  end)

  it("#4-#7 power-of-two policies", function()
    local ev = kvbm.events{ policy = "power_of_two" }
    for p = 4, 16 do assert.is_true(ev:should_emit(H.new(1, 2, 1 << p))) end
    for _, p in ipairs { 15, 17, 31, 33, 63, 65, 100, 1000, 10000, 1, 2, 4, 8, 0, 1 << 17 } do
      assert.is_false(ev:should_emit(H.new(1, 2, p)), "position " .. p)
    end
    local r = kvbm.events{ policy = { min = 32, max = 128 } }
    assert.is_true(r:should_emit(H.new(1, 2, 32)))
    assert.is_true(r:should_emit(H.new(1, 2, 128)))
    assert.is_false(r:should_emit(H.new(1, 2, 16)))
    assert.is_false(r:should_emit(H.new(1, 2, 256)))
    assert.is_true(kvbm.events{ policy = "all" }:should_emit(H.new(1, 2, 17)), "#17")
  end)

  it("#13 #14 #15 #16 a policy filters creates; only emitted registrations get removes", function()
    local ev = kvbm.events{ policy = "power_of_two" }
    local a, b = ev:subscribe(), ev:subscribe()
    local m = setup_mgr(ev, 4)
    local ibs = register(m, { H.new(1, 2, 16), H.new(3, 4, 17), H.new(5, 6, 64) })
    local got = drain(a)
    assert.are.same({ 16, 64 }, { H.position(got[1][2]), H.position(got[2][2]) })
    assert.are.equal(2, #drain(b), "#16 both subscribers see the creates")
    for _, ib in ipairs(ibs) do ib:release() end
    assert(m:reset_inactive())
    local removed = {}
    for _, e in ipairs(drain(a)) do removed[#removed + 1] = e[1] .. H.position(e[2]) end
    table.sort(removed)
    assert.are.same({ "remove16", "remove64" }, removed)
  end)

  it("runs a Lua function policy on new registrations", function()
    local seen = 0
    local ev = kvbm.events{ policy = function(h) seen = seen + 1; return H.position(h) % 2 == 0 end }
    local sub = ev:subscribe()
    local m = setup_mgr(ev, 8)
    local ibs = register(m, { H.new(1, 2, 0), H.new(3, 4, 1), H.new(5, 6, 2) })
    assert.are.equal(3, seen)
    assert.are.equal(2, #drain(sub))
    local ev2 = kvbm.events{ policy = function() error("policy bug") end }
    local sub2 = ev2:subscribe()
    local m2 = setup_mgr(ev2, 2)
    local ib = register(m2, { H.new(7, 8, 0) })[1]
    assert.are.same({}, drain(sub2), "a raising policy emits nothing")
    assert.are.equal(1, ev2:policy_errors())
    assert.truthy(kvbm._debug.check(m2))
    ib:release()
    for _, x in ipairs(ibs) do x:release() end
  end)

  it("a Lua events policy that calls back into a manager is refused, and counted", function()
    local m
    local ev = kvbm.events{ policy = function(h) m:allocate(1); return true end }
    local sub = ev:subscribe()
    m = setup_mgr(ev, 4)
    local ib = register(m, { H.new(1, 2, 0) })[1]
    assert.are.equal(1, ev:policy_errors())
    assert.are.same({}, drain(sub), "the failing policy emitted nothing")
    assert.are.equal(3, m:available(), "the re-entrant allocate did not happen")
    assert.truthy(kvbm._debug.check(m))
    ib:release()
  end)

  it("keeps a failing events policy's last error, with its traceback, naming the events policy", function()
    local m
    local ev = kvbm.events{ policy = function(h) m:allocate(1); return true end }
    assert.are.equal(0, ev:policy_errors())
    assert.is_nil(select(2, ev:policy_errors()), "no error yet")
    m = setup_mgr(ev, 4)
    local ib = register(m, { H.new(1, 2, 0) })[1]
    local count, last = ev:policy_errors()
    assert.are.equal(1, count)
    assert.matches("^events policy: .*kvbm: re%-entrant call: the events policy of this registry is running", last)
    assert.not_matches("eviction", last)
    assert.matches("stack traceback:", last)
    ib:release()
    local ev2 = kvbm.events{ policy = function() error({}) end }
    local m2 = setup_mgr(ev2, 2)
    local ib2 = register(m2, { H.new(7, 8, 0) })[1]
    assert.matches("^events policy: %(error object is a table value%)", select(2, ev2:policy_errors()))
    ib2:release()
  end)

  it("a late subscriber misses earlier events; a slow one loses the oldest", function()
    local ev = kvbm.events()
    local early = ev:subscribe(2)
    local m = setup_mgr(ev, 8)
    local first = register(m, { H.new(1, 2, 0) })
    local late = ev:subscribe()
    local rest = register(m, { H.new(3, 4, 1), H.new(5, 6, 2) })
    assert.are.equal(2, #drain(late))
    assert.are.equal(2, early:pending())
    assert.are.equal(1, early:lost())
    local e = drain(early)
    assert.are.equal(1, H.position(e[1][2]), "the oldest event was dropped")
    first[1]:release()
    for _, x in ipairs(rest) do x:release() end
  end)

  it("rejects bad options", function()
    assert.error_matches(function() kvbm.events{ policy = "some" } end,
      "option 'policy' (or a function, or {min=, max=}) must be one of all, power_of_two, got 'some'", nil, true)
    assert.error_matches(function() kvbm.events{ polcy = "all" } end, "unknown option")
    assert.error_matches(function() kvbm.events{ policy = { min = 10, max = 5 } } end, "min <= max")
    assert.error_matches(function() kvbm.events():subscribe(0) end, "capacity")
  end)
end)

describe("kvbm.publisher #loop", function()
  local function collect()
    local batches = {}
    return batches, function(b) batches[#batches + 1] = b end
  end

  it("#18 #21 batches creates within the window, Shutdown at close", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local batches, sink = collect()
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 12345, window = 0.05, sink = sink }
    local m = setup_mgr(ev, 8)
    local hs = {}
    for p = 4, 0, -1 do hs[#hs + 1] = seqhash(p) end
    local ibs = register(m, hs)
    local t0 = loop:now()
    loop:run() -- returns once the batch has been published
    assert.is_true(loop:now() - t0 >= 0.04, "flushed by the window, not before")
    assert.are.equal(1, #batches)
    assert.are.equal("create", batches[1].kind)
    assert.are.same({ 0, 1, 2, 3, 4 }, positions(batches[1]))
    assert.are.equal(12345, batches[1].instance_id)
    assert.are.equal("kvbm.events", batches[1].subject)
    assert.are.same(batches[1], (function()
      local d = assert(kvbm.wire.decode(batches[1].payload))
      d.payload, d.subject = batches[1].payload, batches[1].subject
      return d
    end)())
    for _, ib in ipairs(ibs) do ib:release() end
    assert(m:reset_inactive())
    loop:run()
    assert.are.equal("remove", batches[2].kind)
    assert.are.same({ 4, 3, 2, 1, 0 }, positions(batches[2]))
    assert(pub:close())
    assert.are.equal("shutdown", batches[3].kind)
    assert.are.equal(3, #batches)
    assert(pub:close(), "close is idempotent")
  end)

  it("#22 #10 a create/remove switch flushes at once", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local batches, sink = collect()
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, window = 60, sink = sink }
    local m = setup_mgr(ev, 1)
    local a = register(m, { H.new(1, 2, 10) })[1]
    a:release()
    local b = register(m, { H.new(3, 4, 20) })[1] -- evicts 10: remove, then create 20
    loop:run_nowait()
    assert.are.same({ "create", "remove" }, { batches[1].kind, batches[2].kind })
    assert(pub:close())
    assert.are.same({ "create", "shutdown" }, { batches[3].kind, batches[4].kind })
    assert.are.same({ 20 }, positions(batches[3]))
    b:release()
  end)

  it("#23 #11 the batch is published when it reaches max_batch", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local batches, sink = collect()
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, window = 60, max_batch = 3, sink = sink }
    local m = setup_mgr(ev, 8)
    local ibs = register(m, { H.new(1, 1, 0), H.new(2, 2, 1), H.new(3, 3, 2), H.new(4, 4, 3), H.new(5, 5, 4) })
    loop:run_nowait()
    assert.are.equal(1, #batches)
    assert.are.equal(3, #batches[1].hashes)
    assert(pub:close())
    assert.are.equal(2, #batches[2].hashes)
    for _, ib in ipairs(ibs) do ib:release() end
  end)

  it("#12 no event waits longer than one window once the loop runs", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local batches, sink = collect()
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, window = 0.05, sink = sink }
    local m = setup_mgr(ev, 2)
    local ib = register(m, { H.new(1, 1, 10) })[1]
    local t0 = loop:now()
    loop:run_once()
    loop:run_once()
    assert.are.equal(1, #batches)
    assert.is_true(loop:now() - t0 < 0.1)
    loop:sleep(0.02)
    ib:release()
    pub:close()
  end)

  it("a raising sink is counted and reported, the publisher keeps going", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local calls = 0
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, window = 0.001,
      sink = function(b) calls = calls + 1; if calls == 1 then error("sink down") end end }
    local m = setup_mgr(ev, 4)
    local a = register(m, { H.new(1, 1, 0) })[1]
    loop:run()
    local b = register(m, { H.new(2, 2, 0) })[1]
    loop:run()
    local st = pub:stats()
    assert.are.equal(2, calls)
    assert.are.equal(1, st.errors)
    assert.are.equal(1, st.batches)
    assert.matches("sink down", st.last_error)
    assert(pub:close())
    a:release(); b:release()
  end)

  -- a publisher whose sink does `inner(pub)` on its first call, with two
  -- creates pending; returns the sink's calls and the publisher
  local function reentering(inner)
    local ev, loop = kvbm.events(), kvbm.loop()
    local m = setup_mgr(ev, 8)
    local calls, pub = {}, nil
    pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 7, window = 0.001,
      sink = function(b)
        calls[#calls + 1] = b.kind
        if #calls == 1 then
          if inner == "drop" then -- the last reference goes, then a full collection
            pub = nil
            collectgarbage(); collectgarbage()
          else
            inner(pub)
          end
        end
      end }
    local ibs = register(m, { seqhash(0), seqhash(1) })
    for _, ib in ipairs(ibs) do ib:release() end
    loop:run() -- the timer publishes the batch: the sink re-enters
    return calls, pub, m, loop
  end

  it("a sink may close its own publisher while the loop publishes", function()
    local inner_ok
    local calls, pub, m, loop = reentering(function(p) inner_ok = p:close() end)
    assert.is_true(inner_ok)
    assert.are.same({ "create", "shutdown" }, calls)
    assert.is_true(pub:close(), "close again: idempotent")
    assert.are.equal("closed", select(2, pub:flush()).code)
    assert(m:reset_inactive()) -- removes after close are not published
    loop:run()
    assert.are.same({ "create", "shutdown" }, calls)
    assert.truthy(kvbm._debug.check(m))
  end)

  it("a sink may drop and collect its own publisher while the loop publishes", function()
    local calls, pub, m = reentering("drop")
    assert.is_nil(pub)
    assert.are.same({ "create" }, calls, "the publisher outlived its sink call")
    collectgarbage(); collectgarbage() -- now it goes, and closes on its way
    assert.are.same({ "create", "shutdown" }, calls)
    assert.truthy(kvbm._debug.check(m))
  end)

  it("a sink may flush its own publisher while the loop publishes", function()
    local inner_ok
    local calls, pub = reentering(function(p) inner_ok = p:flush() end)
    assert.is_true(inner_ok)
    assert.are.same({ "create" }, calls)
    assert(pub:close())
    assert.are.same({ "create", "shutdown" }, calls)
  end)

  it("refuses a window, max_batch, capacity or subject out of range, naming it", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local function config(extra)
      local t = { events = ev, loop = loop, instance_id = 1, sink = function() end }
      for k, v in pairs(extra) do t[k] = v end
      return t
    end
    local cases = {
      { { window = math.huge }, "window must be a number of seconds in %(0, 3600%] %(got inf%)" },
      { { window = 1e300 }, "window must be .* %(got 1e%+300%)" },
      { { window = 0 / 0 }, "window must be .* %(got %-?nan%)" },
      { { window = -1 }, "window must be .* %(got %-1%)" },
      { { window = 0 }, "window must be .* %(got 0%)" },
      { { window = 3601 }, "window must be .* %(got 3601%)" },
      { { window = "0.1" }, "window must be .* %(got 0.1%)" },
      { { max_batch = 0 }, "max_batch must be an integer in 1..1048576 %(got 0%)" },
      { { max_batch = -1 }, "max_batch must be .* %(got %-1%)" },
      { { max_batch = 1.5 }, "max_batch must be .* %(got 1.5%)" },
      { { max_batch = (1 << 20) + 1 }, "max_batch must be .* %(got 1048577%)" },
      { { max_batch = 2^53 }, "max_batch must be .*" },
      { { capacity = 0 }, "capacity must be an integer in 1..16777216 %(got 0%)" },
      { { capacity = math.huge }, "capacity must be .* %(got inf%)" },
      { { subject = "" }, "subject must be 1..127 characters" },
      { { subject = "kvbm events" }, "subject must be .* %(got kvbm events%)" },
      { { subject = "kvbm.*" }, "subject must be" },
      { { subject = string.rep("s", 128) }, "subject must be" },
      { { subject = 42 }, "subject must be .* %(got 42%)" },
      { { instance_id = -1 }, "instance_id must be an integer in 0..2^63%-1 or a 16%-byte string %(got %-1%)" },
      { { instance_id = 1.5 }, "instance_id must be .* %(got 1.5%)" },
      { { loop = false }, "loop is required %(got false%)" },
      { { events = {} }, "events is required %(got table" },
      { { sink = false }, "sink must be a function, kvbm.sink.file%(...%) or kvbm.sink.nats{...} %(got false%)" },
    }
    helpers.assert_no_leaks(function()
      for _, c in ipairs(cases) do
        -- doc/errors.md: a refused value is nil, err; a wrong type raises
        local ok, pub, err = pcall(kvbm.publisher, config(c[1]))
        if ok then
          assert.is_nil(pub, c[2])
          assert.are.equal("invalid_config", err.code)
          err = err.message
        else
          err = pub
        end
        assert.matches("^kvbm.publisher: " .. c[2], err)
        assert.not_matches("levents", err)
        assert.not_matches("bad argument", err)
      end
    end)
    -- the limits themselves are accepted
    local pub = kvbm.publisher(config{ window = 3600, max_batch = 1 << 20, capacity = 1,
      subject = string.rep("s", 127) })
    assert(pub:close())
  end)

  it("a window of math.huge no longer makes loop:run() hang: it is refused", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local pub, err = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, window = math.huge, sink = function() end }
    assert.is_nil(pub)
    assert.are.equal("invalid_config", err.code)
    local m = setup_mgr(ev, 4)
    local ib = register(m, { seqhash(0) })[1]
    local t0 = loop:now()
    loop:run() -- nothing is left that could keep it running
    assert.is_true(loop:now() - t0 < 1)
    ib:release()
  end)

  it("#25 #26 a file sink writes length-prefixed messages kvbm.wire reads back", function()
    local path = os.tmpname()
    os.remove(path)
    local ev, loop = kvbm.events(), kvbm.loop()
    local sink = assert(kvbm.sink.file(path))
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 12345, sink = sink }
    local m = setup_mgr(ev, 4)
    local ib = register(m, { seqhash(10) })[1]
    loop:run()
    assert(pub:close())
    sink:close()
    local msgs = assert(kvbm.sink.read_file(path))
    assert.are.equal(2, #msgs)
    local first = assert(kvbm.wire.decode(msgs[1]))
    assert.are.equal("create", first.kind)
    assert.are.equal(12345, first.instance_id)
    assert.are.same({ seqhash(10) }, first.hashes)
    assert.are.equal("shutdown", assert(kvbm.wire.decode(msgs[2])).kind)
    -- a truncated file is reported, not misread
    local f = assert(io.open(path, "ab"))
    f:write("\0\0\0\99abc")
    f:close()
    local none, err = kvbm.sink.read_file(path)
    assert.is_nil(none)
    assert.are.equal("decode_error", err.code)
    os.remove(path)
    ib:release()
  end)

  it("rejects bad configuration", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    -- a value the publisher refuses is data (doc/errors.md): nil, invalid_config, one message per option
    local refused = {
      { { events = ev, loop = loop, sink = print }, "kvbm.publisher: instance_id is required" },
      { { events = ev, loop = loop, instance_id = 1, sink = print, window = 0 },
        "kvbm.publisher: window must be a number of seconds in (0, 3600] (got 0)" },
      { { events = ev, loop = loop, instance_id = 1, sink = print, max_batch = 0 },
        "kvbm.publisher: max_batch must be an integer in 1..1048576 (got 0)" },
      { { events = ev, loop = loop, instance_id = 1, sink = print, capacity = -1 },
        "kvbm.publisher: capacity must be an integer in 1..16777216 (got -1)" },
    }
    for _, c in ipairs(refused) do
      local pub, err = kvbm.publisher(c[1])
      assert.is_nil(pub)
      assert.are.equal("invalid_config", err.code)
      assert.are.equal(c[2], err.message)
      assert.are.equal("invalid_config: " .. c[2], tostring(err))
    end
    -- wrong types are misuse: they raise
    assert.error_matches(function() kvbm.publisher{ events = ev, loop = loop, instance_id = 1, sink = 42 } end, "sink must be")
    assert.has_error(function() kvbm.publisher{ events = ev, loop = loop, instance_id = 1, sink = print, window = "x" } end)
    assert.error_matches(function() kvbm.publisher{ events = ev, loop = loop, instance_id = "short", sink = print } end, "instance_id")
    local none, err = kvbm.sink.file("/nonexistent/dir/x")
    assert.is_nil(none)
    assert.are.equal("sink_error", err.code)
  end)

  it("accepts a 128-bit instance id", function()
    local ev, loop = kvbm.events(), kvbm.loop()
    local batches, sink = collect()
    local id = string.rep("\255", 16)
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = id, sink = sink }
    assert(pub:close())
    assert.are.equal(id, batches[1].instance_id)
  end)

  it("leaves no C memory behind", function()
    helpers.assert_no_leaks(function()
      local ev, loop = kvbm.events(), kvbm.loop()
      local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 1, sink = function() end }
      local m = setup_mgr(ev, 4)
      local ibs = register(m, { H.new(1, 1, 0), H.new(2, 2, 1) })
      loop:run()
      for _, ib in ipairs(ibs) do ib:release() end
      pub:close()
      m:close()
    end)
  end)
end)
