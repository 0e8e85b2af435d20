/* budget_alloc.h - a kvbm_alloc_fn for allocation-failure tests, shared by
 * the C tests: allocations succeed while `budget` lasts (< 0: unlimited)
 * and fail once it reaches 0; live blocks, calls and failures are counted. */
#ifndef KVBM_SPEC_BUDGET_ALLOC_H
#define KVBM_SPEC_BUDGET_ALLOC_H

#include <stdlib.h>

static long budget = -1; /* allocations left; < 0: unlimited */
static long live_allocs, budget_calls, budget_failures;

static void *budget_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud, (void)osize;
  if (nsize == 0) {
    if (ptr) live_allocs--;
    free(ptr);
    return NULL;
  }
  budget_calls++;
  if (budget == 0) return budget_failures++, NULL;
  if (budget > 0) budget--;
  void *p = realloc(ptr, nsize);
  if (p && !ptr) live_allocs++;
  return p;
}

#endif
