/* matmul.c — the CPU matmul kernel. Layout (from ops_linalg.c): A (batch..., M, K) and B
 * (batch..., K, N), each matrix row-major or column-major with a leading dimension, batch dims
 * with any strides (0 when broadcast); C (batch..., M, N) contiguous.
 *
 * float32/float64 go to OpenBLAS (cblas_?gemm, or ?gemv when M or N is 1), a column-major
 * operand passed as a transposed one, so transposed views cost no copy. Batches:
 * - B shared by every batch (stride 0) and A's matrices stacked contiguously: one GEMM of
 *   (batch*M, K) x (K, N);
 * - small matrices (OpenBLAS runs those on one thread anyway): batches spread over the pool;
 * - otherwise one GEMM per batch, each threaded by OpenBLAS.
 * int32/int64/uint8: a plain i-k-j loop in unsigned arithmetic (wrapping like torch), parallel
 * over the rows of all batches. */
#include <string.h>

#include <cblas.h>

#include "cpu/kernels.h"

#define SMALL_MNK (64 * 64 * 64) /* OpenBLAS keeps a GEMM this small on one thread */
#define GRAIN_FLOPS (1 << 20)    /* multiply-adds worth a parallel chunk */

/* One operand's matrix geometry: transposed (column-major) or not, leading dim, batch strides. */
typedef struct operand {
  const char *p; /* element 0 of batch 0 */
  bool trans;
  int64_t ld;
  const int64_t *bstride;
} operand;

typedef struct mctx {
  mf_dtype dt;
  size_t es;
  int nb; /* batch dims */
  const int64_t *bshape;
  operand a, b;
  char *c;
  int64_t M, N, K;
} mctx;

static operand make_operand(const mf_tensor *t, int64_t cols) {
  int nd = t->ndim;
  operand o = {.p = mf_data(t), .bstride = t->stride};
  o.trans = !(t->stride[nd - 1] == 1 && t->stride[nd - 2] >= (cols > 1 ? cols : 1));
  o.ld = o.trans ? t->stride[nd - 1] : t->stride[nd - 2];
  return o;
}

/* Element offsets of batch `bi` in A and B. */
static void batch_offsets(const mctx *m, int64_t bi, int64_t *oa, int64_t *ob) {
  *oa = *ob = 0;
  for (int d = m->nb - 1; d >= 0; d--) {
    int64_t i = bi % m->bshape[d];
    bi /= m->bshape[d];
    *oa += i * m->a.bstride[d];
    *ob += i * m->b.bstride[d];
  }
}

/* ---- float32 / float64 through BLAS ---------------------------------------------------------- */

/* C (M, N), ldc = N  =  A (M, K) @ B (K, N) */
static void gemm(const mctx *m, int64_t M, const char *A, const char *B, char *C) {
  int64_t N = m->N, K = m->K, lda = m->a.ld, ldb = m->b.ld;
  bool ta = m->a.trans, tb = m->b.trans;
  bool f32 = m->dt == MF_F32;
  if (M == 1) { /* c (N) = B^T a: a's elements are lda apart when A is column-major */
    int inca = ta ? (int)lda : 1;
    enum CBLAS_TRANSPOSE t = tb ? CblasNoTrans : CblasTrans;
    int rows = tb ? (int)N : (int)K, cols = tb ? (int)K : (int)N;
    if (f32)
      cblas_sgemv(CblasRowMajor, t, rows, cols, 1.0f, (const float *)B, (int)ldb, (const float *)A,
                  inca, 0.0f, (float *)C, 1);
    else
      cblas_dgemv(CblasRowMajor, t, rows, cols, 1.0, (const double *)B, (int)ldb, (const double *)A,
                  inca, 0.0, (double *)C, 1);
    return;
  }
  if (N == 1) { /* c (M) = A b: b's elements are ldb apart when B is row-major */
    int incb = tb ? 1 : (int)ldb;
    enum CBLAS_TRANSPOSE t = ta ? CblasTrans : CblasNoTrans;
    int rows = ta ? (int)K : (int)M, cols = ta ? (int)M : (int)K;
    if (f32)
      cblas_sgemv(CblasRowMajor, t, rows, cols, 1.0f, (const float *)A, (int)lda, (const float *)B,
                  incb, 0.0f, (float *)C, 1);
    else
      cblas_dgemv(CblasRowMajor, t, rows, cols, 1.0, (const double *)A, (int)lda, (const double *)B,
                  incb, 0.0, (double *)C, 1);
    return;
  }
  enum CBLAS_TRANSPOSE tA = ta ? CblasTrans : CblasNoTrans, tB = tb ? CblasTrans : CblasNoTrans;
  if (f32)
    cblas_sgemm(CblasRowMajor, tA, tB, (int)M, (int)N, (int)K, 1.0f, (const float *)A, (int)lda,
                (const float *)B, (int)ldb, 0.0f, (float *)C, (int)N);
  else
    cblas_dgemm(CblasRowMajor, tA, tB, (int)M, (int)N, (int)K, 1.0, (const double *)A, (int)lda,
                (const double *)B, (int)ldb, 0.0, (double *)C, (int)N);
}

static void gemm_batches(void *p, int64_t b, int64_t e) {
  const mctx *m = p;
  for (int64_t bi = b; bi < e; bi++) {
    int64_t oa, ob;
    batch_offsets(m, bi, &oa, &ob);
    gemm(m, m->M, m->a.p + oa * (int64_t)m->es, m->b.p + ob * (int64_t)m->es,
         m->c + bi * m->M * m->N * (int64_t)m->es);
  }
}

/* True when every batch of B is the same matrix and A's matrices are row-major and stacked
 * contiguously (batch i at i * M * lda), so that the batches form one (batch*M, K) matrix. */
static bool collapsible(const mctx *m) {
  if (m->a.trans) return false;
  int64_t want = m->M * m->a.ld;
  for (int d = m->nb - 1; d >= 0; d--) {
    if (m->bshape[d] == 1) continue;
    if (m->b.bstride[d] != 0 || m->a.bstride[d] != want) return false;
    want *= m->bshape[d];
  }
  return true;
}

/* ---- integers --------------------------------------------------------------------------------
 * Computed in the unsigned type of the same width: wrapping products and sums, no undefined
 * overflow. Rows [r0, r1) of the (batch*M, N) output. */
#define DEF_IMATMUL(sfx, U)                                                                        \
  static void imm_##sfx(void *p, int64_t r0, int64_t r1) {                                         \
    const mctx *m = p;                                                                             \
    int64_t M = m->M, N = m->N, K = m->K;                                                          \
    int64_t sam = m->a.trans ? 1 : m->a.ld, sak = m->a.trans ? m->a.ld : 1;                        \
    int64_t sbk = m->b.trans ? 1 : m->b.ld, sbn = m->b.trans ? m->b.ld : 1;                        \
    for (int64_t r = r0; r < r1; r++) {                                                            \
      int64_t bi = r / M, i = r % M, oa, ob;                                                       \
      batch_offsets(m, bi, &oa, &ob);                                                              \
      const U *a = (const U *)m->a.p + oa + i * sam, *b = (const U *)m->b.p + ob;                  \
      U *restrict c = (U *)m->c + r * N;                                                           \
      for (int64_t j = 0; j < N; j++) c[j] = 0;                                                    \
      for (int64_t k = 0; k < K; k++) {                                                            \
        U av = a[k * sak];                                                                         \
        const U *restrict br = b + k * sbk;                                                        \
        if (sbn == 1)                                                                              \
          for (int64_t j = 0; j < N; j++) c[j] += (U)(av * br[j]);                                 \
        else                                                                                       \
          for (int64_t j = 0; j < N; j++) c[j] += (U)(av * br[j * sbn]);                           \
      }                                                                                            \
    }                                                                                              \
  }

DEF_IMATMUL(i32, uint32_t)
DEF_IMATMUL(i64, uint64_t)
DEF_IMATMUL(u8, uint8_t)

/* ---- entry point ----------------------------------------------------------------------------- */

mf_status mf_cpu_matmul(mf_device *dev, const mf_call *c) {
  (void)dev;
  const mf_tensor *A = c->in[0], *B = c->in[1];
  mf_tensor *C = c->out;
  int nd = C->ndim;
  mctx m = {.dt = C->dtype,
            .es = mf_dtype_size(C->dtype),
            .nb = nd - 2,
            .bshape = C->shape,
            .c = mf_data(C),
            .M = C->shape[nd - 2],
            .N = C->shape[nd - 1],
            .K = A->shape[nd - 1]};
  mf_range_fn imm = NULL;
  switch (m.dt) {
  case MF_F32:
  case MF_F64: break;
  case MF_I32: imm = imm_i32; break;
  case MF_I64: imm = imm_i64; break;
  case MF_U8: imm = imm_u8; break;
  default: return mf_fail(MF_ERR_DTYPE, "matmul: no CPU kernel for %s", mf_dtype_name(m.dt));
  }
  if (m.M > INT32_MAX || m.N > INT32_MAX || m.K > INT32_MAX)
    return mf_fail(MF_ERR_SHAPE, "matmul: a matrix dimension above 2^31 is not supported");
  int64_t batch = mf_shape_numel(m.nb, m.bshape);
  if (batch * m.M * m.N == 0) return MF_OK;
  if (m.K == 0) {
    memset(m.c, 0, (size_t)(batch * m.M * m.N) * m.es);
    return MF_OK;
  }
  m.a = make_operand(A, m.K);
  m.b = make_operand(B, m.N);
  if (!imm && (m.a.ld > INT32_MAX || m.b.ld > INT32_MAX))
    return mf_fail(MF_ERR_SHAPE, "matmul: a leading dimension above 2^31 is not supported");
  int64_t mnk = m.M * m.N * m.K;

  if (imm) {
    mf_parallel_for(batch * m.M, GRAIN_FLOPS / (m.N * m.K) + 1, imm, &m);
  } else if (batch > 1 && batch * m.M <= INT32_MAX && collapsible(&m)) {
    gemm(&m, batch * m.M, m.a.p, m.b.p, m.c);
  } else if (batch > 1 && mnk <= SMALL_MNK) {
    mf_get_num_threads(); /* makes sure the pool has set OpenBLAS's thread count */
    mf_parallel_for(batch, GRAIN_FLOPS / mnk + 1, gemm_batches, &m);
  } else {
    gemm_batches(&m, 0, batch);
  }
  return MF_OK;
}
