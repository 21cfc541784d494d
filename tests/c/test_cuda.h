/* test_cuda.h — what the CUDA tests (test_cuda.c, test_cuda_parity.c) share: the GPU under test,
 * random CPU tensors fit for each dtype, uploading, and comparing a CPU result with a GPU one
 * element by element with a tolerance (printing the first difference). */
#ifndef MF_TEST_CUDA_H
#define MF_TEST_CUDA_H

#include <stdlib.h>

#include "internal.h"
#include "test.h"

static mf_device *gpu;

/* The kind of device `gpu` is: CUDA, or the CPU when test_cuda_parity, finding no GPU, runs its
 * cases the CPU against itself (a check of the cases' own code). */
static mf_device_type test_kind = MF_DEV_CUDA;

/* ---- data ------------------------------------------------------------------------------------ */

enum { V_REAL, V_SMALLINT, V_EIGHTHS, V_POS };

static uint64_t lcg_state = 88172645463325252ull;
static double next_unit(void) { /* [0, 1) */
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) * 0x1p-53;
}

/* A CPU tensor of dtype dt with values fit for it: floats in [-3, 3] (V_REAL), k/8 in [-4, 4]
 * (V_EIGHTHS, exact in float16/bfloat16), positive (V_POS), small integers, uint8 in [0, 40],
 * bool 0/1. */
static mf_tensor *make(int nd, const int64_t *shape, mf_dtype dt, int kind) {
  int64_t n = mf_shape_numel(nd, shape);
  double *h = malloc((size_t)(n ? n : 1) * sizeof *h);
  for (int64_t i = 0; i < n; i++) {
    double u = next_unit();
    double v;
    if (dt == MF_BOOL)
      v = u < 0.5;
    else if (dt == MF_U8)
      v = (double)(int)(u * 41);
    else if (!mf_dtype_is_float(dt) || kind == V_SMALLINT)
      v = (double)((int)(u * 41) - 20);
    else if (kind == V_EIGHTHS)
      v = (double)((int)(u * 65) - 32) / 8.0;
    else if (kind == V_POS)
      v = 0.1 + 3 * u;
    else
      v = 6 * u - 3;
    h[i] = v;
  }
  mf_tensor *t = tensor_of_doubles(nd, shape, dt, h);
  free(h);
  return t;
}

static mf_tensor *on_gpu(const mf_tensor *t) {
  mf_tensor *g = NULL;
  if (!t || mf_to_device(t, gpu, &g) != MF_OK) {
    fprintf(stderr, "to_device: %s\n", mf_error());
    return NULL;
  }
  return g;
}

/* c (CPU) and g (GPU) hold the same values: same shape, same dtype (unless g is a half dtype),
 * |g - c| <= atol + rtol |c|, NaN where NaN. Prints the first difference. */
static bool same(const char *what, const mf_tensor *c, const mf_tensor *g, double atol,
                 double rtol) {
  if (!c || !g) {
    fprintf(stderr, "%s: missing result (%s)\n", what, mf_error());
    return false;
  }
  if (mf_device_kind(mf_tensor_device(g)) != test_kind || c->ndim != g->ndim) {
    fprintf(stderr, "%s: wrong device or ndim\n", what);
    return false;
  }
  for (int d = 0; d < c->ndim; d++)
    if (c->shape[d] != g->shape[d]) {
      fprintf(stderr, "%s: shapes differ\n", what);
      return false;
    }
  if (c->dtype != g->dtype && g->dtype != MF_F16 && g->dtype != MF_BF16) {
    fprintf(stderr, "%s: dtypes %s (cpu) and %s (gpu)\n", what, mf_dtype_name(c->dtype),
            mf_dtype_name(g->dtype));
    return false;
  }
  int64_t n = mf_numel(c);
  double *hc = malloc((size_t)(n ? n : 1) * sizeof *hc),
         *hg = malloc((size_t)(n ? n : 1) * sizeof *hg);
  bool ok = mf_to_host(c, MF_F64, hc) == MF_OK && mf_to_host(g, MF_F64, hg) == MF_OK;
  if (!ok) fprintf(stderr, "%s: to_host: %s\n", what, mf_error());
  for (int64_t i = 0; ok && i < n; i++) {
    double a = hg[i], b = hc[i];
    bool eq =
        (isnan(a) && isnan(b)) || (isinf(a) && a == b) || fabs(a - b) <= atol + rtol * fabs(b);
    if (!eq) {
      fprintf(stderr, "%s: element %lld: gpu %.9g, cpu %.9g\n", what, (long long)i, a, b);
      ok = false;
    }
  }
  free(hc);
  free(hg);
  return ok;
}

#define SAME(what, c, g, atol, rtol) CHECK(same(what, c, g, atol, rtol))

/* The outcomes of one call on the CPU (status sc, result rc) and on the GPU (sg, rg): the same
 * failure, or the same values within 1e-6 for float32, tol64 for float64 and exactly otherwise.
 * Both results are released. */
static inline void same_outcome(const char *what, mf_status sc, mf_tensor *rc, mf_status sg,
                                mf_tensor *rg, double tol64) {
  if (sc != MF_OK) {
    CHECK(sg == sc);
  } else {
    double tol = rc->dtype == MF_F32 ? 1e-6 : rc->dtype == MF_F64 ? tol64 : 0;
    SAME(what, rc, rg, tol, tol);
  }
  mf_release(rc);
  mf_release(rg);
}

/* ---- channels-last ----------------------------------------------------------------------------
 */

/* An (N, C, H, W) view of t's values stored (N, H, W, C) on t's device: exactly the NHWC strides,
 * size-1 dims too (so a C = 1 tensor is channels-last and not NCHW, as a permuted NHWC tensor is);
 * NULL on failure. */
static inline mf_tensor *channels_last(const mf_tensor *t) {
  int64_t nhwc[4] = {t->shape[0], t->shape[2], t->shape[3], t->shape[1]};
  int back[4] = {0, 3, 1, 2};
  mf_tensor *e = NULL, *v = NULL;
  if (mf_empty(4, nhwc, t->dtype, mf_tensor_device(t), &e) == MF_OK &&
      mf_permute(e, back, &v) == MF_OK && mf_copy_(v, t) != MF_OK)
    MF_DROP(v);
  mf_release(e);
  return v;
}

/* Whether t (4-D) is stored dense channels-last, (N, H, W, C) in memory (size-1 dims aside). */
static inline bool is_cl(const mf_tensor *t) {
  if (!t || t->ndim != 4) return false;
  static const int order[4] = {1, 3, 2, 0}; /* innermost first */
  int64_t st = 1;
  for (int k = 0; k < 4; k++) {
    int d = order[k];
    if (t->shape[d] != 1 && t->stride[d] != st) return false;
    st *= t->shape[d];
  }
  return true;
}

/* Backward of sum(out * r) on each side: the CPU's oc with rc, the GPU's og with rg (the parity
 * tests' way to reach every input's gradient with one weighted loss). */
static inline void backward_weighted(mf_tensor *oc, const mf_tensor *rc, mf_tensor *og,
                                     const mf_tensor *rg) {
  mf_tensor *out[2] = {oc, og};
  const mf_tensor *r[2] = {rc, rg};
  for (int d = 0; d < 2; d++) {
    mf_tensor *p = NULL, *sum = NULL;
    CHECK_OK(mf_mul(out[d], r[d], &p));
    CHECK_OK(mf_reduce(MF_OP_SUM, p, MF_ALL_DIMS, false, &sum));
    CHECK_OK(mf_backward(sum, NULL, false));
    mf_release(p);
    mf_release(sum);
  }
}
/* ---- the cross-entropy loss as nn/loss.lua builds it: -mean(gather(log_softmax(z), labels)) -- */

typedef struct xent_arg {
  const mf_tensor *labels, *glabels; /* (N, 1) int64 on the CPU and on the GPU */
  bool fused;                        /* mf_cross_entropy, else log_softmax, gather, mean */
  double eps;                        /* fused: the label smoothing */
} xent_arg;

/* an op_fn of the parity tests: the mean cross-entropy against the labels of in[0]'s side */
static inline mf_status xent_fn(mf_tensor *const *in, const void *arg, mf_tensor **out) {
  const xent_arg *a = arg;
  bool g = mf_device_kind(mf_tensor_device(in[0])) == MF_DEV_CUDA;
  const mf_tensor *lab = g ? a->glabels : a->labels;
  mf_tensor *ls = NULL, *picked = NULL, *m = NULL;
  mf_status s;
  if (a->fused) {
    s = mf_view(lab, 1, lab->shape, &ls); /* (N, 1) -> (N) */
    if (!s) s = mf_cross_entropy(in[0], ls, 0, a->eps, &picked);
    if (!s) s = mf_reduce(MF_OP_MEAN, picked, MF_ALL_DIMS, false, out);
  } else {
    s = mf_log_softmax(in[0], 1, &ls);
    if (!s) s = mf_gather(ls, 1, lab, &picked);
    if (!s) s = mf_reduce(MF_OP_MEAN, picked, MF_ALL_DIMS, false, &m);
    if (!s) s = mf_unary(MF_OP_NEG, m, out);
  }
  mf_release(ls);
  mf_release(picked);
  mf_release(m);
  return s;
}

#endif
