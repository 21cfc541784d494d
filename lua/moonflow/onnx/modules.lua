-- moonflow/onnx/modules.lua — nn modules to ONNX nodes: nn.Sequential (nested too) of Linear,
-- Conv2d, MaxPool2d, AvgPool2d, ReLU, Sigmoid, Tanh, Softmax, LogSoftmax, Flatten, Reshape,
-- BatchNorm1d/2d, Dropout and Identity, in inference mode (the model's evaluation mode).
--
-- The layers are walked in order with a dummy input (zeros, batch 2) run through each one, so
-- that every layer sees its real input shape (the "same" padding of a convolution, the rank for
-- Flatten). NHWC layers (Conv2d, pools, BatchNorm2d with data_format = "NHWC") compute in NCHW
-- between Transpose nodes; consecutive NHWC layers share one NCHW value (ctx.nchw: the current
-- value is the NCHW transpose of what the moonflow layer sees), so a stack of them costs one
-- Transpose in and one out.
local mf = require "moonflow"

local M = {}

local function fail(fmt, ...) error("onnx.export: " .. fmt:format(...), 0) end

-- ---- layout of the current value ------------------------------------------------------------

-- The current value as the moonflow layer sees it (N, H, W, C after NHWC layers).
local function logical(ctx)
  if ctx.nchw then
    ctx.v = ctx.b:node("Transpose", { ctx.v }, { perm = { 0, 2, 3, 1 } }, "to_nhwc")
    ctx.nchw = false
  end
  return ctx.v
end

-- The current (N, H, W, C) value as N, C, H, W.
local function as_nchw(ctx)
  if not ctx.nchw then
    ctx.v = ctx.b:node("Transpose", { ctx.v }, { perm = { 0, 3, 1, 2 } }, "to_nchw")
    ctx.nchw = true
  end
  return ctx.v
end

-- The input of a layer with data format df: {value name, NCHW dummy}.
local function spatial_input(ctx, df, x)
  if df == "NHWC" then return as_nchw(ctx), x:permute { 1, 4, 2, 3 } end
  return logical(ctx), x
end

local function set_output(ctx, v, df)
  ctx.v = v
  ctx.nchw = df == "NHWC"
end

-- ---- layers -------------------------------------------------------------------------------------

local L = {}

L["nn.Linear"] = function(ctx, m, x, path)
  local b, v = ctx.b, logical(ctx)
  local bias = m.bias and b:initializer(path .. ".bias", m.bias) or nil
  if x:dim() == 2 then
    ctx.v = b:node("Gemm", { v, b:initializer(path .. ".weight", m.weight), bias }, { transB = 1 }, path)
  else -- (N, ..., in): MatMul with weight^T, then the bias
    local y = b:node("MatMul", { v, b:initializer(path .. ".weight_t", m.weight:t():contiguous()) }, nil, path)
    ctx.v = bias and b:node("Add", { y, bias }, nil, path) or y
  end
end

local function geometry(m, xn, kh, kw)
  local F = mf.nn.functional
  local pad = F._resolve_padding(m.padding, xn, kh, kw, m.stride[1], m.stride[2], m.__typename)
  return { kernel_shape = { kh, kw }, strides = { m.stride[1], m.stride[2] },
    pads = { pad[1], pad[2], pad[3], pad[4] } }
end

L["nn.Conv2d"] = function(ctx, m, x, path)
  local b = ctx.b
  local v, xn = spatial_input(ctx, m.data_format, x)
  local attrs = geometry(m, xn, m.kernel_size[1], m.kernel_size[2])
  attrs.dilations, attrs.group = { 1, 1 }, 1
  local inputs = { v, b:initializer(path .. ".weight", m.weight) }
  if m.bias then inputs[3] = b:initializer(path .. ".bias", m.bias) end
  set_output(ctx, b:node("Conv", inputs, attrs, path), m.data_format)
end

L["nn.MaxPool2d"] = function(ctx, m, x, path)
  local v, xn = spatial_input(ctx, m.data_format, x)
  set_output(ctx, ctx.b:node("MaxPool", { v }, geometry(m, xn, m.kernel_size[1], m.kernel_size[2]),
    path), m.data_format)
end

L["nn.AvgPool2d"] = function(ctx, m, x, path)
  local v, xn = spatial_input(ctx, m.data_format, x)
  local attrs = geometry(m, xn, m.kernel_size[1], m.kernel_size[2])
  local cip = m.count_include_pad -- as F.avg_pool2d: torch's default, TensorFlow's for "same"
  if cip == nil then cip = m.padding ~= "same" end
  attrs.count_include_pad = cip and 1 or 0
  set_output(ctx, ctx.b:node("AveragePool", { v }, attrs, path), m.data_format)
end

-- elementwise: the layout does not matter
for name, op in pairs { ["nn.ReLU"] = "Relu", ["nn.Sigmoid"] = "Sigmoid", ["nn.Tanh"] = "Tanh" } do
  L[name] = function(ctx, _, _, path) ctx.v = ctx.b:node(op, { ctx.v }, nil, path) end
end

-- inference: the identity
L["nn.Dropout"] = function() end
L["nn.Identity"] = function() end

local function softmax(op)
  return function(ctx, m, x, path)
    local d = m.dim
    if d == 0 or d > x:dim() or d < -x:dim() then
      fail("%s (%s): dim %d is out of range for an input of rank %d", m:__repr(), path, d, x:dim())
    end
    ctx.v = ctx.b:node(op, { logical(ctx) }, { axis = d > 0 and d - 1 or d }, path)
  end
end
L["nn.Softmax"] = softmax("Softmax")
L["nn.LogSoftmax"] = softmax("LogSoftmax")

-- Reshape with {0 (copy), ..., -1 (merged), sizes after}
L["nn.Flatten"] = function(ctx, m, x, path)
  local r = x:dim()
  local s, e = m.start_dim, m.end_dim
  if s < 0 then s = r + s + 1 end
  if e < 0 then e = r + e + 1 end
  if s < 1 or e > r or s > e then
    fail("%s (%s): dims %d..%d are out of range for an input of rank %d", m:__repr(), path,
      m.start_dim, m.end_dim, r)
  end
  local v = logical(ctx)
  if s == e then return end
  if s == 2 and e == r then
    ctx.v = ctx.b:node("Flatten", { v }, { axis = 1 }, path)
    return
  end
  local shape = {}
  for d = 1, s - 1 do shape[#shape + 1] = 0 end
  shape[#shape + 1] = -1
  for d = e + 1, r do shape[#shape + 1] = x:size(d) end
  ctx.v = ctx.b:node("Reshape", { v, ctx.b:int64s(path .. ".shape", shape) }, nil, path)
end

L["nn.Reshape"] = function(ctx, m, _, path)
  local shape = { table.unpack(m.shape) }
  for _, d in ipairs(shape) do
    if d == 0 then fail("%s (%s): a size 0 cannot be exported (ONNX reads 0 as 'copy')", m:__repr(), path) end
  end
  if shape[1] ~= -1 then table.insert(shape, 1, 0) end -- the batch dimension is kept
  ctx.v = ctx.b:node("Reshape", { logical(ctx), ctx.b:int64s(path .. ".shape", shape) }, nil, path)
end

local function batchnorm(ctx, m, x, path)
  if not m.track_running_stats then
    fail("%s (%s): without running statistics it normalises with each batch's own; ONNX " ..
      "inference needs the running mean and variance", m:__repr(), path)
  end
  local b, nd = ctx.b, x:dim()
  local C = m.num_features
  local ones, zeros = mf.ones({ C }, { dtype = m.running_mean:dtype() }), mf.zeros({ C }, { dtype = m.running_mean:dtype() })
  local inputs = { nil, b:initializer(path .. ".weight", m.weight or ones),
    b:initializer(path .. ".bias", m.bias or zeros), b:initializer(path .. ".running_mean", m.running_mean),
    b:initializer(path .. ".running_var", m.running_var) }
  local attrs = { epsilon = m.eps + 0.0 }
  local last = m.data_format == "NHWC" and nd > 2
  if last and nd == 4 then
    inputs[1] = as_nchw(ctx)
    ctx.v = b:node("BatchNormalization", inputs, attrs, path)
  elseif last then -- (N, L, C): to (N, C, L) and back
    inputs[1] = b:node("Transpose", { logical(ctx) }, { perm = { 0, 2, 1 } }, path .. ".to_ncl")
    ctx.v = b:node("Transpose", { b:node("BatchNormalization", inputs, attrs, path) },
      { perm = { 0, 2, 1 } }, path .. ".to_nlc")
  else
    inputs[1] = logical(ctx)
    ctx.v = b:node("BatchNormalization", inputs, attrs, path)
  end
end
L["nn.BatchNorm1d"] = batchnorm
L["nn.BatchNorm2d"] = batchnorm

-- ---- the walk -------------------------------------------------------------------------------------

-- Converts m (run on the dummy x) into nodes after ctx.v; returns m's output on x.
local function convert(ctx, m, x, path)
  local kind = m.__typename
  if kind == "nn.Sequential" then
    for i, child in ipairs(m:children()) do
      x = convert(ctx, child, x, path == "" and tostring(i) or path .. "." .. i)
    end
    return x
  end
  local f = L[kind]
  if f == nil then
    fail("unsupported layer %s%s (supported: nn.Sequential of Linear, Conv2d, MaxPool2d, " ..
      "AvgPool2d, ReLU, Sigmoid, Tanh, Softmax, LogSoftmax, Flatten, Reshape, BatchNorm1d, " ..
      "BatchNorm2d, Dropout, Identity)", m:__repr(), path == "" and "" or " at " .. path)
  end
  f(ctx, m, x, path == "" and kind:gsub("^nn%.", "") or path)
  local ok, y = pcall(m, x)
  if not ok then fail("%s (%s) fails on its input of shape %s: %s", m:__repr(), path,
    table.concat(x:shape(), "x"), tostring(y)) end
  return y
end

-- M.export(b, model, shape, dtype [, device]): nodes for model on an input of `shape` (-1: the
-- dimension "N"); the dummy inputs are made on `device` (the model's).
function M.export(b, model, shape, dtype, device)
  local function zeros(n) -- the input with -1 as n
    local s = {}
    for i, d in ipairs(shape) do s[i] = d == -1 and n or d end
    return mf.zeros(s, { dtype = dtype, device = device })
  end
  local dims = {}
  for i, d in ipairs(shape) do dims[i] = d == -1 and "N" or d end
  local in_name, out_name = b:name("input"), b:name("output")
  b:input(in_name, dtype, dims)

  local modes = {}
  for _, m in ipairs(model:modules()) do modes[m] = m.training end
  model:evaluate()
  local ok, res = pcall(mf.no_grad, function()
    local ctx = { b = b, v = in_name, nchw = false }
    local y = convert(ctx, model, zeros(2), "")
    logical(ctx)
    -- the output's dims that follow the batch: those that change with it
    local y3 = model(zeros(3))
    local out = {}
    for i = 1, y:dim() do out[i] = y:size(i) ~= y3:size(i) and "N" or y:size(i) end
    return { v = ctx.v, dims = out, dtype = y:dtype() }
  end)
  for m, mode in pairs(modes) do rawset(m, "training", mode) end
  if not ok then error(res, 0) end

  local v = res.v
  if v == in_name then v = b:node("Identity", { v }) end -- a model that changes nothing
  b:rename(v, out_name)
  b:output(out_name, res.dtype, res.dims)
end

return M
