/* h1client — ferry's own HTTP/1.1 client for upstream calls, one per worker thread: keep-alive
 * connections per origin on the worker's libuv loop (uv_poll over non-blocking sockets), OpenSSL
 * for https (certificate and host name verified, SNI, session resumption, buffers released while
 * idle) and llhttp for the response.
 *
 * It speaks libcurl's callback conventions for the body — CURL_WRITEFUNC_PAUSE and
 * CURL_READFUNC_PAUSE, CURLcode results and an error buffer — so that relay.c drives it as it
 * drives a libcurl easy handle; the head comes parsed, in one call (no header lines to split
 * again). libcurl still carries what this
 * does not do (egress proxies) and can be chosen for everything (--upstream-client curl).
 * Why it exists: libcurl's multi machinery was ~73 % of ferry's instructions per request
 * (docs/performance.md).
 *
 * Contract: callbacks run from libuv callbacks of this module only; on_done runs once per
 * request, after the request was freed (never from inside h1c_start, h1c_resume_* or h1c_stop),
 * and no callback follows it. h1c_stop and h1c_resume_* must not be called from inside one of
 * the request's own callbacks. */
#ifndef FERRY_H1CLIENT_H
#define FERRY_H1CLIENT_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "headers.h"

#define H1C_MAX_FIELDS 256 /* fields in a response head; more is a failed response */

struct config;
struct h1c_origin;
struct h1c_req;

/* libcurl's signatures: size is always 1. */
typedef size_t (*h1c_io_cb)(char *p, size_t size, size_t n, void *ud);
typedef void (*h1c_done_cb)(void *ud, CURLcode result);
/* A whole response head, interim ones (1xx) included: fields in order, names checked to be tokens,
 * values without surrounding whitespace; everything valid for the call only. Trailers are not
 * handed over. */
struct h1c_head {
    int status, http_major, http_minor;
    const char *reason;
    size_t reason_len;
    const struct hdr *fields;
    size_t n;
};
/* Returns 0, or -1 to refuse the response (it ends with CURLE_WRITE_ERROR). */
typedef int (*h1c_head_cb)(void *ud, const struct h1c_head *h);

struct h1c_opts {
    const char *url;            /* absolute http:// or https:// URL; the path is sent as is */
    const char *method;
    int no_response_body;       /* HEAD */
    const struct curl_slist *fields; /* libcurl's convention: "Name:" is skipped, "Name;" is sent empty */
    int has_body, chunked;      /* chunked: Transfer-Encoding: chunked, else Content-Length */
    uint64_t content_length;
    const char *body;           /* a whole body in memory (replayable), or NULL: read with on_read */
    const char *ca_file;        /* "" or NULL: the system store */
    const char *proxy;          /* the upstream's egress proxy, "" or NULL: none */
    h1c_head_cb on_head;
    h1c_io_cb on_data, on_read;
    h1c_done_cb on_done;
    void *ud;
    char *errbuf;               /* CURL_ERROR_SIZE bytes: why a transfer failed */
};

struct h1c {
    uv_loop_t *loop;
    const struct config *cfg;
    struct h1c_origin *origins;
    size_t norigins;
    char *scratch;              /* the worker's read buffer: every read lands here first */
    size_t scratch_cap;
    struct hdr *fields;         /* a head's fields while on_head runs (H1C_MAX_FIELDS) */
    uv_idle_t kick;             /* next loop turn: resumes paused requests, ends doomed ones */
    struct h1c_req *pending, *pending_tail; /* requests to resume or to fail (doubly linked) */
    int closed;
};

int h1c_init(struct h1c *c, uv_loop_t *loop, const struct config *cfg);

/* Closes idle connections and the timer (every request must have ended or been stopped). The
 * loop must run once more for the handles to close. */
void h1c_close(struct h1c *c);

/* Starts a transfer (*out), and returns 0: every failure after that (DNS, connect, TLS, protocol)
 * comes through on_done. Returns -EPROTONOSUPPORT for what this client does not carry (a URL
 * that is not plain http:// or https://, with credentials, or through an egress proxy: libcurl's
 * business), -ENOMEM, or -ESHUTDOWN after h1c_close. */
int h1c_start(struct h1c *c, const struct h1c_opts *o, struct h1c_req **out);

/* on_data returned CURL_WRITEFUNC_PAUSE: deliver again (next loop turn). */
void h1c_resume_recv(struct h1c_req *q);
/* on_read returned CURL_READFUNC_PAUSE: ask again (when the socket is writable). */
void h1c_resume_send(struct h1c_req *q);

/* Ends a transfer now, without on_done; a connection in the middle of it is closed. */
void h1c_stop(struct h1c_req *q);

#endif
