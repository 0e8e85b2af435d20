/* fuzz_wire.c - the KvbmCacheEvents decoder on arbitrary bytes. A refusal
 * must be KVBM_EDECODE with a reason and an offset inside the input; what
 * decodes must encode again (into exactly kvbm_wire_encoded_size bytes, not
 * into one byte less) and decode back to the same batch. */
#include <string.h>

#include "fuzz.h"
#include "kvbm.h"

#define CAP 256

static int same_batch(const kvbm_batch *a, const kvbm_batch *b) {
  if (a->kind != b->kind || a->n != b->n || a->instance_id.hi != b->instance_id.hi ||
      a->instance_id.lo != b->instance_id.lo)
    return 0;
  for (size_t i = 0; i < a->n; i++)
    if (a->hashes[i].hi != b->hashes[i].hi || a->hashes[i].lo != b->hashes[i].lo) return 0;
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static kvbm_hash hashes[CAP], again[CAP];
  kvbm_batch b, b2;
  const char *why = NULL;
  size_t where = SIZE_MAX;

  int rc = kvbm_wire_decode(data, size, &b, hashes, CAP, &why, &where);
  if (rc < 0) {
    FUZZ_CHECK(rc == KVBM_EDECODE, "rc %d", rc);
    FUZZ_CHECK(why && *why, "a refusal without a reason");
    FUZZ_CHECK(where <= size, "error offset %zu beyond %zu bytes", where, size);
    return 0;
  }
  FUZZ_CHECK(rc == 0, "rc %d", rc);
  FUZZ_CHECK(b.n <= CAP && (b.kind != KVBM_EVENT_SHUTDOWN || b.n == 0), "kind %d n %zu", b.kind, b.n);
  for (size_t i = 0; i < b.n; i++) FUZZ_CHECK(kvbm_hash_valid(b.hashes[i]), "hash %zu invalid", i);

  size_t need = kvbm_wire_encoded_size(b.n);
  unsigned char *buf = malloc(need);
  FUZZ_CHECK(buf != NULL, "malloc");
  FUZZ_CHECK(kvbm_wire_encode(&b, buf, need - 1) == KVBM_EINVAL, "encoded into one byte too few");
  int len = kvbm_wire_encode(&b, buf, need);
  FUZZ_CHECK(len > 0 && (size_t)len <= need, "encode: %d for %zu", len, need);
  rc = kvbm_wire_decode(buf, (size_t)len, &b2, again, CAP, &why, &where);
  FUZZ_CHECK(rc == 0, "re-decode: %s at %zu", why, where);
  FUZZ_CHECK(same_batch(&b, &b2), "round trip changed the batch");
  free(buf);
  return 0;
}
