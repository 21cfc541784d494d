-- moonflow/graph/session.lua — mf.Session and mf.InteractiveSession: run graphs built by
-- moonflow.graph. A session holds the values of the graph's variables (and the optimizers' slots);
-- sess:run(fetches [, feed]) executes only the nodes its fetches need, each once, in topological
-- order, and returns the same structure of eager CPU tensors (Lua strings for string tensors, nil
-- for operations). The plan of a fetch/feed-keys combination is worked out once (see "plans"):
-- a repeated run allocates no Lua tables but its results, drops each intermediate result when its
-- last reader has run (so the caching allocator hands its buffer to the next tensors), and
-- returns results that no later run changes.
--
-- Config (mf.Session{graph=, config={...}}): intra_op_parallelism_threads (mf.set_num_threads),
-- and the device fields (log_device_placement, allow_soft_placement, device_count, gpu_options:
-- graph/placement.lua, which checks the config and places each node).
local core = require "moonflow.core"
local G = require "moonflow.graph"
local placement = require "moonflow.graph.placement"

local M = {}
local is_sym = G.is_sym
local Sym, Op = G.Sym, G.Op

local TMT = debug.getregistry()["moonflow.Tensor"]
local function is_eager(v) return getmetatable(v) == TMT end
local is_grad_enabled, set_grad_enabled = core.is_grad_enabled, core.set_grad_enabled

local Session = { __name = "moonflow.Session" }
Session.__index = Session

local default_sessions = {}

function M.get_default_session() return default_sessions[#default_sessions] end

-- ---- construction -----------------------------------------------------------------------------

-- Checks the config's device fields (placement.lua). True when values may live on a GPU (the
-- machine has one, whatever device_count allows): runs then move each input to its node's device.
local function has_gpu(config)
  placement.configure(config)
  local cuda = rawget(core, "cuda")
  return cuda ~= nil and cuda.device_count() > 0
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
    _owned = setmetatable({}, { __mode = "k" }), _placed = {}, _closed = false,
    _gpu = has_gpu(config) }, Session)
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
  self._owned = setmetatable({}, { __mode = "k" })
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

-- Raises at the first caller outside this file and graph/init.lua (and past the pcall a run
-- executes in), so that the message names the user's line.
local function fail(fmt, ...)
  local level = 2
  while true do
    local info = debug.getinfo(level, "S")
    if not info or (info.source ~= THIS and info.source ~= GRAPH_SRC and info.what ~= "C") then break end
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
  if is_eager(v) then -- the value lives on the variable's device, where its optimizer updates it
    local dev = self:_place(node)
    if v:device() ~= dev then v = v:to(dev) end
  end
  v = as_leaf(v, node)
  self._vars[node] = v
  self._owned[v] = true
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
        local v = as_leaf(value, node)
        self._vars[node] = v
        self._owned[v] = true
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

-- ---- fetches ------------------------------------------------------------------------------------
--
-- A fetch structure is a graph leaf (a symbolic tensor, an operation, or the name of either), or a
-- table of leaves, tables and literal leaves (eager tensors, numbers, booleans: fetched as
-- themselves). A flat list of graph leaves (the common `{train_step, loss}`) is used as it is; any
-- other table is flattened into a list of leaves plus the structure to rebuild.

local SINGLE, LIST = {}, {} -- structure markers: one graph leaf; a flat list of graph leaves
local LITERAL, END = {}, {} -- plan-cache keys: a literal leaf; the plans below a path of leaves

local function is_graph_leaf(f)
  local mt = getmetatable(f)
  return mt == Sym or mt == Op or type(f) == "string"
end

local function flatten(f, leaves)
  if is_graph_leaf(f) or is_eager(f) or type(f) == "number" or type(f) == "boolean" then
    leaves[#leaves + 1] = f
    return { leaf = #leaves }
  end
  if type(f) == "table" and getmetatable(f) == nil then
    local s = { keys = {}, subs = {}, n = #f }
    for k, v in pairs(f) do
      s.keys[#s.keys + 1] = k
      s.subs[#s.subs + 1] = flatten(v, leaves)
    end
    return s
  end
  fail("run: cannot fetch a %s (fetch symbolic tensors, operations, eager tensors, or lists and " ..
    "tables of them)", type(f))
end

-- fetches (a table) -> leaves, structure
local function fetch_structure(f)
  if type(f) == "table" and getmetatable(f) == nil then
    local n, count = #f, 0
    for _ in next, f do count = count + 1 end
    if n > 0 and count == n then
      local flat = true
      for i = 1, n do
        if not is_graph_leaf(f[i]) then
          flat = false
          break
        end
      end
      if flat then return f, LIST end
    end
  end
  local leaves = {}
  return leaves, flatten(f, leaves)
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

-- ---- feeds --------------------------------------------------------------------------------------

local FLOATS = { float32 = true, float64 = true, float16 = true, bfloat16 = true }
local T = core.Tensor
local T_dtype, T_dim, T_size, T_device = T.dtype, T.dim, T.size, T.device
local T_needs_grad, T_detach, T_clone, T_shape = T.needs_grad, T.detach, T.clone, T.shape

local function bad_shape(e, vs)
  fail("Cannot feed value of shape %s for Tensor '%s', which has shape %s", G.shape_str(vs),
    e.sym.name, G.shape_str(e.sym._shape))
end

-- The value fed to e.sym (e: the plan's feed entry: sym, slot, dtype, rank, known = {dim, size,
-- ...}), converted to its dtype where that loses nothing; an error when it cannot match.
local function feed_value(e, v)
  local t, dtype = e.sym, e.dtype
  if dtype == "string" then
    if type(v) ~= "string" and type(v) ~= "table" then
      fail("Cannot feed a %s to the string tensor '%s'", is_eager(v) and "tensor" or type(v), t.name)
    end
    return v
  end
  if not is_eager(v) then
    if is_sym(v) then fail("The value of a feed cannot be a symbolic tensor (feeding '%s')", t.name) end
    if type(v) == "string" then
      fail("Cannot feed a string to tensor '%s' of dtype %s", t.name, tostring(dtype))
    end
    local ok, r = pcall(core.tensor, v, { dtype = dtype })
    if not ok then fail("Cannot feed %s to tensor '%s': %s", type(v), t.name, tostring(r)) end
    v = r
  elseif dtype then
    local vd = T_dtype(v)
    if vd ~= dtype then
      if FLOATS[dtype] and FLOATS[vd] then
        v = v:to(dtype)
      else
        fail("Cannot feed a %s tensor to tensor '%s' of dtype %s", vd, t.name, dtype)
      end
    end
  end
  local rank = e.rank
  if rank then
    if T_dim(v) ~= rank then bad_shape(e, T_shape(v)) end
    local known = e.known
    for j = 1, #known, 2 do
      if T_size(v, known[j]) ~= known[j + 1] then bad_shape(e, T_shape(v)) end
    end
  end
  return v
end

-- ---- placement --------------------------------------------------------------------------------

function Session:_place(node)
  local dev, err = placement.place(self, node)
  if not dev then fail("%s", err) end
  return dev
end

-- ---- plans --------------------------------------------------------------------------------------
--
-- A plan is what one (fetch leaves, feed keys) combination runs, worked out once and cached:
--   steps    the nodes the fetches need, in topological order, stopping at fed tensors; each step
--            { kind, node, ins = {slot, ...}, out = slot | outs = {slot, ...}, release = {slot,...} }
--   slots    every tensor of the plan has a slot, an index into the frame's value array; a step's
--            `release` lists the slots whose last reader it is, so an intermediate result is
--            dropped (and its buffer goes back to the caching allocator at the next collection) as
--            soon as nothing else in the run needs it; fetched and constant slots are kept
--   feeds    feed key -> { sym, slot, dtype, rank, known sizes } (keys as given: tensor or name)
--   leaves   per fetch leaf: its slot (false for an operation, nil for a literal) and whether its
--            value may share memory with session state (a variable, a constant, a view of them),
--            in which case the result is a copy, so that a fetched tensor keeps its value whatever
--            later runs do
--   frame    the value array and the steps' argument tables, reused by the next run of the plan
-- Plans are found through a tree keyed by the fetch leaves in order (self._plans), then by the
-- feed keys: no string is built and no table allocated to find the plan of a repeated run.

local VAR, ONE, MULTI, ST0, ST1, STN = 1, 2, 3, 4, 5, 6

-- op types whose result may be a view of (or the same tensor as) their first input
local VIEWS = { Reshape = true, transpose = true, Squeeze = true, ExpandDims = true, Flatten = true,
  Cast = true, Contiguous = true, Identity = true, Expand = true, ExpandAs = true, ViewAs = true,
  Narrow = true, Detach = true, Select = true, Index = true, dropout = true, Dropout = true,
  Unfold = true, Chunk = true, Split = true, Unbind = true, Float = true }

local function may_alias(node, memo)
  local r = memo[node]
  if r ~= nil then return r end
  r = false
  local kind = node.kind
  if kind == "Variable" or kind == "Const" or (kind == "Stateful" and not node.fresh_outputs) then
    r = true
  elseif kind == nil and VIEWS[node.type] then
    for _, t in ipairs(node.inputs) do
      if may_alias(t._node, memo) then
        r = true
        break
      end
    end
  end
  memo[node] = r
  return r
end

local function resolve(self, f, what)
  local g = self.graph
  if type(f) == "string" then
    local ok, t = pcall(g._by_any_name, g, f, 1)
    if not ok then fail("%s", t) end
    return t
  end
  if f.graph ~= g then
    fail("%s %s%s is not an element of this graph (it belongs to another mf.Graph)",
      is_sym(f) and "Tensor" or "Operation", f.name, what)
  end
  return f
end

local function new_frame(plan)
  local frame = { vals = {}, ivs = {}, out = {} }
  for i, st in ipairs(plan.steps) do frame.ivs[i] = st.kind ~= VAR and {} or false end
  for _, c in ipairs(plan.consts) do frame.vals[c[1]] = c[2] end
  return frame
end

function Session:_new_plan(leaves, feed)
  local g = self.graph
  -- feeds
  local feeds, nfeed, fed = {}, 0, {}
  local nslot, slot_of = 0, {}
  local function slot(t)
    local s = slot_of[t]
    if s == nil then
      nslot = nslot + 1
      s = nslot
      slot_of[t] = s
    end
    return s
  end
  if feed ~= nil then
    for k in pairs(feed) do
      local t = k
      if type(k) == "string" then t = resolve(self, k, "") end
      if not is_sym(t) then fail("run: feed keys must be placeholders (or tensor names), got %s", type(k)) end
      if t.graph ~= g then fail("Tensor %s, fed, is not an element of this graph", t.name) end
      local e = { sym = t, slot = slot(t), dtype = t._dtype }
      if t._shape ~= nil then
        e.rank, e.known = #t._shape, {}
        for d, n in ipairs(t._shape) do
          if n >= 0 then
            e.known[#e.known + 1] = d
            e.known[#e.known + 1] = n
          end
        end
      end
      feeds[k] = e
      fed[t] = true
      nfeed = nfeed + 1
    end
  end
  -- fetches
  local targets = {}
  for i = 1, #leaves do
    local f = leaves[i]
    if is_graph_leaf(f) then targets[i] = resolve(self, f, "") else targets[i] = LITERAL end
  end
  -- the nodes needed, in order
  local order, state, needs_grad = {}, {}, false
  local function visit(node)
    local s = state[node]
    if s == 2 then return end
    if s == 1 then fail("the graph has a cycle at %s", node.name) end
    state[node] = 1
    local all_fed = #node.outputs > 0
    for _, o in ipairs(node.outputs) do if not fed[o] then all_fed = false end end
    if not all_fed then
      if node.kind == "Placeholder" then
        local t = node.outputs[1]
        fail("You must feed a value for placeholder tensor '%s' with dtype %s and shape %s",
          node.name, tostring(t._dtype), G.shape_str(t._shape))
      end
      for _, t in ipairs(node.inputs) do visit(t._node) end
      for _, c in ipairs(node.control_inputs or {}) do visit(c) end
      order[#order + 1] = node
      if node.needs_grad then needs_grad = true end
    end
    state[node] = 2
  end
  for _, t in ipairs(targets) do
    if is_sym(t) then
      if not fed[t] then visit(t._node) end
    elseif getmetatable(t) == Op then
      visit(t._node)
    end
  end
  for _, node in ipairs(order) do self:_place(node) end
  -- steps and slots
  local steps, consts, is_const = {}, {}, {}
  for _, node in ipairs(order) do
    local kind = node.kind
    if kind == "Const" then
      local s = slot(node.outputs[1])
      consts[#consts + 1] = { s, node.value }
      is_const[s] = true
    else
      local st = { node = node, dev = self._placed[node] }
      if kind == "Variable" then
        st.kind, st.out = VAR, slot(node.outputs[1])
      else
        st.ins, st.outs = {}, {}
        for j, t in ipairs(node.inputs) do st.ins[j] = slot(t) end
        for j, t in ipairs(node.outputs) do
          if fed[t] then -- the fed value stands: this output goes to a slot of its own, unread
            nslot = nslot + 1
            st.outs[j] = nslot
          else
            st.outs[j] = slot(t)
          end
        end
        local nout = #st.outs
        if kind == "Stateful" then
          st.run = node.run
          st.kind = nout == 0 and ST0 or (nout == 1 and ST1 or STN)
        else
          st.compute = node.compute
          if st.dev ~= "cpu" and self.config.allow_soft_placement then
            st.compute = placement.soft_compute(self, node, st) -- CPU when the GPU lacks a kernel
          end
          st.kind = nout == 1 and ONE or MULTI
        end
        st.out = st.outs[1]
      end
      steps[#steps + 1] = st
    end
  end
  -- what each leaf returns
  local leaf_slot, leaf_copy, keep, memo = {}, {}, {}, {}
  for i, t in ipairs(targets) do
    if is_sym(t) then
      leaf_slot[i] = slot(t)
      keep[leaf_slot[i]] = true
      leaf_copy[i] = not fed[t] and may_alias(t._node, memo)
    elseif t ~= LITERAL then
      leaf_slot[i] = false
    end
  end
  -- releases: a slot goes after its last reader (or at once when nothing reads it)
  local last = {}
  for i, st in ipairs(steps) do
    if st.ins then for _, s in ipairs(st.ins) do last[s] = i end end
  end
  for i, st in ipairs(steps) do
    for _, s in ipairs(st.outs or { st.out }) do if last[s] == nil then last[s] = i end end
  end
  local released = {}
  for s, i in pairs(last) do
    if not keep[s] and not is_const[s] then
      local st = steps[i]
      st.release = st.release or {}
      st.release[#st.release + 1] = s
      released[s] = true
    end
  end
  local clear = {}
  for s = 1, nslot do if not released[s] and not is_const[s] then clear[#clear + 1] = s end end
  local const_set = {}
  -- the tensors and tables the run must copy, not hand out (a NaN number as a key failed:
  -- "table index is NaN" for mf.constant(0/0))
  for _, c in ipairs(consts) do
    if type(c[2]) == "userdata" or type(c[2]) == "table" then const_set[c[2]] = true end
  end
  local plan = { steps = steps, consts = consts, const_set = const_set, is_const = is_const, feeds = feeds, nfeed = nfeed,
    nleaves = #leaves, leaf_slot = leaf_slot, leaf_copy = leaf_copy, clear = clear,
    needs_grad = needs_grad }
  plan.frame = new_frame(plan)
  return plan
end

-- The cached plan for these leaves (a single leaf, or a list) and feed keys, or nil.
local function find_plan(self, single, leaves, feed)
  local node = self._plans
  if single ~= nil then
    node = node[single]
  else
    for i = 1, #leaves do
      local l = leaves[i]
      node = node[is_graph_leaf(l) and l or LITERAL]
      if node == nil then return nil end
    end
  end
  local cands = node and node[END]
  if cands == nil then return nil end
  for c = 1, #cands do
    local plan = cands[c]
    local feeds, n, ok = plan.feeds, 0, true
    if feed ~= nil then
      for k in next, feed do
        if feeds[k] == nil then
          ok = false
          break
        end
        n = n + 1
      end
    end
    if ok and n == plan.nfeed then return plan end
  end
  return nil
end

local function store_plan(self, leaves, plan)
  local node = self._plans
  for i = 1, #leaves do
    local l = leaves[i]
    local k = is_graph_leaf(l) and l or LITERAL
    local nx = node[k]
    if nx == nil then
      nx = {}
      node[k] = nx
    end
    node = nx
  end
  local cands = node[END] or {}
  node[END] = cands
  cands[#cands + 1] = plan
end

-- ---- run ----------------------------------------------------------------------------------------

local function copy_strings(v)
  if type(v) ~= "table" then return v end
  local r = {}
  for i, x in ipairs(v) do r[i] = copy_strings(x) end
  return r
end

-- A fetched value as the caller gets it: an eager CPU tensor that no later run changes (a copy
-- when it may be session state), a Lua string or table of strings.
local function to_result(self, plan, v, copy)
  if getmetatable(v) == TMT then
    if self._gpu and T_device(v) ~= "cpu" then return T_detach(v:cpu()) end
    if copy or self._owned[v] or plan.const_set[v] then return T_clone(T_detach(v)) end
    if T_needs_grad(v) then return T_detach(v) end
    return v
  end
  if type(v) == "number" or type(v) == "boolean" then return core.tensor(v) end
  if type(v) == "table" and (copy or plan.const_set[v]) then return copy_strings(v) end
  return v
end

-- Runs the plan's steps in the frame and returns the results in the fetches' structure.
local function execute(self, plan, frame, feed, shape, leaves)
  local vals = frame.vals
  if feed ~= nil then
    local feeds = plan.feeds
    for k, v in next, feed do
      local e = feeds[k]
      vals[e.slot] = feed_value(e, v)
    end
  end
  local vars, gpu, ivs = self._vars, self._gpu, frame.ivs
  local steps = plan.steps
  for i = 1, #steps do
    local st = steps[i]
    local kind = st.kind
    if kind == VAR then
      local v = vars[st.node]
      if v == nil then fail("Attempting to use uninitialized value %s", st.node.name) end
      vals[st.out] = v
    else
      local iv, ins = ivs[i], st.ins
      local nin = #ins
      for j = 1, nin do iv[j] = vals[ins[j]] end
      if gpu then
        local dev = st.dev
        for j = 1, nin do
          local v = iv[j]
          if is_eager(v) and T_device(v) ~= dev then iv[j] = v:to(dev) end
        end
      end
      if kind == ONE then
        vals[st.out] = st.compute(iv)
      elseif kind == ST0 then
        st.run(self, iv)
      elseif kind == ST1 then
        vals[st.out] = st.run(self, iv)
      else
        local r
        if kind == MULTI then r = table.pack(st.compute(iv)) else r = table.pack(st.run(self, iv)) end
        local outs = st.outs
        for j = 1, #outs do vals[outs[j]] = r[j] end
      end
      for j = 1, nin do iv[j] = nil end
    end
    local rel = st.release
    if rel then for j = 1, #rel do vals[rel[j]] = nil end end
  end
  -- results
  local ls, lc = plan.leaf_slot, plan.leaf_copy
  if shape == SINGLE then
    local s = ls[1]
    if s == false then return nil end
    return to_result(self, plan, vals[s], lc[1])
  end
  local out, n = frame.out, plan.nleaves
  for i = 1, n do
    local s = ls[i]
    if s == nil then
      out[i] = to_result(self, plan, leaves[i], false)
    elseif s == false then
      out[i] = nil
    else
      out[i] = to_result(self, plan, vals[s], lc[i])
    end
  end
  local r
  if shape == LIST then
    r = table.pack(table.unpack(out, 1, n))
    r.n = nil
  else
    r = rebuild(shape, out)
  end
  for i = 1, n do out[i] = nil end
  return r
end

-- sess:run(fetches [, feed]) -> the fetches' values, in the fetches' structure.
function Session:run(fetches, feed)
  if self._closed then fail("Attempted to use a closed Session.") end
  if fetches == nil then fail("run: nothing to fetch") end
  if feed ~= nil and type(feed) ~= "table" then fail("run: feed must be a table {[placeholder] = value, ...}") end
  local leaves, shape
  if is_graph_leaf(fetches) then
    shape = SINGLE
  else
    leaves, shape = fetch_structure(fetches)
  end
  local plan = find_plan(self, shape == SINGLE and fetches or nil, leaves, feed)
  if plan == nil then
    leaves = leaves or { fetches }
    plan = self:_new_plan(leaves, feed)
    store_plan(self, leaves, plan)
  end
  local frame = plan.frame
  if frame.busy then frame = new_frame(plan) end -- a run of the same plan from inside this one
  frame.busy = true
  local prev = is_grad_enabled()
  if prev ~= plan.needs_grad then set_grad_enabled(plan.needs_grad) end
  local ok, res = pcall(execute, self, plan, frame, feed, shape, leaves)
  set_grad_enabled(prev)
  -- nothing of this run stays reachable from the plan: values, arguments, results
  local vals = frame.vals
  local clear = plan.clear
  for i = 1, #clear do vals[clear[i]] = nil end
  if not ok then -- stopped part way: drop whatever it left
    local is_const = plan.is_const
    for s in pairs(vals) do if not is_const[s] then vals[s] = nil end end
    for i, st in ipairs(plan.steps) do
      local iv = frame.ivs[i]
      if iv then for j = 1, #st.ins do iv[j] = nil end end
    end
    for k in pairs(frame.out) do frame.out[k] = nil end
  end
  frame.busy = false
  if not ok then error(res, 0) end
  return res
end

M.SessionClass = Session
return M
