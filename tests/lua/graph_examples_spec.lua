-- graph_examples_spec.lua — the graph/session examples run as programs: examples/tf_basics.lua
-- prints the tutorial's "how TensorFlow runs" values line by line; on the real MNIST files named
-- by MOONFLOW_DATA (pending without them), examples/mnist_softmax_session.lua (the tutorial's 1000
-- steps) prints its graph and variables as the tutorial does and reaches the eager program's
-- accuracy, >= 0.915, and examples/mnist_cnn_session.lua --quick (one epoch of Adam 1e-3, the rate
-- fed through a placeholder) reaches the eager --quick's >= 0.985 (about a minute on 2 cores: in
-- the Release pass only, not under the sanitizers, MOONFLOW_SANITIZED=1, as examples_spec.lua).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local q = H.q

local DATA = H.DATA
local lines = H.lines

-- Runs an example from the repository root; its stdout, and whether it succeeded.
local function example(name, args) return H.example(name, args, { stderr = false }) end

describe("graph examples", function()
  it("tf_basics.lua prints the tutorial's values", function()
    local out, ok = example("tf_basics.lua")
    assert(ok, out)
    assert.same({
      'Tensor("add:0", shape=(), dtype=string)',
      "Hello World!",
      "Hello World!",
      "Hello placeholders!",
      'Tensor("x:0", shape=(), dtype=int64)\tTensor("mul:0", shape=(), dtype=int64)',
      "15",
      "[int64 scalar, cpu]",
      'Tensor("Mul:0", shape=(2,), dtype=int64)\tTensor("LogicalOr:0", shape=(1, 3, 1), dtype=bool)\t' ..
        'Tensor("Select:0", shape=(1, 3, 1), dtype=int64)',
      "[3, 6]",
      "[int64 tensor, shape 2, cpu]",
      "[[[ true],",
      "  [ true],",
      "  [false]]]",
      "[bool tensor, shape 1x3x1, cpu]",
      "[[[1],",
      "  [1],",
      "  [5]]]",
      "[int64 tensor, shape 1x3x1, cpu]",
    }, lines(out))
  end)

  it("mnist_softmax_session.lua reaches >= 0.915 test accuracy", function()
    if DATA == nil then return pending("MOONFLOW_DATA does not name a folder with the MNIST files") end
    local out, ok = example("mnist_softmax_session.lua", "--data " .. q(DATA))
    assert(ok, out)
    local l = lines(out)
    assert.equal('Tensor("inference/add:0", shape=(?, 10), dtype=float32)', l[1])
    assert.equal("  var   0: (784, 10)         inference/W:0", l[2]) -- the tutorial's 0-based index
    assert.equal("  var   1: (10,)             inference/b:0", l[3])
    local acc = tonumber(out:match("test accuracy: ([%d.]+)"))
    assert(acc, out)
    assert(acc >= 0.915, "test accuracy " .. acc .. " < 0.915")
  end)

  it("mnist_cnn_session.lua --quick reaches >= 0.985 test accuracy", function()
    if DATA == nil then return pending("MOONFLOW_DATA does not name a folder with the MNIST files") end
    if H.SANITIZED then return pending("the one-epoch CNN runs in the Release pass, not under ASan") end
    local out, ok = example("mnist_cnn_session.lua", "--quick --every 275 --data " .. q(DATA))
    assert(ok, out)
    assert.truthy(out:find("step 1100/1100", 1, true), out)
    local acc = tonumber(out:match("test accuracy: ([%d.]+)"))
    assert(acc, out)
    assert(acc >= 0.985, "test accuracy " .. acc .. " < 0.985")
  end)
end)
