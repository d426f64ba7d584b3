/* test_usage — the usage tap and the usage-chunk filter. The tap: per kind, a canned response
 * modelled on the provider's real one and the exact counts it must yield, each fed whole, byte by
 * byte and split at every point; decoys (usage keys inside strings and nested objects, broken
 * numbers, cut streams) that must not count; and the memory promise: 10 MB of content leaves the
 * tap's state as it was. The filter: a stream produced with include_usage, once filtered, must
 * be byte for byte the stream produced without it, however the upstream cut it. */
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "usage.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- fixtures ---- */

/* OpenAI chat completions stream, as sent with and without stream_options.include_usage. */
#define CHUNK_HEAD                                                                                 \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"             \
    "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp\",\"choices\":["
#define C_ROLE                                                                                     \
    "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"           \
    "\"logprobs\":null,\"finish_reason\":null}"
#define C_HI "{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}"
/* content that looks like what the filter and the tap look for */
#define C_DECOY                                                                                    \
    "{\"index\":0,\"delta\":{\"content\":\"\\\",\\\"usage\\\":null} \\\"choices\\\":[],"           \
    "\\\"usage\\\":{\\\"prompt_tokens\\\":999}\\\\\"},\"logprobs\":null,\"finish_reason\":null}"
#define C_STOP "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}"
#define END_WITH "],\"usage\":null}\n\n"
#define END_WITHOUT "]}\n\n"
#define USAGE_CHUNK                                                                                \
    CHUNK_HEAD "],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11,"     \
               "\"prompt_tokens_details\":{\"cached_tokens\":4,\"audio_tokens\":0},"               \
               "\"completion_tokens_details\":{\"reasoning_tokens\":1,\"audio_tokens\":0,"         \
               "\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}\n\n"
#define DONE "data: [DONE]\n\n"

#define CHAT_WITH                                                                                  \
    CHUNK_HEAD C_ROLE END_WITH CHUNK_HEAD C_HI END_WITH CHUNK_HEAD C_DECOY END_WITH CHUNK_HEAD      \
        C_STOP END_WITH USAGE_CHUNK DONE
#define CHAT_WITHOUT                                                                               \
    CHUNK_HEAD C_ROLE END_WITHOUT CHUNK_HEAD C_HI END_WITHOUT CHUNK_HEAD C_DECOY END_WITHOUT       \
        CHUNK_HEAD C_STOP END_WITHOUT DONE

/* Short enough to cut into three pieces at every pair of points. */
#define SHORT_HEAD "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":["
#define SHORT_WITH                                                                                 \
    SHORT_HEAD C_HI "],\"usage\":null}\n\n" SHORT_HEAD                                             \
                    "],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,"                    \
                    "\"total_tokens\":4}}\n\n" DONE
#define SHORT_WITHOUT SHORT_HEAD C_HI "]}\n\n" DONE

#define CHAT_BODY                                                                                  \
    "{\n  \"id\": \"chatcmpl-abc\",\n  \"object\": \"chat.completion\",\n  \"created\": 1,\n"      \
    "  \"model\": \"gpt-4o-mini-2024-07-18\",\n  \"choices\": [{\"index\": 0, \"message\": "       \
    "{\"role\": \"assistant\", \"content\": \"\\\"usage\\\": {\\\"prompt_tokens\\\": 999}\", "     \
    "\"refusal\": null, \"usage\": {\"prompt_tokens\": 998}}, \"logprobs\": null, "                \
    "\"finish_reason\": \"stop\"}],\n  \"usage\": {\n    \"prompt_tokens\": 19,\n"                 \
    "    \"completion_tokens\": 10,\n    \"total_tokens\": 29,\n    \"prompt_tokens_details\": "   \
    "{\"cached_tokens\": 3, \"audio_tokens\": 0},\n    \"completion_tokens_details\": "            \
    "{\"reasoning_tokens\": 2, \"audio_tokens\": 0, \"accepted_prediction_tokens\": 0, "           \
    "\"rejected_prediction_tokens\": 0}\n  },\n  \"service_tier\": \"default\",\n"                 \
    "  \"system_fingerprint\": \"fp_1\"\n}\n"

#define LEGACY_STREAM                                                                              \
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"choices\":[{\"text\":"  \
    "\"x\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}],\"model\":"                      \
    "\"gpt-3.5-turbo-instruct\",\"usage\":null}\n\n"                                               \
    "data: {\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1,\"model\":"             \
    "\"gpt-3.5-turbo-instruct\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,"                    \
    "\"completion_tokens\":7,\"total_tokens\":12}}\n\n" DONE

#define EMBED_BODY                                                                                 \
    "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":"          \
    "[-0.006929283,-0.005336422,1e-3,0,2.5E+2,-0]}],\"model\":\"text-embedding-3-small\","         \
    "\"usage\":{\"prompt_tokens\":5,\"total_tokens\":5}}"

#define RESP_USAGE                                                                                 \
    "\"usage\":{\"input_tokens\":36,\"input_tokens_details\":{\"cached_tokens\":4},"               \
    "\"output_tokens\":87,\"output_tokens_details\":{\"reasoning_tokens\":12},"                    \
    "\"total_tokens\":123}"
#define RESP_BODY                                                                                  \
    "{\"id\":\"resp_1\",\"object\":\"response\",\"created_at\":1741476542,\"status\":"             \
    "\"completed\",\"error\":null,\"incomplete_details\":null,\"instructions\":null,"              \
    "\"max_output_tokens\":null,\"model\":\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":"           \
    "\"message\",\"id\":\"msg_1\",\"status\":\"completed\",\"role\":\"assistant\",\"content\":"    \
    "[{\"type\":\"output_text\",\"text\":\"In a peaceful grove\",\"annotations\":[]}]}],"          \
    "\"parallel_tool_calls\":true,\"reasoning\":{\"effort\":null,\"summary\":null},"               \
    "\"temperature\":1.0,\"text\":{\"format\":{\"type\":\"text\"}},\"tools\":[],"                  \
    "\"top_p\":1.0," RESP_USAGE ",\"user\":null,\"metadata\":{}}"
#define RESP_STREAM                                                                                \
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,"         \
    "\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"in_progress\","          \
    "\"model\":\"gpt-4.1-2025-04-14\",\"output\":[],\"usage\":null}}\n\n"                          \
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","           \
    "\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,"          \
    "\"delta\":\"Hi\"}\n\n"                                                                        \
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,"     \
    "\"response\":{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"model\":"  \
    "\"gpt-4.1-2025-04-14\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":"             \
    "\"output_text\",\"text\":\"Hi\"}]}]," RESP_USAGE "}}\n\n"

#define ANTH_STREAM                                                                                \
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","       \
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":"                        \
    "\"claude-sonnet-4-20250514\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":"          \
    "{\"input_tokens\":25,\"cache_creation_input_tokens\":5,\"cache_read_input_tokens\":10,"       \
    "\"output_tokens\":1}}}\n\n"                                                                   \
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"             \
    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"                                     \
    "event: ping\ndata: {\"type\": \"ping\"}\n\n"                                                  \
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"   \
    "{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n"                                            \
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"           \
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"          \
    "\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n"                   \
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"

#define ANTH_BODY                                                                                  \
    "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"                     \
    "\"claude-sonnet-4-20250514\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}],"              \
    "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,"          \
    "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":7,\"output_tokens\":6}}"

/* ---- the tap: table ---- */

struct want {
    uint64_t prompt, completion, total, cached, reasoning;
    int seen, complete;
    const char *model;
};

struct tap_case {
    const char *name;
    enum usage_kind kind;
    int streaming;
    const char *in;
    size_t len;
    struct want w;
};

/* clang-format off */
#define TAP(nm, k, st, s, ...)                                                                     \
    {.name = nm, .kind = k, .streaming = st, .in = s, .len = sizeof(s) - 1, .w = {__VA_ARGS__}}
/* clang-format on */

static const struct tap_case tap_cases[] = {
    /* chat completions */
    TAP("chat body", USAGE_CHAT, 0, CHAT_BODY, 19, 10, 29, 3, 2, 1, 1, "gpt-4o-mini-2024-07-18"),
    TAP("chat stream with include_usage", USAGE_CHAT, 1, CHAT_WITH, 9, 2, 11, 4, 1, 1, 1,
        "gpt-4o-mini"),
    TAP("chat stream without usage", USAGE_CHAT, 1, CHAT_WITHOUT, 0, 0, 0, 0, 0, 0, 1,
        "gpt-4o-mini"),
    TAP("short chat stream", USAGE_CHAT, 1, SHORT_WITH, 3, 1, 4, 0, 0, 1, 1, "m"),
    TAP("chat stream cut before [DONE]", USAGE_CHAT, 1, CHUNK_HEAD C_HI END_WITH USAGE_CHUNK, 9,
        2, 11, 4, 1, 1, 0, "gpt-4o-mini"),
    TAP("chat stream cut inside the usage object", USAGE_CHAT, 1,
        CHUNK_HEAD C_HI END_WITH "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,", 0, 0, 0,
        0, 0, 0, 0, "gpt-4o-mini"),
    TAP("usage counts once its object closes, blank line or not", USAGE_CHAT, 1,
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}", 9, 2, 11,
        0, 0, 1, 0, ""),
    TAP("the last usage wins, absent counts are 0", USAGE_CHAT, 1,
        "data: {\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2,"
        "\"prompt_tokens_details\":{\"cached_tokens\":1}}}\n\n"
        "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6,\"total_tokens\":11}}\n\n"
        "data: {\"usage\":null}\n\n" DONE,
        5, 6, 11, 0, 0, 1, 1, ""),
    TAP("an empty usage object changes nothing", USAGE_CHAT, 1,
        "data: {\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":6}}\n\n"
        "data: {\"usage\":{}}\n\n",
        5, 6, 11, 0, 0, 1, 0, ""),
    TAP("[DONE] without a space", USAGE_CHAT, 1, "data:[DONE]\n\n", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("[DONE] with CRLF", USAGE_CHAT, 1, "data: [DONE]\r\n\r\n", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("[DONE] must be exact", USAGE_CHAT, 1,
        "data: [DONE] \n\ndata: [DONE]x\n\ndata: [DON\n\ndata: x[DONE]\n\ndata: [DONE]\n",
        0, 0, 0, 0, 0, 0, 0, ""),
    TAP("[DONE] on two data lines is not it", USAGE_CHAT, 1, "data: [DO\ndata: NE]\n\n", 0, 0,
        0, 0, 0, 0, 0, ""),
    TAP("a JSON split over data lines is one document", USAGE_CHAT, 1,
        "data: {\"usage\":\ndata: {\"prompt_tokens\":4,\ndata: \"completion_tokens\":2}}\n\n", 4,
        2, 6, 0, 0, 1, 0, ""),
    TAP("legacy completions stream", USAGE_CHAT, 1, LEGACY_STREAM, 5, 7, 12, 0, 0, 1, 1,
        "gpt-3.5-turbo-instruct"),
    TAP("decoys: nested usage objects, usage in strings, escaped keys", USAGE_CHAT, 0,
        "{\"choices\":[{\"usage\":{\"prompt_tokens\":100}}],\"x\":{\"usage\":{\"prompt_tokens\":7}},"
        "\"s\":\"\\\"usage\\\":{\\\"prompt_tokens\\\":5}\",\"usage\":{\"prompt\\u005ftokens\":8,"
        "\"completion_tokens\":{\"n\":3},\"total_tokens\":[4],\"x\":{\"prompt_tokens\":9}},"
        "\"model\":{\"name\":\"no\"}}",
        0, 0, 0, 0, 0, 0, 1, ""),
    TAP("usage that is not an object", USAGE_CHAT, 0,
        "{\"usage\":[{\"prompt_tokens\":1}],\"model\":5}", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("counts that are not plain integers are ignored", USAGE_CHAT, 0,
        "{\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":1.5,\"total_tokens\":1e3,"
        "\"prompt_tokens_details\":{\"cached_tokens\":9007199254740992},"
        "\"completion_tokens_details\":{\"reasoning_tokens\":9007199254740991}}}",
        0, 0, 0, 0, 9007199254740991ull, 1, 1, ""),
    TAP("a count of 0, and a total absent", USAGE_CHAT, 0,
        "{\"usage\":{\"prompt_tokens\":0,\"completion_tokens\":12}}", 0, 12, 12, 0, 0, 1, 1, ""),
    TAP("huge numbers elsewhere are fine", USAGE_CHAT, 0,
        "{\"created\":123456789012345678901234567890,\"usage\":{\"prompt_tokens\":2}}", 2, 0, 2, 0,
        0, 1, 1, ""),
    TAP("a leading zero is malformed: the usage object is not taken", USAGE_CHAT, 0,
        "{\"usage\":{\"prompt_tokens\":01}}", 0, 0, 0, 0, 0, 0, 0, ""),
    TAP("malformed after the usage closed: counts stay, not complete", USAGE_CHAT, 0,
        "{\"usage\":{\"prompt_tokens\":2}, oops}", 2, 0, 2, 0, 0, 1, 0, ""),
    TAP("trailing garbage after the document", USAGE_CHAT, 0,
        "{\"usage\":{\"prompt_tokens\":2}} x", 2, 0, 2, 0, 0, 1, 0, ""),
    TAP("trailing whitespace is fine", USAGE_CHAT, 0, "{\"usage\":{\"prompt_tokens\":2}}\r\n\t ",
        2, 0, 2, 0, 0, 1, 1, ""),
    TAP("a body cut short", USAGE_CHAT, 0, "{\"model\":\"gpt\",\"choices\":[{\"message\":{\"con", 0,
        0, 0, 0, 0, 0, 0, "gpt"),
    TAP("an error body", USAGE_CHAT, 0,
        "{\"error\":{\"message\":\"bad\",\"type\":\"invalid_request_error\",\"param\":null,"
        "\"code\":null}}",
        0, 0, 0, 0, 0, 0, 1, ""),
    TAP("an unclosed string in the model is no model", USAGE_CHAT, 0, "{\"model\":\"gpt-4o", 0, 0,
        0, 0, 0, 0, 0, ""),
    TAP("the first model wins", USAGE_CHAT, 1,
        "data: {\"model\":\"first\"}\n\ndata: {\"model\":\"second\"}\n\n", 0, 0, 0, 0, 0, 0, 0,
        "first"),
    TAP("a broken event does not end the stream's reading", USAGE_CHAT, 1,
        "data: {\"usage\":{\"prompt_tokens\":1]}\n\ndata: }}}\n\n"
        "data: {\"usage\":{\"prompt_tokens\":2}}\n\n" DONE,
        2, 0, 2, 0, 0, 1, 1, ""),
    TAP("model escapes are decoded, control characters replaced", USAGE_CHAT, 0,
        "{\"model\":\"gpt\\u002d4o\\/x\\n\\u0000\\\"\\\\\\u00e9\\u20ac\\ud83d\xc3\xa9\x7f\"}", 0,
        0, 0, 0, 0, 0, 1, "gpt-4o/x??\"\\\xc3\xa9\xe2\x82\xac?\xc3\xa9?"),
    TAP("an empty model is not the model (Azure's first chunk)", USAGE_CHAT, 1,
        "data: {\"choices\":[],\"created\":0,\"id\":\"\",\"model\":\"\",\"object\":\"\","
        "\"prompt_filter_results\":[{\"prompt_index\":0,\"content_filter_results\":{}}]}\n\n"
        "data: {\"choices\":[],\"model\":\"gpt-4o-2024-08-06\"}\n\n",
        0, 0, 0, 0, 0, 0, 0, "gpt-4o-2024-08-06"),
    TAP("the model is not taken from nested objects", USAGE_CHAT, 0,
        "{\"choices\":[{\"model\":\"a\"}],\"x\":{\"model\":\"b\"},\"model\":\"c\"}", 0, 0, 0, 0, 0,
        0, 1, "c"),
    TAP("a non-object body", USAGE_CHAT, 0, "[{\"usage\":{\"prompt_tokens\":1}}]", 0, 0, 0, 0, 0,
        0, 1, ""),

    /* embeddings */
    TAP("embeddings body", USAGE_EMBEDDINGS, 0, EMBED_BODY, 5, 0, 5, 0, 0, 1, 1,
        "text-embedding-3-small"),

    /* Responses API */
    TAP("responses body", USAGE_RESPONSES, 0, RESP_BODY, 36, 87, 123, 4, 12, 1, 1,
        "gpt-4.1-2025-04-14"),
    TAP("responses stream", USAGE_RESPONSES, 1, RESP_STREAM, 36, 87, 123, 4, 12, 1, 1,
        "gpt-4.1-2025-04-14"),
    TAP("responses stream cut before its end", USAGE_RESPONSES, 1,
        "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":"
        "\"gpt-4.1\",\"usage\":null}}\n\n",
        0, 0, 0, 0, 0, 0, 0, "gpt-4.1"),
    TAP("responses stream ended by response.incomplete", USAGE_RESPONSES, 1,
        "event: response.incomplete\ndata: {\"type\":\"response.incomplete\",\"response\":"
        "{\"usage\":{\"input_tokens\":3,\"output_tokens\":16,\"total_tokens\":19}}}\n\n",
        3, 16, 19, 0, 0, 1, 1, ""),
    TAP("responses terminal event known by its type alone", USAGE_RESPONSES, 1,
        "data: {\"type\":\"response.failed\",\"response\":{\"usage\":null}}\n\n", 0, 0, 0, 0, 0,
        0, 1, ""),
    TAP("responses terminal type in a broken document does not count", USAGE_RESPONSES, 1,
        "data: {\"type\":\"response.completed\",\n\n", 0, 0, 0, 0, 0, 0, 0, ""),
    TAP("responses: chat counts' names are not read", USAGE_RESPONSES, 0,
        "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("chat: responses' wrapper is not read", USAGE_CHAT, 1,
        "data: {\"response\":{\"model\":\"x\",\"usage\":{\"prompt_tokens\":3}}}\n\n", 0, 0, 0, 0,
        0, 0, 0, ""),

    /* Anthropic */
    TAP("anthropic stream", USAGE_ANTHROPIC, 1, ANTH_STREAM, 40, 15, 55, 10, 0, 1, 1,
        "claude-sonnet-4-20250514"),
    TAP("anthropic body", USAGE_ANTHROPIC, 0, ANTH_BODY, 19, 6, 25, 7, 0, 1, 1,
        "claude-sonnet-4-20250514"),
    TAP("anthropic message_delta with null and full counts", USAGE_ANTHROPIC, 1,
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":"
        "{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":null,"
        "\"cache_read_input_tokens\":3,\"output_tokens\":15}}\n\n"
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":"
        "{\"output_tokens\":20}}\n\n",
        28, 20, 48, 3, 0, 1, 0, ""),
    TAP("anthropic stop known by its type", USAGE_ANTHROPIC, 1,
        "data: {\"type\":\"message_stop\"}\n\n", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("anthropic stop known by its event name", USAGE_ANTHROPIC, 1,
        "event: message_stop\ndata: {}\n\n", 0, 0, 0, 0, 0, 0, 1, ""),
    TAP("message_stop does not end a chat stream", USAGE_CHAT, 1,
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n", 0, 0, 0, 0, 0, 0, 0, ""),
    TAP("[DONE] does not end an anthropic stream", USAGE_ANTHROPIC, 1, DONE, 0, 0, 0, 0, 0, 0, 0,
        ""),
    TAP("an event without data is not an event", USAGE_ANTHROPIC, 1, "event: message_stop\n\n",
        0, 0, 0, 0, 0, 0, 0, ""),
};

static void tap_run(const struct tap_case *c, const size_t *cuts, size_t ncuts, struct usage *u)
{
    size_t at = 0;

    usage_init(u, c->kind, c->streaming);
    for (size_t i = 0; i < ncuts; i++) {
        usage_feed(u, c->in + at, cuts[i] - at);
        at = cuts[i];
    }
    assert_int_equal(u->bytes, (uint64_t)c->len);
}

static void tap_check(const struct tap_case *c, const struct usage *u, const char *how)
{
    const struct want *w = &c->w;

    if (u->prompt_tokens != w->prompt || u->completion_tokens != w->completion ||
        u->total_tokens != w->total || u->cached_tokens != w->cached ||
        u->reasoning_tokens != w->reasoning || u->seen_usage != w->seen ||
        u->complete != w->complete || strcmp(u->model, w->model) != 0) {
        print_error("%s (%s): got prompt %llu completion %llu total %llu cached %llu reasoning "
                    "%llu seen %d complete %d model '%s'\n",
                    c->name, how, (unsigned long long)u->prompt_tokens,
                    (unsigned long long)u->completion_tokens,
                    (unsigned long long)u->total_tokens, (unsigned long long)u->cached_tokens,
                    (unsigned long long)u->reasoning_tokens, u->seen_usage, u->complete,
                    u->model);
        fail();
    }
}

static void tap_same(const struct tap_case *c, const struct usage *a, const struct usage *b,
                     const char *how)
{
    if (a->prompt_tokens != b->prompt_tokens || a->completion_tokens != b->completion_tokens ||
        a->total_tokens != b->total_tokens || a->cached_tokens != b->cached_tokens ||
        a->reasoning_tokens != b->reasoning_tokens || a->seen_usage != b->seen_usage ||
        a->complete != b->complete || strcmp(a->model, b->model) != 0 ||
        a->events != b->events) {
        print_error("%s: %s differs from whole\n", c->name, how);
        fail();
    }
}

static void tap_whole(void **state)
{
    for (size_t i = 0; i < COUNT(tap_cases); i++) {
        struct usage u;
        size_t cut = tap_cases[i].len;
        tap_run(&tap_cases[i], &cut, 1, &u);
        tap_check(&tap_cases[i], &u, "whole");
    }
}

static void tap_byte_by_byte(void **state)
{
    for (size_t i = 0; i < COUNT(tap_cases); i++) {
        const struct tap_case *c = &tap_cases[i];
        struct usage u;
        usage_init(&u, c->kind, c->streaming);
        for (size_t k = 0; k < c->len; k++)
            usage_feed(&u, c->in + k, 1);
        tap_check(c, &u, "byte by byte");
    }
}

static void tap_every_split(void **state)
{
    for (size_t i = 0; i < COUNT(tap_cases); i++) {
        const struct tap_case *c = &tap_cases[i];
        struct usage whole, u;
        size_t one = c->len;
        tap_run(c, &one, 1, &whole);
        for (size_t a = 0; a <= c->len; a++) {
            size_t two[2] = {a, c->len};
            tap_run(c, two, 2, &u);
            tap_same(c, &whole, &u, "a split in two");
            if (c->len > 300)
                continue;
            for (size_t b = a; b <= c->len; b++) {
                size_t three[3] = {a, b, c->len};
                tap_run(c, three, 3, &u);
                tap_same(c, &whole, &u, "a split in three");
            }
        }
    }
}

/* ---- the tap: the model's bound ---- */

static void model_truncated_at_bound(void **state)
{
    char body[512], want[USAGE_MODEL_MAX + 1];
    struct usage u;

    memset(want, 'a', USAGE_MODEL_MAX);
    want[USAGE_MODEL_MAX] = '\0';
    snprintf(body, sizeof(body), "{\"model\":\"%s\"}", want);
    usage_init(&u, USAGE_CHAT, 0);
    usage_feed(&u, body, strlen(body));
    assert_string_equal(u.model, want);
    assert_false(u.model_truncated);

    snprintf(body, sizeof(body), "{\"model\":\"%sbcd\"}", want);
    usage_init(&u, USAGE_CHAT, 0);
    usage_feed(&u, body, strlen(body));
    assert_string_equal(u.model, want);
    assert_true(u.model_truncated);
    assert_true(u.complete);
}

/* A model cut at the bound never ends in half a UTF-8 character, raw or escaped. */
static void model_truncated_on_a_character(void **state)
{
    static const char *const tails[] = {"\xc3\xa9", "\\u00e9", "\xe2\x82\xac", "\\u20ac",
                                        "\xf0\x9f\x98\x80"};
    char body[512], head[USAGE_MODEL_MAX + 1];
    struct usage u;

    for (size_t t = 0; t < COUNT(tails); t++)
        for (size_t n = USAGE_MODEL_MAX - 4; n <= USAGE_MODEL_MAX; n++) {
            memset(head, 'a', n);
            head[n] = '\0';
            snprintf(body, sizeof(body), "{\"model\":\"%s%s\"}", head, tails[t]);
            usage_init(&u, USAGE_CHAT, 0);
            usage_feed(&u, body, strlen(body));
            assert_true(strlen(u.model) <= USAGE_MODEL_MAX);
            if (u.model_truncated)
                assert_string_equal(u.model, head);
            else
                assert_int_equal(strncmp(u.model, head, n), 0);
        }
}

/* ---- the tap: hostile input ---- */

static void garbage_never_counts(void **state)
{
    char buf[4096];
    uint64_t x = 88172645463325252ull;

    for (int round = 0; round < 200; round++) {
        for (size_t i = 0; i < sizeof(buf); i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = "{}[]\":,0123456789-.eE \n\rtrufalsn\\udata:[DONE]usage"[x % 51];
        }
        for (int kind = USAGE_CHAT; kind <= USAGE_ANTHROPIC; kind++)
            for (int st = 0; st <= 1; st++) {
                struct usage u;
                usage_init(&u, (enum usage_kind)kind, st);
                usage_feed(&u, buf, sizeof(buf));
                assert_true(strlen(u.model) <= USAGE_MODEL_MAX);
                assert_int_equal(u.bytes, sizeof(buf));
            }
    }
}

static void deep_nesting(void **state)
{
    enum { DEEP = USAGE_DEPTH_MAX + 10 };
    static char body[2 * DEEP + 128];
    struct usage u;
    size_t n = 0;

    /* Within the limit: read. */
    n = (size_t)sprintf(body, "{\"a\":");
    for (int i = 0; i < USAGE_DEPTH_MAX - 1; i++)
        body[n++] = '[';
    for (int i = 0; i < USAGE_DEPTH_MAX - 1; i++)
        body[n++] = ']';
    n += (size_t)sprintf(body + n, ",\"usage\":{\"prompt_tokens\":3}}");
    usage_init(&u, USAGE_CHAT, 0);
    usage_feed(&u, body, n);
    assert_int_equal(u.prompt_tokens, 3);
    assert_true(u.complete);

    /* Past it: the document is not trusted. */
    n = (size_t)sprintf(body, "{\"a\":");
    for (int i = 0; i < DEEP; i++)
        body[n++] = '[';
    for (int i = 0; i < DEEP; i++)
        body[n++] = ']';
    n += (size_t)sprintf(body + n, ",\"usage\":{\"prompt_tokens\":3}}");
    usage_init(&u, USAGE_CHAT, 0);
    usage_feed(&u, body, n);
    assert_false(u.seen_usage);
    assert_false(u.complete);
}

/* ---- the tap: memory ---- */

/* 10 MB of content fed in 1 KB pieces: the tap's state is not one byte bigger (it has no heap),
 * the heap does not move, and the counts after the content are right. */
static void huge_content_constant_memory(void **state)
{
    enum { PIECE = 1024, TOTAL = 10 * 1024 * 1024 };
    static const char stream_head[] =
        "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"";
    static const char stream_tail[] =
        "\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,"
        "\"completion_tokens\":2500000,\"total_tokens\":2500007}}\n\ndata: [DONE]\n\n";
    static const char body_head[] = "{\"model\":\"gpt-4o\",\"choices\":[{\"message\":{\"content\":\"";
    static const char body_tail[] =
        "\"}}],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2500000,\"total_tokens\":"
        "2500007}}";
    char piece[PIECE];
    struct mallinfo2 m0, m1;

    for (size_t i = 0; i < PIECE; i++)
        piece[i] = "lorem ipsum \\\"dolor\\\" \\u00e9 "[i % 29];
    piece[PIECE - 1] = ' '; /* no piece ends inside an escape that the next does not finish */
    for (int streaming = 0; streaming <= 1; streaming++) {
        struct usage u;
        usage_init(&u, USAGE_CHAT, streaming);
        if (streaming)
            usage_feed(&u, stream_head, sizeof(stream_head) - 1);
        else
            usage_feed(&u, body_head, sizeof(body_head) - 1);
        m0 = mallinfo2();
        for (size_t sent = 0; sent < TOTAL; sent += PIECE)
            usage_feed(&u, piece, PIECE);
        m1 = mallinfo2();
        assert_int_equal(m1.uordblks, m0.uordblks);
        if (streaming)
            usage_feed(&u, stream_tail, sizeof(stream_tail) - 1);
        else
            usage_feed(&u, body_tail, sizeof(body_tail) - 1);
        assert_int_equal(u.prompt_tokens, 7);
        assert_int_equal(u.completion_tokens, 2500000);
        assert_int_equal(u.total_tokens, 2500007);
        assert_true(u.complete);
        assert_string_equal(u.model, "gpt-4o");
    }
    /* The whole tap, whatever it reads, is this many bytes. */
    assert_true(sizeof(struct usage) <= 1024);
}

/* ---- paths ---- */

static void kind_for_path(void **state)
{
    static const struct {
        const char *path;
        int rc;
        enum usage_kind kind;
    } cases[] = {
        {"/v1/chat/completions", 0, USAGE_CHAT},
        {"/v1/chat/completions?x=1", 0, USAGE_CHAT},
        {"/openai/deployments/gpt/chat/completions?api-version=2024-10-21", 0, USAGE_CHAT},
        {"/v1/completions", 0, USAGE_CHAT},
        {"/v1/embeddings", 0, USAGE_EMBEDDINGS},
        {"/v1/responses", 0, USAGE_RESPONSES},
        {"/v1/messages", 0, USAGE_ANTHROPIC},
        {"/v1/models", -1, USAGE_CHAT},
        {"/v1/responses/resp_1", -1, USAGE_CHAT},
        {"/v1/messages/count_tokens", -1, USAGE_CHAT},
        {"/v1/chat/completions/chatcmpl-1", -1, USAGE_CHAT},
        {"/v1/xcompletions", -1, USAGE_CHAT},
        {"completions", -1, USAGE_CHAT},
        {"", -1, USAGE_CHAT},
        {"/v1/models?p=/completions", -1, USAGE_CHAT},
    };

    for (size_t i = 0; i < COUNT(cases); i++) {
        enum usage_kind k = USAGE_CHAT;
        int rc = usage_kind_for_path(cases[i].path, strlen(cases[i].path), &k);
        if (rc != cases[i].rc || (rc == 0 && k != cases[i].kind)) {
            print_error("%s: rc %d kind %d\n", cases[i].path, rc, (int)k);
            fail();
        }
    }
}

/* ---- the filter ---- */

struct sink {
    char *buf;
    size_t len, cap;
    int calls;
    int fail_at; /* the call that returns an error, 0 for none */
};

static int sink_out(void *ud, const char *p, size_t n)
{
    struct sink *s = ud;

    assert_true(n > 0);
    s->calls++;
    if (s->fail_at && s->calls == s->fail_at)
        return -32; /* EPIPE */
    if (s->len + n > s->cap) {
        s->cap = (s->len + n) * 2;
        s->buf = realloc(s->buf, s->cap);
        assert_non_null(s->buf);
    }
    memcpy(s->buf + s->len, p, n);
    s->len += n;
    return 0;
}

struct filter_case {
    const char *name;
    const char *in;
    size_t len;
    const char *want;
    size_t want_len;
};

/* clang-format off */
#define FILTER(nm, s, w)                                                                           \
    {.name = nm, .in = s, .len = sizeof(s) - 1, .want = w, .want_len = sizeof(w) - 1}
/* Unchanged. */
#define SAME(nm, s) FILTER(nm, s, s)
/* clang-format on */

#define CRLF_HEAD                                                                                  \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"             \
    "\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp\",\"choices\":["

static const struct filter_case filter_cases[] = {
    FILTER("OpenAI stream", CHAT_WITH, CHAT_WITHOUT),
    FILTER("short stream", SHORT_WITH, SHORT_WITHOUT),
    FILTER("CRLF stream",
           CRLF_HEAD C_HI "],\"usage\":null}\r\n\r\n" CRLF_HEAD
                          "],\"usage\":{\"prompt_tokens\":1}}\r\n\r\ndata: [DONE]\r\n\r\n",
           CRLF_HEAD C_HI "]}\r\n\r\ndata: [DONE]\r\n\r\n"),
    FILTER("CR stream", CRLF_HEAD C_HI "],\"usage\":null}\r\r" CRLF_HEAD
                                       "],\"usage\":{\"prompt_tokens\":1}}\r\rdata: [DONE]\r\r",
           CRLF_HEAD C_HI "]}\r\rdata: [DONE]\r\r"),
    FILTER("the usage chunk ends in CR, CR LF: the LF goes with it",
           "data: {\"choices\":[],\"usage\":{}}\r\r\ndata: [DONE]\n\n", "data: [DONE]\n\n"),
    FILTER("the usage chunk ends in CR CR, the next event follows at once",
           "data: {\"choices\":[],\"usage\":{}}\r\rdata: [DONE]\n\n", "data: [DONE]\n\n"),
    FILTER("a blank line after the usage chunk stays",
           "data: {\"choices\":[],\"usage\":{}}\r\r\n\ndata: [DONE]\n\n", "\ndata: [DONE]\n\n"),
    FILTER("usage first", "data: {\"usage\":null,\"id\":\"x\",\"choices\":[]}\n\n",
           "data: {\"id\":\"x\",\"choices\":[]}\n\n"),
    FILTER("usage alone", "data: {\"usage\":null}\n\n", "data: {}\n\n"),
    FILTER("usage null twice", "data: {\"usage\":null,\"usage\":null,\"a\":1,\"usage\":null}\n\n",
           "data: {\"a\":1}\n\n"),
    FILTER("whitespace around the member",
           "data: {\"a\":1, \"usage\" : null }\n\ndata: { \"usage\": null, \"b\": 2 }\n\n",
           "data: {\"a\":1}\n\ndata: { \"b\": 2 }\n\n"),
    FILTER("whitespace before the comma", "data: {\"a\":1,\"usage\":null\t,\"b\":2}\n\n",
           "data: {\"a\":1,\"b\":2}\n\n"),
    FILTER("no space after data:", "data:{\"a\":[],\"usage\":null}\n\n", "data:{\"a\":[]}\n\n"),
    FILTER("choices [] with usage null: the member goes, the event stays",
           "data: {\"choices\":[],\"usage\":null}\n\n", "data: {\"choices\":[]}\n\n"),
    FILTER("usage-only chunk, spaced", "data: { \"choices\" : [ ] , \"usage\" : { } } \n\n", ""),
    FILTER("usage-only chunk, usage first",
           "data: {\"usage\":{\"prompt_tokens\":1},\"choices\":[]}\n\ndata: [DONE]\n\n",
           "data: [DONE]\n\n"),
    FILTER("usage-only chunk between others",
           "data: {\"a\":1,\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{}}\n\n"
           "data: {\"b\":2,\"usage\":null}\n\n",
           "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n"),
    SAME("nested usage null", "data: {\"choices\":[{\"usage\":null}],\"x\":{\"usage\":null}}\n\n"),
    SAME("usage null in a string", "data: {\"s\":\",\\\"usage\\\":null\",\"t\":\"\\\\\"}\n\n"),
    SAME("usage object with choices: some providers send that, without ferry too",
         "data: {\"choices\":[{\"index\":0}],\"usage\":{\"prompt_tokens\":1}}\n\n"),
    SAME("choices [] without usage", "data: {\"choices\":[]}\n\n"),
    SAME("usage not null nor an object", "data: {\"choices\":[],\"usage\":0}\n\n"),
    SAME("usage nullx", "data: {\"usage\":nullx}\n\n"),
    SAME("usage nul", "data: {\"usage\":nul}\n\n"),
    SAME("an escaped key is not usage", "data: {\"a\":1,\"us\\u0061ge\":null}\n\n"),
    SAME("near keys", "data: {\"usag\":null,\"usages\":null,\"Usage\":null,\"choice\":[]}\n\n"),
    SAME("[DONE]", DONE),
    SAME("comments and other fields", ": ping\n\nid: 1\ndata: {\"usage\":null}\n\n"
                                      "event: x\ndata: {\"choices\":[],\"usage\":{}}\n\n"),
    SAME("usage-only chunk with an id line", "data: {\"choices\":[],\"usage\":{}}\nid: 4\n\n"),
    SAME("two data lines", "data: {\"choices\":[],\n data: \"usage\":null}\n\n"),
    FILTER("a member on the first data line is cut as soon as it is read",
           "data: {\"a\":1,\"usage\":null}\ndata: x\n\n", "data: {\"a\":1}\ndata: x\n\n"),
    SAME("trailing garbage", "data: {\"choices\":[],\"usage\":{}}x\n\n"),
    SAME("not an object", "data: [1,{\"usage\":null}]\n\ndata: \"usage\"\n\n"),
    SAME("a byte order mark, then a usage-only chunk",
         "\xef\xbb\xbf" "event: e\ndata: {\"choices\":[],\"usage\":{}}\n\n"),
    FILTER("a byte order mark, then the usage member",
           "\xef\xbb\xbf" "data: {\"a\":1,\"usage\":null}\n\n",
           "\xef\xbb\xbf" "data: {\"a\":1}\n\n"),
    SAME("half a byte order mark", "\xef\xbb" "data: {\"a\":1,\"usage\":null}\n\n"),
    SAME("data without a colon", "data\n\n"),
    SAME("blank lines", "\n\n\r\n\r\r"),
    SAME("a non-SSE body", "{\"error\":{\"message\":\"x\"},\"usage\":null}\n"),
    SAME("malformed object", "data: {\"a\"1,\"usage\":null}\n\ndata: {]}\n\ndata: {\"a\":1]}\n\n"),
};

static void filter_run(const struct filter_case *c, const size_t *cuts, size_t ncuts,
                       struct sink *s, struct usage *tap)
{
    struct usage_filter f;
    size_t at = 0;

    memset(s, 0, sizeof(*s));
    usage_filter_init(&f, tap);
    for (size_t i = 0; i < ncuts; i++) {
        size_t held = usage_filter_held(&f), before = s->len;
        assert_int_equal(usage_filter_feed(&f, c->in + at, cuts[i] - at, sink_out, s), 0);
        assert_true(s->len - before <= held + (cuts[i] - at));
        at = cuts[i];
    }
    assert_int_equal(usage_filter_finish(&f, sink_out, s), 0);
    assert_int_equal(usage_filter_held(&f), 0);
    usage_filter_free(&f);
}

static void filter_check(const struct filter_case *c, const struct sink *s, const char *how)
{
    if (s->len != c->want_len || (s->len > 0 && memcmp(s->buf, c->want, s->len) != 0)) {
        print_error("%s (%s):\n got [%.*s]\nwant [%.*s]\n", c->name, how, (int)s->len, s->buf,
                    (int)c->want_len, c->want);
        fail();
    }
}

static void filter_whole(void **state)
{
    for (size_t i = 0; i < COUNT(filter_cases); i++) {
        struct sink s;
        size_t cut = filter_cases[i].len;
        filter_run(&filter_cases[i], &cut, 1, &s, NULL);
        filter_check(&filter_cases[i], &s, "whole");
        free(s.buf);
    }
}

static void filter_byte_by_byte(void **state)
{
    for (size_t i = 0; i < COUNT(filter_cases); i++) {
        const struct filter_case *c = &filter_cases[i];
        size_t *cuts = malloc(c->len * sizeof(*cuts) + 1);
        struct sink s;
        assert_non_null(cuts);
        for (size_t k = 0; k < c->len; k++)
            cuts[k] = k + 1;
        filter_run(c, cuts, c->len, &s, NULL);
        filter_check(c, &s, "byte by byte");
        free(s.buf);
        free(cuts);
    }
}

static void filter_every_split(void **state)
{
    for (size_t i = 0; i < COUNT(filter_cases); i++) {
        const struct filter_case *c = &filter_cases[i];
        for (size_t a = 0; a <= c->len; a++) {
            size_t two[2] = {a, c->len};
            struct sink s;
            filter_run(c, two, 2, &s, NULL);
            filter_check(c, &s, "a split in two");
            free(s.buf);
        }
    }
}

/* The short OpenAI stream cut into three pieces at every pair of points. */
static void filter_every_split_in_three(void **state)
{
    const struct filter_case *c = &filter_cases[1];
    struct sink s;

    assert_string_equal(c->name, "short stream");
    for (size_t a = 0; a <= c->len; a++)
        for (size_t b = a; b <= c->len; b++) {
            size_t three[3] = {a, b, c->len};
            filter_run(c, three, 3, &s, NULL);
            if (s.len != c->want_len || (s.len > 0 && memcmp(s.buf, c->want, s.len) != 0)) {
                print_error("split at %zu,%zu\n", a, b);
                filter_check(c, &s, "a split in three");
            }
            free(s.buf);
        }
}

/* The tap behind the filter sees the upstream's bytes, usage chunk included. */
static void filter_feeds_the_tap(void **state)
{
    const struct filter_case *c = &filter_cases[0];
    struct usage tap;
    struct sink s;
    size_t cut = c->len;

    usage_init(&tap, USAGE_CHAT, 1);
    filter_run(c, &cut, 1, &s, &tap);
    filter_check(c, &s, "with a tap");
    assert_int_equal(tap.bytes, c->len);
    assert_int_equal(tap.prompt_tokens, 9);
    assert_int_equal(tap.completion_tokens, 2);
    assert_int_equal(tap.total_tokens, 11);
    assert_int_equal(tap.cached_tokens, 4);
    assert_int_equal(tap.reasoning_tokens, 1);
    assert_true(tap.complete);
    free(s.buf);
}

/* What is held is held only while it must be: a chunk goes out as soon as its choices are not
 * empty, up to a "usage" member that may be null. */
static void filter_holds_little(void **state)
{
    static const char head[] = CHUNK_HEAD "{\"index\":0,\"delta\":{\"content\":\"He";
    static const char rest[] = "llo\"},\"logprobs\":null,\"finish_reason\":null}],\"usa";
    struct usage_filter f;
    struct sink s = {0};

    usage_filter_init(&f, NULL);
    assert_int_equal(usage_filter_feed(&f, head, sizeof(head) - 1, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), 0);
    assert_int_equal(s.len, sizeof(head) - 1);
    assert_int_equal(usage_filter_feed(&f, rest, sizeof(rest) - 1, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), strlen(",\"usa")); /* maybe "usage":null */
    assert_int_equal(usage_filter_feed(&f, "ge\":nu", 6, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), strlen(",\"usage\":nu"));
    assert_int_equal(usage_filter_feed(&f, "ll}\n\n", 5, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), 0);
    assert_int_equal(s.len, sizeof(head) - 1 + strlen("llo\"},\"logprobs\":null,\"finish_reason\""
                                                      ":null}]}\n\n"));
    /* Until its choices are seen, a chunk may be the usage-only one: all of it is held. */
    assert_int_equal(usage_filter_feed(&f, CHUNK_HEAD, sizeof(CHUNK_HEAD) - 1, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), sizeof(CHUNK_HEAD) - 1);
    assert_int_equal(usage_filter_feed(&f, "]", 1, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), sizeof(CHUNK_HEAD));
    assert_int_equal(usage_filter_feed(&f, ",\"usage\":{}}\n", 13, sink_out, &s), 0);
    assert_int_equal(usage_filter_feed(&f, "\n", 1, sink_out, &s), 0);
    assert_int_equal(usage_filter_held(&f), 0);
    assert_int_equal(f.dropped_events, 1);
    assert_int_equal(f.removed_members, 1);
    usage_filter_free(&f);
    free(s.buf);
}

/* An event that could be the usage-only chunk but grows past hold_max goes out unchanged. */
static void filter_hold_bound(void **state)
{
    static const char small[] = "data: {\"choices\":[],\"usage\":{}}\n\n";
    static char ev[8192];
    struct usage_filter f;
    struct sink s = {0};
    size_t n;

    n = (size_t)snprintf(ev, sizeof(ev), "data: {\"id\":\"");
    memset(ev + n, 'x', 4000);
    n += 4000;
    n += (size_t)snprintf(ev + n, sizeof(ev) - n, "\",\"choices\":[],\"usage\":{}}\n\n");
    usage_filter_init(&f, NULL);
    f.hold_max = 1024;
    for (size_t i = 0; i < n; i += 100)
        assert_int_equal(
            usage_filter_feed(&f, ev + i, n - i < 100 ? n - i : 100, sink_out, &s), 0);
    assert_int_equal(s.len, n);
    assert_memory_equal(s.buf, ev, n);
    assert_true(f.hold_peak <= 1024);
    assert_int_equal(f.dropped_events, 0);
    /* The next one is small again, and dropped. */
    assert_int_equal(usage_filter_feed(&f, small, sizeof(small) - 1, sink_out, &s), 0);
    assert_int_equal(s.len, n);
    assert_int_equal(f.dropped_events, 1);
    usage_filter_free(&f);
    free(s.buf);
}

/* A long usage-only chunk is held whole (it is below hold_max) and dropped; the big buffer it
 * needed is given back once the event is over, not kept for the rest of the stream. */
static void filter_long_event_buffer_returned(void **state)
{
    enum { ID = 20000 };
    static char ev[ID + 128];
    struct usage_filter f;
    struct sink s = {0};
    size_t n;

    n = (size_t)snprintf(ev, sizeof(ev), "data: {\"id\":\"");
    memset(ev + n, 'x', ID);
    n += ID;
    n += (size_t)snprintf(ev + n, sizeof(ev) - n, "\",\"choices\":[],\"usage\":{}}\n\n");
    usage_filter_init(&f, NULL);
    for (size_t i = 0; i < n; i += 1000)
        assert_int_equal(
            usage_filter_feed(&f, ev + i, n - i < 1000 ? n - i : 1000, sink_out, &s), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(f.dropped_events, 1);
    assert_true(f.hold_peak >= ID && f.hold_peak <= USAGE_FILTER_HOLD_MAX);
    assert_int_equal(f.hold_cap, 0);
    assert_null(f.hold);
    assert_int_equal(usage_filter_feed(&f, DONE, sizeof(DONE) - 1, sink_out, &s), 0);
    assert_int_equal(s.len, sizeof(DONE) - 1);
    assert_true(f.hold_cap <= 256);
    usage_filter_free(&f);
    free(s.buf);
}

/* At the end of the stream, what is held goes out as it is (a stream cut in the middle). */
static void filter_finish_releases(void **state)
{
    static const char cut[] = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n";
    struct usage_filter f;
    struct sink s = {0};

    usage_filter_init(&f, NULL);
    assert_int_equal(usage_filter_feed(&f, cut, sizeof(cut) - 1, sink_out, &s), 0);
    assert_int_equal(s.len, 0);
    assert_int_equal(usage_filter_held(&f), sizeof(cut) - 1);
    assert_int_equal(usage_filter_finish(&f, sink_out, &s), 0);
    assert_int_equal(s.len, sizeof(cut) - 1);
    assert_memory_equal(s.buf, cut, s.len);
    usage_filter_free(&f);
    usage_filter_free(&f); /* freeing twice is harmless */
    free(s.buf);
}

/* An out error stops the filter and is returned from then on. */
static void filter_out_error(void **state)
{
    struct usage_filter f;
    struct sink s = {0};

    s.fail_at = 2;
    usage_filter_init(&f, NULL);
    /* held bytes out (call 1), then the rest of the input (call 2: fails) */
    assert_int_equal(usage_filter_feed(&f, CHUNK_HEAD C_HI END_WITH, sizeof(CHUNK_HEAD C_HI
                                                                            END_WITH) - 1,
                                       sink_out, &s),
                     -32);
    assert_int_equal(usage_filter_feed(&f, DONE, sizeof(DONE) - 1, sink_out, &s), -32);
    assert_int_equal(usage_filter_finish(&f, sink_out, &s), -32);
    usage_filter_free(&f);
    free(s.buf);
}

/* 10 MB of content in one chunk, 1 KB at a time: nothing of it is held. */
static void filter_huge_content(void **state)
{
    enum { PIECE = 1024, TOTAL = 10 * 1024 * 1024 };
    static const char head[] = CHUNK_HEAD "{\"index\":0,\"delta\":{\"content\":\"";
    static const char tail[] = "\"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n";
    char piece[PIECE];
    struct usage_filter f;
    struct usage tap;
    uint64_t out = 0;
    struct sink s = {0};

    for (size_t i = 0; i < PIECE; i++)
        piece[i] = "ipsum \\\"usage\\\":null "[i % 21];
    piece[PIECE - 1] = ' ';
    usage_init(&tap, USAGE_CHAT, 1);
    usage_filter_init(&f, &tap);
    assert_int_equal(usage_filter_feed(&f, head, sizeof(head) - 1, sink_out, &s), 0);
    for (size_t sent = 0; sent < TOTAL; sent += PIECE) {
        s.len = 0;
        assert_int_equal(usage_filter_feed(&f, piece, PIECE, sink_out, &s), 0);
        assert_int_equal(s.len, PIECE); /* every byte of content goes out at once */
        out += s.len;
    }
    s.len = 0;
    assert_int_equal(usage_filter_feed(&f, tail, sizeof(tail) - 1, sink_out, &s), 0);
    assert_int_equal(s.len, sizeof(tail) - 1 - strlen(",\"usage\":null"));
    assert_int_equal(out, (uint64_t)TOTAL);
    assert_true(f.hold_peak <= 256);
    assert_string_equal(tap.model, "gpt-4o-mini");
    usage_filter_free(&f);
    free(s.buf);
}

/* 200,000 chunks (a 200k-token answer), cut at varying points: the client gets exactly the
 * stream without usage, the hold buffer never grows past its first allocation, and the tap
 * counts the usage chunk at the end. */
static void filter_long_stream(void **state)
{
    enum { EVENTS = 200000 };
    char with[1024], without[1024], buf[4096];
    struct usage_filter f;
    struct usage tap;
    struct sink s = {0};
    uint64_t expected_len = 0, compared = 0;
    size_t pending = 0, wn, won;

    usage_init(&tap, USAGE_CHAT, 1);
    usage_filter_init(&f, &tap);
    /* the first chunk allocates the hold buffer: measure after it */
    wn = (size_t)snprintf(with, sizeof(with), CHUNK_HEAD C_ROLE END_WITH);
    assert_int_equal(usage_filter_feed(&f, with, wn, sink_out, &s), 0);
    won = (size_t)snprintf(without, sizeof(without), CHUNK_HEAD C_ROLE END_WITHOUT);
    assert_int_equal(s.len, won);
    assert_memory_equal(s.buf, without, won);
    s.len = 0;
    for (int i = 0; i < EVENTS; i++) {
        wn = (size_t)snprintf(with, sizeof(with),
                              CHUNK_HEAD "{\"index\":0,\"delta\":{\"content\":\"t%d\"},"
                                         "\"logprobs\":null,\"finish_reason\":null}" END_WITH,
                              i);
        won = (size_t)snprintf(without, sizeof(without),
                               CHUNK_HEAD "{\"index\":0,\"delta\":{\"content\":\"t%d\"},"
                                          "\"logprobs\":null,\"finish_reason\":null}" END_WITHOUT,
                               i);
        /* batch a few events per read and cut inside them, like a TCP stream would */
        memcpy(buf + pending, with, wn);
        pending += wn;
        if (pending > 2000 || i == EVENTS - 1) {
            size_t cut = (size_t)(i * 7919) % pending;
            assert_int_equal(usage_filter_feed(&f, buf, cut, sink_out, &s), 0);
            assert_int_equal(usage_filter_feed(&f, buf + cut, pending - cut, sink_out, &s), 0);
            pending = 0;
        }
        expected_len += won;
    }
    /* A chunk is held only up to its choices: one small allocation for the whole stream. */
    assert_true(f.hold_peak <= 256);
    assert_int_equal(usage_filter_feed(&f, USAGE_CHUNK DONE, sizeof(USAGE_CHUNK DONE) - 1,
                                       sink_out, &s),
                     0);
    assert_int_equal(usage_filter_finish(&f, sink_out, &s), 0);
    expected_len += sizeof(DONE) - 1;
    assert_int_equal(s.len, expected_len);
    /* the output is the without-usage stream: regenerate it and compare */
    for (int i = 0; i < EVENTS; i++) {
        won = (size_t)snprintf(without, sizeof(without),
                               CHUNK_HEAD "{\"index\":0,\"delta\":{\"content\":\"t%d\"},"
                                          "\"logprobs\":null,\"finish_reason\":null}" END_WITHOUT,
                               i);
        assert_memory_equal(s.buf + compared, without, won);
        compared += won;
    }
    assert_memory_equal(s.buf + compared, DONE, sizeof(DONE) - 1);
    assert_true(f.hold_peak <= 512); /* the usage-only chunk is held whole, to be dropped */
    assert_int_equal(f.removed_members, EVENTS + 1);
    assert_int_equal(f.dropped_events, 1);
    assert_int_equal(tap.prompt_tokens, 9);
    assert_int_equal(tap.completion_tokens, 2);
    assert_true(tap.complete);
    assert_int_equal(tap.events, EVENTS + 3);
    usage_filter_free(&f);
    free(s.buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tap_whole),
        cmocka_unit_test(tap_byte_by_byte),
        cmocka_unit_test(tap_every_split),
        cmocka_unit_test(model_truncated_at_bound),
        cmocka_unit_test(model_truncated_on_a_character),
        cmocka_unit_test(garbage_never_counts),
        cmocka_unit_test(deep_nesting),
        cmocka_unit_test(huge_content_constant_memory),
        cmocka_unit_test(kind_for_path),
        cmocka_unit_test(filter_whole),
        cmocka_unit_test(filter_byte_by_byte),
        cmocka_unit_test(filter_every_split),
        cmocka_unit_test(filter_every_split_in_three),
        cmocka_unit_test(filter_feeds_the_tap),
        cmocka_unit_test(filter_holds_little),
        cmocka_unit_test(filter_hold_bound),
        cmocka_unit_test(filter_long_event_buffer_returned),
        cmocka_unit_test(filter_finish_releases),
        cmocka_unit_test(filter_out_error),
        cmocka_unit_test(filter_huge_content),
        cmocka_unit_test(filter_long_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
