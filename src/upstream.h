/* upstream — one libcurl multi handle driven by one libuv loop (curl_multi_socket_action):
 * libcurl says which sockets to watch and when to wake it; this module turns that into uv_poll
 * and uv_timer handles, and reports each finished transfer to its owner. One per worker thread. */
#ifndef FERRY_UPSTREAM_H
#define FERRY_UPSTREAM_H

#include <curl/curl.h>
#include <uv.h>

struct upstream_job;

/* Called outside any libcurl callback when a transfer ends; the callee must upstream_remove()
 * the easy handle (it owns it again). */
typedef void (*upstream_done_cb)(struct upstream_job *job, CURL *easy, CURLcode result);

/* Every transfer's CURLOPT_PRIVATE points to one of these, the first member of its owner (a
 * relay, a key probe), so that completions reach the right code. */
struct upstream_job {
    upstream_done_cb done;
};

struct upstream {
    uv_loop_t *loop;
    CURLM *multi;
    CURLSH *share;   /* TLS sessions and DNS answers, shared by this worker's transfers */
    uv_timer_t timer;
    CURL *spare[64]; /* easy handles kept for reuse: reset, not re-created */
    int nspare;
    int closed;
};

int upstream_init(struct upstream *u, uv_loop_t *loop);

/* Cleans the multi handle up (closing its cached connections) and closes the timer. The loop
 * must run once more for the handles to close. */
void upstream_close(struct upstream *u);

/* A reset easy handle, from the spare list or new, attached to the worker's share handle. */
CURL *upstream_easy(struct upstream *u);

/* Starts a transfer. Returns 0 or -1. */
int upstream_add(struct upstream *u, CURL *easy);

/* Stops a transfer (whatever its state: the connection is closed if it was mid-transfer) and
 * takes the easy handle back for reuse. Never call it from inside a libcurl callback. */
void upstream_remove(struct upstream *u, CURL *easy);

/* Lets libcurl act on a handle it was told to resume (curl_easy_pause) in the next loop turn. */
void upstream_kick(struct upstream *u);

#endif
