/* loadc — the benchmark's own load generators, on one libuv loop with llhttp (docs/performance.md).
 *
 *   loadc stream --port P -k K [--chunks N --delay-ms MS --open-max M --deadline S --pid PID...]
 *     K concurrent SSE chat completions through a relay (at most M waiting for their first byte
 *     at once, so the relay's accept queue never overflows). With --hold-ms H --go-port UP the
 *     upstream holds every stream after its first event; once all K have their first byte, loadc
 *     sends POST /__bench/go straight to the upstream (port UP) and the chunks start flowing: all
 *     K streams are open at once, and the relay's CPU is split into opening (per stream) and
 *     relaying (per chunk). Every stream is checked: status 200,
 *     Access-Control-Allow-Origin: *, N content events in order, the finish event, data: [DONE],
 *     a clean end. Reports time to first byte, per-event delay (now - the upstream's t_ns stamp,
 *     both CLOCK_MONOTONIC on this machine), and for the relay's PIDs the CPU time per event
 *     (utime+stime from /proc/PID/stat) and RSS sampled every 20 ms while the streams are open.
 *
 *   loadc rate --port P --rate R --duration S [--conns C --deadline S]
 *     Open loop: request i is due at start + i/R (a timerfd), whether or not earlier answers came
 *     back; a request that finds no idle connection waits in a queue, and its latency is counted
 *     from its due time, so a stall shows up in full (no coordinated omission).
 *
 * Prints one JSON object on stdout; exits 0 when every request/stream was correct, 1 otherwise. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#define MAX_PIDS 16
#define CARRY_MAX 8192
#define PEEK_MAX 512

enum mode { M_STREAM, M_RATE };

enum fail_reason {
    F_CONNECT,
    F_STATUS,
    F_CORS,
    F_PARSE,
    F_TRUNCATED,
    F_ORDER,
    F_COUNT,
    F_NO_DONE,
    F_BODY,
    F_DEADLINE,
    F_N
};
static const char *fail_names[F_N] = {"connect",   "status", "cors",    "parse", "truncated",
                                      "order",     "count",  "no_done", "body",  "deadline"};

struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    llhttp_t parser;
    int id;
    bool active;    /* tcp initialised and not yet closed */
    bool connected; /* rate mode: ready for requests */
    bool busy;      /* a request is in flight */
    bool finished;  /* stream mode: counted as ok or failed */
    bool got_first;
    bool complete; /* message complete seen for the current response */
    bool cors;
    bool in_value;
    char hname[48];
    size_t hname_len;
    char hval[16];
    size_t hval_len;
    uint64_t t_send, sched;
    /* SSE state */
    char carry[CARRY_MAX];
    size_t carry_len;
    int events, next_tok;
    bool done_seen, finish_seen;
    int bad; /* first failure reason + 1, 0 when fine */
    int status;
    char peek[PEEK_MAX];
    size_t peek_len;
};

static enum mode mode;
static uv_loop_t *loop;
static struct sockaddr_in addr;
static int port, k_streams = 100, chunks = 50, delay_ms = 100, open_max = 256;
static double deadline_s = 60, rate = 1000, duration_s = 5;
static int conns = 32;
static bool want_cors = true; /* --cors 0 for runs straight at the upstream */
static int hold_ms, go_port;
static bool go_sent;
static uint64_t t_go, events_at_go;
static double cpu_go_s;
static long rss_go_kb, fds_go;
static uv_tcp_t go_tcp;
static uv_connect_t go_creq;
static uv_write_t go_wreq;
static int pids[MAX_PIDS], npids;
static llhttp_settings_t settings;
static char request[1024];
static size_t request_len;

static struct client *clients;
static int opened, finished_count, ok_count, fail_count, first_count, open_now, peak_open;
static int fails[F_N];
static uint64_t t_start, t_all_open, t_end;
static uint32_t *ttfb_us, *delay_us, *steady_us, *lat_us;
static size_t n_ttfb, n_delay, cap_delay, n_steady, cap_steady, n_lat, cap_lat;
static uint64_t events_total;
static uv_timer_t sample_timer, deadline_timer;
static uv_poll_t tick_poll;
static int tfd = -1;
static bool stopped;

/* stream mode: proxy CPU and RSS */
static double cpu_base_s, cpu_end_s;
static long rss_base_kb, rss_peak_kb, rss_at_all_open_kb;

/* rate mode */
static uint64_t *pending; /* due times of requests waiting for a connection */
static size_t pend_head, pend_tail, pend_cap;
static uint64_t scheduled, sched_total, period_ns;
static int *idle_stack, idle_len;
static int rate_errors;

static uint64_t now_ns(void)
{
    return uv_hrtime(); /* CLOCK_MONOTONIC, as the upstream's stamps */
}

/* ---- /proc readings for the relay under test ---- */

static double proc_cpu_s(void)
{
    double total = 0;
    long tck = sysconf(_SC_CLK_TCK);
    for (int i = 0; i < npids; i++) {
        char path[64], buf[2048];
        snprintf(path, sizeof(path), "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        char *p = strrchr(buf, ')'); /* comm may hold spaces */
        if (!p)
            continue;
        unsigned long ut = 0, st = 0;
        /* after ")": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)tck;
    }
    return total;
}

static long proc_rss_kb(void)
{
    long total = 0;
    for (int i = 0; i < npids; i++) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "VmRSS:", 6) == 0) {
                total += atol(line + 6);
                break;
            }
        }
        fclose(f);
    }
    return total;
}

static long proc_fds(void)
{
    long total = 0;
    for (int i = 0; i < npids; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", pids[i]);
        uv_fs_t req;
        int n = uv_fs_scandir(loop, &req, path, 0, NULL);
        if (n > 0)
            total += n;
        uv_fs_req_cleanup(&req);
    }
    return total;
}

/* ---- results ---- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint32_t *v, size_t n, double p)
{
    if (n == 0)
        return -1;
    size_t i = (size_t)(p / 100.0 * (double)(n - 1) + 0.5);
    if (i >= n)
        i = n - 1;
    return v[i] / 1000.0; /* µs → ms */
}

static void print_pcts(const char *name, uint32_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u32);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    printf("\"%s\":{\"n\":%zu,\"mean\":%.4f,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p999\":%.4f,"
           "\"max\":%.4f}",
           name, n, n ? sum / (double)n / 1000.0 : -1, pct(v, n, 50), pct(v, n, 90),
           pct(v, n, 99), pct(v, n, 99.9), pct(v, n, 100));
}

static void print_fails(void)
{
    printf("\"fails\":{");
    bool first = true;
    for (int i = 0; i < F_N; i++) {
        if (!fails[i])
            continue;
        printf("%s\"%s\":%d", first ? "" : ",", fail_names[i], fails[i]);
        first = false;
    }
    printf("}");
}

static void report(void)
{
    double elapsed_ms = (double)(t_end - t_start) / 1e6;
    if (mode == M_STREAM) {
        double cpu = cpu_end_s - cpu_base_s;
        printf("{\"mode\":\"stream\",\"k\":%d,\"chunks\":%d,\"delay_ms\":%d,\"ok\":%d,\"failed\":%d,",
               k_streams, chunks, delay_ms, ok_count, fail_count);
        print_fails();
        printf(",\"elapsed_ms\":%.1f,\"open_ms\":%.1f,\"peak_open\":%d,\"events\":%" PRIu64 ",",
               elapsed_ms, t_all_open ? (double)(t_all_open - t_start) / 1e6 : -1.0, peak_open,
               events_total);
        print_pcts("ttfb_ms", ttfb_us, n_ttfb);
        printf(",");
        print_pcts("delay_ms", delay_us, n_delay);
        printf(",");
        print_pcts("steady_delay_ms", steady_us, n_steady);
        if (npids > 0) {
            /* with a hold, chunks flow only after the go: CPU after it is relaying only */
            double relay = go_sent ? cpu_end_s - cpu_go_s : cpu;
            uint64_t relay_events = go_sent ? events_total - events_at_go : events_total;
            printf(",\"cpu_s\":%.3f,\"cpu_us_per_event\":%.3f,\"cpu_us_per_open\":%.3f,"
                   "\"rss_base_kb\":%ld,\"rss_peak_kb\":%ld,\"rss_all_open_kb\":%ld,"
                   "\"rss_go_kb\":%ld,\"fds_go\":%ld,\"kb_per_stream\":%.2f",
                   cpu, relay_events ? relay * 1e6 / (double)relay_events : -1.0,
                   go_sent ? (cpu_go_s - cpu_base_s) * 1e6 / k_streams : -1.0, rss_base_kb,
                   rss_peak_kb, rss_at_all_open_kb, rss_go_kb, fds_go,
                   peak_open ? (double)(rss_peak_kb - rss_base_kb) / peak_open : -1.0);
        }
        printf(",\"hold\":%s,\"go_ms\":%.1f", go_sent ? "true" : "false",
               go_sent ? (double)(t_go - t_start) / 1e6 : -1.0);
        printf("}\n");
    } else {
        printf("{\"mode\":\"rate\",\"rate\":%.1f,\"duration_s\":%.2f,\"conns\":%d,"
               "\"scheduled\":%" PRIu64 ",\"ok\":%d,\"failed\":%d,",
               rate, duration_s, conns, scheduled, ok_count, fail_count);
        print_fails();
        printf(",\"elapsed_ms\":%.1f,", elapsed_ms);
        print_pcts("latency_ms", lat_us, n_lat);
        if (npids > 0)
            printf(",\"cpu_s\":%.3f", cpu_end_s - cpu_base_s);
        printf("}\n");
    }
    fflush(stdout);
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void stop_all(void)
{
    if (stopped)
        return;
    stopped = true;
    t_end = now_ns();
    if (npids > 0)
        cpu_end_s = proc_cpu_s();
    uv_walk(loop, on_walk_close, NULL);
}

/* ---- connections ---- */

static void client_open(struct client *c);
static void stream_open_next(void);

static void go_closed(uv_handle_t *h)
{
    (void)h;
}

static void go_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char b[1024];
    (void)h;
    (void)hint;
    buf->base = b;
    buf->len = sizeof(b);
}

static void go_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    if (n < 0 && !uv_is_closing((uv_handle_t *)s))
        uv_close((uv_handle_t *)s, go_closed); /* the upstream closes after answering */
}

static void go_connected(uv_connect_t *req, int status)
{
    static char msg[] = "POST /__bench/go HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
                        "Connection: close\r\n\r\n";
    (void)req;
    if (status < 0 || stopped) {
        if (status < 0)
            fprintf(stderr, "loadc: go: %s (the hold expires by itself)\n", uv_strerror(status));
        if (!uv_is_closing((uv_handle_t *)&go_tcp))
            uv_close((uv_handle_t *)&go_tcp, go_closed);
        return;
    }
    uv_buf_t b = uv_buf_init(msg, sizeof(msg) - 1);
    uv_write(&go_wreq, (uv_stream_t *)&go_tcp, &b, 1, NULL);
    uv_read_start((uv_stream_t *)&go_tcp, go_alloc, go_read);
}

/* every stream has its first byte (or failed before it): let the chunks flow */
static void maybe_go(void)
{
    if (hold_ms <= 0 || go_sent || first_count < k_streams)
        return;
    go_sent = true;
    t_go = now_ns();
    events_at_go = events_total;
    if (npids > 0) {
        cpu_go_s = proc_cpu_s();
        rss_go_kb = proc_rss_kb();
        if (rss_go_kb > rss_peak_kb)
            rss_peak_kb = rss_go_kb;
        fds_go = proc_fds();
    }
    struct sockaddr_in up;
    uv_ip4_addr("127.0.0.1", go_port, &up);
    uv_tcp_init(loop, &go_tcp);
    if (uv_tcp_connect(&go_creq, &go_tcp, (const struct sockaddr *)&up, go_connected) < 0)
        fprintf(stderr, "loadc: go: cannot connect (the hold expires by itself)\n");
}

static void on_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    c->active = false;
    if (mode == M_RATE && !stopped)
        client_open(c); /* keep the pool full */
}

static void client_close(struct client *c)
{
    if (c->active && !uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void store_delay(uint64_t ns)
{
    if (n_delay == cap_delay) {
        cap_delay = cap_delay ? cap_delay * 2 : 65536;
        delay_us = realloc(delay_us, cap_delay * sizeof(*delay_us));
        if (!delay_us)
            abort();
    }
    delay_us[n_delay++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

/* delays of events the upstream sent once every stream had its first byte: relaying only, no
 * connection setup competing for the relay's time */
static void store_steady(uint64_t ns)
{
    if (n_steady == cap_steady) {
        cap_steady = cap_steady ? cap_steady * 2 : 65536;
        steady_us = realloc(steady_us, cap_steady * sizeof(*steady_us));
        if (!steady_us)
            abort();
    }
    steady_us[n_steady++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static void store_latency(uint64_t ns)
{
    if (n_lat == cap_lat) {
        cap_lat = cap_lat ? cap_lat * 2 : 65536;
        lat_us = realloc(lat_us, cap_lat * sizeof(*lat_us));
        if (!lat_us)
            abort();
    }
    lat_us[n_lat++] = (uint32_t)(ns / 1000 > UINT32_MAX ? UINT32_MAX : ns / 1000);
}

static void mark_bad(struct client *c, enum fail_reason r)
{
    if (!c->bad)
        c->bad = (int)r + 1;
}

/* stream mode: the stream ended, well or not; counts it once and frees its slot */
static void stream_finish(struct client *c)
{
    if (c->finished)
        return;
    c->finished = true;
    if (c->got_first) {
        open_now--;
    } else {
        first_count++; /* it will never get a first byte: do not hold the next opener */
        maybe_go();
    }
    if (!c->bad) {
        if (!c->done_seen)
            mark_bad(c, F_NO_DONE);
        else if (!c->finish_seen || c->next_tok != chunks)
            mark_bad(c, F_COUNT);
    }
    if (c->bad) {
        fail_count++;
        fails[c->bad - 1]++;
        if (fail_count <= 5)
            fprintf(stderr, "loadc: stream %d failed: %s (status %d, events %d, tokens %d, done %d)\n",
                    c->id, fail_names[c->bad - 1], c->status, c->events, c->next_tok,
                    c->done_seen);
    } else {
        ok_count++;
    }
    finished_count++;
    client_close(c);
    if (finished_count == k_streams)
        stop_all();
    else
        stream_open_next();
}

/* rate mode: one response ended (or the connection broke under it) */
static void rate_done(struct client *c)
{
    if (!c->busy)
        return;
    c->busy = false;
    if (c->bad) {
        fail_count++;
        fails[c->bad - 1]++;
        if (fail_count <= 5)
            fprintf(stderr, "loadc: request failed: %s (status %d)\n", fail_names[c->bad - 1],
                    c->status);
    } else {
        ok_count++;
        store_latency(now_ns() - c->sched);
    }
}

static void rate_send(struct client *c, uint64_t sched);

static void rate_idle(struct client *c)
{
    if (stopped)
        return;
    if (pend_head != pend_tail) {
        uint64_t s = pending[pend_head++];
        rate_send(c, s);
    } else {
        idle_stack[idle_len++] = c->id;
    }
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    static char rbuf[65536];
    (void)h;
    (void)hint;
    buf->base = rbuf;
    buf->len = sizeof(rbuf);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;
    if (n > 0) {
        llhttp_errno_t e = llhttp_execute(&c->parser, buf->base, (size_t)n);
        if (e == HPE_PAUSED) {
            llhttp_resume(&c->parser);
            if (mode == M_STREAM) {
                stream_finish(c);
            } else {
                rate_done(c);
                rate_idle(c);
            }
            return;
        }
        if (e != HPE_OK) {
            mark_bad(c, F_PARSE);
            goto broken;
        }
        return;
    }
    if (n == 0)
        return;
    if (n == UV_EOF) {
        llhttp_finish(&c->parser);
        if (mode == M_STREAM || c->busy)
            mark_bad(c, F_TRUNCATED);
    } else {
        mark_bad(c, F_TRUNCATED);
    }
broken:
    if (mode == M_STREAM) {
        stream_finish(c);
    } else {
        rate_done(c);
        c->connected = false;
        /* drop it from the idle stack if it is there */
        for (int i = 0; i < idle_len; i++) {
            if (idle_stack[i] == c->id) {
                idle_stack[i] = idle_stack[--idle_len];
                break;
            }
        }
        client_close(c); /* reopened by on_closed */
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct client *c = w->data;
    if (status < 0 && !stopped) {
        mark_bad(c, F_TRUNCATED);
        if (mode == M_STREAM)
            stream_finish(c);
    }
}

static void send_request(struct client *c)
{
    uv_buf_t b = uv_buf_init(request, (unsigned)request_len);
    c->wreq.data = c;
    c->complete = false;
    c->cors = false;
    c->bad = 0;
    c->status = 0;
    c->peek_len = 0;
    c->t_send = now_ns();
    llhttp_init(&c->parser, HTTP_RESPONSE, &settings);
    c->parser.data = c;
    int r = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (r < 0) {
        mark_bad(c, F_CONNECT);
        if (mode == M_STREAM)
            stream_finish(c);
    }
}

static void rate_send(struct client *c, uint64_t sched)
{
    c->busy = true;
    c->sched = sched;
    send_request(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (stopped)
        return;
    if (status < 0) {
        if (mode == M_STREAM) {
            mark_bad(c, F_CONNECT);
            stream_finish(c);
        } else {
            fails[F_CONNECT]++;
            rate_errors++;
            client_close(c); /* on_closed retries */
        }
        return;
    }
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    if (mode == M_STREAM) {
        send_request(c);
    } else {
        c->connected = true;
        rate_idle(c);
    }
}

static void client_open(struct client *c)
{
    if (stopped)
        return;
    if (rate_errors > 1000) {
        fprintf(stderr, "loadc: too many connect errors\n");
        stop_all();
        return;
    }
    uv_tcp_init(loop, &c->tcp);
    c->tcp.data = c;
    c->active = true;
    c->creq.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    int r = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&addr, on_connect);
    if (r < 0) {
        fprintf(stderr, "loadc: connect: %s\n", uv_strerror(r));
        if (mode == M_STREAM) {
            mark_bad(c, F_CONNECT);
            stream_finish(c);
        } else {
            rate_errors++;
            client_close(c);
        }
    }
}

static void stream_open_next(void)
{
    /* at most open_max streams may wait for their first byte at once */
    while (!stopped && opened < k_streams && opened - first_count < open_max) {
        struct client *c = &clients[opened];
        c->id = opened;
        opened++;
        client_open(c);
    }
}

/* ---- llhttp callbacks ---- */

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    if (c->in_value) {
        c->in_value = false;
        c->hname_len = 0;
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
    struct client *c = p->data;
    if (!c->in_value) {
        c->in_value = true;
        c->hval_len = 0;
    }
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
    struct client *c = p->data;
    if (strcasecmp(c->hname, "access-control-allow-origin") == 0 && strcmp(c->hval, "*") == 0)
        c->cors = true;
    c->hname_len = 0;
    c->in_value = false;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct client *c = p->data;
    c->in_value = false;
    c->hname_len = 0;
    c->status = p->status_code;
    if (p->status_code != 200)
        mark_bad(c, F_STATUS);
    else if (want_cors && !c->cors)
        mark_bad(c, F_CORS);
    return 0;
}

static void sse_event(struct client *c, const char *e, size_t len, uint64_t now)
{
    c->events++;
    events_total++;
    if (len >= 12 && memcmp(e, "data: [DONE]", 12) == 0) {
        if (!c->finish_seen)
            mark_bad(c, F_ORDER);
        c->done_seen = true;
        return;
    }
    if (c->done_seen || c->finish_seen) {
        mark_bad(c, F_ORDER);
        return;
    }
    const char *t = memmem(e, len, "\"content\":\"tok", 14);
    if (t) {
        int idx = atoi(t + 14);
        if (idx != c->next_tok)
            mark_bad(c, F_ORDER);
        c->next_tok = idx + 1;
    } else if (memmem(e, len, "\"finish_reason\":\"stop\"", 22)) {
        c->finish_seen = true;
    } else {
        mark_bad(c, F_BODY);
    }
    const char *s = memmem(e, len, "\"t_ns\":", 7);
    if (!s) {
        mark_bad(c, F_BODY);
        return;
    }
    uint64_t stamp = strtoull(s + 7, NULL, 10);
    if (t && t[14] == '0' && t[15] == ' ')
        return; /* the first event rides with the head: it is the TTFB, not a chunk delay */
    store_delay(now > stamp ? now - stamp : 0);
    if (t_all_open && stamp >= t_all_open)
        store_steady(now > stamp ? now - stamp : 0);
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;
    uint64_t now = now_ns();
    if (mode == M_RATE) {
        size_t room = PEEK_MAX - 1 - c->peek_len;
        size_t n = len < room ? len : room;
        memcpy(c->peek + c->peek_len, at, n);
        c->peek_len += n;
        c->peek[c->peek_len] = 0;
        return 0;
    }
    if (!c->got_first) {
        c->got_first = true;
        first_count++;
        open_now++;
        if (open_now > peak_open)
            peak_open = open_now;
        if (first_count == k_streams)
            t_all_open = now;
        uint64_t d = now - c->t_send;
        ttfb_us[n_ttfb++] = (uint32_t)(d / 1000);
        stream_open_next();
        maybe_go();
    }
    /* split into events at blank lines; an event may span several reads */
    while (len > 0) {
        size_t room = CARRY_MAX - c->carry_len;
        size_t n = len < room ? len : room;
        memcpy(c->carry + c->carry_len, at, n);
        c->carry_len += n;
        at += n;
        len -= n;
        size_t start = 0;
        for (;;) {
            char *end = memmem(c->carry + start, c->carry_len - start, "\n\n", 2);
            if (!end)
                break;
            size_t elen = (size_t)(end - (c->carry + start));
            sse_event(c, c->carry + start, elen, now);
            start += elen + 2;
        }
        if (start > 0) {
            memmove(c->carry, c->carry + start, c->carry_len - start);
            c->carry_len -= start;
        } else if (c->carry_len == CARRY_MAX) {
            mark_bad(c, F_BODY); /* an event larger than any the upstream sends */
            c->carry_len = 0;
        }
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct client *c = p->data;
    c->complete = true;
    if (mode == M_RATE && !c->bad && !strstr(c->peek, "\"object\":\"chat.completion\""))
        mark_bad(c, F_BODY);
    if (mode == M_STREAM && c->carry_len > 0)
        mark_bad(c, F_BODY); /* bytes after the last blank line */
    return HPE_PAUSED;
}

/* ---- timers ---- */

static void on_sample(uv_timer_t *t)
{
    (void)t;
    long rss = proc_rss_kb();
    if (rss > rss_peak_kb)
        rss_peak_kb = rss;
    if (first_count == k_streams && open_now == peak_open && rss > rss_at_all_open_kb)
        rss_at_all_open_kb = rss;
}

static void on_deadline(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "loadc: deadline of %.0f s reached\n", deadline_s);
    if (mode == M_STREAM) {
        for (int i = 0; i < k_streams; i++) {
            struct client *c = &clients[i];
            if (!c->finished) {
                mark_bad(c, F_DEADLINE);
                c->finished = true;
                fail_count++;
                fails[F_DEADLINE]++;
            }
        }
    } else {
        int lost = (int)(scheduled - (uint64_t)ok_count - (uint64_t)fail_count);
        if (lost > 0) {
            fails[F_DEADLINE] += lost;
            fail_count += lost;
        }
    }
    stop_all();
}

static void rate_finish_if_done(void)
{
    if (scheduled == sched_total && (uint64_t)(ok_count + fail_count) >= sched_total)
        stop_all();
}

static void on_tick(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    uint64_t exp;
    if (read(tfd, &exp, sizeof(exp)) != sizeof(exp))
        return;
    for (uint64_t i = 0; i < exp && scheduled < sched_total; i++) {
        uint64_t due = t_start + scheduled * period_ns;
        scheduled++;
        if (idle_len > 0) {
            struct client *c = &clients[idle_stack[--idle_len]];
            rate_send(c, due);
        } else {
            if (pend_tail == pend_cap) {
                fprintf(stderr, "loadc: pending queue full\n");
                stop_all();
                return;
            }
            pending[pend_tail++] = due;
        }
    }
    if (scheduled == sched_total)
        uv_poll_stop(&tick_poll);
}

static void on_check(uv_check_t *h)
{
    (void)h;
    if (mode == M_RATE && !stopped)
        rate_finish_if_done();
}

/* rate mode: start the clock once every connection is up (or after 5 s) */
static uv_timer_t ready_timer;
static void on_ready_poll(uv_timer_t *t)
{
    int up = 0;
    for (int i = 0; i < conns; i++)
        up += clients[i].connected;
    if (up < conns && (now_ns() - t_start) < 5000000000ull)
        return;
    uv_timer_stop(t);
    t_start = now_ns();
    if (npids > 0)
        cpu_base_s = proc_cpu_s();
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) {
        perror("timerfd_create");
        exit(2);
    }
    struct itimerspec its = {0};
    its.it_interval.tv_sec = (time_t)(period_ns / 1000000000ull);
    its.it_interval.tv_nsec = (long)(period_ns % 1000000000ull);
    its.it_value.tv_nsec = 1; /* fire at once: request 0 is due at t_start */
    /* t_start is the due time of request 0; the timer's phase only adds lateness, which counts */
    timerfd_settime(tfd, 0, &its, NULL);
    uv_poll_init(loop, &tick_poll, tfd);
    uv_poll_start(&tick_poll, UV_READABLE, on_tick);
}

static void usage(void)
{
    fprintf(stderr, "usage: loadc stream --port P -k K [--chunks N] [--delay-ms MS] [--open-max M] "
                    "[--deadline S] [--cors 0|1] [--hold-ms H --go-port UP] [--pid PID]...\n"
                    "       loadc rate --port P --rate R --duration S [--conns C] [--deadline S] "
                    "[--pid PID]...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    if (strcmp(argv[1], "stream") == 0)
        mode = M_STREAM;
    else if (strcmp(argv[1], "rate") == 0)
        mode = M_RATE;
    else
        usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "-k") == 0)
            k_streams = atoi(v);
        else if (strcmp(a, "--chunks") == 0)
            chunks = atoi(v);
        else if (strcmp(a, "--delay-ms") == 0)
            delay_ms = atoi(v);
        else if (strcmp(a, "--open-max") == 0)
            open_max = atoi(v);
        else if (strcmp(a, "--deadline") == 0)
            deadline_s = atof(v);
        else if (strcmp(a, "--rate") == 0)
            rate = atof(v);
        else if (strcmp(a, "--duration") == 0)
            duration_s = atof(v);
        else if (strcmp(a, "--conns") == 0)
            conns = atoi(v);
        else if (strcmp(a, "--hold-ms") == 0)
            hold_ms = atoi(v);
        else if (strcmp(a, "--go-port") == 0)
            go_port = atoi(v);
        else if (strcmp(a, "--cors") == 0)
            want_cors = atoi(v) != 0;
        else if (strcmp(a, "--pid") == 0 && npids < MAX_PIDS)
            pids[npids++] = atoi(v);
        else
            usage();
    }
    if (hold_ms > 0 && go_port <= 0)
        usage();
    if (port <= 0 || k_streams <= 0 || chunks < 1 || open_max < 1 || conns < 1 || rate <= 0 ||
        duration_s <= 0 || deadline_s <= 0)
        usage();

    loop = uv_default_loop();
    uv_ip4_addr("127.0.0.1", port, &addr);
    llhttp_settings_init(&settings);
    settings.on_header_field = on_header_field;
    settings.on_header_value = on_header_value;
    settings.on_header_value_complete = on_header_value_complete;
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    const char *body = mode == M_STREAM
                           ? "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"Hello\"}],\"stream\":true}"
                           : "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":"
                             "\"Hello\"}]}";
    request_len = (size_t)snprintf(request, sizeof(request),
                                   "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                   "Authorization: Bearer sk-bench-0123456789abcdef\r\n"
                                   "Content-Type: application/json\r\nAccept: application/json\r\n"
                                   "x-mock-chunks: %d\r\nx-mock-chunk-delay-ms: %d\r\n"
                                   "x-bench-hold-ms: %d\r\nContent-Length: %zu\r\n\r\n%s",
                                   port, mode == M_STREAM ? chunks : 5,
                                   mode == M_STREAM ? delay_ms : 0, mode == M_STREAM ? hold_ms : 0,
                                   strlen(body), body);

    uv_timer_init(loop, &deadline_timer);
    uv_timer_start(&deadline_timer, on_deadline, (uint64_t)(deadline_s * 1000), 0);
    static uv_check_t check;
    uv_check_init(loop, &check);
    uv_check_start(&check, on_check);

    t_start = now_ns();
    if (mode == M_STREAM) {
        clients = calloc((size_t)k_streams, sizeof(*clients));
        ttfb_us = calloc((size_t)k_streams, sizeof(*ttfb_us));
        if (!clients || !ttfb_us)
            abort();
        if (npids > 0) {
            cpu_base_s = proc_cpu_s();
            rss_base_kb = proc_rss_kb();
            rss_peak_kb = rss_base_kb;
            uv_timer_init(loop, &sample_timer);
            uv_timer_start(&sample_timer, on_sample, 20, 20);
        }
        stream_open_next();
    } else {
        period_ns = (uint64_t)(1e9 / rate);
        sched_total = (uint64_t)(rate * duration_s);
        if (sched_total < 1)
            sched_total = 1;
        pend_cap = sched_total;
        pending = calloc(pend_cap, sizeof(*pending));
        clients = calloc((size_t)conns, sizeof(*clients));
        idle_stack = calloc((size_t)conns, sizeof(*idle_stack));
        if (!pending || !clients || !idle_stack)
            abort();
        for (int i = 0; i < conns; i++) {
            clients[i].id = i;
            client_open(&clients[i]);
        }
        uv_timer_init(loop, &ready_timer);
        uv_timer_start(&ready_timer, on_ready_poll, 1, 1);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    if (!stopped)
        stop_all();
    report();
    bool ok = fail_count == 0 && (mode == M_STREAM ? ok_count == k_streams
                                                   : (uint64_t)ok_count == sched_total);
    return ok ? 0 : 1;
}
