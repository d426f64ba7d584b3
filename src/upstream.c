/* upstream — libcurl's multi_socket interface on a libuv loop (see upstream.h).
 * Each socket libcurl uses gets a uv_poll handle, tracked through curl_multi_assign; libcurl's
 * single timeout is one uv_timer. Finished transfers are collected after every
 * curl_multi_socket_action call, never inside it. */
#include "upstream.h"

#include <stdlib.h>

struct usock {
    uv_poll_t poll;
    curl_socket_t fd;
    struct upstream *u;
};

static void check_done(struct upstream *u)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(u->multi, &left)) != NULL) {
        struct upstream_job *job = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&job);
        job->done(job, msg->easy_handle, msg->data.result);
    }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct usock *s = p->data;
    struct upstream *u = s->u;
    int flags = 0, running;

    /* libuv reports POLLERR as an error status and stops the handle; letting libcurl read and
     * write makes it find the real error (a reset, a refused connect) and end the transfer. */
    if (status < 0)
        flags = CURL_CSELECT_IN | CURL_CSELECT_OUT;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(u->multi, s->fd, flags, &running);
    check_done(u);
}

static void on_timer(uv_timer_t *t)
{
    struct upstream *u = t->data;
    int running;

    curl_multi_socket_action(u->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(u);
}

static void free_handle(uv_handle_t *h)
{
    free(h->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct upstream *u = userp;
    struct usock *s = socketp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            uv_poll_stop(&s->poll);
            uv_close((uv_handle_t *)&s->poll, free_handle);
            curl_multi_assign(u->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return -1;
        s->fd = fd;
        s->u = u;
        if (uv_poll_init_socket(u->loop, &s->poll, fd) != 0) {
            free(s);
            return -1;
        }
        s->poll.data = s;
        curl_multi_assign(u->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, on_poll);
    return 0;
}

static int on_timeout(CURLM *multi, long ms, void *userp)
{
    struct upstream *u = userp;

    (void)multi;
    if (ms < 0)
        uv_timer_stop(&u->timer);
    else
        uv_timer_start(&u->timer, on_timer, (uint64_t)ms, 0);
    return 0;
}

int upstream_init(struct upstream *u, uv_loop_t *loop)
{
    u->loop = loop;
    u->nspare = 0;
    u->closed = 0;
    u->multi = curl_multi_init();
    if (u->multi == NULL)
        return -1;
    /* Without a share handle libcurl resumes a TLS session only within one easy handle: every
     * new upstream connection would pay a full handshake. One worker = one thread, so the share
     * needs no lock callbacks. */
    u->share = curl_share_init();
    if (u->share != NULL) {
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
        curl_share_setopt(u->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    }
    uv_timer_init(loop, &u->timer);
    u->timer.data = u;
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_timeout);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    /* Keep enough idle upstream connections for a busy worker; libcurl's default is 4 per
     * added handle, which collapses after a burst. */
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, 512L);
    return 0;
}

void upstream_close(struct upstream *u)
{
    if (u->closed)
        return;
    u->closed = 1;
    for (int i = 0; i < u->nspare; i++)
        curl_easy_cleanup(u->spare[i]);
    u->nspare = 0;
    curl_multi_cleanup(u->multi); /* closes cached connections: on_socket(REMOVE) for each */
    u->multi = NULL;
    if (u->share != NULL)
        curl_share_cleanup(u->share);
    u->share = NULL;
    uv_timer_stop(&u->timer);
    uv_close((uv_handle_t *)&u->timer, NULL);
}

CURL *upstream_easy(struct upstream *u)
{
    CURL *e = u->nspare > 0 ? u->spare[--u->nspare] : curl_easy_init();

    if (e != NULL && u->share != NULL) /* curl_easy_reset() cleared it */
        curl_easy_setopt(e, CURLOPT_SHARE, u->share);
    return e;
}

int upstream_add(struct upstream *u, CURL *easy)
{
    return curl_multi_add_handle(u->multi, easy) == CURLM_OK ? 0 : -1;
}

void upstream_remove(struct upstream *u, CURL *easy)
{
    curl_multi_remove_handle(u->multi, easy);
    if (u->nspare < (int)(sizeof(u->spare) / sizeof(u->spare[0]))) {
        curl_easy_reset(easy);
        u->spare[u->nspare++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

void upstream_kick(struct upstream *u)
{
    /* curl_easy_pause already asks for a 0 ms timeout; this covers the case where the call
     * happened while the timer callback was not armed. */
    uv_timer_start(&u->timer, on_timer, 0, 0);
}
