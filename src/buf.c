/* buf — growable byte buffer with a ceiling (see buf.h). */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

int buf_add(struct buf *b, const void *p, size_t n, size_t max)
{
    if (n > max || b->len > max - n)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 2048;
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

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
