/* tensor.c — the "moonflow.Tensor" userdata: its metatable and metamethods (__gc, __close,
 * __index, __newindex, __len, __tostring, arithmetic operators) and the inspection methods
 * (shape, size, dim, numel, dtype, device, stride, is_contiguous).
 *
 * __index looks a string key up in the methods table (`mf.Tensor`), then in the field getters
 * (`t.grad`; Lua code may add more), and hands any other key to index.c (t[i], t[{...}]). */
#include <stdlib.h>

#include "lmf.h"

/* ---- life cycle -------------------------------------------------------------------------- */

static int t_gc(lua_State *L) {
  mf_tensor **p = lmf_checkslot(L, 1);
  mf_release(*p);
  *p = NULL;
  return 0;
}

static int t_tostring(lua_State *L) {
  mf_tensor **p = lmf_checkslot(L, 1);
  if (*p == NULL) {
    lua_pushliteral(L, "moonflow.Tensor (closed)");
    return 1;
  }
  char *s = NULL;
  mf_status st = mf_format(*p, &s);
  if (st != MF_OK) {
    free(s);
    return lmf_error(L, st);
  }
  lua_pushstring(L, s);
  free(s);
  return 1;
}

static int t_len(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (t->ndim == 0) return luaL_error(L, "attempt to get the length of a 0-d tensor");
  lua_pushinteger(L, (lua_Integer)t->shape[0]);
  return 1;
}

/* ---- field access ------------------------------------------------------------------------ */

static int t_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, lmf_key_methods);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_rawgetp(L, LUA_REGISTRYINDEX, lmf_key_getters);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lua_pushvalue(L, 1);
      lua_call(L, 1, 1);
      return 1;
    }
    lmf_check(L, 1);
    lua_pushnil(L);
    return 1;
  }
  return lmf_index_get(L);
}

static int t_newindex(lua_State *L) {
  if (lua_type(L, 2) == LUA_TSTRING) {
    lmf_check(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, LMF_SETTERS);
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) == LUA_TNIL)
      return luaL_error(L, "cannot set field '%s' of a tensor", lua_tostring(L, 2));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_call(L, 2, 0);
    return 0;
  }
  return lmf_index_set(L);
}

/* t.grad: the accumulated gradient of a leaf, or nil (autograd fills t->grad). */
static int g_grad(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (t->grad == NULL)
    lua_pushnil(L);
  else
    *lmf_newslot(L) = mf_retain(t->grad);
  return 1;
}

/* ---- inspection --------------------------------------------------------------------------- */

static int t_shape(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  lmf_pushshape(L, t->ndim, t->shape);
  return 1;
}

static int t_size(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lmf_pushshape(L, t->ndim, t->shape);
    return 1;
  }
  int d = lmf_checkdim(L, 2, t->ndim, "size");
  lua_pushinteger(L, (lua_Integer)t->shape[d]);
  return 1;
}

static int t_stride(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  if (lua_isnoneornil(L, 2)) {
    lmf_pushshape(L, t->ndim, t->stride);
    return 1;
  }
  int d = lmf_checkdim(L, 2, t->ndim, "stride");
  lua_pushinteger(L, (lua_Integer)t->stride[d]);
  return 1;
}

static int t_dim(lua_State *L) {
  lua_pushinteger(L, lmf_check(L, 1)->ndim);
  return 1;
}

static int t_numel(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mf_numel(lmf_check(L, 1)));
  return 1;
}

static int t_dtype(lua_State *L) {
  lua_pushstring(L, mf_dtype_name(lmf_check(L, 1)->dtype));
  return 1;
}

static int t_device(lua_State *L) {
  lua_pushstring(L, mf_device_name(mf_tensor_device(lmf_check(L, 1))));
  return 1;
}

static int t_is_contiguous(lua_State *L) {
  lua_pushboolean(L, mf_is_contiguous(lmf_check(L, 1)));
  return 1;
}

static int t_is_floating_point(lua_State *L) {
  lua_pushboolean(L, mf_dtype_is_float(lmf_check(L, 1)->dtype));
  return 1;
}

/* t:close(): frees the tensor now (as `local t <close>` does at scope end). */
static int t_close(lua_State *L) {
  lmf_check(L, 1);
  return t_gc(L);
}

static int t_is_closed(lua_State *L) {
  mf_tensor **p = lmf_checkslot(L, 1);
  lua_pushboolean(L, *p == NULL);
  return 1;
}

/* mf.is_tensor(x) */
static int m_is_tensor(lua_State *L) {
  lua_pushboolean(L, lmf_testslot(L, 1) != NULL);
  return 1;
}

static const luaL_Reg meta[] = {
    {"__gc", t_gc},   {"__close", t_gc},    {"__tostring", t_tostring},
    {"__len", t_len}, {"__index", t_index}, {"__newindex", t_newindex},
    {NULL, NULL},
};

static const luaL_Reg methods[] = {
    {"shape", t_shape},
    {"size", t_size},
    {"stride", t_stride},
    {"dim", t_dim},
    {"numel", t_numel},
    {"dtype", t_dtype},
    {"device", t_device},
    {"is_contiguous", t_is_contiguous},
    {"is_floating_point", t_is_floating_point},
    {"close", t_close},
    {"is_closed", t_is_closed},
    {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"is_tensor", m_is_tensor},
    {NULL, NULL},
};

/* Makes the metatable and the methods/getters/setters tables (registry and module fields
 * `Tensor`, `_getters`, `_setters`: Lua code adds methods and fields there). */
void lmf_open_tensor(lua_State *L, int mod, int meth) {
  luaL_newmetatable(L, LMF_TENSOR);
  luaL_setfuncs(L, meta, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, lmf_key_tensor);
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, funcs);
  lua_pushvalue(L, meth);
  lua_setfield(L, LUA_REGISTRYINDEX, LMF_METHODS);
  lua_pushvalue(L, meth);
  lua_rawsetp(L, LUA_REGISTRYINDEX, lmf_key_methods);
  lua_pushvalue(L, meth);
  lua_setfield(L, mod, "Tensor");
  lua_newtable(L);
  lua_pushcfunction(L, g_grad);
  lua_setfield(L, -2, "grad");
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMF_GETTERS);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, lmf_key_getters);
  lua_setfield(L, mod, "_getters");
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, LMF_SETTERS);
  lua_setfield(L, mod, "_setters");
}
