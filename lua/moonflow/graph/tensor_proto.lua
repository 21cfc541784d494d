-- moonflow/graph/tensor_proto.lua — TensorFlow's TensorProto and TensorShapeProto
-- (tensorflow/core/framework/tensor.proto, tensor_shape.proto) for GraphDefs (graph/graphdef.lua):
-- eager tensors and string values to TensorProto bytes (tensor_content: the raw row-major bytes),
-- and back from any encoding TensorFlow writes (tensor_content, or typed value lists where fewer
-- values than elements repeat the last one). Also the typed field readers of decoded messages: a
-- field of the wrong wire type is "not a valid GraphDef" error, never a crash.
-- DataType: DT_FLOAT 1, DT_DOUBLE 2, DT_INT32 3, DT_UINT8 4, DT_STRING 7, DT_INT64 9, DT_BOOL 10,
-- DT_BFLOAT16 14, DT_HALF 19. TensorShapeProto{2 dim{1 size}, 3 unknown_rank};
-- TensorProto{1 dtype, 2 tensor_shape, 4 tensor_content, 5 float_val, 6 double_val, 7 int_val,
-- 8 string_val, 10 int64_val, 11 bool_val, 13 half_val}.
local pb = require "moonflow.protobuf"
local core = require "moonflow.core"

local sunpack, spack = string.unpack, string.pack

local function is_eager(v) return core.is_tensor(v) end

-- ---- data types -------------------------------------------------------------------------------

local DT = { float32 = 1, float64 = 2, int32 = 3, uint8 = 4, string = 7, int64 = 9, bool = 10,
  bfloat16 = 14, float16 = 19 }
local DT_NAME = {}
for k, v in pairs(DT) do DT_NAME[v] = k end
-- dtypes whose tensor_content bytes are moonflow's own element bytes (mf.frombytes reads them)
local BYTES_AS_IS = { float32 = true, float64 = true, int32 = true, int64 = true, uint8 = true }

-- string.unpack codes for tensor_content (float16/bfloat16 as their bits)
local CODE = { float32 = "f", float64 = "d", int32 = "i4", uint8 = "B", int64 = "i8", bool = "B",
  float16 = "I2", bfloat16 = "I2" }
local SIZE = { float32 = 4, float64 = 8, int32 = 4, uint8 = 1, int64 = 8, bool = 1, float16 = 2,
  bfloat16 = 2 }

-- a dtype name -> its DataType number (a number read from a file that moonflow has no name for
-- is written back as it was)
local function dt_enum(dtype, what)
  if math.type(dtype) == "integer" then return dtype end
  local e = DT[dtype]
  if e == nil then error(("%s: dtype %s has no TensorFlow DataType"):format(what, tostring(dtype)), 0) end
  return e
end

-- ---- TensorShapeProto and TensorProto ---------------------------------------------------------

local function shape_msg(shape)
  local m = pb.message()
  if shape == nil or shape.unknown_rank then return m:varint(3, 1) end
  for _, d in ipairs(shape) do
    local dim = pb.message()
    if d ~= 0 then dim:varint(1, d) end
    m:message(2, dim)
  end
  return m
end

-- tensor_bytes(v) -> TensorProto bytes of an eager tensor, a number, a boolean, a string or a
-- nested table of strings
local function tensor_bytes(v)
  local m = pb.message()
  if type(v) == "string" or type(v) == "table" then
    -- (the graph code is loaded whenever a GraphDef is written: its value_shape serves here)
    m:varint(1, DT.string):message(2, shape_msg(require("moonflow.graph").value_shape(v)))
    local function put(x)
      if type(x) == "table" then for _, y in ipairs(x) do put(y) end
      elseif type(x) ~= "string" then error("a string tensor holds a " .. type(x), 0)
      else m:string(8, x) end
    end
    put(v)
    return m:bytes()
  end
  if not is_eager(v) then v = core.tensor(v) end
  if v:device() ~= "cpu" then v = v:cpu() end
  m:varint(1, dt_enum(v:dtype(), "TensorProto")):message(2, shape_msg(v:shape()))
  if v:numel() > 0 then m:string(4, core.no_grad(function() return v:tobytes() end)) end
  return m:bytes()
end

-- typed field readers for decoded messages: wrong wire types are "not a GraphDef" errors
local function bad(what) error("not a valid GraphDef: " .. what, 0) end

local function str(f, k, what)
  local v = f[k] and f[k][#f[k]]
  if v == nil then return nil end
  if type(v) ~= "string" then bad(what .. " is not a string") end
  return v
end

local function int(f, k, what)
  local v = f[k] and f[k][#f[k]]
  if v == nil then return nil end
  if math.type(v) ~= "integer" then bad(what .. " is not an integer") end
  return v
end

local function strs(f, k, what)
  local list = f[k] or {}
  for _, v in ipairs(list) do if type(v) ~= "string" then bad(what .. " is not a string") end end
  return list
end

local function decode(bytes, what)
  local ok, r = pcall(pb.decode, bytes)
  if not ok then bad(what .. ": " .. tostring(r)) end
  return r
end

local function read_shape(bytes)
  local f = decode(bytes, "TensorShapeProto")
  if int(f, 3, "unknown_rank") == 1 then return { unknown_rank = true } end
  local shape = {}
  for i, d in ipairs(strs(f, 2, "shape dim")) do
    shape[i] = int(decode(d, "shape dim"), 1, "dim size") or 0
    if shape[i] < -1 or shape[i] > 1 << 40 then bad(("a shape has size %d"):format(shape[i])) end
  end
  return shape
end

-- half and bfloat16 bits -> Lua floats
local function half_to_float(h)
  local s = (h >> 15) == 1 and -1 or 1
  local e, m = (h >> 10) & 0x1f, h & 0x3ff
  if e == 0 then return s * m * 2.0 ^ -24 end
  if e == 31 then return m == 0 and s * math.huge or 0 / 0 end
  return s * (1 + m / 1024) * 2.0 ^ (e - 15)
end
local function bf16_to_float(b) return (sunpack("<f", spack("<I4", b << 16))) end

-- list of numbers from a repeated numeric field (packed bytes or single values)
local function numbers(vals, code, size)
  local out = {}
  for _, v in ipairs(vals or {}) do
    if type(v) == "string" then
      if code == "varint" then
        for _, x in ipairs(pb.unpack_varints(v)) do out[#out + 1] = x end
      else
        if #v % size ~= 0 then bad("a packed value list has a partial element") end
        for i = 1, #v, size do out[#out + 1] = sunpack(code, v, i) end
      end
    elseif code == "<f" then out[#out + 1] = pb.as_float(v)
    elseif code == "<d" then out[#out + 1] = pb.as_double(v)
    else out[#out + 1] = v end
  end
  return out
end

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

local MAX_SPLAT = 1 << 24 -- elements a value list shorter than its shape may fill in Lua
-- the most elements a file may make an import allocate for one tensor (1 GiB of float32): a
-- corrupt size fails here instead of exhausting memory
local MAX_ELEMENTS = 1 << 28

-- raw values (bits for float16/bfloat16, 0/1 for bool, int32 as unsigned varints) -> Lua values
local function convert(dtype, flat, n)
  if dtype == "bool" then for i = 1, n do flat[i] = flat[i] ~= 0 end
  elseif dtype == "float16" then for i = 1, n do flat[i] = half_to_float(flat[i] & 0xffff) end
  elseif dtype == "bfloat16" then for i = 1, n do flat[i] = bf16_to_float(flat[i] & 0xffff) end
  elseif dtype == "float32" or dtype == "float64" then for i = 1, n do flat[i] = flat[i] + 0.0 end
  elseif dtype == "int32" then for i = 1, n do flat[i] = pb.as_int32(flat[i]) end end
  return flat
end

-- decode_tensor(bytes) -> an eager CPU tensor (or a string / nested table of strings)
local function decode_tensor(bytes)
  local f = decode(bytes, "TensorProto")
  local dtype = DT_NAME[int(f, 1, "dtype") or 0]
  if dtype == nil then bad(("tensor dtype %d is not supported"):format(int(f, 1, "dtype") or 0)) end
  local shape = {}
  local sb = str(f, 2, "tensor_shape")
  if sb then shape = read_shape(sb) end
  if shape.unknown_rank then bad("a tensor value has an unknown shape") end
  for _, d in ipairs(shape) do if d < 0 then bad("a tensor value has a negative size") end end
  local n = numel(shape)
  if n > 1 << 40 then bad(("a tensor value has %d elements"):format(n)) end
  if dtype == "string" then
    local vals = strs(f, 8, "string_val")
    if #vals ~= n and not (#vals == 1 and n <= MAX_SPLAT) then
      bad(("a string tensor has %d values for %d elements"):format(#vals, n))
    end
    local k = 0
    local function fill(d)
      if d > #shape then
        k = k + 1
        return vals[math.min(k, #vals)]
      end
      local r = {}
      for i = 1, shape[d] do r[i] = fill(d + 1) end
      return r
    end
    return fill(1)
  end
  local make = (dtype == "float16" or dtype == "bfloat16") and "float32" or dtype
  local flat
  local content = str(f, 4, "tensor_content")
  if content then
    if #content ~= n * SIZE[dtype] then
      bad(("tensor_content has %d bytes for %d %s elements"):format(#content, n, dtype))
    end
    if BYTES_AS_IS[dtype] then return core.frombytes(content, dtype, shape) end
    flat = {}
    local chunk, pos = 4096, 1
    for start = 1, n, chunk do
      local k = math.min(chunk, n - start + 1)
      local vals = table.pack(sunpack("<" .. CODE[dtype]:rep(k), content, pos))
      pos = vals[k + 1]
      table.move(vals, 1, k, start, flat)
    end
  else
    local src = ({ float32 = { 5, "<f", 4 }, float64 = { 6, "<d", 8 }, int32 = { 7, "varint" },
      uint8 = { 7, "varint" }, int64 = { 10, "varint" }, bool = { 11, "varint" },
      float16 = { 13, "varint" }, bfloat16 = { 13, "varint" } })[dtype]
    local vals = numbers(f[src[1]], src[2], src[3])
    if #vals > n then bad(("a tensor has %d values for %d elements"):format(#vals, n)) end
    if #vals == 0 and n > 0 then vals[1] = 0 end
    convert(dtype, vals, #vals)
    if #vals == 1 and n > 1 then -- TensorFlow's splat: one value for every element
      if n > MAX_ELEMENTS then bad(("a tensor value has %d elements"):format(n)) end
      local t = core.full(shape, vals[1], { dtype = make })
      return make ~= dtype and t:to(dtype) or t
    end
    if #vals < n and n > MAX_SPLAT then
      bad(("a tensor has %d values for %d elements"):format(#vals, n))
    end
    flat = {}
    for i = 1, n do flat[i] = vals[math.min(i, #vals)] end
  end
  if content then convert(dtype, flat, n) end
  local t
  if n == 0 then
    t = core.zeros(shape, { dtype = make })
  else
    t = core.tensor(flat, { dtype = make })
    t = #shape == 0 and t:reshape({}) or t:reshape(shape)
  end
  if make ~= dtype then t = t:to(dtype) end
  return t:contiguous()
end

return { MAX_ELEMENTS = MAX_ELEMENTS, DT = DT, DT_NAME = DT_NAME, dt_enum = dt_enum, shape_msg = shape_msg,
  tensor_bytes = tensor_bytes, decode_tensor = decode_tensor, read_shape = read_shape,
  numbers = numbers, bad = bad, str = str, int = int, strs = strs, decode = decode }
