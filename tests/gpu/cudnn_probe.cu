/* cudnn_probe.cu — asks the GPU machine's real cuDNN 9 what the emulator (tests/cuda_emu/cudnn.cc)
 * cannot answer for core/cuda, and prints one line per question: PASS/FAIL, what, the status and
 * cuDNN's message. The layout combinations of each convolution direction and dtype (NCHW with a
 * KCRS filter, which conv.cu uses; NHWC with a KRSC filter, which conv.cu uses for channels-last
 * floats; NHWC with a KCRS filter, which conv.cu avoids), batch norm at and beyond the batch sizes
 * batchnorm.cu keeps to (with a value check), cudnnAddTensor onto NHWC (conv.cu no longer uses
 * it), and NHWC pooling in float32/float64 (pool.cu falls back to its own kernels on a refusal).
 * Its answers say which of conv.cu's copies could go. Built with the CUDA backend when cuDNN is
 * found (core/cuda/CMakeLists.txt); tests/gpu/run.sh runs it first. Exits 2 without a GPU. */
#include <cudnn.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

static const char *S(cudnnStatus_t s) { return cudnnGetErrorString(s); }
static void report(const char *what, cudnnStatus_t st) {
  char msg[512] = "";
  if (st) cudnnGetLastErrorString(msg, sizeof msg);
  printf("%s %-70s %s (%d) %s\n", st ? "FAIL" : "PASS", what, S(st), (int)st, msg);
}

enum Dt { F32, F16, BF16, F64 };
static const char *dname[] = {"float32", "float16", "bfloat16", "float64"};
static cudnnDataType_t ctype(Dt d) {
  return d == F32    ? CUDNN_DATA_FLOAT
         : d == F16  ? CUDNN_DATA_HALF
         : d == BF16 ? CUDNN_DATA_BFLOAT16
                     : CUDNN_DATA_DOUBLE;
}
static size_t esize(Dt d) { return d == F64 ? 8 : d == F32 ? 4 : 2; }

static void set4(cudnnTensorDescriptor_t t, Dt d, int n, int c, int h, int w, bool nhwc) {
  int dims[4] = {n, c, h, w};
  int st[4];
  if (nhwc)
    st[0] = h * w * c, st[1] = 1, st[2] = w * c, st[3] = c;
  else
    st[0] = c * h * w, st[1] = h * w, st[2] = w, st[3] = 1;
  cudnnSetTensorNdDescriptor(t, ctype(d), 4, dims, st);
}

// The first of cuDNN's n ranked algorithms that it offers as runnable (-1: none); *ok: how many.
template <class P> static int first_ok(const P *p, int n, int *ok) {
  int first = -1;
  for (int i = 0; i < n; i++)
    if (p[i].status == 0) {
      ++*ok;
      if (first < 0) first = i;
    }
  return first;
}

// One convolution direction with x/y in one layout and the filter in another.
static void conv_case(cudnnHandle_t h, Dt d, bool act_nhwc, bool filt_nhwc, int dir) {
  const int N = 4, C = 16, H = 12, W = 12, K = 32, R = 3;
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t cd;
  cudnnCreateTensorDescriptor(&x), cudnnCreateTensorDescriptor(&y);
  cudnnCreateFilterDescriptor(&w), cudnnCreateConvolutionDescriptor(&cd);
  set4(x, d, N, C, H, W, act_nhwc);
  set4(y, d, N, K, H, W, act_nhwc);
  cudnnSetFilter4dDescriptor(w, ctype(d), filt_nhwc ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW, K, C,
                             R, R);
  cudnnSetConvolution2dDescriptor(cd, 1, 1, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION,
                                  d == F64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT);
  cudnnSetConvolutionMathType(cd, d == F64 ? CUDNN_DEFAULT_MATH : CUDNN_TENSOR_OP_MATH);
  void *xp, *yp, *wp, *ws;
  cudaMalloc(&xp, (size_t)N * C * H * W * esize(d));
  cudaMalloc(&yp, (size_t)N * K * H * W * esize(d));
  cudaMalloc(&wp, (size_t)K * C * R * R * esize(d));
  cudaMemset(xp, 0, (size_t)N * C * H * W * esize(d));
  cudaMemset(yp, 0, (size_t)N * K * H * W * esize(d));
  cudaMemset(wp, 0, (size_t)K * C * R * R * esize(d));
  size_t wsz = (size_t)512 << 20;
  cudaMalloc(&ws, wsz);
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  const void *one = d == F64 ? (const void *)&d1 : &f1, *zero = d == F64 ? (const void *)&d0 : &f0;
  char what[160];
  static const char *dirs[] = {"fwd", "bwd-data", "bwd-filter"};
  int n = 0, ok = 0, first = -1;
  cudnnStatus_t st;
  if (dir == 0) {
    cudnnConvolutionFwdAlgoPerf_t p[16];
    st = cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, cd, y, 16, &n, p);
    first = first_ok(p, n, &ok);
    if (!st && first >= 0) {
      cudnnSetConvolutionMathType(cd, p[first].mathType);
      st = cudnnConvolutionForward(h, one, x, xp, w, wp, cd, p[first].algo, ws, wsz, zero, y, yp);
    }
  } else if (dir == 1) {
    cudnnConvolutionBwdDataAlgoPerf_t p[16];
    st = cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, cd, x, 16, &n, p);
    first = first_ok(p, n, &ok);
    if (!st && first >= 0) {
      cudnnSetConvolutionMathType(cd, p[first].mathType);
      st = cudnnConvolutionBackwardData(h, one, w, wp, y, yp, cd, p[first].algo, ws, wsz, zero, x,
                                        xp);
    }
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t p[16];
    st = cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, cd, w, 16, &n, p);
    first = first_ok(p, n, &ok);
    if (!st && first >= 0) {
      cudnnSetConvolutionMathType(cd, p[first].mathType);
      st = cudnnConvolutionBackwardFilter(h, one, x, xp, y, yp, cd, p[first].algo, ws, wsz, zero, w,
                                          wp);
    }
  }
  if (!st && first < 0) st = CUDNN_STATUS_NOT_SUPPORTED; // no algorithm offered
  if (!st) st = cudaDeviceSynchronize() ? CUDNN_STATUS_EXECUTION_FAILED : CUDNN_STATUS_SUCCESS;
  snprintf(what, sizeof what, "conv %-10s %-8s act %s filter %s (%d of %d algos ok)", dirs[dir],
           dname[d], act_nhwc ? "NHWC" : "NCHW", filt_nhwc ? "KRSC" : "KCRS", ok, n);
  report(what, st);
  cudaFree(xp), cudaFree(yp), cudaFree(wp), cudaFree(ws);
  cudnnDestroyTensorDescriptor(x), cudnnDestroyTensorDescriptor(y);
  cudnnDestroyFilterDescriptor(w), cudnnDestroyConvolutionDescriptor(cd);
}

// Spatial batch norm on (N, C, 1, 1) float32 as batchnorm.cu describes a 2-D input; checks y.
static void bn_case(cudnnHandle_t h, int N, bool training) {
  const int C = 3;
  cudnnTensorDescriptor_t x, p;
  cudnnCreateTensorDescriptor(&x), cudnnCreateTensorDescriptor(&p);
  int dims[4] = {N, C, 1, 1}, st4[4] = {C, 1, 1, 1};
  cudnnSetTensorNdDescriptor(x, CUDNN_DATA_FLOAT, 4, dims, st4);
  cudnnDeriveBNTensorDescriptor(p, x, CUDNN_BATCHNORM_SPATIAL);
  std::vector<float> hx((size_t)N * C);
  for (size_t i = 0; i < hx.size(); i++) hx[i] = (float)((i * 2654435761u) % 1000) / 100.0f;
  float *xp, *yp, *par;
  cudaMalloc(&xp, hx.size() * 4), cudaMalloc(&yp, hx.size() * 4), cudaMalloc(&par, 6 * C * 4);
  cudaMemcpy(xp, hx.data(), hx.size() * 4, cudaMemcpyHostToDevice);
  std::vector<float> hp(6 * C, 0.0f);
  for (int c = 0; c < C; c++) hp[c] = 1.0f, hp[3 * C + c] = 1.0f; // scale 1, bias 0, mean 0, var 1
  cudaMemcpy(par, hp.data(), hp.size() * 4, cudaMemcpyHostToDevice);
  float one = 1, zero = 0;
  cudnnStatus_t s;
  if (training)
    s = cudnnBatchNormalizationForwardTraining(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x, xp, x,
                                               yp, p, par, par + C, 0.1, par + 2 * C, par + 3 * C,
                                               1e-5, par + 4 * C, par + 5 * C);
  else
    s = cudnnBatchNormalizationForwardInference(h, CUDNN_BATCHNORM_SPATIAL, &one, &zero, x, xp, x,
                                                yp, p, par, par + C, par + 2 * C, par + 3 * C,
                                                1e-5);
  if (!s && cudaDeviceSynchronize()) s = CUDNN_STATUS_EXECUTION_FAILED;
  if (!s && !training) { // y = x / sqrt(1 + eps): spot-check the last row
    std::vector<float> hy(hx.size());
    cudaMemcpy(hy.data(), yp, hy.size() * 4, cudaMemcpyDeviceToHost);
    for (size_t i = hy.size() - C; i < hy.size(); i++)
      if (fabsf(hy[i] - hx[i] / sqrtf(1 + 1e-5f)) > 1e-3f) s = CUDNN_STATUS_EXECUTION_FAILED;
  }
  char what[128];
  snprintf(what, sizeof what, "batch norm %s spatial N=%d C=%d S=1",
           training ? "training " : "inference", N, C);
  report(what, s);
  cudaFree(xp), cudaFree(yp), cudaFree(par);
  cudnnDestroyTensorDescriptor(x), cudnnDestroyTensorDescriptor(p);
}

// cudnnAddTensor of a (1, C, 1, 1) bias onto an NHWC y, as conv.cu adds the bias.
static void add_case(cudnnHandle_t h, Dt d) {
  cudnnTensorDescriptor_t b, y;
  cudnnCreateTensorDescriptor(&b), cudnnCreateTensorDescriptor(&y);
  set4(b, d, 1, 8, 1, 1, false);
  set4(y, d, 2, 8, 5, 5, true);
  void *bp, *yp;
  cudaMalloc(&bp, 8 * esize(d)), cudaMalloc(&yp, 400 * esize(d));
  cudaMemset(bp, 0, 8 * esize(d)), cudaMemset(yp, 0, 400 * esize(d));
  float f1 = 1;
  double d1 = 1;
  cudnnStatus_t s =
      cudnnAddTensor(h, d == F64 ? (void *)&d1 : &f1, b, bp, d == F64 ? (void *)&d1 : &f1, y, yp);
  if (!s && cudaDeviceSynchronize()) s = CUDNN_STATUS_EXECUTION_FAILED;
  char what[96];
  snprintf(what, sizeof what, "cudnnAddTensor bias (1,C,1,1) onto NHWC y, %s", dname[d]);
  report(what, s);
  cudaFree(bp), cudaFree(yp);
  cudnnDestroyTensorDescriptor(b), cudnnDestroyTensorDescriptor(y);
}

// cudnnPoolingForward in NHWC for each dtype pool.cu sends (float32, float64).
static void pool_case(cudnnHandle_t h, Dt d) {
  cudnnPoolingDescriptor_t pd;
  cudnnTensorDescriptor_t x, y;
  cudnnCreatePoolingDescriptor(&pd), cudnnCreateTensorDescriptor(&x),
      cudnnCreateTensorDescriptor(&y);
  cudnnSetPooling2dDescriptor(pd, CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING, CUDNN_PROPAGATE_NAN,
                              3, 3, 1, 1, 2, 2);
  set4(x, d, 2, 5, 9, 9, true);
  set4(y, d, 2, 5, 5, 5, true);
  void *xp, *yp;
  cudaMalloc(&xp, 810 * esize(d)), cudaMalloc(&yp, 250 * esize(d));
  cudaMemset(xp, 0, 810 * esize(d));
  float f1 = 1, f0 = 0;
  double d1 = 1, d0 = 0;
  cudnnStatus_t s = cudnnPoolingForward(h, pd, d == F64 ? (void *)&d1 : &f1, x, xp,
                                        d == F64 ? (void *)&d0 : &f0, y, yp);
  if (!s && cudaDeviceSynchronize()) s = CUDNN_STATUS_EXECUTION_FAILED;
  char what[96];
  snprintf(what, sizeof what, "cudnnPoolingForward avg-exclude NHWC %s", dname[d]);
  report(what, s);
  cudaFree(xp), cudaFree(yp);
  cudnnDestroyPoolingDescriptor(pd), cudnnDestroyTensorDescriptor(x),
      cudnnDestroyTensorDescriptor(y);
}

int main() {
  setvbuf(stdout, nullptr, _IONBF, 0);
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    printf("no GPU\n");
    return 2;
  }
  printf("cuDNN %zu (cudart %zu), built against %d\n", cudnnGetVersion(), cudnnGetCudartVersion(),
         CUDNN_VERSION);
  cudnnHandle_t h;
  cudnnStatus_t cs = cudnnCreate(&h);
  report("cudnnCreate", cs);
  if (cs) return 1;
  for (int d = 0; d < 4; d++)
    for (int dir = 0; dir < 3; dir++) {
      conv_case(h, (Dt)d, false, false, dir); // NCHW / KCRS: the reference configuration
      conv_case(h, (Dt)d, true, false, dir);  // what conv.cu does for channels-last
      if (d != F64) conv_case(h, (Dt)d, true, true, dir); // what PyTorch does for channels-last
    }
  bn_case(h, 65535, false);
  bn_case(h, 65536, false);
  bn_case(h, 200000, false);
  bn_case(h, 880801, true);
  bn_case(h, 1000000, true);
  for (int d = 0; d < 4; d++) add_case(h, (Dt)d);
  pool_case(h, F32);
  pool_case(h, F64);
  cudnnDestroy(h);
  return 0;
}
