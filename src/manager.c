/* manager.c - the block store of one tier: slots, the reset pool, the
 * inactive index, and every state transition of kvbm-logical's BlockStore
 * (E3), single-threaded.
 *
 * Slots are parallel arrays indexed by block id. A handle carries the slot's
 * generation, bumped on every transition, so a handle names exactly one
 * state of one slot and goes stale when that state ends. */
#include <stdatomic.h>
#include <stdio.h>

#include "backend.h"
#include "registry.h"

#define NONE KVBM__NONE
#define BIT(state) (1u << (state))
#define IMMUTABLE (BIT(KVBM_STATE_PRIMARY) | BIT(KVBM_STATE_DUPLICATE))
#define SEEN 7 /* a staged slot already met in this register_all batch */

struct kvbm_manager {
  kvbm_allocator alloc;
  kvbm_registry *reg;
  unsigned tier;
  char name[32];
  uint32_t total, block_size;
  int reject_duplicates, default_reset;
  kvbm__backend *backend;
  /* per slot */
  uint8_t *state, *reset_on_release;
  uint32_t *gen;    /* handle generation */
  uint32_t *refs;   /* references to the current immutable block */
  uint32_t *entry;  /* registry entry (primary, duplicate, inactive) */
  uint32_t *dup_of; /* a duplicate keeps this primary alive */
  uint32_t *kept;   /* of a primary's refs, how many are its duplicates' keepalives */
  kvbm_hash *staged;
  /* reset pool: a FIFO ring of block ids */
  uint32_t *ring, ring_head, ring_len;
  uint32_t *scratch; /* eviction victims */
  kvbm_metrics metrics;
};

/* ------------------------------------------------------------ helpers */

/* Numbers the managers created without a name ("pool0", "pool1", ...). */
static atomic_uint unnamed_pools;

static kvbm_block handle(const kvbm_manager *m, uint32_t s) {
  return ((uint64_t)m->gen[s] << 32) | s;
}

static void set_state(kvbm_manager *m, uint32_t s, unsigned state) {
  m->state[s] = (uint8_t)state;
  m->gen[s]++;
}

static int slot_of(const kvbm_manager *m, kvbm_block b, unsigned states, uint32_t *slot) {
  uint32_t s = (uint32_t)b;
  if (s >= m->total || m->gen[s] != (uint32_t)(b >> 32)) return KVBM_ESTALE;
  if (!(states & BIT(m->state[s]))) return KVBM_ESTATE;
  *slot = s;
  return 0;
}

static kvbm__entry *entry_at(const kvbm_manager *m, uint32_t e) { return &m->reg->entries[e]; }

static void push_reset(kvbm_manager *m, uint32_t s) {
  uint32_t at = m->ring_head + m->ring_len;
  if (at >= m->total) at -= m->total;
  m->ring[at] = s;
  m->ring_len++;
  set_state(m, s, KVBM_STATE_RESET);
}

static uint32_t pop_reset(kvbm_manager *m) {
  uint32_t s = m->ring[m->ring_head];
  if (++m->ring_head == m->total) m->ring_head = 0;
  m->ring_len--;
  return s;
}

/* A registered slot (primary, duplicate or inactive) lets go of its hash. */
static void forget_hash(kvbm_manager *m, uint32_t s) {
  uint32_t e = m->entry[s];
  kvbm__entry *en = entry_at(m, e);
  if (en->slot[m->tier] == s) en->slot[m->tier] = NONE;
  en->presence[m->tier]--;
  m->entry[s] = NONE;
  kvbm__registry_unref(m->reg, e); /* may fire on_remove: last */
}

/* The live immutable block for entry e in this tier, resurrecting an
 * inactive one; KVBM_NO_BLOCK when this tier does not hold the hash. */
static kvbm_block acquire(kvbm_manager *m, uint32_t e) {
  uint32_t s = entry_at(m, e)->slot[m->tier];
  if (s == NONE) return KVBM_NO_BLOCK;
  if (m->state[s] == KVBM_STATE_PRIMARY) {
    m->refs[s]++;
    return handle(m, s);
  }
  m->backend->ops->remove(m->backend, s); /* inactive: a cache hit */
  set_state(m, s, KVBM_STATE_PRIMARY);
  m->refs[s] = 1;
  return handle(m, s);
}

/* A lookup found no block for h here: policies with history want to know. */
static void missed(kvbm_manager *m, kvbm_hash h) {
  if (m->backend->ops->miss) m->backend->ops->miss(m->backend, h);
}

/* Drops one reference; the last one ends the immutable block: a duplicate
 * resets (and lets go of its primary), a primary goes to the inactive cache
 * or, with reset-on-release, to the reset pool. */
static int drop_ref(kvbm_manager *m, uint32_t s) {
  uint32_t from_dup = 0;
  int went_inactive = 0;
  while (s != NONE) {
    m->kept[s] -= from_dup;
    if (--m->refs[s]) break;
    uint32_t next = NONE;
    from_dup = m->state[s] == KVBM_STATE_DUPLICATE;
    if (from_dup) {
      next = m->dup_of[s];
      forget_hash(m, s);
      push_reset(m, s);
    } else if (m->reset_on_release[s]) {
      forget_hash(m, s);
      push_reset(m, s);
    } else {
      set_state(m, s, KVBM_STATE_INACTIVE);
      m->backend->ops->insert(m->backend, s, entry_at(m, m->entry[s])->hash);
      went_inactive = 1;
    }
    s = next;
  }
  return went_inactive;
}

/* Whether the caller may drop a reference of immutable slot s: a primary's
 * duplicates hold references of their own (keepalives), and a handle
 * released once too often must not take one of those, or the primary would
 * end while its duplicates live. */
static int caller_holds(const kvbm_manager *m, uint32_t s) {
  return m->refs[s] > m->kept[s];
}

/* Inactive -> Mutable (an eviction): the slot forgets its hash. */
static void evict_slot(kvbm_manager *m, uint32_t s) {
  forget_hash(m, s);
  set_state(m, s, KVBM_STATE_MUTABLE);
  m->reset_on_release[s] = (uint8_t)m->default_reset;
}

/* ------------------------------------------------------ construction */

int kvbm_manager_config_check(const kvbm_manager_config *cfg, char *msg, size_t size) {
  char buf[160];
  const uint8_t *t = cfg->thresholds;
  uint32_t bs = cfg->block_size ? cfg->block_size : 16;
  buf[0] = '\0';
  if (!cfg->registry)
    snprintf(buf, sizeof buf, "registry is required");
  else if (cfg->block_count == 0)
    snprintf(buf, sizeof buf, "block_count must be greater than 0");
  else if (bs > 1024 || (bs & (bs - 1)))
    snprintf(buf, sizeof buf, "Invalid block_size %u: must be a power of 2 between 1 and 1024",
             (unsigned)bs);
  else if (cfg->backend > KVBM_BACKEND_POLICY)
    snprintf(buf, sizeof buf, "Invalid backend configuration: unknown backend %d", (int)cfg->backend);
  else if (cfg->backend == KVBM_BACKEND_POLICY && (!cfg->policy || !cfg->policy->victims))
    snprintf(buf, sizeof buf, "Invalid backend configuration: a policy backend needs victims()");
  else if (cfg->backend == KVBM_BACKEND_POLICY && cfg->policy->deferred && !cfg->policy->on_events)
    snprintf(buf, sizeof buf, "Invalid backend configuration: a deferred policy needs on_events()");
  else if (t[0] | t[1] | t[2]) { /* the checks and messages of the crate's thresholds setter */
    if (!(t[0] < t[1] && t[1] < t[2]))
      snprintf(buf, sizeof buf, "Thresholds must be in ascending order: %u < %u < %u failed",
               t[0], t[1], t[2]);
    else if (t[2] > 15)
      snprintf(buf, sizeof buf,
               "hot_to_very_hot threshold (%u) must be <= 15 (4-bit counter maximum)", t[2]);
    else if (t[0] < 1)
      snprintf(buf, sizeof buf,
               "cold_to_warm threshold must be >= 1 to distinguish from zero-access blocks");
  }
  if (!buf[0] && cfg->backend == KVBM_BACKEND_MULTI_LRU && cfg->registry && !cfg->registry->tracker)
    snprintf(buf, sizeof buf, "MultiLRU backend requires a registry with frequency tracking");
  if (!buf[0]) return 0;
  if (msg && size) snprintf(msg, size, "%s", buf);
  return KVBM_ECONFIG;
}

static uint32_t frequency_of(void *ud, kvbm_hash h) {
  return kvbm_registry_frequency((const kvbm_registry *)ud, h);
}

static size_t slot_bytes(void) {
  return 2 * sizeof(uint8_t) + 6 * sizeof(uint32_t) + sizeof(kvbm_hash) + 2 * sizeof(uint32_t);
}

/* Frees what kvbm_manager_new allocated, touching none of the per-slot
 * arrays: a construction that failed part-way must stay O(1) (the arrays of
 * 2^30 slots are gigabytes the allocator never had to commit). */
static void destroy(kvbm_manager *m) {
  if (m->backend) m->backend->ops->destroy(m->backend);
  kvbm_allocator a = m->alloc;
  size_t n = m->total;
  kvbm__free(&a, m->state, n);
  kvbm__free(&a, m->reset_on_release, n);
  kvbm__free(&a, m->gen, n * sizeof *m->gen);
  kvbm__free(&a, m->refs, n * sizeof *m->refs);
  kvbm__free(&a, m->entry, n * sizeof *m->entry);
  kvbm__free(&a, m->dup_of, n * sizeof *m->dup_of);
  kvbm__free(&a, m->kept, n * sizeof *m->kept);
  kvbm__free(&a, m->staged, n * sizeof *m->staged);
  kvbm__free(&a, m->ring, n * sizeof *m->ring);
  kvbm__free(&a, m->scratch, n * sizeof *m->scratch);
  if (m->reg) kvbm__registry_drop_tier(m->reg, m->tier);
  kvbm__free(&a, m, sizeof *m);
}

void kvbm_manager_free(kvbm_manager *m) {
  if (!m) return;
  for (uint32_t s = 0; s < m->total; s++)
    if (m->entry[s] != NONE) forget_hash(m, s);
  destroy(m);
}

static kvbm__backend *make_backend(kvbm_manager *m, const kvbm_manager_config *cfg) {
  static const uint8_t default_thresholds[3] = {3, 8, 15};
  switch (cfg->backend) {
    case KVBM_BACKEND_LINEAGE: return kvbm__lineage_new(&m->alloc, m->total, 0);
    case KVBM_BACKEND_LINEAGE_FIFO: return kvbm__lineage_new(&m->alloc, m->total, 1);
    case KVBM_BACKEND_LRU:
    case KVBM_BACKEND_HASHMAP: return kvbm__fifo_new(&m->alloc, m->total);
    case KVBM_BACKEND_MULTI_LRU: {
      const uint8_t *t = cfg->thresholds;
      return kvbm__multi_lru_new(&m->alloc, m->total, (t[0] | t[1] | t[2]) ? t : default_thresholds,
                                 frequency_of, m->reg);
    }
    case KVBM_BACKEND_S3FIFO: return kvbm__s3fifo_new(&m->alloc, m->total);
    case KVBM_BACKEND_SIEVE: return kvbm__sieve_new(&m->alloc, m->total);
    case KVBM_BACKEND_ARC: return kvbm__arc_new(&m->alloc, m->total);
    case KVBM_BACKEND_SLRU: return kvbm__slru_new(&m->alloc, m->total);
    case KVBM_BACKEND_DEPTH: return kvbm__depth_new(&m->alloc, m->total);
    case KVBM_BACKEND_BIP: return kvbm__bip_new(&m->alloc, m->total);
    case KVBM_BACKEND_OPTIMAL: return kvbm__optimal_new(&m->alloc, m->total);
    case KVBM_BACKEND_POLICY:
      return kvbm__policy_new(&m->alloc, m->total, cfg->policy, &m->metrics.policy_errors);
  }
  return NULL;
}

int kvbm_manager_new(const kvbm_manager_config *cfg, kvbm_manager **out) {
  int rc = kvbm_manager_config_check(cfg, NULL, 0);
  if (rc) return rc;
  kvbm_allocator a = cfg->alloc ? *cfg->alloc : cfg->registry->alloc;
  kvbm_manager *m = kvbm__realloc(&a, NULL, 0, sizeof *m);
  if (!m) return KVBM_ENOMEM;
  memset(m, 0, sizeof *m);
  m->alloc = a;
  m->total = cfg->block_count;
  m->block_size = cfg->block_size ? cfg->block_size : 16;
  m->reject_duplicates = cfg->reject_duplicates != 0;
  m->default_reset = cfg->reset_on_release != 0;
  rc = kvbm__registry_take_tier(cfg->registry);
  if (rc < 0) {
    kvbm__free(&a, m, sizeof *m);
    return rc;
  }
  m->tier = (unsigned)rc;
  m->reg = cfg->registry;
  if (cfg->name)
    snprintf(m->name, sizeof m->name, "%s", cfg->name);
  else /* distinct in the process, so that metrics of unnamed pools never collide */
    snprintf(m->name, sizeof m->name, "pool%u", atomic_fetch_add(&unnamed_pools, 1u));

  size_t n = m->total;
  m->state = kvbm__realloc(&a, NULL, 0, n);
  m->reset_on_release = kvbm__realloc(&a, NULL, 0, n);
  m->gen = kvbm__realloc(&a, NULL, 0, n * sizeof *m->gen);
  m->refs = kvbm__realloc(&a, NULL, 0, n * sizeof *m->refs);
  m->entry = kvbm__realloc(&a, NULL, 0, n * sizeof *m->entry);
  m->dup_of = kvbm__realloc(&a, NULL, 0, n * sizeof *m->dup_of);
  m->kept = kvbm__realloc(&a, NULL, 0, n * sizeof *m->kept);
  m->staged = kvbm__realloc(&a, NULL, 0, n * sizeof *m->staged);
  m->ring = kvbm__realloc(&a, NULL, 0, n * sizeof *m->ring);
  m->scratch = kvbm__realloc(&a, NULL, 0, n * sizeof *m->scratch);
  if (!m->state || !m->reset_on_release || !m->gen || !m->refs || !m->entry || !m->dup_of ||
      !m->kept || !m->staged || !m->ring || !m->scratch || !(m->backend = make_backend(m, cfg)) ||
      kvbm__registry_reserve(m->reg, n)) {
    destroy(m); /* no slot holds a hash yet: nothing to forget */
    return KVBM_ENOMEM;
  }
  for (uint32_t s = 0; s < n; s++) {
    m->state[s] = KVBM_STATE_RESET;
    m->reset_on_release[s] = (uint8_t)m->default_reset;
    m->gen[s] = 1;
    m->refs[s] = 0;
    m->entry[s] = NONE;
    m->dup_of[s] = NONE;
    m->kept[s] = 0;
    m->ring[s] = s;
  }
  m->ring_len = (uint32_t)n;
  *out = m;
  return 0;
}

/* --------------------------------------------------------- accessors */

unsigned kvbm_manager_tier(const kvbm_manager *m) { return m->tier; }
const char *kvbm_manager_name(const kvbm_manager *m) { return m->name; }
kvbm_registry *kvbm_manager_registry(const kvbm_manager *m) { return m->reg; }
size_t kvbm_manager_total(const kvbm_manager *m) { return m->total; }
size_t kvbm_manager_available(const kvbm_manager *m) { return m->ring_len + m->backend->len; }
size_t kvbm_manager_block_size(const kvbm_manager *m) { return m->block_size; }
size_t kvbm_manager_inactive(const kvbm_manager *m) { return m->backend->len; }
size_t kvbm_manager_reset(const kvbm_manager *m) { return m->ring_len; }

size_t kvbm_manager_bytes(const kvbm_manager *m) {
  return sizeof *m + (size_t)m->total * slot_bytes() + m->backend->ops->bytes(m->backend);
}

void kvbm_manager_metrics(const kvbm_manager *m, kvbm_metrics *out) {
  *out = m->metrics;
  out->reset_pool_size = m->ring_len;
  out->inactive_pool_size = (int64_t)m->backend->len;
}

/* -------------------------------------------------------- allocation */

int kvbm_allocate(kvbm_manager *m, size_t n, kvbm_block *out, kvbm_hash *evicted) {
  if (n == 0) return 0;
  if (n > (size_t)m->ring_len + m->backend->len) return KVBM_ENOSPC;
  size_t from_reset = n < m->ring_len ? n : m->ring_len, from_inactive = n - from_reset;
  size_t k = from_inactive ? m->backend->ops->evict(m->backend, from_inactive, m->scratch) : 0;
  if (k != from_inactive) { /* a backend that under-delivers: undo, fail */
    for (size_t i = 0; i < k; i++)
      m->backend->ops->insert(m->backend, m->scratch[i], entry_at(m, m->entry[m->scratch[i]])->hash);
    return KVBM_ENOSPC;
  }
  for (size_t i = 0; i < from_reset; i++) {
    uint32_t s = pop_reset(m);
    set_state(m, s, KVBM_STATE_MUTABLE);
    m->reset_on_release[s] = (uint8_t)m->default_reset;
    out[i] = handle(m, s);
  }
  for (size_t i = 0; i < k; i++) {
    uint32_t s = m->scratch[i];
    if (evicted) evicted[i] = entry_at(m, m->entry[s])->hash;
    evict_slot(m, s);
    out[from_reset + i] = handle(m, s);
  }
  m->metrics.allocations += n;
  m->metrics.allocations_from_reset += from_reset;
  m->metrics.evictions += k;
  m->metrics.inflight_mutable += (int64_t)n;
  return (int)k;
}

int kvbm_stage(kvbm_manager *m, kvbm_block mb, kvbm_hash h, size_t block_size, kvbm_block *cb) {
  uint32_t s;
  int rc = slot_of(m, mb, BIT(KVBM_STATE_MUTABLE), &s);
  if (rc) return rc;
  if (!kvbm_hash_valid(h)) return KVBM_EBAD_HASH;
  if (block_size != m->block_size) return KVBM_EBLOCK_SIZE_MISMATCH;
  set_state(m, s, KVBM_STATE_STAGED);
  m->staged[s] = h;
  m->metrics.stagings++;
  m->metrics.inflight_mutable--;
  *cb = handle(m, s);
  return 0;
}

int kvbm_complete_reset(kvbm_manager *m, kvbm_block cb, kvbm_block *mb) {
  uint32_t s;
  int rc = slot_of(m, cb, BIT(KVBM_STATE_STAGED), &s);
  if (rc) return rc;
  set_state(m, s, KVBM_STATE_MUTABLE);
  m->reset_on_release[s] = (uint8_t)m->default_reset;
  m->metrics.inflight_mutable++;
  *mb = handle(m, s);
  return 0;
}

int kvbm_complete_hash(const kvbm_manager *m, kvbm_block cb, kvbm_hash *h) {
  uint32_t s;
  int rc = slot_of(m, cb, BIT(KVBM_STATE_STAGED), &s);
  if (rc == 0) *h = m->staged[s];
  return rc;
}

/* ------------------------------------------------------ registration */

/* Registers staged slot s; the registry has room for one more entry. */
static kvbm_block register_slot(kvbm_manager *m, uint32_t s) {
  kvbm_registry *r = m->reg;
  kvbm_hash h = m->staged[s];
  uint32_t e = kvbm__registry_find(r, h);
  if (e == NONE) e = kvbm__registry_create(r, h);
  r->entries[e].refs++; /* held while the slots change hands */
  kvbm_block existing = acquire(m, e), result;
  if (existing == KVBM_NO_BLOCK) { /* a fresh primary */
    set_state(m, s, KVBM_STATE_PRIMARY);
    r->entries[e].slot[m->tier] = s;
    result = handle(m, s);
    if (m->backend->ops->admit) m->backend->ops->admit(m->backend, s, h);
  } else if (!m->reject_duplicates) { /* Allow: a duplicate keeps the primary alive */
    set_state(m, s, KVBM_STATE_DUPLICATE);
    m->dup_of[s] = (uint32_t)existing;
    m->kept[(uint32_t)existing]++; /* the reference acquire() took */
    m->metrics.duplicate_blocks++;
    result = handle(m, s);
  } else { /* Reject: hand back the primary, return the slot */
    push_reset(m, s);
    m->metrics.registration_dedup++;
    result = existing;
  }
  if (result != existing) {
    m->entry[s] = e;
    m->refs[s] = 1;
    r->entries[e].refs++;
    r->entries[e].presence[m->tier]++;
  }
  kvbm__registry_unref(r, e);
  m->metrics.inflight_immutable++;
  m->metrics.registrations++;
  return result;
}

int kvbm_register(kvbm_manager *m, kvbm_block cb, kvbm_block *ib) {
  return kvbm_register_all(m, &cb, 1, ib);
}

int kvbm_register_all(kvbm_manager *m, const kvbm_block *cbs, size_t n, kvbm_block *ibs) {
  /* validate everything first: on error nothing is consumed */
  size_t i;
  int rc = 0;
  for (i = 0; i < n && rc == 0; i++) {
    uint32_t s = (uint32_t)cbs[i];
    if (s < m->total && m->gen[s] == (uint32_t)(cbs[i] >> 32) && m->state[s] == SEEN)
      rc = KVBM_EINVAL; /* the same block twice */
    else if ((rc = slot_of(m, cbs[i], BIT(KVBM_STATE_STAGED), &s)) == 0)
      m->state[s] = SEEN;
  }
  /* undo the marks of the handles that passed: on error the last one looked
   * at (i - 1) failed and may name a slot out of range (KVBM_NO_BLOCK) */
  size_t marked = rc ? i - 1 : i;
  for (size_t j = 0; j < marked; j++) m->state[(uint32_t)cbs[j]] = KVBM_STATE_STAGED;
  if (rc == 0) rc = kvbm__registry_reserve(m->reg, n);
  if (rc) return rc;
  for (i = 0; i < n; i++) ibs[i] = register_slot(m, (uint32_t)cbs[i]);
  return 0;
}

/* ----------------------------------------------------------- release */

int kvbm_release(kvbm_manager *m, kvbm_block b) {
  uint32_t s;
  int rc = slot_of(m, b, BIT(KVBM_STATE_MUTABLE) | BIT(KVBM_STATE_STAGED) | IMMUTABLE, &s);
  if (rc) return rc;
  if ((BIT(m->state[s]) & IMMUTABLE) && !caller_holds(m, s)) return KVBM_ESTALE;
  switch (m->state[s]) {
    case KVBM_STATE_MUTABLE:
      m->metrics.inflight_mutable--;
      push_reset(m, s);
      break;
    case KVBM_STATE_STAGED:
      push_reset(m, s);
      break;
    default:
      m->metrics.inflight_immutable--;
      (void)drop_ref(m, s);
  }
  return 0;
}

int kvbm_release_all(kvbm_manager *m, const kvbm_block *bs, size_t n, uint32_t *inactive) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t s;
    if (slot_of(m, bs[i], BIT(KVBM_STATE_MUTABLE) | BIT(KVBM_STATE_STAGED) | IMMUTABLE, &s)) continue;
    if ((BIT(m->state[s]) & IMMUTABLE) && !caller_holds(m, s)) continue; /* released already */
    if (m->state[s] == KVBM_STATE_MUTABLE || m->state[s] == KVBM_STATE_STAGED) {
      m->metrics.inflight_mutable -= m->state[s] == KVBM_STATE_MUTABLE;
      push_reset(m, s);
    } else {
      m->metrics.inflight_immutable--;
      if (drop_ref(m, s)) {
        if (inactive) inactive[k] = (uint32_t)i;
        k++;
      }
    }
  }
  return (int)k;
}

int kvbm_block_retain(kvbm_manager *m, kvbm_block ib) {
  uint32_t s;
  int rc = slot_of(m, ib, IMMUTABLE, &s);
  if (rc) return rc;
  m->refs[s]++;
  m->metrics.inflight_immutable++;
  return 0;
}

int kvbm_block_hash_of(const kvbm_manager *m, kvbm_block ib, kvbm_hash *h) {
  uint32_t s;
  int rc = slot_of(m, ib, IMMUTABLE | BIT(KVBM_STATE_STAGED), &s);
  if (rc == 0) *h = m->state[s] == KVBM_STATE_STAGED ? m->staged[s] : entry_at(m, m->entry[s])->hash;
  return rc;
}

int kvbm_block_use_count(const kvbm_manager *m, kvbm_block ib) {
  uint32_t s;
  int rc = slot_of(m, ib, IMMUTABLE, &s);
  return rc ? rc : (int)m->refs[s];
}

int kvbm_block_set_reset_on_release(kvbm_manager *m, kvbm_block ib, int on) {
  uint32_t s;
  int rc = slot_of(m, ib, IMMUTABLE, &s);
  if (rc == 0) m->reset_on_release[s] = on != 0;
  return rc;
}

int kvbm_block_state(const kvbm_manager *m, kvbm_block b) {
  uint32_t s = (uint32_t)b;
  if (s >= m->total || m->gen[s] != (uint32_t)(b >> 32)) return KVBM_ESTALE;
  return m->state[s];
}

/* ------------------------------------------------------ weak blocks */

int kvbm_downgrade(kvbm_manager *m, kvbm_block ib, kvbm_weak *w) {
  uint32_t s;
  int rc = slot_of(m, ib, IMMUTABLE, &s);
  if (rc) return rc;
  kvbm__entry *en = entry_at(m, m->entry[s]);
  en->refs++; /* a weak block keeps the registration */
  en->holds++;
  w->hash = en->hash;
  w->block = ib;
  return 0;
}

int kvbm_weak_upgrade(kvbm_manager *m, const kvbm_weak *w, kvbm_block *ib) {
  uint32_t s;
  kvbm_block b = w->block;
  if (b == KVBM_NO_BLOCK) return KVBM_ESTALE; /* released */
  if (slot_of(m, b, IMMUTABLE, &s) == 0) { /* phase 1: the same block is alive */
    m->refs[s]++;
  } else { /* phase 2: by hash, from either pool */
    uint32_t e = kvbm__registry_find(m->reg, w->hash);
    if (e == NONE || (b = acquire(m, e)) == KVBM_NO_BLOCK) {
      missed(m, w->hash);
      return 0;
    }
  }
  m->metrics.inflight_immutable++;
  *ib = b;
  return 1;
}

int kvbm_weak_release(kvbm_manager *m, kvbm_weak *w) {
  if (w->block == KVBM_NO_BLOCK) return KVBM_ESTALE; /* released already */
  int rc = kvbm_registry_unacquire(m->reg, w->hash);
  if (rc == 0) w->block = KVBM_NO_BLOCK;
  return rc;
}

/* ----------------------------------------------------------- lookups */

static void touch_all(kvbm_manager *m, const kvbm_block *blocks, size_t n) {
  if (!m->reg->tracker) return;
  for (size_t i = 0; i < n; i++)
    if (blocks[i] != KVBM_NO_BLOCK)
      kvbm__tinylfu_increment(m->reg->tracker, entry_at(m, m->entry[(uint32_t)blocks[i]])->hash);
}

size_t kvbm_match(kvbm_manager *m, const kvbm_hash *hashes, size_t n, kvbm_block *out) {
  size_t k = 0;
  m->metrics.match_hashes_requested += n;
  for (; k < n; k++) {
    uint32_t e = kvbm__registry_find(m->reg, hashes[k]);
    if (e == NONE || (out[k] = acquire(m, e)) == KVBM_NO_BLOCK) {
      missed(m, hashes[k]);
      break;
    }
  }
  touch_all(m, out, k);
  m->metrics.match_blocks_returned += k;
  m->metrics.inflight_immutable += (int64_t)k;
  return k;
}

size_t kvbm_match_count(const kvbm_manager *m, const kvbm_hash *hashes, size_t n) {
  size_t k = 0;
  for (; k < n; k++) {
    uint32_t e = kvbm__registry_find(m->reg, hashes[k]);
    if (e == NONE || entry_at(m, e)->slot[m->tier] == NONE) break;
  }
  return k;
}

size_t kvbm_match_scattered(kvbm_manager *m, const kvbm_hash *hashes, size_t n, kvbm_block *out) {
  size_t hits = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t e = kvbm__registry_find(m->reg, hashes[i]);
    out[i] = e == NONE ? KVBM_NO_BLOCK : acquire(m, e);
    if (out[i] == KVBM_NO_BLOCK) missed(m, hashes[i]);
    hits += out[i] != KVBM_NO_BLOCK;
  }
  touch_all(m, out, n);
  /* the crate (E3 @0b94699) counts scattered lookups as scans */
  m->metrics.scan_hashes_requested += n;
  m->metrics.scan_blocks_returned += hits;
  m->metrics.inflight_immutable += (int64_t)hits;
  return hits;
}

size_t kvbm_scan(kvbm_manager *m, const kvbm_hash *hashes, size_t n, int touch, kvbm_block *out) {
  kvbm_registry *r = m->reg;
  uint32_t epoch = ++r->epoch;
  size_t hits = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t e = kvbm__registry_find(r, hashes[i]);
    out[i] = KVBM_NO_BLOCK;
    if (e == NONE) missed(m, hashes[i]);
    if (e == NONE || r->entries[e].mark == epoch) continue; /* absent, or repeated */
    r->entries[e].mark = epoch;
    if (touch && r->tracker) kvbm__tinylfu_increment(r->tracker, hashes[i]);
    out[i] = acquire(m, e);
    if (out[i] == KVBM_NO_BLOCK) missed(m, hashes[i]);
    hits += out[i] != KVBM_NO_BLOCK;
  }
  m->metrics.scan_hashes_requested += n;
  m->metrics.scan_blocks_returned += hits;
  m->metrics.inflight_immutable += (int64_t)hits;
  return hits;
}

int kvbm_reset_inactive(kvbm_manager *m) {
  size_t k = m->backend->ops->evict(m->backend, m->backend->len, m->scratch);
  for (size_t i = 0; i < k; i++) {
    evict_slot(m, m->scratch[i]);
    push_reset(m, m->scratch[i]);
  }
  return m->ring_len == m->total ? 0 : KVBM_ERESET_MISMATCH;
}

int kvbm_policy_prepare(kvbm_manager *m, size_t n) {
  if (!m->backend->ops->prepare) return 0;
  size_t reset = m->ring_len, inactive = m->backend->len;
  size_t need = n == SIZE_MAX ? inactive /* kvbm_reset_inactive */
              : n <= reset || n - reset > inactive ? 0 /* no eviction, or ENOSPC */
              : n - reset;
  return m->backend->ops->prepare(m->backend, need);
}

int kvbm_policy_flush(kvbm_manager *m) {
  return m->backend->ops->flush ? m->backend->ops->flush(m->backend) : 0;
}

size_t kvbm_next_use(kvbm_manager *m, const kvbm_hash *hashes, const uint64_t *when, size_t n) {
  size_t hinted = 0;
  if (!m->backend->ops->hint) return 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t e = kvbm__registry_find(m->reg, hashes[i]);
    uint32_t s = e == NONE ? NONE : entry_at(m, e)->slot[m->tier];
    if (s == NONE) continue;
    m->backend->ops->hint(m->backend, s, when[i]);
    hinted++;
  }
  return hinted;
}

/* ----------------------------------------------------- self-check */

/* Verifies the store's invariants (crate spec 3.10) and that the registry
 * agrees with the slots; used by the randomized model specs. */
static int check_invariants(const kvbm_manager *m, size_t counts[6], char *msg, size_t size) {
  const kvbm_registry *r = m->reg;
  size_t n[8] = {0};
  for (uint32_t s = 0; s < m->total; s++) {
    unsigned st = m->state[s];
    if (st > KVBM_STATE_INACTIVE) return snprintf(msg, size, "slot %u: bad state %u", s, st), -1;
    n[st]++;
    int registered = st >= KVBM_STATE_PRIMARY;
    if (registered != (m->entry[s] != NONE))
      return snprintf(msg, size, "slot %u: state %u but entry %u", s, st, m->entry[s]), -1;
    if (!registered) continue;
    const kvbm__entry *en = &r->entries[m->entry[s]];
    if (KVBM__REFS(en) == 0) return snprintf(msg, size, "slot %u: entry without references", s), -1;
    if (kvbm__registry_find(r, en->hash) != m->entry[s])
      return snprintf(msg, size, "slot %u: entry not indexed under its hash", s), -1;
    if (st != KVBM_STATE_DUPLICATE && en->slot[m->tier] != s)
      return snprintf(msg, size, "slot %u: hash owned by slot %u", s, en->slot[m->tier]), -1;
    if (st == KVBM_STATE_DUPLICATE &&
        (m->state[m->dup_of[s]] != KVBM_STATE_PRIMARY || m->entry[m->dup_of[s]] != m->entry[s]))
      return snprintf(msg, size, "slot %u: duplicate without its live primary", s), -1;
    if ((st == KVBM_STATE_INACTIVE) != (m->refs[s] == 0))
      return snprintf(msg, size, "slot %u: state %u with %u references", s, st, m->refs[s]), -1;
  }
  if (n[KVBM_STATE_RESET] != m->ring_len)
    return snprintf(msg, size, "%zu reset slots, ring holds %u", n[KVBM_STATE_RESET], m->ring_len), -1;
  for (uint32_t i = 0; i < m->ring_len; i++) {
    uint32_t s = m->ring[(m->ring_head + i) % m->total];
    if (m->state[s] != KVBM_STATE_RESET) return snprintf(msg, size, "ring holds busy slot %u", s), -1;
  }
  if (n[KVBM_STATE_INACTIVE] != m->backend->len)
    return snprintf(msg, size, "%zu inactive slots, index holds %zu", n[KVBM_STATE_INACTIVE],
                    m->backend->len), -1;
  /* presence and ownership per entry; duplicates keep their primary's refs */
  for (size_t e = 0; e < r->nentries; e++) {
    const kvbm__entry *en = &r->entries[e];
    if (kvbm__registry_find(r, en->hash) != e) continue; /* a free entry */
    uint32_t present = 0, owners = 0;
    for (uint32_t s = 0; s < m->total; s++) {
      if (m->entry[s] != e) continue;
      present++;
      owners += m->state[s] != KVBM_STATE_DUPLICATE;
    }
    if (present != en->presence[m->tier])
      return snprintf(msg, size, "entry %zu: presence %u, slots %u", e, en->presence[m->tier], present), -1;
    if (owners > 1) return snprintf(msg, size, "entry %zu: %u primary/inactive slots", e, owners), -1;
    if (en->slot[m->tier] != NONE && m->entry[en->slot[m->tier]] != e)
      return snprintf(msg, size, "entry %zu: owner slot holds another hash", e), -1;
    /* every reference is a slot of some tier or a hold (acquire, weak) */
    uint32_t slots = 0;
    for (unsigned t = 0; t < KVBM_MAX_TIERS; t++) slots += en->presence[t];
    if (KVBM__REFS(en) != slots + en->holds)
      return snprintf(msg, size, "entry %zu: %u references for %u slots and %u holds", e,
                      KVBM__REFS(en), slots, en->holds), -1;
  }
  /* each duplicate holds one reference on its primary; a primary whose own
   * guards are all gone lives on that keepalive alone (refs == dups) */
  for (uint32_t s = 0; s < m->total; s++) {
    if (m->state[s] != KVBM_STATE_PRIMARY) {
      if (m->kept[s]) return snprintf(msg, size, "slot %u: state %u with keepalives", s, m->state[s]), -1;
      continue;
    }
    uint32_t dups = 0;
    for (uint32_t d = 0; d < m->total; d++)
      dups += m->state[d] == KVBM_STATE_DUPLICATE && m->dup_of[d] == s;
    if (m->kept[s] != dups || m->refs[s] < dups)
      return snprintf(msg, size, "primary %u: %u references, %u keepalives for %u duplicates", s,
                      m->refs[s], m->kept[s], dups), -1;
  }
  if (counts)
    for (int i = 0; i < 6; i++) counts[i] = n[i];
  return 0;
}

int kvbm_manager_check(const kvbm_manager *m, size_t counts[6], char *msg, size_t size) {
  if (!m || !counts || !msg || size == 0) return KVBM_EINVAL;
  msg[0] = '\0';
  return check_invariants(m, counts, msg, size) < 0 ? KVBM_ESTATE : 0;
}
