/* config_file — ferry's YAML configuration file (libfyaml). Top-level keys are the long option
 * names (first-byte-timeout: 600s, or first_byte_timeout), plus "upstreams" and "routes". Scalar
 * values may reference the environment as ${NAME}, so secrets stay out of the file. Every error
 * names the file, line, column and field, and ferry refuses to start. */
#include "config.h"

#include <ctype.h>
#include <libfyaml.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

struct loader {
    const char *path;
    struct config *cfg;
    int failed;
};

static void fail_at(struct loader *l, struct fy_node *at, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void fail_at(struct loader *l, struct fy_node *at, const char *field, const char *fmt, ...)
{
    struct fy_token *t;
    const struct fy_mark *m;
    char msg[512];
    va_list ap;

    /* A mapping or a list has no position of its own here: use its first scalar's. */
    while (at != NULL && !fy_node_is_scalar(at)) {
        void *it = NULL;
        if (fy_node_is_mapping(at)) {
            struct fy_node_pair *p = fy_node_mapping_iterate(at, &it);
            at = p ? fy_node_pair_key(p) : NULL;
        } else if (fy_node_is_sequence(at)) {
            at = fy_node_sequence_iterate(at, &it);
        } else {
            at = NULL;
        }
    }
    t = at ? fy_node_get_scalar_token(at) : NULL;
    m = t ? fy_token_start_mark(t) : NULL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (m != NULL)
        fprintf(stderr, "%s:%d:%d: %s: %s\n", l->path, m->line + 1, m->column + 1, field, msg);
    else
        fprintf(stderr, "%s: %s: %s\n", l->path, field, msg);
    l->failed = 1;
}

/* The scalar of n with ${NAME} references expanded, into out. Returns 0 or -1 (error printed). */
static int scalar(struct loader *l, struct fy_node *key, struct fy_node *n, const char *field,
                  char *out, size_t cap)
{
    const char *s;
    size_t len, o = 0;

    if (n == NULL || !fy_node_is_scalar(n)) {
        fail_at(l, n ? n : key, field, "expected a single value");
        return -1;
    }
    s = fy_node_get_scalar(n, &len);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
            const char *end = memchr(s + i + 2, '}', len - i - 2);
            char name[128];
            const char *v;
            size_t nl;
            if (end == NULL || (nl = (size_t)(end - s - i - 2)) == 0 || nl >= sizeof(name)) {
                fail_at(l, n, field, "malformed ${NAME} reference");
                return -1;
            }
            memcpy(name, s + i + 2, nl);
            name[nl] = '\0';
            v = getenv(name);
            if (v == NULL) {
                fail_at(l, n, field, "environment variable %s is not set", name);
                return -1;
            }
            for (; *v && o + 1 < cap; v++)
                out[o++] = *v;
            i = (size_t)(end - s);
            continue;
        }
        if (o + 1 >= cap) {
            fail_at(l, n, field, "value too long (at most %zu bytes)", cap - 1);
            return -1;
        }
        out[o++] = s[i];
    }
    if (o + 1 >= cap && len > 0) {
        fail_at(l, n, field, "value too long (at most %zu bytes)", cap - 1);
        return -1;
    }
    out[o] = '\0';
    return 0;
}

static const char *key_of(struct fy_node_pair *p, struct fy_node **kn)
{
    size_t len;
    const char *k;
    static __thread char buf[128];

    *kn = fy_node_pair_key(p);
    if (*kn == NULL || !fy_node_is_scalar(*kn))
        return NULL;
    k = fy_node_get_scalar(*kn, &len);
    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, k, len);
    buf[len] = '\0';
    return buf;
}

/* A list of scalars (or one scalar) into a NULL-terminated heap array. */
static char **string_list(struct loader *l, struct fy_node *key, struct fy_node *n,
                          const char *field, size_t *count)
{
    size_t cap = 8, k = 0;
    char **v = calloc(cap + 1, sizeof(char *));
    char buf[4096];
    void *it = NULL;
    struct fy_node *item;

    if (v == NULL)
        return NULL;
    if (n != NULL && fy_node_is_scalar(n)) {
        if (scalar(l, key, n, field, buf, sizeof(buf)) == 0)
            v[k++] = strdup(buf);
    } else if (n != NULL && fy_node_is_sequence(n)) {
        while ((item = fy_node_sequence_iterate(n, &it)) != NULL) {
            if (scalar(l, key, item, field, buf, sizeof(buf)) != 0)
                continue;
            if (k == cap) {
                char **nv = realloc(v, (cap * 2 + 1) * sizeof(char *));
                if (nv == NULL)
                    break;
                v = nv;
                cap *= 2;
            }
            v[k++] = strdup(buf);
        }
    } else {
        fail_at(l, n ? n : key, field, "expected a list");
    }
    v[k] = NULL;
    *count = k;
    return v;
}

static int valid_name(const char *s)
{
    if (*s == '\0')
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return 0;
    return 1;
}

static int http_url(const char *u)
{
    return (strncasecmp(u, "http://", 7) == 0 && u[7] != '\0' && u[7] != '/') ||
           (strncasecmp(u, "https://", 8) == 0 && u[8] != '\0' && u[8] != '/');
}

static void load_upstream(struct loader *l, struct fy_node *kn, const char *name,
                          struct fy_node *n)
{
    struct config *cfg = l->cfg;
    struct upstream_def *u;
    struct fy_node_pair *p;
    void *it = NULL;
    char field[160];
    int have_url = 0;

    if (!valid_name(name) || strlen(name) >= sizeof(u->name)) {
        fail_at(l, kn, "upstreams", "'%s' is not a valid upstream name (letters, digits, - _ .)",
                name);
        return;
    }
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0) {
            fail_at(l, kn, "upstreams", "upstream '%s' is defined twice", name);
            return;
        }
    if (cfg->nupstreams == CONFIG_MAX_UPSTREAMS) {
        fail_at(l, kn, "upstreams", "at most %d upstreams", CONFIG_MAX_UPSTREAMS);
        return;
    }
    if (n == NULL || !fy_node_is_mapping(n)) {
        fail_at(l, n ? n : kn, name, "expected a mapping with at least url:");
        return;
    }
    u = &cfg->upstreams[cfg->nupstreams++];
    memset(u, 0, sizeof(*u));
    memcpy(u->name, name, strlen(name) + 1); /* length checked above */
    snprintf(u->key_header, sizeof(u->key_header), "authorization");
    while ((p = fy_node_mapping_iterate(n, &it)) != NULL) {
        struct fy_node *k, *v = fy_node_pair_value(p);
        const char *key = key_of(p, &k);
        snprintf(field, sizeof(field), "upstreams.%s.%s", name, key ? key : "?");
        if (key == NULL) {
            fail_at(l, k, field, "keys must be plain names");
        } else if (strcmp(key, "url") == 0) {
            if (scalar(l, k, v, field, u->url, sizeof(u->url)) == 0) {
                size_t len = strlen(u->url);
                while (len > 0 && u->url[len - 1] == '/')
                    u->url[--len] = '\0';
                if (!http_url(u->url) || strpbrk(u->url, " \t?#") != NULL)
                    fail_at(l, v, field, "'%s' is not an http:// or https:// URL", u->url);
                have_url = 1;
            }
        } else if (strcmp(key, "proxy") == 0) {
            if (scalar(l, k, v, field, u->proxy, sizeof(u->proxy)) == 0 && u->proxy[0] &&
                strncasecmp(u->proxy, "http://", 7) != 0 && strncasecmp(u->proxy, "https://", 8) != 0 &&
                strncasecmp(u->proxy, "socks4://", 9) != 0 && strncasecmp(u->proxy, "socks5://", 9) != 0 &&
                strncasecmp(u->proxy, "socks5h://", 10) != 0)
                fail_at(l, v, field, "must be an http://, https://, socks4://, socks5:// or socks5h:// URL");
        } else if (strcmp(key, "ca-file") == 0 || strcmp(key, "ca_file") == 0) {
            scalar(l, k, v, field, u->ca_file, sizeof(u->ca_file));
        } else if (strcmp(key, "key-header") == 0 || strcmp(key, "key_header") == 0) {
            if (scalar(l, k, v, field, u->key_header, sizeof(u->key_header)) == 0 &&
                strcasecmp(u->key_header, "authorization") != 0 &&
                strcasecmp(u->key_header, "api-key") != 0 && strcasecmp(u->key_header, "x-api-key") != 0)
                fail_at(l, v, field, "must be authorization, api-key or x-api-key");
        } else if (strcmp(key, "keys") == 0) {
            u->keys = string_list(l, k, v, field, &u->nkeys);
            for (size_t i = 0; i < u->nkeys; i++)
                if (u->keys[i][0] == '\0' || strpbrk(u->keys[i], "\r\n") != NULL)
                    fail_at(l, v, field, "key %zu is empty or contains a line break", i + 1);
        } else {
            fail_at(l, k, field, "unknown setting (url, keys, key-header, proxy, ca-file)");
        }
    }
    if (!have_url) {
        snprintf(field, sizeof(field), "upstreams.%s", name);
        fail_at(l, kn, field, "url: is required");
    }
}

static struct upstream_def *find_upstream(struct config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nupstreams; i++)
        if (strcmp(cfg->upstreams[i].name, name) == 0)
            return &cfg->upstreams[i];
    return NULL;
}

static void load_route(struct loader *l, size_t idx, struct fy_node *n)
{
    struct config *cfg = l->cfg;
    struct route_def *r;
    struct fy_node_pair *p;
    void *it = NULL;
    char field[96], name[64] = "";
    struct fy_node *name_node = NULL;

    snprintf(field, sizeof(field), "routes[%zu]", idx);
    if (n == NULL || !fy_node_is_mapping(n)) {
        fail_at(l, n, field, "expected a mapping like { path: /v1/, upstream: NAME }");
        return;
    }
    if (cfg->nroutes == CONFIG_MAX_ROUTES) {
        fail_at(l, n, field, "at most %d routes", CONFIG_MAX_ROUTES);
        return;
    }
    r = &cfg->routes[cfg->nroutes++];
    memset(r, 0, sizeof(*r));
    snprintf(r->path, sizeof(r->path), "/");
    while ((p = fy_node_mapping_iterate(n, &it)) != NULL) {
        struct fy_node *k, *v = fy_node_pair_value(p);
        const char *key = key_of(p, &k);
        snprintf(field, sizeof(field), "routes[%zu].%s", idx, key ? key : "?");
        if (key == NULL) {
            fail_at(l, k, field, "keys must be plain names");
        } else if (strcmp(key, "path") == 0) {
            if (scalar(l, k, v, field, r->path, sizeof(r->path)) == 0 && r->path[0] != '/')
                fail_at(l, v, field, "a path prefix starts with /");
        } else if (strcmp(key, "models") == 0 || strcmp(key, "model") == 0) {
            r->models = string_list(l, k, v, field, &r->nmodels);
            cfg->model_routes = 1;
        } else if (strcmp(key, "upstream") == 0) {
            name_node = v;
            scalar(l, k, v, field, name, sizeof(name));
        } else {
            fail_at(l, k, field, "unknown setting (path, models, upstream)");
        }
    }
    snprintf(field, sizeof(field), "routes[%zu].upstream", idx);
    if (name_node == NULL || (name[0] == '\0' && !l->failed))
        fail_at(l, name_node ? name_node : n, field, "upstream: is required");
    else if (name[0] && (r->upstream = find_upstream(cfg, name)) == NULL)
        fail_at(l, name_node, field, "no upstream called '%s' in upstreams:", name);
    if (r->upstream == NULL) { /* a refused route is not kept, even in a refused configuration */
        for (size_t i = 0; i < r->nmodels; i++)
            free(r->models[i]);
        free(r->models);
        r->models = NULL;
        r->nmodels = 0;
        cfg->nroutes--;
    }
}

static void print_parse_errors(struct loader *l, struct fy_diag *diag)
{
    struct fy_diag_error *e;
    void *it = NULL;
    int any = 0;

    while ((e = fy_diag_errors_iterate(diag, &it)) != NULL) {
        fprintf(stderr, "%s:%d:%d: YAML: %s\n", l->path, e->line + 1, e->column + 1, e->msg);
        any = 1;
    }
    if (!any)
        fprintf(stderr, "%s: cannot read or parse the file\n", l->path);
    l->failed = 1;
}

/* YAML is Unicode: a file that is not UTF-8 is refused before libfyaml sees it (it misreads such
 * bytes, e.g. as an empty value, and can loop on them in a directive). Returns 0, or -1 with the
 * position of the first bad byte printed. */
static int check_utf8(const char *path)
{
    FILE *f = fopen(path, "rb");
    int line = 1, col = 1, need = 0, c, rc = 0;
    unsigned int cp = 0, min = 0;

    if (f == NULL)
        return 0; /* libfyaml reports the open error with the path */
    while ((c = getc(f)) != EOF) {
        if (need > 0) {
            if ((c & 0xc0) != 0x80)
                break;
            cp = (cp << 6) | (unsigned int)(c & 0x3f);
            if (--need == 0 && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)))
                break;
            if (need == 0)
                col++;
            continue;
        }
        if (c < 0x80) {
            if (c == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            need = 1, cp = (unsigned int)(c & 0x1f), min = 0x80;
        else if ((c & 0xf0) == 0xe0)
            need = 2, cp = (unsigned int)(c & 0x0f), min = 0x800;
        else if ((c & 0xf8) == 0xf0)
            need = 3, cp = (unsigned int)(c & 0x07), min = 0x10000;
        else
            break;
    }
    if (c != EOF || need > 0) {
        fprintf(stderr, "%s:%d:%d: the file is not UTF-8 text (YAML must be)\n", path, line, col);
        rc = -1;
    }
    fclose(f);
    return rc;
}

/* libfyaml 0.7.12 crashes or loops on some hostile inputs (found by fuzzing: a 7-byte file
 * segfaults it). The file is parsed once in a child process first, with a deadline; only a file
 * that the parser survives there is parsed here. Returns 0, or -1 with the reason printed. */
static int parser_survives(const char *path)
{
    pid_t pid = fork();
    int st;

    if (pid < 0)
        return 0; /* cannot shield: parse as usual */
    if (pid == 0) {
        struct fy_diag_cfg dc;
        struct fy_parse_cfg pc;
        struct fy_diag *diag;
        alarm(5);
        fy_diag_cfg_default(&dc);
        dc.fp = NULL;
        diag = fy_diag_create(&dc);
        if (diag != NULL)
            fy_diag_set_collect_errors(diag, true);
        memset(&pc, 0, sizeof(pc));
        pc.flags = FYPCF_QUIET;
        pc.diag = diag;
        fy_document_build_from_file(&pc, path);
        _exit(0); /* whatever it made of the file: it did not crash or hang */
    }
    while (waitpid(pid, &st, 0) < 0)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    fprintf(stderr, "%s: the YAML parser %s on this file; it is refused\n", path,
            WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? "does not finish" : "crashes");
    return -1;
}

int config_file_load(struct config *cfg, const char *path)
{
    struct loader l = {.path = path, .cfg = cfg};
    struct fy_diag_cfg dc;
    struct fy_diag *diag;
    struct fy_parse_cfg pc;
    struct fy_document *doc;
    struct fy_node *root, *routes = NULL, *upstreams = NULL;
    struct fy_node_pair *p;
    void *it = NULL;
    char value[4096];

    if (check_utf8(path) != 0 || parser_survives(path) != 0)
        return -1;
    fy_diag_cfg_default(&dc);
    dc.fp = NULL;
    diag = fy_diag_create(&dc);
    if (diag == NULL)
        return -1;
    fy_diag_set_collect_errors(diag, true);
    memset(&pc, 0, sizeof(pc));
    pc.flags = FYPCF_QUIET;
    pc.diag = diag;
    doc = fy_document_build_from_file(&pc, path);
    if (doc == NULL) {
        print_parse_errors(&l, diag);
        fy_diag_destroy(diag);
        return -1;
    }
    root = fy_document_root(doc);
    if (root != NULL && !fy_node_is_mapping(root)) {
        fail_at(&l, root, "(top level)", "expected a mapping of settings");
        root = NULL;
    }
    while (root != NULL && (p = fy_node_mapping_iterate(root, &it)) != NULL) {
        struct fy_node *k, *v = fy_node_pair_value(p);
        const char *key = key_of(p, &k);
        int rc;
        if (key == NULL) {
            fail_at(&l, k, "(top level)", "setting names must be plain words");
        } else if (strcmp(key, "upstreams") == 0) {
            upstreams = v;
            if (v == NULL || !fy_node_is_mapping(v))
                fail_at(&l, v ? v : k, key, "expected a mapping of NAME: { url: ... }");
        } else if (strcmp(key, "routes") == 0) {
            routes = v;
            if (v == NULL || !fy_node_is_sequence(v))
                fail_at(&l, v ? v : k, key, "expected a list of { path:, models:, upstream: }");
        } else if (strcmp(key, "config") == 0) {
            fail_at(&l, k, key, "a configuration file cannot include another");
        } else if (scalar(&l, k, v, key, value, sizeof(value)) == 0) {
            rc = config_set(cfg, key, value);
            if (rc == -2)
                fail_at(&l, k, key, "unknown setting (see ferry --help for the names)");
            else if (rc != 0)
                fail_at(&l, v, key, "invalid value '%s'", value);
        }
    }
    /* Upstreams first: routes refer to them by name, in any order in the file. */
    if (upstreams != NULL && fy_node_is_mapping(upstreams)) {
        it = NULL;
        while ((p = fy_node_mapping_iterate(upstreams, &it)) != NULL) {
            struct fy_node *k;
            const char *name = key_of(p, &k);
            char copy[128];
            if (name == NULL) {
                fail_at(&l, k, "upstreams", "upstream names must be plain words");
                continue;
            }
            snprintf(copy, sizeof(copy), "%s", name);
            load_upstream(&l, k, copy, fy_node_pair_value(p));
        }
        if (cfg->nupstreams == 0)
            fail_at(&l, upstreams, "upstreams", "at least one upstream is needed");
    }
    if (routes != NULL && fy_node_is_sequence(routes)) {
        struct fy_node *item;
        size_t idx = 0;
        it = NULL;
        if (cfg->nupstreams == 0)
            fail_at(&l, routes, "routes", "routes need upstreams: to route to");
        while ((item = fy_node_sequence_iterate(routes, &it)) != NULL)
            load_route(&l, idx++, item);
    }
    fy_document_destroy(doc);
    fy_diag_destroy(diag);
    return l.failed ? -1 : 0;
}
