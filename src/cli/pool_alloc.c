/* pool_alloc.c - the kvbm program's Lua allocator: small blocks from free
 * lists, the rest from the C library.
 *
 * A per-block Lua host makes and collects several small objects per block
 * (guards, hash strings, table parts); through malloc/free they cost about
 * a fifth of its time (glibc: realloc, fastbin consolidation). Lua tells the
 * allocator every block's size (osize), so a block of up to POOL_MAX bytes
 * needs no header: it comes from its size class's free list, carved from
 * slabs that live until the state is closed. Sanitizer builds and runs
 * under valgrind use the C library only, so that every block stays checked. */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include "pool_alloc.h"

#include <stdlib.h>
#include <string.h>
#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define POOL_OFF 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_OFF 1
#endif
#endif

#define POOL_QUANTUM 16
#define POOL_SLAB ((size_t)64 * 1024)

typedef struct slab {
  struct slab *next;
} slab;

static size_t class_of(size_t size) { return (size + POOL_QUANTUM - 1) / POOL_QUANTUM; } /* 1..POOL_CLASSES */

static int small(const kvbm_pool *p, size_t size) { return !p->off && size > 0 && size <= POOL_MAX; }

/* A block of class c: from its free list, or the current slab's rest, or a new slab. */
static void *take(kvbm_pool *p, size_t c) {
  void *b = p->free[c - 1];
  if (b) {
    memcpy(&p->free[c - 1], b, sizeof p->free[c - 1]); /* the link kept in a free block */
#if defined(__GNUC__)
    /* the freed blocks are cold by the time they are reused: fetch the
     * next one's link now, so that the next take of this size does not wait */
    if (p->free[c - 1]) __builtin_prefetch(p->free[c - 1], 1);
#endif
    return b;
  }
  size_t size = c * POOL_QUANTUM;
  if ((size_t)(p->end - p->next) < size) {
    /* what is left of the old slab (less than one block) stays unused */
    slab *s = malloc(POOL_SLAB);
    if (!s) return NULL;
    s->next = p->slabs;
    p->slabs = s;
    p->next = (char *)s + POOL_QUANTUM; /* the link, padded to keep blocks 16-aligned */
    p->end = (char *)s + POOL_SLAB;
  }
  b = p->next;
  p->next += size;
  return b;
}

static void give(kvbm_pool *p, void *b, size_t c) {
  memcpy(b, &p->free[c - 1], sizeof p->free[c - 1]);
  p->free[c - 1] = b;
}

void *kvbm_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  kvbm_pool *p = ud;
  if (!ptr) osize = 0; /* then osize is the kind of object, not a size */
  int was_small = small(p, osize), is_small = small(p, nsize);
  if (nsize == 0) {
    if (was_small)
      give(p, ptr, class_of(osize));
    else
      free(ptr);
    return NULL;
  }
  if (!was_small && !is_small) return realloc(ptr, nsize);
  if (was_small && is_small && class_of(osize) == class_of(nsize)) return ptr;
  void *nb = is_small ? take(p, class_of(nsize)) : malloc(nsize);
  if (!nb) return NULL; /* Lua keeps the old block */
  if (ptr) {
    memcpy(nb, ptr, osize < nsize ? osize : nsize);
    if (was_small)
      give(p, ptr, class_of(osize));
    else
      free(ptr);
  }
  return nb;
}

int kvbm_pool_pooling(const kvbm_pool *p) { return small(p, 1); }

void kvbm_pool_init(kvbm_pool *p) {
  memset(p, 0, sizeof *p);
#ifdef POOL_OFF
  p->off = 1;
#elif defined(HAVE_VALGRIND_VALGRIND_H)
  p->off = RUNNING_ON_VALGRIND != 0;
#endif
}

void kvbm_pool_free(kvbm_pool *p) {
  while (p->slabs) {
    slab *s = p->slabs;
    p->slabs = s->next;
    free(s);
  }
  kvbm_pool_init(p);
}
