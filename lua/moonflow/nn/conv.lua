-- moonflow/nn/conv.lua — the spatial layers: Conv2d, MaxPool2d, AvgPool2d, for NCHW inputs or,
-- with data_format = "NHWC", (N, H, W, C) inputs as in TensorFlow (viewed as NCHW by a permutation,
-- no copy: the CPU kernels take channels-last memory directly and return it, so NHWC runs about as
-- fast as NCHW). Padding: a number, {ph, pw}, {top, left, bottom, right}, "valid" or "same"
-- (TensorFlow's: out = ceil(in / stride), the odd cell after).
local mf = require "moonflow"
local module = require "moonflow.nn.module"
local F = require "moonflow.nn.functional"
local init = require "moonflow.nn.weight_init"
local layers = require "moonflow.nn.layers"

local class, Module = module.class, module.Module
local fail, check_count, tensor_opts = layers._fail, layers._check_count, layers._tensor_opts
local check_input = layers._check_input
local shape_str = F._shape_str
local C = {}

local function pair(v, what, fname)
  if math.type(v) == "integer" and v >= 1 then return { v, v } end
  if type(v) == "table" and #v == 2 and math.type(v[1]) == "integer" and v[1] >= 1
      and math.type(v[2]) == "integer" and v[2] >= 1 then
    return { v[1], v[2] }
  end
  error(("%s: %s must be a positive integer or {h, w}, got %s"):format(fname, what, tostring(v)), 4)
end

local function check_padding(p, fname)
  if p == nil then return 0 end
  if p == "same" or p == "valid" or p == "SAME" or p == "VALID" then return p:lower() end
  if math.type(p) == "integer" and p >= 0 then return p end
  if type(p) == "table" and (#p == 2 or #p == 4) then
    for _, v in ipairs(p) do
      if math.type(v) ~= "integer" or v < 0 then goto bad end
    end
    return p
  end
  ::bad::
  error(fname .. ": padding must be a non-negative integer, {ph, pw}, {top, left, bottom, right}, " ..
    "\"same\" or \"valid\", got " .. tostring(p), 4)
end

-- A wrapped error message without its "file.lua:12: " prefix.
local function strip_where(msg) return (tostring(msg):gsub("^[^%s:]+:%d+: ", "")) end

local function check_format(df, fname)
  df = df or "NCHW"
  if df ~= "NCHW" and df ~= "NHWC" then
    error(fname .. ": data_format must be \"NCHW\" or \"NHWC\", got " .. tostring(df), 4)
  end
  return df
end

local function padding_text(p)
  if type(p) == "table" then return "{" .. table.concat(p, ", ") .. "}" end
  return tostring(p)
end

-- ", stride 2, padding same, NHWC" for the values that are not the defaults.
local function geometry_text(self, default_stride)
  local parts = {}
  local s = self.stride
  if s[1] ~= default_stride[1] or s[2] ~= default_stride[2] then
    parts[#parts + 1] = s[1] == s[2] and ("stride " .. s[1]) or ("stride " .. s[1] .. "x" .. s[2])
  end
  if self.padding ~= 0 and self.padding ~= "valid" then
    parts[#parts + 1] = "padding " .. padding_text(self.padding)
  end
  if self.data_format == "NHWC" then parts[#parts + 1] = "NHWC" end
  return #parts > 0 and (", " .. table.concat(parts, ", ")) or ""
end

-- ---- Conv2d ---------------------------------------------------------------------------------------

-- Conv2d(in, out, k [, {stride = 1, padding = 0, data_format = "NCHW", bias = true, dtype =,
-- device =}]): k = n or {kh, kw}; weight (out, in, kh, kw) (torch's layout whatever the data
-- format), bias (out). Initialised like torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
-- fan_in = in * kh * kw.
local Conv2d = class("nn.Conv2d", Module)
C.Conv2d = Conv2d

function Conv2d:__init(n_in, n_out, k, opts)
  check_count(n_in, "the number of input channels", "Conv2d")
  check_count(n_out, "the number of output channels", "Conv2d")
  opts = opts or {}
  if type(opts) ~= "table" then error("Conv2d: options must be a table {stride =, padding =, ...}", 3) end
  self.in_channels, self.out_channels = n_in, n_out
  self.kernel_size = pair(k, "the kernel size", "Conv2d")
  self.stride = pair(opts.stride or 1, "stride", "Conv2d")
  self.padding = check_padding(opts.padding, "Conv2d")
  self.data_format = check_format(opts.data_format, "Conv2d")
  local to = tensor_opts(opts)
  self:register_parameter("weight", mf.empty({ n_out, n_in, self.kernel_size[1], self.kernel_size[2] }, to))
  if opts.bias ~= false then self:register_parameter("bias", mf.empty({ n_out }, to)) end
  self:reset_parameters()
end

function Conv2d:reset_parameters()
  init.kaiming_uniform_(self.weight, math.sqrt(5))
  if self.bias ~= nil then
    local b = 1 / math.sqrt(self.in_channels * self.kernel_size[1] * self.kernel_size[2])
    init.uniform_(self.bias, -b, b)
  end
end

function Conv2d:forward(x)
  check_input(self, x)
  local nhwc = self.data_format == "NHWC"
  if x:dim() ~= 4 then
    fail(self, "expected a 4-D input (%s), got shape %s", nhwc and "N, H, W, C" or "N, C, H, W",
      shape_str(x))
  end
  local cdim = nhwc and 4 or 2
  if x:size(cdim) ~= self.in_channels then
    fail(self, "expected an input with %d channels in dimension %d (%s), got shape %s",
      self.in_channels, cdim, self.data_format, shape_str(x))
  end
  local ok, y = pcall(F.conv2d, x, self.weight, self.bias,
    { stride = self.stride, padding = self.padding, data_format = self.data_format })
  if not ok then fail(self, "%s", strip_where(y)) end
  return y
end

function Conv2d:__repr()
  local k = self.kernel_size
  return ("nn.Conv2d(%d -> %d, %dx%d%s%s)"):format(self.in_channels, self.out_channels, k[1], k[2],
    geometry_text(self, { 1, 1 }), self.bias == nil and ", no bias" or "")
end

-- ---- pooling ----------------------------------------------------------------------------------

-- MaxPool2d(k [, {stride = k, padding = 0, data_format =}]) and AvgPool2d(k [, {stride = k,
-- padding = 0, data_format =, count_include_pad =}]); torch's positional MaxPool2d(k, stride,
-- padding) works too. Max pooling ignores padding cells; average pooling counts them (torch),
-- except with padding = "same" (TensorFlow), unless count_include_pad says otherwise.
local function pool_class(name, fname)
  local cls = class("nn." .. name, Module)
  function cls:__init(k, opts, padding)
    if type(opts) ~= "table" then opts = { stride = opts, padding = padding } end
    self.kernel_size = pair(k, "the kernel size", name)
    self.stride = pair(opts.stride or self.kernel_size, "stride", name)
    self.padding = check_padding(opts.padding, name)
    self.data_format = check_format(opts.data_format, name)
    self.count_include_pad = opts.count_include_pad
  end

  function cls:forward(x)
    check_input(self, x)
    if x:dim() ~= 4 then
      fail(self, "expected a 4-D input (%s), got shape %s",
        self.data_format == "NHWC" and "N, H, W, C" or "N, C, H, W", shape_str(x))
    end
    -- looked up at call time, so that the graph API's wrapper of F applies
    local ok, y = pcall(F[fname], x, self.kernel_size, { stride = self.stride, padding = self.padding,
      data_format = self.data_format, count_include_pad = self.count_include_pad })
    if not ok then fail(self, "%s", strip_where(y)) end
    return y
  end

  function cls:__repr()
    local k = self.kernel_size
    return ("nn.%s(%dx%d%s)"):format(name, k[1], k[2], geometry_text(self, k))
  end
  C[name] = cls
end

pool_class("MaxPool2d", "max_pool2d")
pool_class("AvgPool2d", "avg_pool2d")

return C
