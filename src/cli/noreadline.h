/* noreadline.h - the little of GNU readline the REPL uses, for a build
 * without it (configure found no libreadline, or --without-readline):
 * plain lines from stdin; kvbm.c leaves out history and completion. */
#ifndef KVBM_NOREADLINE_H
#define KVBM_NOREADLINE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A malloc'ed line without its newline, or NULL at end of input. */
static char *readline(const char *prompt) {
  size_t cap = 256, len = 0;
  char *line = malloc(cap);
  if (!line) return NULL;
  fputs(prompt, stdout);
  fflush(stdout);
  int c;
  while ((c = getchar()) != EOF && c != '\n') {
    if (len + 1 == cap) {
      char *p = realloc(line, cap *= 2);
      if (!p) break;
      line = p;
    }
    line[len++] = (char)c;
  }
  if (c == EOF && len == 0) {
    free(line);
    return NULL;
  }
  line[len] = '\0';
  return line;
}

#endif
