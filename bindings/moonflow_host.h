/* moonflow_host.h — the C embedding API of moonflow: a Lua 5.4 state with moonflow loaded, running
 * strings and files with tracebacks on error, the interactive REPL, and the whole `moonflow`
 * command. This is the header a C application includes to embed moonflow (link libmoonflow_host,
 * libmoonflow and Lua 5.4; see examples/embed/README.md).
 *
 * Usage:
 *
 *   #include <stdio.h>
 *   #include "moonflow_host.h"
 *
 *   int main(void) {
 *     lua_State *L = mf_host_new();
 *     if (L == NULL) { fprintf(stderr, "%s\n", mf_host_error(NULL)); return 1; }
 *     if (mf_host_dostring(L, "local a = mf.ones{2, 3}; return (a * 2):sum():item()", "=demo")
 *         != 0) {
 *       fprintf(stderr, "%s\n", mf_host_error(L)); // message and stack traceback
 *       mf_host_close(L);
 *       return 1;
 *     }
 *     printf("sum = %g\n", lua_tonumber(L, -1)); // 12
 *     lua_pop(L, 1);                             // the chunk's result
 *     mf_host_close(L);
 *     return 0;
 *   }
 *
 * The state is a plain lua_State: use the Lua C API (lua.h, lauxlib.h, included here) for
 * everything else — globals, calling functions, reading tables. No function here exits the process,
 * raises a Lua error through the caller or writes to the terminal, except mf_host_repl and
 * mf_host_main, whose job is the terminal. One state belongs to one thread at a time; the REPL and
 * mf_host_main also use process-wide state (the SIGINT handler, readline): one of them at a time.
 */
#ifndef MOONFLOW_HOST_H
#define MOONFLOW_HOST_H

#include <lauxlib.h>
#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A new Lua state with the standard libraries, the C module `moonflow.core` in package.preload,
 * and package.path extended so that `require "moonflow"` finds the Lua side: first the directories
 * in the environment variable MOONFLOW_LUA_PATH (a ';'-separated list of directories, or of Lua
 * path templates with '?'), then the source tree's lua/ directory, then the installed one. Then it
 * sets the globals `mf = require "moonflow"`, and `nn = mf.nn`, `optim = mf.optim` where mf has
 * those fields.
 * Returns NULL when the state cannot be made or moonflow fails to load; mf_host_error(NULL) then
 * says why. */
lua_State *mf_host_new(void);

/* Loads and runs `code` as a chunk named `chunkname` (lua_load's convention: "=name" is shown as
 * is, "@file" as a file name; NULL names it by its text). Returns 0 on success with the chunk's
 * results pushed on the stack (pop them: lua_gettop tells how many), or the non-zero Lua status
 * (LUA_ERRSYNTAX, LUA_ERRRUN, LUA_ERRMEM, ...) with nothing pushed and the message retrievable
 * with mf_host_error. */
int mf_host_dostring(lua_State *L, const char *code, const char *chunkname);

/* Runs the Lua file at `path` (NULL: standard input) as a script, the way `lua path args...` does:
 * the global `arg` is set to { [0] = path, argv[0], ..., argv[argc-1] } and the same arguments are
 * the chunk's `...`. argv holds the script's own arguments only (argc may be 0 and argv NULL).
 * Returns and pushes as mf_host_dostring. */
int mf_host_dofile(lua_State *L, const char *path, int argc, char **argv);

/* The message and stack traceback of the last failed mf_host_dostring / mf_host_dofile on L, or
 * with L == NULL the reason the last mf_host_new on this thread failed. "" when there was none.
 * The string stays valid until the next call that runs code on L (or mf_host_new). */
const char *mf_host_error(lua_State *L);

/* The interactive read-eval-print loop on standard input and output, until end of input: prompts
 * "mf> " and ">> " (continuation of an incomplete statement), line editing, history in
 * ~/.moonflow_history and tab completion of globals, fields and methods (when built with GNU
 * readline and standard input is a terminal), values of bare expressions printed with tostring,
 * errors printed with a traceback on stderr. Ctrl-C interrupts a running chunk ("interrupted!")
 * or clears the line being typed; the loop goes on. When standard input is not a terminal, lines
 * are read and evaluated the same way but no prompt is printed. Handles SIGINT while it runs and
 * restores the previous handler. Returns 0. */
int mf_host_repl(lua_State *L);

/* The whole `moonflow` command: `moonflow [options] [script [args]]`, with lua's options plus -h
 * (see `moonflow -h`). Returns the process exit status: 0 on success, 1 when a script, -e or -l
 * raised an error, an option was wrong or moonflow could not be loaded. */
int mf_host_main(int argc, char **argv);

/* Closes a state made by mf_host_new (frees every tensor it holds). NULL is fine. */
void mf_host_close(lua_State *L);

#ifdef __cplusplus
}
#endif
#endif
