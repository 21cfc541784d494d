-- flags_spec.lua — mf.flags: typed flags, --name=value, switches, positional arguments, errors.
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf

local defaults = { lr = 1e-4, data = "MNIST_data", quick = false, log_dir = "" }

describe("mf.flags", function()
  it("keeps the defaults when no flag is given", function()
    local o = mf.flags(defaults, {})
    assert.same({ lr = 1e-4, data = "MNIST_data", quick = false, log_dir = "" }, o)
  end)

  it("reads numbers, words and switches, in both spellings", function()
    local o = mf.flags(defaults, { "--lr", "1e-3", "--data=/tmp/m", "--quick", "--log-dir", "runs" })
    assert.equal(1e-3, o.lr)
    assert.equal("/tmp/m", o.data)
    assert.is_true(o.quick)
    assert.equal("runs", o.log_dir)
    assert.is_false(mf.flags(defaults, { "--quick=false" }).quick)
    assert.equal(0.5, mf.flags(defaults, { "--lr=0.5" }).lr)
    assert.equal("a=b", mf.flags(defaults, { "--data=a=b" }).data)
  end)

  it("collects positional arguments in order, and everything after --", function()
    local o = mf.flags(defaults, { "a.png", "--lr", "2", "b.png", "--", "--quick" })
    assert.same({ "a.png", "b.png", "--quick" }, { o[1], o[2], o[3] })
    assert.equal(2, o.lr)
    assert.is_false(o.quick)
  end)

  it("names what is wrong", function()
    H.err(function() mf.flags(defaults, { "--bogus" }) end,
      "unknown flag '--bogus' (flags: --data --log_dir --lr --quick)")
    H.err(function() mf.flags(defaults, { "--lr" }) end, "flag --lr needs a value")
    H.err(function() mf.flags(defaults, { "--lr", "fast" }) end, "flag --lr wants a number, got 'fast'")
    H.err(function() mf.flags(defaults, { "--lr=" }) end, "flag --lr wants a number, got ''")
    H.err(function() mf.flags(defaults, { "--quick=yes" }) end, "flag --quick is a switch")
  end)
end)
