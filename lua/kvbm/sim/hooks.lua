-- kvbm.sim.hooks: loads the hook tables users write for `kvbm sim` (tier
-- policies, schedulers, eviction backends) and checks them at load: an
-- unknown hook name is an error naming it (a misspelled `on_inactve` would
-- otherwise be silently ignored).
local type, pairs, tostring, error, loadfile, pcall, sort, concat =
  type, pairs, tostring, error, loadfile, pcall, table.sort, table.concat
local _ENV = nil

local M = {}

-- kind -> the hooks a table of that kind may hold ("name" labels reports).
M.KINDS = {
  tier = { what = "tier policy", hooks = { "on_register", "on_inactive", "onboard", "on_register_batch",
    "on_inactive_batch" } },
  scheduler = { what = "scheduler", hooks = { "pick_waiting", "pick_preempt" } },
  eviction = { what = "eviction policy", hooks = { "on_insert", "on_remove", "on_events", "victims" },
    required = "victims" },
}

local function fail(msg) error({ sim_error = true, msg = msg }, 0) end

--- Checks table t as hooks of kind; where names it in messages.
function M.check(kind, t, where)
  local k = M.KINDS[kind]
  local allowed = { name = true }
  for _, h in pairs(k.hooks) do allowed[h] = true end
  local names = {}
  for key in pairs(t) do names[#names + 1] = tostring(key) end
  sort(names)
  for _, key in pairs(names) do
    if not allowed[key] then
      fail(where .. ": unknown " .. k.what .. " hook '" .. key .. "' (known: " .. concat(k.hooks, ", ") .. ")")
    end
    local v = t[key]
    if key == "name" then
      if type(v) ~= "string" then fail(where .. ": name must be a string") end
    elseif type(v) ~= "function" then
      fail(where .. ": " .. k.what .. " hook '" .. key .. "' must be a function, not a " .. type(v))
    end
  end
  if k.required and t[k.required] == nil then fail(where .. ": an " .. k.what .. " needs a " .. k.required .. " hook") end
  return t
end

--- Loads a script returning a hook table of kind and checks it.
function M.load(kind, path, option)
  local what = M.KINDS[kind].what
  local chunk, err = loadfile(path, "t")
  if not chunk then fail(option .. ": cannot load " .. what .. ": " .. tostring(err)) end
  local ok, t = pcall(chunk)
  if not ok then fail(option .. ": " .. what .. " script " .. path .. " raised: " .. tostring(t)) end
  if type(t) ~= "table" then fail(option .. ": " .. what .. " script " .. path .. " must return a table of hooks") end
  M.check(kind, t, path)
  t.name = t.name or path
  return t
end

--- Wraps an eviction policy's hooks so that an error is remembered (the
--- engine would count it and fall back to insertion order): the sim aborts
--- on it, naming the hook and the script's line.
function M.guard_eviction(t, box)
  local out = { name = t.name }
  for _, h in pairs(M.KINDS.eviction.hooks) do
    local f = t[h]
    if f then
      out[h] = function(...)
        local ok, a = pcall(f, ...)
        if not ok then
          box.error = box.error or ("eviction hook " .. h .. " raised: " .. tostring(a))
          error(a, 0)
        end
        return a
      end
    end
  end
  return out
end

return M
