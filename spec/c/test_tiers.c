/* test_tiers.c - the tier planner (kvbm.h "tiers") from a C host: the
 * built-in rule, onboarding, failures, the (tier, hash) index of planned
 * copies, batch hooks and their errors, quiet frees, kvbm_release_all.
 * Public API only. */
#include <stdlib.h>

#include <kvbm.h>

#include "tap.h"

#define BS 4

/* A setup step that cannot fail unless the engine is broken. */
#define must(cond)                                                       \
  do {                                                                   \
    if (!(cond)) {                                                       \
      printf("Bail out! %s:%d: %s\n", __FILE__, __LINE__, #cond);        \
      exit(1);                                                           \
    }                                                                    \
  } while (0)

typedef struct {
  kvbm_registry *reg;
  kvbm_manager *m[3];
  kvbm_tiers *t;
} world;

/* G1 (lru, allow duplicates) and G2/G3 (reject) on one registry; n3 == 0: no G3. */
static void make(world *w, uint32_t n1, uint32_t n2, uint32_t n3, kvbm_tier_rule rule,
                 const kvbm_tier_hooks *hooks) {
  memset(w, 0, sizeof *w);
  must(!(kvbm_registry_new(NULL, KVBM_FREQUENCY_SMALL, &w->reg) < 0));
  uint32_t n[3] = {n1, n2, n3};
  kvbm_tiers_config cfg = {.rule = rule};
  for (int i = 0; i < 3; i++) {
    if (!n[i]) continue;
    kvbm_manager_config mc = {.block_count = n[i], .block_size = BS, .registry = w->reg,
                              .backend = KVBM_BACKEND_LRU, .reject_duplicates = i > 0};
    must(!(kvbm_manager_new(&mc, &w->m[i]) < 0));
    cfg.tier[i] = w->m[i];
  }
  if (hooks) cfg.hooks = *hooks;
  must(!(kvbm_tiers_new(&cfg, &w->t) < 0));
}

static void destroy(world *w) {
  kvbm_tiers_free(w->t);
  for (int i = 0; i < 3; i++) kvbm_manager_free(w->m[i]);
  kvbm_registry_release(w->reg);
}

/* n hashes of a chain whose tokens start at base */
static void chain(kvbm_hash *out, size_t n, uint32_t base) {
  kvbm_sequence *s;
  uint32_t tok[64];
  for (size_t i = 0; i < n * BS; i++) tok[i] = base + (uint32_t)i;
  must(!(kvbm_sequence_new(NULL, BS, 0, &s) < 0 || kvbm_sequence_extend(s, tok, n * BS, NULL, NULL) < 0));
  memcpy(out, kvbm_sequence_hashes(s), n * sizeof *out);
  kvbm_sequence_free(s);
}

static int all_back(const world *w) {
  for (int i = 0; i < 3; i++)
    if (w->m[i] && kvbm_manager_available(w->m[i]) != kvbm_manager_total(w->m[i])) return 0;
  return 1;
}

static void test_offload_on_release(void) {
  world w;
  make(&w, 4, 8, 0, KVBM_TIER_RULE_OFFLOAD_ON_RELEASE, NULL);
  kvbm_hash h[3];
  chain(h, 3, 0);
  kvbm_tiers_request *r;
  ok(kvbm_tiers_admit(w.t, h, 3, &r) == 0, "admit three fresh blocks");
  ok(kvbm_tiers_request_matched(r) == 0 && kvbm_tiers_request_waiting(r) == 0, "nothing matched, nothing to onboard");
  ok(kvbm_tiers_commit(w.t, r) == 3, "commit registers the three");
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 0, "no copy while the request holds its blocks");
  ok(kvbm_tiers_release(w.t, r) == 0, "release");
  kvbm_plan p;
  ok(kvbm_tiers_plans(w.t, &p, 1) == 1, "one offload plan once they went inactive");
  kvbm_plan_info info;
  ok(kvbm_tiers_plan_info(w.t, p, &info) == 0 && info.kind == KVBM_PLAN_OFFLOAD && info.src_tier == 0 &&
         info.dst_tier == 1 && info.ncopies == 3 && info.seq == 1,
     "G1 -> G2, three copies, the first plan");
  kvbm_copy c[3];
  ok(kvbm_tiers_plan_copies(w.t, p, c, 3) == 3 && c[0].pos == 0 && c[2].pos == 2 &&
         kvbm_block_state(w.m[0], c[0].src) == KVBM_STATE_PRIMARY &&
         kvbm_block_state(w.m[1], c[0].dst) == KVBM_STATE_MUTABLE,
     "the plan holds its sources (not evictable) and mutable destinations");
  ok(kvbm_tiers_planned(w.t, 1, h[1]) && !kvbm_tiers_planned(w.t, 2, h[1]) && !kvbm_tiers_present(w.t, 1, h[1]),
     "planned for G2, not yet present there");
  ok(kvbm_tiers_release(w.t, r) == 0 && kvbm_tiers_plans(w.t, NULL, 0) == 1, "a second release does nothing");
  ok(kvbm_tiers_complete(w.t, p, 1) == 0, "complete");
  ok(kvbm_tiers_present(w.t, 1, h[0]) && kvbm_tiers_present(w.t, 0, h[0]) && !kvbm_tiers_planned(w.t, 1, h[0]),
     "present in G1 and G2, no longer planned");
  ok(kvbm_tiers_complete(w.t, p, 1) == KVBM_ESTALE, "a completed plan is stale");
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 0, "G2 copies going inactive have no tier below: nothing more");
  kvbm_tiers_stats s;
  kvbm_tiers_get_stats(w.t, &s);
  ok(s.offloads == 3 && s.tier[1].copies_in == 3 && s.tier[0].copies_out == 3 && s.requests == 1 &&
         s.blocks == 3 && s.pending == 0,
     "stats: 3 offloaded, per tier in and out");
  kvbm_tiers_request_free(w.t, r);
  ok(all_back(&w), "every block is back");
  destroy(&w);
}

static void test_onboard(void) {
  world w;
  make(&w, 3, 8, 0, KVBM_TIER_RULE_OFFLOAD_ON_RELEASE, NULL);
  kvbm_hash a[3], b[3];
  chain(a, 3, 0);
  chain(b, 3, 500);
  kvbm_tiers_request *r;
  must(!(kvbm_tiers_admit(w.t, a, 3, &r) < 0 || kvbm_tiers_commit(w.t, r) != 3));
  (void)kvbm_tiers_release(w.t, r);
  kvbm_tiers_request_free(w.t, r);
  ok(kvbm_tiers_complete_all(w.t) == 1, "complete_all: a's offload");
  must(!(kvbm_tiers_admit(w.t, b, 3, &r) < 0 || kvbm_tiers_commit(w.t, r) != 3));
  ok(!kvbm_tiers_present(w.t, 0, a[0]) && kvbm_tiers_present(w.t, 1, a[0]), "b evicted a from G1; G2 keeps it");
  (void)kvbm_tiers_release(w.t, r);
  kvbm_tiers_request_free(w.t, r);
  (void)kvbm_tiers_complete_all(w.t);
  ok(kvbm_tiers_admit(w.t, a, 3, &r) == 0 && kvbm_tiers_request_matched(r) == 0 &&
         kvbm_tiers_request_waiting(r) == 1,
     "a again: one onboard plan");
  kvbm_plan p;
  kvbm_plan_info info;
  ok(kvbm_tiers_request_onboard(r, &p, 1) == 1 && kvbm_tiers_plan_info(w.t, p, &info) == 0 &&
         info.kind == KVBM_PLAN_ONBOARD && info.src_tier == 1 && info.dst_tier == 0 && info.ncopies == 3,
     "G2 -> G1, three copies");
  ok(kvbm_tiers_commit(w.t, r) == KVBM_ESTATE, "commit before the onboard completes: wrong state");
  ok(kvbm_tiers_request_block(r, 0) == KVBM_NO_BLOCK, "no G1 block yet");
  ok(kvbm_tiers_complete(w.t, p, 1) == 0 && kvbm_tiers_request_waiting(r) == 0, "onboard complete");
  ok(kvbm_block_state(w.m[0], kvbm_tiers_request_block(r, 2)) == KVBM_STATE_PRIMARY, "the request holds the copy");
  ok(kvbm_tiers_commit(w.t, r) == 0, "nothing left to compute");
  kvbm_tiers_stats s;
  kvbm_tiers_get_stats(w.t, &s);
  ok(s.onboards == 3 && s.tier[1].hits == 3, "3 onboards, counted as G2 hits");
  kvbm_tiers_request_free(w.t, r);
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 0, "a quiet free plans nothing");
  ok(all_back(&w), "every block is back");
  destroy(&w);
}

static void test_failure_and_reject(void) {
  world w;
  make(&w, 2, 4, 0, KVBM_TIER_RULE_OFFLOAD_ON_RELEASE, NULL);
  kvbm_hash h[3];
  chain(h, 3, 40);
  kvbm_tiers_request *r = NULL;
  ok(kvbm_tiers_admit(w.t, h, 3, &r) == KVBM_ENOSPC, "G1 cannot hold three: no space");
  kvbm_tiers_stats s;
  kvbm_tiers_get_stats(w.t, &s);
  ok(s.rejected == 1 && kvbm_manager_available(w.m[0]) == 2, "counted as rejected, nothing kept");
  must(!(kvbm_tiers_admit(w.t, h, 2, &r) < 0 || kvbm_tiers_commit(w.t, r) != 2));
  (void)kvbm_tiers_release(w.t, r);
  kvbm_plan p;
  must(!(kvbm_tiers_plans(w.t, &p, 1) != 1));
  ok(kvbm_tiers_complete(w.t, p, 0) == 0, "a failed copy");
  ok(!kvbm_tiers_present(w.t, 1, h[0]), "nothing registered in G2");
  kvbm_tiers_get_stats(w.t, &s);
  ok(s.plans_failed == 1 && s.offloads == 0, "counted as failed");
  kvbm_plan_info info;
  ok(kvbm_tiers_plans(w.t, &p, 1) == 1 && kvbm_tiers_plan_info(w.t, p, &info) == 0 && info.seq == 2 &&
         kvbm_manager_available(w.m[1]) == 2,
     "the sources went inactive again: the rule plans the copy anew");
  kvbm_tiers_request_free(w.t, r);
  kvbm_tiers_free(w.t);
  w.t = NULL;
  ok(all_back(&w), "every block is back");
  destroy(&w);
}

/* --------------------------------------------------------------- hooks */

typedef struct {
  int calls, last_n, answer, fail;
  kvbm_tiers *t;
  int reentered;
} hook_state;

static int to_g2(void *ud, const kvbm_hash *h, const uint32_t *pos, size_t n, int *dst) {
  hook_state *hs = ud;
  (void)h, (void)pos;
  hs->calls++;
  hs->last_n = (int)n;
  if (hs->t) hs->reentered = kvbm_tiers_complete_all(hs->t);
  if (hs->fail) return hs->fail;
  for (size_t i = 0; i < n; i++) dst[i] = hs->answer;
  return 0;
}

static void test_batch_hook_and_index(void) {
  hook_state hs = {.answer = 1};
  kvbm_tier_hooks hooks = {.on_register = to_g2, .ud = &hs};
  world w;
  make(&w, 12, 8, 0, KVBM_TIER_RULE_NONE, &hooks);
  kvbm_hash h[3];
  chain(h, 3, 70);
  kvbm_tiers_request *a, *b;
  /* b is admitted before a commits: it computes the same blocks (duplicates in G1) */
  must(!(kvbm_tiers_admit(w.t, h, 3, &a) < 0 || kvbm_tiers_admit(w.t, h, 3, &b) < 0));
  ok(kvbm_tiers_commit(w.t, a) == 3 && hs.calls == 1 && hs.last_n == 3, "one hook call for the request's 3 blocks");
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 1, "write-through: a plan to G2");
  ok(kvbm_tiers_commit(w.t, b) == 3 && hs.calls == 2, "b's duplicates reach the hook too");
  kvbm_tiers_stats s;
  kvbm_tiers_get_stats(w.t, &s);
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 1 && s.offloads_skipped == 0,
     "already planned for G2: no second plan (and not counted as skipped)");
  hs.t = w.t;
  hs.answer = 7;
  kvbm_tiers_request *c;
  kvbm_hash x[2];
  chain(x, 2, 900);
  must(!(kvbm_tiers_admit(w.t, x, 2, &c) < 0));
  ok(kvbm_tiers_commit(w.t, c) == KVBM_EINVAL, "a hook answering a tier the planner lacks: invalid");
  ok(hs.reentered == KVBM_EBUSY, "a planner call from inside a hook: busy");
  ok(kvbm_tiers_present(w.t, 0, x[1]) && kvbm_tiers_plans(w.t, NULL, 0) == 1,
     "the blocks stay registered, nothing more is planned");
  hs.t = NULL;
  hs.fail = KVBM_ENOMEM;
  kvbm_tiers_request *d;
  kvbm_hash y[1];
  chain(y, 1, 1200);
  must(!(kvbm_tiers_admit(w.t, y, 1, &d) < 0));
  ok(kvbm_tiers_commit(w.t, d) == KVBM_ENOMEM, "a hook's own error comes back");
  kvbm_tiers_free(w.t); /* with a pending plan and four live requests */
  w.t = NULL;
  ok(all_back(&w), "freeing the planner gives every block back");
  destroy(&w);
}

/* A host that keeps a committed request's blocks itself (a decode goes on
 * with them), registers the blocks it computes, and lets go of them all. */
static void test_take_register_let_go(void) {
  hook_state hs = {.answer = KVBM_NO_TIER};
  kvbm_tier_hooks hooks = {.on_register = to_g2, .ud = &hs};
  world w;
  make(&w, 4, 8, 0, KVBM_TIER_RULE_OFFLOAD_ON_RELEASE, &hooks);
  kvbm_hash h[3];
  chain(h, 3, 4000);
  kvbm_tiers_request *r;
  kvbm_block b[3];
  must(!(kvbm_tiers_admit(w.t, h, 2, &r) < 0));
  ok(kvbm_tiers_request_take(w.t, r, b, 3) == KVBM_ESTATE, "take before the commit: refused");
  ok(kvbm_tiers_commit(w.t, r) == 2 && hs.calls == 1, "commit (on_register once)");
  ok(kvbm_tiers_request_take(w.t, r, b, 1) == KVBM_EINVAL, "take into too small an array: refused");
  ok(kvbm_tiers_request_take(w.t, r, b, 3) == 2, "take hands over both blocks");
  ok(kvbm_tiers_request_block(r, 0) == KVBM_NO_BLOCK, "the request holds none");
  ok(kvbm_tiers_request_take(w.t, r, b, 3) == KVBM_ESTATE, "a second take: nothing left to give");
  ok(kvbm_tiers_release(w.t, r) == 0 && kvbm_tiers_plans(w.t, NULL, 0) == 0,
     "releasing the request releases nothing: the host holds the blocks");
  ok(kvbm_tiers_request_take(w.t, r, b, 3) == KVBM_ESTATE, "take after the release: refused");
  /* the decode's block 2 */
  kvbm_block mb, cb;
  must(!(kvbm_allocate(w.m[0], 1, &mb, NULL) < 0 || kvbm_stage(w.m[0], mb, h[2], BS, &cb) < 0));
  uint32_t pos[3] = {0, 1, 2};
  hs.answer = 1;
  ok(kvbm_tiers_register(w.t, &cb, &h[2], &pos[2], 1, &b[2]) == 1 && hs.calls == 2 && hs.last_n == 1,
     "register: the block reaches on_register");
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 1 && kvbm_tiers_present(w.t, 0, h[2]), "registered, and its copy planned");
  must(kvbm_tiers_complete_all(w.t) == 1);
  ok(kvbm_tiers_let_go(w.t, 5, b, h, pos, 3) == KVBM_EINVAL, "let go in a tier the planner lacks: invalid");
  ok(kvbm_tiers_let_go(w.t, 0, b, h, pos, 3) == 0, "let go of the three");
  kvbm_plan p;
  kvbm_plan_info info;
  ok(kvbm_tiers_plans(w.t, &p, 1) == 1 && kvbm_tiers_plan_info(w.t, p, &info) == 0 && info.ncopies == 2,
     "the built-in rule offloads the two that G2 lacks");
  must(kvbm_tiers_complete_all(w.t) >= 1);
  ok(kvbm_tiers_present(w.t, 1, h[0]) && kvbm_tiers_present(w.t, 1, h[2]), "all three in G2");
  kvbm_tiers_request_free(w.t, r);
  ok(all_back(&w), "every block back");
  destroy(&w);
}

static int refuse_deep(void *ud, kvbm_hash h, uint32_t pos, unsigned tier) {
  (void)h, (void)tier;
  ++*(int *)ud;
  return pos < 1;
}

static void test_onboard_hook(void) {
  int calls = 0;
  kvbm_tier_hooks hooks = {.onboard = refuse_deep, .ud = &calls};
  world w;
  make(&w, 3, 8, 0, KVBM_TIER_RULE_OFFLOAD_ON_RELEASE, &hooks);
  kvbm_hash a[3], b[3];
  chain(a, 3, 0);
  chain(b, 3, 300);
  kvbm_tiers_request *r;
  for (int k = 0; k < 2; k++) {
    must(!(kvbm_tiers_admit(w.t, k ? b : a, 3, &r) < 0 || kvbm_tiers_commit(w.t, r) != 3));
    (void)kvbm_tiers_release(w.t, r);
    kvbm_tiers_request_free(w.t, r);
    (void)kvbm_tiers_complete_all(w.t);
  }
  ok(kvbm_tiers_admit(w.t, a, 3, &r) == 0, "a again");
  kvbm_plan p;
  kvbm_plan_info info;
  ok(kvbm_tiers_request_onboard(r, &p, 1) == 1 && kvbm_tiers_plan_info(w.t, p, &info) == 0 && info.ncopies == 1,
     "the hook refused positions past 0: one copy");
  ok(calls == 2, "asked for positions 0 and 1, and stopped at the first refusal");
  kvbm_tiers_request_free(w.t, r);
  ok(kvbm_tiers_plans(w.t, NULL, 0) == 0 && all_back(&w), "freed: the onboard abandoned, every block back");
  destroy(&w);
}

static void test_config(void) {
  kvbm_registry *r1, *r2;
  kvbm_manager *a, *b;
  if (kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &r1) < 0 || kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &r2) < 0)
    exit(1);
  kvbm_manager_config mc = {.block_count = 2, .registry = r1};
  must(!(kvbm_manager_new(&mc, &a) < 0));
  mc.registry = r2;
  must(!(kvbm_manager_new(&mc, &b) < 0));
  kvbm_tiers *t;
  kvbm_tiers_config cfg = {.tier = {NULL, a}};
  ok(kvbm_tiers_new(&cfg, &t) == KVBM_ECONFIG, "no G1: invalid config");
  cfg = (kvbm_tiers_config){.tier = {a, b}};
  ok(kvbm_tiers_new(&cfg, &t) == KVBM_ECONFIG, "managers of two registries: invalid config");
  cfg = (kvbm_tiers_config){.tier = {a, a}};
  ok(kvbm_tiers_new(&cfg, &t) == KVBM_ECONFIG, "one manager twice: invalid config");
  cfg = (kvbm_tiers_config){.tier = {a}, .rule = KVBM__TIER_RULE_END};
  ok(kvbm_tiers_new(&cfg, &t) == KVBM_ECONFIG, "an unknown rule: invalid config");
  kvbm_manager_free(a);
  kvbm_manager_free(b);
  kvbm_registry_release(r1);
  kvbm_registry_release(r2);
}

static void test_release_all(void) {
  kvbm_registry *reg;
  kvbm_manager *m;
  must(!(kvbm_registry_new(NULL, KVBM_FREQUENCY_NONE, &reg) < 0));
  kvbm_manager_config mc = {.block_count = 6, .block_size = BS, .registry = reg};
  must(!(kvbm_manager_new(&mc, &m) < 0));
  kvbm_hash h[2];
  chain(h, 2, 10);
  kvbm_block mut[4], cb[4], ib[4];
  must(!(kvbm_allocate(m, 4, mut, NULL) < 0));
  /* h0 twice (a primary and a duplicate), h1 once, one block left mutable */
  kvbm_hash which[3] = {h[0], h[0], h[1]};
  for (int i = 0; i < 3; i++)
    must(!(kvbm_stage(m, mut[i], which[i], BS, &cb[i]) < 0));
  must(!(kvbm_register_all(m, cb, 3, ib) < 0 || kvbm_block_retain(m, ib[2]) < 0));
  kvbm_block list[5] = {mut[3], ib[1], ib[2], ib[0], KVBM_NO_BLOCK};
  uint32_t gone[5];
  int k = kvbm_release_all(m, list, 5, gone);
  ok(k == 1 && gone[0] == 3,
     "only the primary's last release sends a block to the inactive pool (the duplicate's, with the primary "
     "held, and the retained h1, do not)");
  ok(kvbm_manager_inactive(m) == 1 && kvbm_block_use_count(m, ib[2]) == 1, "h0 inactive, h1 still held once");
  list[0] = ib[2];
  ok(kvbm_release_all(m, list, 1, NULL) == 1 && kvbm_manager_inactive(m) == 2, "h1's last release");
  kvbm_manager_free(m);
  kvbm_registry_release(reg);
}

int main(void) {
  test_offload_on_release();
  test_onboard();
  test_failure_and_reject();
  test_batch_hook_and_index();
  test_take_register_let_go();
  test_onboard_hook();
  test_config();
  test_release_all();
  return tap_done();
}
