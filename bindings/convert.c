/* convert.c — conversions: t:to(dtype | device | tensor | {dtype=, device=}), t:cuda([i]),
 * t:cpu(), t:float() and the other dtype shorthands, t:type([dtype]), mf.cast(t, dtype), and
 * values back to Lua: t:item(), t:totable() and t:tobytes([dtype]) (the raw row-major host bytes,
 * as a Lua string), and mf.frombytes(bytes, dtype, shape), its inverse. A conversion that changes
 * nothing returns t. */
#include <stdio.h>
#include <string.h>

#include "lmf.h"

/* Casts and/or moves t (at index 1) and pushes the result, or t itself when nothing changes. */
static int convert(lua_State *L, mf_tensor *t, mf_dtype dt, mf_device *dev) {
  bool cast = dt != t->dtype, move = dev && dev != mf_tensor_device(t);
  if (!cast && !move) {
    lua_pushvalue(L, 1);
    return 1;
  }
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = MF_OK;
  if (move) s = mf_to_device(t, dev, slot);
  if (s == MF_OK && cast) {
    mf_tensor *c = NULL;
    s = mf_cast(*slot ? *slot : t, dt, &c);
    mf_release(*slot);
    *slot = c;
  }
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:to(x, ...): each x a dtype name, a device spec, a tensor (its dtype and device) or a table. */
static int t_to(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_dtype dt = t->dtype;
  mf_device *dev = NULL;
  int top = lua_gettop(L);
  if (top < 2) return luaL_argerror(L, 2, "dtype, device, tensor or table expected");
  for (int i = 2; i <= top; i++) {
    mf_tensor *o;
    if (lua_type(L, i) == LUA_TSTRING) {
      const char *spec = lua_tostring(L, i);
      if (mf_dtype_from_name(spec, &dt) == MF_OK) continue;
      mf_device_type kind;
      int index;
      if (mf_device_parse(spec, &kind, &index) != MF_OK)
        return luaL_error(L,
                          "to: '%s' is neither a dtype nor a device (dtypes: float32, float64, "
                          "int32, int64, uint8, bool, float16, bfloat16; devices: cpu, cuda:N, "
                          "/gpu:N)",
                          spec);
      if (mf_device_get(spec, &dev) != MF_OK) return luaL_error(L, "to: %s", mf_error());
    } else if ((o = lmf_test(L, i)) != NULL) {
      dt = o->dtype;
      dev = mf_tensor_device(o);
    } else if (lua_istable(L, i)) {
      if (lua_getfield(L, i, "dtype") != LUA_TNIL) dt = lmf_checkdtype(L, lua_gettop(L), "to");
      if (lua_getfield(L, i, "device") != LUA_TNIL) dev = lmf_checkdevice(L, lua_gettop(L), "to");
      lua_pop(L, 2);
    } else if (!lua_isnil(L, i)) {
      return luaL_typeerror(L, i, "dtype, device, tensor or table");
    }
  }
  return convert(L, t, dt, dev);
}

static int t_cuda(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  lua_Integer i = luaL_optinteger(L, 2, 0);
  if (i < 0 || i > 1024) /* not cast to int unchecked: 2^32 would have been cuda:0 */
    return luaL_error(L, "cuda: bad GPU index %I (expected 0, 1, ...)", (LUAI_UACINT)i);
  char spec[32];
  snprintf(spec, sizeof spec, "cuda:%d", (int)i);
  mf_device *dev;
  if (mf_device_get(spec, &dev) != MF_OK) return luaL_error(L, "cuda: %s", mf_error());
  return convert(L, t, t->dtype, dev);
}

static int t_cpu(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  return convert(L, t, t->dtype, mf_cpu());
}

#define TO_DTYPE(name, DT)                                                                         \
  static int t_##name(lua_State *L) {                                                              \
    mf_tensor *t = lmf_check(L, 1);                                                                \
    return convert(L, t, DT, NULL);                                                                \
  }
TO_DTYPE(float, MF_F32)
TO_DTYPE(double, MF_F64)
TO_DTYPE(int, MF_I32)
TO_DTYPE(long, MF_I64)
TO_DTYPE(byte, MF_U8)
TO_DTYPE(bool, MF_BOOL)
TO_DTYPE(half, MF_F16)
TO_DTYPE(bfloat16, MF_BF16)
#undef TO_DTYPE

/* t:type() -> "float32"; t:type(dtype) -> t:to(dtype) */
static int t_type(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lua_pushstring(L, mf_dtype_name(t->dtype));
    return 1;
  }
  return convert(L, t, lmf_checkdtype(L, 2, "type"), NULL);
}

/* mf.cast(x, dtype): x a tensor, number or table; always a tensor of that dtype. */
static int m_cast(lua_State *L) {
  luaL_checkany(L, 1);
  mf_dtype dt = lmf_checkdtype(L, 2, "cast");
  lua_settop(L, 1);
  mf_tensor *t = lmf_totensor(L, 1, NULL);
  return convert(L, t, dt, NULL);
}

/* mf.cast_scaled(x, dtype, scale): cast(x) * scale in one pass (uint8 pixels to floats). */
static int m_cast_scaled(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_dtype dt = lmf_checkdtype(L, 2, "cast_scaled");
  double scale = luaL_checknumber(L, 3);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_cast_scaled(t, dt, scale, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* ---- values back to Lua ------------------------------------------------------------------ */

static int t_item(lua_State *L) {
  mf_status s = lmf_pushitem(L, lmf_check(L, 1));
  return s == MF_OK ? 1 : lmf_error(L, s);
}

typedef struct rows {
  const mf_tensor *t;
  const void *buf;
  mf_dtype dt; /* of buf: F64, I64 or BOOL */
  int64_t k;
} rows;

static void push_rows(lua_State *L, rows *r, int depth) {
  const mf_tensor *t = r->t;
  if (depth == t->ndim) {
    int64_t k = r->k++;
    if (r->dt == MF_F64)
      lua_pushnumber(L, ((const double *)r->buf)[k]);
    else if (r->dt == MF_I64)
      lua_pushinteger(L, (lua_Integer)((const int64_t *)r->buf)[k]);
    else
      lua_pushboolean(L, ((const bool *)r->buf)[k]);
    return;
  }
  int64_t n = t->shape[depth];
  lua_createtable(L, n > 0x7fffffff ? 0 : (int)n, 0);
  for (int64_t i = 1; i <= n; i++) {
    push_rows(L, r, depth + 1);
    lua_rawseti(L, -2, (lua_Integer)i);
  }
}

/* t:totable(): nested tables of Lua values (a 0-d tensor gives its value). */
static int t_totable(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  rows r = {t, NULL, MF_F64, 0};
  if (t->dtype == MF_BOOL)
    r.dt = MF_BOOL;
  else if (!mf_dtype_is_float(t->dtype))
    r.dt = MF_I64;
  luaL_checkstack(L, MF_MAX_DIMS + 4, "totable");
  void *buf = lua_newuserdatauv(L, (size_t)mf_numel(t) * mf_dtype_size(r.dt) + 1, 0);
  mf_status s = mf_to_host(t, r.dt, buf);
  if (s != MF_OK) return lmf_error(L, s);
  r.buf = buf;
  push_rows(L, &r, 0);
  return 1;
}

/* t:tobytes([dtype]): the elements in row-major order, converted to dtype (default: t's own), as
 * the host's (little-endian) bytes in one Lua string; the tensor may be strided or on a GPU. */
static int t_tobytes(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_dtype dt = lua_isnoneornil(L, 2) ? t->dtype : lmf_checkdtype(L, 2, "tobytes");
  size_t n = (size_t)mf_numel(t) * mf_dtype_size(dt);
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, n ? n : 1);
  mf_status s = mf_to_host(t, dt, p);
  if (s != MF_OK) return lmf_error(L, s);
  luaL_pushresultsize(&b, n);
  return 1;
}

/* mf.frombytes(bytes, dtype, shape [, {device=}]): a new tensor of that shape whose elements are
 * the row-major host (little-endian) bytes of `bytes`, the inverse of t:tobytes(); the length must
 * be exactly numel * element size. */
static int m_frombytes(lua_State *L) {
  size_t len;
  const char *p = luaL_checklstring(L, 1, &len);
  mf_dtype dt = lmf_checkdtype(L, 2, "frombytes");
  int64_t shape[MF_MAX_DIMS];
  int ndim = lmf_checkshape(L, 3, shape, LMF_SHAPE_NOVARGS, NULL, "frombytes");
  mf_device *dev = lmf_default_device(L, "frombytes");
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "device");
    if (!lua_isnil(L, -1)) dev = lmf_checkdevice(L, -1, "frombytes");
    lua_pop(L, 1);
  }
  size_t numel = 1;
  for (int i = 0; i < ndim; i++) numel *= (size_t)shape[i];
  size_t want = numel * mf_dtype_size(dt);
  if (len != want)
    return luaL_error(L, "frombytes: %I bytes for %I %s elements (%I bytes expected)",
                      (lua_Integer)len, (lua_Integer)numel, mf_dtype_name(dt), (lua_Integer)want);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_from_host(ndim, shape, dt, p, dev, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg methods[] = {
    {"to", t_to},         {"cuda", t_cuda},       {"cpu", t_cpu},           {"float", t_float},
    {"double", t_double}, {"int", t_int},         {"long", t_long},         {"byte", t_byte},
    {"bool", t_bool},     {"half", t_half},       {"bfloat16", t_bfloat16}, {"type", t_type},
    {"item", t_item},     {"totable", t_totable}, {"tobytes", t_tobytes},   {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"cast", m_cast},
    {"cast_scaled", m_cast_scaled},
    {"frombytes", m_frombytes},
    {NULL, NULL},
};

void lmf_open_convert(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, funcs);
}
