/* assignments.c - ExternalBlockAssignments: per-tier block-id tracking with
 * an offset into a sequence (kvbm-logical src/sequence/assignments/external.rs,
 * the zinuga version: extend_block_ids rejects repeats inside its input and
 * stage_pending validates every position before it moves anything).
 *
 * Three insertion-ordered collections:
 *   pending  - unassigned ids, a FIFO ring (shift from the front, push and
 *              pop at the back), capacity a power of two;
 *   staged   - (id, hash) pairs; only ever drained whole (commit_staged,
 *              take_staged), so a plain array suffices;
 *   assigned - (id, hash) pairs in positional order, append-only.
 * One open-addressing index holds every known id (all three collections).
 *
 * Invariant: assigned_cap >= nassigned + nstaged, so commit_staged never
 * allocates and cannot fail. Every fallible operation validates and
 * reserves first, then commits: on any error nothing has changed. */
#include "internal.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

typedef struct {
  uint64_t id;
  kvbm_hash h;
} entry;

/* An index slot; epoch 0 means empty. An id inserted by the operation in
 * progress carries that operation's epoch, which tells a repeat inside the
 * input (same epoch) from an id that was already known (older epoch). */
typedef struct {
  uint64_t id;
  uint64_t epoch;
} idslot;

struct kvbm_assignments {
  kvbm_allocator alloc;
  size_t offset;

  entry *assigned;
  size_t nassigned, assigned_cap;

  entry *staged;
  size_t nstaged, staged_cap;

  uint64_t *pending; /* ring */
  size_t phead, npending, pending_cap;

  idslot *index;
  size_t index_cap, index_len; /* cap: 0 or a power of two */
  uint64_t epoch;
};

/* ------------------------------------------------------------ the id index */

static inline size_t id_home(uint64_t id, size_t mask) {
  uint64_t x = id + UINT64_C(0x9E3779B97F4A7C15);
  x = (x ^ (x >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94D049BB133111EB);
  x ^= x >> 31;
  return (size_t)x & mask;
}

static idslot *idx_find(const kvbm_assignments *a, uint64_t id) {
  if (!a->index_cap) return NULL;
  size_t mask = a->index_cap - 1;
  for (size_t i = id_home(id, mask);; i = (i + 1) & mask) {
    idslot *s = &a->index[i];
    if (!s->epoch) return NULL;
    if (s->id == id) return s;
  }
}

/* Room for `need` ids at load factor <= 1/2. The set is unchanged either way. */
static int idx_reserve(kvbm_assignments *a, size_t need) {
  if (need <= a->index_cap / 2) return 0;
  size_t cap = a->index_cap ? a->index_cap : 16;
  while (cap / 2 < need) {
    if (cap > SIZE_MAX / 2 / sizeof(idslot)) return KVBM_ENOMEM;
    cap *= 2;
  }
  idslot *nb = kvbm__realloc(&a->alloc, NULL, 0, cap * sizeof *nb);
  if (!nb) return KVBM_ENOMEM;
  memset(nb, 0, cap * sizeof *nb);
  for (size_t i = 0; i < a->index_cap; i++) {
    if (!a->index[i].epoch) continue;
    size_t j = id_home(a->index[i].id, cap - 1);
    while (nb[j].epoch) j = (j + 1) & (cap - 1);
    nb[j] = a->index[i];
  }
  kvbm__free(&a->alloc, a->index, a->index_cap * sizeof *a->index);
  a->index = nb;
  a->index_cap = cap;
  return 0;
}

/* id must be absent and room reserved. */
static void idx_insert(kvbm_assignments *a, uint64_t id, uint64_t epoch) {
  size_t mask = a->index_cap - 1, i = id_home(id, mask);
  while (a->index[i].epoch) i = (i + 1) & mask;
  a->index[i].id = id;
  a->index[i].epoch = epoch;
  a->index_len++;
}

/* Backward-shift deletion: no tombstones. */
static void idx_remove(kvbm_assignments *a, uint64_t id) {
  idslot *s = idx_find(a, id);
  if (!s) return;
  size_t mask = a->index_cap - 1, hole = (size_t)(s - a->index);
  for (size_t j = (hole + 1) & mask; a->index[j].epoch; j = (j + 1) & mask) {
    size_t home = id_home(a->index[j].id, mask);
    /* j may move into the hole unless its home lies cyclically in (hole, j] */
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      a->index[hole] = a->index[j];
      hole = j;
    }
  }
  a->index[hole].epoch = 0;
  a->index_len--;
}

/* ------------------------------------------------------------ the collections */

static inline uint64_t *ring_at(const kvbm_assignments *a, size_t i) {
  return &a->pending[(a->phead + i) & (a->pending_cap - 1)];
}

static int ring_reserve(kvbm_assignments *a, size_t need) {
  if (need <= a->pending_cap) return 0;
  size_t cap = a->pending_cap ? a->pending_cap : 8;
  while (cap < need) {
    if (cap > SIZE_MAX / 2 / sizeof(uint64_t)) return KVBM_ENOMEM;
    cap *= 2;
  }
  uint64_t *nb = kvbm__realloc(&a->alloc, NULL, 0, cap * sizeof *nb);
  if (!nb) return KVBM_ENOMEM;
  for (size_t i = 0; i < a->npending; i++) nb[i] = *ring_at(a, i);
  kvbm__free(&a->alloc, a->pending, a->pending_cap * sizeof *a->pending);
  a->pending = nb;
  a->pending_cap = cap;
  a->phead = 0;
  return 0;
}

static int reserve_entries(kvbm_assignments *a, entry **arr, size_t *cap, size_t need) {
  if (need > SIZE_MAX / 2 / sizeof(entry)) return KVBM_ENOMEM;
  return kvbm__grow(&a->alloc, (void **)arr, cap, need, sizeof(entry));
}

static void set_range(size_t *lo, size_t *hi, size_t l, size_t h) {
  if (lo) *lo = l;
  if (hi) *hi = h;
}

/* ------------------------------------------------------------ lifecycle */

int kvbm_assignments_new(const kvbm_allocator *alloc, size_t offset, kvbm_assignments **out) {
  if (!out) return KVBM_EINVAL;
  *out = NULL;
  if (offset > KVBM_ASSIGN_MAX_OFFSET) return KVBM_EINVAL;
  kvbm_allocator al = alloc ? *alloc : (kvbm_allocator){NULL, NULL};
  kvbm_assignments *a = kvbm__realloc(&al, NULL, 0, sizeof *a);
  if (!a) return KVBM_ENOMEM;
  memset(a, 0, sizeof *a);
  a->alloc = al;
  a->offset = offset;
  *out = a;
  return 0;
}

void kvbm_assignments_free(kvbm_assignments *a) {
  if (!a) return;
  kvbm_allocator al = a->alloc;
  kvbm__free(&al, a->assigned, a->assigned_cap * sizeof *a->assigned);
  kvbm__free(&al, a->staged, a->staged_cap * sizeof *a->staged);
  kvbm__free(&al, a->pending, a->pending_cap * sizeof *a->pending);
  kvbm__free(&al, a->index, a->index_cap * sizeof *a->index);
  kvbm__free(&al, a, sizeof *a);
}

void kvbm_assignments_clear(kvbm_assignments *a) {
  a->nassigned = a->nstaged = a->npending = a->phead = 0;
  if (a->index_cap) memset(a->index, 0, a->index_cap * sizeof *a->index);
  a->index_len = 0;
}

/* ------------------------------------------------------------ queries */

size_t kvbm_assignments_offset(const kvbm_assignments *a) { return a->offset; }
size_t kvbm_assignments_assigned_count(const kvbm_assignments *a) { return a->nassigned; }
size_t kvbm_assignments_staged_count(const kvbm_assignments *a) { return a->nstaged; }
size_t kvbm_assignments_unassigned_count(const kvbm_assignments *a) { return a->npending; }

int kvbm_assignments_is_empty(const kvbm_assignments *a) {
  return a->nassigned == 0 && a->nstaged == 0 && a->npending == 0;
}

int kvbm_assignments_contains(const kvbm_assignments *a, uint64_t id) {
  return idx_find(a, id) != NULL;
}

size_t kvbm_assignments_next_position(const kvbm_assignments *a) {
  return a->offset + a->nassigned + a->nstaged;
}

void kvbm_assignments_assigned_positions(const kvbm_assignments *a, size_t *lo, size_t *hi) {
  set_range(lo, hi, a->offset, a->offset + a->nassigned);
}

void kvbm_assignments_staged_positions(const kvbm_assignments *a, size_t *lo, size_t *hi) {
  size_t start = a->offset + a->nassigned;
  set_range(lo, hi, start, start + a->nstaged);
}

void kvbm_assignments_pending_positions(const kvbm_assignments *a, size_t *lo, size_t *hi) {
  size_t start = kvbm_assignments_next_position(a);
  set_range(lo, hi, start, start + a->npending);
}

static int get_entry(const entry *arr, size_t n, size_t i, uint64_t *id, kvbm_hash *h) {
  if (i >= n) return 0;
  if (id) *id = arr[i].id;
  if (h) *h = arr[i].h;
  return 1;
}

int kvbm_assignments_get_assigned(const kvbm_assignments *a, size_t i, uint64_t *id,
                                  kvbm_hash *h) {
  return get_entry(a->assigned, a->nassigned, i, id, h);
}

int kvbm_assignments_get_staged(const kvbm_assignments *a, size_t i, uint64_t *id, kvbm_hash *h) {
  return get_entry(a->staged, a->nstaged, i, id, h);
}

int kvbm_assignments_get_unassigned(const kvbm_assignments *a, size_t i, uint64_t *id) {
  if (i >= a->npending) return 0;
  if (id) *id = *ring_at(a, i);
  return 1;
}

int kvbm_assignments_get_at_position(const kvbm_assignments *a, size_t pos, uint64_t *id,
                                     kvbm_hash *h) {
  if (pos < a->offset) return 0;
  return kvbm_assignments_get_assigned(a, pos - a->offset, id, h);
}

int kvbm_assignments_get_pending_at_position(const kvbm_assignments *a, size_t pos, uint64_t *id) {
  size_t start = kvbm_assignments_next_position(a);
  if (pos < start) return 0;
  return kvbm_assignments_get_unassigned(a, pos - start, id);
}

/* ------------------------------------------------------------ mutations */

int kvbm_assignments_extend_block_ids(kvbm_assignments *a, const uint64_t *ids, size_t n,
                                      kvbm_assign_error *err) {
  size_t first_new = 0;
  while (first_new < n && idx_find(a, ids[first_new])) first_new++; /* the known prefix */
  if (first_new == n) return 0;

  /* at most n - first_new new ids: make room first, so that the commit
   * below cannot fail half-way */
  size_t most = n - first_new;
  int rc = ring_reserve(a, a->npending + most);
  if (rc == 0) rc = idx_reserve(a, a->index_len + most);
  if (rc) return rc;

  uint64_t epoch = ++a->epoch;
  size_t added = 0;
  for (size_t i = first_new; i < n; i++) {
    const idslot *s = idx_find(a, ids[i]);
    if (s) {
      if (s->epoch != epoch) {
        rc = KVBM_EORDERING_VIOLATION;
        if (err) {
          err->known_id = ids[i];
          err->new_id = ids[first_new];
          err->known_index = i;
          err->first_new_index = first_new;
        }
      } else {
        rc = KVBM_EDUPLICATE_BLOCK_ID;
        if (err) err->block_id = ids[i];
      }
      /* roll back: the new ids written so far sit past the ring's end */
      for (size_t k = 0; k < added; k++) idx_remove(a, *ring_at(a, a->npending + k));
      return rc;
    }
    idx_insert(a, ids[i], epoch);
    *ring_at(a, a->npending + added++) = ids[i];
  }
  a->npending += added;
  return 0;
}

int kvbm_assignments_extend_assigned(kvbm_assignments *a, const uint64_t *ids,
                                     const kvbm_hash *hashes, size_t n, kvbm_assign_error *err) {
  if (n == 0) return 0;
  for (size_t i = 0; i < n; i++)
    if (!kvbm_hash_valid(hashes[i])) return KVBM_EBAD_HASH;
  if (n > SIZE_MAX / 4 - a->nassigned - a->nstaged) return KVBM_ENOMEM;
  int rc = reserve_entries(a, &a->assigned, &a->assigned_cap, a->nassigned + a->nstaged + n);
  if (rc == 0) rc = idx_reserve(a, a->index_len + n);
  if (rc) return rc;

  uint64_t epoch = ++a->epoch;
  for (size_t i = 0; i < n; i++) {
    if (idx_find(a, ids[i])) { /* known, or repeated in the input */
      if (err) err->block_id = ids[i];
      for (size_t k = 0; k < i; k++) idx_remove(a, ids[k]);
      return KVBM_EDUPLICATE_BLOCK_ID;
    }
    idx_insert(a, ids[i], epoch);
    a->assigned[a->nassigned + i].id = ids[i];
    a->assigned[a->nassigned + i].h = hashes[i];
  }
  a->nassigned += n;
  return 0;
}

int kvbm_assignments_stage_pending(kvbm_assignments *a, const kvbm_hash *all, size_t nall,
                                   size_t *lo, size_t *hi, kvbm_assign_error *err) {
  size_t old = a->nstaged, start = kvbm_assignments_next_position(a);
  size_t n = nall > start ? nall - start : 0;
  if (n > a->npending) n = a->npending;

  for (size_t k = 0; k < n; k++) { /* phase 1: validate every position */
    kvbm_hash h = all[start + k];
    if (!kvbm_hash_valid(h)) return KVBM_EBAD_HASH;
    if (kvbm_hash_position(h) != (uint64_t)(start + k)) {
      if (err) {
        err->expected = start + k;
        err->actual = kvbm_hash_position(h);
        err->block_id = *ring_at(a, k);
      }
      return KVBM_EPOSITION_MISMATCH;
    }
  }
  if (n) {
    int rc = reserve_entries(a, &a->staged, &a->staged_cap, a->nstaged + n);
    if (rc == 0)
      rc = reserve_entries(a, &a->assigned, &a->assigned_cap, a->nassigned + a->nstaged + n);
    if (rc) return rc;
  }
  for (size_t k = 0; k < n; k++) { /* phase 2: commit (FIFO) */
    a->staged[a->nstaged + k].id = *ring_at(a, k);
    a->staged[a->nstaged + k].h = all[start + k];
  }
  a->phead = n ? (a->phead + n) & (a->pending_cap - 1) : a->phead;
  a->npending -= n;
  a->nstaged += n;
  set_range(lo, hi, old, a->nstaged);
  return 0;
}

size_t kvbm_assignments_commit_staged(kvbm_assignments *a, size_t *lo, size_t *hi) {
  size_t old = a->nassigned, n = a->nstaged;
  /* room is guaranteed: assigned_cap >= nassigned + nstaged */
  if (n) memcpy(a->assigned + a->nassigned, a->staged, n * sizeof *a->staged);
  a->nassigned += n;
  a->nstaged = 0;
  set_range(lo, hi, old, a->nassigned);
  return n;
}

int kvbm_assignments_assign_pending(kvbm_assignments *a, const kvbm_hash *all, size_t nall,
                                    size_t *lo, size_t *hi, kvbm_assign_error *err) {
  int rc = kvbm_assignments_stage_pending(a, all, nall, NULL, NULL, err);
  if (rc < 0) return rc;
  kvbm_assignments_commit_staged(a, lo, hi);
  return 0;
}

int kvbm_assignments_take_staged(kvbm_assignments *a, uint64_t *ids, kvbm_hash *hashes,
                                 size_t cap) {
  size_t n = a->nstaged;
  if (n > (size_t)INT_MAX || ((ids || hashes) && cap < n)) return KVBM_EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (ids) ids[i] = a->staged[i].id;
    if (hashes) hashes[i] = a->staged[i].h;
    idx_remove(a, a->staged[i].id);
  }
  a->nstaged = 0;
  return (int)n;
}

int kvbm_assignments_pop_unassigned(kvbm_assignments *a, uint64_t *id) {
  if (!a->npending) return 0;
  uint64_t last = *ring_at(a, a->npending - 1);
  a->npending--;
  idx_remove(a, last);
  if (id) *id = last;
  return 1;
}

/* ------------------------------------------------------------ zips */

static size_t zip_fill(size_t start, size_t end, const kvbm_assignments *a,
                       const kvbm_assignments *b, int b_pending, kvbm_assign_triple *out,
                       size_t cap) {
  if (end <= start) return 0;
  size_t n = end - start;
  for (size_t k = 0; k < n && k < cap; k++) {
    size_t pos = start + k;
    out[k].pos = pos;
    kvbm_assignments_get_at_position(a, pos, &out[k].a_id, NULL);
    if (b_pending)
      kvbm_assignments_get_pending_at_position(b, pos, &out[k].b_id);
    else
      kvbm_assignments_get_at_position(b, pos, &out[k].b_id, NULL);
  }
  return n;
}

size_t kvbm_zip_assigned(const kvbm_assignments *a, const kvbm_assignments *b,
                         kvbm_assign_triple *out, size_t cap) {
  size_t alo, ahi, blo, bhi;
  kvbm_assignments_assigned_positions(a, &alo, &ahi);
  kvbm_assignments_assigned_positions(b, &blo, &bhi);
  return zip_fill(alo > blo ? alo : blo, ahi < bhi ? ahi : bhi, a, b, 0, out, cap);
}

size_t kvbm_zip_assigned_pending(const kvbm_assignments *src, const kvbm_assignments *dst,
                                 kvbm_assign_triple *out, size_t cap) {
  size_t slo, shi, dlo, dhi;
  kvbm_assignments_assigned_positions(src, &slo, &shi);
  kvbm_assignments_pending_positions(dst, &dlo, &dhi);
  return zip_fill(slo > dlo ? slo : dlo, shi < dhi ? shi : dhi, src, dst, 1, out, cap);
}

/* ------------------------------------------------------------ errors */

int kvbm_assign_error_format(int rc, const kvbm_assign_error *e, char *buf, size_t size) {
  int len;
  switch (rc) {
  case KVBM_EORDERING_VIOLATION:
    len = snprintf(buf, size,
                   "ordering violation: known block_id %" PRIu64 " at index %zu appeared after "
                   "new block_id %" PRIu64 " at index %zu",
                   e->known_id, e->known_index, e->new_id, e->first_new_index);
    break;
  case KVBM_EPOSITION_MISMATCH:
    len = snprintf(buf, size, "position mismatch for block_id %" PRIu64 ": expected %zu, actual %" PRIu64,
                   e->block_id, e->expected, e->actual);
    break;
  case KVBM_EDUPLICATE_BLOCK_ID:
    len = snprintf(buf, size, "duplicate block_id %" PRIu64 " already present", e->block_id);
    break;
  default:
    len = snprintf(buf, size, "%s", kvbm_strerror(rc));
  }
  if (len < 0 || (size_t)len >= size) return KVBM_EINVAL;
  return len;
}
