-- moonflow/onnx/graph.lua — graphs (moonflow/graph) to ONNX nodes: the part of a graph that the
-- outputs need, from the given inputs (placeholders, or any symbolic tensor). Variables become
-- initializers with their values in the session; Consts (a frozen graph's variables too) and
-- values folded at build time become initializers. Ops: MatMul, add/sub/mul/truediv (and the
-- Add/Sub/Mul/RealDiv names), Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Abs, Neg, Softmax, LogSoftmax,
-- Reshape, Flatten, transpose, Conv2D, MaxPool, AvgPool, Linear, BatchNorm (inference), dropout.
--
-- NHWC convolutions and pools compute in NCHW between Transpose nodes. Each symbolic tensor has a
-- lazily made value as moonflow sees it (ctx:value) and, for NHWC spatial ops and the elementwise
-- ops after them, one in NCHW (ctx:nchw), so that conv -> relu -> pool -> conv ... stays NCHW and
-- transposes back once, where a layout-sensitive op (Reshape, MatMul, ...) reads it.
local mf = require "moonflow"
local G = require "moonflow.graph"

local M = {}

local function fail(fmt, ...) error("onnx.export: " .. fmt:format(...), 0) end

local Ctx = {}
Ctx.__index = Ctx

local current -- the export in progress (shape_of reads its probes)

-- ---- probes: the outputs' and intermediate shapes -------------------------------------------
-- Shapes inferred when the graph was built can be unknown (after a dropout fed by a placeholder,
-- for one), so the needed part of the graph is run, as ONNX will run it (dropout the identity), on
-- zero inputs with the dynamic dimensions 2 and then 3: the dims that differ are "N".

local DROPOUT = { dropout = true, Dropout = true }

-- The value of a Variable or constant t, or nil for other tensors.
function Ctx:leaf(t)
  local node = t._node
  if node.kind == "Variable" then
    local val = self.sess and self.sess:variable_value(t)
    if val == nil then
      fail(self.sess and "the variable '%s' has no value in this session (run its initializer first)"
        or "the variable '%s' needs a session for its value: export the session, not the graph", node.name)
    end
    return val
  elseif t._const ~= nil then
    if not mf.is_tensor(t._const) or G.is_sym(t._const) then
      fail("the constant '%s' is a %s; only tensors can be exported", node.name, type(t._const))
    end
    return t._const
  elseif node.kind == "Placeholder" and not self.inputs[t] then
    fail("the placeholder '%s' feeds the outputs but is not one of the inputs", node.name)
  elseif node.kind == "Stateful" then
    fail("'%s' (%s) changes the session's state; it cannot be part of an exported model", node.name, node.type)
  end
  return nil
end

function Ctx:probe(t, n)
  local memo = self.probes[n]
  local v = memo[t]
  if v ~= nil then return v end
  local node = t._node
  if self.inputs[t] then
    local shape = {}
    for i, d in ipairs(t._shape) do shape[i] = d < 0 and n or d end
    v = mf.zeros(shape, { dtype = t._dtype })
  else
    v = self:leaf(t)
    if v == nil and DROPOUT[node.type] then
      v = self:probe(node.inputs[1], n)
    elseif v == nil then
      local vals = {}
      for i, x in ipairs(node.inputs) do vals[i] = self:probe(x, n) end
      local res = table.pack(pcall(mf.no_grad, node.compute, vals))
      if not res[1] then
        fail("%s '%s' fails on inputs of shapes %s: %s", node.type, node.name,
          table.concat((function()
            local parts = {}
            for i, x in ipairs(vals) do parts[i] = mf.is_tensor(x) and table.concat(x:shape(), "x") or type(x) end
            return parts
          end)(), ", "), tostring(res[2]))
      end
      v = res[t._index + 1]
    end
  end
  memo[t] = v
  return v
end

-- ctx:shape(t) -> t's shape with -1 for the dynamic dims (those that follow the inputs' N)
function Ctx:shape(t)
  local s = self.shapes[t]
  if s then return s end
  local a, b = self:probe(t, 2), self:probe(t, 3)
  if not mf.is_tensor(a) then fail("%s is not a tensor (a %s)", t.name, type(a)) end
  s = a:shape()
  local s3 = b:shape()
  for i = 1, #s do if s[i] ~= s3[i] then s[i] = -1 end end
  self.shapes[t] = s
  return s
end

local function shape_of(t) return current:shape(t) end

local function rank(_, t) return #shape_of(t) end


-- a name for the outputs of node: its own name (one output), "name:1", ... otherwise
local function out_base(node, t) return #node.outputs > 1 and t.name or node.name end

-- ---- values ---------------------------------------------------------------------------------------

local UNARY = { Relu = "Relu", relu = "Relu", Sigmoid = "Sigmoid", sigmoid = "Sigmoid", Tanh = "Tanh",
  tanh = "Tanh", Exp = "Exp", Log = "Log", Sqrt = "Sqrt", Abs = "Abs", Neg = "Neg" }
local BINARY = { add = "Add", Add = "Add", sub = "Sub", Sub = "Sub", mul = "Mul", Mul = "Mul",
  truediv = "Div", RealDiv = "Div", Div = "Div" }
local SPATIAL = { Conv2D = true, MaxPool = true, AvgPool = true }

local OPS = {} -- node type -> function(ctx, node, args, t) -> value name of t as moonflow sees it
local TF_OPS -- TensorFlow op type -> function(node) -> an OPS entry or nil (below)

-- ctx:value(t) -> the ONNX name of the symbolic tensor t as moonflow computes it.
function Ctx:value(t)
  local v = self.names[t]
  if v then return v end
  local node = t._node
  if self.nchw_rule[t] or self:prefers_nchw(t) then
    v = self.b:node("Transpose", { self:nchw(t) }, { perm = { 0, 2, 3, 1 } }, out_base(node, t))
  elseif self:leaf(t) ~= nil then
    v = self.b:initializer(out_base(node, t), self:leaf(t):detach())
  else
    local f = OPS[node.type]
    if node.tf_attrs then f = TF_OPS[node.type] and TF_OPS[node.type](node) end
    if f == nil and node.tf_attrs then
      fail("the TensorFlow op %s ('%s') read from a GraphDef is not supported (supported: Identity, " ..
        "MatMul, Add, AddV2, Sub, Mul, RealDiv, Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Abs, Neg, " ..
        "Softmax, LogSoftmax)", node.type, node.name)
    elseif f == nil then
      fail("the graph op %s ('%s') is not supported (supported: MatMul, add, sub, mul, truediv, " ..
        "Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Abs, Neg, Softmax, LogSoftmax, Reshape, Flatten, " ..
        "transpose, Conv2D, MaxPool, AvgPool, Linear, BatchNorm, dropout)", node.type, node.name)
    end
    v = f(self, node, G.node_args(node), t)
  end
  self.names[t] = v
  return v
end

-- Whether t is best computed in NCHW: the output of an NHWC conv/pool, or of an elementwise op
-- on such a value.
function Ctx:prefers_nchw(t)
  local node = t._node
  if self.prefer[t] ~= nil then return self.prefer[t] end
  local p = false
  if node.tf_attrs then
    p = false -- a TensorFlow op read from a file: computed as it is
  elseif SPATIAL[node.type] then
    local args = G.node_args(node)
    local opts = node.type == "Conv2D" and args[4] or args[3]
    p = type(opts) == "table" and opts.data_format == "NHWC"
  elseif UNARY[node.type] and #node.inputs == 1 then
    p = self:prefers_nchw(node.inputs[1])
  end
  self.prefer[t] = p
  return p
end

-- ctx:nchw(t) -> the name of t (N, H, W, C as moonflow sees it) as N, C, H, W.
function Ctx:nchw(t)
  local v = self.nchw_names[t]
  if v then return v end
  local node = t._node
  local rule = self.nchw_rule[t]
  if rule == nil and self:prefers_nchw(t) then
    if SPATIAL[node.type] then rule = OPS[node.type]
    else
      rule = function(ctx, n)
        return ctx.b:node(UNARY[n.type], { ctx:nchw(n.inputs[1]) }, nil, n.name .. "/nchw")
      end
    end
    self.nchw_rule[t] = rule
  end
  if rule then
    v = rule(self, node, G.node_args(node), t, true)
  else
    v = self.b:node("Transpose", { self:value(t) }, { perm = { 0, 3, 1, 2 } }, node.name .. "/nchw")
  end
  self.nchw_names[t] = v
  return v
end

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
  local r = rank(node, x, "input")
  local s, e = args[2] or 1, args[3] or -1
  if s < 0 then s = r + s + 1 end
  if e < 0 then e = r + e + 1 end
  local shape = {}
  for _ = 1, s - 1 do shape[#shape + 1] = 0 end
  shape[#shape + 1] = -1
  for d = e + 1, r do
    local n = shape_of(x)[d]
    if n < 0 then fail("Flatten '%s': dimension %d of its input is unknown", node.name, d) end
    shape[#shape + 1] = n
  end
  return ctx.b:node("Reshape", { ctx:value(x), ctx.b:int64s(node.name .. "/shape", shape) }, nil, node.name)
end

-- transpose(x, d1, d2), permute(x, {dims}) and t(x) all have the type "transpose"
OPS.transpose = function(ctx, node, args)
  local x = args[1]
  local r = rank(node, x, "input")
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
  local s = shape_of(x)
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
  local ws = shape_of(w)
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
  if rank(node, x, "input") == 2 then
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
  local r = rank(node, x, "input")
  cdim = cdim or 2
  if cdim < 0 then cdim = r + cdim + 1 end
  local C = shape_of(rm)[1]
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

TF_OPS = {}
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

-- ---- entry ------------------------------------------------------------------------------------

local function dims_of(s)
  local dims = {}
  for i, d in ipairs(s) do dims[i] = d < 0 and (i == 1 and "N" or "N" .. i) or d end
  return dims
end

-- M.export(b, sess, inputs, outputs): inputs and outputs lists of symbolic tensors of graph.
function M.export(b, sess, inputs, outputs)
  local ctx = setmetatable({ b = b, sess = sess, names = {}, nchw_names = {}, nchw_rule = {},
    prefer = {}, inputs = {}, probes = { [2] = {}, [3] = {} }, shapes = {} }, Ctx)
  current = ctx
  local input_names = {}
  for i, t in ipairs(inputs) do
    if t._dtype == nil or t._shape == nil then
      fail("inputs[%d] (%s) has no known %s", i, t.name, t._dtype == nil and "dtype" or "shape")
    end
    ctx.inputs[t] = true
  end
  for _, t in ipairs(inputs) do
    local name = b:name(t._node.name)
    ctx.names[t] = name
    input_names[name] = true
    b:input(name, t._dtype, dims_of(t._shape))
  end
  local used = {}
  for i, t in ipairs(outputs) do
    local dims = dims_of(ctx:shape(t))
    local v = ctx:value(t)
    if input_names[v] or b.is_init[v] or used[v] then -- an output needs a node of its own
      v = b:node("Identity", { v }, nil, t._node.name)
    end
    used[v] = true
    b:output(v, ctx:probe(t, 2):dtype(), dims)
  end
end

return M
