/* math.c — elementwise math with numpy broadcasting: binary ops (add .. floor_divide), comparisons
 * and logic (bool results), unary ops, clamp and where; as mf.* functions, as methods (t:exp(),
 * t:add(u)) and as the operators + - * / % // ^ and unary -. Operands are tensors, Lua numbers
 * (wrapped numbers: they do not promote a tensor's dtype, as in PyTorch), booleans or nested
 * tables.
 *
 * Lua's == < <= stay Lua's (identity, errors): they must return booleans, so eq/lt/le are methods.
 */
#include <math.h>

#include "lmf.h"

/* ---- binary ----------------------------------------------------------------------------- */

static int binary(lua_State *L, mf_op op) {
  luaL_checkany(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 2);
  mf_tensor *ta = lmf_test(L, 1), *tb = lmf_test(L, 2);
  mf_tensor *a = lmf_tooperand(L, 1, tb);
  mf_tensor *b = lmf_tooperand(L, 2, ta ? ta : a);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_binary(op, a, b, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

#define BINARY(name, OP)                                                                           \
  static int m_##name(lua_State *L) { return binary(L, MF_OP_##OP); }
BINARY(add, ADD)
BINARY(sub, SUB)
BINARY(mul, MUL)
BINARY(div, DIV)
BINARY(pow, POW)
BINARY(maximum, MAXIMUM)
BINARY(minimum, MINIMUM)
BINARY(remainder, REMAINDER)
BINARY(floor_divide, FLOOR_DIVIDE)
BINARY(eq, EQ)
BINARY(ne, NE)
BINARY(gt, GT)
BINARY(ge, GE)
BINARY(lt, LT)
BINARY(le, LE)
BINARY(logical_and, LOGICAL_AND)
BINARY(logical_or, LOGICAL_OR)
#undef BINARY

/* ---- unary ------------------------------------------------------------------------------ */

static int unary(lua_State *L, mf_op op) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  mf_tensor *x = lmf_totensor(L, 1, NULL);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_unary(op, x, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

#define UNARY(name, OP)                                                                            \
  static int m_##name(lua_State *L) { return unary(L, MF_OP_##OP); }
UNARY(neg, NEG)
UNARY(abs, ABS)
UNARY(exp, EXP)
UNARY(log, LOG)
UNARY(sqrt, SQRT)
UNARY(tanh, TANH)
UNARY(sigmoid, SIGMOID)
UNARY(relu, RELU)
UNARY(sign, SIGN)
UNARY(logical_not, LOGICAL_NOT)
#undef UNARY

/* clamp(t, lo, hi): nil bound = none. */
static int m_clamp(lua_State *L) {
  luaL_checkany(L, 1);
  double lo = luaL_optnumber(L, 2, -INFINITY), hi = luaL_optnumber(L, 3, INFINITY);
  if (lo > hi) return luaL_error(L, "clamp: lower bound %f is above upper bound %f", lo, hi);
  lua_settop(L, 1);
  mf_tensor *x = lmf_totensor(L, 1, NULL);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_clamp(x, lo, hi, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

/* where(cond, a, b): a where cond is true, else b; a and b tensors or numbers. */
static int m_where(lua_State *L) {
  luaL_checkany(L, 1);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  lua_settop(L, 3);
  mf_tensor *ta = lmf_test(L, 2), *tb = lmf_test(L, 3);
  mf_tensor *c = lmf_totensor(L, 1, NULL);
  mf_tensor *a = lmf_totensor(L, 2, tb);
  mf_tensor *b = lmf_totensor(L, 3, ta ? ta : a);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_where(c, a, b, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg funcs[] = {
    {"add", m_add},
    {"sub", m_sub},
    {"mul", m_mul},
    {"div", m_div},
    {"pow", m_pow},
    {"maximum", m_maximum},
    {"minimum", m_minimum},
    {"remainder", m_remainder},
    {"floor_divide", m_floor_divide},
    {"eq", m_eq},
    {"ne", m_ne},
    {"gt", m_gt},
    {"ge", m_ge},
    {"lt", m_lt},
    {"le", m_le},
    {"logical_and", m_logical_and},
    {"logical_or", m_logical_or},
    {"neg", m_neg},
    {"abs", m_abs},
    {"exp", m_exp},
    {"log", m_log},
    {"sqrt", m_sqrt},
    {"tanh", m_tanh},
    {"sigmoid", m_sigmoid},
    {"relu", m_relu},
    {"sign", m_sign},
    {"logical_not", m_logical_not},
    {"clamp", m_clamp},
    {"where", m_where},
    {NULL, NULL},
};

static const luaL_Reg meta[] = {
    {"__add", m_add},           {"__sub", m_sub}, {"__mul", m_mul},
    {"__div", m_div},           {"__pow", m_pow}, {"__mod", m_remainder},
    {"__idiv", m_floor_divide}, {"__unm", m_neg}, {NULL, NULL},
};

void lmf_open_math(lua_State *L, int mod, int meth) {
  lmf_setfuncs(L, mod, funcs);
  lmf_setfuncs(L, meth, funcs); /* t:add(u), t:exp(), ... */
  lua_pushnil(L);               /* but not t:where (torch's means something else) */
  lua_setfield(L, meth, "where");
  luaL_getmetatable(L, LMF_TENSOR);
  luaL_setfuncs(L, meta, 0);
  lua_pop(L, 1);
}
