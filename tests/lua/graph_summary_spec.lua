-- graph_summary_spec.lua — summaries in graphs (TensorFlow 1's tf.summary in a session):
-- mf.summary.scalar/histogram/image/text on symbolic tensors build nodes (named and tagged in the
-- name scope, in the "summaries" collection) whose run result is the same Summary bytes the eager
-- functions make; merge_all/merge join them; a FileWriter's file of a small training loop is read
-- back by TensorBoard's EventAccumulator through /usr/bin/python3 (pending when not importable).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q = H.q

local have_tb = H.can_import(H.TB_IMPORT)
local tb = H.tb -- (dir, code): TensorBoard's EventAccumulator on dir as `ea` runs code

local root = H.tmpdir("mf_graph_summary_spec")
teardown(function() os.execute("rm -rf " .. q(root)) end)

-- A linear regression y = x W with a loss summary and a histogram of W.
local function regression()
  local t = { g = mf.Graph() }
  t.g:as_default(function()
    t.x = mf.placeholder("float32", { -1, 2 }, "x")
    t.y = mf.placeholder("float32", { -1 }, "y")
    mf.name_scope("model", function()
      t.W = mf.Variable(mf.tensor({ { 1 }, { -2 } }, { dtype = "float32" }), { name = "W" })
      t.pred = mf.reshape(mf.matmul(t.x, t.W), { -1 })
    end)
    mf.name_scope("train", function()
      t.loss = mf.reduce_mean(mf.square(t.pred - t.y))
      t.loss_summary = mf.summary.scalar("loss", t.loss)
    end)
    t.w_summary = mf.summary.histogram("weights", t.W)
    t.step = mf.train.GradientDescentOptimizer(0.05):minimize(t.loss)
    t.merged = mf.summary.merge_all()
    t.init = mf.global_variables_initializer()
  end)
  local f32 = { dtype = "float32" }
  t.feed = { [t.x] = mf.tensor({ { 1, 2 }, { 3, 1 }, { 0, 1 } }, f32), [t.y] = mf.tensor({ 1, 2, 3 }, f32) }
  return t
end

describe("summaries in graphs", function()
  it("build nodes tagged by the name scope, in the summaries collection", function()
    local t = regression()
    assert.is_true(mf.is_symbolic(t.loss_summary))
    assert.are.equal("train/loss:0", t.loss_summary.name)
    assert.are.equal("ScalarSummary", t.loss_summary.op.type)
    assert.are.equal("weights:0", t.w_summary.name)
    assert.are.equal("HistogramSummary", t.w_summary.op.type)
    assert.are.equal("string", t.loss_summary:dtype())
    assert.are.same({}, t.loss_summary:shape())
    assert.are.equal("Merge/MergeSummary:0", t.merged.name)
    assert.are.equal("MergeSummary", t.merged.op.type)
    local c = t.g:get_collection(mf.GraphKeys.SUMMARIES)
    assert.are.equal(2, #c)
    assert.are.equal(t.loss_summary, c[1])
    assert.are.equal(t.w_summary, c[2])
    t.g:as_default(function()
      assert.are.same(c, mf.get_collection("summaries"))
      -- a second summary of the same name is made unique, tag included
      mf.name_scope("train", function()
        assert.are.equal("train_1/loss:0", mf.summary.scalar("loss", t.loss).name)
      end)
    end)
  end)

  it("run to the same Summary bytes the eager functions make", function()
    local t = regression()
    local sess <close> = mf.Session { graph = t.g }
    sess:run(t.init)
    local r = sess:run({ t.loss_summary, t.w_summary, t.merged, t.loss, t.W }, t.feed)
    assert.are.equal("string", type(r[1]))
    -- W = (1, -2): predictions -3, 1, -2 against 1, 2, 3: loss (16 + 1 + 25) / 3 = 14
    H.equal(r[4], 14, 1e-6)
    assert.are.equal(mf.summary.scalar("train/loss", 14), r[1])
    assert.are.equal(mf.summary.histogram("weights", mf.tensor({ { 1 }, { -2 } }, { dtype = "float32" })), r[2])
    assert.are.equal(r[1] .. r[2], r[3])
    -- merge of a list, symbolic and eager entries together
    local extra = mf.summary.scalar("extra", 7)
    local m = t.g:as_default(function() return mf.summary.merge({ t.w_summary, extra }, nil, "both") end)
    assert.are.equal("both/MergeSummary:0", m.name)
    assert.are.equal(r[2] .. extra, sess:run(m, t.feed))
    assert.are.equal(2, #t.g:get_collection("summaries")) -- merge adds to no collection by default
  end)

  it("write a training loop's events that TensorBoard reads", function()
    local t = regression()
    local dir = root .. "/loop"
    local losses, ws = {}, {}
    do
      local sess <close> = mf.Session { graph = t.g }
      local w <close> = mf.summary.FileWriter(dir)
      sess:run(t.init)
      for step = 1, 4 do
        local r = sess:run({ t.merged, t.loss, t.W }, t.feed)
        w:add_summary(r[1], step * 10)
        losses[step], ws[step] = r[2]:item(), r[3]:reshape { 2 }:totable()
        sess:run(t.step, t.feed)
      end
      -- a step given as a one-element tensor, as sess:run(global_step) returns it
      w:add_summary(sess:run(t.loss_summary, t.feed), mf.tensor(50, { dtype = "int64" }))
      losses[5] = sess:run(t.loss, t.feed):item()
    end
    assert.is_true(losses[4] < losses[1]) -- it trained
    assert.are_not.equal(ws[1][1], ws[2][1])
    if not have_tb then
      return pending("tensorboard is not importable by /usr/bin/python3 (scripts/setup.sh installs it)")
    end
    local out = tb(dir, [[
print('tags', sorted(ea.Tags()['scalars']), sorted(ea.Tags()['histograms']))
for e in ea.Scalars('train/loss'): print('loss', e.step, repr(e.value))
for e in ea.Histograms('weights'):
    h = e.histogram_value
    print('hist', e.step, repr(h.min), repr(h.max), h.num, repr(h.sum), sum(h.bucket))
]])
    assert.truthy(out:find("tags ['train/loss'] ['weights']", 1, true), out)
    local steps = { 10, 20, 30, 40, 50 }
    for i, step in ipairs(steps) do
      local v = out:match("\nloss " .. step .. " ([^\n]+)") or out:match("^loss " .. step .. " ([^\n]+)")
      assert.truthy(v, out)
      assert.truthy(math.abs(tonumber(v) - losses[i]) <= 1e-6 * (1 + math.abs(losses[i])), out)
    end
    for i = 1, 4 do
      local mn, mx, num, sum, count = out:match("\nhist " .. steps[i] .. " (%S+) (%S+) (%S+) (%S+) (%S+)")
      assert.truthy(mn, out)
      local lo, hi = math.min(ws[i][1], ws[i][2]), math.max(ws[i][1], ws[i][2])
      assert.truthy(math.abs(tonumber(mn) - lo) < 1e-6, out)
      assert.truthy(math.abs(tonumber(mx) - hi) < 1e-6, out)
      assert.are.equal(2, tonumber(num))
      assert.truthy(math.abs(tonumber(sum) - (ws[i][1] + ws[i][2])) < 1e-5, out)
      assert.are.equal(2, tonumber(count))
    end
    assert.is_nil(out:find("\nhist 50 ", 1, true))
  end)

  it("make image summaries of a batch and text summaries", function()
    local g = mf.Graph()
    local imgs, one, note, all
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 784 }, "x")
      local s = mf.placeholder("string", {}, "s")
      mf.name_scope("input", function()
        imgs = mf.summary.image("digits", mf.reshape(x, { -1, 28, 28, 1 }), 2)
        one = mf.summary.image("first", mf.reshape(x, { -1, 1, 28, 28 }), 1, { "images" })
      end)
      note = mf.summary.text("note", s)
      all = mf.summary.merge_all()
      assert.are.equal(imgs.name, mf.summary.merge_all("summaries", "input/").op.inputs[1].name)
      assert.are.equal(one, mf.summary.merge_all("images").op.inputs[1])
      assert.is_nil(mf.summary.merge_all("nothing here"))
    end)
    assert.are.equal("ImageSummary", imgs.op.type)
    local batch = mf.rand { 3, 784 }
    local sess <close> = mf.Session { graph = g }
    local r = sess:run({ imgs, one, note, all }, { [g:get_tensor_by_name("x:0")] = batch, s = "lr = 0.1" })
    local b = batch:reshape { 3, 28, 28, 1 }
    assert.are.equal(mf.summary.image("input/digits/image/0", b[1]) ..
      mf.summary.image("input/digits/image/1", b[2]), r[1])
    assert.are.equal(mf.summary.image("input/first/image", batch:reshape { 3, 1, 28, 28 }[1]), r[2])
    assert.are.equal(mf.summary.text("note", "lr = 0.1"), r[3])
    assert.are.equal(r[1] .. r[3], r[4]) -- "first" went to the "images" collection only
    -- the eager function takes a batch the same way
    assert.are.equal(r[1], mf.summary.image("input/digits", b, 2))
    if not have_tb then return end
    local dir = root .. "/images"
    do
      local w <close> = mf.summary.FileWriter(dir)
      w:add_summary(r[4], 3)
    end
    local out = tb(dir, [[
for tag in sorted(ea.Tags()['images']):
    i = ea.Images(tag)[0]
    print('image', tag, i.step, i.height, i.width, i.encoded_image_string[:4] == b'\x89PNG')
print('text', ea.Tensors('note')[0].tensor_proto.string_val[0].decode())
]])
    assert.truthy(out:find("image input/digits/image/0 3 28 28 True\nimage input/digits/image/1 3 28 28 " ..
      "True\n", 1, true), out)
    assert.truthy(out:find("text lr = 0.1", 1, true), out)
  end)

  it("come back from a GraphDef and run to the same bytes", function()
    if not (mf.Graph().as_graph_def and mf.import_graph_def) then
      return pending("GraphDefs (g:as_graph_def, mf.import_graph_def) are not here yet")
    end
    local g, merged = mf.Graph(), nil
    g:as_default(function()
      local x = mf.placeholder("float32", { -1, 4 }, "x")
      mf.name_scope("train", function() mf.summary.scalar("loss", mf.reduce_mean(mf.square(x))) end)
      mf.summary.histogram("x", x)
      mf.summary.image("pic", mf.reshape(x, { -1, 2, 2, 1 }), 2)
      merged = mf.summary.merge_all()
    end)
    local g2 = mf.Graph()
    g2:as_default(function() mf.import_graph_def(g:as_graph_def(), { name = "" }) end)
    assert.are.equal("ScalarSummary", g2:get_operation_by_name("train/loss").type)
    local feed = { x = mf.rand { 3, 4 } }
    local got = mf.Session { graph = g2 }:run("Merge/MergeSummary:0", feed)
    assert.are.equal(mf.Session { graph = g }:run(merged, feed), got)
    assert.truthy(got:find("train/loss", 1, true))
    assert.truthy(got:find("pic/image/1", 1, true))
    -- a fresh process that has not used mf.summary loads the file too
    local path = root .. "/summaries.pb"
    mf.graph_util.write_graph(g:as_graph_def(), root, "summaries.pb", false)
    -- (the host, $MOONFLOW_BIN: under the sanitizers the module needs the sanitized process)
    local lua = ("local g = mf.load_graph(%q); io.write(g:get_operation_by_name('train/loss').type)")
      :format(path)
    local p = io.popen(q(H.BIN) .. " -e " .. q(lua) .. " 2>&1")
    local out = p:read("a")
    p:close()
    assert.are.equal("ScalarSummary", out)
  end)

  it("merge_all is nil in a graph without summaries", function()
    local g = mf.Graph()
    g:as_default(function()
      mf.placeholder("float32", { 2 }, "x")
      assert.is_nil(mf.summary.merge_all())
    end)
  end)

  it("raise clear errors", function()
    local g = mf.Graph()
    local v, w = nil, mf.summary.FileWriter(root .. "/err")
    g:as_default(function()
      v = mf.placeholder("float32", { 3 }, "v")
      H.err(function() mf.summary.scalar("v", v) end, "ScalarSummary: cannot build this op from " ..
        "inputs of shapes (3,): scalar: value must have one element, got 3")
      H.err(function() mf.summary.scalar(1, v) end, "scalar: tag must be a string")
      H.err(function() mf.summary.histogram("h", v, "summaries") end, "collections must be a list")
      H.err(function() mf.summary.image("i", v, 0) end, "max_outputs must be an integer >= 1")
      H.err(function() mf.summary.image("i", mf.placeholder("float32", { 2, 2, 2, 2, 2 })) end,
        "an image is HW, HWC or CHW")
      H.err(function() mf.summary.merge { v } end, "merge: entry 1 (v:0) is a float32 tensor, not a summary")
      H.err(function() mf.summary.merge_all(5) end, "key must be a collection name")
      local s = mf.summary.histogram("h", v)
      H.err(function() w:add_summary(s, 1) end, "add_summary: h:0 is symbolic; run it first")
      -- a value only known at run time: the error comes from sess:run
      local p = mf.placeholder("float32", nil, "p")
      local ps = mf.summary.scalar("pv", p)
      local sess <close> = mf.Session { graph = g }
      H.err(function() sess:run(ps, { [p] = mf.zeros { 2 } }) end, "scalar: value must have one element, got 2")
      assert.are.equal(mf.summary.scalar("pv", 4.5), sess:run(ps, { [p] = mf.tensor { 4.5 } }))
    end)
    w:close()
  end)
end)
