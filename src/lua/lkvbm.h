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

/* A registry box. busy is set while its Lua events policy runs inside a
 * registration, so that re-entrant calls are refused instead of corrupting
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
  int batched;     /* the policy has on_events (else on_insert/on_remove) */
  int in_policy;   /* one of its policy's functions is running */
  size_t guards;   /* its live block guards */
  int anchor;      /* while guards > 0: a registry reference keeping this box alive */
  char policy_error[1024]; /* the last failure of its Lua policy, with a traceback */
} ManagerBox;

/* A block guard. It keeps its manager alive while it is live (see
 * lkvbm_guard_on); mb may dangle once the guard is released or consumed, so
 * it is only read while live is 1. */
typedef struct {
  ManagerBox *mb;
  kvbm_block b;
  int live;     /* 0: released or consumed */
  kvbm_weak w;  /* weak guards only: the others are allocated without it */
} BlockBox;

ManagerBox *lkvbm_checkmanager(lua_State *L, int idx);
RegistryBox *lkvbm_checkregistry(lua_State *L, int idx);
/* Pushes an empty kvbm.Registry box (on Lua's allocator); the adopt call
 * then gives it r (one reference, released at __gc) and takes over r's
 * hooks. The box must be at the top of the stack for adopt. */
RegistryBox *lkvbm_newregistrybox(lua_State *L);
void lkvbm_adoptregistry(lua_State *L, RegistryBox *rb, kvbm_registry *r);
/* The core-call protocol (lcorecall.c): */
/* Refuses a call that arrives while the registry's events policy runs. */
void lkvbm_enter(lua_State *L, RegistryBox *rb);
/* The same for a call that may evict on mb, which its own eviction policy
 * may not make (that policy is what chooses the victims). */
void lkvbm_enter_evict(lua_State *L, ManagerBox *mb);
/* Drops the attachments of registrations that ended (see RegistryBox). */
void lkvbm_flush_removed(lua_State *L, RegistryBox *rb);
/* Brackets a core call. Only a Lua events policy runs inside one: then the
 * registry is marked busy (re-entrant calls raise) and the collector is
 * paused, so that no finalizer releases a block in the middle of an
 * operation. end() drops attachments of registrations the call ended and,
 * outside the bracket, delivers the notifications the call queued for the
 * manager's Lua eviction policy. A call that may evict asks that policy for
 * its victims first (lkvbm_policy_prepare), outside the bracket too. */
typedef struct {
  int paused_gc, calls_lua;
} CoreCall;
void lkvbm_core_begin(lua_State *L, ManagerBox *mb, CoreCall *cc);
void lkvbm_core_end(lua_State *L, ManagerBox *mb, CoreCall *cc);
/* The same for a core call on a registry alone (no manager policy). */
void lkvbm_registry_begin(lua_State *L, RegistryBox *rb, int calls_lua, CoreCall *cc);
void lkvbm_registry_end(lua_State *L, RegistryBox *rb, CoreCall *cc);
/* For a release or finalizer of the object at idx: 0 when rb is not busy
 * (go ahead); 1 when it is and this is a collection (the object will be
 * finalized again later; return from __gc); raises for a call from Lua. */
int lkvbm_defer_if_busy(lua_State *L, RegistryBox *rb, int idx, int from_gc);
/* The registry's on_remove hook: records h for lkvbm_flush_removed. */
void lkvbm_registry_removed(void *ud, kvbm_hash h);

/* Pushes a new guard of type mt for block b of mb, not live yet: its
 * finalizer does nothing until lkvbm_guard_on. */
BlockBox *lkvbm_pushblock(lua_State *L, ManagerBox *mb, const char *mt, kvbm_block b);
/* The guard classes as upvalues of the per-block entry points (guards and
 * the manager's methods), so that making or checking a guard finds its
 * metatable without a registry lookup. Each class has a second metatable
 * without __gc that a guard gets once it is released or consumed: the
 * collector then has no finalizer to call for it. Pushes the
 * LKVBM_GUARD_NUP upvalues (lkvbm_newclass_up takes them). */
#define LKVBM_GUARD_NUP 9
void lkvbm_push_guard_upvalues(lua_State *L);
/* A guard goes live (it holds its block) or stops being live (released or
 * consumed). A manager with live guards is anchored by one registry
 * reference (not one user value per guard, which costs per block). */
void lkvbm_guard_on(lua_State *L, BlockBox *bb);
void lkvbm_guard_off(lua_State *L, BlockBox *bb);
/* For functions registered with the guard upvalues only: lkvbm_pushblock
 * without looking for them; a guard at idx that is off for good (released
 * or consumed) gets its class's retired metatable. */
BlockBox *lkvbm_newguard(lua_State *L, ManagerBox *mb, const char *mt, kvbm_block b);
void lkvbm_guard_retire(lua_State *L, int idx, const char *mt);
/* The guard of class mt at idx, live or retired (its live flag tells), or NULL. */
BlockBox *lkvbm_testguard(lua_State *L, int idx, const char *mt);
/* guard_on must not fail after a core call has handed out blocks, so it
 * allocates nothing while the manager is pinned (or has a live guard): a
 * call that makes guards live pins the manager before its core call (pin may
 * raise; nothing has changed then) and unpins it afterwards (never raises). */
void lkvbm_manager_pin(lua_State *L, ManagerBox *mb);
void lkvbm_manager_unpin(lua_State *L, ManagerBox *mb);
void lkvbm_pushmetrics(lua_State *L, const kvbm_manager *m);
/* Makes the kvbm_policy for a Lua policy table at idx (stored as a ref). */
void lkvbm_policy_init(lua_State *L, ManagerBox *mb, int idx, kvbm_policy *p);
void lkvbm_policy_free(lua_State *L, ManagerBox *mb);
/* Delivers a Lua policy's queued notifications (at the end of a core call). */
void lkvbm_policy_flush(ManagerBox *mb);
/* Before a core call that allocates n blocks (SIZE_MAX: reset_inactive):
 * delivers the notifications and asks a Lua policy for the victims. */
void lkvbm_policy_prepare(ManagerBox *mb, size_t n);

/* The allocator every kvbm object made from this state uses: Lua's own,
 * wrapped to count live allocations for kvbm._debug.live(). */
const kvbm_allocator *lkvbm_allocator(lua_State *L);
/* Arrays on that allocator: grows *arr (elem-size items, capacity *cap) to
 * at least need items, doubling; 0 or KVBM_ENOMEM (the array untouched). */
int lkvbm_grow(const kvbm_allocator *a, void **arr, size_t *cap, size_t need, size_t elem);
void lkvbm_free(const kvbm_allocator *a, void *ptr, size_t size); /* NULL is fine */

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

/* Pushes a new table whose keys or values ("k", "v") are weak. */
void lkvbm_newweaktable(lua_State *L, const char *mode);

/* A weak map from box addresses to their userdata (for C callbacks). */
void lkvbm_setbox(lua_State *L, const void *box, int idx);
int lkvbm_getbox(lua_State *L, const void *box); /* pushes it (or nil); returns its type */

/* Pushes the table mod[name] (mod: an absolute index), creating it if no
 * other part of the module has. */
void lkvbm_subtable(lua_State *L, int mod, const char *name);
void lkvbm_newclass(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);
/* The same with the nup values on top of the stack as upvalues of every
 * function (popped). */
void lkvbm_newclass_up(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods, int nup);
/* luaL_setmetatable / luaL_testudata / luaL_checkudata for the hot paths:
 * the metatable is found by the address of the name (cached in the
 * registry under that address), so no string is hashed or compared. */
void lkvbm_setmetatable(lua_State *L, const char *name);
void *lkvbm_testudata(lua_State *L, int idx, const char *name);
void *lkvbm_checkudata(lua_State *L, int idx, const char *name);

int lkvbm_open_hash(lua_State *L);     /* pushes the kvbm.hash table */
void lkvbm_open_sequence(lua_State *L); /* sets kvbm.sequence on the table at -1 */
/* kvbm.assignments, kvbm.zip_assigned, kvbm.zip_assigned_pending on the table at -1 */
void lkvbm_open_assignments(lua_State *L);
void lkvbm_open_wire(lua_State *L);     /* sets kvbm.wire on the table at -1 */
void lkvbm_open_registry(lua_State *L); /* kvbm.registry */
void lkvbm_open_manager(lua_State *L);  /* kvbm.manager, kvbm.prometheus */
void lkvbm_open_blocks(lua_State *L);   /* the guard classes */
void lkvbm_open_blockset(lua_State *L); /* kvbm.BlockSet and its manager methods */
void lkvbm_open_tiers(lua_State *L);   /* kvbm._tiers, the planner under lua/kvbm/tiers.lua */
void lkvbm_open_events(lua_State *L);   /* kvbm.events, kvbm.loop, kvbm.publisher, kvbm.sink.file */
/* The C events of a kvbm.Events at idx (NULL when it is not one); *lua_policy: it calls Lua. */
kvbm_events *lkvbm_events_of(lua_State *L, int idx, int *lua_policy);
const kvbm_sink *lkvbm_tofilesink(lua_State *L, int idx); /* NULL unless a kvbm.FileSink */
kvbm_sequence *lkvbm_tosequence(lua_State *L, int idx); /* NULL unless a kvbm.Sequence */
/* A block size argument (1..2^32-1; raises otherwise). */
uint64_t lkvbm_checkblocksize(lua_State *L, int idx);
/* Pushes a new kvbm.Sequence of tokens[0, n), or nil, err; returns how many
 * values it pushed. */
int lkvbm_pushsequence(lua_State *L, uint64_t block_size, uint64_t salt, const uint32_t *tokens, size_t n);
/* Creates (or reuses) kvbm.sink and kvbm.sub on the module table at -1 and
 * sets kvbm.sink.nats and kvbm.sub.nats (lnats.c). */
void lkvbm_open_nats(lua_State *L);
void lkvbm_open_trace(lua_State *L); /* kvbm.trace (ltrace.c) */
/* The C sink of a kvbm.NatsSink at idx, or NULL. The sink stays owned by the
 * Lua object: keep the userdata alive (e.g. as a user value) while using the
 * pointer or a copy of it; its close is a no-op, and after sink:close() its
 * publish and flush return KVBM_ECLOSED. */
const kvbm_sink *lkvbm_tosink(lua_State *L, int idx);
/* Calls the function below its nargs arguments like lua_pcall, with a
 * traceback; a failure's message and traceback go to err (prefixed with
 * what), and only the status is left: the error object is popped. */
int lkvbm_pcall_keep(lua_State *L, int nargs, int nresults, const char *what, char *err, size_t size);
/* The integer at idx, which must be a number with an integer value in
 * lo..hi; otherwise raises "<what> must be an integer in lo..hi, got <value>"
 * (no string coercion). */
lua_Integer lkvbm_checkrange(lua_State *L, int idx, const char *what, lua_Integer lo, lua_Integer hi);
/* The same for a constructor's option, where a refused number is data (an
 * invalid_config, doc/errors.md): raises only when the value is not a
 * number; otherwise 1 with *out, or 0 with that message pushed. */
int lkvbm_torange(lua_State *L, int idx, const char *what, lua_Integer lo, lua_Integer hi, lua_Integer *out);
/* What the value at idx is, for messages: its class (__name) or its type. */
const char *lkvbm_kind(lua_State *L, int idx);
/* The index in the NULL-ended names of the string at idx; otherwise raises
 * "<what> must be one of a, b, c, got <value>". */
int lkvbm_checkchoice(lua_State *L, int idx, const char *what, const char *const *names);
/* Raises unless t (at idx) has only keys from the NULL-ended list. */
void lkvbm_checkoptions(lua_State *L, int idx, const char *const *known);

#endif
