-- summary_spec.lua — mf.summary: TensorBoard event files. The two worked records of FORMATS.md;
-- a FileWriter's file parsed back in pure Lua (TFRecord framing, both CRC-32Cs computed here, the
-- Event and Summary protobufs decoded here); the same files read by TensorBoard's own
-- EventAccumulator through /usr/bin/python3 (pending when tensorboard is not importable); errors.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q, readfile = H.q, H.readfile

local function tmpdir() return H.tmpdir("mf_summary_spec") end

local ls = H.ls

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x ", c:byte()) end)):gsub(" $", "")
end

local function unhex(h) return (h:gsub("%s", ""):gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end

-- ---- an independent reader: CRC-32C, TFRecords, protobuf ---------------------------------------

local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do c = (c & 1) ~= 0 and ((c >> 1) ~ 0x82F63B78) or (c >> 1) end
  crc_table[i] = c
end

local function crc32c(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do c = (c >> 8) ~ crc_table[(c ~ s:byte(i)) & 0xFF] end
  return c ~ 0xFFFFFFFF
end

local function masked(c) return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF end

-- The payloads of a TFRecord file, checking both CRCs.
local function records(data)
  local out, pos = {}, 1
  while pos <= #data do
    assert(#data - pos + 1 >= 12, "truncated record header")
    local len, hcrc = string.unpack("<I8I4", data, pos)
    assert(masked(crc32c(data:sub(pos, pos + 7))) == hcrc, "length CRC mismatch")
    local body = data:sub(pos + 12, pos + 11 + len)
    assert(#body == len, "truncated record")
    local dcrc = string.unpack("<I4", data, pos + 12 + len)
    assert(masked(crc32c(body)) == dcrc, "data CRC mismatch")
    out[#out + 1] = body
    pos = pos + 16 + len
  end
  return out
end

-- Decodes a protobuf message into {[field] = {values...}}: varints as integers, fixed64/32 as raw
-- 8/4-byte strings, length-delimited as strings.
local function pb(s)
  local f, pos = {}, 1
  local function varint()
    local v, shift = 0, 0
    while true do
      local b = s:byte(pos)
      pos = pos + 1
      v = v | ((b & 0x7F) << shift)
      if b < 0x80 then return v end
      shift = shift + 7
    end
  end
  while pos <= #s do
    local key = varint()
    local field, wire = key >> 3, key & 7
    local v
    if wire == 0 then v = varint()
    elseif wire == 1 then v = s:sub(pos, pos + 7); pos = pos + 8
    elseif wire == 5 then v = s:sub(pos, pos + 3); pos = pos + 4
    elseif wire == 2 then
      local n = varint()
      v = s:sub(pos, pos + n - 1)
      pos = pos + n
    else error("wire type " .. wire) end
    f[field] = f[field] or {}
    table.insert(f[field], v)
  end
  return f
end

local function double(raw) return (string.unpack("<d", raw)) end
local function float(raw) return (string.unpack("<f", raw)) end

-- {wall_time=, step=, file_version=, values = {{tag=, simple_value=, histo=, image=, tensor=}}}
local function event(rec)
  local e = pb(rec)
  local ev = { wall_time = e[1] and double(e[1][1]), step = e[2] and e[2][1] or 0,
    file_version = e[3] and e[3][1], graph_def = e[4] and e[4][1], values = {} }
  if e[5] then
    for _, v in ipairs(pb(e[5][1])[1] or {}) do
      local fv = pb(v)
      ev.values[#ev.values + 1] = { tag = fv[1][1], simple_value = fv[2] and float(fv[2][1]),
        image = fv[4] and pb(fv[4][1]), histo = fv[5] and pb(fv[5][1]),
        tensor = fv[8] and pb(fv[8][1]), metadata = fv[9] and pb(fv[9][1]) }
    end
  end
  return ev
end

local function events_of(dir)
  local files = ls(dir)
  assert(#files == 1, "expected one event file in " .. dir .. ", found " .. #files)
  local evs = {}
  for _, r in ipairs(records(assert(readfile(dir .. "/" .. files[1])))) do evs[#evs + 1] = event(r) end
  return evs, files[1]
end

-- ---- TensorBoard's reader --------------------------------------------------------------------

local have_tb = H.can_import(H.TB_IMPORT)
local tb = H.tb -- (dir, code): TensorBoard's EventAccumulator on dir as `ea` runs code

local root = tmpdir()
teardown(function() os.execute("rm -rf " .. q(root)) end)

describe("event file bytes", function()
  it("reproduces FORMATS.md's first record (file_version)", function()
    local ev = mf._summary.event(1700000000.0, 0, "file_version", "brain.Event:2")
    local rec = string.pack("<I8", #ev)
    rec = rec .. string.pack("<I4", masked(crc32c(rec))) .. ev .. string.pack("<I4", masked(crc32c(ev)))
    assert.are.equal("18 00 00 00 00 00 00 00 a3 7f 4b 22 09 00 00 00 40 fc 54 d9 41 1a 0d 62 72 " ..
      "61 69 6e 2e 45 76 65 6e 74 3a 32 ec ed 8f 9d", hex(rec))
    assert.are.same({ ev }, mf._summary.records(rec))
  end)

  it("reproduces FORMATS.md's second record (a scalar)", function()
    local want = unhex("1a 00 00 00 00 00 00 00  12 9b d8 2d  09 00 00 40 40 fc 54 d9 41 10 01 " ..
      "2a 0d 0a 0b 0a 04 6c 6f 73 73 15 00 00 00 3f  97 d6 74 04")
    local ev = mf._summary.event(1700000001.0, 1, "summary", mf.summary.scalar("loss", 0.5))
    assert.are.equal(hex(want:sub(13, -5)), hex(ev))
    assert.are.same({ ev }, records(want))
    assert.are.same({ ev }, mf._summary.records(want))
  end)

  it("checks CRCs and truncation when splitting records", function()
    local ev = mf._summary.event(1.0, 2, "summary", mf.summary.scalar("x", 1))
    local rec = string.pack("<I8", #ev)
    rec = rec .. string.pack("<I4", masked(crc32c(rec))) .. ev .. string.pack("<I4", masked(crc32c(ev)))
    H.err(function() mf._summary.records(rec:sub(1, -2)) end, "truncated")
    local bad = rec:sub(1, 14) .. string.char(rec:byte(15) ~ 1) .. rec:sub(16)
    H.err(function() mf._summary.records(bad) end, "data CRC mismatch")
    assert.are.equal(0xE3069283, mf._summary.crc32c("123456789"))
    assert.are.equal(crc32c("hello world"), mf._summary.crc32c("hello world"))
    assert.are.equal(masked(crc32c("abc")), mf._summary.masked_crc32c("abc"))
  end)
end)

describe("FileWriter", function()
  it("writes an event file in a new nested logdir, read back here", function()
    local dir = root .. "/runs/a/b"
    local w = mf.summary.FileWriter(dir)
    local host = io.popen("hostname"):read("l")
    for step = 1, 5 do w:add_scalar("loss", 1 / step, step) end
    w:add_scalar("acc", mf.tensor(0.75), 5)
    w:add_histogram("weights", mf.tensor({ -1, 0, 0.5, 0.5, 2 }), 3)
    w:add_image("digit", mf.rand({ 3, 6, 5 }), 4)
    w:add_text("notes", "lr = **0.1**", 7)
    w:close()
    w:close() -- a second close does nothing
    local evs, name = events_of(dir)
    assert.truthy(name:match("^events%.out%.tfevents%.%d%d%d%d%d%d%d%d%d%d%." ..
      host:gsub("%p", "%%%0") .. "$"), name)
    assert.are.equal("brain.Event:2", evs[1].file_version)
    assert.truthy(math.abs(evs[1].wall_time - os.time()) < 60)
    assert.are.equal(10, #evs)
    for step = 1, 5 do
      local e = evs[step + 1]
      assert.are.equal(step, e.step)
      assert.are.equal("loss", e.values[1].tag)
      assert.truthy(math.abs(e.values[1].simple_value - 1 / step) < 1e-7)
      assert.truthy(e.wall_time >= evs[1].wall_time)
    end
    assert.are.equal(0.75, evs[7].values[1].simple_value)
    local h = evs[8].values[1].histo
    assert.are.equal(3, evs[8].step)
    assert.are.same({ -1, 2, 5, 2, 5.5 }, { double(h[1][1]), double(h[2][1]), double(h[3][1]),
      double(h[4][1]), double(h[5][1]) })
    local lim, cnt = h[6][1], h[7][1]
    assert.are.equal(#lim, #cnt)
    local total = 0
    for i = 1, #cnt, 8 do total = total + double(cnt:sub(i, i + 7)) end
    assert.are.equal(5, total)
    local im = evs[9].values[1].image
    assert.are.same({ 6, 5, 3 }, { im[1][1], im[2][1], im[3][1] })
    assert.are.equal("\137PNG", im[4][1]:sub(1, 4))
    local back = mf.image.decode(im[4][1])
    assert.are.same({ 6, 5, 3 }, back:shape())
    local txt = evs[10].values[1]
    assert.are.equal("notes", txt.tag)
    assert.are.equal("lr = **0.1**", txt.tensor[8][1])
    assert.are.equal(7, txt.tensor[1][1]) -- DT_STRING
    assert.are.equal("text", pb(txt.metadata[1][1])[1][1])
  end)

  it("is read by TensorBoard's EventAccumulator", function()
    if not have_tb then
      return pending("tensorboard is not importable by /usr/bin/python3 (scripts/setup.sh installs it)")
    end
    local dir = root .. "/tb"
    do
      local w <close> = mf.summary.FileWriter(dir)
      for step = 0, 9 do w:add_scalar("train/loss", 2 ^ -step, step * 10) end
      w:add_histogram("fc/weight", mf.arange(0, 100):to("float32"), 5)
      w:add_image("gray", mf.full({ 4, 7 }, 0.5), 1)
      w:add_image("rgb", mf.ones({ 8, 9, 3 }, { dtype = "uint8" }), 2)
      w:add_text("notes", "hello", 3)
      w:add_summary(mf.summary.merge { mf.summary.scalar("a", 1), mf.summary.scalar("b", 2) }, 11)
    end -- <close> flushes and closes
    local text = tb(dir, [[
print('scalars', sorted(ea.Tags()['scalars']))
for e in ea.Scalars('train/loss'): print('loss', e.step, repr(e.value))
print('ab', ea.Scalars('a')[0].step, ea.Scalars('a')[0].value, ea.Scalars('b')[0].value)
h = ea.Histograms('fc/weight')[0].histogram_value
print('histo', ea.Histograms('fc/weight')[0].step, h.min, h.max, h.num, h.sum, h.sum_squares, sum(h.bucket))
for tag in ('gray', 'rgb'):
    i = ea.Images(tag)[0]
    print('image', tag, i.step, i.height, i.width, i.encoded_image_string[:4] == b'\x89PNG')
t = ea.Tensors('notes')[0]
print('text', t.step, t.tensor_proto.string_val[0].decode(), ea.SummaryMetadata('notes').plugin_data.plugin_name)
]])
    assert.truthy(text:find("scalars ['a', 'b', 'train/loss']", 1, true), text)
    for step = 0, 9 do
      local line = text:match("\nloss " .. step * 10 .. " ([^\n]+)")
      assert.truthy(line, text)
      assert.are.equal(2 ^ -step, tonumber(line))
    end
    assert.truthy(text:find("ab 11 1.0 2.0", 1, true), text)
    assert.truthy(text:find("histo 5 0.0 99.0 100.0 4950.0 328350.0 100.0", 1, true), text)
    assert.truthy(text:find("image gray 1 4 7 True", 1, true), text)
    assert.truthy(text:find("image rgb 2 8 9 True", 1, true), text)
    assert.truthy(text:find("text 3 hello text", 1, true), text)
  end)

  it("adds graph bytes and a graph object's as_graph_def", function()
    local dir = root .. "/graph"
    local g = { as_graph_def = function() return "\10\3\10\1x" end }
    local w = mf.summary.FileWriter(dir, g)
    w:add_graph("\10\3\10\1y")
    w:close()
    local evs = events_of(dir)
    assert.are.equal("\10\3\10\1x", evs[2].graph_def)
    assert.are.equal("\10\3\10\1y", evs[3].graph_def)
  end)

  it("flushes whole records: a reader sees complete records after flush", function()
    local dir = root .. "/flush"
    local w = mf.summary.FileWriter(dir)
    w:add_scalar("x", 1, 1)
    w:flush()
    assert.are.equal(2, #events_of(dir))
    w:add_scalar("x", 2, 2)
    w:flush()
    assert.are.equal(3, #events_of(dir))
    w:close()
  end)

  it("raises clear errors", function()
    local file = root .. "/plainfile"
    io.open(file, "w"):close()
    H.err(function() mf.summary.FileWriter(file .. "/sub") end, file)
    H.err(function() mf.summary.FileWriter("") end, "logdir")
    local w = mf.summary.FileWriter(root .. "/err")
    H.err(function() w:add_scalar(1, 1, 1) end, "tag must be a string")
    H.err(function() w:add_scalar("x", "a", 1) end, "value must be a number")
    H.err(function() w:add_scalar("x", 1, 1.5) end, "step must be an integer")
    H.err(function() w:add_image("i", mf.zeros({ 2, 2, 2, 2 })) end, "HW, HWC or CHW")
    H.err(function() w:add_image("i", mf.zeros({ 2, 2 }, { dtype = "int32" })) end, "dtype")
    H.err(function() w:add_histogram("h", "abc") end, "tensor or a table")
    w:close()
    H.err(function() w:add_scalar("x", 1, 1) end, "closed")
  end)
end)
