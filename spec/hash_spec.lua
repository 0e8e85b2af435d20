-- kvbm.hash: every vector of tokens-hashing.md 5.1 and 5.3 (layout B).
local kvbm = require "kvbm"
local helpers = require "helpers"
local H = kvbm.hash

-- tonumber(hex, 16) wraps to the 64-bit pattern we want (negative above 2^63).
local function u64(hex) return tonumber(hex, 16) end

-- An integer read as unsigned, in decimal (the crate's constants are u64).
local function udec(v)
  if v >= 0 then return tostring(v) end
  local q = (v >> 1) // 5 -- v // 10 as unsigned; >> is a logical shift
  return tostring(q) .. tostring(v - q * 10)
end

local tables = {
  { name = "B1", n = 18, bs = 4, salt = 1337, rows = {
    { 0, "7ee2cbedc694ab46", "7ee2cbedc694ab46", "001fb8b2fb71a52ad180000000000000", 0, "0", "0:NDxEuLnxnUD" },
    { 1, "a8416cfd935bdb13", "83fb702f20e2ad65", "0060fedc0bc838ab5962cbedc694ab46", 0, "22cbedc694ab46", "1:P5PmJLYPXS4:12KUtXWCDJu" },
    { 2, "0f1aa342314b9384", "ebe58e326790467b", "00baf9638c99e4119efb702f20e2ad65", 0, "3b702f20e2ad65", "2:gTVd7yoDHqU:13FeDVA9uwA" },
    { 3, "de642b4b4e66ec34", "e9036fce74242bb5", "00fa40dbf39d090aed658e326790467b", 0, "258e326790467b", "3:fyXHMvUgj9N:12RYbBFgSWn" } } },
  { name = "B2", n = 18, bs = 4, salt = nil, rows = {
    { 0, "a1d0bd893c9531ac", "a1d0bd893c9531ac", "0028742f624f254c6b00000000000000", 0, "0", "0:U4p6aEVXZkX" },
    { 1, "f0bf80b0226b6c14", "485a98a2c350d61a", "005216a628b0d4358690bd893c9531ac", 0, "10bd893c9531ac", "1:D6vZFvcKECh:1do5AYViE7" },
    { 2, "9e4292f7184dea90", "796623d02e0e6f32", "009e5988f40b839bcc9a98a2c350d61a", 0, "1a98a2c350d61a", "2:MJitXpMWCLq:121TW6wvo85" },
    { 3, "7767b6b61c483163", "180a2c7a40261766", "00c6028b1e900985d9a623d02e0e6f32", 0, "2623d02e0e6f32", "3:52DWHh4Tfi5:12Sq6SZwy9s" } } },
  { name = "B3", n = 70, bs = 16, salt = 1337, rows = {
    { 0, "d47a8f41c833328a", "d47a8f41c833328a", "00351ea3d0720ccca280000000000000", 0, "0", "0:cYJyuuRniyF" },
    { 1, "d43939178abd00db", "bf15dffb16447f38", "006fc577fec5911fce3a8f41c833328a", 0, "3a8f41c833328a", "1:YxmZHYFG9Vh:13DiD58MASD" },
    { 2, "4cc8f942aaf401a2", "a4dda066f3c1e1a0", "00a9376819bcf0786815dffb16447f38", 0, "15dffb16447f38", "2:UaQSMWoTjPm:1q5dMr41Pu" },
    { 3, "cf2d99a33cc42682", "35f7c0d119848950", "00cd7df034466122541da066f3c1e1a0", 0, "1da066f3c1e1a0", "3:A2ZCSkXziKH:1287p2Px44o" } } },
  { name = "B4", n = 70, bs = 16, salt = 0, rows = {
    { 0, "79c2079c74a8ee4d", "79c2079c74a8ee4d", "001e7081e71d2a3b9340000000000000", 0, "0", "0:MNCrhMANbp8" },
    { 1, "0de75b0e004b90fe", "67541a8adfddce4c", "0059d506a2b7f7739302079c74a8ee4d", 0, "2079c74a8ee4d", "1:JHR91ruTgq1:15TkZy54zQ" },
    { 2, "290d9b2bb8046de9", "b626e17dfe7f3ace", "00ad89b85f7f9fceb3941a8adfddce4c", 0, "141a8adfddce4c", "2:XU6t5ipLWMj:1mBq1rnQTM" },
    { 3, "9309a8d978ce032d", "7b837311ed733b4e", "00dee0dcc47b5cced3a6e17dfe7f3ace", 0, "26e17dfe7f3ace", "3:MfEexnrsHph:12UTYonZqfb" } } },
  { name = "B5", n = 12, bs = 4, salt = 42, rows = {
    { 0, "85fc4b7513958f63", "85fc4b7513958f63", "00217f12dd44e563d8c0000000000000", 0, "0", "0:PQpzX4wppYi" },
    { 1, "35c7da70a8c7504f", "f82388d452ed4af9", "007e08e23514bb52be7c4b7513958f63", 0, "3c4b7513958f63", "1:iWFvQbsQRiQ:13HXQbvbzWn" },
    { 2, "e8cc884e2ce4ca1e", "0dbbbc8db1cfb74c", "00836eef236c73edd32388d452ed4af9", 0, "2388d452ed4af9", "2:3JENw7E2N3m:12M6xQo5dN8" } } },
}

local function check_row(s, row, label)
  local pos, bh, seq, plh, mode, parent, display = table.unpack(row)
  local h = s:hash(pos)
  assert.are.equal(u64(bh), s:block_hash(pos), label .. " block hash")
  assert.are.equal(u64(seq), s:sequence_hash(pos), label .. " sequence hash")
  assert.are.equal(u64(seq), H.current(h), label .. " current")
  assert.are.equal(plh, H.hex(h), label .. " PLH")
  assert.are.equal(mode, H.mode(h), label .. " mode")
  assert.are.equal(pos, H.position(h), label .. " position")
  assert.are.equal(u64(parent), H.parent(h), label .. " parent fragment")
  assert.are.equal(display, H.tostring(h), label .. " Display")
end

describe("kvbm.hash vectors (layout B)", function()
  it("reproduces the crate's literal constants (5.1)", function()
    local h14 = H.block({ 1, 2, 3, 4 }, 1337)
    local h58 = H.block({ 5, 6, 7, 8 }, 1337)
    local h912 = H.block({ 9, 10, 11, 12 }, 1337)
    assert.are.equal("14643705804678351452", udec(h14))
    assert.are.equal("16777012769546811212", udec(h58))
    assert.are.equal("483935686894639516", udec(h912))
    local s58 = H.chain(h14, h58)
    assert.are.equal("4945711292740353085", udec(s58))
    assert.are.equal("12583592247330656132", udec(H.chain(s58, h912)))
    local s = kvbm.sequence(helpers.range(12, 1), 4, 1337)
    assert.are.equal(h14, s:sequence_hash(0))
    assert.are.equal(s58, s:sequence_hash(1))
  end)

  for _, t in ipairs(tables) do
    it("table " .. t.name .. " (" .. t.n .. " tokens, block size " .. t.bs .. ")", function()
      local s = kvbm.sequence(helpers.range(t.n), t.bs, t.salt)
      assert.are.equal(#t.rows, #s)
      assert.are.equal(t.n, s:total_tokens())
      for _, row in ipairs(t.rows) do check_row(s, row, t.name .. "[" .. row[1] .. "]") end
    end)
  end

  it("walks the long chain across both mode boundaries", function()
    local rows = {
      { 0, "48b2c92616fc193d", "48b2c92616fc193d", "00122cb24985bf064f40000000000000", 0, "0", "0:DAGPhgXQiag" },
      { 1, "db02334e96d65708", "17da1ae5a8aef1a2", "0045f686b96a2bbc68b2c92616fc193d", 0, "32c92616fc193d", "1:4zPrU9kGKX7:12vdCAA9dgg" },
      { 255, "577e3e0c0a1e19a8", "320694156bdaf65a", "3fcc81a5055af6bd96a603beb292c009", 0, "2603beb292c009", "255:9NK6Kai9MK7:12SZ8EcN6cG" },
      { 256, "ac9b6337f1f1fe57", "e7469b89d3fc9816", "404039d1a6e274ff260594156bdaf65a", 1, "14156bdaf65a", "256:fgfaJhZsoJu:11B14ecVSR" },
      { 257, "01f9e95b509568fe", "33e47d788edd6487", "40404cf91f5e23b75921db89d3fc9816", 1, "1b89d3fc9816", "257:9gRWkVknepv:11EiNbCECD" },
      { 65535, "e657849cfde9c58f", "64d3fdab242c241d", "7fffd934ff6ac90b09077e64509524cf", 1, "3e64509524cf", "65535:HsAD6txkwAt:11Y52CRc6r" },
      { 65536, "0a0b5ceb702cac74", "a7e4199c9c97d7ea", "80400029f906672725f5faab242c241d", 2, "2b242c241d", "65536:V5kgdyHkMDj:1115sJV5De" },
      { 65537, "71940a272a674686", "77d3c08bce6da54d", "8040005df4f022f39b69535c9c97d7ea", 2, "1c9c97d7ea", "65537:M3UTvssopXN:1114EE3K77" },
    }
    local s = kvbm.sequence(helpers.range(65538), 1)
    assert.are.equal(65538, #s)
    for _, row in ipairs(rows) do check_row(s, row, "chain[" .. row[1] .. "]") end
    -- the child's parent fragment is the parent's current hash cut for the child's mode
    assert.are.equal(H.parent(s:hash(256)), H.parent_for_child(s:hash(255), 256))
    assert.are.equal(H.parent(s:hash(65536)), H.parent_for_child(s:hash(65535), 65536))
    -- root + extend gives the same values as the sequence
    local h = H.new(s:block_hash(0), nil, 0)
    for i = 1, 300 do h = H.extend(h, s:block_hash(i)) end
    assert.are.equal(s:hash(300), h)
  end)

  it("builds the hand-made PLHs of 5.3", function()
    local a = H.new(u64("123456789abcdef0"), nil, 0)
    assert.are.equal("00048d159e26af37bc00000000000000", H.hex(a))
    assert.are.equal("0:43c9JGph3DZ", H.tostring(a))
    local b = H.new(u64("abcdef0123456789"), u64("123456789abcdef0"), 5)
    assert.are.equal("016af37bc048d159e27456789abcdef0", H.hex(b))
    assert.are.equal("5:VjieuTM37VA:12z33k5p6QF", H.tostring(b))
    local c = H.new(-1, u64("deadbeef"), 255)
    assert.are.equal("3fffffffffffffffffc00000deadbeef", H.hex(c))
    assert.are.equal("255:jpXCZedGfVQ:11116h8cQN", H.tostring(c))
    assert.are.equal(c, H.from_hex("3fffffffffffffffffc00000deadbeef"))
  end)

  it("keeps the crate's structural properties", function()
    local cur, par = 0x1234567890ABCDEF, u64("FEDCBA9876543210")
    for _, case in ipairs { { 100, 0, 54 }, { 1000, 1, 46 }, { 100000, 2, 38 }, { 255, 0, 54 },
      { 256, 1, 46 }, { 65535, 1, 46 }, { 65536, 2, 38 } } do
      local pos, mode, r = table.unpack(case)
      local h = H.new(cur, par, pos)
      assert.are.equal(mode, H.mode(h))
      assert.are.equal(pos, H.position(h))
      assert.are.equal(cur, H.current(h))
      assert.are.equal(par & ((1 << r) - 1), H.parent(h))
    end
    assert.are.equal(0, H.parent(H.new(cur, nil, 0)))
    -- Ord: position, then current
    local a, b, c = H.new(0x30, nil, 0), H.new(0x10, 0x30, 2), H.new(0x20, 0x30, 2)
    local list = { b, a, c }
    table.sort(list, H.lt)
    assert.are.same({ a, b, c }, list)
    assert.are.equal(-1, H.compare(a, b))
    assert.are.equal(0, H.compare(c, c))
    assert.are.equal(1, select(2, H.tostring(H.new(1, nil, 0)):gsub(":", "")))
    assert.are.equal(2, select(2, H.tostring(H.new(1, 2, 5)):gsub(":", "")))
    assert.are.equal(16777215, H.MAX_POSITION)
    assert.are.equal(H.MAX_POSITION, H.position(H.new(1, 2, H.MAX_POSITION)))
  end)

  it("is usable as a table key and compares with ==", function()
    local s1 = kvbm.sequence(helpers.range(8), 4, 1337)
    local s2 = kvbm.sequence(helpers.range(12), 4, 1337)
    local seen = { [s1:hash(1)] = true }
    assert.is_true(seen[s2:hash(1)])
    assert.is_nil(seen[s2:hash(2)])
    assert.are.equal(kvbm.hash.tostring(s1:hash(1)), "1:P5PmJLYPXS4:12KUtXWCDJu")
  end)
end)

describe("kvbm.hash bad input", function()
  it("returns nil, position_limit for positions at or beyond 2^24 (a limit the data reaches)", function()
    local h, err = H.new(1, 2, 1 << 24)
    assert.is_nil(h)
    assert.are.equal("position_limit", err.code)
    assert.are.equal(1 << 24, err.position)
    assert.matches("exceeds maximum supported value", tostring(err))
    local top = H.new(1, 2, H.MAX_POSITION)
    h, err = H.extend(top, 5)
    assert.is_nil(h)
    assert.are.equal("position_limit", err.code)
    assert.are.equal(1 << 24, err.position)
    assert.matches("16,777,215", err.message)
    -- a negative position is misuse: it raises
    assert.error_matches(function() H.new(1, nil, -1) end, "position must be non%-negative")
  end)

  it("from_hex returns nil, invalid_hash for text that is not a hash", function()
    for text, msg in pairs { xyz = "expected 32 hex digits", [string.rep("f", 32)] = "mode bits 11",
        [string.rep("g", 32)] = "expected 32 hex digits" } do
      local h, err = H.from_hex(text)
      assert.is_nil(h)
      assert.are.equal("invalid_hash", err.code)
      assert.matches(msg, err.message, 1, true)
    end
    assert.has_error(function() H.from_hex(42 > 0) end) -- not a string: misuse
  end)

  it("rejects strings that are not 16-byte hashes", function()
    assert.error_matches(function() H.position("short") end, "16%-byte")
    assert.error_matches(function() H.tostring(string.rep("\255", 16)) end, "mode bits 11")
    assert.error_matches(function() H.current(42) end, "16%-byte")
    assert.error_matches(function() H.new("a", nil, 0) end, "number expected")
  end)

  it("rejects non-integer and out-of-range tokens", function()
    assert.error_matches(function() H.block({ 1, 2.5 }) end, "bad token #2")
    assert.error_matches(function() H.block({ 1, -1 }) end, "bad token #2")
    assert.error_matches(function() H.block({ 1 << 32 }) end, "bad token #1")
    assert.error_matches(function() H.block({ "7" }) end, "bad token #1")
    assert.are.equal(H.block({ 0xffffffff }), H.block({ 4294967295.0 }))
  end)
end)
