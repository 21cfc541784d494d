/* openblas_peak.c — OpenBLAS's own float32 GEMM rate: times cblas_sgemm (C = A B, row-major,
 * n x n) directly, with no library in between, as the reference for bench/matmul.lua.
 *
 *   openblas_peak THREADS MIN_SECONDS SAMPLES N...
 *
 * Each sample repeats the call until MIN_SECONDS have passed; the best sample wins. Prints one
 * line per size: `result impl=openblas bench=matmul n=N threads=T seconds=S gflops=G`, the format
 * bench/report.py reads. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void fill(float *x, size_t n, unsigned *seed) {
  for (size_t i = 0; i < n; i++) {
    *seed = *seed * 1664525u + 1013904223u;
    x[i] = (float)(*seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f; /* uniform in [-1, 1) */
  }
}

/* Seconds per call, best of `samples`, each sample at least `min_s` long. */
static double time_sgemm(int n, const float *a, const float *b, float *c, double min_s,
                         int samples) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  double t0 = now();
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
  double one = now() - t0;
  int reps = one > 0 ? (int)(min_s / one) + 1 : 1;
  double best = one;
  for (int s = 0; s < samples; s++) {
    t0 = now();
    for (int r = 0; r < reps; r++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double t = (now() - t0) / reps;
    if (t < best) best = t;
  }
  return best;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s THREADS MIN_SECONDS SAMPLES N...\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]);
  double min_s = atof(argv[2]);
  int samples = atoi(argv[3]);
  openblas_set_num_threads(threads);
  unsigned seed = 42;
  for (int i = 4; i < argc; i++) {
    int n = atoi(argv[i]);
    size_t nn = (size_t)n * (size_t)n;
    float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
    if (!a || !b || !c) {
      fprintf(stderr, "openblas_peak: out of memory for n=%d\n", n);
      free(a), free(b), free(c);
      return 1;
    }
    fill(a, nn, &seed);
    fill(b, nn, &seed);
    double s = time_sgemm(n, a, b, c, min_s, samples);
    printf("result impl=openblas bench=matmul n=%d threads=%d seconds=%.6e gflops=%.2f\n", n,
           openblas_get_num_threads(), s, 2.0 * n * (double)n * n / s * 1e-9);
    fflush(stdout);
    free(a), free(b), free(c);
  }
  return 0;
}
