-- moonflow/graph/dot.lua — pictures of graphs and models: Graphviz DOT text (FORMATS.md "DOT")
-- and SVG/PNG/PDF files drawn from it by Graphviz's `dot` program.
--
--   g:to_dot([opts]) -> text        -- every node of an mf.Graph (or those opts.fetches need)
--   g:render("graph.svg" [, opts])  -- .svg, .png, .pdf by `dot -T<ext>`; .dot/.gv: the text
--   m:to_dot({1, 784} [, opts])     -- an nn module's layers, run on zeros of that shape
--   m:render("model.png", {1, 784} [, opts])
--
-- Graph nodes get synthetic ids (n0, n1, ... in the order they were added) and labels
-- "real/name\nOpType shape" (shapes like 1x28x28, ?x784 for unknown sizes, "scalar", "<unknown>"
-- for an unknown rank; one per output); placeholders are ellipses, variables rounded boxes. Each
-- name scope is a `subgraph cluster_<scope>` (quoted when the scope has a "/"), nested as the
-- scopes are, labelled with the scope's last part. An edge from a node with several outputs is
-- labelled with the output index (":1"); control dependencies are dashed.
-- Module nodes: "input\nInput 1x784", then each layer (leaf module) as "name\nType in -> out",
-- clustered by the containers that hold it; edges follow the tensors from layer to layer (a tensor
-- made outside any layer, by a view in a forward, links from the layer that ran before).
-- opts: rankdir ("TB", "LR"), name (the digraph's name, "G"), fetches (graph: only the nodes these
-- tensors/operations need), format (render: overrides the extension), dot (render: the program;
-- else $GRAPHVIZ_DOT, else `dot` on PATH).
local core = require "moonflow.core"
local G = require "moonflow.graph"

local M = {}

local fail, call = require("moonflow.util").errors(debug.getinfo(1, "S").source)

-- ---- DOT text -------------------------------------------------------------------------------------

-- A DOT double-quoted string: `\` and `"` escaped, newlines as \n.
local function quote(s)
  return '"' .. tostring(s):gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end
M.quote = quote

local function id_or_quoted(s)
  if s:match("^[%a_][%w_]*$") then return s end
  return quote(s)
end

-- {1, -1, 28} -> "1x?x28"; {} -> "scalar"; nil (unknown rank) -> "<unknown>"
local function dims(s)
  if s == nil then return "<unknown>" end
  if #s == 0 then return "scalar" end
  local parts = {}
  for i, d in ipairs(s) do parts[i] = d < 0 and "?" or tostring(d) end
  return table.concat(parts, "x")
end
M.dims = dims

local function check_opts(fname, opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then fail("%s: options must be a table, got %s", fname, type(opts)) end
  if opts.rankdir ~= nil and not ({ TB = true, LR = true, BT = true, RL = true })[opts.rankdir] then
    fail("%s: rankdir must be TB, LR, BT or RL, got %s", fname, tostring(opts.rankdir))
  end
  if opts.name ~= nil and type(opts.name) ~= "string" then fail("%s: name must be a string", fname) end
  return opts
end

-- Writes the DOT text of items, each { id =, scope = {"a", "a/b"} (the nested scopes, outermost
-- first), line = "n3 [label=...]" }, and edges (lines), as clusters nested by scope.
local function emit(opts, items, edges)
  local out = { "digraph " .. id_or_quoted(opts.name or "G") .. " {",
    "  rankdir=" .. (opts.rankdir or "TB") .. ";", "  node [shape=box];" }
  -- a tree of scopes, children in order of first appearance
  local root = { kids = {}, by = {}, items = {} }
  for _, it in ipairs(items) do
    local at = root
    for _, sc in ipairs(it.scope) do
      local k = at.by[sc]
      if not k then
        k = { name = sc, kids = {}, by = {}, items = {} }
        at.by[sc] = k
        at.kids[#at.kids + 1] = k
        at.items[#at.items + 1] = k
      end
      at = k
    end
    at.items[#at.items + 1] = it
  end
  local function walk(t, indent)
    for _, it in ipairs(t.items) do
      if it.kids then
        out[#out + 1] = indent .. "subgraph " .. id_or_quoted("cluster_" .. it.name) .. " {"
        out[#out + 1] = indent .. "  label=" .. quote(it.name:match("([^/]*)$")) .. ";"
        walk(it, indent .. "  ")
        out[#out + 1] = indent .. "}"
      else
        out[#out + 1] = indent .. it.line
      end
    end
  end
  walk(root, "  ")
  for _, e in ipairs(edges) do out[#out + 1] = "  " .. e end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n"
end

-- The scopes of a name "a/b/c": {"a", "a/b"}.
local function scopes_of(name)
  local list, pos = {}, 1
  while true do
    local s = name:find("/", pos, true)
    if not s then break end
    if s > 1 then list[#list + 1] = name:sub(1, s - 1) end
    pos = s + 1
  end
  return list
end

-- The nodes the fetches need (inputs and control inputs, transitively), or nil for all.
local function needed(g, fetches)
  if fetches == nil then return nil end
  if G.is_sym(fetches) or getmetatable(fetches) == G.Op or type(fetches) == "string" then
    fetches = { fetches }
  end
  if type(fetches) ~= "table" then fail("to_dot: fetches must be a list of tensors or operations") end
  local keep = {}
  local function visit(node)
    if keep[node] then return end
    keep[node] = true
    for _, t in ipairs(node.inputs) do visit(t._node) end
    for _, c in ipairs(node.control_inputs or {}) do visit(c) end
  end
  for i, f in ipairs(fetches) do
    if type(f) == "string" then f = call(g._by_any_name, g, f, 1) end
    local node = (G.is_sym(f) or getmetatable(f) == G.Op) and rawget(f, "_node")
    if not node then fail("to_dot: fetch %d is not a tensor or operation of the graph", i) end
    if node.graph ~= g then fail("to_dot: fetch %d (%s) belongs to another graph", i, node.name) end
    visit(node)
  end
  return keep
end

-- graph_to_dot(g [, opts]) -> DOT text of an mf.Graph.
function M.graph_to_dot(g, opts)
  if getmetatable(g) ~= G.Graph then fail("to_dot: expected an mf.Graph, got %s", type(g)) end
  opts = check_opts("to_dot", opts)
  local keep = needed(g, opts.fetches)
  local items, edges = {}, {}
  local function nid(node) return "n" .. (node.id - 1) end
  for _, node in ipairs(g._nodes) do
    if keep == nil or keep[node] then
      local shapes = {}
      for i, t in ipairs(node.outputs) do shapes[i] = dims(t._shape) end
      local label = node.name .. "\n" .. tostring(node.type)
      if #shapes > 0 then label = label .. " " .. table.concat(shapes, ", ") end
      local attrs = "label=" .. quote(label)
      if node.kind == "Placeholder" then attrs = attrs .. ", shape=ellipse"
      elseif node.kind == "Variable" then attrs = attrs .. ", style=rounded" end
      items[#items + 1] = { scope = scopes_of(node.name), line = nid(node) .. " [" .. attrs .. "];" }
      for _, t in ipairs(node.inputs) do
        local src = t._node
        local e = nid(src) .. " -> " .. nid(node)
        if #src.outputs > 1 then e = e .. ' [label=":' .. (t._index - 1) .. '"]' end
        edges[#edges + 1] = e .. ";"
      end
      for _, c in ipairs(node.control_inputs or {}) do
        edges[#edges + 1] = nid(c) .. " -> " .. nid(node) .. " [style=dashed];"
      end
    end
  end
  return emit(opts, items, edges)
end

-- ---- nn modules -----------------------------------------------------------------------------------

local function shape_list(v)
  if core.is_tensor(v) then return dims(v:shape()) end
  return nil
end

-- module_to_dot(m, shape [, opts]) -> DOT text of the layers m runs on zeros of `shape` (batch
-- dimension included), in evaluation mode and without gradients (the modes are restored after).
function M.module_to_dot(m, shape, opts)
  local nn = require("moonflow").nn
  if not nn.is_module(m) then fail("to_dot: expected an nn module, got %s", type(m)) end
  if type(shape) ~= "table" or #shape == 0 then
    fail("to_dot: an input shape with the batch dimension is needed, like {1, 784}")
  end
  for _, d in ipairs(shape) do
    if math.type(d) ~= "integer" or d < 1 then fail("to_dot: input sizes must be integers >= 1") end
  end
  opts = check_opts("to_dot", opts)
  local p = m:parameters()[1]
  local x = core.zeros(shape, { dtype = p and p:dtype() or "float32", device = p and p:device() or nil })

  local names = {}
  for _, nm in ipairs(m:named_modules()) do names[nm[2]] = names[nm[2]] or nm[1] end
  -- every leaf's forward is wrapped (an instance field shadowing the class's) to see its tensors
  local calls, producer, leaves, modes = {}, {}, {}, {}
  producer[x] = 0
  for _, mod in ipairs(m:modules()) do
    modes[mod] = mod.training
    if #mod:named_children() == 0 then leaves[#leaves + 1] = mod end
  end
  local saved = {}
  for _, leaf in ipairs(leaves) do
    local forward = leaf.forward
    saved[leaf] = { rawget(leaf, "forward") }
    rawset(leaf, "forward", function(self, ...)
      local args = table.pack(...)
      local c = { module = self, inputs = {}, srcs = {} }
      for i = 1, args.n do
        local t = args[i]
        if core.is_tensor(t) then
          c.inputs[#c.inputs + 1] = t
          c.srcs[#c.srcs + 1] = producer[t] or #calls -- made outside a layer: the layer before
        end
      end
      c.out = forward(self, ...)
      calls[#calls + 1] = c
      c.id = #calls
      if core.is_tensor(c.out) then producer[c.out] = c.id end
      return c.out
    end)
  end
  m:evaluate()
  local ok, err = pcall(core.no_grad, function() return m(x) end)
  for _, leaf in ipairs(leaves) do rawset(leaf, "forward", saved[leaf][1]) end
  for mod, mode in pairs(modes) do rawset(mod, "training", mode) end
  if not ok then fail("to_dot: running the module on zeros of shape %s failed: %s", dims(shape),
    tostring(err)) end

  local items = { { scope = {}, line = "n0 [label=" .. quote("input\nInput " .. dims(shape)) ..
    ", shape=ellipse];" } }
  local edges = {}
  for _, c in ipairs(calls) do
    local name = names[c.module] or "?"
    local typ = tostring(c.module.__typename or "Module"):gsub("^nn%.", "")
    local ins = {}
    for i, t in ipairs(c.inputs) do ins[i] = shape_list(t) end
    local label = (name ~= "" and name or typ) .. "\n" .. typ
    if #ins > 0 then label = label .. " " .. table.concat(ins, ", ") end
    local out = shape_list(c.out)
    if out then label = label .. " -> " .. out end
    -- the containers holding it: "features.1" is in "features"
    local scope, parts = {}, {}
    for part in name:gmatch("[^.]+") do parts[#parts + 1] = part end
    for i = 1, #parts - 1 do scope[i] = table.concat(parts, "/", 1, i) end
    items[#items + 1] = { scope = scope, line = "n" .. c.id .. " [label=" .. quote(label) .. "];" }
    local linked = {}
    for _, src in ipairs(c.srcs) do
      if not linked[src] then
        linked[src] = true
        edges[#edges + 1] = "n" .. src .. " -> n" .. c.id .. ";"
      end
    end
  end
  return emit(opts, items, edges)
end

-- ---- rendering with Graphviz ------------------------------------------------------------------------

local FORMATS = { svg = true, png = true, pdf = true, dot = true, gv = true }

local function shell_quote(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function readall(p)
  local f = io.open(p, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The dot program to run, or nil, why.
local function find_dot(opts)
  local prog = opts.dot or os.getenv("GRAPHVIZ_DOT") or "dot"
  if type(prog) ~= "string" or prog == "" then return nil, "the dot option must be a program name" end
  local found
  if prog:find("/", 1, true) then
    found = os.execute("test -x " .. shell_quote(prog))
  else
    found = os.execute("command -v " .. shell_quote(prog) .. " >/dev/null 2>&1")
  end
  if not found then
    return nil, ("Graphviz's `%s` program was not found%s; install Graphviz (apt-get install " ..
      "graphviz, or scripts/setup.sh), or save the text of to_dot() with a .dot path"):format(prog,
      prog:find("/", 1, true) and "" or " on PATH")
  end
  return prog
end

-- render_text(text, path, opts) -> path: the DOT text, or the picture Graphviz draws from it.
function M.render_text(text, path, opts)
  if type(path) ~= "string" or path == "" then fail("render: a file path is needed, like \"graph.svg\"") end
  local fmt = opts.format or path:match("%.([%w]+)$")
  fmt = fmt and fmt:lower()
  if not fmt or not FORMATS[fmt] then
    fail("render: cannot tell the format of %s: use a path ending in .svg, .png, .pdf or .dot " ..
      "(or {format = \"svg\"})", path)
  end
  if fmt == "dot" or fmt == "gv" then
    local f, err = io.open(path, "wb")
    if not f then fail("render: cannot write %s: %s", path, tostring(err)) end
    f:write(text)
    f:close()
    return path
  end
  local prog, why = find_dot(opts)
  if not prog then fail("render: %s", why) end
  local src = os.tmpname()
  local f = assert(io.open(src, "wb"))
  f:write(text)
  f:close()
  local errf = os.tmpname()
  local ok = os.execute(("%s -T%s %s -o %s 2>%s"):format(shell_quote(prog), fmt, shell_quote(src),
    shell_quote(path), shell_quote(errf)))
  local msg = readall(errf)
  os.remove(src)
  os.remove(errf)
  if not ok then
    fail("render: %s -T%s could not write %s: %s", prog, fmt, path,
      msg ~= "" and (msg:gsub("%s+$", "")) or "it failed")
  end
  return path
end

function M.render_graph(g, path, opts)
  opts = check_opts("render", opts)
  return M.render_text(M.graph_to_dot(g, opts), path, opts)
end

function M.render_module(m, path, shape, opts)
  opts = check_opts("render", opts)
  return M.render_text(M.module_to_dot(m, shape, opts), path, opts)
end

return M
