-- bench.lua — the GPU benchmarks that tests/gpu/run.sh compares with PyTorch on the same GPU
-- (tests/gpu/bench_torch.py measures the same things the same way):
--   matmul   float32 4096x4096 @ 4096x4096, TF32 on (the default) and off: GFLOP/s
--   cnn      the tutorial CNN (conv 5x5x32 same + ReLU + pool, conv 5x5x64 + ReLU + pool,
--            fc 3136->1024 + ReLU + dropout, fc 1024->10), NCHW, batch 50, Adam, cross-entropy:
--            training images/s over --steps steps after --warmup, inputs already on the device
--            (--upload 1: the batch copied from the CPU each step, as examples/mnist_cnn.lua does)
-- One JSON line per measurement on stdout: {"bench": "...", "value": ..., "unit": "..."}.
--
--   moonflow tests/gpu/bench.lua [--device cuda] [--steps 200] [--warmup 20] [--size 4096]
--                                [--profile N] [--upload 1]
-- --profile N: then N more steps under mf.cuda.profile, and the GPU time per step of each op to
-- stderr (tests/gpu/bench_torch.py --profile N prints PyTorch's, from torch.profiler)
-- --device cpu runs the same code on the CPU (a quick check that the script works).
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

local opt = mf.flags { device = "cuda", steps = 200, warmup = 20, size = 4096, reps = 20,
  profile = 0, upload = 0 }
local dev = opt.device
local gpu = dev ~= "cpu"
local function sync() if gpu then mf.cuda.synchronize() end end
local function emit(name, value, unit)
  print(string.format('{"bench": "%s", "value": %.6g, "unit": "%s"}', name, value, unit))
end
mf.manual_seed(1)

-- ---- matmul ---------------------------------------------------------------------------------
local n = opt.size
local a, b = mf.randn({ n, n }):to(dev), mf.randn({ n, n }):to(dev)
for _, tf32 in ipairs(gpu and { true, false } or { false }) do
  if gpu then mf.cuda.set_tf32(tf32) end
  local c = a:matmul(b) -- warm-up (cuBLAS handle, workspace)
  sync()
  local reps = gpu and opt.reps or 1
  local t0 = mf.clock()
  for _ = 1, reps do c = a:matmul(b) end
  sync()
  local s = (mf.clock() - t0) / reps
  emit(("matmul%d_%s"):format(n, tf32 and "tf32" or "fp32"), 2 * n ^ 3 / s / 1e9, "GFLOP/s")
end
if gpu then mf.cuda.set_tf32(true) end

-- ---- the tutorial CNN, training -----------------------------------------------------------------
local v = mf.cuda.versions()
if gpu and not (v and v.cudnn > 0) then
  io.stderr:write("bench.lua: cnn not run: this build has no cuDNN (conv2d stays on the CPU)\n")
  return
end
local conv = { padding = "same" }
local model = nn.Sequential {
  nn.Conv2d(1, 32, 5, conv), nn.ReLU(), nn.MaxPool2d(2),
  nn.Conv2d(32, 64, 5, conv), nn.ReLU(), nn.MaxPool2d(2),
  nn.Flatten(),
  nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
  nn.Linear(1024, 10),
}
model:to(dev)
model:train()
local adam = mf.optim.Adam(model:parameters(), { lr = 1e-4 })
local batch = 50
local xcpu = mf.rand({ batch, 1, 28, 28 })
local labels = {}
for i = 1, batch do labels[i] = (i * 7) % 10 + 1 end -- class indices are 1-based
local ycpu = mf.tensor(labels):long()
local xs, ys = xcpu:to(dev), ycpu:to(dev)
local function step()
  if opt.upload > 0 then xs, ys = xcpu:to(dev), ycpu:to(dev) end
  local loss = F.cross_entropy(model(xs), ys)
  adam:zero_grad()
  loss:backward()
  adam:step()
  return loss
end
local loss -- kept from step to step, as a training loop keeps it, in the warm-up too
for _ = 1, opt.warmup do loss = step() end
sync()
local t0 = mf.clock()
for _ = 1, opt.steps do loss = step() end
sync()
local s = mf.clock() - t0
emit("cnn_train_b50", opt.steps * batch / s, "images/s")
emit("cnn_train_b50_step_ms", 1000 * s / opt.steps, "ms")
io.stderr:write(("bench.lua: last loss %.4f on %s\n"):format(loss:item(), dev))

-- ---- where the GPU time of a step goes (--profile N) -------------------------------------------
if gpu and opt.profile > 0 then
  mf.cuda.profile(true)
  local t1 = mf.clock()
  for _ = 1, opt.profile do step() end
  sync()
  local wall = (mf.clock() - t1) / opt.profile * 1e6
  local report, total, launches = mf.cuda.profile_report(), 0, 0
  mf.cuda.profile(false)
  local out = { ("bench.lua: GPU time per step of each op, over %d steps (mf.cuda.profile)"):format(opt.profile),
    ("  %-28s %8s %10s"):format("op", "calls", "us/step") }
  for _, e in ipairs(report) do
    local us = e.ms * 1e3 / opt.profile
    total, launches = total + us, launches + e.calls / opt.profile
    out[#out + 1] = ("  %-28s %8.1f %10.1f"):format(e.op, e.calls / opt.profile, us)
  end
  out[#out + 1] = ("  %-28s %8.1f %10.1f   (the step's wall time, profiled: %.1f us)"):format(
    "total", launches, total, wall)
  io.stderr:write(table.concat(out, "\n"), "\n")
end
