-- graph_infer_spec.lua — shape inference of graph ops whose scalar inputs are fed later: the probes
-- must be valid values for them (a dropout rate in [0, 1]), and sizes read from data stay unknown.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("graph shape inference", function()
  before_each(function() mf.reset_default_graph() end)

  it("keeps the shape through dropout with a fed rate", function()
    local x = mf.placeholder("float32", { -1, 1024 }, "x")
    local rate = mf.placeholder("float32", {}, "rate")
    local y = mf.nn.functional.dropout(x, rate)
    assert.same({ -1, 1024 }, y:shape())
    local h = mf.nn.Linear(1024, 10)(y)
    assert.same({ -1, 10 }, h:shape())
    local sess = mf.Session()
    local v = sess:run(y, { [x] = mf.ones { 3, 1024 }, [rate] = 0 })
    assert.same({ 3, 1024 }, v:shape())
    assert.equal(3 * 1024, v:sum():item())
  end)

  it("leaves a size that comes from fed data unknown", function()
    local n = mf.placeholder("int64", {}, "n")
    local z = mf.zeros(n)
    assert.same({ -1 }, z:shape())
    assert.same({ 4 }, mf.Session():run(z, { [n] = 4 }):shape())
  end)
end)
