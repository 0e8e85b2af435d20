/* backend_lists.h - intrusive doubly linked lists over slot ids, shared by
 * the list-ordered backends. The heads are extra nodes after the last slot,
 * so a list costs no allocation at run time; an unlinked node points to
 * itself. */
#ifndef KVBM_BACKEND_LISTS_H
#define KVBM_BACKEND_LISTS_H

#include "internal.h"

#define NO_SLOT UINT32_MAX

typedef struct {
  uint32_t *prev, *next; /* nslots + nlists nodes */
  uint32_t nslots;
} lists;

static inline int lists_init(lists *l, const kvbm_allocator *a, uint32_t nslots, unsigned nlists) {
  size_t n = (size_t)nslots + nlists;
  l->nslots = nslots;
  l->prev = kvbm__realloc(a, NULL, 0, n * sizeof *l->prev);
  l->next = kvbm__realloc(a, NULL, 0, n * sizeof *l->next);
  if (!l->prev || !l->next) {
    kvbm__free(a, l->prev, n * sizeof *l->prev);
    kvbm__free(a, l->next, n * sizeof *l->next);
    return KVBM_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) l->prev[i] = l->next[i] = (uint32_t)i; /* all unlinked */
  return 0;
}

static inline void lists_free(lists *l, const kvbm_allocator *a, unsigned nlists) {
  size_t n = (size_t)l->nslots + nlists;
  kvbm__free(a, l->prev, n * sizeof *l->prev);
  kvbm__free(a, l->next, n * sizeof *l->next);
}

/* Links slot (unlinked) just before node at (a slot in a list, or a head). */
static inline void insert_before(lists *l, uint32_t at, uint32_t slot) {
  uint32_t before = l->prev[at];
  l->prev[slot] = before;
  l->next[slot] = at;
  l->next[before] = slot;
  l->prev[at] = slot;
}

static inline void push_tail(lists *l, unsigned list, uint32_t slot) {
  insert_before(l, l->nslots + list, slot);
}

static inline void push_head(lists *l, unsigned list, uint32_t slot) {
  insert_before(l, l->next[l->nslots + list], slot);
}

static inline void unlink_node(lists *l, uint32_t slot) {
  l->next[l->prev[slot]] = l->next[slot];
  l->prev[l->next[slot]] = l->prev[slot];
  l->prev[slot] = l->next[slot] = slot; /* marks "not in a list" */
}

static inline uint32_t pop_head(lists *l, unsigned list) {
  uint32_t head = l->nslots + list, first = l->next[head];
  if (first == head) return NO_SLOT;
  unlink_node(l, first);
  return first;
}

static inline int in_list(const lists *l, uint32_t slot) { return l->next[slot] != slot; }

static inline uint32_t list_first(const lists *l, unsigned list) {
  uint32_t head = l->nslots + list, first = l->next[head];
  return first == head ? NO_SLOT : first;
}

#endif
