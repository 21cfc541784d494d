/* format.c — tensor text as torch prints it, without the `tensor(...)` wrapper: nested brackets,
 * commas, aligned columns, `...` summaries of large tensors, rows wrapped at 80 columns, then the
 * footer `[float32 tensor, shape 2x3, cpu]`. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

enum { SUMMARY_THRESHOLD = 1000, EDGE = 3, LINE_WIDTH = 80 };

typedef struct buf {
  char *s;
  size_t n, cap;
  bool oom;
} buf;

static void put(buf *b, const char *fmt, ...) {
  va_list ap;
  if (!b->s) {
    b->s = malloc(b->cap = 256);
    if (!b->s) {
      b->oom = true;
      return;
    }
  }
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k < b->cap) {
      b->n += (size_t)k;
      return;
    }
    size_t cap = (b->cap + (size_t)k) * 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = true;
      return;
    }
    b->s = s, b->cap = cap;
  }
}

typedef struct fmt {
  const mf_tensor *t;
  const double *f;  /* values of float tensors */
  const int64_t *i; /* values of integer and bool tensors */
  bool summarize, sci, integral;
  int width;
  buf out;
} fmt;

static int elem(fmt *F, int64_t k, char *s, size_t n) {
  if (F->t->dtype == MF_BOOL) return snprintf(s, n, "%s", F->i[k] ? "true" : "false");
  if (F->i) return snprintf(s, n, "%lld", (long long)F->i[k]);
  double v = F->f[k];
  if (isnan(v)) return snprintf(s, n, "nan");
  if (isinf(v)) return snprintf(s, n, v > 0 ? "inf" : "-inf");
  if (F->sci) return snprintf(s, n, "%.4e", v);
  if (F->integral) return snprintf(s, n, "%.0f.", v);
  return snprintf(s, n, "%.4f", v);
}

/* Whether index k of a dim of size n is printed, and whether "..." goes before it. */
static bool shown(const fmt *F, int64_t n, int64_t k) {
  return !F->summarize || n <= 2 * EDGE || k < EDGE || k >= n - EDGE;
}

static void rows(fmt *F, int d, int64_t base, int indent) {
  const mf_tensor *t = F->t;
  int64_t n = t->shape[d], stride = 1;
  for (int e = d + 1; e < t->ndim; e++) stride *= t->shape[e];
  put(&F->out, "[");
  if (d == t->ndim - 1) {
    int col = indent + 1;
    for (int64_t k = 0; k < n; k++) {
      if (!shown(F, n, k)) {
        put(&F->out, "..., ");
        k = n - EDGE - 1;
        col += 5;
        continue;
      }
      char s[64];
      elem(F, base + k, s, sizeof s);
      if (col + F->width + 2 > LINE_WIDTH && k > 0) {
        put(&F->out, "\n%*s", indent + 1, "");
        col = indent + 1;
      }
      put(&F->out, "%*s%s", F->width, s, k + 1 < n ? ", " : "");
      col += F->width + 2;
    }
  } else {
    for (int64_t k = 0; k < n; k++) {
      if (!shown(F, n, k)) {
        put(&F->out, "...,\n%*s", indent + 1, "");
        k = n - EDGE - 1;
        continue;
      }
      rows(F, d + 1, base + k * stride, indent + 1);
      if (k + 1 < n) {
        put(&F->out, ",");
        for (int e = d + 1; e < t->ndim; e++) put(&F->out, "\n");
        put(&F->out, "%*s", indent + 1, "");
      }
    }
  }
  put(&F->out, "]");
}

/* Chooses fixed, integral or scientific notation from the shown values, as torch does. */
static void choose_format(fmt *F, int64_t n) {
  double lo = INFINITY, hi = 0;
  F->integral = true;
  for (int64_t k = 0; k < n; k++) {
    double v = F->f[k];
    if (!isfinite(v)) continue;
    if (v != floor(v)) F->integral = false;
    double a = fabs(v);
    if (a != 0 && a < lo) lo = a;
    if (a > hi) hi = a;
  }
  if (F->integral)
    F->sci = hi > 1e8;
  else
    F->sci = hi > 1e8 || (lo < 1e-4) || (lo != INFINITY && hi / lo > 1000);
}

mf_status mf_format(const mf_tensor *t, char **out) {
  *out = NULL;
  int64_t n = mf_numel(t);
  fmt F = {.t = t, .summarize = n > SUMMARY_THRESHOLD};
  void *vals = NULL;
  bool isf = mf_dtype_is_float(t->dtype);
  if (n) {
    vals = malloc((size_t)n * 8);
    if (!vals) return mf_fail(MF_ERR_MEMORY, "format: out of memory");
    mf_status s = mf_to_host(t, isf ? MF_F64 : MF_I64, vals);
    if (s) {
      free(vals);
      return s;
    }
  }
  if (isf) {
    F.f = vals;
    choose_format(&F, n);
  } else {
    F.i = vals;
  }
  /* column width: the widest printed element */
  char s[64];
  for (int64_t k = 0; k < n; k++) {
    int w = elem(&F, k, s, sizeof s);
    if (w > F.width) F.width = w;
  }
  if (t->ndim == 0)
    put(&F.out, "%s", n ? (elem(&F, 0, s, sizeof s), s) : "");
  else if (n == 0)
    put(&F.out, "[]");
  else
    rows(&F, 0, 0, 0);
  char shape[96];
  if (t->ndim == 0)
    put(&F.out, "\n[%s scalar, %s]", mf_dtype_name(t->dtype), t->storage->device->name);
  else
    put(&F.out, "\n[%s tensor, shape %s, %s]", mf_dtype_name(t->dtype),
        mf_shape_str(t, shape, sizeof shape), t->storage->device->name);
  free(vals);
  if (F.out.oom || !F.out.s) {
    free(F.out.s);
    return mf_fail(MF_ERR_MEMORY, "format: out of memory");
  }
  *out = F.out.s;
  return MF_OK;
}
