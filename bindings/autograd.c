/* autograd.c — Lua bindings of autograd: t:requires_grad([b]), t:needs_grad(), t:backward([g [,
 * {retain_graph=}]]), t:detach(), the fields t.grad_fn and t.is_leaf, grad mode
 * (mf.no_grad / mf.enable_grad as scopes or around a function, mf.is_grad_enabled,
 * mf.set_grad_enabled) and mf.grad(outputs, inputs [, grad_outputs [, opts]]). */
#include <stdlib.h>

#include "lmf.h"

/* t:requires_grad([on = true]) -> t */
static int t_requires_grad(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  bool on = lua_isnone(L, 2) ? true : lua_toboolean(L, 2);
  mf_status s = mf_set_requires_grad(t, on);
  if (s) return lmf_error(L, s);
  lua_settop(L, 1);
  return 1;
}

/* t:needs_grad() -> whether gradients flow to t (a marked leaf or a recorded result) */
static int t_needs_grad(lua_State *L) {
  lua_pushboolean(L, mf_requires_grad(lmf_check(L, 1)));
  return 1;
}

static bool opt_flag(lua_State *L, int arg, const char *name) {
  if (!lua_istable(L, arg)) return false;
  lua_getfield(L, arg, name);
  bool b = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return b;
}

/* t:backward([grad] [, {retain_graph=}]) */
static int t_backward(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int opts = 2;
  mf_tensor *g = NULL;
  if (lmf_test(L, 2) || lua_isnumber(L, 2) || (lua_istable(L, 2) && lua_rawlen(L, 2) > 0)) {
    g = lmf_totensor(L, 2, t);
    opts = 3;
  }
  mf_status s = mf_backward(t, g, opt_flag(L, opts, "retain_graph"));
  return s ? lmf_error(L, s) : 0;
}

static int t_detach(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_detach(t, slot);
  return s ? lmf_error(L, s) : 1;
}

static int g_grad_fn(lua_State *L) {
  const char *name = mf_grad_fn_name(lmf_check(L, 1));
  if (name)
    lua_pushstring(L, name);
  else
    lua_pushnil(L);
  return 1;
}

static int g_is_leaf(lua_State *L) {
  lua_pushboolean(L, mf_is_leaf(lmf_check(L, 1)));
  return 1;
}

/* t.grad = g | nil. Called by __newindex through lua_call, so Lua cannot name it in an argument
 * error: the messages name the field themselves. */
static int s_grad(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_tensor *g = NULL;
  if (!lua_isnil(L, 2) && (g = lmf_test(L, 2)) == NULL)
    return luaL_error(L, "grad: t.grad must be a tensor or nil, got %s", luaL_typename(L, 2));
  mf_status s = mf_set_grad(t, g);
  return s ? lmf_error(L, s) : 0;
}

/* ---- grad mode ---------------------------------------------------------------------------- */

#define GRAD_SCOPE "moonflow.grad_scope"

/* A scope object restores the previous mode when closed (`local _ <close> = mf.no_grad()`). */
static int scope_close(lua_State *L) {
  int *prev = luaL_checkudata(L, 1, GRAD_SCOPE);
  if (*prev >= 0) mf_set_grad_enabled(*prev);
  *prev = -1;
  return 0;
}

/* mf.no_grad([fn, ...]) / mf.enable_grad([fn, ...]): with a function, calls it in that mode and
 * returns its results (the mode is restored on errors too); without, returns a scope. */
static int set_mode(lua_State *L, bool on) {
  if (lua_isnoneornil(L, 1)) {
    int *prev = lua_newuserdatauv(L, sizeof(int), 0);
    *prev = -1;
    luaL_setmetatable(L, GRAD_SCOPE);
    *prev = mf_set_grad_enabled(on);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TFUNCTION);
  bool prev = mf_set_grad_enabled(on);
  int n = lua_gettop(L) - 1;
  int st = lua_pcall(L, n, LUA_MULTRET, 0);
  mf_set_grad_enabled(prev);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L);
}

static int m_no_grad(lua_State *L) { return set_mode(L, false); }
static int m_enable_grad(lua_State *L) { return set_mode(L, true); }

static int m_is_grad_enabled(lua_State *L) {
  lua_pushboolean(L, mf_grad_enabled());
  return 1;
}

static int m_set_grad_enabled(lua_State *L) {
  lua_pushboolean(L, mf_set_grad_enabled(lua_toboolean(L, 1)));
  return 1;
}

/* ---- mf.grad ----------------------------------------------------------------------------------
 */

/* Reads a tensor or a list of tensors at arg into a new array (kept alive by the stack value). */
static int tensor_list(lua_State *L, int arg, mf_tensor ***out, bool allow_nil_entries,
                       const char *what) {
  if (lmf_test(L, arg)) {
    mf_tensor **a = lua_newuserdatauv(L, sizeof *a, 0);
    a[0] = lmf_check(L, arg);
    *out = a;
    return 1;
  }
  luaL_argexpected(L, lua_istable(L, arg), arg, "a tensor or a list of tensors");
  int n = (int)lua_rawlen(L, arg);
  if (n < 1) luaL_error(L, "grad: %s is an empty list", what);
  mf_tensor **a = lua_newuserdatauv(L, (size_t)n * sizeof *a, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, arg, i + 1);
    a[i] = lmf_test(L, -1);
    if (!a[i] && !(allow_nil_entries && lua_isnil(L, -1)))
      luaL_error(L, "grad: entry %d of %s is not a tensor", i + 1, what);
    lua_pop(L, 1);
  }
  *out = a;
  return n;
}

/* mf.grad(outputs, inputs [, grad_outputs [, {retain_graph=, create_graph=}]]) -> gradients, a
 * list when inputs is a list (nil where an input is not reached), else one tensor or nil. */
static int m_grad(lua_State *L) {
  lua_settop(L, 4); /* the optional arguments are read after values are pushed */
  mf_tensor **outs, **ins, **gos = NULL;
  int nout = tensor_list(L, 1, &outs, false, "outputs");
  int nin = tensor_list(L, 2, &ins, false, "inputs");
  if (!lua_isnoneornil(L, 3)) {
    int ng = tensor_list(L, 3, &gos, true, "grad_outputs");
    if (ng != nout) return luaL_error(L, "grad: %d grad_outputs for %d outputs", ng, nout);
  }
  bool retain = opt_flag(L, 4, "retain_graph"), create = opt_flag(L, 4, "create_graph");
  bool list = !lmf_test(L, 2);
  lua_createtable(L, nin, 0);
  int res = lua_gettop(L);
  /* slots for the results first, so that nothing C-owned is live if a Lua error comes */
  mf_tensor ***slots = lua_newuserdatauv(L, (size_t)nin * sizeof *slots, 0);
  for (int i = 0; i < nin; i++) {
    slots[i] = lmf_newslot(L);
    lua_rawseti(L, res, i + 1);
  }
  mf_tensor **grads = malloc((size_t)nin * sizeof *grads);
  if (!grads) return luaL_error(L, "grad: out of memory");
  mf_status s = mf_grad(nout, outs, gos, nin, ins, retain, create, grads);
  if (!s)
    for (int i = 0; i < nin; i++) *slots[i] = grads[i];
  free(grads);
  if (s) return lmf_error(L, s);
  for (int i = 0; i < nin; i++)
    if (!*slots[i]) { /* not reached: nil */
      lua_pushnil(L);
      lua_rawseti(L, res, i + 1);
    }
  if (list) {
    lua_pushvalue(L, res);
    return 1;
  }
  lua_rawgeti(L, res, 1);
  return 1;
}

static const luaL_Reg methods[] = {
    {"requires_grad", t_requires_grad},
    {"needs_grad", t_needs_grad},
    {"backward", t_backward},
    {"detach", t_detach},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"no_grad", m_no_grad},
    {"enable_grad", m_enable_grad},
    {"is_grad_enabled", m_is_grad_enabled},
    {"set_grad_enabled", m_set_grad_enabled},
    {"grad", m_grad},
    {NULL, NULL},
};

static void set_field_fn(lua_State *L, const char *registry, const char *name, lua_CFunction f) {
  lua_getfield(L, LUA_REGISTRYINDEX, registry);
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

void lmf_open_autograd(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, funcs);
  set_field_fn(L, LMF_GETTERS, "grad_fn", g_grad_fn);
  set_field_fn(L, LMF_GETTERS, "is_leaf", g_is_leaf);
  set_field_fn(L, LMF_SETTERS, "grad", s_grad);
  if (luaL_newmetatable(L, GRAD_SCOPE)) {
    lua_pushcfunction(L, scope_close);
    lua_setfield(L, -2, "__close");
  }
  lua_pop(L, 1);
}
