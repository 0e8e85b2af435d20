/* trace_jsonl.c - Mooncake/Dynamo JSONL traces, one object per line, read
 * with jansson. Fields (aliases in parentheses): timestamp (created_time),
 * milliseconds, a number >= 0; input_length (input_tokens) and
 * output_length (output_tokens), integers >= 0; hash_ids, an array of
 * integers in 0..2^32-1. Other fields are ignored.
 *
 * The prompt is made as Dynamo's trace loader makes it: hash id h becomes
 * block_size copies of the token h, the concatenation cut to
 * min(input_length, block_size * #hash_ids) tokens. */
#include "trace_parse.h"

#include <inttypes.h>
#include <jansson.h>

/* What a mistyped value was, for a message: its value when a number. */
static const char *describe(const json_t *v, char buf[48]) {
  switch (json_typeof(v)) {
  case JSON_INTEGER:
    snprintf(buf, 48, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    return buf;
  case JSON_REAL: snprintf(buf, 48, "%.17g", json_real_value(v)); return buf;
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_TRUE: return "true";
  case JSON_FALSE: return "false";
  case JSON_NULL: return "null";
  }
  return "something else";
}

/* The field under its name or its alias, or NULL after reporting it missing. */
static json_t *member(trace_parser *p, json_t *o, const char *name, const char *alias, int *rc) {
  json_t *v = json_object_get(o, name);
  if (!v && alias) v = json_object_get(o, alias);
  if (!v) {
    *rc = alias ? kvbm__trace_fail(p, "missing \"%s\" (or \"%s\")", name, alias)
                : kvbm__trace_fail(p, "missing \"%s\"", name);
  }
  return v;
}

static int count_field(trace_parser *p, json_t *o, const char *name, const char *alias,
                       uint64_t *out) {
  char d[48];
  int rc = 0;
  json_t *v = member(p, o, name, alias, &rc);
  if (!v) return rc;
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return kvbm__trace_fail(p, "\"%s\" must be an integer >= 0, got %s",
                            json_object_get(o, name) ? name : alias, describe(v, d));
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int timestamp_field(trace_parser *p, json_t *o, double *out) {
  char d[48];
  int rc = 0;
  json_t *v = member(p, o, "timestamp", "created_time", &rc);
  if (!v) return rc;
  if (!json_is_number(v) || json_number_value(v) < 0)
    return kvbm__trace_fail(p, "\"%s\" must be a number >= 0 (milliseconds), got %s",
                            json_object_get(o, "timestamp") ? "timestamp" : "created_time",
                            describe(v, d));
  *out = json_number_value(v);
  return 0;
}

/* Checks every hash id; *count gets how many. */
static int hash_ids_field(trace_parser *p, json_t *o, json_t **ids, size_t *count) {
  char d[48];
  int rc = 0;
  json_t *v = member(p, o, "hash_ids", NULL, &rc);
  if (!v) return rc;
  if (!json_is_array(v))
    return kvbm__trace_fail(p, "\"hash_ids\" must be an array of integers, got %s", describe(v, d));
  size_t i;
  json_t *h;
  json_array_foreach(v, i, h) {
    if (!json_is_integer(h) || json_integer_value(h) < 0 ||
        json_integer_value(h) > (json_int_t)UINT32_MAX)
      return kvbm__trace_fail(p, "hash_ids[%zu] must be an integer in 0..4294967295, got %s", i,
                              describe(h, d));
  }
  *ids = v;
  *count = json_array_size(v);
  return 0;
}

static int request(trace_parser *p, json_t *o) {
  kvbm_trace_request r = {.id = p->t->nreqs};
  json_t *ids = NULL;
  size_t nids = 0;
  int rc = timestamp_field(p, o, &r.timestamp_ms);
  if (!rc) rc = count_field(p, o, "input_length", "input_tokens", &r.input_length);
  if (!rc) rc = count_field(p, o, "output_length", "output_tokens", &r.output_length);
  if (!rc) rc = hash_ids_field(p, o, &ids, &nids);
  if (rc) return rc;

  uint64_t bs = p->block_size, n = bs * (uint64_t)nids; /* < 2^64: both are < 2^32 */
  if (r.input_length < n) n = r.input_length;
  if (n > SIZE_MAX) return KVBM_ENOMEM;
  if ((rc = kvbm__trace_limit(p, (size_t)n)) || (rc = kvbm__trace_reserve(p, (size_t)n))) return rc;
  uint32_t *dst = n ? p->t->tokens + p->t->ntokens : NULL; /* tokens may be NULL still */
  for (size_t k = 0, done = 0; done < n; k++) {
    uint32_t h = (uint32_t)json_integer_value(json_array_get(ids, k));
    size_t run = n - done < bs ? (size_t)(n - done) : (size_t)bs;
    for (size_t j = 0; j < run; j++) dst[done + j] = h;
    done += run;
  }
  r.n_tokens = (size_t)n;
  return kvbm__trace_push(p, &r);
}

int kvbm__trace_jsonl_line(trace_parser *p, const char *s, size_t n) {
  json_error_t e;
  char d[48];
  json_t *o = json_loadb(s, n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &e);
  if (!o) return kvbm__trace_fail(p, "invalid JSON at column %d: %s", e.column, e.text);
  int rc = json_is_object(o) ? request(p, o)
                             : kvbm__trace_fail(p, "expected a JSON object, got %s", describe(o, d));
  json_decref(o);
  return rc;
}
