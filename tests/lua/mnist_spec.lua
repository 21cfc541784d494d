-- mnist_spec.lua — mf.io (IDX read/write, MD5), index_select, and mf.data.mnist: a small fake
-- MNIST made with mf.io.write_idx in a temporary folder (split sizes, one-hot or class indices,
-- value ranges, next_batch's epoch semantics and reshuffling, reproducibility under
-- mf.manual_seed and with a seed of its own, the missing-file error), the download path through a
-- local HTTP server on 127.0.0.1 (success, MD5 mismatch, unreachable mirror), and, when
-- MOONFLOW_DATA names a folder with the real files, the real data set (55000/5000/10000, labels,
-- pixel sums).
local H = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "helper.lua")
local mf = H.mf
local q, readfile, writefile = H.q, H.readfile, H.writefile

local function exists(p) return readfile(p) ~= nil end


local function ls(dir)
  local p = io.popen("ls -A " .. q(dir))
  local names = {}
  for l in p:lines() do names[#names + 1] = l end
  p:close()
  table.sort(names)
  return names
end

local newdir, rmdirs = H.tmpdirs("mf_mnist_spec") -- new temporary folders, removed at the end
teardown(rmdirs)

-- ---- a fake MNIST ------------------------------------------------------------------------------
-- Image i (1-based, in file order) has its first pixel = i, so a batch row tells which example it
-- is; the other pixels are random. Its digit is (i - 1) % 10, so its class is (i - 1) % 10 + 1.
local function fake_split(n)
  local ids = mf.arange(1, n + 1):to("uint8"):reshape { n, 1 }
  local rest = (mf.rand { n, 783 } * 255):to("uint8")
  local images = mf.cat({ ids, rest }, 2):reshape { n, 28, 28 }
  local digits = {}
  for i = 1, n do digits[i] = (i - 1) % 10 end
  return images, mf.tensor(digits, { dtype = "uint8" })
end

-- Writes the four files into dir: the training files gzipped, the test files raw (both forms).
local function fake_mnist(dir, ntrain, ntest)
  local ti, tl = fake_split(ntrain)
  local si, sl = fake_split(ntest)
  mf.io.write_idx(dir .. "/train-images-idx3-ubyte.gz", ti)
  mf.io.write_idx(dir .. "/train-labels-idx1-ubyte.gz", tl)
  mf.io.write_idx(dir .. "/t10k-images-idx3-ubyte", si)
  mf.io.write_idx(dir .. "/t10k-labels-idx1-ubyte", sl)
  return { train_images = ti, train_labels = tl, test_images = si, test_labels = sl }
end

-- The MD5s of a fake set's (decompressed) files, for the md5 option.
local function md5s(dir)
  local t = {}
  for _, name in ipairs { "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" } do
    local p = dir .. "/" .. name
    if exists(p .. ".gz") then p = p .. ".gz" end
    t[name] = mf.io.md5(p, { gunzip = true })
  end
  return t
end

-- The example numbers of a batch's rows (from their first pixel).
local function ids_of(images, scale)
  local col = images:reshape { images:size(1), -1 }:select(2, 1):to("float64") * (scale or 255)
  local out = {}
  for i, v in ipairs(col:totable()) do out[i] = math.floor(v + 0.5) end
  return out
end

local function offline(extra)
  local o = { search_dirs = {}, download = false, quiet = true }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- ---- mf.io ------------------------------------------------------------------------------------

describe("mf.io", function()
  it("writes and reads IDX files of every type, raw and gzipped", function()
    local d = newdir()
    local x = mf.tensor { { -3, 0, 7 }, { 100, -100, 5 } }
    for _, ext in ipairs { "", ".gz" } do
      for _, case in ipairs {
        { "i8", "int32" }, { "i16", "int32" }, { "i32", "int32" }, { "f32", "float32" },
        { "f64", "float64" },
      } do
        local p = d .. "/x." .. case[1] .. ".idx" .. ext
        mf.io.write_idx(p, x, { type = case[1] })
        local y = mf.io.read_idx(p)
        assert.are.equal(case[2], y:dtype())
        H.equal(y, { { -3, 0, 7 }, { 100, -100, 5 } })
      end
      local u = mf.tensor({ { 0, 255 }, { 1, 2 } }, { dtype = "uint8" })
      mf.io.write_idx(d .. "/u.idx" .. ext, u)
      local v = mf.io.read_idx(d .. "/u.idx" .. ext)
      assert.are.equal("uint8", v:dtype())
      H.equal(v, { { 0, 255 }, { 1, 2 } })
    end
    -- the file on disk: big-endian header and data
    mf.io.write_idx(d .. "/b.idx", mf.tensor({ 1, 2 }, { dtype = "uint8" }))
    assert.are.equal("\0\0\8\1\0\0\0\2\1\2", readfile(d .. "/b.idx"))
    assert.are.equal("\31\139", readfile(d .. "/u.idx.gz"):sub(1, 2))
  end)

  it("reports bad files and values with the file's name", function()
    local d = newdir()
    H.err(function() mf.io.read_idx(d .. "/none.idx") end, d .. "/none.idx: cannot open")
    writefile(d .. "/short.idx", "\0\0\8\1\0\0\0\5\1\2")
    H.err(function() mf.io.read_idx(d .. "/short.idx") end,
      "short.idx: truncated: the header says 5 u8")
    writefile(d .. "/page.idx", "<html>not found</html>")
    H.err(function() mf.io.read_idx(d .. "/page.idx") end, "not an IDX file")
    H.err(function() mf.io.write_idx(d .. "/w.idx", mf.tensor { 1, 300 }, { type = "u8" }) end,
      "is not an integer in u8's range 0..255")
    H.err(function() mf.io.write_idx(d .. "/w.idx", mf.tensor { 1 }, { type = "i4" }) end,
      "unknown IDX type 'i4'")
  end)

  it("computes MD5s of strings and files, also of gzip content", function()
    assert.are.equal("900150983cd24fb0d6963f7d28e17f72", mf.io.md5_string("abc"))
    assert.are.equal("d41d8cd98f00b204e9800998ecf8427e", mf.io.md5_string(""))
    local d = newdir()
    writefile(d .. "/m.txt", "message digest")
    assert.are.equal("f96b697d7cb7938d525a2f31aaf161d0", mf.io.md5(d .. "/m.txt"))
    os.execute("gzip -k " .. q(d .. "/m.txt"))
    local gz = mf.io.md5(d .. "/m.txt.gz", { gunzip = true })
    assert.are.equal("f96b697d7cb7938d525a2f31aaf161d0", gz)
    assert.are_not.equal("f96b697d7cb7938d525a2f31aaf161d0", mf.io.md5(d .. "/m.txt.gz"))
    H.err(function() mf.io.md5(d .. "/nope") end, "nope: cannot open")
  end)
end)

describe("index_select", function()
  it("picks rows and columns by 1-based indices, in order, with repeats", function()
    local x = mf.tensor { { 1, 2, 3 }, { 4, 5, 6 }, { 7, 8, 9 } }
    H.equal(mf.index_select(x, 1, mf.tensor { 3, 1, 3 }), { { 7, 8, 9 }, { 1, 2, 3 }, { 7, 8, 9 } })
    H.equal(x:index_select(2, { 2 }), { { 2 }, { 5 }, { 8 } })
    H.equal(x:index_select(-1, mf.tensor({ 3, 1 }, { dtype = "int32" })),
      { { 3, 1 }, { 6, 4 }, { 9, 7 } })
    H.equal(x:t():index_select(1, { 2 }), { { 2, 5, 8 } })
    H.err(function() x:index_select(1, { 4 }) end,
      "index 4 (entry 1 of the index) is out of range for dimension 1 of size 3")
    H.err(function() x:index_select(1, { 0 }) end, "index 0")
    H.err(function() x:index_select(1, mf.tensor { 1.5 }) end, "index must be int64 or int32")
    H.err(function() x:index_select(3, { 1 }) end, "dimension 3 is out of range")
  end)
end)

-- ---- mf.data.mnist on a fake set --------------------------------------------------------------

describe("mf.data.mnist", function()
  local dir, fake

  setup(function()
    dir = newdir()
    fake = fake_mnist(dir, 30, 12)
  end)

  it("loads lazily as mf.data.mnist", function()
    assert.are.equal("table", type(mf.data))
    assert.are.equal("function", type(mf.data.mnist.read_data_sets))
    assert.is_nil(mf.data.no_such_set)
  end)

  it("splits the training set: the first validation_size images are the validation set", function()
    local d = mf.data.mnist.read_data_sets(dir, offline { validation_size = 10 })
    assert.are.equal(20, d.train.num_examples)
    assert.are.equal(10, d.validation.num_examples)
    assert.are.equal(12, d.test.num_examples)
    H.equal(d.train.images:shape(), { 20, 784 })
    H.equal(d.test.labels:shape(), { 12 })
    assert.are.equal("float32", d.train.images:dtype())
    assert.are.equal("int64", d.train.labels:dtype())
    local v, t = ids_of(d.validation.images), ids_of(d.train.images)
    for i = 1, 10 do assert.are.equal(i, v[i]) end
    for i = 1, 20 do assert.are.equal(10 + i, t[i]) end
    -- classes are digit + 1
    local labels = d.train.labels:totable()
    for i = 1, 20 do assert.are.equal((10 + i - 1) % 10 + 1, labels[i]) end
    -- pixels in [0, 1], exactly byte / 255
    assert.is_true(d.train.images:min():item() >= 0)
    assert.is_true(d.train.images:max():item() <= 1)
    local want = fake.test_images:reshape { 12, 784 }:to("float64") / 255
    assert.is_true(mf.allclose(d.test.images:to("float64"), want, 0, 1e-7))
  end)

  it("gives one-hot labels, unflattened images and raw bytes on request", function()
    local d = mf.data.mnist.read_data_sets(dir, offline { validation_size = 10, one_hot = true,
      reshape = false, dtype = "uint8" })
    H.equal(d.train.labels:shape(), { 20, 10 })
    assert.are.equal("float32", d.train.labels:dtype())
    H.equal(d.train.labels:sum(2), mf.ones({ 20 }):totable())
    local am = d.test.labels:argmax(2):totable() -- 1-based: the class
    for i = 1, 12 do assert.are.equal((i - 1) % 10 + 1, am[i]) end
    H.equal(d.train.images:shape(), { 20, 28, 28, 1 })
    assert.are.equal("uint8", d.train.images:dtype())
    local ids = ids_of(d.train.images, 1)
    for i = 1, 20 do assert.are.equal(10 + i, ids[i]) end
    d = mf.data.mnist.read_data_sets(dir, offline { validation_size = 10, dtype = "float64" })
    assert.are.equal("float64", d.train.images:dtype())
    H.equal(ids_of(d.validation.images), { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 })
  end)

  it("checks its options", function()
    H.err(function() mf.data.mnist.read_data_sets(dir, offline { validation_size = 31 }) end,
      "validation_size should be an integer between 0 and 30")
    H.err(function() mf.data.mnist.read_data_sets(dir, offline { dtype = "int8" }) end,
      "dtype must be")
    local d = mf.data.mnist.read_data_sets(dir, offline { validation_size = 0 })
    assert.are.equal(30, d.train.num_examples)
    assert.are.equal(0, d.validation.num_examples)
  end)

  describe("next_batch", function()
    local function ds(opts)
      local o = offline { validation_size = 10 }
      for k, v in pairs(opts or {}) do o[k] = v end
      return mf.data.mnist.read_data_sets(dir, o).train
    end

    it("without shuffling goes in order and wraps around at the end of an epoch", function()
      local t = ds()
      local x, y = t:next_batch(7, false)
      H.equal(ids_of(x), { 11, 12, 13, 14, 15, 16, 17 })
      H.equal(y, { 1, 2, 3, 4, 5, 6, 7 })
      x = t:next_batch(7, false)
      H.equal(ids_of(x), { 18, 19, 20, 21, 22, 23, 24 })
      assert.are.equal(0, t.epochs_completed)
      x, y = t:next_batch(7, false) -- the last 6 of epoch 1, then the first of epoch 2
      H.equal(ids_of(x), { 25, 26, 27, 28, 29, 30, 11 })
      H.equal(y, { 5, 6, 7, 8, 9, 10, 1 })
      assert.are.equal(1, t.epochs_completed)
      assert.are.equal(1, t.index_in_epoch)
    end)

    it("shuffles every epoch, the first one too, and keeps images and labels together", function()
      mf.manual_seed(123)
      local t = ds()
      local epoch1, epoch2 = {}, {}
      local function take(into, ids, from, to)
        for i = from, to do into[#into + 1] = ids[i] end
      end
      for b = 1, 3 do
        local x, y = t:next_batch(7)
        local ids, cls = ids_of(x), y:totable()
        for i = 1, 7 do assert.are.equal((ids[i] - 1) % 10 + 1, cls[i]) end
        if b < 3 then
          take(epoch1, ids, 1, 7)
        else -- the last 6 of epoch 1, then the first of epoch 2
          take(epoch1, ids, 1, 6)
          take(epoch2, ids, 7, 7)
        end
      end
      assert.are.equal(1, t.epochs_completed)
      for _ = 1, 19 do take(epoch2, ids_of((t:next_batch(1))), 1, 1) end
      assert.are.equal(1, t.epochs_completed)
      assert.are.equal(20, t.index_in_epoch)
      -- each epoch is a permutation of the 20 training examples
      for _, e in ipairs { epoch1, epoch2 } do
        local sorted = { table.unpack(e) }
        table.sort(sorted)
        local want = {}
        for i = 1, 20 do want[i] = 10 + i end
        H.equal(sorted, want)
      end
      local in_order, same = true, true
      for i = 1, 20 do
        in_order = in_order and epoch1[i] == 10 + i
        same = same and epoch1[i] == epoch2[i]
      end
      assert.is_false(in_order) -- the first epoch is shuffled (20! orders: not by chance)
      assert.is_false(same)     -- and reshuffled for the second
      -- a batch that ends exactly at the epoch's end, then one that starts the next
      local x = t:next_batch(5)
      assert.are.equal(2, t.epochs_completed)
      assert.are.equal(5, x:size(1))
    end)

    it("is reproducible under mf.manual_seed", function()
      local function run(seed)
        mf.manual_seed(seed)
        local t = ds()
        local all = {}
        for _ = 1, 8 do
          for _, id in ipairs(ids_of((t:next_batch(6)))) do all[#all + 1] = id end
        end
        return table.concat(all, ",")
      end
      assert.are.equal(run(7), run(7))
      assert.are_not.equal(run(7), run(8))
    end)

    it("with a seed of its own, shuffles the same whatever else draws numbers", function()
      local function run(draw)
        local t = ds { seed = 99 }
        local all = {}
        for _ = 1, 5 do
          if draw then mf.rand { 1000 } end
          for _, id in ipairs(ids_of((t:next_batch(9)))) do all[#all + 1] = id end
        end
        return table.concat(all, ",")
      end
      mf.manual_seed(1)
      local a = run(false)
      mf.manual_seed(2)
      assert.are.equal(a, run(true))
      -- and leaves the global generator where it was
      mf.manual_seed(5)
      local r1 = mf.rand { 4 }:totable()
      mf.manual_seed(5)
      ds({ seed = 3 }):next_batch(4)
      H.equal(mf.rand { 4 }, r1)
    end)

    it("checks the batch size", function()
      local t = ds()
      H.err(function() t:next_batch(0) end, "batch size must be a positive integer")
      H.err(function() t:next_batch(21) end,
        "batch size 21 is larger than the data set (20 examples)")
    end)
  end)

  it("finds the files in the search folders ($MOONFLOW_DATA by default)", function()
    local empty = newdir()
    local d = mf.data.mnist.read_data_sets(empty,
      offline { validation_size = 10, search_dirs = { dir } })
    assert.are.equal(20, d.train.num_examples)
    -- and reads raw files under the dotted names some packages use
    local other = newdir()
    for _, n in ipairs { "train-images-idx3-ubyte", "train-labels-idx1-ubyte" } do
      local dotted = n:gsub("%-idx", ".idx")
      os.execute(string.format("gzip -dc %s > %s", q(dir .. "/" .. n .. ".gz"),
        q(other .. "/" .. dotted)))
    end
    os.execute(string.format("cp %s/t10k-* %s/", q(dir), q(other)))
    d = mf.data.mnist.read_data_sets(other, offline { validation_size = 10 })
    assert.are.equal(20, d.train.num_examples)
  end)

  it("says which files are missing, where to put them and how", function()
    local empty = newdir()
    local msg = H.err(function() mf.data.mnist.read_data_sets(empty, offline()) end,
      "mnist: missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
      .. "t10k-labels-idx1-ubyte in " .. empty)
    assert.truthy(msg:find("fetch_mnist.sh", 1, true))
    assert.truthy(msg:find("MOONFLOW_DATA", 1, true))
    assert.truthy(msg:find("https://ossci-datasets.s3.amazonaws.com/mnist/", 1, true))
    -- only the one that is missing
    local some = newdir()
    os.execute(string.format("cp %s/train-* %s/t10k-images* %s/", q(dir), q(dir), q(some)))
    H.err(function() mf.data.mnist.read_data_sets(some, offline()) end,
      "mnist: missing t10k-labels-idx1-ubyte in")
  end)

  it("names a damaged file", function()
    local bad = newdir()
    os.execute(string.format("cp %s/* %s/", q(dir), q(bad)))
    local f = io.open(bad .. "/t10k-labels-idx1-ubyte", "ab")
    f:write("junk")
    f:close()
    H.err(function() mf.data.mnist.read_data_sets(bad, offline { validation_size = 10 }) end,
      bad .. "/t10k-labels-idx1-ubyte: trailing garbage: 4 bytes")
  end)
end)

-- ---- downloads through a local HTTP server ------------------------------------------------------

local function python()
  for _, p in ipairs { "/usr/bin/python3", "python3" } do
    local cmd = "env -u LD_PRELOAD " .. p .. " -c 'import http.server' >/dev/null 2>&1"
    if os.execute(cmd) then return p end
  end
end

-- Serves folder root on 127.0.0.1 (a free port); returns {port=, pid=} or nil.
local function serve(root)
  local py = python()
  if not py then return nil end
  local log = os.tmpname()
  local p = io.popen(string.format("env -u LD_PRELOAD %s -u -m http.server 0 --bind 127.0.0.1 "
    .. "--directory %s > %s 2>&1 & echo $!", py, q(root), q(log)))
  local pid = p:read("l")
  p:close()
  for _ = 1, 100 do
    local port = (readfile(log) or ""):match("port (%d+)")
    if port then return { port = tonumber(port), pid = pid, log = log } end
    os.execute("sleep 0.1")
  end
  os.execute("kill " .. pid .. " 2>/dev/null")
  return nil
end

local function unserve(s)
  if s then
    os.execute("kill " .. s.pid .. " 2>/dev/null")
    os.remove(s.log)
  end
end

-- The download tools there are. Under the sanitizer build's LD_PRELOAD of the ASan runtime, curl
-- and wget (not built for it) hang, so there they run through a wrapper without the preload.
local function downloaders()
  local t = {}
  local asan = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
  for _, tool in ipairs { "curl", "wget" } do
    if os.execute("command -v " .. tool .. " >/dev/null 2>&1") then
      if asan then
        local p = newdir() .. "/" .. tool
        writefile(p, "#!/bin/sh\nexec env -u LD_PRELOAD " .. tool .. ' "$@"\n')
        os.execute("chmod +x " .. q(p))
        tool = p
      end
      t[#t + 1] = tool
    end
  end
  return t
end

describe("mf.data.mnist downloads", function()
  local mirror, server, sums

  setup(function()
    mirror = newdir()
    fake_mnist(mirror, 30, 12)
    -- a mirror serves gzipped files only
    for _, n in ipairs { "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte" } do
      os.execute("gzip " .. q(mirror .. "/" .. n))
    end
    sums = md5s(mirror)
    server = serve(mirror)
  end)

  teardown(function() unserve(server) end)

  it("fetch the missing files from the first mirror that works, checking their MD5", function()
    if not server then return pending("no python3 to run a local HTTP server") end
    local tools = downloaders()
    if #tools == 0 then return pending("neither curl nor wget is installed") end
    for _, tool in ipairs(tools) do
      local into = newdir() .. "/cache/mnist" -- made on the way
      local d = mf.data.mnist.read_data_sets(into, { search_dirs = {}, quiet = true,
        validation_size = 10, md5 = sums, downloader = tool,
        mirrors = { "http://127.0.0.1:1/", "http://127.0.0.1:" .. server.port } })
      assert.are.equal(20, d.train.num_examples)
      assert.are.equal(12, d.test.num_examples)
      H.equal(ls(into), { "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz" })
      -- the second time nothing is fetched (a dead mirror would fail otherwise)
      d = mf.data.mnist.read_data_sets(into, { search_dirs = {}, quiet = true, validation_size = 10,
        md5 = sums, mirrors = { "http://127.0.0.1:1/" } })
      assert.are.equal(20, d.train.num_examples)
    end
  end)

  it("refuse a file whose MD5 is not the published one, and leave nothing behind", function()
    if not server then return pending("no python3 to run a local HTTP server") end
    local tools = downloaders()
    if #tools == 0 then return pending("neither curl nor wget is installed") end
    local into = newdir()
    local msg = H.err(function()
      mf.data.mnist.read_data_sets(into, { search_dirs = {}, quiet = true, downloader = tools[1],
        mirrors = { "http://127.0.0.1:" .. server.port .. "/" } })
    end, "http://127.0.0.1:" .. server.port .. "/train-images-idx3-ubyte.gz: MD5 mismatch: got " ..
      sums["train-images-idx3-ubyte"] .. ", expected 6bbc9ace898e44ae57da46a324031adb")
    assert.truthy(msg:find("and downloading failed", 1, true))
    assert.truthy(msg:find("fetch_mnist.sh", 1, true))
    H.equal(ls(into), {})
  end)

  it("report an unreachable mirror and a missing file", function()
    if not server then return pending("no python3 to run a local HTTP server") end
    local tools = downloaders()
    if #tools == 0 then return pending("neither curl nor wget is installed") end
    local into = newdir()
    local msg = H.err(function()
      mf.data.mnist.read_data_sets(into, { search_dirs = {}, quiet = true, md5 = sums,
        downloader = tools[1],
        mirrors = { "http://127.0.0.1:1/", "http://127.0.0.1:" .. server.port .. "/sub/" } })
    end, "http://127.0.0.1:1/train-images-idx3-ubyte.gz: ")
    assert.truthy(msg:find("/sub/t10k-labels-idx1-ubyte.gz: ", 1, true))
    H.equal(ls(into), {})
  end)
end)

-- ---- the real MNIST ---------------------------------------------------------------------------

describe("the real MNIST (MOONFLOW_DATA)", function()
  local real = os.getenv("MOONFLOW_DATA")
  local ok = real and real ~= "" and (exists(real .. "/train-images-idx3-ubyte.gz")
    or exists(real .. "/train-images-idx3-ubyte"))

  it("has 55000/5000/10000 examples with the known labels and pixel sums", function()
    if not ok then return pending("MOONFLOW_DATA does not name a folder with the MNIST files") end
    local t0 = mf.clock()
    local d = mf.data.mnist.read_data_sets(newdir(), { search_dirs = { real }, download = false })
    local secs = mf.clock() - t0
    assert.are.equal(55000, d.train.num_examples)
    assert.are.equal(5000, d.validation.num_examples)
    assert.are.equal(10000, d.test.num_examples)
    H.equal(d.train.images:shape(), { 55000, 784 })
    -- TensorFlow's mnist.train.labels[0] is 7 (after the 5000 validation images); digit d is
    -- class d + 1
    assert.are.equal(8, d.train.labels[1])
    assert.are.equal(6, d.validation.labels[1]) -- the file's first digit, 5
    assert.are.equal(8, d.test.labels[1])       -- 7
    assert.are.equal(9, d.train.labels[55000])  -- the file's last, 8
    -- sums of the raw bytes (numpy), over 255
    local function total(t) return t:sum(2):to("float64"):sum():item() end
    assert.is_true(math.abs(total(d.train.images) - 1437128264 / 255) < 1e-5 * 1437128264 / 255)
    assert.is_true(math.abs(total(d.validation.images) - 130170281 / 255) < 1e-5 * 130170281 / 255)
    assert.is_true(math.abs(total(d.test.images) - 264923200 / 255) < 1e-5 * 264923200 / 255)
    assert.are.equal(0, d.train.images:min():item())
    assert.are.equal(1, d.train.images:max():item())
    -- class counts of the training split
    local counts = {}
    for _, c in ipairs(d.train.labels:totable()) do counts[c] = (counts[c] or 0) + 1 end
    H.equal(counts, { 5444, 6179, 5470, 5638, 5307, 4987, 5417, 5715, 5389, 5454 })
    local x, y = d.train:next_batch(100)
    H.equal(x:shape(), { 100, 784 })
    H.equal(y:shape(), { 100 })
    io.stderr:write(string.format("[mnist_spec: real MNIST read in %.2f s]\n", secs))
  end)

  it("downloads the real files from a local mirror and checks the published MD5s", function()
    if not ok then return pending("MOONFLOW_DATA does not name a folder with the MNIST files") end
    if not exists(real .. "/t10k-labels-idx1-ubyte.gz") then
      return pending("MOONFLOW_DATA has raw files, a mirror serves .gz")
    end
    local tools = downloaders()
    if #tools == 0 then return pending("neither curl nor wget is installed") end
    local s = serve(real)
    if not s then return pending("no python3 to run a local HTTP server") end
    local into = newdir()
    local okr, d = pcall(mf.data.mnist.read_data_sets, into, { search_dirs = {}, quiet = true,
      one_hot = true, downloader = tools[1],
      mirrors = { "http://127.0.0.1:" .. s.port .. "/" } })
    unserve(s)
    assert(okr, d)
    assert.are.equal(55000, d.train.num_examples)
    H.equal(d.train.labels[1], { 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 })
    assert.are.equal(4, #ls(into))
  end)
end)
