/* pool — upstream key pools: which key a request uses, and each key's health. A key that the
 * upstream rate-limits (429) rests for the retry-after it was given; a key it rejects (401) or
 * that is out of quota (429 insufficient_quota) is disabled and probed with GET /v1/models until
 * it works again. State is shared by every worker thread through atomics; probes run on one. */
#ifndef FERRY_POOL_H
#define FERRY_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "upstream.h"

enum pool_verdict {
    POOL_OK,       /* the answer stands */
    POOL_COOLDOWN, /* rate-limited: rest this key, try another */
    POOL_DISABLE,  /* rejected or out of quota: disable this key, try another */
    POOL_RETRY,    /* the upstream failed (5xx, connect): try another key, this one stays */
};

/* Milliseconds on a clock shared by every thread (monotonic). */
int64_t pool_now(void);

/* A healthy key index, round-robin, avoiding `avoid` when another is healthy; -1 when none. */
int pool_pick(struct upstream_def *up, int64_t now, int avoid);

/* The request field that carries key k of up ("Authorization: Bearer KEY", "api-key: KEY"...),
 * for libcurl's header list. The caller clears out when done. */
void pool_key_field(const struct upstream_def *up, int k, char *out, size_t cap);

/* What an upstream answer (status and the start of its body) says about the key that got it. */
enum pool_verdict pool_judge(int status, const char *body, size_t len);

/* Records a verdict for key k. retry_after_ms: what the upstream asked for (0: not given). */
void pool_report(const struct config *cfg, struct upstream_def *up, int k, enum pool_verdict v,
                 int64_t retry_after_ms, int64_t now);

/* Milliseconds until some key of up leaves its cool-down (0 when none is cooling). */
int64_t pool_retry_after(const struct upstream_def *up, int64_t now);

/* Probes of disabled keys, driven by a 1 s timer on one worker's loop. */
struct pool_prober {
    const struct config *cfg;
    struct upstream *up;
    uv_timer_t timer;
    struct probe *probes; /* in flight */
};

void pool_prober_start(struct pool_prober *p, const struct config *cfg, struct upstream *up,
                       uv_loop_t *loop);
/* Cancels probes in flight and closes the timer (the loop must run once more). */
void pool_prober_stop(struct pool_prober *p);

#endif
