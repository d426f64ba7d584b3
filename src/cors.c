/* cors — preflight answers and the CORS fields of every response (see cors.h). The guard has
 * already refused control bytes, so echoed request values cannot split the response. */
#include "cors.h"

#include <stdio.h>
#include <string.h>

int cors_is_preflight(const char *method, size_t method_len, const struct hdr *h, size_t n)
{
    return method_len == 7 && memcmp(method, "OPTIONS", 7) == 0 &&
           headers_find(h, n, "access-control-request-method") >= 0;
}

size_t cors_preflight_response(char *buf, size_t cap, const struct hdr *h, size_t n, int close)
{
    int m = headers_find(h, n, "access-control-request-method");
    int hd = headers_find(h, n, "access-control-request-headers");
    int len;

    len = snprintf(buf, cap,
                   "HTTP/1.1 204 No Content\r\n"
                   "Access-Control-Allow-Origin: *\r\n"
                   "Access-Control-Allow-Methods: %.*s\r\n"
                   "%s%.*s%s"
                   "Access-Control-Max-Age: %d\r\n"
                   "Vary: Origin, Access-Control-Request-Headers\r\n"
                   "%s\r\n",
                   m >= 0 ? (int)h[m].value_len : 0, m >= 0 ? h[m].value : "",
                   hd >= 0 ? "Access-Control-Allow-Headers: " : "",
                   hd >= 0 ? (int)h[hd].value_len : 0, hd >= 0 ? h[hd].value : "",
                   hd >= 0 ? "\r\n" : "", CORS_MAX_AGE, close ? "Connection: close\r\n" : "");
    if (len < 0 || (size_t)len >= cap)
        return 0;
    return (size_t)len;
}
