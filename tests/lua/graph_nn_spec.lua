-- graph_nn_spec.lua — nn layers on symbolic tensors: a Sequential of every layer kind used by the
-- tutorial CNN (Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear) builds a graph on a placeholder,
-- and a session run gives what the same module computes eagerly.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("nn layers in graphs", function()
  it("a CNN on a placeholder runs in a session like the eager module", function()
    mf.manual_seed(5)
    local nn = mf.nn
    local model = nn.Sequential {
      nn.Conv2d(1, 4, 3, { padding = "same" }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Conv2d(4, 4, 3), nn.ReLU(), nn.AvgPool2d(2),
      nn.Flatten(), nn.Linear(4 * 1 * 1, 3),
    }
    local input = mf.randn { 2, 1, 8, 8 }
    local want = mf.no_grad(function() return model(input) end)
    local g = mf.Graph()
    local got
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 1, 8, 8 }, "x")
      local y = model(x)
      assert.is_true(mf.is_symbolic(y))
      local sess <close> = mf.Session { graph = g }
      got = sess:run(y, { [x] = input })
    end)
    assert.are.same({ 2, 3 }, got:shape())
    assert.is_true(mf.allclose(got, want, 1e-5, 1e-6))
  end)
end)
