-- fuzz_graphdef.lua — a mutation fuzzer for the GraphDef reader, which is Lua (lua/moonflow/graph/
-- graphdef.lua, tensor_proto.lua, protobuf.lua) and so has no libFuzzer target. It mutates the seed
-- GraphDefs (flipped, inserted, deleted and duplicated bytes, truncations, large varints), imports
-- each into a fresh graph and, when that succeeds, runs every node with its placeholders fed.
-- Every outcome must be a result or a clear error; a crash (run it on the sanitized host,
-- build-asan/moonflow) or an error from Lua itself ("attempt to index a nil value", "bad argument")
-- instead of one naming what is wrong is a failure: the input is saved and the run stops.
--
--   moonflow tests/fuzz/fuzz_graphdef.lua SECONDS CORPUS_DIR CRASH_DIR
-- Prints `ok: fuzz_graphdef (R runs in S s, I imported and run, C seeds)` or `FAILED: fuzz_graphdef (...)`; exits 1 then.
local secs, corpus, crashes = tonumber(arg[1]) or 10, arg[2], arg[3]
assert(corpus and crashes, "usage: fuzz_graphdef.lua SECONDS CORPUS_DIR CRASH_DIR")

local seeds = {}
for name in io.popen("ls " .. corpus):lines() do
  local f = assert(io.open(corpus .. "/" .. name, "rb"))
  seeds[#seeds + 1] = f:read("a")
  f:close()
end
assert(#seeds > 0, "no seeds in " .. corpus)

local rand = math.random
math.randomseed(tonumber(os.getenv("FUZZ_SEED") or "") or os.time())

local function mutate(s)
  for _ = 1, rand(1, 4) do
    local n, kind = #s, rand(1, 7)
    local i = n > 0 and rand(1, n) or 1
    if kind == 1 and n > 0 then -- flip bits of a byte
      s = s:sub(1, i - 1) .. string.char(s:byte(i) ~ (1 << rand(0, 7))) .. s:sub(i + 1)
    elseif kind == 2 then -- insert random bytes
      local r = {}
      for k = 1, rand(1, 8) do r[k] = string.char(rand(0, 255)) end
      s = s:sub(1, i - 1) .. table.concat(r) .. s:sub(i)
    elseif kind == 3 and n > 1 then -- delete a range
      s = s:sub(1, i - 1) .. s:sub(i + rand(1, math.min(16, n - i + 1)))
    elseif kind == 4 then -- truncate
      s = s:sub(1, rand(0, n))
    elseif kind == 5 and n > 1 then -- duplicate a chunk
      local j = rand(i, math.min(n, i + 32))
      s = s:sub(1, j) .. s:sub(i, j) .. s:sub(j + 1)
    elseif kind == 6 then -- a large varint (sizes, lengths, enum values)
      local big = ({ "\xff\xff\xff\xff\x0f", "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", "\x00",
        "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "\x7f" })[rand(1, 5)]
      s = s:sub(1, i - 1) .. big .. s:sub(i + 1)
    elseif kind == 7 then -- splice with another seed
      local o = seeds[rand(1, #seeds)]
      s = s:sub(1, i) .. o:sub(rand(1, #o))
    end
  end
  return s
end

-- An error is clear unless Lua itself raised it with no word of what the file holds: Lua's own
-- messages pass only when moonflow has put them in context (the op that could not be built).
local LUA_ERRORS = { "attempt to ", "bad argument #", "stack overflow", "table index is ",
  "number has no integer representation", "invalid value %(at index" }
local function unclear(msg)
  msg = tostring(msg)
  if msg:find("cannot build this op from", 1, true) then return false end
  for _, p in ipairs(LUA_ERRORS) do if msg:find(p) then return true end end
  return false
end

-- feeds for a graph's placeholders: zeros (empty strings) of their shape, unknown sizes as 2
local function feeds_of(g)
  local feed = {}
  for _, op in ipairs(g:get_operations()) do
    if op.type == "Placeholder" then
      local t = op.outputs[1]
      local shape = {}
      for d, n in ipairs(t:shape() or {}) do shape[d] = n < 0 and 2 or math.min(n, 64) end
      local dt = t:dtype()
      if dt == "string" then feed[t] = "" else feed[t] = mf.zeros(shape, { dtype = dt }) end
    end
  end
  return feed
end

local imported = 0 -- inputs that imported (the rest stopped at a clear error)
local function one(bytes)
  local g = mf.Graph()
  local ok, err = pcall(function()
    g:as_default(function() mf.import_graph_def(bytes, { name = "" }) end)
  end)
  if not ok then return unclear(err) and err end
  imported = imported + 1
  local ok2, feed = pcall(feeds_of, g)
  if not ok2 then return unclear(feed) and feed end
  local sess = mf.Session { graph = g }
  for _, op in ipairs(g:get_operations()) do
    if op.outputs[1] and op.type ~= "Placeholder" then
      local ok3, e = pcall(sess.run, sess, op.outputs[1], feed)
      if not ok3 and unclear(e) then sess:close() return e end
    end
  end
  sess:close()
  return false
end

local t0, runs = os.clock(), 0
while os.clock() - t0 < secs do
  local input = mutate(seeds[rand(1, #seeds)])
  runs = runs + 1
  local bad = one(input)
  if bad then
    local path = ("%s/graphdef-%d.pb"):format(crashes, runs)
    local f = assert(io.open(path, "wb"))
    f:write(input)
    f:close()
    print(("FAILED: fuzz_graphdef (an unclear error: %s; input: %s)"):format(
      tostring(bad):sub(1, 300), path))
    os.exit(1)
  end
  if runs % 50 == 0 then collectgarbage() end
end
print(("ok: fuzz_graphdef (%d runs in %d s, %d imported and run, %d seeds)"):format(runs, secs,
  imported, #seeds))
