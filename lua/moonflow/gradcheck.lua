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

local function gradcheck(fn, inputs, opts)
  opts = opts or {}
  local eps, atol, rtol = opts.eps or 1e-6, opts.atol or 1e-5, opts.rtol or 1e-3
  local raise = opts.raise ~= false
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("gradcheck: expected a function", 2)
  end
  if mf.is_tensor(inputs) then inputs = { inputs } end
  if type(inputs) ~= "table" then error("gradcheck: inputs must be a tensor or a list", 2) end
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
  if #checked == 0 then error("gradcheck: no input is a float tensor", 2) end
  for _, i in ipairs(checked) do
    if inputs[i]:dtype() ~= "float64" then
      error(("gradcheck: input %d is %s; finite differences need float64 inputs"):format(
        i, inputs[i]:dtype()), 2)
    end
    if not inputs[i]:is_contiguous() then inputs[i] = inputs[i]:contiguous() end
  end

  local fail = function(msg)
    if raise then error("gradcheck: " .. msg, 0) end
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
            return fail(("d(output %d)[%d] / d(input %d)[%d]: analytical %.10g, numerical %.10g%s")
              :format(o, j, i, e, ana, num, why))
          end
        end
      end
    end
  end
  return true
end

return setmetatable({ check = gradcheck }, {
  __call = function(_, ...) return gradcheck(...) end,
})
