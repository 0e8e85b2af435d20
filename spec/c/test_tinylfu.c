/* test_tinylfu.c - the TinyLFU Count-Min sketch (spec §6, scenarios 181-193). */
#include <stdlib.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "tinylfu.h"

#include "tap.h"

static kvbm_hash k64(uint64_t v) { /* a u64 key of the Rust tests, as a u128 */
  kvbm_hash h = {0, v};
  return h;
}

static kvbm_hash k128(uint64_t hi, uint64_t lo) {
  kvbm_hash h = {hi, lo};
  return h;
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
  z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
  return z ^ (z >> 31);
}

static uint64_t rd64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void wr64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* xxhash-rust's const_custom_default_secret(seed), written out from XXH3's
 * default secret: per 16-byte chunk, low u64 + seed, high u64 - seed. */
static void rust_secret(uint64_t seed, unsigned char out[192]) {
  for (int i = 0; i < 192; i += 16) {
    wr64(out + i, rd64(XXH3_kSecret + i) + seed);
    wr64(out + i + 8, rd64(XXH3_kSecret + i + 8) - seed);
  }
}

/* ------------------------------------------------------- a shadow model
 * The Rust algorithm restated with one byte per lane, for exact comparison. */
typedef struct model {
  size_t words;
  unsigned char *lanes; /* words * 16 */
  uint32_t size, sample;
  unsigned char secret[4][192];
} model;

static void model_init(model *m, size_t capacity, uint32_t sample) {
  m->words = capacity / 4 ? capacity / 4 : 1;
  m->lanes = calloc(m->words * 16, 1);
  m->size = 0;
  m->sample = sample;
  for (int i = 0; i < 4; i++) rust_secret((uint64_t)i, m->secret[i]);
}

static void model_probe(const model *m, kvbm_hash k, int i, size_t *lane) {
  unsigned char b[16];
  wr64(b, k.lo); /* u128::to_le_bytes */
  wr64(b + 8, k.hi);
  uint64_t h = XXH3_64bits_withSecret(b, 16, m->secret[i], 192);
  *lane = (size_t)(h % m->words) * 16 + (size_t)(h & 15);
}

static void model_reset(model *m) {
  uint32_t odd = 0;
  for (size_t j = 0; j < m->words * 16; j++) {
    odd += m->lanes[j] & 1;
    m->lanes[j] >>= 1;
  }
  uint32_t half = m->size >> 1, lost = odd >> 2;
  m->size = half > lost ? half - lost : 0;
}

static void model_inc(model *m, kvbm_hash k) {
  int added = 0;
  for (int i = 0; i < 4; i++) {
    size_t l;
    model_probe(m, k, i, &l);
    if (m->lanes[l] < 15) {
      m->lanes[l]++;
      added = 1;
    }
  }
  if (added && ++m->size >= m->sample) model_reset(m);
}

static uint32_t model_est(const model *m, kvbm_hash k) {
  uint32_t min = UINT32_MAX;
  for (int i = 0; i < 4; i++) {
    size_t l;
    model_probe(m, k, i, &l);
    if (m->lanes[l] < min) min = m->lanes[l];
  }
  return min;
}

/* Runs steps random increments over nkeys keys against the model; returns the
 * number of mismatches (estimates of every key and size, after every step). */
static int against_model(size_t capacity, uint32_t sample, int nkeys, int steps, uint64_t seed,
                         int *decays) {
  model m;
  kvbm__tinylfu *t;
  kvbm_hash keys[64];
  int bad = 0;
  *decays = 0;
  if (nkeys > 64) nkeys = 64;
  if (kvbm__tinylfu_new(NULL, capacity, sample, &t) != 0) return -1;
  model_init(&m, capacity, kvbm__tinylfu_sample_size(t));
  for (int i = 0; i < nkeys; i++) keys[i] = k128(splitmix(&seed), splitmix(&seed));
  for (int s = 0; s < steps; s++) {
    kvbm_hash k = keys[splitmix(&seed) % (uint64_t)nkeys];
    uint32_t before = m.size;
    kvbm__tinylfu_increment(t, k);
    model_inc(&m, k);
    if (m.size < before) (*decays)++;
    if (kvbm__tinylfu_size(t) != m.size) bad++;
    for (int i = 0; i < nkeys; i++)
      if (kvbm__tinylfu_estimate(t, keys[i]) != model_est(&m, keys[i])) bad++;
  }
  free(m.lanes);
  kvbm__tinylfu_free(t);
  return bad;
}

/* ------------------------------------------------------------ allocators */
typedef struct acct {
  int budget;      /* allocations left before failing; < 0: unlimited */
  int calls;       /* non-free calls */
  long live;       /* bytes outstanding, by osize/nsize */
  int bad_osize;   /* a free whose osize did not match */
  size_t last_size;
} acct;

static void *acct_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  acct *a = ud;
  if (nsize == 0) {
    if (ptr) {
      if (osize != a->last_size) a->bad_osize++;
      a->live -= (long)osize;
    }
    free(ptr);
    return NULL;
  }
  a->calls++;
  if (a->budget == 0) return NULL;
  if (a->budget > 0) a->budget--;
  void *p = realloc(ptr, nsize);
  if (p) {
    a->live += (long)nsize - (long)(ptr ? osize : 0);
    a->last_size = nsize;
  }
  return p;
}

static void *null_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  (void)osize;
  if (nsize == 0) free(ptr);
  return NULL;
}

int main(void) {
  kvbm__tinylfu *t = NULL;
  const kvbm_hash big = k128(UINT64_C(0x0123456789ABCDEF), UINT64_C(0x0123456789ABCDEF));

  /* ------------------------------------------- the hashes are xxhash-rust's */
  {
    unsigned char sec[192], want[192], x[256];
    uint64_t s = 7;
    int same = 1, seeded = 1, derived = 1;
    for (size_t i = 0; i < sizeof x; i++) x[i] = (unsigned char)splitmix(&s);
    XXH3_generateSecret_fromSeed(sec, 0);
    ok(memcmp(sec, XXH3_kSecret, 192) == 0, "secret for seed 0 is XXH3's default secret");
    for (size_t len = 0; len <= 16; len++)
      if (XXH3_64bits_withSecret(x, len, sec, 192) != XXH3_64bits(x, len)) same = 0;
    ok(same, "XXH3_64bits_withSecret(x, n<=16, secret0) == XXH3_64bits(x, n)");
    is_u64(XXH3_64bits_withSecret(x, 16, sec, 192), XXH3_64bits(x, 16),
           "16-byte key with secret 0 hashes as XXH3_64bits");
    for (uint64_t seed = 0; seed < 4; seed++) {
      XXH3_generateSecret_fromSeed(sec, seed);
      rust_secret(seed, want);
      if (memcmp(sec, want, 192)) derived = 0;
      /* above 240 bytes, a seeded XXH3 hashes with exactly this derived secret */
      if (XXH3_64bits_withSecret(x, sizeof x, sec, 192) != XXH3_64bits_withSeed(x, sizeof x, seed))
        seeded = 0;
    }
    ok(derived, "XXH3_generateSecret_fromSeed(i) == const_custom_default_secret(i), i = 0..3");
    ok(seeded, "secret i is XXH3's seeded secret for seed i (long-input check)");
  }

  /* 181 */
  ok(kvbm__tinylfu_new(NULL, 100, 0, &t) == 0 && t, "181 new(100)");
  kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 1, "181 one increment -> 1");
  kvbm__tinylfu_increment(t, k64(42));
  kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 3, "181 three increments -> 3");
  ok(kvbm__tinylfu_estimate(t, k64(99)) == 0, "181 unseen key -> 0");
  kvbm__tinylfu_free(t);

  /* 182 */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  for (int i = 0; i < 20; i++) kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) <= 15, "182 20 increments -> <= 15");
  kvbm__tinylfu_free(t);

  /* 183 */
  kvbm__tinylfu_new(NULL, 10, 0, &t);
  for (uint64_t i = 0; i < 100; i++) kvbm__tinylfu_increment(t, k64(i));
  ok(kvbm__tinylfu_estimate(t, k64(5)) > 0, "183 cap 10, keys 0..99 -> estimate(5) > 0");
  kvbm__tinylfu_free(t);

  /* 184 (the tracker is the sketch behind the caller's lock) */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 1, "184 touch -> count 1");
  kvbm__tinylfu_increment(t, k64(42));
  kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 3, "184 two more -> count 3");
  kvbm__tinylfu_free(t);

  /* 185: a NULL sketch is the NoOpTracker */
  kvbm__tinylfu_increment(NULL, k64(42));
  ok(kvbm__tinylfu_estimate(NULL, k64(42)) == 0, "185 NoOp touch -> 0");
  kvbm__tinylfu_increment(NULL, k64(42));
  ok(kvbm__tinylfu_estimate(NULL, k64(42)) == 0, "185 NoOp touch again -> 0");

  /* 186 */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  kvbm__tinylfu_increment(t, big);
  ok(kvbm__tinylfu_estimate(t, big) == 1, "186 u128 key 0x0123..CDEF -> 1");
  kvbm__tinylfu_increment(t, big);
  kvbm__tinylfu_increment(t, big);
  ok(kvbm__tinylfu_estimate(t, big) == 3, "186 u128 key -> 3");
  ok(kvbm__tinylfu_estimate(t, k64(0)) == 0, "186 key 0 -> 0");
  ok(kvbm__tinylfu_estimate(t, k128(UINT64_C(0x0123456789ABCDEF), 0)) == 0 &&
         kvbm__tinylfu_estimate(t, k64(UINT64_C(0x0123456789ABCDEF))) == 0,
     "186 either half of the key alone -> 0");
  kvbm__tinylfu_free(t);

  /* 187 */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  kvbm__tinylfu_increment(t, big);
  ok(kvbm__tinylfu_estimate(t, big) == 1, "187 u128 tracker touch -> 1");
  kvbm__tinylfu_increment(t, big);
  kvbm__tinylfu_increment(t, big);
  ok(kvbm__tinylfu_estimate(t, big) == 3, "187 u128 tracker -> 3");
  kvbm__tinylfu_free(t);

  /* 188 */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 0, "188 default policy, cap 100 -> estimate 0");
  ok(kvbm__tinylfu_sample_size(t) == 1000, "188 default sample size = capacity * 10");
  ok(kvbm__tinylfu_table_len(t) == 25, "188 table of capacity / 4 words");
  kvbm__tinylfu_free(t);

  /* 189 */
  kvbm__tinylfu_new(NULL, 100, 500, &t);
  ok(kvbm__tinylfu_sample_size(t) == 500, "189 custom sample size 500");
  for (int i = 0; i < 10; i++) kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) >= 5, "189 10 increments -> >= 5");
  kvbm__tinylfu_free(t);

  /* 190 */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 1, "190 settings -> tracker: touch -> 1");
  kvbm__tinylfu_free(t);

  /* 191: FixedDecayPolicy(100): decays once size reaches 100, not at 99 */
  {
    int ok99 = 1, fired = 0;
    uint32_t peak = 0;
    kvbm__tinylfu_new(NULL, 1 << 16, 100, &t); /* 2^18 lanes: no saturation */
    for (uint64_t i = 1; i <= 99; i++) kvbm__tinylfu_increment(t, k64(i));
    ok99 = kvbm__tinylfu_size(t) == 99 && kvbm__tinylfu_estimate(t, k64(1)) >= 1;
    ok(ok99, "191 size 99 -> no decay");
    kvbm__tinylfu_increment(t, k64(100));
    ok(kvbm__tinylfu_size(t) < 99 && kvbm__tinylfu_estimate(t, k64(1)) == 0,
       "191 size 100 -> decay (counters halved, size shrunk)");
    for (uint64_t i = 101; i < 3000; i++) {
      uint32_t before = kvbm__tinylfu_size(t);
      kvbm__tinylfu_increment(t, k64(i));
      if (kvbm__tinylfu_size(t) > peak) peak = kvbm__tinylfu_size(t);
      if (kvbm__tinylfu_size(t) < before) fired++;
    }
    ok(peak < 100 && fired > 0, "191 size >= 100 always decays: size never exceeds 99 (%d decays)",
       fired);
    kvbm__tinylfu_free(t);
  }

  /* 192: from_capacity(10) = 100 (the threshold itself is checked in 191) */
  {
    kvbm__tinylfu_new(NULL, 10, 0, &t);
    ok(kvbm__tinylfu_sample_size(t) == 100, "192 from_capacity(10) -> sample size 100");
    for (uint64_t i = 0; i < 10000; i++) kvbm__tinylfu_increment(t, k64(i));
    /* word = h % 2 and lane = h & 15 share h's low bit: only 16 of the 32
     * lanes are reachable, so at most 240 lane bumps ever succeed. */
    ok(kvbm__tinylfu_size(t) >= 60 && kvbm__tinylfu_size(t) < 100,
       "192 cap 10 saturates before 100 successful increments (size %u): never decays",
       (unsigned)kvbm__tinylfu_size(t));
    kvbm__tinylfu_free(t);
    kvbm__tinylfu_new(NULL, 10, 50, &t);
    for (uint64_t i = 0; kvbm__tinylfu_size(t) < 49 && i < 10000; i++)
      kvbm__tinylfu_increment(t, k64(i));
    ok(kvbm__tinylfu_size(t) == 49, "192 cap 10, sample 50: 49 successful increments -> no decay");
    for (uint64_t i = 10000; kvbm__tinylfu_size(t) == 49 && i < 20000; i++)
      kvbm__tinylfu_increment(t, k64(i));
    ok(kvbm__tinylfu_size(t) < 49, "192 the 50th -> decay");
    kvbm__tinylfu_free(t);
  }

  /* 193: decay armed for the next successful increment (sample size 5) */
  kvbm__tinylfu_new(NULL, 100, 5, &t);
  for (int i = 0; i < 4; i++) kvbm__tinylfu_increment(t, k64(42));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 4, "193 4x key 42 -> 4");
  kvbm__tinylfu_increment(t, k64(99));
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 2, "193 decay on incrementing 99 -> estimate(42) == 2");
  ok(kvbm__tinylfu_estimate(t, k64(99)) <= 1, "193 estimate(99) <= 1");
  kvbm__tinylfu_free(t);
  /* the same with the aging step called directly */
  kvbm__tinylfu_new(NULL, 100, 0, &t);
  for (int i = 0; i < 4; i++) kvbm__tinylfu_increment(t, k64(42));
  kvbm__tinylfu_increment(t, k64(99));
  kvbm__tinylfu_reset(t);
  ok(kvbm__tinylfu_estimate(t, k64(42)) == 2 && kvbm__tinylfu_estimate(t, k64(99)) <= 1,
     "193 explicit reset(): 4 -> 2, 1 -> <= 1");
  kvbm__tinylfu_free(t);

  /* ---------------------------------------------------------- saturation */
  {
    int climbs = 1;
    kvbm__tinylfu_new(NULL, 100, 0, &t);
    for (uint32_t i = 1; i <= 15; i++) {
      kvbm__tinylfu_increment(t, big);
      if (kvbm__tinylfu_estimate(t, big) != i) climbs = 0;
    }
    ok(climbs, "estimate climbs 1..15");
    uint32_t size = kvbm__tinylfu_size(t);
    for (int i = 0; i < 10; i++) kvbm__tinylfu_increment(t, big);
    ok(kvbm__tinylfu_estimate(t, big) == 15, "saturates at 15");
    ok(kvbm__tinylfu_size(t) == size && size == 15,
       "increments of a saturated key are not counted (size stays 15)");
    kvbm__tinylfu_free(t);
  }

  /* ----------------------------------------------------------- decay */
  {
    kvbm__tinylfu_new(NULL, 100, 0, &t);
    for (int i = 0; i < 15; i++) kvbm__tinylfu_increment(t, big);
    for (int i = 0; i < 6; i++) kvbm__tinylfu_increment(t, k64(7));
    kvbm__tinylfu_reset(t);
    ok(kvbm__tinylfu_estimate(t, big) == 7 && kvbm__tinylfu_estimate(t, k64(7)) == 3,
       "reset halves: 15 -> 7, 6 -> 3");
    kvbm__tinylfu_reset(t);
    ok(kvbm__tinylfu_estimate(t, big) == 3 && kvbm__tinylfu_estimate(t, k64(7)) == 1,
       "again: 7 -> 3, 3 -> 1");
    kvbm__tinylfu_reset(t);
    kvbm__tinylfu_reset(t);
    ok(kvbm__tinylfu_estimate(t, big) == 0 && kvbm__tinylfu_estimate(t, k64(7)) == 0,
       "then to 0");
    kvbm__tinylfu_free(t);
  }
  {
    /* size = (size >> 1) - (count of odd lanes >> 2) */
    uint64_t s = 1;
    kvbm_hash keys[40];
    int all1 = 1;
    kvbm__tinylfu_new(NULL, 1 << 20, 0, &t); /* 2^18 words: these 160 probes are distinct */
    for (int i = 0; i < 40; i++) keys[i] = k128(splitmix(&s), splitmix(&s));
    for (int r = 0; r < 3; r++)
      for (int i = 0; i < 40; i++) kvbm__tinylfu_increment(t, keys[i]);
    ok(kvbm__tinylfu_size(t) == 120, "40 fresh keys x 3 -> size 120");
    kvbm__tinylfu_reset(t);
    ok(kvbm__tinylfu_size(t) == 20, "reset: size = (120 >> 1) - (160 odd lanes >> 2) = 20");
    for (int i = 0; i < 40; i++)
      if (kvbm__tinylfu_estimate(t, keys[i]) != 1) all1 = 0;
    ok(all1, "and every 3 became 1");
    kvbm__tinylfu_free(t);
  }
  {
    kvbm__tinylfu_new(NULL, 1 << 20, 0, &t);
    kvbm__tinylfu_increment(t, big);
    kvbm__tinylfu_reset(t);
    ok(kvbm__tinylfu_size(t) == 0, "reset saturates size at 0 (1 >> 1 - 4 >> 2 would underflow)");
    kvbm__tinylfu_free(t);
  }

  /* ------------------------------------------------- exact shadow model */
  {
    int decays = 0, bad;
    bad = against_model(100, 0, 40, 3000, 11, &decays);
    ok(bad == 0, "model: cap 100 (25 words, %% path), default sample: %d mismatches", bad);
    bad = against_model(256, 60, 48, 4000, 12, &decays);
    ok(bad == 0 && decays > 10, "model: cap 256 (64 words, mask path), sample 60: %d mismatches, %d decays",
       bad, decays);
    bad = against_model(10, 0, 20, 3000, 13, &decays);
    ok(bad == 0, "model: cap 10 (2 words, saturated), sample 100: %d mismatches", bad);
    bad = against_model(10, 30, 20, 3000, 16, &decays);
    ok(bad == 0 && decays > 5, "model: cap 10 (2 words), sample 30: %d mismatches, %d decays",
       bad, decays);
    bad = against_model(3, 7, 8, 500, 14, &decays);
    ok(bad == 0 && decays > 5, "model: cap 3 (1 word), sample 7: %d mismatches, %d decays", bad, decays);
    bad = against_model(0, 0, 8, 200, 15, &decays);
    ok(bad == 0, "model: cap 0 (1 word, sample 0: decays on every increment): %d mismatches", bad);
  }

  /* --------------------------------------------------------- presets, memory */
  {
#define LOG2(name, lua_name, log2) log2,
    static const unsigned log2_entries[] = {KVBM_FREQUENCY_MAP(LOG2)};
#undef LOG2
    ok(log2_entries[KVBM_FREQUENCY_NONE] == 0 && log2_entries[KVBM_FREQUENCY_SMALL] == 18 &&
           log2_entries[KVBM_FREQUENCY_MEDIUM] == 21 && log2_entries[KVBM_FREQUENCY_LARGE] == 24,
       "capacities: small 2^18, medium 2^21, large 2^24");
  }
  kvbm__tinylfu_new(NULL, 1u << 21, 0, &t);
  ok(kvbm__tinylfu_table_len(t) == 524288 && kvbm__tinylfu_sample_size(t) == 20971520,
     "medium: 524,288 words, decay every 20,971,520 increments");
  ok(kvbm__tinylfu_bytes(t) >= 4u << 20 && kvbm__tinylfu_bytes(t) < (4u << 20) + 4096,
     "medium holds 4 MiB (+ header): %zu bytes", kvbm__tinylfu_bytes(t));
  kvbm__tinylfu_free(t);
  kvbm__tinylfu_new(NULL, 0, 0, &t);
  ok(kvbm__tinylfu_table_len(t) == 1 && kvbm__tinylfu_sample_size(t) == 0,
     "capacity 0: one word, sample size 0");
  kvbm__tinylfu_free(t);
  ok(kvbm__tinylfu_default_sample_size(10) == 100 &&
         kvbm__tinylfu_default_sample_size(429496729) == 4294967290u &&
         kvbm__tinylfu_default_sample_size(429496730) == UINT32_MAX &&
         kvbm__tinylfu_default_sample_size(SIZE_MAX) == UINT32_MAX,
     "default sample size = min(capacity * 10, u32::MAX), no overflow");
  kvbm__tinylfu_free(NULL);
  ok(1, "free(NULL) is a no-op");

  /* ------------------------------------------------------- allocation */
  {
    acct ac = {0, 0, 0, 0, 0};
    kvbm_allocator al = {acct_alloc, &ac};
    kvbm_allocator nul = {null_alloc, NULL};
    t = (kvbm__tinylfu *)&ac;
    ok(kvbm__tinylfu_new(&nul, 100, 0, &t) == KVBM_ENOMEM && t == NULL,
       "allocator returning NULL -> KVBM_ENOMEM, *out = NULL");
    ok(kvbm__tinylfu_new(&al, 100, 0, &t) == KVBM_ENOMEM && t == NULL && ac.calls == 1 &&
           ac.live == 0,
       "failed allocation leaks nothing");
    ac.calls = 0;
    ok(kvbm__tinylfu_new(&al, SIZE_MAX, 0, &t) == KVBM_ENOMEM && t == NULL && ac.calls == 0,
       "table size overflow -> KVBM_ENOMEM without allocating");
    ac.budget = -1;
    ok(kvbm__tinylfu_new(&al, 4096, 0, &t) == 0 && t && ac.calls == 1,
       "one allocation through the allocator");
    ok(ac.live == (long)kvbm__tinylfu_bytes(t), "bytes() = what the allocator handed out (%ld)",
       ac.live);
    for (uint64_t i = 0; i < 10000; i++) kvbm__tinylfu_increment(t, k64(i));
    for (uint64_t i = 0; i < 10000; i++) (void)kvbm__tinylfu_estimate(t, k64(i));
    ok(ac.calls == 1, "increment/estimate/decay never allocate");
    kvbm__tinylfu_free(t);
    ok(ac.live == 0 && ac.bad_osize == 0, "free returns everything, with the right osize");
  }

  { /* the specialised 16-byte hash equals XXH3_64bits_withSecret */
    kvbm__tinylfu *fast = NULL;
    model mm;
    uint64_t seed = 99;
    int same = kvbm__tinylfu_new(NULL, 64, 0, &fast) == 0;
    model_init(&mm, 64, 0);
    for (int n = 0; n < 2000 && same; n++) {
      kvbm_hash k = k128(splitmix(&seed), splitmix(&seed));
      unsigned char b[16];
      wr64(b, k.lo);
      wr64(b + 8, k.hi);
      for (int i = 0; i < 4; i++)
        same &= kvbm__tinylfu_hash(fast, i, k) == XXH3_64bits_withSecret(b, 16, mm.secret[i], 192);
    }
    ok(same, "specialised key hash == XXH3_64bits_withSecret on 2000 random keys x 4 secrets");
    free(mm.lanes);
    kvbm__tinylfu_free(fast);
  }
  return tap_done();
}
