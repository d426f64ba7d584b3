/* headers — hop-by-hop filtering and header list matching (see headers.h). */
#include "headers.h"

#include <string.h>

#define R4(c) c, c + 1, c + 2, c + 3
#define R16(c) R4(c), R4(c + 4), R4(c + 8), R4(c + 12)
const unsigned char headers_lower[256] = {
    R16(0x00), R16(0x10), R16(0x20), R16(0x30),
    0x40, R16(0x61), R4(0x71), R4(0x75), 0x79, 0x7a, /* '@', then 'A'..'Z' as 'a'..'z' */
    0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
    R16(0x60), R16(0x70), R16(0x80), R16(0x90), R16(0xa0), R16(0xb0), R16(0xc0), R16(0xd0),
    R16(0xe0), R16(0xf0)};
#undef R16
#undef R4

/* Both sides in any case. */
static int eq_ci(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (headers_lower[(unsigned char)a[i]] != headers_lower[(unsigned char)b[i]])
            return 0;
    return 1;
}

/* The next non-empty entry of a comma list from *i: [*b, *e), trimmed of spaces and tabs.
 * Returns 0 at the end of the list. */
static int next_entry(const char *list, size_t len, size_t *i, size_t *b, size_t *e)
{
    while (*i < len) {
        while (*i < len && (list[*i] == ',' || list[*i] == ' ' || list[*i] == '\t'))
            (*i)++;
        *b = *i;
        while (*i < len && list[*i] != ',')
            (*i)++;
        *e = *i;
        while (*e > *b && (list[*e - 1] == ' ' || list[*e - 1] == '\t'))
            (*e)--;
        if (*e > *b)
            return 1;
    }
    return 0;
}

int headers_list_has(const char *list, size_t list_len, const char *name, size_t name_len,
                     int wildcards)
{
    size_t i = 0, s, e;

    while (next_entry(list, list_len, &i, &s, &e)) {
        if (wildcards && list[e - 1] == '*') {
            size_t plen = e - 1 - s;
            if (name_len >= plen && eq_ci(list + s, name, plen))
                return 1;
        } else if (e - s == name_len && eq_ci(list + s, name, name_len)) {
            return 1;
        }
    }
    return 0;
}

int headers_set_compile(struct headers_set *s, const char *list)
{
    size_t i = 0, used = 0, len = strlen(list), b, e;

    s->n = 0;
    if (len > HEADERS_SET_BYTES)
        return -1;
    while (next_entry(list, len, &i, &b, &e)) {
        s->e[s->n].prefix = list[e - 1] == '*';
        if (s->e[s->n].prefix)
            e--;
        s->e[s->n].off = (unsigned short)used;
        s->e[s->n].len = (unsigned short)(e - b);
        for (size_t k = b; k < e; k++)
            s->lower[used++] = (char)headers_lower[(unsigned char)list[k]];
        s->n++;
    }
    return 0;
}

int headers_set_has(const struct headers_set *s, const char *name, size_t len)
{
    for (size_t k = 0; k < s->n; k++) {
        size_t el = s->e[k].len;
        if (s->e[k].prefix ? len >= el : len == el)
            if (headers_eq_lower(name, s->lower + s->e[k].off, el))
                return 1;
    }
    return 0;
}

int headers_hop_by_hop(const char *name, size_t len)
{
    if (len >= 6 && headers_eq_lower(name, "proxy-", 6))
        return 1;
    switch (len) {
    case 2:
        return headers_eq_lower(name, "te", 2);
    case 7:
        return headers_eq_lower(name, "trailer", 7) || headers_eq_lower(name, "upgrade", 7);
    case 10:
        return headers_eq_lower(name, "connection", 10) || headers_eq_lower(name, "keep-alive", 10);
    case 17:
        return headers_eq_lower(name, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* Indices of the Connection fields of h, at most cap (a head rarely has more than one). Returns
 * how many there are, which may exceed cap. */
static size_t connection_fields(const struct hdr *h, size_t n, size_t *at, size_t cap)
{
    size_t found = 0;

    for (size_t k = 0; k < n; k++)
        if (headers_name_is(h[k].name, h[k].name_len, "connection")) {
            if (found < cap)
                at[found] = k;
            found++;
        }
    return found;
}

/* headers_connection_scoped with h's Connection fields found beforehand. */
static int scoped(const struct hdr *h, size_t n, size_t i, const size_t *conn, size_t nconn)
{
    if (headers_hop_by_hop(h[i].name, h[i].name_len))
        return 1;
    if (nconn > 4) /* more than connection_fields() kept: look them up again */
        return headers_connection_scoped(h, n, i);
    for (size_t k = 0; k < nconn; k++)
        if (headers_list_has(h[conn[k]].value, h[conn[k]].value_len, h[i].name, h[i].name_len, 0))
            return 1;
    return 0;
}

int headers_connection_scoped(const struct hdr *h, size_t n, size_t i)
{
    if (headers_hop_by_hop(h[i].name, h[i].name_len))
        return 1;
    for (size_t k = 0; k < n; k++)
        if (headers_name_is(h[k].name, h[k].name_len, "connection") &&
            headers_list_has(h[k].value, h[k].value_len, h[i].name, h[i].name_len, 0))
            return 1;
    return 0;
}

void headers_filter_request(const struct hdr *h, size_t n, const struct headers_set *drop,
                            int *keep)
{
    size_t conn[4], nconn = connection_fields(h, n, conn, 4);

    for (size_t i = 0; i < n; i++) {
        const char *nm = h[i].name;
        size_t len = h[i].name_len;
        keep[i] = !(scoped(h, n, i, conn, nconn) || headers_name_is(nm, len, "host") ||
                    headers_name_is(nm, len, "content-length") ||
                    headers_name_is(nm, len, "expect") ||
                    (drop != NULL && headers_set_has(drop, nm, len)));
    }
}

void headers_filter_response(const struct hdr *h, size_t n, int keep_length, int *keep)
{
    size_t conn[4], nconn = connection_fields(h, n, conn, 4);

    for (size_t i = 0; i < n; i++) {
        const char *nm = h[i].name;
        size_t len = h[i].name_len;
        keep[i] = !(scoped(h, n, i, conn, nconn) ||
                    headers_name_is(nm, len, "access-control-allow-origin") ||
                    headers_name_is(nm, len, "access-control-expose-headers") ||
                    headers_name_is(nm, len, "x-accel-buffering") ||
                    (!keep_length && headers_name_is(nm, len, "content-length")));
    }
}

void headers_span(const char **start, size_t *len, const char *at, size_t n)
{
    if (*start == NULL)
        *start = at;
    *len = (size_t)(at + n - *start);
}

int headers_name_piece(struct hdr *h, size_t *n, size_t max, const char *at, size_t len)
{
    struct hdr *f = &h[*n];

    if (f->name != NULL && f->value == NULL) { /* continuation of the same name */
        f->name_len = (size_t)(at + len - f->name);
        return 0;
    }
    if (f->name != NULL)
        f = &h[++*n];
    if (*n >= max)
        return -1;
    f->name = at;
    f->name_len = len;
    f->value = NULL;
    f->value_len = 0;
    return 0;
}

void headers_value_piece(struct hdr *h, size_t n, const char *at, size_t len)
{
    headers_span(&h[n].value, &h[n].value_len, at, len);
}

int headers_find(const struct hdr *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (headers_name_is(h[i].name, h[i].name_len, name))
            return (int)i;
    return -1;
}
