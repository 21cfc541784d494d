/* nn.c — Lua bindings of the core's neural-network ops, as the `mf._nn` table that
 * lua/moonflow/nn/ builds its layers and losses on (users call mf.nn.functional instead):
 *
 *   _nn.conv2d(x, w, b | nil [, {stride = s | {sh, sw},
 *                                pad = p | {ph, pw} | {top, left, bottom, right}}])
 *   _nn.max_pool2d(x, {kernel = k | {kh, kw}, stride =, pad =, return_indices = false})
 *   _nn.avg_pool2d(x, {kernel =, stride =, pad =, count_include_pad = true})
 *   _nn.batch_norm(x, rm, rv, w, b, training, momentum, eps)  -- fused; channels in dim 2
 *   _nn.softmax(x, dim), _nn.log_softmax(x, dim)          -- dims 1-based, negative from the end
 *   _nn.gather(x, dim, index)                             -- index holds 1-based positions
 *   _nn.scatter_add(shape, dim, index, src)               -- likewise
 *   _nn.cross_entropy(x, target [, eps])                  -- (N, C), 1-based (N) -> losses (N)
 *   _nn.dropout_mask(x, p)                                -- 0 with probability p, else 1/(1-p)
 *   mf.same_padding(in, k, stride) -> before, after       -- TensorFlow's "same" for one dim
 *
 * Tensors are NCHW here; NHWC layouts are permuted by the Lua side. Pooling strides default to
 * the kernel size, convolution strides to 1, paddings to 0. max_pool2d's indices (with
 * return_indices) are 1-based flat positions h*W + w + 1 within each (n, c) plane.
 */
#include "lmf.h"

#include <stdio.h>

/* ---- geometry options ------------------------------------------------------------------------ */

/* A positive (or, with allow_zero, non-negative) integer. */
static int geo_int(lua_State *L, int idx, const char *what, bool allow_zero, const char *fname) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint || v < (allow_zero ? 0 : 1) || v > (1 << 24))
    return luaL_error(L, "%s: %s must be %s integers, got %s", fname, what,
                      allow_zero ? "non-negative" : "positive", luaL_tolstring(L, idx, NULL));
  return (int)v;
}

/* opts[field]: nil (out gets def), a number n (n everywhere), or a table of `n` or `alt` entries
 * ({a, b} for two dims, or {top, left, bottom, right} when n is 4: {ph, pw} means symmetric). */
static void geo_field(lua_State *L, int opts, const char *field, int n, int *out, int def,
                      bool allow_zero, const char *fname) {
  for (int i = 0; i < n; i++) out[i] = def;
  if (opts == 0) return;
  int t = lua_getfield(L, opts, field);
  if (t == LUA_TNUMBER) {
    int v = geo_int(L, -1, field, allow_zero, fname);
    for (int i = 0; i < n; i++) out[i] = v;
  } else if (t == LUA_TTABLE) {
    int len = (int)lua_rawlen(L, -1);
    if (len != 2 && len != n)
      luaL_error(L, "%s: %s must be a number or a table of %s numbers, got %d entries", fname,
                 field, n == 4 ? "2 or 4" : "2", len);
    int v[4];
    for (int i = 0; i < len; i++) {
      lua_rawgeti(L, -1, i + 1);
      v[i] = geo_int(L, -1, field, allow_zero, fname);
      lua_pop(L, 1);
    }
    for (int i = 0; i < n; i++) out[i] = len == n ? v[i] : v[i % 2];
  } else if (t != LUA_TNIL) {
    luaL_error(L, "%s: %s must be a number or a table, got %s", fname, field, luaL_typename(L, -1));
  }
  lua_pop(L, 1);
}

/* Reads {kernel=, stride=, pad=} at arg (or none) into p. */
static void check_geometry(lua_State *L, int arg, bool pool, mf_pool2d_params *p,
                           const char *fname) {
  int opts = 0;
  if (!lua_isnoneornil(L, arg)) {
    luaL_checktype(L, arg, LUA_TTABLE);
    opts = arg;
  }
  p->kernel[0] = p->kernel[1] = 1;
  if (pool) {
    if (!opts || lua_getfield(L, opts, "kernel") == LUA_TNIL)
      luaL_error(L, "%s: missing the window size (kernel = k or {kh, kw})", fname);
    if (opts) lua_pop(L, 1);
    geo_field(L, opts, "kernel", 2, p->kernel, 1, false, fname);
  }
  geo_field(L, opts, "stride", 2, p->stride, 1, false, fname);
  if (pool && (!opts || lua_getfield(L, opts, "stride") == LUA_TNIL)) {
    p->stride[0] = p->kernel[0];
    p->stride[1] = p->kernel[1];
  }
  if (pool && opts) lua_pop(L, 1);
  geo_field(L, opts, "pad", 4, p->pad, 0, true, fname);
  p->count_include_pad = true;
  if (opts && lua_getfield(L, opts, "count_include_pad") != LUA_TNIL)
    p->count_include_pad = lua_toboolean(L, -1);
  if (opts) lua_pop(L, 1);
}

static bool opt_bool(lua_State *L, int arg, const char *field) {
  if (!lua_istable(L, arg)) return false;
  lua_getfield(L, arg, field);
  bool b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/* ---- convolution and pooling ----------------------------------------------------------------- */

static int n_conv2d(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1), *w = lmf_check(L, 2);
  mf_tensor *b = lua_isnoneornil(L, 3) ? NULL : lmf_check(L, 3);
  mf_pool2d_params p;
  check_geometry(L, 4, false, &p, "conv2d");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_conv2d(x, w, b, &p, slot);
  return s ? lmf_error(L, s) : 1;
}

/* max_pool2d(x, opts) -> out [, indices (1-based) when opts.return_indices]. Recording the
 * backward (and the argmax positions it needs) is the core's business. */
static int n_max_pool2d(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1);
  mf_pool2d_params p;
  check_geometry(L, 2, true, &p, "max_pool2d");
  bool want = opt_bool(L, 2, "return_indices");
  mf_tensor **slot = lmf_newslot(L);
  mf_tensor **islot = want ? lmf_newslot(L) : NULL;
  mf_status s = mf_max_pool2d(x, &p, slot, islot);
  if (s) return lmf_error(L, s);
  if (!want) return 1;
  lua_pushinteger(L, 1);
  mf_tensor *one = lmf_totensor(L, -1, *islot);
  mf_tensor **oslot = lmf_newslot(L);
  s = mf_binary(MF_OP_ADD, *islot, one, oslot);
  if (s) return lmf_error(L, s);
  lua_remove(L, -2); /* the 1 */
  lua_remove(L, -2); /* the 0-based indices */
  return 2;
}

static int n_avg_pool2d(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1);
  mf_pool2d_params p;
  check_geometry(L, 2, true, &p, "avg_pool2d");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_avg_pool2d(x, &p, slot);
  return s ? lmf_error(L, s) : 1;
}

/* mf.same_padding(in, k, stride) -> before, after */
static int n_same_padding(lua_State *L) {
  lua_Integer in = luaL_checkinteger(L, 1), k = luaL_checkinteger(L, 2);
  lua_Integer stride = luaL_optinteger(L, 3, 1);
  if (in < 0 || k < 1 || stride < 1 || k > (1 << 24) || stride > (1 << 24))
    return luaL_error(L, "same_padding: expected in >= 0, k >= 1 and stride >= 1, got %I, %I, %I",
                      (LUAI_UACINT)in, (LUAI_UACINT)k, (LUAI_UACINT)stride);
  int before, after;
  mf_same_padding((int64_t)in, (int)k, (int)stride, &before, &after);
  lua_pushinteger(L, before);
  lua_pushinteger(L, after);
  return 2;
}

/* ---- batch normalisation --------------------------------------------------------------------- */

/* batch_norm(x, running_mean | nil, running_var | nil, weight | nil, bias | nil, training,
 * momentum, eps) -> y: the fused op over x (N, C, ...) with channels in dim 2 (Lua's numbering);
 * the running stats are updated in place when training. Recorded by autograd. */
/* The optional tensor `what` at arg. The message names batch_norm and the argument itself: the
 * Lua side calls this through pcall, where Lua's own argument errors would name '?'. */
static mf_tensor *opt_tensor(lua_State *L, int arg, const char *what) {
  if (lua_isnoneornil(L, arg)) return NULL;
  mf_tensor *t = lmf_test(L, arg);
  if (!t)
    luaL_error(L, "batch_norm: %s (argument #%d) must be a tensor or nil, got %s", what, arg,
               luaL_typename(L, arg));
  return t;
}

static int n_batch_norm(lua_State *L) {
  mf_tensor *x = opt_tensor(L, 1, "the input");
  if (!x) return luaL_error(L, "batch_norm: the input (argument #1) must be a tensor, got nil");
  mf_tensor *rm = opt_tensor(L, 2, "running_mean"), *rv = opt_tensor(L, 3, "running_var");
  mf_tensor *w = opt_tensor(L, 4, "weight"), *b = opt_tensor(L, 5, "bias");
  bool training = lua_toboolean(L, 6);
  if (lua_type(L, 7) != LUA_TNUMBER || lua_type(L, 8) != LUA_TNUMBER)
    return luaL_error(L, "batch_norm: momentum and eps must be numbers, got %s and %s",
                      luaL_typename(L, 7), luaL_typename(L, 8));
  double momentum = lua_tonumber(L, 7), eps = lua_tonumber(L, 8);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_batch_norm(x, w, b, rm, rv, training, momentum, eps, slot, NULL);
  return s ? lmf_error(L, s) : 1;
}

/* ---- softmax --------------------------------------------------------------------------------- */

static int softmax(lua_State *L, bool log, const char *fname) {
  mf_tensor *x = lmf_check(L, 1);
  int dim = x->ndim == 0 ? 0 : lmf_checkdim(L, 2, x->ndim, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = log ? mf_log_softmax(x, dim, slot) : mf_softmax(x, dim, slot);
  return s ? lmf_error(L, s) : 1;
}

static int n_softmax(lua_State *L) { return softmax(L, false, "softmax"); }
static int n_log_softmax(lua_State *L) { return softmax(L, true, "log_softmax"); }

/* ---- gather, scatter_add, dropout ------------------------------------------------------------ */

/* The 1-based integer index at arg as an int64 tensor (the core reads its values from 1: no
 * shifted copy), pushed on the stack. */
static mf_tensor *index_arg(lua_State *L, int arg, const mf_tensor *like, const char *fname) {
  mf_tensor *idx = lmf_test(L, arg);
  if (!idx) idx = lmf_totensor(L, arg, like); /* a nested table of integers, on like's device */
  if (idx->dtype != MF_I64 && idx->dtype != MF_I32 && idx->dtype != MF_U8)
    luaL_error(L, "%s: index must be an integer tensor (int64), got %s", fname,
               mf_dtype_name(idx->dtype));
  mf_tensor **c = lmf_newslot(L);
  mf_status s = idx->dtype == MF_I64 ? (*c = mf_retain(idx), MF_OK) : mf_cast(idx, MF_I64, c);
  if (s) lmf_error(L, s);
  return *c;
}

/* After a failed gather/scatter_add: the bad 1-based index (as the core's message gives it,
 * exactly) against the range 1..n, for the message. */
static int index_error(lua_State *L, mf_status s, int dim, int64_t n, const char *fname) {
  long long bad;
  if (s == MF_ERR_INDEX && sscanf(mf_error(), "%*s index %lld is out of range", &bad) == 1)
    return luaL_error(L, "%s: index %I is out of range 1..%I for dimension %d", fname,
                      (LUAI_UACINT)bad, (LUAI_UACINT)n, dim + 1);
  return lmf_error(L, s);
}

/* gather(x, dim, index): out[i][j] = x[i][index[i][j]] along dim (torch.gather, 1-based). */
static int n_gather(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1);
  int dim = lmf_checkdim(L, 2, x->ndim, "gather");
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  mf_tensor *idx = index_arg(L, 3, x, "gather");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_gather_from(x, dim, idx, 1, slot);
  return s ? index_error(L, s, dim, x->shape[dim], "gather") : 1;
}

/* scatter_add(shape, dim, index, src): zeros of shape with src added at index along dim. */
static int n_scatter_add(lua_State *L) {
  int64_t shape[MF_MAX_DIMS];
  int nd = lmf_checkshape(L, 1, shape, LMF_SHAPE_NOVARGS, NULL, "scatter_add");
  int dim = lmf_checkdim(L, 2, nd, "scatter_add");
  luaL_checkany(L, 3);
  mf_tensor *src = lmf_check(L, 4);
  lua_settop(L, 4);
  mf_tensor *idx = index_arg(L, 3, src, "scatter_add");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_scatter_add_from(nd, shape, dim, idx, 1, src, slot);
  return s ? index_error(L, s, dim, shape[dim], "scatter_add") : 1;
}

/* cross_entropy(logits (N, C), target (N) [, label_smoothing]): the per-row losses (N), one kernel
 * each way; a bad class index fails naming it ("class index 11 is out of range 1..10"). */
static int n_cross_entropy(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1);
  luaL_checkany(L, 2);
  double eps = luaL_optnumber(L, 3, 0);
  lua_settop(L, 3);
  mf_tensor *t = index_arg(L, 2, x, "cross_entropy");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_cross_entropy(x, t, 1, eps, slot);
  return s ? lmf_error(L, s) : 1;
}

static int n_dropout_mask(lua_State *L) {
  mf_tensor *x = lmf_check(L, 1);
  double p = luaL_checknumber(L, 2);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_dropout_mask(x, p, slot);
  return s ? lmf_error(L, s) : 1;
}

static const luaL_Reg nn_funcs[] = {
    {"conv2d", n_conv2d},
    {"max_pool2d", n_max_pool2d},
    {"avg_pool2d", n_avg_pool2d},
    {"batch_norm", n_batch_norm},
    {"softmax", n_softmax},
    {"log_softmax", n_log_softmax},
    {"gather", n_gather},
    {"scatter_add", n_scatter_add},
    {"cross_entropy", n_cross_entropy},
    {"dropout_mask", n_dropout_mask},
    {"same_padding", n_same_padding},
    {NULL, NULL},
};

void lmf_open_nn(lua_State *L, int mod, int meth) {
  (void)meth;
  lua_newtable(L);
  lmf_setfuncs(L, lua_gettop(L), nn_funcs);
  lua_setfield(L, mod, "_nn");
  lua_pushcfunction(L, n_same_padding);
  lua_setfield(L, mod, "same_padding");
}
