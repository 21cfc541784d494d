/* event.cu — mf.cuda.Event: a CUDA event of one GPU, recorded on that GPU's stream (the one all
 * of its work runs on), as PyTorch's torch.cuda.Event. query() tells whether the work queued
 * before the record has run, synchronize() waits for it on the host, and elapsed_time() gives the
 * GPU time between two records of timing events: the way to time GPU work without synchronising
 * after each step. An event never recorded counts as done (CUDA's and PyTorch's rule).
 */
#include <stdlib.h>

#include "cuda/kernels.h"

struct mf_cuda_event {
  mf_device *dev;
  cudaEvent_t e;
  bool timing, recorded;
};

mf_status mf_cuda_event_make(int index, bool timing, mf_cuda_event **out) {
  *out = NULL;
  mf_device *dev;
  MF_TRY(mf_cuda_device_get(index, &dev));
  MF_TRY(mf_cuda_enter(dev)); /* an event belongs to the device current when it is made */
  mf_cuda_event *ev = (mf_cuda_event *)calloc(1, sizeof *ev);
  if (!ev) return mf_fail(MF_ERR_MEMORY, "cuda:%d: out of memory making an event", index);
  mf_status s = mf_cuda_check(
      dev, cudaEventCreateWithFlags(&ev->e, timing ? cudaEventDefault : cudaEventDisableTiming),
      "Event: cudaEventCreate");
  if (s) {
    free(ev);
    return s;
  }
  ev->dev = dev;
  ev->timing = timing;
  *out = ev;
  return MF_OK;
}

void mf_cuda_event_free(mf_cuda_event *ev) {
  if (!ev) return;
  if (mf_cuda_enter(ev->dev) == MF_OK) cudaEventDestroy(ev->e);
  (void)cudaGetLastError();
  free(ev);
}

mf_status mf_cuda_event_record(mf_cuda_event *ev) {
  MF_TRY(mf_cuda_enter(ev->dev));
  MF_TRY(mf_cuda_check(ev->dev, cudaEventRecord(ev->e, mf_cuda_stream(ev->dev)),
                       "Event.record: cudaEventRecord"));
  ev->recorded = true;
  return MF_OK;
}

mf_status mf_cuda_event_query(mf_cuda_event *ev, bool *done) {
  *done = true;
  if (!ev->recorded) return MF_OK;
  MF_TRY(mf_cuda_enter(ev->dev));
  cudaError_t e = cudaEventQuery(ev->e);
  if (e == cudaErrorNotReady) {
    (void)cudaGetLastError(); /* not ready is not an error: clear it */
    *done = false;
    return MF_OK;
  }
  return mf_cuda_check(ev->dev, e, "Event.query: cudaEventQuery");
}

mf_status mf_cuda_event_synchronize(mf_cuda_event *ev) {
  if (!ev->recorded) return MF_OK;
  MF_TRY(mf_cuda_enter(ev->dev));
  return mf_cuda_check(ev->dev, cudaEventSynchronize(ev->e), "Event.synchronize");
}

mf_status mf_cuda_event_elapsed(mf_cuda_event *start, mf_cuda_event *end, double *ms) {
  *ms = 0;
  const char *op = "cuda.Event.elapsed_time";
  if (!start->timing || !end->timing)
    return mf_fail(MF_ERR_ARG, "%s: both events must be made with enable_timing = true", op);
  if (!start->recorded || !end->recorded)
    return mf_fail(MF_ERR_ARG, "%s: both events must be recorded first (the %s event is not)", op,
                   start->recorded ? "end" : "start");
  if (start->dev != end->dev)
    return mf_fail(MF_ERR_DEVICE, "%s: the events are of different GPUs (cuda:%d and cuda:%d)", op,
                   start->dev->index, end->dev->index);
  /* waits for the end (PyTorch raises "device not ready" instead) */
  MF_TRY(mf_cuda_event_synchronize(end));
  MF_TRY(mf_cuda_event_synchronize(start));
  float f = 0;
  MF_TRY(mf_cuda_check(start->dev, cudaEventElapsedTime(&f, start->e, end->e), op));
  *ms = f;
  return MF_OK;
}
