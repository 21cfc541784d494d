/* shape.c — shape operations: reshape/view (one -1 inferred; varargs or a table), transpose, t,
 * permute, squeeze, unsqueeze, expand, flatten, contiguous, clone, and mf.cat / mf.stack. Views
 * share storage with their source; reshape copies only when the strides do not allow a view. */
#include "lmf.h"

typedef mf_status (*reshape_fn)(const mf_tensor *, int, const int64_t *, mf_tensor **);

static int reshape(lua_State *L, reshape_fn fn, const char *fname) {
  mf_tensor *t = lmf_check(L, 1);
  int64_t shape[MF_MAX_DIMS];
  int n = lmf_checkshape(L, 2, shape, LMF_SHAPE_INFER, NULL, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = fn(t, n, shape, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_reshape(lua_State *L) { return reshape(L, mf_reshape, "reshape"); }
static int t_view(lua_State *L) { return reshape(L, mf_view, "view"); }

/* t:view_as(u), t:expand_as(u) */
static int t_view_as(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1), *u = lmf_check(L, 2);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_view(t, u->ndim, u->shape, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_expand_as(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1), *u = lmf_check(L, 2);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_expand(t, u->ndim, u->shape, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_expand(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int64_t shape[MF_MAX_DIMS];
  int n = lmf_checkshape(L, 2, shape, LMF_SHAPE_KEEP, NULL, "expand");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_expand(t, n, shape, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_transpose(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int d0 = lmf_checkdim(L, 2, t->ndim, "transpose");
  int d1 = lmf_checkdim(L, 3, t->ndim, "transpose");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_transpose(t, d0, d1, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:t(): the transpose of a matrix (a vector or 0-d tensor as is, like torch). */
static int t_t(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (t->ndim > 2)
    return luaL_error(L, "t: expects a tensor with at most 2 dimensions, got %d (use transpose)",
                      t->ndim);
  if (t->ndim < 2) {
    lua_settop(L, 1);
    return 1;
  }
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_transpose(t, 0, 1, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:permute{2, 1, 3} or t:permute(2, 1, 3) */
static int t_permute(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int perm[MF_MAX_DIMS], n;
  bool seen[MF_MAX_DIMS] = {false};
  bool tab = lua_istable(L, 2);
  n = tab ? (int)luaL_len(L, 2) : lua_gettop(L) - 1;
  if (n != t->ndim)
    return luaL_error(L, "permute: got %d dimensions for a %d-d tensor", n, t->ndim);
  for (int i = 0; i < n; i++) {
    int d;
    if (tab) {
      lua_geti(L, 2, i + 1);
      if (!lua_isinteger(L, -1)) return luaL_error(L, "permute: entry %d is not an integer", i + 1);
      d = lmf_todim(L, lua_tointeger(L, -1), n, "permute");
      lua_pop(L, 1);
    } else {
      d = lmf_checkdim(L, i + 2, n, "permute");
    }
    if (seen[d]) return luaL_error(L, "permute: dimension %d appears twice", d + 1);
    seen[d] = true;
    perm[i] = d;
  }
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_permute(t, perm, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_squeeze(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int d = lmf_optdim(L, 2, t->ndim, MF_ALL_DIMS, "squeeze");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_squeeze(t, d, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:unsqueeze(d): a new dimension of size 1 at position d of the result (1..ndim+1). */
static int t_unsqueeze(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int d = lmf_checknewdim(L, 2, t->ndim, "unsqueeze");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_unsqueeze(t, d, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:flatten([start [, end]]): dims start..end (default 1..-1) merged into one. */
static int t_flatten(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int nd = t->ndim ? t->ndim : 1; /* a 0-d tensor flattens to one element */
  int a = lmf_optdim(L, 2, nd, 0, "flatten"), b = lmf_optdim(L, 3, nd, nd - 1, "flatten");
  if (a > b)
    return luaL_error(L, "flatten: start dimension %d comes after end dimension %d", a + 1, b + 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s;
  if (t->ndim == 0) {
    int64_t one = 1;
    s = mf_reshape(t, 1, &one, slot);
  } else {
    s = mf_flatten(t, a, b, slot);
  }
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int t_contiguous(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (mf_is_contiguous(t)) {
    lua_settop(L, 1);
    return 1;
  }
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_contiguous(t, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:clone(): a contiguous copy with the same dtype and device. */
static int t_clone(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_cast(t, t->dtype, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* ---- joining ---------------------------------------------------------------------------- */

/* cat(list, d) and stack(list, d): the tensors of the list (numbers and tables converted)
 * joined along d (default 1). The list's tensors stay anchored in a table on the stack. */
static int join(lua_State *L, bool stack) {
  const char *fname = stack ? "stack" : "cat";
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  if (n == 0) return luaL_error(L, "%s: expected a non-empty list of tensors", fname);
  lua_settop(L, 2);
  lua_createtable(L, n, 0); /* 3: the converted tensors */
  mf_tensor **ts = (mf_tensor **)lua_newuserdatauv(L, (size_t)n * sizeof(mf_tensor *), 0); /* 4 */
  for (int i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    if (lua_isnil(L, -1)) return luaL_error(L, "%s: list entry %d is nil", fname, i);
    ts[i - 1] = lmf_totensor(L, -1, i > 1 ? ts[0] : NULL);
    lua_rawseti(L, 3, i);
  }
  int d = lua_isnoneornil(L, 2) ? 0
          : stack               ? lmf_checknewdim(L, 2, ts[0]->ndim, fname)
                                : lmf_checkdim(L, 2, ts[0]->ndim, fname);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = stack ? mf_stack(n, ts, d, slot) : mf_cat(n, ts, d, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int m_cat(lua_State *L) { return join(L, false); }
static int m_stack(lua_State *L) { return join(L, true); }

static const luaL_Reg methods[] = {
    {"reshape", t_reshape},
    {"view", t_view},
    {"view_as", t_view_as},
    {"expand", t_expand},
    {"expand_as", t_expand_as},
    {"transpose", t_transpose},
    {"t", t_t},
    {"permute", t_permute},
    {"squeeze", t_squeeze},
    {"unsqueeze", t_unsqueeze},
    {"flatten", t_flatten},
    {"contiguous", t_contiguous},
    {"clone", t_clone},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"cat", m_cat},
    {"stack", m_stack},
    {NULL, NULL},
};

void lmf_open_shape(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, methods); /* mf.reshape(t, shape), mf.transpose(t, 1, 2), ... */
  lmf_setfuncs(L, mod, funcs);
}
