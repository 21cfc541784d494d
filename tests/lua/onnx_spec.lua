-- onnx_spec.lua — mf.onnx.export: the file's structure decoded in Lua (moonflow/protobuf.lua),
-- then the real readers (tests/lua/fixtures/onnx_check.py through /usr/bin/python3:
-- onnx.checker.check_model(full_check=True) and onnxruntime) run each model on inputs saved here
-- and compare with moonflow's outputs, for two batch sizes (the dynamic dimension N). The Python
-- checks are pending, saying so, when onnx cannot be imported.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn = mf.nn
local F = nn.functional
local pb = require "moonflow.protobuf"

local PY = "/usr/bin/python3"
local CHECK = H.root .. "/tests/lua/fixtures/onnx_check.py"
local dir = H.tmpdir("mf_onnx")
teardown(function() os.execute("rm -rf " .. H.q(dir)) end)

local onnx_missing -- nil: not known yet; false: importable; a string: why not
local function python_ready()
  if onnx_missing == nil then
    local p = io.popen(PY .. " -c 'import onnx, numpy' 2>&1; echo rc=$?")
    local out = p:read("a")
    p:close()
    if out:match("rc=0%s*$") then
      onnx_missing = false
    else
      onnx_missing = "skipped the onnx/onnxruntime checks: onnx cannot be imported by " .. PY .. ": " ..
        out:gsub("%s*rc=%d+%s*$", ""):gsub("\n", " ")
    end
  end
  return not onnx_missing
end

-- The last line of a test whose Python checks were skipped: pending, saying why (the Lua-side
-- assertions before it have run).
local function say_if_skipped()
  if onnx_missing then pending(onnx_missing) end
end

-- check(path, cases, dims) runs the checker: cases = { {inputs = {name = t}, outputs = {name = t}} },
-- dims = { "input=N,784", ... }. Returns its output (asserting success).
local function check(path, cases, dims)
  local args = { PY, CHECK, path }
  for _, d in ipairs(dims or {}) do args[#args + 1] = "--dims " .. H.q(d) end
  for k, c in ipairs(cases) do
    local arrays = {}
    for n, t in pairs(c.inputs) do arrays["in_" .. n] = t end
    for n, t in pairs(c.outputs) do arrays["out_" .. n] = t end
    local f = ("%s.case%d.npz"):format(path, k)
    mf.save_npz(f, arrays)
    args[#args + 1] = H.q(f)
  end
  args[3] = H.q(path)
  local p = io.popen(table.concat(args, " ") .. " 2>&1; echo rc=$?")
  local out = p:read("a")
  p:close()
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  assert(rc == 0, "onnx_check.py failed (rc " .. tostring(rc) .. "):\n" .. out)
  local n = 0
  for _ in out:gmatch("case %d+: ") do n = n + 1 end
  assert.are.equal(#cases, n, out)
  return out
end

-- The decoded model: { ir, opset, ops = {op types}, nodes, inits = {name = {dims, type, raw}},
-- inputs = {{name, dims}}, outputs = {{name, dims}} } (dims: numbers or "N").
local function decode(path)
  local m = pb.decode(assert(H.readfile(path)))
  local g = pb.decode(m[7][1])
  local r = { ir = m[1][1], opset = pb.decode(m[8][1])[2][1], ops = {}, nodes = {}, inits = {},
    inputs = {}, outputs = {} }
  for _, nb in ipairs(g[1] or {}) do
    local n = pb.decode(nb)
    local node = { op = n[4][1], inputs = n[1] or {}, outputs = n[2], attrs = {} }
    for _, ab in ipairs(n[5] or {}) do
      local a = pb.decode(ab)
      local kind, v = a[20][1]
      if kind == 2 then v = a[3][1]
      elseif kind == 1 then v = pb.as_float(a[2][1])
      elseif kind == 7 then v = a[8] or {}
      end
      node.attrs[a[1][1]] = v
    end
    r.ops[#r.ops + 1] = node.op
    r.nodes[#r.nodes + 1] = node
  end
  for _, tb in ipairs(g[5] or {}) do
    local t = pb.decode(tb)
    r.inits[t[8][1]] = { dims = t[1] or {}, type = t[2][1], raw = t[9][1] }
  end
  local function values(list, into)
    for _, vb in ipairs(list or {}) do
      local v = pb.decode(vb)
      local tt = pb.decode(pb.decode(v[2][1])[1][1])
      local dims = {}
      for _, db in ipairs(tt[2] and pb.decode(tt[2][1])[1] or {}) do
        local d = pb.decode(db)
        dims[#dims + 1] = d[1] and d[1][1] or d[2][1]
      end
      into[#into + 1] = { name = v[1][1], elem = tt[1][1], dims = dims }
    end
  end
  values(g[11], r.inputs)
  values(g[12], r.outputs)
  return r
end

local function count(list, x)
  local n = 0
  for _, v in ipairs(list) do if v == x then n = n + 1 end end
  return n
end

-- Exports a module (in evaluation mode), checks it on batches of 2 and 5; returns the decoded file.
local function module_roundtrip(name, model, shape, dims)
  model:evaluate()
  local path = dir .. "/" .. name .. ".onnx"
  assert.are.equal(path, mf.onnx.export(model, path, { inputs = { shape } }))
  local m = decode(path)
  if python_ready() then
    local cases = {}
    for _, n in ipairs { 2, 5 } do
      local s = { table.unpack(shape) }
      s[1] = n
      local x = mf.randn(s)
      cases[#cases + 1] = { inputs = { input = x }, outputs = { output = mf.no_grad(function() return model(x) end) } }
    end
    check(path, cases, dims)
  end
  return m
end

-- the tutorial's CNN of examples/mnist_cnn.lua (examples/mnist_model.lua), with its initial values
local CNN = dofile(H.root .. "/examples/mnist_model.lua")
local function tutorial_cnn(nhwc) return CNN.init(CNN.build(nhwc and "NHWC" or "NCHW")) end

describe("mf.onnx.export of nn modules", function()
  it("t:tobytes gives the row-major little-endian bytes of any view", function()
    local t = mf.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, { dtype = "float32" })
    local b = t:t():tobytes()
    assert.are.same({ 1.0, 4.0, 2.0, 5.0, 3.0, 6.0 }, { table.unpack({ string.unpack("<ffffff", b) }, 1, 6) })
    assert.are.equal(48, #t:tobytes("float64"))
    assert.are.same({ 7, -1 }, { table.unpack({ string.unpack("<i8<i8", mf.tensor({ 7, -1 }):tobytes()) }, 1, 2) })
    assert.are.equal("", mf.zeros({ 0 }):tobytes())
  end)

  it("an MLP: Gemm with transB, LogSoftmax, Dropout left out; weights as raw float32", function()
    mf.manual_seed(1)
    local model = nn.Sequential { nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10),
      nn.LogSoftmax() }
    local m = module_roundtrip("mlp", model, { -1, 784 }, { "input=N,784", "output=N,10" })
    assert.are.equal(8, m.ir)
    assert.are.equal(13, m.opset)
    assert.are.same({ "Gemm", "Relu", "Gemm", "LogSoftmax" }, m.ops)
    assert.are.equal(1, m.nodes[1].attrs.transB)
    assert.are.equal(-1, m.nodes[4].attrs.axis)
    local w = m.inits[m.nodes[1].inputs[2]]
    assert.are.same({ 64, 784 }, w.dims)
    assert.are.equal(1, w.type) -- FLOAT
    assert.are.equal(model[1].weight:tobytes(), w.raw)
    assert.are.same({ "N", 784 }, m.inputs[1].dims)
    assert.are.same({ "N", 10 }, m.outputs[1].dims)
    assert.is_true(model[3].training == false) -- the mode is the one the model had
    model:train()
    mf.onnx.export(model, dir .. "/mlp_train_mode.onnx", { inputs = { { -1, 784 } } })
    assert.is_true(model[3].training) -- restored
    assert.are.equal(H.readfile(dir .. "/mlp.onnx"), H.readfile(dir .. "/mlp_train_mode.onnx")) -- as evaluated
    say_if_skipped()
  end)

  it("the tutorial CNN in NCHW: Reshape, Conv with same pads, MaxPool, Flatten, Gemm", function()
    mf.manual_seed(2)
    local m = module_roundtrip("cnn_nchw", tutorial_cnn(false), { -1, 784 }, { "input=N,784", "output=N,10" })
    assert.are.same({ "Reshape", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm",
      "Relu", "Gemm" }, m.ops)
    assert.are.same({ 2, 2, 2, 2 }, m.nodes[2].attrs.pads)
    assert.are.same({ 5, 5 }, m.nodes[2].attrs.kernel_shape)
    assert.are.same({ 2, 2 }, m.nodes[4].attrs.strides)
    local shape = m.inits[m.nodes[1].inputs[2]]
    assert.are.same({ 0, 1, 28, 28 }, { table.unpack({ string.unpack("<i8<i8<i8<i8", shape.raw) }, 1, 4) })
    say_if_skipped()
  end)

  it("the tutorial CNN in NHWC: the ONNX model takes NHWC too, with one Transpose each way", function()
    mf.manual_seed(3)
    local m = module_roundtrip("cnn_nhwc", tutorial_cnn(true), { -1, 784 }, { "input=N,784", "output=N,10" })
    assert.are.same({ "Reshape", "Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
      "Transpose", "Flatten", "Gemm", "Relu", "Gemm" }, m.ops)
    assert.are.same({ 0, 3, 1, 2 }, m.nodes[2].attrs.perm)
    assert.are.same({ 0, 2, 3, 1 }, m.nodes[9].attrs.perm)
    say_if_skipped()
  end)

  it("BatchNorm2d and BatchNorm1d with running stats from training steps (NCHW and NHWC)", function()
    mf.manual_seed(4)
    for _, df in ipairs { "NCHW", "NHWC" } do
      local nhwc = df == "NHWC"
      local model = nn.Sequential {
        nn.Conv2d(3, 4, 3, { padding = 1, data_format = df }),
        nn.BatchNorm2d(4, { data_format = df }), nn.ReLU(),
        nn.Sequential { nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.BatchNorm1d(5) }, -- nested
      }
      local opt = mf.optim.SGD(model:parameters(), { lr = 0.05 })
      model:train()
      for _ = 1, 4 do
        local x = mf.randn(nhwc and { 8, 6, 6, 3 } or { 8, 3, 6, 6 }) * 2 + 1
        local loss = model(x):square():mean()
        opt:zero_grad()
        loss:backward()
        opt:step()
      end
      local rm = model[2].running_mean
      assert.is_true(rm:abs():sum():item() > 0.01, "running mean still trivial")
      assert.is_true((model[2].running_var - 1):abs():sum():item() > 0.01, "running var still trivial")
      local m = module_roundtrip("bn_" .. df, model, nhwc and { -1, 6, 6, 3 } or { -1, 3, 6, 6 },
        { "output=N,5" })
      assert.are.equal(2, count(m.ops, "BatchNormalization"))
      assert.are.equal(nhwc and 2 or 0, count(m.ops, "Transpose"))
      for _, n in ipairs(m.nodes) do
        if n.op == "BatchNormalization" then
          assert.is_true(math.abs(n.attrs.epsilon - 1e-5) < 1e-9)
          if #m.inits[n.inputs[4]].dims == 1 and m.inits[n.inputs[4]].dims[1] == 4 then
            assert.are.equal(rm:tobytes(), m.inits[n.inputs[4]].raw)
          end
        end
      end
    end
    say_if_skipped()
  end)

  it("AvgPool (padding counted or not), Tanh, Sigmoid, Flatten(3), Softmax(dim 2), Identity", function()
    mf.manual_seed(5)
    local model = nn.Sequential {
      nn.Conv2d(2, 3, 3), nn.Tanh(),
      nn.AvgPool2d(3, { stride = 2, padding = 1 }), -- torch: the padding is counted
      nn.AvgPool2d(2, { padding = "same" }),        -- TensorFlow: it is not (odd pads after)
      nn.Sigmoid(), nn.Identity(),
      nn.Flatten(3), nn.Softmax(2),
    }
    local m = module_roundtrip("avgpool", model, { -1, 2, 11, 11 }, { "input=N,2,11,11", "output=N,3,9" })
    assert.are.same({ "Conv", "Tanh", "AveragePool", "AveragePool", "Sigmoid", "Reshape", "Softmax" }, m.ops)
    assert.are.equal(1, m.nodes[3].attrs.count_include_pad)
    assert.are.same({ 1, 1, 1, 1 }, m.nodes[3].attrs.pads)
    assert.are.equal(0, m.nodes[4].attrs.count_include_pad)
    assert.are.same({ 0, 0, 1, 1 }, m.nodes[4].attrs.pads)
    assert.are.equal(1, m.nodes[7].attrs.axis)
    say_if_skipped()
  end)

  it("LogSoftmax over a 1-based dim, Linear on a 3-D input, Reshape{-1, ...}", function()
    mf.manual_seed(6)
    local model = nn.Sequential { nn.Reshape { -1, 4, 6 }, nn.Linear(6, 3), nn.LogSoftmax(2) }
    local m = module_roundtrip("logsoftmax", model, { -1, 24 }, { "output=N,4,3" })
    assert.are.same({ "Reshape", "MatMul", "Add", "LogSoftmax" }, m.ops)
    assert.are.equal(1, m.nodes[4].attrs.axis)
    assert.are.equal(model[2].weight:t():tobytes(), m.inits[m.nodes[2].inputs[2]].raw)
    say_if_skipped()
  end)

  it("errors: unsupported layer, bad inputs spec, unwritable path", function()
    local My = nn.class("MyLayer")
    function My:forward(x) return x end
    local path = dir .. "/err.onnx"
    H.err(function() mf.onnx.export(nn.Sequential { nn.Linear(4, 2), nn.Sequential { My() } }, path,
      { inputs = { { -1, 4 } } }) end, "unsupported layer MyLayer at 2.1")
    H.err(function() mf.onnx.export(nn.Sequential { nn.Linear(4, 2), nn.CrossEntropyLoss() }, path,
      { inputs = { { -1, 4 } } }) end, "unsupported layer")
    local lin = nn.Linear(4, 2)
    H.err(function() mf.onnx.export(lin, path) end, "options {inputs = ...} are needed")
    H.err(function() mf.onnx.export(lin, path, {}) end, "a module takes one input")
    H.err(function() mf.onnx.export(lin, path, { inputs = { { -1, 4 }, { -1, 4 } } }) end, "got 2 shapes")
    H.err(function() mf.onnx.export(lin, path, { inputs = { { -1, "4" } } }) end, "inputs[1][2] is 4")
    H.err(function() mf.onnx.export(lin, path, { inputs = { { 4, -1 } } }) end, "only the first (batch)")
    H.err(function() mf.onnx.export(lin, path, { inputs = { 784 } }) end, "inputs[1] must be a shape")
    H.err(function() mf.onnx.export(lin, path, { inputs = { { -1, 5 } } }) end, "expected an input with 4 features")
    H.err(function() mf.onnx.export(lin, path, { inputs = { { -1, 4 } }, opset = 9 }) end, "opset must be")
    H.err(function() mf.onnx.export(42, path, { inputs = { { -1, 4 } } }) end, "expected an nn module")
    H.err(function() mf.onnx.export(lin, dir .. "/no/such/dir/m.onnx", { inputs = { { -1, 4 } } }) end,
      "cannot write '" .. dir .. "/no/such/dir/m.onnx'")
    assert.is_nil(H.readfile(path)) -- nothing written by the failures
    -- a failed export leaves an existing file as it was
    mf.onnx.export(lin, path, { inputs = { { -1, 4 } } })
    local before = H.readfile(path)
    H.err(function() mf.onnx.export(nn.Sequential { lin, My() }, path, { inputs = { { -1, 4 } } }) end, "MyLayer")
    assert.are.equal(before, H.readfile(path))
    local p = io.popen("ls " .. H.q(dir) .. " | grep -c tmp")
    assert.are.equal("0", p:read("l"))
    p:close()
  end)
end)

-- ---- graphs ---------------------------------------------------------------------------------------

local function softmax_graph()
  local g = mf.Graph()
  local r = { g = g }
  g:as_default(function()
    r.x = mf.placeholder(mf.float32, { -1, 784 }, "x")
    r.y_ = mf.placeholder(mf.float32, { -1, 10 }, "y_")
    mf.variable_scope("inference", function()
      local W = mf.Variable(mf.zeros { 784, 10 }, { name = "W" })
      local b = mf.Variable(mf.zeros { 10 }, { name = "b" })
      r.logits = mf.matmul(r.x, W) + b
      r.y = mf.nn.softmax(r.logits)
    end)
    local loss = mf.reduce_mean(mf.nn.softmax_cross_entropy_with_logits { labels = r.y_, logits = r.logits })
    r.train = mf.train.GradientDescentOptimizer(0.5):minimize(loss)
    r.init = mf.global_variables_initializer()
  end)
  return r
end

-- n one-hot rows of 10 random classes
local function one_hot(n)
  local rows = {}
  for i = 1, n do
    rows[i] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }
    rows[i][math.random(1, 10)] = 1
  end
  return mf.tensor(rows, { dtype = "float32" })
end

local function graph_cases(sess, feeds_for, outs, names)
  local cases = {}
  for _, n in ipairs { 2, 5 } do
    local x = mf.rand { n, 784 }
    local vals = sess:run(outs, feeds_for(x))
    local c = { inputs = { x = x }, outputs = {} }
    for i, name in ipairs(names) do c.outputs[name] = vals[i] end
    cases[#cases + 1] = c
  end
  return cases
end

describe("mf.onnx.export of graphs", function()
  it("the softmax regression from a Session, after training steps", function()
    mf.manual_seed(7)
    local r = softmax_graph()
    local sess <close> = mf.Session { graph = r.g }
    sess:run(r.init)
    for _ = 1, 5 do
      local xs = mf.rand { 20, 784 }
      local ys = one_hot(20)
      sess:run(r.train, { [r.x] = xs, [r.y_] = ys })
    end
    local path = dir .. "/softmax.onnx"
    mf.onnx.export(sess, path, { inputs = { r.x }, outputs = { r.y } })
    local m = decode(path)
    assert.are.same({ "MatMul", "Add", "Softmax" }, m.ops)
    assert.are.equal(sess:variable_value(r.g:get_tensor_by_name("inference/W:0")):tobytes(),
      m.inits["inference/W"].raw)
    assert.are.same({ { name = "x", elem = 1, dims = { "N", 784 } } }, m.inputs)
    assert.are.same({ { name = "inference/Softmax", elem = 1, dims = { "N", 10 } } }, m.outputs)
    if python_ready() then
      check(path, graph_cases(sess, function(x) return { [r.x] = x } end, { r.y }, { "inference/Softmax" }),
        { "x=N,784", "inference/Softmax=N,10" })
    end
    -- by name, two outputs (one feeding the other)
    mf.onnx.export(sess, path, { inputs = { "x:0" }, outputs = { r.y, "inference/add:0" } })
    m = decode(path)
    assert.are.same({ "MatMul", "Add", "Softmax" }, m.ops)
    assert.are.equal("inference/add", m.outputs[2].name)
    say_if_skipped()
  end)

  it("the tutorial CNN graph (NHWC, dropout fed by a placeholder) from a Session", function()
    mf.manual_seed(8)
    local g = mf.Graph()
    local x, drop, logits
    g:as_default(function()
      x = mf.placeholder(mf.float32, { -1, 784 }, "x")
      drop = mf.placeholder(mf.float32, {}, "drop_prob")
      logits = CNN.inference(x, drop, { 8, 16, 64 }) -- the tutorial's graph, narrower
    end)
    local sess <close> = mf.Session { graph = g }
    sess:run(g:as_default(function() return mf.global_variables_initializer() end))
    local path = dir .. "/cnn_graph.onnx"
    mf.onnx.export(sess, path, { inputs = { x }, outputs = { logits } })
    local m = decode(path)
    assert.are.same({ "Reshape", "Transpose", "Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool",
      "Transpose", "Reshape", "MatMul", "Add", "Relu", "MatMul", "Add" }, m.ops)
    assert.are.same({ "N", 10 }, m.outputs[1].dims) -- known although dropout hid it from the graph
    if python_ready() then
      check(path, graph_cases(sess, function(xs) return { [x] = xs, [drop] = 0 } end, { logits },
        { "inference/add_1" }), { "x=N,784", "inference/add_1=N,10" })
    end
    say_if_skipped()
  end)

  it("nn layers on a placeholder (Conv2D, BatchNorm, AvgPool, Flatten, Linear, Softmax), t(), numbers", function()
    mf.manual_seed(10)
    local model = nn.Sequential { nn.Conv2d(1, 4, 3, { padding = 1 }), nn.BatchNorm2d(4), nn.ReLU(),
      nn.AvgPool2d(2, { padding = 1 }), nn.Flatten(), nn.Linear(4 * 5 * 5, 6), nn.Tanh(), nn.Softmax() }
    model:train()
    for _ = 1, 3 do model(mf.randn { 4, 1, 8, 8 } * 3) end
    model:evaluate()
    local g = mf.Graph()
    local x, y, z
    g:as_default(function()
      x = mf.placeholder(mf.float32, { -1, 1, 8, 8 }, "x")
      y = model(x)
      z = mf.exp(mf.matmul(y, mf.constant(mf.randn { 6, 3 })):t():t()) * 0.5 - 1
    end)
    local path = dir .. "/layers_graph.onnx"
    mf.onnx.export(g, path, { inputs = { x }, outputs = { y, z } })
    local m = decode(path)
    assert.are.same({ "Conv", "BatchNormalization", "Relu", "AveragePool", "Reshape", "Gemm", "Tanh",
      "Softmax", "MatMul", "Transpose", "Transpose", "Exp", "Mul", "Sub" }, m.ops)
    assert.are.equal(model[2].running_var:tobytes(), m.inits[m.nodes[2].inputs[5]].raw)
    assert.are.same({ "N", 3 }, m.outputs[2].dims)
    if python_ready() then
      local sess <close> = mf.Session { graph = g }
      local cases = {}
      for _, n in ipairs { 2, 5 } do
        local xs = mf.randn { n, 1, 8, 8 }
        local r = sess:run({ y, z }, { [x] = xs })
        assert.is_true(mf.allclose(r[1], model(xs), 1e-5, 1e-6))
        cases[#cases + 1] = { inputs = { x = xs }, outputs = { Softmax = r[1], sub = r[2] } }
      end
      check(path, cases, { "x=N,1,8,8", "Softmax=N,6" })
    end
    say_if_skipped()
  end)

  it("a frozen graph (convert_variables_to_constants): the GraphDef or the graph loaded back", function()
    mf.manual_seed(9)
    local r = softmax_graph()
    local sess <close> = mf.Session { graph = r.g }
    sess:run(r.init)
    sess:run(r.train, { [r.x] = mf.rand { 10, 784 }, [r.y_] = one_hot(10) })
    local frozen = mf.graph_util.convert_variables_to_constants(sess, r.g, { "inference/Softmax" })
    local pbfile = dir .. "/frozen.pb"
    frozen:save(pbfile)
    local loaded = mf.load_graph(pbfile)
    for _, src in ipairs { frozen, loaded } do
      local path = dir .. "/frozen.onnx"
      mf.onnx.export(src, path, { inputs = { "x" }, outputs = { "inference/Softmax:0" } })
      local m = decode(path)
      assert.are.same({ "MatMul", "Add", "Softmax" }, m.ops)
      assert.are.equal(sess:variable_value(r.g:get_tensor_by_name("inference/b:0")):tobytes(),
        m.inits[m.nodes[2].inputs[2]].raw)
      if python_ready() then
        check(path, graph_cases(sess, function(x) return { [r.x] = x } end, { r.y }, { "inference/Softmax" }),
          { "x=N,784" })
      end
    end
    say_if_skipped()
  end)

  it("a GraphDef with TensorFlow's own ops: those whose attrs change nothing; others are errors", function()
    mf.manual_seed(11)
    local GD = require "moonflow.graph.graphdef"
    local nodes = {}
    local function node(name, op, input, attr)
      nodes[#nodes + 1] = { name = name, op = op, input = input, device = "", attr = attr or {} }
    end
    local function const(name, t)
      node(name, "Const", {}, { dtype = { type = t:dtype() }, value = { tensor = GD.tensor_bytes(t) } })
    end
    node("x", "Placeholder", {}, { dtype = { type = "float32" }, shape = { shape = { -1, 4 } } })
    const("w", mf.randn { 4, 3 })
    const("b", mf.randn { 3 })
    node("mm", "MatMul", { "x", "w" })
    node("add", "AddV2", { "mm", "b" })
    node("id", "Identity", { "add" })
    node("relu", "Relu", { "id" })
    node("probs", "Softmax", { "relu" })
    node("mmt", "MatMul", { "x", "x" }, { transpose_b = { b = true } })
    local gd = GD.new(nodes)
    local path = dir .. "/tf_ops.onnx"
    mf.onnx.export(gd, path, { inputs = { "x" }, outputs = { "probs" } })
    local m = decode(path)
    assert.are.same({ "MatMul", "Add", "Relu", "Softmax" }, m.ops)
    assert.are.same({ "N", 3 }, m.outputs[1].dims)
    if python_ready() then
      local g = mf.Graph()
      g:as_default(function() mf.import_graph_def(gd, { name = "" }) end)
      local sess <close> = mf.Session { graph = g }
      local cases = {}
      for _, n in ipairs { 2, 5 } do
        local xs = mf.randn { n, 4 }
        cases[#cases + 1] = { inputs = { x = xs }, outputs = { probs = sess:run("probs:0", { ["x:0"] = xs }) } }
      end
      check(path, cases, { "x=N,4", "probs=N,3" })
    end
    H.err(function() mf.onnx.export(gd, path, { inputs = { "x" }, outputs = { "mmt" } }) end,
      "the TensorFlow op MatMul ('mmt') read from a GraphDef is not supported")
    say_if_skipped()
  end)

  it("errors: placeholder not in inputs, uninitialised variable, unsupported op, bad lists", function()
    local r = softmax_graph()
    local sess <close> = mf.Session { graph = r.g }
    local path = dir .. "/gerr.onnx"
    H.err(function() mf.onnx.export(sess, path, { inputs = { r.x }, outputs = { r.y } }) end,
      "variable 'inference/W' has no value in this session")
    sess:run(r.init)
    H.err(function() mf.onnx.export(sess, path, { inputs = { r.y_ }, outputs = { r.y } }) end,
      "placeholder 'x' feeds the outputs but is not one of the inputs")
    local am
    r.g:as_default(function() am = mf.argmax(r.y, 2) end)
    H.err(function() mf.onnx.export(sess, path, { inputs = { r.x }, outputs = { am } }) end,
      "graph op ArgMax ('ArgMax') is not supported")
    H.err(function() mf.onnx.export(sess, path, { inputs = { r.x } }) end, "outputs must be a non-empty list")
    H.err(function() mf.onnx.export(sess, path, { inputs = { "nope:0" }, outputs = { r.y } }) end,
      "inputs[1]: no tensor 'nope:0'")
    H.err(function() mf.onnx.export(sess, path, { inputs = { mf.zeros { 2 } }, outputs = { r.y } }) end,
      "inputs[1] must be a symbolic tensor of the graph, got an eager tensor")
    local other = softmax_graph()
    H.err(function() mf.onnx.export(sess, path, { inputs = { other.x }, outputs = { r.y } }) end,
      "belongs to another graph")
    H.err(function() mf.onnx.export(r.g, path, { inputs = { r.x }, outputs = { r.y } }) end,
      "needs a session for its value")
    assert.is_nil(H.readfile(path))
  end)
end)
