/* host.c — the moonflow host: a Lua 5.4 state with moonflow loaded, the `moonflow` command
 * (scripts, -e, -l, -i, -v, -h, stdin) and its REPL (readline editing, history, tab completion,
 * values of bare expressions printed, multi-line input, Ctrl-C), and the embedding API of
 * moonflow_host.h.
 *
 * Modelled on Lua 5.4's lua.c: chunks run under a message handler that adds a traceback; the REPL
 * first tries `return <line>` so that expressions print, and reads continuation lines while the
 * error is an <eof> syntax error; SIGINT while a chunk runs sets a count hook that raises
 * "interrupted!". The embedding functions never exit and never raise through their caller.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "lmf.h" /* the tensor metatable's and methods' registry names, for completion */
#include "moonflow.h"
#include "moonflow_host.h"

#ifdef MF_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#define PROGNAME "moonflow"
#define PROMPT "mf> "
#define PROMPT2 ">> "
#define HISTFILE ".moonflow_history" /* in $HOME */
#define HISTMAX 1000                 /* lines kept in the history file */

#define ST_EOF (-1)  /* loadline: end of input */
#define ST_INTR (-2) /* loadline: Ctrl-C while typing */

int luaopen_moonflow_core(lua_State *L); /* bindings/ */

static const char errkey = 'e'; /* registry key of the last error of mf_host_dostring/dofile */
static _Thread_local char newerr[4096]; /* why the last mf_host_new failed */

/* ======================================================================================
** Running chunks: message handler, signals, calls
** ====================================================================================== */

static lua_State *globalL = NULL; /* the state a SIGINT stops */

/* Hook set by the signal handler: stops the running chunk. */
static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void setsig(void (*h)(int), struct sigaction *old) {
  struct sigaction sa;
  sa.sa_handler = h;
  sa.sa_flags = 0; /* no SA_RESTART: a read at the prompt returns EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, old);
}

/* SIGINT while a chunk runs. A signal cannot change a Lua state safely, so it only sets a hook
 * that raises the error at the next instruction; a second SIGINT meanwhile kills the process (the
 * way out of a long C call). */
static void laction(int i) {
  int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
  (void)i;
  setsig(SIG_DFL, NULL);
  lua_sethook(globalL, lstop, flag, 1);
}

/* Message handler for every chunk: the message (or __tostring of an error object) plus a
 * traceback. */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* lua_pcall with the message handler; with `sig`, SIGINT interrupts the chunk meanwhile. */
static int docall(lua_State *L, int narg, int nres, int sig) {
  int status, base = lua_gettop(L) - narg;
  struct sigaction old;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  if (sig) {
    globalL = L;
    setsig(laction, &old);
  }
  status = lua_pcall(L, narg, nres, base);
  if (sig) {
    sigaction(SIGINT, &old, NULL);
    if (lua_gethook(L) == lstop) lua_sethook(L, NULL, 0, 0); /* Ctrl-C came too late */
  }
  lua_remove(L, base);
  return status;
}

static void l_message(const char *pname, const char *msg) {
  fflush(stdout);
  if (pname) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

/* Prints the message on the top of the stack (if status is an error) and pops it. */
static int report(lua_State *L, int status, const char *pname) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    l_message(pname, msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

/* Moves the message on the top of the stack to the registry (for mf_host_error). */
static int seterror(lua_State *L, int status) {
  if (status != LUA_OK) {
    if (!lua_isstring(L, -1)) {
      lua_pop(L, 1);
      lua_pushliteral(L, "(error object is not a string)");
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &errkey);
  }
  return status;
}

static void clearerror(lua_State *L) {
  lua_pushliteral(L, "");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &errkey);
}

/* ======================================================================================
** The state
** ====================================================================================== */

/* Adds to B the Lua path templates of one directory (or the entry as is if it has a '?'). */
static void adddir(luaL_Buffer *B, const char *dir, size_t len) {
  if (len == 0) return;
  if (memchr(dir, '?', len)) {
    luaL_addlstring(B, dir, len);
    luaL_addchar(B, ';');
    return;
  }
  while (len > 1 && dir[len - 1] == '/') len--;
  luaL_addlstring(B, dir, len);
  luaL_addstring(B, "/?.lua;");
  luaL_addlstring(B, dir, len);
  luaL_addstring(B, "/?/init.lua;");
}

/* package.path = MOONFLOW_LUA_PATH dirs; source tree lua/; installed dir; the previous path. */
static void setpath(lua_State *L, int noenv) {
  luaL_Buffer B;
  const char *env = noenv ? NULL : getenv("MOONFLOW_LUA_PATH");
  lua_getglobal(L, "package");
  luaL_buffinit(L, &B);
  if (env) {
    const char *p = env, *e;
    while ((e = strchr(p, ';')) != NULL) {
      adddir(&B, p, (size_t)(e - p));
      p = e + 1;
    }
    adddir(&B, p, strlen(p));
  }
#ifdef MF_LUA_DIR_SRC
  adddir(&B, MF_LUA_DIR_SRC, strlen(MF_LUA_DIR_SRC));
#endif
#ifdef MF_LUA_DIR_INSTALL
  adddir(&B, MF_LUA_DIR_INSTALL, strlen(MF_LUA_DIR_INSTALL));
#endif
  lua_getfield(L, -2, "path");
  luaL_addvalue(&B);
  luaL_pushresult(&B);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

/* Opens the libraries, preloads moonflow.core, sets the path and the globals mf, nn, optim. */
static int pinit(lua_State *L) {
  int noenv = lua_toboolean(L, 1);
  luaL_openlibs(L);
  lua_gc(L, LUA_GCGEN, 0, 0); /* generational, as lua.c: a step's dead tensors die young */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_moonflow_core);
  lua_setfield(L, -2, "moonflow.core");
  lua_pop(L, 1);
  setpath(L, noenv);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "moonflow");
  lua_call(L, 1, 1);
  if (lua_istable(L, -1)) {
    if (lua_getfield(L, -1, "nn") != LUA_TNIL)
      lua_setglobal(L, "nn");
    else
      lua_pop(L, 1);
    if (lua_getfield(L, -1, "optim") != LUA_TNIL)
      lua_setglobal(L, "optim");
    else
      lua_pop(L, 1);
  }
  lua_setglobal(L, "mf");
  return 0;
}

/* A new state; noenv ignores the environment variables (lua's -E). */
static lua_State *newstate(int noenv) {
  int status;
  lua_State *L = luaL_newstate();
  newerr[0] = '\0';
  if (L == NULL) {
    snprintf(newerr, sizeof newerr, "cannot create a Lua state: not enough memory");
    return NULL;
  }
  if (noenv) {
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  lua_pushcfunction(L, pinit);
  lua_pushboolean(L, noenv);
  status = docall(L, 1, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    snprintf(newerr, sizeof newerr, "cannot load moonflow: %s", msg ? msg : "(no message)");
    lua_close(L);
    return NULL;
  }
  clearerror(L);
  return L;
}

lua_State *mf_host_new(void) { return newstate(0); }

void mf_host_close(lua_State *L) {
  if (L) lua_close(L);
}

const char *mf_host_error(lua_State *L) {
  const char *msg;
  if (L == NULL) return newerr;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &errkey);
  msg = lua_tostring(L, -1); /* the registry keeps the string alive */
  lua_pop(L, 1);
  return msg ? msg : "";
}

int mf_host_dostring(lua_State *L, const char *code, const char *chunkname) {
  int status;
  clearerror(L);
  status = luaL_loadbuffer(L, code, strlen(code), chunkname ? chunkname : code);
  if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET, 0);
  return seterror(L, status);
}

/* Pushes arg[1..#arg] (the script's arguments) and returns how many. */
static int pushargs(lua_State *L) {
  int i, n;
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);
  return n;
}

static int ppushargs(lua_State *L) { return pushargs(L); }

/* Loads the file (NULL: stdin) and calls it with the global arg's entries as `...`. */
static int runfile(lua_State *L, const char *path, int sig) {
  int status = luaL_loadfile(L, path);
  if (status == LUA_OK) {
    int n, top = lua_gettop(L);
    lua_pushcfunction(L, ppushargs); /* protected: 'arg' may have been changed */
    status = lua_pcall(L, 0, LUA_MULTRET, 0);
    if (status != LUA_OK) {
      lua_remove(L, top); /* the chunk */
      return status;
    }
    n = lua_gettop(L) - top;
    status = docall(L, n, LUA_MULTRET, sig);
  }
  return status;
}

/* arg = { [0] = path, argv... } (argument 1: path or nil, 2: argc, 3: argv). */
static int psetarg(lua_State *L) {
  int i, argc = (int)lua_tointeger(L, 2);
  char **argv = (char **)lua_touserdata(L, 3);
  lua_createtable(L, argc, 1);
  lua_pushstring(L, lua_isnil(L, 1) ? "-" : lua_tostring(L, 1));
  lua_rawseti(L, -2, 0);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  return 0;
}

int mf_host_dofile(lua_State *L, const char *path, int argc, char **argv) {
  int status;
  clearerror(L);
  lua_pushcfunction(L, psetarg);
  lua_pushstring(L, path);
  lua_pushinteger(L, argv ? argc : 0);
  lua_pushlightuserdata(L, argv);
  status = docall(L, 3, 0, 0);
  if (status == LUA_OK) status = runfile(L, path, 0);
  return seterror(L, status);
}

/* ======================================================================================
** Reading lines: GNU readline on a terminal, getline otherwise
** ====================================================================================== */

static volatile sig_atomic_t gotint; /* SIGINT at the prompt */
static void onint(int i) {
  (void)i;
  gotint = 1;
}

static int interactive; /* stdin is a terminal: prompts, banner */

#ifdef MF_HAVE_READLINE
static int usingrl;      /* reading through readline */
static char *histpath;   /* ~/.moonflow_history, or NULL */
static lua_State *compL; /* the state completion looks into */
static char *rlline;     /* the line the readline callback got */
static int rldone;

static void rlgotline(char *line) {
  rlline = line;
  rldone = 1;
  rl_callback_handler_remove();
}

/* readline through its callback interface, so that SIGINT (EINTR from select) can clear the line
 * and return instead of killing the process. */
static int rlread(const char *prompt, char **line) {
  int fd;
  rldone = 0;
  rlline = NULL;
  gotint = 0;
  rl_callback_handler_install(prompt, rlgotline);
  fd = fileno(rl_instream ? rl_instream : stdin);
  while (!rldone) {
    fd_set fds;
    int r;
    if (!gotint) {
      FD_ZERO(&fds);
      FD_SET(fd, &fds);
      r = select(fd + 1, &fds, NULL, NULL, NULL);
    } else
      r = -1;
    if (r < 0) {
      if (gotint) { /* show "^C" after the text, drop the line, start afresh */
        FILE *out = rl_outstream ? rl_outstream : stdout;
        gotint = 0;
        rl_point = rl_end;
        rl_redisplay();
        fputs("^C", out);
        fflush(out);
        rl_free_line_state();
        rl_callback_sigcleanup();
        rl_callback_handler_remove(); /* restores the terminal (may move to column 0) */
        fputs("\n", out);
        fflush(out);
        return -1;
      }
      if (errno == EINTR) continue;
      rl_callback_handler_remove();
      break; /* read error: end of input */
    }
    rl_callback_read_char();
  }
  *line = rlline;
  return rlline != NULL;
}

/* Adds a line to the history and appends it to the history file. */
static void saveline(const char *line) {
  HIST_ENTRY *last;
  if (!usingrl || line[0] == '\0') return;
  last = history_get(history_base + history_length - 1);
  if (last && strcmp(last->line, line) == 0) return; /* no duplicates in a row */
  add_history(line);
  if (histpath) append_history(1, histpath);
}
#else
static void saveline(const char *line) { (void)line; }
#endif

/* Reads one line (without its newline) into a malloc'ed string. Returns 1 with *line set, 0 at the
 * end of input, -1 when Ctrl-C cleared the line. */
static int readln(const char *prompt, char **line) {
  size_t cap = 0;
  ssize_t n;
  *line = NULL;
#ifdef MF_HAVE_READLINE
  if (usingrl) return rlread(prompt, line);
#endif
  if (interactive) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  gotint = 0;
  errno = 0;
  n = getline(line, &cap, stdin);
  if (n < 0) {
    free(*line);
    *line = NULL;
    if (gotint || errno == EINTR) {
      clearerr(stdin);
      gotint = 0;
      if (interactive) fputs("\n", stdout);
      return -1;
    }
    return 0;
  }
  if (n > 0 && (*line)[n - 1] == '\n') (*line)[--n] = '\0';
  if (n > 0 && (*line)[n - 1] == '\r') (*line)[--n] = '\0';
  return 1;
}

/* ======================================================================================
** Tab completion of globals, fields and methods
** ====================================================================================== */

#ifdef MF_HAVE_READLINE
static const char *const keywords[] = {"and",   "break", "do",       "else",  "elseif", "end",
                                       "false", "for",   "function", "goto",  "if",     "in",
                                       "local", "nil",   "not",      "or",    "repeat", "return",
                                       "then",  "true",  "until",    "while", NULL};

static int isalpha_(int c) { return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* s[0..n) is a Lua name */
static int isname(const char *s, size_t n) {
  size_t i;
  if (n == 0 || !isalpha_(s[0])) return 0;
  for (i = 1; i < n; i++)
    if (!isalpha_(s[i]) && !(s[i] >= '0' && s[i] <= '9')) return 0;
  return 1;
}

static int iskeyword(const char *s) {
  int i;
  for (i = 0; keywords[i]; i++)
    if (strcmp(s, keywords[i]) == 0) return 1;
  return 0;
}

enum { K_FIELDS, K_METHODS, K_GETTERS };

/* Adds to the result table (index res) prefix..key for each string key of the table at the top
 * that starts with `part`. K_FIELDS: any value, '(' after functions; K_METHODS: functions only,
 * with '('; K_GETTERS: any value, the name alone (fields computed by a function). */
static void addkeys(lua_State *L, int res, const char *prefix, const char *part, int kind) {
  size_t lp = strlen(part);
  int t = lua_gettop(L);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    size_t lk;
    const char *k;
    int fn = lua_type(L, -1) == LUA_TFUNCTION;
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    k = lua_tolstring(L, -1, &lk);
    if (lk < lp || strncmp(k, part, lp) != 0 || !isname(k, lk) || iskeyword(k)) continue;
    if (k[0] == '_' && part[0] != '_') continue; /* _private, __meta: only when asked */
    if (kind == K_METHODS && !fn) continue;
    lua_pushfstring(L, "%s%s%s", prefix, k, fn && kind != K_GETTERS ? "(" : "");
    lua_rawseti(L, res, (lua_Integer)luaL_len(L, res) + 1);
  }
}

/* Completions of the text (argument 1): "pri", "mf.ze", "x:sh", "a.b.c". Returns a sequence of
 * full replacements. Runs in protected mode: __index functions met on the path may raise. */
static int pcandidates(lua_State *L) {
  const char *text = luaL_checkstring(L, 1);
  const char *sep = NULL, *p;
  int res, depth;
  lua_newtable(L);
  res = lua_gettop(L);
  for (p = text; *p; p++)
    if (*p == '.' || *p == ':') sep = p;
  lua_pushglobaltable(L);
  if (sep == NULL) { /* a global, or a keyword */
    int i;
    for (i = 0; keywords[i]; i++)
      if (strncmp(keywords[i], text, strlen(text)) == 0) {
        lua_pushstring(L, keywords[i]);
        lua_rawseti(L, res, (lua_Integer)luaL_len(L, res) + 1);
      }
    addkeys(L, res, "", text, 0);
    lua_settop(L, res);
    return 1;
  }
  /* walk the path a.b.c before the last separator */
  for (p = text; p < sep;) {
    const char *e = p;
    while (e < sep && *e != '.' && *e != ':') e++;
    if ((e < sep && *e == ':') || !isname(p, (size_t)(e - p))) return 1; /* not a path */
    if (!lua_istable(L, -1)) { /* indexable only through a metatable */
      if (luaL_getmetafield(L, -1, "__index") == LUA_TNIL) return 1;
      lua_pop(L, 1);
    }
    lua_pushlstring(L, p, (size_t)(e - p));
    lua_gettable(L, -2);
    lua_remove(L, -2);
    p = e + 1;
  }
  {
    const char *prefix = lua_pushlstring(L, text, (size_t)(sep - text) + 1);
    const char *part = sep + 1;
    int colon = *sep == ':';
    lua_insert(L, res + 1); /* keep the prefix string under the value */
    /* the value's own keys, then its metatable's __index tables (methods, class fields) */
    for (depth = 0; depth < 8; depth++) {
      int mt;
      if (lua_istable(L, -1)) addkeys(L, res, prefix, part, colon ? K_METHODS : K_FIELDS);
      if (!lua_getmetatable(L, -1)) break;
      mt = lua_gettop(L);
      if (lua_getfield(L, mt, "__index") == LUA_TFUNCTION) {
        /* an __index function: a __methods table in the metatable says what it knows; tensors
         * keep theirs in the registry */
        if (lua_getfield(L, mt, "__methods") == LUA_TTABLE)
          addkeys(L, res, prefix, part, colon ? K_METHODS : K_FIELDS);
        if (lua_getfield(L, mt, "__name") == LUA_TSTRING &&
            strcmp(lua_tostring(L, -1), LMF_TENSOR) == 0) {
          if (lua_getfield(L, LUA_REGISTRYINDEX, LMF_METHODS) == LUA_TTABLE)
            addkeys(L, res, prefix, part, colon ? K_METHODS : K_FIELDS);
          if (!colon && lua_getfield(L, LUA_REGISTRYINDEX, LMF_GETTERS) == LUA_TTABLE)
            addkeys(L, res, prefix, part, K_GETTERS);
        }
        break;
      }
      lua_replace(L, mt - 1); /* the value := its __index */
      lua_settop(L, mt - 1);
      if (!lua_istable(L, -1)) break;
    }
  }
  lua_settop(L, res);
  return 1;
}

static char **cands;
static int ncands, icands;

static char *gencand(const char *text, int state) {
  (void)text;
  if (state == 0) icands = 0;
  return icands < ncands ? strdup(cands[icands++]) : NULL;
}

static char **complete(const char *text, int start, int end) {
  lua_State *L = compL;
  char **m = NULL;
  int i, top;
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1; /* never file names */
  rl_completion_append_character = '\0';
  if (L == NULL) return NULL;
  top = lua_gettop(L);
  lua_pushcfunction(L, pcandidates);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    int n = (int)lua_rawlen(L, -1);
    cands = n > 0 ? calloc((size_t)n, sizeof *cands) : NULL;
    ncands = 0;
    for (i = 1; cands && i <= n; i++) {
      lua_rawgeti(L, -1, i);
      if (lua_isstring(L, -1)) cands[ncands++] = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    if (ncands > 0) m = rl_completion_matches(text, gencand);
    for (i = 0; i < ncands; i++) free(cands[i]);
    free(cands);
    cands = NULL;
    ncands = 0;
  }
  lua_settop(L, top);
  return m;
}

static void rlopen(lua_State *L) {
  const char *home = getenv("HOME");
  rl_readline_name = "moonflow";
  rl_catch_signals = 0; /* SIGINT is ours (onint) */
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t\n\"\\'><=;+-*/%^~#&|,()[]{}";
  rl_completer_word_break_characters = rl_basic_word_break_characters;
  compL = L;
  using_history();
  stifle_history(HISTMAX);
  histpath = NULL;
  if (home && home[0]) {
    size_t n = strlen(home) + sizeof HISTFILE + 2;
    histpath = malloc(n);
    if (histpath) {
      snprintf(histpath, n, "%s/%s", home, HISTFILE);
      history_truncate_file(histpath, HISTMAX);
      if (read_history(histpath) != 0 && write_history(histpath) != 0) { /* create it */
        free(histpath);
        histpath = NULL;
      }
    }
  }
  usingrl = 1;
}

static void rlclose(void) {
  if (histpath) history_truncate_file(histpath, HISTMAX);
  free(histpath);
  histpath = NULL;
  clear_history();
  compL = NULL;
  usingrl = 0;
}
#endif

/* ======================================================================================
** The REPL (runs as a protected C function: stack index 1 is the line being read)
** ====================================================================================== */

#define EOFMARK "<eof>"
#define marklen (sizeof(EOFMARK) / sizeof(char) - 1)

/* A syntax error at <eof>: the statement is incomplete, read another line. */
static int incomplete(lua_State *L, int status) {
  if (status == LUA_ERRSYNTAX) {
    size_t lmsg;
    const char *msg = lua_tolstring(L, -1, &lmsg);
    if (lmsg >= marklen && strcmp(msg + lmsg - marklen, EOFMARK) == 0) return 1;
  }
  return 0;
}

/* Reads a line and pushes it. Returns 1, 0 at end of input, -1 on Ctrl-C. */
static int pushline(lua_State *L, int firstline) {
  char *b;
  int r = readln(firstline ? PROMPT : PROMPT2, &b);
  if (r <= 0) return r;
  saveline(b);
  if (firstline && b[0] == '=')
    lua_pushfstring(L, "return %s", b + 1); /* 5.2's '=' */
  else
    lua_pushstring(L, b);
  free(b);
  return 1;
}

/* Tries the line at the top as 'return <line>;'; on success replaces it by the compiled chunk. */
static int addreturn(lua_State *L) {
  const char *line = lua_tostring(L, -1);
  const char *retline = lua_pushfstring(L, "return %s;", line);
  int status = luaL_loadbuffer(L, retline, strlen(retline), "=stdin");
  if (status == LUA_OK)
    lua_remove(L, -2);
  else
    lua_pop(L, 2);
  return status;
}

/* Compiles the line at index 1 as a statement, adding continuation lines while incomplete. An
 * expression spread over several lines ("f(1,\n 2)") is then compiled as 'return <lines>;' so that
 * its value prints too. */
static int multiline(lua_State *L) {
  int nlines = 1;
  for (;;) {
    size_t len;
    const char *line = lua_tolstring(L, 1, &len);
    int status = luaL_loadbuffer(L, line, len, "=stdin");
    int r;
    if (!incomplete(L, status)) {
      if (nlines > 1) {
        lua_pushvalue(L, 1);
        if (addreturn(L) == LUA_OK) { /* stack: line, statement's chunk or error, line, chunk */
          lua_remove(L, -2);
          lua_remove(L, -2);
          return LUA_OK;
        }
        lua_pop(L, 1);
      }
      return status;
    }
    nlines++;
    r = pushline(L, 0);
    if (r == 0) return status; /* input ended inside a statement: report it */
    if (r < 0) return ST_INTR;
    lua_remove(L, -2); /* the <eof> message */
    lua_pushliteral(L, "\n");
    lua_insert(L, -2);
    lua_concat(L, 3); /* line .. "\n" .. next line */
  }
}

/* Reads and compiles one statement or expression: returns its status with the chunk (or the error
 * message) on the top, or ST_EOF / ST_INTR with the stack empty. */
static int loadline(lua_State *L) {
  int status, r;
  lua_settop(L, 0);
  if ((r = pushline(L, 1)) <= 0) return r == 0 ? ST_EOF : ST_INTR;
  if ((status = addreturn(L)) != LUA_OK) status = multiline(L);
  if (status == ST_INTR) {
    lua_settop(L, 0);
    return ST_INTR;
  }
  lua_remove(L, 1);
  return status;
}

/* Prints the values on the stack with tostring, tab-separated (called through docall). */
static int l_print(lua_State *L) {
  int i, n = lua_gettop(L);
  luaL_Buffer B;
  luaL_buffinit(L, &B);
  for (i = 1; i <= n; i++) {
    if (i > 1) luaL_addchar(&B, '\t');
    luaL_tolstring(L, i, NULL);
    luaL_addvalue(&B);
  }
  luaL_addchar(&B, '\n');
  luaL_pushresult(&B);
  fwrite(lua_tostring(L, -1), 1, lua_rawlen(L, -1), stdout);
  fflush(stdout);
  return 0;
}

static int prepl(lua_State *L) {
  int status;
  while ((status = loadline(L)) != ST_EOF) {
    if (status == ST_INTR) continue;
    if (status == LUA_OK) status = docall(L, 0, LUA_MULTRET, 1);
    if (status == LUA_OK && lua_gettop(L) > 0) {
      luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
      lua_pushcfunction(L, l_print);
      lua_insert(L, 1);
      status = docall(L, lua_gettop(L) - 1, 0, 1);
      if (status != LUA_OK) {
        l_message(NULL, lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1)));
        lua_pop(L, 2);
      }
    } else
      report(L, status, NULL);
  }
  lua_settop(L, 0);
  if (interactive) fputs("\n", stdout);
  fflush(stdout);
  return 0;
}

int mf_host_repl(lua_State *L) {
  struct sigaction old;
  int top = lua_gettop(L), status;
  interactive = isatty(0);
#ifdef MF_HAVE_READLINE
  if (interactive) rlopen(L);
#endif
  setsig(onint, &old);
  lua_pushcfunction(L, prepl);
  status = lua_pcall(L, 0, 0, 0);
  sigaction(SIGINT, &old, NULL);
#ifdef MF_HAVE_READLINE
  if (interactive) rlclose();
#endif
  if (status != LUA_OK) report(L, status, PROGNAME);
  lua_settop(L, top);
  return 0;
}

/* ======================================================================================
** The command line
** ====================================================================================== */

static void print_usage(FILE *f, const char *badoption) {
  if (badoption) {
    if (badoption[1] == 'e' || badoption[1] == 'l')
      fprintf(f, "%s: '%s' needs argument\n", PROGNAME, badoption);
    else
      fprintf(f, "%s: unrecognized option '%s'\n", PROGNAME, badoption);
  }
  fprintf(f,
          "usage: %s [options] [script [args]]\n"
          "Runs a Lua 5.4 script with moonflow loaded (globals mf, nn, optim), or the REPL.\n"
          "Available options are:\n"
          "  -e stat   execute string 'stat'\n"
          "  -i        enter interactive mode after executing 'script'\n"
          "  -l mod    require library 'mod' into global 'mod'\n"
          "  -l g=mod  require library 'mod' into global 'g'\n"
          "  -v        show the versions of moonflow, Lua, BLAS, CUDA and the devices found\n"
          "  -E        ignore environment variables (LUA_INIT, LUA_PATH, MOONFLOW_LUA_PATH)\n"
          "  -W        turn warnings on\n"
          "  -h        show this help\n"
          "  --        stop handling options\n"
          "  -         stop handling options and execute stdin as a script\n"
          "With no script and no -e, it starts the REPL (a pipe on stdin is read line by line).\n",
          PROGNAME);
  fflush(f);
}

/* The CUDA lines come from the CUDA backend's library (mf_cuda_versions loads it): the host
 * itself links no CUDA library. */
static void print_version(void) {
  int i, n = mf_cuda_device_count();
  int rt = 0, drv = 0, dnn = 0;
  printf("moonflow %s\n", MF_VERSION);
  printf("%s\n", LUA_COPYRIGHT);
  printf("BLAS: %s\n", mf_blas_info());
  if (mf_cuda_versions(&rt, &drv, &dnn) == MF_OK) {
    printf("CUDA: runtime %d.%d, ", rt / 1000, (rt % 1000) / 10);
    if (drv)
      printf("driver %d.%d", drv / 1000, (drv % 1000) / 10);
    else
      printf("no driver");
    if (dnn)
      printf(", cuDNN %d.%d.%d", dnn / 10000, (dnn % 10000) / 100, dnn % 100);
    else
      printf(", no cuDNN");
    printf("\n");
  } else {
    const char *e = mf_error(); /* "cuda: <why>" */
    printf("CUDA: %s\n", strncmp(e, "cuda: ", 6) == 0 ? e + 6 : e);
  }
  printf("devices: cpu");
  for (i = 0; i < n; i++) printf(", cuda:%d", i);
  printf("\n");
  /* one line per GPU with its memory, or why there is none */
  for (i = 0; i < n; i++) {
    char name[256];
    size_t bytes;
    int major, minor;
    if (mf_cuda_device_info(i, name, sizeof name, &bytes, &major, &minor) == MF_OK)
      printf("  cuda:%d: %s, %.1f GiB, sm_%d%d\n", i, name,
             (double)bytes / (1024.0 * 1024.0 * 1024.0), major, minor);
    else
      printf("  cuda:%d: %s\n", i, mf_error());
  }
  if (n == 0) {
    char why[1024];
    if (mf_cuda_unavailable(0, why, sizeof why))
      printf("GPUs: none (%s)\n", why);
    else
      printf("GPUs: none\n");
  }
  fflush(stdout);
}

/* One line for interactive sessions. */
static void print_banner(lua_State *L) {
  static const char *const names[] = {"mf", "nn", "optim"};
  char loaded[64] = "";
  int i, n = 0;
  for (i = 0; i < 3; i++) {
    if (lua_getglobal(L, names[i]) != LUA_TNIL) {
      if (n++) strcat(loaded, ", ");
      strcat(loaded, names[i]);
    }
    lua_pop(L, 1);
  }
  printf("moonflow %s (%s, %s)", MF_VERSION, LUA_RELEASE, mf_blas_info());
  if (n) printf(" \xe2\x80\x94 %s %s loaded", loaded, n > 1 ? "are" : "is");
  printf("\n");
  fflush(stdout);
}

/* arg: the script at index 0, its arguments after, the interpreter's before (negative). */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  int i, narg;
  if (script == argc) script = 0; /* no script name */
  narg = argc - (script + 1);
  lua_createtable(L, narg, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0, 1);
  return report(L, status, PROGNAME);
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* -l mod: global mod = require "mod"; -l g=mod: global g. */
static int dolibrary(lua_State *L, char *spec) {
  int status;
  char *eq = strchr(spec, '=');
  const char *mod = eq ? eq + 1 : spec;
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  status = docall(L, 1, 1, 1);
  if (status == LUA_OK) {
    if (eq)
      lua_pushlstring(L, spec, (size_t)(eq - spec));
    else
      lua_pushstring(L, spec);
    lua_insert(L, -2);
    lua_setglobal(L, lua_tostring(L, -2));
    lua_pop(L, 1);
  }
  return report(L, status, PROGNAME);
}

static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dochunk(L, luaL_loadfile(L, init + 1));
  return dostring(L, init, name);
}

#define has_error 1 /* bad option */
#define has_i 2     /* -i */
#define has_v 4     /* -v */
#define has_e 8     /* -e */
#define has_E 16    /* -E */
#define has_h 32    /* -h */

/* Scans the options; *first is the index of the script (argc when none) or of a bad option. */
static int collectargs(char **argv, int *first) {
  int args = 0, i;
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args; /* the script */
    switch (argv[i][1]) {
    case '-':
      if (strcmp(argv[i], "--help") == 0) {
        args |= has_h;
        break;
      }
      if (argv[i][2] != '\0') return has_error;
      *first = i + 1;
      return args;
    case '\0': return args; /* '-': stdin is the script */
    case 'E':
    case 'W':
    case 'h':
    case 'i':
    case 'v':
      if (argv[i][2] != '\0') return has_error;
      switch (argv[i][1]) {
      case 'E': args |= has_E; break;
      case 'h': args |= has_h; break;
      case 'i': args |= has_i; break;
      case 'v': args |= has_v; break;
      }
      break;
    case 'e': args |= has_e; /* FALLTHROUGH */
    case 'l':
      if (argv[i][2] == '\0') {
        i++;
        if (argv[i] == NULL || argv[i][0] == '-') return has_error;
      }
      break;
    default: return has_error;
    }
  }
  *first = i;
  return args;
}

/* Runs -e, -l and -W in their order. Returns 0 when one raised an error. */
static int runargs(lua_State *L, char **argv, int n) {
  int i;
  for (i = 1; i < n; i++) {
    int option = argv[i][1];
    if (argv[i][0] != '-') continue;
    if (option == 'e' || option == 'l') {
      char *extra = argv[i] + 2;
      int status;
      if (*extra == '\0') extra = argv[++i];
      status = option == 'e' ? dostring(L, extra, "=(command line)") : dolibrary(L, extra);
      if (status != LUA_OK) return 0;
    } else if (option == 'W')
      lua_warning(L, "@on", 0);
  }
  return 1;
}

/* Everything after the options are checked, in protected mode. Returns true on success. */
static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int script = (int)lua_tointeger(L, 3);
  int args = (int)lua_tointeger(L, 4);
  int repl = (args & has_i) || (script == argc && !(args & (has_e | has_v)));
  if (repl && isatty(0)) print_banner(L);
  createargtable(L, argv, argc, script);
  if (!(args & has_E) && handle_luainit(L) != LUA_OK) return 0;
  if (!runargs(L, argv, script)) return 0;
  if (script < argc) { /* the script, '-' being stdin unless after '--' */
    const char *fname = argv[script];
    if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0) fname = NULL;
    if (report(L, runfile(L, fname, 1), PROGNAME) != LUA_OK) return 0;
  }
  if (repl) mf_host_repl(L); /* a terminal, or lines piped in */
  lua_pushboolean(L, 1);
  return 1;
}

int mf_host_main(int argc, char **argv) {
  static char *noargv[] = {PROGNAME, NULL};
  int script = 0, args, status, ok;
  lua_State *L;
  if (argc < 1 || argv == NULL || argv[0] == NULL) {
    argc = 1;
    argv = noargv;
  }
  args = collectargs(argv, &script);
  if (args == has_error) {
    print_usage(stderr, argv[script]);
    return 1;
  }
  if (args & has_h) {
    print_usage(stdout, NULL);
    return 0;
  }
  if (args & has_v) print_version();
  if ((args & has_v) && script == argc && !(args & (has_e | has_i))) return 0; /* just -v */
  L = newstate(args & has_E);
  if (L == NULL) {
    l_message(PROGNAME, newerr);
    return 1;
  }
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushinteger(L, script);
  lua_pushinteger(L, args);
  status = lua_pcall(L, 4, 1, 0);
  ok = lua_toboolean(L, -1);
  report(L, status, PROGNAME);
  lua_close(L);
  return (status == LUA_OK && ok) ? 0 : 1;
}
