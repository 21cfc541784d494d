-- helper.lua — shared by the Lua specs: finds the moonflow module from the repository root (the
-- build folder is $MOONFLOW_BUILD, default build/, relative to the root) and compares tensors with
-- expected Lua values. A spec loads it with
--   local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
-- Run them all: busted --lua=lua5.4 tests/lua
local function dirname(p) return (p:gsub("/[^/]*$", "")) end
local root = (function()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  if src:sub(1, 1) ~= "/" then src = (os.getenv("PWD") or ".") .. "/" .. src end
  return dirname(dirname(dirname(src)))
end)()
local build = os.getenv("MOONFLOW_BUILD") or "build"
if build:sub(1, 1) ~= "/" then build = root .. "/" .. build end
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = build .. "/lua/?.so;" .. package.cpath

local mf = require "moonflow"
local H = { mf = mf, root = root }

-- Deep comparison of a Lua value (from totable) with an expected one; numbers within tol
-- (absolute + relative), integers and booleans exactly. Returns true or false, why.
local function same(a, b, tol, path)
  if type(b) == "table" then
    if type(a) ~= "table" then return false, path .. ": got " .. tostring(a) .. ", expected a table" end
    if #a ~= #b then return false, path .. ": got " .. #a .. " entries, expected " .. #b end
    for i = 1, #b do
      local ok, why = same(a[i], b[i], tol, path .. "[" .. i .. "]")
      if not ok then return false, why end
    end
    return true
  end
  if type(b) == "number" and type(a) == "number" then
    if b ~= b then return a ~= a, path .. ": expected nan, got " .. a end
    if math.type(a) == "integer" and math.type(b) == "integer" then
      return a == b, path .. ": got " .. a .. ", expected " .. b
    end
    if b == math.huge or b == -math.huge then return a == b, path .. ": got " .. a end
    return math.abs(a - b) <= tol * (1 + math.abs(b)), path .. ": got " .. a .. ", expected " .. b
  end
  return a == b, path .. ": got " .. tostring(a) .. ", expected " .. tostring(b)
end

-- H.equal(t, expected [, tol]): t a tensor (or Lua value), expected nested Lua values; numbers
-- within tol (default 1e-6, relative + absolute), integers and booleans exactly.
function H.equal(t, expected, tol)
  local v = mf.is_tensor(t) and t:totable() or t
  local ok, why = same(v, expected, tol or 1e-6, "value")
  assert(ok, why)
  return true
end

-- H.err(fn, needle): fn must raise an error whose message contains needle (plain text).
function H.err(fn, needle)
  local ok, msg = pcall(fn)
  assert(not ok, "expected an error containing '" .. needle .. "', but the call succeeded")
  msg = tostring(msg)
  assert(msg:find(needle, 1, true), "error '" .. msg .. "' does not contain '" .. needle .. "'")
  return msg
end

-- ---- files and shell commands for the specs ------------------------------------------------

-- A shell-quoted word.
function H.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The whole file, or nil when it cannot be read.
function H.readfile(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function H.writefile(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

-- A new empty folder under /tmp whose name starts with `prefix`.
function H.tmpdir(prefix)
  local p = io.popen("mktemp -d /tmp/" .. (prefix or "mf_spec") .. ".XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

return H
