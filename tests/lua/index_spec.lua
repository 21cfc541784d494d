-- index_spec.lua — indexing: t[i] (views and, for 1-D tensors, Lua values), negative indices,
-- Torch7-style t[{ ... }] ranges, assignment through both, narrow, select, fill_, zero_, copy_.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local function grid() return mf.arange(12):reshape(3, 4) end -- {{0..3}, {4..7}, {8..11}}

describe("t[i]", function()
  it("gives a view of row i", function()
    local t = grid()
    H.equal(t[1], {0, 1, 2, 3})
    H.equal(t[3], {8, 9, 10, 11})
    H.equal(t[-1], {8, 9, 10, 11})
    H.equal(t[-3], {0, 1, 2, 3})
    local row = t[2]
    row[1] = 100 -- a view: writes through
    assert.equal(100, t[2][1])
  end)

  it("gives Lua values for 1-D tensors", function()
    local v = mf.tensor{10, 20, 30}
    assert.equal(10, v[1])
    assert.equal(30, v[-1])
    assert.equal("integer", math.type(v[2]))
    assert.equal(2.5, mf.tensor{1.0, 2.5}[2])
    assert.equal(true, mf.tensor{false, true}[2])
    assert.equal(5, grid()[2][2])
    assert.equal(5, grid()[2.0][2.0]) -- integral floats are fine
  end)

  it("assigns numbers, booleans, tensors and tables", function()
    local t = grid()
    t[1] = 0
    H.equal(t[1], {0, 0, 0, 0})
    t[2] = mf.tensor{1, 2, 3, 4}
    H.equal(t[2], {1, 2, 3, 4})
    t[3] = {5, 6, 7, 8}
    H.equal(t[3], {5, 6, 7, 8})
    t[-1] = mf.tensor{9} -- broadcast
    H.equal(t[3], {9, 9, 9, 9})
    t[1] = 2.75 -- cast to the tensor's dtype
    H.equal(t[1], {2, 2, 2, 2})
    local v = mf.zeros{3}
    v[2] = 1.5
    H.equal(v, {0, 1.5, 0})
    local b = mf.tensor{false, false}
    b[1] = true
    H.equal(b, {true, false})
  end)
end)

describe("t[{ ... }]", function()
  it("selects with numbers and takes inclusive ranges", function()
    local t = grid()
    H.equal(t[{ {1, 2}, 2 }], {1, 5})
    H.equal(t[{ {}, 2 }], {1, 5, 9})
    H.equal(t[{ 2, {} }], {4, 5, 6, 7})
    H.equal(t[{ 2 }], {4, 5, 6, 7})
    H.equal(t[{ {2, 3}, {2, 3} }], { {5, 6}, {9, 10} })
    H.equal(t[{ {-2, -1}, {-1, -1} }], { {7}, {11} })
    H.equal(t[{ {2}, {} }], { {4, 5, 6, 7} }) -- {i} keeps the dimension
    H.equal(t[{ {}, {1, 4, 2} }], { {0, 2}, {4, 6}, {8, 10} }) -- with a step
    H.equal(t[{ {1, -1, 2}, -1 }], {3, 11})
    assert.same({0, 4}, t[{ {2, 1} }]:shape()) -- a..a-1 is empty
  end)

  it("gives a Lua value when every dimension is selected", function()
    local t = grid()
    assert.equal(6, t[{2, 3}])
    assert.equal(11, t[{-1, -1}])
    assert.equal(2.5, mf.tensor{ {1.5, 2.5} }[{1, 2}])
  end)

  it("gives views that write through", function()
    local t = grid()
    local col = t[{ {}, 1 }]
    col:fill_(-1)
    H.equal(t[{ {}, 1 }], {-1, -1, -1})
  end)

  it("assigns through ranges", function()
    local t = grid()
    t[{ {}, 1 }] = 0
    H.equal(t, { {0, 1, 2, 3}, {0, 5, 6, 7}, {0, 9, 10, 11} })
    t[{ {1, 2}, {3, 4} }] = mf.tensor{ {-1, -2}, {-3, -4} }
    H.equal(t, { {0, 1, -1, -2}, {0, 5, -3, -4}, {0, 9, 10, 11} })
    t[{ 3, 2 }] = 99
    assert.equal(99, t[3][2])
    t[{ {}, {1, 4, 3} }] = 7
    H.equal(t, { {7, 1, -1, 7}, {7, 5, -3, 7}, {7, 99, 10, 7} })
    local f = mf.zeros{2, 2}
    f[{ {}, 2 }] = {1.5, 2.5}
    H.equal(f, { {0, 1.5}, {0, 2.5} })
  end)
end)

describe("narrow, select and in-place methods", function()
  it("narrow(d, start, len)", function()
    local t = grid()
    H.equal(t:narrow(1, 2, 2), { {4, 5, 6, 7}, {8, 9, 10, 11} })
    H.equal(t:narrow(2, 2, 1), { {1}, {5}, {9} })
    H.equal(t:narrow(-1, -2, 2), { {2, 3}, {6, 7}, {10, 11} })
    assert.same({3, 0}, t:narrow(2, 5, 0):shape())
    H.equal(mf.narrow(t, 1, 1, 1), { {0, 1, 2, 3} })
  end)

  it("select(d, i)", function()
    local t = grid()
    H.equal(t:select(1, 2), {4, 5, 6, 7})
    H.equal(t:select(2, 2), {1, 5, 9})
    H.equal(t:select(-1, -1), {3, 7, 11})
    local s = t:select(1, 1):select(1, 2)
    assert.equal(0, s:dim())
    assert.equal(1, s:item())
  end)

  it("fill_, zero_, copy_ return the tensor", function()
    local t = mf.zeros{2, 2}
    assert.equal(t, t:fill_(3))
    H.equal(t, { {3, 3}, {3, 3} })
    assert.equal(t, t:zero_())
    H.equal(t, { {0, 0}, {0, 0} })
    t:copy_(mf.tensor{1, 2})
    H.equal(t, { {1, 2}, {1, 2} })
    t:copy_{ {5, 6}, {7, 8} }
    H.equal(t, { {5, 6}, {7, 8} })
    t:copy_(4)
    H.equal(t, { {4, 4}, {4, 4} })
  end)
end)
