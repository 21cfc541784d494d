-- moonflow/onnx/graph_ops.lua — the graph ops onnx/graph.lua exports, by node type: each
-- OPS[type](ctx, node, args, t) adds the ONNX nodes of one graph node (args: its call's arguments,
-- G.node_args) and returns the name of its result as moonflow computes it (in NCHW for the NHWC
-- Conv2D/MaxPool/AvgPool, whose ctx:nchw that is). TF_OPS[type](node) gives the conversion of a
-- TensorFlow op read from another tool's GraphDef, or nil when its attrs ask for what it does not
-- do. ctx (onnx/graph.lua): ctx.b the builder, ctx:value(t), ctx:nchw(t), ctx:shape(t), ctx:probe(t, n).
local mf = require "moonflow"
local G = require "moonflow.graph"

local function fail(fmt, ...) error("onnx.export: " .. fmt:format(...), 0) end

local UNARY = { Relu = "Relu", relu = "Relu", Sigmoid = "Sigmoid", sigmoid = "Sigmoid", Tanh = "Tanh",
  tanh = "Tanh", Exp = "Exp", Log = "Log", Sqrt = "Sqrt", Abs = "Abs", Neg = "Neg" }
local BINARY = { add = "Add", Add = "Add", sub = "Sub", Sub = "Sub", mul = "Mul", Mul = "Mul",
  truediv = "Div", RealDiv = "Div", Div = "Div" }
local SPATIAL = { Conv2D = true, MaxPool = true, AvgPool = true }

local OPS = {} -- node type -> function(ctx, node, args, t) -> value name of t as moonflow sees it
local TF_OPS = {} -- TensorFlow op type -> function(node) -> an OPS entry or nil

-- An argument that may be a Lua number: a scalar initializer of the other operand's dtype.
local function operand(ctx, x, other, node)
  if G.is_sym(x) then return ctx:value(x) end
  if type(x) == "number" then
    local dtype = G.is_sym(other) and ctx:probe(other, 2):dtype() or "float32"
    return ctx.b:scalar(node.name .. "/y", x, dtype)
  end
  fail("%s '%s': cannot export an operand of type %s", node.type, node.name, type(x))
end

-- ---- ops --------------------------------------------------------------------------------------------

for ty, op in pairs(UNARY) do
  OPS[ty] = function(ctx, node, args) return ctx.b:node(op, { ctx:value(args[1]) }, nil, node.name) end
end

for ty, op in pairs(BINARY) do
  OPS[ty] = function(ctx, node, args)
    local a, b = args[1], args[2]
    return ctx.b:node(op, { operand(ctx, a, b, node), operand(ctx, b, a, node) }, nil, node.name)
  end
end

OPS.MatMul = function(ctx, node, args)
  return ctx.b:node("MatMul", { ctx:value(args[1]), ctx:value(args[2]) }, nil, node.name)
end

local function softmax(op)
  return function(ctx, node, args)
    local d = args[2] or -1
    if math.type(d) ~= "integer" or d == 0 then fail("%s '%s': dim must be a non-zero integer", node.type, node.name) end
    return ctx.b:node(op, { ctx:value(args[1]) }, { axis = d > 0 and d - 1 or d }, node.name)
  end
end
OPS.Softmax = softmax("Softmax")
OPS.LogSoftmax = softmax("LogSoftmax")

OPS.Reshape = function(ctx, node, args)
  local shape = args[2]
  if type(shape) ~= "table" or G.is_sym(shape) then
    fail("Reshape '%s': only a shape given as a table of sizes can be exported", node.name)
  end
  local list = {}
  for i, d in ipairs(shape) do
    if math.type(d) ~= "integer" or d == 0 or d < -1 then
      fail("Reshape '%s': size %s cannot be exported (sizes >= 1, or one -1)", node.name, tostring(d))
    end
    list[i] = d
  end
  return ctx.b:node("Reshape", { ctx:value(args[1]), ctx.b:int64s(node.name .. "/shape", list) }, nil, node.name)
end

OPS.Flatten = function(ctx, node, args)
  local x = args[1]
  local r = #ctx:shape(x)
  local s, e = args[2] or 1, args[3] or -1
  if s < 0 then s = r + s + 1 end
  if e < 0 then e = r + e + 1 end
  local shape = {}
  for _ = 1, s - 1 do shape[#shape + 1] = 0 end
  shape[#shape + 1] = -1
  for d = e + 1, r do
    local n = ctx:shape(x)[d]
    if n < 0 then fail("Flatten '%s': dimension %d of its input is unknown", node.name, d) end
    shape[#shape + 1] = n
  end
  return ctx.b:node("Reshape", { ctx:value(x), ctx.b:int64s(node.name .. "/shape", shape) }, nil, node.name)
end

-- transpose(x, d1, d2), permute(x, {dims}) and t(x) all have the type "transpose"
OPS.transpose = function(ctx, node, args)
  local x = args[1]
  local r = #ctx:shape(x)
  local perm = {}
  for i = 1, r do perm[i] = i - 1 end
  if type(args[2]) == "table" then
    for i, d in ipairs(args[2]) do perm[i] = (d < 0 and r + d + 1 or d) - 1 end
  elseif math.type(args[2]) == "integer" and math.type(args[3]) == "integer" then
    local a, b = args[2], args[3]
    a, b = a < 0 and r + a + 1 or a, b < 0 and r + b + 1 or b
    perm[a], perm[b] = b - 1, a - 1
  elseif r == 2 then
    perm = { 1, 0 }
  end
  return ctx.b:node("Transpose", { ctx:value(x) }, { perm = perm }, node.name)
end

local function pair(v) if type(v) == "table" then return v[1], v[2] end return v, v end

-- Conv2D / MaxPool / AvgPool compute in NCHW: an NHWC op's result is its NCHW value (ctx:nchw),
-- which ctx:value transposes back. spatial(...) -> data format, the attributes
local function spatial(ctx, node, x, kh, kw, opts, extra)
  local df = opts.data_format or "NCHW"
  local s = ctx:shape(x)
  if #s ~= 4 then fail("%s '%s': its input %s is not 4-D", node.type, node.name, x.name) end
  local H, W = s[2], s[3]
  if df ~= "NHWC" then H, W = s[3], s[4] end
  local sh, sw = pair(opts.stride or extra.default_stride)
  local p = opts.padding
  local pad
  if p == "same" or p == "SAME" then
    if H < 0 or W < 0 then fail("%s '%s': \"same\" padding needs the input's height and width, unknown here", node.type, node.name) end
    local t, b = mf.same_padding(H, kh, sh)
    local l, r = mf.same_padding(W, kw, sw)
    pad = { t, l, b, r }
  elseif p == nil or p == "valid" or p == "VALID" then pad = { 0, 0, 0, 0 }
  elseif type(p) == "number" then pad = { p, p, p, p }
  elseif #p == 2 then pad = { p[1], p[2], p[1], p[2] }
  else pad = { p[1], p[2], p[3], p[4] } end
  local attrs = { kernel_shape = { kh, kw }, strides = { sh, sw }, pads = pad }
  return df, attrs
end

local function input_in(ctx, x, df)
  return df == "NHWC" and ctx:nchw(x) or ctx:value(x)
end

OPS.Conv2D = function(ctx, node, args)
  local x, w, b, opts = args[1], args[2], args[3], args[4] or {}
  local ws = ctx:shape(w)
  if #ws ~= 4 then fail("Conv2D '%s': the weight must be 4-D, got %s", node.name, table.concat(ws, "x")) end
  local df, attrs = spatial(ctx, node, x, ws[3], ws[4], opts, { default_stride = 1 })
  attrs.dilations, attrs.group = { 1, 1 }, 1
  local inputs = { input_in(ctx, x, df), ctx:value(w) }
  if b ~= nil then inputs[3] = ctx:value(b) end
  return ctx.b:node("Conv", inputs, attrs, node.name .. (df == "NHWC" and "/nchw" or ""))
end

local function pool(op)
  return function(ctx, node, args)
    local x, k, opts = args[1], args[2], args[3]
    if type(opts) ~= "table" then opts = { stride = opts, padding = args[4] } end
    local kh, kw = pair(k)
    local df, attrs = spatial(ctx, node, x, kh, kw, opts, { default_stride = k })
    if op == "AveragePool" then
      local cip = opts.count_include_pad
      if cip == nil then cip = not (opts.padding == "same" or opts.padding == "SAME") end
      attrs.count_include_pad = cip and 1 or 0
    end
    return ctx.b:node(op, { input_in(ctx, x, df) }, attrs, node.name .. (df == "NHWC" and "/nchw" or ""))
  end
end
OPS.MaxPool = pool("MaxPool")
OPS.AvgPool = pool("AveragePool")

-- F.linear(x, w, b): x @ w^T + b
OPS.Linear = function(ctx, node, args)
  local x, w, b = args[1], args[2], args[3]
  local B = ctx.b
  if #ctx:shape(x) == 2 then
    return B:node("Gemm", { ctx:value(x), ctx:value(w), b ~= nil and ctx:value(b) or nil }, { transB = 1 }, node.name)
  end
  local wt = B:node("Transpose", { ctx:value(w) }, { perm = { 1, 0 } }, node.name .. "/weight_t")
  local y = B:node("MatMul", { ctx:value(x), wt }, nil, node.name)
  return b ~= nil and B:node("Add", { y, ctx:value(b) }, nil, node.name) or y
end

-- F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, channel_dim)
OPS.BatchNorm = function(ctx, node, args)
  local x, rm, rv, w, b, training, _, eps, cdim = table.unpack(args, 1, 9)
  if training then fail("BatchNorm '%s' normalises with batch statistics (built in training mode); " ..
    "build the graph from a model in evaluation mode", node.name) end
  local r = #ctx:shape(x)
  cdim = cdim or 2
  if cdim < 0 then cdim = r + cdim + 1 end
  local C = ctx:shape(rm)[1]
  local B = ctx.b
  local function param(p, fill)
    if p ~= nil then return ctx:value(p) end
    return B:initializer(node.name .. (fill == 1 and "/scale" or "/bias"), mf.full({ C }, fill, { dtype = rm._dtype }))
  end
  local inputs = { nil, param(w, 1), param(b, 0), ctx:value(rm), ctx:value(rv) }
  local attrs = { epsilon = (eps or 1e-5) + 0.0 }
  if cdim == 2 then
    inputs[1] = ctx:value(x)
    return B:node("BatchNormalization", inputs, attrs, node.name)
  end
  local to, back = {}, {}
  for i = 1, r do to[i] = i - 1 end
  table.remove(to, cdim)
  table.insert(to, 2, cdim - 1)
  for i, d in ipairs(to) do back[d + 1] = i - 1 end
  inputs[1] = B:node("Transpose", { ctx:value(x) }, { perm = to }, node.name .. "/channels_first")
  return B:node("Transpose", { B:node("BatchNormalization", inputs, attrs, node.name) }, { perm = back }, node.name)
end

-- ---- TensorFlow ops read from a GraphDef (graph/tf_ops.lua) --------------------------------------
-- Their arguments are their inputs only and their attributes are TensorFlow's (node.tf_attrs): the
-- ops whose attributes change nothing here map to the same ONNX ops; TF_OPS[type](node) -> the
-- conversion, or nil when an attribute asks for what it does not do.

local function tf_attr(node, key, kind)
  local a = node.tf_attrs[key]
  return a and a[kind]
end

for _, ty in ipairs { "Identity", "StopGradient", "Snapshot", "PreventGradient" } do
  TF_OPS[ty] = function() return function(ctx, _, args) return ctx:value(args[1]) end end
end
for ty in pairs(UNARY) do
  if ty:match("^%u") then TF_OPS[ty] = function() return OPS[ty] end end
end
for _, ty in ipairs { "Add", "AddV2", "Sub", "Mul", "RealDiv" } do
  TF_OPS[ty] = function() return OPS[ty] or OPS.Add end
end
TF_OPS.MatMul = function(node)
  if tf_attr(node, "transpose_a", "b") or tf_attr(node, "transpose_b", "b") then return nil end
  return OPS.MatMul
end
TF_OPS.Softmax = function() return OPS.Softmax end -- TensorFlow's: the last axis, moonflow's default
TF_OPS.LogSoftmax = function() return OPS.LogSoftmax end

-- inference: the identity (its keep/drop probability input is not needed)
OPS.dropout = function(ctx, _, args) return ctx:value(args[1]) end
OPS.Dropout = OPS.dropout

return { OPS = OPS, TF_OPS = TF_OPS, UNARY = UNARY, SPATIAL = SPATIAL }
