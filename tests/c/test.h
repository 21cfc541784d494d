/* test.h — a minimal harness for the C tests: CHECK-style assertions that count, and a summary
 * line `# passed N failed M` that scripts/test.sh adds to the suite's total. A test program exits
 * non-zero when anything failed. */
#ifndef MF_TEST_H
#define MF_TEST_H

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "moonflow.h"

static int t_passed, t_failed;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (cond)                                                                                      \
      t_passed++;                                                                                  \
    else {                                                                                         \
      t_failed++;                                                                                  \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)

/* An op call that must succeed. */
#define CHECK_OK(expr)                                                                             \
  do {                                                                                             \
    mf_status s_ = (expr);                                                                         \
    if (s_ == MF_OK)                                                                               \
      t_passed++;                                                                                  \
    else {                                                                                         \
      t_failed++;                                                                                  \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, mf_error());            \
    }                                                                                              \
  } while (0)

/* An op call that must fail with status `st` and a message containing `needle`. */
#define CHECK_FAILS(expr, st, needle)                                                              \
  do {                                                                                             \
    mf_status s_ = (expr);                                                                         \
    if (s_ == (st) && strstr(mf_error(), (needle)))                                                \
      t_passed++;                                                                                  \
    else {                                                                                         \
      t_failed++;                                                                                  \
      fprintf(stderr, "%s:%d: %s: status %d, message \"%s\"; wanted %d with \"%s\"\n", __FILE__,   \
              __LINE__, #expr, (int)s_, s_ ? mf_error() : "", (int)(st), (needle));                \
    }                                                                                              \
  } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol)                                                              \
  do {                                                                                             \
    double a_ = (a), b_ = (b);                                                                     \
    if (fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_) || (isnan(a_) && isnan(b_)) ||                   \
        (isinf(a_) && a_ == b_))                                                                   \
      t_passed++;                                                                                  \
    else {                                                                                         \
      t_failed++;                                                                                  \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %.9g\n", __FILE__, __LINE__, #a, a_, b_);        \
    }                                                                                              \
  } while (0)

/* Reads a whole file into buf; returns its size (at most cap bytes stored), or -1. */
static inline long slurp(const char *path, unsigned char *buf, long cap) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  long n = (long)fread(buf, 1, (size_t)cap, f);
  fclose(f);
  return n;
}

/* The number of entries in a folder, hidden ones left out. */
static inline int count_files_in(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* A tensor of dtype dt holding the float64 values h (numel of shape), made in float64 and cast:
 * NULL when that fails. */
static inline mf_tensor *tensor_of_doubles(int nd, const int64_t *shape, mf_dtype dt,
                                           const double *h) {
  mf_tensor *t64 = NULL, *t = NULL;
  if (mf_from_host(nd, shape, MF_F64, h, NULL, &t64) == MF_OK) {
    if (dt == MF_F64)
      t = mf_retain(t64);
    else if (mf_cast(t64, dt, &t) != MF_OK)
      t = NULL;
  }
  mf_release(t64);
  return t;
}

static inline int test_summary(void) {
  printf("# passed %d failed %d\n", t_passed, t_failed);
  return t_failed ? 1 : 0;
}

#endif
