/* bip_order.h - where a released block goes in a one-list victim order under
 * the Bimodal Insertion Policy (Qureshi et al., "Adaptive Insertion Policies
 * for High Performance Caching", ISCA '07), adapted to prefix chains.
 *
 * The list is evicted from its head. A block released after a hit goes to
 * the tail (protected); a block never hit goes to the head (evicted first)
 * except one fresh chain in BIP_EPSILON, counted, not drawn: when LRU
 * thrashes (reuse farther away than the pool reaches) this keeps a fraction
 * of the blocks long enough to be reused.
 *
 * A release puts a prefix down root first, so a block that is the child of
 * the one inserted just before it continues that chain: it shares the
 * chain's decision (a chain is kept or dropped whole) and goes just before
 * its parent in victim order, so the deepest block of a run goes first (a
 * prefix match stops at the first missing block: an ancestor evicted before
 * its descendants wastes them). */
#ifndef KVBM_BIP_ORDER_H
#define KVBM_BIP_ORDER_H

#include "backend_lists.h"

#define BIP_EPSILON 32 /* the paper's epsilon, 1/32 */

typedef struct {
  kvbm_hash last_hash;   /* the previous insert */
  uint32_t last;         /* its node, NO_SLOT: none */
  uint8_t child;         /* the insert being placed continues last's chain */
  uint8_t last_fresh;    /* last had never been hit */
  uint8_t last_decision; /* BIP's decision for last: 1 protected */
  uint8_t last_end;      /* where last went: 1 tail, 0 head */
  uint32_t fresh_chains; /* fresh chains decided so far */
} bip_chain;

static inline void bip_chain_init(bip_chain *c) {
  memset(c, 0, sizeof *c);
  c->last = NO_SLOT;
}

static inline int bip_child_of(kvbm_hash h, kvbm_hash parent) {
  uint64_t pos = kvbm_hash_position(h);
  return pos == kvbm_hash_position(parent) + 1 &&
         kvbm_hash_parent_fragment(h) == kvbm_hash_parent_fragment_for_child(parent, pos);
}

/* BIP's decision for an insert of h (reused since admitted or not): 1
 * protected (tail), 0 not (head). Place the insert next with bip_link. */
static inline int bip_decide(bip_chain *c, kvbm_hash h, int reused) {
  c->child = c->last != NO_SLOT && bip_child_of(h, c->last_hash);
  int decision = reused                      ? 1
                 : c->child && c->last_fresh ? c->last_decision
                                             : c->fresh_chains++ % BIP_EPSILON == 0;
  c->last_hash = h;
  c->last_fresh = !reused;
  c->last_decision = (uint8_t)decision;
  return decision;
}

/* Links node (unlinked) into list 0 of l at the tail (end 1) or the head
 * (end 0); a child of the previous insert that goes to the same end goes
 * just before it instead. */
static inline void bip_link(bip_chain *c, lists *l, uint32_t node, int end) {
  if (c->child && in_list(l, c->last) && end == c->last_end) insert_before(l, c->last, node);
  else if (end) push_tail(l, 0, node);
  else push_head(l, 0, node);
  c->last = node;
  c->last_end = (uint8_t)end;
}

#endif
