/* config — defaults, FERRY_* environment variables and command-line flags, in that order of
 * precedence (a flag beats the environment). Every timeout and limit is settable both ways;
 * a malformed value stops ferry with a message naming the flag or variable. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fnmatch.h>
#include <unistd.h>

enum opt_kind { OPT_STR, OPT_LISTEN, OPT_INT, OPT_DURATION, OPT_SIZE, OPT_FLAG };

struct opt {
    const char *name; /* flag name without dashes; env is FERRY_ + upper(name with '-' -> '_') */
    char short_name;
    enum opt_kind kind;
    size_t offset;
    size_t width; /* string capacity or integer width */
    const char *help;
};

#define OFF(f) offsetof(struct config, f)
#define W(f) sizeof(((struct config *)0)->f)

static const struct opt opts[] = {
    {"config", 'c', OPT_STR, OFF(config_file), W(config_file),
     "YAML configuration file (settings by these names, upstreams:, routes:)"},
    {"auth", 0, OPT_STR, OFF(auth), W(auth),
     "none: clients' own credentials go upstream (default); keys: relay-issued keys required"},
    {"store", 0, OPT_STR, OFF(store), W(store), "SQLite database for keys and usage (default ./ferry.db)"},
    {"listen", 'l', OPT_LISTEN, 0, 0, "HOST:PORT to listen on (default 0.0.0.0:8080)"},
    {"upstream", 'u', OPT_STR, OFF(upstream), W(upstream),
     "upstream base URL (default https://api.openai.com)"},
    {"threads", 't', OPT_INT, OFF(threads), W(threads), "worker threads (default: number of cores)"},
    {"ca-file", 0, OPT_STR, OFF(ca_file), W(ca_file),
     "CA bundle to verify the upstream with (default: system store)"},
    {"proxy", 0, OPT_STR, OFF(proxy), W(proxy),
     "egress proxy for upstream calls: http://, socks5:// or socks5h://host:port "
     "(default none; http_proxy and friends are ignored)"},
    {"connect-timeout", 0, OPT_DURATION, OFF(connect_timeout), 0, "upstream connect + TLS (default 10s)"},
    {"first-byte-timeout", 0, OPT_DURATION, OFF(first_byte_timeout), 0,
     "request sent -> upstream response head (default 600s)"},
    {"idle-timeout", 0, OPT_DURATION, OFF(idle_timeout), 0,
     "silence between upstream response chunks (default 300s)"},
    {"head-timeout", 0, OPT_DURATION, OFF(head_timeout), 0,
     "first byte -> complete request head from the client (default 30s)"},
    {"body-timeout", 0, OPT_DURATION, OFF(body_timeout), 0,
     "silence while reading a request body (default 60s)"},
    {"write-timeout", 0, OPT_DURATION, OFF(write_timeout), 0,
     "no write progress to a client that has data pending (default 60s)"},
    {"keepalive-timeout", 0, OPT_DURATION, OFF(keepalive_timeout), 0,
     "idle keep-alive connection (default 75s)"},
    {"drain-timeout", 0, OPT_DURATION, OFF(drain_timeout), 0,
     "on SIGTERM/SIGINT, how long in-flight requests may finish (default 30s)"},
    {"max-request-line", 0, OPT_SIZE, OFF(max_request_line), W(max_request_line),
     "longest request line, else 414 (default 8k)"},
    {"max-header-bytes", 0, OPT_SIZE, OFF(max_header_bytes), W(max_header_bytes),
     "largest request head, else 431 (default 32k)"},
    {"max-headers", 0, OPT_SIZE, OFF(max_headers), W(max_headers),
     "most request header fields, else 431 (default 100)"},
    {"max-body", 0, OPT_SIZE, OFF(max_body), W(max_body), "largest request body, else 413 (default 512m)"},
    {"max-chunk-ext", 0, OPT_SIZE, OFF(max_chunk_ext), W(max_chunk_ext),
     "longest chunk extension in a chunked request body (default 256)"},
    {"buffer-size", 0, OPT_SIZE, OFF(buffer_size), W(buffer_size),
     "buffered bytes per direction per request (default 64k)"},
    {"read-buffer-size", 0, OPT_SIZE, OFF(read_buffer_size), W(read_buffer_size),
     "bytes read from the upstream at a time, one buffer per worker (default 8k, 1k..512k)"},
    {"upstream-client", 0, OPT_STR, OFF(upstream_client), W(upstream_client),
     "ferry: the built-in HTTP/1.1 client, libcurl only behind an egress proxy (default); "
     "curl: libcurl for every upstream call"},
    {"upstream-keepalive", 0, OPT_SIZE, OFF(upstream_keepalive), W(upstream_keepalive),
     "idle upstream connections kept per upstream, per worker thread (default 1024, 0 = none)"},
    {"upstream-keepalive-timeout", 0, OPT_DURATION, OFF(upstream_keepalive_timeout), 0,
     "how long an idle upstream connection is kept (default 60s)"},
    {"max-response-header-bytes", 0, OPT_SIZE, OFF(max_response_header_bytes),
     W(max_response_header_bytes), "largest upstream response head, else 502 (default 64k)"},
    {"max-connections", 0, OPT_SIZE, OFF(max_connections), W(max_connections),
     "open client connections; past it new ones get 503 and are closed (default 10000)"},
    {"max-retries", 0, OPT_INT, OFF(max_retries), W(max_retries),
     "with a key pool: other keys tried on 401/429/5xx/connect errors before any byte reached "
     "the client (default 2)"},
    {"key-cooldown", 0, OPT_DURATION, OFF(key_cooldown), 0,
     "how long a rate-limited pool key rests when the upstream sends no retry-after (default 10s)"},
    {"key-probe-interval", 0, OPT_DURATION, OFF(key_probe_interval), 0,
     "how often a disabled pool key is probed with GET /v1/models (default 60s)"},
    {"max-redirects", 0, OPT_INT, OFF(max_redirects), W(max_redirects),
     "upstream redirects followed (default 5, 0 = pass them to the client)"},
    {"drop-headers", 0, OPT_STR, OFF(drop_headers), W(drop_headers),
     "request headers not sent upstream, comma list, '*' suffix = prefix "
     "(default cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*)"},
    {"half-close", 0, OPT_FLAG, OFF(half_close), W(half_close),
     "a client that shuts down its sending side after a complete request still gets the "
     "response (default: EOF cancels the upstream call at once, as a disconnect would)"},
    {"quiet", 'q', OPT_FLAG, OFF(access_log), W(access_log), "no access log on stdout"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static void config_defaults(struct config *cfg)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->listen_host, sizeof(cfg->listen_host), "0.0.0.0");
    cfg->listen_port = 8080;
    snprintf(cfg->upstream, sizeof(cfg->upstream), "https://api.openai.com");
    cfg->threads = n > 0 ? (int)n : 1;
    cfg->connect_timeout = 10000;
    cfg->first_byte_timeout = 600000;
    cfg->idle_timeout = 300000;
    cfg->head_timeout = 30000;
    cfg->body_timeout = 60000;
    cfg->write_timeout = 60000;
    cfg->keepalive_timeout = 75000;
    cfg->drain_timeout = 30000;
    cfg->max_request_line = 8192;
    cfg->max_header_bytes = 32768;
    cfg->max_headers = 100;
    cfg->max_body = 512ull << 20;
    cfg->max_chunk_ext = 256;
    cfg->buffer_size = 65536;
    cfg->max_response_header_bytes = 65536;
    cfg->read_buffer_size = 8192;
    snprintf(cfg->upstream_client, sizeof(cfg->upstream_client), "ferry");
    cfg->upstream_keepalive = 1024;
    cfg->upstream_keepalive_timeout = 60000;
    cfg->max_redirects = 5;
    cfg->max_retries = 2;
    cfg->key_cooldown = 10000;
    cfg->key_probe_interval = 60000;
    cfg->max_connections = 10000;
    snprintf(cfg->drop_headers, sizeof(cfg->drop_headers),
             "cookie,forwarded,via,x-forwarded-*,x-real-ip,cf-*");
    cfg->access_log = 1;
    snprintf(cfg->store, sizeof(cfg->store), "./ferry.db");
    snprintf(cfg->auth, sizeof(cfg->auth), "none");
}

int config_parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    double v, mult = 1000.0;

    /* Plain decimal only: strtod alone would also take "+5", "0x10" or "inf". */
    if (s == NULL || !(isdigit((unsigned char)*s) || (*s == '.' && isdigit((unsigned char)s[1]))))
        return -1;
    for (const char *p = s; *p && !isalpha((unsigned char)*p); p++)
        if (!isdigit((unsigned char)*p) && *p != '.')
            return -1;
    if (strpbrk(s, "xXeEpP") != NULL && strcspn(s, "xXeEpP") < strcspn(s, "msh"))
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || !isfinite(v) || v < 0)
        return -1;
    if (strcmp(end, "ms") == 0)
        mult = 1.0;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mult = 1000.0;
    else if (strcmp(end, "m") == 0)
        mult = 60000.0;
    else if (strcmp(end, "h") == 0)
        mult = 3600000.0;
    else
        return -1;
    v *= mult;
    if (v > 1e15)
        return -1;
    *ms = (uint64_t)(v + 0.5);
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    unsigned long long v;
    uint64_t mult = 1;

    if (s == NULL || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s)
        return -1;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': mult = 1ull << 10; end++; break;
    case 'm': mult = 1ull << 20; end++; break;
    case 'g': mult = 1ull << 30; end++; break;
    default: return -1;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0' || v > UINT64_MAX / mult)
        return -1;
    *bytes = (uint64_t)v * mult;
    return 0;
}

static int parse_listen(struct config *cfg, const char *s)
{
    const char *colon = strrchr(s, ':');
    const char *host = s;
    size_t hlen;
    char *end;
    long port;

    if (colon == NULL)
        return -1;
    hlen = (size_t)(colon - s);
    if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') { /* [::1]:8080 */
        host++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof(cfg->listen_host))
        return -1;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return -1;
    memcpy(cfg->listen_host, host, hlen);
    cfg->listen_host[hlen] = '\0';
    cfg->listen_port = (int)port;
    return 0;
}

static int set_opt(struct config *cfg, const struct opt *o, const char *val)
{
    char *base = (char *)cfg;
    uint64_t u;
    char *end;
    long n;

    switch (o->kind) {
    case OPT_LISTEN:
        return parse_listen(cfg, val);
    case OPT_STR:
        if (strlen(val) >= o->width)
            return -1;
        memcpy(base + o->offset, val, strlen(val) + 1);
        if (o->offset == OFF(store))
            cfg->store_set = 1;
        return 0;
    case OPT_INT:
        errno = 0;
        n = strtol(val, &end, 10);
        if (errno != 0 || end == val || *end != '\0' || n < 0 || n > 1024)
            return -1;
        *(int *)(base + o->offset) = (int)n;
        return 0;
    case OPT_DURATION:
        if (config_parse_duration(val, &u) != 0)
            return -1;
        *(uint64_t *)(base + o->offset) = u;
        return 0;
    case OPT_SIZE:
        if (config_parse_size(val, &u) != 0)
            return -1;
        if (o->width == sizeof(uint64_t))
            *(uint64_t *)(base + o->offset) = u;
        else if (u > SIZE_MAX / 4) /* keep size_t limits sane for arithmetic */
            return -1;
        else
            *(size_t *)(base + o->offset) = (size_t)u;
        return 0;
    case OPT_FLAG:
        /* --quiet turns the access log off; other flags turn their feature on */
        *(int *)(base + o->offset) = o->offset != OFF(access_log);
        return 0;
    }
    return -1;
}

static void env_name(const struct opt *o, char *out, size_t cap)
{
    size_t i = (size_t)snprintf(out, cap, "FERRY_");
    for (const char *p = o->name; *p && i + 1 < cap; p++)
        out[i++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[i] = '\0';
}

static void usage(FILE *f)
{
    char env[64];

    fprintf(f, "ferry %s — a relay for the OpenAI API and OpenAI-compatible APIs\n\n"
               "usage: ferry [options]\n\n"
               "With no options ferry listens on 0.0.0.0:8080 and relays every request to\n"
               "https://api.openai.com, adding CORS. Durations: 500ms, 2s, 1.5m (bare number =\n"
               "seconds). Sizes: bytes with k, m or g suffix. Every option can also be set in\n"
               "the environment variable shown; a flag wins over the environment.\n\n",
            FERRY_VERSION);
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        char flag[64];
        env_name(o, env, sizeof(env));
        snprintf(flag, sizeof(flag), "%s%c%s--%s%s", o->short_name ? "-" : "  ",
                 o->short_name ? o->short_name : ' ', o->short_name ? "," : " ", o->name,
                 o->kind == OPT_FLAG ? "" : " V");
        fprintf(f, "  %-30s %s\n  %-30s [%s]\n", flag, o->help, "", env);
    }
    fprintf(f, "  -h, --help                     this text\n"
               "  -V, --version                  print the version\n\n"
               "subcommands (each also takes -c FILE and --store PATH):\n"
               "  ferry check-config -c FILE     validate a configuration file\n"
               "  ferry keys create|list|show|revoke ...   relay-issued keys (auth: keys)\n"
               "  ferry usage [--since 24h] [--by key,model,day] [--json]   usage totals\n");
}

static const struct opt *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opts[i].name) == len && memcmp(opts[i].name, name, len) == 0)
            return &opts[i];
    return NULL;
}

static const struct opt *find_short(char c)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].short_name == c)
            return &opts[i];
    return NULL;
}

/* Splits the upstream URL into a normalised base and its origin; refuses what is not http(s). */
static int check_upstream(struct config *cfg)
{
    char *u = cfg->upstream;
    size_t len = strlen(u);
    const char *rest, *slash;

    while (len > 0 && u[len - 1] == '/')
        u[--len] = '\0';
    if (strncasecmp(u, "http://", 7) == 0)
        rest = u + 7;
    else if (strncasecmp(u, "https://", 8) == 0)
        rest = u + 8;
    else
        return -1;
    if (*rest == '\0' || *rest == '/' || strpbrk(u, " \t\r\n?#") != NULL)
        return -1;
    slash = strchr(rest, '/');
    len = slash ? (size_t)(slash - u) : strlen(u);
    memcpy(cfg->upstream_origin, u, len);
    cfg->upstream_origin[len] = '\0';
    return 0;
}

int config_set(struct config *cfg, const char *name, const char *value)
{
    char norm[64];
    size_t n = strlen(name);
    const struct opt *o;

    if (n >= sizeof(norm))
        return -2;
    for (size_t i = 0; i <= n; i++)
        norm[i] = name[i] == '_' ? '-' : name[i];
    o = find_long(norm, n);
    if (o == NULL)
        return -2;
    if (o->kind == OPT_FLAG) {
        int on;
        if (!strcasecmp(value, "true") || !strcasecmp(value, "yes") || !strcasecmp(value, "on") ||
            !strcmp(value, "1"))
            on = 1;
        else if (!strcasecmp(value, "false") || !strcasecmp(value, "no") ||
                 !strcasecmp(value, "off") || !strcmp(value, "0"))
            on = 0;
        else
            return -1;
        /* --quiet is the one flag that turns something (the access log) off */
        *(int *)((char *)cfg + o->offset) = o->offset == OFF(access_log) ? !on : on;
        return 0;
    }
    return set_opt(cfg, o, value);
}

const struct route_def *config_route(const struct config *cfg, const char *path, size_t path_len,
                                     const char *model)
{
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct route_def *r = &cfg->routes[i];
        size_t plen = strlen(r->path);
        int ok = path_len >= plen && memcmp(path, r->path, plen) == 0;
        if (ok && r->nmodels > 0) {
            ok = 0;
            for (size_t k = 0; model != NULL && k < r->nmodels && !ok; k++)
                ok = fnmatch(r->models[k], model, 0) == 0;
        }
        if (ok)
            return r;
    }
    return NULL;
}

/* Without a file's upstreams:, the command-line upstream is the only one, for every path. */
static void finalize_routes(struct config *cfg)
{
    if (cfg->nupstreams == 0) {
        struct upstream_def *u = &cfg->upstreams[cfg->nupstreams++];
        memset(u, 0, sizeof(*u));
        snprintf(u->name, sizeof(u->name), "default");
        snprintf(u->url, sizeof(u->url), "%s", cfg->upstream);
        snprintf(u->key_header, sizeof(u->key_header), "authorization");
    }
    for (size_t i = 0; i < cfg->nupstreams; i++) {
        struct upstream_def *u = &cfg->upstreams[i];
        if (u->nkeys > 0 && u->health == NULL)
            u->health = calloc(u->nkeys, sizeof(*u->health)); /* lives as long as the process */
        if (u->proxy[0] == '\0')
            snprintf(u->proxy, sizeof(u->proxy), "%s", cfg->proxy);
        if (u->ca_file[0] == '\0')
            snprintf(u->ca_file, sizeof(u->ca_file), "%s", cfg->ca_file);
    }
    if (cfg->nroutes == 0) {
        struct route_def *r = &cfg->routes[cfg->nroutes++];
        memset(r, 0, sizeof(*r));
        snprintf(r->path, sizeof(r->path), "/");
        r->upstream = &cfg->upstreams[0];
    }
}

/* -c FILE may come from the environment or anywhere on the command line; the file is read
 * before both, so that they override it. */
static const char *find_config_path(int argc, char **argv)
{
    const char *path = getenv("FERRY_CONFIG");

    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc)
            path = argv[++i];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
    }
    return path && *path ? path : NULL;
}

int config_load(struct config *cfg, int argc, char **argv)
{
    char env[64];
    const char *file;

    config_defaults(cfg);
    file = find_config_path(argc, argv);
    if (file != NULL && config_file_load(cfg, file) != 0) {
        fprintf(stderr, "ferry: %s: configuration refused\n", file);
        return -1;
    }
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v;
        env_name(&opts[i], env, sizeof(env));
        v = getenv(env);
        if (v == NULL || (opts[i].kind == OPT_FLAG && (*v == '\0' || strcmp(v, "0") == 0)))
            continue;
        if (set_opt(cfg, &opts[i], v) != 0) {
            fprintf(stderr, "ferry: environment variable %s: invalid value '%s'\n", env, v);
            return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL, *eq;
        const struct opt *o = NULL;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
            printf("ferry %s\n", FERRY_VERSION);
            return 1;
        }
        if (a[0] == '-' && a[1] == '-') {
            eq = strchr(a + 2, '=');
            o = find_long(a + 2, eq ? (size_t)(eq - a - 2) : strlen(a + 2));
            if (eq)
                val = eq + 1;
        } else if (a[0] == '-' && a[1] != '\0' && a[2] == '\0') {
            o = find_short(a[1]);
        }
        if (o == NULL) {
            fprintf(stderr, "ferry: unknown option '%s' (see ferry --help)\n", a);
            return -1;
        }
        if (o->kind != OPT_FLAG && val == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ferry: option --%s needs a value\n", o->name);
                return -1;
            }
            val = argv[++i];
        }
        if (set_opt(cfg, o, val ? val : "") != 0) {
            fprintf(stderr, "ferry: option --%s: invalid value '%s'\n", o->name, val ? val : "");
            return -1;
        }
    }
    if (check_upstream(cfg) != 0) {
        fprintf(stderr, "ferry: upstream '%s' is not an http:// or https:// URL\n", cfg->upstream);
        return -1;
    }
    finalize_routes(cfg);
    if (cfg->proxy[0] && strncasecmp(cfg->proxy, "http://", 7) != 0 &&
        strncasecmp(cfg->proxy, "https://", 8) != 0 && strncasecmp(cfg->proxy, "socks5://", 9) != 0 &&
        strncasecmp(cfg->proxy, "socks5h://", 10) != 0 && strncasecmp(cfg->proxy, "socks4://", 9) != 0) {
        fprintf(stderr, "ferry: --proxy must be an http://, https://, socks4://, socks5:// or "
                        "socks5h:// URL\n");
        return -1;
    }
    if (strcmp(cfg->auth, "none") != 0 && strcmp(cfg->auth, "keys") != 0) {
        fprintf(stderr, "ferry: auth must be none or keys\n");
        return -1;
    }
    if (cfg->threads == 0)
        cfg->threads = 1;
    if (cfg->buffer_size < 4096) {
        fprintf(stderr, "ferry: --buffer-size must be at least 4k\n");
        return -1;
    }
    if (cfg->max_header_bytes < 256 || cfg->max_request_line < 64 || cfg->max_headers < 4) {
        fprintf(stderr, "ferry: header limits too small (max-header-bytes >= 256, "
                        "max-request-line >= 64, max-headers >= 4)\n");
        return -1;
    }
    if (cfg->read_buffer_size < 1024 || cfg->read_buffer_size > 512 * 1024) {
        fprintf(stderr, "ferry: --read-buffer-size must be between 1k and 512k\n");
        return -1;
    }
    if (strcmp(cfg->upstream_client, "ferry") != 0 && strcmp(cfg->upstream_client, "curl") != 0) {
        fprintf(stderr, "ferry: --upstream-client must be ferry or curl\n");
        return -1;
    }
    if (cfg->upstream_keepalive > 65536) {
        fprintf(stderr, "ferry: --upstream-keepalive must be at most 65536\n");
        return -1;
    }
    if (cfg->max_connections < 1) {
        fprintf(stderr, "ferry: --max-connections must be at least 1\n");
        return -1;
    }
    if (cfg->max_redirects > 20) {
        fprintf(stderr, "ferry: --max-redirects must be at most 20\n");
        return -1;
    }
    if (headers_set_compile(&cfg->drop, cfg->drop_headers) != 0) {
        fprintf(stderr, "ferry: --drop-headers is too long\n");
        return -1;
    }
    return 0;
}
