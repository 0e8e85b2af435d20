-- placeholder, filled below
local kvbm = require "kvbm"
describe("kvbm.trace", function()
  it("exists", function() assert.is_function(kvbm.trace.load) end)
end)
