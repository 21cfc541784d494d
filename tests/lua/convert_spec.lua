-- convert_spec.lua — dtype and device conversions (to, float, double, long, int, byte, bool, type,
-- cast, cpu, cuda), and the module's odds and ends: threads, clock, version, devices, lazy
-- submodules.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("dtype conversions", function()
  local t = mf.tensor{1.75, -2.5, 0}
  it("to(dtype) and the shorthands", function()
    assert.equal("float64", t:to("float64"):dtype())
    assert.equal("float64", t:double():dtype())
    assert.equal("int64", t:long():dtype())
    H.equal(t:long(), {1, -2, 0})
    H.equal(t:int(), {1, -2, 0})
    assert.equal("int32", t:int():dtype())
    assert.equal("uint8", mf.tensor{3, 200}:byte():dtype())
    H.equal(t:bool(), {true, true, false})
    H.equal(mf.tensor{1, 2}:float(), {1.0, 2.0})
    assert.equal("float32", mf.tensor{1, 2}:float():dtype())
    assert.equal("int64", t:to("long"):dtype())
    assert.equal("float64", t:type("double"):dtype())
  end)

  it("returns the tensor itself when nothing changes", function()
    assert.equal(t, t:float())
    assert.equal(t, t:to("float32"))
    assert.equal(t, t:to("cpu"))
    assert.equal(t, t:cpu())
  end)

  it("to(other tensor) and to{dtype=, device=}", function()
    assert.equal("int64", t:to(mf.tensor{1}):dtype())
    assert.equal("float64", t:to{dtype = "float64", device = "cpu"}:dtype())
    assert.equal("float64", t:to("cpu", "float64"):dtype())
  end)

  it("mf.cast (TensorFlow) takes tensors and Lua values", function()
    assert.equal("int32", mf.cast(t, "int32"):dtype())
    H.equal(mf.cast({1, 2}, "float32"), {1.0, 2.0})
    assert.equal("float32", mf.cast({1, 2}, mf.float32):dtype())
    assert.equal("bool", mf.cast(mf.tensor{0, 3}, "bool"):dtype())
  end)

  it("a conversion copies (the original is untouched)", function()
    local d = t:double()
    d[1] = 9
    assert.equal(1.75, t[1])
  end)
end)

describe("devices", function()
  it("cpu is always there", function()
    assert.equal("cpu", mf.ones{1}:device())
    assert.equal("cpu", mf.list_devices()[1])
    assert.equal(mf.cuda.device_count() + 1, #mf.list_devices())
    assert.equal(mf.cuda.device_count() > 0, mf.cuda.is_available())
    assert.equal("cpu", mf.get_default_device())
  end)

  it("cuda without a GPU is a clear error", function()
    if mf.cuda.is_available() then
      local g = mf.tensor{1, 2}:cuda()
      assert.equal("cuda:0", g:device())
      H.equal(g:cpu(), {1, 2})
      H.equal((g * 2):cpu(), {2, 4})
      assert.equal("cuda:0", mf.tensor{1}:to("cuda:0"):device())
    else
      H.err(function() return mf.tensor{1}:cuda() end, "cuda")
      H.err(function() return mf.tensor{1}:to("cuda:0") end, "cuda:0")
      H.err(function() return mf.zeros({1}, {device = "cuda:0"}) end, "cuda:0")
    end
  end)

  it("mf.device sets the default device of new tensors", function()
    local d = mf.device("cpu", function() return mf.zeros{1}:device() end)
    assert.equal("cpu", d)
    do
      local _ <close> = mf.device("/cpu:0")
      assert.equal("cpu", mf.ones{2}:device())
    end
    assert.equal("cpu", mf.get_default_device())
  end)
end)

describe("module", function()
  it("threads", function()
    local n = mf.get_num_threads()
    assert.is_true(n >= 1)
    mf.set_num_threads(1)
    assert.equal(1, mf.get_num_threads())
    H.equal(mf.ones{1000}:sum(), 1000.0)
    mf.set_num_threads(n)
    assert.equal(n, mf.get_num_threads())
  end)

  it("clock is monotonic seconds", function()
    local a = mf.clock()
    local b = mf.clock()
    assert.equal("float", math.type(a))
    assert.is_true(b >= a)
  end)

  it("version and BLAS info", function()
    assert.equal("0.1.0", mf.version)
    assert.is_string(mf.blas_info())
  end)

  it("loads submodules lazily and only when they exist", function()
    assert.is_nil(mf.no_such_submodule)
    assert.is_nil(mf.core)
    package.preload["moonflow.fakemod"] = function() return {answer = 42} end
    assert.equal(42, mf.fakemod.answer)
    assert.equal(mf.fakemod, package.loaded["moonflow.fakemod"])
  end)

  it("allclose", function()
    assert.is_true(mf.allclose(mf.tensor{1.0, 2.0}, mf.tensor{1.0, 2.0 + 1e-7}))
    assert.is_false(mf.allclose(mf.tensor{1.0, 2.0}, mf.tensor{1.0, 2.1}))
    assert.is_true(mf.tensor{1.0}:allclose(mf.tensor{1.05}, 0, 0.1))
  end)

  it("reads raw bytes back with mf.frombytes, the inverse of t:tobytes", function()
    local t = mf.tensor({ { 1.5, -2 }, { 3, 0.25 } })
    local back = mf.frombytes(t:t():tobytes(), "float32", { 2, 2 })
    assert.same({ { 1.5, 3 }, { -2, 0.25 } }, back:totable())
    assert.equal("float32", back:dtype())
    local i = mf.frombytes(string.pack("<i8<i8<i8", 7, -1, 1 << 40), "int64", { 3 })
    assert.same({ 7, -1, 1 << 40 }, i:totable())
    assert.same({ 9 }, mf.frombytes(string.pack("<d", 9), "float64", {}):reshape({ 1 }):totable())
    assert.same({ 0, 2 }, mf.frombytes("", "uint8", { 0, 2 }):shape())
    H.err(function() mf.frombytes("abc", "float32", { 1 }) end,
      "frombytes: 3 bytes for 1 float32 elements (4 bytes expected)")
    H.err(function() mf.frombytes("abcd", "float99", { 1 }) end, "unknown dtype 'float99'")
    H.err(function() mf.frombytes("abcd", "float32", { -1 }) end, "frombytes")
  end)
end)
