/* create.c — tensor factories: mf.tensor (numbers and nested tables, dtype inferred: Lua integers
 * -> int64, any float -> float32, booleans -> bool), zeros, ones, empty, full, fill, rand, randn,
 * arange, eye, and the random generator's seed and state. Shapes are a table {2, 3}, an integer
 * tensor, or Torch7-style varargs 2, 3; options {dtype=, device=, requires_grad=} come last. */
#include <math.h>
#include <string.h>

#include "lmf.h"

/* ---- nested tables ---------------------------------------------------------------------- */

enum { K_NONE, K_BOOL, K_INT, K_FLOAT }; /* element kinds, in promotion order */

typedef struct parse {
  const char *fname;
  int ndim;
  int64_t shape[MF_MAX_DIMS];
  int64_t path[MF_MAX_DIMS]; /* 1-based position of the table being read, for messages */
  int kind;
  mf_dtype dt; /* of the buffer */
  char *buf;
  int64_t k; /* next element */
} parse;

static const char *pathstr(lua_State *L, parse *p, int depth) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int d = 0; d < depth; d++) {
    lua_pushfstring(L, "[%I]", (LUAI_UACINT)p->path[d]);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return lua_tostring(L, -1);
}

static bool is_plain_table(lua_State *L, int idx) { return lua_type(L, idx) == LUA_TTABLE; }

/* Checks the table at the top (depth `depth`) against the shape, and finds the element kind. */
static void check_rows(lua_State *L, parse *p, int depth) {
  int64_t n = (int64_t)lua_rawlen(L, -1);
  if (n != p->shape[depth]) {
    const char *where = depth == 0 ? "the table" : pathstr(L, p, depth);
    luaL_error(L, "%s: ragged nested table: %s%s has %I element%s, expected %I", p->fname,
               depth == 0 ? "" : "row ", where, (LUAI_UACINT)n, n == 1 ? "" : "s",
               (LUAI_UACINT)p->shape[depth]);
  }
  for (int64_t i = 1; i <= n; i++) {
    p->path[depth] = i;
    int type = lua_rawgeti(L, -1, (lua_Integer)i);
    if (depth + 1 < p->ndim) {
      if (!is_plain_table(L, -1))
        luaL_error(L, "%s: ragged nested table: row %s is a %s, expected a table of %I elements",
                   p->fname, pathstr(L, p, depth + 1), luaL_typename(L, -1),
                   (LUAI_UACINT)p->shape[depth + 1]);
      check_rows(L, p, depth + 1);
    } else if (type == LUA_TNUMBER) {
      int k = lua_isinteger(L, -1) ? K_INT : K_FLOAT;
      if (k > p->kind) p->kind = k;
    } else if (type == LUA_TBOOLEAN) {
      if (p->kind < K_BOOL) p->kind = K_BOOL;
    } else if (type == LUA_TTABLE) {
      luaL_error(L, "%s: ragged nested table: element %s is a table, expected a number", p->fname,
                 pathstr(L, p, depth + 1));
    } else if (type == LUA_TNIL) {
      luaL_error(L, "%s: element %s is missing (nil), expected a number or boolean", p->fname,
                 pathstr(L, p, depth + 1));
    } else {
      luaL_error(L, "%s: element %s is a %s, expected a number or boolean%s", p->fname,
                 pathstr(L, p, depth + 1), luaL_typename(L, -1),
                 lmf_test(L, -1) ? " (use mf.stack to join tensors)" : "");
    }
    lua_pop(L, 1);
  }
}

/* Stores the leaf at the top into the buffer as p->dt. */
static void store(lua_State *L, parse *p) {
  int64_t k = p->k++;
  bool isint = lua_isinteger(L, -1);
  lua_Integer iv = isint ? lua_tointeger(L, -1) : (lua_Integer)lua_toboolean(L, -1);
  double dv = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : (double)iv;
  if (!isint && !mf_dtype_is_float(p->dt) && p->dt != MF_BOOL && lua_type(L, -1) == LUA_TNUMBER) {
    if (!(dv > -9.3e18 && dv < 9.3e18))
      luaL_error(L, "%s: value %f does not fit %s", p->fname, dv, mf_dtype_name(p->dt));
    iv = (lua_Integer)dv;
  }
  switch (p->dt) {
  case MF_F32: ((float *)p->buf)[k] = (float)dv; break;
  case MF_F64: ((double *)p->buf)[k] = dv; break;
  case MF_I32: ((int32_t *)p->buf)[k] = (int32_t)iv; break;
  case MF_I64: ((int64_t *)p->buf)[k] = (int64_t)iv; break;
  case MF_U8: ((uint8_t *)p->buf)[k] = (uint8_t)iv; break;
  case MF_BOOL: ((bool *)p->buf)[k] = dv != 0; break;
  default: break; /* half types are read as float32 and cast */
  }
}

static void fill_rows(lua_State *L, parse *p, int depth) {
  int64_t n = p->shape[depth];
  for (int64_t i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, (lua_Integer)i);
    if (depth + 1 < p->ndim)
      fill_rows(L, p, depth + 1);
    else
      store(L, p);
    lua_pop(L, 1);
  }
}

mf_tensor *lmf_fromtable(lua_State *L, int idx, int dt, mf_device *dev, const char *fname) {
  parse p;
  memset(&p, 0, sizeof p);
  p.fname = fname;
  idx = lua_absindex(L, idx);
  int top = lua_gettop(L);
  luaL_checkstack(L, 2 * MF_MAX_DIMS + 8, "nested table");
  /* the shape, from the first element at each depth */
  lua_pushvalue(L, idx);
  while (is_plain_table(L, -1)) {
    if (p.ndim == MF_MAX_DIMS)
      luaL_error(L, "%s: nested table is too deep (at most %d dimensions)", fname, MF_MAX_DIMS);
    p.shape[p.ndim] = (int64_t)lua_rawlen(L, -1);
    p.ndim++;
    if (p.shape[p.ndim - 1] == 0) break;
    lua_rawgeti(L, -1, 1);
  }
  lua_settop(L, top);
  lua_pushvalue(L, idx);
  check_rows(L, &p, 0);
  lua_settop(L, top);
  /* the buffer, owned by Lua; filled in the dtype of the result when the host has it */
  mf_dtype want = dt >= 0            ? (mf_dtype)dt
                  : p.kind == K_BOOL ? MF_BOOL
                  : p.kind == K_INT  ? MF_I64
                                     : MF_F32;
  p.dt = want == MF_F16 || want == MF_BF16 ? MF_F32 : want;
  int64_t numel = 1;
  for (int d = 0; d < p.ndim; d++) numel *= p.shape[d];
  p.buf = (char *)lua_newuserdatauv(L, (size_t)numel * mf_dtype_size(p.dt) + 1, 0);
  lua_pushvalue(L, idx);
  fill_rows(L, &p, 0);
  lua_pop(L, 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_from_host(p.ndim, p.shape, p.dt, p.buf, dev, slot);
  if (s == MF_OK && want != p.dt) {
    mf_tensor *c = NULL;
    s = mf_cast(*slot, want, &c);
    mf_release(*slot);
    *slot = c;
  }
  if (s != MF_OK) lmf_error(L, s);
  lua_remove(L, -2); /* drop the buffer */
  return *slot;
}

/* ---- factories --------------------------------------------------------------------------- */

/* mf.tensor(data [, opts]) */
static int m_tensor(lua_State *L) {
  lmf_opts o;
  lmf_checkopts(L, 2, &o, "tensor");
  mf_tensor *src = lmf_test(L, 1), *t = NULL;
  mf_status s = MF_OK;
  switch (lua_type(L, 1)) {
  case LUA_TNUMBER:
  case LUA_TBOOLEAN: {
    mf_dtype dt = lua_isboolean(L, 1) ? MF_BOOL : lua_isinteger(L, 1) ? MF_I64 : MF_F32;
    double v = lua_isboolean(L, 1) ? lua_toboolean(L, 1) : lua_tonumber(L, 1);
    mf_tensor **slot = lmf_newslot(L);
    s = mf_scalar(v, o.has_dtype ? o.dtype : dt, false, o.device, slot);
    t = *slot;
    break;
  }
  case LUA_TTABLE:
    t = lmf_fromtable(L, 1, o.has_dtype ? (int)o.dtype : -1, o.device, "tensor");
    break;
  case LUA_TUSERDATA:
    if (src) {
      mf_tensor **slot = lmf_newslot(L);
      s = mf_cast(src, o.has_dtype ? o.dtype : src->dtype, slot);
      if (s == MF_OK && o.device && o.device != mf_tensor_device(src)) {
        mf_tensor *c = NULL;
        s = mf_to_device(*slot, o.device, &c);
        mf_release(*slot);
        *slot = c;
      }
      t = *slot;
      break;
    }
    /* fall through */
  default:
    if (lua_type(L, 1) == LUA_TSTRING)
      return luaL_error(L, "tensor: strings live on the Lua side (mf.constant returns them as is)");
    return luaL_typeerror(L, 1, "number, boolean, table or tensor");
  }
  if (s != MF_OK) return lmf_error(L, s);
  lmf_applyopts(L, t, &o, "tensor");
  return 1;
}

typedef mf_status (*shape_fn)(int, const int64_t *, mf_dtype, mf_device *, mf_tensor **);

static int make(lua_State *L, shape_fn fn, const char *fname) {
  int64_t shape[MF_MAX_DIMS];
  int next;
  int n = lmf_checkshape(L, 1, shape, 0, &next, fname);
  lmf_opts o;
  lmf_checkopts(L, next, &o, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = fn(n, shape, o.has_dtype ? o.dtype : MF_F32, o.device, slot);
  if (s != MF_OK) return lmf_error(L, s);
  lmf_applyopts(L, *slot, &o, fname);
  return 1;
}

static int m_zeros(lua_State *L) { return make(L, mf_zeros, "zeros"); }
static int m_ones(lua_State *L) { return make(L, mf_ones, "ones"); }
/* A bool tensor's elements must be 0 or 1 (other bytes are not C bools): mf.empty of bools is
 * made false rather than left with whatever the allocator returned. */
static mf_status empty_or_false(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev,
                                mf_tensor **out) {
  return dt == MF_BOOL ? mf_zeros(ndim, shape, dt, dev, out) : mf_empty(ndim, shape, dt, dev, out);
}

static int m_empty(lua_State *L) { return make(L, empty_or_false, "empty"); }
static int m_rand(lua_State *L) { return make(L, mf_rand, "rand"); }
static int m_randn(lua_State *L) { return make(L, mf_randn, "randn"); }

/* full(shape, v [, opts]) and fill(shape, v [, opts]); also full(2, 3, v). dtype from v: Lua
 * integer -> int64, float -> float32, boolean -> bool. */
static int full(lua_State *L, const char *fname) {
  int64_t shape[MF_MAX_DIMS];
  int n = 0, varg = 1;
  if (lua_type(L, 1) == LUA_TNUMBER) { /* sizes..., v: the last number is the value */
    while (lua_type(L, varg + 1) == LUA_TNUMBER) varg++;
    if (varg == 1) return luaL_error(L, "%s: expected a shape and a value", fname);
    lua_pushvalue(L, 1); /* read sizes 1..varg-1 from a table */
    lua_createtable(L, varg - 1, 0);
    for (int i = 1; i < varg; i++) {
      lua_pushvalue(L, i);
      lua_rawseti(L, -2, i);
    }
    n = lmf_checkshape(L, lua_gettop(L), shape, 0, NULL, fname);
    lua_pop(L, 2);
  } else {
    n = lmf_checkshape(L, 1, shape, LMF_SHAPE_NOVARGS, NULL, fname);
    varg = 2;
  }
  int vt = lua_type(L, varg);
  if (vt != LUA_TNUMBER && vt != LUA_TBOOLEAN) return luaL_typeerror(L, varg, "number or boolean");
  double v = vt == LUA_TBOOLEAN ? lua_toboolean(L, varg) : lua_tonumber(L, varg);
  mf_dtype dt = vt == LUA_TBOOLEAN ? MF_BOOL : lua_isinteger(L, varg) ? MF_I64 : MF_F32;
  lmf_opts o;
  lmf_checkopts(L, varg + 1, &o, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_full(n, shape, v, o.has_dtype ? o.dtype : dt, o.device, slot);
  if (s != MF_OK) return lmf_error(L, s);
  lmf_applyopts(L, *slot, &o, fname);
  return 1;
}

static int m_full(lua_State *L) { return full(L, "full"); }
static int m_fill(lua_State *L) { return full(L, "fill"); }

/* arange(n) | arange(a, b [, step]) [, opts]: values in [a, b) as in numpy. */
static int m_arange(lua_State *L) {
  int n = 0;
  bool ints = true;
  while (n < 3 && lua_type(L, n + 1) == LUA_TNUMBER) {
    ints = ints && lua_isinteger(L, n + 1);
    n++;
  }
  if (n == 0) return luaL_typeerror(L, 1, "number");
  double a = 0, b, st = 1;
  if (n == 1)
    b = lua_tonumber(L, 1);
  else {
    a = lua_tonumber(L, 1);
    b = lua_tonumber(L, 2);
    if (n == 3) st = lua_tonumber(L, 3);
  }
  if (st == 0) return luaL_error(L, "arange: step must be nonzero");
  if (!isfinite(a) || !isfinite(b) || !isfinite(st))
    return luaL_error(L, "arange: bounds and step must be finite");
  lmf_opts o;
  lmf_checkopts(L, n + 1, &o, "arange");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_arange(a, b, st, o.has_dtype ? o.dtype : ints ? MF_I64 : MF_F32, o.device, slot);
  if (s != MF_OK) return lmf_error(L, s);
  lmf_applyopts(L, *slot, &o, "arange");
  return 1;
}

/* eye(n [, m] [, opts]) */
static int m_eye(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1), m = n;
  int oarg = 2;
  if (lua_type(L, 2) == LUA_TNUMBER) {
    m = luaL_checkinteger(L, 2);
    oarg = 3;
  }
  if (n < 0 || m < 0)
    return luaL_error(L, "eye: sizes must be >= 0, got %I x %I", (LUAI_UACINT)n, (LUAI_UACINT)m);
  lmf_opts o;
  lmf_checkopts(L, oarg, &o, "eye");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_eye(n, m, o.has_dtype ? o.dtype : MF_F32, o.device, slot);
  if (s != MF_OK) return lmf_error(L, s);
  lmf_applyopts(L, *slot, &o, "eye");
  return 1;
}

/* ---- random generator ------------------------------------------------------------------ */

static int m_manual_seed(lua_State *L) {
  mf_manual_seed((uint64_t)luaL_checkinteger(L, 1));
  return 0;
}

/* mf.get_rng_state() -> seed, offset */
static int m_get_rng_state(lua_State *L) {
  uint64_t seed, off;
  mf_rng_get_state(&seed, &off);
  lua_pushinteger(L, (lua_Integer)seed);
  lua_pushinteger(L, (lua_Integer)off);
  return 2;
}

static int m_set_rng_state(lua_State *L) {
  mf_rng_set_state((uint64_t)luaL_checkinteger(L, 1), (uint64_t)luaL_checkinteger(L, 2));
  return 0;
}

/* mf.randperm(n [, opts]) -> a random permutation of 1..n (int64) */
static int m_randperm(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  if (n < 0) return luaL_error(L, "randperm: n must be >= 0, got %I", (LUAI_UACINT)n);
  lmf_opts o;
  lmf_checkopts(L, 2, &o, "randperm");
  mf_tensor **perm = lmf_newslot(L);
  mf_status s = mf_randperm((int64_t)n, o.device, perm);
  if (s != MF_OK) return lmf_error(L, s);
  mf_tensor *p1 = lmf_shift(L, *perm, 1);
  if (o.has_dtype && o.dtype != MF_I64) {
    mf_tensor **cast = lmf_newslot(L);
    s = mf_cast(p1, o.dtype, cast);
  }
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg funcs[] = {
    {"tensor", m_tensor},
    {"randperm", m_randperm},
    {"zeros", m_zeros},
    {"ones", m_ones},
    {"empty", m_empty},
    {"full", m_full},
    {"fill", m_fill},
    {"rand", m_rand},
    {"randn", m_randn},
    {"arange", m_arange},
    {"eye", m_eye},
    {"manual_seed", m_manual_seed},
    {"get_rng_state", m_get_rng_state},
    {"set_rng_state", m_set_rng_state},
    {NULL, NULL},
};

void lmf_open_create(lua_State *L, int mod, int meth) {
  (void)meth;
  lmf_setfuncs(L, mod, funcs);
}
