-- mnist_cnn.lua — the TensorFlow tutorial's deep CNN ("Deep MNIST for experts"), eagerly:
-- conv 5x5x32 "same" + ReLU + 2x2 max pool, conv 5x5x64 + ReLU + pool, fc 3136 -> 1024 + ReLU +
-- dropout 0.5, fc 1024 -> 10; weights truncated normal (stddev 0.1), biases 0.1; Adam, batch 50.
-- The tutorial's run is 20,000 steps at lr 1e-4 (99.2%); `--quick` is one epoch at lr 1e-3 (98.5%+),
-- the rate held for the first half and annealed to 0 over the second (`--anneal 0.5`).
--
--   moonflow examples/mnist_cnn.lua [--quick] [--steps 20000] [--batch 50] [--lr 1e-4] [--anneal 0]
--        [--threads N] [--data DIR] [--seed 1] [--format NCHW|NHWC] [--every 100]
--        [--logdir DIR] [--save model.safetensors] [--device cpu|cuda]
-- NCHW is the default (on the CPU both layouts run at the same speed); --format NHWC builds the
-- tutorial's NHWC layers and prints its shape log (1x784 → 1x28x28x1 → 1x28x28x32 → ... → 1x10).
-- --logdir DIR writes TensorBoard curves every --every steps: DIR/train the batch loss and
-- accuracy, DIR/validation the loss and accuracy on the first 1,000 validation images (the same
-- tags, so TensorBoard overlays the two runs), and every 10th time a histogram of each weight.
-- --save PATH writes the trained weights (model:state_dict()) as safetensors, with __metadata__
-- model=mnist_cnn and format=NCHW|NHWC (its folder is checked before training);
-- examples/predict_digit.lua reads them.
-- --anneal F: over the last fraction F of the steps the learning rate falls from --lr to 0 along a
-- half cosine (0: a constant rate, as in the tutorial).
local mf = require "moonflow"
local F = mf.nn.functional
-- the model's definition, shared with predict_digit.lua (next to this file)
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local CNN = dofile(here .. "mnist_model.lua")
local options = dofile(here .. "mnist_options.lua") -- --quick, --anneal, --device

local opt = mf.flags { quick = false, steps = 20000, batch = 50, lr = 1e-4, threads = 0,
  data = "MNIST_data", seed = 1, format = "NCHW", every = 100, logdir = "", save = "",
  device = "cpu", anneal = 0 }
-- the learning rate of a step (1-based): --lr, then a half cosine to 0 over the annealed steps
local rate = options.schedule(opt)
if opt.threads > 0 then mf.set_num_threads(opt.threads) end
mf.manual_seed(opt.seed)

local mnist = mf.data.mnist.read_data_sets(opt.data, { one_hot = false })
-- --device cpu|cuda|cuda:N: where the model, its optimizer state and the batches live (a GPU the
-- machine lacks is an error saying why); results come back to the CPU to be printed
local device = options.device(opt.device)

-- the model, as the tutorial builds it (NHWC: images are 28x28x1), with its initial values
local model = CNN.init(CNN.build(opt.format))
print(model:summary { 1, 784 })
model:to(device)

local adam = mf.optim.Adam(model:parameters(), { lr = opt.lr })

-- accuracy of the model on a whole data set, in batches, without dropout or gradients
local function evaluate(ds)
  model:evaluate()
  local hits = mf.no_grad(function()
    local n = 0
    for i = 1, ds.num_examples, 1000 do
      local len = math.min(1000, ds.num_examples - i + 1)
      local x, y = ds.images:narrow(1, i, len):to(device), ds.labels:narrow(1, i, len):to(device)
      n = n + mf.eq(mf.argmax(model(x), 2), y):sum():item()
    end
    return n
  end)
  model:train()
  return hits / ds.num_examples
end

-- --save: fail now, not after training, when its folder cannot be written
if opt.save ~= "" then
  local probe = (opt.save:match "^(.*)/[^/]*$" or ".") .. "/.moonflow_save_probe"
  local f, err = io.open(probe, "w")
  if not f then error("--save " .. opt.save .. ": cannot write there (" .. err .. ")", 0) end
  f:close()
  os.remove(probe)
end

-- --logdir: the two FileWriters, and the validation slice's loss and accuracy
local log
if opt.logdir ~= "" then
  local val = mnist.validation
  local n = math.min(1000, val.num_examples)
  log = { train = mf.summary.FileWriter(opt.logdir .. "/train"),
    validation = mf.summary.FileWriter(opt.logdir .. "/validation"),
    images = val.images:narrow(1, 1, n):to(device), labels = val.labels:narrow(1, 1, n):to(device) }
end
local function write_logs(step, loss, acc)
  log.train:add_scalar("loss", loss, step)
  log.train:add_scalar("accuracy", acc, step)
  model:evaluate()
  local vloss, vacc = mf.no_grad(function()
    local logits = model(log.images)
    return F.cross_entropy(logits, log.labels):item(),
      mf.eq(mf.argmax(logits, 2), log.labels):float():mean():item()
  end)
  model:train()
  log.validation:add_scalar("loss", vloss, step)
  log.validation:add_scalar("accuracy", vacc, step)
  if step % (10 * opt.every) == 0 or step == opt.steps then
    for _, np in ipairs(model:named_parameters()) do
      log.train:add_histogram(np[1], np[2]:detach(), step)
    end
  end
  log.train:flush()
  log.validation:flush()
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
  xs, ys = xs:to(device), ys:to(device)
  local logits = model(xs)
  local loss = F.cross_entropy(logits, ys)
  adam:zero_grad()
  loss:backward()
  adam.param_groups[1].lr = rate(step)
  adam:step()
  window_n = window_n + opt.batch
  if step % opt.every == 0 or step == opt.steps then
    local acc = mf.no_grad(function() return mf.eq(mf.argmax(logits, 2), ys):float():mean():item() end)
    local now = mf.clock()
    progress(step, loss:item(), acc, window_n / (now - window_t), step == opt.steps)
    window_t, window_n = now, 0
    if log then write_logs(step, loss:item(), acc); window_t = mf.clock() end
  end
end
local train_s = mf.clock() - t0
print(string.format("trained %d steps in %.1f s (%.0f images/s)", opt.steps, train_s,
  opt.steps * opt.batch / train_s))
if log then
  log.train:close()
  log.validation:close()
end
if opt.save ~= "" then
  mf.save(opt.save, model:state_dict(), { model = "mnist_cnn", format = opt.format,
    input = "N x 784 float32 in [0, 1], light digit on dark, MNIST-centred", steps = opt.steps })
  print("saved the weights to " .. opt.save)
end
print(string.format("test accuracy: %.4f", evaluate(mnist.test)))
