/* profile.cu — mf.cuda.profile: the GPU time of each op while it is on. Switching it on puts a
 * wrapper in every CUDA device's kernel table (and in those of devices made later): the wrapper
 * brackets the real kernel with two events recorded on the device's stream, so what an op's call
 * issues (our launches, cuBLAS and cuDNN calls, their scratch copies) is timed on the GPU, without
 * synchronising. Reading waits for the recorded events and sums each op's elapsed times. Off
 * restores the tables: the ops pay nothing when no profile runs. Copies between devices (to,
 * cuda(), cpu()) are not ops and are not timed.
 *
 * Per device: up to RECORDS pending (op, start, end) records with their events, made on first
 * use; when they are all pending, they are summed (a wait for the oldest work) before the next.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/kernels.h"

#define MAX_DEVICES 64
#define RECORDS 4096

typedef struct record {
  int op;
  cudaEvent_t start, end;
} record;

typedef struct dev_profile {
  record *recs; /* RECORDS, events made with them */
  int pending;
} dev_profile;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bool on;
static mf_kernel real[MF_OP_COUNT];       /* the devices' own kernels (the same table for each) */
static mf_device *wrapped[MAX_DEVICES];   /* devices whose tables hold the wrapper */
static dev_profile profiles[MAX_DEVICES]; /* by device index */
static int64_t calls[MF_OP_COUNT];
static double total_ms[MF_OP_COUNT];

/* the pending records of device i summed into calls / total_ms (lock held) */
static mf_status flush(int i) {
  dev_profile *p = &profiles[i];
  if (p->pending == 0) return MF_OK;
  mf_status s = mf_cuda_check(wrapped[i], cudaEventSynchronize(p->recs[p->pending - 1].end),
                              "profile: cudaEventSynchronize");
  for (int k = 0; k < p->pending && !s; k++) {
    float ms = 0;
    s = mf_cuda_check(wrapped[i], cudaEventElapsedTime(&ms, p->recs[k].start, p->recs[k].end),
                      "profile: cudaEventElapsedTime");
    calls[p->recs[k].op]++;
    total_ms[p->recs[k].op] += ms;
  }
  p->pending = 0;
  return s;
}

/* the next free record of dev, its events made (lock held); NULL on failure */
static record *next_record(mf_device *dev) {
  dev_profile *p = &profiles[dev->index];
  if (!p->recs) {
    p->recs = (record *)calloc(RECORDS, sizeof *p->recs);
    if (!p->recs) return NULL;
    for (int k = 0; k < RECORDS; k++)
      if (cudaEventCreate(&p->recs[k].start) != cudaSuccess ||
          cudaEventCreate(&p->recs[k].end) != cudaSuccess) {
        (void)cudaGetLastError();
        for (int j = 0; j <= k; j++) {
          if (p->recs[j].start) cudaEventDestroy(p->recs[j].start);
          if (p->recs[j].end) cudaEventDestroy(p->recs[j].end);
        }
        free(p->recs);
        p->recs = NULL;
        return NULL;
      }
  }
  if (p->pending == RECORDS && flush(dev->index) != MF_OK) return NULL;
  return &p->recs[p->pending];
}

/* the wrapper in the kernel tables while profiling: the real kernel between two events */
static mf_status profiled(mf_device *dev, const mf_call *c) {
  MF_TRY(mf_cuda_enter(dev)); /* events are made and recorded on the current device */
  cudaStream_t s = mf_cuda_stream(dev);
  pthread_mutex_lock(&lock);
  record *r = on ? next_record(dev) : NULL;
  pthread_mutex_unlock(&lock);
  if (r && cudaEventRecord(r->start, s) != cudaSuccess) r = NULL;
  mf_status st = real[c->op](dev, c);
  if (r && cudaEventRecord(r->end, s) == cudaSuccess) {
    pthread_mutex_lock(&lock);
    r->op = (int)c->op;
    profiles[dev->index].pending++;
    pthread_mutex_unlock(&lock);
  }
  (void)cudaGetLastError(); /* a failed record is a missing sample, not the op's failure */
  return st;
}

void mf_cuda_prof_device(mf_device *dev) {
  pthread_mutex_lock(&lock);
  if (on && dev->index < MAX_DEVICES && !wrapped[dev->index]) {
    for (int op = 0; op < MF_OP_COUNT; op++)
      if (dev->kernels[op]) {
        real[op] = dev->kernels[op];
        dev->kernels[op] = profiled;
      }
    wrapped[dev->index] = dev;
  }
  pthread_mutex_unlock(&lock);
}

mf_status mf_cuda_prof_set(bool enable, mf_device *const *devs, int ndevs) {
  pthread_mutex_lock(&lock);
  mf_status s = MF_OK;
  for (int i = 0; i < MAX_DEVICES; i++) /* what is still pending belongs to the profile so far */
    if (wrapped[i] && !s) s = flush(i);
  if (enable && !on) { /* a fresh profile */
    memset(calls, 0, sizeof calls);
    memset(total_ms, 0, sizeof total_ms);
  }
  if (!enable)
    for (int i = 0; i < MAX_DEVICES; i++)
      if (wrapped[i]) {
        for (int op = 0; op < MF_OP_COUNT; op++)
          if (wrapped[i]->kernels[op] == profiled) wrapped[i]->kernels[op] = real[op];
        wrapped[i] = NULL;
      }
  on = enable;
  pthread_mutex_unlock(&lock);
  for (int i = 0; i < ndevs && enable; i++) mf_cuda_prof_device(devs[i]);
  return s;
}

mf_status mf_cuda_prof_read(int op, int64_t *n, double *ms) {
  pthread_mutex_lock(&lock);
  mf_status s = MF_OK;
  for (int i = 0; i < MAX_DEVICES; i++)
    if (wrapped[i] && !s) s = flush(i);
  bool ok = op >= 0 && op < MF_OP_COUNT;
  *n = ok ? calls[op] : 0;
  *ms = ok ? total_ms[op] : 0;
  pthread_mutex_unlock(&lock);
  return s;
}
