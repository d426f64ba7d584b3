/* config — fuzz target for ferry's configuration parsing (src/config.c, src/config_file.c):
 * config_parse_duration and config_parse_size on every NUL-separated piece of the input, then
 * config_load on the pieces as argv. Pieces of the form FERRY_NAME=value go to the environment
 * instead; a piece starting with "YAML:" is written to a scratch file, and every configuration
 * file named on the command line or in FERRY_CONFIG is that file (the fuzzer never opens a path
 * of its own making). Invariants:
 * the parsers agree with a plain reading of what they accept, and an accepted configuration is
 * one ferry can run with (an http(s) upstream without trailing slash whose origin is a prefix,
 * limits within their documented bounds, NUL-terminated strings). config_load prints errors and
 * --help: stdout and stderr (the FILE streams, not fd 2, which sanitizers and libFuzzer use) go
 * to /dev/null. */
#include <stdio.h>

/* config_load's messages go to the silenced stderr; the fuzzer's own reports to the real one. */
static FILE *real_stderr;
#define FZ_ERR (real_stderr != NULL ? real_stderr : stderr)

#include "fuzz.h"

#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"

#define MAX_ARGS 32
#define MAX_ENV 4

extern char **environ;
static char env_slots[MAX_ENV][512];
static char yaml_path[64];
static char yaml_env[80];

/* config_file.c parses a file once in a forked child first, so that a libfyaml crash or hang
 * refuses the file instead of killing ferry. In that child the fuzzer's and ASan's handlers must
 * not run (they would report the expected crash and write an artifact): default signals, as in
 * ferry itself, and no stderr. What is checked is that the parent survives and refuses. */
static void quiet_child(void)
{
    static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM};
    int fd = open("/dev/null", O_WRONLY);

    for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
        signal(sigs[i], SIG_DFL);
    if (fd >= 0)
        dup2(fd, 2);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    FILE *null_out = fopen("/dev/null", "w");

    (void)argc;
    (void)argv;
    pthread_atfork(NULL, NULL, quiet_child);
    real_stderr = stderr;
    if (null_out != NULL) {
        stdout = null_out;
        stderr = null_out;
    }
    snprintf(yaml_path, sizeof(yaml_path), "/tmp/ferry-fuzz-config-%d.yaml", (int)getpid());
    snprintf(yaml_env, sizeof(yaml_env), "FERRY_CONFIG=%s", yaml_path);
    /* A clean environment: nothing FERRY_* from whoever runs the fuzzer. */
    for (;;) {
        char name[256];
        char **e;
        for (e = environ; *e != NULL; e++)
            if (strncmp(*e, "FERRY_", 6) == 0)
                break;
        if (*e == NULL)
            break;
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(*e, "="), *e);
        unsetenv(name);
    }
    return 0;
}

static void check_duration(const char *s)
{
    uint64_t ms = 0;
    if (config_parse_duration(s, &ms) != 0)
        return;
    FZ_CHECK(isdigit((unsigned char)s[0]) || s[0] == '.', "duration '%s' accepted", s);
    FZ_CHECK(ms <= 1000000000000000ull, "duration '%s' = %llu ms", s, (unsigned long long)ms);
    for (const char *p = s; *p; p++)
        FZ_CHECK(isdigit((unsigned char)*p) || *p == '.' || *p == 'm' || *p == 's' || *p == 'h',
                 "duration '%s' accepted with byte 0x%02x", s, (unsigned char)*p);
}

static void check_size(const char *s)
{
    uint64_t b = 0, again = 0;
    char plain[32];
    if (config_parse_size(s, &b) != 0)
        return;
    FZ_CHECK(isdigit((unsigned char)s[0]), "size '%s' accepted", s);
    snprintf(plain, sizeof(plain), "%llu", (unsigned long long)b);
    FZ_CHECK(config_parse_size(plain, &again) == 0 && again == b, "size '%s' = %llu does not "
             "read back", s, (unsigned long long)b);
    if (strspn(s, "0123456789") == strlen(s) && strlen(s) < 19)
        FZ_CHECK(b == strtoull(s, NULL, 10), "size '%s' = %llu", s, (unsigned long long)b);
}

static void check_config(const struct config *cfg)
{
    size_t ulen = strnlen(cfg->upstream, sizeof(cfg->upstream));
    size_t olen = strnlen(cfg->upstream_origin, sizeof(cfg->upstream_origin));

    FZ_CHECK(ulen < sizeof(cfg->upstream) && olen < sizeof(cfg->upstream_origin) &&
                 strnlen(cfg->listen_host, sizeof(cfg->listen_host)) < sizeof(cfg->listen_host) &&
                 strnlen(cfg->ca_file, sizeof(cfg->ca_file)) < sizeof(cfg->ca_file) &&
                 strnlen(cfg->drop_headers, sizeof(cfg->drop_headers)) <
                     sizeof(cfg->drop_headers),
             "a string is not NUL-terminated");
    FZ_CHECK(strncasecmp(cfg->upstream, "http://", 7) == 0 ||
                 strncasecmp(cfg->upstream, "https://", 8) == 0,
             "upstream '%s'", cfg->upstream);
    FZ_CHECK(ulen > 0 && cfg->upstream[ulen - 1] != '/', "upstream '%s' ends with /",
             cfg->upstream);
    FZ_CHECK(strpbrk(cfg->upstream, " \t\r\n?#") == NULL, "upstream '%s'", cfg->upstream);
    FZ_CHECK(olen > 0 && olen <= ulen && memcmp(cfg->upstream, cfg->upstream_origin, olen) == 0 &&
                 (cfg->upstream[olen] == '\0' || cfg->upstream[olen] == '/'),
             "origin '%s' of '%s'", cfg->upstream_origin, cfg->upstream);
    FZ_CHECK(strchr(cfg->upstream_origin + (tolower((unsigned char)cfg->upstream_origin[4]) == 's' ? 8 : 7), '/') == NULL,
             "origin '%s' has a path", cfg->upstream_origin);
    FZ_CHECK(cfg->listen_host[0] != '\0', "empty listen host");
    FZ_CHECK(cfg->listen_port >= 0 && cfg->listen_port <= 65535, "port %d", cfg->listen_port);
    FZ_CHECK(cfg->threads >= 1 && cfg->threads <= 1024, "threads %d", cfg->threads);
    FZ_CHECK(cfg->buffer_size >= 4096, "buffer %zu", cfg->buffer_size);
    FZ_CHECK(cfg->max_header_bytes >= 256 && cfg->max_request_line >= 64 && cfg->max_headers >= 4,
             "header limits");
    FZ_CHECK(cfg->max_redirects >= 0 && cfg->max_redirects <= 20, "redirects %d",
             cfg->max_redirects);
    FZ_CHECK(cfg->access_log == 0 || cfg->access_log == 1, "access_log %d", cfg->access_log);
    FZ_CHECK(cfg->nupstreams >= 1 && cfg->nupstreams <= CONFIG_MAX_UPSTREAMS, "%zu upstreams",
             cfg->nupstreams);
    FZ_CHECK(cfg->nroutes >= 1 && cfg->nroutes <= CONFIG_MAX_ROUTES, "%zu routes", cfg->nroutes);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        FZ_CHECK(cfg->routes[i].upstream >= cfg->upstreams &&
                     cfg->routes[i].upstream < cfg->upstreams + cfg->nupstreams,
                 "route %zu points outside the upstreams", i);
    }
}

/* config_load keeps key pools, their health and model lists on the heap for the life of the
 * process (there is no config_free yet). */
static void free_config(struct config *cfg)
{
    for (size_t i = 0; i < CONFIG_MAX_UPSTREAMS && i < cfg->nupstreams; i++) {
        for (size_t k = 0; cfg->upstreams[i].keys != NULL && k < cfg->upstreams[i].nkeys; k++)
            free(cfg->upstreams[i].keys[k]);
        free(cfg->upstreams[i].keys);
        free(cfg->upstreams[i].health);
    }
    for (size_t i = 0; i < CONFIG_MAX_ROUTES && i < cfg->nroutes; i++) {
        for (size_t k = 0; cfg->routes[i].models != NULL && k < cfg->routes[i].nmodels; k++)
            free(cfg->routes[i].models[k]);
        free(cfg->routes[i].models);
    }
}

/* YAML 1.2 is Unicode: a file that is not UTF-8 is not YAML and must be refused (libfyaml 0.7.12
 * reads an invalid scalar as empty and loops forever on some invalid directives). */
static int utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = s[i] < 0x80 ? 0 : (s[i] & 0xe0) == 0xc0 ? 1 : (s[i] & 0xf0) == 0xe0 ? 2
                                  : (s[i] & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || i + k >= n + (k ? 0 : 1))
            return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
        i += k + 1;
    }
    return 1;
}

static int is_config_flag(const char *a)
{
    return strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf, *argv[MAX_ARGS + 3];
    const char *env_set[MAX_ENV];
    int argc = 1, nenv = 0, yaml_utf8 = 1, yaml_named = 0;
    size_t i = 0;
    struct config cfg;

    if (size > 8192)
        return 0;
    buf = malloc(size + 1);
    if (buf == NULL)
        abort();
    memcpy(buf, data, size);
    buf[size] = '\0';
    argv[0] = "ferry";
    while (i < size && argc <= MAX_ARGS) {
        char *piece = buf + i;
        size_t n = strlen(piece);
        check_duration(piece);
        check_size(piece);
        if (strncmp(piece, "YAML:", 5) == 0) {
            FILE *f;
            yaml_utf8 = utf8_valid((const unsigned char *)piece + 5, n - 5);
            f = fopen(yaml_path, "w");
            if (f != NULL) {
                fwrite(piece + 5, 1, n - 5, f);
                fclose(f);
            }
        } else if (strncmp(piece, "FERRY_CONFIG=", 13) == 0) {
            yaml_named = 1;
            if (nenv < MAX_ENV && putenv(yaml_env) == 0) {
                env_set[nenv] = yaml_env;
                nenv++;
            }
        } else if (is_config_flag(piece)) {
            yaml_named = 1;
            argv[argc++] = "--config";
            if (argc <= MAX_ARGS)
                argv[argc++] = yaml_path;
            i += n + 1;
            if (strncmp(piece, "--config=", 9) != 0 && i < size)
                i += strlen(buf + i) + 1; /* the path that followed */
            continue;
        } else if (strncmp(piece, "FERRY_", 6) == 0 && strchr(piece, '=') != NULL && nenv < MAX_ENV &&
            n < sizeof(env_slots[0])) {
            /* putenv with our own storage: setenv would keep every value ever set */
            memcpy(env_slots[nenv], piece, n + 1);
            if (putenv(env_slots[nenv]) == 0) {
                env_set[nenv] = env_slots[nenv];
                nenv++;
            }
        } else {
            argv[argc++] = piece;
        }
        i += n + 1;
    }
    argv[argc] = NULL;

    memset(&cfg, 0xa5, sizeof(cfg)); /* config_load must not depend on what was there */
    memset(cfg.upstreams, 0, sizeof(cfg.upstreams)); /* so free_config can run after a refusal */
    memset(cfg.routes, 0, sizeof(cfg.routes));
    cfg.nupstreams = cfg.nroutes = 0;
    if (config_load(&cfg, argc, argv) == 0) {
        check_config(&cfg);
        FZ_CHECK(!yaml_named || yaml_utf8, "a configuration file that is not UTF-8 was accepted");
    }
    free_config(&cfg);
    unlink(yaml_path);

    for (int k = 0; k < nenv; k++) {
        char name[512];
        snprintf(name, sizeof(name), "%.*s", (int)strcspn(env_set[k], "="), env_set[k]);
        unsetenv(name);
    }
    free(buf);
    return 0;
}
