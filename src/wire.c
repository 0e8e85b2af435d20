/* wire.c - KvbmCacheEvents in MessagePack, byte for byte as rmp-serde 1.x
 * (DefaultConfig) writes it, and a strict decoder for hostile input.
 *
 *   [ {"Create"|"Remove": [bin8(16) hash...]} | "Shutdown", bin8(16) instance_id ]
 *
 * Encoding always uses the canonical (smallest) headers. Decoding accepts the
 * other header widths rmp-serde accepts (array16/32, map16/32, str8/16/32,
 * bin16/32) and a u128 written as an array of 16 u8 (positive fixint or
 * uint8), and rejects everything else. It never reads past len and checks
 * every length prefix against the bytes that remain before believing it. */
#include <limits.h>

#include "internal.h"

#define HASH_BYTES 16
#define BIN_ITEM (2 + HASH_BYTES) /* c4 10 + 16 bytes: the smallest hash item */

/* ------------------------------------------------------------- encoding */

static size_t array_header_size(size_t n) { return n <= 15 ? 1 : n <= 0xffff ? 3 : 5; }

size_t kvbm_wire_encoded_size(size_t nhashes) {
  /* fixarray(2) + fixmap(1) + fixstr(6) + header + n items + instance id.
   * Shutdown (fixarray + fixstr(8) + instance id) is 28 bytes, the same as
   * an empty Create. */
  if (nhashes > UINT32_MAX || nhashes > (SIZE_MAX - 64) / BIN_ITEM) return SIZE_MAX;
  return 1 + 1 + 7 + array_header_size(nhashes) + nhashes * BIN_ITEM + BIN_ITEM;
}

static inline void put_be64(unsigned char *p, uint64_t v) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v); /* one store instead of eight (the encoder's hot loop) */
  memcpy(p, &v, 8);
#else
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
#endif
}

static unsigned char *put_u128(unsigned char *p, uint64_t hi, uint64_t lo) {
  *p++ = 0xc4;
  *p++ = HASH_BYTES;
  put_be64(p, hi);
  put_be64(p + 8, lo);
  return p + HASH_BYTES;
}

static unsigned char *put_str(unsigned char *p, const char *s, size_t n) {
  *p++ = (unsigned char)(0xa0 | n); /* fixstr: n < 32 */
  memcpy(p, s, n);
  return p + n;
}

int kvbm_wire_encode(const kvbm_batch *b, unsigned char *buf, size_t size) {
  if (!b || (!buf && size)) return KVBM_EINVAL;
  size_t need;
  if (b->kind == KVBM_EVENT_SHUTDOWN) {
    if (b->n) return KVBM_EINVAL;
    need = 1 + 9 + BIN_ITEM;
  } else if (b->kind == KVBM_EVENT_CREATE || b->kind == KVBM_EVENT_REMOVE) {
    if (b->n && !b->hashes) return KVBM_EINVAL;
    need = kvbm_wire_encoded_size(b->n);
    if (need == SIZE_MAX) return KVBM_EINVAL;
    for (size_t i = 0; i < b->n; i++)
      if (!kvbm_hash_valid(b->hashes[i])) return KVBM_EINVAL;
  } else {
    return KVBM_EINVAL;
  }
  if (need > (size_t)INT_MAX || size < need || !buf) return KVBM_EINVAL;

  unsigned char *p = buf;
  *p++ = 0x92;
  if (b->kind == KVBM_EVENT_SHUTDOWN) {
    p = put_str(p, "Shutdown", 8);
  } else {
    size_t n = b->n;
    *p++ = 0x81;
    p = put_str(p, b->kind == KVBM_EVENT_CREATE ? "Create" : "Remove", 6);
    if (n <= 15) {
      *p++ = (unsigned char)(0x90 | n);
    } else if (n <= 0xffff) {
      *p++ = 0xdc;
      *p++ = (unsigned char)(n >> 8);
      *p++ = (unsigned char)n;
    } else {
      *p++ = 0xdd;
      for (int i = 3; i >= 0; i--) *p++ = (unsigned char)(n >> (8 * i));
    }
    for (size_t i = 0; i < n; i++) p = put_u128(p, b->hashes[i].hi, b->hashes[i].lo);
  }
  p = put_u128(p, b->instance_id.hi, b->instance_id.lo);
  return (int)(p - buf);
}

/* ------------------------------------------------------------- decoding */

typedef struct {
  const unsigned char *buf;
  size_t len, pos;
  const char *why;
  size_t where;
} reader;

/* Records the first failure (at byte offset at) and returns -1. */
static int fail(reader *r, const char *why, size_t at) {
  r->why = why;
  r->where = at;
  return -1;
}

static size_t remaining(const reader *r) { return r->len - r->pos; }

/* Big-endian unsigned of width w (1, 2 or 4) at r->pos; the caller checked
 * that the bytes are there. */
static uint32_t get_be(reader *r, int w) {
  uint32_t v = 0;
  for (int i = 0; i < w; i++) v = v << 8 | r->buf[r->pos++];
  return v;
}

enum { T_ARRAY, T_MAP, T_STR, T_BIN };

/* Reads a header of type t (any of the widths msgpack has for it) and
 * returns its count in *n; a marker of another type fails with
 * what_expected. The count is not checked against the remaining bytes here. */
static int read_header(reader *r, int t, uint32_t *n, const char *what_expected) {
  size_t at = r->pos;
  if (remaining(r) < 1) return fail(r, "truncated", at);
  unsigned m = r->buf[r->pos];
  int w = -1; /* width of the length that follows the marker; 0: in the marker */
  uint32_t fixed = 0;
  switch (t) {
  case T_ARRAY:
    if ((m & 0xf0) == 0x90) w = 0, fixed = m & 0x0f;
    else if (m == 0xdc) w = 2;
    else if (m == 0xdd) w = 4;
    break;
  case T_MAP:
    if ((m & 0xf0) == 0x80) w = 0, fixed = m & 0x0f;
    else if (m == 0xde) w = 2;
    else if (m == 0xdf) w = 4;
    break;
  case T_STR:
    if ((m & 0xe0) == 0xa0) w = 0, fixed = m & 0x1f;
    else if (m == 0xd9) w = 1;
    else if (m == 0xda) w = 2;
    else if (m == 0xdb) w = 4;
    break;
  default: /* T_BIN */
    if (m == 0xc4) w = 1;
    else if (m == 0xc5) w = 2;
    else if (m == 0xc6) w = 4;
    break;
  }
  if (w < 0) return fail(r, what_expected, at);
  r->pos++;
  if (w == 0) {
    *n = fixed;
    return 0;
  }
  if (remaining(r) < (size_t)w) return fail(r, "truncated", at);
  *n = get_be(r, w);
  return 0;
}

/* A u128 as rmp-serde reads serde_bytes_u128 (and a plain u128): a 16-byte
 * bin, or an array of 16 u8 (positive fixint or uint8). */
static int read_u128(reader *r, uint64_t *hi, uint64_t *lo, const char *what) {
  size_t at = r->pos;
  unsigned char b[HASH_BYTES];
  uint32_t n;
  if (remaining(r) < 1) return fail(r, "truncated", at);
  unsigned m = r->buf[at];
  if (m == 0xc4 || m == 0xc5 || m == 0xc6) {
    if (read_header(r, T_BIN, &n, what) < 0) return -1;
    if (n != HASH_BYTES) return fail(r, "expected 16 bytes", at);
    if (remaining(r) < HASH_BYTES) return fail(r, "truncated", at);
    memcpy(b, r->buf + r->pos, HASH_BYTES);
    r->pos += HASH_BYTES;
  } else if ((m & 0xf0) == 0x90 || m == 0xdc || m == 0xdd) {
    if (read_header(r, T_ARRAY, &n, what) < 0) return -1;
    if (n != HASH_BYTES) return fail(r, "expected 16 bytes", at);
    for (int i = 0; i < HASH_BYTES; i++) {
      size_t ia = r->pos;
      if (remaining(r) < 1) return fail(r, "truncated", at);
      unsigned c = r->buf[r->pos];
      if (c <= 0x7f) {
        b[i] = (unsigned char)c;
        r->pos++;
      } else if (c == 0xcc) {
        if (remaining(r) < 2) return fail(r, "truncated", at);
        b[i] = r->buf[r->pos + 1];
        r->pos += 2;
      } else {
        return fail(r, "expected a byte (u8)", ia);
      }
    }
  } else {
    return fail(r, what, at);
  }
  *hi = *lo = 0;
  for (int i = 0; i < 8; i++) {
    *hi = *hi << 8 | b[i];
    *lo = *lo << 8 | b[8 + i];
  }
  return 0;
}

/* A variant name: the str header and its bytes. Sets *kind or fails. */
static int read_variant(reader *r, kvbm_event_kind *kind) {
  static const struct {
    const char *name;
    kvbm_event_kind kind;
  } names[] = {{"Create", KVBM_EVENT_CREATE}, {"Remove", KVBM_EVENT_REMOVE},
               {"Shutdown", KVBM_EVENT_SHUTDOWN}};
  size_t at = r->pos;
  uint32_t n;
  if (read_header(r, T_STR, &n, "expected a variant name (string)") < 0) return -1;
  if (n > remaining(r)) return fail(r, "truncated", at);
  const unsigned char *s = r->buf + r->pos;
  r->pos += n;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0) {
      *kind = names[i].kind;
      return 0;
    }
  return fail(r, "unknown event kind", at);
}

static int decode(reader *r, kvbm_batch *out, kvbm_hash *hashes, size_t cap) {
  uint32_t n;
  size_t at = r->pos;
  kvbm_event_kind kind;
  size_t count = 0;

  if (r->len == 0) return fail(r, "truncated", 0);
  if (read_header(r, T_ARRAY, &n, "expected an array of 2") < 0) return -1;
  if (n != 2) return fail(r, "expected an array of 2", at);

  /* events: "Shutdown", or a one-entry map from "Create"/"Remove" to hashes */
  at = r->pos;
  if (remaining(r) < 1) return fail(r, "truncated", at);
  unsigned m = r->buf[at];
  if ((m & 0xe0) == 0xa0 || m == 0xd9 || m == 0xda || m == 0xdb) {
    if (read_variant(r, &kind) < 0) return -1;
    if (kind != KVBM_EVENT_SHUTDOWN) return fail(r, "expected a map for Create/Remove", at);
  } else {
    if (read_header(r, T_MAP, &n, "expected a map or \"Shutdown\"") < 0) return -1;
    if (n != 1) return fail(r, "expected a map of 1", at);
    size_t vat = r->pos;
    if (read_variant(r, &kind) < 0) return -1;
    if (kind == KVBM_EVENT_SHUTDOWN) return fail(r, "Shutdown is a unit variant (no map)", vat);
    at = r->pos;
    if (read_header(r, T_ARRAY, &n, "expected an array of hashes") < 0) return -1;
    /* Each hash takes at least 18 bytes: a count the input cannot hold is
     * refused before anything else (no trust in the length prefix). */
    if ((uint64_t)n > remaining(r) / BIN_ITEM)
      return fail(r, "truncated", at); /* or a lying count */
    if (n > cap) return fail(r, "more hashes than cap", at);
    for (uint32_t i = 0; i < n; i++) {
      size_t hat = r->pos;
      kvbm_hash h;
      if (read_u128(r, &h.hi, &h.lo, "expected a hash (bin 16)") < 0) return -1;
      if (!kvbm_hash_valid(h)) return fail(r, "invalid hash (mode bits 11)", hat);
      hashes[i] = h;
    }
    count = n;
  }

  kvbm_instance_id id;
  if (read_u128(r, &id.hi, &id.lo, "expected an instance id (bin 16)") < 0) return -1;
  if (r->pos != r->len) return fail(r, "trailing bytes", r->pos);

  out->kind = kind;
  out->hashes = hashes;
  out->n = count;
  out->instance_id = id;
  return 0;
}

int kvbm_wire_decode(const unsigned char *buf, size_t len, kvbm_batch *out, kvbm_hash *hashes,
                     size_t cap, const char **why, size_t *where) {
  reader r = {buf, len, 0, NULL, 0};
  if (!out || (!buf && len) || (!hashes && cap)) {
    if (why) *why = "invalid argument";
    if (where) *where = 0;
    return KVBM_EINVAL;
  }
  if (decode(&r, out, hashes, cap) < 0) {
    if (why) *why = r.why;
    if (where) *where = r.where;
    return KVBM_EDECODE;
  }
  return 0;
}
