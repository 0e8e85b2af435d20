/* replay.c - runs a fuzz target's LLVMFuzzerTestOneInput over every file of
 * its corpus (spec/fuzz/corpus/<target>/) without libFuzzer, as a TAP test
 * of make check: the seeds, and the input of every crash found and fixed,
 * stay regression tests under any compiler (and under the sanitizer build).
 * The target is named by the program: replay_wire runs corpus/fuzz_wire. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
  const char *me = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
  const char *target = strncmp(me, "replay_", 7) == 0 ? me + 7 : me;
  const char *top = getenv("KVBM_SRCDIR");
  char dir[4096];
  if (argc > 1)
    snprintf(dir, sizeof dir, "%s", argv[1]);
  else
    snprintf(dir, sizeof dir, "%s/spec/fuzz/corpus/fuzz_%s", top ? top : ".", target);
  DIR *d = opendir(dir);
  if (!d) {
    printf("1..0 # SKIP no corpus at %s (set KVBM_SRCDIR)\n", dir);
    return 0;
  }
  char *names[4096];
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d)) && n < 4096;)
    if (e->d_name[0] != '.') names[n++] = strdup(e->d_name);
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  printf("1..%zu\n", n);
  for (size_t i = 0; i < n; i++) {
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, got;
    if (f) {
      do {
        if (len == cap && !(buf = realloc(buf, cap = cap ? 2 * cap : 4096))) abort();
        got = fread(buf + len, 1, cap - len, f);
        len += got;
      } while (got > 0);
      fclose(f);
    }
    if (f) LLVMFuzzerTestOneInput(buf, len); /* a failed check aborts: the test fails */
    printf("%s %zu - %s/%s (%zu bytes)\n", f ? "ok" : "not ok", i + 1, target, names[i], len);
    free(buf);
    free(names[i]);
  }
  return 0;
}
