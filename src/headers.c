/* headers — hop-by-hop filtering and header list matching (see headers.h). */
#include "headers.h"

#include <string.h>
#include <strings.h>

int headers_name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

int headers_list_has(const char *list, size_t list_len, const char *name, size_t name_len,
                     int wildcards)
{
    size_t i = 0;

    while (i < list_len) {
        size_t s, e;
        while (i < list_len && (list[i] == ',' || list[i] == ' ' || list[i] == '\t'))
            i++;
        s = i;
        while (i < list_len && list[i] != ',')
            i++;
        e = i;
        while (e > s && (list[e - 1] == ' ' || list[e - 1] == '\t'))
            e--;
        if (e == s)
            continue;
        if (wildcards && list[e - 1] == '*') {
            size_t plen = e - 1 - s;
            if (name_len >= plen && strncasecmp(list + s, name, plen) == 0)
                return 1;
        } else if (e - s == name_len && strncasecmp(list + s, name, name_len) == 0) {
            return 1;
        }
    }
    return 0;
}

int headers_hop_by_hop(const char *name, size_t len)
{
    static const char *const hop[] = {"connection", "keep-alive", "te", "trailer",
                                      "transfer-encoding", "upgrade"};

    if (len >= 6 && strncasecmp(name, "proxy-", 6) == 0)
        return 1;
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (headers_name_is(name, len, hop[i]))
            return 1;
    return 0;
}

int headers_connection_scoped(const struct hdr *h, size_t n, size_t i)
{
    if (headers_hop_by_hop(h[i].name, h[i].name_len))
        return 1;
    for (size_t k = 0; k < n; k++)
        if (headers_name_is(h[k].name, h[k].name_len, "connection") &&
            headers_list_has(h[k].value, h[k].value_len, h[i].name, h[i].name_len, 0))
            return 1;
    return 0;
}

void headers_filter_request(const struct hdr *h, size_t n, const char *drop_list, int *keep)
{
    size_t dlen = drop_list ? strlen(drop_list) : 0;

    for (size_t i = 0; i < n; i++) {
        const char *nm = h[i].name;
        size_t len = h[i].name_len;
        keep[i] = !(headers_connection_scoped(h, n, i) || headers_name_is(nm, len, "host") ||
                    headers_name_is(nm, len, "content-length") ||
                    headers_name_is(nm, len, "expect") ||
                    (dlen > 0 && headers_list_has(drop_list, dlen, nm, len, 1)));
    }
}

void headers_filter_response(const struct hdr *h, size_t n, int keep_length, int *keep)
{
    for (size_t i = 0; i < n; i++) {
        const char *nm = h[i].name;
        size_t len = h[i].name_len;
        keep[i] = !(headers_connection_scoped(h, n, i) ||
                    headers_name_is(nm, len, "access-control-allow-origin") ||
                    headers_name_is(nm, len, "access-control-expose-headers") ||
                    headers_name_is(nm, len, "x-accel-buffering") ||
                    (!keep_length && headers_name_is(nm, len, "content-length")));
    }
}

int headers_find(const struct hdr *h, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (headers_name_is(h[i].name, h[i].name_len, name))
            return (int)i;
    return -1;
}
