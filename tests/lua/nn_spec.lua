-- nn_spec.lua — each mf.nn layer's forward against PyTorch's values (fixtures/nn_reference.lua,
-- made by tests/tools/gen_nn_lua_reference.py) in float64 and float32, and its gradients against
-- finite differences with mf.gradcheck in float64 (the mf._nn ops need the core's autograd
-- recording for these).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn = mf.nn
local F = nn.functional
local R = dofile(H.root .. "/tests/lua/fixtures/nn_reference.lua")

local f64 = { dtype = "float64" }
local function T(v) return mf.tensor(v, f64) end
local function randn(shape) return mf.randn(shape, f64) end

-- A layer converted to float64 with the given weights loaded.
local function loaded(m, weights)
  m:double()
  local d = {}
  for k, v in pairs(weights) do d[k] = T(v) end
  m:load_state_dict(d)
  return m
end

describe("nn layers forward (vs PyTorch)", function()
  it("Linear", function()
    local r = R.linear
    local m = loaded(nn.Linear(4, 5), { weight = r.weight, bias = r.bias })
    H.equal(m(T(r.x)), r.y, 1e-12)
    -- float32: the same numbers within float32's precision
    local m32 = nn.Linear(4, 5)
    m32:load_state_dict { weight = mf.tensor(r.weight), bias = mf.tensor(r.bias) }
    local y = m32(mf.tensor(r.x))
    assert.equal("float32", y:dtype())
    H.equal(y, r.y, 1e-5)
  end)

  it("Linear without bias and with extra leading dims", function()
    local r = R.linear
    local m = loaded(nn.Linear(4, 5, { bias = false }), { weight = r.weight })
    assert.is_nil(m.bias)
    local y = m(T(r.x):reshape { 3, 1, 4 })
    assert.same({ 3, 1, 5 }, y:shape())
  end)

  it("Conv2d NCHW with stride {2, 1} and padding 1", function()
    local r = R.conv_nchw
    local m = loaded(nn.Conv2d(3, 4, { 3, 2 }, { stride = r.stride, padding = r.padding }),
      { weight = r.weight, bias = r.bias })
    H.equal(m(T(r.x)), r.y, 1e-10)
  end)

  it("Conv2d with asymmetric padding {top, left, bottom, right} and no bias", function()
    local r = R.conv_asym_nobias
    local m = loaded(nn.Conv2d(2, 3, 3, { padding = r.padding, bias = false }), { weight = r.weight })
    H.equal(m(T(r.x)), r.y, 1e-10)
  end)

  it("Conv2d NHWC with TensorFlow's same padding and stride 2", function()
    local r = R.conv_same_nhwc
    local m = loaded(nn.Conv2d(3, 4, 3, { stride = 2, padding = "same", data_format = "NHWC" }),
      { weight = r.weight, bias = r.bias })
    local y = m(T(r.x))
    assert.same({ 2, 4, 3, 4 }, y:shape()) -- ceil(7/2) x ceil(6/2)
    H.equal(y, r.y, 1e-10)
  end)

  it("Conv2d same padding with an even kernel puts the odd cell after", function()
    local r = R.conv_same_even
    local m = loaded(nn.Conv2d(2, 3, 4, { padding = "same" }), { weight = r.weight, bias = r.bias })
    H.equal(m(T(r.x)), r.y, 1e-10)
    assert.same({ 1, 2 }, { mf.same_padding(5, 4, 1) })
  end)

  it("MaxPool2d and AvgPool2d with padding (torch semantics)", function()
    local r = R.max_pool
    H.equal(nn.MaxPool2d(3, { stride = 2, padding = 1 })(T(r.x)), r.y, 1e-12)
    H.equal(nn.MaxPool2d(3, 2, 1)(T(r.x)), r.y, 1e-12) -- torch's positional form
    r = R.avg_pool
    H.equal(nn.AvgPool2d(3, { stride = 2, padding = 1 })(T(r.x)), r.y, 1e-12)
    r = R.avg_pool_k2s1
    H.equal(nn.AvgPool2d(2, { stride = 1 })(T(r.x)), r.y, 1e-12)
  end)

  it("MaxPool2d and AvgPool2d NHWC with same padding (TensorFlow semantics)", function()
    local r = R.max_pool_same_nhwc
    H.equal(nn.MaxPool2d(3, { stride = 2, padding = "same", data_format = "NHWC" })(T(r.x)), r.y, 1e-12)
    r = R.avg_pool_same_nhwc
    H.equal(nn.AvgPool2d(3, { stride = 2, padding = "same", data_format = "NHWC" })(T(r.x)), r.y, 1e-12)
  end)

  it("Softmax and LogSoftmax along a dim (1-based, negative from the end)", function()
    local r = R.softmax
    local x = T(r.x)
    H.equal(nn.Softmax(2)(x), r.dim2, 1e-12)
    H.equal(nn.Softmax(-1)(x), r.dimlast, 1e-12)
    H.equal(nn.Softmax()(x), r.dimlast, 1e-12)
    H.equal(nn.LogSoftmax(2)(x), r.log_dim2, 1e-12)
    H.equal(nn.LogSoftmax(-1)(x), r.log_dimlast, 1e-12)
    H.equal(F.softmax(x:float(), 2), r.dim2, 1e-6)
  end)

  it("Softmax and LogSoftmax are stable for large logits", function()
    local r = R.softmax_big
    -- float32: finite, within float32's spacing at 1000 (6e-5)
    H.equal(nn.Softmax(-1)(mf.tensor(r.x)), r.y, 1e-4)
    H.equal(nn.LogSoftmax(-1)(mf.tensor(r.x)), r.logy, 1e-4)
    H.equal(nn.LogSoftmax(-1)(T(r.x)), r.logy, 1e-12)
  end)

  it("ReLU, Sigmoid, Tanh, Identity", function()
    local r = R.activations
    local x = T(r.x)
    H.equal(nn.ReLU()(x), r.relu, 1e-15)
    H.equal(nn.Sigmoid()(x), r.sigmoid, 1e-15)
    H.equal(nn.Tanh()(x), r.tanh, 1e-15)
    assert.equal(x, nn.Identity()(x))
  end)

  for _, case in ipairs { { "BatchNorm1d", "batchnorm1d" }, { "BatchNorm1d", "batchnorm1d_3d" },
    { "BatchNorm2d", "batchnorm2d" } } do
    it(case[1] .. " training steps, running stats and evaluation (" .. case[2] .. ")", function()
      local r = R[case[2]]
      local m = nn[case[1]](#r.weight):double()
      m:load_state_dict({ weight = T(r.weight), bias = T(r.bias) }, false)
      for i = 1, #r.xs do
        H.equal(m(T(r.xs[i])), r.ys[i], 1e-10)
        H.equal(m.running_mean, r.running_mean[i], 1e-12)
        H.equal(m.running_var, r.running_var[i], 1e-12)
      end
      assert.equal(#r.xs, m.num_batches_tracked:item())
      m:evaluate()
      H.equal(m(T(r.x_eval)), r.y_eval, 1e-10)
      H.equal(m.running_mean, r.running_mean[#r.xs], 1e-12) -- evaluation leaves them alone
    end)
  end

  it("BatchNorm2d NHWC equals NCHW on the permuted input", function()
    local r = R.batchnorm2d
    local m = nn.BatchNorm2d(3, { data_format = "NHWC" }):double()
    m:load_state_dict({ weight = T(r.weight), bias = T(r.bias) }, false)
    local y = m(T(r.xs[1]):permute { 1, 3, 4, 2 })
    H.equal(y:permute { 1, 4, 2, 3 }, r.ys[1], 1e-10)
    H.equal(m.running_mean, r.running_mean[1], 1e-12)
  end)

  it("Flatten and Reshape keep the batch dimension", function()
    local x = mf.zeros { 2, 7, 7, 64 }
    assert.same({ 2, 3136 }, nn.Flatten()(x):shape())
    assert.same({ 98, 64 }, nn.Flatten(1, 3)(x):shape())
    local v = mf.zeros { 5, 784 }
    assert.same({ 5, 28, 28, 1 }, nn.Reshape { 28, 28, 1 }(v):shape())
    assert.same({ 5, 28, 28, 1 }, nn.Reshape(28, 28, 1)(v):shape())
    assert.same({ 5, 28, 28, 1 }, nn.Reshape { -1, 28, 28, 1 }(v):shape()) -- TensorFlow style
    assert.same({ 5, 784 }, nn.Reshape { -1, 784 }(nn.Reshape { 28, 28, 1 }(v)):shape())
  end)
end)

describe("nn layers gradients (float64 finite differences)", function()
  local opts = { atol = 1e-6, rtol = 1e-4 }

  it("linear", function()
    assert.is_true(mf.gradcheck(F.linear, { randn { 3, 4 }, randn { 2, 4 }, randn { 2 } }, opts))
  end)

  it("a Linear module's input and parameters", function()
    local m = nn.Linear(3, 2):double()
    local x = randn { 4, 3 }:requires_grad()
    assert.is_true(mf.gradcheck(function(a, w, b)
      return F.linear(a, w, b)
    end, { x, m.weight, m.bias }, opts))
  end)

  it("conv2d NCHW, stride {2, 1}, padding 1", function()
    assert.is_true(mf.gradcheck(function(x, w, b)
      return F.conv2d(x, w, b, { stride = { 2, 1 }, padding = 1 })
    end, { randn { 2, 2, 5, 4 }, randn { 3, 2, 3, 2 }, randn { 3 } }, opts))
  end)

  it("conv2d NHWC with same padding and stride 2", function()
    assert.is_true(mf.gradcheck(function(x, w, b)
      return F.conv2d(x, w, b, { stride = 2, padding = "same", data_format = "NHWC" })
    end, { randn { 1, 5, 4, 2 }, randn { 3, 2, 3, 3 }, randn { 3 } }, opts))
  end)

  it("max_pool2d and avg_pool2d (padded, NCHW and NHWC same)", function()
    local x = randn { 1, 2, 5, 5 }
    assert.is_true(mf.gradcheck(function(a) return F.max_pool2d(a, 3, { stride = 2, padding = 1 }) end, { x }, opts))
    assert.is_true(mf.gradcheck(function(a) return F.avg_pool2d(a, 3, { stride = 2, padding = 1 }) end, { x }, opts))
    local xh = randn { 1, 5, 4, 2 }
    assert.is_true(mf.gradcheck(function(a)
      return F.max_pool2d(a, 2, { padding = "same", data_format = "NHWC" })
    end, { xh }, opts))
    assert.is_true(mf.gradcheck(function(a)
      return F.avg_pool2d(a, 3, { stride = 2, padding = "same", data_format = "NHWC" })
    end, { xh }, opts))
  end)

  it("softmax and log_softmax", function()
    local x = randn { 2, 3, 4 }
    assert.is_true(mf.gradcheck(function(a) return F.softmax(a, 2) end, { x }, opts))
    assert.is_true(mf.gradcheck(function(a) return F.log_softmax(a, -1) end, { x }, opts))
  end)

  it("relu, sigmoid, tanh", function()
    local x = T { { -1.5, -0.3, 0.2 }, { 0.7, 1.9, -2.4 } } -- no zeros: relu has a kink there
    for _, f in ipairs { F.relu, F.sigmoid, F.tanh } do
      assert.is_true(mf.gradcheck(f, { x }, opts))
    end
  end)

  it("batch_norm in training (batch statistics) and evaluation", function()
    assert.is_true(mf.gradcheck(function(x, w, b)
      return F.batch_norm(x, nil, nil, w, b, true)
    end, { randn { 4, 3 }, randn { 3 }, randn { 3 } }, opts))
    assert.is_true(mf.gradcheck(function(x, w, b)
      return F.batch_norm(x, nil, nil, w, b, true, 0.1, 1e-5, 4)
    end, { randn { 2, 3, 2, 3 }, randn { 3 }, randn { 3 } }, opts))
    local rm, rv = randn { 3 }, mf.rand({ 3 }, f64) + 0.5
    assert.is_true(mf.gradcheck(function(x, w, b)
      return F.batch_norm(x, rm, rv, w, b, false)
    end, { randn { 4, 3 }, randn { 3 }, randn { 3 } }, opts))
  end)

  it("a BatchNorm2d module in training mode", function()
    local m = nn.BatchNorm2d(2):double()
    assert.is_true(mf.gradcheck(function(x) return m(x) end, { randn { 3, 2, 2, 2 } }, opts))
  end)

  it("dropout with a fixed mask", function()
    assert.is_true(mf.gradcheck(function(x)
      mf.manual_seed(7)
      return F.dropout(x, 0.4, true)
    end, { randn { 3, 5 } }, opts))
  end)

  it("a small CNN end to end", function()
    local net = nn.Sequential {
      nn.Conv2d(1, 2, 3, { padding = "same", data_format = "NHWC" }), nn.Tanh(),
      nn.MaxPool2d(2, { data_format = "NHWC" }), nn.Flatten(), nn.Linear(8, 3),
    }:double()
    assert.is_true(mf.gradcheck(function(x) return net(x) end, { randn { 2, 4, 4, 1 } }, opts))
  end)
end)
