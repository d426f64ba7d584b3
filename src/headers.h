/* headers — which header fields cross the relay. Hop-by-hop fields (RFC 9110 §7.6.1) and every
 * field named in Connection stay on their own hop; Host is the upstream's; framing fields are
 * rebuilt by whoever writes the next hop; a configurable list keeps client-identifying fields
 * (cookies, forwarding chains) away from the provider. */
#ifndef FERRY_HEADERS_H
#define FERRY_HEADERS_H

#include <stddef.h>

struct hdr {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

/* 1 when name equals (case-insensitively) one of the comma-separated tokens in list[0..list_len).
 * With wildcards, a token ending in '*' matches every name starting with what precedes it. */
int headers_list_has(const char *list, size_t list_len, const char *name, size_t name_len,
                     int wildcards);

/* 1 for a hop-by-hop field: Connection, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding,
 * Upgrade. */
int headers_hop_by_hop(const char *name, size_t len);

/* 1 when h[i] must not be relayed because it is hop-by-hop or named by a Connection field in h. */
int headers_connection_scoped(const struct hdr *h, size_t n, size_t i);

/* Request fields: sets keep[i] for each field that goes upstream. Drops the hop-by-hop and
 * Connection-named ones, Host, Content-Length and Expect (libcurl frames the upstream request
 * itself), and those matching drop_list (comma list with '*' prefixes). */
void headers_filter_request(const struct hdr *h, size_t n, const char *drop_list, int *keep);

/* Response fields: sets keep[i] for each field that goes back to the client. Drops the
 * hop-by-hop and Connection-named ones, the CORS fields ferry sets itself, X-Accel-Buffering, and
 * Content-Length unless keep_length. */
void headers_filter_response(const struct hdr *h, size_t n, int keep_length, int *keep);

/* Finds the first field called name; returns its index or -1. */
int headers_find(const struct hdr *h, size_t n, const char *name);

/* 1 when name equals want, case-insensitively (want is lower case NUL-terminated). */
int headers_name_is(const char *name, size_t len, const char *want);

#endif
