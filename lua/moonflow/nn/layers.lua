-- moonflow/nn/layers.lua — the layers that are not convolutions: Linear, ReLU, Sigmoid, Tanh,
-- Softmax, LogSoftmax, Dropout, BatchNorm1d, BatchNorm2d, Flatten, Reshape, Identity. Each is a
-- Module (nn/module.lua) whose forward calls mf.nn.functional; parameters are created with
-- requires_grad and initialised as torch does.
local mf = require "moonflow"
local module = require "moonflow.nn.module"
local F = require "moonflow.nn.functional"
local init = require "moonflow.nn.weight_init"

local class, Module = module.class, module.Module
local shape_str = F._shape_str
local L = {}

-- Raises "<layer>: <message>" (no position: the traceback says where).
local function fail(self, fmt, ...)
  error(self:__repr() .. ": " .. fmt:format(...), 0)
end
L._fail = fail

-- A layer's input must be a tensor (eager or symbolic): "nn.Linear(3 -> 2): expected a tensor
-- input, got nil" rather than Lua's "attempt to index a nil value" inside forward.
local function check_input(self, x)
  if not mf.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
end
L._check_input = check_input

local function check_count(v, what, fname)
  if math.type(v) ~= "integer" or v < 1 then
    error(("%s: %s must be a positive integer, got %s"):format(fname, what, tostring(v)), 4)
  end
end
L._check_count = check_count

-- {dtype =, device =} of new parameters from a layer's options.
local function tensor_opts(opts) return { dtype = opts.dtype, device = opts.device } end
L._tensor_opts = tensor_opts

-- ---- Linear ---------------------------------------------------------------------------------------

-- Linear(in, out [, {bias = true, dtype =, device =}]): y = x @ weight^T + bias, weight (out, in)
-- as in torch, for x (..., in). Initialised like torch: U(-1/sqrt(in), 1/sqrt(in)).
local Linear = class("nn.Linear", Module)
L.Linear = Linear

function Linear:__init(n_in, n_out, opts)
  check_count(n_in, "the number of input features", "Linear")
  check_count(n_out, "the number of output features", "Linear")
  if type(opts) == "boolean" then opts = { bias = opts } end -- Torch7's Linear(in, out, bias)
  opts = opts or {}
  if type(opts) ~= "table" then error("Linear: options must be a table, got " .. type(opts), 3) end
  self.in_features, self.out_features = n_in, n_out
  self:register_parameter("weight", mf.empty({ n_out, n_in }, tensor_opts(opts)))
  if opts.bias ~= false then
    self:register_parameter("bias", mf.empty({ n_out }, tensor_opts(opts)))
  end
  self:reset_parameters()
end

function Linear:reset_parameters()
  init.kaiming_uniform_(self.weight, math.sqrt(5))
  if self.bias ~= nil then
    local b = 1 / math.sqrt(self.in_features)
    init.uniform_(self.bias, -b, b)
  end
end

function Linear:forward(x)
  check_input(self, x)
  if x:dim() == 0 or x:size(-1) ~= self.in_features then
    fail(self, "expected an input with %d features in its last dimension, got shape %s",
      self.in_features, shape_str(x))
  end
  return F.linear(x, self.weight, self.bias)
end

function Linear:__repr()
  return ("nn.Linear(%d -> %d%s)"):format(self.in_features, self.out_features,
    self.bias == nil and ", no bias" or "")
end

-- ---- activations ----------------------------------------------------------------------------------

local function activation(name, fn)
  local cls = class("nn." .. name, Module)
  function cls:forward(x)
    check_input(self, x)
    return fn(x)
  end
  L[name] = cls
end

activation("ReLU", mf.relu)
activation("Sigmoid", mf.sigmoid)
activation("Tanh", mf.tanh)

-- Identity(): returns its input.
local Identity = class("nn.Identity", Module)
L.Identity = Identity
function Identity:forward(x) return x end

-- Softmax([dim = -1]) and LogSoftmax([dim = -1]) along dim (1-based, negative from the end).
local function softmax_class(name, fname)
  local cls = class("nn." .. name, Module)
  function cls:__init(dim)
    if dim ~= nil and math.type(dim) ~= "integer" then
      error(name .. ": dim must be an integer, got " .. tostring(dim), 3)
    end
    self.dim = dim or -1
  end
  function cls:forward(x) -- F looked up at call time: the graph API wraps F
    check_input(self, x)
    return F[fname](x, self.dim)
  end
  function cls:__repr() return ("nn.%s(dim=%d)"):format(name, self.dim) end
  L[name] = cls
end

softmax_class("Softmax", "softmax")
softmax_class("LogSoftmax", "log_softmax")

-- ---- Dropout ------------------------------------------------------------------------------------

-- Dropout([p = 0.5]): p is the DROP probability. Training: x * mask, the mask 0 with probability
-- p and 1/(1-p) elsewhere (so the expectation is x); evaluation: the identity.
local Dropout = class("nn.Dropout", Module)
L.Dropout = Dropout

function Dropout:__init(p)
  p = p or 0.5
  if type(p) ~= "number" or p < 0 or p > 1 then
    error("Dropout: the drop probability p must be in [0, 1], got " .. tostring(p), 3)
  end
  self.p = p
end

function Dropout:forward(x)
  check_input(self, x)
  return F.dropout(x, self.p, self.training)
end
function Dropout:__repr() return ("nn.Dropout(p=%g)"):format(self.p) end

-- ---- BatchNorm ----------------------------------------------------------------------------------

-- BatchNorm1d(n [, opts]) for (N, n) or (N, n, L) inputs and BatchNorm2d(c [, opts]) for
-- (N, c, H, W) inputs (or (N, H, W, c) with data_format = "NHWC"). opts: eps = 1e-5,
-- momentum = 0.1 (false: a cumulative average), affine = true (weight 1 and bias 0, trained),
-- track_running_stats = true, dtype, device. Training normalises with the batch mean and biased
-- variance and updates the running stats with the unbiased one; evaluation uses the running
-- stats. Buffers: running_mean, running_var, num_batches_tracked (as in torch's state_dict).
local function batchnorm_class(name, ndims)
  local cls = class("nn." .. name, Module)
  function cls:__init(n, opts)
    check_count(n, "the number of features", name)
    opts = opts or {}
    if type(opts) ~= "table" then error(name .. ": options must be a table, got " .. type(opts), 3) end
    self.num_features = n
    self.eps = opts.eps or 1e-5
    if opts.momentum == nil then self.momentum = 0.1 else self.momentum = opts.momentum end
    self.affine = opts.affine ~= false
    self.track_running_stats = opts.track_running_stats ~= false
    self.data_format = opts.data_format or "NCHW"
    if self.data_format ~= "NCHW" and self.data_format ~= "NHWC" then
      error(name .. ": data_format must be \"NCHW\" or \"NHWC\", got " .. tostring(self.data_format), 3)
    end
    local to = tensor_opts(opts)
    if self.affine then
      self:register_parameter("weight", mf.ones({ n }, to))
      self:register_parameter("bias", mf.zeros({ n }, to))
    end
    if self.track_running_stats then
      self:register_buffer("running_mean", mf.zeros({ n }, to))
      self:register_buffer("running_var", mf.ones({ n }, to))
      self:register_buffer("num_batches_tracked", mf.zeros({}, { dtype = "int64", device = opts.device }))
    end
  end

  function cls:reset_running_stats()
    if not self.track_running_stats then return end
    init.zeros_(self.running_mean)
    init.ones_(self.running_var)
    mf.no_grad(function() self.num_batches_tracked:fill_(0) end)
  end

  -- forward(x [, training]): training (a boolean) overrides the module's mode for this call; on a
  -- symbolic x it may also be a bool scalar placeholder (see nn/batchnorm_graph.lua).
  function cls:forward(x, training)
    if not mf.is_tensor(x) then fail(self, "expected a tensor input, got %s", type(x)) end
    local nd = x:dim()
    if not ndims[nd] then
      fail(self, "expected a %s input, got shape %s", ndims.text, shape_str(x))
    end
    local cdim = (self.data_format == "NHWC" and nd > 2) and nd or 2
    if x:size(cdim) ~= self.num_features then
      fail(self, "expected %d channels in dimension %d, got shape %s", self.num_features, cdim,
        shape_str(x))
    end
    if mf.is_symbolic(x) then return require("moonflow.nn.batchnorm_graph").forward(self, x, cdim, training) end
    if training ~= nil and type(training) ~= "boolean" then
      fail(self, "training must be a boolean for an eager input, got %s", tostring(training))
    end
    if training == nil then training = self.training end
    local batch_stats = training or not self.track_running_stats
    local momentum = self.momentum
    if training and self.track_running_stats then
      local n = self.num_batches_tracked:item() + 1
      mf.no_grad(function() self.num_batches_tracked:fill_(n) end)
      if not momentum then momentum = 1 / n end
    end
    local rm, rv
    if self.track_running_stats then rm, rv = self.running_mean, self.running_var end
    return F.batch_norm(x, rm, rv, self.weight, self.bias, batch_stats, momentum, self.eps, cdim)
  end

  function cls:__repr()
    local extra = self.data_format == "NHWC" and ", NHWC" or ""
    return ("nn.%s(%d, eps=%g, momentum=%s%s)"):format(name, self.num_features, self.eps,
      tostring(self.momentum), extra)
  end
  L[name] = cls
end

batchnorm_class("BatchNorm1d", { [2] = true, [3] = true, text = "2-D (N, C) or 3-D (N, C, L)" })
batchnorm_class("BatchNorm2d", { [4] = true, text = "4-D (N, C, H, W)" })

-- ---- shapes -----------------------------------------------------------------------------------------

-- Flatten([start = 2 [, end = -1]]): dims start..end merged; (N, 7, 7, 64) -> (N, 3136).
local Flatten = class("nn.Flatten", Module)
L.Flatten = Flatten
Flatten.__folds_into_linear = true

function Flatten:__init(start, stop)
  self.start_dim, self.end_dim = start or 2, stop or -1
end

function Flatten:forward(x)
  check_input(self, x)
  return x:flatten(self.start_dim, self.end_dim)
end

function Flatten:__repr()
  if self.start_dim == 2 and self.end_dim == -1 then return "nn.Flatten" end
  return ("nn.Flatten(%d, %d)"):format(self.start_dim, self.end_dim)
end

-- Reshape(shape) or Reshape(d1, d2, ...): each example reshaped to `shape`, the batch dimension
-- (the first) kept: Reshape{28, 28, 1} maps (N, 784) to (N, 28, 28, 1). A shape that starts with
-- -1 is the whole result's shape instead, as in TensorFlow: Reshape{-1, 28, 28, 1} does the same.
local Reshape = class("nn.Reshape", Module)
L.Reshape = Reshape
Reshape.__folds_into_linear = true

function Reshape:__init(...)
  local shape = select("#", ...) == 1 and type(...) == "table" and ... or { ... }
  if #shape == 0 then error("Reshape: expected a shape, e.g. Reshape{28, 28, 1}", 3) end
  for i, v in ipairs(shape) do
    if math.type(v) ~= "integer" or v < -1 or (v == -1 and i > 1) then
      error("Reshape: sizes must be integers >= 0 (-1 only first, for the batch), got " ..
        table.concat(shape, ", "), 3)
    end
  end
  self.shape = { table.unpack(shape) }
end

function Reshape:forward(x)
  check_input(self, x)
  local s = self.shape
  if s[1] ~= -1 then
    if x:dim() == 0 then fail(self, "expected a batch of inputs, got a scalar") end
    s = { x:size(1), table.unpack(s) }
  end
  local ok, y = pcall(x.reshape, x, s)
  if not ok then fail(self, "cannot reshape an input of shape %s", shape_str(x)) end
  return y
end

function Reshape:__repr() return "nn.Reshape(" .. table.concat(self.shape, "x") .. ")" end

return L
