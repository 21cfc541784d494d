-- mnist_cnn.lua — the TensorFlow tutorial's deep CNN ("Deep MNIST for experts"), eagerly:
-- conv 5x5x32 "same" + ReLU + 2x2 max pool, conv 5x5x64 + ReLU + pool, fc 3136 -> 1024 + ReLU +
-- dropout 0.5, fc 1024 -> 10; weights truncated normal (stddev 0.1), biases 0.1; Adam, batch 50.
-- The tutorial's run is 20,000 steps at lr 1e-4 (99.2%); `--quick` is one epoch at lr 1e-3 (98.5%+).
--
--   moonflow examples/mnist_cnn.lua [--quick] [--steps 20000] [--batch 50] [--lr 1e-4]
--        [--threads N] [--data DIR] [--seed 1] [--format NCHW|NHWC] [--every 100]
-- NCHW (the default) is the fast layout here; --format NHWC builds the tutorial's NHWC layers and
-- prints its shape log (1x784 → 1x28x28x1 → 1x28x28x32 → ... → 1x10).
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

local opt = mf.flags { quick = false, steps = 20000, batch = 50, lr = 1e-4, threads = 0,
  data = "MNIST_data", seed = 1, format = "NCHW", every = 100 }
if opt.quick then
  opt.steps = math.ceil(55000 / opt.batch) -- one epoch
  opt.lr = 1e-3
end
if opt.threads > 0 then mf.set_num_threads(opt.threads) end
mf.manual_seed(opt.seed)

local mnist = mf.data.mnist.read_data_sets(opt.data, { one_hot = false })

-- the model, as the tutorial builds it (NHWC: images are 28x28x1)
local nhwc = opt.format == "NHWC"
local conv = { padding = "same", data_format = opt.format }
local pool = { data_format = opt.format }
local model = nn.Sequential {
  nn.Reshape(nhwc and { 28, 28, 1 } or { 1, 28, 28 }),
  nn.Conv2d(1, 32, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
  nn.Conv2d(32, 64, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
  nn.Flatten(),
  nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
  nn.Linear(1024, 10),
}
mf.no_grad(function()
  for _, p in ipairs(model:parameters()) do
    if p:dim() > 1 then nn.init.trunc_normal_(p, 0, 0.1) else nn.init.constant_(p, 0.1) end
  end
end)
print(model:summary { 1, 784 })

local adam = mf.optim.Adam(model:parameters(), { lr = opt.lr })

-- accuracy of the model on a whole data set, in batches, without dropout or gradients
local function evaluate(ds)
  model:evaluate()
  local hits = mf.no_grad(function()
    local n = 0
    for i = 1, ds.num_examples, 1000 do
      local len = math.min(1000, ds.num_examples - i + 1)
      local x, y = ds.images:narrow(1, i, len), ds.labels:narrow(1, i, len)
      n = n + mf.eq(mf.argmax(model(x), 2), y):sum():item()
    end
    return n
  end)
  model:train()
  return hits / ds.num_examples
end

local tty = os.execute "test -t 1" == true
local function progress(step, loss, acc, ips, final)
  local width = 30
  local filled = math.floor(width * step / opt.steps)
  local line = string.format("[%s%s] step %d/%d  loss %.4f  batch accuracy %.3f  %.0f images/s",
    string.rep("=", filled), string.rep(" ", width - filled), step, opt.steps, loss, acc, ips)
  if tty then
    io.stdout:write("\r", line, final and "\n" or "")
    io.stdout:flush()
  else
    print(line)
  end
end

local t0, window_t, window_n = mf.clock(), mf.clock(), 0
for step = 1, opt.steps do
  local xs, ys = mnist.train:next_batch(opt.batch)
  local logits = model(xs)
  local loss = F.cross_entropy(logits, ys)
  adam:zero_grad()
  loss:backward()
  adam:step()
  window_n = window_n + opt.batch
  if step % opt.every == 0 or step == opt.steps then
    local acc = mf.no_grad(function() return mf.eq(mf.argmax(logits, 2), ys):float():mean():item() end)
    local now = mf.clock()
    progress(step, loss:item(), acc, window_n / (now - window_t), step == opt.steps)
    window_t, window_n = now, 0
  end
end
local train_s = mf.clock() - t0
print(string.format("trained %d steps in %.1f s (%.0f images/s)", opt.steps, train_s,
  opt.steps * opt.batch / train_s))
print(string.format("test accuracy: %.4f", evaluate(mnist.test)))
