-- graph_def_spec.lua — g:as_graph_def(): TensorFlow op names, scoped node names and inputs, attrs
-- (dtype, shape, Const values for each dtype) as Python's GraphDef and TensorBoard's
-- EventAccumulator read them (FileWriter(logdir, sess.graph)); mf.import_graph_def rebuilds every
-- kind of node (operators, methods, mf.* with table arguments, nn functionals, multiple outputs,
-- strings, variables) with the same results; errors for ops moonflow cannot import.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local F = mf.nn.functional

local root = H.tmpdir("mf_graphdef")
teardown(function() os.execute("rm -rf " .. H.q(root)) end)

local have_tb = H.can_import(H.TB_IMPORT)
local py = H.graph_def_py -- (arg, code): Python with graph_pb2 and tensor_util; its output lines

local PRINT_NODES = [[
for n in g.node:
    print(n.name, n.op, ','.join(n.input) or '-', n.device or '-')]]

-- the tutorial's softmax regression graph, with a training step
local function softmax_graph()
  local g = mf.Graph()
  g:as_default(function()
    local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
    local y_ = mf.placeholder(mf.float32, { -1, 10 }, "y_")
    local y
    mf.variable_scope("inference", function()
      local W = mf.Variable(mf.zeros { 784, 10 }, { name = "W" })
      local b = mf.Variable(mf.zeros { 10 }, { name = "b" })
      y = mf.matmul(x, W) + b
    end)
    mf.variable_scope("loss", function() -- the tutorial's first cross entropy
      mf.reduce_mean(-mf.reduce_sum(y_ * mf.log(F.softmax(y, 2)), 2))
    end)
    mf.train.GradientDescentOptimizer(0.5):minimize(g:get_tensor_by_name("loss/Mean:0"))
  end)
  return g
end

local WANT = {
  "x Placeholder - -", "y_ Placeholder - -", "inference/W VariableV2 - -",
  "inference/b VariableV2 - -", "inference/MatMul MatMul x,inference/W -",
  "inference/add AddV2 inference/MatMul,inference/b -",
  "loss/Softmax Softmax inference/add -", "loss/Log Log loss/Softmax -",
  "loss/mul Mul y_,loss/Log -", "loss/Sum Sum loss/mul -", "loss/Neg Neg loss/Sum -",
  "loss/Mean Mean loss/Neg -", "gradients Gradients loss/Mean -",
  "GradientDescent ApplyGradientDescent gradients,gradients:1 -",
}

describe("as_graph_def", function()
  it("names nodes with their scopes, TensorFlow op names, inputs as name or name:k", function()
    local gd = softmax_graph():as_graph_def()
    local got = {}
    for i, nd in ipairs(gd.node) do
      got[i] = ("%s %s %s %s"):format(nd.name, nd.op, #nd.input > 0 and table.concat(nd.input, ",") or "-",
        nd.device ~= "" and nd.device or "-")
    end
    assert.are.same(WANT, got)
    assert.are.equal("float32", gd.node[1].attr.dtype.type)
    assert.are.same({ -1, 784 }, gd.node[1].attr.shape.shape)
    assert.are.same({ 784, 10 }, gd.node[3].attr.shape.shape)
    assert.are.same({ { -1, 10 } }, gd.node[6].attr._output_shapes.list.shape)
    -- a round trip through the bytes keeps it all
    local back = mf.graph_util.read_graph_def((function()
      local p = root .. "/soft.pb"
      gd:save(p)
      return p
    end)())
    assert.are.same(gd.node[6].input, back.node[6].input)
    assert.are.equal(gd:SerializeToString(), back:SerializeToString())
  end)

  it("is parsed by Python's GraphDef, devices included", function()
    if not have_tb then return pending("tensorboard is not importable by /usr/bin/python3") end
    local g = softmax_graph()
    g:as_default(function()
      mf.device("/gpu:0", function() mf.name_scope("extra", function() mf.relu(g:get_tensor_by_name("x:0")) end) end)
    end)
    local p = root .. "/py.pb"
    g:as_graph_def():save(p)
    local out = py(p, "g = graph_pb2.GraphDef()\ng.ParseFromString(open(sys.argv[1], 'rb').read())\n" ..
      PRINT_NODES)
    local want = { table.unpack(WANT) }
    want[#want + 1] = "extra/Relu Relu x /gpu:0"
    assert.are.same(want, out)
  end)

  it("FileWriter(logdir, sess.graph) writes a graph TensorBoard's EventAccumulator reads", function()
    if not have_tb then return pending("tensorboard is not importable by /usr/bin/python3") end
    local g = softmax_graph()
    local dir = root .. "/tb"
    do
      local sess <close> = mf.Session { graph = g }
      local w <close> = mf.summary.FileWriter(dir, sess.graph)
    end
    local out = py(dir, [[
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1])
ea.Reload()
print(ea.Tags()['graph'])
g = ea.Graph()
]] .. PRINT_NODES .. [[

print(sorted(set(n.name.split('/')[0] for n in g.node if '/' in n.name)))]])
    assert.are.equal("True", out[1])
    assert.are.same(WANT, { table.unpack(out, 2, #WANT + 1) })
    assert.are.equal("['inference', 'loss']", out[#WANT + 2])
  end)

  it("Const values: each dtype as TensorFlow's make_ndarray reads it, and back", function()
    local g = mf.Graph()
    local vals = {
      f32 = mf.tensor { { 1.5, -2.25 }, { 3.0, 1e-8 } },
      f64 = mf.tensor({ 0.1, 0.2, 0.3 }, { dtype = "float64" }),
      i32 = mf.tensor({ -7, 2147483647 }, { dtype = "int32" }),
      i64 = mf.tensor { 9007199254740993, -1 },
      u8 = mf.tensor({ 0, 255, 7 }, { dtype = "uint8" }),
      b = mf.tensor { true, false, true },
      scalar = mf.tensor(4.5),
      empty = mf.zeros { 0, 3 },
    }
    local names = {}
    for k in pairs(vals) do names[#names + 1] = k end
    table.sort(names)
    g:as_default(function()
      for _, k in ipairs(names) do g:constant(vals[k], k) end
      mf.constant({ { "a", "bc" }, { "", "d\0e" } }, { name = "str" })
    end)
    local gd = g:as_graph_def()
    local p = root .. "/consts.pb"
    gd:save(p)
    if have_tb then
      local out = py(p, [[
g = graph_pb2.GraphDef()
g.ParseFromString(open(sys.argv[1], 'rb').read())
for n in g.node:
    a = tensor_util.make_ndarray(n.attr['value'].tensor)
    print(n.name, a.dtype, a.shape, a.ravel().tolist())]])
      assert.are.same({
        "b bool (3,) [True, False, True]", "empty float32 (0, 3) []",
        "f32 float32 (2, 2) [1.5, -2.25, 3.0, 9.99999993922529e-09]",
        "f64 float64 (3,) [0.1, 0.2, 0.3]", "i32 int32 (2,) [-7, 2147483647]",
        "i64 int64 (2,) [9007199254740993, -1]", "scalar float32 () [4.5]",
        "u8 uint8 (3,) [0, 255, 7]", "str object (2, 2) [b'a', b'bc', b'', b'd\\x00e']" }, out)
    end
    local g2 = mf.load_graph(p)
    local sess <close> = mf.Session { graph = g2 }
    for _, k in ipairs(names) do
      local got = sess:run(k .. ":0")
      assert.are.equal(vals[k]:dtype(), got:dtype(), k)
      assert.are.same(vals[k]:shape(), got:shape(), k)
      H.equal(got, vals[k]:totable(), 0)
    end
    assert.are.same({ { "a", "bc" }, { "", "d\0e" } }, sess:run("str:0"))
  end)

  it("reads TensorFlow's own encodings: float_val broadcast, int_val, unpacked values", function()
    if not have_tb then return pending("tensorboard is not importable by /usr/bin/python3") end
    local p = root .. "/tf.pb"
    py(p, [[
import numpy as np
g = graph_pb2.GraphDef()
n = g.node.add(); n.name = 'fill'; n.op = 'Const'
n.attr['dtype'].type = 1
t = n.attr['value'].tensor; t.dtype = 1
t.tensor_shape.dim.add().size = 2; t.tensor_shape.dim.add().size = 3
t.float_val.append(0.25)
n = g.node.add(); n.name = 'ints'; n.op = 'Const'
t = n.attr['value'].tensor; t.dtype = 3; t.tensor_shape.dim.add().size = 3
t.int_val.extend([1, -2, 3])
n = g.node.add(); n.name = 'x'; n.op = 'Placeholder'
n.attr['dtype'].type = 1; n.attr['shape'].shape.unknown_rank = True
n = g.node.add(); n.name = 'scope/y'; n.op = 'Placeholder'
n.attr['dtype'].type = 9; d = n.attr['shape'].shape.dim.add(); d.size = -1
open(sys.argv[1], 'wb').write(g.SerializeToString())]])
    local g = mf.load_graph(p)
    local sess <close> = mf.Session { graph = g }
    H.equal(sess:run("fill:0"), { { 0.25, 0.25, 0.25 }, { 0.25, 0.25, 0.25 } })
    H.equal(sess:run("ints:0"), { 1, -2, 3 })
    assert.are.equal("int32", sess:run("ints:0"):dtype())
    assert.is_nil(g:get_tensor_by_name("x:0"):shape())
    assert.are.same({ -1 }, g:get_tensor_by_name("scope/y:0"):shape())
    assert.are.equal("int64", g:get_tensor_by_name("scope/y:0"):dtype())
  end)
end)

-- A TensorFlow-style frozen CNN built with the protos alone (NHWC, HWIO filter, SAME conv with
-- stride 2, BiasAdd, MaxPool, Reshape by a Const shape, MatMul transpose_b, Softmax, ArgMax, Mean
-- keep_dims, Squeeze, ConcatV2, Transpose, Cast), with its outputs computed by PyTorch.
local TF_CNN = [[
import numpy as np, torch, torch.nn.functional as F
T = lambda a: torch.tensor(a.tolist())  # this torch cannot share memory with numpy 2
from tensorboard.util import tensor_util
d = sys.argv[1]
rng = np.random.default_rng(3)
x = rng.standard_normal((2, 6, 6, 2)).astype(np.float32)
filt = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
b1 = rng.standard_normal(4).astype(np.float32)
w2 = rng.standard_normal((3, 16)).astype(np.float32)
b2 = rng.standard_normal(3).astype(np.float32)
g = graph_pb2.GraphDef()
def node(name, op, inputs=(), **attrs):
    n = g.node.add(); n.name = name; n.op = op; n.input.extend(inputs)
    for k, v in attrs.items():
        a = n.attr[k]
        if isinstance(v, bool): a.b = v
        elif isinstance(v, bytes): a.s = v
        elif isinstance(v, list): a.list.i.extend(v)
        elif isinstance(v, int): a.type = v
    return n
def const(name, arr):
    n = node(name, 'Const')
    n.attr['value'].tensor.CopyFrom(tensor_util.make_tensor_proto(arr))
    n.attr['dtype'].type = n.attr['value'].tensor.dtype
ph = node('x', 'Placeholder', dtype=1)
for s in (-1, 6, 6, 2): ph.attr['shape'].shape.dim.add().size = s
const('cnn/filter', filt); const('cnn/b1', b1); const('cnn/w2', w2); const('cnn/b2', b2)
const('cnn/shape', np.array([-1, 16], np.int32)); const('axis1', np.array(1, np.int32))
const('axes12', np.array([1, 2], np.int32)); const('minus1', np.array(-1, np.int32))
const('perm', np.array([1, 0], np.int32))
node('cnn/conv', 'Conv2D', ['x', 'cnn/filter'], T=1, strides=[1, 2, 2, 1], padding=b'SAME',
     data_format=b'NHWC', dilations=[1, 1, 1, 1])
node('cnn/bias', 'BiasAdd', ['cnn/conv', 'cnn/b1'], T=1)
node('cnn/relu', 'Relu', ['cnn/bias'], T=1)
node('cnn/pool', 'MaxPool', ['cnn/relu'], T=1, ksize=[1, 2, 2, 1], strides=[1, 1, 1, 1],
     padding=b'VALID')
node('cnn/flat', 'Reshape', ['cnn/pool', 'cnn/shape'], T=1)
node('cnn/fc', 'MatMul', ['cnn/flat', 'cnn/w2'], T=1, transpose_b=True)
node('cnn/logits', 'AddV2', ['cnn/fc', 'cnn/b2'], T=1)
node('probs', 'Softmax', ['cnn/logits'], T=1)
node('pred', 'ArgMax', ['probs', 'axis1'], T=1, output_type=9)
node('pooled', 'Mean', ['x', 'axes12'], T=1, keep_dims=True)
node('sq', 'Squeeze', ['pooled'], T=1, squeeze_dims=[1, 2])
node('cat', 'ConcatV2', ['sq', 'sq', 'minus1'], T=1, N=2)
node('tr', 'Transpose', ['cat', 'perm'], T=1)
node('predf', 'Cast', ['pred'], SrcT=9, DstT=1)
open(d + '/tf_cnn.pb', 'wb').write(g.SerializeToString())
xt = T(x).permute(0, 3, 1, 2)
h = F.conv2d(F.pad(xt, (0, 1, 0, 1)), T(filt).permute(3, 2, 0, 1), stride=2)
h = F.max_pool2d(torch.relu(h + T(b1)[None, :, None, None]), 2, 1)
h = h.permute(0, 2, 3, 1).reshape(-1, 16)
probs = torch.softmax(h @ T(w2).T + T(b2), 1)
np.save(d + '/x.npy', x)
np.save(d + '/probs.npy', np.array(probs.tolist(), np.float32))
np.save(d + '/pred.npy', np.array(probs.argmax(1).tolist(), np.int64))
sq = x.mean(axis=(1, 2))
np.save(d + '/tr.npy', np.concatenate([sq, sq], -1).T.copy())
]]

describe("TensorFlow's own graphs", function()
  it("load_graph runs a TensorFlow frozen CNN as PyTorch computes it, and writes it back", function()
    if not have_tb then return pending("tensorboard is not importable by /usr/bin/python3") end
    local dir = root .. "/tf"
    os.execute("mkdir -p " .. H.q(dir))
    py(dir, TF_CNN)
    local g = mf.load_graph(dir .. "/tf_cnn.pb")
    local X = mf.load_npy(dir .. "/x.npy")
    local function check(graph)
      local sess <close> = mf.Session { graph = graph }
      local r = sess:run({ "probs:0", "pred:0", "tr:0", "predf:0" }, { ["x:0"] = X })
      local probs = mf.load_npy(dir .. "/probs.npy")
      assert.is_true((r[1] - probs):abs():max():item() < 1e-5)
      H.equal(r[2], mf.load_npy(dir .. "/pred.npy"):totable(), 0)
      assert.are.equal("int64", r[2]:dtype())
      H.equal(r[3], mf.load_npy(dir .. "/tr.npy"):totable(), 1e-6)
      assert.are.equal("float32", r[4]:dtype())
      H.equal(r[4], mf.load_npy(dir .. "/pred.npy"):totable(), 0)
    end
    check(g)
    assert.are.same({ -1, 3, 3, 4 }, g:get_tensor_by_name("cnn/conv:0"):shape())
    -- written back: the same ops and attrs, and it loads again
    local gd = g:as_graph_def()
    local conv
    for _, nd in ipairs(gd.node) do if nd.name == "cnn/conv" then conv = nd end end
    assert.are.equal("Conv2D", conv.op)
    assert.are.same({ 1, 2, 2, 1 }, conv.attr.strides.list.i)
    assert.are.equal("SAME", conv.attr.padding.s)
    assert.are.same({ "x", "cnn/filter" }, conv.input)
    gd:save(dir .. "/again.pb")
    check(mf.load_graph(dir .. "/again.pb"))
  end)

  it("the other TensorFlow ops follow TensorFlow's conventions", function()
    local GD = require "moonflow.graph.graphdef"
    local nodes = {}
    local function const(name, t)
      nodes[#nodes + 1] = { name = name, op = "Const", input = {}, device = "",
        attr = { dtype = { type = t:dtype() }, value = { tensor = GD.tensor_bytes(t) } } }
    end
    local function node(name, op, input, attr)
      nodes[#nodes + 1] = { name = name, op = op, input = input, device = "", attr = attr or {} }
    end
    const("c", mf.tensor { { 1.0, 4.0 }, { 9.0, 16.0 } })
    const("v", mf.tensor { -1.0, 3.0, 7.0 })
    const("i0", mf.tensor(0, { dtype = "int32" }))
    const("i1", mf.tensor({ 1 }, { dtype = "int32" }))
    const("m1", mf.tensor(-1, { dtype = "int32" }))
    node("rsqrt", "Rsqrt", { "c" })
    node("relu6", "Relu6", { "v" })
    node("id", "Identity", { "v" })
    node("expand", "ExpandDims", { "c", "m1" })
    node("pack", "Pack", { "v", "v" }, { axis = { i = 1 } })
    node("sum", "Sum", { "c", "i0" })
    node("max", "Max", { "c", "i1" }, { keep_dims = { b = true } })
    node("mmt", "MatMul", { "c", "c" }, { transpose_a = { b = true } })
    node("bmm", "BatchMatMulV2", { "expand", "expand" }, { adj_y = { b = true } })
    node("sqd", "SquaredDifference", { "c", "rsqrt" })
    node("div", "RealDiv", { "c", "c" })
    node("lsm", "LogSoftmax", { "v" })
    local g = mf.Graph()
    g:as_default(function() mf.import_graph_def(GD.new(nodes), { name = "" }) end)
    local sess <close> = mf.Session { graph = g }
    local function run(n) return sess:run(n .. ":0") end
    H.equal(run("rsqrt"), { { 1, 0.5 }, { 1 / 3, 0.25 } })
    H.equal(run("relu6"), { 0, 3, 6 })
    H.equal(run("id"), { -1, 3, 7 })
    assert.are.same({ 2, 2, 1 }, run("expand"):shape())
    H.equal(run("pack"), { { -1, -1 }, { 3, 3 }, { 7, 7 } })
    H.equal(run("sum"), { 10, 20 })
    H.equal(run("max"), { { 4 }, { 16 } })
    H.equal(run("mmt"), { { 82, 148 }, { 148, 272 } })
    H.equal(run("bmm"), { { { 1, 4 }, { 4, 16 } }, { { 81, 144 }, { 144, 256 } } })
    H.equal(run("sqd"), { { 0, 12.25 }, { (9 - 1 / 3) ^ 2, 15.75 ^ 2 } }, 1e-5)
    H.equal(run("div"), { { 1, 1 }, { 1, 1 } })
    local e = { math.exp(-1), math.exp(3), math.exp(7) }
    local lse = math.log(e[1] + e[2] + e[3])
    H.equal(run("lsm"), { -1 - lse, 3 - lse, 7 - lse }, 1e-5)
  end)

  it("errors name TensorFlow attrs moonflow cannot follow", function()
    local gd = mf.graph_util.read_graph_def((function()
      local g = mf.Graph()
      g:as_default(function()
        mf.placeholder(mf.float32, { 1, 4, 4, 1 }, "x")
        g:constant(mf.ones { 2, 2, 1, 1 }, "f")
      end)
      local p = root .. "/tfbad.pb"
      g:as_graph_def():save(p)
      return p
    end)())
    gd.node[3] = { name = "conv", op = "Conv2D", input = { "x", "f" }, device = "", attr = {
      strides = { list = { i = { 1, 1, 1, 1 } } }, padding = { s = "EXPLICIT" } } }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'conv' (Conv2D): padding EXPLICIT is not supported")
    gd.node[3].attr = { strides = { list = { i = { 1, 1, 1, 1 } } }, padding = { s = "VALID" },
      dilations = { list = { i = { 1, 2, 2, 1 } } } }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'conv' (Conv2D): dilation 2 is not supported")
    gd.node[3] = { name = "q", op = "QuantizeV2", input = { "x" }, device = "", attr = {} }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'q' has op 'QuantizeV2', which moonflow cannot import")
    -- a node with fewer inputs than its op takes (fuzz_graphdef: Sub ran as `a - nil`)
    gd.node[3] = { name = "d", op = "Sub", input = { "x" }, device = "", attr = {} }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "not a valid GraphDef: node 'd' (Sub) has 1 input; Sub takes 2")
  end)
end)

describe("import_graph_def", function()
  it("rebuilds operators, methods, mf.* and nn functionals with the same results", function()
    local g = mf.Graph()
    local fetch = {}
    g:as_default(function()
      local x = mf.placeholder(mf.float32, { -1, 3 }, "x")
      local s = mf.placeholder(mf.string, nil, "s")
      mf.name_scope("ops", function()
        fetch.max, fetch.argmax = mf.max(x, 2) -- two outputs
        fetch.arith = (x + 1) * 2 - x / 4 + x ^ 2
        fetch.neg = -x
        fetch.cat = mf.cat({ x, x * 3 }, 2)
        fetch.method = x:argmax(2)
        fetch.sum = x:sum()
        fetch.reshape = mf.reshape(x, { 3, -1 })
        fetch.t = mf.transpose(x, 1, 2)
        fetch.matmul = mf.matmul(x, mf.tensor { { 1.0 }, { 2.0 }, { 3.0 } })
        fetch.str = s + "!"
        fetch.cast = mf.cast(x, mf.int64)
        fetch.linear = F.linear(x, mf.ones { 2, 3 }, mf.tensor { 0.5, -0.5 })
        fetch.softmax = F.softmax(x, 2)
        fetch.mean = mf.reduce_mean(x, 1, true)
      end)
    end)
    local g2 = mf.Graph()
    local ops = g2:as_default(function() return mf.import_graph_def(g:as_graph_def()) end)
    assert.are.equal(#g:get_operations(), #ops)
    local s1 <close> = mf.Session { graph = g }
    local s2 <close> = mf.Session { graph = g2 }
    local X = mf.tensor { { 1.0, 5.0, 2.0 }, { -1.0, -3.0, 0.5 }, { 1.0, 2.0, 3.0 } }
    for k, t in pairs(fetch) do
      local want = s1:run(t, { x = X, s = "hi" })
      local got = s2:run("import/" .. t.name, { ["import/x"] = X, ["import/s"] = "hi" })
      if type(want) == "string" then
        assert.are.equal("hi!", got)
      else
        assert.are.equal(want:dtype(), got:dtype(), k)
        H.equal(got, want:totable(), 0)
      end
      assert.are.same(t:shape(), g2:get_tensor_by_name("import/" .. t.name):shape(), k)
    end
  end)

  it("imports variables (zero until initialised or assigned) and keeps devices", function()
    local g = mf.Graph()
    g:as_default(function()
      mf.device("/cpu:0", function()
        local v = mf.Variable(mf.tensor { 1.0, 2.0 }, { name = "v" })
        local _ = v * 2
      end)
    end)
    local g2 = mf.Graph()
    g2:as_default(function() mf.import_graph_def(g:as_graph_def(), { name = "" }) end)
    assert.are.equal("/cpu:0", g2:get_operation_by_name("mul").device)
    local v = g2:get_tensor_by_name("v:0")
    local sess <close> = mf.Session { graph = g2 }
    H.err(function() sess:run("mul:0") end, "Attempting to use uninitialized value v")
    g2:as_default(function() sess:run(mf.global_variables_initializer()) end)
    H.equal(sess:run("mul:0"), { 0, 0 })
    sess:run(g2:as_default(function() return v:assign(mf.tensor { 3.0, 4.0 }) end))
    H.equal(sess:run("mul:0"), { 6, 8 })
  end)

  it("errors name the node and op, missing inputs, duplicate names and bad arguments", function()
    local g = softmax_graph()
    local g2 = mf.Graph()
    H.err(function() g2:as_default(function() mf.import_graph_def(g:as_graph_def(), { name = "" }) end) end,
      "node 'gradients' has op 'Gradients', which moonflow cannot import")
    local gd = mf.graph_util.extract_sub_graph(g:as_graph_def(), { "inference/add" })
    assert.are.equal(5, #gd.node)
    local g3 = mf.Graph()
    g3:as_default(function() mf.import_graph_def(gd, { name = "" }) end)
    H.err(function() g3:as_default(function() mf.import_graph_def(gd, { name = "" }) end) end,
      "the graph already has a node named 'x'")
    gd.node[#gd.node + 1] = { name = "odd", op = "FooBar", input = { "x" }, device = "", attr = {} }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'odd' has op 'FooBar', which moonflow cannot import")
    -- a failed import leaves the graph as it was: nodes, variables, names
    local kept = mf.Graph()
    kept:as_default(function() mf.placeholder(mf.float32, { 2 }, "keep") end)
    H.err(function() kept:as_default(function() mf.import_graph_def(gd, { name = "m" }) end) end,
      "node 'odd' has op 'FooBar'")
    assert.are.equal(1, #kept:get_operations())
    assert.are.equal(0, #mf.global_variables(kept))
    table.remove(gd.node)
    kept:as_default(function() mf.import_graph_def(gd, { name = "m" }) end)
    assert.are.equal(1 + #gd.node, #kept:get_operations())
    assert.are.equal("m/inference/MatMul", kept:get_operation_by_name("m/inference/MatMul").name)
    gd.node[#gd.node + 1] = {}
    gd.node[#gd.node] = { name = "lost", op = "Relu", input = { "nowhere:0" }, device = "", attr = {} }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'lost' has input 'nowhere:0', which is not a node of the graph")
    gd.node[#gd.node] = { name = "far", op = "Relu", input = { "x:3" }, device = "", attr = {} }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'far' has input 'x:3', but 'x' has 1 outputs")
    -- recorded calls from a file never read or write files, and never run eagerly
    local pb = require "moonflow.protobuf"
    local function call_node(id, ...)
      local m = pb.message():string(1, id):varint(2, select("#", ...))
      for _, v in ipairs { ... } do m:message(3, v) end
      return { name = "crafted", op = "Identity", input = { "x" }, device = "",
        attr = { _mf_call = { s = m:bytes() } } }
    end
    local path = root .. "/never.safetensors"
    gd.node[#gd.node] = call_node("mf.save", pb.message():string(4, path), pb.message():varint(7, 0))
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "node 'crafted' has op 'Identity', which moonflow cannot import: it records a call of mf.save")
    assert.is_nil(H.readfile(path))
    gd.node[#gd.node] = call_node("mf.zeros", pb.message():varint(2, 3))
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "its recorded call has no symbolic input")
    gd.node[#gd.node] = call_node("Tensor.eval", pb.message():varint(7, 0))
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(gd) end) end,
      "no moonflow function 'Tensor.eval'")
    gd.node[#gd.node] = call_node("mf.relu", pb.message():varint(7, 0))
    local g4 = mf.Graph()
    g4:as_default(function() mf.import_graph_def(gd, { name = "" }) end)
    assert.are.equal("Relu", g4:get_operation_by_name("crafted").type)
    -- sizes a corrupt file could ask for are refused before anything is allocated
    local huge = { name = "huge", op = "VariableV2", input = {}, device = "",
      attr = { dtype = { type = "float32" }, shape = { shape = { 1 << 20, 1 << 20 } } } }
    H.err(function() mf.Graph():as_default(function() mf.import_graph_def(mf.graph_util.extract_sub_graph(
      require("moonflow.graph.graphdef").new { huge }, { "huge" })) end) end,
      "node 'huge' has op 'VariableV2', which moonflow cannot import: its shape asks for more than 2^28")
    huge.op, huge.attr.shape.shape = "Placeholder", { -1, 1 << 30 }
    H.err(function() mf.Graph():as_default(function()
      mf.import_graph_def(require("moonflow.graph.graphdef").new { huge }) end) end,
      "its shape asks for more than 2^28 elements")
    local splat = pb.message():varint(1, 1):message(2, pb.message():message(2, pb.message():varint(1, 1 << 33)))
      :float(5, 1.0)
    huge.op, huge.attr = "Const", { dtype = { type = "float32" }, value = { tensor = splat:bytes() } }
    H.err(function() mf.Graph():as_default(function()
      mf.import_graph_def(require("moonflow.graph.graphdef").new { huge }) end) end,
      "not a valid GraphDef: a tensor value has 8589934592 elements")
    H.err(function() mf.import_graph_def(42) end, "expected a GraphDef, its bytes or a Graph")
    H.err(function() mf.import_graph_def("\10\5\10\3abc") end, "not a valid GraphDef")
  end)
end)
