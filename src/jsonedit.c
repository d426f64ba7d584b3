/* jsonedit — in-place JSON edits (see jsonedit.h). One strict pass over the whole body with a bit
 * stack of container types records where the members that matter are; the edit is then a single
 * insertion or replacement at a recorded offset. */
#include "jsonedit.h"

#include <string.h>

/* Types of a recorded value. */
enum vtype { V_NONE, V_TRUE, V_FALSE, V_NULL, V_OBJECT, V_OTHER };

/* Keys that matter, at the top level and inside stream_options. */
enum key { KEY_OTHER, KEY_STREAM, KEY_STREAM_OPTIONS, KEY_INCLUDE_USAGE };

struct found {
    size_t top_open; /* offset of the top-level '{' */
    enum vtype stream;
    enum vtype so;  /* the last top-level stream_options */
    size_t so_at;   /* its '{' or its null */
    int so_empty;   /* the object has no member */
    enum vtype iu;  /* the last include_usage in that stream_options */
    size_t iu_at, iu_len;
};

static const char ins_options[] = "\"stream_options\":{\"include_usage\":true},";
static const char ins_object[] = "{\"include_usage\":true}";
static const char ins_member[] = "\"include_usage\":true";

_Static_assert(sizeof(ins_options) - 1 == JSONEDIT_GROWTH, "JSONEDIT_GROWTH is the largest edit");

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(const char *p, size_t len, size_t *i)
{
    while (*i < len && is_ws(p[*i]))
        (*i)++;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* p[*i] is '"': moves *i past the closing quote. Returns 0, or -1 when the string is malformed. */
static int scan_string(const char *p, size_t len, size_t *i)
{
    size_t j = *i + 1;

    while (j < len) {
        unsigned char c = (unsigned char)p[j];
        if (c == '"') {
            *i = j + 1;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            j++;
            continue;
        }
        if (j + 1 >= len)
            return -1;
        c = (unsigned char)p[j + 1];
        if (c == 'u') {
            if (j + 6 > len)
                return -1;
            for (size_t k = 2; k < 6; k++)
                if (hex_value(p[j + k]) < 0)
                    return -1;
            j += 6;
        } else if (c != '\0' && strchr("\"\\/bfnrt", c) != NULL) {
            j += 2;
        } else {
            return -1;
        }
    }
    return -1;
}

/* 1 when the raw string content p[0..n) (valid, between its quotes) unescapes to want (ASCII). */
static int string_is(const char *p, size_t n, const char *want)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    size_t i = 0, w = 0, wlen = strlen(want);

    while (i < n) {
        unsigned int c = (unsigned char)p[i];
        if (c == '\\') {
            char e = p[i + 1];
            if (e == 'u') {
                c = 0;
                for (size_t k = 2; k < 6; k++)
                    c = c << 4 | (unsigned int)hex_value(p[i + k]);
                i += 6;
            } else {
                c = (unsigned char)to[strchr(from, e) - from];
                i += 2;
            }
        } else {
            i++;
        }
        if (w >= wlen || c != (unsigned char)want[w])
            return 0;
        w++;
    }
    return w == wlen;
}

/* A number per RFC 8259 at p[*i]. Returns 0, or -1. */
static int scan_number(const char *p, size_t len, size_t *i)
{
    size_t j = *i;

    if (j < len && p[j] == '-')
        j++;
    if (j >= len || !is_digit(p[j]))
        return -1;
    if (p[j] == '0')
        j++;
    else
        while (j < len && is_digit(p[j]))
            j++;
    if (j < len && p[j] == '.') {
        j++;
        if (j >= len || !is_digit(p[j]))
            return -1;
        while (j < len && is_digit(p[j]))
            j++;
    }
    if (j < len && (p[j] == 'e' || p[j] == 'E')) {
        j++;
        if (j < len && (p[j] == '+' || p[j] == '-'))
            j++;
        if (j >= len || !is_digit(p[j]))
            return -1;
        while (j < len && is_digit(p[j]))
            j++;
    }
    *i = j;
    return 0;
}

static int scan_literal(const char *p, size_t len, size_t *i, const char *lit)
{
    size_t n = strlen(lit);

    if (len - *i < n || memcmp(p + *i, lit, n) != 0)
        return -1;
    *i += n;
    return 0;
}

enum scan_state { S_VALUE, S_OBJ_FIRST, S_ARR_FIRST, S_KEY, S_AFTER };

/* Checks body is one JSON object and records what jsonedit_stream_include_usage needs. */
static int scan(const char *p, size_t len, struct found *f)
{
    unsigned char stack[JSONEDIT_DEPTH_MAX / 8];
    unsigned int depth = 0;
    enum key top_key = KEY_OTHER, so_key = KEY_OTHER;
    int in_so = 0; /* the object at depth 2 is the value of the last top-level stream_options */
    enum scan_state st = S_VALUE;
    size_t i = 0;

    memset(f, 0, sizeof(*f));
    memset(stack, 0, sizeof(stack));
    skip_ws(p, len, &i);
    if (i >= len || p[i] != '{')
        return -1;
    f->top_open = i;
    for (;;) {
        size_t at;
        enum vtype t = V_OTHER;

        skip_ws(p, len, &i);
        if (st == S_AFTER && depth == 0)
            return i == len ? 0 : -1;
        if (i >= len)
            return -1;
        at = i;
        switch (st) {
        case S_OBJ_FIRST:
        case S_KEY:
            if (st == S_OBJ_FIRST && p[i] == '}')
                goto close;
            if (p[i] != '"' || scan_string(p, len, &i) != 0)
                return -1;
            if (depth == 1) {
                top_key = string_is(p + at + 1, i - at - 2, "stream")           ? KEY_STREAM
                          : string_is(p + at + 1, i - at - 2, "stream_options") ? KEY_STREAM_OPTIONS
                                                                                : KEY_OTHER;
            } else if (depth == 2 && in_so) {
                f->so_empty = 0;
                so_key = string_is(p + at + 1, i - at - 2, "include_usage") ? KEY_INCLUDE_USAGE
                                                                            : KEY_OTHER;
            }
            skip_ws(p, len, &i);
            if (i >= len || p[i] != ':')
                return -1;
            i++;
            st = S_VALUE;
            continue;
        case S_ARR_FIRST:
            if (p[i] == ']')
                goto close;
            /* fall through */
        case S_VALUE:
            switch (p[i]) {
            case '{':
            case '[':
                if (depth >= JSONEDIT_DEPTH_MAX)
                    return -1;
                if (p[i] == '{')
                    stack[depth / 8] |= (unsigned char)(1u << (depth % 8));
                else
                    stack[depth / 8] &= (unsigned char)~(1u << (depth % 8));
                t = p[i] == '{' ? V_OBJECT : V_OTHER;
                if (depth == 1 && top_key == KEY_STREAM_OPTIONS)
                    in_so = t == V_OBJECT;
                st = p[i] == '{' ? S_OBJ_FIRST : S_ARR_FIRST;
                i++;
                break;
            case '"':
                if (scan_string(p, len, &i) != 0)
                    return -1;
                st = S_AFTER;
                break;
            case 't':
            case 'f':
            case 'n':
                t = p[i] == 't' ? V_TRUE : p[i] == 'f' ? V_FALSE : V_NULL;
                if (scan_literal(p, len, &i, t == V_TRUE ? "true" : t == V_FALSE ? "false" : "null"))
                    return -1;
                st = S_AFTER;
                break;
            default:
                if (scan_number(p, len, &i) != 0)
                    return -1;
                st = S_AFTER;
                break;
            }
            /* Record the members that matter (the last of each name wins). */
            if (depth == 1 && top_key == KEY_STREAM) {
                f->stream = t;
            } else if (depth == 1 && top_key == KEY_STREAM_OPTIONS) {
                f->so = t;
                f->so_at = at;
                f->so_empty = 1;
                f->iu = V_NONE; /* an earlier stream_options no longer counts */
            } else if (depth == 2 && in_so && so_key == KEY_INCLUDE_USAGE) {
                f->iu = t;
                f->iu_at = at;
                f->iu_len = i - at;
            }
            if (st == S_OBJ_FIRST || st == S_ARR_FIRST)
                depth++;
            continue;
        case S_AFTER:
            if (p[i] == ',') {
                i++;
                st = (stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1 ? S_KEY : S_VALUE;
                continue;
            }
            if (p[i] == '}' || p[i] == ']')
                goto close;
            return -1;
        }
    close:
        if (((stack[(depth - 1) / 8] >> ((depth - 1) % 8)) & 1) != (p[i] == '}'))
            return -1;
        if (depth == 2)
            in_so = 0;
        depth--;
        i++;
        st = S_AFTER;
    }
}

/* out = body with body[at..at+del) replaced by ins. */
static int splice(const char *body, size_t len, size_t at, size_t del, const char *ins,
                  char *out, size_t cap, size_t *out_len)
{
    size_t n = strlen(ins), total = len - del + n;

    if (total > cap)
        return -1;
    memcpy(out, body, at);
    memcpy(out + at, ins, n);
    memcpy(out + at + n, body + at + del, len - at - del);
    *out_len = total;
    return 0;
}

int jsonedit_stream_include_usage(const char *body, size_t len, char *out, size_t cap,
                                  size_t *out_len, int *injected)
{
    struct found f;
    int rc;

    *injected = 0;
    rc = scan(body, len, &f);
    if (rc != 0)
        return rc;
    if (f.stream != V_TRUE)
        return 0;
    switch (f.so) {
    case V_NONE:
        rc = splice(body, len, f.top_open + 1, 0, ins_options, out, cap, out_len);
        break;
    case V_NULL:
        rc = splice(body, len, f.so_at, 4, ins_object, out, cap, out_len);
        break;
    case V_OBJECT:
        if (f.iu == V_TRUE)
            return 0;
        if (f.iu == V_NONE) {
            char ins[sizeof(ins_member) + 1];
            memcpy(ins, ins_member, sizeof(ins_member));
            if (!f.so_empty)
                strcat(ins, ",");
            rc = splice(body, len, f.so_at + 1, 0, ins, out, cap, out_len);
        } else if (f.iu == V_FALSE || f.iu == V_NULL) {
            rc = splice(body, len, f.iu_at, f.iu_len, "true", out, cap, out_len);
        } else {
            return -1;
        }
        break;
    default:
        return -1;
    }
    if (rc != 0)
        return rc;
    *injected = 1;
    return 0;
}
