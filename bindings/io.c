/* io.c — Lua bindings of the core's file helpers (core/include/moonflow_io.h):
 *   mf.io.read_idx(path) -> tensor             (raw or gzip IDX; u8 -> uint8, i8/i16/i32 -> int32,
 *                                               f32 -> float32, f64 -> float64)
 *   mf.io.write_idx(path, t [, {type=}])       (type "u8" "i8" "i16" "i32" "f32" "f64", default
 *                                               from the dtype; gzip when path ends in ".gz")
 *   mf.io.md5(path [, {gunzip=true}]) -> hex   (of the decompressed content with gunzip)
 *   mf.io.md5_string(s) -> hex
 * and index_select, which the data loaders use to gather batches:
 *   mf.index_select(t, dim, index), t:index_select(dim, index)  (1-based dim and indices; index a
 *                                               1-D integer tensor or a table of integers)
 */
#include <string.h>

#include "lmf.h"
#include "moonflow_io.h"

/* ---- IDX ------------------------------------------------------------------------------------ */

static int io_read_idx(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_read_idx(path, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const struct {
  const char *name;
  mf_idx_type type;
} type_names[] = {
    {"u8", MF_IDX_U8},   {"uint8", MF_IDX_U8},    {"i8", MF_IDX_I8},   {"int8", MF_IDX_I8},
    {"i16", MF_IDX_I16}, {"int16", MF_IDX_I16},   {"i32", MF_IDX_I32}, {"int32", MF_IDX_I32},
    {"f32", MF_IDX_F32}, {"float32", MF_IDX_F32}, {"f64", MF_IDX_F64}, {"float64", MF_IDX_F64},
};

/* write_idx(path, t [, {type=}]) */
static int io_write_idx(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mf_tensor *t = lmf_check(L, 2);
  mf_idx_type type = MF_IDX_AUTO;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    if (lua_getfield(L, 3, "type") != LUA_TNIL) {
      const char *name = luaL_checkstring(L, -1);
      size_t i, n = sizeof type_names / sizeof type_names[0];
      for (i = 0; i < n && strcmp(type_names[i].name, name) != 0; i++) {}
      if (i == n)
        return luaL_error(L,
                          "write_idx: unknown IDX type '%s' (expected u8, i8, i16, i32, f32 or "
                          "f64)",
                          name);
      type = type_names[i].type;
    }
    lua_pop(L, 1);
  }
  mf_status s = mf_write_idx(path, t, type);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* ---- MD5 ------------------------------------------------------------------------------------- */

/* md5(path [, {gunzip=}]) */
static int io_md5(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  bool gunzip = false;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "gunzip");
    gunzip = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  char hex[33];
  mf_status s = mf_md5_file(path, gunzip, hex);
  if (s != MF_OK) return lmf_error(L, s);
  lua_pushstring(L, hex);
  return 1;
}

static int io_md5_string(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  char hex[33];
  mf_md5_buffer(p, n, hex);
  lua_pushstring(L, hex);
  return 1;
}

/* ---- index_select -------------------------------------------------------------------------- */

/* index_select(t, dim, index): the core takes 0-based positions; its messages print them 1-based,
 * so index - 1 goes in and a bad Lua index comes back in the user's own numbering. */
static int t_index_select(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  int dim = lmf_checkdim(L, 2, t->ndim, "index_select");
  if (lua_isnoneornil(L, 3)) return luaL_argerror(L, 3, "index tensor or table expected");
  mf_tensor *idx = lmf_totensor(L, 3, t); /* a table: on t's device */
  if (!mf_dtype_is_float(idx->dtype) && idx->dtype != MF_BOOL) idx = lmf_shift(L, idx, -1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_index_select(t, dim, idx, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg io_funcs[] = {
    {"read_idx", io_read_idx},
    {"write_idx", io_write_idx},
    {"md5", io_md5},
    {"md5_string", io_md5_string},
    {NULL, NULL},
};

static const luaL_Reg methods[] = {
    {"index_select", t_index_select},
    {NULL, NULL},
};

void lmf_open_io(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, meth, methods);
  lmf_setfuncs(L, mod, methods);
  lua_getfield(L, mod, "io"); /* another file may have made mf.io already */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, mod, "io");
  }
  lmf_setfuncs(L, -1, io_funcs);
  lua_pop(L, 1);
}
