-- gpu_half_spec.lua — training in float16 and bfloat16 on the GPU: a small CNN (conv, ReLU, max
-- pooling, dropout, linear; log_softmax + nll_loss, or F.cross_entropy; with batch norm too) converted with
-- :to("float16") / :to("bfloat16") on cuda:0 trains a few SGD steps, its parameters, gradients and
-- activations stay in the half dtype, and its losses follow the float32 run on the same GPU from
-- the same start within the half dtype's precision. The CPU refuses half tensors with a clear
-- message. Pending without a GPU; CI runs it on the CUDA emulator (tests/cuda_emu), a GPU machine
-- through tests/gpu/run.sh.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn, F = mf.nn, mf.nn.functional

local GPU = mf.cuda.is_available()
local function skip()
  return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")")
end

-- Trains build() in `dtype` on cuda:0 for `steps` SGD steps (momentum 0.9); returns the losses
-- and the trained model. Every run starts from the same float32 values made on the CPU.
local function train(dtype, build, loss_fn, x, y, steps)
  mf.manual_seed(7)
  local model = build()
  model:to("cuda:0")
  model:to(dtype)
  model:train()
  local opt = mf.optim.SGD(model:parameters(), { lr = 0.05, momentum = 0.9 })
  local xs, ys = x:to("cuda:0"):to(dtype), y:to("cuda:0")
  local losses = {}
  for i = 1, steps do
    local out = model(xs)
    assert.equal(dtype, out:dtype())
    local loss = loss_fn(out, ys)
    assert.equal(dtype, loss:dtype())
    opt:zero_grad()
    loss:backward()
    for _, p in ipairs(model:parameters()) do
      assert.equal(dtype, p.grad:dtype())
      assert.equal("cuda:0", p.grad:device())
    end
    opt:step()
    losses[i] = loss:item()
  end
  return losses, model
end

local function data()
  mf.manual_seed(3)
  local x = mf.randn { 8, 2, 10, 10 }
  local labels = {}
  for i = 1, 8 do labels[i] = (i * 3) % 4 + 1 end -- class indices are 1-based
  return x, mf.tensor(labels):long()
end

-- the losses of two runs agree within tol * (1 + |loss|) at every step, and training moved them
local function follows(ref, got, tol, what)
  for i = 1, #ref do
    assert.is_true(math.abs(ref[i] - got[i]) <= tol * (1 + math.abs(ref[i])),
      ("%s, step %d: float32 %.6g, half %.6g"):format(what, i, ref[i], got[i]))
  end
  assert.is_true(ref[#ref] < ref[1] - 0.02, ("float32 training lowered the loss: %.6g -> %.6g")
    :format(ref[1], ref[#ref]))
  assert.is_true(got[#got] < got[1] - 0.02, ("%s training lowered the loss: %.6g -> %.6g")
    :format(what, got[1], got[#got]))
end

-- float16: 11 significant bits (4.9e-4 per rounding); bfloat16: 8 (3.9e-3); a few steps of
-- training compound them
local TOL = { float16 = 2e-3, bfloat16 = 1e-2 }

describe("training in half precision on the GPU", function()
  local was
  setup(function() if GPU then was = mf.cuda.set_tf32(false) end end)
  teardown(function() if GPU then mf.cuda.set_tf32(was) end end)

  -- 10x10 -> pool 5x5 -> conv 3x3 (no padding) -> pool 1x1: 6 features; dropout's half mask
  -- drops what float32's does for the same seed, so the runs stay together
  local function cnn()
    return nn.Sequential {
      nn.Conv2d(2, 4, 3, { padding = 1 }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(4, 6, 3), nn.ReLU(), nn.MaxPool2d(2),
      nn.Flatten(), nn.Dropout(0.25), nn.Linear(6, 4), nn.LogSoftmax(2),
    }
  end

  for _, dtype in ipairs { "float16", "bfloat16" } do
    it(("a CNN with log_softmax and nll_loss trains in %s like float32"):format(dtype), function()
      if not GPU then return skip() end
      local x, y = data()
      local ref = train("float32", cnn, F.nll_loss, x, y, 6)
      local got, model = train(dtype, cnn, F.nll_loss, x, y, 6)
      follows(ref, got, TOL[dtype], dtype)
      for _, p in ipairs(model:parameters()) do assert.equal(dtype, p:dtype()) end
    end)

    it(("a CNN with batch norm and F.cross_entropy trains in %s like float32"):format(dtype), function()
      if not GPU then return skip() end
      local function build()
        return nn.Sequential {
          nn.Conv2d(2, 4, 3, { padding = "same" }), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
          nn.Conv2d(4, 6, 3, { stride = 2, padding = 1 }), nn.ReLU(), nn.AvgPool2d(3),
          nn.Flatten(), nn.Linear(6, 4),
        }
      end
      local x, y = data()
      local ce = function(out, t) return F.cross_entropy(out, t) end
      local ref, mref = train("float32", build, ce, x, y, 8)
      local got, model = train(dtype, build, ce, x, y, 8)
      follows(ref, got, TOL[dtype], dtype)
      -- the running statistics were updated in the half dtype's tensors
      local bn, bref = model[2], mref[2]
      assert.equal(dtype, bn.running_mean:dtype())
      local d = ((bn.running_var:float() - bref.running_var):abs():max()):item()
      assert.is_true(d <= 4 * TOL[dtype], "running_var differs by " .. d)
      -- evaluation mode (the running statistics) in the half dtype too
      model:evaluate()
      mref:evaluate()
      local xs = x:to("cuda:0")
      local a, b = mref(xs), model(xs:to(dtype))
      assert.equal(dtype, b:dtype())
      local e = ((b:float() - a):abs() / (a:abs() + 1)):max():item()
      assert.is_true(e <= 4 * TOL[dtype], "evaluation output differs by " .. e)
    end)
  end

  it("says that half tensors and these ops need a GPU", function()
    H.err(function() return mf.zeros({ 2, 3 }, { dtype = "float16" }) end,
      "float16 tensors live only on GPUs")
    H.err(function() return mf.zeros({ 2, 3 }):to("bfloat16") end, "bfloat16")
  end)
end)
