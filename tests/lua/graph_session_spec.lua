-- graph_session_spec.lua — sessions: feeds, fetch structures, errors, initialisers, devices.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local function model()
  local g = mf.Graph()
  local m = { g = g }
  g:as_default(function()
    m.x = mf.placeholder("float32", { -1, 2 }, "x")
    m.W = mf.Variable(mf.tensor { { 1.0, 2.0 }, { 3.0, 4.0 } }, { name = "W" })
    m.y = mf.matmul(m.x, m.W)
    m.s = mf.reduce_sum(m.y)
  end)
  return m
end

describe("sessions", function()
  it("fetch structures and feeds by object or name", function()
    local m = model()
    local sess <close> = mf.Session { graph = m.g }
    sess:run(mf.variables_initializer { m.W })
    local feed = { [m.x] = { { 1, 1 } } }
    H.equal(sess:run(m.y, feed), { { 4, 6 } })
    local r = sess:run({ m.y, m.s }, { ["x:0"] = { { 1, 1 } } })
    H.equal(r[2], 10)
    local k = sess:run({ out = m.y, total = { m.s } }, { x = { { 1, 0 } } })
    H.equal(k.out, { { 1, 2 } })
    H.equal(k.total[1], 3)
    H.equal(sess:run(mf.tensor { 7 }), { 7 })
  end)

  it("errors: unfed placeholder, bad feed, other graph, uninitialised, closed", function()
    local m = model()
    local sess = mf.Session { graph = m.g }
    H.err(function() sess:run(m.y, { [m.x] = { { 1, 1 } } }) end, "uninitialized value W")
    sess:run(mf.variables_initializer { m.W })
    H.err(function() sess:run(m.y) end, "placeholder tensor 'x'")
    H.err(function() sess:run(m.y, { [m.x] = { 1, 2, 3 } }) end, "Cannot feed value of shape")
    H.err(function() sess:run(m.y, { [m.x] = mf.tensor { { true, false } } }) end, "dtype float32")
    local other = model()
    H.err(function() sess:run(other.y) end, "not an element of this graph")
    sess:close()
    H.err(function() sess:run(m.s) end, "closed Session")
  end)

  it("runs each node once and only what is needed", function()
    local g = mf.Graph()
    g:as_default(function()
      local count = 0
      local x = mf.placeholder("float32", { 2 })
      local f = mf.graph_lift("Count", function(v) count = count + 1 return v * 2 end)
      local y = f(x)
      local a, b = y + 1, y * 3
      local armed = false
      local unused = mf.graph_lift("Boom", function(v) assert(not armed, "should not run") return v end)(x)
      armed = true
      local sess <close> = mf.Session()
      count = 0
      sess:run({ a, b }, { [x] = { 1, 2 } })
      assert.equal(1, count)
      assert.is_true(mf.is_symbolic(unused))
    end)
  end)

  it("InteractiveSession and eval", function()
    local m = model()
    local sess <close> = mf.InteractiveSession { graph = m.g }
    sess:run(mf.variables_initializer { m.W })
    H.equal(m.s:eval { [m.x] = { { 1, 1 } } }, 10)
  end)

  it("global variables, trainable variables, print_all_variables", function()
    local g = mf.Graph()
    g:as_default(function()
      mf.Variable(mf.zeros { 3 }, { name = "a" })
      mf.Variable(0, { name = "step", trainable = false })
      assert.equal(2, #mf.global_variables())
      assert.equal(1, #mf.trainable_variables())
      local lines = {}
      local p = _G.print
      _G.print = function(s) lines[#lines + 1] = s end
      local ok, err = pcall(mf.print_all_variables)
      _G.print = p
      assert(ok, err)
      assert.equal("  var   0: (3,)              a:0", lines[1])
    end)
  end)

  it("device placement: soft placement, errors without it", function()
    local g = mf.Graph()
    g:as_default(function()
      local x = mf.placeholder("float32", { 2 }, "x")
      local y = mf.device("/gpu:0", function() return x * 2 end)
      if mf.cuda.is_available() then return end
      local soft <close> = mf.Session { config = { allow_soft_placement = true } }
      H.equal(soft:run(y, { [x] = { 1, 2 } }), { 2, 4 })
      local hard <close> = mf.Session()
      H.err(function() hard:run(y, { [x] = { 1, 2 } }) end, "Cannot assign a device for operation 'mul'")
    end)
  end)
end)
