/* log — the access log (one line per request on stdout, written whole with one write(2) so lines
 * from several threads never interleave) and diagnostics on stderr. Nothing that could carry a
 * secret is logged: no header values, no query strings. */
#ifndef FERRY_LOG_H
#define FERRY_LOG_H

#include <stddef.h>
#include <stdint.h>

enum end_reason { END_OK, END_CLIENT_CLOSED, END_UPSTREAM_ERROR, END_TIMEOUT, END_REJECTED };

struct access {
    char client[64];
    char method[24];
    char path[256];      /* request path without the query string, truncated */
    char upstream[64];   /* name of the upstream chosen by the routes ("-": none) */
    int status;          /* what the client got (0: nothing) */
    int upstream_status; /* what the upstream answered (0: no answer) */
    uint64_t bytes_in;   /* request body bytes received from the client */
    uint64_t bytes_out;  /* response bytes queued to the client, head included */
    uint64_t t_start;    /* uv_hrtime() at the request head */
    uint64_t t_first;    /* uv_hrtime() at the upstream response head (0: none) */
    enum end_reason end;
    /* usage read from the response, for the paths that carry it (chat, completions, embeddings,
     * responses, messages) */
    int usage;           /* 0: not a usage path; 1: read; the counts below are meaningful */
    int usage_complete;  /* the response ended as it should (a stream saw its terminal event) */
    uint64_t prompt_tokens, completion_tokens, total_tokens, cached_tokens, reasoning_tokens;
    char model[128];
    int64_t key_id;      /* relay key (0: none) */
    int upstream_key;    /* index in the upstream's key pool (-1: none) */
};

const char *log_end_name(enum end_reason end);

/* Writes the access line for a finished request if the access log is on. */
void log_access(const struct access *a, int enabled);

/* printf-style line on stderr, prefixed with a timestamp and "ferry: ". */
void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Copies the path of target (up to '?' or '#') into out, JSON/log-safe (no spaces or quotes). */
void log_path(char *out, size_t cap, const char *target, size_t len);

#endif
