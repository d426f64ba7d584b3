/* usage — the usage tap and the usage-chunk filter (see usage.h). The tap is a strict streaming
 * JSON scanner driven byte by byte: a bit stack of container types, the key of the current member
 * at the four levels where counts live, numbers accumulated as their digits pass, and strings
 * skipped unless they are a short key, the model or a stream event's type. Counts are staged
 * while a usage object is open and applied when it closes, so a document cut short never applies
 * half an object. The filter is a second, smaller machine over the raw stream bytes: it needs
 * only where each event starts and ends and the shape of the top-level members of its data. */
#include "usage.h"

#include <stdlib.h>
#include <string.h>

/* ---- the tap: JSON scanner ---- */

enum json_state {
    J_VALUE,          /* a value is due */
    J_VALUE_OR_CLOSE, /* after '[' */
    J_KEY_OR_CLOSE,   /* after '{' */
    J_KEY,            /* after ',' in an object */
    J_COLON,
    J_AFTER, /* after a value inside a container: ',' or the close */
    J_STR,
    J_NUM,
    J_LIT,
    J_DONE, /* the top-level value closed; only whitespace may follow */
    J_ERR,  /* not JSON: the rest of this document is ignored */
};

enum num_state { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };

enum capture { CAP_NONE, CAP_MODEL, CAP_TYPE };

/* Keys that matter somewhere on a path to a count, the model or an event type. */
enum key_id {
    K_OTHER,
    K_ARRAY, /* the level is an array: nothing below it is looked at */
    K_USAGE,
    K_MODEL,
    K_TYPE,
    K_RESPONSE,
    K_MESSAGE,
    K_PROMPT_TOKENS,
    K_COMPLETION_TOKENS,
    K_TOTAL_TOKENS,
    K_INPUT_TOKENS,
    K_OUTPUT_TOKENS,
    K_CACHED_TOKENS,
    K_REASONING_TOKENS,
    K_PROMPT_DETAILS,
    K_COMPLETION_DETAILS,
    K_INPUT_DETAILS,
    K_OUTPUT_DETAILS,
    K_CACHE_READ,
    K_CACHE_CREATION,
};

static const struct {
    const char *name;
    unsigned char len;
    enum key_id id;
} keys[] = {
    {"usage", 5, K_USAGE},
    {"model", 5, K_MODEL},
    {"type", 4, K_TYPE},
    {"response", 8, K_RESPONSE},
    {"message", 7, K_MESSAGE},
    {"prompt_tokens", 13, K_PROMPT_TOKENS},
    {"completion_tokens", 17, K_COMPLETION_TOKENS},
    {"total_tokens", 12, K_TOTAL_TOKENS},
    {"input_tokens", 12, K_INPUT_TOKENS},
    {"output_tokens", 13, K_OUTPUT_TOKENS},
    {"cached_tokens", 13, K_CACHED_TOKENS},
    {"reasoning_tokens", 16, K_REASONING_TOKENS},
    {"prompt_tokens_details", 21, K_PROMPT_DETAILS},
    {"completion_tokens_details", 25, K_COMPLETION_DETAILS},
    {"input_tokens_details", 20, K_INPUT_DETAILS},
    {"output_tokens_details", 21, K_OUTPUT_DETAILS},
    {"cache_read_input_tokens", 23, K_CACHE_READ},
    {"cache_creation_input_tokens", 27, K_CACHE_CREATION},
};

/* Slots of usage_json.staged (Anthropic reads input/output/cache read/cache creation into
 * PROMPT/COMPLETION/CACHED/CACHE_CREATION). */
enum slot { S_PROMPT, S_COMPLETION, S_TOTAL, S_CACHED, S_REASONING, S_CACHE_CREATION };

/* Largest count taken: 2^53 - 1, so that sums of a few stay exact and fit. */
#define COUNT_MAX 9007199254740991ull

/* Key levels kept: a count sits at most at response.usage.input_tokens_details.cached_tokens. */
#define KEY_LEVELS 4

static const char done_marker[] = "[DONE]";
static const char *const literals[3] = {"true", "false", "null"};

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void json_reset(struct usage_json *js)
{
    memset(js, 0, sizeof(*js));
    js->st = J_VALUE;
}

static int top_is_object(const struct usage_json *js)
{
    unsigned int d = js->depth - 1;
    return js->depth > 0 && (js->stack[d / 8] >> (d % 8)) & 1;
}

/* The key of the current member at depth d (1-based), or K_OTHER past the kept levels. */
static enum key_id key_at(const struct usage_json *js, unsigned int d)
{
    return d >= 1 && d <= KEY_LEVELS ? (enum key_id)js->key_at[d] : K_OTHER;
}

static void fail(struct usage_json *js)
{
    js->st = J_ERR;
    js->usage_depth = 0; /* a half-read usage object is never applied */
}

/* Where the usage object may sit for this kind: at the top level, or one level down in the
 * stream events that wrap a whole response (Responses API) or message (Anthropic). */
static int is_usage_parent(const struct usage *u, unsigned int parent_depth)
{
    const struct usage_json *js = &u->js;

    if (parent_depth == 1)
        return key_at(js, 1) == K_USAGE;
    if (parent_depth == 2 && key_at(js, 2) == K_USAGE) {
        if (u->kind == USAGE_RESPONSES)
            return key_at(js, 1) == K_RESPONSE;
        if (u->kind == USAGE_ANTHROPIC)
            return key_at(js, 1) == K_MESSAGE;
    }
    return 0;
}

/* The same places for the model. */
static int is_model_place(const struct usage *u, unsigned int depth)
{
    const struct usage_json *js = &u->js;

    if (depth == 1)
        return key_at(js, 1) == K_MODEL;
    if (depth == 2 && key_at(js, 2) == K_MODEL) {
        if (u->kind == USAGE_RESPONSES)
            return key_at(js, 1) == K_RESPONSE;
        if (u->kind == USAGE_ANTHROPIC)
            return key_at(js, 1) == K_MESSAGE;
    }
    return 0;
}

static void push(struct usage *u, int object)
{
    struct usage_json *js = &u->js;
    unsigned int d = js->depth;

    if (d >= USAGE_DEPTH_MAX) {
        fail(js);
        return;
    }
    if (object)
        js->stack[d / 8] |= (unsigned char)(1u << (d % 8));
    else
        js->stack[d / 8] &= (unsigned char)~(1u << (d % 8));
    js->depth = d + 1;
    if (js->depth <= KEY_LEVELS)
        js->key_at[js->depth] = object ? K_OTHER : K_ARRAY;
    if (object && js->usage_depth == 0 && is_usage_parent(u, d)) {
        js->usage_depth = js->depth;
        js->present = 0;
    }
    js->st = object ? J_KEY_OR_CLOSE : J_VALUE_OR_CLOSE;
}

/* A usage object closed: its counts become the result. */
static void apply_usage(struct usage *u)
{
    struct usage_json *js = &u->js;
    unsigned int p = js->present;
    uint64_t *s = js->staged;

    if (p == 0)
        return;
    u->seen_usage = 1;
    if (u->kind == USAGE_ANTHROPIC) {
        static const enum slot from[4] = {S_PROMPT, S_COMPLETION, S_CACHED, S_CACHE_CREATION};
        for (int i = 0; i < 4; i++)
            if (p & (1u << from[i])) {
                u->anthropic[i] = s[from[i]];
                u->anthropic_present |= 1u << i;
            }
        u->prompt_tokens = u->anthropic[0] + u->anthropic[2] + u->anthropic[3];
        u->completion_tokens = u->anthropic[1];
        u->cached_tokens = u->anthropic[2];
        u->reasoning_tokens = 0;
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
        return;
    }
    u->prompt_tokens = p & (1u << S_PROMPT) ? s[S_PROMPT] : 0;
    u->completion_tokens = p & (1u << S_COMPLETION) ? s[S_COMPLETION] : 0;
    u->cached_tokens = p & (1u << S_CACHED) ? s[S_CACHED] : 0;
    u->reasoning_tokens = p & (1u << S_REASONING) ? s[S_REASONING] : 0;
    u->total_tokens =
        p & (1u << S_TOTAL) ? s[S_TOTAL] : u->prompt_tokens + u->completion_tokens;
}

/* A value ended at the current depth. */
static void value_end(struct usage_json *js)
{
    js->st = js->depth == 0 ? J_DONE : J_AFTER;
}

static void pop(struct usage *u, int object)
{
    struct usage_json *js = &u->js;

    if (js->depth == 0 || top_is_object(js) != object) {
        fail(js);
        return;
    }
    if (object && js->depth == js->usage_depth) {
        apply_usage(u);
        js->usage_depth = 0;
    }
    js->depth--;
    value_end(js);
}

/* Which staged slot a count at depth d (in an object, under key k) goes to, or -1. */
static int count_slot(const struct usage *u, unsigned int d)
{
    const struct usage_json *js = &u->js;
    unsigned int base = js->usage_depth;
    enum key_id k = key_at(js, d);

    if (base == 0)
        return -1;
    if (d == base) {
        switch (u->kind) {
        case USAGE_CHAT:
        case USAGE_EMBEDDINGS:
            if (k == K_PROMPT_TOKENS)
                return S_PROMPT;
            if (k == K_COMPLETION_TOKENS)
                return S_COMPLETION;
            if (k == K_TOTAL_TOKENS)
                return S_TOTAL;
            return -1;
        case USAGE_RESPONSES:
            if (k == K_INPUT_TOKENS)
                return S_PROMPT;
            if (k == K_OUTPUT_TOKENS)
                return S_COMPLETION;
            if (k == K_TOTAL_TOKENS)
                return S_TOTAL;
            return -1;
        case USAGE_ANTHROPIC:
            if (k == K_INPUT_TOKENS)
                return S_PROMPT;
            if (k == K_OUTPUT_TOKENS)
                return S_COMPLETION;
            if (k == K_CACHE_READ)
                return S_CACHED;
            if (k == K_CACHE_CREATION)
                return S_CACHE_CREATION;
            return -1;
        }
        return -1;
    }
    if (d == base + 1 && u->kind != USAGE_ANTHROPIC) {
        enum key_id parent = key_at(js, base);
        if (k == K_CACHED_TOKENS && (parent == K_PROMPT_DETAILS || parent == K_INPUT_DETAILS))
            return S_CACHED;
        if (k == K_REASONING_TOKENS &&
            (parent == K_COMPLETION_DETAILS || parent == K_OUTPUT_DETAILS))
            return S_REASONING;
    }
    return -1;
}

static void number_end(struct usage *u)
{
    struct usage_json *js = &u->js;
    int slot;

    if (js->num_int && top_is_object(js)) {
        slot = count_slot(u, js->depth);
        if (slot >= 0) {
            js->staged[slot] = js->num;
            js->present |= 1u << slot;
        }
    }
    value_end(js);
}

static enum key_id key_lookup(const struct usage_json *js)
{
    if (js->key_esc || js->key_len > sizeof(js->key))
        return K_OTHER;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (keys[i].len == js->key_len && memcmp(keys[i].name, js->key, js->key_len) == 0)
            return keys[i].id;
    return K_OTHER;
}

/* Appends k bytes of the model, whole or not at all. */
static void cap_put(struct usage_json *js, const char *p, size_t k)
{
    if (js->cap_truncated)
        return;
    if (js->cap_len + k > USAGE_MODEL_MAX) {
        js->cap_truncated = 1;
        return;
    }
    memcpy(js->cap_buf + js->cap_len, p, k);
    js->cap_len += k;
}

/* One decoded character of the model: control characters become '?', so that a model name can go
 * into a log line or a database column as it is. */
static void cap_code(struct usage_json *js, unsigned int cp)
{
    char b[3];

    if (cp < 0x20 || cp == 0x7f || (cp >= 0xd800 && cp <= 0xdfff)) {
        cap_put(js, "?", 1);
    } else if (cp < 0x80) {
        b[0] = (char)cp;
        cap_put(js, b, 1);
    } else if (cp < 0x800) {
        b[0] = (char)(0xc0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3f));
        cap_put(js, b, 2);
    } else {
        b[0] = (char)(0xe0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (char)(0x80 | (cp & 0x3f));
        cap_put(js, b, 3);
    }
}

/* The model string closed: keep it (cut at a character boundary if it was too long). */
static void model_done(struct usage *u)
{
    struct usage_json *js = &u->js;
    size_t n = js->cap_len, j = n;

    if (n == 0)
        return; /* Azure's first chunk says "model":"": the real one comes later */
    if (js->cap_truncated) {
        while (j > 0 && n - j < 3 && ((unsigned char)js->cap_buf[j - 1] & 0xc0) == 0x80)
            j--;
        if (j > 0 && (unsigned char)js->cap_buf[j - 1] >= 0xc0) {
            unsigned char lead = (unsigned char)js->cap_buf[j - 1];
            size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
            if (n - (j - 1) < need)
                n = j - 1;
        }
    }
    memcpy(u->model, js->cap_buf, n);
    u->model[n] = '\0';
    u->model_truncated = js->cap_truncated;
    u->model_set = 1;
}

/* Copies a run of raw string bytes into a short buffer whose length saturates one past its size
 * (so that a longer string never matches). */
static void run_copy(char *buf, size_t size, unsigned char *len, const char *p, size_t n)
{
    size_t have = *len;

    if (have < size)
        memcpy(buf + have, p, n < size - have ? n : size - have);
    *len = (unsigned char)(have + n > size ? size + 1 : have + n);
}

/* A raw (unescaped) string byte of the model. */
static void str_byte(struct usage_json *js, unsigned char c)
{
    if (c == 0x7f)
        cap_put(js, "?", 1);
    else
        cap_put(js, (const char *)&c, 1);
}

/* An escaped character (decoded code unit). */
static void str_escaped(struct usage_json *js, unsigned int cp)
{
    if (js->str_key)
        js->key_esc = 1; /* no key we look for is written with escapes */
    else if (js->cap == CAP_MODEL)
        cap_code(js, cp);
    else if (js->cap == CAP_TYPE)
        js->type_esc = 1;
}

static void str_end(struct usage *u)
{
    struct usage_json *js = &u->js;

    if (js->str_key) {
        unsigned int d = js->depth;
        if (d <= KEY_LEVELS)
            js->key_at[d] = (unsigned char)key_lookup(js);
        js->st = J_COLON;
        return;
    }
    if (js->cap == CAP_MODEL)
        model_done(u);
    js->cap = CAP_NONE;
    value_end(js);
}

/* The first byte of a value. */
static void value_start(struct usage *u, unsigned char c)
{
    struct usage_json *js = &u->js;

    switch (c) {
    case '{': push(u, 1); return;
    case '[': push(u, 0); return;
    case '"':
        js->st = J_STR;
        js->str_key = 0;
        js->esc = 0;
        js->cap = CAP_NONE;
        if (top_is_object(js)) {
            if (!u->model_set && is_model_place(u, js->depth)) {
                js->cap = CAP_MODEL;
                js->cap_len = 0;
                js->cap_truncated = 0;
            } else if (js->depth == 1 && key_at(js, 1) == K_TYPE) {
                js->cap = CAP_TYPE;
                js->type_len = 0;
                js->type_esc = 0;
            }
        }
        return;
    case 't': js->lit = 0; break;
    case 'f': js->lit = 1; break;
    case 'n': js->lit = 2; break;
    case '-':
        js->st = J_NUM;
        js->num_st = N_MINUS;
        js->num_int = 0; /* a negative count is no count */
        js->num = 0;
        return;
    default:
        if (c >= '0' && c <= '9') {
            js->st = J_NUM;
            js->num_st = c == '0' ? N_ZERO : N_INT;
            js->num_int = 1;
            js->num = (uint64_t)(c - '0');
            return;
        }
        fail(js);
        return;
    }
    js->st = J_LIT;
    js->lit_i = 1;
}

/* One number byte; returns 0 when c is not part of the number (the number ended before it). */
static int number_byte(struct usage_json *js, unsigned char c)
{
    int digit = c >= '0' && c <= '9';

    switch (js->num_st) {
    case N_MINUS:
        if (!digit)
            break;
        js->num_st = c == '0' ? N_ZERO : N_INT;
        return 1;
    case N_ZERO:
    case N_INT:
        if (digit && js->num_st == N_INT) {
            if (js->num_int) {
                if (js->num > (COUNT_MAX - (uint64_t)(c - '0')) / 10)
                    js->num_int = 0;
                else
                    js->num = js->num * 10 + (uint64_t)(c - '0');
            }
            return 1;
        }
        if (c == '.') {
            js->num_st = N_DOT;
            js->num_int = 0;
            return 1;
        }
        if (c == 'e' || c == 'E') {
            js->num_st = N_E;
            js->num_int = 0;
            return 1;
        }
        return 0;
    case N_DOT:
        if (!digit)
            break;
        js->num_st = N_FRAC;
        return 1;
    case N_FRAC:
        if (digit)
            return 1;
        if (c == 'e' || c == 'E') {
            js->num_st = N_E;
            return 1;
        }
        return 0;
    case N_E:
        if (c == '+' || c == '-') {
            js->num_st = N_ESIGN;
            return 1;
        }
        if (!digit)
            break;
        js->num_st = N_EXP;
        return 1;
    case N_ESIGN:
        if (!digit)
            break;
        js->num_st = N_EXP;
        return 1;
    case N_EXP:
        return digit ? 1 : 0;
    }
    fail(js); /* a sign, dot or exponent without its digits */
    return 1;
}

static void json_feed(struct usage *u, const char *p, size_t n)
{
    struct usage_json *js = &u->js;
    size_t i = 0;

    while (i < n) {
        unsigned char c = (unsigned char)p[i];

        switch (js->st) {
        case J_ERR:
            return;
        case J_DONE:
            if (!is_ws(c)) {
                fail(js);
                return;
            }
            break;
        case J_VALUE:
            if (!is_ws(c))
                value_start(u, c);
            break;
        case J_VALUE_OR_CLOSE:
            if (c == ']')
                pop(u, 0);
            else if (!is_ws(c))
                value_start(u, c);
            break;
        case J_KEY_OR_CLOSE:
        case J_KEY:
            if (is_ws(c))
                break;
            if (c == '}' && js->st == J_KEY_OR_CLOSE) {
                pop(u, 1);
            } else if (c == '"') {
                js->st = J_STR;
                js->str_key = 1;
                js->esc = 0;
                js->key_len = 0;
                js->key_esc = 0;
            } else {
                fail(js);
            }
            break;
        case J_COLON:
            if (c == ':')
                js->st = J_VALUE;
            else if (!is_ws(c))
                fail(js);
            break;
        case J_AFTER:
            if (is_ws(c))
                break;
            if (c == ',')
                js->st = top_is_object(js) ? J_KEY : J_VALUE;
            else if (c == '}' || c == ']')
                pop(u, c == '}');
            else
                fail(js);
            break;
        case J_STR:
            if (js->esc == 1) {
                static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
                const char *e = c ? strchr(from, c) : NULL;
                if (c == 'u') {
                    js->esc = 2;
                    js->hex = 0;
                } else if (e != NULL) {
                    js->esc = 0;
                    str_escaped(js, (unsigned char)to[e - from]);
                } else {
                    fail(js);
                }
            } else if (js->esc >= 2) {
                int v = hex_value(c);
                if (v < 0) {
                    fail(js);
                    break;
                }
                js->hex = (unsigned short)(js->hex << 4 | (unsigned int)v);
                if (++js->esc == 6) {
                    js->esc = 0;
                    str_escaped(js, js->hex);
                }
            } else if (c == '"') {
                str_end(u);
            } else if (c == '\\') {
                js->esc = 1;
            } else if (c < 0x20) {
                fail(js);
            } else if (js->cap != CAP_MODEL) {
                /* The bulk of any response: content strings, skipped without a look; keys and
                 * types are copied as far as they fit. */
                size_t j = i + 1;
                while (j < n && p[j] != '"' && p[j] != '\\' && (unsigned char)p[j] >= 0x20)
                    j++;
                if (js->str_key)
                    run_copy(js->key, sizeof(js->key), &js->key_len, p + i, j - i);
                else if (js->cap == CAP_TYPE)
                    run_copy(js->type, sizeof(js->type), &js->type_len, p + i, j - i);
                i = j;
                continue;
            } else {
                str_byte(js, c);
            }
            break;
        case J_NUM:
            if (!number_byte(js, c)) {
                number_end(u);
                continue; /* c belongs to what follows the number */
            }
            break;
        case J_LIT:
            if (c != (unsigned char)literals[js->lit][js->lit_i]) {
                fail(js);
                break;
            }
            if (literals[js->lit][++js->lit_i] == '\0')
                value_end(js);
            break;
        }
        i++;
    }
}

/* ---- the tap: SSE events ---- */

static void on_data_begin(void *ud, const char *name, size_t len)
{
    struct usage *u = ud;
    json_reset(&u->js);
}

static void on_data_bytes(void *ud, const char *p, size_t n)
{
    struct usage *u = ud;
    struct usage_json *js = &u->js;

    for (size_t i = 0; i < n && js->done_i != 255; i++) {
        if (js->done_i < sizeof(done_marker) - 1 && p[i] == done_marker[js->done_i])
            js->done_i++;
        else
            js->done_i = 255;
    }
    json_feed(u, p, n);
}

static int is_name(const char *p, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(p, want, len) == 0;
}

/* 1 when an event called name (or typed so) ends a stream of this kind. */
static int is_terminal(const struct usage *u, const char *name, size_t len)
{
    switch (u->kind) {
    case USAGE_RESPONSES:
        return is_name(name, len, "response.completed") ||
               is_name(name, len, "response.incomplete") || is_name(name, len, "response.failed");
    case USAGE_ANTHROPIC:
        return is_name(name, len, "message_stop");
    case USAGE_CHAT:
    case USAGE_EMBEDDINGS:
        break;
    }
    return 0;
}

static void on_event_end(void *ud, const char *name, size_t len)
{
    struct usage *u = ud;
    struct usage_json *js = &u->js;

    u->events++;
    if (u->kind == USAGE_CHAT || u->kind == USAGE_EMBEDDINGS) {
        if (js->done_i == sizeof(done_marker) - 1)
            u->complete = 1;
        return;
    }
    if (is_terminal(u, name, len))
        u->complete = 1;
    else if (js->st == J_DONE && !js->type_esc && js->type_len <= sizeof(js->type) &&
             is_terminal(u, js->type, js->type_len))
        u->complete = 1;
}

static const struct sse_callbacks tap_events = {
    .data_begin = on_data_begin,
    .data_bytes = on_data_bytes,
    .event_end = on_event_end,
};

void usage_init(struct usage *u, enum usage_kind kind, int streaming)
{
    memset(u, 0, sizeof(*u));
    u->kind = kind;
    u->streaming = streaming;
    sse_init(&u->sse);
    json_reset(&u->js);
}

void usage_feed(struct usage *u, const char *p, size_t n)
{
    u->bytes += n;
    if (u->streaming) {
        sse_feed(&u->sse, p, n, &tap_events, u);
        return;
    }
    json_feed(u, p, n);
    u->complete = u->js.st == J_DONE;
}

static int path_ends_with(const char *p, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && memcmp(p + len - n, suffix, n) == 0;
}

int usage_kind_for_path(const char *path, size_t len, enum usage_kind *kind)
{
    const char *q = memchr(path, '?', len);

    if (q != NULL)
        len = (size_t)(q - path);
    if (path_ends_with(path, len, "/completions"))
        *kind = USAGE_CHAT; /* chat/completions and the legacy completions alike */
    else if (path_ends_with(path, len, "/embeddings"))
        *kind = USAGE_EMBEDDINGS;
    else if (path_ends_with(path, len, "/responses"))
        *kind = USAGE_RESPONSES;
    else if (path_ends_with(path, len, "/messages"))
        *kind = USAGE_ANTHROPIC;
    else
        return -1;
    return 0;
}

/* ---- the usage-chunk filter ---- */

/* Where in a line. */
enum line_state {
    L_FIELD,       /* the field name (or nothing yet) */
    L_VALUE_START, /* just after "data:" */
    L_DATA,        /* in the payload of the event's first data line */
    L_OTHER,       /* the rest of any other line */
};

/* What is done with the current event. */
enum event_state {
    E_IDLE,   /* between events */
    E_CAND,   /* it may still be the usage-only chunk: every byte is held */
    E_STREAM, /* it is not: bytes go out, except a "usage":null member being read */
    E_PASS,   /* nothing more to do in this event: bytes go out as they are */
};

/* Where in the top-level object of the first data line. */
enum top_state {
    T_START,         /* the '{' is due */
    T_KEY_OR_END,    /* after '{' (or after a first member that was cut with its comma) */
    T_KEY_START,     /* after a ',' */
    T_KEY,           /* in a top-level key */
    T_COLON,
    T_VALUE,         /* a member's value is due */
    T_NULL,          /* reading the null of a "usage" member */
    T_AFTER_NULL,    /* after that null: the ',' or '}' decides */
    T_IN_VALUE,      /* inside any other value, strings and nesting counted */
    T_CHOICES_OPEN,  /* after "choices":[ */
    T_SKIP,          /* after a cut first member and its comma: whitespace up to the next key */
    T_DONE,          /* after the closing '}' */
    T_BAD,           /* not an object we understand: no more edits */
};

enum member { M_OTHER, M_USAGE, M_CHOICES };

/* What becomes of a byte. */
enum disposition { KEEP, DROP };

static void filter_reset_event(struct usage_filter *f)
{
    f->ev_st = E_IDLE;
    f->tl_st = T_START;
    f->lines = 0;
    f->in_str = f->esc = 0;
    f->key_i = f->key_usage = f->key_choices = f->key_esc = 0;
    f->member = M_OTHER;
    f->null_i = 0;
    f->members_out = 0;
    f->pending = f->pending_first = 0;
    f->choices_empty = f->usage_object = 0;
    f->depth = 0;
    f->pend = 0;
}

void usage_filter_init(struct usage_filter *f, struct usage *tap)
{
    memset(f, 0, sizeof(*f));
    f->tap = tap;
    f->hold_max = USAGE_FILTER_HOLD_MAX;
    f->line_st = L_FIELD;
    filter_reset_event(f);
}

size_t usage_filter_held(const struct usage_filter *f)
{
    return f->hold_len;
}

void usage_filter_free(struct usage_filter *f)
{
    free(f->hold);
    f->hold = NULL;
    f->hold_len = 0;
    f->hold_cap = 0;
}

static void emit(struct usage_filter *f, const char *p, size_t n)
{
    int rc;

    if (n == 0 || f->err)
        return;
    rc = f->out(f->ud, p, n);
    if (rc != 0)
        f->err = rc;
}

/* Passes on what is held, in order, before anything that follows. */
static void release_all(struct usage_filter *f)
{
    emit(f, f->hold, f->hold_len);
    f->hold_len = 0;
    f->pend = 0;
}

/* The event will not be edited any further. */
static void to_pass(struct usage_filter *f)
{
    f->ev_st = E_PASS;
    f->tl_st = T_BAD;
    f->pending = 0;
}

/* The event is not the usage-only chunk (it may still lose a "usage":null member). */
static void not_candidate(struct usage_filter *f)
{
    if (f->ev_st == E_CAND)
        f->ev_st = E_STREAM;
}

/* A top-level member that is being held turned out to be one the client gets. */
static void pending_keep(struct usage_filter *f)
{
    if (f->pending) {
        f->pending = 0;
        f->members_out = 1;
    }
}

/* A "usage":null member is cut: what was held since it started goes. */
static void pending_cut(struct usage_filter *f)
{
    f->hold_len = f->pend;
    f->pending = 0;
    f->removed_members++;
    not_candidate(f); /* the usage-only chunk has a usage object, not null */
}

static void pending_start(struct usage_filter *f, int first)
{
    f->pend = f->hold_len;
    f->pending = 1;
    f->pending_first = (unsigned char)first;
}

static void key_start(struct usage_filter *f)
{
    f->tl_st = T_KEY;
    f->key_i = 0;
    f->key_usage = 1;
    f->key_choices = 1;
    f->key_esc = 0;
}

/* One byte inside a value: strings and nesting are followed only to find where it ends. */
static enum disposition in_value(struct usage_filter *f, unsigned char c)
{
    if (f->in_str) {
        if (f->esc)
            f->esc = 0;
        else if (c == '\\')
            f->esc = 1;
        else if (c == '"')
            f->in_str = 0;
        return KEEP;
    }
    switch (c) {
    case '"': f->in_str = 1; break;
    case '{':
    case '[': f->depth++; break;
    case ']':
    case '}':
        if (f->depth > 1) {
            f->depth--;
        } else if (c == '}') {
            f->depth = 0;
            f->tl_st = T_DONE;
        } else {
            to_pass(f);
        }
        break;
    case ',':
        if (f->depth == 1) {
            pending_start(f, 0); /* the comma goes with the member it introduces */
            f->tl_st = T_KEY_START;
        }
        break;
    default: break;
    }
    return KEEP;
}

/* One payload byte of the event's first data line. */
static enum disposition top_byte(struct usage_filter *f, unsigned char c)
{
    int ws = c == ' ' || c == '\t';

    switch (f->tl_st) {
    case T_START:
        if (ws)
            return KEEP;
        if (c == '{') {
            f->depth = 1;
            f->tl_st = T_KEY_OR_END;
        } else {
            to_pass(f); /* [DONE], or anything but an object */
        }
        return KEEP;
    case T_SKIP:
        if (ws)
            return DROP;
        f->tl_st = T_KEY_OR_END;
        /* fall through */
    case T_KEY_OR_END:
        if (ws)
            return KEEP;
        if (c == '"') {
            if (!f->members_out)
                pending_start(f, 1);
            key_start(f);
        } else if (c == '}') {
            f->depth = 0;
            f->tl_st = T_DONE;
        } else {
            to_pass(f);
        }
        return KEEP;
    case T_KEY_START:
        if (ws)
            return KEEP;
        if (c == '"')
            key_start(f);
        else
            to_pass(f);
        return KEEP;
    case T_KEY:
        if (f->key_esc) {
            f->key_esc = 0;
        } else if (c == '\\') {
            f->key_esc = 1;
            f->key_usage = f->key_choices = 0; /* the keys are never written with escapes */
        } else if (c == '"') {
            f->member = f->key_usage && f->key_i == 5     ? M_USAGE
                        : f->key_choices && f->key_i == 7 ? M_CHOICES
                                                          : M_OTHER;
            if (f->member != M_USAGE)
                pending_keep(f);
            f->tl_st = T_COLON;
            return KEEP;
        } else {
            f->key_usage = f->key_usage && f->key_i < 5 && c == (unsigned char)"usage"[f->key_i];
            f->key_choices =
                f->key_choices && f->key_i < 7 && c == (unsigned char)"choices"[f->key_i];
            if (f->key_i < 255)
                f->key_i++;
        }
        if (!f->key_usage)
            pending_keep(f); /* not "usage": let it go at once */
        return KEEP;
    case T_COLON:
        if (ws)
            return KEEP;
        if (c == ':')
            f->tl_st = T_VALUE;
        else
            to_pass(f);
        return KEEP;
    case T_VALUE:
        if (ws)
            return KEEP;
        if (f->member == M_USAGE) {
            if (c == 'n') {
                f->tl_st = T_NULL;
                f->null_i = 1;
                return KEEP;
            }
            pending_keep(f);
            if (c == '{')
                f->usage_object = 1;
            else
                not_candidate(f);
        } else if (f->member == M_CHOICES) {
            if (c == '[') {
                f->depth = 2;
                f->tl_st = T_CHOICES_OPEN;
                return KEEP;
            }
            not_candidate(f);
        }
        f->tl_st = T_IN_VALUE;
        return in_value(f, c);
    case T_NULL:
        if (c == (unsigned char)"null"[f->null_i]) {
            if (++f->null_i == 4)
                f->tl_st = T_AFTER_NULL;
            return KEEP;
        }
        pending_keep(f);
        not_candidate(f);
        f->tl_st = T_IN_VALUE;
        return in_value(f, c);
    case T_AFTER_NULL:
        if (ws)
            return KEEP;
        if (c == ',') {
            int first = f->pending_first;
            pending_cut(f);
            if (first) {
                f->tl_st = T_SKIP; /* its comma goes too, and the next member is first */
                return DROP;
            }
            pending_start(f, 0);
            f->tl_st = T_KEY_START;
            return KEEP;
        }
        if (c == '}') {
            pending_cut(f);
            f->depth = 0;
            f->tl_st = T_DONE;
            return KEEP;
        }
        pending_keep(f);
        not_candidate(f);
        f->tl_st = T_IN_VALUE;
        return in_value(f, c);
    case T_CHOICES_OPEN:
        if (ws)
            return KEEP;
        if (c == ']') {
            f->choices_empty = 1;
            f->depth = 1;
            f->tl_st = T_IN_VALUE;
            return KEEP;
        }
        not_candidate(f);
        f->tl_st = T_IN_VALUE;
        return in_value(f, c);
    case T_IN_VALUE:
        return in_value(f, c);
    case T_DONE:
        if (!ws)
            to_pass(f);
        return KEEP;
    case T_BAD:
        return KEEP;
    }
    return KEEP;
}

/* A line terminator. */
static enum disposition line_end(struct usage_filter *f, unsigned char c)
{
    int blank = f->line_st == L_FIELD && !f->line;

    f->line_st = L_FIELD;
    f->line = 0;
    f->field_len = 0;
    if (!blank) {
        f->cr = c == '\r';
        return KEEP;
    }
    if (f->ev_st == E_CAND && f->lines == 1 && f->tl_st == T_DONE && f->choices_empty &&
        f->usage_object) {
        /* The usage-only chunk: it goes whole, the LF of a CRLF blank line with it. */
        f->hold_len = 0;
        f->dropped_events++;
        f->drop_lf = c == '\r';
        filter_reset_event(f);
        return DROP;
    }
    f->cr = c == '\r';
    filter_reset_event(f);
    return KEEP;
}

/* What one byte does to the filter, and whether it goes (after what is held) or is dropped. */
static enum disposition filter_byte(struct usage_filter *f, unsigned char c)
{
    if (f->drop_lf) {
        f->drop_lf = 0;
        if (c == '\n')
            return DROP;
    }
    if (f->cr) {
        f->cr = 0;
        if (c == '\n')
            return KEEP;
    }
    if (f->bom < 3) {
        if (c == (unsigned char)"\xef\xbb\xbf"[f->bom]) {
            f->bom++;
            return KEEP; /* a byte order mark is never held or cut */
        }
        if (f->bom > 0) {
            /* Part of a mark, then more: a field name that is not "data". */
            f->line = 1;
            f->line_st = L_OTHER;
            f->ev_st = E_PASS;
            f->lines = 1;
        }
        f->bom = 255;
    } else if (f->bom != 255) {
        f->bom = 255;
    }
    if (c == '\r' || c == '\n')
        return line_end(f, c);
    switch (f->line_st) {
    case L_FIELD:
        if (!f->line) {
            f->line = 1;
            if (f->ev_st == E_IDLE)
                f->ev_st = E_CAND;
            if (f->lines < 255)
                f->lines++;
            if (f->lines > 1)
                to_pass(f); /* only one-line events are edited */
        }
        if (c == ':') {
            if (f->field_len == 4 && f->lines == 1 && f->ev_st != E_PASS) {
                f->line_st = L_VALUE_START;
            } else {
                to_pass(f);
                f->line_st = L_OTHER;
            }
            return KEEP;
        }
        if (f->field_len >= 4 || c != (unsigned char)"data"[f->field_len]) {
            to_pass(f);
            f->line_st = L_OTHER;
            return KEEP;
        }
        f->field_len++;
        return KEEP;
    case L_VALUE_START:
        f->line_st = L_DATA;
        if (c == ' ')
            return KEEP;
        /* fall through */
    case L_DATA:
        if (f->ev_st == E_PASS)
            return KEEP;
        return top_byte(f, c);
    case L_OTHER:
        return KEEP;
    }
    return KEEP;
}

/* Appends the byte at i to hold[]; past hold_max the event goes out unchanged from here on. */
static void hold_byte(struct usage_filter *f, size_t i)
{
    if (f->hold_len == f->hold_cap) {
        size_t cap = f->hold_cap ? f->hold_cap * 2 : 256;
        char *p = NULL;
        if (cap > f->hold_max)
            cap = f->hold_max;
        if (cap > f->hold_cap)
            p = realloc(f->hold, cap);
        if (p == NULL) {
            release_all(f);
            to_pass(f);
            f->holding = 0;
            f->emit_from = i;
            return;
        }
        f->hold = p;
        f->hold_cap = cap;
        if (cap > f->hold_peak)
            f->hold_peak = cap;
    }
    f->hold[f->hold_len++] = f->in[i];
}

/* A byte that changes where we are inside a value (outside its strings). */
static int is_value_special(unsigned char c, size_t depth)
{
    switch (c) {
    case '"':
    case '{':
    case '}':
    case '[':
    case ']':
    case '\r':
    case '\n': return 1;
    case ',': return depth == 1;
    default: return 0;
    }
}

/* Bytes from i on that change nothing but their own position: the rest of a line nobody edits,
 * the inside of a string, the tail of a key that can no longer be "usage" or "choices". They go
 * where the byte before them went (held, or out with the run being passed on). Returns the end
 * of the run, i when there is none or it would need to be looked at byte by byte. */
static size_t fast_run(struct usage_filter *f, const char *in, size_t i, size_t n)
{
    size_t j = i;
    int want_hold = f->ev_st == E_CAND || f->pending;

    if (f->line_st == L_OTHER || (f->line_st == L_DATA && f->ev_st == E_PASS)) {
        while (j < n && in[j] != '\n' && in[j] != '\r')
            j++;
    } else if (f->line_st == L_DATA &&
               ((f->tl_st == T_IN_VALUE && f->in_str && !f->esc) ||
                (f->tl_st == T_KEY && !f->key_esc && !f->key_usage && !f->key_choices))) {
        while (j < n && in[j] != '\n' && in[j] != '\r' && in[j] != '"' && in[j] != '\\')
            j++;
    } else if (f->line_st == L_DATA && f->tl_st == T_IN_VALUE && !f->in_str) {
        /* numbers, literals, colons and (inside containers) commas */
        while (j < n && !is_value_special((unsigned char)in[j], f->depth))
            j++;
    } else {
        return i;
    }
    if (want_hold != f->holding)
        return i;
    if (want_hold) {
        size_t k = j - i;
        if (f->hold_len + k > f->hold_cap) {
            size_t cap = f->hold_cap ? f->hold_cap : 256;
            char *p;
            while (cap < f->hold_len + k)
                cap *= 2;
            if (cap > f->hold_max)
                return i; /* byte by byte, to overflow at the very byte it always does */
            p = realloc(f->hold, cap);
            if (p == NULL)
                return i;
            f->hold = p;
            f->hold_cap = cap;
            if (cap > f->hold_peak)
                f->hold_peak = cap;
        }
        memcpy(f->hold + f->hold_len, in + i, k);
        f->hold_len += k;
    }
    return j;
}

int usage_filter_feed(struct usage_filter *f, const char *in, size_t n, usage_filter_out_fn out,
                      void *ud)
{
    size_t i = 0;

    if (f->err)
        return f->err;
    if (f->tap != NULL)
        usage_feed(f->tap, in, n);
    if (n == 0)
        return 0;
    f->in = in;
    f->out = out;
    f->ud = ud;
    f->emit_from = 0;
    while (i < n && !f->err) {
        enum disposition d;
        int want_hold;

        if (f->bom == 255 && !f->cr && !f->drop_lf) {
            size_t j = fast_run(f, in, i, n);
            if (j > i) {
                i = j;
                continue;
            }
        }
        d = filter_byte(f, (unsigned char)in[i]);
        want_hold = f->ev_st == E_CAND || f->pending;
        if (d == DROP) {
            if (!f->holding) {
                emit(f, in + f->emit_from, i - f->emit_from);
                f->emit_from = i + 1;
            }
        } else if (want_hold) {
            if (!f->holding) {
                emit(f, in + f->emit_from, i - f->emit_from);
                f->holding = 1;
            }
            hold_byte(f, i);
        } else if (f->holding) {
            release_all(f);
            f->holding = 0;
            f->emit_from = i;
        }
        if (f->holding && !(f->ev_st == E_CAND || f->pending)) {
            release_all(f);
            f->holding = 0;
            f->emit_from = i + 1;
        }
        i++;
    }
    if (!f->holding)
        emit(f, in + f->emit_from, n - f->emit_from);
    f->in = NULL;
    f->out = NULL;
    f->ud = NULL;
    if (f->ev_st == E_IDLE && f->hold_cap > 4096) {
        /* A long event is over: do not keep its buffer for the rest of the stream. */
        free(f->hold);
        f->hold = NULL;
        f->hold_cap = 0;
    }
    return f->err;
}

int usage_filter_finish(struct usage_filter *f, usage_filter_out_fn out, void *ud)
{
    if (f->err)
        return f->err;
    f->out = out;
    f->ud = ud;
    release_all(f);
    f->holding = 0;
    f->out = NULL;
    f->ud = NULL;
    filter_reset_event(f);
    return f->err;
}
