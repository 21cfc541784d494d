-- moonflow/graph/tf_ops.lua — TensorFlow's own op types, for GraphDefs that other tools wrote (a
-- TensorFlow frozen graph has no recorded mf.* calls): TF[op](nd) -> fn, where fn computes the op
-- eagerly from the node's input values with TensorFlow's conventions (0-based axes, HWIO conv
-- filters, NHWC by default, ArgMax counting from 0), its attrs read once from the NodeDef `nd`.
-- graph/graphdef.lua builds one node of that type with G.apply(fn) and keeps the op and attrs so
-- that as_graph_def writes the node back as it was. An attr value moonflow cannot follow (dilated
-- convolutions, explicit padding) is an error naming it.
local mf -- require "moonflow", on first use (this file is loaded by the graph code mf loads)

local TF = {}

local function attr(nd, key, kind, default)
  local a = nd.attr[key]
  if a == nil or a[kind] == nil then return default end
  return a[kind]
end

local function ints(nd, key) local l = attr(nd, key, "list") return l and l.i or nil end

local function unsupported(nd, what)
  error(("node '%s' (%s): %s is not supported"):format(nd.name, nd.op, what), 0)
end

-- a 0-based TensorFlow axis of a rank-r tensor -> moonflow's 1-based dim
local function dim(axis, r)
  if axis < 0 then axis = axis + r end
  return axis + 1
end

local function axes_of(t)
  if not (mf.is_tensor(t) and not t:dtype():match "^float") then
    error(("expected an integer tensor of sizes or axes as an input, got %s"):format(
      mf.is_tensor(t) and t:dtype() .. " values" or type(t)), 0)
  end
  if t:dim() == 0 then return { t:item() } end
  return t:totable()
end

local function same(a) return a end
for _, op in ipairs { "Identity", "StopGradient", "Snapshot", "PreventGradient" } do
  TF[op] = function() return same end
end

local UNARY = {
  Relu = function(a) return mf.relu(a) end,
  Relu6 = function(a) return mf.clamp(a, 0, 6) end,
  Sigmoid = function(a) return mf.sigmoid(a) end,
  Tanh = function(a) return mf.tanh(a) end,
  Exp = function(a) return mf.exp(a) end,
  Log = function(a) return mf.log(a) end,
  Sqrt = function(a) return mf.sqrt(a) end,
  Rsqrt = function(a) return 1 / mf.sqrt(a) end,
  Square = function(a) return a * a end,
  Neg = function(a) return -a end,
  Abs = function(a) return mf.abs(a) end,
  Sign = function(a) return mf.sign(a) end,
  Softplus = function(a) return mf.nn.functional.softplus(a) end,
  Softmax = function(a) return mf.nn.functional.softmax(a, -1) end,
  LogSoftmax = function(a) return mf.nn.functional.log_softmax(a, -1) end,
}
for op, f in pairs(UNARY) do TF[op] = function() return f end end

-- a string (or a table of them: a string tensor) is TensorFlow's tf.string: Add concatenates
local function stringy(v) return type(v) == "string" or (type(v) == "table" and getmetatable(v) == nil) end

local BINARY = {
  Add = function(a, b)
    if stringy(a) or stringy(b) then
      return require("moonflow.graph").concat_strings(a, b)
    end
    return a + b
  end,
  Sub = function(a, b) return a - b end,
  Mul = function(a, b) return a * b end,
  RealDiv = function(a, b) return a / b end,
  Maximum = function(a, b) return mf.maximum(a, b) end,
  Minimum = function(a, b) return mf.minimum(a, b) end,
  Pow = function(a, b) return mf.pow(a, b) end,
  SquaredDifference = function(a, b) return (a - b) * (a - b) end,
}
BINARY.AddV2 = BINARY.Add
for op, f in pairs(BINARY) do TF[op] = function() return f end end

function TF.BiasAdd(nd)
  local nchw = attr(nd, "data_format", "s", "NHWC") == "NCHW"
  return function(a, b)
    if nchw then
      local shape = { 1, b:numel() }
      for _ = 3, a:dim() do shape[#shape + 1] = 1 end
      b = b:reshape(shape)
    end
    return a + b
  end
end

function TF.MatMul(nd)
  local ta, tb = attr(nd, "transpose_a", "b", false), attr(nd, "transpose_b", "b", false)
  return function(a, b)
    return mf.matmul(ta and a:t() or a, tb and b:t() or b)
  end
end

local function batch_matmul(nd)
  local ta, tb = attr(nd, "adj_x", "b", false), attr(nd, "adj_y", "b", false)
  return function(a, b)
    if ta then a = a:transpose(-2, -1) end
    if tb then b = b:transpose(-2, -1) end
    return mf.matmul(a, b)
  end
end
TF.BatchMatMul, TF.BatchMatMulV2 = batch_matmul, batch_matmul

function TF.Reshape()
  return function(a, shape) return mf.reshape(a, axes_of(shape)) end
end

-- the two spatial entries of a 4-long strides/ksize list in the data format
local function spatial(nd, key, nchw)
  local l = ints(nd, key)
  if l == nil or #l ~= 4 then unsupported(nd, ("%s %s"):format(key, l and #l or "missing")) end
  if nchw then return { l[3], l[4] } end
  return { l[2], l[3] }
end

local function padding_of(nd)
  local p = attr(nd, "padding", "s", "VALID")
  if p ~= "SAME" and p ~= "VALID" then unsupported(nd, "padding " .. p) end
  return p
end

function TF.Conv2D(nd)
  local df = attr(nd, "data_format", "s", "NHWC")
  local stride = spatial(nd, "strides", df == "NCHW")
  for _, d in ipairs(ints(nd, "dilations") or {}) do
    if d ~= 1 then unsupported(nd, "dilation " .. d) end
  end
  local opts = { stride = stride, padding = padding_of(nd), data_format = df }
  return function(x, filter) -- filter: H, W, in, out
    return mf.nn.functional.conv2d(x, filter:permute(4, 3, 1, 2):contiguous(), nil, opts)
  end
end

local function pool(kind)
  return function(nd)
    local df = attr(nd, "data_format", "s", "NHWC")
    local k = spatial(nd, "ksize", df == "NCHW")
    local opts = { stride = spatial(nd, "strides", df == "NCHW"), padding = padding_of(nd),
      data_format = df }
    local f = kind == "max" and "max_pool2d" or "avg_pool2d"
    return function(x) return mf.nn.functional[f](x, k, opts) end
  end
end
TF.MaxPool, TF.AvgPool = pool("max"), pool("avg")

local function reduce(name)
  return function(nd)
    local keep = attr(nd, "keep_dims", "b", false)
    return function(x, axes)
      local r = x:dim()
      local dims = {}
      for i, a in ipairs(axes_of(axes)) do dims[i] = dim(a, r) end
      table.sort(dims, function(a, b) return a > b end) -- the last first: the others stay put
      for _, d in ipairs(dims) do x = (mf[name](x, d, keep)) end
      return x
    end
  end
end
TF.Mean, TF.Sum, TF.Max, TF.Min, TF.Prod = reduce("mean"), reduce("sum"), reduce("max"),
  reduce("min"), reduce("prod")

function TF.ArgMax(nd)
  local out = attr(nd, "output_type", "type", "int64")
  return function(x, axis)
    local i = mf.argmax(x, dim(axes_of(axis)[1], x:dim())) - 1
    return out == "int64" and i or i:to(out)
  end
end

function TF.Squeeze(nd)
  local list = ints(nd, "squeeze_dims") or ints(nd, "axis") or {}
  return function(x)
    if #list == 0 then return mf.squeeze(x) end
    local dims = {}
    for i, a in ipairs(list) do dims[i] = dim(a, x:dim()) end
    table.sort(dims, function(a, b) return a > b end)
    for _, d in ipairs(dims) do x = mf.squeeze(x, d) end
    return x
  end
end

function TF.ExpandDims()
  return function(x, axis)
    local a = axes_of(axis)[1]
    if a < 0 then a = a + x:dim() + 1 end
    return mf.unsqueeze(x, a + 1)
  end
end

function TF.ConcatV2()
  return function(...)
    local n = select("#", ...)
    local list = { ... }
    local axis = table.remove(list, n)
    return mf.cat(list, dim(axes_of(axis)[1], list[1]:dim()))
  end
end

function TF.Pack(nd)
  local axis = attr(nd, "axis", "i", 0)
  return function(...)
    local list = { ... }
    local r = list[1]:dim() + 1
    return mf.stack(list, dim(axis, r))
  end
end

function TF.Cast(nd)
  local to = attr(nd, "DstT", "type")
  if type(to) ~= "string" then unsupported(nd, "DstT " .. tostring(to)) end
  return function(x) return x:to(to) end
end

function TF.Transpose()
  return function(x, perm)
    local p = axes_of(perm)
    for i, a in ipairs(p) do p[i] = a + 1 end
    return x:permute(table.unpack(p))
  end
end

-- fn_for(nd) -> fn, or nil when moonflow has no such TensorFlow op
return function(nd)
  local make = TF[nd.op]
  if make == nil then return nil end
  mf = mf or require "moonflow"
  return make(nd)
end
