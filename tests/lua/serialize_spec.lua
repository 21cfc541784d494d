-- serialize_spec.lua — mf.save/mf.load (safetensors), mf.save_npz/mf.load_npz and
-- mf.save_npy/mf.load_npy: round trips, flattening of nested tables, metadata, selection, errors,
-- and the real readers and writers: numpy (np.load, np.savez, np.savez_compressed, a zip64 archive
-- from Python's zipfile), Python's safetensors (numpy and torch front ends). Python runs through
-- /usr/bin/python3; a peer that is not importable makes its tests pending, saying so.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local PY = "/usr/bin/python3"
local dir = os.tmpname()
os.remove(dir)
assert(os.execute("mkdir -p " .. dir))
local function at(name) return dir .. "/" .. name end

-- Runs a Python program (text) with /usr/bin/python3; returns ok, output.
local function python(code)
  local f = assert(io.open(at("prog.py"), "w"))
  f:write(code)
  f:close()
  local p = io.popen(PY .. " " .. at("prog.py") .. " 2>&1")
  local out = p:read("a")
  local ok = p:close()
  return ok, out
end

local have = {}
local function importable(mod)
  if have[mod] == nil then
    -- find_spec does not import the module (importing torch takes seconds)
    have[mod] = os.execute(PY .. " -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(\"" ..
      mod .. "\") is None)' >/dev/null 2>&1") == true
  end
  return have[mod]
end

-- The test body runs only when the Python modules are importable; pending otherwise.
local function with_python(mods, name, fn)
  it(name, function()
    for _, m in ipairs(mods) do
      if not importable(m) then
        pending("python module '" .. m .. "' is not importable by " .. PY .. ": skipped")
        return
      end
    end
    fn()
  end)
end

local function sample()
  return {
    f32 = mf.tensor({ { 1.5, -2 }, { 3, 4.25 } }),
    f64 = mf.tensor({ 0.1, 0.2, 0.3 }, { dtype = "float64" }),
    i32 = mf.tensor({ -7, 8 }, { dtype = "int32" }),
    i64 = mf.tensor({ { 1, 2, 3 } }, { dtype = "int64" }),
    u8 = mf.tensor({ 0, 255, 7 }, { dtype = "uint8" }),
    b = mf.tensor({ true, false, true }),
    scalar = mf.tensor(42.0),
    empty = mf.zeros({ 0, 3 }),
    layer1 = { weight = mf.arange(6):reshape(2, 3):float(), bias = mf.zeros({ 2 }) },
  }
end

local flat_names = { "f32", "f64", "i32", "i64", "u8", "b", "scalar", "empty", "layer1.weight", "layer1.bias" }

local function flat(s)
  return {
    f32 = s.f32, f64 = s.f64, i32 = s.i32, i64 = s.i64, u8 = s.u8, b = s.b, scalar = s.scalar,
    empty = s.empty, ["layer1.weight"] = s.layer1.weight, ["layer1.bias"] = s.layer1.bias,
  }
end

local function same(a, b)
  assert.are.equal(b:dtype(), a:dtype())
  assert.are.same(b:shape(), a:shape())
  H.equal(a, b:totable(), 0)
end

describe("mf.save / mf.load (safetensors)", function()
  it("round-trips every dtype, 0-d and empty tensors, nested names and metadata", function()
    local s = sample()
    mf.save(at("m.safetensors"), s, { format = "pt", epoch = 3 })
    local t, meta = mf.load(at("m.safetensors"))
    local want = flat(s)
    local n = 0
    for k, v in pairs(t) do
      n = n + 1
      same(v, want[k])
    end
    assert.are.equal(#flat_names, n)
    assert.are.same({ format = "pt", epoch = "3" }, meta)
  end)

  it("saves a single tensor under the name 'tensor' and selects by name", function()
    mf.save(at("one.safetensors"), mf.tensor({ 1, 2, 3 }))
    local t = mf.load(at("one.safetensors"))
    H.equal(t.tensor, { 1, 2, 3 })
    mf.save(at("m.safetensors"), sample())
    local sel = mf.load(at("m.safetensors"), { names = { "u8", "layer1.bias" } })
    assert.are.same({ "layer1.bias", "u8" }, (function()
      local k = {}
      for name in pairs(sel) do k[#k + 1] = name end
      table.sort(k)
      return k
    end)())
    H.err(function() mf.load(at("m.safetensors"), { names = { "nope" } }) end, "no tensor named 'nope'")
  end)

  it("writes views and list tables", function()
    local a = mf.arange(6):reshape(2, 3):float()
    mf.save(at("v.safetensors"), { layers = { a:t(), a[2] } })
    local t = mf.load(at("v.safetensors"))
    H.equal(t["layers.1"], { { 0, 3 }, { 1, 4 }, { 2, 5 } })
    H.equal(t["layers.2"], { 3, 4, 5 })
  end)

  it("replaces an existing file atomically and leaves no temporary files", function()
    mf.save(at("r.safetensors"), { x = mf.ones({ 2 }) })
    mf.save(at("r.safetensors"), { x = mf.zeros({ 3 }) })
    H.equal(mf.load(at("r.safetensors")).x, { 0, 0, 0 })
    local p = io.popen("ls " .. dir)
    local listing = p:read("a")
    p:close()
    assert.is_nil(listing:find("%.tmp%."))
  end)

  it("reports bad arguments and corrupt files clearly", function()
    H.err(function() mf.save(at("x.safetensors"), { a = 1 }) end, "'a' is a number, expected a tensor")
    H.err(function() mf.save(at("x.safetensors"), 5) end, "tensor or table of named tensors expected")
    H.err(function() mf.save(at("x.safetensors"), {}, { k = {} }) end, "metadata 'k' is a table")
    local cyc = {}
    cyc.self = cyc
    H.err(function() mf.save(at("x.safetensors"), cyc) end, "nested more than")
    H.err(function() mf.load(at("missing.safetensors")) end, "cannot open")
    local f = assert(io.open(at("bad.safetensors"), "wb"))
    f:write("\255\0\0\0\0\0\0\0{}")
    f:close()
    H.err(function() mf.load(at("bad.safetensors")) end, "header length 255 runs past the end")
  end)

  if mf.cuda.is_available() then
    it("saves tensors from the GPU", function()
      local a = mf.tensor({ 1, 2, 3 }):to("cuda:0")
      mf.save(at("g.safetensors"), { a = a })
      H.equal(mf.load(at("g.safetensors")).a, { 1, 2, 3 })
    end)
  end
end)

describe("mf.save_npz / mf.load_npz / npy", function()
  it("round-trips every dtype and selects by name", function()
    local s = sample()
    mf.save_npz(at("m.npz"), s)
    local t = mf.load_npz(at("m.npz"))
    local want = flat(s)
    for _, k in ipairs(flat_names) do same(t[k], want[k]) end
    local sel = mf.load_npz(at("m.npz"), { "i64" })
    same(sel.i64, s.i64)
    assert.is_nil(sel.f32)
    H.err(function() mf.load_npz(at("m.npz"), { "zz" }) end, "no tensor named 'zz'")
    mf.save_npz(at("one.npz"), mf.tensor({ 5, 6 }))
    H.equal(mf.load_npz(at("one.npz")).arr_0, { 5, 6 })
  end)

  it("round-trips .npy", function()
    local a = mf.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = "float64" })
    mf.save_npy(at("a.npy"), a)
    same(mf.load_npy(at("a.npy")), a)
  end)

  it("rejects corrupt archives", function()
    local f = assert(io.open(at("junk.npz"), "wb"))
    f:write(("not a zip "):rep(10))
    f:close()
    H.err(function() mf.load_npz(at("junk.npz")) end, "not a ZIP archive")
  end)
end)

-- ---- the real readers and writers ------------------------------------------------------------

-- Python code that prints "OK" when every array of the file at path equals the expected values.
local CHECK_NUMPY = [==[
import numpy as np, sys
def check(got):
    exp = {
        'f32': np.array([[1.5, -2], [3, 4.25]], np.float32), 'f64': np.array([0.1, 0.2, 0.3]),
        'i32': np.array([-7, 8], np.int32), 'i64': np.array([[1, 2, 3]], np.int64),
        'u8': np.array([0, 255, 7], np.uint8), 'b': np.array([True, False, True]),
        'scalar': np.array(42.0, np.float32), 'empty': np.zeros((0, 3), np.float32),
        'layer1.weight': np.arange(6, dtype=np.float32).reshape(2, 3),
        'layer1.bias': np.zeros(2, np.float32)}
    assert sorted(got) == sorted(exp), (sorted(got), sorted(exp))
    for k, v in exp.items():
        g = np.asarray(got[k])
        assert g.dtype == v.dtype and g.shape == v.shape and np.array_equal(g, v), (k, g, v)
    print('OK')
]==]

describe("interoperability", function()
  with_python({ "numpy" }, "numpy.load reads mf.save_npz and mf.save_npy files", function()
    mf.save_npz(at("i.npz"), sample())
    mf.save_npy(at("i.npy"), mf.arange(6):reshape(2, 3):float())
    local ok, out = python(CHECK_NUMPY .. ([==[
z = np.load('%s')
check({k: z[k] for k in z.files})
a = np.load('%s')
assert a.dtype == np.float32 and a.tolist() == [[0, 1, 2], [3, 4, 5]]
]==]):format(at("i.npz"), at("i.npy")))
    assert(ok and out:find("OK"), out)
  end)

  with_python({ "numpy" }, "mf.load_npz reads np.savez, np.savez_compressed and zip64 archives", function()
    local ok, out = python(([==[
import numpy as np, zipfile
arrs = dict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([1, -2, 3], np.int16),
            c=np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)), d=np.array(3.5, np.float16),
            e=np.zeros((0, 3), np.uint32), f=np.array([True, False]), g=np.array([7], '>i8'))
np.savez('%s', **arrs)
np.savez_compressed('%s', **arrs)
with zipfile.ZipFile('%s', 'w', compression=zipfile.ZIP_DEFLATED) as z:
    for n, v in arrs.items():
        with z.open(n + '.npy', 'w', force_zip64=True) as f:
            np.lib.format.write_array(f, v)
np.save('%s', arrs['c'])
print('OK')
]==]):format(at("s.npz"), at("c.npz"), at("z64.npz"), at("f.npy")))
    assert(ok and out:find("OK"), out)
    for _, name in ipairs({ "s.npz", "c.npz", "z64.npz" }) do
      local t = mf.load_npz(at(name))
      H.equal(t.a, { { 0, 1, 2 }, { 3, 4, 5 } })
      assert.are.equal("float32", t.a:dtype())
      H.equal(t.b, { 1, -2, 3 })
      assert.are.equal("int32", t.b:dtype())
      assert.are.same({ 2, 3, 4 }, t.c:shape())
      H.equal(t.c[2][3], { 20, 21, 22, 23 })
      H.equal(t.d, 3.5)
      assert.are.equal("float32", t.d:dtype())
      assert.are.same({ 0, 3 }, t.e:shape())
      assert.are.equal("int64", t.e:dtype())
      H.equal(t.f, { true, false })
      H.equal(t.g, { 7 })
    end
    H.equal(mf.load_npy(at("f.npy"))[1][2], { 4, 5, 6, 7 })
  end)

  with_python({ "numpy", "safetensors" }, "safetensors (numpy) reads mf.save files", function()
    mf.save(at("i.safetensors"), sample(), { format = "np" })
    local ok, out = python(CHECK_NUMPY .. ([==[
from safetensors.numpy import load_file
from safetensors import safe_open
check(load_file('%s'))
with safe_open('%s', 'np') as f:
    assert f.metadata() == {'format': 'np'}, f.metadata()
]==]):format(at("i.safetensors"), at("i.safetensors")))
    assert(ok and out:find("OK"), out)
  end)

  with_python({ "numpy", "torch", "safetensors" }, "safetensors.torch reads mf.save files", function()
    mf.save(at("t.safetensors"), sample())
    local ok, out = python(CHECK_NUMPY .. ([==[
from safetensors.torch import load_file
check({k: v.numpy() for k, v in load_file('%s').items()})
]==]):format(at("t.safetensors")))
    assert(ok and out:find("OK"), out)
  end)

  with_python({ "numpy", "safetensors" }, "mf.load reads files that safetensors writes", function()
    local ok, out = python(([==[
import numpy as np
from safetensors.numpy import save_file
save_file({'x': np.arange(6, dtype=np.float32).reshape(2, 3), 'y': np.array([1, -2], np.int16),
           'z': np.array([True, False]), 'u': np.array([65535], np.uint16),
           'h': np.array([0.5, -1], np.float16), 'e': np.zeros((2, 0), np.float64)},
          '%s', metadata={'k': 'v'})
print('OK')
]==]):format(at("p.safetensors")))
    assert(ok and out:find("OK"), out)
    local t, meta = mf.load(at("p.safetensors"))
    H.equal(t.x, { { 0, 1, 2 }, { 3, 4, 5 } })
    H.equal(t.y, { 1, -2 })
    assert.are.equal("int32", t.y:dtype())
    H.equal(t.z, { true, false })
    H.equal(t.u, { 65535 })
    H.equal(t.h, { 0.5, -1 })
    assert.are.equal("float32", t.h:dtype())
    assert.are.same({ 2, 0 }, t.e:shape())
    assert.are.same({ k = "v" }, meta)
  end)

  with_python({ "torch", "safetensors" }, "mf.load reads bfloat16/float16/int8 from safetensors.torch", function()
    local ok, out = python(([==[
import torch
from safetensors.torch import save_file
save_file({'bf': torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
           'h': torch.tensor([[0.25]], dtype=torch.float16),
           'i8': torch.tensor([-3, 4], dtype=torch.int8)}, '%s')
print('OK')
]==]):format(at("bt.safetensors")))
    assert(ok and out:find("OK"), out)
    local t = mf.load(at("bt.safetensors"))
    H.equal(t.bf, { 1.5, -2 })
    H.equal(t.h, { { 0.25 } })
    H.equal(t.i8, { -3, 4 })
    assert.are.equal("int32", t.i8:dtype())
  end)
end)

teardown(function() os.execute("rm -rf " .. dir) end)
