/* test_cors — the preflight ferry answers itself. A browser compares these bytes against what the
 * page asked for, so the test pins the exact response a typical openai-SDK preflight gets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cors.h"

/* clang-format off */
#define H(n, v) {.name = n, .name_len = sizeof(n) - 1, .value = v, .value_len = sizeof(v) - 1}
/* clang-format on */

#define SDK_HEADERS                                                                                \
    "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,"                 \
    "x-stainless-package-version,x-stainless-retry-count,x-stainless-runtime,"                     \
    "x-stainless-runtime-version,x-stainless-timeout"

/* What Chromium sends before the SDK's POST /v1/chat/completions from a dev server page. */
static const struct hdr sdk_preflight[] = {
    H("Host", "localhost:8080"),
    H("Accept", "*/*"),
    H("Access-Control-Request-Method", "POST"),
    H("Access-Control-Request-Headers", SDK_HEADERS),
    H("Origin", "http://localhost:5173"),
    H("Sec-Fetch-Mode", "cors"),
};
#define NSDK (sizeof(sdk_preflight) / sizeof(sdk_preflight[0]))

static const char sdk_answer[] = "HTTP/1.1 204 No Content\r\n"
                                 "Access-Control-Allow-Origin: *\r\n"
                                 "Access-Control-Allow-Methods: POST\r\n"
                                 "Access-Control-Allow-Headers: " SDK_HEADERS "\r\n"
                                 "Access-Control-Max-Age: 86400\r\n"
                                 "Vary: Origin, Access-Control-Request-Headers\r\n"
                                 "\r\n";

struct preflight_case {
    const char *what;
    const char *method;
    struct hdr h[3];
    size_t n;
    int want;
};

static const struct preflight_case preflight_cases[] = {
    {"OPTIONS with a request method",
     "OPTIONS",
     {H("Access-Control-Request-Method", "POST")},
     1,
     1},
    {"field name in any case",
     "OPTIONS",
     {H("Origin", "http://x"), H("access-control-request-method", "DELETE")},
     2,
     1},
    {"OPTIONS without a request method (a plain OPTIONS is relayed)",
     "OPTIONS",
     {H("Origin", "http://x"), H("Access-Control-Request-Headers", "authorization")},
     2,
     0},
    {"OPTIONS with no fields", "OPTIONS", {{0}}, 0, 0},
    {"POST with a request method field",
     "POST",
     {H("Access-Control-Request-Method", "POST")},
     1,
     0},
    {"methods are case-sensitive", "options", {H("Access-Control-Request-Method", "POST")}, 1, 0},
    {"a prefix of OPTIONS", "OPTION", {H("Access-Control-Request-Method", "POST")}, 1, 0},
    {"a longer method", "OPTIONSX", {H("Access-Control-Request-Method", "POST")}, 1, 0},
};

static void is_preflight(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(preflight_cases) / sizeof(preflight_cases[0]); i++) {
        const struct preflight_case *c = &preflight_cases[i];
        int got = cors_is_preflight(c->method, strlen(c->method), c->h, c->n);
        if (got != c->want)
            fail_msg("[%s] cors_is_preflight = %d, want %d", c->what, got, c->want);
    }
    assert_int_equal(cors_is_preflight("GET", 3, sdk_preflight, NSDK), 0);
    assert_int_equal(cors_is_preflight("OPTIONS", 7, sdk_preflight, NSDK), 1);
}

static void preflight_sdk_exact_bytes(void **state)
{
    char buf[1024];
    size_t n;

    (void)state;
    n = cors_preflight_response(buf, sizeof(buf), sdk_preflight, NSDK, 0);
    assert_int_equal(n, sizeof(sdk_answer) - 1);
    assert_memory_equal(buf, sdk_answer, n);
}

static void preflight_connection_close(void **state)
{
    static const char want[] = "HTTP/1.1 204 No Content\r\n"
                               "Access-Control-Allow-Origin: *\r\n"
                               "Access-Control-Allow-Methods: POST\r\n"
                               "Access-Control-Allow-Headers: " SDK_HEADERS "\r\n"
                               "Access-Control-Max-Age: 86400\r\n"
                               "Vary: Origin, Access-Control-Request-Headers\r\n"
                               "Connection: close\r\n"
                               "\r\n";
    char buf[1024];
    size_t n;

    (void)state;
    n = cors_preflight_response(buf, sizeof(buf), sdk_preflight, NSDK, 1);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, n);
}

/* No Access-Control-Request-Headers: no Allow-Headers line at all (an empty one would be a
 * different answer). Values are echoed by length, not up to a NUL. */
static void preflight_without_request_headers(void **state)
{
    static const char want[] = "HTTP/1.1 204 No Content\r\n"
                               "Access-Control-Allow-Origin: *\r\n"
                               "Access-Control-Allow-Methods: DELETE\r\n"
                               "Access-Control-Max-Age: 86400\r\n"
                               "Vary: Origin, Access-Control-Request-Headers\r\n"
                               "\r\n";
    const struct hdr h[] = {
        {.name = "access-control-request-method",
         .name_len = 29,
         .value = "DELETEXXX",
         .value_len = 6},
        H("Origin", "https://example.com"),
    };
    char buf[512];
    size_t n;

    (void)state;
    n = cors_preflight_response(buf, sizeof(buf), h, 2, 0);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(buf, want, n);
}

/* The answer needs its length plus a NUL; one byte less and nothing usable was written. */
static void preflight_buffer_too_small(void **state)
{
    const size_t len = sizeof(sdk_answer) - 1;
    char buf[1024];

    (void)state;
    assert_int_equal(cors_preflight_response(buf, len + 1, sdk_preflight, NSDK, 0), len);
    assert_int_equal(cors_preflight_response(buf, len, sdk_preflight, NSDK, 0), 0);
    assert_int_equal(cors_preflight_response(buf, 64, sdk_preflight, NSDK, 0), 0);
    assert_int_equal(cors_preflight_response(buf, 0, sdk_preflight, NSDK, 0), 0);
}

/* Every response ferry writes carries these two fields, each a complete CRLF line. */
static void response_fields(void **state)
{
    static const char fields[] = CORS_RESPONSE_FIELDS;
    const char *expose = strstr(fields, "Access-Control-Expose-Headers: ");
    int lines = 0;

    (void)state;
    assert_int_equal(strncmp(fields, "Access-Control-Allow-Origin: *\r\n", 32), 0);
    assert_non_null(expose);
    assert_ptr_equal(expose, fields + 32);
    assert_non_null(strstr(expose, "x-request-id"));
    assert_non_null(strstr(expose, "retry-after-ms"));
    assert_non_null(strstr(expose, "x-ratelimit-remaining-tokens"));
    assert_string_equal(fields + strlen(fields) - 5, ", *\r\n");
    for (size_t i = 0; fields[i] != '\0'; i++) {
        if (fields[i] == '\n') {
            assert_true(i > 0 && fields[i - 1] == '\r');
            lines++;
        } else if (fields[i] == '\r') {
            assert_int_equal(fields[i + 1], '\n');
        }
    }
    assert_int_equal(lines, 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(is_preflight),
        cmocka_unit_test(preflight_sdk_exact_bytes),
        cmocka_unit_test(preflight_connection_close),
        cmocka_unit_test(preflight_without_request_headers),
        cmocka_unit_test(preflight_buffer_too_small),
        cmocka_unit_test(response_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
