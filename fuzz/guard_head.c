/* guard_head — fuzz target for guard_head_scan (src/guard.c), the first code that sees a request's
 * bytes. Small limits so the fuzzer reaches every 414/431 path. Invariants: the result is a head
 * length, 0 or one of the documented statuses; a head ends with CRLF CRLF and respects the limits;
 * and the verdict does not depend on how the bytes were split across reads (whole, at two points
 * derived from the input, byte by byte), since conn.c rescans a growing buffer. */
#include "fuzz.h"

#include "guard.h"

static const struct guard_limits lim = {
    .max_request_line = 64,
    .max_header_bytes = 256,
    .max_headers = 8,
    .max_chunk_ext = 16,
    .max_body = 100000,
};

/* Feeds buf[0..len) as it would arrive in reads ending at cuts[] (ascending, last == len). */
static long scan_in_reads(struct guard_head *g, const char *buf, const size_t *cuts, size_t ncuts,
                          const char **why)
{
    long r = 0;

    guard_head_init(g);
    for (size_t i = 0; i < ncuts && r == 0; i++)
        r = guard_head_scan(g, &lim, buf, cuts[i], why);
    return r;
}

static void check_result(long r, const char *why, const struct guard_head *g, const char *buf,
                         size_t len)
{
    if (r < 0) {
        FZ_CHECK(r == -400 || r == -405 || r == -413 || r == -414 || r == -431,
                 "status %ld", r);
        FZ_CHECK(why != NULL && *why != '\0', "a refusal says why");
        return;
    }
    FZ_CHECK((size_t)r <= len, "head length %ld > input %zu", r, len);
    if (r == 0) {
        /* Need more: there is no complete head after the tolerated leading blank lines. */
        for (size_t i = g->skip; i + 4 <= len; i++)
            FZ_CHECK(memcmp(buf + i, "\r\n\r\n", 4) != 0, "CRLFCRLF at %zu but no verdict", i);
        return;
    }
    FZ_CHECK(r >= 4 && memcmp(buf + r - 4, "\r\n\r\n", 4) == 0, "head does not end with CRLFCRLF");
    FZ_CHECK(memchr(buf, '\0', (size_t)r) == NULL, "NUL byte accepted in a head");
    for (long i = 0; i < r; i++) {
        if (buf[i] == '\r')
            FZ_CHECK(i + 1 < r && buf[i + 1] == '\n', "bare CR accepted at %ld", i);
        if (buf[i] == '\n')
            FZ_CHECK(i > 0 && buf[i - 1] == '\r', "bare LF accepted at %ld", i);
    }
    FZ_CHECK(g->http_minor == 0 || g->http_minor == 1, "HTTP/1.%d", g->http_minor);
    FZ_CHECK(!g->is_connect, "CONNECT accepted");
    FZ_CHECK(g->nheaders <= lim.max_headers, "%zu headers", g->nheaders);
    FZ_CHECK(!(g->chunked && g->has_cl), "Content-Length and chunked accepted together");
    FZ_CHECK(g->te_count == 0 || (g->chunked && g->te_count == 1 && g->http_minor == 1),
             "a Transfer-Encoding other than one 'chunked' on HTTP/1.1 accepted");
    FZ_CHECK(!g->has_cl || g->cl <= lim.max_body, "Content-Length %llu over the limit",
             (unsigned long long)g->cl);
    FZ_CHECK(g->host_count <= 1 && (g->http_minor == 0 || g->host_count == 1), "Host count %d",
             g->host_count);
    /* the request line and the field block within their limits */
    {
        const char *eol = memchr(buf + g->skip, '\n', (size_t)r - g->skip);
        FZ_CHECK(eol != NULL, "no request line");
        FZ_CHECK((size_t)(eol - 1 - (buf + g->skip)) <= lim.max_request_line, "request line %zu",
                 (size_t)(eol - 1 - (buf + g->skip)));
        FZ_CHECK((size_t)r - (size_t)(eol + 1 - buf) - 2 <= lim.max_header_bytes,
                 "field block over the limit");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct guard_head whole, split, bytes;
    const char *why_w = NULL, *why_s = NULL, *why_b = NULL;
    size_t cuts[3], one;
    long rw, rs, rb = 0;
    char *buf;

    if (size > 4096)
        return 0;
    buf = fz_copy(data, size);

    cuts[0] = fz_split(data, size, 1);
    cuts[1] = fz_split(data, size, 2);
    if (cuts[1] < cuts[0]) {
        size_t t = cuts[0];
        cuts[0] = cuts[1];
        cuts[1] = t;
    }
    cuts[2] = size;
    one = size;
    rw = scan_in_reads(&whole, buf, &one, 1, &why_w);
    check_result(rw, why_w, &whole, buf, size);
    rs = scan_in_reads(&split, buf, cuts, 3, &why_s);
    guard_head_init(&bytes);
    for (size_t n = 1; n <= size && rb == 0; n++)
        rb = guard_head_scan(&bytes, &lim, buf, n, &why_b);

    /* Whether and where a head is accepted or refused must not depend on the reads. */
    FZ_CHECK((rw > 0) == (rs > 0) && (rw > 0) == (rb > 0) && (rw < 0) == (rs < 0) &&
                 (rw < 0) == (rb < 0),
             "verdict depends on the split: whole %ld (%s), split at %zu,%zu %ld (%s), "
             "byte by byte %ld (%s)",
             rw, why_w ? why_w : "-", cuts[0], cuts[1], rs, why_s ? why_s : "-", rb,
             why_b ? why_b : "-");
    if (rw > 0)
        FZ_CHECK(rw == rs && rw == rb && whole.chunked == split.chunked &&
                     whole.chunked == bytes.chunked && whole.has_cl == bytes.has_cl &&
                     whole.cl == bytes.cl && whole.expect_continue == bytes.expect_continue &&
                     whole.expect_other == bytes.expect_other,
                 "accepted heads differ: %ld %ld %ld", rw, rs, rb);
#ifdef FUZZ_SAME_STATUS
    FZ_CHECK(rw == rs && rw == rb, "status depends on the split: whole %ld (%s), split %ld (%s), "
             "bytes %ld (%s)", rw, why_w ? why_w : "-", rs, why_s ? why_s : "-", rb,
             why_b ? why_b : "-");
#endif
    free(buf);
    return 0;
}
