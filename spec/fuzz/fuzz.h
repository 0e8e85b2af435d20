/* fuzz.h - what the libFuzzer targets share: a cursor over the input bytes
 * (reads past the end yield zeros, so every input is a valid program) and
 * a check that aborts, which libFuzzer reports as a crash with the input. */
#ifndef KVBM_FUZZ_H
#define KVBM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
  const uint8_t *p;
  size_t n, at;
} fuzz_in;

static inline int fuzz_more(const fuzz_in *in) { return in->at < in->n; }

static inline uint8_t fuzz_u8(fuzz_in *in) { return in->at < in->n ? in->p[in->at++] : 0; }

static inline uint64_t fuzz_bytes(fuzz_in *in, int k) { /* k little-endian bytes */
  uint64_t v = 0;
  for (int i = 0; i < k; i++) v |= (uint64_t)fuzz_u8(in) << (8 * i);
  return v;
}

static inline uint16_t fuzz_u16(fuzz_in *in) { return (uint16_t)fuzz_bytes(in, 2); }
static inline uint32_t fuzz_u32(fuzz_in *in) { return (uint32_t)fuzz_bytes(in, 4); }
static inline uint64_t fuzz_u64(fuzz_in *in) { return fuzz_bytes(in, 8); }

/* A size that is usually small but sometimes hostile: one byte picks 0..63,
 * near a power of two, or a raw 64-bit value. */
static inline uint64_t fuzz_size(fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  switch (b >> 6) {
  case 0:
  case 1: return b & 63;
  case 2: return (UINT64_C(1) << (b & 63)) + (uint64_t)(int8_t)fuzz_u8(in);
  default: return fuzz_u64(in);
  }
}

#define FUZZ_CHECK(cond, ...)                                                       \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                                                 \
      fputc('\n', stderr);                                                          \
      abort();                                                                      \
    }                                                                               \
  } while (0)

#endif
