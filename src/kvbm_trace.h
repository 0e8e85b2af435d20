/*
 * kvbm_trace.h - request traces for replays and simulations, in C.
 *
 * Two formats, one request per line:
 *   text   "<request_id> <salt> <n_tokens> <tok0> ... <tok{n-1}>", decimal,
 *          request_id and salt in 0..2^64-1, tokens in 0..2^32-1; blank
 *          lines and lines starting with '#' are skipped; anything else
 *          malformed is an error.
 *   jsonl  Mooncake/Dynamo: one JSON object per line with "timestamp" (ms),
 *          "input_length", "output_length" and "hash_ids" (aliases
 *          "created_time", "input_tokens", "output_tokens"); other fields
 *          are ignored. Hash id h stands for trace_block_size copies of the
 *          token h; the prompt is their concatenation cut to
 *          min(input_length, trace_block_size * #hash_ids) tokens, as
 *          Dynamo's trace loader makes it. Blank and '#' lines are skipped.
 * KVBM_TRACE_AUTO picks jsonl when the first character that is not blank
 * and not in a comment line is '{', text otherwise.
 *
 * A trace holds its requests in one array and every prompt token in one
 * contiguous u32 array (no per-request allocation), through the allocator
 * hook. jansson's own short-lived per-line objects use its global allocator.
 *
 * Errors: negative KVBM_E* codes; KVBM_ETRACE for malformed input, with
 * kvbm_trace_error filled as "name:line: what" (the physical line, 1-based,
 * counting blank and comment lines). Loading is all or nothing: on any error
 * *out stays NULL and nothing is left allocated.
 */
#ifndef KVBM_TRACE_H
#define KVBM_TRACE_H

#include <stdio.h>

#include "kvbm.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvbm_trace kvbm_trace;

typedef enum {
  KVBM_TRACE_AUTO = 0, /* by content (see above) */
  KVBM_TRACE_TEXT,
  KVBM_TRACE_JSONL
} kvbm_trace_format;

#define KVBM_TRACE_BLOCK_SIZE 512 /* tokens per JSONL hash id, Mooncake's */

typedef struct kvbm_trace_options {
  kvbm_trace_format format;
  uint32_t trace_block_size; /* JSONL tokens per hash id; 0 means KVBM_TRACE_BLOCK_SIZE */
  uint64_t max_tokens;       /* more prompt tokens in all is KVBM_ETRACE; 0: no limit */
  const char *name;          /* the input's name in messages; NULL: the path, or "<buffer>" */
  /* Called as loading advances (about every MiB, and once at the end with
   * done == total); total is 0 when unknown (a pipe). A nonzero return
   * stops the load with KVBM_ECANCELLED. */
  int (*progress)(void *ud, uint64_t done, uint64_t total);
  void *progress_ud;
  const kvbm_allocator *alloc;
} kvbm_trace_options;

typedef struct kvbm_trace_error {
  uint64_t line;     /* physical line, 1-based; 0 when the error is not about one */
  char message[512]; /* "name:line: what", or "name: what" */
} kvbm_trace_error;

typedef struct kvbm_trace_request {
  uint64_t id;            /* text: request_id; jsonl: the request's 0-based index */
  uint64_t salt;          /* text: the salt; jsonl: 0 */
  double timestamp_ms;    /* jsonl: arrival; text: 0 */
  uint64_t input_length;  /* jsonl: as given; text: n_tokens */
  uint64_t output_length; /* jsonl: as given; text: 0 */
  uint64_t line;          /* where the request is in its input */
  size_t n_tokens;        /* prompt tokens stored */
  size_t first_token;     /* offset in kvbm_trace_all_tokens() */
} kvbm_trace_request;

/* opts may be NULL (all defaults); err may be NULL. */
KVBM_API KVBM_NODISCARD int kvbm_trace_load_buffer(const void *buf, size_t len,
                                                   const kvbm_trace_options *opts,
                                                   kvbm_trace **out, kvbm_trace_error *err);
/* Reads f to its end (f stays open). KVBM_EIO when reading fails. */
KVBM_API KVBM_NODISCARD int kvbm_trace_load_file(FILE *f, const kvbm_trace_options *opts,
                                                 kvbm_trace **out, kvbm_trace_error *err);
/* Opens, reads and closes path. KVBM_EIO when it cannot be opened or read. */
KVBM_API KVBM_NODISCARD int kvbm_trace_load_path(const char *path, const kvbm_trace_options *opts,
                                                 kvbm_trace **out, kvbm_trace_error *err);
KVBM_API void kvbm_trace_free(kvbm_trace *t);

KVBM_API size_t kvbm_trace_count(const kvbm_trace *t);
KVBM_API kvbm_trace_format kvbm_trace_format_of(const kvbm_trace *t); /* TEXT or JSONL */
/* Request i (0-based), or NULL when i >= kvbm_trace_count(t). */
KVBM_API const kvbm_trace_request *kvbm_trace_get(const kvbm_trace *t, size_t i);
/* Request i's prompt tokens (*n of them); NULL and *n = 0 when i is out of range. */
KVBM_API const uint32_t *kvbm_trace_tokens(const kvbm_trace *t, size_t i, size_t *n);
KVBM_API const uint32_t *kvbm_trace_all_tokens(const kvbm_trace *t);
KVBM_API size_t kvbm_trace_total_tokens(const kvbm_trace *t);

#ifdef __cplusplus
}
#endif
#endif /* KVBM_TRACE_H */
