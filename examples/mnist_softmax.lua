-- mnist_softmax.lua — the TensorFlow tutorial's softmax regression ("MNIST for ML beginners"),
-- eagerly: y = x W + b with W and b zero-initialised, softmax cross entropy against one-hot
-- labels, gradient descent with rate 0.5, 1000 steps of 100 images. About 92% test accuracy.
--
--   moonflow examples/mnist_softmax.lua [--data DIR] [--steps 1000] [--batch 100] [--lr 0.5]
--                                       [--threads N] [--seed 1] [--logdir DIR] [--every 100]
--                                       [--device cpu|cuda]
-- --logdir DIR writes TensorBoard curves every --every steps: DIR/train the batch's loss and
-- accuracy, DIR/validation those of the 5,000 validation images (the same tags, so TensorBoard
-- overlays the two runs), and every 10th time histograms of W and b.
local mf = require "moonflow"
-- --device's check, shared with the other MNIST examples (next to this file)
local options = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "mnist_options.lua")
local F = mf.nn.functional

local opt = mf.flags { data = "MNIST_data", steps = 1000, batch = 100, lr = 0.5, threads = 0,
  seed = 1, logdir = "", every = 100, device = "cpu" }
if opt.threads > 0 then mf.set_num_threads(opt.threads) end
mf.manual_seed(opt.seed)

local mnist = mf.data.mnist.read_data_sets(opt.data, { one_hot = true })
-- --device cpu|cuda|cuda:N: where the model, its optimizer state and the batches live (a GPU the
-- machine lacks is an error saying why); results come back to the CPU to be printed
local device = options.device(opt.device)

-- the model
local W = mf.zeros({ 784, 10 }, { device = device }):requires_grad()
local b = mf.zeros({ 10 }, { device = device }):requires_grad()
local sgd = mf.optim.SGD({ W, b }, { lr = opt.lr })

-- --logdir: loss and accuracy of a batch (its logits y) and of the validation set
local log
if opt.logdir ~= "" then
  log = { train = mf.summary.FileWriter(opt.logdir .. "/train"),
    validation = mf.summary.FileWriter(opt.logdir .. "/validation") }
end
local function write_logs(step, loss, y, ys)
  mf.no_grad(function()
    local function accuracy(logits, labels)
      local correct = mf.equal(mf.argmax(logits, 2), mf.argmax(labels, 2))
      return mf.reduce_mean(mf.cast(correct, "float32"))
    end
    log.train:add_scalar("loss", loss, step)
    log.train:add_scalar("accuracy", accuracy(y, ys), step)
    local vx, vys = mnist.validation.images:to(device), mnist.validation.labels:to(device)
    local vy = mf.matmul(vx, W) + b
    log.validation:add_scalar("loss", F.cross_entropy(vy, vys), step)
    log.validation:add_scalar("accuracy", accuracy(vy, vys), step)
    if step % (10 * opt.every) == 0 or step == opt.steps then
      log.train:add_histogram("W", W:detach(), step)
      log.train:add_histogram("b", b:detach(), step)
    end
  end)
end

local t0 = mf.clock()
for step = 1, opt.steps do
  local xs, ys = mnist.train:next_batch(opt.batch)
  xs, ys = xs:to(device), ys:to(device)
  local y = mf.matmul(xs, W) + b
  local loss = F.cross_entropy(y, ys) -- softmax cross entropy with one-hot labels, batch mean
  sgd:zero_grad()
  loss:backward()
  sgd:step()
  if log and (step % opt.every == 0 or step == opt.steps) then write_logs(step, loss, y, ys) end
end
if log then
  log.train:close()
  log.validation:close()
end
local train_s = mf.clock() - t0

local correct = mf.no_grad(function()
  local y = mf.matmul(mnist.test.images:to(device), W) + b
  return mf.equal(mf.argmax(y, 2), mf.argmax(mnist.test.labels:to(device), 2))
end)
local accuracy = mf.reduce_mean(mf.cast(correct, "float32")):item()
io.stderr:write(string.format("training: %d steps in %.3f s\n", opt.steps, train_s))
print(string.format("test accuracy: %.4f", accuracy))
