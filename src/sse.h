/* sse — an incremental Server-Sent Events splitter (the WHATWG "event stream" grammar). Bytes go
 * in as they arrive, split anywhere; out come, per event, its `event:` name and its `data:`
 * payload as a run of pieces (data_begin, data_bytes..., event_end). It keeps no event text: the
 * state is a few flags, a five-byte field-name prefix and the (bounded) event name, so a stream
 * of any length with data lines of any size costs the same few bytes. No I/O, no allocation. */
#ifndef FERRY_SSE_H
#define FERRY_SSE_H

#include <stddef.h>
#include <stdint.h>

/* Longer event names are cut to this many bytes (and name_truncated is set). */
#define SSE_NAME_MAX 63

/* Every callback may be NULL. Pointers passed to them are valid only during the call. */
struct sse_callbacks {
    /* The event's first data line starts. name[0..len) is the event type seen so far in this
     * event ("" when no event: line came before the data, as in OpenAI's chat streams). */
    void (*data_begin)(void *ud, const char *name, size_t len);
    /* Payload bytes, in order, as they arrive; each data line after the first is preceded by a
     * "\n" piece, so the concatenation is the spec's data buffer. */
    void (*data_bytes)(void *ud, const char *p, size_t n);
    /* The blank line that dispatches the event. name is final (an event: line may come after
     * the data). Called only for events with at least one data line: the spec does not
     * dispatch the others. An event the stream ends in the middle of gets no event_end. */
    void (*event_end)(void *ud, const char *name, size_t len);
};

struct sse {
    /* private scanning state */
    unsigned char state;   /* enum in sse.c */
    unsigned char cr;      /* the last byte was a CR ending a line: a following LF is its pair */
    unsigned char bom;     /* bytes of a leading U+FEFF matched; 255 once past the stream start */
    unsigned char line;    /* the current line has bytes */
    unsigned char has_data; /* the current event has a data line */
    unsigned char field_len; /* bytes of the field name (saturates past 5) */
    char field[5];          /* "data" / "event" are all that matter */
    /* the current event's type */
    char name[SSE_NAME_MAX + 1]; /* NUL-terminated */
    size_t name_len;
    int name_truncated;
    /* counters */
    uint64_t events; /* events dispatched (event_end calls) */
};

/* Resets *s for a new stream. */
void sse_init(struct sse *s);

/* Scans p[0..n) and calls cb as events take shape. Lines may end in CRLF, LF or CR (a CR at the
 * end of one call and an LF at the start of the next are one line end); comments (":...") and
 * the id and retry fields are skipped; a leading byte order mark is skipped. The caller keeps
 * ownership of p; the splitter keeps no pointer into it. */
void sse_feed(struct sse *s, const char *p, size_t n, const struct sse_callbacks *cb, void *ud);

#endif
