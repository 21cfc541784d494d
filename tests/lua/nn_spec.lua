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

-- ---- the fused batch_norm op (the core's batch_norm and its autograd rule) ----------------------
-- TORCH below was made with /usr/bin/python3 and torch 1.13 by this script (inputs rounded to 6
-- decimals so that they print exactly; gy is the output gradient fed to backward):
--   import torch, math; torch.set_default_dtype(torch.float64)
--   def vals(n, a, b): return [round(math.sin(a*i+b)*2 + 0.05*i, 6) for i in range(n)]
--   for name, shape in [("bn1d", (4,3)), ("bn2d", (2,3,2,2))]:
--     n = math.prod(shape); x = torch.tensor(vals(n, 0.7, 0.3)).reshape(shape).requires_grad_()
--     w = torch.tensor([1.5, -0.5, 0.8]).requires_grad_(); b = torch.tensor([0.1, 0.2, -0.3]).requires_grad_()
--     gy = torch.tensor(vals(n, 1.3, -0.2)).reshape(shape)
--     rm, rv = torch.tensor([0.2, -0.1, 0.4]), torch.tensor([1.2, 0.7, 2.0])
--     for mode in ["train", "eval"]:
--       rmc, rvc = rm.clone(), rv.clone()
--       y = torch.nn.functional.batch_norm(x, rmc, rvc, w, b, training=(mode=="train"), momentum=0.1, eps=1e-5)
--       gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)   # -> <mode>_y, _gx, _gw, _gb; rm1, rv1 after training
--   printed with "%.17g"
local TORCH = { -- made by /usr/bin/python3 with torch 1.13.0a0 (torch.nn.functional.batch_norm, momentum 0.1, eps 1e-5, float64; see the comment above)
  bn1d = {
    x = {{0.59104000000000001, 1.732942, 2.0833300000000001}, {1.500926, 0.283161, -0.97371600000000003}, {-1.65506, -1.416909, -0.34775299999999998}, {1.073083, 2.2008730000000001, 2.5287160000000002}},
    w = {1.5, -0.5, 0.80000000000000004},
    b = {0.10000000000000001, 0.20000000000000001, -0.29999999999999999},
    gy = {{-0.397339, 1.8324149999999999, 1.4509259999999999}, {-0.90967200000000004, -1.717849, 0.28362799999999999}, {2.2358389999999999, 1.352042, -0.999749}, {-1.3009040000000001, 0.96301999999999999, 2.548619}},
    rm0 = {0.20000000000000001, -0.10000000000000001, 0.40000000000000002},
    rv0 = {1.2, 0.69999999999999996, 2},
    train_y = {{0.36323298546885818, -0.16577334992624243, 0.36877920383561291}, {1.4848445045502485, 0.34761448044136428, -1.2529483281594502}, {-2.4055222575052184, 0.949633163796338, -0.92088219925258208}, {0.95744476748611163, -0.33147429431145969, 0.60505132357641933}},
    train_gx = {{-0.083754502007499079, -0.3791181849325711, -0.16846453948268883}, {0.52623494286495309, 0.80134099966893624, 0.43132100229298537}, {0.097345992521534808, -0.37573794731141485, -0.49910382613827936}, {-0.53982643337898928, -0.046484867424950109, 0.23624736332798282}},
    train_gw = {-5.3878298052376055, 0.84422562695821224, 4.5342795796847026},
    train_gb = {-0.3720760000000003, 2.4296280000000001, 3.2834240000000001},
    rm1 = {0.21774972500000003, -0.019998324999999997, 0.44226442500000007},
    rv1 = {1.2774273724178251, 0.8958215800857583, 2.103224974899625},
    eval_y = {{0.63545134117444357, -0.89538453467799684, 0.65223286580061224}, {1.8813588672992638, -0.028980859018864713, -1.0770891764990547}, {-2.4401349349403212, 0.98699803495051452, -0.72299191608359925}, {1.2955131528912813, -1.1750247964519154, 0.90418060460849392}},
    eval_gx = {{-0.54407656621039335, -1.0950695941890041, 0.82076563896836563}, {-1.2456144957775122, 1.0266038028001225, 0.16044382459844239}, {3.061535881751551, -0.8079938683466843, -0.565542024054283}, {-1.7813287426841198, -0.5755104169065931, 1.4417130177706632}},
    eval_gw = {-6.0451923862904531, 3.7479329894716873, 5.8163731094273778},
    eval_gb = {-0.3720760000000003, 2.4296280000000001, 3.2834240000000001},
  },
  bn2d = {
    x = {{{{0.59104000000000001, 1.732942}, {2.0833300000000001, 1.500926}}, {{0.283161, -0.97371600000000003}, {-1.65506, -1.416909}}, {{-0.34775299999999998, 1.073083}, {2.2008730000000001, 2.5287160000000002}}}, {{{1.9259379999999999, 0.69955100000000003}, {-0.55014099999999999, -1.2118720000000001}}, {{-0.95090399999999997, 0.13354099999999999}, {1.5549489999999999, 2.6683240000000001}}, {{2.973544, 2.3505760000000002}, {1.115926, -0.12621299999999999}}}},
    w = {1.5, -0.5, 0.80000000000000004},
    b = {0.10000000000000001, 0.20000000000000001, -0.29999999999999999},
    gy = {{{{-0.397339, 1.8324149999999999}, {1.4509259999999999, -0.90967200000000004}}, {{-1.717849, 0.28362799999999999}, {2.2358389999999999, 1.352042}}, {{-0.999749, -1.3009040000000001}, {0.96301999999999999, 2.548619}}}, {{{1.206237, -1.024284}, {-0.80197399999999996, 1.6207309999999999}}, {{2.7678129999999999, 1.0320450000000001}, {-0.97041999999999995, -0.23271500000000001}}, {{2.23767, 2.8948659999999999}, {0.849329, -0.82897399999999999}}}},
    rm0 = {0.20000000000000001, -0.10000000000000001, 0.40000000000000002},
    rv0 = {1.2, 0.69999999999999996, 2},
    train_y = {{{{-0.23958733982544422, 1.278574943205061}, {1.7444168858818343, 0.97010894501992273}}, {{0.084912914921781144, 0.52627284441374989}, {0.76553089416704789, 0.68190273598733597}}, {{-1.5508141241358797, -0.57371064216036083}, {0.20186622662475609, 0.42732260360373192}}}, {{{1.5351637292617939, -0.095321625697679158}, {-1.756791051099297, -2.6365644867461908}}, {{0.51826227320306595, 0.13745287917491678}, {-0.36168310203829684, -0.75265143982960081}}, {{0.73322911757170983, 0.30481640705527813}, {-0.54424767495072013, -1.3984619136085166}}}},
    train_gx = {{{{-0.95092327352964501, 1.6912636114430719}, {1.0851830826494371, -1.8888679577938623}}, {{0.73517853722319249, 0.3259951387582834}, {-0.20035141632311215, 0.054359412170029722}}, {{0.22866912951462501, -1.121482524145202}, {-0.47188655264257245, 0.35477736249978403}}}, {{{0.80428890251321206, -1.8150735811729684}, {-1.1668122227970783, 2.2409414386878326}}, {{-0.55167101218112513, -0.19550721165695623}, {0.17558334134438397, -0.34358678933469633}}, {{-0.21692080266281902, 0.7362019683550618}, {0.32275771466556663, 0.16788370441555603}}}},
    train_gw = {1.9160392169987828, -7.5786698515045767, 10.886981055818092},
    train_gb = {2.9770399999999997, 4.7503829999999994, 6.3638770000000005},
    rm1 = {0.26464642500000002, -0.094457675000000019, 0.50710940000000004},
    rv1 = {1.2254763262403643, 0.86170188575439288, 1.9546591057221714},
    eval_y = {{{{0.63545134117444357, 2.1990585358086991}, {2.6788450654001248, 1.8813588672992638}}, {{-0.028980859018864713, 0.72214145024813703}, {1.1293194626433165, 0.98699803495051452}}, {{-0.72299191608359925, 0.080752291001570345}, {0.71872506147513904, 0.90418060460849392}}}, {{{2.4633280914585125, 0.78403552816856192}, {-0.92716858766350818, -1.8332773014695272}}, {{0.70850877010600777, 0.060433554573339453}, {-0.78901413153324873, -1.454378205408535}}, {{1.155812691738382, 0.80340965493509586}, {0.10498789107374609, -0.59767028034404279}}}},
    eval_gx = {{{{-0.54407656621039335, 2.5091271208525159}, {1.9867539705525536, -1.2456144957775122}}, {{1.0266038028001225, -0.16949893930176235}, {-1.3361598253681337, -0.8079938683466843}}, {{-0.565542024054283, -0.73590059230898253}, {0.54476501602377758, 1.4417130177706632}}}, {{{1.6517011544195919, -1.4025527862712859}, {-1.0981435502430266, 2.2192680739387196}}, {{-1.6540728266801188, -0.61676044964420773}, {0.57993273117328403, 0.13907281953689207}}, {{1.2658141403147665, 1.6375794094376948}, {0.48045183515862488, -0.4689373371199923}}}},
    eval_gw = {3.7302526034845007, -12.582975240160827, 13.775242634199126},
    eval_gb = {2.9770399999999997, 4.7503829999999994, 6.3638770000000005},
  },
}

describe("nn.functional.batch_norm, the fused op", function()
  local opts = { atol = 1e-6, rtol = 1e-4 }

  -- y, and the gradients of x, w, b for the output gradient gy (y * gy summed, backward)
  local function run(fn, x, rm, rv, w, b, training, gy, cdim)
    x, w, b = x:detach():requires_grad(), w:detach():requires_grad(), b:detach():requires_grad()
    local y = fn(x, rm, rv, w, b, training, 0.1, 1e-5, cdim);
    (y * gy):sum():backward()
    return y, x.grad, w.grad, b.grad
  end

  for _, name in ipairs { "bn1d", "bn2d" } do
    it("matches torch in training and evaluation, values, gradients and running stats (" .. name .. ")",
      function()
        local r = TORCH[name]
        for _, mode in ipairs { "train", "eval" } do
          local rm, rv = T(r.rm0), T(r.rv0)
          local y, gx, gw, gb = run(F.batch_norm, T(r.x), rm, rv, T(r.w), T(r.b), mode == "train", T(r.gy))
          H.equal(y, r[mode .. "_y"], 1e-12)
          H.equal(gx, r[mode .. "_gx"], 1e-12)
          H.equal(gw, r[mode .. "_gw"], 1e-12)
          H.equal(gb, r[mode .. "_gb"], 1e-12)
          H.equal(rm, mode == "train" and r.rm1 or r.rm0, 1e-14)
          H.equal(rv, mode == "train" and r.rv1 or r.rv0, 1e-14)
        end
        -- float32: the same numbers to float32's precision
        local rm, rv = mf.tensor(r.rm0), mf.tensor(r.rv0)
        local y, gx = run(F.batch_norm, mf.tensor(r.x), rm, rv, mf.tensor(r.w), mf.tensor(r.b), true,
          mf.tensor(r.gy))
        assert.equal("float32", y:dtype())
        H.equal(y, r.train_y, 1e-5)
        H.equal(gx, r.train_gx, 1e-4)
        H.equal(rv, r.rv1, 1e-6)
      end)
  end

  it("matches torch with the channels last (channel_dim 4, NHWC) and in the middle (channel_dim -2)",
    function()
      local r = TORCH.bn2d
      local nhwc = { 1, 3, 4, 2 }
      for _, mode in ipairs { "train", "eval" } do
        local rm, rv = T(r.rm0), T(r.rv0)
        local x, gy = T(r.x):permute(nhwc):contiguous(), T(r.gy):permute(nhwc)
        local y, gx, gw, gb = run(F.batch_norm, x, rm, rv, T(r.w), T(r.b), mode == "train", gy, 4)
        assert.same({ 2, 2, 2, 3 }, y:shape())
        H.equal(y:permute { 1, 4, 2, 3 }, r[mode .. "_y"], 1e-12)
        H.equal(gx:permute { 1, 4, 2, 3 }, r[mode .. "_gx"], 1e-12)
        H.equal(gw, r[mode .. "_gw"], 1e-12)
        H.equal(gb, r[mode .. "_gb"], 1e-12)
        H.equal(rv, mode == "train" and r.rv1 or r.rv0, 1e-14)
        -- (N, C, L) with L moved first: channel_dim -2 of (L, N, C, 1)... here (H, N, C, W)
        rm, rv = T(r.rm0), T(r.rv0)
        local perm = { 3, 1, 2, 4 }
        y, gx = run(F.batch_norm, T(r.x):permute(perm), rm, rv, T(r.w), T(r.b), mode == "train",
          T(r.gy):permute(perm), -2)
        H.equal(y:permute { 2, 3, 1, 4 }, r[mode .. "_y"], 1e-12)
        H.equal(gx:permute { 2, 3, 1, 4 }, r[mode .. "_gx"], 1e-12)
        H.equal(rm, mode == "train" and r.rm1 or r.rm0, 1e-14)
      end
    end)

  it("agrees with the composed form (batch_norm_composed) on every layout, with and without affine",
    function()
      mf.manual_seed(11)
      for _, case in ipairs { { { 5, 4 }, 2 }, { { 3, 4, 5 }, 2 }, { { 3, 5, 4 }, 3 }, { { 2, 4, 3, 3 }, 2 },
        { { 2, 3, 3, 4 }, 4 } } do
        local shape, cdim = case[1], case[2]
        local C = shape[cdim]
        local x, gy = randn(shape), randn(shape)
        local w, b = randn { C }, randn { C }
        for _, training in ipairs { true, false } do
          local rm1, rv1 = randn { C }, mf.rand({ C }, f64) + 0.5
          local rm2, rv2 = rm1:clone(), rv1:clone()
          local y1, gx1, gw1, gb1 = run(F.batch_norm, x, rm1, rv1, w, b, training, gy, cdim)
          local y2, gx2, gw2, gb2 = run(F.batch_norm_composed, x, rm2, rv2, w, b, training, gy, cdim)
          H.equal(y1, y2:totable(), 1e-12)
          H.equal(gx1, gx2:totable(), 1e-11)
          H.equal(gw1, gw2:totable(), 1e-11)
          H.equal(gb1, gb2:totable(), 1e-12)
          H.equal(rm1, rm2:totable(), 1e-14)
          H.equal(rv1, rv2:totable(), 1e-14)
        end
        -- no weight and bias; no running stats when training
        local xg = x:detach():requires_grad()
        local y = F.batch_norm(xg, nil, nil, nil, nil, true, 0.1, 1e-5, cdim)
        local g1 = mf.grad(y, xg, gy)
        local g2 = mf.grad(F.batch_norm_composed(xg, nil, nil, nil, nil, true, 0.1, 1e-5, cdim), xg, gy)
        H.equal(g1, g2:totable(), 1e-11)
      end
    end)

  it("agrees with the composed form on large inputs (the CPU kernel's blocked walks), float32 and 64",
    function()
      mf.manual_seed(12)
      for _, case in ipairs { { { 64, 16, 16, 8 }, 4 }, { { 8, 6, 20, 20 }, 2 }, { { 40000, 3 }, 2 } } do
        for _, dtype in ipairs { "float64", "float32" } do
          local o = { dtype = dtype }
          local shape, cdim = case[1], case[2]
          local C = shape[cdim]
          local x, gy = mf.randn(shape, o) * 3 + 1, mf.randn(shape, o)
          local w, b = mf.randn({ C }, o), mf.randn({ C }, o)
          local tol = dtype == "float64" and 1e-10 or 2e-4
          for _, training in ipairs { true, false } do
            local rm1, rv1 = mf.randn({ C }, o), mf.rand({ C }, o) + 0.5
            local rm2, rv2 = rm1:clone(), rv1:clone()
            local y1, gx1, gw1, gb1 = run(F.batch_norm, x, rm1, rv1, w, b, training, gy, cdim)
            local y2, gx2, gw2, gb2 = run(F.batch_norm_composed, x, rm2, rv2, w, b, training, gy, cdim)
            assert.is_true((y1 - y2):abs():max():item() < tol)
            assert.is_true((gx1 - gx2):abs():max():item() < tol)
            assert.is_true(((gw1 - gw2):abs() / (gw2:abs() + 1)):max():item() < tol)
            assert.is_true(((gb1 - gb2):abs() / (gb2:abs() + 1)):max():item() < tol)
            assert.is_true((rm1 - rm2):abs():max():item() < tol)
            assert.is_true((rv1 - rv2):abs():max():item() < tol)
          end
        end
      end
    end)

  it("finite differences in float64: training and evaluation, 2-D to 4-D, NHWC, weight or bias alone",
    function()
      local rm, rv = randn { 3 }, mf.rand({ 3 }, f64) + 0.5
      for _, training in ipairs { true, false } do
        assert.is_true(mf.gradcheck(function(x, w, b)
          return F.batch_norm(x, rm, rv, w, b, training)
        end, { randn { 2, 3, 4 }, randn { 3 }, randn { 3 } }, opts))
        assert.is_true(mf.gradcheck(function(x, w, b)
          return F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-3, 4)
        end, { randn { 2, 2, 2, 3 }, randn { 3 }, randn { 3 } }, opts))
        assert.is_true(mf.gradcheck(function(x, w)
          return F.batch_norm(x, rm, rv, w, nil, training, 0.1, 1e-5, 1)
        end, { randn { 3, 2, 2 }, randn { 3 } }, opts))
        assert.is_true(mf.gradcheck(function(x, b)
          return F.batch_norm(x, rm, rv, nil, b, training)
        end, { randn { 5, 3 }, randn { 3 } }, opts))
      end
    end)

  it("double backward: evaluation's rule is differentiable; training's says it has none",
    function()
      local rm, rv = randn { 3 }, mf.rand({ 3 }, f64) + 0.5
      local gy = randn { 4, 3, 2 }
      -- d/d(x, w) of the first gradients, by finite differences
      -- (gradcheck's finite differences run under no_grad: enable_grad for the first gradients)
      assert.is_true(mf.gradcheck(function(x, w)
        local gs = mf.enable_grad(function()
          return mf.grad(F.batch_norm(x, rm, rv, w, nil, false), { x, w }, { gy }, { create_graph = true })
        end)
        return gs[1], gs[2]
      end, { randn { 4, 3, 2 }, randn { 3 } }, opts))
      local x, w = randn({ 4, 3, 2 }):requires_grad(), randn({ 3 }):requires_grad()
      local y = F.batch_norm(x, nil, nil, w, nil, true)
      H.err(function() mf.grad(y, x, gy, { create_graph = true }) end,
        "no double backward (create_graph) through the fused op in training mode")
      -- without create_graph the same backward works
      y = F.batch_norm(x, nil, nil, w, nil, true)
      local g1 = mf.grad(y, x, gy)
      H.equal(g1, mf.grad(F.batch_norm_composed(x, nil, nil, w, nil, true), x, gy):totable(), 1e-12)
    end)

  it("bad input: a clear error naming what is wrong", function()
    local x = randn { 4, 3 }
    H.err(function() F.batch_norm(x, randn { 2 }, randn { 2 }, nil, nil, false) end, "running_mean")
    H.err(function() F.batch_norm(x, nil, nil, randn { 4 }, nil, true) end, "weight")
    H.err(function() F.batch_norm(x, nil, nil, nil, nil, false) end,
      "evaluation needs the running mean and variance")
    H.err(function() F.batch_norm(randn { 1, 3 }, nil, nil, nil, nil, true) end,
      "expected more than 1 value per channel")
    H.err(function() F.batch_norm(x, nil, nil, nil, nil, true, 0.1, 1e-5, 3) end, "channel dimension 3")
    H.err(function() F.batch_norm(mf.zeros({ 4, 3 }, { dtype = "int32" }), nil, nil, nil, nil, true) end,
      "float32 or float64")
  end)
end)
