-- protobuf_spec.lua — lua/moonflow/protobuf.lua: known encodings from the protobuf documentation,
-- encode/decode round trips, and clear errors for truncated or malformed input.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local pb = require "moonflow.protobuf"

local function hex(s) return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end)) end

describe("protobuf", function()
  it("encodes varints and keys as the protobuf documentation shows", function()
    assert.equal("9601", hex(pb.varint(150)))
    assert.equal("089601", hex(pb.message():varint(1, 150):bytes())) -- the "Test1" example
    assert.equal("120774657374696e67", hex(pb.message():string(2, "testing"):bytes()))
    assert.equal("a00101", hex(pb.message():varint(20, 1):bytes())) -- field >= 16: 2-byte key
    assert.equal("08ffffffffffffffffff01", hex(pb.message():varint(1, -1):bytes()))
    assert.equal("0d0000803f", hex(pb.message():float(1, 1.0):bytes()))
    assert.equal("2206038e029ea705", hex(pb.message():packed_varints(4, { 3, 270, 86942 }):bytes()))
  end)

  it("decodes what it encodes, nested messages included", function()
    local sub = pb.message():string(1, "w"):packed_floats(2, { 1.5, -2 })
    local b = pb.message():varint(1, 300):varint(2, -5):double(3, 0.1):message(4, sub)
      :message(4, pb.message()):bytes()
    local f = pb.decode(b)
    assert.equal(300, f[1][1])
    assert.equal(-5, pb.as_int32(f[2][1]))
    assert.equal(0.1, pb.as_double(f[3][1]))
    assert.equal(2, #f[4])
    local s = pb.decode(f[4][1])
    assert.equal("w", s[1][1])
    local a, c = string.unpack("<ff", s[2][1])
    assert.same({ 1.5, -2.0 }, { a, c })
    assert.same({}, pb.decode(f[4][2]))
  end)

  it("names the byte where malformed input goes wrong", function()
    local b = pb.message():string(1, "abcdef"):bytes()
    H.err(function() pb.decode(b:sub(1, 4)) end, "field 1 at byte 0 has length 6, past the end")
    H.err(function() pb.decode("\x08\xff") end, "truncated varint at byte 2")
    H.err(function() pb.decode("\x0b") end, "unsupported wire type 3 for field 1")
    H.err(function() pb.decode("\x09\x01\x02") end, "truncated fixed field 1 at byte 0")
    H.err(function() pb.message():varint(1, 0.5) end, "field 1: 0.5 is not an integer")
  end)
end)
