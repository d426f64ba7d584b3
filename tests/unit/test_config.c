/* test_config — defaults, FERRY_* variables and flags. A wrong default or a value parsed the
 * wrong way changes behaviour silently (a 600 s first-byte timeout read as 600 ms cuts every
 * reasoning model off), so parsers and defaults are pinned to exact numbers. Each test starts
 * from an environment without FERRY_* variables; config_load's complaints go to stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
/* ---- parsers ---- */

struct parse_case {
    const char *in;
    int rc; /* 0 = parsed to want, -1 = refused */
    uint64_t want;
};

/* clang-format off */
#define OK(s, v) {.in = s, .rc = 0, .want = v}
#define BAD(s) {.in = s, .rc = -1}
/* clang-format on */

static const struct parse_case durations[] = {
    OK("500ms", 500),  OK("0ms", 0),       OK("2s", 2000),    OK("1.5s", 1500),    OK("0.5", 500),
    OK("10m", 600000), OK("1.5m", 90000),  OK("1h", 3600000), OK("24h", 86400000), OK("0", 0),
    OK("30", 30000),   OK("600s", 600000), BAD(""),           BAD("-1s"),          BAD("-0"),
    BAD("abc"),        BAD("5x"),          BAD("5 s"),        BAD(" 5s"),          BAD("5s "),
    BAD("5S"),         BAD("5sec"),        BAD("s"),          BAD("ms"),           BAD("1e400"),
    BAD("1e20s"),      BAD("inf"),         BAD("nan"),
};

static const struct parse_case sizes[] = {
    OK("0", 0),
    OK("512", 512),
    OK("64k", 65536),
    OK("64K", 65536),
    OK("1m", 1048576),
    OK("2g", 2147483648ull),
    OK("10kb", 10240),
    OK("10KB", 10240),
    OK("8mb", 8388608),
    OK("18446744073709551615", UINT64_MAX), /* the largest plain value */
    OK("17179869183g", 17179869183ull << 30),
    BAD(""),
    BAD("-1"),
    BAD("+1"),
    BAD(" 1"),
    BAD("1 "),
    BAD("1.5k"),
    BAD("k"),
    BAD("1t"),
    BAD("1kk"),
    BAD("1kbb"),
    BAD("0x10"),
    BAD("18446744073709551616"), /* 2^64 */
    BAD("17179869184g"),         /* 2^64 with the suffix */
    BAD("99999999999999999999999"),
};

static void check_parser(const char *what, int (*parse)(const char *, uint64_t *),
                         const struct parse_case *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct parse_case *c = &cases[i];
        uint64_t got = 0xdeadbeef; /* a value no case expects: the parser must write */
        int rc = parse(c->in, &got);
        if (c->rc != 0) {
            if (rc != -1)
                fail_msg("%s(\"%s\") = %d (%llu), want -1", what, c->in, rc,
                         (unsigned long long)got);
        } else if (rc != 0 || got != c->want) {
            fail_msg("%s(\"%s\") = %d, %llu; want 0, %llu", what, c->in, rc,
                     (unsigned long long)got, (unsigned long long)c->want);
        }
    }
}

static void parse_duration(void **state)
{
    (void)state;
    check_parser("config_parse_duration", config_parse_duration, durations, COUNT(durations));
}

static void parse_size(void **state)
{
    (void)state;
    check_parser("config_parse_size", config_parse_size, sizes, COUNT(sizes));
}

/* ---- config_load ---- */

/* Removes every FERRY_* variable so the developer's shell cannot change the results. */
static int clean_env(void **state)
{
    char name[256];

    (void)state;
    for (;;) {
        char **e = environ;
        while (*e != NULL && strncmp(*e, "FERRY_", 6) != 0)
            e++;
        if (*e == NULL)
            return 0;
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
        if (unsetenv(name) != 0)
            return -1;
    }
}

/* config_load with argv = {"ferry", args..., NULL}. */
#define LOAD(cfg, ...) load_argv(cfg, (const char *[]){"ferry", __VA_ARGS__, NULL})
#define LOAD0(cfg) load_argv(cfg, (const char *[]){"ferry", NULL})

static int load_argv(struct config *cfg, const char **args)
{
    char *argv[64];
    int argc = 0;

    while (args[argc] != NULL) {
        assert_true(argc < 63);
        argv[argc] = (char *)args[argc];
        argc++;
    }
    argv[argc] = NULL;
    memset(cfg, 0xa5, sizeof(*cfg)); /* config_load must set every field itself */
    return config_load(cfg, argc, argv);
}

static void load_defaults(void **state)
{
    struct config cfg;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);

    (void)state;
    assert_int_equal(LOAD0(&cfg), 0);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.upstream, "https://api.openai.com");
    assert_string_equal(cfg.upstream_origin, "https://api.openai.com");
    assert_string_equal(cfg.ca_file, "");
    assert_int_equal(cfg.threads, cores > 0 ? cores : 1);
    assert_int_equal(cfg.connect_timeout, 10000);
    assert_int_equal(cfg.first_byte_timeout, 600000);
    assert_int_equal(cfg.idle_timeout, 300000);
    assert_int_equal(cfg.head_timeout, 30000);
    assert_int_equal(cfg.body_timeout, 60000);
    assert_int_equal(cfg.write_timeout, 60000);
    assert_int_equal(cfg.keepalive_timeout, 75000);
    assert_int_equal(cfg.drain_timeout, 30000);
    assert_int_equal(cfg.max_request_line, 8192);
    assert_int_equal(cfg.max_header_bytes, 32768);
    assert_int_equal(cfg.max_headers, 100);
    assert_int_equal(cfg.max_body, 536870912);
    assert_int_equal(cfg.max_chunk_ext, 256);
    assert_int_equal(cfg.buffer_size, 65536);
    assert_int_equal(cfg.max_response_header_bytes, 65536);
    assert_int_equal(cfg.max_redirects, 5);
    assert_string_equal(cfg.drop_headers, "cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*");
    assert_int_equal(cfg.drop.n, 6); /* compiled */
    assert_int_equal(headers_set_has(&cfg.drop, "X-Forwarded-For", 15), 1);
    assert_int_equal(cfg.access_log, 1);
}

struct listen_case {
    const char *arg[3];
    const char *host;
    int port;
};

static const struct listen_case listens[] = {
    {{"--listen", "127.0.0.1:0"}, "127.0.0.1", 0}, {{"--listen", "[::1]:9000"}, "::1", 9000},
    {{"--listen", "[::]:443"}, "::", 443},         {{"-l", "localhost:65535"}, "localhost", 65535},
    {{"--listen=0.0.0.0:9000"}, "0.0.0.0", 9000},
};

static void load_listen(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(listens); i++) {
        const struct listen_case *c = &listens[i];
        struct config cfg;
        int rc = c->arg[1] ? LOAD(&cfg, c->arg[0], c->arg[1]) : LOAD(&cfg, c->arg[0]);
        if (rc != 0)
            fail_msg("%s %s: config_load = %d", c->arg[0], c->arg[1] ? c->arg[1] : "", rc);
        assert_string_equal(cfg.listen_host, c->host);
        assert_int_equal(cfg.listen_port, c->port);
    }
}

struct upstream_case {
    const char *arg;
    const char *upstream, *origin;
};

static const struct upstream_case upstreams[] = {
    {"http://x:1/base/", "http://x:1/base", "http://x:1"},
    {"https://api.deepseek.com", "https://api.deepseek.com", "https://api.deepseek.com"},
    {"https://api.deepseek.com/", "https://api.deepseek.com", "https://api.deepseek.com"},
    {"https://gateway.example/openai/v1///", "https://gateway.example/openai/v1",
     "https://gateway.example"},
    {"http://[::1]:8081/v1", "http://[::1]:8081/v1", "http://[::1]:8081"},
    {"HTTPS://Api.Example", "HTTPS://Api.Example", "HTTPS://Api.Example"},
};

static void load_upstream(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(upstreams); i++) {
        const struct upstream_case *c = &upstreams[i];
        struct config cfg;
        if (LOAD(&cfg, "--upstream", c->arg) != 0)
            fail_msg("--upstream %s refused", c->arg);
        assert_string_equal(cfg.upstream, c->upstream);
        assert_string_equal(cfg.upstream_origin, c->origin);
    }
}

/* Each option through its flag, with the value stored where the relay reads it. */
static void load_flags(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(LOAD(&cfg, "--first-byte-timeout", "20m", "--idle-timeout=90s",
                          "--connect-timeout", "1500ms", "--head-timeout", "5", "--body-timeout",
                          "2s", "--write-timeout", "3s", "--keepalive-timeout", "0",
                          "--drain-timeout", "1m", "-t", "3", "--ca-file", "/etc/ca.pem",
                          "--max-request-line", "4k", "--max-header-bytes", "16k", "--max-headers",
                          "50", "--max-body", "1g", "--max-chunk-ext", "64", "--buffer-size",
                          "128k", "--max-response-header-bytes", "32k", "--max-redirects", "0",
                          "--drop-headers", "cookie", "-q"),
                     0);
    assert_int_equal(cfg.first_byte_timeout, 1200000);
    assert_int_equal(cfg.idle_timeout, 90000);
    assert_int_equal(cfg.connect_timeout, 1500);
    assert_int_equal(cfg.head_timeout, 5000);
    assert_int_equal(cfg.body_timeout, 2000);
    assert_int_equal(cfg.write_timeout, 3000);
    assert_int_equal(cfg.keepalive_timeout, 0);
    assert_int_equal(cfg.drain_timeout, 60000);
    assert_int_equal(cfg.threads, 3);
    assert_string_equal(cfg.ca_file, "/etc/ca.pem");
    assert_int_equal(cfg.max_request_line, 4096);
    assert_int_equal(cfg.max_header_bytes, 16384);
    assert_int_equal(cfg.max_headers, 50);
    assert_int_equal(cfg.max_body, 1073741824);
    assert_int_equal(cfg.max_chunk_ext, 64);
    assert_int_equal(cfg.buffer_size, 131072);
    assert_int_equal(cfg.max_response_header_bytes, 32768);
    assert_int_equal(cfg.max_redirects, 0);
    assert_string_equal(cfg.drop_headers, "cookie");
    assert_int_equal(cfg.drop.n, 1);
    assert_int_equal(headers_set_has(&cfg.drop, "via", 3), 0);
    assert_int_equal(cfg.access_log, 0);
    /* untouched ones keep their defaults */
    assert_string_equal(cfg.upstream, "https://api.openai.com");
    assert_int_equal(cfg.listen_port, 8080);
}

/* --threads 0 means "one", not "none". */
static void load_threads_zero(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(LOAD(&cfg, "--threads", "0"), 0);
    assert_int_equal(cfg.threads, 1);
}

static void load_env_then_flag(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(setenv("FERRY_MAX_BODY", "1k", 1), 0);
    assert_int_equal(setenv("FERRY_FIRST_BYTE_TIMEOUT", "5s", 1), 0);
    assert_int_equal(setenv("FERRY_LISTEN", "127.0.0.1:7000", 1), 0);
    assert_int_equal(setenv("FERRY_UPSTREAM", "http://mock:9/v1/", 1), 0);

    assert_int_equal(LOAD0(&cfg), 0);
    assert_int_equal(cfg.max_body, 1024);
    assert_int_equal(cfg.first_byte_timeout, 5000);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 7000);
    assert_string_equal(cfg.upstream, "http://mock:9/v1");
    assert_string_equal(cfg.upstream_origin, "http://mock:9");

    /* a flag beats the environment, option by option */
    assert_int_equal(LOAD(&cfg, "--max-body", "2k", "--listen", "[::1]:7001"), 0);
    assert_int_equal(cfg.max_body, 2048);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 7001);
    assert_int_equal(cfg.first_byte_timeout, 5000);
    assert_string_equal(cfg.upstream, "http://mock:9/v1");
}

static void load_env_quiet(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(setenv("FERRY_QUIET", "1", 1), 0);
    assert_int_equal(LOAD0(&cfg), 0);
    assert_int_equal(cfg.access_log, 0);
    assert_int_equal(setenv("FERRY_QUIET", "0", 1), 0);
    assert_int_equal(LOAD0(&cfg), 0);
    assert_int_equal(cfg.access_log, 1);
    assert_int_equal(setenv("FERRY_QUIET", "", 1), 0);
    assert_int_equal(LOAD0(&cfg), 0);
    assert_int_equal(cfg.access_log, 1);
}

static void load_env_invalid(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(setenv("FERRY_MAX_BODY", "lots", 1), 0);
    assert_int_equal(LOAD0(&cfg), -1);
    /* even when a flag would override it: a broken environment is reported, not ignored */
    assert_int_equal(LOAD(&cfg, "--max-body", "1k"), -1);
}

struct reject_case {
    const char *why;
    const char *arg[3];
};

static const struct reject_case rejects[] = {
    {"ftp upstream", {"--upstream", "ftp://x"}},
    {"upstream without scheme", {"--upstream", "api.openai.com"}},
    {"upstream without host", {"--upstream", "http://"}},
    {"upstream with only slashes", {"--upstream", "https:///v1"}},
    {"upstream with a space", {"--upstream", "http://x/a b"}},
    {"upstream with a query", {"--upstream", "http://x/v1?k=1"}},
    {"upstream with a fragment", {"--upstream", "http://x/#f"}},
    {"unknown long option", {"--nope", "1"}},
    {"unknown short option", {"-x"}},
    {"a bare word", {"serve"}},
    {"missing value", {"--listen"}},
    {"missing value, short", {"-u"}},
    {"listen without port", {"--listen", "127.0.0.1"}},
    {"listen without host", {"--listen", ":80"}},
    {"listen port too big", {"--listen", "127.0.0.1:65536"}},
    {"listen port not a number", {"--listen", "127.0.0.1:http"}},
    {"listen port empty", {"--listen", "127.0.0.1:"}},
    {"listen port negative", {"--listen", "127.0.0.1:-1"}},
    {"listen empty brackets", {"--listen", "[]:80"}},
    {"bad duration", {"--idle-timeout", "5x"}},
    {"bad size", {"--max-body", "1.5k"}},
    {"threads negative", {"--threads", "-1"}},
    {"threads not a number", {"--threads", "many"}},
    {"buffer below 4k", {"--buffer-size", "1k"}},
    {"header bytes below 256", {"--max-header-bytes", "255"}},
    {"request line below 64", {"--max-request-line", "63"}},
    {"headers below 4", {"--max-headers", "3"}},
    {"redirects above 20", {"--max-redirects", "21"}},
};

static void load_rejects(void **state)
{
    (void)state;
    for (size_t i = 0; i < COUNT(rejects); i++) {
        const struct reject_case *c = &rejects[i];
        struct config cfg;
        int rc = c->arg[1] ? LOAD(&cfg, c->arg[0], c->arg[1]) : LOAD(&cfg, c->arg[0]);
        if (rc != -1)
            fail_msg("[%s] %s %s: config_load = %d, want -1", c->why, c->arg[0],
                     c->arg[1] ? c->arg[1] : "", rc);
    }
}

/* The limits at their lowest accepted values are accepted (the refusals above are exact). */
static void load_limit_floors(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(LOAD(&cfg, "--buffer-size", "4k", "--max-header-bytes", "256",
                          "--max-request-line", "64", "--max-headers", "4", "--max-redirects",
                          "20"),
                     0);
    assert_int_equal(cfg.buffer_size, 4096);
    assert_int_equal(cfg.max_header_bytes, 256);
    assert_int_equal(cfg.max_request_line, 64);
    assert_int_equal(cfg.max_headers, 4);
    assert_int_equal(cfg.max_redirects, 20);
}

static void load_version(void **state)
{
    struct config cfg;

    (void)state;
    assert_int_equal(LOAD(&cfg, "--version"), 1);
    assert_int_equal(LOAD(&cfg, "--listen", "127.0.0.1:1", "-V"), 1);
}

#define ENV_TEST(f) cmocka_unit_test_setup(f, clean_env)

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_duration), cmocka_unit_test(parse_size),
        ENV_TEST(load_defaults),          ENV_TEST(load_listen),
        ENV_TEST(load_upstream),          ENV_TEST(load_flags),
        ENV_TEST(load_threads_zero),      ENV_TEST(load_env_then_flag),
        ENV_TEST(load_env_quiet),         ENV_TEST(load_env_invalid),
        ENV_TEST(load_rejects),           ENV_TEST(load_limit_floors),
        ENV_TEST(load_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
