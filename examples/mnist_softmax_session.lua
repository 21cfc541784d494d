-- mnist_softmax_session.lua — the TensorFlow tutorial's softmax regression ("MNIST for ML
-- beginners") the TensorFlow-1 way: placeholders, variables, variable scopes, a session and feeds.
-- y = x W + b with W and b zero-initialised, softmax cross entropy against one-hot labels,
-- gradient descent with rate 0.5, 1000 steps of 100 images. About 92% test accuracy.
--
--   moonflow examples/mnist_softmax_session.lua [--data DIR] [--steps 1000] [--batch 100]
--                                               [--lr 0.5] [--threads N] [--seed 1]
--                                               [--logdir DIR] [--every 100] [--device cpu|cuda]
-- --logdir DIR writes TensorBoard curves every --every steps (fetched values): DIR/train the
-- batch's loss and accuracy, DIR/validation those of the 5,000 validation images (the same tags,
-- so TensorBoard overlays the two runs), and every 10th time a histogram of each variable; the
-- graph goes to DIR/train too (TensorBoard's graph tab).
local mf = require "moonflow"
-- --device's check and --logdir's writers, shared with the other MNIST examples (next to this file)
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local options = dofile(here .. "mnist_options.lua")
local session_logs = dofile(here .. "session_logs.lua")

local opt = mf.flags { data = "MNIST_data", steps = 1000, batch = 100, lr = 0.5, threads = 0,
  seed = 1, logdir = "", every = 100, device = "cpu" }
mf.manual_seed(opt.seed)

local mnist = mf.data.mnist.read_data_sets(opt.data, { one_hot = true })
-- --device cpu|cuda|cuda:N: the graph's nodes are placed there (variables, optimizer slots and
-- the fed batches live there; a GPU the machine lacks is an error saying why); fetched results
-- come back to the CPU
local device = options.device(opt.device)

-- the graph, placed on --device
local device_scope = mf.device(device)
local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
local y_ = mf.placeholder(mf.float32, { -1, 10 }, "y_")
local y
mf.variable_scope("inference", function()
  local W = mf.Variable(mf.zeros { 784, 10 }, { name = "W" })
  local b = mf.Variable(mf.zeros { 10 }, { name = "b" })
  y = mf.matmul(x, W) + b
end)
local cross_entropy
mf.variable_scope("loss", function()
  cross_entropy = mf.reduce_mean(mf.nn.softmax_cross_entropy_with_logits { labels = y_, logits = y })
end)
local accuracy
mf.variable_scope("accuracy", function()
  local correct = mf.equal(mf.argmax(y, 2), mf.argmax(y_, 2))
  accuracy = mf.reduce_mean(mf.cast(correct, mf.float32))
end)
local train_step = mf.train.GradientDescentOptimizer(opt.lr):minimize(cross_entropy)
device_scope:close()
print(y)
mf.print_all_variables(true)

local sess <close> = mf.Session { config = { intra_op_parallelism_threads = opt.threads } }
sess:run(mf.global_variables_initializer())

-- --logdir: the batch's loss and accuracy (fetched with its step), the validation set's
local log = session_logs.open(opt, sess, { loss = cross_entropy, accuracy = accuracy,
  feed = { [x] = mnist.validation.images, [y_] = mnist.validation.labels } })

local t0 = mf.clock()
for step = 1, opt.steps do
  local xs, ys = mnist.train:next_batch(opt.batch)
  if log and (step % opt.every == 0 or step == opt.steps) then
    local r = sess:run({ train_step, cross_entropy, accuracy }, { [x] = xs, [y_] = ys })
    log:write(step, r[2], r[3])
  else
    sess:run(train_step, { [x] = xs, [y_] = ys })
  end
end
if log then log:close() end
local train_s = mf.clock() - t0
io.stderr:write(string.format("training: %d steps in %.3f s\n", opt.steps, train_s))
local acc = sess:run(accuracy, { [x] = mnist.test.images, [y_] = mnist.test.labels })
print(string.format("test accuracy: %.4f", acc:item()))
