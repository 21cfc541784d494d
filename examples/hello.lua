-- hello.lua — the "how TensorFlow runs" section of the TensorFlow tutorial, in eager form: a string
-- constant, an elementwise product, comparisons combined with logical_or, and where. Each tensor
-- prints its values and then its footer ([int64 tensor, shape 2, cpu]).
--   lua5.4 examples/hello.lua     (with LUA_PATH/LUA_CPATH set, see README), or moonflow hello.lua
local mf = require "moonflow"

-- Strings live on the Lua side: an eager string constant is the string itself.
local hello = mf.constant("Hello, moonflow!")
print(hello)

-- x * y, elementwise
local x = mf.constant{1, 2}
local y = mf.constant{3, 3}
print(x * y) -- [3, 6]

-- Which pixels are near white or near black?
local rgb = mf.constant{ { {255}, {0}, {126} } }
local cond = mf.logical_or(mf.greater(rgb, 250), mf.less(rgb, 5))
print(cond) -- [[[true], [true], [false]]]

-- 1 where the condition holds, else 5
local out = mf.where(cond, mf.fill(mf.shape(rgb), 1), mf.fill(mf.shape(rgb), 5))
print(out) -- [[[1], [1], [5]]]
