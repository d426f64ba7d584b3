/* mock_json — output buffer, JSON string escaping and a tiny member lookup for the mock upstream.
 * The reader skips values by structure only (it does not validate string contents or numbers): the
 * mock reads a handful of fields from request bodies the tests wrote, and falls back to defaults.
 */
#include "mock_json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_DEPTH_MAX 64

void mbuf_free(struct mbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static void mbuf_reserve(struct mbuf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        abort(); /* a test tool: no partial answers on OOM */
    b->data = p;
    b->cap = cap;
}

void mbuf_add(struct mbuf *b, const void *p, size_t n)
{
    mbuf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0'; /* always a C string too, for strtol and friends */
}

void mbuf_str(struct mbuf *b, const char *s)
{
    mbuf_add(b, s, strlen(s));
}

void mbuf_printf(struct mbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    mbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mbuf_json_str(struct mbuf *b, const char *s, size_t n)
{
    mbuf_reserve(b, n + 2);
    mbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char esc[2] = {'\\', (char)ch};
            mbuf_add(b, esc, 2);
        } else if (ch < 0x20 || ch >= 0x7f) {
            mbuf_printf(b, "\\u%04x", ch);
        } else {
            mbuf_add(b, &s[i], 1);
        }
    }
    mbuf_add(b, "\"", 1);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static const char *skip_string(const char *p, const char *end)
{
    if (p >= end || *p != '"')
        return NULL;
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* Skips one value starting at p (no leading whitespace); returns the first byte after it, or NULL.
 */
static const char *skip_value(const char *p, const char *end, int depth)
{
    if (p >= end || depth > JSON_DEPTH_MAX)
        return NULL;
    if (*p == '"')
        return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = skip_ws(p + 1, end);
        if (p < end && *p == close)
            return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_string(p, end);
                if (!p)
                    return NULL;
                p = skip_ws(p, end);
                if (p >= end || *p != ':')
                    return NULL;
                p = skip_ws(p + 1, end);
            }
            p = skip_value(p, end, depth + 1);
            if (!p)
                return NULL;
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            return p < end && *p == close ? p + 1 : NULL;
        }
    }
    const char *start = p; /* number or literal */
    while (p < end && strchr("+-.0123456789eEtruefalsn", *p))
        p++;
    return p > start ? p : NULL;
}

bool json_member(const char *text, size_t len, const char *key, struct jval *out)
{
    const char *end = text + len;
    const char *p = skip_ws(text, end);
    size_t klen = strlen(key);
    if (p >= end || *p != '{')
        return false;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        const char *k = p;
        p = skip_string(p, end);
        if (!p)
            return false;
        bool match = (size_t)(p - k) == klen + 2 && memcmp(k + 1, key, klen) == 0;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return false;
        const char *v = skip_ws(p + 1, end);
        p = skip_value(v, end, 1);
        if (!p)
            return false;
        if (match) {
            out->p = v;
            out->len = (size_t)(p - v);
            return true;
        }
        p = skip_ws(p, end);
        if (p >= end || *p != ',')
            return false;
        p = skip_ws(p + 1, end);
    }
    return false;
}

bool json_is_true(struct jval v)
{
    return v.len == 4 && memcmp(v.p, "true", 4) == 0;
}

bool json_is_string(struct jval v)
{
    return v.len >= 2 && v.p[0] == '"';
}

bool json_string_eq(struct jval v, const char *s)
{
    size_t n = strlen(s);
    return json_is_string(v) && v.len == n + 2 && memcmp(v.p + 1, s, n) == 0;
}

int json_array_count(struct jval v)
{
    const char *p = v.p, *end = v.p + v.len;
    if (v.len < 2 || *p != '[')
        return -1;
    p = skip_ws(p + 1, end);
    if (p < end && *p == ']')
        return 0;
    int n = 0;
    while (p && p < end) {
        p = skip_value(p, end, 1);
        n++;
        if (!p)
            return -1;
        p = skip_ws(p, end);
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
        else
            break;
    }
    return n;
}
