/* config — ferry's settings: defaults, environment (FERRY_*), then command-line flags.
 * The result is one immutable struct shared read-only by every worker thread. */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "headers.h"

#define CONFIG_MAX_UPSTREAMS 32
#define CONFIG_MAX_ROUTES 64

/* A pool key's health, shared by every worker thread (touched with atomic builtins only). */
struct key_health {
    int64_t cooldown_until; /* ms (pool_now): rate-limited until then */
    int disabled;           /* rejected (401) or out of quota: only probes use it */
    int64_t next_probe;     /* ms (pool_now) of the next probe of a disabled key */
    int probing;            /* a probe is in flight */
};

/* One upstream: where requests go, through what, and with which keys. */
struct upstream_def {
    char name[64];
    char url[2048];          /* base URL without trailing slash */
    char proxy[1024];        /* egress proxy URL; empty: none */
    char ca_file[1024];      /* empty: the system store */
    char key_header[32];     /* "authorization" (Bearer KEY), "api-key" or "x-api-key" */
    char **keys;             /* the pool; NULL when the client's own credentials go upstream */
    size_t nkeys;
    unsigned int next_key;   /* round-robin position, advanced atomically */
    struct key_health *health; /* nkeys entries */
};

/* A route: requests whose path starts with path (and, when models is set, whose JSON body's
 * "model" matches one of the globs) go to upstream. The first matching route wins. */
struct route_def {
    char path[256];
    char **models;
    size_t nmodels;
    struct upstream_def *upstream;
};

struct config {
    char listen_host[256];
    int listen_port;
    char upstream[2048];      /* base URL without trailing slash, e.g. https://api.openai.com */
    char upstream_origin[2048]; /* scheme://host[:port] of upstream, for redirect credential checks */
    char ca_file[1024];       /* empty: the system store */
    char proxy[1024];         /* egress proxy URL for upstream calls; empty: none */
    int threads;

    /* timeouts, milliseconds */
    uint64_t connect_timeout;
    uint64_t first_byte_timeout;
    uint64_t idle_timeout;
    uint64_t head_timeout;
    uint64_t body_timeout;
    uint64_t write_timeout;
    uint64_t keepalive_timeout;
    uint64_t drain_timeout;

    /* limits */
    size_t max_request_line;
    size_t max_header_bytes;
    size_t max_headers;
    uint64_t max_body;
    size_t max_chunk_ext;
    size_t buffer_size;       /* per direction: request body buffer, response write high-water */
    size_t max_response_header_bytes;
    size_t read_buffer_size;  /* bytes read from an upstream at a time */
    char upstream_client[8];  /* "ferry": the built-in HTTP/1.1 client (libcurl only for egress
                               * proxies); "curl": libcurl for every upstream call */
    size_t upstream_keepalive; /* idle connections kept per upstream origin per worker */
    uint64_t upstream_keepalive_timeout; /* ms an idle upstream connection is kept */
    int max_redirects;
    int max_retries;          /* other pool keys tried before any byte reached the client */
    uint64_t key_cooldown;    /* ms a rate-limited key rests when the upstream gives no retry-after */
    uint64_t key_probe_interval; /* ms between probes of a disabled key */
    size_t max_connections;   /* per process; each worker takes its share */

    char drop_headers[HEADERS_SET_BYTES]; /* comma list; an entry ending in '*' is a prefix */
    struct headers_set drop;  /* drop_headers compiled by config_load */
    char config_file[1024];   /* -c FILE; empty: none */
    char store[1024];         /* SQLite database for keys and usage */
    char auth[16];            /* "none" (the client's credentials go upstream) or "keys" */
    int store_set;            /* store given explicitly: record usage even without auth: keys */

    /* Always at least one upstream and one route: without a file's "upstreams", the upstream
     * above (with --proxy and --ca-file) becomes "default", routed for every path. */
    struct upstream_def upstreams[CONFIG_MAX_UPSTREAMS];
    size_t nupstreams;
    struct route_def routes[CONFIG_MAX_ROUTES];
    size_t nroutes;
    int model_routes;         /* some route looks at the request's model */
    int access_log;
    int half_close;           /* EOF after a complete request: finish the response */
};

/* Fills *cfg from defaults, then the environment, then argv. Returns 0 to run,
 * 1 when --help/--version was printed (exit 0), -1 on a bad value (message printed). */
int config_load(struct config *cfg, int argc, char **argv);

/* Applies one option by its long name (dashes or underscores) from a string value, as a flag
 * would. Returns 0, -1 for a bad value, -2 for an unknown name. */
int config_set(struct config *cfg, const char *name, const char *value);

/* Reads a YAML file into *cfg (see docs/configuration.md). On error prints
 * "FILE:LINE:COLUMN: field: problem" on stderr and returns -1. */
int config_file_load(struct config *cfg, const char *path);

/* The route for a request path (and model, NULL when unknown), or NULL when none matches. */
const struct route_def *config_route(const struct config *cfg, const char *path, size_t path_len,
                                     const char *model);

/* Parsers shared with tests. Return 0 on success, -1 on malformed input. */
int config_parse_duration(const char *s, uint64_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);

#endif
