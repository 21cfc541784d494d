/* module.c — luaopen_moonflow_core: builds the module table of `require "moonflow.core"` from the
 * binding files (each adds its functions and tensor methods), plus threads, the clock, versions
 * and devices. lua/moonflow/init.lua wraps it as `require "moonflow"`. */
#include <time.h>

#include "lmf.h"

/* ---- threads, clock, devices ------------------------------------------------------------- */

static int m_set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 1 || n > 4096)
    return luaL_error(L, "set_num_threads: expected a count in 1..4096, got %I", (LUAI_UACINT)n);
  mf_set_num_threads((int)n);
  return 0;
}

static int m_get_num_threads(lua_State *L) {
  lua_pushinteger(L, mf_get_num_threads());
  return 1;
}

/* mf.storage_bytes(): bytes held by live tensor storages on every device (tensors Lua has not
 * collected yet included). */
static int m_storage_bytes(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mf_storage_bytes());
  return 1;
}

/* mf.storage_count(): how many tensor storages are live (tensors Lua has not collected yet
 * included; views share one). */
static int m_storage_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mf_storage_count());
  return 1;
}

/* mf.clock(): monotonic wall time in seconds (for timing, not dates). */
static int m_clock(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int m_blas_info(lua_State *L) {
  lua_pushstring(L, mf_blas_info());
  return 1;
}

/* mf.list_devices() -> {"cpu", "cuda:0", ...} */
static int m_list_devices(lua_State *L) {
  int n = mf_cuda_device_count();
  lua_createtable(L, n + 1, 0);
  lua_pushstring(L, mf_device_name(mf_cpu()));
  lua_rawseti(L, -2, 1);
  for (int i = 0; i < n; i++) {
    lua_pushfstring(L, "cuda:%d", i);
    lua_rawseti(L, -2, i + 2);
  }
  return 1;
}

/* mf._set_default_device(spec | nil): the device of new tensors (checked now). Returns the
 * previous spec. The Lua side builds mf.device(spec, fn) on this. */
static int m_set_default_device(lua_State *L) {
  if (!lua_isnil(L, 1)) lmf_checkdevice(L, 1, "device");
  lua_getfield(L, LUA_REGISTRYINDEX, LMF_DEVICE);
  lua_pushvalue(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMF_DEVICE);
  return 1;
}

static int m_get_default_device(lua_State *L) {
  mf_device *d = lmf_default_device(L, "device");
  lua_pushstring(L, mf_device_name(d ? d : mf_cpu()));
  return 1;
}

/* mf._parse_device(spec) -> "cpu" | "cuda:N", "cpu" | "cuda", N: the spec read without opening
 * the device (graph placement names GPUs a machine may lack); a malformed spec is an error. */
static int m_parse_device(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING)
    return luaL_error(L,
                      "device: a device spec (a string such as \"cpu\", \"cuda:0\" or "
                      "\"/gpu:0\") is needed, got %s",
                      luaL_typename(L, 1));
  mf_device_type kind;
  int index;
  mf_status s = mf_device_parse(lua_tostring(L, 1), &kind, &index);
  if (s != MF_OK) return lmf_error(L, s);
  if (kind == MF_DEV_CPU && index != 0)
    return luaL_error(L, "device: there is only one CPU device (cpu:0), not '%s'",
                      lua_tostring(L, 1));
  if (kind == MF_DEV_CPU)
    lua_pushliteral(L, "cpu");
  else
    lua_pushfstring(L, "cuda:%d", index);
  lua_pushstring(L, kind == MF_DEV_CPU ? "cpu" : "cuda");
  lua_pushinteger(L, index);
  return 3;
}

static const luaL_Reg funcs[] = {
    {"set_num_threads", m_set_num_threads},
    {"get_num_threads", m_get_num_threads},
    {"clock", m_clock},
    {"storage_bytes", m_storage_bytes},
    {"storage_count", m_storage_count},
    {"blas_info", m_blas_info},
    {"list_devices", m_list_devices},
    {"_set_default_device", m_set_default_device},
    {"get_default_device", m_get_default_device},
    {"_parse_device", m_parse_device},
    {NULL, NULL},
};

LUAMOD_API int luaopen_moonflow_core(lua_State *L) {
  luaL_checkversion(L);
  lua_newtable(L); /* the module */
  int mod = lua_gettop(L);
  lua_newtable(L); /* the tensor methods */
  int meth = lua_gettop(L);
  lmf_open_tensor(L, mod, meth); /* first: makes the metatable */
  lmf_open_index(L, mod, meth);
  lmf_open_create(L, mod, meth);
  lmf_open_math(L, mod, meth);
  lmf_open_reduce(L, mod, meth);
  lmf_open_shape(L, mod, meth);
  lmf_open_convert(L, mod, meth);
  lmf_open_autograd(L, mod, meth);
  lmf_open_io(L, mod, meth);
  lmf_open_optim(L, mod, meth);
  lmf_open_nn(L, mod, meth);
  lmf_open_summary(L, mod, meth);
  lmf_open_serialize(L, mod, meth);
  lua_pop(L, 1);
  lmf_setfuncs(L, mod, funcs);
  lmf_open_cuda(L, mod);
  lmf_reclaim_sentinel(L);
  lua_pushliteral(L, MF_VERSION);
  lua_setfield(L, mod, "version");
  /* The tables of C functions one level down (mf.Tensor.shape, mf._nn.conv2d, ...) are entered
   * in package.loaded as "moonflow.Tensor", ...: a C function called from C (mf.no_grad(fn),
   * pcall(fn), a comparator) has no name of its own, and lauxlib's argument errors then search
   * package.loaded for one instead of naming '?'. */
  static const char *const subtables[] = {"Tensor", "_nn",      "_optim", "io",
                                          "_image", "_summary", "cuda",   NULL};
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  for (const char *const *name = subtables; *name; name++) {
    if (lua_getfield(L, mod, *name) == LUA_TTABLE) {
      lua_pushfstring(L, "moonflow.%s", *name);
      lua_insert(L, -2);
      lua_rawset(L, -3);
    } else {
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  return 1;
}
