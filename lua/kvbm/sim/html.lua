-- kvbm.sim.html: `kvbm sim --html FILE`, one self-contained page (inline
-- SVG, no script, nothing fetched): hit rate per tier over time, pool
-- occupancy per tier over time, and the TTFT distribution; with --compare,
-- one line per configuration (and tier), and first a bar chart of each
-- configuration's hit rate (LRU and the offline optimum marked).
local report = require "kvbm.sim.report"
local ipairs, format, concat, sort, max, min, floor, huge =
  ipairs, string.format, table.concat, table.sort, math.max, math.min, math.floor, math.huge
local _ENV = nil

local M = {}

local COLORS = { "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf" }
local W, H, L, R, T, B = 720, 300, 60, 170, 30, 40

local function esc(s) return (s:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;")) end

-- At most n points of (xs, ys), evenly picked (the last one kept).
local function thin(xs, ys, n)
  if #xs <= n then return xs, ys end
  local ox, oy = {}, {}
  for i = 1, n do
    local k = floor((i - 1) * (#xs - 1) / (n - 1)) + 1
    ox[i], oy[i] = xs[k], ys[k]
  end
  return ox, oy
end

--- An SVG line chart: series = { { name =, xs =, ys = } ... }.
function M.chart(title, xlabel, ylabel, series, ymax)
  local x0, x1, y1 = huge, -huge, ymax or 0
  for _, s in ipairs(series) do
    for i = 1, #s.xs do
      x0, x1 = min(x0, s.xs[i]), max(x1, s.xs[i])
      if not ymax then y1 = max(y1, s.ys[i]) end
    end
  end
  if x0 == huge then x0, x1 = 0, 1 end
  if x1 <= x0 then x1 = x0 + 1 end
  if y1 <= 0 then y1 = 1 end
  local pw, ph = W - L - R, H - T - B
  local function px(x) return L + (x - x0) / (x1 - x0) * pw end
  local function py(y) return T + ph - y / y1 * ph end
  local out = { format('<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="%d" height="%d" viewBox="0 0 %d %d">', W, H, W, H),
    format('<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>', L, esc(title)),
    format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>', L, T, pw, ph) }
  for k = 0, 4 do
    local y = y1 * k / 4
    out[#out + 1] = format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>',
      L, L + pw, py(y), py(y), L - 4, py(y) + 3, format(y1 <= 1 and "%.0f%%" or "%.0f", y1 <= 1 and y * 100 or y))
    local x = x0 + (x1 - x0) * k / 4
    out[#out + 1] = format('<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%.0f</text>', px(x), T + ph + 14, x)
  end
  out[#out + 1] = format('<text x="%d" y="%d" font-size="11" text-anchor="middle">%s</text>', L + pw // 2, H - 6, esc(xlabel))
  out[#out + 1] = format('<text x="12" y="%d" font-size="11" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>',
    T + ph // 2, T + ph // 2, esc(ylabel))
  for i, s in ipairs(series) do
    local xs, ys = thin(s.xs, s.ys, 600)
    local pts = {}
    for k = 1, #xs do pts[k] = format("%.1f,%.1f", px(xs[k]), py(ys[k])) end
    local c = COLORS[(i - 1) % #COLORS + 1]
    out[#out + 1] = format('<polyline class="series" data-name="%s" data-points="%d" fill="none" stroke="%s" stroke-width="1.5" points="%s"/>',
      esc(s.name), #xs, c, concat(pts, " "))
    out[#out + 1] = format('<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d" font-size="11">%s</text>',
      W - R + 10, W - R + 28, T + 10 + 16 * (i - 1), T + 10 + 16 * (i - 1), c, W - R + 32, T + 14 + 16 * (i - 1), esc(s.name))
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- the fills of bar charts: an ordinary bar, LRU (the baseline), the optimum
local BAR, BASELINE, OPTIMUM = "#1f77b4", "#ff7f0e", "#9e9e9e"

--- An SVG bar chart of fractions: bars = { { name =, value =, kind =
--- "baseline"|"optimum"|nil, note = } ... }. The optimum's height is drawn
--- across as the upper bound, and LRU's as the baseline; note (e.g. the gap
--- closed) is written over the bar's value.
function M.bars(title, ylabel, bars)
  local y1 = 0
  for _, b in ipairs(bars) do y1 = max(y1, b.value) end
  y1 = min(1, max(0.1, floor(y1 * 10 + 1) / 10)) -- the next 10 % above the tallest bar
  local bw, bl, bb = W + 80, L, 70 -- wider than the line charts, room for the names below
  local pw, ph = bw - bl - 110, H - T - bb -- the bounds are named right of the plot
  local function py(y) return T + ph - y / y1 * ph end
  local out = { format('<svg xmlns="http://www.w3.org/2000/svg" class="chart bars" width="%d" height="%d" viewBox="0 0 %d %d">', bw, H, bw, H),
    format('<text x="%d" y="18" font-size="14" font-weight="bold">%s</text>', bl, esc(title)),
    format('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>', bl, T, pw, ph),
    format('<text x="12" y="%d" font-size="11" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>',
      T + ph // 2, T + ph // 2, esc(ylabel)) }
  for k = 0, 4 do
    local y = y1 * k / 4
    out[#out + 1] = format('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" font-size="10" text-anchor="end">%.0f%%</text>',
      bl, bl + pw, py(y), py(y), bl - 4, py(y) + 3, y * 100)
  end
  local slot = pw / max(1, #bars)
  for i, b in ipairs(bars) do
    local x, w = bl + (i - 1) * slot + slot * 0.15, slot * 0.7
    local fill = b.kind == "optimum" and OPTIMUM or b.kind == "baseline" and BASELINE or BAR
    out[#out + 1] = format('<rect class="bar" data-name="%s" data-value="%.6f" data-kind="%s" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>',
      esc(b.name), b.value, b.kind or "", x, py(b.value), w, T + ph - py(b.value), fill)
    out[#out + 1] = format('<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle">%.2f%%</text>', x + w / 2, py(b.value) - 3, 100 * b.value)
    if b.note then
      out[#out + 1] = format('<text x="%.1f" y="%.1f" font-size="9" fill="#555" text-anchor="middle">%s</text>', x + w / 2, py(b.value) - 14, esc(b.note))
    end
    out[#out + 1] = format('<text x="%.1f" y="%d" font-size="11" text-anchor="end" transform="rotate(-35 %.1f %d)">%s</text>',
      x + w / 2, T + ph + 14, x + w / 2, T + ph + 14, esc(b.name))
  end
  for _, b in ipairs(bars) do -- the bounds, over the bars
    if b.kind then
      local c, what = b.kind == "optimum" and "#333" or BASELINE, b.kind == "optimum" and "upper bound" or "baseline"
      out[#out + 1] = format('<line class="%s" x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>'
        .. '<text x="%d" y="%.1f" font-size="10" fill="%s">%s:</text><text x="%d" y="%.1f" font-size="10" fill="%s">%s %.2f%%</text>',
        b.kind, bl, bl + pw + 6, py(b.value), py(b.value), c, bl + pw + 8, py(b.value) - 2, c, what,
        bl + pw + 8, py(b.value) + 10, c, esc(b.name), 100 * b.value)
    end
  end
  out[#out + 1] = "</svg>"
  return concat(out, "\n")
end

-- The empirical distribution function of xs.
local function cdf(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  sort(s)
  local ys = {}
  for i = 1, #s do ys[i] = i / #s end
  return s, ys
end

-- The bar chart of a --compare run: each configuration's hit rate, the
-- optimum and LRU marked, and the gap each closes.
local function compare_bars(reps)
  local lru, opt = report.bounds(reps)
  local gap = report.gap_closed(reps)
  local bars = {}
  for i, r in ipairs(reps) do
    local g = r ~= lru and r ~= opt and gap(r)
    bars[i] = { name = r.label, value = r.hit_rate, kind = r == opt and "optimum" or r == lru and "baseline" or nil,
      note = g and format("gap %.1f%%", 100 * g) or nil }
  end
  local title = "hits in any tier / full blocks looked up" .. (lru and opt and "; gap: share of LRU -> optimum closed" or "")
  return title, bars
end

--- The page for the reports reps (one, or one per --compare configuration;
--- compare_text: the --compare table).
function M.page(reps, compare_text)
  local timed = reps[1].mode == "timed"
  local xlabel = timed and "simulated time (s)" or "requests replayed"
  local hit, occ, ttft = {}, {}, {}
  for _, r in ipairs(reps) do
    local s = r.series
    local prefix = #reps > 1 and (r.label .. " ") or ""
    for _, name in ipairs { "G1", "G2", "G3" } do
      if s.hits[name] and #s.hits[name] > 0 then
        -- hit rate over a moving window of about 1/50 of the run
        local xs, ys, n = {}, {}, #s.x
        local span = max(1, n // 50)
        for k = 1, n do
          local j = max(1, k - span)
          local looked = s.lookups[k] - (k > span and s.lookups[j] or 0)
          local hits = s.hits[name][k] - (k > span and s.hits[name][j] or 0)
          xs[k], ys[k] = s.x[k], looked > 0 and hits / looked or 0
        end
        hit[#hit + 1] = { name = prefix .. name, xs = xs, ys = ys }
        occ[#occ + 1] = { name = prefix .. name, xs = s.x, ys = s.used[name] }
      end
    end
    if r.ttft_list and #r.ttft_list > 0 then
      local xs, ys = cdf(r.ttft_list)
      ttft[#ttft + 1] = { name = #reps > 1 and r.label or "TTFT", xs = xs, ys = ys }
    end
  end
  local out = { '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>kvbm sim report</title>',
    '<style>body{font-family:sans-serif;margin:2em;max-width:900px}pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>',
    "<h1>kvbm sim</h1>" }
  local r1 = reps[1]
  out[#out + 1] = format("<p>%s%d requests, %s mode, block size %d, G1 %d blocks%s</p>",
    r1.trace and esc("trace: " .. r1.trace .. "; ") or "", r1.requests, r1.mode, r1.block_size, r1.tiers.G1.blocks,
    #reps > 1 and format("; %d configurations compared", #reps) or "")
  if #reps > 1 then
    out[#out + 1] = "<h2>Hit rate per configuration</h2>"
    local title, bars = compare_bars(reps)
    out[#out + 1] = M.bars(title, "hit rate", bars)
    if compare_text then out[#out + 1] = "<pre>" .. esc(compare_text) .. "</pre>" end
  end
  for _, r in ipairs(reps) do out[#out + 1] = "<pre>" .. esc(r.text) .. "</pre>" end
  out[#out + 1] = "<h2>Hit rate per tier over time</h2>"
  out[#out + 1] = M.chart("hits in the tier / full blocks looked up (moving window)", xlabel, "hit rate", hit, 1)
  out[#out + 1] = "<h2>Pool occupancy per tier over time</h2>"
  out[#out + 1] = M.chart("blocks holding KV / tier capacity", xlabel, "occupancy", occ, 1)
  out[#out + 1] = "<h2>TTFT distribution</h2>"
  if #ttft > 0 then
    out[#out + 1] = M.chart("fraction of requests with TTFT at most x", "TTFT (ms)", "requests", ttft, 1)
  else
    out[#out + 1] = "<p>No TTFT in replay mode (run with --mode timed).</p>"
  end
  out[#out + 1] = "</body></html>\n"
  return concat(out, "\n")
end

return M
