/* threads.c — the one persistent thread pool of the process, and the BLAS thread setting.
 *
 * mf_parallel_for(n, grain, fn, ctx) splits [0, n) into k = min(nthreads, n / grain) chunks
 * (chunk j = [n*j/k, n*(j+1)/k), each >= grain items), publishes them as one job, and the caller
 * and the workers claim chunks until none is left; the caller returns when every chunk has run.
 * It runs inline (fn(ctx, 0, n)) when n < 2*grain, when the pool has one thread, when called from
 * inside a pool task (nested), or when another thread is already running a job.
 *
 * Wake-up: workers spin briefly on the job generation after each job (ops come in bursts), then
 * sleep on a condition variable; the caller signals only when someone sleeps. A claim is one CAS on
 * a word packing (generation, chunk count, next chunk), so a worker that wakes late for an old job
 * can never take a chunk of a newer one.
 *
 * Thread count: MOONFLOW_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may run
 * on. mf_set_num_threads(n) (n <= 0: that default) also sets OpenBLAS to n threads; it joins the
 * workers and the pool restarts lazily on the next parallel call. Call it between ops, not while a
 * parallel op runs on another thread.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pthread.h>

#include "internal.h"

void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
char *openblas_get_config(void);
char *openblas_get_corename(void);

#define MAX_THREADS 256
/* A worker spins this long after its last job before it sleeps. Every few pauses it yields, so a
 * worker that the scheduler put on the caller's CPU does not keep the caller off it. */
#define SPIN_NS 20000
#define YIELD_EVERY 64

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* claim word: generation (32 bits) | nchunks (16) | next chunk (16) */
#define CLAIM(gen, k, next) (((uint64_t)(uint32_t)(gen) << 32) | ((uint64_t)(k) << 16) | (next))

static struct {
  pthread_once_t once;
  atomic_int nthreads; /* wanted */
  int nworkers;        /* started workers (nthreads - 1 unless pthread_create failed) */
  int running;         /* workers started for the current nthreads */
  pthread_t tid[MAX_THREADS];
  pthread_mutex_t submit; /* one job at a time */
  pthread_mutex_t lock;   /* guards sleeping workers */
  pthread_cond_t wake;
  atomic_uint gen; /* bumped for every job (and for stop) */
  atomic_int sleepers;
  atomic_int stop;
  _Atomic uint64_t claim;
  atomic_int done; /* chunks finished in the current job */
  /* the current job: written before `claim` and `gen` are published */
  mf_range_fn fn;
  void *ctx;
  int64_t n;
} pool = {.once = PTHREAD_ONCE_INIT,
          .submit = PTHREAD_MUTEX_INITIALIZER,
          .lock = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER};

static _Thread_local int in_task;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int env_threads(const char *name) {
  const char *s = getenv(name);
  if (!s || !*s) return 0;
  long v = strtol(s, NULL, 10);
  return v > 0 ? (int)(v > MAX_THREADS ? MAX_THREADS : v) : 0;
}

static int default_threads(void) {
  int n = env_threads("MOONFLOW_NUM_THREADS");
  if (!n) n = env_threads("OMP_NUM_THREADS");
  if (n) return n;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int c = CPU_COUNT(&set);
    if (c > 0 && (cpus <= 0 || c < cpus)) cpus = c;
  }
  if (cpus < 1) cpus = 1;
  return cpus > MAX_THREADS ? MAX_THREADS : (int)cpus;
}

static void init_once(void) {
  pool.nthreads = default_threads();
  openblas_set_num_threads(pool.nthreads);
}

static void ensure_init(void) { pthread_once(&pool.once, init_once); }

/* Claims and runs chunks of job `gen` until none is left. */
static void run_chunks(unsigned gen) {
  uint64_t v = atomic_load_explicit(&pool.claim, memory_order_acquire);
  for (;;) {
    if ((uint32_t)(v >> 32) != gen) return;
    unsigned k = (unsigned)(v >> 16) & 0xffff, next = (unsigned)v & 0xffff;
    if (next >= k) return;
    if (!atomic_compare_exchange_weak_explicit(&pool.claim, &v, v + 1, memory_order_acq_rel,
                                               memory_order_acquire))
      continue;
    int64_t n = pool.n;
    int64_t b = (int64_t)((__int128)n * next / k), e = (int64_t)((__int128)n * (next + 1) / k);
    pool.fn(pool.ctx, b, e);
    atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
    v = atomic_load_explicit(&pool.claim, memory_order_acquire);
  }
}

/* arg: the generation when the worker was created, so that a job or stop published before the
 * thread first runs is not missed */
static void *worker(void *arg) {
  in_task = 1;
  unsigned seen = (unsigned)(uintptr_t)arg;
  for (;;) {
    unsigned g;
    uint64_t t0 = 0;
    for (unsigned spins = 1; (g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen;
         spins++) {
      if (spins % YIELD_EVERY) {
        cpu_relax();
        continue;
      }
      uint64_t t = now_ns();
      if (!t0)
        t0 = t;
      else if (t - t0 > SPIN_NS)
        break;
      sched_yield();
    }
    if (g == seen) {
      pthread_mutex_lock(&pool.lock);
      atomic_fetch_add(&pool.sleepers, 1);
      while ((g = atomic_load(&pool.gen)) == seen) pthread_cond_wait(&pool.wake, &pool.lock);
      atomic_fetch_sub(&pool.sleepers, 1);
      pthread_mutex_unlock(&pool.lock);
    }
    seen = g;
    if (atomic_load(&pool.stop)) break;
    run_chunks(g);
  }
  return NULL;
}

/* Bumps the generation and wakes up to `wake` sleeping workers (all when wake < 0). */
static void publish(int wake) {
  atomic_fetch_add(&pool.gen, 1);
  int sleeping = atomic_load(&pool.sleepers);
  if (sleeping > 0 && wake != 0) {
    pthread_mutex_lock(&pool.lock);
    if (wake < 0 || wake >= sleeping)
      pthread_cond_broadcast(&pool.wake);
    else
      for (int i = 0; i < wake; i++) pthread_cond_signal(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
  }
}

/* Starts the workers (called with `submit` held). Falls back to fewer on failure. */
static void start_workers(void) {
  int want = pool.nthreads - 1;
  int started = 0;
  atomic_store(&pool.stop, 0);
  void *g0 = (void *)(uintptr_t)atomic_load(&pool.gen);
  for (; started < want; started++) {
    if (pthread_create(&pool.tid[started], NULL, worker, g0) != 0) break;
  }
  pool.nworkers = started;
  pool.running = 1;
}

/* Joins the workers (called with `submit` held). */
static void stop_workers(void) {
  pool.running = 0;
  if (pool.nworkers == 0) return;
  atomic_store(&pool.stop, 1);
  publish(-1);
  for (int i = 0; i < pool.nworkers; i++) pthread_join(pool.tid[i], NULL);
  pool.nworkers = 0;
  atomic_store(&pool.stop, 0);
}

void mf_set_num_threads(int n) {
  ensure_init();
  if (n <= 0) n = default_threads();
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&pool.submit);
  if (n != pool.nthreads) {
    stop_workers();
    pool.nthreads = n;
  }
  pthread_mutex_unlock(&pool.submit);
  openblas_set_num_threads(n);
}

int mf_get_num_threads(void) {
  ensure_init();
  return pool.nthreads;
}

void mf_parallel_for(int64_t n, int64_t grain, mf_range_fn fn, void *ctx) {
  if (n <= 0) return;
  if (grain < 1) grain = 1;
  ensure_init();
  int nt = pool.nthreads;
  if (nt <= 1 || n < 2 * grain || in_task || pthread_mutex_trylock(&pool.submit) != 0) {
    fn(ctx, 0, n);
    return;
  }
  if (!pool.running) start_workers();
  int64_t k = n / grain;
  if (k > pool.nworkers + 1) k = pool.nworkers + 1;
  if (k <= 1) {
    pthread_mutex_unlock(&pool.submit);
    fn(ctx, 0, n);
    return;
  }
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
  unsigned gen = atomic_load(&pool.gen) + 1;
  atomic_store_explicit(&pool.claim, CLAIM(gen, k, 0), memory_order_release);
  publish((int)k - 1); /* gen becomes `gen`; the caller takes one chunk itself */
  in_task = 1;
  run_chunks(gen);
  in_task = 0;
  for (unsigned spins = 1; atomic_load_explicit(&pool.done, memory_order_acquire) < k; spins++) {
    if (spins % YIELD_EVERY)
      cpu_relax();
    else
      sched_yield();
  }
  pthread_mutex_unlock(&pool.submit);
}

/* ---- BLAS --------------------------------------------------------------------------------- */

const char *mf_blas_info(void) {
  static _Thread_local char buf[160];
  ensure_init();
  char version[64] = "OpenBLAS";
  const char *cfg = openblas_get_config();
  if (cfg) {
    /* "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64": keep the first two words */
    const char *sp = strchr(cfg, ' ');
    if (sp) sp = strchr(sp + 1, ' ');
    size_t len = sp ? (size_t)(sp - cfg) : strlen(cfg);
    if (len >= sizeof version) len = sizeof version - 1;
    memcpy(version, cfg, len);
    version[len] = 0;
  }
  const char *core = openblas_get_corename();
  int nt = openblas_get_num_threads();
  snprintf(buf, sizeof buf, "%s (%s, %d thread%s)", version, core ? core : "unknown", nt,
           nt == 1 ? "" : "s");
  return buf;
}
