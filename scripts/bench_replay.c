/* bench_replay.c - the trace replay (lua/kvbm/replay.lua's workload) through the C API:
 *   bench_replay TRACE BLOCK_COUNT WINDOW BACKEND
 * For each request, in file order: (e) release the oldest request of the
 * window when W requests hold blocks; (a) hash the full blocks (block size
 * 16, the line's salt); (b) match them; (c) allocate the rest, or count the
 * request rejected and release what it holds; (d) stage and register the
 * new blocks. Only the request loop is timed (wall_ms); load_ms is the
 * trace's loading (kvbm_trace_load_path). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_backend.h"
#include "kvbm.h"
#include "kvbm_trace.h"

#define BLOCK_SIZE 16

static double clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}
static double now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
/* CPU time too: what the Lua replays and the sim measure (os.clock) */
static double cpu_ns(void) { return clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

int main(int argc, char **argv) {
  if (argc != 5 || bench_backend_of(argv[4]) < 0) {
    fprintf(stderr, "usage: bench_replay TRACE BLOCK_COUNT WINDOW BACKEND (a kvbm backend name: lru, lineage, ...)\n");
    return 2;
  }
  kvbm_trace *trace;
  kvbm_trace_error terr;
  kvbm_trace_options topts = {.format = KVBM_TRACE_TEXT};
  double l0 = now_ns();
  if (kvbm_trace_load_path(argv[1], &topts, &trace, &terr) < 0)
    return fprintf(stderr, "bench_replay: %s\n", terr.message), 1;
  double load_ns = now_ns() - l0;
  size_t nreq = kvbm_trace_count(trace);
  uint32_t block_count = (uint32_t)atol(argv[2]);
  size_t window = (size_t)atol(argv[3]), max_blocks = 0;
  for (size_t i = 0; i < nreq; i++)
    if (kvbm_trace_get(trace, i)->n_tokens / BLOCK_SIZE > max_blocks)
      max_blocks = kvbm_trace_get(trace, i)->n_tokens / BLOCK_SIZE;

  kvbm_registry *reg;
  kvbm_manager *m;
  kvbm_backend backend = (kvbm_backend)bench_backend_of(argv[4]);
  if (kvbm_registry_new(NULL, backend == KVBM_BACKEND_MULTI_LRU ? KVBM_FREQUENCY_MEDIUM : KVBM_FREQUENCY_NONE, &reg) < 0)
    return 1;
  kvbm_manager_config cfg = {.block_count = block_count, .block_size = BLOCK_SIZE, .registry = reg,
                             .name = "G1", .backend = backend};
  if (kvbm_manager_new(&cfg, &m) < 0) return 1;

  /* the window: W slots of held blocks, oldest first */
  kvbm_block *held = malloc(window * max_blocks * sizeof *held);
  size_t *nheld = calloc(window, sizeof *nheld), head = 0, inwin = 0;
  kvbm_block *mut = malloc((max_blocks + 1) * sizeof *mut), *cbs = malloc((max_blocks + 1) * sizeof *cbs);
  kvbm_sequence *seq = NULL;
  uint64_t seq_salt = 0;
  size_t hits = 0, allocs = 0, rejected = 0, full_blocks = 0;

  double t0 = now_ns(), c0 = cpu_ns();
  for (size_t r = 0; r < nreq; r++) {
    if (inwin == window) { /* (e) release the oldest request, in position order */
      for (size_t i = 0; i < nheld[head]; i++) (void)kvbm_release(m, held[head * max_blocks + i]);
      head = (head + 1) % window;
      inwin--;
    }
    const kvbm_trace_request *rq = kvbm_trace_get(trace, r);
    size_t nfull = rq->n_tokens / BLOCK_SIZE;
    full_blocks += nfull;
    if (!seq || seq_salt != rq->salt) { /* (a) */
      kvbm_sequence_free(seq);
      if (kvbm_sequence_new(NULL, BLOCK_SIZE, rq->salt, &seq) < 0) return 1;
      seq_salt = rq->salt;
    }
    kvbm_sequence_truncate(seq, 0);
    if (kvbm_sequence_extend(seq, kvbm_trace_tokens(trace, r, NULL), nfull * BLOCK_SIZE, NULL, NULL) < 0) return 1;
    const kvbm_hash *hashes = kvbm_sequence_hashes(seq);
    size_t slot = (head + inwin) % window;
    kvbm_block *mine = held + slot * max_blocks;
    size_t h = kvbm_match(m, hashes, nfull, mine); /* (b) */
    hits += h;
    if (kvbm_allocate(m, nfull - h, mut, NULL) < 0) { /* (c) */
      rejected++;
      for (size_t i = 0; i < h; i++) (void)kvbm_release(m, mine[i]);
      continue;
    }
    allocs += nfull - h;
    for (size_t i = 0; i < nfull - h; i++) /* (d) */
      if (kvbm_stage(m, mut[i], hashes[h + i], BLOCK_SIZE, &cbs[i]) < 0) return 1;
    if (kvbm_register_all(m, cbs, nfull - h, mine + h) < 0) return 1;
    nheld[slot] = nfull;
    inwin++;
  }
  double t1 = now_ns(), c1 = cpu_ns();

  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  double bytes = (double)(kvbm_manager_bytes(m) + kvbm_registry_bytes(reg)) / block_count;
  printf("%-12s blocks %6u W %3zu  requests %zu  full_blocks %zu  hits %zu  allocations %zu  rejected %zu"
         "  evictions %llu  wall_ms %.1f  ns/block %.1f  bytes/block %.1f  load_ms %.1f  cpu_ns/block %.1f\n",
         argv[4], block_count, window, nreq, full_blocks, hits, allocs, rejected,
         (unsigned long long)x.evictions, (t1 - t0) / 1e6, (t1 - t0) / (double)full_blocks, bytes, load_ns / 1e6,
         (c1 - c0) / (double)full_blocks);

  for (size_t w = 0; w < inwin; w++) {
    size_t s = (head + w) % window;
    for (size_t i = 0; i < nheld[s]; i++) (void)kvbm_release(m, held[s * max_blocks + i]);
  }
  kvbm_sequence_free(seq);
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
  kvbm_trace_free(trace);
  free(held), free(nheld), free(mut), free(cbs);
  return 0;
}
