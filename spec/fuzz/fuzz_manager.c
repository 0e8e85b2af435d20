/* fuzz_manager.c - operation sequences over the C manager API: two managers
 * (a G1 and a G2 tier) on one registry, every backend, and a custom policy
 * whose answers come from the input (unknown, repeated and out-of-range ids,
 * too many or too few, failures). Handles are kept in one pool whatever
 * their state, so calls also get stale handles, handles of the other
 * manager, KVBM_NO_BLOCK and made-up slots. After every operation both
 * managers pass kvbm_manager_check and the policy's view of the inactive
 * set matches the manager's. The registry references this target takes
 * (acquire, downgrade) are balanced: misuse there is a documented contract
 * of its own, not input. */
#include <string.h>

#include "fuzz.h"
#include "internal.h"

#define POOL 64
#define MAXN 24 /* blocks per manager */
#define NHASH 64

typedef struct {
  fuzz_in *in;
  kvbm_manager *m; /* set once the manager exists */
  uint8_t inactive[MAXN];
  kvbm_hash hash[MAXN];
  size_t count;
} test_policy;

/* The contract (lua/kvbm/policy/lru.lua): evictions are not reported, so
 * the policy may still hold an id the engine evicted, and an on_insert of an
 * id it holds means "cached again". What must hold: on_remove only follows
 * an on_insert of that id, with its hash, and every block the manager has
 * cached is one the policy was told about. */
static int pol_insert(void *ud, uint32_t id, kvbm_hash h) {
  test_policy *p = ud;
  FUZZ_CHECK(id < MAXN, "on_insert(%u) beyond the pool", id);
  p->count += !p->inactive[id];
  p->inactive[id] = 1;
  p->hash[id] = h;
  return fuzz_u8(p->in) == 0xee ? -1 : 0;
}

static int pol_remove(void *ud, uint32_t id, kvbm_hash h) {
  test_policy *p = ud;
  FUZZ_CHECK(id < MAXN && p->inactive[id], "on_remove(%u) of a block not inactive", id);
  FUZZ_CHECK(p->hash[id].hi == h.hi && p->hash[id].lo == h.lo, "on_remove(%u) with another hash", id);
  p->inactive[id] = 0;
  p->count--;
  return fuzz_u8(p->in) == 0xee ? -1 : 0;
}

/* the adversary: each answer is an inactive id, a repeat, or junk */
static int pol_victims(void *ud, size_t n, uint32_t *out) {
  test_policy *p = ud;
  uint8_t mode = fuzz_u8(p->in);
  if (mode == 0xff) return -1;
  size_t k = 0;
  for (uint32_t id = 0; id < MAXN && k < n; id++) {
    uint8_t b = fuzz_u8(p->in);
    if (b < 0xc0 && p->inactive[(id + mode) % MAXN]) out[k++] = (id + mode) % MAXN;
    else if (b == 0xf0 && k) {
      out[k] = out[k - 1];
      k++;
    }
    else if (b == 0xf1) out[k++] = UINT32_MAX - b;
    else if (b == 0xf2) out[k++] = MAXN + b;
  }
  uint8_t lie = fuzz_u8(p->in);
  if (lie == 0xfe) return (int)n + 5;  /* claims more than asked */
  if (lie == 0xfd && k) return (int)k - 1;
  return (int)k;
}

typedef struct {
  kvbm_registry *reg;
  kvbm_manager *m[2];
  test_policy pol[2];
  kvbm_policy policy[2];
  kvbm_block pool[POOL];
  size_t np;
  kvbm_weak weak[POOL];
  size_t nweak;
  kvbm_hash acquired[POOL];
  size_t nacq;
  kvbm_hash hashes[NHASH];
} world;

static void add(world *w, fuzz_in *in, kvbm_block b) {
  if (w->np < POOL) w->pool[w->np++] = b;
  else w->pool[fuzz_u8(in) % POOL] = b;
}

static kvbm_block pick(world *w, fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  if (b == 0xff) return KVBM_NO_BLOCK;
  if (b == 0xfe) return ((uint64_t)fuzz_u32(in) << 32) | (MAXN + fuzz_u8(in)); /* beyond the pool */
  if (b == 0xfd) return fuzz_u64(in);
  return w->np ? w->pool[b % w->np] : KVBM_NO_BLOCK;
}

static kvbm_hash pick_hash(world *w, fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  if (b == 0xff) return (kvbm_hash){UINT64_C(3) << 62 | fuzz_u32(in), fuzz_u64(in)}; /* malformed */
  return w->hashes[b % NHASH];
}

static void check(world *w) {
  for (int i = 0; i < 2; i++) {
    char msg[256];
    size_t counts[6];
    kvbm_manager *m = w->m[i];
    FUZZ_CHECK(kvbm_manager_check(m, counts, msg, sizeof msg) == 0, "manager %d: %s", i, msg);
    FUZZ_CHECK(counts[KVBM_STATE_RESET] == kvbm_manager_reset(m) &&
                   counts[KVBM_STATE_INACTIVE] == kvbm_manager_inactive(m) &&
                   kvbm_manager_available(m) <= kvbm_manager_total(m),
               "manager %d: pool sizes", i);
    if (w->policy[i].victims)
      FUZZ_CHECK(w->pol[i].count >= kvbm_manager_inactive(m), "manager %d: the policy knows %zu inactive, the manager has %zu",
                 i, w->pol[i].count, kvbm_manager_inactive(m));
  }
}

static kvbm_manager *make(world *w, fuzz_in *in, int i) {
  static const uint32_t sizes[] = {1, 2, 4, 16};
  kvbm_backend backend = (kvbm_backend)(fuzz_u8(in) % (KVBM_BACKEND_POLICY + 1)); /* every one */
  w->pol[i] = (test_policy){.in = in};
  w->policy[i] = (kvbm_policy){.on_insert = pol_insert, .on_remove = pol_remove, .victims = pol_victims,
                               .ud = &w->pol[i]};
  if (backend != KVBM_BACKEND_POLICY) w->policy[i] = (kvbm_policy){0};
  uint8_t flags = fuzz_u8(in);
  kvbm_manager_config cfg = {
      .block_count = 1 + fuzz_u8(in) % MAXN,
      .block_size = sizes[(flags >> 4) & 3],
      .registry = w->reg,
      .backend = backend,
      .thresholds = {0, 0, 0},
      .reject_duplicates = i == 1 ? 1 : flags & 1,
      .reset_on_release = (flags >> 1) & 1,
      .policy = backend == KVBM_BACKEND_POLICY ? &w->policy[i] : NULL,
  };
  if (backend == KVBM_BACKEND_MULTI_LRU && (flags & 4)) {
    cfg.thresholds[0] = fuzz_u8(in) % 16;
    cfg.thresholds[1] = fuzz_u8(in) % 16;
    cfg.thresholds[2] = fuzz_u8(in) % 16;
  }
  kvbm_manager *m = NULL;
  char msg[200];
  int ok = kvbm_manager_config_check(&cfg, msg, sizeof msg);
  int rc = kvbm_manager_new(&cfg, &m);
  FUZZ_CHECK((ok == 0) == (rc == 0), "config_check %d but manager_new %d", ok, rc);
  if (rc < 0) {
    cfg.backend = KVBM_BACKEND_LRU; /* e.g. multi-LRU without a tracker, bad thresholds */
    cfg.policy = NULL;
    memset(cfg.thresholds, 0, sizeof cfg.thresholds); /* checked for every backend */
    w->policy[i] = (kvbm_policy){0};
    FUZZ_CHECK(kvbm_manager_new(&cfg, &m) == 0, "fallback manager");
  }
  w->pol[i].m = m;
  return m;
}

static void step(world *w, fuzz_in *in) {
  kvbm_manager *m = w->m[fuzz_u8(in) & 1];
  kvbm_block out[MAXN + 4] = {0}, b, nb;
  kvbm_hash hs[MAXN + 4] = {{0, 0}}, h;
  size_t n;
  int rc;
  switch (fuzz_u8(in) % 20) {
  case 0: /* allocate: all or nothing; odd counts prepared first, some for one block less
           * (no input byte decides it: the corpus keeps its meaning) */
    n = fuzz_u8(in) % (MAXN + 2);
    if (n & 1) (void)kvbm_policy_prepare(m, n % 4 == 3 ? n - 1 : n);
    rc = kvbm_allocate(m, n, out, fuzz_u8(in) & 1 ? hs : NULL);
    if (n > kvbm_manager_total(m)) FUZZ_CHECK(rc == KVBM_ENOSPC, "allocate %zu of %zu: %d", n, kvbm_manager_total(m), rc);
    if (rc >= 0)
      for (size_t i = 0; i < n; i++) add(w, in, out[i]);
    break;
  case 1: { /* stage, sometimes with the wrong block size */
    size_t bs = kvbm_manager_block_size(m) << (fuzz_u8(in) == 0xff);
    b = pick(w, in);
    if (kvbm_stage(m, b, pick_hash(w, in), bs, &nb) == 0) add(w, in, nb);
    break;
  }
  case 2:
    if (kvbm_complete_reset(m, pick(w, in), &nb) == 0) add(w, in, nb);
    break;
  case 3:
    if (kvbm_register(m, pick(w, in), &nb) == 0) add(w, in, nb);
    break;
  case 4: /* register_all: a mix, with repeats and junk among the staged */
    n = fuzz_u8(in) % (MAXN + 4);
    for (size_t i = 0; i < n; i++) out[i] = pick(w, in);
    {
      kvbm_block ibs[MAXN + 4];
      if (kvbm_register_all(m, out, n, ibs) >= 0)
        for (size_t i = 0; i < n; i++) add(w, in, ibs[i]);
    }
    break;
  case 5:
  case 6:
    (void)kvbm_release(m, pick(w, in));
    break;
  case 7:
    b = pick(w, in);
    if (kvbm_block_retain(m, b) == 0) add(w, in, b);
    break;
  case 8:
  case 9: { /* match / match_scattered / scan / match_count over a run of hashes */
    uint8_t start = fuzz_u8(in), kind = fuzz_u8(in) % 4;
    n = fuzz_u8(in) % (MAXN + 4);
    for (size_t i = 0; i < n; i++) hs[i] = fuzz_u8(in) < 0xf0 ? w->hashes[(start + i) % NHASH] : pick_hash(w, in);
    size_t want = kvbm_match_count(m, hs, n), got;
    if (kind == 0) {
      got = kvbm_match(m, hs, n, out);
      FUZZ_CHECK(got == want, "match %zu, match_count %zu", got, want);
      for (size_t i = 0; i < got; i++) add(w, in, out[i]);
    } else {
      got = kind == 1 ? kvbm_match_scattered(m, hs, n, out) : kvbm_scan(m, hs, n, kind == 3, out);
      size_t hits = 0;
      for (size_t i = 0; i < n; i++) {
        hits += out[i] != KVBM_NO_BLOCK;
        add(w, in, out[i]); /* misses too: KVBM_NO_BLOCK is a handle callers get */
      }
      FUZZ_CHECK(hits == got && got >= want, "%zu hits, %zu counted, prefix %zu", hits, got, want);
    }
    break;
  }
  case 10: /* downgrade, then the weak reference is kept */
    if (w->nweak < POOL && kvbm_downgrade(m, pick(w, in), &w->weak[w->nweak]) == 0) w->nweak++;
    break;
  case 11:
    if (w->nweak) {
      rc = kvbm_weak_upgrade(m, &w->weak[fuzz_u8(in) % w->nweak], &nb);
      FUZZ_CHECK(rc == 0 || rc == 1, "weak_upgrade %d", rc);
      if (rc == 1) add(w, in, nb);
    }
    break;
  case 12:
    if (w->nweak) {
      size_t i = fuzz_u8(in) % w->nweak;
      (void)kvbm_weak_release(m, &w->weak[i]);
      w->weak[i] = w->weak[--w->nweak];
    }
    break;
  case 13:
    h = pick_hash(w, in);
    rc = kvbm_registry_acquire(w->reg, h);
    FUZZ_CHECK(rc == 0 || (rc == KVBM_EBAD_HASH && !kvbm_hash_valid(h)), "acquire %d", rc);
    FUZZ_CHECK(rc < 0 || kvbm_registry_is_registered(w->reg, h), "acquired but not registered");
    if (rc == 0 && w->nacq < POOL) w->acquired[w->nacq++] = h;
    else if (rc == 0) (void)kvbm_registry_unacquire(w->reg, h);
    break;
  case 14:
    if (w->nacq) {
      size_t i = fuzz_u8(in) % w->nacq;
      (void)kvbm_registry_unacquire(w->reg, w->acquired[i]);
      w->acquired[i] = w->acquired[--w->nacq];
    }
    break;
  case 15:
    if (kvbm_manager_inactive(m) & 1) (void)kvbm_policy_prepare(m, SIZE_MAX);
    rc = kvbm_reset_inactive(m);
    FUZZ_CHECK(rc == 0 || rc == KVBM_ERESET_MISMATCH, "reset_inactive %d", rc);
    FUZZ_CHECK(kvbm_manager_inactive(m) == 0, "inactive blocks after reset_inactive");
    break;
  case 16:
    (void)kvbm_block_set_reset_on_release(m, pick(w, in), fuzz_u8(in) & 1);
    break;
  case 17: { /* queries agree with each other */
    b = pick(w, in);
    int st = kvbm_block_state(m, b), uc = kvbm_block_use_count(m, b);
    int hr = kvbm_block_hash_of(m, b, &h), ch = kvbm_complete_hash(m, b, &h);
    /* a made-up handle may name a reset or inactive slot's current state */
    FUZZ_CHECK(st < 0 ? st == KVBM_ESTALE : st <= KVBM_STATE_INACTIVE, "state %d of a handle", st);
    int immutable = st == KVBM_STATE_PRIMARY || st == KVBM_STATE_DUPLICATE;
    FUZZ_CHECK((immutable || st == KVBM_STATE_STAGED) == (hr == 0) && immutable == (uc >= 1),
               "state %d, hash_of %d, use_count %d", st, hr, uc);
    FUZZ_CHECK((st == KVBM_STATE_STAGED) == (ch == 0), "state %d, complete_hash %d", st, ch);
    break;
  }
  case 18: { /* registry queries and the frequency tracker */
    h = pick_hash(w, in);
    kvbm_registry_touch(w->reg, h);
    FUZZ_CHECK(kvbm_registry_frequency(w->reg, h) <= 15, "frequency");
    (void)kvbm_registry_present(w->reg, h, fuzz_u8(in));
    (void)kvbm_registry_bytes(w->reg);
    (void)kvbm_manager_bytes(m);
    kvbm_metrics mt;
    kvbm_manager_metrics(m, &mt);
    FUZZ_CHECK(mt.reset_pool_size == (int64_t)kvbm_manager_reset(m) &&
                   mt.inactive_pool_size == (int64_t)kvbm_manager_inactive(m),
               "metrics gauges");
    break;
  }
  default: /* a made-up handle into the pool */
    add(w, in, pick(w, in) ^ ((uint64_t)(fuzz_u8(in) & 3) << 32));
    break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size, 0};
  static world w;
  memset(&w, 0, sizeof w);
  uint8_t freq = fuzz_u8(&in) & 1;
  if (kvbm_registry_new(NULL, freq ? KVBM_FREQUENCY_SMALL : KVBM_FREQUENCY_NONE, &w.reg) < 0) return 0;
  for (size_t i = 0; i < NHASH; i++) { /* 8 chains of 8 positions; one near the limit */
    uint64_t pos = i % 8, chain = i / 8;
    if (chain == 7) pos += KVBM_MAX_POSITION - 7;
    (void)kvbm_hash_new(chain * 1000 + pos, pos > 0, chain * 1000 + pos - 1, pos, &w.hashes[i]);
  }
  w.m[0] = make(&w, &in, 0);
  w.m[1] = make(&w, &in, 1);
  FUZZ_CHECK(kvbm_manager_tier(w.m[0]) != kvbm_manager_tier(w.m[1]), "two managers, one tier");
  check(&w);
  for (int steps = 0; fuzz_more(&in) && steps < 400; steps++) {
    step(&w, &in);
    check(&w);
  }
  while (w.nweak) (void)kvbm_weak_release(w.m[0], &w.weak[--w.nweak]);
  while (w.nacq) (void)kvbm_registry_unacquire(w.reg, w.acquired[--w.nacq]);
  kvbm_manager_free(w.m[0]);
  kvbm_manager_free(w.m[1]);
  FUZZ_CHECK(kvbm_registry_count(w.reg) == 0, "%zu registrations outlive their managers", kvbm_registry_count(w.reg));
  kvbm_registry_release(w.reg);
  return 0;
}
