-- graph_dot_spec.lua — pictures of graphs and models (moonflow/graph/dot.lua): the exact DOT text
-- of small graphs (labels, ids, nested scope clusters, escaping, multi-output edges, fetches), the
-- tutorial CNN's graph parsed and drawn by Graphviz's `dot` (pending when it is not installed),
-- an nn module's layers with their shapes, and the errors (no Graphviz, unknown format, bad input).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q, readfile = H.q, H.readfile

local have_dot = os.execute("command -v dot >/dev/null 2>&1") == true
local function need_dot()
  if not have_dot then
    pending("Graphviz's dot is not installed (scripts/setup.sh installs graphviz)")
    return false
  end
  return true
end

-- Runs `dot -T<fmt>` on text; returns ok, output (or the error text).
local function run_dot(text, fmt)
  local src, outf = os.tmpname(), os.tmpname()
  H.writefile(src, text)
  local ok = os.execute("dot -T" .. fmt .. " " .. q(src) .. " -o " .. q(outf) .. " 2>" .. q(outf .. ".err"))
  local out = ok and readfile(outf) or readfile(outf .. ".err")
  os.remove(src)
  os.remove(outf)
  os.remove(outf .. ".err")
  return ok == true, out
end

local function count(s, pat)
  local n = 0
  for _ in s:gmatch(pat) do n = n + 1 end
  return n
end

local root = H.tmpdir("mf_graph_dot_spec")
teardown(function() os.execute("rm -rf " .. q(root)) end)

-- The tutorial's deep CNN (examples/mnist_cnn_session.lua; its network is examples/mnist_model.lua's
-- inference) as a graph, in NHWC.
local CNN = dofile(H.root .. "/examples/mnist_model.lua")
local function tutorial_cnn()
  local F = mf.nn.functional
  local g = mf.Graph()
  local t = { g = g }
  g:as_default(function()
    local x = mf.placeholder(mf.float32, { -1, 784 }, "x")
    local labels = mf.placeholder(mf.int64, { -1 }, "labels")
    local drop = mf.placeholder(mf.float32, {}, "drop_prob")
    local logits = CNN.inference(x, drop)
    mf.variable_scope("loss", function() t.loss = F.cross_entropy(logits, labels) end)
    mf.variable_scope("accuracy", function()
      local correct = mf.cast(mf.equal(mf.argmax(logits, 2), labels), mf.float32)
      t.accuracy = mf.reduce_mean(correct)
    end)
    t.train = mf.train.AdamOptimizer(1e-4):minimize(t.loss)
    t.logits = logits
  end)
  return t
end

describe("g:to_dot", function()
  it("writes every node with its name, op type and shape, in its scope's cluster", function()
    local g = mf.Graph()
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 3 }, "x")
      mf.name_scope("layer", function()
        local W = mf.Variable(mf.ones { 3, 2 }, { name = "W" })
        mf.reduce_mean(mf.matmul(x, W))
      end)
    end)
    assert.are.equal([[
digraph G {
  rankdir=TB;
  node [shape=box];
  n0 [label="x\nPlaceholder ?x3", shape=ellipse];
  subgraph cluster_layer {
    label="layer";
    n1 [label="layer/W\nVariableV2 3x2", style=rounded];
    n2 [label="layer/MatMul\nMatMul ?x2"];
    n3 [label="layer/Mean\nMean scalar"];
  }
  n0 -> n2;
  n1 -> n2;
  n2 -> n3;
}
]], g:to_dot())
  end)

  it("nests scopes, escapes quotes, labels output indices, and keeps what fetches need", function()
    local g = mf.Graph()
    local z
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 3 }, 'a"b\\c')
      local v, i = mf.max(x, 2)
      z = v + mf.cast(i, "float32")
      mf.name_scope("a", function() mf.name_scope("b", function() local _ = z * 2 end) end)
    end)
    local dot = g:to_dot { rankdir = "LR", name = "net" }
    assert.are.equal([[
digraph net {
  rankdir=LR;
  node [shape=box];
  n0 [label="a\"b\\c\nPlaceholder ?x3", shape=ellipse];
  n1 [label="Max\nMax ?, ?"];
  n2 [label="Cast\nCast ?"];
  n3 [label="add\nadd ?"];
  subgraph cluster_a {
    label="a";
    subgraph "cluster_a/b" {
      label="b";
      n4 [label="a/b/mul\nmul ?"];
    }
  }
  n0 -> n1;
  n1 -> n2 [label=":1"];
  n1 -> n3 [label=":0"];
  n2 -> n3;
  n3 -> n4;
}
]], dot)
    local only = g:to_dot { fetches = { z } }
    assert.is_nil(only:find("a/b/mul", 1, true))
    assert.is_nil(only:find("cluster", 1, true))
    assert.are.equal(4, count(only, "\n  n%d+ %["))
    assert.are.equal(only, g:to_dot { fetches = "add:0" })
    if need_dot() then
      local ok, svg = run_dot(dot, "svg")
      assert.is_true(ok, svg)
      -- the escaped name comes back whole (SVG writes the quote as &quot;)
      assert.truthy(svg:find("a&quot;b\\c", 1, true), svg)
      assert.are.equal(5, count(svg, 'class="node"'))
      assert.are.equal(2, count(svg, 'class="cluster"'))
    end
  end)

  it("draws the tutorial CNN's graph: it parses with dot and has its scopes", function()
    local t = tutorial_cnn()
    local g = t.g
    local dot = g:to_dot()
    for _, scope in ipairs { "inference", "loss", "accuracy" } do
      assert.truthy(dot:find("subgraph cluster_" .. scope .. " {", 1, true), scope)
    end
    assert.truthy(dot:find('label="inference/W_conv1\\nVariableV2 32x1x5x5", style=rounded', 1, true))
    assert.truthy(dot:find('label="inference/Conv2D\\nConv2D ?x28x28x32"', 1, true), dot)
    assert.truthy(dot:find('label="inference/MaxPool_1\\nMaxPool ?x7x7x64"', 1, true), dot)
    assert.truthy(dot:find('label="x\\nPlaceholder ?x784", shape=ellipse', 1, true))
    -- one node line per operation, one edge per input
    local ops, inputs = g:get_operations(), 0
    for _, op in ipairs(ops) do inputs = inputs + #op.inputs end
    assert.are.equal(#ops, count(dot, "\n%s+n%d+ %[label="))
    assert.are.equal(inputs, count(dot, "\n  n%d+ %-> n%d+"))
    -- each node sits in the cluster of its scope
    local inference = dot:match("subgraph cluster_inference {(.-)\n  }")
    for _, op in ipairs(ops) do
      local inside = inference:find('"' .. op.name .. "\\n", 1, true) ~= nil
      assert.are.equal(op.name:sub(1, 10) == "inference/", inside, op.name)
    end
    if not need_dot() then return end
    local ok, canon = run_dot(dot, "canon")
    assert.is_true(ok, canon)
    assert.truthy(canon:find("cluster_inference", 1, true))
    -- g:render draws it by the path's extension
    local svg = g:render(root .. "/cnn.svg")
    assert.are.equal(root .. "/cnn.svg", svg)
    local text = assert(readfile(svg))
    assert.truthy(text:find("<svg", 1, true))
    assert.are.equal(#ops, count(text, 'class="node"'))
    assert.are.equal(3, count(text, 'class="cluster"'))
    assert.truthy(text:find("<title>cluster_loss</title>", 1, true))
    g:render(root .. "/cnn.png")
    assert.are.equal("\137PNG\r\n\26\n", readfile(root .. "/cnn.png"):sub(1, 8))
    g:render(root .. "/cnn.out", { format = "pdf" })
    assert.are.equal("%PDF", readfile(root .. "/cnn.out"):sub(1, 4))
  end)

  it("writes the text itself for a .dot path (no Graphviz needed)", function()
    local g = tutorial_cnn().g
    assert.are.equal(root .. "/cnn.dot", g:render(root .. "/cnn.dot", { dot = "/nonexistent/dot" }))
    assert.are.equal(g:to_dot(), readfile(root .. "/cnn.dot"))
  end)

  it("raises clear errors", function()
    local g = mf.Graph()
    g:as_default(function() mf.placeholder("float32", { 2 }, "x") end)
    H.err(function() g:render(root .. "/a.svg", { dot = "/nonexistent/dot" }) end,
      "Graphviz's `/nonexistent/dot` program was not found")
    H.err(function() g:render(root .. "/a.svg", { dot = "no-such-dot-program" }) end,
      "`no-such-dot-program` program was not found on PATH")
    H.err(function() g:render(root .. "/a.jpeg") end, "cannot tell the format of " .. root .. "/a.jpeg")
    H.err(function() g:render(root .. "/noext") end, "use a path ending in .svg, .png, .pdf or .dot")
    H.err(function() g:render() end, "a file path is needed")
    H.err(function() g:to_dot { rankdir = "XY" } end, "rankdir must be TB, LR, BT or RL")
    H.err(function() g:to_dot(5) end, "options must be a table")
    H.err(function() g:to_dot { fetches = { 1 } } end, "fetch 1 is not a tensor or operation")
    H.err(function() g:to_dot { fetches = { "nope:0" } } end, "nope:0")
    local other = mf.Graph()
    local y = other:as_default(function() return mf.placeholder("float32", { 2 }, "y") end)
    H.err(function() g:to_dot { fetches = { y } } end, "belongs to another graph")
    if have_dot then
      H.err(function() g:render(root .. "/no/such/dir/a.svg") end, "could not write " .. root ..
        "/no/such/dir/a.svg")
    end
  end)
end)

describe("m:to_dot", function()
  it("draws a Sequential's layers with their input and output shapes", function()
    local nn = mf.nn
    local net = nn.Sequential {
      nn.Conv2d(1, 4, 3, { padding = "same" }), nn.ReLU(), nn.MaxPool2d(2),
      nn.Sequential { nn.Flatten(), nn.Linear(4 * 14 * 14, 10) }, nn.Dropout(0.5),
    }
    assert.are.equal([[
digraph G {
  rankdir=TB;
  node [shape=box];
  n0 [label="input\nInput 1x1x28x28", shape=ellipse];
  n1 [label="1\nConv2d 1x1x28x28 -> 1x4x28x28"];
  n2 [label="2\nReLU 1x4x28x28 -> 1x4x28x28"];
  n3 [label="3\nMaxPool2d 1x4x28x28 -> 1x4x14x14"];
  subgraph cluster_4 {
    label="4";
    n4 [label="4.1\nFlatten 1x4x14x14 -> 1x784"];
    n5 [label="4.2\nLinear 1x784 -> 1x10"];
  }
  n6 [label="5\nDropout 1x10 -> 1x10"];
  n0 -> n1;
  n1 -> n2;
  n2 -> n3;
  n3 -> n4;
  n4 -> n5;
  n5 -> n6;
}
]], net:to_dot { 1, 1, 28, 28 })
    -- the modes and the layers' methods are as they were
    assert.is_true(net.training)
    assert.is_true(net[5].training)
    assert.is_nil(rawget(net[1], "forward"))
    if need_dot() then
      local path = net:render(root .. "/net.svg", { 1, 1, 28, 28 }, { rankdir = "LR" })
      local svg = assert(readfile(path))
      assert.are.equal(7, count(svg, 'class="node"'))
      assert.truthy(svg:find("Linear 1x784 &#45;&gt; 1x10", 1, true), svg)
    end
  end)

  it("follows the tensors through a module with its own forward", function()
    local nn = mf.nn
    local Res = nn.class("Res")
    function Res:__init()
      self.a = nn.Linear(4, 4)
      self.b = nn.Linear(4, 4)
    end
    function Res:forward(x)
      local h = self.a(x)
      return self.b(h:view { -1, 4 }) + h -- the view is made outside a layer
    end
    local dot = Res():to_dot({ 2, 4 }, { name = "res" })
    assert.truthy(dot:find('n1 [label="a\\nLinear 2x4 -> 2x4"];', 1, true), dot)
    assert.truthy(dot:find('n2 [label="b\\nLinear 2x4 -> 2x4"];', 1, true), dot)
    assert.truthy(dot:find("n0 -> n1;\n  n1 -> n2;\n}", 1, true), dot)
  end)

  it("raises clear errors", function()
    local nn = mf.nn
    local net = nn.Sequential { nn.Linear(3, 2) }
    H.err(function() net:to_dot() end, "an input shape with the batch dimension is needed")
    H.err(function() net:to_dot { 1, 0 } end, "input sizes must be integers >= 1")
    H.err(function() net:to_dot { 1, 5 } end, "running the module on zeros of shape 1x5 failed")
    assert.is_nil(rawget(net[1], "forward"))
    H.err(function() net:render(root .. "/n.gif", { 1, 3 }) end, "cannot tell the format")
  end)
end)
