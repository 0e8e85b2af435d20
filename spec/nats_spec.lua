-- kvbm.sink.nats and kvbm.sub.nats against a real nats-server (started on
-- 127.0.0.1 by spec/tools/nats_server.lua, stopped in teardown).
local kvbm = require "kvbm"
local helpers = require "helpers"
local nats_server = require "tools.nats_server"

-- reported as skipped (TAP "ok # SKIP") when NATS is not built or no server
if not kvbm.features.nats then return pending("kvbm was built without NATS (configure --without-nats)") end
if not helpers.tool("KVBM_NATS_SERVER", "nats-server") then return pending("nats-server not found (apt: nats-server)") end

local wait_for, now = nats_server.wait_for, nats_server.now

-- hash of block p of tokens 0..4(p+1), block size 4, salt 1337
local function seqhash(p)
  return kvbm.sequence(helpers.range((p + 1) * 4), 4, 1337):hash(p)
end

-- Reads messages until n arrived or none comes within timeout; returns them.
local function read_raw(sub, n, timeout)
  local got = {}
  while #got < n do
    local m = sub:raw(timeout or 2)
    if not m then break end
    got[#got + 1] = m
  end
  return got
end

describe("kvbm.sink.nats / kvbm.sub.nats", function()
  local srv

  setup(function() srv = nats_server.start() end)
  teardown(function() if srv then srv:stop() end end)

  it("publishes raw bytes that a subscriber in the same process reads back", function()
    local sub = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.test.raw" })
    local sink = assert(kvbm.sink.nats{ url = srv.url })
    local payloads = { "hello", "", "\0\1\2\255 binary\0tail", string.rep("x", 100000) }
    for _, p in ipairs(payloads) do assert.is_true(sink:publish("kvbm.test.raw", p)) end
    assert.is_true(sink:flush())
    for _, p in ipairs(payloads) do
      local got, subject = sub:raw(2)
      assert.are.equal(p, got)
      assert.are.equal("kvbm.test.raw", subject)
    end
    -- not a KvbmCacheEvents message: next() reports it, with the bytes
    assert(sink:publish("kvbm.test.raw", "\1\2\3"))
    local batch, err = sub:next(2)
    assert.is_nil(batch)
    assert.are.equal("decode_error", err.code)
    assert.are.equal("\1\2\3", err.payload)
    assert.are.equal("kvbm.test.raw", err.subject)
    assert.is_number(err.offset)
    assert.matches("decode_error", tostring(err))
    local st = sink:stats()
    assert.are.same({ 0, 0, 0 }, { st.disconnects, st.reconnects, st.errors })
    assert.is_false(st.closed)
    sink:close()
    sub:close()
    sub:close()
    assert.error_matches(function() sub:next(0) end, "closed kvbm.NatsSubscription")
    assert.matches("kvbm.NatsSink", tostring(sink))
  end)

  it("decodes wire batches: kinds, hashes, 63-bit and 128-bit instance ids", function()
    local sub <close> = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.test.wire" })
    local sink <close> = assert(kvbm.sink.nats{ url = srv.url })
    local big = string.rep("\255", 8) .. "\0\0\0\0\0\0\0\7"
    local sent = {
      { kind = "create", hashes = { seqhash(0), seqhash(1), seqhash(2) }, instance_id = 12345 },
      { kind = "remove", hashes = { seqhash(1) }, instance_id = big },
      { kind = "shutdown", hashes = {}, instance_id = 12345 },
    }
    for _, b in ipairs(sent) do assert(sink:publish("kvbm.test.wire", kvbm.wire.encode(b))) end
    assert(sink:flush())
    for _, b in ipairs(sent) do
      local got = assert(sub:next(2))
      assert.are.equal(b.kind, got.kind)
      assert.are.same(b.hashes, got.hashes)
      assert.are.equal(b.instance_id, got.instance_id)
      assert.are.equal("kvbm.test.wire", got.subject)
      assert.are.equal(kvbm.wire.encode(b), got.payload)
    end
  end)

  it("reads what another kvbm process publishes", function()
    local n = 50
    local sub = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.test.two" })
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local kvbm = require "kvbm"
      local url, n = arg[1], tonumber(arg[2])
      local sink = assert(kvbm.sink.nats{ url = url })
      for i = 1, n do
        local h = kvbm.sequence({ i, i + 1, i + 2, i + 3 }, 4, 1337):hash(0)
        assert(sink:publish("kvbm.test.two",
          kvbm.wire.encode{ kind = "create", hashes = { h }, instance_id = 1000 + i }))
      end
      assert(sink:publish("kvbm.test.two", kvbm.wire.encode{ kind = "shutdown", instance_id = 99 }))
      assert(sink:flush())
      sink:close()
      print("published " .. n)
    ]])
    f:close()
    local cmd = helpers.shell_quote(helpers.builddir() .. "/kvbm") .. " " .. helpers.shell_quote(script)
      .. " " .. helpers.shell_quote(srv.url) .. " " .. n .. " 2>&1"
    local child = assert(io.popen(cmd, "r")) -- runs while we read
    local got = {}
    while true do
      local b, err = sub:next(5)
      assert.is_nil(err)
      if not b or b.kind == "shutdown" then
        got.shutdown = b
        break
      end
      got[#got + 1] = b
    end
    local out = child:read("a")
    local ok, how, status = child:close()
    os.remove(script)
    assert.is_true(ok, out .. " (" .. tostring(how) .. " " .. tostring(status) .. ")")
    assert.are.equal("published " .. n .. "\n", out)
    assert.are.equal(n, #got)
    for i, b in ipairs(got) do
      assert.are.equal("create", b.kind)
      assert.are.equal(1000 + i, b.instance_id)
      assert.are.same({ kvbm.sequence({ i, i + 1, i + 2, i + 3 }, 4, 1337):hash(0) }, b.hashes)
    end
    assert.are.equal(99, got.shutdown.instance_id)
    sub:close()
  end)

  it("sub:next and sub:raw time out with a plain nil", function()
    local sub <close> = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.test.quiet" })
    local t0 = now()
    local r = table.pack(sub:next(0.05))
    local dt = now() - t0
    assert.are.equal(1, r.n)
    assert.is_nil(r[1])
    assert.is_true(dt >= 0.04 and dt < 1, "waited " .. dt .. " s")
    r = table.pack(sub:raw(0))
    assert.are.equal(1, r.n)
    assert.is_nil(r[1])
    assert.error_matches(function() sub:next(-1) end, "timeout")
  end)

  it("rejects unknown options", function()
    assert.error_matches(function() kvbm.sink.nats{ url = srv.url, bogus = 1 } end, "unknown option 'bogus'")
    assert.error_matches(function() kvbm.sub.nats{ url = srv.url, subjetc = "x" } end, "unknown option 'subjetc'")
    assert.error_matches(function() kvbm.sink.nats{ url = 4222 } end, "url")
  end)

  it("a closed sink raises on publish and flush; close is idempotent", function()
    local sink = assert(kvbm.sink.nats{ url = srv.url })
    assert(sink:publish("kvbm.test.closed", "x"))
    sink:close()
    sink:close()
    assert.error_matches(function() sink:publish("kvbm.test.closed", "x") end, "closed kvbm.NatsSink")
    assert.error_matches(function() sink:flush() end, "closed kvbm.NatsSink")
    local st = sink:stats()
    assert.is_true(st.closed)
    assert.are.equal(0, st.errors)
    do
      local scoped <close> = assert(kvbm.sink.nats{ url = srv.url })
      sink = scoped
    end
    assert.is_true(sink:stats().closed, "__close closed it")
  end)

  it("keeps publishing through a server restart and delivers after the reconnect", function()
    -- a server of its own: this test stops it
    local own = nats_server.start()
    finally(function() own:stop() end)
    local subject = "kvbm.test.restart"
    local sub = assert(kvbm.sub.nats{ url = own.url, subject = subject })
    local sink = assert(kvbm.sink.nats{ url = own.url })
    for i = 1, 5 do assert(sink:publish(subject, "before " .. i)) end
    assert(sink:flush())
    assert.are.same({ "before 1", "before 2", "before 3", "before 4", "before 5" }, read_raw(sub, 5))

    own:stop()
    assert.truthy(wait_for(function() return sink:stats().disconnects >= 1 end, 3), "disconnect seen")
    -- while the server is down, publish is buffered by libnats and succeeds
    for i = 1, 20 do assert.is_true(sink:publish(subject, "during " .. i)) end

    own:start() -- same port
    assert.truthy(wait_for(function() return sink:stats().reconnects >= 1 end, 5), "reconnected")
    -- wait until the subscriber's connection is back too: probe until one arrives
    local seen_probe = wait_for(function()
      assert(sink:publish(subject, "probe"))
      sink:flush()
      local m = sub:raw(0.05)
      while m and m ~= "probe" do m = sub:raw(0.05) end
      return m == "probe"
    end, 5)
    assert.truthy(seen_probe, "the subscriber reconnected")
    while sub:raw(0.05) do end -- drop leftover probes and buffered messages

    for i = 1, 10 do assert.is_true(sink:publish(subject, "after " .. i)) end
    assert.is_true(sink:flush())
    local want = {}
    for i = 1, 10 do want[i] = "after " .. i end
    assert.are.same(want, read_raw(sub, 10))

    local st = sink:stats()
    assert.are.equal(1, st.disconnects)
    assert.are.equal(1, st.reconnects)
    sink:close()
    sub:close()
  end)

  it("counts an outage: the disconnect, the reconnect, what was sent while down and so may be lost", function()
    local own = nats_server.start() -- a server of its own: this test stops it
    finally(function() own:stop() end)
    local subject = "kvbm.test.outage"
    local sub = assert(kvbm.sub.nats{ url = own.url, subject = subject })
    local sink = assert(kvbm.sink.nats{ url = own.url })
    local ev, loop = kvbm.events(), kvbm.loop()
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 9, window = 0.001, subject = subject,
      sink = sink }
    local m = kvbm.manager{ blocks = 32, block_size = 4, registry = kvbm.registry{ events = ev }, backend = "lru" }
    local held, sent = {}, 0
    local function publish(n) -- n batches of one create each
      for _ = 1, n do
        local b = assert(m:allocate(1))[1]
        held[#held + 1] = m:register_all{ assert(b:stage(seqhash(sent))) }[1]
        sent = sent + 1
        loop:run()
      end
    end
    local received = {}
    local function receive(timeout)
      while true do
        local raw = sub:raw(timeout)
        if not raw then return end
        local b = kvbm.wire.decode(raw) -- nil for the probes below
        if b then for _, h in ipairs(b.hashes) do received[#received + 1] = h end end
      end
    end

    publish(5)
    assert(sink:flush())
    own:stop()
    assert.truthy(wait_for(function() return sink:stats().disconnects == 1 end, 3), "disconnect seen")
    publish(7)
    local down = sink:stats()
    assert.is_false(down.connected)
    assert.are.equal(12, down.published)
    assert.are.equal(7, down.published_while_down)
    assert.are.equal(7, down.unsent, "held in the reconnect buffer")
    assert.are.equal(0, down.dropped)

    own:start() -- same port
    assert.truthy(wait_for(function() return sink:stats().reconnects == 1 end, 5), "reconnected")
    local back = sink:stats()
    assert.is_true(back.connected)
    assert.are.equal(0, back.unsent, "the buffer went out after the reconnect")
    -- the subscriber reconnects on its own schedule: probe until it hears again
    assert.truthy(wait_for(function()
      assert(sink:publish(subject, "probe"))
      sink:flush()
      local got = sub:raw(0.05)
      while got and got ~= "probe" do
        local b = kvbm.wire.decode(got)
        if b then for _, h in ipairs(b.hashes) do received[#received + 1] = h end end
        got = sub:raw(0.05)
      end
      return got == "probe"
    end, 5), "the subscriber reconnected")
    receive(0.1)
    local before_after = #received
    publish(3)
    assert(sink:flush())
    receive(0.5)

    local st = sink:stats()
    assert.are.equal(1, st.disconnects)
    assert.are.equal(1, st.reconnects)
    assert.are.equal(7, st.published_while_down)
    assert.are.equal(0, st.dropped)
    assert.are.equal(3, #received - before_after, "everything after both reconnected arrived")
    local missing = sent - #received
    assert.is_true(missing >= 0 and missing <= st.published_while_down,
      ("%d of %d hashes missing, %d were sent while down"):format(missing, sent, st.published_while_down))
    -- the publisher alone cannot tell: to it every batch went out
    local ps = pub:stats()
    assert.are.equal(sent, ps.events)
    assert.are.equal(0, ps.errors)
    assert.are.equal(0, ps.lost)
    for _, ib in ipairs(held) do ib:release() end
    assert(pub:close())
    sink:close()
    sub:close()
  end)

  it("counts what a full reconnect buffer drops and what a close while down loses", function()
    local own = nats_server.start()
    finally(function() own:stop() end)
    local sink = assert(kvbm.sink.nats{ url = own.url })
    own:stop()
    assert.truthy(wait_for(function() return sink:stats().disconnects == 1 end, 3), "disconnect seen")
    local big, accepted, refused = string.rep("x", 1000000), 0, 0 -- the buffer holds 8 MiB
    for _ = 1, 12 do
      local ok, err = sink:publish("kvbm.test.full", big)
      if ok then accepted = accepted + 1 else refused = refused + 1; assert.are.equal("sink_error", err.code) end
    end
    assert.is_true(refused > 0 and accepted > 0, accepted .. " accepted, " .. refused .. " refused")
    local st = sink:stats()
    assert.are.equal(refused, st.dropped)
    assert.are.equal(accepted, st.unsent)
    assert.are.equal(accepted, st.published_while_down)
    sink:close() -- still down: the buffered messages are lost
    local final = sink:stats()
    assert.is_true(final.closed)
    assert.are.equal(accepted, final.unsent, "the counters at close say what was lost")
  end)

  it("connection refused: nil, err with code sink_error, no crash", function()
    -- a port nobody listens on: where a server just stopped
    local gone = nats_server.start()
    local url = gone.url
    gone:stop()
    local sink, err = kvbm.sink.nats{ url = url }
    assert.is_nil(sink)
    assert.are.equal("sink_error", err.code)
    assert.are.equal(url, err.url)
    assert.matches("nats connect", err.message, 1, true)
    assert.matches(url, err.message, 1, true)
    assert.matches("sink_error", tostring(err))
    local sub, serr = kvbm.sub.nats{ url = url }
    assert.is_nil(sub)
    assert.are.equal("sink_error", serr.code)
    local bad, berr = kvbm.sink.nats{ url = "nats://127.0.0.1:notaport" }
    assert.is_nil(bad)
    assert.are.equal("sink_error", berr.code)
  end)

  it("carries a publisher's batches end to end", function()
    local sub <close> = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.events" })
    local ev, loop = kvbm.events(), kvbm.loop()
    local sink = assert(kvbm.sink.nats{ url = srv.url })
    local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 7, window = 0.01, sink = sink }
    local reg = kvbm.registry{ events = ev }
    local m = kvbm.manager{ blocks = 4, block_size = 4, registry = reg, backend = "lru" }
    local hs = { seqhash(1), seqhash(0) }
    local blocks = assert(m:allocate(2))
    local ibs = m:register_all{ assert(blocks[1]:stage(hs[1])), assert(blocks[2]:stage(hs[2])) }
    loop:run() -- returns once the batch went to the sink
    assert(sink:flush())
    local b = assert(sub:next(2))
    assert.are.equal("create", b.kind)
    assert.are.equal(7, b.instance_id)
    assert.are.same({ seqhash(0), seqhash(1) }, b.hashes, "sorted by position")
    assert.are.equal("kvbm.events", b.subject)
    for _, ib in ipairs(ibs) do ib:release() end
    assert(pub:close())
    -- nothing was removed from the cache yet: the next message is Shutdown
    local s = assert(sub:next(2))
    assert.are.equal("shutdown", s.kind)
    assert.are.equal(7, s.instance_id)
    assert.are.same({}, s.hashes)
    sink:close()
    -- a publisher still holding a closed sink gets an error, not a crash
    local pub2 = kvbm.publisher{ events = ev, loop = loop, instance_id = 8, sink = sink }
    local ok, err = pub2:close()
    assert.is_nil(ok)
    assert.is_table(err)
  end)

  it("kvbm sim --nats publishes the simulator's events", function()
    local sub = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.events" })
    local cmd = helpers.shell_quote(helpers.builddir() .. "/kvbm") .. " sim --requests 30 --g1 128 --g2 256 --quiet"
      .. " --instance-id 77 --nats " .. helpers.shell_quote(srv.url) .. " 2>&1"
    local out, status = helpers.run(cmd)
    assert.are.equal(0, status, out)
    local published = tonumber(out:match("events: (%d+) published"))
    assert.is_true(published > 0, out)
    assert.matches("nats: 0 disconnects, 0 reconnects; %d+ messages, 0 sent while disconnected", out)
    local creates, removes, seen, shutdown = 0, 0, 0, false
    while not shutdown do
      local b = assert(sub:next(5), "the simulator's Shutdown never arrived")
      assert.are.equal(77, b.instance_id)
      if b.kind == "create" then creates = creates + #b.hashes end
      if b.kind == "remove" then removes = removes + #b.hashes end
      seen = seen + #b.hashes
      shutdown = b.kind == "shutdown"
    end
    assert.are.equal(published, seen, "every published event arrived")
    assert.is_true(creates > 0 and creates >= removes)
    sub:close()
  end)

  it("a sink keeps its state in kvbm's allocator and gives it back at close", function()
    collectgarbage(); collectgarbage()
    local before = kvbm._debug.live()
    local sink = assert(kvbm.sink.nats{ url = srv.url })
    assert.are.equal(before.allocations + 1, kvbm._debug.live().allocations)
    sink:close()
    assert.are.same(before, kvbm._debug.live())
  end)

  it("objects left to the collector close themselves", function()
    for _ = 1, 3 do
      local sink = assert(kvbm.sink.nats{ url = srv.url })
      local sub = assert(kvbm.sub.nats{ url = srv.url, subject = "kvbm.test.gc" })
      assert(sink:publish("kvbm.test.gc", "x"))
      assert(sink:flush())
      assert.are.equal("x", sub:raw(2))
    end
    collectgarbage("collect")
    collectgarbage("collect")
    local sink = assert(kvbm.sink.nats{ url = srv.url })
    assert.is_true(sink:flush())
    sink:close()
  end)
end)
