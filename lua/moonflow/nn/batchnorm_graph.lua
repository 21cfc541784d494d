-- moonflow/nn/batchnorm_graph.lua — nn.BatchNorm1d/2d called on a symbolic tensor: the "BatchNorm"
-- node a graph runs.
--
--   local is_training = mf.placeholder(mf.bool, {}, "is_training")
--   local h = bn(x, is_training)   -- or bn(x): the module's mode (bn:train() / bn:evaluate())
--
-- * State: as every nn layer in a graph, the node holds the module's own tensors by reference:
--   weight and bias (trained by mf.train optimizers; gradients flow to them and to x) and the
--   running statistics running_mean, running_var, num_batches_tracked, which a training run
--   updates in place. So a model trained in a session is the trained eager module too, and every
--   node built from one module (a training node and an inference node, say) shares one state.
-- * The mode: `training` given to the call — a boolean, or a symbolic bool scalar (a placeholder
--   fed at each run) — else the module's mode when the node is built. In training mode a run
--   normalises with the batch's mean and biased variance and updates the running statistics with
--   the unbiased one, r = (1 - momentum) r + momentum batch (momentum = false: the cumulative
--   average, 1 / num_batches_tracked), and counts the batch, as the eager layer's forward does;
--   in inference mode it normalises with the running statistics and changes nothing.
-- * Building runs the op on dummy values to infer shapes; that never touches the statistics.
-- * Checkpoints: the node lists the statistics as `node.buffers`; mf.train.Saver saves and restores
--   them with a session's variables as "<node name>/running_mean" and so on ("BatchNorm/running_var"),
--   so a graph built again in the same order restores them.
-- The node has F.batch_norm's arguments (x, running_mean, running_var, weight, bias, training,
-- momentum, eps, channel_dim), so exporters read it as they read F.batch_norm's nodes.
local core = require "moonflow.core"
local G = require "moonflow.graph"
local F = require "moonflow.nn.functional"

local M = {}

-- forward(bn, x, cdim [, training]) -> the symbolic output; x is symbolic, cdim its channel dim.
function M.forward(bn, x, cdim, training)
  if training == nil then training = bn.training end
  local what = ("%s: training must be a boolean or a bool scalar tensor"):format(bn:__repr())
  if G.is_sym(training) then
    local shape = training:shape()
    if training:dtype() ~= "bool" or shape == nil or #shape ~= 0 then
      error(("%s, got %s"):format(what, tostring(training)), 3)
    end
    if training.graph ~= x.graph then
      error(("%s: training (%s) and the input (%s) are in different graphs"):format(bn:__repr(),
        training.name, x.name), 3)
    end
  elseif type(training) ~= "boolean" then
    error(("%s, got %s"):format(what, type(training)), 3)
  end
  local function norm(xv, rm, rv, weight, bias, is_training, momentum, eps, c)
    if core.is_tensor(is_training) then is_training = is_training:item() end
    local track = rm ~= nil
    if is_training and track and not G.is_probing() then
      local count = bn.num_batches_tracked
      local n = count:item() + 1
      core.no_grad(function() count:fill_(n) end)
      if not momentum then momentum = 1 / n end
    end
    return F.batch_norm(xv, rm, rv, weight, bias, is_training or not track, momentum or 0.1, eps, c)
  end
  local rm, rv
  if bn.track_running_stats then rm, rv = bn.running_mean, bn.running_var end
  -- a node F.batch_norm itself would build again from its arguments (graph export and import),
  -- except for the cumulative average, which F.batch_norm does not keep
  local opts = { type = "BatchNorm", id = bn.momentum and "F.batch_norm" or nil }
  local y = G.apply("BatchNorm", norm, opts, x, rm, rv, bn.weight, bn.bias, training, bn.momentum,
    bn.eps, cdim)
  -- the module buffers the node updates, which mf.train.Saver saves with a session's variables
  -- as "<node name>/<buffer>" (the first node of a module names them)
  if bn.track_running_stats then
    y._node.buffers = { running_mean = bn.running_mean, running_var = bn.running_var,
      num_batches_tracked = bn.num_batches_tracked }
  end
  return y
end

return M
