/* tiers.c - the tier planner's bookkeeping (see kvbm.h "tiers"): requests,
 * copy plans with the blocks they hold, the (tier, hash) index of planned
 * copies, the policy calls, per-tier statistics.
 *
 * Plans live in a slab of slots named by handles (generation << 32 | slot),
 * linked in a list in the order they were made (the pending list). Each
 * slot keeps its copy array across reuse, so a steady run does not
 * allocate. Scratch arrays are the planner's, one per phase, because the
 * phases nest: completing a plan releases its sources, which may reach the
 * policy, which may make new plans. */
#include "internal.h"
#include "hashmap.h"

#define NIL UINT32_MAX

typedef struct {
  uint32_t gen, prev, next; /* next: also the free list */
  uint8_t live, kind, src, dst;
  uint64_t seq;
  kvbm_tiers_request *req; /* onboard plans */
  kvbm_copy *copies;
  size_t n, cap;
} plan_slot;

/* One planned (tier, hash): how many pending copies target it. */
typedef struct {
  kvbm_hash h;
  uint32_t count, next_free;
} planned_entry;

typedef struct {
  kvbm__map map;
  planned_entry *e;
  size_t ne, cap;
  uint32_t free;
} planned_index;

struct kvbm_tiers_request {
  kvbm_tiers_request *prev, *next; /* the planner's live requests */
  size_t n, matched, waiting, nfresh, nonboard;
  int released;
  kvbm_hash *hashes;
  kvbm_block *blocks;   /* by position: G1 immutable blocks */
  kvbm_block *fresh;    /* G1 mutable blocks still to compute */
  uint32_t *fresh_pos;
  kvbm_plan onboard[KVBM_MAX_TIERS];
};

/* A growable scratch array. */
typedef struct {
  void *p;
  size_t cap;
} scratch;

struct kvbm_tiers {
  kvbm_allocator alloc;
  kvbm_registry *reg;
  kvbm_manager *m[KVBM_MAX_TIERS];
  unsigned rtier[KVBM_MAX_TIERS]; /* the registry's tier number of each manager */
  kvbm_tier_rule rule;
  kvbm_tier_hooks hooks;
  int busy;
  plan_slot *plans;
  size_t nplans, cap_plans;
  uint32_t free_plan, head, tail; /* pending list */
  planned_index planned[KVBM_MAX_TIERS];
  kvbm_tiers_request *requests;
  kvbm_tiers_stats stats;
  /* scratch, by phase */
  scratch from;                        /* admit: the tier each block comes from */
  scratch cur;                         /* complete: the plan's copies */
  scratch regd;                        /* complete: the registered copies */
  scratch src_b, src_h, src_p;         /* complete: its sources */
  scratch rel_b, rel_h, rel_p, gone;   /* let_go */
  scratch in_h, in_p, dst;             /* policy batches */
  scratch grp_h, grp_p, grp_b;         /* one destination's group */
  scratch todo, targets, cbs;          /* offload */
};

#define SCRATCH(t, s, n, type) ((type *)reserve((t), &(t)->s, (n), sizeof(type)))

static void *reserve(kvbm_tiers *t, scratch *s, size_t n, size_t elem) {
  if (kvbm__grow(&t->alloc, &s->p, &s->cap, n ? n : 1, elem)) return NULL;
  return s->p;
}

/* ----------------------------------------------------- planned index */

static kvbm__keys planned_keys(const planned_index *x) {
  return (kvbm__keys){&x->e[0].h, sizeof x->e[0]};
}

static uint32_t planned_find(const planned_index *x, kvbm_hash h) {
  return x->ne ? kvbm__map_get(&x->map, planned_keys(x), h) : KVBM__MAP_NONE;
}

static int planned_add(kvbm_tiers *t, planned_index *x, kvbm_hash h) {
  uint32_t id = planned_find(x, h);
  if (id != KVBM__MAP_NONE) {
    x->e[id].count++;
    return 0;
  }
  if (x->free == NIL) {
    int rc = kvbm__grow(&t->alloc, (void **)&x->e, &x->cap, x->ne + 1, sizeof *x->e);
    if (rc) return rc;
    x->e[x->ne].next_free = NIL;
    x->free = (uint32_t)x->ne++;
  }
  int rc = kvbm__map_reserve(&x->map, 1);
  if (rc) return rc;
  id = x->free;
  x->free = x->e[id].next_free;
  x->e[id].h = h;
  x->e[id].count = 1;
  return kvbm__map_add(&x->map, h, id);
}

static void planned_drop(planned_index *x, kvbm_hash h) {
  uint32_t id = planned_find(x, h);
  if (id == KVBM__MAP_NONE || --x->e[id].count > 0) return;
  (void)kvbm__map_del(&x->map, h, id);
  x->e[id].next_free = x->free;
  x->free = id;
}

/* ------------------------------------------------------------- plans */

static plan_slot *plan_of(const kvbm_tiers *t, kvbm_plan p) {
  uint32_t s = (uint32_t)p;
  if (s >= t->nplans || t->plans[s].gen != (uint32_t)(p >> 32) || !t->plans[s].live) return NULL;
  return &t->plans[s];
}

static kvbm_plan plan_handle(const kvbm_tiers *t, uint32_t s) {
  return ((uint64_t)t->plans[s].gen << 32) | s;
}

/* A fresh slot with room for n copies; NIL on out of memory. The slot is not
 * pending yet (enqueue does that). */
static uint32_t plan_new(kvbm_tiers *t, unsigned kind, unsigned src, unsigned dst, size_t n) {
  if (t->free_plan == NIL) {
    if (kvbm__grow(&t->alloc, (void **)&t->plans, &t->cap_plans, t->nplans + 1, sizeof *t->plans))
      return NIL;
    t->plans[t->nplans] = (plan_slot){.next = NIL};
    t->free_plan = (uint32_t)t->nplans++;
  }
  uint32_t s = t->free_plan;
  plan_slot *p = &t->plans[s];
  if (kvbm__grow(&t->alloc, (void **)&p->copies, &p->cap, n ? n : 1, sizeof *p->copies)) return NIL;
  t->free_plan = p->next;
  p->live = 1;
  p->kind = (uint8_t)kind, p->src = (uint8_t)src, p->dst = (uint8_t)dst;
  p->seq = ++t->stats.plans_made;
  p->req = NULL;
  p->n = 0;
  p->prev = p->next = NIL;
  return s;
}

static void plan_free(kvbm_tiers *t, uint32_t s) {
  plan_slot *p = &t->plans[s];
  p->live = 0;
  p->gen++;
  p->next = t->free_plan;
  t->free_plan = s;
}

/* Appends a plan to the pending list and indexes its copies. */
static int enqueue(kvbm_tiers *t, uint32_t s) {
  plan_slot *p = &t->plans[s];
  for (size_t i = 0; i < p->n; i++) {
    int rc = planned_add(t, &t->planned[p->dst], p->copies[i].hash);
    if (rc) {
      while (i-- > 0) planned_drop(&t->planned[p->dst], p->copies[i].hash);
      return rc;
    }
  }
  p->prev = t->tail;
  p->next = NIL;
  if (t->tail != NIL) t->plans[t->tail].next = s;
  else t->head = s;
  t->tail = s;
  t->stats.pending++;
  return 0;
}

static void dequeue(kvbm_tiers *t, uint32_t s) {
  plan_slot *p = &t->plans[s];
  for (size_t i = 0; i < p->n; i++) planned_drop(&t->planned[p->dst], p->copies[i].hash);
  if (p->prev != NIL) t->plans[p->prev].next = p->next;
  else t->head = p->next;
  if (p->next != NIL) t->plans[p->next].prev = p->prev;
  else t->tail = p->prev;
  t->stats.pending--;
}

/* Gives a plan's blocks back without registering anything or asking the
 * policy: destinations first, then sources. */
static void abandon(kvbm_tiers *t, uint32_t s) {
  plan_slot *p = &t->plans[s];
  for (size_t i = 0; i < p->n; i++) (void)kvbm_release(t->m[p->dst], p->copies[i].dst);
  for (size_t i = 0; i < p->n; i++) (void)kvbm_release(t->m[p->src], p->copies[i].src);
  plan_free(t, s);
}

/* ------------------------------------------------------------ policy */

int kvbm_tiers_present(const kvbm_tiers *t, unsigned tier, kvbm_hash h) {
  return tier < KVBM_MAX_TIERS && t->m[tier] && kvbm_registry_present(t->reg, h, t->rtier[tier]);
}

int kvbm_tiers_planned(const kvbm_tiers *t, unsigned tier, kvbm_hash h) {
  return tier < KVBM_MAX_TIERS && planned_find(&t->planned[tier], h) != KVBM__MAP_NONE;
}

/* A custom eviction policy of m chooses the victims of the allocation of n
 * blocks that follows, between manager calls (see kvbm_policy_prepare); its
 * callbacks, like the hooks, cannot call the planner. */
static void prepare(kvbm_tiers *t, kvbm_manager *m, size_t n) {
  t->busy = 1;
  (void)kvbm_policy_prepare(m, n);
  t->busy = 0;
}

static int check_dst(const kvbm_tiers *t, const int *dst, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (dst[i] != KVBM_NO_TIER && (dst[i] < 0 || dst[i] >= KVBM_MAX_TIERS || !t->m[dst[i]]))
      return KVBM_EINVAL;
  return 0;
}

static int call_on_inactive(kvbm_tiers *t, unsigned tier, const kvbm_hash *h, const uint32_t *pos,
                            size_t n, int *dst) {
  for (size_t i = 0; i < n; i++) dst[i] = KVBM_NO_TIER;
  if (t->hooks.on_inactive) {
    t->busy = 1;
    int rc = t->hooks.on_inactive(t->hooks.ud, tier, h, pos, n, dst);
    t->busy = 0;
    return rc < 0 ? rc : check_dst(t, dst, n);
  }
  if (t->rule == KVBM_TIER_RULE_OFFLOAD_ON_RELEASE && tier + 1 < KVBM_MAX_TIERS && t->m[tier + 1])
    for (size_t i = 0; i < n; i++)
      if (!kvbm_tiers_present(t, tier + 1, h[i])) dst[i] = (int)tier + 1;
  return 0;
}

/* Offload plan from tier src to dst for the items (hash, pos, immutable
 * block of src; the plan takes over the references of those it copies and
 * gives the others back, in order). Blocks dst holds or will hold are
 * skipped; allocation is all or nothing (a full destination skips the
 * offload and counts it). */
static int offload(kvbm_tiers *t, unsigned src, unsigned dst, const kvbm_hash *h, const uint32_t *pos,
                   const kvbm_block *b, size_t n, int owned) {
  uint32_t *todo = SCRATCH(t, todo, n, uint32_t);
  kvbm_block *targets = SCRATCH(t, targets, n, kvbm_block);
  if (!todo || !targets) return KVBM_ENOMEM;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!kvbm_tiers_present(t, dst, h[i]) && !kvbm_tiers_planned(t, dst, h[i])) todo[k++] = (uint32_t)i;
  int rc = 0;
  uint32_t s = NIL;
  if (k > 0) {
    prepare(t, t->m[dst], k);
    if (kvbm_allocate(t->m[dst], k, targets, NULL) < 0) {
      t->stats.offloads_skipped += k;
      t->stats.tier[dst].skipped += k;
      k = 0;
    } else if ((s = plan_new(t, KVBM_PLAN_OFFLOAD, src, dst, k)) == NIL) {
      rc = KVBM_ENOMEM;
    }
  }
  if (s != NIL) {
    plan_slot *p = &t->plans[s];
    for (size_t j = 0; j < k; j++) {
      uint32_t i = todo[j];
      if (!owned) (void)kvbm_block_retain(t->m[src], b[i]);
      p->copies[j] = (kvbm_copy){.hash = h[i], .src = b[i], .dst = targets[j], .pos = pos[i]};
    }
    p->n = k;
    if ((rc = enqueue(t, s)) != 0) abandon(t, s);
  } else if (k > 0) {
    for (size_t j = 0; j < k; j++) (void)kvbm_release(t->m[dst], targets[j]);
  }
  if (owned) { /* give back what the plan did not take (all of it on failure) */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
      int taken = s != NIL && rc == 0 && j < k && todo[j] == i;
      j += taken;
      if (!taken) (void)kvbm_release(t->m[src], b[i]);
    }
  }
  return rc;
}

/* The policy's answers dst[0..n) for items of tier src: one offload plan per
 * destination. b: the blocks the items hold (a commit's, planned by tier
 * level); NULL: the items went inactive (planned in the order destinations
 * first appear), so the sources are looked up again, which takes them out of
 * the inactive pool while they are copied. */
static int plan_offloads(kvbm_tiers *t, unsigned src, const kvbm_hash *h, const uint32_t *pos,
                         const kvbm_block *b, const int *dst, size_t n) {
  int order[KVBM_MAX_TIERS], norder = 0, used[KVBM_MAX_TIERS] = {0};
  for (size_t i = 0; i < n; i++) {
    if (dst[i] == KVBM_NO_TIER || dst[i] == (int)src || used[dst[i]]) continue;
    used[dst[i]] = 1;
    order[norder++] = dst[i];
  }
  if (b) {
    norder = 0;
    for (int k = 0; k < KVBM_MAX_TIERS; k++)
      if (used[k]) order[norder++] = k;
  }
  kvbm_hash *gh = SCRATCH(t, grp_h, n, kvbm_hash);
  uint32_t *gp = SCRATCH(t, grp_p, n, uint32_t);
  kvbm_block *gb = SCRATCH(t, grp_b, n, kvbm_block);
  if (norder && (!gh || !gp || !gb)) return KVBM_ENOMEM;
  for (int k = 0; k < norder; k++) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
      if (dst[i] == order[k]) gh[m] = h[i], gp[m] = pos[i], gb[m] = b ? b[i] : KVBM_NO_BLOCK, m++;
    int rc;
    if (b) {
      rc = offload(t, src, (unsigned)order[k], gh, gp, gb, m, 0);
    } else {
      (void)kvbm_match_scattered(t->m[src], gh, m, gb);
      size_t f = 0; /* keep the order; drop the misses */
      for (size_t i = 0; i < m; i++)
        if (gb[i] != KVBM_NO_BLOCK) gh[f] = gh[i], gp[f] = gp[i], gb[f] = gb[i], f++;
      rc = offload(t, src, (unsigned)order[k], gh, gp, gb, f, 1);
    }
    if (rc) return rc;
  }
  return 0;
}

/* Releases blocks of tier (with their hashes and positions) in order and
 * offers those that went inactive to the policy. */
static int let_go(kvbm_tiers *t, unsigned tier, const kvbm_block *b, const kvbm_hash *h,
                  const uint32_t *pos, size_t n) {
  uint32_t *gone = SCRATCH(t, gone, n, uint32_t);
  if (!gone) {
    for (size_t i = 0; i < n; i++) (void)kvbm_release(t->m[tier], b[i]);
    return KVBM_ENOMEM;
  }
  int k = kvbm_release_all(t->m[tier], b, n, gone);
  if (k <= 0 || (!t->hooks.on_inactive && t->rule == KVBM_TIER_RULE_NONE)) return 0;
  kvbm_hash *ih = SCRATCH(t, in_h, (size_t)k, kvbm_hash);
  uint32_t *ip = SCRATCH(t, in_p, (size_t)k, uint32_t);
  int *dst = SCRATCH(t, dst, (size_t)k, int);
  if (!ih || !ip || !dst) return KVBM_ENOMEM;
  for (int i = 0; i < k; i++) ih[i] = h[gone[i]], ip[i] = pos[gone[i]];
  int rc = call_on_inactive(t, tier, ih, ip, (size_t)k, dst);
  return rc ? rc : plan_offloads(t, tier, ih, ip, NULL, dst, (size_t)k);
}

/* Blocks ib (hashes h, positions pos) just registered in G1: offers them
 * to on_register and plans the offloads it asks for. dst: scratch for n. */
static int registered(kvbm_tiers *t, const kvbm_hash *h, const uint32_t *pos, const kvbm_block *ib, int *dst,
                      size_t n) {
  if (!t->hooks.on_register) return 0;
  for (size_t i = 0; i < n; i++) dst[i] = KVBM_NO_TIER;
  t->busy = 1;
  int rc = t->hooks.on_register(t->hooks.ud, h, pos, n, dst);
  t->busy = 0;
  if (rc >= 0) rc = check_dst(t, dst, n);
  if (rc >= 0) rc = plan_offloads(t, 0, h, pos, ib, dst, n);
  return rc < 0 ? rc : 0;
}

/* Staged -> mutable again (undoing a stage when a later step failed). */
static void unstage(kvbm_manager *m, kvbm_block cb, kvbm_block *mb) {
  if (kvbm_complete_reset(m, cb, mb) < 0) *mb = KVBM_NO_BLOCK;
}

/* ------------------------------------------------------- construction */

int kvbm_tiers_new(const kvbm_tiers_config *cfg, kvbm_tiers **out) {
  if (!cfg || !out || !cfg->tier[0] || (unsigned)cfg->rule >= KVBM__TIER_RULE_END) return KVBM_ECONFIG;
  kvbm_registry *reg = kvbm_manager_registry(cfg->tier[0]);
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    if (!cfg->tier[i]) continue;
    if (kvbm_manager_registry(cfg->tier[i]) != reg) return KVBM_ECONFIG;
    for (int j = 0; j < i; j++)
      if (cfg->tier[j] == cfg->tier[i]) return KVBM_ECONFIG;
  }
  kvbm_allocator a = cfg->alloc ? *cfg->alloc : (kvbm_allocator){0};
  kvbm_tiers *t = kvbm__realloc(&a, NULL, 0, sizeof *t);
  if (!t) return KVBM_ENOMEM;
  memset(t, 0, sizeof *t);
  t->alloc = a;
  t->reg = reg;
  t->rule = cfg->rule;
  t->hooks = cfg->hooks;
  t->free_plan = t->head = t->tail = NIL;
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    t->m[i] = cfg->tier[i];
    t->rtier[i] = t->m[i] ? kvbm_manager_tier(t->m[i]) : 0;
    t->planned[i].free = NIL;
    if (kvbm__map_init(&t->planned[i].map, &t->alloc, 64)) {
      kvbm_tiers_free(t);
      return KVBM_ENOMEM;
    }
  }
  *out = t;
  return 0;
}

static void scratch_free(kvbm_tiers *t, scratch *s, size_t elem) { kvbm__free(&t->alloc, s->p, s->cap * elem); }

void kvbm_tiers_free(kvbm_tiers *t) {
  if (!t) return;
  while (t->head != NIL) {
    uint32_t s = t->head;
    dequeue(t, s);
    abandon(t, s);
  }
  while (t->requests) kvbm_tiers_request_free(t, t->requests);
  for (size_t i = 0; i < t->nplans; i++)
    kvbm__free(&t->alloc, t->plans[i].copies, t->plans[i].cap * sizeof(kvbm_copy));
  kvbm__free(&t->alloc, t->plans, t->cap_plans * sizeof *t->plans);
  for (int i = 0; i < KVBM_MAX_TIERS; i++) {
    kvbm__map_free(&t->planned[i].map);
    kvbm__free(&t->alloc, t->planned[i].e, t->planned[i].cap * sizeof(planned_entry));
  }
  scratch_free(t, &t->from, sizeof(uint8_t));
  scratch_free(t, &t->src_b, sizeof(kvbm_block));
  scratch_free(t, &t->src_h, sizeof(kvbm_hash));
  scratch_free(t, &t->src_p, sizeof(uint32_t));
  scratch_free(t, &t->cur, sizeof(kvbm_copy));
  scratch_free(t, &t->regd, sizeof(kvbm_block));
  scratch_free(t, &t->rel_b, sizeof(kvbm_block));
  scratch_free(t, &t->rel_h, sizeof(kvbm_hash));
  scratch_free(t, &t->rel_p, sizeof(uint32_t));
  scratch_free(t, &t->gone, sizeof(uint32_t));
  scratch_free(t, &t->in_h, sizeof(kvbm_hash));
  scratch_free(t, &t->in_p, sizeof(uint32_t));
  scratch_free(t, &t->dst, sizeof(int));
  scratch_free(t, &t->grp_h, sizeof(kvbm_hash));
  scratch_free(t, &t->grp_p, sizeof(uint32_t));
  scratch_free(t, &t->grp_b, sizeof(kvbm_block));
  scratch_free(t, &t->todo, sizeof(uint32_t));
  scratch_free(t, &t->targets, sizeof(kvbm_block));
  scratch_free(t, &t->cbs, sizeof(kvbm_block));
  kvbm_allocator a = t->alloc;
  kvbm__free(&a, t, sizeof *t);
}

kvbm_manager *kvbm_tiers_manager(const kvbm_tiers *t, unsigned tier) {
  return tier < KVBM_MAX_TIERS ? t->m[tier] : NULL;
}

void kvbm_tiers_get_stats(const kvbm_tiers *t, kvbm_tiers_stats *out) { *out = t->stats; }

/* ----------------------------------------------------------- requests */

static size_t request_bytes(size_t n) {
  return sizeof(kvbm_tiers_request) + n * (sizeof(kvbm_hash) + 2 * sizeof(kvbm_block) + sizeof(uint32_t));
}

static kvbm_tiers_request *request_new(kvbm_tiers *t, const kvbm_hash *hashes, size_t n) {
  kvbm_tiers_request *r = kvbm__realloc(&t->alloc, NULL, 0, request_bytes(n));
  if (!r) return NULL;
  memset(r, 0, sizeof *r);
  r->n = n;
  r->hashes = (kvbm_hash *)(r + 1);
  r->blocks = (kvbm_block *)(r->hashes + n);
  r->fresh = r->blocks + n;
  r->fresh_pos = (uint32_t *)(r->fresh + n);
  if (n) memcpy(r->hashes, hashes, n * sizeof *hashes);
  for (size_t i = 0; i < n; i++) r->blocks[i] = KVBM_NO_BLOCK;
  r->next = t->requests;
  if (t->requests) t->requests->prev = r;
  t->requests = r;
  return r;
}

int kvbm_tiers_admit(kvbm_tiers *t, const kvbm_hash *hashes, size_t n, kvbm_tiers_request **out) {
  if (!t || (!hashes && n) || !out || n > UINT32_MAX) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  kvbm_tiers_request *r = request_new(t, hashes, n);
  /* per rest position: the tier to onboard from (by level), 0: none */
  uint8_t *from = SCRATCH(t, from, n, uint8_t);
  kvbm_block *targets = SCRATCH(t, targets, n, kvbm_block);
  kvbm_hash *gh = SCRATCH(t, grp_h, n, kvbm_hash);
  kvbm_block *gb = SCRATCH(t, grp_b, n, kvbm_block);
  uint32_t *gi = SCRATCH(t, grp_p, n, uint32_t);
  if (!r || !from || !targets || !gh || !gb || !gi) {
    if (r) kvbm_tiers_request_free(t, r);
    return KVBM_ENOMEM;
  }
  kvbm_manager *g1 = t->m[0];
  size_t h1 = kvbm_match(g1, r->hashes, n, r->blocks);
  r->matched = h1;
  t->stats.requests++;
  t->stats.blocks += n;
  t->stats.tier[0].hits += h1;

  /* the run of blocks after the G1 prefix that lower tiers hold (looked up
   * without taking anything: only the blocks chosen are acquired below) */
  size_t rest = n - h1, run = 0;
  for (size_t i = 0; i < rest; i++) {
    kvbm_hash h = r->hashes[h1 + i];
    from[i] = 0;
    for (unsigned k = 1; k < KVBM_MAX_TIERS && !from[i]; k++) {
      if (!kvbm_tiers_present(t, k, h)) continue;
      int yes = 1;
      if (t->hooks.onboard) {
        t->busy = 1;
        yes = t->hooks.onboard(t->hooks.ud, h, (uint32_t)(h1 + i), k);
        t->busy = 0;
      }
      if (yes < 0) {
        kvbm_tiers_request_free(t, r);
        return yes;
      }
      if (yes) from[i] = (uint8_t)k;
    }
    if (!from[i]) break;
    run = i + 1;
  }

  prepare(t, g1, rest);
  int rc = kvbm_allocate(g1, rest, targets, NULL);
  if (rc < 0) {
    kvbm_tiers_request_free(t, r);
    t->stats.rejected++;
    return rc;
  }
  /* acquire the sources, tier by tier; a plan per tier */
  uint32_t slot[KVBM_MAX_TIERS];
  int taken[KVBM_MAX_TIERS] = {0};
  kvbm_block *src = r->fresh; /* by rest position: the source block, or NO_BLOCK */
  for (size_t i = 0; i < rest; i++) src[i] = KVBM_NO_BLOCK;
  for (unsigned k = 1; k < KVBM_MAX_TIERS; k++) {
    size_t m = 0;
    for (size_t i = 0; i < run; i++)
      if (from[i] == k) gi[m] = (uint32_t)i, gh[m] = r->hashes[h1 + i], m++;
    if (m == 0) continue;
    (void)kvbm_match_scattered(t->m[k], gh, m, gb);
    for (size_t j = 0; j < m; j++) src[gi[j]] = gb[j];
  }
  /* plans are numbered in the order their first copy appears */
  for (unsigned k = 0; k < KVBM_MAX_TIERS; k++) slot[k] = NIL;
  rc = 0;
  for (size_t i = 0; i < run && rc == 0; i++) {
    unsigned k = from[i];
    if (src[i] == KVBM_NO_BLOCK || slot[k] != NIL) continue;
    size_t m = 0;
    for (size_t j = i; j < run; j++) m += from[j] == k && src[j] != KVBM_NO_BLOCK;
    if ((slot[k] = plan_new(t, KVBM_PLAN_ONBOARD, k, 0, m)) == NIL) rc = KVBM_ENOMEM;
  }
  if (rc) { /* give everything back */
    for (unsigned k = 0; k < KVBM_MAX_TIERS; k++)
      if (slot[k] != NIL) plan_free(t, slot[k]);
    for (size_t i = 0; i < run; i++)
      if (src[i] != KVBM_NO_BLOCK) (void)kvbm_release(t->m[from[i]], src[i]);
    for (size_t i = 0; i < rest; i++) (void)kvbm_release(g1, targets[i]);
    kvbm_tiers_request_free(t, r);
    return rc;
  }
  size_t nf = 0;
  for (size_t i = 0; i < rest; i++) {
    uint32_t pos = (uint32_t)(h1 + i);
    kvbm_block b = i < run ? src[i] : KVBM_NO_BLOCK;
    if (b != KVBM_NO_BLOCK) {
      unsigned k = from[i];
      plan_slot *p = &t->plans[slot[k]];
      p->copies[p->n++] = (kvbm_copy){.hash = r->hashes[pos], .src = b, .dst = targets[i], .pos = pos};
      t->stats.tier[k].hits++;
      taken[k] = 1;
    } else {
      r->fresh_pos[nf] = pos;
      src[nf++] = targets[i]; /* src aliases fresh: nf <= i */
    }
  }
  r->nfresh = nf;
  for (unsigned k = 1; k < KVBM_MAX_TIERS; k++) {
    if (!taken[k]) continue;
    t->plans[slot[k]].req = r;
    if (enqueue(t, slot[k]) != 0) { /* no room to track it: recompute instead of onboarding */
      abandon(t, slot[k]);
      continue;
    }
    r->onboard[r->nonboard++] = plan_handle(t, slot[k]);
    r->waiting++;
  }
  *out = r;
  return 0;
}

int kvbm_tiers_commit(kvbm_tiers *t, kvbm_tiers_request *r) {
  if (!t || !r) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  if (r->waiting > 0) return KVBM_ESTATE;
  size_t n = r->nfresh;
  if (n == 0) return 0;
  kvbm_manager *g1 = t->m[0];
  kvbm_block *cbs = SCRATCH(t, cbs, n, kvbm_block);
  kvbm_hash *ih = SCRATCH(t, in_h, n, kvbm_hash);
  int *dst = SCRATCH(t, dst, n, int);
  kvbm_block *ib = SCRATCH(t, regd, n, kvbm_block);
  if (!cbs || !ih || !dst || !ib) return KVBM_ENOMEM;
  size_t bs = kvbm_manager_block_size(g1);
  for (size_t i = 0; i < n; i++) {
    ih[i] = r->hashes[r->fresh_pos[i]];
    int rc = kvbm_stage(g1, r->fresh[i], ih[i], bs, &cbs[i]);
    if (rc < 0) { /* cannot happen for blocks of this manager; undo */
      for (size_t j = 0; j < i; j++) unstage(g1, cbs[j], &r->fresh[j]);
      return rc;
    }
  }
  int rc = kvbm_register_all(g1, cbs, n, ib);
  if (rc < 0) {
    for (size_t j = 0; j < n; j++) unstage(g1, cbs[j], &r->fresh[j]);
    return rc;
  }
  for (size_t i = 0; i < n; i++) r->blocks[r->fresh_pos[i]] = ib[i];
  r->nfresh = 0;
  rc = registered(t, ih, r->fresh_pos, ib, dst, n);
  return rc < 0 ? rc : (int)n;
}

int kvbm_tiers_register(kvbm_tiers *t, const kvbm_block *complete, const kvbm_hash *h, const uint32_t *pos,
                        size_t n, kvbm_block *out) {
  if (!t || ((!complete || !h || !pos || !out) && n)) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  if (n == 0) return 0;
  int *dst = SCRATCH(t, dst, n, int);
  if (!dst) return KVBM_ENOMEM;
  int rc = kvbm_register_all(t->m[0], complete, n, out);
  if (rc < 0) {
    for (size_t i = 0; i < n; i++) out[i] = KVBM_NO_BLOCK;
    return rc;
  }
  rc = registered(t, h, pos, out, dst, n);
  return rc < 0 ? rc : (int)n;
}

/* Ends r: abandons its pending onboards, drops its fresh blocks, releases
 * its G1 blocks in position order (to the policy when report is set). */
static int request_end(kvbm_tiers *t, kvbm_tiers_request *r, int report) {
  if (r->released) return 0;
  r->released = 1;
  for (size_t k = 0; k < r->nonboard; k++) {
    if (!plan_of(t, r->onboard[k])) continue;
    dequeue(t, (uint32_t)r->onboard[k]);
    abandon(t, (uint32_t)r->onboard[k]);
  }
  for (size_t i = 0; i < r->nfresh; i++) (void)kvbm_release(t->m[0], r->fresh[i]);
  r->nfresh = 0;
  kvbm_block *b = SCRATCH(t, rel_b, r->n, kvbm_block);
  kvbm_hash *h = SCRATCH(t, rel_h, r->n, kvbm_hash);
  uint32_t *p = SCRATCH(t, rel_p, r->n, uint32_t);
  size_t m = 0;
  int rc = 0;
  if (!b || !h || !p) {
    report = 0;
    rc = KVBM_ENOMEM;
  }
  for (size_t i = 0; i < r->n; i++) {
    if (r->blocks[i] == KVBM_NO_BLOCK) continue;
    if (report) b[m] = r->blocks[i], h[m] = r->hashes[i], p[m] = (uint32_t)i, m++;
    else (void)kvbm_release(t->m[0], r->blocks[i]);
    r->blocks[i] = KVBM_NO_BLOCK;
  }
  return report ? let_go(t, 0, b, h, p, m) : rc;
}

int kvbm_tiers_request_take(kvbm_tiers *t, kvbm_tiers_request *r, kvbm_block *out, size_t cap) {
  if (!t || !r || (!out && r->n)) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  if (cap < r->n) return KVBM_EINVAL;
  if (r->released || r->waiting > 0 || r->nfresh > 0) return KVBM_ESTATE;
  for (size_t i = 0; i < r->n; i++)
    if (r->blocks[i] == KVBM_NO_BLOCK) return KVBM_ESTATE; /* an onboard given up: not all of it is in G1 */
  for (size_t i = 0; i < r->n; i++) {
    out[i] = r->blocks[i];
    r->blocks[i] = KVBM_NO_BLOCK;
  }
  return (int)r->n;
}

int kvbm_tiers_let_go(kvbm_tiers *t, unsigned tier, const kvbm_block *b, const kvbm_hash *h, const uint32_t *pos,
                      size_t n) {
  if (!t || tier >= KVBM_MAX_TIERS || !t->m[tier] || ((!b || !h || !pos) && n)) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  return let_go(t, tier, b, h, pos, n);
}

int kvbm_tiers_release(kvbm_tiers *t, kvbm_tiers_request *r) {
  if (!t || !r) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  return request_end(t, r, 1);
}

void kvbm_tiers_request_free(kvbm_tiers *t, kvbm_tiers_request *r) {
  if (!t || !r) return;
  (void)request_end(t, r, 0);
  if (r->prev) r->prev->next = r->next;
  else t->requests = r->next;
  if (r->next) r->next->prev = r->prev;
  kvbm__free(&t->alloc, r, request_bytes(r->n));
}

size_t kvbm_tiers_request_blocks(const kvbm_tiers_request *r) { return r->n; }
size_t kvbm_tiers_request_matched(const kvbm_tiers_request *r) { return r->matched; }
size_t kvbm_tiers_request_waiting(const kvbm_tiers_request *r) { return r->waiting; }

size_t kvbm_tiers_request_onboard(const kvbm_tiers_request *r, kvbm_plan *out, size_t cap) {
  for (size_t i = 0; i < r->nonboard && i < cap; i++) out[i] = r->onboard[i];
  return r->nonboard;
}

kvbm_block kvbm_tiers_request_block(const kvbm_tiers_request *r, size_t pos) {
  return pos < r->n ? r->blocks[pos] : KVBM_NO_BLOCK;
}

/* -------------------------------------------------------------- plans */

size_t kvbm_tiers_plans(const kvbm_tiers *t, kvbm_plan *out, size_t cap) {
  size_t k = 0;
  for (uint32_t s = t->head; s != NIL; s = t->plans[s].next, k++)
    if (k < cap) out[k] = plan_handle(t, s);
  return k;
}

int kvbm_tiers_plan_info(const kvbm_tiers *t, kvbm_plan p, kvbm_plan_info *out) {
  const plan_slot *x = plan_of(t, p);
  if (!x) return KVBM_ESTALE;
  *out = (kvbm_plan_info){.kind = (kvbm_plan_kind)x->kind, .src_tier = x->src, .dst_tier = x->dst,
                          .ncopies = x->n, .seq = x->seq};
  return 0;
}

int kvbm_tiers_plan_copies(const kvbm_tiers *t, kvbm_plan p, kvbm_copy *out, size_t cap) {
  const plan_slot *x = plan_of(t, p);
  if (!x) return KVBM_ESTALE;
  if (out && cap) memcpy(out, x->copies, (cap < x->n ? cap : x->n) * sizeof *out);
  return (int)x->n;
}

int kvbm_tiers_complete(kvbm_tiers *t, kvbm_plan p, int ok) {
  if (!t) return KVBM_EINVAL;
  if (t->busy) return KVBM_EBUSY;
  plan_slot *x = plan_of(t, p);
  if (!x) return KVBM_ESTALE;
  size_t n = x->n;
  kvbm_copy *c = SCRATCH(t, cur, n, kvbm_copy);
  kvbm_block *cbs = SCRATCH(t, cbs, n, kvbm_block);
  kvbm_block *ib = SCRATCH(t, regd, n, kvbm_block);
  kvbm_block *sb = SCRATCH(t, src_b, n, kvbm_block);
  kvbm_hash *sh = SCRATCH(t, src_h, n, kvbm_hash);
  uint32_t *sp = SCRATCH(t, src_p, n, uint32_t);
  if (!c || !cbs || !ib || !sb || !sh || !sp) return KVBM_ENOMEM;
  x = plan_of(t, p); /* the scratch did not move the slab, but stay honest */
  unsigned kind = x->kind, src = x->src, dst = x->dst;
  kvbm_tiers_request *req = x->req;
  memcpy(c, x->copies, n * sizeof *c);
  dequeue(t, (uint32_t)p);
  plan_free(t, (uint32_t)p);

  kvbm_manager *dm = t->m[dst];
  int rc = 0;
  if (ok) {
    size_t bs = kvbm_manager_block_size(dm);
    for (size_t i = 0; i < n && rc == 0; i++) {
      rc = kvbm_stage(dm, c[i].dst, c[i].hash, bs, &cbs[i]);
      if (rc < 0) {
        for (size_t j = 0; j < i; j++) unstage(dm, cbs[j], &c[j].dst);
      }
    }
    if (rc == 0 && (rc = kvbm_register_all(dm, cbs, n, ib)) < 0)
      for (size_t j = 0; j < n; j++) unstage(dm, cbs[j], &c[j].dst);
    if (rc < 0) ok = 0; /* registration failed: the copy counts as failed */
  }
  if (!ok)
    for (size_t i = 0; i < n; i++) (void)kvbm_release(dm, c[i].dst);
  t->stats.plans_failed += !ok;
  /* the sources go back, in copy order */
  for (size_t i = 0; i < n; i++) sb[i] = c[i].src, sh[i] = c[i].hash, sp[i] = c[i].pos;
  int rc2 = let_go(t, src, sb, sh, sp, n);
  if (!ok) return rc < 0 ? rc : rc2 < 0 ? rc2 : 0;
  t->stats.tier[src].copies_out += n;
  t->stats.tier[dst].copies_in += n;
  if (kind == KVBM_PLAN_OFFLOAD) {
    t->stats.offloads += n;
    kvbm_hash *h = SCRATCH(t, rel_h, n, kvbm_hash);
    uint32_t *pos = SCRATCH(t, rel_p, n, uint32_t);
    kvbm_block *b = SCRATCH(t, rel_b, n, kvbm_block);
    if (!h || !pos || !b) return KVBM_ENOMEM;
    for (size_t i = 0; i < n; i++) h[i] = c[i].hash, pos[i] = c[i].pos, b[i] = ib[i];
    int rc3 = let_go(t, dst, b, h, pos, n);
    return rc2 < 0 ? rc2 : rc3 < 0 ? rc3 : 0;
  }
  t->stats.onboards += n;
  for (size_t i = 0; i < n; i++) req->blocks[c[i].pos] = ib[i];
  req->waiting--;
  return rc2 < 0 ? rc2 : 0;
}

int kvbm_tiers_complete_all(kvbm_tiers *t) {
  if (!t) return KVBM_EINVAL;
  int n = 0;
  while (t->head != NIL) {
    int rc = kvbm_tiers_complete(t, plan_handle(t, t->head), 1);
    if (rc < 0) return rc;
    n++;
  }
  return n;
}
