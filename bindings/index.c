/* index.c — indexing: t[i] (a view of row i, or a Lua value for a 1-D tensor), Torch7-style
 * t[{ {1, 3}, 2 }] (per dimension: a number selects, {a, b [, step]} is the inclusive range a..b,
 * {a} keeps index a as a range of one, {} is the whole dimension), assignment through both
 * (t[i] = v, t[{ {}, 1 }] = 0), and the methods narrow, select, fill_, zero_, copy_.
 *
 * Intermediate views are held by a tensor userdata (a "slot"), so a range error raised midway
 * leaks nothing. */
#include "lmf.h"

/* Replaces the slot's tensor by the result of a view op (computed into next). */
static void step(lua_State *L, mf_tensor **slot, mf_status s, mf_tensor *next) {
  if (s != MF_OK) lmf_error(L, s);
  mf_release(*slot);
  *slot = next;
}

#define STEP(call)                                                                                 \
  do {                                                                                             \
    mf_status s_ = (call);                                                                         \
    step(L, slot, s_, next);                                                                       \
  } while (0)

static lua_Integer checkint(lua_State *L, int idx, const char *what) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (!isint) {
    if (lua_type(L, idx) == LUA_TNUMBER)
      luaL_error(L, "index: %s must be an integer, got %s", what, lua_tostring(L, idx));
    luaL_error(L, "index: %s must be an integer, got %s", what, luaL_typename(L, idx));
  }
  return v;
}

/* Applies the spec table at `key` to t; pushes a userdata holding the view and returns the view.
 * *scalar is set when every dimension was selected by a number (the view is 0-d). */
static mf_tensor *spec_view(lua_State *L, mf_tensor *t, int key, bool *scalar) {
  int nspec = (int)luaL_len(L, key);
  if (nspec > t->ndim)
    luaL_error(L, "index: too many indices (%d) for a %d-d tensor", nspec, t->ndim);
  mf_tensor **slot = lmf_newslot(L);
  *slot = mf_retain(t);
  int dim = 0; /* the current dimension of *slot */
  int top = lua_gettop(L);
  for (int j = 1; j <= nspec; j++) {
    mf_tensor *cur = *slot, *next = NULL;
    int type = lua_geti(L, key, j);
    if (type == LUA_TNUMBER) {
      int64_t i = lmf_toindex(L, checkint(L, -1, "an index"), cur->shape[dim], j - 1, NULL);
      STEP(mf_select(cur, dim, i, &next));
    } else if (type == LUA_TTABLE) {
      int m = (int)luaL_len(L, -1);
      if (m > 3)
        luaL_error(L,
                   "index: range for dimension %d has %d entries, expected {}, {i}, {a, b} or "
                   "{a, b, step}",
                   j, m);
      int64_t n = cur->shape[dim], a = 0, b = n - 1, st = 1;
      if (m >= 1) {
        lua_geti(L, -1, 1);
        a = lmf_toindex(L, checkint(L, -1, "a range start"), n, j - 1, NULL);
        b = a;
        lua_pop(L, 1);
      }
      if (m >= 2) {
        lua_geti(L, -1, 2);
        lua_Integer e = checkint(L, -1, "a range end");
        int64_t e0 = e < 0 ? n + e : e - 1; /* a..a-1 is empty; else e must be an index */
        b = e0 == a - 1 ? e0 : lmf_toindex(L, e, n, j - 1, NULL);
        lua_pop(L, 1);
        if (b < a - 1)
          luaL_error(L, "index: range {%I, %I} is reversed for dimension %d of size %I",
                     (LUAI_UACINT)(a + 1), (LUAI_UACINT)e, j, (LUAI_UACINT)n);
      }
      if (m == 3) {
        lua_geti(L, -1, 3);
        st = checkint(L, -1, "a range step");
        if (st < 1) luaL_error(L, "index: range step must be positive, got %I", (LUAI_UACINT)st);
        lua_pop(L, 1);
      }
      if (m != 0) STEP(mf_slice(cur, dim, a, b + 1, st, &next));
      dim++;
    } else {
      luaL_error(L, "index: entry %d must be a number or a range table, got %s", j,
                 luaL_typename(L, -1));
    }
    lua_settop(L, top);
  }
  *scalar = nspec == t->ndim && dim == 0;
  return *slot;
}

/* The view that t[key] denotes, pushed as a userdata. *scalar: selected down to one element. */
static mf_tensor *key_view(lua_State *L, mf_tensor *t, int key, bool *scalar) {
  int type = lua_type(L, key);
  if (type == LUA_TNUMBER) {
    if (t->ndim == 0) luaL_error(L, "index: cannot index a 0-d tensor (use t:item())");
    int64_t i = lmf_toindex(L, checkint(L, key, "an index"), t->shape[0], 0, NULL);
    mf_tensor **slot = lmf_newslot(L);
    mf_status s = mf_select(t, 0, i, slot);
    if (s != MF_OK) lmf_error(L, s);
    *scalar = t->ndim == 1;
    return *slot;
  }
  if (type == LUA_TTABLE && !lmf_test(L, key)) return spec_view(L, t, key, scalar);
  if (lmf_test(L, key)) luaL_error(L, "index: indexing with a tensor is not supported yet");
  luaL_error(L, "index: bad index (%s): expected an integer or a table of ranges",
             luaL_typename(L, key));
  return NULL;
}

/* __index for non-string keys: stack t, key. */
int lmf_index_get(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  bool scalar;
  mf_tensor *v = key_view(L, t, 2, &scalar);
  if (scalar) {
    mf_status s = lmf_pushitem(L, v);
    if (s != MF_OK) return lmf_error(L, s);
  }
  return 1;
}

/* Writes the Lua value at idx into the view: a number or boolean fills it, a tensor or nested
 * table is copied in (broadcast to the view's shape, cast to its dtype). */
static void assign(lua_State *L, mf_tensor *view, int idx) {
  mf_status s;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: s = mf_fill_(view, lua_tonumber(L, idx)); break;
  case LUA_TBOOLEAN: s = mf_fill_(view, lua_toboolean(L, idx) ? 1.0 : 0.0); break;
  case LUA_TUSERDATA:
  case LUA_TTABLE: s = mf_copy_(view, lmf_totensor(L, idx, view)); break;
  default:
    luaL_error(L,
               "index: cannot assign a %s to a tensor (expected a number, boolean, tensor or "
               "table)",
               luaL_typename(L, idx));
    return;
  }
  if (s != MF_OK) lmf_error(L, s);
}

/* __newindex for non-string keys: stack t, key, value. */
int lmf_index_set(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  bool scalar;
  mf_tensor *v = key_view(L, t, 2, &scalar);
  assign(L, v, 3);
  return 0;
}

/* ---- methods --------------------------------------------------------------------------- */

/* t:narrow(d, start, len): elements start .. start+len-1 of dimension d (a view). */
static int t_narrow(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int d = lmf_checkdim(L, 2, t->ndim, "narrow");
  lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
  int64_t n = t->shape[d];
  if (len < 0) return luaL_error(L, "narrow: length must be >= 0, got %I", (LUAI_UACINT)len);
  int64_t s0 = (len == 0 && start == n + 1) ? n : lmf_toindex(L, start, n, d, "narrow");
  if (s0 + len > n)
    return luaL_error(L,
                      "narrow: start %I with length %I goes past the end of dimension %d of "
                      "size %I",
                      (LUAI_UACINT)start, (LUAI_UACINT)len, d + 1, (LUAI_UACINT)n);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_narrow(t, d, s0, len, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:select(d, i): the slice at index i of dimension d, which is removed (a view). */
static int t_select(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int d = lmf_checkdim(L, 2, t->ndim, "select");
  int64_t i = lmf_toindex(L, luaL_checkinteger(L, 3), t->shape[d], d, "select");
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_select(t, d, i, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* t:fill_(v): every element = v; returns t. */
static int t_fill_(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  double v = lua_isboolean(L, 2) ? (double)lua_toboolean(L, 2) : luaL_checknumber(L, 2);
  mf_status s = mf_fill_(t, v);
  if (s != MF_OK) return lmf_error(L, s);
  lua_settop(L, 1);
  return 1;
}

static int t_zero_(lua_State *L) {
  mf_status s = mf_fill_(lmf_check(L, 1), 0.0);
  if (s != MF_OK) return lmf_error(L, s);
  lua_settop(L, 1);
  return 1;
}

/* t:copy_(src): t = src, broadcast and cast; returns t. */
static int t_copy_(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  luaL_checkany(L, 2);
  mf_status s = mf_copy_(t, lmf_totensor(L, 2, t));
  if (s != MF_OK) return lmf_error(L, s);
  lua_settop(L, 1);
  return 1;
}

static const luaL_Reg methods[] = {
    {"narrow", t_narrow}, {"select", t_select}, {"fill_", t_fill_},
    {"zero_", t_zero_},   {"copy_", t_copy_},   {NULL, NULL},
};

void lmf_open_index(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, methods); /* mf.narrow(t, d, start, len), ... */
}
