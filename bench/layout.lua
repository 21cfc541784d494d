-- layout.lua — NCHW vs NHWC throughput of the tutorial's CNN (examples/mnist_cnn.lua's network) on
-- the CPU, in one process: training (Adam steps at batch 50) and inference (batch 1000), the two
-- layouts timed alternately, best of a few repeats, so that only the ratios matter on a shared,
-- noisy machine. The NHWC model gets the NCHW model's weights (fc1's columns reordered for its
-- (h, w, c) flatten), and the script first checks that both give the same logits and gradients.
-- The images are random (no data files needed). Prints one line per measurement and the ratios
-- NHWC time / NCHW time.
--
--   moonflow bench/layout.lua [--quick] [--repeats R] [--steps S] [--infer B] [--threads N]
--   --only NCHW|NHWC runs just that layout's training and inference S and B times (for a profiler).
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

local opt = mf.flags({ quick = false, repeats = 5, steps = 10, infer = 2, threads = 0, only = "" },
  arg)
if opt.quick then opt.repeats, opt.steps, opt.infer = 1, 2, 1 end
if opt.threads > 0 then mf.set_num_threads(opt.threads) end

-- the tutorial's network, defined once in examples/mnist_model.lua
local cnn = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "../examples/mnist_model.lua").build

mf.manual_seed(1)
local models = { NCHW = cnn("NCHW"), NHWC = cnn("NHWC") }
mf.no_grad(function()
  local a, b = models.NCHW:parameters(), models.NHWC:parameters()
  for i, p in ipairs(a) do
    if p:dim() > 1 then nn.init.trunc_normal_(p, 0, 0.1) else nn.init.constant_(p, 0.1) end
    local q = p
    if p:dim() == 2 and p:size(2) == 7 * 7 * 64 then -- fc1: (1024, c*h*w) -> (1024, h*w*c)
      q = p:view { 1024, 64, 7, 7 }:permute { 1, 3, 4, 2 }:contiguous():view { 1024, 7 * 7 * 64 }
    end
    b[i]:copy_(q)
  end
end)

local train_batch, infer_batch = 50, 1000
local xs = mf.rand { train_batch, 784 }
local labels = {}
for i = 1, train_batch do labels[i] = (i * 7) % 10 + 1 end -- classes 1..10
local ys = mf.tensor(labels, { dtype = "int64" })
local xi = mf.rand { infer_batch, 784 }

-- the two layouts agree: logits in eval mode, and the conv1 weight gradient
local function check()
if opt.only ~= "" then
  assert(models[opt.only], "--only wants NCHW or NHWC")
end
  local out, grad = {}, {}
  for f, m in pairs(models) do
    m:evaluate()
    m:zero_grad()
    local logits = m(xs)
    F.cross_entropy(logits, ys):backward()
    out[f], grad[f] = logits:detach(), m:parameters()[1].grad:clone()
    m:train()
    m:zero_grad()
  end
  local d1 = (out.NCHW - out.NHWC):abs():max():item()
  local d2 = (grad.NCHW - grad.NHWC):abs():max():item()
  local s1, s2 = out.NCHW:abs():max():item(), grad.NCHW:abs():max():item()
  print(("check: max |logits NCHW - NHWC| = %.3g (of %.3g), conv1 weight gradient %.3g (of %.3g)")
    :format(d1, s1, d2, s2))
  assert(d1 <= 1e-4 * s1 and d2 <= 1e-4 * s2, "NCHW and NHWC models disagree")
end
check()

local adams = {}
for f, m in pairs(models) do adams[f] = mf.optim.Adam(m:parameters(), { lr = 1e-4 }) end

local function train_steps(f)
  local m, adam = models[f], adams[f]
  for _ = 1, opt.steps do
    local loss = F.cross_entropy(m(xs), ys)
    adam:zero_grad()
    loss:backward()
    adam:step()
  end
end

local function infer(f)
  local m = models[f]
  m:evaluate()
  mf.no_grad(function()
    for _ = 1, opt.infer do m(xi) end
  end)
  m:train()
end

-- best seconds per call of fn(f) for each layout, the layouts alternating within each repeat
local function time(fn)
  local best = {}
  for _, f in ipairs { "NCHW", "NHWC" } do fn(f) end -- warm-up
  for _ = 1, opt.repeats do
    for _, f in ipairs { "NCHW", "NHWC" } do
      collectgarbage()
      local t0 = mf.clock()
      fn(f)
      local t = mf.clock() - t0
      if not best[f] or t < best[f] then best[f] = t end
    end
  end
  return best
end

if opt.only ~= "" then
  train_steps(opt.only)
  infer(opt.only)
  return
end
print(("threads %d, %d repeats (best of), training %d steps of %d, inference %d batches of %d")
  :format(mf.get_num_threads(), opt.repeats, opt.steps, train_batch, opt.infer, infer_batch))
local tt = time(train_steps)
local ti = time(infer)
for _, f in ipairs { "NCHW", "NHWC" } do
  print(("%s: training %.0f images/s, inference %.0f images/s"):format(f,
    opt.steps * train_batch / tt[f], opt.infer * infer_batch / ti[f]))
end
print(("ratio NHWC/NCHW time: training %.2f, inference %.2f"):format(tt.NHWC / tt.NCHW,
  ti.NHWC / ti.NCHW))
