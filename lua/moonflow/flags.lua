-- flags.lua — `mf.flags(defaults [, args])`: command-line flags for scripts, in the spirit of
-- TensorFlow's tf.app.flags. `defaults` names every flag with its default value, whose type says
-- how the flag is read: a number wants a number (`--lr 1e-3` or `--lr=1e-3`), a string a word
-- (`--data DIR`), a boolean is set by the bare flag (`--quick`) or by `--quick=false|true`.
-- Dashes in names read as underscores (`--log-dir` is `log_dir`). Words that are not flags are the
-- positional arguments, in order, in the result's array part (`o[1]`, `o[2]`, ...); `--` ends the
-- flags. Unknown flags and bad values are errors naming them. args defaults to the global `arg`.
return function(defaults, args)
  args = args or arg or {}
  local o = {}
  for k, v in pairs(defaults) do o[k] = v end
  local function fail(fmt, ...) error(string.format(fmt, ...), 3) end
  local i, only_positional = 1, false
  while args[i] ~= nil do
    local word = tostring(args[i])
    local k, inline = word:match "^%-%-([%w_%-]+)=(.*)$"
    k = k or word:match "^%-%-([%w_%-]+)$"
    if only_positional or not word:match "^%-" or word == "-" then
      o[#o + 1], i = word, i + 1
    elseif word == "--" then
      only_positional, i = true, i + 1
    else
      k = k and k:gsub("-", "_")
      if not k or defaults[k] == nil then
        local known = {}
        for name in pairs(defaults) do known[#known + 1] = "--" .. name end
        table.sort(known)
        fail("unknown flag '%s' (flags: %s)", word, table.concat(known, " "))
      end
      local kind, v = type(defaults[k]), inline
      if kind == "boolean" then
        if v == nil or v == "true" then v = true
        elseif v == "false" then v = false
        else fail("flag --%s is a switch: give it alone, or =true / =false, not '%s'", k, v) end
        i = i + 1
      else
        if v == nil then
          v, i = args[i + 1], i + 2
          if v == nil then fail("flag --%s needs a value", k) end
        else
          i = i + 1
        end
        if kind == "number" then
          local n = tonumber(v)
          if not n then fail("flag --%s wants a number, got '%s'", k, v) end
          v = n
        end
      end
      o[k] = v
    end
  end
  return o
end
