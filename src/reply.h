/* reply — responses ferry writes itself: errors in OpenAI's JSON shape
 * {"error":{"message","type","param","code"}}, always with the CORS fields, so an SDK or a
 * browser page reports them like any API error. */
#ifndef FERRY_REPLY_H
#define FERRY_REPLY_H

#include <stddef.h>

/* Reason phrase for a status code ("Unknown" if ferry does not know it). */
const char *reply_reason(int status);

/* Writes a complete error response into buf; returns its length, or 0 when it does not fit in
 * cap bytes (a 2 KiB buffer always fits: messages are cut at 400 bytes).
 * type and code are short identifiers; message is free text (JSON-escaped here). */
size_t reply_error(char *buf, size_t cap, int status, const char *type, const char *code,
                   const char *message, int close, int head_only);

/* The same with extra header fields (each "Name: value\r\n"; NULL: none). */
size_t reply_error_fields(char *buf, size_t cap, int status, const char *type, const char *code,
                          const char *message, int close, int head_only, const char *fields);

/* OpenAI-style error type and ferry's code for a relay-generated status. */
void reply_kind(int status, const char **type, const char **code);

#endif
