/* nats_sub.c - kvbm_nats_sub: a synchronous libnats subscription, the
 * consumer side of nats_sink.c (the specs and kvbm.sub.nats read events
 * back with it). It reconnects like the sink; no connection callbacks are
 * set, so closing it waits for nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#include "kvbm_nats.h"

#define SUB_RECONNECT_WAIT_MS 50
#define SUB_READY_MS 2000 /* how long the SUB may take to reach the server */

struct kvbm_nats_sub {
  natsConnection *nc;
  natsSubscription *sub;
};

/* err gets "nats <what>: <status> (<libnats' detail>)". */
static int nats_error(const char *what, natsStatus st, char *err, size_t errlen) {
  if (err && errlen) {
    natsStatus last = NATS_OK;
    const char *detail = nats_GetLastError(&last);
    const char *text = natsStatus_GetText(st);
    if (last == st && detail && *detail && !strstr(detail, text))
      snprintf(err, errlen, "nats %s: %s (%s)", what, text, detail);
    else
      snprintf(err, errlen, "nats %s: %s", what, text);
  }
  return st == NATS_NO_MEMORY ? KVBM_ENOMEM : KVBM_ESINK;
}

int kvbm_nats_sub_new(const char *url, const char *subject, kvbm_nats_sub **out, char *err,
                      size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (!out) return KVBM_EINVAL;
  *out = NULL;
  if (!url || !*url || !subject || !*subject) {
    if (err && errlen) snprintf(err, errlen, "nats: no server URL or subject given");
    return KVBM_EINVAL;
  }
  kvbm_nats_sub *s = calloc(1, sizeof *s);
  if (!s) return KVBM_ENOMEM;

  natsOptions *opts = NULL;
  const char *step = "options";
  natsStatus st = natsOptions_Create(&opts);
  if (st == NATS_OK) step = "url", st = natsOptions_SetURL(opts, url);
  if (st == NATS_OK) step = "options", st = natsOptions_SetName(opts, "kvbm-sub");
  if (st == NATS_OK) st = natsOptions_SetAllowReconnect(opts, true);
  if (st == NATS_OK) st = natsOptions_SetMaxReconnect(opts, -1);
  if (st == NATS_OK) st = natsOptions_SetReconnectWait(opts, SUB_RECONNECT_WAIT_MS);
  if (st == NATS_OK) st = natsOptions_SetReconnectJitter(opts, 0, 0);
  if (st == NATS_OK) st = natsOptions_SetRetryOnFailedConnect(opts, false, NULL, NULL);
  if (st == NATS_OK) step = "connect", st = natsConnection_Connect(&s->nc, opts);
  natsOptions_Destroy(opts);
  if (st == NATS_OK) {
    step = "subscribe";
    st = natsConnection_SubscribeSync(&s->sub, s->nc, subject);
    /* the SUB has reached the server when this returns: nothing published
     * after kvbm_nats_sub_new returns is missed */
    if (st == NATS_OK) step = "flush", st = natsConnection_FlushTimeout(s->nc, SUB_READY_MS);
  }
  if (st != NATS_OK) {
    char what[256];
    snprintf(what, sizeof what, "%s %s", step, url);
    int rc = nats_error(what, st, err, errlen);
    kvbm_nats_sub_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void kvbm_nats_sub_free(kvbm_nats_sub *s) {
  if (!s) return;
  if (s->sub) natsSubscription_Destroy(s->sub); /* also unsubscribes */
  if (s->nc) natsConnection_Destroy(s->nc);     /* closes; no callbacks were set */
  free(s);
}

int kvbm_nats_sub_next(kvbm_nats_sub *s, int64_t timeout_ms, kvbm_nats_msg *msg, char *err,
                       size_t errlen) {
  if (err && errlen) err[0] = '\0';
  if (!s || !msg || timeout_ms < 0) return KVBM_EINVAL;
  memset(msg, 0, sizeof *msg);
  natsMsg *m = NULL;
  natsStatus st = natsSubscription_NextMsg(&m, s->sub, timeout_ms);
  if (st == NATS_TIMEOUT) return 0;
  if (st != NATS_OK) return nats_error("next message", st, err, errlen);
  msg->data = (const unsigned char *)natsMsg_GetData(m);
  msg->len = (size_t)natsMsg_GetDataLength(m);
  msg->subject = natsMsg_GetSubject(m);
  msg->impl_ = m;
  return 1;
}

void kvbm_nats_msg_free(kvbm_nats_msg *msg) {
  if (!msg) return;
  natsMsg_Destroy(msg->impl_);
  memset(msg, 0, sizeof *msg);
}
