/* test_lua_alloc.c - allocation failure through the Lua binding. A Lua
 * state whose allocator fails the k-th allocation runs spec/c/alloc_sweep.lua
 * (managers on a registry, blocks, BlockSets, events, assignments, tiers),
 * for every k from 1 to the number of allocations a clean run makes, once
 * with that allocation alone failing (Lua collects and retries) and once
 * with every allocation from the k-th on failing. Each
 * run must end in success or an out-of-memory error (Lua's "not enough
 * memory" or kvbm's no_memory), leave every manager's invariants intact
 * (kvbm._debug.check) and, once the state is closed, give back every byte
 * it took from the allocator. With every allocation failing from k on, the
 * last part is reported, not asserted: Lua drops a finalizer whose call it
 * cannot set up for lack of memory (GCTM, lgc.c), and the C memory of that
 * object (memory it holds outside its userdata) is then never freed. Since
 * BlockSets keep their blocks inside the userdata, no run of the sweep
 * keeps a byte (0 of about 2600), but a finalizable object with memory of
 * its own can still lose it this way. KVBM_ALLOC_STRIDE=n tries every n-th k only
 * (for slow runs such as valgrind's); KVBM_ALLOC_FROM=k starts there (to
 * look at one failing run under a debugger or LeakSanitizer). */
#include <lauxlib.h>
#include <lualib.h>
#include <stddef.h>
#include <stdlib.h>

#include "kvbm_lua.h"
#include "tap.h"

/* Every block carries a header that links it into the state's list, so
 * that what lua_close leaves behind can be counted, and freed (the process
 * itself stays leak-free for ASan and valgrind). */
typedef union header {
  struct {
    union header *prev, *next;
    size_t size;
  } h;
  max_align_t align;
} header;

typedef struct {
  header live;       /* list head */
  size_t in_use;     /* bytes held by the state */
  long count;        /* allocations seen while counting */
  long fail_at;      /* the allocation that fails (1-based); 0: none */
  int persist;       /* and every later one too */
  int counting;
} sweep_alloc;

static void unlink_block(header *b) {
  b->h.prev->h.next = b->h.next;
  b->h.next->h.prev = b->h.prev;
}

static void link_block(sweep_alloc *c, header *b, size_t size) {
  b->h.size = size;
  b->h.next = c->live.h.next;
  b->h.prev = &c->live;
  c->live.h.next->h.prev = b;
  c->live.h.next = b;
}

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sweep_alloc *c = ud;
  header *b = ptr ? (header *)ptr - 1 : NULL;
  size_t old = ptr ? osize : 0; /* with ptr NULL, osize is a type tag */
  if (nsize == 0) {
    if (b) {
      unlink_block(b);
      c->in_use -= b->h.size;
      free(b);
    }
    return NULL;
  }
  if (c->counting && nsize > old) {
    c->count++;
    if (c->fail_at && (c->count == c->fail_at || (c->persist && c->count > c->fail_at))) return NULL;
  }
  if (b) unlink_block(b);
  header *nb = realloc(b, sizeof *nb + nsize);
  if (!nb) { /* the old block stays valid */
    link_block(c, b, b->h.size);
    return NULL;
  }
  c->in_use = c->in_use - old + nsize;
  link_block(c, nb, nsize);
  return nb + 1;
}

/* Frees what is left after lua_close; returns how many bytes that was. */
static size_t reclaim(sweep_alloc *c) {
  size_t bytes = 0;
  while (c->live.h.next != &c->live) {
    header *b = c->live.h.next;
    unlink_block(b);
    bytes += b->h.size;
    free(b);
  }
  return bytes;
}

typedef struct {
  int ok;            /* run() returned normally */
  int clean;         /* ...or raised an out-of-memory error */
  int checked;       /* check() passed */
  size_t leaked;     /* bytes still held after lua_close */
  long allocations;
  char msg[256];
} outcome;

static int is_oom(const char *m) {
  return strstr(m, "not enough memory") || strstr(m, "no_memory") || strstr(m, "out of memory");
}

static const char *srcdir = ".";

static void sweep_once(const char *script, long fail_at, int persist, outcome *o) {
  sweep_alloc c = {.fail_at = fail_at, .persist = persist};
  c.live.h.prev = c.live.h.next = &c.live;
  memset(o, 0, sizeof *o);
  lua_State *L = lua_newstate(failing_alloc, &c);
  luaL_openlibs(L);
  lua_getglobal(L, "package"); /* kvbm.tiers and friends come from the source tree */
  lua_pushfstring(L, "%s/lua/?.lua;", srcdir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE); /* require "kvbm" runs in the sweep */
  lua_pushcfunction(L, luaopen_kvbm);
  lua_setfield(L, -2, "kvbm");
  lua_pop(L, 1);
  if (luaL_dofile(L, script) != LUA_OK) {
    snprintf(o->msg, sizeof o->msg, "loading: %s", lua_tostring(L, -1));
    lua_close(L);
    reclaim(&c);
    return;
  }
  int mod = lua_gettop(L);
  lua_newtable(L);
  int live = lua_gettop(L);

  lua_getfield(L, mod, "run");
  lua_pushvalue(L, live);
  c.counting = 1;
  int rc = lua_pcall(L, 1, 0, 0);
  c.counting = 0;
  o->allocations = c.count;
  if (rc == LUA_OK) {
    o->ok = 1;
  } else {
    const char *m = luaL_tolstring(L, -1, NULL);
    snprintf(o->msg, sizeof o->msg, "%s", m);
    o->clean = is_oom(m);
    lua_pop(L, 2);
  }
  lua_getfield(L, mod, "check");
  lua_pushvalue(L, live);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK) o->checked = 1;
  else snprintf(o->msg, sizeof o->msg, "check: %s", luaL_tolstring(L, -1, NULL));
  lua_close(L);
  o->leaked = reclaim(&c);
}

int main(void) {
  const char *top = getenv("KVBM_SRCDIR");
  const char *stride_env = getenv("KVBM_ALLOC_STRIDE");
  long stride = stride_env ? atol(stride_env) : 1;
  long from = getenv("KVBM_ALLOC_FROM") ? atol(getenv("KVBM_ALLOC_FROM")) : 1;
  char script[4096];
  outcome o;
  if (stride < 1) stride = 1;
  if (top) srcdir = top;
  snprintf(script, sizeof script, "%s/spec/c/alloc_sweep.lua", srcdir);
  FILE *f = fopen(script, "r");
  if (!f) {
    printf("1..0 # SKIP %s not found (set KVBM_SRCDIR)\n", script);
    return 0;
  }
  fclose(f);

  sweep_once(script, 0, 0, &o);
  ok(o.ok && o.checked && o.leaked == 0, "a run without failures succeeds (%ld allocations, %zu bytes left)",
     o.allocations, o.leaked);
  if (!o.ok || !o.checked) printf("#   %s\n", o.msg);
  long total = o.allocations;
  for (int persist = 0; persist < 2; persist++) {
    const char *how = persist ? "from allocation k on" : "at allocation k alone";
    long runs = 0, unclean = 0, broken = 0, leaky = 0, failed_runs = 0;
    for (long k = from < 1 ? 1 : from; k <= total; k += stride) {
      sweep_once(script, k, persist, &o);
      runs++;
      failed_runs += !o.ok;
      if (!o.ok && !o.clean && unclean++ < 5) printf("#   k = %ld: not an out-of-memory error: %s\n", k, o.msg);
      if (!o.checked && broken++ < 5) printf("#   k = %ld: %s\n", k, o.msg);
      if (o.leaked && leaky++ < 5) printf("#   k = %ld: %zu bytes not given back\n", k, o.leaked);
    }
    ok(unclean == 0, "failing %s: every run that fails ends in an out-of-memory error (%ld of %ld)", how,
       failed_runs, runs);
    ok(broken == 0, "failing %s: every manager passes kvbm._debug.check after each run", how);
    if (!persist)
      ok(leaky == 0, "failing %s: every byte goes back to the allocator at lua_close", how);
    else /* not asserted: see the note at the top */
      printf("# failing %s: %ld of %ld runs kept bytes after lua_close\n", how, leaky, runs);
  }
  return tap_done();
}
