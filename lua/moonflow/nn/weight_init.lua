-- moonflow/nn/weight_init.lua — `mf.nn.init`: in-place weight initialisers with PyTorch's names
-- and formulas (zeros_, ones_, constant_, uniform_, normal_, trunc_normal_, xavier_uniform_,
-- xavier_normal_, kaiming_uniform_, kaiming_normal_, calculate_gain). Each fills its tensor under
-- mf.no_grad from mf.rand / mf.randn (so mf.manual_seed governs them) and returns it.
local mf = require "moonflow"

local I = {}

local function check(t, fname)
  if type(t) ~= "userdata" or not mf.is_tensor(t) then -- (in place: a symbolic tensor will not do)
    error(fname .. ": expected a tensor, got " .. (mf.is_tensor(t) and "a symbolic tensor" or type(t)), 3)
  end
  if not t:is_floating_point() then
    error(fname .. ": expected a float tensor, got " .. t:dtype(), 3)
  end
end

-- v, or def when v is nil; anything but a number is an error naming fname and what v is
local function num(v, def, fname, what)
  if v == nil then return def end
  if type(v) ~= "number" then
    error(("%s: %s must be a number, got %s"):format(fname, what, type(v)), 3)
  end
  return v
end

local function like(t) return { dtype = t:dtype(), device = t:device() } end

local function fill_from(t, src)
  mf.no_grad(function() t:copy_(src) end)
  return t
end

function I.constant_(t, v)
  check(t, "constant_")
  mf.no_grad(function() t:fill_(v) end)
  return t
end

function I.zeros_(t)
  check(t, "zeros_")
  return I.constant_(t, 0)
end
function I.ones_(t)
  check(t, "ones_")
  return I.constant_(t, 1)
end

-- uniform_(t [, a = 0 [, b = 1]]): values from U(a, b).
function I.uniform_(t, a, b)
  check(t, "uniform_")
  a, b = num(a, 0, "uniform_", "a"), num(b, 1, "uniform_", "b")
  return fill_from(t, mf.rand(t:shape(), like(t)) * (b - a) + a)
end

-- normal_(t [, mean = 0 [, std = 1]])
function I.normal_(t, mean, std)
  check(t, "normal_")
  mean, std = num(mean, 0, "normal_", "mean"), num(std, 1, "normal_", "std")
  return fill_from(t, mf.randn(t:shape(), like(t)) * std + mean)
end

-- trunc_normal_(t [, mean = 0 [, std = 1 [, a = mean - 2 std [, b = mean + 2 std]]]]): normal
-- values, those outside [a, b] drawn again (TensorFlow's truncated_normal with the defaults).
function I.trunc_normal_(t, mean, std, a, b)
  check(t, "trunc_normal_")
  mean, std = num(mean, 0, "trunc_normal_", "mean"), num(std, 1, "trunc_normal_", "std")
  a = num(a, mean - 2 * std, "trunc_normal_", "a")
  b = num(b, mean + 2 * std, "trunc_normal_", "b")
  if not (a < b) then error("trunc_normal_: the interval [a, b] is empty", 2) end
  local lo, hi = (a - mean) / std, (b - mean) / std
  mf.no_grad(function()
    local z = mf.randn(t:shape(), like(t))
    for _ = 1, 1000 do
      local bad = mf.logical_or(mf.lt(z, lo), mf.gt(z, hi))
      if bad:sum():item() == 0 then break end
      z = mf.where(bad, mf.randn(t:shape(), like(t)), z)
    end
    z = mf.clamp(z, lo, hi) -- only for intervals so unlikely that 1000 rounds did not suffice
    t:copy_(z * std + mean)
  end)
  return t
end

-- fan_in, fan_out of a weight (out, in, k...) as torch computes them.
function I.calculate_fans(t)
  check(t, "calculate_fans")
  local nd = t:dim()
  if nd < 2 then
    error("fan in and fan out need a tensor with at least 2 dimensions, got shape " ..
      table.concat(t:shape(), "x"), 3)
  end
  local rf = 1
  for d = 3, nd do rf = rf * t:size(d) end
  return t:size(2) * rf, t:size(1) * rf
end

-- calculate_gain(nonlinearity [, param]): torch's recommended gains.
function I.calculate_gain(nl, param)
  if type(nl) ~= "string" then
    error("calculate_gain: the nonlinearity must be a string such as \"relu\", got " .. type(nl), 2)
  end
  if nl == "linear" or nl == "sigmoid" or nl == "identity" or nl:match("^conv") then return 1 end
  if nl == "tanh" then return 5 / 3 end
  if nl == "relu" then return math.sqrt(2) end
  if nl == "selu" then return 3 / 4 end
  if nl == "leaky_relu" then
    local slope = num(param, 0.01, "calculate_gain", "the negative slope")
    return math.sqrt(2 / (1 + slope * slope))
  end
  error("calculate_gain: unknown nonlinearity '" .. tostring(nl) .. "'", 2)
end

-- xavier_uniform_(t [, gain = 1]): U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)).
function I.xavier_uniform_(t, gain)
  check(t, "xavier_uniform_")
  local fi, fo = I.calculate_fans(t)
  local bound = num(gain, 1, "xavier_uniform_", "gain") * math.sqrt(6 / (fi + fo))
  return I.uniform_(t, -bound, bound)
end

-- xavier_normal_(t [, gain = 1]): N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out)).
function I.xavier_normal_(t, gain)
  check(t, "xavier_normal_")
  local fi, fo = I.calculate_fans(t)
  return I.normal_(t, 0, num(gain, 1, "xavier_normal_", "gain") * math.sqrt(2 / (fi + fo)))
end

-- Kaiming options: kaiming_*(t [, a = 0 [, mode = "fan_in" [, nonlinearity = "leaky_relu"]]]) or
-- kaiming_*(t, {a =, mode =, nonlinearity =}).
local function kaiming_std(t, a, mode, nl, fname)
  if type(a) == "table" then a, mode, nl = a.a, a.mode, a.nonlinearity end
  a, mode, nl = num(a, 0, fname, "a (the negative slope)"), mode or "fan_in", nl or "leaky_relu"
  if type(nl) ~= "string" then
    error(fname .. ": the nonlinearity must be a string such as \"relu\", got " .. type(nl), 3)
  end
  if mode ~= "fan_in" and mode ~= "fan_out" then
    error(fname .. ": mode must be \"fan_in\" or \"fan_out\", got " .. tostring(mode), 3)
  end
  local fi, fo = I.calculate_fans(t)
  return I.calculate_gain(nl, a) / math.sqrt(mode == "fan_in" and fi or fo)
end

-- kaiming_uniform_: U(-b, b), b = gain * sqrt(3 / fan). nn.Linear and nn.Conv2d use a = sqrt(5).
function I.kaiming_uniform_(t, a, mode, nl)
  check(t, "kaiming_uniform_")
  local bound = math.sqrt(3) * kaiming_std(t, a, mode, nl, "kaiming_uniform_")
  return I.uniform_(t, -bound, bound)
end

-- kaiming_normal_: N(0, std^2), std = gain / sqrt(fan).
function I.kaiming_normal_(t, a, mode, nl)
  check(t, "kaiming_normal_")
  return I.normal_(t, 0, kaiming_std(t, a, mode, nl, "kaiming_normal_"))
end

return I
