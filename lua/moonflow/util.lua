-- util.lua — small pieces the Lua side of moonflow shares: errors raised at the user's line, and
-- submodules loaded on first use.
local util = {}

-- util.errors(source) -> fail, call for the file whose debug source is `source`
-- (debug.getinfo(1, "S").source in that file):
--   fail(fmt, ...) raises string.format(fmt, ...) at the first caller outside that file, so the
--   message points at the user's line;
--   call(f, ...) runs f(...) and re-raises its error the same way, or returns its results.
function util.errors(source)
  local function fail(fmt, ...)
    local level = 2
    while true do
      local info = debug.getinfo(level, "S")
      if not info or info.source ~= source then break end
      level = level + 1
    end
    error(string.format(fmt, ...), level)
  end
  local function call(f, ...)
    local res = table.pack(pcall(f, ...))
    if not res[1] then fail("%s", tostring(res[2])) end
    return table.unpack(res, 2, res.n)
  end
  return fail, call
end

-- util.lazy(t, prefix [, skip]): t.name requires prefix .. name on first use when that module
-- exists (a name with no module stays nil and is remembered as missing); names in `skip` never
-- load. Returns t.
function util.lazy(t, prefix, skip)
  local missing = {}
  for k in pairs(skip or {}) do missing[k] = true end
  return setmetatable(t, {
    __index = function(self, k)
      if type(k) ~= "string" or missing[k] or not k:match("^[%a_][%w_]*$") then return nil end
      local name = prefix .. k
      if package.loaded[name] == nil and not package.preload[name]
          and not package.searchpath(name, package.path) then
        missing[k] = true
        return nil
      end
      local m = require(name)
      rawset(self, k, m)
      return m
    end,
  })
end

return util
