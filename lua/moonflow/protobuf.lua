-- protobuf.lua — a small Protocol Buffers encoder and decoder in Lua for the files other tools
-- read: ONNX models (mf.onnx), TensorFlow GraphDefs (TensorBoard's graph tab, frozen graphs).
-- Wire format: ../shared/FORMATS.md "Protobuf wire format". Field numbers come from the callers.
--
-- Encoding: a message is built as a Lua list of byte strings and joined once:
--   local m = pb.message()
--   m:string(1, "conv1"); m:varint(2, 7); m:float(3, 0.5); m:message(4, sub)  -- sub: a message
--   m:packed_varints(5, {1, 2, 3}); m:packed_floats(6, {...}); local bytes = m:bytes()
-- Varints take Lua integers (negative ones are written as 10-byte two's complement, as protobuf
-- does for int32/int64); floats are float32 (wire type 5), doubles float64 (wire type 1).
--
-- Decoding: pb.decode(bytes) -> { [field] = { value, value, ... } } where a value is an integer
-- (varint, fixed32/fixed64 as unsigned bits) or a string (length-delimited: a string, bytes or a
-- sub-message: decode it again). Errors name the offset: "protobuf: truncated varint at byte 17".
local pb = {}

local spack, sunpack, schar, sbyte = string.pack, string.unpack, string.char, string.byte
local concat = table.concat

-- varint(n) -> bytes: n as an unsigned 64-bit little-endian base-128 varint
local function varint(n)
  local out = {}
  repeat
    local low = n & 0x7f
    n = n >> 7 -- logical shift: negative numbers terminate after 10 bytes
    out[#out + 1] = schar(n ~= 0 and (low | 0x80) or low)
  until n == 0
  return concat(out)
end
pb.varint = varint

local function key(field, wire) return varint((field << 3) | wire) end

local Message = {}
Message.__index = Message

function pb.message() return setmetatable({ n = 0 }, Message) end

local function put(m, s)
  m.n = m.n + 1
  m[m.n] = s
  return m
end

function Message:varint(field, n)
  if n == true then n = 1 elseif n == false then n = 0 end
  return put(put(self, key(field, 0)), varint(math.tointeger(n) or error(
    ("protobuf: field %d: %s is not an integer"):format(field, tostring(n)), 2)))
end

function Message:float(field, x) return put(put(self, key(field, 5)), spack("<f", x)) end
function Message:double(field, x) return put(put(self, key(field, 1)), spack("<d", x)) end

-- bytes or string; a Message is serialized first
function Message:string(field, s)
  if getmetatable(s) == Message then s = s:bytes() end
  return put(put(put(self, key(field, 2)), varint(#s)), s)
end
Message.message = Message.string

function Message:packed_varints(field, list)
  local parts = {}
  for i = 1, #list do parts[i] = varint(list[i]) end
  return self:string(field, concat(parts))
end

-- packed float32 values from a Lua list (raw little-endian bytes: use :string for those)
function Message:packed_floats(field, list)
  return self:string(field, spack("<" .. string.rep("f", #list), table.unpack(list)))
end

function Message:bytes() return concat(self, "", 1, self.n) end

-- decode(bytes) -> fields: { [field] = {v1, v2, ...} } (see the top of the file)
function pb.decode(s)
  if type(s) ~= "string" then -- a field that should hold a message came with another wire type
    error(("protobuf: expected a sub-message (length-delimited), got a %s field"):format(
      math.type(s) and "numeric" or type(s)), 0)
  end
  local fields, i, n = {}, 1, #s
  local function read_varint()
    local v, shift = 0, 0
    while true do
      if i > n then error(("protobuf: truncated varint at byte %d"):format(i - 1), 0) end
      if shift > 63 then error(("protobuf: varint too long at byte %d"):format(i - 1), 0) end
      local b = sbyte(s, i)
      i = i + 1
      v = v | ((b & 0x7f) << shift)
      shift = shift + 7
      if b < 0x80 then return v end
    end
  end
  while i <= n do
    local at = i - 1
    local k = read_varint()
    local field, wire = k >> 3, k & 7
    if field == 0 then error(("protobuf: field number 0 at byte %d"):format(at), 0) end
    local v
    if wire == 0 then
      v = read_varint()
    elseif wire == 1 or wire == 5 then
      local w = wire == 1 and 8 or 4
      if i + w - 1 > n then error(("protobuf: truncated fixed field %d at byte %d"):format(field, at), 0) end
      v = sunpack(wire == 1 and "<i8" or "<I4", s, i)
      i = i + w
    elseif wire == 2 then
      local len = read_varint()
      if len < 0 or len > n - i + 1 then
        error(("protobuf: field %d at byte %d has length %d, past the end (%d bytes left)"):format(
          field, at, len, n - i + 1), 0)
      end
      v = s:sub(i, i + len - 1)
      i = i + len
    else
      error(("protobuf: unsupported wire type %d for field %d at byte %d"):format(wire, field, at), 0)
    end
    local list = fields[field]
    if not list then
      list = {}
      fields[field] = list
    end
    list[#list + 1] = v
  end
  return fields
end

-- helpers for decoded values
function pb.as_float(bits) return (sunpack("<f", spack("<I4", bits))) end
function pb.as_double(bits) return (sunpack("<d", spack("<i8", bits))) end
-- a varint read back as a signed 32-bit value (int32 fields hold negatives sign-extended to 64)
function pb.as_int32(v)
  v = v & 0xffffffff
  return v >= 0x80000000 and v - 0x100000000 or v
end

-- packed varints (a length-delimited value) -> list of integers
function pb.unpack_varints(s)
  if type(s) ~= "string" then
    error(("protobuf: expected packed values (length-delimited), got a %s field"):format(
      math.type(s) and "numeric" or type(s)), 0)
  end
  local out = {}
  local i, n = 1, #s
  while i <= n do
    local v, shift = 0, 0
    repeat
      if i > n then error("protobuf: truncated packed varint", 0) end
      local b = sbyte(s, i)
      i = i + 1
      v = v | ((b & 0x7f) << shift)
      shift = shift + 7
    until b < 0x80
    out[#out + 1] = v
  end
  return out
end

return pb
