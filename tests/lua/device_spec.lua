-- device_spec.lua — devices and placement (DESIGN §3 "Devices", issue 6 point 2): device specs,
-- mf.device scopes in eager and graph mode, Session placement (log_device_placement,
-- allow_soft_placement, device_count, gpu_options (allow_growth = false: the reservation), config
-- checks), mf.cuda.* and mf.list_devices, CUDA_VISIBLE_DEVICES in child processes (the CUDA
-- library not even loaded when it hides every GPU), `moonflow -v`. Everything here runs
-- without a GPU; the tests that need one are in the "on a GPU" block, which each say they were
-- skipped (pending) when mf.cuda.is_available() is false. The mixing-devices error is also checked
-- without a GPU by tests/c/test_devices.c with a second, fake device.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local GPU = mf.cuda.is_available()
local BIN, DATA = H.BIN, H.DATA

-- Runs the host with a shell prefix (environment) and arguments; returns stdout..stderr, exit code.
-- The CUDA emulator (a build with MOONFLOW_CUDA=EMU, tests/cuda_emu) runs kernels on the CPU,
-- many times slower: its children get longer to finish.
local EMULATED = GPU and mf.cuda.get_device_properties(0).name:find("emulator") ~= nil
local CUDNN = GPU and mf.cuda.versions().cudnn > 0

local function host(prefix, args)
  local out = os.tmpname()
  local _, _, code = os.execute(("%s timeout %d %s %s > %s 2>&1"):format(prefix,
    EMULATED and 600 or 60, H.q(BIN), args, out))
  local s = H.readfile(out)
  os.remove(out)
  return s, code
end

-- Runs fn with io.stderr replaced by a collector; returns the lines written (and fn's error).
local function capture_stderr(fn)
  local lines, real = {}, io.stderr
  io.stderr = { write = function(self, ...)
    for _, s in ipairs { ... } do
      for l in tostring(s):gmatch("[^\n]+") do lines[#lines + 1] = l end
    end
    return self
  end }
  local ok, err = pcall(fn)
  io.stderr = real
  return lines, not ok and err or nil
end

-- The spec the default device of new tensors is set to (nil: the CPU), read without changing it.
local function default_spec()
  local prev = mf._set_default_device(nil)
  mf._set_default_device(prev)
  return prev
end

describe("device specs", function()
  it("are read in every form the design names, case-insensitively", function()
    local cases = {
      { "cpu", "cpu", "cpu", 0 }, { "/cpu:0", "cpu", "cpu", 0 }, { "CPU:0", "cpu", "cpu", 0 },
      { "/device:CPU:0", "cpu", "cpu", 0 }, { "cuda", "cuda:0", "cuda", 0 },
      { "cuda:0", "cuda:0", "cuda", 0 }, { "cuda:3", "cuda:3", "cuda", 3 },
      { "/gpu:0", "cuda:0", "cuda", 0 }, { "gpu:2", "cuda:2", "cuda", 2 },
      { "/device:GPU:1", "cuda:1", "cuda", 1 }, { "/device:gpu:7", "cuda:7", "cuda", 7 },
      { "/job:localhost/replica:0/task:0/device:GPU:1", "cuda:1", "cuda", 1 },
      { "/job:localhost/replica:0/task:0/device:CPU:0", "cpu", "cpu", 0 },
      { "/job:localhost/replica:0/task:0", "cpu", "cpu", 0 },
    }
    for _, c in ipairs(cases) do
      local name, kind, index = mf._parse_device(c[1])
      assert.are.same({ c[2], c[3], c[4] }, { name, kind, index }, c[1])
    end
  end)

  it("that are malformed are errors naming the spec", function()
    H.err(function() mf._parse_device("/tpu:0") end, "unknown device '/tpu:0'")
    H.err(function() mf._parse_device("cuda:x") end, "bad device index in 'cuda:x'")
    H.err(function() mf._parse_device("cuda:-1") end, "bad device index in 'cuda:-1'")
    H.err(function() mf._parse_device("gpu:") end, "bad device index in 'gpu:'")
    H.err(function() mf._parse_device("") end, "unknown device ''")
    H.err(function() mf._parse_device("cpu:1") end, "only one CPU device")
    H.err(function() mf._parse_device(0) end, "a device spec (a string")
    H.err(function() mf._parse_device(nil) end, "got nil")
  end)

  it("in t:to are told apart from dtypes, and an absent GPU says why", function()
    H.err(function() mf.tensor { 1 }:to("tpu") end, "'tpu' is neither a dtype")
    assert.equal("cpu", mf.tensor { 1 }:to("/cpu:0"):device())
    assert.equal("float64", mf.tensor { 1 }:to("cpu", "float64"):dtype())
    if not GPU then
      local msg = H.err(function() mf.tensor { 1 }:to("/gpu:0") end, "to: cuda:0: ")
      assert.truthy(msg:find("no CUDA device is available", 1, true), msg)
      H.err(function() mf.tensor { 1 }:cuda() end, "no CUDA device is available")
      H.err(function() mf.zeros({ 2 }, { device = "cuda:1" }) end, "zeros: device 'cuda:1'")
    end
  end)
end)

describe("mf.device in eager mode", function()
  it("sets the default device of new tensors, nests and restores", function()
    assert.is_nil(default_spec())
    local seen = mf.device("/cpu:0", function()
      assert.equal("/cpu:0", default_spec())
      local inner = mf.device("cpu", function()
        assert.equal("cpu", default_spec())
        return { mf.zeros { 2 }:device(), mf.randn(2):device(), mf.tensor { 1, 2 }:device(),
          mf.ones { 1 }:device(), mf.arange(1, 3):device(), mf.full({ 2 }, 3):device() }
      end)
      assert.equal("/cpu:0", default_spec())
      return inner
    end)
    assert.are.same({ "cpu", "cpu", "cpu", "cpu", "cpu", "cpu" }, seen)
    assert.is_nil(default_spec())
    do
      local _ <close> = mf.device("/device:CPU:0")
      assert.equal("/device:CPU:0", default_spec())
      do
        local _ <close> = mf.device("cpu")
        assert.equal("cpu", default_spec())
      end
      assert.equal("/device:CPU:0", default_spec())
    end
    assert.is_nil(default_spec())
    -- a handle closed by hand (where a block will not do), once; <close> after that does nothing
    do
      local outer <close> = mf.device("cpu")
      local h = mf.device("/cpu:0")
      assert.equal("/cpu:0", default_spec())
      h:close()
      assert.equal("cpu", default_spec())
      h:close()
      assert.equal("cpu", default_spec())
    end
    assert.is_nil(default_spec())
  end)

  it("restores the device when the scope ends by an error", function()
    local ok, err = pcall(mf.device, "cpu", function()
      mf.device("/cpu:0", function() error("boom") end)
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("boom", 1, true))
    assert.is_nil(default_spec())
    ok = pcall(function()
      local _ <close> = mf.device("/cpu:0")
      error("boom")
    end)
    assert.is_false(ok)
    assert.is_nil(default_spec())
    -- and fn's results come back, all of them
    local a, b, c = mf.device("cpu", function() return 1, nil, 3 end)
    assert.are.same({ 1, nil, 3 }, { a, b, c })
  end)

  it("rejects bad specs and arguments at the caller's line, leaving nothing behind", function()
    local msg = H.err(function() mf.device("/tpu:0", function() end) end, "unknown device '/tpu:0'")
    assert.truthy(msg:find("device_spec.lua:%d+:"), msg)
    H.err(function() mf.device(1) end, "a device spec (a string")
    H.err(function() mf.device("cpu", 5) end, "the second argument must be a function")
    H.err(function() mf.device("cpu:1") end, "only one CPU device")
    if not GPU then
      H.err(function() mf.device("/gpu:0", function() end) end, "no CUDA device is available")
      H.err(function() local _ <close> = mf.device("cuda:0") end, "no CUDA device is available")
    end
    assert.is_nil(default_spec())
    -- no placement was left on the default graph either
    local g = mf.Graph()
    g:as_default(function()
      local x = mf.placeholder("float32", { 1 }, "x")
      assert.is_nil((x * 2).op.device)
    end)
  end)
end)

describe("mf.device in graph mode", function()
  it("records each new node's placement, nested, restored after errors", function()
    local g = mf.Graph()
    g:as_default(function()
      local x = mf.placeholder("float32", { 2 }, "x")
      local a, b, c, d
      mf.device("/gpu:0", function()
        a = x * 2
        mf.device("/cpu:0", function() b = a + 1 end)
        c = mf.relu(b)
      end)
      pcall(mf.device, "/device:GPU:1", function() error("boom") end)
      do
        local _ <close> = mf.device("cuda:1")
        d = c - 1
      end
      local h = mf.device("/gpu:0")
      local f = d + 2
      h:close()
      local e = d * 3
      assert.equal("/gpu:0", f.op.device)
      assert.are.same({ "/gpu:0", "/cpu:0", "/gpu:0", "cuda:1" },
        { a.op.device, b.op.device, c.op.device, d.op.device })
      assert.is_nil(e.op.device)
      assert.is_nil(x.op.device)
      assert.equal("/gpu:0", a:device())
      assert.equal("cpu", e:device())
      -- GraphDefs keep them
      local devs = {}
      for _, nd in ipairs(g:as_graph_def().node) do devs[nd.name] = nd.device end
      assert.equal("/gpu:0", devs[a.op.name])
      assert.equal("/cpu:0", devs[b.op.name])
      assert.equal("", devs[e.op.name])
    end)
  end)

  it("accepts a GPU a machine lacks (the session decides) but not a malformed spec", function()
    local g = mf.Graph()
    g:as_default(function()
      local y = mf.device("/device:GPU:7", function() return mf.placeholder("float32", { 1 }, "y") * 1 end)
      assert.equal("/device:GPU:7", y.op.device)
      H.err(function() mf.device("/tpu:0", function() end) end, "unknown device '/tpu:0'")
      H.err(function() mf.device("gpu:one") end, "bad device index")
    end)
  end)
end)

describe("Session placement", function()
  local function gpu_graph()
    local g = mf.Graph()
    local x, y, z
    g:as_default(function()
      x = mf.placeholder("float32", { 2 }, "x")
      y = mf.device("/gpu:0", function() return x * 2 end)
      z = mf.device("/cpu:0", function() return y + 1 end)
    end)
    assert.are.same({ "mul", "add" }, { y.op.name, z.op.name })
    return g, x, y, z
  end

  it("logs each node's device once, TensorFlow's way", function()
    local g, x, _, z = gpu_graph()
    local sess <close> = mf.Session { graph = g, config = { log_device_placement = true,
      allow_soft_placement = true } }
    local lines = capture_stderr(function()
      H.equal(sess:run(z, { [x] = { 1, 2 } }), { 3, 5 })
      H.equal(sess:run(z, { [x] = { 0, 1 } }), { 1, 3 })
    end)
    local by_name = {}
    for _, l in ipairs(lines) do
      local name = l:match("^([^:]+): ")
      assert.is_nil(by_name[name], "logged twice: " .. l)
      by_name[name] = l
    end
    assert.truthy(by_name.add, table.concat(lines, "\n"))
    assert.equal("add: (add): /device:CPU:0", by_name.add)
    if GPU then
      assert.equal("mul: (mul): /device:GPU:0", by_name.mul)
    else
      assert.truthy(by_name.mul:find("^mul: %(mul%): /device:CPU:0 %(soft placement: /gpu:0 was asked for: "),
        by_name.mul)
      assert.truthy(by_name.mul:find("no CUDA device is available", 1, true), by_name.mul)
    end
  end)

  it("without log_device_placement writes nothing", function()
    local g, x, _, z = gpu_graph()
    local sess <close> = mf.Session { graph = g, config = { allow_soft_placement = true } }
    local lines = capture_stderr(function() sess:run(z, { [x] = { 1, 2 } }) end)
    assert.are.same({}, lines)
  end)

  it("without soft placement, a node on an absent GPU is an error naming it and the device", function()
    if GPU then return pending("this machine has a GPU: see device_count{GPU = 0} below") end
    local g, x, _, z = gpu_graph()
    local sess <close> = mf.Session { graph = g }
    local msg = H.err(function() sess:run(z, { [x] = { 1, 2 } }) end,
      "Cannot assign a device for operation 'mul': it was explicitly assigned to /gpu:0")
    assert.truthy(msg:find("no CUDA device is available", 1, true), msg)
    assert.truthy(msg:find("allow_soft_placement = true", 1, true), msg)
    assert.truthy(msg:find("device_spec.lua:%d+:"), msg) -- at the caller's line
  end)

  it("device_count{GPU = 0} hides the GPUs: an error without soft placement, the CPU with it", function()
    local g, x, y, z = gpu_graph()
    local hard <close> = mf.Session { graph = g, config = { device_count = { GPU = 0 } } }
    local msg = H.err(function() hard:run(z, { [x] = { 1, 2 } }) end,
      "Cannot assign a device for operation 'mul'")
    if GPU then
      assert.truthy(msg:find("device_count.GPU = 0 hides it", 1, true), msg)
    end
    local soft <close> = mf.Session { graph = g, config = { device_count = { GPU = 0, CPU = 1 },
      allow_soft_placement = true, log_device_placement = true } }
    local out
    local lines = capture_stderr(function() out = soft:run({ y, z }, { [x] = { 1, 2 } }) end)
    H.equal(out[1], { 2, 4 })
    H.equal(out[2], { 3, 5 })
    assert.equal("cpu", out[1]:device())
    local text = table.concat(lines, "\n")
    assert.truthy(text:find("mul: (mul): /device:CPU:0 (soft placement: /gpu:0 was asked for", 1,
      true), text)
  end)

  it("variables live on their node's device: placed, initialised and trained there", function()
    local g = mf.Graph()
    local x, w, loss, step
    g:as_default(function()
      x = mf.placeholder("float32", { 2 }, "x")
      mf.device("/gpu:0", function()
        w = mf.Variable(mf.tensor { 1.0, 2.0 }, { name = "w" })
        loss = mf.reduce_sum(mf.square(w * x))
        step = mf.train.GradientDescentOptimizer(0.1):minimize(loss)
      end)
    end)
    local feed = { [x] = { 1, 1 } }
    if not GPU then
      local hard <close> = mf.Session { graph = g }
      H.err(function() hard:run(g:as_default(mf.global_variables_initializer)) end,
        "Cannot assign a device for operation 'w'")
    end
    local cfg = { allow_soft_placement = true, device_count = { GPU = 0 } }
    local soft <close> = mf.Session { graph = g, config = cfg }
    soft:run(g:as_default(mf.global_variables_initializer))
    assert.equal("cpu", soft:variable_value(w):device())
    H.equal(soft:run(loss, feed), 5)
    soft:run(step, feed)
    H.equal(soft:run(w), { 0.8, 1.6 }, 1e-6) -- w - 0.1 * 2 w
    if GPU then
      local gpu <close> = mf.Session { graph = g }
      gpu:run(g:as_default(mf.global_variables_initializer))
      assert.equal("cuda:0", gpu:variable_value(w):device())
      gpu:run(step, feed)
      assert.equal("cuda:0", gpu:variable_value(w):device())
      local got = gpu:run(w)
      assert.equal("cpu", got:device())
      H.equal(got, { 0.8, 1.6 }, 1e-6)
    end
  end)

  it("a GPU index past the last one is unavailable (soft: CPU; hard: error)", function()
    local g = mf.Graph()
    local x, y
    g:as_default(function()
      x = mf.placeholder("float32", { 2 }, "x")
      y = mf.device("/device:GPU:63", function() return x * 2 end)
    end)
    local soft <close> = mf.Session { graph = g, config = { allow_soft_placement = true } }
    H.equal(soft:run(y, { [x] = { 1, 2 } }), { 2, 4 })
    local hard <close> = mf.Session { graph = g }
    H.err(function() hard:run(y, { [x] = { 1, 2 } }) end, "assigned to /device:GPU:63")
  end)

  it("reads TensorFlow's full device names (imported GraphDefs) and refuses other device types", function()
    local g = mf.Graph()
    local x, y, t
    g:as_default(function()
      x = mf.placeholder("float32", { 2 }, "x")
      y = mf.device("/cpu:0", function() return x * 2 end)
      t = x + 1
    end)
    y.op._node.device = "/job:localhost/replica:0/task:0/device:CPU:0"
    t.op._node.device = "/job:localhost/replica:0/task:0/device:TPU:0"
    local hard <close> = mf.Session { graph = g }
    H.equal(hard:run(y, { [x] = { 1, 2 } }), { 2, 4 })
    local z = g:as_default(function() return mf.relu(x) end)
    z.op._node.device = "/job:localhost/replica:0/task:0" -- no device named: the CPU
    H.equal(hard:run(z, { [x] = { -1, 2 } }), { 0, 2 })
    H.err(function() hard:run(t, { [x] = { 1, 2 } }) end, "moonflow has no TPU devices")
    local soft <close> = mf.Session { graph = g, config = { allow_soft_placement = true } }
    H.equal(soft:run(t, { [x] = { 1, 2 } }), { 2, 3 })
  end)

  it("soft placement moves a node to the CPU when the GPU lacks a kernel for it", function()
    -- graph/placement.lua's wrapper, given a plan step the way the session builds one: the GPU's
    -- "not supported" error (a NULL kernel) is the trigger; other errors pass through
    local P = require "moonflow.graph.placement"
    local calls = 0
    local node = { name = "pool", type = "max_pool2d", compute = function(iv)
      calls = calls + 1
      if calls == 1 then error("max_pool2d: not supported on cuda:0") end
      return iv[1] + 1
    end }
    local sess = { config = { allow_soft_placement = true, log_device_placement = true },
      _placed = { [node] = "cuda:0" } }
    local st = { dev = "cuda:0" }
    st.compute = P.soft_compute(sess, node, st)
    local out
    local lines = capture_stderr(function() out = st.compute({ mf.tensor { 1, 2 } }) end)
    H.equal(out, { 2, 3 })
    assert.equal(2, calls)
    assert.equal("cpu", st.dev)
    assert.equal("cpu", sess._placed[node])
    assert.equal(node.compute, st.compute) -- later runs call it directly, on the CPU
    assert.are.same({ "pool: (max_pool2d): /device:CPU:0 (soft placement: cuda:0 has no " ..
      "max_pool2d kernel)" }, lines)
    local bad = { name = "mm", type = "matmul", compute = function() error("matmul: sizes 2x3 and 4x5 do not match") end }
    local st2 = { dev = "cuda:0" }
    st2.compute = P.soft_compute(sess, bad, st2)
    H.err(function() st2.compute({}) end, "matmul: sizes 2x3 and 4x5 do not match")
    assert.equal("cuda:0", st2.dev)
  end)

  it("checks the config: unknown fields, wrong types and bad values are errors naming them", function()
    H.err(function() mf.Session { config = { allow_soft_placment = true } } end,
      "unknown field 'allow_soft_placment' in config")
    H.err(function() mf.Session { config = { log_device_placement = 1 } } end,
      "config.log_device_placement must be a boolean")
    H.err(function() mf.Session { config = { device_count = { TPU = 1 } } } end,
      "unknown device type 'TPU'")
    H.err(function() mf.Session { config = { device_count = { GPU = -1 } } } end,
      "config.device_count.GPU must be an integer >= 0")
    H.err(function() mf.Session { config = { device_count = { GPU = "1" } } } end,
      'config.device_count.GPU must be an integer >= 0, got "1"')
    H.err(function() mf.Session { config = { device_count = { GPU = 0.5 } } } end,
      "config.device_count.GPU must be an integer >= 0, got 0.5")
    H.err(function() mf.Session { config = { device_count = { CPU = 0 } } } end,
      "config.device_count.CPU must be at least 1")
    H.err(function() mf.Session { config = { gpu_options = { allow_growth = "yes" } } } end,
      "config.gpu_options.allow_growth must be a boolean")
    H.err(function() mf.Session { config = { gpu_options = { memory_fraction = 0.5 } } } end,
      "unknown field 'memory_fraction' in config.gpu_options")
    H.err(function() mf.Session { config = { gpu_options = { per_process_gpu_memory_fraction = 1.5 } } } end,
      "per_process_gpu_memory_fraction must be in (0, 1], got 1.5")
    H.err(function() mf.Session { config = { gpu_options = { per_process_gpu_memory_fraction = 0 } } } end,
      "must be in (0, 1]")
    H.err(function() mf.Session { config = { inter_op_parallelism_threads = 1.5 } } end,
      "inter_op_parallelism_threads must be an integer >= 0")
    local msg = H.err(function() mf.Session { config = { gpu_options = 3 } } end,
      "config.gpu_options must be a table")
    assert.truthy(msg:find("device_spec.lua:%d+:"), msg) -- at the caller's line
    -- every field the design names is accepted
    local s <close> = mf.Session { config = { allow_soft_placement = false, log_device_placement = false,
      gpu_options = { allow_growth = true, per_process_gpu_memory_fraction = 1.0 },
      intra_op_parallelism_threads = 0, inter_op_parallelism_threads = 2,
      device_count = { CPU = 1, GPU = 1 } } }
    assert.truthy(s)
    local s2 <close> = mf.Session { config = { device_count = { GPU = 0.0 } } } -- integral floats too
    assert.truthy(s2)
  end)
end)

describe("mf.cuda and mf.list_devices", function()
  it("answer consistently", function()
    local n = mf.cuda.device_count()
    assert.equal(n > 0, mf.cuda.is_available())
    local l = mf.list_devices()
    assert.equal(n + 1, #l)
    assert.equal("cpu", l[1])
    for i = 1, n do assert.equal("cuda:" .. (i - 1), l[i + 1]) end
    assert.equal("number", math.type(mf.cuda.memory_allocated()) and "number")
    assert.is_true(mf.cuda.max_memory_allocated() >= mf.cuda.memory_allocated())
    assert.is_true(mf.cuda.memory_reserved() >= mf.cuda.memory_allocated())
    assert.equal("boolean", type(mf.cuda.set_tf32(true)))
    H.err(function() mf.cuda.memory_allocated(-1) end, "bad GPU index -1")
    H.err(function() mf.cuda.memory_allocated("cpu") end, "'cpu' is not a CUDA device")
    H.err(function() mf.cuda.memory_allocated("tpu:0") end, "unknown device 'tpu:0'")
    H.err(function() mf.cuda.set_memory_fraction(0) end, "memory fraction 0 is not in (0, 1]")
    H.err(function() mf.cuda.set_memory_fraction(2) end, "is not in (0, 1]")
    H.err(function() mf.cuda.set_tf32("on") end, "boolean expected")
    -- versions: a table when the backend is built (and loads), else nil and why
    local v, why = mf.cuda.versions()
    if v then
      assert.is_true(v.runtime >= 11000, tostring(v.runtime))
      assert.is_true(v.driver >= 0 and v.cudnn >= 0)
    else
      assert.equal("string", type(why))
      assert.equal(0, n)
    end
    for i = 0, n - 1 do
      local p = mf.cuda.get_device_properties(i)
      assert.is_true(#p.name > 0 and p.total_memory > 0 and p.major >= 1, p.name)
      assert.same(p, mf.cuda.get_device_properties("cuda:" .. i))
    end
    H.err(function() mf.cuda.get_device_properties(n) end, "cuda:" .. n)
    H.err(function() mf.cuda.get_device_properties("cpu") end, "'cpu' is not a CUDA device")
    for i = 0, n - 1 do -- PyTorch's shorthands for two of the properties
      local p = mf.cuda.get_device_properties(i)
      assert.equal(p.name, mf.cuda.get_device_name(i))
      assert.same({ p.major, p.minor }, { mf.cuda.get_device_capability("cuda:" .. i) })
    end
    -- PyTorch's seeding names: the one generator of every device
    mf.cuda.manual_seed(7)
    local a = mf.rand { 5 }
    mf.cuda.manual_seed_all(7)
    assert.same(a:totable(), mf.rand({ 5 }):totable())
    mf.manual_seed(7)
    assert.same(a:totable(), mf.rand({ 5 }):totable())
    H.err(function() mf.cuda.manual_seed("x") end, "number expected")
    H.err(function() mf.cuda.get_device_name(n) end, "cuda:" .. n)
    H.err(function() mf.cuda.get_device_capability(-1) end, "bad GPU index -1")
  end)

  it("without a GPU: zeros, nothing to wait for, and why there is none", function()
    if GPU then return pending("this machine has a GPU") end
    assert.equal(0, mf.cuda.device_count())
    assert.is_false(mf.cuda.is_available())
    assert.are.same({ "cpu" }, mf.list_devices())
    mf.cuda.synchronize()
    mf.cuda.synchronize(0)
    mf.cuda.synchronize("cuda:0")
    mf.cuda.empty_cache()
    mf.cuda.set_memory_fraction(0.5) -- changes nothing without a GPU
    assert.equal(0, mf.cuda.memory_allocated())
    assert.equal(0, mf.cuda.memory_allocated("cuda:0"))
    assert.equal(0, mf.cuda.max_memory_allocated(0))
    assert.equal(0, mf.cuda.memory_reserved(0))
    local why = mf.cuda.why_unavailable()
    assert.equal("string", type(why))
    assert.truthy(why:find("no CUDA device is available", 1, true), why)
    assert.equal("cpu", mf.get_default_device())
    H.err(function() mf.cuda.profile(true) end, "cuda: profile")
    mf.cuda.profile(false)
    assert.same({}, mf.cuda.profile_report())
    mf.cuda.reset_peak_memory_stats() -- nothing to reset
    H.err(function() mf.cuda.mem_get_info() end, "cuda:0")
    H.err(function() mf.cuda.Event() end, "cuda:0")
    H.err(function() mf.cuda.Event { enable_timing = true, device = 1 } end, "cuda:1")
  end)

  it("cuda.Event times GPU work, as torch.cuda.Event", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local start, stop = mf.cuda.Event { enable_timing = true }, mf.cuda.Event { enable_timing = true }
    assert.equal("cuda.Event(cuda:0, timing)", tostring(start))
    assert.is_true(start:query()) -- never recorded: done
    start:synchronize()
    assert.equal(start, start:record())
    local a = mf.randn({ 256, 256 }, { device = "cuda:0" })
    for _ = 1, 4 do a = a:matmul(a):tanh() end
    stop:record()
    local ms = start:elapsed_time(stop) -- waits for stop
    assert.is_true(ms >= 0, ms)
    assert.is_true(stop:query())
    assert.equal(ms, start:elapsed_time(stop))
    stop:synchronize()
    -- the current GPU: mf.device's when it is one
    mf.device("cuda:" .. (mf.cuda.device_count() - 1), function()
      assert.equal("cuda.Event(cuda:" .. (mf.cuda.device_count() - 1) .. ")", tostring(mf.cuda.Event()))
    end)
    assert.equal("cuda.Event(cuda:0)", tostring(mf.cuda.Event { device = "/gpu:0" }))
    -- misuse is an error saying what is wrong
    local plain = mf.cuda.Event():record()
    H.err(function() start:elapsed_time(plain) end, "both events must be made with enable_timing = true")
    H.err(function() start:elapsed_time(mf.cuda.Event { enable_timing = true }) end,
      "both events must be recorded first (the end event is not)")
    H.err(function() mf.cuda.Event { enable_timing = true }:elapsed_time(stop) end, "the start event is not")
    if mf.cuda.device_count() > 1 then
      local other = mf.cuda.Event { enable_timing = true, device = 1 }:record()
      H.err(function() start:elapsed_time(other) end, "the events are of different GPUs (cuda:0 and cuda:1)")
    end
    H.err(function() start:elapsed_time(a) end, "cuda.Event expected")
    H.err(function() mf.cuda.Event(true) end, "table expected")
    H.err(function() mf.cuda.Event { device = "cpu" } end, "'cpu' is not a CUDA device")
    H.err(function() mf.cuda.Event { device = mf.cuda.device_count() } end, "no such device")
    do
      local e <close> = mf.cuda.Event()
      e:record()
    end
    local e = mf.cuda.Event()
    e:close()
    assert.equal("cuda.Event(cuda:0, closed)", tostring(e))
    H.err(function() e:record() end, "the event is closed")
    e:close() -- again: nothing
  end)

  it("memory: the driver's view and a peak that can start again", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local free, total = mf.cuda.mem_get_info()
    assert.equal(mf.cuda.get_device_properties(0).total_memory, total)
    assert.is_true(free > 0 and free <= total, free)
    assert.same({ mf.cuda.mem_get_info(0) }, { mf.cuda.mem_get_info("cuda:0") })
    collectgarbage()
    collectgarbage()
    local base = mf.cuda.memory_allocated()
    do
      local _ = mf.empty({ 4, 1024, 1024 }, { device = "cuda:0" }) -- 16 MiB
    end
    collectgarbage()
    collectgarbage()
    assert.equal(base, mf.cuda.memory_allocated())
    assert.is_true(mf.cuda.max_memory_allocated() >= base + 16 * 2 ^ 20)
    mf.cuda.reset_peak_memory_stats()
    assert.equal(base, mf.cuda.max_memory_allocated())
    local keep = mf.empty({ 1024, 1024 }, { device = "cuda:0" })
    assert.equal(mf.cuda.memory_allocated(), mf.cuda.max_memory_allocated())
    assert.is_true(mf.cuda.memory_allocated() >= base + 4 * 2 ^ 20)
    keep = nil -- luacheck: ignore
    H.err(function() mf.cuda.mem_get_info("cuda:" .. mf.cuda.device_count()) end, "no such device")
  end)

  it("profile: each op's calls and GPU time while on, none after off", function()
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    local a = mf.randn({ 64, 64 }):cuda()
    mf.cuda.profile(true)
    for _ = 1, 3 do local _ = a:matmul(a):relu() end
    local _ = a:sum()
    local r = mf.cuda.profile_report()
    local by = {}
    for i, e in ipairs(r) do
      by[e.op] = e
      assert.is_true(e.ms >= 0 and e.calls >= 1, e.op)
      if i > 1 then assert.is_true(r[i - 1].ms >= e.ms, "sorted by GPU time") end
    end
    assert.equal(3, by.matmul.calls)
    assert.equal(3, by.relu.calls)
    assert.equal(1, by.sum.calls)
    mf.cuda.profile(false)
    local _ = a:matmul(a) -- not profiled: the report is still the stopped profile's
    assert.equal(3, (function()
      for _, e in ipairs(mf.cuda.profile_report()) do if e.op == "matmul" then return e.calls end end
    end)())
    mf.cuda.profile(true) -- a fresh one
    assert.same({}, mf.cuda.profile_report())
    local _ = a:cuda(1 < mf.cuda.device_count() and 1 or 0):exp() -- a device made on the way counts
    assert.equal("exp", mf.cuda.profile_report()[1].op)
    mf.cuda.profile(false)
  end)
end)

describe("gpu_options.allow_growth", function()
  it("mf.cuda.reserve_memory checks its GPU argument; without a GPU it reserves nothing", function()
    H.err(function() mf.cuda.reserve_memory(-1) end, "bad GPU index -1")
    H.err(function() mf.cuda.reserve_memory("cpu") end, "'cpu' is not a CUDA device")
    H.err(function() mf.cuda.reserve_memory("tpu:0") end, "unknown device 'tpu:0'")
    H.err(function() mf.cuda.reserve_memory(mf.cuda.device_count()) end,
      "cuda:" .. mf.cuda.device_count() .. ": ")
    if GPU then return pending("this machine has a GPU (the reservation is tested in a child below)") end
    assert.equal(0, mf.cuda.reserve_memory())
    assert.equal(0, mf.cuda.memory_reserved(0))
    -- (a build without the CUDA backend, such as the sanitizer build, says so instead)
    local built = not (mf.cuda.why_unavailable() or ""):find("built without the CUDA backend", 1, true)
    local none = built and "no CUDA device is available" or "built without the CUDA backend"
    H.err(function() mf.cuda.reserve_memory(0) end, none)
    H.err(function() mf.cuda.reserve_memory("cuda:0") end, none)
    -- a session asking for it on a machine without a GPU has nothing to reserve
    local s <close> = mf.Session { config = { gpu_options = { allow_growth = false } } }
    assert.truthy(s)
    assert.equal(0, mf.cuda.memory_reserved(0))
  end)

  -- Runs fn with mf.cuda's device_count and reserve_memory replaced: n GPUs, and reserve_memory
  -- recording its argument (or failing with fail); returns the GPUs asked for, fn's error.
  local function with_fake_gpus(n, fail, fn)
    local cuda = mf.cuda
    local real_count, real_reserve = cuda.device_count, cuda.reserve_memory
    local asked = {}
    cuda.device_count = function() return n end
    cuda.reserve_memory = function(i)
      asked[#asked + 1] = i
      if fail then error(fail, 0) end
      return 1024
    end
    local ok, err = pcall(fn)
    cuda.device_count, cuda.reserve_memory = real_count, real_reserve
    return asked, not ok and err or nil
  end

  it("false reserves each GPU the session may use when it is made; true or left out grows on demand", function()
    local function session(config)
      local s <close> = mf.Session { config = config }
    end
    local asked, err = with_fake_gpus(2, nil, function() session { gpu_options = { allow_growth = false } } end)
    assert.is_nil(err)
    assert.are.same({ 0, 1 }, asked)
    asked, err = with_fake_gpus(2, nil, function()
      session { gpu_options = { allow_growth = false }, device_count = { GPU = 1 } }
    end)
    assert.is_nil(err)
    assert.are.same({ 0 }, asked)
    asked = with_fake_gpus(2, nil, function()
      session { gpu_options = { allow_growth = false }, device_count = { GPU = 0 } }
    end)
    assert.are.same({}, asked)
    asked = with_fake_gpus(2, nil, function() session { gpu_options = { allow_growth = true } } end)
    assert.are.same({}, asked)
    asked = with_fake_gpus(2, nil, function() session { gpu_options = {} } end)
    assert.are.same({}, asked) -- moonflow's default: growth (TensorFlow 1 would reserve)
    asked = with_fake_gpus(2, nil, function() session {} end)
    assert.are.same({}, asked)
  end)

  it("a reservation that fails is an error at the Session line saying why", function()
    local line
    local asked, err = with_fake_gpus(1, "cuda:0: out of memory: reserving 70.00 GiB up front failed", function()
      line = debug.getinfo(1, "l").currentline + 1
      local s <close> = mf.Session { config = { gpu_options = { allow_growth = false } } }
    end)
    assert.are.same({ 0 }, asked)
    assert.truthy(err)
    assert.truthy(err:find("Session: config.gpu_options.allow_growth = false: cuda:0: out of memory: " ..
      "reserving 70.00 GiB up front failed", 1, true), err)
    assert.truthy(err:find("device_spec.lua:" .. line .. ":", 1, true), err)
  end)
end)

describe("CUDA_VISIBLE_DEVICES", function()
  for _, v in ipairs { "", "-1" } do
    it(("'%s' hides every GPU from a child process, which says so"):format(v), function()
      local out, code = host("CUDA_VISIBLE_DEVICES=" .. H.q(v),
        "-e " .. H.q("print(mf.cuda.device_count(), #mf.list_devices(), mf.cuda.why_unavailable()) " ..
          "print(pcall(function() return mf.zeros{1}:cuda() end))"))
      assert.equal(true, code == 0 or code == true, out)
      local count, ndev, why = out:match("^(%d+)\t(%d+)\t([^\n]*)\n")
      assert.equal("0", count, out)
      assert.equal("1", ndev, out)
      assert.truthy(why:find("no CUDA device is available", 1, true), out)
      assert.truthy(why:find(("CUDA_VISIBLE_DEVICES='%s' hides every GPU"):format(v), 1, true), out)
      assert.truthy(out:find("false\t[^\n]*no CUDA device is available"), out)
    end)
  end

  it("'' or '-1' keeps the CUDA backend library from being loaded at all; `moonflow -v` says why", function()
    local probe = "-e " .. H.q("local n = mf.cuda.device_count() " ..
      "local f = assert(io.open('/proc/self/maps')) local m = f:read('a') f:close() " ..
      "print(n, m:find('libmoonflow_cuda', 1, true) and 'mapped' or 'not mapped', " ..
      "m:find('libcudart', 1, true) and 'cudart' or 'no cudart')")
    for _, v in ipairs { "", "-1", "-1,0" } do
      local out = host("CUDA_VISIBLE_DEVICES=" .. H.q(v), probe)
      assert.equal("0\tnot mapped\tno cudart\n", out)
      out = host("CUDA_VISIBLE_DEVICES=" .. H.q(v), "-v")
      local cuda_line = out:match("\nCUDA: ([^\n]*)\n")
      assert.truthy(cuda_line, out)
      if not (mf.cuda.why_unavailable() or ""):find("built without the CUDA backend", 1, true) then
        assert.equal(("CUDA_VISIBLE_DEVICES='%s' hides every GPU (the CUDA backend library was " ..
          "not loaded)"):format(v), cuda_line)
      end
      local why = out:match("\nGPUs: none %(([^\n]*)%)\n")
      assert.truthy(why, out)
      local _, times = why:gsub("CUDA_VISIBLE_DEVICES", "")
      assert.equal(1, times, why) -- said once
    end
    -- without the variable the library is loaded on the first CUDA call (a CUDA build)
    local built = not (mf.cuda.why_unavailable() or ""):find("built without the CUDA backend", 1, true)
    if built and not os.getenv("CUDA_VISIBLE_DEVICES") then
      local out = host("", probe)
      assert.truthy(out:find("\tmapped\t", 1, true), out)
    end
  end)

  it("inherited or naming a GPU, leaves them to the runtime", function()
    local out = host("", "-e " .. H.q("print(mf.cuda.device_count())"))
    assert.equal(tostring(mf.cuda.device_count()) .. "\n", out)
    if GPU then
      out = host("CUDA_VISIBLE_DEVICES=0", "-e " .. H.q("print(mf.cuda.device_count())"))
      assert.equal("1\n", out)
    end
  end)
end)

describe("moonflow -v", function()
  it("lists the devices, each GPU with its memory, or says why there is none", function()
    local out, code = host("", "-v")
    assert.equal(true, code == 0 or code == true, out)
    local devices = out:match("\ndevices: ([^\n]*)\n")
    assert.truthy(devices, out)
    assert.equal(table.concat(mf.list_devices(), ", "), devices)
    if GPU then
      for i = 0, mf.cuda.device_count() - 1 do
        assert.truthy(out:match("\n  cuda:" .. i .. ": [^\n]+, %d+%.%d GiB, sm_%d+\n"), out)
      end
    else
      local why = out:match("\nGPUs: none %(([^\n]*)%)\n")
      assert.truthy(why, out)
      assert.truthy(why:find("no CUDA device is available", 1, true), out)
    end
    out = host("CUDA_VISIBLE_DEVICES=", "-v")
    assert.truthy(out:find("\nGPUs: none (", 1, true), out)
    assert.truthy(out:find("CUDA_VISIBLE_DEVICES='' hides every GPU", 1, true), out)
  end)
end)

-- ---- the MNIST examples' --device flag ---------------------------------------------------------

local EXAMPLES = { "mnist_softmax.lua", "mnist_cnn.lua", "mnist_softmax_session.lua",
  "mnist_cnn_session.lua" }

-- Runs an example from the repository root on $MOONFLOW_DATA; its output (stdout and stderr) and
-- whether it succeeded.
local function example(name, args)
  local out, code = host("cd " .. H.q(H.root) .. " &&", "examples/" .. name .. " --data " ..
    H.q(DATA) .. " " .. args)
  return out, code == 0 or code == true
end

local function accuracy(out) return tonumber(out:match("test accuracy: ([%d.]+)")) end

describe("the MNIST examples' --device", function()
  for _, name in ipairs(EXAMPLES) do
    it(name .. ": --device cuda without a GPU is an error saying why; a bad device is refused", function()
      if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
      if GPU then
        local out, ok = example(name, "--device cuda:63 --steps 1")
        assert.is_false(ok)
        assert.truthy(out:find("--device cuda:63: no such device", 1, true), out)
        return
      end
      local out, ok = example(name, "--device cuda --steps 1")
      assert.is_false(ok)
      assert.truthy(out:find("--device cuda: no CUDA device is available", 1, true), out)
      out, ok = example(name, "--device tpu --steps 1")
      assert.is_false(ok)
      assert.truthy(out:find("unknown device 'tpu'", 1, true), out)
    end)
  end

  it("on a GPU, the softmax examples reach the CPU's accuracy", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    for _, name in ipairs { "mnist_softmax.lua", "mnist_softmax_session.lua" } do
      local cpu_out, ok1 = example(name, "--steps 300 --device cpu")
      local gpu_out, ok2 = example(name, "--steps 300 --device cuda")
      assert(ok1, cpu_out)
      assert(ok2, gpu_out)
      local a, b = accuracy(cpu_out), accuracy(gpu_out)
      assert.truthy(a and b, gpu_out)
      assert.is_true(math.abs(a - b) <= 0.005, name .. ": cpu " .. a .. ", gpu " .. b)
      assert.is_true(b >= 0.88, name .. ": " .. b)
    end
  end)

  it("on a GPU, the CNN examples' --quick epoch reaches 98.5%", function()
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    if not GPU then return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")") end
    if not CUDNN then return pending("skipped: this build has no cuDNN (conv2d stays on the CPU)") end
    if EMULATED then return pending("skipped: an epoch of the CNN takes hours on the CUDA emulator") end
    for _, name in ipairs { "mnist_cnn.lua", "mnist_cnn_session.lua" } do
      local out, ok = example(name, "--quick --device cuda")
      assert(ok, out)
      assert.is_true((accuracy(out) or 0) >= 0.985, out)
    end
  end)
end)

-- ---- on a GPU ---------------------------------------------------------------------------------

describe("on a GPU", function()
  local function need_gpu()
    if GPU then return true end
    pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")")
    return false
  end

  it("moves tensors with to/cuda/cpu, keeping values, dtypes and autograd", function()
    if not need_gpu() then return end
    local t = mf.tensor { { 1, 2 }, { 3, 4 } }
    local g = t:cuda()
    assert.equal("cuda:0", g:device())
    assert.equal("cuda:0", t:to("/gpu:0"):device())
    assert.equal("cuda:0", t:to("/device:GPU:0"):device())
    assert.equal("cuda:0", t:to { device = "cuda:0", dtype = "float64" }:device())
    assert.equal("float64", t:to("cuda:0", "float64"):dtype())
    assert.equal(g, g:cuda()) -- already there: the same tensor
    H.equal(g:cpu(), { { 1, 2 }, { 3, 4 } })
    assert.equal("cpu", g:cpu():device())
    local w = mf.tensor { 1.5, 2.5 }:cuda():requires_grad()
    local loss = (w * w):sum()
    loss:backward()
    assert.equal("cuda:0", w.grad:device())
    H.equal(w.grad:cpu(), { 3, 5 })
  end)

  it("an op mixing devices is an error naming the op and both devices, with no copy", function()
    if not need_gpu() then return end
    local c, g = mf.ones { 2 }, mf.ones { 2 }:cuda()
    H.err(function() return c + g end, "add: tensors are on different devices (cpu and cuda:0)")
    H.err(function() return g * c end, "mul: tensors are on different devices (cuda:0 and cpu)")
    H.err(function() return mf.matmul(mf.ones { 2, 2 }, mf.ones { 2, 2 }:cuda()) end,
      "matmul: tensors are on different devices (cpu and cuda:0)")
    H.err(function() return mf.cat({ c, g }, 1) end, "cat: tensors are on different devices")
    H.err(function() return mf.where(mf.ones({ 2 }, { dtype = "bool" }), c, g) end,
      "different devices")
    -- scalars follow the tensor; values from Lua are not "devices"
    assert.equal("cuda:0", (g + 1):device())
  end)

  it("mf.device makes new tensors on the GPU, nested scopes restore", function()
    if not need_gpu() then return end
    mf.device("/gpu:0", function()
      assert.equal("cuda:0", mf.zeros { 2 }:device())
      assert.equal("cuda:0", mf.randn(3):device())
      assert.equal("cuda:0", mf.tensor { 1, 2 }:device())
      mf.device("/cpu:0", function() assert.equal("cpu", mf.ones { 1 }:device()) end)
      assert.equal("cuda:0", mf.full({ 2 }, 1):device())
    end)
    assert.equal("cpu", mf.zeros { 1 }:device())
    local n = mf.cuda.device_count()
    H.err(function() mf.device("cuda:" .. n, function() end) end, "no such device")
  end)

  it("a session runs /gpu:0 nodes on the GPU and fetches CPU tensors", function()
    if not need_gpu() then return end
    local g = mf.Graph()
    local x, y
    g:as_default(function()
      x = mf.placeholder("float32", { 2, 2 }, "x")
      y = mf.device("/gpu:0", function() return mf.matmul(x, x) + 1 end)
    end)
    local sess <close> = mf.Session { graph = g, config = { log_device_placement = true } }
    local out
    local lines = capture_stderr(function() out = sess:run(y, { [x] = { { 1, 2 }, { 3, 4 } } }) end)
    assert.equal("cpu", out:device())
    H.equal(out, { { 8, 11 }, { 16, 23 } })
    assert.truthy(table.concat(lines, "\n"):find("/device:GPU:0", 1, true))
  end)

  it("memory statistics follow the tensors; the fraction cap makes a clear out-of-memory error", function()
    if not need_gpu() then return end
    collectgarbage()
    mf.cuda.synchronize()
    mf.cuda.empty_cache()
    local base = mf.cuda.memory_allocated()
    local t = mf.empty({ 1024, 1024 }, { device = "cuda:0" }) -- 4 MiB
    assert.is_true(mf.cuda.memory_allocated() >= base + 4 * 1024 * 1024)
    assert.is_true(mf.cuda.max_memory_allocated() >= mf.cuda.memory_allocated())
    assert.is_true(mf.cuda.memory_reserved("cuda:0") >= mf.cuda.memory_allocated(0))
    t = nil
    collectgarbage()
    collectgarbage()
    assert.equal(base, mf.cuda.memory_allocated())
    local ok, err = pcall(function()
      local s <close> = mf.Session { config = { gpu_options = { per_process_gpu_memory_fraction = 1e-4 } } }
      mf.cuda.empty_cache()
      return mf.empty({ 1024, 1024, 1024 }, { device = "cuda:0" }) -- 4 GiB
    end)
    mf.cuda.set_memory_fraction(1)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("out of memory", 1, true), err)
  end)

  it("device_count{GPU = 0} in a session leaves other sessions their GPU", function()
    if not need_gpu() then return end
    local g = mf.Graph()
    local x, y
    g:as_default(function()
      x = mf.placeholder("float32", { 2 }, "x")
      y = mf.device("/gpu:0", function()
        local c = mf.tensor { 2, 2 } -- made on the GPU (the scope's default device)
        assert.equal("cuda:0", c:device())
        return x * c
      end)
    end)
    local cpu_only <close> = mf.Session { graph = g, config = { device_count = { GPU = 0 },
      allow_soft_placement = true, log_device_placement = true } }
    local lines = capture_stderr(function() H.equal(cpu_only:run(y, { [x] = { 1, 2 } }), { 2, 4 }) end)
    assert.truthy(table.concat(lines, "\n"):find("device_count.GPU = 0 hides it", 1, true))
    local gpu <close> = mf.Session { graph = g, config = { log_device_placement = true } }
    lines = capture_stderr(function() H.equal(gpu:run(y, { [x] = { 1, 2 } }), { 2, 4 }) end)
    assert.truthy(table.concat(lines, "\n"):find("(mul): /device:GPU:0", 1, true))
  end)

  it("MNIST batches come from the CPU inside a GPU scope", function()
    if not need_gpu() then return end
    if not DATA then return pending("MOONFLOW_DATA is not set (the MNIST files' folder)") end
    local ds = mf.data.mnist.read_data_sets(DATA, { one_hot = false, validation_size = 0 }).test
    mf.device("cuda", function()
      for _ = 1, 3 do -- past the end of an epoch, so it reshuffles
        local xs, ys = ds:next_batch(4000)
        assert.equal("cpu", xs:device())
        assert.equal("cpu", ys:device())
        assert.equal("cuda:0", xs:to("cuda"):device())
      end
    end)
  end)

  it("a Session with allow_growth = false reserves its fraction up front; tensors are carved from it", function()
    if not need_gpu() then return end
    -- in a child: the reservation lasts until the process ends
    local out = host("", "-e " .. H.q(
      "local before = mf.cuda.memory_reserved(0) " ..
      "local s = mf.Session { config = { gpu_options = { allow_growth = false, " ..
      "  per_process_gpu_memory_fraction = 0.2 } } } " ..
      "local r = mf.cuda.memory_reserved(0) " ..
      "local t = mf.empty({ 64, 1024, 1024 }, { device = 'cuda:0' }) " ..
      "local r2, a = mf.cuda.memory_reserved(0), mf.cuda.memory_allocated(0) " ..
      "local ok, err = pcall(mf.empty, { 64 * 1024, 1024, 1024 }, { device = 'cuda:0' }) " ..
      "print(before, r, r2, a, ok, err)"))
    local before, r, r2, a, ok, err = out:match("^(%d+)\t(%d+)\t(%d+)\t(%d+)\t(%a+)\t([^\n]*)\n")
    assert.truthy(before, out)
    before, r, r2, a = tonumber(before), tonumber(r), tonumber(r2), tonumber(a)
    assert.is_true(r > before + 256 * 1024 * 1024, out) -- a fifth of the GPU, at once
    assert.equal(r, r2, out)                            -- the 256 MiB tensor came from it
    assert.is_true(a >= 256 * 1024 * 1024, out)
    assert.equal("false", ok, out)
    assert.truthy(err:find("out of memory", 1, true), out)
    assert.truthy(err:find("reserved up front (allow_growth = false)", 1, true), out)
    assert.truthy(err:find("free on the GPU", 1, true), out)
    -- growth (the default): nothing is taken before a tensor needs it
    out = host("", "-e " .. H.q(
      "local s = mf.Session { config = { gpu_options = { allow_growth = true } } } " ..
      "local s2 = mf.Session { config = { gpu_options = { per_process_gpu_memory_fraction = 0.2 } } } " ..
      "print(mf.cuda.memory_reserved(0))"))
    assert.equal("0\n", out)
  end)

  it("a child with CUDA_VISIBLE_DEVICES='' sees none while this process sees them", function()
    if not need_gpu() then return end
    local out = host("CUDA_VISIBLE_DEVICES=", "-e " .. H.q("print(mf.cuda.device_count())"))
    assert.equal("0\n", out)
    assert.is_true(mf.cuda.device_count() > 0)
  end)
end)
