-- tensor_spec.lua — the tensor userdata: inspection (shape, size, dim, numel, #, dtype, device,
-- item, totable), printing, method and field lookup, identity equality, __close and __gc.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("tensor inspection", function()
  local t = mf.tensor{ {1, 2, 3}, {4, 5, 6} }

  it("shape, size, dim, numel, #", function()
    assert.same({2, 3}, t:shape())
    assert.same({2, 3}, t:size())
    assert.equal(2, t:size(1))
    assert.equal(3, t:size(2))
    assert.equal(3, t:size(-1))
    assert.equal(2, t:size(-2))
    assert.equal(2, t:dim())
    assert.equal(6, t:numel())
    assert.equal(2, #t)
    assert.equal(3, #t[1])
    assert.equal(0, mf.tensor(5):dim())
    assert.same({}, mf.tensor(5):shape())
    assert.equal(1, mf.tensor(5):numel())
    assert.equal(0, mf.zeros{0, 3}:numel())
  end)

  it("dtype, device, type", function()
    assert.equal("int64", t:dtype())
    assert.equal("cpu", t:device())
    assert.equal("int64", t:type())
    assert.equal("float32", mf.ones{2}:dtype())
    assert.is_true(mf.ones{2}:is_floating_point())
    assert.is_false(t:is_floating_point())
  end)

  it("strides and contiguity", function()
    assert.same({3, 1}, t:stride())
    assert.equal(1, t:stride(2))
    assert.is_true(t:is_contiguous())
    assert.same({1, 3}, t:t():stride())
    assert.is_false(t:t():is_contiguous())
  end)

  it("item gives Lua values by dtype", function()
    assert.equal(7, mf.tensor{7}:item())
    assert.equal("integer", math.type(mf.tensor{7}:item()))
    assert.equal("float", math.type(mf.tensor{7.5}:item()))
    assert.equal(7.5, mf.tensor{{7.5}}:item())
    assert.equal(true, mf.tensor(true):item())
    assert.equal(false, mf.tensor{false}:item())
    assert.equal(2.5, mf.tensor(2.5, {dtype = "float64"}):item())
    -- int64 values keep all their bits
    assert.equal(9007199254740993, mf.tensor{9007199254740993}:item())
  end)

  it("totable gives nested Lua values", function()
    assert.same({ {1, 2, 3}, {4, 5, 6} }, t:totable())
    assert.equal("integer", math.type(t:totable()[2][3]))
    assert.equal(5, mf.tensor(5):totable())
    assert.same({true, false}, mf.tensor{true, false}:totable())
    assert.same({ {1.5}, {-2} }, mf.tensor{ {1.5}, {-2} }:totable())
    assert.same({}, mf.zeros{0}:totable())
    assert.same({ {}, {} }, mf.zeros{2, 0}:totable())
    -- a non-contiguous view reads in logical order
    assert.same({ {1, 4}, {2, 5}, {3, 6} }, t:t():totable())
  end)

  it("prints values and a footer", function()
    assert.equal("[[1, 2, 3],\n [4, 5, 6]]\n[int64 tensor, shape 2x3, cpu]", tostring(t))
    assert.equal("[[1., 1., 1.],\n [1., 1., 1.]]\n[float32 tensor, shape 2x3, cpu]",
      tostring(mf.ones{2, 3}))
    assert.equal("[ true, false]\n[bool tensor, shape 2, cpu]", tostring(mf.tensor{true, false}))
    assert.truthy(tostring(mf.tensor(3.5)):find("[float32 scalar, cpu]", 1, true))
    -- large tensors are summarized
    local s = tostring(mf.arange(5000))
    assert.truthy(s:find("...", 1, true))
    assert.truthy(s:find("[int64 tensor, shape 5000, cpu]", 1, true))
  end)
end)

describe("tensor userdata", function()
  it("has a __name and is recognised", function()
    local mt = getmetatable(mf.ones{1})
    assert.equal("moonflow.Tensor", mt.__name)
    assert.is_true(mf.is_tensor(mf.ones{1}))
    assert.is_false(mf.is_tensor({}))
    assert.is_false(mf.is_tensor(3))
  end)

  it("keeps == as identity (not elementwise)", function()
    local a, b = mf.ones{2}, mf.ones{2}
    assert.is_true(a == a)
    assert.is_false(a == b)
    assert.is_nil(getmetatable(a).__eq)
    assert.is_nil(getmetatable(a).__lt)
    assert.is_nil(getmetatable(a).__le)
  end)

  it("finds methods and fields; t.grad is nil before autograd", function()
    local t = mf.ones{2}
    assert.is_function(t.exp)
    assert.is_nil(t.grad)
    assert.is_nil(t.no_such_method)
    assert.equal(mf.Tensor.exp, t.exp)
  end)

  it("takes methods and fields added from Lua", function()
    mf.Tensor.twice = function(self) return self * 2 end
    mf._getters.answer = function() return 42 end
    local t = mf.tensor{1, 2}
    H.equal(t:twice(), {2, 4})
    assert.equal(42, t.answer)
    mf.Tensor.twice, mf._getters.answer = nil, nil
  end)

  it("refuses to set unknown fields", function()
    local t = mf.ones{2}
    H.err(function() t.foo = 1 end, "cannot set field 'foo' of a tensor")
  end)

  it("frees early with <close> and t:close()", function()
    local keep
    do
      local t <close> = mf.ones{1000}
      keep = t
      assert.is_false(t:is_closed())
    end
    assert.is_true(keep:is_closed())
    assert.equal("moonflow.Tensor (closed)", tostring(keep))
    H.err(function() return keep:numel() end, "tensor is closed")
    H.err(function() return keep + 1 end, "tensor is closed")
    H.err(function() return mf.add(1, keep) end, "tensor is closed")
    local u = mf.zeros{3}
    u:close()
    H.err(function() return u:sum() end, "tensor is closed")
    H.err(function() u:close() end, "tensor is closed") -- like a closed Lua file
    do
      local w <close> = mf.zeros{2}
      w:close() -- the <close> at scope end is then a no-op
    end
  end)

  it("keeps views alive after the source is gone", function()
    local v
    do
      local t = mf.arange(6):reshape(2, 3)
      v = t[2]
    end
    collectgarbage()
    collectgarbage()
    H.equal(v, {3, 4, 5})
  end)

  it("survives many allocations (gc releases)", function()
    for _ = 1, 2000 do
      local t = mf.ones{64} + 1
      assert(t)
    end
    collectgarbage()
  end)
end)
