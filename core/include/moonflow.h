/* moonflow.h — the public C API of the moonflow core: dtypes, devices, storages and strided
 * tensor views, the operations on them, threads, random numbers and error statuses.
 *
 * Conventions
 * - Every operation returns an mf_status; on failure the thread-local message mf_error() names the
 *   operation, the shapes and the dtypes involved ("matmul: sizes 2x3 and 2x3 do not match").
 *   Results come back through a last `mf_tensor **out` argument, owned by the caller (one
 *   reference: release it with mf_release). On failure *out is left NULL.
 * - Dimensions and indices are 0-based here (the Lua bindings convert from 1-based).
 *   A negative dim counts from the end (-1 = last) wherever a dim is taken.
 * - Tensors are refcounted views (dtype, sizes, strides in elements, offset) over a refcounted
 *   storage on one device. View operations share the storage; the rest allocate.
 * - Nothing here aborts or exits.
 */
#ifndef MOONFLOW_H
#define MOONFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MF_VERSION "0.1.0"
#define MF_MAX_DIMS 8
#define MF_ALL_DIMS (-1000) /* reduce over every dimension */

/* ---- status ---------------------------------------------------------------------------- */

typedef enum mf_status {
  MF_OK = 0,
  MF_ERR_ARG,         /* a bad argument value */
  MF_ERR_SHAPE,       /* sizes that do not match or cannot be */
  MF_ERR_DTYPE,       /* a dtype the operation does not take */
  MF_ERR_INDEX,       /* an index or dimension out of range */
  MF_ERR_MEMORY,      /* out of memory */
  MF_ERR_DEVICE,      /* a device error, or tensors on different devices */
  MF_ERR_UNSUPPORTED, /* no kernel for this op on this device */
  MF_ERR_IO,          /* a file could not be read or written, or is corrupt */
} mf_status;

/* The message of the last failure on this thread. */
const char *mf_error(void);
/* Sets the message (printf format) and returns `s`, so that `return mf_fail(...)` reads well. */
mf_status mf_fail(mf_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
const char *mf_status_name(mf_status s);

/* ---- dtypes ---------------------------------------------------------------------------- */

typedef enum mf_dtype {
  MF_F32 = 0,
  MF_F64,
  MF_I32,
  MF_I64,
  MF_U8,
  MF_BOOL,
  MF_F16,  /* GPU only */
  MF_BF16, /* GPU only */
  MF_DTYPE_COUNT
} mf_dtype;

size_t mf_dtype_size(mf_dtype t);
const char *mf_dtype_name(mf_dtype t); /* "float32", "int64", "bool", ... */
/* Accepts "float32"/"float"/"f32", "float64"/"double", "int32"/"int", "int64"/"long",
 * "uint8"/"byte", "bool", "float16"/"half", "bfloat16". */
mf_status mf_dtype_from_name(const char *name, mf_dtype *out);
bool mf_dtype_is_float(mf_dtype t);
/* The dtype of a binary op's result by PyTorch's promotion rules (bool < uint8 < int32 < int64 <
 * float16/bfloat16 < float32 < float64). */
mf_dtype mf_promote(mf_dtype a, mf_dtype b);

/* ---- devices ----------------------------------------------------------------------------- */

typedef enum mf_device_type { MF_DEV_CPU = 0, MF_DEV_CUDA = 1 } mf_device_type;
typedef struct mf_device mf_device;

mf_device *mf_cpu(void);
/* "cpu", "cpu:0", "/cpu:0", "cuda", "cuda:1", "gpu", "/gpu:0", "/device:GPU:1". */
mf_status mf_device_get(const char *spec, mf_device **out);
/* Reads a spec of the forms above without opening the device (a graph may name "/gpu:0" on a
 * machine without one); the kind is case-insensitive, the index defaults to 0; TensorFlow's
 * "/job:localhost/replica:0/task:0" parts are skipped (alone, they mean the CPU). MF_ERR_ARG
 * naming the spec when it is none of them. */
mf_status mf_device_parse(const char *spec, mf_device_type *kind, int *index);
/* Why "cuda:index" cannot be opened (no driver, no GPU, CUDA_VISIBLE_DEVICES hiding them, the
 * backend's library missing, an index past the last GPU), written to buf; false when it can be. */
bool mf_cuda_unavailable(int index, char *buf, size_t n);
const char *mf_device_name(const mf_device *d); /* "cpu", "cuda:0" */
mf_device_type mf_device_kind(const mf_device *d);
int mf_device_index(const mf_device *d);
mf_status mf_device_synchronize(mf_device *d);
/* The CUDA backend is a library of its own (libmoonflow_cuda.so, next to libmoonflow), loaded the
 * first time one of the mf_cuda_* functions below or mf_device_get("cuda:N") is called; a process
 * that never asks for CUDA never loads the CUDA libraries. When it is missing or cannot be loaded,
 * CUDA is unavailable: "cuda:N" fails saying why. */
int mf_cuda_device_count(void); /* 0 when built without CUDA, the backend is missing, or no GPU */
/* The CUDA backend's knobs; without it (or without a GPU) they change nothing and report 0.
 * device -1 = every GPU, those used later included. */
/* Caps the memory moonflow holds from cudaMalloc at fraction (0, 1] of the GPU's memory
 * (TensorFlow's per_process_gpu_memory_fraction); growth is on demand (allow_growth). */
mf_status mf_cuda_set_memory_fraction(int device, double fraction);
/* allow_growth = false (a Session's gpu_options): takes the memory fraction's bytes of `device`
 * (-1: every visible GPU) in one cudaMalloc now, leaving max(300 MiB, 5%) of the free memory to
 * the CUDA libraries; tensors are then carved from it and nothing more is taken (out of memory
 * says so). Held until the process ends; a second call keeps the first reservation. *bytes: the
 * bytes reserved (summed over the GPUs). Without a GPU, device -1 reserves nothing (MF_OK, 0). */
mf_status mf_cuda_reserve_memory(int device, size_t *bytes);
size_t mf_cuda_memory_allocated(int device);      /* bytes of live tensors (bucket-rounded) */
size_t mf_cuda_max_memory_allocated(int device);  /* the peak of mf_cuda_memory_allocated */
size_t mf_cuda_memory_reserved(int device);       /* bytes held from cudaMalloc, cache included */
void mf_cuda_empty_cache(void);                   /* gives cached, unused blocks back */
void mf_cuda_reset_peak_memory_stats(int device); /* max_memory_allocated := memory_allocated */
/* The GPU's free and total memory as the driver sees it (cudaMemGetInfo: every process's use). */
mf_status mf_cuda_mem_get_info(int device, size_t *free_bytes, size_t *total_bytes);
/* float32 matmul on tensor cores in TF32 (on by default, as in TensorFlow); returns the previous
 * setting. */
bool mf_cuda_set_tf32(bool on);
/* A profile of the GPU time each op takes (mf.cuda.profile): on starts a fresh one (each op's
 * call on a GPU is bracketed by two events on its stream; nothing is synchronised), off stops it.
 * mf_cuda_profile_read (after mf_op below) reads it. Off costs the ops nothing. */
mf_status mf_cuda_profile(bool on);
/* For `moonflow -v`: the CUDA runtime's and driver's versions (1000 major + 10 minor; driver 0:
 * none installed) and cuDNN's (cudnnGetVersion(); 0: built without it). MF_ERR_DEVICE when the
 * backend is not there (built without it, or its library could not be loaded: mf_error() says). */
mf_status mf_cuda_versions(int *runtime, int *driver, int *cudnn);
/* GPU `device`'s name, memory in bytes and compute capability (major.minor). */
mf_status mf_cuda_device_info(int device, char *name, size_t name_len, size_t *total_bytes,
                              int *major, int *minor);
/* CUDA events (PyTorch's torch.cuda.Event), recorded on a GPU's stream, where all of its work
 * runs: query/synchronize tell/wait until the work queued before the record has run, and
 * elapsed_time gives the GPU milliseconds between two records of timing events (it waits for
 * them). An event never recorded counts as done. */
typedef struct mf_cuda_event mf_cuda_event;
mf_status mf_cuda_event_new(int device, bool timing, mf_cuda_event **out);
void mf_cuda_event_free(mf_cuda_event *ev); /* NULL is fine */
mf_status mf_cuda_event_record(mf_cuda_event *ev);
mf_status mf_cuda_event_query(mf_cuda_event *ev, bool *done);
mf_status mf_cuda_event_synchronize(mf_cuda_event *ev);
mf_status mf_cuda_event_elapsed_time(mf_cuda_event *start, mf_cuda_event *end, double *ms);

/* ---- storage and tensors ------------------------------------------------------------------ */

typedef struct mf_storage {
  int refcount;
  unsigned version; /* counts in-place writes (copy_, fill_, optimizer steps, running stats):
                     * autograd refuses a backward whose saved tensors were written since */
  mf_device *device;
  void *data;
  size_t nbytes;
} mf_storage;

struct mf_node;

enum {
  MF_TENSOR_WRAPPED_NUMBER = 1u << 0, /* made from a Lua number: does not promote dtypes */
  MF_TENSOR_REQUIRES_GRAD = 1u << 1,  /* a leaf whose gradient autograd accumulates */
};

typedef struct mf_tensor {
  int refcount;
  mf_dtype dtype;
  int ndim;
  unsigned flags;
  int64_t shape[MF_MAX_DIMS];
  int64_t stride[MF_MAX_DIMS]; /* in elements; 0 for broadcast dimensions */
  int64_t offset;              /* in elements, from storage->data */
  mf_storage *storage;
  /* autograd */
  struct mf_tensor *grad;  /* accumulated gradient of a leaf, or NULL */
  struct mf_node *grad_fn; /* the node that made this tensor, or NULL for a leaf */
} mf_tensor;

/* Bytes held by live storages on every device (what a garbage collector should know about). */
size_t mf_storage_bytes(void);
/* How many live storages there are (each holds at least a small block of its device). */
size_t mf_storage_count(void);
/* Whether a device's memory has run tight since the last call (an allocation failed, or a GPU's
 * blocks passed 7/8 of its limit, or another 1/16 of it since): a garbage collector holding dead
 * tensors should collect them all now. Reading clears it. */
bool mf_memory_pressure_take(void);
/* What the core calls when an allocation fails, before it tries once more: a garbage collector
 * holding dead tensors frees them (the Lua bindings run a full collection). Per thread: set by
 * the thread whose allocations it serves; NULL for none. Not called again from within itself. */
typedef void (*mf_reclaim_fn)(void *ctx);
void mf_set_reclaim(mf_reclaim_fn fn, void *ctx);

mf_tensor *mf_retain(mf_tensor *t);
void mf_release(mf_tensor *t); /* NULL is fine */

int64_t mf_numel(const mf_tensor *t);
bool mf_is_contiguous(const mf_tensor *t);
/* Host pointer to element 0 of the view (CPU tensors only). */
void *mf_data(const mf_tensor *t);
mf_device *mf_tensor_device(const mf_tensor *t);
/* "2x3", "scalar" for 0-d; writes at most n bytes. */
const char *mf_shape_str(const mf_tensor *t, char *buf, size_t n);
/* Normalises a possibly negative dim against ndim; MF_ERR_INDEX when out of range. */
mf_status mf_norm_dim(const char *op, int dim, int ndim, int *out);

/* ---- creation -------------------------------------------------------------------------- */

/* dev NULL = CPU. Shapes have ndim entries, each >= 0. */
mf_status mf_empty(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out);
mf_status mf_full(int ndim, const int64_t *shape, double v, mf_dtype dt, mf_device *dev,
                  mf_tensor **out);
mf_status mf_zeros(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out);
mf_status mf_ones(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out);
mf_status mf_empty_like(const mf_tensor *t,
                        mf_tensor **out); /* same shape, dtype, device; contiguous */
/* Copies numel contiguous elements of type dt from host memory. */
mf_status mf_from_host(int ndim, const int64_t *shape, mf_dtype dt, const void *src, mf_device *dev,
                       mf_tensor **out);
/* A 0-d tensor holding v (flagged as a wrapped number when wrapped is true). */
mf_status mf_scalar(double v, mf_dtype dt, bool wrapped, mf_device *dev, mf_tensor **out);
/* Values start, start+step, ... < end (> end for negative step), as in numpy. */
mf_status mf_arange(double start, double end, double step, mf_dtype dt, mf_device *dev,
                    mf_tensor **out);
mf_status mf_eye(int64_t n, int64_t m, mf_dtype dt, mf_device *dev, mf_tensor **out);
/* Uniform [0, 1) and standard normal, from the global Philox generator. */
mf_status mf_rand(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out);
mf_status mf_randn(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out);

/* ---- random numbers (Philox 4x32-10) ------------------------------------------------------ */

void mf_manual_seed(uint64_t seed);
/* Generator state = (seed, offset): offset counts the 128-bit Philox blocks used so far. */
void mf_rng_get_state(uint64_t *seed, uint64_t *offset);
void mf_rng_set_state(uint64_t seed, uint64_t offset);
/* Reserves n blocks and returns the offset of the first (for kernels that draw numbers). */
uint64_t mf_rng_reserve(uint64_t nblocks);
/* The same, also giving the seed they are drawn with, both read under one lock. */
uint64_t mf_rng_draw(uint64_t nblocks, uint64_t *seed);
/* Blocks a rand/randn of n elements of dt uses: ceil(n/4) (32-bit floats), ceil(n/2) (float64). */
uint64_t mf_rng_blocks(mf_dtype dt, int64_t n);
/* A random permutation of 0..n-1 as int64 (Fisher-Yates on Philox numbers). */
mf_status mf_randperm(int64_t n, mf_device *dev, mf_tensor **out);
/* One Philox 4x32-10 block: counter (offset, subsequence), key = seed. */
void mf_philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]);

/* ---- reading values --------------------------------------------------------------------- */

/* Element at a multi-index (ndim entries) converted to double. */
mf_status mf_get(const mf_tensor *t, const int64_t *index, double *out);
/* A one-element tensor's value. */
mf_status mf_item(const mf_tensor *t, double *out);
/* Copies the whole tensor, converted to dtype dt, into a contiguous host buffer of numel elements.
 */
mf_status mf_to_host(const mf_tensor *t, mf_dtype dt, void *dst);
/* numpy/torch-style text with the footer `[float32 tensor, shape 2x3, cpu]`; free() the result. */
mf_status mf_format(const mf_tensor *t, char **out);

/* ---- views (share storage) ---------------------------------------------------------------- */

/* One entry may be -1 (inferred). view fails when the strides do not allow it; reshape copies then.
 */
mf_status mf_view(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out);
mf_status mf_reshape(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out);
mf_status mf_transpose(const mf_tensor *t, int d0, int d1, mf_tensor **out);
mf_status mf_permute(const mf_tensor *t, const int *perm, mf_tensor **out); /* ndim entries */
mf_status mf_narrow(const mf_tensor *t, int dim, int64_t start, int64_t len, mf_tensor **out);
mf_status mf_select(const mf_tensor *t, int dim, int64_t index, mf_tensor **out);
/* Strided slice of one dimension: start, start+step, ... < stop (step > 0). */
mf_status mf_slice(const mf_tensor *t, int dim, int64_t start, int64_t stop, int64_t step,
                   mf_tensor **out);
/* -1 keeps a size; new leading dimensions may be added. */
mf_status mf_expand(const mf_tensor *t, int ndim, const int64_t *shape, mf_tensor **out);
mf_status mf_squeeze(const mf_tensor *t, int dim, mf_tensor **out); /* dim MF_ALL_DIMS: all 1s */
mf_status mf_unsqueeze(const mf_tensor *t, int dim, mf_tensor **out);
mf_status mf_flatten(const mf_tensor *t, int start, int end, mf_tensor **out);
/* The tensor itself (retained) when contiguous, else a contiguous copy. */
mf_status mf_contiguous(const mf_tensor *t, mf_tensor **out);
/* Broadcast shape of two shapes (numpy rules). */
mf_status mf_broadcast_shape(const char *op, int na, const int64_t *a, int nb, const int64_t *b,
                             int *nout, int64_t *out);

/* ---- operations ------------------------------------------------------------------------- */

/* The op table: name, and what the kernels index by. */
// clang-format off
#define MF_OPS(X)                                                                              \
  /* binary elementwise, numpy broadcasting */                                                \
  X(ADD, "add") X(SUB, "sub") X(MUL, "mul") X(DIV, "div") X(POW, "pow")                          \
  X(MAXIMUM, "maximum") X(MINIMUM, "minimum") X(REMAINDER, "remainder")                           \
  X(FLOOR_DIVIDE, "floor_divide")                                                               \
  X(RELU_BACKWARD, "relu_backward") /* (g, y): g where y > 0, else 0; float dtypes */           \
  X(EQ, "eq") X(NE, "ne") X(GT, "gt") X(GE, "ge") X(LT, "lt") X(LE, "le")                      \
  X(LOGICAL_AND, "logical_and") X(LOGICAL_OR, "logical_or")                                    \
  /* unary elementwise */                                                                      \
  X(NEG, "neg") X(ABS, "abs") X(EXP, "exp") X(LOG, "log") X(SQRT, "sqrt") X(TANH, "tanh")       \
  X(SIGMOID, "sigmoid") X(RELU, "relu") X(SIGN, "sign") X(LOGICAL_NOT, "logical_not")           \
  X(CLAMP, "clamp")                                                                            \
  /* data movement and creation */                                                             \
  X(COPY, "copy") X(FILL, "fill") X(ARANGE, "arange") X(RAND, "rand") X(RANDN, "randn")         \
  X(WHERE, "where")                                                                            \
  /* reductions */                                                                             \
  X(SUM, "sum") X(PROD, "prod") X(MAX, "max") X(MIN, "min") X(ARGMAX, "argmax")                 \
  X(ARGMIN, "argmin") X(MEAN, "mean") X(VAR, "var")                                            \
  /* linear algebra */                                                                         \
  X(MATMUL, "matmul")                                                                          \
  /* neural-network ops (ops_nn.c) */                                                          \
  X(CONV2D, "conv2d") X(CONV2D_BACKWARD_INPUT, "conv2d_backward_input")                         \
  X(CONV2D_BACKWARD_WEIGHT, "conv2d_backward_weight")                                          \
  X(MAX_POOL2D, "max_pool2d") X(MAX_POOL2D_BACKWARD, "max_pool2d_backward")                     \
  X(AVG_POOL2D, "avg_pool2d") X(AVG_POOL2D_BACKWARD, "avg_pool2d_backward")                     \
  X(SOFTMAX, "softmax") X(LOG_SOFTMAX, "log_softmax")                                          \
  X(SOFTMAX_BACKWARD, "softmax_backward") X(LOG_SOFTMAX_BACKWARD, "log_softmax_backward")       \
  X(GATHER, "gather") X(SCATTER_ADD, "scatter_add") X(DROPOUT_MASK, "dropout_mask")              \
  X(CROSS_ENTROPY, "cross_entropy") X(CROSS_ENTROPY_BACKWARD, "cross_entropy_backward")         \
  /* fused optimizer steps (optim.c) */                                                        \
  X(SGD_STEP, "sgd_step") X(ADAM_STEP, "adam_step") X(RMSPROP_STEP, "rmsprop_step")             \
  X(ADADELTA_STEP, "adadelta_step") X(ADAGRAD_STEP, "adagrad_step")                          \
  /* normalisation (ops_norm.c) */                                                             \
  X(BATCH_NORM, "batch_norm") X(BATCH_NORM_BACKWARD, "batch_norm_backward")
// clang-format on

typedef enum mf_op {
#define MF_OP_ENUM_(id, name) MF_OP_##id,
  MF_OPS(MF_OP_ENUM_)
#undef MF_OP_ENUM_
      MF_OP_COUNT
} mf_op;

const char *mf_op_name(mf_op op);
/* op's calls and GPU milliseconds in the CUDA profile (mf_cuda_profile; waits for the pending
 * events); 0 when none. */
mf_status mf_cuda_profile_read(mf_op op, int64_t *calls, double *ms);

/* Elementwise, with numpy broadcasting and dtype promotion. Comparisons give bool; logical ops
 * take any dtype (nonzero = true) and give bool; div of integers gives float32. */
mf_status mf_binary(mf_op op, const mf_tensor *a, const mf_tensor *b, mf_tensor **out);
/* exp/log/sqrt/tanh/sigmoid of integers give float32; logical_not gives bool. */
mf_status mf_unary(mf_op op, const mf_tensor *x, mf_tensor **out);
mf_status mf_clamp(const mf_tensor *x, double lo, double hi, mf_tensor **out); /* +-inf: no bound */
mf_status mf_where(const mf_tensor *cond, const mf_tensor *a, const mf_tensor *b, mf_tensor **out);
mf_status mf_cast(const mf_tensor *x, mf_dtype dt, mf_tensor **out); /* always a new tensor */
/* cast(x) * scale into a float dtype, in one pass on the CPU (uint8 pixels to [0, 1] floats, say).
 * Not recorded by autograd. */
mf_status mf_cast_scaled(const mf_tensor *x, mf_dtype dt, double scale, mf_tensor **out);
mf_status mf_to_device(const mf_tensor *x, mf_device *dev, mf_tensor **out);
/* dst[...] = src, with src broadcast to dst's shape and cast to dst's dtype (views written
 * through). */
mf_status mf_copy_(mf_tensor *dst, const mf_tensor *src);
mf_status mf_fill_(mf_tensor *dst, double v);
mf_status mf_cat(int n, mf_tensor *const *ts, int dim, mf_tensor **out);
mf_status mf_stack(int n, mf_tensor *const *ts, int dim, mf_tensor **out);

/* Reductions (SUM PROD MAX MIN ARGMAX ARGMIN MEAN) over `dim`, or over all with MF_ALL_DIMS.
 * ARGMAX/ARGMIN give int64 0-based indices (over the flattened tensor for MF_ALL_DIMS). SUM/PROD of
 * bool and integers give int64; MEAN needs a float dtype. */
mf_status mf_reduce(mf_op op, const mf_tensor *x, int dim, bool keepdim, mf_tensor **out);
/* Variance with Bessel's correction (correction = 1) or not (0). */
mf_status mf_var(const mf_tensor *x, int dim, int correction, bool keepdim, mf_tensor **out);
mf_status mf_std(const mf_tensor *x, int dim, int correction, bool keepdim, mf_tensor **out);

/* numpy matmul: 1-D operands are promoted and the added dimension removed; batch dimensions
 * broadcast. Float dtypes go through BLAS. */
mf_status mf_matmul(const mf_tensor *a, const mf_tensor *b, mf_tensor **out);

/* ---- neural-network ops (ops_nn.c) ------------------------------------------------------- */

/* 2-D convolution and pooling geometry: NCHW tensors; pad = {top, left, bottom, right} (zeros for
 * convolution, ignored cells for pooling). Output size: (H + top + bottom - KH) / stride_h + 1. */
typedef struct mf_pool2d_params {
  int kernel[2]; /* KH, KW (pooling only; a convolution takes them from the weight) */
  int stride[2];
  int pad[4];
  bool count_include_pad; /* avg pooling: divide by the full window (true) or the cells inside */
} mf_pool2d_params;

/* Padding of one spatial dim for TensorFlow's "same": out = ceil(in / stride); the odd cell goes
 * after (bottom/right). */
void mf_same_padding(int64_t in, int k, int stride, int *before, int *after);

/* x: (N, C, H, W), w: (O, C, KH, KW), b: (O) or NULL → (N, O, OH, OW). */
mf_status mf_conv2d(const mf_tensor *x, const mf_tensor *w, const mf_tensor *b,
                    const mf_pool2d_params *p, mf_tensor **out);
/* dout: (N, O, OH, OW) → dx: (N, C, H, W) with H, W given (x_shape = {N, C, H, W}). */
mf_status mf_conv2d_backward_input(const mf_tensor *dout, const mf_tensor *w,
                                   const int64_t *x_shape, const mf_pool2d_params *p,
                                   mf_tensor **dx);
/* dout: (N, O, OH, OW), x: (N, C, H, W) → dw: (O, C, KH, KW) with KH, KW given (w_shape). */
mf_status mf_conv2d_backward_weight(const mf_tensor *dout, const mf_tensor *x,
                                    const int64_t *w_shape, const mf_pool2d_params *p,
                                    mf_tensor **dw);
/* x: (N, C, H, W) → out (N, C, OH, OW) and, when indices is not NULL, int64 argmax positions
 * (flat h*W + w within each (n, c) plane) for the backward. */
mf_status mf_max_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor **out,
                        mf_tensor **indices);
mf_status mf_max_pool2d_backward(const mf_tensor *dout, const mf_tensor *indices,
                                 const int64_t *x_shape, mf_tensor **dx);
mf_status mf_avg_pool2d(const mf_tensor *x, const mf_pool2d_params *p, mf_tensor **out);
mf_status mf_avg_pool2d_backward(const mf_tensor *dout, const int64_t *x_shape,
                                 const mf_pool2d_params *p, mf_tensor **dx);
/* Along dim, numerically stable (max subtracted). Float dtypes. */
mf_status mf_softmax(const mf_tensor *x, int dim, mf_tensor **out);
mf_status mf_log_softmax(const mf_tensor *x, int dim, mf_tensor **out);
/* y = softmax(x) (or log_softmax(x)), dy = gradient of y → dx. */
mf_status mf_softmax_backward(const mf_tensor *y, const mf_tensor *dy, int dim, mf_tensor **dx);
mf_status mf_log_softmax_backward(const mf_tensor *y, const mf_tensor *dy, int dim, mf_tensor **dx);
/* out[i][j] = x[i][index[i][j]] along dim (torch.gather; index int64, 0-based, same ndim). */
mf_status mf_gather(const mf_tensor *x, int dim, const mf_tensor *index, mf_tensor **out);
/* A zero tensor of `shape` with src added at index along dim (the backward of gather). */
mf_status mf_scatter_add(int ndim, const int64_t *shape, int dim, const mf_tensor *index,
                         const mf_tensor *src, mf_tensor **out);
/* The same with the index's values counted from base (0 or 1: Lua's 1-based positions, read as
 * they are rather than through a shifted copy); an error names a bad index as given. */
mf_status mf_gather_from(const mf_tensor *x, int dim, const mf_tensor *index, int64_t base,
                         mf_tensor **out);
mf_status mf_scatter_add_from(int ndim, const int64_t *shape, int dim, const mf_tensor *index,
                              int64_t base, const mf_tensor *src, mf_tensor **out);
/* Cross-entropy of logits (N, C) against int64 class indices target (N) counted from base (0, or
 * 1 for Lua's): loss (N), loss_i = lse_i - (1 - eps) x[i, t_i] - eps mean_j x[i, j] with
 * lse_i = log sum_j exp x[i, j] and eps the label smoothing in [0, 1] (torch's cross_entropy with
 * reduction "none"). One kernel forward and one backward (softmax minus the smoothed one-hot)
 * where log_softmax, gather and their backwards take six. A class index outside base .. base +
 * C - 1 fails naming it (a GPU finds it as it runs: reported at the next synchronisation). */
mf_status mf_cross_entropy(const mf_tensor *logits, const mf_tensor *target, int64_t base,
                           double label_smoothing, mf_tensor **loss);
/* Its backward: dx (N, C) = g_i (exp(x[i, j] - lse_i) - (1 - eps) [j == t_i] - eps / C) for
 * the lse (N) the forward computed and g (N) the gradient of loss. */
mf_status mf_cross_entropy_backward(const mf_tensor *logits, const mf_tensor *target,
                                    const mf_tensor *lse, const mf_tensor *g, int64_t base,
                                    double label_smoothing, mf_tensor **dx);
/* A mask of x's shape and dtype: 0 with probability p, else 1/(1-p) (Philox, like mf_rand). */
mf_status mf_dropout_mask(const mf_tensor *x, double p, mf_tensor **mask);

/* Fused batch normalisation over every dim of x (N, C, ...) but the channels (dim 1), with
 * per-channel weight and bias (C) (NULL: 1 and 0). Training: the batch's mean and biased variance
 * normalise x; *save_stats (2, C) = {mean, 1 / sqrt(var + eps)} for the backward; running_mean and
 * running_var (C, contiguous; NULL: none) are updated in place, r = (1 - momentum) r + momentum b
 * with the unbiased variance (PyTorch's rule). Inference (training false): the running stats
 * normalise x and *save_stats is NULL (save_stats may be NULL). float32 or float64 on the CPU;
 * cuDNN's fused kernels on the GPU. Recorded by autograd (grad.c) for x, weight and bias:
 * training backs through mf_batch_norm_backward (no double backward: under create_graph the
 * backward fails, saying so); inference's rule is made of ops (twice differentiable). The running
 * stats get no gradient. nn.functional.batch_norm calls this. */
mf_status mf_batch_norm(const mf_tensor *x, const mf_tensor *weight, const mf_tensor *bias,
                        mf_tensor *running_mean, mf_tensor *running_var, bool training,
                        double momentum, double eps, mf_tensor **out, mf_tensor **save_stats);
/* The training-mode gradients from dy (x's shape): dx, dweight and dbias (C), given x, weight
 * (NULL: 1) and the forward's save_stats. */
mf_status mf_batch_norm_backward(const mf_tensor *dy, const mf_tensor *x, const mf_tensor *weight,
                                 const mf_tensor *save_stats, mf_tensor **dx, mf_tensor **dweight,
                                 mf_tensor **dbias);

/* ---- fused optimizer steps (optim.c) ------------------------------------------------------ */

/* Hyper-parameters, PyTorch's meaning. `step` is the step number after this update (1 first). */
typedef struct mf_optim_hparams {
  double lr, momentum, dampening, weight_decay;
  double beta1, beta2, eps;                   /* Adam/AdamW */
  double alpha;                               /* RMSProp smoothing; Adadelta rho */
  double lr_decay, initial_accumulator_value; /* Adagrad */
  int64_t step;
  bool nesterov, decoupled_weight_decay /* AdamW */, centered /* RMSProp */, maximize;
} mf_optim_hparams;

/* Each updates param (and its state tensors) in place from grad; state tensors have param's shape
 * and dtype (NULL where unused: momentum_buf with momentum 0). One kernel per parameter. At step 1
 * the state tensors' contents are ignored and PyTorch's initial state is used (zeros; Adagrad's sum
 * = initial_accumulator_value; SGD's buffer = the first update), so they may come from mf_empty. */
mf_status mf_sgd_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *momentum_buf,
                      const mf_optim_hparams *h);
mf_status mf_adam_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *exp_avg,
                       mf_tensor *exp_avg_sq, const mf_optim_hparams *h);
/* The step op (MF_OP_SGD_STEP .. MF_OP_ADAGRAD_STEP) for n parameters sharing h (one group at one
 * step count): state[k][i] is parameter i's k-th state tensor in the single step's argument
 * order (state, state[k] or an entry may be NULL where unused). Each is checked as its single
 * step checks it, none updated when one is wrong; on a GPU one kernel launch per 16 parameters. */
mf_status mf_optim_steps(mf_op op, int n, mf_tensor *const *params, const mf_tensor *const *grads,
                         mf_tensor *const *const *state, const mf_optim_hparams *h);
mf_status mf_rmsprop_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *square_avg,
                          mf_tensor *momentum_buf, mf_tensor *grad_avg, const mf_optim_hparams *h);
mf_status mf_adadelta_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *square_avg,
                           mf_tensor *acc_delta, const mf_optim_hparams *h);
mf_status mf_adagrad_step(mf_tensor *param, const mf_tensor *grad, mf_tensor *sum,
                          const mf_optim_hparams *h);

/* Shorthands. */
static inline mf_status mf_add(const mf_tensor *a, const mf_tensor *b, mf_tensor **o) {
  return mf_binary(MF_OP_ADD, a, b, o);
}
static inline mf_status mf_sub(const mf_tensor *a, const mf_tensor *b, mf_tensor **o) {
  return mf_binary(MF_OP_SUB, a, b, o);
}
static inline mf_status mf_mul(const mf_tensor *a, const mf_tensor *b, mf_tensor **o) {
  return mf_binary(MF_OP_MUL, a, b, o);
}
static inline mf_status mf_div(const mf_tensor *a, const mf_tensor *b, mf_tensor **o) {
  return mf_binary(MF_OP_DIV, a, b, o);
}

/* ---- autograd (autograd.c, grad.c) --------------------------------------------------------
 * Differentiable ops on tensors that require grad record a node (op, inputs, saved tensors) on
 * their result; mf_backward walks the nodes in reverse topological order and accumulates
 * gradients into the leaves' `grad`. Gradient rules are written with the ops above, so they run on
 * any device. Grad mode is per thread. In-place writes (mf_copy_, mf_fill_) to a tensor that
 * requires grad fail while grad mode is on. */

/* Marks a leaf as requiring grad (float dtypes only) or clears the mark. */
mf_status mf_set_requires_grad(mf_tensor *t, bool on);
/* A leaf marked with mf_set_requires_grad, or the result of a recorded op. */
bool mf_requires_grad(const mf_tensor *t);
bool mf_is_leaf(const mf_tensor *t);
bool mf_grad_enabled(void);
bool mf_set_grad_enabled(bool on); /* returns the previous mode */
/* The name of the op that made t ("mul", "matmul"), or NULL for a leaf. */
const char *mf_grad_fn_name(const mf_tensor *t);
/* Accumulates d(root)/d(leaf) into every leaf's grad. grad: d(loss)/d(root), NULL = 1 for a
 * one-element root. Without retain_graph the saved tensors are freed afterwards. */
mf_status mf_backward(mf_tensor *root, const mf_tensor *grad, bool retain_graph);
/* Gradients of the outputs with respect to inputs (torch.autograd.grad): grads[i] is NULL where
 * inputs[i] does not reach; nothing is accumulated into `grad` fields. grad_outputs may be NULL
 * (ones) or have NULL entries. create_graph records the backward pass itself. */
mf_status mf_grad(int nout, mf_tensor *const *outputs, mf_tensor *const *grad_outputs, int nin,
                  mf_tensor *const *inputs, bool retain_graph, bool create_graph,
                  mf_tensor **grads);
/* A new tensor sharing t's storage, without grad history. */
mf_status mf_detach(const mf_tensor *t, mf_tensor **out);
/* Sets or clears (NULL) a leaf's accumulated gradient (same shape; retained). */
mf_status mf_set_grad(mf_tensor *t, mf_tensor *grad);

/* ---- threads ------------------------------------------------------------------------------ */

/* One persistent pool for the whole process; OpenBLAS is set to the same count. */
void mf_set_num_threads(int n);
int mf_get_num_threads(void);
/* Runs fn(ctx, begin, end) over [0, n) split in chunks of at least `grain` items; runs inline
 * when n < 2*grain or the pool has one thread. Nested calls run inline. */
typedef void (*mf_range_fn)(void *ctx, int64_t begin, int64_t end);
void mf_parallel_for(int64_t n, int64_t grain, mf_range_fn fn, void *ctx);

/* ---- versions ----------------------------------------------------------------------------- */

/* "OpenBLAS 0.3.21 (Zen, 2 threads)" style text describing the BLAS in use. */
const char *mf_blas_info(void);

#ifdef __cplusplus
}
#endif
#endif
