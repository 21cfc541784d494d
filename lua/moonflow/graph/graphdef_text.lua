-- moonflow/graph/graphdef_text.lua — a GraphDef in protobuf's text format (what
-- tf.train.write_graph(..., as_text=True) writes and Python's text_format.Parse reads): gd:text().
local TP = require "moonflow.graph.tensor_proto"

local DT_NAME, decode, str, int, strs, read_shape = TP.DT_NAME, TP.decode, TP.str, TP.int, TP.strs,
  TP.read_shape

local function q(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    local map = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r' }
    return map[c] or ("\\%03o"):format(c:byte())
  end) .. '"'
end

local DT_TEXT = { float32 = "DT_FLOAT", float64 = "DT_DOUBLE", int32 = "DT_INT32",
  uint8 = "DT_UINT8", string = "DT_STRING", int64 = "DT_INT64", bool = "DT_BOOL",
  bfloat16 = "DT_BFLOAT16", float16 = "DT_HALF" }

local function shape_text(out, ind, s)
  if s.unknown_rank then
    out[#out + 1] = ind .. "unknown_rank: true"
    return
  end
  for _, d in ipairs(s) do
    out[#out + 1] = ind .. "dim {" .. (d ~= 0 and (" size: " .. d .. " ") or " ") .. "}"
  end
end

local function tensor_text(out, ind, bytes)
  local f = decode(bytes, "TensorProto")
  out[#out + 1] = ind .. "dtype: " .. (DT_TEXT[DT_NAME[int(f, 1, "dtype") or 0]] or "DT_INVALID")
  out[#out + 1] = ind .. "tensor_shape {"
  shape_text(out, ind .. "  ", str(f, 2, "tensor_shape") and read_shape(str(f, 2, "tensor_shape")) or {})
  out[#out + 1] = ind .. "}"
  if str(f, 4, "tensor_content") then out[#out + 1] = ind .. "tensor_content: " .. q(str(f, 4, "c")) end
  for _, s in ipairs(strs(f, 8, "string_val")) do out[#out + 1] = ind .. "string_val: " .. q(s) end
end

local function attr_text(out, ind, a)
  if a.list then
    out[#out + 1] = ind .. "list {"
    local l = a.list
    for _, s in ipairs(l.s or {}) do out[#out + 1] = ind .. "  s: " .. q(s) end
    for _, i in ipairs(l.i or {}) do out[#out + 1] = ind .. "  i: " .. i end
    for _, x in ipairs(l.f or {}) do out[#out + 1] = ind .. "  f: " .. ("%.9g"):format(x) end
    for _, d in ipairs(l.type or {}) do out[#out + 1] = ind .. "  type: " .. (DT_TEXT[d] or d) end
    for _, s in ipairs(l.shape or {}) do
      out[#out + 1] = ind .. "  shape {"
      shape_text(out, ind .. "    ", s)
      out[#out + 1] = ind .. "  }"
    end
    for _, t in ipairs(l.tensor or {}) do
      out[#out + 1] = ind .. "  tensor {"
      tensor_text(out, ind .. "    ", t)
      out[#out + 1] = ind .. "  }"
    end
    out[#out + 1] = ind .. "}"
  elseif a.s then out[#out + 1] = ind .. "s: " .. q(a.s)
  elseif a.i then out[#out + 1] = ind .. "i: " .. a.i
  elseif a.f then out[#out + 1] = ind .. "f: " .. ("%.9g"):format(a.f)
  elseif a.b ~= nil then out[#out + 1] = ind .. "b: " .. tostring(a.b)
  elseif a.type then out[#out + 1] = ind .. "type: " .. (DT_TEXT[a.type] or a.type)
  elseif a.shape then
    out[#out + 1] = ind .. "shape {"
    shape_text(out, ind .. "  ", a.shape)
    out[#out + 1] = ind .. "}"
  elseif a.tensor then
    out[#out + 1] = ind .. "tensor {"
    tensor_text(out, ind .. "  ", a.tensor)
    out[#out + 1] = ind .. "}"
  end
end

-- text(gd) -> the protobuf text format of GraphDef gd, as TensorFlow's text_format prints it
return function(self)
  local out = {}
  for _, nd in ipairs(self.node) do
    out[#out + 1] = "node {"
    out[#out + 1] = "  name: " .. q(nd.name)
    out[#out + 1] = "  op: " .. q(nd.op)
    for _, s in ipairs(nd.input or {}) do out[#out + 1] = "  input: " .. q(s) end
    if nd.device and nd.device ~= "" then out[#out + 1] = "  device: " .. q(nd.device) end
    local keys = {}
    for k in pairs(nd.attr or {}) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      out[#out + 1] = "  attr {"
      out[#out + 1] = "    key: " .. q(k)
      out[#out + 1] = "    value {"
      attr_text(out, "      ", nd.attr[k])
      out[#out + 1] = "    }"
      out[#out + 1] = "  }"
    end
    out[#out + 1] = "}"
  end
  out[#out + 1] = "versions {"
  out[#out + 1] = "  producer: " .. ((self.versions or {}).producer or 0)
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end
