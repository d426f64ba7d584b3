/* test_headers — which fields cross the relay. A field that leaks upstream (a cookie, a
 * Connection-named secret) or one that the SDK needs and goes missing (x-stainless-*,
 * OpenAI-Beta) is a silent bug, so every scenario lists the exact keep/drop verdict per field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "headers.h"

/* clang-format off */
/* Field values are not NUL-terminated on the wire; lengths come from sizeof. */
#define H(n, v) {.name = n, .name_len = sizeof(n) - 1, .value = v, .value_len = sizeof(v) - 1}
/* clang-format on */

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- headers_list_has ---- */

struct list_case {
    const char *list;
    const char *name;
    int wildcards;
    int want;
};

static const struct list_case list_cases[] = {
    {"cookie,via", "cookie", 0, 1},
    {"cookie,via", "via", 0, 1},
    {"cookie,via", "VIA", 0, 1},
    {"COOKIE,via", "Cookie", 0, 1},
    {"cookie,via", "vi", 0, 0},
    {"cookie,via", "vias", 0, 0},
    {"cookie,via", "cookie,via", 0, 0},
    {" cookie , via ", "via", 0, 1},
    {" cookie , via ", "cookie", 0, 1},
    {"\tcookie\t,\tvia\t", "cookie", 0, 1},
    {",,cookie,,", "cookie", 0, 1},
    {",, ,\t,", "", 0, 0},
    {"", "cookie", 0, 0},
    {"", "", 0, 0},
    {"keep-alive, x-foo", "x-foo", 0, 1},
    {"keep-alive, x-foo", "keep-alive", 0, 1},
    {"keep-alive x-foo", "x-foo", 0, 0},
    {"x-forwarded-*", "X-Forwarded-For", 1, 1},
    {"x-forwarded-*", "X-Forwarded-For", 0, 0},
    {"x-forwarded-*", "x-forwarded-*", 0, 1},
    {"x-forwarded-*", "x-forwarded-", 1, 1},
    {"x-forwarded-*", "x-forwarded", 1, 0},
    {"x-forwarded-*", "forwarded", 1, 0},
    {"cf-*", "CF-Connecting-IP", 1, 1},
    {"cf-*", "cfx", 1, 0},
    {"cookie, cf-* ", "cf-ray", 1, 1},
    {"cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*", "x-real-ip", 1, 1},
    {"cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*", "x-real", 1, 0},
    {"cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*", "authorization", 1, 0},
    {"cookie", "cookie", 1, 1}, /* wildcards on still match plain entries exactly */
    {"cookie", "cookies", 1, 0},
};

static void list_has(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(list_cases); i++) {
        const struct list_case *c = &list_cases[i];
        int got =
            headers_list_has(c->list, strlen(c->list), c->name, strlen(c->name), c->wildcards);
        if (got != c->want)
            fail_msg("headers_list_has(\"%s\", \"%s\", wildcards=%d) = %d, want %d", c->list,
                     c->name, c->wildcards, got, c->want);
    }
}

/* The compiled set answers as headers_list_has with wildcards, for every case above. */
static void set_has_matches_list_has(void **state)
{
    struct headers_set set;

    (void)state;
    for (size_t i = 0; i < COUNT(list_cases); i++) {
        const struct list_case *c = &list_cases[i];
        int want = headers_list_has(c->list, strlen(c->list), c->name, strlen(c->name), 1), got;
        assert_int_equal(headers_set_compile(&set, c->list), 0);
        got = headers_set_has(&set, c->name, strlen(c->name));
        if (got != want)
            fail_msg("headers_set_has(\"%s\", \"%s\") = %d, want %d", c->list, c->name, got, want);
    }
}

/* The longest list that fits, with the most entries it can hold; one byte more is refused. */
static void set_bounds(void **state)
{
    static struct headers_set set;
    char list[HEADERS_SET_BYTES + 2];

    (void)state;
    for (size_t i = 0; i < HEADERS_SET_BYTES; i++)
        list[i] = i % 2 ? ',' : (char)('a' + i / 2 % 26);
    list[HEADERS_SET_BYTES] = '\0';
    assert_int_equal(headers_set_compile(&set, list), 0);
    assert_int_equal(set.n, HEADERS_SET_BYTES / 2);
    assert_int_equal(headers_set_has(&set, "z", 1), 1);
    assert_int_equal(headers_set_has(&set, "ab", 2), 0);
    list[HEADERS_SET_BYTES] = 'x';
    list[HEADERS_SET_BYTES + 1] = '\0';
    assert_int_equal(headers_set_compile(&set, list), -1);
    assert_int_equal(set.n, 0);
}

/* Filters s with drop compiled from list. */
static void filter_request_list(const struct hdr *h, size_t n, const char *list, int *keep)
{
    static struct headers_set set;

    assert_int_equal(headers_set_compile(&set, list), 0);
    headers_filter_request(h, n, &set, keep);
}

/* The list and the name are length-delimited: bytes past either length do not count. */
static void list_has_respects_lengths(void **state)
{
    static const char list[] = "cookie,via";
    static const char name[] = "viaduct";

    (void)state;
    assert_int_equal(headers_list_has(list, 6, "via", 3, 0), 0);
    assert_int_equal(headers_list_has(list, 6, "cookie", 6, 0), 1);
    assert_int_equal(headers_list_has(list, sizeof(list) - 1, name, 3, 0), 1);
    assert_int_equal(headers_list_has(list, sizeof(list) - 1, name, 4, 0), 0);
    assert_int_equal(headers_list_has("x-a*", 3, "x-abc", 5, 1), 0); /* the '*' is past the end */
}

/* ---- collecting a head from llhttp's pieces ---- */

/* Names and values delivered in pieces (as llhttp does when a token spans reads), an empty
 * value (llhttp calls on_header_value with 0 bytes), and the field limit. Slots past h[0] start
 * as garbage, as in conn.c. */
static void pieces(void **state)
{
    static const char buf[] = "Content-Type: application/json\r\nX-Empty: \r\nAccept: */*\r\n";
    struct hdr h[4];
    size_t n = 0;
    const char *m = NULL;
    size_t mlen = 0;

    (void)state;
    memset(h, 0xa5, sizeof(h));
    memset(&h[0], 0, sizeof(h[0]));
    assert_int_equal(headers_name_piece(h, &n, 3, buf, 7), 0);       /* "Content" */
    assert_int_equal(headers_name_piece(h, &n, 3, buf + 7, 5), 0);   /* "-Type" */
    headers_value_piece(h, n, buf + 14, 6);                         /* "applic" */
    headers_value_piece(h, n, buf + 20, 10);                        /* "ation/json" */
    assert_int_equal(headers_name_piece(h, &n, 3, buf + 32, 7), 0);  /* "X-Empty" */
    headers_value_piece(h, n, buf + 41, 0); /* llhttp hands an empty value over as 0 bytes */
    assert_int_equal(headers_name_piece(h, &n, 3, buf + 43, 6), 0);  /* "Accept" */
    headers_value_piece(h, n, buf + 51, 3);
    assert_int_equal(n, 2);
    assert_int_equal(h[0].name_len, 12);
    assert_memory_equal(h[0].name, "Content-Type", 12);
    assert_int_equal(h[0].value_len, 16);
    assert_memory_equal(h[0].value, "application/json", 16);
    assert_int_equal(h[1].name_len, 7);
    assert_memory_equal(h[1].name, "X-Empty", 7);
    assert_int_equal(h[1].value_len, 0);
    assert_memory_equal(h[2].name, "Accept", 6);
    assert_memory_equal(h[2].value, "*/*", 3);
    /* a fourth field is past max = 3 */
    assert_int_equal(headers_name_piece(h, &n, 3, buf, 4), -1);
    /* spans: the first piece sets the start */
    headers_span(&m, &mlen, buf, 4);
    headers_span(&m, &mlen, buf + 4, 8);
    assert_ptr_equal(m, buf);
    assert_int_equal(mlen, 12);
}

/* ---- headers_hop_by_hop ---- */

struct name_case {
    const char *name;
    int want;
};

static const struct name_case hop_cases[] = {
    {"Connection", 1},
    {"connection", 1},
    {"Keep-Alive", 1},
    {"TE", 1},
    {"Trailer", 1},
    {"Transfer-Encoding", 1},
    {"UPGRADE", 1},
    {"Proxy-Authorization", 1},
    {"Proxy-Connection", 1},
    {"proxy-authenticate", 1},
    {"Proxy-", 1},
    {"Proxy", 0},
    {"Authorization", 0},
    {"Content-Length", 0},
    {"Trailers", 0},
    {"Tea", 0},
    {"T", 0},
    {"X-Connection", 0},
    {"Upgrade-Insecure-Requests", 0},
    {"Keep-Alive-Timeout", 0},
    {"", 0},
};

static void hop_by_hop(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(hop_cases); i++) {
        int got = headers_hop_by_hop(hop_cases[i].name, strlen(hop_cases[i].name));
        if (got != hop_cases[i].want)
            fail_msg("headers_hop_by_hop(\"%s\") = %d, want %d", hop_cases[i].name, got,
                     hop_cases[i].want);
    }
    /* length-delimited: "Connection" inside a longer buffer */
    assert_int_equal(headers_hop_by_hop("Connection-Id", 10), 1);
    assert_int_equal(headers_hop_by_hop("Connection-Id", 13), 0);
}

/* ---- scenarios: a field list and the verdict per field ---- */

#define MAX_FIELDS 40

struct scenario {
    const char *name;
    struct hdr h[MAX_FIELDS];
    int want[MAX_FIELDS]; /* 1 = relayed / not connection-scoped */
    size_t n;
};

/* Compares every verdict of a scenario; names the first wrong field. */
static void check_keep(const struct scenario *s, const int *got)
{
    for (size_t i = 0; i < s->n; i++)
        if (got[i] != s->want[i])
            fail_msg("[%s] field %zu '%.*s: %.*s': keep = %d, want %d", s->name, i,
                     (int)s->h[i].name_len, s->h[i].name, (int)s->h[i].value_len, s->h[i].value,
                     got[i], s->want[i]);
}

static const struct scenario scoped_cases[] = {
    {"Connection names a field",
     {H("Connection", "keep-alive, X-Foo"), H("X-Foo", "1"), H("X-Bar", "2"),
      H("Keep-Alive", "timeout=5")},
     {0, 0, 1, 0},
     4},
    {"two Connection fields",
     {H("X-A", "1"), H("Connection", "x-a"), H("X-B", "2"), H("Connection", "X-B"), H("X-C", "3")},
     {0, 0, 0, 0, 1},
     5},
    {"odd spacing and empty entries",
     {H("connection", " \t,, X-A ,\tx-b\t,"), H("X-A", "1"), H("x-B", "2"), H("X-AB", "3"),
      H("X", "4")},
     {0, 0, 0, 1, 1},
     5},
    {"Connection: close also scopes a field called Close",
     {H("Connection", "close"), H("Close", "x"), H("Content-Type", "application/json")},
     {0, 0, 1},
     3},
    {"no Connection field",
     {H("Authorization", "Bearer sk-x"), H("TE", "trailers"), H("Upgrade", "websocket")},
     {1, 0, 0},
     3},
    {"Connection entries are names, not prefixes",
     {H("Connection", "x-*"), H("x-stainless-os", "Linux"), H("x-*", "odd")},
     {0, 1, 0},
     3},
};

static void connection_scoped(void **state)
{
    (void)state;
    for (size_t k = 0; k < COUNT(scoped_cases); k++) {
        const struct scenario *s = &scoped_cases[k];
        int got[MAX_FIELDS];
        for (size_t i = 0; i < s->n; i++)
            got[i] = !headers_connection_scoped(s->h, s->n, i);
        check_keep(s, got);
    }
}

/* ---- request filter ---- */

static const char default_drop[] = "cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*";

/* What the openai SDKs and a browser in front of ferry actually send. */
static const struct scenario sdk_request = {
    "SDK request through a proxy",
    {
        H("Host", "localhost:8080"),
        H("Authorization", "Bearer sk-test"),
        H("Content-Type", "application/json"),
        H("Content-Length", "42"),
        H("Accept", "application/json"),
        H("User-Agent", "OpenAI/JS 6.49.0"),
        H("X-Stainless-Lang", "js"),
        H("x-stainless-package-version", "6.49.0"),
        H("x-stainless-retry-count", "0"),
        H("OpenAI-Beta", "assistants=v2"),
        H("OpenAI-Organization", "org-1"),
        H("OpenAI-Project", "proj-1"),
        H("Idempotency-Key", "stainless-node-retry-1"),
        H("Connection", "keep-alive, X-Secret"),
        H("Keep-Alive", "timeout=5"),
        H("X-Secret", "do not relay"),
        H("Expect", "100-continue"),
        H("Cookie", "session=1"),
        H("X-Forwarded-For", "10.0.0.1"),
        H("x-forwarded-proto", "https"),
        H("X-Real-IP", "10.0.0.1"),
        H("CF-Ray", "abc"),
        H("cf-connecting-ip", "10.0.0.1"),
        H("Via", "1.1 edge"),
        H("Forwarded", "for=10.0.0.1"),
        H("Proxy-Authorization", "Basic eA=="),
        H("TE", "trailers"),
        H("Transfer-Encoding", "chunked"),
        H("Upgrade", "h2c"),
        H("Trailer", "X-Sum"),
        H("Accept-Encoding", "gzip, deflate"),
        H("Origin", "http://localhost:5173"),
    },
    {
        0, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* Host .. Idempotency-Key */
        0, 0, 0, 0,                            /* Connection, Keep-Alive, X-Secret, Expect */
        0, 0, 0, 0, 0, 0, 0, 0,                /* Cookie .. Forwarded */
        0, 0, 0, 0, 0,                         /* Proxy-Authorization .. Trailer */
        1, 1,                                  /* Accept-Encoding, Origin */
    },
    32,
};

static void filter_request_sdk(void **state)
{
    int keep[MAX_FIELDS];

    (void)state;
    memset(keep, 0x55, sizeof(keep));
    filter_request_list(sdk_request.h, sdk_request.n, default_drop, keep);
    check_keep(&sdk_request, keep);
}

/* Without a drop list, only the protocol rules apply: cookies and forwarding fields go up. */
static void filter_request_no_drop_list(void **state)
{
    static const struct scenario s = {
        "no drop list",
        {H("Host", "a"), H("Cookie", "a=1"), H("X-Forwarded-For", "1.2.3.4"), H("Via", "1.1 x"),
         H("Authorization", "Bearer k"), H("Expect", "100-continue"), H("Content-Length", "0")},
        {0, 1, 1, 1, 1, 0, 0},
        7,
    };
    int keep[MAX_FIELDS];

    (void)state;
    memset(keep, 0x55, sizeof(keep));
    headers_filter_request(s.h, s.n, NULL, keep);
    check_keep(&s, keep);
    memset(keep, 0x55, sizeof(keep));
    filter_request_list(s.h, s.n, "", keep);
    check_keep(&s, keep);
}

/* The drop list takes '*' prefixes (unlike Connection) and is case-insensitive. */
static void filter_request_custom_drop_list(void **state)
{
    static const struct scenario s = {
        "custom drop list",
        {H("x-stainless-os", "Linux"), H("X-Stainless-Arch", "x64"), H("x-stainless", "?"),
         H("OpenAI-Beta", "assistants=v2"), H("Authorization", "Bearer k"), H("X-Debug", "1"),
         H("X-Debugger", "1")},
        {0, 0, 1, 1, 1, 0, 1},
        7,
    };
    int keep[MAX_FIELDS];

    (void)state;
    memset(keep, 0x55, sizeof(keep));
    filter_request_list(s.h, s.n, " X-STAINLESS-* , x-debug", keep);
    check_keep(&s, keep);
}

/* ---- response filter ---- */

static const struct scenario upstream_response = {
    "upstream response",
    {
        H("Content-Type", "text/event-stream; charset=utf-8"),
        H("Content-Length", "1234"),
        H("Transfer-Encoding", "chunked"),
        H("Connection", "keep-alive"),
        H("Keep-Alive", "timeout=5"),
        H("access-control-allow-origin", "https://platform.openai.com"),
        H("Access-Control-Expose-Headers", "X-Request-ID"),
        H("X-Accel-Buffering", "no"),
        H("x-request-id", "req_1"),
        H("openai-processing-ms", "12"),
        H("openai-organization", "org-1"),
        H("x-ratelimit-remaining-tokens", "999"),
        H("retry-after-ms", "20"),
        H("Set-Cookie", "__cf_bm=x"),
        H("CF-Ray", "abc"),
        H("Date", "Thu, 01 Jan 2026 00:00:00 GMT"),
        H("Upgrade", "h2,h2c"),
        H("Proxy-Authenticate", "Basic"),
    },
    {1, 1 /* per keep_length */, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
    18,
};

static void filter_response(void **state)
{
    struct scenario s = upstream_response;
    int keep[MAX_FIELDS];

    (void)state;
    memset(keep, 0x55, sizeof(keep));
    headers_filter_response(s.h, s.n, 1, keep);
    check_keep(&s, keep);

    s.want[1] = 0; /* Content-Length goes when ferry reframes the body */
    memset(keep, 0x55, sizeof(keep));
    headers_filter_response(s.h, s.n, 0, keep);
    check_keep(&s, keep);
}

/* A field the upstream names in Connection stays on the upstream hop. */
static void filter_response_connection_named(void **state)
{
    static const struct scenario s = {
        "response Connection names",
        {H("Connection", "X-Internal"), H("x-internal", "secret"), H("x-request-id", "req_2")},
        {0, 0, 1},
        3,
    };
    int keep[MAX_FIELDS];

    (void)state;
    headers_filter_response(s.h, s.n, 1, keep);
    check_keep(&s, keep);
}

/* ---- lookups ---- */

static void find_and_name_is(void **state)
{
    static const struct hdr h[] = {H("Content-Type", "a"), H("X-Request-ID", "b"),
                                   H("x-request-id", "c")};

    (void)state;
    assert_int_equal(headers_find(h, 3, "content-type"), 0);
    assert_int_equal(headers_find(h, 3, "x-request-id"), 1); /* the first of two */
    assert_int_equal(headers_find(h, 3, "x-request"), -1);
    assert_int_equal(headers_find(h, 1, "x-request-id"), -1); /* n bounds the search */
    assert_int_equal(headers_find(h, 0, "content-type"), -1);

    assert_int_equal(headers_name_is("HOST", 4, "host"), 1);
    assert_int_equal(headers_name_is("Hostname", 4, "host"), 1);
    assert_int_equal(headers_name_is("Hostname", 8, "host"), 0);
    assert_int_equal(headers_name_is("Hos", 3, "host"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(list_has),
        cmocka_unit_test(set_has_matches_list_has),
        cmocka_unit_test(set_bounds),
        cmocka_unit_test(pieces),
        cmocka_unit_test(list_has_respects_lengths),
        cmocka_unit_test(hop_by_hop),
        cmocka_unit_test(connection_scoped),
        cmocka_unit_test(filter_request_sdk),
        cmocka_unit_test(filter_request_no_drop_list),
        cmocka_unit_test(filter_request_custom_drop_list),
        cmocka_unit_test(filter_response),
        cmocka_unit_test(filter_response_connection_named),
        cmocka_unit_test(find_and_name_is),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
