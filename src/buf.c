/* buf — growable byte buffer with a ceiling (see buf.h). */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

int buf_add(struct buf *b, const void *p, size_t n, size_t max)
{
    if (n > max || b->len > max - n)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        char *d;
        while (cap < b->len + n)
            cap *= 2;
        if (cap > max)
            cap = max;
        d = realloc(b->data, cap);
        if (d == NULL)
            return -1;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

size_t str_copy(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return n;
}

static size_t fmt_base(char *p, unsigned long long v, unsigned base)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v != 0);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

size_t fmt_dec(char *p, unsigned long long v)
{
    return fmt_base(p, v, 10);
}

size_t fmt_hex(char *p, unsigned long long v)
{
    return fmt_base(p, v, 16);
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
