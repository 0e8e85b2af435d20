/* registry.h - the registry's internals, shared with the manager. */
#ifndef KVBM_REGISTRY_H
#define KVBM_REGISTRY_H

#include "hashmap.h"
#include "tinylfu.h"
#include "events.h"

#define KVBM__NONE UINT32_MAX

/* One live registration. refs counts every holder: the slots that carry the
 * hash (primary, duplicate or inactive, in any tier), weak blocks and
 * explicit handles. At 0 the entry goes away (on_remove fires). Its top bit
 * says that a create event went out, so the remove event must follow. */
#define KVBM__EMITTED 0x80000000u
#define KVBM__REFS(en) ((en)->refs & ~KVBM__EMITTED)
typedef struct kvbm__entry {
  kvbm_hash hash; /* first: the map reads keys from here */
  uint32_t refs;
  uint32_t holds; /* of refs: acquires and weak blocks, the only ones unacquire may drop */
  uint32_t mark;                       /* scan de-duplication epoch */
  uint32_t slot[KVBM_MAX_TIERS];       /* this hash's primary or inactive slot per tier */
  uint32_t presence[KVBM_MAX_TIERS];   /* primary + duplicate + inactive slots per tier */
} kvbm__entry;

struct kvbm_registry {
  kvbm_allocator alloc;
  unsigned users;     /* references: the creator + one per manager */
  unsigned tiers;     /* bit t set: tier t is taken by a manager */
  kvbm__entry *entries;
  size_t nentries, entries_cap;
  uint32_t free_head; /* free entries chained through .refs */
  size_t live;
  uint32_t epoch;
  kvbm__map map;
  kvbm__tinylfu *tracker; /* NULL: no frequency tracking */
  kvbm_registry_hooks hooks;
  kvbm_events *events; /* NULL: no events */
};

static inline kvbm__keys kvbm__registry_keys(const kvbm_registry *r) {
  return (kvbm__keys){r->entries, sizeof(kvbm__entry)};
}

static inline uint32_t kvbm__registry_find(const kvbm_registry *r, kvbm_hash h) {
  return kvbm__map_get(&r->map, kvbm__registry_keys(r), h);
}

/* Guarantees that n more entries can be created without allocating. */
int kvbm__registry_reserve(kvbm_registry *r, size_t n);
/* Creates the entry for h (absent, room reserved): fires on_create and
 * touches the tracker once, as the crate does for a new registration. */
uint32_t kvbm__registry_create(kvbm_registry *r, kvbm_hash h);
void kvbm__registry_unref(kvbm_registry *r, uint32_t e);
int kvbm__registry_take_tier(kvbm_registry *r);
void kvbm__registry_drop_tier(kvbm_registry *r, unsigned tier);

#endif
