-- moonflow/gradcheck.lua — `mf.gradcheck(fn, inputs [, opts])`: compares the gradients autograd
-- computes for fn at inputs with central finite differences, like torch.autograd.gradcheck.
-- Use float64 inputs. (mf loads this file on first use of mf.gradcheck.)
--
--   mf.gradcheck(function(x, w) return mf.matmul(x, w):tanh() end,
--                { mf.randn({3, 4}, {dtype = "float64"}), mf.randn({4, 2}, {dtype = "float64"}) })
--
-- fn takes the inputs (in order) and returns one tensor or several. The inputs that are float
-- tensors needing gradients are checked (when none is marked, every float input is marked with
-- requires_grad); others (integer indices, numbers, tables) are passed as they are. opts:
--   eps = 1e-6, atol = 1e-5, rtol = 1e-3: |analytical - numerical| <= atol + rtol * |numerical|
--   raise = true: raise an error describing the first mismatch; false: return false, message
-- Returns true when every entry of every Jacobian matches. The Jacobians are built entry by
-- entry (one backward per output element, two forwards per input element): keep inputs small.
--
-- `mf.gradgradcheck(fn, inputs [, opts])` (moonflow/gradgradcheck.lua loads it from here) checks
-- second derivatives, like torch.autograd.gradgradcheck: the function
--   (inputs..., grad_outputs...) -> mf.grad(fn(inputs...), inputs, grad_outputs, {create_graph=true})
-- goes through gradcheck, with respect to the inputs and the grad_outputs (the first derivatives
-- are linear in them, so this checks the recorded graph of every rule's both paths).
-- opts.grad_outputs: a tensor or a list, one per output of fn (default: float64 randn); the other
-- opts are gradcheck's. A failure names "grad_output k" for the k-th of them.
local mf = require "moonflow"

local function flat_values(t) return t:detach():reshape({ -1 }):to("float64"):totable() end

local function outputs_of(fn, inputs)
  local outs = table.pack(fn(table.unpack(inputs, 1, inputs.n)))
  local list = {}
  for i = 1, outs.n do
    if not mf.is_tensor(outs[i]) then
      error(("gradcheck: the function's result %d is a %s, not a tensor"):format(i, type(outs[i])), 3)
    end
    list[#list + 1] = outs[i]
  end
  if #list == 0 then error("gradcheck: the function returned no tensor", 3) end
  return list
end

-- label: the name in messages, and how input i is named in them (gradgradcheck's own)
local function check(fn, inputs, opts, label)
  local who = label and label.who or "gradcheck"
  local input_name = label and label.input_name or function(i) return "input " .. i end
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  local raise = opts.raise ~= false
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error(who .. ": expected a function", 3)
  end
  if mf.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= "table" then error(who .. ": inputs must be a tensor or a list", 3) end
  inputs = table.pack(table.unpack(inputs))
  inputs.n = #inputs

  -- the inputs to check
  local checked = {}
  for i = 1, inputs.n do
    local x = inputs[i]
    if mf.is_tensor(x) and x:is_floating_point() and x:needs_grad() then checked[#checked + 1] = i end
  end
  if #checked == 0 then
    for i = 1, inputs.n do
      local x = inputs[i]
      if mf.is_tensor(x) and x:is_floating_point() then
        x:requires_grad()
        checked[#checked + 1] = i
      end
    end
  end
  if #checked == 0 then error(who .. ": no input is a float tensor", 3) end
  for _, i in ipairs(checked) do
    if inputs[i]:dtype() ~= "float64" then
      error(("%s: %s is %s; finite differences need float64 inputs"):format(
        who, input_name(i), inputs[i]:dtype()), 3)
    end
    if not inputs[i]:is_contiguous() then inputs[i] = inputs[i]:contiguous() end
  end

  local fail = function(msg)
    if raise then error(who .. ": " .. msg, 0) end
    return false, msg
  end

  -- analytical: one backward per output element
  local outs = outputs_of(fn, inputs)
  local targets = {}
  for k, i in ipairs(checked) do targets[k] = inputs[i] end
  local analytical = {} -- analytical[o][j][k] = list over input k's elements
  for o, y in ipairs(outs) do
    analytical[o] = {}
    local n = y:numel()
    if not y:needs_grad() then
      return fail(("output %d does not depend on the inputs through recorded ops (no grad_fn); " ..
        "does the op record autograd?"):format(o))
    end
    for j = 1, n do
      local go = mf.zeros({ n }, { dtype = y:dtype(), device = y:device() })
      go[j] = 1
      local grads = {}
      for q = 1, #outs do grads[q] = q == o and go:view(y:shape()) or mf.zeros_like(outs[q]) end
      local g = mf.grad(outs, targets, grads, { retain_graph = true })
      analytical[o][j] = {}
      for k = 1, #targets do
        analytical[o][j][k] = g[k] and flat_values(g[k]) or false -- false: not reached
      end
    end
  end

  -- numerical: central differences, one input element at a time
  local function eval()
    return mf.no_grad(function()
      local r = {}
      for o, y in ipairs(outputs_of(fn, inputs)) do r[o] = flat_values(y) end
      return r
    end)
  end
  for k, i in ipairs(checked) do
    local x = inputs[i]
    local flat = x:detach():view({ -1 })
    local n = x:numel()
    local orig = flat_values(x)
    for e = 1, n do
      mf.no_grad(function() flat[e] = orig[e] + eps end)
      local plus = eval()
      mf.no_grad(function() flat[e] = orig[e] - eps end)
      local minus = eval()
      mf.no_grad(function() flat[e] = orig[e] end)
      for o = 1, #outs do
        for j = 1, #plus[o] do
          local num = (plus[o][j] - minus[o][j]) / (2 * eps)
          local row = analytical[o][j][k]
          local ana = row and row[e] or 0
          if not (math.abs(ana - num) <= atol + rtol * math.abs(num)) then
            local why = row and "" or " (no gradient reached this input)"
            return fail(("d(output %d)[%d] / d(%s)[%d]: analytical %.10g, numerical %.10g%s")
              :format(o, j, input_name(i), e, ana, num, why))
          end
        end
      end
    end
  end
  return true
end

local function gradcheck(fn, inputs, opts) return check(fn, inputs, opts or {}) end

local function gradgradcheck(fn, inputs, opts)
  opts = opts or {}
  local who = "gradgradcheck"
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error(who .. ": expected a function", 2)
  end
  if mf.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= "table" then error(who .. ": inputs must be a tensor or a list", 2) end
  local n = #inputs
  local args = table.pack(table.unpack(inputs, 1, n))
  -- the inputs differentiated: those marked, else every float tensor (marked now)
  local targets = {}
  for i = 1, n do
    local x = args[i]
    if mf.is_tensor(x) and x:is_floating_point() and x:needs_grad() then targets[#targets + 1] = i end
  end
  if #targets == 0 then
    for i = 1, n do
      if mf.is_tensor(args[i]) and args[i]:is_floating_point() then targets[#targets + 1] = i end
    end
  end
  if #targets == 0 then error(who .. ": no input is a float tensor", 2) end
  for _, i in ipairs(targets) do
    if args[i]:dtype() ~= "float64" then
      error(("%s: input %d is %s; finite differences need float64 inputs"):format(
        who, i, args[i]:dtype()), 2)
    end
    if not args[i]:is_contiguous() then args[i] = args[i]:contiguous() end
    args[i]:requires_grad()
  end
  -- the differentiable outputs: float tensors (max's indices are not)
  local function float_outputs(a) -- fn gets a's first n values (a may hold the grad_outputs too)
    local r = {}
    for _, y in ipairs(outputs_of(fn, table.pack(table.unpack(a, 1, n)))) do
      if y:is_floating_point() then r[#r + 1] = y end
    end
    return r
  end
  local outs = float_outputs(args)
  if #outs == 0 then error(who .. ": the function returned no float tensor", 2) end
  local gos = opts.grad_outputs
  if mf.is_tensor(gos) then gos = { gos } end
  if gos == nil then
    gos = {}
    for o, y in ipairs(outs) do gos[o] = mf.randn(y:shape(), { dtype = "float64", device = y:device() }) end
  elseif type(gos) ~= "table" or #gos ~= #outs then
    error(("%s: grad_outputs must be %d tensor(s), one per float output of the function"):format(
      who, #outs), 2)
  end
  for o, go in ipairs(gos) do
    if not mf.is_tensor(go) or go:dtype() ~= "float64" then
      error(("%s: grad_output %d must be a float64 tensor"):format(who, o), 2)
    end
    if go:numel() ~= outs[o]:numel() then
      error(("%s: grad_output %d has %d elements but output %d has %d"):format(
        who, o, go:numel(), o, outs[o]:numel()), 2)
    end
    gos[o] = go:detach():clone():reshape(outs[o]:shape()):requires_grad() -- ours to perturb
  end

  -- (inputs..., grad_outputs...) -> the first derivatives, recorded when grad mode is on (the
  -- analytical pass) and plain values under gradcheck's no_grad (the numerical one)
  local all = table.pack(table.unpack(args, 1, n))
  for o, go in ipairs(gos) do all[n + o] = go end
  all.n = n + #gos
  local function first(...)
    local a = table.pack(...)
    local create = mf.is_grad_enabled()
    return mf.enable_grad(function()
      local ys, gs = {}, {}
      for o, y in ipairs(float_outputs(a)) do
        if y:needs_grad() then ys[#ys + 1], gs[#gs + 1] = y, a[n + o] end
      end
      if #ys == 0 then
        error(who .. ": no output of the function depends on the inputs through recorded ops", 0)
      end
      local xs = {}
      for k, i in ipairs(targets) do xs[k] = a[i] end
      local g = mf.grad(ys, xs, gs, { create_graph = create, retain_graph = true })
      local r = {}
      for k = 1, #xs do
        if g[k] then r[#r + 1] = g[k] end
      end
      if #r == 0 then error(who .. ": no input reaches the function's outputs", 0) end
      return table.unpack(r)
    end)
  end
  return check(first, all, opts, {
    who = who,
    input_name = function(i) return i <= n and "input " .. i or "grad_output " .. (i - n) end,
  })
end

return setmetatable({ check = gradcheck, gradgradcheck = gradgradcheck }, {
  __call = function(_, ...) return gradcheck(...) end,
})
