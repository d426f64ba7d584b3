/* request — fuzz target for the whole request-acceptance path of src/conn.c, without libuv:
 * guard_head_scan → llhttp on the head (the span callbacks of conn.c, copied minimally) → the
 * header filter, Connection-named fields, CORS preflight and the request-target decision → the
 * body (Content-Length, or guard_chunk_feed + llhttp for chunked) → the next pipelined request on
 * the same parser, as conn.c does for keep-alive. Invariants: the guard and llhttp agree on the
 * framing of every head both accept and on where every message ends; nothing relayed upstream
 * (a kept header, the path) carries a byte that could split the upstream request; hop-by-hop,
 * framing and Connection-named fields are never kept. With FUZZ_STRICT_BODY defined, llhttp
 * refusing a body the guard accepted is also a failure (ferry answers 400 then: safe, but a
 * place where the two disagree). */
#include "fuzz.h"

#include <llhttp.h>
#include <strings.h>

#include "cors.h"
#include "guard.h"
#include "headers.h"

#define MAX_HEADERS 16
#define MAX_MESSAGES 8
#define DROP_LIST "cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*"

static struct headers_set drop_set; /* DROP_LIST, compiled on the first input */

static const struct guard_limits lim = {
    .max_request_line = 256,
    .max_header_bytes = 1024,
    .max_headers = MAX_HEADERS,
    .max_chunk_ext = 32,
    .max_body = 1u << 16,
};

/* What conn.c keeps for the current request, plus what llhttp said at headers-complete. */
struct req {
    int in_head;
    const char *method, *target;
    size_t method_len, target_len;
    struct hdr hdrs[MAX_HEADERS + 1];
    size_t nhdrs;
    int msg_complete;
    int headers_done;
    uint16_t flags;
    uint64_t content_length;
    int http_major, http_minor, upgrade;
    uint64_t body_bytes;
};

/* ---- conn.c's callbacks (on_method, on_url, on_header_field, on_header_value, on_body,
 * on_message_complete), minus the relay: the spans are collected by the same headers_* calls ---- */

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct req *c = p->data;
    headers_span(&c->method, &c->method_len, at, len);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct req *c = p->data;
    headers_span(&c->target, &c->target_len, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct req *c = p->data;

    if (!c->in_head)
        return 0;
    return headers_name_piece(c->hdrs, &c->nhdrs, MAX_HEADERS, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct req *c = p->data;

    if (c->in_head)
        headers_value_piece(c->hdrs, c->nhdrs, at, len);
    return 0;
}

/* As in conn.c, Upgrade is hop-by-hop and ignored, so llhttp must not switch protocols; also
 * records llhttp's view of the framing for the checks. */
static int on_headers_complete(llhttp_t *p)
{
    struct req *c = p->data;
    c->headers_done = 1;
    c->flags = p->flags;
    c->content_length = p->content_length;
    c->http_major = p->http_major;
    c->http_minor = p->http_minor;
    c->upgrade = p->upgrade;
    p->upgrade = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct req *c = p->data;
    (void)at;
    c->body_bytes += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct req *c = p->data;
    c->msg_complete = 1;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- checks on what would go upstream ---- */

static int lower_eq(const char *a, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(a, want, n) == 0;
}

static void check_relayed_field(const struct hdr *h)
{
    for (size_t k = 0; k < h->name_len; k++)
        FZ_CHECK(guard_is_tchar((unsigned char)h->name[k]), "relayed name has byte 0x%02x",
                 (unsigned char)h->name[k]);
    FZ_CHECK(h->name_len > 0, "empty name relayed");
    for (size_t k = 0; k < h->value_len; k++) {
        unsigned char c = (unsigned char)h->value[k];
        FZ_CHECK(c >= 0x20 || c == '\t', "relayed value has byte 0x%02x", c);
        FZ_CHECK(c != 0x7f, "relayed value has DEL");
    }
    static const char *const never[] = {"connection", "keep-alive", "te", "trailer",
                                        "transfer-encoding", "upgrade", "host", "content-length",
                                        "expect", "cookie", "forwarded", "via", "x-real-ip"};
    for (size_t k = 0; k < sizeof(never) / sizeof(never[0]); k++)
        FZ_CHECK(!lower_eq(h->name, h->name_len, never[k]), "'%s' relayed", never[k]);
    FZ_CHECK(!(h->name_len >= 6 && strncasecmp(h->name, "proxy-", 6) == 0), "Proxy-* relayed");
    FZ_CHECK(!(h->name_len >= 12 && strncasecmp(h->name, "x-forwarded-", 12) == 0),
             "X-Forwarded-* relayed");
    FZ_CHECK(!(h->name_len >= 3 && strncasecmp(h->name, "cf-", 3) == 0), "cf-* relayed");
}


static void check_head(struct req *c, const struct guard_head *g)
{
    int keep[MAX_HEADERS + 1];
    char tmp[1024], pre[4096];
    const char *path;
    size_t plen, n;

    /* guard and llhttp agree on the framing */
    FZ_CHECK(c->headers_done, "llhttp accepted a head without completing it");
    FZ_CHECK(c->http_major == 1 && c->http_minor == g->http_minor, "HTTP/%d.%d vs guard 1.%d",
             c->http_major, c->http_minor, g->http_minor);
    FZ_CHECK(!!(c->flags & F_CHUNKED) == g->chunked, "chunked: llhttp %d, guard %d",
             !!(c->flags & F_CHUNKED), g->chunked);
    FZ_CHECK(!!(c->flags & F_CONTENT_LENGTH) == g->has_cl, "Content-Length: llhttp %d, guard %d",
             !!(c->flags & F_CONTENT_LENGTH), g->has_cl);
    if (g->has_cl)
        FZ_CHECK(c->content_length == g->cl, "Content-Length: llhttp %llu, guard %llu",
                 (unsigned long long)c->content_length, (unsigned long long)g->cl);
    FZ_CHECK(c->nhdrs == g->nheaders, "fields: llhttp %zu, guard %zu", c->nhdrs, g->nheaders);

    /* conn.c's handle_head: trim values, then the relay decisions */
    for (size_t i = 0; i < c->nhdrs; i++) {
        if (c->hdrs[i].value == NULL)
            c->hdrs[i].value = "";
        while (c->hdrs[i].value_len > 0 &&
               (c->hdrs[i].value[c->hdrs[i].value_len - 1] == ' ' ||
                c->hdrs[i].value[c->hdrs[i].value_len - 1] == '\t'))
            c->hdrs[i].value_len--;
    }
    headers_filter_request(c->hdrs, c->nhdrs, &drop_set, keep);
    for (size_t i = 0; i < c->nhdrs; i++) {
        int scoped = headers_connection_scoped(c->hdrs, c->nhdrs, i);
        if (scoped)
            FZ_CHECK(!keep[i], "a Connection-scoped field is kept");
        if (!keep[i])
            continue;
        check_relayed_field(&c->hdrs[i]);
        FZ_CHECK(!headers_list_has(DROP_LIST, sizeof(DROP_LIST) - 1, c->hdrs[i].name,
                                   c->hdrs[i].name_len, 1),
                 "a field of the drop list is kept");
        for (size_t k = 0; k < c->nhdrs; k++)
            if (lower_eq(c->hdrs[k].name, c->hdrs[k].name_len, "connection"))
                FZ_CHECK(!headers_list_has(c->hdrs[k].value, c->hdrs[k].value_len,
                                           c->hdrs[i].name, c->hdrs[i].name_len, 0),
                         "a field named in Connection is kept");
    }
    if (cors_is_preflight(c->method, c->method_len, c->hdrs, c->nhdrs)) {
        n = cors_preflight_response(pre, sizeof(pre), c->hdrs, c->nhdrs, 1);
        for (size_t i = 0; i < n; i++) {
            if (pre[i] == '\r')
                FZ_CHECK(i + 1 < n && pre[i + 1] == '\n', "bare CR in the preflight answer");
            if (pre[i] == '\n')
                FZ_CHECK(i > 0 && pre[i - 1] == '\r', "bare LF in the preflight answer");
            FZ_CHECK(pre[i] != '\0', "NUL in the preflight answer");
        }
        if (n > 0)
            FZ_CHECK(memcmp(pre + n - 4, "\r\n\r\n", 4) == 0 &&
                         memmem(pre, n, "\r\n\r\n", 4) == pre + n - 4,
                     "the preflight answer has an early blank line");
    }
    if (!(c->target_len == 1 && c->target[0] == '*')) {
        path = guard_target_path(c->target, c->target_len, tmp, sizeof(tmp), &plen);
        if (path != NULL) {
            FZ_CHECK(plen > 0 && path[0] == '/', "relayed path does not start with /");
            for (size_t i = 0; i < plen; i++)
                FZ_CHECK((unsigned char)path[i] > 0x20 && (unsigned char)path[i] < 0x7f,
                         "relayed path has byte 0x%02x", (unsigned char)path[i]);
        }
    }
}

/* One message at buf[0..len): returns the bytes it took (> 0) to go on with the next pipelined
 * request, or 0 to stop (refused, incomplete or closing). */
static size_t one_message(llhttp_t *p, struct req *c, const uint8_t *seed, size_t seedlen,
                          const char *buf, size_t len, int k)
{
    struct guard_head g;
    const char *why = NULL;
    llhttp_errno_t err;
    long r;
    size_t at, left;
    int keepalive;

    memset(c, 0, sizeof(*c));
    /* as in conn.c, only the first slot is cleared: the rest must be filled before use */
    memset(&c->hdrs[1], 0xa5, sizeof(c->hdrs) - sizeof(c->hdrs[0]));
    c->in_head = 1;
    p->data = c;
    guard_head_init(&g);
    r = guard_head_scan(&g, &lim, buf, len, &why);
    if (r <= 0)
        return 0;
    err = llhttp_execute(p, buf, (size_t)r);
    if (c->hdrs[0].name != NULL)
        c->nhdrs++;
    FZ_CHECK(err != HPE_PAUSED_UPGRADE, "llhttp switched protocols (CONNECT or Upgrade got through)");
    if ((err != HPE_OK && err != HPE_PAUSED) || c->method == NULL || c->target == NULL)
        return 0; /* 400 */
    check_head(c, &g);
    if (!g.chunked && !g.has_cl) {
        FZ_CHECK(err == HPE_PAUSED,
                 "a request without a body is not complete at the end of its head (%s)",
                 llhttp_errno_name(err));
        FZ_CHECK(llhttp_get_error_pos(p) == buf + r, "llhttp ended the head at %td, guard at %ld",
                 llhttp_get_error_pos(p) - buf, r);
    }
    if (g.has_cl && g.cl == 0)
        FZ_CHECK(c->msg_complete, "Content-Length: 0 is not complete at the end of its head");
    c->in_head = 0;
    keepalive = g.http_minor == 1;
    for (size_t i = 0; i < c->nhdrs; i++)
        if (lower_eq(c->hdrs[i].name, c->hdrs[i].name_len, "connection") &&
            headers_list_has(c->hdrs[i].value, c->hdrs[i].value_len, "close", 5, 0))
            keepalive = 0;
    at = (size_t)r;

    if (g.has_cl && !c->msg_complete) {
        /* conn.c feeds exactly what is left of Content-Length, in reads of any size */
        left = len - at < g.cl ? len - at : (size_t)g.cl;
        while (left > 0) {
            size_t n = 1 + fz_split(seed, seedlen, (uint64_t)k * 131 + at) % left;
            err = llhttp_execute(p, buf + at, n);
            at += n;
            left -= n;
            if (c->msg_complete) {
                FZ_CHECK(err == HPE_PAUSED && llhttp_get_error_pos(p) == buf + at && left == 0 &&
                             c->body_bytes == g.cl,
                         "llhttp ended a Content-Length body early (%llu of %llu)",
                         (unsigned long long)c->body_bytes, (unsigned long long)g.cl);
                break;
            }
            FZ_CHECK(err == HPE_OK, "llhttp refused Content-Length body bytes: %s",
                     llhttp_errno_name(err));
        }
        if (at - (size_t)r < g.cl)
            return 0; /* incomplete */
        FZ_CHECK(c->msg_complete, "a Content-Length body did not end at its length");
    } else if (g.chunked) {
        struct guard_chunk gc;
        guard_chunk_init(&gc);
        while (!c->msg_complete) {
            size_t avail = len - at, n, used = 0;
            int rc;
            if (avail == 0)
                return 0; /* incomplete */
            n = 1 + fz_split(seed, seedlen, (uint64_t)k * 137 + at) % avail;
            rc = guard_chunk_feed(&gc, &lim, buf + at, n, &used, &why);
            if (rc < 0)
                return 0; /* 400/413/431 */
            FZ_CHECK(used <= n && (used == n || gc.state == GC_DONE), "guard used %zu of %zu",
                     used, n);
            err = llhttp_execute(p, buf + at, used);
            if (err == HPE_PAUSED) {
                FZ_CHECK(llhttp_get_error_pos(p) == buf + at + used,
                         "llhttp ended the chunked body %td bytes before the guard",
                         buf + at + used - llhttp_get_error_pos(p));
                FZ_CHECK(gc.state == GC_DONE, "llhttp ended the chunked body, the guard did not");
            } else if (err != HPE_OK) {
#ifdef FUZZ_STRICT_BODY
                FZ_CHECK(0, "llhttp refused a chunked body the guard accepted: %s (%s)",
                         llhttp_errno_name(err), llhttp_get_error_reason(p));
#endif
                return 0; /* conn.c: 400 */
            }
            at += used;
            if (gc.state == GC_DONE)
                FZ_CHECK(c->msg_complete, "the guard ended the chunked body, llhttp did not");
        }
        FZ_CHECK(c->body_bytes == gc.total, "body bytes: llhttp %llu, guard %llu",
                 (unsigned long long)c->body_bytes, (unsigned long long)gc.total);
    }
    if (!keepalive || !c->msg_complete)
        return 0;
    if (llhttp_get_errno(p) == HPE_PAUSED)
        llhttp_resume(p);
    return at;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llhttp_t parser;
    struct req *c;
    char *buf;
    size_t off = 0;

    if (size > 16384)
        return 0;
    if (drop_set.n == 0 && headers_set_compile(&drop_set, DROP_LIST) != 0)
        abort();
    buf = fz_copy(data, size);
    c = malloc(sizeof(*c));
    if (c == NULL)
        abort();
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    for (int k = 0; k < MAX_MESSAGES && off < size; k++) {
        size_t n = one_message(&parser, c, data, size, buf + off, size - off, k);
        if (n == 0)
            break;
        off += n;
    }
    free(c);
    free(buf);
    return 0;
}
