-- kvbm.repl: how the kvbm REPL shows values. Hashes (16-byte strings whose
-- mode bits are valid) print in Dynamo's Display form; tables print inline,
-- nested up to a small depth, with sequences first and keys sorted.
local kvbm = require "kvbm"

local type, tostring, pairs, ipairs, select = type, tostring, pairs, ipairs, select
local concat, sort, format = table.concat, table.sort, string.format
local pcall, print, getmetatable = pcall, print, getmetatable
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

return M
