-- graph_freeze_spec.lua — frozen graphs: the softmax regression and a small CNN (placeholders,
-- variable scopes) trained a few steps in a session, frozen with
-- mf.graph_util.convert_variables_to_constants, written as one .pb, loaded into a fresh graph by
-- mf.load_graph, give the session's outputs; the .pb parses as TensorFlow's GraphDef in Python;
-- errors for a missing output, corrupt, truncated and missing files.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local F = mf.nn.functional

local root = H.tmpdir("mf_freeze")
teardown(function() os.execute("rm -rf " .. H.q(root)) end)

local have_tb = H.can_import("from tensorboard.compat.proto import graph_pb2")

-- Runs Python with the GraphDef of file `path` parsed as `g`; returns stdout lines.
local function py(path, code)
  return H.graph_def_py(path, "g = graph_pb2.GraphDef()\ng.ParseFromString(open(sys.argv[1], 'rb').read())\n" ..
    code)
end

-- the softmax regression of the tutorial, trained 5 steps on random data
local function softmax_model()
  mf.manual_seed(11)
  local g = mf.Graph()
  local m = { graph = g }
  g:as_default(function()
    m.x = mf.placeholder(mf.float32, { -1, 20 }, "input")
    local y_ = mf.placeholder(mf.float32, { -1, 5 }, "labels")
    mf.variable_scope("inference", function()
      local W = mf.Variable(mf.zeros { 20, 5 }, { name = "W" })
      local b = mf.Variable(mf.zeros { 5 }, { name = "b" })
      local logits = mf.matmul(m.x, W) + b
      m.y = F.softmax(logits, 2)
      m.logits = logits
    end)
    local loss = mf.reduce_mean(mf.nn.softmax_cross_entropy_with_logits { labels = y_, logits = m.logits })
    local step = mf.train.GradientDescentOptimizer(0.5):minimize(loss)
    m.sess = mf.Session()
    m.sess:run(mf.global_variables_initializer())
    local X = mf.randn { 10, 20 }
    local Y = mf.cat({ mf.eye(5), mf.eye(5) }, 1)
    for _ = 1, 5 do m.sess:run(step, { [m.x] = X, [y_] = Y }) end
  end)
  return m
end

-- a small CNN: NHWC conv 3x3 "same" + ReLU + 2x2 max pool, fc + dropout, fc, softmax; Adam
local function cnn_model()
  mf.manual_seed(12)
  local g = mf.Graph()
  local m = { graph = g }
  g:as_default(function()
    m.x = mf.placeholder(mf.float32, { -1, 64 }, "input")
    local labels = mf.placeholder(mf.int64, { -1 }, "labels")
    m.drop = mf.placeholder(mf.float32, {}, "drop_prob")
    mf.variable_scope("inference", function()
      local h = mf.reshape(m.x, { -1, 8, 8, 1 })
      mf.variable_scope("conv1", function()
        local W = mf.Variable(mf.nn.init.trunc_normal_(mf.empty { 4, 1, 3, 3 }, 0, 0.1), { name = "W" })
        local b = mf.Variable(mf.full({ 4 }, 0.1), { name = "b" })
        h = F.max_pool2d(mf.relu(F.conv2d(h, W, b, { padding = "same", data_format = "NHWC" })), 2,
          { data_format = "NHWC" })
      end)
      h = mf.reshape(h, { -1, 4 * 4 * 4 })
      mf.variable_scope("fc1", function()
        local W = mf.Variable(mf.nn.init.trunc_normal_(mf.empty { 64, 16 }, 0, 0.1), { name = "W" })
        local b = mf.Variable(mf.full({ 16 }, 0.1), { name = "b" })
        h = F.dropout(mf.relu(mf.matmul(h, W) + b), m.drop)
      end)
      mf.variable_scope("fc2", function()
        local W = mf.Variable(mf.nn.init.trunc_normal_(mf.empty { 16, 3 }, 0, 0.1), { name = "W" })
        local b = mf.Variable(mf.full({ 3 }, 0.1), { name = "b" })
        m.logits = mf.matmul(h, W) + b
      end)
      m.y = F.softmax(m.logits, 2)
    end)
    local loss = F.cross_entropy(m.logits, labels)
    local step = mf.train.AdamOptimizer(1e-2):minimize(loss)
    m.sess = mf.Session()
    m.sess:run(mf.global_variables_initializer())
    local X = mf.randn { 6, 64 }
    local L = mf.tensor { 1, 2, 3, 1, 2, 3 }
    for _ = 1, 4 do m.sess:run(step, { [m.x] = X, [labels] = L, [m.drop] = 0.5 }) end
  end)
  return m
end

local function max_diff(a, b) return (a - b):abs():max():item() end

describe("frozen graphs", function()
  it("the softmax regression: frozen, written, loaded, same outputs", function()
    local m = softmax_model()
    assert.are.equal("inference/Softmax", m.y.op.name)
    local frozen = mf.graph_util.convert_variables_to_constants(m.sess, m.graph, { "inference/Softmax" })
    local ops = {}
    for i, nd in ipairs(frozen.node) do ops[i] = nd.name .. "=" .. nd.op end
    -- only what the output needs: no labels, loss or training nodes; variables are constants
    assert.are.same({ "input=Placeholder", "inference/W=Const", "inference/b=Const",
      "inference/MatMul=MatMul", "inference/add=AddV2", "inference/Softmax=Softmax" }, ops)
    local path = mf.graph_util.write_graph(frozen, root .. "/models", "softmax.pb", false)
    assert.are.equal(root .. "/models/softmax.pb", path)
    -- only the .pb is there (the temporary file was renamed)
    local ls = io.popen("ls " .. H.q(root .. "/models")):read("a")
    assert.are.equal("softmax.pb\n", ls)

    local g2 = mf.load_graph(path)
    assert.are_not.equal(m.graph, g2)
    assert.are.equal(6, #g2:get_operations())
    local X = mf.randn { 7, 20 }
    local want = m.sess:run(m.y, { [m.x] = X })
    local sess2 <close> = mf.Session { graph = g2 }
    local got = sess2:run("inference/Softmax:0", { ["input:0"] = X })
    assert.are.same({ 7, 5 }, got:shape())
    assert.is_true(max_diff(got, want) == 0, "max diff " .. max_diff(got, want))
    -- the weights really are the trained ones (not zeros, as initialised)
    assert.is_true(sess2:run("inference/W:0"):abs():sum():item() > 0.1)
    H.equal(sess2:run("inference/W:0"), m.sess:run(m.graph:get_tensor_by_name("inference/W:0")):totable(), 0)
    -- the loaded placeholder keeps its dtype and shape
    local x2 = g2:get_tensor_by_name("input:0")
    assert.are.same({ -1, 20 }, x2:shape())
    assert.are.equal("float32", x2:dtype())
    H.err(function() sess2:run("inference/Softmax:0") end, "You must feed a value for placeholder tensor 'input'")
    m.sess:close()
  end)

  it("a CNN with variable scopes: frozen, saved, loaded, same outputs", function()
    local m = cnn_model()
    local frozen = mf.graph_util.convert_variables_to_constants(m.sess, m.sess.graph:as_graph_def(),
      { m.y.op.name })
    local path = root .. "/cnn.pb"
    frozen:save(path)
    local consts, names = 0, {}
    for _, nd in ipairs(frozen.node) do
      names[nd.name] = nd.op
      if nd.op == "Const" then consts = consts + 1 end
      assert.are_not.equal("VariableV2", nd.op)
    end
    assert.are.equal(6, consts) -- three layers' W and b
    assert.are.equal("Const", names["inference/conv1/W"])
    assert.are.equal("Conv2D", names["inference/conv1/Conv2D"])
    assert.are.equal("MaxPool", names["inference/conv1/MaxPool"])
    assert.are.equal("Placeholder", names["drop_prob"])
    assert.is_nil(names["labels"])

    local g2 = mf.load_graph(path)
    local X = mf.randn { 5, 64 }
    local want = m.sess:run(m.y, { [m.x] = X, [m.drop] = 0 })
    local sess2 <close> = mf.Session { graph = g2 }
    local got = sess2:run(m.y.name, { ["input:0"] = X, ["drop_prob:0"] = 0 })
    assert.are.same({ 5, 3 }, got:shape())
    assert.is_true(max_diff(got, want) <= 1e-6, "max diff " .. max_diff(got, want))
    -- the logits too (an intermediate node, fetched by name)
    local lw = m.sess:run(m.logits, { [m.x] = X, [m.drop] = 0 })
    assert.is_true(max_diff(sess2:run(m.logits.name, { ["input:0"] = X, ["drop_prob:0"] = 0 }), lw) <= 1e-6)
    -- the symbolic shapes are inferred again on load
    assert.are.same({ -1, 4, 4, 4 }, g2:get_tensor_by_name("inference/conv1/MaxPool:0"):shape())
    assert.are.same(m.y:shape(), g2:get_tensor_by_name(m.y.name):shape())
    m.sess:close()
  end)

  it("the .pb parses as TensorFlow's GraphDef in Python", function()
    if not have_tb then
      return pending("tensorboard is not importable by /usr/bin/python3 (scripts/setup.sh installs it)")
    end
    local m = cnn_model()
    local path = mf.graph_util.write_graph(
      mf.graph_util.convert_variables_to_constants(m.sess, m.graph, { "inference/Softmax" }),
      root, "cnn_py.pb", false)
    local W = m.sess:run(m.graph:get_tensor_by_name("inference/fc2/W:0"))
    local out = py(path, [[
from tensorboard.util import tensor_util
print(len(g.node))
print(' '.join(sorted(set(n.op for n in g.node))))
byname = {n.name: n for n in g.node}
print(' '.join(byname['inference/conv1/Conv2D'].input))
w = tensor_util.make_ndarray(byname['inference/fc2/W'].attr['value'].tensor)
print(w.dtype, w.shape, repr(float(w[0, 0])), repr(float(w[15, 2])))
x = byname['input']
print(x.attr['dtype'].type, [d.size for d in x.attr['shape'].shape.dim])]])
    local ops = {}
    for _, nd in ipairs(mf.graph_util.read_graph_def(path).node) do ops[#ops + 1] = nd end
    assert.are.equal(tostring(#ops), out[1])
    assert.are.equal("AddV2 Const Conv2D Dropout MatMul MaxPool Placeholder Relu Reshape Softmax", out[2])
    assert.are.equal("inference/Reshape inference/conv1/W inference/conv1/b", out[3])
    local w11, w163 = W:totable()[1][1], W:totable()[16][3]
    local d, sh, a, b = out[4]:match("^(%S+) (%(.-%)) (%S+) (%S+)$")
    assert.are.equal("float32", d)
    assert.are.equal("(16, 3)", sh)
    assert.are.equal(w11, tonumber(a))
    assert.are.equal(w163, tonumber(b))
    assert.are.equal("1 [-1, 64]", out[5]) -- DT_FLOAT
    m.sess:close()
  end)

  it("write_graph's text format is what Python's text_format reads", function()
    if not have_tb then
      return pending("tensorboard is not importable by /usr/bin/python3 (scripts/setup.sh installs it)")
    end
    local m = softmax_model()
    local frozen = mf.graph_util.convert_variables_to_constants(m.sess, m.graph, { "inference/Softmax" })
    local pb = mf.graph_util.write_graph(frozen, root, "s.pb", false)
    local txt = mf.graph_util.write_graph(frozen, root, "s.pbtxt") -- as_text defaults to true
    local out = py(pb, ([[
from google.protobuf import text_format
t = graph_pb2.GraphDef()
text_format.Parse(open(%q).read(), t)
print(t == g, len(t.node))]]):format(txt))
    assert.are.same({ "True 6" }, out)
    H.err(function() mf.load_graph(txt) end, "is a text GraphDef")
    m.sess:close()
  end)

  it("a TensorFlow graph with variables: loaded, assigned, frozen, loaded again", function()
    local GD = require "moonflow.graph.graphdef"
    local gd = GD.new {
      { name = "x", op = "Placeholder", input = {}, device = "",
        attr = { dtype = { type = "float32" }, shape = { shape = { -1, 2 } } } },
      { name = "net/W", op = "VariableV2", input = {}, device = "",
        attr = { dtype = { type = "float32" }, shape = { shape = { 2, 2 } } } },
      { name = "net/W/read", op = "Identity", input = { "net/W" }, device = "", attr = {} },
      { name = "net/MatMul", op = "MatMul", input = { "x", "net/W/read" }, device = "",
        attr = { transpose_b = { b = true } } },
      { name = "net/out", op = "Softmax", input = { "net/MatMul" }, device = "", attr = {} },
    }
    local g = mf.Graph()
    local sess <close> = mf.Session { graph = g }
    g:as_default(function()
      mf.import_graph_def(gd, { name = "" })
      sess:run(g:get_tensor_by_name("net/W:0"):assign(mf.tensor { { 1.0, 2.0 }, { 3.0, -1.0 } }))
    end)
    local frozen = mf.graph_util.convert_variables_to_constants(sess, g, { "net/out" })
    local ops = {}
    for i, nd in ipairs(frozen.node) do ops[i] = nd.op end
    assert.are.same({ "Placeholder", "Const", "Identity", "MatMul", "Softmax" }, ops)
    local path = mf.graph_util.write_graph(frozen, root, "tf_frozen.pb", false)
    local g2 = mf.load_graph(path)
    local X = mf.tensor { { 1.0, 0.0 }, { 0.5, 2.0 } }
    local want = sess:run("net/out:0", { ["x:0"] = X })
    local sess2 <close> = mf.Session { graph = g2 }
    local got = sess2:run("net/out:0", { ["x:0"] = X })
    assert.are.equal(0, max_diff(got, want))
    -- x W^T: {1, 3} and {4.5, -0.5}
    local e1, e2 = math.exp(1), math.exp(3)
    H.equal(got:totable()[1], { e1 / (e1 + e2), e2 / (e1 + e2) }, 1e-6)
  end)

  it("errors: missing output, uninitialized variable, training nodes, bad files", function()
    local m = softmax_model()
    local gu = mf.graph_util
    H.err(function() gu.convert_variables_to_constants(m.sess, m.graph, { "inference/nope" }) end,
      "convert_variables_to_constants: output 'inference/nope' is not a node of the graph")
    H.err(function() gu.convert_variables_to_constants(m.sess, m.graph, {}) end,
      "output names must be a non-empty list")
    H.err(function() gu.convert_variables_to_constants(m.graph, m.graph, { "inference/Softmax" }) end,
      "the first argument must be a Session")
    H.err(function() gu.convert_variables_to_constants(m.sess, m.graph, { "GradientDescent" }) end,
      "the outputs need node 'gradients' (Gradients), which a frozen graph cannot hold")
    local fresh = mf.Session { graph = m.graph }
    H.err(function() gu.convert_variables_to_constants(fresh, m.graph, { "inference/Softmax" }) end,
      "Attempting to use uninitialized value inference/W")

    local good = gu.convert_variables_to_constants(m.sess, m.graph, { "inference/Softmax" }):SerializeToString()
    H.err(function() mf.load_graph(root .. "/missing.pb") end, "load_graph: cannot open '" .. root .. "/missing.pb'")
    H.writefile(root .. "/empty.pb", "")
    H.err(function() mf.load_graph(root .. "/empty.pb") end, "is empty, not a GraphDef")
    -- truncated anywhere inside: a clear error, never a crash
    local cuts = { 1, 2, 5, 17, #good // 3, #good // 2, #good - 30, #good - 1 }
    for _, n in ipairs(cuts) do
      H.writefile(root .. "/cut.pb", good:sub(1, n))
      local ok, msg = pcall(mf.load_graph, root .. "/cut.pb")
      assert.is_false(ok, "cut at " .. n .. " loaded")
      assert.is_truthy(tostring(msg):find("load_graph: '" .. root .. "/cut.pb", 1, true), msg)
    end
    H.writefile(root .. "/junk.pb", "\255\255\255\255\255\255\255\255\255\255\255 not a graph")
    H.err(function() mf.load_graph(root .. "/junk.pb") end, "is not a valid GraphDef")
    -- every byte changed (+1, or 0xff): an error or a graph, never a crash
    local loaded, failed = 0, 0
    for i = 1, #good do
      for _, c in ipairs { (good:byte(i) + 1) % 256, 255 } do
        H.writefile(root .. "/flip.pb", good:sub(1, i - 1) .. string.char(c) .. good:sub(i + 1))
        local ok, r = pcall(mf.load_graph, root .. "/flip.pb")
        if ok then
          assert.are.equal("moonflow.Graph", getmetatable(r).__name)
          loaded = loaded + 1
        else
          assert.is_truthy(tostring(r):find("load_graph: '", 1, true), r)
          failed = failed + 1
        end
      end
    end
    assert.is_true(loaded > 0 and failed > 0)
    m.sess:close()
  end)
end)
