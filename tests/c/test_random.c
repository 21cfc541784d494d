/* test_random.c — the Philox 4x32-10 generator (Random123 known-answer vectors), the global
 * generator state (default seed, manual_seed, get/set state, block accounting, thread-safe
 * reservation), the documented element -> (block, word) numbering of rand/randn that every
 * backend follows, and the statistics of 1M uniform and normal draws. */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"
#include "test.h"

static void test_known_answers(void) {
  /* Random123 kat_vectors: "philox4x32 10 <ctr0..3> <key0..1> <out0..3>"; moonflow's counter_lo
   * holds ctr words 0 (low) and 1 (high), counter_hi words 2 and 3, the seed key words 0 and 1. */
  static const struct {
    uint32_t ctr[4], key[2], out[4];
  } kat[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
    uint64_t lo = (uint64_t)kat[k].ctr[1] << 32 | kat[k].ctr[0];
    uint64_t hi = (uint64_t)kat[k].ctr[3] << 32 | kat[k].ctr[2];
    uint64_t seed = (uint64_t)kat[k].key[1] << 32 | kat[k].key[0];
    uint32_t out[4];
    mf_philox(seed, lo, hi, out);
    CHECK(out[0] == kat[k].out[0] && out[1] == kat[k].out[1] && out[2] == kat[k].out[2] &&
          out[3] == kat[k].out[3]);
  }
}

static void test_state(void) {
  uint64_t seed, offset;
  mf_rng_get_state(&seed, &offset);
  CHECK(seed == 67280421310721ull && offset == 0); /* torch's default, before any use */

  mf_manual_seed(42);
  mf_rng_get_state(&seed, &offset);
  CHECK(seed == 42 && offset == 0);
  CHECK(mf_rng_reserve(10) == 0);
  CHECK(mf_rng_reserve(5) == 10);
  mf_rng_get_state(&seed, &offset);
  CHECK(offset == 15);
  mf_rng_set_state(7, 1000);
  CHECK(mf_rng_reserve(1) == 1000);

  CHECK(mf_rng_blocks(MF_F32, 0) == 0);
  CHECK(mf_rng_blocks(MF_F32, 1) == 1 && mf_rng_blocks(MF_F32, 4) == 1);
  CHECK(mf_rng_blocks(MF_F32, 5) == 2 && mf_rng_blocks(MF_F64, 5) == 3);

  /* a call of n float32 numbers moves the offset by ceil(n/4); float64 by ceil(n/2) */
  int64_t n = 1001;
  mf_tensor *t;
  mf_manual_seed(1);
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &t));
  mf_release(t);
  mf_rng_get_state(&seed, &offset);
  CHECK(offset == 251);
  CHECK_OK(mf_randn(1, &n, MF_F64, NULL, &t));
  mf_release(t);
  mf_rng_get_state(&seed, &offset);
  CHECK(offset == 251 + 501);
}

static double u24(uint32_t w) { return (double)(w >> 8) * 0x1p-24; }
static double u53(uint32_t lo, uint32_t hi) {
  return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}

/* the numbering in random.c, computed here from mf_philox alone */
static void test_numbering(void) {
  const uint64_t seed = 0x123456789abcdefull;
  const int64_t n = 1003; /* not a multiple of 4: the last block is partly used */
  for (int normal = 0; normal < 2; normal++) {
    for (int f64 = 0; f64 < 2; f64++) {
      mf_dtype dt = f64 ? MF_F64 : MF_F32;
      mf_rng_set_state(seed, 77);
      mf_tensor *t;
      CHECK_OK((normal ? mf_randn : mf_rand)(1, &n, dt, NULL, &t));
      double *v = malloc((size_t)n * sizeof *v);
      CHECK_OK(mf_to_host(t, MF_F64, v));
      int bad = 0;
      for (int64_t i = 0; i < n; i++) {
        uint32_t w[4];
        double want;
        if (!normal && !f64) {
          mf_philox(seed, 77 + (uint64_t)(i / 4), 0, w);
          want = u24(w[i % 4]);
        } else if (!normal) {
          mf_philox(seed, 77 + (uint64_t)(i / 2), 0, w);
          want = u53(w[2 * (i % 2)], w[2 * (i % 2) + 1]);
        } else {
          int64_t k = i / 2; /* pair */
          double u1, u2;
          if (!f64) {
            mf_philox(seed, 77 + (uint64_t)(k / 2), 0, w);
            int j = 2 * (int)(k % 2);
            u1 = (double)((w[j] >> 8) + 1) * 0x1p-24;
            u2 = u24(w[j + 1]);
          } else {
            mf_philox(seed, 77 + (uint64_t)k, 0, w);
            u1 = 1.0 - u53(w[0], w[1]);
            u2 = u53(w[2], w[3]);
          }
          double r = sqrt(-2.0 * log(u1)), a = 2 * M_PI * u2;
          want = i % 2 ? r * sin(a) : r * cos(a);
          if (!f64) want = (float)want;
        }
        double tol = normal ? (f64 ? 1e-12 : 1e-6) * (1 + fabs(want)) : 0;
        if (!(fabs(v[i] - want) <= tol)) {
          if (!bad)
            fprintf(stderr, "numbering: normal %d f64 %d element %lld: %.17g, want %.17g\n", normal,
                    f64, (long long)i, v[i], want);
          bad++;
        }
      }
      CHECK(bad == 0);
      free(v);
      mf_release(t);
    }
  }
}

static void moments(const mf_tensor *t, double *mean, double *var, double *lo, double *hi) {
  int64_t n = mf_numel(t);
  double *v = malloc((size_t)n * sizeof *v);
  mf_to_host(t, MF_F64, v);
  double s = 0, s2 = 0;
  *lo = INFINITY;
  *hi = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    s += v[i];
    if (v[i] < *lo) *lo = v[i];
    if (v[i] > *hi) *hi = v[i];
  }
  *mean = s / (double)n;
  for (int64_t i = 0; i < n; i++) s2 += (v[i] - *mean) * (v[i] - *mean);
  *var = s2 / (double)(n - 1);
  free(v);
}

static void test_statistics(void) {
  int64_t shape[2] = {1000, 1000};
  mf_manual_seed(2024);
  for (int f64 = 0; f64 < 2; f64++) {
    mf_dtype dt = f64 ? MF_F64 : MF_F32;
    mf_tensor *u, *z;
    double mean, var, lo, hi;
    CHECK_OK(mf_rand(2, shape, dt, NULL, &u));
    moments(u, &mean, &var, &lo, &hi);
    /* sd of the mean of 1M uniforms: 0.00029; of the variance: 0.00007 */
    CHECK_CLOSE(mean, 0.5, 0.0015, 0);
    CHECK_CLOSE(var, 1.0 / 12, 0.0005, 0);
    CHECK(lo >= 0 && hi < 1 && lo < 1e-4 && hi > 1 - 1e-4);
    CHECK_OK(mf_randn(2, shape, dt, NULL, &z));
    moments(z, &mean, &var, &lo, &hi);
    CHECK_CLOSE(mean, 0, 0.005, 0);
    CHECK_CLOSE(var, 1, 0.01, 0);
    CHECK(isfinite(lo) && isfinite(hi) && lo < -4 && hi > 4 && lo > -7 && hi < 7);
    mf_release(u);
    mf_release(z);
  }
}

static bool same_tensors(const mf_tensor *a, const mf_tensor *b) {
  int64_t n = mf_numel(a);
  if (n != mf_numel(b) || a->dtype != b->dtype) return false;
  size_t bytes = (size_t)n * mf_dtype_size(a->dtype);
  return memcmp(mf_data(a), mf_data(b), bytes) == 0;
}

static void test_reproducible(void) {
  int64_t n = 300001;
  mf_tensor *a, *b, *c, *d;
  mf_manual_seed(99);
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &a));
  CHECK_OK(mf_randn(1, &n, MF_F32, NULL, &b));
  mf_manual_seed(99);
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &c));
  CHECK_OK(mf_randn(1, &n, MF_F32, NULL, &d));
  CHECK(same_tensors(a, c) && same_tensors(b, d));
  CHECK(!same_tensors(a, b));
  mf_release(c);
  mf_release(d);

  /* the same numbers whatever the thread count */
  int nt = mf_get_num_threads();
  mf_set_num_threads(1);
  mf_manual_seed(99);
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &c));
  CHECK_OK(mf_randn(1, &n, MF_F32, NULL, &d));
  CHECK(same_tensors(a, c) && same_tensors(b, d));
  mf_set_num_threads(nt);
  mf_release(c);
  mf_release(d);

  /* restoring a saved state resumes the stream */
  uint64_t seed, offset;
  mf_rng_get_state(&seed, &offset);
  CHECK_OK(mf_rand(1, &n, MF_F64, NULL, &c));
  mf_rng_set_state(seed, offset);
  CHECK_OK(mf_rand(1, &n, MF_F64, NULL, &d));
  CHECK(same_tensors(c, d));
  mf_release(a);
  mf_release(b);
  mf_release(c);
  mf_release(d);

  /* other seeds give other numbers; seeds differing only in the high word too */
  mf_manual_seed(1);
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &a));
  mf_manual_seed(1 + (1ull << 32));
  CHECK_OK(mf_rand(1, &n, MF_F32, NULL, &b));
  CHECK(!same_tensors(a, b));
  mf_release(a);
  mf_release(b);

  CHECK_FAILS(mf_rand(1, &n, MF_I32, NULL, &a), MF_ERR_DTYPE, "float");
}

static void *reserve_many(void *arg) {
  (void)arg;
  for (int i = 0; i < 100000; i++) mf_rng_reserve(3);
  return NULL;
}

static void test_thread_safe_reserve(void) {
  mf_rng_set_state(5, 0);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, reserve_many, NULL);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  uint64_t seed, offset;
  mf_rng_get_state(&seed, &offset);
  CHECK(seed == 5 && offset == 4 * 100000 * 3);
}

/* randperm: every value once, reproducible under a seed, advancing the generator as documented */
static void test_randperm(void) {
  mf_tensor *p, *q;
  mf_manual_seed(11);
  CHECK_OK(mf_randperm(1000, NULL, &p));
  CHECK(p->dtype == MF_I64 && p->ndim == 1 && p->shape[0] == 1000);
  uint64_t seed, offset;
  mf_rng_get_state(&seed, &offset);
  CHECK(offset == mf_rng_blocks(MF_F64, 999));
  const int64_t *v = mf_data(p);
  static char seen[1000];
  int ok = 1, moved = 0;
  for (int i = 0; i < 1000; i++) {
    if (v[i] < 0 || v[i] >= 1000 || seen[v[i]])
      ok = 0;
    else
      seen[v[i]] = 1;
    moved += v[i] != i;
  }
  CHECK(ok && moved > 900);
  mf_manual_seed(11);
  CHECK_OK(mf_randperm(1000, NULL, &q));
  CHECK(memcmp(mf_data(q), v, 1000 * sizeof *v) == 0);
  mf_release(q);
  CHECK_OK(mf_randperm(0, NULL, &q));
  CHECK(q->shape[0] == 0);
  mf_release(q);
  CHECK_FAILS(mf_randperm(-1, NULL, &q), MF_ERR_ARG, "randperm");
  mf_release(p);
}

int main(void) {
  test_state(); /* first: it checks the default seed */
  test_randperm();
  test_known_answers();
  test_numbering();
  test_statistics();
  test_reproducible();
  test_thread_safe_reserve();
  return test_summary();
}
