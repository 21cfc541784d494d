-- moonflow/graph/placement.lua — where a Session runs each node, and the device part of its config.
-- graph/session.lua calls configure(config) when a session is made and place(sess, node) for each
-- node a run needs (once per node; the answer is kept in sess._placed[node]).
--
-- A node's device is the spec of the mf.device scope it was built in, as written ("/gpu:0",
-- "/device:GPU:1", "cuda:0", "cpu", or TensorFlow's full "/job:localhost/replica:0/task:0/
-- device:GPU:0" from an imported GraphDef); no device means the CPU. The config fields:
--   device_count = {CPU = n, GPU = k}   GPU = k lets the session use cuda:0 .. cuda:k-1 only
--                                       (GPU = 0: none); CPU must be at least 1 (one CPU device)
--   allow_soft_placement = bool         a node asked for a device the session cannot use runs on
--                                       the CPU instead; without it that is an error naming the
--                                       node, the device asked for and why it cannot be used
--   log_device_placement = bool         each node's device is written to stderr when it is first
--                                       placed: "name: (type): /device:GPU:0", soft placements
--                                       with the device asked for and why it was not used
--   gpu_options = {per_process_gpu_memory_fraction = f, allow_growth = bool}
--                                       f in (0, 1] caps what moonflow holds on each GPU
--                                       (mf.cuda.set_memory_fraction, process-wide as in
--                                       TensorFlow). allow_growth = false reserves that much of
--                                       each GPU the session may use up front, when the session
--                                       is made (mf.cuda.reserve_memory: one cudaMalloc that the
--                                       caching allocator carves; at most the free memory less
--                                       max(300 MiB, 5%); kept until the process ends, as in
--                                       TensorFlow; a failure is an error at the Session line).
--                                       Moonflow's default differs from TensorFlow 1's: left out
--                                       (or true), memory grows on demand, which suits eager code
--                                       sharing the GPU; only an explicit false reserves.
--   intra_op_parallelism_threads, inter_op_parallelism_threads = n >= 0 (checked here, used by
--                                       the session)
-- Other fields, and fields of the wrong type, are errors naming them. With soft placement, a node
-- placed on a GPU that turns out to lack a kernel for one of its ops moves to the CPU at its first
-- run (soft_compute below).
local core = require "moonflow.core"

local M = {}

local FIELDS = {
  allow_soft_placement = "boolean", log_device_placement = "boolean", gpu_options = "table",
  device_count = "table", intra_op_parallelism_threads = "count",
  inter_op_parallelism_threads = "count",
}
local GPU_OPTIONS = { allow_growth = "boolean", per_process_gpu_memory_fraction = "number" }

local function names(t)
  local r = {}
  for k in pairs(t) do r[#r + 1] = k end
  table.sort(r)
  return table.concat(r, ", ")
end

local function is_count(v)
  local i = type(v) == "number" and math.tointeger(v)
  return i and i >= 0 or false
end

local function show(v) return type(v) == "string" and ("%q"):format(v) or tostring(v) end

local function check_fields(where, t, spec)
  for k, v in pairs(t) do
    local want = spec[k]
    if want == nil then
      error(("Session: unknown field '%s' in %s (fields: %s)"):format(tostring(k), where,
        names(spec)), 0)
    end
    local ok
    if want == "count" then ok = is_count(v) else ok = type(v) == want end
    if not ok then
      error(("Session: %s.%s must be %s, got %s"):format(where, k,
        want == "count" and "an integer >= 0" or "a " .. want, show(v)), 0)
    end
  end
end

local function cuda_count()
  local cuda = rawget(core, "cuda")
  return type(cuda) == "table" and cuda.device_count() or 0
end

local ngpus = setmetatable({}, { __mode = "k" }) -- config table -> GPUs a session may use

local function configure(config)
  if type(config) ~= "table" then error("Session: config must be a table", 0) end
  check_fields("config", config, FIELDS)
  local n = cuda_count()
  local dc = config.device_count
  if dc ~= nil then
    for k, v in pairs(dc) do
      if k ~= "CPU" and k ~= "GPU" then
        error(("Session: unknown device type '%s' in config.device_count (CPU, GPU)"):format(
          tostring(k)), 0)
      end
      if not is_count(v) then
        error(("Session: config.device_count.%s must be an integer >= 0, got %s"):format(k,
          show(v)), 0)
      end
    end
    if dc.CPU == 0 then
      error("Session: config.device_count.CPU must be at least 1 (the CPU runs what no GPU does)", 0)
    end
    if dc.GPU ~= nil and dc.GPU < n then n = dc.GPU end
  end
  local go = config.gpu_options
  if go ~= nil then
    check_fields("config.gpu_options", go, GPU_OPTIONS)
    local f = go.per_process_gpu_memory_fraction
    if f ~= nil then
      if not (f > 0 and f <= 1) then
        error(("Session: config.gpu_options.per_process_gpu_memory_fraction must be in (0, 1], " ..
          "got %s"):format(tostring(f)), 0)
      end
      if n > 0 then core.cuda.set_memory_fraction(f) end
    end
    if go.allow_growth == false then
      for i = 0, n - 1 do
        local ok, err = pcall(core.cuda.reserve_memory, i)
        if not ok then
          error("Session: config.gpu_options.allow_growth = false: " .. tostring(err), 0)
        end
      end
    end
  end
  return n
end

-- The level of the first caller outside moonflow/graph (the user's line), for error().
local function user_level()
  local level = 3
  while true do
    local info = debug.getinfo(level, "S")
    if not info or not info.source:find("moonflow/graph/", 1, true) then return level - 1 end
    level = level + 1
  end
end

-- configure(config) -> the number of GPUs a session with this config may use (0: none). Checks
-- the config (errors name the bad field, at the user's line) and applies gpu_options.
function M.configure(config)
  local ok, n = pcall(configure, config)
  if not ok then error(n, user_level()) end
  ngpus[config] = n
  return n
end

-- The device a spec asks for: "cpu", "gpu" (with its index) or another kind (nil for none).
-- TensorFlow's full names work too: their /job:, /replica: and /task: parts say nothing about the
-- device and are left out.
local function requested(spec)
  if spec == nil then return nil end
  local s = spec:lower():gsub("/job:[^/]*", ""):gsub("/replica:[^/]*", ""):gsub("/task:[^/]*", "")
  if s:match("^%s*$") then return nil end
  local kind, index = s:match("(%a+):(%d+)%s*$")
  if not kind then kind = s:match("(%a+)%s*$") end
  if kind == "cuda" then kind = "gpu" end
  return kind, tonumber(index) or 0
end

-- The name TensorFlow logs for a device: "/device:CPU:0", "/device:GPU:1".
local function tf_name(dev)
  if dev == "cpu" then return "/device:CPU:0" end
  return "/device:GPU:" .. dev:match("%d+")
end

local function log(sess, node, dev, note)
  if not sess.config.log_device_placement then return end
  io.stderr:write(("%s: (%s): %s%s\n"):format(node.name, node.type, tf_name(dev),
    note and " (" .. note .. ")" or ""))
end

-- Why GPU index cannot be used by a session allowed ngpu of them.
local function why_not(ngpu, index)
  local real = cuda_count()
  if index < real and index >= ngpu then
    return ("the session's config.device_count.GPU = %d hides it"):format(ngpu)
  end
  local cuda = rawget(core, "cuda")
  return cuda and cuda.why_unavailable(index) or "moonflow has no CUDA support"
end

-- place(sess, node) -> "cpu" | "cuda:N", or nil and the message of the error to raise.
function M.place(sess, node)
  local p = sess._placed[node]
  if p then return p end
  local kind, index = requested(node.device)
  local dev, note
  if kind == nil or kind == "cpu" then
    dev = "cpu"
  else
    local why
    if kind ~= "gpu" then
      why = ("moonflow has no %s devices (it has cpu and cuda:N)"):format(kind:upper())
    elseif index < (ngpus[sess.config] or 0) then
      dev = "cuda:" .. index
    else
      why = why_not(ngpus[sess.config] or 0, index)
    end
    if not dev then
      if not sess.config.allow_soft_placement then
        return nil, ("Cannot assign a device for operation '%s': it was explicitly assigned to " ..
          "%s but that device is not available: %s (use config = {allow_soft_placement = true} " ..
          "to run it on the CPU)"):format(node.name, node.device, why)
      end
      dev, note = "cpu", ("soft placement: %s was asked for: %s"):format(node.device, why)
    end
  end
  sess._placed[node] = dev
  log(sess, node, dev, note)
  return dev
end

-- soft_compute(sess, node, st) -> a compute function for a plan step st whose node was placed on
-- a GPU by a session with soft placement: it runs node.compute, and when the GPU lacks a kernel
-- for one of its ops ("...: not supported on cuda:0", a NULL entry in the device's kernel table)
-- it moves the inputs to the CPU, places the node there for good (st.dev, sess._placed, logged)
-- and runs it again. Compute functions have no side effects, so the retry is safe. Other errors
-- pass through unchanged.
function M.soft_compute(sess, node, st)
  local compute = node.compute
  return function(iv)
    local res = table.pack(pcall(compute, iv))
    if res[1] then return table.unpack(res, 2, res.n) end
    local err = res[2]
    local op, dev = tostring(err):match("([%w_]+): not supported on (cuda:%d+)")
    if not op then error(err, 0) end
    for j = 1, #iv do
      local v = iv[j]
      if core.is_tensor(v) and v:device() ~= "cpu" then iv[j] = v:cpu() end
    end
    st.dev, st.compute, sess._placed[node] = "cpu", compute, "cpu"
    log(sess, node, "cpu", ("soft placement: %s has no %s kernel"):format(dev, op))
    return compute(iv)
  end
end

return M
