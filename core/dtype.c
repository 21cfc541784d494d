/* dtype.c — the element types: sizes, names, parsing and PyTorch's promotion order. */
#include <string.h>

#include "moonflow.h"

static const struct {
  const char *name;
  size_t size;
  int rank; /* promotion order */
} info[MF_DTYPE_COUNT] = {
    [MF_F32] = {"float32", 4, 6}, [MF_F64] = {"float64", 8, 7},   [MF_I32] = {"int32", 4, 2},
    [MF_I64] = {"int64", 8, 3},   [MF_U8] = {"uint8", 1, 1},      [MF_BOOL] = {"bool", 1, 0},
    [MF_F16] = {"float16", 2, 4}, [MF_BF16] = {"bfloat16", 2, 5},
};

size_t mf_dtype_size(mf_dtype t) { return (unsigned)t < MF_DTYPE_COUNT ? info[t].size : 0; }
const char *mf_dtype_name(mf_dtype t) { return (unsigned)t < MF_DTYPE_COUNT ? info[t].name : "?"; }
bool mf_dtype_is_float(mf_dtype t) {
  return t == MF_F32 || t == MF_F64 || t == MF_F16 || t == MF_BF16;
}

mf_status mf_dtype_from_name(const char *name, mf_dtype *out) {
  static const struct {
    const char *name;
    mf_dtype dt;
  } alias[] = {{"float32", MF_F32}, {"float", MF_F32}, {"f32", MF_F32},   {"float64", MF_F64},
               {"double", MF_F64},  {"f64", MF_F64},   {"int32", MF_I32}, {"int", MF_I32},
               {"i32", MF_I32},     {"int64", MF_I64}, {"long", MF_I64},  {"i64", MF_I64},
               {"uint8", MF_U8},    {"byte", MF_U8},   {"u8", MF_U8},     {"bool", MF_BOOL},
               {"float16", MF_F16}, {"half", MF_F16},  {"f16", MF_F16},   {"bfloat16", MF_BF16},
               {"bf16", MF_BF16}};
  for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++)
    if (strcmp(name, alias[i].name) == 0) {
      *out = alias[i].dt;
      return MF_OK;
    }
  return mf_fail(MF_ERR_DTYPE,
                 "unknown dtype '%s' (expected float32, float64, int32, int64, uint8, bool, "
                 "float16 or bfloat16)",
                 name);
}

mf_dtype mf_promote(mf_dtype a, mf_dtype b) {
  if (a == b) return a;
  /* float16 with bfloat16 has no exact common type below float32 */
  if ((a == MF_F16 && b == MF_BF16) || (a == MF_BF16 && b == MF_F16)) return MF_F32;
  return info[a].rank >= info[b].rank ? a : b;
}
