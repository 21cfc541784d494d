-- moonflow/nn/functional.lua — `mf.nn.functional` (also `mf.nn.F`): the layers' operations as
-- functions of tensors (linear, conv2d, max_pool2d, avg_pool2d, relu, sigmoid, tanh, softmax,
-- log_softmax, dropout, batch_norm (and batch_norm_composed), flatten). The losses are added by nn/loss.lua.
--
-- Geometry options, shared by conv2d and the pools:
--   stride  = n | {sh, sw}
--   padding = n | {ph, pw} | {top, left, bottom, right} | "valid" (0) | "same" (TensorFlow's:
--             out = ceil(in / stride), the odd padding cell after)
--   data_format = "NCHW" (default) | "NHWC" (the input and the result are N, H, W, C)
-- Dims are 1-based, negative from the end, as everywhere in moonflow.
local mf = require "moonflow"

local nnc = mf._nn
local F = {}

local is_tensor = mf.is_tensor

-- v, when it is a tensor (eager or symbolic); else an error naming fname and the argument
local function need_tensor(v, fname, what)
  if not mf.is_tensor(v) then
    error(("%s: %s must be a tensor, got %s"):format(fname, what, type(v)), 3)
  end
  return v
end
F._need_tensor = need_tensor

-- v, when it is nil or a tensor; else an error naming fname and the argument
local function opt_tensor(v, fname, what)
  if v ~= nil then need_tensor(v, fname, what) end
  return v
end

local function shape_str(t)
  local s = t:shape()
  if s == nil then return "unknown" end -- a symbolic tensor whose shape is not known yet
  return #s == 0 and "scalar" or table.concat(s, "x")
end
F._shape_str = shape_str

local function pair(v, what, fname)
  if type(v) == "number" then return v, v end
  if type(v) == "table" and #v == 2 then return v[1], v[2] end
  error(("%s: %s must be a number or {h, w}, got %s"):format(fname, what, tostring(v)), 4)
end

local function check_format(df, fname)
  df = df or "NCHW"
  if df ~= "NCHW" and df ~= "NHWC" then
    error(fname .. ": data_format must be \"NCHW\" or \"NHWC\", got " .. tostring(df), 4)
  end
  return df
end

-- {top, left, bottom, right} for an NCHW input x, a kh x kw window and strides sh, sw.
local function resolve_padding(padding, x, kh, kw, sh, sw, fname)
  if padding == nil or padding == "valid" or padding == "VALID" then return { 0, 0, 0, 0 } end
  if padding == "same" or padding == "SAME" then
    local t, b = mf.same_padding(x:size(3), kh, sh)
    local l, r = mf.same_padding(x:size(4), kw, sw)
    return { t, l, b, r }
  end
  if type(padding) == "number" then return { padding, padding, padding, padding } end
  if type(padding) == "table" and (#padding == 2 or #padding == 4) then
    if #padding == 2 then return { padding[1], padding[2], padding[1], padding[2] } end
    return padding
  end
  error(fname .. ": padding must be a number, {ph, pw}, {top, left, bottom, right}, \"same\" or " ..
    "\"valid\", got " .. tostring(padding), 4)
end
F._resolve_padding = resolve_padding

local function to_nchw(x, df, fname)
  if x:dim() ~= 4 then
    error(("%s: expected a 4-D input (%s), got shape %s"):format(fname,
      df == "NHWC" and "N, H, W, C" or "N, C, H, W", shape_str(x)), 4)
  end
  if df == "NHWC" then return x:permute { 1, 4, 2, 3 } end
  return x
end

local function from_nchw(y, df)
  if df == "NHWC" then return y:permute { 1, 3, 4, 2 } end
  return y
end

-- ---- layers as functions ---------------------------------------------------------------------

-- linear(x, w [, b]): x @ w^T + b with w (out, in) as in torch; x (..., in).
function F.linear(x, w, b)
  need_tensor(x, "linear", "the input")
  need_tensor(w, "linear", "the weight")
  local y = mf.matmul(x, w:t())
  if b ~= nil then y = y + b end
  return y
end

-- conv2d(x, w [, b [, {stride=, padding=, data_format=}]]): w (O, C, KH, KW) in either format.
function F.conv2d(x, w, b, opts)
  need_tensor(x, "conv2d", "the input")
  need_tensor(w, "conv2d", "the weight")
  opt_tensor(b, "conv2d", "the bias")
  if opts ~= nil and type(opts) ~= "table" then
    error("conv2d: options must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  local df = check_format(opts.data_format, "conv2d")
  local xn = to_nchw(x, df, "conv2d")
  local sh, sw = pair(opts.stride or 1, "stride", "conv2d")
  local pad = resolve_padding(opts.padding, xn, w:size(3), w:size(4), sh, sw, "conv2d")
  return from_nchw(nnc.conv2d(xn, w, b, { stride = { sh, sw }, pad = pad }), df)
end

-- opts: a table, or torch's positional stride (then padding).
local function pool(kind, x, k, opts, padding)
  local fname = kind .. "_pool2d"
  if not mf.is_tensor(x) then
    error(("%s: the input must be a tensor, got %s"):format(fname, type(x)), 2)
  end
  if type(opts) ~= "table" then opts = { stride = opts, padding = padding } end
  local df = check_format(opts.data_format, fname)
  local xn = to_nchw(x, df, fname)
  local kh, kw = pair(k, "kernel size", fname)
  local sh, sw = pair(opts.stride or k, "stride", fname)
  local pad = resolve_padding(opts.padding, xn, kh, kw, sh, sw, fname)
  local g = { kernel = { kh, kw }, stride = { sh, sw }, pad = pad }
  if kind == "avg" then
    -- torch counts the zero padding by default; TensorFlow's "same" does not
    local cip = opts.count_include_pad
    if cip == nil then cip = not (opts.padding == "same" or opts.padding == "SAME") end
    g.count_include_pad = cip
    return from_nchw(nnc.avg_pool2d(xn, g), df)
  end
  return from_nchw(nnc.max_pool2d(xn, g), df)
end

-- max_pool2d(x, k [, {stride = k, padding = 0, data_format =}]) (or torch's positional
-- max_pool2d(x, k, stride, padding)); padding cells never win.
function F.max_pool2d(x, k, opts, padding) return pool("max", x, k, opts, padding) end

-- avg_pool2d(x, k [, {stride = k, padding = 0, data_format =, count_include_pad =}]);
-- count_include_pad defaults to true (torch), except with padding = "same" (TensorFlow).
function F.avg_pool2d(x, k, opts, padding) return pool("avg", x, k, opts, padding) end

function F.relu(x) return mf.relu(x) end
function F.sigmoid(x) return mf.sigmoid(x) end
function F.tanh(x) return mf.tanh(x) end

-- softmax(x [, dim = -1]) and log_softmax(x [, dim = -1]): numerically stable.
function F.softmax(x, dim) return nnc.softmax(x, dim or -1) end
function F.log_softmax(x, dim) return nnc.log_softmax(x, dim or -1) end

-- dropout(x [, p = 0.5 [, training = true]]): zeroes elements with probability p and scales the
-- rest by 1/(1-p) when training; the identity otherwise.
function F.dropout(x, p, training)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then
    error("dropout: the drop probability must be in [0, 1], got " .. tostring(p), 2)
  end
  if training == false or p == 0 then return x end
  return x * nnc.dropout_mask(x, p)
end

-- flatten(x [, start = 1 [, end = -1]]): dims start..end merged (torch.flatten).
function F.flatten(x, start, stop)
  return need_tensor(x, "flatten", "the input"):flatten(start or 1, stop or -1)
end

-- Whether a graph's shape inference is running an op on dummy values: its constants are the real
-- tensors then (batch_norm leaves the running stats alone).
local function probing()
  local G = package.loaded["moonflow.graph"]
  return G ~= nil and G.is_probing()
end

-- Checks batch_norm's x and channel dim (negative from the end); returns the positive dim.
local function bn_channel_dim(x, cdim, fname)
  local nd = x:dim()
  cdim = cdim or 2
  if cdim < 0 then cdim = nd + cdim + 1 end
  if nd < 2 or cdim < 1 or cdim > nd then
    error(("%s: expected an input with a channel dimension %d, got shape %s"):format(fname,
      cdim, shape_str(x)), 3)
  end
  return cdim
end

local function bn_count_check(x, C, fname)
  if x:numel() // C <= 1 then
    error(("%s: expected more than 1 value per channel when training, got input " ..
      "shape %s"):format(fname, shape_str(x)), 3)
  end
end

-- batch_norm(x, running_mean, running_var [, weight [, bias [, training = false [, momentum = 0.1
-- [, eps = 1e-5 [, channel_dim = 2]]]]]]): normalises over every dim but channel_dim. Training:
-- batch mean and biased variance, and the running stats (when given) updated in place with the
-- unbiased variance: r = (1 - momentum) * r + momentum * batch. Otherwise the running stats.
-- One fused op (the core's batch_norm, with its own autograd rule): x is viewed as (A, C, B), A
-- the product of the dims before channel_dim and B of those after (the statistics run over A and
-- B alike, so NHWC is (N*H*W, C, 1), no transpose). Gradients reach x, weight and bias; in
-- evaluation mode they are differentiable again (create_graph), in training mode a backward with
-- create_graph fails, saying so. Running stats that need gradients (evaluation) make it call
-- batch_norm_composed, the same function made of small ops.
function F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps, cdim)
  need_tensor(x, "batch_norm", "the input")
  opt_tensor(running_mean, "batch_norm", "running_mean")
  opt_tensor(running_var, "batch_norm", "running_var")
  opt_tensor(weight, "batch_norm", "the weight")
  opt_tensor(bias, "batch_norm", "the bias")
  eps = eps or 1e-5
  if momentum == nil then momentum = 0.1 end
  cdim = bn_channel_dim(x, cdim, "batch_norm")
  local C = x:size(cdim)
  if training then
    bn_count_check(x, C, "batch_norm")
    -- a graph's shape inference runs on dummy values: the running stats stay as they are
    if probing() then running_mean, running_var = nil, nil end
  else
    if running_mean == nil or running_var == nil then
      error("batch_norm: evaluation needs the running mean and variance", 2)
    end
    -- gradients of the running stats (never the layers' case): the composed form has them
    if running_mean:needs_grad() or running_var:needs_grad() then
      return F.batch_norm_composed(x, running_mean, running_var, weight, bias, training, momentum,
        eps, cdim)
    end
  end
  local shape, A, B = x:shape(), 1, 1
  for d = 1, cdim - 1 do A = A * shape[d] end
  for d = cdim + 1, #shape do B = B * shape[d] end
  local xv, tr = x:reshape { A, C, B }, training and true or false
  if x:device() == "cpu" then
    return nnc.batch_norm(xv, running_mean, running_var, weight, bias, tr, momentum, eps):reshape(shape)
  end
  -- a GPU without the fused kernel (a build without cuDNN) fails before touching anything: the
  -- composed form runs there instead
  local ok, y = pcall(nnc.batch_norm, xv, running_mean, running_var, weight, bias, tr, momentum, eps)
  if ok then return y:reshape(shape) end
  if not tostring(y):find("batch_norm: not supported on", 1, true) then error(y, 0) end
  return F.batch_norm_composed(x, running_mean, running_var, weight, bias, training, momentum, eps,
    cdim)
end

-- batch_norm_composed(...): batch_norm's arguments and values, made of small differentiable ops
-- (mean, sub, mul, div, sqrt) rather than the fused op: slower; gradients also reach the running
-- stats in evaluation mode, and differentiable again (create_graph) in training mode too.
function F.batch_norm_composed(x, running_mean, running_var, weight, bias, training, momentum, eps,
                               cdim)
  need_tensor(x, "batch_norm_composed", "the input")
  opt_tensor(running_mean, "batch_norm_composed", "running_mean")
  opt_tensor(running_var, "batch_norm_composed", "running_var")
  opt_tensor(weight, "batch_norm_composed", "the weight")
  opt_tensor(bias, "batch_norm_composed", "the bias")
  eps = eps or 1e-5
  if momentum == nil then momentum = 0.1 end
  local nd = x:dim()
  cdim = bn_channel_dim(x, cdim, "batch_norm_composed")
  local C = x:size(cdim)
  local view = {}
  for d = 1, nd do view[d] = d == cdim and C or 1 end
  local y
  if training then
    bn_count_check(x, C, "batch_norm_composed")
    local count = x:numel() // C
    local mean = x
    for d = 1, nd do if d ~= cdim then mean = mean:mean(d, true) end end
    local xc = x - mean
    local var = xc * xc
    for d = 1, nd do if d ~= cdim then var = var:mean(d, true) end end
    y = xc / mf.sqrt(var + eps)
    if running_mean ~= nil and not probing() then
      mf.no_grad(function()
        local m = mean:detach():reshape { C }
        local v = var:detach():reshape { C } * (count / (count - 1))
        running_mean:copy_(running_mean * (1 - momentum) + m * momentum)
        running_var:copy_(running_var * (1 - momentum) + v * momentum)
      end)
    end
  else
    if running_mean == nil or running_var == nil then
      error("batch_norm_composed: evaluation needs the running mean and variance", 2)
    end
    y = (x - running_mean:view(view)) / mf.sqrt(running_var:view(view) + eps)
  end
  if weight ~= nil then y = y * weight:view(view) end
  if bias ~= nil then y = y + bias:view(view) end
  return y
end

return F
