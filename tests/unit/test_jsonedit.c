/* test_jsonedit — the request edit that makes a streamed chat completion report its usage. Each
 * case is a request body and the exact bytes the provider must receive: every byte but the edit
 * is the client's. Bodies ferry must not touch (malformed, not streamed, already asking, decoys
 * in strings and nested objects) come back with out untouched, and every edited body is valid
 * JSON that needs no second edit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jsonedit.h"
#include "usage.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define OPT "\"stream_options\":{\"include_usage\":true},"

enum outcome { EDITED, UNCHANGED, REFUSED };

struct edit_case {
    const char *name;
    const char *body;
    size_t len;
    enum outcome want;
    const char *out; /* for EDITED */
    size_t out_len;
};

/* clang-format off */
#define EDIT(nm, b, o)                                                                             \
    {.name = nm, .body = b, .len = sizeof(b) - 1, .want = EDITED, .out = o,                        \
     .out_len = sizeof(o) - 1}
#define KEEP(nm, b) {.name = nm, .body = b, .len = sizeof(b) - 1, .want = UNCHANGED}
#define REFUSE(nm, b) {.name = nm, .body = b, .len = sizeof(b) - 1, .want = REFUSED}
/* clang-format on */

static const struct edit_case cases[] = {
    /* no stream_options: inserted first */
    EDIT("SDK request",
         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"model\":\"gpt-4o-mini\","
         "\"stream\":true}",
         "{" OPT "\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"model\":\"gpt-4o-mini\","
         "\"stream\":true}"),
    EDIT("pretty-printed", "{\n  \"model\": \"x\",\n  \"stream\": true\n}\n",
         "{" OPT "\n  \"model\": \"x\",\n  \"stream\": true\n}\n"),
    EDIT("whitespace around the object", " \r\n\t{\"stream\":true} \n",
         " \r\n\t{" OPT "\"stream\":true} \n"),
    EDIT("stream first", "{\"stream\":true,\"model\":\"m\"}", "{" OPT "\"stream\":true,\"model\":\"m\"}"),
    EDIT("escaped stream key", "{\"str\\u0065am\":true}", "{" OPT "\"str\\u0065am\":true}"),
    EDIT("escapes and nesting elsewhere",
         "{\"messages\":[{\"content\":\"a \\\"stream\\\": false, \\\\\\\"\\u00e9\\n\"}],"
         "\"tools\":[{\"function\":{\"parameters\":{\"type\":\"object\",\"properties\":{\"stream\":"
         "{\"type\":\"boolean\"}}}}}],\"stream\":true,\"n\":-1.5e+3}",
         "{" OPT "\"messages\":[{\"content\":\"a \\\"stream\\\": false, \\\\\\\"\\u00e9\\n\"}],"
         "\"tools\":[{\"function\":{\"parameters\":{\"type\":\"object\",\"properties\":{\"stream\":"
         "{\"type\":\"boolean\"}}}}}],\"stream\":true,\"n\":-1.5e+3}"),
    EDIT("stream_options only nested elsewhere",
         "{\"stream\":true,\"metadata\":{\"stream_options\":{\"include_usage\":true}},"
         "\"x\":[{\"stream_options\":null}]}",
         "{" OPT "\"stream\":true,\"metadata\":{\"stream_options\":{\"include_usage\":true}},"
         "\"x\":[{\"stream_options\":null}]}"),
    EDIT("the last stream counts", "{\"stream\":false,\"stream\":true}",
         "{" OPT "\"stream\":false,\"stream\":true}"),

    /* stream_options: null */
    EDIT("stream_options null", "{\"stream\":true,\"stream_options\":null}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}"),
    EDIT("stream_options null, spaced", "{ \"stream_options\" : null , \"stream\" : true }",
         "{ \"stream_options\" : {\"include_usage\":true} , \"stream\" : true }"),

    /* stream_options without include_usage */
    EDIT("stream_options with another member",
         "{\"stream\":true,\"stream_options\":{\"include_obfuscation\":false}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true,"
         "\"include_obfuscation\":false}}"),
    EDIT("stream_options empty", "{\"stream\":true,\"stream_options\":{}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}"),
    EDIT("stream_options empty, spaced", "{\"stream\":true,\"stream_options\":{ \n }}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true \n }}"),
    EDIT("include_usage nested deeper is not it",
         "{\"stream\":true,\"stream_options\":{\"x\":{\"include_usage\":true}}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"x\":{\"include_usage\":"
         "true}}}"),

    /* include_usage false or null */
    EDIT("include_usage false", "{\"stream\":true,\"stream_options\":{\"include_usage\":false}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}"),
    EDIT("include_usage false, spaced",
         "{\"stream\":true,\"stream_options\":{ \"include_usage\" : false , \"a\":1}}",
         "{\"stream\":true,\"stream_options\":{ \"include_usage\" : true , \"a\":1}}"),
    EDIT("include_usage null", "{\"stream_options\":{\"include_usage\":null},\"stream\":true}",
         "{\"stream_options\":{\"include_usage\":true},\"stream\":true}"),
    EDIT("escaped include_usage key",
         "{\"stream\":true,\"stream_options\":{\"include\\u005fusage\":false}}",
         "{\"stream\":true,\"stream_options\":{\"include\\u005fusage\":true}}"),

    /* duplicates: the last one counts and is the one edited */
    EDIT("the last stream_options counts",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stream_options\":{}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stream_options\":"
         "{\"include_usage\":true}}"),
    EDIT("the last include_usage counts",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"include_usage\":false}}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true,\"include_usage\":true}}"),
    EDIT("an include_usage in an earlier stream_options does not count",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stream_options\":null}",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":true},\"stream_options\":"
         "{\"include_usage\":true}}"),

    /* nothing to do */
    KEEP("already asking", "{\"stream\":true,\"stream_options\":{\"include_usage\":true}}"),
    KEEP("already asking, escaped",
         "{\"stream\":true,\"stream\\u005foptions\":{\"include_usage\":true}}"),
    KEEP("last include_usage true",
         "{\"stream\":true,\"stream_options\":{\"include_usage\":false,\"include_usage\":true}}"),
    KEEP("last stream_options asks",
         "{\"stream\":true,\"stream_options\":null,\"stream_options\":{\"include_usage\":true}}"),
    KEEP("not streamed", "{\"model\":\"m\",\"messages\":[]}"),
    KEEP("stream false", "{\"stream\":false}"),
    KEEP("the last stream is false", "{\"stream\":true,\"stream\":false}"),
    KEEP("stream null", "{\"stream\":null}"),
    KEEP("stream as a string", "{\"stream\":\"true\"}"),
    KEEP("stream as a number", "{\"stream\":1}"),
    KEEP("stream nested", "{\"metadata\":{\"stream\":true},\"x\":[{\"stream\":true}]}"),
    KEEP("stream in a string", "{\"messages\":[{\"content\":\"\\\"stream\\\":true\"}]}"),
    KEEP("stream as a value", "{\"key\":\"stream\",\"v\":true}"),
    KEEP("near keys", "{\"Stream\":true,\"streams\":true,\"strea\":true,\"stream \":true}"),
    KEEP("empty object", "{}"),
    KEEP("not streamed, odd stream_options", "{\"stream\":false,\"stream_options\":\"x\"}"),

    /* refused: the body goes as it is */
    REFUSE("empty", ""),
    REFUSE("whitespace", " \n"),
    REFUSE("array", "[{\"stream\":true}]"),
    REFUSE("string", "\"{\\\"stream\\\":true}\""),
    REFUSE("number", "1"),
    REFUSE("unterminated", "{\"stream\":true"),
    REFUSE("unterminated string", "{\"stream\":true,\"a\":\"x}"),
    REFUSE("trailing comma", "{\"stream\":true,}"),
    REFUSE("trailing comma in an array", "{\"stream\":true,\"a\":[1,]}"),
    REFUSE("missing colon", "{\"stream\" true}"),
    REFUSE("missing comma", "{\"stream\":true \"a\":1}"),
    REFUSE("single quotes", "{'stream':true}"),
    REFUSE("bare key", "{stream:true}"),
    REFUSE("leading zero", "{\"stream\":true,\"n\":01}"),
    REFUSE("bare minus", "{\"stream\":true,\"n\":-}"),
    REFUSE("dot without digits", "{\"stream\":true,\"n\":1.}"),
    REFUSE("exponent without digits", "{\"stream\":true,\"n\":1e+}"),
    REFUSE("plus sign", "{\"stream\":true,\"n\":+1}"),
    REFUSE("truncated literal", "{\"stream\":tru}"),
    REFUSE("capital literal", "{\"stream\":True}"),
    REFUSE("control byte in a string", "{\"stream\":true,\"a\":\"x\ty\"}"),
    REFUSE("bad escape", "{\"stream\":true,\"a\":\"\\q\"}"),
    REFUSE("bad unicode escape", "{\"stream\":true,\"a\":\"\\u12g4\"}"),
    REFUSE("short unicode escape", "{\"stream\":true,\"a\":\"\\u12\"}"),
    REFUSE("escape at the end", "{\"stream\":true,\"a\":\"\\"),
    REFUSE("trailing garbage", "{\"stream\":true} x"),
    REFUSE("two documents", "{\"stream\":true}{}"),
    REFUSE("mismatched close", "{\"stream\":true,\"a\":[1}}"),
    REFUSE("extra close", "{\"stream\":true}}"),
    REFUSE("NUL byte", "{\"stream\":true}\0"),
    REFUSE("byte order mark", "\xef\xbb\xbf{\"stream\":true}"),
    REFUSE("stream_options a string", "{\"stream\":true,\"stream_options\":\"x\"}"),
    REFUSE("stream_options true", "{\"stream\":true,\"stream_options\":true}"),
    REFUSE("stream_options an array", "{\"stream\":true,\"stream_options\":[]}"),
    REFUSE("include_usage a number",
           "{\"stream\":true,\"stream_options\":{\"include_usage\":1}}"),
    REFUSE("include_usage a string",
           "{\"stream\":true,\"stream_options\":{\"include_usage\":\"true\"}}"),
    REFUSE("include_usage an object",
           "{\"stream\":true,\"stream_options\":{\"include_usage\":{}}}"),
};

static void run_case(const struct edit_case *c)
{
    char out[4096];
    size_t out_len = 12345;
    int injected = -1, rc;

    memset(out, 0xa5, sizeof(out));
    rc = jsonedit_stream_include_usage(c->body, c->len, out, sizeof(out), &out_len, &injected);
    switch (c->want) {
    case EDITED:
        if (rc != 0 || injected != 1 || out_len != c->out_len ||
            memcmp(out, c->out, out_len) != 0) {
            print_error("%s: rc %d injected %d\n got [%.*s]\nwant [%s]\n", c->name, rc, injected,
                        rc == 0 ? (int)out_len : 0, out, c->out);
            fail();
        }
        assert_true(out_len <= c->len + JSONEDIT_GROWTH);
        assert_int_equal((unsigned char)out[out_len], 0xa5); /* nothing written past out_len */
        return;
    case UNCHANGED:
        if (rc != 0 || injected != 0) {
            print_error("%s: rc %d injected %d, want 0 0\n", c->name, rc, injected);
            fail();
        }
        break;
    case REFUSED:
        if (rc != -1 || injected != 0) {
            print_error("%s: rc %d injected %d, want -1 0\n", c->name, rc, injected);
            fail();
        }
        break;
    }
    assert_int_equal(out_len, 12345); /* out and out_len are left alone */
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal((unsigned char)out[i], 0xa5);
}

static void table(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++)
        run_case(&cases[i]);
}

/* An edited body needs no second edit, and is one whole JSON document (the usage tap's scanner,
 * written separately, agrees). */
static void edited_is_final_and_valid(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct edit_case *c = &cases[i];
        char again[4096];
        size_t n = 0;
        int injected = -1;
        struct usage u;

        if (c->want != EDITED)
            continue;
        assert_int_equal(
            jsonedit_stream_include_usage(c->out, c->out_len, again, sizeof(again), &n, &injected),
            0);
        if (injected != 0) {
            print_error("%s: edited again\n", c->name);
            fail();
        }
        usage_init(&u, USAGE_CHAT, 0);
        usage_feed(&u, c->out, c->out_len);
        if (!u.complete) {
            print_error("%s: the edited body is not one JSON document\n", c->name);
            fail();
        }
    }
}

/* Bodies the tap reads as one whole JSON object are the bodies the editor accepts. */
static void agrees_with_the_tap_on_validity(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct edit_case *c = &cases[i];
        char out[4096];
        size_t n;
        int injected, rc;
        struct usage u;
        size_t k = 0;

        if (c->want == REFUSED && strstr(c->name, "stream_options") == NULL &&
            strstr(c->name, "include_usage") == NULL) {
            usage_init(&u, USAGE_CHAT, 0);
            usage_feed(&u, c->body, c->len);
            while (k < c->len && strchr(" \t\r\n", c->body[k]) != NULL)
                k++;
            if (u.complete && k < c->len && c->body[k] == '{') {
                print_error("%s: refused, but the tap reads a whole object\n", c->name);
                fail();
            }
        }
        rc = jsonedit_stream_include_usage(c->body, c->len, out, sizeof(out), &n, &injected);
        if (rc == 0) {
            usage_init(&u, USAGE_CHAT, 0);
            usage_feed(&u, c->body, c->len);
            if (!u.complete) {
                print_error("%s: accepted, but the tap does not read a whole document\n", c->name);
                fail();
            }
        }
    }
}

/* The output buffer: exactly len + the edit fits; one byte less is a refusal, out untouched. */
static void output_bound(void **state)
{
    static const char body[] = "{\"model\":\"m\",\"stream\":true}";
    static const char want[] = "{" OPT "\"model\":\"m\",\"stream\":true}";
    char out[sizeof(want)];
    size_t n = 0;
    int injected = -1;

    assert_int_equal(sizeof(want) - sizeof(body), JSONEDIT_GROWTH);
    memset(out, 'z', sizeof(out));
    assert_int_equal(jsonedit_stream_include_usage(body, sizeof(body) - 1, out,
                                                   sizeof(want) - 2, &n, &injected),
                     -1);
    assert_int_equal(injected, 0);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(out[i], 'z');
    assert_int_equal(jsonedit_stream_include_usage(body, sizeof(body) - 1, out,
                                                   sizeof(want) - 1, &n, &injected),
                     0);
    assert_int_equal(injected, 1);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, n);
    assert_int_equal(out[n], 'z');
}

/* The body's length is given, not found: bytes past it are not read, and no NUL is needed. */
static void length_not_nul(void **state)
{
    static const char body[] = "{\"stream\":true}garbage";
    char out[128];
    size_t n = 0;
    int injected = 0;

    assert_int_equal(jsonedit_stream_include_usage(body, 15, out, sizeof(out), &n, &injected), 0);
    assert_int_equal(injected, 1);
    assert_int_equal(n, 15 + JSONEDIT_GROWTH);
    assert_memory_equal(out, "{" OPT "\"stream\":true}", n);
}

/* A megabyte of messages and schemas nested to the limit: edited; one level more: refused. */
static void big_and_deep(void **state)
{
    enum { BIG = 1 << 20 };
    char *body = malloc(BIG + 4 * JSONEDIT_DEPTH_MAX + 256), *out;
    size_t n = 0, out_len = 0;
    int injected = 0;

    assert_non_null(body);
    out = malloc(BIG + 4 * JSONEDIT_DEPTH_MAX + 256 + JSONEDIT_GROWTH);
    assert_non_null(out);
    n = (size_t)sprintf(body, "{\"messages\":[{\"role\":\"user\",\"content\":\"");
    for (size_t i = 0; i < BIG; i++)
        body[n++] = "stream\\\"true "[i % 13];
    body[n - 1] = ' ';
    n += (size_t)sprintf(body + n, "\"}],\"deep\":");
    for (int i = 0; i < JSONEDIT_DEPTH_MAX - 1; i++) /* the top-level object is one level */
        body[n++] = '[';
    for (int i = 0; i < JSONEDIT_DEPTH_MAX - 1; i++)
        body[n++] = ']';
    n += (size_t)sprintf(body + n, ",\"stream\":true}");
    assert_int_equal(jsonedit_stream_include_usage(body, n, out, n + JSONEDIT_GROWTH, &out_len,
                                                   &injected),
                     0);
    assert_int_equal(injected, 1);
    assert_int_equal(out_len, n + JSONEDIT_GROWTH);
    assert_memory_equal(out + 1 + JSONEDIT_GROWTH, body + 1, n - 1);

    /* one level deeper */
    n = (size_t)sprintf(body, "{\"deep\":");
    for (int i = 0; i < JSONEDIT_DEPTH_MAX; i++)
        body[n++] = '[';
    for (int i = 0; i < JSONEDIT_DEPTH_MAX; i++)
        body[n++] = ']';
    n += (size_t)sprintf(body + n, ",\"stream\":true}");
    assert_int_equal(jsonedit_stream_include_usage(body, n, out, n + JSONEDIT_GROWTH, &out_len,
                                                   &injected),
                     -1);
    assert_int_equal(injected, 0);
    free(body);
    free(out);
}

/* Every prefix of a valid body is refused (a body cut short is never edited), and no prefix
 * makes the scanner read past its end (ASan sees exact-size copies). */
static void every_prefix_refused(void **state)
{
    for (size_t i = 0; i < COUNT(cases); i++) {
        const struct edit_case *c = &cases[i];
        size_t end = c->len;
        if (c->want == REFUSED)
            continue;
        while (end > 0 && strchr(" \t\r\n", c->body[end - 1]) != NULL)
            end--; /* prefixes from here on are the whole object, only whitespace cut */
        for (size_t len = 0; len < end; len++) {
            char *copy = malloc(len ? len : 1), out[4096];
            size_t n;
            int injected = -1, rc;
            assert_non_null(copy);
            memcpy(copy, c->body, len);
            rc = jsonedit_stream_include_usage(copy, len, out, sizeof(out), &n, &injected);
            free(copy);
            if (rc != -1 || injected != 0) {
                print_error("%s: prefix of %zu bytes accepted\n", c->name, len);
                fail();
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table),
        cmocka_unit_test(edited_is_final_and_valid),
        cmocka_unit_test(agrees_with_the_tap_on_validity),
        cmocka_unit_test(output_bound),
        cmocka_unit_test(length_not_nul),
        cmocka_unit_test(big_and_deep),
        cmocka_unit_test(every_prefix_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
