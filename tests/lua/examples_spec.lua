-- examples_spec.lua — the tutorial's two eager MNIST programs reach their published accuracy when
-- run as users run them: examples/mnist_softmax.lua (1000 steps of SGD 0.5: >= 0.915) and
-- examples/mnist_cnn.lua --quick (one epoch of Adam 1e-3: >= 0.985), each ending with the line
-- `test accuracy: 0.9xxx`. They need the real MNIST files (MOONFLOW_DATA; pending without them).
-- The one-epoch CNN takes about a minute on 2 cores; under the sanitizers (MOONFLOW_SANITIZED=1,
-- set by scripts/test.sh for the ASan pass) it is left to the Release pass.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")

local DATA = H.DATA
local example = H.mnist_example

-- The number on the program's last line, which must be `test accuracy: 0.xxxx`.
local function final_accuracy(out)
  local last = out:match("([^\n]*)\n?$")
  return tonumber(last:match("^test accuracy: (%d%.%d%d%d%d)$")), last
end

describe("MNIST examples", function()
  it("mnist_softmax.lua reaches >= 0.915 test accuracy", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    local out, ok = example("mnist_softmax.lua", "")
    assert(ok, out)
    local acc, last = final_accuracy(out)
    assert(acc, "the last line is not `test accuracy: 0.xxxx`: " .. last)
    assert(acc >= 0.915, "test accuracy " .. acc .. " < 0.915")
  end)

  it("mnist_cnn.lua --quick (one epoch, Adam 1e-3) reaches >= 0.985 test accuracy", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    if H.SANITIZED then return pending("the one-epoch CNN runs in the Release pass, not under ASan") end
    local out, ok = example("mnist_cnn.lua", "--quick --every 275")
    assert(ok, out)
    assert.truthy(out:find("step 1100/1100", 1, true), out)
    local acc, last = final_accuracy(out)
    assert(acc, "the last line is not `test accuracy: 0.xxxx`: " .. last)
    assert(acc >= 0.985, "test accuracy " .. acc .. " < 0.985")
  end)
end)
