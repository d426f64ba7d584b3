/* guard_chunk — fuzz target for guard_chunk_feed (src/guard.c), the check every chunked request
 * body byte passes before llhttp. Invariants: used <= len; a refusal is 400, 413 or 431 with a
 * reason; the state machine stops at the end of the message (used < len leaves the next request
 * alone) and neither the verdict, the end of the message nor the byte count depends on how the
 * body was split across reads (whole, at points derived from the input, byte by byte). */
#include "fuzz.h"

#include "guard.h"

static const struct guard_limits lim = {
    .max_request_line = 64,
    .max_header_bytes = 128, /* trailers */
    .max_headers = 8,
    .max_chunk_ext = 16,
    .max_body = 4096,
};

struct outcome {
    int rc;
    size_t used; /* bytes consumed in total, up to the end of the message or the refusal */
    int done;
    uint64_t total;
    const char *why;
};

/* Feeds buf in pieces ending at cuts[] (ascending, last == len), as conn.c would. */
static struct outcome feed(const char *buf, size_t len, const size_t *cuts, size_t ncuts)
{
    struct guard_chunk g;
    struct outcome o = {0, 0, 0, 0, NULL};
    size_t at = 0;

    guard_chunk_init(&g);
    for (size_t i = 0; i < ncuts && at < len; i++) {
        size_t n = cuts[i] - at, used = (size_t)-1;
        if (cuts[i] < at)
            continue;
        o.rc = guard_chunk_feed(&g, &lim, buf + at, n, &used, &o.why);
        FZ_CHECK(used <= n, "used %zu > len %zu", used, n);
        at += used;
        if (o.rc != 0)
            break;
        if (g.state == GC_DONE)
            break;
        FZ_CHECK(used == n, "stopped at %zu of %zu before the end of the message", used, n);
    }
    o.used = at;
    o.done = g.state == GC_DONE;
    o.total = g.total;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome w, s, b;
    size_t cuts[4], one = size, *bytes;
    char *buf;

    if (size > 8192)
        return 0;
    buf = fz_copy(data, size);
    for (int k = 0; k < 3; k++)
        cuts[k] = fz_split(data, size, (uint64_t)k + 1);
    for (int i = 0; i < 3; i++) /* sort three */
        for (int j = i + 1; j < 3; j++)
            if (cuts[j] < cuts[i]) {
                size_t t = cuts[i];
                cuts[i] = cuts[j];
                cuts[j] = t;
            }
    cuts[3] = size;
    bytes = malloc((size ? size : 1) * sizeof(*bytes));
    if (bytes == NULL)
        abort();
    for (size_t i = 0; i < size; i++)
        bytes[i] = i + 1;

    w = feed(buf, size, &one, 1);
    s = feed(buf, size, cuts, 4);
    b = feed(buf, size, bytes, size);

    if (w.rc != 0) {
        FZ_CHECK(w.rc == -400 || w.rc == -413 || w.rc == -431, "status %d", w.rc);
        FZ_CHECK(w.why != NULL && *w.why, "a refusal says why");
    }
    FZ_CHECK(w.total <= lim.max_body, "body %llu over the limit", (unsigned long long)w.total);
    if (w.done) {
        FZ_CHECK(w.rc == 0, "done and refused");
        FZ_CHECK(w.used >= 5 && memcmp(buf + w.used - 2, "\r\n", 2) == 0,
                 "message ends without CRLF at %zu", w.used);
    }
    FZ_CHECK(w.rc == s.rc && w.rc == b.rc, "status depends on the split: %d (%s) / %d (%s) at "
             "%zu,%zu,%zu / %d (%s) byte by byte", w.rc, w.why ? w.why : "-", s.rc,
             s.why ? s.why : "-", cuts[0], cuts[1], cuts[2], b.rc, b.why ? b.why : "-");
    FZ_CHECK(w.done == s.done && w.done == b.done, "end of message depends on the split");
    FZ_CHECK(w.used == s.used && w.used == b.used, "bytes used depend on the split: %zu %zu %zu",
             w.used, s.used, b.used);
    FZ_CHECK(w.total == s.total && w.total == b.total, "data bytes depend on the split");
    free(bytes);
    free(buf);
    return 0;
}
