/* test_pool_alloc.c - the kvbm program's Lua allocator (src/cli/pool_alloc.c):
 * blocks keep their bytes across resizes within and between the pooled sizes
 * and the C library's, are 16-byte aligned and distinct, and freed blocks
 * are reused by their size class. */
#include <stdint.h>
#include <stdlib.h>

#include "../../src/cli/pool_alloc.h"
#include "tap.h"

static void fill(unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i * 7);
}

static int same(const unsigned char *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(seed + i * 7)) return 0;
  return 1;
}

int main(void) {
  kvbm_pool pool;
  kvbm_pool_init(&pool);

  /* sizes across every class and beyond POOL_MAX, all alive at once */
  enum { N = 2000 };
  static unsigned char *blocks[N];
  static size_t sizes[N];
  int aligned = 1, kept = 1;
  for (int i = 0; i < N; i++) {
    sizes[i] = 1 + (size_t)(i * 37) % (POOL_MAX + 64);
    blocks[i] = kvbm_pool_alloc(&pool, NULL, (size_t)4 /* Lua passes the object type here */, sizes[i]);
    if ((uintptr_t)blocks[i] % 16) aligned = 0;
    fill(blocks[i], sizes[i], (unsigned)i);
  }
  for (int i = 0; i < N; i++) kept &= same(blocks[i], sizes[i], (unsigned)i);
  ok(aligned, "blocks are 16-byte aligned");
  ok(kept, "%d live blocks of up to %d bytes do not overlap", N, POOL_MAX + 64);

  /* resizes: grow and shrink within the pool, into and out of the C library */
  static const size_t steps[] = {8, 17, 16, 100, POOL_MAX, POOL_MAX + 1, 4096, 200, 3, 64};
  int resized = 1;
  for (int i = 0; i < N; i += 3) {
    for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
      size_t n = steps[s], keep = n < sizes[i] ? n : sizes[i];
      unsigned char *p = kvbm_pool_alloc(&pool, blocks[i], sizes[i], n);
      if (!p || !same(p, keep, (unsigned)i)) resized = 0;
      fill(p, n, (unsigned)i);
      blocks[i] = p;
      sizes[i] = n;
    }
  }
  ok(resized, "resizing keeps the bytes that fit, within and across the pooled sizes");
  for (int i = 0; i < N; i++) kept &= same(blocks[i], sizes[i], (unsigned)i);
  ok(kept, "the other blocks are untouched by the resizes");

  /* a freed block is the next one of its size class */
  unsigned char *a = kvbm_pool_alloc(&pool, NULL, 0, 40);
  ok(kvbm_pool_alloc(&pool, a, 40, 0) == NULL, "free returns NULL");
  unsigned char *b = kvbm_pool_alloc(&pool, NULL, 0, 48);
  unsigned char *c = kvbm_pool_alloc(&pool, NULL, 0, 49);
  unsigned char *d = kvbm_pool_alloc(&pool, b, 48, 33);
  if (kvbm_pool_pooling(&pool)) {
    ok(a == b, "a freed 40-byte block is reused for 48 bytes (one class)");
    ok(c != b, "49 bytes come from the next class");
    ok(d == b, "a resize within the class keeps the block");
  } else {
    printf("# pool off (sanitizer build, or under valgrind): every block comes from the C library\n");
  }
  b = d;
  for (int i = 0; i < N; i++) kvbm_pool_alloc(&pool, blocks[i], sizes[i], 0);
  kvbm_pool_alloc(&pool, b, 33, 0);
  kvbm_pool_alloc(&pool, c, 49, 0);
  kvbm_pool_free(&pool);
  ok(pool.slabs == NULL && pool.next == NULL, "kvbm_pool_free gives back every slab");
  return tap_done();
}
