-- optim_spec.lua — mf.optim: every optimizer class on a fixed problem (two parameters in two
-- param groups with different options, gradients from the current values) against PyTorch's
-- values (optim_reference.lua, made by tests/tools/gen_optim_reference.py) in float64 and float32;
-- PyTorch's defaults; state_dict round trips (save, continue, and a fresh optimizer loaded from the
-- saved dict continues identically); lr changes through param_groups; zero_grad; closures; and
-- clear errors for bad arguments.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local R = dofile(H.root .. "/tests/lua/optim_reference.lua")
local mf = H.mf

-- The reference problem in dtype: w (3x2), b (2) and a function that sets their gradients.
local function problem(dtype)
  local o = { dtype = dtype }
  local w, b = mf.tensor(R.w0, o), mf.tensor(R.b0, o)
  local tw, tb, s = mf.tensor(R.tw, o), mf.tensor(R.tb, o), mf.tensor(R.s, o)
  local function set_grads()
    w.grad = s * (w - tw)
    local d = b - tb
    b.grad = d * d * d + d
  end
  return w, b, set_grads
end

local function make(case, w, b)
  local g2 = { params = { b } }
  for k, v in pairs(case.group2) do g2[k] = v end
  return mf.optim[case.class]({ { params = { w } }, g2 }, case.opts)
end

local function label(case)
  local parts = {}
  for k, v in pairs(case.opts) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  table.sort(parts)
  return case.class .. "{" .. table.concat(parts, ", ") .. "}"
end

describe("optimizers match PyTorch", function()
  for _, case in ipairs(R.cases) do
    for _, dtype in ipairs { "float64", "float32" } do
      it(label(case) .. " in " .. dtype, function()
        local w, b, set_grads = problem(dtype)
        local opt = make(case, w, b)
        local tol = dtype == "float64" and 1e-12 or 1e-5
        local rw = dtype == "float64" and case.w or case.w32
        local rb = dtype == "float64" and case.b or case.b32
        for k = 1, R.steps do
          set_grads()
          opt:step()
          H.equal(w, rw[k], tol)
          H.equal(b, rb[k], tol)
          assert.are.equal(dtype, w:dtype())
        end
      end)
    end
  end
end)

describe("defaults", function()
  local w = mf.zeros { 2 }
  it("are PyTorch's", function()
    local g = mf.optim.Adam({ w }).param_groups[1]
    assert.are.same({ 1e-3, { 0.9, 0.999 }, 1e-8, 0, false },
      { g.lr, g.betas, g.eps, g.weight_decay, g.maximize })
    g = mf.optim.AdamW({ w }).param_groups[1]
    assert.are.same({ 1e-3, { 0.9, 0.999 }, 1e-8, 1e-2 }, { g.lr, g.betas, g.eps, g.weight_decay })
    g = mf.optim.RMSProp({ w }).param_groups[1]
    assert.are.same({ 1e-2, 0.99, 1e-8, 0, 0, false },
      { g.lr, g.alpha, g.eps, g.weight_decay, g.momentum, g.centered })
    g = mf.optim.Adadelta({ w }).param_groups[1]
    assert.are.same({ 1.0, 0.9, 1e-6, 0 }, { g.lr, g.rho, g.eps, g.weight_decay })
    g = mf.optim.Adagrad({ w }).param_groups[1]
    assert.are.same({ 1e-2, 0, 0, 0, 1e-10 },
      { g.lr, g.lr_decay, g.weight_decay, g.initial_accumulator_value, g.eps })
    g = mf.optim.SGD({ w }, { lr = 0.1 }).param_groups[1]
    assert.are.same({ 0.1, 0, 0, 0, false, false },
      { g.lr, g.momentum, g.dampening, g.weight_decay, g.nesterov, g.maximize })
    assert.are.equal(mf.optim.RMSProp, mf.optim.RMSprop)
  end)

  it("a group's own options override the optimizer's", function()
    local v = mf.zeros { 3 }
    local opt = mf.optim.SGD({ { params = { w } }, { params = v, lr = 0.5, momentum = 0.9 } },
      { lr = 0.1 })
    assert.are.equal(0.1, opt.param_groups[1].lr)
    assert.are.equal(0, opt.param_groups[1].momentum)
    assert.are.equal(0.5, opt.param_groups[2].lr)
    assert.are.equal(0.9, opt.param_groups[2].momentum)
    assert.are.equal(v, opt.param_groups[2].params[1])
    assert.truthy(tostring(opt):find("Parameter Group 2", 1, true))
  end)
end)

describe("state_dict", function()
  for _, case in ipairs(R.cases) do
    it("round trip of " .. label(case), function()
      local w, b, set_grads = problem("float64")
      local opt = make(case, w, b)
      for _ = 1, 2 do
        set_grads()
        opt:step()
      end
      local sd = opt:state_dict()
      local w2, b2 = w:clone(), b:clone()
      -- a snapshot of the saved state, to check that later steps leave the dict alone
      local snap = {}
      for i, st in pairs(sd.state) do
        snap[i] = {}
        for k, v in pairs(st) do snap[i][k] = mf.is_tensor(v) and v:totable() or v end
      end
      assert.are.same({ 1 }, sd.param_groups[1].params)
      assert.are.same({ 2 }, sd.param_groups[2].params)
      if case.class ~= "SGD" then assert.are.equal(2, sd.state[1].step) end
      for _ = 1, 3 do
        set_grads()
        opt:step()
      end
      for i, st in pairs(sd.state) do
        for k, v in pairs(st) do
          H.equal(mf.is_tensor(v) and v:totable() or v, snap[i][k], 0)
        end
      end
      -- a fresh optimizer with other options, loaded from the dict, continues identically
      local opt2 = mf.optim[case.class]({ { params = { w2 } }, { params = { b2 } } },
        case.class == "SGD" and { lr = 1 } or nil)
      opt2:load_state_dict(sd)
      local tw, tb, s = mf.tensor(R.tw, { dtype = "float64" }), mf.tensor(R.tb, { dtype = "float64" }),
          mf.tensor(R.s, { dtype = "float64" })
      for _ = 1, 3 do
        w2.grad = s * (w2 - tw)
        local d = b2 - tb
        b2.grad = d * d * d + d
        opt2:step()
      end
      H.equal(w2, w:totable(), 0)
      H.equal(b2, b:totable(), 0)
      assert.are.equal(opt.param_groups[2].lr, opt2.param_groups[2].lr)
      -- the loaded state is a copy: the dict did not change
      for i, st in pairs(sd.state) do
        for k, v in pairs(st) do
          H.equal(mf.is_tensor(v) and v:totable() or v, snap[i][k], 0)
        end
      end
    end)
  end

  it("load_state_dict converts the state to the parameters' dtype", function()
    local w, b, set_grads = problem("float64")
    local opt = mf.optim.Adam({ w, b }, { lr = 0.01 })
    set_grads()
    opt:step()
    local w32, b32 = w:float(), b:float()
    local opt32 = mf.optim.Adam({ w32, b32 })
    opt32:load_state_dict(opt:state_dict())
    assert.are.equal("float32", opt32.state[w32].exp_avg:dtype())
    assert.are.equal(1, opt32.state[w32].step)
    assert.are.equal(0.01, opt32.param_groups[1].lr)
    w32.grad = mf.ones({ 3, 2 }, { dtype = "float32" })
    opt32:step()
    assert.are.equal(2, opt32.state[w32].step)
  end)

  it("takes a step stored as a tensor", function()
    local w = mf.zeros({ 2 }, { dtype = "float64" })
    local opt = mf.optim.Adam({ w })
    opt:load_state_dict { state = { [1] = { step = mf.tensor(4), exp_avg = mf.zeros { 2 },
      exp_avg_sq = mf.zeros { 2 } } }, param_groups = { { params = { 1 }, lr = 0.5 } } }
    assert.are.equal(4, opt.state[w].step)
    assert.are.equal(0.5, opt.param_groups[1].lr)
  end)
end)

describe("step", function()
  it("a new lr in param_groups takes effect at the next step", function()
    local w = mf.tensor({ 1, 2 }, { dtype = "float64" })
    local opt = mf.optim.SGD({ w }, { lr = 0.1 })
    w.grad = mf.ones({ 2 }, { dtype = "float64" })
    opt:step()
    H.equal(w, { 0.9, 1.9 }, 1e-15)
    opt.param_groups[1].lr = 0.5
    opt:step()
    H.equal(w, { 0.4, 1.4 }, 1e-15)
  end)

  it("skips parameters without a gradient; zero_grad clears them", function()
    local w, v = mf.ones { 2 }, mf.ones { 3 }
    local opt = mf.optim.Adam({ w, v }, { lr = 0.1 })
    w.grad = mf.ones { 2 }
    opt:step()
    assert.is_nil(opt.state[v])
    H.equal(v, { 1, 1, 1 })
    assert.are.equal(1, opt.state[w].step)
    assert.is_true(w:totable()[1] < 1)
    opt:zero_grad(false)
    H.equal(w.grad, { 0, 0 })
    opt:zero_grad()
    assert.is_nil(w.grad)
    local before = w:totable()
    opt:step()
    H.equal(w, before, 0)
    assert.are.equal(1, opt.state[w].step)
  end)

  it("calls a closure and returns its loss", function()
    local w = mf.tensor({ 3.0 }, { dtype = "float64" })
    local opt = mf.optim.SGD({ w }, { lr = 0.25 })
    local loss = opt:step(function()
      w.grad = w * 2
      return (w * w):sum():item()
    end)
    assert.are.equal(9, loss)
    H.equal(w, { 1.5 }, 1e-15)
  end)

  it("works on parameters that require grad, with autograd gradients", function()
    local w = mf.tensor({ 1.0, -2.0 }, { dtype = "float64" }):requires_grad()
    local opt = mf.optim.SGD({ w }, { lr = 0.1, momentum = 0.9 })
    for _ = 1, 2 do
      opt:zero_grad()
      local loss = (w * w):sum()
      loss:backward()
      opt:step()
    end
    -- torch: buf1 = 2w0, w1 = w0 - 0.2 w0 = 0.8 w0; buf2 = 0.9 * 2w0 + 1.6 w0 = 3.4 w0;
    -- w2 = 0.8 w0 - 0.34 w0 = 0.46 w0
    H.equal(w:detach(), { 0.46, -0.92 }, 1e-14)
  end)
end)

describe("errors", function()
  local w = mf.zeros({ 2, 2 }, { dtype = "float64" })

  it("bad options name the optimizer and the option", function()
    H.err(function() return mf.optim.SGD({ w }) end,
      "SGD: param group 1 does not give the required option 'lr'")
    H.err(function() return mf.optim.Adam({ w }, { lr = -1 }) end, "Adam: invalid learning rate -1")
    H.err(function() return mf.optim.Adam({ w }, { lr = "x" }) end, "Adam: lr must be a number")
    H.err(function() return mf.optim.Adam({ w }, { betas = { 1.0, 0.9 } }) end,
      "Adam: invalid beta1 1.0 (expected 0 <= beta1 < 1)")
    H.err(function() return mf.optim.Adam({ w }, { betas = 0.9 }) end, "betas must be a table")
    H.err(function() return mf.optim.Adam({ w }, { amsgrad = true }) end, "amsgrad is not supported")
    H.err(function() return mf.optim.Adam({ w }, { bogus = 1 }) end,
      "Adam: unknown option 'bogus' (known: amsgrad, betas, eps, lr, maximize, weight_decay)")
    H.err(function() return mf.optim.SGD({ w }, { lr = 0.1, nesterov = true }) end,
      "SGD: Nesterov momentum requires a momentum > 0 and zero dampening")
    H.err(function() return mf.optim.SGD({ w }, { lr = 0.1, momentum = -0.5 }) end,
      "SGD: invalid momentum -0.5")
    H.err(function() return mf.optim.RMSProp({ w }, { centered = 1 }) end,
      "RMSProp: centered must be a boolean")
    H.err(function() return mf.optim.Adadelta({ w }, { rho = 1.5 }) end, "Adadelta: invalid rho value 1.5")
    H.err(function() return mf.optim.Adagrad({ w }, { lr_decay = -1 }) end, "Adagrad: invalid lr_decay -1")
    H.err(function() return mf.optim.Adam({ { params = { w }, eps = -1 } }) end,
      "Adam: invalid epsilon value -1")
  end)

  it("bad parameter lists", function()
    H.err(function() return mf.optim.Adam({}) end, "Adam: got an empty parameter list")
    H.err(function() return mf.optim.Adam(42) end, "Adam: params must be a list")
    H.err(function() return mf.optim.Adam({ 1, 2 }) end, "Adam: entry 1 of params is a number")
    H.err(function() return mf.optim.Adam({ mf.tensor { 1, 2 } }) end,
      "Adam: parameter 1 of param group 1 is int64; only floating-point tensors can be optimized")
    H.err(function() return mf.optim.Adam({ w, w }) end,
      "Adam: some parameters appear in more than one parameter group")
    H.err(function() return mf.optim.Adam({ w:t() }) end, "is not contiguous")
    H.err(function() return mf.optim.Adam({ { lr = 1 } }) end, "the param group has no 'params'")
  end)

  it("a gradient that does not fit the parameter", function()
    local p = mf.zeros({ 2, 2 }, { dtype = "float64" })
    local opt = mf.optim.Adam({ p })
    H.err(function() p.grad = mf.ones({ 2, 2 }, { dtype = "float32" }) end,
      "grad: a float32 gradient for a float64 tensor")
    H.err(function() p.grad = mf.ones({ 2, 3 }, { dtype = "float64" }) end,
      "grad: a gradient of shape 2x3 for a tensor of shape 2x2")
    local m, v = mf.zeros({ 2, 2 }, { dtype = "float64" }), mf.zeros({ 2, 2 }, { dtype = "float64" })
    local h = { lr = 0.1, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, step = 1 }
    H.err(function() mf._optim.adam_step(p, mf.ones({ 3 }, { dtype = "float64" }), m, v, h) end,
      "adam_step: grad has shape 3 but the parameter 2x2")
    H.err(function() mf._optim.adam_step(p, m, m, mf.zeros { 2, 2 }, h) end,
      "adam_step: exp_avg_sq is float32 but the parameter float64")
    H.err(function() mf._optim.adam_step(p, m, m, v, { lr = 0.1 }) end,
      "adam_step: h.step must be an integer >= 1")
    H.err(function() mf._optim.adam_step(p, m, m, v, { lr = "x", step = 1 }) end,
      "adam_step: h.lr must be a number, got string")
    H.err(function() mf._optim.sgd_step(p, m, nil, { lr = 0.1, momentum = 0.9, step = 1 }) end,
      "sgd_step: momentum 0.9 needs a momentum buffer")
    H.err(function() mf._optim.adagrad_step(p, m, "sum", { step = 1 }) end, "moonflow.Tensor expected")
  end)

  it("load_state_dict checks the dict against the optimizer", function()
    local a, b = mf.zeros({ 2 }, { dtype = "float64" }), mf.zeros({ 3 }, { dtype = "float64" })
    local opt = mf.optim.Adam({ a, b })
    a.grad, b.grad = mf.ones({ 2 }, { dtype = "float64" }), mf.ones({ 3 }, { dtype = "float64" })
    opt:step()
    local sd = opt:state_dict()
    local two = mf.optim.Adam({ { params = { a } }, { params = { b } } })
    H.err(function() two:load_state_dict(sd) end,
      "Adam: load_state_dict: the state dict has 1 parameter groups but the optimizer 2")
    local one = mf.optim.Adam({ a })
    H.err(function() one:load_state_dict(sd) end,
      "load_state_dict: parameter group 1 has 2 parameters in the state dict but 1 in the optimizer")
    local swapped = mf.optim.Adam({ b, a })
    H.err(function() swapped:load_state_dict(sd) end,
      "load_state_dict: state 'exp_avg' of parameter 1 has shape 2 but the parameter 3")
    assert.is_nil(swapped.state[a]) -- nothing was taken
    H.err(function() one:load_state_dict(42) end, "expected a table { state = ..., param_groups = ... }")
  end)
end)
