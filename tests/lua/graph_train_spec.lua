-- graph_train_spec.lua — mf.train optimizers in graphs: gradient descent equals the eager
-- optimizer step for step; every optimizer matches TensorFlow 1's update rules (written out below
-- in double precision) over four steps, and has TensorFlow 1's defaults; global_step counts.
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

  -- TensorFlow 1's updates (tensorflow/core/kernels/training_ops.cc, the Apply* functors), one
  -- element at a time in double precision: the references the optimizers must match. Each takes
  -- the element's variable w, gradient g, state s (a table, empty at first) and step t >= 1.
  local sqrt = math.sqrt
  local TF1 = {
    { "GradientDescentOptimizer", { 0.1 }, function(w, g) return w - 0.1 * g end },
    { "MomentumOptimizer", { 0.1, 0.9 }, function(w, g, s)
      s.a = 0.9 * (s.a or 0) + g
      return w - 0.1 * s.a
    end },
    { "MomentumOptimizer", { 0.1, 0.9, { use_nesterov = true } }, function(w, g, s)
      s.a = 0.9 * (s.a or 0) + g
      return w - 0.1 * g - 0.1 * 0.9 * s.a
    end },
    { "AdamOptimizer", { 0.1 }, function(w, g, s, t)
      s.m = 0.9 * (s.m or 0) + 0.1 * g
      s.v = 0.999 * (s.v or 0) + 0.001 * g * g
      local lr_t = 0.1 * sqrt(1 - 0.999 ^ t) / (1 - 0.9 ^ t)
      return w - lr_t * s.m / (sqrt(s.v) + 1e-8)
    end },
    { "AdamOptimizer", { 0.05, 0.5, 0.9, 0.1 }, function(w, g, s, t) -- positional beta1, beta2, eps
      s.m = 0.5 * (s.m or 0) + 0.5 * g
      s.v = 0.9 * (s.v or 0) + 0.1 * g * g
      local lr_t = 0.05 * sqrt(1 - 0.9 ^ t) / (1 - 0.5 ^ t)
      return w - lr_t * s.m / (sqrt(s.v) + 0.1)
    end },
    { "RMSPropOptimizer", { 0.01 }, function(w, g, s) -- ms starts at 1, epsilon 1e-10 inside
      s.ms = 0.9 * (s.ms or 1) + 0.1 * g * g
      return w - 0.01 * g / sqrt(s.ms + 1e-10)
    end },
    { "RMSPropOptimizer", { 0.01, { decay = 0.8, epsilon = 0.25 } }, function(w, g, s)
      s.ms = 0.8 * (s.ms or 1) + 0.2 * g * g
      return w - 0.01 * g / sqrt(s.ms + 0.25)
    end },
    { "RMSPropOptimizer", { 0.01, { momentum = 0.5, centered = true, epsilon = 0.1 } },
      function(w, g, s)
        s.ms = 0.9 * (s.ms or 1) + 0.1 * g * g
        s.mg = 0.9 * (s.mg or 0) + 0.1 * g
        s.mom = 0.5 * (s.mom or 0) + 0.01 * g / sqrt(s.ms - s.mg * s.mg + 0.1)
        return w - s.mom
      end },
    { "AdadeltaOptimizer", { 1.0, { rho = 0.9, epsilon = 1e-3 } }, function(w, g, s)
      s.acc = 0.9 * (s.acc or 0) + 0.1 * g * g
      local update = sqrt((s.upd or 0) + 1e-3) / sqrt(s.acc + 1e-3) * g
      s.upd = 0.9 * (s.upd or 0) + 0.1 * update * update
      return w - 1.0 * update
    end },
    { "AdadeltaOptimizer", { 100 }, function(w, g, s) -- rho 0.95, epsilon 1e-8
      s.acc = 0.95 * (s.acc or 0) + 0.05 * g * g
      local update = sqrt((s.upd or 0) + 1e-8) / sqrt(s.acc + 1e-8) * g
      s.upd = 0.95 * (s.upd or 0) + 0.05 * update * update
      return w - 100 * update
    end },
    { "AdagradOptimizer", { 0.1 }, function(w, g, s) -- accumulator from 0.1, no epsilon
      s.acc = (s.acc or 0.1) + g * g
      return w - 0.1 * g / sqrt(s.acc)
    end },
    { "AdagradOptimizer", { 0.2, 0.5 }, function(w, g, s)
      s.acc = (s.acc or 0.5) + g * g
      return w - 0.2 * g / sqrt(s.acc)
    end },
  }

  for _, case in ipairs(TF1) do
    local cls, args, update = case[1], case[2], case[3]
    it(("%s(%s) follows TensorFlow 1's update"):format(cls, #args), function()
      -- loss = sum((w - target)^2) / 2, so the gradient is w - target
      local w0, target = { 1.0, -2.0, 0.5 }, { 0.0, 1.0, 0.25 }
      local want, state = { table.unpack(w0) }, { {}, {}, {} }
      local got = {}
      mf.Graph():as_default(function()
        local w = mf.Variable(mf.tensor(w0))
        local loss = mf.reduce_sum(mf.square(w - mf.tensor(target))) * 0.5
        local step = mf.train[cls](table.unpack(args)):minimize(loss)
        local sess <close> = mf.Session()
        sess:run(mf.global_variables_initializer())
        for t = 1, 4 do
          sess:run(step)
          for i = 1, 3 do want[i] = update(want[i], want[i] - target[i], state[i], t) end
          got[t] = sess:run(w):totable()
          for i = 1, 3 do
            assert(math.abs(got[t][i] - want[i]) <= 2e-6 * (1 + math.abs(want[i])),
              ("step %d, element %d: got %.9g, TensorFlow 1 gives %.9g"):format(t, i, got[t][i], want[i]))
          end
        end
      end)
      assert.are_not.same(got[3], got[4]) -- it moves
    end)
  end

  it("take a learning rate fed per run (a float scalar placeholder)", function()
    mf.Graph():as_default(function()
      local w = mf.Variable(mf.tensor { 1.0, 2.0 })
      local lr = mf.placeholder("float32", {}, "learning_rate")
      local opt = mf.train.GradientDescentOptimizer(lr)
      assert.equal("mf.train.GradientDescent(lr=learning_rate:0)", tostring(opt))
      local step = opt:minimize(mf.reduce_sum(w * w)) -- gradient 2w
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      sess:run(step, { [lr] = 0.25 }) -- w - 0.5 w
      H.equal(sess:run(w), { 0.5, 1.0 })
      sess:run(step, { [lr] = 0 })
      H.equal(sess:run(w), { 0.5, 1.0 })
      sess:run(step, { [lr] = 0.125 }) -- w - 0.25 w
      H.equal(sess:run(w), { 0.375, 0.75 })
      H.err(function() sess:run(step) end, "placeholder tensor 'learning_rate'")
      H.err(function() sess:run(step, { [lr] = -1 }) end, "must be a number >= 0")
      local adam = mf.train.AdamOptimizer(lr):minimize(mf.reduce_sum(w * 3))
      sess:run(adam, { [lr] = 0.1 }) -- first Adam step: lr_t * m / sqrt(v) = 0.1 * sqrt(0.001)/0.1 * 0.3/sqrt(0.009)
      H.equal(sess:run(w), { 0.375 - 0.1, 0.75 - 0.1 }, 1e-5)
      H.err(function() mf.train.AdamOptimizer(mf.placeholder("float32", { 2 })) end, "float scalar")
      H.err(function() mf.train.AdamOptimizer(mf.placeholder("int64", {})) end, "float scalar")
    end)
  end)

  it("have TensorFlow 1's defaults", function()
    local rms = mf.train.RMSPropOptimizer(0.1)
    assert.same({ 0.9, 0, 1e-10, false }, { rms.decay, rms.momentum, rms.epsilon, rms.centered })
    local adam = mf.train.AdamOptimizer()
    assert.same({ 0.001, 0.9, 0.999, 1e-8 }, { adam.lr, adam.beta1, adam.beta2, adam.epsilon })
    local ada = mf.train.AdadeltaOptimizer()
    assert.same({ 0.001, 0.95, 1e-8 }, { ada.lr, ada.rho, ada.epsilon })
    assert.equal(0.1, mf.train.AdagradOptimizer(0.1).initial_accumulator_value)
    assert.is_false(mf.train.MomentumOptimizer(0.1, 0.9).nesterov)
    H.err(function() mf.train.AdagradOptimizer(0.1, 0) end, "initial_accumulator_value")
    H.err(function() mf.train.MomentumOptimizer(0.1) end, "momentum must be a number")
    H.err(function() mf.train.RMSPropOptimizer() end, "learning_rate")
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
