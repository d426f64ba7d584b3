/* test_reply — errors ferry writes itself. An SDK only reports them well when the response is a
 * complete HTTP message whose body is OpenAI's error JSON, so each case parses what came out:
 * status line, fields, Content-Length against the body, and the JSON down to the decoded message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cors.h"
#include "reply.h"

/* ---- a strict little JSON reader, enough to check the error shape ---- */

struct jp {
    const char *p, *end;
};

static void jws(struct jp *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\r' || *j->p == '\n'))
        j->p++;
}

static int jlit(struct jp *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return -1;
    j->p += n;
    return 0;
}

static int hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        *v = *v * 16 + (unsigned)d;
    }
    return 0;
}

/* Decodes a JSON string into out (NUL-terminated, may be NULL to only validate). */
static int jstring(struct jp *j, char *out, size_t cap)
{
    size_t o = 0;

    if (jlit(j, "\"") != 0)
        return -1;
    while (j->p < j->end) {
        unsigned char c = (unsigned char)*j->p++;
        unsigned u;
        if (c == '"') {
            if (out)
                out[o] = '\0';
            return 0;
        }
        if (c < 0x20)
            return -1; /* raw control characters are not allowed in JSON strings */
        if (c == '\\') {
            if (j->p >= j->end)
                return -1;
            c = (unsigned char)*j->p++;
            switch (c) {
            case '"':
            case '\\':
            case '/': break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u':
                if (j->end - j->p < 4 || hex4(j->p, &u) != 0 || u == 0 || u >= 0x80)
                    return -1; /* ferry only needs to escape ASCII control characters */
                j->p += 4;
                c = (unsigned char)u;
                break;
            default: return -1;
            }
        }
        if (out) {
            if (o + 1 >= cap)
                return -1;
            out[o++] = (char)c;
        }
    }
    return -1;
}

static int jvalue(struct jp *j, int depth);

static int jnumber(struct jp *j)
{
    const char *s = j->p;
    if (j->p < j->end && *j->p == '-')
        j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return -1;
    while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || strchr(".eE+-", *j->p)))
        j->p++;
    return j->p > s ? 0 : -1;
}

static int jcontainer(struct jp *j, int depth, char open, char close)
{
    if (depth > 16 || jlit(j, open == '{' ? "{" : "[") != 0)
        return -1;
    jws(j);
    if (j->p < j->end && *j->p == close) {
        j->p++;
        return 0;
    }
    for (;;) {
        jws(j);
        if (open == '{') {
            if (jstring(j, NULL, 0) != 0)
                return -1;
            jws(j);
            if (jlit(j, ":") != 0)
                return -1;
        }
        if (jvalue(j, depth + 1) != 0)
            return -1;
        jws(j);
        if (j->p < j->end && *j->p == ',') {
            j->p++;
            continue;
        }
        return jlit(j, close == '}' ? "}" : "]");
    }
}

static int jvalue(struct jp *j, int depth)
{
    jws(j);
    if (j->p >= j->end)
        return -1;
    switch (*j->p) {
    case '"': return jstring(j, NULL, 0);
    case '{': return jcontainer(j, depth, '{', '}');
    case '[': return jcontainer(j, depth, '[', ']');
    case 't': return jlit(j, "true");
    case 'f': return jlit(j, "false");
    case 'n': return jlit(j, "null");
    default: return jnumber(j);
    }
}

struct api_error {
    char message[2048];
    char type[64];
    char code[64];
    int param_null;
};

/* Skips whitespace, then expects lit. */
static int jnext(struct jp *j, const char *lit)
{
    jws(j);
    return jlit(j, lit);
}

/* Reads `"key" :` into key. */
static int jkey(struct jp *j, char *key, size_t cap)
{
    jws(j);
    if (jstring(j, key, cap) != 0)
        return -1;
    return jnext(j, ":");
}

/* Accepts exactly {"error":{"message":str,"type":str,"param":null,"code":str}} (any order,
 * whitespace allowed, nothing missing, nothing repeated, nothing extra), after checking that the
 * whole body is one JSON value. */
static int parse_api_error(const char *body, size_t len, struct api_error *e)
{
    struct jp j = {body, body + len};
    char key[64];
    int seen = 0;

    memset(e, 0, sizeof(*e));
    if (jvalue(&j, 0) != 0)
        return -1;
    jws(&j);
    if (j.p != j.end)
        return -1; /* trailing garbage */
    j.p = body;
    if (jnext(&j, "{") != 0 || jkey(&j, key, sizeof(key)) != 0 || strcmp(key, "error") != 0 ||
        jnext(&j, "{") != 0)
        return -1;
    do {
        int bit, rc;
        if (jkey(&j, key, sizeof(key)) != 0)
            return -1;
        jws(&j);
        if (strcmp(key, "message") == 0) {
            bit = 1;
            rc = jstring(&j, e->message, sizeof(e->message));
        } else if (strcmp(key, "type") == 0) {
            bit = 2;
            rc = jstring(&j, e->type, sizeof(e->type));
        } else if (strcmp(key, "code") == 0) {
            bit = 4;
            rc = jstring(&j, e->code, sizeof(e->code));
        } else if (strcmp(key, "param") == 0) {
            bit = 8;
            rc = jlit(&j, "null");
            e->param_null = rc == 0;
        } else {
            return -1;
        }
        if (rc != 0 || (seen & bit) != 0)
            return -1;
        seen |= bit;
    } while (jnext(&j, ",") == 0);
    if (jlit(&j, "}") != 0 || jnext(&j, "}") != 0)
        return -1;
    return seen == 15 ? 0 : -1;
}

/* ---- the HTTP side ---- */

struct response {
    int status;
    char reason[64];
    const char *head; /* status line .. blank line */
    size_t head_len;
    const char *body;
    size_t body_len;
    long content_length; /* -1 when absent */
    int fields;
    int connection_close;
};

/* Returns 0 when buf[0..n) is one complete HTTP/1.1 response: status line, CRLF-terminated
 * "name: value" fields, a blank line, and exactly Content-Length body bytes (head_only: none). */
static int parse_response(const char *buf, size_t n, int head_only, struct response *r)
{
    const char *end = buf + n, *line, *eol;
    int consumed = 0;

    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    if (memchr(buf, '\0', n) != NULL)
        return -1;
    if (sscanf(buf, "HTTP/1.1 %3d %63[^\r\n]%n", &r->status, r->reason, &consumed) != 2 ||
        consumed <= 0 || buf + consumed + 2 > end || memcmp(buf + consumed, "\r\n", 2) != 0)
        return -1;
    line = buf + consumed + 2;
    for (;;) {
        const char *colon;
        eol = line;
        while (eol + 1 < end && !(eol[0] == '\r' && eol[1] == '\n'))
            eol++;
        if (eol + 1 >= end)
            return -1; /* unterminated */
        if (eol == line)
            break;
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line || memchr(line, '\n', (size_t)(eol - line)) ||
            memchr(line, '\r', (size_t)(eol - line)))
            return -1;
        r->fields++;
        if ((size_t)(colon - line) == 14 && strncmp(line, "Content-Length", 14) == 0) {
            char *e;
            if (r->content_length >= 0)
                return -1; /* duplicate */
            r->content_length = strtol(colon + 1, &e, 10);
            if (e != eol || colon[1] != ' ')
                return -1;
        }
        if (eol - line == 17 && strncmp(line, "Connection: close", 17) == 0)
            r->connection_close = 1;
        line = eol + 2;
    }
    r->head = buf;
    r->head_len = (size_t)(eol + 2 - buf);
    r->body = eol + 2;
    r->body_len = (size_t)(end - r->body);
    if (r->content_length < 0)
        return -1;
    if (head_only)
        return r->body_len == 0 ? 0 : -1;
    return (size_t)r->content_length == r->body_len ? 0 : -1;
}

static int head_has(const struct response *r, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = r->head; p + n <= r->head + r->head_len; p++)
        if (p > r->head && p[-1] == '\n' && memcmp(p, line, n) == 0)
            return 1;
    return 0;
}

/* ---- tests ---- */

#define TYPICAL_BODY                                                                               \
    "{\"error\":{\"message\":\"malformed request line\",\"type\":\"invalid_request_error\","       \
    "\"param\":null,\"code\":\"bad_request\"}}\n"

static void reply_exact_bytes(void **state)
{
    char want[2048], buf[2048];
    int wlen = snprintf(want, sizeof(want),
                        "HTTP/1.1 400 Bad Request\r\n"
                        "Content-Type: application/json\r\n"
                        "Content-Length: %zu\r\n" CORS_RESPONSE_FIELDS "Connection: close\r\n"
                        "\r\n" TYPICAL_BODY,
                        sizeof(TYPICAL_BODY) - 1);
    size_t n;

    (void)state;
    n = reply_error(buf, sizeof(buf), 400, "invalid_request_error", "bad_request",
                    "malformed request line", 1, 0);
    assert_int_equal(n, (size_t)wlen);
    assert_memory_equal(buf, want, n);
}

struct reply_case {
    int status;
    const char *reason;
    const char *type;
    const char *code;
    const char *message;
    int close;
};

static const struct reply_case reply_cases[] = {
    {400, "Bad Request", "invalid_request_error", "bad_request", "bare CR in request head", 1},
    {405, "Method Not Allowed", "invalid_request_error", "method_not_allowed",
     "CONNECT is not supported by this relay", 1},
    {408, "Request Timeout", "invalid_request_error", "request_timeout", "request head timeout", 1},
    {413, "Content Too Large", "invalid_request_error", "request_too_large",
     "request body too large", 0},
    {414, "URI Too Long", "invalid_request_error", "request_line_too_long", "request line too long",
     1},
    {431, "Request Header Fields Too Large", "invalid_request_error", "headers_too_large",
     "request header fields too large", 1},
    {502, "Bad Gateway", "relay_error", "upstream_unavailable",
     "upstream connection failed: Connection refused", 0},
    {503, "Service Unavailable", "relay_error", "relay_unavailable", "shutting down", 1},
    {504, "Gateway Timeout", "relay_error", "upstream_timeout",
     "no response from upstream within 600000 ms", 0},
    {500, "Internal Server Error", "relay_error", "relay_error", "", 0},
};

static void check_reply(const struct reply_case *c, int head_only)
{
    char buf[2048];
    struct response r;
    struct api_error e;
    size_t n =
        reply_error(buf, sizeof(buf), c->status, c->type, c->code, c->message, c->close, head_only);

    if (n == 0 || n >= sizeof(buf) || parse_response(buf, n, head_only, &r) != 0)
        fail_msg("[%d %s] not a complete response: %.*s", c->status, c->message, (int)n, buf);
    assert_int_equal(r.status, c->status);
    assert_string_equal(r.reason, c->reason);
    assert_true(head_has(&r, "Content-Type: application/json\r\n"));
    assert_true(head_has(&r, "Access-Control-Allow-Origin: *\r\n"));
    assert_true(head_has(&r, CORS_RESPONSE_FIELDS));
    assert_int_equal(r.connection_close, c->close);
    assert_int_equal(r.fields, 4 + c->close); /* type, length, the two CORS fields, close */
    if (head_only)
        return;
    if (parse_api_error(r.body, r.body_len, &e) != 0)
        fail_msg("[%d] body is not OpenAI's error JSON: %.*s", c->status, (int)r.body_len, r.body);
    assert_string_equal(e.message, c->message);
    assert_string_equal(e.type, c->type);
    assert_string_equal(e.code, c->code);
    assert_int_equal(e.param_null, 1);
}

static void reply_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++)
        check_reply(&reply_cases[i], 0);
}

/* HEAD gets the same head, the same Content-Length, and no body. */
static void reply_head_only(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
        const struct reply_case *c = &reply_cases[i];
        char full[2048], head[2048];
        struct response rf, rh;
        size_t nf =
            reply_error(full, sizeof(full), c->status, c->type, c->code, c->message, c->close, 0);
        size_t nh =
            reply_error(head, sizeof(head), c->status, c->type, c->code, c->message, c->close, 1);

        check_reply(c, 1);
        assert_int_equal(parse_response(full, nf, 0, &rf), 0);
        assert_int_equal(parse_response(head, nh, 1, &rh), 0);
        assert_int_equal(nh, rf.head_len);
        assert_memory_equal(head, full, nh);
        assert_int_equal(rh.content_length, (long)rf.body_len);
        assert_true(rh.content_length > 0);
    }
}

struct escape_case {
    const char *message;
    const char *json; /* how it must appear between the quotes */
};

static const struct escape_case escape_cases[] = {
    {"plain text", "plain text"},
    {"say \"hi\"", "say \\\"hi\\\""},
    {"C:\\path\\", "C:\\\\path\\\\"},
    {"line\nbreak\ttab\rcr", "line\\u000abreak\\u0009tab\\u000dcr"},
    {"\x01\x1f", "\\u0001\\u001f"},
    {"\x7f del is allowed raw", "\x7f del is allowed raw"},
    {"caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9 \xe2\x9c\x93"},
    {"</script><!--", "</script><!--"},
    {"\"}}, \"injected\": {\"x", "\\\"}}, \\\"injected\\\": {\\\"x"},
};

static void reply_escapes_message(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(escape_cases) / sizeof(escape_cases[0]); i++) {
        const struct escape_case *c = &escape_cases[i];
        char buf[2048], want[512];
        struct response r;
        struct api_error e;
        size_t n = reply_error(buf, sizeof(buf), 400, "invalid_request_error", "bad_request",
                               c->message, 0, 0);

        assert_int_equal(parse_response(buf, n, 0, &r), 0);
        snprintf(want, sizeof(want), "{\"error\":{\"message\":\"%s\",", c->json);
        if (r.body_len < strlen(want) || memcmp(r.body, want, strlen(want)) != 0)
            fail_msg("message %zu escaped as %.*s, want %s", i, (int)r.body_len, r.body, want);
        if (parse_api_error(r.body, r.body_len, &e) != 0)
            fail_msg("message %zu: body is not valid error JSON: %.*s", i, (int)r.body_len, r.body);
        assert_string_equal(e.message, c->message);
    }
}

/* Every ASCII control character, in one message, survives the round trip. */
static void reply_escapes_all_controls(void **state)
{
    char msg[40], buf[2048];
    struct response r;
    struct api_error e;
    size_t n;

    (void)state;
    for (int c = 1; c < 0x20; c++)
        msg[c - 1] = (char)c;
    msg[31] = '\0';
    n = reply_error(buf, sizeof(buf), 400, "invalid_request_error", "bad_request", msg, 0, 0);
    assert_int_equal(parse_response(buf, n, 0, &r), 0);
    assert_int_equal(parse_api_error(r.body, r.body_len, &e), 0);
    assert_string_equal(e.message, msg);
}

/* A long message is cut, never the response: the result still parses, fits the 2048-byte buffers
 * conn.c and relay.c use, and the message is a prefix of what was asked. */
static void reply_long_message_truncated(void **state)
{
    static const char fill[] = {'x', '"', '\\', '\n'};

    (void)state;
    for (size_t f = 0; f < sizeof(fill); f++) {
        char msg[3001], buf[2048];
        struct response r;
        struct api_error e;
        size_t n, got;

        memset(msg, fill[f], sizeof(msg) - 1);
        msg[sizeof(msg) - 1] = '\0';
        n = reply_error(buf, sizeof(buf), 502, "relay_error", "upstream_unavailable", msg, 1, 0);
        if (parse_response(buf, n, 0, &r) != 0)
            fail_msg("fill 0x%02x: not a complete response", fill[f]);
        if (parse_api_error(r.body, r.body_len, &e) != 0)
            fail_msg("fill 0x%02x: body is not valid error JSON: %.*s", fill[f], (int)r.body_len,
                     r.body);
        got = strlen(e.message);
        assert_true(got > 0);
        assert_true(got < sizeof(msg) - 1);
        assert_memory_equal(e.message, msg, got);
        assert_string_equal(e.code, "upstream_unavailable");
    }
}

/* reply.h: "Writes a complete error response ... (truncates the message to fit)". A buffer too
 * small for the whole response must not yield a cut-off one whose Content-Length promises bytes
 * that never come (the client would wait for them), nor a length beyond the buffer. */
static void reply_small_buffer_never_broken(void **state)
{
    static const size_t caps[] = {0, 1, 64, 400, 600, 700};
    char msg[301];
    int bad = 0;

    (void)state;
    memset(msg, 'm', sizeof(msg) - 1);
    msg[sizeof(msg) - 1] = '\0';
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        char buf[1024];
        struct response r;
        size_t n =
            reply_error(buf, caps[i], 400, "invalid_request_error", "bad_request", msg, 1, 0);

        if (n == 0)
            continue;
        if (n >= caps[i]) {
            print_error("FAIL cap %zu: returned %zu, beyond the buffer\n", caps[i], n);
            bad++;
        } else if (parse_response(buf, n, 0, &r) != 0) {
            print_error("FAIL cap %zu: returned %zu bytes that are not a complete response "
                        "(Content-Length %ld, %zu body bytes)\n",
                        caps[i], n, r.content_length, r.body_len);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

struct reason_case {
    int status;
    const char *reason;
};

static const struct reason_case reasons[] = {
    {100, "Continue"},
    {200, "OK"},
    {204, "No Content"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {417, "Expectation Failed"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {418, "Unknown"},
    {0, "Unknown"},
    {-400, "Unknown"},
    {999, "Unknown"},
};

static void reason_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
        if (strcmp(reply_reason(reasons[i].status), reasons[i].reason) != 0)
            fail_msg("reply_reason(%d) = \"%s\", want \"%s\"", reasons[i].status,
                     reply_reason(reasons[i].status), reasons[i].reason);
}

static void kind_table(void **state)
{
    static const struct {
        int status;
        const char *type, *code;
    } kinds[] = {
        {400, "invalid_request_error", "bad_request"},
        {405, "invalid_request_error", "method_not_allowed"},
        {408, "invalid_request_error", "request_timeout"},
        {413, "invalid_request_error", "request_too_large"},
        {414, "invalid_request_error", "request_line_too_long"},
        {417, "invalid_request_error", "expectation_failed"},
        {431, "invalid_request_error", "headers_too_large"},
        {404, "invalid_request_error", "no_route"},
        {500, "relay_error", "relay_error"},
        {502, "relay_error", "upstream_unavailable"},
        {503, "relay_error", "relay_unavailable"},
        {504, "relay_error", "upstream_timeout"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const char *type = NULL, *code = NULL;
        reply_kind(kinds[i].status, &type, &code);
        assert_non_null(type);
        assert_non_null(code);
        if (strcmp(type, kinds[i].type) != 0 || strcmp(code, kinds[i].code) != 0)
            fail_msg("reply_kind(%d) = %s/%s, want %s/%s", kinds[i].status, type, code,
                     kinds[i].type, kinds[i].code);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reply_exact_bytes),
        cmocka_unit_test(reply_table),
        cmocka_unit_test(reply_head_only),
        cmocka_unit_test(reply_escapes_message),
        cmocka_unit_test(reply_escapes_all_controls),
        cmocka_unit_test(reply_long_message_truncated),
        cmocka_unit_test(reply_small_buffer_never_broken),
        cmocka_unit_test(reason_table),
        cmocka_unit_test(kind_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
