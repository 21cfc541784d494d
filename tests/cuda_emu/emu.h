/* emu.h — the CUDA emulator's view of device code: force-included (-include) into every
 * core/cuda .cu file when the backend is built with MOONFLOW_CUDA=EMU, which compiles those files
 * as plain C++ for the CPU (after unchevron.py has turned each `k<<<grid, block, smem, stream>>>`
 * into `mf_emu::launch(k, grid, block, smem, stream)`).
 *
 * The toolkit's own headers give the types (dim3, __half, cudaError_t, ...); this file then makes
 * the CUDA keywords plain C++ (__global__/__device__ vanish, __shared__ becomes static: the blocks
 * of a launch run one after another), gives threadIdx/blockIdx/blockDim/gridDim as the running
 * thread's, __syncthreads (a switch between the block's threads, runtime.cc) and the atomics the
 * kernels use (one CPU thread runs a launch, so plain read-modify-writes are atomic).
 */
#ifndef MF_CUDA_EMU_H
#define MF_CUDA_EMU_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>
#include <tuple>
#include <utility>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

namespace mf_emu {

struct thread_state {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern thread_state cur; /* the emulated thread now running (one launch at a time) */

/* runtime.cc: runs body once per thread of the launch; key names the kernel (its address), name
 * is its source text (MOONFLOW_CUDA_EMU_TRACE=1 prints each launch's). */
struct body {
  void (*run)(void *);
  void *arg;
};
void run_grid(const void *key, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
              body b);
void syncthreads();
/* Whether [p, p + n) lies in one live device allocation; if not, says so on stderr (call, which).
 * For the emulated libraries (cudnn.cc). */
bool check_device(const char *call, const char *which, const void *p, size_t n);
/* Whether s is 0 or a stream cudaStreamCreate made. */
bool check_stream(cudaStream_t s);
/* Whether a cuBLAS/cuDNN handle made on `device` may run now: that device current and s one of its
 * streams (the libraries' rule); if not, says so on stderr (call). */
bool handle_usable(int device, cudaStream_t s, const char *call);

/* What a program asked of the "GPU", counted; MOONFLOW_CUDA_EMU_STATS=1 prints the totals to
 * stderr at exit, MOONFLOW_CUDA_EMU_TRACE=1 each as it comes (with the kernel's or call's name)
 * (kernel launches and host synchronisations per training step are the same as on a GPU, less what
 * cuBLAS and cuDNN launch inside their calls). */
enum counter { C_LAUNCH, C_LIBRARY, C_SYNC, C_H2D, C_D2H, C_D2D, C_MEMSET, C_MALLOC, C_FREE, C_N };
void count(counter c, const char *name = nullptr);
/* A cuBLAS/cuDNN call that passed its checks: counts it; false when MOONFLOW_CUDA_EMU_NOEXEC=1
 * asks for no work, as run_grid then runs no kernel: results are garbage, and what time is left
 * is moonflow's own per-op cost on the host (bench/gpu_counts.sh). */
bool library_work(const char *call);
/* runtime.cc: runs the copies from pinned memory still queued (see runtime.cc's top) */
void flush_deferred();
/* MOONFLOW_CUDA_EMU_NOEXEC=1: no kernel, device-to-device copy or memset over 4 KiB runs */
bool no_work();

/* float32 rounded to TF32 (10 mantissa bits, to nearest even), as tensor cores take it */
inline float tf32(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0xfffu + ((u >> 13) & 1)) & ~0x1fffu;
  __builtin_memcpy(&x, &u, 4);
  return x;
}

template <class... P> struct launcher {
  const char *name;
  void (*kernel)(P...);
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  /* the arguments are converted to the parameters' types once, as a launch does, and each thread
   * gets its own copies of them */
  void operator()(P... args) const {
    struct call {
      void (*kernel)(P...);
      std::tuple<P...> args;
      static void go(void *p) {
        call *c = (call *)p;
        std::apply(c->kernel, c->args); /* by value: copies */
      }
    } c{kernel, std::tuple<P...>(args...)};
    run_grid((const void *)kernel, name, grid, block, smem, stream, body{&call::go, &c});
  }
};

template <class... P>
launcher<P...> launch(const char *name, void (*kernel)(P...), dim3 grid, dim3 block,
                      size_t smem = 0, cudaStream_t stream = 0) {
  return launcher<P...>{name, kernel, grid, block, smem, stream};
}

} /* namespace mf_emu */

#define threadIdx (mf_emu::cur.thread)
#define blockIdx (mf_emu::cur.block)
#define blockDim (mf_emu::cur.block_dim)
#define gridDim (mf_emu::cur.grid_dim)
#define __syncthreads() mf_emu::syncthreads()

/* ---- atomics (old value returned) -------------------------------------------------------- */
template <class T> static inline T atomicAdd(T *p, T v) {
  T old = *p;
  *p = (T)(old + v);
  return old;
}
static inline __half atomicAdd(__half *p, __half v) {
  __half old = *p;
  *p = __float2half(__half2float(old) + __half2float(v));
  return old;
}
static inline __nv_bfloat16 atomicAdd(__nv_bfloat16 *p, __nv_bfloat16 v) {
  __nv_bfloat16 old = *p;
  *p = __float2bfloat16(__bfloat162float(old) + __bfloat162float(v));
  return old;
}
template <class T> static inline T atomicCAS(T *p, T compare, T v) {
  T old = *p;
  if (old == compare) *p = v;
  return old;
}

#endif
