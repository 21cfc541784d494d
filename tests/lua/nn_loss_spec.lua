-- nn_loss_spec.lua — the losses of mf.nn: values against PyTorch (fixtures/nn_reference.lua),
-- every reduction, the module forms, TensorFlow's names, gradients by mf.gradcheck in float64,
-- and the errors for wrong targets.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn = mf.nn
local F = nn.functional
local R = dofile(H.root .. "/tests/lua/fixtures/nn_reference.lua")

local f64 = { dtype = "float64" }
local function T(v) return mf.tensor(v, f64) end
local function L(v) return mf.tensor(v, { dtype = "int64" }) end

describe("losses (vs PyTorch)", function()
  local ce = R.cross_entropy

  it("cross_entropy with 1-based class indices, every reduction", function()
    local x, t = T(ce.logits), L(ce.target)
    H.equal(F.cross_entropy(x, t), ce.mean, 1e-12)
    H.equal(F.cross_entropy(x, t, { reduction = "sum" }), ce.sum, 1e-12)
    H.equal(F.cross_entropy(x, t, { reduction = "none" }), ce.none, 1e-12)
    H.equal(F.cross_entropy(x, t, "sum"), ce.sum, 1e-12)
    H.equal(F.cross_entropy(x, ce.target), ce.mean, 1e-12) -- a Lua table of integers
    H.equal(F.cross_entropy(mf.tensor(ce.logits), t), ce.mean, 1e-6) -- float32
    H.equal(F.cross_entropy(x, t:int()), ce.mean, 1e-12) -- int32 targets
  end)

  it("cross_entropy with probability targets", function()
    local x, p = T(ce.logits), T(ce.probs)
    H.equal(F.cross_entropy(x, p), ce.probs_mean, 1e-12)
    H.equal(F.cross_entropy(x, p, { reduction = "sum" }), ce.probs_sum, 1e-12)
    H.equal(F.cross_entropy(x, p, { reduction = "none" }), ce.probs_none, 1e-12)
  end)

  it("cross_entropy with label smoothing", function()
    local x = T(ce.logits)
    H.equal(F.cross_entropy(x, L(ce.target), { label_smoothing = 0.1 }), ce.smooth, 1e-12)
    H.equal(F.cross_entropy(x, T(ce.probs), { label_smoothing = 0.1 }), ce.probs_smooth, 1e-12)
  end)

  it("cross_entropy over (N, C, d) logits", function()
    H.equal(F.cross_entropy(T(ce.logits3), L(ce.target3)), ce.y3, 1e-12)
  end)

  it("cross_entropy of one example (C) and a scalar class", function()
    local x = T(ce.logits[1])
    H.equal(F.cross_entropy(x, L(ce.target[1])), ce.none[1], 1e-12)
  end)

  it("nll_loss", function()
    local r = R.nll_loss
    H.equal(F.nll_loss(T(r.logp), L(r.target)), r.mean, 1e-12)
    H.equal(F.nll_loss(T(r.logp), L(r.target), { reduction = "sum" }), r.sum, 1e-12)
  end)

  it("mse_loss and l1_loss, every reduction", function()
    for _, name in ipairs { "mse_loss", "l1_loss" } do
      local r = R[name]
      for _, red in ipairs { "mean", "sum", "none" } do
        H.equal(F[name](T(r.input), T(r.target), { reduction = red }), r[red], 1e-12)
      end
      H.equal(F[name](T(r.input), r.target), r.mean, 1e-12) -- a Lua table target
    end
  end)

  it("binary_cross_entropy_with_logits is stable for large logits", function()
    local r = R.bce_with_logits
    H.equal(F.binary_cross_entropy_with_logits(T(r.x), T(r.y)), r.mean, 1e-12)
    H.equal(F.binary_cross_entropy_with_logits(T(r.x), T(r.y), { reduction = "none" }), r.none, 1e-12)
    H.equal(F.binary_cross_entropy_with_logits(T(r.x), T(r.y), { reduction = "sum", pos_weight = 2 }),
      r.pos_weight, 1e-12)
    -- float32 too: no inf or nan at +-50
    H.equal(F.binary_cross_entropy_with_logits(mf.tensor(r.x), mf.tensor(r.y), { reduction = "none" }),
      r.none, 1e-5)
  end)

  it("binary_cross_entropy on probabilities", function()
    local r = R.bce
    H.equal(F.binary_cross_entropy(T(r.p), T(r.y)), r.mean, 1e-12)
    H.equal(F.binary_cross_entropy(T(r.p), T(r.y), "none"), r.none, 1e-12)
  end)

  it("module forms", function()
    local x, t = T(ce.logits), L(ce.target)
    H.equal(nn.CrossEntropyLoss()(x, t), ce.mean, 1e-12)
    H.equal(nn.CrossEntropyLoss { reduction = "sum" }(x, t), ce.sum, 1e-12)
    H.equal(nn.NLLLoss()(F.log_softmax(x, 2), t), ce.mean, 1e-12)
    local r = R.mse_loss
    H.equal(nn.MSELoss()(T(r.input), T(r.target)), r.mean, 1e-12)
    H.equal(nn.L1Loss { reduction = "none" }(T(R.l1_loss.input), T(R.l1_loss.target)), R.l1_loss.none, 1e-12)
    local b = R.bce_with_logits
    H.equal(nn.BCEWithLogitsLoss()(T(b.x), T(b.y)), b.mean, 1e-12)
    H.equal(nn.BCELoss()(T(R.bce.p), T(R.bce.y)), R.bce.mean, 1e-12)
    assert.equal("nn.CrossEntropyLoss(reduction=sum)", tostring(nn.CrossEntropyLoss "sum"))
  end)

  it("TensorFlow's names give per-example losses", function()
    local x, p = T(ce.logits), T(ce.probs)
    H.equal(nn.softmax_cross_entropy_with_logits { labels = p, logits = x }, ce.probs_none, 1e-12)
    H.equal(nn.sparse_softmax_cross_entropy_with_logits { labels = L(ce.target), logits = x }, ce.none, 1e-12)
    local b = R.bce_with_logits
    H.equal(nn.sigmoid_cross_entropy_with_logits { labels = T(b.y), logits = T(b.x) }, b.none, 1e-12)
  end)
end)

describe("losses gradients (float64 finite differences)", function()
  local opts = { atol = 1e-6, rtol = 1e-4 }
  local ce = R.cross_entropy

  it("cross_entropy with class indices and with probabilities", function()
    local t = L(ce.target)
    assert.is_true(mf.gradcheck(function(x) return F.cross_entropy(x, t) end, { T(ce.logits) }, opts))
    assert.is_true(mf.gradcheck(function(x) return F.cross_entropy(x, t, "none") end, { T(ce.logits) }, opts))
    assert.is_true(mf.gradcheck(function(x, p) return F.cross_entropy(x, p) end,
      { T(ce.logits), T(ce.probs) }, opts))
  end)

  it("nll_loss", function()
    local t = L(ce.target)
    assert.is_true(mf.gradcheck(function(x) return F.nll_loss(x, t) end, { T(R.nll_loss.logp) }, opts))
  end)

  it("mse_loss and l1_loss in both arguments", function()
    local r = R.mse_loss
    assert.is_true(mf.gradcheck(F.mse_loss, { T(r.input), T(r.target) }, opts))
    assert.is_true(mf.gradcheck(F.l1_loss, { T(r.input), T(r.target) }, opts))
  end)

  it("binary_cross_entropy_with_logits, exact at 0 too", function()
    local r = R.bce_with_logits
    assert.is_true(mf.gradcheck(F.binary_cross_entropy_with_logits, { T(r.x), T(r.y) }, opts))
    assert.is_true(mf.gradcheck(function(x, y)
      return F.binary_cross_entropy_with_logits(x, y, { pos_weight = 2, reduction = "none" })
    end, { T(r.x), T(r.y) }, opts))
    -- d/dx at x = 0 is sigmoid(0) - y = 0.5 - y
    local x = T { 0 }:requires_grad()
    F.binary_cross_entropy_with_logits(x, T { 0.25 }):backward()
    H.equal(x.grad, { 0.25 }, 1e-12)
  end)

  it("binary_cross_entropy", function()
    assert.is_true(mf.gradcheck(F.binary_cross_entropy, { T(R.bce.p), T(R.bce.y) }, opts))
  end)

  it("softmax_cross_entropy_with_logits", function()
    assert.is_true(mf.gradcheck(function(x, p)
      return nn.softmax_cross_entropy_with_logits { labels = p, logits = x }
    end, { T(ce.logits), T(ce.probs) }, opts))
  end)
end)

describe("loss errors", function()
  local x = mf.randn { 4, 10 }

  it("name an out-of-range class index and say classes are 1-based", function()
    H.err(function() F.cross_entropy(x, mf.tensor { 1, 2, 11, 3 }) end,
      "class index 11 is out of range 1..10")
    H.err(function() F.cross_entropy(x, mf.tensor { 0, 2, 1, 3 }) end,
      "class index 0 is out of range 1..10 (targets are 1-based class indices")
    H.err(function() F.nll_loss(x, mf.tensor { 1, 2, 3, 12 }) end, "nll_loss: class index 12")
    -- the extremes exactly (they went through doubles: 2^63 - 1 read back as -2^63)
    H.err(function() F.nll_loss(x, mf.tensor { 1, math.maxinteger, 3, 4 }) end,
      "nll_loss: class index 9223372036854775807 is out of range 1..10")
    H.err(function() F.nll_loss(x, mf.tensor { 1, math.mininteger, 3, 4 }) end,
      "nll_loss: class index -9223372036854775808 is out of range 1..10")
    H.err(function() mf._nn.gather(x, 2, mf.tensor { { 1 }, { 2 }, { 9007199254740993 }, { 3 } }) end,
      "gather: index 9007199254740993 is out of range 1..10 for dimension 2")
    H.err(function() mf._nn.scatter_add({ 4, 3 }, 2, mf.tensor { { 2 }, { 0 } }, mf.ones { 2, 1 }) end,
      "scatter_add: index 0 is out of range 1..3 for dimension 2")
  end)

  it("wrong target shapes", function()
    H.err(function() F.cross_entropy(x, mf.tensor { 1, 2, 3 }) end,
      "cross_entropy: class indices must have shape 4 for input 4x10, got 3")
    H.err(function() F.cross_entropy(x, mf.zeros { 4, 9 }) end,
      "target must be class indices (int64) of shape 4 or probabilities of the logits' shape 4x10, got float32 4x9")
    H.err(function() F.mse_loss(mf.zeros { 4, 1 }, mf.zeros { 4 }) end,
      "mse_loss: input has shape 4x1 but target 4 (they must match)")
    H.err(function() nn.softmax_cross_entropy_with_logits { labels = mf.zeros { 4, 3 }, logits = x } end,
      "labels have shape 4x3 but logits 4x10")
  end)

  it("wrong dtypes and options", function()
    H.err(function() F.cross_entropy(x, mf.tensor { true, false, true, true }) end,
      "target must be int64 class indices or float probabilities, got bool")
    H.err(function() F.cross_entropy(mf.tensor { { 1, 2 } }, mf.tensor { 1 }) end,
      "logits must be a float tensor, got int64")
    H.err(function() F.nll_loss(x, mf.zeros { 4 }) end, "nll_loss: target must be int64 class indices, got float32")
    H.err(function() F.mse_loss(x, x, { reduction = "avg" }) end,
      "mse_loss: reduction must be \"mean\", \"sum\" or \"none\", got avg")
    H.err(function() nn.softmax_cross_entropy_with_logits(x) end, "expected {labels = ..., logits = ...}")
  end)
end)
