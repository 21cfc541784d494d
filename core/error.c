/* error.c — statuses and the thread-local error message every failing operation leaves. */
#include <stdarg.h>
#include <stdio.h>

#include "moonflow.h"

static _Thread_local char msg[1024];

const char *mf_error(void) { return msg; }

mf_status mf_fail(mf_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return s;
}

const char *mf_status_name(mf_status s) {
  static const char *names[] = {"ok",           "bad argument", "shape error",
                                "dtype error",  "index error",  "out of memory",
                                "device error", "unsupported",  "i/o error"};
  return (unsigned)s < sizeof names / sizeof names[0] ? names[s] : "unknown status";
}
