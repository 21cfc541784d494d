/* lmf.h — what the Lua binding files share: the tensor userdata ("moonflow.Tensor"), argument
 * checks and conversions (1-based dims and indices, shapes, dtypes, devices, options), errors,
 * and each file's registration function for luaopen_moonflow_core (module.c).
 *
 * Ownership (liolib's pattern): a tensor userdata holds one `mf_tensor *` reference, NULL while the
 * userdata is "closed" (just made, or after __close). A binding first pushes a closed userdata with
 * lmf_newslot, then lets the core write its result straight into the slot: whatever happens next,
 * __gc frees it. Temporaries that must outlive a possible Lua error live in such slots too, so no
 * binding ever raises while it holds a C-owned reference.
 *
 * Dims and indices: Lua's are 1-based, negative ones count from the end (-1 = last); the core's
 * are 0-based. lmf_checkdim/lmf_toindex convert and raise clear range errors.
 */
#ifndef LMF_H
#define LMF_H

#include <lauxlib.h>
#include <lua.h>

#include "moonflow.h"

#if defined(__GNUC__)
#define LMF_API __attribute__((visibility("hidden")))
#else
#define LMF_API
#endif

#define LMF_TENSOR "moonflow.Tensor"   /* the metatable's registry name (its __name) */
#define LMF_METHODS "moonflow.methods" /* registry: the methods table (`mf.Tensor`) */
#define LMF_GETTERS "moonflow.getters" /* registry: field getters, name -> function(t) */
#define LMF_SETTERS "moonflow.setters" /* registry: field setters, name -> function(t, v) */
#define LMF_DEVICE "moonflow.device"   /* registry: default device spec of new tensors, or nil */
/* The metatable and the methods and getters tables are also in the registry under these
 * addresses (lua_rawgetp), which every call reads without hashing a name. */
LMF_API extern const char lmf_key_tensor[1], lmf_key_methods[1], lmf_key_getters[1];

/* ---- the userdata ----------------------------------------------------------------------- */

/* Pushes a new closed tensor userdata and returns its slot; store one reference there. */
LMF_API mf_tensor **lmf_newslot(lua_State *L);
/* Pushes a userdata owning t (one reference, taken over). For code that already holds a tensor;
 * prefer lmf_newslot, which cannot leak if the allocation of the userdata fails. */
LMF_API void lmf_push(lua_State *L, mf_tensor *t);
/* Pushes a zeroed userdata of `size` bytes with the metatable `mt` (made on first use with gc as
 * its __gc) and returns it: a C object that Lua frees, such as a buffer or a tensor list. */
LMF_API void *lmf_newgcdata(lua_State *L, size_t size, const char *mt, lua_CFunction gc);
/* The slot of the tensor userdata at idx (open or closed); raises a type error. */
LMF_API mf_tensor **lmf_checkslot(lua_State *L, int idx);
/* The slot of the tensor userdata at idx, or NULL when the value is none. */
LMF_API mf_tensor **lmf_testslot(lua_State *L, int idx);
/* The open tensor at idx; raises a type error, or "tensor is closed". */
LMF_API mf_tensor *lmf_check(lua_State *L, int idx);
/* The open tensor at idx, or NULL when the value is not a tensor userdata. */
LMF_API mf_tensor *lmf_test(lua_State *L, int idx);
/* The value at idx as a tensor: a tensor; a Lua number (a 0-d "wrapped number", which promotes
 * only by category as in PyTorch: Lua integer -> int64, float -> float32, or float64 beside a
 * tensor `like` so that 0.1 stays exact for float64 operands);
 * a boolean (0-d bool); or a nested table (a new tensor). A value converted here replaces the
 * stack slot idx with its userdata, so the result is owned by Lua. Other types raise an argument
 * error naming the function. */
LMF_API mf_tensor *lmf_totensor(lua_State *L, int idx, const mf_tensor *like);
/* Keeps in the registry a value whose finalizer, when the state closes, stops the core's failed-
 * allocation collections (mf_set_reclaim) from reaching it; luaopen calls it. */
void lmf_reclaim_sentinel(lua_State *L);
/* The same for an elementwise operand, but a number or boolean stays on the host whatever like's
 * device (a wrapped number: a GPU kernel takes its value, with no device memory or launch). */
LMF_API mf_tensor *lmf_tooperand(lua_State *L, int idx, const mf_tensor *like);

/* Raises a Lua error with the core's message for status s. Release C-owned tensors first. */
LMF_API int lmf_error(lua_State *L, mf_status s);

/* ---- dims, indices, shapes ---------------------------------------------------------------- */

/* 1-based dim d (negative from the end) in a tensor of ndim dims -> 0-based; out of range raises
 * "fname: dimension 3 is out of range for a 2-d tensor (expected 1..2 or -2..-1)". */
LMF_API int lmf_todim(lua_State *L, lua_Integer d, int ndim, const char *fname);
LMF_API int lmf_checkdim(lua_State *L, int arg, int ndim, const char *fname);
LMF_API int lmf_optdim(lua_State *L, int arg, int ndim, int def, const char *fname);
/* The position of a new dimension (unsqueeze, stack): 1..ndim+1 or -(ndim+1)..-1 -> 0-based. */
LMF_API int lmf_checknewdim(lua_State *L, int arg, int ndim, const char *fname);
/* 1-based index i (negative from the end) along 0-based dim `dim` of size n -> 0-based; out of
 * range raises "fname: index 5 is out of range for dimension 1 of size 2" (no prefix when fname is
 * NULL). */
LMF_API int64_t lmf_toindex(lua_State *L, lua_Integer i, int64_t n, int dim, const char *fname);

enum {
  LMF_SHAPE_INFER = 1,  /* one size may be -1 (inferred: reshape, view) */
  LMF_SHAPE_KEEP = 2,   /* any size may be -1 (kept: expand) */
  LMF_SHAPE_NOVARGS = 4 /* the shape is one argument (a table or a tensor), never varargs */
};
/* Reads a shape from argument `arg`: a table of sizes {2, 3}, a 1-D integer tensor (mf.shape(t)),
 * or Torch7-style integer varargs 2, 3. Returns ndim; *next (optional) is the first argument after
 * the shape. Sizes must be integers >= 0 (see flags); at most MF_MAX_DIMS. */
LMF_API int lmf_checkshape(lua_State *L, int arg, int64_t *shape, int flags, int *next,
                           const char *fname);
LMF_API void lmf_pushshape(lua_State *L, int ndim, const int64_t *shape);

/* ---- dtypes, devices, options ---------------------------------------------------------- */

/* A dtype name ("float32", "double", "long", ...); an unknown name raises
 * "fname: unknown dtype 'flaot32'". */
LMF_API mf_dtype lmf_checkdtype(lua_State *L, int arg, const char *fname);
/* A device spec ("cpu", "cuda:0", "/gpu:0"); raises the core's message when unavailable. */
LMF_API mf_device *lmf_checkdevice(lua_State *L, int arg, const char *fname);
/* The default device of new tensors (registry LMF_DEVICE; NULL = CPU). */
LMF_API mf_device *lmf_default_device(lua_State *L, const char *fname);

/* Creation options {dtype=, device=, requires_grad=} at argument arg (nil or none = defaults). */
typedef struct lmf_opts {
  mf_dtype dtype;
  bool has_dtype;
  mf_device *device;
  bool requires_grad;
} lmf_opts;
LMF_API void lmf_checkopts(lua_State *L, int arg, lmf_opts *o, const char *fname);
/* Applies requires_grad from o to the tensor; raises for non-float dtypes. */
LMF_API void lmf_applyopts(lua_State *L, mf_tensor *t, const lmf_opts *o, const char *fname);

/* ---- values -------------------------------------------------------------------------------- */

/* Pushes the value of a one-element tensor as a Lua value: an integer for integer dtypes, a
 * boolean for bool, a float otherwise. Returns a status (nothing pushed on failure). */
LMF_API mf_status lmf_pushitem(lua_State *L, const mf_tensor *t);
/* Pushes a new tensor t + delta (an integer shift of index tensors between Lua's 1-based and the
 * core's 0-based positions) and returns it; raises the core's message on failure. */
LMF_API mf_tensor *lmf_shift(lua_State *L, const mf_tensor *t, lua_Integer delta);
/* Nested table -> new tensor pushed as a userdata (dtype: dt, or inferred when dt < 0). */
LMF_API mf_tensor *lmf_fromtable(lua_State *L, int idx, int dt, mf_device *dev, const char *fname);

/* ---- registration (module.c calls these with the module table at mod, the methods at meth) */

LMF_API void lmf_setfuncs(lua_State *L, int idx, const luaL_Reg *l);
LMF_API void lmf_open_tensor(lua_State *L, int mod, int meth);
LMF_API void lmf_open_index(lua_State *L, int mod, int meth);
LMF_API void lmf_open_create(lua_State *L, int mod, int meth);
LMF_API void lmf_open_math(lua_State *L, int mod, int meth);
LMF_API void lmf_open_reduce(lua_State *L, int mod, int meth);
LMF_API void lmf_open_shape(lua_State *L, int mod, int meth);
LMF_API void lmf_open_convert(lua_State *L, int mod, int meth);
LMF_API void lmf_open_autograd(lua_State *L, int mod, int meth);
LMF_API void lmf_open_io(lua_State *L, int mod, int meth);    /* io.c: mf.io.*, index_select */
LMF_API void lmf_open_optim(lua_State *L, int mod, int meth); /* optim.c: mf._optim */
LMF_API void lmf_open_cuda(lua_State *L, int mod);            /* cuda.c: mf.cuda */
LMF_API void lmf_open_nn(lua_State *L, int mod, int meth);    /* nn.c: mf._nn, mf.same_padding */
LMF_API void lmf_open_summary(lua_State *L, int mod,
                              int meth); /* summary.c: mf._summary, mf._image */
LMF_API void lmf_open_serialize(lua_State *L, int mod,
                                int meth); /* serialize.c: mf.save/load, npz, npy */
/* The __index/__newindex helpers of index.c that tensor.c's metamethods call. */
LMF_API int lmf_index_get(lua_State *L);
LMF_API int lmf_index_set(lua_State *L);

#endif
