-- predict_digit_spec.lua — examples/predict_digit.lua. Its preprocessing on synthetic images (an
-- off-centre "L" drawn large and dark on light comes out 28x28, light on black, in [0, 1], its
-- longer side 20 pixels, its centre of mass at the field's centre; gray, RGB, RGBA and either
-- polarity give the same field; a blank image is an error); the command's output and errors with
-- an untrained network; and, when MOONFLOW_DATA names the MNIST files, the whole path:
-- examples/mnist_cnn.lua trains briefly with --save and --logdir, predict_digit names the digit of
-- each PNG in tests/fixtures/digits (made by its make.py) with probabilities that sum to 1, and
-- the log folders hold the expected curves and histograms (read by TensorBoard's reader).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q = H.q

package.path = H.root .. "/examples/?.lua;" .. package.path
local P = require "predict_digit"

local DATA = H.DATA
local FIXTURES = H.root .. "/tests/fixtures/digits"

local newdir, rmdirs = H.tmpdirs("mf_predict_digit_spec") -- new temporary folders, removed at the end
teardown(rmdirs)

local ls = H.ls

-- ---- synthetic digits ---------------------------------------------------------------------------

-- An "L" in an HxW field (1 = ink, 0 = background): a bar 40 high and 8 wide whose foot is 8 high
-- and 24 wide, its top-left corner at (top, left) (1-based). Its mass sits low and left of its
-- bounding box's centre.
local function ell(h, w, top, left)
  local t = mf.zeros { h, w }
  t:narrow(1, top, 40):narrow(2, left, 8):fill_(1)
  t:narrow(1, top + 32, 8):narrow(2, left, 24):fill_(1)
  return t
end

-- The 0-based centre of mass (row, column) of a 2-D tensor, and the rows and columns it spans
-- above a threshold.
local function measure(field, threshold)
  local t = field:totable()
  local m, my, mx = 0, 0, 0
  local r0, r1, c0, c1
  for i, row in ipairs(t) do
    for j, v in ipairs(row) do
      m, my, mx = m + v, my + (i - 1) * v, mx + (j - 1) * v
      if v > threshold then
        r0, r1 = r0 or i, i
        c0, c1 = math.min(c0 or j, j), math.max(c1 or j, j)
      end
    end
  end
  return my / m, mx / m, r1 - r0 + 1, c1 - c0 + 1
end

local function max_diff(a, b) return (a - b):abs():max():item() end

describe("predict_digit.preprocess", function()
  -- dark ink on a light background, off-centre in a 90x120 image
  local ink = ell(90, 120, 20, 70)
  local dark_on_light = 1 - ink * 0.9 -- ink 0.1, paper 1.0

  it("centres an inverted, off-centre, large digit by mass in a 28x28 field in [0, 1]", function()
    local field = P.preprocess(dark_on_light)
    assert.are.same({ 28, 28 }, field:shape())
    assert.are.equal("float32", field:dtype())
    assert.is_true(field:min():item() >= 0)
    assert.are.equal(1, field:max():item()) -- the ink stretched to 1
    -- the background is black: the border and the corners are 0
    for _, border in ipairs { field:select(1, 1), field:select(1, 28), field:select(2, 1),
      field:select(2, 28) } do
      assert.are.equal(0, border:abs():sum():item())
    end
    -- 40x24 scaled to 20x12, its centre of mass at (14, 14) within half a pixel
    local cy, cx, h, w = measure(field, 0.5)
    assert.are.equal(20, h)
    assert.is_true(w == 12 or w == 13, "width " .. w)
    assert.is_true(math.abs(cy - 14) <= 0.5, "centre row " .. cy)
    assert.is_true(math.abs(cx - 14) <= 0.5, "centre column " .. cx)
    -- centred by mass, not by box: the box's centre is up and to the right of the field's
    local r = field:gt(0.5):float()
    local rows, cols = r:sum(2):totable(), r:sum(1):totable()
    local first_row, first_col
    for i = 1, 28 do
      if rows[i] > 0 and not first_row then first_row = i end
      if cols[i] > 0 and not first_col then first_col = i end
    end
    assert.is_true(first_row - 1 + h / 2 < 14, "the box is not above the centre")
    assert.is_true(first_col - 1 + w / 2 > 14, "the box is not right of the centre")
  end)

  it("gives the same field for either polarity, gray, RGB and RGBA, uint8 or float", function()
    local want = P.preprocess(dark_on_light)
    -- light on dark
    assert.is_true(max_diff(P.preprocess(ink * 0.9 + 0.1), want) < 1e-5)
    -- uint8 RGB: navy ink on cream paper, the same contrast in luminance after stretching
    local paper, navy = { 245, 240, 225 }, { 30, 40, 120 }
    local chans = {}
    for c = 1, 3 do chans[c] = (1 - ink) * paper[c] + ink * navy[c] end
    local rgb = (mf.stack(chans, 3) + 0.5):to("uint8") -- rounded
    assert.are.same({ 90, 120, 3 }, rgb:shape())
    assert.is_true(max_diff(P.preprocess(rgb), P.preprocess(ink)) < 0.02)
    -- RGBA: black ink whose alpha is the digit, on a transparent background (laid over white)
    local black = mf.zeros { 90, 120 }
    local rgba = mf.stack({ black, black, black, ink }, 3)
    assert.is_true(max_diff(P.preprocess(rgba), P.preprocess(ink)) < 1e-5)
    -- HxWx1
    assert.is_true(max_diff(P.preprocess(ink:reshape { 90, 120, 1 }), P.preprocess(ink)) < 1e-5)
  end)

  it("keeps a wide digit's aspect ratio (longer side 20)", function()
    local bar = mf.zeros { 50, 200 }
    bar:narrow(1, 21, 10):narrow(2, 41, 100):fill_(1) -- 10x100
    local _, _, h, w = measure(P.preprocess(bar), 0.5)
    assert.are.equal(20, w)
    assert.are.equal(2, h)
  end)

  it("is an error for a blank image or a non-image", function()
    H.err(function() P.preprocess(mf.full({ 30, 30 }, 0.7)) end, "no digit found")
    H.err(function() P.preprocess("digit.png") end, "expected an image tensor")
    H.err(function() P.preprocess(mf.zeros { 4, 4, 5 }) end, "expected an HxW or HxWxC image")
  end)
end)

-- ---- the command --------------------------------------------------------------------------------

-- Runs predict_digit with the given arguments (a string); returns its output, success, status.
local function predict(args) return H.example("predict_digit.lua", args) end

-- The lines "path: digit  (0: p0 ... 9: p9)" of predict_digit's output, as
-- {path = {digit = d, probs = {p0, ..., p9}}}.
local function parse(out)
  local res = {}
  for line in out:gmatch "[^\n]+" do
    local path, digit, rest = line:match "^(.-): (%d)  %((.*)%)$"
    if path then
      local probs = {}
      for k, v in rest:gmatch "(%d): ([%d.]+)" do probs[tonumber(k) + 1] = tonumber(v) end
      res[path] = { digit = tonumber(digit), probs = probs }
    end
  end
  return res
end

describe("examples/predict_digit.lua", function()
  local untrained -- the weights of an untrained network
  setup(function()
    untrained = newdir() .. "/untrained.safetensors"
    mf.manual_seed(3)
    mf.save(untrained, P.build("NCHW"):state_dict(), { model = "mnist_cnn", format = "NCHW" })
  end)

  it("prints one line per image: the digit and ten probabilities that sum to 1", function()
    local out, ok = predict("--model " .. q(untrained) .. " tests/fixtures/digits/7_h.png " ..
      "tests/fixtures/digits/2_c.png")
    assert.is_true(ok, out)
    local res = parse(out)
    for _, path in ipairs { "tests/fixtures/digits/7_h.png", "tests/fixtures/digits/2_c.png" } do
      local r = assert(res[path], out)
      assert.are.equal(10, #r.probs)
      local sum, best = 0, 1
      for i, p in ipairs(r.probs) do
        sum = sum + p
        if p > r.probs[best] then best = i end
      end
      assert.is_true(math.abs(sum - 1) < 0.006, out)
      assert.are.equal(best - 1, r.digit)
    end
  end)

  it("writes the 28x28 inputs it saw with --inputs", function()
    local dir = newdir() .. "/seen"
    local out, ok = predict("--model " .. q(untrained) .. " --inputs " .. q(dir) ..
      " tests/fixtures/digits/4_e.png")
    assert.is_true(ok, out)
    local img = mf.image.load(dir .. "/4_e.png", { dtype = "float32" })
    assert.are.same({ 28, 28, 1 }, img:shape())
    local want = P.preprocess(mf.image.load(FIXTURES .. "/4_e.png"))
    assert.is_true(max_diff(img:reshape { 28, 28 }, want) <= 0.5 / 255 + 1e-6)
  end)

  it("builds the network in the layout the file's metadata names", function()
    local field = P.preprocess(mf.image.load(FIXTURES .. "/3_d.png"))
    for _, format in ipairs { "NHWC", "NCHW" } do
      mf.manual_seed(5)
      local net = P.build(format)
      net:evaluate()
      local path = newdir() .. "/" .. format .. ".safetensors"
      mf.save(path, net:state_dict(), { model = "mnist_cnn", format = format })
      local model, meta = P.load_model(path)
      assert.are.equal(format, meta.format)
      local want = mf.no_grad(function()
        return mf.nn.functional.softmax(net(field:reshape { 1, 784 }), 2)
      end)
      H.equal(P.predict(model, field), want:reshape { 10 }:totable(), 1e-5)
    end
    -- no metadata: NCHW
    mf.manual_seed(5)
    local net = P.build("NCHW")
    local path = newdir() .. "/plain.safetensors"
    mf.save(path, net:state_dict())
    local _, meta = P.load_model(path)
    assert.is_nil(meta.format)
    local other = newdir() .. "/odd.safetensors"
    mf.save(other, net:state_dict(), { format = "CHWN" })
    H.err(function() P.load_model(other) end, "unknown layout format=CHWN")
  end)

  it("says what is wrong: flags, missing files, files that are not the CNN's", function()
    local out, ok, code = predict("tests/fixtures/digits/7_h.png")
    assert.is_false(ok)
    assert.are.equal(2, code)
    assert.truthy(out:find("--model PATH is required", 1, true), out)
    out, ok = predict("--model " .. q(untrained))
    assert.is_false(ok)
    assert.truthy(out:find("no image files given", 1, true), out)
    out, ok = predict("--modle x.safetensors a.png")
    assert.is_false(ok)
    assert.truthy(out:find("unknown flag '--modle'", 1, true), out)
    -- a missing image: the others are still read, the status is 1
    out, ok, code = predict("--model " .. q(untrained) ..
      " /nonexistent/3.png tests/fixtures/digits/7_h.png")
    assert.is_false(ok)
    assert.are.equal(1, code)
    assert.truthy(out:find("/nonexistent/3.png: ", 1, true), out)
    assert.truthy(parse(out)["tests/fixtures/digits/7_h.png"], out)
    -- a missing model, and a safetensors file that holds something else
    out, ok = predict("--model /nonexistent/model.safetensors tests/fixtures/digits/7_h.png")
    assert.is_false(ok)
    assert.truthy(out:find("/nonexistent/model.safetensors", 1, true), out)
    local other = newdir() .. "/other.safetensors"
    mf.save(other, { weight = mf.zeros { 3 } })
    H.err(function() P.load_model(other) end, "does not hold mnist_cnn.lua's weights")
    mf.save(other, { weight = mf.zeros { 3 } }, { model = "resnet" })
    H.err(function() P.load_model(other) end, "holds a resnet model")
  end)
end)

-- ---- trained on MNIST ---------------------------------------------------------------------------

local have_tb = H.can_import(H.TB_IMPORT)
local tensorboard = H.tensorboard

describe("examples/mnist_cnn.lua --save --logdir, then predict_digit", function()
  local dir, train_out, train_ok
  setup(function()
    if not DATA then return end
    dir = newdir()
    train_out, train_ok = H.mnist_example("mnist_cnn.lua", table.concat({
      "--steps 300 --lr 1e-3 --batch 50 --every 100 --seed 1",
      "--save", q(dir .. "/cnn.safetensors"),
      "--logdir", q(dir .. "/logs") }, " "))
  end)

  it("trains and writes the weights with their layout", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    assert.is_true(train_ok, train_out)
    local saved = "saved the weights to " .. dir .. "/cnn.safetensors"
    assert.truthy(train_out:find(saved, 1, true), train_out)
    local weights, meta = mf.load(dir .. "/cnn.safetensors")
    assert.are.equal("mnist_cnn", meta.model)
    assert.are.equal("NCHW", meta.format)
    assert.are.same({ 32, 1, 5, 5 }, weights["2.weight"]:shape())
    assert.are.same({ 10, 1024 }, weights["12.weight"]:shape())
    local acc = tonumber(train_out:match "test accuracy: ([%d.]+)")
    assert.is_true(acc > 0.9, train_out)
  end)

  it("fails before training when --save cannot be written", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    local out, ok = H.mnist_example("mnist_cnn.lua", "--steps 100000 --save /nonexistent/cnn.safetensors")
    assert.is_false(ok)
    assert.truthy(out:find("--save /nonexistent/cnn.safetensors: cannot write there", 1, true), out)
    assert.falsy(out:find("step 1", 1, true), out)
  end)

  it("names the digit of each test image", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    assert.is_true(train_ok, train_out)
    local files = ls(FIXTURES, "^%d_.*%.png$")
    assert.are.equal(10, #files)
    local args = {}
    for i, f in ipairs(files) do args[i] = q("tests/fixtures/digits/" .. f) end
    local out, ok = predict("--model " .. q(dir .. "/cnn.safetensors") .. " " ..
      table.concat(args, " "))
    assert.is_true(ok, out)
    local res = parse(out)
    for _, f in ipairs(files) do
      local r = assert(res["tests/fixtures/digits/" .. f], "no line for " .. f .. " in\n" .. out)
      assert.are.equal(tonumber(f:sub(1, 1)), r.digit, out)
      local sum = 0
      for _, p in ipairs(r.probs) do sum = sum + p end
      assert.is_true(math.abs(sum - 1) < 0.006, out)
      assert.is_true(r.probs[r.digit + 1] > 0.5, out)
    end
  end)

  it("logs train and validation curves and weight histograms for TensorBoard", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    if not have_tb then return pending("tensorboard is not importable by " .. H.PY) end
    assert.is_true(train_ok, train_out)
    assert.are.equal(1, #ls(dir .. "/logs/train", "^events%.out%.tfevents%."))
    assert.are.equal(1, #ls(dir .. "/logs/validation", "^events%.out%.tfevents%."))
    local train, val = tensorboard(dir .. "/logs/train"), tensorboard(dir .. "/logs/validation")
    for _, run in ipairs { train, val } do
      for _, tag in ipairs { "loss", "accuracy" } do
        for _, step in ipairs { 100, 200, 300 } do
          assert.truthy(run.scalars[tag] and run.scalars[tag][step], tag .. " at step " .. step)
        end
      end
    end
    -- the batch accuracy printed at step 300 is the one logged
    local printed = tonumber(train_out:match "step 300/300  loss [%d.]+  batch accuracy ([%d.]+)")
    assert.is_true(math.abs(train.scalars.accuracy[300] - printed) < 0.0005 + 1e-6, train_out)
    assert.is_true(val.scalars.accuracy[300] > 0.9)
    assert.is_true(val.scalars.loss[300] < val.scalars.loss[100])
    -- a histogram of each parameter at the last step, none in the validation run
    local sizes = { ["2.weight"] = 800, ["2.bias"] = 32, ["5.weight"] = 51200, ["5.bias"] = 64,
      ["9.weight"] = 3136 * 1024, ["9.bias"] = 1024, ["12.weight"] = 10240, ["12.bias"] = 10 }
    for name, n in pairs(sizes) do
      assert.are.equal(n, train.histograms[name] and train.histograms[name][300], name)
    end
    assert.is_nil(next(val.histograms))
  end)
end)
