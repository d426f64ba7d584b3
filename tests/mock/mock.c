/* mock — the OpenAI-compatible upstream the e2e tests run ferry against; tests/mock/README.md is
 * its contract. One thread per connection on blocking sockets, llhttp for requests, OpenSSL for the
 * HTTPS listener: simple on purpose, because it is the reference ferry's behaviour is checked
 * against. Faults are injected by request headers, and every exchange outside /__mock/ is kept in
 * an in-memory log that the tests read back over HTTP to see what ferry really sent and how each
 * exchange ended. */
#include "mock_json.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>

#define READ_BUF_SIZE (64 * 1024)
#define PEND_MAX (64 * 1024)     /* bytes read ahead while waiting; parsed after the answer */
#define HEADERS_MAX (256 * 1024) /* request head bytes we agree to keep */
#define JSON_BODY_MAX (4 * 1024 * 1024) /* larger JSON bodies are hashed but not parsed */
#define LOG_MAX 100000
#define TOKENS_MAX 1000000
#define PATTERN_LEN 65536 /* byte i = (i*7+3)&0xff repeats every 256 bytes */
#define LINGER_MS 1000

enum route {
    R_NOT_FOUND,
    R_CHAT,
    R_COMPLETIONS,
    R_EMBEDDINGS,
    R_RESPONSES,
    R_MESSAGES,
    R_MODELS,
    R_SPEECH,
    R_TRANSCRIPTIONS,
    R_FILES,
    R_ECHO, /* the /__mock/ routes from here on: never logged, no faults */
    R_REDIRECT,
    R_LOG,
    R_RESET,
    R_KEY_FAULTS,
    R_MOCK_NOT_FOUND,
};

struct header {
    char *name, *value;
    size_t name_len, value_len;
};

struct log_entry {
    unsigned long id;
    char *head_json; /* "method":…,"target":…,"headers":[…] — fixed once the head arrived */
    uint64_t body_bytes;
    char sha256[65]; /* "" until the whole body arrived */
    int status;      /* 0 until a status line is sent */
    bool completed, client_aborted, tls;
};

/* The log is the only state shared between connection threads. Entry ids grow by one and are never
 * reused, so the entries present always hold consecutive ids and an id finds its slot by
 * subtraction. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct log_entry **log_entries;
static size_t log_len, log_cap;
static unsigned long log_next_id = 1;

static SSL_CTX *tls_ctx; /* set once before the accept thread starts, read-only after */

/* One request and its answer. Reset at each message begin; owns every buffer it points to. */
struct exch {
    bool in_request, head_done, internal, head_method, keep_alive;
    enum route route;
    struct mbuf target, field, value;
    struct header *headers;
    size_t nheaders, headers_cap, head_bytes;
    bool too_large;
    EVP_MD_CTX *md;
    uint64_t body_bytes;
    char sha256[65];
    struct mbuf body; /* kept only for the JSON endpoints, up to JSON_BODY_MAX */
    bool keep_body;
    unsigned long id; /* log id; 0 for /__mock/ requests */
    /* faults */
    int fault_status, delay_ms, chunks, chunk_delay_ms, close_after;
    bool quota; /* a 429 fault is insufficient_quota, not a rate limit */
    bool reset_before, reset_mid, bad_framing;
    /* answer progress */
    int status, events;
    bool completed, aborted;
};

enum conn_end { END_CLOSE, END_RST, END_GONE };

struct conn {
    int fd;
    SSL *ssl;
    llhttp_t parser;
    char *pend; /* PEND_MAX bytes */
    size_t pend_len;
    bool closing;
    enum conn_end end;
    struct exch x;
};

/* ---------- small helpers ---------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *dup_bytes(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Status";
    }
}

static const struct header *find_header(const struct exch *x, const char *name)
{
    for (size_t i = 0; i < x->nheaders; i++)
        if (strcasecmp(x->headers[i].name, name) == 0)
            return &x->headers[i];
    return NULL;
}

/* A numeric fault header, clamped to [lo, hi]; `dflt` when absent or not a number. */
static long header_num(const struct exch *x, const char *name, long dflt, long lo, long hi)
{
    const struct header *h = find_header(x, name);
    if (!h)
        return dflt;
    char *end;
    errno = 0;
    long v = strtol(h->value, &end, 10);
    if (end == h->value || errno)
        return dflt;
    return v < lo ? lo : v > hi ? hi : v;
}

static void headers_free(struct header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void mbuf_headers_json(struct mbuf *b, const struct header *h, size_t n)
{
    mbuf_str(b, "[");
    for (size_t i = 0; i < n; i++) {
        mbuf_str(b, i ? ",[" : "[");
        mbuf_json_str(b, h[i].name, h[i].name_len);
        mbuf_str(b, ",");
        mbuf_json_str(b, h[i].value, h[i].value_len);
        mbuf_str(b, "]");
    }
    mbuf_str(b, "]");
}

/* ---------- the log ---------- */

static void log_entry_free(struct log_entry *e)
{
    free(e->head_json);
    free(e);
}

/* Records a request whose head just arrived and returns its id. */
static unsigned long log_add(const struct exch *x, const char *method, bool tls)
{
    struct log_entry *e = calloc(1, sizeof(*e));
    struct mbuf head = {0};
    if (!e)
        abort();
    mbuf_str(&head, "\"method\":");
    mbuf_json_str(&head, method, strlen(method));
    mbuf_str(&head, ",\"target\":");
    mbuf_json_str(&head, x->target.data ? x->target.data : "", x->target.len);
    mbuf_str(&head, ",\"headers\":");
    mbuf_headers_json(&head, x->headers, x->nheaders);
    e->head_json = head.data; /* the entry owns it */
    e->tls = tls;

    pthread_mutex_lock(&log_lock);
    e->id = log_next_id++;
    unsigned long id = e->id;
    if (log_len < LOG_MAX) {
        if (log_len == log_cap) {
            size_t cap = log_cap ? log_cap * 2 : 1024;
            struct log_entry **p = realloc(log_entries, cap * sizeof(*p));
            if (!p)
                abort();
            log_entries = p;
            log_cap = cap;
        }
        log_entries[log_len++] = e;
        e = NULL; /* the log owns it now */
    }
    pthread_mutex_unlock(&log_lock);
    if (e) /* over LOG_MAX: the id still names the response, the entry is dropped */
        log_entry_free(e);
    return id;
}

/* Copies the exchange's progress into its log entry (gone after a reset: then nothing to do). */
static void log_sync(const struct exch *x)
{
    if (!x->id)
        return;
    pthread_mutex_lock(&log_lock);
    if (log_len > 0 && x->id >= log_entries[0]->id && x->id - log_entries[0]->id < log_len) {
        struct log_entry *e = log_entries[x->id - log_entries[0]->id];
        e->body_bytes = x->body_bytes;
        memcpy(e->sha256, x->sha256, sizeof(e->sha256));
        e->status = x->status;
        e->completed = x->completed;
        e->client_aborted = x->aborted;
    }
    pthread_mutex_unlock(&log_lock);
}

static void log_to_json(struct mbuf *b)
{
    pthread_mutex_lock(&log_lock);
    mbuf_str(b, "[");
    for (size_t i = 0; i < log_len; i++) {
        const struct log_entry *e = log_entries[i];
        mbuf_printf(b, "%s{\"id\":%lu,%s", i ? ",\n" : "", e->id, e->head_json);
        mbuf_printf(b, ",\"body_bytes\":%llu,\"body_sha256\":", (unsigned long long)e->body_bytes);
        if (e->sha256[0])
            mbuf_printf(b, "\"%s\"", e->sha256);
        else
            mbuf_str(b, "null");
        mbuf_printf(b, ",\"status\":%d,\"completed\":%s,\"client_aborted\":%s,\"tls\":%s}",
                    e->status, e->completed ? "true" : "false",
                    e->client_aborted ? "true" : "false", e->tls ? "true" : "false");
    }
    mbuf_str(b, "]\n");
    pthread_mutex_unlock(&log_lock);
}

static void log_reset(void)
{
    pthread_mutex_lock(&log_lock);
    for (size_t i = 0; i < log_len; i++)
        log_entry_free(log_entries[i]);
    log_len = 0;
    pthread_mutex_unlock(&log_lock);
}

/* ---------- socket I/O ---------- */

static int conn_write(struct conn *c, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, n > INT_MAX ? INT_MAX : (int)n);
            if (r <= 0)
                return -1;
            p += r;
            n -= (size_t)r;
        } else {
            ssize_t r = send(c->fd, p, n, MSG_NOSIGNAL);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                return -1;
            p += r;
            n -= (size_t)r;
        }
    }
    return 0;
}

/* Blocking read: >0 bytes, 0 at EOF, <0 on error. */
static ssize_t conn_read(struct conn *c, char *buf, size_t n)
{
    if (c->ssl) {
        ERR_clear_error();
        int r = SSL_read(c->ssl, buf, (int)n);
        if (r > 0)
            return r;
        return SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
        ssize_t r = recv(c->fd, buf, n, 0);
        if (r >= 0 || errno != EINTR)
            return r;
    }
}

/* Reads whatever already arrived into c->pend without blocking, so that a peer that left shows up
 * as EOF even behind pipelined bytes or TLS records. Returns 0 while the peer is there, -1 once it
 * is gone. */
static int conn_drain(struct conn *c)
{
    int rc = 0;
    if (c->ssl)
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    while (c->pend_len < PEND_MAX) {
        char *dst = c->pend + c->pend_len;
        size_t room = PEND_MAX - c->pend_len;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, dst, (int)room);
            if (r > 0) {
                c->pend_len += (size_t)r;
                continue;
            }
            int err = SSL_get_error(c->ssl, r);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
                rc = -1;
            break;
        }
        ssize_t r = recv(c->fd, dst, room, MSG_DONTWAIT);
        if (r > 0) {
            c->pend_len += (size_t)r;
            continue;
        }
        if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            rc = -1;
        break;
    }
    if (c->ssl)
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) & ~O_NONBLOCK);
    return rc;
}

/* Waits ms milliseconds (0: just looks) watching the peer. Returns 0, or -1 if the peer left. */
static int conn_wait(struct conn *c, long long ms)
{
    long long deadline = now_ms() + ms;
    for (;;) {
        if (conn_drain(c) < 0)
            return -1;
        long long left = deadline - now_ms();
        if (left <= 0)
            return 0;
        if (c->pend_len >= PEND_MAX) { /* cannot look further without losing bytes: just wait */
            sleep_ms(left);
            return 0;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
    }
}

/* Ends the connection the way c->end says: an orderly close lingers so unread request bytes do not
 * turn our FIN into a RST; END_RST is the fault; END_GONE means the peer already left. */
static void conn_close(struct conn *c)
{
    if (c->end == END_RST) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    } else if (c->end == END_CLOSE) {
        if (c->ssl) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);
        }
        shutdown(c->fd, SHUT_WR);
        long long deadline = now_ms() + LINGER_MS;
        char scratch[4096];
        for (;;) {
            long long left = deadline - now_ms();
            struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
            if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
                break;
            if (recv(c->fd, scratch, sizeof(scratch), MSG_DONTWAIT) <= 0)
                break;
        }
    }
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
}

/* ---------- the exchange's writes ---------- */

static void exch_gone(struct conn *c)
{
    c->x.aborted = true;
    c->x.completed = false;
    log_sync(&c->x);
    c->end = END_GONE;
    c->closing = true;
}

/* Writes part of the answer. `last` marks the write that completes it: the log says completed
 * before the bytes go out, so a client that has read the whole answer finds it so in the log. */
static int exch_send(struct conn *c, const void *p, size_t n, bool last)
{
    if (last) {
        c->x.completed = true;
        log_sync(&c->x);
    }
    if (conn_write(c, p, n) < 0) {
        exch_gone(c);
        return -1;
    }
    return 0;
}

/* A fault ends the connection here (FIN or RST): the answer stays incomplete, not aborted. */
static int exch_cut(struct conn *c, enum conn_end how)
{
    c->end = how;
    c->closing = true;
    log_sync(&c->x);
    return -1;
}

/* Sends the status line and headers. content_length < 0 means chunked. */
static int send_head(struct conn *c, int status, const char *ctype, const char *extra,
                     long long content_length, bool last)
{
    struct exch *x = &c->x;
    struct mbuf h = {0};
    mbuf_printf(&h, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    if (ctype)
        mbuf_printf(&h, "Content-Type: %s\r\n", ctype);
    if (content_length >= 0)
        mbuf_printf(&h, "Content-Length: %lld\r\n", content_length);
    else
        mbuf_str(&h, "Transfer-Encoding: chunked\r\n");
    if (!x->keep_alive)
        mbuf_str(&h, "Connection: close\r\n");
    mbuf_printf(&h, "x-request-id: req_mock_%lu\r\nopenai-processing-ms: 1\r\n", x->id);
    mbuf_str(&h, "openai-version: 2020-10-01\r\nopenai-organization: org-mock\r\n");
    if (extra)
        mbuf_str(&h, extra);
    mbuf_str(&h, "\r\n");
    x->status = status;
    int rc = exch_send(c, h.data, h.len, last);
    mbuf_free(&h);
    return rc;
}

/* A response body: plain bytes, or (pattern) PATTERN_LEN bytes repeated up to len. */
struct body {
    const char *data;
    uint64_t len;
    bool pattern;
};

static int send_range(struct conn *c, const struct body *b, uint64_t from, uint64_t to, bool last)
{
    while (from < to) {
        const char *p = b->pattern ? b->data + from % PATTERN_LEN : b->data + from;
        uint64_t n = to - from;
        uint64_t cap = b->pattern ? PATTERN_LEN - from % PATTERN_LEN : 1u << 20;
        if (n > cap)
            n = cap;
        if (exch_send(c, p, (size_t)n, last && from + n == to) < 0)
            return -1;
        from += n;
    }
    return 0;
}

/* Sends a whole answer with Content-Length, unless a fault breaks it:
 * mid-body reset after half the body, or bad framing (chunked, second chunk size line garbage). */
static int answer(struct conn *c, int status, const char *ctype, const char *extra,
                  const struct body *b)
{
    struct exch *x = &c->x;
    uint64_t half = b->len / 2;
    if (x->head_method)
        return send_head(c, status, ctype, extra, (long long)b->len, true);
    if (x->bad_framing) {
        if (send_head(c, status, ctype, extra, -1, false) < 0)
            return -1;
        struct mbuf m = {0};
        if (half > 0)
            mbuf_printf(&m, "%llx\r\n", (unsigned long long)half);
        int rc = exch_send(c, m.data, m.len, false);
        mbuf_free(&m);
        if (rc < 0 || send_range(c, b, 0, half, false) < 0)
            return -1;
        const char *garbage = half > 0 ? "\r\nzz-not-a-size\r\n" : "zz-not-a-size\r\n";
        if (exch_send(c, garbage, strlen(garbage), false) < 0 ||
            send_range(c, b, half, b->len, false) < 0)
            return -1;
        return exch_cut(c, END_CLOSE);
    }
    if (send_head(c, status, ctype, extra, (long long)b->len, b->len == 0) < 0)
        return -1;
    if (x->reset_mid) {
        if (send_range(c, b, 0, half, false) < 0)
            return -1;
        return exch_cut(c, END_RST);
    }
    return send_range(c, b, 0, b->len, true);
}

static int answer_json(struct conn *c, int status, const struct mbuf *json, const char *extra)
{
    struct body b = {json->data ? json->data : "", json->len, false};
    return answer(c, status, "application/json", extra, &b);
}

/* OpenAI's error shape. code NULL → JSON null. */
static int answer_error(struct conn *c, int status, const char *message, const char *type,
                        const char *code, const char *extra)
{
    struct mbuf m = {0};
    mbuf_str(&m, "{\"error\":{\"message\":");
    mbuf_json_str(&m, message, strlen(message));
    mbuf_str(&m, ",\"type\":");
    mbuf_json_str(&m, type, strlen(type));
    mbuf_str(&m, ",\"param\":null,\"code\":");
    if (code)
        mbuf_json_str(&m, code, strlen(code));
    else
        mbuf_str(&m, "null");
    mbuf_str(&m, "}}\n");
    int rc = answer_json(c, status, &m, extra);
    mbuf_free(&m);
    return rc;
}

/* ---------- streams ---------- */

static int stream_begin(struct conn *c)
{
    return send_head(c, 200, "text/event-stream", "Cache-Control: no-cache\r\n", -1, false);
}

/* Writes one SSE event as its own chunk, in one send, after the between-events delay; applies the
 * stream faults. Returns -1 when the stream must stop (fault or peer gone): the connection is then
 * closing. */
static int stream_event(struct conn *c, const struct mbuf *ev)
{
    struct exch *x = &c->x;
    if (x->close_after >= 0 && x->events >= x->close_after)
        return exch_cut(c, END_CLOSE);
    if (x->events > 0 && conn_wait(c, x->chunk_delay_ms) < 0) {
        exch_gone(c);
        return -1;
    }
    struct mbuf m = {0};
    if (x->bad_framing && x->events == 1)
        mbuf_str(&m, "zz-not-a-size\r\n");
    else
        mbuf_printf(&m, "%zx\r\n", ev->len);
    mbuf_add(&m, ev->data, ev->len);
    mbuf_str(&m, "\r\n");
    int rc = exch_send(c, m.data, m.len, false);
    mbuf_free(&m);
    if (rc < 0)
        return -1;
    x->events++;
    if (x->bad_framing && x->events == 2)
        return exch_cut(c, END_CLOSE);
    if (x->reset_mid && x->events == 1)
        return exch_cut(c, END_RST);
    return 0;
}

static int stream_end(struct conn *c)
{
    struct exch *x = &c->x;
    if (x->close_after >= 0 && x->events >= x->close_after)
        return exch_cut(c, END_CLOSE);
    return exch_send(c, "0\r\n\r\n", 5, true);
}

/* "data: <json>\n\n" built by the caller in ev (cleared here after sending). */
static int stream_data(struct conn *c, struct mbuf *ev)
{
    mbuf_str(ev, "\n\n");
    int rc = stream_event(c, ev);
    ev->len = 0;
    return rc;
}

/* ---------- OpenAI endpoints ---------- */

struct req_json {
    struct mbuf model; /* a JSON string token, quotes included */
    bool stream, include_usage;
    int chunks;
    long long created;
};

static void req_json_read(const struct exch *x, struct req_json *r)
{
    const char *text = x->body.data ? x->body.data : "";
    struct jval v, so;
    memset(r, 0, sizeof(*r));
    if (json_member(text, x->body.len, "model", &v) && json_is_string(v))
        mbuf_add(&r->model, v.p, v.len);
    else
        mbuf_str(&r->model, "\"gpt-4o-mini\"");
    r->stream = json_member(text, x->body.len, "stream", &v) && json_is_true(v);
    r->include_usage = json_member(text, x->body.len, "stream_options", &so) &&
                       json_member(so.p, so.len, "include_usage", &v) && json_is_true(v);
    r->chunks = x->chunks;
    r->created = (long long)time(NULL);
}

static void mbuf_usage_chat(struct mbuf *b, int n)
{
    mbuf_printf(b,
                "{\"prompt_tokens\":10,\"completion_tokens\":%d,\"total_tokens\":%d,"
                "\"prompt_tokens_details\":{\"cached_tokens\":0},"
                "\"completion_tokens_details\":{\"reasoning_tokens\":0}}",
                n, 10 + n);
}

static void mbuf_tokens(struct mbuf *b, int n)
{
    for (int i = 0; i < n; i++)
        mbuf_printf(b, "tok%d ", i);
}

/* Chat completions and legacy completions share their shape: only the object names and the place of
 * the text differ (choices[0].delta.content / message.content vs choices[0].text). */
static int answer_completion(struct conn *c, bool chat)
{
    struct exch *x = &c->x;
    struct req_json r;
    req_json_read(x, &r);
    const char *prefix = chat ? "chatcmpl" : "cmpl";
    const char *object = chat ? "chat.completion" : "text_completion";
    struct mbuf ev = {0};
    int rc = 0;

    if (!r.stream) {
        struct mbuf text = {0}, m = {0};
        mbuf_tokens(&text, r.chunks);
        mbuf_printf(&m, "{\"id\":\"%s-mock-%lu\",\"object\":\"%s\",\"created\":%lld,\"model\":%s,",
                    prefix, x->id, object, r.created, r.model.data);
        if (chat) {
            mbuf_str(&m, "\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"message\":"
                         "{\"role\":\"assistant\",\"content\":");
            mbuf_json_str(&m, text.data ? text.data : "", text.len);
            mbuf_str(
                &m, ",\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":");
        } else {
            mbuf_str(&m, "\"choices\":[{\"text\":");
            mbuf_json_str(&m, text.data ? text.data : "", text.len);
            mbuf_str(&m, ",\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":");
        }
        mbuf_usage_chat(&m, r.chunks);
        mbuf_str(&m, "}\n");
        rc = answer_json(c, 200, &m, NULL);
        mbuf_free(&text);
        mbuf_free(&m);
        goto out;
    }

    if (stream_begin(c) < 0)
        goto fail;
    /* chunks 0..n-1 carry a token, chunk n carries finish_reason; the first one sent carries the
     * role */
    const char *chunk_object = chat ? "chat.completion.chunk" : "text_completion";
    for (int i = 0; i <= r.chunks; i++) {
        bool final = i == r.chunks;
        mbuf_printf(
            &ev, "data: {\"id\":\"%s-mock-%lu\",\"object\":\"%s\",\"created\":%lld,\"model\":%s,",
            prefix, x->id, chunk_object, r.created, r.model.data);
        if (chat) {
            mbuf_str(&ev,
                     "\"system_fingerprint\":\"fp_mock\",\"choices\":[{\"index\":0,\"delta\":{");
            if (i == 0)
                mbuf_str(&ev, final ? "\"role\":\"assistant\"" : "\"role\":\"assistant\",");
            if (!final)
                mbuf_printf(&ev, "\"content\":\"tok%d \"", i);
            mbuf_printf(&ev, "},\"logprobs\":null,\"finish_reason\":%s}]",
                        final ? "\"stop\"" : "null");
        } else if (final) {
            mbuf_str(&ev, "\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_"
                          "reason\":\"stop\"}]");
        } else {
            mbuf_printf(&ev,
                        "\"choices\":[{\"text\":\"tok%d "
                        "\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]",
                        i);
        }
        mbuf_str(&ev, r.include_usage ? ",\"usage\":null}" : "}");
        if (stream_data(c, &ev) < 0)
            goto fail;
    }
    if (r.include_usage) {
        mbuf_printf(
            &ev, "data: {\"id\":\"%s-mock-%lu\",\"object\":\"%s\",\"created\":%lld,\"model\":%s,",
            prefix, x->id, chunk_object, r.created, r.model.data);
        if (chat)
            mbuf_str(&ev, "\"system_fingerprint\":\"fp_mock\",");
        mbuf_str(&ev, "\"choices\":[],\"usage\":");
        mbuf_usage_chat(&ev, r.chunks);
        mbuf_str(&ev, "}");
        if (stream_data(c, &ev) < 0)
            goto fail;
    }
    mbuf_str(&ev, "data: [DONE]");
    if (stream_data(c, &ev) < 0)
        goto fail;
    rc = stream_end(c);
    goto out;
fail:
    rc = -1;
out:
    mbuf_free(&ev);
    mbuf_free(&r.model);
    return rc;
}

static void ev_begin(struct mbuf *ev, const char *type, int *seq)
{
    mbuf_printf(ev, "event: %s\ndata: {\"type\":\"%s\",\"sequence_number\":%d", type, type,
                (*seq)++);
}

/* The assistant message item; text NULL while it is still in progress (no content yet). */
static void mbuf_message_item(struct mbuf *b, unsigned long id, const struct mbuf *text)
{
    mbuf_printf(b,
                "{\"id\":\"msg_mock_%lu\",\"type\":\"message\",\"status\":\"%s\",\"role\":"
                "\"assistant\",\"content\":[",
                id, text ? "completed" : "in_progress");
    if (text) {
        mbuf_str(b, "{\"type\":\"output_text\",\"text\":");
        mbuf_json_str(b, text->data ? text->data : "", text->len);
        mbuf_str(b, ",\"annotations\":[]}");
    }
    mbuf_str(b, "]}");
}

static void mbuf_response_obj(struct mbuf *b, unsigned long id, const struct req_json *r,
                              const struct mbuf *text)
{
    mbuf_printf(
        b,
        "{\"id\":\"resp_mock_%lu\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
        "\"error\":null,\"incomplete_details\":null,\"model\":%s,\"output\":[",
        id, r->created, text ? "completed" : "in_progress", r->model.data);
    if (text)
        mbuf_message_item(b, id, text);
    mbuf_str(b, "],\"usage\":");
    if (text)
        mbuf_printf(b,
                    "{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":0},\"output_"
                    "tokens\":%d,"
                    "\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":%d}",
                    r->chunks, 10 + r->chunks);
    else
        mbuf_str(b, "null");
    mbuf_str(b, "}");
}

static int answer_responses(struct conn *c)
{
    struct exch *x = &c->x;
    struct req_json r;
    req_json_read(x, &r);
    struct mbuf text = {0}, ev = {0};
    mbuf_tokens(&text, r.chunks);
    int rc = 0, seq = 0;
    const char *where = ",\"output_index\":0,\"content_index\":0";

    if (!r.stream) {
        mbuf_response_obj(&ev, x->id, &r, &text);
        mbuf_str(&ev, "\n");
        rc = answer_json(c, 200, &ev, NULL);
        goto out;
    }
    if (stream_begin(c) < 0)
        goto fail;
    const char *starts[] = {"response.created", "response.in_progress"};
    for (int i = 0; i < 2; i++) {
        ev_begin(&ev, starts[i], &seq);
        mbuf_str(&ev, ",\"response\":");
        mbuf_response_obj(&ev, x->id, &r, NULL);
        mbuf_str(&ev, "}");
        if (stream_data(c, &ev) < 0)
            goto fail;
    }
    ev_begin(&ev, "response.output_item.added", &seq);
    mbuf_str(&ev, ",\"output_index\":0,\"item\":");
    mbuf_message_item(&ev, x->id, NULL);
    mbuf_str(&ev, "}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    ev_begin(&ev, "response.content_part.added", &seq);
    mbuf_printf(&ev,
                ",\"item_id\":\"msg_mock_%lu\"%s,\"part\":{\"type\":\"output_text\",\"text\":\"\","
                "\"annotations\":[]}}",
                x->id, where);
    if (stream_data(c, &ev) < 0)
        goto fail;
    for (int i = 0; i < r.chunks; i++) {
        ev_begin(&ev, "response.output_text.delta", &seq);
        mbuf_printf(&ev, ",\"item_id\":\"msg_mock_%lu\"%s,\"delta\":\"tok%d \"}", x->id, where, i);
        if (stream_data(c, &ev) < 0)
            goto fail;
    }
    ev_begin(&ev, "response.output_text.done", &seq);
    mbuf_printf(&ev, ",\"item_id\":\"msg_mock_%lu\"%s,\"text\":", x->id, where);
    mbuf_json_str(&ev, text.data ? text.data : "", text.len);
    mbuf_str(&ev, "}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    ev_begin(&ev, "response.content_part.done", &seq);
    mbuf_printf(&ev, ",\"item_id\":\"msg_mock_%lu\"%s,\"part\":{\"type\":\"output_text\",\"text\":",
                x->id, where);
    mbuf_json_str(&ev, text.data ? text.data : "", text.len);
    mbuf_str(&ev, ",\"annotations\":[]}}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    ev_begin(&ev, "response.output_item.done", &seq);
    mbuf_str(&ev, ",\"output_index\":0,\"item\":");
    mbuf_message_item(&ev, x->id, &text);
    mbuf_str(&ev, "}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    ev_begin(&ev, "response.completed", &seq);
    mbuf_str(&ev, ",\"response\":");
    mbuf_response_obj(&ev, x->id, &r, &text);
    mbuf_str(&ev, "}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    rc = stream_end(c);
    goto out;
fail:
    rc = -1;
out:
    mbuf_free(&text);
    mbuf_free(&ev);
    mbuf_free(&r.model);
    return rc;
}

/* Anthropic's Messages API (what an OpenAI-compatible gateway may also front): input tokens 10,
 * of which 3 read from the prompt cache and 2 written to it; output tokens = chunks. Streamed,
 * the usage comes in message_start (input, and output so far: 1) and message_delta (output). */
#define MSG_USAGE_IN "\"input_tokens\":5,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":3"
static int answer_messages(struct conn *c)
{
    struct exch *x = &c->x;
    struct req_json r;
    req_json_read(x, &r);
    struct mbuf text = {0}, ev = {0};
    mbuf_tokens(&text, r.chunks);
    int rc = 0;

    if (!r.stream) {
        mbuf_printf(&ev, "{\"id\":\"msg_mock_%lu\",\"type\":\"message\",\"role\":\"assistant\","
                         "\"model\":", x->id);
        mbuf_add(&ev, r.model.data, r.model.len);
        mbuf_str(&ev, ",\"content\":[{\"type\":\"text\",\"text\":");
        mbuf_json_str(&ev, text.data ? text.data : "", text.len);
        mbuf_printf(&ev, "}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
                         MSG_USAGE_IN ",\"output_tokens\":%d}}\n", r.chunks);
        rc = answer_json(c, 200, &ev, NULL);
        goto out;
    }
    if (stream_begin(c) < 0)
        goto fail;
    mbuf_printf(&ev, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
                     "\"msg_mock_%lu\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", x->id);
    mbuf_add(&ev, r.model.data, r.model.len);
    mbuf_str(&ev, ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
                  MSG_USAGE_IN ",\"output_tokens\":1}}}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    mbuf_str(&ev, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                  "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    for (int i = 0; i < r.chunks; i++) {
        mbuf_printf(&ev, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                         "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"tok%d \"}}", i);
        if (stream_data(c, &ev) < 0)
            goto fail;
    }
    mbuf_str(&ev, "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    mbuf_printf(&ev, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":"
                     "{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":"
                     "{\"output_tokens\":%d}}", r.chunks);
    if (stream_data(c, &ev) < 0)
        goto fail;
    mbuf_str(&ev, "event: message_stop\ndata: {\"type\":\"message_stop\"}");
    if (stream_data(c, &ev) < 0)
        goto fail;
    rc = stream_end(c);
    goto out;
fail:
    rc = -1;
out:
    mbuf_free(&text);
    mbuf_free(&ev);
    mbuf_free(&r.model);
    return rc;
}

static int answer_embeddings(struct conn *c)
{
    struct exch *x = &c->x;
    struct req_json r;
    req_json_read(x, &r);
    const char *text = x->body.data ? x->body.data : "";
    struct jval v;
    int count = 1;
    if (json_member(text, x->body.len, "input", &v) && json_array_count(v) >= 0)
        count = json_array_count(v);
    bool b64 = json_member(text, x->body.len, "encoding_format", &v) && json_string_eq(v, "base64");

    /* Eighths are exact in binary, so the JSON numbers and the base64 float32s say the same thing.
     */
    float values[8];
    unsigned char raw[32];
    char encoded[64];
    for (int k = 0; k < 8; k++) {
        values[k] = (float)(k - 3) * 0.125f;
        uint32_t bits;
        memcpy(&bits, &values[k], sizeof(bits));
        for (int j = 0; j < 4; j++)
            raw[k * 4 + j] = (unsigned char)(bits >> (8 * j));
    }
    EVP_EncodeBlock((unsigned char *)encoded, raw, sizeof(raw));

    struct mbuf m = {0};
    mbuf_str(&m, "{\"object\":\"list\",\"data\":[");
    for (int i = 0; i < count; i++) {
        mbuf_printf(&m, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":", i ? "," : "", i);
        if (b64) {
            mbuf_printf(&m, "\"%s\"}", encoded);
            continue;
        }
        for (int k = 0; k < 8; k++)
            mbuf_printf(&m, "%s%g", k ? "," : "[", (double)values[k]);
        mbuf_str(&m, "]}");
    }
    mbuf_printf(&m, "],\"model\":%s,\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5}}\n",
                r.model.data);
    int rc = answer_json(c, 200, &m, NULL);
    mbuf_free(&m);
    mbuf_free(&r.model);
    return rc;
}

static int answer_models(struct conn *c)
{
    static const char *const ids[] = {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "tts-1",
                                      "whisper-1"};
    struct mbuf m = {0};
    mbuf_str(&m, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        mbuf_printf(
            &m,
            "%s{\"id\":\"%s\",\"object\":\"model\",\"created\":1686935002,\"owned_by\":\"mock\"}",
            i ? "," : "", ids[i]);
    mbuf_str(&m, "]}\n");
    int rc = answer_json(c, 200, &m, NULL);
    mbuf_free(&m);
    return rc;
}

static int answer_speech(struct conn *c)
{
    char *pattern = malloc(PATTERN_LEN);
    if (!pattern)
        abort();
    for (size_t i = 0; i < PATTERN_LEN; i++)
        pattern[i] = (char)((i * 7 + 3) & 0xff);
    struct body b = {pattern, (uint64_t)header_num(&c->x, "x-mock-bytes", 100000, 0, 1L << 40),
                     true};
    int rc = answer(c, 200, "audio/mpeg", NULL, &b);
    free(pattern);
    return rc;
}

static int answer_upload(struct conn *c, bool file)
{
    struct exch *x = &c->x;
    unsigned long long n = (unsigned long long)x->body_bytes;
    struct mbuf m = {0};
    if (file)
        mbuf_printf(&m,
                    "{\"id\":\"file-mock\",\"object\":\"file\",\"bytes\":%llu,\"created_at\":%lld,"
                    "\"filename\":\"upload\",\"purpose\":\"assistants\",\"sha256\":\"%s\"}\n",
                    n, (long long)time(NULL), x->sha256);
    else
        mbuf_printf(&m, "{\"text\":\"received %llu bytes\",\"bytes\":%llu,\"sha256\":\"%s\"}\n", n,
                    n, x->sha256);
    int rc = answer_json(c, 200, &m, NULL);
    mbuf_free(&m);
    return rc;
}

static int answer_not_found(struct conn *c)
{
    const char *method = llhttp_method_name(llhttp_get_method(&c->parser));
    const char *target = c->x.target.data ? c->x.target.data : "";
    size_t path_len = strcspn(target, "?");
    struct mbuf msg = {0};
    mbuf_printf(&msg, "Invalid URL (%s %.*s)", method, (int)path_len, target);
    int rc = answer_error(c, 404, msg.data, "invalid_request_error", NULL, NULL);
    mbuf_free(&msg);
    return rc;
}

/* Per-key faults, set with POST /__mock/key-faults (header x-mock-key-faults: KEY=STATUS,...;
 * STATUS 429q means out of quota). They apply to every request whose Bearer key matches, probes
 * included, until replaced: the way a provider's view of a key changes under a relay. */
static pthread_mutex_t key_faults_mu = PTHREAD_MUTEX_INITIALIZER;
static char key_faults[4096];

static void key_fault_of(struct exch *x)
{
    const struct header *h = find_header(x, "authorization");
    const char *p;
    size_t klen;

    if (h == NULL || h->value_len <= 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return;
    klen = h->value_len - 7;
    pthread_mutex_lock(&key_faults_mu);
    for (p = key_faults; *p;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq && (size_t)(eq - p) == klen && memcmp(p, h->value + 7, klen) == 0) {
            x->fault_status = atoi(eq + 1);
            x->quota = eq[4] == 'q';
        }
        p += len;
        if (*p == ',')
            p++;
    }
    pthread_mutex_unlock(&key_faults_mu);
}

/* x-mock-status: OpenAI's error bodies and headers for the codes clients treat specially. */
static int answer_fault(struct conn *c)
{
    struct exch *x = &c->x;
    int status = x->fault_status;
    if (status == 401) {
        const struct header *h = find_header(x, "authorization");
        struct mbuf msg = {0};
        if (h && h->value_len > 7 && strncasecmp(h->value, "Bearer ", 7) == 0) {
            const char *key = h->value + 7;
            size_t n = h->value_len - 7;
            mbuf_str(&msg, "Incorrect API key provided: ");
            if (n > 7)
                mbuf_printf(&msg, "%.3s***%.4s", key, key + n - 4);
            else
                mbuf_str(&msg, "***");
            mbuf_str(
                &msg,
                ". You can find your API key at https://platform.openai.com/account/api-keys.");
        } else {
            mbuf_str(&msg, "You didn't provide an API key. You need to provide your API key in an "
                           "Authorization "
                           "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).");
        }
        int rc = answer_error(c, 401, msg.data, "invalid_request_error", "invalid_api_key", NULL);
        mbuf_free(&msg);
        return rc;
    }
    if (status == 429 && x->quota)
        return answer_error(c, 429,
                            "You exceeded your current quota, please check your plan and billing "
                            "details.",
                            "insufficient_quota", "insufficient_quota", NULL);
    if (status == 429)
        return answer_error(
            c, 429, "Rate limit reached for requests", "requests", "rate_limit_exceeded",
            "retry-after: 2\r\nretry-after-ms: 2000\r\nx-ratelimit-limit-requests: 60\r\n"
            "x-ratelimit-remaining-requests: 0\r\nx-ratelimit-reset-requests: 2s\r\n");
    if (status == 503)
        return answer_error(c, 503, "The engine is currently overloaded, please try again later.",
                            "server_error", NULL, NULL);
    if (status >= 500)
        return answer_error(
            c, status, "The server had an error while processing your request. Sorry about that!",
            "server_error", NULL, NULL);
    char msg[64];
    snprintf(msg, sizeof(msg), "Mock error %d", status);
    return answer_error(c, status, msg, "invalid_request_error", NULL, NULL);
}

/* ---------- /__mock/ routes ---------- */

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The percent-decoded value of query parameter `name` in target, appended to out; false when
 * absent. */
static bool query_param(const char *target, const char *name, struct mbuf *out)
{
    const char *q = strchr(target, '?');
    size_t nlen = strlen(name);
    while (q) {
        q++;
        size_t len = strcspn(q, "&");
        if (len > nlen && strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
            for (size_t i = nlen + 1; i < len; i++) {
                char ch = q[i];
                if (ch == '%' && i + 2 < len + 1 && hex_digit(q[i + 1]) >= 0 &&
                    hex_digit(q[i + 2]) >= 0) {
                    ch = (char)(hex_digit(q[i + 1]) * 16 + hex_digit(q[i + 2]));
                    i += 2;
                } else if (ch == '+') {
                    ch = ' ';
                }
                mbuf_add(out, &ch, 1);
            }
            return true;
        }
        q = q[len] ? q + len : NULL;
    }
    return false;
}

static int answer_redirect(struct conn *c)
{
    const char *target = c->x.target.data ? c->x.target.data : "";
    struct mbuf to = {0}, status_s = {0}, extra = {0}, m = {0};
    int status = 302, rc;
    if (query_param(target, "status", &status_s)) {
        long v = strtol(status_s.data ? status_s.data : "", NULL, 10);
        if (v >= 300 && v <= 399)
            status = (int)v;
    }
    if (!query_param(target, "to", &to))
        mbuf_str(&to, "/");
    for (size_t i = 0; i < to.len; i++) {
        if ((unsigned char)to.data[i] < 0x20) { /* no header injection through the query */
            rc = answer_error(c, 400, "bad redirect target", "invalid_request_error", NULL, NULL);
            goto out;
        }
    }
    mbuf_printf(&extra, "Location: %s\r\n", to.data);
    mbuf_str(&m, "{\"redirect\":");
    mbuf_json_str(&m, to.data, to.len);
    mbuf_printf(&m, ",\"status\":%d}\n", status);
    rc = answer_json(c, status, &m, extra.data);
out:
    mbuf_free(&to);
    mbuf_free(&status_s);
    mbuf_free(&extra);
    mbuf_free(&m);
    return rc;
}

static int answer_echo(struct conn *c)
{
    struct exch *x = &c->x;
    const char *method = llhttp_method_name(llhttp_get_method(&c->parser));
    struct mbuf m = {0};
    mbuf_str(&m, "{\"method\":");
    mbuf_json_str(&m, method, strlen(method));
    mbuf_str(&m, ",\"target\":");
    mbuf_json_str(&m, x->target.data ? x->target.data : "", x->target.len);
    mbuf_printf(&m, ",\"http_version\":\"%d.%d\",\"headers\":", llhttp_get_http_major(&c->parser),
                llhttp_get_http_minor(&c->parser));
    mbuf_headers_json(&m, x->headers, x->nheaders);
    mbuf_printf(&m, ",\"body_bytes\":%llu,\"body_sha256\":\"%s\"}\n",
                (unsigned long long)x->body_bytes, x->sha256);
    int rc = answer_json(c, 200, &m, NULL);
    mbuf_free(&m);
    return rc;
}

static int answer_internal(struct conn *c)
{
    struct mbuf m = {0};
    int rc;
    switch (c->x.route) {
    case R_ECHO: return answer_echo(c);
    case R_REDIRECT: return answer_redirect(c);
    case R_LOG:
        log_to_json(&m);
        rc = answer_json(c, 200, &m, NULL);
        mbuf_free(&m);
        return rc;
    case R_KEY_FAULTS: {
        const struct header *h = find_header(&c->x, "x-mock-key-faults");
        pthread_mutex_lock(&key_faults_mu);
        snprintf(key_faults, sizeof(key_faults), "%.*s", h ? (int)h->value_len : 0,
                 h ? h->value : "");
        pthread_mutex_unlock(&key_faults_mu);
        mbuf_str(&m, "{\"ok\":true}\n");
        rc = answer_json(c, 200, &m, NULL);
        mbuf_free(&m);
        return rc;
    }
    case R_RESET:
        log_reset();
        mbuf_str(&m, "{\"ok\":true}\n");
        rc = answer_json(c, 200, &m, NULL);
        mbuf_free(&m);
        return rc;
    default: return answer_not_found(c);
    }
}

/* The whole request has arrived: apply the faults in order, then answer. */
static int exch_answer(struct conn *c)
{
    struct exch *x = &c->x;
    if (x->internal)
        return answer_internal(c);
    if (x->delay_ms > 0 && conn_wait(c, x->delay_ms) < 0) {
        exch_gone(c);
        return -1;
    }
    if (x->reset_before)
        return exch_cut(c, END_RST);
    if (x->fault_status)
        return answer_fault(c);
    switch (x->route) {
    case R_CHAT: return answer_completion(c, true);
    case R_COMPLETIONS: return answer_completion(c, false);
    case R_EMBEDDINGS: return answer_embeddings(c);
    case R_RESPONSES: return answer_responses(c);
    case R_MESSAGES: return answer_messages(c);
    case R_MODELS: return answer_models(c);
    case R_SPEECH: return answer_speech(c);
    case R_TRANSCRIPTIONS: return answer_upload(c, false);
    case R_FILES: return answer_upload(c, true);
    default: return answer_not_found(c);
    }
}

/* ---------- request parsing (llhttp callbacks) ---------- */

static void exch_free(struct exch *x)
{
    mbuf_free(&x->target);
    mbuf_free(&x->field);
    mbuf_free(&x->value);
    mbuf_free(&x->body);
    headers_free(x->headers, x->nheaders);
    EVP_MD_CTX_free(x->md);
    memset(x, 0, sizeof(*x));
}

static enum route route_of(const char *method, const char *target)
{
    static const struct {
        const char *method, *path;
        enum route route;
    } table[] = {
        {"POST", "/v1/chat/completions", R_CHAT},
        {"POST", "/v1/completions", R_COMPLETIONS},
        {"POST", "/v1/embeddings", R_EMBEDDINGS},
        {"POST", "/v1/responses", R_RESPONSES},
        {"POST", "/v1/messages", R_MESSAGES},
        {"GET", "/v1/models", R_MODELS},
        {"POST", "/v1/audio/speech", R_SPEECH},
        {"POST", "/v1/audio/transcriptions", R_TRANSCRIPTIONS},
        {"POST", "/v1/files", R_FILES},
        {NULL, "/__mock/redirect", R_REDIRECT},
        {"GET", "/__mock/log", R_LOG},
        {"POST", "/__mock/reset", R_RESET},
        {"POST", "/__mock/key-faults", R_KEY_FAULTS},
    };
    size_t len = strcspn(target, "?");
    if (strncmp(target, "/__mock/echo", 12) == 0)
        return R_ECHO;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strlen(table[i].path) == len && strncmp(target, table[i].path, len) == 0 &&
            (!table[i].method || strcmp(table[i].method, method) == 0))
            return table[i].route;
    return strncmp(target, "/__mock", 7) == 0 ? R_MOCK_NOT_FOUND : R_NOT_FOUND;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    exch_free(&c->x);
    c->x.in_request = true;
    c->x.close_after = -1;
    c->x.md = EVP_MD_CTX_new();
    if (!c->x.md || !EVP_DigestInit_ex(c->x.md, EVP_sha256(), NULL))
        abort();
    return 0;
}

/* Keeps request head bytes up to HEADERS_MAX; beyond that the request is refused with 431. */
static int head_append(struct exch *x, struct mbuf *b, const char *at, size_t n)
{
    x->head_bytes += n;
    if (x->head_bytes > HEADERS_MAX) {
        x->too_large = true;
        return -1;
    }
    mbuf_add(b, at, n);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    return head_append(&c->x, &c->x.target, at, n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    return c->x.head_done ? 0 : head_append(&c->x, &c->x.field, at, n); /* trailers are not kept */
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    return c->x.head_done ? 0 : head_append(&c->x, &c->x.value, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct exch *x = &((struct conn *)p->data)->x;
    if (x->head_done)
        return 0;
    if (x->nheaders == x->headers_cap) {
        size_t cap = x->headers_cap ? x->headers_cap * 2 : 16;
        struct header *h = realloc(x->headers, cap * sizeof(*h));
        if (!h)
            abort();
        x->headers = h;
        x->headers_cap = cap;
    }
    x->headers[x->nheaders++] = (struct header){
        dup_bytes(x->field.data ? x->field.data : "", x->field.len),
        dup_bytes(x->value.data ? x->value.data : "", x->value.len), x->field.len, x->value.len};
    x->field.len = x->value.len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct exch *x = &c->x;
    const char *method = llhttp_method_name(llhttp_get_method(p));
    x->head_done = true;
    x->keep_alive = llhttp_should_keep_alive(p);
    x->head_method = llhttp_get_method(p) == HTTP_HEAD;
    x->route = route_of(method, x->target.data ? x->target.data : "");
    x->internal = x->route >= R_ECHO;
    x->keep_body = x->route == R_CHAT || x->route == R_COMPLETIONS || x->route == R_EMBEDDINGS ||
                   x->route == R_RESPONSES || x->route == R_MESSAGES;
    if (!x->internal) {
        const struct header *h = find_header(x, "x-mock-reset");
        long status = header_num(x, "x-mock-status", 0, 0, 999);
        x->fault_status = status >= 400 && status <= 599 ? (int)status : 0;
        x->quota = false;
        key_fault_of(x);
        x->delay_ms = (int)header_num(x, "x-mock-delay-ms", 0, 0, 3600000);
        x->chunks = (int)header_num(x, "x-mock-chunks", 5, 0, TOKENS_MAX);
        x->chunk_delay_ms = (int)header_num(x, "x-mock-chunk-delay-ms", 0, 0, 3600000);
        x->close_after = (int)header_num(x, "x-mock-close-after", -1, -1, INT_MAX);
        x->reset_before = h && strcasecmp(h->value, "before-headers") == 0;
        x->reset_mid = h && strcasecmp(h->value, "mid-body") == 0;
        h = find_header(x, "x-mock-bad-framing");
        x->bad_framing = h && strcmp(h->value, "1") == 0;
        x->id = log_add(x, method, c->ssl != NULL);
    }
    /* libcurl sends Expect: 100-continue for large or chunked bodies and would otherwise wait a
     * second */
    const struct header *expect = find_header(x, "expect");
    if (expect && strcasecmp(expect->value, "100-continue") == 0 && llhttp_get_http_minor(p) >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (conn_write(c, cont, sizeof(cont) - 1) < 0) {
            exch_gone(c);
            return -1;
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct exch *x = &((struct conn *)p->data)->x;
    EVP_DigestUpdate(x->md, at, n);
    x->body_bytes += n;
    if (x->keep_body && x->body.len + n <= JSON_BODY_MAX)
        mbuf_add(&x->body, at, n);
    log_sync(x);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    struct exch *x = &c->x;
    unsigned char digest[32];
    unsigned int dlen = 0;
    EVP_DigestFinal_ex(x->md, digest, &dlen);
    for (unsigned int i = 0; i < dlen; i++)
        snprintf(x->sha256 + 2 * i, 3, "%02x", digest[i]);
    x->in_request = false;
    log_sync(x);
    exch_answer(c);
    if (!x->keep_alive && !c->closing) {
        c->closing = true;
        c->end = END_CLOSE;
    }
    return c->closing ? -1 : 0; /* -1 stops the parser: nothing after this request is answered */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------- connections, listeners, main ---------- */

/* The request could not be parsed: answer 400 (431 for an oversized head) and close. */
static void answer_bad_request(struct conn *c, llhttp_errno_t err)
{
    struct exch *x = &c->x;
    c->closing = true;
    c->end = END_CLOSE;
    if (err == HPE_PAUSED_UPGRADE) /* already answered; we speak nothing but HTTP/1.1 */
        return;
    if (!x->in_request) {
        exch_free(x);
        x->close_after = -1;
    }
    x->bad_framing = x->reset_mid = false;
    x->keep_alive = false;
    x->head_method = false;
    if (x->too_large)
        answer_error(c, 431, "Request header fields too large", "invalid_request_error", NULL,
                     NULL);
    else
        answer_error(c, 400, llhttp_errno_name(err), "invalid_request_error", NULL, NULL);
}

static void *conn_main(void *arg)
{
    struct conn *c = arg; /* owned by this thread from here on */
    char *buf = malloc(READ_BUF_SIZE);
    c->pend = malloc(PEND_MAX);
    if (!buf || !c->pend)
        abort();
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    if (c->ssl) {
        ERR_clear_error();
        if (!SSL_set_fd(c->ssl, c->fd) || SSL_accept(c->ssl) != 1) {
            c->end = END_GONE;
            goto out;
        }
    }
    while (!c->closing) {
        size_t n;
        if (c->pend_len >
            0) { /* bytes read while we waited come before anything still in the socket */
            memcpy(buf, c->pend, c->pend_len);
            n = c->pend_len;
            c->pend_len = 0;
        } else {
            ssize_t r = conn_read(c, buf, READ_BUF_SIZE);
            if (r <= 0) {
                if (c->x.in_request)
                    exch_gone(c);
                c->end = END_GONE;
                break;
            }
            n = (size_t)r;
        }
        llhttp_errno_t err = llhttp_execute(&c->parser, buf, n);
        if (err != HPE_OK && !c->closing)
            answer_bad_request(c, err);
    }
out:
    exch_free(&c->x);
    conn_close(c);
    free(buf);
    free(c->pend);
    free(c);
    return NULL;
}

struct listener {
    int fd;
    bool tls;
};

static void *accept_main(void *arg)
{
    struct listener *ls = arg; /* two entries; fd -1 when unused */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        struct pollfd pfd[2] = {{.fd = ls[0].fd, .events = POLLIN},
                                {.fd = ls[1].fd, .events = POLLIN}};
        if (poll(pfd, 2, -1) < 0)
            continue;
        for (int i = 0; i < 2; i++) {
            if (!(pfd[i].revents & POLLIN))
                continue;
            int fd = accept4(ls[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOMEM)
                    sleep_ms(10); /* let connections finish instead of spinning */
                continue;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            struct conn *c = calloc(1, sizeof(*c));
            if (!c)
                abort();
            c->fd = fd;
            c->x.close_after = -1;
            if (ls[i].tls) {
                c->ssl = SSL_new(tls_ctx);
                if (!c->ssl)
                    abort();
            }
            pthread_t t;
            if (pthread_create(&t, &attr, conn_main, c) != 0) { /* c stays ours on failure */
                if (c->ssl)
                    SSL_free(c->ssl);
                close(fd);
                free(c);
            }
        }
    }
    return NULL;
}

/* Listens on host:port (0: any free port); returns the fd and stores the port really bound. */
static int listen_on(const char *host, int port, int *real_port)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res, *ai;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "mock: %s: %s\n", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0)
            continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "mock: cannot listen on %s:%d: %s\n", host, port, strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *real_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

static SSL_CTX *tls_ctx_new(const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "mock: cannot load TLS certificate %s / key %s\n", cert, key);
        ERR_print_errors_fp(stderr);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    return ctx;
}

static int usage(void)
{
    fprintf(stderr, "usage: mock --port N [--tls-port N --cert FILE --key FILE] [--host ADDR]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    int port = 0, tls_port = -1;
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 >= argc) /* every option takes a value */
            return usage();
        const char *opt = argv[i], *val = argv[i + 1];
        if (strcmp(opt, "--port") == 0)
            port = atoi(val);
        else if (strcmp(opt, "--tls-port") == 0)
            tls_port = atoi(val);
        else if (strcmp(opt, "--cert") == 0)
            cert = val;
        else if (strcmp(opt, "--key") == 0)
            key = val;
        else if (strcmp(opt, "--host") == 0)
            host = val;
        else
            return usage();
    }
    if (tls_port >= 0 && (!cert || !key))
        return usage();

    /* Signals are taken by sigwait() in this thread only; a vanished peer must not kill us by
     * SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    static struct listener ls[2] = {{-1, false}, {-1, true}};
    int http_port = 0, https_port = 0;
    ls[0].fd = listen_on(host, port, &http_port);
    if (ls[0].fd < 0)
        return 1;
    if (tls_port >= 0) {
        tls_ctx = tls_ctx_new(cert, key);
        if (!tls_ctx)
            return 1;
        ls[1].fd = listen_on(host, tls_port, &https_port);
        if (ls[1].fd < 0)
            return 1;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, accept_main, ls) != 0) {
        fprintf(stderr, "mock: cannot start the accept thread\n");
        return 1;
    }
    printf("mock listening http=%d https=%d\n", http_port, https_port);
    fflush(stdout);

    int sig;
    sigwait(&stop, &sig);
    /* _exit: connection threads may be mid-write; running exit handlers under them would only race.
     */
    _exit(0);
}
