/* test_tensor.c — storages, creation, views (reshape, transpose, permute, narrow, select, slice,
 * expand, squeeze, unsqueeze, flatten, contiguous), broadcasting shapes, copies, cat/stack,
 * promotion, printing, and the error paths of each. */
#include <stdlib.h>

#include "internal.h"
#include "test.h"

static mf_tensor *arange_f32(int ndim, const int64_t *shape) {
  mf_tensor *a, *r;
  if (mf_arange(0, (double)mf_shape_numel(ndim, shape), 1, MF_F32, NULL, &a)) return NULL;
  if (mf_reshape(a, ndim, shape, &r)) r = NULL;
  mf_release(a);
  return r;
}

static double at(const mf_tensor *t, int64_t i0, int64_t i1, int64_t i2) {
  int64_t idx[3] = {i0, i1, i2};
  double v = NAN;
  mf_get(t, idx, &v);
  return v;
}

static void test_creation(void) {
  int64_t shape[2] = {2, 3};
  mf_tensor *t;
  CHECK_OK(mf_full(2, shape, 2.5, MF_F64, NULL, &t));
  CHECK(t->ndim == 2 && mf_numel(t) == 6 && mf_is_contiguous(t));
  CHECK(t->stride[0] == 3 && t->stride[1] == 1);
  CHECK_CLOSE(at(t, 1, 2, 0), 2.5, 0, 0);
  mf_release(t);

  CHECK_OK(mf_arange(1, 2, 0.25, MF_F32, NULL, &t));
  CHECK(mf_numel(t) == 4);
  CHECK_CLOSE(at(t, 3, 0, 0), 1.75, 0, 0);
  mf_release(t);
  CHECK_OK(mf_arange(5, 0, -2, MF_I64, NULL, &t)); /* 5 3 1 */
  CHECK(mf_numel(t) == 3);
  CHECK_CLOSE(at(t, 2, 0, 0), 1, 0, 0);
  mf_release(t);
  CHECK_FAILS(mf_arange(0, 1, 0, MF_F32, NULL, &t), MF_ERR_ARG, "step");

  CHECK_OK(mf_eye(2, 3, MF_I32, NULL, &t));
  CHECK(at(t, 0, 0, 0) == 1 && at(t, 1, 1, 0) == 1 && at(t, 0, 1, 0) == 0 && at(t, 1, 2, 0) == 0);
  mf_release(t);

  int64_t bad[2] = {2, -1};
  CHECK_FAILS(mf_zeros(2, bad, MF_F32, NULL, &t), MF_ERR_SHAPE, "negative");
  CHECK(t == NULL);
  CHECK_FAILS(mf_zeros(1, shape, MF_F16, NULL, &t), MF_ERR_DTYPE, "GPU");
  /* an empty tensor whose other sizes multiply past int64: its strides would overflow */
  int64_t huge_empty[3] = {(int64_t)1 << 40, (int64_t)1 << 40, 0};
  CHECK_FAILS(mf_zeros(3, huge_empty, MF_F32, NULL, &t), MF_ERR_SHAPE, "too many for strides");
  CHECK(t == NULL);
  int64_t big_empty[3] = {(int64_t)1 << 20, (int64_t)1 << 20, 0}; /* fine: strides fit */
  CHECK_OK(mf_zeros(3, big_empty, MF_F32, NULL, &t));
  CHECK(t && mf_numel(t) == 0 && t->stride[0] == (int64_t)1 << 20);
  mf_release(t);

  float host[6] = {1, 2, 3, 4, 5, 6};
  CHECK_OK(mf_from_host(2, shape, MF_F32, host, NULL, &t));
  CHECK_CLOSE(at(t, 1, 0, 0), 4, 0, 0);
  double item;
  CHECK_FAILS(mf_item(t, &item), MF_ERR_SHAPE, "6 elements");
  int64_t idx[2] = {2, 0};
  CHECK_FAILS(mf_get(t, idx, &item), MF_ERR_INDEX,
              "index 3 is out of range for dimension 1 of size 2");
  mf_release(t);
  CHECK_OK(mf_scalar(7, MF_I64, true, NULL, &t));
  CHECK(t->ndim == 0 && (t->flags & MF_TENSOR_WRAPPED_NUMBER));
  CHECK_OK(mf_item(t, &item));
  CHECK(item == 7);
  mf_release(t);
}

static void test_views(void) {
  int64_t s234[3] = {2, 3, 4};
  mf_tensor *t = arange_f32(3, s234), *v, *w;
  CHECK(t != NULL);

  CHECK_OK(mf_transpose(t, 0, 2, &v)); /* 4x3x2 */
  CHECK(v->shape[0] == 4 && v->shape[2] == 2 && !mf_is_contiguous(v));
  CHECK_CLOSE(at(v, 3, 1, 1), at(t, 1, 1, 3), 0, 0);
  CHECK(v->storage == t->storage);
  int64_t flat = 24;
  CHECK_FAILS(mf_view(v, 1, &flat, &w), MF_ERR_SHAPE, "reshape");
  CHECK_OK(mf_reshape(v, 1, &flat, &w)); /* copies */
  CHECK(w->storage != t->storage);
  CHECK_CLOSE(at(w, 5, 0, 0), at(t, 1, 2, 0), 0, 0); /* v flat index 5 = (0,2,1) = t(1,2,0) */
  mf_release(w);
  mf_release(v);

  int perm[3] = {1, 2, 0};
  CHECK_OK(mf_permute(t, perm, &v)); /* 3x4x2 */
  CHECK(v->shape[0] == 3 && v->shape[1] == 4 && v->shape[2] == 2);
  CHECK_CLOSE(at(v, 2, 3, 1), at(t, 1, 2, 3), 0, 0);
  mf_release(v);
  int dup[3] = {0, 0, 1};
  CHECK_FAILS(mf_permute(t, dup, &v), MF_ERR_ARG, "twice");

  int64_t s64[2] = {6, -1};
  CHECK_OK(mf_view(t, 2, s64, &v));
  CHECK(v->shape[1] == 4 && v->storage == t->storage);
  mf_release(v);
  int64_t s5[2] = {5, -1};
  CHECK_FAILS(mf_view(t, 2, s5, &v), MF_ERR_SHAPE, "cannot view 2x3x4");

  CHECK_OK(mf_narrow(t, 1, 1, 2, &v)); /* 2x2x4 */
  CHECK(v->shape[1] == 2);
  CHECK_CLOSE(at(v, 1, 0, 3), at(t, 1, 1, 3), 0, 0);
  int64_t s2_8[2] = {2, 8};
  CHECK_OK(mf_view(v, 2, s2_8, &w)); /* merges the last two dims: still a view */
  CHECK(w->storage == t->storage);
  CHECK_CLOSE(at(w, 1, 7, 0), at(t, 1, 2, 3), 0, 0);
  mf_release(w);
  mf_release(v);
  CHECK_FAILS(mf_narrow(t, 1, 2, 2, &v), MF_ERR_INDEX, "out of range for dimension 2 of size 3");

  CHECK_OK(mf_select(t, -1, 2, &v)); /* 2x3 */
  CHECK(v->ndim == 2);
  CHECK_CLOSE(at(v, 1, 2, 0), at(t, 1, 2, 2), 0, 0);
  mf_release(v);
  CHECK_FAILS(mf_select(t, 0, 2, &v), MF_ERR_INDEX,
              "index 3 is out of range for dimension 1 of size 2");
  CHECK_FAILS(mf_select(t, 3, 0, &v), MF_ERR_INDEX, "dimension 4 is out of range");

  CHECK_OK(mf_slice(t, 2, 1, 4, 2, &v)); /* columns 1 and 3 */
  CHECK(v->shape[2] == 2);
  CHECK_CLOSE(at(v, 0, 1, 1), at(t, 0, 1, 3), 0, 0);
  mf_release(v);

  int64_t e[4] = {5, 2, 3, 4};
  CHECK_OK(mf_expand(t, 4, e, &v));
  CHECK(v->stride[0] == 0 && v->shape[0] == 5);
  int64_t i4[4] = {4, 1, 2, 0};
  double x = NAN;
  CHECK_OK(mf_get(v, i4, &x));
  CHECK_CLOSE(x, at(t, 1, 2, 0), 0, 0);
  mf_release(v);
  int64_t ebad[3] = {3, 3, 4};
  CHECK_FAILS(mf_expand(t, 3, ebad, &v), MF_ERR_SHAPE, "cannot expand 2x3x4");

  CHECK_OK(mf_unsqueeze(t, 1, &v)); /* 2x1x3x4 */
  CHECK(v->ndim == 4 && v->shape[1] == 1);
  CHECK_OK(mf_squeeze(v, MF_ALL_DIMS, &w));
  CHECK(w->ndim == 3 && w->shape[1] == 3);
  mf_release(w);
  CHECK_OK(mf_squeeze(v, 0, &w)); /* size 2: unchanged */
  CHECK(w->ndim == 4);
  mf_release(w);
  mf_release(v);

  CHECK_OK(mf_flatten(t, 1, -1, &v));
  CHECK(v->ndim == 2 && v->shape[1] == 12);
  mf_release(v);

  CHECK_OK(mf_contiguous(t, &v));
  CHECK(v == t);
  mf_release(v);
  mf_release(t);
}

static void test_copies(void) {
  int64_t s23[2] = {2, 3}, s3[1] = {3};
  mf_tensor *t = arange_f32(2, s23), *row, *z, *c;
  CHECK_OK(mf_zeros(2, s23, MF_I32, NULL, &z));
  CHECK_OK(mf_arange(10, 13, 1, MF_F64, NULL, &row));
  CHECK_OK(mf_copy_(z, row)); /* broadcast over rows and cast */
  CHECK(at(z, 1, 2, 0) == 12 && at(z, 0, 0, 0) == 10);
  mf_tensor *col;
  CHECK_OK(mf_select(z, 1, 1, &col));
  CHECK_OK(mf_fill_(col, -1));
  CHECK(at(z, 0, 1, 0) == -1 && at(z, 1, 1, 0) == -1 && at(z, 1, 2, 0) == 12);
  mf_release(col);
  int64_t s4[1] = {4};
  mf_tensor *four;
  CHECK_OK(mf_zeros(1, s4, MF_F32, NULL, &four));
  CHECK_FAILS(mf_copy_(z, four), MF_ERR_SHAPE, "cannot assign a 4 tensor to a 2x3 one");
  mf_release(four);

  /* overlapping copy: t[0] = t:t()[?] style — transpose into itself */
  mf_tensor *sq, *sqt;
  int64_t s33[2] = {3, 3};
  sq = arange_f32(2, s33);
  CHECK_OK(mf_transpose(sq, 0, 1, &sqt));
  CHECK_OK(mf_copy_(sq, sqt));
  CHECK(at(sq, 0, 1, 0) == 3 && at(sq, 1, 0, 0) == 1 && at(sq, 2, 1, 0) == 5);
  mf_release(sqt);
  mf_release(sq);

  mf_tensor *parts[2] = {t, z}, *cat;
  CHECK_OK(mf_cat(2, parts, 0, &cat)); /* float32 and int32 → float32 4x3 */
  CHECK(cat->shape[0] == 4 && cat->dtype == MF_F32);
  CHECK(at(cat, 3, 2, 0) == 12 && at(cat, 1, 0, 0) == 3);
  mf_release(cat);
  CHECK_OK(mf_cat(2, parts, 1, &cat)); /* 2x6 */
  CHECK(cat->shape[1] == 6 && at(cat, 0, 3, 0) == 10);
  mf_release(cat);
  CHECK_OK(mf_stack(2, parts, 1, &cat)); /* 2x2x3 */
  CHECK(cat->ndim == 3 && cat->shape[1] == 2 && at(cat, 1, 1, 2) == 12 && at(cat, 1, 0, 2) == 5);
  mf_release(cat);
  parts[1] = row;
  CHECK_FAILS(mf_cat(2, parts, 0, &cat), MF_ERR_SHAPE, "tensor 2 has shape 3");
  CHECK_FAILS(mf_stack(2, parts, 0, &cat), MF_ERR_SHAPE,
              "stack: tensor 2 has shape 3, expected 2x3");

  CHECK_OK(mf_cast(t, MF_BOOL, &c));
  CHECK(c->dtype == MF_BOOL && at(c, 0, 0, 0) == 0 && at(c, 0, 1, 0) == 1);
  mf_release(c);
  (void)s3;
  mf_release(row);
  mf_release(z);
  mf_release(t);
}

/* cast_scaled: cast then multiply in one pass, for every uint8 value, contiguous and strided */
static void test_cast_scaled(void) {
  uint8_t v[256];
  for (int i = 0; i < 256; i++) v[i] = (uint8_t)i;
  int64_t s256[1] = {256}, s16[2] = {16, 16};
  mf_tensor *u, *f, *t, *ft;
  CHECK_OK(mf_from_host(1, s256, MF_U8, v, NULL, &u));
  CHECK_OK(mf_cast_scaled(u, MF_F32, 1.0 / 255, &f));
  const float *fd = mf_data(f);
  int exact = 1;
  for (int i = 0; i < 256; i++) exact &= fd[i] == (float)i * (float)(1.0 / 255);
  CHECK(exact && f->dtype == MF_F32);
  mf_release(f);
  mf_tensor *sq;
  CHECK_OK(mf_view(u, 2, s16, &sq));
  CHECK_OK(mf_transpose(sq, 0, 1, &t));
  CHECK_OK(mf_cast_scaled(t, MF_F64, 2, &ft));
  CHECK_CLOSE(at(ft, 3, 5, 0), 2.0 * (5 * 16 + 3), 0, 0);
  CHECK_FAILS(mf_cast_scaled(u, MF_I32, 2, &f), MF_ERR_DTYPE, "floating");
  /* a large contiguous batch (the one-pass bytes -> floats path, split over the threads) */
  enum { BIG = 200003 };
  static uint8_t big[BIG];
  for (int i = 0; i < BIG; i++) big[i] = (uint8_t)(i * 7 + i / 256);
  int64_t sbig[1] = {BIG};
  mf_tensor *ub, *fb;
  CHECK_OK(mf_from_host(1, sbig, MF_U8, big, NULL, &ub));
  CHECK_OK(mf_cast_scaled(ub, MF_F32, 1.0 / 255, &fb));
  const float *fbd = mf_data(fb);
  exact = 1;
  for (int i = 0; i < BIG; i++) exact &= fbd[i] == (float)big[i] * (float)(1.0 / 255);
  CHECK(exact);
  mf_release(fb);
  mf_release(ub);
  mf_release(ft);
  mf_release(t);
  mf_release(sq);
  mf_release(u);
}

static void test_promotion(void) {
  CHECK(mf_promote(MF_I32, MF_F32) == MF_F32);
  CHECK(mf_promote(MF_U8, MF_I32) == MF_I32);
  CHECK(mf_promote(MF_BOOL, MF_U8) == MF_U8);
  CHECK(mf_promote(MF_F64, MF_F32) == MF_F64);
  int64_t s2[1] = {2};
  mf_tensor *f, *i, *one, *half, *r;
  CHECK_OK(mf_ones(1, s2, MF_F32, NULL, &f));
  CHECK_OK(mf_ones(1, s2, MF_I32, NULL, &i));
  CHECK_OK(mf_scalar(1, MF_I64, true, NULL, &one));
  CHECK_OK(mf_scalar(0.5, MF_F32, true, NULL, &half));
  CHECK_OK(mf_add(i, one, &r)); /* int32 + Lua integer stays int32 */
  CHECK(r->dtype == MF_I32 && at(r, 1, 0, 0) == 2);
  mf_release(r);
  CHECK_OK(mf_add(i, half, &r)); /* int32 + Lua float → float32 */
  CHECK(r->dtype == MF_F32 && at(r, 0, 0, 0) == 1.5);
  mf_release(r);
  CHECK_OK(mf_div(i, one, &r)); /* true division */
  CHECK(r->dtype == MF_F32);
  mf_release(r);
  CHECK_OK(mf_binary(MF_OP_GT, f, half, &r));
  CHECK(r->dtype == MF_BOOL && at(r, 0, 0, 0) == 1);
  mf_release(r);
  CHECK_OK(mf_add(f, i, &r));
  CHECK(r->dtype == MF_F32);
  mf_release(r);
  int64_t s3[1] = {3};
  mf_tensor *three;
  CHECK_OK(mf_ones(1, s3, MF_F32, NULL, &three));
  CHECK_FAILS(mf_add(f, three, &r), MF_ERR_SHAPE,
              "add: shapes 2 and 3 cannot be broadcast together");
  CHECK(r == NULL);
  mf_release(three);
  mf_release(f);
  mf_release(i);
  mf_release(one);
  mf_release(half);
}

static void test_format(void) {
  char *s;
  int64_t s23[2] = {2, 3};
  mf_tensor *t;
  int64_t v[2] = {3, 6};
  CHECK_OK(mf_from_host(1, s23 + 0, MF_I64, v, NULL, &t)); /* shape {2} */
  CHECK_OK(mf_format(t, &s));
  CHECK(strcmp(s, "[3, 6]\n[int64 tensor, shape 2, cpu]") == 0);
  free(s);
  mf_release(t);

  float f[6] = {1, -0.5f, 2, 3, 0.25f, 10};
  CHECK_OK(mf_from_host(2, s23, MF_F32, f, NULL, &t));
  CHECK_OK(mf_format(t, &s));
  CHECK(strcmp(s, "[[ 1.0000, -0.5000,  2.0000],\n [ 3.0000,  0.2500, 10.0000]]\n"
                  "[float32 tensor, shape 2x3, cpu]") == 0);
  if (strcmp(s, "[[ 1.0000, -0.5000,  2.0000],\n [ 3.0000,  0.2500, 10.0000]]\n[float32 tensor, "
                "shape 2x3, cpu]"))
    fprintf(stderr, "got:\n%s\n", s);
  free(s);
  mf_release(t);

  uint8_t b[3] = {1, 1, 0};
  int64_t s311[3] = {1, 3, 1};
  CHECK_OK(mf_from_host(3, s311, MF_BOOL, b, NULL, &t));
  CHECK_OK(mf_format(t, &s));
  CHECK(strcmp(s, "[[[ true],\n  [ true],\n  [false]]]\n[bool tensor, shape 1x3x1, cpu]") == 0);
  free(s);
  mf_release(t);

  int64_t big = 5000;
  CHECK_OK(mf_arange(0, 5000, 1, MF_F32, NULL, &t));
  (void)big;
  CHECK_OK(mf_format(t, &s));
  CHECK(strstr(s, "[   0.,    1.,    2., ..., 4997., 4998., 4999.]") != NULL);
  free(s);
  mf_release(t);

  CHECK_OK(mf_scalar(0.5, MF_F64, false, NULL, &t));
  CHECK_OK(mf_format(t, &s));
  CHECK(strcmp(s, "0.5000\n[float64 scalar, cpu]") == 0);
  free(s);
  mf_release(t);
}

int main(void) {
  test_creation();
  test_views();
  test_copies();
  test_cast_scaled();
  test_promotion();
  test_format();
  return test_summary();
}
