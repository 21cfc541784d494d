/* test_threads.c — the thread pool (every index covered exactly once for many n / grain / thread
 * counts, chunk sizes, nested and concurrent calls, the thread-count settings and OpenBLAS's
 * matching count, wake-up latency) and the caching host allocator (alignment, size classes,
 * reuse, zero-byte blocks, use from several threads). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"
#include "test.h"

int openblas_get_num_threads(void);

typedef struct {
  atomic_int *count;
  atomic_llong min_chunk;
  atomic_int calls;
  int64_t n;
} cover;

static void mark(void *ctx, int64_t b, int64_t e) {
  cover *c = ctx;
  for (int64_t i = b; i < e; i++) atomic_fetch_add_explicit(&c->count[i], 1, memory_order_relaxed);
  long long len = e - b, m = atomic_load(&c->min_chunk);
  while (len < m && !atomic_compare_exchange_weak(&c->min_chunk, &m, len)) {}
  atomic_fetch_add(&c->calls, 1);
}

/* Runs parallel_for(n, grain) and checks coverage and chunking; returns the number of chunks. */
static int run_cover(int64_t n, int64_t grain) {
  cover c = {.count = calloc((size_t)(n ? n : 1), sizeof(atomic_int)), .n = n};
  atomic_init(&c.min_chunk, INT64_MAX);
  atomic_init(&c.calls, 0);
  mf_parallel_for(n, grain, mark, &c);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) bad += atomic_load(&c.count[i]) != 1;
  int calls = atomic_load(&c.calls);
  if (bad)
    fprintf(stderr, "n %lld grain %lld: %lld indices not covered once\n", (long long)n,
            (long long)grain, (long long)bad);
  CHECK(bad == 0);
  CHECK(n > 0 || calls == 0);
  if (n > 0) {
    CHECK(calls >= 1 && calls <= mf_get_num_threads());
    if (calls > 1) CHECK(atomic_load(&c.min_chunk) >= (grain < 1 ? 1 : grain));
    if (n < 2 * grain) CHECK(calls == 1);
  }
  free(c.count);
  return calls;
}

static void test_cover(void) {
  const int64_t ns[] = {0, 1, 2, 3, 7, 64, 100, 1000, 4097, 12345, 100000, 1000003};
  const int64_t grains[] = {0, 1, 3, 64, 1000, 100000, 1 << 30};
  const int threads[] = {1, 2, 3, 4, 8};
  for (size_t t = 0; t < sizeof threads / sizeof *threads; t++) {
    mf_set_num_threads(threads[t]);
    CHECK(mf_get_num_threads() == threads[t]);
    CHECK(openblas_get_num_threads() == threads[t]);
    int max_calls = 0;
    for (size_t i = 0; i < sizeof ns / sizeof *ns; i++)
      for (size_t g = 0; g < sizeof grains / sizeof *grains; g++) {
        int calls = run_cover(ns[i], grains[g]);
        if (calls > max_calls) max_calls = calls;
      }
    /* the work was split (as far as the pool has threads) somewhere */
    CHECK(max_calls >= 1 && max_calls <= threads[t]);
    if (threads[t] > 1) CHECK(max_calls > 1);
  }
}

/* a task that itself calls parallel_for: the inner call runs inline */
typedef struct {
  atomic_int *count;
  int64_t inner;
} nested;

static void inner_mark(void *ctx, int64_t b, int64_t e) {
  atomic_int *c = ctx;
  for (int64_t i = b; i < e; i++) atomic_fetch_add(&c[i], 1);
}

static void outer(void *ctx, int64_t b, int64_t e) {
  nested *n = ctx;
  for (int64_t i = b; i < e; i++) mf_parallel_for(n->inner, 1, inner_mark, n->count + i * n->inner);
}

static void test_nested(void) {
  mf_set_num_threads(2);
  nested n = {calloc(64 * 50, sizeof(atomic_int)), 50};
  mf_parallel_for(64, 1, outer, &n);
  int bad = 0;
  for (int i = 0; i < 64 * 50; i++) bad += atomic_load(&n.count[i]) != 1;
  CHECK(bad == 0);
  free(n.count);
}

/* several application threads calling into the pool at once */
static void *caller(void *arg) {
  int *bad = arg;
  for (int r = 0; r < 300; r++) {
    int64_t n = 1000 + r * 37;
    atomic_int *count = calloc((size_t)n, sizeof(atomic_int));
    mf_parallel_for(n, 100, inner_mark, count);
    for (int64_t i = 0; i < n; i++) *bad += atomic_load(&count[i]) != 1;
    free(count);
  }
  return NULL;
}

static void test_concurrent_callers(void) {
  mf_set_num_threads(3);
  pthread_t th[3];
  int bad[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, caller, &bad[i]);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  CHECK(bad[0] == 0 && bad[1] == 0 && bad[2] == 0);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* each chunk busy-waits 10 us: with both threads working a call takes ~10 us, alone ~20 us */
static void busy(void *ctx, int64_t b, int64_t e) {
  atomic_int *chunks = ctx;
  atomic_fetch_add(chunks, 1);
  (void)b;
  (void)e;
  double t0 = now();
  while (now() - t0 < 10e-6) {}
}

static void test_latency(void) {
  mf_set_num_threads(2);
  const int reps = 2000;
  atomic_int chunks;
  atomic_init(&chunks, 0);
  double t0 = now();
  for (int i = 0; i < reps; i++) mf_parallel_for(2, 1, busy, &chunks);
  double us = (now() - t0) / reps * 1e6;
  printf("# parallel_for of two 10 us chunks on 2 threads: %.1f us per call\n", us);
  CHECK(atomic_load(&chunks) == 2 * reps);
  CHECK(us < 1000); /* generous: the machine may be busy */

  /* thread counts changing between calls: workers are joined and restarted each time */
  int bad = 0;
  for (int i = 0; i < 200; i++) {
    mf_set_num_threads(1 + i % 4);
    atomic_int count[64];
    for (int k = 0; k < 64; k++) atomic_init(&count[k], 0);
    mf_parallel_for(64, 1, inner_mark, count);
    for (int k = 0; k < 64; k++) bad += atomic_load(&count[k]) != 1;
  }
  CHECK(bad == 0);
}

static void test_settings(void) {
  mf_set_num_threads(0); /* back to the default: MOONFLOW_NUM_THREADS, set in main */
  CHECK(mf_get_num_threads() == 3);
  const char *info = mf_blas_info();
  printf("# %s\n", info);
  CHECK(strstr(info, "OpenBLAS") != NULL && strstr(info, "3 threads") != NULL);
}

/* ---- host allocator ------------------------------------------------------------------------ */

static void test_alloc(void) {
  const size_t sizes[] = {0,   1,    63,   64,   65,      200,          256,
                          257, 1000, 4096, 5000, 1 << 20, (1 << 20) + 1};
  void *p[sizeof sizes / sizeof *sizes];
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    p[i] = mf_host_alloc(sizes[i]);
    CHECK(p[i] != NULL && ((uintptr_t)p[i] & 63) == 0);
    memset(p[i], 0xab, sizes[i]); /* the whole block is usable */
  }
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
    for (size_t j = 0; j < i; j++) CHECK(p[i] != p[j]);
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) mf_host_free(p[i], sizes[i]);

  /* a freed block is handed out again for a size in the same class (not under ASan) */
  void *a = mf_host_alloc(3000);
  mf_host_free(a, 3000);
  void *b = mf_host_alloc(2900);
  void *c = mf_host_alloc(2900);
  CHECK(b && c && b != c);
  mf_host_free(b, 2900);
  mf_host_free(c, 2900);
  mf_host_free(NULL, 10);
  mf_host_alloc_trim();

  void *huge = mf_host_alloc(SIZE_MAX - 100);
  CHECK(huge == NULL && strstr(mf_error(), "out of memory") != NULL);
}

static void *alloc_worker(void *arg) {
  int *bad = arg;
  unsigned seed = 1;
  void *keep[64] = {0};
  size_t size[64] = {0};
  for (int r = 0; r < 20000; r++) {
    int k = (int)(rand_r(&seed) % 64);
    if (keep[k]) {
      if (*(unsigned char *)keep[k] != (unsigned char)size[k]) (*bad)++;
      mf_host_free(keep[k], size[k]);
      keep[k] = NULL;
    } else {
      size[k] = 1 + rand_r(&seed) % 100000;
      keep[k] = mf_host_alloc(size[k]);
      if (!keep[k])
        (*bad)++;
      else
        memset(keep[k], (unsigned char)size[k], size[k]);
    }
  }
  for (int k = 0; k < 64; k++) mf_host_free(keep[k], size[k]);
  return NULL;
}

static void test_alloc_threads(void) {
  pthread_t th[4];
  int bad[4] = {0};
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, alloc_worker, &bad[i]);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  CHECK(bad[0] == 0 && bad[1] == 0 && bad[2] == 0 && bad[3] == 0);
  mf_host_alloc_trim();
}

int main(void) {
  setenv("MOONFLOW_NUM_THREADS", "3", 1); /* read when the pool first starts */
  CHECK(mf_get_num_threads() == 3);
  CHECK(openblas_get_num_threads() == 3);
  test_cover();
  test_nested();
  test_concurrent_callers();
  test_latency();
  test_settings();
  test_alloc();
  test_alloc_threads();
  return test_summary();
}
