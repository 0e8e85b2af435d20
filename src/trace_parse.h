/* trace_parse.h - what trace.c shares with the per-format line parsers
 * (trace_text.c, trace_jsonl.c); never installed. */
#ifndef KVBM_TRACE_PARSE_H
#define KVBM_TRACE_PARSE_H

#include "internal.h"
#include "kvbm_trace.h"

struct kvbm_trace {
  kvbm_allocator alloc;
  kvbm_trace_format format;
  kvbm_trace_request *reqs;
  size_t nreqs, reqs_cap;
  uint32_t *tokens;
  size_t ntokens, tokens_cap;
};

/* One load in progress. */
typedef struct trace_parser {
  kvbm_trace *t;
  uint32_t block_size; /* JSONL tokens per hash id */
  uint64_t max_tokens; /* 0: no limit */
  uint64_t line;       /* the physical line being parsed, 1-based */
  const char *name;
  kvbm_trace_error *err; /* never NULL here */
} trace_parser;

/* Fills p->err with "name:line: <fmt>" and returns KVBM_ETRACE. */
int kvbm__trace_fail(trace_parser *p, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* KVBM_ETRACE (with the message) when n more tokens would pass max_tokens. */
int kvbm__trace_limit(trace_parser *p, size_t n);

/* Room for n more tokens past t->ntokens (memory only). 0 or KVBM_ENOMEM. */
int kvbm__trace_reserve(trace_parser *p, size_t n);

/* Appends request r, whose r->n_tokens tokens the parser has written at
 * t->tokens + t->ntokens (in reserved room): sets r->first_token and
 * r->line, counts the tokens. 0, KVBM_ENOMEM or KVBM_ETRACE (max_tokens). */
int kvbm__trace_push(trace_parser *p, kvbm_trace_request *r);

/* One non-blank, non-comment line of each format (s[0..n), no newline). */
int kvbm__trace_text_line(trace_parser *p, const char *s, size_t n);
int kvbm__trace_jsonl_line(trace_parser *p, const char *s, size_t n);

/* Quotes at most 24 bytes of s[0..n) for a message, printable ASCII only. */
const char *kvbm__trace_quote(const char *s, size_t n, char buf[40]);

#endif
