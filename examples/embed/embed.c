/* embed.c — a C program that embeds moonflow through moonflow_host.h: it makes a host state, runs
 * Lua code that builds tensors, reads the result back in C, calls a Lua function it defined with C
 * arguments, and shows what an error looks like (message and traceback) without ending the program.
 *
 * Build: the CMake target embed_example (build/embed_example), or against an installed moonflow
 * as examples/embed/README.md says. */
#include <stdio.h>

#include "moonflow_host.h"

int main(void) {
  lua_State *L = mf_host_new(); /* standard libraries + globals mf, nn, optim */
  if (L == NULL) {
    fprintf(stderr, "embed: %s\n", mf_host_error(NULL));
    return 1;
  }

  /* 1. Run a chunk and read its result: results stay on the Lua stack. */
  if (mf_host_dostring(L,
                       "local a = mf.ones{2, 3}\n"
                       "local b = a * 2\n"
                       "return b:sum():item(), #b:shape()",
                       "=embed") != 0) {
    fprintf(stderr, "embed: %s\n", mf_host_error(L));
    mf_host_close(L);
    return 1;
  }
  printf("sum of 2 * ones{2,3} = %g (a %d-d tensor)\n", lua_tonumber(L, -2),
         (int)lua_tointeger(L, -1));
  lua_pop(L, 2);

  /* 2. Define a Lua function once, then call it from C with C values. */
  if (mf_host_dostring(L, "function scaled_sum(n, k) return (mf.ones{n} * k):sum():item() end",
                       "=embed") != 0) {
    fprintf(stderr, "embed: %s\n", mf_host_error(L));
    mf_host_close(L);
    return 1;
  }
  lua_getglobal(L, "scaled_sum");
  lua_pushinteger(L, 4);
  lua_pushnumber(L, 2.5);
  if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
    fprintf(stderr, "embed: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  } else {
    printf("scaled_sum(4, 2.5) = %g\n", lua_tonumber(L, -1));
    lua_pop(L, 1);
  }

  /* 3. Errors come back as a status; the message has a traceback; the state stays usable. */
  if (mf_host_dostring(L, "local t = mf.ones{2, 3}\nreturn t:no_such_method()", "=broken") != 0)
    printf("error caught in C:\n%s\n", mf_host_error(L));

  if (mf_host_dostring(L, "return 'still alive'", NULL) == 0) {
    printf("%s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
  }

  mf_host_close(L);
  return 0;
}
