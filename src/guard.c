/* guard — strict framing checks in front of llhttp 8.1 (see guard.h). Each complete line of the
 * head is checked once; semantic checks on framing headers run when the blank line arrives. */
#include "guard.h"

#include <string.h>
#include <strings.h>

#include "headers.h"

/* 1 for the RFC 9110 tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~ */
const unsigned char guard_tchar[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x00 */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, /* 0x10 */
    0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 0, /*  !"#$%&'()*+,-./ */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, /* 0123456789:;<=>? */
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* @A-O */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, /* P-Z[\]^_ */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, /* `a-o */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 1, 0, /* p-z{|}~ DEL */
    /* 0x80-0xff: 0 */
};

void guard_head_init(struct guard_head *g)
{
    memset(g, 0, sizeof(*g));
}

static int is_ows(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* Trims optional whitespace around [*p, *p + *n). */
static void trim(const char **p, size_t *n)
{
    while (*n > 0 && is_ows((unsigned char)(*p)[0])) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && is_ows((unsigned char)(*p)[*n - 1]))
        (*n)--;
}

static int name_is(const char *name, size_t len, const char *want)
{
    return headers_name_is(name, len, want);
}

/* Request line: method SP request-target SP HTTP/1.x, nothing else. */
static long check_request_line(struct guard_head *g, const char *p, size_t n, const char **why)
{
    size_t i = 0, m;

    while (i < n && guard_is_tchar((unsigned char)p[i]))
        i++;
    m = i;
    if (m == 0 || i >= n || p[i] != ' ') {
        *why = "malformed request line";
        return -400;
    }
    g->is_connect = (m == 7 && memcmp(p, "CONNECT", 7) == 0);
    i++;
    if (i >= n || p[i] == ' ') {
        *why = "malformed request line";
        return -400;
    }
    while (i < n && p[i] != ' ') {
        unsigned char c = (unsigned char)p[i];
        if (c <= 0x20 || c >= 0x7f) {
            *why = "invalid byte in request target";
            return -400;
        }
        i++;
    }
    if (n - i != 9 || memcmp(p + i, " HTTP/1.", 8) != 0 || (p[i + 8] != '0' && p[i + 8] != '1')) {
        *why = n - i == 9 && memcmp(p + i, " HTTP/", 6) == 0 ? "unsupported HTTP version"
                                                              : "malformed request line";
        return -400;
    }
    g->http_minor = p[i + 8] - '0';
    return 0;
}

static int byte_ok_in_value(unsigned char c)
{
    return !((c < 0x20 && c != '\t') || c == 0x7f);
}

/* 1 when p[0..n) holds no control byte but HTAB (obs-text is allowed). Eight bytes at a time: a
 * word with no byte below 0x20 and none equal to 0x7f needs no closer look. */
static int value_ok(const char *p, size_t n)
{
    const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
    size_t k = 0;

    for (; k + 8 <= n; k += 8) {
        uint64_t w, del;
        memcpy(&w, p + k, 8);
        del = w ^ (0x7f * ones);
        if ((((w - 0x20 * ones) & ~w) | ((del - ones) & ~del)) & high) {
            for (size_t j = k; j < k + 8; j++)
                if (!byte_ok_in_value((unsigned char)p[j]))
                    return 0;
        }
    }
    for (; k < n; k++)
        if (!byte_ok_in_value((unsigned char)p[k]))
            return 0;
    return 1;
}

static long check_field(struct guard_head *g, const struct guard_limits *lim, const char *p,
                        size_t n, const char **why)
{
    size_t i = 0, vlen;
    const char *v;

    if (n > 0 && is_ows((unsigned char)p[0])) {
        *why = "obsolete line folding is not allowed";
        return -400;
    }
    while (i < n && guard_is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':') {
        *why = "malformed header field name";
        return -400;
    }
    if (!value_ok(p + i + 1, n - i - 1)) {
        *why = "control character in header value";
        return -400;
    }
    if (++g->nheaders > lim->max_headers) {
        *why = "too many header fields";
        return -431;
    }
    v = p + i + 1;
    vlen = n - i - 1;
    trim(&v, &vlen);
    if (name_is(p, i, "content-length")) {
        uint64_t cl = 0;
        if (g->has_cl) {
            *why = "duplicate Content-Length";
            return -400;
        }
        if (vlen == 0 || vlen > 19) {
            *why = "malformed Content-Length";
            return -400;
        }
        for (size_t k = 0; k < vlen; k++) {
            if (v[k] < '0' || v[k] > '9') {
                *why = "malformed Content-Length";
                return -400;
            }
            cl = cl * 10 + (uint64_t)(v[k] - '0');
        }
        g->has_cl = 1;
        g->cl = cl;
    } else if (name_is(p, i, "transfer-encoding")) {
        /* Only a single, bare "chunked" is framing we can relay unambiguously. */
        g->te_count++;
        g->chunked = (g->te_count == 1 && name_is(v, vlen, "chunked"));
    } else if (name_is(p, i, "host")) {
        g->host_count++;
    } else if (name_is(p, i, "expect")) {
        if (name_is(v, vlen, "100-continue"))
            g->expect_continue = 1;
        else
            g->expect_other = 1;
    }
    return 0;
}

static long check_framing(struct guard_head *g, const struct guard_limits *lim, const char **why)
{
    if (g->is_connect) {
        *why = "CONNECT is not supported by this relay";
        return -405;
    }
    if (g->te_count > 0) {
        if (g->http_minor == 0) {
            *why = "Transfer-Encoding is not allowed in HTTP/1.0";
            return -400;
        }
        if (!g->chunked) {
            *why = "unsupported Transfer-Encoding (only a single 'chunked' is accepted)";
            return -400;
        }
        if (g->has_cl) {
            *why = "both Content-Length and Transfer-Encoding";
            return -400;
        }
    }
    if (g->http_minor == 1 && g->host_count != 1) {
        *why = g->host_count == 0 ? "missing Host header" : "duplicate Host header";
        return -400;
    }
    if (g->host_count > 1) {
        *why = "duplicate Host header";
        return -400;
    }
    if (g->has_cl && g->cl > lim->max_body) {
        *why = "request body too large";
        return -413;
    }
    return 0;
}

long guard_head_scan(struct guard_head *g, const struct guard_limits *lim, const char *buf,
                     size_t len, const char **why)
{
    for (;;) {
        const char *lf, *p;
        size_t n, i;
        long rc;

        /* Empty lines before the request line are tolerated (RFC 9112 §2.2), bare LF is not. */
        while (g->line_no == 0 && len - g->line_start >= 2 && buf[g->line_start] == '\r' &&
               buf[g->line_start + 1] == '\n' && g->skip < 8) {
            g->line_start += 2;
            g->skip += 2;
            if (g->scan < g->line_start)
                g->scan = g->line_start;
        }
        lf = g->scan < len ? memchr(buf + g->scan, '\n', len - g->scan) : NULL;
        if (lf == NULL) {
            /* Refuse as early as possible: no need to wait for the end of an oversized line. */
            size_t pending = len - g->line_start;
            /* A CR that ended the previous read was only allowed pending its LF: check it again
             * now that the byte after it is here. */
            i = g->scan > g->line_start && buf[g->scan - 1] == '\r' ? g->scan - 1 : g->scan;
            for (; i < len; i++) {
                unsigned char c = (unsigned char)buf[i];
                if (c == '\r' && i + 1 < len) {
                    *why = "bare CR in request head";
                    return -400;
                }
                if (c == 0) {
                    *why = "NUL byte in request head";
                    return -400;
                }
            }
            g->scan = len;
            if (g->line_no == 0 && pending > lim->max_request_line + 1) {
                *why = "request line too long";
                return -414;
            }
            /* Loose early bound (the pending bytes may be the blank line's CR): the exact limit
             * is checked below on complete lines. */
            if (g->line_no > 0 && len - g->fields_start > lim->max_header_bytes + 2) {
                *why = "request header fields too large";
                return -431;
            }
            return 0;
        }
        i = (size_t)(lf - buf);
        if (i == g->line_start || buf[i - 1] != '\r') {
            *why = "bare LF in request head";
            return -400;
        }
        p = buf + g->line_start;
        n = i - 1 - g->line_start; /* without CRLF */
        if (memchr(p, '\r', n) != NULL) {
            *why = "bare CR in request head";
            return -400;
        }
        g->scan = g->line_start = i + 1;
        if (g->line_no == 0) {
            if (n > lim->max_request_line) {
                *why = "request line too long";
                return -414;
            }
            rc = check_request_line(g, p, n, why);
            g->fields_start = i + 1;
        } else if (n == 0) {
            rc = check_framing(g, lim, why);
            if (rc == 0)
                return (long)(i + 1);
        } else {
            if (i + 1 - g->fields_start > lim->max_header_bytes) {
                *why = "request header fields too large";
                return -431;
            }
            rc = check_field(g, lim, p, n, why);
        }
        if (rc != 0)
            return rc;
        g->line_no++;
    }
}

void guard_chunk_init(struct guard_chunk *g)
{
    memset(g, 0, sizeof(*g));
    g->state = GC_SIZE;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#define FAIL(status, msg)                                                                          \
    do {                                                                                           \
        *why = (msg);                                                                              \
        *used = i;                                                                                 \
        return -(status);                                                                          \
    } while (0)

int guard_chunk_feed(struct guard_chunk *g, const struct guard_limits *lim, const char *buf,
                     size_t len, size_t *used, const char **why)
{
    size_t i = 0;

    while (i < len && g->state != GC_DONE) {
        unsigned char c = (unsigned char)buf[i];
        int h;

        switch (g->state) {
        case GC_SIZE:
        case GC_SIZE_MORE:
            h = hexval(c);
            if (h >= 0) {
                if (++g->digits > 16)
                    FAIL(400, "chunk size too long");
                g->size = g->size * 16 + (uint64_t)h;
                g->state = GC_SIZE_MORE;
            } else if (g->state == GC_SIZE_MORE && c == ';') {
                g->state = GC_EXT;
                g->ext = 0;
            } else if (g->state == GC_SIZE_MORE && c == '\r') {
                g->state = GC_SIZE_LF;
            } else {
                FAIL(400, "malformed chunk size");
            }
            i++;
            break;
        case GC_EXT:
            if (c == '\r') {
                g->state = GC_SIZE_LF;
            } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
                FAIL(400, "invalid byte in chunk extension");
            } else if (++g->ext > lim->max_chunk_ext) {
                FAIL(400, "chunk extension too long");
            }
            i++;
            break;
        case GC_SIZE_LF:
            if (c != '\n')
                FAIL(400, "malformed chunk line ending");
            i++;
            g->digits = 0;
            if (g->size == 0) {
                g->state = GC_TRAILER_START;
                break;
            }
            if (g->size > lim->max_body || g->total > lim->max_body - g->size)
                FAIL(413, "request body too large");
            g->total += g->size;
            g->left = g->size;
            g->size = 0;
            g->state = GC_DATA;
            break;
        case GC_DATA: {
            size_t take = len - i;
            if (take > g->left)
                take = (size_t)g->left;
            i += take;
            g->left -= take;
            if (g->left == 0)
                g->state = GC_DATA_CR;
            break;
        }
        case GC_DATA_CR:
            if (c != '\r')
                FAIL(400, "chunk data not followed by CRLF");
            g->state = GC_DATA_LF;
            i++;
            break;
        case GC_DATA_LF:
            if (c != '\n')
                FAIL(400, "chunk data not followed by CRLF");
            g->state = GC_SIZE;
            i++;
            break;
        case GC_TRAILER_START:
            if (c == '\r') {
                g->state = GC_FINAL_LF;
            } else if (guard_is_tchar(c)) {
                g->state = GC_TRAILER_NAME;
            } else {
                FAIL(400, "malformed trailer field");
            }
            g->trailer_bytes++;
            i++;
            break;
        case GC_TRAILER_NAME:
            if (c == ':')
                g->state = GC_TRAILER_VALUE;
            else if (!guard_is_tchar(c))
                FAIL(400, "malformed trailer field name");
            if (++g->trailer_bytes > lim->max_header_bytes)
                FAIL(431, "trailer fields too large");
            i++;
            break;
        case GC_TRAILER_VALUE:
            if (c == '\r')
                g->state = GC_TRAILER_LF;
            else if ((c < 0x20 && c != '\t') || c == 0x7f)
                FAIL(400, "control character in trailer value");
            if (++g->trailer_bytes > lim->max_header_bytes)
                FAIL(431, "trailer fields too large");
            i++;
            break;
        case GC_TRAILER_LF:
            if (c != '\n')
                FAIL(400, "bare CR in trailer");
            g->state = GC_TRAILER_START;
            i++;
            break;
        case GC_FINAL_LF:
            if (c != '\n')
                FAIL(400, "malformed end of chunked body");
            g->state = GC_DONE;
            i++;
            break;
        case GC_DONE:
            break;
        }
    }
    *used = i;
    return 0;
}

/* Origin-form path of the request target, or NULL for a target we refuse. An absolute-form
 * target's authority is ignored (RFC 9112 §3.2.2): it can never choose the upstream. */
const char *guard_target_path(const char *t, size_t n, char *tmp, size_t cap, size_t *len)
{
    size_t skip;

    if (n > 0 && t[0] == '/') {
        *len = n;
        return t;
    }
    if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    else
        return NULL;
    while (skip < n && t[skip] != '/' && t[skip] != '?' && t[skip] != '#')
        skip++;
    if (skip == n) {
        *len = 1;
        return "/";
    }
    if (t[skip] == '/') {
        *len = n - skip;
        return t + skip;
    }
    if (n - skip + 2 > cap)
        return NULL;
    tmp[0] = '/';
    memcpy(tmp + 1, t + skip, n - skip);
    *len = n - skip + 1;
    return tmp;
}
