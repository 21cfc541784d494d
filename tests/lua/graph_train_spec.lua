-- graph_train_spec.lua — mf.train optimizers in graphs: gradient descent equals the eager
-- optimizer step for step; the others reduce a tiny least-squares loss; global_step counts.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local function problem()
  mf.manual_seed(3)
  return mf.randn { 8, 3 }, mf.randn { 8, 2 }, mf.randn { 3, 2 }
end

describe("mf.train in graphs", function()
  it("GradientDescent equals the eager SGD", function()
    local X, Y, W0 = problem()
    local W = W0:clone():requires_grad()
    local sgd = mf.optim.SGD({ W }, { lr = 0.1 })
    for _ = 1, 5 do
      sgd:zero_grad()
      mf.reduce_mean(mf.square(mf.matmul(X, W) - Y)):backward()
      sgd:step()
    end
    mf.Graph():as_default(function()
      local x = mf.placeholder("float32", { -1, 3 })
      local y = mf.placeholder("float32", { -1, 2 })
      local w = mf.Variable(W0)
      local loss = mf.reduce_mean(mf.square(mf.matmul(x, w) - y))
      local gs = mf.train.get_or_create_global_step()
      local step = mf.train.GradientDescentOptimizer(0.1):minimize(loss, { global_step = gs })
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      for _ = 1, 5 do
        local r = sess:run({ step, loss }, { [x] = X, [y] = Y })
        assert.equal(2, #r)
      end
      assert.is_true(mf.allclose(sess:run(w), W:detach(), 1e-5, 1e-6))
      H.equal(sess:run(gs), 5)
    end)
  end)

  it("compute_gradients / apply_gradients", function()
    mf.Graph():as_default(function()
      local w = mf.Variable(mf.tensor { 1.0, 2.0 })
      local loss = mf.reduce_sum(w * w)
      local opt = mf.train.GradientDescentOptimizer(0.25)
      local gv = opt:compute_gradients(loss)
      assert.equal(w, gv[1][2])
      local step = opt:apply_gradients(gv)
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      H.equal(sess:run(gv[1][1]), { 2, 4 })
      sess:run(step)
      H.equal(sess:run(w), { 0.5, 1.0 })
    end)
  end)

  for _, cls in ipairs { "MomentumOptimizer", "AdamOptimizer", "RMSPropOptimizer", "AdadeltaOptimizer",
    "AdagradOptimizer" } do
    it(cls .. " reduces the loss", function()
      local X, Y, W0 = problem()
      mf.Graph():as_default(function()
        local w = mf.Variable(W0)
        local loss = mf.reduce_mean(mf.square(mf.matmul(X, w) - Y))
        local step = mf.train[cls](cls == "AdadeltaOptimizer" and 1.0 or 0.05, 0.9):minimize(loss)
        local sess <close> = mf.Session()
        sess:run(mf.global_variables_initializer())
        local l0 = sess:run(loss):item()
        for _ = 1, 20 do sess:run(step) end
        assert.is_true(sess:run(loss):item() < l0)
      end)
    end)
  end

  it("Adam follows TensorFlow 1's update", function()
    mf.Graph():as_default(function()
      local w = mf.Variable(mf.tensor { 1.0 })
      local step = mf.train.AdamOptimizer(0.1):minimize(mf.reduce_sum(w * 3))
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      sess:run(step)
      -- first step: lr_t = 0.1 * sqrt(1 - 0.999) / (1 - 0.9); m = 0.3, v = 0.009
      local lr_t = 0.1 * math.sqrt(0.001) / 0.1
      H.equal(sess:run(w), { 1 - lr_t * 0.3 / (math.sqrt(0.009) + 1e-8) }, 1e-5)
    end)
  end)

  it("trains nn layers' parameters used in a graph", function()
    mf.manual_seed(1)
    mf.Graph():as_default(function()
      local lin = mf.nn.Linear(3, 1)
      local x = mf.placeholder("float32", { -1, 3 })
      local loss = mf.reduce_mean(mf.square(lin(x)))
      local step = mf.train.GradientDescentOptimizer(0.1):minimize(loss)
      local sess <close> = mf.Session()
      local X = mf.randn { 4, 3 }
      local l0 = sess:run(loss, { [x] = X }):item()
      for _ = 1, 10 do sess:run(step, { [x] = X }) end
      assert.is_true(sess:run(loss, { [x] = X }):item() < l0)
    end)
  end)
end)
