-- gradgrad_spec.lua — second derivatives: mf.grad with create_graph through every differentiable
-- op checked by mf.gradgradcheck (float64 finite differences of the first derivatives, with
-- respect to the inputs and to the output gradients), third derivatives the same way, closed
-- forms of d2/dx2, a gradient penalty through a small conv net against PyTorch, and
-- mf.gradgradcheck itself (it reports wrong second derivatives and bad arguments).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local F = mf.nn.functional

local f64 = { dtype = "float64" }
local function randn(shape) return mf.randn(shape, f64) end
local function rand(shape, lo, hi) return mf.rand(shape, f64) * (hi - lo) + lo end
local opts = { atol = 1e-5, rtol = 1e-4 }

describe("second derivatives (create_graph)", function()
  it("d2/dx2 of x / (x^2 + 1) is 2x (x^2 - 3) / (x^2 + 1)^3", function()
    local xs = { -2, -0.5, 0.25, 1, 3 }
    local x = mf.tensor(xs, f64):requires_grad()
    local g = mf.grad((x / (x * x + 1)):sum(), x, nil, { create_graph = true })
    assert.is_true(g:needs_grad())
    local g2 = mf.grad(g:sum(), x)
    local d1, d2 = {}, {}
    for i, v in ipairs(xs) do
      d1[i] = (1 - v * v) / (v * v + 1) ^ 2
      d2[i] = 2 * v * (v * v - 3) / (v * v + 1) ^ 3
    end
    H.equal(g, d1, 1e-12)
    H.equal(g2, d2, 1e-12)
  end)

  it("closed forms through the rules that read their output: exp, sqrt, tanh, sigmoid, pow, softmax",
    function()
      local xs = { 0.3, 0.9, 1.7 }
      local function second(fn)
        local x = mf.tensor(xs, f64):requires_grad()
        local g = mf.grad(fn(x):sum(), x, nil, { create_graph = true })
        return mf.grad(g:sum(), x):totable()
      end
      local function each(f)
        local r = {}
        for i, v in ipairs(xs) do r[i] = f(v) end
        return r
      end
      H.equal(second(mf.exp), each(math.exp), 1e-12)
      H.equal(second(mf.sqrt), each(function(v) return -0.25 * v ^ -1.5 end), 1e-12)
      H.equal(second(mf.tanh), each(function(v)
        local t = math.tanh(v)
        return -2 * t * (1 - t * t)
      end), 1e-12)
      H.equal(second(mf.sigmoid), each(function(v)
        local s = 1 / (1 + math.exp(-v))
        return s * (1 - s) * (1 - 2 * s)
      end), 1e-12)
      H.equal(second(function(x) return mf.pow(2.5, x) end),
        each(function(v) return 2.5 ^ v * math.log(2.5) ^ 2 end), 1e-12)
      H.equal(second(function(x) return x ^ 3 end), each(function(v) return 6 * v end), 1e-12)
      -- sum(softmax) is 1 whatever x: every derivative is 0; log(softmax(x)[1]) = x1 - logsumexp
      H.equal(second(function(x) return F.softmax(x, 1) end), { 0, 0, 0 }, 1e-12)
      local e = each(math.exp)
      local z = e[1] + e[2] + e[3]
      local x = mf.tensor(xs, f64):requires_grad()
      local g = mf.grad(F.log_softmax(x, 1):narrow(1, 1, 1):sum(), x, nil, { create_graph = true })
      local h = mf.grad(g:narrow(1, 2, 1):sum(), x) -- d/dx of -softmax(x)[2]
      H.equal(h, { e[1] * e[2] / z ^ 2, -(e[2] / z) * (1 - e[2] / z), e[3] * e[2] / z ^ 2 }, 1e-12)
    end)

  it("gradgradcheck: the elementwise ops", function()
    local a, b = rand({ 2, 3 }, 0.5, 2), rand({ 3 }, 0.5, 2)
    for _, op in ipairs { "add", "sub", "mul", "div", "pow", "maximum", "minimum" } do
      assert.is_true(mf.gradgradcheck(mf[op], { a:clone(), b:clone() }, opts), op)
    end
    for _, op in ipairs { "neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "relu" } do
      assert.is_true(mf.gradgradcheck(mf[op], { rand({ 2, 3 }, 0.5, 2) }, opts), op)
    end
    local x = randn { 2, 3 }
    assert.is_true(mf.gradgradcheck(function(t) return mf.clamp(t, -0.3, 0.4) * t end, { x:clone() }, opts))
    assert.is_true(mf.gradgradcheck(function(p, q) return mf.where(p:gt(q), p * q, p / (q * q + 1)) end,
      { randn { 2, 3 }, randn { 2, 3 } }, opts))
  end)

  it("gradgradcheck: views, indexing, cat and stack", function()
    local function sq(t) return t * t end
    local cases = {
      function(t) return sq(t:narrow(2, 2, 2)) end,
      function(t) return sq(t:select(3, 4)) end,
      function(t) return sq(t[{ {}, { 1, 3 }, 2 }]) end,
      function(t) return sq(t:transpose(1, 3)) end,
      function(t) return sq(t:permute { 3, 1, 2 }) end,
      function(t) return sq(t:reshape { 4, 6 }) end,
      function(t) return sq(t:flatten(1, 2)) end,
      function(t) return sq(t:unsqueeze(2):expand { 2, 3, 3, 4 }) end,
      function(t) return sq(t:transpose(1, 2):contiguous()) end,
      function(t) return mf.cat({ sq(t), t, t:exp() }, 2) end,
      function(t) return mf.stack({ sq(t), t:tanh() }, 1) end,
    }
    for i, fn in ipairs(cases) do
      assert.is_true(mf.gradgradcheck(fn, { randn { 2, 3, 4 } }, opts), "case " .. i)
    end
  end)

  it("gradgradcheck: every reduction along a dim and over all", function()
    for _, op in ipairs { "sum", "mean", "prod", "max", "min", "var", "std" } do
      for _, dim in ipairs { 1, -1, false } do
        local fn = dim and function(t) return t[op](t, dim) end or function(t) return t[op](t) end
        assert.is_true(mf.gradgradcheck(fn, { rand({ 2, 3, 4 }, 0.5, 2) }, opts),
          op .. " dim " .. tostring(dim))
      end
    end
  end)

  it("gradgradcheck: matmul shapes", function()
    for _, s in ipairs { { { 3, 4 }, { 4, 2 } }, { { 4 }, { 4, 2 } }, { { 3, 4 }, { 4 } },
      { { 2, 3, 4 }, { 4, 2 } } } do
      assert.is_true(mf.gradgradcheck(function(p, q) return mf.matmul(p, q):tanh() end,
        { randn(s[1]), randn(s[2]) }, opts))
    end
    assert.is_true(mf.gradgradcheck(F.linear, { randn { 3, 4 }, randn { 2, 4 }, randn { 2 } }, opts))
  end)

  it("gradgradcheck: conv2d, the pools, softmax, log_softmax, inference batch_norm", function()
    local x = randn { 2, 2, 5, 5 }
    assert.is_true(mf.gradgradcheck(function(a, w, b) return F.conv2d(a, w, b, { stride = 2, padding = 1 }) end,
      { x:clone(), randn { 3, 2, 3, 3 }, randn { 3 } }, opts))
    assert.is_true(mf.gradgradcheck(function(a, w) return F.conv2d(a, w):tanh() end,
      { x:clone(), randn { 2, 2, 2, 2 } }, opts))
    assert.is_true(mf.gradgradcheck(function(a, w)
      return F.conv2d(a, w, nil, { padding = 1, data_format = "NHWC" }):tanh()
    end, { randn { 2, 4, 4, 2 }, randn { 3, 2, 3, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(function(a) return F.max_pool2d(a * a, 3, { stride = 2, padding = 1 }) end,
      { x:clone() }, opts))
    assert.is_true(mf.gradgradcheck(function(a) return F.avg_pool2d(a * a, 3, { stride = 2, padding = 1 }) end,
      { x:clone() }, opts))
    for dim = 1, 3 do
      assert.is_true(mf.gradgradcheck(function(a) return F.softmax(a, dim) end, { randn { 2, 3, 4 } }, opts))
      assert.is_true(mf.gradgradcheck(function(a) return F.log_softmax(a, dim) end, { randn { 2, 3, 4 } }, opts))
    end
    local rm, rv = mf.tensor({ 0.1, -0.2 }, f64), mf.tensor({ 0.7, 1.3 }, f64)
    assert.is_true(mf.gradgradcheck(function(a, w, b)
      return F.batch_norm(a, rm, rv, w, b, false):tanh()
    end, { randn { 3, 2, 2, 2 }, rand({ 2 }, 0.5, 1.5), randn { 2 } }, opts))
  end)

  it("gradgradcheck: the losses", function()
    local t = mf.tensor({ 1, 3, 2, 3 }, { dtype = "int64" })
    assert.is_true(mf.gradgradcheck(function(x) return F.cross_entropy(x, t) end, { randn { 4, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(function(x, p) return F.cross_entropy(x, p) end,
      { randn { 4, 3 }, F.softmax(randn { 4, 3 }, 2) }, opts))
    assert.is_true(mf.gradgradcheck(function(x) return F.nll_loss(F.log_softmax(x, 2), t) end,
      { randn { 4, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(F.mse_loss, { randn { 4, 3 }, randn { 4, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(F.binary_cross_entropy_with_logits,
      { randn { 4, 3 }, rand({ 4, 3 }, 0, 1) }, opts))
  end)

  it("a gradient penalty through conv, pool, linear and cross_entropy equals PyTorch's", function()
    if not H.can_import("import torch") then return pending("no torch") end
    mf.manual_seed(3)
    local x, w, v = randn { 2, 1, 6, 6 }, randn { 2, 1, 3, 3 }, randn { 3, 18 }
    local t = mf.tensor({ 1, 3 }, { dtype = "int64" })
    w:requires_grad()
    v:requires_grad()
    x:requires_grad()
    local function net(a)
      local h = F.max_pool2d(F.conv2d(a, w, nil, { padding = 1 }):tanh(), 2)
      return F.cross_entropy(F.linear(h:flatten(2), v), t)
    end
    local loss = net(x)
    local gx = mf.grad(loss, x, nil, { create_graph = true })
    local penalty = (gx * gx):sum()
    local gw, gv = table.unpack(mf.grad(penalty, { w, v }))
    local function flat(a) return table.concat(a:detach():reshape { -1 }:totable(), " ") end
    local out = H.python([[
import sys, torch
import torch.nn.functional as F
def arr(s, shape): return torch.tensor([float(v) for v in s.split()], dtype=torch.float64).reshape(shape)
x = arr(sys.argv[1], (2, 1, 6, 6)).requires_grad_()
w = arr(sys.argv[2], (2, 1, 3, 3)).requires_grad_()
v = arr(sys.argv[3], (3, 18)).requires_grad_()
h = F.max_pool2d(torch.tanh(F.conv2d(x, w, padding=1)), 2)
loss = F.cross_entropy(F.linear(h.flatten(1), v), torch.tensor([0, 2]))
gx, = torch.autograd.grad(loss, x, create_graph=True)
gw, gv = torch.autograd.grad((gx * gx).sum(), (w, v))
print("R", loss.item())
print("R", " ".join(repr(a) for a in gw.flatten().tolist()))
print("R", " ".join(repr(a) for a in gv.flatten().tolist()))
]], flat(x), flat(w), flat(v))
    local lines = {} -- the result lines (torch may warn on stderr)
    for _, l in ipairs(H.lines(out)) do
      if l:sub(1, 2) == "R " then lines[#lines + 1] = l:sub(3) end
    end
    assert(#lines == 3, out)
    local function nums(s)
      local r = {}
      for n in s:gmatch("%S+") do r[#r + 1] = tonumber(n) end
      return r
    end
    assert.near(tonumber(lines[1]), loss:item(), 1e-12)
    H.equal(gw:reshape { -1 }, nums(lines[2]), 1e-10)
    H.equal(gv:reshape { -1 }, nums(lines[3]), 1e-10)
  end)

  it("third derivatives: gradgradcheck of first derivatives taken with create_graph", function()
    local function d1(f)
      return function(...)
        local n = select("#", ...)
        return table.unpack(mf.grad(f(...):sum(), { ... }, nil, { create_graph = true }), 1, n)
      end
    end
    assert.is_true(mf.gradgradcheck(d1(function(x) return x / (x * x + 1) end), { randn { 4 } }, opts))
    assert.is_true(mf.gradgradcheck(d1(function(x) return F.log_softmax(x, 2) * x:sigmoid() end),
      { randn { 2, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(d1(function(x, w) return F.conv2d(x, w, nil, { padding = 1 }):tanh() end),
      { randn { 1, 2, 4, 4 }, randn { 2, 2, 3, 3 } }, opts))
    assert.is_true(mf.gradgradcheck(d1(function(x)
      return F.max_pool2d(x * x * x, 2) + F.avg_pool2d(x:exp(), 2) + x[{ {}, {}, { 1, 2 }, 3 }]:sqrt()
    end), { rand({ 1, 1, 4, 4 }, 0.5, 2) }, opts))
    assert.is_true(mf.gradgradcheck(d1(function(x)
      return F.cross_entropy(x, mf.tensor({ 1, 3 }, { dtype = "int64" }))
    end), { randn { 2, 3 } }, opts))
  end)

  it("training batch_norm: the fused op refuses create_graph, the composed form is right", function()
    local x = randn { 4, 2 }:requires_grad()
    local y = F.batch_norm(x, mf.zeros({ 2 }, f64), mf.ones({ 2 }, f64), nil, nil, true)
    H.err(function() mf.grad((y * y * y):sum(), x, nil, { create_graph = true }) end,
      "batch_norm: no double backward (create_graph) through the fused op in training mode")
    assert.is_true(mf.gradgradcheck(function(a, w, b)
      return F.batch_norm_composed(a, nil, nil, w, b, true):tanh()
    end, { randn { 3, 2, 2 }, rand({ 2 }, 0.5, 1.5), randn { 2 } }, opts))
  end)
end)

describe("mf.gradgradcheck", function()
  it("accepts right second derivatives and given grad_outputs", function()
    assert.is_true(mf.gradgradcheck(function(x, w) return mf.matmul(x, w):tanh(), (x * x):sum() end,
      { randn { 3, 4 }, randn { 4, 2 } }))
    assert.is_true(mf.gradgradcheck(function(x) return x:exp() end, { randn { 3 } },
      { grad_outputs = mf.tensor({ 1, -2, 0.5 }, f64) }))
    -- integer and number arguments pass through; fn gets its own arguments only
    assert.is_true(mf.gradgradcheck(function(...)
      assert.equal(2, select("#", ...))
      local x, k = ...
      return x * x * k
    end, { randn { 3 }, 3 }))
  end)

  it("reports a second derivative autograd cannot see", function()
    -- d/dx of x * detach(x) is detach(x) for autograd but 2x numerically: its derivative differs
    local ok, msg = mf.gradgradcheck(function(x) return x * x:detach() end, { randn { 3 } },
      { raise = false })
    assert.is_false(ok)
    assert.matches("d%(output 1%)%[%d+%] / d%(input 1%)", msg)
    H.err(function() mf.gradgradcheck(function(x) return x * x:detach() end, { randn { 3 } }) end,
      "gradgradcheck: d(output 1)")
  end)

  it("rejects bad arguments with clear errors", function()
    H.err(function() mf.gradgradcheck(42, { randn { 2 } }) end, "gradgradcheck: expected a function")
    H.err(function() mf.gradgradcheck(function(x) return x * x end, { mf.randn { 2 } }) end,
      "gradgradcheck: input 1 is float32; finite differences need float64 inputs")
    H.err(function() mf.gradgradcheck(function(x) return x * x end, { 3 }) end,
      "gradgradcheck: no input is a float tensor")
    H.err(function()
      mf.gradgradcheck(function(x) return x * x, x:exp() end, { randn { 2 } }, { grad_outputs = { randn { 2 } } })
    end, "gradgradcheck: grad_outputs must be 2 tensor(s), one per float output")
    H.err(function()
      mf.gradgradcheck(function(x) return x * x end, { randn { 2 } }, { grad_outputs = randn { 3 } })
    end, "gradgradcheck: grad_output 1 has 3 elements but output 1 has 2")
    H.err(function()
      mf.gradgradcheck(function(x) return x:detach() * 2 end, { randn { 2 } })
    end, "gradgradcheck: no output of the function depends on the inputs through recorded ops")
  end)
end)
