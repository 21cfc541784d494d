/* alloc.c — the caching host allocator behind CPU storages: 64-byte aligned blocks, rounded up to
 * a size class and kept on a per-class free list when freed, so that a training step after the
 * first reuses its buffers instead of going back to the system (and taking page faults).
 *
 * Size classes: 64, 128, 192, 256 bytes, then four steps per power of two (for 2^e < n <= 2^(e+1):
 * 2^e * 1.25, 1.5, 1.75, 2), so a block wastes at most 25%. Every class is a multiple of 64.
 * A freed block goes on its class's list unless the cache would then hold more than the cap
 * (MOONFLOW_CPU_CACHE_MB, default 1024 MiB; 0 disables caching); ASan builds do not cache so that
 * use-after-free is still caught. One mutex guards the lists; the free-list link lives in the
 * freed block itself.
 */
#include <stdlib.h>

#include <pthread.h>

#include "internal.h"

#define ALIGN 64
#define NCLASS 240 /* 4 small classes + 4 per power of two from 2^8 to 2^63 */

#if defined(__SANITIZE_ADDRESS__)
#define MF_ALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ALLOC_ASAN 1
#endif
#endif

typedef struct block {
  struct block *next;
} block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_list[NCLASS];
static size_t cached_bytes;
static size_t cache_cap;
static int cap_known;

/* The class index of n bytes and its rounded size; -1 when n is too large to round. */
static int size_class(size_t n, size_t *rounded) {
  if (n <= 256) {
    size_t k = n == 0 ? 1 : (n + 63) / 64; /* 1..4 */
    *rounded = k * 64;
    return (int)k - 1;
  }
  if (n > ((size_t)1 << (sizeof(size_t) * 8 - 1))) return -1;
  int e = (int)(sizeof(unsigned long long) * 8) - 1 - __builtin_clzll((unsigned long long)(n - 1));
  /* 2^e < n <= 2^(e+1), e >= 8 */
  size_t base = (size_t)1 << e, step = base >> 2;
  size_t k = (n - base + step - 1) / step; /* 1..4 */
  *rounded = base + k * step;
  return 4 + (e - 8) * 4 + (int)(k - 1);
}

static size_t read_cap(void) {
#ifdef MF_ALLOC_ASAN
  return 0;
#else
  const char *s = getenv("MOONFLOW_CPU_CACHE_MB");
  if (s && *s) {
    char *end;
    unsigned long long mb = strtoull(s, &end, 10);
    if (end != s) return (size_t)mb << 20;
  }
  return (size_t)1024 << 20;
#endif
}

void *mf_host_alloc(size_t nbytes) {
  size_t rounded;
  int c = size_class(nbytes, &rounded);
  if (c < 0) {
    mf_fail(MF_ERR_MEMORY, "out of memory: asked for %zu bytes", nbytes);
    return NULL;
  }
  pthread_mutex_lock(&lock);
  block *b = free_list[c];
  if (b) {
    free_list[c] = b->next;
    cached_bytes -= rounded;
  }
  pthread_mutex_unlock(&lock);
  if (b) return b;
  void *p = aligned_alloc(ALIGN, rounded);
  if (!p) {
    mf_host_alloc_trim(); /* give the cache back and try once more */
    p = aligned_alloc(ALIGN, rounded);
  }
  if (!p) mf_fail(MF_ERR_MEMORY, "out of memory: asked for %zu bytes", nbytes);
  return p;
}

void mf_host_free(void *ptr, size_t nbytes) {
  if (!ptr) return;
  size_t rounded;
  int c = size_class(nbytes, &rounded);
  if (c >= 0) {
    pthread_mutex_lock(&lock);
    if (!cap_known) {
      cache_cap = read_cap();
      cap_known = 1;
    }
    if (cached_bytes + rounded <= cache_cap) {
      block *b = ptr;
      b->next = free_list[c];
      free_list[c] = b;
      cached_bytes += rounded;
      ptr = NULL;
    }
    pthread_mutex_unlock(&lock);
  }
  free(ptr);
}

void mf_host_alloc_trim(void) {
  block *lists[NCLASS];
  pthread_mutex_lock(&lock);
  for (int c = 0; c < NCLASS; c++) {
    lists[c] = free_list[c];
    free_list[c] = NULL;
  }
  cached_bytes = 0;
  pthread_mutex_unlock(&lock);
  for (int c = 0; c < NCLASS; c++) {
    for (block *b = lists[c], *next; b; b = next) {
      next = b->next;
      free(b);
    }
  }
}
