/* ltrace.c - kvbm.trace: request traces (kvbm_trace.h) as a userdata.
 *
 *   t, err = kvbm.trace.load(path, opts)  -- "-" reads standard input
 *   t, err = kvbm.trace.parse(string, opts)
 *   opts: format = "auto"|"text"|"jsonl", trace_block_size = 512,
 *         max_tokens = 0 (no limit), name = "shown in messages",
 *         progress = function(done_bytes, total_bytes) end
 *
 * A malformed trace is an expected failure: nil, err with err.code
 * ("malformed_trace", "io_error", ...), err.message ("file:line: what"),
 * err.file and err.line. Bad options raise; so does a raising progress
 * function (its error, unchanged). Requests are indexed 1..#t; each
 * accessor returns nil for an index out of range. t:sequence(i, bs) hashes
 * request i straight from the trace (see trace_sequence). */
#include <string.h>

#include "kvbm_trace.h"
#include "lkvbm.h"

typedef struct {
  kvbm_trace *t;
} TraceBox;

static kvbm_trace *checktrace(lua_State *L, int idx) {
  TraceBox *box = lkvbm_checkudata(L, idx, LKVBM_TRACE_MT);
  if (!box->t) luaL_error(L, "attempt to use an empty " LKVBM_TRACE_MT);
  return box->t;
}

/* ------------------------------------------------------------ loading */

typedef struct {
  lua_State *L;
  int fn;     /* stack index of the progress function */
  int raised; /* its error is on the stack top */
} Progress;

static int call_progress(void *ud, uint64_t done, uint64_t total) {
  Progress *pr = ud;
  lua_pushvalue(pr->L, pr->fn);
  lua_pushinteger(pr->L, (lua_Integer)done);
  lua_pushinteger(pr->L, (lua_Integer)total);
  if (lua_pcall(pr->L, 2, 0, 0) == LUA_OK) return 0;
  pr->raised = 1;
  return 1;
}

static void options(lua_State *L, int idx, kvbm_trace_options *o, Progress *pr) {
  static const char *const known[] = {"format", "trace_block_size", "max_tokens", "name",
                                      "progress", NULL};
  static const char *const formats[] = {"auto", "text", "jsonl", NULL};
  memset(o, 0, sizeof *o);
  o->alloc = lkvbm_allocator(L);
  if (lua_isnoneornil(L, idx)) return;
  if (!lua_istable(L, idx)) luaL_error(L, "kvbm.trace: options must be a table, got %s", luaL_typename(L, idx));
  lkvbm_checkoptions(L, idx, known);

  lua_getfield(L, idx, "format");
  if (!lua_isnil(L, -1)) {
    const char *f = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int k = 0;
    while (f && formats[k] && strcmp(formats[k], f) != 0) k++;
    if (!f || !formats[k])
      luaL_error(L, "kvbm.trace: option 'format' must be \"auto\", \"text\" or \"jsonl\", got %s",
                 luaL_tolstring(L, -1, NULL));
    o->format = (kvbm_trace_format)k;
  }
  lua_pop(L, 1);

  lua_getfield(L, idx, "trace_block_size");
  if (!lua_isnil(L, -1)) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < 1 || v > (lua_Integer)UINT32_MAX)
      luaL_error(L, "kvbm.trace: option 'trace_block_size' must be an integer in 1..4294967295, got %s",
                 luaL_tolstring(L, -1, NULL));
    o->trace_block_size = (uint32_t)v;
  }
  lua_pop(L, 1);

  lua_getfield(L, idx, "max_tokens");
  if (!lua_isnil(L, -1)) {
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (lua_type(L, -1) != LUA_TNUMBER || !isint || v < 0)
      luaL_error(L, "kvbm.trace: option 'max_tokens' must be an integer >= 0, got %s",
                 luaL_tolstring(L, -1, NULL));
    o->max_tokens = (uint64_t)v;
  }
  lua_pop(L, 1);

  lua_getfield(L, idx, "name");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    luaL_error(L, "kvbm.trace: option 'name' must be a string, got %s", luaL_typename(L, -1));
  o->name = lua_tostring(L, -1); /* stays on the stack (anchored) */

  lua_getfield(L, idx, "progress");
  if (!lua_isnil(L, -1)) {
    if (!lua_isfunction(L, -1))
      luaL_error(L, "kvbm.trace: option 'progress' must be a function, got %s", luaL_typename(L, -1));
    pr->L = L;
    pr->fn = lua_gettop(L);
    o->progress = call_progress;
    o->progress_ud = pr;
  }
}

/* Pushes the trace, or nil and the error (re-raises a progress error). */
static int load_result(lua_State *L, int boxidx, int rc, const kvbm_trace_error *e,
                       const char *name, const Progress *pr) {
  if (pr->raised) return lua_error(L);
  if (rc == 0) {
    lua_pushvalue(L, boxidx);
    return 1;
  }
  lkvbm_pusherror(L, rc);
  if (e->message[0]) {
    lua_pushstring(L, e->message);
    lua_setfield(L, -2, "message");
  }
  lua_pushstring(L, name);
  lua_setfield(L, -2, "file");
  if (e->line) {
    lua_pushinteger(L, (lua_Integer)e->line);
    lua_setfield(L, -2, "line");
  }
  return 2;
}

static TraceBox *newbox(lua_State *L) {
  TraceBox *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->t = NULL;
  luaL_setmetatable(L, LKVBM_TRACE_MT);
  return box;
}

/* The path or the text: a string, not a number Lua would convert. */
static const char *checkstring(lua_State *L, int idx, const char *what, size_t *len) {
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_error(L, "kvbm.trace.%s: expected a string, got %s", what, luaL_typename(L, idx));
  return lua_tolstring(L, idx, len);
}

static int trace_load(lua_State *L) {
  const char *path = checkstring(L, 1, "load", NULL);
  kvbm_trace_options o;
  Progress pr = {0};
  options(L, 2, &o, &pr);
  int stdin_ = strcmp(path, "-") == 0;
  if (!o.name) o.name = stdin_ ? "<stdin>" : path;
  TraceBox *box = newbox(L);
  int boxidx = lua_gettop(L);
  kvbm_trace_error e;
  int rc = stdin_ ? kvbm_trace_load_file(stdin, &o, &box->t, &e)
                  : kvbm_trace_load_path(path, &o, &box->t, &e);
  return load_result(L, boxidx, rc, &e, o.name, &pr);
}

static int trace_parse(lua_State *L) {
  size_t len;
  const char *s = checkstring(L, 1, "parse", &len);
  kvbm_trace_options o;
  Progress pr = {0};
  options(L, 2, &o, &pr);
  if (!o.name) o.name = "<string>";
  TraceBox *box = newbox(L);
  int boxidx = lua_gettop(L);
  kvbm_trace_error e;
  int rc = kvbm_trace_load_buffer(s, len, &o, &box->t, &e);
  return load_result(L, boxidx, rc, &e, o.name, &pr);
}

/* ------------------------------------------------------------ access */

static int trace_gc(lua_State *L) {
  TraceBox *box = luaL_checkudata(L, 1, LKVBM_TRACE_MT);
  kvbm_trace_free(box->t);
  box->t = NULL;
  return 0;
}

static int trace_len(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_trace_count(checktrace(L, 1)));
  return 1;
}

/* Request i (1-based) or NULL; t gets the trace. */
static const kvbm_trace_request *request_at(lua_State *L, kvbm_trace **t) {
  *t = checktrace(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (lua_Unsigned)i > kvbm_trace_count(*t)) return NULL;
  return kvbm_trace_get(*t, (size_t)(i - 1));
}

/* The packed u32 little-endian string kvbm.sequence takes. */
static void pushtokens(lua_State *L, const kvbm_trace *t, size_t i) {
  size_t n;
  const uint32_t *tok = kvbm_trace_tokens(t, i, &n);
  luaL_Buffer b;
  unsigned char *p = (unsigned char *)luaL_buffinitsize(L, &b, n * 4);
  for (size_t k = 0; k < n; k++) {
    uint32_t v = tok[k];
    p[4 * k] = (unsigned char)v, p[4 * k + 1] = (unsigned char)(v >> 8);
    p[4 * k + 2] = (unsigned char)(v >> 16), p[4 * k + 3] = (unsigned char)(v >> 24);
  }
  luaL_pushresultsize(&b, n * 4);
}

#define TRACE_FIELDS(XX)                                                          \
  XX(id, lua_pushinteger(L, (lua_Integer)r->id))                                  \
  XX(salt, lua_pushinteger(L, (lua_Integer)r->salt)) /* u64 bit pattern */        \
  XX(timestamp, lua_pushnumber(L, r->timestamp_ms))                              \
  XX(input_length, lua_pushinteger(L, (lua_Integer)r->input_length))              \
  XX(output_length, lua_pushinteger(L, (lua_Integer)r->output_length))            \
  XX(n_tokens, lua_pushinteger(L, (lua_Integer)r->n_tokens))                      \
  XX(line, lua_pushinteger(L, (lua_Integer)r->line))                              \
  XX(tokens, pushtokens(L, t, (size_t)(r - kvbm_trace_get(t, 0))))

#define TRACE_ACCESSOR(name, push)                  \
  static int trace_##name(lua_State *L) {           \
    kvbm_trace *t;                                  \
    const kvbm_trace_request *r = request_at(L, &t); \
    if (!r) return luaL_pushfail(L), 1;             \
    push;                                           \
    return 1;                                       \
  }
TRACE_FIELDS(TRACE_ACCESSOR)
#undef TRACE_ACCESSOR

/* t:sequence(i, block_size [, into]): request i's tokens hashed with its
 * salt, straight from the loaded trace (no Lua string on the way). into, a
 * kvbm.Sequence of that block size, is refilled in place and returned: its
 * memory is reused, so hashing request after request allocates nothing. */
static int trace_sequence(lua_State *L) {
  kvbm_trace *t;
  const kvbm_trace_request *r = request_at(L, &t);
  uint64_t bs = lkvbm_checkblocksize(L, 3);
  kvbm_sequence *into = NULL;
  if (!lua_isnoneornil(L, 4)) {
    into = lkvbm_tosequence(L, 4);
    luaL_argexpected(L, into, 4, LKVBM_SEQUENCE_MT);
    luaL_argcheck(L, kvbm_sequence_block_size(into) == bs, 4, "a sequence of another block size");
  }
  if (!r) return luaL_pushfail(L), 1;
  size_t n;
  const uint32_t *tok = kvbm_trace_tokens(t, (size_t)(r - kvbm_trace_get(t, 0)), &n);
  if (!into) return lkvbm_pushsequence(L, bs, r->salt, tok, n);
  int rc = kvbm_sequence_reset(into, r->salt, tok, n);
  if (rc < 0) return lkvbm_pusherror(L, rc); /* into unchanged */
  lua_settop(L, 4);
  return 1;
}

/* t:request(i): one table with every field (convenient, not for hot loops). */
static int trace_request(lua_State *L) {
  kvbm_trace *t;
  const kvbm_trace_request *r = request_at(L, &t);
  if (!r) return luaL_pushfail(L), 1;
  lua_createtable(L, 0, 8);
#define TRACE_SETFIELD(name, push) \
  push;                            \
  lua_setfield(L, -2, #name);
  TRACE_FIELDS(TRACE_SETFIELD)
#undef TRACE_SETFIELD
  return 1;
}

static int trace_total_tokens(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)kvbm_trace_total_tokens(checktrace(L, 1)));
  return 1;
}

static int trace_format(lua_State *L) {
  lua_pushstring(L, kvbm_trace_format_of(checktrace(L, 1)) == KVBM_TRACE_JSONL ? "jsonl" : "text");
  return 1;
}

static int trace_tostring(lua_State *L) {
  kvbm_trace *t = checktrace(L, 1);
  lua_pushfstring(L, LKVBM_TRACE_MT "(%s, %I requests, %I tokens)",
                  kvbm_trace_format_of(t) == KVBM_TRACE_JSONL ? "jsonl" : "text",
                  (lua_Integer)kvbm_trace_count(t), (lua_Integer)kvbm_trace_total_tokens(t));
  return 1;
}

void lkvbm_open_trace(lua_State *L) {
  static const luaL_Reg meta[] = {
      {"__gc", trace_gc}, {"__len", trace_len}, {"__tostring", trace_tostring}, {NULL, NULL}};
  static const luaL_Reg methods[] = {
#define TRACE_METHOD(name, push) {#name, trace_##name},
      TRACE_FIELDS(TRACE_METHOD)
#undef TRACE_METHOD
      {"request", trace_request},
      {"sequence", trace_sequence},
      {"total_tokens", trace_total_tokens},
      {"format", trace_format},
      {NULL, NULL},
  };
  static const luaL_Reg funcs[] = {{"load", trace_load}, {"parse", trace_parse}, {NULL, NULL}};
  lkvbm_newclass(L, LKVBM_TRACE_MT, meta, methods);
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "trace");
}
