/* mock_json — the little JSON the mock needs: a growable output buffer with JSON string escaping,
 * and read-only lookups of object members in a request body (raw token slices, no allocation, no
 * DOM). Test code only: the mock answers its own tests, so running out of memory simply aborts. */
#ifndef MOCK_JSON_H
#define MOCK_JSON_H

#include <stdbool.h>
#include <stddef.h>

struct mbuf {
    char *data;
    size_t len, cap;
};

void mbuf_free(struct mbuf *b);
void mbuf_add(struct mbuf *b, const void *p, size_t n);
void mbuf_str(struct mbuf *b, const char *s);
void mbuf_printf(struct mbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a quoted JSON string. Bytes >= 0x80 become \u00XX: header values are bytes,
 * and this yields the same string node's http module shows for them (latin-1). */
void mbuf_json_str(struct mbuf *b, const char *s, size_t n);

/* A raw JSON token inside the caller's text: a string keeps its quotes and escapes. */
struct jval {
    const char *p;
    size_t len;
};

/* Finds member `key` of the object in text[0..len) (the key compared without unescaping).
 * Returns false when the text is not an object, is malformed before the key, or has no such key. */
bool json_member(const char *text, size_t len, const char *key, struct jval *out);
bool json_is_true(struct jval v);
bool json_is_string(struct jval v);
bool json_string_eq(struct jval v, const char *s);
/* Number of elements when v is an array, -1 otherwise. */
int json_array_count(struct jval v);

#endif
