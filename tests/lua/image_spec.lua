-- image_spec.lua — mf.image: PNG round trips (exact; gray, gray+alpha, RGB, RGBA; uint8 and float;
-- HWC, HW and CHW), JPEG (close), BMP/TGA, forced channels, float loading, resize (shapes, dtypes,
-- layouts, a constant image stays constant), errors (corrupt, truncated, missing files, unknown
-- formats, bad shapes and dtypes), and pixels of our PNG decoded by PIL through /usr/bin/python3
-- (pending when PIL is not importable), and a PIL-written PNG read by us.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q, readfile, writefile = H.q, H.readfile, H.writefile

local function tmpdir() return H.tmpdir("mf_image_spec") end

-- A deterministic uint8 image h x w x c as a nested table and a tensor.
local function pattern(h, w, c)
  local t = {}
  for i = 1, h do
    t[i] = {}
    for j = 1, w do
      t[i][j] = {}
      for k = 1, c do t[i][j][k] = (i * 37 + j * 11 + k * 71) % 256 end
    end
  end
  return t, mf.tensor(t, { dtype = "uint8" })
end

local PY = "/usr/bin/python3"
local have_pil = os.execute(PY .. " -c 'import PIL.Image, numpy' >/dev/null 2>&1") == true

local root = tmpdir()
teardown(function() os.execute("rm -rf " .. q(root)) end)

describe("mf.image", function()
  it("round-trips PNG exactly for 1 to 4 channels", function()
    for c = 1, 4 do
      local tab, t = pattern(5, 7, c)
      local p = root .. "/rt" .. c .. ".png"
      mf.image.save(p, t)
      local back = mf.image.load(p)
      assert.are.equal("uint8", back:dtype())
      assert.are.same({ 5, 7, c }, back:shape())
      H.equal(back, tab)
    end
  end)

  it("takes HW as one channel and CHW when the first size is 1, 3 or 4", function()
    local tab, t = pattern(6, 8, 3)
    local p1, p2 = root .. "/hwc.png", root .. "/chw.png"
    mf.image.save(p1, t)
    mf.image.save(p2, t:permute(3, 1, 2)) -- 3x6x8: CHW
    assert.are.equal(readfile(p1), readfile(p2))
    local gray = mf.tensor({ { 0, 128, 255 }, { 1, 2, 3 } }, { dtype = "uint8" })
    mf.image.save(root .. "/hw.png", gray)
    local back = mf.image.load(root .. "/hw.png")
    assert.are.same({ 2, 3, 1 }, back:shape())
    H.equal(back:reshape(2, 3), { { 0, 128, 255 }, { 1, 2, 3 } })
    -- 32x32x3 stays HWC, 3x32x32 is CHW
    local a = mf.image.encode_png(mf.zeros({ 3, 32, 32 }))
    local _, h, w, c = mf.image.encode_png(mf.zeros({ 3, 32, 32 }))
    assert.are.same({ 32, 32, 3 }, { h, w, c })
    _, h, w, c = mf.image.encode_png(mf.zeros({ 32, 32, 3 }))
    assert.are.same({ 32, 32, 3 }, { h, w, c })
    assert.are.equal("\137PNG", a:sub(1, 4))
  end)

  it("converts float images in [0, 1] and loads as float", function()
    local t = mf.tensor({ { { 0.0 }, { 0.5 } }, { { 1.0 }, { 2.0 } }, { { -1 }, { 0.2 } } })
    local p = root .. "/float.png"
    mf.image.save(p, t)
    H.equal(mf.image.load(p):reshape(6), { 0, 128, 255, 255, 0, 51 })
    local f = mf.image.load(p, { dtype = "float32" })
    assert.are.equal("float32", f:dtype())
    H.equal(f:reshape(6), { 0, 128 / 255, 1, 1, 0, 0.2 }, 1e-6)
    local d = mf.image.load(p, { dtype = "float64" })
    assert.are.equal("float64", d:dtype())
  end)

  it("forces the channel count on load", function()
    local _, t = pattern(4, 4, 3)
    local p = root .. "/force.png"
    mf.image.save(p, t)
    assert.are.same({ 4, 4, 1 }, mf.image.load(p, { channels = 1 }):shape())
    assert.are.same({ 4, 4, 4 }, mf.image.load(p, { channels = 4 }):shape())
    H.equal(mf.image.load(p, { channels = 4 }):select(3, 4):reshape(16), (function()
      local r = {}
      for i = 1, 16 do r[i] = 255 end
      return r
    end)())
  end)

  it("writes JPEG close to the original, and BMP and TGA exactly", function()
    local t = mf.full({ 16, 16, 3 }, 100, { dtype = "uint8" })
    for _, name in ipairs { "a.jpg", "b.JPEG" } do
      local p = root .. "/" .. name
      mf.image.save(p, t, { quality = 95 })
      local back = mf.image.load(p)
      assert.are.same({ 16, 16, 3 }, back:shape())
      local err = mf.abs(mf.sub(back:to("float32"), 100)):max():item()
      assert.truthy(err <= 3, "JPEG error " .. err)
      assert.are.equal("\255\216", readfile(p):sub(1, 2))
    end
    local tab, u = pattern(5, 6, 3)
    for _, name in ipairs { "c.bmp", "d.tga" } do
      mf.image.save(root .. "/" .. name, u)
      H.equal(mf.image.load(root .. "/" .. name), tab)
    end
  end)

  it("resizes uint8 and float images, keeping layout and dtype", function()
    local t = mf.full({ 10, 12, 3 }, 77, { dtype = "uint8" })
    local r = mf.image.resize(t, 5, 7)
    assert.are.equal("uint8", r:dtype())
    assert.are.same({ 5, 7, 3 }, r:shape())
    assert.are.equal(77, r:min():item())
    assert.are.equal(77, r:max():item())
    local f = mf.image.resize(mf.full({ 3, 8, 8 }, 0.25), 16, 4) -- CHW
    assert.are.equal("float32", f:dtype())
    assert.are.same({ 3, 16, 4 }, f:shape())
    assert.truthy(mf.allclose(f, mf.full({ 3, 16, 4 }, 0.25), 1e-5, 1e-6))
    local g = mf.image.resize(mf.rand({ 9, 9 }, { dtype = "float64" }), 3, 3)
    assert.are.equal("float64", g:dtype())
    assert.are.same({ 3, 3 }, g:shape())
    H.err(function() mf.image.resize(t, 0, 5) end, "positive integers")
  end)

  it("raises clear errors", function()
    local bad = root .. "/corrupt.png"
    writefile(bad, "\137PNG\r\n\26\n" .. string.rep("x", 40))
    H.err(function() mf.image.load(bad) end, "corrupt.png: cannot decode")
    writefile(root .. "/empty.png", "")
    H.err(function() mf.image.load(root .. "/empty.png") end, "empty")
    H.err(function() mf.image.load(root .. "/missing.png") end, "missing.png: cannot open")
    H.err(function() mf.image.load(root) end, "not a regular file")
    -- every truncation of a good PNG fails cleanly
    local png = mf.image.encode_png(pattern and select(2, pattern(8, 8, 3)))
    for n = 1, #png - 1, 7 do
      local ok, err = pcall(mf.image.decode, png:sub(1, n))
      assert.truthy(ok or tostring(err):find("cannot decode"), tostring(err))
    end
    local t = mf.zeros({ 4, 4, 3 }, { dtype = "uint8" })
    H.err(function() mf.image.save(root .. "/x.webp", t) end, "unknown image format")
    H.err(function() mf.image.save(root .. "/x.png", mf.zeros({ 2, 2, 2, 2 })) end, "HW, HWC or CHW")
    H.err(function() mf.image.save(root .. "/x.png", mf.zeros({ 6, 6, 5 })) end, "channels")
    H.err(function() mf.image.save(root .. "/x.png", mf.zeros({ 4, 4 }, { dtype = "int64" })) end,
      "dtype int64")
    H.err(function() mf.image.save(root .. "/x.jpg", t, { quality = 0 }) end, "quality")
    H.err(function() mf.image.save(root .. "/no/such/dir/x.png", t) end, "no/such/dir/x.png")
    H.err(function() mf.image.load(root .. "/x.png", { channels = 5 }) end, "channels")
    H.err(function() mf.image.load(root .. "/x.png", { dtype = "int32" }) end, "dtype")
  end)

  it("writes PNGs that PIL decodes to the same pixels, and reads PIL's", function()
    if not have_pil then return pending("PIL (python3-pil) is not importable by /usr/bin/python3") end
    local tab, t = pattern(9, 11, 3)
    local p = root .. "/pil.png"
    mf.image.save(p, t)
    local out = io.popen(PY .. " -c " .. q([[
import sys, numpy as np, PIL.Image
a = np.asarray(PIL.Image.open(sys.argv[1]))
print(a.shape, int(a.astype(np.int64).sum()), int(a[0, 0, 0]), int(a[8, 10, 2]))
b = (np.arange(4 * 5 * 4) * 13 % 256).astype(np.uint8).reshape(4, 5, 4)
PIL.Image.fromarray(b, 'RGBA').save(sys.argv[2])
]]) .. " " .. q(p) .. " " .. q(root .. "/from_pil.png") .. " 2>&1"):read("a")
    local sum = 0
    for i = 1, 9 do for j = 1, 11 do for k = 1, 3 do sum = sum + tab[i][j][k] end end end
    assert.are.equal(string.format("(9, 11, 3) %d %d %d\n", sum, tab[1][1][1], tab[9][11][3]), out)
    local b = mf.image.load(root .. "/from_pil.png")
    assert.are.same({ 4, 5, 4 }, b:shape())
    local flat = b:reshape(80):totable()
    for i = 1, 80 do assert.are.equal((i - 1) * 13 % 256, flat[i]) end
  end)
end)
