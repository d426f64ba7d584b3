/* h1client — ferry's own HTTP/1.1 upstream client (see h1client.h).
 *
 * A connection (struct h1c_conn) belongs to one origin (scheme, host, port, CA file). It is
 * either carrying one request or idle on its origin's list (most recently used first), watched
 * for readability so that a close by the upstream is noticed, and closed after
 * --upstream-keepalive-timeout. Every read lands in the worker's scratch buffer and is parsed at
 * once; only the bytes a paused request could not take yet are copied into the connection's
 * spill buffer. An open stream therefore holds no read buffer at all between chunks.
 *
 * A request that fails on a reused connection before any byte of the answer came back (the
 * upstream closed it while it was idle: the usual keep-alive race) is sent again once on a new
 * connection, when its body is in memory or empty. */
#include "h1client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "buf.h"
#include "config.h"
#include "guard.h"

#define H1C_MAX_ADDRS 8
#define H1C_DNS_TTL 60000      /* ms a resolved address list is reused */
#define H1C_UPLOAD_BUF 16384   /* streamed request body bytes per write */
#define H1C_CHUNK_HDR 18       /* room for "%zx\r\n" before the data */
#define H1C_MAX_ORIGINS 64     /* past it, origins nothing uses are freed (redirect targets) */
#define H1C_PEEK_AFTER 1000    /* ms idle after which a connection is checked before reuse */

struct h1c_origin {
    struct h1c_origin *next;
    struct h1c *c;
    int tls;
    char host[256];            /* without brackets */
    int port;
    int host_is_ip;
    char hostport[270];        /* the Host field: host[:port], brackets for IPv6 */
    char ca_file[1024];
    SSL_CTX *ctx;
    SSL_SESSION *session;      /* the latest, to resume the next handshake */
    struct sockaddr_storage addrs[H1C_MAX_ADDRS];
    int naddrs;
    int good;                  /* the address that connected last */
    uint64_t addrs_until;      /* uv_now() past which addrs are resolved again */
    struct h1c_conn *idle, *idle_tail; /* most recently used first */
    size_t nidle;
    size_t nconns, refs;       /* connections (any state) and requests using it */
};

enum kstate { K_RESOLVE, K_CONNECT, K_HANDSHAKE, K_READY };

struct h1c_conn {
    uv_poll_t poll;
    uv_timer_t timer;          /* connect deadline, then idle deadline */
    struct h1c_origin *o;
    struct h1c_req *q;         /* the request it carries; NULL when idle */
    enum kstate st;
    int fd;
    SSL *ssl;
    int poll_open, timer_open; /* libuv handles initialised and not yet closed */
    int events;                /* what poll watches now */
    int ssl_want_write;        /* SSL_read needs the socket writable */
    int ssl_write_wants_read;  /* SSL_write needs the socket readable */
    int dead;                  /* closing: no more work */
    int reused;                /* it carried a request before this one */
    uint64_t idle_since;       /* uv_now() when it went idle */
    int addr;                  /* index of the address being tried */
    int first, tried;          /* where the attempts started; how many failed so far */
    int conn_err;              /* connect() failed at once with this errno */
    uint64_t deadline;         /* uv_now() by which the connection must be ready */
    uv_getaddrinfo_t *gai;     /* resolution in flight */
    char *spill;               /* bytes read but not yet taken by a paused request */
    size_t spill_len, spill_off;
    struct h1c_conn *next, *prev; /* origin's idle list */
};

struct h1c_req {
    struct h1c *c;
    struct h1c_origin *o;
    struct h1c_conn *k;
    struct h1c_opts opt;
    llhttp_t p;
    char *out;                 /* request head (+ a body in memory), in q's block after q */
    size_t out_len, out_off;
    char *ubuf;                /* a streamed body's framed bytes being written */
    size_t ulen, uoff;
    uint64_t body_sent;
    int upload_eof, sent_all;
    int send_paused, recv_paused;
    struct buf head;           /* the head being read, as records (see deliver_head) */
    size_t rec;                /* offset in head of the record being filled */
    size_t head_bytes;         /* wire bytes of the head (then of the trailers) so far */
    int in_name;               /* a field name is being read */
    int nfields;               /* fields of the head being read */
    int head_done, complete, keepalive, got_byte, retried;
    int no_reuse;              /* the upstream stopped reading the request: close after */
    int doomed;                /* failed inside h1c_start: ended from the kick (next turn) */
    const char *stash;         /* body bytes on_data refused (paused): first in the spill */
    size_t stash_len;
    CURLcode fail;
    struct h1c_req *pnext, *pprev;
    int pending;
};

static llhttp_settings_t settings;

/* ---- small helpers ---- */

/* The first failure of q is the one reported. */
__attribute__((format(printf, 3, 4))) static void set_error(struct h1c_req *q, CURLcode rc,
                                                            const char *fmt, ...)
{
    va_list ap;

    if (q->fail != CURLE_OK)
        return;
    q->fail = rc;
    if (q->opt.errbuf != NULL) {
        va_start(ap, fmt);
        vsnprintf(q->opt.errbuf, CURL_ERROR_SIZE, fmt, ap);
        va_end(ap);
    }
}

static uint64_t now(const struct h1c *c)
{
    return uv_now(c->loop);
}

/* Splits an absolute http(s) URL. Returns 0, -1 when this client cannot use it. */
static int split_url(const char *url, int *tls, char *host, size_t hcap, int *port,
                     const char **path)
{
    const char *a, *end, *h, *he, *colon;
    size_t n;

    if (strncasecmp(url, "http://", 7) == 0) {
        *tls = 0;
        a = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        *tls = 1;
        a = url + 8;
    } else {
        return -1;
    }
    end = a + strcspn(a, "/?#");
    if (memchr(a, '@', (size_t)(end - a)) != NULL || end == a)
        return -1; /* credentials in the URL: libcurl's business */
    *port = *tls ? 443 : 80;
    if (*a == '[') {
        h = a + 1;
        he = memchr(h, ']', (size_t)(end - h));
        if (he == NULL)
            return -1;
        colon = he + 1 < end && he[1] == ':' ? he + 1 : NULL;
        if (he + 1 < end && colon == NULL)
            return -1;
    } else {
        h = a;
        colon = memchr(a, ':', (size_t)(end - a));
        he = colon ? colon : end;
    }
    if (colon != NULL) {
        long v = 0;
        const char *d = colon + 1;
        if (d == end)
            return -1;
        for (; d < end; d++) {
            if (*d < '0' || *d > '9' || v > 65535)
                return -1;
            v = v * 10 + (*d - '0');
        }
        if (v < 1 || v > 65535)
            return -1;
        *port = (int)v;
    }
    n = (size_t)(he - h);
    if (n == 0 || n >= hcap)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    *path = end;
    return 0;
}

/* ---- origins and TLS ---- */

static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct h1c_conn *k = SSL_get_app_data(ssl);

    if (k == NULL || k->o == NULL)
        return 0;
    if (k->o->session != NULL)
        SSL_SESSION_free(k->o->session);
    k->o->session = sess; /* the reference is ours: returning 1 keeps it */
    return 1;
}

static SSL_CTX *make_ctx(const char *ca_file)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if ((ca_file[0] ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                    : SSL_CTX_set_default_verify_paths(ctx)) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* An idle or quiet connection then holds no TLS read/write buffers (about 34 KiB each). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A close without close_notify ends a body the framing did not end: llhttp judges whether
     * the response was complete. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    /* One read(2) per socket wakeup instead of a record header, then its body. */
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

static void origin_free(struct h1c_origin *o)
{
    if (o->session != NULL)
        SSL_SESSION_free(o->session);
    if (o->ctx != NULL)
        SSL_CTX_free(o->ctx);
    free(o);
}

static struct h1c_origin *origin_get(struct h1c *c, int tls, const char *host, int port,
                                     const char *ca_file)
{
    struct h1c_origin *o;
    unsigned char tmp[16];

    if (ca_file == NULL || !tls)
        ca_file = "";
    for (o = c->origins; o != NULL; o = o->next)
        if (o->tls == tls && o->port == port && strcasecmp(o->host, host) == 0 &&
            strcmp(o->ca_file, ca_file) == 0)
            return o;
    if (strlen(ca_file) >= sizeof(o->ca_file))
        return NULL;
    if (c->norigins >= H1C_MAX_ORIGINS) { /* free the ones nothing uses */
        struct h1c_origin **pp = &c->origins;
        while ((o = *pp) != NULL) {
            if (o->refs == 0 && o->nconns == 0) {
                *pp = o->next;
                origin_free(o);
                c->norigins--;
            } else {
                pp = &o->next;
            }
        }
    }
    o = calloc(1, sizeof(*o));
    if (o == NULL)
        return NULL;
    o->c = c;
    o->tls = tls;
    o->port = port;
    snprintf(o->host, sizeof(o->host), "%s", host);
    snprintf(o->ca_file, sizeof(o->ca_file), "%s", ca_file);
    o->host_is_ip = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
    {
        int v6 = strchr(host, ':') != NULL, dflt = port == (tls ? 443 : 80);
        char pb[8] = "";
        if (!dflt)
            snprintf(pb, sizeof(pb), ":%d", port);
        snprintf(o->hostport, sizeof(o->hostport), "%s%s%s%s", v6 ? "[" : "", host, v6 ? "]" : "",
                 pb);
    }
    o->next = c->origins;
    c->origins = o;
    c->norigins++;
    return o;
}


/* ---- connections ---- */

static void conn_closed(uv_handle_t *h)
{
    struct h1c_conn *k = h->data;

    if (h == (uv_handle_t *)&k->poll) {
        k->poll_open = 0;
        if (k->fd >= 0)
            close(k->fd);
        k->fd = -1;
    } else {
        k->timer_open = 0;
    }
    if (!k->poll_open && !k->timer_open && k->gai == NULL)
        free(k); /* k is dead: only a closing connection has handles closing */
}

static void idle_unlink(struct h1c_conn *k)
{
    struct h1c_origin *o = k->o;

    if (k->prev != NULL)
        k->prev->next = k->next;
    else if (o->idle == k)
        o->idle = k->next;
    else
        return; /* not on the list */
    if (k->next != NULL)
        k->next->prev = k->prev;
    else
        o->idle_tail = k->prev;
    k->next = k->prev = NULL;
    o->nidle--;
}

/* Closes k (whatever it was doing); frees it once its handles are closed. */
static void conn_close(struct h1c_conn *k)
{
    if (k->dead)
        return;
    k->dead = 1;
    idle_unlink(k);
    k->o->nconns--; /* from here on k never touches its origin */
    if (k->q != NULL)
        k->q->k = NULL;
    k->q = NULL;
    free(k->spill);
    k->spill = NULL;
    if (k->ssl != NULL) {
        SSL_set_app_data(k->ssl, NULL);
        /* Marks the connection as shut down (quietly: no close_notify on a socket about to
         * close), so that SSL_free keeps its session resumable: without it OpenSSL flags the
         * session not resumable and the next connections of the origin pay full handshakes. */
        if (!SSL_in_init(k->ssl)) {
            SSL_set_quiet_shutdown(k->ssl, 1);
            SSL_shutdown(k->ssl);
        }
        SSL_free(k->ssl);
        ERR_clear_error();
        k->ssl = NULL;
    }
    if (k->gai != NULL)
        uv_cancel((uv_req_t *)k->gai); /* its callback frees it (and k, when last) */
    if (k->timer_open)
        uv_close((uv_handle_t *)&k->timer, conn_closed);
    if (k->poll_open && !uv_is_closing((uv_handle_t *)&k->poll)) {
        uv_poll_stop(&k->poll);
        uv_close((uv_handle_t *)&k->poll, conn_closed);
    } else if (!k->poll_open && k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
    if (!k->poll_open && !k->timer_open && k->gai == NULL)
        free(k);
}

static void on_poll(uv_poll_t *h, int status, int events);

static void watch(struct h1c_conn *k, int events)
{
    if (k->dead || !k->poll_open)
        return;
    if (events == k->events)
        return;
    k->events = events;
    if (events == 0)
        uv_poll_stop(&k->poll);
    else
        uv_poll_start(&k->poll, events, on_poll);
}

/* ---- ending a request ---- */

static void pending_remove(struct h1c_req *q)
{
    if (!q->pending)
        return;
    if (q->pprev != NULL)
        q->pprev->pnext = q->pnext;
    else
        q->c->pending = q->pnext;
    if (q->pnext != NULL)
        q->pnext->pprev = q->pprev;
    else
        q->c->pending_tail = q->pprev;
    q->pnext = q->pprev = NULL;
    q->pending = 0;
}

static void req_free(struct h1c_req *q)
{
    pending_remove(q);
    if (q->o != NULL)
        q->o->refs--;
    free(q->ubuf); /* q->out is in q's own block */
    buf_free(&q->head);
    free(q);
}

/* The idle timer is left running while a connection carries a request (no stop and start per
 * request): it may fire on a busy connection, or early for the current idle period. */
static void on_idle_timer(uv_timer_t *t)
{
    struct h1c_conn *k = t->data;
    uint64_t timeout = k->o->c->cfg->upstream_keepalive_timeout, idle;

    if (k->q != NULL)
        return; /* busy: armed again when it is parked */
    idle = now(k->o->c) - k->idle_since;
    if (idle >= timeout)
        conn_close(k);
    else
        uv_timer_start(&k->timer, on_idle_timer, timeout - idle, 0);
}

/* k finished a response and may carry another. */
static void conn_park(struct h1c_conn *k)
{
    struct h1c_origin *o = k->o;
    const struct config *cfg = o->c->cfg;

    k->q = NULL;
    k->reused = 1;
    k->idle_since = now(o->c);
    free(k->spill);
    k->spill = NULL;
    k->spill_len = k->spill_off = 0;
    if (o->c->closed || cfg->upstream_keepalive == 0) {
        conn_close(k);
        return;
    }
    while (o->nidle >= cfg->upstream_keepalive) /* the least recently used goes */
        conn_close(o->idle_tail);
    k->prev = NULL;
    k->next = o->idle;
    if (o->idle != NULL)
        o->idle->prev = k;
    else
        o->idle_tail = k;
    o->idle = k;
    o->nidle++;
    watch(k, UV_READABLE);
    if (!uv_is_active((uv_handle_t *)&k->timer)) /* still running: it fires early, then re-arms */
        uv_timer_start(&k->timer, on_idle_timer, cfg->upstream_keepalive_timeout, 0);
}

/* Ends q: its connection is kept when the exchange ended cleanly, closed otherwise; then the
 * owner hears of it. Never called from inside one of q's callbacks. */
static void req_end(struct h1c_req *q, CURLcode rc)
{
    struct h1c_conn *k = q->k;
    h1c_done_cb done = q->opt.on_done;
    void *ud = q->opt.ud;

    if (q->fail != CURLE_OK)
        rc = q->fail;
    if (k != NULL) {
        k->q = NULL;
        q->k = NULL;
        if (rc == CURLE_OK && q->complete && q->keepalive && q->sent_all && !q->no_reuse &&
            k->spill_len == 0 && (k->ssl == NULL || !SSL_has_pending(k->ssl)))
            conn_park(k);
        else
            conn_close(k);
    }
    req_free(q);
    done(ud, rc);
}

static int start_conn(struct h1c_req *q, int fresh);

/* A reused connection failed before the answer's first byte: the upstream had closed it while
 * idle. Send once more on a new connection when the body can be sent again. Returns 1 when it
 * did. */
static int retry_fresh(struct h1c_req *q)
{
    struct h1c_conn *k = q->k;

    if (k == NULL || !k->reused || q->got_byte || q->retried ||
        (q->opt.has_body && q->opt.body == NULL))
        return 0;
    q->retried = 1;
    q->k = NULL;
    k->q = NULL;
    conn_close(k);
    q->out_off = 0;
    q->sent_all = 0;
    q->fail = CURLE_OK;
    if (q->opt.errbuf != NULL)
        q->opt.errbuf[0] = '\0';
    q->head.len = 0;
    q->head_bytes = 0;
    q->nfields = 0;
    q->in_name = 0;
    q->head_done = q->complete = 0;
    llhttp_init(&q->p, HTTP_RESPONSE, &settings);
    q->p.data = q;
    return start_conn(q, 1) == 0; /* on failure q's error is set: the caller ends it */
}

/* q failed (its error is set): once more on a new connection when that is safe, else the end. */
static void req_fail(struct h1c_req *q)
{
    if (retry_fresh(q))
        return;
    req_end(q, q->fail != CURLE_OK ? q->fail : CURLE_RECV_ERROR);
}

static void pending_add(struct h1c_req *q);

/* A failure found while the caller of h1c_start or h1c_resume_* is on the stack: reported from
 * the next loop turn. */
static void req_doom(struct h1c_req *q)
{
    q->doomed = 1;
    pending_add(q);
}

/* ---- llhttp callbacks (the response) ---- */

/* The head is gathered in q->head as records: a 4-byte name length and a 4-byte value length
 * (filled in when each is complete), then the name and the value. The first record is the reason
 * phrase (as a name). on_headers_complete hands the fields over in one call. */
#define REC_HDR 8

static void rec_set(struct h1c_req *q, size_t at, uint32_t v)
{
    memcpy(q->head.data + q->rec + at, &v, 4);
}

static uint32_t rec_get(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Counts wire bytes of the head (or of the trailers) against max-response-header-bytes. */
static int head_count(struct h1c_req *q, size_t n)
{
    size_t max = q->c->cfg->max_response_header_bytes;

    q->head_bytes += n;
    if (q->head_bytes <= max)
        return 0;
    set_error(q, CURLE_WEIRD_SERVER_REPLY, "upstream response head too large (over %zu bytes)",
              max);
    return -1;
}

static int rec_open(struct h1c_req *q)
{
    static const char zero[REC_HDR];

    q->rec = q->head.len;
    return buf_add(&q->head, zero, REC_HDR, SIZE_MAX);
}

/* Drops spaces and tabs at the end of the head buffer, not before start. */
static void trim_tail(struct h1c_req *q, size_t start)
{
    while (q->head.len > start && (q->head.data[q->head.len - 1] == ' ' ||
                                   q->head.data[q->head.len - 1] == '\t'))
        q->head.len--;
}

static int head_add(struct h1c_req *q, const char *at, size_t n)
{
    return buf_add(&q->head, at, n, SIZE_MAX);
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
    struct h1c_req *q = p->data;

    for (size_t i = 0; i < n; i++) { /* llhttp takes any byte but CR and LF here */
        unsigned char ch = (unsigned char)at[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            set_error(q, CURLE_WEIRD_SERVER_REPLY, "malformed upstream response: a control "
                                                   "byte in the reason phrase");
            return -1;
        }
    }
    if (head_count(q, n) != 0 || (q->head.len == 0 && rec_open(q) != 0) || head_add(q, at, n) != 0)
        return -1;
    return 0;
}

static int on_status_complete(llhttp_t *p)
{
    struct h1c_req *q = p->data;

    if (p->status_code < 100) {
        set_error(q, CURLE_WEIRD_SERVER_REPLY, "malformed upstream response: status %03d",
                  p->status_code);
        return -1;
    }
    if (head_count(q, 15) != 0 || (q->head.len == 0 && rec_open(q) != 0)) /* "HTTP/1.1 200 " CRLF */
        return -1;
    rec_set(q, 0, (uint32_t)(q->head.len - REC_HDR));
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct h1c_req *q = p->data;

    if (head_count(q, n) != 0)
        return -1;
    if (q->head_done)
        return 0; /* a trailer field: counted, not kept */
    if (!q->in_name) {
        if (++q->nfields > H1C_MAX_FIELDS) {
            set_error(q, CURLE_WEIRD_SERVER_REPLY, "upstream response head has more than %d "
                                                   "fields", H1C_MAX_FIELDS);
            return -1;
        }
        if (rec_open(q) != 0)
            return -1;
    }
    q->in_name = 1;
    return head_add(q, at, n);
}

/* llhttp 8.1 lets a space inside or before the colon through (and an empty name): a proxy must
 * remove whitespace before the colon (RFC 9112 section 5.1); anything else that is not a token
 * is refused, so that no filter downstream can be fooled by "Name :". */
static int on_header_field_complete(llhttp_t *p)
{
    struct h1c_req *q = p->data;
    size_t start = q->rec + REC_HDR;

    if (head_count(q, 4) != 0) /* ": " CRLF */
        return -1;
    if (q->head_done)
        return 0;
    q->in_name = 0;
    trim_tail(q, start);
    for (size_t i = start; i < q->head.len; i++) {
        if (!guard_is_tchar((unsigned char)q->head.data[i])) {
            q->head.len = start;
            break;
        }
    }
    if (q->head.len == start) {
        set_error(q, CURLE_WEIRD_SERVER_REPLY, "malformed upstream response: a field name "
                                               "that is not a token");
        return -1;
    }
    rec_set(q, 0, (uint32_t)(q->head.len - start));
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct h1c_req *q = p->data;

    if (head_count(q, n) != 0)
        return -1;
    return q->head_done ? 0 : head_add(q, at, n);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct h1c_req *q = p->data;
    size_t start;

    if (q->head_done)
        return 0;
    start = q->rec + REC_HDR + rec_get(q->head.data + q->rec);
    trim_tail(q, start); /* llhttp leaves trailing whitespace in values */
    rec_set(q, 4, (uint32_t)(q->head.len - start));
    return 0;
}

/* Hands the head over: the fields point into q->head, valid for the call. */
static int deliver_head(struct h1c_req *q, const llhttp_t *parser)
{
    struct h1c *c = q->c;
    const char *p = q->head.data, *end = p + q->head.len;
    struct h1c_head h = {parser->status_code, parser->http_major, parser->http_minor, "", 0,
                         NULL, 0};
    size_t n = 0;

    if (p != NULL && p < end) {
        h.reason_len = rec_get(p);
        h.reason = p + REC_HDR;
        p += REC_HDR + h.reason_len;
    }
    while (p < end) {
        uint32_t nl = rec_get(p), vl = rec_get(p + 4);
        c->fields[n].name = p + REC_HDR;
        c->fields[n].name_len = nl;
        c->fields[n].value = p + REC_HDR + nl;
        c->fields[n].value_len = vl;
        n++;
        p += REC_HDR + nl + vl;
    }
    h.fields = c->fields;
    h.n = n;
    if (q->opt.on_head(q->opt.ud, &h) != 0) {
        set_error(q, CURLE_WRITE_ERROR, "%s", "the relay refused the upstream's head");
        return -1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct h1c_req *q = p->data;

    if (head_count(q, 2) != 0 || deliver_head(q, p) != 0)
        return -1;
    q->head.len = 0;
    q->head_bytes = 0;
    q->nfields = 0;
    if (p->status_code == 101) {
        set_error(q, CURLE_WEIRD_SERVER_REPLY, "%s", "the upstream switched protocols (101)");
        return -1;
    }
    if (p->status_code >= 200) {
        q->head_done = 1;
        buf_free(&q->head); /* a long stream keeps no head */
    }
    /* 1xx, 204, 304, and any answer to HEAD: framing fields describe a body that is not sent
     * (llhttp 8.1 leaves these to the caller). */
    return p->status_code < 200 || q->opt.no_response_body || p->status_code == 204 ||
                   p->status_code == 304
               ? 1
               : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    struct h1c_req *q = p->data;
    size_t rc = q->opt.on_data((char *)at, 1, n, q->opt.ud);

    if (rc == n)
        return 0;
    if (rc == CURL_WRITEFUNC_PAUSE) {
        q->stash = at;
        q->stash_len = n;
        q->recv_paused = 1;
        return HPE_PAUSED;
    }
    set_error(q, CURLE_WRITE_ERROR, "%s", "the relay stopped taking the upstream's body");
    return -1;
}

static int on_message_complete(llhttp_t *p)
{
    struct h1c_req *q = p->data;

    if (p->status_code < 200)
        return 0; /* an interim answer (100, 103): the real one follows */
    q->complete = 1;
    q->keepalive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

/* Parses n bytes at data (the scratch buffer or k's spill). Returns 0 (all parsed, more
 * wanted), 1 (paused: the rest is in the spill), 2 (the response is complete), -1 (failed: q's
 * error is set). */
static int feed(struct h1c_conn *k, const char *data, size_t n)
{
    struct h1c_req *q = k->q;
    llhttp_errno_t err;
    const char *pos;

    if (llhttp_get_errno(&q->p) == HPE_PAUSED)
        llhttp_resume(&q->p);
    err = llhttp_execute(&q->p, data, n);
    if (err == HPE_OK)
        return 0;
    if (err == HPE_PAUSED) {
        pos = llhttp_get_error_pos(&q->p);
        if (q->complete) {
            if (pos < data + n)
                q->keepalive = 0; /* bytes after the answer: never reuse this connection */
            return 2;
        }
        /* paused by on_data: keep the refused span and what follows it */
        {
            size_t keep = (size_t)(data + n - q->stash);
            if (k->spill != NULL && data >= k->spill && data <= k->spill + k->spill_len) {
                memmove(k->spill, q->stash, keep);
            } else {
                char *s = malloc(keep ? keep : 1);
                if (s == NULL) {
                    set_error(q, CURLE_OUT_OF_MEMORY, "%s", "out of memory");
                    return -1;
                }
                memcpy(s, q->stash, keep);
                free(k->spill);
                k->spill = s;
            }
            k->spill_len = keep;
            k->spill_off = 0;
            q->stash = k->spill;
        }
        return 1;
    }
    if (q->fail == CURLE_OK) {
        char msg[160];
        snprintf(msg, sizeof(msg), "malformed upstream response: %s", llhttp_get_error_reason(&q->p));
        set_error(q, err == HPE_USER ? CURLE_WRITE_ERROR : CURLE_WEIRD_SERVER_REPLY, "%s", msg);
    }
    return -1;
}

/* ---- I/O ---- */

/* Returns bytes, 0 at EOF, -EAGAIN, or another negative errno (-EPROTO for a TLS failure). */
static ssize_t io_read(struct h1c_conn *k, char *p, size_t n)
{
    ssize_t r;

    if (k->ssl == NULL) {
        do
            r = read(k->fd, p, n);
        while (r < 0 && errno == EINTR);
        return r >= 0 ? r : errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    ERR_clear_error();
    k->ssl_want_write = 0;
    r = SSL_read(k->ssl, p, (int)(n > 1 << 30 ? 1 << 30 : n));
    if (r > 0)
        return r;
    switch (SSL_get_error(k->ssl, (int)r)) {
    case SSL_ERROR_WANT_READ:
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        k->ssl_want_write = 1;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : 0;
    default:
        return -EPROTO;
    }
}

static ssize_t io_write(struct h1c_conn *k, const char *p, size_t n)
{
    ssize_t r;

    if (k->ssl == NULL) {
        do
            r = send(k->fd, p, n, MSG_NOSIGNAL);
        while (r < 0 && errno == EINTR);
        return r >= 0 ? r : errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    ERR_clear_error();
    k->ssl_write_wants_read = 0;
    r = SSL_write(k->ssl, p, (int)(n > 1 << 30 ? 1 << 30 : n));
    if (r > 0)
        return r;
    switch (SSL_get_error(k->ssl, (int)r)) {
    case SSL_ERROR_WANT_READ:
        k->ssl_write_wants_read = 1;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        return -EAGAIN;
    case SSL_ERROR_SYSCALL:
        return errno ? -errno : -EPIPE;
    default:
        return -EPROTO;
    }
}

/* What k must wait for now. */
static void rewatch(struct h1c_conn *k)
{
    struct h1c_req *q = k->q;
    int ev = 0;

    if (q == NULL) {
        watch(k, UV_READABLE);
        return;
    }
    if (!q->recv_paused && !q->complete)
        ev |= UV_READABLE;
    if (!q->sent_all && !q->send_paused)
        ev |= k->ssl_write_wants_read ? UV_READABLE : UV_WRITABLE;
    if (k->ssl_want_write)
        ev |= UV_WRITABLE;
    watch(k, ev);
}

/* Fills q->ubuf with the next framed piece of a streamed body. Returns 1 (bytes ready),
 * 0 (paused, or nothing more), -1 (failed). */
static int next_upload(struct h1c_req *q)
{
    size_t n;
    char *data;

    if (q->upload_eof)
        return 0;
    if (q->ubuf == NULL && (q->ubuf = malloc(H1C_CHUNK_HDR + H1C_UPLOAD_BUF + 8)) == NULL) {
        set_error(q, CURLE_OUT_OF_MEMORY, "%s", "out of memory");
        return -1;
    }
    data = q->ubuf + H1C_CHUNK_HDR;
    n = q->opt.on_read(data, 1, H1C_UPLOAD_BUF, q->opt.ud);
    if (n == CURL_READFUNC_PAUSE) {
        q->send_paused = 1;
        return 0;
    }
    if (n == CURL_READFUNC_ABORT || n > H1C_UPLOAD_BUF) {
        set_error(q, CURLE_ABORTED_BY_CALLBACK, "%s", "the request body was aborted");
        return -1;
    }
    if (n == 0) {
        q->upload_eof = 1;
        if (!q->opt.chunked) {
            if (q->body_sent != q->opt.content_length) {
                set_error(q, CURLE_READ_ERROR, "%s", "the request body ended early");
                return -1;
            }
            return 0;
        }
        memcpy(q->ubuf, "0\r\n\r\n", 5);
        q->uoff = 0;
        q->ulen = 5;
        return 1;
    }
    q->body_sent += n;
    if (!q->opt.chunked) {
        if (q->body_sent > q->opt.content_length) {
            set_error(q, CURLE_READ_ERROR, "%s", "the request body is longer than announced");
            return -1;
        }
        q->uoff = H1C_CHUNK_HDR;
        q->ulen = H1C_CHUNK_HDR + n;
        return 1;
    }
    {
        char hx[H1C_CHUNK_HDR];
        int hl = snprintf(hx, sizeof(hx), "%zx\r\n", n);
        memcpy(data - hl, hx, (size_t)hl);
        memcpy(data + n, "\r\n", 2);
        q->uoff = H1C_CHUNK_HDR - (size_t)hl;
        q->ulen = H1C_CHUNK_HDR + n + 2;
    }
    return 1;
}

/* Writes what q has to send. Returns 0, or -1 when q ended (failed). */
/* Writes what q has to send; asks on_read for a streamed body only when may_read (not while
 * h1c_start's caller is on the stack). Returns 0, or -1 when q failed (its error set). */
static int do_write(struct h1c_conn *k, int may_read)
{
    struct h1c_req *q = k->q;

    for (int i = 0; i < 64 && !q->sent_all; i++) {
        const char *p;
        size_t n;
        ssize_t w;

        if (q->out_off < q->out_len) {
            p = q->out + q->out_off;
            n = q->out_len - q->out_off;
        } else if (q->uoff < q->ulen) {
            p = q->ubuf + q->uoff;
            n = q->ulen - q->uoff;
        } else if (!q->opt.has_body || q->opt.body != NULL || q->upload_eof) {
            q->sent_all = 1;
            break;
        } else {
            int rc;
            if (!may_read)
                break;
            rc = next_upload(q);
            if (rc < 0)
                return -1;
            if (q->send_paused)
                break; /* on_read is asked again after h1c_resume_send */
            continue; /* bytes to write, or the end (sent_all on the next pass) */
        }
        w = io_write(k, p, n);
        if (w == -EAGAIN)
            break;
        if (w < 0) {
            /* The upstream stopped reading: its answer (an early 413 or 401) may be waiting;
             * the read side decides whether this ends in that answer or in an error. */
            q->sent_all = 1;
            q->no_reuse = 1;
            break;
        }
        if (q->out_off < q->out_len) {
            q->out_off += (size_t)w;
            if (q->out_off == q->out_len && q->opt.has_body && q->opt.body == NULL) {
                q->out = NULL; /* the head is out: the streamed body follows */
                q->out_len = q->out_off = 0;
            }
        } else {
            q->uoff += (size_t)w;
        }
        if (q->send_paused)
            break;
    }
    return 0;
}

/* Delivers what a paused request kept, then parses the rest of the spill. Returns 0 (go on
 * reading), 1 (paused again), 2 (complete), -1 (failed). */
static int drain_spill(struct h1c_conn *k)
{
    struct h1c_req *q = k->q;
    int rc = 0;

    if (q->stash_len > 0) {
        size_t n = q->opt.on_data((char *)q->stash, 1, q->stash_len, q->opt.ud);
        if (n == CURL_WRITEFUNC_PAUSE) {
            q->recv_paused = 1;
            return 1;
        }
        if (n != q->stash_len) {
            set_error(q, CURLE_WRITE_ERROR, "the relay stopped taking the upstream's body");
            return -1;
        }
        k->spill_off = q->stash_len;
        q->stash_len = 0;
        q->stash = NULL;
    }
    {
        /* even with nothing left: the parser may stand just before the end of the message */
        size_t off = k->spill_off, len = k->spill_len - off;
        rc = feed(k, k->spill + off, len); /* when it pauses again it keeps the rest in place */
        if (rc == 1)
            return 1;
    }
    free(k->spill);
    k->spill = NULL;
    k->spill_len = k->spill_off = 0;
    return rc;
}

/* Reads and parses until the socket has nothing more, q pauses, or the answer is complete;
 * ends q when it is over. */
static void do_read(struct h1c_conn *k)
{
    struct h1c_req *q = k->q;
    struct h1c *c = q->c;
    int rc = 0, drained = 0;

    if (k->spill != NULL)
        rc = drain_spill(k);
    for (int i = 0; i < 16 && rc == 0 && !q->recv_paused; i++) {
        ssize_t n = io_read(k, c->scratch, c->scratch_cap);
        if (n == -EAGAIN) {
            drained = 1; /* with TLS, at most part of a record waits in OpenSSL: poll will say */
            break;
        }
        if (n == 0) {
            llhttp_finish(&q->p); /* ends a body delimited by the close */
            if (q->complete) {
                q->keepalive = 0;
                rc = 2;
                break;
            }
            if (q->got_byte)
                set_error(q, CURLE_PARTIAL_FILE,
                          "the upstream closed the connection before the answer ended");
            else
                set_error(q, CURLE_GOT_NOTHING,
                          "the upstream closed the connection without answering");
            rc = -1;
            break;
        }
        if (n < 0) {
            set_error(q, CURLE_RECV_ERROR, "reading the upstream's answer failed: %s",
                      n == -EPROTO ? "TLS error" : strerror((int)-n));
            rc = -1;
            break;
        }
        q->got_byte = 1;
        rc = feed(k, c->scratch, (size_t)n);
        if (k->ssl != NULL ? !SSL_has_pending(k->ssl) : (size_t)n < c->scratch_cap)
            break; /* the socket is drained: poll says when more comes (one read per SSE event,
                    * not two; with TLS, OpenSSL read ahead as far as the socket had) */
    }
    if (rc == 2) {
        req_end(q, CURLE_OK);
        return;
    }
    if (rc < 0) {
        req_fail(q);
        return;
    }
    if (rc == 0 && !drained && !q->recv_paused && k->ssl != NULL && SSL_has_pending(k->ssl))
        pending_add(q); /* decrypted bytes wait inside OpenSSL: epoll will not say so */
    rewatch(k);
}

/* ---- connecting ---- */

static void maybe_free(struct h1c_conn *k)
{
    if (k->dead && !k->poll_open && !k->timer_open && k->gai == NULL)
        free(k);
}

/* k can carry its request. Returns 0, or -1 when the request failed (its error set). */
static int conn_ready(struct h1c_conn *k, int may_read)
{
    struct h1c_req *q = k->q;

    k->st = K_READY;
    if (!k->reused)
        uv_timer_stop(&k->timer); /* the connect deadline (a kept one's idle timer runs on) */
    /* On h1c_start's stack a request with a streamed body waits for the next turn: the caller
     * may still be reading that body from the same buffer and refuse it (a bad chunk), and then
     * not even the head must have gone upstream. */
    if ((may_read || !q->opt.has_body || q->opt.body != NULL) && do_write(k, may_read) != 0)
        return -1;
    rewatch(k);
    return 0;
}

static void tls_step(struct h1c_conn *k)
{
    struct h1c_req *q = k->q;
    int r, e;

    ERR_clear_error();
    r = SSL_do_handshake(k->ssl);
    if (r == 1) {
        if (conn_ready(k, 1) != 0)
            req_fail(q);
        return;
    }
    e = SSL_get_error(k->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        watch(k, e == SSL_ERROR_WANT_READ ? UV_READABLE : UV_WRITABLE);
        return;
    }
    if (SSL_get_verify_result(k->ssl) != X509_V_OK) {
        set_error(q, CURLE_PEER_FAILED_VERIFICATION, "TLS certificate of %s not verified: %s",
                  k->o->host, X509_verify_cert_error_string(SSL_get_verify_result(k->ssl)));
    } else {
        unsigned long err = ERR_peek_last_error();
        const char *why = err ? ERR_reason_error_string(err) : NULL;
        set_error(q, CURLE_SSL_CONNECT_ERROR, "TLS handshake with %s failed: %s", k->o->host,
                  why ? why : "the connection closed");
    }
    req_fail(q);
}

/* Returns 0, or -1 (q's error not set). */
static int tls_begin(struct h1c_conn *k)
{
    struct h1c_origin *o = k->o;

    if (o->ctx == NULL && (o->ctx = make_ctx(o->ca_file)) == NULL)
        return -1;
    k->ssl = SSL_new(o->ctx);
    if (k->ssl == NULL)
        return -1;
    SSL_set_app_data(k->ssl, k);
    if (SSL_set_fd(k->ssl, k->fd) != 1)
        return -1;
    SSL_set_connect_state(k->ssl);
    if (o->host_is_ip) {
        if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(k->ssl), o->host) != 1)
            return -1;
    } else if (SSL_set_tlsext_host_name(k->ssl, o->host) != 1 ||
               SSL_set1_host(k->ssl, o->host) != 1) {
        return -1;
    }
    if (o->session != NULL)
        SSL_set_session(k->ssl, o->session);
    k->st = K_HANDSHAKE;
    tls_step(k);
    return 0;
}

static void on_addr_closed(uv_handle_t *h);
static void on_connect_timer(uv_timer_t *t);

/* Arms k's timer with what is left of connect-timeout, or (slice) with the share of it the
 * current address gets, so that a black-holed first address leaves time for the others.
 * connect-timeout 0: no deadline but the system's. */
static void arm_connect(struct h1c_conn *k, int slice)
{
    struct h1c_origin *o = k->o;
    uint64_t t = now(o->c), left = k->deadline > t ? k->deadline - t : 0;
    int rest = o->naddrs - k->tried;

    if (o->c->cfg->connect_timeout == 0)
        return;
    if (slice && rest > 1)
        left /= (uint64_t)rest;
    uv_timer_start(&k->timer, on_connect_timer, left, 0);
}

/* The current address failed (or took its share of the time): the next one, on a new socket
 * and a new poll handle, if any is left. Returns 1 when it moved on. */
static int next_addr(struct h1c_conn *k)
{
    struct h1c_origin *o = k->o;

    if (k->tried + 1 >= o->naddrs)
        return 0;
    k->tried++;
    k->addr = (k->first + k->tried) % o->naddrs;
    o->good = k->addr; /* the next connection starts there too */
    uv_timer_stop(&k->timer);
    watch(k, 0);
    uv_close((uv_handle_t *)&k->poll, on_addr_closed); /* closes fd; then try_connect */
    return 1;
}

/* The connect attempt ended (SO_ERROR, or an error connect() gave at once). */
static void connected(struct h1c_conn *k)
{
    struct h1c_req *q = k->q;
    struct h1c_origin *o = k->o;
    int err = k->conn_err;
    socklen_t len = sizeof(err);

    k->conn_err = 0;
    if (err == 0 && getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        if (next_addr(k))
            return;
        set_error(q, CURLE_COULDNT_CONNECT, "connecting to %s port %d failed: %s", o->host,
                  o->port, strerror(err));
        req_end(q, CURLE_COULDNT_CONNECT);
        return;
    }
    o->good = k->addr;
    arm_connect(k, 0); /* the TLS handshake has what is left of connect-timeout */
    if (o->tls) {
        if (tls_begin(k) != 0) {
            set_error(q, CURLE_SSL_CONNECT_ERROR, "TLS setup for %s failed", o->host);
            req_end(q, CURLE_SSL_CONNECT_ERROR);
        }
        return;
    }
    if (conn_ready(k, 1) != 0)
        req_fail(q);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct h1c_conn *k = h->data;
    struct h1c_req *q = k->q;

    if (k->dead)
        return;
    if (status < 0) {
        /* libuv stopped the handle (POLLERR): watch() must start it again; the syscalls will
         * tell what went wrong */
        k->events = 0;
        events = UV_READABLE | UV_WRITABLE;
    }
    if (q == NULL) {
        conn_close(k); /* idle: the upstream closed it, or sent what nobody asked for */
        return;
    }
    if (q->doomed) {
        watch(k, 0);
        return;
    }
    switch (k->st) {
    case K_CONNECT:
        connected(k);
        return;
    case K_HANDSHAKE:
        tls_step(k);
        return;
    case K_READY:
        if ((events & (k->ssl_write_wants_read ? UV_READABLE : UV_WRITABLE)) && !q->sent_all &&
            !q->send_paused && do_write(k, 1) != 0) {
            req_fail(q);
            return;
        }
        if (!q->recv_paused && !q->complete &&
            ((events & UV_READABLE) || (k->ssl_want_write && (events & UV_WRITABLE)))) {
            do_read(k);
            return;
        }
        rewatch(k);
        return;
    default:
        return;
    }
}

static void on_connect_timer(uv_timer_t *t)
{
    struct h1c_conn *k = t->data;
    struct h1c_req *q = k->q;

    if (q == NULL || k->dead || k->st == K_READY || q->doomed)
        return;
    if (k->conn_err != 0) {
        connected(k);
        return;
    }
    if (k->st == K_CONNECT && now(q->c) < k->deadline && next_addr(k))
        return;
    set_error(q, CURLE_OPERATION_TIMEDOUT, "connecting to %s port %d timed out after %llu ms",
              k->o->host, k->o->port, (unsigned long long)q->c->cfg->connect_timeout);
    req_end(q, CURLE_OPERATION_TIMEDOUT);
}

/* Opens a socket to k's current address and starts connecting. Returns 0, or -1 (q's error
 * set). */
static int try_connect(struct h1c_conn *k)
{
    struct h1c_origin *o = k->o;
    const struct sockaddr *sa = (const struct sockaddr *)&o->addrs[k->addr];
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    int one = 1, rc;

    k->st = K_CONNECT;
    k->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        set_error(k->q, CURLE_COULDNT_CONNECT, "no socket for an upstream connection: %s",
                  strerror(errno));
        return -1;
    }
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(k->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (uv_poll_init_socket(o->c->loop, &k->poll, k->fd) != 0) {
        close(k->fd);
        k->fd = -1;
        set_error(k->q, CURLE_COULDNT_CONNECT, "cannot watch an upstream connection");
        return -1;
    }
    k->poll.data = k;
    k->poll_open = 1;
    k->events = 0;
    do
        rc = connect(k->fd, sa, len);
    while (rc < 0 && errno == EINTR);
    if (rc == 0 || errno == EINPROGRESS) {
        watch(k, UV_WRITABLE); /* connected() reads SO_ERROR */
        arm_connect(k, 1);
    } else {
        k->conn_err = errno; /* seen from the next loop turn, never on the caller's stack */
        uv_timer_start(&k->timer, on_connect_timer, 0, 0);
    }
    return 0;
}

/* The poll handle of a failed address closed: try the next one. */
static void on_addr_closed(uv_handle_t *h)
{
    struct h1c_conn *k = h->data;

    k->poll_open = 0;
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    if (k->dead) {
        maybe_free(k);
        return;
    }
    if (try_connect(k) != 0)
        req_end(k->q, CURLE_COULDNT_CONNECT);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    struct h1c_conn *k = g->data;
    struct h1c_origin *o = k->o;

    free(g);
    k->gai = NULL;
    if (k->dead) {
        uv_freeaddrinfo(res);
        maybe_free(k);
        return;
    }
    o->naddrs = 0;
    o->good = 0;
    for (struct addrinfo *a = res; status == 0 && a != NULL && o->naddrs < H1C_MAX_ADDRS;
         a = a->ai_next)
        if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
            a->ai_addrlen <= sizeof(o->addrs[0]))
            memcpy(&o->addrs[o->naddrs++], a->ai_addr, a->ai_addrlen);
    uv_freeaddrinfo(res);
    if (o->naddrs == 0) {
        set_error(k->q, CURLE_COULDNT_RESOLVE_HOST, "could not resolve host %s: %s", o->host,
                  status ? uv_strerror(status) : "no address");
        req_end(k->q, CURLE_COULDNT_RESOLVE_HOST);
        return;
    }
    o->addrs_until = now(o->c) + H1C_DNS_TTL;
    k->addr = k->first = k->tried = 0;
    if (try_connect(k) != 0)
        req_end(k->q, CURLE_COULDNT_CONNECT);
}

/* The address list of an IP literal, without the resolver. */
static void literal_addr(struct h1c_origin *o)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)&o->addrs[0];
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&o->addrs[0];

    memset(&o->addrs[0], 0, sizeof(o->addrs[0]));
    if (inet_pton(AF_INET, o->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)o->port);
    } else {
        inet_pton(AF_INET6, o->host, &s6->sin6_addr);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)o->port);
    }
    o->naddrs = 1;
    o->good = 0;
}

/* An idle connection the upstream has neither closed nor written to. */
static int conn_alive(struct h1c_conn *k)
{
    char b;
    ssize_t r;

    if (k->ssl != NULL && SSL_has_pending(k->ssl))
        return 0;
    r = recv(k->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Puts q on a connection: its origin's most recently used idle one (unless fresh), or a new
 * one. Never calls q's callbacks. Returns 0, or -1 when q failed (its error set). */
static int start_conn(struct h1c_req *q, int fresh)
{
    struct h1c_origin *o = q->o;
    struct h1c *c = o->c;
    struct h1c_conn *k;

    while (!fresh && (k = o->idle) != NULL) {
        idle_unlink(k);
        /* A body that cannot be sent twice, or a connection the upstream may have timed out:
         * make sure it is still open (the retry covers the rest). */
        if (((q->opt.has_body && q->opt.body == NULL) ||
             now(c) - k->idle_since >= H1C_PEEK_AFTER) &&
            !conn_alive(k)) {
            conn_close(k);
            continue;
        }
        k->q = q; /* the idle timer keeps running (see on_idle_timer) */
        q->k = k;
        return conn_ready(k, 0);
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        set_error(q, CURLE_OUT_OF_MEMORY, "out of memory");
        return -1;
    }
    k->fd = -1;
    k->o = o;
    o->nconns++;
    k->q = q;
    q->k = k;
    uv_timer_init(c->loop, &k->timer);
    k->timer.data = k;
    k->timer_open = 1;
    k->deadline = now(c) + c->cfg->connect_timeout;
    arm_connect(k, 0); /* resolution, then each address, then the TLS handshake */
    if (o->host_is_ip && o->naddrs == 0)
        literal_addr(o);
    if (o->naddrs > 0 && (o->host_is_ip || now(c) < o->addrs_until)) {
        k->addr = k->first = o->good < o->naddrs ? o->good : 0;
        k->tried = 0;
        return try_connect(k);
    }
    {
        struct addrinfo hints;
        char port[8];
        int rc;

        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof(port), "%d", o->port);
        k->st = K_RESOLVE;
        k->gai = malloc(sizeof(*k->gai));
        if (k->gai == NULL) {
            set_error(q, CURLE_OUT_OF_MEMORY, "out of memory");
            return -1;
        }
        k->gai->data = k;
        rc = uv_getaddrinfo(c->loop, k->gai, on_resolved, o->host, port, &hints);
        if (rc != 0) {
            free(k->gai);
            k->gai = NULL;
            set_error(q, CURLE_COULDNT_RESOLVE_HOST, "could not resolve host %s: %s", o->host,
                      uv_strerror(rc));
            return -1;
        }
    }
    return 0;
}

/* ---- the request head ---- */

/* Bytes build_head() may write. */
static size_t head_size(const struct h1c_opts *o, const char *path, const struct h1c_origin *origin)
{
    size_t cap = 128 + strlen(o->method) + strlen(path) + strlen(origin->hostport);

    for (const struct curl_slist *f = o->fields; f != NULL; f = f->next)
        cap += strlen(f->data) + 4;
    if (o->body != NULL)
        cap += (size_t)o->content_length;
    return cap;
}

/* Writes the request head (and a body in memory) at h, head_size() bytes. */
static void build_head(struct h1c_req *q, const char *path, char *h)
{
    const struct h1c_opts *o = &q->opt;
    const struct curl_slist *f;
    size_t len = 0;

#define PUT(s, n) (memcpy(h + len, s, n), len += (n))
    PUT(o->method, strlen(o->method));
    PUT(" /", *path == '/' ? 1 : 2);
    PUT(path, strcspn(path, "#")); /* a fragment (from a redirect) is not sent */
    PUT(" HTTP/1.1\r\nHost: ", 17);
    PUT(q->o->hostport, strlen(q->o->hostport));
    PUT("\r\n", 2);
    for (f = o->fields; f != NULL; f = f->next) {
        const char *s = f->data;
        size_t n = strlen(s), name = strcspn(s, ":;");
        if (name == n || name == 0)
            continue;
        if (s[name] == ':') {
            const char *v = s + name + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            if (*v == '\0')
                continue; /* "Name:" — libcurl's way to say: do not send it */
            memcpy(h + len, s, n);
            len += n;
        } else {
            memcpy(h + len, s, name);
            len += name;
            memcpy(h + len, ": ", 2);
            len += 2;
        }
        memcpy(h + len, "\r\n", 2);
        len += 2;
    }
    if (o->has_body && o->chunked) {
        PUT("Transfer-Encoding: chunked\r\n", 28);
    } else if (o->has_body) {
        PUT("Content-Length: ", 16);
        len += fmt_dec(h + len, o->content_length);
        PUT("\r\n", 2);
    }
    PUT("\r\n", 2);
#undef PUT
    if (o->body != NULL && o->content_length > 0) {
        memcpy(h + len, o->body, (size_t)o->content_length);
        len += (size_t)o->content_length;
    }
    q->out = h;
    q->out_len = len;
    q->out_off = 0;
}

/* ---- the public side ---- */

static void on_kick(uv_idle_t *t)
{
    struct h1c *c = t->data;
    size_t n = 0;

    if (c->pending == NULL) {
        uv_idle_stop(t);
        return;
    }
    for (struct h1c_req *q = c->pending; q != NULL; q = q->pnext)
        n++;
    while (n-- > 0 && c->pending != NULL) { /* what is added meanwhile waits for the next turn */
        struct h1c_req *q = c->pending;
        pending_remove(q);
        if (q->doomed) {
            q->doomed = 0;
            req_fail(q);
        } else if (q->k != NULL && q->k->st == K_READY && !q->recv_paused && !q->complete) {
            do_read(q->k); /* delivers the spill first */
        }
    }
}

static void pending_add(struct h1c_req *q)
{
    struct h1c *c = q->c;

    if (!q->pending) {
        q->pending = 1;
        q->pnext = NULL;
        q->pprev = c->pending_tail;
        if (c->pending_tail != NULL)
            c->pending_tail->pnext = q;
        else
            c->pending = q;
        c->pending_tail = q;
    }
    uv_idle_start(&c->kick, on_kick); /* an idle handle: the loop still polls between turns */
}

int h1c_start(struct h1c *c, const struct h1c_opts *o, struct h1c_req **out)
{
    struct h1c_req *q;
    struct h1c_origin *origin;
    char host[256];
    int tls, port;
    const char *path;
    size_t cap;

    *out = NULL;
    if (o->proxy != NULL && o->proxy[0] != '\0')
        return -EPROTONOSUPPORT;
    if (split_url(o->url, &tls, host, sizeof(host), &port, &path) != 0)
        return -EPROTONOSUPPORT;
    if (c->closed)
        return -ESHUTDOWN;
    origin = origin_get(c, tls, host, port, o->ca_file);
    if (origin == NULL)
        return -ENOMEM;
    /* One allocation: the request, then its head (and a body in memory). */
    cap = head_size(o, path, origin);
    q = malloc(sizeof(*q) + cap);
    if (q == NULL)
        return -ENOMEM;
    memset(q, 0, sizeof(*q));
    q->c = c;
    q->opt = *o;
    if (q->opt.errbuf != NULL)
        q->opt.errbuf[0] = '\0';
    q->o = origin;
    q->o->refs++;
    build_head(q, path, (char *)(q + 1));
    llhttp_init(&q->p, HTTP_RESPONSE, &settings);
    q->p.data = q;
    if (start_conn(q, 0) != 0)
        req_doom(q);
    *out = q;
    return 0;
}

void h1c_resume_recv(struct h1c_req *q)
{
    if (!q->recv_paused)
        return;
    q->recv_paused = 0;
    pending_add(q);
}

void h1c_resume_send(struct h1c_req *q)
{
    if (!q->send_paused)
        return;
    q->send_paused = 0;
    if (q->k != NULL && q->k->st == K_READY && !q->doomed)
        rewatch(q->k); /* a writable socket reports at once */
}

void h1c_stop(struct h1c_req *q)
{
    if (q->k != NULL) {
        struct h1c_conn *k = q->k;
        k->q = NULL;
        q->k = NULL;
        conn_close(k); /* mid-exchange: the upstream sees the close and stops */
    }
    req_free(q);
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_status = on_status;
    settings.on_status_complete = on_status_complete;
    settings.on_header_field = on_header_field;
    settings.on_header_field_complete = on_header_field_complete;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
}

int h1c_init(struct h1c *c, uv_loop_t *loop, const struct config *cfg)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;

    pthread_once(&once, settings_init);
    memset(c, 0, sizeof(*c));
    c->loop = loop;
    c->cfg = cfg;
    c->scratch_cap = cfg->read_buffer_size;
    c->scratch = malloc(c->scratch_cap);
    c->fields = malloc(H1C_MAX_FIELDS * sizeof(*c->fields));
    if (c->scratch == NULL || c->fields == NULL)
        return -1;
    uv_idle_init(loop, &c->kick);
    c->kick.data = c;
    return 0;
}

void h1c_close(struct h1c *c)
{
    struct h1c_origin *o, *next;

    if (c->closed || c->loop == NULL)
        return;
    c->closed = 1;
    for (o = c->origins; o != NULL; o = next) {
        next = o->next;
        while (o->idle != NULL)
            conn_close(o->idle);
        origin_free(o);
    }
    c->origins = NULL;
    uv_idle_stop(&c->kick);
    uv_close((uv_handle_t *)&c->kick, NULL);
    free(c->scratch);
    c->scratch = NULL;
    free(c->fields);
    c->fields = NULL;
}
