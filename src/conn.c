/* conn — a downstream HTTP/1.1 connection (see conn.h for the picture and invariants).
 * Parsing happens in conn_process(), which loops over buffered input for as long as the current
 * phase can make progress; everything that must not run inside a libcurl callback is deferred to
 * the next loop turn through worker_defer(). */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "buf.h"
#include "config.h"
#include "cors.h"
#include "relay.h"
#include "reply.h"
#include "server.h"
#include "store.h"

#define IN_INITIAL 8192

static void in_release(struct conn *c);
#define NO_KEY_MESSAGE                                                                             \
    "every key of this upstream is resting after a rate limit or disabled; retry later"
#define LINGER_MS 5000

struct wreq {
    uv_write_t req;
    size_t len;
    char data[];
};

static void conn_process(struct conn *c);
static void conn_close(struct conn *c);
static void conn_finish(struct conn *c);

static const struct config *cfg_of(const struct conn *c)
{
    return c->w->cfg;
}

static void guard_limits_of(const struct conn *c, struct guard_limits *lim)
{
    const struct config *cfg = cfg_of(c);
    lim->max_request_line = cfg->max_request_line;
    lim->max_header_bytes = cfg->max_header_bytes;
    lim->max_headers = cfg->max_headers;
    lim->max_chunk_ext = cfg->max_chunk_ext;
    lim->max_body = cfg->max_body;
}

static size_t in_limit(const struct conn *c)
{
    const struct config *cfg = cfg_of(c);
    return cfg->max_request_line + cfg->max_header_bytes + 1024;
}

size_t conn_write_queue(const struct conn *c)
{
    return c->wq_alloc;
}

/* ---- llhttp callbacks: they only record spans and hand body bytes to the relay ---- */

static int on_method(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    headers_span(&c->method, &c->method_len, at, len);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    headers_span(&c->target, &c->target_len, at, len);
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (c->phase != PHASE_HEAD) /* a trailer field: never relayed */
        return 0;
    /* the guard counted the fields already: past max_headers is defensive */
    return headers_name_piece(c->hdrs, &c->nhdrs, cfg_of(c)->max_headers, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;

    if (c->phase == PHASE_HEAD)
        headers_value_piece(c->hdrs, c->nhdrs, at, len);
    return 0;
}

/* Upgrade is hop-by-hop: ferry relays such a request as a plain one (the upstream never sees the
 * Upgrade field), so llhttp must not treat what follows on the connection as another protocol. */
static int on_headers_complete(llhttp_t *p)
{
    p->upgrade = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->relay != NULL)
        relay_body_append(c->relay, at, len);
    c->acc.bytes_in += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->msg_complete = 1;
    return HPE_PAUSED; /* the next pipelined request waits for this one's response */
}

static const llhttp_settings_t parser_settings = {
    .on_method = on_method,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    c->wq_alloc -= ((struct wreq *)req)->len;
    free(req);
    if (c->closed)
        return;
    if (status < 0) {
        if (c->relay != NULL)
            relay_cancel(c->relay, END_CLIENT_CLOSED);
        else
            c->acc.end = END_CLIENT_CLOSED;
        conn_close(c);
        return;
    }
    c->t_write = uv_now(&c->w->loop);
    if (c->relay != NULL)
        relay_write_drained(c->relay);
}

int conn_send(struct conn *c, const char *a, size_t alen, const char *b, size_t blen, int chunked)
{
    char hex[24];
    size_t hlen = 0, tlen, total, skip = 0, off = 0;
    struct wreq *wr;
    uv_buf_t buf, parts[4];
    const char *pp[4];
    size_t pl[4];
    int rc, np = 0;

    if (c->closed || c->broken)
        return UV_ECANCELED;
    if (chunked && blen > 0) {
        hlen = fmt_hex(hex, blen);
        hex[hlen++] = '\r';
        hex[hlen++] = '\n';
    }
    tlen = chunked && blen > 0 ? 2 : 0;
    total = alen + hlen + blen + tlen;
    if (total == 0)
        return 0;
    pp[0] = a, pl[0] = alen;
    pp[1] = hex, pl[1] = hlen;
    pp[2] = b, pl[2] = blen;
    pp[3] = "\r\n", pl[3] = tlen;
    for (int i = 0; i < 4; i++)
        if (pl[i] > 0)
            parts[np++] = uv_buf_init((char *)pp[i], (unsigned int)pl[i]);
    if (c->wq_alloc == 0) {
        /* Straight to the socket when it takes it: no copy, no allocation, no callback. */
        rc = uv_try_write((uv_stream_t *)&c->tcp, parts, (unsigned int)np);
        if (rc == (int)total) {
            c->acc.bytes_out += total;
            c->t_write = uv_now(&c->w->loop);
            return 0;
        }
        if (rc < 0 && rc != UV_EAGAIN) {
            c->broken = 1; /* may be inside a libcurl callback: close on the next turn */
            worker_defer(c->w, c);
            return rc;
        }
        skip = rc > 0 ? (size_t)rc : 0;
    }
    wr = malloc(sizeof(*wr) + total - skip);
    if (wr == NULL) {
        c->broken = 1;
        worker_defer(c->w, c);
        return UV_ENOMEM;
    }
    for (int i = 0; i < 4; i++) { /* the part the socket did not take */
        size_t from = skip > pl[i] ? pl[i] : skip;
        skip -= from;
        if (pl[i] > from) {
            memcpy(wr->data + off, pp[i] + from, pl[i] - from);
            off += pl[i] - from;
        }
    }
    wr->len = off;
    wr->req.data = c;
    buf = uv_buf_init(wr->data, (unsigned int)off);
    c->wq_alloc += off;
    rc = uv_write(&wr->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write);
    if (rc < 0) {
        c->wq_alloc -= off;
        free(wr);
        c->broken = 1; /* may be inside a libcurl callback: close on the next turn */
        worker_defer(c->w, c);
        return rc;
    }
    c->acc.bytes_out += total;
    if (c->wq_alloc == off) {
        /* The client stopped taking bytes: from now on --write-timeout counts. */
        c->t_write = uv_now(&c->w->loop);
        conn_arm(c);
    }
    return 0;
}

/* ---- request end, closing ---- */

/* One usage record per request for the store thread (never waits on disk). */
static void record_usage(struct conn *c)
{
    const struct access *a = &c->acc;
    struct usage_record u;
    struct timespec ts;

    memset(&u, 0, sizeof(u));
    clock_gettime(CLOCK_REALTIME, &ts);
    u.ts_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    u.key_id = a->key_id;
    snprintf(u.upstream, sizeof(u.upstream), "%s", a->upstream);
    u.upstream_key = a->upstream_key;
    snprintf(u.model, sizeof(u.model), "%s", a->model);
    snprintf(u.path, sizeof(u.path), "%s", a->path);
    u.status = a->status;
    u.prompt_tokens = a->usage ? (int64_t)a->prompt_tokens : -1;
    u.completion_tokens = a->usage ? (int64_t)a->completion_tokens : -1;
    u.cached_tokens = a->usage ? (int64_t)a->cached_tokens : -1;
    u.reasoning_tokens = a->usage ? (int64_t)a->reasoning_tokens : -1;
    u.total_tokens = a->usage ? (int64_t)a->total_tokens : -1;
    u.bytes_in = a->bytes_in;
    u.bytes_out = a->bytes_out;
    u.ttfb_ms = a->t_first ? (double)(a->t_first - a->t_start) / 1e6 : -1;
    u.duration_ms = (double)(uv_hrtime() - a->t_start) / 1e6;
    snprintf(u.end, sizeof(u.end), "%s", log_end_name(a->end));
    u.partial = a->usage && !a->usage_complete;
    store_writer_push(c->w->store, &u);
}

static void log_request(struct conn *c)
{
    if (!c->acc_pending)
        return;
    c->acc_pending = 0;
    log_access(&c->acc, cfg_of(c)->access_log);
    if (c->w->store != NULL)
        record_usage(c);
}

static void free_handle(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles == 0 && !c->deferred)
        free(c);
}

/* Hard close: whatever is queued is dropped. */
static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    if (c->relay != NULL) {
        struct relay *r = c->relay;
        relay_cancel(r, c->acc.end == END_OK ? END_CLIENT_CLOSED : c->acc.end);
        c->relay = NULL;
        relay_free(r);
    }
    log_request(c);
    c->closed = 1;
    c->phase = PHASE_CLOSING;
    in_release(c);
    c->in_cap = c->in_len = c->in_pos = 0;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    c->timer_at = 0;
    uv_close((uv_handle_t *)&c->tcp, free_handle);
    uv_close((uv_handle_t *)&c->timer, free_handle);
    worker_conn_gone(c->w, c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closed)
        return;
    if (status < 0 || c->no_linger || c->eof) {
        conn_close(c);
        return;
    }
    /* Everything is written; read and discard until the client closes, briefly, so that a client
     * still sending its body does not get a reset that destroys the response in flight. */
    c->t_linger = uv_now(&c->w->loop);
    conn_arm(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Graceful close: flush what is queued, send FIN, linger. */
static void conn_finish(struct conn *c)
{
    if (c->closed || c->phase == PHASE_CLOSING)
        return;
    c->phase = PHASE_CLOSING;
    /* At the drain deadline a client that does not read gets one second, not the linger. */
    c->t_linger = c->no_linger ? uv_now(&c->w->loop) + 1000 - LINGER_MS : 0;
    c->in_len = c->in_pos = 0;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    if (!c->reading && !c->eof && uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    conn_arm(c);
}

/* Ends the current request: logs it, frees its relay, then either waits for the next request on
 * this connection or closes it. */
static void request_end(struct conn *c, int complete)
{
    struct relay *r = c->relay;

    if (r != NULL) {
        c->relay = NULL;
        relay_free(r);
    }
    log_request(c);
    if (!complete || c->close_after || !c->keepalive || !c->msg_complete || c->w->draining) {
        conn_finish(c);
        return;
    }
    c->phase = PHASE_IDLE;
    c->t_idle = uv_now(&c->w->loop);
    c->msg_complete = 0;
    if (llhttp_get_errno(&c->parser) == HPE_PAUSED)
        llhttp_resume(&c->parser);
}

void conn_response_done(struct conn *c, int complete)
{
    request_end(c, complete);
    if (!c->closed && c->phase == PHASE_IDLE)
        worker_defer(c->w, c); /* pipelined input may be waiting */
    else if (!c->closed)
        conn_arm(c);
}

/* Answers the current request with a generated response (already formatted in buf). */
static void local_reply(struct conn *c, const char *buf, size_t len, int status, int close)
{
    c->acc.status = status;
    if (c->acc.end == END_OK && status >= 400)
        c->acc.end = END_REJECTED;
    if (close)
        c->close_after = 1;
    conn_send(c, buf, len, NULL, 0, 0);
    if (!c->msg_complete)
        c->close_after = 1; /* the body was not read */
    request_end(c, 1);
}

/* For a request refused before llhttp parsed it: method and path from the raw request line, for
 * the access log only. */
static void note_raw_request_line(struct conn *c)
{
    const char *p = c->in ? c->in + c->in_pos : NULL, *end = c->in ? c->in + c->in_len : NULL;
    size_t m = 0;

    c->acc_pending = 1;
    if (p == NULL)
        return;
    while (p < end && (*p == '\r' || *p == '\n'))
        p++;
    while (p + m < end && m + 1 < sizeof(c->acc.method) && guard_is_tchar((unsigned char)p[m]))
        m++;
    memcpy(c->acc.method, p, m);
    c->acc.method[m] = '\0';
    if (p + m < end && p[m] == ' ') {
        const char *t = p + m + 1, *sp = memchr(t, ' ', (size_t)(end - t));
        const char *eol = memchr(t, '\r', (size_t)(end - t));
        if (sp == NULL || (eol != NULL && eol < sp))
            sp = eol ? eol : end;
        log_path(c->acc.path, sizeof(c->acc.path), t, (size_t)(sp - t));
    }
}

static void reject(struct conn *c, int status, const char *why)
{
    char buf[2048];
    const char *type, *code;
    size_t n;

    if (!c->acc_pending)
        note_raw_request_line(c);
    reply_kind(status, &type, &code);
    n = reply_error(buf, sizeof(buf), status, type, code, why, 1, 0);
    local_reply(c, buf, n, status, 1);
}

/* auth: keys refused the request: the SDKs must not retry it. Keep-alive is kept, the request
 * was read whole or will be closed by local_reply. */
static void refuse_key(struct conn *c, int status)
{
    char buf[2048];
    const char *type, *code;
    size_t n;

    reply_kind(status, &type, &code);
    n = reply_error_fields(buf, sizeof(buf), status, type, code,
                           status == 401 ? "invalid, revoked or expired relay key (send it as "
                                           "Authorization: Bearer sk-ferry-...)"
                                         : "this relay key may not use this model or upstream",
                           !c->keepalive, 0, "x-should-retry: false\r\n");
    c->acc.end = END_REJECTED;
    local_reply(c, buf, n, status, !c->keepalive);
}

/* A request body turned out bad (or too slow) after the relay started. */
static void body_fail(struct conn *c, int status, const char *why, enum end_reason end)
{
    if (c->relay != NULL && relay_head_sent(c->relay)) {
        relay_cancel(c->relay, end);
        conn_close(c);
        return;
    }
    if (c->relay != NULL) {
        struct relay *r = c->relay;
        relay_cancel(r, end);
        c->relay = NULL;
        relay_free(r);
    }
    c->acc.end = end;
    reject(c, status, why);
}

/* relay_body_end() refused: no route for the request's model, or no transfer. */
static void body_end_failed(struct conn *c, int rc)
{
    if (rc == -404)
        body_fail(c, 404, "no route for this request's path and model in the relay's configuration",
                  END_REJECTED);
    else if (rc == -503)
        body_fail(c, 503, NO_KEY_MESSAGE, END_UPSTREAM_ERROR);
    else if (rc == -401 || rc == -403) {
        struct relay *r = c->relay;
        relay_cancel(r, END_REJECTED);
        c->relay = NULL;
        relay_free(r);
        refuse_key(c, -rc);
    }
    else
        body_fail(c, -rc, "the relay could not start the upstream request", END_UPSTREAM_ERROR);
}

/* ---- request head ---- */

static void begin_request(struct conn *c)
{
    char saved[sizeof(c->acc.client)];

    memcpy(saved, c->acc.client, sizeof(saved));
    memset(&c->acc, 0, sizeof(c->acc));
    memcpy(c->acc.client, saved, sizeof(saved));
    c->acc.t_start = uv_hrtime();
    c->acc.upstream_key = -1;
    c->phase = PHASE_HEAD;
    c->t_head = uv_now(&c->w->loop);
    c->msg_complete = 0;
    c->close_after = c->w->draining;
    c->keepalive = 0;
    guard_head_init(&c->gh);
}

static int connection_has(const struct conn *c, const char *token)
{
    for (size_t i = 0; i < c->nhdrs; i++)
        if (headers_name_is(c->hdrs[i].name, c->hdrs[i].name_len, "connection") &&
            headers_list_has(c->hdrs[i].value, c->hdrs[i].value_len, token, strlen(token), 0))
            return 1;
    return 0;
}

/* The head is parsed: answer it here or start the relay. Returns 1 to go on parsing. */
static int handle_head(struct conn *c)
{
    char tmp[1024], buf[4096];
    const char *path;
    size_t plen, n;
    int has_body, status, rc;
    struct relay_req rq;

    c->http_minor = c->gh.http_minor;
    str_copy(c->acc.method, sizeof(c->acc.method), c->method, c->method_len);
    log_path(c->acc.path, sizeof(c->acc.path), c->target, c->target_len);
    c->acc_pending = 1;
    c->keepalive = c->http_minor == 1 && !connection_has(c, "close");
    for (size_t i = 0; i < c->nhdrs; i++) /* llhttp leaves trailing whitespace in values */
        while (c->hdrs[i].value_len > 0 && (c->hdrs[i].value[c->hdrs[i].value_len - 1] == ' ' ||
                                            c->hdrs[i].value[c->hdrs[i].value_len - 1] == '\t'))
            c->hdrs[i].value_len--;
    for (size_t i = 0; i < c->nhdrs; i++)
        if (c->hdrs[i].value == NULL)
            c->hdrs[i].value = "";

    has_body = c->gh.chunked || c->gh.has_cl; /* Content-Length: 0 is sent on as such */
    c->body_chunked = c->gh.chunked;
    c->body_left = c->gh.has_cl ? c->gh.cl : 0;
    if (c->gh.chunked)
        guard_chunk_init(&c->gc);

    if (c->target_len == 1 && c->target[0] == '*') {
        if (c->method_len == 7 && memcmp(c->method, "OPTIONS", 7) == 0) {
            n = (size_t)snprintf(buf, sizeof(buf),
                                 "HTTP/1.1 204 No Content\r\n" CORS_RESPONSE_FIELDS
                                 "Allow: GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS\r\n\r\n");
            local_reply(c, buf, n, 204, 0);
        } else {
            reject(c, 400, "the asterisk request target is only valid with OPTIONS");
        }
        return !c->closed && c->phase == PHASE_IDLE;
    }
    path = guard_target_path(c->target, c->target_len, tmp, sizeof(tmp), &plen);
    if (path == NULL) {
        reject(c, 400, "invalid request target");
        return 0;
    }
    if (c->gh.expect_other) {
        reject(c, 417, "unsupported Expect value (only 100-continue is supported)");
        return 0;
    }
    if (cors_is_preflight(c->method, c->method_len, c->hdrs, c->nhdrs)) {
        n = cors_preflight_response(buf, sizeof(buf), c->hdrs, c->nhdrs,
                                    !c->keepalive || c->close_after || !c->msg_complete);
        if (n == 0) {
            reject(c, 431, "preflight request fields too large");
            return 0;
        }
        local_reply(c, buf, n, 204, !c->msg_complete);
        return !c->closed && c->phase == PHASE_IDLE;
    }

    memset(&rq, 0, sizeof(rq));
    rq.method = c->method;
    rq.method_len = c->method_len;
    rq.path = path;
    rq.path_len = plen;
    rq.hdrs = c->hdrs;
    rq.nhdrs = c->nhdrs;
    rq.has_body = has_body;
    rq.chunked = c->gh.chunked;
    rq.content_length = c->gh.has_cl ? c->gh.cl : 0;
    rq.http_minor = c->http_minor;
    c->relay = relay_start(c, &rq, &status);
    if (c->relay == NULL) {
        if (status == 404) {
            reject(c, 404, "no route for this request in the relay's configuration");
            return 0;
        }
        if (status == 503) {
            reject(c, 503, NO_KEY_MESSAGE);
            return 0;
        }
        if (status == 401 || status == 403) {
            refuse_key(c, status);
            return !c->closed && c->phase == PHASE_IDLE;
        }
        c->acc.end = END_UPSTREAM_ERROR;
        c->acc.status = 500;
        n = reply_error(buf, sizeof(buf), 500, "relay_error", "relay_error",
                        "the relay could not start the upstream request", 1, 0);
        local_reply(c, buf, n, 500, 1);
        return 0;
    }
    if (has_body && !c->msg_complete && c->gh.expect_continue && c->http_minor == 1)
        conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL, 0, 0);
    c->phase = c->msg_complete ? PHASE_WAIT : PHASE_BODY;
    if (c->msg_complete && has_body) { /* Content-Length: 0 */
        rc = relay_body_end(c->relay);
        if (rc != 0) {
            body_end_failed(c, rc);
            return 0;
        }
    }
    return 1;
}

/* Returns 1 when the phase moved on. */
static int process_head(struct conn *c)
{
    struct guard_limits lim;
    const char *why = NULL;
    size_t avail = c->in_len - c->in_pos;
    llhttp_errno_t err;
    long r;

    guard_limits_of(c, &lim);
    r = guard_head_scan(&c->gh, &lim, c->in + c->in_pos, avail, &why);
    if (r == 0)
        return 0;
    if (r < 0) {
        reject(c, (int)-r, why);
        return 0;
    }
    c->hdrs = c->w->hdr_scratch;
    memset(c->hdrs, 0, sizeof(struct hdr)); /* on_header_field fills each entry it moves to */
    c->nhdrs = 0;
    c->method = c->target = NULL;
    c->method_len = c->target_len = 0;
    err = llhttp_execute(&c->parser, c->in + c->in_pos, (size_t)r);
    if (c->hdrs[0].name != NULL)
        c->nhdrs++;
    if ((err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) || c->method == NULL ||
        c->target == NULL) {
        const char *reason = llhttp_get_error_reason(&c->parser);
        c->hdrs = NULL;
        reject(c, 400, reason && *reason ? reason : "malformed request");
        return 0;
    }
    if (err == HPE_PAUSED_UPGRADE) {
        c->msg_complete = 1; /* defensive: on_headers_complete clears upgrade, CONNECT is refused */
        c->close_after = 1;
    }
    c->in_pos += (size_t)r;
    r = handle_head(c);
    c->hdrs = NULL;
    c->nhdrs = 0;
    return (int)r;
}

/* ---- request body ---- */

static int process_body(struct conn *c)
{
    struct guard_limits lim;
    size_t avail = c->in_len - c->in_pos, room, used;
    const char *why = NULL, *start = c->in + c->in_pos;
    llhttp_errno_t err;

    if (avail == 0 || c->relay == NULL)
        return 0;
    room = relay_body_room(c->relay);
    if (room == 0)
        return 0;
    used = avail < room ? avail : room;
    if (c->body_chunked) {
        size_t n = used;
        int rc;
        guard_limits_of(c, &lim);
        rc = guard_chunk_feed(&c->gc, &lim, start, n, &used, &why);
        if (rc < 0) {
            body_fail(c, -rc, why, END_REJECTED);
            return 0;
        }
    } else if (used > c->body_left) {
        used = (size_t)c->body_left;
    }
    err = llhttp_execute(&c->parser, start, used);
    if (err == HPE_PAUSED && llhttp_get_error_pos(&c->parser) != start + used)
        err = HPE_INVALID_CHUNK_SIZE; /* llhttp and the guard disagree on where the body ends */
    if (err != HPE_OK && err != HPE_PAUSED) {
        body_fail(c, 400, "malformed request body framing", END_REJECTED);
        return 0;
    }
    if (c->body_chunked && c->gc.state == GC_DONE && !c->msg_complete) {
        body_fail(c, 400, "malformed request body framing", END_REJECTED);
        return 0;
    }
    c->in_pos += used;
    if (!c->body_chunked)
        c->body_left -= used;
    if (c->msg_complete) {
        c->phase = PHASE_WAIT;
        int rc = relay_body_end(c->relay);
        if (rc != 0) {
            body_end_failed(c, rc);
            return 0;
        }
    }
    relay_body_wake(c->relay);
    return used > 0;
}

/* ---- input ---- */

static void update_reading(struct conn *c)
{
    int want;

    if (c->closed)
        return;
    if (c->eof)
        want = 0;
    else if (c->phase == PHASE_CLOSING)
        want = 1;
    else if (c->in_len < c->in_cap || c->in == NULL)
        want = 1;
    else
        want = c->phase == PHASE_HEAD && c->in_cap < in_limit(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
}

static void conn_process(struct conn *c)
{
    while (!c->closed && !c->broken) {
        enum conn_phase before = c->phase;
        int moved = 0;

        if (c->phase == PHASE_IDLE && c->in_len > c->in_pos)
            begin_request(c);
        if (c->phase == PHASE_HEAD)
            moved = process_head(c);
        else if (c->phase == PHASE_BODY)
            moved = process_body(c);
        if (!moved && c->phase == before)
            break;
    }
    if (c->closed)
        return;
    if (c->broken) {
        conn_close(c);
        return;
    }
    if (c->phase != PHASE_CLOSING) {
        if (c->in_pos == c->in_len) {
            c->in_pos = c->in_len = 0;
            if (c->phase == PHASE_IDLE || c->phase == PHASE_WAIT) {
                /* Nothing buffered: an idle connection or an open stream holds no input buffer
                 * (one is allocated again if pipelined bytes arrive). */
                in_release(c);
                c->in_cap = 0;
            }
        } else if (c->in_pos > 0 && (c->phase != PHASE_HEAD || c->in_len == c->in_cap)) {
            /* The head scanner's offsets are relative to the head's start, which moves to 0. */
            memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
            c->in_len -= c->in_pos;
            c->in_pos = 0;
        }
    }
    update_reading(c);
    conn_arm(c);
}

/* Input buffers of the initial size go back to the worker for the next request: one malloc and
 * one free of 8 KiB per request cost more than the rest of the request's allocations. */
static void in_take(struct conn *c)
{
    struct worker *w = c->w;

    c->in = w->ninbufs > 0 ? w->inbufs[--w->ninbufs] : malloc(IN_INITIAL);
    c->in_cap = c->in ? IN_INITIAL : 0;
}

static void in_release(struct conn *c)
{
    struct worker *w = c->w;
    int cache = (int)(sizeof(w->inbufs) / sizeof(w->inbufs[0]));

    if (c->in != NULL && c->in_cap == IN_INITIAL && w->ninbufs < cache)
        w->inbufs[w->ninbufs++] = c->in;
    else
        free(c->in);
    c->in = NULL;
    c->in_cap = 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    size_t want;

    (void)suggested;
    if (c->phase == PHASE_CLOSING) { /* discarding: reuse whatever we have */
        if (c->in == NULL)
            in_take(c);
        c->in_len = c->in_pos = 0;
        *buf = uv_buf_init(c->in, (unsigned int)c->in_cap);
        return;
    }
    if (c->in == NULL) {
        in_take(c);
    } else if (c->in_len == c->in_cap && c->in_cap < in_limit(c)) {
        char *n;
        want = c->in_cap * 2;
        if (want > in_limit(c))
            want = in_limit(c);
        n = realloc(c->in, want);
        if (n != NULL) {
            c->in = n;
            c->in_cap = want;
        }
    }
    *buf = uv_buf_init(c->in ? c->in + c->in_len : NULL, (unsigned int)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    (void)buf;
    if (c->closed)
        return;
    if (nread == 0 || nread == UV_ENOBUFS) {
        if (nread == UV_ENOBUFS) {
            uv_read_stop(s);
            c->reading = 0;
        }
        return;
    }
    if (nread < 0) {
        /* EOF or error. A client that leaves mid-request cancels the upstream call; so does a
         * half-close, as in nginx (the two cannot be told apart before writing), unless
         * --half-close: then a complete request keeps its response, and a client that really
         * left is noticed at the first failed write. */
        if (nread == UV_EOF && cfg_of(c)->half_close && c->phase == PHASE_WAIT &&
            c->relay != NULL) {
            uv_read_stop(s);
            c->reading = 0;
            c->eof = 1;
            c->close_after = 1;
            conn_arm(c);
            return;
        }
        if (c->relay != NULL)
            relay_cancel(c->relay, END_CLIENT_CLOSED);
        else if (c->acc_pending)
            c->acc.end = END_CLIENT_CLOSED;
        conn_close(c);
        return;
    }
    if (c->phase == PHASE_CLOSING) {
        c->in_len = c->in_pos = 0;
        return;
    }
    c->in_len += (size_t)nread;
    c->t_read = uv_now(&c->w->loop);
    conn_process(c);
}

/* ---- timers ---- */

static void deadline_min(uint64_t *d, uint64_t t)
{
    if (t != 0 && (*d == 0 || t < *d))
        *d = t;
}

static void on_timer(uv_timer_t *t);

void conn_arm(struct conn *c)
{
    const struct config *cfg = cfg_of(c);
    uint64_t d = 0, now = uv_now(&c->w->loop);

    if (c->closed)
        return;
    switch (c->phase) {
    case PHASE_IDLE: deadline_min(&d, c->t_idle + cfg->keepalive_timeout); break;
    case PHASE_HEAD: deadline_min(&d, c->t_head + cfg->head_timeout); break;
    case PHASE_BODY:
        if (c->reading)
            deadline_min(&d, c->t_read + cfg->body_timeout);
        break;
    case PHASE_WAIT: break;
    case PHASE_CLOSING:
        if (c->t_linger)
            deadline_min(&d, c->t_linger + LINGER_MS);
        break;
    }
    if (conn_write_queue(c) > 0)
        deadline_min(&d, c->t_write + cfg->write_timeout);
    if (c->relay != NULL)
        deadline_min(&d, relay_deadline(c->relay));
    /* Lazily: a timer already due no later than d stays (when it fires, on_timer looks at every
     * deadline and arms again), so a kept connection does not restart its timer per request. */
    if (d == 0 || (c->timer_at != 0 && c->timer_at <= d))
        return;
    c->timer_at = d;
    uv_timer_start(&c->timer, on_timer, d > now ? d - now : 0, 0);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;
    const struct config *cfg = cfg_of(c);
    uint64_t now = uv_now(&c->w->loop), d;

    c->timer_at = 0;
    if (conn_write_queue(c) > 0 && now >= c->t_write + cfg->write_timeout) {
        c->acc.end = END_TIMEOUT; /* the client stopped reading */
        if (c->relay != NULL)
            relay_cancel(c->relay, END_TIMEOUT);
        conn_close(c);
        return;
    }
    switch (c->phase) {
    case PHASE_IDLE:
        if (now >= c->t_idle + cfg->keepalive_timeout) {
            conn_close(c);
            return;
        }
        break;
    case PHASE_HEAD:
        if (now >= c->t_head + cfg->head_timeout) {
            c->acc.end = END_TIMEOUT;
            reject(c, 408, "the request head did not arrive in time");
            return;
        }
        break;
    case PHASE_BODY:
        if (c->reading && now >= c->t_read + cfg->body_timeout) {
            body_fail(c, 408, "the request body stopped arriving", END_TIMEOUT);
            return;
        }
        break;
    case PHASE_WAIT: break;
    case PHASE_CLOSING:
        if (c->t_linger && now >= c->t_linger + LINGER_MS) {
            conn_close(c);
            return;
        }
        break;
    }
    if (c->relay != NULL) {
        d = relay_deadline(c->relay);
        if (d != 0 && now >= d) {
            relay_expire(c->relay, now);
            return;
        }
    }
    conn_arm(c);
}

/* ---- lifecycle ---- */

void conn_accept(struct worker *w, uv_stream_t *listener)
{
    struct conn *c = calloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    if (c == NULL)
        return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    c->open_handles = 1;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
        c->closed = 1;
        uv_close((uv_handle_t *)&c->tcp, free_handle);
        return;
    }
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)&ss, c->acc.client, sizeof(c->acc.client));
        else if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->acc.client, sizeof(c->acc.client));
    }
    if (c->acc.client[0] == '\0')
        snprintf(c->acc.client, sizeof(c->acc.client), "-");
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    c->phase = PHASE_IDLE;
    c->t_idle = uv_now(&w->loop);
    worker_conn_add(w, c);
    if (w->nconns > worker_max_connections(w)) {
        /* Over the cap: a fast, readable refusal instead of a queue that grows. */
        c->no_linger = 1;
        c->msg_complete = 1;
        snprintf(c->acc.method, sizeof(c->acc.method), "-");
        c->acc.t_start = uv_hrtime();
        c->acc_pending = 1;
        reject(c, 503, "too many open connections to this relay; retry later");
        return;
    }
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
        c->reading = 1;
    conn_arm(c);
}

void conn_wake_input(struct conn *c)
{
    worker_defer(c->w, c);
}

void conn_deferred(struct conn *c)
{
    if (c->closed)
        return;
    if (c->broken) {
        if (c->relay != NULL)
            relay_cancel(c->relay, END_CLIENT_CLOSED);
        conn_close(c);
        return;
    }
    if (c->relay != NULL)
        relay_flush(c->relay);
    conn_process(c);
}

void conn_drain(struct conn *c)
{
    if (c->closed)
        return;
    if (c->phase == PHASE_IDLE && c->relay == NULL) {
        conn_close(c);
        return;
    }
    c->close_after = 1;
}

void conn_kill(struct conn *c)
{
    if (c->closed)
        return;
    c->no_linger = 1;
    if (c->relay != NULL && !relay_head_sent(c->relay)) {
        /* Still waiting for the upstream: an answer the SDK can read, not a dropped connection
         * (which it would retry, sending a billable request again). */
        body_fail(c, 503, "the relay is shutting down; the request was cancelled", END_TIMEOUT);
        return;
    }
    if (c->relay != NULL)
        relay_cancel(c->relay, END_TIMEOUT);
    conn_close(c);
}
