/* test_wire.c - the KvbmCacheEvents MessagePack codec (events-sequence.md
 * 1.3): golden vectors A, B, C, array header widths, every truncation,
 * random mutations and hand-made garbage. Public API only. */
#include <stdlib.h>

#include <kvbm.h>

#include "tap.h"

/* ---------------------------------------------------------------- helpers */

static size_t unhex(const char *s, unsigned char *out) {
  size_t n = 0;
  for (; s[0] && s[1]; s += 2) {
    unsigned v;
    if (s[0] == ' ') {
      s--;
      continue;
    }
    sscanf(s, "%2x", &v);
    out[n++] = (unsigned char)v;
  }
  return n;
}

static void dump_diff(const unsigned char *got, size_t glen, const unsigned char *want, size_t wlen) {
  printf("#   got  (%zu):", glen);
  for (size_t i = 0; i < glen && i < 64; i++) printf(" %02x", got[i]);
  printf("\n#   want (%zu):", wlen);
  for (size_t i = 0; i < wlen && i < 64; i++) printf(" %02x", want[i]);
  printf("\n");
}

static int same_bytes(const unsigned char *got, size_t glen, const unsigned char *want, size_t wlen) {
  int same = glen == wlen && memcmp(got, want, glen) == 0;
  if (!same) dump_diff(got, glen, want, wlen);
  return same;
}

static int same_hash(kvbm_hash a, kvbm_hash b) { return a.hi == b.hi && a.lo == b.lo; }

static int same_batch(const kvbm_batch *a, const kvbm_batch *b) {
  if (a->kind != b->kind || a->n != b->n || a->instance_id.hi != b->instance_id.hi ||
      a->instance_id.lo != b->instance_id.lo)
    return 0;
  for (size_t i = 0; i < a->n; i++)
    if (!same_hash(a->hashes[i], b->hashes[i])) return 0;
  return 1;
}

/* Decodes a copy of buf in a heap block of exactly len bytes, so that an
 * over-read is caught by ASan or valgrind. */
static int decode_exact(const unsigned char *buf, size_t len, kvbm_batch *out, kvbm_hash *hashes,
                        size_t cap, const char **why, size_t *where) {
  unsigned char *copy = malloc(len ? len : 1);
  if (len) memcpy(copy, buf, len);
  *why = NULL;
  *where = (size_t)-1;
  int rc = kvbm_wire_decode(len ? copy : NULL, len, out, hashes, cap, why, where);
  free(copy);
  return rc;
}

/* Expects a decode failure; prints the reason either way. */
static void decode_fails(const unsigned char *buf, size_t len, const char *why_want, size_t where_want,
                         const char *name) {
  kvbm_hash hs[4];
  kvbm_batch b;
  const char *why;
  size_t where;
  int rc = decode_exact(buf, len, &b, hs, 4, &why, &where);
  ok(rc == KVBM_EDECODE && why != NULL && where <= len, "%s: decode_error", name);
  if (rc == KVBM_EDECODE && why) {
    printf("#   why \"%s\" at %zu\n", why, where);
    if (why_want) is_str(why, why_want, "%s: says \"%s\"", name, why_want);
    if (where_want != (size_t)-1) is_u64(where, where_want, "%s: at byte %zu", name, where_want);
  }
}

static void decode_ok(const unsigned char *buf, size_t len, const kvbm_batch *want, const char *name) {
  kvbm_hash hs[20];
  kvbm_batch b;
  const char *why;
  size_t where;
  int rc = decode_exact(buf, len, &b, hs, 20, &why, &where);
  ok(rc == 0, "%s: decodes", name);
  if (rc) printf("#   rc %d, why \"%s\" at %zu\n", rc, why ? why : "?", where);
  else ok(same_batch(&b, want), "%s: decodes to the expected batch", name);
}

static kvbm_hash H(uint64_t cur, int has_parent, uint64_t parent, uint64_t pos) {
  kvbm_hash h = {0, 0};
  if (kvbm_hash_new(cur, has_parent, parent, pos, &h) < 0) printf("# kvbm_hash_new failed\n");
  return h;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15u;
static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545f4914f6cdd1du;
}

/* A valid hash at a random position (any mode 0..2). */
static kvbm_hash random_hash(void) {
  uint64_t pos = rnd() % (KVBM_MAX_POSITION + 1);
  switch (rnd() % 3) {
  case 0: pos &= 0xff; break;
  case 1: pos &= 0xffff; break;
  default: break;
  }
  return H(rnd(), pos != 0, rnd(), pos);
}

/* ---------------------------------------------------------------- vectors */

static const char vector_a[] =
    "9281a643726561746592c41000004080c1014181c200000000000000c41000444484c5054585c602030405060708"
    "c4100000000000000000deadbeefcafef00d";
static const char vector_b[] = "92a853687574646f776ec41000000000000000000000000000003039";

static void test_vector_a(void) {
  unsigned char want[128], got[128];
  size_t wlen = unhex(vector_a, want);
  kvbm_hash hs[2] = {H(0x0102030405060708u, 0, 0, 0),
                     H(0x1112131415161718u, 1, 0x0102030405060708u, 1)};
  kvbm_batch b = {KVBM_EVENT_CREATE, hs, 2, {0, 0xDEADBEEFCAFEF00Du}};
  int n = kvbm_wire_encode(&b, got, sizeof got);
  ok(n == (int)wlen, "vector A: %d bytes", (int)wlen);
  ok(n > 0 && same_bytes(got, (size_t)n, want, wlen), "vector A: byte for byte");
  is_u64(kvbm_wire_encoded_size(2), wlen, "vector A: encoded_size(2)");
  decode_ok(want, wlen, &b, "vector A");
  /* exactly enough room, and one byte short */
  ok(kvbm_wire_encode(&b, got, wlen) == (int)wlen, "vector A: encodes into exactly its size");
  ok(kvbm_wire_encode(&b, got, wlen - 1) == KVBM_EINVAL, "vector A: one byte short -> EINVAL");
  ok(kvbm_wire_encode(&b, NULL, 0) == KVBM_EINVAL, "vector A: no buffer -> EINVAL");
}

static void test_vector_b(void) {
  unsigned char want[64], got[64];
  size_t wlen = unhex(vector_b, want);
  kvbm_batch b = {KVBM_EVENT_SHUTDOWN, NULL, 0, {0, 12345}};
  int n = kvbm_wire_encode(&b, got, sizeof got);
  ok(n == 28 && wlen == 28, "vector B: 28 bytes");
  ok(n > 0 && same_bytes(got, (size_t)n, want, wlen), "vector B: byte for byte");
  ok(kvbm_wire_encode(&b, got, 27) == KVBM_EINVAL, "vector B: 27 bytes of room -> EINVAL");
  decode_ok(want, wlen, &b, "vector B");
  {
    kvbm_batch d;
    const char *why;
    size_t where;
    ok(kvbm_wire_decode(want, wlen, &d, NULL, 0, &why, &where) == 0 && d.n == 0 &&
           d.kind == KVBM_EVENT_SHUTDOWN,
       "vector B: decodes with no hash buffer at all");
  }
}

/* Vector C: Remove([h]), instance 12345, with h a mode-1 hash (position 300)
 * whose bytes are built here from the layout [mode:2][pos:16][cur:64][parent:46]. */
static void test_vector_c(void) {
  const uint64_t cur = 0x1112131415161718u, parent = 0x0102030405060708u, pos = 300;
  kvbm_hash h = H(cur, 1, parent, pos);
  /* u128 = 1<<126 | pos<<110 | cur<<46 | (parent & (2^46-1)) */
  uint64_t hi = (1ull << 62) | (pos << 46) | (cur >> 18);
  uint64_t lo = (cur << 46) | (parent & ((1ull << 46) - 1));
  is_u64(h.hi, hi, "vector C: hash high word from the layout");
  is_u64(h.lo, lo, "vector C: hash low word from the layout");
  is_u64(h.hi, 0x404b044484c50545u, "vector C: hash high word literal");
  is_u64(h.lo, 0x85c6030405060708u, "vector C: hash low word literal");

  unsigned char want[64], got[64];
  size_t w = 0;
  want[w++] = 0x92;
  want[w++] = 0x81;
  want[w++] = 0xa6;
  memcpy(want + w, "Remove", 6), w += 6;
  want[w++] = 0x91;
  want[w++] = 0xc4, want[w++] = 0x10;
  kvbm_hash_to_bytes(h, want + w), w += 16;
  want[w++] = 0xc4, want[w++] = 0x10;
  memset(want + w, 0, 14), w += 14;
  want[w++] = 0x30, want[w++] = 0x39;
  ok(w == 46, "vector C: 46 bytes by construction");
  unsigned char lit[64];
  size_t llen = unhex("9281a652656d6f766591c410404b044484c5054585c6030405060708"
                      "c41000000000000000000000000000003039",
                      lit);
  ok(same_bytes(want, w, lit, llen), "vector C: construction matches the literal");

  kvbm_batch b = {KVBM_EVENT_REMOVE, &h, 1, {0, 12345}};
  int n = kvbm_wire_encode(&b, got, sizeof got);
  ok(n == 46, "vector C: encodes to 46 bytes");
  ok(n > 0 && same_bytes(got, (size_t)n, want, w), "vector C: byte for byte");
  decode_ok(want, w, &b, "vector C");
}

/* ---------------------------------------------------------- round trips */

static void test_round_trip(size_t n, unsigned char hdr0, size_t hdrlen) {
  kvbm_hash *hs = malloc((n ? n : 1) * sizeof *hs), *back = malloc((n ? n : 1) * sizeof *back);
  for (size_t i = 0; i < n; i++) hs[i] = random_hash();
  kvbm_instance_id id = {rnd(), rnd()};
  kvbm_batch b = {n % 2 ? KVBM_EVENT_REMOVE : KVBM_EVENT_CREATE, hs, n, id};
  size_t need = kvbm_wire_encoded_size(n);
  ok(need == 9 + hdrlen + 18 * n + 18, "n=%zu: encoded_size %zu", n, need);
  unsigned char *buf = malloc(need);
  int len = kvbm_wire_encode(&b, buf, need);
  ok(len == (int)need, "n=%zu: encode writes encoded_size bytes", n);
  ok(len > 9 && buf[9] == hdr0, "n=%zu: array header 0x%02x (%zu bytes)", n, hdr0, hdrlen);
  if (hdrlen == 3) ok(buf[10] == (unsigned char)(n >> 8) && buf[11] == (unsigned char)n, "n=%zu: array16 count", n);
  if (hdrlen == 5)
    ok(buf[10] == (unsigned char)(n >> 24) && buf[11] == (unsigned char)(n >> 16) &&
           buf[12] == (unsigned char)(n >> 8) && buf[13] == (unsigned char)n,
       "n=%zu: array32 count", n);
  kvbm_batch d;
  const char *why = NULL;
  size_t where = 0;
  int rc = kvbm_wire_decode(buf, (size_t)len, &d, back, n, &why, &where);
  ok(rc == 0, "n=%zu: decodes with cap = n", n);
  if (rc) printf("#   why \"%s\" at %zu\n", why, where);
  ok(rc == 0 && same_batch(&b, &d) && d.hashes == back, "n=%zu: round trip", n);
  if (n > 0) {
    rc = kvbm_wire_decode(buf, (size_t)len, &d, back, n - 1, &why, &where);
    ok(rc == KVBM_EDECODE && strcmp(why, "more hashes than cap") == 0 && where == 9,
       "n=%zu: cap n-1 -> decode_error \"more hashes than cap\" at 9", n);
  }
  free(buf);
  free(hs);
  free(back);
}

/* --------------------------------------------------------- truncations */

static void test_truncations(void) {
  unsigned char a[128], b[64];
  size_t alen = unhex(vector_a, a), blen = unhex(vector_b, b);
  int all = 1, msgs = 1;
  for (size_t len = 0; len < alen; len++) {
    kvbm_hash hs[4];
    kvbm_batch d;
    const char *why;
    size_t where;
    int rc = decode_exact(a, len, &d, hs, 4, &why, &where);
    if (rc != KVBM_EDECODE || !why || where > len) {
      all = 0;
      printf("#   prefix %zu: rc %d\n", len, rc);
    } else if (strcmp(why, "truncated") != 0) {
      msgs = 0;
      printf("#   prefix %zu: \"%s\" at %zu\n", len, why, where);
    }
  }
  ok(all, "every one of the %zu proper prefixes of vector A fails with decode_error", alen);
  ok(msgs, "... and every one says \"truncated\"");
  all = 1;
  for (size_t len = 0; len < blen; len++) {
    kvbm_hash hs[1];
    kvbm_batch d;
    const char *why;
    size_t where;
    if (decode_exact(b, len, &d, hs, 1, &why, &where) != KVBM_EDECODE || !why || where > len) all = 0;
  }
  ok(all, "every proper prefix of vector B fails with decode_error");
}

/* ------------------------------------------------------------ mutations */

static void test_mutations(void) {
  /* seeds: A, B, C-like, a 20-hash Create (array16), and lenient forms */
  unsigned char seeds[5][512];
  size_t lens[5];
  lens[0] = unhex(vector_a, seeds[0]);
  lens[1] = unhex(vector_b, seeds[1]);
  {
    kvbm_hash h = random_hash();
    kvbm_batch b = {KVBM_EVENT_REMOVE, &h, 1, {rnd(), rnd()}};
    lens[2] = (size_t)kvbm_wire_encode(&b, seeds[2], sizeof seeds[2]);
  }
  {
    kvbm_hash hs[20];
    for (int i = 0; i < 20; i++) hs[i] = random_hash();
    kvbm_batch b = {KVBM_EVENT_CREATE, hs, 20, {0, 7}};
    lens[3] = (size_t)kvbm_wire_encode(&b, seeds[3], sizeof seeds[3]);
  }
  /* Create, array32 header, one hash as 16 u8 (fixints and cc), id as bin16 */
  lens[4] = unhex("92 81 a6 437265617465 dd00000001 dc0010 00 01 02 03 04 05 06 07 cc80 cc81 0a 0b 0c 0d 0e 0f"
                  " c50010 00000000000000000000000000000001",
                  seeds[4]);

  int crashes_would_show = 1, reencode_ok = 1;
  unsigned decoded = 0, failed = 0;
  const int rounds = 6000;
  for (int r = 0; r < rounds; r++) {
    int s = (int)(rnd() % 5);
    unsigned char m[600];
    size_t len = lens[s];
    memcpy(m, seeds[s], len);
    int kind = (int)(rnd() % 6);
    int edits = 1 + (int)(rnd() % 4);
    for (int e = 0; e < edits; e++) {
      size_t at = len ? (size_t)(rnd() % len) : 0;
      switch (kind) {
      case 0: /* flip a bit */
        if (len) m[at] ^= (unsigned char)(1u << (rnd() % 8));
        break;
      case 1: /* random byte */
        if (len) m[at] = (unsigned char)rnd();
        break;
      case 2: /* interesting byte */
      {
        static const unsigned char interesting[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc4,
                                                    0xc5, 0xc6, 0xcc, 0xd9, 0xdc, 0xdd, 0xde, 0xdf, 0xff, 0x10};
        if (len) m[at] = interesting[rnd() % sizeof interesting];
        break;
      }
      case 3: /* cut */
        len = at;
        break;
      case 4: /* insert a byte */
        if (len < sizeof m - 1) {
          memmove(m + at + 1, m + at, len - at);
          m[at] = (unsigned char)rnd();
          len++;
        }
        break;
      default: /* delete a byte */
        if (len) {
          memmove(m + at, m + at + 1, len - at - 1);
          len--;
        }
        break;
      }
    }
    kvbm_hash hs[32];
    kvbm_batch d;
    const char *why;
    size_t where;
    int rc = decode_exact(m, len, &d, hs, 32, &why, &where);
    if (rc == 0) {
      decoded++;
      unsigned char re[1024];
      int n = kvbm_wire_encode(&d, re, sizeof re);
      kvbm_hash hs2[32];
      kvbm_batch d2;
      if (n <= 0 || kvbm_wire_decode(re, (size_t)n, &d2, hs2, 32, &why, &where) != 0 ||
          !same_batch(&d, &d2)) {
        reencode_ok = 0;
        printf("#   round %d: decoded but did not re-encode (rc %d)\n", r, n);
      }
    } else {
      failed++;
      if (rc != KVBM_EDECODE || !why || where > len) {
        crashes_would_show = 0;
        printf("#   round %d: rc %d why %s where %zu len %zu\n", r, rc, why ? why : "NULL", where, len);
      }
    }
  }
  printf("# mutations: %d rounds, %u decoded, %u rejected\n", rounds, decoded, failed);
  ok(crashes_would_show, "%d random mutations: every failure is a clean decode_error with why/where", rounds);
  ok(reencode_ok, "... every success re-encodes and decodes to the same batch");
  ok(decoded > 0 && failed > 0, "... both outcomes occurred (%u / %u)", decoded, failed);

  /* pure random bytes, any length */
  int clean = 1;
  for (int r = 0; r < 2000; r++) {
    unsigned char m[64];
    size_t len = (size_t)(rnd() % sizeof m);
    for (size_t i = 0; i < len; i++) m[i] = (unsigned char)rnd();
    if (rnd() % 2 && len) m[0] = 0x92;
    kvbm_hash hs[4];
    kvbm_batch d;
    const char *why;
    size_t where;
    int rc = decode_exact(m, len, &d, hs, 4, &why, &where);
    if (rc != 0 && (rc != KVBM_EDECODE || !why || where > len)) clean = 0;
  }
  ok(clean, "2000 random byte strings: success or a clean decode_error");
}

/* -------------------------------------------------------------- garbage */

static void test_garbage(void) {
  unsigned char m[256];
  size_t n;
  kvbm_hash h0 = H(0x0102030405060708u, 0, 0, 0);
  kvbm_batch want;

  decode_fails(m, 0, "truncated", 0, "empty input");
  n = unhex("c0", m);
  decode_fails(m, n, "expected an array of 2", 0, "nil (c0)");
  n = unhex("c3", m);
  decode_fails(m, n, "expected an array of 2", 0, "true (c3)");
  n = unhex("91a853687574646f776e", m);
  decode_fails(m, n, "expected an array of 2", 0, "array of 1");
  n = unhex("93a853687574646f776ec41000000000000000000000000000003039c0", m);
  decode_fails(m, n, "expected an array of 2", 0, "array of 3");
  n = unhex("82a66576656e7473a853687574646f776e", m);
  decode_fails(m, n, "expected an array of 2", 0, "struct as a map");
  n = unhex("dd00000002", m);
  decode_fails(m, n, "truncated", 5, "array32 of 2 with nothing after it");
  /* array32 claiming 2^32-1 hashes in a short message: no allocation, no read */
  n = unhex("9281a6437265617465ddffffffffc410000000000000000000000000000000000000", m);
  decode_fails(m, n, "truncated", 9, "huge array32 count");
  n = unhex("9281a6437265617465dc0100c41000004080c1014181c200000000000000", m);
  decode_fails(m, n, "truncated", 9, "array16 count larger than the input");

  /* bins of the wrong length */
  n = unhex("9281a643726561746591c40f00004080c1014181c2000000000000c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected 16 bytes", 10, "hash bin of length 15");
  n = unhex("9281a643726561746591c41100004080c1014181c20000000000000000c41000000000000000000000000000003039",
            m);
  decode_fails(m, n, "expected 16 bytes", 10, "hash bin of length 17");
  n = unhex("92a853687574646f776ec40f000000000000000000000000003039", m);
  decode_fails(m, n, "expected 16 bytes", 10, "instance id bin of length 15");
  n = unhex("92a853687574646f776ec4110000000000000000000000000000303900", m);
  decode_fails(m, n, "expected 16 bytes", 10, "instance id bin of length 17");
  n = unhex("92a853687574646f776ecd3039", m);
  decode_fails(m, n, "expected an instance id (bin 16)", 10, "instance id as a plain uint16");
  n = unhex("92a853687574646f776ea0", m);
  decode_fails(m, n, "expected an instance id (bin 16)", 10, "instance id as a string");

  /* variant names */
  n = unhex("9281a65570646174659190c41000000000000000000000000000003039", m);
  decode_fails(m, n, "unknown event kind", 2, "unknown variant \"Update\"");
  n = unhex("9281a5437265617490c41000000000000000000000000000003039", m);
  decode_fails(m, n, "unknown event kind", 2, "\"Creat\" (wrong string length)");
  n = unhex("9281a7437265617465739090c41000000000000000000000000000003039", m);
  decode_fails(m, n, "unknown event kind", 2, "\"Creates\" (wrong string length)");
  n = unhex("9281a663726561746590c41000000000000000000000000000003039", m);
  decode_fails(m, n, "unknown event kind", 2, "\"create\" (case matters)");
  n = unhex("92a7536875746f776ec41000000000000000000000000000003039", m);
  decode_fails(m, n, "unknown event kind", 1, "\"Shutown\"");
  n = unhex("92a6437265617465c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a map for Create/Remove", 1, "bare \"Create\" (no hashes)");
  n = unhex("928100 90c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a variant name (string)", 2, "variant index form {0: [...]}");
  n = unhex("9281a853687574646f776ec0c41000000000000000000000000000003039", m);
  decode_fails(m, n, "Shutdown is a unit variant (no map)", 2, "Shutdown encoded with a map");
  n = unhex("9282a643726561746590a6526d6f766590c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a map of 1", 1, "map of 2");
  n = unhex("9280c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a map of 1", 1, "empty map");
  n = unhex("92c0c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a map or \"Shutdown\"", 1, "nil events");
  n = unhex("9281a6437265617465c0c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected an array of hashes", 9, "Create: nil instead of the hash array");
  n = unhex("9281a643726561746591c0c41000000000000000000000000000003039", m);
  decode_fails(m, n, "expected a hash (bin 16)", 10, "Create: nil instead of a hash");

  /* trailing bytes */
  n = unhex(vector_b, m);
  m[n++] = 0x00;
  decode_fails(m, n, "trailing bytes", 28, "vector B plus one byte");
  n = unhex(vector_a, m);
  m[n++] = 0xc0;
  decode_fails(m, n, "trailing bytes", 64, "vector A plus one byte");

  /* a hash with mode bits 11 */
  n = unhex("9281a643726561746591c410c0000000000000000000000000000001c41000000000000000000000000000003039", m);
  decode_fails(m, n, "invalid hash (mode bits 11)", 10, "hash with mode bits 11");
  n = unhex("9281a643726561746591dc0010ccc0 00 00 00 00 00 00 00 00 00 00 00 00 00 00 01"
            "c41000000000000000000000000000003039",
            m);
  decode_fails(m, n, "invalid hash (mode bits 11)", 10, "hash as 16 ints with mode bits 11");

  /* u128 as an array of 16: only u8 elements */
  n = unhex("92a853687574646f776edc0010000000000000000000000000000000cd3039", m);
  decode_fails(m, n, "expected a byte (u8)", 28, "instance id array with a uint16 element");
  n = unhex("92a853687574646f776edc0010000000000000000000000000000000ff39", m);
  decode_fails(m, n, "expected a byte (u8)", 28, "instance id array with a negative fixint");
  n = unhex("92a853687574646f776e9f000000000000000000000000000000", m);
  decode_fails(m, n, "expected 16 bytes", 10, "instance id array of 15");
  n = unhex("92a853687574646f776edc0010000000000000000000000000000000cc", m);
  decode_fails(m, n, "truncated", 10, "instance id array cut inside a uint8");

  /* accepted lenient forms (rmp-serde reads them too) */
  want = (kvbm_batch){KVBM_EVENT_SHUTDOWN, NULL, 0, {0, 12345}};
  n = unhex("92a853687574646f776edc00100000000000000000000000000000cc3039", m);
  decode_ok(m, n, &want, "instance id as an array of 16 u8 (fixint + uint8)");
  n = unhex("dc0002d90853687574646f776ec5001000000000000000000000000000003039", m);
  decode_ok(m, n, &want, "array16 top level, str8 name, bin16 id");
  want = (kvbm_batch){KVBM_EVENT_CREATE, &h0, 1, {0, 1}};
  n = unhex("9281a6437265617465dc0001c41000004080c1014181c200000000000000c41000000000000000000000000000000001",
            m);
  decode_ok(m, n, &want, "Create with an array16 header for 1 hash");
  n = unhex("9281a6437265617465dd00000001c41000004080c1014181c200000000000000"
            "c41000000000000000000000000000000001",
            m);
  decode_ok(m, n, &want, "Create with an array32 header for 1 hash");
  n = unhex("9281a6437265617465 91 dc0010 00 00 40 cc80 cc c1 01 41 cc81 ccc2 00 00 00 00 00 00 00"
            " c41000000000000000000000000000000001",
            m);
  decode_ok(m, n, &want, "hash as an array of 16 u8");
  n = unhex("92de0001a6437265617465 91 c41000004080c1014181c200000000000000 c41000000000000000000000000000000001",
            m);
  decode_ok(m, n, &want, "map16 of 1");
  want = (kvbm_batch){KVBM_EVENT_REMOVE, NULL, 0, {0, 12345}};
  n = unhex("9281a652656d6f766590c41000000000000000000000000000003039", m);
  decode_ok(m, n, &want, "Remove of no hashes");

  /* bad arguments */
  {
    kvbm_batch d;
    const char *why = NULL;
    n = unhex(vector_a, m);
    ok(kvbm_wire_decode(m, n, NULL, NULL, 0, &why, NULL) == KVBM_EINVAL, "decode: NULL out -> EINVAL");
    ok(kvbm_wire_decode(NULL, 5, &d, NULL, 0, NULL, NULL) == KVBM_EINVAL, "decode: NULL buf -> EINVAL");
    ok(kvbm_wire_decode(m, n, &d, NULL, 4, NULL, NULL) == KVBM_EINVAL, "decode: NULL hashes with cap -> EINVAL");
    ok(kvbm_wire_decode(m, n, &d, NULL, 0, NULL, NULL) == KVBM_EDECODE,
       "decode: 2 hashes, cap 0 -> decode_error (why/where may be NULL)");
  }
}

static void test_encode_errors(void) {
  unsigned char buf[128];
  kvbm_hash good = H(1, 0, 0, 0), bad = {0xc000000000000000u, 1};
  kvbm_hash two[2] = {good, bad};
  kvbm_batch b = {KVBM_EVENT_CREATE, two, 2, {0, 1}};
  ok(kvbm_wire_encode(&b, buf, sizeof buf) == KVBM_EINVAL, "encode: a hash with mode bits 11 -> EINVAL");
  b = (kvbm_batch){KVBM_EVENT_SHUTDOWN, &good, 1, {0, 1}};
  ok(kvbm_wire_encode(&b, buf, sizeof buf) == KVBM_EINVAL, "encode: Shutdown with hashes -> EINVAL");
  b = (kvbm_batch){(kvbm_event_kind)7, NULL, 0, {0, 1}};
  ok(kvbm_wire_encode(&b, buf, sizeof buf) == KVBM_EINVAL, "encode: unknown kind -> EINVAL");
  b = (kvbm_batch){KVBM_EVENT_REMOVE, NULL, 3, {0, 1}};
  ok(kvbm_wire_encode(&b, buf, sizeof buf) == KVBM_EINVAL, "encode: NULL hashes with n > 0 -> EINVAL");
  ok(kvbm_wire_encode(NULL, buf, sizeof buf) == KVBM_EINVAL, "encode: NULL batch -> EINVAL");
  b = (kvbm_batch){KVBM_EVENT_REMOVE, &good, 1, {0, 1}};
  int all = 1;
  for (size_t size = 0; size < 46; size++) {
    memset(buf, 0xee, sizeof buf);
    if (kvbm_wire_encode(&b, buf, size) != KVBM_EINVAL || buf[0] != 0xee) all = 0;
  }
  ok(all, "encode: every buffer smaller than 46 bytes -> EINVAL, nothing written");
  ok(kvbm_wire_encode(&b, buf, 46) == 46, "encode: 46 bytes of room is enough");
  b = (kvbm_batch){KVBM_EVENT_CREATE, NULL, 0, {~0ull, ~0ull}};
  ok(kvbm_wire_encode(&b, buf, sizeof buf) == 28 && buf[9] == 0x90, "encode: empty Create is 28 bytes with 0x90");
  {
    static const unsigned char ff[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    ok(buf[10] == 0xc4 && buf[11] == 0x10 && memcmp(buf + 12, ff, 16) == 0,
       "encode: instance id 2^128-1 as c4 10 ff*16");
  }
  is_u64(kvbm_wire_encoded_size(0), 28, "encoded_size(0) = 28");
  is_u64(kvbm_wire_encoded_size(15), 28 + 15 * 18, "encoded_size(15)");
  is_u64(kvbm_wire_encoded_size(16), 30 + 16 * 18, "encoded_size(16): array16");
  is_u64(kvbm_wire_encoded_size(65536), 32 + 65536 * 18ull, "encoded_size(65536): array32");
  ok(kvbm_wire_encoded_size(SIZE_MAX / 2) == SIZE_MAX, "encoded_size of an absurd count saturates");
}

int main(void) {
  test_vector_a();
  test_vector_b();
  test_vector_c();
  test_round_trip(0, 0x90, 1);
  test_round_trip(1, 0x91, 1);
  test_round_trip(15, 0x9f, 1);
  test_round_trip(16, 0xdc, 3);
  test_round_trip(65535, 0xdc, 3);
  test_round_trip(65536, 0xdd, 5);
  test_truncations();
  test_mutations();
  test_garbage();
  test_encode_errors();
  return tap_done();
}
