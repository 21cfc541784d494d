/* random.c — the counter-based random number generator (Philox 4x32-10) and the global generator
 * state (seed, offset) that rand/randn draw from, on every device.
 *
 * Philox 4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC11),
 * with the constants of Random123, cuRAND and PyTorch. One call maps a 128-bit counter and a 64-bit
 * key to one 128-bit block (four 32-bit words). moonflow's arguments map onto Random123's words low
 * word first:
 *   ctr = { lo32(counter_lo), hi32(counter_lo), lo32(counter_hi), hi32(counter_hi) }
 *   key = { lo32(seed), hi32(seed) }
 * so mf_philox(0, 0, 0) is Random123's philox4x32_10({0,0,0,0}, {0,0}) = 6627e8d5 e169c58d ....
 *
 * The generator state is (seed, offset): offset counts the blocks handed out so far. An op that
 * draws numbers reserves the blocks it needs (mf_rng_reserve) and its kernel, on any device,
 * computes element i from block (offset + i / per_block) alone, with counter_hi = 0. This is the
 * contract every backend follows so that a seed gives the same numbers on CPU and GPU:
 *
 *   float32 rand   element i: w = word (i % 4) of block (offset + i / 4);
 *                  u = (w >> 8) * 2^-24                           in [0, 1), 24 bits
 *                  blocks used: ceil(n / 4)
 *   float64 rand   element i: block b = offset + i / 2, j = 2 * (i % 2);
 *                  u = (((uint64)word[j+1] << 32 | word[j]) >> 11) * 2^-53   in [0, 1), 53 bits
 *                  blocks used: ceil(n / 2)
 *   float32 randn  elements 2k, 2k+1 (k = i / 2) come from words 2(k%2), 2(k%2)+1 of block
 *                  (offset + k / 2), i.e. element i uses block (offset + i / 4) like rand:
 *                  u1 = ((w0 >> 8) + 1) * 2^-24 in (0, 1], u2 = (w1 >> 8) * 2^-24 in [0, 1)
 *                  r = sqrt(-2 ln u1), z[2k] = r cos(2 pi u2), z[2k+1] = r sin(2 pi u2)
 *                  (computed in float32 on the CPU: cpu/vmath.h); blocks used: ceil(n / 4)
 *   float64 randn  elements 2k, 2k+1 come from block (offset + k): u1 from words 0,1 and u2 from
 *                  words 2,3, each as the 53-bit uniform above, u1 = 1 - u (in (0, 1]);
 *                  same Box–Muller; blocks used: ceil(n / 2)
 * An odd n drops the second number of the last pair. mf_rng_blocks() below gives the count.
 * rand is bit-exact across backends; randn agrees to the rounding of log/sqrt/cos/sin.
 */
#include <pthread.h>

#include "internal.h"
#include "philox_math.h"

/* torch's default seed (c10::detail::default_rng_seed_val) */
#define MF_DEFAULT_SEED 67280421310721ull

void mf_philox(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi, uint32_t out[4]) {
  mf_philox_block(seed, counter_lo, counter_hi, out); /* philox_math.h, shared with the GPU */
}

/* ---- the global generator ------------------------------------------------------------------- */

static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t rng_seed = MF_DEFAULT_SEED;
static uint64_t rng_offset = 0;

void mf_manual_seed(uint64_t seed) {
  pthread_mutex_lock(&rng_lock);
  rng_seed = seed;
  rng_offset = 0;
  pthread_mutex_unlock(&rng_lock);
}

void mf_rng_get_state(uint64_t *seed, uint64_t *offset) {
  pthread_mutex_lock(&rng_lock);
  if (seed) *seed = rng_seed;
  if (offset) *offset = rng_offset;
  pthread_mutex_unlock(&rng_lock);
}

void mf_rng_set_state(uint64_t seed, uint64_t offset) {
  pthread_mutex_lock(&rng_lock);
  rng_seed = seed;
  rng_offset = offset;
  pthread_mutex_unlock(&rng_lock);
}

uint64_t mf_rng_reserve(uint64_t nblocks) {
  uint64_t seed;
  return mf_rng_draw(nblocks, &seed);
}

uint64_t mf_rng_draw(uint64_t nblocks, uint64_t *seed) {
  pthread_mutex_lock(&rng_lock);
  uint64_t first = rng_offset;
  *seed = rng_seed;
  rng_offset += nblocks;
  pthread_mutex_unlock(&rng_lock);
  return first;
}

/* The number of Philox blocks a rand/randn of n elements of dtype dt uses (see the table above):
 * ceil(n / 4) for 32-bit floats (float32, and float16/bfloat16 drawn as float32), ceil(n / 2) for
 * float64. */
uint64_t mf_rng_blocks(mf_dtype dt, int64_t n) {
  if (n <= 0) return 0;
  uint64_t per = dt == MF_F64 ? 2 : 4;
  return ((uint64_t)n + per - 1) / per;
}

/* A random permutation of 0..n-1 (int64): Fisher-Yates driven by 53-bit uniforms drawn as a float64
 * rand of n - 1 elements would be, so the generator advances by ceil((n - 1) / 2) blocks. */
mf_status mf_randperm(int64_t n, mf_device *dev, mf_tensor **out) {
  *out = NULL;
  if (n < 0) return mf_fail(MF_ERR_ARG, "randperm: n must be >= 0, got %lld", (long long)n);
  mf_tensor *p;
  MF_TRY(mf_empty(1, &n, MF_I64, NULL, &p));
  int64_t *v = mf_data(p);
  for (int64_t i = 0; i < n; i++) v[i] = i;
  uint64_t seed, offset = mf_rng_draw(n > 1 ? mf_rng_blocks(MF_F64, n - 1) : 0, &seed);
  uint32_t w[4];
  for (int64_t k = 0; k + 1 < n; k++) { /* draw k picks position j in [0, i] for i = n-1-k */
    if (k % 2 == 0) mf_philox(seed, offset + (uint64_t)k / 2, 0, w);
    const uint32_t *u = w + 2 * (k % 2);
    double r = (double)((((uint64_t)u[0] << 32) | u[1]) >> 11) * 0x1p-53;
    int64_t i = n - 1 - k, j = (int64_t)(r * (double)(i + 1));
    if (j > i) j = i;
    int64_t t = v[i];
    v[i] = v[j];
    v[j] = t;
  }
  if (!dev || mf_device_kind(dev) == MF_DEV_CPU) {
    *out = p;
    return MF_OK;
  }
  mf_status s = mf_to_device(p, dev, out);
  mf_release(p);
  return s;
}
