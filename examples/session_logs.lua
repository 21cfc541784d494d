-- session_logs.lua — --logdir of the session examples (mnist_softmax_session.lua,
-- mnist_cnn_session.lua), defined once. Not a program: they load it with dofile relative to their
-- own file (see mnist_model.lua).
--   open(opt, sess, t) -> log, or nil when opt.logdir is "": two FileWriters, opt.logdir/train
--     (with sess.graph, for TensorBoard's graph tab) and opt.logdir/validation; t = {loss =,
--     accuracy = (scalar tensors of the graph), feed = the validation feed}.
--   log:write(step, loss, acc): the batch's loss and accuracy (fetched values) to train, those of
--     t.feed (sess:run) to validation under the same tags, so TensorBoard overlays the two runs;
--     every 10 * opt.every steps and at the last step (opt.steps) a histogram of each trainable
--     variable to train; both files flushed.
--   log:close(): closes both files.
local mf = require "moonflow"

local Log = {}
Log.__index = Log

local M = {}

function M.open(opt, sess, t)
  if opt.logdir == "" then return nil end
  return setmetatable({ opt = opt, sess = sess, t = t,
    train = mf.summary.FileWriter(opt.logdir .. "/train", sess.graph),
    validation = mf.summary.FileWriter(opt.logdir .. "/validation") }, Log)
end

function Log:write(step, loss, acc)
  self.train:add_scalar("loss", loss, step)
  self.train:add_scalar("accuracy", acc, step)
  local v = self.sess:run({ self.t.loss, self.t.accuracy }, self.t.feed)
  self.validation:add_scalar("loss", v[1], step)
  self.validation:add_scalar("accuracy", v[2], step)
  if step % (10 * self.opt.every) == 0 or step == self.opt.steps then
    for _, var in ipairs(mf.trainable_variables()) do
      self.train:add_histogram((var.name:gsub(":%d+$", "")), self.sess:run(var), step)
    end
  end
  self.train:flush()
  self.validation:flush()
end

function Log:close()
  self.train:close()
  self.validation:close()
end

return M
