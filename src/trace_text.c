/* trace_text.c - kvbm's text trace format, strictly:
 * "<request_id> <salt> <n_tokens> <tok0> ... <tok{n-1}>", every field a
 * decimal integer without sign, separated by spaces or tabs (a CR before the
 * newline is allowed). Anything else is an error naming the field. */
#include "trace_parse.h"

#include <inttypes.h>

typedef enum { NUM_OK, NUM_NOT_INTEGER, NUM_NEGATIVE, NUM_OVERFLOW } num_status;

static int is_sep(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static num_status parse_u64(const char *s, size_t n, uint64_t *out) {
  size_t i = s[0] == '-' && n > 1 ? 1 : 0;
  for (size_t k = i; k < n; k++)
    if ((unsigned)(s[k] - '0') > 9) return NUM_NOT_INTEGER;
  if (i) return NUM_NEGATIVE;
  uint64_t v = 0;
  for (size_t k = 0; k < n; k++) {
    unsigned d = (unsigned)(s[k] - '0');
    if (v > (UINT64_MAX - d) / 10) return NUM_OVERFLOW;
    v = v * 10 + d;
  }
  *out = v;
  return NUM_OK;
}

/* A field's value, at most max; else the error naming field (what, k). */
static int field(trace_parser *p, const char *s, size_t n, uint64_t max, const char *what,
                 size_t k, uint64_t *out) {
  num_status st = parse_u64(s, n, out);
  if (st == NUM_OK && *out <= max) return 0;
  char q[40], name[32];
  if (k) snprintf(name, sizeof name, "%s %zu", what, k);
  else snprintf(name, sizeof name, "%s", what);
  kvbm__trace_quote(s, n, q);
  if (st == NUM_NOT_INTEGER) return kvbm__trace_fail(p, "%s: %s is not an integer", name, q);
  return kvbm__trace_fail(p, "%s: %s is %s (expected 0..%" PRIu64 ")", name, q,
                          st == NUM_NEGATIVE ? "negative" : "out of range", max);
}

int kvbm__trace_text_line(trace_parser *p, const char *s, size_t n) {
  static const char *const header[3] = {"request_id", "salt", "n_tokens"};
  uint64_t head[3];
  size_t i = 0;
  for (int h = 0; h < 3; h++) {
    while (i < n && is_sep(s[i])) i++;
    if (i == n)
      return kvbm__trace_fail(p, "missing %s (expected '<request_id> <salt> <n_tokens> <token>...')",
                              header[h]);
    size_t j = i;
    while (j < n && !is_sep(s[j])) j++;
    int rc = field(p, s + i, j - i, UINT64_MAX, header[h], 0, &head[h]);
    if (rc) return rc;
    i = j;
  }
  /* Store at most n_tokens tokens (and never more than the line can hold),
   * but read them all, so that a miscount reports how many there are. */
  uint64_t announced = head[2];
  size_t room = (n - i) / 2 + 1;
  if (announced < room) room = (size_t)announced;
  int rc = kvbm__trace_reserve(p, room);
  if (rc) return rc;
  uint32_t *dst = room ? p->t->tokens + p->t->ntokens : NULL; /* tokens may be NULL still */
  size_t found = 0;
  for (;;) {
    while (i < n && is_sep(s[i])) i++;
    if (i == n) break;
    size_t j = i;
    while (j < n && !is_sep(s[j])) j++;
    uint64_t v;
    rc = field(p, s + i, j - i, UINT32_MAX, "token", found + 1, &v);
    if (rc) return rc;
    if (found < room) dst[found] = (uint32_t)v;
    found++;
    i = j;
  }
  if (found != announced)
    return kvbm__trace_fail(p, "%" PRIu64 " tokens announced, %zu found", announced, found);
  kvbm_trace_request r = {.id = head[0], .salt = head[1], .input_length = announced,
                          .n_tokens = found};
  return kvbm__trace_push(p, &r);
}
