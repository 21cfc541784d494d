/* internal.h — what the core's files share and the public header does not show: the backend
 * interface (a struct of function pointers plus a context, and a kernel table indexed by op), the
 * kernel call record, and small helpers for shapes and status propagation.
 *
 * The front end (ops_*.c) checks arguments, infers the output shape and dtype, allocates the
 * output on the inputs' device and hands the kernel a call whose tensors are already prepared:
 * - elementwise: every input is a view with the output's shape (broadcast dims have stride 0)
 *   and the dtype the op computes in; the output is contiguous.
 * - reductions: the input is contiguous, viewed as (outer, n, inner) given in ip[0..2]; the output
 *   is contiguous (outer, inner).
 * - matmul: see ops_linalg.c.
 * Kernels never see gradients and never allocate tensors that outlive the call.
 */
#ifndef MF_INTERNAL_H
#define MF_INTERNAL_H

#include "moonflow.h"

typedef struct mf_call {
  mf_op op;
  mf_tensor *out;
  mf_tensor *out2; /* a second output (max-pool indices), or NULL */
  const mf_tensor *in[4];
  int nin;
  mf_tensor *state[3]; /* tensors a kernel updates in place besides out (optimizer state) */
  double p[8];         /* scalar parameters: fill value, clamp bounds, arange start/step, ... */
  int64_t ip[8];       /* integer parameters: reduction extents, correction, geometry, ... */
  const void *params;  /* an op's parameter struct (mf_pool2d_params, mf_optim_hparams), or NULL */
  uint64_t seed;       /* random ops: Philox key */
  uint64_t offset;     /* random ops: first Philox block */
  const struct mf_call *list; /* optimizer steps: nlist calls of this op and params, run together
                               * (one launch where the backend can); this call's own operands are
                               * the first's */
  int nlist;
} mf_call;

typedef mf_status (*mf_kernel)(mf_device *dev, const mf_call *c);

/* GATHER's ip[1]: who asked, for a message a backend words after the call returned (a GPU finds
 * a bad index as it runs: cuda/transfer.cu). SCATTER_ADD is its own op. */
enum {
  MF_GATHER_BY_GATHER = 0,
  MF_GATHER_BY_INDEX_SELECT = 1,
  MF_GATHER_BY_SCATTER_ADD = 2,
  MF_GATHER_BY_CROSS_ENTROPY = 3, /* its class indices (CROSS_ENTROPY) */
};
/* ops_nn.c: mf_gather_from on behalf of `who` (MF_GATHER_BY_*) */
mf_status mf_gather_as(int who, const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                       mf_tensor **out);

/* A binary elementwise call on a non-CPU device with a host number operand (ops_elementwise.c):
 * ip[MF_CALL_HOST_WHICH] = 1 + that operand's index (0: none; its in[] is then NULL), its value in
 * ip[MF_CALL_HOST_VALUE]: a double's bytes when ip[MF_CALL_HOST_FLOAT], else an int64, which the
 * kernel converts to the op's dtype as a cast would. */
enum { MF_CALL_HOST_FLOAT = 5, MF_CALL_HOST_VALUE = 6, MF_CALL_HOST_WHICH = 7 };

/* Marks t's storage as written in place (autograd's check of saved tensors: autograd.c). */
static inline void mf_written(mf_tensor *t) {
  if (t) t->storage->version++;
}

/* The backend interface. */
typedef struct mf_device_i {
  /* Returns NULL (with the message set) on failure. nbytes may be 0. */
  void *(*alloc)(mf_device *dev, size_t nbytes);
  void (*free)(mf_device *dev, void *ptr, size_t nbytes);
  /* Plain byte copies between this device and the host. */
  mf_status (*upload)(mf_device *dev, void *dst, const void *src, size_t nbytes);
  mf_status (*download)(mf_device *dev, void *dst, const void *src, size_t nbytes);
  mf_status (*synchronize)(mf_device *dev);
} mf_device_i;

struct mf_device {
  mf_device_type type;
  int index;
  char name[24];
  mf_device_i i;
  mf_kernel kernels[MF_OP_COUNT]; /* NULL = unsupported on this device */
  void *context;
};

/* The CPU backend (cpu/backend.c) registers its kernels here. */
void mf_cpu_register_kernels(mf_kernel *table);

/* Caching host allocator (cpu/alloc.c): 64-byte aligned, size buckets. */
void *mf_host_alloc(size_t nbytes);
void mf_host_free(void *ptr, size_t nbytes);
void mf_host_alloc_trim(void); /* returns cached blocks to the system */

/* tensor.c: raises the flag mf_memory_pressure_take reads (a backend whose memory runs tight;
 * a failed allocation raises it too) */
void mf_memory_pressure(void);

/* Runs the op's kernel on dev, or fails with MF_ERR_UNSUPPORTED naming op and device. */
mf_status mf_dispatch(mf_device *dev, const mf_call *c);

/* A new tensor header over `storage` (retained). */
mf_tensor *mf_tensor_wrap(mf_storage *s, mf_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset);
/* A view of t with new geometry over the same storage. */
mf_status mf_make_view(const mf_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                       int64_t offset, mf_tensor **out);
void mf_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);
int64_t mf_shape_numel(int ndim, const int64_t *shape);
/* Checks a new shape (sizes >= 0, at most MF_MAX_DIMS, at most 9e15 elements and nonzero sizes
 * multiplying to at most 9e15, so that numels and strides cannot overflow int64); the message
 * starts with op. Every way to make a tensor of a new shape (allocation, reshape, expand) checks.
 */
mf_status mf_check_shape(const char *op, int ndim, const int64_t *shape);
const char *mf_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t n);
/* Fails with MF_ERR_DEVICE unless both tensors live on the same device. */
mf_status mf_same_device(const char *op, const mf_tensor *a, const mf_tensor *b);

#define MF_TRY(expr)                                                                               \
  do {                                                                                             \
    mf_status s_ = (expr);                                                                         \
    if (s_ != MF_OK) return s_;                                                                    \
  } while (0)

/* Releases and NULLs a tensor pointer. */
#define MF_DROP(t)                                                                                 \
  do {                                                                                             \
    mf_release(t);                                                                                 \
    (t) = NULL;                                                                                    \
  } while (0)

#endif
