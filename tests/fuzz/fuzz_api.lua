-- fuzz_api.lua — a random caller of moonflow's Lua API (mf.*, tensor methods, mf.nn.functional,
-- mf._nn, mf._optim, mf.cuda, mf.nn/mf.optim classes, mf.io, mf._image, mf._summary, operators,
-- indexing). Each episode builds a pool of interesting values (tensors of every dtype and shape
-- kind: 0-d, empty, 1-D, 4-D, transposed, narrowed, expanded, strided, channels-last views, on the
-- CPU and on each GPU; closed tensors; tensors requiring grad; numbers such as NaN, 1e300, huge
-- integers and math.mininteger; strings; shape, option and ragged tables; nil, booleans,
-- functions; well-formed modules and optimizers, some of whose parameters get odd gradients), then
-- makes random calls through pcall, feeding results back into the pool, calling backward on
-- results that need gradients, and calling methods of the pool's objects (modules' forward, step,
-- state_dict, load_state_dict, to, register_*, ...) and training steps on its modules (forward on
-- an input of the shape the module takes, in a random float dtype and mostly on its device,
-- backward, the optimizer's step and zero_grad; sometimes after the module was moved or converted
-- under its optimizer, a gradient replaced or a parameter closed). One episode in five first
-- builds a graph in a fresh mf.Graph (placeholders of random dtypes and shapes, constants,
-- variables, random calls on its symbolic tensors, sometimes a mf.train optimizer's minimize) and
-- runs it in a Session with random fetches and feeds (fitting tensors, tensors of other shapes,
-- dtypes and devices, strings, numbers, unknown keys).
--
-- Every outcome must be a result or a clear error. A failure is: the process dying (a crash or a
-- sanitizer report: run it on the sanitized host, build-asan/moonflow), an error message that is
-- not a string, empty, "?"-named or a bare status name ("shape error"), an error from Lua itself
-- inside moonflow's Lua code ("attempt to index a nil value") instead of one naming what is
-- wrong, or a result that breaks a cheap invariant (a tensor whose numel is not the product of
-- its shape, a closed result, nested tables that do not match the shape), or a call still running
-- after 10 s (a debug hook stops it: a loop of tail calls never returns to be timed).
--
--   moonflow tests/fuzz/fuzz_api.lua SECONDS CORPUS_DIR CRASH_DIR
-- CORPUS_DIR holds seed files (each a decimal seed): their episodes run first, then episodes of
-- FUZZ_SEED (default 1) until SECONDS have passed, so a run is reproducible. While an episode
-- runs, CRASH_DIR/api-episode names it (removed at a clean end): replay one episode with
--   FUZZ_SEED=S FUZZ_EPISODE=K FUZZ_TRACE=1 moonflow tests/fuzz/fuzz_api.lua 1 CORPUS_DIR CRASH_DIR
-- which prints every call to stderr before making it.
-- Lua's own errors raised in moonflow's Lua layer ("attempt to index a nil value": a missing
-- argument check) are listed as `note:` lines and fail the run (FUZZ_STRICT=0: notes only).
-- Prints `ok: fuzz_api (R calls in E episodes, S s, F functions)` or `FAILED: fuzz_api (...)`
-- and exits 1 then.
local secs, corpus, crashes = tonumber(arg[1]) or 10, arg[2], arg[3]
assert(corpus and crashes, "usage: fuzz_api.lua SECONDS CORPUS_DIR CRASH_DIR")
local mf = require "moonflow"

local seeds = {}
for name in io.popen("ls " .. corpus):lines() do
  local f = assert(io.open(corpus .. "/" .. name, "rb"))
  local s = tonumber((f:read("a"):match("%-?%d+")))
  f:close()
  if s then seeds[#seeds + 1] = s end
end
assert(#seeds > 0, "no seeds in " .. corpus)
local base_seed = tonumber(os.getenv("FUZZ_SEED") or "") or 1
local only_episode = tonumber(os.getenv("FUZZ_EPISODE") or "")
local trace = os.getenv("FUZZ_TRACE") == "1"
local marker = crashes .. "/api-episode"
local tmpdir = os.tmpname()
os.remove(tmpdir)
assert(os.execute("mkdir -p " .. tmpdir))

local rand = math.random
-- an eager tensor (mf.is_tensor also takes graph-mode symbolic tensors, which are tables)
local function is_eager(v) return type(v) == "userdata" and mf.is_tensor(v) end
local is_sym = mf.is_symbolic
local function pick(t) return t[rand(1, #t)] end
local gpus = mf.cuda.is_available() and mf.cuda.device_count() or 0
local devices = { "cpu" }
for i = 0, math.min(gpus, 2) - 1 do devices[#devices + 1] = "cuda:" .. i end

-- ---- the functions ------------------------------------------------------------------------------
-- Not called: what changes the process (threads, eager/graph mode, the default session), writes
-- outside the temporary directory, reserves GPU memory, downloads, or builds graphs.
local SKIP = {
  ["mf.set_num_threads"] = true, ["mf.disable_eager_execution"] = true,
  ["mf.enable_eager_execution"] = true, ["mf.InteractiveSession"] = true, ["mf.Session"] = true,
  ["mf.Graph"] = true, ["mf.reset_default_graph"] = true, ["mf.import_graph_def"] = true,
  ["mf.load_graph"] = true, ["mf.placeholder"] = true, ["mf.Variable"] = true,
  ["mf.global_variables_initializer"] = true, ["mf.initialize_all_variables"] = true,
  ["mf.variables_initializer"] = true, ["mf.print_all_variables"] = true,
  ["mf.variable_scope"] = true, ["mf.name_scope"] = true, ["mf.graph_lift"] = true,
  ["mf.add_to_collection"] = true, ["mf.get_collection"] = true, ["mf.get_default_session"] = true,
  ["mf.get_default_graph"] = true, ["mf.global_variables"] = true,
  ["mf.trainable_variables"] = true, ["mf._set_default_device"] = true,
  ["cuda.reserve_memory"] = true, ["cuda.set_memory_fraction"] = true,
  ["_summary.open"] = true, ["nn.Module"] = true,
}
-- Writers: their first argument becomes a path in the temporary directory.
local WRITERS = { ["mf.save"] = true, ["mf.save_npy"] = true, ["mf.save_npz"] = true,
  ["io.write_idx"] = true, ["_image.save"] = true }
-- Functions whose number arguments are dims, indices or options, not sizes to allocate: the size
-- guard counts only their tensor arguments.
local NOALLOC = {}
for _, n in ipairs { "narrow", "select", "transpose", "size", "stride", "squeeze", "unsqueeze",
  "flatten", "permute", "cuda", "manual_seed", "set_rng_state", "item", "sum", "mean", "prod",
  "max", "min", "argmax", "argmin", "var", "std", "softmax", "log_softmax", "gather", "to",
  "fill_", "clamp", "add", "sub", "mul", "div", "pow", "remainder", "floor_divide", "maximum",
  "minimum", "eq", "ne", "lt", "le", "gt", "ge", "index_select", "memory_allocated",
  "max_memory_allocated", "memory_reserved", "synchronize", "why_unavailable",
  "get_device_properties", "same_padding", "dropout", "dropout_mask", "cast_scaled",
  "md5_string", "crc32c", "masked_crc32c", "requires_grad", "backward", "expand", "view",
  "reshape" } do
  NOALLOC[n] = true
end

local funcs = {} -- {name =, fn =, method = bool, short =}
local function add_funcs(prefix, tbl, method)
  local names = {}
  for k, v in pairs(tbl) do
    local callable = type(v) == "function" or (type(v) == "table" and getmetatable(v) and
      getmetatable(v).__call)
    if type(k) == "string" and callable then names[#names + 1] = k end
  end
  table.sort(names)
  for _, k in ipairs(names) do
    local full = prefix .. "." .. k
    -- F._*: the functional module's internal helpers, called by its own code only
    if not SKIP[full] and not (prefix == "F" and k:sub(1, 1) == "_") then
      funcs[#funcs + 1] = { name = full, fn = tbl[k], method = method, short = k,
        writer = WRITERS[full] }
    end
  end
end
local _ = mf.nn, mf.optim -- load the lazy submodules (they add tensor methods)
add_funcs("mf", mf, false)
add_funcs("Tensor", mf.Tensor, true)
add_funcs("F", mf.nn.functional, false)
add_funcs("nn", mf.nn, false)
add_funcs("init", mf.nn.init, false) -- the in-place initialisers (uniform_, kaiming_normal_, ...)
add_funcs("_nn", mf._nn, false)
add_funcs("_optim", mf._optim, false)
add_funcs("optim", mf.optim, false)
add_funcs("cuda", mf.cuda, false)
add_funcs("io", mf.io, false)
add_funcs("_image", mf._image, false)
add_funcs("_summary", mf._summary, false)
if rawget(mf, "linalg") then add_funcs("linalg", mf.linalg, false) end

-- Call stubs: the call is spelled `M.name(...)` or `x:name(...)`, as user code spells it, so that
-- messages name the function as they would there.
local stubs = {}
local function stub(f)
  local key = (f.method and ":" or ".") .. f.short
  if not stubs[key] then
    local ident = f.short:match("^[%a_][%w_]*$") and f.short or "x"
    local src = f.method and ("local f = ... return function(x, ...) return x:%s(...) end")
        :format(ident)
        or ("local f = ... local M = { %s = f } return function(...) return M.%s(...) end")
        :format(ident, ident)
    stubs[key] = src
  end
  local direct = ("local f = ... local Tensor = { %s = f } return function(...) return Tensor.%s(...) end")
      :format(f.short:match("^[%a_][%w_]*$") and f.short or "x", f.short:match("^[%a_][%w_]*$") and f.short or "x")
  if f.method then
    -- a non-tensor receiver: x:name() would fail in Lua; call mf.Tensor.name(x, ...) instead
    return assert(load(stubs[key]))(f.fn), assert(load(direct))(f.fn)
  end
  return assert(load(stubs[key]))(f.fn)
end
for _, f in ipairs(funcs) do f.call, f.direct = stub(f) end

-- ---- the pool of values -------------------------------------------------------------------------
local NUMBERS = { 0, 1, -1, 2, 3, 4, 0.5, -1.5, 1e300, -1e300, 0 / 0, 1 / 0, -1 / 0, 1e-300, -0.0,
  1 << 31, 1 << 32, (1 << 32) + 1, 1 << 53, 1 << 62, math.maxinteger, math.mininteger, 2 ^ 63,
  -2, 7, 1.0 }
local STRINGS = { "", "float32", "float64", "int32", "int64", "uint8", "bool", "float16",
  "bfloat16", "double", "cpu", "cuda:0", "cuda:1", "cuda:7", "/gpu:0", "/cpu:0", "cuda", "sum",
  "mean", "none", "same", "valid", "x", ("a"):rep(300), "\0", "nan", "1", "-1", "%s%d%n" }
local DTYPES = { "float32", "float64", "int32", "int64", "uint8", "bool" }
local GPU_DTYPES = { "float32", "float64", "int32", "int64", "uint8", "bool", "float16", "bfloat16" }
local SHAPES = { {}, { 0 }, { 3 }, { 5 }, { 2, 0, 3 }, { 2, 3 }, { 1, 3 }, { 3, 1 }, { 2, 3, 4, 5 },
  { 1, 1, 1, 1 }, { 2, 1, 4, 4 }, { 2, 2, 3, 3 }, { 4, 4 } }

local function fuzz_error() error("fuzz: deliberate error from a callback") end

-- A tensor of dtype dt and shape sh on dev, in a layout: contiguous, transposed, narrowed,
-- expanded, strided or channels-last.
local function make_tensor(dt, sh, dev)
  local layout = rand(1, 6)
  local base = sh
  if layout == 2 and #sh >= 2 then -- transposed: made as the transpose's shape
    base = { table.unpack(sh) }
    base[1], base[#sh] = sh[#sh], sh[1]
  elseif layout == 3 and #sh >= 1 then -- narrowed from a larger first dim
    base = { table.unpack(sh) }
    base[1] = sh[1] + 2
  elseif layout == 5 and #sh >= 1 then -- strided: every second element of a larger first dim
    base = { table.unpack(sh) }
    base[1] = sh[1] * 2
  elseif layout == 6 and #sh == 4 then -- channels-last: NHWC permuted to NCHW
    base = { sh[1], sh[3], sh[4], sh[2] }
  end
  local t
  if dt == "bool" then
    t = mf.rand(base, { device = dev }):gt(0.5)
  elseif dt == "float16" or dt == "bfloat16" or dt == "float32" or dt == "float64" then
    t = mf.randn(base, { device = dev, dtype = (dt == "float64") and dt or "float32" })
    if rand(4) == 1 and t:numel() > 0 then t:view(-1)[1] = pick { 0 / 0, 1 / 0, -1 / 0, 1e30 } end
    if dt == "float16" or dt == "bfloat16" then t = t:to(dt) end
  else
    t = mf.randn(base, { device = dev }):mul(3):to(dt)
  end
  if layout == 2 and #sh >= 2 then
    t = t:transpose(1, #sh)
  elseif layout == 3 and #sh >= 1 then
    t = t:narrow(1, 2, sh[1])
  elseif layout == 4 then -- expanded from size-1 dims
    local one = {}
    for d = 1, #sh do one[d] = (sh[d] == 0 or rand(2) == 1) and sh[d] or 1 end
    t = mf.zeros(one, { dtype = t:dtype() ~= "bool" and t:dtype() or nil, device = dev })
    if t:dtype() == "float32" and rand(2) == 1 then t = t:bool() end
    t = t:expand(sh)
  elseif layout == 5 and #sh >= 1 and sh[1] > 0 then
    t = t[{ { 1, -1, 2 } }]
  elseif layout == 6 and #sh == 4 then
    t = t:permute(1, 4, 2, 3)
  end
  if (dt == "float32" or dt == "float64") and rand(3) == 1 and layout ~= 4 then
    t = t:detach():requires_grad() -- a leaf requiring grad
    if rand(2) == 1 then t = t * 2 end -- or a recorded result
  end
  return t
end

local pool, leaves
local function push(v)
  if #pool < 80 then pool[#pool + 1] = v else pool[rand(1, #pool)] = v end
end

local function ragged() return pick { { { 1, 2 }, { 3 } }, { 1, { 2 } }, { { 1 }, 2 }, { {}, { 1 } },
  { 1, "a" }, { 1, nil, 3 }, { { { { { { { { { { 1 } } } } } } } } } }, { true, 1.5, 2 } } end

local function weird_table()
  return pick {
    setmetatable({}, { __len = function() return (1 << 32) + 2 end }),
    setmetatable({}, { __index = function() error("fuzz: deliberate error from __index") end,
      __len = function() return 2 end }),
    setmetatable({ 1, 2 }, { __len = function() return -3 end }),
  }
end

local function option_table()
  local keys = { "dtype", "device", "requires_grad", "kernel", "stride", "pad", "dim", "lr",
    "momentum", "eps", "reduction", "retain_graph", "create_graph", "names", "return_indices",
    "count_include_pad", "unbiased", "correction", "weight_decay", "betas", "p", "training",
    "padding", "bias", "keepdim", "channels", "layout", "data_format" }
  local o = {}
  for _ = 1, rand(1, 3) do
    local v = rand(3) == 1 and pick(STRINGS) or rand(3) == 1 and pick(NUMBERS)
        or pick { true, false, { 2, 2 }, { 1, 2, 3 }, { 0 }, { -1, 1 }, {}, { 2.5, 1 } }
    o[pick(keys)] = v
  end
  return o
end

local function shape_table()
  return pick { {}, { 0 }, { 2, 3 }, { -1 }, { 2, -1 }, { -1, -1 }, { 6 }, { 3, 2 }, { 1.5 },
    { "a" }, { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, { 1 << 62, 1 << 62 }, { math.maxinteger },
    { math.mininteger }, { 1 << 53, 0 }, { 2, 3, 1 }, { 1, 1, 1, 1, 1, 1, 1, 1 }, { 0 / 0 },
    { 2, 1, 3 } }
end

local function list_of_tensors()
  local l = {}
  for i = 1, rand(1, 3) do
    local v = pool[rand(1, #pool)]
    l[i] = (mf.is_tensor(v) or rand(4) > 1) and v or pick(NUMBERS)
  end
  return l
end

local closed_tensor
local function new_pool()
  pool, leaves = {}, {}
  for _ = 1, 24 do
    local dev = pick(devices)
    local dt = pick(dev == "cpu" and DTYPES or GPU_DTYPES)
    local ok, t = pcall(make_tensor, dt, pick(SHAPES), dev)
    if ok then
      pool[#pool + 1] = t
      if t.is_leaf and t:needs_grad() then leaves[#leaves + 1] = t end
    end
  end
  closed_tensor = mf.zeros { 2 }
  closed_tensor:close()
end

-- A random argument: mostly pool tensors, else the other kinds.
local function random_arg(depth)
  local k = rand(1, 20)
  if k <= 8 then return pool[rand(1, #pool)] end
  if k == 9 then return pick(NUMBERS) end
  if k == 10 then return pick(STRINGS) end
  if k == 11 then return shape_table() end
  if k == 12 then return option_table() end
  if k == 13 then return ragged() end
  if k == 14 then return list_of_tensors() end
  if k == 15 then return pick { true, false } end
  if k == 16 then return nil end
  if k == 17 then return closed_tensor end
  if k == 18 then
    return pick { function(...) return ... end, fuzz_error, function() return mf.ones { 2 } end,
      coroutine.create(print) }
  end
  if k == 19 then return rand(-2, 4) end
  if (depth or 0) < 1 then return { random_arg(1), random_arg(1) } end
  return weird_table()
end

-- ---- the size guard ---------------------------------------------------------------------------
-- Calls that could legitimately allocate gigabytes are not made: the product of the arguments'
-- sizes (tensor element counts, integer arguments, shape tables) must stay under LIMIT.
local LIMIT = 1 << 23
local function weight(v, count_numbers, seen)
  local tv = type(v)
  if is_sym(v) then return 1 end
  if is_eager(v) then
    if v:is_closed() then return 1 end
    local w = math.max(v:numel(), 1) + 0.0
    if count_numbers and v:dim() <= 1 and v:numel() <= 8 and not v:is_floating_point() then
      -- a shape tensor's sizes (the download may report a GPU's index error found earlier)
      local ok, vals = pcall(v.totable, v)
      for _, x in ipairs(ok and v:dim() == 1 and vals or {}) do
        if math.type(x) == "integer" and math.abs(x) >= 2 then w = w * math.abs(x) end
      end
    end
    return w
  elseif tv == "number" and count_numbers then
    local a = math.abs(v)
    if a >= 2 and a < 2 ^ 53 then return a + 0.0 end -- floats: integer products would wrap
  elseif tv == "table" and not seen[v] and not getmetatable(v) then
    seen[v] = true
    local w = 1.0
    for _, x in pairs(v) do w = w * weight(x, count_numbers, seen) end
    return w
  end
  return 1
end

local function too_big(f, args, n)
  local w, count = 1.0, not NOALLOC[f.short]
  local seen = {}
  for i = 1, n do w = w * weight(args[i], count, seen) end
  if f.short == "eye" and n >= 1 then w = w * weight(args[1], true, {}) end -- eye(n) is n x n
  return w > LIMIT
end

-- ---- judging the outcome ------------------------------------------------------------------------
local STATUS = { ["ok"] = true, ["bad argument"] = true, ["shape error"] = true,
  ["dtype error"] = true, ["index error"] = true, ["out of memory"] = true,
  ["device error"] = true, ["unsupported"] = true, ["i/o error"] = true,
  ["unknown status"] = true }
-- Lua's own errors raised inside moonflow's Lua code, with no word of what the argument was.
local LUA_ERRORS = { "attempt to index a ", "attempt to call a ", "attempt to perform arithmetic",
  "attempt to concatenate", "attempt to compare", "attempt to get length", "stack overflow",
  "table index is ", "number has no integer representation", "invalid value %(at index",
  "bad argument #%d+ to '%?'", "attempt to bitwise" }

local function unclear(msg)
  if type(msg) ~= "string" then return "an error object of type " .. type(msg) end
  if msg:find("fuzz: deliberate error", 1, true) then return false end
  local body = msg:gsub("^[^:]*:%d+: ", "") -- the position Lua's error() adds
  if body:match("^%s*$") then return "an empty message" end
  if STATUS[body] then return "a bare status name" end
  if body:match("^%?") or body:find("'?'", 1, true) then return "a message naming '?'" end
  if body:find("(null)", 1, true) then return "a message with (null)" end
  -- lauxlib's argument errors name the function and the argument: clear
  -- (also quoted inside another message: "Max: cannot build this op ...: bad argument #2 to 'max' (")
  if body:match("^bad argument #%d+ to '[^?']+' %(") or body:match(": bad argument #%d+ to '[^?']+' %(")
  then return false end
  for _, p in ipairs(LUA_ERRORS) do
    if body:find(p) then return "an error from Lua itself", true end
  end
  return false
end

-- Cheap invariants of a returned tensor.
local function check_tensor(t, fname)
  if t:is_closed() then
    if fname:match("close$") then return false end
    return "a closed tensor"
  end
  local shape, n, nonzero = t:shape(), 1, 1
  if #shape ~= t:dim() then return "shape has " .. #shape .. " entries for dim " .. t:dim() end
  for _, s in ipairs(shape) do
    if math.type(s) ~= "integer" or s < 0 then return "a bad size " .. tostring(s) end
    n = n * s
    nonzero = nonzero * math.max(s, 1) * 1.0
  end
  if n ~= t:numel() then return ("numel %d for shape {%s}"):format(t:numel(), table.concat(shape, ",")) end
  if #t:stride() ~= t:dim() then return "stride has the wrong length" end
  local dt = t:dtype()
  local okdt = false
  for _, d in ipairs(GPU_DTYPES) do okdt = okdt or d == dt end
  if not okdt then return "an unknown dtype " .. tostring(dt) end
  if n <= 64 and nonzero <= 4096 then -- an empty {255, 255, 255, 255, 0} is 4e9 empty tables
    local ok, tab = pcall(t.totable, t)
    -- a GPU reports a bad index at the next synchronisation, here the download: a clear error
    if not ok and tostring(tab):find("%(found by cuda:%d+ running an earlier call") then return false end
    if not ok then return "totable failed: " .. tostring(tab) end
    local function walk(v, d)
      if d > #shape then return type(v) == "number" or type(v) == "boolean" end
      if type(v) ~= "table" or #v ~= shape[d] then return false end
      for i = 1, #v do if not walk(v[i], d + 1) then return false end end
      return true
    end
    if not walk(tab, 1) then return "totable does not match the shape" end
    local ok2, s = pcall(tostring, t)
    if not ok2 or type(s) ~= "string" then return "tostring failed: " .. tostring(s) end
  end
  return false
end

-- ---- describing values (the trace) ------------------------------------------------------------
local function describe(v, depth)
  depth = depth or 0
  if is_sym(v) then
    local ok, s = pcall(tostring, v)
    return ok and s or "<symbolic tensor ?>"
  elseif is_eager(v) then
    if v:is_closed() then return "<closed tensor>" end
    local ok, s = pcall(function()
      return ("<%s %s {%s} stride {%s}%s>"):format(v:device(), v:dtype(),
        table.concat(v:shape(), ","), table.concat(v:stride(), ","),
        v:needs_grad() and " grad" or "")
    end)
    return ok and s or "<tensor ?>"
  elseif type(v) == "string" then
    return ("%q"):format(#v > 40 and v:sub(1, 40) .. "..." or v)
  elseif type(v) == "table" then
    local mt = getmetatable(v)
    if mt then
      local name = type(mt) == "table" and rawget(mt, "__typename")
      return "<" .. (type(name) == "string" and name or "table with a metatable") .. ">"
    end
    if depth > 3 then return "{...}" end -- results may hold cycles
    local parts = {}
    for k, x in pairs(v) do
      parts[#parts + 1] = (math.type(k) == "integer" and "" or tostring(k) .. "=") .. describe(x, depth + 1)
      if #parts > 8 then parts[#parts + 1] = "..." break end
    end
    return "{" .. table.concat(parts, ", ") .. "}"
  elseif type(v) == "number" then
    return math.type(v) == "integer" and tostring(v) or ("%.17g"):format(v)
  end
  return tostring(v)
end

local function describe_call(f, args, n)
  local parts = {}
  for i = 1, n do parts[i] = describe(args[i]) end
  return f.name .. "(" .. table.concat(parts, ", ") .. ")"
end

-- ---- one call ---------------------------------------------------------------------------------
local calls, skipped = 0, 0
-- Lua's own errors inside moonflow's Lua layer are reported at the end (one line per function)
-- and fail the run unless FUZZ_STRICT=0: the C layer's failures come first.
local strict = os.getenv("FUZZ_STRICT") ~= "0"
local soft_seen, soft_names = {}, {}
local failure -- set to a message when something is wrong

local function reset_state()
  mf.set_grad_enabled(true)
  mf._set_default_device(nil)
end

local function judge_results(desc, f, res, args, n)
  local given = {} -- arguments handed back as they are (mf.no_grad(fn, ...) returns fn's results)
  for i = 1, n do if args[i] ~= nil and args[i] == args[i] then given[args[i]] = true end end
  for i = 2, res.n do
    local v = res[i]
    if mf.is_tensor(v) and given[v] then
      push(v)
    elseif is_sym(v) then
      push(v)
    elseif is_eager(v) and f.name:match("^op%.") and not is_eager(args[1]) then
      push(v) -- a field of a module or other table (op.index, op.grad), as it is
    elseif is_eager(v) then
      local bad = check_tensor(v, f.name)
      if bad then failure = "bad result " .. i - 1 .. " of " .. desc .. ": " .. bad return end
      push(v)
    elseif type(v) == "table" and not getmetatable(v) then
      for _, x in pairs(v) do
        if is_eager(x) and not x:is_closed() then push(x) break end
      end
      push(v)
    elseif v ~= nil and rand(3) == 1 then
      push(v) -- numbers, strings, modules, optimizers
    end
  end
end

local function call(f, args, n)
  if too_big(f, args, n) then
    skipped = skipped + 1
    return
  end
  if f.writer then args[1] = ("%s/w%d"):format(tmpdir, rand(1, 4)) end
  local desc = describe_call(f, args, n)
  if trace then io.stderr:write(("[%d] %s\n"):format(calls + 1, desc)) end
  calls = calls + 1
  local fn = f.call
  if f.method and not is_eager(args[1]) then fn = f.direct end -- x:name() needs a tensor x
  local t0 = mf.clock()
  -- a call still running Lua code after 10 s is stopped by a hook (a loop of tail calls never
  -- returns to be timed) and reported as a hang
  debug.sethook(function()
    if mf.clock() - t0 > 10 then error("fuzz: a hang (still running after 10 s)", 0) end
  end, "", 1000000)
  local res = table.pack(pcall(fn, table.unpack(args, 1, n)))
  debug.sethook()
  reset_state()
  if not res[1] and tostring(res[2]):find("fuzz: a hang", 1, true) then
    failure = ("a hang (over 10 s): %s"):format(desc)
    return
  end
  if mf.clock() - t0 > 10 then
    failure = ("a slow call (%.1f s): %s"):format(mf.clock() - t0, desc)
    return
  end
  if not res[1] then
    local why, soft = unclear(res[2])
    if soft and f.name:match("^op%.") then -- Lua's operators on non-tensors (nil + 1): Lua's own
      return
    elseif soft and not strict then
      if not soft_seen[f.name] then
        soft_seen[f.name] = tostring(res[2]):sub(1, 200)
        soft_names[#soft_names + 1] = f.name
      end
    elseif why then
      failure = ("%s: %s -> %s"):format(why, desc, tostring(res[2]):sub(1, 300))
    end
    return
  end
  judge_results(desc, f, res, args, n)
  if not failure then return res end
end

-- A Lua object's own fields other than tensors (a module's sizes, a method) are not overwritten:
-- that is the caller breaking the object (`m.shape = true`), which Python's objects do not guard
-- against either. New fields and tensors (parameters, buffers) are.
local function keep_fields(a, k)
  if type(a) ~= "table" or type(k) ~= "string" then return end
  local ok, cur = pcall(function() return a[k] end)
  if ok and cur ~= nil and not mf.is_tensor(cur) then error("fuzz: deliberate error (field kept)") end
end

-- Operators, indexing and fields: not functions of a table, so called here.
local OPS = {
  { name = "op.+", fn = function(a, b) return a + b end },
  { name = "op.-", fn = function(a, b) return a - b end },
  { name = "op.*", fn = function(a, b) return a * b end },
  { name = "op./", fn = function(a, b) return a / b end },
  { name = "op.%", fn = function(a, b) return a % b end },
  { name = "op.//", fn = function(a, b) return a // b end },
  { name = "op.^", fn = function(a, b) return a ^ b end },
  { name = "op.unm", fn = function(a) return -a end },
  { name = "op.#", fn = function(a) return #a end },
  { name = "op.tostring", fn = function(a) return tostring(a) end },
  { name = "op.index", fn = function(a, k) return a[k] end },
  { name = "op.newindex", fn = function(a, k, v) keep_fields(a, k) a[k] = v end },
  { name = "op.grad", fn = function(a) return a.grad end },
  { name = "op.set_grad", fn = function(a, g) a.grad = g end },
  { name = "op.grad_fn", fn = function(a) return a.grad_fn, a.is_leaf end },
  { name = "op.field", fn = function(a, k) keep_fields(a, k) a[k] = 1 end },
}
for _, o in ipairs(OPS) do o.short = o.name end
NOALLOC["op.index"], NOALLOC["op.newindex"], NOALLOC["op.#"] = true, true, true

local function index_key()
  return pick { 1, -1, 0, 2, 5, 1 << 40, math.mininteger, 1.5, 0 / 0, {}, { 1 }, { { 1, 2 } },
    { { 2, 1 } }, { { 1, -1, 2 } }, { { 1, 2, 0 } }, { 1, 1, 1, 1, 1 }, { { 1, 1 }, 2 }, { {}, 1 },
    { { 1, 2, 3, 4 } }, { "a" }, "shape", "nosuchfield", true, { { 1, 0 } }, { { 3, 2 } } }
end

-- Backward through a result that needs gradients; then the leaves' gradients must match them.
local function try_backward()
  local cands = {}
  for _, v in ipairs(pool) do
    if is_eager(v) and not v:is_closed() and v:needs_grad() then cands[#cands + 1] = v end
  end
  if #cands == 0 then return end
  local r = pick(cands)
  local f = { name = "backward", short = "backward" }
  local args, n
  if rand(2) == 1 then
    local ok, s = pcall(r.sum, r)
    if not ok then return end
    args, n = { s, nil, rand(2) == 1 and { retain_graph = true } or nil }, 3
  else
    args, n = { r, random_arg(), random_arg() }, 3
  end
  f.call = function(t, ...) return t:backward(...) end
  call(f, args, n)
  for _, l in ipairs(leaves) do
    if failure then return end
    if not l:is_closed() then
      local g = l.grad
      if g ~= nil and (table.concat(g:shape(), ",") ~= table.concat(l:shape(), ",")
          or g:dtype() ~= l:dtype()) then
        failure = ("a leaf's gradient has shape {%s} %s for the leaf's {%s} %s after %s"):format(
          table.concat(g:shape(), ","), g:dtype(), table.concat(l:shape(), ","), l:dtype(),
          describe_call(f, args, n))
      end
    end
  end
end


-- ---- objects: modules, optimizers, sessions -----------------------------------------------------
-- A method of an object in the pool (a module, an optimizer, ...), its calls judged as the
-- functions' are: obj:name(random args), or obj(random args) for a callable one (a module's
-- forward). Methods that print, draw or write files are not called.
local OBJ_SKIP = { summary = true, render = true, print = true, save = true, export = true,
  __init = true, __gc = true, __close = true, __index = true, __newindex = true }
local method_cache = setmetatable({}, { __mode = "k" })
local function methods_of(obj)
  local mt = getmetatable(obj)
  if type(mt) ~= "table" then return {} end
  if method_cache[mt] then return method_cache[mt] end
  local names, seen, idx, depth = {}, {}, mt, 0
  while type(idx) == "table" and depth < 8 do
    for k, v in pairs(idx) do
      if type(k) == "string" and type(v) == "function" and not seen[k] and not OBJ_SKIP[k]
          and not k:match("^__") then
        seen[k] = v
        names[#names + 1] = k
      end
    end
    local m2 = getmetatable(idx)
    idx, depth = m2 and rawget(m2, "__index"), depth + 1
  end
  table.sort(names)
  if rawget(mt, "__call") then names[#names + 1] = "__call" end
  names.fn = seen -- the methods themselves (an instance's field may shadow a method's name)
  method_cache[mt] = names
  return names
end

local function object_step()
  local objs = {}
  for _, v in ipairs(pool) do
    if type(v) == "table" and not is_sym(v) and getmetatable(v) then objs[#objs + 1] = v end
  end
  if #objs == 0 then return end
  local obj = pick(objs)
  local names = methods_of(obj)
  if #names == 0 then return end
  local name = pick(names)
  if rand(2) == 1 then -- mostly what training calls: forward (__call) and step
    local main = {}
    for _, k in ipairs(names) do
      if k == "__call" or k == "step" then main[#main + 1] = k end
    end
    if #main > 0 then name = pick(main) end
  end
  local mt = getmetatable(obj)
  local cls = type(mt) == "table" and (rawget(mt, "__typename") or rawget(mt, "name")) or "object"
  local f = { name = ("obj.%s:%s"):format(tostring(cls), name), short = name }
  if name == "__call" then
    f.call = function(o, ...) return o(...) end
  else
    local m = names.fn[name]
    f.call = function(o, ...) return m(o, ...) end
  end
  local n = rand(0, 3)
  local args = { obj }
  for i = 2, n + 1 do args[i] = random_arg() end
  call(f, args, n + 1)
end

-- Well-formed modules and optimizers for the pool, on a random device, so that their methods
-- (forward, step, state_dict, load_state_dict, to, ...) get random arguments.
local trainers -- {m =, shape =, dev =, opt =} for train_step
local function add_objects()
  trainers = {}
  local nn, optim = mf.nn, mf.optim
  -- each with an input shape its forward takes
  local makers = {
    { function() return nn.Linear(3, 2) end, { 4, 3 } },
    { function() return nn.Linear(5, 4, { bias = false }) end, { 2, 5 } },
    { function() return nn.Conv2d(1, 2, 3) end, { 2, 1, 5, 5 } },
    { function() return nn.Conv2d(2, 2, 1) end, { 1, 2, 3, 3 } },
    { function() return nn.BatchNorm1d(3) end, { 4, 3 } },
    { function() return nn.BatchNorm2d(2) end, { 2, 2, 3, 3 } },
    { function() return nn.Sequential { nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2) } end, { 2, 3 } },
    { function() return nn.Sequential { nn.Conv2d(2, 2, 3), nn.MaxPool2d(2), nn.Flatten() } end,
      { 2, 2, 6, 6 } },
    { function() return nn.Dropout(0.5) end, { 3, 4 } },
    { function() return nn.MaxPool2d(2) end, { 1, 2, 4, 4 } },
    { function() return nn.AvgPool2d(2) end, { 1, 2, 4, 4 } },
    { function() return nn.Flatten() end, { 2, 3, 4 } },
    { function() return nn.Softmax() end, { 2, 5 } },
    { function() return nn.LogSoftmax() end, { 2, 5 } },
    { function() return nn.Reshape(-1) end, { 2, 3 } },
    { function() return nn.CrossEntropyLoss() end },
    { function() return nn.MSELoss() end },
    { function() return nn.BCEWithLogitsLoss() end },
    { function() return nn.NLLLoss() end },
  }
  local opts = {
    function(ps) return optim.SGD(ps, { lr = 0.1, momentum = pick { 0, 0.9 } }) end,
    function(ps) return optim.Adam(ps, { lr = 1e-3 }) end,
    function(ps) return optim.AdamW(ps, { lr = 1e-3, weight_decay = 0.1 }) end,
    function(ps) return optim.RMSProp(ps, { lr = 1e-2 }) end,
    function(ps) return optim.Adadelta(ps) end,
    function(ps) return optim.Adagrad(ps, { lr = 0.1 }) end,
  }
  for _ = 1, rand(1, 2) do
    local mk = pick(makers)
    local ok, m = pcall(mk[1])
    if ok and m then
      local dev = "cpu"
      if rand(3) == 1 then
        dev = pick(devices)
        local ok2, m2 = pcall(m.to, m, dev)
        if ok2 and m2 then m = m2 end
      end
      push(m)
      local tr = mk[2] and { m = m, shape = mk[2], dev = dev }
      if tr then trainers[#trainers + 1] = tr end
      if rand(4) > 1 then
        local ok3, ps = pcall(m.parameters, m)
        if ok3 and type(ps) == "table" and #ps > 0 then
          -- parameters with odd gradients: another shape, dtype or device, or a pool tensor
          for _, p in ipairs(ps) do
            if rand(4) == 1 then pcall(function() p.grad = pool[rand(1, #pool)] end) end
            if rand(4) == 1 then pcall(function() p.grad = p:detach():mul(0.5) end) end
          end
          local ok4, o = pcall(pick(opts), ps)
          if ok4 and o then
            push(o)
            if tr then tr.opt = o end
          end
        end
      end
    end
  end
  if #leaves > 0 and rand(2) == 1 then -- an optimizer over the pool's leaves (mixed devices)
    local ps = {}
    for i = 1, rand(1, math.min(3, #leaves)) do ps[i] = leaves[rand(1, #leaves)] end
    local ok, o = pcall(pick(opts), ps)
    if ok and o then push(o) end
  end
end

-- A training step on a module of the pool: forward on an input of the shape it takes (of a
-- random float dtype, mostly on the module's device), the sum's backward, the optimizer's step;
-- sometimes after changing the state under the optimizer (the module moved or converted, a
-- gradient replaced by a pool value, a parameter closed).
local FWD = { name = "train:forward", short = "forward", call = function(m, x) return m(x) end }
local SUM = { name = "train:sum", short = "sum", call = function(y) return y:sum() end }
local BWD = { name = "train:backward", short = "backward", call = function(l) return l:backward() end }
local STEP = { name = "train:step", short = "step", call = function(o) return o:step() end }
local ZERO = { name = "train:zero_grad", short = "zero_grad",
  call = function(o, none) return o:zero_grad(none) end }
local LOAD_OPT = { name = "train:optimizer:load_state_dict", short = "load_state_dict",
  call = function(o, sd) return o:load_state_dict(sd) end }
local LOAD_MOD = { name = "train:module:load_state_dict", short = "load_state_dict",
  call = function(m, sd, strict) return m:load_state_dict(sd, strict) end }
local function train_step()
  if #trainers == 0 then return end
  local tr = pick(trainers)
  local m, o = tr.m, tr.opt
  local r = rand(1, 10)
  if r == 1 then
    pcall(m.to, m, pick { pick(devices), "float64", "float32", "float16" })
  elseif r == 2 and o then
    local ok, ps = pcall(m.parameters, m)
    if ok and type(ps) == "table" and #ps > 0 then
      local p = pick(ps)
      pcall(function() p.grad = pool[rand(1, #pool)] end)
    end
  elseif r == 3 then
    local ok, ps = pcall(m.parameters, m)
    if ok and type(ps) == "table" and #ps > 0 and rand(4) == 1 then pcall(pick(ps).close, pick(ps)) end
  elseif r == 4 and o then -- another optimizer's state (another kind, other parameters), or its own
    local other = pick(trainers).opt or o
    local ok, sd = pcall(other.state_dict, other)
    if ok then
      call(LOAD_OPT, { o, sd }, 2)
      if failure then return end
    end
  elseif r == 5 then -- another module's state_dict, or its own
    local other = pick(trainers).m
    local ok, sd = pcall(other.state_dict, other)
    if ok then
      call(LOAD_MOD, { m, sd, pick { true, false, nil } }, 3)
      if failure then return end
    end
  end
  local ok, x = pcall(make_tensor, pick { "float32", "float32", "float64", "float16", "bfloat16" },
    tr.shape, rand(4) > 1 and tr.dev or pick(devices))
  if not ok then return end
  local res = call(FWD, { m, x }, 2)
  if failure or not res or not is_eager(res[2]) then return end
  res = call(SUM, { res[2] }, 1)
  if failure or not res or not is_eager(res[2]) then return end
  call(BWD, { res[2] }, 1)
  if failure or not o then return end
  call(STEP, { o }, 1)
  if failure then return end
  if rand(2) == 1 then call(ZERO, { o, pick { true, false, nil } }, 2) end
end

-- ---- graph mode ---------------------------------------------------------------------------------
-- A graph episode builds a small graph in a fresh mf.Graph (its own default graph for the
-- while): placeholders of random dtypes and shapes, constants and variables from the pool, then
-- random calls whose arguments are mostly its symbolic tensors; then runs it in a Session with
-- random fetches and feeds (right-shaped tensors, tensors of another shape or dtype, numbers,
-- strings, tables, closed tensors, unknown keys).
local graph_funcs = {}
for _, f in ipairs(funcs) do
  if not f.writer and (f.name:match("^mf%.") or f.name:match("^Tensor%.") or f.name:match("^F%.")
      or f.name:match("^nn%.%l")) then
    graph_funcs[#graph_funcs + 1] = f
  end
end

local function judge_error(desc, f, err)
  local why, soft = unclear(err)
  if soft and not strict then
    if not soft_seen[f.name] then
      soft_seen[f.name] = tostring(err):sub(1, 200)
      soft_names[#soft_names + 1] = f.name
    end
  elseif why then
    failure = ("%s: %s -> %s"):format(why, desc, tostring(err):sub(1, 300))
  end
end

local PH_DTYPES = { "float32", "float64", "int32", "int64", "bool", "uint8", "float16", "string" }
local PH_SHAPES = { false, {}, { 3 }, { -1 }, { 2, 3 }, { -1, 3 }, { 2, 0 }, { 1, 1, 1, 1 },
  { -1, -1 }, { 2, 1, 4, 4 }, { -2 }, { 1.5 }, { "a" } }

-- a value to feed a placeholder of dtype dt and shape sh: mostly one that fits
local function feed_value(dt, sh)
  local k = rand(1, 10)
  if k <= 5 and dt ~= "string" then
    local shape = {}
    for i, d in ipairs(type(sh) == "table" and sh or { rand(0, 3) }) do
      shape[i] = (math.type(d) == "integer" and d >= 0) and d or rand(1, 3)
    end
    local ok, t = pcall(make_tensor, dt, shape, pick(devices))
    if ok then return t end
  elseif k == 6 then
    return pick { "hello", "", ("b"):rep(100) }
  end
  return random_arg()
end

local function graph_episode()
  local g = mf.Graph()
  local phs, syms = {}, {}
  local PH = { name = "mf.placeholder", short = "placeholder", fn = mf.placeholder }
  local VAR = { name = "mf.Variable", short = "Variable", fn = mf.Variable }
  local CONST = { name = "mf.constant", short = "constant", fn = mf.constant }
  local function gcall(f, args, n)
    local before = #pool
    f.call = f.call or f.fn
    call(f, args, n)
    for i = before + 1, #pool do
      if is_sym(pool[i]) then syms[#syms + 1] = pool[i] end
    end
  end
  local function sym_arg()
    if #syms > 0 and rand(3) > 1 then return pick(syms) end
    return random_arg()
  end
  local ok, err = pcall(g.as_default, g, function()
    for i = 1, rand(1, 3) do
      local dt, sh = pick(PH_DTYPES), pick(PH_SHAPES)
      local okp, ph = pcall(mf.placeholder, dt, sh or nil, rand(2) == 1 and ("p" .. i) or nil)
      if okp then
        phs[#phs + 1] = { ph = ph, dt = dt, sh = sh }
        syms[#syms + 1] = ph
        push(ph)
      else
        judge_error(describe_call(PH, { dt, sh or nil }, 2), PH, ph)
        if failure then return end
      end
    end
    for _ = 1, rand(0, 2) do
      gcall(CONST, { random_arg(), rand(3) == 1 and option_table() or nil }, 2)
      if failure then return end
    end
    for _ = 1, rand(0, 2) do
      gcall(VAR, { rand(3) > 1 and pool[rand(1, #pool)] or random_arg(),
        rand(3) == 1 and option_table() or nil }, 2)
      if failure then return end
    end
    for _ = 1, rand(5, 25) do
      if rand(6) == 1 then -- a module or optimizer method on the graph's tensors
        object_step()
      elseif rand(5) == 1 then
        local o = pick(OPS)
        gcall({ name = o.name, short = o.short, fn = o.fn }, { sym_arg(), sym_arg(), sym_arg() }, 3)
      else
        local f = pick(graph_funcs)
        local n = rand(1, 4)
        local args = {}
        for i = 1, n do args[i] = sym_arg() end
        gcall(f, args, n)
      end
      if failure then return end
    end
    if rand(2) == 1 then -- a training op on some scalar
      local loss = pick(syms)
      local T = mf.train
      local mk = pick { function() return T.GradientDescentOptimizer(0.1) end,
        function() return T.AdamOptimizer(1e-3) end,
        function() return T.MomentumOptimizer(0.1, 0.9) end }
      local MIN = { name = "train.Optimizer:minimize", short = "minimize" }
      MIN.call = function(l, ...) return mk():minimize(l, ...) end
      gcall(MIN, { loss, rand(3) == 1 and random_arg() or nil }, 2)
      if failure then return end
    end
    local INIT = { name = "mf.global_variables_initializer", short = "global_variables_initializer",
      fn = mf.global_variables_initializer }
    gcall(INIT, {}, 0)
  end)
  if failure then return end
  if not ok then
    judge_error("building a graph", { name = "graph" }, err)
    if failure then return end
  end
  local okS, sess = pcall(mf.Session, { graph = g })
  if not okS then
    failure = "mf.Session{graph = g} failed: " .. tostring(sess)
    return
  end
  local RUN = { name = "Session:run", short = "run" }
  RUN.call = function(...) return sess:run(...) end
  for _ = 1, rand(1, 6) do
    local fetch
    local r = rand(1, 8)
    if #syms == 0 or r == 1 then
      fetch = random_arg()
    elseif r <= 5 then
      fetch = pick(syms)
    elseif r == 6 then
      fetch = { pick(syms), pick(syms) }
    elseif r == 7 then
      fetch = { a = pick(syms), b = { pick(syms) } }
    else
      local okn, nm = pcall(function() return pick(syms).name end)
      fetch = okn and nm or "nosuchnode:0"
    end
    local feed
    if rand(6) > 1 then
      feed = {}
      for _, p in ipairs(phs) do
        if rand(5) > 1 then
          local key = p.ph
          if rand(6) == 1 then key = pick(syms) end
          if rand(8) == 1 then key = pick { "nosuch", 1, true } end
          feed[key] = feed_value(p.dt, p.sh)
        end
      end
    else
      feed = random_arg()
    end
    call(RUN, { fetch, feed }, 2)
    if failure then break end
  end
  local okc, errc = pcall(sess.close, sess)
  if not okc and not failure then failure = "Session:close failed: " .. tostring(errc) end
end

local function step()
  local k = rand(1, 25)
  if k <= 15 then
    local f = pick(funcs)
    local n = rand(0, 5)
    local args = {}
    for i = 1, n do args[i] = random_arg() end
    if f.method and rand(5) > 1 then -- mostly a tensor receiver
      args[1] = pool[rand(1, #pool)]
      n = math.max(n, 1)
    end
    call(f, args, n)
  elseif k <= 18 then
    local o = pick(OPS)
    o.call = o.fn
    local args = { pool[rand(1, #pool)], random_arg(), random_arg() }
    if o.name:match("index") then args[2] = index_key() end
    if rand(4) == 1 then args[1], args[2] = args[2], args[1] end
    call(o, args, 3)
  elseif k == 19 then
    try_backward()
  elseif k >= 23 then
    train_step()
  elseif k >= 21 then
    object_step()
  else -- close a pool tensor (it stays in the pool, closed)
    local v = pool[rand(1, #pool)]
    if is_eager(v) and not v:is_closed() and rand(4) == 1 then v:close() end
  end
end

local function episode(seed, k)
  local f = io.open(marker, "w")
  if f then
    f:write(("FUZZ_SEED=%d FUZZ_EPISODE=%d\n"):format(seed, k))
    f:close()
  end
  math.randomseed(seed, k)
  mf.manual_seed(k)
  new_pool()
  add_objects()
  if rand(5) == 1 then
    graph_episode()
    if failure then return end
  end
  for _ = 1, 60 do
    step()
    if failure then return end
  end
  pool, leaves = nil, nil
  collectgarbage()
end

local t0, episodes = mf.clock(), 0
-- FUZZ_KEEP_GOING=1: print each failure (once per function and kind) and go on, for triage.
local keep_going, reported = os.getenv("FUZZ_KEEP_GOING") == "1", {}
local function run(seed, k)
  episodes = episodes + 1
  episode(seed, k)
  if failure and keep_going then
    local key = failure:match("^[^:(]*") .. (failure:match(": ([%w_.:#%%%^/+*-]+)%(") or "")
    if not reported[key] then
      reported[key] = true
      print(("failure: %s (FUZZ_SEED=%d FUZZ_EPISODE=%d)"):format(failure, seed, k))
    end
    failure = nil
  end
  if failure then
    print(("FAILED: fuzz_api (%s; replay: FUZZ_SEED=%d FUZZ_EPISODE=%d FUZZ_TRACE=1)"):format(
      failure, seed, k))
    os.execute("rm -rf " .. tmpdir)
    os.exit(1, true) -- closing the state: LeakSanitizer then reports only real leaks
  end
end

if only_episode then
  run(base_seed, only_episode)
else
  for _, s in ipairs(seeds) do run(s, 0) end
  local k = 0
  while mf.clock() - t0 < secs do
    k = k + 1
    run(base_seed, k)
  end
end
os.remove(marker)
os.execute("rm -rf " .. tmpdir)
table.sort(soft_names)
for _, name in ipairs(soft_names) do
  print(("note: %s raised a Lua error of its own: %s"):format(name, soft_seen[name]))
end
print(("ok: fuzz_api (%d calls in %d episodes, %d s, %d functions, %d calls skipped as too big)")
  :format(calls, episodes, secs, #funcs, skipped))
