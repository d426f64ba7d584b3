/* server — threads, listeners, signals and the drain (see server.h).
 * Each worker owns a SO_REUSEPORT socket bound to the same address, so the kernel spreads new
 * connections over the workers and no connection ever moves between threads. The main thread
 * blocks SIGTERM/SIGINT in every thread and waits for them with sigtimedwait(): the first asks
 * every worker to drain, a second one ends the drain at once. */
#include "server.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "relay.h"
#include "store.h"

static atomic_int drain_requested;
static atomic_int kill_requested;
static atomic_int workers_done;

void worker_conn_add(struct worker *w, struct conn *c)
{
    c->prev = NULL;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
}

static void on_idle(uv_idle_t *h);

static void worker_request_stop(struct worker *w)
{
    w->stopping = 1;
    uv_idle_start(&w->idle, on_idle);
}

void worker_conn_gone(struct worker *w, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (w->conns == c)
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    w->nconns--;
    if (w->draining && w->nconns == 0)
        worker_request_stop(w);
}

void worker_defer(struct worker *w, struct conn *c)
{
    if (!c->deferred) {
        c->deferred = 1;
        c->defer_next = w->deferred;
        w->deferred = c;
    }
    uv_idle_start(&w->idle, on_idle);
}

static void worker_stop(struct worker *w)
{
    if (w->stopping == 2)
        return;
    w->stopping = 2;
    if (w->has_prober)
        pool_prober_stop(&w->prober);
    upstream_close(&w->up);
    h1c_close(&w->h1);
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->idle, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
}

static void on_idle(uv_idle_t *h)
{
    struct worker *w = h->data;

    while (w->deferred != NULL) {
        struct conn *list = w->deferred;
        w->deferred = NULL;
        while (list != NULL) {
            struct conn *c = list;
            list = c->defer_next;
            c->deferred = 0;
            if (c->closed) {
                if (c->open_handles == 0)
                    free(c);
            } else {
                conn_deferred(c);
            }
        }
    }
    if (w->stopping == 1) {
        worker_stop(w);
        return;
    }
    uv_idle_stop(h);
}

static void kill_all(struct worker *w)
{
    struct conn *c = w->conns, *next;
    for (; c != NULL; c = next) {
        next = c->next;
        conn_kill(c);
    }
    if (w->nconns == 0)
        worker_request_stop(w);
}

static void on_drain_deadline(uv_timer_t *t)
{
    kill_all(t->data);
}

static void start_drain(struct worker *w)
{
    struct conn *c, *next;

    if (w->draining)
        return;
    w->draining = 1;
    uv_close((uv_handle_t *)&w->listener, NULL);
    for (c = w->conns; c != NULL; c = next) {
        next = c->next;
        conn_drain(c);
    }
    if (w->nconns == 0)
        worker_request_stop(w);
    else
        uv_timer_start(&w->drain_timer, on_drain_deadline, w->cfg->drain_timeout, 0);
}

static void on_wake(uv_async_t *a)
{
    struct worker *w = a->data;

    if (w->stopping)
        return;
    if (atomic_load(&drain_requested))
        start_drain(w);
    if (atomic_load(&kill_requested))
        kill_all(w);
}

size_t worker_max_connections(const struct worker *w)
{
    size_t n = (size_t)w->cfg->threads;
    return (w->cfg->max_connections + n - 1) / n;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->data;

    if (status < 0) {
        /* EMFILE/ENFILE: libuv has already accepted and closed the pending connections with its
         * reserve descriptor; log once a second at most, the loop goes on. */
        uint64_t now = uv_now(&w->loop);
        if (w->last_accept_error == 0 || now - w->last_accept_error >= 1000) {
            w->last_accept_error = now;
            log_error("accept: %s (open connections on this worker: %zu)", uv_strerror(status),
                      w->nconns);
        }
        return;
    }
    conn_accept(w, server);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    int rc;

    uv_run(&w->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&w->loop);
    if (rc != 0)
        log_error("worker %d: loop closed with handles open", w->id);
    free(w->hdr_scratch);
    while (w->ninbufs > 0)
        free(w->inbufs[--w->ninbufs]);
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

static void worker_thread(void *arg)
{
    worker_main(arg);
}

static int worker_init(struct worker *w, const struct config *cfg, int id, int fd,
                       struct store_writer *store)
{
    int rc;

    memset(w, 0, sizeof(*w));
    w->store = store;
    w->id = id;
    w->cfg = cfg;
    w->listen_fd = fd;
    w->hdr_scratch = calloc(cfg->max_headers + 1, sizeof(struct hdr));
    if (w->hdr_scratch == NULL || uv_loop_init(&w->loop) != 0)
        return -1;
    if (upstream_init(&w->up, &w->loop) != 0 || h1c_init(&w->h1, &w->loop, cfg) != 0)
        return -1;
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    rc = uv_tcp_open(&w->listener, fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
    if (rc != 0) {
        log_error("listen: %s", uv_strerror(rc));
        return -1;
    }
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    uv_idle_init(&w->loop, &w->idle);
    w->idle.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    for (size_t i = 0; id == 0 && !w->has_prober && i < cfg->nupstreams; i++)
        if (cfg->upstreams[i].nkeys > 0) {
            pool_prober_start(&w->prober, cfg, &w->up, &w->loop);
            w->has_prober = 1;
        }
    return 0;
}

/* A bound (not yet listening) socket with SO_REUSEPORT. *port: in, the port (0 = any);
 * out, the port bound. */
static int bind_socket(const char *host, int *port, char *shown, size_t cap)
{
    struct addrinfo hints, *ai = NULL;
    char ports[16];
    int fd = -1, one = 1, rc;
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(ports, sizeof(ports), "%d", *port);
    rc = getaddrinfo(host, ports, &hints, &ai);
    if (rc != 0) {
        log_error("cannot resolve listen address %s: %s", host, gai_strerror(rc));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        log_error("cannot listen on %s:%d: %s", host, *port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    if (getsockname(fd, (struct sockaddr *)&ss, &slen) == 0)
        *port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(shown, cap, ai->ai_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, *port);
    freeaddrinfo(ai);
    return fd;
}

/* Each stream needs two descriptors (client + upstream); use all the hard limit allows. */
static void raise_fd_limit(const struct config *cfg)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 2 * cfg->max_connections + 64)
        log_error("the descriptor limit (%llu) is below 2 x --max-connections + 64; raise it "
                  "(ulimit -n) or lower --max-connections",
                  (unsigned long long)rl.rlim_cur);
}

int server_run(const struct config *cfg)
{
    int n = cfg->threads, port = cfg->listen_port, started = 0, exit_code = 0;
    struct worker *workers = calloc((size_t)n, sizeof(*workers));
    struct store_writer *store = NULL;
    char shown[300], err[256];
    sigset_t set;

    if (workers == NULL)
        return 1;
    raise_fd_limit(cfg);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by every worker */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("libcurl initialisation failed");
        return 1;
    }
    /* The store thread owns the database: usage records go to it, relay keys come from it. */
    if (strcmp(cfg->auth, "keys") == 0 || cfg->store_set) {
        if (store_writer_start(cfg->store, &store, err, sizeof(err)) != 0) {
            log_error("store %s: %s", cfg->store, err);
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        int fd = bind_socket(cfg->listen_host, &port, shown, sizeof(shown));
        if (fd < 0 || worker_init(&workers[i], cfg, i, fd, store) != 0) {
            exit_code = 1;
            break;
        }
        started++;
    }
    if (exit_code != 0) {
        /* No worker runs yet: closing the process is the cleanup (the store is flushed). */
        if (store != NULL)
            store_writer_stop(store);
        return exit_code;
    }
    for (int i = 0; i < n; i++)
        uv_thread_create(&workers[i].thread, worker_thread, &workers[i]);
    fprintf(stderr, "ferry %s listening on http://%s -> ", FERRY_VERSION, shown);
    for (size_t i = 0; i < cfg->nupstreams; i++) /* one word: name=url,name=url for several */
        if (cfg->nupstreams == 1)
            fprintf(stderr, "%s", cfg->upstreams[i].url);
        else
            fprintf(stderr, "%s%s=%s", i ? "," : "", cfg->upstreams[i].name, cfg->upstreams[i].url);
    fprintf(stderr, " (%d thread%s)\n", n, n == 1 ? "" : "s");
    if (store != NULL)
        log_error("store %s: usage records%s", cfg->store,
                  strcmp(cfg->auth, "keys") == 0 ? ", relay keys required (auth: keys)" : "");
    for (size_t i = 0; i < cfg->nupstreams && strcmp(cfg->auth, "keys") != 0; i++)
        if (cfg->upstreams[i].nkeys > 0 && cfg->nroutes > 0)
            log_error("upstream %s has a key pool: anyone who can reach this relay spends those "
                      "keys (set auth: keys to require relay-issued keys)",
                      cfg->upstreams[i].name);
    fflush(stderr);

    while (atomic_load(&workers_done) < started) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig < 0)
            continue;
        if (!atomic_load(&drain_requested)) {
            log_error("signal %d: draining (up to %.1f s)", sig, (double)cfg->drain_timeout / 1e3);
            atomic_store(&drain_requested, 1);
        } else {
            log_error("second signal: ending in-flight requests now");
            atomic_store(&kill_requested, 1);
        }
        for (int i = 0; i < n; i++)
            uv_async_send(&workers[i].wake);
    }
    for (int i = 0; i < n; i++)
        uv_thread_join(&workers[i].thread);
    if (store != NULL) /* after every worker: nothing pushes any more; commits what is queued */
        store_writer_stop(store);
    free(workers);
    curl_global_cleanup();
    return 0;
}
