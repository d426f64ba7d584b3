/* pool — key choice, key health and probes (see pool.h). */
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

struct probe {
    struct upstream_job job; /* first: libcurl's PRIVATE points here */
    struct pool_prober *p;
    struct upstream_def *def;
    int k;
    CURL *easy;
    struct curl_slist *hdrs;
    char url[2100];
    struct probe *next;
};

int64_t pool_now(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

static int healthy(const struct key_health *h, int64_t now)
{
    return !__atomic_load_n(&h->disabled, __ATOMIC_RELAXED) &&
           __atomic_load_n(&h->cooldown_until, __ATOMIC_RELAXED) <= now;
}

int pool_pick(struct upstream_def *up, int64_t now, int avoid)
{
    unsigned int start;
    int fallback = -1;

    if (up->nkeys == 0)
        return -1;
    start = __atomic_fetch_add(&up->next_key, 1, __ATOMIC_RELAXED);
    for (size_t i = 0; i < up->nkeys; i++) {
        int k = (int)((start + i) % up->nkeys);
        if (!healthy(&up->health[k], now))
            continue;
        if (k != avoid)
            return k;
        fallback = k;
    }
    return fallback;
}

void pool_key_field(const struct upstream_def *up, int k, char *out, size_t cap)
{
    if (strcasecmp(up->key_header, "authorization") == 0)
        snprintf(out, cap, "Authorization: Bearer %s", up->keys[k]);
    else
        snprintf(out, cap, "%s: %s", up->key_header, up->keys[k]);
}

enum pool_verdict pool_judge(int status, const char *body, size_t len)
{
    static const char quota[] = "insufficient_quota";

    if (status == 401)
        return POOL_DISABLE;
    if (status == 429) {
        for (size_t i = 0; body != NULL && i + sizeof(quota) - 1 <= len; i++)
            if (memcmp(body + i, quota, sizeof(quota) - 1) == 0)
                return POOL_DISABLE;
        return POOL_COOLDOWN;
    }
    if (status >= 500 || status == 0)
        return POOL_RETRY;
    return POOL_OK;
}

void pool_report(const struct config *cfg, struct upstream_def *up, int k, enum pool_verdict v,
                 int64_t retry_after_ms, int64_t now)
{
    struct key_health *h;

    if (k < 0 || (size_t)k >= up->nkeys)
        return;
    h = &up->health[k];
    if (v == POOL_COOLDOWN) {
        int64_t until = now + (retry_after_ms > 0 ? retry_after_ms : (int64_t)cfg->key_cooldown);
        __atomic_store_n(&h->cooldown_until, until, __ATOMIC_RELAXED);
        log_error("upstream %s key #%d rate-limited: resting %.1f s", up->name, k + 1,
                  (double)(until - now) / 1000.0);
    } else if (v == POOL_DISABLE) {
        if (!__atomic_exchange_n(&h->disabled, 1, __ATOMIC_RELAXED))
            log_error("upstream %s key #%d rejected or out of quota: disabled, probing every %.1f s",
                      up->name, k + 1, (double)cfg->key_probe_interval / 1000.0);
        __atomic_store_n(&h->next_probe, now + (int64_t)cfg->key_probe_interval, __ATOMIC_RELAXED);
    }
}

int64_t pool_retry_after(const struct upstream_def *up, int64_t now)
{
    int64_t best = 0;

    for (size_t i = 0; i < up->nkeys; i++) {
        int64_t until = __atomic_load_n(&up->health[i].cooldown_until, __ATOMIC_RELAXED);
        if (!__atomic_load_n(&up->health[i].disabled, __ATOMIC_RELAXED) && until > now &&
            (best == 0 || until - now < best))
            best = until - now;
    }
    return best;
}

/* ---- probes ---- */

static size_t discard(char *p, size_t size, size_t n, void *u)
{
    (void)p;
    (void)u;
    return size * n;
}

static void probe_free(struct probe *pr)
{
    struct probe **pp = &pr->p->probes;

    while (*pp != NULL && *pp != pr)
        pp = &(*pp)->next;
    if (*pp == pr)
        *pp = pr->next;
    __atomic_store_n(&pr->def->health[pr->k].probing, 0, __ATOMIC_RELAXED);
    curl_slist_free_all(pr->hdrs);
    free(pr);
}

static void probe_done(struct upstream_job *job, CURL *easy, CURLcode result)
{
    struct probe *pr = (struct probe *)job;
    struct key_health *h = &pr->def->health[pr->k];
    long status = 0;

    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    upstream_remove(pr->p->up, easy);
    if (result == CURLE_OK && status == 200) {
        __atomic_store_n(&h->disabled, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&h->cooldown_until, 0, __ATOMIC_RELAXED);
        log_error("upstream %s key #%d works again: enabled", pr->def->name, pr->k + 1);
    } else {
        __atomic_store_n(&h->next_probe, pool_now() + (int64_t)pr->p->cfg->key_probe_interval,
                         __ATOMIC_RELAXED);
    }
    probe_free(pr);
}

static void probe_start(struct pool_prober *p, struct upstream_def *def, int k)
{
    struct probe *pr = calloc(1, sizeof(*pr));
    char line[4200];
    CURL *e;

    if (pr == NULL)
        return;
    pr->job.done = probe_done;
    pr->p = p;
    pr->def = def;
    pr->k = k;
    snprintf(pr->url, sizeof(pr->url), "%s/v1/models", def->url);
    pool_key_field(def, k, line, sizeof(line));
    pr->hdrs = curl_slist_append(NULL, line);
    explicit_bzero(line, sizeof(line));
    e = upstream_easy(p->up);
    if (pr->hdrs == NULL || e == NULL) {
        curl_slist_free_all(pr->hdrs);
        free(pr);
        return;
    }
    pr->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, pr->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &pr->job);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, pr->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(e, CURLOPT_PROXY, def->proxy);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)p->cfg->connect_timeout);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
    if (def->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, def->ca_file);
    __atomic_store_n(&def->health[k].probing, 1, __ATOMIC_RELAXED);
    pr->next = p->probes;
    p->probes = pr;
    if (upstream_add(p->up, e) != 0) {
        upstream_remove(p->up, e);
        probe_free(pr);
    }
}

static void on_tick(uv_timer_t *t)
{
    struct pool_prober *p = t->data;
    int64_t now = pool_now();

    for (size_t i = 0; i < p->cfg->nupstreams; i++) {
        struct upstream_def *def = (struct upstream_def *)&p->cfg->upstreams[i];
        for (size_t k = 0; k < def->nkeys; k++) {
            struct key_health *h = &def->health[k];
            if (__atomic_load_n(&h->disabled, __ATOMIC_RELAXED) &&
                !__atomic_load_n(&h->probing, __ATOMIC_RELAXED) &&
                __atomic_load_n(&h->next_probe, __ATOMIC_RELAXED) <= now)
                probe_start(p, def, (int)k);
        }
    }
}

void pool_prober_start(struct pool_prober *p, const struct config *cfg, struct upstream *up,
                       uv_loop_t *loop)
{
    p->cfg = cfg;
    p->up = up;
    p->probes = NULL;
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_tick, 1000, 1000);
    uv_unref((uv_handle_t *)&p->timer); /* never what keeps a worker's loop alive */
}

void pool_prober_stop(struct pool_prober *p)
{
    while (p->probes != NULL) {
        struct probe *pr = p->probes;
        upstream_remove(p->up, pr->easy);
        probe_free(pr);
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
}
