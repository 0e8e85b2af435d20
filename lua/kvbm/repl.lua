-- kvbm.repl: how the kvbm REPL shows values and completes names. Hashes
-- (16-byte strings whose mode bits are valid) print in Dynamo's Display form;
-- tables print inline, nested up to a small depth, with sequences first and
-- keys sorted; objects with a __tostring (metrics, tiers, managers) print
-- through it. complete() gives readline the Lua names that fit a word.
local kvbm = require "kvbm"

local type, tostring, pairs, ipairs, select = type, tostring, pairs, ipairs, select
local concat, sort, format = table.concat, table.sort, string.format
local pcall, print, getmetatable, next = pcall, print, getmetatable, next
local globals = _G
local _ENV = nil

local M = {}

local MAX_DEPTH, MAX_ITEMS = 3, 40

local function is_hash(v)
  if type(v) ~= "string" or #v ~= 16 then return false end
  return (pcall(kvbm.hash.position, v))
end

local show

local function show_key(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. show(k, MAX_DEPTH) .. "]"
end

function show(v, depth)
  local t = type(v)
  if t == "string" then
    if is_hash(v) then return "<" .. kvbm.hash.tostring(v) .. ">" end
    return format("%q", v)
  elseif t ~= "table" then
    return tostring(v)
  end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  if depth >= MAX_DEPTH then return "{...}" end
  local parts, n = {}, #v
  for i = 1, n do
    if #parts >= MAX_ITEMS then parts[#parts + 1] = "..." break end
    parts[#parts + 1] = show(v[i], depth + 1)
  end
  local keys = {}
  for k in pairs(v) do
    if not (type(k) == "number" and k >= 1 and k <= n and k % 1 == 0) then keys[#keys + 1] = k end
  end
  sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(keys) do
    if #parts >= MAX_ITEMS then parts[#parts + 1] = "..." break end
    parts[#parts + 1] = show_key(k) .. " = " .. show(v[k], depth + 1)
  end
  return "{" .. concat(parts, ", ") .. "}"
end

--- Returns the REPL's text for one value.
function M.show(v) return show(v, 0) end

--- Prints values the way the REPL does (tab separated, like print).
function M.print(...)
  local out = {}
  for i = 1, select("#", ...) do out[i] = show((select(i, ...)), 0) end
  print(concat(out, "\t"))
end

-- ------------------------------------------------------------ completion

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }

-- v[k] without raising (a userdata or an __index function may refuse)
local function index(v, k)
  local ok, r = pcall(function() return v[k] end)
  if ok then return r end
end

local function add_name(out, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then out[k] = true end
end

-- Adds the identifier keys of v, of its __index tables and of theirs, and
-- the names a metatable's __lazy lists (fields an __index function loads on
-- first use: the kvbm module's pure-Lua parts, kvbm.tiers and the others).
local function add_keys(v, out, seen)
  for _ = 1, 8 do -- a bounded __index chain
    if v == nil or seen[v] then return end
    seen[v] = true
    if type(v) == "table" then
      for k in next, v do add_name(out, k) end
    end
    local mt = getmetatable(v)
    if type(mt) ~= "table" then return end
    if type(mt.__lazy) == "table" then
      for _, k in ipairs(mt.__lazy) do add_name(out, k) end
    end
    v = mt.__index
    if type(v) ~= "table" then return end
  end
end

--- Completions of a word: a global ("kvbm"), a field ("kvbm.hash.to") or a
--- method ("m:me"); returns the whole words that fit, sorted. `env` (the
--- globals by default) is where names are looked up.
function M.complete(word, env)
  env = env or globals
  local prefix, sep, partial = word:match("^(.-)([.:]?)([%a_]?[%w_]*)$")
  if not prefix then return {} end
  local target = env
  if sep ~= "" then
    if not prefix:match("^[%a_][%w_]*$") and not prefix:match("^[%a_][%w_%.]*[%w_]$") then return {} end
    for name in prefix:gmatch("[^.]+") do
      if not name:match("^[%a_][%w_]*$") then return {} end
      target = index(target, name)
      if target == nil then return {} end
    end
  elseif prefix ~= "" then
    return {}
  end
  local keys = {}
  add_keys(target, keys, {})
  if sep == "" then for _, k in ipairs(KEYWORDS) do keys[k] = true end end
  local out = {}
  for k in pairs(keys) do
    if k:sub(1, #partial) == partial and (sep ~= ":" or type(index(target, k)) == "function") then
      out[#out + 1] = prefix .. sep .. k
    end
  end
  sort(out)
  return out
end

return M
