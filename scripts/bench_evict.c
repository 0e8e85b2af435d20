/* bench_evict.c - eviction policies on a Mooncake/Dynamo JSONL trace, the
 * replay of issue 12: one block per trace hash id (the trace's block size),
 * the full prompt blocks only (input_length / TRACE_BLOCK), one request at a
 * time (window 1: the previous request is released, in position order,
 * before the next is matched), G1 only.
 *   bench_evict TRACE.jsonl TRACE_BLOCK BLOCKS BACKEND...
 * BACKEND is any kvbm backend name; "optimal" is fed each block's next use
 * (the index of the next request that needs its hash). Prints one line per
 * backend: the hit rate over all full blocks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_backend.h"
#include "kvbm.h"
#include "kvbm_trace.h"

typedef struct {
  uint32_t *ids;
  size_t n; /* full blocks */
} request;

/* The trace through kvbm_trace (the engine's JSONL loader): hash id h is
 * trace_block copies of the token h, so block i of a request is the id
 * tokens[i * trace_block] and only full blocks are kept. */
static request *load(const char *path, size_t trace_block, size_t *count) {
  kvbm_trace_options opts = {.format = KVBM_TRACE_JSONL, .trace_block_size = (uint32_t)trace_block};
  kvbm_trace_error err;
  kvbm_trace *t;
  if (kvbm_trace_load_path(path, &opts, &t, &err) < 0) {
    fprintf(stderr, "bench_evict: %s\n", err.message);
    return NULL;
  }
  size_t n = kvbm_trace_count(t);
  request *rs = malloc((n ? n : 1) * sizeof *rs);
  for (size_t r = 0; r < n; r++) {
    size_t ntok;
    const uint32_t *tok = kvbm_trace_tokens(t, r, &ntok);
    rs[r].n = ntok / trace_block;
    rs[r].ids = malloc((rs[r].n + 1) * sizeof *rs[r].ids);
    for (size_t i = 0; i < rs[r].n; i++) rs[r].ids[i] = tok[i * trace_block];
  }
  kvbm_trace_free(t);
  *count = n;
  return rs;
}

/* next_use[r][i]: the next request after r whose prefix holds block i of
 * request r (UINT64_MAX: none), from one backward pass over the trace. */
typedef struct { kvbm_hash h; uint64_t when; } seen;

static uint64_t mix(kvbm_hash h) { return (h.lo ^ (h.hi * 0x9E3779B97F4A7C15ull)) * 0xD6E8FEB86659FD93ull; }

static uint64_t **next_uses(kvbm_hash **hashes, const request *rs, size_t nreq) {
  size_t total = 0;
  for (size_t r = 0; r < nreq; r++) total += rs[r].n;
  size_t cap = 1;
  while (cap < 2 * total + 2) cap <<= 1;
  seen *t = calloc(cap, sizeof *t);
  uint8_t *used = calloc(cap, 1);
  uint64_t **nu = malloc(nreq * sizeof *nu);
  for (size_t r = nreq; r-- > 0;) {
    nu[r] = malloc((rs[r].n + 1) * sizeof **nu);
    for (size_t i = 0; i < rs[r].n; i++) {
      kvbm_hash h = hashes[r][i];
      size_t j = mix(h) & (cap - 1);
      while (used[j] && (t[j].h.lo != h.lo || t[j].h.hi != h.hi)) j = (j + 1) & (cap - 1);
      nu[r][i] = used[j] ? t[j].when : UINT64_MAX;
      used[j] = 1;
      t[j].h = h;
      t[j].when = r;
    }
  }
  free(t);
  free(used);
  return nu;
}

static double replay(const request *rs, kvbm_hash **hashes, uint64_t **nu, size_t nreq,
                     uint32_t blocks, kvbm_backend backend, size_t *rejected) {
  kvbm_registry *reg;
  kvbm_manager *m;
  if (kvbm_registry_new(NULL, KVBM_FREQUENCY_MEDIUM, &reg) < 0) exit(1);
  kvbm_manager_config cfg = {.block_count = blocks, .block_size = 1, .registry = reg, .name = "G1",
                             .backend = backend};
  if (kvbm_manager_new(&cfg, &m) < 0) exit(1);
  size_t max = 0, hits = 0, full = 0;
  for (size_t r = 0; r < nreq; r++) max = rs[r].n > max ? rs[r].n : max;
  kvbm_block *held = malloc((max + 1) * sizeof *held), *mut = malloc((max + 1) * sizeof *mut);
  kvbm_block *cbs = malloc((max + 1) * sizeof *cbs);
  size_t nheld = 0;
  *rejected = 0;
  for (size_t r = 0; r < nreq; r++) {
    for (size_t i = 0; i < nheld; i++) (void)kvbm_release(m, held[i]);
    nheld = 0;
    size_t n = rs[r].n;
    full += n;
    size_t h = kvbm_match(m, hashes[r], n, held);
    hits += h;
    if (kvbm_allocate(m, n - h, mut, NULL) < 0) {
      (*rejected)++;
      for (size_t i = 0; i < h; i++) (void)kvbm_release(m, held[i]);
      continue;
    }
    for (size_t i = 0; i < n - h; i++)
      if (kvbm_stage(m, mut[i], hashes[r][h + i], 1, &cbs[i]) < 0) exit(1);
    if (kvbm_register_all(m, cbs, n - h, held + h) < 0) exit(1);
    nheld = n;
    if (nu) (void)kvbm_next_use(m, hashes[r], nu[r], n);
  }
  for (size_t i = 0; i < nheld; i++) (void)kvbm_release(m, held[i]);
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
  free(held), free(mut), free(cbs);
  return full ? 100.0 * (double)hits / (double)full : 0;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: bench_evict TRACE.jsonl TRACE_BLOCK BLOCKS BACKEND...\n");
    return 2;
  }
  size_t nreq, trace_block = (size_t)atol(argv[2]);
  uint32_t blocks = (uint32_t)atol(argv[3]);
  request *rs = trace_block ? load(argv[1], trace_block, &nreq) : NULL;
  if (!rs) return fprintf(stderr, "bench_evict: cannot read %s\n", argv[1]), 1;
  kvbm_hash **hashes = malloc(nreq * sizeof *hashes);
  kvbm_sequence *seq;
  for (size_t r = 0; r < nreq; r++) { /* one token per hash id, block size 1 */
    if (kvbm_sequence_new(NULL, 1, 0, &seq) < 0 || kvbm_sequence_extend(seq, rs[r].ids, rs[r].n, NULL, NULL) < 0)
      return 1;
    hashes[r] = malloc((rs[r].n + 1) * sizeof **hashes);
    memcpy(hashes[r], kvbm_sequence_hashes(seq), rs[r].n * sizeof **hashes);
    kvbm_sequence_free(seq);
  }
  uint64_t **nu = NULL;
  for (int a = 4; a < argc; a++) {
    int b = bench_backend_of(argv[a]);
    if (b < 0) return fprintf(stderr, "bench_evict: unknown backend %s\n", argv[a]), 2;
    if (b == KVBM_BACKEND_OPTIMAL && !nu) nu = next_uses(hashes, rs, nreq);
    size_t rejected;
    double rate = replay(rs, hashes, b == KVBM_BACKEND_OPTIMAL ? nu : NULL, nreq, blocks, (kvbm_backend)b, &rejected);
    printf("%-12s blocks %6u  hit rate %6.2f %%  rejected %zu\n", argv[a], blocks, rate, rejected);
    fflush(stdout);
  }
  for (size_t r = 0; r < nreq; r++) { /* leak-free under ASan, which make check runs it under */
    free(rs[r].ids);
    free(hashes[r]);
    if (nu) free(nu[r]);
  }
  free(rs), free(hashes), free(nu);
  return 0;
}
