-- predict_digit.lua — reads handwritten digits from image files with the CNN that
-- examples/mnist_cnn.lua trains (`--save model.safetensors`), and prints each image's digit and
-- the ten class probabilities:
--
--   moonflow examples/mnist_cnn.lua --quick --save model.safetensors
--   moonflow examples/predict_digit.lua --model model.safetensors digit.png [more.png ...]
--     digit.png: 7  (0: 0.000 1: 0.001 2: 0.004 3: 0.000 4: 0.000 5: 0.000 6: 0.000 7: 0.993 ...)
--   [--inputs DIR] also writes the 28x28 image the network sees for each file (DIR/<name>.png).
--
-- Images may be any size, gray or RGB (alpha is laid over white), a dark digit on a light
-- background or a light one on dark. They are prepared the way MNIST's were: grayscale, inverted
-- when the border is light (MNIST digits are light on black), contrast stretched to [0, 1], the
-- digit's bounding box scaled so its longer side is 20 pixels (aspect ratio kept), and placed in a
-- 28x28 field so that its centre of mass is the field's centre.
--
-- `require "predict_digit"` (with examples/ on package.path) returns the functions without
-- running the command: preprocess(img) -> 28x28 float32, load_model(path) -> model, metadata,
-- predict(model, field) -> probabilities {p0, ..., p9}, digit; predict_file(model, path);
-- build(format) -> an untrained network; format(digit, probabilities) -> the printed line.
local mf = require "moonflow"
local F = mf.nn.functional
-- the network's definition, shared with mnist_cnn.lua (next to this file)
local CNN = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "mnist_model.lua")

local M = {}

local FIELD, BOX = 28, 20 -- MNIST: a 20x20 box centred by mass in a 28x28 field
local INK = 0.2 -- after stretching, pixels above this are the digit's (for its bounding box)

-- HxW float32 in [0, 1] from an HxW or HxWxC image (uint8 0..255 or float 0..1); luminance of
-- RGB (ITU-R 601 weights, as PIL's "L"); an alpha channel is laid over white.
local function grayscale(img)
  if img:dtype() == "uint8" then img = img:float() / 255 else img = img:float() end
  if img:dim() == 2 then return img end
  if img:dim() ~= 3 or img:size(3) > 4 then
    error("predict_digit: expected an HxW or HxWxC image (C = 1..4), got a tensor of shape "
      .. table.concat(img:shape(), "x"), 0)
  end
  local c = img:size(3)
  local g = img:select(3, 1)
  if c >= 3 then g = g * 0.299 + img:select(3, 2) * 0.587 + img:select(3, 3) * 0.114 end
  if c == 2 or c == 4 then
    local a = img:select(3, c)
    g = g * a + (1 - a)
  end
  return g:contiguous()
end

-- The mean of the outermost rows and columns of g (HxW).
local function border_mean(g)
  local h, w = g:size(1), g:size(2)
  local s = g:select(1, 1):sum():item() + g:select(1, h):sum():item()
    + g:select(2, 1):sum():item() + g:select(2, w):sum():item()
  return s / (2 * h + 2 * w)
end

-- First and last 1-based index whose value in list is > 0, or nil.
local function span(list)
  local first, last
  for i, v in ipairs(list) do
    if v > 0 then
      first = first or i
      last = i
    end
  end
  return first, last
end

-- The 0-based centre of mass along one axis, from the sums of the rows (or columns).
local function centre(sums)
  local m, total = 0, 0
  for i, v in ipairs(sums) do
    m, total = m + (i - 1) * v, total + v
  end
  return m / total
end

-- preprocess(img) -> 28x28 float32 tensor in [0, 1], a light digit on black centred by mass.
-- img: HxW or HxWxC, uint8 or float (as mf.image.load gives). Errors when no digit stands out.
function M.preprocess(img)
  if not mf.is_tensor(img) then
    error("predict_digit: expected an image tensor, got " .. type(img), 0)
  end
  local g = grayscale(img)
  if g:size(1) < 2 or g:size(2) < 2 then
    error(("predict_digit: the image is too small (%dx%d)"):format(g:size(1), g:size(2)), 0)
  end
  -- light background: invert, so that the digit is light on dark as in MNIST
  local bg = border_mean(g)
  if bg > 0.5 then
    g = 1 - g
    bg = 1 - bg
  end
  -- background -> 0, the brightest ink -> 1
  local hi = g:max():item()
  if hi - bg < 0.1 then error("predict_digit: no digit found (the image is almost uniform)", 0) end
  g = ((g - bg) / (hi - bg)):clamp(0, 1)
  -- the digit's bounding box
  local ink = g:gt(INK):float()
  local r0, r1 = span(ink:sum(2):totable())
  local c0, c1 = span(ink:sum(1):totable())
  local digit = g:narrow(1, r0, r1 - r0 + 1):narrow(2, c0, c1 - c0 + 1):contiguous()
  -- longer side 20 pixels, aspect ratio kept
  local h, w = digit:size(1), digit:size(2)
  local nh, nw
  if h >= w then
    nh, nw = BOX, math.max(1, math.floor(w * BOX / h + 0.5))
  else
    nh, nw = math.max(1, math.floor(h * BOX / w + 0.5)), BOX
  end
  digit = mf.image.resize(digit, nh, nw):clamp(0, 1)
  -- centre of mass at the field's centre (13.5, 13.5), the whole digit kept inside
  local function offset(sums, n)
    local o = math.floor(FIELD / 2 - centre(sums) + 0.5)
    return math.max(0, math.min(FIELD - n, o))
  end
  local top, left = offset(digit:sum(2):totable(), nh), offset(digit:sum(1):totable(), nw)
  local field = mf.zeros { FIELD, FIELD }
  field:narrow(1, top + 1, nh):narrow(2, left + 1, nw):copy_(digit)
  return field
end

-- build(format) -> the network of examples/mnist_cnn.lua (examples/mnist_model.lua), in its NCHW
-- or NHWC layout, untrained.
M.build = CNN.build

-- load_model(path) -> model (in evaluation mode), metadata: the weights mnist_cnn.lua --save
-- wrote; __metadata__ format (NCHW, the default, or NHWC) says which layout they are for.
function M.load_model(path)
  local weights, meta = mf.load(path)
  meta = meta or {}
  if meta.model ~= nil and meta.model ~= "mnist_cnn" then
    error(("predict_digit: %s holds a %s model, not mnist_cnn's weights"):format(path,
      tostring(meta.model)), 0)
  end
  local format = meta.format or "NCHW"
  if format ~= "NCHW" and format ~= "NHWC" then
    error(("predict_digit: %s: unknown layout format=%s (NCHW or NHWC)"):format(path,
      tostring(format)), 0)
  end
  local model = M.build(format)
  local ok, err = pcall(model.load_state_dict, model, weights)
  if not ok then
    error(("predict_digit: %s does not hold mnist_cnn.lua's weights: %s"):format(path,
      tostring(err)), 0)
  end
  model:evaluate()
  return model, meta
end

-- predict(model, field) -> {p0, ..., p9} (probabilities of the digits 0..9), digit
function M.predict(model, field)
  local probs = mf.no_grad(function() return F.softmax(model(field:reshape { 1, 784 }), 2) end)
  local p = probs:reshape { 10 }:totable()
  local best = 1
  for i = 2, 10 do if p[i] > p[best] then best = i end end
  return p, best - 1
end

-- predict_file(model, path) -> digit, probabilities, the 28x28 field
function M.predict_file(model, path)
  local field = M.preprocess(mf.image.load(path))
  local p, digit = M.predict(model, field)
  return digit, p, field
end

-- "7  (0: 0.000 1: 0.001 ... 9: 0.000)"
function M.format(digit, p)
  local parts = {}
  for i = 1, 10 do parts[i] = ("%d: %.3f"):format(i - 1, p[i]) end
  return ("%d  (%s)"):format(digit, table.concat(parts, " "))
end

-- ---- the command -------------------------------------------------------------------------------

local modname, modpath = ...
if modname == "predict_digit" and type(modpath) == "string"
  and modpath:match "predict_digit%.lua$" then
  return M
end

local usage = "usage: moonflow examples/predict_digit.lua --model model.safetensors [--inputs DIR] "
  .. "image.png [more images]"
local function die(msg)
  io.stderr:write("predict_digit: ", msg, "\n", usage, "\n")
  os.exit(2)
end

for _, a in ipairs(arg or {}) do
  if a == "-h" or a == "--help" then
    print(usage)
    os.exit(0)
  end
end
local ok, opt = pcall(mf.flags, { model = "", inputs = "" })
if not ok then die((tostring(opt):gsub("^[^:]*:%d+: ", ""))) end
local model_path, inputs_dir = opt.model, opt.inputs ~= "" and opt.inputs or nil
local images = { table.unpack(opt) }
if model_path == "" then
  die("--model PATH is required (the weights mnist_cnn.lua --save wrote)")
end
if #images == 0 then die("no image files given") end

local model = M.load_model(model_path)
if inputs_dir then os.execute("mkdir -p '" .. inputs_dir:gsub("'", "'\\''") .. "'") end

-- One image: its line, and with --inputs its 28x28 field saved as DIR/<name>.png.
local function one(path)
  local digit, p, field = M.predict_file(model, path)
  if inputs_dir then
    local name = path:match "([^/]*)$":gsub("%.[^.]*$", "")
    mf.image.save(inputs_dir .. "/" .. name .. ".png", field)
  end
  return path .. ": " .. M.format(digit, p)
end

local failed = 0
for _, path in ipairs(images) do
  local ok, line = pcall(one, path)
  if ok then
    print(line)
  else
    failed = failed + 1
    io.stderr:write(path, ": ", (tostring(line):gsub("^predict_digit: ", "")), "\n")
  end
end
if failed > 0 then os.exit(1) end
