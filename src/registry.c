/* registry.c - one live registration per hash, shared by the managers of all
 * tiers: reference counts, presence per tier, the frequency tracker. */
#include "registry.h"

int kvbm_registry_new(const kvbm_allocator *alloc, kvbm_frequency freq, kvbm_registry **out) {
#define LOG2_ENTRIES(name, lua_name, log2) log2,
  static const unsigned char log2_entries[] = {KVBM_FREQUENCY_MAP(LOG2_ENTRIES)};
#undef LOG2_ENTRIES
  if ((unsigned)freq >= KVBM__FREQUENCY_END) return KVBM_EINVAL;
  kvbm_allocator a = alloc ? *alloc : (kvbm_allocator){NULL, NULL};
  kvbm_registry *r = kvbm__realloc(&a, NULL, 0, sizeof *r);
  if (!r) return KVBM_ENOMEM;
  memset(r, 0, sizeof *r);
  r->alloc = a;
  r->users = 1;
  r->free_head = KVBM__NONE;
  int rc = kvbm__map_init(&r->map, &r->alloc, 64);
  if (rc == 0 && freq != KVBM_FREQUENCY_NONE)
    rc = kvbm__tinylfu_new(&r->alloc, (size_t)1 << log2_entries[freq], 0, &r->tracker);
  if (rc) {
    kvbm__map_free(&r->map);
    kvbm__free(&a, r, sizeof *r);
    return rc;
  }
  *out = r;
  return 0;
}

void kvbm_registry_retain(kvbm_registry *r) { r->users++; }

void kvbm_registry_release(kvbm_registry *r) {
  if (!r || --r->users > 0) return;
  kvbm_allocator a = r->alloc;
  kvbm_events_release(r->events);
  kvbm__map_free(&r->map);
  kvbm__free(&a, r->entries, r->entries_cap * sizeof *r->entries);
  if (r->tracker) kvbm__tinylfu_free(r->tracker);
  kvbm__free(&a, r, sizeof *r);
}

void kvbm_registry_set_hooks(kvbm_registry *r, const kvbm_registry_hooks *hooks) {
  if (hooks)
    r->hooks = *hooks;
  else
    memset(&r->hooks, 0, sizeof r->hooks);
}

int kvbm__registry_reserve(kvbm_registry *r, size_t n) {
  size_t spare = r->entries_cap - r->nentries;
  for (uint32_t e = r->free_head; e != KVBM__NONE && spare < n; e = r->entries[e].refs) spare++;
  if (spare < n) {
    /* spare already counts the unused tail, so the shortfall is added to
     * the capacity (not to nentries, which would reserve too little) */
    int rc = kvbm__grow(&r->alloc, (void **)&r->entries, &r->entries_cap,
                        r->entries_cap + (n - spare), sizeof *r->entries);
    if (rc) return rc;
  }
  return kvbm__map_reserve(&r->map, n); /* so that no add has to grow it */
}

uint32_t kvbm__registry_create(kvbm_registry *r, kvbm_hash h) {
  uint32_t e;
  if (r->free_head != KVBM__NONE) {
    e = r->free_head;
    r->free_head = r->entries[e].refs;
  } else {
    e = (uint32_t)r->nentries++;
  }
  kvbm__entry *en = &r->entries[e];
  memset(en, 0, sizeof *en);
  en->hash = h;
  for (unsigned t = 0; t < KVBM_MAX_TIERS; t++) en->slot[t] = KVBM__NONE;
  (void)kvbm__map_add(&r->map, h, e); /* reserved */
  r->live++;
  if (r->tracker) kvbm__tinylfu_increment(r->tracker, h);
  if (r->events && kvbm__events_created(r->events, h)) en->refs = KVBM__EMITTED;
  if (r->hooks.on_create) r->hooks.on_create(r->hooks.ud, h);
  return e;
}

void kvbm__registry_unref(kvbm_registry *r, uint32_t e) {
  kvbm__entry *en = &r->entries[e];
  en->refs--;
  if (KVBM__REFS(en) > 0) return;
  int emitted = (en->refs & KVBM__EMITTED) != 0;
  kvbm_hash h = en->hash;
  kvbm__map_del(&r->map, h, e);
  en->refs = r->free_head; /* chain the free entry */
  r->free_head = e;
  r->live--;
  if (emitted && r->events) kvbm__events_removed(r->events, h);
  if (r->hooks.on_remove) r->hooks.on_remove(r->hooks.ud, h);
}

int kvbm__registry_take_tier(kvbm_registry *r) {
  for (unsigned t = 0; t < KVBM_MAX_TIERS; t++) {
    if (!(r->tiers & (1u << t))) {
      r->tiers |= 1u << t;
      r->users++;
      return (int)t;
    }
  }
  return KVBM_ETIERS;
}

void kvbm__registry_drop_tier(kvbm_registry *r, unsigned tier) {
  r->tiers &= ~(1u << tier);
  kvbm_registry_release(r);
}

int kvbm_registry_is_registered(const kvbm_registry *r, kvbm_hash h) {
  return kvbm__registry_find(r, h) != KVBM__NONE;
}

size_t kvbm_registry_count(const kvbm_registry *r) { return r->live; }

int kvbm_registry_acquire(kvbm_registry *r, kvbm_hash h) {
  if (!kvbm_hash_valid(h)) return KVBM_EBAD_HASH;
  uint32_t e = kvbm__registry_find(r, h);
  if (e == KVBM__NONE) {
    int rc = kvbm__registry_reserve(r, 1);
    if (rc) return rc;
    e = kvbm__registry_create(r, h);
  }
  r->entries[e].refs++;
  r->entries[e].holds++;
  return 0;
}

int kvbm_registry_unacquire(kvbm_registry *r, kvbm_hash h) {
  uint32_t e = kvbm__registry_find(r, h);
  if (e == KVBM__NONE || r->entries[e].holds == 0) return KVBM_ENOT_HELD;
  r->entries[e].holds--;
  kvbm__registry_unref(r, e);
  return 0;
}

int kvbm_registry_present(const kvbm_registry *r, kvbm_hash h, unsigned tier) {
  uint32_t e = kvbm__registry_find(r, h);
  return tier < KVBM_MAX_TIERS && e != KVBM__NONE && r->entries[e].presence[tier] > 0;
}

int kvbm_registry_has_frequency(const kvbm_registry *r) { return r->tracker != NULL; }

void kvbm_registry_touch(kvbm_registry *r, kvbm_hash h) {
  if (r->tracker) kvbm__tinylfu_increment(r->tracker, h);
}

uint32_t kvbm_registry_frequency(const kvbm_registry *r, kvbm_hash h) {
  return r->tracker ? kvbm__tinylfu_estimate(r->tracker, h) : 0;
}

size_t kvbm_registry_bytes(const kvbm_registry *r) {
  return sizeof *r + r->entries_cap * sizeof *r->entries + kvbm__map_bytes(&r->map) +
         (r->tracker ? kvbm__tinylfu_bytes(r->tracker) : 0);
}

void kvbm_registry_set_events(kvbm_registry *r, kvbm_events *ev) {
  if (ev) kvbm_events_retain(ev);
  kvbm_events_release(r->events);
  r->events = ev;
}
