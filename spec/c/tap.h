/* tap.h - a tiny TAP producer for the C unit tests (run by `make check`). */
#ifndef KVBM_TAP_H
#define KVBM_TAP_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int tap_count, tap_failed;

#define ok(cond, ...)                                                     \
  do {                                                                    \
    int ok_ = !!(cond);                                                   \
    tap_count++;                                                          \
    if (!ok_) tap_failed++;                                               \
    printf("%s %d - ", ok_ ? "ok" : "not ok", tap_count);                 \
    printf(__VA_ARGS__);                                                  \
    printf("\n");                                                         \
    if (!ok_) printf("#   %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
  } while (0)

#define is_u64(got, want, ...)                                            \
  do {                                                                    \
    uint64_t g_ = (got), w_ = (want);                                     \
    ok(g_ == w_, __VA_ARGS__);                                            \
    if (g_ != w_) printf("#   got 0x%016" PRIx64 ", want 0x%016" PRIx64 "\n", g_, w_); \
  } while (0)

#define is_str(got, want, ...)                                            \
  do {                                                                    \
    const char *g_ = (got), *w_ = (want);                                 \
    ok(strcmp(g_, w_) == 0, __VA_ARGS__);                                 \
    if (strcmp(g_, w_)) printf("#   got \"%s\", want \"%s\"\n", g_, w_);  \
  } while (0)

static int tap_done(void) {
  printf("1..%d\n", tap_count);
  return tap_failed ? 1 : 0;
}

#endif
