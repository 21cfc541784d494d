/* cuda.c — mf.cuda: whether and which GPUs there are, their memory (what moonflow holds, the
 * cap, the reservation, the driver's view), synchronisation, TF32, the per-op profile, versions
 * and properties, and cuda.Event for timing GPU work (PyTorch's torch.cuda names). A GPU
 * argument is an index or a spec ("cuda:1"); left out, it is the current GPU: the default device
 * when that is a GPU (mf.device's scope), else cuda:0. */
#include "lmf.h"

/* The GPU of the default device (mf.device's scope) when it is one, else 0: PyTorch's current
 * device. */
static int current_gpu(lua_State *L) {
  int index = 0;
  mf_device_type kind;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LMF_DEVICE) == LUA_TSTRING &&
      mf_device_parse(lua_tostring(L, -1), &kind, &index) == MF_OK && kind != MF_DEV_CUDA)
    index = 0;
  lua_pop(L, 1);
  return index;
}

/* The GPU index argument of the mf.cuda.* functions: a device spec ("cuda:1") or a number
 * (default: the current GPU, current_gpu). */
static int gpu_arg(lua_State *L, int arg, const char *fname) {
  if (lua_isnoneornil(L, arg)) return current_gpu(L);
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

/* mf.cuda.reset_peak_memory_stats([i]): max_memory_allocated(i) starts again from
 * memory_allocated(i). */
static int c_reset_peak_memory_stats(lua_State *L) {
  mf_cuda_reset_peak_memory_stats(gpu_arg(L, 1, "reset_peak_memory_stats"));
  return 0;
}

/* mf.cuda.mem_get_info([i]) -> free, total: GPU i's memory in bytes as the driver sees it (every
 * process's use counted), as PyTorch's. */
static int c_mem_get_info(lua_State *L) {
  size_t fr = 0, tot = 0;
  mf_status s = mf_cuda_mem_get_info(gpu_arg(L, 1, "mem_get_info"), &fr, &tot);
  if (s != MF_OK) return lmf_error(L, s);
  lua_pushinteger(L, (lua_Integer)fr);
  lua_pushinteger(L, (lua_Integer)tot);
  return 2;
}

/* GPU arg 1's properties (fname: for messages), or a Lua error */
static void device_info(lua_State *L, const char *fname, char *name, size_t n, size_t *bytes,
                        int *major, int *minor) {
  mf_status s = mf_cuda_device_info(gpu_arg(L, 1, fname), name, n, bytes, major, minor);
  if (s != MF_OK) lmf_error(L, s);
}

/* mf.cuda.get_device_properties([i]) -> {name =, total_memory =, major =, minor =}, as PyTorch's */
static int c_get_device_properties(lua_State *L) {
  char name[256];
  size_t bytes;
  int major, minor;
  device_info(L, "get_device_properties", name, sizeof name, &bytes, &major, &minor);
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

/* mf.cuda.get_device_name([i]) -> "NVIDIA H100 80GB HBM3"; get_device_capability([i]) -> major,
 * minor. */
static int c_get_device_name(lua_State *L) {
  char name[256];
  size_t bytes;
  int major, minor;
  device_info(L, "get_device_name", name, sizeof name, &bytes, &major, &minor);
  lua_pushstring(L, name);
  return 1;
}

static int c_get_device_capability(lua_State *L) {
  char name[256];
  size_t bytes;
  int major, minor;
  device_info(L, "get_device_capability", name, sizeof name, &bytes, &major, &minor);
  lua_pushinteger(L, major);
  lua_pushinteger(L, minor);
  return 2;
}

/* mf.cuda.manual_seed(seed), manual_seed_all(seed): mf.manual_seed. One Philox generator serves
 * every device (a seed gives the same random tensors and dropout masks on the CPU and each GPU),
 * so seeding "the GPUs" seeds it. */
static int c_manual_seed(lua_State *L) {
  mf_manual_seed((uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

/* ---- mf.cuda.Event ------------------------------------------------------------------------ */

#define EVENT "moonflow.cuda.Event"

typedef struct levent {
  mf_cuda_event *ev; /* NULL once closed */
  int device;
  bool timing;
} levent;

static mf_cuda_event *checkevent(lua_State *L, int arg) {
  levent *u = (levent *)luaL_checkudata(L, arg, EVENT);
  if (!u->ev) luaL_error(L, "cuda.Event: the event is closed");
  return u->ev;
}

/* mf.cuda.Event([{enable_timing = false, device = current GPU}]): a new event of that GPU */
static int c_event(lua_State *L) {
  bool timing = false;
  int device;
  if (lua_isnoneornil(L, 1)) {
    device = current_gpu(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "enable_timing");
    timing = lua_toboolean(L, -1);
    lua_getfield(L, 1, "device");
    device = gpu_arg(L, lua_gettop(L), "Event");
    lua_settop(L, 1);
  }
  levent *u = (levent *)lua_newuserdatauv(L, sizeof *u, 0);
  u->ev = NULL; /* closed: __gc is safe whatever happens next */
  luaL_setmetatable(L, EVENT);
  u->device = device;
  u->timing = timing;
  mf_status s = mf_cuda_event_new(device, timing, &u->ev);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* e:record(): records the event on its GPU's stream, after the work queued so far; returns e */
static int e_record(lua_State *L) {
  mf_status s = mf_cuda_event_record(checkevent(L, 1));
  if (s != MF_OK) return lmf_error(L, s);
  lua_settop(L, 1);
  return 1;
}

/* e:query() -> whether the work queued before the record has run (true when never recorded) */
static int e_query(lua_State *L) {
  bool done = true;
  mf_status s = mf_cuda_event_query(checkevent(L, 1), &done);
  if (s != MF_OK) return lmf_error(L, s);
  lua_pushboolean(L, done);
  return 1;
}

/* e:synchronize(): waits on the host until the work queued before the record has run */
static int e_synchronize(lua_State *L) {
  mf_status s = mf_cuda_event_synchronize(checkevent(L, 1));
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* start:elapsed_time(stop) -> milliseconds of GPU time between the two records (waits for them) */
static int e_elapsed_time(lua_State *L) {
  mf_cuda_event *a = checkevent(L, 1), *b = checkevent(L, 2);
  double ms = 0;
  mf_status s = mf_cuda_event_elapsed_time(a, b, &ms);
  if (s != MF_OK) return lmf_error(L, s);
  lua_pushnumber(L, ms);
  return 1;
}

static int e_gc(lua_State *L) {
  levent *u = (levent *)luaL_checkudata(L, 1, EVENT);
  mf_cuda_event_free(u->ev);
  u->ev = NULL;
  return 0;
}

static int e_tostring(lua_State *L) {
  levent *u = (levent *)luaL_checkudata(L, 1, EVENT);
  lua_pushfstring(L, "cuda.Event(cuda:%d%s%s)", u->device, u->timing ? ", timing" : "",
                  u->ev ? "" : ", closed");
  return 1;
}

static const luaL_Reg event_methods[] = {
    {"record", e_record},
    {"query", e_query},
    {"synchronize", e_synchronize},
    {"elapsed_time", e_elapsed_time},
    {"close", e_gc},
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
    {"get_device_name", c_get_device_name},
    {"get_device_capability", c_get_device_capability},
    {"reset_peak_memory_stats", c_reset_peak_memory_stats},
    {"mem_get_info", c_mem_get_info},
    {"Event", c_event},
    {"manual_seed", c_manual_seed},
    {"manual_seed_all", c_manual_seed},
    {NULL, NULL},
};

void lmf_open_cuda(lua_State *L, int mod) {
  luaL_newlib(L, cuda);
  lua_setfield(L, mod, "cuda");
  luaL_newmetatable(L, EVENT);
  luaL_newlib(L, event_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, e_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, e_gc);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, e_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}
