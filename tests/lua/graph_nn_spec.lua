-- graph_nn_spec.lua — nn layers on symbolic tensors: a Sequential of every layer kind used by the
-- tutorial CNN (Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear) builds a graph on a placeholder,
-- and a session run gives what the same module computes eagerly.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("nn layers in graphs", function()
  it("a CNN on a placeholder runs in a session like the eager module", function()
    mf.manual_seed(5)
    local nn = mf.nn
    local model = nn.Sequential {
      nn.Conv2d(1, 4, 3, { padding = "same" }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AvgPool2d(2),
      nn.Flatten(), nn.Linear(4 * 1 * 1, 3),
    }
    local input = mf.randn { 2, 1, 8, 8 }
    local want = mf.no_grad(function() return model(input) end)
    local g = mf.Graph()
    local got
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 1, 8, 8 }, "x")
      local y = model(x)
      assert.is_true(mf.is_symbolic(y))
      local sess <close> = mf.Session { graph = g }
      got = sess:run(y, { [x] = input })
    end)
    assert.are.same({ 2, 3 }, got:shape())
    assert.is_true(mf.allclose(got, want, 1e-5, 1e-6))
  end)
end)

describe("BatchNorm in graphs", function()
  local nn = mf.nn

  -- A fresh eager module with bn's parameters and buffers, to compute the references.
  local function twin(bn, cls)
    local e = nn[cls](bn.num_features, { momentum = bn.momentum })
    mf.no_grad(function()
      for _, k in ipairs { "weight", "bias", "running_mean", "running_var", "num_batches_tracked" } do
        e[k]:copy_(bn[k])
      end
    end)
    return e
  end

  it("training mode: batch statistics, the module's running statistics updated by runs, gradients", function()
    mf.manual_seed(7)
    local bn = nn.BatchNorm1d(3)
    mf.no_grad(function()
      bn.weight:copy_(mf.tensor { 1.5, 0.5, 2.0 })
      bn.bias:copy_(mf.tensor { 0.1, -0.2, 0.3 })
    end)
    local eager = twin(bn, "BatchNorm1d")
    local X = mf.randn { 5, 2 }
    local W0 = mf.randn { 2, 3 }
    mf.Graph():as_default(function()
      local x = mf.placeholder("float32", { -1, 2 }, "x")
      local W = mf.Variable(W0, { name = "W" })
      local y = bn(mf.matmul(x, W))
      assert.equal("BatchNorm:0", y.name)
      assert.same({ -1, 3 }, y:shape())
      -- building ran the op on dummies: no update, no batch counted
      H.equal(bn.running_mean, { 0, 0, 0 })
      H.equal(bn.running_var, { 1, 1, 1 })
      H.equal(bn.num_batches_tracked, 0)
      local loss = mf.reduce_sum(y * mf.tensor { 1.0, 2.0, 3.0 } * y)
      local gv = mf.train.GradientDescentOptimizer(0.1):compute_gradients(loss,
        { W, bn.weight, bn.bias })
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      local r = sess:run({ y, loss, gv[1][1], gv[2][1], gv[3][1] }, { [x] = X })
      -- the same in eager mode
      local Wl = W0:clone():requires_grad()
      local ye = eager(mf.matmul(X, Wl))
      local le = mf.reduce_sum(ye * mf.tensor { 1.0, 2.0, 3.0 } * ye)
      local ge = mf.grad(le, { Wl, eager.weight, eager.bias })
      assert.is_true(mf.allclose(r[1], ye:detach(), 1e-5, 1e-5))
      assert.is_true(mf.allclose(r[2], le:detach(), 1e-5, 1e-5))
      for i = 1, 3 do assert.is_true(mf.allclose(r[2 + i], ge[i], 1e-4, 1e-5)) end
      -- one update of the running statistics (the gradients reuse the run's forward), as eager
      assert.is_true(mf.allclose(bn.running_mean, eager.running_mean, 1e-5, 1e-6))
      assert.is_true(mf.allclose(bn.running_var, eager.running_var, 1e-5, 1e-6))
      assert.is_false(mf.allclose(bn.running_mean, mf.zeros { 3 }))
      H.equal(bn.num_batches_tracked, 1)
    end)
  end)

  it("an inference node shares the statistics; a bool placeholder switches the mode per run", function()
    mf.manual_seed(8)
    local bn = nn.BatchNorm1d(2, { momentum = 0.5 })
    local X = mf.randn { 6, 2 } * 3 + 1
    mf.Graph():as_default(function()
      local x = mf.placeholder("float32", { -1, 2 }, "x")
      local is_training = mf.placeholder("bool", {}, "is_training")
      local y = bn(x, is_training)
      bn:evaluate()
      local y_eval = bn(x) -- built in inference mode
      local step = mf.train.GradientDescentOptimizer(0.5):minimize(mf.reduce_mean(y * y))
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      -- inference: the initial statistics (0, 1): y = x * weight + bias = x / sqrt(1 + eps)
      H.equal(sess:run(y, { [x] = X, [is_training] = false }), (X / math.sqrt(1 + 1e-5)):totable(), 1e-5)
      H.equal(bn.running_mean, { 0, 0 })
      -- a training step: batch statistics, running statistics updated, weight trained
      sess:run(step, { [x] = X, [is_training] = true })
      local mean = X:mean(1)
      local uvar = ((X - mean) * (X - mean)):sum(1) / 5
      assert.is_true(mf.allclose(bn.running_mean, mean * 0.5, 1e-5, 1e-6))
      assert.is_true(mf.allclose(bn.running_var, uvar * 0.5 + 0.5, 1e-5, 1e-6))
      assert.is_false(mf.allclose(bn.weight:detach(), mf.ones { 2 }))
      -- inference with the updated statistics and weights, from both nodes; no update
      local m, v = bn.running_mean:clone(), bn.running_var:clone()
      local want = ((X - m) / mf.sqrt(v + 1e-5) * bn.weight:detach() + bn.bias:detach()):totable()
      H.equal(sess:run(y_eval, { [x] = X }), want, 1e-5)
      H.equal(sess:run(y, { [x] = X, [is_training] = false }), want, 1e-5)
      assert.is_true(mf.allclose(bn.running_mean, m))
      H.equal(bn.num_batches_tracked, 1)
      H.err(function() bn(x, mf.placeholder("float32", {})) end, "bool scalar")
      H.err(function() bn(x, "yes") end, "training must be a boolean")
    end)
  end)

  it("BatchNorm2d in a CNN and the cumulative average (momentum = false)", function()
    mf.manual_seed(9)
    local model = nn.Sequential { nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, { momentum = false }), nn.ReLU() }
    local eager = nn.Sequential { nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, { momentum = false }), nn.ReLU() }
    eager:load_state_dict(model:state_dict())
    local input1, input2 = mf.randn { 3, 1, 5, 5 }, mf.randn { 3, 1, 5, 5 }
    mf.Graph():as_default(function()
      local x = mf.placeholder("float32", { -1, 1, 5, 5 }, "x")
      local y = model(x)
      local sess <close> = mf.Session()
      local got1 = sess:run(y, { [x] = input1 })
      sess:run(y, { [x] = input2 })
      H.equal(model[2].num_batches_tracked, 2)
      local want1 = mf.no_grad(function() return eager(input1) end)
      mf.no_grad(function() eager(input2) end)
      assert.is_true(mf.allclose(got1, want1, 1e-5, 1e-5))
      assert.is_true(mf.allclose(model[2].running_mean, eager[2].running_mean, 1e-5, 1e-6))
      assert.is_true(mf.allclose(model[2].running_var, eager[2].running_var, 1e-5, 1e-6))
    end)
  end)
end)
