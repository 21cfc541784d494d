-- gc_spec.lua — dead tensors are collected without the script calling collectgarbage(): Lua sees
-- only the small userdata, so the bindings collect when live storage grows (bindings/lmf.c), with
-- young collections in generational mode and full ones in incremental mode. A loop that makes
-- 3.6 GB of short-lived tensors (one kept until the next iteration, like a training loop's loss)
-- must keep its live storage within a few tens of MiB in either mode.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local MiB = 2 ^ 20

-- the peak of live storage above base while n iterations each make three 4 MiB float32 tensors
-- and keep one of them until the next iteration; and the last kept value, to check the work was done
local function churn(n, base)
  local peak, keep = 0, nil
  for i = 1, n do
    local t = mf.ones { 1024, 1024 } * i
    keep = t + 1
    peak = math.max(peak, mf.storage_bytes() - base)
  end
  return peak, keep:max():item()
end

describe("tensors dropped by a loop", function()
  for _, mode in ipairs { "generational", "incremental" } do
    it(("are collected in %s mode: live storage stays bounded"):format(mode), function()
      local was = collectgarbage(mode)
      -- a first loop settles the collector's thresholds, which earlier specs left where their
      -- own tensors took them (they rise only as far as the last collection left live storage)
      collectgarbage()
      collectgarbage()
      local base = mf.storage_bytes()
      local ok, peak, last = pcall(churn, 200, base)
      if ok then ok, peak, last = pcall(churn, 300, base) end
      collectgarbage(was)
      assert(ok, peak)
      assert.equal(301, last)
      assert.is_true(peak < 64 * MiB, ("%s: live storage peaked %.0f MiB above the start"):format(
        mode, peak / MiB))
      assert.is_true(peak >= 8 * MiB) -- the loop's own tensors, at least
    end)
  end

  it("that are small and grew old (a loop's kept loss) are collected too: their count stays bounded", function()
    -- each iteration makes three 16 MiB temporaries (a young collection each) and keeps a scalar
    -- until the next one, so every scalar outlives two young collections and grows old: dead, it
    -- waits for a full collection, which the bytes (8 each) would not bring for 2 million
    -- iterations. The count of live storages brings one after about 1024.
    local was = collectgarbage("generational")
    collectgarbage()
    collectgarbage()
    local base, peak, keep = mf.storage_count(), 0, nil
    local ok, err = pcall(function()
      for i = 1, 4000 do
        for _ = 1, 3 do local _ = mf.empty { 4, 2 ^ 20 } end
        keep = mf.full({}, i)
        peak = math.max(peak, mf.storage_count() - base)
      end
    end)
    collectgarbage(was)
    assert(ok, err)
    assert.equal(4000, keep:item())
    assert.is_true(peak >= 2 and peak < 1500, ("%d storages above the start"):format(peak))
  end)

  it("are all freed by a full collection", function()
    collectgarbage()
    collectgarbage()
    local base = mf.storage_bytes()
    do
      local t = mf.zeros { 256, 256 }
      assert.equal(base + 256 * 256 * 4, mf.storage_bytes())
      t = nil -- luacheck: ignore
    end
    collectgarbage()
    collectgarbage()
    assert.equal(base, mf.storage_bytes())
  end)

  -- Runs `body` in a child whose cuda:0 is limited to 256 MiB (so that the limit and what it
  -- holds leave this process alone); it prints "ok", the value `last` names and whether the
  -- memory stayed under the limit. Returns the child's output.
  local function on_256_mib_gpu(body)
    local lua = "local total = mf.cuda.get_device_properties(0).total_memory\n" ..
      "mf.cuda.set_memory_fraction(256 * 2^20 / total, 0)\n" .. body ..
      '\nprint("ok", last:max():item(), mf.cuda.memory_allocated(0) <= 256 * 2^20)'
    local out, ok = H.sh(H.q(H.BIN) .. " -e " .. H.q(lua))
    assert.is_true(ok, out)
    return out
  end

  it("are collected when a GPU's memory runs tight, so that an op near the limit still fits", function()
    if not mf.cuda.is_available() then
      return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")")
    end
    -- 192 MiB held, 16 MiB temporaries in a loop, two alive at a time (224 MiB). The growth
    -- policy alone lets dead ones pile up to a quarter of what is live, past the limit; the
    -- device's pressure (blocks past 7/8 of the limit) makes the next call collect them all.
    local out = on_256_mib_gpu([[
      local keep = mf.zeros({ 48 * 2^20 }, { device = "cuda:0" })
      local last
      for i = 1, 12 do last = mf.full({ 4 * 2^20 }, i, { device = "cuda:0", dtype = "float32" }) end
    ]])
    assert.truthy(out:find("ok\t12.0\ttrue", 1, true), out)
  end)

  it("are collected when an allocation fails, and the op that asked tries once more", function()
    if not mf.cuda.is_available() then
      return pending("skipped: no GPU here (" .. tostring(mf.cuda.why_unavailable()) .. ")")
    end
    -- 152 MiB live after a full collection, 32 MiB dead (below both the growth policy's quarter
    -- and the pressure mark of 7/8), then 80 MiB at once: 264 MiB, past the limit, until the
    -- failed allocation's collection frees the dead 32
    local out = on_256_mib_gpu([[
      local keep = mf.zeros({ 38 * 2^20 }, { device = "cuda:0" })
      collectgarbage()
      do local dead = mf.zeros({ 8 * 2^20 }, { device = "cuda:0" }) end
      local last = mf.full({ 20 * 2^20 }, 2, { device = "cuda:0", dtype = "float32" })
    ]])
    assert.truthy(out:find("ok\t2.0\ttrue", 1, true), out)
  end)
end)
