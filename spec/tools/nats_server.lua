-- spec/tools/nats_server.lua - starts and stops a real nats-server for specs.
--
--   local nats_server = require "tools.nats_server"
--   local srv = nats_server.start()   -- 127.0.0.1, a port the server picks (-p -1)
--   srv.url, srv.port, srv.pid
--   srv:stop()                        -- TERM, then KILL; waits until it is gone
--   srv:start()                       -- again, on the same port
--
-- The binary is $KVBM_NATS_SERVER, else nats-server on PATH. start() returns
-- only once the server's log says it listens and is ready (or raises with
-- the log). Servers are only ever bound to 127.0.0.1.
local M = {}

local ok_system, system = pcall(require, "system")

function M.sleep(s)
  if ok_system and system.sleep then
    system.sleep(s)
  else
    os.execute(string.format("sleep %.3f", s))
  end
end

function M.now()
  if ok_system and system.monotime then return system.monotime() end
  return os.time()
end

local function quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.binary()
  local b = os.getenv("KVBM_NATS_SERVER")
  if b and b ~= "" and b ~= "no" then return b end
  return "nats-server"
end

-- A zombie (an exited server nobody reaped yet) counts as gone.
local function alive(pid)
  local f = io.open("/proc/" .. math.tointeger(pid) .. "/stat", "r")
  if f then
    local stat = f:read("a") or ""
    f:close()
    local state = stat:match("%)%s+(%a)")
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  local self_stat = io.open("/proc/self/stat", "r")
  if self_stat then -- /proc works: there is no such process
    self_stat:close()
    return false
  end
  return os.execute("kill -0 " .. math.tointeger(pid) .. " 2>/dev/null") == true
end

local function read_file(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

local Server = {}
Server.__index = Server

--- (Re)starts the server on self.port (-1: the server picks a free one).
function Server:start(timeout)
  assert(not self.pid, "nats-server already running")
  local log = os.tmpname()
  local cmd = string.format("%s -a 127.0.0.1 -p %d </dev/null >%s 2>&1 & echo $!",
    quote(M.binary()), self.port or -1, quote(log))
  local p = assert(io.popen(cmd, "r"))
  local pid = tonumber((p:read("a"):match("%d+")))
  p:close()
  assert(pid, "could not start nats-server")
  self.pid, self.log = pid, log
  local deadline = M.now() + (timeout or 5)
  while true do
    local text = read_file(log)
    local port = text:match("Listening for client connections on 127%.0%.0%.1:(%d+)")
    if port and text:find("Server is ready", 1, true) then
      self.port = tonumber(port)
      self.url = "nats://127.0.0.1:" .. self.port
      return self
    end
    if not alive(pid) or M.now() > deadline then
      self:stop()
      error("nats-server did not start:\n" .. text, 2)
    end
    M.sleep(0.01)
  end
end

--- Stops the server and waits until the process is gone. Idempotent.
function Server:stop()
  local pid = self.pid
  if not pid then return end
  os.execute("kill -TERM " .. math.tointeger(pid) .. " 2>/dev/null")
  local deadline = M.now() + 3
  while alive(pid) and M.now() < deadline do M.sleep(0.01) end
  if alive(pid) then
    os.execute("kill -KILL " .. math.tointeger(pid) .. " 2>/dev/null")
    deadline = M.now() + 3
    while alive(pid) and M.now() < deadline do M.sleep(0.01) end
  end
  self.pid = nil
  if self.log then os.remove(self.log) end
  self.log = nil
end

--- Starts a server (port: optional; default a free one the server picks).
function M.start(port)
  return setmetatable({ port = port }, Server):start()
end

--- Polls fn() every 10 ms until it returns a true value or timeout seconds
--- pass; returns that value (or nil).
function M.wait_for(fn, timeout)
  local deadline = M.now() + (timeout or 5)
  repeat
    local v = fn()
    if v then return v end
    M.sleep(0.01)
  until M.now() > deadline
  return fn()
end

return M
