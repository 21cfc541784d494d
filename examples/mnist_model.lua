-- mnist_model.lua — the tutorial's deep MNIST CNN ("Deep MNIST for experts"), defined once: as
-- modules for mnist_cnn.lua (which trains it), predict_digit.lua (which loads the weights it
-- saved) and tests/lua/onnx_spec.lua (which exports it); as graph nodes for mnist_cnn_session.lua
-- and tests/lua/graph_dot_spec.lua. Not a program: the others load it with dofile relative to
-- their own file, so they run from any folder:
--   local CNN = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "mnist_model.lua")
-- build(format) -> nn.Sequential, untrained: input Nx784 (reshaped to Nx1x28x28 for "NCHW", the
-- default, or Nx28x28x1 for "NHWC"); conv 5x5x32 "same" + ReLU + 2x2 max pool, conv 5x5x64 +
-- ReLU + pool, flatten (3136), fc 3136 -> 1024 + ReLU + dropout 0.5, fc 1024 -> 10 (logits Nx10).
-- init(model) -> model: the tutorial's initial values in place, weights truncated normal
-- (stddev 0.1), biases 0.1.
-- inference(x, drop [, widths]) -> logits: the same network as graph nodes in the default graph,
-- in variable scope "inference": x a float32 Nx784 tensor, drop the dropout probability (a scalar
-- tensor); images NHWC (28x28x1), conv weights moonflow's (out, in, kh, kw), variables W_conv1,
-- b_conv1, W_conv2, b_conv2, W_fc1, b_fc1, W_fc2, b_fc2 with the initial values of init; logits
-- Nx10. widths {conv1, conv2, fc} (default the tutorial's {32, 64, 1024}) makes a smaller one.
local mf = require "moonflow"
local nn, F = mf.nn, mf.nn.functional

local M = {}

function M.build(format)
  format = format or "NCHW"
  local nhwc = format == "NHWC"
  local conv = { padding = "same", data_format = format }
  local pool = { data_format = format }
  return nn.Sequential {
    nn.Reshape(nhwc and { 28, 28, 1 } or { 1, 28, 28 }),
    nn.Conv2d(1, 32, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
    nn.Conv2d(32, 64, 5, conv), nn.ReLU(), nn.MaxPool2d(2, pool),
    nn.Flatten(),
    nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Dropout(0.5),
    nn.Linear(1024, 10),
  }
end

function M.init(model)
  mf.no_grad(function()
    for _, p in ipairs(model:parameters()) do
      if p:dim() > 1 then nn.init.trunc_normal_(p, 0, 0.1) else nn.init.constant_(p, 0.1) end
    end
  end)
  return model
end

local function weight(shape, name)
  return mf.Variable(nn.init.trunc_normal_(mf.empty(shape), 0, 0.1), { name = name })
end
local function bias(n, name) return mf.Variable(mf.full({ n }, 0.1), { name = name }) end

function M.inference(x, drop, widths)
  local c1, c2, fc = table.unpack(widths or { 32, 64, 1024 })
  local logits
  mf.variable_scope("inference", function()
    local conv = { padding = "same", data_format = "NHWC" }
    local pool = { data_format = "NHWC" }
    local h = mf.reshape(x, { -1, 28, 28, 1 })
    h = F.max_pool2d(mf.relu(F.conv2d(h, weight({ c1, 1, 5, 5 }, "W_conv1"), bias(c1, "b_conv1"), conv)), 2, pool)
    h = F.max_pool2d(mf.relu(F.conv2d(h, weight({ c2, c1, 5, 5 }, "W_conv2"), bias(c2, "b_conv2"), conv)), 2, pool)
    h = mf.reshape(h, { -1, 7 * 7 * c2 })
    h = mf.relu(mf.matmul(h, weight({ 7 * 7 * c2, fc }, "W_fc1")) + bias(fc, "b_fc1"))
    h = F.dropout(h, drop)
    logits = mf.matmul(h, weight({ fc, 10 }, "W_fc2")) + bias(10, "b_fc2")
  end)
  return logits
end

return M
