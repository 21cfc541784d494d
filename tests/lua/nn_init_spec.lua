-- nn_init_spec.lua — mf.nn.init (ranges and statistics of each initialiser, mf.manual_seed
-- reproducibility, in-place on parameters), the default initialisation of Linear/Conv2d, and
-- mf.gradcheck itself (it accepts right gradients and reports wrong or missing ones).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn = mf.nn
local init = nn.init

local function stats(t)
  local mean = t:mean():item()
  local std = t:std():item()
  return mean, std, t:min():item(), t:max():item()
end

describe("mf.nn.init", function()
  it("constant_, zeros_, ones_ fill in place and return the tensor", function()
    local w = mf.empty { 2, 3 }:requires_grad()
    assert.equal(w, init.constant_(w, 0.5))
    H.equal(w, { { 0.5, 0.5, 0.5 }, { 0.5, 0.5, 0.5 } })
    H.equal(init.zeros_(w), { { 0, 0, 0 }, { 0, 0, 0 } })
    H.equal(init.ones_(w), { { 1, 1, 1 }, { 1, 1, 1 } })
    assert.is_true(w:needs_grad() and w.is_leaf)
  end)

  it("uniform_ and normal_", function()
    local t = mf.empty { 100000 }
    local mean, std, lo, hi = stats(init.uniform_(t, -2, 4))
    assert.is_true(lo >= -2 and hi < 4)
    assert.is_true(math.abs(mean - 1) < 0.05 and math.abs(std - 6 / math.sqrt(12)) < 0.02)
    mean, std = stats(init.normal_(t, 3, 0.5))
    assert.is_true(math.abs(mean - 3) < 0.01 and math.abs(std - 0.5) < 0.01)
  end)

  it("trunc_normal_ redraws values beyond 2 std (TensorFlow's truncated_normal)", function()
    local t = mf.empty { 100000 }
    local mean, std, lo, hi = stats(init.trunc_normal_(t, 0, 0.1))
    assert.is_true(lo >= -0.2 and hi <= 0.2, lo .. " " .. hi)
    assert.is_true(math.abs(mean) < 0.002)
    -- the std of N(0, 1) truncated to [-2, 2] is 0.8796
    assert.is_true(math.abs(std - 0.08796) < 0.002, "std " .. std)
    _, _, lo, hi = stats(init.trunc_normal_(t, 1, 1, 0.5, 1.5)) -- explicit bounds
    assert.is_true(lo >= 0.5 and hi <= 1.5)
  end)

  it("xavier and kaiming use torch's fans and gains", function()
    local w = mf.empty { 200, 300 }
    local _, std, lo, hi = stats(init.xavier_uniform_(w))
    local b = math.sqrt(6 / 500)
    assert.is_true(lo >= -b and hi <= b and hi > 0.95 * b)
    _, std = stats(init.xavier_normal_(w, 2))
    assert.is_true(math.abs(std - 2 * math.sqrt(2 / 500)) < 0.002)
    _, std = stats(init.kaiming_normal_(w, 0, "fan_in", "relu"))
    assert.is_true(math.abs(std - math.sqrt(2 / 300)) < 0.002)
    _, std = stats(init.kaiming_normal_(w, { mode = "fan_out", nonlinearity = "relu" }))
    assert.is_true(math.abs(std - math.sqrt(2 / 200)) < 0.002)
    local c = mf.empty { 16, 8, 3, 3 } -- fan_in = 72
    _, _, lo, hi = stats(init.kaiming_uniform_(c, 0, "fan_in", "relu"))
    b = math.sqrt(2) * math.sqrt(3 / 72)
    assert.is_true(lo >= -b and hi <= b and hi > 0.9 * b)
    H.equal(init.calculate_gain("tanh"), 5 / 3)
    H.err(function() init.xavier_uniform_(mf.empty { 5 }) end, "at least 2 dimensions")
  end)

  it("mf.manual_seed makes initialisation reproducible", function()
    mf.manual_seed(42)
    local a = nn.Linear(5, 3)
    mf.manual_seed(42)
    local b = nn.Linear(5, 3)
    H.equal(a.weight, b.weight:totable(), 0)
    H.equal(a.bias, b.bias:totable(), 0)
  end)

  it("Linear and Conv2d start like torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in))", function()
    local lin = nn.Linear(400, 50)
    local b = 1 / math.sqrt(400)
    local _, _, lo, hi = stats(lin.weight)
    assert.is_true(lo >= -b and hi <= b and hi > 0.9 * b)
    _, _, lo, hi = stats(lin.bias)
    assert.is_true(lo >= -b and hi <= b)
    local conv = nn.Conv2d(8, 16, 3)
    b = 1 / math.sqrt(72)
    _, _, lo, hi = stats(conv.weight)
    assert.is_true(lo >= -b and hi <= b and hi > 0.9 * b)
  end)
end)

describe("mf.gradcheck", function()
  local f64 = { dtype = "float64" }

  it("accepts correct gradients of several inputs and outputs", function()
    assert.is_true(mf.gradcheck(function(x, w) return mf.matmul(x, w):tanh(), (x * x):sum() end,
      { mf.randn({ 3, 4 }, f64), mf.randn({ 4, 2 }, f64) }))
  end)

  it("passes non-float inputs through unchecked", function()
    assert.is_true(mf.gradcheck(function(x, k) return x * k end, { mf.randn({ 3 }, f64), 3 }))
  end)

  it("reports a wrong gradient", function()
    local ok, msg = mf.gradcheck(function(x) return x * x:detach() end, { mf.randn({ 3 }, f64) },
      { raise = false })
    assert.is_false(ok)
    assert.truthy(msg:find("d(output 1)[1] / d(input 1)[1]: analytical", 1, true))
    H.err(function() mf.gradcheck(function(x) return x * x:detach() end, { mf.randn({ 3 }, f64) }) end,
      "gradcheck: d(output 1)")
  end)

  it("reports outputs that autograd did not record", function()
    H.err(function() mf.gradcheck(function(x) return x:detach() * 2 end, { mf.randn({ 2 }, f64) }) end,
      "does not depend on the inputs through recorded ops")
  end)

  it("wants float64 inputs", function()
    H.err(function() mf.gradcheck(function(x) return x * 2 end, { mf.randn { 2 } }) end,
      "gradcheck: input 1 is float32; finite differences need float64 inputs")
  end)
end)
