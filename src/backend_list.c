/* backend_list.c - the list-ordered inactive backends: insertion order
 * (LRU / hashmap+FIFO), multi-LRU (four of those), and the custom policy
 * backend whose fallback order is insertion order too.
 */
#include "backend.h"
#include "backend_lists.h"

/* ------------------------------------------------ insertion order (LRU) */

typedef struct {
  kvbm__backend base;
  kvbm_allocator alloc;
  lists l;
} fifo_backend;

static void fifo_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  (void)h;
  push_tail(&((fifo_backend *)b)->l, 0, slot);
  b->len++;
}

static void fifo_remove(kvbm__backend *b, uint32_t slot) {
  unlink_node(&((fifo_backend *)b)->l, slot);
  b->len--;
}

static size_t fifo_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  fifo_backend *f = (fifo_backend *)b;
  size_t k = 0;
  while (k < n && (out[k] = pop_head(&f->l, 0)) != NO_SLOT) k++;
  b->len -= k;
  return k;
}

static void fifo_destroy(kvbm__backend *b) {
  fifo_backend *f = (fifo_backend *)b;
  kvbm_allocator a = f->alloc;
  lists_free(&f->l, &a, 1);
  kvbm__free(&a, f, sizeof *f);
}

static size_t fifo_bytes(const kvbm__backend *b) {
  const fifo_backend *f = (const fifo_backend *)b;
  return sizeof *f + 2 * ((size_t)f->l.nslots + 1) * sizeof(uint32_t);
}

static const kvbm__backend_ops fifo_ops = {.insert = fifo_insert, .remove = fifo_remove, .evict = fifo_evict, .destroy = fifo_destroy, .bytes =
                                           fifo_bytes};

kvbm__backend *kvbm__fifo_new(const kvbm_allocator *a, uint32_t nslots) {
  fifo_backend *f = kvbm__realloc(a, NULL, 0, sizeof *f);
  if (!f) return NULL;
  f->alloc = *a;
  if (lists_init(&f->l, &f->alloc, nslots, 1)) {
    kvbm__free(a, f, sizeof *f);
    return NULL;
  }
  f->base.ops = &fifo_ops;
  f->base.len = 0;
  return &f->base;
}

/* ------------------------------------------------------------ multi-LRU */

typedef struct {
  kvbm__backend base;
  kvbm_allocator alloc;
  lists l;
  uint8_t thresholds[3];
  kvbm__frequency_fn freq;
  void *freq_ud;
} mlru_backend;

static void mlru_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  mlru_backend *m = (mlru_backend *)b;
  uint32_t count = m->freq(m->freq_ud, h);
  unsigned level = count < m->thresholds[0] ? 0 : count < m->thresholds[1] ? 1
                 : count < m->thresholds[2] ? 2 : 3;
  push_tail(&m->l, level, slot);
  b->len++;
}

static void mlru_remove(kvbm__backend *b, uint32_t slot) {
  unlink_node(&((mlru_backend *)b)->l, slot);
  b->len--;
}

static size_t mlru_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  mlru_backend *m = (mlru_backend *)b;
  size_t k = 0;
  for (unsigned level = 0; level < 4 && k < n; level++)
    while (k < n && (out[k] = pop_head(&m->l, level)) != NO_SLOT) k++;
  b->len -= k;
  return k;
}

static void mlru_destroy(kvbm__backend *b) {
  mlru_backend *m = (mlru_backend *)b;
  kvbm_allocator a = m->alloc;
  lists_free(&m->l, &a, 4);
  kvbm__free(&a, m, sizeof *m);
}

static size_t mlru_bytes(const kvbm__backend *b) {
  const mlru_backend *m = (const mlru_backend *)b;
  return sizeof *m + 2 * ((size_t)m->l.nslots + 4) * sizeof(uint32_t);
}

static const kvbm__backend_ops mlru_ops = {.insert = mlru_insert, .remove = mlru_remove, .evict = mlru_evict, .destroy = mlru_destroy, .bytes =
                                           mlru_bytes};

kvbm__backend *kvbm__multi_lru_new(const kvbm_allocator *a, uint32_t nslots,
                                   const uint8_t thresholds[3], kvbm__frequency_fn freq, void *ud) {
  mlru_backend *m = kvbm__realloc(a, NULL, 0, sizeof *m);
  if (!m) return NULL;
  m->alloc = *a;
  if (lists_init(&m->l, &m->alloc, nslots, 4)) {
    kvbm__free(a, m, sizeof *m);
    return NULL;
  }
  memcpy(m->thresholds, thresholds, 3);
  m->freq = freq;
  m->freq_ud = ud;
  m->base.ops = &mlru_ops;
  m->base.len = 0;
  return &m->base;
}

/* ----------------------------------------------------- custom policy */

/* The policy orders victims; this backend keeps the truth (which slots are
 * inactive, in insertion order) so that a wrong answer costs nothing but a
 * fallback to insertion order and a counted error. The answer comes from
 * victims() inside the eviction (inline policies) or from the host's
 * kvbm_policy_prepare before the call (armed, in scratch). calling is set
 * while a callback runs: the policy is never entered twice, and what
 * happens meanwhile (a host's garbage collector releasing blocks, say) is
 * only queued. */
typedef struct {
  kvbm__backend base;
  kvbm_allocator alloc;
  lists l;
  kvbm_policy policy;
  kvbm_hash *hashes; /* per slot, for on_remove */
  uint32_t *scratch; /* the policy's answer */
  uint8_t *picked;
  uint64_t *errors;
  kvbm_policy_event *queue; /* on_events: pending notifications */
  size_t queued, queue_cap;
  size_t prepared; /* armed: the answer's length in scratch */
  int armed, calling;
} policy_backend;

/* Queues one notification for on_events; a queue that cannot grow drops
 * it and counts an error (the policy's order is only advice). */
static void enqueue(policy_backend *p, unsigned kind, uint32_t slot, kvbm_hash h) {
  if (p->queued == p->queue_cap) {
    size_t ncap = p->queue_cap ? 2 * p->queue_cap : 64;
    kvbm_policy_event *q = kvbm__realloc(&p->alloc, p->queue, p->queue_cap * sizeof *q, ncap * sizeof *q);
    if (!q) {
      (*p->errors)++;
      return;
    }
    p->queue = q;
    p->queue_cap = ncap;
  }
  p->queue[p->queued++] = (kvbm_policy_event){.hash = h, .block_id = slot, .kind = (uint8_t)kind};
}

/* Delivers the queue. It is detached first: what the policy's callback
 * causes meanwhile (a block released by a finalizer) goes to a fresh queue,
 * for the next delivery. */
static int policy_flush(kvbm__backend *b) {
  policy_backend *p = (policy_backend *)b;
  if (p->calling) return KVBM_EBUSY;
  if (!p->policy.on_events || p->queued == 0) return 0;
  kvbm_policy_event *q = p->queue;
  size_t n = p->queued, cap = p->queue_cap;
  p->queue = NULL;
  p->queued = p->queue_cap = 0; /* delivered once, even when the policy fails */
  p->calling = 1;
  int rc = p->policy.on_events(p->policy.ud, q, n);
  p->calling = 0;
  if (!p->queue) {
    p->queue = q;
    p->queue_cap = cap;
  } else {
    kvbm__free(&p->alloc, q, cap * sizeof *q);
  }
  if (rc >= 0) return 0;
  (*p->errors)++;
  return -1;
}

static void policy_admit(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  policy_backend *p = (policy_backend *)b;
  if (p->policy.on_events) enqueue(p, KVBM_POLICY_ADMIT, slot, h);
}

static void policy_miss(kvbm__backend *b, kvbm_hash h) {
  policy_backend *p = (policy_backend *)b;
  if (p->policy.on_events) enqueue(p, KVBM_POLICY_MISS, UINT32_MAX, h);
}

/* Tells the policy that the inactive block in slot is in the cache. */
static void announce(policy_backend *p, uint32_t slot) {
  if (p->policy.on_events)
    enqueue(p, KVBM_POLICY_INSERT, slot, p->hashes[slot]);
  else if (p->policy.on_insert && p->policy.on_insert(p->policy.ud, slot, p->hashes[slot]) < 0)
    (*p->errors)++;
}

static void policy_insert(kvbm__backend *b, uint32_t slot, kvbm_hash h) {
  policy_backend *p = (policy_backend *)b;
  push_tail(&p->l, 0, slot);
  p->hashes[slot] = h;
  b->len++;
  announce(p, slot);
}

static void policy_remove(kvbm__backend *b, uint32_t slot) {
  policy_backend *p = (policy_backend *)b;
  unlink_node(&p->l, slot);
  b->len--;
  if (p->policy.on_events)
    enqueue(p, KVBM_POLICY_REMOVE, slot, p->hashes[slot]);
  else if (p->policy.on_remove && p->policy.on_remove(p->policy.ud, slot, p->hashes[slot]) < 0)
    (*p->errors)++;
}

static int in_index(const policy_backend *p, uint32_t slot) {
  return slot < p->l.nslots && p->l.next[slot] != slot;
}

/* victims(n) into scratch; < 0 on failure. */
static int ask(policy_backend *p, size_t n) {
  if (!p->policy.victims) return -1;
  p->calling = 1;
  int got = p->policy.victims(p->policy.ud, n, p->scratch);
  p->calling = 0;
  return got < 0 ? -1 : (size_t)got > n ? (int)n : got;
}

/* An armed answer no eviction used up: the policy forgot the blocks it
 * named, so those still cached are announced again. */
static void disarm(policy_backend *p) {
  if (!p->armed) return;
  p->armed = 0;
  for (size_t i = 0; i < p->prepared; i++) {
    uint32_t s = p->scratch[i];
    if (in_index(p, s) && !p->picked[s]) p->picked[s] = 1, announce(p, s);
  }
  for (size_t i = 0; i < p->prepared; i++)
    if (p->scratch[i] < p->l.nslots) p->picked[p->scratch[i]] = 0;
}

static int policy_prepare(kvbm__backend *b, size_t n) {
  policy_backend *p = (policy_backend *)b;
  if (p->calling) return KVBM_EBUSY;
  disarm(p);
  policy_flush(b); /* the policy sees everything up to now first */
  if (n > b->len) n = b->len;
  if (n == 0) return 0;
  int got = ask(p, n);
  p->prepared = got < 0 ? 0 : (size_t)got;
  p->armed = 1;
  return (int)n;
}

static size_t policy_evict(kvbm__backend *b, size_t n, uint32_t *out) {
  policy_backend *p = (policy_backend *)b;
  if (n > b->len) n = b->len;
  if (n == 0) return 0;
  int got;
  if (p->armed) { /* prepared: no callback from here */
    got = (int)p->prepared;
  } else if (p->policy.deferred || p->calling) { /* nobody prepared, and no call is allowed */
    got = -1;
  } else {
    policy_flush(b);
    got = ask(p, n);
  }
  p->armed = 0;
  size_t k = 0;
  int bad = 0; /* counted once, here, also for a prepare whose victims() failed */
  for (int i = 0; i < got; i++) {
    uint32_t s = p->scratch[i];
    int fine = in_index(p, s) && !p->picked[s];
    if (k == n) { /* prepared for more than this eviction took */
      if (fine) p->picked[s] = 1, announce(p, s);
      continue;
    }
    if (!fine) {
      bad = 1;
      continue;
    }
    p->picked[s] = 1;
    out[k++] = s;
  }
  for (int i = 0; i < got; i++)
    if (p->scratch[i] < p->l.nslots) p->picked[p->scratch[i]] = 0;
  for (size_t i = 0; i < k; i++) unlink_node(&p->l, out[i]);
  if (k < n) bad = 1;
  while (k < n) out[k++] = pop_head(&p->l, 0); /* fallback: insertion order */
  if (bad) (*p->errors)++;
  b->len -= k;
  return k;
}

static void policy_destroy(kvbm__backend *b) {
  policy_backend *p = (policy_backend *)b;
  kvbm_allocator a = p->alloc;
  size_t n = p->l.nslots;
  lists_free(&p->l, &a, 1);
  kvbm__free(&a, p->hashes, n * sizeof *p->hashes);
  kvbm__free(&a, p->scratch, n * sizeof *p->scratch);
  kvbm__free(&a, p->picked, n);
  kvbm__free(&a, p->queue, p->queue_cap * sizeof *p->queue);
  kvbm__free(&a, p, sizeof *p);
}

static size_t policy_bytes(const kvbm__backend *b) {
  const policy_backend *p = (const policy_backend *)b;
  size_t n = p->l.nslots;
  return sizeof *p + 2 * (n + 1) * sizeof(uint32_t) + n * (sizeof(kvbm_hash) + 4 + 1) +
         p->queue_cap * sizeof *p->queue;
}

static const kvbm__backend_ops policy_ops = {.insert = policy_insert, .remove = policy_remove, .evict = policy_evict,
                                             .destroy = policy_destroy, .bytes = policy_bytes,
                                             .admit = policy_admit, .miss = policy_miss,
                                             .flush = policy_flush, .prepare = policy_prepare};

kvbm__backend *kvbm__policy_new(const kvbm_allocator *a, uint32_t nslots, const kvbm_policy *policy,
                                uint64_t *errors) {
  policy_backend *p = kvbm__realloc(a, NULL, 0, sizeof *p);
  if (!p) return NULL;
  memset(p, 0, sizeof *p);
  p->alloc = *a;
  p->hashes = kvbm__realloc(a, NULL, 0, (size_t)nslots * sizeof *p->hashes);
  p->scratch = kvbm__realloc(a, NULL, 0, (size_t)nslots * sizeof *p->scratch);
  p->picked = kvbm__realloc(a, NULL, 0, nslots);
  if (!p->hashes || !p->scratch || !p->picked || lists_init(&p->l, &p->alloc, nslots, 1)) {
    kvbm__free(a, p->hashes, (size_t)nslots * sizeof *p->hashes);
    kvbm__free(a, p->scratch, (size_t)nslots * sizeof *p->scratch);
    kvbm__free(a, p->picked, nslots);
    kvbm__free(a, p, sizeof *p);
    return NULL;
  }
  memset(p->picked, 0, nslots);
  p->policy = *policy;
  p->errors = errors;
  p->base.ops = &policy_ops;
  return &p->base;
}
