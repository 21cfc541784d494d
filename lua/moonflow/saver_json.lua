-- moonflow/saver_json.lua — the small JSON that mf.train.Saver keeps in a checkpoint's
-- __metadata__ (optimizer hyper-parameters, step counters, the generator state): tables of
-- strings, booleans and numbers, exact both ways. Integers are written as integers and floats
-- always with a '.', an exponent or a name (Infinity, -Infinity, NaN, as Python's json writes
-- them), so each number comes back with its Lua subtype and its value bit for bit. A table whose
-- keys are 1..n is an array; any other is an object (keys written as strings, sorted).
local J = {}

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t" }

local function enc_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESC[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function enc_number(v)
  if math.type(v) == "integer" then return string.format("%d", v) end
  if v ~= v then return "NaN" end
  if v == math.huge then return "Infinity" end
  if v == -math.huge then return "-Infinity" end
  local s
  for digits = 15, 17 do
    s = string.format("%." .. digits .. "g", v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end -- a float stays a float
  return s
end

local function is_array(t)
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function enc(v, depth, out)
  if depth > 32 then error("json: tables nested more than 32 deep (a cycle?)", 0) end
  local ty = type(v)
  if ty == "string" then
    out[#out + 1] = enc_string(v)
  elseif ty == "number" then
    out[#out + 1] = enc_number(v)
  elseif ty == "boolean" then
    out[#out + 1] = tostring(v)
  elseif ty == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i = 1, #v do
        if i > 1 then out[#out + 1] = "," end
        enc(v[i], depth + 1, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and math.type(k) ~= "integer" then
          error("json: a table key of type " .. type(k), 0)
        end
        keys[#keys + 1] = tostring(k)
      end
      table.sort(keys)
      local key_of = {}
      for k in pairs(v) do key_of[tostring(k)] = k end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = enc_string(k) .. ":"
        enc(v[key_of[k]], depth + 1, out)
      end
      out[#out + 1] = "}"
    end
  else
    error("json: cannot encode a " .. ty, 0)
  end
end

-- J.encode(v) -> text
function J.encode(v)
  local out = {}
  enc(v, 0, out)
  return table.concat(out)
end

-- ---- decoding ------------------------------------------------------------------------------------

local function perr(s, i, what) error(string.format("json: %s at byte %d", what, i), 0) end

local function skip(s, i) return s:find("[^ \t\r\n]", i) or #s + 1 end

local dec

local function dec_string(s, i) -- s:sub(i, i) == '"'
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then perr(s, i, "unterminated string") end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      local simple = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n",
        r = "\r", t = "\t" }
      if simple[e] then
        out[#out + 1] = simple[e]
        j = j + 2
      elseif e == "u" then
        local hex = s:sub(j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then perr(s, j, "bad \\u escape") end
        out[#out + 1] = utf8.char(tonumber(hex, 16))
        j = j + 6
      else
        perr(s, j, "bad escape")
      end
    else
      out[#out + 1] = c
      j = j + 1
    end
  end
end

local NAMED = { ["true"] = true, ["false"] = false, ["NaN"] = 0 / 0, ["Infinity"] = math.huge,
  ["-Infinity"] = -math.huge }

function dec(s, i, depth)
  if depth > 32 then perr(s, i, "nesting too deep") end
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == '"' then return dec_string(s, i) end
  if c == "[" or c == "{" then
    local close, t, n = c == "[" and "]" or "}", {}, 0
    i = skip(s, i + 1)
    if s:sub(i, i) == close then return t, i + 1 end
    while true do
      if c == "[" then
        n = n + 1
        t[n], i = dec(s, i, depth + 1)
      else
        i = skip(s, i)
        if s:sub(i, i) ~= '"' then perr(s, i, "expected a key") end
        local k
        k, i = dec_string(s, i)
        i = skip(s, i)
        if s:sub(i, i) ~= ":" then perr(s, i, "expected ':'") end
        t[k], i = dec(s, i + 1, depth + 1)
      end
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == close then return t, i + 1 end
      if d ~= "," then perr(s, i, "expected ',' or '" .. close .. "'") end
      i = i + 1
    end
  end
  for word, v in pairs(NAMED) do
    if s:sub(i, i + #word - 1) == word then return v, i + #word end
  end
  if s:sub(i, i + 3) == "null" then return nil, i + 4 end
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
  if num == nil or num == "" or num == "-" then perr(s, i, "unexpected character") end
  local v = tonumber(num)
  if v == nil then perr(s, i, "bad number '" .. num .. "'") end
  if not num:find("[%.eE]") then
    v = math.tointeger(v)
    if v == nil then perr(s, i, "integer out of range '" .. num .. "'") end
  end
  return v, i + #num
end

-- J.decode(text) -> value (an error "json: ..." for text that is not what encode writes)
function J.decode(s)
  if type(s) ~= "string" then error("json: expected a string, got " .. type(s), 0) end
  local v, i = dec(s, 1, 0)
  if skip(s, i) <= #s then perr(s, i, "trailing characters") end
  return v
end

return J
