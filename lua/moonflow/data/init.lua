-- moonflow/data/init.lua — `mf.data`: data sets and loaders. Each data set is a submodule loaded
-- on first use (`mf.data.mnist` requires "moonflow.data.mnist"), the way moonflow/init.lua loads
-- mf.nn, mf.optim, ...; a name with no file stays nil.
local data = {}

local missing = { init = true }

return setmetatable(data, {
  __index = function(t, k)
    if type(k) ~= "string" or missing[k] or not k:match("^[%a_][%w_]*$") then return nil end
    local name = "moonflow.data." .. k
    if package.loaded[name] == nil and not package.preload[name]
        and not package.searchpath(name, package.path) then
      missing[k] = true
      return nil
    end
    local m = require(name)
    rawset(t, k, m)
    return m
  end,
})
