/* lassign.c - kvbm.assignments: ExternalBlockAssignments as a userdata, and
 * kvbm.zip_assigned / kvbm.zip_assigned_pending.
 *
 * Positions, indices and block ids are 0-based integers; ranges come back
 * as two integers lo, hi (half-open). Bad input (wrong types, non-integer or
 * negative ids, malformed hashes) raises before anything changes; expected
 * failures return nil, err with err.code "ordering_violation",
 * "duplicate_block_id" or "position_mismatch", the crate's detail fields and
 * its Display text as err.message. */
#include <string.h>

#include "lkvbm.h"

#define ASSIGN_MT "kvbm.Assignments"

typedef struct {
  kvbm_assignments *a;
} AssignBox;

static kvbm_assignments *checkassign(lua_State *L, int idx) {
  return ((AssignBox *)luaL_checkudata(L, idx, ASSIGN_MT))->a;
}

static void pushsize(lua_State *L, size_t n) { lua_pushinteger(L, (lua_Integer)n); }

static int pushrange(lua_State *L, size_t lo, size_t hi) {
  pushsize(L, lo);
  pushsize(L, hi);
  return 2;
}

/* A non-negative integer (no string coercion, no floats with a fraction). */
static lua_Integer checknonneg(lua_State *L, int idx, const char *what) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint)
    return luaL_error(L, "%s: expected a non-negative integer, got %s", what,
                      lua_type(L, idx) == LUA_TNUMBER ? lua_tostring(L, idx) : luaL_typename(L, idx));
  if (v < 0) return luaL_error(L, "%s: expected a non-negative integer, got %I", what, v);
  return v;
}

/* An index, position or id argument: an integer (no string coercion);
 * negatives are simply out of range (lookups return nil). */
static int optindex(lua_State *L, int idx, size_t *out) {
  int isint;
  lua_Integer v = lua_tointegerx(L, idx, &isint);
  if (lua_type(L, idx) != LUA_TNUMBER || !isint)
    return luaL_argerror(L, idx, lua_type(L, idx) == LUA_TNUMBER ? "number has no integer representation"
                                                                 : "integer expected");
  if (v < 0) return 0;
  *out = (size_t)v;
  return 1;
}

/* Table element i (1-based) of table t as a block id. */
static uint64_t checkid_at(lua_State *L, int t, lua_Integer i, const char *what, int label) {
  lua_rawgeti(L, t, i);
  int isint;
  lua_Integer v = lua_tointegerx(L, -1, &isint);
  if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < 0)
    luaL_error(L, "bad %s #%d: expected a non-negative integer, got %s", what, label,
               lua_type(L, -1) == LUA_TNUMBER ? lua_tostring(L, -1) : luaL_typename(L, -1));
  lua_pop(L, 1);
  return (uint64_t)v;
}

/* The value at the top of the stack as a hash (16-byte string); pops it. */
static kvbm_hash checkhash_top(lua_State *L, const char *what, int i) {
  size_t len;
  const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
  if (!s || len != 16)
    luaL_error(L, "bad %s #%d: expected a 16-byte sequence hash, got %s", what, i,
               s ? "a string of another length" : luaL_typename(L, -1));
  kvbm_hash h = kvbm_hash_from_bytes((const unsigned char *)s);
  if (!kvbm_hash_valid(h)) luaL_error(L, "bad %s #%d: malformed sequence hash (mode bits 11)", what, i);
  lua_pop(L, 1);
  return h;
}

/* Scratch memory owned by Lua (freed by the collector even when we raise). */
static void *scratch(lua_State *L, size_t n, size_t elem) {
  if (n > (size_t)LUA_MAXINTEGER / (elem ? elem : 1)) luaL_error(L, "too many items");
  return lua_newuserdatauv(L, n ? n * elem : 1, 0);
}

/* The block hashes an argument stands for: a kvbm.Sequence (its full
 * blocks) or an array of 16-byte hashes; an optional count after it takes
 * a prefix (blocks[..n]). */
static const kvbm_hash *checkblocks(lua_State *L, int idx, size_t *n) {
  size_t lim = SIZE_MAX, len;
  const kvbm_hash *all;
  if (!lua_isnoneornil(L, idx + 1)) lim = (size_t)checknonneg(L, idx + 1, "block count");
  kvbm_sequence *s = lkvbm_tosequence(L, idx);
  if (s) {
    all = kvbm_sequence_hashes(s);
    len = kvbm_sequence_blocks(s);
  } else {
    luaL_argexpected(L, lua_type(L, idx) == LUA_TTABLE, idx, "kvbm.Sequence or table of hashes");
    len = (size_t)lua_rawlen(L, idx);
    if (len > lim) len = lim;
    kvbm_hash *buf = scratch(L, len, sizeof *buf); /* on top: idx stays valid */
    for (size_t i = 0; i < len; i++) {
      lua_rawgeti(L, idx, (lua_Integer)i + 1);
      buf[i] = checkhash_top(L, "hash", (int)i + 1);
    }
    all = buf;
  }
  *n = len < lim ? len : lim;
  return all;
}

static int pusherr(lua_State *L, int rc, const kvbm_assign_error *e) {
  char msg[256];
  lkvbm_pusherror(L, rc);
  if (kvbm_assign_error_format(rc, e, msg, sizeof msg) > 0) {
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
  }
#define FIELD(name, v)               \
  do {                               \
    lua_pushinteger(L, (lua_Integer)(v)); \
    lua_setfield(L, -2, name);       \
  } while (0)
  switch (rc) {
  case KVBM_EORDERING_VIOLATION:
    FIELD("known_id", e->known_id);
    FIELD("new_id", e->new_id);
    FIELD("known_index", e->known_index);
    FIELD("first_new_index", e->first_new_index);
    break;
  case KVBM_EPOSITION_MISMATCH:
    FIELD("expected", e->expected);
    FIELD("actual", e->actual);
    FIELD("block_id", e->block_id);
    break;
  case KVBM_EDUPLICATE_BLOCK_ID:
    FIELD("block_id", e->block_id);
    break;
  default:
    break;
  }
#undef FIELD
  return 2;
}

/* ------------------------------------------------------------ lifecycle */

static int assign_new(lua_State *L) {
  lua_Integer off = lua_isnoneornil(L, 1) ? 0 : checknonneg(L, 1, "offset");
  if ((lua_Unsigned)off > (lua_Unsigned)KVBM_ASSIGN_MAX_OFFSET)
    return luaL_error(L, "offset: at most %I", (lua_Integer)KVBM_ASSIGN_MAX_OFFSET);
  AssignBox *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->a = NULL;
  luaL_setmetatable(L, ASSIGN_MT);
  int rc = kvbm_assignments_new(lkvbm_allocator(L), (size_t)off, &box->a);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 1;
}

static int assign_gc(lua_State *L) {
  AssignBox *box = luaL_checkudata(L, 1, ASSIGN_MT);
  kvbm_assignments_free(box->a);
  box->a = NULL;
  return 0;
}

static int assign_tostring(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  lua_pushfstring(L,
                  "ExternalBlockAssignments { assigned_count: %I, staged_count: %I, "
                  "unassigned_count: %I, offset: %I }",
                  (lua_Integer)kvbm_assignments_assigned_count(a),
                  (lua_Integer)kvbm_assignments_staged_count(a),
                  (lua_Integer)kvbm_assignments_unassigned_count(a),
                  (lua_Integer)kvbm_assignments_offset(a));
  return 1;
}

/* ------------------------------------------------------------ queries */

#define SIZE_GETTER(name, fn)               \
  static int assign_##name(lua_State *L) {  \
    pushsize(L, fn(checkassign(L, 1)));     \
    return 1;                               \
  }
SIZE_GETTER(offset, kvbm_assignments_offset)
SIZE_GETTER(next_position, kvbm_assignments_next_position)
SIZE_GETTER(assigned_count, kvbm_assignments_assigned_count)
SIZE_GETTER(staged_count, kvbm_assignments_staged_count)
SIZE_GETTER(unassigned_count, kvbm_assignments_unassigned_count)

static int assign_is_empty(lua_State *L) {
  lua_pushboolean(L, kvbm_assignments_is_empty(checkassign(L, 1)));
  return 1;
}

static int assign_contains(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  size_t id;
  lua_pushboolean(L, optindex(L, 2, &id) && kvbm_assignments_contains(a, (uint64_t)id));
  return 1;
}

#define RANGE_GETTER(name, fn)              \
  static int assign_##name(lua_State *L) {  \
    size_t lo, hi;                          \
    fn(checkassign(L, 1), &lo, &hi);        \
    return pushrange(L, lo, hi);            \
  }
RANGE_GETTER(assigned_positions, kvbm_assignments_assigned_positions)
RANGE_GETTER(staged_positions, kvbm_assignments_staged_positions)
RANGE_GETTER(pending_positions, kvbm_assignments_pending_positions)

typedef int (*pair_getter)(const kvbm_assignments *, size_t, uint64_t *, kvbm_hash *);
typedef int (*id_getter)(const kvbm_assignments *, size_t, uint64_t *);

static int get_pair(lua_State *L, pair_getter fn) {
  kvbm_assignments *a = checkassign(L, 1);
  size_t i;
  uint64_t id;
  kvbm_hash h;
  if (!optindex(L, 2, &i) || !fn(a, i, &id, &h)) return luaL_pushfail(L), 1;
  lua_pushinteger(L, (lua_Integer)id);
  lkvbm_pushhash(L, h);
  return 2;
}

static int get_id(lua_State *L, id_getter fn) {
  kvbm_assignments *a = checkassign(L, 1);
  size_t i;
  uint64_t id;
  if (!optindex(L, 2, &i) || !fn(a, i, &id)) return luaL_pushfail(L), 1;
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int assign_get_assigned(lua_State *L) { return get_pair(L, kvbm_assignments_get_assigned); }
static int assign_get_staged(lua_State *L) { return get_pair(L, kvbm_assignments_get_staged); }
static int assign_get_at_position(lua_State *L) { return get_pair(L, kvbm_assignments_get_at_position); }
static int assign_get_unassigned(lua_State *L) { return get_id(L, kvbm_assignments_get_unassigned); }
static int assign_get_pending_at_position(lua_State *L) {
  return get_id(L, kvbm_assignments_get_pending_at_position);
}

static void pushpair(lua_State *L, uint64_t id, kvbm_hash h) {
  lua_createtable(L, 2, 0);
  lua_pushinteger(L, (lua_Integer)id);
  lua_rawseti(L, -2, 1);
  lkvbm_pushhash(L, h);
  lua_rawseti(L, -2, 2);
}

static int list_pairs(lua_State *L, pair_getter fn, size_t n) {
  kvbm_assignments *a = checkassign(L, 1);
  lua_createtable(L, (int)n, 0);
  uint64_t id;
  kvbm_hash h;
  for (size_t i = 0; fn(a, i, &id, &h); i++) {
    pushpair(L, id, h);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int assign_assigned(lua_State *L) {
  return list_pairs(L, kvbm_assignments_get_assigned,
                    kvbm_assignments_assigned_count(checkassign(L, 1)));
}

static int assign_staged(lua_State *L) {
  return list_pairs(L, kvbm_assignments_get_staged, kvbm_assignments_staged_count(checkassign(L, 1)));
}

static int assign_unassigned(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  lua_createtable(L, (int)kvbm_assignments_unassigned_count(a), 0);
  uint64_t id;
  for (size_t i = 0; kvbm_assignments_get_unassigned(a, i, &id); i++) {
    lua_pushinteger(L, (lua_Integer)id);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* ------------------------------------------------------------ mutations */

static int assign_extend_block_ids(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)lua_rawlen(L, 2);
  uint64_t *ids = scratch(L, n, sizeof *ids);
  for (size_t i = 0; i < n; i++) ids[i] = checkid_at(L, 2, (lua_Integer)i + 1, "block id", (int)i + 1);
  kvbm_assign_error e;
  int rc = kvbm_assignments_extend_block_ids(a, ids, n, &e);
  if (rc < 0) return pusherr(L, rc, &e);
  lua_pushboolean(L, 1);
  return 1;
}

/* items: { {id, h}, ... } */
static int assign_extend_assigned(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  size_t n = (size_t)lua_rawlen(L, 2);
  uint64_t *ids = scratch(L, n, sizeof *ids);
  kvbm_hash *hs = scratch(L, n, sizeof *hs);
  for (size_t i = 0; i < n; i++) {
    if (lua_rawgeti(L, 2, (lua_Integer)i + 1) != LUA_TTABLE)
      return luaL_error(L, "bad item #%d: expected a table {id, hash}, got %s", (int)i + 1,
                        luaL_typename(L, -1));
    int item = lua_gettop(L);
    ids[i] = checkid_at(L, item, 1, "item id", (int)i + 1);
    lua_rawgeti(L, item, 2);
    hs[i] = checkhash_top(L, "item hash", (int)i + 1);
    lua_pop(L, 1);
  }
  kvbm_assign_error e;
  int rc = kvbm_assignments_extend_assigned(a, ids, hs, n, &e);
  if (rc < 0) return pusherr(L, rc, &e);
  pushsize(L, n);
  return 1;
}

static int stage_or_assign(lua_State *L, int commit) {
  kvbm_assignments *a = checkassign(L, 1);
  size_t n, lo, hi;
  const kvbm_hash *all = checkblocks(L, 2, &n);
  kvbm_assign_error e;
  int rc = commit ? kvbm_assignments_assign_pending(a, all, n, &lo, &hi, &e)
                  : kvbm_assignments_stage_pending(a, all, n, &lo, &hi, &e);
  if (rc < 0) return pusherr(L, rc, &e);
  return pushrange(L, lo, hi);
}

static int assign_stage_pending(lua_State *L) { return stage_or_assign(L, 0); }
static int assign_assign_pending(lua_State *L) { return stage_or_assign(L, 1); }

static int assign_commit_staged(lua_State *L) {
  size_t lo, hi;
  kvbm_assignments_commit_staged(checkassign(L, 1), &lo, &hi);
  return pushrange(L, lo, hi);
}

static int assign_take_staged(lua_State *L) {
  kvbm_assignments *a = checkassign(L, 1);
  size_t n = kvbm_assignments_staged_count(a);
  uint64_t *ids = scratch(L, n, sizeof *ids);
  kvbm_hash *hs = scratch(L, n, sizeof *hs);
  /* build the result before taking, so that a memory error raised while
   * building leaves the entries staged */
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    kvbm_assignments_get_staged(a, i, &ids[i], &hs[i]);
    pushpair(L, ids[i], hs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  int rc = kvbm_assignments_take_staged(a, ids, hs, n);
  if (rc < 0) return luaL_error(L, "take_staged: %s", kvbm_strerror(rc));
  return 1;
}

static int assign_pop_unassigned(lua_State *L) {
  uint64_t id;
  if (!kvbm_assignments_pop_unassigned(checkassign(L, 1), &id)) return luaL_pushfail(L), 1;
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

static int assign_clear(lua_State *L) {
  kvbm_assignments_clear(checkassign(L, 1));
  return 0;
}

/* ------------------------------------------------------------ zips */

typedef size_t (*zip_fn)(const kvbm_assignments *, const kvbm_assignments *, kvbm_assign_triple *,
                         size_t);

static int zip(lua_State *L, zip_fn fn) {
  kvbm_assignments *a = checkassign(L, 1), *b = checkassign(L, 2);
  size_t n = fn(a, b, NULL, 0);
  kvbm_assign_triple *t = scratch(L, n, sizeof *t);
  n = fn(a, b, t, n);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, 3, 0);
    pushsize(L, t[i].pos);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)t[i].a_id);
    lua_rawseti(L, -2, 2);
    lua_pushinteger(L, (lua_Integer)t[i].b_id);
    lua_rawseti(L, -2, 3);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int l_zip_assigned(lua_State *L) { return zip(L, kvbm_zip_assigned); }
static int l_zip_assigned_pending(lua_State *L) { return zip(L, kvbm_zip_assigned_pending); }

void lkvbm_open_assignments(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", assign_gc}, {"__tostring", assign_tostring}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"offset", assign_offset},
      {"next_position", assign_next_position},
      {"assigned_count", assign_assigned_count},
      {"staged_count", assign_staged_count},
      {"unassigned_count", assign_unassigned_count},
      {"is_empty", assign_is_empty},
      {"contains", assign_contains},
      {"extend_block_ids", assign_extend_block_ids},
      {"extend_assigned", assign_extend_assigned},
      {"stage_pending", assign_stage_pending},
      {"commit_staged", assign_commit_staged},
      {"assign_pending", assign_assign_pending},
      {"get_assigned", assign_get_assigned},
      {"get_staged", assign_get_staged},
      {"get_unassigned", assign_get_unassigned},
      {"get_at_position", assign_get_at_position},
      {"get_pending_at_position", assign_get_pending_at_position},
      {"assigned_positions", assign_assigned_positions},
      {"staged_positions", assign_staged_positions},
      {"pending_positions", assign_pending_positions},
      {"assigned", assign_assigned},
      {"staged", assign_staged},
      {"unassigned", assign_unassigned},
      {"take_staged", assign_take_staged},
      {"pop_unassigned", assign_pop_unassigned},
      {"clear", assign_clear},
      {NULL, NULL},
  };
  lkvbm_newclass(L, ASSIGN_MT, meta, methods);
  lua_pushcfunction(L, assign_new);
  lua_setfield(L, -2, "assignments");
  lua_pushcfunction(L, l_zip_assigned);
  lua_setfield(L, -2, "zip_assigned");
  lua_pushcfunction(L, l_zip_assigned_pending);
  lua_setfield(L, -2, "zip_assigned_pending");
}
