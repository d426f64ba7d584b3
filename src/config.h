/* config — ferry's settings: defaults, environment (FERRY_*), then command-line flags.
 * The result is one immutable struct shared read-only by every worker thread. */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include <stddef.h>
#include <stdint.h>

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
    size_t read_buffer_size;  /* libcurl's receive buffer per transfer */
    int max_redirects;
    size_t max_connections;   /* per process; each worker takes its share */

    char drop_headers[1024];  /* comma list; an entry ending in '*' is a prefix */
    int access_log;
    int half_close;           /* EOF after a complete request: finish the response */
};

/* Fills *cfg from defaults, then the environment, then argv. Returns 0 to run,
 * 1 when --help/--version was printed (exit 0), -1 on a bad value (message printed). */
int config_load(struct config *cfg, int argc, char **argv);

/* Parsers shared with tests. Return 0 on success, -1 on malformed input. */
int config_parse_duration(const char *s, uint64_t *ms);
int config_parse_size(const char *s, uint64_t *bytes);

#endif
