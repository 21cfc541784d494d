-- matmul.lua — moonflow's float32 matmul rate (GFLOP/s) for n x n times n x n, n = 128 ... 2048,
-- at each thread count asked for; compared with OpenBLAS's own rate (openblas_peak.c) by
-- bench/run.sh. Run with lua5.4 (LUA_PATH/LUA_CPATH set to the build) or the moonflow host:
--   lua5.4 bench/matmul.lua [--quick] [--threads 1,2] [--min-seconds S] [--samples K]
-- Prints `result impl=moonflow bench=matmul n=N threads=T seconds=S gflops=G` lines.
local mf = require "moonflow"
local here = (arg and arg[0] and arg[0]:match("^(.*)/")) or "bench"
local timer = dofile(here .. "/timer.lua")

local o = timer.options(arg or {})
local sizes = o.quick and { 128, 256 } or { 128, 256, 512, 1024, 2048 }
local default_threads = mf.get_num_threads()
local threads = o.threads or { default_threads }
local clock, clock_name, min_floor = timer.clock_source(mf)
local min_s = math.max(o.min_s, min_floor)
print(string.format("# moonflow matmul: clock %s, default threads %d, best of %d samples of >= %g s",
  clock_name, default_threads, o.samples, min_s))

mf.manual_seed(42)
for _, n in ipairs(sizes) do
  local a, b = mf.randn({ n, n }), mf.randn({ n, n })
  local closable = timer.closable(a)
  for _, t in ipairs(threads) do
    mf.set_num_threads(t)
    local s = timer.best(clock, function() return mf.matmul(a, b) end, min_s, o.samples, closable)
    print(string.format("result impl=moonflow bench=matmul n=%d threads=%d seconds=%.6e gflops=%.2f",
      n, mf.get_num_threads(), s, 2 * n * n * n / s * 1e-9))
    io.stdout:flush()
  end
  a, b = nil, nil
  collectgarbage()
end
mf.set_num_threads(default_threads)
