/* test_guard — the strict checks in front of llhttp. Every head and body case runs whole, byte
 * by byte, and split in two at every point: a smuggling check whose verdict depends on how an
 * attacker segments the bytes is no check at all. Limits are tiny so boundaries are easy to hit. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "guard.h"

static const struct guard_limits head_lim = {
    .max_request_line = 64,
    .max_header_bytes = 256,
    .max_headers = 8,
    .max_chunk_ext = 8,
    .max_body = 1000,
};

/* ---- request heads ---- */

/* What a valid head must have taught the guard. */
struct facts {
    int http_minor;
    int is_connect;
    int has_cl;
    uint64_t cl;
    int te_count;
    int chunked;
    int host_count;
    int expect_continue;
    int expect_other;
    size_t nheaders;
};

struct head_case {
    const char *name;
    const char *raw;
    size_t len;
    long want; /* head length (WHOLE = all of raw), 0 = needs more, or -status */
    struct facts f;
};

#define WHOLE LONG_MAX

/* clang-format off */
/* Literals may hold NUL bytes, hence sizeof rather than strlen. */
#define ACCEPT(nm, s, ...)                                                                         \
    {.name = nm, .raw = s, .len = sizeof(s) - 1, .want = WHOLE, .f = {__VA_ARGS__}}
#define ACCEPT_HEAD(nm, s, head_len, ...)                                                          \
    {.name = nm, .raw = s, .len = sizeof(s) - 1, .want = head_len, .f = {__VA_ARGS__}}
#define NEED_MORE(nm, s) {.name = nm, .raw = s, .len = sizeof(s) - 1, .want = 0}
#define REJECT(nm, s, status) {.name = nm, .raw = s, .len = sizeof(s) - 1, .want = status}
/* clang-format on */

#define RL "GET / HTTP/1.1\r\n"
#define POST "POST /v1/chat/completions HTTP/1.1\r\nHost: api\r\n"

static const struct head_case head_cases[] = {
    /* valid heads */
    ACCEPT("minimal GET", RL "Host: a\r\n\r\n", .http_minor = 1, .host_count = 1, .nheaders = 1),
    ACCEPT("POST with Content-Length",
           POST "Content-Type: application/json\r\nContent-Length: 42\r\n\r\n", .http_minor = 1,
           .has_cl = 1, .cl = 42, .host_count = 1, .nheaders = 3),
    ACCEPT("POST chunked", POST "Transfer-Encoding: chunked\r\n\r\n", .http_minor = 1,
           .te_count = 1, .chunked = 1, .host_count = 1, .nheaders = 2),
    ACCEPT("chunked is case-insensitive, OWS trimmed",
           POST "transfer-encoding: \t Chunked \t\r\n\r\n", .http_minor = 1, .te_count = 1,
           .chunked = 1, .host_count = 1, .nheaders = 2),
    ACCEPT("OWS around Content-Length", POST "Content-Length:\t 7 \t\r\n\r\n", .http_minor = 1,
           .has_cl = 1, .cl = 7, .host_count = 1, .nheaders = 2),
    ACCEPT("no OWS at all", "GET / HTTP/1.1\r\nHost:a\r\nContent-Length:0\r\n\r\n", .http_minor = 1,
           .has_cl = 1, .cl = 0, .host_count = 1, .nheaders = 2),
    ACCEPT("Content-Length with leading zeros, 19 digits",
           POST "Content-Length: 0000000000000000042\r\n\r\n", .http_minor = 1, .has_cl = 1,
           .cl = 42, .host_count = 1, .nheaders = 2),
    ACCEPT("Content-Length exactly max_body", POST "Content-Length: 1000\r\n\r\n", .http_minor = 1,
           .has_cl = 1, .cl = 1000, .host_count = 1, .nheaders = 2),
    ACCEPT("leading CRLFs before the request line", "\r\n\r\n" RL "Host: a\r\n\r\n",
           .http_minor = 1, .host_count = 1, .nheaders = 1),
    ACCEPT("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", .http_minor = 0),
    ACCEPT("HTTP/1.0 with Host and body",
           "POST /x HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\n", .http_minor = 0, .has_cl = 1,
           .cl = 3, .host_count = 1, .nheaders = 2),
    ACCEPT("Expect: 100-continue (case-insensitive)",
           POST "Content-Length: 5\r\nExpect: 100-Continue\r\n\r\n", .http_minor = 1, .has_cl = 1,
           .cl = 5, .host_count = 1, .expect_continue = 1, .nheaders = 3),
    ACCEPT("other Expect is noted, not refused here", POST "Expect: something-else\r\n\r\n",
           .http_minor = 1, .host_count = 1, .expect_other = 1, .nheaders = 2),
    ACCEPT("HTAB and obs-text in a value", RL "Host: a\r\nX-Name: caf\xc3\xa9\tb\r\n\r\n",
           .http_minor = 1, .host_count = 1, .nheaders = 2),
    ACCEPT("empty value", RL "Host: a\r\nX-Empty:\r\n\r\n", .http_minor = 1, .host_count = 1,
           .nheaders = 2),
    ACCEPT("absolute-form target", "GET http://a/b?c=d HTTP/1.1\r\nHost: a\r\n\r\n",
           .http_minor = 1, .host_count = 1, .nheaders = 1),
    ACCEPT("asterisk-form target", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", .http_minor = 1,
           .host_count = 1, .nheaders = 1),
    ACCEPT("exactly max_headers fields",
           RL "Host: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\n\r\n",
           .http_minor = 1, .host_count = 1, .nheaders = 8),
    ACCEPT_HEAD("pipelined: body and next request follow",
                POST "Content-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n",
                sizeof(POST "Content-Length: 2\r\n\r\n") - 1, .http_minor = 1, .has_cl = 1, .cl = 2,
                .host_count = 1, .nheaders = 2),
    ACCEPT_HEAD("pipelined: a bare LF after the head is not the guard's business",
                RL "Host: a\r\n\r\n\n", sizeof(RL "Host: a\r\n\r\n") - 1, .http_minor = 1,
                .host_count = 1, .nheaders = 1),

    /* incomplete */
    NEED_MORE("nothing yet", ""),
    NEED_MORE("partial request line", "GET / HTT"),
    NEED_MORE("no blank line yet", RL "Host: a\r\n"),
    NEED_MORE("blank line half there", RL "Host: a\r\n\r"),

    /* framing */
    REJECT("Content-Length and Transfer-Encoding",
           POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    REJECT("Transfer-Encoding and Content-Length",
           POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", -400),
    REJECT("duplicate Content-Length, same value",
           POST "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", -400),
    REJECT("Content-Length list", POST "Content-Length: 5, 5\r\n\r\n", -400),
    REJECT("Content-Length with +", POST "Content-Length: +5\r\n\r\n", -400),
    REJECT("Content-Length negative", POST "Content-Length: -5\r\n\r\n", -400),
    REJECT("Content-Length with inner space", POST "Content-Length: 1 2\r\n\r\n", -400),
    REJECT("Content-Length hex", POST "Content-Length: 0x10\r\n\r\n", -400),
    REJECT("Content-Length empty", POST "Content-Length: \r\n\r\n", -400),
    REJECT("Content-Length letters", POST "Content-Length: five\r\n\r\n", -400),
    REJECT("Content-Length 20 digits", POST "Content-Length: 00000000000000000001\r\n\r\n", -400),
    REJECT("Content-Length over max_body", POST "Content-Length: 1001\r\n\r\n", -413),
    REJECT("Content-Length 19 nines over max_body",
           POST "Content-Length: 9999999999999999999\r\n\r\n", -413),
    REJECT("TE gzip", POST "Transfer-Encoding: gzip\r\n\r\n", -400),
    REJECT("TE chunked, gzip", POST "Transfer-Encoding: chunked, gzip\r\n\r\n", -400),
    REJECT("TE gzip, chunked", POST "Transfer-Encoding: gzip, chunked\r\n\r\n", -400),
    REJECT("two TE fields, both chunked",
           POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", -400),
    REJECT("two TE fields, chunked then gzip",
           POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", -400),
    REJECT("TE xchunked", POST "Transfer-Encoding: xchunked\r\n\r\n", -400),
    REJECT("TE chunked followed by VT", POST "Transfer-Encoding: chunked\x0b\r\n\r\n", -400),
    REJECT("TE empty", POST "Transfer-Encoding:\r\n\r\n", -400),
    REJECT("TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", -400),

    /* line structure */
    REJECT("obs-fold with SP", RL "Host: a\r\nX-A: b\r\n c\r\n\r\n", -400),
    REJECT("obs-fold with HTAB", RL "Host: a\r\nX-A: b\r\n\tc\r\n\r\n", -400),
    REJECT("obs-fold of the first field", RL " Host: a\r\n\r\n", -400),
    REJECT("bare CR in request line", "GET /\rx HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("bare CR in field name", RL "Ho\rst: a\r\n\r\n", -400),
    REJECT("bare CR in value", RL "Host: a\r\nX-A: b\rc\r\n\r\n", -400),
    REJECT("CR CR LF", RL "Host: a\r\r\n\r\n", -400),
    REJECT("bare CR ending the head", RL "Host: a\r\n\r\r\n", -400),
    /* found by the fuzzer: a CR ending one read, then a byte that is not LF */
    REJECT("bare CR first, then a high byte", "\r\xcc", -400),
    REJECT("bare CR in a pending request line", "GET /a\rb", -400),
    REJECT("bare LF ending the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", -400),
    REJECT("bare LF ending a field", RL "Host: a\n\r\n", -400),
    REJECT("bare LF as the blank line", RL "Host: a\r\n\n", -400),
    REJECT("bare LF inside a value", RL "Host: a\r\nX-A: b\nc\r\n\r\n", -400),
    REJECT("bare LF before the request line", "\n" RL "Host: a\r\n\r\n", -400),

    /* bytes */
    REJECT("NUL in field name", RL "Host: a\r\nX-\0A: b\r\n\r\n", -400),
    REJECT("NUL in value", RL "Host: a\r\nX-A: b\0c\r\n\r\n", -400),
    REJECT("NUL in target", "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("control byte in field name",
           RL "Host: a\r\nX-\x01"
              "A: b\r\n\r\n",
           -400),
    REJECT("DEL in field name", RL "Host: a\r\nX\x7f: b\r\n\r\n", -400),
    REJECT("byte >= 0x80 in field name", RL "Host: a\r\nX-\xc3\xa9: b\r\n\r\n", -400),
    REJECT("control byte in value", RL "Host: a\r\nX-A: \x01\r\n\r\n", -400),
    REJECT("ESC in value", RL "Host: a\r\nX-A: b\x1b[0m\r\n\r\n", -400),
    REJECT("DEL in value", RL "Host: a\r\nX-A: b\x7f\r\n\r\n", -400),
    REJECT("byte >= 0x80 in target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("space before colon", RL "Host : a\r\n\r\n", -400),
    REJECT("empty field name", RL "Host: a\r\n: b\r\n\r\n", -400),
    REJECT("field without colon", RL "Host: a\r\nX-A b\r\n\r\n", -400),

    /* Host */
    REJECT("missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nX-A: b\r\n\r\n", -400),
    REJECT("duplicate Host on HTTP/1.1", RL "Host: a\r\nHost: a\r\n\r\n", -400),
    REJECT("duplicate Host on HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", -400),

    /* request line */
    REJECT("CONNECT", "CONNECT api:443 HTTP/1.1\r\nHost: api:443\r\n\r\n", -405),
    REJECT("HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", -400),
    REJECT("HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", -400),
    REJECT("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", -400),
    REJECT("HTTP/0.9 style", "GET /\r\n\r\n", -400),
    REJECT("lowercase http", "GET / http/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("double space after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("double space before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", -400),
    REJECT("leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("missing target", "GET HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("HTAB as separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("method with a non-token byte", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    REJECT("empty request line after the tolerated blank lines",
           "\r\n\r\n\r\n\r\n\r\n" RL "Host: a\r\n\r\n", -400),

    /* counts */
    REJECT("one field over max_headers",
           RL "Host: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n\r\n",
           -431),
};

/* Boundary cases built to the limits above at run time (group setup). */
#define MAX_GEN 16
static struct head_case gen_cases[MAX_GEN];
static size_t ngen;

struct sb {
    char *p;
    size_t len;
};

static void sb_add(struct sb *b, const char *s)
{
    size_t n = strlen(s);
    b->p = realloc(b->p, b->len + n + 1);
    assert_non_null(b->p);
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
}

static void sb_rep(struct sb *b, char c, size_t n)
{
    b->p = realloc(b->p, b->len + n + 1);
    assert_non_null(b->p);
    memset(b->p + b->len, c, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void gen_add(const char *name, struct sb *b, long want, struct facts f)
{
    assert_true(ngen < MAX_GEN);
    gen_cases[ngen++] =
        (struct head_case){.name = name, .raw = b->p, .len = b->len, .want = want, .f = f};
    b->p = NULL;
    b->len = 0;
}

static int gen_setup(void **state)
{
    const struct facts get11 = {.http_minor = 1, .host_count = 1, .nheaders = 1};
    const struct facts padded = {.http_minor = 1, .host_count = 1, .nheaders = 2};
    /* "GET /" + target + " HTTP/1.1" */
    const size_t line_overhead = strlen("GET / HTTP/1.1");
    /* field bytes count from the end of the request line, each field with its CRLF */
    const size_t pad_overhead = strlen("Host: a\r\n") + strlen("X-Pad: \r\n");
    struct sb b = {0};

    (void)state;
    sb_add(&b, "GET /");
    sb_rep(&b, 'a', head_lim.max_request_line - line_overhead);
    sb_add(&b, " HTTP/1.1\r\nHost: a\r\n\r\n");
    gen_add("request line exactly max_request_line", &b, WHOLE, get11);

    sb_add(&b, "GET /");
    sb_rep(&b, 'a', head_lim.max_request_line - line_overhead + 1);
    sb_add(&b, " HTTP/1.1\r\nHost: a\r\n\r\n");
    gen_add("request line one over max_request_line", &b, -414, get11);

    sb_add(&b, "GET /");
    sb_rep(&b, 'a', 4 * head_lim.max_request_line);
    gen_add("request line far over the limit, no end in sight", &b, -414, get11);

    sb_add(&b, RL "Host: a\r\nX-Pad: ");
    sb_rep(&b, 'p', head_lim.max_header_bytes - pad_overhead);
    sb_add(&b, "\r\n\r\n");
    gen_add("field bytes exactly max_header_bytes", &b, WHOLE, padded);

    sb_add(&b, RL "Host: a\r\nX-Pad: ");
    sb_rep(&b, 'p', head_lim.max_header_bytes - pad_overhead + 1);
    sb_add(&b, "\r\n\r\n");
    gen_add("field bytes one over max_header_bytes", &b, -431, padded);

    sb_add(&b, RL "Host: a\r\nX-Big: ");
    sb_rep(&b, 'b', 2 * head_lim.max_header_bytes);
    gen_add("one huge field still arriving", &b, -431, padded);

    sb_add(&b, RL "Host: a\r\n");
    for (int i = 0; i < 40; i++)
        sb_add(&b, "X-Many: 1\r\n");
    gen_add("many small fields over max_header_bytes and max_headers", &b, -431, padded);
    return 0;
}

static int gen_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < ngen; i++)
        free((char *)gen_cases[i].raw);
    ngen = 0;
    return 0;
}

static const struct head_case *case_at(size_t i)
{
    size_t nstatic = sizeof(head_cases) / sizeof(head_cases[0]);
    return i < nstatic ? &head_cases[i] : &gen_cases[i - nstatic];
}

static size_t case_count(void)
{
    return sizeof(head_cases) / sizeof(head_cases[0]) + ngen;
}

static long expected(const struct head_case *c)
{
    return c->want == WHOLE ? (long)c->len : c->want;
}

/* Scans raw[0..len) from a buffer of exactly len bytes, so a sanitizer build sees any read past
 * what has arrived. */
static long scan_prefix(struct guard_head *g, const char *raw, size_t len, const char **why)
{
    char *buf = malloc(len ? len : 1);
    long rc;

    assert_non_null(buf);
    memcpy(buf, raw, len);
    *why = NULL;
    rc = guard_head_scan(g, &head_lim, buf, len, why);
    free(buf);
    return rc;
}

/* Returns the number of mismatches, each printed with the case name and how it was fed. */
static int check_verdict(const struct head_case *c, const char *how, long rc, const char *why,
                         const struct guard_head *g)
{
    long want = expected(c);
    int bad = 0;

    if (rc != want) {
        print_error("FAIL [%s] %s: got %ld, want %ld (why: %s)\n", c->name, how, rc, want,
                    why ? why : "-");
        return 1;
    }
    if (rc < 0 && (why == NULL || *why == '\0')) {
        print_error("FAIL [%s] %s: rejected without a reason\n", c->name, how);
        return 1;
    }
    if (rc > 0) {
#define FACT(field)                                                                                \
    if ((uint64_t)g->field != (uint64_t)c->f.field) {                                              \
        print_error("FAIL [%s] %s: " #field " = %llu, want %llu\n", c->name, how,                  \
                    (unsigned long long)g->field, (unsigned long long)c->f.field);                 \
        bad++;                                                                                     \
    }
        FACT(http_minor)
        FACT(is_connect) FACT(has_cl) FACT(cl) FACT(te_count) FACT(chunked) FACT(host_count)
            FACT(expect_continue) FACT(expect_other) FACT(nheaders)
#undef FACT
    }
    return bad;
}

static void head_one_shot(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < case_count(); i++) {
        const struct head_case *c = case_at(i);
        struct guard_head g;
        const char *why;
        long rc;

        guard_head_init(&g);
        rc = scan_prefix(&g, c->raw, c->len, &why);
        bad += check_verdict(c, "one shot", rc, why, &g);
    }
    assert_int_equal(bad, 0);
}

/* The buffer grows one byte per call: 0 until the verdict, which arrives exactly when the blank
 * line completes for a valid head. */
static void head_byte_at_a_time(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < case_count(); i++) {
        const struct head_case *c = case_at(i);
        struct guard_head g;
        const char *why = NULL;
        long rc = 0;
        size_t k;

        guard_head_init(&g);
        for (k = 1; k <= c->len && rc == 0; k++)
            rc = scan_prefix(&g, c->raw, k, &why);
        if (check_verdict(c, "byte at a time", rc, why, &g) != 0) {
            bad++;
        } else if (rc > 0 && k - 1 != (size_t)rc) {
            print_error("FAIL [%s] byte at a time: verdict after %zu bytes, head is %ld\n", c->name,
                        k - 1, rc);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* Two calls, split at every point. */
static void head_split_anywhere(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < case_count(); i++) {
        const struct head_case *c = case_at(i);
        for (size_t s = 1; s < c->len; s++) {
            struct guard_head g;
            const char *why;
            char how[64];
            long rc;

            guard_head_init(&g);
            rc = scan_prefix(&g, c->raw, s, &why);
            if (rc == 0)
                rc = scan_prefix(&g, c->raw, c->len, &why);
            snprintf(how, sizeof(how), "split at %zu", s);
            if (check_verdict(c, how, rc, why, &g) != 0) {
                bad++;
                break; /* one report per case is enough */
            }
        }
    }
    assert_int_equal(bad, 0);
}

/* A new request on the same guard_head needs guard_head_init; after it, the state is fresh. */
static void head_init_resets(void **state)
{
    static const char first[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n";
    static const char second[] = "GET / HTTP/1.0\r\n\r\n";
    struct guard_head g;
    const char *why = NULL;

    (void)state;
    guard_head_init(&g);
    assert_int_equal(guard_head_scan(&g, &head_lim, first, sizeof(first) - 1, &why),
                     sizeof(first) - 1);
    assert_int_equal(g.has_cl, 1);
    guard_head_init(&g);
    assert_int_equal(guard_head_scan(&g, &head_lim, second, sizeof(second) - 1, &why),
                     sizeof(second) - 1);
    assert_int_equal(g.has_cl, 0);
    assert_int_equal(g.host_count, 0);
    assert_int_equal(g.http_minor, 0);
    assert_int_equal(g.nheaders, 0);
}

static void tchar_set(void **state)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~0123456789"
                                 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    int n = 0;

    (void)state;
    for (int c = 0; c < 256; c++) {
        int want = c != 0 && strchr(tchars, c) != NULL;
        if (guard_is_tchar((unsigned char)c) != want)
            fail_msg("guard_is_tchar(0x%02x) = %d, want %d", c, !want, want);
        n += want;
    }
    assert_int_equal(n, 77); /* RFC 9110 §5.6.2: 15 symbols + 10 digits + 52 letters */
}

/* Every byte value at every position of a 21-byte value (the check reads eight bytes at a time):
 * refused exactly for the controls other than HTAB, and DEL. */
static void value_bytes_everywhere(void **state)
{
    (void)state;
    for (int c = 0; c < 256; c++) {
        int want_ok = !((c < 0x20 && c != '\t') || c == 0x7f);
        if (c == '\r' || c == '\n')
            continue; /* line structure, covered above */
        for (size_t at = 0; at < 21; at++) {
            char raw[128], value[21];
            struct guard_head g;
            const char *why = NULL;
            long r;
            int n;

            memset(value, 0x80 + (int)(at % 0x7f), 21); /* obs-text around it */
            value[at] = (char)c;
            if (at == 0 && (c == ' ' || c == '\t'))
                value[at] = 'x'; /* leading whitespace is OWS, not part of the value */
            n = snprintf(raw, sizeof(raw), "GET / HTTP/1.1\r\nHost: a\r\nX-V: %s\r\n\r\n",
                         "vvvvvvvvvvvvvvvvvvvvv");
            memcpy(raw + n - 25, value, 21); /* in place of the 21 placeholder bytes */
            guard_head_init(&g);
            r = guard_head_scan(&g, &head_lim, raw, (size_t)n, &why);
            if (!want_ok && (why == NULL || strcmp(why, "control character in header value") != 0))
                fail_msg("byte 0x%02x at %zu: refused for '%s'", c, at, why ? why : "(none)");
            if ((r == n) != want_ok || (!want_ok && r != -400))
                fail_msg("byte 0x%02x at %zu: %ld", c, at, r);
        }
    }
}

/* ---- chunked bodies ---- */

static const struct guard_limits chunk_lim = {
    .max_request_line = 64,
    .max_header_bytes = 32, /* trailer bytes */
    .max_headers = 8,
    .max_chunk_ext = 8,
    .max_body = 16,
};

struct chunk_case {
    const char *name;
    const char *raw;
    size_t len;
    int want;    /* 0 or -status */
    size_t used; /* when want == 0 */
    enum guard_chunk_state state;
    uint64_t total;
};

/* clang-format off */
#define BODY(nm, s, tot)                                                                           \
    {.name = nm, .raw = s, .len = sizeof(s) - 1, .used = sizeof(s) - 1, .state = GC_DONE,          \
     .total = tot}
#define BODY_THEN(nm, body, rest, tot)                                                             \
    {.name = nm, .raw = body rest, .len = sizeof(body rest) - 1, .used = sizeof(body) - 1,         \
     .state = GC_DONE, .total = tot}
#define PARTIAL(nm, s, st, tot)                                                                    \
    {.name = nm, .raw = s, .len = sizeof(s) - 1, .used = sizeof(s) - 1, .state = st, .total = tot}
#define BAD(nm, s, status) {.name = nm, .raw = s, .len = sizeof(s) - 1, .want = status}
/* clang-format on */

static const struct chunk_case chunk_cases[] = {
    BODY("last chunk only", "0\r\n\r\n", 0),
    BODY("one chunk", "5\r\nhello\r\n0\r\n\r\n", 5),
    BODY("several chunks", "3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n", 8),
    BODY("uppercase hex", "A\r\n0123456789\r\n0\r\n\r\n", 10),
    BODY("lowercase hex with leading zeros", "00f\r\n0123456789abcde\r\n0\r\n\r\n", 15),
    BODY("16 hex digits", "0000000000000003\r\nabc\r\n0\r\n\r\n", 3),
    BODY("data holding CR, LF and NUL", "4\r\n\r\n\0\n\r\n0\r\n\r\n", 4),
    BODY("extension exactly max_chunk_ext", "3;name=val\r\nabc\r\n0\r\n\r\n", 3),
    BODY("extension on the last chunk, with HTAB", "0;a=\tb\r\n\r\n", 0),
    BODY("total exactly max_body", "8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n", 16),
    BODY("trailers", "3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: two\r\n\r\n", 3),
    BODY_THEN("pipelined request follows", "2\r\nhi\r\n0\r\n\r\n",
              "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", 2),
    BODY_THEN("pipelined after trailers", "0\r\nX-A: b\r\n\r\n", "GET / HTTP/1.1\r\n", 0),
    PARTIAL("mid data", "5\r\nhel", GC_DATA, 5),
    PARTIAL("mid size", "1", GC_SIZE_MORE, 0),
    PARTIAL("after a chunk", "2\r\nhi\r\n", GC_SIZE, 2),
    PARTIAL("after the last chunk line", "0\r\n", GC_TRAILER_START, 0),

    BAD("smuggling: CR CR in the size line",
        "2\r\r;a\r\n02\r\n41\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n", -400),
    BAD("bare LF after size", "3\nabc\r\n0\r\n\r\n", -400),
    BAD("bare LF after extension", "3;a\nabc\r\n0\r\n\r\n", -400),
    BAD("bare CR inside extension", "3;a\rb\r\nabc\r\n0\r\n\r\n", -400),
    BAD("data longer than its size", "3\r\nabcd\r\n0\r\n\r\n", -400),
    BAD("LF without CR after data", "3\r\nabc\n0\r\n\r\n", -400),
    BAD("CR without LF after data", "3\r\nabc\r0\r\n\r\n", -400),
    BAD("17 hex digits", "00000000000000003\r\nabc\r\n0\r\n\r\n", -400),
    BAD("non-hex size", "g\r\n", -400),
    BAD("0x prefix", "0x5\r\n", -400),
    BAD("negative size", "-1\r\n", -400),
    BAD("space before size", " 5\r\n", -400),
    BAD("space after size", "5 \r\nhello\r\n", -400),
    BAD("empty size line", "\r\n", -400),
    BAD("extension without size", ";a\r\n", -400),
    BAD("extension one over max_chunk_ext", "3;name=valu\r\nabc\r\n0\r\n\r\n", -400),
    BAD("control byte in extension",
        "3;a\x01"
        "b\r\nabc\r\n0\r\n\r\n",
        -400),
    BAD("NUL in extension", "3;a\0b\r\nabc\r\n0\r\n\r\n", -400),
    BAD("DEL in extension", "3;a\x7f\r\nabc\r\n0\r\n\r\n", -400),
    BAD("one chunk over max_body", "11\r\n", -413),
    BAD("chunks add up over max_body", "8\r\n01234567\r\n9\r\n", -413),
    BAD("size near 2^64", "FFFFFFFFFFFFFFFF\r\n", -413),
    BAD("bare CR in trailer value", "0\r\nX-A: a\rb\r\n\r\n", -400),
    BAD("bare LF ending a trailer", "0\r\nX-A: a\n\r\n", -400),
    BAD("control byte in trailer value", "0\r\nX-A: a\x01\r\n\r\n", -400),
    BAD("obs-fold in trailers", "0\r\nX-A: a\r\n b\r\n\r\n", -400),
    BAD("trailer without colon", "0\r\nX-A\r\n\r\n", -400),
    BAD("trailer name with space", "0\r\nX A: b\r\n\r\n", -400),
    BAD("bare LF ending the body", "0\r\n\n", -400),
    BAD("CR CR ending the body", "0\r\n\r\r", -400),
    BAD("trailers over max_header_bytes", "0\r\nX-Long-Trailer: 0123456789012345678901234\r\n\r\n",
        -431),
};

#define NCHUNK (sizeof(chunk_cases) / sizeof(chunk_cases[0]))

struct chunk_result {
    int rc;
    size_t used;
    enum guard_chunk_state state;
    uint64_t total;
};

static int feed(struct guard_chunk *g, const char *p, size_t n, size_t *used)
{
    char *buf = malloc(n ? n : 1);
    const char *why = NULL;
    int rc;

    assert_non_null(buf);
    memcpy(buf, p, n);
    *used = 0;
    rc = guard_chunk_feed(g, &chunk_lim, buf, n, used, &why);
    free(buf);
    if (rc != 0 && (why == NULL || *why == '\0'))
        fail_msg("rejected without a reason");
    return rc;
}

static int check_chunk(const struct chunk_case *c, const char *how, struct chunk_result r)
{
    if (r.rc != c->want) {
        print_error("FAIL [%s] %s: rc %d, want %d\n", c->name, how, r.rc, c->want);
        return 1;
    }
    if (c->want == 0 && (r.used != c->used || r.state != c->state || r.total != c->total)) {
        print_error("FAIL [%s] %s: used %zu state %d total %llu, want %zu %d %llu\n", c->name, how,
                    r.used, (int)r.state, (unsigned long long)r.total, c->used, (int)c->state,
                    (unsigned long long)c->total);
        return 1;
    }
    return 0;
}

/* Feeds the case in pieces of at most `piece` bytes (0 = all at once) the way conn.c does:
 * whatever was not used after GC_DONE is the next request and is not fed again. */
static struct chunk_result feed_pieces(const struct chunk_case *c, size_t first, size_t piece)
{
    struct chunk_result r = {0};
    struct guard_chunk g;
    size_t off = 0;

    guard_chunk_init(&g);
    while (off < c->len && r.rc == 0 && g.state != GC_DONE) {
        size_t n = c->len - off, used;
        if (off == 0 && first > 0 && n > first)
            n = first;
        else if (off > 0 && piece > 0 && n > piece)
            n = piece;
        r.rc = feed(&g, c->raw + off, n, &used);
        if (r.rc == 0 && used != n && g.state != GC_DONE) {
            print_error("FAIL [%s]: used %zu of %zu without finishing\n", c->name, used, n);
            r.rc = 1;
        }
        off += used;
    }
    r.used = off;
    r.state = g.state;
    r.total = g.total;
    return r;
}

static void chunk_one_shot(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < NCHUNK; i++)
        bad += check_chunk(&chunk_cases[i], "one shot", feed_pieces(&chunk_cases[i], 0, 0));
    assert_int_equal(bad, 0);
}

static void chunk_byte_at_a_time(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < NCHUNK; i++)
        bad += check_chunk(&chunk_cases[i], "byte at a time", feed_pieces(&chunk_cases[i], 1, 1));
    assert_int_equal(bad, 0);
}

static void chunk_split_anywhere(void **state)
{
    int bad = 0;

    (void)state;
    for (size_t i = 0; i < NCHUNK; i++) {
        const struct chunk_case *c = &chunk_cases[i];
        for (size_t s = 1; s < c->len; s++) {
            char how[64];
            snprintf(how, sizeof(how), "split at %zu", s);
            if (check_chunk(c, how, feed_pieces(c, s, 0)) != 0) {
                bad++;
                break;
            }
        }
    }
    assert_int_equal(bad, 0);
}

/* Once the body is complete, more bytes belong to the next request: used stays 0. */
static void chunk_done_takes_nothing(void **state)
{
    struct guard_chunk g;
    const char *why = NULL;
    size_t used = 99;

    (void)state;
    guard_chunk_init(&g);
    assert_int_equal(guard_chunk_feed(&g, &chunk_lim, "0\r\n\r\n", 5, &used, &why), 0);
    assert_int_equal(used, 5);
    assert_int_equal(g.state, GC_DONE);
    assert_int_equal(guard_chunk_feed(&g, &chunk_lim, "GET", 3, &used, &why), 0);
    assert_int_equal(used, 0);
    assert_int_equal(g.state, GC_DONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(head_one_shot),
        cmocka_unit_test(head_byte_at_a_time),
        cmocka_unit_test(head_split_anywhere),
        cmocka_unit_test(head_init_resets),
        cmocka_unit_test(tchar_set),
        cmocka_unit_test(value_bytes_everywhere),
        cmocka_unit_test(chunk_one_shot),
        cmocka_unit_test(chunk_byte_at_a_time),
        cmocka_unit_test(chunk_split_anywhere),
        cmocka_unit_test(chunk_done_takes_nothing),
    };
    return cmocka_run_group_tests(tests, gen_setup, gen_teardown);
}
