/* jsonedit — in-place edits of a request's JSON body: the body is checked to be one JSON object,
 * the few members that matter are located by their byte offsets, and the edited copy differs
 * from the original only at one spot, so that what the provider receives is what the client sent
 * plus the one thing ferry needs. Pure: no I/O, no allocation. */
#ifndef FERRY_JSONEDIT_H
#define FERRY_JSONEDIT_H

#include <stddef.h>

/* The most an edit adds to a body: out needs len + JSONEDIT_GROWTH bytes. */
#define JSONEDIT_GROWTH 40
/* Containers nested deeper than this make the body one we do not edit. */
#define JSONEDIT_DEPTH_MAX 1024

/* Makes a chat-completions request that streams also ask for usage. body[0..len) must be one
 * JSON object (whitespace around it allowed). When its "stream" is true and
 * stream_options.include_usage is not, writes an edited copy to out[0..cap), sets *out_len and
 * *injected = 1:
 *   no "stream_options"          "stream_options":{"include_usage":true}, goes right after the
 *                                opening '{' (the object has members, "stream" among them, so
 *                                the comma is always right; nothing past the insertion point
 *                                needs to be found, whatever follows the last member);
 *   "stream_options":null        the null becomes {"include_usage":true};
 *   stream_options without it    "include_usage":true goes right after its '{' (with a comma
 *                                when the object has members);
 *   "include_usage":false/null   the token becomes true.
 * Otherwise (not streamed, or usage already asked for) returns 0 with *injected = 0 and leaves
 * out alone: the body goes as it is. Keys are compared after unescaping ("str\u0065am" is
 * "stream"), only at the top level and in stream_options; a "stream" inside a string or a nested
 * object is not the request's. Duplicate keys: the last one counts, as with the JSON parsers
 * providers run (Python's json, Go's encoding/json, JavaScript's JSON.parse), and the last one is
 * the one edited. Returns -1, with out alone, when the body is not a JSON object, is malformed
 * or nested deeper than JSONEDIT_DEPTH_MAX, has a stream_options or include_usage of another
 * type (the provider refuses it anyway), or the edit does not fit in cap: the caller sends the
 * body unchanged. The caller keeps ownership of body and out. */
int jsonedit_stream_include_usage(const char *body, size_t len, char *out, size_t cap,
                                  size_t *out_len, int *injected);

#endif
