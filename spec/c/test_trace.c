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

  /* an empty prompt before any token is stored (no token array yet) */
  t = loads("5 0 0\n", NULL);
  if (t) ok(kvbm_trace_count(t) == 1 && kvbm_trace_get(t, 0)->n_tokens == 0, "an empty first prompt");
  kvbm_trace_free(t);
  t = loads("{\"timestamp\": 0, \"input_length\": 0, \"output_length\": 0, \"hash_ids\": [1]}\n", NULL);
  if (t) ok(kvbm_trace_count(t) == 1 && kvbm_trace_get(t, 0)->n_tokens == 0, "an empty first JSONL prompt");
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

/* --------------------------------------------------------------- JSONL */

/* Like fails(), for a message whose tail is jansson's own wording. */
static void fails_prefix(const char *s, const kvbm_trace_options *o, uint64_t line, const char *want) {
  kvbm_trace *t = (kvbm_trace *)&t;
  kvbm_trace_error e;
  int rc = load(s, o, &t, &e);
  ok(rc == KVBM_ETRACE && t == NULL && e.line == line && strncmp(e.message, want, strlen(want)) == 0,
     "error at line %" PRIu64 ": %s...", line, want);
  if (strncmp(e.message, want, strlen(want))) printf("#   got \"%s\"\n", e.message);
  if (rc == 0) kvbm_trace_free(t);
}

/* Dynamo's construction, written out independently: each id repeated bs
 * times, concatenated, then cut to input_length. */
static size_t dynamo_tokens(const uint32_t *ids, size_t nids, size_t bs, size_t input, uint32_t *out) {
  size_t n = 0;
  for (size_t i = 0; i < nids; i++)
    for (size_t j = 0; j < bs; j++) out[n++] = ids[i];
  return n < input ? n : input;
}

static void test_jsonl_happy(void) {
  kvbm_trace_options o = {.trace_block_size = 4};
  kvbm_trace *t = loads("# Mooncake-style\n"
                        "{\"timestamp\": 12.5, \"input_length\": 5, \"output_length\": 3, \"hash_ids\": [7, 9], \"x\": [1]}\n"
                        "\n"
                        "{\"created_time\": 40, \"input_tokens\": 100, \"output_tokens\": 0, \"hash_ids\": [1, 2]}\n"
                        "  {\"hash_ids\": [], \"timestamp\": 0, \"input_length\": 0, \"output_length\": 1}\r\n"
                        "{\"timestamp\": 1, \"input_length\": 8, \"output_length\": 2, \"hash_ids\": [4294967295, 0]}",
                        &o);
  if (!t) return;
  ok(kvbm_trace_format_of(t) == KVBM_TRACE_JSONL, "JSONL detected by its '{' after a comment");
  ok(kvbm_trace_count(t) == 4, "four requests");
  const kvbm_trace_request *r = kvbm_trace_get(t, 0);
  ok(r->id == 0 && r->salt == 0 && r->timestamp_ms == 12.5 && r->input_length == 5 &&
         r->output_length == 3 && r->line == 2 && r->n_tokens == 5,
     "request 0: index as id, timestamp, lengths, line 2");
  ok(same_tokens(t, 0, (const uint32_t[]){7, 7, 7, 7, 9}, 5), "ids x4, cut to input_length 5");
  r = kvbm_trace_get(t, 1);
  ok(r->id == 1 && r->timestamp_ms == 40 && r->input_length == 100 && r->n_tokens == 8 && r->line == 4,
     "aliases created_time, input_tokens, output_tokens; input_length kept as given");
  ok(same_tokens(t, 1, (const uint32_t[]){1, 1, 1, 1, 2, 2, 2, 2}, 8), "cut to 4 * #hash_ids");
  ok(kvbm_trace_get(t, 2)->n_tokens == 0 && kvbm_trace_get(t, 2)->output_length == 1, "no hash ids: no tokens");
  ok(same_tokens(t, 3, (const uint32_t[]){4294967295u, 4294967295u, 4294967295u, 4294967295u, 0, 0, 0, 0}, 8),
     "hash id 2^32-1 is a token");
  kvbm_trace_free(t);

  /* the default block size (512) against the construction written out */
  static uint32_t want[512 * 3];
  uint32_t ids[3] = {3, 4, 5};
  t = loads("{\"timestamp\": 0, \"input_length\": 1100, \"output_length\": 9, \"hash_ids\": [3, 4, 5]}\n"
            "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 9, \"hash_ids\": [3, 4, 5]}\n"
            "{\"timestamp\": 0, \"input_length\": 99999, \"output_length\": 9, \"hash_ids\": [3, 4, 5]}\n",
            NULL);
  if (t) {
    size_t inputs[3] = {1100, 1536, 99999};
    for (size_t i = 0; i < 3; i++) {
      size_t n = dynamo_tokens(ids, 3, 512, inputs[i], want);
      ok(same_tokens(t, i, want, n), "512 tokens per hash id, input_length %zu: %zu tokens", inputs[i], n);
    }
    ok(kvbm_trace_total_tokens(t) == 1100 + 1536 + 1536, "total tokens");
  }
  kvbm_trace_free(t);
}

static void test_jsonl_errors(void) {
  kvbm_trace_options j = {.format = KVBM_TRACE_JSONL};
#define OBJ(fields) "{" fields "}\n"
#define GOOD "{\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1]}\n"
  fails_prefix(GOOD "{\"timestamp\": 0,\n", NULL, 2, "<buffer>:2: invalid JSON at column ");
  fails_prefix(GOOD "\n# c\n1 0 1 5\n", NULL, 4, "<buffer>:4: invalid JSON at column ");
  fails_prefix(GOOD GOOD "{\"timestamp\": 0, \"timestamp\": 1, \"input_length\": 1, \"output_length\": 1, "
               "\"hash_ids\": []}\n", NULL, 3, "<buffer>:3: invalid JSON at column ");
  fails_prefix(OBJ("\"timestamp\": 0, \"input_length\": 100000000000000000000, \"output_length\": 1, "
                   "\"hash_ids\": []"), NULL, 1, "<buffer>:1: invalid JSON at column ");
  fails_prefix(GOOD "{} trailing\n", NULL, 2, "<buffer>:2: invalid JSON at column ");
  fails("[1, 2]\n", &j, 1, "<buffer>:1: expected a JSON object, got an array");
  fails(GOOD "5\n", NULL, 2, "<buffer>:2: expected a JSON object, got 5");
  fails(GOOD "\"x\"\n", NULL, 2, "<buffer>:2: expected a JSON object, got a string");
  fails(OBJ("\"input_length\": 1, \"output_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: missing \"timestamp\" (or \"created_time\")");
  fails(GOOD OBJ("\"timestamp\": 0, \"output_length\": 1, \"hash_ids\": []"), NULL, 2,
        "<buffer>:2: missing \"input_length\" (or \"input_tokens\")");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: missing \"output_length\" (or \"output_tokens\")");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1"), NULL, 1,
        "<buffer>:1: missing \"hash_ids\"");
  fails(OBJ("\"timestamp\": 0, \"input_length\": \"5\", \"output_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"input_length\" must be an integer >= 0, got a string");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 5.5, \"output_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"input_length\" must be an integer >= 0, got 5.5");
  fails(OBJ("\"timestamp\": 0, \"input_tokens\": 1, \"output_tokens\": -3, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"output_tokens\" must be an integer >= 0, got -3");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": null, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"output_length\" must be an integer >= 0, got null");
  fails(OBJ("\"timestamp\": -1, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"timestamp\" must be a number >= 0 (milliseconds), got -1");
  fails(OBJ("\"created_time\": \"now\", \"input_length\": 1, \"output_length\": 1, \"hash_ids\": []"), NULL, 1,
        "<buffer>:1: \"created_time\" must be a number >= 0 (milliseconds), got a string");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": {}"), NULL, 1,
        "<buffer>:1: \"hash_ids\" must be an array of integers, got an object");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [0, 4294967296]"), NULL, 1,
        "<buffer>:1: hash_ids[1] must be an integer in 0..4294967295, got 4294967296");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [-1]"), NULL, 1,
        "<buffer>:1: hash_ids[0] must be an integer in 0..4294967295, got -1");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [1, 2, 1.5]"), NULL, 1,
        "<buffer>:1: hash_ids[2] must be an integer in 0..4294967295, got 1.5");
  fails(OBJ("\"timestamp\": 0, \"input_length\": 1, \"output_length\": 1, \"hash_ids\": [true]"), NULL, 1,
        "<buffer>:1: hash_ids[0] must be an integer in 0..4294967295, got true");
#undef OBJ
#undef GOOD
}

/* ---------------------------------------------------- limits and progress */

static void test_max_tokens(void) {
  kvbm_trace_options o = {.max_tokens = 5};
  fails("1 0 3 1 2 3\n\n2 0 3 1 2 3\n", &o, 3, "<buffer>:3: the trace has more than 5 prompt tokens (max_tokens)");
  kvbm_trace *t = loads("1 0 3 1 2 3\n2 0 2 1 2\n", &o);
  ok(t && kvbm_trace_total_tokens(t) == 5, "exactly max_tokens is fine");
  kvbm_trace_free(t);
  /* a hostile JSONL line (huge input_length and block size) stops at the
   * limit before anything that size is allocated */
  kvbm_trace_options h = {.max_tokens = 1000000, .trace_block_size = UINT32_MAX};
  fails("{\"timestamp\": 0, \"input_length\": 9223372036854775807, \"output_length\": 0, \"hash_ids\": [1, 2, 3]}\n",
        &h, 1, "<buffer>:1: the trace has more than 1000000 prompt tokens (max_tokens)");
}

typedef struct {
  int calls, stop_at;
  uint64_t last_done, last_total, regressions;
} progress_log;

static int on_progress(void *ud, uint64_t done, uint64_t total) {
  progress_log *p = ud;
  if (done < p->last_done) p->regressions++;
  p->last_done = done, p->last_total = total;
  return ++p->calls == p->stop_at;
}

/* A text trace of n lines, about 3.5 MiB for n = 20000. */
static char *big_trace(size_t n, size_t *len) {
  char *s = malloc(n * 200), *p = s; /* a line is at most 30 + 32 * 5 bytes */
  for (size_t i = 0; i < n; i++) {
    p += sprintf(p, "%zu 0 32", i);
    for (int k = 0; k < 32; k++) p += sprintf(p, " %d", 1000 + k);
    *p++ = '\n';
  }
  *len = (size_t)(p - s);
  return s;
}

static void test_progress(void) {
  size_t len;
  char *s = big_trace(20000, &len);
  progress_log log = {0};
  kvbm_trace_options o = {.progress = on_progress, .progress_ud = &log};
  kvbm_trace *t = NULL;
  int rc = kvbm_trace_load_buffer(s, len, &o, &t, NULL);
  ok(rc == 0 && kvbm_trace_count(t) == 20000, "a 3.5 MiB trace loads");
  ok(log.calls >= 3 && log.regressions == 0, "progress: %d calls, never backwards", log.calls);
  ok(log.last_done == len && log.last_total == len, "the last call has done == total == length");
  kvbm_trace_free(t);

  progress_log stop = {.stop_at = 2};
  o.progress_ud = &stop;
  t = (kvbm_trace *)&t;
  kvbm_trace_error e;
  rc = kvbm_trace_load_buffer(s, len, &o, &t, &e);
  ok(rc == KVBM_ECANCELLED && t == NULL && stop.calls == 2, "a nonzero return cancels the load");
  is_str(e.message, "<buffer>: loading cancelled", "  message");
  free(s);

  log = (progress_log){0};
  o.progress_ud = &log;
  t = loads("", &o);
  ok(log.calls == 1 && log.last_done == 0 && log.last_total == 0, "an empty input reports once, 0 of 0");
  kvbm_trace_free(t);
}

/* ---------------------------------------------------------- files */

static FILE *temp_with(const char *s, size_t n) {
  FILE *f = tmpfile();
  fwrite(s, 1, n, f);
  rewind(f);
  return f;
}

static void test_files(void) {
  /* a file read in chunks: lines across chunk boundaries, a line longer
   * than the read buffer, the error's line number after them */
  size_t len;
  char *s = big_trace(5000, &len);
  size_t extra = 300000 * 2 + 64;
  s = realloc(s, len + extra + 64);
  char *p = s + len;
  p += sprintf(p, "# a long line follows\n777 3 300000");
  for (int k = 0; k < 300000; k++) p += sprintf(p, " 7");
  p += sprintf(p, "\n1 0 2 5\n");
  size_t total = (size_t)(p - s);
  FILE *f = temp_with(s, total);
  progress_log log = {0};
  kvbm_trace_options o = {.progress = on_progress, .progress_ud = &log, .name = "big.trace"};
  kvbm_trace *t = (kvbm_trace *)&t;
  kvbm_trace_error e;
  int rc = kvbm_trace_load_file(f, &o, &t, &e);
  ok(rc == KVBM_ETRACE && t == NULL && e.line == 5003, "FILE: the error is on physical line 5003");
  is_str(e.message, "big.trace:5003: 2 tokens announced, 1 found", "  message");
  ok(log.regressions == 0 && log.last_total == total, "FILE: progress against the file's size");
  fclose(f);

  f = temp_with(s, total - 8); /* without the bad line */
  t = NULL;
  log = (progress_log){0};
  rc = kvbm_trace_load_file(f, &o, &t, &e);
  ok(rc == 0 && kvbm_trace_count(t) == 5001, "FILE: 5001 requests");
  if (rc == 0) {
    const kvbm_trace_request *r = kvbm_trace_get(t, 5000);
    ok(r->id == 777 && r->salt == 3 && r->n_tokens == 300000 && r->line == 5002,
       "the 600 kB line is one request of 300000 tokens");
    ok(kvbm_trace_total_tokens(t) == 5000 * 32 + 300000, "total tokens");
    ok(log.last_done == total - 8 && log.last_total == total - 8, "the last call has done == total");
  }
  kvbm_trace_free(t);
  fclose(f);
  free(s);

  /* a pipe has no size: total is 0 until the end */
  FILE *pipe = popen("printf '1 0 1 5\\n2 0 1 6'", "r");
  log = (progress_log){0};
  t = NULL;
  rc = kvbm_trace_load_file(pipe, &o, &t, &e);
  ok(rc == 0 && kvbm_trace_count(t) == 2, "a pipe loads");
  ok(log.calls == 1 && log.last_done == 15 && log.last_total == 15, "a pipe: one final report, 15 of 15");
  kvbm_trace_free(t);
  pclose(pipe);

  /* paths */
  char path[] = "/tmp/kvbm_trace_XXXXXX";
  int fd = mkstemp(path);
  FILE *w = fdopen(fd, "w");
  fputs("{\"timestamp\": 3, \"input_length\": 2, \"output_length\": 1, \"hash_ids\": [8]}\n", w);
  fclose(w);
  kvbm_trace_options jo = {.trace_block_size = 16};
  t = NULL;
  rc = kvbm_trace_load_path(path, &jo, &t, &e);
  ok(rc == 0 && kvbm_trace_count(t) == 1 && same_tokens(t, 0, (const uint32_t[]){8, 8}, 2),
     "a JSONL file by path");
  kvbm_trace_free(t);
  kvbm_trace_options to = {.format = KVBM_TRACE_TEXT};
  t = (kvbm_trace *)&t;
  rc = kvbm_trace_load_path(path, &to, &t, &e);
  char want[600];
  snprintf(want, sizeof want, "%s:1: request_id: '{\"timestamp\":' is not an integer", path);
  ok(rc == KVBM_ETRACE && !t, "the same file read as text fails");
  is_str(e.message, want, "  names the path and line");
  remove(path);

  t = (kvbm_trace *)&t;
  rc = kvbm_trace_load_path("/nonexistent/x.trace", NULL, &t, &e);
  ok(rc == KVBM_EIO && t == NULL && e.line == 0, "a missing file is KVBM_EIO, no line");
  is_str(e.message, "/nonexistent/x.trace: No such file or directory", "  message");
  rc = kvbm_trace_load_path("/tmp", NULL, &t, &e);
  ok(rc == KVBM_EIO && t == NULL, "a directory is KVBM_EIO");
  is_str(e.message, "/tmp: Is a directory", "  message");
}

/* ---------------------------------------------------------- misuse, memory */

static void test_misuse(void) {
  kvbm_trace *t = (kvbm_trace *)&t;
  kvbm_trace_options bad = {.format = (kvbm_trace_format)7};
  kvbm_trace_error e;
  ok(kvbm_trace_load_buffer("", 0, &bad, &t, &e) == KVBM_EINVAL && t == NULL, "an unknown format is KVBM_EINVAL");
  ok(kvbm_trace_load_buffer("1 0 0\n", 6, NULL, NULL, NULL) == KVBM_EINVAL, "no out pointer is KVBM_EINVAL");
  ok(kvbm_trace_load_buffer(NULL, 5, NULL, &t, NULL) == KVBM_EINVAL && t == NULL, "NULL buffer with a length");
  ok(kvbm_trace_load_buffer(NULL, 0, NULL, &t, NULL) == 0 && t && kvbm_trace_count(t) == 0,
     "NULL buffer, length 0: empty");
  kvbm_trace_free(t);
  ok(kvbm_trace_load_file(NULL, NULL, &t, NULL) == KVBM_EINVAL && t == NULL, "NULL FILE");
  ok(kvbm_trace_load_path(NULL, NULL, &t, NULL) == KVBM_EINVAL && t == NULL, "NULL path");
  kvbm_trace_free(NULL);
  ok(strcmp(kvbm_err_name(KVBM_ETRACE), "malformed_trace") == 0 &&
         strcmp(kvbm_err_name(KVBM_EIO), "io_error") == 0 &&
         strcmp(kvbm_err_name(KVBM_ECANCELLED), "cancelled") == 0,
     "the new codes' names");
}

/* An allocator that fails from the k-th call on and counts live blocks. */
typedef struct {
  long calls, fail_at, live;
} failing;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  failing *f = ud;
  (void)osize;
  if (nsize == 0) {
    if (ptr) f->live--;
    free(ptr);
    return NULL;
  }
  if (f->calls++ >= f->fail_at) return NULL;
  void *p = realloc(ptr, nsize);
  if (p && !ptr) f->live++;
  return p;
}

static void test_out_of_memory(void) {
  static const char *const inputs[] = {
      "# text\n1 0 3 1 2 3\n2 5 2 9 9\n3 0 0\n4 0 1 1\n5 0 1 1\n6 0 1 1\n7 0 1 1\n8 0 1 1\n9 0 20 "
      "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20\n",
      "{\"timestamp\": 0, \"input_length\": 3000, \"output_length\": 1, \"hash_ids\": [1, 2, 3, 4, 5, 6]}\n"
      "{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, \"hash_ids\": [1]}\n",
  };
  for (size_t k = 0; k < 2; k++) {
    int clean = 1, sweeps = 0, loaded = 0;
    for (long at = 0; at < 200 && !loaded; at++, sweeps++) {
      failing f = {.fail_at = at};
      kvbm_allocator a = {failing_alloc, &f};
      kvbm_trace_options o = {.alloc = &a};
      kvbm_trace *t = (kvbm_trace *)&t;
      kvbm_trace_error e;
      int rc = load(inputs[k], &o, &t, &e);
      if (rc == 0) {
        loaded = 1;
        if (kvbm_trace_count(t) != (k ? 2u : 9u)) clean = 0;
        kvbm_trace_free(t);
      } else if (rc != KVBM_ENOMEM || t != NULL || strstr(e.message, "out of memory") == NULL) {
        clean = 0;
      }
      if (f.live != 0) clean = 0;
    }
    ok(loaded && clean, "%s: every allocation failure is KVBM_ENOMEM, nothing leaks (%d sweeps)",
       k ? "JSONL" : "text", sweeps);
  }
}

int main(void) {
  test_text_happy();
  test_text_errors();
  test_jsonl_happy();
  test_jsonl_errors();
  test_max_tokens();
  test_progress();
  test_files();
  test_misuse();
  test_out_of_memory();
  return tap_done();
}
