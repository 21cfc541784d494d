/* device.cu — the CUDA devices: one mf_device per visible GPU (the runtime honours
 * CUDA_VISIBLE_DEVICES), made on first use with one non-blocking stream that every kernel, copy
 * and library call of that device runs on; the caching allocator;
 * the kernel table; and the public knobs (memory fraction, memory statistics, TF32).
 *
 * Caching allocator. Requests are rounded up to a bucket size: 512 bytes, or one of the four sizes
 * 5/4, 6/4, 7/4, 8/4 times a power of two (at most 25% waste). A freed block goes on its bucket's
 * list and is handed out again to the next request of that bucket, so a training loop whose shapes
 * repeat stops calling cudaMalloc after its first step. All work of a device is on one stream, so a
 * block freed on the host can be reused at once: later kernels are ordered after earlier ones.
 * Growth is on demand (TensorFlow's allow_growth); the total held from cudaMalloc is capped at
 * fraction x the GPU's memory (per_process_gpu_memory_fraction, default 1). When cudaMalloc fails
 * or the cap would be passed, the cached blocks are given back to the driver and the request is
 * tried once more; then it fails with MF_ERR_MEMORY saying what was asked for and what is free.
 * Managed memory is never used.
 *
 * Reservation (TensorFlow's allow_growth = false; mf_cuda_reserve_memory, which a Session whose
 * config says gpu_options.allow_growth = false calls): one cudaMalloc of the fraction's bytes
 * (fraction x the GPU's memory, less what is already held, and at most the free memory less
 * max(300 MiB, 5% of it), which the CUDA libraries' own allocations and kernel images need), the
 * arena. From then on a request that misses the bucket lists is carved from the arena (best fit,
 * 256-byte aligned; freed pieces are merged with their neighbours when the bucket lists are
 * flushed), never from cudaMalloc: when the arena has no piece large enough even after the flush,
 * the request fails with MF_ERR_MEMORY naming the reservation. memory_reserved counts the arena
 * whole. The arena is kept until the process ends (TensorFlow never returns it either);
 * empty_cache returns cached arena blocks to the arena, not to the driver.
 *
 * This file also holds the library's one exported function, mf_cuda_open (api.h), which checks the
 * core's layout and returns the table of the functions below.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/api.h"
#include "cuda/kernels.h"

#ifdef MF_HAVE_CUDNN
#include <cudnn.h>
#endif

extern "C" const mf_cuda_core *mf_cuda_imports; /* imports.c */
static mf_status get_device(int index, mf_device **out);

#define MAX_GPUS 64
#define NBUCKETS 224

typedef struct mf_cuda_block {
  void *ptr;
  struct mf_cuda_block *next;
} mf_cuda_block;

/* a free piece of the arena: [off, off + size) */
typedef struct mf_cuda_piece {
  size_t off, size;
  struct mf_cuda_piece *next;
} mf_cuda_piece;

typedef struct cuda_dev {
  mf_device dev;
  mf_cuda_ctx ctx;
  pthread_mutex_t lock; /* the allocator's state below */
  mf_cuda_block *cache[NBUCKETS];
  size_t allocated, max_allocated, reserved, total, limit;
  double fraction;
  char *arena; /* the reservation (allow_growth = false), or NULL */
  size_t arena_size;
  mf_cuda_piece *free_pieces; /* the arena's free pieces, by address, never adjacent */
  size_t pressure_mark;       /* allocated bytes at which to report memory pressure next */
  size_t ceiling; /* reserved bytes when cudaMalloc last failed under the limit (the GPU's other
                   * users hold the rest), or 0 */
} cuda_dev;

static pthread_mutex_t devices_lock = PTHREAD_MUTEX_INITIALIZER;
static cuda_dev *devices[MAX_GPUS];
static double default_fraction = 1.0;

/* ---- errors -------------------------------------------------------------------------------- */

mf_status mf_cuda_check(mf_device *dev, cudaError_t e, const char *what) {
  if (e == cudaSuccess) return MF_OK;
  (void)cudaGetLastError(); /* clears the error unless it is sticky */
  int idx = dev ? dev->index : -1;
  mf_status s = e == cudaErrorMemoryAllocation ? MF_ERR_MEMORY : MF_ERR_DEVICE;
  return mf_fail(s, "cuda:%d: %s: %s", idx, what, cudaGetErrorString(e));
}

mf_status mf_cuda_enter(mf_device *dev) {
  return mf_cuda_check(dev, cudaSetDevice(mf_cuda_ctx_of(dev)->ordinal), "cudaSetDevice");
}

/* ---- the device count ------------------------------------------------------------------------ */

static int gpu_count = 0;
static cudaError_t gpu_count_error = cudaSuccess;

static void count_init(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    n = 0;
  }
  gpu_count_error = e;
  gpu_count = n < 0 ? 0 : n > MAX_GPUS ? MAX_GPUS : n;
}

static int device_count(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, count_init);
  return gpu_count;
}

/* ---- the caching allocator ----------------------------------------------------------------- */

/* The bucket of a request and its rounded size. */
static int bucket_of(size_t n, size_t *rounded) {
  if (n <= 512) {
    *rounded = 512;
    return 0;
  }
  int k = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^k < n <= 2^(k+1), k >= 9 */
  size_t step = (size_t)1 << (k - 2);
  size_t q = (n + step - 1) / step; /* 5 .. 8 */
  *rounded = q * step;
  return 1 + (k - 9) * 4 + (int)(q - 5);
}

/* ---- the arena (the reservation) ------------------------------------------------------------ */

/* The bytes a block of `rounded` bytes takes in the arena: 256-byte aligned, as from cudaMalloc. */
static size_t arena_bytes(size_t rounded) { return (rounded + 255) & ~(size_t)255; }

static bool in_arena(const cuda_dev *g, const void *p) {
  return g->arena && (const char *)p >= g->arena && (const char *)p < g->arena + g->arena_size;
}

/* The smallest free piece of at least n bytes, cut from its front; NULL when none is that large. */
static void *arena_take(cuda_dev *g, size_t n) {
  mf_cuda_piece **best = NULL;
  for (mf_cuda_piece **pp = &g->free_pieces; *pp; pp = &(*pp)->next)
    if ((*pp)->size >= n && (!best || (*pp)->size < (*best)->size)) best = pp;
  if (!best) return NULL;
  mf_cuda_piece *pc = *best;
  void *p = g->arena + pc->off;
  pc->off += n;
  pc->size -= n;
  if (pc->size == 0) {
    *best = pc->next;
    free(pc);
  }
  return p;
}

/* Returns [p, p + n) to the free pieces, merged with the pieces it touches. When no node can be
 * allocated for a piece that touches none, the piece stays unused until the process ends. */
static void arena_give(cuda_dev *g, void *p, size_t n) {
  size_t off = (size_t)((char *)p - g->arena);
  mf_cuda_piece **pp = &g->free_pieces, *prev = NULL;
  while (*pp && (*pp)->off < off) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  mf_cuda_piece *next = *pp;
  if (prev && prev->off + prev->size == off) { /* grows the piece before */
    prev->size += n;
    if (next && prev->off + prev->size == next->off) { /* and joins the one after */
      prev->size += next->size;
      prev->next = next->next;
      free(next);
    }
    return;
  }
  if (next && off + n == next->off) { /* grows the piece after, downwards */
    next->off = off;
    next->size += n;
    return;
  }
  mf_cuda_piece *pc = (mf_cuda_piece *)malloc(sizeof *pc);
  if (!pc) return;
  pc->off = off;
  pc->size = n;
  pc->next = next;
  *pp = pc;
}

/* The arena's free bytes and its largest free piece. */
static void arena_free_bytes(const cuda_dev *g, size_t *total, size_t *largest) {
  *total = *largest = 0;
  for (const mf_cuda_piece *pc = g->free_pieces; pc; pc = pc->next) {
    *total += pc->size;
    if (pc->size > *largest) *largest = pc->size;
  }
}

/* Gives every cached block back: to the driver, or to the arena for blocks carved from it. Called
 * with the lock held. */
static void release_cache(cuda_dev *g) {
  for (int b = 0; b < NBUCKETS; b++) {
    size_t sz = 0;
    if (b == 0)
      sz = 512;
    else {
      int k = 9 + (b - 1) / 4;
      sz = (size_t)(5 + (b - 1) % 4) << (k - 2);
    }
    while (g->cache[b]) {
      mf_cuda_block *blk = g->cache[b];
      g->cache[b] = blk->next;
      if (in_arena(g, blk->ptr)) {
        arena_give(g, blk->ptr, arena_bytes(sz));
      } else {
        cudaFree(blk->ptr);
        g->reserved -= sz;
      }
      free(blk);
    }
  }
  (void)cudaGetLastError();
}

static void fmt_bytes(size_t n, char *buf, size_t len) {
  if (n >= ((size_t)1 << 30))
    snprintf(buf, len, "%.2f GiB", (double)n / (double)(1u << 30));
  else if (n >= ((size_t)1 << 20))
    snprintf(buf, len, "%.2f MiB", (double)n / (double)(1u << 20));
  else
    snprintf(buf, len, "%zu bytes", n);
}

/* Memory pressure. Tensors Lua has not collected yet still hold their blocks, and the bindings'
 * collection policy lets such garbage reach a quarter of what is live: near the limit, an op can
 * fail for want of memory that only dead tensors hold. So once moonflow's blocks pass 7/8 of what
 * the device may hold (the limit, or the reservation), and again after each further 1/16 of it,
 * and whenever an allocation fails, the device reports pressure (mf_memory_pressure) and the
 * bindings run a full collection at their next call. A free lowers the mark again: at most one
 * collection per 1/16 of the memory allocated. What the device may hold: with a reservation, all
 * it holds; else the limit, or less where cudaMalloc failed below it. (g locked) */
static size_t pressure_cap(const cuda_dev *g) {
  if (g->arena) return g->reserved;
  return g->ceiling && g->ceiling < g->limit ? g->ceiling : g->limit;
}
static size_t pressure_step(const cuda_dev *g) { return pressure_cap(g) / 16; }
static bool pressed(cuda_dev *g) {
  size_t cap = pressure_cap(g), step = cap / 16;
  if (g->allocated < cap - 2 * step || g->allocated < g->pressure_mark) return false;
  g->pressure_mark = g->allocated + step;
  return true;
}

static void *cuda_alloc(mf_device *dev, size_t nbytes) {
  cuda_dev *g = (cuda_dev *)dev;
  size_t rounded;
  int b = bucket_of(nbytes, &rounded);
  if (b >= NBUCKETS) {
    mf_fail(MF_ERR_MEMORY, "cuda:%d: out of memory: %zu bytes is too large", dev->index, nbytes);
    return NULL;
  }
  pthread_mutex_lock(&g->lock);
  void *p = NULL;
  if (g->cache[b]) {
    mf_cuda_block *blk = g->cache[b];
    g->cache[b] = blk->next;
    p = blk->ptr;
    free(blk);
  } else if (g->arena) { /* reserved up front: carved from the arena only */
    p = arena_take(g, arena_bytes(rounded));
    if (!p && mf_cuda_enter(dev) == MF_OK) { /* the cached blocks back into it, merged */
      release_cache(g);
      p = arena_take(g, arena_bytes(rounded));
    }
    if (!p) {
      size_t fr = 0, tot = 0, afree, largest;
      cudaMemGetInfo(&fr, &tot);
      (void)cudaGetLastError();
      arena_free_bytes(g, &afree, &largest);
      char a[32], r[32], f[32], l[32], h[32], o[32];
      fmt_bytes(rounded, a, sizeof a);
      fmt_bytes(g->arena_size, r, sizeof r);
      fmt_bytes(afree, f, sizeof f);
      fmt_bytes(largest, l, sizeof l);
      fmt_bytes(g->allocated, h, sizeof h);
      fmt_bytes(fr, o, sizeof o);
      mf_fail(MF_ERR_MEMORY,
              "cuda:%d: out of memory: tried to allocate %s; the %s reserved up front "
              "(allow_growth = false) has %s free, the largest piece %s; %s held by moonflow's "
              "tensors; %s free on the GPU outside the reservation",
              dev->index, a, r, f, l, h, o);
    }
  } else if (mf_cuda_enter(dev) == MF_OK) {
    for (int attempt = 0; attempt < 2 && !p; attempt++) {
      if (attempt) release_cache(g);
      if (g->reserved + rounded > g->limit) continue;
      cudaError_t e = cudaMalloc(&p, rounded);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        p = NULL;
        g->ceiling = g->reserved;
      }
    }
    if (p) {
      g->reserved += rounded;
      if (g->reserved > g->ceiling) g->ceiling = 0; /* the GPU gives more again */
    } else {
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      (void)cudaGetLastError();
      char a[32], f[32], h[32], l[32];
      fmt_bytes(rounded, a, sizeof a);
      fmt_bytes(fr, f, sizeof f);
      fmt_bytes(g->allocated, h, sizeof h);
      fmt_bytes(g->limit, l, sizeof l);
      mf_fail(MF_ERR_MEMORY,
              "cuda:%d: out of memory: tried to allocate %s; %s free on the GPU, %s held by "
              "moonflow's tensors, limit %s (memory fraction %.2f)",
              dev->index, a, f, h, l, g->fraction);
    }
  } else {
    pthread_mutex_unlock(&g->lock);
    return NULL;
  }
  if (p) {
    g->allocated += rounded;
    if (g->allocated > g->max_allocated) g->max_allocated = g->allocated;
  }
  bool tight = !p || pressed(g);
  pthread_mutex_unlock(&g->lock);
  if (tight) mf_memory_pressure(); /* the Lua bindings collect dead tensors at their next call */
  return p;
}

static void cuda_free(mf_device *dev, void *ptr, size_t nbytes) {
  if (!ptr) return;
  cuda_dev *g = (cuda_dev *)dev;
  size_t rounded;
  int b = bucket_of(nbytes, &rounded);
  mf_cuda_block *blk = (mf_cuda_block *)malloc(sizeof *blk);
  pthread_mutex_lock(&g->lock);
  g->allocated -= rounded;
  size_t step = pressure_step(g);
  if (g->pressure_mark > g->allocated + step) g->pressure_mark = g->allocated + step;
  if (blk) {
    blk->ptr = ptr;
    blk->next = g->cache[b];
    g->cache[b] = blk;
  } else if (in_arena(g, ptr)) { /* no room to remember it: back into the arena */
    arena_give(g, ptr, arena_bytes(rounded));
  } else { /* no room to remember it: give it back */
    cudaSetDevice(g->ctx.ordinal);
    cudaFree(ptr);
    (void)cudaGetLastError();
    g->reserved -= rounded;
  }
  pthread_mutex_unlock(&g->lock);
}

void *mf_cuda_scratch(mf_device *dev, size_t nbytes) { return cuda_alloc(dev, nbytes); }
void mf_cuda_scratch_free(mf_device *dev, void *p, size_t nbytes) { cuda_free(dev, p, nbytes); }

/* ---- the kernel table ------------------------------------------------------------------------ */

static void register_kernels(mf_kernel *k) {
  for (int op = MF_OP_ADD; op <= MF_OP_LOGICAL_OR; op++) k[op] = mf_cuda_binary;
  for (int op = MF_OP_NEG; op <= MF_OP_CLAMP; op++) k[op] = mf_cuda_unary;
  k[MF_OP_COPY] = mf_cuda_copy;
  k[MF_OP_FILL] = mf_cuda_fill;
  k[MF_OP_ARANGE] = mf_cuda_arange;
  k[MF_OP_RAND] = mf_cuda_random;
  k[MF_OP_RANDN] = mf_cuda_random;
  k[MF_OP_WHERE] = mf_cuda_where;
  k[MF_OP_DROPOUT_MASK] = mf_cuda_dropout_mask;
  for (int op = MF_OP_SUM; op <= MF_OP_VAR; op++) k[op] = mf_cuda_reduce;
  k[MF_OP_MATMUL] = mf_cuda_matmul;
  for (int op = MF_OP_SOFTMAX; op <= MF_OP_LOG_SOFTMAX_BACKWARD; op++) k[op] = mf_cuda_softmax;
  k[MF_OP_CROSS_ENTROPY] = k[MF_OP_CROSS_ENTROPY_BACKWARD] = mf_cuda_cross_entropy;
  for (int op = MF_OP_SGD_STEP; op <= MF_OP_ADAGRAD_STEP; op++) k[op] = mf_cuda_optim;
#ifdef MF_HAVE_CUDNN
  for (int op = MF_OP_CONV2D; op <= MF_OP_CONV2D_BACKWARD_WEIGHT; op++) k[op] = mf_cuda_conv2d;
  k[MF_OP_BATCH_NORM] = mf_cuda_batch_norm;
  k[MF_OP_BATCH_NORM_BACKWARD] = mf_cuda_batch_norm;
#endif
  /* (without cuDNN conv2d and batch_norm have no GPU kernel: soft placement falls back) */
  for (int op = MF_OP_MAX_POOL2D; op <= MF_OP_AVG_POOL2D_BACKWARD; op++) k[op] = mf_cuda_pool2d;
  k[MF_OP_GATHER] = mf_cuda_gather;
  k[MF_OP_SCATTER_ADD] = mf_cuda_gather;
}

/* ---- devices --------------------------------------------------------------------------------- */

static mf_status make_device(int index, cuda_dev **out) {
  cuda_dev *g = (cuda_dev *)calloc(1, sizeof *g);
  if (!g) return mf_fail(MF_ERR_MEMORY, "cuda:%d: out of memory making the device", index);
  g->dev.type = MF_DEV_CUDA;
  g->dev.index = index;
  snprintf(g->dev.name, sizeof g->dev.name, "cuda:%d", index);
  g->dev.i.alloc = cuda_alloc;
  g->dev.i.free = cuda_free;
  g->dev.i.upload = mf_cuda_upload; /* transfer.cu */
  g->dev.i.download = mf_cuda_download;
  g->dev.i.synchronize = mf_cuda_sync;
  register_kernels(g->dev.kernels);
  g->dev.context = &g->ctx;
  g->ctx.ordinal = index;
  pthread_mutex_init(&g->lock, NULL);
  mf_status s = mf_cuda_check(&g->dev, cudaSetDevice(index), "cudaSetDevice");
  if (!s)
    s = mf_cuda_check(&g->dev, cudaStreamCreateWithFlags(&g->ctx.stream, cudaStreamNonBlocking),
                      "cudaStreamCreate");
  size_t fr = 0, tot = 0;
  if (!s) s = mf_cuda_check(&g->dev, cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
  if (!s && mf_cuda_xfer_make(&g->ctx))
    s = mf_fail(MF_ERR_MEMORY, "cuda:%d: out of memory making the device", index);
  if (s) {
    pthread_mutex_destroy(&g->lock);
    free(g);
    return s;
  }
  g->total = tot;
  g->fraction = default_fraction;
  g->limit = (size_t)(default_fraction * (double)tot);
  mf_cuda_prof_device(&g->dev); /* profiled from the start when a profile is on */
  *out = g;
  return MF_OK;
}

static mf_status get_device(int index, mf_device **out) {
  *out = NULL;
  int n = device_count();
  if (n == 0) {
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess || driver == 0) {
      (void)cudaGetLastError();
      return mf_fail(MF_ERR_DEVICE, "cuda:%d: no CUDA device is available (no NVIDIA driver found)",
                     index);
    }
    if (gpu_count_error != cudaSuccess && gpu_count_error != cudaErrorNoDevice)
      return mf_fail(MF_ERR_DEVICE, "cuda:%d: no CUDA device is available (%s)", index,
                     cudaGetErrorString(gpu_count_error));
    return mf_fail(MF_ERR_DEVICE, "cuda:%d: no CUDA device is available", index);
  }
  if (index < 0 || index >= n)
    return mf_fail(MF_ERR_DEVICE, "cuda:%d: no such device (%d CUDA device%s visible: cuda:0%s)",
                   index, n, n == 1 ? "" : "s", n == 1 ? "" : " .. cuda:N-1");
  pthread_mutex_lock(&devices_lock);
  mf_status s = MF_OK;
  if (!devices[index]) s = make_device(index, &devices[index]);
  if (!s) *out = &devices[index]->dev;
  pthread_mutex_unlock(&devices_lock);
  return s;
}

/* ---- the knobs of moonflow.h ----------------------------------------------------------------- */

static cuda_dev *existing(int device) {
  if (device < 0 || device >= MAX_GPUS) return NULL;
  pthread_mutex_lock(&devices_lock);
  cuda_dev *g = devices[device];
  pthread_mutex_unlock(&devices_lock);
  return g;
}

static mf_status set_memory_fraction(int device, double fraction) {
  if (!(fraction > 0 && fraction <= 1))
    return mf_fail(MF_ERR_ARG, "cuda: memory fraction %g is not in (0, 1]", fraction);
  int n = device_count();
  if (device >= n || device < -1)
    return mf_fail(MF_ERR_DEVICE, "cuda:%d: no such device (%d visible)", device, n);
  pthread_mutex_lock(&devices_lock);
  if (device == -1) default_fraction = fraction;
  for (int i = 0; i < n; i++) {
    cuda_dev *g = devices[i];
    if (!g || (device != -1 && i != device)) continue;
    pthread_mutex_lock(&g->lock);
    g->fraction = fraction;
    g->limit = (size_t)(fraction * (double)g->total);
    pthread_mutex_unlock(&g->lock);
  }
  pthread_mutex_unlock(&devices_lock);
  if (device >= 0 && !existing(device)) { /* make it now so the cap applies from the start */
    mf_device *d;
    MF_TRY(get_device(device, &d));
    cuda_dev *g = (cuda_dev *)d;
    pthread_mutex_lock(&g->lock);
    g->fraction = fraction;
    g->limit = (size_t)(fraction * (double)g->total);
    pthread_mutex_unlock(&g->lock);
  }
  return MF_OK;
}

/* The reservation of one GPU (see the top of the file); *bytes: the arena's size. */
static mf_status reserve_one(int index, size_t *bytes) {
  mf_device *d;
  MF_TRY(get_device(index, &d));
  cuda_dev *g = (cuda_dev *)d;
  pthread_mutex_lock(&g->lock);
  mf_status s = g->arena ? MF_OK : mf_cuda_enter(d);
  if (!s && !g->arena) {
    release_cache(g); /* cached blocks: free again, for the arena */
    size_t fr = 0, tot = 0;
    s = mf_cuda_check(d, cudaMemGetInfo(&fr, &tot), "cudaMemGetInfo");
    size_t keep = fr / 20 > ((size_t)300 << 20) ? fr / 20 : ((size_t)300 << 20);
    size_t room = fr > keep ? fr - keep : 0;
    size_t want = g->limit > g->reserved ? g->limit - g->reserved : 0;
    if (want > room) want = room;
    want &= ~(((size_t)2 << 20) - 1); /* whole 2 MiB pages */
    char w[32], f[32], k[32], l[32], h[32];
    fmt_bytes(want, w, sizeof w);
    fmt_bytes(fr, f, sizeof f);
    fmt_bytes(keep, k, sizeof k);
    fmt_bytes(g->limit, l, sizeof l);
    fmt_bytes(g->reserved, h, sizeof h);
    void *p = NULL;
    mf_cuda_piece *pc = NULL;
    if (!s && want == 0)
      s = mf_fail(MF_ERR_MEMORY,
                  "cuda:%d: out of memory: nothing left to reserve up front (allow_growth = "
                  "false): limit %s (memory fraction %.2f), %s already held, %s free on the GPU of "
                  "which %s is left to the CUDA libraries",
                  index, l, g->fraction, h, f, k);
    if (!s && !(pc = (mf_cuda_piece *)malloc(sizeof *pc)))
      s = mf_fail(MF_ERR_MEMORY, "cuda:%d: out of host memory reserving GPU memory", index);
    if (!s) {
      cudaError_t e = cudaMalloc(&p, want);
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        free(pc);
        s = mf_fail(MF_ERR_MEMORY,
                    "cuda:%d: out of memory: reserving %s up front (allow_growth = false) failed "
                    "(%s); %s free on the GPU, limit %s (memory fraction %.2f)",
                    index, w, cudaGetErrorString(e), f, l, g->fraction);
      }
    }
    if (!s) {
      pc->off = 0;
      pc->size = want;
      pc->next = NULL;
      g->arena = (char *)p;
      g->arena_size = want;
      g->free_pieces = pc;
      g->reserved += want;
    }
  }
  if (!s) *bytes = g->arena_size;
  pthread_mutex_unlock(&g->lock);
  return s;
}

static mf_status reserve_memory(int device, size_t *bytes) {
  *bytes = 0;
  if (device != -1) return reserve_one(device, bytes); /* get_device says why one cannot be used */
  for (int i = 0; i < device_count(); i++) {
    size_t b = 0;
    MF_TRY(reserve_one(i, &b));
    *bytes += b;
  }
  return MF_OK;
}

static size_t memory_allocated(int device) {
  cuda_dev *g = existing(device);
  if (!g) return 0;
  pthread_mutex_lock(&g->lock);
  size_t n = g->allocated;
  pthread_mutex_unlock(&g->lock);
  return n;
}

static size_t max_memory_allocated(int device) {
  cuda_dev *g = existing(device);
  if (!g) return 0;
  pthread_mutex_lock(&g->lock);
  size_t n = g->max_allocated;
  pthread_mutex_unlock(&g->lock);
  return n;
}

static size_t memory_reserved(int device) {
  cuda_dev *g = existing(device);
  if (!g) return 0;
  pthread_mutex_lock(&g->lock);
  size_t n = g->reserved;
  pthread_mutex_unlock(&g->lock);
  return n;
}

static void reset_peak(int device) {
  cuda_dev *g = existing(device);
  if (!g) return;
  pthread_mutex_lock(&g->lock);
  g->max_allocated = g->allocated;
  pthread_mutex_unlock(&g->lock);
}

static mf_status mem_get_info(int device, size_t *free_bytes, size_t *total_bytes) {
  *free_bytes = *total_bytes = 0;
  mf_device *d;
  MF_TRY(get_device(device, &d));
  MF_TRY(mf_cuda_enter(d));
  return mf_cuda_check(d, cudaMemGetInfo(free_bytes, total_bytes), "cudaMemGetInfo");
}

static void empty_cache(void) {
  for (int i = 0; i < MAX_GPUS; i++) {
    cuda_dev *g = existing(i);
    if (!g) continue;
    pthread_mutex_lock(&g->lock);
    if (cudaSetDevice(g->ctx.ordinal) == cudaSuccess) release_cache(g);
    (void)cudaGetLastError();
    pthread_mutex_unlock(&g->lock);
  }
}

/* ---- versions and device properties (`moonflow -v`) ----------------------------------------  */

static void versions(int *runtime, int *driver, int *cudnn) {
  *runtime = *driver = *cudnn = 0;
  if (cudaRuntimeGetVersion(runtime) != cudaSuccess) *runtime = 0;
  if (cudaDriverGetVersion(driver) != cudaSuccess) *driver = 0;
  (void)cudaGetLastError();
#ifdef MF_HAVE_CUDNN
  *cudnn = (int)cudnnGetVersion();
#endif
}

static mf_status device_info(int device, char *name, size_t name_len, size_t *total_bytes,
                             int *major, int *minor) {
  if (device < 0 || device >= device_count())
    return mf_fail(MF_ERR_DEVICE, "cuda:%d: no such device (%d visible)", device, device_count());
  cudaDeviceProp prop;
  MF_TRY(mf_cuda_check(NULL, cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties"));
  snprintf(name, name_len, "%s", prop.name);
  *total_bytes = prop.totalGlobalMem;
  *major = prop.major;
  *minor = prop.minor;
  return MF_OK;
}

/* mf.cuda.profile on the devices made so far (and, profile.cu, those made later) */
static mf_status profile(bool on) {
  mf_device *made[MAX_GPUS];
  int n = 0;
  pthread_mutex_lock(&devices_lock);
  for (int i = 0; i < MAX_GPUS; i++)
    if (devices[i]) made[n++] = &devices[i]->dev;
  pthread_mutex_unlock(&devices_lock);
  return mf_cuda_prof_set(on, made, n);
}

/* ---- the library's entry point (api.h) ------------------------------------------------------  */

static const mf_cuda_api api = {
    device_count,
    get_device,
    set_memory_fraction,
    reserve_memory,
    memory_allocated,
    max_memory_allocated,
    memory_reserved,
    empty_cache,
    mf_cuda_matmul_set_tf32,
    versions,
    device_info,
    profile,
    mf_cuda_prof_read,
    reset_peak,
    mem_get_info,
    mf_cuda_event_make,
    mf_cuda_event_free,
    mf_cuda_event_record,
    mf_cuda_event_query,
    mf_cuda_event_synchronize,
    mf_cuda_event_elapsed,
};

mf_status mf_cuda_device_get(int index, mf_device **out) { return get_device(index, out); }

extern "C" __attribute__((visibility("default"))) const mf_cuda_api *
mf_cuda_open(const mf_cuda_core *core) {
  static const unsigned mine[MF_CUDA_LAYOUT_N] = MF_CUDA_LAYOUT;
  /* a core of another layout: its table is not to be trusted either, so no message; the loader
   * says what a NULL means */
  if (memcmp(core->layout, mine, sizeof mine) != 0) return NULL;
  mf_cuda_imports = core;
  return &api;
}
