-- moonflow/train.lua — mf.train: TensorFlow 1's optimizers for graphs (GradientDescent, Momentum,
-- Adam, RMSProp, Adadelta, Adagrad) with TF1's defaults, and mf.train.global_step helpers.
--
--   local train_step = mf.train.GradientDescentOptimizer(0.5):minimize(loss)
--   sess:run({train_step, loss}, {[x] = xs, [y_] = ys})
--
-- minimize(loss) adds one op whose run (a) takes the loss computed in the same session run (shared
-- nodes run once) with the variables' values as leaves that require grad, (b) gets the gradients
-- with autograd (mf.grad), (c) updates the session's variable values in place with the eager
-- optimizers' fused kernels (mf._optim.*_step) where their update is TF1's, with tensor operations
-- where it is not (RMSProp). Slots (momentum, Adam's moments, ...) live in the session. The variables trained are var_list, by default the graph's trainable variables plus the
-- eager tensors that require grad held by Const nodes the loss depends on (nn layers' parameters).
local core = require "moonflow.core"
local G = require "moonflow.graph"

local C = core._optim
local train = {}
local is_sym = G.is_sym
local is_grad_enabled, set_grad_enabled = core.is_grad_enabled, core.set_grad_enabled

local function zeros_like(p) return core.zeros(p:shape(), { dtype = p:dtype(), device = p:device() }) end

-- The variables (symbolic) and eager parameters reachable from t.
local function reachable_params(t)
  local seen, eager = {}, {}
  local function visit(node)
    if seen[node] then return end
    seen[node] = true
    if node.kind == "Const" and core.is_tensor(node.value) and node.value:needs_grad() then
      eager[#eager + 1] = node.value
    end
    for _, i in ipairs(node.inputs) do visit(i._node) end
  end
  visit(t._node)
  return seen, eager
end

local function default_var_list(loss)
  local seen, eager = reachable_params(loss)
  local list = {}
  for _, v in ipairs(G.trainable_variables(loss.graph)) do
    if seen[v._node] then list[#list + 1] = v end
  end
  for _, p in ipairs(eager) do list[#list + 1] = p end
  return list
end

-- The tensor a session updates for a var_list entry: the session's value of a Variable, or the
-- eager parameter itself.
local function param_value(sess, v)
  if is_sym(v) then
    local p = sess._vars[v._node]
    if p == nil then error(("Attempting to use uninitialized value %s"):format(v._node.name), 0) end
    return p
  end
  return v
end

local function var_name(v) return is_sym(v) and v._node.name or "parameter" end

-- ---- the optimizer class ----------------------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer
train.Optimizer = Optimizer

function Optimizer:__tostring()
  local lr = is_sym(self.lr) and self.lr.name or ("%g"):format(self.lr)
  return ("mf.train.%s(lr=%s)"):format(self.name, lr)
end

-- compute_gradients(loss [, var_list]) -> { {grad, var}, ... }: grad is a symbolic tensor (nil when
-- the loss does not depend on var).
function Optimizer:compute_gradients(loss, var_list)
  if not is_sym(loss) then error("compute_gradients: loss must be a symbolic tensor", 2) end
  if var_list ~= nil and type(var_list) ~= "table" then
    error("compute_gradients: var_list must be a table of variables, got " .. type(var_list), 2)
  end
  var_list = var_list or default_var_list(loss)
  if #var_list == 0 then error("compute_gradients: no variables to optimize", 2) end
  local g = loss.graph
  local shapes, dtypes = {}, {}
  for i, v in ipairs(var_list) do
    shapes[i] = is_sym(v) and v:shape() or v:shape()
    dtypes[i] = is_sym(v) and v:dtype() or v:dtype()
  end
  local params, n = {}, #var_list -- the values differentiated, refilled by each run
  local outs = table.pack(G.stateful(g, "Gradients", "gradients", { loss }, function(sess, vals)
    for i = 1, n do params[i] = param_value(sess, var_list[i]) end
    -- four arguments: mf.grad reads its optional 3rd argument after pushing to the stack
    local grads = core.grad(vals[1], params, nil, nil)
    return table.unpack(grads, 1, n)
  end, { nout = n, shapes = shapes, dtypes = dtypes, needs_grad = true, fresh_outputs = true }))
  local pairs_ = {}
  for i, v in ipairs(var_list) do pairs_[i] = { outs[i], v } end
  return pairs_
end

-- apply_gradients(pairs [, {global_step=, name=}]) -> the op that applies them.
function Optimizer:apply_gradients(grads_and_vars, opts)
  if type(grads_and_vars) ~= "table" then
    error("apply_gradients: expected a table of {gradient, variable} pairs, got " ..
      type(grads_and_vars), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("apply_gradients: options must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  local inputs, vars = {}, {}
  for i, gv in ipairs(grads_and_vars) do inputs[i], vars[i] = gv[1], gv[2] end
  local g = inputs[1].graph
  local step_var = opts.global_step
  local name = opts.name or self.name
  -- a symbolic learning rate (a placeholder fed per run, say) is one more input of the op
  local nvars, lr_sym = #vars, is_sym(self.lr) and self.lr or nil
  if lr_sym then
    if lr_sym.graph ~= g then
      error(("%s: the learning rate %s is not in the gradients' graph"):format(name, lr_sym.name), 2)
    end
    inputs[nvars + 1] = lr_sym
  end
  -- each variable's update in place, with autograd off (no closure or table made per run)
  local function apply(sess, vals, slots, lr)
    for i = 1, #vars do
      local grad = vals[i]
      if grad ~= nil then
        local v = vars[i]
        local p = param_value(sess, v)
        local st = slots[p]
        if st == nil then
          st = {}
          slots[p] = st
        end
        local ok, err = pcall(self.update, self, p, grad, st, lr)
        if not ok then error(("%s: updating %s: %s"):format(name, var_name(v), tostring(err)), 0) end
      end
    end
    if step_var then
      local s = param_value(sess, step_var)
      s:copy_(s + 1)
    end
  end
  return G.stateful(g, self.op_type, name, inputs, function(sess, vals)
    local slots = sess._slots[self]
    if slots == nil then
      slots = setmetatable({}, { __mode = "k" })
      sess._slots[self] = slots
    end
    local lr = self.lr
    if lr_sym then
      lr = vals[nvars + 1]
      if core.is_tensor(lr) then lr = lr:item() end
      if type(lr) ~= "number" or lr < 0 then
        error(("%s: the learning rate %s must be a number >= 0, got %s"):format(name, lr_sym.name,
          tostring(lr)), 0)
      end
    end
    local prev = is_grad_enabled()
    set_grad_enabled(false)
    local ok, err = pcall(apply, sess, vals, slots, lr)
    set_grad_enabled(prev)
    if not ok then error(err, 0) end
  end, { optimizer = self, var_list = vars }) -- the node names them for mf.train.Saver's slots
end

-- minimize(loss [, {var_list=, global_step=, name=}]) -> the training op.
function Optimizer:minimize(loss, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("minimize: options must be a table, got " .. type(opts), 2)
  end
  opts = opts or {}
  local gv = self:compute_gradients(loss, opts.var_list)
  return self:apply_gradients(gv, { global_step = opts.global_step, name = opts.name })
end

local function class(name, op_type, init, update)
  local cls = setmetatable({}, { __index = Optimizer })
  cls.__index = cls
  cls.__tostring = Optimizer.__tostring
  train[name] = function(...)
    local self = setmetatable({ name = name:gsub("Optimizer$", ""), op_type = op_type }, cls)
    init(self, ...)
    local lr = self.lr
    if is_sym(lr) then
      local shape = lr:shape()
      if not lr:is_floating_point() or shape == nil or #shape ~= 0 then
        error(("%s: a symbolic learning_rate must be a float scalar, got %s"):format(name, tostring(lr)), 2)
      end
    elseif type(lr) ~= "number" or lr < 0 then
      error(("%s: learning_rate must be a number >= 0 or a float scalar tensor, got %s"):format(name,
        tostring(lr)), 2)
    end
    return self
  end
  cls.update = update
  return cls
end

-- The options of a constructor: a table, or TensorFlow 1's positional arguments in order.
local function options(names, ...)
  local first = ...
  if type(first) == "table" then return first end
  local o = {}
  for i, k in ipairs(names) do o[k] = select(i, ...) end
  return o
end

-- ---- the optimizers ---------------------------------------------------------------------------
--
-- Each follows the update of TensorFlow 1's kernel (training_ops.cc) with TensorFlow 1's defaults;
-- the fused kernels do the work where their PyTorch-form update is the same, and each optimizer
-- keeps one hyperparameter table for them (h), so that a step allocates nothing in Lua.

-- GradientDescentOptimizer(lr): var -= lr * g.
class("GradientDescentOptimizer", "ApplyGradientDescent", function(self, lr)
  self.lr = lr
  self.h = { step = 1 }
end, function(self, p, grad, _, lr)
  local h = self.h
  h.lr = lr
  C.sgd_step(p, grad, nil, h)
end)

-- MomentumOptimizer(lr, momentum [, {use_nesterov = false}]): accum = momentum * accum + g;
-- var -= lr * accum (Nesterov: var -= lr * g + lr * momentum * accum). accum starts at 0.
class("MomentumOptimizer", "ApplyMomentum", function(self, lr, momentum, ...)
  self.lr, self.momentum = lr, momentum
  self.nesterov = options({ "use_locking", "name", "use_nesterov" }, ...).use_nesterov or false
  if type(momentum) ~= "number" then error("MomentumOptimizer: momentum must be a number", 3) end
  self.h = { step = 2 } -- never the kernel's first step: accum is a real zero-initialised slot
end, function(self, p, grad, st, lr)
  local h = self.h
  h.lr, h.momentum, h.nesterov = lr, self.momentum, self.nesterov
  if st.accum == nil then st.accum = zeros_like(p) end
  C.sgd_step(p, grad, st.accum, h)
end)

-- AdamOptimizer(lr = 0.001 [, {beta1 = 0.9, beta2 = 0.999, epsilon = 1e-8}] or beta1, beta2,
-- epsilon): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t);
-- var -= lr_t * m / (sqrt(v) + epsilon). The PyTorch-form kernel computes
-- lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps), the same with eps = epsilon / sqrt(1 - b2^t).
class("AdamOptimizer", "ApplyAdam", function(self, lr, ...)
  local o = options({ "beta1", "beta2", "epsilon" }, ...)
  self.lr = lr or 0.001
  self.beta1, self.beta2, self.epsilon = o.beta1 or 0.9, o.beta2 or 0.999, o.epsilon or 1e-8
  self.h = {}
end, function(self, p, grad, st, lr)
  if st.m == nil then st.m, st.v, st.t = zeros_like(p), zeros_like(p), 0 end
  st.t = st.t + 1
  local h = self.h
  h.lr, h.beta1, h.beta2, h.step = lr, self.beta1, self.beta2, st.t
  h.eps = self.epsilon / math.sqrt(1 - self.beta2 ^ st.t)
  C.adam_step(p, grad, st.m, st.v, h)
end)

-- RMSPropOptimizer(lr [, {decay = 0.9, momentum = 0, epsilon = 1e-10, centered = false}] or decay,
-- momentum, epsilon): ms = decay * ms + (1 - decay) g^2 (ms starts at 1);
-- mom = momentum * mom + lr * g / sqrt(ms + epsilon) (centered: sqrt(ms - mg^2 + epsilon) with
-- mg = decay * mg + (1 - decay) g, from 0); var -= mom. Epsilon inside the square root and the
-- mean square's start at 1 are TensorFlow 1's (the fused kernel has PyTorch's: 0, and epsilon
-- outside), so this one is written with tensor operations.
class("RMSPropOptimizer", "ApplyRMSProp", function(self, lr, ...)
  local o = options({ "decay", "momentum", "epsilon", "use_locking", "centered" }, ...)
  self.lr = lr
  self.decay, self.momentum = o.decay or 0.9, o.momentum or 0
  self.epsilon, self.centered = o.epsilon or 1e-10, o.centered or false
end, function(self, p, grad, st, lr)
  if st.ms == nil then
    st.ms = core.ones(p:shape(), { dtype = p:dtype(), device = p:device() })
    st.t = 0
  end
  if self.momentum > 0 and st.mom == nil then st.mom = zeros_like(p) end
  if self.centered and st.mg == nil then st.mg = zeros_like(p) end
  st.t = st.t + 1
  local d, ms = self.decay, st.ms
  ms:copy_(ms * d + grad * grad * (1 - d))
  local denom
  if self.centered then
    local mg = st.mg
    mg:copy_(mg * d + grad * (1 - d))
    denom = core.sqrt(ms - mg * mg + self.epsilon)
  else
    denom = core.sqrt(ms + self.epsilon)
  end
  local step = grad * lr / denom
  if self.momentum > 0 then
    local mom = st.mom
    mom:copy_(mom * self.momentum + step)
    step = mom
  end
  p:copy_(p - step)
end)

-- AdadeltaOptimizer(lr = 0.001 [, {rho = 0.95, epsilon = 1e-8}] or rho, epsilon):
-- accum = rho accum + (1 - rho) g^2; update = sqrt(accum_update + eps) / sqrt(accum + eps) * g;
-- accum_update = rho accum_update + (1 - rho) update^2; var -= lr * update. Slots start at 0.
class("AdadeltaOptimizer", "ApplyAdadelta", function(self, lr, ...)
  local o = options({ "rho", "epsilon" }, ...)
  self.lr = lr or 0.001
  self.rho, self.epsilon = o.rho or 0.95, o.epsilon or 1e-8
  self.h = {}
end, function(self, p, grad, st, lr)
  if st.accum == nil then st.accum, st.delta, st.t = zeros_like(p), zeros_like(p), 0 end
  st.t = st.t + 1
  local h = self.h
  h.lr, h.rho, h.eps, h.step = lr, self.rho, self.epsilon, st.t
  C.adadelta_step(p, grad, st.accum, st.delta, h)
end)

-- AdagradOptimizer(lr [, {initial_accumulator_value = 0.1}] or initial_accumulator_value):
-- accum += g^2; var -= lr * g / sqrt(accum) (no epsilon, as in TensorFlow 1).
class("AdagradOptimizer", "ApplyAdagrad", function(self, lr, ...)
  local o = options({ "initial_accumulator_value" }, ...)
  self.lr = lr
  self.initial_accumulator_value = o.initial_accumulator_value or 0.1
  if type(self.initial_accumulator_value) ~= "number" or self.initial_accumulator_value <= 0 then
    error("AdagradOptimizer: initial_accumulator_value must be a number > 0", 3)
  end
  self.h = { eps = 0 }
end, function(self, p, grad, st, lr)
  if st.sum == nil then
    st.sum = core.full(p:shape(), self.initial_accumulator_value, { dtype = p:dtype(), device = p:device() })
    st.t = 0
  end
  st.t = st.t + 1
  local h = self.h
  h.lr, h.initial_accumulator_value, h.step = lr, self.initial_accumulator_value, st.t
  C.adagrad_step(p, grad, st.sum, h)
end)

-- ---- global step --------------------------------------------------------------------------------

-- mf.train.create_global_step() / get_or_create_global_step(): an int64 scalar variable
-- "global_step", not trainable, that apply_gradients{global_step=} increments.
function train.get_or_create_global_step(g)
  g = g or G.get_default_graph()
  local gs = g._global_step
  if gs == nil then
    gs = g:as_default(function()
      return G.Variable(core.tensor(0), { name = "global_step", trainable = false })
    end)
    g._global_step = gs
  end
  return gs
end
train.create_global_step = train.get_or_create_global_step
function train.get_global_step(g) return (g or G.get_default_graph())._global_step end

-- ---- checkpoints (moonflow/saver.lua) -----------------------------------------------------------
local saver = require "moonflow.saver"
train.Saver, train.latest_checkpoint = saver.Saver, saver.latest_checkpoint

return train
