-- examples_logdir_spec.lua — `--logdir DIR` of examples/mnist_softmax.lua, mnist_cnn.lua,
-- mnist_softmax_session.lua and mnist_cnn_session.lua (predict_digit_spec.lua looks closer at
-- mnist_cnn.lua's): short runs on the real MNIST files (MOONFLOW_DATA; pending without it)
-- write DIR/train and DIR/validation event files that TensorBoard's reader gives back with the
-- loss and accuracy curves at every --every steps and the variables' histograms at the last step,
-- and a run with --logdir trains exactly as one without (the same test accuracy); the session
-- examples' train run holds their graph.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local q = H.q

local DATA = H.DATA
local have_tb = H.can_import(H.TB_IMPORT)
local example = H.mnist_example
local tensorboard = H.tensorboard

local newdir, rmdirs = H.tmpdirs("mf_examples_logdir_spec") -- new temporary folders, removed at the end
teardown(rmdirs)

-- Runs an example with and without --logdir and checks the logs: curves at `steps`, histograms
-- (name -> number of values) at the last one, validation accuracy above min_acc at the end, a
-- graph in the train run when with_graph.
local function check(name, flags, steps, histograms, min_acc, with_graph)
  if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
  if not have_tb then return pending("tensorboard is not importable by " .. H.PY) end
  if H.SANITIZED and name:find("cnn", 1, true) then
    return pending("the CNN examples' logs are checked in the Release pass, not under ASan")
  end
  local dir = newdir()
  local plain, ok = example(name, flags)
  assert.is_true(ok, plain)
  local out
  out, ok = example(name, flags .. " --logdir " .. q(dir))
  assert.is_true(ok, out)
  local acc = plain:match "test accuracy: ([%d.]+)"
  assert.truthy(acc, plain)
  assert.are.equal(acc, out:match "test accuracy: ([%d.]+)")

  local train, val = tensorboard(dir .. "/train"), tensorboard(dir .. "/validation")
  for _, run in ipairs { train, val } do
    for _, tag in ipairs { "loss", "accuracy" } do
      local got = {}
      for step, v in pairs(run.scalars[tag] or {}) do
        got[#got + 1] = step
        assert.is_true(v >= 0 and (tag == "loss" or v <= 1), tag .. " " .. v)
      end
      table.sort(got)
      assert.are.same(steps, got)
    end
  end
  local last = steps[#steps]
  local acc_end = val.scalars.accuracy[last]
  assert.is_true(acc_end > min_acc, "validation accuracy " .. acc_end)
  assert.is_true(val.scalars.loss[last] < val.scalars.loss[steps[1]],
    "the validation loss did not fall")
  for tag, n in pairs(histograms) do
    assert.are.equal(n, train.histograms[tag] and train.histograms[tag][last], tag)
  end
  assert.is_nil(next(val.histograms))
  assert.are.equal(0, val.graph)
  if with_graph then
    assert.is_true(train.graph > 5, "nodes in the graph: " .. train.graph)
  else
    assert.are.equal(0, train.graph)
  end
  return train, val
end

describe("MNIST examples --logdir", function()
  it("mnist_softmax.lua", function()
    check("mnist_softmax.lua", "--steps 300 --every 100", { 100, 200, 300 },
      { W = 7840, b = 10 }, 0.85)
  end)

  it("mnist_cnn.lua", function()
    check("mnist_cnn.lua", "--steps 30 --every 15 --lr 1e-3", { 15, 30 },
      { ["2.weight"] = 800, ["2.bias"] = 32, ["5.weight"] = 51200, ["9.weight"] = 3136 * 1024,
        ["12.weight"] = 10240, ["12.bias"] = 10 }, 0.5)
  end)

  it("mnist_softmax_session.lua", function()
    check("mnist_softmax_session.lua", "--steps 300 --every 100", { 100, 200, 300 },
      { ["inference/W"] = 7840, ["inference/b"] = 10 }, 0.85, true)
  end)

  it("mnist_cnn_session.lua", function()
    check("mnist_cnn_session.lua", "--steps 30 --every 15 --lr 1e-3", { 15, 30 },
      { ["inference/W_conv1"] = 800, ["inference/b_conv1"] = 32, ["inference/W_conv2"] = 51200,
        ["inference/W_fc1"] = 3136 * 1024, ["inference/W_fc2"] = 10240,
        ["inference/b_fc2"] = 10 }, 0.5, true)
  end)
end)
