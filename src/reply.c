/* reply — relay-generated responses (see reply.h). */
#include "reply.h"

#include <stdio.h>
#include <string.h>

#include "cors.h"

const char *reply_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

void reply_kind(int status, const char **type, const char **code)
{
    *type = status >= 500 ? "relay_error" : "invalid_request_error";
    switch (status) {
    case 400: *code = "bad_request"; break;
    case 401: *code = "invalid_api_key"; break;
    case 403: *code = "key_not_allowed"; break;
    case 404: *code = "no_route"; break;
    case 405: *code = "method_not_allowed"; break;
    case 408: *code = "request_timeout"; break;
    case 413: *code = "request_too_large"; break;
    case 414: *code = "request_line_too_long"; break;
    case 417: *code = "expectation_failed"; break;
    case 431: *code = "headers_too_large"; break;
    case 502: *code = "upstream_unavailable"; break;
    case 503: *code = "relay_unavailable"; break;
    case 504: *code = "upstream_timeout"; break;
    default: *code = "relay_error"; break;
    }
}

static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;

    for (; *s && o + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    return o;
}

size_t reply_error(char *buf, size_t cap, int status, const char *type, const char *code,
                   const char *message, int close, int head_only)
{
    return reply_error_fields(buf, cap, status, type, code, message, close, head_only, NULL);
}

size_t reply_error_fields(char *buf, size_t cap, int status, const char *type, const char *code,
                          const char *message, int close, int head_only, const char *fields)
{
    char msg[512], body[768];
    int blen, len;

    json_escape(msg, 400, message);
    blen = snprintf(body, sizeof(body),
                    "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"param\":null,\"code\":\"%s\"}}\n",
                    msg, type, code);
    if (blen < 0 || (size_t)blen >= sizeof(body))
        blen = 0;
    len = snprintf(buf, cap,
                   "HTTP/1.1 %d %s\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: %d\r\n" CORS_RESPONSE_FIELDS "%s%s"
                   "\r\n%s",
                   status, reply_reason(status), blen, fields ? fields : "",
                   close ? "Connection: close\r\n" : "", head_only ? "" : body);
    if (len < 0 || (size_t)len >= cap)
        return 0;
    return (size_t)len;
}
