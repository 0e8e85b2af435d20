-- kvbm.wire: KvbmCacheEvents as rmp-serde MessagePack (events-sequence.md 1.3, 3.1, 3.5-3.6).
local kvbm = require "kvbm"
local helpers = require "helpers"

local wire = kvbm.wire

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function unhex(s)
  s = s:gsub("%s", "")
  return (s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

--- The u128 as 16 big-endian bytes from two 64-bit words.
local function u128(hi, lo) return string.pack(">I8I8", hi, lo) end

--- seqhash(p) of the catalogue: tokens 0..(p+1)*4, block size 4, salt 1337, block p.
local function seqhash(p) return kvbm.sequence(helpers.range((p + 1) * 4), 4, 1337):hash(p) end

local function assert_decode_error(bytes, why)
  local ok, t, err = pcall(wire.decode, bytes)
  assert.is_true(ok, "decode raised on bad bytes: " .. tostring(t))
  assert.is_nil(t, "decoded garbage: " .. hex(bytes))
  assert.are.equal("decode_error", err.code)
  assert.is_string(err.message)
  assert.is_true(math.type(err.offset) == "integer" and err.offset >= 0 and err.offset <= #bytes,
    "offset out of range: " .. tostring(err.offset))
  if why then assert.are.equal(why, err.message) end
  assert.matches("^decode_error: ", tostring(err))
  return err
end

local VECTOR_A = "9281a643726561746592c41000004080c1014181c200000000000000c41000444484c5054585c602030405060708"
  .. "c4100000000000000000deadbeefcafef00d"
local VECTOR_B = "92a853687574646f776ec41000000000000000000000000000003039"

describe("kvbm.wire", function()
  describe("golden vectors (scenario 26)", function()
    local a = kvbm.hash.new(0x0102030405060708, nil, 0)
    local b = kvbm.hash.new(0x1112131415161718, 0x0102030405060708, 1)

    it("A: Create of two hashes, instance 0xDEADBEEFCAFEF00D, byte for byte", function()
      assert.are.equal("00004080c1014181c200000000000000", hex(a))
      assert.are.equal("00444484c5054585c602030405060708", hex(b))
      local bytes = wire.encode { kind = "create", hashes = { a, b }, instance_id = 0xDEADBEEFCAFEF00D }
      assert.are.equal(VECTOR_A, hex(bytes))
      local t = assert(wire.decode(bytes))
      assert.are.same({ kind = "create", hashes = { a, b }, instance_id = u128(0, 0xDEADBEEFCAFEF00D) }, t)
      -- the same id as a 16-byte string encodes the same bytes
      assert.are.equal(bytes, wire.encode { kind = "create", hashes = { a, b }, instance_id = t.instance_id })
    end)

    it("B: Shutdown, instance 12345, is 28 bytes", function()
      local bytes = wire.encode { kind = "shutdown", instance_id = 12345 }
      assert.are.equal(28, #bytes)
      assert.are.equal(VECTOR_B, hex(bytes))
      assert.are.same({ kind = "shutdown", hashes = {}, instance_id = 12345 }, wire.decode(bytes))
      assert.are.equal(bytes, wire.encode { kind = "shutdown", hashes = {}, instance_id = 12345 })
    end)

    it("C: Remove of one (mode 1) hash, instance 12345, is 46 bytes", function()
      local cur, parent, pos = 0x1112131415161718, 0x0102030405060708, 300
      local h = kvbm.hash.new(cur, parent, pos)
      -- [mode 01][position:16][current:64][parent & (2^46-1)]
      local want_h = u128((1 << 62) | (pos << 46) | (cur >> 18), (cur << 46) | (parent & ((1 << 46) - 1)))
      assert.are.equal(hex(want_h), hex(h))
      assert.are.equal("404b044484c5054585c6030405060708", hex(h))
      local want = "\x92\x81\xa6Remove\x91\xc4\x10" .. h .. "\xc4\x10" .. u128(0, 12345)
      local bytes = wire.encode { kind = "remove", hashes = { h }, instance_id = 12345 }
      assert.are.equal(46, #bytes)
      assert.are.equal(hex(want), hex(bytes))
      assert.are.same({ kind = "remove", hashes = { h }, instance_id = 12345 }, wire.decode(bytes))
    end)
  end)

  describe("catalogue scenarios as msgpack round trips", function()
    it("1: Create(seqhash-of-[1,2,3,4]) and Remove(..) come back equal", function()
      local h = kvbm.sequence({ 1, 2, 3, 4 }, 4, 1337):hash(0)
      for _, kind in ipairs { "create", "remove" } do
        local batch = { kind = kind, hashes = { h }, instance_id = 0 }
        assert.are.same(batch, wire.decode(wire.encode(batch)))
      end
    end)

    it("2: Create of 2 hashes from tokens 1..8, instance 12345, comes back equal", function()
      local hs = kvbm.sequence(helpers.range(8, 1), 4, 1337):hashes()
      assert.are.equal(2, #hs)
      local batch = { kind = "create", hashes = hs, instance_id = 12345 }
      assert.are.same(batch, wire.decode(wire.encode(batch)))
    end)

    it("18: the publisher's two messages (Create of 2, then Shutdown) decode", function()
      local h10, h20 = seqhash(10), seqhash(20)
      local m1 = wire.decode(wire.encode { kind = "create", hashes = { h10, h20 }, instance_id = 12345 })
      local m2 = wire.decode(wire.encode { kind = "shutdown", instance_id = 12345 })
      assert.are.equal("create", m1.kind)
      assert.are.equal(2, #m1.hashes)
      assert.are.equal(12345, m1.instance_id)
      assert.are.same({ kind = "shutdown", hashes = {}, instance_id = 12345 }, m2)
    end)

    it("25: Create([seqhash(10)]), instance 12345 -> instance 12345 and 1 hash", function()
      local h = seqhash(10)
      assert.are.equal(10, kvbm.hash.position(h))
      local t = assert(wire.decode(wire.encode { kind = "create", hashes = { h }, instance_id = 12345 }))
      assert.are.equal(12345, t.instance_id)
      assert.are.equal(1, #t.hashes)
      assert.are.equal(h, t.hashes[1])
    end)
  end)

  describe("round trips", function()
    it("uses the smallest array header (fixarray, array16, array32)", function()
      local s = kvbm.sequence(helpers.range(4 * 70000), 4, 1337)
      local all = s:hashes()
      for _, case in ipairs { { 0, "\x90" }, { 1, "\x91" }, { 15, "\x9f" }, { 16, "\xdc\x00\x10" },
        { 65535, "\xdc\xff\xff" }, { 65536, "\xdd\x00\x01\x00\x00" } } do
        local n, header = case[1], case[2]
        local hs = table.move(all, 1, n, 1, {})
        local bytes = wire.encode { kind = "create", hashes = hs, instance_id = n }
        assert.are.equal(9 + #header + 18 * n + 18, #bytes, "n = " .. n)
        assert.are.equal(hex(header), hex(bytes:sub(10, 9 + #header)), "n = " .. n)
        local t = assert(wire.decode(bytes))
        assert.are.equal(n, #t.hashes)
        assert.are.same(hs, t.hashes)
        assert.are.equal(n, t.instance_id)
      end
    end)

    it("carries 128-bit instance ids", function()
      local h = seqhash(3)
      local cases = {
        { 0, 0 },
        { 1, 1 },
        { math.maxinteger, math.maxinteger },                 -- fits in 63 bits: an integer
        { -1, u128(0, -1) },                                  -- read as u64 0xffff...ff
        { math.mininteger, u128(0, math.mininteger) },        -- 2^63: a string
        { u128(0, 42), 42 },                                  -- a 16-byte string that fits: an integer
        { u128(1, 0), u128(1, 0) },                           -- 2^64
        { u128(-1, -1), u128(-1, -1) },                       -- 2^128 - 1
        { u128(0x0123456789abcdef, 0x0fedcba987654321), u128(0x0123456789abcdef, 0x0fedcba987654321) },
      }
      for _, c in ipairs(cases) do
        for _, kind in ipairs { "create", "shutdown" } do
          local batch = { kind = kind, hashes = kind == "create" and { h } or {}, instance_id = c[1] }
          local bytes = wire.encode(batch)
          assert.are.equal(hex("\xc4\x10" .. (type(c[2]) == "string" and c[2] or u128(0, c[2]))), hex(bytes:sub(-18)))
          local t = assert(wire.decode(bytes))
          assert.are.equal(c[2], t.instance_id)
          assert.are.equal(math.type(c[2]) or "string", math.type(t.instance_id) or type(t.instance_id))
          assert.are.equal(bytes, wire.encode(t))
        end
      end
    end)

    it("round-trips hashes of every mode", function()
      local hs = { kvbm.hash.new(1, nil, 0), kvbm.hash.new(2, 1, 255), kvbm.hash.new(3, 2, 256),
        kvbm.hash.new(4, 3, 65535), kvbm.hash.new(5, 4, 65536), kvbm.hash.new(-1, -1, kvbm.hash.MAX_POSITION) }
      assert.are.equal(2, kvbm.hash.mode(hs[6]))
      local batch = { kind = "remove", hashes = hs, instance_id = 7 }
      assert.are.same(batch, wire.decode(wire.encode(batch)))
    end)

    it("allocates nothing that outlives a call", function()
      helpers.assert_no_leaks(function()
        for _ = 1, 50 do
          wire.decode(wire.encode { kind = "create", hashes = { seqhash(1) }, instance_id = 1 })
          wire.decode("\x92\xdd\xff\xff\xff\xff")
        end
      end)
    end)
  end)

  describe("decode of bad bytes returns nil, err", function()
    it("fails cleanly on every truncation of vector A and B", function()
      for _, v in ipairs { VECTOR_A, VECTOR_B } do
        local bytes = unhex(v)
        for len = 0, #bytes - 1 do
          local err = assert_decode_error(bytes:sub(1, len), "truncated")
          assert.is_true(err.offset <= len)
        end
      end
    end)

    it("names what is wrong and where", function()
      local id = "\xc4\x10" .. u128(0, 12345)
      local cases = {
        { "", "truncated", 0 },
        { "\xc0", "expected an array of 2", 0 },
        { "\x91\xa8Shutdown", "expected an array of 2", 0 },
        { "\x93\xa8Shutdown" .. id .. "\xc0", "expected an array of 2", 0 },
        { "\x82\xa6events\xa8Shutdown", "expected an array of 2", 0 },
        { "\x92\x81\xa6Update\x90" .. id, "unknown event kind", 2 },
        { "\x92\x81\xa5Creat\x90" .. id, "unknown event kind", 2 },
        { "\x92\xa7Shutdow" .. id, "unknown event kind", 1 },
        { "\x92\x81\xa8Shutdown\xc0" .. id, "Shutdown is a unit variant (no map)", 2 },
        { "\x92\x82\xa6Create\x90\xa6Remove\x90" .. id, "expected a map of 1", 1 },
        { "\x92\x81\x00\x90" .. id, "expected a variant name (string)", 2 },
        { "\x92\xa6Create" .. id, "expected a map for Create/Remove", 1 },
        { "\x92\x81\xa6Create\x91\xc4\x0f" .. ("\0"):rep(15) .. id, "expected 16 bytes", 10 },
        { "\x92\x81\xa6Create\x91\xc4\x11" .. ("\0"):rep(17) .. id, "expected 16 bytes", 10 },
        { "\x92\x81\xa6Create\x91\xc4\x10\xc0" .. ("\0"):rep(15) .. id, "invalid hash (mode bits 11)", 10 },
        { "\x92\x81\xa6Create\xdd\xff\xff\xff\xff" .. ("\0"):rep(31), "truncated", 9 },
        { "\x92\x81\xa6Create\xdc\xff\xff" .. ("\0"):rep(40), "truncated", 9 },
        { "\x92\xa8Shutdown" .. id .. "\0", "trailing bytes", 28 },
        { "\x92\xa8Shutdown\xcd\x30\x39", "expected an instance id (bin 16)", 10 },
      }
      for _, c in ipairs(cases) do
        local err = assert_decode_error(c[1], c[2])
        assert.are.equal(c[3], err.offset, c[2] .. " in " .. hex(c[1]))
      end
    end)

    it("accepts what rmp-serde accepts: array16/array32 headers, arrays of 16 u8", function()
      local h = seqhash(5)
      local id = "\xc4\x10" .. u128(0, 9)
      local as_ints = "\xdc\x00\x10" .. h:gsub(".", function(c)
        return c:byte() < 128 and c or "\xcc" .. c
      end)
      local want = { kind = "create", hashes = { h }, instance_id = 9 }
      assert.are.same(want, wire.decode("\x92\x81\xa6Create\xdc\x00\x01\xc4\x10" .. h .. id))
      assert.are.same(want, wire.decode("\x92\x81\xa6Create\xdd\x00\x00\x00\x01\xc4\x10" .. h .. id))
      assert.are.same(want, wire.decode("\x92\x81\xa6Create\x91" .. as_ints .. id))
      assert.are.same(want, wire.decode("\x92\x81\xa6Create\x91\xc4\x10" .. h .. "\xdc\x00\x10" .. u128(0, 9)))
    end)

    it("never raises on random bytes (seeded)", function()
      math.randomseed(20240607)
      local seeds = { unhex(VECTOR_A), unhex(VECTOR_B),
        wire.encode { kind = "remove", hashes = kvbm.sequence(helpers.range(80), 4):hashes(), instance_id = -1 } }
      local decoded, failed = 0, 0
      for i = 1, 3000 do
        local bytes
        if i % 3 == 0 then
          local t = {}
          for j = 1, math.random(0, 60) do t[j] = string.char(math.random(0, 255)) end
          bytes = table.concat(t)
        else
          local b = { seeds[math.random(#seeds)]:byte(1, -1) }
          for _ = 1, math.random(1, 4) do
            local op, at = math.random(3), math.random(#b)
            if op == 1 then b[at] = math.random(0, 255)
            elseif op == 2 then b[at] = b[at] ~ (1 << math.random(0, 7))
            else table.remove(b, at) end
          end
          bytes = string.char(table.unpack(b))
        end
        local ok, t, err = pcall(wire.decode, bytes)
        assert.is_true(ok, "decode raised: " .. tostring(t))
        if t then
          decoded = decoded + 1
          assert.are.same(t, wire.decode(wire.encode(t)))
        else
          failed = failed + 1
          assert.are.equal("decode_error", err.code)
          assert.is_true(err.offset >= 0 and err.offset <= #bytes)
        end
      end
      assert.is_true(decoded > 0 and failed > 0)
    end)

    it("raises when the argument is not a string", function()
      for _, v in ipairs { 42, {}, true, print } do
        assert.has_error(function() wire.decode(v) end)
      end
      assert.has_error(function() wire.decode() end)
      assert.has_error(function() wire.decode(nil) end)
    end)
  end)

  describe("encode raises on programming errors", function()
    local h = seqhash(0)
    local bad = {
      { "not a table", 42 },
      { "no kind", { hashes = { h }, instance_id = 1 } },
      { "unknown kind", { kind = "update", hashes = { h }, instance_id = 1 } },
      { "capitalised kind", { kind = "Create", hashes = { h }, instance_id = 1 } },
      { "no hashes", { kind = "create", instance_id = 1 } },
      { "hashes not a table", { kind = "remove", hashes = h, instance_id = 1 } },
      { "a short hash", { kind = "create", hashes = { h:sub(1, 15) }, instance_id = 1 } },
      { "a non-string hash", { kind = "create", hashes = { 1 }, instance_id = 1 } },
      { "a hash with mode bits 11", { kind = "create", hashes = { "\xc0" .. ("\0"):rep(15) }, instance_id = 1 } },
      { "shutdown with hashes", { kind = "shutdown", hashes = { h }, instance_id = 1 } },
      { "no instance id", { kind = "shutdown" } },
      { "a 15-byte instance id", { kind = "shutdown", instance_id = ("\0"):rep(15) } },
      { "a fractional instance id", { kind = "shutdown", instance_id = 1.5 } },
      { "a boolean instance id", { kind = "shutdown", instance_id = true } },
    }
    for _, c in ipairs(bad) do
      it(c[1], function()
        assert.has_error(function() wire.encode(c[2]) end)
      end)
    end
  end)

  describe("cross-check with Python msgpack", function()
    local python = helpers.tool("KVBM_PYTHON", "/usr/bin/python3")
    if not python then return pending("python3 not found: the msgpack cross-check needs it") end

    local function py(script, ...)
      local args = {}
      for i, a in ipairs { ... } do args[i] = helpers.shell_quote(a) end
      local out, status = helpers.run(helpers.shell_quote(python) .. " -c " .. helpers.shell_quote(script) .. " "
        .. table.concat(args, " ") .. " 2>&1")
      assert.are.equal(0, status, "python (" .. python .. ") failed: " .. out)
      return (out:gsub("%s+$", ""))
    end

    it("python3 with msgpack runs (no silent skip)", function()
      assert.are.equal("ok", py("import msgpack; print('ok')"))
    end)

    it("Python decodes our bytes to [{'Create': [bytes...]}, bytes]", function()
      local hs = kvbm.sequence(helpers.range(20 * 4), 4, 1337):hashes() -- 20 hashes: array16
      local bytes = wire.encode { kind = "create", hashes = hs, instance_id = u128(0x0102, 0x0304) }
      local out = py([[
import sys, msgpack
m = msgpack.unpackb(bytes.fromhex(sys.argv[1]), raw=False)
assert isinstance(m, list) and len(m) == 2, m
ev, iid = m
assert isinstance(ev, dict) and list(ev) == ["Create"], ev
assert all(isinstance(h, bytes) and len(h) == 16 for h in ev["Create"])
assert isinstance(iid, bytes) and len(iid) == 16
print(iid.hex(), ",".join(h.hex() for h in ev["Create"]))
m = msgpack.unpackb(bytes.fromhex(sys.argv[2]), raw=False)
assert m == ["Shutdown", (12345).to_bytes(16, "big")], m
print("shutdown ok")
]], hex(bytes), VECTOR_B)
      local want = {}
      for i, h in ipairs(hs) do want[i] = hex(h) end
      assert.are.equal(hex(u128(0x0102, 0x0304)) .. " " .. table.concat(want, ",") .. "\nshutdown ok", out)
    end)

    it("we decode what Python encodes (bin and array-of-16-ints forms)", function()
      local h = seqhash(7)
      local out = py([[
import sys, msgpack
h = bytes.fromhex(sys.argv[1])
iid = (12345).to_bytes(16, "big")
print(msgpack.packb([{"Remove": [h]}, iid], use_bin_type=True).hex())
print(msgpack.packb([{"Create": [h] * 70000}, (2**128 - 1).to_bytes(16, "big")], use_bin_type=True).hex()[:40])
print(msgpack.packb([{"Create": [list(h), h]}, list(iid)], use_bin_type=True).hex())
print(msgpack.packb(["Shutdown", iid], use_bin_type=True).hex())
]], hex(h))
      local lines = {}
      for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(4, #lines, out)
      assert.are.same({ kind = "remove", hashes = { h }, instance_id = 12345 }, wire.decode(unhex(lines[1])))
      assert.are.equal(lines[1], hex(wire.encode { kind = "remove", hashes = { h }, instance_id = 12345 }),
        "Python and kvbm write the same bytes")
      assert.are.equal(lines[2], hex(wire.encode {
        kind = "create", hashes = (function() local t = {} for i = 1, 70000 do t[i] = h end return t end)(),
        instance_id = u128(-1, -1) }):sub(1, 40), "array32 header agrees with Python")
      assert.are.same({ kind = "create", hashes = { h, h }, instance_id = 12345 }, wire.decode(unhex(lines[3])))
      assert.are.same({ kind = "shutdown", hashes = {}, instance_id = 12345 }, wire.decode(unhex(lines[4])))
      assert.are.equal(VECTOR_B, lines[4])
    end)
  end)
end)

describe("doc/wire.md", function()
  local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
  end
  local doc = read(helpers.srcdir() .. "/doc/wire.md")
  local h1, h2 = kvbm.hash.new(0x1111, nil, 0), kvbm.hash.new(0x2222, 0x1111, 1)
  local example = wire.encode { kind = "create", hashes = { h1, h2 }, instance_id = 7 }

  it("shows the bytes the encoder writes for its worked example", function()
    local block = assert(doc:match("```hex\n(.-)```"), "no hex block")
    local bytes = {}
    for line in block:gmatch("[^\n]+") do
      bytes[#bytes + 1] = line:match("^([%x ]-)%s%s+%S") or line -- the hex before the comment
    end
    assert.are.equal(hex(example), table.concat(bytes):gsub("%s", ""))
    assert.matches("these " .. #example .. " bytes", doc, 1, true)
    assert.matches(kvbm.hash.hex(h1), doc, 1, true)
    assert.matches(kvbm.hash.hex(h2), doc, 1, true)
    assert.matches("shutdown from the same publisher is "
      .. #wire.encode { kind = "shutdown", instance_id = 7 } .. " bytes", doc, 1, true)
  end)

  it("has a Python decoder that reads the example and real batches", function()
    local python = os.getenv("KVBM_PYTHON")
    if not python or python == "" or python == "no" then
      pending("SKIP: python3 not found (KVBM_PYTHON): the decoder of doc/wire.md is not run")
      return
    end
    local code = assert(doc:match("```python\n(.-)```"), "no python block")
    local script, data = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    local function run(bytes)
      local g = assert(io.open(data, "wb"))
      g:write(bytes)
      g:close()
      return helpers.run(helpers.shell_quote(python) .. " " .. helpers.shell_quote(script) .. " "
        .. helpers.shell_quote(data) .. " 2>&1")
    end
    local out, status = run(example)
    assert.are.equal(0, status, out)
    assert.are.equal("Create 7\n0 " .. kvbm.hash.hex(h1) .. "\n1 " .. kvbm.hash.hex(h2) .. "\n", out)
    -- a remove of 20 hashes (array16) at large positions, a 128-bit instance id, a shutdown
    local hs, want = {}, {}
    for i = 1, 20 do hs[i] = kvbm.hash.new(i, i + 1, 70000 + i) end
    local id = string.rep("\1", 16)
    local id_int = "1334440654591915542993625911497130241" -- 0x0101...01
    out, status = run(wire.encode { kind = "remove", hashes = hs, instance_id = id })
    assert.are.equal(0, status, out)
    want[1] = "Remove " .. id_int
    for i = 1, 20 do want[#want + 1] = (70000 + i) .. " " .. kvbm.hash.hex(hs[i]) end
    assert.are.equal(table.concat(want, "\n") .. "\n", out)
    out, status = run(wire.encode { kind = "shutdown", instance_id = id })
    assert.are.equal(0, status, out)
    assert.are.equal("Shutdown " .. id_int .. "\n", out)
    -- and it refuses a truncated message
    out, status = run(example:sub(1, 30))
    assert.are_not.equal(0, status)
    assert.matches("truncated", out)
    os.remove(script)
    os.remove(data)
  end)
end)
