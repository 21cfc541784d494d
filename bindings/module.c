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

/* The GPU index argument of the mf.cuda.* functions: a device spec ("cuda:1") or a number
 * (default 0). */
static int gpu_arg(lua_State *L, int arg, const char *fname) {
  if (lua_isnoneornil(L, arg)) return 0;
  if (lua_type(L, arg) == LUA_TSTRING) {
    mf_device_type kind;
    int index;
    if (mf_device_parse(lua_tostring(L, arg), &kind, &index) != MF_OK)
      return luaL_error(L, "cuda.%s: %s", fname, mf_error());
    if (kind != MF_DEV_CUDA)
      return luaL_error(L, "cuda.%s: '%s' is not a CUDA device", fname, lua_tostring(L, arg));
    return index;
  }
  lua_Integer i = luaL_checkinteger(L, arg);
  if (i < 0 || i > 1024)
    return luaL_error(L, "cuda.%s: bad GPU index %I (expected 0, 1, ...)", fname, (LUAI_UACINT)i);
  return (int)i;
}

/* mf.cuda.memory_allocated([i]), max_memory_allocated([i]), memory_reserved([i]): bytes; 0
 * without a GPU. */
static int c_memory_allocated(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mf_cuda_memory_allocated(gpu_arg(L, 1, "memory_allocated")));
  return 1;
}

static int c_max_memory_allocated(lua_State *L) {
  int i = gpu_arg(L, 1, "max_memory_allocated");
  lua_pushinteger(L, (lua_Integer)mf_cuda_max_memory_allocated(i));
  return 1;
}

static int c_memory_reserved(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mf_cuda_memory_reserved(gpu_arg(L, 1, "memory_reserved")));
  return 1;
}

static int c_empty_cache(lua_State *L) {
  (void)L;
  mf_cuda_empty_cache();
  return 0;
}

/* mf.cuda.set_memory_fraction(f [, i]): caps what moonflow holds on GPU i (every GPU when i is
 * omitted) at f of its memory (TensorFlow's per_process_gpu_memory_fraction). */
static int c_set_memory_fraction(lua_State *L) {
  lua_Number f = luaL_checknumber(L, 1);
  int i = lua_isnoneornil(L, 2) ? -1 : gpu_arg(L, 2, "set_memory_fraction");
  mf_status s = mf_cuda_set_memory_fraction(i, (double)f);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* mf.cuda.reserve_memory([i]) -> bytes: takes GPU i's memory fraction up front (every GPU when i
 * is omitted; TensorFlow's allow_growth = false, which a Session config asks for); 0 without a
 * GPU. */
static int c_reserve_memory(lua_State *L) {
  int i = lua_isnoneornil(L, 1) ? -1 : gpu_arg(L, 1, "reserve_memory");
  size_t bytes = 0;
  mf_status s = mf_cuda_reserve_memory(i, &bytes);
  if (s != MF_OK) return lmf_error(L, s);
  lua_pushinteger(L, (lua_Integer)bytes);
  return 1;
}

/* mf.cuda.profile([on = true]): starts (a fresh) or stops the per-op GPU time profile. */
static int c_profile(lua_State *L) {
  bool on = lua_isnoneornil(L, 1) ? true : lua_toboolean(L, 1);
  mf_status s = mf_cuda_profile(on);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* mf.cuda.profile_report() -> {{op =, calls =, ms =}, ...}: the ops the profile saw, the most GPU
 * time first (waits for the GPU work it timed). */
static int c_profile_report(lua_State *L) {
  int64_t calls[MF_OP_COUNT];
  double ms[MF_OP_COUNT];
  int order[MF_OP_COUNT], n = 0;
  for (int op = 0; op < MF_OP_COUNT; op++) {
    mf_status s = mf_cuda_profile_read((mf_op)op, &calls[op], &ms[op]);
    if (s != MF_OK) return lmf_error(L, s);
    if (calls[op] == 0) continue;
    int k = n++; /* insertion by ms, descending */
    while (k > 0 && ms[order[k - 1]] < ms[op]) {
      order[k] = order[k - 1];
      k--;
    }
    order[k] = op;
  }
  lua_createtable(L, n, 0);
  for (int k = 0; k < n; k++) {
    lua_createtable(L, 0, 3);
    lua_pushstring(L, mf_op_name((mf_op)order[k]));
    lua_setfield(L, -2, "op");
    lua_pushinteger(L, (lua_Integer)calls[order[k]]);
    lua_setfield(L, -2, "calls");
    lua_pushnumber(L, ms[order[k]]);
    lua_setfield(L, -2, "ms");
    lua_rawseti(L, -2, k + 1);
  }
  return 1;
}

/* mf.cuda.set_tf32(on) -> the previous setting. */
static int c_set_tf32(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  lua_pushboolean(L, mf_cuda_set_tf32(lua_toboolean(L, 1)));
  return 1;
}

/* mf.cuda.why_unavailable([i]) -> nil when "cuda:i" can be used, else why not (no driver, no GPU,
 * CUDA_VISIBLE_DEVICES, the backend library missing, no such index). */
static int c_why_unavailable(lua_State *L) {
  char why[1024];
  if (!mf_cuda_unavailable(gpu_arg(L, 1, "why_unavailable"), why, sizeof why)) return 0;
  lua_pushstring(L, why);
  return 1;
}

/* mf.cuda.versions() -> {runtime =, driver =, cudnn =} (1000 major + 10 minor; driver 0: none;
 * cudnn as cudnnGetVersion(), 0: built without cuDNN), or nil and why without the backend. */
static int c_versions(lua_State *L) {
  int rt = 0, drv = 0, dnn = 0;
  if (mf_cuda_versions(&rt, &drv, &dnn) != MF_OK) {
    lua_pushnil(L);
    lua_pushstring(L, mf_error());
    return 2;
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, rt);
  lua_setfield(L, -2, "runtime");
  lua_pushinteger(L, drv);
  lua_setfield(L, -2, "driver");
  lua_pushinteger(L, dnn);
  lua_setfield(L, -2, "cudnn");
  return 1;
}

/* mf.cuda.get_device_properties([i]) -> {name =, total_memory =, major =, minor =}, as PyTorch's */
static int c_get_device_properties(lua_State *L) {
  int i = gpu_arg(L, 1, "get_device_properties");
  char name[256];
  size_t bytes = 0;
  int major = 0, minor = 0;
  mf_status s = mf_cuda_device_info(i, name, sizeof name, &bytes, &major, &minor);
  if (s != MF_OK) return lmf_error(L, s);
  lua_createtable(L, 0, 4);
  lua_pushstring(L, name);
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, (lua_Integer)bytes);
  lua_setfield(L, -2, "total_memory");
  lua_pushinteger(L, major);
  lua_setfield(L, -2, "major");
  lua_pushinteger(L, minor);
  lua_setfield(L, -2, "minor");
  return 1;
}

static int c_is_available(lua_State *L) {
  lua_pushboolean(L, mf_cuda_device_count() > 0);
  return 1;
}

static int c_device_count(lua_State *L) {
  lua_pushinteger(L, mf_cuda_device_count());
  return 1;
}

/* mf.cuda.synchronize([i]): waits for GPU i's queued work; nothing to wait for without a GPU. */
static int c_synchronize(lua_State *L) {
  int i = gpu_arg(L, 1, "synchronize");
  if (mf_cuda_device_count() == 0) return 0;
  lua_pushfstring(L, "cuda:%d", i);
  mf_device *d = lmf_checkdevice(L, lua_gettop(L), "synchronize");
  mf_status s = mf_device_synchronize(d);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static const luaL_Reg funcs[] = {
    {"set_num_threads", m_set_num_threads},
    {"get_num_threads", m_get_num_threads},
    {"clock", m_clock},
    {"storage_bytes", m_storage_bytes},
    {"blas_info", m_blas_info},
    {"list_devices", m_list_devices},
    {"_set_default_device", m_set_default_device},
    {"get_default_device", m_get_default_device},
    {"_parse_device", m_parse_device},
    {NULL, NULL},
};

static const luaL_Reg cuda[] = {
    {"is_available", c_is_available},
    {"device_count", c_device_count},
    {"synchronize", c_synchronize},
    {"memory_allocated", c_memory_allocated},
    {"max_memory_allocated", c_max_memory_allocated},
    {"memory_reserved", c_memory_reserved},
    {"empty_cache", c_empty_cache},
    {"set_memory_fraction", c_set_memory_fraction},
    {"reserve_memory", c_reserve_memory},
    {"profile", c_profile},
    {"profile_report", c_profile_report},
    {"set_tf32", c_set_tf32},
    {"why_unavailable", c_why_unavailable},
    {"versions", c_versions},
    {"get_device_properties", c_get_device_properties},
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
  luaL_newlib(L, cuda);
  lua_setfield(L, mod, "cuda");
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
