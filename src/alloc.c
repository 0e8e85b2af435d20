/* alloc.c - the per-instance allocator hook (lua_Alloc shape). */
#include <stdlib.h>

#include "internal.h"

void *kvbm__realloc(const kvbm_allocator *a, void *ptr, size_t osize, size_t nsize) {
  if (a && a->fn) return a->fn(a->ud, ptr, osize, nsize);
  if (nsize == 0) {
    free(ptr);
    return NULL;
  }
  return realloc(ptr, nsize);
}

void kvbm__free(const kvbm_allocator *a, void *ptr, size_t size) {
  if (ptr) kvbm__realloc(a, ptr, size, 0);
}

int kvbm__grow(const kvbm_allocator *a, void **arr, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t ncap = *cap ? *cap : 8;
  while (ncap < need) {
    if (ncap > SIZE_MAX / 2 / elem) return KVBM_ENOMEM;
    ncap *= 2;
  }
  void *p = kvbm__realloc(a, *arr, *cap * elem, ncap * elem);
  if (!p) return KVBM_ENOMEM;
  *arr = p;
  *cap = ncap;
  return 0;
}
