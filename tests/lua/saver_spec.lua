-- saver_spec.lua — mf.train.Saver and mf.train.latest_checkpoint: round trips of a module with
-- mf.optim.Adam and of a Session with mf.train.AdamOptimizer (variables, optimizer state, step,
-- random generator), a graph BatchNorm's running statistics, the index file and max_to_keep, errors (missing, mismatched, corrupt files),
-- a child process killed with SIGKILL while it saves (fixtures/saver_kill.lua), and bit-exact
-- resume of training with dropout, Adam and DataSet.next_batch in fresh processes
-- (fixtures/saver_resume.lua).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local nn, F = mf.nn, mf.nn.functional
local json = require "moonflow.saver_json"

-- The children run on the interpreter the specs run on in CI (the host, sanitized in the ASan
-- run: $MOONFLOW_BIN), or the stock lua5.4.
local LUA = H.q(os.getenv("MOONFLOW_BIN") or "lua5.4")
local FIXTURES = H.root .. "/tests/lua/fixtures/"

-- Exactly equal tensors (same shape, dtype and every value).
local function same(a, b)
  return a:dtype() == b:dtype() and table.concat(a:shape(), "x") == table.concat(b:shape(), "x")
    and mf.ne(a, b):sum():item() == 0
end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The names of a folder's files (sorted).
local function ls(dir)
  local p = io.popen("ls -1 " .. H.q(dir))
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  p:close()
  return out
end

local function mlp(hidden)
  return nn.Sequential { nn.Linear(4, hidden or 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden or 8, 3) }
end

-- A module trained a few steps with Adam.
local function trained_mlp(seed)
  mf.manual_seed(seed)
  local model = mlp()
  local adam = mf.optim.Adam(model:parameters(), { lr = 0.01 })
  local x, y = mf.randn { 16, 4 }, mf.argmax(mf.randn { 16, 3 }, 2)
  for _ = 1, 3 do
    adam:zero_grad()
    F.cross_entropy(model(x), y):backward()
    adam:step()
  end
  return model, adam
end

-- A least-squares graph trained with AdamOptimizer: {graph, x, y, w, b, gs, step, init}.
local function ls_graph(seed)
  mf.manual_seed(seed)
  local t = { graph = mf.Graph() }
  t.graph:as_default(function()
    t.x = mf.placeholder("float32", { -1, 3 })
    t.y = mf.placeholder("float32", { -1, 2 })
    t.w = mf.Variable(mf.randn { 3, 2 }, { name = "W" })
    t.b = mf.Variable(mf.zeros { 2 }, { name = "b" })
    local loss = mf.reduce_mean(mf.square(mf.matmul(t.x, t.w) + t.b - t.y))
    t.gs = mf.train.get_or_create_global_step()
    t.step = mf.train.AdamOptimizer(0.1):minimize(loss, { global_step = t.gs })
    t.init = mf.global_variables_initializer()
  end)
  return t
end

describe("mf.train.Saver", function()
  it("round-trips a module with Adam: parameters, optimizer state, step and generator", function()
    local dir = H.tmpdir("mf_saver")
    local model, adam = trained_mlp(1)
    local saver = mf.train.Saver { optimizer = adam }
    local path = saver:save(model, dir .. "/model.ckpt", { global_step = 3 })
    assert.equal(dir .. "/model.ckpt-3", path)
    assert.is_true(exists(dir .. "/model.ckpt-3.safetensors"))
    local seed, offset = mf.get_rng_state()
    local after = mf.rand { 5 } -- what the generator gives next

    -- another model and optimizer (other values, other lr), then restore
    mf.manual_seed(2)
    local model2 = mlp()
    local adam2 = mf.optim.Adam(model2:parameters(), { lr = 0.5 })
    assert.is_false(same(model2:state_dict()["1.weight"], model:state_dict()["1.weight"]))
    local step = mf.train.Saver { optimizer = adam2 }:restore(model2, mf.train.latest_checkpoint(dir))
    assert.equal(3, step)
    local a, b = model:state_dict(), model2:state_dict()
    for _, name in ipairs { "1.weight", "1.bias", "4.weight", "4.bias" } do
      assert.is_true(same(a[name], b[name]), name)
    end
    local s1, s2 = adam:state_dict(), adam2:state_dict()
    assert.equal(0.01, adam2.param_groups[1].lr)
    for i = 1, 4 do
      assert.equal(3, s2.state[i].step)
      assert.is_true(same(s1.state[i].exp_avg, s2.state[i].exp_avg))
      assert.is_true(same(s1.state[i].exp_avg_sq, s2.state[i].exp_avg_sq))
    end
    local seed2, offset2 = mf.get_rng_state()
    assert.equal(seed, seed2)
    assert.equal(offset, offset2)
    assert.is_true(same(after, mf.rand { 5 }))
  end)

  it("round-trips a Session with AdamOptimizer: variables, slots and global step", function()
    local dir = H.tmpdir("mf_saver")
    mf.manual_seed(5)
    local X, Y = mf.randn { 8, 3 }, mf.randn { 8, 2 }
    local a = ls_graph(1)
    local s1 <close> = mf.Session { graph = a.graph }
    s1:run(a.init)
    for _ = 1, 3 do s1:run(a.step, { [a.x] = X, [a.y] = Y }) end
    assert.equal(dir .. "/model.ckpt-3", mf.train.Saver():save(s1, dir .. "/model.ckpt", { global_step = a.gs }))
    -- the file: variables by name, Adam's moments as <variable>/<op>/<slot>, its step counter in
    -- the metadata
    local tensors, meta = mf.load(dir .. "/model.ckpt-3.safetensors")
    for _, name in ipairs { "W", "b", "global_step", "W/Adam/m", "W/Adam/v", "b/Adam/m", "b/Adam/v" } do
      assert.is_true(mf.is_tensor(tensors[name]), name)
    end
    assert.is_true(same(tensors.W, s1:run(a.w)))
    assert.equal("3", meta.global_step)
    assert.equal(3, json.decode(meta.scalars)["W/Adam"].t)

    -- a new graph and session, not initialized: restore sets everything
    local b = ls_graph(2)
    local s2 <close> = mf.Session { graph = b.graph }
    assert.equal(3, mf.train.Saver():restore(s2, mf.train.latest_checkpoint(dir)))
    assert.is_true(same(s1:run(a.w), s2:run(b.w)))
    H.equal(s2:run(b.gs), 3)
    -- the next step is the same in both (Adam's moments and step count came back)
    s1:run(a.step, { [a.x] = X, [a.y] = Y })
    s2:run(b.step, { [b.x] = X, [b.y] = Y })
    assert.is_true(same(s1:run(a.w), s2:run(b.w)))
    assert.is_true(same(s1:run(a.b), s2:run(b.b)))
    H.equal(s2:run(b.gs), 4)
  end)

  it("saves a graph BatchNorm's running statistics with a Session; a rebuilt graph restores them", function()
    local dir = H.tmpdir("mf_saver_bn")
    local X, X2 = mf.randn { 16, 4 } * 2 + 1, mf.randn { 5, 4 } * 2 + 1
    -- x -> W -> BatchNorm1d(6) (mode fed per run) -> relu -> sum of squares, trained with Adam
    local function build(seed)
      mf.manual_seed(seed)
      local m = { graph = mf.Graph(), bn = nn.BatchNorm1d(6) }
      m.graph:as_default(function()
        m.x = mf.placeholder("float32", { -1, 4 }, "x")
        m.is_training = mf.placeholder("bool", {}, "is_training")
        m.w = mf.Variable(mf.randn { 4, 6 }, { name = "W" })
        m.y = m.bn(mf.matmul(m.x, m.w), m.is_training)
        m.step = mf.train.AdamOptimizer(0.05):minimize(mf.reduce_mean(mf.relu(m.y - 0.5) * m.y))
        m.init = mf.global_variables_initializer()
      end)
      return m
    end
    local a = build(1)
    local s1 <close> = mf.Session { graph = a.graph }
    s1:run(a.init)
    for i = 1, 4 do s1:run(a.step, { [a.x] = X + i * 0.1, [a.is_training] = true }) end
    H.equal(a.bn.num_batches_tracked, 4)
    local want = s1:run(a.y, { [a.x] = X2, [a.is_training] = false })
    mf.train.Saver():save(s1, dir .. "/bn.ckpt")
    local tensors = mf.load(dir .. "/bn.ckpt.safetensors")
    assert.is_true(same(tensors["BatchNorm/running_mean"], a.bn.running_mean))
    assert.is_true(same(tensors["BatchNorm/running_var"], a.bn.running_var))
    H.equal(tensors["BatchNorm/num_batches_tracked"], 4)

    -- the same graph built again with fresh modules: other outputs until restored
    local b = build(2)
    local s2 <close> = mf.Session { graph = b.graph }
    s2:run(b.init)
    local before = s2:run(b.y, { [b.x] = X2, [b.is_training] = false })
    assert.is_false(mf.allclose(before, want, 1e-3, 1e-3))
    mf.train.Saver():restore(s2, dir .. "/bn.ckpt")
    assert.is_true(same(b.bn.running_mean, a.bn.running_mean))
    assert.is_true(same(b.bn.running_var, a.bn.running_var))
    H.equal(b.bn.num_batches_tracked, 4)
    assert.is_true(same(s2:run(b.y, { [b.x] = X2, [b.is_training] = false }), want))
    -- and training goes on alike (statistics, weights and Adam's moments all came back)
    s1:run(a.step, { [a.x] = X, [a.is_training] = true })
    s2:run(b.step, { [b.x] = X, [b.is_training] = true })
    assert.is_true(same(b.bn.running_var, a.bn.running_var))
    assert.is_true(same(s2:run(b.y, { [b.x] = X2, [b.is_training] = false }),
      s1:run(a.y, { [a.x] = X2, [a.is_training] = false })))
    H.equal(b.bn.num_batches_tracked, 5)

    -- a checkpoint without the statistics (a graph without BatchNorm) is an error naming them
    local c, init = mf.Graph(), nil
    c:as_default(function()
      mf.Variable(mf.randn { 4, 6 }, { name = "W" })
      init = mf.global_variables_initializer()
    end)
    local s3 <close> = mf.Session { graph = c }
    s3:run(init)
    mf.train.Saver():save(s3, dir .. "/plain.ckpt")
    H.err(function() mf.train.Saver():restore(s2, dir .. "/plain.ckpt") end, "BatchNorm/running_mean")
  end)

  it("keeps max_to_keep checkpoints and lists them in the index", function()
    local dir = H.tmpdir("mf_saver")
    local vars = { w = mf.zeros { 3 } }
    local saver = mf.train.Saver { var_list = vars, max_to_keep = 2 }
    for s = 1, 5 do
      vars.w:fill_(s)
      saver:save(nil, dir .. "/model.ckpt", { global_step = s })
    end
    assert.same({ "checkpoint", "model.ckpt-4.safetensors", "model.ckpt-5.safetensors" }, ls(dir))
    assert.equal('model_checkpoint_path: "model.ckpt-5"\n'
      .. 'all_model_checkpoint_paths: "model.ckpt-4"\n'
      .. 'all_model_checkpoint_paths: "model.ckpt-5"\n', H.readfile(dir .. "/checkpoint"))
    assert.same({ "model.ckpt-4", "model.ckpt-5" }, saver.last_checkpoints)
    assert.equal(dir .. "/model.ckpt-5", mf.train.latest_checkpoint(dir))
    -- a new Saver (a resumed run) carries on with the index's list
    local saver2 = mf.train.Saver { var_list = vars, max_to_keep = 2 }
    saver2:save(nil, dir .. "/model.ckpt", { global_step = 6 })
    assert.same({ "checkpoint", "model.ckpt-5.safetensors", "model.ckpt-6.safetensors" }, ls(dir))
    assert.equal(dir .. "/model.ckpt-6", mf.train.latest_checkpoint(dir))
    local restored = { w = mf.zeros { 3 } }
    assert.equal(5, mf.train.Saver { var_list = restored }:restore(nil, dir .. "/model.ckpt-5"))
    H.equal(restored.w, { 5, 5, 5 })

    -- max_to_keep = 0 keeps all; no global_step saves at the prefix itself
    local dir2 = H.tmpdir("mf_saver")
    local all = mf.train.Saver { var_list = vars, max_to_keep = 0 }
    for s = 1, 7 do all:save(nil, dir2 .. "/m", { global_step = s }) end
    assert.equal(8, #ls(dir2))
    assert.equal(dir2 .. "/plain", all:save(nil, dir2 .. "/plain"))
    assert.is_true(exists(dir2 .. "/plain.safetensors"))
    assert.equal(dir2 .. "/plain", mf.train.latest_checkpoint(dir2))
    -- a missing folder is made
    assert.equal(dir2 .. "/new dir/m-1", all:save(nil, dir2 .. "/new dir/m", { global_step = 1 }))
    assert.equal(dir2 .. "/new dir/m-1", mf.train.latest_checkpoint(dir2 .. "/new dir"))
    -- the default keeps 5
    local dir3 = H.tmpdir("mf_saver")
    local five = mf.train.Saver { var_list = vars }
    for s = 1, 7 do five:save(nil, dir3 .. "/m", { global_step = s }) end
    assert.equal(6, #ls(dir3))
    assert.is_false(exists(dir3 .. "/m-2.safetensors"))
  end)

  it("latest_checkpoint: nil without an index or when its file is gone", function()
    local dir = H.tmpdir("mf_saver")
    assert.is_nil(mf.train.latest_checkpoint(dir))
    assert.is_nil(mf.train.latest_checkpoint(dir .. "/does-not-exist"))
    H.writefile(dir .. "/checkpoint", 'model_checkpoint_path: "model.ckpt-9"\n')
    assert.is_nil(mf.train.latest_checkpoint(dir))
    H.writefile(dir .. "/model.ckpt-9.safetensors", "") -- the index is what counts, not the name
    assert.equal(dir .. "/model.ckpt-9", mf.train.latest_checkpoint(dir))
    -- an absolute path in the index (as TensorFlow may write) stays as it is
    H.writefile(dir .. "/checkpoint", 'model_checkpoint_path: "' .. dir .. '/model.ckpt-9"\n')
    assert.equal(dir .. "/model.ckpt-9", mf.train.latest_checkpoint(dir))
    H.err(function() mf.train.latest_checkpoint(nil) end, "latest_checkpoint: dir must be a string")
  end)

  it("saves extra state: a DataSet's place and plain tables", function()
    local dir = H.tmpdir("mf_saver")
    mf.manual_seed(3)
    local ds = mf.data.mnist.DataSet.new(mf.arange(1, 11):view(10, 1):float(), mf.arange(1, 11))
    ds:next_batch(4)
    ds:next_batch(4)
    local info = { epoch = 7, note = "warmup", best = 0.25, ema = mf.tensor { 1.5, 2.5 } }
    local vars = { w = mf.ones { 2 } }
    mf.train.Saver { var_list = vars, extra = { train = ds, info = info } }:save(nil, dir .. "/c")
    local _, want = ds:next_batch(4) -- crosses into the second epoch, reshuffled

    local ds2 = mf.data.mnist.DataSet.new(mf.arange(1, 11):view(10, 1):float(), mf.arange(1, 11))
    local info2 = { stale = true }
    mf.manual_seed(99)
    mf.train.Saver { var_list = vars, extra = { train = ds2, info = info2 } }:restore(nil, dir .. "/c")
    assert.equal(8, ds2.index_in_epoch)
    local _, got = ds2:next_batch(4)
    assert.is_true(same(want, got))
    assert.equal(1, ds2.epochs_completed)
    assert.is_nil(info2.stale)
    assert.equal(7, info2.epoch)
    assert.equal(math.type(7), math.type(info2.epoch))
    assert.equal("warmup", info2.note)
    assert.equal(0.25, info2.best)
    H.equal(info2.ema, { 1.5, 2.5 })
    H.err(function()
      mf.train.Saver { var_list = vars, extra = { valid = ds2 } }:restore(nil, dir .. "/c")
    end, "holds no state for extra.valid")
  end)

  it("raises clear errors for missing, mismatched and corrupt checkpoints", function()
    local dir = H.tmpdir("mf_saver")
    local model, adam = trained_mlp(1)
    local path = mf.train.Saver { optimizer = adam }:save(model, dir .. "/model.ckpt", { global_step = 1 })
    local saver = mf.train.Saver()

    H.err(function() saver:restore(model, dir .. "/nothing-here") end,
      "no checkpoint at " .. dir .. "/nothing-here")
    H.err(function() saver:restore(model, mf.train.latest_checkpoint(dir .. "/empty")) end,
      "did latest_checkpoint find none?")
    -- other names: the missing ones are named
    local other = nn.Sequential { nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3) }
    H.err(function() saver:restore(other, path) end, "has no variables 3.bias, 3.weight")
    -- other shapes: named, and nothing changes
    mf.manual_seed(4)
    local wide = mlp(9)
    local before = wide:state_dict()["1.weight"]:clone()
    H.err(function() saver:restore(wide, path) end,
      "shapes do not match: 1.bias (checkpoint 8, variable 9)")
    assert.is_true(same(before, wide:state_dict()["1.weight"]))
    -- another optimizer
    local sgd = mf.optim.SGD(model:parameters(), { lr = 0.1 })
    H.err(function() mf.train.Saver { optimizer = sgd }:restore(model, path) end,
      "holds Adam state, the optimizer is SGD")
    -- a safetensors file that is not a checkpoint
    mf.save(dir .. "/plain.safetensors", model:state_dict())
    H.err(function() saver:restore(model, dir .. "/plain") end, "is not a moonflow checkpoint")
    -- corrupt files: truncated, garbage
    local bytes = H.readfile(path .. ".safetensors")
    H.writefile(dir .. "/cut.safetensors", bytes:sub(1, #bytes // 2))
    H.err(function() saver:restore(model, dir .. "/cut") end, "is not a readable checkpoint")
    H.writefile(dir .. "/junk.safetensors", string.rep("\255", 64))
    H.err(function() saver:restore(model, dir .. "/junk") end, "is not a readable checkpoint")
    -- a session whose variable has another shape
    local g = ls_graph(1)
    local sess <close> = mf.Session { graph = g.graph }
    sess:run(g.init)
    local p2 = mf.train.Saver():save(sess, dir .. "/sess.ckpt", { global_step = g.gs })
    local g4 = mf.Graph()
    g4:as_default(function()
      mf.Variable(mf.zeros { 4, 2 }, { name = "W" })
      mf.Variable(mf.zeros { 2 }, { name = "b" })
      mf.train.get_or_create_global_step()
    end)
    local sess4 <close> = mf.Session { graph = g4 }
    H.err(function() mf.train.Saver():restore(sess4, p2) end,
      "shapes do not match: W (checkpoint 3x2, variable 4x2)")
    -- bad options
    H.err(function() mf.train.Saver { max_keep = 3 } end, "unknown option 'max_keep'")
    H.err(function() mf.train.Saver { max_to_keep = -1 } end, "max_to_keep must be an integer >= 0")
    H.err(function() saver:save(model, dir .. "/x", { global_step = 1.5 }) end,
      "global_step must be an integer")
  end)

  it("metadata JSON: numbers come back with their subtype and exact value", function()
    local v = { 0.1, 1 / 3, 1e-300, -0.0, 1.0, 7, -9007199254740993, math.maxinteger, math.huge,
      -math.huge, "a \"q\" \\ \n\t\1 é", true, false, { x = { 1, 2 }, [5] = "five" } }
    local back = json.decode(json.encode(v))
    for i = 1, 13 do
      assert.equal(v[i], back[i])
      assert.equal(math.type(v[i]), math.type(back[i]))
    end
    assert.equal("-0.0", json.encode(-0.0))
    local nan = json.decode(json.encode(0 / 0))
    assert.is_true(nan ~= nan)
    assert.same({ x = { 1, 2 }, ["5"] = "five" }, back[14])
    H.err(function() json.decode('{"a":1') end, "json:")
  end)

  it("writes files Python's safetensors reads", function()
    local ok = os.execute("/usr/bin/python3 -c 'import safetensors.numpy' >/dev/null 2>&1")
    if not ok then
      pending("/usr/bin/python3 cannot import safetensors")
      return
    end
    local dir = H.tmpdir("mf_saver")
    local model, adam = trained_mlp(1)
    local path = mf.train.Saver { optimizer = adam }:save(model, dir .. "/m", { global_step = 12 })
    local p = io.popen("/usr/bin/python3 -c " .. H.q([[
import json, sys
from safetensors import safe_open
with safe_open(sys.argv[1], "np") as f:
    m = f.metadata()
    print(m["format"], m["global_step"], json.loads(m["optimizer"])["class"],
          sorted(f.keys())[0], f.get_tensor("1.weight").shape)
]]) .. " " .. H.q(path .. ".safetensors") .. " 2>&1")
    local out = p:read("a")
    p:close()
    assert.equal("moonflow.checkpoint 12 Adam 1.bias (8, 4)\n", out)
  end)
end)

describe("mf.train.Saver under SIGKILL", function()
  it("a process killed while saving leaves a loadable latest checkpoint", function()
    local dir = H.tmpdir("mf_saver_kill")
    local prev = 0
    local mid_write = {} -- temporary files left by a kill during mf.save
    for round, extra in ipairs { 0, 0.013, 0.037, 0.071, 0.15, 0.29 } do
      local log, pidfile = dir .. "/log" .. round, dir .. "/pid" .. round
      os.execute(LUA .. " " .. H.q(FIXTURES .. "saver_kill.lua") .. " " .. H.q(dir) .. " >" .. H.q(log)
        .. " 2>&1 & echo $! >" .. H.q(pidfile))
      local pid = assert(math.tointeger(tonumber(H.readfile(pidfile))), "no pid")
      -- wait for the first save of this run, then a little more
      for _ = 1, 1200 do
        if (H.readfile(log) or ""):find("saved") then break end
        os.execute("sleep 0.05")
      end
      assert.truthy((H.readfile(log) or ""):find("saved"), "the child never saved: " .. (H.readfile(log) or ""))
      if extra > 0 then os.execute("sleep " .. extra) end
      os.execute("kill -9 " .. pid .. "; for i in $(seq 200); do kill -0 " .. pid
        .. " 2>/dev/null || break; grep -q '^State:.*Z' /proc/" .. pid .. "/status 2>/dev/null && break;"
        .. " sleep 0.02; done")
      local text = H.readfile(log)
      local last_saved, last_saving = 0, 0
      for n in text:gmatch("saved (%d+)") do last_saved = tonumber(n) end
      for n in text:gmatch("saving (%d+)") do last_saving = tonumber(n) end

      -- the latest checkpoint: loadable, the values of the step it names, at least the last
      -- step reported saved
      local latest = mf.train.latest_checkpoint(dir)
      assert.is_not_nil(latest)
      local step = tonumber(latest:match("model%.ckpt%-(%d+)$"))
      assert.is_true(step >= last_saved and step <= last_saving and step >= prev,
        ("round %d: latest %d, saved %d, saving %d, previous %d"):format(round, step, last_saved,
          last_saving, prev))
      prev = step
      local names = {}
      for _, f in ipairs(ls(dir)) do
        if f:find("%.tmp%.") then mid_write[f] = true end
        -- every file named like a checkpoint is a whole one, with its step's values
        local s = f:match("^model%.ckpt%-(%d+)%.safetensors$")
        if s then
          s = tonumber(s)
          names[#names + 1] = s
          local t, meta = mf.load(dir .. "/" .. f)
          assert.equal(tostring(s), meta.global_step)
          local f32 = { dtype = "float32" }
          assert.is_true(same(t.a, mf.full({ 1024, 1024 }, s, f32)), f)
          assert.is_true(same(t.b, mf.full({ 1024, 2048 }, s + 0.5, f32)), f)
          assert.is_true(same(t.c, mf.full({ 3, 1024, 1024 }, -s, f32)), f)
        end
      end
      -- the index lists whole files only
      for p in H.readfile(dir .. "/checkpoint"):gmatch('all_model_checkpoint_paths: "([^"]*)"') do
        assert.is_true(exists(dir .. "/" .. p .. ".safetensors"), p)
      end
    end
    local n = 0
    for _ in pairs(mid_write) do n = n + 1 end
    print(("\n  saver kill test: 6 kills, %d of them during a file write"):format(n))
    os.execute("rm -rf " .. H.q(dir))
  end)
end)

describe("mf.train.Saver resume", function()
  -- Runs fixtures/saver_resume.lua; returns its output lines.
  local function run(kind, mode, n, dir)
    local p = io.popen(LUA .. " " .. H.q(FIXTURES .. "saver_resume.lua") .. " " .. kind .. " " .. mode
      .. " " .. n .. " " .. H.q(dir) .. " 2>&1")
    local lines = {}
    for l in p:lines() do lines[#lines + 1] = l end
    local ok = p:close()
    assert.is_true(ok, table.concat(lines, "\n"))
    return lines
  end

  for _, kind in ipairs { "eager", "session" } do
    it(kind .. ": N steps, save, restore in a fresh process, N steps == 2N steps bit for bit", function()
      local dir = H.tmpdir("mf_saver_resume")
      local n = 10
      local full = run(kind, "full", n, dir)
      local first = run(kind, "first", n, dir)
      local second = run(kind, "second", n, dir)
      assert.equal(2 * n + 1, #full)
      assert.equal("step " .. 2 * n, full[#full])
      assert.equal("step " .. n, first[#first])
      assert.equal("step " .. 2 * n, second[#second])
      local resumed = {}
      for i = 1, n do resumed[i] = first[i] end
      for i = 1, n do resumed[n + i] = second[i] end
      for i = 1, 2 * n do
        assert.equal(full[i], resumed[i], ("step %d: %s vs %s"):format(i, full[i], resumed[i]))
      end
      -- the losses change from step to step (the test would notice a frozen model)
      assert.are_not.equal(full[n + 1], full[n + 2])
    end)
  end
end)
