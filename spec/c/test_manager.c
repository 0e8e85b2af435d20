/* test_manager.c - the block store through the C API: allocation, staging,
 * registration under both duplicate policies, release rules, weak blocks,
 * lookups, handles going stale, configuration errors, allocation failure,
 * and a random workload checked against the store's invariants. */
#include <stdlib.h>

#include "internal.h"
#include "tap.h"

#define MUST(call)                             \
  do {                                         \
    if ((call) < 0) ok(0, "setup: %s", #call); \
  } while (0)

static kvbm_hash H(uint64_t pos, uint64_t cur) {
  kvbm_hash h;
  (void)kvbm_hash_new(cur, pos > 0, cur * 31, pos, &h);
  return h;
}

static kvbm_manager *make(kvbm_registry *reg, uint32_t n, kvbm_backend b, int reject) {
  kvbm_manager_config cfg = {.block_count = n, .block_size = 4, .registry = reg, .backend = b,
                             .reject_duplicates = reject};
  kvbm_manager *m = NULL;
  MUST(kvbm_manager_new(&cfg, &m));
  return m;
}

static int healthy(const kvbm_manager *m) {
  char msg[200];
  size_t counts[6];
  int rc = kvbm_manager_check(m, counts, msg, sizeof msg);
  if (rc) printf("# check: %s\n", msg);
  return rc == 0;
}

/* allocate one block, stage it with h, register it */
static kvbm_block reg1(kvbm_manager *m, kvbm_hash h) {
  kvbm_block mb, cb, ib = KVBM_NO_BLOCK;
  MUST(kvbm_allocate(m, 1, &mb, NULL));
  MUST(kvbm_stage(m, mb, h, 4, &cb));
  MUST(kvbm_register(m, cb, &ib));
  return ib;
}

static void test_lifecycle(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_MEDIUM, &reg));
  kvbm_manager *m = make(reg, 4, KVBM_BACKEND_LRU, 0);
  kvbm_block b[5], cb, ib, other;
  kvbm_hash evicted[4];

  ok(kvbm_allocate(m, 5, b, NULL) == KVBM_ENOSPC && kvbm_manager_available(m) == 4,
     "all or nothing: 5 of 4 fails and changes nothing");
  ok(kvbm_allocate(m, 0, b, NULL) == 0, "allocating 0 succeeds");
  MUST(kvbm_allocate(m, 1, b, NULL));
  ok(kvbm_stage(m, b[0], H(0, 1), 8, &cb) == KVBM_EBLOCK_SIZE_MISMATCH &&
         kvbm_block_state(m, b[0]) == KVBM_STATE_MUTABLE,
     "staging with the wrong block size fails; the block stays mutable");
  kvbm_hash bad = {UINT64_C(3) << 62, 0};
  ok(kvbm_stage(m, b[0], bad, 4, &cb) == KVBM_EBAD_HASH, "a malformed hash is refused");
  MUST(kvbm_stage(m, b[0], H(0, 1), 4, &cb));
  ok(kvbm_release(m, b[0]) == KVBM_ESTALE, "the mutable handle went stale when it was staged");
  ok(kvbm_register(m, b[0], &ib) == KVBM_ESTALE, "a stale handle cannot be registered");
  kvbm_block again;
  MUST(kvbm_complete_reset(m, cb, &again));
  ok(kvbm_block_state(m, again) == KVBM_STATE_MUTABLE && kvbm_block_id(again) == kvbm_block_id(cb),
     "reset gives the staged block back as mutable, same id");
  MUST(kvbm_stage(m, again, H(0, 1), 4, &cb));
  MUST(kvbm_register(m, cb, &ib));
  ok(kvbm_block_state(m, ib) == KVBM_STATE_PRIMARY && kvbm_registry_present(reg, H(0, 1), 0),
     "registered: primary, present in its tier");
  ok(kvbm_registry_frequency(reg, H(0, 1)) == 1, "a new registration touches the tracker once");

  /* Allow: a second registration is a duplicate that keeps the primary alive */
  other = reg1(m, H(0, 1));
  ok(kvbm_block_state(m, other) == KVBM_STATE_DUPLICATE && kvbm_block_id(other) != kvbm_block_id(ib),
     "Allow: the second registration is a duplicate in its own slot");
  MUST(kvbm_release(m, ib));
  ok(kvbm_manager_inactive(m) == 0 && healthy(m), "the duplicate keeps its primary out of the inactive pool");
  MUST(kvbm_release(m, other));
  ok(kvbm_manager_inactive(m) == 1 && kvbm_manager_reset(m) == 3, "then both go: primary inactive, duplicate reset");

  /* weak blocks: phase 2 finds the hash in the inactive pool */
  kvbm_block found[2];
  ok(kvbm_match(m, (kvbm_hash[]){H(0, 1)}, 1, found) == 1, "match resurrects the inactive block");
  kvbm_weak w;
  MUST(kvbm_downgrade(m, found[0], &w));
  MUST(kvbm_release(m, found[0]));
  kvbm_block up;
  ok(kvbm_weak_upgrade(m, &w, &up) == 1 && kvbm_block_id(up) == kvbm_block_id(found[0]),
     "a weak block upgrades from the inactive pool");
  MUST(kvbm_release(m, up));
  kvbm_block four[4];
  ok(kvbm_allocate(m, 4, four, evicted) == 1 && kvbm_hash_cmp(evicted[0], H(0, 1)) == 0,
     "allocating everything evicts it and says which hash went");
  ok(kvbm_weak_upgrade(m, &w, &up) == 0, "after the eviction the weak block cannot upgrade");
  ok(kvbm_registry_is_registered(reg, H(0, 1)), "but it keeps the registration alive");
  ok(kvbm_weak_release(m, &w) == 0, "a weak block releases");
  ok(!kvbm_registry_is_registered(reg, H(0, 1)), "until it is released");
  for (int i = 0; i < 4; i++) MUST(kvbm_release(m, four[i]));

  /* reset on release, per block */
  ib = reg1(m, H(0, 2));
  MUST(kvbm_block_set_reset_on_release(m, ib, 1));
  MUST(kvbm_release(m, ib));
  ok(kvbm_manager_inactive(m) == 0 && !kvbm_registry_is_registered(reg, H(0, 2)),
     "reset-on-release sends the block to the reset pool, unregistered");

  /* prefix match stops only at a hash in neither pool */
  kvbm_block a = reg1(m, H(0, 3)), c = reg1(m, H(1, 4));
  MUST(kvbm_release(m, a));
  kvbm_block got[3];
  kvbm_metrics before;
  kvbm_manager_metrics(m, &before);
  ok(kvbm_match_count(m, (kvbm_hash[]){H(0, 3), H(1, 4), H(2, 9)}, 3) == 2 && kvbm_manager_inactive(m) == 1,
     "match_count sees the prefix without resurrecting anything");
  kvbm_metrics after;
  kvbm_manager_metrics(m, &after);
  ok(after.match_hashes_requested == before.match_hashes_requested, "and without counting a lookup");
  ok(kvbm_match(m, (kvbm_hash[]){H(0, 3), H(1, 4), H(2, 9)}, 3, got) == 2, "inactive then active: 2, stops at the miss");
  kvbm_block scat[4];
  ok(kvbm_match_scattered(m, (kvbm_hash[]){H(2, 9), H(0, 3), H(2, 9), H(1, 4)}, 4, scat) == 2 &&
         scat[0] == KVBM_NO_BLOCK && scat[2] == KVBM_NO_BLOCK,
     "scattered: one result per input, misses are KVBM_NO_BLOCK");
  kvbm_block sc[3];
  ok(kvbm_scan(m, (kvbm_hash[]){H(0, 3), H(0, 3), H(1, 4)}, 3, 0, sc) == 2 && sc[1] == KVBM_NO_BLOCK,
     "scan collapses a repeated hash");
  for (int i = 0; i < 2; i++) MUST(kvbm_release(m, got[i]));
  MUST(kvbm_release(m, scat[1]));
  MUST(kvbm_release(m, scat[3]));
  MUST(kvbm_release(m, sc[0]));
  MUST(kvbm_release(m, sc[2]));
  ok(kvbm_block_use_count(m, c) == 1 && healthy(m), "every lookup reference was returned");
  MUST(kvbm_release(m, c));

  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  ok(x.inflight_mutable == 0 && x.inflight_immutable == 0 && x.duplicate_blocks == 1 && x.evictions == 1,
     "metrics: nothing in flight, one duplicate, one eviction");
  ok(kvbm_reset_inactive(m) == 0 && kvbm_manager_reset(m) == 4, "reset_inactive drains the cache");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

static void test_reject(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  kvbm_manager *m = make(reg, 5, KVBM_BACKEND_LINEAGE, 1);
  kvbm_block a = reg1(m, H(0, 100));
  kvbm_block mb[4], cb[4], out[4];
  MUST(kvbm_allocate(m, 4, mb, NULL));
  kvbm_hash hs[4] = {H(0, 200), H(0, 100), H(0, 200), H(0, 300)};
  for (int i = 0; i < 4; i++) MUST(kvbm_stage(m, mb[i], hs[i], 4, &cb[i]));
  MUST(kvbm_register_all(m, cb, 4, out));
  ok(kvbm_block_id(out[0]) == kvbm_block_id(mb[0]) && kvbm_block_id(out[1]) == kvbm_block_id(a) &&
         kvbm_block_id(out[2]) == kvbm_block_id(mb[0]) && kvbm_block_id(out[3]) == kvbm_block_id(mb[3]),
     "Reject: [B, A', B', C] gives [B, A, B, C] (#35)");
  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  ok(x.registration_dedup == 2 && kvbm_manager_available(m) == 2, "two dedups; their slots went back");
  for (int i = 0; i < 4; i++) MUST(kvbm_release(m, out[i]));
  MUST(kvbm_release(m, a));
  ok(healthy(m) && kvbm_manager_inactive(m) == 3, "three distinct hashes cached");

  /* register_all validates first: a repeated or stale handle consumes nothing */
  MUST(kvbm_allocate(m, 2, mb, NULL));
  MUST(kvbm_stage(m, mb[0], H(0, 400), 4, &cb[0]));
  MUST(kvbm_stage(m, mb[1], H(0, 500), 4, &cb[1]));
  kvbm_block twice[2] = {cb[0], cb[0]};
  ok(kvbm_register_all(m, twice, 2, out) == KVBM_EINVAL && kvbm_block_state(m, cb[0]) == KVBM_STATE_STAGED,
     "the same block twice in a batch: nothing consumed");
  kvbm_block stale[2] = {cb[1], mb[0]};
  ok(kvbm_register_all(m, stale, 2, out) == KVBM_ESTALE && kvbm_block_state(m, cb[1]) == KVBM_STATE_STAGED,
     "a stale handle in a batch: nothing consumed");
  /* out-of-range slots (KVBM_NO_BLOCK is what match_scattered gives a miss)
   * are refused without touching the state array */
  kvbm_block oob[3] = {cb[0], cb[1], KVBM_NO_BLOCK};
  ok(kvbm_register_all(m, oob, 3, out) == KVBM_ESTALE && kvbm_block_state(m, cb[0]) == KVBM_STATE_STAGED &&
         kvbm_block_state(m, cb[1]) == KVBM_STATE_STAGED,
     "KVBM_NO_BLOCK in a batch: refused, nothing consumed");
  ok(kvbm_register(m, KVBM_NO_BLOCK, out) == KVBM_ESTALE, "KVBM_NO_BLOCK alone: refused");
  ok(kvbm_register(m, ((uint64_t)1 << 32) | 100, out) == KVBM_ESTALE, "a slot beyond the pool: refused");
  ok(healthy(m), "store consistent after out-of-range handles");
  MUST(kvbm_release(m, cb[0]));
  MUST(kvbm_release(m, cb[1]));
  ok(healthy(m), "store consistent");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

static void test_config(void) {
  kvbm_registry *reg, *plain;
  char msg[200];
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_SMALL, &reg));
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &plain));
  kvbm_manager_config cfg = {.block_count = 0, .registry = reg};
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG &&
         strcmp(msg, "block_count must be greater than 0") == 0,
     "count 0: the reference's message");
  cfg.block_count = 4;
  cfg.block_size = 24;
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strstr(msg, "power of 2"),
     "block size 24 is not a power of two");
  cfg.block_size = 16;
  cfg.backend = KVBM_BACKEND_MULTI_LRU;
  cfg.thresholds[0] = 6, cfg.thresholds[1] = 2, cfg.thresholds[2] = 10;
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strstr(msg, "ascending order"),
     "thresholds must ascend");
  cfg.thresholds[0] = 2, cfg.thresholds[1] = 6, cfg.thresholds[2] = 20;
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strstr(msg, "must be <= 15"),
     "thresholds stop at 15");
  cfg.thresholds[2] = 12;
  cfg.registry = plain;
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strstr(msg, "frequency tracking"),
     "multi-LRU needs a tracker");
  cfg.registry = NULL;
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strcmp(msg, "registry is required") == 0,
     "no registry");

  /* a registry serves KVBM_MAX_TIERS managers */
  kvbm_manager *ms[KVBM_MAX_TIERS + 1];
  kvbm_manager_config one = {.block_count = 2, .block_size = 4, .registry = plain};
  int made = 0;
  for (int i = 0; i < KVBM_MAX_TIERS; i++) made += kvbm_manager_new(&one, &ms[i]) == 0;
  ok(made == KVBM_MAX_TIERS && kvbm_manager_new(&one, &ms[KVBM_MAX_TIERS]) == KVBM_ETIERS,
     "the fifth manager on a registry is refused");
  kvbm_manager_free(ms[1]);
  ok(kvbm_manager_new(&one, &ms[1]) == 0 && kvbm_manager_tier(ms[1]) == 1, "a freed tier is reused");
  for (int i = 0; i < KVBM_MAX_TIERS; i++) kvbm_manager_free(ms[i]);
  kvbm_registry_release(reg);
  kvbm_registry_release(plain);
}

/* Fails the allocation number `fail_at` (counting from 0), frees normally. */
typedef struct {
  int count, fail_at;
  long live;
} chaos;

static void *chaos_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  chaos *c = ud;
  (void)osize;
  if (nsize == 0) {
    if (ptr) c->live--;
    free(ptr);
    return NULL;
  }
  if (c->count++ == c->fail_at) return NULL;
  void *p = realloc(ptr, nsize);
  if (p && !ptr) c->live++;
  return p;
}

static void test_allocation_failure(void) {
  int clean = 1, failures = 0;
  for (int b = 0; b < KVBM_BACKEND_POLICY; b++) /* every built-in backend */
    for (int k = 0; k < 40; k++) {
      chaos c = {0, k, 0};
      kvbm_allocator a = {chaos_alloc, &c};
      kvbm_registry *reg = NULL;
      kvbm_manager *m = NULL;
      int rc = kvbm_registry_new(&a, KVBM_FREQUENCY_SMALL, &reg);
      if (rc == 0) {
        kvbm_manager_config cfg = {.block_count = 8, .block_size = 4, .registry = reg,
                                   .backend = (kvbm_backend)b};
        rc = kvbm_manager_new(&cfg, &m);
        if (rc == 0) {
          for (uint64_t i = 0; i < 12; i++) { /* past the pool: evictions, ghosts, history */
            kvbm_block mb, cb, ib;
            if (kvbm_allocate(m, 1, &mb, NULL) < 0 || kvbm_stage(m, mb, H(0, 7 + i), 4, &cb) < 0) break;
            if (kvbm_register(m, cb, &ib) < 0) break;
            (void)kvbm_release(m, ib);
          }
          if (!healthy(m)) printf("# backend %d, failing allocation %d: store unsound\n", b, k), clean = 0;
          kvbm_manager_free(m);
        }
        kvbm_registry_release(reg);
      }
      failures += rc == KVBM_ENOMEM;
      if (!((rc == 0 || rc == KVBM_ENOMEM) && c.live == 0))
        printf("# backend %d, failing allocation %d: rc %d, %ld blocks left\n", b, k, rc, c.live), clean = 0;
    }
  ok(failures > 5 * KVBM_BACKEND_POLICY && clean,
     "every backend: every failed allocation is reported (%d) and nothing leaks", failures);
}

/* Unbalanced releases: an unacquire with no acquire behind it, or a weak
 * block released twice, must fail and leave the reference of the slot that
 * carries the hash alone (it used to free the entry under the slot, which
 * then reported the next hash registered). */
static void test_unbalanced_release(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  kvbm_manager *m = make(reg, 2, KVBM_BACKEND_LRU, 0);
  kvbm_hash h1 = H(0, 11), h2 = H(0, 22), got;
  kvbm_block ib = reg1(m, h1);

  ok(kvbm_registry_unacquire(reg, h1) == KVBM_ENOT_HELD && kvbm_registry_is_registered(reg, h1) &&
         kvbm_registry_count(reg) == 1 && healthy(m),
     "unacquire of a hash only a block holds fails and keeps the registration");
  ok(kvbm_registry_unacquire(reg, h2) == KVBM_ENOT_HELD, "unacquire of an unknown hash fails");
  MUST(kvbm_registry_acquire(reg, h2));
  ok(kvbm_block_hash_of(m, ib, &got) == 0 && kvbm_hash_cmp(got, h1) == 0 && healthy(m),
     "the block still reports its own hash after the next registration");
  MUST(kvbm_registry_acquire(reg, h1));
  ok(kvbm_registry_unacquire(reg, h1) == 0 && kvbm_registry_unacquire(reg, h1) == KVBM_ENOT_HELD &&
         kvbm_registry_is_registered(reg, h1) && healthy(m),
     "one acquire allows one unacquire, the second fails");

  kvbm_weak wa, wb, copy;
  kvbm_block up;
  MUST(kvbm_downgrade(m, ib, &wa));
  MUST(kvbm_downgrade(m, ib, &wb));
  copy = wa;
  ok(kvbm_weak_release(m, &wa) == 0 && kvbm_weak_release(m, &wa) == KVBM_ESTALE && healthy(m),
     "a weak block released twice fails the second time");
  ok(kvbm_weak_upgrade(m, &wa, &up) == KVBM_ESTALE, "a released weak block does not upgrade");
  ok(kvbm_weak_release(m, &copy) == 0 && kvbm_weak_release(m, &wb) == KVBM_ENOT_HELD &&
         kvbm_registry_is_registered(reg, h1) && healthy(m),
     "a copy released as well uses up the holds, never the block's reference");
  ok(kvbm_release(m, ib) == 0 && kvbm_manager_inactive(m) == 1 && healthy(m),
     "the block is released once, into the inactive pool");
  ok(kvbm_registry_unacquire(reg, h2) == 0 && !kvbm_registry_is_registered(reg, h2),
     "the balanced unacquire still works");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

/* A primary handle released more often than it was held (the fuzz_manager
 * finding): its duplicate's keepalive is not the caller's to drop, so the
 * extra releases fail and the primary lives as long as the duplicate. */
static void test_over_released_primary(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  kvbm_manager *m = make(reg, 4, KVBM_BACKEND_LRU, 0);
  kvbm_hash h = H(0, 7);
  kvbm_block p = reg1(m, h), d = reg1(m, h), both[2] = {p, p};
  MUST(kvbm_block_retain(m, p));
  ok(kvbm_block_state(m, d) == KVBM_STATE_DUPLICATE && kvbm_block_use_count(m, p) == 3,
     "setup: a primary held twice, and its duplicate's keepalive");
  ok(kvbm_release_all(m, both, 2, NULL) == 0 && kvbm_block_state(m, p) == KVBM_STATE_PRIMARY && healthy(m),
     "the two references of the caller are released");
  ok(kvbm_release(m, p) == KVBM_ESTALE && kvbm_release_all(m, both, 2, NULL) == 0 &&
         kvbm_block_state(m, p) == KVBM_STATE_PRIMARY && kvbm_block_use_count(m, p) == 1 && healthy(m),
     "releasing it again fails and leaves the duplicate its live primary");
  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  ok(x.inflight_immutable == 1, "only the duplicate is in flight");
  ok(kvbm_release(m, d) == 0 && kvbm_block_state(m, p) == KVBM_ESTALE &&
         kvbm_manager_inactive(m) == 1 && kvbm_manager_reset(m) == 3 && healthy(m),
     "the duplicate's release sends the primary to the inactive pool");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

/* Fills every large block with a canary and fails allocation number
 * fail_at. At that moment it notes which large blocks are still untouched;
 * a free that finds one of those written counts the block as touched by the
 * failure path. */
#define CANARY 0xA5
#define MAX_TRACKED 64
typedef struct {
  int count, fail_at, failed, touched;
  size_t large;
  struct {
    unsigned char *p;
    size_t size;
    int watched;
  } blocks[MAX_TRACKED];
} canary;

static int untouched(const unsigned char *p, size_t size) {
  for (size_t i = 0; i < size; i++)
    if (p[i] != CANARY) return 0;
  return 1;
}

static int tracked(canary *c, const void *p) {
  for (int i = 0; i < MAX_TRACKED; i++)
    if (c->blocks[i].p == p) return i;
  return -1;
}

static void *canary_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  canary *c = ud;
  int i = ptr ? tracked(c, ptr) : -1;
  if (i >= 0 && c->blocks[i].watched && !untouched(ptr, c->blocks[i].size)) c->touched++;
  if (nsize == 0) {
    if (i >= 0) c->blocks[i].p = NULL;
    free(ptr);
    return NULL;
  }
  if (c->count++ == c->fail_at) {
    c->failed = 1;
    for (int j = 0; j < MAX_TRACKED; j++)
      if (c->blocks[j].p) c->blocks[j].watched = untouched(c->blocks[j].p, c->blocks[j].size);
    return NULL;
  }
  unsigned char *p = malloc(nsize);
  if (!p) return NULL;
  size_t keep = ptr ? (osize < nsize ? osize : nsize) : 0;
  if (keep) memcpy(p, ptr, keep);
  if (i >= 0) c->blocks[i].p = NULL;
  free(ptr);
  if (nsize >= c->large) {
    memset(p + keep, CANARY, nsize - keep);
    int j = tracked(c, NULL);
    if (j >= 0) c->blocks[j].p = p, c->blocks[j].size = nsize, c->blocks[j].watched = 0;
  }
  return p;
}

/* A manager that cannot get its memory fails at once: the failure path
 * must not write (or read) the per-slot arrays it has just allocated, which
 * for 2^30 slots are gigabytes the system never had to commit. */
static void test_failed_new_touches_nothing(void) {
  const uint32_t n = 1u << 16;
  int failures = 0, touched = 0, succeeded = 0;
  for (int k = 0; k < 40 && !succeeded; k++) {
    canary *c = calloc(1, sizeof *c);
    c->fail_at = -1;
    c->large = n;
    kvbm_allocator a = {canary_alloc, c};
    kvbm_registry *reg = NULL;
    MUST(kvbm_registry_new(&a, KVBM_FREQUENCY_NONE, &reg));
    c->count = 0; /* count the manager's allocations only */
    c->fail_at = k;
    kvbm_manager_config cfg = {.block_count = n, .block_size = 4, .registry = reg,
                               .backend = KVBM_BACKEND_LRU};
    kvbm_manager *m = NULL;
    int rc = kvbm_manager_new(&cfg, &m);
    if (rc == 0) {
      succeeded = !c->failed;
      kvbm_manager_free(m);
    } else {
      failures += rc == KVBM_ENOMEM;
      touched += c->touched;
      if (c->touched) printf("# failing allocation %d: %d large blocks written on the way out\n", k, c->touched);
    }
    c->fail_at = -1;
    kvbm_registry_release(reg);
    free(c);
  }
  ok(succeeded && failures > 5 && touched == 0,
     "a failed kvbm_manager_new of %u blocks writes none of its arrays (%d failures, %d written)",
     (unsigned)n, failures, touched);
}

/* Random operations on two managers (Allow and Reject) sharing a registry. */
static void test_random(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_SMALL, &reg));
  kvbm_manager *ms[2] = {make(reg, 16, KVBM_BACKEND_LINEAGE, 0), make(reg, 12, KVBM_BACKEND_MULTI_LRU, 1)};
  kvbm_block held[2][64];
  int nheld[2] = {0, 0}, good = 1;
  uint64_t seed = 12345;
  for (int step = 0; step < 20000 && good; step++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    unsigned r = (unsigned)(seed >> 33), which = r & 1, op = (r >> 1) % 6;
    kvbm_manager *m = ms[which];
    kvbm_hash h = H((r >> 4) % 4, (r >> 8) % 9 + 1);
    if (op <= 1 && nheld[which] < 64) {
      kvbm_block mb, cb, ib;
      if (kvbm_allocate(m, 1, &mb, NULL) >= 0) {
        good &= kvbm_stage(m, mb, h, 4, &cb) == 0 && kvbm_register(m, cb, &ib) == 0;
        held[which][nheld[which]++] = ib;
      }
    } else if (op == 2 && nheld[which] < 64) {
      kvbm_block got;
      if (kvbm_match(m, &h, 1, &got) == 1) held[which][nheld[which]++] = got;
    } else if (op <= 4 && nheld[which] > 0) {
      int i = (int)((r >> 12) % (unsigned)nheld[which]);
      good &= kvbm_release(m, held[which][i]) == 0;
      held[which][i] = held[which][--nheld[which]];
    } else if (op == 5 && nheld[which] > 0 && nheld[which] < 64) {
      kvbm_weak w;
      kvbm_block up;
      if (kvbm_downgrade(m, held[which][0], &w) == 0) {
        if (kvbm_weak_upgrade(m, &w, &up) == 1) held[which][nheld[which]++] = up;
        (void)kvbm_weak_release(m, &w);
      }
    }
    good &= healthy(ms[0]) && healthy(ms[1]);
  }
  ok(good, "20000 random operations keep both stores consistent");
  for (int t = 0; t < 2; t++)
    for (int i = 0; i < nheld[t]; i++) MUST(kvbm_release(ms[t], held[t][i]));
  ok(kvbm_manager_available(ms[0]) == 16 && kvbm_manager_available(ms[1]) == 12,
     "every block is available again");
  kvbm_manager_free(ms[0]);
  kvbm_manager_free(ms[1]);
  ok(kvbm_registry_count(reg) == 0, "and the registry is empty once the managers are gone");
  kvbm_registry_release(reg);
}

/* A batched policy (on_events): notifications arrive in order, in one call
 * before victims() or at kvbm_policy_flush, never one by one. */
typedef struct {
  char log[256];
  int calls;
  uint32_t lru[8];
  size_t nlru;
} batch_policy;

static int batch_events(void *ud, const kvbm_policy_event *ev, size_t n) {
  static const char *const kinds[] = {
#define KIND(name, lua_name) lua_name,
      KVBM_POLICY_EVENT_MAP(KIND)
#undef KIND
  };
  batch_policy *p = ud;
  p->calls++;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(p->log);
    snprintf(p->log + len, sizeof p->log - len, "%s%s@%llu", len ? " " : "", kinds[ev[i].kind],
             (unsigned long long)kvbm_hash_position(ev[i].hash));
    if (ev[i].kind == KVBM_POLICY_INSERT && p->nlru < 8) p->lru[p->nlru++] = ev[i].block_id;
    if (ev[i].kind == KVBM_POLICY_REMOVE)
      for (size_t j = 0; j < p->nlru; j++)
        if (p->lru[j] == ev[i].block_id) {
          memmove(p->lru + j, p->lru + j + 1, (p->nlru - j - 1) * sizeof *p->lru);
          p->nlru--;
          break;
        }
  }
  return 0;
}

static int batch_victims(void *ud, size_t n, uint32_t *out) {
  batch_policy *p = ud;
  size_t k = n < p->nlru ? n : p->nlru;
  memcpy(out, p->lru, k * sizeof *out);
  memmove(p->lru, p->lru + k, (p->nlru - k) * sizeof *p->lru);
  p->nlru -= k;
  return (int)k;
}

static void test_policy_events(void) {
  batch_policy bp = {{0}, 0, {0}, 0};
  kvbm_policy pol = {.victims = batch_victims, .ud = &bp, .on_events = batch_events};
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  kvbm_manager_config cfg = {.block_count = 1, .block_size = 4, .registry = reg,
                             .backend = KVBM_BACKEND_POLICY, .policy = &pol};
  kvbm_manager *m;
  MUST(kvbm_manager_new(&cfg, &m));
  kvbm_hash h0 = H(0, 5), miss = H(3, 9);
  kvbm_block ib = reg1(m, h0), got[2], mb;
  MUST(kvbm_release(m, ib));
  ok(bp.calls == 0, "nothing is delivered while the host has not flushed");
  ok(kvbm_match(m, (kvbm_hash[]){h0, miss}, 2, got) == 1 && kvbm_release(m, got[0]) == 0,
     "a hit, then a miss");
  ok(kvbm_allocate(m, 1, &mb, NULL) == 1 && bp.calls == 1,
     "the victim is asked for after one delivery of everything before it");
  ok(strcmp(bp.log, "admit@0 insert@0 remove@0 miss@3 insert@0") == 0, "in order: %s", bp.log);
  ok(kvbm_policy_flush(m) == 0 && bp.calls == 1, "a flush with nothing queued calls nothing");
  MUST(kvbm_release(m, mb));
  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  ok(x.policy_errors == 0 && healthy(m), "no policy error, the store is sound");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

/* ------------------------------------------- prepared (deferred) policies */

/* Set around every manager call of the tests below: a policy callback that
 * finds it set ran inside a core call. */
static int in_core;
#define CORE(call) (in_core = 1, rc_ = (call), in_core = 0, rc_)
static int rc_;

typedef struct {
  batch_policy b;
  kvbm_manager *m;
  int inside, asked, newest_first, reenter, reenter_rc[2];
} prep_policy;

static int prep_events(void *ud, const kvbm_policy_event *ev, size_t n) {
  prep_policy *p = ud;
  p->inside += in_core;
  return batch_events(&p->b, ev, n);
}

static int prep_victims(void *ud, size_t n, uint32_t *out) {
  prep_policy *p = ud;
  p->inside += in_core;
  p->asked++;
  if (p->reenter) { /* a callback may not enter its own policy again */
    p->reenter_rc[0] = kvbm_policy_prepare(p->m, 1);
    p->reenter_rc[1] = kvbm_policy_flush(p->m);
  }
  if (!p->newest_first) return batch_victims(&p->b, n, out);
  size_t k = n < p->b.nlru ? n : p->b.nlru;
  for (size_t i = 0; i < k; i++) out[i] = p->b.lru[p->b.nlru - 1 - i];
  p->b.nlru -= k;
  return (int)k;
}

static int same(kvbm_hash a, kvbm_hash b) { return memcmp(&a, &b, sizeof a) == 0; }

static uint64_t policy_errors(const kvbm_manager *m) {
  kvbm_metrics x;
  kvbm_manager_metrics(m, &x);
  return x.policy_errors;
}

/* A pool of n blocks holding hashes H(0, base + i), released in order i = 0.. */
static kvbm_manager *prep_pool(kvbm_registry *reg, uint32_t n, prep_policy *p, kvbm_policy *pol, int deferred,
                               uint64_t base) {
  *pol = (kvbm_policy){.victims = prep_victims, .on_events = prep_events, .ud = p, .deferred = deferred};
  kvbm_manager_config cfg = {.block_count = n, .block_size = 4, .registry = reg,
                             .backend = KVBM_BACKEND_POLICY, .policy = pol};
  kvbm_manager *m = NULL;
  MUST(kvbm_manager_new(&cfg, &m));
  p->m = m;
  kvbm_block ib[8];
  for (uint32_t i = 0; i < n; i++) ib[i] = reg1(m, H(0, base + i));
  for (uint32_t i = 0; i < n; i++) MUST(kvbm_release(m, ib[i]));
  return m;
}

static void test_policy_prepare(void) {
  kvbm_registry *reg;
  MUST(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg));
  prep_policy p;
  memset(&p, 0, sizeof p);
  p.newest_first = 1; /* not the fallback order: the answer shows */
  kvbm_policy pol;
  kvbm_manager *m = prep_pool(reg, 4, &p, &pol, 1, 100);
  kvbm_block mb[4];
  kvbm_hash ev[4];

  ok(p.b.calls == 0 && p.asked == 0, "deferred: nothing is delivered by the core itself");
  ok(kvbm_policy_prepare(m, 2) == 2 && p.asked == 1 && p.b.calls == 1,
     "prepare delivers the notifications, then asks for the 2 victims");
  ok(CORE(kvbm_allocate(m, 2, mb, ev)) == 2 && same(ev[0], H(0, 103)) && same(ev[1], H(0, 102)),
     "the allocation evicts the prepared answer, in its order");
  ok(p.inside == 0 && p.asked == 1 && policy_errors(m) == 0 && healthy(m),
     "no callback ran inside kvbm_allocate; no policy error");
  MUST(kvbm_release(m, mb[0]));
  MUST(kvbm_release(m, mb[1]));
  ok(kvbm_policy_prepare(m, 2) == 0 && p.asked == 1, "the reset pool covers 2 blocks: no victim asked for");
  ok(kvbm_policy_prepare(m, 5) == 0 && p.asked == 1, "an allocation that would fail asks for none either");

  /* stale: the host hits the prepared victim before allocating */
  ok(kvbm_policy_prepare(m, 3) == 1 && p.asked == 2, "one victim (the newest, H(0, 101))");
  kvbm_block hit;
  ok(CORE(kvbm_match(m, (kvbm_hash[]){H(0, 101)}, 1, &hit)) == 1, "then the host hits it");
  uint64_t before = policy_errors(m);
  ok(CORE(kvbm_allocate(m, 3, mb, ev)) == 1 && same(ev[0], H(0, 100)),
     "the stale entry is replaced by the built-in order");
  ok(policy_errors(m) == before + 1 && p.inside == 0 && healthy(m), "and counts one error, no callback inside");
  for (int i = 0; i < 3; i++) MUST(kvbm_release(m, mb[i]));
  MUST(kvbm_release(m, hit));

  /* missing: a deferred policy never runs inside the core, even unprepared */
  before = policy_errors(m);
  int asked = p.asked;
  size_t reset = kvbm_manager_reset(m);
  ok(CORE(kvbm_allocate(m, reset + 1, mb, ev)) == 1 && p.asked == asked && p.inside == 0,
     "an unprepared eviction calls nothing");
  ok(policy_errors(m) == before + 1 && healthy(m), "it falls back to insertion order and counts an error");
  for (size_t i = 0; i <= reset; i++) MUST(kvbm_release(m, mb[i]));
  kvbm_manager_free(m);

  /* prepared for more than the allocation took: the rest goes back to the policy */
  memset(&p, 0, sizeof p);
  m = prep_pool(reg, 4, &p, &pol, 1, 200);
  MUST(kvbm_policy_flush(m));
  p.b.log[0] = '\0';
  ok(kvbm_policy_prepare(m, 2) == 2 && p.b.nlru == 2, "two victims prepared (H(0, 200), H(0, 201))");
  ok(CORE(kvbm_allocate(m, 1, mb, ev)) == 1 && same(ev[0], H(0, 200)), "an allocation of one takes the first");
  MUST(kvbm_policy_flush(m));
  ok(strcmp(p.b.log, "insert@0") == 0 && p.b.nlru == 3 && p.b.lru[2] == 1,
     "the unused victim is announced again (%s)", p.b.log);
  ok(policy_errors(m) == 0 && p.inside == 0 && healthy(m), "no error, no callback inside");
  MUST(kvbm_release(m, mb[0]));
  kvbm_manager_free(m);

  /* re-entry from a callback */
  memset(&p, 0, sizeof p);
  m = prep_pool(reg, 2, &p, &pol, 1, 300);
  p.reenter = 1;
  ok(kvbm_policy_prepare(m, 1) == 1 && p.reenter_rc[0] == KVBM_EBUSY && p.reenter_rc[1] == KVBM_EBUSY,
     "prepare and flush from inside victims() refuse with KVBM_EBUSY");
  p.reenter = 0;
  ok(CORE(kvbm_allocate(m, 1, mb, ev)) == 1 && same(ev[0], H(0, 300)) && policy_errors(m) == 0,
     "the outer answer is used");
  MUST(kvbm_release(m, mb[0]));
  ok(kvbm_policy_prepare(m, SIZE_MAX) == 1 && CORE(kvbm_reset_inactive(m)) == 0 && policy_errors(m) == 0 &&
         p.b.nlru == 0 && p.inside == 0,
     "SIZE_MAX prepares kvbm_reset_inactive: every inactive block, no error");
  kvbm_manager_free(m);

  /* an inline policy (not deferred): today's calls when nothing was prepared */
  memset(&p, 0, sizeof p);
  m = prep_pool(reg, 2, &p, &pol, 0, 400);
  ok(CORE(kvbm_allocate(m, 1, mb, ev)) == 1 && p.asked == 1 && p.inside == 2,
     "unprepared: on_events and victims() run inside kvbm_allocate");
  MUST(kvbm_release(m, mb[0]));
  p.inside = 0;
  ok(kvbm_policy_prepare(m, 2) == 1 && CORE(kvbm_allocate(m, 2, mb, ev)) == 1 && p.asked == 2 && p.inside == 0,
     "prepared: nothing runs inside");
  ok(policy_errors(m) == 0 && healthy(m), "no error");
  kvbm_manager_free(m);

  /* configuration, and the other backends */
  kvbm_policy bad = {.victims = prep_victims, .ud = &p, .deferred = 1};
  kvbm_manager_config cfg = {.block_count = 2, .block_size = 4, .registry = reg,
                             .backend = KVBM_BACKEND_POLICY, .policy = &bad};
  char msg[160];
  ok(kvbm_manager_config_check(&cfg, msg, sizeof msg) == KVBM_ECONFIG && strstr(msg, "on_events"),
     "a deferred policy needs on_events: %s", msg);
  m = make(reg, 2, KVBM_BACKEND_LRU, 0);
  ok(kvbm_policy_prepare(m, 2) == 0 && kvbm_policy_flush(m) == 0, "a built-in backend: nothing to prepare");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

int main(void) {
  test_lifecycle();
  test_policy_events();
  test_policy_prepare();
  test_reject();
  test_config();
  test_unbalanced_release();
  test_over_released_primary();
  test_allocation_failure();
  test_failed_new_touches_nothing();
  test_random();
  return tap_done();
}
