-- math_spec.lua — elementwise math: operators and functions with numbers on either side,
-- broadcasting, PyTorch dtype promotion (Lua numbers do not promote a tensor's dtype), unary
-- functions against numpy, comparisons, logic, where and clamp.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

-- x and the numpy results below: x = np.array([[-1.5, 0, 2], [0.5, 3, -2.25]], np.float32),
-- np.exp(x), np.tanh(x), 1/(1+np.exp(-x)) (in float64), np.sqrt(abs(x)), np.log(abs(x)+1).
local X = { {-1.5, 0.0, 2.0}, {0.5, 3.0, -2.25} }
local EXP = { {0.22313015162944794, 1.0, 7.3890557289123535},
  {1.6487212181091309, 20.08553695678711, 0.1053992211818695} }
local TANH = { {-0.9051482081413269, 0.0, 0.9640275835990906},
  {0.46211719512939453, 0.9950547814369202, -0.9780260920524597} }
local SIGMOID = { {0.18242552380635635, 0.5, 0.8807970779778823},
  {0.6224593312018546, 0.9525741268224334, 0.09534946489910949} }
local SQRT_ABS = { {1.2247449159622192, 0.0, 1.4142135381698608},
  {0.7071067690849304, 1.7320507764816284, 1.5} }
local LOG_ABS1 = { {0.9162907600402832, 0.0, 1.0986123085021973},
  {0.40546509623527527, 1.3862943649291992, 1.1786550283432007} }

describe("arithmetic", function()
  local a = mf.tensor{ {1, 2}, {3, 4} }
  local b = mf.tensor{ {10, 20}, {30, 40} }

  it("operators with tensors and numbers on either side", function()
    H.equal(a + b, { {11, 22}, {33, 44} })
    H.equal(b - a, { {9, 18}, {27, 36} })
    H.equal(a * b, { {10, 40}, {90, 160} })
    H.equal(b / a, { {10, 10}, {10, 10} })
    H.equal(a ^ 2, { {1, 4}, {9, 16} })
    H.equal(-a, { {-1, -2}, {-3, -4} })
    H.equal(a + 1, { {2, 3}, {4, 5} })
    H.equal(1 + a, { {2, 3}, {4, 5} })
    H.equal(10 - a, { {9, 8}, {7, 6} })
    H.equal(a * 0.5, { {0.5, 1}, {1.5, 2} })
    H.equal(12 / a, { {12, 6}, {4, 3} })
    H.equal(2 ^ a, { {2, 4}, {8, 16} })
  end)

  it("% and // are numpy's remainder and floor division", function()
    -- np.remainder([5, -5, 7], 3) = [2, 1, 1]; np.floor_divide(...) = [1, -2, 2]
    local v = mf.tensor{5, -5, 7}
    H.equal(v % 3, {2, 1, 1})
    H.equal(v // 3, {1, -2, 2})
    H.equal(mf.remainder(mf.tensor{5.5, -5.5}, 2), {1.5, 0.5})
    H.equal(mf.floor_divide(v, 3), {1, -2, 2})
  end)

  it("functions and methods", function()
    H.equal(mf.add(a, b), { {11, 22}, {33, 44} })
    H.equal(mf.sub(a, 1), { {0, 1}, {2, 3} })
    H.equal(mf.mul(2, a), { {2, 4}, {6, 8} })
    H.equal(mf.div(a, 2), { {0.5, 1}, {1.5, 2} })
    H.equal(mf.pow(a, 3), { {1, 8}, {27, 64} })
    H.equal(mf.neg(a), { {-1, -2}, {-3, -4} })
    H.equal(a:add(b), { {11, 22}, {33, 44} })
    H.equal(a:mul(a), { {1, 4}, {9, 16} })
    H.equal(mf.maximum(a, mf.tensor{2, 2}), { {2, 2}, {3, 4} })
    H.equal(mf.minimum(a, 2), { {1, 2}, {2, 2} })
    H.equal(mf.add({1, 2}, {3, 4}), {4, 6}) -- tables are converted
    H.equal(mf.multiply(a, b), { {10, 40}, {90, 160} })
    H.equal(mf.subtract(b, a), { {9, 18}, {27, 36} })
    H.equal(mf.square(a), { {1, 4}, {9, 16} })
  end)

  it("broadcasts like numpy", function()
    local col = mf.tensor{ {1}, {2}, {3} } -- 3x1
    local row = mf.tensor{10, 20}        -- 2
    local r = col + row
    assert.same({3, 2}, r:shape())
    H.equal(r, { {11, 21}, {12, 22}, {13, 23} })
    H.equal(mf.ones{2, 3} * mf.tensor{1, 2, 3}, { {1, 2, 3}, {1, 2, 3} })
    assert.same({2, 1, 4}, (mf.ones{2, 1, 1} + mf.ones{4}):shape())
  end)

  it("promotes dtypes as PyTorch does", function()
    local i = mf.tensor{1, 2}
    assert.equal("int64", (i + 1):dtype())
    assert.equal("float32", (i * 2.5):dtype())
    assert.equal("float32", (i / i):dtype()) -- true division
    H.equal(mf.tensor{1, 2} / 2, {0.5, 1})
    assert.equal("float32", (i + mf.ones{2}):dtype())
    local i32 = mf.tensor({1, 2}, {dtype = "int32"})
    assert.equal("int32", (i32 + 1):dtype()) -- a Lua number does not promote
    assert.equal("int64", (i32 + i):dtype())
    local u8 = mf.tensor({250}, {dtype = "uint8"})
    assert.equal("uint8", (u8 + 1):dtype())
    assert.equal("int64", (mf.tensor{true} + 1):dtype())
    local d = mf.tensor({1}, {dtype = "float64"})
    assert.equal("float64", (d + 0.1):dtype())
    assert.equal(1.1, (d + 0.1):item()) -- 0.1 stays exact beside float64
    assert.equal("float32", (mf.ones{1} + mf.ones({1}, {dtype = "float64"}):float()):dtype())
    assert.equal("float64", (mf.ones{1} + d):dtype())
  end)
end)

describe("unary functions (numpy references)", function()
  local x = mf.tensor(X)
  it("exp, tanh, sigmoid, sqrt, log, abs, relu, sign", function()
    H.equal(mf.exp(x), EXP, 1e-6)
    H.equal(x:exp(), EXP, 1e-6)
    H.equal(mf.tanh(x), TANH, 1e-6)
    H.equal(mf.sigmoid(x), SIGMOID, 1e-6)
    H.equal(mf.sqrt(mf.abs(x)), SQRT_ABS, 1e-6)
    H.equal(mf.log(x:abs() + 1), LOG_ABS1, 1e-6)
    H.equal(mf.abs(x), { {1.5, 0, 2}, {0.5, 3, 2.25} })
    H.equal(mf.relu(x), { {0, 0, 2}, {0.5, 3, 0} })
    H.equal(x:relu(), { {0, 0, 2}, {0.5, 3, 0} })
    H.equal(mf.sign(x), { {-1, 0, 1}, {1, 1, -1} })
    H.equal(mf.neg(x), { {1.5, 0, -2}, {-0.5, -3, 2.25} })
  end)

  it("gives float32 for integer input of exp/log/sqrt/tanh/sigmoid", function()
    assert.equal("float32", mf.exp(mf.tensor{0, 1}):dtype())
    H.equal(mf.sqrt(mf.tensor{4, 9}), {2, 3})
    assert.equal("int64", mf.abs(mf.tensor{-3}):dtype())
  end)

  it("log and sqrt of out-of-domain values give nan and -inf", function()
    local r = mf.log(mf.tensor{0.0, -1.0}):totable()
    assert.equal(-math.huge, r[1])
    assert.is_true(r[2] ~= r[2])
  end)

  it("clamp with optional bounds", function()
    H.equal(mf.clamp(x, -1, 1), { {-1, 0, 1}, {0.5, 1, -1} })
    H.equal(x:clamp(0), { {0, 0, 2}, {0.5, 3, 0} })
    H.equal(x:clamp(nil, 0), { {-1.5, 0, 0}, {0, 0, -2.25} })
    H.equal(mf.clamp(mf.tensor{-5, 5}, -2, 2), {-2, 2})
    assert.equal("int64", mf.clamp(mf.tensor{-5, 5}, -2, 2):dtype())
  end)
end)

describe("comparisons and logic", function()
  local a = mf.tensor{1, 2, 3}
  it("eq ne gt ge lt le give bool tensors", function()
    assert.equal("bool", mf.eq(a, 2):dtype())
    H.equal(mf.eq(a, 2), {false, true, false})
    H.equal(mf.ne(a, 2), {true, false, true})
    H.equal(mf.gt(a, 2), {false, false, true})
    H.equal(mf.ge(a, 2), {false, true, true})
    H.equal(mf.lt(a, 2), {true, false, false})
    H.equal(mf.le(a, 2), {true, true, false})
    H.equal(a:gt(1.5), {false, true, true})
    H.equal(a:eq(mf.tensor{1, 0, 3}), {true, false, true})
    H.equal(mf.lt(2, a), {false, false, true}) -- a number on the left
    H.equal(mf.greater(a, 1), {false, true, true})
    H.equal(mf.less(a, 3), {true, true, false})
    H.equal(mf.equal(a, 3), {false, false, true})
    H.equal(mf.greater_equal(a, 3), {false, false, true})
    H.equal(mf.less_equal(a, 1), {true, false, false})
    H.equal(mf.not_equal(a, 1), {false, true, true})
  end)

  it("logical_and / or / not on bools and numbers", function()
    local p, q = mf.tensor{true, true, false, false}, mf.tensor{true, false, true, false}
    H.equal(mf.logical_and(p, q), {true, false, false, false})
    H.equal(mf.logical_or(p, q), {true, true, true, false})
    H.equal(mf.logical_not(p), {false, false, true, true})
    H.equal(mf.logical_and(mf.tensor{0, 1, 2}, 1), {false, true, true})
    assert.equal("bool", mf.logical_not(mf.tensor{0, 5}):dtype())
  end)

  it("where picks from tensors or numbers", function()
    local c = mf.tensor{true, false, true}
    H.equal(mf.where(c, mf.tensor{1, 2, 3}, mf.tensor{10, 20, 30}), {1, 20, 3})
    H.equal(mf.where(c, 1, 0), {1, 0, 1})
    H.equal(mf.where(c, mf.tensor{1.5, 2.5, 3.5}, 0), {1.5, 0, 3.5})
    assert.equal("float32", mf.where(c, mf.tensor{1.5, 2.5, 3.5}, 0):dtype())
    H.equal(mf.where(mf.tensor{ {true}, {false} }, mf.tensor{1, 2}, -1), { {1, 2}, {-1, -1} })
  end)

  it("the tutorial's pixel example", function()
    local rgb = mf.constant{ { {255}, {0}, {126} } }
    local cond = mf.logical_or(mf.greater(rgb, 250), mf.less(rgb, 5))
    H.equal(cond, { { {true}, {true}, {false} } })
    local out = mf.where(cond, mf.fill(mf.shape(rgb), 1), mf.fill(mf.shape(rgb), 5))
    H.equal(out, { { {1}, {1}, {5} } })
  end)
end)
