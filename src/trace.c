/* trace.c - loading request traces: the trace object, splitting the input
 * into physical lines (from a buffer or a FILE read in chunks), skipping
 * blank and comment lines, choosing the format, progress and errors. The
 * formats themselves are in trace_text.c and trace_jsonl.c. */
#include "trace_parse.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>

#define PROGRESS_STEP (UINT64_C(1) << 20) /* bytes between progress calls */
#define READ_CHUNK ((size_t)1 << 16)

/* ------------------------------------------------------------ messages */

static void set_message(kvbm_trace_error *e, const char *name, uint64_t line, const char *fmt,
                        va_list ap) {
  int k = line ? snprintf(e->message, sizeof e->message, "%s:%" PRIu64 ": ", name, line)
               : snprintf(e->message, sizeof e->message, "%s: ", name);
  if (k < 0) k = 0;
  if ((size_t)k < sizeof e->message) vsnprintf(e->message + k, sizeof e->message - (size_t)k, fmt, ap);
  e->line = line;
}

int kvbm__trace_fail(trace_parser *p, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_message(p->err, p->name, p->line, fmt, ap);
  va_end(ap);
  return KVBM_ETRACE;
}

/* An error not about a line (opening, reading): "name: what". */
static int fail_input(trace_parser *p, int rc, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static int fail_input(trace_parser *p, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_message(p->err, p->name, 0, fmt, ap);
  va_end(ap);
  return rc;
}

const char *kvbm__trace_quote(const char *s, size_t n, char buf[40]) {
  size_t k = 0, shown = n > 24 ? 24 : n;
  buf[k++] = '\'';
  for (size_t i = 0; i < shown; i++) {
    unsigned char c = (unsigned char)s[i];
    buf[k++] = (char)(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (shown < n) buf[k++] = '.', buf[k++] = '.', buf[k++] = '.';
  buf[k++] = '\'';
  buf[k] = '\0';
  return buf;
}

/* ------------------------------------------------------------ storage */

int kvbm__trace_limit(trace_parser *p, size_t n) {
  size_t have = p->t->ntokens;
  if (p->max_tokens && (have > p->max_tokens || n > p->max_tokens - have))
    return kvbm__trace_fail(p, "the trace has more than %" PRIu64 " prompt tokens (max_tokens)",
                            p->max_tokens);
  return 0;
}

int kvbm__trace_reserve(trace_parser *p, size_t n) {
  kvbm_trace *t = p->t;
  if (n > SIZE_MAX / sizeof *t->tokens - t->ntokens) return KVBM_ENOMEM;
  return kvbm__grow(&t->alloc, (void **)&t->tokens, &t->tokens_cap, t->ntokens + n,
                    sizeof *t->tokens);
}

int kvbm__trace_push(trace_parser *p, kvbm_trace_request *r) {
  kvbm_trace *t = p->t;
  int rc = kvbm__trace_limit(p, r->n_tokens);
  if (rc) return rc;
  if (t->nreqs > SIZE_MAX / 2 / sizeof *t->reqs) return KVBM_ENOMEM;
  rc = kvbm__grow(&t->alloc, (void **)&t->reqs, &t->reqs_cap, t->nreqs + 1, sizeof *t->reqs);
  if (rc) return rc;
  r->first_token = t->ntokens;
  r->line = p->line;
  t->reqs[t->nreqs++] = *r;
  t->ntokens += r->n_tokens;
  return 0;
}

/* Gives back the spare capacity of a finished load (a large trace would
 * otherwise keep up to twice its tokens). */
static void shrink(kvbm_trace *t) {
  if (t->ntokens < t->tokens_cap) {
    if (!t->ntokens) {
      kvbm__free(&t->alloc, t->tokens, t->tokens_cap * sizeof *t->tokens);
      t->tokens = NULL, t->tokens_cap = 0;
    } else {
      void *q = kvbm__realloc(&t->alloc, t->tokens, t->tokens_cap * sizeof *t->tokens,
                              t->ntokens * sizeof *t->tokens);
      if (q) t->tokens = q, t->tokens_cap = t->ntokens;
    }
  }
}

void kvbm_trace_free(kvbm_trace *t) {
  if (!t) return;
  kvbm_allocator a = t->alloc;
  kvbm__free(&a, t->tokens, t->tokens_cap * sizeof *t->tokens);
  kvbm__free(&a, t->reqs, t->reqs_cap * sizeof *t->reqs);
  kvbm__free(&a, t, sizeof *t);
}

/* ------------------------------------------------------------ loading */

typedef struct {
  trace_parser p;
  kvbm_trace_format format; /* AUTO until the first request line */
  kvbm_trace_error scratch; /* when the caller passes no error */
  int (*progress)(void *ud, uint64_t done, uint64_t total);
  void *progress_ud;
  uint64_t total, next_report;
} loader;

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

static int begin(loader *ld, const kvbm_trace_options *o, const char *name,
                 kvbm_trace_error *err, kvbm_trace **out) {
  static const kvbm_trace_options defaults = {0};
  if (!o) o = &defaults;
  memset(ld, 0, sizeof *ld);
  ld->p.err = err ? err : &ld->scratch;
  ld->p.err->line = 0;
  ld->p.err->message[0] = '\0';
  ld->p.name = o->name ? o->name : name;
  if (!out) return KVBM_EINVAL;
  *out = NULL;
  if (o->format != KVBM_TRACE_AUTO && o->format != KVBM_TRACE_TEXT && o->format != KVBM_TRACE_JSONL)
    return fail_input(&ld->p, KVBM_EINVAL, "unknown trace format %d", (int)o->format);
  ld->format = o->format;
  ld->p.block_size = o->trace_block_size ? o->trace_block_size : KVBM_TRACE_BLOCK_SIZE;
  ld->p.max_tokens = o->max_tokens;
  ld->progress = o->progress;
  ld->progress_ud = o->progress_ud;
  ld->next_report = PROGRESS_STEP;
  kvbm_trace *t = kvbm__realloc(o->alloc, NULL, 0, sizeof *t);
  if (!t) return KVBM_ENOMEM;
  memset(t, 0, sizeof *t);
  if (o->alloc) t->alloc = *o->alloc;
  ld->p.t = t;
  return 0;
}

/* One physical line s[0..n) (no newline). */
static int parse_line(loader *ld, const char *s, size_t n) {
  size_t i = 0;
  ld->p.line++;
  if (ld->p.line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) i = 3; /* UTF-8 BOM */
  while (i < n && is_blank(s[i])) i++;
  if (i == n || s[i] == '#') return 0;
  if (ld->format == KVBM_TRACE_AUTO) ld->format = s[i] == '{' ? KVBM_TRACE_JSONL : KVBM_TRACE_TEXT;
  return ld->format == KVBM_TRACE_JSONL ? kvbm__trace_jsonl_line(&ld->p, s + i, n - i)
                                        : kvbm__trace_text_line(&ld->p, s + i, n - i);
}

static int report(loader *ld, uint64_t done, int last) {
  if (!ld->progress || (!last && done < ld->next_report)) return 0;
  ld->next_report = done + PROGRESS_STEP;
  if (ld->progress(ld->progress_ud, done, last && !ld->total ? done : ld->total))
    return fail_input(&ld->p, KVBM_ECANCELLED, "loading cancelled");
  return 0;
}

/* Hands the trace over on success, frees it on failure. */
static int finish(loader *ld, int rc, kvbm_trace **out) {
  kvbm_trace *t = ld->p.t;
  if (rc == KVBM_ENOMEM && !ld->p.err->message[0]) {
    if (ld->p.line) fail_input(&ld->p, rc, "out of memory at line %" PRIu64, ld->p.line);
    else fail_input(&ld->p, rc, "out of memory");
  }
  if (rc < 0) {
    kvbm_trace_free(t);
    return rc;
  }
  t->format = ld->format == KVBM_TRACE_AUTO ? KVBM_TRACE_TEXT : ld->format;
  shrink(t);
  *out = t;
  return 0;
}

int kvbm_trace_load_buffer(const void *buf, size_t len, const kvbm_trace_options *opts,
                           kvbm_trace **out, kvbm_trace_error *err) {
  loader ld;
  int rc = begin(&ld, opts, "<buffer>", err, out);
  if (rc) return rc == KVBM_ENOMEM ? finish(&ld, rc, out) : rc;
  if (!buf && len) return finish(&ld, KVBM_EINVAL, out);
  const char *s = buf, *end = s + len;
  ld.total = len;
  while (rc == 0 && s < end) {
    const char *nl = memchr(s, '\n', (size_t)(end - s));
    size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);
    rc = parse_line(&ld, s, n);
    s += n + (nl != NULL);
    if (rc == 0) rc = report(&ld, (uint64_t)(s - (const char *)buf), 0);
  }
  if (rc == 0) rc = report(&ld, len, 1);
  return finish(&ld, rc, out);
}

/* Reads f in chunks; a line longer than the buffer grows it. */
static int read_lines(loader *ld, FILE *f) {
  kvbm_allocator *a = &ld->p.t->alloc;
  size_t cap = READ_CHUNK, start = 0, scanned = 0, end = 0;
  uint64_t done = 0;
  int eof = 0, rc = 0;
  char *buf = kvbm__realloc(a, NULL, 0, cap);
  if (!buf) return KVBM_ENOMEM;
  while (rc == 0) {
    char *nl = memchr(buf + scanned, '\n', end - scanned);
    if (nl) {
      size_t n = (size_t)(nl - (buf + start));
      rc = parse_line(ld, buf + start, n);
      done += n + 1;
      start = scanned = start + n + 1;
      if (rc == 0) rc = report(ld, done, 0);
      continue;
    }
    scanned = end;
    if (eof) {
      if (end > start) rc = parse_line(ld, buf + start, end - start), done += end - start;
      if (rc == 0) rc = report(ld, done, 1);
      break;
    }
    if (start > 0) {
      memmove(buf, buf + start, end - start);
      end -= start, scanned -= start, start = 0;
    }
    if (end == cap) {
      if (cap > SIZE_MAX / 2) {
        rc = KVBM_ENOMEM;
        break;
      }
      char *nb = kvbm__realloc(a, buf, cap, cap * 2);
      if (!nb) {
        rc = KVBM_ENOMEM;
        break;
      }
      buf = nb, cap *= 2;
    }
    size_t got = fread(buf + end, 1, cap - end, f);
    end += got;
    if (got == 0) {
      if (ferror(f)) rc = fail_input(&ld->p, KVBM_EIO, "%s", strerror(errno ? errno : EIO));
      eof = 1;
    }
  }
  kvbm__free(a, buf, cap);
  return rc;
}

static int load_file(FILE *f, const kvbm_trace_options *opts, const char *name,
                     kvbm_trace **out, kvbm_trace_error *err) {
  loader ld;
  int rc = begin(&ld, opts, name, err, out);
  if (rc) return rc == KVBM_ENOMEM ? finish(&ld, rc, out) : rc;
  if (!f) return finish(&ld, KVBM_EINVAL, out);
  struct stat st;
  off_t pos = ftello(f);
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && pos >= 0 && st.st_size >= pos)
    ld.total = (uint64_t)(st.st_size - pos);
  errno = 0;
  return finish(&ld, read_lines(&ld, f), out);
}

int kvbm_trace_load_file(FILE *f, const kvbm_trace_options *opts, kvbm_trace **out,
                         kvbm_trace_error *err) {
  return load_file(f, opts, "<file>", out, err);
}

int kvbm_trace_load_path(const char *path, const kvbm_trace_options *opts, kvbm_trace **out,
                         kvbm_trace_error *err) {
  if (!path) return out ? (*out = NULL, KVBM_EINVAL) : KVBM_EINVAL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    loader ld;
    int rc = begin(&ld, opts, path, err, out);
    if (rc == 0) {
      kvbm_trace_free(ld.p.t);
      rc = fail_input(&ld.p, KVBM_EIO, "%s", strerror(errno));
    }
    return rc;
  }
  int rc = load_file(f, opts, path, out, err);
  fclose(f);
  return rc;
}

/* ------------------------------------------------------------ access */

size_t kvbm_trace_count(const kvbm_trace *t) { return t->nreqs; }
kvbm_trace_format kvbm_trace_format_of(const kvbm_trace *t) { return t->format; }
const uint32_t *kvbm_trace_all_tokens(const kvbm_trace *t) { return t->tokens; }
size_t kvbm_trace_total_tokens(const kvbm_trace *t) { return t->ntokens; }

const kvbm_trace_request *kvbm_trace_get(const kvbm_trace *t, size_t i) {
  return i < t->nreqs ? &t->reqs[i] : NULL;
}

const uint32_t *kvbm_trace_tokens(const kvbm_trace *t, size_t i, size_t *n) {
  if (i >= t->nreqs) {
    if (n) *n = 0;
    return NULL;
  }
  static const uint32_t none[1];
  if (n) *n = t->reqs[i].n_tokens;
  return t->tokens ? t->tokens + t->reqs[i].first_token : none;
}
