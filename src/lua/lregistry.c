/* lregistry.c - kvbm.registry and registration handles (attachments, touch
 * callbacks) from Lua. */
#include <string.h>

#include "lkvbm.h"

typedef struct {
  RegistryBox *rb;
  kvbm_hash h;
  int live;
} HandleBox;

RegistryBox *lkvbm_checkregistry(lua_State *L, int idx) {
  RegistryBox *rb = luaL_checkudata(L, idx, LKVBM_REGISTRY_MT);
  if (!rb->r) luaL_error(L, "attempt to use a closed " LKVBM_REGISTRY_MT);
  return rb;
}

/* Pushes the attachment record of h (creating it when create is set) or nil. */
static int pushrecord(lua_State *L, int ridx, kvbm_hash h, int create) {
  RegistryBox *rb = lua_touserdata(L, ridx);
  lua_getiuservalue(L, ridx, 1);
  lkvbm_pushhash(L, h);
  if (lua_rawget(L, -2) == LUA_TNIL && create) {
    lua_pop(L, 1);
    lua_createtable(L, 0, 3);
    lkvbm_pushhash(L, h);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    rb->attached++;
  }
  lua_remove(L, -2);
  return lua_type(L, -1) == LUA_TTABLE;
}

RegistryBox *lkvbm_newregistrybox(lua_State *L) {
  RegistryBox *rb = lua_newuserdatauv(L, sizeof *rb, 2);
  memset(rb, 0, sizeof *rb);
  rb->alloc = lkvbm_allocator(L);
  luaL_setmetatable(L, LKVBM_REGISTRY_MT);
  lua_newtable(L); /* attachments by hash */
  lua_setiuservalue(L, -2, 1);
  return rb;
}

void lkvbm_adoptregistry(lua_State *L, RegistryBox *rb, kvbm_registry *r) {
  rb->r = r;
  kvbm_registry_hooks hooks = {NULL, lkvbm_registry_removed, rb};
  kvbm_registry_set_hooks(r, &hooks);
  lkvbm_setbox(L, rb, -1);
  lkvbm_setbox(L, r, -1); /* kvbm_lua_push_registry finds the box of r */
}

#define FREQUENCY_NAME(name, lua_name, log2) lua_name,
static const char *const frequency_names[] = {KVBM_FREQUENCY_MAP(FREQUENCY_NAME) NULL};
#undef FREQUENCY_NAME

static int registry_new(lua_State *L) {
  static const char *const known[] = {"frequency", "events", NULL};
  int freq = KVBM_FREQUENCY_NONE;
  if (!lua_isnoneornil(L, 1)) {
    lkvbm_checkoptions(L, 1, known);
    lua_getfield(L, 1, "frequency");
    if (lua_isboolean(L, -1))
      freq = lua_toboolean(L, -1) ? KVBM_FREQUENCY_MEDIUM : KVBM_FREQUENCY_NONE;
    else if (!lua_isnil(L, -1))
      freq = lkvbm_checkchoice(L, -1, "kvbm.registry: option 'frequency' (or a boolean)", frequency_names);
    lua_pop(L, 1);
  }
  RegistryBox *rb = lkvbm_newregistrybox(L);
  kvbm_registry *r;
  int rc = kvbm_registry_new(rb->alloc, (kvbm_frequency)freq, &r);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lkvbm_adoptregistry(L, rb, r);
  if (!lua_isnoneornil(L, 1) && lua_getfield(L, 1, "events") != LUA_TNIL) {
    kvbm_events *ev = lkvbm_events_of(L, -1, &rb->lua_hooks);
    if (!ev) /* the registry box is collected; its registry goes with it */
      return luaL_error(L, "kvbm.registry: option 'events' must be a kvbm.events(), got a %s", lkvbm_kind(L, -1));
    kvbm_registry_set_events(rb->r, ev);
    lua_setiuservalue(L, -2, 2); /* keeps the events (and its Lua policy) alive */
  } else if (!lua_isnoneornil(L, 1)) {
    lua_pop(L, 1);
  }
  return 1;
}

static int registry_gc(lua_State *L) {
  RegistryBox *rb = luaL_checkudata(L, 1, LKVBM_REGISTRY_MT);
  if (rb->r) {
    kvbm_registry_set_hooks(rb->r, NULL); /* managers may outlive this box in C */
    kvbm_registry_release(rb->r);
    rb->r = NULL;
  }
  lkvbm_free(rb->alloc, rb->removed, rb->removed_cap * sizeof *rb->removed);
  rb->removed = NULL;
  rb->removed_cap = rb->nremoved = 0;
  return 0;
}

static int registry_is_registered(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  lua_pushboolean(L, kvbm_registry_is_registered(rb->r, lkvbm_checkhash(L, 2)));
  return 1;
}

static int registry_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_registry_count(lkvbm_checkregistry(L, 1)->r));
  return 1;
}

static unsigned checktier(lua_State *L, RegistryBox *rb, int idx) {
  ManagerBox *mb = lkvbm_checkmanager(L, idx);
  luaL_argcheck(L, mb->reg == rb, idx, "manager of another registry");
  return kvbm_manager_tier(mb->m);
}

static int registry_present(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  lua_pushboolean(L, kvbm_registry_present(rb->r, h, checktier(L, rb, 3)));
  return 1;
}

/* check_presence(hashes, m1 [, m2 ...]) -> { bool... }: present in any. */
static int registry_check_presence(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int top = lua_gettop(L);
  luaL_argcheck(L, top >= 3, 3, "expected at least one manager");
  unsigned tiers[KVBM_MAX_TIERS * 4];
  int nt = 0;
  for (int i = 3; i <= top && nt < (int)(sizeof tiers / sizeof *tiers); i++) tiers[nt++] = checktier(L, rb, i);
  lua_Integer n = (lua_Integer)lua_rawlen(L, 2);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    kvbm_hash h = lkvbm_checkhash(L, -1);
    lua_pop(L, 1);
    int any = 0;
    for (int t = 0; t < nt && !any; t++) any = kvbm_registry_present(rb->r, h, tiers[t]);
    lua_pushboolean(L, any);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int registry_has_frequency(lua_State *L) {
  lua_pushboolean(L, kvbm_registry_has_frequency(lkvbm_checkregistry(L, 1)->r));
  return 1;
}

static int registry_touch(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  lkvbm_enter(L, rb); /* the tracker orders a frequency backend's victims */
  kvbm_registry_touch(rb->r, h);
  return 0;
}

static int registry_frequency(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  lua_pushinteger(L, kvbm_registry_frequency(rb->r, lkvbm_checkhash(L, 2)));
  return 1;
}

static int registry_tostring(lua_State *L) {
  RegistryBox *rb = luaL_checkudata(L, 1, LKVBM_REGISTRY_MT);
  if (!rb->r) return lua_pushliteral(L, "kvbm.Registry (closed)"), 1;
  lua_pushfstring(L, "kvbm.Registry (%d registered%s)", (int)kvbm_registry_count(rb->r),
                  kvbm_registry_has_frequency(rb->r) ? ", frequency tracking" : "");
  return 1;
}

/* ------------------------------------------------------------ handles */

static HandleBox *checkhandle(lua_State *L, int idx) {
  HandleBox *hb = luaL_checkudata(L, idx, LKVBM_HANDLE_MT);
  if (!hb->live) luaL_error(L, "attempt to use a released " LKVBM_HANDLE_MT);
  lkvbm_flush_removed(L, hb->rb);
  return hb;
}

static int registry_handle(lua_State *L) {
  RegistryBox *rb = lkvbm_checkregistry(L, 1);
  kvbm_hash h = lkvbm_checkhash(L, 2);
  lkvbm_enter(L, rb);
  HandleBox *hb = lua_newuserdatauv(L, sizeof *hb, 1);
  hb->rb = rb;
  hb->h = h;
  hb->live = 0;
  luaL_setmetatable(L, LKVBM_HANDLE_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  CoreCall cc; /* a new registration may run a Lua events policy */
  lkvbm_registry_begin(L, rb, rb->lua_hooks, &cc);
  int rc = kvbm_registry_acquire(rb->r, h);
  lkvbm_registry_end(L, rb, &cc);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  hb->live = 1;
  return 1;
}

/* Dropping a handle may end a registration: refused while policy code runs
 * (a collected handle asks to be finalized again, in a later cycle). */
static int release_handle(lua_State *L, int from_gc) {
  HandleBox *hb = luaL_checkudata(L, 1, LKVBM_HANDLE_MT);
  if (hb->live && hb->rb->r) {
    if (hb->rb->busy) {
      if (from_gc && lua_getmetatable(L, 1)) {
        lua_setmetatable(L, 1);
        return 0;
      }
      lkvbm_enter(L, hb->rb); /* raises */
    }
    hb->live = 0;
    (void)kvbm_registry_unacquire(hb->rb->r, hb->h); /* held: hb was live */
  }
  return 0;
}

static int handle_release(lua_State *L) { return release_handle(L, 0); }
static int handle_gc(lua_State *L) { return release_handle(L, 1); }

static int handle_hash(lua_State *L) {
  lkvbm_pushhash(L, checkhandle(L, 1)->h);
  return 1;
}

/* attach(name, v) / attach_unique(name, v): a name is either unique (one
 * value, replaced) or multiple (a list), never both. */
static int attach(lua_State *L, int unique) {
  HandleBox *hb = checkhandle(L, 1);
  luaL_checktype(L, 2, LUA_TSTRING); /* names only: no NaN, table or number keys */
  luaL_checkany(L, 3);
  lua_getiuservalue(L, 1, 1); /* the registry userdata */
  int ridx = lua_gettop(L);
  pushrecord(L, ridx, hb->h, 1);
  int rec = lua_gettop(L);
  const char *mine = unique ? "unique" : "multiple", *other = unique ? "multiple" : "unique";
  lua_getfield(L, rec, other);
  if (lua_istable(L, -1)) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) {
      lkvbm_pusherror(L, KVBM_EINVAL);
      lua_pushfstring(L, unique ? "attachment_is_multiple" : "attachment_is_unique");
      lua_setfield(L, -2, "code");
      lua_pushfstring(L, "%s is already registered as %s attachment", luaL_tolstring(L, 2, NULL),
                      other);
      lua_remove(L, -2);
      lua_setfield(L, -2, "message");
      return 2;
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  if (lua_getfield(L, rec, mine) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, rec, mine);
  }
  lua_pushvalue(L, 2);
  if (unique) {
    lua_pushvalue(L, 3);
  } else {
    if (lua_rawget(L, -2) != LUA_TTABLE) {
      lua_pop(L, 1);
      lua_newtable(L);
      lua_pushvalue(L, 2);
      lua_pushvalue(L, -2);
      lua_rawset(L, -4);
    }
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_rawset(L, -3);
  lua_pushboolean(L, 1);
  return 1;
}

static int handle_attach(lua_State *L) { return attach(L, 0); }
static int handle_attach_unique(lua_State *L) { return attach(L, 1); }

/* get(name) -> the unique value, a copy of the multiple list, or nil */
static int handle_get(lua_State *L) {
  HandleBox *hb = checkhandle(L, 1);
  luaL_checktype(L, 2, LUA_TSTRING);
  lua_getiuservalue(L, 1, 1);
  if (!pushrecord(L, lua_gettop(L), hb->h, 0)) return luaL_pushfail(L), 1;
  int rec = lua_gettop(L);
  if (lua_getfield(L, rec, "unique") == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_pop(L, 1);
  }
  if (lua_getfield(L, rec, "multiple") == LUA_TTABLE) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
      lua_createtable(L, (int)n, 0);
      for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
      }
      return 1;
    }
  }
  return luaL_pushfail(L), 1;
}

static int handle_on_touch(lua_State *L) {
  HandleBox *hb = checkhandle(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_getiuservalue(L, 1, 1);
  pushrecord(L, lua_gettop(L), hb->h, 1);
  if (lua_getfield(L, -1, "on_touch") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "on_touch");
  }
  lua_pushvalue(L, 2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  return 0;
}

/* touch(): runs the touch callbacks with the hash (the frequency tracker is
 * the registry's touch, as in the crate). */
static int handle_touch(lua_State *L) {
  HandleBox *hb = checkhandle(L, 1);
  lua_getiuservalue(L, 1, 1);
  if (!pushrecord(L, lua_gettop(L), hb->h, 0)) return 0;
  if (lua_getfield(L, -1, "on_touch") != LUA_TTABLE) return 0;
  int cbs = lua_gettop(L);
  lua_Integer n = (lua_Integer)lua_rawlen(L, cbs);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, cbs, i);
    lkvbm_pushhash(L, hb->h);
    lua_call(L, 1, 0);
  }
  return 0;
}

static int handle_is_registered(lua_State *L) {
  HandleBox *hb = checkhandle(L, 1);
  lua_pushboolean(L, kvbm_registry_is_registered(hb->rb->r, hb->h));
  return 1;
}

static int handle_tostring(lua_State *L) {
  HandleBox *hb = luaL_checkudata(L, 1, LKVBM_HANDLE_MT);
  char buf[KVBM_HASH_STRLEN];
  (void)kvbm_hash_format(hb->h, buf, sizeof buf);
  lua_pushfstring(L, "kvbm.Handle(%s%s)", buf, hb->live ? "" : ", released");
  return 1;
}

void lkvbm_open_registry(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", registry_gc}, {"__tostring", registry_tostring}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
      {"is_registered", registry_is_registered},
      {"count", registry_count},
      {"present", registry_present},
      {"check_presence", registry_check_presence},
      {"has_frequency", registry_has_frequency},
      {"touch", registry_touch},
      {"frequency", registry_frequency},
      {"handle", registry_handle},
      {NULL, NULL},
  };
  static const luaL_Reg hmeta[] = {{"__gc", handle_gc},
                                   {"__close", handle_release},
                                   {"__tostring", handle_tostring},
                                   {NULL, NULL}};
  static const luaL_Reg hmethods[] = {
      {"hash", handle_hash},
      {"attach", handle_attach},
      {"attach_unique", handle_attach_unique},
      {"get", handle_get},
      {"on_touch", handle_on_touch},
      {"touch", handle_touch},
      {"is_registered", handle_is_registered},
      {"release", handle_release},
      {NULL, NULL},
  };
  lkvbm_newclass(L, LKVBM_REGISTRY_MT, meta, methods);
  lkvbm_newclass(L, LKVBM_HANDLE_MT, hmeta, hmethods);
  lua_pushcfunction(L, registry_new);
  lua_setfield(L, -2, "registry");
}
