/* tinylfu.h - the TinyLFU frequency tracker (kvbm-logical's tinylfu.rs); never installed.
 *
 * A Count-Min sketch of 4-bit counters: a table of max(1, capacity/4) u64
 * words, 16 counters per word, probed by 4 hash functions. A hash function i
 * is XXH3_64bits_withSecret over the key's 16 little-endian bytes (lo word,
 * then hi word) with the 192-byte secret XXH3_generateSecret_fromSeed(i),
 * which is xxhash-rust's const_custom_default_secret(i). Probe i uses word
 * h % table_len and the 4-bit lane h & 15, so counts agree with the Rust
 * crate's TinyLFUSketch<u128> bit for bit.
 *
 * increment() bumps each of the key's 4 lanes that is below 15; when any lane
 * moved, size grows by one and, once size >= sample_size, reset() ages the
 * sketch (every lane halved). estimate() is the minimum of the key's lanes.
 *
 * Quirk kept for compatibility: word and lane come from the same hash. When
 * 2^k divides table_len, h % table_len and h agree modulo 2^k, so the lane's
 * low min(k, 4) bits repeat the word index's and only 16 >> min(k, 4) lanes
 * of a word are reachable. The presets (powers of two) use one lane per word,
 * lane = word & 15: table_len effective counters, not 16 * table_len.
 *
 * Not thread-safe: the caller holds whatever lock guards the tracker. */
#ifndef KVBM_TINYLFU_H
#define KVBM_TINYLFU_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

typedef struct kvbm__tinylfu kvbm__tinylfu;

/* The FrequencyTrackingCapacity presets (entries; table words = entries / 4)
 * are KVBM_FREQUENCY_MAP in kvbm.h. */

/* Creates a zeroed sketch for capacity entries. sample_size is the decay
 * threshold (FixedDecayPolicy); 0 picks the default min(capacity * 10,
 * UINT32_MAX) (FixedDecayPolicy::from_capacity). a may be NULL (C library).
 * Returns 0 or KVBM_ENOMEM (also when the table size overflows size_t). */
int kvbm__tinylfu_new(const kvbm_allocator *a, size_t capacity, uint32_t sample_size,
                      kvbm__tinylfu **out);
void kvbm__tinylfu_free(kvbm__tinylfu *t); /* NULL is a no-op */

/* FixedDecayPolicy::from_capacity: min(capacity * 10, UINT32_MAX). */
uint32_t kvbm__tinylfu_default_sample_size(size_t capacity);

/* Counts one access to key (may run the aging step). No allocation.
 * A NULL sketch is the crate's NoOpTracker: increment does nothing and
 * estimate returns 0. */
void kvbm__tinylfu_increment(kvbm__tinylfu *t, kvbm_hash key);
/* The estimated access count of key, 0..15. */
uint32_t kvbm__tinylfu_estimate(const kvbm__tinylfu *t, kvbm_hash key);
/* The aging step: halves every counter and adjusts size (see tinylfu.c). */
void kvbm__tinylfu_reset(kvbm__tinylfu *t);

/* Successful increments since the last decay (as adjusted by reset()). */
uint32_t kvbm__tinylfu_size(const kvbm__tinylfu *t);
/* The decay threshold in force (after the default was applied). */
uint32_t kvbm__tinylfu_sample_size(const kvbm__tinylfu *t);
/* Number of u64 words in the counter table. */
size_t kvbm__tinylfu_table_len(const kvbm__tinylfu *t);
/* Memory held by the sketch, in bytes. */
size_t kvbm__tinylfu_bytes(const kvbm__tinylfu *t);

/* Hash function i of the sketch on key (exposed for the tests). */
uint64_t kvbm__tinylfu_hash(const kvbm__tinylfu *t, int i, kvbm_hash key);

#endif
