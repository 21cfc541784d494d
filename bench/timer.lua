-- timer.lua — the timing rule shared by the Lua benchmarks (bench/run.sh loads it with dofile):
-- seconds per call of fn, best of `samples` samples, each sample repeating fn until `min_s`
-- seconds have passed — the same rule as openblas_peak.c and peers.py.
-- The clock is mf.clock() (monotonic wall time, seconds) when moonflow has it. Without it the
-- fallback is `date +%s.%N` through io.popen (a few milliseconds per reading), so samples are
-- made at least 0.25 s long to keep that error under ~1%. os.clock() is not used: it counts the
-- CPU time of all threads, which makes a 2-thread run look twice as slow as it is.
local M = {}

function M.clock_source(mf)
  if type(mf.clock) == "function" then
    return mf.clock, "mf.clock", 0
  end
  local function date_clock()
    local p = assert(io.popen("date +%s.%N"))
    local s = p:read("l")
    p:close()
    return assert(tonumber(s), "date +%s.%N gave no number")
  end
  return date_clock, "date +%s.%N", 0.25
end

-- Frees a result right away when tensors support __close (so the allocator's cache is reused as
-- numpy reuses malloc'd blocks); otherwise leaves it to a full collection between samples.
local function runner(fn, closable)
  if closable then
    return function(reps)
      for _ = 1, reps do
        local r <close> = fn()
      end
    end
  end
  return function(reps)
    for _ = 1, reps do
      fn()
    end
  end
end

function M.best(clock, fn, min_s, samples, closable)
  local run = runner(fn, closable)
  run(1) -- warm-up: first-touch page faults, allocator cache, thread start
  -- Calibrate like Python's timeit: grow the repetition count until one sample lasts min_s (so
  -- a coarse or slow clock costs a small fraction of each sample).
  local reps, t = 1, 0
  while true do
    local t0 = clock()
    run(reps)
    t = clock() - t0
    if t >= min_s then break end
    if t > min_s / 8 then
      reps = math.floor(reps * min_s / t * 1.1) + 1
    else
      reps = reps * 4
    end
  end
  local best = t / reps
  for _ = 1, samples - 1 do
    collectgarbage()
    local t0 = clock()
    run(reps)
    local s = (clock() - t0) / reps
    if s < best then best = s end
  end
  return best
end

function M.closable(t)
  local mt = getmetatable(t)
  return type(mt) == "table" and mt.__close ~= nil
end

-- --quick, --threads N, --min-seconds S, --samples K from the script's arguments.
function M.options(args)
  local o = { quick = false, min_s = 0.2, samples = 5 }
  local i = 1
  while args[i] do
    local a = args[i]
    if a == "--quick" then o.quick = true
    elseif a == "--threads" then i = i + 1; o.threads = {}
      for t in args[i]:gmatch("%d+") do o.threads[#o.threads + 1] = tonumber(t) end
    elseif a == "--min-seconds" then i = i + 1; o.min_s = tonumber(args[i])
    elseif a == "--samples" then i = i + 1; o.samples = tonumber(args[i])
    else error("unknown option " .. a) end
    i = i + 1
  end
  if o.quick then o.min_s, o.samples = 0.01, 2 end
  return o
end

return M
