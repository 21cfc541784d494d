-- nn_module_spec.lua — the Module API of mf.nn: parameters and names, user modules, Sequential,
-- state_dict round trips and their errors, train/evaluate (Dropout, BatchNorm), to(), zero_grad,
-- printing (tostring, summary and the tutorial's shape chain), layer errors, and a small MLP
-- that learns.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn = mf.nn
local F = nn.functional

-- The TensorFlow tutorial's CNN (NHWC inputs).
local function tutorial_cnn()
  return nn.Sequential {
    nn.Reshape { -1, 28, 28, 1 },
    nn.Conv2d(1, 32, 5, { padding = "same", data_format = "NHWC" }), nn.ReLU(),
    nn.MaxPool2d(2, { padding = "same", data_format = "NHWC" }),
    nn.Conv2d(32, 64, 5, { padding = "same", data_format = "NHWC" }), nn.ReLU(),
    nn.MaxPool2d(2, { padding = "same", data_format = "NHWC" }),
    nn.Flatten(),
    nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(1024, 10),
  }
end

describe("nn.Module", function()
  it("parameters are leaves that require grad, in order, with names", function()
    local net = nn.Sequential { nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2, { bias = false }) }
    local ps = net:parameters()
    assert.equal(3, #ps)
    for _, p in ipairs(ps) do
      assert.is_true(p:needs_grad())
      assert.is_true(p.is_leaf)
    end
    local names = {}
    for i, np in ipairs(net:named_parameters()) do names[i] = np[1] end
    assert.same({ "1.weight", "1.bias", "3.weight" }, names)
    assert.equal(net[1].weight, ps[1])
    assert.equal(4 * 3 + 3 + 3 * 2, net:num_parameters())
  end)

  it("Sequential: #seq, seq[i], seq[-1], add, nesting", function()
    local inner = nn.Sequential():add(nn.Linear(2, 2)):add(nn.Tanh())
    local net = nn.Sequential(nn.Linear(3, 2), inner)
    assert.equal(2, #net)
    assert.equal(inner, net[2])
    assert.equal(inner, net[-1])
    assert.equal("nn.Tanh", inner[2].__typename)
    local names = {}
    for i, np in ipairs(net:named_parameters()) do names[i] = np[1] end
    assert.same({ "1.weight", "1.bias", "2.1.weight", "2.1.bias" }, names)
    H.err(function() nn.Sequential { nn.ReLU(), 3 } end, "Sequential: entry 2 is a number, not a module")
  end)

  it("user modules register children and nn.Parameter fields", function()
    local Net = nn.class("Net") -- the parent defaults to nn.Module
    function Net:__init(n)
      self.fc1 = nn.Linear(n, 4)
      self.fc2 = nn.Linear(4, 2)
      self.scale = nn.Parameter(mf.ones { 2 })
      self.note = "not registered"
    end
    function Net:forward(x) return self.fc2(mf.relu(self.fc1(x))) * self.scale end
    local net = Net(3)
    local names = {}
    for i, np in ipairs(net:named_parameters()) do names[i] = np[1] end
    table.sort(names)
    assert.same({ "fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "scale" }, names)
    assert.same({ 5, 2 }, net(mf.randn { 5, 3 }):shape())
    local Sub = Net:extend("Sub") -- subclasses inherit forward and the metamethods
    assert.same({ 1, 2 }, Sub(3)(mf.randn { 1, 3 }):shape())
  end)

  it("a shared parameter is listed once", function()
    local lin = nn.Linear(2, 2)
    local net = nn.Sequential { lin, nn.ReLU(), lin }
    assert.equal(2, #net:parameters())
    net:double() -- and stays shared after a conversion
    assert.equal(2, #net:parameters())
    assert.equal(net[1].weight, net[3].weight)
  end)

  it("state_dict round trip copies parameters and buffers", function()
    mf.manual_seed(1)
    local a = nn.Sequential { nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2) }
    a(mf.randn { 8, 3 }) -- moves the running stats
    mf.manual_seed(2)
    local b = nn.Sequential { nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2) }
    local sd = a:state_dict()
    for _, n in ipairs { "1.weight", "1.bias", "2.weight", "2.bias", "2.running_mean",
      "2.running_var", "2.num_batches_tracked", "3.weight", "3.bias" } do
      assert.is_true(mf.is_tensor(sd[n]), n)
    end
    assert.is_false(sd["1.weight"]:needs_grad())
    b:load_state_dict(sd)
    a:evaluate()
    b:evaluate()
    local x = mf.randn { 5, 3 }
    H.equal(b(x), a(x):totable(), 1e-7)
    H.equal(b[2].running_var, a[2].running_var:totable(), 0)
    assert.is_true(b[1].weight:needs_grad()) -- still a parameter
  end)

  it("load_state_dict errors name missing, unexpected and mismatched entries", function()
    local net = nn.Sequential { nn.Linear(3, 4) }
    H.err(function() net:load_state_dict { ["1.weight"] = mf.zeros { 4, 3 } } end, "missing 1.bias")
    H.err(function()
      net:load_state_dict { ["1.weight"] = mf.zeros { 4, 3 }, ["1.bias"] = mf.zeros { 4 }, ["2.weight"] = mf.zeros { 1 } }
    end, "unexpected 2.weight")
    H.err(function()
      net:load_state_dict { ["1.weight"] = mf.zeros { 3, 4 }, ["1.bias"] = mf.zeros { 4 } }
    end, "size mismatch for 1.weight: the state has 3x4, the model 4x3")
    local r = net:load_state_dict({ ["1.bias"] = mf.ones { 4 }, extra = mf.zeros { 1 } }, false)
    assert.same({ "1.weight" }, r.missing)
    assert.same({ "extra" }, r.unexpected)
    H.equal(net[1].bias, { 1, 1, 1, 1 })
  end)

  it("train() and evaluate() reach every module; eval is an alias", function()
    local net = nn.Sequential { nn.Linear(2, 2), nn.Sequential { nn.Dropout(0.5) } }
    assert.is_true(net[2][1].training)
    assert.equal(net, net:evaluate())
    assert.is_false(net.training)
    assert.is_false(net[2][1].training)
    net:train()
    assert.is_true(net[2][1].training)
    net:eval()
    assert.is_false(net[1].training)
  end)

  it("Dropout drops with probability p and rescales when training, is the identity in evaluation", function()
    mf.manual_seed(3)
    local d = nn.Dropout(0.25)
    local x = mf.ones { 100, 100 }
    local y = d(x)
    local zeros = mf.eq(y, 0):sum():item()
    assert.is_true(zeros > 2200 and zeros < 2800, "dropped " .. zeros)
    local kept = mf.ne(y, 0)
    H.equal(mf.where(kept, y, 4 / 3):min(), 4 / 3, 1e-6) -- the kept ones are 1/(1-p)
    H.equal(mf.where(kept, y, 4 / 3):max(), 4 / 3, 1e-6)
    d:evaluate()
    assert.equal(x, d(x))
    assert.equal(x, nn.Dropout(0)(x))
    H.equal(nn.Dropout(1)(x):sum(), 0)
    H.err(function() nn.Dropout(1.5) end, "Dropout: the drop probability p must be in [0, 1], got 1.5")
  end)

  it("to(dtype) converts parameters (kept as parameters) and float buffers", function()
    local net = nn.Sequential { nn.Linear(2, 3), nn.BatchNorm1d(3) }
    net:to("float64")
    for _, p in ipairs(net:parameters()) do
      assert.equal("float64", p:dtype())
      assert.is_true(p:needs_grad() and p.is_leaf)
    end
    assert.equal("float64", net[2].running_mean:dtype())
    assert.equal("int64", net[2].num_batches_tracked:dtype())
    assert.equal("float64", net(mf.randn({ 4, 2 }, { dtype = "float64" })):dtype())
    assert.equal(net, net:to("cpu"))
    H.err(function() net:to("int32") end, "modules hold float tensors")
  end)

  it("gradients flow to every parameter, zero_grad clears them", function()
    local net = nn.Sequential { nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1) }
    local loss = F.mse_loss(net(mf.randn { 6, 3 }), mf.randn { 6, 1 })
    loss:backward()
    for _, np in ipairs(net:named_parameters()) do
      assert.is_true(mf.is_tensor(np[2].grad), np[1])
      assert.same(np[2]:shape(), np[2].grad:shape())
    end
    net:zero_grad()
    for _, p in ipairs(net:parameters()) do assert.is_nil(p.grad) end
  end)

  it("a small MLP learns with hand-written SGD", function()
    mf.manual_seed(4)
    local net = nn.Sequential { nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1) }
    local x = mf.randn { 64, 2 }
    local y = (x:select(2, 1) * x:select(2, 2)):reshape { 64, 1 } -- a product: needs the hidden layer
    local first, last
    for step = 1, 200 do
      net:zero_grad()
      local loss = F.mse_loss(net(x), y)
      loss:backward()
      mf.no_grad(function()
        for _, p in ipairs(net:parameters()) do p:copy_(p - p.grad * 0.1) end
      end)
      if step == 1 then first = loss:item() end
      last = loss:item()
    end
    assert.is_true(last < first * 0.3, ("loss %g -> %g"):format(first, last))
  end)
end)

describe("printing", function()
  it("tostring lists layers with parameter shapes and counts", function()
    local net = nn.Sequential { nn.Linear(784, 10), nn.LogSoftmax(-1) }
    local s = tostring(net)
    assert.truthy(s:find("nn.Sequential {", 1, true))
    assert.truthy(s:find("(1): nn.Linear(784 -> 10)  [weight 10x784, bias 10; 7,850 params]", 1, true))
    assert.truthy(s:find("(2): nn.LogSoftmax(dim=-1)", 1, true))
    assert.truthy(s:find("Total parameters: 7,850", 1, true))
    assert.equal("nn.Linear(784 -> 10)  [weight 10x784, bias 10; 7,850 params]", tostring(net[1]))
    assert.equal("nn.Conv2d(1 -> 32, 5x5, stride 2, padding same, NHWC)",
      nn.Conv2d(1, 32, 5, { stride = 2, padding = "same", data_format = "NHWC" }):__repr())
  end)

  it("tostring shows each layer's output shape at its last call", function()
    local net = nn.Sequential { nn.Linear(4, 3), nn.ReLU() }
    net(mf.zeros { 5, 4 })
    assert.truthy(tostring(net):find("(2): nn.ReLU  -> 5x3", 1, true))
    assert.truthy(tostring(net):find("nn.Sequential  -> 5x3 {", 1, true))
  end)

  it("summary and shape_chain reproduce the tutorial's log", function()
    local net = tutorial_cnn()
    net:train()
    assert.equal("1x784 → 1x28x28x1 → 1x28x28x32 → 1x14x14x32 → 1x14x14x64 → 1x7x7x64 → 1x1024 → 1x10",
      net:shape_chain { 1, 784 })
    local s = net:summary { 1, 784 }
    assert.truthy(s:find("(2) nn.Conv2d(1 -> 32, 5x5, padding same, NHWC)", 1, true))
    assert.truthy(s:find("1x28x28x32", 1, true))
    assert.truthy(s:find("(8) nn.Flatten", 1, true))
    assert.truthy(s:find("1x3136", 1, true))
    assert.truthy(s:find("Total parameters: 3,274,634", 1, true))
    assert.truthy(s:find("Shapes: 1x784 → 1x28x28x1", 1, true))
    assert.is_true(net.training and net[11].training) -- the modes are restored
    -- after a summary, tostring shows each layer's output shape too
    assert.truthy(tostring(net):find("nn.Linear(1024 -> 10)  [weight 10x1024, bias 10; 10,250 params]  -> 1x10", 1, true))
  end)
end)

describe("layer errors", function()
  it("name the layer and the expected shape", function()
    H.err(function() nn.Linear(784, 10)(mf.zeros { 2, 100 }) end,
      "nn.Linear(784 -> 10): expected an input with 784 features in its last dimension, got shape 2x100")
    H.err(function() nn.Conv2d(1, 32, 5, { data_format = "NHWC" })(mf.zeros { 2, 28, 28, 3 }) end,
      "nn.Conv2d(1 -> 32, 5x5, NHWC): expected an input with 1 channels in dimension 4 (NHWC), got shape 2x28x28x3")
    H.err(function() nn.Conv2d(3, 8, 3)(mf.zeros { 2, 28, 28, 3 }) end,
      "nn.Conv2d(3 -> 8, 3x3): expected an input with 3 channels in dimension 2 (NCHW), got shape 2x28x28x3")
    H.err(function() nn.Conv2d(1, 2, 3)(mf.zeros { 28, 28 }) end, "expected a 4-D input (N, C, H, W), got shape 28x28")
    H.err(function() nn.Conv2d(1, 2, 7)(mf.zeros { 1, 1, 5, 5 }) end, "nn.Conv2d(1 -> 2, 7x7): conv2d:")
    H.err(function() nn.MaxPool2d(2)(mf.zeros { 4, 4 }) end, "nn.MaxPool2d(2x2): expected a 4-D input")
    H.err(function() nn.BatchNorm1d(3)(mf.zeros { 4, 5 }) end, "expected 3 channels in dimension 2, got shape 4x5")
    H.err(function() nn.BatchNorm1d(3)(mf.zeros { 1, 3 }) end, "more than 1 value per channel when training")
    H.err(function() nn.Reshape { 28, 28, 1 }(mf.zeros { 2, 700 }) end,
      "nn.Reshape(28x28x1): cannot reshape an input of shape 2x700")
    H.err(function() nn.Conv2d(1, 2, 3, { padding = "full" }) end, "Conv2d: padding must be")
    H.err(function() nn.Linear(0, 3) end, "Linear: the number of input features must be a positive integer, got 0")
  end)
end)
