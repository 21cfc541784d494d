-- hello_spec.lua — examples/hello.lua runs and prints the tutorial's values with their footers.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

describe("examples/hello.lua", function()
  it("prints the string, x * y, the condition and where's result", function()
    local out = {}
    local real_print = print
    _G.print = function(...)
      local parts = table.pack(...)
      for i = 1, parts.n do parts[i] = tostring(parts[i]) end
      out[#out + 1] = table.concat(parts, "\t")
    end
    local ok, err = pcall(dofile, H.root .. "/examples/hello.lua")
    _G.print = real_print
    assert(ok, err)
    assert.same({
      "Hello, moonflow!",
      "[3, 6]\n[int64 tensor, shape 2, cpu]",
      "[[[ true],\n  [ true],\n  [false]]]\n[bool tensor, shape 1x3x1, cpu]",
      "[[[1],\n  [1],\n  [5]]]\n[int64 tensor, shape 1x3x1, cpu]",
    }, out)
    assert.is_true(mf.is_tensor(mf.constant{1}))
  end)
end)
