/* pool_alloc.h - the kvbm program's lua_Alloc (see pool_alloc.c). */
#ifndef KVBM_POOL_ALLOC_H
#define KVBM_POOL_ALLOC_H

#include <stddef.h>

#define POOL_MAX 256 /* larger blocks go to the C library */

typedef struct kvbm_pool {
  void *free[POOL_MAX / 16]; /* a free list per 16-byte size class */
  struct slab *slabs;        /* every slab, freed by kvbm_pool_free */
  char *next, *end;          /* the unused rest of the newest slab */
  int off;                   /* every block from the C library (see kvbm_pool_init) */
} kvbm_pool;

/* Off under valgrind (memcheck then checks every Lua block) and in
 * sanitizer builds. */
void kvbm_pool_init(kvbm_pool *p);
/* A lua_Alloc with a kvbm_pool as ud. */
void *kvbm_pool_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* 0 when p hands every block to the C library. */
int kvbm_pool_pooling(const kvbm_pool *p);
/* Frees every slab: after lua_close of the states that used p. */
void kvbm_pool_free(kvbm_pool *p);

#endif
