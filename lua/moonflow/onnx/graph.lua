-- moonflow/onnx/graph.lua — graphs (moonflow/graph) to ONNX nodes: the part of a graph that the
-- outputs need, from the given inputs (placeholders, or any symbolic tensor). Variables become
-- initializers with their values in the session; Consts (a frozen graph's variables too) and
-- values folded at build time become initializers. Ops: MatMul, add/sub/mul/truediv (and the
-- Add/Sub/Mul/RealDiv names), Relu, Sigmoid, Tanh, Exp, Log, Sqrt, Abs, Neg, Softmax, LogSoftmax,
-- Reshape, Flatten, transpose, Conv2D, MaxPool, AvgPool, Linear, BatchNorm (inference), dropout
-- (their conversions: onnx/graph_ops.lua).
--
-- NHWC convolutions and pools compute in NCHW between Transpose nodes. Each symbolic tensor has a
-- lazily made value as moonflow sees it (ctx:value) and, for NHWC spatial ops and the elementwise
-- ops after them, one in NCHW (ctx:nchw), so that conv -> relu -> pool -> conv ... stays NCHW and
-- transposes back once, where a layout-sensitive op (Reshape, MatMul, ...) reads it.
local mf = require "moonflow"
local G = require "moonflow.graph"
local ops = require "moonflow.onnx.graph_ops"

local OPS, TF_OPS, UNARY, SPATIAL = ops.OPS, ops.TF_OPS, ops.UNARY, ops.SPATIAL

local M = {}

local function fail(fmt, ...) error("onnx.export: " .. fmt:format(...), 0) end

local Ctx = {}
Ctx.__index = Ctx

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

-- a name for the outputs of node: its own name (one output), "name:1", ... otherwise
local function out_base(node, t) return #node.outputs > 1 and t.name or node.name end

-- ---- values ---------------------------------------------------------------------------------------

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
