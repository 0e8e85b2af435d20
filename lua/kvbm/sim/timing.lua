-- kvbm.sim.timing: the step-time model of `kvbm sim --mode timed`.
--
-- One engine step runs every scheduled token of the batch in one forward
-- pass. Its time is the sum of four terms (doc/sim.md explains them):
--
--   step_ms = base_ms                                  weights read once per step
--           + token_ms * (tokens scheduled)            the dense layers, compute-bound
--           + attn_ms  * sum over prefill chunks of n * (c + n / 2)
--                                                      attention of n new tokens over c cached ones
--           + kv_read_ms * (context tokens of decoding requests)
--                                                      decode attention, memory-bound
--
-- kv_read_ms defaults to kv_bytes_per_token / hbm_gbps (the KV read of one
-- context token). The defaults model Llama-3.1-8B in bf16 on one H100 SXM
-- (16 GB of weights at 3.35 TB/s; about 650 TFLOP/s reached by dense layers;
-- 2 * 8e9 FLOP per token; 4 * 4096 * 32 attention FLOP per token pair).
local type, pairs, tostring, error, loadfile, pcall, setmetatable, sort, concat =
  type, pairs, tostring, error, loadfile, pcall, setmetatable, table.sort, table.concat
local _ENV = nil

local M = {}

-- name, default, meaning: the one list of coefficients (--timing FILE.lua
-- returns a table with any of these names).
M.COEFFICIENTS = {
  { "base_ms", 5.0, "fixed cost of a step (weights read from HBM)" },
  { "token_ms", 0.025, "per scheduled token (dense layers)" },
  { "attn_ms", 8e-7, "per (new token, context token) pair of a prefill chunk" },
  { "hbm_gbps", 3350, "HBM bandwidth for decode KV reads, GB/s" },
  { "kv_read_ms", false, "per context token of a decoding request (default kv_bytes_per_token / hbm_gbps)" },
}

local function defaults()
  local t = {}
  for _, c in pairs(M.COEFFICIENTS) do t[c[1]] = c[2] end
  return t
end

--- The coefficients: the defaults overridden by the table `over`. An
--- unknown name is an error naming it and listing the known ones.
function M.coefficients(over, where)
  local t = defaults()
  local known = {}
  for _, c in pairs(M.COEFFICIENTS) do known[c[1]] = true end
  for k, v in pairs(over or {}) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do names[#names + 1] = name end
      sort(names)
      error({ sim_error = true, msg = (where or "timing") .. ": unknown coefficient '" .. tostring(k)
        .. "' (known: " .. concat(names, ", ") .. ")" })
    end
    if type(v) ~= "number" or v < 0 or v ~= v or v == 1 / 0 then
      error({ sim_error = true, msg = (where or "timing") .. ": " .. k .. " must be a finite non-negative number" })
    end
    t[k] = v
  end
  return t
end

--- Loads --timing FILE.lua (a script returning a table of coefficients).
function M.load(path)
  local chunk, err = loadfile(path, "t")
  if not chunk then error({ sim_error = true, msg = "--timing: " .. tostring(err) }) end
  local ok, t = pcall(chunk)
  if not ok then error({ sim_error = true, msg = "--timing " .. path .. " raised: " .. tostring(t) }) end
  if type(t) ~= "table" then error({ sim_error = true, msg = "--timing " .. path .. " must return a table" }) end
  return M.coefficients(t, path)
end

--- A step-time function for the coefficients c and the model's KV bytes per token.
function M.model(c, kv_bytes_per_token)
  local kv_read = c.kv_read_ms or (kv_bytes_per_token / (c.hbm_gbps * 1e9)) * 1e3
  local base, tok, attn = c.base_ms, c.token_ms, c.attn_ms
  return setmetatable({ kv_read_ms = kv_read }, { __index = c }), function(tokens, pairs_, decode_ctx)
    return base + tok * tokens + attn * pairs_ + kv_read * decode_ctx
  end
end

return M
