-- make_graphdef_corpus.lua — writes the seed GraphDefs of the graphdef fuzz target (tests/fuzz/corpus/graphdef):
-- a dense softmax layer (and its frozen form), assorted ops with a summary, a small conv net.
--   build/moonflow tests/fuzz/make_graphdef_corpus.lua tests/fuzz/corpus/graphdef
local out = arg[1]
mf.manual_seed(1)
local function save(name, build)
  mf.reset_default_graph()
  local sess = build()
  local g = mf.get_default_graph()
  g:as_graph_def():save(out .. "/" .. name .. ".pb")
  if sess then sess:close() end
end
save("dense", function()
  local x = mf.placeholder("float32", { -1, 4 }, "input")
  local y
  mf.variable_scope("inference", function()
    local W = mf.Variable(mf.randn { 4, 3 }, { name = "W" })
    local b = mf.Variable(mf.zeros { 3 }, { name = "b" })
    y = mf.nn.functional.softmax(mf.matmul(x, W) + b, 2)
  end)
  local sess = mf.Session()
  sess:run(mf.global_variables_initializer())
  local frozen = mf.graph_util.convert_variables_to_constants(sess, mf.get_default_graph(), { y.name })
  frozen:save(out .. "/dense_frozen.pb")
  return sess
end)
save("ops", function()
  local a = mf.placeholder("float32", { 2, -1 }, "a")
  local c = mf.constant({ { 1, 2 }, { 3, 4 } })
  local s = mf.placeholder("string", {}, "s")
  local r = mf.nn.functional.relu(a * 2 - 1)
  local m = mf.reshape(r, { -1 })
  local k = mf.argmax(c, 2)
  local z = mf.where(mf.greater(c, 2), c, mf.zeros_like(c))
  local t = s + " world"
  mf.summary.scalar("loss", mf.mean(r))
  mf.summary.merge_all()
  return nil
end)
save("conv", function()
  local x = mf.placeholder("float32", { -1, 1, 6, 6 }, "x")
  local conv = mf.nn.Conv2d(1, 2, 3, { padding = "same" })
  local h = mf.nn.functional.max_pool2d(mf.nn.functional.relu(conv(x)), 2)
  local f = mf.nn.Flatten()(h)
  return nil
end)
