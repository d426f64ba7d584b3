/* relay — one relayed request from head to end (see relay.h).
 *
 * libcurl calls on_header/on_data/on_upload from inside curl_multi_socket_action; those only
 * copy bytes, set flags and return pause or abort codes. Everything that ends or restarts a
 * transfer (finish, redirects, cancellation) runs outside libcurl callbacks: from
 * relay_upstream_done() (after socket_action returned) or from libuv callbacks. */
#include "relay.h"

#include <openssl/ssl.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "config.h"
#include "buf.h"
#include "conn.h"
#include "cors.h"
#include "headers.h"
#include "jsonedit.h"
#include "pool.h"
#include "usage.h"
#include "reply.h"
#include "server.h"
#include "store.h"

enum framing { FRAME_NONE, FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE };

struct relay {
    struct upstream_job job;   /* first: libcurl's PRIVATE points here */
    struct conn *c;
    struct worker *w;
    const struct config *cfg;
    CURL *easy;                /* the transfer, when libcurl carries it; NULL once over */
    struct h1c_req *hx;        /* the transfer, when ferry's own client carries it */
    struct upstream_def *up;   /* chosen by the routes; NULL until then */
    int key;                   /* pool key in use (-1: the client's own credentials) */
    struct keyring *ring;      /* auth: keys — the snapshot the client's key was found in */
    const struct key_entry *client_key; /* valid while ring is held */
    int attempts;              /* transfers started after the first (pool retries) */
    struct curl_slist *sent;   /* hdrs + the pool key, as given to libcurl */
    struct fblock *fields;     /* where hdrs and sent live (see falloc) */
    int holding;               /* an error answer held back until judged (pool upstreams) */
    int tracked;               /* the path carries usage (chat, embeddings, responses, ...) */
    enum usage_kind kind;
    int injected;              /* ferry added stream_options.include_usage to the request */
    struct usage *tap;         /* reads the response's usage as it passes; NULL when untracked */
    struct usage_filter *filter; /* removes what the injection added from the client's stream */
    struct buf fo;             /* the filter's output for one upstream read, sent as one chunk */
    struct buf hold;
    char *path;                /* origin-form target as received (in the fields' arena) */
    size_t path_len;
    struct curl_slist *hdrs;   /* request fields as sent upstream */
    char *url;
    char method[24];
    int is_head;
    int http_minor;

    /* request body: a linear buffer; it is compacted only when full, so a body that fits is
     * still whole at the end and can be replayed for a redirect */
    int has_body, chunked;
    int buffered;              /* small body of known length: sent from memory once complete */
    int started;               /* the first transfer was started */
    uint64_t content_length;
    char *body;
    size_t body_cap, body_rd, body_wr;
    int body_done, body_discarded, input_blocked;
    int upload_paused, recv_paused;

    /* response */
    struct buf rh;             /* header lines of the upstream's current response */
    int status;
    char reason[64];
    int head_sent;
    char *head_out;            /* the client's response head, not yet written: it goes out with
                                * the first body bytes, or alone at the end of this loop turn */
    size_t head_out_len;
    enum framing framing;
    int fail_status;
    const char *fail_msg;

    int redirects;
    char *redirect_to;
    int cross_origin;
    int redirect_status;

    uint64_t t_sent;           /* uv_now() when the request was fully handed to libcurl */
    uint64_t t_last;           /* uv_now() of the last upstream byte */
    int timed_out;
    char errbuf[CURL_ERROR_SIZE];
};

/* An upstream transfer is in progress. */
static int in_transfer(const struct relay *r)
{
    return r->easy != NULL || r->hx != NULL;
}

/* Ends the transfer in progress, if any (never from inside one of its callbacks). */
static void stop_transfer(struct relay *r)
{
    if (r->easy != NULL)
        upstream_remove(&r->w->up, r->easy);
    if (r->hx != NULL)
        h1c_stop(r->hx);
    r->easy = NULL;
    r->hx = NULL;
}

static uint64_t now_ms(const struct relay *r)
{
    return uv_now(&r->w->loop);
}

int relay_head_sent(const struct relay *r)
{
    return r->head_sent;
}

/* ---- request fields ---- */

static int line_name_is(const char *line, const char *want)
{
    size_t n = strcspn(line, ":;");
    return headers_name_is(line, n, want);
}

static int is_credential(const char *line)
{
    static const char *const names[] = {"authorization", "cookie", "api-key", "x-api-key",
                                        "openai-organization", "openai-project"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (line_name_is(line, names[i]))
            return 1;
    return 0;
}

static int is_body_field(const char *line)
{
    return line_name_is(line, "content-type") || line_name_is(line, "content-encoding") ||
           line_name_is(line, "content-language") || line_name_is(line, "content-location");
}

/* Request fields are curl_slist nodes (what libcurl's CURLOPT_HTTPHEADER reads and never
 * frees) allocated, with their strings, from one arena per relay: no allocation per field, and a
 * filtered copy of a list shares the strings of the one it came from. Freed (and wiped: a pool
 * key is among them) with the relay. */
struct fblock {
    struct fblock *next;
    size_t used, cap;
    char data[];
};

static void *falloc(struct relay *r, size_t n)
{
    struct fblock *b = r->fields;
    void *p;

    n = (n + 7) & ~(size_t)7;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > 256 ? n : 256; /* request_fields() sizes the first block exactly */
        b = malloc(sizeof(*b) + cap);
        if (b == NULL)
            return NULL;
        b->next = r->fields;
        b->used = 0;
        b->cap = cap;
        r->fields = b;
    }
    p = b->data + b->used;
    b->used += n;
    return p;
}

static void fields_free(struct relay *r)
{
    while (r->fields != NULL) {
        struct fblock *b = r->fields;
        r->fields = b->next;
        explicit_bzero(b->data, b->used);
        free(b);
    }
}

/* Appends a node for s, which lives as long as the relay (a string of the arena, a literal). */
static struct curl_slist *link_field(struct relay *r, struct curl_slist *l, const char *s, int *ok)
{
    struct curl_slist *n = falloc(r, sizeof(*n)), *t;

    if (n == NULL) {
        *ok = 0;
        return l;
    }
    n->data = (char *)s;
    n->next = NULL;
    if (l == NULL)
        return n;
    for (t = l; t->next != NULL; t = t->next)
        ;
    t->next = n;
    return l;
}

/* Appends a copy of s. */
static struct curl_slist *append(struct relay *r, struct curl_slist *l, const char *s, int *ok)
{
    size_t len = strlen(s);
    char *c = falloc(r, len + 1);

    if (c == NULL) {
        *ok = 0;
        return l;
    }
    memcpy(c, s, len + 1);
    return link_field(r, l, c, ok);
}

/* The fields that go upstream, in r's arena; its first block also holds extra more bytes. */
static struct curl_slist *request_fields(struct relay *r, const struct relay_req *rq,
                                         const struct headers_set *drop, size_t extra, int *ok)
{
    struct curl_slist *l = NULL, *tail = NULL;
    int keep[rq->nhdrs + 1];
    size_t need = 4 * sizeof(struct curl_slist) + 64 + ((extra + 7) & ~(size_t)7);

    headers_filter_request(rq->hdrs, rq->nhdrs, drop, keep);
    /* One block that fits the list (an open stream keeps it): no slack held per stream. */
    for (size_t i = 0; i < rq->nhdrs; i++)
        if (keep[i])
            need += sizeof(struct curl_slist) + ((rq->hdrs[i].name_len + rq->hdrs[i].value_len + 3 + 7) & ~(size_t)7);
    if (r->fields == NULL && falloc(r, need) != NULL)
        r->fields->used = 0;
    for (size_t i = 0; i < rq->nhdrs && *ok; i++) {
        const struct hdr *h = &rq->hdrs[i];
        struct curl_slist *node;
        char *line;
        size_t n = h->name_len;

        if (!keep[i])
            continue;
        node = falloc(r, sizeof(*node));
        line = falloc(r, h->name_len + h->value_len + 3);
        if (node == NULL || line == NULL) {
            *ok = 0;
            break;
        }
        /* libcurl removes a field given as "Name:"; "Name;" sends it empty. */
        memcpy(line, h->name, n);
        if (h->value_len == 0) {
            line[n++] = ';';
        } else {
            line[n++] = ':';
            line[n++] = ' ';
            memcpy(line + n, h->value, h->value_len);
            n += h->value_len;
        }
        line[n] = '\0';
        node->data = line;
        node->next = NULL;
        if (tail != NULL)
            tail->next = node;
        else
            l = node;
        tail = node;
    }
    /* libcurl's own additions would change what the client sent. */
    if (headers_find(rq->hdrs, rq->nhdrs, "accept") < 0)
        l = link_field(r, l, "Accept:", ok);
    if (rq->has_body && headers_find(rq->hdrs, rq->nhdrs, "content-type") < 0)
        l = link_field(r, l, "Content-Type:", ok); /* libcurl would add a form type to POSTFIELDS */
    l = link_field(r, l, "Expect:", ok);
    return l;
}

/* ---- libcurl callbacks ---- */

static int parse_status_line(struct relay *r, const char *p, size_t n)
{
    const char *sp = memchr(p, ' ', n), *end = p + n;
    int code = 0;

    if (sp == NULL || end - sp < 4)
        return -1;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9')
            return -1;
        code = code * 10 + (sp[i] - '0');
    }
    r->status = code;
    r->reason[0] = '\0';
    if (end - sp > 5 && sp[4] == ' ') {
        const char *rs = sp + 5, *re = end;
        while (re > rs && (re[-1] == '\r' || re[-1] == '\n' || re[-1] == ' '))
            re--;
        str_copy(r->reason, sizeof(r->reason), rs, (size_t)(re - rs));
    }
    return 0;
}

#define MAX_FIELDS H1C_MAX_FIELDS /* response fields relayed (libcurl's beyond it are dropped,
                                   * the built-in client refuses such a head) */

/* Splits the collected header lines into fields (pointing into r->rh). Returns the count. */
static size_t parse_fields(struct relay *r, struct hdr *h, size_t cap)
{
    size_t n = 0, i = 0;

    while (i < r->rh.len && n < cap) {
        char *line = r->rh.data + i, *eol = memchr(line, '\n', r->rh.len - i), *colon;
        size_t len = eol ? (size_t)(eol - line) : r->rh.len - i;
        i += len + 1;
        while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
            len--;
        colon = memchr(line, ':', len);
        if (colon == NULL || colon == line)
            continue;
        h[n].name = line;
        h[n].name_len = (size_t)(colon - line);
        h[n].value = colon + 1;
        h[n].value_len = len - h[n].name_len - 1;
        while (h[n].value_len > 0 && (h[n].value[0] == ' ' || h[n].value[0] == '\t')) {
            h[n].value++;
            h[n].value_len--;
        }
        n++;
    }
    return n;
}

static int origin_of(const char *url, char *out, size_t cap)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int rc = -1;

    if (u == NULL)
        return -1;
    if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        snprintf(out, cap, "%s://%s:%s", scheme, host, port);
        for (char *p = out; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* A redirect we can follow: remember where to and abort this response. */
static int want_redirect(struct relay *r, const struct hdr *h, size_t n)
{
    int s = r->status, loc, keep_body;
    CURLU *u;
    char *to = NULL, *scheme = NULL;

    if (s != 301 && s != 302 && s != 303 && s != 307 && s != 308)
        return 0;
    if (r->redirects >= r->cfg->max_redirects)
        return 0;
    loc = headers_find(h, n, "location");
    if (loc < 0 || h[loc].value_len == 0)
        return 0;
    keep_body = r->has_body && !(s == 303 || ((s == 301 || s == 302) && !strcmp(r->method, "POST")));
    if (keep_body && (!r->body_done || r->body_discarded))
        return 0; /* a streamed body cannot be sent again: the client gets the redirect */
    u = curl_url();
    if (u == NULL)
        return 0;
    {
        char locz[4096];
        if (h[loc].value_len >= sizeof(locz)) {
            curl_url_cleanup(u);
            return 0;
        }
        memcpy(locz, h[loc].value, h[loc].value_len);
        locz[h[loc].value_len] = '\0';
        if (curl_url_set(u, CURLUPART_URL, r->url, 0) != CURLUE_OK ||
            curl_url_set(u, CURLUPART_URL, locz, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
            (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) ||
            curl_url_get(u, CURLUPART_URL, &to, 0) != CURLUE_OK) {
            curl_free(scheme);
            curl_url_cleanup(u);
            return 0;
        }
    }
    r->redirect_to = strdup(to);
    r->redirect_status = s;
    curl_free(to);
    curl_free(scheme);
    curl_url_cleanup(u);
    return r->redirect_to != NULL;
}

/* Sends the head of the answer (fields[0..n), at most MAX_FIELDS) to the client, or holds it
 * until the first body bytes. Returns 0, or -1 (also when a redirect is to be followed). */
static int send_fields(struct relay *r, const struct hdr *fields, size_t n)
{
    struct conn *c = r->c;
    int keep[MAX_FIELDS];
    size_t len = 0, cap;
    int cl = headers_find(fields, n, "content-length");
    int te = headers_find(fields, n, "transfer-encoding");
    int ct = headers_find(fields, n, "content-type");
    int no_body = r->is_head || r->status == 204 || r->status == 304;
    int streamed, close;
    char *head, stack[8192];

    if (want_redirect(r, fields, n))
        return -1;
    if (no_body)
        r->framing = FRAME_NONE;
    else if (cl >= 0 && te < 0)
        r->framing = FRAME_LENGTH;
    else if (r->http_minor == 1)
        r->framing = FRAME_CHUNKED;
    else
        r->framing = FRAME_CLOSE;
    if (r->framing == FRAME_CLOSE || (r->has_body && !r->body_done))
        c->close_after = 1; /* an unread request body cannot be left on a kept connection */
    close = c->close_after || !c->keepalive || r->w->draining;
    streamed = (!no_body && r->framing != FRAME_LENGTH) ||
               (ct >= 0 && fields[ct].value_len >= 17 &&
                strncasecmp(fields[ct].value, "text/event-stream", 17) == 0);
    headers_filter_response(fields, n, r->framing == FRAME_LENGTH || no_body, keep);

    cap = 256 + sizeof(CORS_RESPONSE_FIELDS);
    for (size_t i = 0; i < n; i++)
        cap += fields[i].name_len + fields[i].value_len + 4;
    head = cap <= sizeof(stack) ? stack : malloc(cap);
    if (head == NULL)
        return -1;
    {
        const char *reason = r->reason[0] ? r->reason : reply_reason(r->status);
        size_t rl = strlen(reason);
        memcpy(head, "HTTP/1.1 ", 9);
        len = 9 + fmt_dec(head + 9, (unsigned)r->status);
        head[len++] = ' ';
        memcpy(head + len, reason, rl);
        len += rl;
        memcpy(head + len, "\r\n", 2);
        len += 2;
    }
    for (size_t i = 0; i < n; i++) {
        if (!keep[i])
            continue;
        /* With a pool key or in gateway mode, the account behind the call is not the client's
         * business. */
        if ((r->key >= 0 || r->client_key != NULL) && (headers_name_is(fields[i].name, fields[i].name_len, "openai-organization") ||
                            headers_name_is(fields[i].name, fields[i].name_len, "openai-project")))
            continue;
        memcpy(head + len, fields[i].name, fields[i].name_len);
        len += fields[i].name_len;
        memcpy(head + len, ": ", 2);
        len += 2;
        memcpy(head + len, fields[i].value, fields[i].value_len);
        len += fields[i].value_len;
        memcpy(head + len, "\r\n", 2);
        len += 2;
    }
#define PUT(s) (memcpy(head + len, s, sizeof(s) - 1), len += sizeof(s) - 1)
    PUT(CORS_RESPONSE_FIELDS);
    if (streamed)
        PUT("X-Accel-Buffering: no\r\n");
    if (r->framing == FRAME_CHUNKED)
        PUT("Transfer-Encoding: chunked\r\n");
    if (close)
        PUT("Connection: close\r\n");
    PUT("\r\n");
#undef PUT
    if (r->tracked && !no_body && r->status >= 200 && r->status < 300) {
        int sse = ct >= 0 && fields[ct].value_len >= 17 &&
                  strncasecmp(fields[ct].value, "text/event-stream", 17) == 0;
        r->tap = malloc(sizeof(*r->tap));
        if (r->tap != NULL) {
            usage_init(r->tap, r->kind, sse);
            /* Only a stream framed by ferry may lose bytes: a Content-Length stays true. */
            if (r->injected && sse && r->framing != FRAME_LENGTH) {
                r->filter = malloc(sizeof(*r->filter));
                if (r->filter != NULL)
                    usage_filter_init(r->filter, r->tap);
            }
        }
    }
    r->head_sent = 1;
    buf_free(&r->rh); /* the fields are in the client's head now; a long stream keeps no copy */
    c->acc.status = r->status;
    c->acc.t_first = uv_hrtime();
    r->t_last = now_ms(r);
    /* One write for head and body when they came in one read (a small answer): held until the
     * first body bytes, or until relay_flush() at the end of this loop turn. */
    if (head == stack) {
        head = malloc(len);
        if (head == NULL)
            return -1;
        memcpy(head, stack, len);
    }
    r->head_out = head;
    r->head_out_len = len;
    worker_defer(r->w, c);
    return 0;
}

/* Sends the held head (if any), then b (framed as one chunk when chunked). */
static int to_client(struct relay *r, const char *b, size_t n, int chunked)
{
    int rc = conn_send(r->c, r->head_out, r->head_out_len, b, n, chunked);

    free(r->head_out);
    r->head_out = NULL;
    r->head_out_len = 0;
    return rc;
}

void relay_flush(struct relay *r)
{
    if (r->head_out != NULL)
        to_client(r, NULL, 0, 0);
}

/* The head from the lines in r->rh (libcurl's, or a held answer's). */
static int send_head(struct relay *r)
{
    struct hdr fields[MAX_FIELDS];

    return send_fields(r, fields, parse_fields(r, fields, MAX_FIELDS));
}

/* A response head from the built-in client, parsed already. */
static int on_h1_head(void *ud, const struct h1c_head *h)
{
    struct relay *r = ud;
    const struct hdr *fields = h->fields;
    size_t n = h->n, reason_len = h->reason_len;

    if (h->status < 200)
        return 0; /* interim response (100, 103): not relayed */
    r->status = h->status;
    r->c->acc.upstream_status = h->status;
    while (reason_len > 0 && h->reason[reason_len - 1] == ' ')
        reason_len--;
    str_copy(r->reason, sizeof(r->reason), h->reason, reason_len);
    if (r->key >= 0 && (r->status == 401 || r->status == 429 || r->status >= 500)) {
        /* judged at the end (another key may get a real answer): kept as lines */
        r->rh.len = 0;
        for (size_t i = 0; i < n; i++)
            if (buf_add(&r->rh, fields[i].name, fields[i].name_len, SIZE_MAX) != 0 ||
                buf_add(&r->rh, ": ", 2, SIZE_MAX) != 0 ||
                buf_add(&r->rh, fields[i].value, fields[i].value_len, SIZE_MAX) != 0 ||
                buf_add(&r->rh, "\r\n", 2, SIZE_MAX) != 0) {
                r->fail_msg = "out of memory for the upstream's head";
                return -1;
            }
        r->holding = 1;
        return 0;
    }
    return send_fields(r, fields, n);
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userp)
{
    struct relay *r = userp;
    size_t n = size * nitems;

    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        if (r->head_sent || parse_status_line(r, buf, n) != 0) {
            r->fail_msg = "malformed upstream status line";
            return 0;
        }
        r->c->acc.upstream_status = r->status;
        r->rh.len = 0;
        return n;
    }
    if (r->head_sent)
        return n; /* trailer fields: not relayed */
    if (n <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
        if (r->status < 200)
            return n; /* interim response (100, 103): not relayed */
        if (r->key >= 0 && (r->status == 401 || r->status == 429 || r->status >= 500)) {
            r->holding = 1; /* judged at the end: another key may get a real answer */
            return n;
        }
        return send_head(r) == 0 ? n : 0;
    }
    if (buf_add(&r->rh, buf, n, r->cfg->max_response_header_bytes) != 0) {
        r->fail_msg = "upstream response head too large";
        return 0;
    }
    return n;
}

#define HOLD_MAX 16384

/* The usage filter's output for one call, gathered so that one upstream read stays one write
 * (and one HTTP chunk) to the client, as without the filter. */
static int filter_out(void *ud, const char *p, size_t n)
{
    struct relay *r = ud;
    return buf_add(&r->fo, p, n, SIZE_MAX);
}

/* Runs the filter over n upstream bytes (or, with n == 0 and p == NULL, finishes it) and sends
 * what came out. Returns 0 or -1. */
static int filter_pass(struct relay *r, const char *p, size_t n)
{
    int rc;

    r->fo.len = 0;
    rc = p != NULL ? usage_filter_feed(r->filter, p, n, filter_out, r)
                   : usage_filter_finish(r->filter, filter_out, r);
    if (rc == 0 && r->fo.len > 0 &&
        to_client(r, r->fo.data, r->fo.len, r->framing == FRAME_CHUNKED) != 0)
        rc = -1;
    return rc;
}

/* The response is over (whole or not): pass on what the filter still holds and note the usage
 * read, for the access log. */
static void usage_end(struct relay *r, int flush)
{
    struct access *a = &r->c->acc;

    if (r->filter != NULL && flush)
        filter_pass(r, NULL, 0);
    if (r->tap == NULL)
        return;
    a->usage = 1;
    a->usage_complete = r->tap->complete;
    a->prompt_tokens = r->tap->prompt_tokens;
    a->completion_tokens = r->tap->completion_tokens;
    a->total_tokens = r->tap->total_tokens;
    a->cached_tokens = r->tap->cached_tokens;
    a->reasoning_tokens = r->tap->reasoning_tokens;
    snprintf(a->model, sizeof(a->model), "%s", r->tap->model);
}

/* Sends a held answer on to the client as it came. */
static int release_held(struct relay *r)
{
    r->holding = 0;
    if (send_head(r) != 0)
        return -1;
    if (r->hold.len > 0 && r->framing != FRAME_NONE)
        to_client(r, r->hold.data, r->hold.len, r->framing == FRAME_CHUNKED);
    r->hold.len = 0;
    return 0;
}

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userp)
{
    struct relay *r = userp;
    size_t n = size * nmemb;

    if (r->holding) {
        if (buf_add(&r->hold, ptr, n, HOLD_MAX) == 0)
            return n;
        /* Too long for an error answer: relay it as it is. */
        if (release_held(r) != 0)
            return 0;
    }
    if (!r->head_sent)
        return 0;
    if (conn_write_queue(r->c) >= r->cfg->buffer_size) {
        r->recv_paused = 1; /* resumed by relay_write_drained() */
        return CURL_WRITEFUNC_PAUSE;
    }
    r->t_last = now_ms(r);
    if (r->framing == FRAME_NONE || n == 0)
        return n;
    if (r->filter != NULL)
        return filter_pass(r, ptr, n) == 0 ? n : 0;
    if (r->tap != NULL)
        usage_feed(r->tap, ptr, n);
    if (to_client(r, ptr, n, r->framing == FRAME_CHUNKED) != 0)
        return 0;
    return n;
}

static size_t on_upload(char *buf, size_t size, size_t nitems, void *userp)
{
    struct relay *r = userp;
    size_t cap = size * nitems, avail = r->body_wr - r->body_rd;

    if (avail == 0) {
        if (r->body_done)
            return 0;
        r->upload_paused = 1; /* resumed by relay_body_wake() */
        return CURL_READFUNC_PAUSE;
    }
    if (avail > cap)
        avail = cap;
    memcpy(buf, r->body + r->body_rd, avail);
    r->body_rd += avail;
    if (r->input_blocked) {
        r->input_blocked = 0;
        conn_wake_input(r->c);
    }
    return avail;
}

/* ---- transfers ---- */

static void on_transfer_done(struct upstream_job *job, CURL *easy, CURLcode result);
static void finish(struct relay *r, CURLcode result);

/* An idle TLS connection then holds no read/write buffers (about 34 KiB each otherwise). */
static CURLcode on_ssl_ctx(CURL *e, void *ssl_ctx, void *userp)
{
    (void)e;
    (void)userp;
    SSL_CTX_set_mode((SSL_CTX *)ssl_ctx, SSL_MODE_RELEASE_BUFFERS);
    return CURLE_OK;
}

/* The fields for this attempt: the client's, plus a healthy pool key when the upstream has a
 * pool (never after a redirect left the upstream's origin). Returns 0, -503 when no key is
 * healthy, -500 without memory. */
static int apply_key(struct relay *r)
{
    struct curl_slist *l = NULL, *it;
    char line[4200];
    int ok = 1, k;

    r->sent = NULL;
    if (r->up->nkeys == 0 || r->cross_origin)
        return 0;
    k = pool_pick(r->up, pool_now(), r->key);
    if (k < 0)
        return -503;
    r->key = k;
    r->c->acc.upstream_key = k;
    for (it = r->hdrs; it != NULL && ok; it = it->next)
        l = link_field(r, l, it->data, &ok);
    pool_key_field(r->up, k, line, sizeof(line));
    l = append(r, l, line, &ok);
    explicit_bzero(line, sizeof(line));
    r->sent = l;
    return ok ? 0 : -500;
}

static void on_h1_done(void *ud, CURLcode result)
{
    struct relay *r = ud;

    r->hx = NULL;
    finish(r, result);
}

/* The same transfer on ferry's own client (see h1client.h). Returns 0, 1 when that client does
 * not carry it (libcurl does), or -500. */
static int start_h1(struct relay *r)
{
    struct h1c_opts o = {
        .url = r->url,
        .method = r->method,
        .no_response_body = r->is_head,
        .fields = r->sent ? r->sent : r->hdrs,
        .has_body = r->has_body,
        .chunked = r->has_body && !r->buffered && r->chunked,
        .content_length = r->content_length,
        .body = r->has_body && r->buffered ? r->body : NULL,
        .ca_file = r->up->ca_file,
        .proxy = r->up->proxy,
        .on_head = on_h1_head,
        .on_data = on_data,
        .on_read = on_upload,
        .on_done = on_h1_done,
        .ud = r,
        .errbuf = r->errbuf,
    };

    int rc = h1c_start(&r->w->h1, &o, &r->hx);

    if (rc == -EPROTONOSUPPORT)
        return 1;
    return rc == 0 ? 0 : -500;
}

/* Starts a transfer with the fields apply_key() settled. Returns 0 or -500. */
static int start_easy(struct relay *r)
{
    const struct config *cfg = r->cfg;
    CURL *e;

    r->errbuf[0] = '\0';
    r->upload_paused = r->recv_paused = 0;
    r->rh.len = 0;
    r->status = 0;
    r->started = 1;
    if (strcmp(cfg->upstream_client, "ferry") == 0) {
        int rc = start_h1(r);
        if (rc <= 0)
            return rc;
    }
    e = upstream_easy(&r->w->up);
    if (e == NULL)
        return -500;
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, &r->job);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_PATH_AS_IS, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)cfg->connect_timeout);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    /* libcurl's default 16 KiB receive buffer is most of what an open stream costs; SSE events
     * are far smaller. */
    curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)cfg->read_buffer_size);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->sent ? r->sent : r->hdrs);
    /* Only the configured proxy: environment variables must not reroute (or reveal) calls. */
    curl_easy_setopt(e, CURLOPT_PROXY, r->up->proxy);
    if (r->up->ca_file[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, r->up->ca_file);
    if (strncmp(r->url, "https:", 6) == 0)
        curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    if (r->is_head)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    else if (strcmp(r->method, "GET") != 0 || r->has_body)
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
    if (r->has_body && r->buffered) {
        /* From memory: no upload buffer, no read callbacks, and a redirect can replay it. */
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->content_length);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
    } else if (r->has_body) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READFUNCTION, on_upload);
        curl_easy_setopt(e, CURLOPT_READDATA, r);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
                         r->chunked ? (curl_off_t)-1 : (curl_off_t)r->content_length);
    }
    if (upstream_add(&r->w->up, e) != 0) {
        upstream_remove(&r->w->up, e);
        r->easy = NULL;
        return -500;
    }
    return 0;
}

/* Returns 0, or a negative HTTP status: -503 (no healthy pool key), -500. */
static int start_transfer(struct relay *r)
{
    int rc = apply_key(r);
    return rc != 0 ? rc : start_easy(r);
}

/* The top-level "model" string of a JSON object, for routing. Returns 0 and fills out, or -1
 * (not an object, no such member, not a plain string). Skips nested values and strings with
 * escapes correctly; never reads past n. */
static int body_model(const char *b, size_t n, char *out, size_t cap)
{
    size_t i = 0;
    int depth = 0, want_value = 0, is_key = 1;

    while (i < n && isspace((unsigned char)b[i]))
        i++;
    if (i == n || b[i] != '{')
        return -1;
    for (; i < n; i++) {
        char ch = b[i];
        if (ch == '"') {
            size_t start = ++i;
            int esc = 0;
            while (i < n && b[i] != '"') {
                if (b[i] == '\\') {
                    esc = 1;
                    i++;
                }
                i++;
            }
            if (i >= n)
                return -1;
            if (depth == 1 && want_value) {
                if (esc || i - start >= cap)
                    return -1;
                memcpy(out, b + start, i - start);
                out[i - start] = '\0';
                return 0;
            }
            if (depth == 1 && is_key)
                want_value = (i - start == 5 && memcmp(b + start, "model", 5) == 0) ? 2 : 0;
            continue;
        }
        if (ch == '{' || ch == '[')
            depth++;
        else if (ch == '}' || ch == ']')
            depth--;
        else if (depth == 1 && ch == ':') {
            is_key = 0;
            if (want_value == 2)
                want_value = 1;
            continue;
        } else if (depth == 1 && ch == ',') {
            is_key = 1;
            want_value = 0;
            continue;
        } else if (isspace((unsigned char)ch)) {
            continue;
        }
        if (depth < 1)
            return -1;
        if (want_value == 1) /* the member is not a string */
            return -1;
    }
    return -1;
}

/* Settles the upstream for this request: its URL and, with a key pool, the key that replaces
 * the client's credentials. Returns 0, or -404 when no route matches. */
static int choose_upstream(struct relay *r, const char *model)
{
    const struct route_def *rt = config_route(r->cfg, r->path, r->path_len, model);
    struct upstream_def *up;
    size_t ulen;
    int ok = 1;

    if (rt == NULL)
        return -404;
    up = rt->upstream;
    if (r->client_key != NULL && (!key_entry_allows_upstream(r->client_key, up->name) ||
                                  !key_entry_allows_model(r->client_key, model)))
        return -403;
    if (r->client_key != NULL)
        snprintf(r->c->acc.model, sizeof(r->c->acc.model), "%s", model ? model : "");
    r->up = up;
    ulen = strlen(up->url);
    free(r->url);
    r->url = malloc(ulen + r->path_len + 1);
    if (r->url == NULL)
        return -500;
    memcpy(r->url, up->url, ulen);
    memcpy(r->url + ulen, r->path, r->path_len);
    r->url[ulen + r->path_len] = '\0';
    str_copy(r->c->acc.upstream, sizeof(r->c->acc.upstream), up->name, strlen(up->name));
    if (up->nkeys > 0) {
        /* A pool key (added per transfer) replaces whatever credentials the client sent: the
         * real key never comes from, or goes back to, the client. */
        struct curl_slist *l = NULL, *it;
        for (it = r->hdrs; it != NULL && ok; it = it->next)
            if (!is_credential(it->data))
                l = link_field(r, l, it->data, &ok);
        r->hdrs = l;
        if (!ok)
            return -500;
    }
    return 0;
}

/* Unix time in ms (key expiry is wall-clock). */
static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* auth: keys — the client's relay key (Authorization: Bearer, api-key or x-api-key) must be a
 * known, live key; it never goes upstream. Returns 0, or -401. */
static int authenticate(struct relay *r, const struct relay_req *rq)
{
    unsigned char hash[STORE_HASH_LEN];
    const char *tok = NULL;
    size_t len = 0;
    int i = headers_find(rq->hdrs, rq->nhdrs, "authorization");
    struct curl_slist *l = NULL, *it;
    int ok = 1;

    if (i >= 0 && rq->hdrs[i].value_len > 7 && strncasecmp(rq->hdrs[i].value, "Bearer ", 7) == 0) {
        tok = rq->hdrs[i].value + 7;
        len = rq->hdrs[i].value_len - 7;
    } else if ((i = headers_find(rq->hdrs, rq->nhdrs, "api-key")) >= 0 ||
               (i = headers_find(rq->hdrs, rq->nhdrs, "x-api-key")) >= 0) {
        tok = rq->hdrs[i].value;
        len = rq->hdrs[i].value_len;
    }
    for (it = r->hdrs; it != NULL && ok; it = it->next) /* the relay key stays here */
        if (!is_credential(it->data))
            l = link_field(r, l, it->data, &ok);
    r->hdrs = l;
    if (!ok || r->w->store == NULL || tok == NULL || store_key_hash(tok, len, hash) != 0)
        return -401;
    r->ring = store_writer_keyring(r->w->store);
    r->client_key = keyring_find(r->ring, hash);
    if (r->client_key == NULL || key_entry_state(r->client_key, wall_ms()) != KEY_VALID)
        return -401;
    r->c->acc.key_id = r->client_key->id;
    return 0;
}

struct relay *relay_start(struct conn *c, const struct relay_req *rq, int *status)
{
    const struct config *cfg = c->w->cfg;
    struct relay *r = malloc(sizeof(*r)); /* not calloc: glibc's skips the thread cache */
    int ok = 1, rc;

    *status = 500;
    if (r == NULL)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->job.done = on_transfer_done;
    r->key = -1;
    r->c = c;
    r->w = c->w;
    r->cfg = cfg;
    str_copy(r->method, sizeof(r->method), rq->method, rq->method_len);
    r->is_head = strcmp(r->method, "HEAD") == 0;
    r->http_minor = rq->http_minor;
    r->has_body = rq->has_body;
    r->chunked = rq->chunked;
    r->content_length = rq->content_length;
    r->hdrs = request_fields(r, rq, &cfg->drop, rq->path_len + 1, &ok);
    r->path = ok ? falloc(r, rq->path_len + 1) : NULL; /* in the fields' block */
    if (r->path == NULL)
        goto fail;
    memcpy(r->path, rq->path, rq->path_len);
    r->path[rq->path_len] = '\0';
    r->path_len = rq->path_len;
    /* Usage is read only when something keeps it: the access log or the store. */
    r->tracked = (cfg->access_log || r->w->store != NULL) &&
                 usage_kind_for_path(r->path, r->path_len, &r->kind) == 0;
    if (strcmp(cfg->auth, "keys") == 0) {
        rc = authenticate(r, rq);
        if (rc != 0) {
            *status = -rc;
            goto fail;
        }
    }
    if (r->tracked && r->w->store != NULL) {
        /* Usage is read from the bytes as they pass: a compressed body would hide it. identity is
         * always acceptable to a client, whatever it offered. */
        struct curl_slist *l = NULL, *it;
        for (it = r->hdrs; it != NULL && ok; it = it->next)
            if (!line_name_is(it->data, "accept-encoding"))
                l = link_field(r, l, it->data, &ok);
        l = link_field(r, l, "Accept-Encoding: identity", &ok);
        r->hdrs = l;
        if (!ok)
            goto fail;
    }
    r->buffered = r->has_body && !r->chunked && r->content_length <= cfg->buffer_size;
    /* A route by model, or a relay key limited to some models, needs the body; without a small
     * complete body the model is unknown. */
    if (!((cfg->model_routes || (r->client_key && r->client_key->nmodels > 0)) && r->buffered)) {
        rc = choose_upstream(r, NULL);
        if (rc != 0) {
            *status = -rc;
            goto fail;
        }
    }
    if (r->has_body) {
        r->body_cap = r->buffered ? (size_t)r->content_length : cfg->buffer_size;
        r->body = malloc(r->body_cap ? r->body_cap : 1);
        if (r->body == NULL)
            goto fail;
    } else {
        r->t_sent = now_ms(r);
    }
    if (!r->buffered) {
        rc = start_transfer(r);
        if (rc != 0) {
            *status = -rc;
            goto fail;
        }
    }
    return r;
fail:
    relay_free(r);
    return NULL;
}

void relay_free(struct relay *r)
{
    if (r == NULL)
        return;
    stop_transfer(r);
    free(r->head_out);
    fields_free(r);
    if (r->ring != NULL)
        keyring_release(r->ring);
    if (r->filter != NULL)
        usage_filter_free(r->filter);
    free(r->filter);
    buf_free(&r->fo);
    free(r->tap);
    buf_free(&r->hold);
    free(r->url);
    free(r->redirect_to);
    free(r->body);
    buf_free(&r->rh);
    free(r);
}

/* ---- the request body ---- */

size_t relay_body_room(struct relay *r)
{
    size_t room;

    if (r->body_wr == r->body_cap && r->body_rd > 0) {
        memmove(r->body, r->body + r->body_rd, r->body_wr - r->body_rd);
        r->body_wr -= r->body_rd;
        r->body_rd = 0;
        r->body_discarded = 1;
    }
    room = r->body_cap - r->body_wr;
    if (room == 0)
        r->input_blocked = 1;
    return room;
}

void relay_body_append(struct relay *r, const char *p, size_t n)
{
    memcpy(r->body + r->body_wr, p, n);
    r->body_wr += n;
}

static int start_transfer(struct relay *r);

/* A streamed chat completion that did not ask for usage is made to (one in-place edit), so that
 * its tokens can be counted; the client's view is restored by the filter in send_head(). */
static void inject_include_usage(struct relay *r)
{
    static const char chat[] = "/chat/completions";
    size_t plen = strcspn(r->path, "?"), out_len = 0;
    int injected = 0;
    char *out;

    if (!r->tracked || r->kind != USAGE_CHAT || plen < sizeof(chat) - 1 ||
        memcmp(r->path + plen - (sizeof(chat) - 1), chat, sizeof(chat) - 1) != 0)
        return;
    out = malloc(r->body_wr + JSONEDIT_GROWTH);
    if (out == NULL)
        return;
    if (jsonedit_stream_include_usage(r->body, r->body_wr, out, r->body_wr + JSONEDIT_GROWTH,
                                      &out_len, &injected) == 0 &&
        injected) {
        free(r->body); /* the edited copy is what goes upstream, and what a retry replays */
        r->body = out;
        r->body_cap = r->body_wr = out_len;
        r->content_length = out_len;
        r->injected = 1;
        return;
    }
    free(out);
}

int relay_body_end(struct relay *r)
{
    r->body_done = 1;
    r->t_sent = now_ms(r);
    if (r->buffered && !r->started) {
        inject_include_usage(r);
        if (r->up == NULL) {
            char model[256];
            int rc = choose_upstream(r, body_model(r->body, r->body_wr, model, sizeof(model)) == 0
                                            ? model : NULL);
            if (rc != 0)
                return rc;
        }
        return start_transfer(r);
    }
    return 0;
}

static void apply_pause(struct relay *r)
{
    int bits = (r->recv_paused ? CURLPAUSE_RECV : 0) | (r->upload_paused ? CURLPAUSE_SEND : 0);

    if (r->hx != NULL) {
        if (!r->recv_paused)
            h1c_resume_recv(r->hx);
        if (!r->upload_paused)
            h1c_resume_send(r->hx);
        return;
    }
    curl_easy_pause(r->easy, bits);
}

void relay_body_wake(struct relay *r)
{
    if (in_transfer(r) && r->upload_paused) {
        r->upload_paused = 0;
        apply_pause(r);
    }
}

void relay_write_drained(struct relay *r)
{
    if (in_transfer(r) && r->recv_paused && conn_write_queue(r->c) <= r->cfg->buffer_size / 2) {
        r->recv_paused = 0;
        apply_pause(r); /* may deliver buffered data through on_data right away */
    }
}

/* ---- the end ---- */

static void follow_redirect(struct relay *r)
{
    int s = r->redirect_status;
    int to_get = (s == 303 && !r->is_head) || ((s == 301 || s == 302) && !strcmp(r->method, "POST"));
    char origin[1024], base[1024];
    struct curl_slist *l = NULL, *it;
    int ok = 1;

    r->redirects++;
    if (origin_of(r->redirect_to, origin, sizeof(origin)) != 0 ||
        origin_of(r->up->url, base, sizeof(base)) != 0 || strcmp(origin, base) != 0)
        r->cross_origin = 1; /* sticky: credentials never go to another host */
    if (to_get) {
        snprintf(r->method, sizeof(r->method), "GET");
        r->has_body = 0;
    } else if (r->has_body) {
        r->body_rd = 0; /* replay the kept body */
    }
    for (it = r->hdrs; it != NULL && ok; it = it->next) {
        if (r->cross_origin && is_credential(it->data))
            continue;
        if (to_get && is_body_field(it->data))
            continue;
        l = link_field(r, l, it->data, &ok);
    }
    r->hdrs = l;
    free(r->url);
    r->url = r->redirect_to;
    r->redirect_to = NULL;
    r->t_sent = now_ms(r);
}

/* retry-after-ms or retry-after (seconds) of the held answer, in ms; 0 when absent. */
static int64_t held_retry_after(struct relay *r)
{
    struct hdr fields[MAX_FIELDS];
    size_t n = parse_fields(r, fields, MAX_FIELDS);
    int i = headers_find(fields, n, "retry-after-ms");
    int64_t v = 0;
    const char *p;
    size_t len;

    if (i < 0)
        i = headers_find(fields, n, "retry-after");
    if (i < 0)
        return 0;
    p = fields[i].value;
    len = fields[i].value_len;
    for (size_t k = 0; k < len && p[k] >= '0' && p[k] <= '9' && v < 86400000; k++)
        v = v * 10 + (p[k] - '0');
    return headers_name_is(fields[i].name, fields[i].name_len, "retry-after") ? v * 1000 : v;
}

/* A pool upstream answered 401/429/5xx or failed before the head: judge the key and, when the
 * request can be sent again and another key is healthy, send it again. Returns 1 when a new
 * attempt started. */
static int pool_retry(struct relay *r, CURLcode result)
{
    enum pool_verdict v;

    if (r->key < 0 || r->head_sent || r->timed_out)
        return 0;
    if (r->holding)
        v = result == CURLE_OK ? pool_judge(r->status, r->hold.data, r->hold.len) : POOL_RETRY;
    else if (result != CURLE_OK && r->fail_msg == NULL)
        v = POOL_RETRY;
    else
        return 0;
    pool_report(r->cfg, r->up, r->key, v, v == POOL_COOLDOWN ? held_retry_after(r) : 0,
                pool_now());
    if (v == POOL_OK || r->attempts >= r->cfg->max_retries)
        return 0;
    if (r->has_body && (!r->body_done || r->body_discarded))
        return 0; /* a streamed body cannot be sent twice */
    if (apply_key(r) != 0)
        return 0; /* no other healthy key: the held answer goes to the client */
    r->attempts++;
    r->holding = 0;
    r->hold.len = 0;
    r->rh.len = 0;
    r->status = 0;
    r->body_rd = 0;
    r->c->acc.upstream_status = 0;
    r->t_sent = now_ms(r);
    return start_easy(r) == 0;
}

static void finish(struct relay *r, CURLcode result)
{
    struct conn *c = r->c;
    char buf[2048], msg[512];
    const char *type, *code;
    int status;
    size_t n;

    if (r->redirect_to != NULL) {
        follow_redirect(r);
        if (r->hdrs != NULL && start_transfer(r) == 0) {
            conn_arm(c);
            return;
        }
        result = CURLE_FAILED_INIT;
    }
    if (pool_retry(r, result)) {
        conn_arm(c);
        return;
    }
    if (r->holding && r->status == 401) {
        /* The upstream's 401 echoes the pool key, masked: never relay it. */
        r->holding = 0;
        r->fail_msg = "the upstream rejected the relay's key for it (401); the key is disabled and "
                      "will be probed until it works again";
        result = CURLE_FAILED_INIT;
    } else if (r->holding && result == CURLE_OK && release_held(r) != 0) {
        result = CURLE_FAILED_INIT;
    }
    if (r->head_sent)
        usage_end(r, 1);
    if (result == CURLE_OK && r->head_sent) {
        if (r->framing == FRAME_CHUNKED)
            to_client(r, "0\r\n\r\n", 5, 0);
        else
            relay_flush(r);
        conn_response_done(c, 1);
        return;
    }
    if (r->head_sent) { /* cut short after the head: the client must see a truncation */
        relay_flush(r);
        c->acc.end = r->timed_out ? END_TIMEOUT : END_UPSTREAM_ERROR;
        conn_response_done(c, 0);
        return;
    }
    if (r->timed_out) {
        status = 504;
        snprintf(msg, sizeof(msg), "the upstream did not answer within %.1f s",
                 (double)r->cfg->first_byte_timeout / 1000.0);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        status = 504;
        snprintf(msg, sizeof(msg), "upstream connection timed out: %s",
                 r->errbuf[0] ? r->errbuf : curl_easy_strerror(result));
    } else if (r->fail_msg != NULL && r->key >= 0 && !r->head_sent && r->status == 401) {
        status = 502;
        snprintf(msg, sizeof(msg), "%s", r->fail_msg);
    } else {
        status = 502;
        snprintf(msg, sizeof(msg), "upstream request failed: %s",
                 r->fail_msg ? r->fail_msg : r->errbuf[0] ? r->errbuf : curl_easy_strerror(result));
    }
    c->acc.end = status == 504 ? END_TIMEOUT : END_UPSTREAM_ERROR;
    c->acc.status = status;
    if (r->has_body && !r->body_done)
        c->close_after = 1;
    reply_kind(status, &type, &code);
    n = reply_error(buf, sizeof(buf), status, type, code, msg,
                    c->close_after || !c->keepalive || r->w->draining, r->is_head);
    conn_send(c, buf, n, NULL, 0, 0);
    conn_response_done(c, 1);
}

static void on_transfer_done(struct upstream_job *job, CURL *easy, CURLcode result)
{
    struct relay *r = (struct relay *)job;

    upstream_remove(&r->w->up, easy);
    r->easy = NULL;
    finish(r, result);
}

void relay_cancel(struct relay *r, enum end_reason why)
{
    if (why != END_CLIENT_CLOSED)
        relay_flush(r); /* a timeout or the drain deadline: the truncation must be visible */
    if (in_transfer(r) && r->head_sent)
        usage_end(r, 0); /* what was read before the client left: a partial record */
    stop_transfer(r);
    if (r->c->acc.end == END_OK)
        r->c->acc.end = why;
}

uint64_t relay_deadline(const struct relay *r)
{
    if (!in_transfer(r))
        return 0;
    if (!r->head_sent)
        return r->t_sent ? r->t_sent + r->cfg->first_byte_timeout : 0;
    if (!r->recv_paused)
        return r->t_last + r->cfg->idle_timeout;
    return 0;
}

void relay_expire(struct relay *r, uint64_t now)
{
    (void)now;
    stop_transfer(r);
    r->timed_out = 1;
    finish(r, CURLE_OPERATION_TIMEDOUT);
}
