-- moonflow/nn/loss.lua — the losses: functions added to mf.nn.functional (cross_entropy,
-- nll_loss, mse_loss, l1_loss, binary_cross_entropy_with_logits, binary_cross_entropy, softplus),
-- their module forms (CrossEntropyLoss, NLLLoss, MSELoss, L1Loss, BCEWithLogitsLoss, BCELoss) and
-- TensorFlow's names (softmax_cross_entropy_with_logits, sparse_softmax_cross_entropy_with_logits,
-- sigmoid_cross_entropy_with_logits), all built from differentiable moonflow ops.
--
-- Every loss takes an optional last argument: {reduction = "mean" | "sum" | "none"} (or the
-- reduction string itself); "mean" is the default. Class targets are 1-based class indices
-- (int64): MNIST digit d is class d + 1.
local mf = require "moonflow"
local F = require "moonflow.nn.functional"
local module = require "moonflow.nn.module"

local nnc = mf._nn
local is_tensor = mf.is_tensor
local shape_str = F._shape_str
local L = {}

local function reduction_of(opts, fname)
  local r = type(opts) == "string" and opts or (type(opts) == "table" and opts.reduction) or "mean"
  if r ~= "mean" and r ~= "sum" and r ~= "none" then
    error(fname .. ": reduction must be \"mean\", \"sum\" or \"none\", got " .. tostring(r), 3)
  end
  return r
end

local function reduce(loss, r)
  if r == "mean" then return loss:mean() end
  if r == "sum" then return loss:sum() end
  return loss
end

-- v as a tensor: a Lua table or number made on like's device, in like's dtype unless own_dtype
-- (class indices keep theirs: integers)
local function as_tensor(v, like, fname, what, own_dtype)
  if is_tensor(v) then return v end
  if type(v) == "table" or type(v) == "number" then
    if not like then return mf.tensor(v) end
    return mf.tensor(v, { dtype = not own_dtype and like:dtype() or nil, device = like:device() })
  end
  error(("%s: %s must be a tensor, got %s"):format(fname, what, type(v)), 3)
end

local function check_input(x, fname, what)
  if not is_tensor(x) then error(("%s: %s must be a tensor, got %s"):format(fname, what, type(x)), 3) end
  if not x:is_floating_point() then
    error(("%s: %s must be a float tensor, got %s"):format(fname, what, x:dtype()), 3)
  end
end

local function same_shape(a, b) return shape_str(a) == shape_str(b) end

-- The shape of x without dimension d, as text.
local function shape_without(x, d)
  local s = x:shape()
  table.remove(s, d)
  return #s == 0 and "scalar" or table.concat(s, "x")
end

-- Class indices must have x's shape without its class dim cdim.
local function check_target(x, target, cdim, fname)
  local want = shape_without(x, cdim)
  if shape_str(target) ~= want then
    error(("%s: class indices must have shape %s for input %s, got %s"):format(fname, want,
      shape_str(x), shape_str(target)), 4)
  end
end

-- Reworded for Lua: a bad 1-based class index from a failed call (msg), or msg itself.
local function class_error(msg, fname, C)
  local bad = tostring(msg):match("^[%w_]+: class index (%-?%d+) is out of range")
    or tostring(msg):match("^gather: index (%-?%d+) is out of range")
  if bad then
    error(("%s: class index %s is out of range 1..%d (targets are 1-based class indices: " ..
      "MNIST digit d is class d+1)"):format(fname, bad, C), 4)
  end
  error(msg, 0)
end

-- -logp[target] along cdim, for integer 1-based class targets (shape: logp's without cdim).
local function pick(logp, target, cdim, fname)
  check_target(logp, target, cdim, fname)
  local ok, g = pcall(nnc.gather, logp, cdim, target:unsqueeze(cdim))
  if not ok then class_error(g, fname, logp:size(cdim)) end
  return -g:squeeze(cdim)
end

-- cross_entropy of logits (N, C) or (C) against class indices: one fused op (a kernel each way).
local function fused(logits, target, eps, fname)
  check_target(logits, target, logits:dim(), fname)
  local one = logits:dim() == 1
  local ok, loss
  if one then
    ok, loss = pcall(nnc.cross_entropy, logits:unsqueeze(1), target:reshape { 1 }, eps)
  else
    ok, loss = pcall(nnc.cross_entropy, logits, target, eps)
  end
  if not ok then class_error(loss, fname, logits:size(logits:dim())) end
  return one and loss:reshape {} or loss
end

local function is_integer_dtype(t)
  local d = t:dtype()
  return d == "int64" or d == "int32" or d == "uint8"
end

-- cross_entropy(logits, target [, {reduction =, label_smoothing = 0}]): logits (N, C) (or (C),
-- or (N, C, d1, ...)) and target either class indices (int64, 1-based, shape (N) / () /
-- (N, d1, ...)) or probabilities / one-hot rows of the logits' shape (float). log_softmax then
-- the target's entry (or -sum(target * log_softmax) over the classes).
function F.cross_entropy(logits, target, opts)
  local fname = "cross_entropy"
  local r = reduction_of(opts, fname)
  check_input(logits, fname, "logits")
  if logits:dim() == 0 then error(fname .. ": logits must have a class dimension, got a scalar", 2) end
  target = as_tensor(target, logits, fname, "target", true)
  local cdim = logits:dim() == 1 and 1 or 2
  local eps = type(opts) == "table" and opts.label_smoothing or 0
  if is_integer_dtype(target) and logits:dim() <= 2 then
    return reduce(fused(logits, target, eps, fname), r)
  end
  local logp = nnc.log_softmax(logits, cdim)
  local loss
  if target:is_floating_point() then
    if not same_shape(target, logits) then
      error(("%s: target must be class indices (int64) of shape %s or probabilities of the " ..
        "logits' shape %s, got %s %s"):format(fname, shape_without(logits, cdim),
        shape_str(logits), target:dtype(), shape_str(target)), 2)
    end
    if eps > 0 then target = target * (1 - eps) + eps / logits:size(cdim) end
    loss = -(target * logp):sum(cdim)
  elseif is_integer_dtype(target) then
    loss = pick(logp, target, cdim, fname)
    if eps > 0 then loss = loss * (1 - eps) - logp:mean(cdim) * eps end
  else
    error(("%s: target must be int64 class indices or float probabilities, got %s"):format(
      fname, target:dtype()), 2)
  end
  return reduce(loss, r)
end

-- nll_loss(logp, target [, {reduction =}]): -logp[target] for log-probabilities logp (N, C) and
-- 1-based int64 class indices target (N).
function F.nll_loss(logp, target, opts)
  local fname = "nll_loss"
  local r = reduction_of(opts, fname)
  check_input(logp, fname, "input")
  if logp:dim() == 0 then error(fname .. ": input must have a class dimension, got a scalar", 2) end
  target = as_tensor(target, logp, fname, "target", true)
  if not is_integer_dtype(target) then
    error(("%s: target must be int64 class indices, got %s"):format(fname, target:dtype()), 2)
  end
  return reduce(pick(logp, target, logp:dim() == 1 and 1 or 2, fname), r)
end

local function pointwise(fname, input, target, opts)
  local r = reduction_of(opts, fname)
  check_input(input, fname, "input")
  target = as_tensor(target, input, fname, "target")
  if not same_shape(input, target) then
    error(("%s: input has shape %s but target %s (they must match)"):format(fname,
      shape_str(input), shape_str(target)), 3)
  end
  return r, target
end

-- mse_loss(input, target [, {reduction =}]): (input - target)^2; the shapes must match.
function F.mse_loss(input, target, opts)
  local r
  r, target = pointwise("mse_loss", input, target, opts)
  local d = input - target
  return reduce(d * d, r)
end

-- l1_loss(input, target [, {reduction =}]): |input - target|.
function F.l1_loss(input, target, opts)
  local r
  r, target = pointwise("l1_loss", input, target, opts)
  return reduce(mf.abs(input - target), r)
end

-- softplus(x) = log(1 + exp(x)), stable for any x. The two branches get safe inputs so that the
-- gradient is exact everywhere, 1/2 at 0 included (max(x, 0) + log(1 + exp(-|x|)) would give
-- the subgradients of max and |.| there: 0 instead of 1/2).
function F.softplus(x)
  local pos = mf.ge(x, 0)
  local xp, xn = mf.where(pos, x, 0), mf.where(pos, 0, x)
  return mf.where(pos, xp + mf.log(mf.exp(-xp) + 1), mf.log(mf.exp(xn) + 1))
end

-- binary_cross_entropy_with_logits(x, y [, {reduction =, pos_weight =, weight =}]): the binary
-- cross entropy of sigmoid(x) against y, computed stably as (1 - y) * x + softplus(-x)
-- (= max(x, 0) - x*y + log(1 + exp(-|x|))); pos_weight scales the positive term as in torch.
function F.binary_cross_entropy_with_logits(x, y, opts)
  local fname = "binary_cross_entropy_with_logits"
  local r
  r, y = pointwise(fname, x, y, opts)
  local pw = type(opts) == "table" and opts.pos_weight or nil
  local w = type(opts) == "table" and opts.weight or nil
  local loss
  if pw ~= nil then
    loss = (1 - y) * x + ((pw - 1) * y + 1) * F.softplus(-x)
  else
    loss = (1 - y) * x + F.softplus(-x)
  end
  if w ~= nil then loss = loss * w end
  return reduce(loss, r)
end

-- binary_cross_entropy(p, y [, {reduction =, weight =}]): -(y log p + (1 - y) log(1 - p)) for
-- probabilities p, with the logs clamped at -100 as in torch.
function F.binary_cross_entropy(p, y, opts)
  local r
  r, y = pointwise("binary_cross_entropy", p, y, opts)
  local lp = mf.clamp(mf.log(p), -100)
  local lq = mf.clamp(mf.log(1 - p), -100)
  local loss = -(y * lp + (1 - y) * lq)
  local w = type(opts) == "table" and opts.weight or nil
  if w ~= nil then loss = loss * w end
  return reduce(loss, r)
end

-- ---- TensorFlow's names -------------------------------------------------------------------------

-- softmax_cross_entropy_with_logits{labels =, logits = [, axis = -1]}: the per-example loss vector
-- -sum(labels * log_softmax(logits)) over the class axis (1-based; dim = is accepted too).
function L.softmax_cross_entropy_with_logits(args)
  local fname = "softmax_cross_entropy_with_logits"
  if type(args) ~= "table" or args.logits == nil or args.labels == nil then
    error(fname .. ": expected {labels = ..., logits = ...}", 2)
  end
  local logits = args.logits
  check_input(logits, fname, "logits")
  local labels = as_tensor(args.labels, logits, fname, "labels")
  if not same_shape(labels, logits) then
    error(("%s: labels have shape %s but logits %s (they must match)"):format(fname,
      shape_str(labels), shape_str(logits)), 2)
  end
  local axis = args.axis or args.dim or -1
  return -(labels * nnc.log_softmax(logits, axis)):sum(axis)
end

-- sparse_softmax_cross_entropy_with_logits{labels =, logits =}: labels are 1-based class indices
-- (int64, shape (N)); the per-example loss vector.
function L.sparse_softmax_cross_entropy_with_logits(args)
  if type(args) ~= "table" or args.logits == nil or args.labels == nil then
    error("sparse_softmax_cross_entropy_with_logits: expected {labels = ..., logits = ...}", 2)
  end
  return F.cross_entropy(args.logits, args.labels, { reduction = "none" })
end

-- sigmoid_cross_entropy_with_logits{labels =, logits =}: elementwise.
function L.sigmoid_cross_entropy_with_logits(args)
  if type(args) ~= "table" or args.logits == nil or args.labels == nil then
    error("sigmoid_cross_entropy_with_logits: expected {labels = ..., logits = ...}", 2)
  end
  return F.binary_cross_entropy_with_logits(args.logits, args.labels, { reduction = "none" })
end

-- ---- module forms -------------------------------------------------------------------------------
-- loss = nn.CrossEntropyLoss{reduction = "sum"}; loss(logits, target). The options table is the
-- function's (label_smoothing, pos_weight, weight...).

local function loss_class(name, fn)
  local cls = module.class("nn." .. name, module.Module)
  function cls:__init(opts)
    if opts ~= nil and type(opts) ~= "table" and type(opts) ~= "string" then
      error(name .. ": expected an options table {reduction = ...}", 3)
    end
    if type(opts) == "string" then opts = { reduction = opts } end
    rawset(self, "opts", opts or {})
    reduction_of(self.opts, name)
  end
  function cls:forward(input, target) return fn(input, target, self.opts) end
  function cls:__repr() return ("nn.%s(reduction=%s)"):format(name, self.opts.reduction or "mean") end
  L[name] = cls
end

loss_class("CrossEntropyLoss", F.cross_entropy)
loss_class("NLLLoss", F.nll_loss)
loss_class("MSELoss", F.mse_loss)
loss_class("L1Loss", F.l1_loss)
loss_class("BCEWithLogitsLoss", F.binary_cross_entropy_with_logits)
loss_class("BCELoss", F.binary_cross_entropy)

return L
