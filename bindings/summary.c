/* summary.c — Lua bindings of TensorBoard event files and images (core/io/events.c, image.c).
 * lua/moonflow/summary.lua and image.lua build the user API on these:
 *
 *   mf._summary.open(logdir) -> writer          (an "moonflow.EventWriter" userdata)
 *     w:path()  w:add_summary(bytes, step [, wall_time])  w:add_graph(bytes [, wall_time])
 *     w:add_event(bytes)  w:flush()  w:close()   (__gc and __close flush and close)
 *   mf._summary.scalar(tag, number) -> bytes     serialized Summary with one Value; concatenating
 *   mf._summary.histogram(tag, t) -> bytes        summaries merges them
 *   mf._summary.image(tag, t) -> bytes
 *   mf._summary.text(tag, s) -> bytes
 *   mf._summary.event(wall_time, step, kind, payload) -> bytes   (kind "summary", "graph_def",
 *                                                 "file_version" or nil)
 *   mf._summary.records(data) -> {record, ...}   TFRecords split, CRCs checked (raises on damage)
 *   mf._summary.crc32c(s), mf._summary.masked_crc32c(s) -> integer
 *
 *   mf._image.load(path [, channels]) -> uint8 HxWxC tensor
 *   mf._image.decode(bytes [, channels]) -> uint8 HxWxC tensor
 *   mf._image.save(path, t [, quality])
 *   mf._image.encode_png(t) -> bytes, height, width, channels
 *   mf._image.resize(t, height, width) -> tensor
 *
 * Byte buffers live in userdata ("moonflow.buf") while the core fills them, so that an error
 * raised afterwards never leaks them.
 */
#include <string.h>

#include "lmf.h"
#include "moonflow_io.h"

#define WRITER "moonflow.EventWriter"
#define BUF "moonflow.buf"

/* ---- byte buffers owned by Lua -----------------------------------------------------------------
 */

static int buf_gc(lua_State *L) {
  mf_buf_free(luaL_checkudata(L, 1, BUF));
  return 0;
}

/* Pushes a userdata holding an empty mf_buf that __gc frees. */
static mf_buf *newbuf(lua_State *L) { return lmf_newgcdata(L, sizeof(mf_buf), BUF, buf_gc); }

/* Pushes b's bytes as a string (b stays owned by its userdata). */
static void pushbuf(lua_State *L, const mf_buf *b) {
  lua_pushlstring(L, b->data ? (const char *)b->data : "", b->len);
}

/* ---- the writer ------------------------------------------------------------------------------ */

typedef struct lwriter {
  mf_event_writer *w; /* NULL when closed */
} lwriter;

static mf_event_writer *checkwriter(lua_State *L) {
  lwriter *u = luaL_checkudata(L, 1, WRITER);
  if (!u->w) luaL_error(L, "FileWriter: the writer is closed");
  return u->w;
}

static int s_open(lua_State *L) {
  const char *logdir = luaL_checkstring(L, 1);
  lwriter *u = lua_newuserdatauv(L, sizeof *u, 0); /* closed first, then opened (liolib) */
  u->w = NULL;
  luaL_setmetatable(L, WRITER);
  mf_status s = mf_event_writer_open(logdir, &u->w);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int w_path(lua_State *L) {
  lua_pushstring(L, mf_event_writer_path(checkwriter(L)));
  return 1;
}

static double optwall(lua_State *L, int arg) { return luaL_optnumber(L, arg, -1); }

/* w:add_summary(bytes, step [, wall_time]) */
static int w_add_summary(lua_State *L) {
  mf_event_writer *w = checkwriter(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  lua_Integer step = luaL_optinteger(L, 3, 0);
  mf_status s = mf_event_writer_add_summary(w, optwall(L, 4), (int64_t)step, p, n);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* w:add_graph(bytes [, wall_time]) */
static int w_add_graph(lua_State *L) {
  mf_event_writer *w = checkwriter(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  mf_status s = mf_event_writer_add_graph(w, optwall(L, 3), p, n);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* w:add_event(bytes): a serialized Event as one record */
static int w_add_event(lua_State *L) {
  mf_event_writer *w = checkwriter(L);
  size_t n;
  const char *p = luaL_checklstring(L, 2, &n);
  mf_status s = mf_event_writer_write(w, p, n);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int w_flush(lua_State *L) {
  mf_status s = mf_event_writer_flush(checkwriter(L));
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* w:close(): idempotent */
static int w_close(lua_State *L) {
  lwriter *u = luaL_checkudata(L, 1, WRITER);
  mf_event_writer *w = u->w;
  u->w = NULL;
  mf_status s = mf_event_writer_close(w);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

/* __gc: closes without raising (the data may still be lost on a full disk; close() reports it) */
static int w_gc(lua_State *L) {
  lwriter *u = luaL_checkudata(L, 1, WRITER);
  mf_event_writer_close(u->w);
  u->w = NULL;
  return 0;
}

static int w_tostring(lua_State *L) {
  lwriter *u = luaL_checkudata(L, 1, WRITER);
  if (u->w)
    lua_pushfstring(L, "EventWriter(%s)", mf_event_writer_path(u->w));
  else
    lua_pushliteral(L, "EventWriter(closed)");
  return 1;
}

static const luaL_Reg writer_methods[] = {
    {"path", w_path},
    {"add_summary", w_add_summary},
    {"add_graph", w_add_graph},
    {"add_event", w_add_event},
    {"flush", w_flush},
    {"close", w_close},
    {NULL, NULL},
};

static const luaL_Reg writer_meta[] = {
    {"__gc", w_gc},
    {"__close", w_gc},
    {"__tostring", w_tostring},
    {NULL, NULL},
};

/* ---- summaries as bytes ------------------------------------------------------------------------
 */

static int s_scalar(lua_State *L) {
  const char *tag = luaL_checkstring(L, 1);
  float v = (float)luaL_checknumber(L, 2);
  mf_buf *b = newbuf(L);
  mf_status s = mf_summary_add_scalar(b, tag, v);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  return 1;
}

static int s_histogram(lua_State *L) {
  const char *tag = luaL_checkstring(L, 1);
  if (lua_isnoneornil(L, 2)) return luaL_argerror(L, 2, "tensor or table of numbers expected");
  mf_tensor *t = lmf_totensor(L, 2, NULL);
  mf_buf *b = newbuf(L);
  mf_status s = mf_summary_add_histogram_tensor(b, tag, t);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  return 1;
}

static int s_image(lua_State *L) {
  const char *tag = luaL_checkstring(L, 1);
  mf_tensor *t = lmf_check(L, 2);
  mf_buf *b = newbuf(L);
  mf_status s = mf_summary_add_image(b, tag, t);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  return 1;
}

static int s_text(lua_State *L) {
  const char *tag = luaL_checkstring(L, 1);
  size_t n;
  const char *text = luaL_checklstring(L, 2, &n);
  mf_buf *b = newbuf(L);
  mf_status s = mf_summary_add_text(b, tag, text, n);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  return 1;
}

/* event(wall_time, step, kind, payload) */
static int s_event(lua_State *L) {
  double wall = luaL_checknumber(L, 1);
  lua_Integer step = luaL_optinteger(L, 2, 0);
  static const char *const kinds[] = {"none", "file_version", "graph_def", "summary", NULL};
  static const mf_event_kind codes[] = {MF_EVENT_NONE, MF_EVENT_FILE_VERSION, MF_EVENT_GRAPH_DEF,
                                        MF_EVENT_SUMMARY};
  mf_event_kind kind = codes[luaL_checkoption(L, 3, "none", kinds)];
  size_t n = 0;
  const char *p = luaL_optlstring(L, 4, "", &n);
  mf_buf *b = newbuf(L);
  mf_status s = mf_event_encode(b, wall, (int64_t)step, kind, p, n);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  return 1;
}

static int s_records(lua_State *L) {
  size_t n;
  const unsigned char *p = (const unsigned char *)luaL_checklstring(L, 1, &n);
  lua_newtable(L);
  size_t pos = 0;
  for (lua_Integer i = 1; pos < n; i++) {
    const unsigned char *rec;
    size_t len;
    mf_status s = mf_tfrecord_next(p, n, &pos, &rec, &len);
    if (s != MF_OK) return lmf_error(L, s);
    lua_pushlstring(L, (const char *)rec, len);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int s_crc32c(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  lua_pushinteger(L, (lua_Integer)mf_crc32c(p, n));
  return 1;
}

static int s_masked_crc32c(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  lua_pushinteger(L, (lua_Integer)mf_crc32c_mask(mf_crc32c(p, n)));
  return 1;
}

static const luaL_Reg summary_funcs[] = {
    {"open", s_open},       {"scalar", s_scalar}, {"histogram", s_histogram},
    {"image", s_image},     {"text", s_text},     {"event", s_event},
    {"records", s_records}, {"crc32c", s_crc32c}, {"masked_crc32c", s_masked_crc32c},
    {NULL, NULL},
};

/* ---- images ------------------------------------------------------------------------------------
 */

static int optchannels(lua_State *L, int arg) {
  lua_Integer c = luaL_optinteger(L, arg, 0);
  luaL_argcheck(L, c >= 0 && c <= 4, arg, "channels must be 1..4 (or 0: as in the file)");
  return (int)c;
}

static int i_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int c = optchannels(L, 2);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_image_load(path, c, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int i_decode(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  int c = optchannels(L, 2);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_image_decode(p, n, c, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static int i_save(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mf_tensor *t = lmf_check(L, 2);
  lua_Integer q = luaL_optinteger(L, 3, 0);
  luaL_argcheck(L, q >= 0 && q <= 100, 3, "quality must be 1..100");
  mf_status s = mf_image_save(path, t, (int)q);
  return s == MF_OK ? 0 : lmf_error(L, s);
}

static int i_encode_png(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  mf_buf *b = newbuf(L);
  int h = 0, w = 0, c = 0;
  mf_status s = mf_image_encode_png(t, b, &h, &w, &c);
  if (s != MF_OK) return lmf_error(L, s);
  pushbuf(L, b);
  lua_pushinteger(L, h);
  lua_pushinteger(L, w);
  lua_pushinteger(L, c);
  return 4;
}

static int i_resize(lua_State *L) {
  mf_tensor *t = lmf_check(L, 1);
  lua_Integer h = luaL_checkinteger(L, 2), w = luaL_checkinteger(L, 3);
  mf_tensor **slot = lmf_newslot(L);
  mf_status s = mf_image_resize(t, (int64_t)h, (int64_t)w, slot);
  return s == MF_OK ? 1 : lmf_error(L, s);
}

static const luaL_Reg image_funcs[] = {
    {"load", i_load},     {"decode", i_decode}, {"save", i_save}, {"encode_png", i_encode_png},
    {"resize", i_resize}, {NULL, NULL},
};

/* ---- registration ------------------------------------------------------------------------------
 */

void lmf_open_summary(lua_State *L, int mod, int meth) {
  (void)meth;
  if (luaL_newmetatable(L, WRITER)) {
    luaL_setfuncs(L, writer_meta, 0);
    luaL_newlib(L, writer_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, summary_funcs);
  lua_setfield(L, mod, "_summary");
  luaL_newlib(L, image_funcs);
  lua_setfield(L, mod, "_image");
}
