-- reduce_spec.lua — reductions (sum mean max min prod var std argmax argmin) over everything or a
-- 1-based dim, keepdim, 1-based indices, and matmul. Reference values from numpy:
-- x = np.array([[-1.5, 0, 2], [0.5, 3, -2.25]], np.float32), computed in float64 where noted.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local X = { {-1.5, 0.0, 2.0}, {0.5, 3.0, -2.25} }

describe("reductions", function()
  local x = mf.tensor(X)

  it("over everything give 0-d tensors", function()
    local s = x:sum()
    assert.equal(0, s:dim())
    assert.equal(1.75, s:item())
    assert.is_true(math.abs(mf.mean(x):item() - 0.29166666) < 1e-6)
    assert.equal(3.0, x:max():item())
    assert.equal(-2.25, x:min():item())
    assert.equal(0.0, mf.prod(x):item())
    assert.equal(5, x:argmax():item())   -- np.argmax(x) = 4 (0-based, flattened)
    assert.equal(6, x:argmin():item())   -- np.argmin(x) = 5
    assert.equal("int64", x:argmax():dtype())
  end)

  it("over a dim (1-based, negative from the end)", function()
    H.equal(x:sum(1), {-1.0, 3.0, -0.25})
    H.equal(x:sum(2), {0.5, 1.25})
    H.equal(x:sum(-1), {0.5, 1.25})
    H.equal(mf.mean(x, 1), {-0.5, 1.5, -0.125})
    H.equal(mf.mean(x, 2), {0.1666666716337204, 0.4166666567325592})
    H.equal(mf.prod(x, 2), {0.0, -3.375})
    H.equal(mf.argmax(x, 1), {2, 2, 1}) -- np.argmax(x, 0) + 1
    H.equal(mf.argmax(x, 2), {3, 2})
    H.equal(x:argmin(1), {1, 1, 2})
    H.equal(x:argmin(2), {1, 3})
  end)

  it("keepdim", function()
    assert.same({1, 3}, x:sum(1, true):shape())
    assert.same({2, 1}, x:mean(2, true):shape())
    H.equal(x:sum(2, true), { {0.5}, {1.25} })
    assert.same({2, 1}, x:argmax(2, true):shape())
    assert.same({1, 1}, x:sum(nil, true):shape())
  end)

  it("max and min with a dim give values and 1-based indices", function()
    local v, i = x:max(2)
    H.equal(v, {2.0, 3.0})
    H.equal(i, {3, 2})
    assert.equal("int64", i:dtype())
    v, i = mf.min(x, 1)
    H.equal(v, {-1.5, 0.0, -2.25})
    H.equal(i, {1, 1, 2})
    v, i = x:max(1, true)
    assert.same({1, 3}, v:shape())
    H.equal(i, { {2, 2, 1} })
    assert.equal(1, select("#", x:max())) -- values only without a dim
    H.equal(mf.max(x, mf.zeros{3}), { {0, 0, 2}, {0.5, 3, 0} }) -- with a tensor: maximum
    H.equal(mf.min(x, mf.zeros{3}), { {-1.5, 0, 0}, {0, 0, -2.25} })
  end)

  it("integer and bool sums give int64", function()
    local i = mf.tensor{ {1, 2}, {3, 4} }
    assert.equal(10, i:sum():item())
    assert.equal("integer", math.type(i:sum():item()))
    H.equal(i:sum(1), {4, 6})
    H.equal(i:prod(2), {2, 12})
    assert.equal(2, mf.tensor{true, false, true}:sum():item())
    assert.equal("int64", mf.tensor{true, false}:sum():dtype())
    H.equal(i:max(2), {2, 4})
  end)

  it("var and std: unbiased by default, options for the biased ones", function()
    -- np.var(x, ddof=1) = 4.010416666666666, np.var(x) = 3.342013888888889
    assert.is_true(math.abs(x:var():item() - 4.010416666666666) < 1e-5)
    assert.is_true(math.abs(x:var(false):item() - 3.342013888888889) < 1e-5)
    assert.is_true(math.abs(x:var{unbiased = false}:item() - 3.342013888888889) < 1e-5)
    assert.is_true(math.abs(mf.std(x):item() - 2.0026024734496524) < 1e-5)
    H.equal(x:var(2), {3.083333333333333, 6.895833333333334}, 1e-5)
    H.equal(x:var(1), {2.0, 4.5, 9.03125}, 1e-5)
    H.equal(x:std(1, false, false), {1.0, 1.5, 2.125}, 1e-5) -- np.std(x, 0)
    H.equal(x:std(1, {unbiased = false}), {1.0, 1.5, 2.125}, 1e-5)
    assert.same({1, 3}, x:std(1, true):shape())
    H.equal(x:var(1, {correction = 0}), {1.0, 2.25, 4.515625}, 1e-5)
  end)

  it("TensorFlow names keep 1-based dims", function()
    assert.equal(1.75, mf.reduce_sum(x):item())
    H.equal(mf.reduce_sum(x, 1), {-1.0, 3.0, -0.25})
    H.equal(mf.reduce_mean(x, 1), {-0.5, 1.5, -0.125})
    H.equal(mf.reduce_max(x, 2), {2.0, 3.0})
    assert.equal(1, select("#", mf.reduce_max(x, 2)))
    H.equal(mf.reduce_min(x, 2), {-1.5, -2.25})
  end)
end)

describe("matmul", function()
  it("multiplies matrices (numpy reference)", function()
    local a = mf.tensor{ {1, 2, 3}, {4, 5, 6} }:float()
    local b = mf.tensor{ {1, -1}, {2, 0.5}, {-3, 4} }
    H.equal(mf.matmul(a, b), { {-4.0, 12.0}, {-4.0, 22.5} })
    H.equal(a:matmul(b), { {-4.0, 12.0}, {-4.0, 22.5} })
    H.equal(a:mm(b), { {-4.0, 12.0}, {-4.0, 22.5} })
  end)

  it("handles vectors, transposes, batches and integers", function()
    local a = mf.tensor{ {1, 2}, {3, 4} }:float()
    H.equal(mf.matmul(a, mf.tensor{1.0, 1.0}), {3, 7})
    H.equal(mf.matmul(mf.tensor{1.0, 1.0}, a), {4, 6})
    assert.equal(0, mf.matmul(mf.tensor{1.0, 2.0}, mf.tensor{3.0, 4.0}):dim())
    assert.equal(11, mf.dot(mf.tensor{1.0, 2.0}, mf.tensor{3.0, 4.0}):item())
    H.equal(a:t():matmul(a), { {10, 14}, {14, 20} })
    -- np.arange(24.).reshape(2,3,4) @ (np.arange(8.).reshape(4,2) / 10)
    local A = mf.arange(24, {dtype = "float64"}):reshape(2, 3, 4)
    local B = mf.arange(8, {dtype = "float64"}):reshape(4, 2) / 10
    local C = A:matmul(B)
    assert.same({2, 3, 2}, C:shape())
    H.equal(C, { { {2.8, 3.4}, {7.6, 9.8}, {12.4, 16.2} }, { {17.2, 22.6}, {22.0, 29.0}, {26.8, 35.4} } },
      1e-9)
    local I = mf.tensor{ {1, 2}, {3, 4} }
    H.equal(I:matmul(I), { {7, 10}, {15, 22} })
  end)
end)
