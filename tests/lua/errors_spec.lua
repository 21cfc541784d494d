-- errors_spec.lua — every misuse is a clear Lua error (never a crash): the issue's three (matmul
-- sizes, an index out of range, a ragged table), wrong argument types, bad dtype names, bad
-- shapes, reshape mismatches, dims and indices out of range, closed tensors, missing devices.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("errors the issue names", function()
  it("matmul with mismatched sizes", function()
    H.err(function() return mf.ones{2, 3}:matmul(mf.ones{2, 3}) end,
      "matmul: sizes 2x3 and 2x3 do not match")
    H.err(function() return mf.matmul(mf.ones{2}, mf.ones{3}) end, "matmul: sizes 2 and 3")
  end)

  it("an index out of range names the index, the dim and its size", function()
    H.err(function() return mf.ones{2}[5] end, "index 5 is out of range for dimension 1 of size 2")
    H.err(function() return mf.ones{2}[-3] end, "index -3 is out of range for dimension 1 of size 2")
    H.err(function() return mf.ones{2}[0] end, "index 0 is out of range for dimension 1 of size 2")
    H.err(function() return mf.ones{2, 3}[{1, 4}] end,
      "index 4 is out of range for dimension 2 of size 3")
    H.err(function() return mf.ones{2, 3}[{ {}, {2, 7} }] end,
      "index 7 is out of range for dimension 2 of size 3")
    H.err(function() local t = mf.ones{2}; t[3] = 1 end,
      "index 3 is out of range for dimension 1 of size 2")
    H.err(function() return mf.ones{2, 3}:select(2, 5) end,
      "select: index 5 is out of range for dimension 2 of size 3")
  end)

  it("a ragged nested table names the row", function()
    H.err(function() return mf.tensor{ {1, 2}, {3} } end,
      "tensor: ragged nested table: row [2] has 1 element, expected 2")
    H.err(function() return mf.tensor{ {1, 2}, 3 } end,
      "tensor: ragged nested table: row [2] is a number, expected a table of 2 elements")
    H.err(function() return mf.tensor{ { {1}, {2} }, { {3}, {4, 5} } } end,
      "row [2][2] has 2 elements, expected 1")
    H.err(function() return mf.tensor{ {1, 2}, {3, {4}} } end,
      "element [2][2] is a table, expected a number")
  end)
end)

describe("argument errors", function()
  it("wrong types name the function", function()
    H.err(function() return mf.add(mf.ones{2}, "x") end, "bad argument #2 to 'add'")
    H.err(function() return mf.ones{2} + "x" end, "bad argument #2 to 'add'")
    H.err(function() return mf.exp() end, "bad argument #1 to 'exp'")
    H.err(function() return mf.zeros() end, "bad argument #1 to 'zeros'")
    H.err(function() return mf.zeros("a") end, "bad argument #1 to 'zeros'")
    H.err(function() return mf.full({2}, "x") end, "bad argument #2 to 'full'")
    H.err(function() return mf.where(mf.tensor{true}, "a", 1) end, "bad argument #2 to 'where'")
    H.err(function() return mf.ones{2}:to(5) end, "to")
    H.err(function() return mf.tensor{1, "a"} end,
      "tensor: element [2] is a string, expected a number or boolean")
    H.err(function() return mf.tensor("x") end, "strings live on the Lua side")
    H.err(function() return mf.tensor{ {1, 2}, {3, nil, 5} } end, "row [2] has")
    H.err(function() return mf.tensor{ {1, 2}, {nil, 4} } end, "element [2][1] is missing (nil)")
    H.err(function() return mf.tensor{1}:size("a") end, "bad argument")
    H.err(function() return mf.cat(mf.ones{2}) end, "bad argument #1 to 'cat'")
    H.err(function() return mf.sum("x") end, "bad argument #1 to 'sum'")
  end)

  it("bad dtype names", function()
    H.err(function() return mf.zeros({2}, {dtype = "flaot32"}) end, "zeros: unknown dtype 'flaot32'")
    H.err(function() return mf.tensor({1}, {dtype = "complex"}) end, "tensor: unknown dtype 'complex'")
    H.err(function() return mf.cast(mf.ones{1}, "int128") end, "cast: unknown dtype 'int128'")
    H.err(function() return mf.ones{1}:to("flaot32") end, "'flaot32' is neither a dtype nor")
    H.err(function() return mf.ones{1}:type("x") end, "type: unknown dtype 'x'")
    H.err(function() return mf.rand({2}, {dtype = "int64"}) end, "rand")
  end)

  it("bad shapes", function()
    H.err(function() return mf.zeros(2, -3) end, "zeros: bad shape: size -3 at position 2")
    H.err(function() return mf.ones{-1} end, "ones: bad shape: size -1 at position 1")
    H.err(function() return mf.zeros{2, 1.5} end, "entry 2 is not an integer")
    H.err(function() return mf.zeros{2, "a"} end, "entry 2 is string")
    H.err(function() return mf.zeros(1, 2, 3, 4, 5, 6, 7, 8, 9) end, "too many dimensions (9, at most 8)")
    H.err(function() return mf.zeros(2 ^ 40 | 0, 2 ^ 40 | 0) end, "too many")
    H.err(function() return mf.fill(mf.ones{2}, 1) end, "a shape tensor must be a 1-D integer tensor")
    H.err(function() return mf.eye(-1) end, "eye: sizes must be >= 0")
    H.err(function() return mf.arange(1, 5, 0) end, "arange: step must be nonzero")
  end)

  it("reshape and view mismatches", function()
    H.err(function() return mf.arange(6):reshape(4, 2) end, "reshape: cannot view")
    H.err(function() return mf.arange(6):reshape(-1, -1) end, "only one size can be -1")
    H.err(function() return mf.arange(6):reshape(2, -2) end, "bad shape: size -2 at position 2")
    H.err(function() return mf.arange(6):view(4, -1) end, "view")
    H.err(function() return mf.arange(6):reshape(2, 3):t():view(6) end, "use reshape")
    H.err(function() return mf.ones{2, 3}:expand(3, 3) end, "expand: cannot expand 2x3 to 3x3")
    H.err(function() return mf.ones{2} + mf.ones{3} end, "add: shapes 2 and 3 cannot be broadcast")
    H.err(function() return mf.cat{mf.ones{2}, mf.ones{2, 2}} end, "cat")
    H.err(function() return mf.cat{} end, "cat: expected a non-empty list")
    H.err(function() return mf.stack{mf.ones{2}, mf.ones{3}} end, "stack")
    H.err(function() local t = mf.ones{2}; t[1] = mf.ones{3} end, "copy")
  end)

  it("dims out of range", function()
    H.err(function() return mf.ones{2, 3}:sum(3) end,
      "sum: dimension 3 is out of range for a 2-d tensor (expected 1..2 or -2..-1)")
    H.err(function() return mf.ones{2, 3}:transpose(1, 0) end, "transpose: dimension 0 is out of range")
    H.err(function() return mf.ones{2, 3}:size(-3) end, "size: dimension -3 is out of range")
    H.err(function() return mf.ones{2}:unsqueeze(3) end,
      "unsqueeze: dimension 3 is out of range for a new dimension of a 1-d tensor")
    H.err(function() return mf.ones{2, 3}:permute{1, 1} end, "permute: dimension 1 appears twice")
    H.err(function() return mf.ones{2, 3}:permute{1} end, "permute: got 1 dimensions for a 2-d tensor")
    H.err(function() return mf.ones{2, 3, 4}:t() end, "t: expects a tensor with at most 2 dimensions")
    H.err(function() return mf.ones{2}:narrow(1, 2, 2) end, "narrow: start 2 with length 2 goes past")
    H.err(function() return mf.ones{2}:narrow(1, 1, -1) end, "narrow: length must be >= 0")
    H.err(function() return mf.ones{2}:flatten(2) end, "flatten: dimension 2 is out of range")
  end)

  it("indexing misuse", function()
    H.err(function() return mf.ones{2, 3}[{1, 2, 3}] end, "index: too many indices (3) for a 2-d tensor")
    H.err(function() return mf.ones{2, 3}[1.5] end, "index: an index must be an integer, got 1.5")
    H.err(function() return mf.ones{2, 3}[true] end, "index: bad index (boolean)")
    H.err(function() return mf.ones{2, 3}[{ {3, 1} }] end, "index 3 is out of range")
    H.err(function() return mf.ones{4}[{ {3, 1} }] end, "index: range {3, 1} is reversed")
    H.err(function() return mf.ones{4}[{ {1, 4, 0} }] end, "index: range step must be positive")
    H.err(function() return mf.ones{4}[{ "a" }] end, "index: entry 1 must be a number or a range table")
    H.err(function() return mf.tensor(1)[1] end, "index: cannot index a 0-d tensor")
    H.err(function() return #mf.tensor(1) end, "attempt to get the length of a 0-d tensor")
    H.err(function() local t = mf.ones{2}; t[1] = "x" end, "index: cannot assign a string to a tensor")
  end)

  it("values", function()
    H.err(function() return mf.ones{2, 3}:item() end, "item: tensor has 6 elements, expected 1")
    H.err(function() return mf.tensor{1, 2}:mean() end, "mean")
    H.err(function() return mf.ones{2}:clamp(2, 1) end, "clamp: lower bound")
    H.err(function() return mf.set_num_threads(0) end, "set_num_threads: expected a count")
    H.err(function() return mf.ones({2}, {dtype = "int64", requires_grad = true}) end,
      "only floating-point tensors can require gradients")
    H.err(function() return mf.tensor({1e300}, {dtype = "int64"}) end, "does not fit int64")
    H.err(function() return mf.constant("s", {dtype = "float32"}) end, "constant: a string value")
  end)

  -- found by tests/fuzz/fuzz_api.lua
  it("what the API fuzzer found", function()
    -- t.grad = <not a tensor>: the setter runs through __newindex, where Lua names no function
    H.err(function() local t = mf.ones{2}; t.grad = {1, 2} end,
      "grad: t.grad must be a tensor or nil, got table")
    -- sizes whose product overflows int64 (UB before) in reshape/view and expand
    H.err(function() return mf.ones{7}:reshape{7, -1, math.maxinteger} end,
      "elements is too many")
    H.err(function() return mf.ones{7}:reshape{7, -1, math.maxinteger} end, "reshape: ")
    H.err(function() return mf.zeros{0}:view{1 << 62, 1 << 62, 0} end,
      "view: the nonzero sizes multiply to")
    H.err(function() return mf.ones{1, 1}:expand{1 << 62, 1 << 62} end, "expand: ")
    -- arange over more elements than int64 holds (the count was cast to int64, UB)
    H.err(function() return mf.arange(0, 1e300) end, "arange: [0, 1e+300) in steps of 1")
    H.err(function() return mf.arange(-1e300, 1e300, 1e-300) end, "too many")
    -- index_select of math.mininteger: shifted to 0-based it wrapped to INT64_MAX, and the message
    -- added 1 back (signed overflow, UBSan); it names the index as given
    H.err(function() return mf.ones{3}:index_select(1, {math.mininteger}) end,
      "index_select: index -9223372036854775808 (entry 1 of the index) is out of range")
    if mf.cuda.is_available() then
      -- (the GPU finds it as it runs: the next synchronisation, here the download, reports it)
      H.err(function() return mf.ones({3}, {device = "cuda:0"}):index_select(1, {2, math.mininteger}):cpu() end,
        "index_select: index -9223372036854775808 is out of range 1..3 for dimension 1")
    end
    -- a GPU index that does not fit an int was truncated: t:cuda(2^32) went to cuda:0
    H.err(function() return mf.ones{2}:cuda(1 << 32) end, "cuda: bad GPU index 4294967296")
    H.err(function() return mf.ones{3}:var{correction = 1 << 32} end,
      "correction must be an integer in 0..2^30")
    -- batch_norm's optional tensors and numbers: F.batch_norm calls it through pcall, where Lua's
    -- own argument errors named '?'
    H.err(function()
      return mf.nn.functional.batch_norm(mf.ones{2, 3}, mf.zeros{3}, mf.ones{3}, {1, 2})
    end, "batch_norm: the weight must be a tensor, got table")
    H.err(function()
      return mf.nn.functional.batch_norm(mf.ones{2, 3}, mf.zeros{3}, mf.ones{3}, nil, nil, true, {})
    end, "batch_norm: momentum and eps must be numbers, got table and number")
    -- a closed tensor is not a constant
    local c = mf.ones{2}
    c:close()
    H.err(function() return mf.constant(c) end, "constant: tensor is closed")
    -- printing a module whose parameter was closed failed ("tensor is closed" from tostring)
    local lin = mf.nn.Sequential { mf.nn.Linear(3, 2) }
    lin[1].bias:close()
    local text = tostring(lin)
    assert.truthy(text:find("[weight 2x3, bias (closed); 6 params]", 1, true), text)
    assert.truthy(text:find("Total parameters: 6", 1, true), text)
    -- backward's gradient on another device was accepted (and became a leaf's .grad as it was)
    if mf.cuda.is_available() then
      local x = mf.ones({2}, {device = "cuda:0"}):requires_grad()
      H.err(function() x:backward(mf.ones{2}) end,
        "backward: the gradient is on cpu but the tensor on cuda:0")
    end
  end)

  it("Lua-level functions name a non-tensor argument", function()
    local F = mf.nn.functional
    H.err(function() return mf.zeros_like(nil) end, "zeros_like: expected a tensor, got nil")
    H.err(function() return mf.full_like({}, 1) end, "full_like: expected a tensor, got table")
    H.err(function() return mf.ones_like(mf.ones{2}, 3) end, "ones_like: options must be a table, got number")
    H.err(function() return mf.numel("x") end, "numel: expected a tensor, got string")
    H.err(function() return F.conv2d(nil, mf.ones{1, 1, 3, 3}) end, "conv2d: the input must be a tensor, got nil")
    H.err(function() return F.linear(mf.ones{2, 2}, "w") end, "linear: the weight must be a tensor, got string")
    H.err(function() return F.max_pool2d(5, 2) end, "max_pool2d: the input must be a tensor, got number")
    H.err(function() return F.avg_pool2d(nil, 2) end, "avg_pool2d: the input must be a tensor, got nil")
    H.err(function() return F.flatten(nil) end, "flatten: the input must be a tensor, got nil")
    H.err(function() return F.batch_norm(true) end, "batch_norm: the input must be a tensor, got boolean")
    H.err(function() return F.batch_norm_composed(1) end, "batch_norm_composed: the input must be a tensor, got number")
    H.err(function() return mf.nn.BatchNorm1d(3, 5) end, "BatchNorm1d: options must be a table, got number")
    H.err(function() return mf.nn.BatchNorm2d(3)(nil) end, "expected a tensor input, got nil")
    H.err(function() return F.batch_norm(mf.ones{2, 3}, mf.zeros{3}, true) end,
      "batch_norm: running_var must be a tensor, got boolean")
    H.err(function() return F.batch_norm_composed(mf.ones{2, 3}, 1) end,
      "batch_norm_composed: running_mean must be a tensor, got number")
    H.err(function() return F.conv2d(mf.ones{1, 1, 3, 3}, mf.ones{1, 1, 3, 3}, nil, 2) end,
      "conv2d: options must be a table, got number")
    H.err(function() return mf.constant(1, 2) end, "constant: options must be a table, got number")
    H.err(function() return mf.nn.Linear(2, 3, 4) end, "Linear: options must be a table, got number")
  end)

  it("a C function called from C names itself, not '?'", function()
    -- mf.no_grad(fn, ...) and pcall(fn, ...) call fn from C, where Lua has no name for it: the
    -- methods' argument errors said "bad argument #1 to '?'" and a ragged table "?: ragged ..."
    local msg = H.err(function() return mf.no_grad(mf.Tensor.shape, "float64") end,
      "bad argument #1 to 'moonflow.")
    assert.is_nil(msg:find("'?'", 1, true))
    H.err(function() return mf.no_grad(mf._nn.conv2d, "x") end, "bad argument #1 to 'moonflow.")
    local ok, m = pcall(mf.Tensor.add, mf.ones{2}, {1, {2}})
    assert.is_false(ok)
    assert.truthy(m:match("^moonflow[%w_.]*%.add: ragged nested table"), m)
    ok, m = pcall(mf.no_grad, mf.Tensor.add, mf.ones{2}, {1, {2}})
    assert.truthy(m:match("^moonflow[%w_.]*%.add: ragged nested table"), m)
  end)

  it("module methods name a bad argument (fuzz_api's object calls)", function()
    local nn = mf.nn
    -- forward on a non-tensor: "attempt to call a nil value (method 'dim')" and the like
    H.err(function() return nn.Linear(3, 2)(nil) end, "expected a tensor input, got nil")
    H.err(function() return nn.Linear(3, 2):forward({1, {2}}) end, "expected a tensor input, got table")
    H.err(function() return nn.Conv2d(1, 2, 3)("x") end, "expected a tensor input, got string")
    H.err(function() return nn.MaxPool2d(2)() end, "expected a tensor input, got nil")
    H.err(function() return nn.Reshape(-1):forward() end, "expected a tensor input, got nil")
    H.err(function() return nn.Flatten()(3) end, "expected a tensor input, got number")
    H.err(function() return nn.ReLU()(true) end, "expected a tensor input, got boolean")
    H.err(function() return nn.Softmax()({}) end, "expected a tensor input, got table")
    H.err(function() return nn.Dropout(0.5)(nil) end, "expected a tensor input, got nil")
    -- names and values of parameters and buffers: a nil or NaN name ("table index is nil"), a
    -- non-string one (concatenated into the message), a buffer that is not a tensor (which to()
    -- and float() then indexed)
    local m = nn.ReLU()
    H.err(function() m:register_parameter() end,
      "register_parameter: the name must be a non-empty string, got nil")
    H.err(function() m:register_parameter(false, true) end,
      "register_parameter: the name must be a non-empty string, got boolean")
    H.err(function() m:register_buffer(0 / 0, mf.ones{2}) end,
      "register_buffer: the name must be a non-empty string, got number")
    H.err(function() m:register_buffer("b", 5) end, "register_buffer: 'b' is not a tensor (got number)")
    H.err(function() m:register_parameter("w", print) end,
      "register_parameter: 'w' is not a tensor (got function)")
    H.err(function() m:add_module("", nn.ReLU()) end,
      "add_module: the name must be a non-empty string, got an empty string")
    H.equal(m:buffers(), {})
    assert.are.equal(m, m:double())
    -- a module inside itself: printing it (tostring in an error message) recursed for seconds and
    -- gigabytes, forward without end (a hang found by fuzz_api seed 45)
    local seq = nn.Sequential{nn.Linear(3, 3)}
    H.err(function() seq:add(seq) end, "Sequential:add: a module cannot be its own child or descendant (a cycle)")
    local outer = nn.Sequential{seq}
    H.err(function() seq:add(outer) end, "a cycle")
    H.err(function() seq:add_module("me", seq) end, "add_module: a module cannot be its own child")
    H.err(function() seq.inner = outer end, "nn: a module cannot be its own child or descendant")
    assert.are.equal(1, #seq)
    assert.is_string(tostring(outer))
    -- named_modules' prefix; its recursion's own arguments are no longer public
    H.err(function() return m:named_modules(mf.ones{2}) end,
      "named_modules: the prefix must be a string, got userdata")
    assert.are.equal(1, #m:named_modules(nil, true))
    H.err(function() return m:shape_chain({2, 3}, 4) end, "shape_chain: options must be a table, got number")
    H.err(function() return m:shape_chain(3) end, "shape_chain: the input shape must be a table")
    -- a class with a non-module parent made instances without __init
    H.err(function() return nn.class({}, mf.ones{2}) end, "nn.class: the class name must be a string, got table")
    H.err(function() return nn.class("X", mf.ones{2}) end,
      "nn.class: the parent must be a module class such as nn.Module, got a tensor")
    H.err(function() return m:extend(m) end, "nn.class: the class name must be a string, got table")
    H.err(function() return nn.Flatten():extend("Y") end,
      "nn.class: the parent must be a module class such as nn.Module, got an instance of nn.Flatten")
    local X = nn.Linear:extend("X")
    assert.are.equal(2, X(3, 2).out_features)
    H.err(function() return m:summary(mf.ones{2}) end, "summary: the input shape must be a table of sizes such as {1, 784}, got a tensor")
  end)

  it("mf.nn.init names a bad argument", function()
    -- its numbers, nonlinearity names and tensors were used unchecked ("attempt to perform
    -- arithmetic on a table value", "attempt to call a nil value (method 'match')")
    local I, w = mf.nn.init, mf.ones{4, 4}
    H.err(function() return I.calculate_fans(3) end, "calculate_fans: expected a tensor, got number")
    H.err(function() return I.calculate_gain(w) end,
      "calculate_gain: the nonlinearity must be a string such as \"relu\", got userdata")
    H.err(function() return I.calculate_gain("leaky_relu", "x") end,
      "calculate_gain: the negative slope must be a number, got string")
    H.err(function() return I.trunc_normal_(w, {0}) end, "trunc_normal_: mean must be a number, got table")
    H.err(function() return I.xavier_normal_(w, {}) end, "xavier_normal_: gain must be a number, got table")
    H.err(function() return I.xavier_uniform_(w, true) end, "xavier_uniform_: gain must be a number, got boolean")
    H.err(function() return I.kaiming_uniform_(w, nil, nil, {}) end,
      "kaiming_uniform_: the nonlinearity must be a string")
    H.err(function() return I.kaiming_normal_(w, true) end,
      "kaiming_normal_: a (the negative slope) must be a number, got boolean")
    H.err(function() return I.uniform_(w, {}) end, "uniform_: a must be a number, got table")
    H.err(function() return I.normal_(w, 0, "1") end, "normal_: std must be a number, got string")
    mf.Graph():as_default(function()
      H.err(function() return I.ones_(mf.placeholder("float32")) end,
        "ones_: expected a tensor, got a symbolic tensor")
    end)
    assert.are.equal(w, I.kaiming_uniform_(w, math.sqrt(5)))
  end)

  it("graph-mode calls name a bad argument", function()
    local g = mf.Graph()
    g:as_default(function()
      -- a raw C function run by shape inference or a session (from C) named '?'
      local x = mf.placeholder("float32", {2}, "x")
      local msg = H.err(function() return mf.narrow(x, mf.constant{1}) end,
        "Narrow: cannot build this op from inputs of shapes (2,) and (1,): bad argument #2 to 'moonflow.")
      assert.is_nil(msg:find("'?'", 1, true))
      local u = mf.placeholder("float32", nil, "u") -- shape unknown: the op fails when it runs
      local y = mf.narrow(u, mf.constant{1})
      local sess = mf.Session()
      msg = H.err(function() return sess:run(y, {[u] = mf.ones{2}}) end, "bad argument #2 to 'moonflow.")
      assert.is_nil(msg:find("'?'", 1, true))
      local op = mf.global_variables_initializer()
      H.err(function() op:run(nil, 3) end, "run: the session must be a Session, got number")
      H.err(function() x:eval({}, "s") end, "eval: the session must be a Session, got string")
      -- operations for the session: op:run(op, op) ran forever (each run tail-called the next)
      H.err(function() op:run(op, op) end, "run: the session must be a Session, got an Operation")
      H.err(function() x:eval(nil, x) end, "eval: the session must be a Session, got a tensor")
      assert.is_nil(op:run(nil, sess))
      H.err(function() return mf.constant(print, print) end, "constant: options must be a table, got function")
      -- a Const of nil made a node that sessions failed to plan ("table index is nil")
      H.err(function() return mf.constant(nil) end,
        "constant: expected a number, boolean, string, table or tensor, got nil")
      H.err(function() return mf.constant(print) end, "got function")
      H.err(function() return mf.Variable(1):assign(nil) end, "assign: a value is needed")
      -- the operators' raw functions were called as raw[key], which Lua names '?'
      msg = H.err(function() return x + nil end, "bad argument #2 to 'add' (")
      H.err(function() return x % print end, "bad argument #2 to 'remainder' (")
      msg = H.err(function() return sess:run(u * mf.constant("abc"), {[u] = mf.ones{2}}) end,
        "bad argument #2 to 'mul' (")
      -- mf.device of a symbolic tensor placed the nodes after it on that tensor (the session then
      -- failed in placement.lua: "attempt to call a nil value (method 'lower')")
      H.err(function() return mf.device(u) end,
        "device: a device spec (a string such as \"cpu\", \"cuda:0\" or \"/gpu:0\") is needed, got a tensor")
      -- the negation of a string tensor ran Lua's own arithmetic on its table of strings
      local sp = mf.placeholder("string", nil, "sp")
      local ns = -sp
      H.err(function() return sess:run(ns, {[sp] = {"a", "b"}}) end, "Neg: expected a numeric tensor, got a string tensor")
      H.err(function() return sess:run(ns, {[sp] = "a"}) end, "Neg: expected a numeric tensor, got a string tensor")
      -- string concatenation took a missing or false element as the whole table again and
      -- recursed until the stack overflowed; a table holding itself did the same
      local cat = sp + "x"
      H.err(function() return sess:run(cat, {[sp] = {"a", false}}) end, "add: string tensors hold strings, got boolean")
      local selfref = {"a"}
      selfref[2] = selfref
      H.err(function() return sess:run(cat, {[sp] = selfref}) end, "add: string tensors nested more than 32 levels deep")
      H.err(function() return sess:run(sp + print, {[sp] = "a"}) end, "add: string tensors hold strings, got function")
      assert.are.same({"ax", "bx"}, sess:run(cat, {[sp] = {"a", "b"}}))
      -- a Const of NaN: the session's set of constant values took NaN as a key
      local nan = sess:run(mf.constant(0 / 0))
      if mf.is_tensor(nan) then nan = nan:item() end
      assert.is_true(nan ~= nan)
      -- a loss module on a tensor of unknown shape: shape_str indexed the missing shape
      H.err(function() return mf.nn.MSELoss()(u, mf.ones{2}) end,
        "mse_loss: input has shape unknown but target 2")
      local T = mf.train
      local loss = mf.reduce_sum(mf.Variable(mf.ones{2}) * x)
      H.err(function() T.GradientDescentOptimizer(0.1):minimize(loss, 0) end,
        "minimize: options must be a table, got number")
      H.err(function() T.GradientDescentOptimizer(0.1):minimize(loss, {var_list = 1}) end,
        "compute_gradients: var_list must be a table of variables, got number")
      H.err(function() T.GradientDescentOptimizer(0.1):apply_gradients(true) end,
        "apply_gradients: expected a table of {gradient, variable} pairs, got boolean")
      sess:close()
    end)
  end)

  it("t.grad never leads back to t (refcount cycles leaked)", function()
    -- x.grad = x, y.grad = x after x.grad = y, and z.grad = z * 2 (whose graph saved z) made
    -- cycles of references that were never freed (LeakSanitizer at exit, which this spec runs with)
    local x = mf.ones{2}:requires_grad()
    x.grad = x
    H.equal(x.grad, {1, 1})
    local y = mf.full({2}, 3.0):requires_grad()
    x.grad = y
    y.grad = x
    H.equal(y.grad, {1, 1})
    local z = mf.ones{2}:requires_grad()
    z.grad = z * 2
    H.equal(z.grad, {2, 2})
    assert.is_false(z.grad:needs_grad())
    -- a seed whose graph saved the leaf, passed on unchanged to its .grad
    local w = mf.ones{2}:requires_grad()
    ;(w + 1):backward(w * 2)
    H.equal(w.grad, {2, 2})
    assert.is_false(w.grad:needs_grad())
    w:backward(w * 3)
    H.equal(w.grad, {5, 5})
  end)

  it("a tensor saved for the backward and then written in place stops the backward", function()
    -- nll_loss's gather saves (a view of) the caller's labels themselves: labels refilled
    -- before the backward gave the gradient at the new classes without a word
    local F = mf.nn.functional
    local x = mf.tensor({ {1, 2, 3}, {4, 5, 6} }, {dtype = "float32"}):requires_grad()
    local labels = mf.tensor{3, 1}
    local loss = F.nll_loss(x, labels)
    assert.are.equal(-3.5, loss:item())
    labels:copy_(mf.tensor{1, 2})
    H.err(function() loss:backward() end,
      "backward: a tensor that gather saved for its gradient was modified in place since")
    assert.is_nil(x.grad)
    -- unchanged (or changed only after the backward): the gradient at the saved classes
    labels = mf.tensor{3, 1}
    F.nll_loss(x, labels):backward()
    labels:fill_(2)
    H.equal(x.grad, { {0, 0, -0.5}, {-0.5, 0, 0} })
    -- a weight stepped between a retained backward and a second one (PyTorch refuses this too)
    local w = mf.tensor({ {1, 2}, {3, 4} }, {dtype = "float32"}):requires_grad()
    local loss = (mf.ones{1, 2}:matmul(w)):matmul(w):sum()
    loss:backward({retain_graph = true})
    local opt = mf.optim.SGD({ w }, { lr = 0.1 })
    opt:step()
    local ok, msg = pcall(function() loss:backward() end)
    assert.is_false(ok)
    assert.truthy(tostring(msg):find("matmul saved for its gradient was modified in place", 1, true),
      tostring(msg))
    -- a tensor written in place that no node saved is fine
    local a = mf.ones{2}:requires_grad()
    local b = mf.ones{2}
    local y = a + b
    b:fill_(5)
    y:sum():backward()
    H.equal(a.grad, {1, 1})
  end)

  it("backward brings its gradient to the tensor's dtype", function()
    local x = mf.ones({3}, {dtype = "float64"}):requires_grad()
    x:backward(mf.tensor{1, 2, 3}) -- int64
    assert.are.equal("float64", x.grad:dtype())
    H.equal(x.grad, {1, 2, 3})
    local y = mf.ones({3}):requires_grad()
    ;(y * 2):backward(mf.tensor({1, 1, 1}, {dtype = "int32"}))
    assert.are.equal("float32", y.grad:dtype())
    H.equal(y.grad, {2, 2, 2})
  end)

  it("bool tensors hold only true and false", function()
    -- mf.empty of bools was left with the allocator's bytes, and mf.frombytes took any byte: read
    -- back as C bools they were undefined behaviour (UBSan: "not a valid value for type '_Bool'")
    H.equal(mf.empty({2, 3}, {dtype = "bool"}):long(), {{0, 0, 0}, {0, 0, 0}})
    local b = mf.frombytes("\0\1\190\255", "bool", {4})
    assert.are.same({false, true, true, true}, b:totable())
    assert.are.equal("\0\1\1\1", b:tobytes())
    if mf.cuda.is_available() then
      local g = mf.frombytes("\0\7", "bool", {2}, {device = "cuda:0"})
      assert.are.same({false, true}, g:totable())
      assert.are.same({false, false}, mf.empty({2}, {dtype = "bool", device = "cuda:0"}):totable())
    end
  end)

  it("an error leaves everything usable (no leaks, no crash)", function()
    for _ = 1, 200 do
      pcall(function() return mf.ones{2, 3}:matmul(mf.ones{2, 3}) end)
      pcall(function() return mf.tensor{ {1, 2}, {3} } end)
      pcall(function() return mf.ones{2}[{ {1, 2}, 1 }] end)
    end
    collectgarbage()
    H.equal(mf.ones{2} + 1, {2, 2})
  end)
end)
