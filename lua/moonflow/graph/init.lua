-- moonflow/graph/init.lua — the TensorFlow-1 workflow: graphs of symbolic tensors, built by the
-- same mf.* functions and nn layers that compute eagerly, run later in a Session (session.lua).
--
-- A symbolic tensor (metatable `Sym`) is one output of a node of a Graph. A node is a table
--   { type = "MatMul", name = "inference/MatMul", inputs = { sym, ... }, graph = g,
--     compute = function(input_values) ... end, outputs = { sym, ... }, device = "/gpu:0" | nil }
-- and special kinds (Placeholder, Variable, Const, stateful ops run by the session: initialisers,
-- optimizer steps) carry `kind`. `lift(opname, fn)` turns any eager function into a graph builder:
-- called with a symbolic argument anywhere (top level, or inside a table argument such as the list
-- of mf.cat or the {labels=, logits=} of a loss), it adds a node whose compute is fn applied to the
-- inputs' values. Shapes and dtypes are inferred at build time by running fn on small dummy values
-- (two probes: unknown dims as 2 then 3, data as ones then twos; what differs is unknown, `?`);
-- when every probe fails the shapes can never match and the error names the op.
--
-- install(mf), called once by moonflow/init.lua, wraps the public mf.* functions, the eager
-- tensor's arithmetic metamethods, and (when mf.nn loads) mf.nn.functional and the tf.nn names, so
-- that a symbolic argument sends the call here; eager calls pass straight through (a tail call).
local core = require "moonflow.core"

local G = {}
local raw = {} -- the original mf.* functions, captured before install wraps them

local Sym = { __name = "moonflow.SymbolicTensor" }
G.Sym = Sym

local function is_sym(v) return getmetatable(v) == Sym end
G.is_sym = is_sym

-- whether any symbolic tensor was ever made (sym_of): until then no call can have one
local syms_made = false

local function is_eager(v) return raw.is_tensor(v) end

-- ---- shapes as TensorFlow prints them ---------------------------------------------------------

local function shape_str(s)
  if s == nil then return "<unknown>" end
  local parts = {}
  for i, d in ipairs(s) do parts[i] = d < 0 and "?" or tostring(d) end
  if #parts == 1 then return "(" .. parts[1] .. ",)" end
  return "(" .. table.concat(parts, ", ") .. ")"
end
G.shape_str = shape_str

local function copy_shape(s)
  if s == nil then return nil end
  return { table.unpack(s) }
end

-- ---- graphs -----------------------------------------------------------------------------------

local Graph = { __name = "moonflow.Graph" }
Graph.__index = Graph
G.Graph = Graph

local graph_count = 0

function Graph.new()
  graph_count = graph_count + 1
  return setmetatable({ _nodes = {}, _by_name = {}, _used = {}, _scope = {}, _devices = {},
    _variables = {}, _trainable = {}, _id = graph_count, _collections = {} }, Graph)
end

function Graph:__tostring() return ("<moonflow.Graph %d: %d nodes>"):format(self._id, #self._nodes) end

-- TensorFlow's unique names: "add", "add_1", ...; a scope prefix "a/b/" first.
function Graph:unique_name(base, no_prefix)
  local full = (no_prefix and "" or (self._scope[#self._scope] or "")) .. base
  local n = self._used[full]
  if n == nil then
    self._used[full] = 0
    return full
  end
  local cand
  repeat
    n = n + 1
    cand = full .. "_" .. n
  until self._used[cand] == nil
  self._used[full] = n
  self._used[cand] = 0
  return cand
end

local default_stack = {}
local base_graph = Graph.new()
local eager_disabled = false

function G.get_default_graph() return default_stack[#default_stack] or base_graph end

function G.reset_default_graph()
  if #default_stack > 0 then
    error("reset_default_graph: not allowed inside a g:as_default() scope", 2)
  end
  base_graph = Graph.new()
  return base_graph
end

-- Graph mode (where mf.constant makes Const nodes): after mf.disable_eager_execution(), or inside
-- g:as_default().
function G.graph_mode() return eager_disabled or #default_stack > 0 end
function G.disable_eager_execution() eager_disabled = true end
function G.enable_eager_execution() eager_disabled = false end
function G.executing_eagerly() return not G.graph_mode() end

local function scoped(push, pop, fn)
  push()
  if fn == nil then return setmetatable({}, { __close = function() pop() end }) end
  local res = table.pack(pcall(fn))
  pop()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- g:as_default([fn]): with fn, runs it with g as the default graph; without, a handle for
-- `local _ <close> = g:as_default()`.
function Graph:as_default(fn)
  local depth
  return scoped(function()
    default_stack[#default_stack + 1] = self
    depth = #default_stack
  end, function()
    for i = #default_stack, depth, -1 do default_stack[i] = nil end
  end, fn)
end

local function parse_tensor_name(name)
  local op, idx = name:match("^(.-):(%d+)$")
  if op then return op, tonumber(idx) + 1 end
  return name, nil
end

function Graph:get_operation_by_name(name)
  local node = self._by_name[name]
  if node == nil then error(("The name '%s' refers to an Operation not in the graph"):format(name), 2) end
  return node.op
end

function Graph:get_tensor_by_name(name)
  local op, idx = parse_tensor_name(name)
  if idx == nil then
    error(("The name '%s' looks like an (invalid) Operation name, not a Tensor; tensor names " ..
      "are like 'x:0'"):format(name), 2)
  end
  local node = self._by_name[op]
  local t = node and node.outputs[idx]
  if t == nil then error(("The name '%s' refers to a Tensor which does not exist"):format(name), 2) end
  return t
end

-- A fetch or feed given by name: "x:0" (a tensor) or "x" (the first output, or the operation).
function Graph:_by_any_name(name, level)
  local op, idx = parse_tensor_name(name)
  local node = self._by_name[op]
  if node then
    if idx == nil then return node.outputs[1] or node.op end
    if node.outputs[idx] then return node.outputs[idx] end
  end
  error(("The name '%s' refers to a Tensor which does not exist in this graph"):format(name), level + 1)
end

-- g:as_graph_def() -> a TensorFlow GraphDef of the graph (graph/graphdef.lua)
function Graph:as_graph_def() return require("moonflow.graph.graphdef").from_graph(self) end

function Graph:get_operations()
  local ops = {}
  for i, n in ipairs(self._nodes) do ops[i] = n.op end
  return ops
end

-- g:to_dot([opts]) -> Graphviz DOT text; g:render(path [, opts]) -> path: an .svg/.png/.pdf drawn
-- by Graphviz (or the .dot text). See graph/dot.lua.
function Graph:to_dot(opts) return require("moonflow.graph.dot").graph_to_dot(self, opts) end
function Graph:render(path, opts) return require("moonflow.graph.dot").render_graph(self, path, opts) end

function Graph:get_collection(key) return { table.unpack(self._collections[key] or {}) } end
function Graph:add_to_collection(key, v)
  local c = self._collections[key] or {}
  self._collections[key] = c
  c[#c + 1] = v
end

-- ---- nodes and symbolic tensors ---------------------------------------------------------------

local Op = { __name = "moonflow.Operation" }
G.Op = Op
Op.__index = function(self, k)
  if k == "name" then return rawget(self, "_node").name end
  if k == "type" then return rawget(self, "_node").type end
  if k == "graph" then return rawget(self, "_node").graph end
  if k == "outputs" then return rawget(self, "_node").outputs end
  if k == "inputs" then return rawget(self, "_node").inputs end
  if k == "device" then return rawget(self, "_node").device end
  return Op[k]
end
function Op.__tostring(self)
  return ("Operation(\"%s\", type=%s)"):format(self._node.name, self._node.type)
end
-- a Session argument (op:run(feed, sess), t:eval(feed, sess)): anything else is named (an
-- Operation there, op:run(op2, op3), called op3:run(op, op2) and so on without end: tail calls)
local function check_session(fname, sess)
  local mt = getmetatable(sess)
  if type(sess) ~= "table" or type(mt) ~= "table" or rawget(mt, "__name") ~= "moonflow.Session" then
    error(("%s: the session must be a Session, got %s"):format(fname,
      getmetatable(sess) == Op and "an Operation" or is_sym(sess) and "a tensor" or type(sess)), 3)
  end
end

function Op:run(feed, sess)
  sess = sess or G.get_default_session()
  if sess == nil then error("run: no default session; use sess:run(op) or mf.InteractiveSession()", 2) end
  check_session("run", sess)
  return sess:run(self, feed)
end

local function sym_of(node, i, shape, dtype)
  syms_made = true
  return setmetatable({ op = node.op, graph = node.graph, name = node.name .. ":" .. (i - 1),
    _node = node, _index = i, _shape = shape, _dtype = dtype }, Sym)
end

-- g:_add(spec) -> node. spec: type, name (base; default type), inputs, compute, nout, shapes,
-- dtypes, kind, fields copied.
function Graph:_add(spec)
  local name = self._import_name -- set by graph/graphdef.lua while it rebuilds a named node
  if name then
    self._import_name, self._used[name] = nil, self._used[name] or 0
  else
    name = self:unique_name(spec.name or spec.type)
  end
  local node = { type = spec.type, name = name, inputs = spec.inputs or {}, graph = self,
    compute = spec.compute, kind = spec.kind, outputs = {}, id = #self._nodes + 1,
    device = self._devices[#self._devices] }
  for k, v in pairs(spec) do
    if node[k] == nil and k ~= "nout" and k ~= "shapes" and k ~= "dtypes" then node[k] = v end
  end
  node.op = setmetatable({ _node = node }, Op)
  for i = 1, spec.nout or 1 do
    node.outputs[i] = sym_of(node, i, spec.shapes and spec.shapes[i], spec.dtypes and spec.dtypes[i])
  end
  self._nodes[#self._nodes + 1] = node
  self._by_name[name] = node
  return node
end

-- ---- scopes and device placement --------------------------------------------------------------

local function push_scope(g, prefix)
  g._scope[#g._scope + 1] = prefix
end

local function pop_scope(g, depth)
  for i = #g._scope, depth, -1 do g._scope[i] = nil end
end

local function scope_fn(unique)
  return function(name, fn)
    if type(name) ~= "string" or name == "" then error("name_scope: a name (string) is needed", 2) end
    local g = G.get_default_graph()
    local depth
    return scoped(function()
      local full
      if name:sub(-1) == "/" then full = name -- an absolute scope, as in TensorFlow
      elseif unique then full = g:unique_name(name) .. "/"
      else
        full = (g._scope[#g._scope] or "") .. name
        g._used[full] = g._used[full] or 0
        full = full .. "/"
      end
      push_scope(g, full)
      depth = #g._scope
    end, function() pop_scope(g, depth) end, fn)
  end
end

G.name_scope = scope_fn(true)
G.variable_scope = scope_fn(false)

-- Graph placement for mf.device: new nodes of the default graph get the spec.
function G.push_device(spec)
  local g = G.get_default_graph()
  g._devices[#g._devices + 1] = spec
  local depth = #g._devices
  return function() for i = #g._devices, depth, -1 do g._devices[i] = nil end end
end

-- ---- constants ----------------------------------------------------------------------------------

local function value_dtype(v)
  if type(v) == "string" then return "string" end
  if type(v) == "number" then return math.type(v) == "integer" and "int64" or "float32" end
  if type(v) == "table" then
    local x = v
    while type(x) == "table" do x = x[1] end
    if type(x) == "string" then return "string" end
    return nil
  end
  if is_eager(v) then return v:dtype() end
  if type(v) == "boolean" then return "bool" end
  return nil
end

local function value_shape(v)
  if type(v) == "string" or type(v) == "number" or type(v) == "boolean" then return {} end
  if is_eager(v) then return v:shape() end
  if type(v) == "table" then
    local s, x = {}, v
    while type(x) == "table" do
      s[#s + 1] = #x
      x = x[1]
    end
    return s
  end
  return nil
end
G.value_shape = value_shape

local const_nodes = setmetatable({}, { __mode = "k" }) -- eager tensor -> Const per graph

-- g:constant(v [, name]) -> the Const tensor holding v (an eager tensor is held by reference, so a
-- leaf that requires grad, an nn parameter, stays trainable by mf.train optimizers).
function Graph:constant(v, name, dtype)
  local tv = type(v)
  if not (is_eager(v) or tv == "number" or tv == "boolean" or tv == "string"
      or (tv == "table" and not is_sym(v))) then
    -- a nil value made a Const node that sessions could not plan ("table index is nil")
    error("constant: expected a number, boolean, string, table or tensor, got " .. tv, 3)
  end
  if is_eager(v) then
    local per = const_nodes[v]
    if per and per[self] and name == nil then return per[self] end
  elseif type(v) == "table" and value_dtype(v) ~= "string" then
    v = raw.tensor(v, { dtype = dtype })
  elseif type(v) == "number" and dtype then
    v = raw.tensor(v, { dtype = dtype })
  end
  if dtype and is_eager(v) and v:dtype() ~= dtype then v = v:to(dtype) end
  local node = self:_add { type = "Const", name = name, kind = "Const", value = v,
    shapes = { value_shape(v) }, dtypes = { value_dtype(v) } }
  local t = node.outputs[1]
  t._const = v
  if is_eager(v) and name == nil then
    const_nodes[v] = const_nodes[v] or setmetatable({}, { __mode = "k" })
    const_nodes[v][self] = t
  end
  return t
end

-- ---- dummy values for shape inference -----------------------------------------------------------

local function dummy(t, probe)
  if t._const ~= nil then return t._const end
  local s = t._shape
  if s == nil or t._dtype == nil then return nil end
  local shape = {}
  for i, d in ipairs(s) do shape[i] = d < 0 and probe + 1 or d end
  if t._dtype == "string" then
    if #shape == 0 then return "" end
    local function fill(d)
      local r = {}
      for i = 1, shape[d] do r[i] = d == #shape and "" or fill(d + 1) end
      return r
    end
    return fill(1)
  end
  if t._dtype == "bool" then return raw.full(shape, true, { dtype = "bool" }) end
  -- integers (possible sizes) differ between the probes; floats are 1/2 and 1/3, values that are
  -- also valid probabilities (a dropout rate fed through a placeholder)
  local float = t._dtype:match "^float" or t._dtype:match "^bfloat"
  return raw.full(shape, float and 1 / (probe + 1) or probe, { dtype = t._dtype })
end

local function result_info(v)
  if is_eager(v) then return v:shape(), v:dtype() end
  if type(v) == "string" or (type(v) == "table" and value_dtype(v) == "string") then
    return value_shape(v), "string"
  end
  if type(v) == "number" then return {}, value_dtype(v) end
  if type(v) == "boolean" then return {}, "bool" end
  return nil, nil
end

local function input_desc(inputs)
  local parts = {}
  for i, t in ipairs(inputs) do parts[i] = shape_str(t._shape) end
  return table.concat(parts, " and ")
end

-- Runs compute on dummies (two probes when an input is not a constant); returns shapes, dtypes,
-- the number of outputs, and the folded values when every input is a constant.
local NOFOLD = { rand = true, randn = true, dropout = true, randperm = true, rand_like = true,
  randn_like = true, Dropout = true, random_normal = true, random_uniform = true,
  truncated_normal = true }

-- G.is_probing(): true while shape inference runs an op on dummy values (constants are the real
-- tensors then: an op that changes state, such as batch_norm's running statistics, leaves it alone)
local probing = 0
function G.is_probing() return probing > 0 end

local function infer(opname, inputs, compute)
  local all_const = true
  for _, t in ipairs(inputs) do
    if t._const == nil then all_const = false end
    if t._shape == nil and t._const == nil then return nil end
  end
  local rng = table.pack(raw.get_rng_state())
  local grad_on = raw.is_grad_enabled()
  raw.set_grad_enabled(false)
  local runs, last_err = {}, nil
  probing = probing + 1
  for probe = 1, all_const and 1 or 2 do
    local vals = {}
    for i, t in ipairs(inputs) do vals[i] = dummy(t, probe) end
    local res = table.pack(pcall(compute, vals))
    if res[1] then runs[#runs + 1] = res else last_err = res[2] end
  end
  probing = probing - 1
  raw.set_grad_enabled(grad_on)
  raw.set_rng_state(table.unpack(rng, 1, rng.n))
  if #runs == 0 then
    error(("%s: cannot build this op from inputs of shapes %s: %s"):format(opname,
      input_desc(inputs), tostring(last_err):gsub("^[^:]*:%d+: ", "")), 0)
  end
  local info = { n = runs[1].n - 1, shapes = {}, dtypes = {} }
  for i = 1, info.n do
    local s1, d1 = result_info(runs[1][i + 1])
    info.dtypes[i] = d1
    if #runs == 2 and s1 then
      local s2 = result_info(runs[2][i + 1])
      if s2 == nil or #s2 ~= #s1 then s1 = nil
      else for d = 1, #s1 do if s1[d] ~= s2[d] then s1[d] = -1 end end end
    elseif #runs == 1 and not all_const then
      s1 = nil -- one probe failed: the shape depends on the data
    end
    info.shapes[i] = s1
  end
  if all_const and not NOFOLD[opname] then
    info.folded = {}
    for i = 1, info.n do
      local v = runs[1][i + 1]
      if not is_eager(v) or v:numel() <= 4096 then info.folded[i] = v end
    end
  end
  return info
end

-- ---- lift: eager function -> graph builder ------------------------------------------------------

local OPNAMES = {
  add = "add", sub = "sub", mul = "mul", div = "truediv", pow = "pow", neg = "Neg", matmul = "MatMul",
  mm = "MatMul", dot = "MatMul", relu = "Relu", sigmoid = "Sigmoid", tanh = "Tanh", exp = "Exp",
  log = "Log", sqrt = "Sqrt", abs = "Abs", mean = "Mean", sum = "Sum", max = "Max", min = "Min",
  prod = "Prod", argmax = "ArgMax", argmin = "ArgMin", eq = "Equal", ne = "NotEqual",
  gt = "Greater", ge = "GreaterEqual", lt = "Less", le = "LessEqual", cast = "Cast",
  reshape = "Reshape", view = "Reshape", transpose = "transpose", t = "transpose",
  permute = "transpose", shape = "Shape", fill = "Fill", where = "Select", cat = "concat",
  concat = "concat", stack = "stack", square = "Square", maximum = "Maximum", minimum = "Minimum",
  clamp = "clip_by_value", clip = "clip_by_value", multiply = "Mul", subtract = "Sub",
  divide = "RealDiv", negative = "Neg", greater = "Greater", greater_equal = "GreaterEqual",
  less = "Less", less_equal = "LessEqual", equal = "Equal", not_equal = "NotEqual",
  reduce_sum = "Sum", reduce_mean = "Mean", reduce_max = "Max", reduce_min = "Min",
  reduce_prod = "Prod", logical_and = "LogicalAnd", logical_or = "LogicalOr",
  logical_not = "LogicalNot", squeeze = "Squeeze", unsqueeze = "ExpandDims", flatten = "Flatten",
  float = "Cast", double = "Cast", long = "Cast", int = "Cast", bool = "Cast", to = "Cast",
  zeros = "zeros", ones = "ones", full = "Fill", softmax = "Softmax", log_softmax = "LogSoftmax",
  conv2d = "Conv2D", max_pool2d = "MaxPool", avg_pool2d = "AvgPool", linear = "Linear",
  dropout = "dropout", cross_entropy = "cross_entropy",
  softmax_cross_entropy_with_logits = "softmax_cross_entropy_with_logits",
}

local function camel(name)
  return (name:gsub("^_*(%l)", string.upper):gsub("_(%w)", string.upper))
end

function G.opname(key)
  return OPNAMES[key] or camel(key)
end

-- Collects the symbolic tensors of an argument list (top level and inside plain tables, two
-- levels deep), and the eager tensors beside them (which become Const inputs at top level).
-- The keys of a plain argument table in a fixed order: 1..n, then the other keys sorted (so a keyed
-- call like softmax_cross_entropy_with_logits{labels=, logits=} always orders its inputs alike).
local function sorted_keys(t)
  local keys, n = {}, #t
  for i = 1, n do keys[i] = i end
  local named = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then named[#named + 1] = k end
  end
  table.sort(named, function(a, b)
    if type(a) ~= type(b) then return type(a) < type(b) end
    return a < b
  end)
  table.move(named, 1, #named, n + 1, keys)
  return keys
end

local function scan(v, depth, found)
  if is_sym(v) then
    found[#found + 1] = v
  elseif depth > 0 and type(v) == "table" and getmetatable(v) == nil then
    for _, k in ipairs(sorted_keys(v)) do scan(v[k], depth - 1, found) end
  end
  return found
end

-- Every mf.* call in eager mode asks this first (wrap below), so it is kept cheap: nothing to look
-- at before the first symbolic tensor was made; then only tables can be symbolic tensors or hold
-- them, and an eager tensor (userdata) or a number is passed over with one type() call.
local function has_sym(...)
  if not syms_made then return false end -- a program that never built a graph
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "table" then
      local mt = getmetatable(v)
      if mt == Sym then return true end
      if mt == nil then
        local n = 0
        for _, x in pairs(v) do
          if type(x) == "table" then
            local xm = getmetatable(x)
            if xm == Sym then return true end
            if xm == nil then
              for _, y in pairs(x) do
                if type(y) == "table" and getmetatable(y) == Sym then return true end
              end
            end
          end
          n = n + 1
          if n > 16 then break end
        end
      end
    end
  end
  return false
end
G.has_sym = has_sym

-- Copies the argument structure with each symbolic tensor replaced by a slot; returns the template
-- and the refs {container, key, input index, as_number}.
local function template(args, n, opts)
  local inputs, index, refs = {}, {}, {}
  local g
  local function slot(container, key, t)
    if g == nil then g = t.graph
    elseif t.graph ~= g then
      error(("%s: Tensor %s must be from the same graph as Tensor %s"):format(opts.name,
        t.name, inputs[1].name), 0)
    end
    local i = index[t]
    if i == nil then
      i = #inputs + 1
      inputs[i], index[t] = t, i
    end
    refs[#refs + 1] = { container, key, i,
      opts.scalars_as_numbers and t._shape and #t._shape == 0 and t._dtype ~= "string" }
  end
  local function walk(v, depth)
    if type(v) ~= "table" or getmetatable(v) ~= nil or depth == 0 then return v end
    local c = {}
    for _, k in ipairs(sorted_keys(v)) do
      local x = v[k]
      if is_sym(x) then slot(c, k, x) else c[k] = walk(x, depth - 1) end
    end
    return c
  end
  local tmpl = { n = n }
  for i = 1, n do
    local v = args[i]
    if is_sym(v) then slot(tmpl, i, v) else tmpl[i] = walk(v, 2) end
  end
  g = g or G.get_default_graph()
  -- eager tensors (and strings, for +) beside symbolic ones enter the graph as Consts; Lua numbers
  -- stay in the op (as TensorFlow's "add/y" constants would)
  for i = 1, n do
    local v = tmpl[i]
    if is_eager(v) or (opts.strings and type(v) == "string") then
      local c
      G.name_scope_quiet(g, opts.name, function() c = g:constant(v) end)
      slot(tmpl, i, c)
    end
  end
  return tmpl, inputs, refs, g
end

-- Consts made for an op's operands are named as TensorFlow names them ("mul/y" style is not
-- copied: they are plain Const nodes in the current scope).
function G.name_scope_quiet(g, _, fn) fn() end

-- G.apply(opname, fn, opts, ...) -> the symbolic result(s) of fn(...) as a node of the graph.
-- opts: numbers (Lua numbers become Consts), strings, scalars_as_numbers (a 0-d input is passed to
-- fn as a Lua number), dtype (the result's dtype when inference cannot run), type (node type).
function G.apply(opname, fn, opts, ...)
  opts = opts or {}
  opts.name = opname
  local n = select("#", ...)
  local tmpl, inputs, refs, g = template(table.pack(...), n, opts)
  local nrefs = #refs
  -- the template lets go of the input values once fn returns or fails (a session drops
  -- intermediate results as soon as their last reader ran)
  local function release(ok, ...)
    for r = 1, nrefs do
      local ref = refs[r]
      ref[1][ref[2]] = nil
    end
    if not ok then error((...), 0) end
    return ...
  end
  local compute = function(vals)
    for r = 1, nrefs do
      local ref = refs[r]
      local v = vals[ref[3]]
      if ref[4] and is_eager(v) then v = v:item() end
      ref[1][ref[2]] = v
    end
    return release(pcall(fn, table.unpack(tmpl, 1, n)))
  end
  local info = infer(opname, inputs, compute)
  local node = g:_add { type = opts.type or opname, name = opts.node_name or opname, inputs = inputs,
    compute = compute, nout = info and math.max(info.n, 1) or (opts.nout or 1),
    shapes = info and info.shapes, dtypes = info and info.dtypes or { opts.dtype },
    args = tmpl, arg_refs = refs } -- the call's arguments, for exporters (mf.onnx): see G.node_args
  if info and info.folded then
    for i, t in ipairs(node.outputs) do t._const = info.folded[i] end
  end
  if opts.dtype and node.outputs[1]._dtype == nil then node.outputs[1]._dtype = opts.dtype end
  node.call_id = opts.id -- G.builders[call_id](G.node_args(node)) builds it again (graphdef.lua)
  return table.unpack(node.outputs)
end

-- G.node_args(node) -> a fresh copy of the arguments node's op was called with (a table with n), each
-- symbolic input back in its place (top level or inside a table argument).
function G.node_args(node)
  local tmpl, copies = node.args, {}
  if tmpl == nil then return nil end
  local function copy(v)
    if type(v) ~= "table" or getmetatable(v) ~= nil then return v end
    if copies[v] then return copies[v] end
    local c = {}
    copies[v] = c
    for k, x in pairs(v) do c[k] = copy(x) end
    return c
  end
  local args = copy(tmpl)
  for _, ref in ipairs(node.arg_refs) do
    copies[ref[1]][ref[2]] = node.inputs[ref[3]]
  end
  return args
end

-- id -> the public builder that makes nodes of that kind (mf.<key>, F.<key>, nn.<key>,
-- Tensor.<key>, op.<metamethod>); a lift whose opts carry `id` records it on its nodes.
G.builders = {}

function G.lift(opname, fn, opts)
  return function(...) return G.apply(opname, fn, opts and setmetatable({}, { __index = opts }), ...) end
end

-- ---- string tensors -----------------------------------------------------------------------------

-- (an element that is nil or false was taken as "the whole table again", `ta and a[i] or a`:
-- {1, nil, 3} or a table holding itself recursed until the stack overflowed; other values were
-- concatenated through tostring)
local function concat_strings(a, b, depth)
  if math.type(depth) ~= "integer" then depth = 0 end
  if depth > 32 then error("add: string tensors nested more than 32 levels deep", 0) end
  local ta, tb = type(a) == "table", type(b) == "table"
  for _, v in ipairs { a, b } do
    local tv = type(v)
    if tv ~= "table" and tv ~= "string" and tv ~= "number" then
      error("add: string tensors hold strings, got " .. tv, 0)
    end
  end
  if not ta and not tb then return tostring(a) .. tostring(b) end
  local n = ta and #a or #b
  if ta and tb and #a ~= #b then
    error(("add: string tensors of %d and %d elements cannot be concatenated"):format(#a, #b), 0)
  end
  local r = {}
  for i = 1, n do
    local x, y = a, b
    if ta then x = a[i] end
    if tb then y = b[i] end
    r[i] = concat_strings(x, y, depth + 1)
  end
  return r
end
G.concat_strings = concat_strings

local function sym_dtype(v)
  if is_sym(v) then return v._dtype end
  return value_dtype(v)
end

-- ---- placeholders and variables -----------------------------------------------------------------

function G.placeholder(dtype, shape, name)
  dtype = dtype or "float32"
  if type(dtype) ~= "string" then error("placeholder: dtype must be a string like \"float32\"", 2) end
  if shape ~= nil then
    if type(shape) ~= "table" then error("placeholder: shape must be a table like {-1, 784}", 2) end
    for _, d in ipairs(shape) do
      if math.type(d) ~= "integer" or d < -1 then
        error("placeholder: sizes must be integers >= 0, or -1 for unknown", 2)
      end
    end
    shape = copy_shape(shape)
  end
  local g = G.get_default_graph()
  local node = g:_add { type = "Placeholder", name = name, kind = "Placeholder",
    shapes = { shape }, dtypes = { dtype } }
  return node.outputs[1]
end

-- mf.Variable(init [, {name=, trainable=, dtype=}]) (or a name as the second argument). init: an
-- eager tensor, a number or nested table, a symbolic tensor (evaluated by the initializer), or a
-- function returning a tensor.
function G.Variable(init, opts)
  if type(opts) == "string" then opts = { name = opts } end
  opts = opts or {}
  local g = G.get_default_graph()
  if is_sym(init) then g = init.graph end
  local shape, dtype
  if is_sym(init) then
    shape, dtype = copy_shape(init._shape), init._dtype
  elseif type(init) == "function" then
    local v = init()
    shape, dtype = value_shape(v), value_dtype(v)
  elseif init ~= nil then
    if not is_eager(init) then
      init = raw.tensor(init, { dtype = opts.dtype })
    elseif opts.dtype and init:dtype() ~= opts.dtype then
      init = init:to(opts.dtype)
    end
    shape, dtype = init:shape(), init:dtype()
  else
    error("Variable: an initial value is needed", 2)
  end
  local trainable = opts.trainable
  if trainable == nil then trainable = true end
  local node = g:_add { type = "VariableV2", name = opts.name or "Variable", kind = "Variable",
    init = init, trainable = trainable, shapes = { shape }, dtypes = { dtype } }
  local v = node.outputs[1]
  g._variables[#g._variables + 1] = v
  if trainable then g._trainable[#g._trainable + 1] = v end
  return v
end

function G.global_variables(g) return { table.unpack((g or G.get_default_graph())._variables) } end
function G.trainable_variables(g) return { table.unpack((g or G.get_default_graph())._trainable) } end

-- An op run by the session with the session itself: fn(sess, input values) (initialisers,
-- assignments, optimizer steps). Returns the Operation (no outputs) or the outputs.
function G.stateful(g, type_, name, inputs, fn, spec)
  spec = spec or {}
  spec.type, spec.name, spec.inputs, spec.kind, spec.run = type_, name, inputs, "Stateful", fn
  spec.nout = spec.nout or 0
  local node = g:_add(spec)
  if spec.nout == 0 then return node.op end
  return table.unpack(node.outputs)
end

function G.variables_initializer(list, name)
  local g = (list[1] and list[1].graph) or G.get_default_graph()
  local vars = { table.unpack(list) }
  for i, v in ipairs(vars) do
    if not is_sym(v) or v._node.kind ~= "Variable" then
      error(("variables_initializer: entry %d is not a Variable"):format(i), 2)
    end
  end
  return G.stateful(g, "NoOp", name or "init", {}, function(sess)
    for _, v in ipairs(vars) do sess:_initialize(v._node) end
  end)
end

function G.global_variables_initializer()
  return G.variables_initializer(G.global_variables())
end

-- print_all_variables([train_only]): one line per variable, as the tutorial's helper prints them.
function G.print_all_variables(train_only)
  local list = train_only and G.trainable_variables() or G.global_variables()
  for i, v in ipairs(list) do
    print(("  var %3d: %-15s   %s"):format(i - 1, shape_str(v._shape), v.name))
  end
end

-- ---- symbolic tensor methods --------------------------------------------------------------------

local methods = {}
G.methods = methods

function methods.shape(t) return copy_shape(t._shape) end
methods.get_shape = methods.shape
function methods.dtype(t) return t._dtype end
function methods.dim(t)
  if t._shape == nil then error(t.name .. ": the rank is unknown", 2) end
  return #t._shape
end
methods.nDimension = methods.dim
function methods.size(t, d)
  if t._shape == nil then error(t.name .. ": the shape is unknown", 2) end
  if d == nil then return copy_shape(t._shape) end
  if d < 0 then d = #t._shape + d + 1 end
  return t._shape[d]
end
function methods.numel(t)
  local n = 1
  for _, d in ipairs(t._shape or { -1 }) do
    if d < 0 then return -1 end
    n = n * d
  end
  return n
end
methods.nelement = methods.numel
function methods.is_floating_point(t)
  local d = t._dtype
  return d == "float32" or d == "float64" or d == "float16" or d == "bfloat16"
end
function methods.device(t) return t._node.device or "cpu" end
function methods.needs_grad() return false end
function methods.is_contiguous() return true end
function methods.get_name(t) return t.name end
function methods.eval(t, feed, sess)
  sess = sess or G.get_default_session()
  if sess == nil then
    error("eval: no default session; use sess:run(t), sess:as_default() or mf.InteractiveSession()", 2)
  end
  check_session("eval", sess)
  return sess:run(t, feed)
end
function methods.item(t)
  error(("%s is symbolic: it has no value until a session runs it (sess:run(t) or t:eval())"):format(
    t.name), 2)
end
methods.totable = methods.item
function methods.initialized_value(v)
  return v
end

-- Variable:assign(value), assign_add, assign_sub: ops that change the variable in the session.
local function assign_op(kind)
  return function(v, value)
    if v._node.kind ~= "Variable" then error(kind .. ": not a Variable: " .. v.name, 2) end
    local g = v.graph
    if value == nil then error(kind .. ": a value is needed", 2) end
    if not is_sym(value) then value = g:constant(value) end
    return G.stateful(g, kind == "assign" and "Assign" or (kind == "assign_add" and "AssignAdd" or
      "AssignSub"), v._node.name .. "/" .. (kind == "assign" and "Assign" or camel(kind)), { value },
      function(sess, vals)
        sess:_assign(v._node, vals[1], kind)
        return sess._vars[v._node]
      end, { nout = 1, shapes = { copy_shape(v._shape) }, dtypes = { v._dtype } })
  end
end
methods.assign = assign_op("assign")
methods.assign_add = assign_op("assign_add")
methods.assign_sub = assign_op("assign_sub")

local lifted_methods = {}

Sym.__index = function(t, k)
  local m = methods[k]
  if m ~= nil then return m end
  m = lifted_methods[k]
  if m ~= nil then return m end
  local f = core.Tensor[k]
  if type(f) == "function" then
    m = G.lift(G.opname(k), f, { id = "Tensor." .. k })
    lifted_methods[k] = m
    G.builders["Tensor." .. k] = m
    return m
  end
  return nil
end

function Sym.__tostring(t)
  return ("Tensor(\"%s\", shape=%s, dtype=%s)"):format(t.name, shape_str(t._shape),
    t._dtype or "?")
end

local function binary(key, opname)
  -- raw.<key> spelled out: called as raw[key], Lua named the C function '?' in its argument errors
  local call = load(("local raw = ... return function(a, b) return raw.%s(a, b) end"):format(key),
    "=op." .. key, "t")(raw)
  local lifted = G.lift(opname, call,
    { numbers = true, id = "op." .. key })
  G.builders["op." .. key] = function(a, b) return lifted(a, b) end
  return G.builders["op." .. key]
end

local add_num = binary("add", "add")
local add_str = G.lift("add", concat_strings, { strings = true, dtype = "string", id = "op.concat" })
G.builders["op.concat"] = add_str
Sym.__add = function(a, b)
  if sym_dtype(a) == "string" or sym_dtype(b) == "string" then return add_str(a, b) end
  return add_num(a, b)
end
Sym.__sub = binary("sub", "sub")
Sym.__mul = binary("mul", "mul")
Sym.__div = binary("div", "truediv")
Sym.__pow = binary("pow", "pow")
Sym.__mod = binary("remainder", "mod")
Sym.__idiv = binary("floor_divide", "floordiv")
local neg = G.lift("Neg", function(a)
  -- (a string tensor's value is a string or a table of them: Lua's own arithmetic error before)
  if not (is_eager(a) or type(a) == "number") then
    error("Neg: expected a numeric tensor, got " ..
      ((type(a) == "string" or type(a) == "table") and "a string tensor" or type(a)), 2)
  end
  return -a
end, { id = "op.neg" })
G.builders["op.neg"] = neg
Sym.__unm = function(a) return neg(a) end

-- ---- sessions (session.lua) --------------------------------------------------------------------

local session -- loaded on first use
local function S()
  session = session or require "moonflow.graph.session"
  return session
end

function G.get_default_session() return S().get_default_session() end

-- ---- install: the hook that routes mf.* to the graph builder -----------------------------------

-- mf.* functions that never build graph nodes.
local SKIP = {
  is_tensor = true, no_grad = true, enable_grad = true, set_grad_enabled = true,
  is_grad_enabled = true, device = true, clock = true, manual_seed = true, get_rng_state = true,
  set_rng_state = true, set_num_threads = true, get_num_threads = true, blas_info = true,
  list_devices = true, get_default_device = true, _set_default_device = true, allclose = true,
  numel = true, grad = true, same_padding = true, constant = true, flags = true, gradcheck = true,
  gradgradcheck = true,
}

-- The wrapper calls the original as a field with a constant key, compiled without debug
-- information, so that argument errors raised by C functions still name the function ("bad
-- argument #2 to 'add'") and point at no line of this file.
local function compile(src, name, ...)
  local bin = string.dump(assert(load(src, "=" .. name, "t")), true)
  return load(bin, "=" .. name, "b")(...)
end

-- wrap(key, f [, opts [, ns]]): the public function; its nodes record the builder id ns.key
-- (ns "mf" by default)
local function wrap(key, f, opts, ns)
  local builder
  local id = (ns or "mf") .. "." .. key
  local function build(...)
    builder = builder or G.lift(G.opname(key), f, setmetatable({ id = id }, { __index = opts }))
    return builder(...)
  end
  local w = compile(([[
local R, has_sym, build = ...
return function(...)
  if has_sym(...) then return build(...) end
  return R[%q](...)
end]]):format(key), key, { [key] = f }, has_sym, build)
  G.builders[id] = G.builders[id] or w
  return w
end
G.wrap = wrap

local function wrap_table(t, skip, opts)
  for k, f in pairs(t) do
    if type(f) == "function" and type(k) == "string" and not (skip and skip[k]) then
      t[k] = wrap(k, f, opts)
    end
  end
end

local installed = false

function G.install(mf)
  if installed then return end
  installed = true
  for k, v in pairs(mf) do raw[k] = v end
  -- the original functions, called from C (pcall in shape inference and sessions), have no name
  -- of their own there: lauxlib's argument errors find them here ('moonflow.eager.narrow')
  -- instead of naming '?'
  package.loaded["moonflow.eager"] = raw
  wrap_table(mf, SKIP)

  -- an eager tensor meets a symbolic one in an operator: the symbolic metamethod handles it
  local tmt = debug.getregistry()["moonflow.Tensor"]
  if type(tmt) == "table" then
    for _, mm in ipairs { "__add", "__sub", "__mul", "__div", "__pow", "__mod", "__idiv" } do
      local f, symf = tmt[mm], Sym[mm]
      if f then
        local name = mm:sub(3)
        tmt[mm] = compile(([[
local R, Sym, symf = ...
return function(a, b)
  if getmetatable(b) == Sym then return symf(a, b) end
  return R.%s(a, b)
end]]):format(name), mm, { [name] = f }, Sym, symf)
      end
    end
  end

  -- TensorFlow names
  mf.string = "string"
  mf.placeholder = G.placeholder
  mf.Variable = G.Variable
  mf.Graph = Graph.new
  mf.get_default_graph = G.get_default_graph
  mf.reset_default_graph = G.reset_default_graph
  mf.name_scope = G.name_scope
  mf.variable_scope = G.variable_scope
  mf.global_variables_initializer = G.global_variables_initializer
  mf.initialize_all_variables = G.global_variables_initializer
  mf.variables_initializer = G.variables_initializer
  mf.global_variables = G.global_variables
  mf.trainable_variables = G.trainable_variables
  mf.GraphKeys = { SUMMARIES = "summaries" } -- tf.GraphKeys (summary.lua fills "summaries")
  mf.get_collection = function(key) return G.get_default_graph():get_collection(key) end
  mf.add_to_collection = function(key, v) G.get_default_graph():add_to_collection(key, v) end
  mf.print_all_variables = G.print_all_variables
  mf.disable_eager_execution = G.disable_eager_execution
  mf.enable_eager_execution = G.enable_eager_execution
  mf.executing_eagerly = G.executing_eagerly
  mf.is_symbolic = is_sym
  mf.Session = function(opts) return S().Session(opts) end
  mf.InteractiveSession = function(opts) return S().InteractiveSession(opts) end
  mf.get_default_session = G.get_default_session
  mf.graph_lift = G.lift
  -- GraphDefs and frozen graphs (graph/graphdef.lua, graph/freeze.lua), loaded on first use
  mf.load_graph = function(...) return require("moonflow.graph.graphdef").load_graph(...) end
  mf.import_graph_def = function(...) return require("moonflow.graph.graphdef").import_graph_def(...) end
  mf.graph_util = setmetatable({}, { __index = function(t, k)
    local m = require "moonflow.graph.freeze"
    setmetatable(t, { __index = m })
    return m[k]
  end })

  -- mf.is_tensor: symbolic tensors are tensors too (so nn code accepts them)
  mf.is_tensor = function(v) return raw.is_tensor(v) or getmetatable(v) == Sym end

  -- mf.constant: in graph mode a Const node (strings included), else eager as before
  local constant = raw.constant
  mf.constant = function(v, opts)
    if opts ~= nil and type(opts) ~= "table" then
      error("constant: options must be a table, got " .. type(opts), 2)
    end
    if G.graph_mode() or is_sym(v) then
      if is_sym(v) then return v end
      local dtype = opts and opts.dtype
      if value_dtype(v) == "string" and dtype ~= nil and dtype ~= "string" then
        error("constant: a string value cannot have dtype " .. tostring(dtype), 2)
      end
      return G.get_default_graph():constant(v, opts and opts.name, dtype ~= "string" and dtype or nil)
    end
    return constant(v, opts)
  end

  -- (mf.device, which also places the nodes built in its scope (G.push_device), is
  -- moonflow/init.lua's, defined after this install)

  -- mf.nn, when it loads: the functional forms and TensorFlow's tf.nn names build nodes whole
  local mt = getmetatable(mf)
  local index = mt.__index
  mt.__index = function(t, k)
    local m = index(t, k)
    if k == "nn" and type(m) == "table" and not rawget(m, "_graph_wrapped") then
      rawset(m, "_graph_wrapped", true)
      local F = m.functional
      local wrapped = {}
      for name, f in pairs(F) do
        if type(f) == "function" and name:sub(1, 1) ~= "_" then
          wrapped[f] = wrap(name, f, { scalars_as_numbers = true }, "F")
          F[name] = wrapped[f]
        end
      end
      for name, f in pairs(m) do
        if type(f) == "function" and not m.is_module(f) and name ~= "class" and name ~= "Parameter"
            and name ~= "is_module" and name:match("^%l") then
          m[name] = wrapped[f] or wrap(name, f, { scalars_as_numbers = true }, "nn")
        end
      end
    end
    return m
  end
end

return G
