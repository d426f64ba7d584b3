/* sse — incremental Server-Sent Events splitter (see sse.h). One state machine over bytes: a line
 * is a field name up to ':' then a value; only the name's first five bytes are kept, data values
 * are handed on as runs of the caller's buffer, and event names are copied up to SSE_NAME_MAX. */
#include "sse.h"

#include <string.h>

enum sse_state {
    SSE_FIELD,       /* reading a field name (or nothing yet: an empty line so far) */
    SSE_VALUE_START, /* just after "data:" / "event:": one space there is not part of the value */
    SSE_DATA,        /* in a data value */
    SSE_EVENT,       /* in an event value */
    SSE_IGNORE,      /* in a comment, an id or retry field, or an unknown field */
};

/* What the field name turned out to be. */
enum sse_field { FIELD_OTHER, FIELD_DATA, FIELD_EVENT };

static const char bom_bytes[3] = {'\xef', '\xbb', '\xbf'};

void sse_init(struct sse *s)
{
    memset(s, 0, sizeof(*s));
    s->state = SSE_FIELD;
}

static enum sse_field field_kind(const struct sse *s)
{
    if (s->field_len == 4 && memcmp(s->field, "data", 4) == 0)
        return FIELD_DATA;
    if (s->field_len == 5 && memcmp(s->field, "event", 5) == 0)
        return FIELD_EVENT;
    return FIELD_OTHER;
}

/* A data line starts: the first of its event opens the payload, later ones continue it after a
 * line feed, as the spec joins them. */
static void data_line(struct sse *s, const struct sse_callbacks *cb, void *ud)
{
    if (!s->has_data) {
        s->has_data = 1;
        if (cb->data_begin)
            cb->data_begin(ud, s->name, s->name_len);
    } else if (cb->data_bytes) {
        cb->data_bytes(ud, "\n", 1);
    }
}

/* An event: line replaces the event type. */
static void name_reset(struct sse *s)
{
    s->name_len = 0;
    s->name[0] = '\0';
    s->name_truncated = 0;
}

static void name_append(struct sse *s, const char *p, size_t n)
{
    size_t room = SSE_NAME_MAX - s->name_len;

    if (n > room) {
        n = room;
        s->name_truncated = 1;
    }
    memcpy(s->name + s->name_len, p, n);
    s->name_len += n;
    s->name[s->name_len] = '\0';
}

/* The end of a line (its terminator already consumed). */
static void line_end(struct sse *s, const struct sse_callbacks *cb, void *ud)
{
    if (s->state == SSE_FIELD && !s->line) {
        /* A blank line dispatches the event, if it has data; either way the type resets. */
        if (s->has_data) {
            s->events++;
            if (cb->event_end)
                cb->event_end(ud, s->name, s->name_len);
        }
        s->has_data = 0;
        name_reset(s);
    } else if (s->state == SSE_FIELD) {
        /* A field name alone: its value is empty. */
        enum sse_field f = field_kind(s);
        if (f == FIELD_DATA)
            data_line(s, cb, ud);
        else if (f == FIELD_EVENT)
            name_reset(s);
    }
    s->state = SSE_FIELD;
    s->line = 0;
    s->field_len = 0;
}

/* Length of the run p[0..n) that holds no line terminator. */
static size_t run_to_eol(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && p[i] != '\n' && p[i] != '\r')
        i++;
    return i;
}

void sse_feed(struct sse *s, const char *p, size_t n, const struct sse_callbacks *cb, void *ud)
{
    size_t i = 0;

    while (i < n) {
        char c = p[i];

        if (s->bom < 3) {
            /* A U+FEFF at the very start of the stream is not part of the first line. */
            if (c == bom_bytes[s->bom]) {
                s->bom++;
                i++;
                continue;
            }
            if (s->bom > 0) {
                /* Part of a BOM, then something else: those bytes begin a field name that
                 * cannot be one we know. */
                s->line = 1;
                s->field_len = sizeof(s->field) + 1;
            }
            s->bom = 255;
        } else if (s->bom != 255) {
            s->bom = 255;
        }
        if (s->cr) {
            s->cr = 0;
            if (c == '\n') {
                i++;
                continue;
            }
        }
        if (c == '\r' || c == '\n') {
            line_end(s, cb, ud);
            s->cr = (c == '\r');
            i++;
            continue;
        }
        switch (s->state) {
        case SSE_FIELD:
            if (c == ':') {
                enum sse_field f = s->line ? field_kind(s) : FIELD_OTHER;
                if (f == FIELD_DATA) {
                    data_line(s, cb, ud);
                    s->state = SSE_VALUE_START;
                } else if (f == FIELD_EVENT) {
                    name_reset(s);
                    s->state = SSE_VALUE_START;
                } else {
                    s->state = SSE_IGNORE; /* a comment, id, retry or unknown field */
                }
                s->line = 1;
                i++;
                break;
            }
            if (s->field_len < sizeof(s->field))
                s->field[s->field_len] = c;
            if (s->field_len <= sizeof(s->field))
                s->field_len++;
            s->line = 1;
            i++;
            break;
        case SSE_VALUE_START:
            /* field_len still says which field this is */
            s->state = field_kind(s) == FIELD_DATA ? SSE_DATA : SSE_EVENT;
            if (c == ' ')
                i++;
            break;
        case SSE_DATA: {
            size_t run = run_to_eol(p + i, n - i);
            if (cb->data_bytes)
                cb->data_bytes(ud, p + i, run);
            i += run;
            break;
        }
        case SSE_EVENT: {
            size_t run = run_to_eol(p + i, n - i);
            name_append(s, p + i, run);
            i += run;
            break;
        }
        case SSE_IGNORE:
            i += run_to_eol(p + i, n - i);
            break;
        }
    }
}
