/* levents.c - kvbm.events, kvbm.loop, kvbm.publisher and kvbm.sink.file.
 *
 *   local ev = kvbm.events{ policy = "all" | "power_of_two" | {min=, max=} | function(h) ... end }
 *   local sub = ev:subscribe(capacity)     -- sub:poll() --> kind, h | nil; sub:lost()
 *   local loop = kvbm.loop()               -- loop:run(), loop:run_once(), loop:run_nowait(), loop:now()
 *   local pub = kvbm.publisher{ events = ev, loop = loop, instance_id = 7, sink = f | sink_userdata,
 *                               window = 0.010, max_batch = 1024, subject = "kvbm.events" }
 *   pub:close() --> true | nil, err   (flush, Shutdown, sink flush)
 *
 *   Options are checked by kvbm_publisher_config_error (window in (0, 3600]
 *   seconds, max_batch 1..2^20, capacity 1..2^24, subject a NATS subject);
 *   a bad one raises "kvbm.publisher: <option> must be ... (got <value>)".
 *
 *   The sink may call pub:flush() and pub:close() and may drop the last
 *   reference to pub and collect: the publisher stays alive until its sink
 *   call returns, then closes (Shutdown) when it is collected.
 *
 * A Lua function policy runs inside registrations: the binding brackets
 * those calls like a Lua eviction policy (no collector, no re-entry). A
 * Lua function sink runs from the loop's callbacks and from close(); each
 * batch is one protected call, a raising sink is counted and reported
 * (pub:stats().errors, .last_error) and publishing goes on. */
#include <ev.h>
#include <math.h>
#include <string.h>

#include "lkvbm.h"

#define EVENTS_MT "kvbm.Events"
#define SUB_MT "kvbm.Subscription"
#define LOOP_MT "kvbm.Loop"
#define PUB_MT "kvbm.Publisher"
#define FILESINK_MT "kvbm.FileSink"

typedef struct {
  kvbm_events *ev;
  lua_State *L;  /* main thread, for a Lua policy */
  int policy_ref;
  uint64_t policy_errors;
  char last_error[1024]; /* the last failure of the Lua policy, with a traceback */
} EventsBox;

typedef struct {
  kvbm_subscription *s;
} SubBox;

typedef struct {
  struct ev_loop *loop;
} LoopBox;

typedef struct {
  kvbm_publisher *p;
  lua_State *L;
  int sink_ref; /* a Lua function sink, or LUA_NOREF */
  char last_error[200];
} PubBox;

typedef struct {
  kvbm_sink sink;
  int open;
} FileSinkBox;

static const char *const kind_names[] = {"create", "remove", "shutdown", NULL};

/* ------------------------------------------------------------- events */

EventsBox *lkvbm_checkevents(lua_State *L, int idx) {
  EventsBox *eb = luaL_checkudata(L, idx, EVENTS_MT);
  return eb;
}

kvbm_events *lkvbm_events_of(lua_State *L, int idx, int *lua_policy) {
  EventsBox *eb = luaL_testudata(L, idx, EVENTS_MT);
  if (!eb) return NULL;
  *lua_policy = eb->policy_ref != LUA_NOREF;
  return eb->ev;
}

static int lua_policy(void *ud, kvbm_hash h) {
  EventsBox *eb = ud;
  lua_State *L = eb->L;
  if (!lua_checkstack(L, 4)) return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, eb->policy_ref);
  lkvbm_pushhash(L, h);
  if (lkvbm_pcall_keep(L, 1, 1, "events policy", eb->last_error, sizeof eb->last_error) != LUA_OK) {
    eb->policy_errors++;
    return 0; /* a failing policy emits nothing (and so no remove later) */
  }
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return yes;
}

static int events_new(lua_State *L) {
  static const char *const known[] = {"policy", NULL};
  lua_settop(L, 1);
  EventsBox *eb = lua_newuserdatauv(L, sizeof *eb, 0);
  memset(eb, 0, sizeof *eb);
  eb->policy_ref = LUA_NOREF;
  luaL_setmetatable(L, EVENTS_MT);
  int rc = kvbm_events_new(lkvbm_allocator(L), &eb->ev);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  if (lua_isnoneornil(L, 1)) return 1;
  lkvbm_checkoptions(L, 1, known);
  lua_getfield(L, 1, "policy");
  if (lua_isfunction(L, -1)) {
    eb->policy_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    eb->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    kvbm_events_policy_custom(eb->ev, lua_policy, eb);
  } else if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "min");
    lua_getfield(L, -2, "max");
    lua_Integer min = lua_isnil(L, -2) ? 16 : lkvbm_checkrange(L, -2, "kvbm.events: policy.min", 0, LUA_MAXINTEGER);
    lua_Integer max = lua_isnil(L, -1) ? 65536 : lkvbm_checkrange(L, -1, "kvbm.events: policy.max", 0, LUA_MAXINTEGER);
    if (max < min) return luaL_error(L, "kvbm.events: policy needs min <= max, got min %I, max %I", min, max);
    kvbm_events_policy_power_of_two(eb->ev, (uint64_t)min, (uint64_t)max);
    lua_pop(L, 3);
  } else if (!lua_isnil(L, -1)) {
    static const char *const names[] = {"all", "power_of_two", NULL};
    if (lkvbm_checkchoice(L, -1, "kvbm.events: option 'policy' (or a function, or {min=, max=})", names) == 1)
      kvbm_events_policy_power_of_two(eb->ev, 16, 65536);
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  return 1;
}

static int events_gc(lua_State *L) {
  EventsBox *eb = luaL_checkudata(L, 1, EVENTS_MT);
  if (eb->ev) {
    /* registries may keep the C object: stop calling into this state */
    if (eb->policy_ref != LUA_NOREF) kvbm_events_policy_all(eb->ev);
    kvbm_events_release(eb->ev);
    eb->ev = NULL;
  }
  if (eb->policy_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, eb->policy_ref);
  eb->policy_ref = LUA_NOREF;
  return 0;
}

static int events_subscribe(lua_State *L) {
  EventsBox *eb = luaL_checkudata(L, 1, EVENTS_MT);
  /* a ring of events per subscriber: 2^32 of them is already 96 GiB */
  lua_Integer cap = lua_isnoneornil(L, 2) ? 1024 : lkvbm_checkrange(L, 2, "capacity", 1, (lua_Integer)1 << 32);
  SubBox *sb = lua_newuserdatauv(L, sizeof *sb, 1);
  sb->s = NULL;
  luaL_setmetatable(L, SUB_MT);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  int rc = kvbm_events_subscribe(eb->ev, (size_t)cap, &sb->s);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 1;
}

static int events_should_emit(lua_State *L) {
  EventsBox *eb = luaL_checkudata(L, 1, EVENTS_MT);
  lua_pushboolean(L, kvbm_events_should_emit(eb->ev, lkvbm_checkhash(L, 2)));
  return 1;
}

/* ev:policy_errors() --> count, last error (with its traceback) or nil */
static int events_policy_errors(lua_State *L) {
  EventsBox *eb = luaL_checkudata(L, 1, EVENTS_MT);
  lua_pushinteger(L, (lua_Integer)eb->policy_errors);
  if (!eb->last_error[0]) return 1;
  lua_pushstring(L, eb->last_error);
  return 2;
}

static SubBox *checksub(lua_State *L) {
  SubBox *sb = luaL_checkudata(L, 1, SUB_MT);
  if (!sb->s) luaL_error(L, "attempt to use a closed " SUB_MT);
  return sb;
}

static int sub_poll(lua_State *L) {
  SubBox *sb = checksub(L);
  kvbm_event_kind kind;
  kvbm_hash h;
  if (!kvbm_subscription_poll(sb->s, &kind, &h)) return luaL_pushfail(L), 1;
  lua_pushstring(L, kind_names[kind]);
  lkvbm_pushhash(L, h);
  return 2;
}

static int sub_lost(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_subscription_lost(checksub(L)->s));
  return 1;
}

static int sub_pending(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_subscription_pending(checksub(L)->s));
  return 1;
}

static int sub_close(lua_State *L) {
  SubBox *sb = luaL_checkudata(L, 1, SUB_MT);
  kvbm_subscription_free(sb->s);
  sb->s = NULL;
  return 0;
}

/* --------------------------------------------------------------- loop */

static struct ev_loop *checkloop(lua_State *L, int idx) {
  LoopBox *lb = luaL_checkudata(L, idx, LOOP_MT);
  if (!lb->loop) luaL_error(L, "attempt to use a closed " LOOP_MT);
  return lb->loop;
}

static int loop_new(lua_State *L) {
  LoopBox *lb = lua_newuserdatauv(L, sizeof *lb, 0);
  lb->loop = NULL;
  luaL_setmetatable(L, LOOP_MT);
  lb->loop = ev_loop_new(EVFLAG_AUTO);
  if (!lb->loop) return lkvbm_pusherror(L, KVBM_ENOMEM);
  return 1;
}

static int loop_gc(lua_State *L) {
  LoopBox *lb = luaL_checkudata(L, 1, LOOP_MT);
  if (lb->loop) ev_loop_destroy(lb->loop);
  lb->loop = NULL;
  return 0;
}

static int run(lua_State *L, int flags) {
  struct ev_loop *loop = checkloop(L, 1);
  lua_pushboolean(L, ev_run(loop, flags));
  return 1;
}

static int loop_run(lua_State *L) { return run(L, 0); }
static int loop_run_once(lua_State *L) { return run(L, EVRUN_ONCE); }
static int loop_run_nowait(lua_State *L) { return run(L, EVRUN_NOWAIT); }

static int loop_now(lua_State *L) {
  lua_pushnumber(L, ev_now(checkloop(L, 1)));
  return 1;
}

/* loop:sleep(s): runs the loop for s seconds (timers fire meanwhile). */
static void on_sleep(struct ev_loop *loop, ev_timer *t, int revents) {
  (void)revents;
  *(int *)t->data = 1;
  ev_break(loop, EVBREAK_ONE);
}

static int loop_sleep(lua_State *L) {
  struct ev_loop *loop = checkloop(L, 1);
  lua_Number s = luaL_checknumber(L, 2);
  luaL_argcheck(L, s >= 0 && s < HUGE_VAL, 2, "must be a finite non-negative number of seconds");
  int done = 0;
  ev_timer t;
  ev_timer_init(&t, on_sleep, s, 0.);
  t.data = &done;
  ev_timer_start(loop, &t);
  while (!done) ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &t);
  return 0;
}

/* ---------------------------------------------------------- file sink */

static int filesink_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TSTRING); /* a path: sink.file(-1) must not create "-1" */
  const char *path = lua_tostring(L, 1);
  FileSinkBox *fb = lua_newuserdatauv(L, sizeof *fb, 0);
  memset(fb, 0, sizeof *fb);
  luaL_setmetatable(L, FILESINK_MT);
  if (kvbm_sink_file_new(path, &fb->sink) < 0) {
    lkvbm_pusherror(L, KVBM_ESINK);
    lua_pushfstring(L, "cannot open %s for appending", path);
    lua_setfield(L, -2, "message");
    return 2;
  }
  fb->open = 1;
  return 1;
}

static int filesink_close(lua_State *L) {
  FileSinkBox *fb = luaL_checkudata(L, 1, FILESINK_MT);
  if (fb->open) fb->sink.close(fb->sink.ud);
  fb->open = 0;
  return 0;
}

/* kvbm.sink.read_file(path) --> { payload... } (each a wire message) */
static int filesink_read(lua_State *L) {
  luaL_checktype(L, 1, LUA_TSTRING);
  const char *path = lua_tostring(L, 1);
  FILE *f = fopen(path, "rb");
  if (!f) {
    lkvbm_pusherror(L, KVBM_ESINK);
    lua_pushfstring(L, "cannot open %s", path);
    lua_setfield(L, -2, "message");
    return 2;
  }
  long total = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  rewind(f);
  lua_newtable(L);
  unsigned char head[4];
  lua_Integer n = 0;
  size_t got;
  int truncated = 0;
  while ((got = fread(head, 1, 4, f)) == 4) {
    size_t len = (size_t)head[0] << 24 | (size_t)head[1] << 16 | (size_t)head[2] << 8 | head[3];
    long at = ftell(f);
    if (total < 0 || at < 0 || len > (size_t)(total - at)) { /* never allocate what is not there */
      truncated = 1;
      break;
    }
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len);
    if (fread(p, 1, len, f) != len) {
      truncated = 1;
      break;
    }
    luaL_pushresultsize(&b, len);
    lua_rawseti(L, -2, ++n);
  }
  truncated |= got != 0 && got != 4; /* a partial length prefix */
  fclose(f);
  if (truncated) {
    lkvbm_pusherror(L, KVBM_EDECODE);
    lua_pushfstring(L, "%s: truncated after %d messages", path, (int)n);
    lua_setfield(L, -2, "message");
    return 2;
  }
  return 1;
}

/* ---------------------------------------------------------- publisher */

static void pushbatch(lua_State *L, const kvbm_batch *b, const char *subject) {
  lua_createtable(L, 0, 5);
  lua_pushstring(L, kind_names[b->kind]);
  lua_setfield(L, -2, "kind");
  lua_createtable(L, (int)b->n, 0);
  for (size_t i = 0; i < b->n; i++) {
    lkvbm_pushhash(L, b->hashes[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "hashes");
  if (b->instance_id.hi == 0 && b->instance_id.lo <= (uint64_t)INT64_MAX) {
    lua_pushinteger(L, (lua_Integer)b->instance_id.lo);
  } else {
    unsigned char id[16];
    for (int i = 0; i < 8; i++) {
      id[i] = (unsigned char)(b->instance_id.hi >> (56 - 8 * i));
      id[8 + i] = (unsigned char)(b->instance_id.lo >> (56 - 8 * i));
    }
    lua_pushlstring(L, (const char *)id, 16);
  }
  lua_setfield(L, -2, "instance_id");
  lua_pushstring(L, subject);
  lua_setfield(L, -2, "subject");
}

/* The publisher's userdata is kept on the stack while its sink runs: a sink
 * that drops the last reference and collects cannot free the publisher (nor
 * this box) under the call. */
static int lua_sink(void *ud, const char *subject, const kvbm_batch *b, const unsigned char *data, size_t len) {
  PubBox *pb = ud;
  lua_State *L = pb->L;
  if (!lua_checkstack(L, 7)) return KVBM_ESINK;
  int top = lua_gettop(L);
  lkvbm_getbox(L, pb); /* nil inside the publisher's own __gc, which holds it */
  lua_rawgeti(L, LUA_REGISTRYINDEX, pb->sink_ref);
  pushbatch(L, b, subject);
  lua_pushlstring(L, (const char *)data, len);
  lua_setfield(L, -2, "payload");
  int rc = 0;
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    snprintf(pb->last_error, sizeof pb->last_error, "%s",
             lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(error object is not a string)");
    lua_warning(L, "kvbm: publisher sink failed: ", 1);
    lua_warning(L, pb->last_error, 0);
    rc = KVBM_ESINK;
  }
  lua_settop(L, top);
  return rc;
}

static PubBox *checkpub(lua_State *L) {
  PubBox *pb = luaL_checkudata(L, 1, PUB_MT);
  if (!pb->p) luaL_error(L, "attempt to use a closed " PUB_MT);
  return pb;
}

static kvbm_instance_id checkinstance(lua_State *L, int idx) {
  kvbm_instance_id id = {0, 0};
  size_t len = 0;
  int isint = 0;
  if (lua_type(L, idx) == LUA_TSTRING) {
    const unsigned char *s = (const unsigned char *)lua_tolstring(L, idx, &len);
    if (len == 16) {
      for (int i = 0; i < 8; i++) id.hi = id.hi << 8 | s[i], id.lo = id.lo << 8 | s[8 + i];
      return id;
    }
  } else if (lua_type(L, idx) == LUA_TNUMBER) {
    lua_Integer v = lua_tointegerx(L, idx, &isint);
    if (isint && v >= 0) {
      id.lo = (uint64_t)v;
      return id;
    }
  }
  luaL_error(L, "kvbm.publisher: instance_id must be an integer in 0..2^63-1 or a 16-byte string (got %s)",
             luaL_tolstring(L, idx, NULL));
  return id;
}

/* A value the publisher refuses (doc/errors.md: a configuration is data):
 * nil, err with err.code "invalid_config", like kvbm.manager's. The
 * publisher box made so far is collected as a closed one. */
static int config_error(lua_State *L, const char *msg) {
  lkvbm_pusherror(L, KVBM_ECONFIG);
  lua_pushfstring(L, "kvbm.publisher: %s", msg);
  lua_setfield(L, -2, "message");
  return 2;
}

/* Options as C sees them. Absent: 0, C's "the default". A value C must
 * refuse (not a number, fractional, 0 or negative) becomes one outside the
 * C limits, so that kvbm_publisher_config_error words every message. */
static double optwindow(lua_State *L, int t) {
  int type = lua_getfield(L, t, "window");
  double v = type == LUA_TNIL ? 0 : type == LUA_TNUMBER ? lua_tonumber(L, -1) : NAN;
  lua_pop(L, 1);
  return type != LUA_TNIL && v == 0 ? NAN : v;
}

static size_t optsize(lua_State *L, int t, const char *name) {
  int type = lua_getfield(L, t, name), isint = 0;
  lua_Integer v = type == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
  lua_pop(L, 1);
  if (type == LUA_TNIL) return 0;
  return isint && v > 0 && (lua_Unsigned)v <= SIZE_MAX ? (size_t)v : SIZE_MAX;
}

/* C's message for a refused cfg, naming the value the user gave (each
 * message starts with the option's name): pushes nil, err and returns 2;
 * 0 when cfg is acceptable. */
static int checkconfig(lua_State *L, int t, const kvbm_publisher_config *cfg) {
  const char *why = kvbm_publisher_config_error(cfg);
  if (!why) return 0;
  char name[16];
  size_t n = strcspn(why, " ");
  snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1), why);
  int type = lua_getfield(L, t, name);
  const char *got = luaL_tolstring(L, -1, NULL);
  /* doc/errors.md: a value of the right type that C refuses is data
   * (nil, err); a value of the wrong type is misuse and raises */
  int data = type == LUA_TNIL || type == LUA_TNUMBER || (type == LUA_TSTRING && strcmp(name, "subject") == 0);
  if (!data) return luaL_error(L, "kvbm.publisher: %s (got %s)", why, got);
  lkvbm_pusherror(L, KVBM_ECONFIG);
  lua_pushfstring(L, "kvbm.publisher: %s (got %s)", why, got);
  lua_setfield(L, -2, "message");
  return 2;
}

static int publisher_new(lua_State *L) {
  static const char *const known[] = {"events", "loop", "instance_id", "window", "max_batch",
                                      "subject", "sink", "capacity", NULL};
  lkvbm_checkoptions(L, 1, known);
  kvbm_publisher_config cfg;
  memset(&cfg, 0, sizeof cfg);
  PubBox *pb = lua_newuserdatauv(L, sizeof *pb, 3);
  memset(pb, 0, sizeof *pb);
  pb->sink_ref = LUA_NOREF;
  luaL_setmetatable(L, PUB_MT);
  int pidx = lua_gettop(L);

  lua_getfield(L, 1, "events");
  EventsBox *eb = luaL_testudata(L, -1, EVENTS_MT);
  cfg.events = eb ? eb->ev : NULL;
  lua_setiuservalue(L, pidx, 1);
  lua_getfield(L, 1, "loop");
  cfg.loop = luaL_testudata(L, -1, LOOP_MT) ? checkloop(L, -1) : NULL;
  lua_setiuservalue(L, pidx, 2);
  cfg.window = optwindow(L, 1);
  cfg.max_batch = optsize(L, 1, "max_batch");
  cfg.capacity = optsize(L, 1, "capacity");
  int st = lua_getfield(L, 1, "subject");
  cfg.subject = st == LUA_TNIL ? NULL : st == LUA_TSTRING ? lua_tostring(L, -1) : ""; /* "" is refused */
  cfg.alloc = lkvbm_allocator(L);

  lua_getfield(L, 1, "sink");
  const kvbm_sink *native = lkvbm_tofilesink(L, -1);
  if (!native) native = lkvbm_tosink(L, -1);
  if (lua_isfunction(L, -1)) {
    cfg.sink.publish_batch = lua_sink;
    cfg.sink.ud = pb;
  } else if (native) {
    cfg.sink = *native;
  } else {
    return luaL_error(L, "kvbm.publisher: sink must be a function, kvbm.sink.file(...) or kvbm.sink.nats{...} (got %s)",
                      luaL_tolstring(L, -1, NULL));
  }
  if (checkconfig(L, 1, &cfg)) return 2;
  lua_getfield(L, 1, "instance_id");
  if (lua_isnil(L, -1)) return config_error(L, "instance_id is required");
  cfg.instance_id = checkinstance(L, -1);
  lua_pop(L, 1);
  if (lua_isfunction(L, -1)) {
    pb->sink_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    pb->L = lua_tothread(L, -1);
    lkvbm_setbox(L, pb, pidx); /* lua_sink finds the userdata to keep it alive */
  } else {
    lua_setiuservalue(L, pidx, 3); /* the publisher keeps its sink alive */
  }
  lua_settop(L, pidx);
  int rc = kvbm_publisher_new(&cfg, &pb->p);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  return 1;
}

static int close_publisher(lua_State *L, PubBox *pb) {
  int rc = kvbm_publisher_close(pb->p);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    if (pb->last_error[0]) {
      lua_pushstring(L, pb->last_error);
      lua_setfield(L, -2, "message");
    }
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int publisher_close(lua_State *L) {
  PubBox *pb = luaL_checkudata(L, 1, PUB_MT);
  if (!pb->p) return lua_pushboolean(L, 1), 1;
  return close_publisher(L, pb);
}

static int publisher_gc(lua_State *L) {
  PubBox *pb = luaL_checkudata(L, 1, PUB_MT);
  if (pb->p) kvbm_publisher_free(pb->p); /* closes: flush + Shutdown */
  pb->p = NULL;
  if (pb->sink_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, pb->sink_ref);
  pb->sink_ref = LUA_NOREF;
  return 0;
}

static int publisher_flush(lua_State *L) {
  PubBox *pb = checkpub(L);
  int rc = kvbm_publisher_flush(pb->p);
  if (rc < 0) return lkvbm_pusherror(L, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int publisher_stats(lua_State *L) {
  PubBox *pb = checkpub(L);
  kvbm_publisher_stats st;
  kvbm_publisher_get_stats(pb->p, &st);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, (lua_Integer)st.batches);
  lua_setfield(L, -2, "batches");
  lua_pushinteger(L, (lua_Integer)st.events);
  lua_setfield(L, -2, "events");
  lua_pushinteger(L, (lua_Integer)st.errors);
  lua_setfield(L, -2, "errors");
  lua_pushinteger(L, (lua_Integer)st.lost);
  lua_setfield(L, -2, "lost");
  lua_pushinteger(L, (lua_Integer)st.pending);
  lua_setfield(L, -2, "pending");
  if (pb->last_error[0]) {
    lua_pushstring(L, pb->last_error);
    lua_setfield(L, -2, "last_error");
  }
  return 1;
}

void lkvbm_open_events(lua_State *L) {
  static const luaL_Reg ev_meta[] = {{"__gc", events_gc}, {NULL, NULL}};
  static const luaL_Reg ev_methods[] = {{"subscribe", events_subscribe},
                                        {"should_emit", events_should_emit},
                                        {"policy_errors", events_policy_errors},
                                        {NULL, NULL}};
  static const luaL_Reg sub_meta[] = {{"__gc", sub_close}, {"__close", sub_close}, {NULL, NULL}};
  static const luaL_Reg sub_methods[] = {
      {"poll", sub_poll}, {"lost", sub_lost}, {"pending", sub_pending}, {"close", sub_close}, {NULL, NULL}};
  static const luaL_Reg loop_meta[] = {{"__gc", loop_gc}, {NULL, NULL}};
  static const luaL_Reg loop_methods[] = {{"run", loop_run},   {"run_once", loop_run_once},
                                          {"run_nowait", loop_run_nowait}, {"now", loop_now},
                                          {"sleep", loop_sleep}, {NULL, NULL}};
  static const luaL_Reg pub_meta[] = {{"__gc", publisher_gc}, {"__close", publisher_close}, {NULL, NULL}};
  static const luaL_Reg pub_methods[] = {
      {"close", publisher_close}, {"flush", publisher_flush}, {"stats", publisher_stats}, {NULL, NULL}};
  static const luaL_Reg file_meta[] = {{"__gc", filesink_close}, {"__close", filesink_close}, {NULL, NULL}};
  static const luaL_Reg file_methods[] = {{"close", filesink_close}, {NULL, NULL}};
  lkvbm_newclass(L, EVENTS_MT, ev_meta, ev_methods);
  lkvbm_newclass(L, SUB_MT, sub_meta, sub_methods);
  lkvbm_newclass(L, LOOP_MT, loop_meta, loop_methods);
  lkvbm_newclass(L, PUB_MT, pub_meta, pub_methods);
  lkvbm_newclass(L, FILESINK_MT, file_meta, file_methods);
  lua_pushcfunction(L, events_new);
  lua_setfield(L, -2, "events");
  lua_pushcfunction(L, loop_new);
  lua_setfield(L, -2, "loop");
  lua_pushcfunction(L, publisher_new);
  lua_setfield(L, -2, "publisher");
  if (lua_getfield(L, -1, "sink") != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "sink");
  }
  lua_pushcfunction(L, filesink_new);
  lua_setfield(L, -2, "file");
  lua_pushcfunction(L, filesink_read);
  lua_setfield(L, -2, "read_file");
  lua_pop(L, 1);
}

const kvbm_sink *lkvbm_tofilesink(lua_State *L, int idx) {
  FileSinkBox *fb = luaL_testudata(L, idx, FILESINK_MT);
  if (fb && !fb->open) luaL_error(L, "attempt to use a closed " FILESINK_MT);
  return fb ? &fb->sink : NULL;
}
