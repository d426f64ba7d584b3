/* cors — what makes ferry usable from a browser page on any origin: the preflight answer
 * (OPTIONS with Access-Control-Request-Method, never relayed) and the fields added to every
 * response, relayed or generated. */
#ifndef FERRY_CORS_H
#define FERRY_CORS_H

#include <stddef.h>

#include "headers.h"

/* Fields added to every response ferry sends, each line CRLF-terminated. */
#define CORS_RESPONSE_FIELDS                                                                       \
    "Access-Control-Allow-Origin: *\r\n"                                                           \
    "Access-Control-Expose-Headers: x-request-id, x-ratelimit-limit-requests, "                    \
    "x-ratelimit-limit-tokens, x-ratelimit-remaining-requests, x-ratelimit-remaining-tokens, "     \
    "x-ratelimit-reset-requests, x-ratelimit-reset-tokens, retry-after, retry-after-ms, "          \
    "openai-processing-ms, openai-version, openai-organization, *\r\n"

#define CORS_MAX_AGE 86400

/* 1 when the request (method + its fields) is a CORS preflight. */
int cors_is_preflight(const char *method, size_t method_len, const struct hdr *h, size_t n);

/* Writes the complete 204 preflight answer into buf (cap bytes). Returns its length, or 0 if it
 * does not fit. close adds Connection: close. */
size_t cors_preflight_response(char *buf, size_t cap, const struct hdr *h, size_t n, int close);

#endif
