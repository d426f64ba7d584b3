/* log — access and error lines (see log.h). */
#include "log.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

const char *log_end_name(enum end_reason end)
{
    switch (end) {
    case END_OK: return "ok";
    case END_CLIENT_CLOSED: return "client_closed";
    case END_UPSTREAM_ERROR: return "upstream_error";
    case END_TIMEOUT: return "timeout";
    case END_REJECTED: return "rejected";
    }
    return "unknown";
}

static size_t timestamp(char *out, size_t cap)
{
    struct timeval tv;
    struct tm tm;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, cap - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    return n;
}

void log_path(char *out, size_t cap, const char *target, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)target[i];
        if (c == '?' || c == '#')
            break;
        out[o++] = (c <= 0x20 || c >= 0x7f || c == '"') ? '_' : (char)c;
    }
    out[o] = '\0';
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

void log_access(const struct access *a, int enabled)
{
    char line[1100], ts[40];
    uint64_t now = uv_hrtime();
    double total = (double)(now - a->t_start) / 1e6;
    double ttfb = a->t_first ? (double)(a->t_first - a->t_start) / 1e6 : -1;
    int n;

    if (!enabled)
        return;
    timestamp(ts, sizeof(ts));
    char usage[320] = "";
    if (a->usage) {
        char model[sizeof(a->model)];
        log_path(model, sizeof(model), a->model, strlen(a->model)); /* no spaces or quotes */
        snprintf(usage, sizeof(usage),
                 " model=%s prompt_tokens=%llu completion_tokens=%llu cached_tokens=%llu "
                 "reasoning_tokens=%llu total_tokens=%llu usage=%s",
                 model[0] ? model : "-", (unsigned long long)a->prompt_tokens,
                 (unsigned long long)a->completion_tokens, (unsigned long long)a->cached_tokens,
                 (unsigned long long)a->reasoning_tokens, (unsigned long long)a->total_tokens,
                 a->usage_complete ? "complete" : "partial");
    }
    n = snprintf(line, sizeof(line),
                 "ts=%s client=%s method=%s path=%s upstream=%s status=%d upstream_status=%d bytes_in=%llu "
                 "bytes_out=%llu ttfb_ms=%.1f total_ms=%.1f end=%s%s\n",
                 ts, a->client, a->method[0] ? a->method : "-", a->path[0] ? a->path : "-",
                 a->upstream[0] ? a->upstream : "-",
                 a->status, a->upstream_status, (unsigned long long)a->bytes_in,
                 (unsigned long long)a->bytes_out, ttfb, total, log_end_name(a->end), usage);
    if (n > 0)
        write_all(STDOUT_FILENO, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void log_error(const char *fmt, ...)
{
    char line[1024], ts[40];
    size_t n;
    va_list ap;

    timestamp(ts, sizeof(ts));
    n = (size_t)snprintf(line, sizeof(line), "%s ferry: ", ts);
    va_start(ap, fmt);
    n += (size_t)vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    write_all(STDERR_FILENO, line, n);
}
