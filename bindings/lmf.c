/* lmf.c — the binding helpers declared in lmf.h: tensor userdata slots, checks and conversions
 * of Lua values to tensors, dims, indices, shapes, dtypes, devices and creation options, and
 * errors carrying the core's message. */
#include <string.h>

#include "lmf.h"

/* ---- the userdata ----------------------------------------------------------------------- */

/* Lua sees only the small userdata, not the storage behind it, so left alone its collector would
 * let dead tensors pile up (and every new tensor would take fresh pages from the system). So
 * moonflow collects when live storage has grown by a quarter of what the last collection left (and
 * by at least 16 MiB): the freed blocks go back to the caching allocator and the next tensors
 * reuse them.
 *
 * A full collection traverses the whole Lua heap (about 150 us with moonflow's modules loaded),
 * which a training loop would pay every step or two. So first a collector step: in generational
 * mode (lua.c's, and the moonflow host's) that is a young collection, which visits only what was
 * made since the last one, and a step's dead tensors are young. A full collection follows when
 * live storage is still more than a quarter above what the last full one left: in generational
 * mode dead tensors that had grown old, in incremental mode (an embedder's choice, where one step
 * frees little) nearly always.
 *
 * The number of live storages counts the same way (by a quarter, and at least 1024): small
 * tensors barely move the bytes, yet each holds a block (512 bytes at least on a GPU). A loop's
 * `loss`, kept from one step to the next, outlives two young collections, grows old and then
 * waits for a full one; without the count, a new block a step or two until 16 MiB of them had
 * piled up, each a cudaMalloc on a GPU.
 *
 * A device whose memory runs tight (an allocation failed, or a GPU nearly full: see
 * mf_memory_pressure_take) asks for a full collection at once, whatever the growth: near the limit
 * even a small share of dead tensors can make an op fail. */
#define MIB16 ((size_t)16 << 20)

static size_t grown(size_t base) { return base + (base / 4 > MIB16 ? base / 4 : MIB16); }
static size_t grown_count(size_t n) { return n + (n / 4 > 1024 ? n / 4 : 1024); }

static void collect_if_needed(lua_State *L) {
  static size_t threshold = MIB16, after_full = 0, count_threshold = 1024, count_after_full = 0;
  if (mf_memory_pressure_take()) {
    lua_gc(L, LUA_GCCOLLECT);
    after_full = mf_storage_bytes(), count_after_full = mf_storage_count();
    threshold = grown(after_full), count_threshold = grown_count(count_after_full);
    return;
  }
  if (mf_storage_bytes() < threshold && mf_storage_count() < count_threshold) return;
  lua_gc(L, LUA_GCSTEP, 0);
  size_t live = mf_storage_bytes(), n = mf_storage_count();
  if (live > grown(after_full) || n > grown_count(count_after_full)) {
    lua_gc(L, LUA_GCCOLLECT);
    live = after_full = mf_storage_bytes();
    n = count_after_full = mf_storage_count();
  }
  threshold = grown(live), count_threshold = grown_count(n);
}

/* A failed allocation's full collection (mf_set_reclaim), in the state of the op that asked: set
 * for the calling OS thread when a slot is made from another Lua thread than last time, cleared
 * when that state closes (lmf_reclaim_sentinel). */
static _Thread_local lua_State *hooked_L, *hooked_main;

static void reclaim(void *main) { lua_gc((lua_State *)main, LUA_GCCOLLECT); }

static lua_State *main_of(lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *m = lua_tothread(L, -1);
  lua_pop(L, 1);
  return m;
}

static int unhook(lua_State *L) {
  if (hooked_main == main_of(L)) {
    mf_set_reclaim(NULL, NULL);
    hooked_L = hooked_main = NULL;
  }
  return 0;
}

void lmf_reclaim_sentinel(lua_State *L) {
  lmf_newgcdata(L, 1, "moonflow.reclaim", unhook);
  lua_rawsetp(L, LUA_REGISTRYINDEX, (void *)unhook);
}

const char lmf_key_tensor[1], lmf_key_methods[1], lmf_key_getters[1];

mf_tensor **lmf_newslot(lua_State *L) {
  if (L != hooked_L) {
    hooked_L = L, hooked_main = main_of(L);
    mf_set_reclaim(reclaim, hooked_main);
  }
  collect_if_needed(L);
  mf_tensor **p = (mf_tensor **)lua_newuserdatauv(L, sizeof(mf_tensor *), 1);
  *p = NULL; /* closed: __gc is safe whatever happens next */
  lua_rawgetp(L, LUA_REGISTRYINDEX, lmf_key_tensor);
  lua_setmetatable(L, -2);
  return p;
}

void *lmf_newgcdata(lua_State *L, size_t size, const char *mt, lua_CFunction gc) {
  void *p = lua_newuserdatauv(L, size, 0);
  memset(p, 0, size);
  if (luaL_newmetatable(L, mt)) {
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return p;
}

void lmf_push(lua_State *L, mf_tensor *t) {
  mf_tensor **p = lmf_newslot(L);
  *p = t;
}

/* luaL_testudata, with the metatable read by address */
mf_tensor **lmf_testslot(lua_State *L, int idx) {
  void *p = lua_touserdata(L, idx);
  if (!p || !lua_getmetatable(L, idx)) return NULL;
  lua_rawgetp(L, LUA_REGISTRYINDEX, lmf_key_tensor);
  bool same = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return same ? (mf_tensor **)p : NULL;
}

mf_tensor **lmf_checkslot(lua_State *L, int idx) {
  mf_tensor **p = lmf_testslot(L, idx);
  if (!p) luaL_typeerror(L, idx, LMF_TENSOR); /* luaL_checkudata's message */
  return p;
}

mf_tensor *lmf_check(lua_State *L, int idx) {
  mf_tensor **p = lmf_checkslot(L, idx);
  if (*p == NULL) luaL_error(L, "tensor is closed");
  return *p;
}

mf_tensor *lmf_test(lua_State *L, int idx) {
  mf_tensor **p = lmf_testslot(L, idx);
  if (p == NULL) return NULL;
  if (*p == NULL) luaL_error(L, "tensor is closed");
  return *p;
}

/* The current function's name for messages ("add", "mul"). A function called from C (pcall(fn),
 * mf.no_grad(fn)) has no name from its call: it is looked up, as lauxlib's argument errors do, in
 * the moonflow tables of package.loaded ("moonflow.Tensor.add"); the name is anchored in the
 * registry until the next such lookup. */
static const char *fname_of(lua_State *L) {
  lua_Debug ar;
  if (!lua_getstack(L, 0, &ar)) return "a moonflow function";
  if (lua_getinfo(L, "n", &ar) && ar.name) return ar.name;
  int top = lua_gettop(L);
  const char *found = NULL;
  lua_getinfo(L, "f", &ar); /* the function */
  int fn = lua_gettop(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_pushnil(L);
  while (!found && lua_next(L, -2)) { /* module name, module */
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE &&
        strncmp(lua_tostring(L, -2), "moonflow", 8) == 0) {
      lua_pushnil(L);
      while (lua_next(L, -2)) { /* field name, value */
        if (lua_type(L, -2) == LUA_TSTRING && lua_rawequal(L, -1, fn)) {
          lua_pushfstring(L, "%s.%s", lua_tostring(L, -4), lua_tostring(L, -2));
          lua_pushvalue(L, -1);
          lua_setfield(L, LUA_REGISTRYINDEX, "moonflow.fname_of");
          found = lua_tostring(L, -1); /* anchored in the registry */
          lua_pop(L, 3);
          break;
        }
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  if (found) lua_pop(L, 1); /* the key lua_next left */
  lua_settop(L, top);
  return found ? found : "a moonflow function";
}

static mf_tensor *to_tensor(lua_State *L, int idx, const mf_tensor *like, bool host_numbers) {
  idx = lua_absindex(L, idx);
  mf_tensor *t = lmf_test(L, idx);
  if (t) return t;
  int type = lua_type(L, idx);
  if (type == LUA_TNUMBER || type == LUA_TBOOLEAN) {
    mf_dtype dt;
    double v;
    if (type == LUA_TBOOLEAN) {
      dt = MF_BOOL;
      v = lua_toboolean(L, idx);
    } else if (lua_isinteger(L, idx)) {
      dt = MF_I64;
      v = (double)lua_tointeger(L, idx);
    } else {
      dt = like ? MF_F64 : MF_F32; /* exact beside a tensor: only its category counts */
      v = lua_tonumber(L, idx);
    }
    mf_device *dev = like && !host_numbers ? mf_tensor_device(like) : NULL;
    mf_tensor **slot = lmf_newslot(L);
    mf_status s = mf_scalar(v, dt, true, dev, slot);
    if (s != MF_OK) return lmf_error(L, s), NULL;
    lua_replace(L, idx);
    return *slot;
  }
  if (type == LUA_TTABLE) {
    mf_tensor *r = lmf_fromtable(L, idx, -1, like ? mf_tensor_device(like) : NULL, fname_of(L));
    lua_replace(L, idx);
    return r;
  }
  luaL_typeerror(L, idx, "tensor, number, boolean or table");
  return NULL;
}

mf_tensor *lmf_totensor(lua_State *L, int idx, const mf_tensor *like) {
  return to_tensor(L, idx, like, false);
}

mf_tensor *lmf_tooperand(lua_State *L, int idx, const mf_tensor *like) {
  return to_tensor(L, idx, like, true);
}

int lmf_error(lua_State *L, mf_status s) {
  const char *msg = mf_error();
  if (msg == NULL || *msg == '\0') msg = mf_status_name(s);
  return luaL_error(L, "%s", msg);
}

/* ---- dims, indices, shapes ---------------------------------------------------------------- */

int lmf_todim(lua_State *L, lua_Integer d, int ndim, const char *fname) {
  if (d >= 1 && d <= ndim) return (int)(d - 1);
  if (d < 0 && d >= -(lua_Integer)ndim) return (int)(ndim + d);
  if (ndim == 0)
    return luaL_error(L, "%s: dimension %I is out of range for a 0-d tensor (it has no dimensions)",
                      fname, (LUAI_UACINT)d);
  return luaL_error(
      L, "%s: dimension %I is out of range for a %d-d tensor (expected 1..%d or -%d..-1)", fname,
      (LUAI_UACINT)d, ndim, ndim, ndim);
}

int lmf_checkdim(lua_State *L, int arg, int ndim, const char *fname) {
  return lmf_todim(L, luaL_checkinteger(L, arg), ndim, fname);
}

int lmf_optdim(lua_State *L, int arg, int ndim, int def, const char *fname) {
  if (lua_isnoneornil(L, arg)) return def;
  return lmf_checkdim(L, arg, ndim, fname);
}

int lmf_checknewdim(lua_State *L, int arg, int ndim, const char *fname) {
  lua_Integer d = luaL_checkinteger(L, arg);
  int n = ndim + 1;
  if (d >= 1 && d <= n) return (int)(d - 1);
  if (d < 0 && d >= -(lua_Integer)n) return (int)(n + d);
  return luaL_error(L,
                    "%s: dimension %I is out of range for a new dimension of a %d-d tensor "
                    "(expected 1..%d or -%d..-1)",
                    fname, (LUAI_UACINT)d, ndim, n, n);
}

int64_t lmf_toindex(lua_State *L, lua_Integer i, int64_t n, int dim, const char *fname) {
  if (i >= 1 && i <= n) return i - 1;
  if (i < 0 && i >= -n) return n + i;
  luaL_error(L, "%s%sindex %I is out of range for dimension %d of size %I", fname ? fname : "",
             fname ? ": " : "", (LUAI_UACINT)i, dim + 1, (LUAI_UACINT)n);
  return 0;
}

static void check_size(lua_State *L, lua_Integer v, int pos, int flags, int *ninfer,
                       const char *fname) {
  if (v >= 0) return;
  if (v == -1 && (flags & LMF_SHAPE_KEEP)) return;
  if (v == -1 && (flags & LMF_SHAPE_INFER)) {
    if (++*ninfer > 1) luaL_error(L, "%s: only one size can be -1 (inferred)", fname);
    return;
  }
  luaL_error(L, "%s: bad shape: size %I at position %d (sizes must be >= 0)", fname, (LUAI_UACINT)v,
             pos);
}

static void too_many(lua_State *L, int n, const char *fname) {
  luaL_error(L, "%s: too many dimensions (%d, at most %d)", fname, n, MF_MAX_DIMS);
}

int lmf_checkshape(lua_State *L, int arg, int64_t *shape, int flags, int *next, const char *fname) {
  int ninfer = 0, n = 0;
  mf_tensor *t;
  if (lua_istable(L, arg) && !lmf_test(L, arg)) {
    n = (int)luaL_len(L, arg);
    if (n > MF_MAX_DIMS) too_many(L, n, fname);
    for (int i = 1; i <= n; i++) {
      int isint;
      lua_geti(L, arg, i);
      lua_Integer v = lua_tointegerx(L, -1, &isint);
      if (!isint)
        luaL_error(L, "%s: bad shape: entry %d is %s, expected an integer size", fname, i,
                   lua_isnumber(L, -1) ? "not an integer" : luaL_typename(L, -1));
      lua_pop(L, 1);
      check_size(L, v, i, flags, &ninfer, fname);
      shape[i - 1] = v;
    }
    if (next) *next = arg + 1;
  } else if ((t = lmf_test(L, arg)) != NULL) {
    if (t->ndim > 1 || mf_dtype_is_float(t->dtype) || t->dtype == MF_BOOL)
      luaL_error(L, "%s: a shape tensor must be a 1-D integer tensor, got %s with %d dims", fname,
                 mf_dtype_name(t->dtype), t->ndim);
    int64_t k = mf_numel(t);
    if (k > MF_MAX_DIMS) too_many(L, (int)k, fname);
    mf_status s = mf_to_host(t, MF_I64, shape);
    if (s != MF_OK) lmf_error(L, s);
    n = (int)k;
    for (int i = 0; i < n; i++) check_size(L, shape[i], i + 1, flags, &ninfer, fname);
    if (next) *next = arg + 1;
  } else if (lua_type(L, arg) == LUA_TNUMBER && !(flags & LMF_SHAPE_NOVARGS)) {
    while (lua_type(L, arg + n) == LUA_TNUMBER) {
      int isint;
      lua_Integer v = lua_tointegerx(L, arg + n, &isint);
      if (!isint) luaL_argerror(L, arg + n, "expected an integer size");
      if (n >= MF_MAX_DIMS) too_many(L, n + 1, fname);
      check_size(L, v, n + 1, flags, &ninfer, fname);
      shape[n++] = v;
    }
    if (next) *next = arg + n;
  } else {
    luaL_typeerror(L, arg, "shape (table of sizes, integer tensor or sizes)");
  }
  return n;
}

void lmf_pushshape(lua_State *L, int ndim, const int64_t *shape) {
  lua_createtable(L, ndim, 0);
  for (int i = 0; i < ndim; i++) {
    lua_pushinteger(L, (lua_Integer)shape[i]);
    lua_rawseti(L, -2, i + 1);
  }
}

/* ---- dtypes, devices, options ---------------------------------------------------------- */

mf_dtype lmf_checkdtype(lua_State *L, int arg, const char *fname) {
  const char *name = luaL_checkstring(L, arg);
  mf_dtype dt;
  if (mf_dtype_from_name(name, &dt) != MF_OK)
    luaL_error(L,
               "%s: unknown dtype '%s' (expected float32, float64, int32, int64, uint8, bool, "
               "float16 or bfloat16)",
               fname, name);
  return dt;
}

mf_device *lmf_checkdevice(lua_State *L, int arg, const char *fname) {
  const char *spec = luaL_checkstring(L, arg);
  mf_device *d;
  mf_status s = mf_device_get(spec, &d);
  if (s != MF_OK) {
    const char *msg = mf_error();
    luaL_error(L, "%s: device '%s': %s", fname, spec, msg && *msg ? msg : mf_status_name(s));
  }
  return d;
}

mf_device *lmf_default_device(lua_State *L, const char *fname) {
  mf_device *d = NULL;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LMF_DEVICE) == LUA_TSTRING)
    d = lmf_checkdevice(L, lua_gettop(L), fname);
  lua_pop(L, 1);
  return d;
}

void lmf_checkopts(lua_State *L, int arg, lmf_opts *o, const char *fname) {
  o->has_dtype = false;
  o->dtype = MF_F32;
  o->device = NULL;
  o->requires_grad = false;
  if (lua_isnoneornil(L, arg)) {
    o->device = lmf_default_device(L, fname);
    return;
  }
  luaL_checktype(L, arg, LUA_TTABLE);
  int top = lua_gettop(L);
  if (lua_getfield(L, arg, "dtype") != LUA_TNIL) {
    o->dtype = lmf_checkdtype(L, top + 1, fname);
    o->has_dtype = true;
  }
  if (lua_getfield(L, arg, "device") != LUA_TNIL)
    o->device = lmf_checkdevice(L, top + 2, fname);
  else
    o->device = lmf_default_device(L, fname);
  lua_getfield(L, arg, "requires_grad");
  o->requires_grad = lua_toboolean(L, -1);
  lua_settop(L, top);
}

void lmf_applyopts(lua_State *L, mf_tensor *t, const lmf_opts *o, const char *fname) {
  if (!o->requires_grad) return;
  if (!mf_dtype_is_float(t->dtype))
    luaL_error(L, "%s: only floating-point tensors can require gradients, not %s", fname,
               mf_dtype_name(t->dtype));
  t->flags |= MF_TENSOR_REQUIRES_GRAD;
}

/* ---- values -------------------------------------------------------------------------------- */

mf_tensor *lmf_shift(lua_State *L, const mf_tensor *t, lua_Integer delta) {
  mf_tensor **k = lmf_newslot(L);
  mf_status s = mf_scalar((double)delta, MF_I64, true, NULL, k); /* a host number */
  mf_tensor **slot = lmf_newslot(L);
  if (s == MF_OK) s = mf_add(t, *k, slot);
  if (s != MF_OK) lmf_error(L, s);
  lua_remove(L, -2); /* the scalar */
  return *slot;
}

mf_status lmf_pushitem(lua_State *L, const mf_tensor *t) {
  if (mf_numel(t) != 1)
    return mf_fail(MF_ERR_SHAPE, "item: tensor has %lld elements, expected 1",
                   (long long)mf_numel(t));
  mf_status s;
  if (mf_dtype_is_float(t->dtype)) {
    double v;
    if ((s = mf_to_host(t, MF_F64, &v)) != MF_OK) return s;
    lua_pushnumber(L, (lua_Number)v);
  } else {
    int64_t v;
    if ((s = mf_to_host(t, MF_I64, &v)) != MF_OK) return s;
    if (t->dtype == MF_BOOL)
      lua_pushboolean(L, v != 0);
    else
      lua_pushinteger(L, (lua_Integer)v);
  }
  return MF_OK;
}

/* ---- registration ------------------------------------------------------------------------- */

void lmf_setfuncs(lua_State *L, int idx, const luaL_Reg *l) {
  idx = lua_absindex(L, idx);
  for (; l->name; l++) {
    lua_pushcfunction(L, l->func);
    lua_setfield(L, idx, l->name);
  }
}
