-- elementwise.lua — moonflow's time for add, mul and exp of float32 vectors of 2^20 elements
-- (allocating a new result each call, like numpy's `a + b`), best of N, at each thread count
-- asked for; compared with numpy (peers.py) by bench/run.sh.
--   lua5.4 bench/elementwise.lua [--quick] [--threads 1,2] [--min-seconds S] [--samples K]
-- Prints `result impl=moonflow bench=OP n=N threads=T seconds=S` lines.
local mf = require "moonflow"
local here = (arg and arg[0] and arg[0]:match("^(.*)/")) or "bench"
local timer = dofile(here .. "/timer.lua")

local o = timer.options(arg or {})
local n = 1 << 20
local default_threads = mf.get_num_threads()
local threads = o.threads or { 1, default_threads }
local clock, clock_name, min_floor = timer.clock_source(mf)
local min_s = math.max(o.min_s, min_floor)
print(string.format("# moonflow elementwise: clock %s, default threads %d, best of %d samples of >= %g s",
  clock_name, default_threads, o.samples, min_s))

mf.manual_seed(42)
local a, b = mf.randn({ n }), mf.randn({ n })
local closable = timer.closable(a)
local ops = {
  { "add", function() return mf.add(a, b) end },
  { "mul", function() return mf.mul(a, b) end },
  { "exp", function() return mf.exp(a) end },
}
for _, op in ipairs(ops) do
  for _, t in ipairs(threads) do
    mf.set_num_threads(t)
    local s = timer.best(clock, op[2], min_s, o.samples, closable)
    print(string.format("result impl=moonflow bench=%s n=%d threads=%d seconds=%.6e",
      op[1], n, mf.get_num_threads(), s))
    io.stdout:flush()
  end
end
mf.set_num_threads(default_threads)
