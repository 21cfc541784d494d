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
-- A 3-D image is CHW when its first size is 1, 3 or 4 and its last is none of 1, 3, 4, else HWC.

local core = require "moonflow.core"
local C = core._summary

local summary = {}

-- errors are raised at the first caller outside this file (the user's line)
local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

local function check_tag(fname, tag)
  if type(tag) ~= "string" then fail("%s: tag must be a string, got %s", fname, type(tag)) end
end

local function check_step(fname, step)
  if step == nil then return 0 end
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

-- ---- eager summaries (serialized Summary messages) -----------------------------------------

function summary.scalar(tag, v)
  check_tag("scalar", tag)
  return C.scalar(tag, number_of("scalar", v))
end

function summary.histogram(tag, t)
  check_tag("histogram", tag)
  if not core.is_tensor(t) and type(t) ~= "table" and type(t) ~= "number" then
    fail("histogram: values must be a tensor or a table of numbers, got %s", type(t))
  end
  return call(C.histogram, tag, t)
end

function summary.image(tag, t)
  check_tag("image", tag)
  if not core.is_tensor(t) then fail("image: expected a tensor, got %s", type(t)) end
  return call(C.image, tag, t)
end

function summary.text(tag, s)
  check_tag("text", tag)
  if type(s) ~= "string" and type(s) ~= "number" then
    fail("text: expected a string, got %s", type(s))
  end
  return C.text(tag, tostring(s))
end

-- merge{s1, s2, ...}: one Summary with every value (a Summary is a run of values).
function summary.merge(list)
  if type(list) ~= "table" then fail("merge: expected a list of summaries, got %s", type(list)) end
  for i, s in ipairs(list) do
    if type(s) ~= "string" then fail("merge: entry %d is a %s, not a summary", i, type(s)) end
  end
  return table.concat(list)
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
  self:add_summary(summary.image(tag, t), step, wall_time)
end

function FileWriter:add_text(tag, s, step, wall_time)
  check_tag("add_text", tag)
  writer(self, "add_text")
  self:add_summary(summary.text(tag, s), step, wall_time)
end

-- add_graph(g): GraphDef bytes (a string), or an object with :as_graph_def() or :to_graph_def()
-- returning them (the graph API).
function FileWriter:add_graph(g, wall_time)
  local w = writer(self, "add_graph")
  local bytes = g
  if type(g) == "table" or type(g) == "userdata" then
    local f = g.as_graph_def or g.to_graph_def
    if type(f) ~= "function" then fail("add_graph: the graph has no as_graph_def method") end
    bytes = f(g)
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
