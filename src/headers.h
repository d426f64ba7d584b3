/* headers — which header fields cross the relay. Hop-by-hop fields (RFC 9110 §7.6.1) and every
 * field named in Connection stay on their own hop; Host is the upstream's; framing fields are
 * rebuilt by whoever writes the next hop; a configurable list keeps client-identifying fields
 * (cookies, forwarding chains) away from the provider. */
#ifndef FERRY_HEADERS_H
#define FERRY_HEADERS_H

#include <stddef.h>

struct hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* 1 when name equals (case-insensitively) one of the comma-separated tokens in list[0..list_len).
 * With wildcards, a token ending in '*' matches every name starting with what precedes it. */
int headers_list_has(const char *list, size_t list_len, const char *name, size_t name_len,
                     int wildcards);

/* A comma list of names (an entry ending in '*' is a prefix) compiled once: --drop-headers is
 * matched against every request field. Self-contained (no pointers), so it can be copied. */
#define HEADERS_SET_BYTES 1024
struct headers_set {
    unsigned short n;
    struct {
        unsigned short off, len; /* in lower[] */
        unsigned char prefix;
    } e[HEADERS_SET_BYTES / 2];
    char lower[HEADERS_SET_BYTES]; /* the entries, in lower case, back to back */
};

/* Compiles list (entries are trimmed of spaces and tabs; empty ones are skipped). Returns 0, or
 * -1 when the list is longer than HEADERS_SET_BYTES (s is then empty). */
int headers_set_compile(struct headers_set *s, const char *list);

/* 1 when name[0..len) is in s, as headers_list_has with wildcards. */
int headers_set_has(const struct headers_set *s, const char *name, size_t len);

/* 1 for a hop-by-hop field: Connection, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding,
 * Upgrade. */
int headers_hop_by_hop(const char *name, size_t len);

/* 1 when h[i] must not be relayed because it is hop-by-hop or named by a Connection field in h. */
int headers_connection_scoped(const struct hdr *h, size_t n, size_t i);

/* Request fields: sets keep[i] for each field that goes upstream. Drops the hop-by-hop and
 * Connection-named ones, Host, Content-Length and Expect (the upstream client frames the request
 * itself), and those in drop (may be NULL). */
void headers_filter_request(const struct hdr *h, size_t n, const struct headers_set *drop,
                            int *keep);

/* Response fields: sets keep[i] for each field that goes back to the client. Drops the
 * hop-by-hop and Connection-named ones, the CORS fields ferry sets itself, X-Accel-Buffering, and
 * Content-Length unless keep_length. */
void headers_filter_response(const struct hdr *h, size_t n, int keep_length, int *keep);

/* Collecting a head from llhttp's callbacks (conn.c, and fuzz/request.c, which checks them).
 * headers_span extends [*start, *start + *len) to the end of llhttp's next piece at[0..n) of
 * one token (the first piece sets start; the pieces are contiguous in the buffer llhttp reads).
 * headers_name_piece takes a piece of a field name: the current field's (h[*n], while it has no
 * value yet) or a new field's. h[0] must be zeroed before the head; the fields collected are
 * h[0 .. *n + (h[*n].name != NULL)). Returns 0, or -1 when a new field would be the max-th.
 * headers_value_piece takes a piece of h[n]'s value. */
void headers_span(const char **start, size_t *len, const char *at, size_t n);
int headers_name_piece(struct hdr *h, size_t *n, size_t max, const char *at, size_t len);
void headers_value_piece(struct hdr *h, size_t n, const char *at, size_t len);

/* Finds the first field called name; returns its index or -1. */
int headers_find(const struct hdr *h, size_t n, const char *name);

/* ASCII lower case of each byte (field names are compared without the locale). */
extern const unsigned char headers_lower[256];

/* 1 when a[0..n) equals lower[0..n), case-insensitively (lower is in lower case). */
static inline int headers_eq_lower(const char *a, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (headers_lower[(unsigned char)a[i]] != (unsigned char)lower[i])
            return 0;
    return 1;
}

/* 1 when name equals want, case-insensitively (want is lower case NUL-terminated; inline so that
 * a literal's length is known at compile time). */
static inline int headers_name_is(const char *name, size_t len, const char *want)
{
    return __builtin_strlen(want) == len && headers_eq_lower(name, want, len);
}

#endif
