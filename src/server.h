/* server — the process: N worker threads, each with its own libuv loop, its own SO_REUSEPORT
 * listening socket and its own libcurl multi handle, so a request lives and dies on one thread
 * with no locks. The main thread only waits for SIGTERM/SIGINT and tells the workers to drain. */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include <stddef.h>
#include <uv.h>

#include "config.h"
#include "headers.h"
#include "pool.h"
#include "h1client.h"
#include "upstream.h"

struct conn;

struct worker {
    int id;
    const struct config *cfg;
    uv_loop_t loop;
    uv_tcp_t listener;
    int listen_fd;
    uv_async_t wake;       /* the main thread asks for a drain */
    uv_idle_t idle;        /* runs deferred connection work next loop turn */
    uv_timer_t drain_timer;
    struct upstream up;    /* libcurl: egress proxies, key probes, --upstream-client curl */
    struct h1c h1;         /* ferry's own client: every other upstream call */
    struct pool_prober prober; /* worker 0 only, when some upstream has a key pool */
    struct store_writer *store; /* usage records and relay keys; NULL when not configured */
    int has_prober;
    struct conn *conns;    /* every open connection (doubly linked) */
    struct conn *deferred; /* connections with deferred work (singly linked) */
    size_t nconns;
    struct hdr *hdr_scratch; /* head fields of the request being handled (max_headers) */
    char *inbufs[16];      /* connection input buffers kept for reuse (conn.c) */
    int ninbufs;
    int draining;
    int stopping;
    uint64_t last_accept_error; /* uv_now() of the last logged accept error */
    uv_thread_t thread;
};

/* Runs the server until a drain completes. Returns the process exit code. */
int server_run(const struct config *cfg);

/* Queues c for conn_deferred() on the next loop turn, outside any libcurl callback. */
void worker_defer(struct worker *w, struct conn *c);

/* This worker's share of --max-connections. */
size_t worker_max_connections(const struct worker *w);

/* Bookkeeping for the connection list; worker_conn_gone may finish a drain. */
void worker_conn_add(struct worker *w, struct conn *c);
void worker_conn_gone(struct worker *w, struct conn *c);

#endif
