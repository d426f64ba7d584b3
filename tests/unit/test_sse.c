/* test_sse — the SSE splitter. Each case is a stream and the exact transcript of callbacks it
 * must produce, checked whole, byte by byte, and split at every point into two and three pieces:
 * upstreams and proxies cut streams anywhere, and an event split across reads must come out as if
 * it had arrived at once. Then the memory promise: a 10 MB data line costs nothing to keep. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sse.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* A transcript: "[name]" at data_begin, the data bytes, "{name}\n" at event_end. */
struct rec {
    char buf[4096];
    size_t len;
    int begins, ends;
};

static void rec_put(struct rec *r, const char *p, size_t n)
{
    assert_true(r->len + n < sizeof(r->buf));
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

static void on_begin(void *ud, const char *name, size_t len)
{
    struct rec *r = ud;
    assert_int_equal(r->begins, r->ends); /* no event opens twice */
    assert_int_equal(strlen(name), len);  /* names are NUL-terminated too */
    r->begins++;
    rec_put(r, "[", 1);
    rec_put(r, name, len);
    rec_put(r, "]", 1);
}

static void on_bytes(void *ud, const char *p, size_t n)
{
    struct rec *r = ud;
    assert_int_equal(r->begins, r->ends + 1); /* data only inside an event */
    assert_true(n > 0);
    rec_put(r, p, n);
}

static void on_end(void *ud, const char *name, size_t len)
{
    struct rec *r = ud;
    assert_int_equal(r->begins, r->ends + 1);
    r->ends++;
    rec_put(r, "{", 1);
    rec_put(r, name, len);
    rec_put(r, "}\n", 2);
}

static const struct sse_callbacks cbs = {on_begin, on_bytes, on_end};

struct sse_case {
    const char *name;
    const char *in;
    size_t len;
    const char *want;
    size_t want_len;
};

/* clang-format off */
#define CASE(nm, s, w)                                                                             \
    {.name = nm, .in = s, .len = sizeof(s) - 1, .want = w, .want_len = sizeof(w) - 1}
/* clang-format on */

static const struct sse_case cases[] = {
    CASE("one event, LF", "data: hello\n\n", "[]hello{}\n"),
    CASE("one event, CRLF", "data: hello\r\n\r\n", "[]hello{}\n"),
    CASE("one event, CR", "data: hello\r\r", "[]hello{}\n"),
    CASE("OpenAI chat chunk",
         "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
         "[]{\"id\":\"chatcmpl-1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}{}\n"),
    CASE("two events", "data: a\n\ndata: b\n\n", "[]a{}\n[]b{}\n"),
    CASE("data lines joined with LF", "data: a\ndata: b\ndata: c\n\n", "[]a\nb\nc{}\n"),
    CASE("mixed line ends in one event", "data: a\r\ndata: b\rdata: c\n\r\n", "[]a\nb\nc{}\n"),
    CASE("CR ends an event, the LF after it is its pair", "data: a\r\r\ndata: b\n\n",
         "[]a{}\n[]b{}\n"),
    CASE("CR CR LF LF: two blank lines after the data", "data: a\r\r\n\ndata: b\n\n",
         "[]a{}\n[]b{}\n"),
    CASE("LF CR: two line ends", "data: a\n\rdata: b\n\n", "[]a{}\n[]b{}\n"),
    CASE("event name before the data", "event: message_start\ndata: {}\n\n",
         "[message_start]{}{message_start}\n"),
    CASE("Anthropic style, CRLF",
         "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
         "[message_stop]{\"type\":\"message_stop\"}{message_stop}\n"),
    CASE("event name after the data", "data: x\nevent: late\n\n", "[]x{late}\n"),
    CASE("the last event line wins", "event: a\nevent: b\ndata: x\n\n", "[b]x{b}\n"),
    CASE("event without a colon empties the name", "event: a\nevent\ndata: x\n\n", "[]x{}\n"),
    CASE("event without a space", "event:x\ndata:y\n\n", "[x]y{x}\n"),
    CASE("event name resets after each event", "event: a\ndata: 1\n\ndata: 2\n\n",
         "[a]1{a}\n[]2{}\n"),
    CASE("event name resets even when nothing was dispatched", "event: foo\n\ndata: x\n\n",
         "[]x{}\n"),
    CASE("event name keeps inner spaces and colons", "event:  a: b \ndata: x\n\n",
         "[ a: b ]x{ a: b }\n"),
    CASE("no data: nothing dispatched", "event: foo\n\n", ""),
    CASE("comment", ": ping\n\n", ""),
    CASE("comment inside an event", "data: a\n: keep-alive\ndata: b\n\n", "[]a\nb{}\n"),
    CASE("comment before the data", ":\ndata: x\n\n", "[]x{}\n"),
    CASE("no space after the colon", "data:x\n\n", "[]x{}\n"),
    CASE("only one space is stripped", "data:  x\n\n", "[] x{}\n"),
    CASE("a tab is not stripped", "data:\tx\n\n", "[]\tx{}\n"),
    CASE("colons in the value", "data: a:b: c\n\n", "[]a:b: c{}\n"),
    CASE("data without a colon is an empty data line", "data\n\n", "[]{}\n"),
    CASE("data: with nothing", "data:\n\n", "[]{}\n"),
    CASE("data: and a space", "data: \n\n", "[]{}\n"),
    CASE("two empty data lines", "data\ndata\n\n", "[]\n{}\n"),
    CASE("an empty data line then text", "data:\ndata: x\n\n", "[]\nx{}\n"),
    CASE("id and retry are skipped", "id: 7\nretry: 1000\ndata: x\n\n", "[]x{}\n"),
    CASE("field names are case-sensitive", "Data: x\nDATA: y\n\n", ""),
    CASE("near misses are other fields", "dat: a\ndatas: b\ndata2: c\n data: d\neventx: e\n\n",
         ""),
    CASE("a long unknown field name", "datadatadatadata: x\n\n", ""),
    CASE("[DONE]", "data: [DONE]\n\n", "[][DONE]{}\n"),
    CASE("leading blank lines", "\n\r\n\r\ndata: a\n\n", "[]a{}\n"),
    CASE("the stream ends inside an event", "data: a\n\ndata: b\n", "[]a{}\n[]b"),
    CASE("the stream ends inside a line", "data: a\n\ndata: b", "[]a{}\n[]b"),
    CASE("byte order mark", "\xef\xbb\xbf" "data: x\n\n", "[]x{}\n"),
    CASE("byte order mark then an event line", "\xef\xbb\xbf" "event: e\ndata: x\n\n",
         "[e]x{e}\n"),
    CASE("half a byte order mark makes an unknown field", "\xef\xbb" "data: x\n\ndata: y\n\n",
         "[]y{}\n"),
    CASE("one byte of a mark", "\xef" "data: x\n\ndata: y\n\n", "[]y{}\n"),
    CASE("a mark later is part of the line", "data: a\n\n\xef\xbb\xbf" "data: b\n\n",
         "[]a{}\n"),
    CASE("a mark inside data is data", "data: \xef\xbb\xbf\n\n", "[]\xef\xbb\xbf{}\n"),
    CASE("NUL bytes pass as data", "data: a\0b\n\n", "[]a\0b{}\n"),
    CASE("blank line of spaces is not blank", "data: a\n \ndata: b\n\n", "[]a\nb{}\n"),
};

/* Feeds c->in in pieces ending at cuts[] (ascending, the last == len). */
static void run(const struct sse_case *c, const size_t *cuts, size_t ncuts, struct rec *r)
{
    struct sse s;
    size_t at = 0;

    memset(r, 0, sizeof(*r));
    sse_init(&s);
    for (size_t i = 0; i < ncuts; i++) {
        sse_feed(&s, c->in + at, cuts[i] - at, &cbs, r);
        at = cuts[i];
    }
    assert_int_equal(s.events, (uint64_t)r->ends);
}

/* Literals may hold NUL bytes: lengths come from sizeof. */
static void check(const struct sse_case *c, const struct rec *r, const char *how)
{
    if (r->len != c->want_len || memcmp(r->buf, c->want, c->want_len) != 0) {
        print_error("%s (%s): got [%.*s], want [%.*s]\n", c->name, how, (int)r->len, r->buf,
                    (int)c->want_len, c->want);
        fail();
    }
}

static void cases_whole(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct rec r;
        size_t cut = cases[i].len;
        run(&cases[i], &cut, 1, &r);
        check(&cases[i], &r, "whole");
    }
}

static void cases_byte_by_byte(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        struct rec r, whole;
        size_t cuts[256], one = cases[i].len;
        assert_true(cases[i].len <= COUNT(cuts));
        for (size_t k = 0; k < cases[i].len; k++)
            cuts[k] = k + 1;
        run(&cases[i], cuts, cases[i].len, &r);
        check(&cases[i], &r, "byte by byte");
        run(&cases[i], &one, 1, &whole);
        assert_int_equal(r.len, whole.len);
        assert_memory_equal(r.buf, whole.buf, r.len);
    }
}

static void cases_every_split(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct sse_case *c = &cases[i];
        struct rec whole, r;
        size_t one = c->len;
        run(c, &one, 1, &whole);
        for (size_t a = 0; a <= c->len; a++) {
            size_t two[2] = {a, c->len};
            run(c, two, 2, &r);
            if (r.len != whole.len || memcmp(r.buf, whole.buf, r.len) != 0) {
                print_error("%s: split at %zu differs\n", c->name, a);
                fail();
            }
            for (size_t b = a; b <= c->len; b++) {
                size_t three[3] = {a, b, c->len};
                run(c, three, 3, &r);
                if (r.len != whole.len || memcmp(r.buf, whole.buf, r.len) != 0) {
                    print_error("%s: split at %zu,%zu differs\n", c->name, a, b);
                    fail();
                }
            }
        }
    }
}

/* ---- names ---- */

static void long_name_truncated(void **state)
{
    char in[256], want[128];
    struct sse s;
    struct rec r;

    memset(&r, 0, sizeof(r));
    memset(want, 'n', SSE_NAME_MAX);
    want[SSE_NAME_MAX] = '\0';
    snprintf(in, sizeof(in), "event: %s%s\ndata: x\n", want, "tail-that-is-cut");
    sse_init(&s);
    sse_feed(&s, in, strlen(in), &cbs, &r);
    assert_int_equal(s.name_len, SSE_NAME_MAX);
    assert_true(s.name_truncated);
    assert_string_equal(s.name, want);
    sse_feed(&s, "\n", 1, &cbs, &r);
    assert_int_equal(s.name_len, 0); /* reset for the next event */
    assert_false(s.name_truncated);
    assert_int_equal(s.events, 1);
}

static void name_exactly_max(void **state)
{
    char in[256], name[SSE_NAME_MAX + 1];
    struct sse s;
    struct rec r;

    memset(&r, 0, sizeof(r));
    memset(name, 'm', SSE_NAME_MAX);
    name[SSE_NAME_MAX] = '\0';
    snprintf(in, sizeof(in), "event: %s\ndata: x\n\n", name);
    sse_init(&s);
    for (size_t i = 0; in[i]; i++) /* byte by byte: the copy must resume at each byte */
        sse_feed(&s, in + i, 1, &cbs, &r);
    assert_false(s.name_truncated);
    assert_int_equal(r.ends, 1);
    assert_non_null(strstr(r.buf, name));
}

/* ---- no callbacks at all ---- */

static void null_callbacks(void **state)
{
    static const char in[] = "event: e\ndata: a\ndata: b\n\n: c\ndata\n\n";
    struct sse_callbacks none = {NULL, NULL, NULL};
    struct sse s;

    sse_init(&s);
    sse_feed(&s, in, sizeof(in) - 1, &none, NULL);
    assert_int_equal(s.events, 2);
    sse_feed(&s, NULL, 0, &none, NULL); /* an empty read is nothing */
    assert_int_equal(s.events, 2);
}

/* ---- memory: a huge event costs the same few bytes ---- */

struct count {
    uint64_t bytes, begins, ends;
    unsigned char last;
};

static void count_begin(void *ud, const char *name, size_t len)
{
    ((struct count *)ud)->begins++;
}

static void count_bytes(void *ud, const char *p, size_t n)
{
    struct count *c = ud;
    c->bytes += n;
    c->last = (unsigned char)p[n - 1];
}

static void count_end(void *ud, const char *name, size_t len)
{
    ((struct count *)ud)->ends++;
}

static void huge_data_line_constant_memory(void **state)
{
    static const struct sse_callbacks ccb = {count_begin, count_bytes, count_end};
    enum { PIECE = 1024, TOTAL = 10 * 1024 * 1024 };
    char piece[PIECE];
    struct sse s, before;
    struct count c = {0};
    struct mallinfo2 m0, m1;

    memset(piece, 'x', sizeof(piece));
    sse_init(&s);
    sse_feed(&s, "data: ", 6, &ccb, &c);
    before = s;
    m0 = mallinfo2();
    for (size_t sent = 0; sent < TOTAL; sent += PIECE)
        sse_feed(&s, piece, PIECE, &ccb, &c);
    m1 = mallinfo2();
    /* The state is the same bytes as before the 10 MB: nothing about the data is kept. */
    assert_memory_equal(&s, &before, sizeof(s));
    assert_int_equal(m1.uordblks, m0.uordblks);
    sse_feed(&s, "\n\n", 2, &ccb, &c);
    assert_int_equal(c.bytes, (uint64_t)TOTAL);
    assert_int_equal(c.begins, 1);
    assert_int_equal(c.ends, 1);
    assert_true(sizeof(struct sse) <= 128);
}

static void many_events(void **state)
{
    static const struct sse_callbacks ccb = {count_begin, count_bytes, count_end};
    static const char ev[] = "event: e\r\ndata: {\"n\":1}\r\n\r\n";
    struct sse s;
    struct count c = {0};

    sse_init(&s);
    for (int i = 0; i < 200000; i++)
        sse_feed(&s, ev, sizeof(ev) - 1, &ccb, &c);
    assert_int_equal(s.events, 200000);
    assert_int_equal(c.ends, 200000);
    assert_int_equal(c.bytes, 200000ull * 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cases_whole),
        cmocka_unit_test(cases_byte_by_byte),
        cmocka_unit_test(cases_every_split),
        cmocka_unit_test(long_name_truncated),
        cmocka_unit_test(name_exactly_max),
        cmocka_unit_test(null_callbacks),
        cmocka_unit_test(huge_data_line_constant_memory),
        cmocka_unit_test(many_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
