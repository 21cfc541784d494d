-- session.lua — the cost of a graph/session training step against the same eager step (issue 4:
-- a session run of a training step costs at most 1.1x the eager step), and the session's fixed
-- overhead per run (a run that fetches one small constant-like node). Same model, data and batches
-- on both sides: the tutorial's softmax regression (SGD 0.5, batches of 100), and the tutorial CNN
-- (Adam 1e-4, batch 50, NCHW). The two sides alternate, round by round (--rounds), and each keeps
-- its best round, so that a change of load during the run weighs on both alike. Writes the
-- `session` section of bench/RESULTS.md unless --quick.
--
--   moonflow bench/session.lua [--steps 100] [--cnn_steps 40] [--rounds 15] [--threads 0] [--quick]
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

local opt = mf.flags { steps = 100, cnn_steps = 40, rounds = 15, threads = 0, quick = false }
if opt.quick then opt.steps, opt.cnn_steps, opt.rounds = 20, 3, 1 end
if opt.threads > 0 then mf.set_num_threads(opt.threads) end
local data = mf.data.mnist.read_data_sets(os.getenv("MOONFLOW_DATA") or "MNIST_data",
  { one_hot = true, quiet = true })

-- the same batches for both sides
mf.manual_seed(1)
local batches = {}
for i = 1, math.max(opt.steps, opt.cnn_steps) do batches[i] = { data.train:next_batch(100) } end

-- Runs the functions of sides in turn, rounds times; the best time of each side, in seconds.
local function alternate(rounds, sides)
  local best = {}
  for r = 1, rounds do
    for i, fn in ipairs(sides) do
      local t0 = mf.clock()
      fn()
      local t = mf.clock() - t0
      best[i] = r == 1 and t or math.min(best[i], t)
    end
  end
  return table.unpack(best, 1, #sides)
end

-- ---- softmax regression -------------------------------------------------------------------
local function eager_softmax()
  local W = mf.zeros({ 784, 10 }):requires_grad()
  local b = mf.zeros({ 10 }):requires_grad()
  local sgd = mf.optim.SGD({ W, b }, { lr = 0.5 })
  return function()
    for i = 1, opt.steps do
      local xs, ys = batches[i][1], batches[i][2]
      local loss = F.cross_entropy(mf.matmul(xs, W) + b, ys)
      sgd:zero_grad()
      loss:backward()
      sgd:step()
    end
  end
end

local function session_softmax()
  local g = mf.Graph()
  local run, overhead
  g:as_default(function()
    local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
    local y_ = mf.placeholder(mf.float32, { -1, 10 }, "y_")
    local W = mf.Variable(mf.zeros { 784, 10 }, { name = "W" })
    local b = mf.Variable(mf.zeros { 10 }, { name = "b" })
    local y = mf.matmul(x, W) + b
    local loss = mf.reduce_mean(mf.nn.softmax_cross_entropy_with_logits { labels = y_, logits = y })
    local train = mf.train.GradientDescentOptimizer(0.5):minimize(loss)
    local sess = mf.Session { graph = g }
    sess:run(mf.global_variables_initializer())
    run = function()
      for i = 1, opt.steps do sess:run(train, { [x] = batches[i][1], [y_] = batches[i][2] }) end
    end
    local one = mf.identity and mf.identity(b) or b * 1
    overhead = function()
      for _ = 1, opt.steps do sess:run(one) end
    end
  end)
  return run, overhead
end

-- ---- CNN ------------------------------------------------------------------------------------
local function cnn()
  local m = nn.Sequential {
    nn.Reshape { 1, 28, 28 },
    nn.Conv2d(1, 32, 5, { padding = "same" }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 5, { padding = "same" }), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10),
  }
  return m
end

local function eager_cnn()
  mf.manual_seed(2)
  local m = cnn()
  local adam = mf.optim.Adam(m:parameters(), { lr = 1e-4 })
  return function()
    for i = 1, opt.cnn_steps do
      local xs, ys = batches[i][1]:narrow(1, 1, 50), batches[i][2]:narrow(1, 1, 50)
      local loss = F.cross_entropy(m(xs), ys)
      adam:zero_grad()
      loss:backward()
      adam:step()
    end
  end
end

local function session_cnn()
  mf.manual_seed(2)
  local g = mf.Graph()
  local run
  g:as_default(function()
    local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
    local y_ = mf.placeholder(mf.float32, { -1, 10 }, "y_")
    local m = cnn()
    local loss = mf.reduce_mean(mf.nn.softmax_cross_entropy_with_logits { labels = y_, logits = m(x) })
    local train = mf.train.AdamOptimizer(1e-4):minimize(loss)
    local sess = mf.Session { graph = g }
    sess:run(mf.global_variables_initializer())
    run = function()
      for i = 1, opt.cnn_steps do
        sess:run(train, { [x] = batches[i][1]:narrow(1, 1, 50), [y_] = batches[i][2]:narrow(1, 1, 50) })
      end
    end
  end)
  return run
end

local reps = opt.rounds
local s_run, s_over = session_softmax()
local e_sm, s_sm, over = alternate(reps, { eager_softmax(), s_run, s_over })
e_sm, s_sm, over = e_sm / opt.steps, s_sm / opt.steps, over / opt.steps
local e_cnn_fn = eager_cnn()
local ok, s_cnn_fn = pcall(session_cnn)
if not ok then io.stderr:write("session CNN could not be built: ", tostring(s_cnn_fn), "\n") end
local e_cnn, s_cnn = alternate(math.min(reps, 3), { e_cnn_fn, ok and s_cnn_fn or nil })
e_cnn, s_cnn = e_cnn / opt.cnn_steps, s_cnn and s_cnn / opt.cnn_steps

local lines = {
  "## Graphs and sessions: a session training step vs the same eager step (issue 4)",
  "",
  string.format("- Command: `build/moonflow bench/session.lua --steps %d --cnn_steps %d --rounds %d`, %d threads, " ..
    "eager and session alternating, best round of each (CNN: of %d); %s", opt.steps, opt.cnn_steps, reps,
    mf.get_num_threads(), math.min(reps, 3), os.date("!%Y-%m-%d %H:%M UTC")),
  "- Target: session step <= 1.1x the eager step.",
  "",
  "| program | eager step (ms) | session step (ms) | session / eager | target met |",
  "|---|---:|---:|---:|:---:|",
  string.format("| softmax regression, batch 100, SGD | %.3f | %.3f | %.2f | %s |", e_sm * 1e3, s_sm * 1e3,
    s_sm / e_sm, s_sm / e_sm <= 1.1 and "yes" or "**no**"),
}
if s_cnn then
  lines[#lines + 1] = string.format("| tutorial CNN, batch 50, Adam | %.2f | %.2f | %.2f | %s |", e_cnn * 1e3,
    s_cnn * 1e3, s_cnn / e_cnn, s_cnn / e_cnn <= 1.1 and "yes" or "**no**")
end
lines[#lines + 1] = ""
lines[#lines + 1] = string.format("Session overhead per run (fetching one small node): %.1f us.", over * 1e6)
local text = table.concat(lines, "\n") .. "\n"
io.write(text)
if not opt.quick then
  local p = assert(io.popen("/usr/bin/python3 bench/section.py bench/RESULTS.md session", "w"))
  p:write(text)
  p:close()
end
