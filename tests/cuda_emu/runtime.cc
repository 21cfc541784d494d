/* runtime.cc — the CUDA emulator: the parts of the CUDA runtime and cuBLAS that core/cuda calls,
 * implemented on the CPU, and the grid executor behind emu.h's launches. With MOONFLOW_CUDA=EMU
 * the backend's .cu files are compiled as C++ and linked with this file instead of cudart and
 * cuBLAS, so that libmoonflow_cuda.so runs its own kernels, its allocator, its transfers and its
 * cuBLAS calls on a machine without a GPU. It is a test tool: the parity tests then compare our
 * kernels' results with the CPU's for real, under ASan and UBSan (cudnn.cc does the same for
 * cuDNN). What it cannot check: timing, races between threads of a launch (they run one at a
 * time), and warp-level behaviour.
 *
 * Devices: MOONFLOW_CUDA_EMU_DEVICES of them (default 1; CUDA_VISIBLE_DEVICES is honoured as the
 * runtime does), each with MOONFLOW_CUDA_EMU_MEMORY MiB (default 4096), named "moonflow CUDA
 * emulator". Device memory is host memory from the heap, filled with 0xff bytes when allocated (NaN
 * for floats, so a kernel reading memory nobody wrote shows in results); a table of the live
 * allocations lets copies, memsets and cuBLAS check that each pointer they are given is device or
 * host memory as the call says, and cudaFree that it was allocated. A failed check prints why to
 * stderr and returns the error the runtime would.
 *
 * Pinned host memory (cudaHostAlloc, cudaMallocHost) is host memory the emulator knows. A copy
 * to the device from it queued on a stream (cudaMemcpyAsync) is deferred, as a DMA is: such
 * copies queue up in order and run when another call that touches a stream or memory comes (any
 * other copy, memset, launch, library call, synchronisation, cudaFree), so a host that writes the
 * buffer again before an event recorded after the copy has passed (cudaEventQuery,
 * cudaEventSynchronize) sends the new bytes and a test sees it. An event has passed once the copies
 * queued before it have run.
 *
 * Launches: the blocks of a grid run one after another on the calling thread, the threads of a
 * block as fibers (x86-64: a small assembly switch) that switch at __syncthreads, in rounds: each
 * live thread runs to its next barrier, in index order. A kernel whose first 8 launches never
 * reached __syncthreads (a kernel can skip its barriers when it has no work, hence not just one)
 * runs later launches straight, thread after thread, without fibers (a __syncthreads reached then
 * is a fatal error). Launch configurations are checked as the device
 * does (at most 1024 threads per block, grid y/z <= 65535, 48 KiB dynamic shared memory). One
 * launch at a time per process (a lock): __shared__ arrays are static.
 */
#include <cublas_v2.h>

#include "emu.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define MF_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_EMU_ASAN 1
#endif
#endif
#ifdef MF_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

/* the C names cudart and cuBLAS export; hidden like the rest of the library */
#define EXPORT extern "C"

/* ---- devices, errors ----------------------------------------------------------------------- */

namespace {

int env_int(const char *name, int def, int lo, int hi) {
  const char *v = getenv(name);
  if (!v || !*v) return def;
  char *end;
  long x = strtol(v, &end, 10);
  if (*end || x < lo || x > hi) {
    fprintf(stderr, "cuda emulator: %s=%s is not a number in [%d, %d]; using %d\n", name, v, lo, hi,
            def);
    return def;
  }
  return (int)x;
}

/* The emulated GPUs, as CUDA_VISIBLE_DEVICES leaves them visible: its comma-separated indices up to
 * the first that is not one of the machine's (the runtime's rule; UUIDs are not emulated). */
int ndevices() {
  static int n = [] {
    int machine = env_int("MOONFLOW_CUDA_EMU_DEVICES", 1, 0, 16);
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (!v) return machine;
    int seen = 0;
    for (const char *p = v; *p;) {
      char *end;
      long i = strtol(p, &end, 10);
      if (end == p || i < 0 || i >= machine || (*end && *end != ',')) break;
      seen++;
      p = *end ? end + 1 : end;
    }
    return seen;
  }();
  return n;
}
size_t device_memory() {
  static size_t b = (size_t)env_int("MOONFLOW_CUDA_EMU_MEMORY", 4096, 1, 1 << 20) << 20;
  return b;
}

thread_local int current_device;
thread_local cudaError_t last_error = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  last_error = e;
  return e;
}

/* the live device allocations: start -> (bytes, device) */
struct allocation {
  size_t bytes;
  int device;
};
std::mutex mem_lock;
std::map<uintptr_t, allocation> allocations;
size_t used[16];

/* Whether [p, p + n) lies inside one live allocation; n = 0 asks about p alone. */
/* Whether [p, p + n) (n = 0: p alone) lies inside one block of `blocks` (start -> its entry, whose
 * size bytes(entry) gives). */
template <class Map, class Bytes>
bool inside(const Map &blocks, const void *p, size_t n, Bytes bytes) {
  uintptr_t a = (uintptr_t)p;
  auto it = blocks.upper_bound(a);
  if (it == blocks.begin()) return false;
  --it;
  return a + (n ? n : 1) <= it->first + bytes(it->second);
}

bool is_device(const void *p, size_t n) {
  std::lock_guard<std::mutex> g(mem_lock);
  return inside(allocations, p, n, [](const allocation &b) { return b.bytes; });
}

/* Whether [p, p + n) is (want_device) or is not device memory; if not, says so on stderr and
 * sets the runtime's last error. */
bool check_ptr(const char *call, const char *which, const void *p, size_t n, bool want_device) {
  if (n == 0 || is_device(p, n) == want_device) return true;
  fprintf(stderr, "cuda emulator: %s: %s %p (%zu bytes) is %s\n", call, which, p, n,
          want_device ? "not inside a live device allocation" : "device memory, not host memory");
  fail(cudaErrorInvalidValue);
  return false;
}

} // namespace

namespace mf_emu {
namespace {
std::atomic<long> counters[C_N];
void print_counts() {
  fprintf(stderr,
          "cuda emulator: %ld kernel launches, %ld cuBLAS/cuDNN calls, %ld synchronisations, "
          "copies %ld host-to-device %ld device-to-host %ld device-to-device, %ld memsets, "
          "%ld cudaMalloc, %ld cudaFree\n",
          counters[C_LAUNCH].load(), counters[C_LIBRARY].load(), counters[C_SYNC].load(),
          counters[C_H2D].load(), counters[C_D2H].load(), counters[C_D2D].load(),
          counters[C_MEMSET].load(), counters[C_MALLOC].load(), counters[C_FREE].load());
}
bool env_on(const char *name) {
  const char *v = getenv(name);
  return v && *v && strcmp(v, "0") != 0;
}
} // namespace

void count(counter c, const char *name) {
  static bool on = [] {
    bool yes = env_on("MOONFLOW_CUDA_EMU_STATS");
    if (yes) atexit(print_counts);
    return yes;
  }();
  static bool trace = env_on("MOONFLOW_CUDA_EMU_TRACE");
  static const char *what[C_N] = {"launch",   "library", "synchronise", "copy H2D", "copy D2H",
                                  "copy D2D", "memset",  "cudaMalloc",  "cudaFree"};
  if (on) counters[c]++;
  if (trace) fprintf(stderr, "cuda emulator: %s%s%s\n", what[c], name ? " " : "", name ? name : "");
}
bool no_work() {
  static bool on = env_on("MOONFLOW_CUDA_EMU_NOEXEC");
  return on;
}
bool library_work(const char *call) {
  count(C_LIBRARY, call);
  flush_deferred();
  return !no_work();
}
} // namespace mf_emu

EXPORT cudaError_t cudaGetDeviceCount(int *count) {
  *count = ndevices();
  if (*count == 0) return fail(cudaErrorNoDevice);
  return cudaSuccess;
}

EXPORT cudaError_t cudaSetDevice(int device) {
  if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
  current_device = device;
  return cudaSuccess;
}

EXPORT cudaError_t cudaGetDevice(int *device) {
  *device = current_device;
  return cudaSuccess;
}

EXPORT cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
  if (device < 0 || device >= ndevices()) return fail(cudaErrorInvalidDevice);
  memset(prop, 0, sizeof *prop);
  snprintf(prop->name, sizeof prop->name, "moonflow CUDA emulator");
  prop->totalGlobalMem = device_memory();
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 1;
  prop->maxThreadsPerBlock = 1024;
  prop->maxThreadsDim[0] = prop->maxThreadsDim[1] = 1024;
  prop->maxThreadsDim[2] = 64;
  prop->maxGridSize[0] = 0x7fffffff;
  prop->maxGridSize[1] = prop->maxGridSize[2] = 65535;
  prop->warpSize = 32;
  prop->sharedMemPerBlock = 48 << 10;
  prop->pciBusID = device;
  return cudaSuccess;
}

EXPORT cudaError_t cudaDriverGetVersion(int *v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
EXPORT cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

EXPORT cudaError_t cudaGetLastError(void) {
  cudaError_t e = last_error;
  last_error = cudaSuccess;
  return e;
}
EXPORT cudaError_t cudaPeekAtLastError(void) { return last_error; }

EXPORT const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
  case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
  case cudaErrorNoDevice: return "cudaErrorNoDevice";
  default: return "cudaErrorUnknown";
  }
}

EXPORT const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  case cudaErrorInvalidDevice: return "invalid device ordinal";
  case cudaErrorInvalidDevicePointer: return "invalid device pointer";
  case cudaErrorInvalidResourceHandle: return "invalid resource handle";
  case cudaErrorNoDevice: return "no CUDA-capable device is detected";
  default: return "unknown error";
  }
}

/* ---- memory -------------------------------------------------------------------------------- */

EXPORT cudaError_t cudaMalloc(void **p, size_t bytes) {
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  int d = current_device;
  {
    std::lock_guard<std::mutex> g(mem_lock);
    if (bytes > device_memory() - used[d]) return fail(cudaErrorMemoryAllocation);
  }
  size_t rounded = (bytes + 255) & ~(size_t)255;
  void *q = aligned_alloc(256, rounded);
  if (!q) return fail(cudaErrorMemoryAllocation);
  memset(q, 0xff, rounded);
  std::lock_guard<std::mutex> g(mem_lock);
  allocations[(uintptr_t)q] = allocation{bytes, d};
  used[d] += bytes;
  *p = q;
  char what[32];
  snprintf(what, sizeof what, "%zu bytes", bytes);
  mf_emu::count(mf_emu::C_MALLOC, what);
  return cudaSuccess;
}

EXPORT cudaError_t cudaFree(void *p) {
  if (!p) return cudaSuccess;
  mf_emu::flush_deferred(); /* the runtime waits for work on it */
  {
    std::lock_guard<std::mutex> g(mem_lock);
    auto it = allocations.find((uintptr_t)p);
    if (it == allocations.end()) {
      fprintf(stderr, "cuda emulator: cudaFree(%p): not the start of a live allocation\n", p);
      return fail(cudaErrorInvalidDevicePointer);
    }
    used[it->second.device] -= it->second.bytes;
    allocations.erase(it);
  }
  free(p);
  mf_emu::count(mf_emu::C_FREE);
  return cudaSuccess;
}

EXPORT cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
  std::lock_guard<std::mutex> g(mem_lock);
  *total = device_memory();
  *free_bytes = device_memory() - used[current_device];
  return cudaSuccess;
}

/* ---- pinned host memory and the copies from it that wait for the next call ----------------- */

namespace {
std::mutex pinned_lock; /* the pinned blocks and the deferred copies */
std::map<uintptr_t, size_t> pinned;
struct deferred_copy {
  void *dst;
  const void *src;
  size_t n;
};
std::vector<deferred_copy> deferred;
long deferred_issued, deferred_done; /* copies queued so far, and run so far */

bool is_pinned(const void *p, size_t n) { /* pinned_lock held */
  return inside(pinned, p, n, [](size_t bytes) { return bytes; });
}
} // namespace

namespace mf_emu {
/* Runs the deferred copies (each call that touches a stream or memory comes here first). */
void flush_deferred() {
  std::lock_guard<std::mutex> g(pinned_lock);
  for (const deferred_copy &c : deferred) memmove(c.dst, c.src, c.n);
  deferred.clear();
  deferred_done = deferred_issued;
}
} // namespace mf_emu

EXPORT cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags) {
  (void)flags;
  *p = nullptr;
  if (mf_emu::env_on("MOONFLOW_CUDA_EMU_NO_PINNED")) return fail(cudaErrorMemoryAllocation);
  void *q = malloc(bytes ? bytes : 1);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::lock_guard<std::mutex> g(pinned_lock);
  pinned[(uintptr_t)q] = bytes;
  *p = q;
  return cudaSuccess;
}
EXPORT cudaError_t cudaMallocHost(void **p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
EXPORT cudaError_t cudaFreeHost(void *p) {
  if (!p) return cudaSuccess;
  bool queued = false; /* a copy from it not yet run: freeing it then is a bug of the caller's */
  {
    std::lock_guard<std::mutex> g(pinned_lock);
    auto it = pinned.find((uintptr_t)p);
    for (const deferred_copy &c : deferred)
      queued |= it != pinned.end() && (uintptr_t)c.src >= it->first &&
                (uintptr_t)c.src < it->first + it->second;
  }
  mf_emu::flush_deferred();
  if (queued) {
    fprintf(stderr, "cuda emulator: cudaFreeHost(%p): a copy from it is still queued\n", p);
    return fail(cudaErrorInvalidValue);
  }
  std::lock_guard<std::mutex> g(pinned_lock);
  if (!pinned.erase((uintptr_t)p)) {
    fprintf(stderr, "cuda emulator: cudaFreeHost(%p): not pinned memory\n", p);
    return fail(cudaErrorInvalidValue);
  }
  free(p);
  return cudaSuccess;
}

namespace {
bool known_stream(cudaStream_t s);

cudaError_t copy(const char *call, void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                 cudaStream_t s, bool async) {
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  bool dd, sd; /* whether dst / src must be device memory */
  switch (kind) {
  case cudaMemcpyHostToDevice: dd = true, sd = false; break;
  case cudaMemcpyDeviceToHost: dd = false, sd = true; break;
  case cudaMemcpyDeviceToDevice: dd = sd = true; break;
  case cudaMemcpyHostToHost: dd = sd = false; break;
  case cudaMemcpyDefault: dd = is_device(dst, n), sd = is_device(src, n); break;
  default: return fail(cudaErrorInvalidValue);
  }
  if (!check_ptr(call, "destination", dst, n, dd) || !check_ptr(call, "source", src, n, sd))
    return cudaErrorInvalidValue;
  mf_emu::counter what = dd && sd ? mf_emu::C_D2D : dd ? mf_emu::C_H2D : mf_emu::C_D2H;
  mf_emu::count(what, call);
  if (async && what == mf_emu::C_H2D && n) {
    std::lock_guard<std::mutex> g(pinned_lock);
    if (is_pinned(src, n)) { /* a DMA: queued behind the others, run when its result is needed */
      deferred.push_back(deferred_copy{dst, src, n});
      deferred_issued++;
      return cudaSuccess;
    }
  }
  mf_emu::flush_deferred();
  if (n && !(what == mf_emu::C_D2D && mf_emu::no_work())) memmove(dst, src, n);
  return cudaSuccess;
}
} // namespace

EXPORT cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind,
                                   cudaStream_t s) {
  return copy("cudaMemcpyAsync", dst, src, n, kind, s, true);
}
EXPORT cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind) {
  return copy("cudaMemcpy", dst, src, n, kind, nullptr, false);
}

EXPORT cudaError_t cudaMemsetAsync(void *p, int value, size_t n, cudaStream_t s) {
  if (!known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (!check_ptr("cudaMemsetAsync", "pointer", p, n, true)) return cudaErrorInvalidValue;
  mf_emu::count(mf_emu::C_MEMSET, __func__);
  mf_emu::flush_deferred();
  /* without work, small memsets still run: they clear flags the host reads (bad indices) */
  if (n && (n <= 4096 || !mf_emu::no_work())) memset(p, value, n);
  return cudaSuccess;
}

/* ---- streams: work runs when it is issued, so a stream is only a handle -------------------- */

/* A stream belongs to the device current when it was made. As on a GPU, a kernel launched into a
 * stream of another device than the current one fails, and so does recording an event of one
 * device on a stream of another. */
namespace {
std::mutex stream_lock;
std::unordered_map<cudaStream_t, int> streams; /* -> its device */
/* the stream's device (the current one for the null stream), or -1 for an unknown stream */
int stream_device(cudaStream_t s) {
  if (!s) return current_device;
  std::lock_guard<std::mutex> g(stream_lock);
  auto it = streams.find(s);
  return it == streams.end() ? -1 : it->second;
}
bool known_stream(cudaStream_t s) {
  if (stream_device(s) >= 0) return true;
  fprintf(stderr, "cuda emulator: stream %p was not made by cudaStreamCreate\n", (void *)s);
  return false;
}
} // namespace

EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags) {
  (void)flags;
  *s = (cudaStream_t)malloc(1);
  std::lock_guard<std::mutex> g(stream_lock);
  streams[*s] = current_device;
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) {
  std::lock_guard<std::mutex> g(stream_lock);
  if (!streams.erase(s)) return fail(cudaErrorInvalidResourceHandle);
  free((void *)s);
  return cudaSuccess;
}
EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  mf_emu::count(mf_emu::C_SYNC, __func__);
  mf_emu::flush_deferred();
  return known_stream(s) ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}
EXPORT cudaError_t cudaDeviceSynchronize(void) {
  mf_emu::count(mf_emu::C_SYNC, __func__);
  mf_emu::flush_deferred();
  return cudaSuccess;
}

/* ---- events: work runs when it is issued, so an event records the host's clock ------------- */

struct CUevent_st {
  double ms;   /* when it was recorded; < 0 before */
  long copies; /* the deferred copies queued before it: it has passed once they ran */
  int device;  /* current when it was made */
  bool timing; /* made without cudaEventDisableTiming */
};

namespace {
std::mutex event_lock;
std::unordered_set<cudaEvent_t> events;
bool known_event(cudaEvent_t e) {
  std::lock_guard<std::mutex> g(event_lock);
  return e && events.count(e);
}
double now_ms() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec * 1e-6;
}
} // namespace

EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags) {
  *e = new CUevent_st{-1, 0, current_device, !(flags & cudaEventDisableTiming)};
  std::lock_guard<std::mutex> g(event_lock);
  events.insert(*e);
  return cudaSuccess;
}
EXPORT cudaError_t cudaEventCreate(cudaEvent_t *e) { return cudaEventCreateWithFlags(e, 0); }
EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e) {
  std::lock_guard<std::mutex> g(event_lock);
  if (!events.erase(e)) return fail(cudaErrorInvalidResourceHandle);
  delete e;
  return cudaSuccess;
}
EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!known_event(e) || !known_stream(s)) return fail(cudaErrorInvalidResourceHandle);
  if (stream_device(s) != e->device) {
    fprintf(stderr,
            "cuda emulator: cudaEventRecord: an event of device %d on a stream of device %d\n",
            e->device, stream_device(s));
    return fail(cudaErrorInvalidResourceHandle);
  }
  e->ms = now_ms();
  std::lock_guard<std::mutex> g(pinned_lock);
  e->copies = deferred_issued;
  return cudaSuccess;
}
/* whether the copies queued before e have run */
static bool passed(cudaEvent_t e) {
  std::lock_guard<std::mutex> g(pinned_lock);
  return deferred_done >= e->copies;
}
EXPORT cudaError_t cudaEventQuery(cudaEvent_t e) {
  if (!known_event(e)) return fail(cudaErrorInvalidResourceHandle);
  /* not ready is left as the last error too (the runtime's way; PyTorch clears it after) */
  return passed(e) ? cudaSuccess : fail(cudaErrorNotReady);
}
EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!known_event(e)) return fail(cudaErrorInvalidResourceHandle);
  if (!passed(e)) { /* the host waits */
    mf_emu::count(mf_emu::C_SYNC, __func__);
    mf_emu::flush_deferred();
  }
  return cudaSuccess;
}
EXPORT cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
  if (!known_event(a) || !known_event(b)) return fail(cudaErrorInvalidResourceHandle);
  /* never recorded, or made without timing */
  if (a->ms < 0 || b->ms < 0 || !a->timing || !b->timing)
    return fail(cudaErrorInvalidResourceHandle);
  *ms = (float)(b->ms - a->ms);
  return cudaSuccess;
}

/* ---- the grid executor ---------------------------------------------------------------------- */

namespace mf_emu {

thread_state cur;

namespace {

#ifdef MF_EMU_ASAN
const size_t STACK = 256 << 10; /* ASan's frames are larger */
#else
const size_t STACK = 32 << 10;
#endif

/* Context switches: save the callee-saved registers on the current stack, store its pointer in
 * *from, load `to` and pop the same registers from there (ucontext's swapcontext would also make a
 * sigprocmask system call each time). A new fiber's stack is laid out so that the first switch to
 * it "returns" into fiber_main. */
extern "C" void mf_emu_switch(void **from, void *to);
__asm__(".text\n"
        ".globl mf_emu_switch\n"
        ".hidden mf_emu_switch\n"
        ".type mf_emu_switch,@function\n"
        "mf_emu_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size mf_emu_switch, .-mf_emu_switch\n");

struct fiber {
  void *sp; /* saved stack pointer while switched away */
  char *stack;
  uint3 tid;
  int prev, next;   /* the block's live threads, a list in index order (-1 ends it) */
  void *fake_stack; /* ASan's, while switched away */
};

std::mutex launch_lock;
/* per kernel: its launches so far that reached no __syncthreads, -1 once one did */
std::unordered_map<const void *, int> quiet_launches;
const int STRAIGHT_AFTER = 8;
std::vector<fiber> fibers;
int head;           /* the first live thread of the block, or -1 */
void *scheduler_sp; /* run_grid's context while a block runs */
int running = -1;   /* the fiber now running, or -1 (none, or running straight) */
bool synced;        /* a __syncthreads was reached in this launch */
body current_body;
#ifdef MF_EMU_ASAN
const void *sched_bottom; /* the launching thread's stack */
size_t sched_size;
bool from_scheduler;
#endif

void fatal(const char *what) {
  fprintf(stderr, "cuda emulator: %s\n", what);
  abort();
}

/* Switches from fiber `from` (-1: run_grid) to fiber `to` (-1: run_grid). A `finished` fiber is
 * never resumed. Returns when something switches back to `from`. */
void transfer(int from, int to, bool finished) {
  fiber *f = from < 0 ? nullptr : &fibers[from];
  void *target = to < 0 ? scheduler_sp : fibers[to].sp;
  running = to;
  if (to >= 0) cur.thread = fibers[to].tid;
#ifdef MF_EMU_ASAN
  void *sched_fake = nullptr;
  from_scheduler = !f;
  __sanitizer_start_switch_fiber(finished ? nullptr
                                 : f      ? &f->fake_stack
                                          : &sched_fake,
                                 to < 0 ? sched_bottom : fibers[to].stack,
                                 to < 0 ? sched_size : STACK);
#else
  (void)finished;
#endif
  mf_emu_switch(f ? &f->sp : &scheduler_sp, target);
#ifdef MF_EMU_ASAN
  __sanitizer_finish_switch_fiber(f ? f->fake_stack : sched_fake, nullptr, nullptr);
#endif
}

extern "C" void fiber_main() {
#ifdef MF_EMU_ASAN
  const void *bottom;
  size_t size;
  bool first = from_scheduler;
  __sanitizer_finish_switch_fiber(nullptr, &bottom, &size);
  if (first) sched_bottom = bottom, sched_size = size;
#endif
  int i = running;
  current_body.run(current_body.arg);
  /* leave the list; the next live thread runs (a new round from the head after the last), or
   * run_grid when none is left */
  fiber &f = fibers[i];
  if (f.prev >= 0)
    fibers[f.prev].next = f.next;
  else
    head = f.next;
  if (f.next >= 0) fibers[f.next].prev = f.prev;
  transfer(i, f.next >= 0 ? f.next : head, true);
  fatal("a finished thread was resumed");
}

/* one block's threads as fibers: each runs to its next barrier (or its end) in index order, a
 * round after round, until all have returned */
void run_block_fibers(int nthreads) {
  while ((int)fibers.size() < nthreads) {
    fiber f{};
    f.stack = (char *)mmap(nullptr, STACK, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (f.stack == MAP_FAILED) fatal("out of memory for thread stacks");
    fibers.push_back(f);
  }
  dim3 bd = cur.block_dim;
  for (int i = 0; i < nthreads; i++) {
    fiber &f = fibers[i];
    /* from the 16-byte aligned top: a zero return address for fiber_main (as if called), the
     * address mf_emu_switch returns to, six zero registers */
    void **top = (void **)(f.stack + STACK);
#ifdef MF_EMU_ASAN /* the frames a finished thread left (fiber_main's, transfer's) stay poisoned   \
                    */
    __asan_unpoison_memory_region(f.stack + STACK - (16 << 10), 16 << 10);
#endif
    top[-1] = nullptr;
    top[-2] = (void *)&fiber_main;
    for (int r = 3; r <= 8; r++) top[-r] = nullptr;
    f.sp = top - 8;
    f.tid = make_uint3(i % bd.x, i / bd.x % bd.y, i / (bd.x * bd.y));
    f.prev = i - 1;
    f.next = i + 1 < nthreads ? i + 1 : -1;
  }
  head = 0;
  transfer(-1, 0, false);
}

} // namespace

bool handle_usable(int device, cudaStream_t s, const char *call) {
  int sd = stream_device(s);
  if (device == current_device && sd == device) return true;
  fprintf(stderr,
          "cuda emulator: %s: a handle of device %d called while device %d is current, on a "
          "stream of device %d\n",
          call, device, current_device, sd);
  return false;
}

void syncthreads() {
  if (running < 0)
    fatal("__syncthreads in a kernel whose first launch never reached one (the emulator ran it "
          "without fibers)");
  synced = true;
  int i = running, to = fibers[i].next >= 0 ? fibers[i].next : head;
  if (to != i) transfer(i, to, false); /* alone: the barrier is passed */
}

void run_grid(const void *key, const char *name, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
              body b) {
  uint64_t nthreads = (uint64_t)block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    fprintf(stderr, "cuda emulator: launch of grid (%u, %u, %u) x block (%u, %u, %u): invalid\n",
            grid.x, grid.y, grid.z, block.x, block.y, block.z);
    fail(cudaErrorInvalidConfiguration);
    return;
  }
  if (smem > (48 << 10)) {
    fail(cudaErrorInvalidValue);
    return;
  }
  if (!known_stream(s)) {
    fail(cudaErrorInvalidResourceHandle);
    return;
  }
  if (stream_device(s) != current_device) {
    fprintf(stderr,
            "cuda emulator: a launch into a stream of device %d while device %d is current\n",
            stream_device(s), current_device);
    fail(cudaErrorInvalidResourceHandle);
    return;
  }
  count(C_LAUNCH, name);
  flush_deferred();
  if (no_work()) return;
  std::lock_guard<std::mutex> g(launch_lock);
  thread_state saved = cur;
  int &quiet = quiet_launches[key];
  bool fibered = quiet < STRAIGHT_AFTER;
  current_body = b;
  synced = false;
  cur.grid_dim = grid;
  cur.block_dim = block;
  for (unsigned z = 0; z < grid.z; z++)
    for (unsigned y = 0; y < grid.y; y++)
      for (unsigned x = 0; x < grid.x; x++) {
        cur.block = make_uint3(x, y, z);
        if (fibered) {
          run_block_fibers((int)nthreads);
          continue;
        }
        for (unsigned tz = 0; tz < block.z; tz++)
          for (unsigned ty = 0; ty < block.y; ty++)
            for (unsigned tx = 0; tx < block.x; tx++) {
              cur.thread = make_uint3(tx, ty, tz);
              b.run(b.arg);
            }
      }
  if (synced)
    quiet = -1;
  else if (quiet >= 0 && quiet < STRAIGHT_AFTER)
    quiet++;
  cur = saved;
}

} // namespace mf_emu

namespace mf_emu {
bool check_device(const char *call, const char *which, const void *p, size_t n) {
  return check_ptr(call, which, p, n, true);
}
bool check_stream(cudaStream_t s) { return known_stream(s); }
} // namespace mf_emu

/* ---- cuBLAS: the one GEMM the backend calls, done plainly ----------------------------------- */

struct cublasContext {
  cudaStream_t stream;
  int device; /* current when it was made: its calls need it current */
};

EXPORT cublasStatus_t cublasCreate_v2(cublasHandle_t *h) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
  *h = new cublasContext{nullptr, current_device};
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasDestroy_v2(cublasHandle_t h) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT cublasStatus_t cublasSetStream_v2(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
/* the math mode is a hint for the real library's kernel choice: checked, then nothing to do (the
 * GEMM below accumulates in double and rounds once, never with reduced-precision reductions) */
EXPORT cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  unsigned base = (unsigned)mode & 0xf, flags = (unsigned)mode & ~0xfu;
  if (base > CUBLAS_TF32_TENSOR_OP_MATH ||
      (flags & ~(unsigned)CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION))
    return CUBLAS_STATUS_INVALID_VALUE;
  return CUBLAS_STATUS_SUCCESS;
}
EXPORT const char *cublasGetStatusString(cublasStatus_t st) {
  switch (st) {
  case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
  case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
  case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
  default: return "unknown error";
  }
}

namespace {

double load(const void *p, int64_t i, cudaDataType_t t, bool round_tf32) {
  switch (t) {
  case CUDA_R_32F: {
    float x = ((const float *)p)[i];
    return round_tf32 ? mf_emu::tf32(x) : x;
  }
  case CUDA_R_64F: return ((const double *)p)[i];
  case CUDA_R_16F: return __half2float(((const __half *)p)[i]);
  default: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
  }
}

void store(void *p, int64_t i, cudaDataType_t t, double v) {
  switch (t) {
  case CUDA_R_32F: ((float *)p)[i] = (float)v; break;
  case CUDA_R_64F: ((double *)p)[i] = v; break;
  case CUDA_R_16F: ((__half *)p)[i] = __float2half((float)v); break;
  default: ((__nv_bfloat16 *)p)[i] = __float2bfloat16((float)v); break;
  }
}

size_t type_size(cudaDataType_t t) { return t == CUDA_R_64F ? 8 : t == CUDA_R_32F ? 4 : 2; }

/* the bytes a column-major rows x cols matrix with leading dimension ld spans, batch after batch */
size_t span(int rows, int cols, int ld, long long stride, int batches, size_t es) {
  if (rows == 0 || cols == 0 || batches == 0) return 0;
  int64_t last = (int64_t)(cols - 1) * ld + rows; /* elements of one matrix */
  return (size_t)(((int64_t)(batches - 1) * (stride > 0 ? stride : 0) + last) * (int64_t)es);
}

} // namespace

/* C = alpha op(A) op(B) + beta C, column-major, for each of `batches`; A is m x k after op. */
EXPORT cublasStatus_t cublasGemmStridedBatchedEx(
    cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
    const void *alpha, const void *A, cudaDataType_t at, int lda, long long sa, const void *B,
    cudaDataType_t bt, int ldb, long long sb, const void *beta, void *C, cudaDataType_t ct, int ldc,
    long long sc, int batches, cublasComputeType_t compute, cublasGemmAlgo_t algo) {
  (void)algo;
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  bool types_ok = at == bt && bt == ct &&
                  (at == CUDA_R_32F || at == CUDA_R_64F || at == CUDA_R_16F || at == CUDA_R_16BF);
  bool f64 = compute == CUBLAS_COMPUTE_64F || compute == CUBLAS_COMPUTE_64F_PEDANTIC;
  if (!types_ok || f64 != (at == CUDA_R_64F)) return CUBLAS_STATUS_NOT_SUPPORTED;
  bool round_tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32;
  bool na = ta == CUBLAS_OP_N, nb = tb == CUBLAS_OP_N;
  if ((ta != CUBLAS_OP_N && ta != CUBLAS_OP_T) || (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T) ||
      m < 0 || n < 0 || k < 0 || batches < 0 || lda < (na ? m : k) || lda < 1 ||
      ldb < (nb ? k : n) || ldb < 1 || ldc < m || ldc < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  size_t es = type_size(at);
  if (!check_ptr("cublasGemmStridedBatchedEx", "A", A,
                 span(na ? m : k, na ? k : m, lda, sa, batches, es), true) ||
      !check_ptr("cublasGemmStridedBatchedEx", "B", B,
                 span(nb ? k : n, nb ? n : k, ldb, sb, batches, es), true) ||
      !check_ptr("cublasGemmStridedBatchedEx", "C", C, span(m, n, ldc, sc, batches, es), true))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!mf_emu::handle_usable(h->device, h->stream, "cublasGemmStridedBatchedEx"))
    return CUBLAS_STATUS_EXECUTION_FAILED;
  if (!mf_emu::library_work(__func__)) return CUBLAS_STATUS_SUCCESS;
  double al = f64 ? *(const double *)alpha : *(const float *)alpha;
  double be = f64 ? *(const double *)beta : *(const float *)beta;
  for (int b = 0; b < batches; b++) {
    const char *Ab = (const char *)A + b * sa * (long long)es;
    const char *Bb = (const char *)B + b * sb * (long long)es;
    char *Cb = (char *)C + b * sc * (long long)es;
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++) {
        double acc = 0; /* float accumulation unless float64 */
        float facc = 0;
        for (int p = 0; p < k; p++) {
          double x = load(Ab, na ? i + (int64_t)p * lda : p + (int64_t)i * lda, at, round_tf32);
          double y = load(Bb, nb ? p + (int64_t)j * ldb : j + (int64_t)p * ldb, bt, round_tf32);
          if (f64)
            acc += x * y;
          else
            facc += (float)x * (float)y;
        }
        double v = al * (f64 ? acc : facc);
        int64_t ci = i + (int64_t)j * ldc;
        if (be != 0) v += be * load(Cb, ci, ct, false);
        store(Cb, ci, ct, v);
      }
  }
  return CUBLAS_STATUS_SUCCESS;
}
