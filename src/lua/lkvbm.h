/* lkvbm.h - private to the Lua binding: metatable names, check/push helpers. */
#ifndef LKVBM_H
#define LKVBM_H

#include <lauxlib.h>
#include <lua.h>

#include "kvbm.h"

#define LKVBM_ERROR_MT "kvbm.Error"
#define LKVBM_SEQUENCE_MT "kvbm.Sequence"
#define LKVBM_REGISTRY_MT "kvbm.Registry"
#define LKVBM_HANDLE_MT "kvbm.Handle"
#define LKVBM_MANAGER_MT "kvbm.Manager"
#define LKVBM_MUTABLE_MT "kvbm.MutableBlock"
#define LKVBM_COMPLETE_MT "kvbm.CompleteBlock"
#define LKVBM_IMMUTABLE_MT "kvbm.ImmutableBlock"
#define LKVBM_WEAK_MT "kvbm.WeakBlock"
#define LKVBM_SET_MT "kvbm.BlockSet"
#define LKVBM_METRICS_MT "kvbm.Metrics"
#define LKVBM_NATS_SINK_MT "kvbm.NatsSink"
#define LKVBM_NATS_SUB_MT "kvbm.NatsSubscription"
#define LKVBM_TRACE_MT "kvbm.Trace"

/* A registry box. busy is set while a manager of this registry runs Lua
 * policy code, so that re-entrant calls are refused instead of corrupting
 * a half-done operation. removed[] collects hashes whose registration ended
 * while attachments exist, so that their Lua attachments can be dropped. */
typedef struct {
  kvbm_registry *r;
  int busy;
  int lua_hooks; /* its events manager calls a Lua policy on registration */
  int attached; /* hashes with attachments or touch callbacks */
  kvbm_hash *removed;
  size_t nremoved, removed_cap;
  const kvbm_allocator *alloc;
} RegistryBox;

/* A manager box; user value 1 is its registry box, 2 its Lua policy. */
typedef struct {
  kvbm_manager *m; /* NULL once closed */
  RegistryBox *reg;
  lua_State *L;    /* main thread, for policy callbacks */
  int policy_ref;  /* LUA_NOREF: a C backend */
} ManagerBox;

/* A block guard; user value 1 is its manager box. */
typedef struct {
  kvbm_block b;
  kvbm_weak w;  /* weak guards */
  int live;     /* 0: released or consumed */
} BlockBox;

ManagerBox *lkvbm_checkmanager(lua_State *L, int idx);
RegistryBox *lkvbm_checkregistry(lua_State *L, int idx);
/* Refuses a call that arrives while the registry's managers run policy code. */
void lkvbm_enter(lua_State *L, RegistryBox *rb);
/* Drops the attachments of registrations that ended (see RegistryBox). */
void lkvbm_flush_removed(lua_State *L, RegistryBox *rb);
/* Brackets a core call that may run Lua policy code: the registry is marked
 * busy (re-entrant calls raise) and the collector is paused, so that no
 * finalizer releases a block in the middle of an operation. end() also
 * drops attachments of registrations the call ended. */
typedef struct {
  int paused_gc, calls_lua;
} CoreCall;
void lkvbm_core_begin(lua_State *L, ManagerBox *mb, CoreCall *cc);
void lkvbm_core_end(lua_State *L, ManagerBox *mb, CoreCall *cc);
/* The same for a core call on a registry alone (no manager policy). */
void lkvbm_registry_begin(lua_State *L, RegistryBox *rb, int calls_lua, CoreCall *cc);
void lkvbm_registry_end(lua_State *L, RegistryBox *rb, CoreCall *cc);

/* Pushes a new guard of type mt for block b of the manager at index midx. */
BlockBox *lkvbm_pushblock(lua_State *L, int midx, const char *mt, kvbm_block b);
void lkvbm_pushmetrics(lua_State *L, const kvbm_manager *m);
/* Makes the kvbm_policy for a Lua policy table at idx (stored as a ref). */
void lkvbm_policy_init(lua_State *L, ManagerBox *mb, int idx, kvbm_policy *p);
void lkvbm_policy_free(lua_State *L, ManagerBox *mb);

/* The allocator every kvbm object made from this state uses: Lua's own,
 * wrapped to count live allocations for kvbm._debug.live(). */
const kvbm_allocator *lkvbm_allocator(lua_State *L);

/* Pushes nil and an error table {code=, message=} (plus detail fields the
 * caller sets on the table at -1 afterwards). Returns 2. */
int lkvbm_pusherror(lua_State *L, int rc);

/* 16-byte big-endian hash strings. */
kvbm_hash lkvbm_checkhash(lua_State *L, int idx);
void lkvbm_pushhash(lua_State *L, kvbm_hash h);

/* Integers read as unsigned 64-bit bit patterns. */
uint64_t lkvbm_checku64(lua_State *L, int idx);
/* Reads table idx as an array of u32 tokens into a fresh scratch userdata
 * pushed on the stack; raises on a non-integer or out-of-range token. */
uint32_t *lkvbm_checktokens(lua_State *L, int idx, size_t *n);

/* A weak map from box addresses to their userdata (for C callbacks). */
void lkvbm_setbox(lua_State *L, const void *box, int idx);
int lkvbm_getbox(lua_State *L, const void *box); /* pushes it (or nil); returns its type */

void lkvbm_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

int lkvbm_open_hash(lua_State *L);     /* pushes the kvbm.hash table */
void lkvbm_open_sequence(lua_State *L); /* sets kvbm.sequence on the table at -1 */
/* kvbm.assignments, kvbm.zip_assigned, kvbm.zip_assigned_pending on the table at -1 */
void lkvbm_open_assignments(lua_State *L);
void lkvbm_open_wire(lua_State *L);     /* sets kvbm.wire on the table at -1 */
void lkvbm_open_registry(lua_State *L); /* kvbm.registry */
void lkvbm_open_manager(lua_State *L);  /* kvbm.manager, kvbm.prometheus */
void lkvbm_open_blocks(lua_State *L);   /* the guard classes */
void lkvbm_open_blockset(lua_State *L); /* kvbm.BlockSet and its manager methods */
void lkvbm_open_events(lua_State *L);   /* kvbm.events, kvbm.loop, kvbm.publisher, kvbm.sink.file */
/* The C events of a kvbm.Events at idx; *lua_policy: it calls Lua. */
kvbm_events *lkvbm_events_of(lua_State *L, int idx, int *lua_policy);
const kvbm_sink *lkvbm_tofilesink(lua_State *L, int idx); /* NULL unless a kvbm.FileSink */
kvbm_sequence *lkvbm_tosequence(lua_State *L, int idx); /* NULL unless a kvbm.Sequence */
/* Creates (or reuses) kvbm.sink and kvbm.sub on the module table at -1 and
 * sets kvbm.sink.nats and kvbm.sub.nats (lnats.c). */
void lkvbm_open_nats(lua_State *L);
void lkvbm_open_trace(lua_State *L); /* kvbm.trace (ltrace.c) */
/* The C sink of a kvbm.NatsSink at idx, or NULL. The sink stays owned by the
 * Lua object: keep the userdata alive (e.g. as a user value) while using the
 * pointer or a copy of it; its close is a no-op, and after sink:close() its
 * publish and flush return KVBM_ECLOSED. */
const kvbm_sink *lkvbm_tosink(lua_State *L, int idx);
/* Raises unless t (at idx) has only keys from the NULL-ended list. */
void lkvbm_checkoptions(lua_State *L, int idx, const char *const *known);

#endif
