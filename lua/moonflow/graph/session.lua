-- moonflow/graph/session.lua — mf.Session and mf.InteractiveSession: run graphs built by
-- moonflow.graph. A session holds the values of the graph's variables (and the optimizers' slots);
-- sess:run(fetches [, feed]) executes only the nodes its fetches need, each once, in topological
-- order (the plan of a fetch/feed combination is cached), and returns the same structure of
-- eager CPU tensors (Lua strings for string tensors, nil for operations).
--
-- Config (mf.Session{graph=, config={...}}): intra_op_parallelism_threads (mf.set_num_threads),
-- log_device_placement (prints each node's device when it is first placed),
-- allow_soft_placement (a node asked for a GPU runs on the CPU when no GPU can run it; without it
-- that is an error naming the node), device_count = {GPU = 0} (no GPU), gpu_options and
-- inter_op_parallelism_threads are accepted.
local core = require "moonflow.core"
local G = require "moonflow.graph"

local M = {}
local is_sym = G.is_sym
local Sym, Op = G.Sym, G.Op

local function is_eager(v) return getmetatable(v) == debug.getregistry()["moonflow.Tensor"] end

local Session = { __name = "moonflow.Session" }
Session.__index = Session

local default_sessions = {}

function M.get_default_session() return default_sessions[#default_sessions] end

-- ---- construction -----------------------------------------------------------------------------

local function has_gpu(config)
  local dc = config.device_count
  if type(dc) == "table" and (dc.GPU == 0 or dc.gpu == 0) then return false end
  local cuda = rawget(core, "cuda")
  return type(cuda) == "table" and cuda.is_available ~= nil and cuda.is_available() == true
end

function M.Session(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("Session: options must be a table {graph=, config=}", 3) end
  local config = opts.config or {}
  local g = opts.graph or G.get_default_graph()
  if getmetatable(g) ~= G.Graph then error("Session: graph must be an mf.Graph()", 3) end
  local n = config.intra_op_parallelism_threads
  if n ~= nil and n > 0 then core.set_num_threads(n) end
  local self = setmetatable({ graph = g, config = config, _vars = {}, _slots = {}, _plans = {},
    _placed = {}, _closed = false, _gpu = has_gpu(config) }, Session)
  return self
end

function M.InteractiveSession(opts)
  local s = M.Session(opts)
  default_sessions[#default_sessions + 1] = s
  s._interactive = true
  return s
end

function Session:__tostring()
  return ("<moonflow.Session%s on %s>"):format(self._closed and " (closed)" or "", tostring(self.graph))
end

function Session:close()
  if self._closed then return end
  self._closed = true
  self._vars, self._slots, self._plans = {}, {}, {}
  for i = #default_sessions, 1, -1 do
    if default_sessions[i] == self then table.remove(default_sessions, i) end
  end
end
Session.__close = Session.close

-- sess:as_default([fn]): with fn, runs it with sess as the default session (t:eval()); without,
-- a handle for `local _ <close> = sess:as_default()`.
function Session:as_default(fn)
  default_sessions[#default_sessions + 1] = self
  local depth = #default_sessions
  local function pop() for i = #default_sessions, depth, -1 do default_sessions[i] = nil end end
  if fn == nil then return setmetatable({}, { __close = pop }) end
  local res = table.pack(pcall(fn))
  pop()
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- ---- errors -----------------------------------------------------------------------------------

local THIS = debug.getinfo(1, "S").source
local GRAPH_SRC = debug.getinfo(G.apply, "S").source

local function fail(fmt, ...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.source ~= THIS and info.source ~= GRAPH_SRC) then break end
    level = level + 1
  end
  error(string.format(fmt, ...), level)
end

-- ---- variables --------------------------------------------------------------------------------

local function as_leaf(v, node)
  if is_eager(v) then
    v = core.no_grad(function() return v:detach():clone():contiguous() end)
    if node.trainable and v:is_floating_point() then v:requires_grad(true) end
  end
  return v
end

function Session:_initialize(node)
  local init = node.init
  local v
  if is_sym(init) then
    v = self:run(init)
  elseif type(init) == "function" then
    v = init()
  else
    v = init
  end
  if not is_eager(v) and type(v) ~= "string" and type(v) ~= "table" then v = core.tensor(v) end
  self._vars[node] = as_leaf(v, node)
end

function Session:_assign(node, value, kind)
  local cur = self._vars[node]
  if kind ~= "assign" and cur == nil then
    fail("Attempting to use uninitialized value %s", node.name)
  end
  core.no_grad(function()
    if kind == "assign" then
      if cur ~= nil and is_eager(cur) and is_eager(value) then
        cur:copy_(value)
      else
        self._vars[node] = as_leaf(value, node)
      end
    elseif kind == "assign_add" then
      cur:copy_(cur + value)
    else
      cur:copy_(cur - value)
    end
  end)
end

-- The value of a variable in this session (the leaf tensor the optimizers update), or nil.
function Session:variable_value(v)
  return self._vars[v._node]
end

-- ---- fetches and feeds --------------------------------------------------------------------------

-- Flattens a fetch structure into a list of leaves, remembering the structure to rebuild.
local function flatten(self, f, leaves)
  if is_sym(f) then
    if f.graph ~= self.graph then
      fail("Tensor %s is not an element of this graph (it belongs to another mf.Graph)", f.name)
    end
    leaves[#leaves + 1] = f
    return { leaf = #leaves }
  end
  if getmetatable(f) == Op then
    if f.graph ~= self.graph then
      fail("Operation %s is not an element of this graph (it belongs to another mf.Graph)", f.name)
    end
    leaves[#leaves + 1] = f
    return { leaf = #leaves }
  end
  if type(f) == "string" then
    local ok, t = pcall(self.graph._by_any_name, self.graph, f, 1)
    if not ok then fail("%s", t) end
    return flatten(self, t, leaves)
  end
  if is_eager(f) or type(f) == "number" or type(f) == "boolean" then
    leaves[#leaves + 1] = f
    return { leaf = #leaves }
  end
  if type(f) == "table" and getmetatable(f) == nil then
    local s = { keys = {}, subs = {}, n = #f }
    for k, v in pairs(f) do
      s.keys[#s.keys + 1] = k
      s.subs[#s.subs + 1] = flatten(self, v, leaves)
    end
    return s
  end
  fail("run: cannot fetch a %s (fetch symbolic tensors, operations, eager tensors, or lists and " ..
    "tables of them)", type(f))
end

local function rebuild(s, vals)
  if s.leaf then return vals[s.leaf] end
  local r = {}
  if s.n > 0 then
    -- a list: sized so that # and table.unpack see every entry, nil (operations) included
    local arr = {}
    for i, k in ipairs(s.keys) do if math.type(k) == "integer" then arr[k] = rebuild(s.subs[i], vals) end end
    r = table.pack(table.unpack(arr, 1, s.n))
    r.n = nil
  end
  for i, k in ipairs(s.keys) do
    if math.type(k) ~= "integer" or s.n == 0 then r[k] = rebuild(s.subs[i], vals) end
  end
  return r
end

local FLOATS = { float32 = true, float64 = true, float16 = true, bfloat16 = true }

local function feed_value(t, v)
  local dtype, shape = t._dtype, t._shape
  if dtype == "string" then
    if type(v) ~= "string" and type(v) ~= "table" then
      fail("Cannot feed a %s to the string tensor '%s'", type(v), t.name)
    end
    return v
  end
  if is_sym(v) then fail("The value of a feed cannot be a symbolic tensor (feeding '%s')", t.name) end
  if type(v) == "string" then
    fail("Cannot feed a string to tensor '%s' of dtype %s", t.name, tostring(dtype))
  end
  if not is_eager(v) then
    local ok, r = pcall(core.tensor, v, { dtype = dtype })
    if not ok then fail("Cannot feed %s to tensor '%s': %s", type(v), t.name, tostring(r)) end
    v = r
  elseif dtype and v:dtype() ~= dtype then
    if FLOATS[dtype] and FLOATS[v:dtype()] then
      v = v:to(dtype)
    else
      fail("Cannot feed a %s tensor to tensor '%s' of dtype %s", v:dtype(), t.name, dtype)
    end
  end
  if shape ~= nil then
    local vs = v:shape()
    local ok = #vs == #shape
    if ok then for d = 1, #vs do if shape[d] >= 0 and shape[d] ~= vs[d] then ok = false end end end
    if not ok then
      fail("Cannot feed value of shape %s for Tensor '%s', which has shape %s", G.shape_str(vs),
        t.name, G.shape_str(shape))
    end
  end
  return v
end

local function read_feed(self, feed)
  local fed = {}
  if feed == nil then return fed end
  if type(feed) ~= "table" then fail("run: feed must be a table {[placeholder] = value, ...}") end
  for k, v in pairs(feed) do
    local t = k
    if type(k) == "string" then
      local ok, r = pcall(self.graph._by_any_name, self.graph, k, 1)
      if not ok then fail("%s", r) end
      t = r
    end
    if not is_sym(t) then fail("run: feed keys must be placeholders (or tensor names), got %s", type(k)) end
    if t.graph ~= self.graph then
      fail("Tensor %s, fed, is not an element of this graph", t.name)
    end
    fed[t] = feed_value(t, v)
  end
  return fed
end

-- ---- placement --------------------------------------------------------------------------------

local function wants_gpu(spec)
  if spec == nil then return false end
  local s = spec:lower()
  return s:find("gpu", 1, true) ~= nil or s:find("cuda", 1, true) ~= nil
end

local function gpu_index(spec)
  return tonumber(spec:match("(%d+)%s*$")) or 0
end

function Session:_place(node)
  local p = self._placed[node]
  if p then return p end
  local dev = "cpu"
  if wants_gpu(node.device) then
    if self._gpu then
      dev = "cuda:" .. gpu_index(node.device)
    elseif self.config.allow_soft_placement then
      dev = "cpu"
    else
      fail("Cannot assign a device for operation '%s': it was explicitly assigned to %s but no " ..
        "GPU device is available (use config = {allow_soft_placement = true} to run it on the CPU)",
        node.name, node.device)
    end
  end
  self._placed[node] = dev
  if self.config.log_device_placement then
    print(("%s: (%s): %s"):format(node.name, node.type, dev == "cpu" and "/cpu:0" or
      "/gpu:" .. dev:match("%d+")))
  end
  return dev
end

-- ---- plans --------------------------------------------------------------------------------------

-- The nodes a set of fetches needs, in topological order, stopping at fed tensors.
local function make_plan(self, leaves, fed)
  local order, state = {}, {}
  local needs_grad = false
  local function visit(node)
    local s = state[node]
    if s == 2 then return end
    if s == 1 then fail("the graph has a cycle at %s", node.name) end
    state[node] = 1
    local all_fed = #node.outputs > 0
    for _, o in ipairs(node.outputs) do if fed[o] == nil then all_fed = false end end
    if not all_fed then
      for _, t in ipairs(node.inputs) do visit(t._node) end
      for _, c in ipairs(node.control_inputs or {}) do visit(c) end
      order[#order + 1] = node
      if node.needs_grad then needs_grad = true end
    end
    state[node] = 2
  end
  for _, f in ipairs(leaves) do
    if is_sym(f) then
      if fed[f] == nil then visit(f._node) end
    elseif getmetatable(f) == Op then
      visit(f._node)
    end
  end
  for _, node in ipairs(order) do self:_place(node) end
  return { order = order, needs_grad = needs_grad }
end

local function plan_key(leaves, fed)
  local parts = {}
  for i, f in ipairs(leaves) do
    parts[i] = (is_sym(f) and f.name) or (getmetatable(f) == Op and f.name) or "."
  end
  local fk = {}
  for t in pairs(fed) do fk[#fk + 1] = t.name end
  table.sort(fk)
  return table.concat(parts, ",") .. "|" .. table.concat(fk, ",")
end

-- ---- run ----------------------------------------------------------------------------------------

local function to_result(v, is_var)
  if is_eager(v) then
    if v:device() ~= "cpu" then v = v:cpu() end
    if is_var then return core.no_grad(function() return v:detach():clone() end) end
    if v:needs_grad() then return v:detach() end
    return v
  end
  if type(v) == "number" or type(v) == "boolean" then return core.tensor(v) end
  return v
end

local function execute(self, plan, fed)
  local vals = {}
  for t, v in pairs(fed) do vals[t] = v end
  local gpu = self._gpu
  for _, node in ipairs(plan.order) do
    local kind = node.kind
    if kind == "Placeholder" then
      local t = node.outputs[1]
      local v = vals[t]
      if v == nil then
        fail("You must feed a value for placeholder tensor '%s' with dtype %s and shape %s",
          node.name, tostring(t._dtype), G.shape_str(t._shape))
      end
    elseif kind == "Variable" then
      local v = self._vars[node]
      if v == nil then fail("Attempting to use uninitialized value %s", node.name) end
      vals[node.outputs[1]] = v
    elseif kind == "Const" then
      vals[node.outputs[1]] = node.value
    else
      local iv = {}
      for i, t in ipairs(node.inputs) do iv[i] = vals[t] end
      if gpu then
        local dev = self._placed[node]
        for i, v in ipairs(iv) do
          if is_eager(v) and v:device() ~= dev then iv[i] = v:to(dev) end
        end
      end
      local outs = node.outputs
      if kind == "Stateful" then
        local r = table.pack(node.run(self, iv, vals))
        for i, o in ipairs(outs) do vals[o] = r[i] end
      elseif #outs == 1 then
        vals[outs[1]] = node.compute(iv)
      else
        local r = table.pack(node.compute(iv))
        for i, o in ipairs(outs) do vals[o] = r[i] end
      end
    end
  end
  return vals
end

-- sess:run(fetches [, feed]) -> the fetches' values, in the fetches' structure.
function Session:run(fetches, feed)
  if self._closed then fail("Attempted to use a closed Session.") end
  if fetches == nil then fail("run: nothing to fetch") end
  local leaves = {}
  local shape = flatten(self, fetches, leaves)
  local fed = read_feed(self, feed)
  local key = plan_key(leaves, fed)
  local plan = self._plans[key]
  if plan == nil then
    plan = make_plan(self, leaves, fed)
    self._plans[key] = plan
  end
  local prev = core.is_grad_enabled()
  core.set_grad_enabled(plan.needs_grad)
  local ok, vals = pcall(execute, self, plan, fed)
  core.set_grad_enabled(prev)
  if not ok then error(vals, 0) end
  local out = {}
  for i, f in ipairs(leaves) do
    if is_sym(f) then
      out[i] = to_result(vals[f], f._node.kind == "Variable")
    elseif getmetatable(f) == Op then
      out[i] = nil
    else
      out[i] = to_result(f)
    end
  end
  return rebuild(shape, out)
end

M.SessionClass = Session
return M
