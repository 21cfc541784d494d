/* ops_linalg.c — the matmul front end, with numpy's semantics: 1-D @ 1-D is a 0-d dot product; a
 * 1-D left operand is treated as (1, K) and a 1-D right operand as (K, 1), the added dimension
 * removed from the result; leading (batch) dimensions broadcast by numpy's rules; dtypes promote
 * (mf_promote) and the operands are cast when they differ; bool is not supported.
 *
 * What the backend's MATMUL kernel receives (mf_cpu_matmul, the CUDA one likewise):
 * - in[0] = A, a view of shape (batch..., M, K); in[1] = B, a view of shape (batch..., K, N);
 *   out = C, contiguous (batch..., M, N). All three have the same ndim >= 2 and dtype, and the
 *   same batch sizes: the batch dims of A and B are expanded to the broadcast shape, so a
 *   broadcast batch dim has stride 0 (any batch strides are possible; a batch dim of size 1 may
 *   have any stride).
 * - The last two dims of A and of B are each either row-major: stride[-1] == 1 and stride[-2] >=
 *   max(1, cols) (the leading dimension), or column-major: stride[-2] == 1 and stride[-1] >=
 *   max(1, rows). Row-major is checked first (when both hold, the operand is row-major). A view
 *   with another layout is copied to a contiguous one here, so transposed views (a:t()) and
 *   column slices reach the kernel without a copy.
 * - M, N and K may be 0 (the front end skips the kernel when C is empty; K == 0 means C = 0).
 */
#include "autograd.h"

static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

/* A view of t (ndim >= 2) whose last two dims have one of the layouts above, canonical strides
 * put on size-1 dims; false when t has neither layout. */
static bool matrix_strides(const mf_tensor *t, int64_t *st) {
  int nd = t->ndim;
  int64_t r = t->shape[nd - 2], c = t->shape[nd - 1], sr = t->stride[nd - 2],
          sc = t->stride[nd - 1];
  for (int d = 0; d < nd; d++) st[d] = t->stride[d];
  if ((c == 1 || sc == 1) && (r == 1 || sr >= imax(1, c))) { /* row-major */
    st[nd - 1] = 1;
    st[nd - 2] = r == 1 ? imax(1, c) : sr;
    return true;
  }
  if ((r == 1 || sr == 1) && (c == 1 || sc >= imax(1, r))) { /* column-major */
    st[nd - 2] = 1;
    st[nd - 1] = c == 1 ? imax(1, r) : sc;
    return true;
  }
  return false;
}

static mf_status matrix_layout(const mf_tensor *t, mf_tensor **out) {
  int64_t st[MF_MAX_DIMS];
  if (matrix_strides(t, st)) return mf_make_view(t, t->ndim, t->shape, st, t->offset, out);
  mf_tensor *c;
  MF_TRY(mf_contiguous(t, &c));
  mf_status s = MF_OK;
  if (!matrix_strides(c, st)) /* cannot happen for a contiguous tensor */
    s = mf_fail(MF_ERR_SHAPE, "matmul: no matrix layout for a contiguous operand");
  else
    s = mf_make_view(c, c->ndim, c->shape, st, c->offset, out);
  mf_release(c);
  return s;
}

/* x (at least 2-D) cast to dt, with a BLAS-friendly matrix layout, batch dims expanded to
 * bshape (nb dims). */
static mf_status prepare(const mf_tensor *x, mf_dtype dt, int nb, const int64_t *bshape,
                         mf_tensor **out) {
  *out = NULL;
  mf_tensor *cast = NULL, *laid = NULL;
  mf_status s = x->dtype != dt ? mf_cast(x, dt, &cast) : MF_OK;
  if (!s) s = matrix_layout(cast ? cast : x, &laid);
  if (!s) {
    int64_t shape[MF_MAX_DIMS];
    for (int d = 0; d < nb; d++) shape[d] = bshape[d];
    shape[nb] = laid->shape[laid->ndim - 2];
    shape[nb + 1] = laid->shape[laid->ndim - 1];
    s = mf_expand(laid, nb + 2, shape, out);
  }
  mf_release(cast);
  mf_release(laid);
  return s;
}

mf_status mf_matmul(const mf_tensor *a, const mf_tensor *b, mf_tensor **out) {
  *out = NULL;
  char sa[96], sb[96];
  MF_TRY(mf_same_device("matmul", a, b));
  if (a->ndim == 0 || b->ndim == 0)
    return mf_fail(MF_ERR_SHAPE, "matmul: both operands need at least 1 dimension, got %s and %s",
                   mf_shape_str(a, sa, sizeof sa), mf_shape_str(b, sb, sizeof sb));
  if (a->dtype == MF_BOOL || b->dtype == MF_BOOL)
    return mf_fail(MF_ERR_DTYPE, "matmul: bool is not supported (got %s and %s); cast first",
                   mf_dtype_name(a->dtype), mf_dtype_name(b->dtype));
  mf_dtype dt = mf_promote(a->dtype, b->dtype);

  /* a2: (abatch..., M, K), b2: (bbatch..., K, N) */
  mf_tensor *a2 = NULL, *b2 = NULL, *av = NULL, *bv = NULL, *c = NULL;
  mf_status s = a->ndim == 1 ? mf_unsqueeze(a, 0, &a2) : MF_OK;
  if (!s && b->ndim == 1) s = mf_unsqueeze(b, 1, &b2);
  if (s) goto done;
  const mf_tensor *A = a2 ? a2 : a, *B = b2 ? b2 : b;
  int na = A->ndim, nbd = B->ndim;
  int64_t M = A->shape[na - 2], K = A->shape[na - 1], N = B->shape[nbd - 1];
  if (B->shape[nbd - 2] != K) {
    s = mf_fail(MF_ERR_SHAPE, "matmul: sizes %s and %s do not match",
                mf_shape_str(a, sa, sizeof sa), mf_shape_str(b, sb, sizeof sb));
    goto done;
  }
  int nb;
  int64_t shape[MF_MAX_DIMS + 2];
  s = mf_broadcast_shape("matmul", na - 2, A->shape, nbd - 2, B->shape, &nb, shape);
  if (s) goto done;
  s = prepare(A, dt, nb, shape, &av);
  if (!s) s = prepare(B, dt, nb, shape, &bv);
  shape[nb] = M;
  shape[nb + 1] = N;
  if (!s) s = mf_empty(nb + 2, shape, dt, mf_tensor_device(a), &c);
  if (!s && mf_numel(c) > 0) {
    mf_call call = {.op = MF_OP_MATMUL, .out = c, .in = {av, bv}, .nin = 2};
    s = mf_dispatch(mf_tensor_device(a), &call);
  }
  if (!s) { /* drop the dimensions added for 1-D operands */
    int nd = nb + 2;
    if (b->ndim == 1) nd--;
    if (a->ndim == 1) {
      shape[nb] = shape[nb + 1];
      nd--;
    }
    s = nd == nb + 2 ? (*out = mf_retain(c), MF_OK) : mf_view(c, nd, shape, out);
    if (!s) s = mf_ag_matmul(a, b, *out);
    mf_ag_keep(s, out);
  }
done:
  mf_release(a2);
  mf_release(b2);
  mf_release(av);
  mf_release(bv);
  mf_release(c);
  return s;
}
