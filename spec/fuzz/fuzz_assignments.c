/* fuzz_assignments.c - an operation sequence over two ExternalBlockAssignments
 * (src/assignments.c). After every call: the three collections partition the
 * known ids (no id twice, contains() agrees), the position ranges add up, a
 * failed call changed nothing and its error formats, and the zips agree with
 * the per-position lookups. */
#include <string.h>

#include "fuzz.h"
#include "kvbm.h"

#define MAXIDS 48
#define MAXALL 96

typedef struct {
  size_t na, ns, nu, next;
  uint64_t ids[2048];
  kvbm_hash hs[2048];
  size_t len;
} snap;

static void take(const kvbm_assignments *a, snap *s) {
  s->na = kvbm_assignments_assigned_count(a);
  s->ns = kvbm_assignments_staged_count(a);
  s->nu = kvbm_assignments_unassigned_count(a);
  s->next = kvbm_assignments_next_position(a);
  s->len = 0;
  for (size_t i = 0; i < s->na && s->len < 2048; i++, s->len++)
    FUZZ_CHECK(kvbm_assignments_get_assigned(a, i, &s->ids[s->len], &s->hs[s->len]) == 1, "get_assigned %zu", i);
  for (size_t i = 0; i < s->ns && s->len < 2048; i++, s->len++)
    FUZZ_CHECK(kvbm_assignments_get_staged(a, i, &s->ids[s->len], &s->hs[s->len]) == 1, "get_staged %zu", i);
  for (size_t i = 0; i < s->nu && s->len < 2048; i++, s->len++) {
    FUZZ_CHECK(kvbm_assignments_get_unassigned(a, i, &s->ids[s->len]) == 1, "get_unassigned %zu", i);
    s->hs[s->len] = (kvbm_hash){0, 0};
  }
}

static int same(const snap *x, const snap *y) {
  return x->na == y->na && x->ns == y->ns && x->nu == y->nu && x->next == y->next &&
         x->len == y->len && memcmp(x->ids, y->ids, x->len * sizeof x->ids[0]) == 0 &&
         memcmp(x->hs, y->hs, x->len * sizeof x->hs[0]) == 0;
}

static void check(const kvbm_assignments *a, snap *s) {
  take(a, s);
  size_t off = kvbm_assignments_offset(a), lo, hi;
  FUZZ_CHECK(s->next == off + s->na + s->ns, "next_position");
  kvbm_assignments_assigned_positions(a, &lo, &hi);
  FUZZ_CHECK(lo == off && hi == off + s->na, "assigned positions");
  kvbm_assignments_staged_positions(a, &lo, &hi);
  FUZZ_CHECK(lo == off + s->na && hi == s->next, "staged positions");
  kvbm_assignments_pending_positions(a, &lo, &hi);
  FUZZ_CHECK(lo == s->next && hi == s->next + s->nu, "pending positions");
  FUZZ_CHECK(kvbm_assignments_is_empty(a) == (s->len == 0), "is_empty");
  FUZZ_CHECK(kvbm_assignments_get_assigned(a, s->na, NULL, NULL) == 0, "get_assigned past the end");
  FUZZ_CHECK(kvbm_assignments_get_staged(a, s->ns, NULL, NULL) == 0, "get_staged past the end");
  FUZZ_CHECK(kvbm_assignments_get_unassigned(a, s->nu, NULL) == 0, "get_unassigned past the end");
  for (size_t i = 0; i < s->len; i++) {
    FUZZ_CHECK(kvbm_assignments_contains(a, s->ids[i]), "id %zu not contained", i);
    for (size_t j = 0; j < i; j++) FUZZ_CHECK(s->ids[i] != s->ids[j], "id %llu twice", (unsigned long long)s->ids[i]);
  }
  for (size_t i = 0; i < s->na; i++) {
    uint64_t id;
    kvbm_hash h;
    FUZZ_CHECK(kvbm_assignments_get_at_position(a, off + i, &id, &h) == 1 && id == s->ids[i],
               "get_at_position %zu", off + i);
  }
  for (size_t i = 0; i < s->nu; i++) {
    uint64_t id;
    FUZZ_CHECK(kvbm_assignments_get_pending_at_position(a, s->next + i, &id) == 1 &&
                   id == s->ids[s->na + s->ns + i],
               "get_pending_at_position");
  }
  FUZZ_CHECK(kvbm_assignments_get_at_position(a, off + s->na, NULL, NULL) == 0, "at_position past the end");
  if (off > 0) FUZZ_CHECK(kvbm_assignments_get_at_position(a, off - 1, NULL, NULL) == 0, "before the offset");
}

/* the failure leaves the instance as it was, and its message formats */
static void failed(int rc, const kvbm_assign_error *e, const snap *before, const kvbm_assignments *a) {
  static snap after;
  char msg[256], tiny[4];
  take(a, &after);
  FUZZ_CHECK(same(before, &after), "a failed call (%s) changed the instance", kvbm_err_name(rc));
  int len = kvbm_assign_error_format(rc, e, msg, sizeof msg);
  FUZZ_CHECK(len > 0 && (size_t)len < sizeof msg && strlen(msg) == (size_t)len, "format %s: %d", kvbm_err_name(rc), len);
  FUZZ_CHECK(kvbm_assign_error_format(rc, e, tiny, sizeof tiny) == KVBM_EINVAL, "format into 4 bytes");
}

static uint64_t pick_id(fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  if (b < 240) return b % MAXIDS;
  return b & 1 ? UINT64_MAX - (b & 7) : fuzz_u64(in);
}

static void check_zip(size_t (*zip)(const kvbm_assignments *, const kvbm_assignments *, kvbm_assign_triple *, size_t),
                      const kvbm_assignments *x, const kvbm_assignments *y, int pending, size_t cap) {
  static kvbm_assign_triple rows[1024];
  if (cap > 1024) cap = 1024;
  size_t n = zip(x, y, rows, cap);
  size_t bound = pending ? kvbm_assignments_unassigned_count(y) : kvbm_assignments_assigned_count(y);
  FUZZ_CHECK(n <= kvbm_assignments_assigned_count(x) && n <= bound, "zip count %zu", n);
  for (size_t i = 0; i < n && i < cap; i++) {
    uint64_t id;
    FUZZ_CHECK(i == 0 || rows[i].pos > rows[i - 1].pos, "zip not ascending");
    FUZZ_CHECK(kvbm_assignments_get_at_position(x, rows[i].pos, &id, NULL) == 1 && id == rows[i].a_id, "zip: first id");
    if (pending)
      FUZZ_CHECK(kvbm_assignments_get_pending_at_position(y, rows[i].pos, &id) == 1 && id == rows[i].b_id, "zip: pending id");
    else
      FUZZ_CHECK(kvbm_assignments_get_at_position(y, rows[i].pos, &id, NULL) == 1 && id == rows[i].b_id, "zip: second id");
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size, 0};
  static snap before, now;
  kvbm_assignments *as[2] = {NULL, NULL};
  kvbm_hash all[MAXALL];
  uint64_t ids[MAXIDS + 8];

  for (int i = 0; i < 2; i++) {
    uint64_t off = fuzz_u8(&in) < 250 ? fuzz_u8(&in) % 8 : fuzz_size(&in);
    int rc = kvbm_assignments_new(NULL, (size_t)off, &as[i]);
    if (off > KVBM_ASSIGN_MAX_OFFSET) {
      FUZZ_CHECK(rc == KVBM_EINVAL, "offset %llu accepted", (unsigned long long)off);
      rc = kvbm_assignments_new(NULL, 0, &as[i]);
    }
    FUZZ_CHECK(rc == 0, "new: %d", rc);
  }
  /* the sequence's hashes; position p usually carries p */
  for (size_t p = 0; p < MAXALL; p++) (void)kvbm_hash_new(p * 7 + 1, p > 0, p * 7 - 6, p, &all[p]);

  for (int steps = 0; fuzz_more(&in) && steps < 200; steps++) {
    kvbm_assignments *a = as[fuzz_u8(&in) & 1];
    kvbm_assign_error e;
    size_t lo = 0, hi = 0, n;
    int rc = 0;
    take(a, &before);
    switch (fuzz_u8(&in) % 12) {
    case 0: /* extend_block_ids: often the known ids again, then new ones */
      n = 0;
      if (fuzz_u8(&in) & 1)
        for (size_t i = 0; i < before.len && n < MAXIDS; i++) ids[n++] = before.ids[i];
      for (size_t k = fuzz_u8(&in) % 8; k > 0; k--) ids[n++] = pick_id(&in);
      rc = kvbm_assignments_extend_block_ids(a, ids, n, &e);
      break;
    case 1: { /* extend_assigned */
      kvbm_hash hs[8];
      n = fuzz_u8(&in) % 8;
      for (size_t i = 0; i < n; i++) {
        ids[i] = pick_id(&in);
        hs[i] = all[fuzz_u8(&in) % MAXALL];
        if (fuzz_u8(&in) == 0xff) hs[i].hi |= UINT64_C(3) << 62; /* malformed */
      }
      rc = kvbm_assignments_extend_assigned(a, ids, hs, n, &e);
      break;
    }
    case 2:
    case 3: { /* stage_pending / assign_pending over a prefix, sometimes with a wrong position */
      kvbm_hash mine[MAXALL];
      n = fuzz_u8(&in) % (MAXALL + 1);
      memcpy(mine, all, sizeof mine);
      if (n && fuzz_u8(&in) < 32) {
        size_t p = fuzz_u8(&in) % n;
        (void)kvbm_hash_new(99, 1, 98, (p + 1 + fuzz_u8(&in)) % (KVBM_MAX_POSITION + 1), &mine[p]);
      }
      int stage = fuzz_u8(&in) & 1;
      rc = stage ? kvbm_assignments_stage_pending(a, mine, n, &lo, &hi, &e)
                 : kvbm_assignments_assign_pending(a, mine, n, &lo, &hi, &e);
      if (rc >= 0 && stage)
        FUZZ_CHECK(rc == 0 && lo == before.ns && hi == kvbm_assignments_staged_count(a) &&
                       kvbm_assignments_unassigned_count(a) == before.nu - (hi - lo),
                   "stage_pending: [%zu, %zu) after %zu staged", lo, hi, before.ns);
      if (rc >= 0 && !stage)
        FUZZ_CHECK(rc == 0 && lo == before.na && hi == kvbm_assignments_assigned_count(a) &&
                       kvbm_assignments_staged_count(a) == 0,
                   "assign_pending: [%zu, %zu) after %zu assigned", lo, hi, before.na);
      break;
    }
    case 4:
      n = kvbm_assignments_commit_staged(a, &lo, &hi);
      FUZZ_CHECK(n == before.ns && lo == before.na && hi == before.na + n, "commit_staged");
      break;
    case 5: { /* take_staged, sometimes into too small a buffer */
      uint64_t tid[MAXIDS * 4];
      kvbm_hash th[MAXIDS * 4];
      size_t cap = fuzz_u8(&in) & 1 ? before.ns : before.ns - (before.ns > 0);
      rc = kvbm_assignments_take_staged(a, fuzz_u8(&in) & 1 ? tid : NULL, th, cap);
      if (cap < before.ns) FUZZ_CHECK(rc == KVBM_EINVAL, "take_staged into %zu for %zu", cap, before.ns);
      else FUZZ_CHECK(rc == (int)before.ns, "take_staged %d", rc);
      if (rc < 0) {
        take(a, &now);
        FUZZ_CHECK(same(&before, &now), "a failed take_staged changed the instance");
        rc = 0;
      }
      break;
    }
    case 6: {
      uint64_t id = 0;
      rc = kvbm_assignments_pop_unassigned(a, &id);
      FUZZ_CHECK(rc == (before.nu > 0) && (!rc || id == before.ids[before.len - 1]), "pop_unassigned");
      rc = 0;
      break;
    }
    case 7:
      if (fuzz_u8(&in) < 16) {
        kvbm_assignments_clear(a);
        FUZZ_CHECK(kvbm_assignments_is_empty(a) && kvbm_assignments_next_position(a) == kvbm_assignments_offset(a), "clear");
      }
      break;
    case 8:
      check_zip(kvbm_zip_assigned, as[0], as[1], 0, fuzz_u8(&in));
      check_zip(kvbm_zip_assigned_pending, as[0], as[1], 1, fuzz_u8(&in));
      check_zip(kvbm_zip_assigned_pending, as[1], as[0], 1, fuzz_u8(&in));
      break;
    default: { /* lookups with hostile arguments */
      uint64_t q = fuzz_size(&in);
      (void)kvbm_assignments_contains(a, q);
      (void)kvbm_assignments_get_at_position(a, (size_t)q, NULL, NULL);
      (void)kvbm_assignments_get_pending_at_position(a, (size_t)q, NULL);
      (void)kvbm_assignments_get_assigned(a, (size_t)q, NULL, NULL);
      break;
    }
    }
    if (rc < 0) failed(rc, &e, &before, a);
    check(as[0], &now);
    check(as[1], &now);
  }
  kvbm_assignments_free(as[0]);
  kvbm_assignments_free(as[1]);
  return 0;
}
