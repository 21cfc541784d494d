-- moonflow/saver.lua — mf.train.Saver and mf.train.latest_checkpoint: TensorFlow-style checkpoints
-- of a Session (its graph's variables and the mf.train optimizers' slots) or of an eager module
-- (its state_dict and, given one, an mf.optim optimizer's state), with the global step, the random
-- generator's state and any extra objects' state (a DataSet's place in its epochs), so that a run
-- restored from a checkpoint continues bit for bit as if it had never stopped.
--
--   local saver = mf.train.Saver{ max_to_keep = 5, optimizer = adam, extra = { train = ds } }
--   saver:save(model, "ckpt/model.ckpt", { global_step = 1000 })  -- -> "ckpt/model.ckpt-1000"
--   local step = saver:restore(model, mf.train.latest_checkpoint("ckpt"))
--
-- Files: the checkpoint "<prefix>-<step>" is ONE safetensors file "<prefix>-<step>.safetensors",
-- written atomically by mf.save (temporary file, fsync, rename). Its tensors: the variables by
-- name (a Session's Variable names, e.g. "W_conv1", and the module buffers its graph's nodes update
-- as "<node>/<buffer>", e.g. "BatchNorm/running_mean"; a module's state_dict names, e.g.
-- "1.weight"); a Session optimizer's slots as "<variable>/<optimizer op>/<slot>" ("W/Adam/m");
-- an eager optimizer's state as "optimizer/state/<i>/<key>" (parameters numbered as in
-- opt:state_dict()); extra state as "extra/<name>/<key>". Its __metadata__: format =
-- "moonflow.checkpoint", version = "1", global_step, rng = "[seed, offset]", variables (a JSON
-- list of the variable names), optimizer (JSON: class and param_groups), scalars (JSON: the
-- numbers and booleans of the slot/state/extra tables, by the same "<base>" names).
-- Then the text index "checkpoint" in the prefix's folder, in TensorFlow's format
--   model_checkpoint_path: "model.ckpt-1000"
--   all_model_checkpoint_paths: "model.ckpt-900"
--   all_model_checkpoint_paths: "model.ckpt-1000"
-- (paths relative to the folder), replaced atomically (temporary file + rename) only once the data
-- file is in place; checkpoints beyond max_to_keep are deleted after that. A process killed while
-- saving leaves at most a "*.tmp.*" file beside the checkpoints, which the index never names.
local core = require "moonflow.core"
local G = require "moonflow.graph"
local json = require "moonflow.saver_json"

local fail = require("moonflow.util").errors(debug.getinfo(1, "S").source)
local is_tensor, is_sym = core.is_tensor, G.is_sym

local M = {}
local FORMAT, VERSION, EXT, INDEX = "moonflow.checkpoint", "1", ".safetensors", "checkpoint"

local function shape_str(t)
  local s = t:shape()
  return #s == 0 and "scalar" or table.concat(s, "x")
end

-- The shape of a tensor, or of a symbolic tensor when fully known, as "3x4"; nil otherwise.
local function known_shape(t)
  if is_tensor(t) then return shape_str(t) end
  local s = is_sym(t) and t._shape
  if type(s) ~= "table" then return nil end
  for _, d in ipairs(s) do
    if math.type(d) ~= "integer" or d < 0 then return nil end
  end
  return #s == 0 and "scalar" or table.concat(s, "x")
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- "dir/model.ckpt" -> "dir", "model.ckpt"; "model.ckpt" -> ".", "model.ckpt".
local function split_path(p)
  local dir, base = p:match("^(.*)/([^/]*)$")
  if dir == nil then return ".", p end
  return dir == "" and "/" or dir, base
end

local function join(dir, name)
  if name:sub(1, 1) == "/" then return name end
  return dir:sub(-1) == "/" and dir .. name or dir .. "/" .. name
end

-- ---- what is saved: the targets ------------------------------------------------------------------

local function is_session(x)
  return type(x) == "table" and type(x._vars) == "table" and type(x.run) == "function"
    and x.graph ~= nil
end

local function is_module(x)
  return type(x) == "table" and type(x.state_dict) == "function"
    and type(x.load_state_dict) == "function"
end

-- The variables of a session as { names = {...}, [name] = {node=, sym=|tensor=} } in the saving
-- order: var_list (a list of Variables, or a table name -> Variable/eager parameter), by default
-- the graph's global variables, the eager parameters (requiring grad) held by its Const nodes and
-- the module buffers its nodes update (node.buffers: BatchNorm's running statistics).
local function session_vars(sess, var_list, what)
  local g = sess.graph
  local vars = { names = {} }
  local function add(name, entry)
    if vars[name] ~= nil then fail("%s: two variables are named '%s'", what, name) end
    vars[name] = entry
    vars.names[#vars.names + 1] = name
  end
  local const_name = {}
  for _, node in ipairs(g._nodes) do
    if node.kind == "Const" and is_tensor(node.value) and const_name[node.value] == nil then
      const_name[node.value] = node.name
    end
  end
  local function entry_of(v, where)
    if is_sym(v) then
      if v._node.kind ~= "Variable" then fail("%s: %s is %s, not a Variable", what, where, v.name) end
      if v.graph ~= g then fail("%s: %s (%s) is not in the session's graph", what, where, v.name) end
      return { node = v._node }
    elseif is_tensor(v) then
      return { tensor = v }
    end
    fail("%s: %s is a %s, expected a Variable or a tensor", what, where, type(v))
  end
  if var_list == nil then
    for _, v in ipairs(G.global_variables(g)) do add(v._node.name, { node = v._node }) end
    for _, node in ipairs(g._nodes) do
      local t = node.value
      if node.kind == "Const" and is_tensor(t) and t:needs_grad() and const_name[t] == node.name then
        add(node.name, { tensor = t })
      end
    end
    -- module buffers that nodes update (a graph BatchNorm's running statistics), by the first
    -- node holding each: "<node>/<buffer>"
    local seen = {}
    for _, node in ipairs(g._nodes) do
      if type(node.buffers) == "table" then
        for _, k in ipairs(sorted_keys(node.buffers)) do
          local t = node.buffers[k]
          if is_tensor(t) and not seen[t] then
            seen[t] = true
            add(node.name .. "/" .. k, { tensor = t })
          end
        end
      end
    end
  elseif #var_list > 0 then
    for i, v in ipairs(var_list) do
      local e = entry_of(v, "var_list[" .. i .. "]")
      local name = e.node and e.node.name or const_name[v]
      if name == nil then
        fail("%s: var_list[%d] is a tensor the graph does not hold; give var_list as a table "
          .. "name -> tensor", what, i)
      end
      add(name, e)
    end
  else
    for _, name in ipairs(sorted_keys(var_list)) do
      if type(name) ~= "string" then fail("%s: var_list keys must be strings", what) end
      add(name, entry_of(var_list[name], "var_list." .. name))
    end
  end
  return vars
end

-- The tensor that holds a session variable's value (nil when uninitialized).
local function session_value(sess, e)
  if e.tensor then return e.tensor end
  return sess._vars[e.node]
end

-- A module's (or a name -> tensor table's) variables, same shape as session_vars.
local function module_vars(target, var_list, what)
  local src = var_list or target
  local d
  if is_module(src) then
    d = src:state_dict()
  elseif type(src) == "table" and not is_tensor(src) then
    d = src
  else
    fail("%s: expected a Session, an nn module or a table name -> tensor, got %s", what,
      is_tensor(src) and "a tensor" or type(src))
  end
  local vars = { names = sorted_keys(d) }
  for _, name in ipairs(vars.names) do
    if type(name) ~= "string" or not is_tensor(d[name]) then
      fail("%s: entry '%s' of the variables is a %s, expected a tensor", what, tostring(name),
        type(d[name]))
    end
    vars[name] = { tensor = d[name] }
  end
  return vars
end

-- The mf.train optimizer ops of a graph: { {name=, optimizer=, var_list=}, ... }.
local function optimizer_ops(g)
  local ops = {}
  for _, node in ipairs(g._nodes) do
    if node.kind == "Stateful" and node.optimizer ~= nil and type(node.var_list) == "table" then
      ops[#ops + 1] = node
    end
  end
  return ops
end

-- ---- gathering a checkpoint ----------------------------------------------------------------------

-- A state table's tensors go under "<base>/<key>", its numbers, booleans and strings into
-- scalars[base][key] (an entry, empty or not, for every base: get_state finds what was saved).
local function put_state(ck, base, st, what)
  ck.scalars[base] = ck.scalars[base] or {}
  for _, k in ipairs(sorted_keys(st)) do
    local v = st[k]
    if type(k) ~= "string" then fail("%s: state %s has a key of type %s", what, base, type(k)) end
    if is_tensor(v) then
      local name = base .. "/" .. k
      if ck.tensors[name] ~= nil then fail("%s: two tensors are named '%s'", what, name) end
      ck.tensors[name] = v
    elseif type(v) == "number" or type(v) == "boolean" or type(v) == "string" then
      ck.scalars[base][k] = v
    elseif v ~= nil then
      fail("%s: state %s.%s is a %s, which a checkpoint cannot hold", what, base, k, type(v))
    end
  end
end

-- The state saved for base (tensors from the file and scalars), or nil when there is none.
local function get_state(file, base)
  local st, any = {}, false
  local prefix = base .. "/"
  for name, t in pairs(file.tensors) do
    if name:sub(1, #prefix) == prefix and not name:find("/", #prefix + 1, true) then
      st[name:sub(#prefix + 1)] = t
      any = true
    end
  end
  local sc = file.scalars[base]
  if type(sc) == "table" then
    any = true
    for k, v in pairs(sc) do st[k] = v end
  end
  return any and st or nil
end

local function gather(self, target, opts, what)
  local ck = { tensors = {}, scalars = {}, meta = { format = FORMAT, version = VERSION } }
  local vars
  if is_session(target) then
    if target._closed then fail("%s: the session is closed", what) end
    vars = session_vars(target, self.var_list, what)
  else
    vars = module_vars(target, self.var_list, what)
  end
  local name_of = {}
  for _, name in ipairs(vars.names) do
    local t = vars[name].tensor or session_value(target, vars[name])
    if t == nil then fail("%s: variable %s is not initialized in the session", what, name) end
    if not is_tensor(t) then fail("%s: variable %s holds a %s, not a tensor", what, name, type(t)) end
    ck.tensors[name] = t:detach()
    name_of[t] = name
  end
  ck.meta.variables = json.encode(vars.names)
  -- optimizer state
  if is_session(target) then
    for _, op in ipairs(optimizer_ops(target.graph)) do
      local slots = target._slots[op.optimizer]
      for _, v in ipairs(op.var_list) do
        local p = is_sym(v) and target._vars[v._node] or v
        local st = slots and p ~= nil and slots[p]
        if st and name_of[p] then put_state(ck, name_of[p] .. "/" .. op.name, st, what) end
      end
    end
  end
  local opt = self.optimizer
  if opt ~= nil then
    local sd = opt:state_dict()
    for _, i in ipairs(sorted_keys(sd.state)) do put_state(ck, "optimizer/state/" .. i, sd.state[i], what) end
    local ok, text = pcall(json.encode, { class = opt.name, param_groups = sd.param_groups })
    if not ok then fail("%s: the optimizer's param_groups: %s", what, tostring(text)) end
    ck.meta.optimizer = text
  end
  -- extra objects
  for _, name in ipairs(sorted_keys(self.extra)) do
    local obj = self.extra[name]
    local st = type(obj.state) == "function" and obj:state() or obj
    put_state(ck, "extra/" .. name, st, what)
  end
  -- the step and the generator
  local step = opts.global_step
  if is_sym(step) then
    if not is_session(target) then fail("%s: a symbolic global_step needs a Session", what) end
    step = target:run(step)
  end
  if is_tensor(step) then step = step:item() end
  if step ~= nil then
    if math.tointeger(step) == nil then
      fail("%s: global_step must be an integer, got %s", what, tostring(step))
    end
    step = math.tointeger(step)
    ck.meta.global_step = tostring(step)
  end
  local seed, offset = core.get_rng_state()
  ck.meta.rng = json.encode { seed, offset }
  ck.meta.scalars = json.encode(ck.scalars)
  return ck, step
end

-- ---- the index file ------------------------------------------------------------------------------

local function quote(s) return '"' .. s:gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"' end

local function unquote(s)
  return (s:gsub("\\(.)", function(c) return c == "n" and "\n" or c end))
end

-- Reads dir's index: model_checkpoint_path, {all_model_checkpoint_paths...} (as written), or nil.
local function read_index(dir)
  local f = io.open(join(dir, INDEX), "rb")
  if not f then return nil end
  local text = f:read("a")
  f:close()
  local latest, all = nil, {}
  for line in text:gmatch("[^\n]+") do
    local key, val = line:match('^%s*([%w_]+)%s*:%s*"(.*)"%s*$')
    if key == "model_checkpoint_path" then
      latest = unquote(val)
    elseif key == "all_model_checkpoint_paths" then
      all[#all + 1] = unquote(val)
    end
  end
  return latest, all
end

local function write_index(dir, latest, all, what)
  local path = join(dir, INDEX)
  local tmp = string.format("%s.tmp.%d.%d", path, os.time(), math.random(0, 0x7fffffff))
  local f, err = io.open(tmp, "wb")
  if not f then fail("%s: cannot write the index %s: %s", what, path, tostring(err)) end
  local lines = { "model_checkpoint_path: " .. quote(latest) }
  for _, p in ipairs(all) do lines[#lines + 1] = "all_model_checkpoint_paths: " .. quote(p) end
  local ok, werr = f:write(table.concat(lines, "\n") .. "\n")
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    fail("%s: cannot write the index %s: %s", what, path, tostring(werr or cerr))
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    fail("%s: cannot rename %s to %s: %s", what, tmp, path, tostring(rerr))
  end
end

-- The data file of a checkpoint path ("dir/model.ckpt-10" or the file itself).
local function data_file(path)
  if path:sub(-#EXT) == EXT then return path end
  return path .. EXT
end

-- mf.train.latest_checkpoint(dir): the path of the newest checkpoint the index in dir names
-- ("dir/model.ckpt-1000"), or nil when there is no index or its file is gone.
function M.latest_checkpoint(dir)
  if type(dir) ~= "string" then fail("latest_checkpoint: dir must be a string, got %s", type(dir)) end
  local latest = read_index(dir)
  if latest == nil then return nil end
  local path = join(dir, latest)
  if not exists(data_file(path)) then return nil end
  return path
end

-- ---- the Saver -----------------------------------------------------------------------------------

local Saver = { __name = "moonflow.train.Saver" }
Saver.__index = Saver
M.SaverClass = Saver

-- mf.train.Saver{var_list=, max_to_keep=5, optimizer=, extra=}: var_list (a list of Variables or a
-- table name -> Variable/tensor for sessions; a module or a table name -> tensor for eager code;
-- default: everything the saved object has); max_to_keep (0 or false: keep all); optimizer (an
-- mf.optim optimizer whose state goes along); extra (a table name -> object: an object with
-- state() / set_state(s), e.g. a DataSet, or a plain table of tensors and numbers restored in
-- place).
function M.Saver(opts)
  opts = opts or {}
  local what = "Saver"
  if type(opts) ~= "table" or is_tensor(opts) then fail("%s: options must be a table", what) end
  for k in pairs(opts) do
    if k ~= "var_list" and k ~= "max_to_keep" and k ~= "optimizer" and k ~= "extra" then
      fail("%s: unknown option '%s' (known: extra, max_to_keep, optimizer, var_list)", what,
        tostring(k))
    end
  end
  local keep = opts.max_to_keep
  if keep == nil then keep = 5 end
  if keep == false then keep = 0 end
  if math.type(keep) ~= "integer" or keep < 0 then
    fail("%s: max_to_keep must be an integer >= 0, got %s", what, tostring(keep))
  end
  local opt = opts.optimizer
  if opt ~= nil and (type(opt) ~= "table" or type(opt.state_dict) ~= "function"
      or type(opt.load_state_dict) ~= "function") then
    fail("%s: optimizer must be an mf.optim optimizer (with state_dict and load_state_dict)", what)
  end
  local extra = opts.extra or {}
  if type(extra) ~= "table" or is_tensor(extra) then
    fail("%s: extra must be a table name -> object", what)
  end
  for name, obj in pairs(extra) do
    if type(name) ~= "string" or name:find("/", 1, true) then
      fail("%s: extra's keys must be strings without '/', got %s", what, tostring(name))
    end
    if type(obj) ~= "table" or is_tensor(obj) then
      fail("%s: extra.%s is a %s, expected a table or an object with state()", what, name,
        is_tensor(obj) and "tensor" or type(obj))
    end
  end
  local var_list = opts.var_list
  if var_list ~= nil and (type(var_list) ~= "table" or is_tensor(var_list)) then
    fail("%s: var_list must be a list or table of variables, or a module", what)
  end
  return setmetatable({ var_list = var_list, max_to_keep = keep, optimizer = opt, extra = extra,
    last_checkpoints = {}, _dir = nil }, Saver)
end

function Saver:__tostring()
  return string.format("mf.train.Saver(max_to_keep=%d, %d checkpoints)", self.max_to_keep,
    #self.last_checkpoints)
end

-- saver:save(sess_or_module, prefix [, {global_step=}]) -> the checkpoint's path
-- ("<prefix>-<step>", or prefix without a step). global_step: an integer, a tensor or a Variable.
function Saver:save(target, prefix, opts)
  local what = "Saver.save"
  if type(prefix) ~= "string" or prefix == "" then
    fail("%s: the prefix must be a non-empty string, got %s", what, type(prefix))
  end
  opts = opts or {}
  local ck, step = gather(self, target, opts, what)
  local path = step and string.format("%s-%d", prefix, step) or prefix
  local dir, base = split_path(path)
  if not exists(dir) then -- a missing folder is made, as summary.FileWriter makes its logdir
    os.execute("mkdir -p '" .. dir:gsub("'", "'\\''") .. "' 2>/dev/null")
  end
  local ok, err = pcall(core.save, data_file(path), ck.tensors, ck.meta)
  if not ok then fail("%s: %s", what, tostring(err)) end
  -- the kept list: this saver's, or the index's entries of the same prefix on its first save
  local list = self.last_checkpoints
  if self._dir ~= dir then
    list = {}
    local _, pbase = split_path(prefix)
    local _, all = read_index(dir)
    for _, p in ipairs(all or {}) do
      local rel = p:match("[^/]*$")
      if (rel == pbase or (rel:sub(1, #pbase + 1) == pbase .. "-" and rel:sub(#pbase + 2):match("^%-?%d+$")))
          and rel ~= base and exists(data_file(join(dir, p))) then
        list[#list + 1] = p
      end
    end
    self._dir = dir
  end
  for i = #list, 1, -1 do
    if list[i] == base then table.remove(list, i) end
  end
  list[#list + 1] = base
  local drop = {}
  while self.max_to_keep > 0 and #list > self.max_to_keep do drop[#drop + 1] = table.remove(list, 1) end
  self.last_checkpoints = list
  write_index(dir, base, list, what)
  for _, p in ipairs(drop) do os.remove(data_file(join(dir, p))) end
  return path
end

-- Reads a checkpoint file: { tensors=, meta=, scalars=, step= }.
local function read_checkpoint(path, what)
  if type(path) ~= "string" then
    fail("%s: the checkpoint path must be a string, got %s%s", what, type(path),
      path == nil and " (did latest_checkpoint find none?)" or "")
  end
  local file = data_file(path)
  if not exists(file) then fail("%s: no checkpoint at %s (%s does not exist)", what, path, file) end
  local ok, tensors, meta = pcall(core.load, file)
  if not ok then fail("%s: %s is not a readable checkpoint: %s", what, file, tostring(tensors)) end
  meta = meta or {}
  if meta.format ~= FORMAT then
    fail("%s: %s is not a moonflow checkpoint (its metadata has no format = %q)", what, file, FORMAT)
  end
  if meta.version ~= VERSION then
    fail("%s: %s is a version %s checkpoint; this moonflow reads version %s", what, file,
      tostring(meta.version), VERSION)
  end
  local ck = { tensors = tensors, meta = meta, file = file }
  local function decode(key, default)
    if meta[key] == nil then return default end
    local dok, v = pcall(json.decode, meta[key])
    if not dok then fail("%s: %s: corrupt metadata '%s': %s", what, file, key, tostring(v)) end
    return v
  end
  ck.variables = decode("variables", {})
  ck.scalars = decode("scalars", {})
  ck.optimizer = decode("optimizer")
  ck.rng = decode("rng")
  if meta.global_step ~= nil then
    ck.step = math.tointeger(tonumber(meta.global_step))
    if ck.step == nil then fail("%s: %s: corrupt global_step '%s'", what, file, meta.global_step) end
  end
  if type(ck.variables) ~= "table" or type(ck.scalars) ~= "table" then
    fail("%s: %s: corrupt metadata", what, file)
  end
  return ck
end

-- saver:restore(sess_or_module, path) -> the checkpoint's global step (or nil). Everything is
-- checked before anything changes: a variable missing from the checkpoint or of another shape is
-- an error naming it (variables the checkpoint has beyond var_list are ignored, as TensorFlow does).
function Saver:restore(target, path)
  local what = "Saver.restore"
  local ck = read_checkpoint(path, what)
  local sess = is_session(target) and target or nil
  if sess and sess._closed then fail("%s: the session is closed", what) end
  local vars = sess and session_vars(sess, self.var_list, what) or module_vars(target, self.var_list, what)
  -- the variables: names and shapes
  local missing, wrong = {}, {}
  for _, name in ipairs(vars.names) do
    local src = ck.tensors[name]
    local e = vars[name]
    if src == nil then
      missing[#missing + 1] = name
    else
      local want = known_shape(e.tensor or session_value(sess, e) or e.node.outputs[1])
      if want ~= nil and shape_str(src) ~= want then
        wrong[#wrong + 1] = string.format("%s (checkpoint %s, variable %s)", name, shape_str(src), want)
      end
    end
  end
  if #missing > 0 then
    fail("%s: %s has no variable%s %s (it has: %s)", what, ck.file, #missing > 1 and "s" or "",
      table.concat(missing, ", "), table.concat(ck.variables, ", "))
  end
  if #wrong > 0 then
    fail("%s: %s: shapes do not match: %s", what, ck.file, table.concat(wrong, "; "))
  end
  -- the eager optimizer
  local opt = self.optimizer
  if opt ~= nil then
    if ck.optimizer == nil then fail("%s: %s holds no optimizer state", what, ck.file) end
    if ck.optimizer.class ~= opt.name then
      fail("%s: %s holds %s state, the optimizer is %s", what, ck.file,
        tostring(ck.optimizer.class), tostring(opt.name))
    end
  end
  -- extra objects
  local extra_states = {}
  for _, name in ipairs(sorted_keys(self.extra)) do
    local st = get_state(ck, "extra/" .. name)
    if st == nil then fail("%s: %s holds no state for extra.%s", what, ck.file, name) end
    extra_states[name] = st
  end
  if opt ~= nil then
    local sd = { state = {}, param_groups = ck.optimizer.param_groups }
    local prefix = "optimizer/state/"
    local seen = {}
    for name in pairs(ck.tensors) do
      local i = name:sub(1, #prefix) == prefix and name:sub(#prefix + 1):match("^(%d+)/")
      if i then seen[i] = true end
    end
    for base in pairs(ck.scalars) do
      local i = base:sub(1, #prefix) == prefix and base:sub(#prefix + 1):match("^(%d+)$")
      if i then seen[i] = true end
    end
    for i in pairs(seen) do sd.state[math.tointeger(tonumber(i))] = get_state(ck, prefix .. i) end
    local ok, err = pcall(opt.load_state_dict, opt, sd)
    if not ok then fail("%s: %s: %s", what, ck.file, tostring(err)) end
  end
  -- checked: copy the variables in
  core.no_grad(function()
    for _, name in ipairs(vars.names) do
      local e, src = vars[name], ck.tensors[name]
      if sess and e.node then
        local cur = sess._vars[e.node]
        local want = e.node.outputs[1]._dtype
        if cur == nil and want ~= nil and want ~= src:dtype() then src = src:to(want) end
        sess:_assign(e.node, src, "assign")
      else
        e.tensor:copy_(src)
      end
    end
  end)
  -- the session's optimizer slots (a variable without saved slots starts afresh)
  if sess then
    local names = {}
    for _, name in ipairs(vars.names) do
      local t = session_value(sess, vars[name])
      if t ~= nil then names[t] = name end
    end
    for _, op in ipairs(optimizer_ops(sess.graph)) do
      local slots = sess._slots[op.optimizer]
      if slots == nil then
        slots = setmetatable({}, { __mode = "k" })
        sess._slots[op.optimizer] = slots
      end
      for _, v in ipairs(op.var_list) do
        local p = is_sym(v) and sess._vars[v._node] or v
        if p ~= nil and names[p] then
          local st = get_state(ck, names[p] .. "/" .. op.name)
          if st then
            for k, x in pairs(st) do
              if is_tensor(x) then st[k] = x:to(p:device()) end
            end
          end
          slots[p] = st
        end
      end
    end
  end
  -- extra objects, the generator
  for name, st in pairs(extra_states) do
    local obj = self.extra[name]
    if type(obj.set_state) == "function" then
      local ok, err = pcall(obj.set_state, obj, st)
      if not ok then fail("%s: %s: restoring extra.%s: %s", what, ck.file, name, tostring(err)) end
    else
      for k in pairs(obj) do obj[k] = nil end
      for k, v in pairs(st) do obj[k] = v end
    end
  end
  if type(ck.rng) == "table" and math.tointeger(ck.rng[1]) and math.tointeger(ck.rng[2]) then
    core.set_rng_state(ck.rng[1], ck.rng[2])
  end
  return ck.step
end

return M
