-- nn_tour.lua — a short tour of mf.nn: build a small MLP, print it and its summary, train it a
-- few steps on random data (with mf.optim.SGD when it is there, by hand otherwise), switch to
-- evaluation, save and restore its state. Run: moonflow examples/nn_tour.lua
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

mf.manual_seed(0)

-- A classifier of 20 features into 3 classes.
local model = nn.Sequential {
  nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.1),
  nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
  nn.Linear(32, 3),
}
print(model)
print(model:summary { 8, 20 })

-- Random data whose classes depend on the inputs: class = 1 + argmax of three fixed projections.
local x = mf.randn { 256, 20 }
local proj = mf.randn { 20, 3 }
local labels = mf.argmax(mf.matmul(x, proj), 2) -- 1-based class indices (int64)

local lr = 0.1
local opt = mf.optim and mf.optim.SGD(model:parameters(), { lr = lr, momentum = 0.9 })
print(opt and "optimizer: mf.optim.SGD" or "optimizer: plain SGD by hand (mf.optim is not there)")

local function accuracy()
  return mf.no_grad(function()
    local pred = mf.argmax(model(x), 2)
    return mf.eq(pred, labels):sum():item() / x:size(1)
  end)
end

model:train()
for step = 1, 100 do
  local loss = F.cross_entropy(model(x), labels)
  model:zero_grad()
  loss:backward()
  if opt then
    opt:step()
  else
    mf.no_grad(function()
      for _, p in ipairs(model:parameters()) do p:copy_(p - p.grad * lr) end
    end)
  end
  if step == 1 or step % 20 == 0 then
    print(("step %3d  loss %.4f"):format(step, loss:item()))
  end
end

model:evaluate() -- Dropout off, BatchNorm on its running statistics
print(("training accuracy %.1f%%"):format(100 * accuracy()))

-- The state (parameters and BatchNorm's running stats) round-trips through a table of tensors
-- (mf.save(path, model:state_dict()) writes the same table to a file).
local state = model:state_dict()
local copy = nn.Sequential {
  nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.1),
  nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(),
  nn.Linear(32, 3),
}
copy:load_state_dict(state)
copy:evaluate()
local same = mf.no_grad(function() return mf.allclose(copy(x), model(x)) end)
print("restored copy gives the same outputs: " .. tostring(same))
