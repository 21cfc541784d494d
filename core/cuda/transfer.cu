/* transfer.cu — bytes between the host and a GPU, synchronisation, and the index errors a GPU
 * finds after the call that caused them has returned.
 *
 * Uploads do not wait for the GPU. A copy of at most STAGE_MAX bytes is made into one of STAGES
 * pinned (page-locked) host buffers, the buffer's DMA is queued on the device's stream and an
 * event recorded after it; the buffer is written again only once that event has passed, which
 * waits only when all STAGES copies are still queued (the GPU is that far behind). So a training
 * loop that uploads each batch keeps the host running ahead of the GPU, where a plain pageable
 * copy makes the driver wait. Larger uploads go straight from the caller's memory and wait (the
 * copy's own time dominates). A buffer grows to the largest upload it took (a power of two, at
 * least 64 KiB); when pinned memory cannot be had, the upload is the plain waiting one.
 * Downloads wait: the host needs the bytes.
 *
 * Index errors. GATHER and SCATTER_ADD check each index on the GPU as they run (gather.cu). An
 * out-of-range index is never followed; the first one is recorded in the device's index record
 * (4 words of device memory: [0] set, [1] the index as given, [2] the size of the indexed
 * dimension, [3] the dimension | the caller << 8 | the index's base << 16, the caller being who
 * asked: MF_GATHER_BY_*, the base what the index's values count from: 0, or 1 for Lua's),
 * and the call returns without waiting (mf_cuda_index_launched notes that it ran). The next
 * synchronisation of the device (a download, mf.cuda.synchronize) reads the record when such a call
 * ran since the last one and fails with MF_ERR_INDEX naming the call, the 1-based index and the
 * range, then clears it: the device stays usable (PyTorch's device-side assert leaves the context
 * unusable). The results of the failed call are undefined (gather writes 0 where the index was
 * bad). With CUDA_LAUNCH_BLOCKING=1 in the environment (the CUDA runtime then runs every launch
 * synchronously too) the call itself waits and fails, with the message the CPU gives.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.h"

#define STAGES 4
#define STAGE_MAX ((size_t)4 << 20)
#define STAGE_MIN ((size_t)64 << 10)

typedef struct stage {
  void *host; /* pinned, cap bytes, or NULL */
  size_t cap;
  cudaEvent_t done; /* recorded after the buffer's last copy, or NULL before any */
} stage;

struct mf_cuda_xfer {
  pthread_mutex_t lock; /* the stages and the index record */
  stage stages[STAGES];
  unsigned next;
  unsigned long long *record; /* device memory, 4 words */
  bool pending;               /* a call that may set the record ran since it was last read */
  bool blocking;              /* CUDA_LAUNCH_BLOCKING=1 */
};

mf_status mf_cuda_xfer_make(mf_cuda_ctx *ctx) {
  mf_cuda_xfer *x = (mf_cuda_xfer *)calloc(1, sizeof *x);
  if (!x) return MF_ERR_MEMORY;
  pthread_mutex_init(&x->lock, NULL);
  const char *v = getenv("CUDA_LAUNCH_BLOCKING");
  x->blocking = v && strcmp(v, "1") == 0; /* as the runtime reads it */
  /* the index record, zeroed (made now, not on the first gather: the caching allocator may hold
   * all the memory by then) */
  void *p = NULL;
  const size_t bytes = 4 * sizeof(unsigned long long);
  if (cudaMalloc(&p, bytes) != cudaSuccess ||
      cudaMemsetAsync(p, 0, bytes, ctx->stream) != cudaSuccess) {
    (void)cudaGetLastError();
    if (p) cudaFree(p);
    pthread_mutex_destroy(&x->lock);
    free(x);
    return MF_ERR_MEMORY;
  }
  x->record = (unsigned long long *)p;
  ctx->xfer = x;
  return MF_OK;
}

/* ---- uploads ------------------------------------------------------------------------------ */

/* The direct copy: queued, then waited for (the caller's buffer may change once we return). */
static mf_status upload_and_wait(mf_device *dev, void *dst, const void *src, size_t n) {
  cudaStream_t s = mf_cuda_stream(dev);
  MF_TRY(mf_cuda_check(dev, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s), "upload"));
  return mf_cuda_check(dev, cudaStreamSynchronize(s), "upload");
}

/* A stage that holds n bytes and whose last copy has passed (x locked); NULL when pinned memory
 * could not be had (the runtime's error cleared). */
static stage *free_stage(mf_device *dev, mf_cuda_xfer *x, size_t n, mf_status *st) {
  stage *g = &x->stages[x->next];
  x->next = (x->next + 1) % STAGES;
  if (g->done) {
    cudaError_t e = cudaEventQuery(g->done);
    if (e == cudaErrorNotReady) { /* not an error, but left as the last one: cleared (as torch) */
      (void)cudaGetLastError();
      e = cudaEventSynchronize(g->done);
    }
    if ((*st = mf_cuda_check(dev, e, "upload"))) return NULL;
  } else if (cudaEventCreateWithFlags(&g->done, cudaEventDisableTiming) != cudaSuccess) {
    (void)cudaGetLastError();
    g->done = NULL;
    return NULL;
  }
  if (g->cap < n) {
    size_t cap = STAGE_MIN;
    while (cap < n) cap *= 2;
    if (g->host && cudaFreeHost(g->host) != cudaSuccess) (void)cudaGetLastError();
    g->host = NULL;
    g->cap = 0;
    if (cudaHostAlloc(&g->host, cap, cudaHostAllocDefault) != cudaSuccess) {
      (void)cudaGetLastError();
      g->host = NULL;
      return NULL;
    }
    g->cap = cap;
  }
  return g;
}

mf_status mf_cuda_upload(mf_device *dev, void *dst, const void *src, size_t n) {
  if (n == 0) return MF_OK;
  MF_TRY(mf_cuda_enter(dev));
  mf_cuda_xfer *x = mf_cuda_ctx_of(dev)->xfer;
  if (n > STAGE_MAX) return upload_and_wait(dev, dst, src, n);
  pthread_mutex_lock(&x->lock);
  mf_status st = MF_OK;
  stage *g = free_stage(dev, x, n, &st);
  if (g) {
    cudaStream_t s = mf_cuda_stream(dev);
    memcpy(g->host, src, n);
    st = mf_cuda_check(dev, cudaMemcpyAsync(dst, g->host, n, cudaMemcpyHostToDevice, s), "upload");
    if (!st && (st = mf_cuda_check(dev, cudaEventRecord(g->done, s), "upload")))
      (void)cudaStreamSynchronize(s); /* untracked: the buffer is free only once the copy is done */
  }
  pthread_mutex_unlock(&x->lock);
  if (!g && !st) st = upload_and_wait(dev, dst, src, n);
  return st;
}

/* ---- synchronisation and the index record ------------------------------------------------ */

static const char *const callers[] = {"gather", "index_select", "scatter_add"};

#define LATE                                                                                       \
  " running an earlier call: the GPU checks indices as it runs and reports a bad one at the next " \
  "synchronisation; CUDA_LAUNCH_BLOCKING=1 reports it at the call)"

/* After the stream has drained (x locked): the index record's error, if a call set it; cleared. */
static mf_status read_record(mf_device *dev, mf_cuda_xfer *x, bool at_call) {
  if (!x->pending) return MF_OK;
  unsigned long long r[4];
  cudaStream_t s = mf_cuda_stream(dev);
  MF_TRY(mf_cuda_check(dev, cudaMemcpyAsync(r, x->record, sizeof r, cudaMemcpyDeviceToHost, s),
                       "synchronize"));
  MF_TRY(mf_cuda_check(dev, cudaStreamSynchronize(s), "synchronize"));
  x->pending = false;
  if (!r[0]) return MF_OK;
  MF_TRY(mf_cuda_check(dev, cudaMemsetAsync(x->record, 0, sizeof r, s), "synchronize"));
  long long v = (long long)r[1], size = (long long)r[2];
  int dim = (int)(r[3] & 0xff) + 1;
  unsigned who = (unsigned)(r[3] >> 8 & 0xff), base = (unsigned)(r[3] >> 16 & 0xff);
  const char *name = who < sizeof callers / sizeof *callers ? callers[who] : "gather";
  if (who == MF_GATHER_BY_CROSS_ENTROPY) { /* as cpu/loss.c words it; later: which call found it */
    long long lo = base, hi = (long long)base + size - 1;
    if (at_call)
      return mf_fail(MF_ERR_INDEX, "cross_entropy: class index %lld is out of range %lld..%lld", v,
                     lo, hi);
    return mf_fail(MF_ERR_INDEX,
                   "cross_entropy: class index %lld is out of range %lld..%lld (found by %s" LATE,
                   v, lo, hi, dev->name);
  }
  if (at_call) /* the op's own message, as the CPU's: as given (its callers word it for Lua) */
    return mf_fail(MF_ERR_INDEX, "%s: index %lld is out of range for dimension %d of size %lld",
                   who == MF_GATHER_BY_SCATTER_ADD ? "scatter_add" : "gather", v, dim, size);
  return mf_fail(MF_ERR_INDEX,
                 "%s: index %lld is out of range 1..%lld for dimension %d (found by %s" LATE, name,
                 (long long)((unsigned long long)v - base + 1), size, dim, dev->name);
}

/* Waits for the device's queue, then reads the index record (at_call: as read_record says). */
static mf_status drain(mf_device *dev, bool at_call) {
  MF_TRY(mf_cuda_check(dev, cudaStreamSynchronize(mf_cuda_stream(dev)), "synchronize"));
  mf_cuda_xfer *x = mf_cuda_ctx_of(dev)->xfer;
  pthread_mutex_lock(&x->lock);
  mf_status st = read_record(dev, x, at_call);
  pthread_mutex_unlock(&x->lock);
  return st;
}

mf_status mf_cuda_download(mf_device *dev, void *dst, const void *src, size_t n) {
  MF_TRY(mf_cuda_enter(dev));
  if (n)
    MF_TRY(mf_cuda_check(dev,
                         cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, mf_cuda_stream(dev)),
                         "download"));
  return drain(dev, false);
}

mf_status mf_cuda_sync(mf_device *dev) {
  MF_TRY(mf_cuda_enter(dev));
  return drain(dev, false);
}

unsigned long long *mf_cuda_index_record(mf_device *dev) {
  return mf_cuda_ctx_of(dev)->xfer->record;
}

mf_status mf_cuda_index_launched(mf_device *dev) {
  mf_cuda_xfer *x = mf_cuda_ctx_of(dev)->xfer;
  pthread_mutex_lock(&x->lock); /* after the launch: a drain now reads the record after it */
  x->pending = true;
  pthread_mutex_unlock(&x->lock);
  return x->blocking ? drain(dev, true) : MF_OK;
}
