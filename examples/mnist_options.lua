-- mnist_options.lua — the flags the MNIST examples share, defined once: --quick and --anneal of
-- the CNNs (mnist_cnn.lua, mnist_cnn_session.lua) and the check of --device (all four). Not a
-- program: the examples load it with dofile relative to their own file (see mnist_model.lua).
--   schedule(opt) -> rate: applies --quick to opt (one epoch, opt.steps = ceil(55000 / batch), at
--     lr 1e-3 with anneal 0.5), checks --anneal is in [0, 1], and returns rate(step) (1-based
--     step): opt.lr, then over the last fraction opt.anneal of the steps a half cosine down to 0.
--   device(name) -> name: "cpu", or a CUDA device this machine has; any other is an error saying
--     why ("--device cuda:3: ...").
local mf = require "moonflow"

local M = {}

function M.schedule(opt)
  if opt.quick then
    opt.steps = math.ceil(55000 / opt.batch) -- one epoch
    opt.lr, opt.anneal = 1e-3, 0.5
  end
  if opt.anneal < 0 or opt.anneal > 1 then error("--anneal wants a fraction in [0, 1]", 0) end
  return function(step)
    local first = opt.steps * (1 - opt.anneal) -- steps before the annealing starts
    if step <= first then return opt.lr end
    return opt.lr * 0.5 * (1 + math.cos(math.pi * (step - 1 - first) / (opt.steps - first)))
  end
end

function M.device(name)
  if name ~= "cpu" then
    local why = mf.cuda.why_unavailable(name)
    if why then error("--device " .. name .. ": " .. why, 0) end
  end
  return name
end

return M
