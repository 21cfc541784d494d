-- gpu_training_spec.lua — training on the GPU follows the CPU step for step: the same model,
-- data, seeds and optimizer on "cpu" and on "cuda:0" give the same losses, parameters and batch
-- norm running statistics, within float32 rounding (TF32 off). It goes through what a training
-- loop uses on a GPU: modules and buffers moved with :to("cuda"), optimizer state made on the
-- device, dropout's Philox masks (the same for the same seed), batch norm (cuDNN), convolutions
-- and pooling in NCHW and in NHWC (channels-last views), cross-entropy, autograd, SGD with
-- momentum and Adam, a Session running a graph placed on the GPU, and a second GPU. Pending
-- without a GPU; CI runs it on the CUDA emulator (the sanitizer build, tests/cuda_emu, two GPUs),
-- a GPU machine through tests/gpu/run.sh.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn, F = mf.nn, mf.nn.functional

local GPU = mf.cuda.is_available()

-- Trains build() for `steps` steps on `device` from the same start; returns the losses and the
-- trained model (moved back to the CPU).
local function train(device, build, make_opt, x, y, steps)
  mf.manual_seed(7)
  local model = build() -- made on the CPU, so both devices start from the same values
  model:to(device)
  model:train()
  local opt = make_opt(model:parameters())
  local xs, ys = x:to(device), y:to(device)
  local losses = {}
  for i = 1, steps do
    mf.manual_seed(100 + i) -- the dropout masks: the same draws on both devices
    local loss = F.cross_entropy(model(xs), ys)
    opt:zero_grad()
    loss:backward()
    opt:step()
    losses[i] = loss:item()
  end
  model:to("cpu")
  return losses, model
end

local function close(a, b, tol, what)
  for i = 1, #a do
    assert.is_true(math.abs(a[i] - b[i]) <= tol * (1 + math.abs(a[i])),
      ("%s %d: cpu %.9g, gpu %.9g"):format(what, i, a[i], b[i]))
  end
end

-- the largest |a - b| / (1 + |a|) over two tensors' elements
local function worst(a, b) return ((a - b):abs() / (a:abs() + 1)):max():item() end

describe("training on the GPU", function()
  local was
  setup(function() if GPU then was = mf.cuda.set_tf32(false) end end)
  teardown(function() if GPU then mf.cuda.set_tf32(was) end end)

  local function data(n, shape, classes)
    mf.manual_seed(3)
    local x = mf.randn(shape)
    local labels = {}
    for i = 1, n do labels[i] = (i * 5) % classes + 1 end -- class indices are 1-based
    return x, mf.tensor(labels):long()
  end

  it("takes 1-based indices from Lua tables and tensors on the GPU (losses, gather, index_select)", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local x = mf.tensor { { 0.5, 1.5, -1 }, { 2, 0, 1 } }
    local g = x:cuda()
    local labels = mf.tensor { 2, 1 }:long()
    local want = F.cross_entropy(x, labels):item()
    assert.near(want, F.cross_entropy(g, labels:cuda()):item(), 1e-6)
    -- class indices as a Lua table or number: made on the logits' device
    assert.near(want, F.cross_entropy(g, { 2, 1 }):item(), 1e-6)
    assert.near(want, F.nll_loss(mf._nn.log_softmax(g, 2), { 2, 1 }):item(), 1e-6)
    assert.near(F.cross_entropy(x[1], 2):item(), F.cross_entropy(g[1], 2):item(), 1e-6)
    H.equal(g:index_select(2, { 3, 1 }):cpu(), { { -1, 0.5 }, { 1, 2 } })
    H.equal(g:index_select(2, mf.tensor { 2 }:cuda()):cpu(), { { 1.5 }, { 0 } })
    H.err(function() return F.cross_entropy(g, labels) end, "different devices (cuda:0 and cpu)")
    -- a bad class index: the GPU finds it as it runs and the call returns at once (no waiting
    -- for the GPU in a training step); the next synchronisation reports it, once
    local loss = F.cross_entropy(g, mf.tensor { 2, 4 }:long():cuda())
    H.err(function() return loss:item() end,
      "cross_entropy: class index 4 is out of range 1..3 (found by cuda:0 running an earlier call")
    assert.near(want, F.cross_entropy(g, labels:cuda()):item(), 1e-6) -- the GPU goes on
    -- the same from gather (nll_loss's), the dim named
    local picked = F.nll_loss(g, mf.tensor { 2, 4 }:long():cuda())
    H.err(function() return picked:item() end,
      "gather: index 4 is out of range 1..3 for dimension 2 (found by cuda:0 running an earlier call")
    H.err(function()
      g:index_select(1, mf.tensor { 1, 3 }:cuda())
      mf.cuda.synchronize()
    end, "index_select: index 3 is out of range 1..2 for dimension 1")
    mf.cuda.synchronize()
    -- gather's backward (scatter_add) finds the same index: the first one found is reported
    local w = g:clone():requires_grad()
    F.nll_loss(w, mf.tensor { 0, 1 }:long():cuda()):backward()
    H.err(function() return w.grad:cpu() end, "gather: index 0 is out of range 1..3")
    mf.cuda.synchronize()
    -- cross_entropy's backward only compares with the index: the forward's report, once
    w.grad = nil
    F.cross_entropy(w, mf.tensor { 0, 1 }:long():cuda()):backward()
    H.err(function() return w.grad:cpu() end, "cross_entropy: class index 0 is out of range 1..3")
    mf.cuda.synchronize()
  end)

  it("reports a bad GPU index at the call under CUDA_LAUNCH_BLOCKING=1", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local lua = "local F = mf.nn.functional; local g = mf.tensor{{0.5, 1.5, -1}, {2, 0, 1}}:cuda(); " ..
      "local ok, e = pcall(F.cross_entropy, g, mf.tensor{2, 4}:long():cuda()); print(ok, e); " ..
      "ok, e = pcall(function() return g:index_select(1, {1, 3}) end); print(ok, e); " ..
      "print(F.cross_entropy(g, mf.tensor{2, 1}:long():cuda()):item())"
    local out, ok = H.sh("CUDA_LAUNCH_BLOCKING=1 " .. H.q(H.BIN) .. " -e " .. H.q(lua))
    assert.is_true(ok, out)
    assert.truthy(out:find("false\t[^\n]*cross_entropy: class index 4 is out of range 1..3"), out)
    assert.truthy(out:find("false\t[^\n]*index_select: index 3 is out of range for dimension 1 of size 2"), out)
    local want = F.cross_entropy(mf.tensor { { 0.5, 1.5, -1 }, { 2, 0, 1 } }, mf.tensor { 2, 1 }:long()):item()
    assert.near(want, tonumber(out:match("\n([%d.e+-]+)\n?$")), 1e-6)
  end)

  it("a CNN with batch norm and dropout (NCHW, SGD with momentum) matches the CPU", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local function build()
      return nn.Sequential {
        nn.Conv2d(2, 4, 3, { padding = "same" }), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, { stride = 2, padding = 1 }), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Dropout(0.5), nn.Linear(6, 3),
      }
    end
    local x, y = data(6, { 6, 2, 8, 8 }, 3)
    local sgd = function(p) return mf.optim.SGD(p, { lr = 0.05, momentum = 0.9 }) end
    local lc, mc = train("cpu", build, sgd, x, y, 5)
    local lg, mg = train("cuda:0", build, sgd, x, y, 5)
    close(lc, lg, 1e-4, "loss at step")
    assert.is_true(math.abs(lc[5] - lc[1]) > 1e-3, "the loss moved: " .. lc[1] .. " -> " .. lc[5])
    local pc, pg = mc:parameters(), mg:parameters()
    assert.equal(#pc, #pg)
    for i = 1, #pc do
      assert.equal("cpu", pg[i]:device())
      local d = worst(pc[i], pg[i])
      assert.is_true(d <= 1e-4, "parameter " .. i .. " differs by " .. d)
    end
    local bc, bg = mc[2], mg[2] -- the BatchNorm2d
    assert.is_true(worst(bc.running_mean, bg.running_mean) <= 1e-5, "running_mean")
    assert.is_true(worst(bc.running_var, bg.running_var) <= 1e-5, "running_var")
  end)

  it("batch norm beyond cuDNN's batch sizes: inference in chunks, training composed", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    -- an NHWC batch norm (channel dim 4) is (N*H*W, C, 1): 80 images of 32x32 are 81920 rows,
    -- more than one cuDNN inference call takes (65535)
    mf.manual_seed(5)
    local x = mf.randn({ 80, 32, 32, 2 })
    local rm, rv = mf.tensor({ 0.5, -1 }), mf.tensor({ 2, 0.25 })
    local w, b = mf.tensor({ 1.5, 0.5 }), mf.tensor({ -1.5, 2.5 })
    local yc = F.batch_norm(x, rm, rv, w, b, false, nil, nil, 4)
    local yg = F.batch_norm(x:to("cuda"), rm:to("cuda"), rv:to("cuda"), w:to("cuda"), b:to("cuda"),
      false, nil, nil, 4)
    assert.is_true(worst(yc, yg:to("cpu")) <= 1e-6, "inference differs")
    -- training on more rows than cuDNN's batch norm trains on (880801): the composed form, with
    -- gradients and the running statistics as on the CPU
    local n = 880802
    local xs = mf.arange(0, n):float():reshape({ n, 1 }) / n
    local function run(device)
      local xd = xs:to(device):requires_grad()
      local m, v = mf.zeros({ 1 }):to(device), mf.ones({ 1 }):to(device)
      local y = F.batch_norm(xd, m, v, nil, nil, true)
      local g = mf.grad((y * xd):sum(), { xd })[1]
      return y:to("cpu"), g:to("cpu"), m:to("cpu"), v:to("cpu")
    end
    local c1, c2, c3, c4 = run("cpu")
    local g1, g2, g3, g4 = run("cuda:0")
    assert.is_true(worst(c1, g1) <= 1e-4, "y differs")
    assert.is_true(worst(c2, g2) <= 1e-3, "gradient differs")
    assert.is_true(worst(c3, g3) <= 1e-5 and worst(c4, g4) <= 1e-5, "running statistics differ")
  end)

  it("the tutorial's layers in NHWC (channels-last convolutions, Adam) match the CPU", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local function build()
      local conv = { padding = "same", data_format = "NHWC" }
      local pool = { data_format = "NHWC" }
      return nn.Sequential {
        nn.Reshape { 12, 12, 1 },
        nn.Conv2d(1, 4, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
        nn.Conv2d(4, 8, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
        nn.Flatten(), nn.Linear(3 * 3 * 8, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 10),
      }
    end
    local x, y = data(4, { 4, 144 }, 10)
    local adam = function(p) return mf.optim.Adam(p, { lr = 1e-3 }) end
    local lc = train("cpu", build, adam, x, y, 4)
    local lg = train("cuda:0", build, adam, x, y, 4)
    close(lc, lg, 1e-4, "loss at step")
  end)

  it("convolves a batch too large for cuDNN's 32-bit indexing in pieces, as on the CPU", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    -- MOONFLOW_CUDNN_SPLIT_ELEMS lowers the 2^31 elements a piece may have: 7 images of 3x10x10
    -- (12x12 padded) and 4x10x10 run in pieces of 2 (NCHW and NHWC; each gradient summed over
    -- the pieces) and must give what the CPU gives
    local lua = [[
      local F = mf.nn.functional
      mf.cuda.set_tf32(false)
      local worst = 0
      for _, fmt in ipairs { "NCHW", "NHWC" } do
        mf.manual_seed(3)
        local shape = fmt == "NCHW" and { 7, 3, 10, 10 } or { 7, 10, 10, 3 }
        local x, w, b, g = mf.randn(shape), mf.randn { 4, 3, 3, 3 }, mf.randn { 4 }, nil
        local function run(dev)
          local xs, ws, bs = x:detach():to(dev):requires_grad(), w:detach():to(dev):requires_grad(), b:detach():to(dev):requires_grad()
          local y = F.conv2d(xs, ws, bs, { padding = 1, data_format = fmt })
          g = g or mf.randn(y:shape())
          y:backward(g:to(dev))
          return { y:cpu(), xs.grad:cpu(), ws.grad:cpu(), bs.grad:cpu() }
        end
        local c, d = run("cpu"), run("cuda:0")
        for i = 1, 4 do
          local e = ((c[i] - d[i]):abs() / (c[i]:abs() + 1)):max():item()
          worst = math.max(worst, e ~= e and math.huge or e) -- NaN: as bad as it gets
        end
      end
      print(("worst %.3g"):format(worst))
    ]]
    local out, ok = H.sh("MOONFLOW_CUDNN_SPLIT_ELEMS=900 " .. H.q(H.BIN) .. " -e " .. H.q(lua))
    assert.is_true(ok, out)
    local worst = tonumber(out:match("worst (%S+)"))
    assert.is_true(worst ~= nil and worst <= 1e-5, out)
  end)

  it("a Session runs the tutorial's graph (narrower) on the GPU as on the CPU", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local CNN = dofile(H.root .. "/examples/mnist_model.lua")
    local x, y = data(4, { 4, 784 }, 10)
    local function run(device)
      local losses, placed = {}, {}
      mf.Graph():as_default(function()
        mf.manual_seed(11) -- the variables' initial values
        local scope = mf.device(device)
        local xs = mf.placeholder(mf.float32, { -1, 784 }, "x")
        local labels = mf.placeholder(mf.int64, { -1 }, "labels")
        local drop = mf.placeholder(mf.float32, {}, "drop_prob")
        local logits = CNN.inference(xs, drop, { 4, 8, 16 })
        local loss = F.cross_entropy(logits, labels)
        local train_step = mf.train.AdamOptimizer(1e-3):minimize(loss)
        scope:close()
        local sess <close> = mf.Session()
        sess:run(mf.global_variables_initializer())
        for i = 1, 3 do
          mf.manual_seed(200 + i) -- the dropout masks
          losses[i] = sess:run({ train_step, loss }, { [xs] = x, [labels] = y, [drop] = 0.5 })[2]:item()
        end
        for _, v in ipairs(mf.global_variables()) do
          placed[#placed + 1] = sess:variable_value(v):device()
        end
      end)
      return losses, placed
    end
    local lc = run("/cpu:0")
    local lg, placed = run("/gpu:0")
    close(lc, lg, 1e-4, "loss at step")
    assert.is_true(#placed >= 8) -- the weights and biases, and Adam's slots
    for _, d in ipairs(placed) do assert.equal("cuda:0", d) end
  end)

  it("with two GPUs: tensors move between them, mixing them is an error, cuda:1 trains too", function()
    if mf.cuda.device_count() < 2 then
      return pending("skipped: fewer than two GPUs here (the emulator shows two with MOONFLOW_CUDA_EMU_DEVICES=2)")
    end
    local t = mf.tensor { { 1.5, -2 }, { 0.25, 4 } }
    local a, b = t:to("cuda:1"), t:to("/gpu:0")
    assert.equal("cuda:1", a:device())
    H.equal(a:to("cuda:0"):cpu(), t:totable())
    assert.equal("cuda:0", a:to("cuda:0"):device())
    H.err(function() return a + b end, "add: tensors are on different devices (cuda:1 and cuda:0)")
    H.err(function() return mf.matmul(b, a) end, "different devices (cuda:0 and cuda:1)")
    local before = mf.cuda.memory_allocated(1)
    local big = mf.zeros({ 1000 }, { device = "cuda:1" })
    assert.is_true(mf.cuda.memory_allocated(1) >= before + 4000, tostring(big))
    local x, y = data(6, { 6, 2, 8, 8 }, 3)
    local function build()
      return nn.Sequential { nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 3) }
    end
    local sgd = function(p) return mf.optim.SGD(p, { lr = 0.05 }) end
    close(train("cpu", build, sgd, x, y, 3), train("cuda:1", build, sgd, x, y, 3), 1e-4,
      "loss at step")
    local _ <close> = mf.device("cuda:1")
    assert.equal("cuda:1", mf.ones { 2 }:device())
  end)
end)
