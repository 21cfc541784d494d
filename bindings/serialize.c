/* serialize.c — Lua bindings of the tensor files (core/include/moonflow_io.h):
 *   mf.save(path, x [, metadata])   safetensors. x is a tensor (saved under the name "tensor") or a
 *                                   table of named tensors; nested tables are flattened with "."
 *                                   ({layer1 = {weight = w}} -> "layer1.weight"; list entries by
 *                                   their 1-based index: "layers.1.bias"). metadata: a table of
 *                                   string (or number) values, stored under __metadata__.
 *   mf.load(path [, {names = {...}}]) -> table name -> tensor, metadata table
 *                                   (the flat names; only the named tensors with names=, a
 *                                   missing one is an error; a plain list of names also works)
 *   mf.save_npz(path, x)            .npz (np.savez layout); a single tensor is saved as "arr_0",
 *                                   numpy's name for a positional array
 *   mf.load_npz(path [, names])     -> table name -> tensor
 *   mf.save_npy(path, t), mf.load_npy(path) -> tensor
 * Tensors on other devices are copied to the CPU for saving; loaded tensors are CPU tensors
 * (F16/BF16 and I8/I16/U16/U32/U64 widened as moonflow_io.h says).
 *
 * Nothing C-owned is live across a possible Lua error: the name and tensor arrays handed to the
 * core live in Lua userdata, and a reader's result list lives in a userdata whose __gc frees it.
 */
#include <stdlib.h>
#include <string.h>

#include "lmf.h"
#include "moonflow_io.h"

#define LIST_MT "moonflow.tensorlist"
#define MAX_NESTING 64

/* ---- flattening a table of named tensors ---------------------------------------------------- */

/* Appends name (at the stack top, popped) and the tensor t to the sequences at nidx/tidx. */
static void add_named(lua_State *L, int nidx, int tidx, int tpos) {
  lua_Integer k = (lua_Integer)lua_rawlen(L, nidx) + 1;
  lua_rawseti(L, nidx, k);
  lua_pushvalue(L, tpos);
  lua_rawseti(L, tidx, k);
}

/* Walks the table at idx; prefix (a string at pidx, or 0 for none). */
static void flatten(lua_State *L, int idx, int pidx, int nidx, int tidx, int depth,
                    const char *fname) {
  if (depth > MAX_NESTING)
    luaL_error(L, "%s: tables nested more than %d deep (a cycle?)", fname, MAX_NESTING);
  luaL_checkstack(L, 8, fname);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int v = lua_gettop(L), k = v - 1;
    /* the full name */
    if (lua_type(L, k) == LUA_TSTRING)
      lua_pushvalue(L, k);
    else if (lua_isinteger(L, k))
      lua_pushfstring(L, "%I", (LUAI_UACINT)lua_tointeger(L, k));
    else
      luaL_error(L, "%s: key of type %s in the table of tensors (expected strings or integers)",
                 fname, luaL_typename(L, k));
    if (pidx) {
      lua_pushvalue(L, pidx);
      lua_insert(L, -2);
      lua_pushliteral(L, ".");
      lua_insert(L, -2);
      lua_concat(L, 3);
    }
    int name = lua_gettop(L);
    if (lmf_test(L, v)) {
      lua_pushvalue(L, name);
      add_named(L, nidx, tidx, v);
    } else if (lua_istable(L, v)) {
      flatten(L, v, name, nidx, tidx, depth + 1, fname);
    } else {
      luaL_error(L, "%s: '%s' is a %s, expected a tensor or a table of tensors", fname,
                 lua_tostring(L, name), luaL_typename(L, v));
    }
    lua_settop(L, k); /* keep the key for lua_next */
  }
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct named {
  int n;
  const char **names;
  mf_tensor **tensors;
} named;

/* The tensors of argument arg as C arrays (userdata on the stack keep them alive). single: the name
 * of a lone tensor. sorted: order by name (for formats that keep the order given). */
static named check_named(lua_State *L, int arg, const char *single, bool sorted,
                         const char *fname) {
  lua_newtable(L);
  int nidx = lua_gettop(L);
  lua_newtable(L);
  int tidx = lua_gettop(L);
  if (lmf_test(L, arg)) {
    lua_pushstring(L, single);
    add_named(L, nidx, tidx, arg);
  } else if (lua_istable(L, arg)) {
    flatten(L, arg, 0, nidx, tidx, 0, fname);
  } else {
    luaL_argerror(L, arg, "tensor or table of named tensors expected");
  }
  named r;
  r.n = (int)lua_rawlen(L, nidx);
  r.names = lua_newuserdatauv(L, sizeof(char *) * (size_t)(r.n + 1), 0);
  r.tensors = lua_newuserdatauv(L, sizeof(mf_tensor *) * (size_t)(r.n + 1), 0);
  const char **pairs = lua_newuserdatauv(L, 2 * sizeof(char *) * (size_t)(r.n + 1), 0);
  for (int i = 0; i < r.n; i++) {
    lua_rawgeti(L, nidx, i + 1);
    pairs[2 * i] = lua_tostring(L, -1); /* anchored in the names table */
    lua_pop(L, 1);
    lua_rawgeti(L, tidx, i + 1);
    pairs[2 * i + 1] = (const char *)lmf_check(L, -1); /* anchored in the tensors table */
    lua_pop(L, 1);
  }
  if (sorted) qsort(pairs, (size_t)r.n, 2 * sizeof(char *), cmp_names);
  for (int i = 0; i < r.n; i++) {
    r.names[i] = pairs[2 * i];
    r.tensors[i] = (mf_tensor *)pairs[2 * i + 1];
  }
  return r;
}

/* ---- results ----------------------------------------------------------------------------------
 */

static int list_gc(lua_State *L) {
  mf_tensor_list *l = luaL_checkudata(L, 1, LIST_MT);
  mf_tensor_list_free(l);
  return 0;
}

/* A zeroed list in a userdata with __gc, pushed. */
static mf_tensor_list *new_list(lua_State *L) {
  return lmf_newgcdata(L, sizeof(mf_tensor_list), LIST_MT, list_gc);
}

/* Pushes the table name -> tensor, taking the tensors out of l one by one. */
static void push_tensors(lua_State *L, mf_tensor_list *l) {
  lua_createtable(L, 0, l->n);
  for (int i = 0; i < l->n; i++) {
    mf_tensor **slot = lmf_newslot(L);
    *slot = l->tensors[i];
    l->tensors[i] = NULL;
    lua_setfield(L, -2, l->names[i]);
  }
}

static void push_meta(lua_State *L, const mf_tensor_list *l) {
  lua_createtable(L, 0, l->nmeta);
  for (int i = 0; i < l->nmeta; i++) {
    lua_pushstring(L, l->meta_values[i]);
    lua_setfield(L, -2, l->meta_keys[i]);
  }
}

/* Names to select from argument arg: nil, a list of names, or {names = list}. Returns the count;
 * the array lives in a userdata pushed on the stack. */
static int check_selection(lua_State *L, int arg, const char ***sel, const char *fname) {
  *sel = NULL;
  if (lua_isnoneornil(L, arg)) return 0;
  luaL_checktype(L, arg, LUA_TTABLE);
  int list = arg;
  if (lua_getfield(L, arg, "names") != LUA_TNIL) {
    if (!lua_istable(L, -1)) luaL_error(L, "%s: names must be a list of strings", fname);
    list = lua_gettop(L);
  } else {
    lua_pop(L, 1);
  }
  int n = (int)lua_rawlen(L, list);
  const char **s = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (int i = 0; i < n; i++) {
    if (lua_rawgeti(L, list, i + 1) != LUA_TSTRING)
      luaL_error(L, "%s: names[%d] is a %s, expected a string", fname, i + 1, luaL_typename(L, -1));
    s[i] = lua_tostring(L, -1); /* anchored in the list */
    lua_pop(L, 1);
  }
  *sel = s;
  return n;
}

/* ---- safetensors ---------------------------------------------------------------------------- */

static int s_save(lua_State *L) {
  lua_settop(L, 3);
  const char *path = luaL_checkstring(L, 1);
  named t = check_named(L, 2, "tensor", false, "save");
  int nmeta = 0;
  const char **keys = NULL, **values = NULL;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_newtable(L); /* anchors the strings */
    int anchor = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      if (lua_type(L, -2) != LUA_TSTRING)
        return luaL_error(L, "save: metadata keys must be strings, got a %s", luaL_typename(L, -2));
      if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
        return luaL_error(L, "save: metadata '%s' is a %s, expected a string", lua_tostring(L, -2),
                          luaL_typename(L, -1));
      lua_pushvalue(L, -2);
      lua_rawseti(L, anchor, ++nmeta * 2 - 1);
      luaL_tolstring(L, -1, NULL);
      lua_rawseti(L, anchor, nmeta * 2);
      lua_pop(L, 1);
    }
    keys = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nmeta + 1), 0);
    values = lua_newuserdatauv(L, sizeof(char *) * (size_t)(nmeta + 1), 0);
    for (int i = 0; i < nmeta; i++) {
      lua_rawgeti(L, anchor, 2 * i + 1);
      keys[i] = lua_tostring(L, -1);
      lua_rawgeti(L, anchor, 2 * i + 2);
      values[i] = lua_tostring(L, -1);
      lua_pop(L, 2);
    }
  }
  mf_status s = mf_save_safetensors(path, t.n, t.names, t.tensors, nmeta, keys, values);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int s_load(lua_State *L) {
  lua_settop(L, 2);
  const char *path = luaL_checkstring(L, 1);
  const char **sel;
  int nsel = check_selection(L, 2, &sel, "load");
  mf_tensor_list *l = new_list(L);
  mf_status s = mf_load_safetensors(path, nsel, sel, l);
  if (s != MF_OK) return lmf_error(L, s);
  push_tensors(L, l);
  push_meta(L, l);
  return 2;
}

/* ---- npy / npz --------------------------------------------------------------------------------
 */

static int s_save_npz(lua_State *L) {
  lua_settop(L, 2);
  const char *path = luaL_checkstring(L, 1);
  named t = check_named(L, 2, "arr_0", true, "save_npz");
  mf_status s = mf_save_npz(path, t.n, t.names, t.tensors);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int s_load_npz(lua_State *L) {
  lua_settop(L, 2);
  const char *path = luaL_checkstring(L, 1);
  const char **sel;
  int nsel = check_selection(L, 2, &sel, "load_npz");
  mf_tensor_list *l = new_list(L);
  mf_status s = mf_load_npz(path, nsel, sel, l);
  if (s != MF_OK) return lmf_error(L, s);
  push_tensors(L, l);
  return 1;
}

static int s_save_npy(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mf_tensor *t = lmf_check(L, 2);
  mf_status s = mf_save_npy(path, t);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int s_load_npy(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_load_npy(path, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg funcs[] = {
    {"save", s_save},
    {"load", s_load},
    {"save_npz", s_save_npz},
    {"load_npz", s_load_npz},
    {"save_npy", s_save_npy},
    {"load_npy", s_load_npy},
    {NULL, NULL},
};

void lmf_open_serialize(lua_State *L, int mod, int meth) {
  (void)meth;
  lmf_setfuncs(L, mod, funcs);
}
