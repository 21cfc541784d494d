/* test_cuda.c — CPU/GPU parity of the CUDA backend: every op the GPU kernel table has is run on
 * the same inputs on both devices and the results compared with a per-op tolerance (exact for
 * integer results, copies, rand and the dropout mask), on broadcast and strided views, for every
 * dtype; float16/bfloat16 against float32 on inputs they hold exactly; backward through autograd
 * on a small network; the fused optimizer steps; the caching allocator's statistics and memory cap.
 *
 * Without a GPU (or without the CUDA backend) it checks that asking for one is a clear error and
 * that the CUDA knobs are harmless, prints "# skipped: no CUDA device" and, after the usual
 * `# passed N failed M`, a line `# skipped N` with the number of parity groups not run.
 *
 * Either way it first checks, in child processes, that CUDA_VISIBLE_DEVICES="" or "-1" keeps the
 * backend's library from being loaded at all (and that CUDA is then unavailable, saying why), and
 * that the CUDA backend is loaded lazily: no CUDA library is mapped until CUDA is asked for; then,
 * in a CUDA build, that its library was found and loaded. Last, on a GPU, the reservation that a
 * Session's allow_growth = false makes.
 */
#define _POSIX_C_SOURCE 200809L /* setenv, fork */
#include <sys/wait.h>
#include <unistd.h>

#include "test_cuda.h"

static const mf_dtype cpu_dtypes[] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8, MF_BOOL};
#define NCPU_DTYPES 6

static double ftol(mf_dtype dt) { return dt == MF_F32 ? 2e-6 : dt == MF_F64 ? 1e-13 : 0; }

/* ---- lazy loading ---------------------------------------------------------------------------- */

/* Whether a file whose name contains `name` is mapped into this process. */
static bool mapped(const char *name) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[1024];
  bool found = false;
  if (!f) return false;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, name) != NULL;
  fclose(f);
  return found;
}

/* In a child process with CUDA_VISIBLE_DEVICES = v: no GPU, every CUDA call answers without the
 * backend's library (nor cudart) ever being mapped, and the reasons name the variable. Returns the
 * child's failures. */
static int hidden_child(const char *v) {
  setenv("CUDA_VISIBLE_DEVICES", v, 1);
  int before = t_failed;
  CHECK(mf_cuda_device_count() == 0);
  mf_device *d = NULL;
  CHECK_FAILS(mf_device_get("cuda:0", &d), MF_ERR_DEVICE, "hides every GPU");
#ifdef MF_HAVE_CUDA /* (without the backend: "built without the CUDA backend" instead) */
  CHECK(strstr(mf_error(), "no CUDA device is available") != NULL);
  CHECK(strstr(mf_error(), "the CUDA backend library was not loaded") != NULL);
#endif
  char why[1024];
  CHECK(mf_cuda_unavailable(0, why, sizeof why));
  char want[96];
  snprintf(want, sizeof want, "CUDA_VISIBLE_DEVICES='%s' hides every GPU", v);
  const char *at = strstr(why, want);
  CHECK(at != NULL);
  CHECK(at && strstr(at + 1, "CUDA_VISIBLE_DEVICES") == NULL &&
        strstr(why, "CUDA_VISIBLE_DEVICES") == at); /* said once */
#ifdef MF_HAVE_CUDA
  int rt = -1, drv = -1, dnn = -1;
  CHECK_FAILS(mf_cuda_versions(&rt, &drv, &dnn), MF_ERR_DEVICE, "hides every GPU");
#endif
  size_t bytes = 1;
  CHECK_OK(mf_cuda_reserve_memory(-1, &bytes));
  CHECK(bytes == 0 && mf_cuda_memory_reserved(0) == 0);
  CHECK(!mapped("libmoonflow_cuda") && !mapped("libcudart") && !mapped("libcublas"));
  if (t_failed > before)
    fprintf(stderr, "CUDA_VISIBLE_DEVICES='%s': %s | %s\n", v, why, mf_error());
  return t_failed - before;
}

static void test_hidden(void) {
  static const char *values[] = {"", "-1", "-1,0"};
  for (int i = 0; i < 3; i++) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(hidden_child(values[i]) ? 1 : 0);
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
}

/* Called first: nothing of CUDA is loaded until the first mf_cuda_* call. */
static void test_lazy(void) {
  CHECK(!mapped("libcudart") && !mapped("libcublas") && !mapped("libmoonflow_cuda"));
  int n = mf_cuda_device_count();
  int rt = -1, drv = -1, dnn = -1;
  mf_status s = mf_cuda_versions(&rt, &drv, &dnn);
#ifdef MF_HAVE_CUDA
  /* the build folder's libmoonflow_cuda.so, next to this test */
  CHECK_OK(s);
  CHECK(rt >= 11000 && drv >= 0 && dnn >= 0);
#ifdef MF_CUDA_EMU /* the emulator (tests/cuda_emu) stands in for cudart */
  CHECK(mapped("libmoonflow_cuda") && !mapped("libcudart"));
#else
  CHECK(mapped("libmoonflow_cuda") && mapped("libcudart"));
#endif
#else
  CHECK_FAILS(s, MF_ERR_DEVICE, "without the CUDA backend");
  CHECK(rt == 0 && drv == 0 && dnn == 0 && n == 0);
  CHECK(!mapped("libcudart"));
#endif
  char name[64];
  size_t bytes;
  int major, minor;
  CHECK_FAILS(mf_cuda_device_info(n, name, sizeof name, &bytes, &major, &minor), MF_ERR_DEVICE,
              "cuda:");
  CHECK(bytes == 0 && major == 0 && minor == 0);
}

/* ---- without a GPU -----------------------------------------------------------------------------
 */

static void test_no_device(void) {
  mf_device *d = NULL;
  CHECK_FAILS(mf_device_get("cuda:0", &d), MF_ERR_DEVICE, "cuda:0");
  CHECK(d == NULL);
  CHECK(strstr(mf_error(), "no CUDA device") || strstr(mf_error(), "without the CUDA backend") ||
        strstr(mf_error(), "the CUDA backend library could not be loaded"));
  CHECK_FAILS(mf_device_get("/gpu:1", &d), MF_ERR_DEVICE, "cuda:1");
  CHECK_FAILS(mf_device_get("/device:GPU:0", &d), MF_ERR_DEVICE, "cuda:0");
  CHECK(mf_cuda_memory_allocated(0) == 0 && mf_cuda_max_memory_allocated(0) == 0);
  CHECK(mf_cuda_memory_reserved(-1) == 0);
  CHECK_FAILS(mf_cuda_set_memory_fraction(-1, 1.5), MF_ERR_ARG, "fraction");
  /* allow_growth = false without a GPU: nothing to reserve for every GPU; one GPU is an error */
  size_t bytes = 123;
  CHECK_OK(mf_cuda_reserve_memory(-1, &bytes));
  CHECK(bytes == 0);
  bytes = 123;
  CHECK_FAILS(mf_cuda_reserve_memory(0, &bytes), MF_ERR_DEVICE, "cuda:0");
  CHECK(bytes == 0);
  CHECK_FAILS(mf_cuda_reserve_memory(-2, &bytes), MF_ERR_ARG, "bad GPU index -2");
  CHECK(mf_cuda_memory_reserved(0) == 0);
  mf_cuda_empty_cache();
  bool was = mf_cuda_set_tf32(false);
  mf_cuda_set_tf32(was);
  int64_t shape[1] = {3};
  mf_tensor *t = NULL;
  CHECK_OK(mf_ones(1, shape, MF_F32, NULL, &t));
  CHECK(mf_numel(t) == 3); /* nothing broke */
  mf_release(t);
}

/* ---- elementwise -------------------------------------------------------------------------------
 */

static void test_binary(void) {
  int64_t sa[3] = {3, 4, 5}, sb[2] = {4, 1};
  for (int k = 0; k < NCPU_DTYPES; k++) {
    mf_dtype dt = cpu_dtypes[k];
    mf_tensor *a = make(3, sa, dt, V_REAL), *b = make(2, sb, dt, V_REAL);
    mf_tensor *ga = on_gpu(a), *gb = on_gpu(b), *at = NULL, *gat = NULL;
    CHECK_OK(mf_transpose(a, 0, 2, &at)); /* 5x4x3, strided */
    CHECK_OK(mf_transpose(ga, 0, 2, &gat));
    for (int op = MF_OP_ADD; op <= MF_OP_LOGICAL_OR; op++) {
      for (int v = 0; v < 2; v++) {
        const mf_tensor *x = v ? at : a, *gx = v ? gat : ga;
        int64_t s3[3] = {1, 1, 3};
        mf_tensor *y = NULL, *gy = NULL, *rc = NULL, *rg = NULL;
        if (v) { /* a (1, 1, 3) operand against the transposed view */
          mf_tensor *b3 = make(3, s3, dt, V_REAL);
          y = b3;
          gy = on_gpu(b3);
        } else {
          y = mf_retain(b);
          gy = mf_retain(gb);
        }
        mf_status sc = mf_binary((mf_op)op, x, y, &rc), sg = mf_binary((mf_op)op, gx, gy, &rg);
        char what[96];
        snprintf(what, sizeof what, "%s %s%s", mf_op_name((mf_op)op), mf_dtype_name(dt),
                 v ? " strided" : "");
        if (sc != MF_OK) {
          if (sg != sc) fprintf(stderr, "%s: cpu status %d, gpu %d\n", what, sc, sg);
          CHECK(sg == sc);
        } else {
          double tol = op == MF_OP_POW ? 4 * ftol(dt) : ftol(dt);
          SAME(what, rc, rg, tol, tol);
        }
        mf_release(rc);
        mf_release(rg);
        mf_release(y);
        mf_release(gy);
      }
    }
    mf_release(a);
    mf_release(b);
    mf_release(ga);
    mf_release(gb);
    mf_release(at);
    mf_release(gat);
  }
}

static void test_unary(void) {
  int64_t s[2] = {7, 9};
  for (int k = 0; k < NCPU_DTYPES; k++) {
    mf_dtype dt = cpu_dtypes[k];
    mf_tensor *a = make(2, s, dt, V_REAL), *ga = on_gpu(a), *at = NULL, *gat = NULL;
    CHECK_OK(mf_transpose(a, 0, 1, &at));
    CHECK_OK(mf_transpose(ga, 0, 1, &gat));
    for (int op = MF_OP_NEG; op <= MF_OP_CLAMP; op++) {
      for (int v = 0; v < 2; v++) {
        mf_tensor *rc = NULL, *rg = NULL;
        const mf_tensor *x = v ? at : a, *gx = v ? gat : ga;
        mf_status sc, sg;
        if (op == MF_OP_CLAMP) {
          sc = mf_clamp(x, -1.5, 2.25, &rc);
          sg = mf_clamp(gx, -1.5, 2.25, &rg);
        } else {
          sc = mf_unary((mf_op)op, x, &rc);
          sg = mf_unary((mf_op)op, gx, &rg);
        }
        char what[96];
        snprintf(what, sizeof what, "%s %s%s", mf_op_name((mf_op)op), mf_dtype_name(dt),
                 v ? " strided" : "");
        if (sc != MF_OK) {
          CHECK(sg == sc);
        } else {
          /* float32 exp/log/tanh/sigmoid: the CPU's vmath.h vs CUDA's libm, a few ulp */
          double tol = mf_dtype_is_float(rc->dtype) ? (rc->dtype == MF_F32 ? 1e-6 : 1e-14) : 0;
          SAME(what, rc, rg, tol, 4 * tol);
        }
        mf_release(rc);
        mf_release(rg);
      }
    }
    mf_release(a);
    mf_release(ga);
    mf_release(at);
    mf_release(gat);
  }
}

/* float16/bfloat16 against float32 on values both hold exactly */
static void test_halves(void) {
  int64_t s[2] = {6, 11};
  mf_dtype halves[2] = {MF_F16, MF_BF16};
  mf_tensor *a = make(2, s, MF_F32, V_EIGHTHS), *b = make(2, s, MF_F32, V_EIGHTHS);
  mf_tensor *ga = on_gpu(a), *gb = on_gpu(b);
  for (int h = 0; h < 2; h++) {
    double rt = halves[h] == MF_F16 ? 2e-3 : 1e-2;
    mf_tensor *ha = NULL, *hb = NULL;
    CHECK_OK(mf_cast(ga, halves[h], &ha));
    CHECK_OK(mf_cast(gb, halves[h], &hb));
    SAME("cast to half", a, ha, 0, 0);
    mf_op bops[] = {MF_OP_ADD, MF_OP_SUB, MF_OP_MUL, MF_OP_DIV, MF_OP_MAXIMUM, MF_OP_GT, MF_OP_EQ};
    for (size_t i = 0; i < sizeof bops / sizeof *bops; i++) {
      mf_tensor *rc = NULL, *rg = NULL;
      CHECK_OK(mf_binary(bops[i], a, b, &rc));
      CHECK_OK(mf_binary(bops[i], ha, hb, &rg));
      char what[64];
      snprintf(what, sizeof what, "%s %s", mf_op_name(bops[i]), mf_dtype_name(halves[h]));
      SAME(what, rc, rg, rt, rt);
      mf_release(rc);
      mf_release(rg);
    }
    mf_op uops[] = {MF_OP_NEG, MF_OP_ABS, MF_OP_EXP, MF_OP_TANH, MF_OP_SIGMOID, MF_OP_RELU};
    for (size_t i = 0; i < sizeof uops / sizeof *uops; i++) {
      mf_tensor *rc = NULL, *rg = NULL;
      CHECK_OK(mf_unary(uops[i], a, &rc));
      CHECK_OK(mf_unary(uops[i], ha, &rg));
      char what[64];
      snprintf(what, sizeof what, "%s %s", mf_op_name(uops[i]), mf_dtype_name(halves[h]));
      SAME(what, rc, rg, rt, rt);
      mf_release(rc);
      mf_release(rg);
    }
    mf_tensor *rc = NULL, *rg = NULL;
    CHECK_OK(mf_reduce(MF_OP_SUM, a, 1, false, &rc));
    CHECK_OK(mf_reduce(MF_OP_SUM, ha, 1, false, &rg));
    SAME("sum half", rc, rg, rt, rt);
    mf_release(rc);
    mf_release(rg);
    CHECK_FAILS(mf_matmul(ha, hb, &rg), MF_ERR_SHAPE, "do not match"); /* 6x11 @ 6x11 */
    mf_tensor *bt = NULL, *hbt = NULL;
    CHECK_OK(mf_transpose(b, 0, 1, &bt));
    CHECK_OK(mf_transpose(hb, 0, 1, &hbt));
    CHECK_OK(mf_matmul(a, bt, &rc));
    CHECK_OK(mf_matmul(ha, hbt, &rg));
    SAME("matmul half", rc, rg, 0.05, rt);
    mf_release(rc);
    mf_release(rg);
    mf_release(bt);
    mf_release(hbt);
    mf_release(ha);
    mf_release(hb);
  }
  mf_release(a);
  mf_release(b);
  mf_release(ga);
  mf_release(gb);
}

/* ---- copies, fills, creation -------------------------------------------------------------------
 */

static void test_copy(void) {
  int64_t s[3] = {2, 5, 3};
  for (int i = 0; i < NCPU_DTYPES; i++) {
    mf_tensor *a = make(3, s, cpu_dtypes[i], V_SMALLINT), *ga = on_gpu(a);
    SAME("upload/download", a, ga, 0, 0);
    for (int j = 0; j < NCPU_DTYPES; j++) {
      mf_tensor *rc = NULL, *rg = NULL;
      CHECK_OK(mf_cast(a, cpu_dtypes[j], &rc));
      CHECK_OK(mf_cast(ga, cpu_dtypes[j], &rg));
      char what[64];
      snprintf(what, sizeof what, "cast %s -> %s", mf_dtype_name(cpu_dtypes[i]),
               mf_dtype_name(cpu_dtypes[j]));
      SAME(what, rc, rg, 0, 0);
      mf_release(rc);
      mf_release(rg);
    }
    /* a permuted view made contiguous, and copy_ into a strided view */
    int perm[3] = {2, 0, 1};
    mf_tensor *p = NULL, *gp = NULL, *cc = NULL, *cg = NULL;
    CHECK_OK(mf_permute(a, perm, &p));
    CHECK_OK(mf_permute(ga, perm, &gp));
    CHECK_OK(mf_contiguous(p, &cc));
    CHECK_OK(mf_contiguous(gp, &cg));
    SAME("contiguous", cc, cg, 0, 0);
    mf_tensor *zc = NULL, *zg = NULL, *vc = NULL, *vg = NULL;
    int64_t big[3] = {3, 2, 10};
    CHECK_OK(mf_zeros(3, big, MF_F64, NULL, &zc));
    CHECK_OK(mf_zeros(3, big, MF_F64, gpu, &zg));
    CHECK_OK(mf_slice(zc, 2, 0, 10, 2, &vc)); /* 3x2x5 like p, strided */
    CHECK_OK(mf_slice(zg, 2, 0, 10, 2, &vg));
    CHECK_OK(mf_copy_(vc, p));
    CHECK_OK(mf_copy_(vg, gp));
    SAME("copy_ strided", zc, zg, 0, 0);
    CHECK_OK(mf_fill_(vc, -2.5));
    CHECK_OK(mf_fill_(vg, -2.5));
    SAME("fill_ strided", zc, zg, 0, 0);
    mf_release(p);
    mf_release(gp);
    mf_release(cc);
    mf_release(cg);
    mf_release(zc);
    mf_release(zg);
    mf_release(vc);
    mf_release(vg);
    mf_release(a);
    mf_release(ga);
  }
  for (int i = 0; i < NCPU_DTYPES; i++) {
    mf_dtype dt = cpu_dtypes[i];
    mf_tensor *rc = NULL, *rg = NULL;
    int64_t s2[2] = {3, 4};
    CHECK_OK(mf_full(2, s2, 7.75, dt, NULL, &rc));
    CHECK_OK(mf_full(2, s2, 7.75, dt, gpu, &rg));
    SAME("full", rc, rg, 0, 0);
    mf_release(rc);
    mf_release(rg);
    double step = dt == MF_BOOL ? 1 : 0.75;
    CHECK_OK(mf_arange(-3, 9, step, dt, NULL, &rc));
    CHECK_OK(mf_arange(-3, 9, step, dt, gpu, &rg));
    SAME("arange", rc, rg, 0, 0);
    mf_release(rc);
    mf_release(rg);
    CHECK_OK(mf_eye(4, 3, dt, NULL, &rc));
    CHECK_OK(mf_eye(4, 3, dt, gpu, &rg));
    SAME("eye", rc, rg, 0, 0);
    mf_release(rc);
    mf_release(rg);
  }
}

/* Uploads return before the GPU has the bytes (transfer.cu: pinned staging buffers, each reused
 * once the copy out of it has passed). Many in a row, of growing sizes, each arrive whole: on the
 * emulator such a copy runs only at the next call (tests/cuda_emu/runtime.cc), so a staging buffer
 * written again too early would show here. Then the paths without staging: no pinned memory to be
 * had (the emulator's MOONFLOW_CUDA_EMU_NO_PINNED), and an upload larger than the staging limit. */
static void test_uploads(void) {
  enum { N = 11 };
  mf_tensor *c[N], *g[N];
  for (int k = 0; k < N; k++) {
    int64_t n[1] = {1000 + 9000 * (int64_t)k}; /* 4 KB .. 364 KB: buffers grow on the way */
    CHECK_OK(mf_arange(k, k + (double)n[0] * 0.5, 0.5, MF_F32, NULL, &c[k]));
    g[k] = on_gpu(c[k]);
  }
  for (int k = 0; k < N; k++) {
    SAME("upload in a row", c[k], g[k], 0, 0);
    mf_release(c[k]);
    mf_release(g[k]);
  }
  const int64_t sizes[2] = {(int64_t)1 << 19, (int64_t)3 << 20}; /* 2 MiB, 12 MiB of float32 */
  for (int k = 0; k < 2; k++) {
    if (k == 0) setenv("MOONFLOW_CUDA_EMU_NO_PINNED", "1", 1);
    mf_tensor *a = NULL, *ga;
    CHECK_OK(mf_arange(-7, -7 + (double)sizes[k], 1, MF_F32, NULL, &a));
    ga = on_gpu(a);
    unsetenv("MOONFLOW_CUDA_EMU_NO_PINNED");
    SAME(k == 0 ? "upload without pinned memory" : "upload past the staging limit", a, ga, 0, 0);
    mf_release(a);
    mf_release(ga);
  }
}

static void test_random(void) {
  int64_t sizes[3] = {1, 7, 100003};
  for (int k = 0; k < 3; k++) {
    for (int dd = 0; dd < 2; dd++) {
      mf_dtype dt = dd ? MF_F64 : MF_F32;
      for (int normal = 0; normal < 2; normal++) {
        mf_tensor *rc = NULL, *rg = NULL;
        mf_manual_seed(1234 + (uint64_t)k);
        CHECK_OK((normal ? mf_randn : mf_rand)(1, &sizes[k], dt, NULL, &rc));
        mf_manual_seed(1234 + (uint64_t)k);
        CHECK_OK((normal ? mf_randn : mf_rand)(1, &sizes[k], dt, gpu, &rg));
        double tol = !normal ? 0 : dt == MF_F32 ? 2e-6 : 1e-13;
        char what[64];
        snprintf(what, sizeof what, "%s %s n=%lld", normal ? "randn" : "rand", mf_dtype_name(dt),
                 (long long)sizes[k]);
        SAME(what, rc, rg, tol, tol);
        mf_release(rc);
        mf_release(rg);
      }
      mf_tensor *x = NULL, *gx = NULL, *mc = NULL, *mg = NULL;
      CHECK_OK(mf_zeros(1, &sizes[k], dt, NULL, &x));
      CHECK_OK(mf_zeros(1, &sizes[k], dt, gpu, &gx));
      mf_manual_seed(99);
      CHECK_OK(mf_dropout_mask(x, 0.3, &mc));
      mf_manual_seed(99);
      CHECK_OK(mf_dropout_mask(gx, 0.3, &mg));
      SAME("dropout mask", mc, mg, 0, 0);
      mf_release(x);
      mf_release(gx);
      mf_release(mc);
      mf_release(mg);
    }
  }
}

static void test_where(void) {
  int64_t sc[2] = {4, 1}, sa[2] = {1, 6}, sb[2] = {4, 6};
  for (int k = 0; k < NCPU_DTYPES; k++) {
    mf_dtype dt = cpu_dtypes[k];
    mf_tensor *c = make(2, sc, MF_BOOL, V_REAL), *a = make(2, sa, dt, V_REAL),
              *b = make(2, sb, dt, V_REAL);
    mf_tensor *gc = on_gpu(c), *ga = on_gpu(a), *gb = on_gpu(b), *rc = NULL, *rg = NULL;
    CHECK_OK(mf_where(c, a, b, &rc));
    CHECK_OK(mf_where(gc, ga, gb, &rg));
    SAME("where", rc, rg, 0, 0);
    mf_release(rc);
    mf_release(rg);
    mf_release(c);
    mf_release(a);
    mf_release(b);
    mf_release(gc);
    mf_release(ga);
    mf_release(gb);
  }
}

/* ---- reductions ---------------------------------------------------------------------------------
 */

static void test_reduce(void) {
  int64_t shapes[3][3] = {{4, 37, 5}, {3, 300, 1}, {2, 1, 1000}};
  int dims[4] = {0, 1, 2, MF_ALL_DIMS};
  for (int si = 0; si < 3; si++) {
    for (int k = 0; k < NCPU_DTYPES; k++) {
      mf_dtype dt = cpu_dtypes[k];
      mf_tensor *a = make(3, shapes[si], dt, V_REAL), *ga = on_gpu(a);
      for (int op = MF_OP_SUM; op <= MF_OP_VAR; op++) {
        for (int di = 0; di < 4; di++) {
          for (int keep = 0; keep < 2; keep++) {
            mf_tensor *rc = NULL, *rg = NULL;
            mf_status sc, sg;
            if (op == MF_OP_VAR) {
              sc = mf_var(a, dims[di], keep, keep, &rc); /* correction 0 or 1 */
              sg = mf_var(ga, dims[di], keep, keep, &rg);
            } else {
              sc = mf_reduce((mf_op)op, a, dims[di], keep, &rc);
              sg = mf_reduce((mf_op)op, ga, dims[di], keep, &rg);
            }
            char what[96];
            snprintf(what, sizeof what, "%s %s dim %d shape %d", mf_op_name((mf_op)op),
                     mf_dtype_name(dt), dims[di], si);
            /* float prod of 300 values can overflow float32 identically; sums in double */
            same_outcome(what, sc, rc, sg, rg, 1e-12);
          }
        }
      }
      mf_release(a);
      mf_release(ga);
    }
  }
  /* NaN: max/min propagate it, argmax/argmin point at the first one */
  int64_t s[2] = {3, 8};
  mf_tensor *a = make(2, s, MF_F32, V_REAL), *row = NULL, *el = NULL;
  CHECK_OK(mf_select(a, 0, 1, &row));
  CHECK_OK(mf_narrow(row, 0, 5, 1, &el));
  CHECK_OK(mf_fill_(el, NAN));
  mf_tensor *ga = on_gpu(a);
  mf_op ops[4] = {MF_OP_MAX, MF_OP_MIN, MF_OP_ARGMAX, MF_OP_ARGMIN};
  for (int i = 0; i < 4; i++) {
    mf_tensor *rc = NULL, *rg = NULL;
    CHECK_OK(mf_reduce(ops[i], a, 1, false, &rc));
    CHECK_OK(mf_reduce(ops[i], ga, 1, false, &rg));
    SAME("reduce with NaN", rc, rg, 0, 0);
    mf_release(rc);
    mf_release(rg);
  }
  mf_release(row);
  mf_release(el);
  mf_release(a);
  mf_release(ga);
}

/* ---- matmul -------------------------------------------------------------------------------------
 */

static void matmul_case(const char *what, mf_dtype dt, int na, const int64_t *sa, int nb,
                        const int64_t *sb, bool ta, bool tb, double tol) {
  mf_tensor *a = make(na, sa, dt, dt == MF_F16 || dt == MF_BF16 ? V_EIGHTHS : V_SMALLINT);
  mf_tensor *b = make(nb, sb, dt, V_SMALLINT);
  mf_tensor *ga = on_gpu(a), *gb = on_gpu(b);
  mf_tensor *x = NULL, *gx = NULL, *y = NULL, *gy = NULL, *rc = NULL, *rg = NULL;
  if (ta) { /* use the transpose of a stored transposed: a column-major operand */
    mf_tensor *t = NULL, *c = NULL;
    CHECK_OK(mf_transpose(a, -1, -2, &t));
    CHECK_OK(mf_contiguous(t, &c));
    CHECK_OK(mf_transpose(c, -1, -2, &x));
    mf_release(t);
    mf_release(c);
    mf_tensor *gt = NULL, *gc = NULL;
    CHECK_OK(mf_transpose(ga, -1, -2, &gt));
    CHECK_OK(mf_contiguous(gt, &gc));
    CHECK_OK(mf_transpose(gc, -1, -2, &gx));
    mf_release(gt);
    mf_release(gc);
  } else {
    x = mf_retain(a);
    gx = mf_retain(ga);
  }
  if (tb) {
    mf_tensor *t = NULL, *c = NULL;
    CHECK_OK(mf_transpose(b, -1, -2, &t));
    CHECK_OK(mf_contiguous(t, &c));
    CHECK_OK(mf_transpose(c, -1, -2, &y));
    mf_release(t);
    mf_release(c);
    mf_tensor *gt = NULL, *gc = NULL;
    CHECK_OK(mf_transpose(gb, -1, -2, &gt));
    CHECK_OK(mf_contiguous(gt, &gc));
    CHECK_OK(mf_transpose(gc, -1, -2, &gy));
    mf_release(gt);
    mf_release(gc);
  } else {
    y = mf_retain(b);
    gy = mf_retain(gb);
  }
  CHECK_OK(mf_matmul(x, y, &rc));
  CHECK_OK(mf_matmul(gx, gy, &rg));
  char w[128];
  snprintf(w, sizeof w, "matmul %s %s%s%s", what, mf_dtype_name(dt), ta ? " A^T" : "",
           tb ? " B^T" : "");
  SAME(w, rc, rg, tol, tol);
  mf_release(a);
  mf_release(b);
  mf_release(ga);
  mf_release(gb);
  mf_release(x);
  mf_release(gx);
  mf_release(y);
  mf_release(gy);
  mf_release(rc);
  mf_release(rg);
}

static void test_matmul(void) {
  mf_dtype dts[5] = {MF_F32, MF_F64, MF_I32, MF_I64, MF_U8};
  int64_t a2[2] = {5, 7}, b2[2] = {7, 3}, a4[4] = {2, 3, 4, 5}, b4[2] = {5, 6};
  int64_t a3[4] = {2, 1, 3, 4}, b3[4] = {1, 3, 4, 6}, v[1] = {7}, k0a[2] = {3, 0}, k0b[2] = {0, 4};
  bool was = mf_cuda_set_tf32(false);
  for (int i = 0; i < 5; i++) {
    /* small integers: exact in every dtype (uint8 wraps the same way on both) */
    for (int t = 0; t < 4; t++) matmul_case("5x7 @ 7x3", dts[i], 2, a2, 2, b2, t & 1, t & 2, 0);
    matmul_case("batched broadcast", dts[i], 4, a4, 2, b4, false, true, 0);
    matmul_case("batch broadcast both", dts[i], 4, a3, 4, b3, true, false, 0);
    matmul_case("vector @ matrix", dts[i], 1, v, 2, b2, false, false, 0);
    matmul_case("matrix @ vector", dts[i], 2, a2, 1, v, false, false, 0);
    matmul_case("K = 0", dts[i], 2, k0a, 2, k0b, false, false, 0);
  }
  mf_cuda_set_tf32(true); /* TF32 rounds the inputs to 10 bits: small integers stay exact */
  matmul_case("tf32", MF_F32, 4, a4, 2, b4, true, false, 0);
  /* random reals, large enough for tensor-core tiles */
  int64_t sa[2] = {130, 257}, sb[2] = {257, 65};
  for (int tf = 0; tf < 2; tf++) {
    mf_cuda_set_tf32(tf);
    mf_tensor *a = make(2, sa, MF_F32, V_REAL), *b = make(2, sb, MF_F32, V_REAL);
    mf_tensor *ga = on_gpu(a), *gb = on_gpu(b), *rc = NULL, *rg = NULL;
    CHECK_OK(mf_matmul(a, b, &rc));
    CHECK_OK(mf_matmul(ga, gb, &rg));
    SAME(tf ? "matmul tf32 reals" : "matmul f32 reals", rc, rg, tf ? 0.1 : 1e-3, tf ? 1e-2 : 1e-5);
    mf_release(a);
    mf_release(b);
    mf_release(ga);
    mf_release(gb);
    mf_release(rc);
    mf_release(rg);
  }
  mf_cuda_set_tf32(was);
}

/* ---- nn ops, optimizers, autograd
 * ----------------------------------------------------------------- */

static void test_softmax(void) {
  int64_t s[3] = {4, 10, 3};
  for (int dd = 0; dd < 2; dd++) {
    mf_dtype dt = dd ? MF_F64 : MF_F32;
    double tol = dd ? 1e-13 : 2e-6;
    mf_tensor *x = make(3, s, dt, V_REAL), *dy = make(3, s, dt, V_REAL);
    mf_tensor *gx = on_gpu(x), *gdy = on_gpu(dy);
    for (int dim = 1; dim <= 2; dim++) {
      for (int lg = 0; lg < 2; lg++) {
        mf_tensor *yc = NULL, *yg = NULL, *dc = NULL, *dg = NULL;
        CHECK_OK((lg ? mf_log_softmax : mf_softmax)(x, dim, &yc));
        CHECK_OK((lg ? mf_log_softmax : mf_softmax)(gx, dim, &yg));
        SAME(lg ? "log_softmax" : "softmax", yc, yg, tol, tol);
        CHECK_OK((lg ? mf_log_softmax_backward : mf_softmax_backward)(yc, dy, dim, &dc));
        CHECK_OK((lg ? mf_log_softmax_backward : mf_softmax_backward)(yg, gdy, dim, &dg));
        SAME(lg ? "log_softmax backward" : "softmax backward", dc, dg, tol, tol);
        mf_release(yc);
        mf_release(yg);
        mf_release(dc);
        mf_release(dg);
      }
    }
    mf_release(x);
    mf_release(dy);
    mf_release(gx);
    mf_release(gdy);
  }
}

static void test_optim(void) {
  int64_t s[1] = {1000};
  for (int which = 0; which < 6; which++) {
    mf_optim_hparams h = {.lr = 0.01,
                          .momentum = 0.9,
                          .dampening = 0.1,
                          .weight_decay = 0.01,
                          .beta1 = 0.9,
                          .beta2 = 0.999,
                          .eps = 1e-8,
                          .alpha = 0.99,
                          .lr_decay = 0.01,
                          .initial_accumulator_value = 0.1};
    h.nesterov = which == 0;
    if (h.nesterov) h.dampening = 0; /* Nesterov takes none */
    h.centered = which == 2;
    h.decoupled_weight_decay = which == 5;
    mf_tensor *p = make(1, s, MF_F32, V_REAL), *gp = on_gpu(p), *st[3], *gst[3];
    for (int k = 0; k < 3; k++) {
      CHECK_OK(mf_zeros(1, s, MF_F32, NULL, &st[k]));
      CHECK_OK(mf_zeros(1, s, MF_F32, gpu, &gst[k]));
    }
    for (int step = 1; step <= 3; step++) {
      h.step = step;
      mf_tensor *g = make(1, s, MF_F32, V_REAL), *gg = on_gpu(g);
      switch (which) {
      case 0:
        CHECK_OK(mf_sgd_step(p, g, st[0], &h));
        CHECK_OK(mf_sgd_step(gp, gg, gst[0], &h));
        break;
      case 1:
      case 5:
        CHECK_OK(mf_adam_step(p, g, st[0], st[1], &h));
        CHECK_OK(mf_adam_step(gp, gg, gst[0], gst[1], &h));
        break;
      case 2:
        CHECK_OK(mf_rmsprop_step(p, g, st[0], st[1], st[2], &h));
        CHECK_OK(mf_rmsprop_step(gp, gg, gst[0], gst[1], gst[2], &h));
        break;
      case 3:
        CHECK_OK(mf_adadelta_step(p, g, st[0], st[1], &h));
        CHECK_OK(mf_adadelta_step(gp, gg, gst[0], gst[1], &h));
        break;
      default:
        CHECK_OK(mf_adagrad_step(p, g, st[0], &h));
        CHECK_OK(mf_adagrad_step(gp, gg, gst[0], &h));
        break;
      }
      mf_release(g);
      mf_release(gg);
    }
    const char *names[6] = {"sgd", "adam", "rmsprop", "adadelta", "adagrad", "adamw"};
    SAME(names[which], p, gp, 1e-5, 1e-5);
    mf_release(p);
    mf_release(gp);
    for (int k = 0; k < 3; k++) {
      mf_release(st[k]);
      mf_release(gst[k]);
    }
  }
}

/* mf_optim_steps over 19 parameters (float32 ones, then float64 ones: three list calls on the GPU,
 * the first of 16) gives what the single steps give for each on the CPU, for Adam and for SGD
 * with momentum buffers; one wrong parameter fails the call and updates none. */
static void test_optim_list(void) {
  enum { N = 19 };
  mf_optim_hparams h = {
      .lr = 0.01, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
  mf_tensor *p[2][N], *g[2][N], *m[2][N], *v[2][N];
  for (int i = 0; i < N; i++) {
    int64_t s[1] = {1 + 97 * i}; /* sizes differ: blocks past a small tensor's end do nothing */
    mf_dtype dt = i < 13 ? MF_F32 : MF_F64;
    p[0][i] = make(1, s, dt, V_REAL);
    p[1][i] = on_gpu(p[0][i]);
    for (int d = 0; d < 2; d++) {
      CHECK_OK(mf_zeros(1, s, dt, d ? gpu : NULL, &m[d][i]));
      CHECK_OK(mf_zeros(1, s, dt, d ? gpu : NULL, &v[d][i]));
    }
  }
  for (int step = 1; step <= 3; step++) {
    h.step = step;
    for (int i = 0; i < N; i++) {
      int64_t s[1] = {1 + 97 * i};
      g[0][i] = make(1, s, p[0][i]->dtype, V_REAL);
      g[1][i] = on_gpu(g[0][i]);
      CHECK_OK(mf_adam_step(p[0][i], g[0][i], m[0][i], v[0][i], &h));
    }
    mf_tensor *const *st[3] = {m[1], v[1], NULL};
    CHECK_OK(mf_optim_steps(MF_OP_ADAM_STEP, N, p[1], (const mf_tensor *const *)g[1], st, &h));
    for (int i = 0; i < N; i++) {
      mf_release(g[0][i]);
      mf_release(g[1][i]);
    }
  }
  bool ok = true;
  for (int i = 0; i < N; i++) ok = same("adam_steps", p[0][i], p[1][i], 1e-5, 1e-5) && ok;
  CHECK(ok);
  /* a gradient of the wrong shape in the middle: an error naming it, nothing updated */
  mf_tensor *before = NULL, *bad = NULL;
  int64_t s3[1] = {3};
  CHECK_OK(mf_to_device(p[1][0], mf_cpu(), &before));
  CHECK_OK(mf_zeros(1, s3, MF_F32, gpu, &bad));
  const mf_tensor *gg[3] = {p[1][0], bad, p[1][2]};
  mf_tensor *ps[3] = {p[1][0], p[1][1], p[1][2]}, *ms[3] = {m[1][0], m[1][1], m[1][2]},
            *vs[3] = {v[1][0], v[1][1], v[1][2]};
  h.step = 4;
  mf_tensor *const *sts[3] = {ms, vs, NULL};
  CHECK(mf_optim_steps(MF_OP_ADAM_STEP, 3, ps, gg, sts, &h) != MF_OK);
  CHECK(strstr(mf_error(), "adam_step") != NULL);
  CHECK(same("adam_steps: nothing updated after an error", before, p[1][0], 0, 0));
  CHECK_OK(mf_optim_steps(MF_OP_ADAM_STEP, 0, NULL, NULL, NULL, &h));
  /* SGD with momentum: the buffers as the state list (v reused as them), two steps */
  mf_optim_hparams hs = {.lr = 0.05, .momentum = 0.9, .weight_decay = 0.001};
  for (int step = 1; step <= 2; step++) {
    hs.step = step;
    for (int i = 0; i < N; i++) {
      int64_t s[1] = {1 + 97 * i};
      g[0][i] = make(1, s, p[0][i]->dtype, V_REAL);
      g[1][i] = on_gpu(g[0][i]);
      CHECK_OK(mf_sgd_step(p[0][i], g[0][i], v[0][i], &hs));
    }
    mf_tensor *const *sst[3] = {v[1], NULL, NULL};
    CHECK_OK(mf_optim_steps(MF_OP_SGD_STEP, N, p[1], (const mf_tensor *const *)g[1], sst, &hs));
    for (int i = 0; i < N; i++) {
      mf_release(g[0][i]);
      mf_release(g[1][i]);
    }
  }
  ok = true;
  for (int i = 0; i < N; i++) ok = same("sgd steps", p[0][i], p[1][i], 1e-5, 1e-5) && ok;
  CHECK(ok);
  CHECK_FAILS(mf_optim_steps(MF_OP_ADD, 1, p[1], (const mf_tensor *const *)p[1], NULL, &hs),
              MF_ERR_ARG, "add is not an optimizer step");
  mf_release(before);
  mf_release(bad);
  for (int d = 0; d < 2; d++)
    for (int i = 0; i < N; i++) {
      mf_release(p[d][i]);
      mf_release(m[d][i]);
      mf_release(v[d][i]);
    }
}

/* loss = mean(log_softmax(tanh(x @ w) * 2 + b)) on both devices; the gradients of x, w, b */
static void test_autograd(void) {
  int64_t sx[2] = {6, 5}, sw[2] = {5, 4}, sb[1] = {4};
  mf_tensor *x = make(2, sx, MF_F64, V_REAL), *w = make(2, sw, MF_F64, V_REAL),
            *b = make(1, sb, MF_F64, V_REAL);
  mf_tensor *leaves[2][3] = {{x, w, b}, {on_gpu(x), on_gpu(w), on_gpu(b)}};
  mf_tensor *loss[2] = {NULL, NULL};
  for (int d = 0; d < 2; d++) {
    mf_tensor **l = leaves[d];
    for (int k = 0; k < 3; k++) CHECK_OK(mf_set_requires_grad(l[k], true));
    mf_tensor *m = NULL, *t = NULL, *two = NULL, *s = NULL, *z = NULL, *ls = NULL;
    CHECK_OK(mf_matmul(l[0], l[1], &m));
    CHECK_OK(mf_unary(MF_OP_TANH, m, &t));
    CHECK_OK(mf_scalar(2, MF_F64, true, d ? gpu : NULL, &two));
    CHECK_OK(mf_mul(t, two, &s));
    CHECK_OK(mf_add(s, l[2], &z));
    CHECK_OK(mf_log_softmax(z, 1, &ls));
    CHECK_OK(mf_reduce(MF_OP_MEAN, ls, MF_ALL_DIMS, false, &loss[d]));
    CHECK_OK(mf_backward(loss[d], NULL, false));
    mf_release(m);
    mf_release(t);
    mf_release(two);
    mf_release(s);
    mf_release(z);
    mf_release(ls);
  }
  SAME("autograd loss", loss[0], loss[1], 1e-12, 1e-12);
  const char *names[3] = {"grad x", "grad w", "grad b"};
  for (int k = 0; k < 3; k++) SAME(names[k], leaves[0][k]->grad, leaves[1][k]->grad, 1e-12, 1e-12);
  for (int d = 0; d < 2; d++) {
    mf_release(loss[d]);
    for (int k = 0; k < 3; k++) mf_release(leaves[d][k]);
  }
}

/* ---- devices, memory, errors
 * ---------------------------------------------------------------------- */

static void test_device(void) {
  int n = mf_cuda_device_count();
  mf_device *d = NULL, *d2 = NULL;
  CHECK_OK(mf_device_get("/gpu:0", &d));
  CHECK_OK(mf_device_get("cuda", &d2));
  CHECK(d == gpu && d2 == gpu);
  CHECK(strcmp(mf_device_name(gpu), "cuda:0") == 0 && mf_device_kind(gpu) == MF_DEV_CUDA);
  char spec[32];
  snprintf(spec, sizeof spec, "cuda:%d", n);
  CHECK_FAILS(mf_device_get(spec, &d), MF_ERR_DEVICE, "no such device");
  CHECK_OK(mf_device_synchronize(gpu));

  /* mixing devices is an error */
  int64_t s[1] = {4};
  mf_tensor *a = NULL, *b = NULL, *r = NULL;
  CHECK_OK(mf_ones(1, s, MF_F32, NULL, &a));
  CHECK_OK(mf_ones(1, s, MF_F32, gpu, &b));
  CHECK_FAILS(mf_add(a, b, &r), MF_ERR_DEVICE, "different devices");
  double v = 0;
  CHECK_FAILS(mf_item(b, &v), MF_ERR_SHAPE, "4 elements");
  int64_t idx[1] = {2};
  CHECK_OK(mf_get(b, idx, &v));
  CHECK(v == 1);
  mf_release(a);
  mf_release(b);

  /* the caching allocator: counts, reuse, the memory cap */
  mf_cuda_empty_cache();
  size_t base = mf_cuda_memory_allocated(0);
  int64_t big[1] = {1 << 20}; /* 4 MiB of float32 */
  CHECK_OK(mf_empty(1, big, MF_F32, gpu, &a));
  CHECK(mf_cuda_memory_allocated(0) >= base + ((size_t)4 << 20));
  CHECK(mf_cuda_max_memory_allocated(0) >= mf_cuda_memory_allocated(0));
  void *first = a->storage->data;
  mf_release(a);
  CHECK(mf_cuda_memory_allocated(0) == base);
  CHECK_OK(mf_empty(1, big, MF_F32, gpu, &a)); /* the same bucket: the cached block */
  CHECK(a->storage->data == first);
  mf_release(a);
  CHECK(mf_cuda_memory_reserved(0) >= ((size_t)4 << 20));
  CHECK_OK(mf_cuda_set_memory_fraction(0, 1e-6));
  int64_t huge[1] = {(int64_t)1 << 28}; /* 1 GiB */
  CHECK_FAILS(mf_empty(1, huge, MF_F32, gpu, &a), MF_ERR_MEMORY, "out of memory");
  CHECK(a == NULL);
  CHECK_OK(mf_cuda_set_memory_fraction(0, 1.0));
  CHECK_OK(mf_empty(1, huge, MF_F32, gpu, &a));
  mf_release(a);
  mf_cuda_empty_cache();
  CHECK(mf_cuda_memory_reserved(0) == 0 || mf_cuda_memory_allocated(0) > 0);
}

/* allow_growth = false: the reservation (one cudaMalloc carved by the allocator). Run last: it
 * stays until the process ends. */
static void test_reserve(void) {
  char name[256];
  size_t total = 0;
  int major, minor;
  CHECK_OK(mf_cuda_device_info(0, name, sizeof name, &total, &major, &minor));
  mf_cuda_empty_cache();
  CHECK_OK(mf_cuda_set_memory_fraction(0, 0.25));
  size_t before = mf_cuda_memory_reserved(0), bytes = 0;
  CHECK_OK(mf_cuda_reserve_memory(0, &bytes));
  printf("  reserved %.1f MiB of %.1f MiB (fraction 0.25)\n", (double)bytes / 1048576.0,
         (double)total / 1048576.0);
  CHECK(bytes > ((size_t)64 << 20) && bytes <= total / 4);
  size_t held = mf_cuda_memory_reserved(0);
  CHECK(held >= bytes && held <= before + bytes);
  size_t again = 0;
  CHECK_OK(mf_cuda_reserve_memory(0, &again)); /* a second call keeps the first */
  CHECK(again == bytes && mf_cuda_memory_reserved(0) == held);
  /* 64 MiB blocks (a bucket size exactly) until the arena is full: no cudaMalloc, then a clear
   * error naming the reservation */
  enum { MAXB = 4096 };
  static mf_tensor *blocks[MAXB];
  int64_t s64[1] = {(int64_t)1 << 24}; /* 64 MiB of float32 */
  int m = 0;
  mf_status st = MF_OK;
  while (m < MAXB && (st = mf_empty(1, s64, MF_F32, gpu, &blocks[m])) == MF_OK) m++;
  CHECK(st == MF_ERR_MEMORY);
  CHECK(strstr(mf_error(), "reserved up front (allow_growth = false)") != NULL);
  CHECK(strstr(mf_error(), "free on the GPU") != NULL);
  if (st != MF_ERR_MEMORY) fprintf(stderr, "reserve: %s\n", mf_error());
  CHECK(m >= 1 && (size_t)m * ((size_t)64 << 20) <= bytes);
  CHECK(mf_cuda_memory_reserved(0) == held); /* all carved from the arena */
  for (int i = 0; i < m; i++) mf_release(blocks[i]);
  /* one block of 3/4 of what they took: only the freed blocks merged back give a piece that large
   */
  mf_tensor *one = NULL;
  int64_t s3[1] = {(int64_t)m * 3 * ((int64_t)1 << 22)};
  CHECK_OK(mf_empty(1, s3, MF_F32, gpu, &one));
  mf_release(one);
  int64_t huge[1] = {(int64_t)(bytes / 4) + 1}; /* more than the arena */
  CHECK_FAILS(mf_empty(1, huge, MF_F32, gpu, &one), MF_ERR_MEMORY, "out of memory");
  mf_cuda_empty_cache(); /* cached arena blocks go back to the arena, not to the driver */
  CHECK(mf_cuda_memory_reserved(0) == held);
  CHECK_OK(mf_cuda_set_memory_fraction(0, 1.0));
}

int main(void) {
  test_hidden(); /* before anything loads CUDA here: children inherit nothing of it */
  test_lazy();
  int n = mf_cuda_device_count();
  if (n == 0) {
    test_no_device();
    printf("# skipped: no CUDA device\n");
    int r = test_summary();
    printf("# skipped %d\n", 14);
    return r;
  }
  if (mf_device_get("cuda:0", &gpu) != MF_OK) {
    fprintf(stderr, "cuda:0: %s\n", mf_error());
    t_failed++;
    return test_summary();
  }
  printf("# testing on %s (%d CUDA device%s)\n", mf_device_name(gpu), n, n == 1 ? "" : "s");
  test_device();
  test_binary();
  test_unary();
  test_halves();
  test_copy();
  test_uploads();
  test_random();
  test_where();
  test_reduce();
  test_matmul();
  test_softmax();
  test_optim();
  test_optim_list();
  test_autograd();
  test_reserve();
  return test_summary();
}
