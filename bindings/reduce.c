/* reduce.c — reductions and matmul: sum/mean/max/min/prod/var/std/argmax/argmin(t [, dim
 * [, keepdim]]) as functions and methods (no dim: over everything, a 0-d result), and
 * mf.matmul(a, b) / a:matmul(b).
 *
 * Indices are 1-based in Lua: argmax/argmin (and max/min's second result) add 1 to the core's
 * 0-based int64 indices. max(t, dim) and min(t, dim) return values and indices, like torch;
 * max(t, u) with a tensor u is maximum(t, u). var and std are unbiased unless told otherwise. */
#include "lmf.h"

/* Reads (dim, keepdim) from arguments 2 and 3 of a reduction over x. */
static int opt_dim(lua_State *L, const mf_tensor *x, bool *keepdim, const char *fname) {
  int dim = MF_ALL_DIMS;
  if (!lua_isnoneornil(L, 2)) {
    if (lua_type(L, 2) != LUA_TNUMBER) luaL_typeerror(L, 2, "integer dimension");
    dim = lmf_checkdim(L, 2, x->ndim, fname);
  }
  *keepdim = lua_toboolean(L, 3);
  return dim;
}

/* Adds 1 to the 0-based int64 indices at the top (a tensor userdata), replacing it. */
static void one_based(lua_State *L) {
  lmf_shift(L, lmf_check(L, -1), 1);
  lua_replace(L, -2);
}

static int reduce(lua_State *L, mf_op op, const char *fname) {
  luaL_checkany(L, 1);
  mf_tensor *x = lmf_totensor(L, 1, NULL);
  bool keepdim;
  int dim = opt_dim(L, x, &keepdim, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_reduce(op, x, dim, keepdim, slot);
  if (s != MF_OK) return lmf_error(L, s);
  if (op == MF_OP_ARGMAX || op == MF_OP_ARGMIN) one_based(L);
  return 1;
}

static int m_sum(lua_State *L) { return reduce(L, MF_OP_SUM, "sum"); }
static int m_mean(lua_State *L) { return reduce(L, MF_OP_MEAN, "mean"); }
static int m_prod(lua_State *L) { return reduce(L, MF_OP_PROD, "prod"); }
static int m_argmax(lua_State *L) { return reduce(L, MF_OP_ARGMAX, "argmax"); }
static int m_argmin(lua_State *L) { return reduce(L, MF_OP_ARGMIN, "argmin"); }

/* max(t) -> value; max(t, dim [, keepdim]) -> values, indices; max(t, u) -> maximum(t, u). */
static int extreme(lua_State *L, mf_op op, mf_op arg, mf_op pairwise, const char *fname) {
  if (lmf_test(L, 2)) {
    lua_settop(L, 2);
    mf_tensor *a = lmf_totensor(L, 1, lmf_test(L, 2)), *b = lmf_check(L, 2);
    mf_tensor **slot = lmf_newslot(L);
    mf_status s = mf_binary(pairwise, a, b, slot);
    return s == MF_OK ? 1 : lmf_error(L, s);
  }
  luaL_checkany(L, 1);
  mf_tensor *x = lmf_totensor(L, 1, NULL);
  bool keepdim;
  int dim = opt_dim(L, x, &keepdim, fname);
  mf_tensor **v = lmf_newslot(L);
  mf_status s = mf_reduce(op, x, dim, keepdim, v);
  if (s != MF_OK) return lmf_error(L, s);
  if (dim == MF_ALL_DIMS) return 1;
  mf_tensor **i = lmf_newslot(L);
  s = mf_reduce(arg, x, dim, keepdim, i);
  if (s != MF_OK) return lmf_error(L, s);
  one_based(L);
  return 2;
}

static int m_max(lua_State *L) { return extreme(L, MF_OP_MAX, MF_OP_ARGMAX, MF_OP_MAXIMUM, "max"); }
static int m_min(lua_State *L) { return extreme(L, MF_OP_MIN, MF_OP_ARGMIN, MF_OP_MINIMUM, "min"); }

/* Options of var/std at argument i: a boolean (unbiased) or {unbiased=, correction=}. */
static void var_opt(lua_State *L, int i, int *correction) {
  if (lua_isboolean(L, i)) {
    *correction = lua_toboolean(L, i) ? 1 : 0;
  } else if (lua_istable(L, i)) {
    if (lua_getfield(L, i, "unbiased") != LUA_TNIL) *correction = lua_toboolean(L, -1) ? 1 : 0;
    if (lua_getfield(L, i, "correction") != LUA_TNIL) {
      int isint;
      lua_Integer c = lua_tointegerx(L, -1, &isint);
      if (!isint || c < 0 || c > (1 << 30)) /* (int)c must not wrap: 2^32 would have been 0 */
        luaL_argerror(L, i, "correction must be an integer in 0..2^30");
      *correction = (int)c;
    }
    lua_pop(L, 2);
  } else if (!lua_isnoneornil(L, i)) {
    luaL_typeerror(L, i, "boolean (unbiased) or options table");
  }
}

/* var(t [, unbiased | opts]), var(t, dim [, keepdim [, unbiased | opts]]), var(t, dim, opts). */
static int variance(lua_State *L, bool sd, const char *fname) {
  luaL_checkany(L, 1);
  mf_tensor *x = lmf_totensor(L, 1, NULL);
  int dim = MF_ALL_DIMS, correction = 1;
  bool keepdim = false;
  if (lua_isboolean(L, 2) || lua_istable(L, 2)) {
    var_opt(L, 2, &correction);
  } else {
    if (!lua_isnoneornil(L, 2)) {
      if (lua_type(L, 2) != LUA_TNUMBER) luaL_typeerror(L, 2, "integer dimension");
      dim = lmf_checkdim(L, 2, x->ndim, fname);
    }
    if (lua_istable(L, 3))
      var_opt(L, 3, &correction);
    else {
      keepdim = lua_toboolean(L, 3);
      var_opt(L, 4, &correction);
    }
  }
  mf_tensor **slot = lmf_newslot(L);
  mf_status s =
      sd ? mf_std(x, dim, correction, keepdim, slot) : mf_var(x, dim, correction, keepdim, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int m_var(lua_State *L) { return variance(L, false, "var"); }
static int m_std(lua_State *L) { return variance(L, true, "std"); }

/* matmul(a, b): numpy semantics (1-D operands, batched and broadcast). */
static int m_matmul(lua_State *L) {
  luaL_checkany(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  mf_tensor *a = lmf_totensor(L, 1, NULL);
  mf_tensor *b = lmf_totensor(L, 2, a);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_matmul(a, b, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg funcs[] = {
    {"sum", m_sum}, {"mean", m_mean},     {"prod", m_prod},     {"max", m_max},
    {"min", m_min}, {"argmax", m_argmax}, {"argmin", m_argmin}, {"var", m_var},
    {"std", m_std}, {"matmul", m_matmul}, {NULL, NULL},
};

void lmf_open_reduce(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, mod, funcs);
  lmf_setfuncs(L, meth, funcs);
}
