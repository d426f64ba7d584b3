/* guard — the strict checks Debian's llhttp 8.1 lacks, run on the raw bytes before llhttp sees
 * them: a request head must be complete, CRLF-terminated, free of obs-fold, bare CR/LF and control
 * bytes, within the size limits, and unambiguous about its framing (RFC 9112 §6); a chunked body
 * must have exact chunk lines with short extensions. Whatever the guard refuses never reaches the
 * parser, so it can never reach the upstream. */
#ifndef FERRY_GUARD_H
#define FERRY_GUARD_H

#include <stddef.h>
#include <stdint.h>

struct guard_limits {
    size_t max_request_line;
    size_t max_header_bytes;
    size_t max_headers;
    size_t max_chunk_ext;
    uint64_t max_body;
};

/* What the guard learned from a valid head. */
struct guard_head {
    /* scanning state, kept between calls so a head that arrives byte by byte is scanned once */
    size_t scan;        /* bytes of the buffer already searched for line ends */
    size_t line_start;  /* start of the line being scanned */
    size_t skip;        /* leading empty lines (CRLF) before the request line */
    int line_no;        /* 0 = request line */
    size_t fields_start; /* offset of the first header field line */

    int http_minor;     /* HTTP/1.x */
    int is_connect;
    int has_cl;
    uint64_t cl;
    int te_count;       /* Transfer-Encoding fields seen */
    int chunked;        /* the (only) transfer coding is chunked */
    int host_count;
    int expect_continue;
    int expect_other;
    size_t nheaders;
};

/* Resets *g for a new request head. */
void guard_head_init(struct guard_head *g);

/* Scans buf[0..len), the bytes of the current head so far (the buffer may only grow between
 * calls, never move relative to the head's first byte). Returns the length of the complete head
 * including its blank line (> 0), 0 when more bytes are needed, or a negative HTTP status
 * (-400, -405, -413, -414, -431) with *why set to a static message. */
long guard_head_scan(struct guard_head *g, const struct guard_limits *lim, const char *buf,
                     size_t len, const char **why);

enum guard_chunk_state {
    GC_SIZE, GC_SIZE_MORE, GC_EXT, GC_SIZE_LF, GC_DATA, GC_DATA_CR, GC_DATA_LF,
    GC_TRAILER_START, GC_TRAILER_NAME, GC_TRAILER_VALUE, GC_TRAILER_LF, GC_FINAL_LF, GC_DONE
};

struct guard_chunk {
    enum guard_chunk_state state;
    uint64_t size;       /* of the current chunk */
    uint64_t left;       /* data bytes left in the current chunk */
    uint64_t total;      /* data bytes so far */
    size_t digits, ext, trailer_bytes;
};

void guard_chunk_init(struct guard_chunk *g);

/* Validates the raw chunked body bytes buf[0..len). Stores in *used how many bytes belong to the
 * body (it stops at the end of the message: the rest is the next request). Returns 0, or a
 * negative HTTP status (-400, -413, -431 for oversized trailers) with *why set. After the last chunk and trailers,
 * g->state == GC_DONE. */
int guard_chunk_feed(struct guard_chunk *g, const struct guard_limits *lim, const char *buf,
                     size_t len, size_t *used, const char **why);

/* The origin-form path (with query) to relay for request target t[0..n), or NULL for a target
 * that is refused (400). An absolute-form target's authority is ignored (RFC 9112 §3.2.2): it can
 * never choose the upstream. May return tmp (cap bytes) when the path must be rebuilt. */
const char *guard_target_path(const char *t, size_t n, char *tmp, size_t cap, size_t *len);

/* RFC 9110 token character (field names, methods, chunk extension names). */
extern const unsigned char guard_tchar[256];
static inline int guard_is_tchar(unsigned char c)
{
    return guard_tchar[c];
}

#endif
