/* conn — one downstream HTTP/1.1 connection: reading into a bounded buffer, the guard and llhttp,
 * the request head, feeding the request body to the relay, the ordered write queue, keep-alive
 * and pipelining (one request at a time, answered in order), and every client-side timeout.
 *
 *   client bytes ─▶ in[] ─▶ guard ─▶ llhttp ─▶ head: relay_start()  |  body: relay_body_append()
 *   relay ─▶ conn_send() ─▶ uv_write queue ─▶ client          (write callbacks ─▶ relay_write_drained)
 *
 * Invariants: a conn has at most one relay; the relay never outlives it; the conn is freed only
 * when its two handles (tcp, timer) have closed. */
#ifndef FERRY_CONN_H
#define FERRY_CONN_H

#include <llhttp.h>
#include <stdint.h>
#include <uv.h>

#include "guard.h"
#include "headers.h"
#include "log.h"

struct worker;
struct relay;

enum conn_phase {
    PHASE_IDLE,    /* between requests */
    PHASE_HEAD,    /* some bytes of a request head arrived */
    PHASE_BODY,    /* head handled, body bytes still to come */
    PHASE_WAIT,    /* request fully read; its response is in progress */
    PHASE_CLOSING, /* shut down for writing, discarding input until EOF or the linger deadline */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uint64_t timer_at;         /* loop time the timer fires at; 0: not armed */
    struct worker *w;
    struct conn *prev, *next;  /* worker's list */
    struct conn *defer_next;
    int deferred;
    int open_handles;
    int closed;                /* uv_close issued */

    llhttp_t parser;
    struct guard_head gh;
    struct guard_chunk gc;
    char *in;                  /* input buffer, grown up to the head limit, freed when idle */
    size_t in_cap, in_len, in_pos;
    int reading;
    enum conn_phase phase;

    /* the current request */
    int http_minor;
    int keepalive;
    int body_chunked;
    uint64_t body_left;        /* Content-Length bytes still to read */
    int msg_complete;          /* llhttp reached the end of the request */
    int close_after;           /* close once the current response is written */
    struct hdr *hdrs;          /* head fields, spans into in[], valid while the head is handled */
    size_t nhdrs;
    const char *method, *target;
    size_t method_len, target_len;
    struct relay *relay;
    struct access acc;
    int acc_pending;           /* acc describes a request not yet logged */
    int broken;                /* a write failed inside a callback: close on the next turn */
    int no_linger;             /* closing at the drain deadline: close as soon as flushed */
    int eof;                   /* the client shut down its side (--half-close) */
    size_t wq_alloc;           /* bytes held in write requests not yet completed */
    uv_shutdown_t shut;

    uint64_t t_idle, t_head, t_read, t_write, t_linger; /* uv_now() of the last such event */
};

/* Accepts a connection from the worker's listener. */
void conn_accept(struct worker *w, uv_stream_t *listener);

/* Queues bytes for the client: a, then b (framed as one HTTP chunk when chunked). Copies them.
 * Returns 0, or a negative libuv error (the connection is then being closed). */
int conn_send(struct conn *c, const char *a, size_t alen, const char *b, size_t blen, int chunked);

/* Bytes held for the client: queued, or written but not yet released by libuv. Backpressure
 * and the write timeout use it, so memory per connection is bounded whatever the client does. */
size_t conn_write_queue(const struct conn *c);

/* The relay has taken body bytes from the buffer: parse more input later (outside callbacks). */
void conn_wake_input(struct conn *c);

/* The relay ends the response. complete: the response was fully queued (or a relay error
 * response was sent); 0: it was cut short and the connection must close (a visible truncation).
 * Frees the relay. Never call it from inside a libcurl callback. */
void conn_response_done(struct conn *c, int complete);

/* Work queued with worker_defer(). */
void conn_deferred(struct conn *c);

/* Drain: close an idle connection now, or mark a busy one to close after its response. */
void conn_drain(struct conn *c);

/* Drain deadline: end the connection now, truncating whatever is in flight. */
void conn_kill(struct conn *c);

/* Re-arms the connection's timer for its nearest deadline (the relay's included). */
void conn_arm(struct conn *c);

#endif
