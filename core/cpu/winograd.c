/* winograd.c — float32 5x5 stride-1 convolutions by Winograd's minimal filtering F(4x4, 5x5) on
 * AVX2+FMA: forward, backward-input and backward-weight, ~5x fewer multiplications than im2col.
 * mf_cpu_conv2d (conv.c) calls mf_cpu_conv2d_winograd first and falls back to im2col when it
 * declines: another dtype or geometry, no AVX2, fewer than 8 input or output channels, an output
 * smaller than one 4x4 tile, or the environment variable MOONFLOW_WINOGRAD=0 (for exactness).
 *
 * Each 4x4 output tile comes from an 8x8 input tile d (tiles overlap by 4; cells outside the
 * input are zeros, which is how any padding is done):
 *     Y = AT [ sum_c (G g G^T) ⊙ (BT d BT^T) ] AT^T
 * with the matrices below (points 0, ±1, ±2, ±1/2, ∞). With U = G g G^T (per (o, c)),
 * V = BT d BT^T (per (c, tile)) and xi = (i, j) one of the 64 positions of the 8x8 transform:
 *     forward          M[xi] (O, T)  = U[xi] (O, C) @ V[xi] (C, T);  y tile = AT M AT^T
 *     backward-input   dM = AT^T dy AT (per (o, tile));  dV[xi] (C, T) = U[xi]^T @ dM[xi];
 *                      dx += BT^T dV BT, added over the overlapping tiles
 *     backward-weight  dU[xi] (O, C) += dM[xi] (O, T) @ V[xi]^T (T, C);  dw = G^T dU G
 * The backwards are the exact adjoints of the forward, so all three agree with direct
 * convolution up to float rounding (about 1e-5 of the output's scale for 32 channels).
 *
 * Work: blocks of images (one, or two for the weight gradient) go to the thread pool's threads,
 * claimed one at a time (the weight gradient: a fixed share per thread, summed in order, so that
 * the result does not depend on timing). A block's tiles are done in chunks of at most TP tiles
 * (about 32 KiB per transform position), each transformed into the task's own buffers (vectorised
 * over 8 tiles), multiplied by 64 small GEMMs with a register-blocked 6x16 kernel (no BLAS), and
 * transformed back. Weight transforms run in float, 8 (o, c) pairs at a time.
 * Channels-last activations (ip[0] = 1: images stored (H, W, C)) are transposed image by image
 * into the task's (C, H, W) / (O, OH, OW) buffers at the start of a block (x, dy) and back at its
 * end (y, dx); the transforms then read and write those buffers, offset by the block's first image.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/iter.h"
#include "cpu/kernels.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define NPOS 64 /* positions of the 8x8 transform */

/* F(4x4, 5x5) matrices: G (8x5) for the weight transforms. */
static const double G[8][5] = {
    {1.0 / 4, 0, 0, 0, 0},
    {1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18, 1.0 / 18},
    {1.0 / 18, -1.0 / 18, 1.0 / 18, -1.0 / 18, 1.0 / 18},
    {1.0 / 360, 1.0 / 180, 1.0 / 90, 1.0 / 45, 2.0 / 45},
    {1.0 / 360, -1.0 / 180, 1.0 / 90, -1.0 / 45, 2.0 / 45},
    {16.0 / 45, 8.0 / 45, 4.0 / 45, 2.0 / 45, 1.0 / 45},
    {16.0 / 45, -8.0 / 45, 4.0 / 45, -2.0 / 45, 1.0 / 45},
    {0, 0, 0, 0, 1.0 / 4},
};
/* BT (8x8): rows  4 0 -21 0 21 0 -4 0 | 0 -4 -4 17 17 -4 -4 0 | 0 4 -4 -17 17 4 -4 0 |
 * 0 2 1 -10 -5 8 4 0 | 0 -2 1 10 -5 -8 4 0 | 0 4 8 -5 -10 1 2 0 | 0 -4 8 5 -10 -1 2 0 |
 * 0 -4 0 21 0 -21 0 4.  AT (4x8): rows 1 1 1 1 1 1 1 0 | 0 1 -1 2 -2 1/2 -1/2 0 |
 * 0 1 1 4 4 1/4 1/4 0 | 0 1 -1 8 -8 1/8 -1/8 1.  Used through the functions below. */

typedef __m256 v8;
#define VS(x) _mm256_set1_ps(x)
#define ADD _mm256_add_ps
#define SUB _mm256_sub_ps
#define MUL _mm256_mul_ps
#define FMA _mm256_fmadd_ps /* a*b + c */

/* r = BT x (8 -> 8) */
static inline void bt_fwd(const v8 *x, v8 *r) {
  const v8 c4 = VS(4), c21 = VS(21), c17 = VS(17), c5 = VS(5), c10 = VS(10), c2 = VS(2), c8 = VS(8);
  r[0] = FMA(c4, SUB(x[0], x[6]), MUL(c21, SUB(x[4], x[2])));
  r[7] = FMA(c4, SUB(x[7], x[1]), MUL(c21, SUB(x[3], x[5])));
  v8 a = _mm256_fnmadd_ps(c4, ADD(x[2], x[6]), MUL(c17, x[4]));
  v8 b = _mm256_fnmadd_ps(c4, ADD(x[1], x[5]), MUL(c17, x[3]));
  r[1] = ADD(a, b), r[2] = SUB(a, b);
  a = FMA(c4, x[6], _mm256_fnmadd_ps(c5, x[4], x[2]));
  b = FMA(c8, x[5], _mm256_fnmadd_ps(c10, x[3], MUL(c2, x[1])));
  r[3] = ADD(a, b), r[4] = SUB(a, b);
  a = FMA(c2, x[6], _mm256_fnmadd_ps(c10, x[4], MUL(c8, x[2])));
  b = ADD(x[5], _mm256_fnmadd_ps(c5, x[3], MUL(c4, x[1])));
  r[5] = ADD(a, b), r[6] = SUB(a, b);
}

/* p = BT^T v (8 -> 8), the adjoint of bt_fwd */
static inline void bt_adj(const v8 *v, v8 *p) {
  const v8 c4 = VS(4), c21 = VS(21), c17 = VS(17), c5 = VS(5), c10 = VS(10), c2 = VS(2), c8 = VS(8);
  v8 s1 = ADD(v[1], v[2]), d1 = SUB(v[1], v[2]), s2 = ADD(v[3], v[4]), d2 = SUB(v[3], v[4]);
  v8 s3 = ADD(v[5], v[6]), d3 = SUB(v[5], v[6]);
  p[0] = MUL(c4, v[0]);
  p[7] = MUL(c4, v[7]);
  p[1] = _mm256_fnmadd_ps(c4, ADD(d1, v[7]), FMA(c2, d2, MUL(c4, d3)));
  p[2] = FMA(c8, s3, _mm256_fnmadd_ps(c21, v[0], _mm256_fnmadd_ps(c4, s1, s2)));
  p[3] = FMA(c21, v[7], _mm256_fnmadd_ps(c5, d3, _mm256_fnmadd_ps(c10, d2, MUL(c17, d1))));
  p[4] = _mm256_fnmadd_ps(c10, s3, _mm256_fnmadd_ps(c5, s2, FMA(c17, s1, MUL(c21, v[0]))));
  p[5] = _mm256_fnmadd_ps(c21, v[7], ADD(d3, _mm256_fnmadd_ps(c4, d1, MUL(c8, d2))));
  p[6] = FMA(c4, SUB(SUB(s2, s1), v[0]), MUL(c2, s3));
}

/* y = AT m (8 -> 4) */
static inline void at_fwd(const v8 *m, v8 *y) {
  v8 s1 = ADD(m[1], m[2]), d1 = SUB(m[1], m[2]), s2 = ADD(m[3], m[4]), d2 = SUB(m[3], m[4]);
  v8 s3 = ADD(m[5], m[6]), d3 = SUB(m[5], m[6]);
  y[0] = ADD(ADD(m[0], s1), ADD(s2, s3));
  y[1] = FMA(VS(0.5f), d3, FMA(VS(2), d2, d1));
  y[2] = FMA(VS(0.25f), s3, FMA(VS(4), s2, s1));
  y[3] = ADD(FMA(VS(0.125f), d3, FMA(VS(8), d2, d1)), m[7]);
}

/* z = AT^T y (4 -> 8), the adjoint of at_fwd */
static inline void at_adj(const v8 *y, v8 *z) {
  v8 e = ADD(y[0], y[2]), o = ADD(y[1], y[3]);
  z[0] = y[0];
  z[1] = ADD(e, o), z[2] = SUB(e, o);
  e = FMA(VS(4), y[2], y[0]), o = FMA(VS(8), y[3], MUL(VS(2), y[1]));
  z[3] = ADD(e, o), z[4] = SUB(e, o);
  e = FMA(VS(0.25f), y[2], y[0]), o = FMA(VS(0.125f), y[3], MUL(VS(0.5f), y[1]));
  z[5] = ADD(e, o), z[6] = SUB(e, o);
  z[7] = y[3];
}

static inline void transpose8(v8 *r) {
  v8 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  v8 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  v8 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  v8 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  v8 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  v8 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  v8 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  v8 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

/* ---- GEMM: C (M, N) = or += A (M, K) @ B (K, N), N a multiple of 8 -------------------------- */

/* R rows (R <= 6) by NV vectors of 8 columns, all in registers. */
static inline __attribute__((always_inline)) void micro(int R, int NV, int64_t K, const float *A,
                                                        int64_t lda, const float *B, int64_t ldb,
                                                        float *C, int64_t ldc, bool acc) {
  v8 c[6][2];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++)
      c[r][v] = acc ? _mm256_loadu_ps(C + r * ldc + 8 * v) : _mm256_setzero_ps();
  for (int64_t k = 0; k < K; k++) {
    v8 b0 = _mm256_loadu_ps(B + k * ldb), b1 = NV > 1 ? _mm256_loadu_ps(B + k * ldb + 8) : b0;
    for (int r = 0; r < R; r++) {
      v8 a = _mm256_broadcast_ss(A + r * lda + k);
      c[r][0] = FMA(a, b0, c[r][0]);
      if (NV > 1) c[r][1] = FMA(a, b1, c[r][1]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(C + r * ldc + 8 * v, c[r][v]);
}

#define MICRO_CASES(NV)                                                                            \
  switch (R) {                                                                                     \
  case 6: micro(6, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                    \
  case 5: micro(5, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                    \
  case 4: micro(4, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                    \
  case 3: micro(3, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                    \
  case 2: micro(2, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                    \
  default: micro(1, NV, K, a, lda, b, ldb, cc, ldc, acc); break;                                   \
  }

static void gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                 int64_t ldb, float *C, int64_t ldc, bool acc) {
  for (int64_t n0 = 0; n0 < N; n0 += 16) {
    int nv = N - n0 >= 16 ? 2 : 1;
    const float *b = B + n0;
    int64_t nblk = (M + 5) / 6; /* row blocks of (nearly) equal height, at most 6 */
    for (int64_t bi = 0, m0 = 0; bi < nblk; bi++) {
      int R = (int)(M * (bi + 1) / nblk - m0);
      const float *a = A + m0 * lda;
      float *cc = C + m0 * ldc + n0;
      if (nv == 2) {
        MICRO_CASES(2)
      } else {
        MICRO_CASES(1)
      }
      m0 += R;
    }
  }
}

/* ---- geometry and jobs ---------------------------------------------------------------------- */

typedef struct wjob {
  mf_op op;
  int64_t N, C, H, W, O, OH, OW;
  int pt, pl;
  int64_t TH, TW, TI; /* tiles per image: rows, columns, all */
  int64_t nb;         /* images per block (a block belongs to one thread) */
  int64_t TP;         /* tile slots per chunk: a block's tiles are done in chunks of TP */
  int64_t vs, ms;     /* position strides of the V (C rows) and M (O rows) buffers, in floats */
  const float *a, *b, *bias;
  float *out;
  bool cl;        /* channels-last activations */
  const float *U; /* (64, O, C) forward; (64, C, O) for backward-input */
  float **dU;     /* backward-weight: per-task (64, O, Cp) sums */
  int tasks;
  int failed;
  atomic_llong next; /* forward, backward-input: the next unclaimed block */
} wjob;

/* A buffer of 64 positions of `rows` x TP floats: position stride rows * TP plus one cache line,
 * so that the 64 accesses of a transform do not all fall in one cache set. */
static inline int64_t pos_stride(int64_t rows, int64_t TP) { return rows * TP + 16; }

/* The 8 tile slots [t0, t0 + 8) of a block of images [n0, n1), with what the transforms need
 * about each tile: image, tile row and column, whether it is a real tile (not padding), the
 * first input row and column of its 8x8 input window, the input columns inside the plane
 * [in_lo, in_hi) (`full` when all 8 are), the output columns inside (out_w), and the shuffles
 * that read and write partial rows with whole-vector moves (AMD's masked moves are slow). */
typedef struct tgroup {
  int64_t n[8], ty[8], tx[8], y0[8], x0[8];
  int in_lo[8], in_hi[8], out_w[8];
  bool real[8], full[8], out_full[8];
  /* a partial input row (W >= 8) is read as the 8 cells from x0 + in_shift, permuted by in_idx
   * and masked by in_and; the adjoint adds back through in_back / in_back_and */
  int64_t in_shift[8];
  __m256i in_idx[8], in_back[8];
  __m256 in_and[8], in_back_and[8];
  /* a partial output row: the 4 cells from 4 tx + out_w - 4, permuted by out_idx / out_back */
  __m128i out_idx[8], out_back[8];
  __m128 out_and[8], out_back_sel[8];
} tgroup;

/* a lane mask: lanes m with lo <= m + off < hi */
static inline __m256 fmask8(int64_t lo, int64_t hi, int64_t off) {
  float v[8];
  for (int m = 0; m < 8; m++) {
    uint32_t bits = m + off >= lo && m + off < hi ? 0xffffffffu : 0;
    memcpy(&v[m], &bits, 4);
  }
  return _mm256_loadu_ps(v);
}

/* The TP / 8 groups of the chunk starting at tile `first` of the block of images [n0, n1). */
static void tile_groups(const wjob *j, int64_t n0, int64_t n1, int64_t first, tgroup *gs) {
  for (int64_t t0 = 0; t0 < j->TP; t0 += 8) {
    tgroup *g = &gs[t0 / 8];
    for (int k = 0; k < 8; k++) {
      int64_t t = first + t0 + k, img = t / j->TI, r = t % j->TI;
      g->real[k] = n0 + img < n1;
      g->n[k] = n0 + img, g->ty[k] = r / j->TW, g->tx[k] = r % j->TW;
      g->y0[k] = 4 * g->ty[k] - j->pt, g->x0[k] = 4 * g->tx[k] - j->pl;
      int64_t lo = g->x0[k] < 0 ? -g->x0[k] : 0, hi = j->W - g->x0[k] < 8 ? j->W - g->x0[k] : 8;
      if (hi < lo) hi = lo;
      g->full[k] = lo == 0 && hi == 8;
      g->in_lo[k] = (int)lo, g->in_hi[k] = (int)hi;
      /* a partial row is read as the 8 cells from st: lane q takes cell x0 + q = st + (q - sh) */
      int64_t st = g->x0[k] < 0 ? 0 : g->x0[k] > j->W - 8 ? j->W - 8 : g->x0[k];
      int64_t sh = st - g->x0[k];
      g->in_shift[k] = sh;
      int32_t fi[8], bi[8];
      for (int q = 0; q < 8; q++) {
        fi[q] = (int32_t)((q - sh) & 7); /* forward: lane q <- loaded m = q - sh */
        bi[q] = (int32_t)((q + sh) & 7); /* back: cell m <- lane q = m + sh */
      }
      g->in_idx[k] = _mm256_loadu_si256((const __m256i *)fi);
      g->in_back[k] = _mm256_loadu_si256((const __m256i *)bi);
      g->in_and[k] = fmask8(lo, hi, 0);
      g->in_back_and[k] = fmask8(lo, hi, sh);
      int64_t w = j->OW - 4 * g->tx[k];
      g->out_w[k] = (int)(w < 4 ? w : 4);
      g->out_full[k] = w >= 4;
      int32_t of[4], ob[4];
      float oa[4], os[4];
      int ow = g->out_w[k];
      for (int b = 0; b < 4; b++) {
        of[b] = (b + 4 - ow) & 3; /* lane b <- loaded cell b + 4 - w */
        ob[b] = (b - 4 + ow) & 3; /* cell m <- lane m - 4 + w */
        uint32_t in = b < ow ? 0xffffffffu : 0, sel = b >= 4 - ow ? 0xffffffffu : 0;
        memcpy(&oa[b], &in, 4);
        memcpy(&os[b], &sel, 4);
      }
      g->out_idx[k] = _mm_loadu_si128((const __m128i *)of);
      g->out_back[k] = _mm_loadu_si128((const __m128i *)ob);
      g->out_and[k] = _mm_loadu_ps(oa);
      g->out_back_sel[k] = _mm_loadu_ps(os);
    }
  }
}

/* p + off floats, through integers: off may point before p's row (only cells inside are used) */
static inline float *fptr(const float *p, int64_t off) {
  return (float *)((uintptr_t)p + (uintptr_t)(off * (int64_t)sizeof(float)));
}

/* 4 vectors r[b] (lanes = tiles 0..7) -> out[k] = (r0[k], r1[k], r2[k], r3[k]), and back */
static inline void transpose4x8(const v8 *r, __m128 *out) {
  v8 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  v8 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  v8 u[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
             _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
  for (int k = 0; k < 4; k++) {
    out[k] = _mm256_castps256_ps128(u[k]);
    out[k + 4] = _mm256_extractf128_ps(u[k], 1);
  }
}
static inline void transpose8x4(const __m128 *q, v8 *r) {
  v8 u[4];
  for (int k = 0; k < 4; k++) u[k] = _mm256_set_m128(q[k + 4], q[k]);
  v8 t0 = _mm256_unpacklo_ps(u[0], u[1]), t1 = _mm256_unpackhi_ps(u[0], u[1]);
  v8 t2 = _mm256_unpacklo_ps(u[2], u[3]), t3 = _mm256_unpackhi_ps(u[2], u[3]);
  r[0] = _mm256_shuffle_ps(t0, t2, 0x44), r[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
  r[2] = _mm256_shuffle_ps(t1, t3, 0x44), r[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

/* V[xi][c][t] (position stride vs) from the input planes x (N, C, H, W) for the block's tiles;
 * x holds images n0.. (its image 0 is image n0). */
static void input_transform(const wjob *j, const tgroup *gs, const float *x, int64_t n0, float *V) {
  const int64_t C = j->C, H = j->H, W = j->W, TP = j->TP, vs = j->vs;
  for (int64_t c = 0; c < C; c++)
    for (int64_t t0 = 0; t0 < TP; t0 += 8) {
      const tgroup *g = &gs[t0 / 8];
      v8 wb[8][8]; /* [row i of BT d][tile k], vectors over columns */
      for (int k = 0; k < 8; k++) {
        v8 d[8], r[8];
        if (!g->real[k]) {
          for (int p = 0; p < 8; p++) wb[p][k] = _mm256_setzero_ps();
          continue;
        }
        const float *plane = x + ((g->n[k] - n0) * C + c) * H * W;
        for (int p = 0; p < 8; p++) {
          int64_t iy = g->y0[k] + p;
          if (iy < 0 || iy >= H)
            d[p] = _mm256_setzero_ps();
          else if (g->full[k])
            d[p] = _mm256_loadu_ps(plane + iy * W + g->x0[k]);
          else if (W >= 8) { /* the 8 cells in the row nearest the window, moved into place */
            v8 l = _mm256_loadu_ps(plane + iy * W + g->x0[k] + g->in_shift[k]);
            d[p] = _mm256_and_ps(_mm256_permutevar8x32_ps(l, g->in_idx[k]), g->in_and[k]);
          } else { /* the cells inside, zeros around */
            float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            const float *src = fptr(plane, iy * W + g->x0[k]);
            for (int q = g->in_lo[k]; q < g->in_hi[k]; q++) v[q] = src[q];
            d[p] = _mm256_loadu_ps(v);
          }
        }
        bt_fwd(d, r);
        for (int p = 0; p < 8; p++) wb[p][k] = r[p];
      }
      for (int i = 0; i < 8; i++) {
        v8 r[8];
        transpose8(wb[i]); /* wb[i][l]: column l of the 8 tiles' rows i, over tiles */
        bt_fwd(wb[i], r);
        for (int jj = 0; jj < 8; jj++) _mm256_storeu_ps(V + (i * 8 + jj) * vs + c * TP + t0, r[jj]);
      }
    }
}

/* out (N, O, OH, OW) tiles of the block from M[xi][o][t], plus bias; y holds images n0.. */
static void output_transform(const wjob *j, const tgroup *gs, const float *M, float *y,
                             int64_t n0) {
  const int64_t O = j->O, OH = j->OH, OW = j->OW, TP = j->TP, ms = j->ms;
  for (int64_t o = 0; o < O; o++)
    for (int64_t t0 = 0; t0 < TP; t0 += 8) {
      const tgroup *g = &gs[t0 / 8];
      v8 cols[8][4]; /* [i][b]: AT applied along j */
      for (int i = 0; i < 8; i++) {
        v8 m[8];
        for (int jj = 0; jj < 8; jj++) m[jj] = _mm256_loadu_ps(M + (i * 8 + jj) * ms + o * TP + t0);
        at_fwd(m, cols[i]);
      }
      v8 bias = _mm256_set1_ps(j->bias ? j->bias[o] : 0.0f);
      v8 yab[4][4]; /* [a][b] over tiles */
      for (int bb = 0; bb < 4; bb++) {
        v8 m[8], r[4];
        for (int i = 0; i < 8; i++) m[i] = cols[i][bb];
        at_fwd(m, r);
        for (int a = 0; a < 4; a++) yab[a][bb] = ADD(r[a], bias);
      }
      for (int a = 0; a < 4; a++) {
        __m128 row[8];
        transpose4x8(yab[a], row);
        for (int k = 0; k < 8; k++) {
          int64_t oy = 4 * g->ty[k] + a;
          if (!g->real[k] || oy >= OH) continue;
          float *d = y + (((g->n[k] - n0) * O + o) * OH + oy) * OW + 4 * g->tx[k];
          if (g->out_full[k]) {
            _mm_storeu_ps(d, row[k]);
          } else { /* blend into the last 4 cells of the row (the left ones are written) */
            float *e = d + g->out_w[k] - 4;
            __m128 v = _mm_permutevar_ps(row[k], g->out_back[k]);
            _mm_storeu_ps(e, _mm_blendv_ps(_mm_loadu_ps(e), v, g->out_back_sel[k]));
          }
        }
      }
    }
}

/* dM[xi][o][t] = AT^T dy AT for the block's tiles (cells of dy beyond OH, OW are zeros); dy
 * holds images n0.. */
static void grad_transform(const wjob *j, const tgroup *gs, const float *dy, int64_t n0,
                           float *dM) {
  const int64_t O = j->O, OH = j->OH, OW = j->OW, TP = j->TP, ms = j->ms;
  for (int64_t o = 0; o < O; o++)
    for (int64_t t0 = 0; t0 < TP; t0 += 8) {
      const tgroup *g = &gs[t0 / 8];
      v8 rows[4][8]; /* [a][jj]: AT^T applied along b */
      for (int a = 0; a < 4; a++) {
        __m128 q[8];
        for (int k = 0; k < 8; k++) {
          int64_t oy = 4 * g->ty[k] + a;
          if (!g->real[k] || oy >= OH) {
            q[k] = _mm_setzero_ps();
            continue;
          }
          const float *src = dy + (((g->n[k] - n0) * O + o) * OH + oy) * OW + 4 * g->tx[k];
          if (g->out_full[k]) {
            q[k] = _mm_loadu_ps(src);
          } else { /* the last 4 cells of the row, moved into place */
            __m128 l = _mm_loadu_ps(src + g->out_w[k] - 4);
            q[k] = _mm_and_ps(_mm_permutevar_ps(l, g->out_idx[k]), g->out_and[k]);
          }
        }
        v8 yv[4];
        transpose8x4(q, yv); /* yv[b] over tiles */
        at_adj(yv, rows[a]);
      }
      for (int jj = 0; jj < 8; jj++) {
        v8 yv[4], z[8];
        for (int a = 0; a < 4; a++) yv[a] = rows[a][jj];
        at_adj(yv, z);
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(dM + (i * 8 + jj) * ms + o * TP + t0, z[i]);
      }
    }
}

/* dx (N, C, H, W) += BT^T dV BT over the block's tiles (dx zeroed by the caller); dx holds
 * images n0.. */
static void input_adjoint(const wjob *j, const tgroup *gs, const float *dV, float *dx, int64_t n0) {
  const int64_t C = j->C, H = j->H, W = j->W, TP = j->TP, vs = j->vs;
  for (int64_t c = 0; c < C; c++)
    for (int64_t t0 = 0; t0 < TP; t0 += 8) {
      const tgroup *g = &gs[t0 / 8];
      v8 rq[8][8]; /* [i][q] = (dV BT)[i][q] */
      for (int i = 0; i < 8; i++) {
        v8 v[8];
        for (int jj = 0; jj < 8; jj++)
          v[jj] = _mm256_loadu_ps(dV + (i * 8 + jj) * vs + c * TP + t0);
        bt_adj(v, rq[i]);
      }
      v8 dd[8][8]; /* [p][q] over tiles */
      for (int q = 0; q < 8; q++) {
        v8 v[8], r[8];
        for (int i = 0; i < 8; i++) v[i] = rq[i][q];
        bt_adj(v, r);
        for (int p = 0; p < 8; p++) dd[p][q] = r[p];
      }
      for (int p = 0; p < 8; p++) {
        transpose8(dd[p]); /* dd[p][k]: tile k's row p, over q */
        for (int k = 0; k < 8; k++) {
          int64_t iy = g->y0[k] + p;
          if (!g->real[k] || iy < 0 || iy >= H) continue;
          float *d = fptr(dx, (((g->n[k] - n0) * C + c) * H + iy) * W + g->x0[k]);
          if (g->full[k]) {
            _mm256_storeu_ps(d, ADD(_mm256_loadu_ps(d), dd[p][k]));
          } else if (W >= 8) { /* add into the 8 cells of the row nearest the window */
            float *e = d + g->in_shift[k];
            v8 add =
                _mm256_and_ps(_mm256_permutevar8x32_ps(dd[p][k], g->in_back[k]), g->in_back_and[k]);
            _mm256_storeu_ps(e, ADD(_mm256_loadu_ps(e), add));
          } else {
            float v[8];
            _mm256_storeu_ps(v, dd[p][k]);
            for (int q = g->in_lo[k]; q < g->in_hi[k]; q++) d[q] += v[q];
          }
        }
      }
    }
}

/* VT[xi] (TP, ldt) = V[xi] (rows, TP) transposed; V's position stride vs. */
static void transpose_positions(const float *V, int64_t vs, int64_t rows, int64_t TP, float *VT,
                                int64_t ldt) {
  for (int xi = 0; xi < NPOS; xi++) {
    const float *src = V + (int64_t)xi * vs;
    float *dst = VT + (int64_t)xi * TP * ldt;
    int64_t r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8)
      for (int64_t t0 = 0; t0 < TP; t0 += 8) {
        v8 b[8];
        for (int r = 0; r < 8; r++) b[r] = _mm256_loadu_ps(src + (r0 + r) * TP + t0);
        transpose8(b);
        for (int t = 0; t < 8; t++) _mm256_storeu_ps(dst + (t0 + t) * ldt + r0, b[t]);
      }
    for (; r0 < rows; r0++)
      for (int64_t t = 0; t < TP; t++) dst[t * ldt + r0] = src[r0 * TP + t];
    for (int64_t t = 0; t < TP; t++) /* padding columns up to ldt */
      for (int64_t r = rows; r < ldt; r++) dst[t * ldt + r] = 0;
  }
}

static inline int64_t round8(int64_t n) { return (n + 7) / 8 * 8; }

/* Steps *b0 through the first images of the blocks task t works on: its fixed share for the
 * weight gradient (so that the sums do not depend on timing), else the next unclaimed block.
 * *b0 starts at -1; *b1 is the block's end. */
static bool next_block(wjob *j, int t, int64_t *b0, int64_t *b1) {
  int64_t n1 = j->N;
  if (j->op == MF_OP_CONV2D_BACKWARD_WEIGHT) {
    int64_t n0 = j->N * t / j->tasks;
    n1 = j->N * (t + 1) / j->tasks;
    *b0 = *b0 < 0 ? n0 : *b0 + j->nb;
  } else {
    *b0 = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed) * j->nb;
  }
  *b1 = *b0 + j->nb < n1 ? *b0 + j->nb : n1;
  return *b0 < n1;
}

/* One task (see next_block for its images). */
static void wino_task(wjob *j, int t) {
  const int64_t C = j->C, O = j->O, TP = j->TP, Cp = round8(C), vs = j->vs, ms = j->ms;
  size_t vbytes = (size_t)(NPOS * vs) * 4, mbytes = (size_t)(NPOS * ms) * 4;
  size_t tbytes = j->op == MF_OP_CONV2D_BACKWARD_WEIGHT ? (size_t)(NPOS * TP * Cp) * 4 : 0;
  size_t gbytes = (size_t)(TP / 8) * sizeof(tgroup);
  float *V = mf_host_alloc(vbytes), *M = mf_host_alloc(mbytes);
  float *VT = tbytes ? mf_host_alloc(tbytes) : NULL;
  tgroup *gs = mf_host_alloc(gbytes);
  /* channels-last: a block's images of x/dx as (C, H, W) and of y/dy as (O, OH, OW) */
  const int64_t xsz = C * j->H * j->W, ysz = O * j->OH * j->OW;
  size_t xbytes = j->cl ? (size_t)(j->nb * xsz) * 4 : 0,
         ybytes = j->cl ? (size_t)(j->nb * ysz) * 4 : 0;
  float *XS = xbytes ? mf_host_alloc(xbytes) : NULL, *YS = ybytes ? mf_host_alloc(ybytes) : NULL;
  if (!V || !M || (tbytes && !VT) || !gs || (xbytes && !XS) || (ybytes && !YS)) {
    j->failed = 1;
    goto done;
  }
  const float *xin = j->op == MF_OP_CONV2D_BACKWARD_WEIGHT ? j->b : j->a; /* forward, weight */
  const float *dyin = j->a;                                               /* the backwards */
  bool first = true;
  for (int64_t b0 = -1, b1; next_block(j, t, &b0, &b1);) {
    /* where the transforms read and write: the tensors themselves (image 0 = image 0), or the
     * buffers (image 0 = image b0) */
    int64_t n0 = j->cl ? b0 : 0;
    const float *xs = xin, *dys = dyin;
    float *outs = j->out;
    if (j->cl) {
      for (int64_t n = b0; n < b1; n++) {
        if (j->op != MF_OP_CONV2D_BACKWARD_INPUT)
          mf_cpu_transpose(4, j->H * j->W, C, xin + n * xsz, C, XS + (n - b0) * xsz, j->H * j->W);
        if (j->op != MF_OP_CONV2D)
          mf_cpu_transpose(4, j->OH * j->OW, O, dyin + n * ysz, O, YS + (n - b0) * ysz,
                           j->OH * j->OW);
      }
      xs = XS, dys = YS;
      outs = j->op == MF_OP_CONV2D ? YS : XS;
    }
    if (j->op == MF_OP_CONV2D_BACKWARD_INPUT) /* the block's dx, summed over its tiles */
      memset(outs + (b0 - n0) * xsz, 0, (size_t)((b1 - b0) * xsz) * 4);
    for (int64_t t0 = 0; t0 < (b1 - b0) * j->TI; t0 += TP, first = false) {
      tile_groups(j, b0, b1, t0, gs);
      switch (j->op) {
      case MF_OP_CONV2D:
        input_transform(j, gs, xs, n0, V);
        for (int xi = 0; xi < NPOS; xi++)
          gemm(O, TP, C, j->U + (int64_t)xi * O * C, C, V + xi * vs, TP, M + xi * ms, TP, false);
        output_transform(j, gs, M, outs, n0);
        break;
      case MF_OP_CONV2D_BACKWARD_INPUT: /* a = dy, U = (64, C, O) */
        grad_transform(j, gs, dys, n0, M);
        for (int xi = 0; xi < NPOS; xi++)
          gemm(C, TP, O, j->U + (int64_t)xi * C * O, O, M + xi * ms, TP, V + xi * vs, TP, false);
        input_adjoint(j, gs, V, outs, n0);
        break;
      case MF_OP_CONV2D_BACKWARD_WEIGHT: { /* a = dy, b = x; dU[t] (64, O, Cp) */
        float *dU = j->dU[t];
        grad_transform(j, gs, dys, n0, M);
        input_transform(j, gs, xs, n0, V);
        transpose_positions(V, vs, C, TP, VT, Cp);
        for (int xi = 0; xi < NPOS; xi++)
          gemm(O, Cp, TP, M + xi * ms, TP, VT + (int64_t)xi * TP * Cp, Cp,
               dU + (int64_t)xi * O * Cp, Cp, !first);
        break;
      }
      default: break;
      }
    }
    if (j->cl && j->op == MF_OP_CONV2D)
      for (int64_t n = b0; n < b1; n++)
        mf_cpu_transpose(4, O, j->OH * j->OW, YS + (n - b0) * ysz, j->OH * j->OW, j->out + n * ysz,
                         O);
    if (j->cl && j->op == MF_OP_CONV2D_BACKWARD_INPUT)
      for (int64_t n = b0; n < b1; n++)
        mf_cpu_transpose(4, C, j->H * j->W, XS + (n - b0) * xsz, j->H * j->W, j->out + n * xsz, C);
  }
done:
  if (XS) mf_host_free(XS, xbytes);
  if (YS) mf_host_free(YS, ybytes);
  if (V) mf_host_free(V, vbytes);
  if (M) mf_host_free(M, mbytes);
  if (VT) mf_host_free(VT, tbytes);
  if (gs) mf_host_free(gs, gbytes);
}

static void wino_run(void *ctx, int64_t b, int64_t e) {
  for (int64_t t = b; t < e; t++) wino_task(ctx, (int)t);
}

/* ---- weight transforms ----------------------------------------------------------------------- */

/* Vectorised over 8 (o, c) pairs: 8 consecutive c of one o (the (64, O, C) layouts), or 8
 * consecutive o of one c (the transposed (64, C, O) one), so that each of the 64 positions is one
 * contiguous store. */
typedef struct wt_job {
  const float *w; /* (O, C, 5, 5) */
  float *U;       /* (64, O, C) or, transposed, (64, C, O) */
  bool transposed;
  const float *const *dU; /* backward: the task sums (64, O, Cp) */
  int tasks;
  float *dw; /* backward: (O, C, 5, 5) */
  int64_t O, C, Cp;
} wt_job;

static float gf(int i, int k) { return (float)G[i][k]; }

/* U = G g G^T for the pair groups [b, e) */
static void weight_fwd(void *ctx, int64_t b, int64_t e) {
  const wt_job *j = ctx;
  const int64_t O = j->O, C = j->C, lanes_of = j->transposed ? O : C;
  const int64_t per = (lanes_of + 7) / 8; /* groups per o (or per c) */
  for (int64_t q = b; q < e; q++) {
    int64_t fixed = q / per, first = (q % per) * 8,
            nl = lanes_of - first < 8 ? lanes_of - first : 8;
    float gt[25][8] = {{0}};
    for (int l = 0; l < nl; l++) {
      int64_t o = j->transposed ? first + l : fixed, c = j->transposed ? fixed : first + l;
      const float *g = j->w + (o * C + c) * 25;
      for (int k = 0; k < 25; k++) gt[k][l] = g[k];
    }
    v8 gv[25], t[8][5];
    for (int k = 0; k < 25; k++) gv[k] = _mm256_loadu_ps(gt[k]);
    for (int i = 0; i < 8; i++)
      for (int l = 0; l < 5; l++) {
        v8 acc = MUL(VS(gf(i, 0)), gv[l]);
        for (int k = 1; k < 5; k++) acc = FMA(VS(gf(i, k)), gv[k * 5 + l], acc);
        t[i][l] = acc;
      }
    float *dst = j->U + (j->transposed ? fixed * O + first : fixed * C + first);
    for (int i = 0; i < 8; i++)
      for (int jj = 0; jj < 8; jj++) {
        v8 acc = MUL(t[i][0], VS(gf(jj, 0)));
        for (int l = 1; l < 5; l++) acc = FMA(t[i][l], VS(gf(jj, l)), acc);
        float *d = dst + (int64_t)(i * 8 + jj) * O * C;
        if (nl == 8) {
          _mm256_storeu_ps(d, acc);
        } else {
          float v[8];
          _mm256_storeu_ps(v, acc);
          for (int l = 0; l < nl; l++) d[l] = v[l];
        }
      }
  }
}

/* dw = G^T (sum of the tasks' dU) G for the pair groups [b, e): 8 consecutive c of one o */
static void weight_bwd(void *ctx, int64_t b, int64_t e) {
  const wt_job *j = ctx;
  const int64_t O = j->O, C = j->C, Cp = j->Cp, per = Cp / 8;
  for (int64_t q = b; q < e; q++) {
    int64_t o = q / per, c0 = (q % per) * 8, nl = C - c0 < 8 ? C - c0 : 8;
    v8 du[8][8];
    for (int xi = 0; xi < NPOS; xi++) {
      int64_t off = ((int64_t)xi * O + o) * Cp + c0;
      v8 acc = _mm256_loadu_ps(j->dU[0] + off);
      for (int k = 1; k < j->tasks; k++) acc = ADD(acc, _mm256_loadu_ps(j->dU[k] + off));
      du[xi / 8][xi % 8] = acc;
    }
    v8 t[5][8]; /* G^T du */
    for (int k = 0; k < 5; k++)
      for (int jj = 0; jj < 8; jj++) {
        v8 acc = MUL(VS(gf(0, k)), du[0][jj]);
        for (int i = 1; i < 8; i++) acc = FMA(VS(gf(i, k)), du[i][jj], acc);
        t[k][jj] = acc;
      }
    float out[25][8];
    for (int k = 0; k < 5; k++)
      for (int l = 0; l < 5; l++) {
        v8 acc = MUL(t[k][0], VS(gf(0, l)));
        for (int jj = 1; jj < 8; jj++) acc = FMA(t[k][jj], VS(gf(jj, l)), acc);
        _mm256_storeu_ps(out[k * 5 + l], acc);
      }
    for (int l = 0; l < nl; l++) {
      float *d = j->dw + (o * C + c0 + l) * 25;
      for (int k = 0; k < 25; k++) d[k] = out[k][l];
    }
  }
}

/* MOONFLOW_WINOGRAD=0 turns this path off (read at every call: tests and benchmarks compare) */
static bool wino_enabled(void) {
  const char *s = getenv("MOONFLOW_WINOGRAD");
  return !(s && s[0] == '0');
}

bool mf_cpu_conv2d_winograd(const mf_call *c, mf_status *status) {
  *status = MF_OK;
  if (c->out->dtype != MF_F32 || !wino_enabled()) return false;
  const mf_pool2d_params *p = c->params;
  const mf_tensor *x = c->op == MF_OP_CONV2D_BACKWARD_INPUT    ? c->out
                       : c->op == MF_OP_CONV2D_BACKWARD_WEIGHT ? c->in[1]
                                                               : c->in[0];
  const mf_tensor *y = c->op == MF_OP_CONV2D ? c->out : c->in[0];
  const int64_t *ws = c->op == MF_OP_CONV2D_BACKWARD_WEIGHT ? c->out->shape : c->in[1]->shape;
  wjob j = {.op = c->op,
            .N = x->shape[0],
            .C = x->shape[1],
            .H = x->shape[2],
            .W = x->shape[3],
            .O = ws[0],
            .OH = y->shape[2],
            .OW = y->shape[3],
            .pt = p->pad[0],
            .pl = p->pad[1],
            .cl = c->ip[0] != 0};
  /* 5x5, stride 1, tiles mostly useful, enough channels for the GEMMs to pay */
  if (ws[2] != 5 || ws[3] != 5 || p->stride[0] != 1 || p->stride[1] != 1 || j.OH < 4 || j.OW < 4 ||
      j.C < 8 || j.O < 8 || j.N < 1)
    return false;
  j.TH = (j.OH + 3) / 4, j.TW = (j.OW + 3) / 4, j.TI = j.TH * j.TW;
  /* the forward and backward-input blocks hold one image; the weight gradient's two (a longer
   * sum per GEMM call) when images are small */
  j.nb = c->op == MF_OP_CONV2D_BACKWARD_WEIGHT && j.TI <= 64 ? 2 : 1;
  /* chunks: the whole block when small, else about 32 KiB per position of V or M */
  int64_t cap = 8192 / (j.C > j.O ? j.C : j.O) / 8 * 8;
  j.TP = round8(j.nb * j.TI);
  if (j.TP > cap) j.TP = cap < 16 ? 16 : cap;
  j.vs = pos_stride(j.C, j.TP), j.ms = pos_stride(j.O, j.TP);
  j.a = mf_cpu_ptr(c->in[0]);
  j.b = mf_cpu_ptr(c->in[1]);
  j.bias = c->op == MF_OP_CONV2D && c->nin > 2 && c->in[2] ? mf_cpu_ptr(c->in[2]) : NULL;
  j.out = mf_cpu_ptr(c->out);
  int nt = mf_get_num_threads();
  j.tasks = (int)(j.N < nt ? j.N : nt);
  if (j.tasks > 64) j.tasks = 64;
  atomic_init(&j.next, 0);
  const int64_t O = j.O, C = j.C, Cp = round8(C);
  size_t ubytes = (size_t)(NPOS * O * C) * 4, dubytes = (size_t)(NPOS * O * Cp) * 4;
  float *U = NULL, *dU[64] = {0};
  wt_job wt = {.O = O, .C = C, .Cp = Cp, .tasks = j.tasks};
  if (c->op != MF_OP_CONV2D_BACKWARD_WEIGHT) {
    U = mf_host_alloc(ubytes);
    if (!U) goto oom;
    wt.w = mf_cpu_ptr(c->in[1]), wt.U = U, wt.transposed = c->op == MF_OP_CONV2D_BACKWARD_INPUT;
    int64_t groups = wt.transposed ? C * ((O + 7) / 8) : O * ((C + 7) / 8);
    mf_parallel_for(groups, 16, weight_fwd, &wt);
    j.U = U;
  } else {
    for (int t = 0; t < j.tasks; t++)
      if (!(dU[t] = mf_host_alloc(dubytes))) goto oom;
    j.dU = dU;
  }
  mf_parallel_for(j.tasks, 1, wino_run, &j);
  if (!j.failed && c->op == MF_OP_CONV2D_BACKWARD_WEIGHT) {
    wt.dU = (const float *const *)dU, wt.dw = j.out;
    mf_parallel_for(O * (Cp / 8), 16, weight_bwd, &wt);
  }
  if (j.failed) goto oom;
  if (U) mf_host_free(U, ubytes);
  for (int t = 0; t < 64; t++)
    if (dU[t]) mf_host_free(dU[t], dubytes);
  return true;
oom:
  if (U) mf_host_free(U, ubytes);
  for (int t = 0; t < 64; t++)
    if (dU[t]) mf_host_free(dU[t], dubytes);
  *status = mf_fail(MF_ERR_MEMORY, "%s: out of memory for the Winograd buffers", mf_op_name(c->op));
  return true;
}

#else /* no AVX2: always the im2col path */

bool mf_cpu_conv2d_winograd(const mf_call *c, mf_status *status) {
  (void)c;
  *status = MF_OK;
  return false;
}

#endif
