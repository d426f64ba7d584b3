/* buf — a growable byte buffer with a ceiling, for the few places that must hold bytes whose size
 * is not known in advance (an upstream response head, an error answer held back, a filter's
 * output). The owner frees data with buf_free(). */
#ifndef FERRY_BUF_H
#define FERRY_BUF_H

#include <stddef.h>

struct buf {
    char *data;
    size_t len, cap;
};

/* Appends p[0..n). Returns 0, or -1 when len + n would pass max or memory is short (the buffer
 * is then unchanged). */
int buf_add(struct buf *b, const void *p, size_t n, size_t max);

void buf_free(struct buf *b);

/* Hot-path formatting without printf. str_copy copies s[0..n) into dst (cap > 0 bytes), cut to
 * fit, NUL-terminated, and returns the length copied; fmt_dec and fmt_hex write v's digits at p
 * (no NUL) and return how many. */
size_t str_copy(char *dst, size_t cap, const char *s, size_t n);
size_t fmt_dec(char *p, unsigned long long v);
size_t fmt_hex(char *p, unsigned long long v);

#endif
