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

  it("runs only what the fetches need, each node once, also across fetch structures", function()
    local g = mf.Graph()
    g:as_default(function()
      local runs = {}
      local function counted(name)
        return mf.graph_lift(name, function(v)
          runs[name] = (runs[name] or 0) + 1
          return v + 1
        end)
      end
      local x = mf.placeholder("float32", { 2 }, "x")
      local a = counted("A")(x)
      local b = counted("B")(a)
      local c = counted("C")(a)
      local sess <close> = mf.Session()
      runs = {} -- (building ran each twice, to infer shapes)
      local r = sess:run({ first = b, both = { b, c }, again = "B:0" }, { x = { 1, 2 } })
      assert.same({ A = 1, B = 1, C = 1 }, runs)
      H.equal(r.first, { 3, 4 })
      H.equal(r.both[2], { 3, 4 })
      H.equal(r.again, { 3, 4 })
      runs = {}
      H.equal(sess:run(b, { [x] = { 0, 0 } }), { 2, 2 }) -- C not needed
      assert.same({ A = 1, B = 1 }, runs)
      runs = {}
      H.equal(sess:run(b, { [a] = { 5, 5 } }), { 6, 6 }) -- a fed: A and x not needed
      assert.same({ B = 1 }, runs)
      -- one output of a two-output op fed: the op runs for the other, the fed value stands
      local p, q = mf.graph_lift("Two", function(v) return v + 10, v + 20 end)(x)
      local r2 = sess:run({ p, q, p + 0 }, { [x] = { 1, 2 }, [p] = { 0, 0 } })
      H.equal(r2[1], { 0, 0 })
      H.equal(r2[2], { 21, 22 })
      H.equal(r2[3], { 0, 0 })
    end)
  end)

  it("a fetched tensor keeps its value after later runs", function()
    local g = mf.Graph()
    g:as_default(function()
      local x = mf.placeholder("float32", { 2 }, "x")
      local w = mf.Variable(mf.tensor { 1.0, 2.0 }, { name = "w" })
      local c = mf.constant(mf.tensor { 7.0, 8.0 })
      local y = x * 2
      local flat = mf.reshape(w, { 2, 1 }) -- a view of the variable
      local inc = w:assign_add(mf.tensor { 1.0, 1.0 })
      local step = mf.train.GradientDescentOptimizer(1):minimize(mf.reduce_sum(w * x))
      local sess <close> = mf.Session()
      sess:run(mf.global_variables_initializer())
      local y1 = sess:run(y, { [x] = { 1, 2 } })
      local y2 = sess:run(y, { [x] = { 3, 4 } })
      H.equal(y1, { 2, 4 })
      H.equal(y2, { 6, 8 })
      local w1, f1, i1 = sess:run(w), sess:run(flat), sess:run(inc) -- w is now {2, 3}
      sess:run(step, { [x] = { 1, 1 } }) -- w = {1, 2}
      sess:run(inc) -- w = {2, 3}
      H.equal(w1, { 1, 2 })
      H.equal(f1, { { 1 }, { 2 } })
      H.equal(i1, { 2, 3 })
      H.equal(sess:run(w), { 2, 3 })
      -- changing a result changes nothing in the session or the graph
      local c1 = sess:run(c)
      c1:fill_(0)
      H.equal(sess:run(c), { 7, 8 })
      local w2 = sess:run(w)
      w2:fill_(0)
      H.equal(sess:run(w), { 2, 3 })
    end)
  end)

  it("drops intermediate results once their last reader ran, and nothing after the run", function()
    local g = mf.Graph()
    g:as_default(function()
      local seen = setmetatable({}, { __mode = "v" }) -- the values the nodes made, weakly
      local alive -- was A's value still reachable when C ran?
      local x = mf.placeholder("float32", { 3 }, "x")
      local a = mf.graph_lift("A", function(v)
        local r = v * 2
        seen.a = r
        return r
      end)(x)
      local b = mf.graph_lift("B", function(v)
        local r = v + 1
        seen.b = r
        return r
      end)(a)
      local c = mf.graph_lift("C", function(v)
        collectgarbage()
        collectgarbage()
        alive = seen.a ~= nil
        return v * 3
      end)(b)
      local sess <close> = mf.Session()
      H.equal(sess:run(c, { [x] = { 1, 2, 3 } }), { 9, 15, 21 })
      assert.is_false(alive) -- B was A's only reader
      collectgarbage()
      collectgarbage()
      assert.is_nil(seen.b) -- not fetched: gone once the run ended
      local r = sess:run({ a, c }, { [x] = { 1, 1, 1 } })
      assert.is_true(alive) -- fetched: kept for the caller
      H.equal(r[1], { 2, 2, 2 })
      H.equal(r[2], { 9, 9, 9 })
      -- a run that fails part way lets go of what it made too
      local armed = false
      local boom = mf.graph_lift("Boom", function(v)
        if armed then error("boom", 0) end
        return v
      end)(b)
      armed = true
      H.err(function() sess:run(boom, { [x] = { 1, 1, 1 } }) end, "boom")
      collectgarbage()
      collectgarbage()
      assert.is_nil(seen.a)
      assert.is_nil(seen.b)
    end)
  end)

  it("plans are per fetch and feed keys: a new feed key set is checked again", function()
    local m = model()
    local sess <close> = mf.Session { graph = m.g }
    sess:run(mf.variables_initializer { m.W })
    H.equal(sess:run(m.s, { [m.x] = { { 1, 1 } } }), 10)
    H.err(function() sess:run(m.s) end, "placeholder tensor 'x'")
    H.err(function() sess:run(m.s, { [m.x] = { { 1, 1 } }, ["nope:0"] = 1 }) end, "nope:0")
    local msg = H.err(function() sess:run(m.s, { [m.x] = mf.zeros { 1, 3 } }) end, "shape (1, 3)")
    assert.truthy(msg:find("graph_session_spec.lua:%d+:"), msg) -- at the caller's line
    msg = H.err(function() sess:run(m.s, { [m.x] = { { 1, 1 } }, ["nope:0"] = 1 }) end, "nope:0")
    assert.truthy(msg:find("graph_session_spec.lua:%d+:"), msg)
    H.equal(sess:run(m.s, { [m.x] = mf.ones({ 2, 2 }, { dtype = "float64" }) }), 20)
    H.equal(sess:run(m.s, { x = { { 1, 1 } } }), 10)
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
