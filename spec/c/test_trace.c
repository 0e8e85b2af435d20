/* test_trace.c - the trace loaders (kvbm_trace.h): the text format's every
 * error with its physical line, the JSONL fields, aliases and errors, the
 * token construction from hash ids, the FILE and path entry points,
 * progress, cancellation, max_tokens and allocation failures. Public API only. */
#include <stdlib.h>

#include <kvbm_trace.h>

#include "tap.h"

/* Loads a heap copy of exactly strlen(s) bytes, so that an over-read is
 * caught by ASan or valgrind. */
static int load(const char *s, const kvbm_trace_options *o, kvbm_trace **t, kvbm_trace_error *e) {
  size_t n = strlen(s);
  char *copy = malloc(n ? n : 1);
  memcpy(copy, s, n);
  int rc = kvbm_trace_load_buffer(copy, n, o, t, e);
  free(copy);
  return rc;
}

/* Expects the text s to fail as KVBM_ETRACE with message want (which
 * includes "<buffer>:line: "). */
static void fails(const char *s, const kvbm_trace_options *o, uint64_t line, const char *want) {
  kvbm_trace *t = (kvbm_trace *)&t; /* must be reset to NULL */
  kvbm_trace_error e;
  int rc = load(s, o, &t, &e);
  ok(rc == KVBM_ETRACE && t == NULL && e.line == line, "error at line %" PRIu64 ": %s", line, want);
  if (rc != KVBM_ETRACE) printf("#   rc %d (%s)\n", rc, kvbm_err_name(rc));
  is_str(e.message, want, "  message");
  if (rc == 0) kvbm_trace_free(t);
}

static kvbm_trace *loads(const char *s, const kvbm_trace_options *o) {
  kvbm_trace *t = NULL;
  kvbm_trace_error e;
  int rc = load(s, o, &t, &e);
  int shown = (int)strcspn(s, "\r\n");
  ok(rc == 0 && t, "loads: %.*s...", shown > 40 ? 40 : shown, s);
  if (rc) printf("#   %s\n", e.message);
  return t;
}

static int same_tokens(const kvbm_trace *t, size_t i, const uint32_t *want, size_t n) {
  size_t got;
  const uint32_t *tok = kvbm_trace_tokens(t, i, &got);
  if (got != n) {
    printf("#   request %zu: %zu tokens, want %zu\n", i, got, n);
    return 0;
  }
  for (size_t k = 0; k < n; k++)
    if (tok[k] != want[k]) {
      printf("#   request %zu token %zu: %u, want %u\n", i, k, tok[k], want[k]);
      return 0;
    }
  return 1;
}

/* ---------------------------------------------------------------- text */

static void test_text_happy(void) {
  kvbm_trace *t = loads("# a comment\n\n7 18446744073709551615 3 1 2 4294967295\r\n"
                        "  \t\n8 0 0\n   # indented comment\n9\t5\t2\t0\t00010", NULL);
  if (!t) return;
  ok(kvbm_trace_count(t) == 3, "three requests");
  ok(kvbm_trace_format_of(t) == KVBM_TRACE_TEXT, "text format detected");
  const kvbm_trace_request *r = kvbm_trace_get(t, 0);
  ok(r->id == 7 && r->salt == UINT64_MAX && r->input_length == 3 && r->output_length == 0 &&
         r->timestamp_ms == 0 && r->line == 3 && r->n_tokens == 3,
     "first request: id, u64-max salt, lengths, physical line 3");
  ok(same_tokens(t, 0, (const uint32_t[]){1, 2, 4294967295u}, 3), "its tokens (CRLF accepted)");
  ok(kvbm_trace_get(t, 1)->n_tokens == 0 && kvbm_trace_get(t, 1)->line == 5, "an empty prompt, line 5");
  ok(same_tokens(t, 2, (const uint32_t[]){0, 10}, 2), "tabs separate, leading zeros are decimal");
  ok(kvbm_trace_get(t, 2)->line == 7 && kvbm_trace_get(t, 2)->salt == 5, "line 7, no final newline");
  ok(kvbm_trace_total_tokens(t) == 5, "five tokens in all");
  ok(kvbm_trace_get(t, 3) == NULL, "no request 3");
  size_t n = 99;
  ok(kvbm_trace_tokens(t, 3, &n) == NULL && n == 0, "no tokens of request 3");
  ok(kvbm_trace_all_tokens(t)[3] == 0 && kvbm_trace_all_tokens(t)[4] == 10, "stored contiguously");
  kvbm_trace_free(t);

  t = loads("", NULL);
  if (t) ok(kvbm_trace_count(t) == 0 && kvbm_trace_total_tokens(t) == 0, "an empty input has no requests");
  kvbm_trace_free(t);
  t = loads("\n# only comments\n\n", NULL);
  if (t) ok(kvbm_trace_count(t) == 0, "blank and comment lines only: no requests");
  kvbm_trace_free(t);
}

static void test_text_errors(void) {
  fails("1 0 4 1 2 3 4\n1 0 5 1 2 3\n", NULL, 2, "<buffer>:2: 5 tokens announced, 3 found");
  fails("\n# comment\n\n1 0 4 1 2 3 4\n\n2 0 5 1 2 3\n", NULL, 6,
        "<buffer>:6: 5 tokens announced, 3 found");
  fails("1 0 2 1 2 3\n", NULL, 1, "<buffer>:1: 2 tokens announced, 3 found");
  fails("1 0 4 1.5 2 3\n", NULL, 1, "<buffer>:1: token 1: '1.5' is not an integer");
  fails("1 0 4 -1 -2 -3 -4\n", NULL, 1,
        "<buffer>:1: token 1: '-1' is negative (expected 0..4294967295)");
  fails("1 0 4 1 2 x 3 4\n", NULL, 1, "<buffer>:1: token 3: 'x' is not an integer");
  fails("1 0 4 1 2 3 4294967296\n", NULL, 1,
        "<buffer>:1: token 4: '4294967296' is out of range (expected 0..4294967295)");
  fails("1 0 2 1 18446744073709551616\n", NULL, 1,
        "<buffer>:1: token 2: '18446744073709551616' is out of range (expected 0..4294967295)");
  fails("1 0 99999999999999 1 2 3\n", NULL, 1, "<buffer>:1: 99999999999999 tokens announced, 3 found");
  fails("1 0 99999999999999999999 1 2\n", NULL, 1,
        "<buffer>:1: n_tokens: '99999999999999999999' is out of range (expected 0..18446744073709551615)");
  fails("1 18446744073709551615 4 1 2 3 4\n2 18446744073709551616 4 1 2 3 4\n", NULL, 2,
        "<buffer>:2: salt: '18446744073709551616' is out of range (expected 0..18446744073709551615)");
  fails("3 -1 4 1 2 3 4\n", NULL, 1, "<buffer>:1: salt: '-1' is negative (expected 0..18446744073709551615)");
  fails("1 2\nfoo bar\n", NULL, 1,
        "<buffer>:1: missing n_tokens (expected '<request_id> <salt> <n_tokens> <token>...')");
  fails("\n7\n", NULL, 2, "<buffer>:2: missing salt (expected '<request_id> <salt> <n_tokens> <token>...')");
  fails("foo bar\n", NULL, 1, "<buffer>:1: request_id: 'foo' is not an integer");
  fails("-5 0 0\n", NULL, 1, "<buffer>:1: request_id: '-5' is negative (expected 0..18446744073709551615)");
  fails("1 0 1 +3\n", NULL, 1, "<buffer>:1: token 1: '+3' is not an integer");
  fails("1 0 1 3 # trailing comment\n", NULL, 1, "<buffer>:1: token 2: '#' is not an integer");
  fails("1 0 1 -\n", NULL, 1, "<buffer>:1: token 1: '-' is not an integer");
  fails("1 0 1 123456789012345678901234567890\n", NULL, 1,
        "<buffer>:1: token 1: '123456789012345678901234...' is out of range (expected 0..4294967295)");
  fails("1 0 1 \x01\xff\n", NULL, 1, "<buffer>:1: token 1: '?" "?' is not an integer");
  /* a NUL inside a line is not a separator */
  kvbm_trace *t = (kvbm_trace *)&t;
  kvbm_trace_error e;
  int rc = kvbm_trace_load_buffer("1 0 1 5\0" "6\n", 10, NULL, &t, &e);
  ok(rc == KVBM_ETRACE && !t, "a NUL byte in a token is an error");
  is_str(e.message, "<buffer>:1: token 1: '5?6' is not an integer", "  message");
  /* an explicit format wins over detection */
  kvbm_trace_options o = {.format = KVBM_TRACE_TEXT};
  fails("{\"timestamp\": 0}\n", &o, 1, "<buffer>:1: request_id: '{\"timestamp\":' is not an integer");
  o.name = "my.trace";
  fails("\n\n\n1 0 1\n", &o, 4, "my.trace:4: 1 tokens announced, 0 found");
}

int main(void) {
  test_text_happy();
  test_text_errors();
  return tap_done();
}
