/* test_assignments.c - ExternalBlockAssignments: scenarios 27-79 of the
 * sequence catalogue (§3.7), every error variant, allocation failure at
 * every allocation point, and a randomized comparison against a model. */
#include <stdarg.h>
#include <stdlib.h>

#include <kvbm.h>

#include "tap.h"

/* ----------------------------------------------------------- helpers */

#define MUST(call)                             \
  do {                                         \
    if ((call) < 0) ok(0, "setup: %s", #call); \
  } while (0)

/* seq(n, r): tokens 0..4n+r, block size 4, salt none. */
static kvbm_sequence *seq(uint32_t n, uint32_t r) {
  kvbm_sequence *s = NULL;
  MUST(kvbm_sequence_new(NULL, 4, 0, &s));
  for (uint32_t t = 0; t < 4 * n + r; t++) MUST(kvbm_sequence_extend(s, &t, 1, NULL, NULL));
  return s;
}

/* Appends tokens first..last (inclusive) and returns the new block count. */
static size_t append(kvbm_sequence *s, uint32_t first, uint32_t last) {
  for (uint32_t t = first; t <= last; t++) MUST(kvbm_sequence_extend(s, &t, 1, NULL, NULL));
  return kvbm_sequence_blocks(s);
}

static kvbm_hash H(const kvbm_sequence *s, size_t i) { return kvbm_sequence_hashes(s)[i]; }
static int heq(kvbm_hash a, kvbm_hash b) { return a.hi == b.hi && a.lo == b.lo; }

static kvbm_assignments *mk(size_t offset) {
  kvbm_assignments *a = NULL;
  MUST(kvbm_assignments_new(NULL, offset, &a));
  return a;
}

/* ids first, first+step, ..., up to last inclusive */
static size_t ids_of(uint64_t *out, uint64_t first, uint64_t last, uint64_t step) {
  size_t n = 0;
  for (uint64_t id = first; id <= last; id += step) out[n++] = id;
  return n;
}

static int extend(kvbm_assignments *a, uint64_t first, uint64_t last, uint64_t step) {
  uint64_t ids[64];
  size_t n = first <= last ? ids_of(ids, first, last, step) : 0;
  return kvbm_assignments_extend_block_ids(a, ids, n, NULL);
}

/* assign_pending against the first nall hashes of s (all when nall == SIZE_MAX) */
static int assign_n(kvbm_assignments *a, const kvbm_sequence *s, size_t nall, size_t lo,
                    size_t hi) {
  size_t l = 99, h = 99;
  if (nall > kvbm_sequence_blocks(s)) nall = kvbm_sequence_blocks(s);
  int rc = kvbm_assignments_assign_pending(a, kvbm_sequence_hashes(s), nall, &l, &h, NULL);
  if (rc < 0 || l != lo || h != hi) {
    printf("#   assign_pending: rc %d, got %zu..%zu, want %zu..%zu\n", rc, l, h, lo, hi);
    return 0;
  }
  return 1;
}
#define ALL SIZE_MAX
#define assign(a, s, lo, hi) assign_n(a, s, ALL, lo, hi)

static int stage_n(kvbm_assignments *a, const kvbm_sequence *s, size_t nall, size_t lo,
                   size_t hi) {
  size_t l = 99, h = 99;
  if (nall > kvbm_sequence_blocks(s)) nall = kvbm_sequence_blocks(s);
  int rc = kvbm_assignments_stage_pending(a, kvbm_sequence_hashes(s), nall, &l, &h, NULL);
  if (rc < 0 || l != lo || h != hi) {
    printf("#   stage_pending: rc %d, got %zu..%zu, want %zu..%zu\n", rc, l, h, lo, hi);
    return 0;
  }
  return 1;
}

static int commit(kvbm_assignments *a, size_t lo, size_t hi) {
  size_t l = 99, h = 99;
  kvbm_assignments_commit_staged(a, &l, &h);
  return l == lo && h == hi;
}

/* unassigned ids are exactly the n varargs, in order */
static int unassigned_is(const kvbm_assignments *a, size_t n, ...) {
  va_list ap;
  int good = kvbm_assignments_unassigned_count(a) == n;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++) {
    uint64_t want = va_arg(ap, uint64_t), got = 0;
    if (!kvbm_assignments_get_unassigned(a, i, &got) || got != want) good = 0;
  }
  va_end(ap);
  if (!good) {
    printf("#   unassigned:");
    uint64_t id;
    for (size_t i = 0; kvbm_assignments_get_unassigned(a, i, &id); i++) printf(" %" PRIu64, id);
    printf("\n");
  }
  return good;
}
#define U(x) ((uint64_t)(x))

/* assigned index i (from index `from`) holds (ids[k], H[pos0 + k]) */
static int assigned_are(const kvbm_assignments *a, const kvbm_sequence *s, size_t from,
                        const uint64_t *ids, size_t n, size_t pos0) {
  for (size_t k = 0; k < n; k++) {
    uint64_t id;
    kvbm_hash h;
    if (!kvbm_assignments_get_assigned(a, from + k, &id, &h) || id != ids[k] ||
        !heq(h, H(s, pos0 + k))) {
      printf("#   assigned[%zu] wrong\n", from + k);
      return 0;
    }
  }
  return 1;
}

static int assigned_at(const kvbm_assignments *a, const kvbm_sequence *s, size_t i, uint64_t id,
                       size_t pos) {
  return assigned_are(a, s, i, &id, 1, pos);
}

static int range_is(void (*fn)(const kvbm_assignments *, size_t *, size_t *),
                    const kvbm_assignments *a, size_t lo, size_t hi) {
  size_t l, h;
  fn(a, &l, &h);
  if (l != lo || h != hi) printf("#   range %zu..%zu, want %zu..%zu\n", l, h, lo, hi);
  return l == lo && h == hi;
}
#define APOS kvbm_assignments_assigned_positions
#define SPOS kvbm_assignments_staged_positions
#define PPOS kvbm_assignments_pending_positions

static size_t nassigned(const kvbm_assignments *a) { return kvbm_assignments_assigned_count(a); }
static size_t nunassigned(const kvbm_assignments *a) { return kvbm_assignments_unassigned_count(a); }
static size_t nstaged(const kvbm_assignments *a) { return kvbm_assignments_staged_count(a); }

static int triples_are(const kvbm_assign_triple *t, size_t n, size_t want_n, ...) {
  va_list ap;
  int good = n == want_n;
  va_start(ap, want_n);
  for (size_t i = 0; i < want_n && good; i++) {
    size_t pos = va_arg(ap, size_t);
    uint64_t x = va_arg(ap, uint64_t), y = va_arg(ap, uint64_t);
    if (t[i].pos != pos || t[i].a_id != x || t[i].b_id != y) good = 0;
  }
  va_end(ap);
  if (!good) {
    printf("#   got %zu triples:", n);
    for (size_t i = 0; i < n && i < 16; i++)
      printf(" (%zu,%" PRIu64 ",%" PRIu64 ")", t[i].pos, t[i].a_id, t[i].b_id);
    printf("\n");
  }
  return good;
}
#define T(p, x, y) (size_t)(p), U(x), U(y)

/* ----------------------------------------------------------- 27-51 */

static void test_basic_assignment(void) {
  kvbm_assignments *a;
  kvbm_sequence *s;
  uint64_t ids[64];

  /* 27 */
  s = seq(0, 0), a = mk(0);
  ok(assign(a, s, 0, 0) && nassigned(a) == 0 && nunassigned(a) == 0, "#27 no blocks, no ids -> 0..0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(1, 0), a = mk(0);
  ok(assign(a, s, 0, 0) && nassigned(a) == 0 && nunassigned(a) == 0, "#27 one block, no ids -> 0..0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 28 */
  s = seq(1, 0), a = mk(0);
  MUST(extend(a, 100, 100, 100));
  ok(assign(a, s, 0, 1) && assigned_at(a, s, 0, 100, 0), "#28 [100] on 1 block -> 0..1, (100, H0)");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 29 */
  s = seq(1, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 1) && unassigned_is(a, 1, U(200)), "#29 [100, 200] on 1 block -> 0..1, unassigned [200]");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 30 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 3) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 300, 100), 0) &&
         nunassigned(a) == 0,
     "#30 3 ids on 3 blocks -> 0..3, id (i+1)*100 with H[i]");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 31 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 100, 100));
  ok(assign(a, s, 0, 1) && nunassigned(a) == 0, "#31 1 id on 3 blocks -> 0..1");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 32 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  ok(assign(a, s, 0, 3) && unassigned_is(a, 2, U(400), U(500)), "#32 5 ids on 3 blocks -> 0..3, [400, 500] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 33 */
  s = seq(0, 2), a = mk(0);
  ok(assign(a, s, 0, 0), "#33 partial block only, no ids -> 0..0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(2, 1), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 2) && assigned_at(a, s, 0, 100, 0) && assigned_at(a, s, 1, 200, 1),
     "#33 seq(2,1) + [100, 200] -> 0..2 (partial block ignored)");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 34 */
  s = seq(2, 3), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  ok(assign(a, s, 0, 2) && unassigned_is(a, 2, U(300), U(400)), "#34 seq(2,3) + 4 ids -> 0..2, [300, 400] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(3, 2), a = mk(0);
  MUST(extend(a, 100, 100, 100));
  ok(assign(a, s, 0, 1), "#34 seq(3,2) + [100] -> 0..1");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 35 */
  s = seq(4, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  int first = assign(a, s, 0, 2);
  MUST(extend(a, 100, 400, 100));
  ok(first && assign(a, s, 2, 4) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 400, 100), 0),
     "#35 incremental: [100, 200] -> 0..2, then the full list -> 2..4");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 36 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  first = assign(a, s, 0, 2);
  MUST(extend(a, 100, 500, 100));
  ok(first && assign(a, s, 2, 3) && assigned_at(a, s, 2, 300, 2) && unassigned_is(a, 2, U(400), U(500)),
     "#36 second round assigns 300 only; [400, 500] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 37 */
  s = seq(2, 1), a = mk(0);
  MUST(extend(a, 100, 100, 100));
  first = assign(a, s, 0, 1);
  MUST(extend(a, 100, 400, 100));
  ok(first && assign(a, s, 1, 2) && assigned_at(a, s, 1, 200, 1) && unassigned_is(a, 2, U(300), U(400)),
     "#37 seq(2,1): [100] then [100..400] -> 1..2; [300, 400] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 38 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  first = assign(a, s, 0, 2);
  MUST(extend(a, 100, 400, 100));
  ok(first && assign(a, s, 2, 2) && unassigned_is(a, 2, U(300), U(400)),
     "#38 no blocks left: 2..2, [300, 400] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 39 */
  s = seq(0, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 0) && unassigned_is(a, 3, U(100), U(200), U(300)), "#39 no blocks: all ids wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(0, 3), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 0) && unassigned_is(a, 2, U(100), U(200)), "#39 partial block only: all ids wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 40 */
  s = seq(10, 0), a = mk(0);
  MUST(extend(a, 100, 1000, 100));
  ok(assign(a, s, 0, 10) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 1000, 100), 0),
     "#40 10 ids on 10 blocks -> 0..10, all correct");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 41 */
  s = seq(5, 0), a = mk(0);
  uint64_t odd[] = {999, 888, 777, 666, 555};
  MUST(kvbm_assignments_extend_block_ids(a, odd, 5, NULL));
  ok(assign(a, s, 0, 5) && assigned_are(a, s, 0, odd, 5, 0), "#41 ids in their given order, not sorted");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 42 */
  static const uint32_t blocks[] = {0, 1, 3, 5}, partials[] = {0, 1, 3};
  int all_good = 1;
  for (size_t bi = 0; bi < 4; bi++)
    for (size_t pi = 0; pi < 3; pi++) {
      uint32_t b = blocks[bi];
      s = seq(b, partials[pi]);
      a = mk(0);
      if (!assign(a, s, 0, 0)) all_good = 0;
      kvbm_assignments_free(a);
      if (b > 1) {
        a = mk(0);
        MUST(extend(a, 0, b / 2 - 1, 1));
        for (size_t i = 0; i < b / 2; i++) ids[i] = i;
        if (!assign(a, s, 0, b / 2) || !assigned_are(a, s, 0, ids, b / 2, 0)) all_good = 0;
        kvbm_assignments_free(a);
      }
      if (b > 0) {
        a = mk(0);
        MUST(extend(a, 0, b - 1, 1));
        if (!assign(a, s, 0, b) || nunassigned(a) != 0) all_good = 0;
        kvbm_assignments_free(a);
      }
      a = mk(0);
      MUST(extend(a, 0, b + 2, 1));
      if (!assign(a, s, 0, b) || nunassigned(a) != 3) all_good = 0;
      for (size_t i = 0; i < 3; i++) {
        uint64_t id;
        if (!kvbm_assignments_get_unassigned(a, i, &id) || id != b + i) all_good = 0;
      }
      kvbm_assignments_free(a);
      kvbm_sequence_free(s);
    }
  ok(all_good, "#42 cartesian blocks {0,1,3,5} x partial {0,1,3} x id counts");

  /* 43 */
  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 700, 100));
  first = assign(a, s, 0, 5) && unassigned_is(a, 2, U(600), U(700));
  ok(first && append(s, 20, 27) == 7, "#43 append tokens 20..27 -> 7 blocks");
  MUST(extend(a, 100, 900, 100));
  ok(assign(a, s, 5, 7) && assigned_at(a, s, 5, 600, 5) && assigned_at(a, s, 6, 700, 6) &&
         unassigned_is(a, 2, U(800), U(900)),
     "#43 FIFO: 600, 700 go first to positions 5, 6; [800, 900] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 44 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  first = assign(a, s, 0, 3) && unassigned_is(a, 1, U(400)) && append(s, 12, 23) == 6;
  MUST(extend(a, 100, 600, 100));
  ok(first && assign(a, s, 3, 6) && assigned_at(a, s, 3, 400, 3) && assigned_at(a, s, 4, 500, 4) &&
         assigned_at(a, s, 5, 600, 5) && nunassigned(a) == 0,
     "#44 waiting 400 then 500, 600 fill positions 3..6");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 45 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  first = assign(a, s, 0, 2);
  MUST(extend(a, 100, 600, 100));
  ok(first && assign(a, s, 2, 2) && unassigned_is(a, 4, U(300), U(400), U(500), U(600)),
     "#45 more ids, no new blocks -> 2..2; 4 wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 46 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  first = assign(a, s, 0, 3) && append(s, 12, 15) == 4;
  MUST(extend(a, 100, 800, 100));
  ok(first && assign(a, s, 3, 4) && assigned_at(a, s, 3, 400, 3) &&
         unassigned_is(a, 4, U(500), U(600), U(700), U(800)),
     "#46 one new block takes the oldest waiting id");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 47 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  first = assign(a, s, 0, 2) && unassigned_is(a, 2, U(300), U(400));
  MUST(extend(a, 100, 600, 100));
  first = first && assign(a, s, 2, 2) && unassigned_is(a, 4, U(300), U(400), U(500), U(600));
  MUST(extend(a, 100, 700, 100));
  first = first && assign(a, s, 2, 2) && unassigned_is(a, 5, U(300), U(400), U(500), U(600), U(700));
  ok(first, "#47 rounds of ids with no new blocks queue up in order");
  ok(append(s, 8, 19) == 5 && assign(a, s, 2, 5) && assigned_at(a, s, 2, 300, 2) &&
         assigned_at(a, s, 3, 400, 3) && assigned_at(a, s, 4, 500, 4) &&
         unassigned_is(a, 2, U(600), U(700)),
     "#47 assign_pending without extend drains the queue into the new blocks");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 48 */
  s = seq(1, 0), a = mk(0);
  MUST(extend(a, 10, 60, 10));
  ok(assign(a, s, 0, 1) && assigned_at(a, s, 0, 10, 0) &&
         unassigned_is(a, 5, U(20), U(30), U(40), U(50), U(60)),
     "#48 [10..60] on 1 block: 10 assigned, 5 wait");
  append(s, 4, 11);
  ok(assign(a, s, 1, 3) && assigned_at(a, s, 1, 20, 1) && assigned_at(a, s, 2, 30, 2) &&
         unassigned_is(a, 3, U(40), U(50), U(60)),
     "#48 two more blocks take 20 and 30");
  append(s, 12, 15);
  MUST(extend(a, 10, 70, 10));
  ok(assign(a, s, 3, 4) && assigned_at(a, s, 3, 40, 3) && unassigned_is(a, 3, U(50), U(60), U(70)),
     "#48 one more block and id 70: 40 at index 3; [50, 60, 70] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 49 */
  s = seq(2, 2), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  first = assign(a, s, 0, 2) && append(s, 10, 11) == 3;
  MUST(extend(a, 100, 500, 100));
  ok(first && assign(a, s, 2, 3) && assigned_at(a, s, 2, 300, 2) && unassigned_is(a, 2, U(400), U(500)),
     "#49 completing the partial block assigns 300");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 50 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  first = assign(a, s, 0, 2) && unassigned_is(a, 3, U(300), U(400), U(500));
  ok(first && append(s, 8, 19) == 5 && assign(a, s, 2, 5) && nunassigned(a) == 0,
     "#50 three new blocks drain three waiting ids");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 51 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 3) && append(s, 12, 15) == 4;
  MUST(extend(a, 100, 400, 100));
  ok(first && assign(a, s, 3, 4) && assigned_at(a, s, 3, 400, 3), "#51 a new block and a new id -> 3..4");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
}

/* ----------------------------------------------------------- 52-65 */

static void test_errors_and_offsets(void) {
  kvbm_assignments *a, *b;
  kvbm_sequence *s;
  kvbm_assign_error e;
  char msg[256];

  /* 52 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 100, 100));
  int first = assign(a, s, 0, 1);
  uint64_t bad[] = {200, 100};
  memset(&e, 0, sizeof e);
  int rc = kvbm_assignments_extend_block_ids(a, bad, 2, &e);
  ok(first && rc == KVBM_EORDERING_VIOLATION && e.known_id == 100 && e.new_id == 200 &&
         e.known_index == 1 && e.first_new_index == 0,
     "#52 [200, 100] -> OrderingViolation{known 100, new 200, known_index 1, first_new_index 0}");
  ok(nassigned(a) == 1 && nunassigned(a) == 0 && !kvbm_assignments_contains(a, 200),
     "#52 nothing changed (200 not queued)");
  ok(kvbm_assign_error_format(rc, &e, msg, sizeof msg) > 0, "#52 formats");
  is_str(msg,
         "ordering violation: known block_id 100 at index 1 appeared after new block_id 200 at index 0",
         "#52 Display text");
  ok(strcmp(kvbm_err_name(rc), "ordering_violation") == 0, "#52 err name ordering_violation");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 53 */
  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  first = assign(a, s, 0, 2);
  uint64_t bad2[] = {300, 100};
  ok(first && kvbm_assignments_extend_block_ids(a, bad2, 2, NULL) == KVBM_EORDERING_VIOLATION,
     "#53 [300, 100] is an ordering violation");
  uint64_t ids[8];
  ok(nassigned(a) == 2 && assigned_are(a, s, 0, ids, ids_of(ids, 100, 200, 100), 0) &&
         nunassigned(a) == 0 && !kvbm_assignments_contains(a, 300),
     "#53 state stays [100, 200], unassigned 0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 54 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 3);
  ok(first && extend(a, 100, 300, 100) == 0 && assign(a, s, 3, 3) && nunassigned(a) == 0,
     "#54 re-sending the same ids is a no-op; assign -> 3..3");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 55 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  ok(assign(a, s, 0, 2) && assign(a, s, 2, 2) && unassigned_is(a, 2, U(300), U(400)),
     "#55 assigning again -> 2..2; [300, 400] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 56 */
  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 3);
  ok(first && assign_n(a, s, 2, 3, 3) && nassigned(a) == 3 &&
         assigned_are(a, s, 0, ids, ids_of(ids, 100, 300, 100), 0),
     "#56 a shorter slice never shrinks: blocks[..2] -> 3..3, 3 assigned intact");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 57 */
  s = seq(10, 0), a = mk(5);
  ok(kvbm_assignments_offset(a) == 5 && kvbm_assignments_next_position(a) == 5, "#57 offset 5, next 5");
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 3) && kvbm_assignments_next_position(a) == 8 &&
         assigned_are(a, s, 0, ids, ids_of(ids, 100, 300, 100), 5),
     "#57 offset 5: [100, 200, 300] -> 0..3 with H5, H6, H7; next 8");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 58 */
  s = seq(8, 0), a = mk(5);
  MUST(extend(a, 100, 500, 100));
  ok(assign(a, s, 0, 3) && assigned_at(a, s, 0, 100, 5) && unassigned_is(a, 2, U(400), U(500)),
     "#58 offset 5 on 8 blocks: 0..3, first hash H5, [400, 500] wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 59 */
  s = seq(10, 0), a = mk(0), b = mk(5);
  MUST(extend(a, 10, 30, 10));
  MUST(extend(b, 110, 130, 10));
  ok(assign(a, s, 0, 3) && assign(b, s, 0, 3) &&
         assigned_are(a, s, 0, ids, ids_of(ids, 10, 30, 10), 0) &&
         assigned_are(b, s, 0, ids, ids_of(ids, 110, 130, 10), 5),
     "#59 two tiers on one sequence: offset 0 gets H0..H2, offset 5 gets H5..H7");
  kvbm_sequence_free(s), kvbm_assignments_free(a), kvbm_assignments_free(b);

  /* 60 */
  s = seq(2, 2), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 2) && unassigned_is(a, 1, U(300));
  ok(first && append(s, 10, 11) == 3 && assign(a, s, 2, 3) && assigned_at(a, s, 2, 300, 2),
     "#60 completing the partial block assigns the waiting 300");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 61 */
  s = seq(1, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 1);
  uint32_t toks[8];
  for (uint32_t t = 0; t < 8; t++) toks[t] = 4 + t;
  size_t lo = 0, hi = 0;
  ok(first && kvbm_sequence_extend(s, toks, 8, &lo, &hi) == 2 && kvbm_sequence_blocks(s) == 3,
     "#61 extend_tokens(4..=11) completes blocks (3 in all)");
  ok(assign(a, s, 1, 3) && assigned_at(a, s, 1, 200, 1) && assigned_at(a, s, 2, 300, 2),
     "#61 assign -> 1..3 with 200, 300");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 62 */
  s = seq(5, 0), a = mk(3);
  MUST(extend(a, 100, 300, 100));
  first = assign(a, s, 0, 2) && nunassigned(a) == 1;
  kvbm_assignments_clear(a);
  ok(first && kvbm_assignments_offset(a) == 3 && nassigned(a) == 0 && nstaged(a) == 0 &&
         nunassigned(a) == 0 && kvbm_assignments_next_position(a) == 3 && kvbm_assignments_is_empty(a) &&
         !kvbm_assignments_contains(a, 100) && !kvbm_assignments_contains(a, 300),
     "#62 clear keeps offset 3; counts 0; next 3; ids forgotten");
  ok(extend(a, 100, 200, 100) == 0 && assign(a, s, 0, 2), "#62 the instance is usable after clear");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 63 */
  s = seq(3, 0), a = mk(1);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 2) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 200, 100), 1),
     "#63 offset 1: hashes H1, H2");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 64 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 2) && kvbm_assignments_contains(a, 100) && kvbm_assignments_contains(a, 200) &&
         kvbm_assignments_contains(a, 300) && !kvbm_assignments_contains(a, 400),
     "#64 contains: 100, 200 (assigned), 300 (waiting); not 400");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 65 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 3) && nassigned(a) == 3 && assigned_are(a, s, 0, ids, ids_of(ids, 100, 300, 100), 0),
     "#65 assigned in order: (100,H0), (200,H1), (300,H2)");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
}

/* ----------------------------------------------------------- 66 */

static void test_block_sequence(void) {
  kvbm_sequence *s = seq(2, 0), *t;
  size_t lo, hi;
  ok(kvbm_sequence_blocks(s) == 2 && kvbm_sequence_block_size(s) == 4 &&
         kvbm_sequence_total_tokens(s) == 8,
     "#66 [0..8) bs 4 -> 2 blocks, total 8");
  kvbm_sequence_free(s);
  s = seq(0, 4);
  uint32_t more[] = {4, 5, 6, 7, 8, 9};
  ok(kvbm_sequence_extend(s, more, 6, &lo, &hi) == 1 && lo == 1 && hi == 2 &&
         kvbm_sequence_blocks(s) == 2 && kvbm_sequence_total_tokens(s) == 10,
     "#66 [0..4) extend [4..10) -> 1..2; 2 blocks, total 10");
  kvbm_sequence_free(s);
  s = seq(0, 3);
  uint32_t three = 3;
  ok(kvbm_sequence_extend(s, &three, 1, &lo, &hi) == 1 && lo == 0, "#66 [0,1,2] append 3 -> block 0");
  kvbm_sequence_free(s);
  s = seq(2, 0);
  MUST(kvbm_sequence_new(NULL, 4, 42, &t));
  for (uint32_t i = 0; i < 8; i++) MUST(kvbm_sequence_extend(t, &i, 1, NULL, NULL));
  ok(!heq(H(s, 0), H(t, 0)) && !heq(H(s, 1), H(t, 1)), "#66 salt none vs 42 -> different hashes");
  kvbm_sequence_free(s), kvbm_sequence_free(t);
}

/* ----------------------------------------------------------- 67-72 */

static void test_positions_and_zips(void) {
  kvbm_assignments *a, *b;
  kvbm_sequence *s;
  kvbm_assign_triple t[16];
  uint64_t id;
  kvbm_hash h;

  /* 67 */
  a = mk(0);
  ok(range_is(APOS, a, 0, 0) && range_is(PPOS, a, 0, 0) && range_is(SPOS, a, 0, 0),
     "#67 empty: positions 0..0");
  kvbm_assignments_free(a);
  s = seq(10, 0), a = mk(3);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 2) && range_is(APOS, a, 3, 5), "#67 offset 3 + 2 ids -> assigned positions 3..5");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 400, 100));
  ok(assign(a, s, 0, 2) && range_is(PPOS, a, 2, 4), "#67 seq(2,0) + 4 ids -> pending 2..4");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(10, 0), a = mk(5);
  MUST(extend(a, 100, 400, 100));
  ok(assign(a, s, 0, 4) && range_is(APOS, a, 5, 9) && range_is(PPOS, a, 9, 9),
     "#67 offset 5 + 4 ids -> assigned 5..9, pending 9..9");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 68 */
  s = seq(5, 0), a = mk(2);
  MUST(extend(a, 100, 300, 100));
  ok(assign(a, s, 0, 3) && kvbm_assignments_get_at_position(a, 2, &id, &h) && id == 100 &&
         heq(h, H(s, 2)) && kvbm_assignments_get_at_position(a, 4, &id, &h) && id == 300 &&
         heq(h, H(s, 4)),
     "#68 offset 2: pos 2 = (100, H2), pos 4 = (300, H4)");
  kvbm_assignments_free(a);
  a = mk(2);
  MUST(extend(a, 100, 200, 100));
  ok(assign(a, s, 0, 2) && !kvbm_assignments_get_at_position(a, 0, &id, &h) &&
         !kvbm_assignments_get_at_position(a, 1, NULL, NULL) &&
         !kvbm_assignments_get_at_position(a, 4, NULL, NULL) &&
         !kvbm_assignments_get_at_position(a, 100, NULL, NULL) &&
         kvbm_assignments_get_at_position(a, 3, NULL, NULL),
     "#68 with 2 assigned: positions 0, 1, 4, 100 -> none");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 69 */
  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  int good = assign(a, s, 0, 2);
  uint64_t i2 = 0, i3 = 0, i4 = 0;
  good = good && kvbm_assignments_get_pending_at_position(a, 2, &i2) &&
         kvbm_assignments_get_pending_at_position(a, 3, &i3) &&
         kvbm_assignments_get_pending_at_position(a, 4, &i4);
  ok(good && i2 == 300 && i3 == 400 && i4 == 500, "#69 pending at 2, 3, 4 -> 300, 400, 500");
  kvbm_assignments_free(a);
  a = mk(0);
  MUST(extend(a, 100, 400, 100));
  ok(assign(a, s, 0, 2) && !kvbm_assignments_get_pending_at_position(a, 0, &id) &&
         !kvbm_assignments_get_pending_at_position(a, 1, &id) &&
         !kvbm_assignments_get_pending_at_position(a, 4, &id) &&
         !kvbm_assignments_get_pending_at_position(a, 100, &id),
     "#69 with 4 ids: 0, 1, 4, 100 -> none");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 70 */
  s = seq(5, 0), a = mk(0), b = mk(0);
  MUST(extend(a, 10, 30, 10));
  MUST(extend(b, 110, 130, 10));
  MUST(assign(a, s, 0, 3) - 1);
  MUST(assign(b, s, 0, 3) - 1);
  size_t n = kvbm_zip_assigned(a, b, t, 16);
  ok(triples_are(t, n, 3, T(0, 10, 110), T(1, 20, 120), T(2, 30, 130)), "#70 full overlap");
  kvbm_sequence_free(s), kvbm_assignments_free(a), kvbm_assignments_free(b);

  s = seq(10, 0), a = mk(0), b = mk(2);
  MUST(extend(a, 10, 40, 10));
  MUST(extend(b, 110, 130, 10));
  MUST(assign(a, s, 0, 4) - 1);
  MUST(assign(b, s, 0, 3) - 1);
  n = kvbm_zip_assigned(a, b, t, 16);
  ok(triples_are(t, n, 2, T(2, 30, 110), T(3, 40, 120)), "#70 partial overlap (offsets 0 and 2)");
  ok(kvbm_zip_assigned(a, b, t, 1) == 2 && t[0].pos == 2, "#70 cap 1 writes one row, returns the full count");
  kvbm_assignments_free(a), kvbm_assignments_free(b);

  a = mk(0), b = mk(5);
  MUST(extend(a, 10, 20, 10));
  MUST(extend(b, 110, 120, 10));
  MUST(assign(a, s, 0, 2) - 1);
  MUST(assign(b, s, 0, 2) - 1);
  ok(kvbm_zip_assigned(a, b, t, 16) == 0 && kvbm_zip_assigned(b, a, t, 16) == 0, "#70 no overlap -> []");
  kvbm_assignments *e1 = mk(0), *e2 = mk(0);
  ok(kvbm_zip_assigned(a, e1, t, 16) == 0 && kvbm_zip_assigned(e1, a, t, 16) == 0 &&
         kvbm_zip_assigned(e1, e2, t, 16) == 0,
     "#70 either or both empty -> []");
  kvbm_assignments_free(e1), kvbm_assignments_free(e2);
  kvbm_sequence_free(s), kvbm_assignments_free(a), kvbm_assignments_free(b);

  /* 71 */
  s = seq(5, 0), a = mk(2), b = mk(0);
  MUST(extend(a, 10, 30, 10));
  MUST(assign(a, s, 0, 3) - 1);
  MUST(extend(b, 110, 150, 10));
  MUST(assign_n(b, s, 2, 0, 2) - 1);
  n = kvbm_zip_assigned_pending(a, b, t, 16);
  ok(range_is(PPOS, b, 2, 5) &&
         triples_are(t, n, 3, T(2, 10, 130), T(3, 20, 140), T(4, 30, 150)),
     "#71 src offset 2 vs dst pending 2..5 -> the copy plan");
  kvbm_sequence_free(s), kvbm_assignments_free(a), kvbm_assignments_free(b);

  s = seq(10, 0), a = mk(2), b = mk(0);
  MUST(extend(a, 10, 40, 10));
  MUST(assign(a, s, 0, 4) - 1);
  MUST(extend(b, 110, 150, 10));
  MUST(assign_n(b, s, 3, 0, 3) - 1);
  n = kvbm_zip_assigned_pending(a, b, t, 16);
  ok(triples_are(t, n, 2, T(3, 20, 140), T(4, 30, 150)), "#71 partial overlap");
  kvbm_assignments_free(a), kvbm_assignments_free(b);

  a = mk(0), b = mk(0);
  MUST(extend(a, 10, 20, 10));
  MUST(assign(a, s, 0, 2) - 1);
  MUST(extend(b, 110, 170, 10));
  MUST(assign_n(b, s, 5, 0, 5) - 1);
  ok(range_is(PPOS, b, 5, 7) && kvbm_zip_assigned_pending(a, b, t, 16) == 0, "#71 no overlap -> []");
  kvbm_assignments *empty = mk(0);
  ok(kvbm_zip_assigned_pending(empty, b, t, 16) == 0, "#71 src empty -> []");
  MUST(extend(empty, 1, 3, 1));
  MUST(assign(empty, s, 0, 3) - 1);
  ok(kvbm_zip_assigned_pending(b, empty, t, 16) == 0, "#71 dst with nothing pending -> []");
  kvbm_assignments_free(empty);
  kvbm_sequence_free(s), kvbm_assignments_free(a), kvbm_assignments_free(b);

  /* 72: onboarding G2 -> G1 */
  s = seq(5, 0);
  kvbm_assignments *g1 = mk(0), *g2 = mk(2);
  MUST(extend(g1, 1000, 1001, 1));
  MUST(assign(g1, s, 0, 2) - 1);
  MUST(extend(g2, 2002, 2004, 1));
  MUST(assign(g2, s, 0, 3) - 1);
  ok(range_is(APOS, g1, 0, 2) && range_is(APOS, g2, 2, 5), "#72 G1 holds 0..2, G2 (offset 2) holds 2..5");
  MUST(extend(g1, 1000, 1004, 1));
  ok(nassigned(g1) == 2 && nunassigned(g1) == 3 && range_is(PPOS, g1, 2, 5),
     "#72 G1 queues 1002..1004 without assigning: pending 2..5");
  n = kvbm_zip_assigned_pending(g2, g1, t, 16);
  ok(triples_are(t, n, 3, T(2, 2002, 1002), T(3, 2003, 1003), T(4, 2004, 1004)),
     "#72 zip_assigned_pending(g2, g1) is the copy plan");
  ok(assign(g1, s, 2, 5) && nassigned(g1) == 5 && range_is(APOS, g1, 0, 5), "#72 after the copy G1 assigns 0..5");
  n = kvbm_zip_assigned(g2, g1, t, 16);
  ok(triples_are(t, n, 3, T(2, 2002, 1002), T(3, 2003, 1003), T(4, 2004, 1004)),
     "#72 zip_assigned(g2, g1) now gives the same pairs");
  kvbm_sequence_free(s), kvbm_assignments_free(g1), kvbm_assignments_free(g2);
}

/* ----------------------------------------------------------- 73-79 */

static void test_staging(void) {
  kvbm_assignments *a;
  kvbm_sequence *s;
  uint64_t id, ids[8];
  kvbm_hash h;

  /* 73 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  int good = stage_n(a, s, ALL, 0, 3) && nstaged(a) == 3 && nassigned(a) == 0;
  for (size_t i = 0; i < 3; i++)
    good = good && kvbm_assignments_get_staged(a, i, &id, &h) && id == (i + 1) * 100 && heq(h, H(s, i));
  ok(good && !kvbm_assignments_get_staged(a, 3, &id, &h), "#73 stage 3 -> 0..3; get_staged(i) = ((i+1)*100, H[i])");
  ok(commit(a, 0, 3) && nstaged(a) == 0 && nassigned(a) == 3, "#73 commit_staged -> 0..3");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  s = seq(2, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  ok(stage_n(a, s, ALL, 0, 2) && nunassigned(a) == 3, "#73 5 ids on 2 blocks: staged 0..2, 3 wait");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  ok(stage_n(a, s, 3, 0, 3) && nunassigned(a) == 2, "#73 stage blocks[..3] -> 0..3, 2 wait");
  ok(commit(a, 0, 3), "#73 commit -> 0..3");
  ok(stage_n(a, s, ALL, 0, 2), "#73 stage all -> 0..2 (staged indices restart)");
  ok(commit(a, 3, 5) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 500, 100), 0), "#73 commit -> 3..5");
  kvbm_assignments_free(a);
  a = mk(0);
  ok(stage_n(a, s, ALL, 0, 0) && commit(a, 0, 0), "#73 no ids: stage 0..0, commit 0..0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 74 */
  a = mk(0);
  ok(range_is(SPOS, a, 0, 0), "#74 empty: staged positions 0..0");
  kvbm_assignments_free(a);
  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 200, 100));
  MUST(assign(a, s, 0, 2) - 1);
  MUST(extend(a, 100, 500, 100));
  ok(stage_n(a, s, ALL, 0, 3) && nstaged(a) == 3 && range_is(SPOS, a, 2, 5) && range_is(APOS, a, 0, 2),
     "#74 2 assigned + 3 staged: staged positions 2..5, assigned 0..2");
  kvbm_sequence_free(s), kvbm_assignments_free(a);
  s = seq(10, 0), a = mk(3);
  MUST(extend(a, 100, 200, 100));
  MUST(assign(a, s, 0, 2) - 1);
  MUST(extend(a, 100, 400, 100));
  ok(stage_n(a, s, ALL, 0, 2) && nstaged(a) == 2 && range_is(SPOS, a, 5, 7),
     "#74 offset 3: staged positions 5..7");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 75 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  MUST(stage_n(a, s, ALL, 0, 3) - 1);
  good = 1;
  for (size_t i = 0; i < 3; i++)
    good = good && kvbm_assignments_get_staged(a, i, &id, &h) && id == (i + 1) * 100 && heq(h, H(s, i));
  ok(good, "#75 staged in order: (100,H0), (200,H1), (300,H2)");
  uint64_t tid[4];
  kvbm_hash th[4];
  ok(kvbm_assignments_take_staged(a, tid, th, 2) == KVBM_EINVAL && nstaged(a) == 3,
     "#75 take_staged into too small arrays: EINVAL, nothing taken");
  int n = kvbm_assignments_take_staged(a, tid, th, 4);
  ok(n == 3 && tid[0] == 100 && tid[1] == 200 && tid[2] == 300 && heq(th[0], H(s, 0)) &&
         heq(th[2], H(s, 2)),
     "#75 take_staged returns the 3 pairs");
  ok(nstaged(a) == 0 && !kvbm_assignments_contains(a, 200) && kvbm_assignments_is_empty(a),
     "#75 staged is empty afterwards (taken ids are forgotten)");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 76 */
  s = seq(5, 0), a = mk(0);
  MUST(extend(a, 100, 300, 100));
  ok(kvbm_assignments_next_position(a) == 0, "#76 next 0 before staging");
  MUST(stage_n(a, s, ALL, 0, 3) - 1);
  ok(kvbm_assignments_next_position(a) == 3 && nassigned(a) == 0, "#76 next 3 after staging (assigned 0)");
  MUST(commit(a, 0, 3) - 1);
  ok(kvbm_assignments_next_position(a) == 3 && nassigned(a) == 3, "#76 next 3 after commit (assigned 3)");
  kvbm_assignments_free(a);
  a = mk(0);
  MUST(extend(a, 100, 500, 100));
  MUST(stage_n(a, s, 3, 0, 3) - 1);
  ok(range_is(PPOS, a, 3, 5), "#76 pending positions after staging 3 of 5 -> 3..5");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 77 */
  s = seq(5, 0), a = mk(0);
  uint64_t direct[] = {100, 200, 300};
  ok(kvbm_assignments_extend_assigned(a, direct, kvbm_sequence_hashes(s), 3, NULL) == 0 &&
         nassigned(a) == 3 && assigned_are(a, s, 0, direct, 3, 0),
     "#77 extend_assigned 3 pairs -> assigned 3");
  kvbm_assignments_free(a);
  a = mk(0);
  MUST(kvbm_assignments_extend_assigned(a, direct, kvbm_sequence_hashes(s), 2, NULL));
  MUST(extend(a, 100, 500, 100));
  ok(stage_n(a, s, ALL, 0, 3) && commit(a, 2, 5) && assigned_are(a, s, 0, ids, ids_of(ids, 100, 500, 100), 0),
     "#77 direct 2, then ids [100..500], stage and commit -> 5 in order");
  kvbm_assignments_free(a);
  a = mk(0);
  MUST(kvbm_assignments_extend_assigned(a, direct, kvbm_sequence_hashes(s), 1, NULL));
  kvbm_assign_error e = {0};
  char msg[128];
  int rc = kvbm_assignments_extend_assigned(a, direct, kvbm_sequence_hashes(s) + 1, 1, &e);
  ok(rc == KVBM_EDUPLICATE_BLOCK_ID && e.block_id == 100 && nassigned(a) == 1,
     "#77 (100,H1) after (100,H0) -> DuplicateBlockId{100}; assigned 1");
  ok(kvbm_assign_error_format(rc, &e, msg, sizeof msg) > 0, "#77 formats");
  is_str(msg, "duplicate block_id 100 already present", "#77 Display text");
  ok(kvbm_assignments_extend_assigned(a, NULL, NULL, 0, NULL) == 0 && nassigned(a) == 1,
     "#77 empty -> 0");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 78 */
  s = seq(3, 0), a = mk(0);
  MUST(extend(a, 100, 500, 100));
  MUST(assign_n(a, s, 2, 0, 2) - 1);
  MUST(stage_n(a, s, ALL, 0, 1) - 1);
  good = nassigned(a) == 2 && nstaged(a) == 1 && nunassigned(a) == 2;
  for (uint64_t i = 100; i <= 500; i += 100) good = good && kvbm_assignments_contains(a, i);
  ok(good && !kvbm_assignments_contains(a, 600), "#78 contains across all three collections");
  kvbm_sequence_free(s), kvbm_assignments_free(a);

  /* 79 (the Debug text is the Lua __tostring): new(5) keeps its offset */
  a = mk(5);
  ok(kvbm_assignments_offset(a) == 5 && kvbm_assignments_is_empty(a), "#79 new(5): offset 5, empty");
  kvbm_assignments_free(a);
}

/* ----------------------------------------------------------- zinuga errors */

static void test_zinuga_errors(void) {
  kvbm_assignments *a;
  kvbm_sequence *s = seq(6, 0);
  kvbm_assign_error e;
  char msg[160];
  uint64_t id;

  /* extend_block_ids: a new id repeated inside the input */
  a = mk(0);
  MUST(extend(a, 100, 200, 100));
  uint64_t dup[] = {100, 200, 300, 400, 300, 500};
  memset(&e, 0, sizeof e);
  ok(kvbm_assignments_extend_block_ids(a, dup, 6, &e) == KVBM_EDUPLICATE_BLOCK_ID && e.block_id == 300,
     "extend_block_ids: a repeated new id -> DuplicateBlockId{300}");
  ok(unassigned_is(a, 2, U(100), U(200)) && !kvbm_assignments_contains(a, 300) &&
         !kvbm_assignments_contains(a, 400) && !kvbm_assignments_contains(a, 500),
     "extend_block_ids: nothing queued after the error");
  /* the first error in input order wins */
  uint64_t dup_first[] = {300, 300, 100};
  ok(kvbm_assignments_extend_block_ids(a, dup_first, 3, &e) == KVBM_EDUPLICATE_BLOCK_ID,
     "[300, 300, 100]: the duplicate comes first");
  uint64_t ord_first[] = {300, 100, 300};
  ok(kvbm_assignments_extend_block_ids(a, ord_first, 3, &e) == KVBM_EORDERING_VIOLATION &&
         e.known_id == 100 && e.new_id == 300 && e.known_index == 1 && e.first_new_index == 0,
     "[300, 100, 300]: the ordering violation comes first");
  uint64_t known_twice[] = {100, 100, 200, 300};
  ok(kvbm_assignments_extend_block_ids(a, known_twice, 4, NULL) == 0 && unassigned_is(a, 3, U(100), U(200), U(300)),
     "a known id repeated in the known prefix is just skipped");
  uint64_t late[] = {100, 200, 300, 400, 500, 200};
  ok(kvbm_assignments_extend_block_ids(a, late, 6, &e) == KVBM_EORDERING_VIOLATION && e.known_id == 200 &&
         e.new_id == 400 && e.known_index == 5 && e.first_new_index == 3 &&
         unassigned_is(a, 3, U(100), U(200), U(300)) && !kvbm_assignments_contains(a, 400),
     "a known id after new ones: violation names the first new id; rolled back");
  kvbm_assignments_free(a);

  /* extend_assigned: repeated inside the input, and against each collection */
  a = mk(0);
  uint64_t rep[] = {1, 2, 1};
  ok(kvbm_assignments_extend_assigned(a, rep, kvbm_sequence_hashes(s), 3, &e) == KVBM_EDUPLICATE_BLOCK_ID &&
         e.block_id == 1 && nassigned(a) == 0 && !kvbm_assignments_contains(a, 1) &&
         !kvbm_assignments_contains(a, 2),
     "extend_assigned: an id repeated in the input -> DuplicateBlockId, nothing inserted");
  MUST(extend(a, 10, 30, 10));
  MUST(stage_n(a, s, 1, 0, 1) - 1);
  uint64_t vs_staged[] = {5, 10}, vs_pending[] = {6, 30};
  ok(kvbm_assignments_extend_assigned(a, vs_staged, kvbm_sequence_hashes(s), 2, &e) == KVBM_EDUPLICATE_BLOCK_ID &&
         e.block_id == 10 && !kvbm_assignments_contains(a, 5),
     "extend_assigned: an id that is staged -> duplicate");
  ok(kvbm_assignments_extend_assigned(a, vs_pending, kvbm_sequence_hashes(s), 2, &e) == KVBM_EDUPLICATE_BLOCK_ID &&
         e.block_id == 30 && !kvbm_assignments_contains(a, 6) && nassigned(a) == 0,
     "extend_assigned: an id that is unassigned -> duplicate");
  kvbm_hash junk = {UINT64_MAX, 0};
  uint64_t fresh = 77;
  ok(kvbm_assignments_extend_assigned(a, &fresh, &junk, 1, NULL) == KVBM_EBAD_HASH &&
         !kvbm_assignments_contains(a, 77),
     "extend_assigned: a malformed hash is refused");
  kvbm_assignments_free(a);

  /* stage_pending: a slice not starting at position 0 -> PositionMismatch, atomic */
  a = mk(0);
  MUST(extend(a, 100, 400, 100));
  MUST(assign_n(a, s, 1, 0, 1) - 1);
  memset(&e, 0, sizeof e);
  size_t lo = 7, hi = 7;
  int rc = kvbm_assignments_stage_pending(a, kvbm_sequence_hashes(s) + 1, 5, &lo, &hi, &e);
  ok(rc == KVBM_EPOSITION_MISMATCH && e.expected == 1 && e.actual == 2 && e.block_id == 200,
     "stage_pending on blocks[1..] -> PositionMismatch{expected 1, actual 2, block_id 200}");
  ok(nstaged(a) == 0 && unassigned_is(a, 3, U(200), U(300), U(400)) && lo == 7 && hi == 7,
     "stage_pending error: nothing staged");
  ok(kvbm_assign_error_format(rc, &e, msg, sizeof msg) > 0, "formats");
  is_str(msg, "position mismatch for block_id 200: expected 1, actual 2", "PositionMismatch Display text");
  ok(strcmp(kvbm_err_name(rc), "position_mismatch") == 0 &&
         strcmp(kvbm_err_name(KVBM_EDUPLICATE_BLOCK_ID), "duplicate_block_id") == 0,
     "err names position_mismatch, duplicate_block_id");
  /* a mismatch on the k-th pair reports the k-th pending id (zinuga) */
  kvbm_hash mixed[6];
  memcpy(mixed, kvbm_sequence_hashes(s), sizeof mixed);
  mixed[3] = kvbm_sequence_hashes(s)[5];
  rc = kvbm_assignments_assign_pending(a, mixed, 6, &lo, &hi, &e);
  ok(rc == KVBM_EPOSITION_MISMATCH && e.expected == 3 && e.actual == 5 && e.block_id == 400 &&
         nassigned(a) == 1 && nstaged(a) == 0 && nunassigned(a) == 3,
     "assign_pending: mismatch at position 3 names the 3rd pending id, 400; nothing changed");
  ok(assign(a, s, 1, 4), "the correct hashes then assign 1..4");
  ok(kvbm_assign_error_format(KVBM_EORDERING_VIOLATION, &e, msg, 10) == KVBM_EINVAL,
     "format into a too-small buffer -> EINVAL");
  kvbm_assignments_free(a);

  /* pop_unassigned is LIFO and forgets the id */
  a = mk(0);
  MUST(extend(a, 1, 3, 1));
  ok(kvbm_assignments_pop_unassigned(a, &id) == 1 && id == 3 && !kvbm_assignments_contains(a, 3) &&
         unassigned_is(a, 2, U(1), U(2)),
     "pop_unassigned takes the last id");
  ok(kvbm_assignments_pop_unassigned(a, &id) == 1 && id == 2 && kvbm_assignments_pop_unassigned(a, NULL) == 1 &&
         kvbm_assignments_pop_unassigned(a, &id) == 0,
     "pop_unassigned until empty -> 0");
  ok(extend(a, 3, 3, 1) == 0 && unassigned_is(a, 1, U(3)), "a popped id can be queued again");
  kvbm_assignments_free(a);

  kvbm_assignments *x = NULL;
  ok(kvbm_assignments_new(NULL, KVBM_ASSIGN_MAX_OFFSET + 1, &x) == KVBM_EINVAL && x == NULL,
     "an offset beyond KVBM_ASSIGN_MAX_OFFSET is refused");
  kvbm_assignments_free(NULL);
  kvbm_sequence_free(s);
}

/* ----------------------------------------------------------- allocation failure */

#include "budget_alloc.h" /* every test below sets budget first */

/* A full picture of an instance's observable state. */
typedef struct {
  size_t na, ns, nu, off;
  uint64_t ids[256];
  kvbm_hash hs[256];
} snapshot;

static void snap(const kvbm_assignments *a, snapshot *sn) {
  memset(sn, 0, sizeof *sn);
  sn->na = nassigned(a), sn->ns = nstaged(a), sn->nu = nunassigned(a);
  sn->off = kvbm_assignments_offset(a);
  size_t k = 0;
  for (size_t i = 0; i < sn->na; i++, k++) kvbm_assignments_get_assigned(a, i, &sn->ids[k], &sn->hs[k]);
  for (size_t i = 0; i < sn->ns; i++, k++) kvbm_assignments_get_staged(a, i, &sn->ids[k], &sn->hs[k]);
  for (size_t i = 0; i < sn->nu; i++, k++) kvbm_assignments_get_unassigned(a, i, &sn->ids[k]);
}

static int same_snap(const kvbm_assignments *a, const snapshot *want) {
  snapshot now;
  snap(a, &now);
  if (memcmp(&now, want, sizeof now) != 0) return 0;
  /* and the index agrees: every listed id is known, some others are not */
  for (size_t i = 0; i < now.na + now.ns + now.nu; i++)
    if (!kvbm_assignments_contains(a, now.ids[i])) return 0;
  for (uint64_t id = 1; id < 2000; id += 7) {
    int listed = 0;
    for (size_t i = 0; i < now.na + now.ns + now.nu; i++) listed |= now.ids[i] == id;
    if (!listed && kvbm_assignments_contains(a, id)) return 0;
  }
  return 1;
}

static void test_alloc_failure(void) {
  kvbm_allocator al = {budget_alloc, NULL};
  kvbm_sequence *s = seq(40, 0);
  kvbm_assignments *a = NULL;

  budget = 0;
  ok(kvbm_assignments_new(&al, 0, &a) == KVBM_ENOMEM && a == NULL && live_allocs == 0,
     "new with no memory -> ENOMEM, nothing leaked");
  budget = 1;
  MUST(kvbm_assignments_new(&al, 0, &a));

  /* every operation, under every budget from 0 up to success: an ENOMEM
   * leaves the instance exactly as it was */
  int intact = 1, eventually = 1, failures = 0;
  uint64_t next_id = 1;
  for (int round = 0; round < 12; round++) {
    for (int op = 0; op < 3; op++) {
      snapshot before;
      snap(a, &before);
      int rc = KVBM_ENOMEM;
      uint64_t ids[40];
      size_t n = 0;
      /* ids for this op: the whole list known so far plus fresh ones */
      for (size_t i = 0; i < nassigned(a) + nstaged(a) + nunassigned(a) && n < 20; i++) {
        if (i < nassigned(a)) kvbm_assignments_get_assigned(a, i, &ids[n++], NULL);
      }
      for (int k = 0; k < 5 + round; k++) ids[n++] = next_id + (uint64_t)k;
      for (long b = 0; b < 20 && rc == KVBM_ENOMEM; b++) {
        budget = b;
        if (op == 0) {
          rc = kvbm_assignments_extend_block_ids(a, ids, n, NULL);
        } else if (op == 1) {
          rc = kvbm_assignments_stage_pending(a, kvbm_sequence_hashes(s), kvbm_sequence_blocks(s),
                                              NULL, NULL, NULL);
        } else {
          uint64_t extra[3] = {next_id + 100, next_id + 101, next_id + 102};
          size_t pos = kvbm_assignments_next_position(a);
          (void)pos;
          rc = kvbm_assignments_extend_assigned(a, extra, kvbm_sequence_hashes(s), 3, NULL);
          if (rc == 0) kvbm_assignments_commit_staged(a, NULL, NULL);
        }
        if (rc == KVBM_ENOMEM) {
          failures++;
          if (!same_snap(a, &before)) intact = 0;
        }
      }
      if (rc != 0) eventually = 0;
      if (op == 0) next_id += 5 + (uint64_t)round;
      if (op == 2) next_id += 200;
    }
  }
  ok(failures > 0, "allocation failures were hit (%d)", failures);
  ok(intact, "every ENOMEM left the instance untouched (collections and index)");
  ok(eventually, "every operation succeeds once memory is available");
  budget = 1000;
  kvbm_assignments_free(a);
  ok(live_allocs == 0, "everything freed through the allocator");
  kvbm_sequence_free(s);
}

/* ----------------------------------------------------------- randomized model */

typedef struct {
  uint64_t id;
  kvbm_hash h;
} mentry;

typedef struct {
  size_t offset;
  mentry as[4096], st[4096];
  uint64_t un[4096];
  size_t na, ns, nu;
} model;

static int m_known(const model *m, uint64_t id) {
  for (size_t i = 0; i < m->na; i++) if (m->as[i].id == id) return 1;
  for (size_t i = 0; i < m->ns; i++) if (m->st[i].id == id) return 1;
  for (size_t i = 0; i < m->nu; i++) if (m->un[i] == id) return 1;
  return 0;
}

static int m_extend_ids(model *m, const uint64_t *ids, size_t n, kvbm_assign_error *e) {
  uint64_t fresh[4096];
  size_t nf = 0, first_new = 0;
  int seen_new = 0;
  for (size_t i = 0; i < n; i++) {
    if (m_known(m, ids[i])) {
      if (seen_new) {
        e->known_id = ids[i], e->new_id = fresh[0], e->known_index = i, e->first_new_index = first_new;
        return KVBM_EORDERING_VIOLATION;
      }
    } else {
      for (size_t k = 0; k < nf; k++)
        if (fresh[k] == ids[i]) {
          e->block_id = ids[i];
          return KVBM_EDUPLICATE_BLOCK_ID;
        }
      if (!seen_new) first_new = i, seen_new = 1;
      fresh[nf++] = ids[i];
    }
  }
  for (size_t k = 0; k < nf; k++) m->un[m->nu++] = fresh[k];
  return 0;
}

static int m_extend_assigned(model *m, const uint64_t *ids, const kvbm_hash *hs, size_t n,
                             kvbm_assign_error *e) {
  for (size_t i = 0; i < n; i++) {
    int dup = m_known(m, ids[i]);
    for (size_t k = 0; k < i; k++) dup |= ids[k] == ids[i];
    if (dup) {
      e->block_id = ids[i];
      return KVBM_EDUPLICATE_BLOCK_ID;
    }
  }
  for (size_t i = 0; i < n; i++) m->as[m->na].id = ids[i], m->as[m->na++].h = hs[i];
  return 0;
}

static int m_stage(model *m, const kvbm_hash *all, size_t nall, size_t *lo, size_t *hi,
                   kvbm_assign_error *e) {
  size_t start = m->offset + m->na + m->ns, n = nall > start ? nall - start : 0;
  if (n > m->nu) n = m->nu;
  for (size_t k = 0; k < n; k++)
    if (kvbm_hash_position(all[start + k]) != start + k) {
      e->expected = start + k, e->actual = kvbm_hash_position(all[start + k]), e->block_id = m->un[k];
      return KVBM_EPOSITION_MISMATCH;
    }
  *lo = m->ns;
  for (size_t k = 0; k < n; k++) m->st[m->ns].id = m->un[k], m->st[m->ns++].h = all[start + k];
  memmove(m->un, m->un + n, (m->nu - n) * sizeof *m->un);
  m->nu -= n;
  *hi = m->ns;
  return 0;
}

static void m_commit(model *m, size_t *lo, size_t *hi) {
  *lo = m->na;
  for (size_t i = 0; i < m->ns; i++) m->as[m->na++] = m->st[i];
  m->ns = 0;
  *hi = m->na;
}

static int agrees(const kvbm_assignments *a, const model *m) {
  if (nassigned(a) != m->na || nstaged(a) != m->ns || nunassigned(a) != m->nu) return 0;
  if (kvbm_assignments_next_position(a) != m->offset + m->na + m->ns) return 0;
  uint64_t id;
  kvbm_hash h;
  for (size_t i = 0; i < m->na; i++)
    if (!kvbm_assignments_get_assigned(a, i, &id, &h) || id != m->as[i].id || !heq(h, m->as[i].h)) return 0;
  for (size_t i = 0; i < m->ns; i++)
    if (!kvbm_assignments_get_staged(a, i, &id, &h) || id != m->st[i].id || !heq(h, m->st[i].h)) return 0;
  for (size_t i = 0; i < m->nu; i++)
    if (!kvbm_assignments_get_unassigned(a, i, &id) || id != m->un[i]) return 0;
  for (uint64_t x = 0; x < 600; x++)
    if (kvbm_assignments_contains(a, x) != m_known(m, x)) return 0;
  return 1;
}

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;
static uint64_t rnd(uint64_t n) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return n ? rng_state % n : 0;
}

static void test_random(void) {
  enum { NPOS = 300, OPS = 6000 };
  static kvbm_hash good[NPOS];
  for (size_t p = 0; p < NPOS; p++) MUST(kvbm_hash_new(rnd(UINT64_MAX), p > 0, p * 31, p, &good[p]));
  static model ms[2];
  kvbm_assignments *as[2];
  memset(ms, 0, sizeof ms);
  ms[0].offset = 0, ms[1].offset = 3;
  as[0] = mk(0), as[1] = mk(3);
  int agree = 1, errors_seen[4] = {0, 0, 0, 0}, bad_op = -1;
  for (int op = 0; op < OPS && agree; op++) {
    int w = (int)rnd(2);
    kvbm_assignments *a = as[w];
    model *m = &ms[w];
    kvbm_assign_error e1, e2;
    memset(&e1, 0, sizeof e1), memset(&e2, 0, sizeof e2);
    int r1 = 0, r2 = 0;
    size_t l1 = 0, h1 = 0, l2 = 0, h2 = 0;
    switch (rnd(10)) {
    case 0: case 1: case 2: { /* extend_block_ids: known prefix + fresh ids + noise */
      uint64_t ids[64];
      size_t n = 0, known = m->na + m->ns + m->nu;
      size_t pre = rnd(known + 1);
      for (size_t i = 0; i < pre && n < 40; i++) {
        if (i < m->na) ids[n++] = m->as[i].id;
        else if (i < m->na + m->ns) ids[n++] = m->st[i - m->na].id;
        else ids[n++] = m->un[i - m->na - m->ns];
      }
      size_t fresh = rnd(5);
      for (size_t i = 0; i < fresh; i++) ids[n++] = rnd(600);
      if (rnd(4) == 0 && n) { /* often a violation or a dup */
        size_t k = rnd(n);
        ids[n] = ids[k];
        n++;
      }
      r1 = kvbm_assignments_extend_block_ids(a, ids, n, &e1);
      r2 = m_extend_ids(m, ids, n, &e2);
      break;
    }
    case 3: { /* extend_assigned */
      uint64_t ids[4];
      kvbm_hash hs[4];
      size_t n = rnd(4);
      for (size_t i = 0; i < n; i++) ids[i] = rnd(600), hs[i] = good[rnd(NPOS)];
      r1 = kvbm_assignments_extend_assigned(a, ids, hs, n, &e1);
      r2 = m_extend_assigned(m, ids, hs, n, &e2);
      break;
    }
    case 4: case 5: { /* stage or assign against a prefix, sometimes corrupted */
      static kvbm_hash all[NPOS];
      memcpy(all, good, sizeof all);
      size_t nall = rnd(NPOS);
      if (rnd(4) == 0) { /* corrupt a hash inside the window that will be staged */
        size_t at = m->offset + m->na + m->ns + rnd(m->nu + 1);
        if (at < NPOS) all[at] = good[rnd(NPOS)];
      }
      if (rnd(2)) {
        r1 = kvbm_assignments_stage_pending(a, all, nall, &l1, &h1, &e1);
        r2 = m_stage(m, all, nall, &l2, &h2, &e2);
      } else {
        r1 = kvbm_assignments_assign_pending(a, all, nall, &l1, &h1, &e1);
        r2 = m_stage(m, all, nall, &l2, &h2, &e2);
        if (r2 == 0) m_commit(m, &l2, &h2);
      }
      break;
    }
    case 6:
      kvbm_assignments_commit_staged(a, &l1, &h1);
      m_commit(m, &l2, &h2);
      break;
    case 7: { /* pop_unassigned */
      uint64_t id = 0;
      r1 = kvbm_assignments_pop_unassigned(a, &id);
      r2 = m->nu > 0;
      if (r2) m->nu--, l2 = (size_t)m->un[m->nu];
      l1 = r1 ? (size_t)id : 0;
      break;
    }
    case 8: { /* take_staged */
      uint64_t ids[4096];
      r1 = kvbm_assignments_take_staged(a, ids, NULL, 4096);
      r2 = (int)m->ns;
      for (size_t i = 0; i < m->ns; i++)
        if (ids[i] != m->st[i].id) r2 = -1;
      m->ns = 0;
      break;
    }
    default:
      if (rnd(20) == 0) {
        kvbm_assignments_clear(a);
        m->na = m->ns = m->nu = 0;
      }
    }
    if (r1 < 0) errors_seen[r1 == KVBM_EORDERING_VIOLATION ? 0 : r1 == KVBM_EDUPLICATE_BLOCK_ID ? 1
                            : r1 == KVBM_EPOSITION_MISMATCH ? 2 : 3]++;
    if (r1 != r2 || l1 != l2 || h1 != h2 || memcmp(&e1, &e2, sizeof e1) != 0 || !agrees(a, m)) {
      agree = 0, bad_op = op;
      break;
    }
    /* the zips against a naive cross-check */
    kvbm_assign_triple t[4096];
    size_t nz = kvbm_zip_assigned_pending(as[1 - w], a, t, 4096);
    for (size_t i = 0; i < nz; i++) {
      const model *src = &ms[1 - w];
      size_t pos = t[i].pos, start = m->offset + m->na + m->ns;
      if (pos < src->offset || pos - src->offset >= src->na || src->as[pos - src->offset].id != t[i].a_id ||
          pos < start || pos - start >= m->nu || m->un[pos - start] != t[i].b_id)
        agree = 0, bad_op = op;
    }
    nz = kvbm_zip_assigned(as[0], as[1], t, 4096);
    size_t lo = ms[1].offset, hi0 = ms[0].offset + ms[0].na, hi1 = ms[1].offset + ms[1].na;
    size_t want = (hi0 < hi1 ? hi0 : hi1) > lo ? (hi0 < hi1 ? hi0 : hi1) - lo : 0;
    if (nz != want) agree = 0, bad_op = op;
    for (size_t i = 0; i < nz && agree; i++)
      if (t[i].pos != lo + i || t[i].a_id != ms[0].as[lo + i].id || t[i].b_id != ms[1].as[i].id)
        agree = 0, bad_op = op;
  }
  ok(agree, "randomized: %d operations agree with the model%s", OPS, agree ? "" : " (failed)");
  if (!agree) printf("#   first disagreement at op %d\n", bad_op);
  ok(errors_seen[0] > 10 && errors_seen[1] > 10 && errors_seen[2] > 10 && errors_seen[3] == 0,
     "randomized: all three error variants exercised (%d, %d, %d)", errors_seen[0], errors_seen[1],
     errors_seen[2]);
  kvbm_assignments_free(as[0]), kvbm_assignments_free(as[1]);
}

/* A long FIFO run: the ring wraps many times and keeps its order. */
static void test_ring_wrap(void) {
  kvbm_assignments *a = mk(0);
  enum { N = 5000 };
  static kvbm_hash all[N];
  for (size_t p = 0; p < N; p++) MUST(kvbm_hash_new(p + 1, 0, 0, p, &all[p]));
  uint64_t next = 0;
  int good = 1;
  size_t assigned = 0;
  while (assigned < N - 10 && good) {
    uint64_t ids[7];
    for (int k = 0; k < 7; k++) ids[k] = next++;
    if (kvbm_assignments_extend_block_ids(a, ids, 7, NULL) < 0) good = 0;
    size_t lo, hi;
    if (kvbm_assignments_assign_pending(a, all, assigned + 5, &lo, &hi, NULL) < 0) good = 0;
    assigned = hi;
  }
  uint64_t id;
  for (size_t i = 0; i < assigned && good; i++)
    if (!kvbm_assignments_get_assigned(a, i, &id, NULL) || id != i) good = 0;
  for (size_t i = 0; i < nunassigned(a) && good; i++)
    if (!kvbm_assignments_get_unassigned(a, i, &id) || id != assigned + i) good = 0;
  ok(good, "FIFO order survives %zu assignments through the ring", assigned);
  kvbm_assignments_free(a);
}

int main(void) {
  test_basic_assignment();
  test_errors_and_offsets();
  test_block_sequence();
  test_positions_and_zips();
  test_staging();
  test_zinuga_errors();
  test_alloc_failure();
  test_random();
  test_ring_wrap();
  return tap_done();
}
