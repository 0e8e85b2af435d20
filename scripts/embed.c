/* embed.c - the smallest host: link libkvbm from C (no Lua), hash a prompt
 * into blocks and print each block's lineage hash. `make check` runs it and
 * reads its TAP lines. Build it outside the tree with:
 *   cc embed.c $(pkg-config --cflags --libs kvbm) */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <kvbm.h>

int main(void) {
  const uint32_t prompt[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  kvbm_sequence *seq;
  size_t lo, hi;
  int rc = kvbm_sequence_new(NULL, 4, 1337, &seq);
  if (rc < 0) {
    fprintf(stderr, "embed: %s\n", kvbm_strerror(rc));
    return 1;
  }
  rc = kvbm_sequence_extend(seq, prompt, sizeof prompt / sizeof prompt[0], &lo, &hi);
  printf("%s 1 - 10 tokens in blocks of 4 complete positions [%zu, %zu)\n",
         rc == 2 ? "ok" : "not ok", lo, hi);
  for (size_t i = 0; i < kvbm_sequence_blocks(seq); i++) {
    char text[KVBM_HASH_STRLEN];
    if (kvbm_hash_format(kvbm_sequence_hashes(seq)[i], text, sizeof text) < 0) return 1;
    printf("# block %zu: %s\n", i, text);
  }
  char first[KVBM_HASH_STRLEN];
  (void)kvbm_hash_format(kvbm_sequence_hashes(seq)[1], first, sizeof first);
  int same = strcmp(first, "1:P5PmJLYPXS4:12KUtXWCDJu") == 0; /* Dynamo vector B1[1] */
  printf("%s 2 - block 1 matches Dynamo's hash\n", same ? "ok" : "not ok");
  printf("1..2\n");
  kvbm_sequence_free(seq);
  return rc == 2 && same ? 0 : 1;
}
