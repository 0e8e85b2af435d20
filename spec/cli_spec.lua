-- The kvbm program: scripts, options and the REPL (driven through a pty).
local helpers = require "helpers"

local kvbm_bin = helpers.builddir() .. "/kvbm"

local function kvbm(args, stdin)
  local cmd = helpers.shell_quote(kvbm_bin) .. " " .. args .. " 2>&1"
  if stdin then cmd = "printf '%s' " .. helpers.shell_quote(stdin) .. " | " .. cmd end
  return helpers.run(cmd)
end

local function tmpscript(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

describe("the kvbm program", function()
  it("prints Lua warnings with -W or after warn('@on'), whole and in pieces; '@off' stops them", function()
    local out, status = kvbm([[-W -e "warn('one ', 'two'); warn('@off'); warn('hidden'); warn('@on'); warn('three')"]])
    assert.are.equal(0, status)
    assert.are.equal("Lua warning: one two\nLua warning: three\n", out)
    out = kvbm([[-e "warn('hidden'); warn('@on'); warn('shown')"]])
    assert.are.equal("Lua warning: shown\n", out)
  end)

  it("runs a script that makes and drops many objects of every size (its allocator)", function()
    local out, status = kvbm([[-e "local t = {} for i = 1, 20000 do t[i % 500 + 1] = string.rep('x', i % 700) .. i end
      local n = 0 for i = 1, 500 do n = n + #t[i] end print(n)"]])
    assert.are.equal(0, status, out)
    local want = 0
    for i = 19501, 20000 do want = want + i % 700 + #tostring(i) end
    assert.are.equal(tostring(want) .. "\n", out)
  end)

  it("-v prints the kvbm and Lua versions", function()
    local out, status = kvbm("-v")
    assert.are.equal(0, status)
    assert.matches("kvbm %d+%.%d+%.%d+", out)
    assert.matches("Lua 5%.4", out)
  end)

  it("--version prints what -v prints; -h and --help print the usage on stdout", function()
    local v = kvbm("-v")
    local out, status = kvbm("--version")
    assert.are.equal(0, status)
    assert.are.equal(v, out)
    for _, opt in ipairs { "-h", "--help" } do
      out, status = kvbm(opt)
      assert.are.equal(0, status, opt)
      assert.matches("^usage: kvbm %[options%] %[script %[args%]%]\n", out)
      assert.matches("\n  %-h        show this help %(also %-%-help%)\n", out)
      assert.not_matches("unrecognized", out)
    end
    out, status = kvbm("--helpme")
    assert.are_not.equal(0, status)
    assert.matches("unrecognized option '%-%-helpme'", out)
  end)

  it("has man pages that document every option of kvbm and kvbm sim", function()
    local function read(path)
      local f = assert(io.open(helpers.srcdir() .. "/" .. path))
      local t = f:read("a")
      f:close()
      return t
    end
    for page, usage in pairs { ["man/kvbm.1.in"] = kvbm("--help"), ["man/kvbm-sim.1.in"] = kvbm("sim --help") } do
      local roff = read(page)
      local n = 0
      for opt in usage:gmatch("\n%s+(%-[%w%-]+)") do
        n = n + 1
        assert.is_truthy(roff:find(opt:gsub("%-", "\\-"), 1, true), page .. " does not document " .. opt)
      end
      assert.is_true(n >= 8, "options found in the usage of " .. page)
    end
  end)

  it("-e runs a statement with kvbm preloaded", function()
    local out, status = kvbm("-e " .. helpers.shell_quote(
      "print(kvbm.hash.tostring(kvbm.sequence({0,1,2,3,4,5,6,7}, 4, 1337):hash(1)))"))
    assert.are.equal(0, status)
    assert.are.equal("1:P5PmJLYPXS4:12KUtXWCDJu\n", out)
  end)

  it("runs a script with arg and ... like lua", function()
    local path = tmpscript("print(arg[0] == ..., select('#', ...), ...)\nprint(arg[1], arg[2], #arg)\n")
    local out, status = kvbm(helpers.shell_quote(path) .. " a b")
    os.remove(path)
    assert.are.equal(0, status)
    assert.are.equal("false\t2\ta\tb\na\tb\t2\n", out)
  end)

  it("-l loads a module before the script", function()
    local out, status = kvbm("-l kvbm.repl -e " .. helpers.shell_quote("print(type(package.loaded['kvbm.repl']))"))
    assert.are.equal(0, status)
    assert.are.equal("table\n", out)
  end)

  it("reports script errors on stderr with a failing status", function()
    local out, status = kvbm("-e " .. helpers.shell_quote("error('boom')"))
    assert.are_not.equal(0, status)
    assert.matches("boom", out)
    out, status = kvbm(helpers.shell_quote("/nonexistent/script.lua"))
    assert.are_not.equal(0, status)
    assert.matches("cannot open", out)
  end)

  it("runs a script piped on stdin", function()
    local out, status = kvbm("-", "print(#kvbm.sequence({1,2,3,4,5}, 2))")
    assert.are.equal(0, status)
    assert.are.equal("2\n", out)
  end)

  it("runs the demo", function()
    local out, status = kvbm(helpers.shell_quote(helpers.srcdir() .. "/scripts/examples/demo.lua"))
    assert.are.equal(0, status, out)
    assert.matches("1:P5PmJLYPXS4:12KUtXWCDJu", out, 1, true)
  end)

  it("completion offers every kvbm.* module loaded on first use, without loading it", function()
    local lazy = { "logical", "request", "scheduled", "tiers", "replay", "repl", "sim" }
    local path = tmpscript([[
      local complete = require("kvbm.repl").complete
      local names = {}
      for _, n in ipairs { ... } do
        assert(rawget(kvbm, n) == nil or n == "repl", n .. " loaded before the test")
        names[#names + 1] = table.concat(complete("kvbm." .. n:sub(1, 3)), ",")
        assert(rawget(kvbm, n) == nil or n == "repl", "completing loaded " .. n)
      end
      print(table.concat(names, ";"))
    ]])
    local out, status = kvbm(helpers.shell_quote(path) .. " " .. table.concat(lazy, " "))
    os.remove(path)
    assert.are.equal(0, status, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local groups = {}
    for g in (lines[1] .. ";"):gmatch("([^;]*);") do groups[#groups + 1] = g end
    assert.are.equal(#lazy, #groups, out)
    for i, n in ipairs(lazy) do
      local found = false
      for w in groups[i]:gmatch("[^,]+") do found = found or w == "kvbm." .. n end
      assert.is_true(found, "kvbm." .. n .. " offered for kvbm." .. n:sub(1, 3) .. ": " .. groups[i])
    end
  end)

  describe("REPL", function()
    -- script(1) gives the REPL a terminal, as a user would.
    -- HOME is a fresh directory (the REPL keeps its history there), also the
    -- working directory, so that file names are at hand for completion.
    local function tmpdir()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. helpers.shell_quote(dir)))
      return dir
    end
    local function repl(input, home)
      home = home or tmpdir()
      local cmd = "cd " .. helpers.shell_quote(home) .. " && printf '%s' " .. helpers.shell_quote(input)
        .. " | HOME=" .. helpers.shell_quote(home) .. " TERM=dumb script -qec "
        .. helpers.shell_quote(helpers.shell_quote(kvbm_bin)) .. " /dev/null 2>&1"
      return helpers.run(cmd)
    end
    local function slurp(path)
      local f = io.open(path)
      if not f then return nil end
      local s = f:read("a")
      f:close()
      return s
    end

    -- line editing needs readline (configure --without-readline: plain lines)
    local editing = os.getenv("KVBM_READLINE") ~= "no"
    local it_editing = editing and it or function(name, ...) pending(name .. " (built without readline)", ...) end

    it_editing("completes Lua globals, fields and methods on Tab, never file names", function()
      local home = tmpdir()
      assert(io.open(home .. "/zzfile.txt", "w")):close()
      local out = repl("ok1 = kvbm.hash.tostr\t == kvbm.hash.tostring\n"
        .. "m = kvbm.manager{ blocks = 2, registry = kvbm.registry{} }\n"
        .. "ok2 = m:avail\t() == 2\n"
        .. "ok3 = type(pri\t) == 'function'\n"
        .. "zzf\t = 5\n"
        .. "print('R', ok1, ok2, ok3, zzf)\n", home)
      assert.matches("R\ttrue\ttrue\ttrue\t5", out)
    end)

    it_editing("completes the kvbm.* modules loaded on first use before that use", function()
      local out = repl("ok1 = kvbm.sche\t == kvbm.scheduled\nprint('R', ok1)\n", tmpdir())
      assert.matches("R\ttrue", out)
    end)

    it_editing("keeps history in $HOME/.kvbm_history across sessions", function()
      local home = tmpdir()
      repl("x = 1\nprint('first' .. 'session')\n", home)
      local hist = slurp(home .. "/.kvbm_history")
      assert.is_not_nil(hist, "no history file in HOME")
      assert.matches("print('first' .. 'session')", hist, 1, true)
      -- the next session recalls the last line with Up (ESC [ A)
      local out = repl("\27[A\n", home)
      assert.matches("firstsession", out, 1, true)
    end)

    it("prints metrics one per line and a tiers object readably", function()
      local out = repl("m = kvbm.manager{ blocks = 3, registry = kvbm.registry{}, name = 'gpu' }\n"
        .. "m:metrics()\n"
        .. "kvbm.tiers{ G1 = { blocks = 8 }, G2 = { blocks = 16 } }\n")
      assert.matches("kvbm.Metrics\r?\n  kvbm_allocations_total +0\r?\n", out)
      assert.matches("\n  kvbm_reset_pool_size +3\r?\n", out)
      assert.matches("\n  hit_rate +0%.0\r?\n", out)
      assert.matches("kvbm.Tiers %(block size 16, 0 pending plans%)\r?\n  G1 +kvbm.Manager G1 %(8 blocks", out)
      assert.matches("\n  G2 +kvbm.Manager G2 %(16 blocks", out)
    end)

    it("prints expressions, =expr and hashes in Display form", function()
      local out = repl("1+1\n=2*3\nkvbm.sequence({0,1,2,3,4,5,6,7}, 4, 1337):hash(1)\n"
        .. "kvbm.hash.tostring(kvbm.sequence({0,1,2,3,4,5,6,7}, 4, 1337):hash(1))\n")
      -- "> 2": without readline the terminal, not the REPL, echoes the input
      assert.matches("[\n ]2\r?\n", out)
      assert.matches("[\n ]6\r?\n", out)
      assert.matches("<1:P5PmJLYPXS4:12KUtXWCDJu>", out, 1, true)
      assert.matches('"1:P5PmJLYPXS4:12KUtXWCDJu"', out, 1, true)
    end)

    it("continues incomplete chunks over several lines", function()
      local out = repl("for i = 1, 3 do\nio.write(i * 11, ' ')\nend\nprint('done')\n")
      assert.matches("11 22 33", out)
      assert.matches("done", out)
    end)

    it("Ctrl-C interrupts a running chunk and the REPL carries on", function()
      -- a link with a name of its own, so that only this REPL gets the signal
      local link = os.tmpname()
      os.remove(link)
      assert(os.execute("ln -s " .. helpers.shell_quote(helpers.real_program("kvbm")) .. " " .. helpers.shell_quote(link)))
      local input = "while true do end\nprint('still ' .. 'alive')\n"
      local cmd = "(printf '%s' " .. helpers.shell_quote(input) .. "; sleep 3) | TERM=dumb script -qec "
        .. helpers.shell_quote(helpers.shell_quote(link)) .. " /dev/null 2>&1 & "
        .. "sleep 1; pkill -INT -f " .. helpers.shell_quote("^" .. link .. "$") .. "; wait"
      local out = helpers.run(cmd)
      os.remove(link)
      assert.matches("interrupted!", out)
      assert.matches("still alive", out)
    end)

    it("reports errors and keeps going", function()
      local out = repl("error('oops')\nprint('still here')\n")
      assert.matches("oops", out)
      assert.matches("still here", out)
    end)
  end)
end)

describe("the README", function()
  local f = assert(io.open(helpers.srcdir() .. "/README.md"))
  local readme = f:read("a")
  f:close()

  it("links every document, and each link is in the repository", function()
    local linked = {}
    for target in readme:gmatch("%]%(([^)]+)%)") do
      linked[target] = true
      local g = io.open(helpers.srcdir() .. "/" .. target)
      assert.is_not_nil(g, "README links " .. target .. ", which is not in the repository")
      g:close()
    end
    local p = io.popen("ls " .. helpers.shell_quote(helpers.srcdir() .. "/doc"))
    for name in p:lines() do
      if name:match("%.md$") then assert.is_true(linked["doc/" .. name], "README does not link doc/" .. name) end
    end
    p:close()
  end)

  it("names no file outside the repository", function()
    for path in readme:gmatch("`([%w_%./%-]+%.%w+)`") do
      if path:match("/") and not path:match("^%$") and not path:match("^%./%.libs") then
        local g = io.open(helpers.srcdir() .. "/" .. path)
        assert.is_not_nil(g, "README names " .. path .. ", which is not in the repository")
        if g then g:close() end
      end
    end
    assert.is_nil(readme:find("DESIGN.md", 1, true))
    assert.is_nil(readme:find("../shared", 1, true))
  end)
end)
