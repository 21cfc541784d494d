-- moonflow/nn/init.lua — `mf.nn` (loaded on first use of mf.nn): modules, layers, losses,
-- mf.nn.functional (also mf.nn.F) and mf.nn.init. The pieces live beside this file:
--   module.lua       nn.class, nn.Module, nn.Parameter, nn.Sequential (+ printing, summary)
--   layers.lua       Linear, ReLU, Sigmoid, Tanh, Softmax, LogSoftmax, Dropout, BatchNorm1d/2d,
--                    Flatten, Reshape, Identity
--   conv.lua         Conv2d, MaxPool2d, AvgPool2d (NCHW or NHWC)
--   functional.lua   the operations as functions
--   loss.lua         the losses (functions, modules, TensorFlow's names)
--   weight_init.lua  mf.nn.init (zeros_, normal_, trunc_normal_, xavier_*, kaiming_*)
--
--   local nn = mf.nn
--   local net = nn.Sequential{ nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10) }
--   local loss = nn.functional.cross_entropy(net(x), labels)   -- labels: 1-based classes
--   loss:backward()
local module = require "moonflow.nn.module"
local F = require "moonflow.nn.functional"

local nn = {
  class = module.class,
  Module = module.Module,
  Parameter = module.Parameter,
  Sequential = module.Sequential,
  is_module = module.is_module,
  functional = F,
  F = F,
  init = require "moonflow.nn.weight_init",
}

for _, part in ipairs { "layers", "conv", "loss" } do
  for k, v in pairs(require("moonflow.nn." .. part)) do
    if k:sub(1, 1) ~= "_" then nn[k] = v end
  end
end

-- TensorFlow's tf.nn names for the simple functions (the losses come from loss.lua).
nn.relu, nn.sigmoid, nn.tanh = F.relu, F.sigmoid, F.tanh
nn.softmax, nn.log_softmax = F.softmax, F.log_softmax

return nn
