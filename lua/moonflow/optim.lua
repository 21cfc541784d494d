-- moonflow/optim.lua — mf.optim: the eager optimizers SGD, Adam, AdamW, RMSProp (alias RMSprop),
-- Adadelta and Adagrad, with PyTorch's defaults, update rules and interface: param groups,
-- opt:step([closure]), opt:zero_grad([set_to_none]), opt:state_dict(), opt:load_state_dict(sd),
-- opt:add_param_group(group), opt.param_groups, opt.state. Each update of a parameter is one fused
-- kernel (mf._optim.steps, bindings/optim.c), not a chain of small ops; a group's parameters are
-- updated in one call, which a GPU runs in one launch per 16 parameters.
--
--   local opt = mf.optim.Adam(model:parameters(), { lr = 1e-3 })
--   local opt = mf.optim.SGD({ { params = body }, { params = head, lr = 0.1 } }, { lr = 0.01 })
--
-- A parameter is updated when its `grad` is not nil; its state (opt.state[param]) is created at its
-- first update. Changes to opt.param_groups[i] (lr, ...) take effect at the next step.
-- state_dict() returns copies: { state = { [i] = { step = n, exp_avg = tensor, ... } },
-- param_groups = { { lr = ..., params = { i, ... } } } }, parameters numbered from 1 over the groups
-- in order, as PyTorch numbers them from 0. load_state_dict(sd) copies the state into tensors of
-- each parameter's dtype and device and takes the groups' hyper-parameters.

local core = require "moonflow.core"
local C = core._optim

local optim = {}

-- ---- errors -----------------------------------------------------------------------------------
-- Raised at the first caller outside this file, so that the message points at the user's line.
local fail = require("moonflow.util").errors(debug.getinfo(1, "S").source)

local function is_tensor(x) return core.is_tensor(x) end

local function shape_str(t)
  local s = t:shape()
  if #s == 0 then return "scalar" end
  return table.concat(s, "x")
end

-- ---- hyper-parameter checks ---------------------------------------------------------------------

local REQUIRED = setmetatable({}, { __tostring = function() return "<required>" end })

local function check_number(cls, key, v, lo, hi, hi_open, what)
  if type(v) ~= "number" then
    fail("%s: %s must be a number, got %s", cls, key, type(v))
  end
  local ok = v >= lo and (hi == nil or (hi_open and v < hi) or (not hi_open and v <= hi))
  if not ok then
    if hi == nil then
      fail("%s: invalid %s %s (expected >= %s)", cls, what or key, tostring(v), tostring(lo))
    end
    fail("%s: invalid %s %s (expected %s <= %s %s %s)", cls, what or key, tostring(v), tostring(lo),
      key, hi_open and "<" or "<=", tostring(hi))
  end
end

local function check_bool(cls, key, v)
  if type(v) ~= "boolean" then fail("%s: %s must be a boolean, got %s", cls, key, type(v)) end
end

-- ---- the optimizers: defaults, checks, the kernel arguments, the update of a group --------------

local function zeros_like(p) return core.zeros(p:shape(), { dtype = p:dtype(), device = p:device() }) end

local SPECS = {}

-- The optimizers whose state counts steps give `kind` (the kernel) and prepare(p, st, h), which
-- makes a parameter's state tensors and returns them in the kernel's argument order; a group's
-- parameters at one step count are updated in one call (one kernel launch per 16 on a GPU).
local function stepped_many(ps, grads, sts, h, spec)
  local lists = { {}, {}, {} }
  for i, p in ipairs(ps) do
    local s1, s2, s3 = spec.prepare(p, sts[i], h)
    lists[1][i], lists[2][i], lists[3][i] = s1 or false, s2 or false, s3 or false
  end
  h.step = (sts[1].step or 0) + 1
  C.steps(spec.kind, ps, grads, lists[1], lists[2], lists[3], h)
  for _, st in ipairs(sts) do st.step = h.step end
end

SPECS.SGD = {
  defaults = { lr = REQUIRED, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false,
    maximize = false },
  check = function(cls, g)
    check_number(cls, "lr", g.lr, 0, nil, nil, "learning rate")
    check_number(cls, "momentum", g.momentum, 0)
    check_number(cls, "dampening", g.dampening, -math.huge)
    check_number(cls, "weight_decay", g.weight_decay, 0)
    check_bool(cls, "nesterov", g.nesterov)
    check_bool(cls, "maximize", g.maximize)
    if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then
      fail("%s: Nesterov momentum requires a momentum > 0 and zero dampening", cls)
    end
  end,
  hparams = function(g)
    return { lr = g.lr, momentum = g.momentum, dampening = g.dampening,
      weight_decay = g.weight_decay, nesterov = g.nesterov, maximize = g.maximize }
  end,
  -- state: momentum_buffer (with momentum). The kernel starts a new buffer (step 1) from the first
  -- update direction, as torch clones it: the parameters starting theirs go in one call, those
  -- with one (step 2) in another.
  update_many = function(ps, grads, sts, h)
    if h.momentum == 0 then
      h.step = 1
      return C.steps("sgd", ps, grads, nil, nil, nil, h)
    end
    local fresh = {} -- whether each starts its buffer now (classified before any is made)
    for i, st in ipairs(sts) do fresh[i] = st.momentum_buffer == nil end
    for _, starting in ipairs { true, false } do
      local p1, g1, b1 = {}, {}, {}
      for i, p in ipairs(ps) do
        if fresh[i] == starting then
          if starting then sts[i].momentum_buffer = zeros_like(p) end
          local n = #p1 + 1
          p1[n], g1[n], b1[n] = p, grads[i], sts[i].momentum_buffer
        end
      end
      h.step = starting and 1 or 2
      if #p1 > 0 then C.steps("sgd", p1, g1, b1, nil, nil, h) end
    end
  end,
}

local function adam_spec(weight_decay, decoupled)
  return {
    defaults = { lr = 1e-3, betas = { 0.9, 0.999 }, eps = 1e-8, weight_decay = weight_decay,
      amsgrad = false, maximize = false },
    check = function(cls, g)
      check_number(cls, "lr", g.lr, 0, nil, nil, "learning rate")
      check_number(cls, "eps", g.eps, 0, nil, nil, "epsilon value")
      if type(g.betas) ~= "table" or #g.betas ~= 2 then
        fail("%s: betas must be a table of two numbers {beta1, beta2}", cls)
      end
      check_number(cls, "beta1", g.betas[1], 0, 1, true)
      check_number(cls, "beta2", g.betas[2], 0, 1, true)
      check_number(cls, "weight_decay", g.weight_decay, 0)
      check_bool(cls, "maximize", g.maximize)
      if g.amsgrad then fail("%s: amsgrad is not supported", cls) end
    end,
    hparams = function(g)
      return { lr = g.lr, beta1 = g.betas[1], beta2 = g.betas[2], eps = g.eps,
        weight_decay = g.weight_decay, maximize = g.maximize, decoupled_weight_decay = decoupled }
    end,
    kind = "adam",
    prepare = function(p, st)
      if st.exp_avg == nil then st.exp_avg = zeros_like(p) end
      if st.exp_avg_sq == nil then st.exp_avg_sq = zeros_like(p) end
      return st.exp_avg, st.exp_avg_sq
    end,
  }
end

SPECS.Adam = adam_spec(0, false)
SPECS.AdamW = adam_spec(1e-2, true)

SPECS.RMSProp = {
  defaults = { lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0,
    centered = false, maximize = false },
  check = function(cls, g)
    check_number(cls, "lr", g.lr, 0, nil, nil, "learning rate")
    check_number(cls, "eps", g.eps, 0, nil, nil, "epsilon value")
    check_number(cls, "momentum", g.momentum, 0)
    check_number(cls, "weight_decay", g.weight_decay, 0)
    check_number(cls, "alpha", g.alpha, 0)
    check_bool(cls, "centered", g.centered)
    check_bool(cls, "maximize", g.maximize)
  end,
  hparams = function(g)
    return { lr = g.lr, alpha = g.alpha, eps = g.eps, weight_decay = g.weight_decay,
      momentum = g.momentum, centered = g.centered, maximize = g.maximize }
  end,
  kind = "rmsprop",
  prepare = function(p, st, h)
    if st.square_avg == nil then st.square_avg = zeros_like(p) end
    local buf, gavg
    if h.momentum > 0 then
      if st.momentum_buffer == nil then st.momentum_buffer = zeros_like(p) end
      buf = st.momentum_buffer
    end
    if h.centered then
      if st.grad_avg == nil then st.grad_avg = zeros_like(p) end
      gavg = st.grad_avg
    end
    return st.square_avg, buf, gavg
  end,
}

SPECS.Adadelta = {
  defaults = { lr = 1.0, rho = 0.9, eps = 1e-6, weight_decay = 0, maximize = false },
  check = function(cls, g)
    check_number(cls, "lr", g.lr, 0, nil, nil, "learning rate")
    check_number(cls, "rho", g.rho, 0, 1, false, "rho value")
    check_number(cls, "eps", g.eps, 0, nil, nil, "epsilon value")
    check_number(cls, "weight_decay", g.weight_decay, 0)
    check_bool(cls, "maximize", g.maximize)
  end,
  hparams = function(g)
    return { lr = g.lr, rho = g.rho, eps = g.eps, weight_decay = g.weight_decay,
      maximize = g.maximize }
  end,
  kind = "adadelta",
  prepare = function(p, st)
    if st.square_avg == nil then st.square_avg = zeros_like(p) end
    if st.acc_delta == nil then st.acc_delta = zeros_like(p) end
    return st.square_avg, st.acc_delta
  end,
}

SPECS.Adagrad = {
  defaults = { lr = 1e-2, lr_decay = 0, weight_decay = 0, initial_accumulator_value = 0,
    eps = 1e-10, maximize = false },
  check = function(cls, g)
    check_number(cls, "lr", g.lr, 0, nil, nil, "learning rate")
    check_number(cls, "lr_decay", g.lr_decay, 0)
    check_number(cls, "weight_decay", g.weight_decay, 0)
    check_number(cls, "initial_accumulator_value", g.initial_accumulator_value, 0)
    check_number(cls, "eps", g.eps, 0, nil, nil, "epsilon value")
    check_bool(cls, "maximize", g.maximize)
  end,
  hparams = function(g)
    return { lr = g.lr, lr_decay = g.lr_decay, weight_decay = g.weight_decay,
      initial_accumulator_value = g.initial_accumulator_value, eps = g.eps, maximize = g.maximize }
  end,
  kind = "adagrad",
  prepare = function(p, st, h)
    if st.sum == nil then
      st.sum = core.full(p:shape(), h.initial_accumulator_value,
        { dtype = p:dtype(), device = p:device() })
    end
    return st.sum
  end,
}

-- ---- the base class -----------------------------------------------------------------------------

local Optimizer = {}
Optimizer.__index = Optimizer
optim.Optimizer = Optimizer

local function copy_value(v)
  if type(v) ~= "table" or is_tensor(v) then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = copy_value(x) end
  return c
end

-- The parameters of a group: a tensor or a list of them, each a contiguous float tensor.
local function group_params(self, list, where)
  if is_tensor(list) then list = { list } end
  if type(list) ~= "table" then
    fail("%s: %s must be a tensor or a list of tensors, got %s", self.name, where, type(list))
  end
  local out = {}
  for i, p in ipairs(list) do
    if not is_tensor(p) then
      fail("%s: parameter %d of %s is a %s, expected a tensor", self.name, i, where, type(p))
    end
    if not p:is_floating_point() then
      fail("%s: parameter %d of %s is %s; only floating-point tensors can be optimized",
        self.name, i, where, p:dtype())
    end
    if not p:is_contiguous() then
      fail("%s: parameter %d of %s (shape %s) is not contiguous", self.name, i, where, shape_str(p))
    end
    out[i] = p
  end
  return out
end

-- opt:add_param_group{ params = ..., lr = ..., ... }: options not given take the defaults.
function Optimizer:add_param_group(group)
  if type(group) ~= "table" or is_tensor(group) then
    fail("%s: a param group is a table { params = ..., <options> }", self.name)
  end
  if group.params == nil then fail("%s: the param group has no 'params'", self.name) end
  local where = "param group " .. (#self.param_groups + 1)
  local g = {}
  for k, v in pairs(group) do g[k] = k == "params" and v or copy_value(v) end
  g.params = group_params(self, group.params, where)
  for k, v in pairs(self.defaults) do
    if g[k] == nil then
      if v == REQUIRED then
        fail("%s: %s does not give the required option '%s'", self.name, where, k)
      end
      g[k] = copy_value(v)
    end
  end
  SPECS[self.spec].check(self.name, g)
  local seen = {}
  for _, other in ipairs(self.param_groups) do
    for _, p in ipairs(other.params) do seen[p] = true end
  end
  for _, p in ipairs(g.params) do
    if seen[p] then fail("%s: some parameters appear in more than one parameter group", self.name) end
    seen[p] = true
  end
  self.param_groups[#self.param_groups + 1] = g
end

local function new(cls, params, opts)
  local spec = SPECS[cls.spec]
  if opts ~= nil and (type(opts) ~= "table" or is_tensor(opts)) then
    fail("%s: options must be a table, got %s", cls.name, type(opts))
  end
  local defaults = {}
  for k, v in pairs(spec.defaults) do defaults[k] = v end
  for k, v in pairs(opts or {}) do
    if spec.defaults[k] == nil then
      local known = {}
      for name in pairs(spec.defaults) do known[#known + 1] = name end
      table.sort(known)
      fail("%s: unknown option '%s' (known: %s)", cls.name, tostring(k), table.concat(known, ", "))
    end
    defaults[k] = copy_value(v)
  end
  local self = setmetatable({ name = cls.name, spec = cls.spec, defaults = defaults,
    param_groups = {}, state = {} }, cls)
  if is_tensor(params) then params = { params } end
  if type(params) ~= "table" then
    fail("%s: params must be a list of tensors or of param groups, got %s", cls.name, type(params))
  end
  if #params == 0 then fail("%s: got an empty parameter list", cls.name) end
  if is_tensor(params[1]) then
    self:add_param_group({ params = params })
  else
    for i, g in ipairs(params) do
      if is_tensor(g) or type(g) ~= "table" then
        fail("%s: entry %d of params is a %s; give either tensors or param groups", cls.name, i,
          is_tensor(g) and "tensor" or type(g))
      end
      self:add_param_group(g)
    end
  end
  return self
end

local function class(name, spec)
  local cls = { name = name, spec = spec }
  cls.__index = cls
  cls.__name = "moonflow.optim." .. name
  cls.__tostring = Optimizer.__tostring
  return setmetatable(cls, { __index = Optimizer, __call = new })
end

-- opt:step([closure]): updates every parameter that has a gradient. closure, when given, is
-- called first (with grad mode on) to recompute the loss, which step returns.
function Optimizer:step(closure)
  local loss
  if closure ~= nil then
    loss = core.enable_grad and core.enable_grad(closure) or closure()
  end
  local spec = SPECS[self.spec]
  for _, group in ipairs(self.param_groups) do
    local h = spec.hparams(group)
    local by_step, steps = {}, {} -- the parameters with a gradient, by step count
    for _, p in ipairs(group.params) do
      local grad = p.grad
      if grad ~= nil then
        local st = self.state[p]
        if st == nil then
          st = {}
          self.state[p] = st
        end
        local k = st.step or 0
        local b = by_step[k]
        if b == nil then
          b = { ps = {}, grads = {}, sts = {} }
          by_step[k] = b
          steps[#steps + 1] = k
        end
        local n = #b.ps + 1
        b.ps[n], b.grads[n], b.sts[n] = p, grad, st
      end
    end
    for _, k in ipairs(steps) do
      local b = by_step[k]
      local many = spec.update_many or stepped_many
      many(b.ps, b.grads, b.sts, h, spec)
    end
  end
  return loss
end

-- opt:zero_grad([set_to_none = true]): clears the gradients (nil, as PyTorch 2 does), or zeroes
-- them in place with set_to_none = false.
function Optimizer:zero_grad(set_to_none)
  for _, group in ipairs(self.param_groups) do
    for _, p in ipairs(group.params) do
      if set_to_none == false then
        local g = p.grad
        if g ~= nil then g:zero_() end
      else
        p.grad = nil
      end
    end
  end
end

-- opt:state_dict(): a copy of the state and the hyper-parameters (see the top of the file).
function Optimizer:state_dict()
  local index, n, groups = {}, 0, {}
  for gi, group in ipairs(self.param_groups) do
    local g = {}
    for k, v in pairs(group) do
      if k ~= "params" then g[k] = copy_value(v) end
    end
    g.params = {}
    for _, p in ipairs(group.params) do
      n = n + 1
      index[p] = n
      g.params[#g.params + 1] = n
    end
    groups[gi] = g
  end
  local state = {}
  for p, st in pairs(self.state) do
    local i = index[p]
    if i and next(st) ~= nil then
      local s = {}
      for k, v in pairs(st) do s[k] = is_tensor(v) and v:clone() or copy_value(v) end
      state[i] = s
    end
  end
  return { state = state, param_groups = groups }
end

-- opt:load_state_dict(sd): the groups must match in number and size. State tensors are copied
-- (converted to each parameter's dtype and device); `step` may be a number or a one-element tensor.
function Optimizer:load_state_dict(sd)
  if type(sd) ~= "table" or type(sd.param_groups) ~= "table" or type(sd.state) ~= "table" then
    fail("%s: load_state_dict: expected a table { state = ..., param_groups = ... }", self.name)
  end
  local groups = self.param_groups
  if #sd.param_groups ~= #groups then
    fail("%s: load_state_dict: the state dict has %d parameter groups but the optimizer %d",
      self.name, #sd.param_groups, #groups)
  end
  local params = {}
  for gi, group in ipairs(groups) do
    local saved = sd.param_groups[gi]
    if type(saved) ~= "table" then
      fail("%s: load_state_dict: parameter group %d of the state dict is a %s", self.name, gi,
        type(saved))
    end
    local np = type(saved.params) == "table" and #saved.params or -1
    if np ~= #group.params then
      fail("%s: load_state_dict: parameter group %d has %d parameters in the state dict but %d "
        .. "in the optimizer", self.name, gi, np, #group.params)
    end
    for i, p in ipairs(group.params) do params[saved.params[i]] = p end
  end
  local state = {}
  for i, s in pairs(sd.state) do
    local p = params[i]
    if p == nil then
      fail("%s: load_state_dict: state for parameter %s, which no parameter group lists",
        self.name, tostring(i))
    end
    local st, keys = {}, {}
    for k in pairs(s) do keys[#keys + 1] = k end
    table.sort(keys, function(x, y) return tostring(x) < tostring(y) end)
    for _, k in ipairs(keys) do
      local v = s[k]
      if k == "step" then
        if is_tensor(v) then v = v:item() end
        local step = math.tointeger(v)
        if step == nil or step < 0 then
          fail("%s: load_state_dict: parameter %s has step %s, expected an integer >= 0",
            self.name, tostring(i), tostring(v))
        end
        st.step = step
      elseif is_tensor(v) then
        if shape_str(v) ~= shape_str(p) then
          fail("%s: load_state_dict: state '%s' of parameter %s has shape %s but the parameter %s",
            self.name, tostring(k), tostring(i), shape_str(v), shape_str(p))
        end
        local t = core.empty(p:shape(), { dtype = p:dtype(), device = p:device() })
        t:copy_(v)
        st[k] = t
      else
        st[k] = copy_value(v)
      end
    end
    state[p] = st
  end
  -- everything checked: take the hyper-parameters and the state
  for gi, group in ipairs(groups) do
    for k, v in pairs(sd.param_groups[gi]) do
      if k ~= "params" then group[k] = copy_value(v) end
    end
  end
  self.state = state
end

local function fmt_value(v)
  if type(v) == "table" then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = tostring(x) end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return tostring(v)
end

function Optimizer:__tostring()
  local lines = { self.name .. " (" }
  for gi, g in ipairs(self.param_groups) do
    lines[#lines + 1] = string.format("Parameter Group %d (%d parameters)", gi, #g.params)
    local keys = {}
    for k in pairs(g) do if k ~= "params" then keys[#keys + 1] = tostring(k) end end
    table.sort(keys)
    for _, k in ipairs(keys) do lines[#lines + 1] = "    " .. k .. ": " .. fmt_value(g[k]) end
  end
  lines[#lines + 1] = ")"
  return table.concat(lines, "\n")
end

optim.SGD = class("SGD", "SGD")
optim.Adam = class("Adam", "Adam")
optim.AdamW = class("AdamW", "AdamW")
optim.RMSProp = class("RMSProp", "RMSProp")
optim.RMSprop = optim.RMSProp -- PyTorch's spelling
optim.Adadelta = class("Adadelta", "Adadelta")
optim.Adagrad = class("Adagrad", "Adagrad")

return optim
