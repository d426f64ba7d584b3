/* relay — the life of one relayed request, the only module that knows both sides: it builds the
 * upstream transfer from the client's head, streams the body through a bounded buffer
 * (pausing either side: CURL_READFUNC_PAUSE / CURL_WRITEFUNC_PAUSE), turns the upstream's head
 * into the client's (hop-by-hop fields out, CORS in, framing chosen for the client), follows
 * redirects when that is safe, and ends the request exactly once, whatever ended it. */
#ifndef FERRY_RELAY_H
#define FERRY_RELAY_H

#include <curl/curl.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

struct conn;
struct relay;

struct relay_req {
    const char *method;
    size_t method_len;
    const char *path; /* origin-form: /path?query */
    size_t path_len;
    const struct hdr *hdrs;
    size_t nhdrs;
    int has_body;
    int chunked;
    uint64_t content_length;
    int http_minor;
};

/* Starts the upstream transfer (for a small body of known length: prepares it, and the transfer
 * starts at relay_body_end). Returns the relay, or NULL with *status set to the HTTP status the
 * caller answers with (404: no route matches; 500: no memory or libcurl refused). The relay keeps
 * copies of everything it needs from req. */
struct relay *relay_start(struct conn *c, const struct relay_req *req, int *status);

/* Free bytes in the request body buffer (it compacts when it must). */
size_t relay_body_room(struct relay *r);
/* Appends body bytes; n <= relay_body_room(). */
void relay_body_append(struct relay *r, const char *p, size_t n);
/* The client's body is complete. A small body of known length is sent from memory, so its
 * upstream is chosen (routes by model) and its transfer starts only now. Returns 0, or a negative
 * HTTP status to answer with (-404 no route, -500, -502). */
int relay_body_end(struct relay *r);
/* New body bytes or the end were appended: let libcurl read again. Not from a curl callback. */
void relay_body_wake(struct relay *r);

/* The client's write queue went down: resume the upstream if it was paused. */
void relay_write_drained(struct relay *r);

/* The client is gone or timed out: stop the upstream transfer now. Not from a curl callback. */
void relay_cancel(struct relay *r, enum end_reason why);

/* Next uv_now() deadline of the upstream side (0: none); relay_expire() handles it. */
uint64_t relay_deadline(const struct relay *r);
void relay_expire(struct relay *r, uint64_t now);

/* Writes the response head if it is still held back (see send_head in relay.c). */
void relay_flush(struct relay *r);

/* 1 when the response head went to the client (or is held, to go with the first body bytes). */
int relay_head_sent(const struct relay *r);

void relay_free(struct relay *r);

#endif
