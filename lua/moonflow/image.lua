-- moonflow/image.lua — mf.image: images to and from tensors (stb_image; core/io/image.c).
--
--   local img = mf.image.load("cat.png")                    -- uint8 HxWxC, C as in the file
--   local x = mf.image.load("cat.jpg", {channels = 3, dtype = "float32"})   -- values in [0, 1]
--   mf.image.save("out.png", img)                           -- format from the extension
--   mf.image.save("out.jpg", x, {quality = 90})             -- .png .jpg/.jpeg .bmp .tga
--   local small = mf.image.resize(img, 64, 64)
--
-- Reads PNG, JPEG, BMP, GIF (first frame) and TGA. Tensors given to save, resize
-- and encode_png are HW, HWC (C = 1..4) or CHW; a 3-D tensor is CHW when its first size is 1, 3
-- or 4 and its last is none of 1, 3, 4 (3x32x32 is CHW, 32x32x3 is HWC). uint8 values are 0..255;
-- float values 0..1 (clamped, times 255, rounded).

local core = require "moonflow.core"
local C = core._image

local image = {}

local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

local function opts_of(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail("%s: options must be a table, got %s", fname, type(opts)) end
  return opts
end

local float_names = { float32 = "float32", float = "float32", f32 = "float32", float64 = "float64",
  double = "float64", f64 = "float64" }

-- uint8 HxWxC -> the dtype asked for (floats scaled to [0, 1]).
local function check_dtype(fname, dtype)
  if dtype == nil or dtype == "uint8" or dtype == "byte" then return nil end
  local f = float_names[dtype]
  if not f then fail("%s: dtype must be uint8, float32 or float64, got %s", fname, tostring(dtype)) end
  return f
end

local function convert(t, f)
  if not f then return t end
  return core.div(t:to(f), 255)
end

local function channels_of(fname, o)
  local c = o.channels
  if c == nil then return 0 end
  if math.type(c) ~= "integer" or c < 1 or c > 4 then
    fail("%s: channels must be 1, 2, 3 or 4, got %s", fname, tostring(c))
  end
  return c
end

-- load(path [, {channels=, dtype="uint8"|"float32"|"float64"}]) -> HxWxC tensor
function image.load(path, opts)
  if type(path) ~= "string" then fail("load: path must be a string, got %s", type(path)) end
  local o = opts_of("load", opts)
  local c, f = channels_of("load", o), check_dtype("load", o.dtype)
  return convert(call(C.load, path, c), f)
end

-- decode(bytes [, opts]): as load, from the file's bytes in a string.
function image.decode(bytes, opts)
  if type(bytes) ~= "string" then fail("decode: expected a string of bytes, got %s", type(bytes)) end
  local o = opts_of("decode", opts)
  local c, f = channels_of("decode", o), check_dtype("decode", o.dtype)
  return convert(call(C.decode, bytes, c), f)
end

-- save(path, t [, {quality=1..100}]): written atomically.
function image.save(path, t, opts)
  if type(path) ~= "string" then fail("save: path must be a string, got %s", type(path)) end
  if not core.is_tensor(t) then fail("save: expected a tensor, got %s", type(t)) end
  local o = opts_of("save", opts)
  local q = o.quality
  if q ~= nil and (math.type(q) ~= "integer" or q < 1 or q > 100) then
    fail("save: quality must be an integer 1..100, got %s", tostring(q))
  end
  call(C.save, path, t, q or 0)
end

-- encode_png(t) -> bytes, height, width, channels
function image.encode_png(t)
  if not core.is_tensor(t) then fail("encode_png: expected a tensor, got %s", type(t)) end
  return call(C.encode_png, t)
end

-- resize(t, height, width) -> tensor of the same layout and dtype
function image.resize(t, h, w)
  if not core.is_tensor(t) then fail("resize: expected a tensor, got %s", type(t)) end
  if math.type(h) ~= "integer" or math.type(w) ~= "integer" or h < 1 or w < 1 then
    fail("resize: height and width must be positive integers, got %s and %s", tostring(h),
      tostring(w))
  end
  return call(C.resize, t, h, w)
end

return image
