-- host_spec.lua — drives the built `moonflow` host as a user would: options (-e, -v, -h, -l, -i,
-- -), scripts with `arg`, exit statuses and tracebacks, the REPL fed through a pipe (values of
-- bare expressions, errors that do not stop it, multi-line input), the REPL on a pseudo-terminal
-- (Ctrl-C stops a loop, tab completion, history) and the C embedding example.
-- The binaries: env MOONFLOW_BIN (default build/moonflow) and MOONFLOW_EMBED_BIN (default
-- build/embed_example), relative to the repository root.

local function dirname(p) return (p:gsub("/[^/]*$", "")) end

local root = (function()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  if src:sub(1, 1) ~= "/" then src = (os.getenv("PWD") or ".") .. "/" .. src end
  return dirname(dirname(dirname(src)))
end)()

local function abspath(p, default)
  p = p or default
  if p:sub(1, 1) ~= "/" then p = root .. "/" .. p end
  return p
end

local BIN = abspath(os.getenv("MOONFLOW_BIN"), "build/moonflow")
local EMBED = abspath(os.getenv("MOONFLOW_EMBED_BIN"), "build/embed_example")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function readfile(p)
  local f = io.open(p, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function writefile(p, s)
  local f = assert(io.open(p, "wb"))
  f:write(s)
  f:close()
end

local function tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("l")
  p:close()
  return d
end

-- Runs a shell command with `input` on stdin (nil: /dev/null); returns stdout, stderr, exit code.
local function sh(cmd, input)
  local inp, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  writefile(inp, input or "")
  local _, _, code = os.execute(string.format("timeout 60 sh -c %s < %s > %s 2> %s", q(cmd), inp, out, err))
  local o, e = readfile(out), readfile(err)
  os.remove(inp); os.remove(out); os.remove(err)
  return o, e, code
end

-- Runs the host with the given (already quoted) arguments.
local function mf(args, input) return sh(q(BIN) .. " " .. (args or ""), input) end

-- The numbers printed in a tensor's text, footer excluded.
local function numbers(text)
  local body = text:gsub("%[%w+ tensor, shape [^%]]*%]", "")
  local t = {}
  for tok in body:gmatch("[-+]?%d[%d.eE+-]*") do t[#t + 1] = tonumber(tok) end
  return t
end

describe("moonflow host", function()
  it("exists and runs", function()
    assert.is_truthy(io.open(BIN, "rb"), "no host binary at " .. BIN .. " (set MOONFLOW_BIN)")
  end)

  describe("options", function()
    it("-e runs a statement", function()
      local out, err, code = mf("-e " .. q("print(1+1)"))
      assert.are.equal("2\n", out)
      assert.are.equal("", err)
      assert.are.equal(0, code)
    end)

    it("-e statements run in order and see mf, nn and optim", function()
      local out, _, code = mf("-e " .. q("x = 20") .. " -e " .. q("print(x + 1, type(mf), nn == mf.nn, optim == mf.optim)"))
      assert.are.equal("21\ttable\ttrue\ttrue\n", out)
      assert.are.equal(0, code)
    end)

    it("-v prints the versions of moonflow, Lua, BLAS, CUDA and the devices", function()
      local out, _, code = mf("-v")
      assert.are.equal(0, code)
      local version = readfile(root .. "/core/include/moonflow.h"):match('#define MF_VERSION "([^"]+)"')
      assert.is_truthy(version)
      assert.is_truthy(out:find("moonflow " .. version .. "\n", 1, true), out)
      assert.is_truthy(out:find("Lua 5.4", 1, true), out)
      assert.is_truthy(out:match("\nBLAS: [^\n]*%d+ threads?"), out)
      assert.is_truthy(out:match("\nBLAS: OpenBLAS %d+%.%d+"), out)
      assert.is_truthy(out:match("\nCUDA: [^\n]+"), out)
      assert.is_truthy(out:match("\ndevices: cpu[^\n]*\n"), out)
    end)

    it("-h prints the usage and exits 0", function()
      local out, _, code = mf("-h")
      assert.are.equal(0, code)
      assert.is_truthy(out:find("usage: moonflow [options] [script [args]]", 1, true), out)
      for _, opt in ipairs { "-e stat", "-i ", "-l mod", "-v ", "-h " } do
        assert.is_truthy(out:find("  " .. opt, 1, true), opt)
      end
    end)

    it("a bad option prints the usage on stderr and exits 1", function()
      local out, err, code = mf("-Z")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.is_truthy(err:find("unrecognized option '-Z'", 1, true), err)
      assert.is_truthy(err:find("usage:", 1, true), err)
      local _, err2, code2 = mf("-e")
      assert.are.equal(1, code2)
      assert.is_truthy(err2:find("'-e' needs argument", 1, true), err2)
    end)

    it("-l requires a module into a global, -l g=mod into g", function()
      local d = tmpdir()
      writefile(d .. "/mymod.lua", "return { answer = 42 }\n")
      local out, err, code = sh("cd " .. q(d) .. " && " .. q(BIN) .. " -l mymod -e " .. q("print(mymod.answer)"))
      assert.are.equal("42\n", out, err)
      assert.are.equal(0, code)
      out = sh("cd " .. q(d) .. " && " .. q(BIN) .. " -l m=mymod -e " .. q("print(m.answer, mymod)"))
      assert.are.equal("42\tnil\n", out)
      -- MOONFLOW_LUA_PATH directories come first in package.path
      out, err, code = sh("MOONFLOW_LUA_PATH=" .. q(d) .. " " .. q(BIN) .. " -l mymod -e " .. q("print(mymod.answer)"))
      assert.are.equal("42\n", out, err)
      assert.are.equal(0, code)
      local _, err3, code3 = mf("-l no_such_module_xyz")
      assert.are.equal(1, code3)
      assert.is_truthy(err3:find("module 'no_such_module_xyz' not found", 1, true), err3)
      os.execute("rm -rf " .. q(d))
    end)
  end)

  describe("scripts", function()
    local d
    before_each(function() d = tmpdir() end)
    after_each(function() os.execute("rm -rf " .. q(d)) end)

    it("run with the global arg and ... as lua does", function()
      local s = d .. "/args.lua"
      writefile(s, "print(#arg, arg[0], arg[1], arg[2], arg[-1], arg[-2], arg[-3])\nprint(...)\n")
      local out, err, code = mf(q(s) .. " first 'two words'")
      assert.are.equal(0, code, err)
      assert.are.equal("2\t" .. s .. "\tfirst\ttwo words\t" .. BIN .. "\tnil\tnil\nfirst\ttwo words\n", out)
      out = mf("-e " .. q("y=1") .. " " .. q(s) .. " a")
      assert.are.equal("1\t" .. s .. "\ta\tnil\ty=1\t-e\t" .. BIN .. "\na\n", out)
    end)

    it("return exit status 1 and a traceback when they raise an error", function()
      local s = d .. "/err.lua"
      writefile(s, "local function f()\n  error('boom in f')\nend\nf()\n")
      local out, err, code = mf(q(s))
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.is_truthy(err:find("^moonflow: " .. s:gsub("%p", "%%%0") .. ":2: boom in f\n"), err)
      assert.is_truthy(err:find("stack traceback:", 1, true), err)
      assert.is_truthy(err:find(":4: in main chunk", 1, true), err)
    end)

    it("a missing script exits 1", function()
      local _, err, code = mf(q(d .. "/nope.lua"))
      assert.are.equal(1, code)
      assert.is_truthy(err:find("cannot open", 1, true), err)
    end)

    it("- runs stdin as a script (locals and all)", function()
      local out, err, code = mf("- a b", "local x = 21\nprint(x * 2, ...)\n")
      assert.are.equal("42\ta\tb\n", out, err)
      assert.are.equal(0, code)
    end)

    it("-i enters the REPL after the script", function()
      local s = d .. "/set.lua"
      writefile(s, "y = 7\n")
      local out, err, code = mf("-i " .. q(s), "y * 6\n")
      assert.are.equal("42\n", out, err)
      assert.are.equal(0, code)
    end)
  end)

  describe("REPL through a pipe", function()
    it("prints the values of bare expressions, without prompts", function()
      local out, err, code = mf("", "x = 40\nx + 2\n1, 'a', nil\n=3*3\nprint('p')\n")
      assert.are.equal("42\n1\ta\tnil\n9\np\n", out, err)
      assert.are.equal("", err)
      assert.are.equal(0, code)
    end)

    it("goes on after an error, which it prints with a traceback", function()
      local out, err, code = mf("", "error('first')\nprint('after')\nlocal t = nil; t.x = 1\n'still'\n")
      assert.are.equal("after\nstill\n", out)
      assert.is_truthy(err:find("stdin:1: first", 1, true), err)
      assert.is_truthy(err:find("stack traceback:", 1, true), err)
      assert.is_truthy(err:find("attempt to index a nil value", 1, true), err)
      assert.are.equal(0, code)
    end)

    it("reads multi-line statements", function()
      local input = "for i = 1, 3 do\n  print(i * i)\nend\n" ..
        "function add(a,\n  b)\n  return a + b\nend\n" ..
        "add(40,\n 2)\n" ..
        "s = [[one\ntwo]]\n#s\n"
      local out, err, code = mf("", input)
      assert.are.equal("1\n4\n9\n42\n7\n", out, err)
      assert.are.equal(0, code)
    end)

    it("reports a statement left incomplete at the end of input", function()
      local out, err = mf("", "print('ok')\nfor i = 1, 2 do\n")
      assert.are.equal("ok\n", out)
      assert.is_truthy(err:find("<eof>", 1, true), err)
    end)

    it("prints tensors: x = mf.ones{2,2}; x + 1", function()
      local out, err, code = mf("", "x = mf.ones{2,2}\nx + 1\n")
      assert.are.equal(0, code)
      assert.are.equal("", err)
      assert.is_truthy(out:find("[float32 tensor, shape 2x2, cpu]", 1, true), out)
      assert.are.same({ 2, 2, 2, 2 }, numbers(out))
    end)

    it("print(mf.ones{2,2} + 1) prints the sum", function()
      local out, err, code = mf("", "print(mf.ones{2,2} + 1)\n")
      assert.are.equal(0, code, err)
      assert.is_truthy(out:find("[float32 tensor, shape 2x2, cpu]", 1, true), out)
      assert.are.same({ 2, 2, 2, 2 }, numbers(out))
    end)
  end)

  describe("REPL on a terminal", function()
    local python = io.open("/usr/bin/python3", "rb") and "/usr/bin/python3" or "python3"
    -- A small pty driver: each step sends text and waits for the expected output.
    local driver = [==[
import os, pty, sys, time, select
bin, home = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.environ["HOME"] = home
    os.environ["TERM"] = "xterm"
    os.execv(bin, [bin])
buf = b""
def expect(s, t=10):
    global buf
    end = time.time() + t
    while s.encode() not in buf:
        r, _, _ = select.select([fd], [], [], max(0, end - time.time()))
        if not r:
            print("TIMEOUT waiting for %r, got %r" % (s, buf)); sys.exit(2)
        try:
            d = os.read(fd, 4096)
        except OSError:
            print("EOF waiting for %r, got %r" % (s, buf)); sys.exit(3)
        buf += d
    i = buf.index(s.encode()) + len(s)
    print("SAW " + s)
    buf = buf[i:]
def send(b, pause=0.0):
    os.write(fd, b); time.sleep(pause)
expect("mf> ")
send(b"while true do end\n", 0.5)
send(b"\x03"); expect("interrupted!"); expect("mf> ")
send(b'print("al" .. "ive")\n'); expect("alive"); expect("mf> ")
send(b"half typed\x03"); expect("mf> ")
send(b"for i = 1, 2 do\n"); expect(">> ")
send(b"\x03"); expect("mf> ")
send(b"abcdef_long = {xyzzy = 42}\n"); expect("mf> ")
send(b"abcdef_l\t", 0.2); send(b".xy\t", 0.2); send(b" + 1\n"); expect("43"); expect("mf> ")
send(b's = "hi"\n'); expect("mf> ")
send(b"s:up\t", 0.2); send(b")\n"); expect("HI"); expect("mf> ")
send(b"string.rev\t", 0.2); send(b'"abc")\n'); expect("cba"); expect("mf> ")
send(b"x = mf.ones{2, 3}\n"); expect("mf> ")
send(b"x:nume\t", 0.2); send(b") * 7\n"); expect("42"); expect("mf> ")
send(b"\x04")
_, st = os.waitpid(pid, 0)
print("EXIT %d" % os.WEXITSTATUS(st))
]==]

    it("Ctrl-C stops a loop and the session goes on; tab completes; history is kept", function()
      local d = tmpdir()
      writefile(d .. "/drive.py", driver)
      local out, err = sh(python .. " " .. q(d .. "/drive.py") .. " " .. q(BIN) .. " " .. q(d))
      for _, s in ipairs { "interrupted!", "alive", "43", "HI", "cba", "42" } do
        assert.is_truthy(out:find("SAW " .. s .. "\n", 1, true), s .. " not seen:\n" .. out .. err)
      end
      assert.is_truthy(out:find("EXIT 0", 1, true), out .. err)
      local hist = readfile(d .. "/.moonflow_history") or ""
      assert.is_truthy(hist:find('print("al" .. "ive")\n', 1, true), hist)
      assert.is_truthy(hist:find("s:upper()\n", 1, true), hist)
      assert.is_falsy(hist:find("half typed", 1, true), hist)
      os.execute("rm -rf " .. q(d))
    end)

    it("prints one banner line naming what is loaded", function()
      local d = tmpdir()
      writefile(d .. "/banner.py", [==[
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.environ["HOME"] = sys.argv[2]; os.execv(sys.argv[1], [sys.argv[1]])
buf = b""
end = time.time() + 10
while b"mf> " not in buf and time.time() < end:
    r, _, _ = select.select([fd], [], [], 1)
    if r: buf += os.read(fd, 4096)
os.write(fd, b"\x04"); os.waitpid(pid, 0)
sys.stdout.write(buf.decode("utf-8", "replace"))
]==])
      local out = sh(python .. " " .. q(d .. "/banner.py") .. " " .. q(BIN) .. " " .. q(d))
      assert.is_truthy(out:match("moonflow %d+%.%d+%.%d+ %(Lua 5%.4%.%d+, [^\n]*%) \u{2014} mf[^\n]* loaded\r?\n"), out)
      os.execute("rm -rf " .. q(d))
    end)
  end)

  describe("embedding in C", function()
    it("the embed example computes with tensors, reads results and catches errors", function()
      assert.is_truthy(io.open(EMBED, "rb"), "no embed example at " .. EMBED .. " (set MOONFLOW_EMBED_BIN)")
      local out, err, code = sh(q(EMBED))
      assert.are.equal(0, code, err)
      assert.is_truthy(out:find("sum of 2 * ones{2,3} = 12 (a 2-d tensor)\n", 1, true), out .. err)
      assert.is_truthy(out:find("scaled_sum(4, 2.5) = 10\n", 1, true), out)
      assert.is_truthy(out:find("error caught in C:\nbroken:2:", 1, true), out)
      assert.is_truthy(out:find("stack traceback:", 1, true), out)
      assert.is_truthy(out:find("still alive\n", 1, true), out)
    end)
  end)
end)
