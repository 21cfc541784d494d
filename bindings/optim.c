/* optim.c — the fused optimizer steps for Lua, as the `mf._optim` table that lua/moonflow/optim.lua
 * builds its classes on (SGD, Adam, AdamW, RMSProp, Adadelta, Adagrad):
 *
 *   _optim.sgd_step(param, grad, momentum_buffer | nil, h)
 *   _optim.adam_step(param, grad, exp_avg, exp_avg_sq, h)        -- AdamW: h.decoupled_weight_decay
 *   _optim.steps(kind, params, grads, state1, state2, state3, h) -- lists of equal length (a
 *     state list nil, or false entries, where unused); kind "sgd", "adam", ...: one launch per 16
 *     parameters on a GPU
 *   _optim.rmsprop_step(param, grad, square_avg, momentum_buffer | nil, grad_avg | nil, h)
 *   _optim.adadelta_step(param, grad, square_avg, acc_delta, h)  -- rho: h.rho (or h.alpha)
 *   _optim.adagrad_step(param, grad, sum, h)
 *
 * Each updates param and its state tensors in place. h is a table of hyper-parameters with
 * PyTorch's names — lr, momentum, dampening, weight_decay, beta1, beta2, eps, alpha, rho, lr_decay,
 * initial_accumulator_value (numbers, default 0), nesterov, decoupled_weight_decay, centered,
 * maximize (booleans, default false) — and step, the number of this update (an integer >= 1; at
 * step 1 the state tensors' contents are ignored, see core/optim.c).
 */
#include "lmf.h"

/* ---- hyper-parameters ------------------------------------------------------------------------ */

static double opt_number(lua_State *L, int idx, const char *field, const char *fname) {
  int t = lua_getfield(L, idx, field);
  double v = 0;
  if (t == LUA_TNUMBER)
    v = (double)lua_tonumber(L, -1);
  else if (t != LUA_TNIL)
    luaL_error(L, "%s: h.%s must be a number, got %s", fname, field, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

static bool opt_bool(lua_State *L, int idx, const char *field, const char *fname) {
  int t = lua_getfield(L, idx, field);
  bool v = false;
  if (t == LUA_TBOOLEAN)
    v = lua_toboolean(L, -1);
  else if (t != LUA_TNIL)
    luaL_error(L, "%s: h.%s must be a boolean, got %s", fname, field, luaL_typename(L, -1));
  lua_pop(L, 1);
  return v;
}

/* Reads the table at idx into h. */
static void check_hparams(lua_State *L, int idx, mf_optim_hparams *h, const char *fname) {
  luaL_checktype(L, idx, LUA_TTABLE);
  h->lr = opt_number(L, idx, "lr", fname);
  h->momentum = opt_number(L, idx, "momentum", fname);
  h->dampening = opt_number(L, idx, "dampening", fname);
  h->weight_decay = opt_number(L, idx, "weight_decay", fname);
  h->beta1 = opt_number(L, idx, "beta1", fname);
  h->beta2 = opt_number(L, idx, "beta2", fname);
  h->eps = opt_number(L, idx, "eps", fname);
  h->alpha = opt_number(L, idx, "alpha", fname);
  if (lua_getfield(L, idx, "rho") != LUA_TNIL) h->alpha = opt_number(L, idx, "rho", fname);
  lua_pop(L, 1);
  h->lr_decay = opt_number(L, idx, "lr_decay", fname);
  h->initial_accumulator_value = opt_number(L, idx, "initial_accumulator_value", fname);
  h->nesterov = opt_bool(L, idx, "nesterov", fname);
  h->decoupled_weight_decay = opt_bool(L, idx, "decoupled_weight_decay", fname);
  h->centered = opt_bool(L, idx, "centered", fname);
  h->maximize = opt_bool(L, idx, "maximize", fname);
  lua_getfield(L, idx, "step");
  int isint;
  lua_Integer step = lua_tointegerx(L, -1, &isint);
  if (!isint || step < 1)
    luaL_error(L, "%s: h.step must be an integer >= 1 (the number of this update), got %s", fname,
               lua_isnil(L, -1) ? "nil" : luaL_tolstring(L, -1, NULL));
  lua_pop(L, 1);
  h->step = (int64_t)step;
}

/* A state tensor argument that may be nil. */
static mf_tensor *opt_tensor(lua_State *L, int idx) {
  return lua_isnoneornil(L, idx) ? NULL : lmf_check(L, idx);
}

/* ---- the steps ------------------------------------------------------------------------------- */

static int o_sgd_step(lua_State *L) {
  mf_optim_hparams h;
  mf_tensor *p = lmf_check(L, 1), *g = lmf_check(L, 2), *buf = opt_tensor(L, 3);
  check_hparams(L, 4, &h, "sgd_step");
  mf_status s = mf_sgd_step(p, g, buf, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int o_adam_step(lua_State *L) {
  mf_optim_hparams h;
  mf_tensor *p = lmf_check(L, 1), *g = lmf_check(L, 2);
  mf_tensor *m = lmf_check(L, 3), *v = lmf_check(L, 4);
  check_hparams(L, 5, &h, "adam_step");
  mf_status s = mf_adam_step(p, g, m, v, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* The n tensors of the list (a table) at idx into out[0..n-1]; nil (the whole list, when
 * optional) or false entries give NULLs. */
static void tensor_list(lua_State *L, int idx, int n, mf_tensor **out, const char *what,
                        bool optional) {
  if (optional && lua_isnoneornil(L, idx)) {
    for (int i = 0; i < n; i++) out[i] = NULL;
    return;
  }
  luaL_checktype(L, idx, LUA_TTABLE);
  if ((int)luaL_len(L, idx) != n)
    luaL_error(L, "steps: %s has %d entries, the parameters %d", what, (int)luaL_len(L, idx), n);
  for (int i = 0; i < n; i++) {
    lua_geti(L, idx, i + 1);
    bool absent = optional && !lua_toboolean(L, -1);
    mf_tensor *t = absent ? NULL : lmf_test(L, -1);
    if (!t && !absent) luaL_error(L, "steps: %s[%d] is not a tensor", what, i + 1);
    out[i] = t; /* the list table keeps it alive */
    lua_pop(L, 1);
  }
}

/* steps(kind, params, grads, state1 | nil, state2 | nil, state3 | nil, h): kind "sgd", "adam",
 * "rmsprop", "adadelta" or "adagrad"; state k as the single step's k-th state argument. */
static int o_steps(lua_State *L) {
  static const char *const kinds[] = {"sgd", "adam", "rmsprop", "adadelta", "adagrad", NULL};
  static const mf_op ops[] = {MF_OP_SGD_STEP, MF_OP_ADAM_STEP, MF_OP_RMSPROP_STEP,
                              MF_OP_ADADELTA_STEP, MF_OP_ADAGRAD_STEP};
  mf_op op = ops[luaL_checkoption(L, 1, NULL, kinds)];
  mf_optim_hparams h;
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)luaL_len(L, 2);
  check_hparams(L, 7, &h, mf_op_name(op));
  mf_tensor **t = lua_newuserdatauv(L, 5 * (size_t)(n ? n : 1) * sizeof *t, 0);
  static const char *const what[5] = {"params", "grads", "state 1", "state 2", "state 3"};
  for (int k = 0; k < 5; k++) tensor_list(L, 2 + k, n, t + (size_t)k * n, what[k], k >= 2);
  mf_tensor *const *state[3] = {t + 2 * n, t + 3 * n, t + 4 * n};
  mf_status s = mf_optim_steps(op, n, t, (const mf_tensor *const *)(t + n), state, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int o_rmsprop_step(lua_State *L) {
  mf_optim_hparams h;
  mf_tensor *p = lmf_check(L, 1), *g = lmf_check(L, 2), *sq = lmf_check(L, 3);
  mf_tensor *buf = opt_tensor(L, 4), *ga = opt_tensor(L, 5);
  check_hparams(L, 6, &h, "rmsprop_step");
  mf_status s = mf_rmsprop_step(p, g, sq, buf, ga, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int o_adadelta_step(lua_State *L) {
  mf_optim_hparams h;
  mf_tensor *p = lmf_check(L, 1), *g = lmf_check(L, 2);
  mf_tensor *sq = lmf_check(L, 3), *acc = lmf_check(L, 4);
  check_hparams(L, 5, &h, "adadelta_step");
  mf_status s = mf_adadelta_step(p, g, sq, acc, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int o_adagrad_step(lua_State *L) {
  mf_optim_hparams h;
  mf_tensor *p = lmf_check(L, 1), *g = lmf_check(L, 2), *sum = lmf_check(L, 3);
  check_hparams(L, 4, &h, "adagrad_step");
  mf_status s = mf_adagrad_step(p, g, sum, &h);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* ---- registration ------------------------------------------------------------------------------
 */

static const luaL_Reg funcs[] = {
    {"sgd_step", o_sgd_step},
    {"adam_step", o_adam_step},
    {"steps", o_steps},
    {"rmsprop_step", o_rmsprop_step},
    {"adadelta_step", o_adadelta_step},
    {"adagrad_step", o_adagrad_step},
    {NULL, NULL},
};

void lmf_open_optim(lua_State *L, int mod, int meth) {
  (void)meth;
  mod = lua_absindex(L, mod);
  lua_newtable(L);
  lmf_setfuncs(L, -1, funcs);
  lua_setfield(L, mod, "_optim");
}
