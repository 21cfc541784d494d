-- moonflow/init.lua — `local mf = require "moonflow"`: the C module moonflow.core plus what is
-- easier to write in Lua: dtype names, TensorFlow-style aliases (mf.constant, mf.multiply,
-- mf.reduce_sum, mf.shape, ...), *_like factories, mf.allclose, mf.device scopes, and lazy
-- loading of the submodules (mf.nn requires "moonflow.nn" on first use, if that file exists).

local core = require "moonflow.core"
local mf = core
local Tensor = core.Tensor -- the tensor methods table: methods added here work as t:name()

-- ---- dtype names (torch style: mf.float32 == "float32") -------------------------------------
for _, name in ipairs { "float32", "float64", "int32", "int64", "uint8", "bool", "float16",
  "bfloat16" } do
  mf[name] = name
end
mf.float, mf.double, mf.int, mf.long, mf.half = "float32", "float64", "int32", "int64", "float16"

-- ---- aliases ------------------------------------------------------------------------------
mf.mm = core.matmul
mf.dot = core.matmul
Tensor.mm = Tensor.matmul
Tensor.dot = Tensor.matmul
Tensor.nelement = Tensor.numel
Tensor.nDimension = Tensor.dim
Tensor.clip = Tensor.clamp
mf.clip = core.clamp
mf.concat = core.cat -- TensorFlow's name; dims stay 1-based

-- TensorFlow names the tutorials use.
mf.multiply = core.mul
mf.subtract = core.sub
mf.divide = core.div
mf.negative = core.neg
mf.greater = core.gt
mf.greater_equal = core.ge
mf.less = core.lt
mf.less_equal = core.le
mf.equal = core.eq
mf.not_equal = core.ne
mf.reduce_sum = core.sum
mf.reduce_mean = core.mean
function mf.reduce_max(t, dim, keepdim) return (core.max(t, dim, keepdim)) end -- values only
function mf.reduce_min(t, dim, keepdim) return (core.min(t, dim, keepdim)) end
mf.reduce_prod = core.prod

function mf.square(x) return core.mul(x, x) end

Tensor.square = mf.square

-- mf.constant(v [, {dtype=, name=}]): an eager tensor; strings (and tables of strings) live on the
-- Lua side and come back as they are.
local function first_leaf(v)
  while type(v) == "table" and not core.is_tensor(v) do v = v[1] end
  return v
end

function mf.constant(v, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("constant: options must be a table, got " .. type(opts), 2)
  end
  local dtype = opts and opts.dtype
  if type(v) == "string" or (type(v) == "table" and type(first_leaf(v)) == "string") then
    if dtype ~= nil and dtype ~= "string" then
      error("constant: a string value cannot have dtype " .. tostring(dtype), 2)
    end
    return v
  end
  if core.is_tensor(v) then
    if v:is_closed() then error("constant: tensor is closed", 2) end
    return dtype and v:to(dtype) or v
  end
  return core.tensor(v, { dtype = dtype })
end

-- mf.shape(t): the shape as a 1-D int64 tensor (as tf.shape); mf.fill/zeros/... accept it.
function mf.shape(t)
  if not core.is_tensor(t) then t = core.tensor(t) end
  return core.tensor(t:shape(), { dtype = "int64" })
end

-- t, when it is a tensor; else an error naming fname (mf.is_tensor: symbolic ones count too) at
-- the given level (default 3: the caller of the function that checks)
local function need_tensor(t, fname, level)
  if not mf.is_tensor(t) then
    error(("%s: expected a tensor, got %s"):format(fname, type(t)), level or 3)
  end
  return t
end

function mf.numel(t) return need_tensor(t, "numel"):numel() end

-- ---- *_like factories -------------------------------------------------------------------------
-- t's shape and the options of a tensor like t (its dtype and device, unless opts say otherwise)
local function like(t, opts, fname)
  need_tensor(t, fname, 4)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), 3)
  end
  local o = { dtype = t:dtype(), device = t:device() }
  if opts then for k, v in pairs(opts) do o[k] = v end end
  return t:shape(), o
end

function mf.zeros_like(t, opts) return core.zeros(like(t, opts, "zeros_like")) end
function mf.ones_like(t, opts) return core.ones(like(t, opts, "ones_like")) end
function mf.empty_like(t, opts) return core.empty(like(t, opts, "empty_like")) end
function mf.rand_like(t, opts) return core.rand(like(t, opts, "rand_like")) end
function mf.randn_like(t, opts) return core.randn(like(t, opts, "randn_like")) end
function mf.full_like(t, v, opts)
  local shape, o = like(t, opts, "full_like")
  return core.full(shape, v, o)
end

-- mf.allclose(a, b [, rtol [, atol]]): |a - b| <= atol + rtol * |b| everywhere (numpy's rule).
function mf.allclose(a, b, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  local ok = core.le(core.abs(core.sub(a, b)), core.add(core.mul(core.abs(b), rtol), atol))
  return core.logical_not(ok):sum():item() == 0
end

Tensor.allclose = mf.allclose

-- ---- submodules, loaded on first use ----------------------------------------------------------
-- mf.nn, mf.optim, mf.train, ... require "moonflow.<name>" when that file exists; a name with no
-- file stays nil (and is remembered as missing).
require("moonflow.util").lazy(mf, "moonflow.", { core = true, init = true })

-- ---- graphs: an mf.* call with a symbolic argument builds a graph node (moonflow/graph) ------
local G = require "moonflow.graph"
G.install(mf)

-- ---- devices: mf.device scopes -----------------------------------------------------------------
-- mf.device(spec, fn) runs fn in the scope of spec; mf.device(spec) returns a handle for
-- `local _ <close> = mf.device(spec)`. spec: "/cpu:0", "/gpu:0", "/device:GPU:1", "cuda:0", "cpu"
-- (any case). In its scope:
--   eager: new tensors (mf.zeros, mf.randn, mf.tensor, ...) are made on spec's device, which must
--     exist now (else the error says why there is no such device);
--   graph: new nodes of the default graph are placed on spec as written (recorded in the node,
--     exported in GraphDefs, checked by the session that runs it: a "/gpu:0" graph can be built on
--     a machine without a GPU and run there with allow_soft_placement).
-- Scopes nest; leaving one (normally, by an error, or by closing its handle: <close> or
-- handle:close(), once) restores the device and placement of the scope outside it. A malformed
-- spec is an error at the caller's line.
local parse_device, set_default_device = core._parse_device, core._set_default_device

function mf.device(spec, fn)
  if type(spec) ~= "string" then
    -- (core._parse_device is wrapped for graph mode: given a symbolic tensor it built a node, and
    -- the tensor became the placement of the nodes after it, which sessions could not read)
    error(("device: a device spec (a string such as \"cpu\", \"cuda:0\" or \"/gpu:0\") is needed, got %s")
      :format(mf.is_tensor(spec) and "a tensor" or type(spec)), 2)
  end
  local ok, err = pcall(parse_device, spec)
  if not ok then error(err, 2) end
  if fn ~= nil and type(fn) ~= "function" then
    error("device: the second argument must be a function (or nothing, for a <close> handle)", 2)
  end
  local graph = G.graph_mode()
  local prev
  ok, prev = pcall(set_default_device, spec)
  if not ok then
    if not graph then error(prev, 2) end
    prev = nil -- graph mode, device absent here: only the placement changes
  end
  local set = ok
  local pop = G.push_device(spec)
  local done = false
  local function restore()
    if done then return end
    done = true
    pop()
    if set then set_default_device(prev) end
  end
  if fn == nil then -- the handle: closed by <close>, or by handle:close() where a block won't do
    return setmetatable({ close = restore }, { __close = restore, __name = "moonflow.device_scope" })
  end
  local res = table.pack(pcall(fn))
  restore()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

return mf
