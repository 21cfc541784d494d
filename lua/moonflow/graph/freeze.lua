-- moonflow/graph/freeze.lua — mf.graph_util: frozen graphs, TensorFlow 1's way of shipping a
-- trained model for inference ("freeze" for mobile):
--   local frozen = mf.graph_util.convert_variables_to_constants(sess, sess.graph, {"inference/softmax"})
--   mf.graph_util.write_graph(frozen, "models", "frozen.pb", false)   -- or frozen:save(path)
--   local g = mf.load_graph("models/frozen.pb")
--   mf.Session{graph = g}:run("inference/softmax:0", {["input:0"] = x})
-- A frozen graph holds only the nodes the outputs need, each Variable replaced by a Const with its
-- value in the session; it is one binary GraphDef file (graph/graphdef.lua).
local G = require "moonflow.graph"
local GD = require "moonflow.graph.graphdef"
local TF_OP = require "moonflow.graph.tf_ops"

local M = {}

local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

-- "name", "name:0" or "^name" -> "name"
local function node_name(s) return (s:gsub("^%^", ""):gsub(":%d+$", "")) end

local function names_list(fname, names)
  if type(names) == "string" then names = { names } end
  if type(names) ~= "table" or #names == 0 then
    fail("%s: output names must be a non-empty list of node names", fname)
  end
  local out = {}
  for i, n in ipairs(names) do
    if G.is_sym(n) or getmetatable(n) == G.Op then n = n.name end
    if type(n) ~= "string" then fail("%s: output %d is a %s, not a node name", fname, i, type(n)) end
    out[i] = node_name(n)
  end
  return out
end

local function sub_graph(fname, gd, dest)
  local by_name = {}
  for _, nd in ipairs(gd.node) do by_name[nd.name] = nd end
  local keep = {}
  local function visit(name, from)
    if keep[name] then return end
    local nd = by_name[name]
    if nd == nil then
      if from then fail("%s: node '%s' has input '%s', which is not in the graph", fname, from, name) end
      fail("%s: output '%s' is not a node of the graph", fname, name)
    end
    keep[name] = true
    for _, s in ipairs(nd.input) do visit(node_name(s), name) end
  end
  for _, n in ipairs(dest) do visit(n) end
  local nodes = {}
  for _, nd in ipairs(gd.node) do
    if keep[nd.name] then nodes[#nodes + 1] = nd end
  end
  return nodes
end

local function graph_def_of(fname, v)
  local ok, gd = pcall(GD.as_graph_def, v, fname)
  if not ok then fail("%s", tostring(gd)) end
  return gd
end

-- extract_sub_graph(graph_def, dest_nodes) -> GraphDef of the nodes dest_nodes need
function M.extract_sub_graph(graph_def, dest_nodes)
  local gd = graph_def_of("extract_sub_graph", graph_def)
  return GD.new(sub_graph("extract_sub_graph", gd, names_list("extract_sub_graph", dest_nodes)),
    gd.versions)
end

local VARIABLE = { VariableV2 = true, Variable = true }

-- convert_variables_to_constants(sess, graph_def_or_graph, output_names) -> GraphDef: the nodes
-- the outputs need, each variable a Const holding its value in sess. Nodes that a frozen graph
-- cannot hold (optimizer steps, assignments: ops with no recorded call that are not TensorFlow ops
-- moonflow knows) are an error naming them.
function M.convert_variables_to_constants(sess, graph_def, output_names)
  local fname = "convert_variables_to_constants"
  if type(sess) ~= "table" or type(sess.run) ~= "function" or sess.graph == nil then
    fail("%s: the first argument must be a Session", fname)
  end
  local gd = graph_def_of(fname, graph_def)
  local nodes = sub_graph(fname, gd, names_list(fname, output_names))
  local out = {}
  for i, nd in ipairs(nodes) do
    if VARIABLE[nd.op] then
      local node = sess.graph._by_name[nd.name]
      if node == nil or node.kind ~= "Variable" then
        fail("%s: variable '%s' is not a variable of the session's graph", fname, nd.name)
      end
      local value = call(sess.run, sess, node.outputs[1])
      local dtype = node.outputs[1]._dtype
      out[i] = { name = nd.name, op = "Const", input = {}, device = nd.device,
        attr = { dtype = { type = dtype }, value = { tensor = call(GD.tensor_bytes, value) },
          _output_shapes = nd.attr._output_shapes } }
    else
      local importable = nd.op == "Placeholder" or nd.op == "Const" or nd.attr._mf_call ~= nil
        or (pcall(TF_OP, nd) and TF_OP(nd) ~= nil) -- another tool's op that moonflow knows
      if not importable then
        fail("%s: the outputs need node '%s' (%s), which a frozen graph cannot hold", fname,
          nd.name, nd.op)
      end
      out[i] = nd
    end
  end
  return GD.new(out, gd.versions)
end

-- write_graph(graph_or_graph_def, logdir, name [, as_text = true]) -> the file's path: the binary
-- GraphDef (as_text false, what load_graph reads) or its text format, written atomically; logdir
-- is made when missing.
function M.write_graph(graph_def, logdir, name, as_text)
  local fname = "write_graph"
  local gd = graph_def_of(fname, graph_def)
  if type(logdir) ~= "string" or logdir == "" then fail("%s: logdir must be a non-empty string", fname) end
  if type(name) ~= "string" or name == "" then fail("%s: name must be a non-empty string", fname) end
  if as_text == nil then as_text = true end
  local probe = io.open(logdir, "rb")
  if probe then probe:close() else os.execute("mkdir -p '" .. logdir:gsub("'", "'\\''") .. "'") end
  local path = logdir:gsub("/+$", "") .. "/" .. name
  return call(GD.write_atomic, path, as_text and gd:text() or gd:SerializeToString(), fname)
end

-- read_graph_def(path) -> GraphDef of a binary .pb file
M.read_graph_def = GD.read_graph_def
M.import_graph_def = GD.import_graph_def

return M
