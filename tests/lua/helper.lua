-- helper.lua — shared by the Lua specs: finds the moonflow module from the repository root (the
-- build folder is $MOONFLOW_BUILD, default build/, relative to the root), compares tensors with
-- expected Lua values, and holds the specs' file and shell helpers, the runner of the host binary
-- and the examples (H.BIN, H.sh, H.example), and the Python peers through /usr/bin/python3
-- (H.python, TensorBoard's reader H.tb / H.tensorboard, H.graph_def_py). A spec loads it with
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

-- H.tmpdirs(prefix) -> newdir, remove: newdir() makes a new empty folder (H.tmpdir(prefix)),
-- remove() removes all those it made. A spec file: local newdir, rm = H.tmpdirs(...); teardown(rm)
-- (busted's teardown is a global of the spec file only).
function H.tmpdirs(prefix)
  local dirs = {}
  local function newdir()
    local d = H.tmpdir(prefix)
    dirs[#dirs + 1] = d
    return d
  end
  local function remove()
    for _, d in ipairs(dirs) do os.execute("rm -rf " .. H.q(d)) end
    dirs = {}
  end
  return newdir, remove
end

-- The names in a folder (sorted), those matching the Lua pattern `pattern` when it is given; {}
-- for a missing folder.
function H.ls(dir, pattern)
  local out = {}
  local p = io.popen("ls -1 " .. H.q(dir) .. " 2>/dev/null")
  for l in p:lines() do
    if not pattern or l:match(pattern) then out[#out + 1] = l end
  end
  p:close()
  table.sort(out)
  return out
end

-- The lines of s (each ended by "\n"; a last line without one is dropped).
function H.lines(s)
  local r = {}
  for l in s:gmatch("([^\n]*)\n") do r[#r + 1] = l end
  return r
end

-- ---- the host binary and the examples ------------------------------------------------------

-- H.BIN: the absolute path of the host binary, $MOONFLOW_BIN or else $MOONFLOW_BUILD/moonflow
-- (default build/moonflow), relative paths taken from the repository root.
-- H.DATA: the MNIST files' folder, $MOONFLOW_DATA (nil when not set: those specs are pending).
H.BIN = os.getenv("MOONFLOW_BIN") or ((os.getenv("MOONFLOW_BUILD") or "build") .. "/moonflow")
if H.BIN:sub(1, 1) ~= "/" then H.BIN = root .. "/" .. H.BIN end
H.DATA = os.getenv("MOONFLOW_DATA")
-- H.SANITIZED: true in the ASan + UBSan pass (scripts/test.sh sets MOONFLOW_SANITIZED=1), where
-- training a CNN for real is too slow: such cases are left to the Release pass.
H.SANITIZED = os.getenv("MOONFLOW_SANITIZED") == "1"

-- H.sh(cmd [, opts]): runs the shell command cmd from the repository root; returns its output
-- (stdout and stderr; stdout alone with opts.stderr == false), whether it exited with status 0,
-- and its exit status.
function H.sh(cmd, opts)
  local redirect = (opts and opts.stderr == false) and " 2>/dev/null" or " 2>&1"
  local p = io.popen("cd " .. H.q(root) .. " && " .. cmd .. redirect)
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok == true, code
end

-- H.example(name, args [, opts]): runs examples/<name> with the host and the arguments (one shell
-- string) from the repository root, as a user does; returns what H.sh returns.
function H.example(name, args, opts)
  return H.sh(H.q(H.BIN) .. " examples/" .. name .. " " .. (args or ""), opts)
end

-- H.mnist_example(name, args [, opts]): H.example with `--data $MOONFLOW_DATA` before args.
function H.mnist_example(name, args, opts)
  return H.example(name, "--data " .. H.q(H.DATA) .. " " .. (args or ""), opts)
end

-- ---- Python peers through /usr/bin/python3 -------------------------------------------------

H.PY = "/usr/bin/python3"

-- H.can_import(stmt): whether H.PY runs the Python statement stmt (an import) without an error.
local imports = {}
function H.can_import(stmt)
  if imports[stmt] == nil then
    imports[stmt] = os.execute(H.PY .. " -c " .. H.q(stmt) .. " >/dev/null 2>&1") == true
  end
  return imports[stmt]
end

-- The import that TensorBoard's reader needs (H.can_import(H.TB_IMPORT) before H.tensorboard).
H.TB_IMPORT = "from tensorboard.backend.event_processing.event_accumulator import EventAccumulator"

-- H.python(code, ...): runs the Python program code with the arguments (each one word); returns its
-- output (stdout then stderr). A failing program is an error that shows its output.
function H.python(code, ...)
  local script = os.tmpname()
  H.writefile(script, code)
  local cmd = { H.PY, H.q(script) }
  for _, a in ipairs { ... } do cmd[#cmd + 1] = H.q(a) end
  local p = io.popen(table.concat(cmd, " ") .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  os.remove(script)
  assert(ok, "python failed:\n" .. out)
  return out
end

-- H.tb(dir, code): runs the Python snippet code with TensorBoard's EventAccumulator loaded for
-- the event files in dir as `ea` (every record kept); returns its output.
function H.tb(dir, code)
  return H.python("import sys\n" .. H.TB_IMPORT .. "\nea = EventAccumulator(sys.argv[1], " ..
    "size_guidance={'scalars': 0, 'histograms': 0, 'images': 0, 'tensors': 0})\nea.Reload()\n" ..
    code .. "\n", dir)
end

-- H.tensorboard(dir): what TensorBoard's reader finds in dir: {scalars = {tag = {[step] = value}},
-- histograms = {tag = {[step] = number of values}}, graph = number of nodes of its graph (0
-- without one)}.
function H.tensorboard(dir)
  local out = H.tb(dir, [[
for tag in ea.Tags()['scalars']:
    for e in ea.Scalars(tag): print('S', tag, e.step, repr(e.value))
for tag in ea.Tags()['histograms']:
    for e in ea.Histograms(tag): print('H', tag, e.step, int(e.histogram_value.num))
print('G', len(ea.Graph().node) if ea.Tags()['graph'] else 0)]])
  local r = { scalars = {}, histograms = {}, graph = tonumber(out:match "G (%d+)\n?$") }
  for kind, tag, step, v in out:gmatch "([SH]) (%S+) (%d+) (%S+)" do
    local t = kind == "S" and r.scalars or r.histograms
    t[tag] = t[tag] or {}
    t[tag][tonumber(step)] = tonumber(v)
  end
  return r
end

-- H.graph_def_py(arg, code): runs the Python snippet code with sys.argv[1] = arg and TensorBoard's
-- GraphDef protobuf module (graph_pb2) and tensor_util imported; returns its output lines. Needs
-- H.can_import("from tensorboard.compat.proto import graph_pb2").
function H.graph_def_py(arg, code)
  return H.lines(H.python("import sys\nfrom tensorboard.compat.proto import graph_pb2\n" ..
    "from tensorboard.util import tensor_util\n" .. code .. "\n", arg))
end

return H
