-- kvbm.trace: loading request traces (text and Mooncake/Dynamo JSONL).
-- Every malformed input is nil, err naming the file and the physical line;
-- misuse raises; the JSONL prompts are checked against an independent
-- Python model (spec/tools/trace_model.py) on a real trace when available.
local kvbm = require "kvbm"
local helpers = require "helpers"

local fixtures = helpers.srcdir() .. "/spec/fixtures/traces/"
local python = os.getenv("KVBM_PYTHON") or "/usr/bin/python3"
local kvbm_bin = helpers.builddir() .. "/kvbm"

local function u32s(list)
  local parts = {}
  for i, v in ipairs(list) do parts[i] = string.pack("<I4", v) end
  return table.concat(parts)
end

local function write_temp(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

describe("kvbm.trace", function()
  describe("text traces", function()
    it("loads ids, u64 salts and tokens, skipping blank and comment lines", function()
      local t = assert(kvbm.trace.load(fixtures .. "ok.trace"))
      assert.are.equal(4, #t)
      assert.are.equal("text", t:format())
      assert.are.equal(9, t:total_tokens())
      assert.are.same({ 1, 2, 3, 4 }, { t:id(1), t:id(2), t:id(3), t:id(4) })
      assert.are.equal(-1, t:salt(2), "2^64-1 comes back as the u64 bit pattern")
      assert.are.equal(math.mininteger, t:salt(4), "2^63 as well")
      assert.are.same({ 3, 4, 6, 8 }, { t:line(1), t:line(2), t:line(3), t:line(4) })
      assert.are.equal(u32s { 10, 11, 12, 13 }, t:tokens(1))
      assert.are.equal(u32s { 4294967295, 0 }, t:tokens(2))
      assert.are.equal("", t:tokens(3))
      assert.are.same({ 4, 4, 0, 0 }, { t:n_tokens(1), t:input_length(1), t:output_length(1), t:timestamp(1) })
      assert.are.same({ id = 4, salt = math.mininteger, timestamp = 0, input_length = 3, output_length = 0,
        n_tokens = 3, line = 8, tokens = u32s { 1, 2, 3 } }, t:request(4))
      assert.matches("kvbm.Trace%(text, 4 requests, 9 tokens%)", tostring(t))
    end)

    it("gives tokens that kvbm.sequence takes as they are", function()
      local t = assert(kvbm.trace.load(fixtures .. "ok.trace"))
      local seq = kvbm.sequence(t:tokens(1), 2, t:salt(1))
      assert.are.equal(2, #seq)
      assert.are.same({ 10, 11, 12, 13 }, seq:tokens())
      assert.are.equal(kvbm.sequence({ 10, 11, 12, 13 }, 2, 0):hash(1), seq:hash(1))
      local big = kvbm.sequence(t:tokens(2), 1, t:salt(2))
      assert.are.equal(kvbm.sequence({ 4294967295, 0 }, 1, -1):hash(1), big:hash(1))
    end)

    it("returns nil for an index out of range, and raises for a non-integer one", function()
      local t = assert(kvbm.trace.parse("1 0 1 5\n"))
      for _, f in ipairs { "id", "salt", "timestamp", "input_length", "output_length", "n_tokens", "line",
        "tokens", "request", "sequence" } do
        assert.is_nil(t[f](t, 0, 4), f)
        assert.is_nil(t[f](t, 2, 4), f)
        assert.has_error(function() t[f](t, "x", 4) end)
        assert.has_error(function() t[f](t, 1.5, 4) end)
      end
    end)

    describe("t:sequence", function()
      local text = "1 7 5 10 11 12 13 14\n2 18446744073709551615 2 4294967295 0\n3 7 0\n4 9 3 10 11 12\n"

      it("is kvbm.sequence of the request's tokens and salt", function()
        local t = assert(kvbm.trace.parse(text))
        for i = 1, #t do
          for _, bs in ipairs { 1, 2, 4 } do
            local want = kvbm.sequence(t:tokens(i), bs, t:salt(i))
            local got = t:sequence(i, bs)
            assert.are.same({ want:hashes(), want:tokens(), want:salt(), want:block_size() },
              { got:hashes(), got:tokens(), got:salt(), got:block_size() }, ("request %d, block size %d"):format(i, bs))
          end
        end
        assert.are.equal(2, #t:sequence(1, 2), "5 tokens: 2 full blocks, the fifth in the tail")
        assert.are.same({ 14 }, t:sequence(1, 2):partial())
      end)

      it("refills a sequence in place: another salt, fewer or more tokens, nothing left of before", function()
        local t = assert(kvbm.trace.parse(text))
        local seq = kvbm.sequence({ 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 2, 123)
        for _, i in ipairs { 1, 2, 3, 1, 4, 2 } do
          assert.are.equal(seq, t:sequence(i, 2, seq), "the same object back")
          local want = kvbm.sequence(t:tokens(i), 2, t:salt(i))
          assert.are.same({ want:hashes(), want:tokens(), want:salt() }, { seq:hashes(), seq:tokens(), seq:salt() },
            "request " .. i)
        end
        local before = kvbm._debug.live().allocations
        for _ = 1, 10 do for i = 1, #t do t:sequence(i, 2, seq) end end
        assert.are.equal(before, kvbm._debug.live().allocations, "refilling allocates nothing once large enough")
      end)

      it("raises on misuse and leaves the sequence it was given as it was", function()
        local t = assert(kvbm.trace.parse(text))
        local seq = kvbm.sequence({ 1, 2, 3, 4, 5 }, 2, 3)
        local hashes = seq:hashes()
        local function intact()
          assert.are.same({ hashes, { 1, 2, 3, 4, 5 }, 3 }, { seq:hashes(), seq:tokens(), seq:salt() })
        end
        for _, case in ipairs {
          { function() t:sequence(1, 0, seq) end, "block size must be in 1..2^32-1" },
          { function() t:sequence(1, "two", seq) end, "number expected, got string" },
          { function() t:sequence(1, 4, seq) end, "a sequence of another block size" },
          { function() t:sequence(1, 2, {}) end, "kvbm.Sequence expected, got table" },
          { function() t:sequence(5, 2, {}) end, "kvbm.Sequence expected, got table" },
        } do
          local ok, err = pcall(case[1])
          assert.is_false(ok)
          assert.matches(case[2], err, 1, true)
          assert.not_matches("%.c:%d", err)
          intact()
        end
        assert.is_nil(t:sequence(5, 2, seq), "out of range: nil")
        intact()
      end)

      it("feeds a BlockSet replay the same hashes as a sequence of the tokens", function()
        local t = assert(kvbm.trace.parse(text))
        local m = kvbm.manager{ blocks = 8, block_size = 2, registry = kvbm.registry{} }
        local seq
        for i = 1, #t do
          seq = t:sequence(i, 2, seq)
          local got = m:match_set(seq)
          got:append(m:register_set(assert(m:allocate_set(#seq - #got)), seq, #got))
          for k = 1, #got do assert.are.equal(kvbm.sequence(t:tokens(i), 2, t:salt(i)):hash(k - 1), got:hash(k)) end
          got:release()
        end
        assert.are.equal(8, m:available())
      end)
    end)

    -- file, physical line, what
    local errors = {
      { "missing_tokens.trace", 5, "5 tokens announced, 3 found" },
      { "extra_tokens.trace", 1, "2 tokens announced, 3 found" },
      { "float_token.trace", 2, "token 1: '1.5' is not an integer" },
      { "negative_token.trace", 1, "token 1: '-1' is negative (expected 0..4294967295)" },
      { "nonnumeric_token.trace", 1, "token 3: 'x' is not an integer" },
      { "token_2p32.trace", 1, "token 4: '4294967296' is out of range (expected 0..4294967295)" },
      { "token_2p64.trace", 1, "token 2: '18446744073709551616' is out of range (expected 0..4294967295)" },
      { "salt_2p64.trace", 2,
        "salt: '18446744073709551616' is out of range (expected 0..18446744073709551615)" },
      { "salt_negative.trace", 2, "salt: '-1' is negative (expected 0..18446744073709551615)" },
      { "ntokens_huge.trace", 1, "99999999999999 tokens announced, 3 found" },
      { "ntokens_2p66.trace", 1,
        "n_tokens: '99999999999999999999' is out of range (expected 0..18446744073709551615)" },
      { "short_line.trace", 2, "missing n_tokens (expected '<request_id> <salt> <n_tokens> <token>...')" },
      { "not_object.jsonl", 2, "expected a JSON object, got an array" },
      { "missing_field.jsonl", 3, 'missing "input_length" (or "input_tokens")' },
      { "mistyped_field.jsonl", 1, '"input_length" must be an integer >= 0, got a string' },
      { "negative_length.jsonl", 1, '"output_tokens" must be an integer >= 0, got -4' },
      { "hash_id_2p32.jsonl", 2, "hash_ids[1] must be an integer in 0..4294967295, got 4294967296" },
      { "invalid_json.jsonl", 2, "invalid JSON at column " },
    }
    for _, case in ipairs(errors) do
      local file, line, what = case[1], case[2], case[3]
      it(("%s: line %d, %s"):format(file, line, what), function()
        local path = fixtures .. file
        local t, err = kvbm.trace.load(path)
        assert.is_nil(t)
        assert.are.equal("malformed_trace", err.code)
        assert.are.equal(path, err.file)
        assert.are.equal(line, err.line)
        local want = ("%s:%d: %s"):format(path, line, what)
        assert.are.equal(want, err.message:sub(1, #want))
        assert.are.equal("malformed_trace: " .. err.message, tostring(err))
      end)
    end

    it("a file that cannot be opened is io_error, without a line", function()
      local t, err = kvbm.trace.load("/nonexistent/x.trace")
      assert.is_nil(t)
      assert.are.same({ code = "io_error", message = "/nonexistent/x.trace: No such file or directory",
        file = "/nonexistent/x.trace" }, { code = err.code, message = err.message, file = err.file, line = err.line })
      t, err = kvbm.trace.load(helpers.srcdir())
      assert.is_nil(t)
      assert.are.equal("io_error", err.code)
      assert.matches("Is a directory", err.message)
    end)

    it("an explicit format overrides detection; name names a string in messages", function()
      local t, err = kvbm.trace.parse('\n{"timestamp": 0}\n', { format = "text", name = "inline" })
      assert.is_nil(t)
      assert.are.same({ "inline", 2 }, { err.file, err.line })
      assert.are.equal("inline:2: request_id: '{\"timestamp\":' is not an integer", err.message)
      t, err = kvbm.trace.parse("1 0 1 5\n", { format = "jsonl" })
      assert.is_nil(t)
      assert.matches("^<string>:1: invalid JSON", err.message)
    end)

    it("stops at max_tokens", function()
      local t, err = kvbm.trace.parse("1 0 2 1 2\n2 0 2 1 2\n", { max_tokens = 3 })
      assert.is_nil(t)
      assert.are.equal("<string>:2: the trace has more than 3 prompt tokens (max_tokens)", err.message)
      assert.are.equal(4, assert(kvbm.trace.parse("1 0 2 1 2\n2 0 2 1 2\n", { max_tokens = 4 })):total_tokens())
    end)
  end)

  describe("JSONL traces", function()
    it("makes each hash id trace_block_size tokens, cut to input_length", function()
      local t = assert(kvbm.trace.load(fixtures .. "ok.jsonl", { trace_block_size = 4 }))
      assert.are.equal("jsonl", t:format())
      assert.are.equal(3, #t)
      assert.are.same({ id = 0, salt = 0, timestamp = 0, input_length = 5, output_length = 3, n_tokens = 5,
        line = 2, tokens = u32s { 7, 7, 7, 7, 9 } }, t:request(1))
      assert.are.same({ id = 1, salt = 0, timestamp = 1500.5, input_length = 100, output_length = 7, n_tokens = 8,
        line = 4, tokens = u32s { 1, 1, 1, 1, 2, 2, 2, 2 } }, t:request(2), "aliases; cut to 4 * #hash_ids")
      assert.are.same({ 0, 2000, 1 }, { t:n_tokens(3), t:timestamp(3), t:output_length(3) })
    end)

    it("uses 512 tokens per hash id by default", function()
      local t = assert(kvbm.trace.parse(
        '{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [3, 4, 5]}'))
      assert.are.equal(string.rep(string.pack("<I4", 3), 512) .. string.rep(string.pack("<I4", 4), 88), t:tokens(1))
    end)

    it("reads a real trace as an independent Python model does", function()
      local path = helpers.real_trace("mooncake_trace_1000.jsonl")
      if not path then
        pending("mooncake_trace_1000.jsonl not found (set KVBM_TRACES_DIR to the directory holding it)")
        return
      end
      for _, bs in ipairs { 512, 64 } do
        local p = assert(io.popen(helpers.shell_quote(python) .. " "
          .. helpers.shell_quote(helpers.srcdir() .. "/spec/tools/trace_model.py") .. " "
          .. helpers.shell_quote(path) .. " " .. bs))
        local want_n, want_total = p:read("n", "n")
        p:read("l")
        local t = assert(kvbm.trace.load(path, { trace_block_size = bs }))
        assert.are.equal(want_n, #t)
        assert.are.equal(want_total, t:total_tokens())
        for i = 1, #t do
          local row = {}
          for w in p:read("l"):gmatch("%S+") do row[#row + 1] = tonumber(w) end
          assert.are.same({ row[1], row[2], row[3], row[4] },
            { t:n_tokens(i), t:timestamp(i), t:input_length(i), t:output_length(i) }, "request " .. i)
          local parts = {}
          for k = 5, #row, 2 do parts[#parts + 1] = string.rep(string.pack("<I4", row[k]), row[k + 1]) end
          assert(table.concat(parts) == t:tokens(i), "tokens of request " .. i)
        end
        p:close()
        if bs == 512 then assert.are.equal(9792030, t:total_tokens(), "the figure its README gives") end
      end
    end)
  end)

  describe("loading", function()
    it("reads standard input for '-'", function()
      local out, status = helpers.run(helpers.shell_quote(kvbm_bin)
        .. [[ -e 'local t, err = kvbm.trace.load("-", { trace_block_size = 4 }); ]]
        .. [[if not t then print(err.message) else print(#t, t:total_tokens(), t:format()) end' < ]]
        .. helpers.shell_quote(fixtures .. "ok.jsonl"))
      assert.are.equal(0, status, out)
      assert.are.equal("3\t13\tjsonl\n", out)
      out = helpers.run(helpers.shell_quote(kvbm_bin)
        .. [[ -e 'local t, err = kvbm.trace.load("-"); print(err.message)' < ]]
        .. helpers.shell_quote(fixtures .. "missing_tokens.trace"))
      assert.are.equal("<stdin>:5: 5 tokens announced, 3 found\n", out)
    end)

    it("reports progress in bytes, ending with done == total", function()
      local lines = {}
      for i = 1, 60000 do lines[i] = i .. " 0 8 1001 1002 1003 1004 1005 1006 1007 1008" end
      local text = table.concat(lines, "\n") .. "\n"
      local path = write_temp(text)
      for _, load in ipairs { function(o) return kvbm.trace.parse(text, o) end,
                              function(o) return kvbm.trace.load(path, o) end } do
        local calls, last_done, last_total, backwards = 0, -1, nil, false
        local t = assert(load { progress = function(done, total)
          calls = calls + 1
          backwards = backwards or done < last_done
          last_done, last_total = done, total
        end })
        assert.are.equal(60000, #t)
        assert.is_true(calls >= 2, "called as loading advances")
        assert.is_false(backwards)
        assert.are.same({ #text, #text }, { last_done, last_total })
      end
      os.remove(path)
    end)

    it("a raising progress function stops the load with its own error, leaking nothing", function()
      local lines = {}
      for i = 1, 60000 do lines[i] = i .. " 0 8 1001 1002 1003 1004 1005 1006 1007 1008" end
      local text = table.concat(lines, "\n")
      helpers.assert_no_leaks(function()
        local ok, err = pcall(kvbm.trace.parse, text, { progress = function() error({ stop = true }) end })
        assert.is_false(ok)
        assert.are.same({ stop = true }, err)
      end)
    end)

    it("gives back every allocation, loaded or failed", function()
      helpers.assert_no_leaks(function()
        local t = assert(kvbm.trace.load(fixtures .. "ok.trace"))
        assert.are.equal(4, #t)
        t = nil
        assert.is_nil((kvbm.trace.load(fixtures .. "missing_tokens.trace")))
        assert.is_nil((kvbm.trace.load(fixtures .. "invalid_json.jsonl")))
        assert.is_nil((kvbm.trace.load("/nonexistent")))
      end)
    end)

    it("raises on misuse, naming the option", function()
      local cases = {
        { function() kvbm.trace.load() end, "kvbm.trace.load: expected a string, got no value" },
        { function() kvbm.trace.load(5) end, "kvbm.trace.load: expected a string, got number" },
        { function() kvbm.trace.parse({}) end, "kvbm.trace.parse: expected a string, got table" },
        { function() kvbm.trace.parse("", 5) end, "options must be a table, got number" },
        { function() kvbm.trace.parse("", { formt = "text" }) end, "unknown option 'formt'" },
        { function() kvbm.trace.parse("", { format = "xml" }) end,
          "option 'format' must be \"auto\", \"text\" or \"jsonl\", got xml" },
        { function() kvbm.trace.parse("", { format = 1 }) end, "option 'format' must be" },
        { function() kvbm.trace.parse("", { trace_block_size = 0 }) end,
          "option 'trace_block_size' must be an integer in 1..4294967295, got 0" },
        { function() kvbm.trace.parse("", { trace_block_size = 4294967296 }) end, "got 4294967296" },
        { function() kvbm.trace.parse("", { trace_block_size = 1.5 }) end, "got 1.5" },
        { function() kvbm.trace.parse("", { trace_block_size = "512" }) end, "got 512" },
        { function() kvbm.trace.parse("", { trace_block_size = -1 }) end, "got %-1" },
        { function() kvbm.trace.parse("", { max_tokens = -1 }) end,
          "option 'max_tokens' must be an integer >= 0, got %-1" },
        { function() kvbm.trace.parse("", { max_tokens = 0 / 0 }) end, "option 'max_tokens'" },
        { function() kvbm.trace.parse("", { progress = 5 }) end,
          "option 'progress' must be a function, got number" },
        { function() kvbm.trace.parse("", { name = true }) end, "option 'name' must be a string, got boolean" },
      }
      for _, c in ipairs(cases) do
        local ok, err = pcall(c[1])
        assert.is_false(ok, c[2])
        assert.matches(c[2], tostring(err), 1, c[2]:find("%%") == nil)
        assert.is_nil(tostring(err):find("ltrace.c", 1, true), "no internal path")
      end
      local t = assert(kvbm.trace.parse("1 0 0\n"))
      assert.has_error(function() t.id(nil, 1) end)
      assert.has_error(function() t.id({}, 1) end)
    end)
  end)
end)
