-- moonflow/onnx.lua — `mf.onnx.export`: models as ONNX files (ir_version 8, opset 13 by default;
-- byte layout in ../shared/FORMATS.md "ONNX (export)") that onnxruntime and the onnx tools read.
--
--   mf.onnx.export(model, "mlp.onnx", { inputs = { { -1, 784 } } })
--     an nn module (nn.Sequential, nested too, of the layers in onnx/modules.lua), exported as it
--     computes in evaluation mode; one shape per input, -1 for the dynamic dimension "N".
--   mf.onnx.export(sess, "softmax.onnx", { inputs = { x }, outputs = { y } })
--     the part of sess's graph that computes the outputs from the inputs (symbolic tensors or
--     their names, "x:0"); variables take their values from the session. A graph without
--     variables can be given instead of a session: a frozen one (the GraphDef from
--     mf.graph_util.convert_variables_to_constants, or mf.load_graph's graph).
-- Options: opset (13..17, default 13), name (the graph's name), dtype (of a module's input;
-- default the model's parameters'). The file is written atomically (a temporary file renamed).
local mf = require "moonflow"
local util = require "moonflow.util"
local builder = require "moonflow.onnx.builder"

local onnx = {}

local fail, call = util.errors(debug.getinfo(1, "S").source)

local function is_graph(v) return getmetatable(v) == require("moonflow.graph").Graph end
local function is_graph_def(v) return getmetatable(v) == require("moonflow.graph.graphdef").GraphDef end
local function is_session(v)
  return type(v) == "table" and getmetatable(v) ~= nil and getmetatable(v).__name == "moonflow.Session"
end

-- {-1, 784} -> the list, or an error naming what is wrong with inputs[i]
local function check_shape(s, i)
  if type(s) ~= "table" or mf.is_tensor(s) or #s == 0 then
    fail("onnx.export: inputs[%d] must be a shape such as {-1, 784}, got %s", i,
      mf.is_tensor(s) and "a tensor" or type(s) == "table" and "an empty table" or tostring(s))
  end
  for d, n in ipairs(s) do
    if math.type(n) ~= "integer" or n == 0 or n < -1 then
      fail("onnx.export: inputs[%d][%d] is %s; sizes are integers >= 1, or -1 for the dynamic " ..
        "dimension N", i, d, tostring(n))
    end
    if n == -1 and d ~= 1 then
      fail("onnx.export: inputs[%d][%d] is -1; only the first (batch) dimension can be dynamic", i, d)
    end
  end
  return { table.unpack(s) }
end

-- a list of symbolic tensors of graph g (or names in it) -> the tensors
local function check_syms(g, list, what)
  local G = require "moonflow.graph"
  if type(list) ~= "table" or mf.is_tensor(list) or #list == 0 then
    fail("onnx.export: %s must be a non-empty list of symbolic tensors of the graph (or their " ..
      "names), e.g. {%s = {%s}}", what, what, what == "inputs" and "x" or "y")
  end
  local out = {}
  for i, t in ipairs(list) do
    if type(t) == "string" then
      local ok, r = pcall(g._by_any_name, g, t, 1)
      if not ok or not G.is_sym(r) then fail("onnx.export: %s[%d]: no tensor '%s' in the graph", what, i, t) end
      t = r
    end
    if not G.is_sym(t) then
      fail("onnx.export: %s[%d] must be a symbolic tensor of the graph, got %s", what, i,
        mf.is_tensor(t) and "an eager tensor" or type(t))
    end
    if t.graph ~= g then fail("onnx.export: %s[%d] (%s) belongs to another graph", what, i, t.name) end
    out[i] = t
  end
  return out
end

-- onnx.model_bytes(model_or_graph, opts) -> the serialized ModelProto (what export writes)
function onnx.model_bytes(model, opts)
  if type(opts) ~= "table" then
    fail("onnx.export: options {inputs = ...} are needed, got %s", tostring(opts))
  end
  local opset = opts.opset or 13
  if math.type(opset) ~= "integer" or opset < 13 or opset > 17 then
    fail("onnx.export: opset must be an integer from 13 to 17, got %s", tostring(opset))
  end
  local b = builder.new()
  if mf.nn.is_module(model) then
    if type(opts.inputs) ~= "table" or #opts.inputs ~= 1 then
      fail("onnx.export: a module takes one input: inputs = {{-1, 784}} (one shape per input), got %s",
        type(opts.inputs) == "table" and #opts.inputs .. " shapes" or tostring(opts.inputs))
    end
    local shape = check_shape(opts.inputs[1], 1)
    local p = model:parameters()[1]
    local dtype = opts.dtype or (p and p:dtype()) or "float32"
    call(require("moonflow.onnx.modules").export, b, model, shape, dtype, p and p:device())
  elseif is_graph_def(model) then -- a frozen graph: exported from a graph built from it
    local g = mf.Graph()
    call(function() g:as_default(function() mf.import_graph_def(model, { name = "" }) end) end)
    return onnx.model_bytes(g, opts)
  elseif is_session(model) or is_graph(model) then
    local sess = is_session(model) and model or nil
    if sess and sess._closed then fail("onnx.export: the session is closed") end
    local g = sess and sess.graph or model
    local inputs = check_syms(g, opts.inputs, "inputs")
    local outputs = check_syms(g, opts.outputs, "outputs")
    call(require("moonflow.onnx.graph").export, b, sess, inputs, outputs)
  else
    fail("onnx.export: expected an nn module, a session, a graph or a GraphDef, got %s", type(model))
  end
  return b:model_bytes(opset, opts.name, mf.version)
end

-- onnx.export(model_or_graph, path, opts): see the top of the file
function onnx.export(model, path, opts)
  if type(path) ~= "string" or path == "" then
    fail("onnx.export: the path must be a file name, got %s", tostring(path))
  end
  local bytes = onnx.model_bytes(model, opts)
  call(require("moonflow.graph.graphdef").write_atomic, path, bytes, "onnx.export") -- temp + rename
  return path
end

return onnx
