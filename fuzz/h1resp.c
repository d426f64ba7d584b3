/* h1resp — fuzz target for ferry's own upstream client (src/h1client.c) on its real code path: a
 * private libuv loop, an h1c client with small reads (read-buffer-size 1024), plain http to a
 * loopback socket this file listens on. The "upstream" is a scripted server in the same thread:
 * it accepts, reads and checks each request, and writes the fuzz input back as the response in
 * pieces whose sizes come from the input; on_data pauses (CURL_WRITEFUNC_PAUSE) and the driver
 * resumes later (h1c_resume_recv), so the spill buffer is exercised; a second request may reuse
 * the pooled connection. Everything is single-threaded and bounded (a step cap, a deadline timer).
 *
 * Input: 4 control bytes, then the response; "~next~" in it separates the second request's
 * response from the first's (without it both get the same bytes).
 *   [0] flags: 0x01 second request after the first ended OK; 0x02 HEAD; 0x0c request body (none,
 *       in memory, streamed with Content-Length, streamed chunked); 0x10 the server closes after
 *       each response; 0x20 the server answers before reading the request; 0x40 idle timeout 0
 *       (the pooled connection expires when the loop turns before the second request); 0x80 the
 *       second request starts three loop turns late
 *   [1] pause pattern: bit i%8 of the i-th on_data call pauses it (the reverse for on_read)
 *   [2] pieces: low 3 bits the largest piece (1 B ... whole), high 5 bits the sizes' seed
 *   [3] faults: low nibble 1..7 refuses that header line, 8..14 refuses on_data call n-8, 15
 *       aborts the upload (CURL_READFUNC_ABORT); high nibble 1..7 h1c_stop at loop turn 2n of the
 *       request, 8..14 the server resets every connection (RST) at turn 2(n-7), 15 a port nobody
 *       listens on
 *
 * Invariants: header lines end with CRLF and hold no other control byte (HTAB aside); a head
 * starts with a status line "HTTP/d.d ddd " and its field lines are "token: value"; body bytes
 * come only after a final (>= 200) head, never for HEAD, 204 or 304, and a 204 or 304 whose head
 * came whole ends well; body bytes are pieces of what the server wrote, in order,
 * and never more than it wrote; on_done comes exactly once per request (never after h1c_stop,
 * never from inside an h1c_* call) and nothing follows it; CURLE_OK means a final head, an empty
 * error buffer, and for a Content-Length answer exactly that many body bytes, contiguous in what
 * was sent; a failure has a message; a refused callback ends with CURLE_WRITE_ERROR; a connection
 * whose answer said "Connection: close" (or was HTTP/1.0 without keep-alive) carries no second
 * request; the requests on the wire are what the options asked for. At the end h1c_close and a
 * few loop turns must close every handle (uv_loop_close succeeds) and every descriptor the
 * exchange opened; LeakSanitizer sees the rest. */
#include "fuzz.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config.h"
#include "h1client.h"

#define NCTRL 4
#define MAX_RESP 16384
#define MAX_CONNS 8
#define MAX_STEPS 60000
#define MAX_PIECES 400
#define UPLOAD_LEN 300
#define SEP "~next~"
#define DEADLINE_MS 4000

enum {
    F_SECOND = 0x01,
    F_HEAD = 0x02,
    F_BODY = 0x0c,
    F_CLOSE = 0x10,
    F_EARLY = 0x20,
    F_IDLE = 0x40,
    F_LATE = 0x80
};
enum { BODY_NONE, BODY_MEMORY, BODY_STREAM_CL, BODY_STREAM_CHUNKED };

static struct config cfg;
static int trace; /* H1RESP_TRACE=1 in the environment: one line per request on stderr */
static int listen_fd = -1, refused_fd = -1, listen_port, refused_port;
static char upload[UPLOAD_LEN + 1];

/* One connection the scripted upstream accepted. */
struct sconn {
    int fd;   /* -1: closed */
    char *in; /* request bytes not yet parsed */
    size_t in_len, in_cap;
    size_t nreq, nresp; /* requests read whole; responses assigned */
    int resp;           /* the response being written (0, 1), -1: none */
    size_t off;
    unsigned npieces;
    uint32_t rng;
    char *log; /* every byte written on it */
    size_t log_len, log_cap;
    int served[2]; /* request i was read here */
};

/* One request of the client, as its callbacks saw it. */
struct rq {
    struct run *R;
    int idx;
    struct h1c_req *q;
    int live, done, stopped;
    CURLcode rc;
    char errbuf[CURL_ERROR_SIZE];
    /* the head being read */
    int status, final_head, heads;
    int ncl, cl_bad, te, conn_close, conn_keep, minor, major;
    uint64_t cl;
    unsigned nheader, ndata, nread;
    int refused, aborted;
    /* the body */
    char *body;
    size_t body_len, body_cap;
    size_t cursor[MAX_CONNS];
    /* pauses */
    int recv_paused, send_paused, recv_hold, send_hold;
    unsigned npause, reasks;
    int odd_body; /* FUZZ_ALLOW_KNOWN: a head that has no body had one */
    size_t up_sent;
    int up_eof;
    unsigned steps;
};

struct run {
    uv_loop_t loop;
    struct h1c c;
    uv_timer_t deadline;
    int deadline_hit;
    uint8_t flags, pause, pieces, faults;
    int body_mode;
    const char *resp[2];
    size_t resp_len[2];
    struct sconn s[MAX_CONNS];
    size_t nconns;
    uint64_t sent_total;
    uint64_t progress;
    int cur; /* the request being carried (0, 1) */
    struct rq rq[2];
    int in_api; /* inside an h1c_* call: no callback may run */
    char url[64];
    struct curl_slist fields[3];
};

/* ---- helpers ---- */

static uint32_t rng_next(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void grow(char **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 1024;
    while (c < need)
        c *= 2;
    *p = realloc(*p, c);
    if (*p == NULL)
        abort();
    *cap = c;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static int is_tchar(unsigned char ch)
{
    return isalnum(ch) || (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* value with optional whitespace around it, compared case-insensitively to a token list member */
static int has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok), i = 0;

    while (i < n) {
        size_t j;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t e = j;
        while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - i == tl && strncasecmp(v + i, tok, tl) == 0)
            return 1;
        i = j;
    }
    return 0;
}

static const char *method_of(const struct run *R)
{
    if (R->flags & F_HEAD)
        return "HEAD";
    return R->body_mode != BODY_NONE ? "POST" : "GET";
}

/* ---- the scripted upstream ---- */

static void sconn_close(struct run *R, struct sconn *s)
{
    char tmp[4096];

    if (s->fd < 0)
        return;
    /* unread request bytes would turn the close into a reset */
    while (read(s->fd, tmp, sizeof(tmp)) > 0)
        ;
    close(s->fd);
    s->fd = -1;
    R->progress++;
}

/* Checks one request at p; returns its length when whole, 0 when more is needed. */
static size_t parse_request(struct run *R, const char *p, size_t n)
{
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    char want[128];
    size_t head, i, got = 0;
    int wl;

    if (e == NULL)
        return 0;
    head = (size_t)(e - p) + 4;
    wl = snprintf(want, sizeof(want), "%s /v1/fz?a=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n",
                  method_of(R), listen_port);
    FZ_CHECK(head >= (size_t)wl && memcmp(p, want, (size_t)wl) == 0, "the request starts '%.*s'",
             (int)(head < 80 ? head : 80), p);
    FZ_CHECK(memmem(p, head, "\r\nX-Fuzz: 1\r\n", 13) != NULL &&
                 memmem(p, head, "\r\nX-Empty: \r\n", 13) != NULL &&
                 memmem(p, head, "Accept", 6) == NULL,
             "request fields: '%.*s'", (int)head, p);
    if (R->body_mode == BODY_NONE) {
        FZ_CHECK(memmem(p, head, "Content-Length", 14) == NULL &&
                     memmem(p, head, "Transfer-Encoding", 17) == NULL,
                 "framing on a request without a body");
        return head;
    }
    if (R->body_mode != BODY_STREAM_CHUNKED) {
        FZ_CHECK(memmem(p, head, "\r\nContent-Length: 300\r\n", 23) != NULL,
                 "no Content-Length: 300");
        if (n - head < UPLOAD_LEN)
            return 0;
        FZ_CHECK(memcmp(p + head, upload, UPLOAD_LEN) == 0, "the request body differs");
        return head + UPLOAD_LEN;
    }
    FZ_CHECK(memmem(p, head, "\r\nTransfer-Encoding: chunked\r\n", 30) != NULL, "not chunked");
    i = head;
    for (;;) {
        const char *le = memmem(p + i, n - i, "\r\n", 2);
        size_t sz = 0;
        if (le == NULL)
            return 0;
        FZ_CHECK(le > p + i, "empty chunk size line");
        for (const char *d = p + i; d < le; d++) {
            FZ_CHECK(isxdigit((unsigned char)*d) && sz < 0x100000, "chunk size '%.*s'",
                     (int)(le - (p + i)), p + i);
            sz = sz * 16 +
                 (size_t)(isdigit((unsigned char)*d) ? *d - '0' : (tolower(*d) - 'a' + 10));
        }
        i = (size_t)(le - p) + 2;
        if (sz == 0) {
            if (n - i < 2)
                return 0;
            FZ_CHECK(p[i] == '\r' && p[i + 1] == '\n', "no CRLF after the last chunk");
            FZ_CHECK(got == UPLOAD_LEN, "chunked body of %zu bytes", got);
            return i + 2;
        }
        if (n - i < sz + 2)
            return 0;
        FZ_CHECK(got + sz <= UPLOAD_LEN && memcmp(p + i, upload + got, sz) == 0,
                 "the chunked body differs");
        got += sz;
        i += sz;
        FZ_CHECK(p[i] == '\r' && p[i + 1] == '\n', "no CRLF after chunk data");
        i += 2;
    }
}

static void assign(struct run *R, struct sconn *s)
{
    s->resp = R->cur;
    s->off = 0;
    s->npieces = 0;
    s->rng = (uint32_t)(R->pieces >> 3) * 2654435761u + 0x9e3779b9u * (uint32_t)(R->cur + 1);
    if (s->rng == 0)
        s->rng = 1;
    s->nresp++;
    R->progress++;
}

static size_t piece_size(struct sconn *s, uint8_t pieces)
{
    static const size_t max[8] = {1, 2, 5, 16, 100, 700, 3000, MAX_RESP};
    size_t m = max[pieces & 7];

    if (s->npieces++ >= MAX_PIECES)
        return SIZE_MAX;
    return 1 + rng_next(&s->rng) % m;
}

static void server_step(struct run *R)
{
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        struct sconn *s;
        if (fd < 0)
            break;
        FZ_CHECK(R->nconns < 3, "a fourth upstream connection for two requests");
        s = &R->s[R->nconns++];
        memset(s, 0, sizeof(*s));
        s->fd = fd;
        s->resp = -1;
        R->progress++;
        if (R->flags & F_EARLY)
            assign(R, s);
    }
    for (size_t i = 0; i < R->nconns; i++) {
        struct sconn *s = &R->s[i];
        size_t used;

        if (s->fd < 0)
            continue;
        for (;;) {
            ssize_t n;
            grow(&s->in, &s->in_cap, s->in_len + 4096);
            n = read(s->fd, s->in + s->in_len, 4096);
            if (n > 0) {
                s->in_len += (size_t)n;
                R->progress++;
                continue;
            }
            if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                close(s->fd); /* the client closed (or reset) it */
                s->fd = -1;
                R->progress++;
            }
            break;
        }
        while ((used = parse_request(R, s->in, s->in_len)) > 0) {
            memmove(s->in, s->in + used, s->in_len - used);
            s->in_len -= used;
            s->nreq++;
            s->served[R->cur] = 1;
            R->progress++;
            if (R->cur == 1 && s->served[0]) {
                const struct rq *r0 = &R->rq[0];
                FZ_CHECK(!r0->conn_close && ((r0->major == 1 && r0->minor > 0) || r0->conn_keep),
                         "the second request came on the connection whose answer said close");
            }
        }
        if (s->fd < 0)
            continue;
        if (s->resp < 0 && s->nreq > s->nresp)
            assign(R, s);
        if (s->resp >= 0) {
            const char *r = R->resp[s->resp];
            size_t len = R->resp_len[s->resp], want = piece_size(s, R->pieces);
            ssize_t n;
            if (want > len - s->off)
                want = len - s->off;
            n = want ? send(s->fd, r + s->off, want, MSG_NOSIGNAL | MSG_DONTWAIT) : 0;
            if (n > 0) {
                grow(&s->log, &s->log_cap, s->log_len + (size_t)n);
                memcpy(s->log + s->log_len, r + s->off, (size_t)n);
                s->log_len += (size_t)n;
                s->off += (size_t)n;
                R->sent_total += (uint64_t)n;
                R->progress++;
            } else if (n < 0 && errno != EAGAIN) {
                sconn_close(R, s); /* reset by the client */
                continue;
            }
            if (s->off == len) {
                s->resp = -1;
                if (R->flags & F_CLOSE)
                    sconn_close(R, s);
            }
        }
    }
}

/* The upstream goes away at once: a reset, whatever is unread or unsent. */
static void server_reset_all(struct run *R)
{
    static const struct linger hard = {1, 0};

    for (size_t i = 0; i < R->nconns; i++) {
        struct sconn *s = &R->s[i];
        if (s->fd < 0)
            continue;
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
        close(s->fd);
        s->fd = -1;
        R->progress++;
    }
}

static void server_close_all(struct run *R)
{
    for (size_t i = 0; i < R->nconns; i++)
        sconn_close(R, &R->s[i]);
}

/* ---- the client's callbacks ---- */

static void check_live(struct rq *r, const char *what)
{
    FZ_CHECK(!r->R->in_api, "%s inside an h1c_* call", what);
    FZ_CHECK(!r->done, "%s on request %d after on_done", what, r->idx);
    FZ_CHECK(!r->stopped, "%s on request %d after h1c_stop", what, r->idx);
    FZ_CHECK(r->live, "%s on request %d, not started", what, r->idx);
    r->R->progress++;
}

static int value_has_ctl(const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 1;
    }
    return 0;
}

static int on_head(void *ud, const struct h1c_head *h)
{
    struct rq *r = ud;
    unsigned faults = r->R->faults & 15, before = r->nheader;
    const struct hdr *f = h->fields;
    int status = h->status;
    size_t n = h->n;

    check_live(r, "on_head");
    if (trace)
        fprintf(stderr, "h1resp: request %d: head %d '%.*s' with %zu fields\n", r->idx, status,
                (int)h->reason_len, h->reason, n);
    FZ_CHECK(!r->final_head, "a head after the final one (status %d)", status);
    FZ_CHECK(status >= 100 && status <= 999, "status %d", status);
    FZ_CHECK(!value_has_ctl(h->reason, h->reason_len), "control byte in the reason '%.*s'",
             (int)h->reason_len, h->reason);
    r->major = h->http_major;
    r->minor = h->http_minor;
    r->status = status;
    r->heads++;
    r->ncl = r->cl_bad = r->te = r->conn_close = r->conn_keep = 0;
    r->cl = 0;
    for (size_t i = 0; i < n; i++) {
        const char *nm = f[i].name, *v = f[i].value;
        size_t nl = f[i].name_len, vl = f[i].value_len;
        FZ_CHECK(nl > 0, "a field with an empty name");
        for (size_t k = 0; k < nl; k++)
            FZ_CHECK(is_tchar((unsigned char)nm[k]), "field name '%.*s'", (int)nl, nm);
        FZ_CHECK(!value_has_ctl(v, vl), "control byte in the value of '%.*s'", (int)nl, nm);
        FZ_CHECK(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t'),
                 "the value of '%.*s' is not trimmed: '%.*s'", (int)nl, nm, (int)vl, v);
        if (nl == 14 && strncasecmp(nm, "content-length", 14) == 0) {
            uint64_t x = 0;
            r->ncl++;
            if (vl == 0 || vl > 18)
                r->cl_bad = 1;
            for (size_t k = 0; k < vl; k++) {
                if (!isdigit((unsigned char)v[k]))
                    r->cl_bad = 1;
                x = x * 10 + (uint64_t)(v[k] - '0');
            }
            r->cl = x;
        } else if (nl == 17 && strncasecmp(nm, "transfer-encoding", 17) == 0) {
            r->te = 1;
        } else if (nl == 10 && strncasecmp(nm, "connection", 10) == 0) {
            r->conn_close |= has_token(v, vl, "close");
            r->conn_keep |= has_token(v, vl, "keep-alive");
        }
    }
    if (status >= 200)
        r->final_head = 1;
    r->nheader += 1 + (unsigned)n; /* as header lines: the status line and the fields */
    if (faults >= 1 && faults <= 7 && before < faults && faults <= r->nheader) {
        r->refused = 1;
        return -1;
    }
    return 0;
}

/* A body piece must be the next bytes of what some connection carried. */
static int find_piece(struct rq *r, const char *p, size_t n)
{
    struct run *R = r->R;

    for (size_t i = 0; i < R->nconns; i++) {
        struct sconn *s = &R->s[i];
        const char *hit;
        if (r->cursor[i] > s->log_len)
            continue;
        hit = memmem(s->log + r->cursor[i], s->log_len - r->cursor[i], p, n);
        if (hit != NULL) {
            r->cursor[i] = (size_t)(hit - s->log) + n;
            return 1;
        }
    }
    return 0;
}

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
    struct rq *r = ud;
    struct run *R = r->R;
    unsigned faults = R->faults & 15;
    unsigned call = r->ndata++;
    int body_ok;

    check_live(r, "on_data");
    /* n == 0 happens: after a resume with nothing left in the spill, llhttp closes its body span
     * with no bytes (relay.c's on_data takes 0 as 0) */
    FZ_CHECK(size == 1, "on_data with size %zu", size);
    FZ_CHECK(!r->recv_paused, "on_data while paused");
    body_ok = r->final_head && !(R->flags & F_HEAD) && r->status != 204 && r->status != 304;
#ifdef FUZZ_ALLOW_KNOWN
    /* h1client lets llhttp read the body its framing fields announce after a head that has
     * none (1xx, 204, 304) and takes 000-099 for interim: reported, see README */
    if (!body_ok && (r->status < 200 || r->status == 204 || r->status == 304)) {
        r->odd_body = 1;
        body_ok = 1;
    }
#endif
    FZ_CHECK(body_ok, "%zu body bytes %s (status %d)", n,
             !r->final_head ? "before a final head" : "where no body belongs", r->status);
    if (faults >= 8 && faults <= 14 && call == faults - 8) {
        r->refused = 1;
        return n - 1;
    }
    if (call < 64 && ((R->pause >> (call % 8)) & 1)) {
        r->recv_paused = 1;
        r->recv_hold = (int)(r->npause++ % 3);
        return CURL_WRITEFUNC_PAUSE;
    }
    FZ_CHECK(n == 0 || find_piece(r, p, n),
             "%zu body bytes that are not the next ones sent: '%.*s'", n, (int)(n < 64 ? n : 64),
             p);
    grow(&r->body, &r->body_cap, r->body_len + n);
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    FZ_CHECK(r->body_len <= R->sent_total, "%zu body bytes of %llu sent", r->body_len,
             (unsigned long long)R->sent_total);
    return n;
}

static size_t on_read(char *p, size_t size, size_t n, void *ud)
{
    struct rq *r = ud;
    struct run *R = r->R;
    unsigned call = r->nread++;
    size_t k;

    check_live(r, "on_read");
    FZ_CHECK(R->body_mode == BODY_STREAM_CL || R->body_mode == BODY_STREAM_CHUNKED,
             "on_read for a body in memory");
    FZ_CHECK(!r->up_eof, "on_read after the end of the body");
    FZ_CHECK(size == 1 && n > 0, "on_read for %zu bytes", n);
    if ((R->faults & 15) == 15) {
        r->aborted = 1;
        return CURL_READFUNC_ABORT;
    }
    /* as libcurl: after CURL_READFUNC_PAUSE, on_read waits for h1c_resume_send */
    FZ_CHECK(!r->send_paused, "on_read again after CURL_READFUNC_PAUSE, before h1c_resume_send");
    if (call < 32 && ((R->pause >> (7 - call % 8)) & 1)) {
        r->send_paused = 1;
        r->send_hold = (int)(call % 2);
        return CURL_READFUNC_PAUSE;
    }
    k = 1 + (call * 37 + R->pieces) % 97;
    if (k > UPLOAD_LEN - r->up_sent)
        k = UPLOAD_LEN - r->up_sent;
    if (k > n)
        k = n;
    memcpy(p, upload + r->up_sent, k);
    r->up_sent += k;
    if (k == 0)
        r->up_eof = 1;
    return k;
}

static void on_done(void *ud, CURLcode rc)
{
    struct rq *r = ud;
    struct run *R = r->R;

    check_live(r, "on_done");
    r->done = 1;
    r->live = 0;
    r->q = NULL;
    r->rc = rc;
    if (r->refused)
        FZ_CHECK(rc == CURLE_WRITE_ERROR, "a refused callback ended with %d (%s)", rc, r->errbuf);
    if (r->aborted)
        FZ_CHECK(rc == CURLE_ABORTED_BY_CALLBACK, "an aborted upload ended with %d (%s)", rc,
                 r->errbuf);
    FZ_CHECK(rc == CURLE_OK || rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK ||
                 rc == CURLE_WEIRD_SERVER_REPLY || rc == CURLE_PARTIAL_FILE ||
                 rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
                 rc == CURLE_COULDNT_CONNECT,
             "result %d (%s)", rc, r->errbuf);
    if (rc != CURLE_OK) {
        FZ_CHECK(r->errbuf[0] != '\0', "result %d without a message", rc);
#ifndef FUZZ_ALLOW_KNOWN
        /* such an answer ends with its head (RFC 9112 6.3), whatever its framing fields say */
        FZ_CHECK(r->refused || !r->final_head || (r->status != 204 && r->status != 304),
                 "a %d answer whose head came whole ended with %d (%s)", r->status, rc, r->errbuf);
#endif
        return;
    }
    FZ_CHECK(r->errbuf[0] == '\0', "CURLE_OK with the message '%s'", r->errbuf);
    FZ_CHECK(!r->refused, "CURLE_OK after a refused callback");
    FZ_CHECK(r->final_head && r->status >= 200 && r->status != 101,
             "CURLE_OK without a final "
             "head (status %d)",
             r->status);
    if (r->odd_body)
        return;
    if ((R->flags & F_HEAD) || r->status == 204 || r->status == 304)
        FZ_CHECK(r->body_len == 0, "a body of %zu bytes", r->body_len);
    else if (r->ncl == 1 && !r->cl_bad && !r->te)
        FZ_CHECK(r->body_len == r->cl, "Content-Length %llu, %zu body bytes delivered",
                 (unsigned long long)r->cl, r->body_len);
    if (r->ncl == 1 && !r->cl_bad && !r->te && r->body_len > 0) {
        int found = 0;
        for (size_t i = 0; i < R->nconns && !found; i++)
            found = memmem(R->s[i].log, R->s[i].log_len, r->body, r->body_len) != NULL;
        FZ_CHECK(found, "the %zu body bytes are not one span of what was sent", r->body_len);
    }
}

/* ---- the driver ---- */

static void on_deadline(uv_timer_t *t)
{
    struct run *R = t->data;
    R->deadline_hit = 1;
}

static void start(struct run *R, int idx)
{
    struct rq *r = &R->rq[idx];
    struct h1c_opts o;
    int rc;

    memset(r, 0, sizeof(*r));
    r->R = R;
    r->idx = idx;
    memset(&o, 0, sizeof(o));
    o.url = R->url;
    o.method = method_of(R);
    o.no_response_body = (R->flags & F_HEAD) != 0;
    o.fields = &R->fields[0];
    o.has_body = R->body_mode != BODY_NONE;
    o.chunked = R->body_mode == BODY_STREAM_CHUNKED;
    o.content_length = o.has_body ? UPLOAD_LEN : 0;
    o.body = R->body_mode == BODY_MEMORY ? upload : NULL;
    o.on_head = on_head;
    o.on_data = on_data;
    o.on_read = on_read;
    o.on_done = on_done;
    o.ud = r;
    o.errbuf = r->errbuf;
    R->cur = idx;
    r->live = 1;
    R->in_api = 1;
    rc = h1c_start(&R->c, &o, &r->q);
    R->in_api = 0;
    FZ_CHECK(rc == 0 && r->q != NULL, "h1c_start refused %s: %d", R->url, rc);
    R->progress++;
}

/* What the driver does for a live request between loop turns: resume, stop. */
static void drive(struct run *R, struct rq *r)
{
    unsigned stop_at = (unsigned)(R->faults >> 4);

    r->steps++;
    if (stop_at >= 8 && stop_at <= 14 && r->steps == (stop_at - 7) * 2) {
        server_reset_all(R);
        return;
    }
    if (stop_at >= 1 && stop_at <= 7 && r->steps == stop_at * 2) {
        R->in_api = 1;
        h1c_stop(r->q);
        R->in_api = 0;
        r->q = NULL;
        r->live = 0;
        r->stopped = 1;
        R->progress++;
        return;
    }
    if (r->recv_paused && r->recv_hold-- <= 0) {
        r->recv_paused = 0;
        R->in_api = 1;
        h1c_resume_recv(r->q);
        R->in_api = 0;
        R->progress++;
    }
    if (r->send_paused && r->send_hold-- <= 0) {
        r->send_paused = 0;
        r->reasks = 0;
        R->in_api = 1;
        h1c_resume_send(r->q);
        R->in_api = 0;
        R->progress++;
    }
}

static void walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    fprintf(stderr, "  handle %s still open (active %d, closing %d)\n",
            uv_handle_type_name(uv_handle_get_type(h)), uv_is_active(h), uv_is_closing(h));
}

static void run_exchange(struct run *R)
{
    uint64_t last = 0;
    unsigned idle = 0, late = 0;

    start(R, 0);
    for (unsigned step = 0;; step++) {
        struct rq *r = &R->rq[R->cur];

        FZ_CHECK(step < MAX_STEPS, "no end after %u loop turns", step);
        FZ_CHECK(!R->deadline_hit, "no end after %d ms", DEADLINE_MS);
        if (!r->live) {
            if (R->cur == 1 || !(R->flags & F_SECOND) || r->stopped || r->rc != CURLE_OK)
                break;
            if ((R->flags & F_LATE) && late < 3) {
                late++;
            } else {
                start(R, 1);
                r = &R->rq[1];
                idle = 0;
            }
        }
        server_step(R);
        if (r->live)
            drive(R, r);
        uv_run(&R->loop, UV_RUN_NOWAIT);
        if (R->progress != last) {
            last = R->progress;
            idle = 0;
            continue;
        }
        if (!r->live)
            continue;
        idle++;
        if (idle >= 4)
            server_close_all(R); /* the upstream gives up on an answer that never ends */
        FZ_CHECK(idle < 200,
                 "request %d still open %u loop turns after the upstream closed "
                 "every connection (paused %d/%d)",
                 R->cur, idle, r->recv_paused, r->send_paused);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    extern char **environ;
    char *args[] = {"ferry", NULL};
    struct sockaddr_in a;
    socklen_t al = sizeof(a);

    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    trace = getenv("H1RESP_TRACE") != NULL;
    for (;;) { /* defaults only, whatever the environment says */
        char name[256];
        char **e = environ;
        while (*e != NULL && strncmp(*e, "FERRY_", 6) != 0)
            e++;
        if (*e == NULL)
            break;
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
        unsetenv(name);
    }
    if (config_load(&cfg, 1, args) != 0)
        abort();
    {
        /* libuv's first loop opens descriptors for good (its signal lock): not the exchange's */
        uv_loop_t warm;
        if (uv_loop_init(&warm) != 0 || uv_loop_close(&warm) != 0)
            abort();
    }
    cfg.read_buffer_size = 1024;
    cfg.max_response_header_bytes = 2048;
    cfg.upstream_keepalive = 2;
    cfg.connect_timeout = 2000;
    for (int i = 0; i < UPLOAD_LEN; i++)
        upload[i] = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ{}"[i % 64];

    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    refused_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* bound, never listening */
    if (listen_fd < 0 || refused_fd < 0 || bind(listen_fd, (struct sockaddr *)&a, sizeof(a)) ||
        listen(listen_fd, 16) || getsockname(listen_fd, (struct sockaddr *)&a, &al))
        abort();
    listen_port = ntohs(a.sin_port);
    a.sin_port = 0;
    al = sizeof(a);
    if (bind(refused_fd, (struct sockaddr *)&a, sizeof(a)) ||
        getsockname(refused_fd, (struct sockaddr *)&a, &al))
        abort();
    refused_port = ntohs(a.sin_port);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct run run;
    struct run *R = &run;
    char *in;
    const char *sep;
    int fds;

    if (size < NCTRL || size > NCTRL + MAX_RESP)
        return 0;
    memset(R, 0, sizeof(*R));
    R->flags = data[0];
    R->pause = data[1];
    R->pieces = data[2];
    R->faults = data[3];
    R->body_mode = (R->flags & F_BODY) >> 2;
    in = fz_copy(data + NCTRL, size - NCTRL);
    sep = memmem(in, size - NCTRL, SEP, strlen(SEP));
    R->resp[0] = in;
    R->resp_len[0] = sep ? (size_t)(sep - in) : size - NCTRL;
    R->resp[1] = sep ? sep + strlen(SEP) : in;
    R->resp_len[1] = sep ? size - NCTRL - R->resp_len[0] - strlen(SEP) : size - NCTRL;
    snprintf(R->url, sizeof(R->url), "http://127.0.0.1:%d/v1/fz?a=1",
             (R->faults >> 4) == 15 ? refused_port : listen_port);
    R->fields[0] = (struct curl_slist){"X-Fuzz: 1", &R->fields[1]};
    R->fields[1] = (struct curl_slist){"X-Empty;", &R->fields[2]};
    R->fields[2] = (struct curl_slist){"Accept:", NULL};
    cfg.upstream_keepalive_timeout = (R->flags & F_IDLE) ? 0 : 60000;

    fds = count_fds();
    FZ_CHECK(uv_loop_init(&R->loop) == 0, "uv_loop_init");
    FZ_CHECK(h1c_init(&R->c, &R->loop, &cfg) == 0, "h1c_init");
    uv_timer_init(&R->loop, &R->deadline);
    R->deadline.data = R;
    uv_timer_start(&R->deadline, on_deadline, DEADLINE_MS, 0);

    run_exchange(R);
    for (int i = 0; trace && i < 2; i++) {
        const struct rq *r = &R->rq[i];
        if (r->R != NULL)
            fprintf(stderr,
                    "h1resp: request %d: %s rc %d '%s', status %d, %u header lines, "
                    "body %zu (%u on_data, %u on_read, %u pauses); %zu connections, %llu bytes "
                    "sent\n",
                    i,
                    r->stopped ? "stopped"
                    : r->done  ? "done"
                               : "open",
                    r->rc, r->errbuf, r->status, r->nheader, r->body_len, r->ndata, r->nread,
                    r->npause, R->nconns, (unsigned long long)R->sent_total);
    }

    for (int i = 0; i < 2; i++)
        if (R->rq[i].live) { /* defensive: run_exchange returns once the request ended */
            R->in_api = 1;
            h1c_stop(R->rq[i].q);
            R->in_api = 0;
            R->rq[i].live = 0;
        }
    h1c_close(&R->c);
    uv_close((uv_handle_t *)&R->deadline, NULL);
    for (int i = 0; i < 16 && uv_loop_alive(&R->loop); i++)
        uv_run(&R->loop, UV_RUN_NOWAIT);
    if (uv_loop_close(&R->loop) != 0) {
        uv_walk(&R->loop, walk_cb, NULL);
        FZ_CHECK(0, "handles left open after h1c_close");
    }
    server_step(R); /* anything the client opened at the very end */
    server_close_all(R);
    FZ_CHECK(count_fds() == fds, "%d descriptors before, %d after", fds, count_fds());
    for (size_t i = 0; i < R->nconns; i++) {
        free(R->s[i].in);
        free(R->s[i].log);
    }
    for (int i = 0; i < 2; i++)
        free(R->rq[i].body);
    free(in);
    return 0;
}
