-- moonflow/nn/module.lua — the base of every layer: classes (nn.class), Module (parameters,
-- buffers, children, train/evaluate, to, zero_grad, state_dict, printing, summary), nn.Parameter
-- and the Sequential container. Modelled on Torch7's nn.Module with PyTorch's API.
--
-- A module keeps its parameters, buffers and children as plain fields (`lin.weight`, `net.fc1`);
-- their *names* are registered in order, so traversals (parameters(), state_dict(), printing) see
-- them in the order they were added. In a module's __init, assigning a module to a field
-- (`self.fc1 = nn.Linear(4, 2)`) registers it as a child, and assigning `nn.Parameter(t)`
-- registers a parameter, as in PyTorch; register_parameter/register_buffer/add_module do it
-- explicitly.
--
-- Names: children of a Sequential are "1", "2", ... (1-based), so a state_dict has "1.weight".
local mf = require "moonflow"

local M = {}

local is_tensor = mf.is_tensor

local function shape_str(shape)
  if shape == nil then return "unknown" end -- a symbolic tensor's shape not known yet
  if #shape == 0 then return "scalar" end
  return table.concat(shape, "x")
end
M.shape_str = shape_str

-- 1234567 -> "1,234,567"
local function commas(n)
  local s = tostring(math.tointeger(n) or n)
  local k
  repeat s, k = s:gsub("^(-?%d+)(%d%d%d)", "%1,%2") until k == 0
  return s
end
M.commas = commas

-- ---- classes ---------------------------------------------------------------------------------
-- Metamethods are looked up raw in an instance's metatable (its class), so each class copies its
-- parent's; a class may redefine them after nn.class returns.
local inherited = { "__index", "__newindex", "__call", "__tostring", "__len" }

local function is_module(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  return type(mt) == "table" and rawget(mt, "__is_module") == true
end
M.is_module = is_module

-- nn.class(name [, parent = nn.Module]) -> class. Instances: cls(...) makes one and calls
-- self:__init(...) (the registries are set up before, so calling the parent's __init is optional).
function M.class(name, parent)
  if type(name) ~= "string" then
    error("nn.class: the class name must be a string, got " .. type(name), 2)
  end
  if parent ~= nil and not (type(parent) == "table" and rawget(parent, "__is_module") == true) then
    -- any other parent (an instance too: m:extend(name)) made a class whose instances had no
    -- __init ("attempt to call a nil value")
    error("nn.class: the parent must be a module class such as nn.Module, got " ..
      (is_module(parent) and "an instance of " .. tostring(getmetatable(parent).__typename) or
        mf.is_tensor(parent) and "a tensor" or type(parent)), 2)
  end
  parent = parent or M.Module
  local cls = { __typename = name, __is_module = true }
  if parent then
    for _, k in ipairs(inherited) do
      if rawget(cls, k) == nil then cls[k] = rawget(parent, k) end
    end
  end
  return setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local self = setmetatable({}, c)
      rawset(self, "_params", {})
      rawset(self, "_buffers", {})
      rawset(self, "_children", {})
      rawset(self, "training", true)
      self:__init(...)
      return self
    end,
    __tostring = function() return name end,
  })
end

local Module = M.class("nn.Module")
M.Module = Module

-- Looks methods up in the class chain; an integer key gives the i-th child (seq[i]).
function Module.__index(self, k)
  local v = getmetatable(self)[k]
  if v ~= nil or math.type(k) ~= "integer" then return v end
  local kids = self:named_children()
  if k < 0 then k = #kids + k + 1 end
  return kids[k] and kids[k][2]
end

-- nn.Parameter(t): t marked as requiring grad; assigned to a module field, it is registered.
local marked = setmetatable({}, { __mode = "k" })
function M.Parameter(t)
  if not is_tensor(t) then t = mf.tensor(t) end
  if not t:needs_grad() then t:requires_grad() end
  marked[t] = true
  return t
end

local function add_name(list, name)
  for _, n in ipairs(list) do if n == name then return end end
  list[#list + 1] = name
end

-- A module made a child of itself or of one of its descendants is a cycle: printing, forward and
-- the traversals that follow children recursed without end (a Sequential added to itself took
-- seconds and gigabytes to print). Refused where a child is added.
local function contains(m, target, seen)
  if m == target then return true end
  if seen[m] then return false end
  seen[m] = true
  for _, nm in ipairs(m:named_children()) do
    if contains(nm[2], target, seen) then return true end
  end
  return false
end
local function check_acyclic(fname, self, child)
  if contains(child, self, {}) then
    error(fname .. ": a module cannot be its own child or descendant (a cycle)", 3)
  end
end

function Module.__newindex(self, k, v)
  if type(k) == "string" then
    if is_module(v) then
      check_acyclic("nn", self, v)
      add_name(rawget(self, "_children"), k)
    elseif is_tensor(v) and marked[v] then add_name(rawget(self, "_params"), k) end
  end
  rawset(self, k, v)
end

-- m(x) = m:forward(x); remembers the output's shape for printing (and, inside summary, the
-- order in which the modules ran).
function Module.__call(self, ...)
  local y = self:forward(...)
  local shape = is_tensor(y) and y:shape() or nil
  rawset(self, "_output_shape", shape)
  if M.recording then
    local r = M.recording
    r[#r + 1] = { self, shape }
  end
  return y
end

function Module:__init() end

function Module:forward()
  error(tostring(self.__typename) .. ": forward is not implemented", 2)
end

-- Module:extend(name) -> a subclass (same as nn.class(name, self)).
function Module:extend(name) return M.class(name, self) end

-- ---- registration -------------------------------------------------------------------------------

-- A parameter's, buffer's or child's name: a non-empty string (it becomes a field and a key of
-- state_dict; a number, NaN or nil made a field the traversals could not use).
local function check_name(fname, name)
  if type(name) ~= "string" or name == "" then
    error(("%s: the name must be a non-empty string, got %s"):format(fname,
      type(name) == "string" and "an empty string" or type(name)), 3)
  end
end

-- an eager tensor (symbolic tensors are tables; modules hold eager ones)
local function is_eager(v) return type(v) == "userdata" and is_tensor(v) end

-- register_parameter(name, t | nil): t (float) becomes a leaf that requires grad.
function Module:register_parameter(name, t)
  check_name("register_parameter", name)
  if t ~= nil then
    if not is_eager(t) then
      error("register_parameter: '" .. name .. "' is not a tensor (got " .. type(t) .. ")", 2)
    end
    if not t:needs_grad() then t:requires_grad() end
    add_name(self._params, name)
  end
  rawset(self, name, t)
  return t
end

-- register_buffer(name, t): state that is saved but not trained (BatchNorm's running stats).
function Module:register_buffer(name, t)
  check_name("register_buffer", name)
  if t ~= nil then
    if not is_eager(t) then
      error("register_buffer: '" .. name .. "' is not a tensor (got " .. type(t) .. ")", 2)
    end
    add_name(self._buffers, name)
  end
  rawset(self, name, t)
  return t
end

function Module:add_module(name, m)
  check_name("add_module", name)
  if not is_module(m) then error("add_module: '" .. tostring(name) .. "' is not a module", 2) end
  check_acyclic("add_module", self, m)
  add_name(self._children, name)
  rawset(self, name, m)
  return self
end

-- ---- traversal ----------------------------------------------------------------------------------

-- {{name, module}, ...}: the direct children, in order.
function Module:named_children()
  local out = {}
  for _, n in ipairs(self._children) do
    local m = rawget(self, n)
    if m ~= nil then out[#out + 1] = { n, m } end
  end
  return out
end

function Module:children()
  local out = {}
  for i, nm in ipairs(self:named_children()) do out[i] = nm[2] end
  return out
end

-- {{name, module}, ...}: self (name prefix, default "") and every descendant, depth first.
local function walk_modules(m, prefix, out, seen)
  if seen[m] then return end
  seen[m] = true
  out[#out + 1] = { prefix, m }
  for _, nm in ipairs(m:named_children()) do
    walk_modules(nm[2], prefix == "" and nm[1] or prefix .. "." .. nm[1], out, seen)
  end
end

function Module:named_modules(prefix)
  if prefix ~= nil and type(prefix) ~= "string" then
    error("named_modules: the prefix must be a string, got " .. type(prefix), 2)
  end
  local out = {}
  walk_modules(self, prefix or "", out, {})
  return out
end

function Module:modules()
  local out = {}
  for i, nm in ipairs(self:named_modules()) do out[i] = nm[2] end
  return out
end

local function named_tensors(self, field)
  local out, seen = {}, {}
  for _, nm in ipairs(self:named_modules()) do
    local prefix, m = nm[1], nm[2]
    for _, n in ipairs(m[field]) do
      local t = rawget(m, n)
      if t ~= nil and not seen[t] then
        seen[t] = true
        out[#out + 1] = { prefix == "" and n or prefix .. "." .. n, t }
      end
    end
  end
  return out
end

-- named_parameters() -> {{"1.weight", w}, {"1.bias", b}, ...}: an ordered list of {name, tensor}
-- pairs (a parameter shared by two modules appears once). Iterate with
--   for _, np in ipairs(m:named_parameters()) do local name, p = np[1], np[2] ... end
function Module:named_parameters() return named_tensors(self, "_params") end
function Module:named_buffers() return named_tensors(self, "_buffers") end

-- parameters() -> {w, b, ...}: the trainable tensors, in order (what an optimizer takes).
function Module:parameters()
  local out = {}
  for i, np in ipairs(self:named_parameters()) do out[i] = np[2] end
  return out
end

function Module:buffers()
  local out = {}
  for i, nb in ipairs(self:named_buffers()) do out[i] = nb[2] end
  return out
end

-- The number of parameter elements.
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

-- ---- modes, devices, gradients ----------------------------------------------------------------

-- train([mode = true]): training mode for self and every descendant (Dropout drops, BatchNorm
-- uses batch statistics). Returns self.
function Module:train(mode)
  if mode == nil then mode = true end
  for _, m in ipairs(self:modules()) do rawset(m, "training", mode and true or false) end
  return self
end

-- evaluate() (also eval()): evaluation mode (Dropout is the identity, BatchNorm uses its running
-- statistics). Returns self.
function Module:evaluate() return self:train(false) end
Module.eval = Module.evaluate

local float_dtypes = { float32 = true, float = true, float64 = true, double = true,
  float16 = true, half = true, bfloat16 = true }
local other_dtypes = { int32 = true, int = true, int64 = true, long = true, uint8 = true,
  byte = true, bool = true }

-- to(device | dtype): moves (or converts) every parameter and float buffer, in place in the
-- module: parameters are replaced by new leaves, so build optimizers after calling it. Returns self.
function Module:to(spec)
  local is_dtype = float_dtypes[spec]
  if other_dtypes[spec] then
    error("to: modules hold float tensors; cannot convert them to " .. spec, 2)
  end
  local done = {} -- old -> new, so that shared tensors stay shared
  mf.no_grad(function()
    for _, m in ipairs(self:modules()) do
      for _, n in ipairs(m._params) do
        local p = rawget(m, n)
        if p ~= nil then
          local q = done[p]
          if not q then
            q = p:to(spec)
            if q ~= p then
              q:requires_grad()
              if marked[p] then marked[q] = true end
            end
            done[p] = q
          end
          rawset(m, n, q)
        end
      end
      for _, n in ipairs(m._buffers) do
        local b = rawget(m, n)
        if b ~= nil and (not is_dtype or b:is_floating_point()) then
          done[b] = done[b] or b:to(spec)
          rawset(m, n, done[b])
        end
      end
    end
  end)
  return self
end

function Module:float() return self:to("float32") end
function Module:double() return self:to("float64") end
function Module:cuda() return self:to("cuda:0") end
function Module:cpu() return self:to("cpu") end

-- zero_grad(): clears every parameter's accumulated gradient (sets it to nil, as PyTorch does).
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p.grad = nil end
  return self
end

-- ---- state ------------------------------------------------------------------------------------

-- state_dict() -> {["1.weight"] = w, ["3.running_mean"] = rm, ...}: parameters (detached views
-- sharing storage) and buffers by name; mf.save(path, m:state_dict()) writes it.
function Module:state_dict()
  local d = {}
  for _, np in ipairs(self:named_parameters()) do d[np[1]] = np[2]:detach() end
  for _, nb in ipairs(self:named_buffers()) do d[nb[1]] = nb[2] end
  return d
end

-- load_state_dict(d [, strict = true]): copies d's values into the parameters and buffers (values
-- are converted to their dtype and device). Missing or unexpected names are errors when strict;
-- otherwise they come back as {missing = {...}, unexpected = {...}}. Shapes must match.
function Module:load_state_dict(d, strict)
  if type(d) ~= "table" then error("load_state_dict: expected a table of named tensors", 2) end
  if strict == nil then strict = true end
  local targets, order = {}, {}
  for _, list in ipairs { self:named_parameters(), self:named_buffers() } do
    for _, nt in ipairs(list) do
      targets[nt[1]] = nt[2]
      order[#order + 1] = nt[1]
    end
  end
  local missing, unexpected = {}, {}
  for _, n in ipairs(order) do if d[n] == nil then missing[#missing + 1] = n end end
  for n in pairs(d) do if targets[n] == nil then unexpected[#unexpected + 1] = tostring(n) end end
  table.sort(unexpected)
  if strict and (#missing > 0 or #unexpected > 0) then
    local parts = {}
    if #missing > 0 then parts[#parts + 1] = "missing " .. table.concat(missing, ", ") end
    if #unexpected > 0 then parts[#parts + 1] = "unexpected " .. table.concat(unexpected, ", ") end
    error("load_state_dict: the names do not match the model's: " .. table.concat(parts, "; "), 2)
  end
  local srcs = {}
  for _, n in ipairs(order) do
    local src = d[n]
    if src ~= nil then
      if not is_tensor(src) then src = mf.tensor(src) end
      local ss, ds = shape_str(src:shape()), shape_str(targets[n]:shape())
      if ss ~= ds then
        error(("load_state_dict: size mismatch for %s: the state has %s, the model %s"):format(
          n, ss, ds), 2)
      end
      srcs[n] = src
    end
  end
  mf.no_grad(function()
    for n, src in pairs(srcs) do targets[n]:copy_(src) end
  end)
  return { missing = missing, unexpected = unexpected }
end

-- ---- printing ---------------------------------------------------------------------------------

-- The one-line description of a module ("nn.Linear(784 -> 10)"); layers override __repr.
function Module:__repr() return tostring(self.__typename) end

local function param_text(m)
  local parts, n = {}, 0
  for _, name in ipairs(m._params) do
    local p = rawget(m, name)
    if p ~= nil and p:is_closed() then -- printing never fails: a closed tensor says so
      parts[#parts + 1] = name .. " (closed)"
    elseif p ~= nil then
      parts[#parts + 1] = name .. " " .. shape_str(p:shape())
      n = n + p:numel()
    end
  end
  if #parts == 0 then return "" end
  return "  [" .. table.concat(parts, ", ") .. "; " .. commas(n) .. " params]"
end

local function describe(m, indent)
  local kids = m:named_children()
  local out_shape = rawget(m, "_output_shape")
  local head = m:__repr() .. param_text(m) .. (out_shape and ("  -> " .. shape_str(out_shape)) or "")
  if #kids == 0 then return head end
  local lines = { head .. " {" }
  for _, nm in ipairs(kids) do
    lines[#lines + 1] = indent .. "  (" .. nm[1] .. "): " .. describe(nm[2], indent .. "  ")
  end
  lines[#lines + 1] = indent .. "}"
  return table.concat(lines, "\n")
end

-- tostring(m): each layer with its parameter shapes and counts (and its output shape at the last
-- call, after m(x) or m:summary(shape)), then the total:
--   nn.Sequential {
--     (1): nn.Linear(784 -> 10)  [weight 10x784, bias 10; 7,850 params]
--     (2): nn.LogSoftmax(dim=-1)
--   }
--   Total parameters: 7,850
function Module:__tostring()
  local text = describe(self, "")
  if #self:named_children() > 0 then
    local n = 0
    for _, p in ipairs(self:parameters()) do n = n + (p:is_closed() and 0 or p:numel()) end
    text = text .. "\nTotal parameters: " .. commas(n)
  end
  return text
end

-- ---- summary ---------------------------------------------------------------------------------

-- Runs m on zeros of `shape` (a table with the batch dimension, e.g. {1, 784}) without gradients
-- and in evaluation mode (the modes are restored after), recording every layer's output shape.
-- Returns the input shape and a list of {module, output shape} in call order (leaves only).
local function trace(self, shape, opts, fname)
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), 3)
  end
  if type(shape) ~= "table" or getmetatable(shape) ~= nil then -- (a symbolic tensor is a table)
    error(("%s: the input shape must be a table of sizes such as {1, 784}, got %s"):format(fname,
      mf.is_tensor(shape) and "a tensor" or type(shape)), 3)
  end
  local p = self:parameters()[1]
  local dtype = opts and opts.dtype or (p and p:dtype()) or "float32"
  local device = opts and opts.device or (p and p:device()) or nil
  local x = mf.zeros(shape, { dtype = dtype, device = device })
  local modes = {}
  for _, m in ipairs(self:modules()) do modes[m] = m.training end
  self:evaluate()
  local rec = {}
  M.recording = rec
  local ok, err = pcall(mf.no_grad, function() return self(x) end)
  M.recording = nil
  for m, mode in pairs(modes) do rawset(m, "training", mode) end
  if not ok then error(err, 0) end
  local leaves = {}
  for _, r in ipairs(rec) do
    if #r[1]:named_children() == 0 then leaves[#leaves + 1] = r end
  end
  return x:shape(), leaves
end

-- shape_chain(shape) -> "1x784 → 1x28x28x1 → ... → 1x10": the input shape, then the shape after
-- each layer that changes it. A Flatten or Reshape right before a Linear is folded into the
-- Linear (as in TensorFlow's tutorials, where the reshape is part of the fully connected layer).
function Module:shape_chain(shape, opts)
  local in_shape, leaves = trace(self, shape, opts, "shape_chain")
  local chain = { shape_str(in_shape) }
  for i, r in ipairs(leaves) do
    local nxt = leaves[i + 1]
    local fold = r[1].__folds_into_linear and nxt and nxt[1].__typename == "nn.Linear"
    local s = r[2] and shape_str(r[2])
    if s and not fold and s ~= chain[#chain] then chain[#chain + 1] = s end
  end
  return table.concat(chain, " → ")
end

-- summary(shape [, {dtype=, device=}]) -> text: a table of the layers run on an input of `shape`
-- (batch dimension included) with each one's output shape and parameter count, the total, and the
-- shape chain. print(m:summary{1, 784}).
function Module:summary(shape, opts)
  local in_shape, leaves = trace(self, shape, opts, "summary")
  local names = {}
  for _, nm in ipairs(self:named_modules()) do names[nm[2]] = nm[1] end
  local rows, w1, w2 = {}, 5, 12
  for _, r in ipairs(leaves) do
    local m = r[1]
    local n = 0
    for _, pn in ipairs(m._params) do
      local p = rawget(m, pn)
      if p then n = n + p:numel() end
    end
    local label = (names[m] and names[m] ~= "" and "(" .. names[m] .. ") " or "") .. m:__repr()
    local row = { label, r[2] and shape_str(r[2]) or "-", commas(n) }
    w1, w2 = math.max(w1, #row[1]), math.max(w2, #row[2])
    rows[#rows + 1] = row
  end
  local fmt = "%-" .. w1 .. "s  %-" .. w2 .. "s  %s"
  local lines = { fmt:format("Layer", "Output shape", "Params"), fmt:format("input", shape_str(in_shape), "") }
  for _, row in ipairs(rows) do lines[#lines + 1] = fmt:format(row[1], row[2], row[3]) end
  lines[#lines + 1] = "Total parameters: " .. commas(self:num_parameters())
  lines[#lines + 1] = "Shapes: " .. self:shape_chain(shape, opts)
  return table.concat(lines, "\n")
end

-- to_dot(shape [, opts]) -> Graphviz DOT text of the layers run on zeros of `shape` (as summary);
-- render(path, shape [, opts]) -> path: an .svg/.png/.pdf of it drawn by Graphviz. See
-- moonflow/graph/dot.lua.
function Module:to_dot(shape, opts) return require("moonflow.graph.dot").module_to_dot(self, shape, opts) end
function Module:render(path, shape, opts)
  return require("moonflow.graph.dot").render_module(self, path, shape, opts)
end

-- ---- Sequential ---------------------------------------------------------------------------------

-- Sequential{m1, m2, ...} (or Sequential(m1, m2, ...)): applies its modules in turn.
-- seq:add(m) appends, seq[i] is the i-th module (negative from the end), #seq their number.
local Sequential = M.class("nn.Sequential", Module)
M.Sequential = Sequential

function Sequential:__init(...)
  rawset(self, "_list", {})
  local list = { ... }
  if #list == 1 and type(list[1]) == "table" and not is_module(list[1]) then list = list[1] end
  for i, m in ipairs(list) do
    if not is_module(m) then
      error(("Sequential: entry %d is a %s, not a module"):format(i, type(m)), 3)
    end
    self:add(m)
  end
end

function Sequential:add(m)
  if not is_module(m) then error("Sequential:add: expected a module, got " .. type(m), 2) end
  check_acyclic("Sequential:add", self, m)
  local mods = rawget(self, "_list")
  mods[#mods + 1] = m
  return self
end

function Sequential:named_children()
  local out = {}
  for i, m in ipairs(rawget(self, "_list")) do out[i] = { tostring(i), m } end
  return out
end

function Sequential.__len(self) return #rawget(self, "_list") end

function Sequential:forward(x)
  for _, m in ipairs(rawget(self, "_list")) do x = m(x) end
  return x
end

return M
