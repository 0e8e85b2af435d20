/* fuzz_trace.c - the request-trace loaders (kvbm_trace_load_buffer) on
 * arbitrary bytes. The first byte picks the format (auto, text, JSONL), the
 * JSONL tokens per hash id and whether a token limit applies; the rest is
 * the trace. A refusal leaves *out NULL with a message naming the input; an
 * accepted trace is self-consistent (each request's tokens inside the one
 * token array, in order, adding up to the total, within the limit), and a
 * text trace written back out in the text format loads to the same requests. */
#include <string.h>

#include "fuzz.h"
#include "kvbm_trace.h"

static char *write_text(const kvbm_trace *t, size_t *len) {
  size_t cap = 64, n = 0;
  for (size_t i = 0; i < kvbm_trace_count(t); i++) cap += 64 + 11 * kvbm_trace_get(t, i)->n_tokens;
  char *s = malloc(cap);
  FUZZ_CHECK(s != NULL, "malloc");
  for (size_t i = 0; i < kvbm_trace_count(t); i++) {
    const kvbm_trace_request *r = kvbm_trace_get(t, i);
    size_t k;
    const uint32_t *tok = kvbm_trace_tokens(t, i, &k);
    n += (size_t)snprintf(s + n, cap - n, "%llu %llu %zu", (unsigned long long)r->id,
                          (unsigned long long)r->salt, k);
    for (size_t j = 0; j < k; j++) n += (size_t)snprintf(s + n, cap - n, " %u", tok[j]);
    s[n++] = '\n';
  }
  *len = n;
  return s;
}

static void consistent(const kvbm_trace *t, uint64_t max_tokens) {
  size_t total = kvbm_trace_total_tokens(t), sum = 0, n;
  FUZZ_CHECK(max_tokens == 0 || total <= max_tokens, "%zu tokens, limit %llu", total, (unsigned long long)max_tokens);
  for (size_t i = 0; i < kvbm_trace_count(t); i++) {
    const kvbm_trace_request *r = kvbm_trace_get(t, i);
    const uint32_t *tok = kvbm_trace_tokens(t, i, &n);
    FUZZ_CHECK(r && n == r->n_tokens && r->first_token == sum, "request %zu: tokens at %zu, expected %zu", i,
               r->first_token, sum);
    FUZZ_CHECK(n == 0 || tok == kvbm_trace_all_tokens(t) + r->first_token, "request %zu: token pointer", i);
    FUZZ_CHECK(r->line >= 1 && (i == 0 || r->line > kvbm_trace_get(t, i - 1)->line), "request %zu: line %llu", i,
               (unsigned long long)r->line);
    sum += n;
  }
  FUZZ_CHECK(sum == total, "requests hold %zu tokens, total %zu", sum, total);
  FUZZ_CHECK(kvbm_trace_get(t, kvbm_trace_count(t)) == NULL, "get past the end");
  FUZZ_CHECK(kvbm_trace_tokens(t, kvbm_trace_count(t), &n) == NULL && n == 0, "tokens past the end");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t b = data[0];
  kvbm_trace_options o = {
      .format = (kvbm_trace_format)(b % 3),
      .trace_block_size = 1u << ((b >> 2) & 7), /* 1..128 tokens per hash id */
      .max_tokens = (b & 0x20) ? 64 : UINT64_C(1) << 20,
      .name = "fuzz.trace",
  };
  kvbm_trace *t = (kvbm_trace *)&o; /* must be reset to NULL on failure */
  kvbm_trace_error err;
  memset(&err, 0x55, sizeof err);
  int rc = kvbm_trace_load_buffer(data + 1, size - 1, &o, &t, &err);
  if (rc < 0) {
    FUZZ_CHECK(t == NULL, "a failed load left *out set");
    FUZZ_CHECK(rc == KVBM_ETRACE || rc == KVBM_ENOMEM, "load: %s", kvbm_err_name(rc));
    FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL, "message not terminated");
    FUZZ_CHECK(strncmp(err.message, "fuzz.trace:", 11) == 0, "message does not name the input: %s", err.message);
    return 0;
  }
  FUZZ_CHECK(rc == 0 && t != NULL, "load: %d", rc);
  kvbm_trace_format f = kvbm_trace_format_of(t);
  FUZZ_CHECK(f == KVBM_TRACE_TEXT || f == KVBM_TRACE_JSONL, "format %d", f);
  FUZZ_CHECK(o.format == KVBM_TRACE_AUTO || o.format == f, "asked for %d, got %d", o.format, f);
  consistent(t, o.max_tokens);

  if (f == KVBM_TRACE_TEXT) {
    size_t len;
    char *text = write_text(t, &len);
    kvbm_trace_options o2 = {.format = KVBM_TRACE_TEXT, .name = "again"};
    kvbm_trace *t2 = NULL;
    rc = kvbm_trace_load_buffer(text, len, &o2, &t2, &err);
    FUZZ_CHECK(rc == 0, "the written trace does not load: %s", err.message);
    FUZZ_CHECK(kvbm_trace_count(t2) == kvbm_trace_count(t), "request count changed");
    for (size_t i = 0; i < kvbm_trace_count(t); i++) {
      const kvbm_trace_request *x = kvbm_trace_get(t, i), *y = kvbm_trace_get(t2, i);
      size_t nx, ny;
      const uint32_t *tx = kvbm_trace_tokens(t, i, &nx), *ty = kvbm_trace_tokens(t2, i, &ny);
      FUZZ_CHECK(x->id == y->id && x->salt == y->salt && nx == ny && (nx == 0 || memcmp(tx, ty, nx * 4) == 0),
                 "request %zu changed in the round trip", i);
    }
    kvbm_trace_free(t2);
    free(text);
  }
  kvbm_trace_free(t);
  return 0;
}
