/* lineage.c - the lineage backend: a parent/child forest of inactive blocks
 * in which only leaves are evictable, so a prefix outlives its extensions.
 *
 * Nodes live in a slab sized up front (2 * nslots) with a free list; the
 * index maps (position, fragment) to a node. A Real node holds a slot; a
 * Ghost stands in for an absent block that still has descendants, and is
 * pruned as soon as it has no children left. Two leaf orders: Tick (by the
 * time a node became Real, kept across demotion) and FIFO (by the time it
 * last became a leaf). Nothing allocates after kvbm__lineage_new. */
#include "backend.h"
#include "hashmap.h"

#define NONE UINT32_MAX

enum { FREE, GHOST, REAL };

typedef struct {
  kvbm_hash key; /* index key {hi = position, lo = fragment} */
  uint64_t tick; /* Tick order: when it became Real; 0 when not Real */
  uint32_t slot; /* Real: its slot */
  uint32_t parent, first_child;
  uint32_t next_sib, prev_sib; /* siblings; next_sib is the free-list link */
  uint32_t leaf_prev, leaf_next; /* FIFO leaf list; Tick: leaf_prev is the heap index */
  uint8_t state, leaf, indexed;
} node;

typedef struct {
  uint64_t tick;
  uint32_t node;
} heap_entry;

typedef struct {
  kvbm__backend base;
  const kvbm_allocator *alloc;
  int fifo;
  uint32_t nslots, cap; /* cap = 2 * nslots nodes */
  uint32_t slot_cap;    /* slot_node entries: nslots, at least 1 */
  node *nodes;
  uint32_t *slot_node; /* slot -> its Real node, NONE when absent */
  uint32_t free_head, used, ghosts;
  size_t leaves;
  kvbm__map index;
  uint32_t head, tail; /* FIFO leaves, oldest at head */
  heap_entry *heap;    /* Tick leaves: a min-heap with lazy deletion */
  size_t heap_len, heap_cap;
  uint64_t next_tick;
} lineage;

static kvbm__keys keys_of(const lineage *l) {
  return (kvbm__keys){&l->nodes[0].key, sizeof(node)};
}

static uint32_t node_alloc(lineage *l, uint8_t state) {
  uint32_t n = l->free_head;
  if (n == NONE) return NONE;
  node *x = &l->nodes[n];
  l->free_head = x->next_sib;
  *x = (node){.slot = NONE, .parent = NONE, .first_child = NONE, .next_sib = NONE,
              .prev_sib = NONE, .leaf_prev = NONE, .leaf_next = NONE, .state = state};
  l->used++;
  if (state == GHOST) l->ghosts++;
  return n;
}

static void node_free(lineage *l, uint32_t n) {
  node *x = &l->nodes[n];
  if (x->state == GHOST) l->ghosts--;
  x->state = FREE;
  x->tick = 0;
  x->next_sib = l->free_head;
  l->free_head = n;
  l->used--;
}

/* Ghosts (placeholders for parents that are not in the index) are rare but
 * unbounded: a chain whose interior blocks were hit and then reset instead
 * of cached again leaves one per position. The slab starts at twice the
 * slots, which real nodes can never exhaust; past that, more ghost room is
 * grown here (off the common path). Keeping ghosts <= cap - nslots means a
 * real insert always finds a node. Returns 0 when growing failed. */
static int ghost_room(lineage *l) {
  if (l->ghosts < l->cap - l->nslots) return 1;
  if (l->cap > (NONE - 1) / 2) return 0;
  uint32_t ncap = 2 * l->cap;
  node *nodes = kvbm__realloc(l->alloc, l->nodes, (size_t)l->cap * sizeof(node), (size_t)ncap * sizeof(node));
  if (!nodes) return 0;
  l->nodes = nodes;
  for (uint32_t i = l->cap; i < ncap; i++) {
    l->nodes[i].state = FREE;
    l->nodes[i].next_sib = i + 1 < ncap ? i + 1 : l->free_head;
  }
  l->free_head = l->cap;
  l->cap = ncap;
  return 1;
}

/* ------------------------------------------------------------- Tick heap */

static int heap_less(heap_entry a, heap_entry b) {
  return a.tick < b.tick || (a.tick == b.tick && a.node < b.node);
}

/* Tick leaves: a binary min-heap of exactly the current leaves, keyed by
 * (tick, node); each node knows its index (leaf_prev, unused by Tick), so a
 * demoted leaf leaves the heap at once and the heap never holds stale
 * entries. A re-leafed node comes back with its original tick. */
static void heap_set(lineage *l, size_t i, heap_entry e) {
  l->heap[i] = e;
  l->nodes[e.node].leaf_prev = (uint32_t)i;
}

static void heap_up(lineage *l, size_t i) {
  heap_entry e = l->heap[i];
  while (i > 0 && heap_less(e, l->heap[(i - 1) / 2])) {
    heap_set(l, i, l->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  heap_set(l, i, e);
}

static void heap_down(lineage *l, size_t i) {
  heap_entry e = l->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= l->heap_len) break;
    if (c + 1 < l->heap_len && heap_less(l->heap[c + 1], l->heap[c])) c++;
    if (!heap_less(l->heap[c], e)) break;
    heap_set(l, i, l->heap[c]);
    i = c;
  }
  heap_set(l, i, e);
}

static void heap_push(lineage *l, uint32_t n) {
  size_t i = l->heap_len++; /* leaves <= nslots <= heap_cap */
  l->heap[i] = (heap_entry){l->nodes[n].tick, n};
  heap_up(l, i);
}

static void heap_remove(lineage *l, uint32_t n) {
  size_t i = l->nodes[n].leaf_prev;
  heap_entry last = l->heap[--l->heap_len];
  if (i == l->heap_len) return;
  heap_set(l, i, last);
  if (i > 0 && heap_less(last, l->heap[(i - 1) / 2]))
    heap_up(l, i);
  else
    heap_down(l, i);
}

/* ----------------------------------------------------------- leaf policy */

static void leaf_add(lineage *l, uint32_t n) {
  node *x = &l->nodes[n];
  x->leaf = 1;
  l->leaves++;
  if (l->fifo) {
    x->leaf_prev = l->tail;
    x->leaf_next = NONE;
    if (l->tail != NONE)
      l->nodes[l->tail].leaf_next = n;
    else
      l->head = n;
    l->tail = n;
  } else {
    heap_push(l, n); /* with its original tick if it was a leaf before */
  }
}

static void leaf_del(lineage *l, uint32_t n) {
  node *x = &l->nodes[n];
  x->leaf = 0;
  l->leaves--;
  if (l->fifo) {
    if (x->leaf_prev != NONE)
      l->nodes[x->leaf_prev].leaf_next = x->leaf_next;
    else
      l->head = x->leaf_next;
    if (x->leaf_next != NONE)
      l->nodes[x->leaf_next].leaf_prev = x->leaf_prev;
    else
      l->tail = x->leaf_prev;
    x->leaf_prev = x->leaf_next = NONE;
  } else {
    heap_remove(l, n);
  }
}

static uint32_t next_victim(lineage *l) {
  if (l->leaves == 0) return NONE;
  return l->fifo ? l->head : l->heap[0].node;
}

/* ----------------------------------------------------------------- graph */

static void link_child(lineage *l, uint32_t p, uint32_t c) {
  node *px = &l->nodes[p], *cx = &l->nodes[c];
  cx->parent = p;
  cx->prev_sib = NONE;
  cx->next_sib = px->first_child;
  if (px->first_child != NONE) l->nodes[px->first_child].prev_sib = c;
  px->first_child = c;
}

static void unlink_child(lineage *l, uint32_t c) {
  node *cx = &l->nodes[c];
  if (cx->prev_sib != NONE)
    l->nodes[cx->prev_sib].next_sib = cx->next_sib;
  else
    l->nodes[cx->parent].first_child = cx->next_sib;
  if (cx->next_sib != NONE) l->nodes[cx->next_sib].prev_sib = cx->prev_sib;
  cx->parent = cx->prev_sib = cx->next_sib = NONE;
}

/* Real n stops being Real: it becomes a Ghost and the childless ghosts from
 * it upwards are pruned, in a loop since chains can be long. */
static void remove_node(lineage *l, uint32_t n) {
  int room = ghost_room(l); /* checked while this node still counts as real */
  node *x = &l->nodes[n];   /* (after: ghost_room may have moved the slab) */
  if (x->leaf) leaf_del(l, n);
  l->slot_node[x->slot] = NONE;
  x->slot = NONE;
  x->state = GHOST;
  x->tick = 0;
  l->ghosts++;
  l->base.len--;
  /* no room for one more ghost (the slab could not grow): this one lets go
   * of its children instead, and they carry on as roots */
  if (!room)
    while (x->first_child != NONE) unlink_child(l, x->first_child);

  while (x->state == GHOST && x->first_child == NONE) {
    uint32_t p = x->parent;
    if (p != NONE) unlink_child(l, n);
    if (x->indexed) kvbm__map_del(&l->index, x->key, n);
    node_free(l, n);
    if (p == NONE) return;
    n = p;
    x = &l->nodes[n];
    if (x->first_child != NONE) return;
    if (x->state == REAL) {
      leaf_add(l, n);
      return;
    }
  }
}

/* --------------------------------------------------------------- the ops */

static void lin_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  lineage *l = (lineage *)b;
  if (slot >= l->nslots || l->slot_node[slot] != NONE) return; /* not a valid insert */
  int valid = kvbm_hash_valid(h);
  uint64_t pos = kvbm_hash_position(h);
  kvbm_hash key = {pos, kvbm_hash_parent_fragment_for_child(h, pos + 1)};
  uint32_t n = valid ? kvbm__map_get(&l->index, keys_of(l), key) : NONE;
  int indexed = 1;

  if (n != NONE && l->nodes[n].state == GHOST) {
    l->nodes[n].state = REAL; /* promoted: keeps its children and parent */
    l->ghosts--;
  } else {
    /* A Real node already at the key is a fragment collision (the crate
     * panics): the newcomer stands alone, unindexed, still evictable. */
    indexed = valid && n == NONE;
    n = node_alloc(l, REAL);
    if (n == NONE) return; /* cannot happen: ghosts <= cap - nslots */
    l->nodes[n].key = key;
    if (indexed && kvbm__map_add(&l->index, key, n) != 0) indexed = 0;
    l->nodes[n].indexed = (uint8_t)indexed;
  }
  node *x = &l->nodes[n];
  x->slot = slot;
  x->tick = ++l->next_tick;
  l->slot_node[slot] = n;
  l->base.len++;

  if (indexed && pos > 0 && x->parent == NONE) {
    kvbm_hash pkey = {pos - 1, kvbm_hash_parent_fragment(h)};
    uint32_t p = kvbm__map_get(&l->index, keys_of(l), pkey);
    if (p == NONE && ghost_room(l)) {
      p = node_alloc(l, GHOST);
      if (p != NONE) {
        l->nodes[p].key = pkey;
        l->nodes[p].indexed = 1;
        if (kvbm__map_add(&l->index, pkey, p) != 0) {
          node_free(l, p);
          p = NONE;
        }
      }
    }
    if (p != NONE) {
      if (l->nodes[p].leaf) leaf_del(l, p); /* demoted */
      link_child(l, p, n);
    }
  }
  if (l->nodes[n].first_child == NONE) leaf_add(l, n); /* (ghost_room may have moved x) */
}

static void lin_remove(kvbm__backend *b, uint32_t slot) {
  lineage *l = (lineage *)b;
  if (slot >= l->nslots || l->slot_node[slot] == NONE) return;
  remove_node(l, l->slot_node[slot]);
}

static size_t lin_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  lineage *l = (lineage *)b;
  size_t i = 0;
  for (; i < n; i++) {
    uint32_t v = next_victim(l);
    if (v == NONE) break;
    out[i] = l->nodes[v].slot;
    remove_node(l, v); /* may expose the parent as the next victim */
  }
  return i;
}

static size_t lin_bytes(const kvbm__backend *b) {
  const lineage *l = (const lineage *)b;
  return sizeof *l + (size_t)l->cap * sizeof(node) + (size_t)l->slot_cap * sizeof(uint32_t) +
         l->heap_cap * sizeof(heap_entry) + kvbm__map_bytes(&l->index);
}

static void lin_destroy(kvbm__backend *b) {
  lineage *l = (lineage *)b;
  if (!l) return;
  const kvbm_allocator *a = l->alloc;
  kvbm__free(a, l->nodes, (size_t)l->cap * sizeof(node));
  kvbm__free(a, l->slot_node, (size_t)l->slot_cap * sizeof(uint32_t));
  kvbm__free(a, l->heap, l->heap_cap * sizeof(heap_entry));
  kvbm__map_free(&l->index);
  kvbm__free(a, l, sizeof *l);
}

static const kvbm__backend_ops lineage_ops = {.insert = lin_insert, .remove = lin_remove, .evict = lin_evict, .destroy = lin_destroy, .bytes =
                                              lin_bytes};

kvbm__backend *kvbm__lineage_new(const kvbm_allocator *a, uint32_t nslots, int fifo_leaves) {
  /* node ids must stay below NONE */
  if (nslots > (UINT32_MAX - 2) / 2 || (size_t)nslots * 2 > SIZE_MAX / 2 / sizeof(node)) return NULL;
  lineage *l = kvbm__realloc(a, NULL, 0, sizeof *l);
  if (!l) return NULL;
  memset(l, 0, sizeof *l);
  l->base.ops = &lineage_ops;
  l->alloc = a;
  l->fifo = fifo_leaves != 0;
  l->nslots = nslots;
  l->slot_cap = nslots ? nslots : 1; /* never a zero-byte allocation */
  l->cap = 2 * l->slot_cap;
  l->heap_cap = l->fifo ? 0 : (size_t)l->slot_cap; /* leaves are Real nodes */
  l->head = l->tail = NONE;
  l->nodes = kvbm__realloc(a, NULL, 0, (size_t)l->cap * sizeof(node));
  l->slot_node = kvbm__realloc(a, NULL, 0, (size_t)l->slot_cap * sizeof(uint32_t));
  if (!l->fifo) l->heap = kvbm__realloc(a, NULL, 0, l->heap_cap * sizeof(heap_entry));
  int rc = kvbm__map_init(&l->index, a, l->cap); /* leaves buckets NULL on failure */
  if (!l->nodes || !l->slot_node || (!l->fifo && !l->heap) || rc != 0) {
    lin_destroy(&l->base);
    return NULL;
  }
  for (uint32_t i = 0; i < l->slot_cap; i++) l->slot_node[i] = NONE;
  for (uint32_t i = 0; i < l->cap; i++) {
    l->nodes[i].state = FREE;
    l->nodes[i].next_sib = i + 1 < l->cap ? i + 1 : NONE;
  }
  l->free_head = 0;
  return &l->base;
}

size_t kvbm__lineage_leaves(const kvbm__backend *b) { return ((const lineage *)b)->leaves; }

size_t kvbm__lineage_nodes(const kvbm__backend *b) { return ((const lineage *)b)->used; }
