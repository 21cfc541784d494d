/* tensor.c — refcounted storages and tensor headers, creation, element access and host copies.
 * A tensor is a view (dtype, shape, strides in elements, offset) over a storage on one device;
 * views.c makes the zero-copy views. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- storage ------------------------------------------------------------------------------ */

static size_t live_bytes, live_count;

size_t mf_storage_bytes(void) { return __atomic_load_n(&live_bytes, __ATOMIC_RELAXED); }
size_t mf_storage_count(void) { return __atomic_load_n(&live_count, __ATOMIC_RELAXED); }

static int pressure;
void mf_memory_pressure(void) { __atomic_store_n(&pressure, 1, __ATOMIC_RELAXED); }
bool mf_memory_pressure_take(void) {
  return __atomic_load_n(&pressure, __ATOMIC_RELAXED) &&
         __atomic_exchange_n(&pressure, 0, __ATOMIC_RELAXED);
}

static _Thread_local mf_reclaim_fn reclaim_fn;
static _Thread_local void *reclaim_ctx;
static _Thread_local bool reclaiming;

void mf_set_reclaim(mf_reclaim_fn fn, void *ctx) { reclaim_fn = fn, reclaim_ctx = ctx; }

static mf_status storage_new(mf_device *dev, size_t nbytes, mf_storage **out) {
  mf_storage *s = malloc(sizeof *s);
  if (!s) return mf_fail(MF_ERR_MEMORY, "out of memory allocating a storage header");
  s->data = dev->i.alloc(dev, nbytes);
  if (!s->data && reclaim_fn && !reclaiming) { /* dead tensors may hold what was wanted */
    reclaiming = true;
    reclaim_fn(reclaim_ctx);
    reclaiming = false;
    s->data = dev->i.alloc(dev, nbytes);
  }
  if (!s->data) {
    free(s);
    mf_memory_pressure(); /* dead tensors may be holding what was wanted */
    return MF_ERR_MEMORY; /* the allocator set the message */
  }
  s->refcount = 1;
  s->version = 0;
  s->device = dev;
  s->nbytes = nbytes;
  __atomic_add_fetch(&live_bytes, nbytes, __ATOMIC_RELAXED);
  __atomic_add_fetch(&live_count, 1, __ATOMIC_RELAXED);
  *out = s;
  return MF_OK;
}

static void storage_release(mf_storage *s) {
  if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
    s->device->i.free(s->device, s->data, s->nbytes);
    __atomic_sub_fetch(&live_bytes, s->nbytes, __ATOMIC_RELAXED);
    __atomic_sub_fetch(&live_count, 1, __ATOMIC_RELAXED);
    free(s);
  }
}

/* ---- tensor headers ----------------------------------------------------------------------- */

/* Freed headers kept for reuse, per thread (at most HEADERS_KEPT, chained through their storage
 * field): a training step makes and drops a hundred or more, more at a time than malloc's
 * per-thread cache keeps of one size, and malloc's slower bins then cost more than the ops' own
 * bookkeeping. Not under AddressSanitizer, which should see every use of a freed header. A thread
 * that ends gives its kept headers back (a key destructor). */
#if defined(__SANITIZE_ADDRESS__)
#define HEADERS_KEPT 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HEADERS_KEPT 0
#endif
#endif
#ifndef HEADERS_KEPT
#define HEADERS_KEPT 256
#endif

static _Thread_local mf_tensor *kept;
static _Thread_local int nkept;
static _Thread_local bool kept_key_set;
static pthread_key_t kept_key;
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;
static bool
    kept_key_ok; /* the key was made: without it headers are not kept (nothing frees them) */

static void free_kept(void *unused) {
  (void)unused;
  while (kept) {
    mf_tensor *t = kept;
    kept = (mf_tensor *)t->storage;
    free(t);
  }
  nkept = 0;
  kept_key_set = false; /* a header freed by a later destructor registers again */
}
static void make_kept_key(void) { kept_key_ok = pthread_key_create(&kept_key, free_kept) == 0; }

static mf_tensor *header_new(void) {
  mf_tensor *t = kept;
  if (!t) return calloc(1, sizeof *t);
  kept = (mf_tensor *)t->storage;
  nkept--;
  memset(t, 0, sizeof *t);
  return t;
}

static void header_free(mf_tensor *t) {
  if (nkept >= HEADERS_KEPT) {
    free(t);
    return;
  }
  if (!kept_key_set) { /* this thread's first: the destructor is to run at its end */
    pthread_once(&kept_once, make_kept_key);
    if (!kept_key_ok || pthread_setspecific(kept_key, (void *)1) != 0) {
      free(t);
      return;
    }
    kept_key_set = true;
  }
  t->storage = (mf_storage *)kept;
  kept = t;
  nkept++;
}

mf_tensor *mf_tensor_wrap(mf_storage *s, mf_dtype dt, int ndim, const int64_t *shape,
                          const int64_t *stride, int64_t offset) {
  mf_tensor *t = header_new();
  if (!t) {
    mf_fail(MF_ERR_MEMORY, "out of memory allocating a tensor header");
    return NULL;
  }
  t->refcount = 1;
  t->dtype = dt;
  t->ndim = ndim;
  for (int d = 0; d < ndim; d++) {
    t->shape[d] = shape[d];
    t->stride[d] = stride[d];
  }
  t->offset = offset;
  __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
  t->storage = s;
  return t;
}

mf_tensor *mf_retain(mf_tensor *t) {
  if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
  return t;
}

void mf_autograd_release_node(struct mf_node *n); /* autograd.c */

void mf_release(mf_tensor *t) {
  if (!t || __atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  mf_release(t->grad);
  if (t->grad_fn) mf_autograd_release_node(t->grad_fn);
  storage_release(t->storage);
  header_free(t);
}

/* ---- geometry ------------------------------------------------------------------------------ */

int64_t mf_shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  return n;
}

int64_t mf_numel(const mf_tensor *t) { return mf_shape_numel(t->ndim, t->shape); }

void mf_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
  int64_t s = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    stride[d] = s;
    s *= shape[d] > 1 ? shape[d] : 1;
  }
}

bool mf_is_contiguous(const mf_tensor *t) {
  int64_t s = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] == 0) return true;
    if (t->shape[d] != 1 && t->stride[d] != s) return false;
    s *= t->shape[d];
  }
  return true;
}

void *mf_data(const mf_tensor *t) {
  return (char *)t->storage->data + t->offset * (int64_t)mf_dtype_size(t->dtype);
}

mf_device *mf_tensor_device(const mf_tensor *t) { return t->storage->device; }

const char *mf_shape_fmt(int ndim, const int64_t *shape, char *buf, size_t n) {
  if (ndim == 0) {
    snprintf(buf, n, "scalar");
    return buf;
  }
  size_t k = 0;
  buf[0] = 0;
  for (int d = 0; d < ndim && k < n; d++)
    k += snprintf(buf + k, n - k, d ? "x%lld" : "%lld", (long long)shape[d]);
  return buf;
}

const char *mf_shape_str(const mf_tensor *t, char *buf, size_t n) {
  return mf_shape_fmt(t->ndim, t->shape, buf, n);
}

mf_status mf_norm_dim(const char *op, int dim, int ndim, int *out) {
  int lo = ndim ? -ndim : -1, hi = ndim ? ndim - 1 : 0; /* a 0-d tensor takes dim 0 / -1 */
  if (dim < lo || dim > hi)
    return mf_fail(MF_ERR_INDEX, "%s: dimension %d is out of range for a %d-d tensor", op,
                   dim >= 0 ? dim + 1 : dim, ndim);
  *out = dim < 0 ? dim + (ndim ? ndim : 1) : dim;
  return MF_OK;
}

mf_status mf_same_device(const char *op, const mf_tensor *a, const mf_tensor *b) {
  if (a->storage->device == b->storage->device) return MF_OK;
  return mf_fail(MF_ERR_DEVICE,
                 "%s: tensors are on different devices (%s and %s); move one with :to()", op,
                 a->storage->device->name, b->storage->device->name);
}

/* ---- creation ------------------------------------------------------------------------------ */

mf_status mf_check_shape(const char *op, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > MF_MAX_DIMS)
    return mf_fail(MF_ERR_SHAPE, "%s: %d dimensions (at most %d)", op, ndim, MF_MAX_DIMS);
  double n = 1, nonzero = 1; /* nonzero: the product strides and partial numels reach */
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0)
      return mf_fail(MF_ERR_SHAPE, "%s: size %lld of dimension %d is negative", op,
                     (long long)shape[d], d + 1);
    n *= (double)shape[d];
    if (shape[d] > 0) nonzero *= (double)shape[d];
  }
  if (n > 9e15) return mf_fail(MF_ERR_SHAPE, "%s: %.0f elements is too many", op, n);
  if (nonzero > 9e15)
    return mf_fail(MF_ERR_SHAPE, "%s: the nonzero sizes multiply to %.0f, too many for strides", op,
                   nonzero);
  return MF_OK;
}

mf_status mf_empty(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  *out = NULL;
  if (!dev) dev = mf_cpu();
  MF_TRY(mf_check_shape("empty", ndim, shape));
  if ((unsigned)dt >= MF_DTYPE_COUNT) return mf_fail(MF_ERR_DTYPE, "empty: bad dtype %d", (int)dt);
  if (dev->type == MF_DEV_CPU && (dt == MF_F16 || dt == MF_BF16))
    return mf_fail(MF_ERR_DTYPE, "%s tensors live only on GPUs", mf_dtype_name(dt));
  int64_t stride[MF_MAX_DIMS];
  mf_contiguous_strides(ndim, shape, stride);
  mf_storage *s = NULL;
  MF_TRY(storage_new(dev, (size_t)mf_shape_numel(ndim, shape) * mf_dtype_size(dt), &s));
  *out = mf_tensor_wrap(s, dt, ndim, shape, stride, 0);
  storage_release(s);
  return *out ? MF_OK : MF_ERR_MEMORY;
}

mf_status mf_empty_like(const mf_tensor *t, mf_tensor **out) {
  return mf_empty(t->ndim, t->shape, t->dtype, t->storage->device, out);
}

mf_status mf_full(int ndim, const int64_t *shape, double v, mf_dtype dt, mf_device *dev,
                  mf_tensor **out) {
  MF_TRY(mf_empty(ndim, shape, dt, dev, out));
  mf_status s = mf_fill_(*out, v);
  if (s) MF_DROP(*out);
  return s;
}

mf_status mf_zeros(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  return mf_full(ndim, shape, 0, dt, dev, out);
}

mf_status mf_ones(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  return mf_full(ndim, shape, 1, dt, dev, out);
}

/* A copy of n bool bytes with every nonzero byte made 1, or NULL when they are all 0 or 1 already
 * (*failed: out of memory). A bool element must hold 0 or 1: any other byte read as a C bool is
 * undefined behaviour, and the bytes handed to mf_from_host may be anything (mf.frombytes). */
static unsigned char *normalized_bools(const void *src, size_t n, bool *failed) {
  const unsigned char *b = src;
  size_t i = 0;
  *failed = false;
  while (i < n && b[i] <= 1) i++;
  if (i == n) return NULL;
  unsigned char *c = malloc(n);
  if (!c) {
    *failed = true;
    return NULL;
  }
  for (size_t k = 0; k < n; k++) c[k] = b[k] != 0;
  return c;
}

mf_status mf_from_host(int ndim, const int64_t *shape, mf_dtype dt, const void *src, mf_device *dev,
                       mf_tensor **out) {
  MF_TRY(mf_empty(ndim, shape, dt, dev, out));
  mf_storage *s = (*out)->storage;
  bool failed = false;
  unsigned char *bools = dt == MF_BOOL ? normalized_bools(src, s->nbytes, &failed) : NULL;
  mf_status st = failed ? mf_fail(MF_ERR_MEMORY, "out of memory normalizing %zu bools", s->nbytes)
                        : s->device->i.upload(s->device, s->data, bools ? bools : src, s->nbytes);
  free(bools);
  if (st) MF_DROP(*out);
  return st;
}

mf_status mf_scalar(double v, mf_dtype dt, bool wrapped, mf_device *dev, mf_tensor **out) {
  MF_TRY(mf_full(0, NULL, v, dt, dev, out));
  if (wrapped) (*out)->flags |= MF_TENSOR_WRAPPED_NUMBER;
  return MF_OK;
}

mf_status mf_arange(double start, double end, double step, mf_dtype dt, mf_device *dev,
                    mf_tensor **out) {
  *out = NULL;
  if (step == 0 || !isfinite(step) || !isfinite(start) || !isfinite(end))
    return mf_fail(MF_ERR_ARG, "arange: start, end and step must be finite and step nonzero");
  double n = ceil((end - start) / step);
  if (n < 0) n = 0;
  if (!(n <= 9e15)) /* also (end - start) overflowing to inf; beyond int64 the cast is UB */
    return mf_fail(MF_ERR_SHAPE, "arange: [%g, %g) in steps of %g is %.3g elements, too many",
                   start, end, step, n);
  int64_t len = (int64_t)n;
  MF_TRY(mf_empty(1, &len, dt, dev, out));
  mf_call c = {.op = MF_OP_ARANGE, .out = *out, .p = {start, step}};
  mf_status s = mf_dispatch((*out)->storage->device, &c);
  if (s) MF_DROP(*out);
  return s;
}

mf_status mf_eye(int64_t n, int64_t m, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  int64_t shape[2] = {n, m};
  MF_TRY(mf_zeros(2, shape, dt, dev, out));
  int64_t k = n < m ? n : m, stride = m + 1;
  mf_tensor *diag;
  mf_status s = mf_make_view(*out, 1, &k, &stride, 0, &diag);
  if (!s) s = mf_fill_(diag, 1);
  mf_release(diag);
  if (s) MF_DROP(*out);
  return s;
}

static mf_status random_fill(mf_op op, int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev,
                             mf_tensor **out) {
  *out = NULL;
  if (dt != MF_F32 && dt != MF_F64)
    return mf_fail(MF_ERR_DTYPE, "%s: needs float32 or float64, got %s", mf_op_name(op),
                   mf_dtype_name(dt));
  MF_TRY(mf_empty(ndim, shape, dt, dev, out));
  mf_call c = {.op = op, .out = *out};
  c.offset = mf_rng_draw(mf_rng_blocks(dt, mf_numel(*out)), &c.seed);
  mf_status s = mf_dispatch((*out)->storage->device, &c);
  if (s) MF_DROP(*out);
  return s;
}

mf_status mf_rand(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  return random_fill(MF_OP_RAND, ndim, shape, dt, dev, out);
}

mf_status mf_randn(int ndim, const int64_t *shape, mf_dtype dt, mf_device *dev, mf_tensor **out) {
  return random_fill(MF_OP_RANDN, ndim, shape, dt, dev, out);
}

/* ---- reading values ----------------------------------------------------------------------- */

static double half_to_double(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(m + 1024, e - 25);
  return h >> 15 ? -v : v;
}

static double load_double(const void *p, mf_dtype dt) {
  switch (dt) {
  case MF_F32: return *(const float *)p;
  case MF_F64: return *(const double *)p;
  case MF_I32: return *(const int32_t *)p;
  case MF_I64: return (double)*(const int64_t *)p;
  case MF_U8: return *(const uint8_t *)p;
  case MF_BOOL: return *(const uint8_t *)p != 0;
  case MF_F16: return half_to_double(*(const uint16_t *)p);
  case MF_BF16: {
    uint32_t u = (uint32_t) * (const uint16_t *)p << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  default: return NAN;
  }
}

mf_status mf_get(const mf_tensor *t, const int64_t *index, double *out) {
  int64_t off = t->offset;
  for (int d = 0; d < t->ndim; d++) {
    if (index[d] < 0 || index[d] >= t->shape[d])
      return mf_fail(MF_ERR_INDEX, "index %lld is out of range for dimension %d of size %lld",
                     (long long)((uint64_t)index[d] + 1), d + 1, (long long)t->shape[d]);
    off += index[d] * t->stride[d];
  }
  size_t es = mf_dtype_size(t->dtype);
  unsigned char buf[8];
  mf_device *dev = t->storage->device;
  MF_TRY(dev->i.download(dev, buf, (char *)t->storage->data + off * es, es));
  *out = load_double(buf, t->dtype);
  return MF_OK;
}

mf_status mf_item(const mf_tensor *t, double *out) {
  int64_t n = mf_numel(t);
  if (n != 1)
    return mf_fail(MF_ERR_SHAPE, "item: tensor has %lld elements, expected 1", (long long)n);
  int64_t zero[MF_MAX_DIMS] = {0};
  return mf_get(t, zero, out);
}

mf_status mf_to_host(const mf_tensor *t, mf_dtype dt, void *dst) {
  mf_tensor *c = NULL;
  mf_status s = t->dtype == dt ? mf_contiguous(t, &c) : mf_cast(t, dt, &c);
  if (s) return s;
  mf_device *dev = c->storage->device;
  size_t es = mf_dtype_size(dt);
  s = dev->i.download(dev, dst, (char *)c->storage->data + c->offset * es,
                      (size_t)mf_numel(c) * es);
  mf_release(c);
  return s;
}
