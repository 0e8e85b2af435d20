/* test_lineage.c - the lineage backend: scenarios 153-167 of the spec's
 * §13.5 (numbered), then edge cases and a randomized check against a model. */
#include <stdlib.h>

#include "backend.h"
#include "hashmap.h"
#include "tap.h"

/* ------------------------------------------------------------- helpers */

#define INS(b, slot, h) (b)->ops->insert((b), (slot), (h))
#define REM(b, slot) (b)->ops->remove((b), (slot))
#define EVICT(b, n, out) (b)->ops->evict((b), (n), (out))
#define FREE_B(b) (b)->ops->destroy(b)
#define LEAVES(b) kvbm__lineage_leaves(b)
#define NODES(b) kvbm__lineage_nodes(b)

/* The hashes of a chain of n blocks of block size 1: tokens first, first+1,
 * ... (blocks from a sequence with block size 1; slot i = position i). */
static kvbm_hash *chain(uint32_t first, size_t n) {
  kvbm_sequence *s = NULL;
  uint32_t *t = malloc(n * sizeof *t);
  kvbm_hash *h = malloc(n * sizeof *h);
  if (!t || !h || kvbm_sequence_new(NULL, 1, 0, &s) != 0) exit(2);
  for (size_t i = 0; i < n; i++) t[i] = first + (uint32_t)i;
  if (kvbm_sequence_extend(s, t, n, NULL, NULL) != (int)n) exit(2);
  memcpy(h, kvbm_sequence_hashes(s), n * sizeof *h);
  kvbm_sequence_free(s);
  free(t);
  return h;
}

/* A root block of token x. */
static kvbm_hash root(uint32_t x) {
  kvbm_hash *c = chain(x, 1), h = c[0];
  free(c);
  return h;
}

/* evict(n) gave exactly want[0..m) */
static int evicts(kvbm__backend *b, size_t n, const uint32_t *want, size_t m) {
  uint32_t out[64];
  size_t got = EVICT(b, n, out);
  if (got != m) {
    printf("#   evicted %zu, want %zu\n", got, m);
    return 0;
  }
  for (size_t i = 0; i < m; i++)
    if (out[i] != want[i]) {
      printf("#   victim %zu is slot %u, want %u\n", i, out[i], want[i]);
      return 0;
    }
  return 1;
}

static kvbm__backend *make(uint32_t nslots, int fifo) {
  kvbm__backend *b = kvbm__lineage_new(NULL, nslots, fifo);
  if (!b) exit(2);
  return b;
}

/* ----------------------------------------------------- spec scenarios */

static void s153(void) {
  kvbm__backend *b = make(4, 0);
  INS(b, 0, root(7));
  ok(b->len == 1 && LEAVES(b) == 1, "153 one root: len 1, leaves 1");
  ok(evicts(b, 1, (uint32_t[]){0}, 1), "153 allocate(1) -> id 0");
  ok(b->len == 0 && NODES(b) == 0, "153 len 0, graph empty");
  FREE_B(b);
}

static void s154(void) {
  kvbm__backend *b = make(4, 0);
  kvbm_hash *c = chain(0, 2);
  INS(b, 0, c[0]);
  ok(LEAVES(b) == 1, "154 parent inserted: leaves 1");
  INS(b, 1, c[1]);
  ok(b->len == 2 && LEAVES(b) == 1, "154 child inserted: len 2, leaves 1");
  ok(evicts(b, 1, (uint32_t[]){1}, 1), "154 allocate -> child (id 1)");
  ok(LEAVES(b) == 1, "154 parent is a leaf again");
  ok(evicts(b, 1, (uint32_t[]){0}, 1), "154 allocate -> parent (id 0)");
  ok(NODES(b) == 0, "154 graph empty");
  free(c);
  FREE_B(b);
}

static void s155(void) {
  kvbm__backend *b = make(4, 0);
  kvbm_hash *c = chain(0, 2);
  INS(b, 1, c[1]);
  ok(b->len == 1 && LEAVES(b) == 1 && NODES(b) == 2, "155 child first: len 1, leaves 1, ghost parent");
  INS(b, 0, c[0]);
  ok(b->len == 2 && LEAVES(b) == 1 && NODES(b) == 2, "155 parent promotes the ghost: len 2, leaves 1");
  ok(evicts(b, 1, (uint32_t[]){1}, 1), "155 allocate -> 1");
  ok(evicts(b, 1, (uint32_t[]){0}, 1), "155 allocate -> 0");
  ok(NODES(b) == 0, "155 graph empty");
  free(c);
  FREE_B(b);
}

static void s156(void) {
  kvbm__backend *b = make(8, 0);
  kvbm_hash *c1 = chain(0, 3), *c2 = chain(5000, 3);
  for (uint32_t i = 0; i < 3; i++) INS(b, i, c1[i]);
  for (uint32_t i = 0; i < 3; i++) INS(b, 3 + i, c2[i]);
  ok(b->len == 6 && LEAVES(b) == 2, "156 two chains of 3: len 6, leaves 2");
  uint32_t out[1];
  ok(EVICT(b, 1, out) == 1 && (out[0] == 2 || out[0] == 5), "156 allocate(1) takes a chain's tail");
  ok(b->len == 5 && LEAVES(b) == 2, "156 len 5, leaves 2");
  free(c1);
  free(c2);
  FREE_B(b);
}

/* A(0)->B(1), X(2)->Y(3), inserted A, B, X, Y */
static kvbm__backend *two_pairs(int fifo) {
  kvbm__backend *b = make(8, fifo);
  kvbm_hash *c1 = chain(0, 2), *c2 = chain(1000, 2);
  INS(b, 0, c1[0]);
  INS(b, 1, c1[1]);
  INS(b, 2, c2[0]);
  INS(b, 3, c2[1]);
  free(c1);
  free(c2);
  return b;
}

static void s157(void) {
  kvbm__backend *b = two_pairs(0);
  ok(b->len == 4 && LEAVES(b) == 2, "157 Tick: len 4, leaves 2");
  int order = 1;
  uint32_t want[4] = {1, 0, 3, 2};
  for (int i = 0; i < 4; i++) order &= evicts(b, 1, &want[i], 1);
  ok(order, "157 Tick: one at a time -> B, A, Y, X");
  FREE_B(b);
}

static void s158(void) {
  kvbm__backend *b = make(4, 0);
  INS(b, 0, root(3));
  REM(b, 0);
  ok(b->len == 0 && LEAVES(b) == 0 && NODES(b) == 0, "158 remove a single root: len 0, graph empty");
  FREE_B(b);
}

static void s159(void) {
  kvbm__backend *b = make(1000, 0);
  kvbm_hash *c = chain(0, 1000);
  for (uint32_t i = 0; i < 1000; i++) INS(b, i, c[i]);
  ok(LEAVES(b) == 1, "159 chain of 1000: leaves 1");
  REM(b, 999);
  ok(b->len == 999 && LEAVES(b) == 1, "159 remove the last: len 999, leaves 1");
  FREE_B(b);
  free(c);

  b = make(101, 0);
  c = chain(0, 101);
  INS(b, 100, c[100]);
  ok(b->len == 1 && LEAVES(b) == 1, "159 chain of 101, only the leaf: len 1");
  REM(b, 100);
  ok(b->len == 0 && NODES(b) == 0, "159 remove it: len 0, graph empty");

  /* a real 100-ghost ancestry: all inserted, the 100 ancestors hit */
  for (uint32_t i = 0; i < 101; i++) INS(b, i, c[i]);
  for (uint32_t i = 0; i < 100; i++) REM(b, i);
  ok(b->len == 1 && LEAVES(b) == 1 && NODES(b) == 101, "159 100 ghost ancestors above one leaf");
  REM(b, 100);
  ok(b->len == 0 && NODES(b) == 0, "159 removing the leaf prunes all 100 ghosts (iteratively)");
  FREE_B(b);
  free(c);
}

static void s160(void) {
  kvbm__backend *b = make(16, 0);
  kvbm_hash *c1 = chain(0, 5), *c2 = chain(3000, 5);
  for (uint32_t i = 0; i < 5; i++) INS(b, i, c1[i]);
  for (uint32_t i = 0; i < 5; i++) INS(b, 5 + i, c2[i]);
  ok(b->len == 10 && LEAVES(b) == 2, "160 two chains of 5: len 10, leaves 2");
  uint32_t out[2];
  ok(EVICT(b, 1, out) == 1 && b->len == 9, "160 allocate 1 -> len 9");
  ok(EVICT(b, 1, out) == 1 && b->len == 8, "160 allocate 1 -> len 8");
  ok(LEAVES(b) == 2, "160 leaves 2");
  ok(EVICT(b, 2, out) == 2 && b->len == 6, "160 allocate 2 -> len 6");
  ok(LEAVES(b) == 2, "160 leaves 2");
  free(c1);
  free(c2);
  FREE_B(b);
}

static void s161(void) {
  kvbm__backend *b = make(64, 0);
  kvbm_hash stored = {0, 0}, impostor = {0, 0};
  int made = kvbm_hash_new(0xAA, 1, 0x11, 5, &stored) == 0;
  made &= kvbm_hash_new(0xAA, 1, 0x22, 5, &impostor) == 0;
  ok(made && kvbm_hash_cmp(stored, impostor) != 0 &&
         kvbm_hash_parent_fragment_for_child(stored, 6) == kvbm_hash_parent_fragment_for_child(impostor, 6),
     "161 stored and impostor differ but share (position, fragment)");
  INS(b, 42, stored);
  INS(b, 7, impostor); /* same (position, fragment): the crate panics */
  ok(b->len == 2, "161 both counted (no crash on the collision)");
  ok(LEAVES(b) == 2, "161 both are leaves");
  REM(b, 7);
  ok(b->len == 1 && LEAVES(b) == 1, "161 impostor removed by slot, stored stays");
  REM(b, 42);
  ok(b->len == 0 && NODES(b) == 0, "161 stored removed: graph empty");

  /* the other order of removal, and eviction of both */
  INS(b, 42, stored);
  INS(b, 7, impostor);
  REM(b, 42);
  ok(b->len == 1 && NODES(b) == 1, "161 stored removed first: impostor alone");
  INS(b, 42, stored);
  uint32_t out[4];
  ok(EVICT(b, 4, out) == 2 && NODES(b) == 0, "161 both evictable");
  FREE_B(b);
}

static void s162(void) {
  kvbm__backend *b = make(8, 0);
  kvbm_hash *c = chain(0, 8), *d = chain(9000, 8);
  for (uint32_t i = 0; i < 8; i++) INS(b, i, c[i]);
  ok(NODES(b) == 8, "162 capacity 8, chain of 8: 8 nodes");
  uint32_t out[8];
  ok(EVICT(b, 8, out) == 8 && b->len == 0 && NODES(b) == 0, "162 allocate 8 -> empty");
  int order = 1;
  for (uint32_t i = 0; i < 8; i++) order &= out[i] == 7 - i;
  ok(order, "162 a chain goes tail first");
  for (uint32_t i = 0; i < 8; i++) INS(b, i, d[i]);
  ok(NODES(b) == 8, "162 new chain of 8: still 8 nodes (slots reused)");
  free(c);
  free(d);
  FREE_B(b);
}

static void s163(void) {
  kvbm__backend *b = two_pairs(1); /* A0=0, A1=1, B0=2, B1=3 */
  ok(LEAVES(b) == 2, "163 Fifo: leaves [A1, B1]");
  REM(b, 1);
  ok(b->len == 3 && LEAVES(b) == 2, "163 remove A1: A0 re-leafed");
  ok(evicts(b, 2, (uint32_t[]){3, 0}, 2), "163 allocate(2) -> [B1, A0] (A0 at the tail)");
  FREE_B(b);
}

static void s164(void) {
  kvbm__backend *b = two_pairs(1);
  ok(evicts(b, 4, (uint32_t[]){1, 3, 0, 2}, 4), "164 Fifo: allocate(4) -> [B, Y, A, X]");
  FREE_B(b);
}

static void s165(void) {
  /* The pair hasher is the hashmap's mix: 6 distinct keys, 6 digests. */
  kvbm_hash k[6] = {{0, 1}, {1, 0}, {1, 1}, {2, 1}, {0, 2}, {255, 0x3FFFFFFFFFFFFF}};
  int distinct = 1;
  for (int i = 0; i < 6; i++)
    for (int j = i + 1; j < 6; j++) distinct &= kvbm__map_mix(k[i]) != kvbm__map_mix(k[j]);
  ok(distinct, "165 6 distinct (position, fragment) keys -> 6 distinct digests");
}

static void s166(void) {
  /* Fifo: add 0..3; unlink 2 and 0; re-add 0 -> drain [1, 3, 0]. Through
   * the backend: roots 0..3, remove(2) unlinks it, a child of 0 demotes it,
   * removing that child re-adds 0 (at the tail). */
  kvbm__backend *b = make(8, 1);
  for (uint32_t i = 0; i < 4; i++) INS(b, i, root(i));
  ok(LEAVES(b) == 4, "166 Fifo: four leaves");
  REM(b, 2);
  kvbm_hash *c = chain(0, 2); /* c[0] == root(0) */
  INS(b, 4, c[1]);
  ok(LEAVES(b) == 3 && b->len == 4, "166 0 demoted by its child, 2 unlinked");
  REM(b, 4);
  ok(LEAVES(b) == 3, "166 0 re-added");
  ok(evicts(b, 8, (uint32_t[]){1, 3, 0}, 3), "166 drain -> [1, 3, 0]");
  free(c);
  FREE_B(b);
}

static void s167(void) {
  kvbm__backend *b = make(8, 0);
  kvbm_hash *c = chain(0, 2);
  for (uint32_t i = 0; i < 3; i++) INS(b, i, root(i));
  INS(b, 3, c[1]); /* demotes 0 */
  ok(evicts(b, 1, (uint32_t[]){1}, 1), "167 Tick: 0 demoted -> head 1");
  REM(b, 3); /* 0 is a leaf again, at its original tick */
  ok(evicts(b, 1, (uint32_t[]){0}, 1), "167 Tick: 0 re-added -> head 0 (original tick)");
  FREE_B(b);

  b = make(8, 0);
  for (uint32_t i = 0; i < 3; i++) INS(b, i, root(i));
  REM(b, 0);
  INS(b, 0, root(0)); /* a new tick */
  ok(evicts(b, 8, (uint32_t[]){1, 2, 0}, 3), "167 Tick: removed and re-inserted 0 -> drain [1, 2, 0]");
  FREE_B(b);
  free(c);
}

/* ---------------------------------------------------------- edge cases */

static void edges(void) {
  uint32_t out[16];
  for (int fifo = 0; fifo < 2; fifo++) {
    kvbm__backend *b = make(8, fifo);
    ok(EVICT(b, 4, out) == 0 && EVICT(b, 0, out) == 0, "evict on empty returns 0 (%s)", fifo ? "fifo" : "tick");
    INS(b, 0, root(1));
    INS(b, 1, root(2));
    ok(EVICT(b, 10, out) == 2 && b->len == 0 && NODES(b) == 0, "evict(n) beyond len returns len (%s)",
       fifo ? "fifo" : "tick");
    FREE_B(b);
  }

  /* a chain inserted child first (tail to head): still evicted tail first */
  kvbm__backend *b = make(8, 0);
  kvbm_hash *c = chain(0, 5);
  for (uint32_t i = 5; i-- > 0;) INS(b, i, c[i]);
  ok(b->len == 5 && LEAVES(b) == 1 && NODES(b) == 5, "chain inserted backwards: each ghost promoted");
  ok(evicts(b, 5, (uint32_t[]){4, 3, 2, 1, 0}, 5), "and still evicted tail first");
  FREE_B(b);

  b = make(8, 0);
  INS(b, 4, c[4]);
  INS(b, 2, c[2]);
  ok(b->len == 2 && NODES(b) == 4 && LEAVES(b) == 2, "gap: 2 and 4 are both leaves (ghost 3 between)");
  INS(b, 3, c[3]);
  ok(b->len == 3 && NODES(b) == 4 && LEAVES(b) == 1, "3 fills the gap: one chain 2-3-4, ghost 1 above");
  ok(evicts(b, 3, (uint32_t[]){4, 3, 2}, 3) && NODES(b) == 0, "gap chain drains tail first");
  FREE_B(b);

  /* an interior removal leaves a ghost that keeps the chain linked */
  b = make(8, 1);
  for (uint32_t i = 0; i < 3; i++) INS(b, i, c[i]);
  REM(b, 1);
  ok(b->len == 2 && LEAVES(b) == 1 && NODES(b) == 3, "interior removal leaves a ghost");
  ok(evicts(b, 1, (uint32_t[]){2}, 1) && LEAVES(b) == 1 && NODES(b) == 1,
     "evicting the leaf prunes the ghost, re-leafs the root");
  INS(b, 1, c[1]);
  ok(LEAVES(b) == 1 && NODES(b) == 2, "re-inserting links under the root again");
  ok(evicts(b, 2, (uint32_t[]){1, 0}, 2), "then child, root");
  FREE_B(b);

  /* ignored inputs: out-of-range slot, double insert, absent remove, a
   * malformed hash */
  b = make(4, 0);
  INS(b, 4, c[0]);
  INS(b, 99, c[0]);
  REM(b, 3);
  REM(b, 1000);
  ok(b->len == 0 && NODES(b) == 0, "out-of-range and absent slots are ignored");
  INS(b, 0, c[0]);
  INS(b, 0, c[1]);
  ok(b->len == 1 && NODES(b) == 1, "inserting a present slot again is ignored");
  kvbm_hash bad = {UINT64_MAX, UINT64_MAX};
  INS(b, 1, bad);
  INS(b, 2, bad);
  ok(b->len == 3 && LEAVES(b) == 3, "malformed hashes are standalone leaves");
  ok(EVICT(b, 8, out) == 3 && NODES(b) == 0, "and evictable");
  ok(b->ops->bytes(b) >= 4 * sizeof(uint32_t), "bytes counts the memory held");
  FREE_B(b);

  b = make(0, 0);
  INS(b, 0, c[0]);
  ok(b->len == 0 && EVICT(b, 1, out) == 0, "zero slots: nothing is ever inserted");
  FREE_B(b);
  free(c);

  /* Ghost overflow: blocks hit (removed) and then reset rather than
   * released, their slots reused; more ghosts than the slab was sized for
   * make it grow, so no chain is cut and parents still wait for children. */
  b = make(4, 0);
  kvbm_hash *a = chain(0, 4), *d = chain(100, 4), *e = chain(200, 4);
  for (uint32_t i = 0; i < 4; i++) INS(b, i, a[i]);
  for (uint32_t i = 0; i < 3; i++) REM(b, i); /* 3 ghosts above a[3] */
  for (uint32_t i = 0; i < 3; i++) INS(b, i, d[i]);
  for (uint32_t i = 0; i < 2; i++) REM(b, i); /* a 5th ghost lets go of its children */
  INS(b, 0, e[1]);                            /* its ghost parent would be a 5th */
  INS(b, 1, e[3]);
  ok(b->len == 4 && NODES(b) > 8, "ghost overflow: len 4, the slab grew past its first 8 nodes");
  ok(EVICT(b, 8, out) == 4 && b->len == 0 && NODES(b) == 0, "ghost overflow: all evictable, graph empty");
  free(a);
  free(d);
  free(e);
  FREE_B(b);
}

/* ---------------------------------------------------------- allocation */

typedef struct {
  int budget;   /* allocations left before failing; -1: unlimited */
  int allocs;   /* allocations or growths made */
  long live;    /* bytes held */
} counter;

static void *counting_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  counter *c = ud;
  if (nsize == 0) {
    c->live -= (long)osize;
    free(ptr);
    return NULL;
  }
  if (c->budget == 0) return NULL;
  if (c->budget > 0) c->budget--;
  void *p = realloc(ptr, nsize);
  if (p) c->allocs++, c->live += (long)nsize - (long)(ptr ? osize : 0);
  return p;
}

static void allocation(void) {
  int failed_clean = 1;
  for (int k = 0; k < 5; k++) {
    counter c = {k, 0, 0};
    kvbm_allocator a = {counting_alloc, &c};
    kvbm__backend *b = kvbm__lineage_new(&a, 64, k & 1);
    if (b) {
      b->ops->destroy(b);
      if (k < 3) failed_clean = 0; /* needs at least 4 allocations (tick) */
    } else if (c.live != 0) {
      failed_clean = 0;
    }
  }
  ok(failed_clean, "construction fails cleanly (NULL, nothing held) at each allocation");

  for (int fifo = 0; fifo < 2; fifo++) {
    counter c = {-1, 0, 0};
    kvbm_allocator a = {counting_alloc, &c};
    kvbm__backend *b = kvbm__lineage_new(&a, 32, fifo);
    if (!b) exit(2);
    int before = c.allocs;
    ok(b->ops->bytes(b) == (size_t)c.live, "bytes equals the memory held (%s)", fifo ? "fifo" : "tick");
    kvbm_hash *h = chain(0, 32), *g = chain(77, 32);
    uint32_t out[32];
    for (int round = 0; round < 50; round++) {
      kvbm_hash *x = round & 1 ? g : h;
      for (uint32_t i = 32; i-- > 0;) INS(b, i, x[(i * 7 + (uint32_t)round) % 32]);
      for (uint32_t i = 0; i < 32; i += 3) REM(b, i);
      EVICT(b, 32, out);
    }
    ok(c.allocs == before && b->len == 0 && NODES(b) == 0, "no allocation after construction (%s)",
       fifo ? "fifo" : "tick");
    free(h);
    free(g);
    b->ops->destroy(b);
    ok(c.live == 0, "destroy frees everything (%s)", fifo ? "fifo" : "tick");
  }

  /* ghosts beyond the first slab: it grows; when it cannot, the extra ghost
   * lets go of its children (roots from then on) and nothing breaks */
  for (int can_grow = 0; can_grow < 2; can_grow++) {
    counter c = {-1, 0, 0};
    kvbm_allocator a = {counting_alloc, &c};
    kvbm__backend *b = kvbm__lineage_new(&a, 4, 0);
    if (!b) exit(2);
    if (!can_grow) c.budget = 0;
    kvbm_hash *x = chain(0, 8);
    uint32_t out[8];
    for (uint32_t i = 0; i < 4; i++) INS(b, i, x[i]);
    for (uint32_t i = 0; i < 3; i++) REM(b, i); /* ghosts x0..x2 above x3 */
    for (uint32_t i = 0; i < 3; i++) INS(b, i, x[4 + i]);
    REM(b, 3), REM(b, 0), REM(b, 1); /* ghosts x3..x5 too: 6, with 4 spare nodes */
    ok(b->len == 1 && NODES(b) == (can_grow ? 7u : 2u), "%s: one real block left under %zu nodes",
       can_grow ? "the slab grows" : "the slab cannot grow", NODES(b));
    ok(EVICT(b, 8, out) == 1 && out[0] == 2 && b->len == 0 && NODES(b) == 0,
       "%s: it stays evictable and the graph empties", can_grow ? "grown" : "full");
    free(x);
    b->ops->destroy(b);
    ok(c.live == 0, "and destroy frees everything");
  }
}

/* ------------------------------------------------ randomized vs. model */

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint32_t rnd(uint32_t n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (uint32_t)(rng % n);
}

#define NBLK_MAX 512

/* A universe of blocks forming a tree: each sequence forks a random earlier
 * one at a random point. par[i] is block i's parent block (-1: root). */
static size_t universe(kvbm_hash *hs, int *par) {
  size_t nb = 0;
  size_t lens[64];
  uint32_t toks[64][24];
  for (int s = 0; s < 64 && nb + 24 <= NBLK_MAX; s++) {
    size_t len = 1 + rnd(20), keep = 0;
    if (s > 0 && rnd(4)) {
      int f = (int)rnd((uint32_t)s);
      keep = rnd((uint32_t)lens[f] + 1);
      if (keep > len) keep = len;
      memcpy(toks[s], toks[f], keep * sizeof(uint32_t));
    }
    for (size_t i = keep; i < len; i++) toks[s][i] = rnd(1u << 30);
    lens[s] = len;
    kvbm_sequence *q = NULL;
    if (kvbm_sequence_new(NULL, 1, 0, &q) != 0 || kvbm_sequence_extend(q, toks[s], len, NULL, NULL) < 0)
      exit(2);
    int prev = -1;
    for (size_t i = 0; i < len; i++) {
      kvbm_hash h = kvbm_sequence_hashes(q)[i];
      int found = -1;
      for (size_t j = 0; j < nb && found < 0; j++)
        if (kvbm_hash_cmp(hs[j], h) == 0) found = (int)j;
      if (found < 0) {
        hs[nb] = h;
        par[nb] = prev;
        found = (int)nb++;
      }
      prev = found;
    }
    kvbm_sequence_free(q);
  }
  return nb;
}

/* The first slot from a random start whose presence is want (-1: none). */
static int pick_slot(const int *blk_of, uint32_t nslots, int want) {
  uint32_t s = rnd(nslots);
  for (uint32_t i = 0; i < nslots; i++, s = (s + 1) % nslots)
    if ((blk_of[s] >= 0) == want) return (int)s;
  return -1;
}

/* Operations in proportions ins : hit : evict (out of 10). */
static void randomized(int fifo, uint32_t nslots, int strict, int ops, uint32_t ins, uint32_t hit) {
  static kvbm_hash hs[NBLK_MAX];
  static int par[NBLK_MAX], slot_of[NBLK_MAX];
  size_t nb = universe(hs, par);
  int *blk_of = malloc(nslots * sizeof *blk_of);
  uint32_t out[8];
  kvbm__backend *b = make(nslots, fifo);
  size_t len = 0;
  int good = 1, parent_ok = 1;
  for (size_t i = 0; i < nb; i++) slot_of[i] = -1;
  for (uint32_t s = 0; s < nslots; s++) blk_of[s] = -1;

  for (int op = 0; op < ops && good; op++) {
    uint32_t r = rnd(10);
    if (r < ins) { /* a random absent block into a free slot */
      int blk = (int)rnd((uint32_t)nb), s = pick_slot(blk_of, nslots, 0);
      if (slot_of[blk] >= 0 || s < 0) continue;
      INS(b, (uint32_t)s, hs[blk]);
      slot_of[blk] = s, blk_of[s] = blk, len++;
    } else if (r < ins + hit) { /* a hit */
      int s = pick_slot(blk_of, nslots, 1);
      if (s < 0) continue;
      REM(b, (uint32_t)s);
      slot_of[blk_of[s]] = -1, blk_of[s] = -1, len--;
    } else {
      size_t k = 1 + rnd(4), m = EVICT(b, k, out);
      if (m != (k < len ? k : len)) good = 0;
      for (size_t i = 0; i < m && good; i++) {
        int blk = out[i] < nslots ? blk_of[out[i]] : -1;
        if (blk < 0) {
          good = 0;
          break;
        }
        slot_of[blk] = -1, blk_of[out[i]] = -1, len--;
        /* a block is never evicted while its child block is present */
        for (uint32_t s = 0; s < nslots; s++)
          if (blk_of[s] >= 0 && par[blk_of[s]] == blk) parent_ok = 0;
      }
    }
    if (b->len != len || LEAVES(b) > len || (len > 0 && LEAVES(b) == 0))
      good = 0;
  }
  ok(good, "random %s nslots %u: len, leaves and victims agree with the model over %d ops",
     fifo ? "fifo" : "tick", nslots, ops);
  if (strict) ok(parent_ok, "random %s nslots %u: no parent evicted before its child", fifo ? "fifo" : "tick", nslots);
  size_t m = 0, got;
  while ((got = EVICT(b, 8, out)) > 0) m += got;
  ok(m == len && b->len == 0 && NODES(b) == 0 && LEAVES(b) == 0, "random %s nslots %u: drains to an empty graph",
     fifo ? "fifo" : "tick", nslots);
  FREE_B(b);
  free(blk_of);
}

int main(void) {
  s153();
  s154();
  s155();
  s156();
  s157();
  s158();
  s159();
  s160();
  s161();
  s162();
  s163();
  s164();
  s165();
  s166();
  s167();
  edges();
  allocation();
  for (int fifo = 0; fifo < 2; fifo++) {
    /* room for every block: ghosts are never capped */
    randomized(fifo, NBLK_MAX, 1, 20000, 7, 2);
    /* few slots and many hits: ghost overflow */
    randomized(fifo, 16, 1, 20000, 6, 3); /* ghosts outgrow the slab: it grows */
  }
  return tap_done();
}
