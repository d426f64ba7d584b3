/* upstream — the lean OpenAI-shaped upstream of the benchmark (docs/performance.md says why the
 * e2e mock is not used: one thread per connection cannot hold 5000 streams on a shared core, and
 * the per-chunk delay needs a send stamp in every event). One thread, level-triggered epoll, plain
 * HTTP and HTTPS listeners, llhttp for requests. POST .../chat/completions answers a chat.completion
 * JSON, or with "stream":true SSE chat.completion.chunk events, each stamped with the
 * CLOCK_MONOTONIC time it was written ("t_ns"), paced by x-mock-chunk-delay-ms after a random
 * phase so that thousands of streams spread their chunks evenly instead of in bursts.
 * With x-bench-hold-ms a stream stops after its first event until POST /__bench/go (sent by the
 * load generator straight to the upstream once every stream is open) or until the hold expires:
 * so all K streams are open at once, and opening them is measured apart from relaying chunks.
 * GET /__bench/stats counts accepted connections and full/resumed TLS handshakes. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#define READ_SIZE (64 * 1024)
#define BODY_KEEP 4096
#define CHUNKS_MAX 100000
#define DELAY_MAX_MS 60000
#define HOLD_MAX_MS 120000

enum kind { K_LISTEN, K_CONN };

struct listener {
    enum kind kind; /* first: epoll data points at either struct */
    int fd;
    bool tls;
};

struct conn {
    enum kind kind;
    int fd;
    SSL *ssl; /* NULL on the plain listener */
    bool handshaken;
    llhttp_t parser;

    /* request being parsed */
    char url[256];
    size_t url_len;
    char hname[32];
    size_t hname_len;
    char hval[32];
    size_t hval_len;
    bool hname_done;
    int chunks, delay_ms, hold_ms;
    char body[BODY_KEEP];
    size_t body_len;

    /* output: bytes from out_off to out_len are not written yet */
    char *out;
    size_t out_off, out_len, out_cap;
    bool epollout;
    bool close_after; /* Connection: close, or a protocol error: close once flushed */
    bool dead;

    /* the stream in progress, if any */
    bool streaming;
    int next_event; /* index of the next content event */
    int total;      /* content events */
    uint64_t interval_ns;
    int heap_idx; /* -1 when not in the heap */
    unsigned long req_id;
    bool held; /* on the held list, waiting for /__bench/go */
    struct conn *hprev, *hnext;
};

static int ep;
static volatile sig_atomic_t stopping;
static llhttp_settings_t settings;
static SSL_CTX *ssl_ctx;
static unsigned long next_req_id = 1;
struct heap_entry {
    uint64_t due;
    struct conn *c;
};
static struct heap_entry *heap; /* min-heap of streams by the due time of their next event */
static int heap_len, heap_cap;
static uint64_t rng = 0x9e3779b97f4a7c15ull;
static struct conn *held_head; /* streams on hold */
static unsigned long n_accepted, n_tls_full, n_tls_resumed; /* GET /__bench/stats */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rand64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

/* ---- timer heap (due times inline: 5000 streams must not cost a cache miss per compare) ---- */

static void heap_set(int i, struct heap_entry e)
{
    heap[i] = e;
    e.c->heap_idx = i;
}

static void heap_up(int i)
{
    struct heap_entry e = heap[i];
    while (i > 0) {
        int p = (i - 1) / 2;
        if (heap[p].due <= e.due)
            break;
        heap_set(i, heap[p]);
        i = p;
    }
    heap_set(i, e);
}

static void heap_down(int i)
{
    struct heap_entry e = heap[i];
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = l;
        if (l >= heap_len)
            break;
        if (r < heap_len && heap[r].due < heap[l].due)
            m = r;
        if (heap[m].due >= e.due)
            break;
        heap_set(i, heap[m]);
        i = m;
    }
    heap_set(i, e);
}

static void heap_push(struct conn *c, uint64_t due)
{
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, sizeof(*heap) * (size_t)heap_cap);
        if (!heap)
            die("realloc");
    }
    heap[heap_len] = (struct heap_entry){due, c};
    c->heap_idx = heap_len++;
    heap_up(c->heap_idx);
}

static void heap_remove(struct conn *c)
{
    int i = c->heap_idx;
    if (i < 0)
        return;
    c->heap_idx = -1;
    heap_len--;
    if (i == heap_len)
        return;
    struct conn *moved = heap[heap_len].c;
    heap_set(i, heap[heap_len]);
    heap_down(i);
    heap_up(moved->heap_idx);
}

static void held_unlink(struct conn *c)
{
    if (!c->held)
        return;
    if (c->hprev)
        c->hprev->hnext = c->hnext;
    else
        held_head = c->hnext;
    if (c->hnext)
        c->hnext->hprev = c->hprev;
    c->hprev = c->hnext = NULL;
    c->held = false;
}

/* ---- output ---- */

static void out_reserve(struct conn *c, size_t n)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + n <= c->out_cap)
        return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + n <= c->out_cap)
        return;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
        cap *= 2;
    c->out = realloc(c->out, cap);
    if (!c->out)
        die("realloc");
    c->out_cap = cap;
}

static void out_add(struct conn *c, const char *p, size_t n)
{
    out_reserve(c, n);
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void set_epollout(struct conn *c, bool on)
{
    if (c->epollout == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl mod");
    c->epollout = on;
}

static void conn_free(struct conn *c)
{
    held_unlink(c);
    heap_remove(c);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    free(c->out);
    free(c);
}

/* Writes what it can; returns false when the connection had to be dropped. */
static bool conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off;
        ssize_t n;
        if (c->ssl) {
            int r = SSL_write(c->ssl, c->out + c->out_off, (int)(left > 1 << 30 ? 1 << 30 : left));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    set_epollout(c, true);
                    return true;
                }
                ERR_clear_error();
                c->dead = true;
                return false;
            }
            n = r;
        } else {
            n = write(c->fd, c->out + c->out_off, left);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    set_epollout(c, true);
                    return true;
                }
                c->dead = true;
                return false;
            }
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    set_epollout(c, false);
    if (c->close_after && !c->streaming) {
        c->dead = true;
        return false;
    }
    return true;
}

/* ---- responses ---- */

static const char common_headers[] = "openai-version: 2020-10-01\r\n"
                                     "openai-organization: org-bench\r\n"
                                     "openai-processing-ms: 1\r\n";

static void reply_json(struct conn *c, int status, const char *reason, const char *body)
{
    char head[512];
    size_t blen = strlen(body);
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "x-request-id: req_bench_%lu\r\n%s%s\r\n",
                     status, reason, blen, c->req_id, common_headers,
                     c->close_after ? "Connection: close\r\n" : "");
    out_add(c, head, (size_t)n);
    out_add(c, body, blen);
}

static void reply_chat(struct conn *c)
{
    char body[8192];
    int n = snprintf(body, sizeof(body),
                     "{\"id\":\"chatcmpl-bench-%lu\",\"object\":\"chat.completion\",\"created\":"
                     "1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"message\":{"
                     "\"role\":\"assistant\",\"content\":\"",
                     c->req_id);
    int tokens = c->chunks > 200 ? 200 : c->chunks;
    for (int i = 0; i < tokens; i++)
        n += snprintf(body + n, sizeof(body) - (size_t)n, "tok%d ", i);
    snprintf(body + n, sizeof(body) - (size_t)n,
             "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,"
             "\"completion_tokens\":%d,\"total_tokens\":%d},\"system_fingerprint\":\"fp_bench\"}",
             c->chunks, c->chunks + 10);
    reply_json(c, 200, "OK", body);
}

/* One SSE event as one HTTP chunk. index < total: content (the first also carries the role);
 * index == total: the finish event, followed by data: [DONE] and the last chunk. */
static void stream_event(struct conn *c, int index)
{
    char ev[640], frame[700];
    int n;
    uint64_t t = now_ns();
    if (index < c->total) {
        n = snprintf(ev, sizeof(ev),
                     "data: {\"id\":\"chatcmpl-bench-%lu\",\"object\":\"chat.completion.chunk\","
                     "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":"
                     "\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{%s\"content\":\"tok%d \"},"
                     "\"logprobs\":null,\"finish_reason\":null}],\"t_ns\":%llu}\n\n",
                     c->req_id, index == 0 ? "\"role\":\"assistant\"," : "", index,
                     (unsigned long long)t);
    } else {
        n = snprintf(ev, sizeof(ev),
                     "data: {\"id\":\"chatcmpl-bench-%lu\",\"object\":\"chat.completion.chunk\","
                     "\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":"
                     "\"fp_bench\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,"
                     "\"finish_reason\":\"stop\"}],\"t_ns\":%llu}\n\n",
                     c->req_id, (unsigned long long)t);
    }
    int f = snprintf(frame, sizeof(frame), "%x\r\n%.*s\r\n", n, n, ev);
    out_add(c, frame, (size_t)f);
    if (index == c->total) {
        static const char done[] = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";
        out_add(c, done, sizeof(done) - 1);
    }
}

static void start_stream(struct conn *c)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                     "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n"
                     "x-request-id: req_bench_%lu\r\n%s%s\r\n",
                     c->req_id, common_headers, c->close_after ? "Connection: close\r\n" : "");
    out_add(c, head, (size_t)n);
    c->streaming = true;
    c->total = c->chunks;
    c->interval_ns = (uint64_t)c->delay_ms * 1000000ull;
    if (c->total > 0) {
        stream_event(c, 0);
        c->next_event = 1;
    } else {
        c->next_event = 0;
    }
    if (c->hold_ms > 0 && c->next_event > 0) {
        c->held = true;
        c->hprev = NULL;
        c->hnext = held_head;
        if (held_head)
            held_head->hprev = c;
        held_head = c;
        heap_push(c, now_ns() + (uint64_t)c->hold_ms * 1000000ull);
        return;
    }
    uint64_t phase = c->interval_ns ? rand64() % c->interval_ns : 0;
    heap_push(c, now_ns() + phase + c->interval_ns);
}

/* The hold is over: the next event comes after a random phase within one interval. */
static void stream_release(struct conn *c)
{
    held_unlink(c);
    heap_remove(c);
    uint64_t phase = c->interval_ns ? rand64() % c->interval_ns : 0;
    heap_push(c, now_ns() + phase);
}

/* Called from the heap when the stream's next event is due. */
static void stream_tick(struct conn *c)
{
    if (c->held) { /* the hold expired without a go */
        stream_release(c);
        return;
    }
    stream_event(c, c->next_event);
    if (c->next_event >= c->total) {
        heap_remove(c);
        c->streaming = false;
    } else {
        c->next_event++;
        heap[c->heap_idx].due += c->interval_ns; /* it was the top: sift it down */
        heap_down(c->heap_idx);
    }
    if (!conn_flush(c))
        conn_free(c);
}

/* ---- llhttp callbacks (they only record; nothing is freed here) ---- */

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    c->url_len = 0;
    c->hname_len = c->hval_len = 0;
    c->hname_done = false;
    c->chunks = 5;
    c->delay_ms = 0;
    c->hold_ms = 0;
    c->body_len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    size_t room = sizeof(c->url) - 1 - c->url_len;
    if (len > room)
        len = room;
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = 0;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->hname_done) {
        c->hname_len = c->hval_len = 0;
        c->hname_done = false;
    }
    size_t room = sizeof(c->hname) - 1 - c->hname_len;
    if (len > room)
        len = room;
    memcpy(c->hname + c->hname_len, at, len);
    c->hname_len += len;
    c->hname[c->hname_len] = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->hname_done = true;
    size_t room = sizeof(c->hval) - 1 - c->hval_len;
    if (len > room)
        len = room;
    memcpy(c->hval + c->hval_len, at, len);
    c->hval_len += len;
    c->hval[c->hval_len] = 0;
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->hname_done = true;
    if (strcasecmp(c->hname, "x-mock-chunks") == 0) {
        int v = atoi(c->hval);
        c->chunks = v < 0 ? 0 : v > CHUNKS_MAX ? CHUNKS_MAX : v;
    } else if (strcasecmp(c->hname, "x-mock-chunk-delay-ms") == 0) {
        int v = atoi(c->hval);
        c->delay_ms = v < 0 ? 0 : v > DELAY_MAX_MS ? DELAY_MAX_MS : v;
    } else if (strcasecmp(c->hname, "x-bench-hold-ms") == 0) {
        int v = atoi(c->hval);
        c->hold_ms = v < 0 ? 0 : v > HOLD_MAX_MS ? HOLD_MAX_MS : v;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    size_t room = sizeof(c->body) - 1 - c->body_len;
    if (len > room)
        len = room;
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    c->body[c->body_len] = 0;
    return 0;
}

static bool body_wants_stream(const char *b)
{
    const char *s = strstr(b, "\"stream\"");
    if (!s)
        return false;
    s += 8;
    while (*s == ' ' || *s == ':' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    return strncmp(s, "true", 4) == 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->req_id = next_req_id++;
    if (!llhttp_should_keep_alive(p))
        c->close_after = true;
    if (c->streaming) { /* pipelined behind a stream: no relay does that */
        c->close_after = true;
        c->dead = true;
        return HPE_PAUSED;
    }
    bool chat = p->method == HTTP_POST && strstr(c->url, "/chat/completions") != NULL;
    if (p->method == HTTP_POST && strcmp(c->url, "/__bench/go") == 0) {
        int n = 0;
        while (held_head) {
            stream_release(held_head);
            n++;
        }
        char body[64];
        snprintf(body, sizeof(body), "{\"released\":%d}", n);
        reply_json(c, 200, "OK", body);
    } else if (p->method == HTTP_GET && strcmp(c->url, "/__bench/stats") == 0) {
        char body[160];
        snprintf(body, sizeof(body), "{\"accepted\":%lu,\"tls_full\":%lu,\"tls_resumed\":%lu}",
                 n_accepted, n_tls_full, n_tls_resumed);
        reply_json(c, 200, "OK", body);
    } else if (!chat) {
        reply_json(c, 404, "Not Found",
                   "{\"error\":{\"message\":\"Unknown request URL\",\"type\":"
                   "\"invalid_request_error\",\"param\":null,\"code\":\"unknown_url\"}}");
    } else if (body_wants_stream(c->body)) {
        start_stream(c);
    } else {
        reply_chat(c);
    }
    if (c->close_after) /* nothing after this message is read */
        return HPE_PAUSED;
    return 0;
}

/* ---- connections ---- */

static void conn_readable(struct conn *c)
{
    static char buf[READ_SIZE];
    if (c->ssl && !c->handshaken) {
        int r = SSL_accept(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                return;
            if (e == SSL_ERROR_WANT_WRITE) {
                set_epollout(c, true);
                return;
            }
            ERR_clear_error();
            conn_free(c);
            return;
        }
        c->handshaken = true;
        if (SSL_session_reused(c->ssl))
            n_tls_resumed++;
        else
            n_tls_full++;
    }
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n;
        if (c->ssl) {
            int r = SSL_read(c->ssl, buf, sizeof(buf));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    break;
                if (e == SSL_ERROR_WANT_WRITE) {
                    set_epollout(c, true);
                    break;
                }
                ERR_clear_error();
                conn_free(c);
                return;
            }
            n = r;
        } else {
            n = read(c->fd, buf, sizeof(buf));
            if (n == 0) {
                conn_free(c);
                return;
            }
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                conn_free(c);
                return;
            }
        }
        if (c->close_after || c->dead)
            continue; /* discard what follows a closing request */
        llhttp_errno_t err = llhttp_execute(&c->parser, buf, (size_t)n);
        if (err != HPE_OK && err != HPE_PAUSED) {
            c->close_after = true;
            if (!c->streaming)
                reply_json(c, 400, "Bad Request",
                           "{\"error\":{\"message\":\"bad request\",\"type\":"
                           "\"invalid_request_error\",\"param\":null,\"code\":null}}");
        }
        if (c->dead) {
            conn_free(c);
            return;
        }
        if ((size_t)n < sizeof(buf) && !c->ssl)
            break;
    }
    if (!conn_flush(c))
        conn_free(c);
}

static void conn_writable(struct conn *c)
{
    if (c->ssl && !c->handshaken) {
        conn_readable(c); /* the handshake wants to write: retry it */
        return;
    }
    if (!conn_flush(c))
        conn_free(c);
}

static void accept_all(struct listener *l)
{
    for (int i = 0; i < 256; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE) {
                perror("upstream: accept");
                return;
            }
            die("accept");
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        struct conn *c = calloc(1, sizeof(*c));
        if (!c)
            die("calloc");
        n_accepted++;
        c->kind = K_CONN;
        c->fd = fd;
        c->heap_idx = -1;
        llhttp_init(&c->parser, HTTP_REQUEST, &settings);
        c->parser.data = c;
        if (l->tls) {
            c->ssl = SSL_new(ssl_ctx);
            if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
                die("SSL_new");
            SSL_set_accept_state(c->ssl);
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            die("epoll_ctl add");
    }
}

static struct listener *listen_on(const char *host, int port, bool tls)
{
    struct listener *l = calloc(1, sizeof(*l));
    if (!l)
        die("calloc");
    l->kind = K_LISTEN;
    l->tls = tls;
    l->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "upstream: bad host %s\n", host);
        exit(2);
    }
    if (bind(l->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("bind");
    if (listen(l->fd, 4096) < 0)
        die("listen");
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &ev) < 0)
        die("epoll_ctl add");
    return l;
}

static int bound_port(struct listener *l)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    if (getsockname(l->fd, (struct sockaddr *)&sa, &len) < 0)
        die("getsockname");
    return ntohs(sa.sin_port);
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static void usage(void)
{
    fprintf(stderr, "usage: upstream --port P [--tls-port P --cert FILE --key FILE] "
                    "[--host 127.0.0.1]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *cert = NULL, *key = NULL;
    int port = 0, tls_port = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--tls-port") == 0)
            tls_port = atoi(v);
        else if (strcmp(a, "--cert") == 0)
            cert = v;
        else if (strcmp(a, "--key") == 0)
            key = v;
        else if (strcmp(a, "--host") == 0)
            host = v;
        else
            usage();
    }
    if (tls_port >= 0 && (!cert || !key))
        usage();

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    llhttp_settings_init(&settings);
    settings.on_message_begin = on_message_begin;
    settings.on_url = on_url;
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    struct listener *plain = listen_on(host, port, false);
    struct listener *secure = NULL;
    if (tls_port >= 0) {
        ssl_ctx = SSL_CTX_new(TLS_server_method());
        if (!ssl_ctx || SSL_CTX_use_certificate_chain_file(ssl_ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ssl_ctx, key, SSL_FILETYPE_PEM) != 1) {
            ERR_print_errors_fp(stderr);
            exit(1);
        }
        SSL_CTX_set_mode(ssl_ctx,
                         SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        secure = listen_on(host, tls_port, true);
    }
    rng ^= now_ns() ^ (uint64_t)getpid();
    printf("upstream listening http=%d https=%d\n", bound_port(plain),
           secure ? bound_port(secure) : 0);
    fflush(stdout);

    struct epoll_event evs[512];
    while (!stopping) {
        int timeout = -1;
        if (heap_len > 0) {
            uint64_t now = now_ns();
            uint64_t due = heap[0].due;
            timeout = due <= now ? 0 : (int)((due - now + 999999) / 1000000);
        }
        int n = epoll_wait(ep, evs, 512, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            enum kind *k = evs[i].data.ptr;
            if (*k == K_LISTEN) {
                accept_all((struct listener *)k);
                continue;
            }
            struct conn *c = (struct conn *)k;
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                conn_readable(c); /* may free c: nothing touches it after this */
                continue;
            }
            if (evs[i].events & EPOLLOUT)
                conn_writable(c);
        }
        uint64_t now = now_ns();
        while (heap_len > 0 && heap[0].due <= now)
            stream_tick(heap[0].c);
    }
    return 0;
}
