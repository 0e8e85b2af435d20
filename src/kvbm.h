/*
 * kvbm.h - the C API of kvbm, the logical lifecycle engine for KV-cache blocks.
 *
 * No Lua here: hosts that embed Lua include kvbm_lua.h as well.
 *
 * Threading: kvbm is single-threaded by design, like Lua and libev. An object
 * is used from one thread at a time; the host serialises access. There are no
 * locks anywhere, on purpose.
 *
 * Errors: every fallible function returns a negative KVBM_E* code (0 or a
 * count on success) and never aborts on bad input. kvbm_strerror() and
 * kvbm_err_name() describe a code.
 */
#ifndef KVBM_H
#define KVBM_H

#include <stddef.h>
#include <stdint.h>

#include "kvbm_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && __GNUC__ >= 4
#define KVBM_API __attribute__((visibility("default")))
#define KVBM_NODISCARD __attribute__((warn_unused_result))
#else
#define KVBM_API
#define KVBM_NODISCARD
#endif

/* ------------------------------------------------------------------ errors */

/* XX(NAME, lua_code, message): one table gives the enum, the lower_snake name
 * Lua sees as err.code, and the message. */
#define KVBM_ERRNO_MAP(XX)                                                         \
  XX(NOMEM, "no_memory", "out of memory")                                          \
  XX(INVAL, "invalid_argument", "invalid argument")                                \
  XX(BLOCK_SIZE, "invalid_block_size", "block size must be in 1..2^32-1")          \
  XX(POSITION_LIMIT, "position_limit",                                             \
     "position exceeds maximum supported value (2^24 - 1 = 16,777,215)")          \
  XX(INSUFFICIENT_TOKENS, "insufficient_tokens", "not enough tokens to remove")    \
  XX(EMPTY, "empty", "sequence is empty")                                          \
  XX(BAD_HASH, "invalid_hash", "malformed sequence hash (mode bits 11)")

typedef enum {
  KVBM__ERR_BASE = -1000,
#define KVBM__ERR_ENUM(name, code, msg) KVBM_E##name,
  KVBM_ERRNO_MAP(KVBM__ERR_ENUM)
#undef KVBM__ERR_ENUM
  KVBM__ERR_END
} kvbm_errno;

KVBM_API const char *kvbm_strerror(int err);  /* "out of memory" */
KVBM_API const char *kvbm_err_name(int err);  /* "no_memory" */

/* --------------------------------------------------------------- version */

KVBM_API unsigned kvbm_version(void);            /* KVBM_VERSION_HEX of the library */
KVBM_API const char *kvbm_version_string(void);  /* "0.1.0" */

/* ------------------------------------------------------------- allocator */

/* Same shape as lua_Alloc: nsize == 0 frees and returns NULL; otherwise
 * (re)allocates ptr (NULL when new) from osize to nsize bytes. */
typedef void *(*kvbm_alloc_fn)(void *ud, void *ptr, size_t osize, size_t nsize);

typedef struct kvbm_allocator {
  kvbm_alloc_fn fn; /* NULL: the C library's realloc/free */
  void *ud;
} kvbm_allocator;

/* --------------------------------------------------------------- hashing */

/* Byte-compatible with dynamo-tokens (layout B, chain seed 1337). */
#define KVBM_CHAIN_SEED 1337u
#define KVBM_MAX_POSITION ((1u << 24) - 1u)
#define KVBM_HASH_STRLEN 48 /* enough for "16777215:" + two bs58 u64s + NUL */

/* A positional lineage hash: the u128 as two words (hi = bits 127..64). */
typedef struct kvbm_hash {
  uint64_t hi, lo;
} kvbm_hash;

/* XXH3_64bits_withSeed over the tokens as u32 little-endian, seed = salt. */
KVBM_API uint64_t kvbm_block_hash(const uint32_t *tokens, size_t n, uint64_t salt);
/* XXH3_64bits_withSeed(LE64(parent) || LE64(block_hash), 1337). */
KVBM_API uint64_t kvbm_chain_hash(uint64_t parent, uint64_t block_hash);

/* PositionalLineageHash::new. has_parent == 0 is Rust's None. Fails with
 * KVBM_EPOSITION_LIMIT for position >= 2^24. */
KVBM_API int kvbm_hash_new(uint64_t current, int has_parent, uint64_t parent,
                           uint64_t position, kvbm_hash *out);
/* PositionalLineageHash::extend: the child at position + 1. */
KVBM_API int kvbm_hash_extend(kvbm_hash parent, uint64_t child_block_hash,
                             kvbm_hash *out);

/* Accessors. A hash whose mode bits are 11 is malformed: check it first with
 * kvbm_hash_valid (the accessors return 0 for it). */
KVBM_API int kvbm_hash_valid(kvbm_hash h);
KVBM_API unsigned kvbm_hash_mode(kvbm_hash h);
KVBM_API uint64_t kvbm_hash_position(kvbm_hash h);
KVBM_API uint64_t kvbm_hash_current(kvbm_hash h);
KVBM_API uint64_t kvbm_hash_parent_fragment(kvbm_hash h);
KVBM_API uint64_t kvbm_hash_parent_fragment_for_child(kvbm_hash h, uint64_t child_position);

/* Ord of the crate: position, then current, then the raw u128. -1, 0, 1. */
KVBM_API int kvbm_hash_cmp(kvbm_hash a, kvbm_hash b);

/* The 16-byte big-endian serde form (hi word first). */
KVBM_API void kvbm_hash_to_bytes(kvbm_hash h, unsigned char out[16]);
KVBM_API kvbm_hash kvbm_hash_from_bytes(const unsigned char in[16]);

/* Dynamo's Display form "pos:bs58(current)[:bs58(parent)]". Returns the
 * length written (excluding NUL) or KVBM_EINVAL if buf is too small. */
KVBM_API int kvbm_hash_format(kvbm_hash h, char *buf, size_t size);

/* -------------------------------------------------- token block sequence */

/* TokenBlockSequence: tokens split into blocks of block_size; every full
 * block is committed (hashed) at once, the partial tail never is. */
typedef struct kvbm_sequence kvbm_sequence;

KVBM_API KVBM_NODISCARD int kvbm_sequence_new(const kvbm_allocator *alloc, uint64_t block_size,
                                              uint64_t salt, kvbm_sequence **out);
KVBM_API void kvbm_sequence_free(kvbm_sequence *s);

/* Appends tokens; on success returns the number of blocks completed and sets
 * [*lo, *hi) to their positions (lo == hi when none). Atomic: on error
 * (KVBM_ENOMEM, KVBM_EPOSITION_LIMIT) the sequence is unchanged. */
KVBM_API KVBM_NODISCARD int kvbm_sequence_extend(kvbm_sequence *s, const uint32_t *tokens,
                                                 size_t n, size_t *lo, size_t *hi);
/* Keeps the first len tokens (no-op when len >= total). */
KVBM_API void kvbm_sequence_truncate(kvbm_sequence *s, size_t len);
/* Removes the last n tokens; KVBM_EINSUFFICIENT_TOKENS when n > total. */
KVBM_API KVBM_NODISCARD int kvbm_sequence_unwind(kvbm_sequence *s, size_t n);
/* Removes and returns the last token; KVBM_EEMPTY when there is none. */
KVBM_API KVBM_NODISCARD int kvbm_sequence_pop(kvbm_sequence *s, uint32_t *token);

KVBM_API size_t kvbm_sequence_blocks(const kvbm_sequence *s);       /* full blocks */
KVBM_API size_t kvbm_sequence_total_tokens(const kvbm_sequence *s);
KVBM_API size_t kvbm_sequence_block_size(const kvbm_sequence *s);
KVBM_API uint64_t kvbm_sequence_salt(const kvbm_sequence *s);
KVBM_API const uint32_t *kvbm_sequence_tokens(const kvbm_sequence *s); /* total_tokens of them */
/* The hashes of full block pos (pos < kvbm_sequence_blocks). */
KVBM_API const kvbm_hash *kvbm_sequence_hashes(const kvbm_sequence *s);
KVBM_API uint64_t kvbm_sequence_block_hash(const kvbm_sequence *s, size_t pos);
KVBM_API uint64_t kvbm_sequence_seq_hash(const kvbm_sequence *s, size_t pos);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_H */
