/* usage_fuzz — fuzz target for the response-side parsers ferry runs on every upstream byte
 * (src/sse.c, src/usage.c) and the request edit (src/jsonedit.c). Invariants: nothing about the
 * result depends on how the bytes were split (whole, three pieces at points derived from the
 * input, byte by byte); the model is bounded, NUL-terminated and free of control bytes; the
 * filter's output is the input with bytes only taken out, none when the input never says
 * "usage", and its hold never passes its bound; an edited body is the original with one edit, is
 * one JSON document by the tap's separate scanner, and needs no second edit. */
#include "fuzz.h"

#include "jsonedit.h"
#include "sse.h"
#include "usage.h"

#define MAX_INPUT 16384
#define BYTEWISE_MAX 512

/* Cuts: ascending, the last is the input's length. */
struct cuts {
    size_t at[MAX_INPUT + 1];
    size_t n;
};

static struct cuts whole, split3, bytewise;

static void make_cuts(const uint8_t *d, size_t size)
{
    size_t c[3];

    whole.at[0] = size;
    whole.n = 1;
    for (int k = 0; k < 3; k++)
        c[k] = fz_split(d, size, (uint64_t)k + 1);
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (c[j] < c[i]) {
                size_t t = c[i];
                c[i] = c[j];
                c[j] = t;
            }
    split3.at[0] = c[0];
    split3.at[1] = c[1];
    split3.at[2] = c[2];
    split3.at[3] = size;
    split3.n = 4;
    bytewise.n = 0;
    if (size <= BYTEWISE_MAX)
        for (size_t i = 0; i < size; i++)
            bytewise.at[bytewise.n++] = i + 1;
}

/* ---- sse ---- */

struct transcript {
    uint64_t hash;
    uint64_t begins, ends, bytes;
};

static void mix(struct transcript *t, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        t->hash ^= b[i];
        t->hash *= 1099511628211ull;
    }
}

static void t_begin(void *ud, const char *name, size_t len)
{
    struct transcript *t = ud;
    FZ_CHECK(t->begins == t->ends, "data_begin inside an event");
    FZ_CHECK(len <= SSE_NAME_MAX && name[len] == '\0', "name of %zu bytes", len);
    t->begins++;
    mix(t, "[", 1);
    mix(t, name, len);
}

static void t_bytes(void *ud, const char *p, size_t n)
{
    struct transcript *t = ud;
    FZ_CHECK(t->begins == t->ends + 1, "data outside an event");
    FZ_CHECK(n > 0, "empty data piece");
    t->bytes += n;
    mix(t, p, n);
}

static void t_end(void *ud, const char *name, size_t len)
{
    struct transcript *t = ud;
    FZ_CHECK(t->begins == t->ends + 1, "event_end without data_begin");
    FZ_CHECK(len <= SSE_NAME_MAX && name[len] == '\0', "name of %zu bytes", len);
    t->ends++;
    mix(t, "]", 1);
    mix(t, name, len);
}

static struct transcript sse_run(const char *buf, const struct cuts *c)
{
    static const struct sse_callbacks cb = {t_begin, t_bytes, t_end};
    struct transcript t = {1469598103934665603ull, 0, 0, 0};
    struct sse s;
    size_t at = 0;

    sse_init(&s);
    for (size_t i = 0; i < c->n; i++) {
        sse_feed(&s, buf + at, c->at[i] - at, &cb, &t);
        at = c->at[i];
        FZ_CHECK(s.name_len <= SSE_NAME_MAX && s.name[s.name_len] == '\0', "name state");
    }
    FZ_CHECK(s.events == t.ends, "events %llu, ends %llu", (unsigned long long)s.events,
             (unsigned long long)t.ends);
    return t;
}

static void check_sse(const char *buf, size_t size)
{
    struct transcript w = sse_run(buf, &whole), s = sse_run(buf, &split3);

    FZ_CHECK(w.hash == s.hash && w.ends == s.ends && w.bytes == s.bytes,
             "SSE transcript depends on the split at %zu,%zu,%zu", split3.at[0], split3.at[1],
             split3.at[2]);
    FZ_CHECK(w.bytes <= size + w.ends + w.begins, "more data than input");
    if (bytewise.n) {
        struct transcript b = sse_run(buf, &bytewise);
        FZ_CHECK(w.hash == b.hash && w.ends == b.ends, "SSE transcript differs byte by byte");
    }
}

/* ---- the tap ---- */

static void usage_run(struct usage *u, enum usage_kind kind, int streaming, const char *buf,
                      const struct cuts *c)
{
    size_t at = 0;

    usage_init(u, kind, streaming);
    for (size_t i = 0; i < c->n; i++) {
        usage_feed(u, buf + at, c->at[i] - at);
        at = c->at[i];
    }
}

static void usage_once(struct usage *u, enum usage_kind kind, int streaming, const char *buf,
                       size_t len)
{
    usage_init(u, kind, streaming);
    usage_feed(u, buf, len);
}

static void check_result(const struct usage *u)
{
    size_t n = strnlen(u->model, sizeof(u->model));

    FZ_CHECK(n <= USAGE_MODEL_MAX, "model not terminated");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)u->model[i];
        FZ_CHECK(c >= 0x20 && c != 0x7f, "control byte 0x%02x in the model", c);
    }
    if (!u->seen_usage)
        FZ_CHECK(u->prompt_tokens == 0 && u->completion_tokens == 0 && u->total_tokens == 0 &&
                     u->cached_tokens == 0 && u->reasoning_tokens == 0,
                 "counts without usage");
    FZ_CHECK(u->prompt_tokens < (1ull << 55) && u->completion_tokens < (1ull << 53) &&
                 u->total_tokens < (1ull << 56),
             "counts out of range");
    if (u->kind == USAGE_ANTHROPIC) {
        FZ_CHECK(u->total_tokens == u->prompt_tokens + u->completion_tokens, "anthropic total");
        FZ_CHECK(u->cached_tokens <= u->prompt_tokens, "anthropic cached > prompt");
        FZ_CHECK(u->reasoning_tokens == 0, "anthropic reasoning");
    }
}

static int same_result(const struct usage *a, const struct usage *b)
{
    return a->prompt_tokens == b->prompt_tokens && a->completion_tokens == b->completion_tokens &&
           a->total_tokens == b->total_tokens && a->cached_tokens == b->cached_tokens &&
           a->reasoning_tokens == b->reasoning_tokens && a->seen_usage == b->seen_usage &&
           a->complete == b->complete && a->model_truncated == b->model_truncated &&
           a->events == b->events && a->bytes == b->bytes && strcmp(a->model, b->model) == 0;
}

static void check_usage(const char *buf, size_t size)
{
    for (int kind = USAGE_CHAT; kind <= USAGE_ANTHROPIC; kind++)
        for (int streaming = 0; streaming <= 1; streaming++) {
            struct usage w, s;
            usage_run(&w, (enum usage_kind)kind, streaming, buf, &whole);
            usage_run(&s, (enum usage_kind)kind, streaming, buf, &split3);
            check_result(&w);
            FZ_CHECK(w.bytes == size, "bytes %llu of %zu", (unsigned long long)w.bytes, size);
            FZ_CHECK(same_result(&w, &s),
                     "kind %d streaming %d: the result depends on the split at %zu,%zu,%zu: "
                     "prompt %llu/%llu completion %llu/%llu complete %d/%d model '%s'/'%s'",
                     kind, streaming, split3.at[0], split3.at[1], split3.at[2],
                     (unsigned long long)w.prompt_tokens, (unsigned long long)s.prompt_tokens,
                     (unsigned long long)w.completion_tokens,
                     (unsigned long long)s.completion_tokens, w.complete, s.complete, w.model,
                     s.model);
            if (bytewise.n) {
                struct usage b;
                usage_run(&b, (enum usage_kind)kind, streaming, buf, &bytewise);
                FZ_CHECK(same_result(&w, &b), "kind %d streaming %d: differs byte by byte",
                         kind, streaming);
            }
            if (!streaming)
                FZ_CHECK(w.events == 0, "events in a body");
        }
}

/* ---- the filter ---- */

struct sink {
    char *buf;
    size_t len, cap;
};

static int sink_out(void *ud, const char *p, size_t n)
{
    struct sink *s = ud;

    FZ_CHECK(n > 0, "empty output piece");
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        if (s->buf == NULL)
            abort();
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

static void filter_run(struct sink *out, struct usage *tap, size_t hold_max, const char *buf,
                       const struct cuts *c)
{
    struct usage_filter f;
    size_t at = 0;

    memset(out, 0, sizeof(*out));
    usage_init(tap, USAGE_CHAT, 1);
    usage_filter_init(&f, tap);
    f.hold_max = hold_max;
    for (size_t i = 0; i < c->n; i++) {
        size_t held = usage_filter_held(&f), before = out->len, n = c->at[i] - at;
        FZ_CHECK(usage_filter_feed(&f, buf + at, n, sink_out, out) == 0, "feed failed");
        FZ_CHECK(out->len - before <= held + n, "more out than held + in");
        FZ_CHECK(usage_filter_held(&f) <= hold_max, "held %zu > %zu", usage_filter_held(&f),
                 hold_max);
        at = c->at[i];
    }
    FZ_CHECK(usage_filter_finish(&f, sink_out, out) == 0, "finish failed");
    FZ_CHECK(usage_filter_held(&f) == 0, "held after finish");
    FZ_CHECK(f.hold_peak <= hold_max, "hold peak %zu > %zu", f.hold_peak, hold_max);
    usage_filter_free(&f);
}

static void check_filter(const uint8_t *d, const char *buf, size_t size)
{
    /* a small hold bound now and then, so that the overflow path is taken too */
    size_t hold_max = fz_hash(d, size, 7) % 4 == 0 ? 16 + fz_hash(d, size, 8) % 256
                                                    : USAGE_FILTER_HOLD_MAX;
    struct sink w, s;
    struct usage tw, ts, direct;
    size_t j = 0;

    filter_run(&w, &tw, hold_max, buf, &whole);
    filter_run(&s, &ts, hold_max, buf, &split3);
    FZ_CHECK(w.len == s.len && (w.len == 0 || memcmp(w.buf, s.buf, w.len) == 0),
             "filter output depends on the split at %zu,%zu,%zu (%zu vs %zu bytes)",
             split3.at[0], split3.at[1], split3.at[2], w.len, s.len);
    if (bytewise.n) {
        struct sink b;
        struct usage tb;
        filter_run(&b, &tb, hold_max, buf, &bytewise);
        FZ_CHECK(w.len == b.len && (w.len == 0 || memcmp(w.buf, b.buf, w.len) == 0),
                 "filter output differs byte by byte");
        free(b.buf);
    }
    /* only cuts: the output is a subsequence of the input */
    FZ_CHECK(w.len <= size, "output longer than input");
    for (size_t i = 0; i < w.len; i++) {
        while (j < size && buf[j] != w.buf[i])
            j++;
        FZ_CHECK(j < size, "output byte %zu is not from the input", i);
        j++;
    }
    if (memmem(buf, size, "usage", 5) == NULL)
        FZ_CHECK(w.len == size && (size == 0 || memcmp(w.buf, buf, size) == 0),
                 "changed a stream that never says usage");
    /* the tap behind the filter saw every upstream byte */
    usage_once(&direct, USAGE_CHAT, 1, buf, size);
    FZ_CHECK(same_result(&tw, &direct) && same_result(&ts, &direct), "the filter's tap differs");
    free(w.buf);
    free(s.buf);
}

/* ---- the request edit ---- */

static int first_is_brace(const char *buf, size_t size)
{
    size_t i = 0;
    while (i < size && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
        i++;
    return i < size && buf[i] == '{';
}

static void check_jsonedit(const char *buf, size_t size)
{
    size_t cap = size + JSONEDIT_GROWTH, out_len = 0, again_len = 0, p = 0, q = 0, lo;
    char *out = malloc(cap ? cap : 1), *again = malloc(cap + JSONEDIT_GROWTH);
    int injected = -1, injected2 = -1, rc;
    struct usage tap;
    long delta;

    if (out == NULL || again == NULL)
        abort();
    rc = jsonedit_stream_include_usage(buf, size, out, cap, &out_len, &injected);
    FZ_CHECK(rc == 0 || rc == -1, "rc %d", rc);
    FZ_CHECK(injected == 0 || (rc == 0 && injected == 1), "injected %d with rc %d", injected, rc);
    usage_once(&tap, USAGE_CHAT, 0, buf, size);
    if (rc == 0)
        FZ_CHECK(tap.complete && first_is_brace(buf, size),
                 "accepted a body the tap does not read as one JSON object");
    else if (tap.complete && first_is_brace(buf, size))
        FZ_CHECK(memmem(buf, size, "stream", 6) != NULL || memmem(buf, size, "\\u", 2) != NULL,
                 "refused a valid object that has no stream member");
    if (injected) {
        FZ_CHECK(out_len <= size + JSONEDIT_GROWTH, "edit too long");
        lo = out_len < size ? out_len : size;
        while (p < lo && out[p] == buf[p])
            p++;
        while (q < lo - p && out[out_len - 1 - q] == buf[size - 1 - q])
            q++;
        delta = (long)out_len - (long)size;
        FZ_CHECK(delta == 40 || delta == 21 || delta == 20 || delta == 18 || delta == -1 ||
                     delta == 0,
                 "edit changes the length by %ld", delta);
        FZ_CHECK(out_len - p - q <= (size_t)JSONEDIT_GROWTH + 4 && size - p - q <= 5,
                 "more than one spot changed (%zu same at the start, %zu at the end)", p, q);
        usage_once(&tap, USAGE_CHAT, 0, out, out_len);
        FZ_CHECK(tap.complete, "the edited body is not one JSON document");
        rc = jsonedit_stream_include_usage(out, out_len, again, cap + JSONEDIT_GROWTH,
                                           &again_len, &injected2);
        FZ_CHECK(rc == 0 && injected2 == 0, "the edited body needs another edit (rc %d)", rc);
    }
    free(out);
    free(again);
}

/* ---- paths ---- */

static void check_path(const char *buf, size_t size)
{
    enum usage_kind kind = (enum usage_kind)99;
    int rc = usage_kind_for_path(buf, size, &kind);

    FZ_CHECK(rc == -1 ? kind == (enum usage_kind)99 : rc == 0 && kind <= USAGE_ANTHROPIC,
             "rc %d kind %d", rc, (int)kind);
    if (rc == 0)
        FZ_CHECK(memmem(buf, size, "/", 1) != NULL, "a kind for a path without a slash");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf;

    if (size > MAX_INPUT)
        return 0;
    buf = fz_copy(data, size);
    make_cuts(data, size);
    check_sse(buf, size);
    check_usage(buf, size);
    check_filter(data, buf, size);
    check_jsonedit(buf, size);
    check_path(buf, size);
    free(buf);
    return 0;
}
