-- flags.lua — `mf.flags(defaults [, args])`: command-line flags for scripts, in the spirit of
-- TensorFlow's tf.app.flags. `defaults` names every flag with its default value, whose type says
-- how the flag is read: a number wants a number (`--lr 1e-3`), a string a word (`--data DIR`), a
-- boolean is set by the bare flag (`--quick`). Unknown flags and bad values are errors naming them.
-- args defaults to the script's global `arg`.
return function(defaults, args)
  args = args or arg or {}
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  local i = 1
  while args[i] ~= nil do
    local k = tostring(args[i]):match "^%-%-([%w_%-]+)$"
    k = k and k:gsub("-", "_")
    if not k or defaults[k] == nil then
      local known = {}
      for name in pairs(defaults) do known[#known + 1] = "--" .. name end
      table.sort(known)
      error(string.format("unknown flag '%s' (flags: %s)", tostring(args[i]), table.concat(known, " ")), 2)
    end
    local kind = type(defaults[k])
    if kind == "boolean" then
      o[k], i = true, i + 1
    else
      local v = args[i + 1]
      if v == nil then error(string.format("flag --%s needs a value", k), 2) end
      if kind == "number" then
        v = tonumber(v)
        if not v then error(string.format("flag --%s wants a number, got '%s'", k, args[i + 1]), 2) end
      end
      o[k], i = v, i + 2
    end
  end
  return o
end
