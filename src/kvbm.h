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
  XX(BAD_HASH, "invalid_hash", "malformed sequence hash (mode bits 11)")            \
  XX(NOSPC, "no_space", "not enough blocks available (reset + inactive)")          \
  XX(STALE, "stale_block", "stale or released block handle")                       \
  XX(STATE, "wrong_state", "block is not in the state this operation needs")      \
  XX(BLOCK_SIZE_MISMATCH, "block_size_mismatch", "block size mismatch")            \
  XX(CONFIG, "invalid_config", "invalid manager configuration")                    \
  XX(TIERS, "too_many_managers", "a registry serves at most KVBM_MAX_TIERS managers") \
  XX(RESET_MISMATCH, "block_count_mismatch",                                       \
     "reset pool count mismatch: blocks are still held elsewhere")                 \
  XX(BUSY, "busy", "manager is busy (called back from its own eviction policy)")  \
  XX(DECODE, "decode_error", "malformed KvbmCacheEvents message")                  \
  XX(SINK, "sink_error", "the sink failed to publish")                             \
  XX(CLOSED, "closed", "the object is closed")                                     \
  XX(ORDERING_VIOLATION, "ordering_violation",                                     \
     "ordering violation: a known block_id appeared after a new one")             \
  XX(DUPLICATE_BLOCK_ID, "duplicate_block_id", "duplicate block_id already present") \
  XX(POSITION_MISMATCH, "position_mismatch",                                       \
     "position mismatch: a block hash does not carry its sequence position")      \
  XX(TRACE, "malformed_trace", "malformed trace")                                  \
  XX(IO, "io_error", "input/output error")                                         \
  XX(CANCELLED, "cancelled", "cancelled by the caller")                            \
  XX(NOT_HELD, "not_held",                                                         \
     "no reference of the caller holds this hash (never acquired, or released already)")

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
/* Replaces the tokens by tokens[0, n) and the salt by salt: what a new
 * sequence of the same block size extended with them holds, in the memory
 * this one already has (a host hashing request after request allocates
 * nothing once it is large enough). Returns the number of full blocks.
 * Atomic: on error (KVBM_ENOMEM, KVBM_EPOSITION_LIMIT) the sequence is
 * unchanged. */
KVBM_API KVBM_NODISCARD int kvbm_sequence_reset(kvbm_sequence *s, uint64_t salt, const uint32_t *tokens,
                                                size_t n);
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

/* ------------------------------------------------------------- registry */

/* A registry is shared by the managers of several tiers (G1, G2, G3, ...):
 * one live registration per hash, presence per tier, an optional TinyLFU
 * frequency tracker. Reference counted: each manager holds a reference. */
typedef struct kvbm_registry kvbm_registry;

#define KVBM_MAX_TIERS 4

/* XX(NAME, lua_name, log2_entries): one table gives the enum, the names Lua
 * accepts for kvbm.registry{frequency=} and the tracker sizes (0: none).
 * MEDIUM is the crate's default. */
#define KVBM_FREQUENCY_MAP(XX) \
  XX(NONE, "none", 0)          \
  XX(SMALL, "small", 18)       \
  XX(MEDIUM, "medium", 21)     \
  XX(LARGE, "large", 24)

typedef enum {
#define KVBM__FREQUENCY_ENUM(name, lua_name, log2) KVBM_FREQUENCY_##name,
  KVBM_FREQUENCY_MAP(KVBM__FREQUENCY_ENUM)
#undef KVBM__FREQUENCY_ENUM
  KVBM__FREQUENCY_END
} kvbm_frequency;

/* Hooks a host (the events manager, the Lua binding) sets on a registry:
 * on_create runs when a hash gets its first live registration, on_remove when
 * the last reference to that registration goes. */
typedef struct kvbm_registry_hooks {
  void (*on_create)(void *ud, kvbm_hash h);
  void (*on_remove)(void *ud, kvbm_hash h);
  void *ud;
} kvbm_registry_hooks;

KVBM_API KVBM_NODISCARD int kvbm_registry_new(const kvbm_allocator *alloc, kvbm_frequency freq,
                                              kvbm_registry **out);
KVBM_API void kvbm_registry_retain(kvbm_registry *r);
KVBM_API void kvbm_registry_release(kvbm_registry *r); /* frees at the last reference */
KVBM_API void kvbm_registry_set_hooks(kvbm_registry *r, const kvbm_registry_hooks *hooks);

KVBM_API int kvbm_registry_is_registered(const kvbm_registry *r, kvbm_hash h);
KVBM_API size_t kvbm_registry_count(const kvbm_registry *r); /* live registrations */
/* Takes/drops a reference that keeps h registered (a registration handle).
 * Unacquire drops only what acquire (or kvbm_downgrade) took: a hash with no
 * such reference left fails with KVBM_ENOT_HELD and changes nothing, so a
 * stray call can never take the reference a manager's block holds. */
KVBM_API KVBM_NODISCARD int kvbm_registry_acquire(kvbm_registry *r, kvbm_hash h);
KVBM_API int kvbm_registry_unacquire(kvbm_registry *r, kvbm_hash h);
/* Presence of h in the tier of manager number `tier` (kvbm_manager_tier). */
KVBM_API int kvbm_registry_present(const kvbm_registry *r, kvbm_hash h, unsigned tier);
KVBM_API int kvbm_registry_has_frequency(const kvbm_registry *r);
KVBM_API size_t kvbm_registry_bytes(const kvbm_registry *r); /* memory held */
KVBM_API void kvbm_registry_touch(kvbm_registry *r, kvbm_hash h);       /* tracker +1 */
KVBM_API uint32_t kvbm_registry_frequency(const kvbm_registry *r, kvbm_hash h); /* 0..15 */

/* -------------------------------------------------------------- manager */

/* A block handle: (generation << 32) | slot. A handle names one state of one
 * slot; once that state ends (the block moved on or was released) the handle
 * is stale and every call with it fails with KVBM_ESTALE. */
typedef uint64_t kvbm_block;
#define KVBM_NO_BLOCK UINT64_MAX
#define kvbm_block_id(b) ((uint32_t)(b))

/* A weak reference: the hash plus the block it named; keeps the hash
 * registered. Release it with kvbm_weak_release. */
typedef struct kvbm_weak {
  kvbm_hash hash;
  kvbm_block block;
} kvbm_weak;

/* XX(NAME, lua_name): the built-in eviction backends, in one table that gives
 * the enum and the names Lua accepts for kvbm.manager{backend=}. */
#define KVBM_BACKEND_MAP(XX)                                                   \
  XX(LINEAGE, "lineage")           /* the default: leaves only, Tick order */ \
  XX(LINEAGE_FIFO, "lineage_fifo") /* leaves only, insertion order */          \
  XX(LRU, "lru")                                                               \
  XX(MULTI_LRU, "multi_lru")       /* needs a registry with a frequency tracker */ \
  XX(HASHMAP, "hashmap")                                                       \
  XX(S3FIFO, "s3fifo")             /* small, main and ghost FIFOs */          \
  XX(SIEVE, "sieve")               /* one FIFO, visited bits, a moving hand */ \
  XX(ARC, "arc")                   /* adaptive recency/frequency, ghosts */   \
  XX(SLRU, "slru")                 /* probationary and protected segments */  \
  XX(DEPTH, "depth")               /* structure-aware: see backend_depth.c */ \
  XX(BIP, "bip")                   /* bimodal insertion: see bip_order.h */   \
  XX(OPTIMAL, "optimal")           /* Belady's optimum: needs kvbm_next_use hints */

typedef enum {
#define KVBM__BACKEND_ENUM(name, lua_name) KVBM_BACKEND_##name,
  KVBM_BACKEND_MAP(KVBM__BACKEND_ENUM)
#undef KVBM__BACKEND_ENUM
  KVBM_BACKEND_POLICY /* victims chosen by a kvbm_policy (e.g. a Lua script); no name */
} kvbm_backend;

/* A custom eviction policy: the manager keeps the index and correctness; the
 * policy only orders victims. victims() writes up to n block ids and returns
 * how many (or < 0 on failure); the ids it returns are evicted (the core does
 * not call on_remove for them, so the policy forgets them itself). Ids that
 * are unknown, not inactive or repeated, and any failure, are replaced by the
 * built-in order (insertion order) and counted in kvbm_metrics.policy_errors,
 * as are failed notifications.
 *
 * When the policy runs. By default (deferred = 0) the core calls it inline:
 * on_insert/on_remove inside the call that changed the pool, and on_events
 * plus victims() inside the kvbm_allocate that needs victims, unless the host
 * prepared them (kvbm_policy_prepare). With deferred = 1 the core never calls
 * the policy from inside a manager call: notifications are queued (on_events
 * is required) and delivered only by kvbm_policy_prepare and
 * kvbm_policy_flush; victims come only from kvbm_policy_prepare, and an
 * allocation that needs victims nobody prepared evicts in the built-in order
 * and counts an error. That is what a host whose policy runs code that must
 * not interrupt a core mutation (a scripting language with a garbage
 * collector, say) wants: it calls prepare before every call that may evict
 * and flush after every call. */
/* What a policy with on_events is told, in order, in batches. */
#define KVBM_POLICY_EVENT_MAP(XX)                                                     \
  XX(INSERT, "insert") /* the block entered the inactive cache (last release) */    \
  XX(REMOVE, "remove") /* it left through a hit, not an eviction */                  \
  XX(ADMIT, "admit")   /* a hash newly registered in this tier (a fresh primary) */  \
  XX(MISS, "miss")     /* a lookup found no block for the hash here (block_id: none) */

typedef enum {
#define KVBM__POLICY_EVENT_ENUM(name, lua_name) KVBM_POLICY_##name,
  KVBM_POLICY_EVENT_MAP(KVBM__POLICY_EVENT_ENUM)
#undef KVBM__POLICY_EVENT_ENUM
} kvbm_policy_event_kind;

typedef struct kvbm_policy_event {
  kvbm_hash hash; /* its position and parent: kvbm_hash_position, kvbm_hash_parent_fragment */
  uint32_t block_id;
  uint8_t kind; /* kvbm_policy_event_kind */
} kvbm_policy_event;

typedef struct kvbm_policy {
  int (*on_insert)(void *ud, uint32_t block_id, kvbm_hash h); /* < 0: counted as an error */
  int (*on_remove)(void *ud, uint32_t block_id, kvbm_hash h);
  int (*victims)(void *ud, size_t n, uint32_t *out);
  void *ud;
  /* Optional, instead of on_insert/on_remove: the notifications (also of
   * misses and new registrations) are queued and delivered in order, in one
   * call, just before victims() and by kvbm_policy_flush; < 0 is counted. */
  int (*on_events)(void *ud, const kvbm_policy_event *ev, size_t n);
  int deferred; /* 1: never called from inside a manager call (see above) */
} kvbm_policy;

typedef struct kvbm_manager_config {
  uint32_t block_count;      /* > 0 */
  uint32_t block_size;       /* power of two in 1..1024; 0 means 16 */
  kvbm_registry *registry;   /* required */
  const char *name;          /* metrics label, e.g. "G1"; NULL: "pool0", "pool1", ... */
  kvbm_backend backend;
  uint8_t thresholds[3];     /* multi-LRU; all 0 means {3, 8, 15} */
  int reject_duplicates;     /* 0: Allow (G1), 1: Reject (G2, G3) */
  int reset_on_release;      /* default for released blocks: skip the cache */
  const kvbm_policy *policy; /* KVBM_BACKEND_POLICY */
  const kvbm_allocator *alloc;
} kvbm_manager_config;

typedef struct kvbm_manager kvbm_manager;

/* Checks a configuration; on failure writes the reference's message
 * (e.g. "block_count must be greater than 0") into msg. */
KVBM_API int kvbm_manager_config_check(const kvbm_manager_config *cfg, char *msg, size_t size);
KVBM_API KVBM_NODISCARD int kvbm_manager_new(const kvbm_manager_config *cfg, kvbm_manager **out);
/* Frees the manager. Outstanding handles become stale; nothing is freed twice. */
KVBM_API void kvbm_manager_free(kvbm_manager *m);

KVBM_API unsigned kvbm_manager_tier(const kvbm_manager *m);
KVBM_API const char *kvbm_manager_name(const kvbm_manager *m);
KVBM_API kvbm_registry *kvbm_manager_registry(const kvbm_manager *m);
KVBM_API size_t kvbm_manager_total(const kvbm_manager *m);
KVBM_API size_t kvbm_manager_available(const kvbm_manager *m); /* reset + inactive */
KVBM_API size_t kvbm_manager_block_size(const kvbm_manager *m);
KVBM_API size_t kvbm_manager_inactive(const kvbm_manager *m);
KVBM_API size_t kvbm_manager_reset(const kvbm_manager *m);
KVBM_API size_t kvbm_manager_bytes(const kvbm_manager *m); /* engine memory held */
/* Debug self-check of a manager's invariants (slot states, the reset ring,
 * the inactive index, the registry's view). counts[] gets the slots per
 * state (kvbm_block_state_t order). 0, or KVBM_ESTATE with what is broken
 * in msg; O(slots + entries), for tests and debugging. */
KVBM_API int kvbm_manager_check(const kvbm_manager *m, size_t counts[6], char *msg, size_t size);

/* All or nothing: n mutable blocks (reset pool first, FIFO, then evictions in
 * policy order) or KVBM_ENOSPC with nothing changed. evicted (room for n, may
 * be NULL) receives the hashes evicted; returns how many were evicted. */
KVBM_API KVBM_NODISCARD int kvbm_allocate(kvbm_manager *m, size_t n, kvbm_block *out,
                                          kvbm_hash *evicted);

/* Mutable -> Staged: consumes mb on success. KVBM_EBLOCK_SIZE_MISMATCH when
 * block_size != the manager's (mb stays valid). */
KVBM_API KVBM_NODISCARD int kvbm_stage(kvbm_manager *m, kvbm_block mb, kvbm_hash h,
                                       size_t block_size, kvbm_block *cb);
/* Staged -> Mutable (consumes cb). */
KVBM_API KVBM_NODISCARD int kvbm_complete_reset(kvbm_manager *m, kvbm_block cb, kvbm_block *mb);
KVBM_API int kvbm_complete_hash(const kvbm_manager *m, kvbm_block cb, kvbm_hash *h);

/* Registers staged blocks (consumed) and returns immutable blocks: fresh
 * primaries, Allow-duplicates, or (Reject) the existing primary. register_all
 * validates every handle first: on error nothing is consumed. */
KVBM_API KVBM_NODISCARD int kvbm_register(kvbm_manager *m, kvbm_block cb, kvbm_block *ib);
KVBM_API KVBM_NODISCARD int kvbm_register_all(kvbm_manager *m, const kvbm_block *cbs, size_t n,
                                              kvbm_block *ibs);

/* Drops one reference of any block handle: a mutable or staged block goes to
 * the reset pool; the last reference of an immutable block sends it to the
 * inactive cache (or to the reset pool, with reset-on-release). A primary
 * whose only references left are its duplicates' keepalives is released
 * already: KVBM_ESTALE, and it stays alive as long as they do. */
KVBM_API int kvbm_release(kvbm_manager *m, kvbm_block b);
/* Releases n handles in order (stale ones are skipped) and reports which
 * releases sent a block to the inactive cache: their indices go to
 * inactive[] (room for n; may be NULL). Returns how many. A duplicate's last
 * reference counts when it sends its primary there. */
KVBM_API int kvbm_release_all(kvbm_manager *m, const kvbm_block *bs, size_t n, uint32_t *inactive);

/* Immutable blocks: one more reference, and queries. */
KVBM_API int kvbm_block_retain(kvbm_manager *m, kvbm_block ib);
KVBM_API int kvbm_block_hash_of(const kvbm_manager *m, kvbm_block ib, kvbm_hash *h);
KVBM_API int kvbm_block_use_count(const kvbm_manager *m, kvbm_block ib); /* >= 1, or < 0 */
KVBM_API int kvbm_block_set_reset_on_release(kvbm_manager *m, kvbm_block ib, int on);
KVBM_API int kvbm_block_state(const kvbm_manager *m, kvbm_block b); /* a kvbm_block_state, or < 0 */

typedef enum {
  KVBM_STATE_RESET = 0,
  KVBM_STATE_MUTABLE,
  KVBM_STATE_STAGED,
  KVBM_STATE_PRIMARY,
  KVBM_STATE_DUPLICATE,
  KVBM_STATE_INACTIVE
} kvbm_block_state_t;

KVBM_API KVBM_NODISCARD int kvbm_downgrade(kvbm_manager *m, kvbm_block ib, kvbm_weak *w);
/* 1 with *ib set, 0 when the hash is in neither pool any more; KVBM_ESTALE
 * for a released weak block. */
KVBM_API KVBM_NODISCARD int kvbm_weak_upgrade(kvbm_manager *m, const kvbm_weak *w, kvbm_block *ib);
/* Lets go of the registration and marks *w released: releasing it again
 * fails with KVBM_ESTALE (and a copy released twice with KVBM_ENOT_HELD once
 * no weak block or acquire holds the hash), never dropping another holder's
 * reference. */
KVBM_API int kvbm_weak_release(kvbm_manager *m, kvbm_weak *w);

/* Longest prefix of hashes found in either pool (inactive ones are
 * resurrected; only a hash in neither pool stops it). Returns the count. */
KVBM_API size_t kvbm_match(kvbm_manager *m, const kvbm_hash *hashes, size_t n, kvbm_block *out);
/* What kvbm_match would return, with no side effects (no resurrection, no
 * touch, no metrics): how long a prefix this tier holds. */
KVBM_API size_t kvbm_match_count(const kvbm_manager *m, const kvbm_hash *hashes, size_t n);
/* One result per input (KVBM_NO_BLOCK for a miss); returns the hits. */
KVBM_API size_t kvbm_match_scattered(kvbm_manager *m, const kvbm_hash *hashes, size_t n,
                                     kvbm_block *out);
/* Like scattered, without stopping, repeated hashes collapsed (later
 * occurrences get KVBM_NO_BLOCK); touch: count a frequency hit per hash. */
KVBM_API size_t kvbm_scan(kvbm_manager *m, const kvbm_hash *hashes, size_t n, int touch,
                          kvbm_block *out);
/* Evicts every inactive block to the reset pool; KVBM_ERESET_MISMATCH when
 * blocks are still held elsewhere afterwards (the drain happens anyway). */
KVBM_API int kvbm_reset_inactive(kvbm_manager *m);
/* Prepares a custom policy's answer for the next allocation, outside any
 * core call: delivers the queued notifications, then asks victims() for as
 * many blocks as kvbm_allocate(m, n_allocations) would evict from the
 * inactive pool now (none when the reset pool covers it, or when it would
 * fail), and keeps the answer. The next kvbm_allocate that evicts (or
 * kvbm_reset_inactive; prepare with SIZE_MAX for it) takes its victims from
 * that answer, checking each one (still inactive, not named twice), and
 * calls no callback: entries that went stale since, or a short answer, are
 * replaced by the built-in order and count one error, as a bad answer does.
 * Prepared victims the allocation did not need (the reset pool grew in
 * between) are given back to the policy as insert notifications. Returns how
 * many victims were asked for; KVBM_EBUSY from inside one of this policy's
 * callbacks (nothing happens). Other backends: 0, nothing to do. */
KVBM_API int kvbm_policy_prepare(kvbm_manager *m, size_t n_allocations);
/* Delivers the queued notifications of a policy with on_events (a host
 * calls it when its core call ends); 0, or < 0 when delivery failed (counted
 * in policy_errors); KVBM_EBUSY from inside one of the policy's callbacks
 * (the notifications stay queued). Other backends: 0. */
KVBM_API int kvbm_policy_flush(kvbm_manager *m);
/* An offline policy's input (the "optimal" backend; others ignore it): the
 * block this tier holds for hashes[i] is next needed at when[i] (any
 * increasing clock, e.g. the index of the next request that uses it;
 * UINT64_MAX: never). Hashes this tier does not hold are skipped. Returns
 * how many blocks took a hint. */
KVBM_API size_t kvbm_next_use(kvbm_manager *m, const kvbm_hash *hashes, const uint64_t *when,
                              size_t n);

/* XX(KIND, field, help): the metrics of a manager, in one table that gives the
 * struct below, the Lua field names of m:metrics() and the Prometheus names
 * of kvbm.prometheus (both KVBM_METRIC_NAME). Kinds:
 *   COUNTER  uint64_t, "kvbm_<field>_total", a Prometheus counter;
 *   GAUGE    int64_t,  "kvbm_<field>", a Prometheus gauge;
 *   AUDIT    uint64_t, "<field>", in Lua only (not a kvbm-logical metric). */
#define KVBM_METRICS_MAP(XX)                                                        \
  XX(COUNTER, allocations, "Total number of blocks allocated")                    \
  XX(COUNTER, allocations_from_reset, "Blocks allocated from the reset pool")     \
  XX(COUNTER, evictions, "Blocks evicted from the inactive pool for allocation")  \
  XX(COUNTER, registrations, "Blocks registered")                                 \
  XX(COUNTER, duplicate_blocks, "Duplicate blocks created under the allow policy") \
  XX(COUNTER, registration_dedup, "Registrations deduplicated under the reject policy") \
  XX(COUNTER, stagings, "Mutable blocks staged")                                  \
  XX(COUNTER, match_hashes_requested, "Hashes requested by match")                \
  XX(COUNTER, match_blocks_returned, "Blocks returned by match")                  \
  XX(COUNTER, scan_hashes_requested, "Hashes requested by scan")                  \
  XX(COUNTER, scan_blocks_returned, "Blocks returned by scan")                    \
  XX(GAUGE, inflight_mutable, "Mutable blocks currently held")                    \
  XX(GAUGE, inflight_immutable, "Immutable block references currently held")      \
  XX(GAUGE, reset_pool_size, "Blocks in the reset pool")                          \
  XX(GAUGE, inactive_pool_size, "Blocks in the inactive pool")                    \
  XX(AUDIT, policy_errors, "Custom policy calls that failed or needed the fallback order")

#define KVBM__METRIC_TYPE_COUNTER uint64_t
#define KVBM__METRIC_TYPE_GAUGE int64_t
#define KVBM__METRIC_TYPE_AUDIT uint64_t
#define KVBM__METRIC_NAME_COUNTER(field) "kvbm_" #field "_total"
#define KVBM__METRIC_NAME_GAUGE(field) "kvbm_" #field
#define KVBM__METRIC_NAME_AUDIT(field) #field
/* The exported name of a metric, a string literal: KVBM_METRIC_NAME(COUNTER, evictions). */
#define KVBM_METRIC_NAME(kind, field) KVBM__METRIC_NAME_##kind(field)

typedef struct kvbm_metrics {
#define KVBM__METRIC_FIELD(kind, field, help) KVBM__METRIC_TYPE_##kind field;
  KVBM_METRICS_MAP(KVBM__METRIC_FIELD)
#undef KVBM__METRIC_FIELD
} kvbm_metrics;

KVBM_API void kvbm_manager_metrics(const kvbm_manager *m, kvbm_metrics *out);

/* --------------------------------------------------------------- events */

typedef enum { KVBM_EVENT_CREATE = 0, KVBM_EVENT_REMOVE = 1, KVBM_EVENT_SHUTDOWN = 2 } kvbm_event_kind;

/* The u128 instance id of the crate's KvbmCacheEvents, as two words. */
typedef struct kvbm_instance_id {
  uint64_t hi, lo;
} kvbm_instance_id;

/* One wire message: a homogeneous batch (Shutdown carries no hashes). */
typedef struct kvbm_batch {
  kvbm_event_kind kind;
  const kvbm_hash *hashes;
  size_t n;
  kvbm_instance_id instance_id;
} kvbm_batch;

/* MessagePack exactly as rmp-serde writes KvbmCacheEvents:
 * [ {"Create"|"Remove": [bin16...]} | "Shutdown", bin16 instance_id ]. */
KVBM_API size_t kvbm_wire_encoded_size(size_t nhashes); /* bytes needed */
/* Returns the length written, or KVBM_EINVAL when size is too small or the
 * batch is malformed (a hash with mode bits 11, a Shutdown with hashes). */
KVBM_API int kvbm_wire_encode(const kvbm_batch *b, unsigned char *buf, size_t size);
/* Decodes one message. The hashes go to hashes[0..cap); out->hashes points
 * there. KVBM_EDECODE on truncated, oversized, mistyped or trailing input;
 * *why (if not NULL) then says what was wrong and *where at which byte. */
KVBM_API int kvbm_wire_decode(const unsigned char *buf, size_t len, kvbm_batch *out,
                              kvbm_hash *hashes, size_t cap, const char **why, size_t *where);

/* The events manager: a registry built with one emits create(h) for every
 * new registration the policy allows and remove(h) when the last reference
 * to that registration goes (only when its create went out). Subscribers
 * are bounded rings: each sees what happens after it subscribed; a slow one
 * loses its oldest events and can read how many. Reference counted. */
typedef struct kvbm_events kvbm_events;
typedef struct kvbm_subscription kvbm_subscription;
typedef int (*kvbm_emit_policy_fn)(void *ud, kvbm_hash h); /* 1: emit */

KVBM_API KVBM_NODISCARD int kvbm_events_new(const kvbm_allocator *alloc, kvbm_events **out);
KVBM_API void kvbm_events_retain(kvbm_events *ev);
KVBM_API void kvbm_events_release(kvbm_events *ev); /* NULL is fine */
/* Policies: all (the default); power-of-two positions in [min, max]
 * inclusive (the crate's PowerOfTwoPolicy: 16 and 65536 by default); or a
 * host function. */
KVBM_API void kvbm_events_policy_all(kvbm_events *ev);
KVBM_API void kvbm_events_policy_power_of_two(kvbm_events *ev, uint64_t min, uint64_t max);
KVBM_API void kvbm_events_policy_custom(kvbm_events *ev, kvbm_emit_policy_fn fn, void *ud);
KVBM_API int kvbm_events_should_emit(const kvbm_events *ev, kvbm_hash h);
KVBM_API void kvbm_registry_set_events(kvbm_registry *r, kvbm_events *ev);

KVBM_API KVBM_NODISCARD int kvbm_events_subscribe(kvbm_events *ev, size_t capacity,
                                                  kvbm_subscription **out);
/* 1 with the oldest event, 0 when there is none. */
KVBM_API int kvbm_subscription_poll(kvbm_subscription *s, kvbm_event_kind *kind, kvbm_hash *h);
KVBM_API size_t kvbm_subscription_pending(const kvbm_subscription *s);
KVBM_API uint64_t kvbm_subscription_lost(const kvbm_subscription *s);
KVBM_API void kvbm_subscription_free(kvbm_subscription *s);

/* A sink receives encoded batches: publish enqueues, flush waits until
 * what was published is delivered (or fails), close frees. Returns < 0 on
 * failure (KVBM_ESINK). */
typedef struct kvbm_sink {
  int (*publish)(void *ud, const char *subject, const unsigned char *data, size_t len);
  int (*flush)(void *ud);
  void (*close)(void *ud);
  void *ud;
  /* optional: when set, the publisher calls it instead of publish, with the
   * batch as well as its encoding (a Lua function sink wants both) */
  int (*publish_batch)(void *ud, const char *subject, const kvbm_batch *b,
                       const unsigned char *data, size_t len);
} kvbm_sink;

/* A file sink: each message as a 4-byte big-endian length, then the bytes. */
KVBM_API KVBM_NODISCARD int kvbm_sink_file_new(const char *path, kvbm_sink *out);

/* The publisher: drains a subscription into batches (window, max batch;
 * flushed on a create/remove switch, at the max, when the window expires,
 * and at close; creates sorted by position ascending, removes descending),
 * encodes them and hands them to the sink, on a libev loop the host owns. */
struct ev_loop;
typedef struct kvbm_publisher kvbm_publisher;

#define KVBM_PUBLISHER_DEFAULT_WINDOW 0.010 /* seconds */
#define KVBM_PUBLISHER_MAX_WINDOW 3600.0
#define KVBM_PUBLISHER_DEFAULT_BATCH 1024
#define KVBM_PUBLISHER_MAX_BATCH ((size_t)1 << 20)
#define KVBM_PUBLISHER_DEFAULT_CAPACITY 65536
#define KVBM_PUBLISHER_MAX_CAPACITY ((size_t)1 << 24)
#define KVBM_PUBLISHER_SUBJECT_MAX 128 /* bytes, with the NUL */

typedef struct kvbm_publisher_config {
  kvbm_events *events;          /* required */
  struct ev_loop *loop;         /* required */
  kvbm_sink sink;               /* required; not owned */
  kvbm_instance_id instance_id;
  double window;                /* seconds, in (0, 3600]; 0 means 0.010 */
  size_t max_batch;             /* 1..2^20; 0 means 1024 */
  size_t capacity;              /* subscription ring, 1..2^24; 0 means 65536 */
  const char *subject;          /* a NATS subject (no spaces, no wildcards,
                                   < 128 bytes); NULL means "kvbm.events" */
  const kvbm_allocator *alloc;
} kvbm_publisher_config;

/* NULL when cfg is valid, else what is wrong with it, naming the option
 * ("window must be ..."); kvbm_publisher_new fails with KVBM_EINVAL then. */
KVBM_API const char *kvbm_publisher_config_error(const kvbm_publisher_config *cfg);

typedef struct kvbm_publisher_stats {
  uint64_t batches, events, errors, lost; /* lost: dropped by a full subscription */
  size_t pending;                         /* in the current batch and the subscription */
} kvbm_publisher_stats;

KVBM_API KVBM_NODISCARD int kvbm_publisher_new(const kvbm_publisher_config *cfg,
                                               kvbm_publisher **out);
/* Flushes the batch, publishes Shutdown, flushes the sink and stops the
 * watchers. Returns 0 or the first error. Idempotent.
 *
 * A sink may call flush, close and free on its own publisher: the batch
 * and data it was given are then no longer valid, a close from the sink
 * while close runs returns 0 and lets the outer close finish, and free
 * from the sink closes at once and frees when the publisher's call that
 * ran the sink returns. */
KVBM_API int kvbm_publisher_close(kvbm_publisher *p);
KVBM_API void kvbm_publisher_free(kvbm_publisher *p); /* closes first */
/* Publishes what is batched now (the window's flush, early). */
KVBM_API int kvbm_publisher_flush(kvbm_publisher *p);
KVBM_API void kvbm_publisher_get_stats(const kvbm_publisher *p, kvbm_publisher_stats *out);

/* The NATS sink and consumer are in libkvbm-nats: see kvbm_nats.h. */

/* ---------------------------------------------------------- assignments */

/* ExternalBlockAssignments (kvbm-logical, identity level): one tier's block
 * ids against a sequence, starting at sequence position `offset`. Ids go
 * through three phases, each an insertion-ordered collection:
 *   unassigned (a FIFO of ids with no hash yet) -> staged (id, hash) ->
 *   assigned (id, hash), where assigned index i is position offset + i.
 * An id is in at most one collection at a time (contains() checks all).
 * Fallible calls validate first and commit after: on any error (including
 * KVBM_ENOMEM) nothing has changed. The expected failures fill a
 * kvbm_assign_error (may be NULL) with the crate's detail fields. Ranges are
 * half-open [lo, hi); lo/hi pointers may be NULL. Lookups return 1 (found,
 * outputs written; they may be NULL) or 0. Allocation happens only when a
 * collection grows. */
typedef struct kvbm_assignments kvbm_assignments;

/* Largest offset kvbm_assignments_new accepts (positions never overflow). */
#define KVBM_ASSIGN_MAX_OFFSET (SIZE_MAX / 4)

typedef struct kvbm_assign_error {
  uint64_t known_id, new_id;             /* KVBM_EORDERING_VIOLATION */
  size_t known_index, first_new_index;   /* KVBM_EORDERING_VIOLATION */
  size_t expected;                       /* KVBM_EPOSITION_MISMATCH */
  uint64_t actual;                       /* KVBM_EPOSITION_MISMATCH */
  uint64_t block_id;                     /* KVBM_EDUPLICATE_BLOCK_ID, KVBM_EPOSITION_MISMATCH */
} kvbm_assign_error;

/* One row of a zip: position, the first instance's id, the second's. */
typedef struct kvbm_assign_triple {
  size_t pos;
  uint64_t a_id, b_id;
} kvbm_assign_triple;

/* KVBM_EINVAL when offset > KVBM_ASSIGN_MAX_OFFSET. */
KVBM_API KVBM_NODISCARD int kvbm_assignments_new(const kvbm_allocator *alloc, size_t offset,
                                                 kvbm_assignments **out);
KVBM_API void kvbm_assignments_free(kvbm_assignments *a); /* NULL is fine */
/* Empties all three collections; the offset stays. Keeps the memory. */
KVBM_API void kvbm_assignments_clear(kvbm_assignments *a);

KVBM_API size_t kvbm_assignments_offset(const kvbm_assignments *a);
KVBM_API size_t kvbm_assignments_assigned_count(const kvbm_assignments *a);
KVBM_API size_t kvbm_assignments_staged_count(const kvbm_assignments *a);
KVBM_API size_t kvbm_assignments_unassigned_count(const kvbm_assignments *a);
KVBM_API int kvbm_assignments_is_empty(const kvbm_assignments *a);
KVBM_API int kvbm_assignments_contains(const kvbm_assignments *a, uint64_t block_id);
/* offset + assigned + staged */
KVBM_API size_t kvbm_assignments_next_position(const kvbm_assignments *a);
/* [offset, offset+assigned), [offset+assigned, next_position),
 * [next_position, next_position+unassigned) */
KVBM_API void kvbm_assignments_assigned_positions(const kvbm_assignments *a, size_t *lo, size_t *hi);
KVBM_API void kvbm_assignments_staged_positions(const kvbm_assignments *a, size_t *lo, size_t *hi);
KVBM_API void kvbm_assignments_pending_positions(const kvbm_assignments *a, size_t *lo, size_t *hi);

KVBM_API int kvbm_assignments_get_assigned(const kvbm_assignments *a, size_t index,
                                           uint64_t *block_id, kvbm_hash *h);
KVBM_API int kvbm_assignments_get_staged(const kvbm_assignments *a, size_t index,
                                         uint64_t *block_id, kvbm_hash *h);
KVBM_API int kvbm_assignments_get_unassigned(const kvbm_assignments *a, size_t index,
                                             uint64_t *block_id);
/* The assigned entry at absolute position pos (pos - offset). */
KVBM_API int kvbm_assignments_get_at_position(const kvbm_assignments *a, size_t pos,
                                              uint64_t *block_id, kvbm_hash *h);
/* The (pos - next_position)-th unassigned id. */
KVBM_API int kvbm_assignments_get_pending_at_position(const kvbm_assignments *a, size_t pos,
                                                      uint64_t *block_id);

/* ids is the full ordered list allocated so far: a prefix of known ids is
 * skipped, the new suffix is queued (unassigned). A known id after a new one:
 * KVBM_EORDERING_VIOLATION; a new id repeated in ids: KVBM_EDUPLICATE_BLOCK_ID. */
KVBM_API KVBM_NODISCARD int kvbm_assignments_extend_block_ids(kvbm_assignments *a,
                                                              const uint64_t *ids, size_t n,
                                                              kvbm_assign_error *err);
/* Straight into assigned (e.g. cache hits); positions are not checked.
 * An id already known or repeated in ids: KVBM_EDUPLICATE_BLOCK_ID (the first
 * such id). A malformed hash: KVBM_EBAD_HASH. */
KVBM_API KVBM_NODISCARD int kvbm_assignments_extend_assigned(kvbm_assignments *a,
                                                             const uint64_t *ids,
                                                             const kvbm_hash *hashes, size_t n,
                                                             kvbm_assign_error *err);
/* all: the hashes of the sequence's full blocks, indexed by absolute
 * position (pass all of them, or a prefix). Pairs unassigned ids (FIFO) with
 * all[next_position ...] while both last; every hash must carry its position
 * (else KVBM_EPOSITION_MISMATCH naming the id it would have paired with).
 * [*lo, *hi): the new entries' indices within staged. */
KVBM_API KVBM_NODISCARD int kvbm_assignments_stage_pending(kvbm_assignments *a,
                                                           const kvbm_hash *all, size_t nall,
                                                           size_t *lo, size_t *hi,
                                                           kvbm_assign_error *err);
/* Moves every staged entry to assigned; never fails. Returns how many;
 * [*lo, *hi): their indices within assigned. */
KVBM_API size_t kvbm_assignments_commit_staged(kvbm_assignments *a, size_t *lo, size_t *hi);
/* stage_pending then commit_staged; [*lo, *hi) within assigned. */
KVBM_API KVBM_NODISCARD int kvbm_assignments_assign_pending(kvbm_assignments *a,
                                                            const kvbm_hash *all, size_t nall,
                                                            size_t *lo, size_t *hi,
                                                            kvbm_assign_error *err);
/* Removes every staged entry (they are forgotten) into ids/hashes (either
 * may be NULL; otherwise room for cap >= staged_count, else KVBM_EINVAL).
 * Returns how many. */
KVBM_API int kvbm_assignments_take_staged(kvbm_assignments *a, uint64_t *ids, kvbm_hash *hashes,
                                          size_t cap);
/* Removes the last unassigned id (LIFO): 1 with *block_id, or 0 when none. */
KVBM_API int kvbm_assignments_pop_unassigned(kvbm_assignments *a, uint64_t *block_id);

/* Positions where a and b both have assigned blocks, ascending:
 * {pos, a's id, b's id}. Writes at most cap rows and returns the full count
 * (at most the smaller assigned count). */
KVBM_API size_t kvbm_zip_assigned(const kvbm_assignments *a, const kvbm_assignments *b,
                                  kvbm_assign_triple *out, size_t cap);
/* Positions assigned in src and pending in dst: {pos, src id, dst pending id},
 * the onboard/offload copy plan. Same output rules. */
KVBM_API size_t kvbm_zip_assigned_pending(const kvbm_assignments *src,
                                          const kvbm_assignments *dst,
                                          kvbm_assign_triple *out, size_t cap);

/* The crate's Display text of an assignments error (rc from one of the calls
 * above, e filled by it) into buf. Returns the length, or KVBM_EINVAL when buf
 * is too small. */
KVBM_API int kvbm_assign_error_format(int rc, const kvbm_assign_error *e, char *buf, size_t size);

/* ---------------------------------------------------------------- tiers */

/* The tier planner: plans block copies between the managers of one registry
 * (G1 GPU, G2 host, G3 disk, ...). kvbm moves no data: a request is admitted
 * (its G1 prefix matched, the following blocks found below planned for
 * onboarding, the rest allocated), the host copies what the plans say and
 * reports each plan complete (or failed), and the planner registers the
 * copies in their destination tier. Offload plans come from the policy
 * (hooks, or a built-in rule) when blocks register in G1 or go inactive in a
 * tier. Until it completes a plan holds its source blocks (not evictable)
 * and its destination blocks (mutable, invisible to lookups); one index on
 * (tier, hash) says whether a copy to that tier is already planned.
 *
 * Tiers are numbered by level: 0 is G1 (required), 1 G2, 2 G3, 3 G4. The
 * managers stay the host's: free the planner before them. Calls made from
 * inside a hook fail with KVBM_EBUSY. Right before each of its allocations
 * the planner calls kvbm_policy_prepare on that manager (between manager
 * calls, never inside one), so that a deferred policy is asked for exactly
 * the victims the allocation needs; its callbacks cannot call the planner
 * either. The host flushes its deferred policies after each planner call. */
typedef struct kvbm_tiers kvbm_tiers;
typedef struct kvbm_tiers_request kvbm_tiers_request;

/* A plan handle, like a block handle: stale once the plan completed, failed
 * or was abandoned (calls then return KVBM_ESTALE). */
typedef uint64_t kvbm_plan;
#define KVBM_NO_TIER (-1)

typedef enum { KVBM_PLAN_ONBOARD = 0, KVBM_PLAN_OFFLOAD = 1 } kvbm_plan_kind;

/* One copy of a plan: the block at sequence position pos, from src (an
 * immutable block of the source tier) to dst (a mutable block of the
 * destination tier). kvbm_block_id() of each is what the host copies. */
typedef struct kvbm_copy {
  kvbm_hash hash;
  kvbm_block src, dst;
  uint32_t pos;
} kvbm_copy;

typedef struct kvbm_plan_info {
  kvbm_plan_kind kind;
  unsigned src_tier, dst_tier;
  size_t ncopies;
  uint64_t seq; /* 1, 2, ...: the order plans were made in */
} kvbm_plan_info;

/* XX(NAME, lua_name): the built-in rules, used for the hooks a host leaves
 * NULL, so that no host call is paid for them. */
#define KVBM_TIER_RULE_MAP(XX)                                                  \
  XX(NONE, "none")                           /* no offloads */                 \
  XX(OFFLOAD_ON_RELEASE, "offload_on_release") /* a block that goes inactive    \
                                                  in tier t is copied to tier  \
                                                  t+1 unless it is there */

typedef enum {
#define KVBM__TIER_RULE_ENUM(name, lua) KVBM_TIER_RULE_##name,
  KVBM_TIER_RULE_MAP(KVBM__TIER_RULE_ENUM)
#undef KVBM__TIER_RULE_ENUM
  KVBM__TIER_RULE_END
} kvbm_tier_rule;

/* Host hooks; each may be NULL. Batches: the blocks of one request (or one
 * plan) at once, in position order. dst[i] receives the tier to copy block i
 * to, or KVBM_NO_TIER (the planner fills it with KVBM_NO_TIER first). A
 * negative return aborts the operation that called the hook with that code
 * (what was registered stays registered; nothing more is planned). A dst
 * that is not a tier of the planner aborts it with KVBM_EINVAL. */
typedef struct kvbm_tier_hooks {
  /* blocks of a request just registered in G1 (kvbm_tiers_commit) */
  int (*on_register)(void *ud, const kvbm_hash *h, const uint32_t *pos, size_t n, int *dst);
  /* blocks whose last user in `tier` let go (they went inactive there) */
  int (*on_inactive)(void *ud, unsigned tier, const kvbm_hash *h, const uint32_t *pos, size_t n,
                     int *dst);
  /* a G1 miss at pos that `tier` holds: 1 copy it up (the default), 0 not */
  int (*onboard)(void *ud, kvbm_hash h, uint32_t pos, unsigned tier);
  void *ud;
} kvbm_tier_hooks;

typedef struct kvbm_tiers_config {
  kvbm_manager *tier[KVBM_MAX_TIERS]; /* by level; [0] required; NULL: no such tier */
  kvbm_tier_rule rule;                /* for on_inactive when hooks.on_inactive is NULL */
  kvbm_tier_hooks hooks;
  const kvbm_allocator *alloc;
} kvbm_tiers_config;

typedef struct kvbm_tier_stats {
  uint64_t hits;       /* blocks of admitted requests found here (G1: matched; below: onboarded) */
  uint64_t copies_in;  /* copies registered here by completed plans */
  uint64_t copies_out; /* copies read from here by completed plans */
  uint64_t skipped;    /* offload copies skipped: this tier could not hold them */
} kvbm_tier_stats;

typedef struct kvbm_tiers_stats {
  uint64_t requests, rejected, blocks; /* admissions, refused ones, their full blocks */
  uint64_t onboards, offloads, offloads_skipped, plans_made, plans_failed;
  size_t pending;                      /* plans waiting for the host */
  kvbm_tier_stats tier[KVBM_MAX_TIERS];
} kvbm_tiers_stats;

/* KVBM_ECONFIG: no G1, a manager twice, or managers of different registries. */
KVBM_API KVBM_NODISCARD int kvbm_tiers_new(const kvbm_tiers_config *cfg, kvbm_tiers **out);
/* Abandons pending plans and frees live requests (their blocks go back
 * without reaching the policy). The managers are left alone. */
KVBM_API void kvbm_tiers_free(kvbm_tiers *t);
KVBM_API kvbm_manager *kvbm_tiers_manager(const kvbm_tiers *t, unsigned tier); /* NULL: none */
KVBM_API void kvbm_tiers_get_stats(const kvbm_tiers *t, kvbm_tiers_stats *out);
/* 1 when tier holds h (either pool), 0 otherwise. */
KVBM_API int kvbm_tiers_present(const kvbm_tiers *t, unsigned tier, kvbm_hash h);
/* 1 when a pending plan copies h into tier. */
KVBM_API int kvbm_tiers_planned(const kvbm_tiers *t, unsigned tier, kvbm_hash h);

/* Admits a request for hashes[0..n): matches the G1 prefix, plans the
 * onboarding of the run of blocks after it that lower tiers hold (the
 * onboard hook may refuse some), allocates G1 blocks for the rest. All or
 * nothing: KVBM_ENOSPC when G1 cannot hold it (counted as rejected). */
KVBM_API KVBM_NODISCARD int kvbm_tiers_admit(kvbm_tiers *t, const kvbm_hash *hashes, size_t n,
                                             kvbm_tiers_request **out);
/* The prefill is computed: registers the blocks the request computed in G1
 * (its onboard plans must be complete: KVBM_ESTATE otherwise) and offers them
 * to on_register. Returns how many were registered. */
KVBM_API KVBM_NODISCARD int kvbm_tiers_commit(kvbm_tiers *t, kvbm_tiers_request *r);
/* The request ends: its pending onboard plans are abandoned, its G1 blocks
 * released in position order; those that went inactive are offered to
 * on_inactive. Idempotent. */
KVBM_API int kvbm_tiers_release(kvbm_tiers *t, kvbm_tiers_request *r);
/* Hands the host r's G1 blocks once it is committed (nothing waits, nothing
 * left to compute): out[pos] gets the immutable block at each position (cap
 * >= kvbm_tiers_request_blocks(r)) and the host owns those references from
 * now on; r holds no G1 block any more (releasing it releases none). Returns
 * the count; KVBM_ESTATE before the commit, after the release, or when an
 * onboard was given up. The host gives them back with kvbm_tiers_let_go. */
KVBM_API KVBM_NODISCARD int kvbm_tiers_request_take(kvbm_tiers *t, kvbm_tiers_request *r, kvbm_block *out,
                                                    size_t cap);
/* Registers G1 blocks the host staged itself (a decode's complete blocks,
 * with their hashes and sequence positions) and offers them to on_register,
 * as a commit does; out[i] gets the immutable block of complete[i] (the
 * host's). Returns n. A registration failure leaves the blocks complete and
 * out all KVBM_NO_BLOCK; a policy failure after the registration returns the
 * policy's code with the blocks registered (out filled, the host's). */
KVBM_API KVBM_NODISCARD int kvbm_tiers_register(kvbm_tiers *t, const kvbm_block *complete, const kvbm_hash *h,
                                                const uint32_t *pos, size_t n, kvbm_block *out);
/* The host lets go of immutable blocks of tier that it holds (taken from a
 * request, or registered by kvbm_tiers_register), in order; those that go
 * inactive are offered to on_inactive, as a request's release does. The
 * blocks are released even when the policy fails. */
KVBM_API int kvbm_tiers_let_go(kvbm_tiers *t, unsigned tier, const kvbm_block *b, const kvbm_hash *h,
                               const uint32_t *pos, size_t n);
/* Releases (quietly: the policy is not called) if needed, and frees r. */
KVBM_API void kvbm_tiers_request_free(kvbm_tiers *t, kvbm_tiers_request *r);
KVBM_API size_t kvbm_tiers_request_blocks(const kvbm_tiers_request *r);  /* n */
KVBM_API size_t kvbm_tiers_request_matched(const kvbm_tiers_request *r); /* G1 prefix hits */
KVBM_API size_t kvbm_tiers_request_waiting(const kvbm_tiers_request *r); /* onboards not done */
/* The onboard plans made at admission (some may be stale by now). */
KVBM_API size_t kvbm_tiers_request_onboard(const kvbm_tiers_request *r, kvbm_plan *out, size_t cap);
/* The G1 immutable block at pos, or KVBM_NO_BLOCK (not registered yet). */
KVBM_API kvbm_block kvbm_tiers_request_block(const kvbm_tiers_request *r, size_t pos);

/* Pending plans, oldest first: writes at most cap, returns the count. */
KVBM_API size_t kvbm_tiers_plans(const kvbm_tiers *t, kvbm_plan *out, size_t cap);
KVBM_API int kvbm_tiers_plan_info(const kvbm_tiers *t, kvbm_plan p, kvbm_plan_info *out);
/* Writes at most cap copies; returns the plan's copy count (or < 0). */
KVBM_API int kvbm_tiers_plan_copies(const kvbm_tiers *t, kvbm_plan p, kvbm_copy *out, size_t cap);
/* The host finished (ok) or failed (!ok) the copies of p. ok: the copies are
 * registered in the destination; an offload's copies, a plan's sources, go
 * back and may reach on_inactive. Failed: nothing is registered, every block
 * goes back (a failed onboard leaves its request waiting). */
KVBM_API int kvbm_tiers_complete(kvbm_tiers *t, kvbm_plan p, int ok);
/* Completes every pending plan, including those completing them makes, in
 * order (a host whose copies are instantaneous). Returns how many. */
KVBM_API int kvbm_tiers_complete_all(kvbm_tiers *t);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_H */
