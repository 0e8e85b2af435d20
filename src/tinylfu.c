/* tinylfu.c - the TinyLFU frequency tracker (Count-Min sketch, 4-bit counters).
 *
 * Port of kvbm-logical's TinyLFUSketch<u128> with a FixedDecayPolicy; see
 * tinylfu.h for the layout. Differences from the Rust code, all outside what
 * the crate's own use can reach:
 *   - the probe word is h % table_len in u64 arithmetic (Rust: (h as usize) %
 *     len, the same on 64-bit targets); a power-of-two table uses a mask,
 *     which is the same number;
 *   - reset() counts odd lanes in 64 bits and computes
 *     size = (size >> 1) - (count >> 2) saturating at 0, where Rust's u32
 *     arithmetic would panic (debug) or wrap (release) on underflow. */
#define XXH_INLINE_ALL /* increment/estimate are on the hot path: let XXH3 inline */
#include <xxhash.h>

#include "tinylfu.h"

#define NHASH 4
#define SECRET_SIZE XXH3_SECRET_DEFAULT_SIZE /* 192 */

#define ONE_MASK UINT64_C(0x1111111111111111)
#define RESET_MASK UINT64_C(0x7777777777777777)

struct kvbm__tinylfu {
  kvbm_allocator alloc;
  size_t table_len;  /* >= 1 */
  uint64_t mask;     /* table_len - 1 when table_len is a power of two */
  int pow2;
  uint32_t size;     /* successful increments since the last decay */
  uint32_t sample_size;
  unsigned char secret[NHASH][SECRET_SIZE];
  uint64_t flip[NHASH][2]; /* the secret words a 16-byte key meets, pre-mixed */
  uint64_t table[]; /* table_len words of 16 4-bit lanes */
};

#if XXH3_SECRET_DEFAULT_SIZE != 192
#error "XXH3's default secret is expected to be 192 bytes"
#endif

uint32_t kvbm__tinylfu_default_sample_size(size_t capacity) {
  /* capacity.saturating_mul(10).min(u32::MAX as usize) as u32 */
  return capacity > UINT32_MAX / 10 ? UINT32_MAX : (uint32_t)(capacity * 10);
}

int kvbm__tinylfu_new(const kvbm_allocator *a, size_t capacity, uint32_t sample_size,
                      kvbm__tinylfu **out) {
  size_t words = capacity / 4 > 1 ? capacity / 4 : 1;
  *out = NULL;
  if (words > (SIZE_MAX - sizeof(kvbm__tinylfu)) / sizeof(uint64_t)) return KVBM_ENOMEM;
  size_t bytes = sizeof(kvbm__tinylfu) + words * sizeof(uint64_t);
  kvbm__tinylfu *t = kvbm__realloc(a, NULL, 0, bytes);
  if (!t) return KVBM_ENOMEM;
  memset(t, 0, bytes);
  if (a) t->alloc = *a;
  t->table_len = words;
  t->pow2 = (words & (words - 1)) == 0;
  t->mask = (uint64_t)words - 1;
  t->size = 0;
  t->sample_size = sample_size ? sample_size : kvbm__tinylfu_default_sample_size(capacity);
  for (int i = 0; i < NHASH; i++) {
    XXH3_generateSecret_fromSeed(t->secret[i], (XXH64_hash_t)i);
    t->flip[i][0] = XXH_readLE64(t->secret[i] + 24) ^ XXH_readLE64(t->secret[i] + 32);
    t->flip[i][1] = XXH_readLE64(t->secret[i] + 40) ^ XXH_readLE64(t->secret[i] + 48);
  }
  *out = t;
  return 0;
}

void kvbm__tinylfu_free(kvbm__tinylfu *t) {
  if (!t) return;
  kvbm_allocator a = t->alloc;
  kvbm__free(&a, t, kvbm__tinylfu_bytes(t));
}

/* XXH3_64bits_withSecret of the key's 16 bytes (u128::to_le_bytes: lo word,
 * then hi word), specialised: for 9..16 bytes XXH3 reads only four secret
 * words, pre-mixed into flip[i] at construction. test_tinylfu checks it
 * against XXH3_64bits_withSecret. */
static inline uint64_t key_hash(const kvbm__tinylfu *t, int i, kvbm_hash key) {
  uint64_t lo = key.lo ^ t->flip[i][0], hi = key.hi ^ t->flip[i][1];
  uint64_t acc = 16 + XXH_swap64(lo) + hi + XXH3_mul128_fold64(lo, hi);
  acc ^= acc >> 37;
  acc *= UINT64_C(0x165667919E3779F9);
  return acc ^ (acc >> 32);
}

uint64_t kvbm__tinylfu_hash(const kvbm__tinylfu *t, int i, kvbm_hash key) { return key_hash(t, i, key); }

static inline size_t probe_word(const kvbm__tinylfu *t, uint64_t h) {
  return (size_t)(t->pow2 ? (h & t->mask) : (h % (uint64_t)t->table_len));
}

void kvbm__tinylfu_increment(kvbm__tinylfu *t, kvbm_hash key) {
  int added = 0;
  if (!t) return; /* NULL is the NoOpTracker */
  for (int i = 0; i < NHASH; i++) {
    uint64_t h = key_hash(t, i, key);
    uint64_t *w = &t->table[probe_word(t, h)];
    unsigned off = (unsigned)(h & 15) * 4;
    if (((*w >> off) & 15) != 15) {
      *w += (uint64_t)1 << off;
      added = 1;
    }
  }
  /* size < sample_size <= UINT32_MAX before the bump, so it cannot wrap. */
  if (added && ++t->size >= t->sample_size) kvbm__tinylfu_reset(t);
}

uint32_t kvbm__tinylfu_estimate(const kvbm__tinylfu *t, kvbm_hash key) {
  uint32_t min = 15;
  if (!t) return 0; /* NULL is the NoOpTracker */
  for (int i = 0; i < NHASH; i++) {
    uint64_t h = key_hash(t, i, key);
    uint32_t c = (uint32_t)(t->table[probe_word(t, h)] >> ((unsigned)(h & 15) * 4)) & 15;
    if (c < min) min = c;
  }
  return min;
}

static inline unsigned popcount64(uint64_t x) {
#if defined(__GNUC__)
  return (unsigned)__builtin_popcountll(x);
#else
  x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
  x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
  x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
  return (unsigned)((x * UINT64_C(0x0101010101010101)) >> 56);
#endif
}

void kvbm__tinylfu_reset(kvbm__tinylfu *t) {
  uint64_t count = 0; /* lanes whose low bit is set (lost by the halving) */
  for (size_t i = 0; i < t->table_len; i++) {
    uint64_t w = t->table[i];
    count += popcount64(w & ONE_MASK);
    t->table[i] = (w >> 1) & RESET_MASK;
  }
  uint64_t half = t->size >> 1, lost = count >> 2;
  t->size = half > lost ? (uint32_t)(half - lost) : 0; /* Rust: u32 `-`, no underflow check here */
}

uint32_t kvbm__tinylfu_size(const kvbm__tinylfu *t) { return t->size; }

uint32_t kvbm__tinylfu_sample_size(const kvbm__tinylfu *t) { return t->sample_size; }

size_t kvbm__tinylfu_table_len(const kvbm__tinylfu *t) { return t->table_len; }

size_t kvbm__tinylfu_bytes(const kvbm__tinylfu *t) {
  return sizeof(kvbm__tinylfu) + t->table_len * sizeof(uint64_t);
}
