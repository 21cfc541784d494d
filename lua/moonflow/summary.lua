-- moonflow/summary.lua — mf.summary: TensorBoard logging. A FileWriter appends event files that
-- TensorBoard reads (`tensorboard --logdir runs`); the bytes are made in C (core/io/events.c,
-- bindings/summary.c).
--
--   local w <close> = mf.summary.FileWriter("runs/mnist")
--   w:add_scalar("loss", loss, step)          -- a number or a one-element tensor
--   w:add_histogram("fc1/weight", t, step)    -- a tensor or a table of numbers
--   w:add_image("input", img, step)           -- HW, HWC or CHW; uint8 0..255 or float 0..1
--   w:add_text("notes", "lr = 0.1", step)
--   w:flush(); w:close()                      -- also done by <close> and by garbage collection
--
-- Eager summaries: mf.summary.scalar/histogram/image/text(tag, value) return a serialized Summary
-- (a Lua string); mf.summary.merge{s1, s2, ...} joins them; w:add_summary(s, step) writes one.
-- A 3-D image is CHW when its first size is 1, 3 or 4 and its last is none of 1, 3, 4, else HWC;
-- mf.summary.image(name, t [, max_outputs = 3]) also takes a 4-D batch (N of those), as
-- TensorFlow's does: the first max_outputs images, tagged name/image/0, name/image/1, ... (or
-- name/image when max_outputs is 1). w:add_image writes one image (HW, HWC or CHW).
--
-- Summaries in graphs (TensorFlow 1): given a symbolic tensor, scalar/histogram/image/text build a
-- node whose run result is the serialized Summary (a Lua string), named and tagged `name` in the
-- current name scope (made unique: "loss", "loss_1"), placed on the CPU, and added to the graph
-- collections listed (default { mf.GraphKeys.SUMMARIES }, that is "summaries"):
--   mf.summary.scalar("loss", loss); mf.summary.histogram("W", W)
--   local merged = mf.summary.merge_all()        -- nil when the graph has no summaries
--   w:add_summary(sess:run(merged, feed), step)  -- step: a number or a one-element tensor
-- merge{...} with a symbolic entry is a MergeSummary node too (added to no collection).

local core = require "moonflow.core"
local G = require "moonflow.graph"
local C = core._summary

local summary = {}

-- errors are raised at the first caller outside this file (the user's line)
local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

local function check_tag(fname, tag)
  if type(tag) ~= "string" then fail("%s: tag must be a string, got %s", fname, type(tag)) end
end

local function check_step(fname, step)
  if step == nil then return 0 end
  if core.is_tensor(step) and step:numel() == 1 then step = step:item() end -- sess:run(global_step)
  if math.type(step) == "float" and step == math.floor(step) then step = math.tointeger(step) end
  if math.type(step) ~= "integer" then
    fail("%s: step must be an integer, got %s", fname, tostring(step))
  end
  return step
end

local function number_of(fname, v)
  if core.is_tensor(v) then
    if v:numel() ~= 1 then fail("%s: value must have one element, got %d", fname, v:numel()) end
    v = v:item()
  end
  if type(v) == "boolean" then v = v and 1 or 0 end
  if type(v) ~= "number" then fail("%s: value must be a number, got %s", fname, type(v)) end
  return v
end

-- ---- summaries in graphs ----------------------------------------------------------------------

local is_sym = G.is_sym
summary.SUMMARIES = "summaries" -- the default collection (tf.GraphKeys.SUMMARIES)

local function check_collections(fname, collections)
  if collections == nil then return end
  if type(collections) ~= "table" then
    fail("%s: collections must be a list of collection names, got %s", fname, type(collections))
  end
  for i, k in ipairs(collections) do
    if type(k) ~= "string" then fail("%s: collection %d must be a name (string)", fname, i) end
  end
end

-- A summary node of op_type on the symbolic tensor t: its value is make(tag, value of t, extra),
-- run on the CPU, with errors raised as plain messages (the session and the shape inference add
-- the node's context). The call is recorded as "summary.<fname>"(name, t, extra) (G.builders below),
-- so that a GraphDef import builds it again.
local function graph_summary(fname, op_type, name, t, collections, make, extra)
  check_collections(fname, collections)
  local cell = {}
  local function compute(_, v, x)
    if core.is_tensor(v) and v:device() ~= "cpu" then v = v:cpu() end
    local ok, r = pcall(make, cell.tag or name, v, x)
    if not ok then error((tostring(r):gsub("^[^:\n]*:%d+: ", "")), 0) end
    return r
  end
  local out = call(G.apply, op_type, compute, { type = op_type, node_name = name, dtype = "string",
    id = "summary." .. fname }, name, t, extra)
  local node = out._node
  cell.tag = node.name -- TensorFlow's tag: the node's scoped, unique name
  node.device = "/cpu:0"
  for _, key in ipairs(collections or { summary.SUMMARIES }) do
    node.graph:add_to_collection(key, out)
  end
  return out
end

-- ---- summaries (serialized Summary messages) ---------------------------------------------------

local function scalar_bytes(tag, v) return C.scalar(tag, number_of("scalar", v)) end

local function histogram_bytes(tag, t)
  if not core.is_tensor(t) and type(t) ~= "table" and type(t) ~= "number" then
    fail("histogram: values must be a tensor or a table of numbers, got %s", type(t))
  end
  return call(C.histogram, tag, t)
end

-- One image (HW, HWC, CHW) tagged tag, or the first max_outputs of a batch (N x one of those).
local function image_bytes(tag, t, max_outputs)
  if not core.is_tensor(t) then fail("image: expected a tensor, got %s", type(t)) end
  if t:dim() ~= 4 then return call(C.image, tag, t) end
  local n = math.min(t:size(1), max_outputs)
  local parts = {}
  for i = 1, n do
    local sub = max_outputs == 1 and tag .. "/image" or ("%s/image/%d"):format(tag, i - 1)
    parts[i] = call(C.image, sub, t:select(1, i))
  end
  return table.concat(parts)
end

local function text_bytes(tag, s)
  if type(s) ~= "string" and type(s) ~= "number" then
    fail("text: expected a string, got %s", type(s))
  end
  return C.text(tag, tostring(s))
end

-- The summary function fname(name, value [, collections]): the Summary bytes make(name, value),
-- or, for a symbolic value, a graph node of op_type that makes them when run.
local function summary_fn(fname, op_type, make)
  return function(tag, v, collections)
    check_tag(fname, tag)
    if is_sym(v) then return graph_summary(fname, op_type, tag, v, collections, make) end
    return make(tag, v)
  end
end

-- scalar(name, v [, collections]): v a number or a one-element tensor.
summary.scalar = summary_fn("scalar", "ScalarSummary", scalar_bytes)

-- histogram(name, values [, collections]): a tensor or a table of numbers.
summary.histogram = summary_fn("histogram", "HistogramSummary", histogram_bytes)

-- image(name, t [, max_outputs = 3 [, collections]]): see the top of this file.
function summary.image(tag, t, max_outputs, collections)
  check_tag("image", tag)
  if max_outputs == nil then max_outputs = 3 end
  if math.type(max_outputs) ~= "integer" or max_outputs < 1 then
    fail("image: max_outputs must be an integer >= 1, got %s", tostring(max_outputs))
  end
  if is_sym(t) then
    return graph_summary("image", "ImageSummary", tag, t, collections, image_bytes, max_outputs)
  end
  return image_bytes(tag, t, max_outputs)
end

-- text(name, s [, collections]): a string (a scalar string tensor in graphs).
summary.text = summary_fn("text", "TensorSummaryV2", text_bytes)

-- merge{s1, s2, ...}: one Summary with every value (a Summary is a run of values). With a symbolic
-- entry, a MergeSummary node (named name, default "Merge/MergeSummary") added to collections.
function summary.merge(list, collections, name)
  if type(list) ~= "table" then fail("merge: expected a list of summaries, got %s", type(list)) end
  local symbolic = false
  for i, s in ipairs(list) do
    if is_sym(s) then
      if s._dtype ~= nil and s._dtype ~= "string" then
        fail("merge: entry %d (%s) is a %s tensor, not a summary", i, s.name, s._dtype)
      end
      symbolic = true
    elseif type(s) ~= "string" then
      fail("merge: entry %d is a %s, not a summary", i, type(s))
    end
  end
  if not symbolic then return table.concat(list) end
  check_collections("merge", collections)
  if name ~= nil and type(name) ~= "string" then fail("merge: name must be a string") end
  local out = call(G.apply, "MergeSummary", function(vals)
    for i, v in ipairs(vals) do
      if type(v) ~= "string" then
        error(("MergeSummary: input %d is not a summary"):format(i), 0)
      end
    end
    return table.concat(vals)
  end, { type = "MergeSummary", node_name = (name or "Merge") .. "/MergeSummary", dtype = "string",
    id = "summary.merge" }, { table.unpack(list) })
  out._node.device = "/cpu:0"
  for _, key in ipairs(collections or {}) do out.graph:add_to_collection(key, out) end
  return out
end

-- merge_all([key = "summaries" [, scope]]): a MergeSummary node of the default graph's summaries
-- in collection key (those whose name matches the Lua pattern scope at its start, when given), or
-- nil when there are none (as TensorFlow returns None).
function summary.merge_all(key, scope, name)
  key = key or summary.SUMMARIES
  if type(key) ~= "string" then fail("merge_all: key must be a collection name (string)") end
  if scope ~= nil and type(scope) ~= "string" then fail("merge_all: scope must be a string") end
  local list = {}
  for _, s in ipairs(G.get_default_graph():get_collection(key)) do
    if scope == nil or (is_sym(s) and s._node.name:find(scope) == 1) then list[#list + 1] = s end
  end
  if #list == 0 then return nil end
  return summary.merge(list, nil, name)
end

-- The builders a GraphDef import calls again (graph/graphdef.lua), by the ids recorded above.
if G.builders then
  G.builders["summary.scalar"] = function(name, t) return summary.scalar(name, t) end
  G.builders["summary.histogram"] = function(name, t) return summary.histogram(name, t) end
  G.builders["summary.image"] = function(name, t, n) return summary.image(name, t, n) end
  G.builders["summary.text"] = function(name, t) return summary.text(name, t) end
  G.builders["summary.merge"] = function(list) return summary.merge(list) end
end

-- ---- FileWriter --------------------------------------------------------------------------------

local FileWriter = {}
FileWriter.__index = FileWriter
FileWriter.__name = "moonflow.summary.FileWriter"

local function writer(self, fname)
  local w = rawget(self, "_w")
  if not w then fail("%s: the FileWriter is closed", fname) end
  return w
end

-- FileWriter(logdir [, graph]): a new event file in logdir (made when missing).
function summary.FileWriter(logdir, graph)
  if type(logdir) ~= "string" or logdir == "" then
    fail("FileWriter: logdir must be a non-empty string, got %s", tostring(logdir))
  end
  local w = call(C.open, logdir)
  local self = setmetatable({ _w = w, logdir = logdir }, FileWriter)
  if graph ~= nil then self:add_graph(graph) end
  return self
end

function FileWriter:get_logdir() return self.logdir end

-- The event file's path.
function FileWriter:path() return writer(self, "path"):path() end

-- add_summary(s, step [, wall_time]): s from mf.summary.scalar/... or merge.
function FileWriter:add_summary(s, step, wall_time)
  local w = writer(self, "add_summary")
  if is_sym(s) then
    fail("add_summary: %s is symbolic; run it first: w:add_summary(sess:run(summary), step)",
      s.name)
  end
  if type(s) ~= "string" then fail("add_summary: expected a serialized summary, got %s", type(s)) end
  call(w.add_summary, w, s, check_step("add_summary", step), wall_time)
end

function FileWriter:add_scalar(tag, v, step, wall_time)
  check_tag("add_scalar", tag)
  local w = writer(self, "add_scalar")
  call(w.add_summary, w, C.scalar(tag, number_of("add_scalar", v)),
    check_step("add_scalar", step), wall_time)
end

-- add_scalars(main_tag, {name = v, ...}, step): one scalar per entry, tagged main_tag/name.
function FileWriter:add_scalars(main_tag, values, step, wall_time)
  check_tag("add_scalars", main_tag)
  if type(values) ~= "table" then fail("add_scalars: expected a table of values") end
  local names = {}
  for k in pairs(values) do names[#names + 1] = tostring(k) end
  table.sort(names)
  local parts = {}
  for i, k in ipairs(names) do
    local v = values[k]
    if v == nil then v = values[tonumber(k)] end
    parts[i] = C.scalar(main_tag .. "/" .. k, number_of("add_scalars", v))
  end
  self:add_summary(table.concat(parts), step, wall_time)
end

function FileWriter:add_histogram(tag, t, step, wall_time)
  check_tag("add_histogram", tag)
  writer(self, "add_histogram")
  self:add_summary(summary.histogram(tag, t), step, wall_time)
end

function FileWriter:add_image(tag, t, step, wall_time)
  check_tag("add_image", tag)
  writer(self, "add_image")
  if not core.is_tensor(t) then fail("add_image: expected a tensor, got %s", type(t)) end
  self:add_summary(call(C.image, tag, t), step, wall_time)
end

function FileWriter:add_text(tag, s, step, wall_time)
  check_tag("add_text", tag)
  writer(self, "add_text")
  self:add_summary(summary.text(tag, s), step, wall_time)
end

-- add_graph(g): GraphDef bytes (a string), a GraphDef object (:SerializeToString()), or an
-- object with :as_graph_def() or :to_graph_def() returning either (an mf.Graph).
function FileWriter:add_graph(g, wall_time)
  local w = writer(self, "add_graph")
  local bytes = g
  if type(g) == "table" or type(g) == "userdata" then
    local f = g.SerializeToString and function(x) return x end or g.as_graph_def or g.to_graph_def
    if type(f) ~= "function" then fail("add_graph: the graph has no as_graph_def method") end
    bytes = f(g)
    if type(bytes) == "table" and type(bytes.SerializeToString) == "function" then
      bytes = bytes:SerializeToString()
    end
  end
  if type(bytes) ~= "string" then fail("add_graph: expected GraphDef bytes, got %s", type(bytes)) end
  call(w.add_graph, w, bytes, wall_time)
end

function FileWriter:flush()
  local w = rawget(self, "_w")
  if w then call(w.flush, w) end
end

-- close(): flushes and closes; closing again does nothing.
function FileWriter:close()
  local w = rawget(self, "_w")
  if w then
    self._w = nil
    call(w.close, w)
  end
end

FileWriter.__close = function(self) self:close() end
FileWriter.__gc = function(self) -- the userdata's own __gc closes too; this makes it prompt
  local w = rawget(self, "_w")
  if w then pcall(w.close, w) end
end
FileWriter.__tostring = function(self)
  local w = rawget(self, "_w")
  return "FileWriter(" .. (w and w:path() or (self.logdir .. ", closed")) .. ")"
end

summary.FileWriter_class = FileWriter

return summary
