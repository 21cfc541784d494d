/* events.c — TensorBoard event files: CRC-32C, TFRecord framing, Event and Summary encoding
 * (scalars, histograms, images, text, graph bytes) and a writer that appends whole records to
 * `events.out.tfevents.<secs>.<host>` in a log directory. Also the mf_buf byte buffer that the
 * encoders share (protobuf.h).
 *
 * Layouts are in FORMATS.md ("Protobuf wire format", "TensorBoard event files"). Only the legacy
 * Summary.Value fields (simple_value, histo, image) and a string tensor for text are written:
 * every TensorBoard since 1.x reads them, including its Rust loader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "protobuf.h"

/* ---- mf_buf -----------------------------------------------------------------------------------
 */

mf_status mf_buf_append(mf_buf *b, const void *p, size_t n) {
  if (n == 0) return MF_OK;
  if (n > SIZE_MAX / 2 - b->len) return mf_fail(MF_ERR_MEMORY, "buffer: %zu bytes is too many", n);
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2;
    unsigned char *d = realloc(b->data, cap);
    if (!d) return mf_fail(MF_ERR_MEMORY, "buffer: out of memory growing to %zu bytes", cap);
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return MF_OK;
}

void mf_buf_free(mf_buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* ---- CRC-32C (Castagnoli), slicing by 8 ---------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    crc_table[0][i] = c;
  }
  for (int t = 1; t < 8; t++)
    for (int i = 0; i < 256; i++)
      crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

uint32_t mf_crc32c_update(uint32_t crc, const void *data, size_t n) {
  pthread_once(&crc_once, crc_init);
  const unsigned char *p = data;
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) { /* bytes in order, so this is endian-independent */
    uint32_t lo =
        c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
    c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF] ^
        crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
        crc_table[0][p[7]];
  }
  while (n--) c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xFF];
  return ~c;
}

uint32_t mf_crc32c(const void *data, size_t n) { return mf_crc32c_update(0, data, n); }

uint32_t mf_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u; }

/* ---- TFRecords ------------------------------------------------------------------------------ */

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

mf_status mf_tfrecord_append(mf_buf *out, const void *data, size_t n) {
  unsigned char head[12], tail[4];
  put_le(head, n, 8);
  put_le(head + 8, mf_crc32c_mask(mf_crc32c(head, 8)), 4);
  put_le(tail, mf_crc32c_mask(mf_crc32c(data, n)), 4);
  size_t len0 = out->len;
  mf_status s = mf_buf_append(out, head, 12);
  if (s == MF_OK) s = mf_buf_append(out, data, n);
  if (s == MF_OK) s = mf_buf_append(out, tail, 4);
  if (s != MF_OK) out->len = len0; /* never half a record */
  return s;
}

mf_status mf_tfrecord_next(const unsigned char *data, size_t n, size_t *pos,
                           const unsigned char **rec, size_t *rec_len) {
  size_t at = *pos;
  if (at > n || n - at < 12)
    return mf_fail(MF_ERR_IO, "tfrecord: truncated header at byte %zu (%zu bytes left)", at,
                   at > n ? 0 : n - at);
  uint64_t len = get_le(data + at, 8);
  uint32_t hcrc = (uint32_t)get_le(data + at + 8, 4);
  if (mf_crc32c_mask(mf_crc32c(data + at, 8)) != hcrc)
    return mf_fail(MF_ERR_IO, "tfrecord: length CRC mismatch at byte %zu", at);
  if (len > n - at - 12 || n - at - 12 - len < 4)
    return mf_fail(MF_ERR_IO, "tfrecord: truncated record at byte %zu (%llu bytes of data)", at,
                   (unsigned long long)len);
  const unsigned char *d = data + at + 12;
  uint32_t dcrc = (uint32_t)get_le(d + len, 4);
  if (mf_crc32c_mask(mf_crc32c(d, len)) != dcrc)
    return mf_fail(MF_ERR_IO, "tfrecord: data CRC mismatch in the record at byte %zu", at);
  *rec = d;
  *rec_len = len;
  *pos = at + 12 + len + 4;
  return MF_OK;
}

/* ---- Event and Summary messages ------------------------------------------------------------- */

/* Moves a finished writer's bytes onto the end of out. */
static mf_status finish(pb_writer *pb, mf_buf *out) {
  mf_status s = pb->status;
  if (s == MF_OK) s = mf_buf_append(out, pb->buf.data, pb->buf.len);
  mf_buf_free(&pb->buf);
  return s;
}

mf_status mf_event_encode(mf_buf *out, double wall_time, int64_t step, mf_event_kind kind,
                          const void *payload, size_t n) {
  if (kind != MF_EVENT_NONE && kind != MF_EVENT_FILE_VERSION && kind != MF_EVENT_GRAPH_DEF &&
      kind != MF_EVENT_SUMMARY)
    return mf_fail(MF_ERR_ARG, "event_encode: unknown event kind %d", (int)kind);
  pb_writer pb = {0};
  if (wall_time != 0) pb_double(&pb, 1, wall_time);
  if (step != 0) pb_int(&pb, 2, step);
  if (kind != MF_EVENT_NONE) pb_bytes(&pb, (int)kind, payload, n);
  return finish(&pb, out);
}

static mf_status check_tag(const char *fn, const char *tag) {
  return tag ? MF_OK : mf_fail(MF_ERR_ARG, "%s: tag is NULL", fn);
}

mf_status mf_summary_add_scalar(mf_buf *summary, const char *tag, float value) {
  MF_TRY(check_tag("summary scalar", tag));
  pb_writer pb = {0};
  size_t v = pb_begin(&pb, 1); /* Summary.value */
  pb_string(&pb, 1, tag);
  pb_float(&pb, 2, value); /* simple_value: a oneof member, written even when 0 */
  pb_end(&pb, v);
  return finish(&pb, summary);
}

/* TensorFlow's default histogram limits (tensorflow/core/lib/histogram/histogram.cc): 1e-12 grown
 * by 10% up to 1e20, mirrored, with 0 in the middle and +-DBL_MAX at the ends. */
static double *hist_limits;
static int hist_count;
static pthread_once_t hist_once = PTHREAD_ONCE_INIT;

static void hist_init(void) {
  int n = 0;
  for (double v = 1e-12; v < 1e20; v *= 1.1) n++;
  double *l = malloc(sizeof *l * (size_t)(2 * n + 3));
  if (!l) return;
  int k = 0;
  l[k++] = -DBL_MAX;
  double pos[1024];
  int m = 0;
  for (double v = 1e-12; v < 1e20 && m < 1024; v *= 1.1) pos[m++] = v;
  for (int i = m - 1; i >= 0; i--) l[k++] = -pos[i];
  l[k++] = 0.0;
  for (int i = 0; i < m; i++) l[k++] = pos[i];
  l[k++] = DBL_MAX;
  hist_limits = l;
  hist_count = k;
}

const double *mf_histogram_default_limits(int *count) {
  pthread_once(&hist_once, hist_init);
  if (count) *count = hist_count;
  return hist_limits;
}

/* The first limit >= v (the last for anything above). */
static int bucket_of(const double *lim, int n, double v) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (lim[mid] >= v)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

mf_status mf_summary_add_histogram(mf_buf *summary, const char *tag, const double *values,
                                   int64_t n) {
  MF_TRY(check_tag("summary histogram", tag));
  if (n < 0 || (n > 0 && !values))
    return mf_fail(MF_ERR_ARG, "summary histogram %s: bad values (n = %lld)", tag, (long long)n);
  int nl;
  const double *lim = mf_histogram_default_limits(&nl);
  if (!lim) return mf_fail(MF_ERR_MEMORY, "summary histogram %s: out of memory", tag);
  double *counts = calloc((size_t)nl, sizeof *counts);
  double *ol = malloc(sizeof *ol * (size_t)nl), *oc = malloc(sizeof *oc * (size_t)nl);
  if (!counts || !ol || !oc) {
    free(counts), free(ol), free(oc);
    return mf_fail(MF_ERR_MEMORY, "summary histogram %s: out of memory", tag);
  }
  double mn = INFINITY, mx = -INFINITY, num = 0, sum = 0, sq = 0;
  for (int64_t i = 0; i < n; i++) {
    double v = values[i];
    if (isnan(v)) continue;
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
    num += 1, sum += v, sq += v * v;
    counts[bucket_of(lim, nl, v)] += 1;
  }
  if (num == 0) mn = mx = 0; /* as TensorFlow reports an empty histogram */
  /* Runs of empty buckets collapse into one entry carrying the run's last limit (TensorFlow's
   * EncodeToProto without preserve_zero_buckets). */
  int k = 0;
  for (int i = 0; i < nl;) {
    double end = lim[i], c = counts[i];
    i++;
    if (c <= 0)
      while (i < nl && counts[i] <= 0) end = lim[i], c = counts[i], i++;
    ol[k] = end, oc[k] = c, k++;
  }
  pb_writer pb = {0};
  size_t v = pb_begin(&pb, 1);
  pb_string(&pb, 1, tag);
  size_t h = pb_begin(&pb, 5); /* histo */
  if (mn != 0) pb_double(&pb, 1, mn);
  if (mx != 0) pb_double(&pb, 2, mx);
  if (num != 0) pb_double(&pb, 3, num);
  if (sum != 0) pb_double(&pb, 4, sum);
  if (sq != 0) pb_double(&pb, 5, sq);
  pb_packed_doubles(&pb, 6, ol, (size_t)k);
  pb_packed_doubles(&pb, 7, oc, (size_t)k);
  pb_end(&pb, h);
  pb_end(&pb, v);
  free(counts), free(ol), free(oc);
  return finish(&pb, summary);
}

mf_status mf_summary_add_histogram_tensor(mf_buf *summary, const char *tag, const mf_tensor *t) {
  MF_TRY(check_tag("summary histogram", tag));
  if (!t) return mf_fail(MF_ERR_ARG, "summary histogram %s: tensor is NULL", tag);
  int64_t n = mf_numel(t);
  double *v = malloc(n ? (size_t)n * sizeof *v : 1);
  if (!v) return mf_fail(MF_ERR_MEMORY, "summary histogram %s: out of memory", tag);
  mf_status s = mf_to_host(t, MF_F64, v);
  if (s == MF_OK) s = mf_summary_add_histogram(summary, tag, v, n);
  free(v);
  return s;
}

mf_status mf_summary_add_image_encoded(mf_buf *summary, const char *tag, int height, int width,
                                       int channels, const void *encoded, size_t n) {
  MF_TRY(check_tag("summary image", tag));
  if (height <= 0 || width <= 0 || channels < 1 || channels > 4)
    return mf_fail(MF_ERR_ARG, "summary image %s: bad geometry %dx%dx%d (channels 1..4)", tag,
                   height, width, channels);
  pb_writer pb = {0};
  size_t v = pb_begin(&pb, 1);
  pb_string(&pb, 1, tag);
  size_t im = pb_begin(&pb, 4); /* image */
  pb_int(&pb, 1, height);
  pb_int(&pb, 2, width);
  pb_int(&pb, 3, channels); /* colorspace: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA */
  pb_bytes(&pb, 4, encoded, n);
  pb_end(&pb, im);
  pb_end(&pb, v);
  return finish(&pb, summary);
}

mf_status mf_summary_add_image(mf_buf *summary, const char *tag, const mf_tensor *image) {
  MF_TRY(check_tag("summary image", tag));
  mf_buf png = {0};
  int h = 0, w = 0, c = 0;
  mf_status s = mf_image_encode_png(image, &png, &h, &w, &c);
  if (s == MF_OK) s = mf_summary_add_image_encoded(summary, tag, h, w, c, png.data, png.len);
  mf_buf_free(&png);
  return s;
}

mf_status mf_summary_add_text(mf_buf *summary, const char *tag, const char *text, size_t n) {
  MF_TRY(check_tag("summary text", tag));
  if (!text && n) return mf_fail(MF_ERR_ARG, "summary text %s: text is NULL", tag);
  pb_writer pb = {0};
  size_t v = pb_begin(&pb, 1);
  pb_string(&pb, 1, tag);
  size_t t = pb_begin(&pb, 8);  /* tensor: TensorProto */
  pb_int(&pb, 1, 7);            /* dtype DT_STRING */
  size_t sh = pb_begin(&pb, 2); /* tensor_shape: [1] */
  size_t d = pb_begin(&pb, 2);
  pb_int(&pb, 1, 1);
  pb_end(&pb, d);
  pb_end(&pb, sh);
  pb_bytes(&pb, 8, text ? text : "", n); /* string_val */
  pb_end(&pb, t);
  size_t md = pb_begin(&pb, 9); /* metadata: SummaryMetadata */
  size_t pd = pb_begin(&pb, 1); /* plugin_data */
  pb_string(&pb, 1, "text");    /* plugin_name */
  pb_end(&pb, pd);
  pb_end(&pb, md);
  pb_end(&pb, v);
  return finish(&pb, summary);
}

/* ---- the writer ------------------------------------------------------------------------------ */

#define FLUSH_AT (1 << 20) /* pending bytes that trigger a write */
#define FLUSH_SECS 10.0    /* a record added this long after the last write triggers one */

struct mf_event_writer {
  int fd;
  char *path;
  mf_buf pending;    /* whole records not yet written */
  double last_flush; /* mf_wall_time() of the last write */
};

double mf_wall_time(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)(ts.tv_nsec / 1000) * 1e-6;
}

/* mkdir -p: makes every missing folder of dir. */
static mf_status make_dirs(const char *dir) {
  size_t n = strlen(dir);
  char *p = malloc(n + 1);
  if (!p) return mf_fail(MF_ERR_MEMORY, "event writer: %s: out of memory", dir);
  memcpy(p, dir, n + 1);
  mf_status s = MF_OK;
  for (size_t i = 1; i <= n && s == MF_OK; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char c = p[i];
    p[i] = '\0';
    struct stat st;
    if (mkdir(p, 0777) != 0 && errno != EEXIST)
      s = mf_fail(MF_ERR_IO, "event writer: cannot create the folder %s: %s", p, strerror(errno));
    else if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
      s = mf_fail(MF_ERR_IO, "event writer: %s: not a folder", p);
    p[i] = c;
  }
  free(p);
  return s;
}

mf_status mf_event_writer_flush(mf_event_writer *w) {
  if (!w) return mf_fail(MF_ERR_ARG, "event writer: writer is NULL");
  size_t done = 0;
  while (done < w->pending.len) {
    ssize_t k = write(w->fd, w->pending.data + done, w->pending.len - done);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) {
      int e = k < 0 ? errno : EIO;
      memmove(w->pending.data, w->pending.data + done, w->pending.len - done);
      w->pending.len -= done;
      return mf_fail(MF_ERR_IO, "event writer: %s: write error: %s", w->path, strerror(e));
    }
    done += (size_t)k;
  }
  w->pending.len = 0;
  w->last_flush = mf_wall_time();
  return MF_OK;
}

mf_status mf_event_writer_write(mf_event_writer *w, const void *event, size_t n) {
  if (!w) return mf_fail(MF_ERR_ARG, "event writer: writer is NULL");
  if (!event && n) return mf_fail(MF_ERR_ARG, "event writer: event is NULL");
  MF_TRY(mf_tfrecord_append(&w->pending, event ? event : "", n));
  bool due = w->pending.len >= FLUSH_AT || mf_wall_time() - w->last_flush >= FLUSH_SECS;
  return due ? mf_event_writer_flush(w) : MF_OK;
}

static mf_status write_event(mf_event_writer *w, double wall_time, int64_t step, mf_event_kind kind,
                             const void *p, size_t n) {
  if (!w) return mf_fail(MF_ERR_ARG, "event writer: writer is NULL");
  mf_buf ev = {0};
  mf_status s = mf_event_encode(&ev, wall_time < 0 ? mf_wall_time() : wall_time, step, kind, p, n);
  if (s == MF_OK) s = mf_event_writer_write(w, ev.data ? ev.data : (unsigned char *)"", ev.len);
  mf_buf_free(&ev);
  return s;
}

mf_status mf_event_writer_add_summary(mf_event_writer *w, double wall_time, int64_t step,
                                      const void *summary, size_t n) {
  if (!summary && n) return mf_fail(MF_ERR_ARG, "event writer: summary is NULL");
  return write_event(w, wall_time, step, MF_EVENT_SUMMARY, summary ? summary : "", n);
}

mf_status mf_event_writer_add_graph(mf_event_writer *w, double wall_time, const void *graph_def,
                                    size_t n) {
  if (!graph_def && n) return mf_fail(MF_ERR_ARG, "event writer: graph_def is NULL");
  return write_event(w, wall_time, 0, MF_EVENT_GRAPH_DEF, graph_def ? graph_def : "", n);
}

mf_status mf_event_writer_open(const char *logdir, mf_event_writer **out) {
  *out = NULL;
  if (!logdir || !*logdir) return mf_fail(MF_ERR_ARG, "event writer: logdir is empty");
  MF_TRY(make_dirs(logdir));
  char host[256] = "localhost";
  if (gethostname(host, sizeof host - 1) != 0 || !host[0]) strcpy(host, "localhost");
  host[sizeof host - 1] = '\0';
  for (char *c = host; *c; c++)
    if (*c == '/') *c = '_';
  double now = mf_wall_time();
  size_t cap = strlen(logdir) + strlen(host) + 96;
  mf_event_writer *w = calloc(1, sizeof *w);
  char *path = malloc(cap);
  if (!w || !path) {
    free(w), free(path);
    return mf_fail(MF_ERR_MEMORY, "event writer: %s: out of memory", logdir);
  }
  static int counter;
  int fd = -1;
  for (int tries = 0; fd < 0 && tries < 100; tries++) {
    if (tries == 0)
      snprintf(path, cap, "%s/events.out.tfevents.%010lld.%s", logdir, (long long)now, host);
    else
      snprintf(path, cap, "%s/events.out.tfevents.%010lld.%s.%ld.%d", logdir, (long long)now, host,
               (long)getpid(), __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    mf_status s = mf_fail(MF_ERR_IO, "event writer: cannot create %s: %s", path, strerror(errno));
    free(w), free(path);
    return s;
  }
  w->fd = fd;
  w->path = path;
  mf_status s = write_event(w, now, 0, MF_EVENT_FILE_VERSION, "brain.Event:2", 13);
  if (s == MF_OK) s = mf_event_writer_flush(w);
  if (s != MF_OK) { /* keep the message: close without another flush */
    close(fd);
    unlink(path);
    mf_buf_free(&w->pending);
    free(path), free(w);
    return s;
  }
  *out = w;
  return MF_OK;
}

const char *mf_event_writer_path(const mf_event_writer *w) { return w ? w->path : NULL; }

mf_status mf_event_writer_close(mf_event_writer *w) {
  if (!w) return MF_OK;
  mf_status s = mf_event_writer_flush(w);
  if (close(w->fd) != 0 && s == MF_OK)
    s = mf_fail(MF_ERR_IO, "event writer: %s: close: %s", w->path, strerror(errno));
  mf_buf_free(&w->pending);
  free(w->path);
  free(w);
  return s;
}
