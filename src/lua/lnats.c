/* lnats.c - kvbm.sink.nats and kvbm.sub.nats: NATS from Lua.
 *
 *   local sink = kvbm.sink.nats{ url = "nats://127.0.0.1:4222" }
 *       --> kvbm.NatsSink, or nil, err (err.code == "sink_error", err.message
 *           says why, err.url) when no server answers at url. url defaults
 *           to "nats://127.0.0.1:4222"; unknown option keys raise.
 *   sink:publish(subject, bytes) --> true, or nil, err ("sink_error")
 *   sink:flush()                 --> true, or nil, err ("sink_error"); waits
 *                                    at most 2 s for the server's PONG
 *   sink:stats()  --> { disconnects, reconnects, errors, last_error,
 *                       published, dropped, published_while_down, unsent,
 *                       buffered_bytes, connected,
 *                       closed } (see kvbm_nats_stats in kvbm.h)
 *   sink:close()  idempotent; also __close (local s <close> = ...) and __gc
 *
 *   Give the sink to kvbm.publisher{ sink = sink, ... }: the publisher gets
 *   the C sink through lkvbm_tosink().
 *
 *   While the server is unreachable the sink does not fail: libnats keeps
 *   reconnecting (every 50 ms, forever) and buffers what is published (up
 *   to 8 MiB), sending it after the reconnect; publish fails only once that
 *   buffer is full, and flush fails after its 2 s timeout. Core NATS
 *   delivers at most once: stats() counts the disconnects and reconnects,
 *   what was published while down (subscribers that were down too miss
 *   it), what is still unsent (lost if the sink closes now) and what was
 *   refused (dropped). See src/nats_sink.c.
 *
 *   A closed sink is a programming error, like any closed kvbm object:
 *   publish and flush on it RAISE ("attempt to use a closed kvbm.NatsSink").
 *   stats() still works (the counters as they were at close). A publisher
 *   still holding a closed sink gets KVBM_ECLOSED from it (no crash).
 *
 *   local sub = kvbm.sub.nats{ url = ..., subject = "kvbm.events" }
 *       --> kvbm.NatsSubscription (a synchronous libnats subscription, which
 *           reconnects like the sink; see src/nats_sub.c), or nil, err
 *           ("sink_error")
 *   sub:next(timeout)  --> the decoded batch { kind = "create"|"remove"|
 *           "shutdown", hashes = {16-byte strings}, instance_id = integer
 *           (or a 16-byte big-endian string when it does not fit in 63
 *           bits), subject =, payload = <the raw bytes> };
 *           nil on timeout (no error value);
 *           nil, err with err.code "decode_error", err.payload (the raw
 *           bytes), err.subject and err.offset (the byte where decoding
 *           failed, as kvbm.wire.decode) for a message that is not a
 *           KvbmCacheEvents;
 *           nil, err with "sink_error" when libnats reports a problem (e.g.
 *           a slow consumer: messages were dropped).
 *   sub:raw(timeout)   --> payload string, subject; or nil on timeout
 *   sub:close()        idempotent; __close, __gc. next/raw on a closed
 *                      subscription raise.
 *   kvbm.features.nats is true (false in a build without NATS, where
 *   kvbm.sink.nats and kvbm.sub.nats raise: see lnats_off.c).
 *
 *   timeout is in seconds (fractions allowed; 0 = only what is already
 *   here); it defaults to 1 second, so a call never blocks forever.
 */
#include <stdlib.h>
#include <string.h>

#include "kvbm_nats.h"
#include "lkvbm.h"

#define DEFAULT_URL "nats://127.0.0.1:4222"
#define DEFAULT_SUBJECT "kvbm.events"

/* --------------------------------------------------------------- sink */

/* view is what lkvbm_tosink hands out: it forwards to sink while the box is
 * open and answers KVBM_ECLOSED after, so a C holder of the view never
 * reaches freed memory (it must keep the userdata alive, see lkvbm.h). */
typedef struct {
  kvbm_sink sink;        /* the NATS sink; sink.ud == NULL once closed */
  kvbm_sink view;
  kvbm_nats_stats last;  /* the counters at close */
} NatsSinkBox;

static int view_publish(void *ud, const char *subject, const unsigned char *data, size_t len) {
  NatsSinkBox *b = ud;
  return b->sink.ud ? b->sink.publish(b->sink.ud, subject, data, len) : KVBM_ECLOSED;
}

static int view_flush(void *ud) {
  NatsSinkBox *b = ud;
  return b->sink.ud ? b->sink.flush(b->sink.ud) : KVBM_ECLOSED;
}

static void view_close(void *ud) { (void)ud; /* the Lua object owns the connection */ }

const kvbm_sink *lkvbm_tosink(lua_State *L, int idx) {
  NatsSinkBox *b = luaL_testudata(L, idx, LKVBM_NATS_SINK_MT);
  return b ? &b->view : NULL;
}

static NatsSinkBox *checksink(lua_State *L) {
  NatsSinkBox *b = luaL_checkudata(L, 1, LKVBM_NATS_SINK_MT);
  if (!b->sink.ud) luaL_error(L, "attempt to use a closed " LKVBM_NATS_SINK_MT);
  return b;
}

static void sink_doclose(NatsSinkBox *b) {
  if (!b->sink.ud) return;
  kvbm_nats_sink_stats(&b->sink, &b->last);
  void *ud = b->sink.ud;
  b->sink.ud = NULL;
  b->sink.close(ud);
}

/* nil, err with the sink's last error as the message. */
static int sink_fail(lua_State *L, NatsSinkBox *b, int rc) {
  kvbm_nats_stats st;
  kvbm_nats_sink_stats(&b->sink, &st);
  lkvbm_pusherror(L, rc);
  if (st.last_error[0]) {
    lua_pushfstring(L, "nats %s", st.last_error);
    lua_setfield(L, -2, "message");
  }
  return 2;
}

static int sink_new(lua_State *L) {
  static const char *const known[] = {"url", NULL};
  const char *url = DEFAULT_URL;
  if (!lua_isnoneornil(L, 1)) {
    lkvbm_checkoptions(L, 1, known);
    if (lua_getfield(L, 1, "url") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "bad option 'url' (string expected)");
      url = lua_tostring(L, -1);
    }
  }
  lua_settop(L, 2); /* keeps url's string alive at 2 */
  NatsSinkBox *b = lua_newuserdatauv(L, sizeof *b, 1);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, LKVBM_NATS_SINK_MT);
  char err[256];
  int rc = kvbm_nats_sink_new(lkvbm_allocator(L), url, &b->sink, err, sizeof err);
  if (rc < 0) {
    b->sink.ud = NULL;
    lkvbm_pusherror(L, rc);
    if (err[0]) {
      lua_pushstring(L, err);
      lua_setfield(L, -2, "message");
    }
    lua_pushstring(L, url);
    lua_setfield(L, -2, "url");
    return 2;
  }
  b->view.publish = view_publish;
  b->view.flush = view_flush;
  b->view.close = view_close;
  b->view.ud = b;
  lua_pushstring(L, url);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int sink_publish(lua_State *L) {
  NatsSinkBox *b = checksink(L);
  const char *subject = luaL_checkstring(L, 2);
  size_t len;
  const char *data = luaL_checklstring(L, 3, &len);
  int rc = b->sink.publish(b->sink.ud, subject, (const unsigned char *)data, len);
  if (rc < 0) return sink_fail(L, b, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int sink_flush(lua_State *L) {
  NatsSinkBox *b = checksink(L);
  int rc = b->sink.flush(b->sink.ud);
  if (rc < 0) return sink_fail(L, b, rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int sink_stats(lua_State *L) {
  NatsSinkBox *b = luaL_checkudata(L, 1, LKVBM_NATS_SINK_MT);
  kvbm_nats_stats st;
  if (b->sink.ud)
    kvbm_nats_sink_stats(&b->sink, &st);
  else
    st = b->last;
  const struct {
    const char *name;
    uint64_t v;
  } counts[] = {{"disconnects", st.disconnects},
                {"reconnects", st.reconnects},
                {"errors", st.errors},
                {"published", st.published},
                {"dropped", st.dropped},
                {"published_while_down", st.published_while_down},
                {"unsent", st.unsent},
                {"buffered_bytes", st.buffered_bytes}};
  lua_createtable(L, 0, (int)(sizeof counts / sizeof *counts) + 3);
  for (size_t i = 0; i < sizeof counts / sizeof *counts; i++) {
    lua_pushinteger(L, (lua_Integer)counts[i].v);
    lua_setfield(L, -2, counts[i].name);
  }
  lua_pushboolean(L, b->sink.ud && st.connected);
  lua_setfield(L, -2, "connected");
  if (st.last_error[0]) {
    lua_pushstring(L, st.last_error);
    lua_setfield(L, -2, "last_error");
  }
  lua_pushboolean(L, b->sink.ud == NULL);
  lua_setfield(L, -2, "closed");
  return 1;
}

static int sink_close(lua_State *L) {
  sink_doclose(luaL_checkudata(L, 1, LKVBM_NATS_SINK_MT));
  return 0;
}

static int sink_tostring(lua_State *L) {
  NatsSinkBox *b = luaL_checkudata(L, 1, LKVBM_NATS_SINK_MT);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, LKVBM_NATS_SINK_MT " (%s%s): %p", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?",
                  b->sink.ud ? "" : ", closed", (void *)b);
  return 1;
}

/* ------------------------------------------------------- subscription */

typedef struct {
  kvbm_nats_sub *sub; /* NULL once closed */
} NatsSubBox;

static NatsSubBox *checksub(lua_State *L) {
  NatsSubBox *s = luaL_checkudata(L, 1, LKVBM_NATS_SUB_MT);
  if (!s->sub) luaL_error(L, "attempt to use a closed " LKVBM_NATS_SUB_MT);
  return s;
}

static void sub_doclose(NatsSubBox *s) {
  kvbm_nats_sub_free(s->sub);
  s->sub = NULL;
}

/* nil, err with err.message from the C library when it gave one. */
static int push_natserror(lua_State *L, int rc, const char *msg) {
  lkvbm_pusherror(L, rc);
  if (msg[0]) {
    lua_pushstring(L, msg);
    lua_setfield(L, -2, "message");
  }
  return 2;
}

static int sub_new(lua_State *L) {
  static const char *const known[] = {"url", "subject", NULL};
  const char *url = DEFAULT_URL, *subject = DEFAULT_SUBJECT;
  if (!lua_isnoneornil(L, 1)) {
    lkvbm_checkoptions(L, 1, known);
    if (lua_getfield(L, 1, "url") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "bad option 'url' (string expected)");
      url = lua_tostring(L, -1);
    }
    if (lua_getfield(L, 1, "subject") != LUA_TNIL) {
      if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
        luaL_error(L, "bad option 'subject' (non-empty string expected)");
      subject = lua_tostring(L, -1);
    }
  }
  lua_settop(L, 3); /* url and subject stay alive at 2 and 3 */
  NatsSubBox *s = lua_newuserdatauv(L, sizeof *s, 1);
  s->sub = NULL;
  luaL_setmetatable(L, LKVBM_NATS_SUB_MT);
  char err[320];
  int rc = kvbm_nats_sub_new(url, subject, &s->sub, err, sizeof err);
  if (rc < 0) {
    push_natserror(L, rc, err);
    lua_pushstring(L, url);
    lua_setfield(L, -2, "url");
    return 2;
  }
  lua_pushstring(L, subject);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int64_t checktimeout(lua_State *L, int idx) {
  lua_Number t = luaL_optnumber(L, idx, 1.0);
  luaL_argcheck(L, t >= 0 && t <= 1e9, idx, "timeout must be a number of seconds >= 0");
  int64_t ms = (int64_t)(t * 1000.0);
  return (lua_Number)ms < t * 1000.0 ? ms + 1 : ms; /* rounded up */
}

/* Waits for one message and pushes its payload and subject: 1 when it did,
 * 0 on timeout (nothing pushed), or 2 with nil, err pushed. */
static int push_next(lua_State *L, NatsSubBox *s, int64_t ms) {
  kvbm_nats_msg msg;
  char err[256];
  int rc = kvbm_nats_sub_next(s->sub, ms, &msg, err, sizeof err);
  if (rc < 0) return push_natserror(L, rc, err);
  if (rc == 0) return 0;
  /* copy out and free the message before anything here can raise */
  lua_pushlstring(L, (const char *)msg.data, msg.len);
  lua_pushstring(L, msg.subject);
  kvbm_nats_msg_free(&msg);
  return 1;
}

static int sub_raw(lua_State *L) {
  NatsSubBox *s = checksub(L);
  int r = push_next(L, s, checktimeout(L, 2));
  if (r == 0) lua_pushnil(L);
  return r == 0 ? 1 : 2;
}

static const char *const kind_names[] = {"create", "remove", "shutdown"};

static int sub_next(lua_State *L) {
  NatsSubBox *s = checksub(L);
  int64_t ms = checktimeout(L, 2);
  int r = push_next(L, s, ms);
  if (r == 0) {
    lua_pushnil(L);
    return 1;
  }
  if (r == 2) return 2;
  size_t len;
  lua_tolstring(L, -2, &len);
  int pidx = lua_gettop(L) - 1, sidx = pidx + 1;
  const unsigned char *data = (const unsigned char *)lua_tostring(L, pidx);

  size_t cap = len / 18 + 1; /* each hash takes 18 bytes on the wire */
  kvbm_hash *hs = lua_newuserdatauv(L, cap * sizeof *hs, 0);
  kvbm_batch b;
  const char *why = NULL;
  size_t where = 0;
  int rc = kvbm_wire_decode(data, len, &b, hs, cap, &why, &where);
  if (rc < 0) {
    lkvbm_pusherror(L, rc);
    if (why) {
      lua_pushfstring(L, "%s: %s at byte %d", kvbm_strerror(rc), why, (int)where);
      lua_setfield(L, -2, "message");
    }
    lua_pushinteger(L, (lua_Integer)where);
    lua_setfield(L, -2, "offset");
    lua_pushvalue(L, pidx);
    lua_setfield(L, -2, "payload");
    lua_pushvalue(L, sidx);
    lua_setfield(L, -2, "subject");
    return 2;
  }
  lua_createtable(L, 0, 5);
  lua_pushstring(L, (unsigned)b.kind < 3 ? kind_names[b.kind] : "unknown");
  lua_setfield(L, -2, "kind");
  lua_createtable(L, (int)b.n, 0);
  for (size_t i = 0; i < b.n; i++) {
    lkvbm_pushhash(L, b.hashes[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "hashes");
  if (b.instance_id.hi == 0 && b.instance_id.lo <= (uint64_t)INT64_MAX) {
    lua_pushinteger(L, (lua_Integer)b.instance_id.lo);
  } else {
    unsigned char id[16];
    for (int i = 0; i < 8; i++) {
      id[i] = (unsigned char)(b.instance_id.hi >> (56 - 8 * i));
      id[8 + i] = (unsigned char)(b.instance_id.lo >> (56 - 8 * i));
    }
    lua_pushlstring(L, (const char *)id, sizeof id);
  }
  lua_setfield(L, -2, "instance_id");
  lua_pushvalue(L, sidx);
  lua_setfield(L, -2, "subject");
  lua_pushvalue(L, pidx);
  lua_setfield(L, -2, "payload");
  return 1;
}

static int sub_close(lua_State *L) {
  sub_doclose(luaL_checkudata(L, 1, LKVBM_NATS_SUB_MT));
  return 0;
}

static int sub_tostring(lua_State *L) {
  NatsSubBox *s = luaL_checkudata(L, 1, LKVBM_NATS_SUB_MT);
  lua_getiuservalue(L, 1, 1);
  lua_pushfstring(L, LKVBM_NATS_SUB_MT " (%s%s): %p", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?",
                  s->sub ? "" : ", closed", (void *)s);
  return 1;
}

/* ------------------------------------------------------------- module */

void lkvbm_open_nats(lua_State *L) {
  static const luaL_Reg sink_meta[] = {{"__gc", sink_close},
                                       {"__close", sink_close},
                                       {"__tostring", sink_tostring},
                                       {NULL, NULL}};
  static const luaL_Reg sink_methods[] = {{"publish", sink_publish},
                                          {"flush", sink_flush},
                                          {"stats", sink_stats},
                                          {"close", sink_close},
                                          {NULL, NULL}};
  static const luaL_Reg sub_meta[] = {{"__gc", sub_close},
                                      {"__close", sub_close},
                                      {"__tostring", sub_tostring},
                                      {NULL, NULL}};
  static const luaL_Reg sub_methods[] = {{"next", sub_next},
                                         {"raw", sub_raw},
                                         {"close", sub_close},
                                         {NULL, NULL}};
  int mod = lua_gettop(L);
  lkvbm_newclass(L, LKVBM_NATS_SINK_MT, sink_meta, sink_methods);
  lkvbm_newclass(L, LKVBM_NATS_SUB_MT, sub_meta, sub_methods);
  lkvbm_subtable(L, mod, "sink");
  lua_pushcfunction(L, sink_new);
  lua_setfield(L, -2, "nats");
  lua_pop(L, 1);
  lkvbm_subtable(L, mod, "sub");
  lua_pushcfunction(L, sub_new);
  lua_setfield(L, -2, "nats");
  lua_pop(L, 1);
  lkvbm_subtable(L, mod, "features");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "nats");
  lua_pop(L, 1);
}
