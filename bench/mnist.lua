-- mnist.lua — moonflow's side of the MNIST benchmarks against PyTorch (bench/torch_mnist.py is
-- the peer, bench/mnist.py runs both): the tutorial's softmax regression (training time of 1000
-- steps of 100), the CNN's training throughput (images/s at batch 50, Adam) and its inference
-- throughput (batch 1000). Same models, data, batches and timing rules as the peer. Prints one
-- JSON line.
--
--   moonflow bench/mnist.lua softmax|cnn|infer [--threads N] [--steps S] [--batch B]
--                                                [--warmup W] [--format NCHW|NHWC] [--accuracy]
local mf = require "moonflow"
local F = mf.nn.functional

local what = arg[1]
assert(what == "softmax" or what == "cnn" or what == "infer", "usage: mnist.lua softmax|cnn|infer [flags]")
local opt = mf.flags({ threads = 0, steps = 0, batch = 0, warmup = 5, lr = 1e-4, format = "NCHW",
  accuracy = false }, { table.unpack(arg, 2) })
if opt.threads > 0 then mf.set_num_threads(opt.threads) end
opt.steps = opt.steps > 0 and opt.steps or ({ softmax = 1000, cnn = 200, infer = 0 })[what]
opt.batch = opt.batch > 0 and opt.batch or ({ softmax = 100, cnn = 50, infer = 1000 })[what]
mf.manual_seed(1)

local data = mf.data.mnist.read_data_sets(os.getenv("MOONFLOW_DATA") or "MNIST_data",
  { one_hot = false, quiet = true })

-- the tutorial's network and initial values, defined once in examples/mnist_model.lua
local CNN = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../examples/mnist_model.lua")
local function cnn() return CNN.init(CNN.build(opt.format)) end

local function accuracy(model, ds)
  model:evaluate()
  local hits = mf.no_grad(function()
    local n = 0
    for i = 1, ds.num_examples, 1000 do
      local len = math.min(1000, ds.num_examples - i + 1)
      n = n + mf.eq(mf.argmax(model(ds.images:narrow(1, i, len)), 2), ds.labels:narrow(1, i, len)):sum():item()
    end
    return n
  end)
  model:train()
  return hits / ds.num_examples
end

local res = { what = what, threads = mf.get_num_threads(), steps = opt.steps, batch = opt.batch }
if what == "softmax" then
  local W = mf.zeros({ 784, 10 }):requires_grad()
  local b = mf.zeros({ 10 }):requires_grad()
  local sgd = mf.optim.SGD({ W, b }, { lr = 0.5 })
  local t0 = mf.clock()
  for _ = 1, opt.steps do
    local xs, ys = data.train:next_batch(opt.batch)
    local loss = F.cross_entropy(mf.matmul(xs, W) + b, ys)
    sgd:zero_grad()
    loss:backward()
    sgd:step()
  end
  res.train_s = mf.clock() - t0
  res.accuracy = mf.no_grad(function()
    return mf.eq(mf.argmax(mf.matmul(data.test.images, W) + b, 2), data.test.labels):float():mean():item()
  end)
elseif what == "cnn" then
  local model = cnn()
  local adam = mf.optim.Adam(model:parameters(), { lr = opt.lr })
  local function step()
    local xs, ys = data.train:next_batch(opt.batch)
    local loss = F.cross_entropy(model(xs), ys)
    adam:zero_grad()
    loss:backward()
    adam:step()
    return loss
  end
  for _ = 1, opt.warmup do step() end
  local t0, loss = mf.clock(), nil
  for _ = 1, opt.steps do loss = step() end
  local dt = mf.clock() - t0
  res.train_images_per_s, res.train_s, res.loss = opt.steps * opt.batch / dt, dt, loss:item()
  if opt.accuracy then res.accuracy = accuracy(model, data.test) end
else
  local model = cnn()
  model:evaluate()
  local x = data.test.images
  mf.no_grad(function()
    model(x:narrow(1, 1, opt.batch)) -- warm-up
    local t0, n = mf.clock(), 0
    for i = 1, x:size(1) - opt.batch + 1, opt.batch do
      model(x:narrow(1, i, opt.batch))
      n = n + opt.batch
    end
    res.infer_images_per_s = n / (mf.clock() - t0)
  end)
end

-- peak resident memory of this process (Linux), in MiB
local f = io.open("/proc/self/status")
if f then
  for line in f:lines() do
    local kb = line:match "^VmHWM:%s*(%d+)"
    if kb then res.peak_rss_mb = tonumber(kb) / 1024 end
  end
  f:close()
end
res.peer = "moonflow " .. mf.version

local parts = {}
for k, v in pairs(res) do
  parts[#parts + 1] = string.format("%q: %s", k, type(v) == "string" and string.format("%q", v) or tostring(v))
end
table.sort(parts)
print("{" .. table.concat(parts, ", ") .. "}")
