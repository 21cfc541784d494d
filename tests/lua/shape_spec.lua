-- shape_spec.lua — views and shape operations: reshape/view (-1 inferred, varargs or a table),
-- transpose, t, permute, squeeze, unsqueeze, expand, flatten, contiguous, clone, cat and stack.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("reshape and view", function()
  local t = mf.arange(6)
  it("take a table or varargs, with one -1 inferred", function()
    H.equal(t:reshape{2, 3}, { {0, 1, 2}, {3, 4, 5} })
    H.equal(t:reshape(3, 2), { {0, 1}, {2, 3}, {4, 5} })
    assert.same({2, 3}, t:reshape(-1, 3):shape())
    assert.same({3, 2}, t:view{3, -1}:shape())
    assert.same({1, 6, 1}, t:view(1, -1, 1):shape())
    assert.same({}, mf.tensor{5}:reshape{}:shape())
    assert.same({2, 3}, mf.reshape(t, {2, 3}):shape())
  end)

  it("share storage; reshape copies a non-contiguous tensor", function()
    local v = t:view(2, 3)
    v[1][1] = 42
    assert.equal(42, t[1])
    local tt = v:t()
    H.equal(tt:reshape(6), {42, 3, 1, 4, 2, 5})
    v[1][1] = 0
  end)

  it("view_as, expand_as", function()
    assert.same({3, 2}, t:view_as(mf.zeros{3, 2}):shape())
    H.equal(mf.tensor{1, 2}:expand_as(mf.zeros{2, 2}), { {1, 2}, {1, 2} })
  end)
end)

describe("transpositions", function()
  local m = mf.tensor{ {1, 2, 3}, {4, 5, 6} }
  it("transpose, t, permute", function()
    H.equal(m:transpose(1, 2), { {1, 4}, {2, 5}, {3, 6} })
    H.equal(m:transpose(-1, -2), { {1, 4}, {2, 5}, {3, 6} })
    H.equal(m:t(), { {1, 4}, {2, 5}, {3, 6} })
    H.equal(mf.tensor{1, 2}:t(), {1, 2})
    local c = mf.arange(24):reshape(2, 3, 4)
    local p = c:permute{3, 1, 2}
    assert.same({4, 2, 3}, p:shape())
    assert.equal(c[{2, 3, 4}], p[{4, 2, 3}])
    assert.same({3, 4, 2}, c:permute(2, 3, 1):shape())
    assert.same({4, 3, 2}, c:permute(-1, -2, -3):shape())
    assert.same({3, 2}, mf.transpose(m, 1, 2):shape())
  end)
end)

describe("squeeze, unsqueeze, expand, flatten", function()
  it("squeeze and unsqueeze", function()
    local t = mf.zeros{1, 3, 1}
    assert.same({3}, t:squeeze():shape())
    assert.same({3, 1}, t:squeeze(1):shape())
    assert.same({1, 3}, t:squeeze(-1):shape())
    assert.same({1, 3, 1}, t:squeeze(2):shape()) -- size 3: unchanged
    local v = mf.tensor{1, 2, 3}
    assert.same({1, 3}, v:unsqueeze(1):shape())
    assert.same({3, 1}, v:unsqueeze(2):shape())
    assert.same({3, 1}, v:unsqueeze(-1):shape())
    H.equal(v:unsqueeze(2), { {1}, {2}, {3} })
  end)

  it("expand keeps sizes with -1 and adds leading dims", function()
    local v = mf.tensor{ {1}, {2} }
    H.equal(v:expand(2, 3), { {1, 1, 1}, {2, 2, 2} })
    H.equal(v:expand{-1, 2}, { {1, 1}, {2, 2} })
    assert.same({4, 2, 3}, v:expand(4, 2, 3):shape())
    assert.equal(0, v:expand(2, 3):stride(2))
  end)

  it("flatten", function()
    local c = mf.arange(24):reshape(2, 3, 4)
    assert.same({24}, c:flatten():shape())
    assert.same({2, 12}, c:flatten(2):shape())
    assert.same({6, 4}, c:flatten(1, 2):shape())
    assert.same({2, 12}, c:flatten(-2, -1):shape())
    assert.same({1}, mf.tensor(3):flatten():shape())
    H.equal(c:transpose(1, 3):flatten():narrow(1, 1, 4), {0, 12, 4, 16})
  end)

  it("contiguous and clone", function()
    local m = mf.tensor{ {1, 2}, {3, 4} }
    assert.equal(m, m:contiguous()) -- already contiguous: itself
    local tc = m:t():contiguous()
    assert.is_true(tc:is_contiguous())
    H.equal(tc, { {1, 3}, {2, 4} })
    local c = m:clone()
    c[1][1] = 100
    assert.equal(1, m[1][1])
    assert.equal("int64", c:dtype())
  end)
end)

describe("cat and stack", function()
  local a, b = mf.tensor{ {1, 2} }, mf.tensor{ {3, 4} }
  it("cat along a dim (default 1)", function()
    H.equal(mf.cat{a, b}, { {1, 2}, {3, 4} })
    H.equal(mf.cat({a, b}, 2), { {1, 2, 3, 4} })
    H.equal(mf.cat({a, b}, -1), { {1, 2, 3, 4} })
    H.equal(mf.cat{mf.tensor{1}, mf.tensor{2, 3}}, {1, 2, 3})
    H.equal(mf.concat({a, b}, 1), { {1, 2}, {3, 4} })
  end)

  it("stack adds a dim", function()
    local s = mf.stack{mf.tensor{1, 2}, mf.tensor{3, 4}}
    assert.same({2, 2}, s:shape())
    H.equal(s, { {1, 2}, {3, 4} })
    H.equal(mf.stack({mf.tensor{1, 2}, mf.tensor{3, 4}}, 2), { {1, 3}, {2, 4} })
    assert.same({1, 2, 2}, mf.stack({a, b}, 2):shape())
    assert.same({1, 2, 2}, mf.stack({a, b}, -1):shape())
  end)
end)
