/* usage — the usage tap and the usage-chunk filter. The tap reads token counts and the model from
 * a response body as its bytes pass to the client (one JSON document, or an SSE stream of them),
 * with a small streaming JSON scanner that keeps no text: its whole state is struct usage, a
 * fixed size whatever the response. The filter undoes, in what the client sees, the one change
 * ferry makes to a chat stream when it injects stream_options.include_usage (jsonedit.h): the
 * extra usage-only chunk and the "usage":null member of every other chunk. Pure: no I/O. */
#ifndef FERRY_USAGE_H
#define FERRY_USAGE_H

#include <stddef.h>
#include <stdint.h>

#include "sse.h"

enum usage_kind {
    USAGE_CHAT,       /* /v1/chat/completions and the legacy /v1/completions */
    USAGE_EMBEDDINGS, /* /v1/embeddings */
    USAGE_RESPONSES,  /* /v1/responses */
    USAGE_ANTHROPIC,  /* /v1/messages */
};

/* The model is copied up to this many bytes (then model_truncated is set). */
#define USAGE_MODEL_MAX 127
/* Containers nested deeper than this end the scan of that document (it is not trusted). */
#define USAGE_DEPTH_MAX 1024

/* Scanner state of one JSON document (a non-streamed body, or one SSE event's data). Private. */
struct usage_json {
    unsigned char st;      /* enum in usage.c */
    unsigned char str_key; /* the open string is a key */
    unsigned char esc;     /* 0, 1 after '\', 2..5 in the hex digits of \uXXXX */
    unsigned char num_st;  /* number grammar state */
    unsigned char num_int; /* the number so far is a non-negative integer that fits */
    unsigned char lit, lit_i; /* literal being matched and bytes matched */
    unsigned char cap;     /* what the open string is copied into */
    unsigned char key_len, key_esc;
    unsigned char type_len, type_esc;
    unsigned char done_i;  /* bytes of "[DONE]" matched by the payload; 255: not it */
    unsigned short hex;    /* the \uXXXX code unit so far */
    unsigned int depth;
    unsigned int usage_depth;  /* depth of the open usage object, 0 when none */
    uint64_t num;
    uint64_t staged[6];        /* counts read from the open usage object */
    unsigned int present;      /* bit per staged[] slot */
    unsigned char key_at[5];   /* key of the current member at depths 1..4 */
    char key[28];
    char type[24];             /* top-level "type" of the document (stream event kinds) */
    char cap_buf[USAGE_MODEL_MAX + 1];
    size_t cap_len;
    int cap_truncated;
    unsigned char stack[USAGE_DEPTH_MAX / 8]; /* bit per level: 1 object, 0 array */
};

struct usage {
    /* Results: valid at any time, final once the body ended. */
    uint64_t prompt_tokens;     /* all input tokens, cached ones included */
    uint64_t completion_tokens; /* all output tokens, reasoning ones included */
    uint64_t total_tokens;
    uint64_t cached_tokens;     /* input tokens read from the provider's cache */
    uint64_t reasoning_tokens;
    int seen_usage;             /* a usage object with at least one count was read */
    int complete;               /* the body ended as it should (see usage_feed) */
    char model[USAGE_MODEL_MAX + 1]; /* NUL-terminated, UTF-8; "" until seen */
    int model_truncated;
    uint64_t bytes;             /* bytes fed */
    uint64_t events;            /* SSE events dispatched (streams) */

    /* Private. */
    enum usage_kind kind;
    int streaming;
    int model_set;
    uint64_t anthropic[4]; /* input, output, cache read, cache creation: latest values */
    unsigned int anthropic_present;
    struct sse sse;
    struct usage_json js;
};

/* Resets *u for a response of this kind; streaming when the body is an SSE stream (the caller
 * knows from the response's Content-Type: text/event-stream). *u owns no memory: there is
 * nothing to free, and copying it copies the tap. */
void usage_init(struct usage *u, enum usage_kind kind, int streaming);

/* Feeds the response body bytes p[0..n), exactly as they go to the client, split anywhere. Keeps
 * no pointer into p. Never fails: bytes that are not what the kind expects are ignored, and a
 * malformed document stops being read (the next SSE event is read afresh).
 *
 * What is read, per kind (the last usage object read wins; a count absent from it is 0):
 *   chat:       usage.{prompt,completion,total}_tokens, usage.prompt_tokens_details.
 *               cached_tokens, usage.completion_tokens_details.reasoning_tokens. Streams carry
 *               them in the last chunk when stream_options.include_usage was set.
 *   embeddings: usage.prompt_tokens, usage.total_tokens.
 *   responses:  usage (body) or response.usage (stream: the terminal event) .{input,output,
 *               total}_tokens, .input_tokens_details.cached_tokens,
 *               .output_tokens_details.reasoning_tokens.
 *   anthropic:  message.usage (message_start) and usage (message_delta, and the body):
 *               input_tokens, output_tokens, cache_read_input_tokens,
 *               cache_creation_input_tokens, each the latest value seen (Anthropic's counts are
 *               cumulative). prompt_tokens = input + cache read + cache creation (all input, as
 *               OpenAI counts it), cached_tokens = cache read, total = prompt + completion.
 * A total absent from the usage object is prompt + completion. Counts are plain non-negative
 * integers up to 2^53 - 1; anything else is ignored.
 * The model is the first top-level "model" string (response.model, message.model in streams).
 * complete: a stream saw its terminal event (chat, embeddings: "data: [DONE]"; responses:
 * response.completed, response.incomplete or response.failed; anthropic: message_stop); a
 * body is one whole JSON document with nothing but whitespace after it. */
void usage_feed(struct usage *u, const char *p, size_t n);

/* The kind for a request path (query ignored), matched on its last segments so that prefixed
 * routes (/openai/v1/chat/completions) work: chat/completions, completions, embeddings,
 * responses, messages. Returns 0, or -1 when the path is none of them (no usage to read). */
int usage_kind_for_path(const char *path, size_t len, enum usage_kind *kind);

/* ---- the usage-chunk filter ---- */

/* An event longer than this is not held any further: it goes to the client as it is. */
#define USAGE_FILTER_HOLD_MAX 65536

/* Receives client bytes, in order. Returns 0, or non-zero to stop (the filter is then spent). */
typedef int (*usage_filter_out_fn)(void *ud, const char *p, size_t n);

struct usage_filter {
    struct usage *tap; /* fed every upstream byte; not owned; may be NULL */
    /* bytes held back: owned, allocated on demand (256 bytes, doubling), at most hold_max
     * (USAGE_FILTER_HOLD_MAX after init; may be lowered before the first feed) */
    char *hold;
    size_t hold_len, hold_cap, hold_max;
    size_t hold_peak; /* the largest hold_cap reached, for tests and metrics */
    uint64_t dropped_events, removed_members;

    /* Private: where we are in the stream (enums in usage.c). */
    unsigned char line_st, ev_st, tl_st; /* line, event, top-level object */
    unsigned char cr;          /* the last byte was a CR ending a line */
    unsigned char drop_lf;     /* ... ending a dropped event: a following LF goes with it */
    unsigned char bom;         /* bytes of a leading byte order mark; 255 once past */
    unsigned char line;        /* the line has bytes */
    unsigned char field_len;   /* bytes of "data" matched at the start of the line */
    unsigned char lines;       /* non-blank lines in the event (saturates) */
    unsigned char in_str, esc; /* inside a string of a value, after a backslash */
    unsigned char key_i, key_usage, key_choices, key_esc; /* matching a top-level key */
    unsigned char member;      /* which of those the current member's key is */
    unsigned char null_i;      /* bytes of null matched */
    unsigned char members_out; /* a top-level member of this event goes to the client */
    unsigned char pending;       /* a member that may be "usage":null is held from pend on */
    unsigned char pending_first; /* ... and it is the first member (its comma follows it) */
    unsigned char choices_empty, usage_object; /* what makes the usage-only chunk */
    size_t depth; /* containers open in the event's data */
    size_t pend;  /* offset in hold[] where the pending member starts */
    int holding; /* bytes go to hold[] (otherwise out, as runs of the input) */
    int err;     /* the first non-zero out result: the filter is spent */
    /* valid during a feed only (NULL otherwise) */
    const char *in;
    size_t emit_from; /* start of the run of in[] not yet passed to out */
    usage_filter_out_fn out;
    void *ud;
};

/* Resets *f; tap (may be NULL) is fed every byte that usage_filter_feed gets. */
void usage_filter_init(struct usage_filter *f, struct usage *tap);

/* Takes upstream stream bytes in[0..n) of a chat completion for which ferry injected
 * include_usage, feeds them all to the tap, and passes to out what the client would have
 * received without the injection:
 *   - every top-level "usage":null member of an event's first data line is cut out (with the
 *     comma before it, or after it when it is the first member; nothing else changes);
 *   - an event that is one data line holding one object with "choices":[] and a "usage" object
 *     is left out whole, up to and including its blank line.
 * Anything else passes unchanged: other fields, comments, multi-line data, [DONE], malformed
 * JSON, a usage object next to non-empty choices. An event is held back only while it may
 * still be that chunk (up to its "choices", for OpenAI's chunks) or while a "usage":null member
 * may be being read; one that grows past hold_max goes out unchanged from then on. The output
 * does not depend on how the input is split. The bytes out receives during one call total at
 * most usage_filter_held(f) (before the call) + n, in one or more pieces; pointers are valid
 * only during the out call. Returns 0, or the first non-zero result of out (the filter is then
 * spent: only usage_filter_free may follow). */
int usage_filter_feed(struct usage_filter *f, const char *in, size_t n, usage_filter_out_fn out,
                      void *ud);

/* The upstream stream ended (well or not): passes on what is still held, unchanged. Returns 0 or
 * the out result. */
int usage_filter_finish(struct usage_filter *f, usage_filter_out_fn out, void *ud);

/* Bytes held back right now. */
size_t usage_filter_held(const struct usage_filter *f);

/* Frees the hold buffer; *f may be reused after usage_filter_init. */
void usage_filter_free(struct usage_filter *f);

#endif
