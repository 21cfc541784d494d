-- mnist_cnn_session.lua — the TensorFlow tutorial's deep CNN ("Deep MNIST for experts") the
-- TensorFlow-1 way: placeholders (images, labels, the dropout probability), variables in variable
-- scopes, a session and feeds. conv 5x5x32 "same" + ReLU + 2x2 max pool, conv 5x5x64 + ReLU + pool,
-- fc 3136 -> 1024 + ReLU + dropout 0.5, fc 1024 -> 10; weights truncated normal (stddev 0.1),
-- biases 0.1; Adam, batch 50. 20,000 steps at lr 1e-4 is the tutorial's run (99.2%); `--quick`
-- is one epoch at lr 1e-3 (98.5%+), the rate held for the first half and annealed to 0 over the
-- second (`--anneal 0.5`), as examples/mnist_cnn.lua --quick. Images are NHWC (28x28x1); conv
-- weights are moonflow's (out, in, kh, kw).
--
--   moonflow examples/mnist_cnn_session.lua [--quick] [--steps 20000] [--batch 50] [--lr 1e-4]
--        [--anneal 0] [--threads N] [--data DIR] [--seed 1] [--every 100] [--logdir DIR]
--        [--device cpu|cuda]
-- --anneal F: over the last fraction F of the steps the learning rate falls from --lr to 0 along a
-- half cosine (0: a constant rate, as in the tutorial); the rate is a placeholder fed at each step.
-- --logdir DIR writes TensorBoard curves every --every steps (fetched values): DIR/train the batch
-- loss and accuracy, DIR/validation those of the first 1,000 validation images (the same tags, so
-- TensorBoard overlays the two runs), and every 10th time a histogram of each variable; the graph
-- goes to DIR/train too (TensorBoard's graph tab).
local mf = require "moonflow"
local F = mf.nn.functional
-- the network (shared with mnist_cnn.lua) and the shared flags, next to this file
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local CNN = dofile(here .. "mnist_model.lua")
local options = dofile(here .. "mnist_options.lua") -- --quick, --anneal, --device
local session_logs = dofile(here .. "session_logs.lua") -- --logdir

local opt = mf.flags { quick = false, steps = 20000, batch = 50, lr = 1e-4, threads = 0,
  data = "MNIST_data", seed = 1, every = 100, logdir = "", device = "cpu", anneal = 0 }
-- the learning rate of a step (1-based): --lr, then a half cosine to 0 over the annealed steps
local rate = options.schedule(opt)
mf.manual_seed(opt.seed)

local mnist = mf.data.mnist.read_data_sets(opt.data, { one_hot = false })
-- --device cpu|cuda|cuda:N: the graph's nodes are placed there (variables, optimizer slots and
-- the fed batches live there; a GPU the machine lacks is an error saying why); fetched results
-- come back to the CPU
local device = options.device(opt.device)

-- the graph, placed on --device
local device_scope = mf.device(device)
local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
local labels = mf.placeholder(mf.int64, { -1 }, "labels") -- 1-based classes
local drop = mf.placeholder(mf.float32, {}, "drop_prob")
local logits = CNN.inference(x, drop) -- in variable scope "inference"
local loss
mf.variable_scope("loss", function() loss = F.cross_entropy(logits, labels) end)
local accuracy, hits
mf.variable_scope("accuracy", function()
  local correct = mf.cast(mf.equal(mf.argmax(logits, 2), labels), mf.float32)
  accuracy, hits = mf.reduce_mean(correct), mf.reduce_sum(correct)
end)
local learning_rate = mf.placeholder(mf.float32, {}, "learning_rate")
local train_step = mf.train.AdamOptimizer(learning_rate):minimize(loss)
device_scope:close()
print(logits)
mf.print_all_variables(true)

local sess <close> = mf.Session { config = { intra_op_parallelism_threads = opt.threads,
  allow_soft_placement = true } }
sess:run(mf.global_variables_initializer())

-- accuracy on a whole data set, in batches of 1000, without dropout
local function evaluate(ds)
  local n = 0
  for i = 1, ds.num_examples, 1000 do
    local len = math.min(1000, ds.num_examples - i + 1)
    n = n + sess:run(hits, { [x] = ds.images:narrow(1, i, len), [labels] = ds.labels:narrow(1, i, len),
      [drop] = 0 }):item()
  end
  return n / ds.num_examples
end

-- --logdir: the two FileWriters; the validation slice is fed without dropout
local log
if opt.logdir ~= "" then
  local val = mnist.validation
  local n = math.min(1000, val.num_examples)
  log = session_logs.open(opt, sess, { loss = loss, accuracy = accuracy,
    feed = { [x] = val.images:narrow(1, 1, n), [labels] = val.labels:narrow(1, 1, n), [drop] = 0 } })
end

local t0 = mf.clock()
for step = 1, opt.steps do
  local xs, ys = mnist.train:next_batch(opt.batch)
  local r = sess:run({ train_step, loss, accuracy }, { [x] = xs, [labels] = ys, [drop] = 0.5,
    [learning_rate] = rate(step) })
  if step % opt.every == 0 or step == opt.steps then
    print(string.format("step %d/%d  loss %.4f  batch accuracy %.3f", step, opt.steps, r[2]:item(),
      r[3]:item()))
    if log then log:write(step, r[2], r[3]) end
  end
end
if log then log:close() end
local train_s = mf.clock() - t0
print(string.format("trained %d steps in %.1f s (%.0f images/s)", opt.steps, train_s,
  opt.steps * opt.batch / train_s))
print(string.format("test accuracy: %.4f", evaluate(mnist.test)))
