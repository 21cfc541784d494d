/* test_cuda_reduce.c — reduce.cu's and softmax.cu's launch layouts, CPU vs GPU, on shapes that
 * reach each of them: several rows per block (short rows), 32-column blocks whose warps split the
 * reduced axis, n split over several blocks and merged by a second launch (few outputs, a long
 * axis; rows and columns), more row blocks than a grid holds, NaN and ties through a split (max,
 * min and the arg- reductions give the CPU's exact results), and the shapes of the tutorial CNN's
 * training step. test_cuda.c and test_cuda_parity.c test the ops themselves on small shapes. */
#include "test_cuda.h"

static const mf_dtype dts[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL};

static void reduce_case(int nd, const int64_t *shape, int dim, bool with_prod) {
  for (int k = 0; k < 6; k++) {
    mf_dtype dt = dts[k];
    mf_tensor *a = make(nd, shape, dt, V_REAL), *ga = on_gpu(a);
    for (int op = MF_OP_SUM; op <= MF_OP_MEAN; op++) {
      if (op == MF_OP_PROD && !with_prod) continue;
      if (op == MF_OP_MEAN && !mf_dtype_is_float(dt)) continue;
      mf_tensor *rc = NULL, *rg = NULL;
      mf_status sc = mf_reduce((mf_op)op, a, dim, false, &rc);
      mf_status sg = mf_reduce((mf_op)op, ga, dim, false, &rg);
      char what[160];
      snprintf(what, sizeof what, "%s %s dim %d shape %lldx%lld..", mf_op_name((mf_op)op),
               mf_dtype_name(dt), dim, (long long)shape[0], (long long)(nd > 1 ? shape[1] : 0));
      same_outcome(what, sc, rc, sg, rg, 1e-9);
    }
    mf_release(a);
    mf_release(ga);
  }
}

/* one op, float32 only: for the shapes too big to run every dtype through on the emulator */
static void reduce_one(mf_op op, int nd, const int64_t *shape, int dim) {
  mf_tensor *a = make(nd, shape, MF_F32, V_REAL), *ga = on_gpu(a), *rc = NULL, *rg = NULL;
  CHECK_OK(mf_reduce(op, a, dim, false, &rc));
  CHECK_OK(mf_reduce(op, ga, dim, false, &rg));
  char what[96];
  snprintf(what, sizeof what, "%s float32 dim %d shape %lldx%lld", mf_op_name(op), dim,
           (long long)shape[0], (long long)(nd > 1 ? shape[1] : 0));
  SAME(what, rc, rg, 1e-6, 1e-6);
  mf_release(rc);
  mf_release(rg);
  mf_release(a);
  mf_release(ga);
}

static void nan_case(int64_t outer, int64_t n, int64_t at1, int64_t at2) {
  int64_t s[2] = {outer, n};
  mf_tensor *a = make(2, s, MF_F32, V_REAL);
  float *d = (float *)a->storage->data;
  d[at1] = NAN;
  d[at2] = NAN;
  /* ties for max: several equal maxima */
  d[(outer - 1) * n + n / 3] = 100.0f;
  d[(outer - 1) * n + n - 2] = 100.0f;
  mf_tensor *ga = on_gpu(a);
  mf_op ops[4] = {MF_OP_MAX, MF_OP_MIN, MF_OP_ARGMAX, MF_OP_ARGMIN};
  for (int dim = 0; dim < 2; dim++)
    for (int i = 0; i < 4; i++) {
      mf_tensor *rc = NULL, *rg = NULL;
      CHECK_OK(mf_reduce(ops[i], a, dim, false, &rc));
      CHECK_OK(mf_reduce(ops[i], ga, dim, false, &rg));
      char what[96];
      snprintf(what, sizeof what, "nan %s dim %d %lldx%lld", mf_op_name(ops[i]), dim,
               (long long)outer, (long long)n);
      SAME(what, rc, rg, 0, 0);
      mf_release(rc);
      mf_release(rg);
    }
  mf_release(a);
  mf_release(ga);
}

/* float32 and float64 (ndt = 2) or float32 only (ndt = 1: the shapes too big for both here) */
static void softmax_case(int64_t outer, int64_t n, int ndt) {
  int64_t s[2] = {outer, n};
  mf_dtype fdt[2] = {MF_F32, MF_F64};
  for (int k = 0; k < ndt; k++) {
    mf_tensor *a = make(2, s, fdt[k], V_REAL), *ga = on_gpu(a);
    mf_tensor *dy = make(2, s, fdt[k], V_REAL), *gdy = on_gpu(dy);
    for (int lg = 0; lg < 2; lg++) {
      mf_tensor *rc = NULL, *rg = NULL, *bc = NULL, *bg = NULL;
      CHECK_OK((lg ? mf_log_softmax : mf_softmax)(a, 1, &rc));
      CHECK_OK((lg ? mf_log_softmax : mf_softmax)(ga, 1, &rg));
      char what[96];
      snprintf(what, sizeof what, "%ssoftmax %s %lldx%lld", lg ? "log_" : "", mf_dtype_name(fdt[k]),
               (long long)outer, (long long)n);
      double tol = fdt[k] == MF_F32 ? 1e-5 : 1e-12;
      SAME(what, rc, rg, tol, tol);
      CHECK_OK((lg ? mf_log_softmax_backward : mf_softmax_backward)(rc, dy, 1, &bc));
      CHECK_OK((lg ? mf_log_softmax_backward : mf_softmax_backward)(rg, gdy, 1, &bg));
      SAME(what, bc, bg, tol * 10, tol * 10);
      mf_release(rc);
      mf_release(rg);
      mf_release(bc);
      mf_release(bg);
    }
    mf_release(a);
    mf_release(ga);
    mf_release(dy);
    mf_release(gdy);
  }
}

int main(void) {
  if (mf_cuda_device_count() == 0 || mf_device_get("cuda:0", &gpu) != MF_OK) {
    printf("# skipped: no CUDA device (%s)\n", mf_error());
    int r = test_summary();
    printf("# skipped 1\n");
    return r;
  }
  /* the training step's shapes */
  {
    int64_t s[3] = {50, 32, 784};
    reduce_case(3, s, 2, false);
  }
  {
    int64_t s[2] = {50, 32};
    reduce_case(2, s, 0, true);
  }
  {
    int64_t s[3] = {50, 64, 196};
    reduce_case(3, s, 2, false);
  }
  {
    int64_t s[2] = {50, 1024};
    reduce_case(2, s, 0, true);
  }
  {
    int64_t s[2] = {50, 10};
    reduce_case(2, s, 0, true);
    reduce_case(2, s, 1, true);
  }
  {
    int64_t s[1] = {50};
    reduce_case(1, s, MF_ALL_DIMS, true);
  }
  /* split n: rows and cols */
  {
    int64_t s[1] = {20000};
    reduce_case(1, s, MF_ALL_DIMS, false);
  }
  {
    int64_t s[2] = {3, 20001};
    reduce_case(2, s, 1, false);
    reduce_case(2, s, 0, true);
  }
  {
    int64_t s[2] = {20003, 3};
    reduce_case(2, s, 0, false);
    reduce_case(2, s, 1, false);
  }
  {
    int64_t s[3] = {5, 3001, 40};
    reduce_case(3, s, 1, false);
  }
  {
    int64_t s[3] = {2, 3000, 33};
    reduce_case(3, s, 1, false);
  }
  /* many short rows: several rows per block, more row blocks than 65535 */
  {
    int64_t s[2] = {65535 * 8 + 9, 2};
    reduce_one(MF_OP_SUM, 2, s, 1);
  }
  {
    int64_t s[2] = {1001, 17};
    reduce_case(2, s, 1, true);
    reduce_case(2, s, 0, true);
  }
  {
    int64_t s[3] = {7, 3, 5};
    reduce_case(3, s, 1, true);
    reduce_case(3, s, 0, true);
  }
  /* NaN and ties through a split */
  nan_case(1, 20000, 7777, 19999);
  nan_case(1, 20000, 5, 4);
  nan_case(3, 20001, 20001 + 123, 2 * 20001 + 15000);
  nan_case(20000, 3, 3 * 12345 + 1, 3 * 19000);
  /* softmax rows: several rows per block, a partial last block */
  softmax_case(50, 10, 2);
  softmax_case(1001, 3, 2);
  softmax_case(77, 100, 2);
  softmax_case(5, 1000, 2);
  softmax_case(65535 * 8 + 9, 1, 1); /* more row blocks than a grid holds */
  return test_summary();
}
