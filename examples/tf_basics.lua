-- tf_basics.lua — the "how TensorFlow runs" section of the TensorFlow tutorial, line by line, the
-- TensorFlow-1 way: build a graph of symbolic tensors, then run it in a session with feeds.
-- (examples/hello.lua is the same section computed eagerly.)
--
--   moonflow examples/tf_basics.lua
local mf = require "moonflow"
mf.disable_eager_execution() -- TensorFlow 1: mf.constant builds Const nodes

-- Hello World: two string constants and their concatenation
local hello = mf.constant("Hello ")
local world = mf.constant("World!")
local hello_world = hello + world
print(hello_world) -- Tensor("add:0", shape=(), dtype=string)
do
  local sess <close> = mf.Session()
  print(sess:run(hello_world)) -- Hello World!
end

-- the same with placeholders, fed when the graph runs
local a = mf.placeholder(mf.string, nil, "a")
local b = mf.placeholder(mf.string, nil, "b")
local c = a + b
do
  local sess <close> = mf.Session()
  print(sess:run(c, { [a] = "Hello ", [b] = "World!" }))
  print(sess:run(c, { a = "Hello ", b = "placeholders!" }))
end

-- a Variable times a constant: variables are initialised in the session
local x = mf.Variable(3, { name = "x" })
local y = x * 5
print(x, y)
do
  local sess <close> = mf.Session()
  sess:run(mf.global_variables_initializer())
  print(sess:run(y)) -- 15
end

-- elementwise product
local p = mf.constant { 1, 2 }
local q = mf.constant { 3, 3 }
local pq = mf.multiply(p, q)

-- which pixels are near white or near black?
local rgb = mf.constant { { { 255 }, { 0 }, { 126 } } }
local cond = mf.logical_or(mf.greater(rgb, 250), mf.less(rgb, 5))
-- 1 where the condition holds, else 5
local out = mf.where(cond, mf.fill(mf.shape(rgb), 1), mf.fill(mf.shape(rgb), 5))
print(pq, cond, out)

local sess <close> = mf.InteractiveSession()
print(pq:eval())   -- [3, 6]
print(cond:eval()) -- [[[true], [true], [false]]]
print(out:eval())  -- [[[1], [1], [5]]]
