/* sink_file.c - a sink that appends each message to a file as a 4-byte
 * big-endian length followed by the bytes (kvbm.wire reads them back). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int file_publish(void *ud, const char *subject, const unsigned char *data, size_t len) {
  (void)subject;
  unsigned char head[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                           (unsigned char)(len >> 8), (unsigned char)len};
  FILE *f = ud;
  if (len > UINT32_MAX || fwrite(head, 1, 4, f) != 4 || fwrite(data, 1, len, f) != len)
    return KVBM_ESINK;
  return 0;
}

static int file_flush(void *ud) { return fflush((FILE *)ud) == 0 ? 0 : KVBM_ESINK; }
static void file_close(void *ud) { fclose((FILE *)ud); }

int kvbm_sink_file_new(const char *path, kvbm_sink *out) {
  FILE *f = fopen(path, "ab");
  if (!f) return KVBM_ESINK;
  memset(out, 0, sizeof *out);
  out->publish = file_publish;
  out->flush = file_flush;
  out->close = file_close;
  out->ud = f;
  return 0;
}
