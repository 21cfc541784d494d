-- moonflow/onnx/builder.lua — collects an ONNX graph (nodes in topological order, initializers,
-- inputs, outputs) and serializes it as a ModelProto with moonflow/protobuf.lua. Field numbers and
-- the layout: ../shared/FORMATS.md "ONNX (export)" (ir_version 8, proto2, opset 13..17).
--
--   local b = builder.new()
--   local w = b:initializer("fc.weight", t)               -- an eager tensor, raw little-endian data
--   local y = b:node("Gemm", { x, w, bias }, { transB = 1 }) -- -> the output's name
--   b:input("input", "float32", { "N", 784 }); b:output(y, "float32", { "N", 10 })
--   local bytes = b:model_bytes(13)
-- Names are unique within the graph (a taken base name gets "_1", "_2", ...).
local pb = require "moonflow.protobuf"

local builder = {}

local Builder = {}
Builder.__index = Builder

-- TensorProto.DataType of moonflow's dtypes
local ELEM = { float32 = 1, uint8 = 2, int32 = 6, int64 = 7, bool = 9, float16 = 10, float64 = 11,
  bfloat16 = 16 }
builder.ELEM = ELEM

function builder.elem_type(dtype)
  local e = ELEM[dtype]
  if e == nil then error(("onnx.export: the dtype %s has no ONNX element type"):format(tostring(dtype)), 0) end
  return e
end

function builder.new()
  return setmetatable({ nodes = {}, inits = {}, inputs = {}, outputs = {}, used = {}, by_tensor = {},
    count = {}, is_init = {} }, Builder)
end

-- b:name(base) -> a name no value or node of this graph has yet.
function Builder:name(base)
  base = tostring(base)
  if not self.used[base] then
    self.used[base] = true
    return base
  end
  local n = self.count[base] or 0
  local cand
  repeat
    n = n + 1
    cand = base .. "_" .. n
  until not self.used[cand]
  self.count[base] = n
  self.used[cand] = true
  return cand
end

function Builder:_init(t)
  self.inits[#self.inits + 1] = t
  self.is_init[t.name] = true
end

-- b:initializer(base, t) -> name: t (an eager tensor, any layout or device) as a TensorProto with
-- raw_data; the same tensor object given twice is stored once.
function Builder:initializer(base, t)
  local have = self.by_tensor[t]
  if have then return have end
  local name = self:name(base)
  self:_init { name = name, dims = t:shape(), elem = builder.elem_type(t:dtype()), raw = t:tobytes() }
  self.by_tensor[t] = name
  return name
end

-- b:int64s(base, list) -> name of a 1-D INT64 initializer (Reshape's shape).
function Builder:int64s(base, list)
  local name = self:name(base)
  self:_init { name = name, dims = { #list }, elem = ELEM.int64,
    raw = string.pack("<" .. string.rep("i8", #list), table.unpack(list)) }
  return name
end

-- b:scalar(base, x, dtype) -> name of a 0-d initializer holding the number x.
local SCALAR_FMT = { float32 = "<f", float64 = "<d", int32 = "<i4", int64 = "<i8", uint8 = "B" }
function Builder:scalar(base, x, dtype)
  local fmt = SCALAR_FMT[dtype]
  if fmt == nil then
    error(("onnx.export: cannot make a %s constant of the number %s"):format(tostring(dtype), x), 0)
  end
  if fmt ~= "<f" and fmt ~= "<d" then x = math.tointeger(x) or error(
    ("onnx.export: %s is not an integer (needed as a %s constant)"):format(x, dtype), 0) end
  local name = self:name(base)
  self:_init { name = name, dims = {}, elem = ELEM[dtype], raw = string.pack(fmt, x) }
  return name
end

-- b:node(op_type, inputs, attrs [, out_base [, nout]]) -> output name(s). inputs: value names
-- ("" for an omitted optional input); attrs: { name = integer | number | string | {integers} |
-- {numbers} } (a Lua float is a FLOAT attribute, an integer an INT).
function Builder:node(op, inputs, attrs, out_base, nout)
  local outs = {}
  for i = 1, nout or 1 do outs[i] = self:name(out_base or op) end
  self.nodes[#self.nodes + 1] = { op = op, inputs = inputs, outputs = outs, attrs = attrs or {},
    name = self:name("node/" .. outs[1]) }
  return table.unpack(outs)
end

-- b:rename(name, new): the value `name` is called `new` from now on (in every node).
function Builder:rename(name, new)
  for _, n in ipairs(self.nodes) do
    for _, list in ipairs { n.inputs, n.outputs } do
      for j, o in ipairs(list) do if o == name then list[j] = new end end
    end
  end
end

-- b:input(name, dtype, dims) and b:output(name, dtype, dims): dims entries are sizes or names of
-- symbolic dimensions ("N"); dims nil: the rank is unknown.
function Builder:input(name, dtype, dims)
  self.inputs[#self.inputs + 1] = { name = name, elem = builder.elem_type(dtype), dims = dims }
end

function Builder:output(name, dtype, dims)
  self.outputs[#self.outputs + 1] = { name = name, elem = builder.elem_type(dtype), dims = dims }
end

-- ---- serialization ------------------------------------------------------------------------------

local function attribute(name, v)
  local a = pb.message():string(1, name)
  if math.type(v) == "integer" then
    a:varint(20, 2):varint(3, v)
  elseif type(v) == "number" then
    a:varint(20, 1):float(2, v)
  elseif type(v) == "string" then
    a:varint(20, 3):string(4, v)
  elseif type(v) == "table" then
    local ints = true
    for _, x in ipairs(v) do if math.type(x) ~= "integer" then ints = false end end
    if ints then
      a:varint(20, 7)
      for _, x in ipairs(v) do a:varint(8, x) end
    else
      a:varint(20, 6)
      for _, x in ipairs(v) do a:float(7, x) end
    end
  else
    error(("onnx: attribute %s: cannot encode a %s"):format(name, type(v)), 0)
  end
  return a
end

local function node_proto(n)
  local m = pb.message()
  for _, i in ipairs(n.inputs) do m:string(1, i) end
  for _, o in ipairs(n.outputs) do m:string(2, o) end
  m:string(3, n.name):string(4, n.op)
  local keys = {}
  for k in pairs(n.attrs) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do m:message(5, attribute(k, n.attrs[k])) end
  return m
end

local function tensor_proto(t)
  local m = pb.message()
  for _, d in ipairs(t.dims) do m:varint(1, d) end
  return m:varint(2, t.elem):string(8, t.name):string(9, t.raw)
end

local function value_info(v)
  local tt = pb.message():varint(1, v.elem)
  if v.dims then
    local shape = pb.message()
    for _, d in ipairs(v.dims) do
      local dim = pb.message()
      if type(d) == "string" then dim:string(2, d) else dim:varint(1, d) end
      shape:message(1, dim)
    end
    tt:message(2, shape)
  end
  return pb.message():string(1, v.name):message(2, pb.message():message(1, tt))
end

-- b:model_bytes(opset [, graph_name [, producer_version]]) -> the serialized ModelProto.
function Builder:model_bytes(opset, graph_name, producer_version)
  local g = pb.message()
  for _, n in ipairs(self.nodes) do g:message(1, node_proto(n)) end
  g:string(2, graph_name or "moonflow")
  for _, t in ipairs(self.inits) do g:message(5, tensor_proto(t)) end
  for _, v in ipairs(self.inputs) do g:message(11, value_info(v)) end
  for _, v in ipairs(self.outputs) do g:message(12, value_info(v)) end
  return pb.message():varint(1, 8):string(2, "moonflow"):string(3, producer_version or "")
      :message(7, g):message(8, pb.message():string(1, ""):varint(2, opset)):bytes()
end

return builder
