/* hash.c - block, chain and positional lineage hashes (dynamo-tokens layout B). */
#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL /* the hash is the hot path: let it inline */
#include <xxhash.h>

#include "internal.h"

static inline uint64_t block_hash(const uint32_t *tokens, size_t n, uint64_t salt) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return XXH3_64bits_withSeed(tokens, n * sizeof *tokens, salt);
#else
  /* Dynamo hashes the tokens' little-endian bytes; rebuild them here. */
  XXH3_state_t st;
  unsigned char buf[256];
  size_t used = 0;
  XXH3_64bits_reset_withSeed(&st, salt);
  for (size_t i = 0; i < n; i++) {
    buf[used++] = (unsigned char)tokens[i];
    buf[used++] = (unsigned char)(tokens[i] >> 8);
    buf[used++] = (unsigned char)(tokens[i] >> 16);
    buf[used++] = (unsigned char)(tokens[i] >> 24);
    if (used == sizeof buf) {
      XXH3_64bits_update(&st, buf, used);
      used = 0;
    }
  }
  XXH3_64bits_update(&st, buf, used);
  return XXH3_64bits_digest(&st);
#endif
}

static inline uint64_t chain_hash(uint64_t parent, uint64_t block_hash) {
  unsigned char b[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(b, &parent, 8); /* the LE64 pair, in two stores */
  memcpy(b + 8, &block_hash, 8);
#else
  for (int i = 0; i < 8; i++) {
    b[i] = (unsigned char)(parent >> (8 * i));
    b[8 + i] = (unsigned char)(block_hash >> (8 * i));
  }
#endif
  return XXH3_64bits_withSeed(b, sizeof b, KVBM_CHAIN_SEED);
}

/* Layout B: mode 0/1/2 keeps R = 54/46/38 bits of the parent hash. */
uint64_t kvbm_block_hash(const uint32_t *tokens, size_t n, uint64_t salt) {
  return block_hash(tokens, n, salt);
}

uint64_t kvbm_chain_hash(uint64_t parent, uint64_t child) { return chain_hash(parent, child); }

static unsigned mode_for(uint64_t position) {
  return position < (1u << 8) ? 0 : position < (1u << 16) ? 1 : 2;
}
static const unsigned parent_bits[3] = {54, 46, 38};

static uint64_t low_bits(uint64_t v, unsigned bits) { return v & ((UINT64_C(1) << bits) - 1); }

int kvbm_hash_new(uint64_t current, int has_parent, uint64_t parent, uint64_t position,
                  kvbm_hash *out) {
  if (position > KVBM_MAX_POSITION) return KVBM_EPOSITION_LIMIT;
  unsigned mode = mode_for(position), r = parent_bits[mode];
  out->hi = ((uint64_t)mode << 62) | (position << r) | (current >> (64 - r));
  out->lo = (current << r) | (has_parent ? low_bits(parent, r) : 0);
  return 0;
}

/* One pass: hash block i from src, copy it while it is in L1, chain it.
 * The block hashes do not depend on each other, so the CPU overlaps the
 * next block's hash with this block's (short) chain step. The
 * constant-length instances let the compiler specialise XXH3 for the common
 * block sizes. */
#define HASH_BLOCKS(len)                                                          \
  for (size_t pos = first; pos < last; pos++, src += (len), dst += (len)) {       \
    uint64_t bh = block_hash(src, (len), salt);                                   \
    if (dst != src) memcpy(dst, src, (len) * sizeof *src);                        \
    uint64_t seq = pos ? chain_hash(parent, bh) : bh;                             \
    unsigned mode = mode_for(pos), r = parent_bits[mode];                         \
    block_hashes[pos] = bh;                                                       \
    hashes[pos].hi = ((uint64_t)mode << 62) | ((uint64_t)pos << r) | (seq >> (64 - r)); \
    hashes[pos].lo = (seq << r) | (pos ? low_bits(parent, r) : 0);                \
    parent = seq;                                                                 \
  }

void kvbm__hash_blocks(const uint32_t *src, uint32_t *dst, size_t block_size, uint64_t salt,
                       size_t first, size_t last, uint64_t parent, uint64_t *block_hashes,
                       kvbm_hash *hashes) {
  switch (block_size) {
    case 16: HASH_BLOCKS(16) break;
    case 32: HASH_BLOCKS(32) break;
    case 64: HASH_BLOCKS(64) break;
    default: HASH_BLOCKS(block_size) break;
  }
}

int kvbm_hash_valid(kvbm_hash h) { return (h.hi >> 62) != 3; }
unsigned kvbm_hash_mode(kvbm_hash h) { return (unsigned)(h.hi >> 62); }

uint64_t kvbm_hash_position(kvbm_hash h) { return kvbm__hash_position(h); }

uint64_t kvbm_hash_current(kvbm_hash h) {
  unsigned mode = kvbm_hash_mode(h);
  if (mode == 3) return 0;
  unsigned r = parent_bits[mode];
  return (h.hi << (64 - r)) | (h.lo >> r);
}

uint64_t kvbm_hash_parent_fragment(kvbm_hash h) {
  unsigned mode = kvbm_hash_mode(h);
  return mode == 3 ? 0 : low_bits(h.lo, parent_bits[mode]);
}

uint64_t kvbm_hash_parent_fragment_for_child(kvbm_hash h, uint64_t child_position) {
  return low_bits(kvbm_hash_current(h), parent_bits[mode_for(child_position)]);
}

int kvbm_hash_extend(kvbm_hash parent, uint64_t child_block_hash, kvbm_hash *out) {
  if (!kvbm_hash_valid(parent)) return KVBM_EBAD_HASH;
  uint64_t cur = kvbm_hash_current(parent);
  return kvbm_hash_new(kvbm_chain_hash(cur, child_block_hash), 1, cur,
                       kvbm_hash_position(parent) + 1, out);
}

int kvbm_hash_cmp(kvbm_hash a, kvbm_hash b) {
  /* For well-formed hashes (position, current, raw) order equals raw u128
   * order: mode grows with position and the fields are laid out that way. */
  if (a.hi != b.hi) return a.hi < b.hi ? -1 : 1;
  if (a.lo != b.lo) return a.lo < b.lo ? -1 : 1;
  return 0;
}

/* 8 big-endian bytes (memcpy and a byte swap where the compiler has one:
 * the Lua binding converts every hash it takes or gives) */
static uint64_t load_be64(const unsigned char *in) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  uint64_t v;
  memcpy(&v, in, sizeof v);
  return __builtin_bswap64(v);
#else
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | in[i];
  return v;
#endif
}

static void store_be64(uint64_t v, unsigned char *out) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = __builtin_bswap64(v);
  memcpy(out, &v, sizeof v);
#else
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (56 - 8 * i));
#endif
}

void kvbm_hash_to_bytes(kvbm_hash h, unsigned char out[16]) {
  store_be64(h.hi, out);
  store_be64(h.lo, out + 8);
}

kvbm_hash kvbm_hash_from_bytes(const unsigned char in[16]) {
  kvbm_hash h = {load_be64(in), load_be64(in + 8)};
  return h;
}

/* bs58 (Bitcoin alphabet) of v as 8 big-endian bytes: each leading zero byte
 * becomes one '1', as the bs58 crate writes it. Returns the length. */
static size_t bs58_u64(uint64_t v, char *out) {
  static const char alphabet[] = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  char tmp[16] = {0}; /* cppcheck cannot see that only tmp[0..n) is read */
  size_t n = 0, len = 0;
  int zeros = 0;
  for (int i = 7; i >= 0 && ((v >> (8 * i)) & 0xff) == 0; i--) zeros++;
  for (uint64_t x = v; x; x /= 58) tmp[n++] = alphabet[x % 58];
  while (zeros--) out[len++] = '1';
  while (n) out[len++] = tmp[--n];
  out[len] = '\0';
  return len;
}

int kvbm_hash_format(kvbm_hash h, char *buf, size_t size) {
  char cur[16], par[16];
  if (!kvbm_hash_valid(h)) return KVBM_EBAD_HASH;
  uint64_t pos = kvbm_hash_position(h);
  bs58_u64(kvbm_hash_current(h), cur);
  int n;
  if (pos == 0) {
    n = snprintf(buf, size, "%llu:%s", (unsigned long long)pos, cur);
  } else {
    bs58_u64(kvbm_hash_parent_fragment(h), par);
    n = snprintf(buf, size, "%llu:%s:%s", (unsigned long long)pos, cur, par);
  }
  return (n < 0 || (size_t)n >= size) ? KVBM_EINVAL : n;
}
