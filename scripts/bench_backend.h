/* bench_backend.h - a backend's name (as kvbm.manager{backend=} and
 * `kvbm sim --backend` spell it) to its kvbm_backend, for the benchmark
 * programs that take one on the command line. */
#ifndef KVBM_BENCH_BACKEND_H
#define KVBM_BENCH_BACKEND_H

#include <string.h>

#include "kvbm.h"

/* The backend called name in KVBM_BACKEND_MAP, or -1 for none. */
static inline int bench_backend_of(const char *name) {
#define BENCH_BACKEND_NAME(name, lua_name) lua_name,
  static const char *const names[] = {KVBM_BACKEND_MAP(BENCH_BACKEND_NAME)};
#undef BENCH_BACKEND_NAME
  for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
    if (strcmp(name, names[i]) == 0) return i;
  return -1;
}

#endif
