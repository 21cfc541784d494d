-- moonflow/graph/graphdef.lua — TensorFlow GraphDefs (tensorflow/core/framework/graph.proto):
-- g:as_graph_def() writes a graph as one (TensorBoard's graph tab, frozen graphs), and
-- mf.import_graph_def / mf.load_graph read one back into a Graph that a Session runs.
--
-- A GraphDef object mirrors the proto, as TensorFlow's Python object does:
--   gd.node = { {name = "inference/MatMul", op = "MatMul", input = {"x", "inference/W:0"},
--                device = "", attr = { T = {type = "float32"}, ... }}, ... }
--   gd.versions = {producer = 134}; gd:SerializeToString() -> bytes; gd:save(path) (atomic)
-- An AttrValue is a table with one of: type (a dtype name), shape (a list of sizes, -1 unknown,
-- or {unknown_rank = true}), tensor (TensorProto bytes), s, i, f, b, list.
--
-- Op names are TensorFlow's (Placeholder, Const, VariableV2, MatMul, AddV2, Relu, Conv2D, ...);
-- a node built from an mf.* function also records the call in the attr "_mf_call" (the builder id
-- of G.builders and the arguments, tensors as TensorProtos, symbolic inputs as input indices), so
-- that importing calls the same constructor again: same op, same shapes, same results. A node
-- with no recorded call (another tool's, such as a TensorFlow frozen graph) is imported by its op
-- type when graph/tf_ops.lua knows it, and written back with its op and attrs; any other (an
-- optimizer step, an op moonflow lacks) is an error naming the node and its op. A recorded call
-- never reads or writes files and always has a symbolic input. The attr "_output_shapes" gives
-- TensorBoard the shapes to print on the edges.
--
-- Wire layouts (field numbers): GraphDef{1 node, 4 versions{1 producer, 2 min_consumer}};
-- NodeDef{1 name, 2 op, 3 input, 4 device, 5 attr map entry{1 key, 2 AttrValue}};
-- AttrValue{1 list, 2 s, 3 i, 4 f, 5 b, 6 type, 7 shape, 8 tensor}; ListValue{2 s, 3 i, 4 f, 5 b,
-- 6 type, 7 shape, 8 tensor}; tensors and shapes: graph/tensor_proto.lua; text: graphdef_text.lua.
local pb = require "moonflow.protobuf"
local core = require "moonflow.core"
local G = require "moonflow.graph"
local TP = require "moonflow.graph.tensor_proto"

local M = {}
local is_sym = G.is_sym
local DT, DT_NAME, dt_enum, shape_msg = TP.DT, TP.DT_NAME, TP.dt_enum, TP.shape_msg
local tensor_bytes, decode_tensor, read_shape, numbers = TP.tensor_bytes, TP.decode_tensor,
  TP.read_shape, TP.numbers
local bad, str, int, strs, decode = TP.bad, TP.str, TP.int, TP.strs, TP.decode
M.DT, M.tensor_bytes, M.decode_tensor = DT, tensor_bytes, decode_tensor

local function is_eager(v) return core.is_tensor(v) end

local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

-- ---- AttrValue --------------------------------------------------------------------------------

local function attr_msg(a)
  local m = pb.message()
  if a.list then
    local l, list = pb.message(), a.list
    for _, s in ipairs(list.s or {}) do l:string(2, s) end
    if list.i and #list.i > 0 then l:packed_varints(3, list.i) end
    if list.f and #list.f > 0 then l:packed_floats(4, list.f) end
    if list.type and #list.type > 0 then
      local e = {}
      for i, d in ipairs(list.type) do e[i] = dt_enum(d, "attr list") end
      l:packed_varints(6, e)
    end
    for _, s in ipairs(list.shape or {}) do l:message(7, shape_msg(s)) end
    for _, t in ipairs(list.tensor or {}) do l:string(8, t) end
    m:message(1, l)
  elseif a.s then m:string(2, a.s)
  elseif a.i then m:varint(3, a.i)
  elseif a.f then m:float(4, a.f)
  elseif a.b ~= nil then m:varint(5, a.b and 1 or 0)
  elseif a.type then m:varint(6, dt_enum(a.type, "attr"))
  elseif a.shape then m:message(7, shape_msg(a.shape))
  elseif a.tensor then m:string(8, a.tensor) end
  return m
end

local function read_attr(bytes)
  local f = decode(bytes, "AttrValue")
  if f[1] then
    local l = decode(str(f, 1, "attr list"), "attr list")
    local list = { s = strs(l, 2, "list s"), i = numbers(l[3], "varint"),
      f = numbers(l[4], "<f", 4), type = {}, shape = {}, tensor = strs(l, 8, "list tensor") }
    for i, e in ipairs(numbers(l[6], "varint")) do list.type[i] = DT_NAME[e] or e end
    for i, s in ipairs(strs(l, 7, "list shape")) do list.shape[i] = read_shape(s) end
    return { list = list }
  end
  if f[2] then return { s = str(f, 2, "attr s") } end
  if f[3] then return { i = int(f, 3, "attr i") } end
  if f[4] then
    local v = f[4][#f[4]]
    if math.type(v) ~= "integer" then bad("attr f is not a float") end
    return { f = pb.as_float(v) }
  end
  if f[5] then return { b = int(f, 5, "attr b") ~= 0 } end
  if f[6] then
    local e = int(f, 6, "attr type")
    return { type = DT_NAME[e] or e }
  end
  if f[7] then return { shape = read_shape(str(f, 7, "attr shape")) } end
  if f[8] then return { tensor = str(f, 8, "attr tensor") } end
  return {}
end

-- ---- recorded calls (the "_mf_call" attr) ---------------------------------------------------------
-- Call{1 id, 2 n, 3 repeated Value}; Value{1 nil, 2 integer, 3 double, 4 string, 5 bool,
-- 6 repeated Entry{1 key Value, 2 value Value}, 7 input index (0-based), 8 TensorProto}

local function value_msg(v, input_index)
  local m = pb.message()
  if v == nil then return m:varint(1, 1) end
  if is_sym(v) then return m:varint(7, input_index[v] - 1) end
  local t = type(v)
  if math.type(v) == "integer" then return m:varint(2, v) end
  if t == "number" then return m:double(3, v) end
  if t == "string" then return m:string(4, v) end
  if t == "boolean" then return m:varint(5, v and 1 or 0) end
  if is_eager(v) then return m:string(8, tensor_bytes(v)) end
  if t == "table" and getmetatable(v) == nil then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) ~= type(b) then return type(a) == "number" end
      return a < b
    end)
    for _, k in ipairs(keys) do
      if type(k) ~= "string" and math.type(k) ~= "integer" then error("a table key is a " .. type(k), 0) end
      m:message(6, pb.message():message(1, value_msg(k)):message(2, value_msg(v[k], input_index)))
    end
    return m
  end
  error("an argument is a " .. t, 0)
end

-- call_bytes(node) -> the "_mf_call" attr bytes, or nil when the call cannot be recorded
local function call_bytes(node)
  if node.call_id == nil or G.node_args == nil then return nil end
  local args = G.node_args(node)
  if args == nil then return nil end
  local index = {}
  for i, t in ipairs(node.inputs) do index[t] = index[t] or i end
  local m = pb.message():string(1, node.call_id):varint(2, args.n)
  for i = 1, args.n do
    local ok, v = pcall(value_msg, args[i], index)
    if not ok then return nil end
    m:message(3, v)
  end
  return m:bytes()
end

local function read_value(bytes, inputs, node_name)
  local f = decode(bytes, "_mf_call value")
  if f[1] then return nil end
  if f[2] then return int(f, 2, "call integer") end
  if f[3] then
    local v = f[3][#f[3]]
    if math.type(v) ~= "integer" then bad("call double") end
    return pb.as_double(v)
  end
  if f[4] then return str(f, 4, "call string") end
  if f[5] then return int(f, 5, "call bool") ~= 0 end
  if f[7] then
    local i = int(f, 7, "call input") + 1
    if inputs[i] == nil then
      bad(("node '%s' uses input %d, but it has %d inputs"):format(node_name, i, #inputs))
    end
    return inputs[i]
  end
  if f[8] then return decode_tensor(str(f, 8, "call tensor")) end
  local t = {}
  for _, e in ipairs(strs(f, 6, "call table")) do
    local ef = decode(e, "call table entry")
    local k = read_value(str(ef, 1, "call key") or "", inputs, node_name)
    if type(k) ~= "string" and math.type(k) ~= "integer" then bad("a call table key is not a name or index") end
    t[k] = read_value(str(ef, 2, "call value") or "", inputs, node_name)
  end
  return t
end

-- ---- Graph -> GraphDef --------------------------------------------------------------------------

-- moonflow op types whose TensorFlow name differs
local TF_OP = { add = "AddV2", sub = "Sub", mul = "Mul", truediv = "RealDiv", pow = "Pow",
  mod = "FloorMod", floordiv = "FloorDiv", transpose = "Transpose", concat = "ConcatV2",
  stack = "Pack", clip_by_value = "ClipByValue", zeros = "Fill", ones = "Fill",
  softmax_cross_entropy_with_logits = "SoftmaxCrossEntropyWithLogits", dropout = "Dropout",
  cross_entropy = "CrossEntropy" }
M.TF_OP = TF_OP

local GraphDef = { __name = "moonflow.GraphDef" }
GraphDef.__index = GraphDef
M.GraphDef = GraphDef

local function new_graph_def(nodes, versions)
  return setmetatable({ node = nodes or {}, versions = versions or { producer = 134 } }, GraphDef)
end
M.new = new_graph_def

function GraphDef:__tostring()
  return ("<moonflow.GraphDef: %d nodes>"):format(#self.node)
end

-- "name" for output 1, "name:k" for output k+1
local function input_name(t)
  return t._index == 1 and t._node.name or (t._node.name .. ":" .. (t._index - 1))
end

local function node_def(node)
  local attr = {}
  local kind, out = node.kind, node.outputs[1]
  local op = TF_OP[node.type] or node.type
  if kind == "Placeholder" then
    attr.dtype = { type = out._dtype }
    attr.shape = { shape = out._shape or { unknown_rank = true } }
  elseif kind == "Const" then
    attr.dtype = { type = out._dtype }
    attr.value = { tensor = tensor_bytes(node.value) }
    op = "Const"
  elseif kind == "Variable" then
    attr.dtype = { type = out._dtype }
    attr.shape = { shape = out._shape or { unknown_rank = true } }
    attr.container, attr.shared_name = { s = "" }, { s = "" }
  elseif node.tf_attrs then -- a TensorFlow op read from a file: its attrs as they were
    for k, v in pairs(node.tf_attrs) do
      if k ~= "_output_shapes" and k ~= "_mf_call" then attr[k] = v end
    end
  else
    local first = node.inputs[1]
    if first and DT[first._dtype] then attr.T = { type = first._dtype } end
    local c = call_bytes(node)
    if c then attr._mf_call = { s = c } end
  end
  if #node.outputs > 0 then
    local shapes = {}
    for i, o in ipairs(node.outputs) do shapes[i] = o._shape or { unknown_rank = true } end
    attr._output_shapes = { list = { shape = shapes } }
  end
  if attr.dtype and not DT[attr.dtype.type] then attr.dtype = nil end
  local input = {}
  for i, t in ipairs(node.tf_inputs or node.inputs) do input[i] = input_name(t) end
  for _, c in ipairs(node.control_inputs or {}) do input[#input + 1] = "^" .. c.name end
  return { name = node.name, op = op, input = input, device = node.device or "", attr = attr }
end

-- from_graph(g) -> GraphDef of every node of g, in creation order
function M.from_graph(g)
  local nodes = {}
  for i, node in ipairs(g._nodes) do
    local ok, nd = pcall(node_def, node)
    if not ok then error(("as_graph_def: node '%s' (%s): %s"):format(node.name, node.type, tostring(nd)), 0) end
    nodes[i] = nd
  end
  return new_graph_def(nodes)
end

-- ---- serializing --------------------------------------------------------------------------------

local function node_msg(nd)
  local m = pb.message():string(1, nd.name):string(2, nd.op)
  for _, s in ipairs(nd.input or {}) do m:string(3, s) end
  if nd.device and nd.device ~= "" then m:string(4, nd.device) end
  local keys = {}
  for k in pairs(nd.attr or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    m:message(5, pb.message():string(1, k):message(2, attr_msg(nd.attr[k])))
  end
  return m
end

function GraphDef:SerializeToString()
  local m = pb.message()
  for i, nd in ipairs(self.node) do
    if type(nd) ~= "table" or type(nd.name) ~= "string" or type(nd.op) ~= "string" then
      fail("SerializeToString: node %d needs a name and an op (strings)", i)
    end
    m:message(1, node_msg(nd))
  end
  local v = self.versions or {}
  local vm = pb.message()
  if v.producer then vm:varint(1, v.producer) end
  if v.min_consumer then vm:varint(2, v.min_consumer) end
  m:message(4, vm)
  return m:bytes()
end

-- ParseFromString(bytes) -> GraphDef (M.parse)
function M.parse(bytes)
  if type(bytes) ~= "string" then error("GraphDef bytes must be a string, got " .. type(bytes), 0) end
  local f = decode(bytes, "GraphDef")
  local nodes, seen = {}, {}
  for i, nb in ipairs(strs(f, 1, "node")) do
    local nf = decode(nb, "NodeDef")
    local nd = { name = str(nf, 1, "node name"), op = str(nf, 2, "node op"),
      input = strs(nf, 3, "node input"), device = str(nf, 4, "node device") or "", attr = {} }
    if not nd.name or nd.name == "" then bad(("node %d has no name"):format(i)) end
    if not nd.op or nd.op == "" then bad(("node '%s' has no op"):format(nd.name)) end
    if seen[nd.name] then bad(("two nodes are named '%s'"):format(nd.name)) end
    seen[nd.name] = true
    for _, e in ipairs(strs(nf, 5, "node attr")) do
      local ef = decode(e, "attr entry")
      local key = str(ef, 1, "attr key")
      if key == nil then bad(("node '%s' has an attr with no name"):format(nd.name)) end
      nd.attr[key] = read_attr(str(ef, 2, "attr value") or "")
    end
    nodes[i] = nd
  end
  for k in pairs(f) do
    if k ~= 1 and k ~= 2 and k ~= 3 and k ~= 4 then
      bad(("unexpected field %d (is this a GraphDef?)"):format(k))
    end
  end
  local versions = {}
  local vb = str(f, 4, "versions")
  if vb then
    local vf = decode(vb, "versions")
    versions.producer, versions.min_consumer = int(vf, 1, "producer"), int(vf, 2, "min_consumer")
  end
  return new_graph_def(nodes, versions)
end

-- writes bytes to path atomically: a temporary file beside it, then a rename
local function write_atomic(path, bytes, what)
  local tmp = ("%s.tmp%d"):format(path, math.random(1 << 30))
  local f, err = io.open(tmp, "wb")
  if not f then error(("%s: cannot write '%s': %s"):format(what, path, err), 0) end
  local ok, werr = f:write(bytes)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    error(("%s: cannot write '%s': %s"):format(what, path, tostring(werr or cerr)), 0)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error(("%s: cannot write '%s': %s"):format(what, path, tostring(rerr)), 0)
  end
  return path
end
M.write_atomic = write_atomic

-- gd:text() -> the protobuf text format (graph/graphdef_text.lua)
function GraphDef:text() return require("moonflow.graph.graphdef_text")(self) end

-- gd:save(path): the binary GraphDef in one file (written atomically)
function GraphDef:save(path)
  if type(path) ~= "string" or path == "" then fail("save: path must be a non-empty string") end
  return call(write_atomic, path, self:SerializeToString(), "save")
end

-- ---- GraphDef -> Graph ----------------------------------------------------------------------------

local function parse_input(s)
  if s:sub(1, 1) == "^" then return s:sub(2), nil, true end
  local name, idx = s:match("^(.-):(%d+)$")
  if name then return name, tonumber(idx) + 1, false end
  return s, 1, false
end

local function cannot(nd, why)
  error(("node '%s' has op '%s', which moonflow cannot import%s"):format(nd.name, nd.op,
    why and (": " .. why) or ""), 0)
end

-- nodes in an order where every input comes first; errors for missing inputs and cycles
local function topo_order(nodes)
  local by_name = {}
  for _, nd in ipairs(nodes) do by_name[nd.name] = nd end
  local order, state = {}, {}
  local function visit(nd)
    if state[nd] == 2 then return end
    if state[nd] == 1 then bad(("the graph has a cycle at node '%s'"):format(nd.name)) end
    state[nd] = 1
    for _, s in ipairs(nd.input) do
      local name = parse_input(s)
      local src = by_name[name]
      if src == nil then
        bad(("node '%s' has input '%s', which is not a node of the graph"):format(nd.name, s))
      end
      visit(src)
    end
    order[#order + 1] = nd
    state[nd] = 2
  end
  for _, nd in ipairs(nodes) do visit(nd) end
  return order
end

-- the known sizes of a Placeholder's or Variable's shape may not ask for more than
-- TP.MAX_ELEMENTS elements (shape inference and initial values allocate them)
local function check_size(nd, shape)
  local n = 1
  for _, d in ipairs(shape) do
    if d > 0 then n = n * d end
    if n > TP.MAX_ELEMENTS then cannot(nd, "its shape asks for more than 2^28 elements") end
  end
end

local function dtype_attr(nd, key)
  local a = nd.attr[key]
  if a == nil or a.type == nil then cannot(nd, "its '" .. key .. "' attr is missing") end
  if type(a.type) ~= "string" then cannot(nd, ("its dtype %s is not supported"):format(a.type)) end
  return a.type
end

-- builds one node in g (the default graph while this runs) named `name`; returns the node
local function build(g, nd, name, inputs)
  local mf = require "moonflow"
  local before = #g._nodes
  local op = nd.op
  local tf = false
  g._import_name = name
  local ok, err = pcall(function()
    if op == "Placeholder" or op == "PlaceholderV2" then
      local s = nd.attr.shape and nd.attr.shape.shape
      if s and s.unknown_rank then s = nil end
      if s then check_size(nd, s) end
      G.placeholder(dtype_attr(nd, "dtype"), s, name)
    elseif op == "Const" then
      local v = nd.attr.value and nd.attr.value.tensor
      if v == nil then cannot(nd, "it has no value") end
      g:constant(decode_tensor(v), name)
    elseif op == "VariableV2" or op == "Variable" then
      local dtype, s = dtype_attr(nd, "dtype"), nd.attr.shape and nd.attr.shape.shape
      if s == nil or s.unknown_rank then cannot(nd, "its shape is unknown") end
      for _, d in ipairs(s) do if d < 0 then cannot(nd, "its shape is not fully known") end end
      check_size(nd, s)
      G.Variable(function() return core.zeros(s, { dtype = dtype }) end, { name = name })
    elseif nd.attr._mf_call == nil then -- another tool's node: TensorFlow's op (graph/tf_ops.lua)
      local fn = require("moonflow.graph.tf_ops")(nd)
      if fn == nil then cannot(nd) end
      if #inputs == 0 then cannot(nd, "it has no inputs") end
      local takes = debug.getinfo(fn, "u") -- each op's function names the inputs it needs
      if not takes.isvararg and #inputs < takes.nparams then
        bad(("node '%s' (%s) has %d input%s; %s takes %d"):format(nd.name, op, #inputs,
          #inputs == 1 and "" or "s", op, takes.nparams))
      end
      G.apply(op, fn, { type = op }, table.unpack(inputs))
      tf = true
    else
      local c = nd.attr._mf_call.s
      if c == nil then cannot(nd, "its _mf_call attr is not a string") end
      local cf = decode(c, "_mf_call")
      local id, n = str(cf, 1, "call id"), int(cf, 2, "call n") or 0
      if id == nil then cannot(nd, "its recorded call has no builder") end
      if id:match("^F%.") or id:match("^nn%.") then local _ = mf.nn end
      if id:match("^summary%.") then local _ = mf.summary end -- its builders load with it
      -- a file never makes an import read or write files: no mf.save*/load* calls
      if id:find("save", 1, true) or id:find("load", 1, true) then
        cannot(nd, "it records a call of " .. id .. ", which an import never makes")
      end
      local builder = G.builders[id]
      local method = id:match("^Tensor%.(.+)$")
      if builder == nil and method and G.methods[method] == nil
          and type(core.Tensor[method]) == "function" then
        builder = function(self, ...) return self[method](self, ...) end
      end
      if builder == nil then cannot(nd, "no moonflow function '" .. id .. "'") end
      local vals = cf[3] or {}
      if #vals ~= n then bad(("node '%s' records %d arguments of %d"):format(nd.name, #vals, n)) end
      local args = {}
      for i = 1, n do args[i] = read_value(vals[i], inputs, nd.name) end
      -- a call with no symbolic argument would run eagerly, not build a node
      if not G.has_sym(table.unpack(args, 1, n)) then
        cannot(nd, "its recorded call has no symbolic input")
      end
      builder(table.unpack(args, 1, n))
    end
  end)
  g._import_name = nil
  if not ok then error(err, 0) end
  if #g._nodes ~= before + 1 or g._nodes[#g._nodes].name ~= name then
    error(("import: rebuilding node '%s' (%s) made %d nodes"):format(name, op, #g._nodes - before), 0)
  end
  local node = g._nodes[#g._nodes]
  if nd.device ~= "" then node.device = nd.device end
  if tf then node.tf_attrs, node.tf_inputs = nd.attr, inputs end -- inputs as listed, repeats kept
  return node
end

-- one NodeDef into g, its inputs (already imported) found by name
local function import_node(g, nd, prefix)
  local inputs, controls = {}, {}
  for _, s in ipairs(nd.input) do
    local name, idx, control = parse_input(s)
    local src = g._by_name[prefix .. name]
    if control then
      controls[#controls + 1] = src
    else
      local t = src.outputs[idx]
      if t == nil then
        bad(("node '%s' has input '%s', but '%s' has %d outputs"):format(nd.name, s, name,
          #src.outputs))
      end
      inputs[#inputs + 1] = t
    end
  end
  local node = build(g, nd, prefix .. nd.name, inputs)
  if #controls > 0 then node.control_inputs = controls end
  return node
end

-- a function that takes g back to its state now: its nodes, variables and collections (an import
-- that fails leaves the graph as it was)
local function snapshot(g)
  local nodes, vars, trainable = #g._nodes, #g._variables, #g._trainable
  local coll = {}
  for k, list in pairs(g._collections) do coll[k] = #list end
  return function()
    for i = #g._nodes, nodes + 1, -1 do
      g._by_name[g._nodes[i].name] = nil
      g._nodes[i] = nil
    end
    for i = #g._variables, vars + 1, -1 do g._variables[i] = nil end
    for i = #g._trainable, trainable + 1, -1 do g._trainable[i] = nil end
    for k, list in pairs(g._collections) do
      for i = #list, (coll[k] or 0) + 1, -1 do list[i] = nil end
    end
  end
end

-- import(gd, g, prefix) -> the list of new nodes (g must be the default graph); on an error g is
-- left as it was
local function import(gd, g, prefix)
  prefix = (prefix and prefix ~= "") and (prefix .. "/") or ""
  for _, nd in ipairs(gd.node) do
    if g._by_name[prefix .. nd.name] then
      error(("import: the graph already has a node named '%s'"):format(prefix .. nd.name), 0)
    end
  end
  local order = topo_order(gd.node)
  local restore = snapshot(g)
  local ok, made = pcall(function()
    local made = {}
    for _, nd in ipairs(order) do
      made[#made + 1] = import_node(g, nd, prefix)
    end
    return made
  end)
  if not ok then
    restore()
    error(made, 0)
  end
  return made
end

local function as_graph_def(v, fname)
  if getmetatable(v) == GraphDef then return v end
  if getmetatable(v) == G.Graph then return M.from_graph(v) end
  if type(v) == "string" then return M.parse(v) end
  error(("%s: expected a GraphDef, its bytes or a Graph, got %s"):format(fname, type(v)), 0)
end
M.as_graph_def = as_graph_def

-- mf.import_graph_def(graph_def [, {name = "import"}]) -> the new operations, into the default
-- graph; names get the prefix name .. "/" (none when name is "").
function M.import_graph_def(gd, opts)
  opts = opts or {}
  if type(opts) == "string" then opts = { name = opts } end
  local prefix = opts.name
  if prefix == nil then prefix = "import" end
  local g = G.get_default_graph()
  local made = call(function()
    local ok, r = pcall(function() return g:as_default(function() return import(as_graph_def(gd,
      "import_graph_def"), g, prefix) end) end)
    if not ok then error("import_graph_def: " .. tostring(r):gsub("^import_graph_def: ", ""), 0) end
    return r
  end)
  local ops = {}
  for i, node in ipairs(made) do ops[i] = node.op end
  return ops
end

local function read_file(path, fname)
  if type(path) ~= "string" or path == "" then
    error(("%s: path must be a non-empty string, got %s"):format(fname, tostring(path)), 0)
  end
  local f, err = io.open(path, "rb")
  if not f then error(("%s: cannot open '%s': %s"):format(fname, path, err), 0) end
  local bytes = f:read("a")
  f:close()
  if bytes == nil then error(("%s: cannot read '%s'"):format(fname, path), 0) end
  return bytes
end

-- read_graph_def(path) -> GraphDef; errors name the file
local function read_graph_def(path, fname)
  local bytes = read_file(path, fname)
  if #bytes == 0 then error(("%s: '%s' is empty, not a GraphDef"):format(fname, path), 0) end
  if bytes:match("^%s*node%s*{") or bytes:match("^%s*versions%s*{") then
    error(("%s: '%s' is a text GraphDef (as_text); read a binary one (as_text=false)"):format(
      fname, path), 0)
  end
  local ok, gd = pcall(M.parse, bytes)
  if not ok then error(("%s: '%s' is %s"):format(fname, path, tostring(gd)), 0) end
  return gd
end

function M.read_graph_def(path)
  return call(read_graph_def, path, "read_graph_def")
end

-- mf.load_graph(path [, {name = ""}]) -> a new Graph holding the GraphDef of a binary .pb file,
-- names kept (or prefixed with name .. "/")
function M.load_graph(path, opts)
  opts = opts or {}
  return call(function()
    local gd = read_graph_def(path, "load_graph")
    if #gd.node == 0 then error(("load_graph: '%s' holds no nodes"):format(path), 0) end
    local g = G.Graph.new()
    local ok, err = pcall(g.as_default, g, function() import(gd, g, opts.name or "") end)
    if not ok then error(("load_graph: '%s': %s"):format(path, tostring(err)), 0) end
    return g
  end)
end

return M
